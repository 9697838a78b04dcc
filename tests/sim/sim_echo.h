/* sim_echo: a TCP echo server on a loopback port, the service "behind the
 * device" for remote-access tests and the tunnel bench. One connection at a
 * time on one thread (a second waits in the backlog), so a test can count
 * the process's fds and threads exactly after a session. */
#ifndef C8Y_SIM_ECHO_H
#define C8Y_SIM_ECHO_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef enum sim_echo_mode {
  SIM_ECHO_ECHO,       /* writes back what it reads */
  SIM_ECHO_STALL,      /* reads nothing until `release` */
  SIM_ECHO_CLOSE_AFTER /* closes once close_after bytes arrived */
} sim_echo_mode;

typedef struct sim_echo {
  int lfd, port;
  pthread_t thread;
  atomic_int mode;     /* sim_echo_mode, may change at any time */
  atomic_bool release; /* a stalled connection reads again */
  atomic_bool stop;
  atomic_ullong received; /* bytes of the current connection */
  atomic_int open;        /* 1 while a connection is served */
  unsigned long long close_after;
} sim_echo;

/* Listens on 127.0.0.1:<free port> (e->port). Returns 0 or -1. */
int sim_echo_start(sim_echo *e);
void sim_echo_stop(sim_echo *e);

#endif
