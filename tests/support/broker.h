/* broker: a throw-away mosquitto for tests, bound to 127.0.0.1 only.
 *
 * The broker process gets PR_SET_PDEATHSIG and every live broker is also
 * killed by an atexit handler, so a crashing or exiting test never leaves a
 * mosquitto behind. Call broker_* from a thread that outlives the broker
 * (the death signal follows the thread that forked it). */
#ifndef C8Y_TEST_BROKER_H
#define C8Y_TEST_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct broker broker;

typedef struct broker_user {
  const char *name;
  const char *password;
} broker_user;

/* Writes a mosquitto password file (mode 0600) for `users`, using
 * mosquitto_passwd when it is installed and broker_hash_password otherwise.
 * Returns 0, or -1 with a one-line reason in err. */
int broker_write_passwd(const char *path, const broker_user *users, size_t n,
                        char *err, size_t errlen);
/* Formats a mosquitto 2.0 "$7$" PBKDF2-SHA512 hash of `password` (random
 * salt) into out (>= 160 bytes). Returns 0 or -1. */
int broker_hash_password(const char *password, char *out, size_t outlen);

/* One broker per workdir. Writes <workdir>/mosquitto.conf and starts mosquitto
 * on 127.0.0.1:port (0 = a free port, retried a few times), then waits (<= 5 s)
 * until the port accepts connections. Log: <workdir>/mosquitto.log,
 * stdout/stderr: <workdir>/mosquitto.out. Returns 0, or -1 with a one-line
 * reason. */
int broker_start(const char *workdir, const char *passwd_file,
                 const char *acl_file, int port, broker **out, char *err,
                 size_t errlen);
/* SIGKILL + waitpid; the port is remembered for broker_restart. 0 / -1 if
 * the broker was not running. */
int broker_kill(broker *b);
/* Starts a killed (or running: it is killed first) broker again on the same
 * port with the same files. Returns 0 or -1 with a reason. */
int broker_restart(broker *b, char *err, size_t errlen);
/* broker_restart with `extra_conf` (mosquitto.conf lines) appended to its
 * configuration from now on, e.g. "set_tcp_nodelay true". */
int broker_restart_with(broker *b, const char *extra_conf, char *err,
                        size_t errlen);
int broker_port(const broker *b);
/* A loopback port free right now (for another listener). */
int broker_free_port(void);
int broker_pid(const broker *b); /* 0 when not running */
/* True when `pid` holds a socket listening on 127.0.0.1:port: a connect
 * alone could reach another server that already owns the port (a suite
 * running next to this one picked the same free port). */
bool broker_pid_listens(pid_t pid, int port);
/* SIGTERM, then SIGKILL after 2 s; waitpid; frees b. NULL is a no-op. */
void broker_stop(broker *b);

#endif
