/* c8y-bench-tunnel: Cloud Remote Access throughput and latency of the real
 * remote_access plugin (on the real plugin host, testhost) against a direct
 * TCP connection to the same echo server in the same run.
 *
 *   c8y-bench-tunnel [--mb N] [--rounds R] [--pings P]
 *
 * Tunnel: the operator's end is the simulator's WebSocket endpoint (sim_ws)
 * on loopback; N MiB go through the tunnel to the echo server and back, and
 * every byte is checked. Direct: the same N MiB written to and read back
 * from the echo server over one loopback TCP connection. Prints
 * "echo MB/s <tunnel> <direct> <ratio>" (best of R rounds, bytes one way
 * per second of the whole echo) and "round trip us <tunnel> <direct>
 * <added>" (median of P one-byte ping-pongs). Exit status: 0 ok, 1 a
 * transfer failed or a byte differed, 2 setup. */
#include "sim_echo.h"
#include "sim_http.h"
#include "sim_ws.h"
#include "testhost.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STEP_MS 20000

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned char pattern(uint64_t i) {
  return (unsigned char)((i * 2654435761u) >> 24 ^ (i >> 16));
}

static unsigned char chunk[1 << 20];

static void fill(uint64_t from, size_t n) {
  for (size_t i = 0; i < n; i++)
    chunk[i] = pattern(from + i);
}

/* ---- one byte stream, two transports ---- */

typedef struct path {
  sim_ws *ws; /* tunnel: the operator's end */
  const char *key;
  int fd; /* direct: a socket to the echo server */
} path;

static size_t path_send(path *p, const void *d, size_t n) {
  if (p->ws)
    return sim_ws_send(p->ws, p->key, d, n, STEP_MS);
  size_t off = 0;
  while (off < n) {
    ssize_t w = write(p->fd, (const char *)d + off, n - off);
    if (w <= 0)
      break;
    off += (size_t)w;
  }
  return off;
}

static size_t path_recv(path *p, void *buf, size_t n) {
  if (p->ws)
    return sim_ws_recv(p->ws, p->key, buf, n, STEP_MS);
  ssize_t r = read(p->fd, buf, n);
  return r > 0 ? (size_t)r : 0;
}

typedef struct reader {
  path *p;
  uint64_t want, got;
  int bad;
} reader;

static void *read_back(void *arg) {
  reader *r = arg;
  static unsigned char buf[1 << 16];
  while (r->got < r->want) {
    size_t n = path_recv(r->p, buf, sizeof buf);
    if (n == 0)
      break;
    for (size_t i = 0; i < n; i++)
      r->bad |= buf[i] != pattern(r->got + i);
    r->got += n;
  }
  return NULL;
}

