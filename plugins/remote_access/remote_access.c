/* remote_access: Cumulocity Cloud Remote Access (c8y_RemoteAccessConnect,
 * template 530). For each operation the device opens a WebSocket to
 * wss://<tenant>/service/remoteaccess/device/<connectionKey> and a TCP
 * connection to <host>:<port>, and forwards bytes both ways until either
 * side closes (Cumulocity docs: device-integration fragment library,
 * "Remote access", and cloud-remote-access "Device agent implementation").
 *
 * Threads: the 530 handler (the plugin's worker) checks the request, gets
 * the device's credentials and hands the session to one libwebsockets
 * service thread that runs every session; it completes the operation (503
 * once both ends are connected, 502 otherwise). Everything touching a
 * session or a wsi runs on that thread; the worker only queues new sessions
 * under `mu` and wakes it with lws_cancel_service().
 *
 * Memory: per direction one ring of buffer_bytes. When a ring cannot take
 * another read, reading from its source stops (lws_rx_flow_control) until
 * the ring drained to half: a stalled side slows the other instead of
 * growing a buffer. */
#define _GNU_SOURCE
#include "ra_lws.h" /* after <libwebsockets.h>: lws_* name its wrappers */

#include <c8y/plugin.h>

#include <ctype.h>
#include <errno.h>
#include <libwebsockets.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define RX_CHUNK 32768 /* the most one lws read hands us */
#define WS_CHUNK 32768 /* bytes per WebSocket message we send */
#define MAX_TARGETS 32 /* entries of allowed_targets */
#define KEY_MAX 128    /* connection keys are UUIDs (36) */
#define AUTH_WAIT_S 45 /* platform_auth may wait for a JWT */
#define WS_PATH "/service/remoteaccess/device/"
#define WS_SUBPROTOCOL "binary" /* what Cumulocity's endpoint speaks */

typedef struct target {
  char host[256]; /* lower case, IPv6 without brackets */
  int port;       /* 0 = any port */
} target;

typedef struct ring {
  uint8_t *buf;
  size_t cap, head, len;
} ring;

typedef struct ra ra;

typedef struct session {
  ra *r;
  struct session *next;
  unsigned id;
  c8y_operation *op; /* until 503/502 */
  char host[256];
  int port;
  char key[KEY_MAX + 1];
  /* the WebSocket end */
  char ws_host[256], ws_hosthdr[300], ws_path[512 + KEY_MAX];
  int ws_port, ws_tls_flags;
  char *authorization; /* wiped once the handshake is sent */
  struct lws *tcp, *ws;
  bool tcp_up, ws_up, tcp_rx_off, ws_rx_off;
  bool tcp_closing, ws_closing;
  bool starting; /* inside lws_client_connect_via_info: not freed there */
  ring to_tcp, to_ws;
  uint8_t *txbuf; /* LWS_PRE + WS_CHUNK */
  time_t last_active;
  uint64_t bytes_up, bytes_down; /* to the cloud, to the target */
  char why[256];                 /* first reason the session ends */
} session;

struct ra {
  c8y_plugin *self;
  const c8y_api *api;
  target targets[MAX_TARGETS];
  size_t ntargets;
  char targets_text[512];
  char protocols[128]; /* for 150 */
  int64_t max_sessions, idle_s, buffer_bytes, connect_s;

  pthread_mutex_t mu;
  struct lws_context *ctx; /* created with the first session */
  pthread_t thread;
  bool thread_live;
  bool stopping;     /* under mu: fini started */
  session *incoming; /* under mu: queued by the worker */
  int64_t nsessions; /* under mu: queued + running */
  unsigned next_id;  /* under mu */
  session *running;  /* service thread only */
  bool ca_dir_set;   /* trust settings the context was made with */
  char ca_dir[512];
};

/* lws logs through one process-wide function: it needs the plugin to name. */
static ra *log_owner;

/* ---- small helpers --------------------------------------------------------
 */

static void lws_log_line(int level, const char *line) {
  ra *r = log_owner;
  if (!r)
    return;
  size_t n = strcspn(line, "\r\n");
  r->api->log(r->self, level == LLL_ERR ? C8Y_LOG_WARNING : C8Y_LOG_DEBUG,
              "libwebsockets: %.*s", (int)n, line);
}

static int ring_init(ring *g, size_t cap) {
  g->buf = malloc(cap);
  g->cap = cap;
  g->head = g->len = 0;
  return g->buf ? 0 : -1;
}

static size_t ring_free(const ring *g) { return g->cap - g->len; }

