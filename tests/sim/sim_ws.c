#include "sim_ws.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_KEYS 64
#define CHUNK 32768
#define RX_LIMIT (4u << 20)
#define PATH_PREFIX "/service/remoteaccess/device/"

typedef struct bytes {
  unsigned char *data;
  size_t off, len, cap; /* valid: data[off .. off+len) */
} bytes;

typedef struct key_slot {
  char key[160];
  struct lws *wsi;
  bool used;      /* a device connected with it (keys work once) */
  bool connected; /* established, not yet closed */
  bool closed;
  bool close_req, rx_off, rx_on_req;
  bytes out, in;
} key_slot;

struct sim_ws {
  struct lws_context *ctx;
  struct lws_vhost *vh;
  sim_http *auth;
  size_t max_queue;
  char url[64];
  int port;
  pthread_t thread;
  bool stop; /* under mu */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  key_slot keys[MAX_KEYS]; /* under mu */
  size_t nkeys;
  size_t refused401, refused404, refused_other;
  unsigned char tx[LWS_PRE + CHUNK]; /* service thread */
};

static bool bytes_add(bytes *b, const void *d, size_t n) {
  if (b->off + b->len + n > b->cap) {
    if (b->off) { /* compact before growing */
      memmove(b->data, b->data + b->off, b->len);
      b->off = 0;
    }
    if (b->len + n > b->cap) {
      size_t cap = b->cap ? b->cap : 65536;
      while (cap < b->len + n)
        cap *= 2;
      unsigned char *g = realloc(b->data, cap);
      if (!g)
        return false;
      b->data = g;
      b->cap = cap;
    }
  }
  memcpy(b->data + b->off + b->len, d, n);
  b->len += n;
  return true;
}

static void bytes_take(bytes *b, size_t n) {
  b->off += n;
  b->len -= n;
  if (b->len == 0)
    b->off = 0;
}

static key_slot *slot_of(sim_ws *w, const char *key) {
  for (size_t i = 0; i < w->nkeys; i++)
    if (strcmp(w->keys[i].key, key) == 0)
      return &w->keys[i];
  return NULL;
}

static key_slot *slot_of_wsi(sim_ws *w, struct lws *wsi) {
  for (size_t i = 0; i < w->nkeys; i++)
    if (w->keys[i].wsi == wsi)
      return &w->keys[i];
  return NULL;
}

static void deadline_in(struct timespec *ts, int ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* The key from the request path, or "" when the path is not ours. */
static void key_from_path(struct lws *wsi, char *key, size_t len) {
  char uri[512];
  key[0] = '\0';
  if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0)
    return;
  if (strncmp(uri, PATH_PREFIX, sizeof PATH_PREFIX - 1) == 0)
    snprintf(key, len, "%.159s", uri + sizeof PATH_PREFIX - 1);
}

static int refuse(sim_ws *w, struct lws *wsi, int status) {
  pthread_mutex_lock(&w->mu);
  if (status == 401)
    w->refused401++;
  else if (status == 404)
    w->refused404++;
  else
    w->refused_other++;
  pthread_mutex_unlock(&w->mu);
  if (lws_return_http_status(wsi, (unsigned)status, NULL))
    return -1;
  return 1;
}

/* Credentials as the REST side checks them, then a known, unused key. */
static int confirm_upgrade(sim_ws *w, struct lws *wsi) {
  char auth[8300] = "";
  int alen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
  if (alen > 0 && alen < (int)sizeof auth)
    lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION);
  if (!w->auth ||
      sim_http_check_authorization(w->auth, auth[0] ? auth : NULL) != 0)
    return refuse(w, wsi, 401);
  char key[160];
  key_from_path(wsi, key, sizeof key);
  pthread_mutex_lock(&w->mu);
  key_slot *k = key[0] ? slot_of(w, key) : NULL;
  bool ok = k && !k->used;
  if (ok) {
    k->used = true;
    k->wsi = wsi;
  }
  pthread_mutex_unlock(&w->mu);
  return ok ? 0 : refuse(w, wsi, 404);
}

/* Cross-thread requests from the test: writes, closes, reads resumed. */
static void serve_requests(sim_ws *w) {
  pthread_mutex_lock(&w->mu);
  for (size_t i = 0; i < w->nkeys; i++) {
    key_slot *k = &w->keys[i];
    if (!k->wsi || !k->connected)
      continue;
    if (k->out.len || k->close_req)
      lws_callback_on_writable(k->wsi);
    if (k->rx_on_req) {
      k->rx_on_req = false;
      k->rx_off = false;
      lws_rx_flow_control(k->wsi, 1);
    }
  }
  pthread_mutex_unlock(&w->mu);
}

