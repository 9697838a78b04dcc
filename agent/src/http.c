#include "http.h"

#include "clock.h"
#include "fsutil.h"
#include "libcurl.h"
#include "log.h"
#include "outq.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define TOKEN_WAIT_MS 15000  /* s/uat -> 71 round trip */
#define TOKEN_RETRY_MS 5000  /* re-ask when a request got no answer */
#define TOKEN_MARGIN_S 60    /* renew this long before exp */
#define MAX_ATTEMPTS 6       /* per transfer, for cuts and 5xx */
#define STALL_SECONDS 60     /* below 1 byte/s this long = a dead peer */
#define CONNECT_TIMEOUT_S 30 /* DNS + TCP + TLS */

#define IDENTITY_WAIT_MS 15000 /* 123 -> 124 round trip */

/* A device's managed-object id: known (mo), being looked up by one caller
 * while the others wait for its answer (looking), or the failure of the
 * last lookup, handed to those who waited for it. */
typedef struct id_entry {
  char *ext;
  char *mo;
  bool looking;
  int rc;
  long code;
  char err[256];
} id_entry;

struct http_ctx {
  http_url_parts base;
  char *base_url;
  char *tenant_host;
  char *user; /* <tenant>/<user> */
  char *password;
  bool jwt;
  char *ca_path; /* copied: the config is replaced on SIGHUP */
  bool ca_is_dir;
  bool verify_host;
  uint64_t max_bytes;

  atomic_bool stopping; /* http_stop: every transfer ends now */
  CURLSH *share;        /* set up by the first transfer (curl_ready) */
  pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
  pthread_mutex_t curl_mu; /* guards share's creation */

  pthread_mutex_t mu; /* token and id cache */
  pthread_cond_t cv;
  char *token;
  long long token_exp, token_renew_at; /* wall seconds */
  unsigned token_gen;
  long long token_asked_ms; /* 0 = no request outstanding */
  http_token_request_fn request_token;
  void *request_ctx;
  id_entry *ids;
  size_t nids;
  /* 123 over MQTT: one question at a time, since the 124 answer does not
   * say which device it is about. */
  http_identity_request_fn request_identity;
  void *identity_ctx;
  bool identity_busy;
  char *identity_answer;
  unsigned identity_gen;
};

static void seterr(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
}

/* ---- URLs ---------------------------------------------------------------- */

int http_parse_url(const char *url, http_url_parts *out) {
  memset(out, 0, sizeof *out);
  if (!url)
    return C8Y_EINVAL;
  const char *p;
  if (strncasecmp(url, "https://", 8) == 0) {
    out->https = true;
    p = url + 8;
  } else if (strncasecmp(url, "http://", 7) == 0) {
    p = url + 7;
  } else {
    return C8Y_EINVAL;
  }
  size_t auth_len = strcspn(p, "/?#");
  const char *at = memchr(p, '@', auth_len);
  if (at) {
    auth_len -= (size_t)(at + 1 - p);
    p = at + 1;
  }
  const char *end = p + auth_len;
  const char *host = p, *host_end;
  const char *port = NULL;
  if (*p == '[') {
    host = p + 1;
    host_end = memchr(host, ']', (size_t)(end - host));
    if (!host_end)
      return C8Y_EINVAL;
    if (host_end + 1 < end) {
      if (host_end[1] != ':')
        return C8Y_EINVAL;
      port = host_end + 2;
    }
  } else {
    host_end = memchr(p, ':', auth_len);
    if (host_end)
      port = host_end + 1;
    else
      host_end = end;
  }
  size_t hl = (size_t)(host_end - host);
  if (hl == 0 || hl >= sizeof out->host)
    return C8Y_EINVAL;
  for (size_t i = 0; i < hl; i++) {
    unsigned char c = (unsigned char)host[i];
    if (c <= ' ' || c == '%' || c == '\\')
      return C8Y_EINVAL;
    out->host[i] = (char)tolower(c);
  }
  while (hl > 1 && out->host[hl - 1] == '.') /* "example.com." */
    out->host[--hl] = '\0';
  out->port = out->https ? 443 : 80;
  if (port) {
    if (port == end)
      return 0; /* "host:" means the default port */
    long v = 0;
    for (const char *c = port; c < end; c++) {
      if (*c < '0' || *c > '9' || (v = v * 10 + (*c - '0')) > 65535)
        return C8Y_EINVAL;
    }
    if (v == 0)
      return C8Y_EINVAL;
    out->port = (int)v;
  }
  return 0;
}

bool http_auth_allowed(const http_url_parts *base, const char *tenant_host,
                       const char *url) {
  http_url_parts u;
  if (http_parse_url(url, &u) != 0)
    return false;
  if (u.https == base->https && u.port == base->port &&
      strcmp(u.host, base->host) == 0)
    return true;
  if (!tenant_host || !u.https || u.port != 443)
    return false;
  char th[256];
  snprintf(th, sizeof th, "%s", tenant_host);
  size_t n = strlen(th);
  while (n > 1 && th[n - 1] == '.')
    th[--n] = '\0';
  return strcasecmp(u.host, th) == 0;
}

/* ---- JWT ----------------------------------------------------------------- */

static int b64url_val(int c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '-' || c == '+')
    return 62;
  if (c == '_' || c == '/')
    return 63;
  return -1;
}

int http_jwt_times(const char *token, long long *exp, long long *iat) {
  *exp = *iat = 0;
  const char *p = token ? strchr(token, '.') : NULL;
  if (!p)
    return C8Y_EINVAL;
  p++;
  size_t n = strcspn(p, ".");
  char *json = malloc(n + 1);
  if (!json)
    return C8Y_ENOMEM;
  size_t out = 0;
  unsigned acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n && p[i] != '='; i++) {
    int v = b64url_val((unsigned char)p[i]);
    if (v < 0) {
      free(json);
      return C8Y_EINVAL;
    }
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      json[out++] = (char)((acc >> bits) & 0xff);
    }
  }
  json[out] = '\0';
  json_t *root = json_loads(json, 0, NULL);
  free(json);
  json_t *e = root ? json_object_get(root, "exp") : NULL;
  int rc = C8Y_EINVAL;
  if (json_is_integer(e) || json_is_real(e)) {
    *exp = (long long)json_number_value(e);
    json_t *i = json_object_get(root, "iat");
    if (json_is_integer(i) || json_is_real(i))
      *iat = (long long)json_number_value(i);
    rc = *exp > 0 ? 0 : C8Y_EINVAL;
  }
  json_decref(root);
  return rc;
}