/* MB/s of one echo of `bytes`, or -1 on a failure. */
static double echo_rate(path *p, uint64_t bytes) {
  reader r = {.p = p, .want = bytes};
  pthread_t t;
  double t0 = now_s();
  if (pthread_create(&t, NULL, read_back, &r) != 0)
    return -1;
  uint64_t sent = 0;
  while (sent < bytes) {
    size_t n =
        bytes - sent < sizeof chunk ? (size_t)(bytes - sent) : sizeof chunk;
    fill(sent, n);
    size_t took = path_send(p, chunk, n);
    sent += took;
    if (took < n)
      break;
  }
  pthread_join(t, NULL);
  double dt = now_s() - t0;
  if (sent != bytes || r.got != bytes || r.bad)
    return -1;
  return (double)bytes / 1e6 / dt;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median round trip of one byte, in microseconds; -1 on a failure. */
static double round_trip_us(path *p, int pings) {
  double *t = calloc((size_t)pings, sizeof *t);
  if (!t)
    return -1;
  for (int i = 0; i < pings; i++) {
    unsigned char b = (unsigned char)i, back = 0;
    double t0 = now_s();
    if (path_send(p, &b, 1) != 1 || path_recv(p, &back, 1) != 1 || back != b) {
      free(t);
      return -1;
    }
    t[i] = (now_s() - t0) * 1e6;
  }
  qsort(t, (size_t)pings, sizeof *t, cmp_double);
  double m = t[pings / 2];
  free(t);
  return m;
}

static int direct_socket(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int one = 1;
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

int main(int argc, char **argv) {
  long mb = 64, rounds = 3, pings = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    long v = strtol(argv[i + 1], NULL, 10);
    if (strcmp(argv[i], "--mb") == 0 && v > 0)
      mb = v;
    else if (strcmp(argv[i], "--rounds") == 0 && v > 0)
      rounds = v;
    else if (strcmp(argv[i], "--pings") == 0 && v > 0)
      pings = v;
    else {
      fprintf(stderr, "usage: %s [--mb N] [--rounds R] [--pings P]\n", argv[0]);
      return 2;
    }
  }
  char err[256];
  sim_http *rest = NULL;
  sim_ws *ws = NULL;
  sim_echo echo;
  sim_http_options ho = {0};
  if (sim_http_start(&ho, &rest, err, sizeof err) != 0) {
    fprintf(stderr, "bench-tunnel: %s\n", err);
    return 2;
  }
  sim_ws_options wo = {.auth = rest};
  if (sim_ws_start(&wo, &ws, err, sizeof err) != 0 ||
      sim_echo_start(&echo) != 0) {
    fprintf(stderr, "bench-tunnel: cannot start the simulator\n");
    return 2;
  }
  testhost *h = testhost_new("benchdev", NULL);
  testhost_set_platform(h, sim_ws_url(ws), NULL);
  char targets[64];
  snprintf(targets, sizeof targets, "127.0.0.1:%d", echo.port);
  testhost_set_config(h, "allowed_targets", targets);
  int rc = 2;
  const char *key = "bench-0001";
  char line[128];
  snprintf(line, sizeof line, "530,benchdev,127.0.0.1,%d,%s", echo.port, key);
  sim_ws_add_key(ws, key);
  if (testhost_load(h, BENCH_PLUGIN) != C8Y_OK ||
      testhost_run_operation(h, line, STEP_MS) != TESTHOST_OP_SUCCEEDED ||
      !sim_ws_wait_connected(ws, key, STEP_MS)) {
    fprintf(stderr, "bench-tunnel: the tunnel did not open\n");
    goto out;
  }
  /* One session carries every tunnel round and the pings; then the direct
   * connection (the echo server serves one connection at a time). */
  path tunnel = {.ws = ws, .key = key, .fd = -1};
  uint64_t bytes = (uint64_t)mb << 20;
  double best_t = -1, best_d = -1, rtt_t = -1, rtt_d = -1;
  rc = 0;
  for (long r = 0; r < rounds && rc == 0; r++) {
    double t = echo_rate(&tunnel, bytes);
    rc = t < 0;
    best_t = t > best_t ? t : best_t;
  }
  if (rc == 0)
    rc = (rtt_t = round_trip_us(&tunnel, (int)pings)) < 0;
  sim_ws_close(ws, key);
  sim_ws_wait_closed(ws, key, STEP_MS);
  for (int i = 0; i < STEP_MS && atomic_load(&echo.open); i++)
    usleep(1000);
  int fd = rc == 0 ? direct_socket(echo.port) : -1;
  path direct = {.fd = fd};
  rc = rc || fd < 0;
  for (long r = 0; r < rounds && rc == 0; r++) {
    double d = echo_rate(&direct, bytes);
    rc = d < 0;
    best_d = d > best_d ? d : best_d;
  }
  if (rc == 0)
    rc = (rtt_d = round_trip_us(&direct, (int)pings)) < 0;
  if (fd >= 0)
    close(fd);
  if (rc == 0) {
    printf("%-32s %10s %10s %10s\n", "metric", "tunnel", "direct", "ratio");
    printf("%-32s %10.1f %10.1f %10.2f\n", "echo MB/s (one way)", best_t,
           best_d, best_t / best_d);
    printf("%-32s %10.0f %10.0f %10s\n", "round trip us (median)", rtt_t, rtt_d,
           "-");
    printf("%-32s %10.0f %10s %10s\n", "added round trip us", rtt_t - rtt_d,
           "-", "-");
    printf("result: complete (%ld MiB each way, best of %ld rounds, %ld "
           "pings)\n",
           mb, rounds, pings);
  }
  if (rc != 0)
    fprintf(stderr, "bench-tunnel: a transfer failed or a byte differed\n");
out:
  testhost_free(h);
  sim_echo_stop(&echo);
  sim_ws_stop(ws);
  sim_http_stop(rest);
  return rc;
}