static int on_ws(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                 void *in, size_t len) {
  (void)user;
  sim_ws *w = lws_context_user(lws_get_context(wsi));
  key_slot *k;
  switch (reason) {
  case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
    serve_requests(w);
    return 0;
  case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
    return confirm_upgrade(w, wsi);
  case LWS_CALLBACK_HTTP:
    return refuse(w, wsi, 404); /* plain HTTP: not this endpoint */
  case LWS_CALLBACK_ESTABLISHED:
    pthread_mutex_lock(&w->mu);
    if ((k = slot_of_wsi(w, wsi)))
      k->connected = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (k)
      lws_callback_on_writable(wsi);
    return k ? 0 : -1;
  case LWS_CALLBACK_RECEIVE:
    pthread_mutex_lock(&w->mu);
    k = slot_of_wsi(w, wsi);
    bool ok = k && bytes_add(&k->in, in, len);
    if (ok && k->in.len >= RX_LIMIT && !k->rx_off) {
      k->rx_off = true;
      lws_rx_flow_control(wsi, 0);
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return ok ? 0 : -1;
  case LWS_CALLBACK_SERVER_WRITEABLE: {
    pthread_mutex_lock(&w->mu);
    k = slot_of_wsi(w, wsi);
    size_t n = k ? (k->out.len < CHUNK ? k->out.len : CHUNK) : 0;
    bool close = k && k->close_req && k->out.len == 0;
    if (n)
      memcpy(w->tx + LWS_PRE, k->out.data + k->out.off, n);
    pthread_mutex_unlock(&w->mu);
    if (close) {
      lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
      return -1;
    }
    if (n && lws_write(wsi, w->tx + LWS_PRE, n, LWS_WRITE_BINARY) < (int)n)
      return -1;
    pthread_mutex_lock(&w->mu);
    if (n)
      bytes_take(&k->out, n);
    bool more = k && (k->out.len || k->close_req);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (more)
      lws_callback_on_writable(wsi);
    return 0;
  }
  case LWS_CALLBACK_CLOSED:
  case LWS_CALLBACK_WSI_DESTROY:
    pthread_mutex_lock(&w->mu);
    if ((k = slot_of_wsi(w, wsi))) {
      k->wsi = NULL;
      k->connected = false;
      k->closed = true;
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
  default:
    return lws_callback_http_dummy(wsi, reason, user, in, len);
  }
}

static const struct lws_protocols protocols[] = {
    {"http", on_ws, 0, CHUNK, 0, NULL, 0},
    {"binary", on_ws, 0, CHUNK, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static void *service_main(void *arg) {
  sim_ws *w = arg;
  for (;;) {
    pthread_mutex_lock(&w->mu);
    bool stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    if (stop || lws_service(w->ctx, 0) < 0)
      break;
  }
  return NULL;
}

int sim_ws_start(const sim_ws_options *o, sim_ws **out, char *err,
                 size_t errlen) {
  *out = NULL;
  sim_ws *w = calloc(1, sizeof *w);
  if (!w) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  w->auth = o->auth;
  w->max_queue = o->max_queue ? o->max_queue : 1u << 20;
  pthread_mutex_init(&w->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  lws_set_log_level(LLL_ERR, NULL);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
  if (o->cert_pem)
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
  info.user = w;
  info.gid = (gid_t)-1;
  info.uid = (uid_t)-1;
  info.pt_serv_buf_size = CHUNK;
  info.count_threads = 1;
  w->ctx = lws_create_context(&info);
  if (w->ctx) {
    info.port = 0; /* any free port */
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.vhost_name = "sim-remoteaccess";
    info.ssl_cert_filepath = o->cert_pem;
    info.ssl_private_key_filepath = o->key_pem;
    w->vh = lws_create_vhost(w->ctx, &info);
  }
  if (!w->ctx || !w->vh) {
    snprintf(err, errlen, "libwebsockets: cannot listen on 127.0.0.1");
    sim_ws_stop(w);
    return -1;
  }
  w->port = lws_get_vhost_listen_port(w->vh);
  snprintf(w->url, sizeof w->url, "%s://127.0.0.1:%d",
           o->cert_pem ? "https" : "http", w->port);
  if (pthread_create(&w->thread, NULL, service_main, w) != 0) {
    snprintf(err, errlen, "cannot start the service thread");
    lws_context_destroy(w->ctx);
    w->ctx = NULL;
    sim_ws_stop(w);
    return -1;
  }
  *out = w;
  return 0;
}

void sim_ws_stop(sim_ws *w) {
  if (!w)
    return;
  if (w->ctx) {
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_mutex_unlock(&w->mu);
    lws_cancel_service(w->ctx);
    pthread_join(w->thread, NULL);
    lws_context_destroy(w->ctx);
  }
  for (size_t i = 0; i < w->nkeys; i++) {
    free(w->keys[i].out.data);
    free(w->keys[i].in.data);
  }
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}

int sim_ws_port(const sim_ws *w) { return w->port; }
const char *sim_ws_url(const sim_ws *w) { return w->url; }

void sim_ws_add_key(sim_ws *w, const char *key) {
  pthread_mutex_lock(&w->mu);
  if (w->nkeys < MAX_KEYS && !slot_of(w, key))
    snprintf(w->keys[w->nkeys++].key, sizeof w->keys[0].key, "%s", key);
  pthread_mutex_unlock(&w->mu);
}

bool sim_ws_wait_connected(sim_ws *w, const char *key, int timeout_ms) {
  struct timespec dl;
  deadline_in(&dl, timeout_ms);
  pthread_mutex_lock(&w->mu);
  key_slot *k = slot_of(w, key);
  while (k && !k->connected && !k->closed)
    if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) != 0)
      break;
  bool ok = k && k->connected;
  pthread_mutex_unlock(&w->mu);
  return ok;
}

size_t sim_ws_send(sim_ws *w, const char *key, const void *data, size_t len,
                   int timeout_ms) {
  struct timespec dl;
  deadline_in(&dl, timeout_ms);
  size_t done = 0;
  pthread_mutex_lock(&w->mu);
  key_slot *k = slot_of(w, key);
  while (k && done < len && k->connected) {
    size_t room = w->max_queue > k->out.len ? w->max_queue - k->out.len : 0;
    if (room == 0) {
      if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) != 0)
        break;
      continue;
    }
    size_t n = len - done < room ? len - done : room;
    if (!bytes_add(&k->out, (const unsigned char *)data + done, n))
      break;
    done += n;
    pthread_mutex_unlock(&w->mu);
    lws_cancel_service(w->ctx);
    pthread_mutex_lock(&w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  return done;
}

size_t sim_ws_recv(sim_ws *w, const char *key, void *buf, size_t len,
                   int timeout_ms) {
  struct timespec dl;
  deadline_in(&dl, timeout_ms);
  pthread_mutex_lock(&w->mu);
  key_slot *k = slot_of(w, key);
  while (k && k->in.len == 0 && !k->closed)
    if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) != 0)
      break;
  size_t n = 0;
  bool wake = false;
  if (k && k->in.len) {
    n = k->in.len < len ? k->in.len : len;
    memcpy(buf, k->in.data + k->in.off, n);
    bytes_take(&k->in, n);
    if (k->rx_off && !k->rx_on_req && k->in.len < RX_LIMIT / 2)
      wake = k->rx_on_req = true;
  }
  pthread_mutex_unlock(&w->mu);
  if (wake)
    lws_cancel_service(w->ctx);
  return n;
}

void sim_ws_close(sim_ws *w, const char *key) {
  pthread_mutex_lock(&w->mu);
  key_slot *k = slot_of(w, key);
  if (k)
    k->close_req = true;
  pthread_mutex_unlock(&w->mu);
  lws_cancel_service(w->ctx);
}

bool sim_ws_wait_closed(sim_ws *w, const char *key, int timeout_ms) {
  struct timespec dl;
  deadline_in(&dl, timeout_ms);
  pthread_mutex_lock(&w->mu);
  key_slot *k = slot_of(w, key);
  while (k && !k->closed)
    if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) != 0)
      break;
  bool closed = k && k->closed;
  pthread_mutex_unlock(&w->mu);
  return closed;
}

size_t sim_ws_queued(sim_ws *w, const char *key) {
  pthread_mutex_lock(&w->mu);
  key_slot *k = slot_of(w, key);
  size_t n = k ? k->out.len : 0;
  pthread_mutex_unlock(&w->mu);
  return n;
}

size_t sim_ws_refused(sim_ws *w, int status) {
  pthread_mutex_lock(&w->mu);
  size_t n = status == 401   ? w->refused401
             : status == 404 ? w->refused404
                             : w->refused_other;
  pthread_mutex_unlock(&w->mu);
  return n;
}