void http_token_received(http_ctx *h, const char *token) {
  if (!h || !h->jwt)
    return;
  size_t n = strcspn(token, "\r\n");
  char *t = strndup(token, n);
  if (!t)
    return;
  long long exp, iat, now = (long long)time(NULL);
  if (http_jwt_times(t, &exp, &iat) != 0) {
    log_warning("JWT from s/dat has no readable exp claim; using it for 5 "
                "minutes");
    exp = now + 300;
    iat = now;
  }
  if (iat <= 0 || iat > exp)
    iat = now < exp ? now : exp;
  long long margin = (exp - iat) / 4;
  if (margin > TOKEN_MARGIN_S)
    margin = TOKEN_MARGIN_S;
  pthread_mutex_lock(&h->mu);
  free(h->token);
  h->token = t;
  h->token_exp = exp;
  h->token_renew_at = exp - margin;
  h->token_gen++;
  h->token_asked_ms = 0;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  log_debug("JWT received (expires in %lld s)", exp - now);
}

/* A usable token into out. `stale` is the token the server just refused
 * (401), which forces a new one. */
static int get_token(http_ctx *h, const char *stale, char *out, size_t outlen,
                     char *err, size_t errlen) {
  pthread_mutex_lock(&h->mu);
  unsigned gen = h->token_gen;
  long long deadline = clock_mono_ms() + TOKEN_WAIT_MS;
  for (;;) {
    long long now = (long long)time(NULL);
    bool usable = h->token && !(stale && strcmp(stale, h->token) == 0);
    /* A token issued since this call started is taken even if it is near
     * its end: the platform just issued it. */
    if (usable && (now < h->token_renew_at ||
                   (h->token_gen != gen && now < h->token_exp))) {
      snprintf(out, outlen, "%s", h->token);
      pthread_mutex_unlock(&h->mu);
      return C8Y_OK;
    }
    long long ms = clock_mono_ms();
    if (atomic_load(&h->stopping) || ms >= deadline)
      break;
    if (h->token_asked_ms == 0 || ms - h->token_asked_ms > TOKEN_RETRY_MS) {
      h->token_asked_ms = ms;
      pthread_mutex_unlock(&h->mu);
      h->request_token(h->request_ctx);
      pthread_mutex_lock(&h->mu);
      continue; /* the answer may already be here */
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += 1;
    pthread_cond_timedwait(&h->cv, &h->mu, &dl);
  }
  pthread_mutex_unlock(&h->mu);
  if (atomic_load(&h->stopping)) {
    seterr(err, errlen, "the agent is stopping");
    return C8Y_ECANCELED;
  }
  seterr(err, errlen,
         "no access token from Cumulocity within %d s (empty s/uat was not "
         "answered by 71 on s/dat); is the device connected?",
         TOKEN_WAIT_MS / 1000);
  return C8Y_EAUTH;
}

int http_bearer_token(http_ctx *h, const char *stale, char *out, size_t outlen,
                      char *err, size_t errlen) {
  if (!h || !h->jwt) {
    seterr(err, errlen, "the device does not use a JWT ([c8y] http_auth)");
    return C8Y_ENOTSUP;
  }
  return get_token(h, stale, out, outlen, err, errlen);
}

/* ---- context ------------------------------------------------------------- */

static void share_lock(CURL *c, curl_lock_data data, curl_lock_access a,
                       void *ud) {
  (void)c;
  (void)a;
  http_ctx *h = ud;
  pthread_mutex_lock(&h->share_mu[data]);
}

static void share_unlock(CURL *c, curl_lock_data data, void *ud) {
  (void)c;
  http_ctx *h = ud;
  pthread_mutex_unlock(&h->share_mu[data]);
}

int http_new(const agent_config *cfg, http_token_request_fn request_token,
             void *ctx, http_ctx **out, char *err, size_t errlen) {
  *out = NULL;
  http_ctx *h = calloc(1, sizeof *h);
  if (!h) {
    seterr(err, errlen, "out of memory");
    return C8Y_ENOMEM;
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &ca);
  pthread_condattr_destroy(&ca);
  for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
    pthread_mutex_init(&h->share_mu[i], NULL);
  pthread_mutex_init(&h->curl_mu, NULL);
  h->request_token = request_token;
  h->request_ctx = ctx;
  h->jwt = cfg->http_jwt;
  h->verify_host = cfg->verify_hostname;
  h->ca_path = cfg->ca_path ? strdup(cfg->ca_path) : NULL;
  h->max_bytes = (uint64_t)cfg->transfer_max_bytes;
  struct stat st;
  h->ca_is_dir =
      cfg->ca_path && stat(cfg->ca_path, &st) == 0 && S_ISDIR(st.st_mode);
  h->base_url = strdup(cfg->http_url ? cfg->http_url : "");
  h->tenant_host = cfg->host ? strdup(cfg->host) : NULL;
  h->user = config_username(cfg);
  h->password = cfg->password ? strdup(cfg->password) : NULL;
  if (!h->base_url || (cfg->host && !h->tenant_host) ||
      (cfg->ca_path && !h->ca_path)) {
    seterr(err, errlen, "out of memory");
    http_free(h);
    return C8Y_ENOMEM;
  }
  if (http_parse_url(h->base_url, &h->base) != 0) {
    seterr(err, errlen, "[c8y] http_url: '%s' is not an http(s) URL",
           h->base_url);
    http_free(h);
    return C8Y_EINVAL;
  }
  if (!h->jwt && (!h->user || !h->password)) {
    seterr(err, errlen, "HTTP Basic auth needs [c8y] tenant, user, password");
    http_free(h);
    return C8Y_EINVAL;
  }
  log_info("REST API at %s (%s auth)", h->base_url,
           h->jwt ? "JWT over s/uat" : "Basic");
  *out = h;
  return 0;
}

/* libcurl and the share of connections, DNS and TLS sessions, set up by
 * the first transfer: a device that never transfers never loads libcurl
 * (see libcurl.h). */
static int curl_ready(http_ctx *h, char *err, size_t errlen) {
  pthread_mutex_lock(&h->curl_mu);
  int rc = C8Y_OK;
  if (!h->share) {
    if (!libcurl_load()) {
      seterr(err, errlen, "cannot load libcurl: %s", libcurl_error());
      rc = C8Y_EIO;
    } else if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      seterr(err, errlen, "libcurl initialisation failed");
      rc = C8Y_EIO;
    } else if (!(h->share = curl_share_init())) {
      curl_global_cleanup();
      seterr(err, errlen, "libcurl initialisation failed");
      rc = C8Y_EIO;
    } else {
      curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
      curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
      curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
      curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
      curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
      curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    }
  }
  pthread_mutex_unlock(&h->curl_mu);
  return rc;
}

