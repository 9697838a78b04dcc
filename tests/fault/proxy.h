/* proxy: a thread-based TCP proxy on 127.0.0.1 for fault-injection tests.
 *
 * It listens on a free loopback port and forwards every accepted connection
 * to 127.0.0.1:<upstream port>, one thread per connection. Faults:
 *   PROXY_PASS       forward both ways (optionally rate-limited upstream)
 *   PROXY_REFUSE     existing connections keep working; new ones are
 *                    accepted and reset at once (the "broker" is unreachable)
 *   PROXY_BLACKHOLE  nothing is forwarded in either direction and nothing is
 *                    read, but every socket stays open; new connections are
 *                    accepted and held without an upstream connection. Like
 *                    a partition, data sent into it is never delivered:
 *                    leaving BLACKHOLE resets every connection that lived
 *                    through it, so buffered bytes cannot arrive late and
 *                    pass for a retransmission the client did not make.
 * proxy_cut resets (RST) both sides of every current connection.
 *
 * A connection whose one side is reset is reset on the other side too; an
 * orderly close is passed on as an orderly close. */
#ifndef C8Y_FAULT_PROXY_H
#define C8Y_FAULT_PROXY_H

#include <stddef.h>

typedef struct proxy proxy;

typedef enum proxy_mode {
  PROXY_PASS,
  PROXY_REFUSE,
  PROXY_BLACKHOLE
} proxy_mode;

/* Returns 0, or -1 with a one-line reason in err. Starts in PROXY_PASS. */
int proxy_start(int upstream_port, proxy **out, char *err, size_t errlen);
/* Resets every connection, joins every thread, frees p. NULL is a no-op. */
void proxy_stop(proxy *p);
int proxy_port(const proxy *p);

void proxy_set_mode(proxy *p, proxy_mode mode);
proxy_mode proxy_get_mode(proxy *p);
/* Resets every current connection; returns how many there were. */
int proxy_cut(proxy *p);
/* Caps client-to-upstream bytes per second, per connection (0 = no cap).
 * Lets a test catch a fast sender in the middle of a stream. */
void proxy_set_rate(proxy *p, long bytes_per_s);

/* Counters since proxy_start. */
unsigned long long proxy_bytes_up(proxy *p);   /* client -> upstream */
unsigned long long proxy_bytes_down(proxy *p); /* upstream -> client */
unsigned proxy_accepted(proxy *p);
int proxy_active(proxy *p); /* connections still open */

#endif