static bool ring_put(ring *g, const void *data, size_t n) {
  if (n > ring_free(g))
    return false;
  size_t tail = (g->head + g->len) % g->cap;
  size_t first = g->cap - tail < n ? g->cap - tail : n;
  memcpy(g->buf + tail, data, first);
  memcpy(g->buf, (const uint8_t *)data + first, n - first);
  g->len += n;
  return true;
}

/* The longest contiguous run at the head, at most max. */
static size_t ring_peek(const ring *g, const uint8_t **p, size_t max) {
  size_t run = g->cap - g->head < g->len ? g->cap - g->head : g->len;
  *p = g->buf + g->head;
  return run < max ? run : max;
}

static void ring_drop(ring *g, size_t n) {
  g->head = (g->head + n) % g->cap;
  g->len -= n;
  if (g->len == 0)
    g->head = 0;
}

static void lower(char *s) {
  for (; *s; s++)
    *s = (char)tolower((unsigned char)*s);
}

/* "host:port", "[v6]:port", "host:*". Returns 0 or -1. */
static int parse_target(const char *s, size_t n, target *t) {
  const char *colon;
  const char *host = s;
  size_t hl;
  if (n > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', n);
    if (!close || close + 1 >= s + n || close[1] != ':')
      return -1;
    host = s + 1;
    hl = (size_t)(close - host);
    colon = close + 1;
  } else {
    colon = NULL;
    for (const char *c = s; c < s + n; c++)
      if (*c == ':')
        colon = c;
    if (!colon)
      return -1;
    hl = (size_t)(colon - s);
  }
  if (hl == 0 || hl >= sizeof t->host)
    return -1;
  memcpy(t->host, host, hl);
  t->host[hl] = '\0';
  lower(t->host);
  const char *p = colon + 1;
  size_t pl = (size_t)(s + n - p);
  if (pl == 1 && *p == '*') {
    t->port = 0;
    return 0;
  }
  if (pl == 0 || pl > 5)
    return -1;
  long v = 0;
  for (size_t i = 0; i < pl; i++) {
    if (p[i] < '0' || p[i] > '9')
      return -1;
    v = v * 10 + (p[i] - '0');
  }
  if (v < 1 || v > 65535)
    return -1;
  t->port = (int)v;
  return 0;
}

static bool target_allowed(const ra *r, const char *host, int port) {
  char h[256];
  snprintf(h, sizeof h, "%s", host);
  lower(h);
  for (size_t i = 0; i < r->ntargets; i++)
    if (strcmp(r->targets[i].host, h) == 0 &&
        (r->targets[i].port == 0 || r->targets[i].port == port))
      return true;
  return false;
}

/* ---- sessions (service thread) --------------------------------------------
 */

static void note_why(session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note_why(session *s, const char *fmt, ...) {
  if (s->why[0])
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->why, sizeof s->why, fmt, ap);
  va_end(ap);
}

static void wipe_authorization(session *s) {
  if (s->authorization) {
    explicit_bzero(s->authorization, strlen(s->authorization));
    free(s->authorization);
    s->authorization = NULL;
  }
}

static void session_free(session *s) {
  wipe_authorization(s);
  free(s->to_tcp.buf);
  free(s->to_ws.buf);
  free(s->txbuf);
  free(s);
}

/* 502 with the reason, once; the session goes on closing. */
static void session_fail_op(session *s, const char *reason) {
  if (!s->op)
    return;
  ra *r = s->r;
  r->api->log(r->self, C8Y_LOG_WARNING, "session %u to %s:%d failed: %s", s->id,
              s->host, s->port, reason);
  r->api->op_fail(s->op, reason);
  s->op = NULL;
}