void http_stop(http_ctx *h) {
  if (h) {
    atomic_store(&h->stopping, true);
    pthread_mutex_lock(&h->mu);
    pthread_cond_broadcast(&h->cv); /* token waiters give up */
    pthread_mutex_unlock(&h->mu);
  }
}

void http_set_identity_source(http_ctx *h, http_identity_request_fn fn,
                              void *ctx) {
  if (!h)
    return;
  pthread_mutex_lock(&h->mu);
  h->request_identity = fn;
  h->identity_ctx = ctx;
  pthread_mutex_unlock(&h->mu);
}

void http_identity_received(http_ctx *h, const char *mo) {
  if (!h || !mo || !*mo)
    return;
  pthread_mutex_lock(&h->mu);
  if (h->identity_busy && !h->identity_answer) {
    h->identity_answer = strdup(mo);
    h->identity_gen++;
    pthread_cond_broadcast(&h->cv);
  }
  pthread_mutex_unlock(&h->mu);
}

void http_free(http_ctx *h) {
  if (!h)
    return;
  free(h->identity_answer);
  if (h->share) {
    curl_share_cleanup(h->share);
    curl_global_cleanup();
  }
  for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
    pthread_mutex_destroy(&h->share_mu[i]);
  pthread_mutex_destroy(&h->curl_mu);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->cv);
  for (size_t i = 0; i < h->nids; i++) {
    free(h->ids[i].ext);
    free(h->ids[i].mo);
  }
  free(h->ids);
  free(h->token);
  free(h->base_url);
  free(h->ca_path);
  free(h->tenant_host);
  free(h->user);
  if (h->password) {
    memset(h->password, 0, strlen(h->password));
    free(h->password);
  }
  free(h);
}

/* ---- credentials for a plugin's own connection --------------------------- */

/* "ws://" and "wss://" as "http://" and "https://", so one host rule covers
 * both (RFC 6455 4.1: ws/wss use the ports and TLS of http/https). */
static int as_http_url(const char *url, char *out, size_t len) {
  const char *rest = NULL, *scheme = NULL;
  if (strncasecmp(url, "wss://", 6) == 0) {
    scheme = "https://";
    rest = url + 6;
  } else if (strncasecmp(url, "ws://", 5) == 0) {
    scheme = "http://";
    rest = url + 5;
  }
  int n = rest ? snprintf(out, len, "%s%s", scheme, rest)
               : snprintf(out, len, "%s", url);
  return n < 0 || (size_t)n >= len ? C8Y_EINVAL : C8Y_OK;
}

int http_platform_auth(http_ctx *h, c8y_platform_auth *a) {
  a->authorization[0] = a->base_url[0] = a->ca_file[0] = a->ca_path[0] = '\0';
  a->error[0] = '\0';
  a->verify_peer = 1; /* the agent never turns chain verification off */
  a->verify_hostname = h->verify_host ? 1 : 0;
  snprintf(a->base_url, sizeof a->base_url, "%s", h->base_url);
  if (h->ca_path)
    snprintf(h->ca_is_dir ? a->ca_path : a->ca_file, sizeof a->ca_path, "%s",
             h->ca_path);
  if (!a->url)
    return C8Y_OK; /* the caller derives its URL from base_url */
  char url[2048];
  http_url_parts u;
  if (as_http_url(a->url, url, sizeof url) != C8Y_OK ||
      http_parse_url(url, &u) != 0) {
    seterr(a->error, sizeof a->error, "'%s' is not an http(s) or ws(s) URL",
           a->url);
    return C8Y_EINVAL;
  }
  if (atomic_load(&h->stopping)) {
    seterr(a->error, sizeof a->error, "the agent is stopping");
    return C8Y_ECANCELED;
  }
  if (!http_auth_allowed(&h->base, h->tenant_host, url))
    return C8Y_OK; /* not the tenant: no credentials, as for downloads */
  if (h->jwt) {
    char token[sizeof a->authorization - 8];
    int rc = get_token(h, NULL, token, sizeof token, a->error, sizeof a->error);
    if (rc == C8Y_OK)
      snprintf(a->authorization, sizeof a->authorization, "Bearer %s", token);
    memset(token, 0, sizeof token);
    return rc;
  }
  /* Basic "<tenant>/<user>:<password>" (RFC 7617), what curl sends. */
  size_t ul = strlen(h->user), pl = strlen(h->password);
  size_t raw_len = ul + 1 + pl;
  if (6 + 4 * ((raw_len + 2) / 3) + 1 > sizeof a->authorization) {
    seterr(a->error, sizeof a->error, "credentials too long for a header");
    return C8Y_EINVAL;
  }
  unsigned char raw[sizeof a->authorization];
  memcpy(raw, h->user, ul);
  raw[ul] = ':';
  memcpy(raw + ul + 1, h->password, pl);
  memcpy(a->authorization, "Basic ", 6);
  EVP_EncodeBlock((unsigned char *)a->authorization + 6, raw, (int)raw_len);
  memset(raw, 0, raw_len);
  return C8Y_OK;
}

/* ---- one request --------------------------------------------------------- */

typedef struct req {
  http_ctx *h;
  const char *method; /* NULL = GET */
  const char *url;
  const char *content_type;
  const char *body; /* request body in memory */
  size_t body_len;
  curl_mime *(*make_mime)(CURL *c, void *ud); /* multipart body */
  void *mime_ud;
  http_cancel_fn cancelled;
  const c8y_operation *op;

  bool restarted; /* server ignored Range: file rewound */

  /* what the server sent (and the download sink, rep.fd) */
  http_reply rep;
  char *err;
  size_t errlen;
} req;

/* Whether `n` more bytes fit on the download's file system and leave
 * OUTQ_RESERVE_BYTES free: a cloud-chosen URL must not fill the disk the
 * queue needs for statuses and alarms. */
static bool room_for(http_reply *r, uint64_t n, bool whole) {
  struct statvfs sv;
  if (fstatvfs(r->fd, &sv) != 0)
    return true; /* unknown: a full disk shows in the write */
  uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
  if (avail >= OUTQ_RESERVE_BYTES && avail - OUTQ_RESERVE_BYTES >= n)
    return true;
  r->no_space = true;
  r->space_avail = avail;
  r->space_need = r->offset + n;
  r->space_more = !whole;
  return false;
}

/* Whether `n` more bytes stay within the cap (without overflowing). */
static bool within_max(const http_reply *r, uint64_t n) {
  return !r->max || (r->offset <= r->max && n <= r->max - r->offset);
}

