#include "sim_echo.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Serves one connection until it closes, the mode says so, or stop. */
static void serve(sim_echo *e, int c) {
  static unsigned char buf[65536];
  while (!atomic_load(&e->stop)) {
    if (atomic_load(&e->mode) == SIM_ECHO_STALL && !atomic_load(&e->release)) {
      struct pollfd hp = {.fd = c, .events = POLLRDHUP};
      poll(&hp, 1, 20);
      continue;
    }
    struct pollfd p = {.fd = c, .events = POLLIN};
    if (poll(&p, 1, 50) <= 0)
      continue;
    ssize_t n = read(c, buf, sizeof buf);
    if (n <= 0)
      return;
    atomic_fetch_add(&e->received, (unsigned long long)n);
    if (atomic_load(&e->mode) == SIM_ECHO_CLOSE_AFTER &&
        atomic_load(&e->received) >= e->close_after)
      return;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(c, buf + off, (size_t)(n - off));
      if (w <= 0)
        return;
      off += w;
    }
  }
}

static void *echo_main(void *arg) {
  sim_echo *e = arg;
  while (!atomic_load(&e->stop)) {
    struct pollfd lp = {.fd = e->lfd, .events = POLLIN};
    if (poll(&lp, 1, 50) <= 0)
      continue;
    int c = accept4(e->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
      continue;
    atomic_store(&e->received, 0);
    atomic_store(&e->open, 1);
    serve(e, c);
    close(c);
    atomic_store(&e->open, 0);
  }
  return NULL;
}

int sim_echo_start(sim_echo *e) {
  memset(e, 0, sizeof *e);
  e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (e->lfd < 0 || bind(e->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(e->lfd, 4) != 0 ||
      getsockname(e->lfd, (struct sockaddr *)&a, &al) != 0 ||
      pthread_create(&e->thread, NULL, echo_main, e) != 0) {
    if (e->lfd >= 0)
      close(e->lfd);
    return -1;
  }
  e->port = ntohs(a.sin_port);
  return 0;
}

void sim_echo_stop(sim_echo *e) {
  atomic_store(&e->stop, true);
  pthread_join(e->thread, NULL);
  close(e->lfd);
}
