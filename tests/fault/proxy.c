#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* How often a connection thread looks at the mode and its kill flag: a cut
 * or a mode change takes effect within this. */
#define TICK_MS 10

typedef struct conn {
  struct conn *next;
  struct proxy *p;
  pthread_t th;
  bool started;
  int cfd;
  int ufd;      /* only the connection's own thread touches it */
  bool kill;    /* under p->mu */
  bool tainted; /* lived through a blackhole; under p->mu */
  bool done;    /* under p->mu */
} conn;

struct proxy {
  int lfd;
  int port;
  int upstream_port;
  pthread_t accept_th;
  pthread_mutex_t mu;
  proxy_mode mode; /* under mu */
  long rate;       /* under mu */
  bool stop;       /* under mu */
  conn *conns;     /* under mu; freed by proxy_stop */
  int active;      /* under mu */
  unsigned accepted;
  atomic_ullong bytes_up;
  atomic_ullong bytes_down;
};

static long long mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void tune_socket(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* A blocked send must not keep the thread from noticing a cut. */
  struct timeval tv = {0, TICK_MS * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Close with an RST instead of a FIN, as a reset connection would. */
static void close_reset(int fd) {
  if (fd < 0)
    return;
  struct linger l = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(fd);
}

static int connect_upstream(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  tune_socket(fd);
  return fd;
}

/* One consistent view of what a connection may do now: a mode change and
 * the kills it implies are made under the same lock, so a thread can never
 * see "pass" without also seeing that its blackholed connection must die. */
static bool snapshot(conn *c, proxy_mode *mode, long *rate) {
  proxy *p = c->p;
  pthread_mutex_lock(&p->mu);
  bool kill = c->kill;
  *mode = p->mode;
  *rate = p->rate;
  pthread_mutex_unlock(&p->mu);
  return kill;
}

static bool killed(conn *c) {
  pthread_mutex_lock(&c->p->mu);
  bool k = c->kill;
  pthread_mutex_unlock(&c->p->mu);
  return k;
}

static int send_all(conn *c, int fd, const char *buf, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
    if (w > 0) {
      buf += w;
      n -= (size_t)w;
      continue;
    }
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (killed(c))
        return -1;
      continue;
    }
    return -1;
  }
  return 0;
}

enum end { END_FIN, END_RST };

/* Moves one chunk from `from` to `to`. 1 = moved, 0 = nothing to do,
 * -1 = the connection ends (*how says how). */
static int pump(conn *c, int from, int to, size_t limit, char *buf,
                atomic_ullong *counter, enum end *how) {
  ssize_t r = recv(from, buf, limit, MSG_DONTWAIT);
  if (r > 0) {
    /* Counted first so a reader never sees bytes the counter does not. */
    atomic_fetch_add(counter, (unsigned long long)r);
    if (send_all(c, to, buf, (size_t)r) != 0) {
      *how = END_RST;
      return -1;
    }
    return (int)r;
  }
  if (r == 0) {
    *how = END_FIN;
    return -1;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return 0;
  *how = END_RST;
  return -1;
}

static void *conn_main(void *arg) {
  conn *c = arg;
  proxy *p = c->p;
  char buf[16384];
  double tokens = 0;
  long long last = mono_us();
  enum end how = END_RST;
  for (;;) {
    proxy_mode mode;
    long rate;
    if (snapshot(c, &mode, &rate)) {
      how = END_RST;
      break;
    }
    if (mode == PROXY_BLACKHOLE) {
      /* Read nothing: the client's data piles up in socket buffers and its
       * keepalive goes unanswered, like behind a dead route. */
      sleep_ms(TICK_MS);
      last = mono_us();
      continue;
    }
    if (c->ufd < 0) {
      c->ufd = connect_upstream(p->upstream_port);
      if (c->ufd < 0) {
        how = END_RST;
        break;
      }
    }
    size_t up_limit = sizeof buf;
    int timeout = TICK_MS;
    if (rate > 0) {
      long long now = mono_us();
      tokens += (double)(now - last) * (double)rate / 1e6;
      last = now;
      /* A small bucket: at most ~50 ms of burst. */
      double cap = (double)rate / 20.0 < 512 ? 512 : (double)rate / 20.0;
      if (tokens > cap)
        tokens = cap;
      up_limit = tokens < 1 ? 0 : (size_t)tokens;
      if (up_limit > sizeof buf)
        up_limit = sizeof buf;
      if (up_limit == 0) {
        int wait = (int)((1 - tokens) * 1000.0 / (double)rate) + 1;
        timeout = wait < TICK_MS ? wait : TICK_MS;
      }
    }
    struct pollfd pf[2] = {{.fd = up_limit ? c->cfd : -1, .events = POLLIN},
                           {.fd = c->ufd, .events = POLLIN}};
    int n = poll(pf, 2, timeout);
    if (n <= 0)
      continue;
    /* The mode may have changed while polling. */
    if (snapshot(c, &mode, &rate)) {
      how = END_RST;
      break;
    }
    if (mode == PROXY_BLACKHOLE)
      continue;
    int r = 0;
    if (pf[1].revents) {
      r = pump(c, c->ufd, c->cfd, sizeof buf, buf, &p->bytes_down, &how);
      if (r < 0)
        break;
    }
    if (pf[0].revents) {
      r = pump(c, c->cfd, c->ufd, up_limit, buf, &p->bytes_up, &how);
      if (r < 0)
        break;
      if (rate > 0)
        tokens -= r;
    }
  }
  if (how == END_RST) {
    close_reset(c->cfd);
    close_reset(c->ufd);
  } else {
    close(c->cfd);
    if (c->ufd >= 0)
      close(c->ufd);
  }
  pthread_mutex_lock(&p->mu);
  c->done = true;
  p->active--;
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static void *accept_main(void *arg) {
  proxy *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    bool stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    if (stop)
      break;
    struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
    if (poll(&pf, 1, TICK_MS) <= 0)
      continue;
    int fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    tune_socket(fd);
    conn *c = calloc(1, sizeof *c);
    pthread_mutex_lock(&p->mu);
    p->accepted++;
    if (!c || p->mode == PROXY_REFUSE || p->stop) {
      pthread_mutex_unlock(&p->mu);
      free(c);
      close_reset(fd);
      continue;
    }
    c->p = p;
    c->cfd = fd;
    c->ufd = -1;
    c->tainted = p->mode == PROXY_BLACKHOLE;
    c->next = p->conns;
    p->conns = c;
    p->active++;
    c->started = pthread_create(&c->th, NULL, conn_main, c) == 0;
    if (!c->started) {
      c->done = true;
      p->active--;
      close_reset(fd);
    }
    pthread_mutex_unlock(&p->mu);
  }
  return NULL;
}

int proxy_start(int upstream_port, proxy **out, char *err, size_t errlen) {
  *out = NULL;
  if (upstream_port <= 0 || upstream_port > 65535) {
    snprintf(err, errlen, "proxy: upstream port %d out of range 1..65535",
             upstream_port);
    return -1;
  }
  proxy *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "proxy: out of memory");
    return -1;
  }
  p->upstream_port = upstream_port;
  p->mode = PROXY_PASS;
  atomic_init(&p->bytes_up, 0);
  atomic_init(&p->bytes_down, 0);
  pthread_mutex_init(&p->mu, NULL);
  p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = 0,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(p->lfd, 64) != 0 ||
      getsockname(p->lfd, (struct sockaddr *)&a, &len) != 0) {
    snprintf(err, errlen, "proxy: cannot listen on 127.0.0.1: %s",
             strerror(errno));
    if (p->lfd >= 0)
      close(p->lfd);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return -1;
  }
  p->port = ntohs(a.sin_port);
  if (pthread_create(&p->accept_th, NULL, accept_main, p) != 0) {
    snprintf(err, errlen, "proxy: cannot start the accept thread");
    close(p->lfd);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return -1;
  }
  *out = p;
  return 0;
}