static void kill_wsi(struct lws *wsi) {
  if (wsi)
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* One side ended: the other is closed once what it still has to deliver
 * from the ended side is written (bounded by the idle timeout). */
static void close_side(struct lws *wsi, bool *closing, bool up,
                       size_t pending) {
  if (!wsi || *closing)
    return;
  *closing = true;
  if (!up || pending == 0)
    kill_wsi(wsi);
  else
    lws_callback_on_writable(wsi); /* closes when drained */
}

static void side_ended(session *s) {
  if (s->op)
    session_fail_op(s, s->why[0] ? s->why : "connection closed");
  close_side(s->tcp, &s->tcp_closing, s->tcp_up, s->to_tcp.len);
  close_side(s->ws, &s->ws_closing, s->ws_up, s->to_ws.len);
}

/* The wsi itself is going: no kill or write on it any more. */
static void mark_closing(session *s, struct lws *wsi) {
  if (wsi == s->tcp)
    s->tcp_closing = true;
  else if (wsi == s->ws)
    s->ws_closing = true;
}

static void session_unlink_and_free(session *s) {
  ra *r = s->r;
  for (session **pp = &r->running; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  r->api->log(r->self, C8Y_LOG_INFO,
              "session %u ended (%s:%d, %s); %llu bytes to the cloud, %llu "
              "to the target",
              s->id, s->host, s->port, s->why[0] ? s->why : "closed",
              (unsigned long long)s->bytes_up,
              (unsigned long long)s->bytes_down);
  session_free(s);
  pthread_mutex_lock(&r->mu);
  r->nsessions--;
  pthread_mutex_unlock(&r->mu);
}

/* Freed once lws destroyed both connections (WSI_DESTROY). */
static void session_maybe_free(session *s) {
  if (!s->tcp && !s->ws && !s->starting)
    session_unlink_and_free(s);
}

static void touch(session *s) {
  s->last_active = time(NULL);
  if (s->tcp)
    lws_set_timeout(s->tcp, PENDING_TIMEOUT_USER_OK, (int)s->r->idle_s);
  if (s->ws)
    lws_set_timeout(s->ws, PENDING_TIMEOUT_USER_OK, (int)s->r->idle_s);
}

static void start_ws(session *s) {
  struct lws_client_connect_info i;
  memset(&i, 0, sizeof i);
  i.context = s->r->ctx;
  i.address = s->ws_host;
  i.port = s->ws_port;
  i.ssl_connection = s->ws_tls_flags;
  i.path = s->ws_path;
  i.host = s->ws_hosthdr;
  i.protocol = WS_SUBPROTOCOL;
  i.local_protocol_name = "ra-ws";
  i.opaque_user_data = s;
  i.pwsi = &s->ws;
  s->starting = true;
  struct lws *w = lws_client_connect_via_info(&i);
  s->starting = false;
  if (!w) { /* scrubbed, whether or not it called back first */
    s->ws = NULL;
    note_why(s, "cannot start the WebSocket to %s:%d", s->ws_host, s->ws_port);
    side_ended(s);
  }
  session_maybe_free(s);
}

static void start_tcp(session *s) {
  struct lws_client_connect_info i;
  memset(&i, 0, sizeof i);
  i.context = s->r->ctx;
  i.address = s->host;
  i.port = s->port;
  i.method = "RAW";
  i.local_protocol_name = "ra-tcp";
  i.opaque_user_data = s;
  i.pwsi = &s->tcp;
  s->starting = true;
  struct lws *w = lws_client_connect_via_info(&i);
  s->starting = false;
  if (!w) {
    s->tcp = NULL;
    note_why(s, "cannot connect to %s:%d", s->host, s->port);
    side_ended(s);
  }
  session_maybe_free(s);
}

/* Takes what the worker queued; on stop, ends every session. */
static void take_incoming(ra *r) {
  pthread_mutex_lock(&r->mu);
  session *in = r->incoming;
  r->incoming = NULL;
  bool stopping = r->stopping;
  pthread_mutex_unlock(&r->mu);
  while (in) {
    session *s = in;
    in = in->next;
    s->next = r->running;
    r->running = s;
    if (stopping) {
      note_why(s, "the agent is stopping");
      session_fail_op(s, s->why);
    } else {
      start_tcp(s);
    }
  }
  if (stopping)
    for (session *s = r->running; s; s = s->next) {
      note_why(s, "the agent is stopping");
      side_ended(s);
    }
}

/* The HTTP status of a refused WebSocket upgrade, for the 502 text. */
static void ws_refused(session *s, struct lws *wsi, const char *in) {
  unsigned status = wsi ? lws_http_client_http_response(wsi) : 0;
  if (status == 0 && in && strstr(in, "unauthorized"))
    status = 401;
  if (status == 401)
    note_why(s,
             "WebSocket to %s:%d refused: HTTP 401 (the device's credentials "
             "or the connection key were not accepted)",
             s->ws_host, s->ws_port);
  else if (status == 404)
    note_why(s,
             "WebSocket to %s:%d refused: HTTP 404 (unknown or expired "
             "connection key)",
             s->ws_host, s->ws_port);
  else if (status >= 300)
    note_why(s, "WebSocket to %s:%d refused: HTTP %u", s->ws_host, s->ws_port,
             status);
  else
    note_why(s, "WebSocket to %s:%d failed: %s", s->ws_host, s->ws_port,
             in && *in ? in : "connection error");
}

/* Writes from `g` to `wsi`; false when the connection must close. */
static bool flush_ring(session *s, struct lws *wsi, ring *g, bool ws) {
  const uint8_t *p;
  size_t n = ring_peek(g, &p, ws ? WS_CHUNK : 4 * RX_CHUNK);
  if (n == 0)
    return true;
  int w;
  if (ws) {
    memcpy(s->txbuf + LWS_PRE, p, n);
    w = lws_write(wsi, s->txbuf + LWS_PRE, n, LWS_WRITE_BINARY);
  } else {
    w = lws_write(wsi, (unsigned char *)p, n, LWS_WRITE_RAW);
  }
  if (w < 0) {
    /* a reset: the peer went away with data still coming */
    note_why(s, "the %s closed the connection (write failed)",
             ws ? "cloud" : "target");
    return false;
  }
  ring_drop(g, n);
  if (ws)
    s->bytes_up += n;
  else
    s->bytes_down += n;
  touch(s);
  return true;
}

/* After a write: more to send, or the source may read again. */
static void after_flush(session *s, struct lws *wsi, ring *g,
                        struct lws *source, bool *source_off) {
  if (g->len)
    lws_callback_on_writable(wsi);
  if (*source_off && source && ring_free(g) >= g->cap / 2) {
    *source_off = false;
    lws_rx_flow_control(source, 1);
  }
}

/* Data from one end into the ring towards the other. */
static int take_rx(session *s, ring *g, const void *in, size_t len,
                   struct lws *from, bool *from_off, struct lws *to) {
  if (!ring_put(g, in, len)) {
    /* Not reached while flow control works: refuse to grow. */
    note_why(s, "buffer limit exceeded (%zu bytes)", g->cap);
    side_ended(s);
    return -1;
  }
  if (to)
    lws_callback_on_writable(to);
  if (ring_free(g) < 2 * RX_CHUNK && !*from_off) {
    *from_off = true;
    lws_rx_flow_control(from, 0);
  }
  touch(s);
  return 0;
}

static int on_lws(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                  void *in, size_t len) {
  (void)user;
  struct lws_context *ctx = lws_get_context(wsi);
  ra *r = lws_context_user(ctx);
  session *s = wsi ? lws_get_opaque_user_data(wsi) : NULL;
  switch (reason) {
  case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
    take_incoming(r);
    return 0;

  case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS:
    /* a CA directory ([c8y] ca_path): lws itself takes only a file */
    if (r->ca_dir_set &&
        !SSL_CTX_load_verify_locations((SSL_CTX *)user, NULL, r->ca_dir))
      r->api->log(r->self, C8Y_LOG_ERROR, "cannot load CA directory %s",
                  r->ca_dir);
    return 0;

  case LWS_CALLBACK_RAW_CONNECTED:
    if (!s || wsi != s->tcp)
      return 0;
    s->tcp_up = true;
    /* The target may talk first (an SSH banner): it waits in the socket
     * until the cloud end is there. */
    s->tcp_rx_off = true;
    lws_rx_flow_control(wsi, 0);
    start_ws(s);
    return 0;

  case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    if (!s)
      return 0;
    /* WSI_DESTROY follows and frees */
    mark_closing(s, wsi);
    if (wsi == s->tcp)
      note_why(s, "cannot connect to %s:%d: %s", s->host, s->port,
               in && len ? (const char *)in : "connection refused");
    else if (wsi == s->ws)
      ws_refused(s, wsi, in);
    side_ended(s);
    return 0;

  case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
    if (!s || wsi != s->ws || !s->authorization || !s->authorization[0])
      return 0;
    unsigned char **p = in, *end = *p + len;
    int rc =
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                     (const unsigned char *)s->authorization,
                                     (int)strlen(s->authorization), p, end);
    wipe_authorization(s);
    return rc ? -1 : 0;
  }

  case LWS_CALLBACK_CLIENT_ESTABLISHED:
    if (!s || wsi != s->ws)
      return 0;
    s->ws_up = true;
    wipe_authorization(s);
    if (s->tcp_rx_off && s->tcp) {
      s->tcp_rx_off = false;
      lws_rx_flow_control(s->tcp, 1);
    }
    touch(s);
    if (s->op) {
      r->api->log(r->self, C8Y_LOG_INFO,
                  "session %u: %s:%d connected to the cloud", s->id, s->host,
                  s->port);
      r->api->op_succeed(s->op, NULL);
      s->op = NULL;
    }
    return 0;

  case LWS_CALLBACK_RAW_RX:
    if (!s || wsi != s->tcp || s->tcp_closing)
      return 0;
    return take_rx(s, &s->to_ws, in, len, wsi, &s->tcp_rx_off,
                   s->ws_up ? s->ws : NULL);

  case LWS_CALLBACK_CLIENT_RECEIVE:
    if (!s || wsi != s->ws || s->ws_closing)
      return 0;
    return take_rx(s, &s->to_tcp, in, len, wsi, &s->ws_rx_off, s->tcp);

  case LWS_CALLBACK_RAW_WRITEABLE:
    if (!s || wsi != s->tcp)
      return 0;
    if (!flush_ring(s, wsi, &s->to_tcp, false))
      return -1;
    if (s->tcp_closing && s->to_tcp.len == 0)
      return -1; /* delivered what the cloud sent before it closed */
    after_flush(s, wsi, &s->to_tcp, s->ws, &s->ws_rx_off);
    return 0;

  case LWS_CALLBACK_CLIENT_WRITEABLE:
    if (!s || wsi != s->ws || !s->ws_up)
      return 0;
    if (!flush_ring(s, wsi, &s->to_ws, true))
      return -1;
    if (s->ws_closing && s->to_ws.len == 0) {
      lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
      return -1;
    }
    after_flush(s, wsi, &s->to_ws, s->tcp, &s->tcp_rx_off);
    return 0;

  case LWS_CALLBACK_TIMER:
    return 0;

  case LWS_CALLBACK_RAW_CLOSE:
  case LWS_CALLBACK_CLIENT_CLOSED:
    if (!s)
      return 0;
    mark_closing(s, wsi);
    if (time(NULL) - s->last_active >= r->idle_s && s->last_active)
      note_why(s, "idle for %lld s", (long long)r->idle_s);
    else if (wsi == s->tcp)
      note_why(s, "the target closed the connection");
    else if (wsi == s->ws)
      note_why(s, "the cloud closed the connection");
    side_ended(s);
    return 0;

  case LWS_CALLBACK_WSI_DESTROY:
    if (!s)
      return 0;
    lws_set_opaque_user_data(wsi, NULL);
    mark_closing(s, wsi);
    if (wsi == s->tcp)
      s->tcp = NULL;
    else if (wsi == s->ws)
      s->ws = NULL;
    else
      return 0;
    note_why(s, "connection closed");
    side_ended(s);
    session_maybe_free(s);
    return 0;

  default:
    return 0;
  }
}

