/* The fault proxy itself, against a plain echo server on loopback: the
 * fault tests are only as good as the faults it injects. */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* An echo server: one thread per connection, stops with the test. */
typedef struct echo {
  int lfd;
  int port;
  pthread_t th;
  atomic_int stop; /* volatile is no synchronization (a data race) */
} echo;

static void *echo_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[4096];
  for (;;) {
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r <= 0)
      break;
    if (send(fd, buf, (size_t)r, MSG_NOSIGNAL) != r)
      break;
  }
  close(fd);
  return NULL;
}

static void *echo_main(void *arg) {
  echo *e = arg;
  while (!e->stop) {
    struct pollfd pf = {.fd = e->lfd, .events = POLLIN};
    if (poll(&pf, 1, 20) <= 0)
      continue;
    int fd = accept(e->lfd, NULL, NULL);
    if (fd < 0)
      continue;
    pthread_t t;
    if (pthread_create(&t, NULL, echo_conn, (void *)(intptr_t)fd) == 0)
      pthread_detach(t);
    else
      close(fd);
  }
  return NULL;
}

static void echo_start(echo *e) {
  memset(e, 0, sizeof *e);
  e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  g_assert_cmpint(bind(e->lfd, (struct sockaddr *)&a, sizeof a), ==, 0);
  g_assert_cmpint(listen(e->lfd, 16), ==, 0);
  g_assert_cmpint(getsockname(e->lfd, (struct sockaddr *)&a, &len), ==, 0);
  e->port = ntohs(a.sin_port);
  g_assert_cmpint(pthread_create(&e->th, NULL, echo_main, e), ==, 0);
}

static void echo_stop(echo *e) {
  e->stop = 1;
  pthread_join(e->th, NULL);
  close(e->lfd);
}

static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  g_assert_cmpint(connect(fd, (struct sockaddr *)&a, sizeof a), ==, 0);
  return fd;
}

/* Reads exactly n bytes within timeout_ms: n, or what arrived before EOF,
 * an error (-errno) or the timeout. */
static ssize_t read_n(int fd, char *buf, size_t n, int timeout_ms) {
  size_t got = 0;
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  while (got < n) {
    int left = (int)((end - g_get_monotonic_time()) / 1000);
    if (left <= 0)
      break;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, left) <= 0)
      continue;
    ssize_t r = recv(fd, buf + got, n - got, 0);
    if (r == 0)
      break;
    if (r < 0)
      return got ? (ssize_t)got : -errno;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

static proxy *start(int upstream) {
  proxy *p;
  char err[256];
  if (proxy_start(upstream, &p, err, sizeof err) != 0)
    g_error("%s", err);
  return p;
}

static void test_pass_and_cut(void) {
  echo e;
  echo_start(&e);
  proxy *p = start(e.port);
  int fd = dial(proxy_port(p));
  char out[64] = "hello through the proxy", in[64] = {0};
  size_t n = strlen(out);
  g_assert_cmpint(send(fd, out, n, 0), ==, (ssize_t)n);
  g_assert_cmpint(read_n(fd, in, n, 2000), ==, (ssize_t)n);
  g_assert_cmpstr(in, ==, out);
  g_assert_cmpuint(proxy_bytes_up(p), ==, n);
  g_assert_cmpuint(proxy_bytes_down(p), ==, n);
  g_assert_cmpint(proxy_active(p), ==, 1);
  /* A cut is a reset the client sees at once. */
  g_assert_cmpint(proxy_cut(p), ==, 1);
  ssize_t r = read_n(fd, in, 1, 2000);
  g_assert_cmpint(r, ==, -ECONNRESET);
  close(fd);
  for (int i = 0; i < 100 && proxy_active(p) > 0; i++)
    g_usleep(10 * 1000);
  g_assert_cmpint(proxy_active(p), ==, 0);
  /* New connections work after a cut. */
  fd = dial(proxy_port(p));
  g_assert_cmpint(send(fd, "x", 1, 0), ==, 1);
  g_assert_cmpint(read_n(fd, in, 1, 2000), ==, 1);
  close(fd);
  proxy_stop(p);
  echo_stop(&e);
}