bool http_reply_body(http_reply *r, const char *data, size_t n) {
  if (r->fd < 0 || r->code < 200 || r->code >= 300) {
    size_t room = HTTP_BODY_MAX - r->body_len;
    size_t take = n < room ? n : room;
    memcpy(r->body + r->body_len, data, take);
    r->body_len += take;
    r->body[r->body_len] = '\0';
    return true;
  }
  if (!within_max(r, n)) {
    r->too_big = true;
    return false;
  }
  if (!room_for(r, n, false))
    return false;
  if (fsutil_write_all(r->fd, data, n, NULL) != 0) {
    r->write_errno = errno;
    r->write_failed = true;
    r->no_space = errno == ENOSPC || errno == EDQUOT;
    return false;
  }
  r->offset += n;
  return true;
}

/* The header line (not NUL-terminated, CRLF included) as a string without
 * its line end, cut to fit `out`; false if it was cut. */
static bool header_text(const char *data, size_t n, char *out, size_t cap) {
  while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r'))
    n--;
  bool whole = n < cap;
  if (!whole)
    n = cap - 1;
  memcpy(out, data, n);
  out[n] = '\0';
  return whole;
}

/* "HTTP/1.1 200 OK", "HTTP/2 404": the status, or -1. */
static int status_of(const char *line) {
  if (strncmp(line, "HTTP/", 5) != 0)
    return -1;
  const char *p = line + 5 + strcspn(line + 5, " ");
  if (*p != ' ' || p[1] < '1' || p[1] > '9' || !isdigit((unsigned char)p[2]) ||
      !isdigit((unsigned char)p[3]) || (p[4] && p[4] != ' '))
    return -1;
  return (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
}

/* "Content-Length: <digits>": the value, or -1 (absent, malformed, or more
 * than 2^63). */
static long long content_length_of(const char *line) {
  if (strncasecmp(line, "Content-Length:", 15) != 0)
    return -1;
  const char *p = line + 15;
  p += strspn(p, " \t");
  if (!isdigit((unsigned char)*p))
    return -1;
  errno = 0;
  char *end = NULL;
  long long v = strtoll(p, &end, 10);
  if (errno || v < 0 || end[strspn(end, " \t")])
    return -1;
  return v;
}

/* The status line decides whether the body is the file or an error text. */
bool http_reply_header(http_reply *r, const char *data, size_t n) {
  char line[256];
  bool whole = header_text(data, n, line, sizeof line);
  int code = status_of(line);
  if (code >= 0) {
    r->code = code;
    r->body_len = 0;
    r->body[0] = '\0';
    if (code == 200 && r->fd >= 0 && r->offset > 0) {
      /* The server ignored Range and sends the whole file: start over. */
      if (ftruncate(r->fd, 0) != 0 || lseek(r->fd, 0, SEEK_SET) != 0) {
        r->write_errno = errno;
        r->write_failed = true;
        return false;
      }
      log_info("the server ignored Range at byte %llu; taking the whole file",
               (unsigned long long)r->offset);
      r->offset = 0;
    }
    return true;
  }
  long long len;
  if (r->fd >= 0 && r->code >= 200 && r->code < 300 && whole &&
      (len = content_length_of(line)) >= 0) {
    /* Refuse an oversized file, or one the disk cannot take, before
     * fetching any of it. */
    if (!within_max(r, (uint64_t)len)) {
      r->too_big = true;
      return false;
    }
    if (!room_for(r, (uint64_t)len, true))
      return false;
  }
  return true;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
  req *r = ud;
  size_t n = size * nmemb;
  return http_reply_body(&r->rep, data, n) ? n : 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud) {
  req *r = ud;
  size_t n = size * nmemb;
  return http_reply_header(&r->rep, data, n) ? n : 0;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                       curl_off_t un) {
  (void)dt;
  (void)dn;
  (void)ut;
  (void)un;
  req *r = ud;
  if (atomic_load(&r->h->stopping))
    return 1;
  return r->cancelled && r->op && r->cancelled(r->op) ? 1 : 0;
}

/* Cumulocity's error JSON {"error":..,"message":..} or the first line. */
void http_reply_error_text(const http_reply *r, char *out, size_t len) {
  out[0] = '\0';
  json_t *j = r->body_len ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
  const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
  const char *kind = j ? json_string_value(json_object_get(j, "error")) : NULL;
  if (msg || kind)
    snprintf(out, len, "%s%s%s", kind ? kind : "", kind && msg ? ": " : "",
             msg ? msg : "");
  else if (r->body_len)
    snprintf(out, len, "%.*s", (int)strcspn(r->body, "\r\n"), r->body);
  json_decref(j);
  for (char *c = out; *c; c++)
    if ((unsigned char)*c < ' ' || *c == 0x7f)
      *c = ' ';
}

/* An id of the platform's ("12345") as it goes into a URL path: letters,
 * digits, '-' and '_' only, so an answer cannot steer the next request. A
 * JSON string or integer; 0, or C8Y_EINVAL. */
static int id_from(json_t *v, char *out, size_t n) {
  char buf[128];
  if (json_is_integer(v))
    snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
  else if (json_is_string(v) && json_string_length(v) < sizeof buf)
    memcpy(buf, json_string_value(v), json_string_length(v) + 1);
  else
    return C8Y_EINVAL;
  size_t len = strlen(buf);
  if (len == 0 || len >= n ||
      len != strspn(buf, "0123456789abcdefghijklmnopq"
                         "rstuvwxyzABCDEFGHIJKLMNOPQRS"
                         "TUVWXYZ-_"))
    return C8Y_EINVAL;
  memcpy(out, buf, len + 1);
  return 0;
}

int http_reply_identity(const http_reply *r, char *mo, size_t n) {
  json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
  int rc = id_from(json_object_get(json_object_get(j, "managedObject"), "id"),
                   mo, n);
  json_decref(j);
  return rc;
}

int http_reply_event_id(const http_reply *r, char *id, size_t n) {
  json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
  int rc = id_from(json_object_get(j, "id"), id, n);
  json_decref(j);
  return rc;
}

static const char *status_hint(long code) {
  switch (code) {
  case 401:
    return "the platform refused the device's credentials";
  case 403:
    return "access denied (the device user lacks the role for this call)";
  case 404:
    return "not found";
  case 413:
    return "payload too large";
  case 416:
    return "range not satisfiable";
  case 422:
    return "unprocessable entity";
  default:
    return code >= 500 ? "server error" : "request refused";
  }
}

/* One HTTP exchange. Returns C8Y_OK for a 2xx answer or a status code with
 * r->err filled; *retry says whether trying again may help. */
static int perform(req *r, bool *retry) {
  http_ctx *h = r->h;
  *retry = false;
  http_url_parts u;
  if (http_parse_url(r->url, &u) != 0) {
    seterr(r->err, r->errlen, "'%s' is not an http(s) URL", r->url);
    return C8Y_EINVAL;
  }
  int ready = curl_ready(h, r->err, r->errlen);
  if (ready != C8Y_OK)
    return ready;
  bool auth = http_auth_allowed(&h->base, h->tenant_host, r->url);
  char token[8192] = "";
  const char *stale = NULL;
  for (int pass = 0; pass < 2; pass++) {
    if (auth && h->jwt) {
      int rc = get_token(h, stale, token, sizeof token, r->err, r->errlen);
      if (rc != C8Y_OK)
        return rc;
    }
    CURL *c = curl_easy_init();
    if (!c) {
      seterr(r->err, r->errlen, "out of memory (curl handle)");
      return C8Y_ENOMEM;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    curl_mime *mime = NULL;
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_SHARE, h->share);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)STALL_SECONDS);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "c8y-agent");
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, h->verify_host ? 2L : 0L);
    if (h->ca_path)
      curl_easy_setopt(c, h->ca_is_dir ? CURLOPT_CAPATH : CURLOPT_CAINFO,
                       h->ca_path);
    if (auth && h->jwt) {
      curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
      curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, token);
    } else if (auth) {
      /* Basic through curl's own auth: never re-sent to another host on a
       * redirect. */
      curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
      curl_easy_setopt(c, CURLOPT_USERNAME, h->user);
      curl_easy_setopt(c, CURLOPT_PASSWORD, h->password);
    }
    hdrs = curl_slist_append(hdrs, "Accept: application/json, */*");
    if (r->content_type) {
      char ct[256];
      snprintf(ct, sizeof ct, "Content-Type: %s", r->content_type);
      hdrs = curl_slist_append(hdrs, ct);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (r->body) {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body);
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    } else if (r->make_mime) {
      mime = r->make_mime(c, r->mime_ud);
      if (!mime) {
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(c);
        seterr(r->err, r->errlen, "cannot build the multipart body");
        return C8Y_EIO;
      }
      curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    }
    if (r->method)
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    /* CURLOPT_RANGE rather than RESUME_FROM: a 200 answer (Range ignored)
     * is then taken as the whole file instead of an error. */
    char range[32];
    if (r->rep.fd >= 0 && r->rep.offset > 0) {
      snprintf(range, sizeof range, "%llu-", (unsigned long long)r->rep.offset);
      curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    if (r->rep.fd >= 0) /* fewer, larger writes; what the curl tool uses */
      curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 128L * 1024);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, r);
    r->rep.code = 0;
    r->rep.body_len = 0;
    r->rep.body[0] = '\0';
    r->rep.too_big = false;
    r->rep.no_space = false;
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdrs);
    curl_mime_free(mime);
    curl_easy_cleanup(c);
    r->rep.code = code;

    if (atomic_load(&h->stopping)) {
      seterr(r->err, r->errlen,
             "transfer from %s stopped: the agent is stopping", u.host);
      return C8Y_ECANCELED;
    }
    if (r->cancelled && r->op && r->cancelled(r->op)) {
      seterr(r->err, r->errlen,
             "transfer from %s stopped: the operation was "
             "cancelled",
             u.host);
      return C8Y_ECANCELED;
    }
    if (r->rep.too_big) {
      seterr(r->err, r->errlen,
             "file from %s is larger than the limit of %llu bytes", u.host,
             (unsigned long long)r->rep.max);
      return C8Y_ETOOBIG;
    }
    if (r->rep.no_space && !r->rep.write_failed) {
      seterr(r->err, r->errlen,
             "not enough disk space for the file from %s: it needs %llu "
             "bytes%s, %llu are free, and the agent keeps %u KiB free for "
             "its queue",
             u.host, (unsigned long long)r->rep.space_need,
             r->rep.space_more ? " or more" : "",
             (unsigned long long)r->rep.space_avail, OUTQ_RESERVE_BYTES / 1024);
      return C8Y_EIO;
    }
    if (r->rep.write_failed) {
      seterr(r->err, r->errlen, "cannot write the download: %s",
             strerror(r->rep.write_errno));
      return C8Y_EIO;
    }
    if (code == 401 && auth && h->jwt && pass == 0) {
      /* An expired or revoked token: renew once, then give up. */
      log_info("HTTP 401 from %s: renewing the access token", u.host);
      stale = token;
      continue;
    }
    if (code >= 400) {
      char why[200];
      http_reply_error_text(&r->rep, why, sizeof why);
      seterr(r->err, r->errlen, "HTTP %ld from %s: %s%s%s", code, u.host,
             status_hint(code), why[0] ? ": " : "", why);
      if (code == 401)
        return C8Y_EAUTH;
      *retry = code >= 500 || code == 408 || code == 429;
      return C8Y_EHTTP;
    }
    if (cc == CURLE_RANGE_ERROR || cc == CURLE_BAD_DOWNLOAD_RESUME) {
      seterr(r->err, r->errlen, "%s cannot resume at byte %llu", u.host,
             (unsigned long long)r->rep.offset);
      *retry = true;
      r->restarted = true; /* caller rewinds */
      return C8Y_ENET;
    }
    if (cc != CURLE_OK) {
      const char *what = cerr[0] ? cerr : curl_easy_strerror(cc);
      bool tls = cc == CURLE_PEER_FAILED_VERIFICATION ||
                 cc == CURLE_SSL_CONNECT_ERROR ||
                 cc == CURLE_SSL_CACERT_BADFILE;
      seterr(r->err, r->errlen, "%s %s:%d: %s",
             tls ? "TLS with" : "transfer with", u.host, u.port, what);
      *retry = !tls && cc != CURLE_UNSUPPORTED_PROTOCOL &&
               cc != CURLE_URL_MALFORMAT && cc != CURLE_TOO_MANY_REDIRECTS;
      return C8Y_ENET;
    }
    if (code < 200 || code >= 300) {
      seterr(r->err, r->errlen, "HTTP %ld from %s: unexpected answer", code,
             u.host);
      return C8Y_EHTTP;
    }
    return C8Y_OK;
  }
  return C8Y_EAUTH; /* not reached: pass 1 always returns */
}