static const struct lws_protocols protocols[] = {
    /* protocols[0] also gets every wsi's WSI_DESTROY and the wake-ups */
    {"ra-tcp", on_lws, 0, RX_CHUNK, 0, NULL, 0},
    {"ra-ws", on_lws, 0, RX_CHUNK, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static void *service_main(void *arg) {
  ra *r = arg;
  for (;;) {
    pthread_mutex_lock(&r->mu);
    bool done = r->stopping && r->nsessions == 0 && !r->incoming;
    pthread_mutex_unlock(&r->mu);
    if (done)
      break;
    if (lws_service(r->ctx, 0) < 0)
      break;
  }
  return NULL;
}

/* The lws context with the platform's trust settings; under r->mu. The
 * first one loads libwebsockets. */
static int make_context(ra *r, const c8y_platform_auth *a, bool tls) {
  char why[600];
  if (!ra_lws_load(why, sizeof why)) {
    r->api->log(r->self, C8Y_LOG_ERROR, "%s", why);
    return C8Y_EIO;
  }
  lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_line);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = protocols;
  info.user = r;
  info.gid = (gid_t)-1;
  info.uid = (uid_t)-1;
  info.pt_serv_buf_size = RX_CHUNK;
  info.timeout_secs = (unsigned)r->connect_s;
  info.connect_timeout_secs = (unsigned)r->connect_s;
  info.count_threads = 1;
  if (tls) {
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    if (a->ca_file[0] || a->ca_path[0]) {
      /* the agent's trust anchors replace the system's, as for curl */
      info.options |= LWS_SERVER_OPTION_DISABLE_OS_CA_CERTS;
      if (a->ca_file[0])
        info.client_ssl_ca_filepath = a->ca_file;
    } else if (access(X509_get_default_cert_file(), R_OK) == 0) {
      info.client_ssl_ca_filepath = X509_get_default_cert_file();
    }
    snprintf(r->ca_dir, sizeof r->ca_dir, "%s", a->ca_path);
    r->ca_dir_set = a->ca_path[0] != '\0';
  }
  r->ctx = lws_create_context(&info);
  if (!r->ctx)
    return C8Y_EIO;
  if (pthread_create(&r->thread, NULL, service_main, r) != 0) {
    lws_context_destroy(r->ctx);
    r->ctx = NULL;
    return C8Y_EIO;
  }
  r->thread_live = true;
  return C8Y_OK;
}

/* ---- the 530 handler (the plugin's worker) --------------------------------
 */

static bool key_ok(const char *k) {
  size_t n = strlen(k);
  if (n == 0 || n > KEY_MAX)
    return false;
  for (const char *c = k; *c; c++)
    if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_' && *c != '.' &&
        *c != '~')
      return false;
  return true;
}