static void test_refuse(void) {
  echo e;
  echo_start(&e);
  proxy *p = start(e.port);
  int old = dial(proxy_port(p));
  char in[8];
  g_assert_cmpint(send(old, "a", 1, 0), ==, 1);
  g_assert_cmpint(read_n(old, in, 1, 2000), ==, 1);
  proxy_set_mode(p, PROXY_REFUSE);
  int fd = dial(proxy_port(p));
  g_assert_cmpint(read_n(fd, in, 1, 2000), ==, -ECONNRESET);
  close(fd);
  /* The established connection is untouched. */
  g_assert_cmpint(send(old, "b", 1, 0), ==, 1);
  g_assert_cmpint(read_n(old, in, 1, 2000), ==, 1);
  g_assert_cmpint(in[0], ==, 'b');
  close(old);
  proxy_stop(p);
  echo_stop(&e);
}

static void test_blackhole(void) {
  echo e;
  echo_start(&e);
  proxy *p = start(e.port);
  int old = dial(proxy_port(p));
  char in[8];
  g_assert_cmpint(send(old, "a", 1, 0), ==, 1);
  g_assert_cmpint(read_n(old, in, 1, 2000), ==, 1);
  proxy_set_mode(p, PROXY_BLACKHOLE);
  unsigned long long up = proxy_bytes_up(p);
  g_assert_cmpint(send(old, "b", 1, 0), ==, 1);
  /* Nothing comes back, but the socket stays open. */
  g_assert_cmpint(read_n(old, in, 1, 500), ==, 0);
  /* New connections are accepted and held. */
  int fresh = dial(proxy_port(p));
  g_assert_cmpint(send(fresh, "c", 1, 0), ==, 1);
  g_assert_cmpint(read_n(fresh, in, 1, 300), ==, 0);
  g_assert_cmpuint(proxy_bytes_up(p), ==, up);
  g_assert_cmpint(proxy_active(p), ==, 2);
  /* Lifting it resets what lived through it: "b" and "c" never arrive. */
  proxy_set_mode(p, PROXY_PASS);
  g_assert_cmpint(read_n(old, in, 1, 2000), ==, -ECONNRESET);
  g_assert_cmpint(read_n(fresh, in, 1, 2000), ==, -ECONNRESET);
  g_assert_cmpuint(proxy_bytes_up(p), ==, up);
  close(old);
  close(fresh);
  int fd = dial(proxy_port(p));
  g_assert_cmpint(send(fd, "d", 1, 0), ==, 1);
  g_assert_cmpint(read_n(fd, in, 1, 2000), ==, 1);
  g_assert_cmpint(in[0], ==, 'd');
  close(fd);
  proxy_stop(p);
  echo_stop(&e);
}

static void test_rate(void) {
  echo e;
  echo_start(&e);
  proxy *p = start(e.port);
  proxy_set_rate(p, 20000);
  int fd = dial(proxy_port(p));
  static char out[10000], in[10000];
  memset(out, 'r', sizeof out);
  gint64 t0 = g_get_monotonic_time();
  g_assert_cmpint(send(fd, out, sizeof out, 0), ==, (ssize_t)sizeof out);
  g_assert_cmpint(read_n(fd, in, sizeof in, 5000), ==, (ssize_t)sizeof in);
  gint64 ms = (g_get_monotonic_time() - t0) / 1000;
  g_test_message("10000 bytes at 20000 B/s took %" G_GINT64_FORMAT " ms", ms);
  /* ~500 ms, less the initial bucket. */
  g_assert_cmpint(ms, >=, 350);
  g_assert_cmpint(ms, <, 3000);
  close(fd);
  proxy_stop(p);
  echo_stop(&e);
}

static void test_upstream_down(void) {
  echo e;
  echo_start(&e);
  int port = e.port;
  echo_stop(&e); /* nothing listens there any more */
  proxy *p = start(port);
  int fd = dial(proxy_port(p));
  char in[1];
  g_assert_cmpint(read_n(fd, in, 1, 2000), ==, -ECONNRESET);
  close(fd);
  proxy_stop(p);
  char err[128];
  proxy *bad;
  g_assert_cmpint(proxy_start(0, &bad, err, sizeof err), ==, -1);
  g_assert_nonnull(strstr(err, "upstream port 0"));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/fault-proxy/pass-and-cut", test_pass_and_cut);
  g_test_add_func("/fault-proxy/refuse", test_refuse);
  g_test_add_func("/fault-proxy/blackhole", test_blackhole);
  g_test_add_func("/fault-proxy/rate", test_rate);
  g_test_add_func("/fault-proxy/upstream-down", test_upstream_down);
  return g_test_run();
}