/* Waits before attempt n (1-based), honouring cancellation. Returns false
 * when the operation was cancelled meanwhile. */
static bool backoff(http_ctx *h, int attempt, http_cancel_fn cancelled,
                    const c8y_operation *op) {
  long ms = 250L << (attempt > 5 ? 5 : attempt);
  if (ms > 5000)
    ms = 5000;
  for (long waited = 0; waited < ms; waited += 50) {
    if ((cancelled && op && cancelled(op)) || atomic_load(&h->stopping))
      return false;
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
  }
  return true;
}

/* Request with bounded retries for transient failures (5xx, cuts). */
static int perform_retrying(req *r) {
  int rc = C8Y_EIO;
  for (int attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    bool retry;
    rc = perform(r, &retry);
    if (rc == C8Y_OK || !retry || attempt == MAX_ATTEMPTS)
      break;
    log_info("%s (attempt %d of %d); retrying", r->err, attempt, MAX_ATTEMPTS);
    if (!backoff(r->h, attempt, r->cancelled, r->op)) {
      seterr(r->err, r->errlen, "stopped: the operation was cancelled");
      return C8Y_ECANCELED;
    }
  }
  return rc;
}

/* ---- download ------------------------------------------------------------ */

int http_sha256_file(const char *path, char hex[65]) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return C8Y_EIO;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(md);
    close(fd);
    errno = ENOMEM;
    return C8Y_ENOMEM;
  }
  unsigned char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) != 0) {
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      EVP_MD_CTX_free(md);
      close(fd);
      errno = e;
      return C8Y_EIO;
    }
    EVP_DigestUpdate(md, buf, (size_t)n);
  }
  close(fd);
  unsigned char d[32];
  unsigned int dl = 0;
  EVP_DigestFinal_ex(md, d, &dl);
  EVP_MD_CTX_free(md);
  for (unsigned i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
  return 0;
}