/* Splits base_url "http[s]://host[:port][/prefix]" into the WebSocket end. */
static int ws_endpoint(session *s, const char *base_url, const char *key,
                       bool *tls) {
  const char *rest;
  if (strncasecmp(base_url, "https://", 8) == 0) {
    *tls = true;
    rest = base_url + 8;
  } else if (strncasecmp(base_url, "http://", 7) == 0) {
    *tls = false;
    rest = base_url + 7;
  } else {
    return -1;
  }
  size_t auth_len = strcspn(rest, "/");
  const char *prefix = rest + auth_len;
  char hostport[256];
  if (auth_len == 0 || auth_len >= sizeof hostport)
    return -1;
  memcpy(hostport, rest, auth_len);
  hostport[auth_len] = '\0';
  snprintf(s->ws_hosthdr, sizeof s->ws_hosthdr, "%s", hostport);
  s->ws_port = *tls ? 443 : 80;
  char *colon = strrchr(hostport, ':');
  char *close = strrchr(hostport, ']');
  if (colon && (!close || colon > close)) {
    *colon = '\0';
    s->ws_port = atoi(colon + 1);
    if (s->ws_port < 1 || s->ws_port > 65535)
      return -1;
  }
  const char *h = hostport;
  if (h[0] == '[') {
    h++;
    if (close)
      *close = '\0';
  }
  snprintf(s->ws_host, sizeof s->ws_host, "%s", h);
  int n =
      snprintf(s->ws_path, sizeof s->ws_path, "%s" WS_PATH "%s", prefix, key);
  return n < 0 || (size_t)n >= sizeof s->ws_path ? -1 : 0;
}