void proxy_stop(proxy *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->mu);
  p->stop = true;
  for (conn *c = p->conns; c; c = c->next)
    c->kill = true;
  pthread_mutex_unlock(&p->mu);
  pthread_join(p->accept_th, NULL);
  close(p->lfd);
  /* No new connections now: the list is stable. */
  conn *c = p->conns;
  while (c) {
    conn *next = c->next;
    if (c->started)
      pthread_join(c->th, NULL);
    free(c);
    c = next;
  }
  pthread_mutex_destroy(&p->mu);
  free(p);
}

int proxy_port(const proxy *p) { return p->port; }

void proxy_set_mode(proxy *p, proxy_mode mode) {
  pthread_mutex_lock(&p->mu);
  if (mode == PROXY_BLACKHOLE) {
    for (conn *c = p->conns; c; c = c->next)
      if (!c->done)
        c->tainted = true;
  } else if (p->mode == PROXY_BLACKHOLE) {
    for (conn *c = p->conns; c; c = c->next)
      if (c->tainted && !c->done)
        c->kill = true;
  }
  p->mode = mode;
  pthread_mutex_unlock(&p->mu);
}

proxy_mode proxy_get_mode(proxy *p) {
  pthread_mutex_lock(&p->mu);
  proxy_mode m = p->mode;
  pthread_mutex_unlock(&p->mu);
  return m;
}

int proxy_cut(proxy *p) {
  int n = 0;
  pthread_mutex_lock(&p->mu);
  for (conn *c = p->conns; c; c = c->next)
    if (!c->done && !c->kill) {
      c->kill = true;
      n++;
    }
  pthread_mutex_unlock(&p->mu);
  return n;
}

void proxy_set_rate(proxy *p, long bytes_per_s) {
  pthread_mutex_lock(&p->mu);
  p->rate = bytes_per_s > 0 ? bytes_per_s : 0;
  pthread_mutex_unlock(&p->mu);
}

unsigned long long proxy_bytes_up(proxy *p) {
  return atomic_load(&p->bytes_up);
}

unsigned long long proxy_bytes_down(proxy *p) {
  return atomic_load(&p->bytes_down);
}

unsigned proxy_accepted(proxy *p) {
  pthread_mutex_lock(&p->mu);
  unsigned n = p->accepted;
  pthread_mutex_unlock(&p->mu);
  return n;
}

int proxy_active(proxy *p) {
  pthread_mutex_lock(&p->mu);
  int n = p->active;
  pthread_mutex_unlock(&p->mu);
  return n;
}