static bool valid_file_name(const char *f) {
  return f && *f && f[0] != '.' && !strchr(f, '/') && strlen(f) < 200;
}

static bool valid_sha256(const char *s) {
  if (strlen(s) != 64)
    return false;
  for (const char *c = s; *c; c++)
    if (!isxdigit((unsigned char)*c))
      return false;
  return true;
}

/* The partial file is resumed across calls only for the same URL, which is
 * recorded next to it. */
static bool same_source(const char *src_path, const char *url) {
  FILE *f = fopen(src_path, "re");
  if (!f)
    return false;
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strcmp(buf, url) == 0;
}

static int write_source(const char *src_path, const char *url) {
  FILE *f = fopen(src_path, "we");
  if (!f)
    return C8Y_EIO;
  int ok = fputs(url, f) >= 0;
  return (fclose(f) == 0 && ok) ? 0 : C8Y_EIO;
}

int http_download(http_ctx *h, const char *dir, c8y_download *d,
                  http_cancel_fn cancelled) {
  if (!d || d->size < sizeof *d)
    return C8Y_EINVAL;
  d->path[0] = d->error[0] = '\0';
  d->bytes = 0;
  d->http_code = 0;
  if (!h) {
    seterr(d->error, sizeof d->error, "the agent has no HTTP client");
    return C8Y_ENOTSUP;
  }
  if (atomic_load(&h->stopping)) {
    seterr(d->error, sizeof d->error, "the agent is stopping");
    return C8Y_ECANCELED;
  }
  http_url_parts u;
  if (!d->url || http_parse_url(d->url, &u) != 0) {
    seterr(d->error, sizeof d->error, "'%s' is not an http(s) URL",
           d->url ? d->url : "(null)");
    return C8Y_EINVAL;
  }
  if (!valid_file_name(d->file)) {
    seterr(d->error, sizeof d->error,
           "file name '%s' must be a plain name (no '/', not starting with "
           "'.')",
           d->file ? d->file : "(null)");
    return C8Y_EINVAL;
  }
  if (d->sha256 && !valid_sha256(d->sha256)) {
    seterr(d->error, sizeof d->error, "sha256 '%s' is not 64 hex digits",
           d->sha256);
    return C8Y_EINVAL;
  }
  if (!dir) {
    seterr(d->error, sizeof d->error, "the plugin has no state directory");
    return C8Y_EIO;
  }
  char final[512], part[600], src[600];
  if (snprintf(final, sizeof final, "%s/%s", dir, d->file) >=
      (int)sizeof final) {
    seterr(d->error, sizeof d->error, "path %s/%s is too long", dir, d->file);
    return C8Y_EINVAL;
  }
  snprintf(part, sizeof part, "%s/.%s.partial", dir, d->file);
  snprintf(src, sizeof src, "%s/.%s.source", dir, d->file);
  uint64_t max = h->max_bytes;
  if (d->max_bytes && (max == 0 || d->max_bytes < max))
    max = d->max_bytes;

  bool resume = same_source(src, d->url);
  int fd =
      open(part, O_WRONLY | O_CREAT | O_CLOEXEC | (resume ? 0 : O_TRUNC), 0640);
  if (fd < 0 || (!resume && write_source(src, d->url) != 0)) {
    seterr(d->error, sizeof d->error, "cannot create %s: %s", part,
           strerror(errno));
    if (fd >= 0)
      close(fd);
    return C8Y_EIO;
  }
  off_t have = lseek(fd, 0, SEEK_END);
  req r = {.h = h,
           .url = d->url,
           .cancelled = cancelled,
           .op = d->op,
           .rep.fd = fd,
           .rep.offset = have > 0 ? (uint64_t)have : 0,
           .rep.max = max,
           .err = d->error,
           .errlen = sizeof d->error};
  if (r.rep.offset)
    log_info("resuming download of %s at byte %llu", d->file,
             (unsigned long long)r.rep.offset);
  int rc = C8Y_EIO;
  for (int attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    bool retry;
    uint64_t before = r.rep.offset;
    rc = perform(&r, &retry);
    if (r.restarted || (rc == C8Y_EHTTP && r.rep.code == 416)) {
      r.restarted = false;
      r.rep.offset = 0;
      if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
        seterr(d->error, sizeof d->error, "cannot rewind %s: %s", part,
               strerror(errno));
        rc = C8Y_EIO;
        break;
      }
      if (rc == C8Y_EHTTP && before > 0)
        retry = true;
    }
    if (rc == C8Y_OK || !retry || attempt == MAX_ATTEMPTS)
      break;
    log_info("download of %s: %s at byte %llu (attempt %d of %d); resuming",
             d->file, d->error, (unsigned long long)r.rep.offset, attempt,
             MAX_ATTEMPTS);
    if (!backoff(h, attempt, cancelled, d->op)) {
      seterr(d->error, sizeof d->error,
             "download stopped: the operation was cancelled");
      rc = C8Y_ECANCELED;
      break;
    }
  }
  d->http_code = r.rep.code;
  if (rc == C8Y_OK && fsync(fd) != 0) {
    seterr(d->error, sizeof d->error, "fsync %s: %s", part, strerror(errno));
    rc = C8Y_EIO;
  }
  close(fd);
  if (rc == C8Y_OK && d->sha256) {
    char hex[65];
    if (http_sha256_file(part, hex) != 0) {
      seterr(d->error, sizeof d->error, "cannot read %s: %s", part,
             strerror(errno));
      rc = C8Y_EIO;
    } else if (strcasecmp(hex, d->sha256) != 0) {
      seterr(d->error, sizeof d->error,
             "sha256 of the file from %s is %s, expected %s", u.host, hex,
             d->sha256);
      unlink(part); /* a corrupt file must not be resumed */
      unlink(src);
      rc = C8Y_ECHECKSUM;
    }
  }
  if (rc == C8Y_OK) {
    if (rename(part, final) != 0) {
      seterr(d->error, sizeof d->error, "rename to %s: %s", final,
             strerror(errno));
      rc = C8Y_EIO;
    } else {
      unlink(src);
      fsutil_fsync_dir(dir);
      snprintf(d->path, sizeof d->path, "%s", final);
      d->bytes = r.rep.offset;
      d->error[0] = '\0';
    }
  } else if (atomic_load(&h->stopping) || rc == C8Y_ENET ||
             rc == C8Y_ECANCELED) {
    /* A network cut, the agent's stop or a cancelled operation: kept with
     * its .source, so the next call or start resumes it with Range. The
     * stop cancels running operations before http_stop, so a SIGTERM in
     * the middle of a download ends here as C8Y_ECANCELED. */
  } else {
    /* Anything else would fail the same way again; above all, a file that
     * did not fit must not keep the disk full. */
    unlink(part);
    unlink(src);
  }
  return rc;
}