static int fail_now(ra *r, c8y_operation *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_now(ra *r, c8y_operation *op, const char *fmt, ...) {
  char why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  r->api->log(r->self, C8Y_LOG_WARNING, "remote access refused: %s", why);
  r->api->op_fail(op, why);
  return C8Y_OK;
}

static int on_connect(c8y_plugin *self, c8y_operation *op, void *user_data) {
  (void)self;
  ra *r = user_data;
  const c8y_api *api = r->api;
  if (api->op_field_count(op) < 3)
    return fail_now(r, op,
                    "530 needs hostname, port and connectionKey (got %zu "
                    "fields)",
                    api->op_field_count(op));
  const char *host = api->op_field(op, 0), *port_s = api->op_field(op, 1),
             *key = api->op_field(op, 2);
  char *end = NULL;
  errno = 0;
  long port = strtol(port_s, &end, 10);
  if (!*host || strlen(host) >= 256 || !*port_s || *end || errno || port < 1 ||
      port > 65535)
    return fail_now(r, op, "invalid target '%s:%s'", host, port_s);
  if (!key_ok(key))
    return fail_now(r, op,
                    "invalid connection key (1..%d characters of letters, "
                    "digits, '-', '_', '.', '~')",
                    KEY_MAX);
  if (!target_allowed(r, host, (int)port))
    return fail_now(r, op,
                    "target %s:%ld is not allowed (allowed_targets = %s)", host,
                    port, r->targets_text);

  session *s = calloc(1, sizeof *s);
  if (!s)
    return C8Y_ENOMEM;
  s->r = r;
  s->op = op;
  s->port = (int)port;
  snprintf(s->host, sizeof s->host, "%s", host);
  snprintf(s->key, sizeof s->key, "%s", key);

  /* the tenant's URL first, then the credentials for the URL built on it */
  c8y_platform_auth *a = calloc(1, sizeof *a);
  bool tls = false;
  int rc = a ? C8Y_OK : C8Y_ENOMEM;
  if (rc == C8Y_OK) {
    a->size = sizeof *a;
    rc = api->platform_auth(r->self, a);
  }
  if (rc == C8Y_OK && ws_endpoint(s, a->base_url, key, &tls) != 0) {
    snprintf(a->error, sizeof a->error,
             "cannot build the WebSocket URL from '%.200s'", a->base_url);
    rc = C8Y_EINVAL;
  }
  char url[1024];
  if (rc == C8Y_OK) {
    snprintf(url, sizeof url, "%s://%s%s", tls ? "wss" : "ws", s->ws_hosthdr,
             s->ws_path);
    a->url = url;
    rc = api->platform_auth(r->self, a);
  }
  if (rc == C8Y_OK && !a->authorization[0]) {
    snprintf(a->error, sizeof a->error, "no device credentials for %.200s",
             s->ws_host);
    rc = C8Y_EAUTH;
  }
  if (rc == C8Y_OK)
    rc = (s->authorization = strdup(a->authorization)) ? C8Y_OK : C8Y_ENOMEM;
  if (rc == C8Y_OK && (ring_init(&s->to_tcp, (size_t)r->buffer_bytes) ||
                       ring_init(&s->to_ws, (size_t)r->buffer_bytes) ||
                       !(s->txbuf = malloc(LWS_PRE + WS_CHUNK))))
    rc = C8Y_ENOMEM;
  if (rc == C8Y_OK && tls)
    s->ws_tls_flags =
        LCCSCF_USE_SSL |
        (a->verify_hostname ? 0 : LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK) |
        (a->verify_peer ? 0 : LCCSCF_ALLOW_SELFSIGNED);

  pthread_mutex_lock(&r->mu);
  if (rc == C8Y_OK && r->stopping) {
    snprintf(a->error, sizeof a->error, "the agent is stopping");
    rc = C8Y_ECANCELED;
  }
  if (rc == C8Y_OK && r->nsessions >= r->max_sessions) {
    snprintf(a->error, sizeof a->error,
             "%lld remote access sessions are open already (max_sessions)",
             (long long)r->nsessions);
    rc = C8Y_EAGAIN;
  }
  if (rc == C8Y_OK && !r->ctx && make_context(r, a, tls) != C8Y_OK) {
    snprintf(a->error, sizeof a->error,
             "cannot start libwebsockets (see the log)");
    rc = C8Y_EIO;
  }
  if (rc == C8Y_OK) {
    s->id = ++r->next_id;
    /* Logged before the service thread has it: it may end (and free) the
     * session before this thread runs again. */
    api->log(r->self, C8Y_LOG_INFO, "session %u: connecting %s:%ld to %s",
             s->id, host, port, s->ws_host);
    s->next = r->incoming;
    r->incoming = s;
    r->nsessions++;
    lws_cancel_service(r->ctx);
  }
  pthread_mutex_unlock(&r->mu);
  if (rc != C8Y_OK) {
    fail_now(r, op, "%s", a ? a->error : "out of memory");
    session_free(s);
  }
  if (a) {
    explicit_bzero(a->authorization, sizeof a->authorization);
    free(a);
  }
  return rc == C8Y_OK ? C8Y_PENDING : C8Y_OK;
}

/* ---- configuration and lifecycle ------------------------------------------
 */

static int read_targets(ra *r, const char *text) {
  snprintf(r->targets_text, sizeof r->targets_text, "%s", text);
  const char *p = text;
  while (*p) {
    p += strspn(p, " ,\t");
    size_t n = strcspn(p, " ,\t");
    if (n == 0)
      break;
    if (r->ntargets == MAX_TARGETS) {
      r->api->log(r->self, C8Y_LOG_ERROR,
                  "allowed_targets: more than %d entries", MAX_TARGETS);
      return C8Y_EINVAL;
    }
    if (parse_target(p, n, &r->targets[r->ntargets]) != 0) {
      r->api->log(r->self, C8Y_LOG_ERROR,
                  "allowed_targets: '%.*s' is not host:port, [ipv6]:port or "
                  "host:* (port 1..65535)",
                  (int)n, p);
      return C8Y_EINVAL;
    }
    r->ntargets++;
    p += n;
  }
  return C8Y_OK;
}

static int read_protocols(ra *r, const char *text) {
  static const char *const known[] = {"SSH", "TELNET", "VNC", "PASSTHROUGH"};
  r->protocols[0] = '\0';
  const char *p = text;
  while (*p) {
    p += strspn(p, " ,\t");
    size_t n = strcspn(p, " ,\t");
    if (n == 0)
      break;
    size_t k = 0;
    while (k < 4 &&
           !(strlen(known[k]) == n && strncasecmp(known[k], p, n) == 0))
      k++;
    if (k == 4) {
      r->api->log(r->self, C8Y_LOG_ERROR,
                  "protocols: '%.*s' is not one of SSH, TELNET, VNC, "
                  "PASSTHROUGH",
                  (int)n, p);
      return C8Y_EINVAL;
    }
    if (!strstr(r->protocols, known[k])) {
      if (r->protocols[0])
        strcat(r->protocols, ",");
      strcat(r->protocols, known[k]);
    }
    p += n;
  }
  return C8Y_OK;
}

static int read_int(ra *r, const char *key, int64_t def, int64_t lo, int64_t hi,
                    int64_t *out) {
  if (r->api->config_int(r->self, key, def, out) != C8Y_OK)
    return C8Y_EINVAL;
  if (*out < lo || *out > hi) {
    r->api->log(r->self, C8Y_LOG_ERROR, "%s: %lld is outside %lld..%lld", key,
                (long long)*out, (long long)lo, (long long)hi);
    return C8Y_EINVAL;
  }
  return C8Y_OK;
}

static void ra_free(ra *r) {
  pthread_mutex_destroy(&r->mu);
  free(r);
}

static int ra_init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  if (!C8Y_API_HAS(api, platform_auth)) {
    api->log(self, C8Y_LOG_ERROR,
             "needs an agent with SDK 1.2 (platform_auth); not loaded");
    return C8Y_ESTATE;
  }
  ra *r = calloc(1, sizeof *r);
  if (!r)
    return C8Y_ENOMEM;
  r->self = self;
  r->api = api;
  pthread_mutex_init(&r->mu, NULL);
  int rc = read_targets(
      r, api->config_string(self, "allowed_targets", "127.0.0.1:22"));
  if (rc == C8Y_OK)
    rc = read_protocols(
        r, api->config_string(self, "protocols", "SSH,PASSTHROUGH"));
  if (rc == C8Y_OK)
    rc = read_int(r, "max_sessions", 4, 1, 64, &r->max_sessions);
  if (rc == C8Y_OK)
    rc = read_int(r, "idle_timeout", 3600, 5, 7 * 86400, &r->idle_s);
  if (rc == C8Y_OK)
    rc = read_int(r, "buffer_bytes", 262144, 4 * RX_CHUNK, 64 << 20,
                  &r->buffer_bytes);
  if (rc == C8Y_OK)
    rc = read_int(r, "connect_timeout", 30, 1, 300, &r->connect_s);
  if (rc == C8Y_OK && r->ntargets == 0) {
    api->log(self, C8Y_LOG_ERROR, "allowed_targets: empty");
    rc = C8Y_EINVAL;
  }
  /* Two connects and the wait for credentials fit in the operation's
   * timeout, so the plugin, not the engine, says why it failed. */
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "530",
                            (uint32_t)(2 * r->connect_s + AUTH_WAIT_S) * 1000,
                            on_connect, r);
  if (rc != C8Y_OK) {
    ra_free(r);
    return rc;
  }
  if (r->protocols[0]) {
    const char *fields[5] = {"150"};
    char buf[sizeof r->protocols];
    snprintf(buf, sizeof buf, "%s", r->protocols);
    size_t n = 1;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < 5;
         t = strtok_r(NULL, ",", &save))
      fields[n++] = t;
    int src = api->send_static(self, NULL, fields, n);
    if (src < 0)
      api->log(self, C8Y_LOG_ERROR, "cannot send 150: %s",
               api->status_str(src));
  }
  log_owner = r; /* lws logs through it from the first session on */
  *user_data = r;
  return C8Y_OK;
}

/* Ends every session (their pending operations fail), then the thread. */
static void ra_fini(c8y_plugin *self, void *user_data) {
  (void)self;
  ra *r = user_data;
  pthread_mutex_lock(&r->mu);
  r->stopping = true;
  bool live = r->thread_live;
  if (r->ctx)
    lws_cancel_service(r->ctx);
  pthread_mutex_unlock(&r->mu);
  if (live)
    pthread_join(r->thread, NULL);
  if (r->ctx)
    lws_context_destroy(r->ctx); /* frees what the loop left */
  r->ctx = NULL;
  /* lws outlives the plugin (it stays loaded, or another part of the
   * process links it too) */
  if (ra_lws_loaded())
    lws_set_log_level(LLL_ERR | LLL_WARN, lwsl_emit_stderr);
  log_owner = NULL;
  ra_free(r);
}

C8Y_PLUGIN(.name = "remote_access", .version = "1.0.0", .init = ra_init,
           .fini = ra_fini);