/* ---- identity and upload ------------------------------------------------- */

static char *url_escape(const char *s) {
  char *out = curl_easy_escape(NULL, s, 0);
  char *copy = out ? strdup(out) : NULL;
  curl_free(out);
  return copy;
}

/* Waits (h->mu held) up to a second for a broadcast. */
static void wait_a_moment(http_ctx *h) {
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += 1;
  pthread_cond_timedwait(&h->cv, &h->mu, &dl);
}

/* 123 on the device's own topic, answered by 124,<id> on s/ds (Cumulocity
 * static templates 123/124): the MQTT session's own device binding, for
 * when REST cannot say (the device's user may not read identities, or its
 * identity is not a c8y_Serial one). */
static int lookup_mo_mqtt(http_ctx *h, const char *ext, bool child, char *mo,
                          size_t molen, http_cancel_fn cancelled,
                          const c8y_operation *op, char *err, size_t errlen) {
  long long deadline = clock_mono_ms() + IDENTITY_WAIT_MS;
  pthread_mutex_lock(&h->mu);
  while (h->identity_busy && !atomic_load(&h->stopping) &&
         clock_mono_ms() < deadline && !(cancelled && op && cancelled(op)))
    wait_a_moment(h);
  if (h->identity_busy || !h->request_identity) {
    pthread_mutex_unlock(&h->mu);
    seterr(err, errlen, "no managed-object id for %s: no answer to 123", ext);
    return atomic_load(&h->stopping) ? C8Y_ECANCELED : C8Y_ETIMEDOUT;
  }
  h->identity_busy = true;
  free(h->identity_answer);
  h->identity_answer = NULL;
  http_identity_request_fn ask = h->request_identity;
  void *ctx = h->identity_ctx;
  pthread_mutex_unlock(&h->mu);
  ask(ctx, child ? ext : NULL);
  pthread_mutex_lock(&h->mu);
  while (!h->identity_answer && !atomic_load(&h->stopping) &&
         clock_mono_ms() < deadline && !(cancelled && op && cancelled(op)))
    wait_a_moment(h);
  int rc = C8Y_OK;
  if (h->identity_answer)
    snprintf(mo, molen, "%s", h->identity_answer);
  else if (atomic_load(&h->stopping) || (cancelled && op && cancelled(op)))
    rc = C8Y_ECANCELED;
  else
    rc = C8Y_ETIMEDOUT;
  free(h->identity_answer);
  h->identity_answer = NULL;
  h->identity_busy = false;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  if (rc == C8Y_OK)
    log_info("managed-object id of %s: %s (123 over MQTT)", ext, mo);
  else
    seterr(err, errlen,
           "no managed-object id for %s: 123 on its MQTT topic got no 124 "
           "within %d s",
           ext, IDENTITY_WAIT_MS / 1000);
  return rc;
}

/* GET /identity/externalIds/c8y_Serial/<ext>. */
static int lookup_mo_rest(http_ctx *h, const char *ext, char *mo, size_t molen,
                          http_cancel_fn cancelled, const c8y_operation *op,
                          long *code, char *err, size_t errlen) {
  char *esc = url_escape(ext);
  char *url = NULL;
  if (!esc || asprintf(&url, "%s/identity/externalIds/c8y_Serial/%s",
                       h->base_url, esc) < 0) {
    free(esc);
    seterr(err, errlen, "out of memory");
    return C8Y_ENOMEM;
  }
  free(esc);
  req *r = calloc(1, sizeof *r);
  if (!r) {
    free(url);
    return C8Y_ENOMEM;
  }
  *r = (req){.h = h,
             .url = url,
             .cancelled = cancelled,
             .op = op,
             .rep.fd = -1,
             .err = err,
             .errlen = errlen};
  int rc = perform_retrying(r);
  *code = r->rep.code;
  if (rc == C8Y_OK && http_reply_identity(&r->rep, mo, molen) != 0) {
    seterr(err, errlen,
           "identity lookup of %s at %s: no managedObject.id in the answer",
           ext, h->base.host);
    rc = C8Y_EHTTP;
  } else if (r->rep.code == 404) {
    seterr(err, errlen,
           "HTTP 404 from %s: device %s has no c8y_Serial identity "
           "(is it registered?)",
           h->base.host, ext);
  }
  free(r);
  free(url);
  return rc;
}

static id_entry *find_id(http_ctx *h, const char *ext) {
  for (size_t i = 0; i < h->nids; i++)
    if (strcmp(h->ids[i].ext, ext) == 0)
      return &h->ids[i];
  return NULL;
}

/* The managed-object id of external id `ext` (c8y_Serial), cached. Callers
 * that ask at the same time share one lookup and its answer (a 522 and a
 * 526 in one publish ask once). REST first; for the root device, where
 * the REST side refuses or does not know its identity (403, 404), 123 over
 * MQTT. */
static int lookup_mo(http_ctx *h, const char *ext, bool child, char *mo,
                     size_t molen, http_cancel_fn cancelled,
                     const c8y_operation *op, long *code, char *err,
                     size_t errlen) {
  pthread_mutex_lock(&h->mu);
  id_entry *e = find_id(h, ext);
  bool waited = false;
  while (e && e->looking && !atomic_load(&h->stopping) &&
         !(cancelled && op && cancelled(op))) {
    waited = true;
    wait_a_moment(h);
    e = find_id(h, ext);
  }
  if (e && e->mo) {
    snprintf(mo, molen, "%s", e->mo);
    pthread_mutex_unlock(&h->mu);
    return C8Y_OK;
  }
  if (e && waited && !e->looking) {
    /* The lookup this call waited for failed: same answer. */
    int rc = e->rc;
    *code = e->code;
    seterr(err, errlen, "%s", e->err);
    pthread_mutex_unlock(&h->mu);
    return rc;
  }
  if (e && e->looking) {
    pthread_mutex_unlock(&h->mu);
    seterr(err, errlen, "identity lookup of %s: stopped", ext);
    return C8Y_ECANCELED;
  }
  if (!e) {
    id_entry *grown = realloc(h->ids, (h->nids + 1) * sizeof *grown);
    char *copy = strdup(ext);
    if (!grown || !copy) {
      if (grown)
        h->ids = grown;
      free(copy);
      pthread_mutex_unlock(&h->mu);
      seterr(err, errlen, "out of memory");
      return C8Y_ENOMEM;
    }
    h->ids = grown;
    e = &h->ids[h->nids++];
    memset(e, 0, sizeof *e);
    e->ext = copy;
  }
  e->looking = true;
  bool mqtt = h->request_identity != NULL;
  pthread_mutex_unlock(&h->mu);

  int rc = lookup_mo_rest(h, ext, mo, molen, cancelled, op, code, err, errlen);
  /* Not for children: anything on s/us/<child> creates that child. */
  if (rc != C8Y_OK && mqtt && !child && (*code == 403 || *code == 404)) {
    log_notice("identity of %s not readable over REST (HTTP %ld); asking "
               "over MQTT (123)",
               ext, *code);
    char why[256];
    int mrc = lookup_mo_mqtt(h, ext, child, mo, molen, cancelled, op, why,
                             sizeof why);
    if (mrc == C8Y_OK)
      rc = C8Y_OK;
  }

  pthread_mutex_lock(&h->mu);
  e = find_id(h, ext); /* the array may have moved */
  if (e) {
    e->looking = false;
    e->rc = rc;
    e->code = *code;
    snprintf(e->err, sizeof e->err, "%s", rc == C8Y_OK ? "" : err);
    if (rc == C8Y_OK && !(e->mo = strdup(mo)))
      e->rc = C8Y_ENOMEM;
  }
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  return rc;
}

typedef struct part_spec {
  const char *path;
  const char *name;
  const char *type;
} part_spec;

static curl_mime *make_file_part(CURL *c, void *ud) {
  part_spec *ps = ud;
  curl_mime *m = curl_mime_init(c);
  curl_mimepart *p = m ? curl_mime_addpart(m) : NULL;
  if (!p || curl_mime_name(p, "file") != CURLE_OK ||
      curl_mime_filedata(p, ps->path) != CURLE_OK ||
      curl_mime_filename(p, ps->name) != CURLE_OK ||
      curl_mime_type(p, ps->type) != CURLE_OK) {
    curl_mime_free(m);
    return NULL;
  }
  return m;
}

int http_upload(http_ctx *h, const char *device_id, c8y_upload *u,
                http_cancel_fn cancelled) {
  if (!u || u->size < sizeof *u)
    return C8Y_EINVAL;
  u->url[0] = u->error[0] = '\0';
  u->http_code = 0;
  if (!h) {
    seterr(u->error, sizeof u->error, "the agent has no HTTP client");
    return C8Y_ENOTSUP;
  }
  if (!u->path || !u->type || !*u->type) {
    seterr(u->error, sizeof u->error, "upload needs a path and a type");
    return C8Y_EINVAL;
  }
  if (access(u->path, R_OK) != 0) {
    seterr(u->error, sizeof u->error, "cannot read %s: %s", u->path,
           strerror(errno));
    return C8Y_EIO;
  }
  const char *dev = u->child_id ? u->child_id : device_id;
  char mo[128];
  int rc = lookup_mo(h, dev, u->child_id != NULL, mo, sizeof mo, cancelled,
                     u->op, &u->http_code, u->error, sizeof u->error);
  if (rc != C8Y_OK)
    return rc;

  char when[40];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  size_t wl = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(when + wl, sizeof when - wl, ".%03ldZ", ts.tv_nsec / 1000000);
  json_t *ev =
      json_pack("{s:{s:s},s:s,s:s,s:s}", "source", "id", mo, "type", u->type,
                "text", u->text ? u->text : u->type, "time", when);
  char *body = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
  json_decref(ev);
  if (!body) {
    seterr(u->error, sizeof u->error,
           "cannot encode the event (type or text is not UTF-8?)");
    return C8Y_EINVAL;
  }
  char url[600];
  snprintf(url, sizeof url, "%s/event/events", h->base_url);
  req *r = calloc(1, sizeof *r);
  if (!r) {
    free(body);
    return C8Y_ENOMEM;
  }
  *r = (req){.h = h,
             .method = "POST",
             .url = url,
             .content_type = "application/json",
             .body = body,
             .body_len = strlen(body),
             .cancelled = cancelled,
             .op = u->op,
             .rep.fd = -1,
             .err = u->error,
             .errlen = sizeof u->error};
  rc = perform_retrying(r);
  free(body);
  char eid[128] = "";
  if (rc == C8Y_OK && http_reply_event_id(&r->rep, eid, sizeof eid) != 0) {
    seterr(u->error, sizeof u->error,
           "event creation at %s: no usable id in the answer", h->base.host);
    rc = C8Y_EHTTP;
  }
  if (rc == C8Y_OK) {
    const char *base = strrchr(u->path, '/');
    part_spec ps = {
        .path = u->path,
        .name = u->file_name ? u->file_name : (base ? base + 1 : u->path),
        .type = u->content_type ? u->content_type : "application/octet-stream"};
    snprintf(url, sizeof url, "%s/event/events/%s/binaries", h->base_url, eid);
    *r = (req){.h = h,
               .url = url,
               .make_mime = make_file_part,
               .mime_ud = &ps,
               .cancelled = cancelled,
               .op = u->op,
               .rep.fd = -1,
               .err = u->error,
               .errlen = sizeof u->error};
    rc = perform_retrying(r);
    if (rc == C8Y_OK) {
      size_t n = strlen(url);
      if (n >= sizeof u->url)
        n = sizeof u->url - 1; /* cannot happen: base URLs are short */
      memcpy(u->url, url, n);
      u->url[n] = '\0';
      u->error[0] = '\0';
    }
  }
  u->http_code = r->rep.code;
  free(r);
  return rc;
}
