#include "sim_http.h"

#include "sim_est.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BODY_MAX (1024 * 1024) /* JSON bodies */

typedef struct tok {
  char *text;
  long long exp;
  bool expired;
} tok;

typedef struct ev {
  char *id, *type, *source;
  char *bin, *bin_name, *bin_type;
} ev;

typedef struct bin {
  long id;
  char *path;
} bin;

struct sim_http {
  struct MHD_Daemon *d;
  sim *mqtt;
  sim_est *est;        /* the certificate authority's EST endpoints */
  bool est_single_use; /* a token re-enrolls once */
  sim_http_est_auth est_auth;
  size_t est_by_cert, est_by_token; /* re-enrollments authenticated so */
  bool open;
  bool echo;
  char *workdir;
  bool own_workdir;
  char url[64];
  int port;
  char *basic; /* expected "Basic <b64>" */
  char *tenant, *user;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  tok *toks;
  size_t ntoks;
  int lifetime_s;
  int token_age_s; /* iat this long before the token is minted */
  bool reject;
  int cuts;
  int stalls;     /* next downloads to hold half way */
  size_t stalled; /* downloads held half way so far */
  bool stopping;  /* sim_http_stop: held downloads end now */
  int fails, fail_status;
  int delay_ms;
  bool chunked; /* downloads without Content-Length */
  size_t auth_seen, unauthorized, ranges;
  char **req_log; /* "METHOD path" */
  size_t nreq;
  ev *evs;
  size_t nevs;
  bin *bins;
  size_t nbins;
  long next_id;
};

static void seterr(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
}

static char *b64(const unsigned char *in, size_t n, bool url) {
  static const char std[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  static const char web[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const char *t = url ? web : std;
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  if (!out)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)in[i] << 16;
    if (i + 1 < n)
      v |= (unsigned)in[i + 1] << 8;
    if (i + 2 < n)
      v |= in[i + 2];
    out[o++] = t[(v >> 18) & 63];
    out[o++] = t[(v >> 12) & 63];
    if (i + 1 < n)
      out[o++] = t[(v >> 6) & 63];
    else if (!url)
      out[o++] = '=';
    if (i + 2 < n)
      out[o++] = t[v & 63];
    else if (!url)
      out[o++] = '=';
  }
  out[o] = '\0';
  return out;
}

/* ---- tokens (called from the MQTT side) ---------------------------------- */

static char *mint(void *ctx) {
  sim_http *h = ctx;
  long long now = (long long)time(NULL);
  unsigned char rnd[16];
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
    return NULL;
  pthread_mutex_lock(&h->mu);
  long long exp = now + h->lifetime_s, iat = now - h->token_age_s;
  pthread_mutex_unlock(&h->mu);
  char payload[512];
  snprintf(payload, sizeof payload,
           "{\"sub\":\"%s/%s\",\"ten\":\"%s\",\"iat\":%lld,\"exp\":%lld}",
           h->tenant, h->user, h->tenant, iat, exp);
  static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  char *a = b64((const unsigned char *)hdr, strlen(hdr), true);
  char *b = b64((const unsigned char *)payload, strlen(payload), true);
  char *c = b64(rnd, sizeof rnd, true);
  char *t = NULL;
  if (a && b && c && asprintf(&t, "%s.%s.%s", a, b, c) < 0)
    t = NULL;
  free(a);
  free(b);
  free(c);
  if (!t)
    return NULL;
  pthread_mutex_lock(&h->mu);
  tok *grown = realloc(h->toks, (h->ntoks + 1) * sizeof *grown);
  char *copy = strdup(t);
  if (grown && copy) {
    h->toks = grown;
    h->toks[h->ntoks++] = (tok){.text = copy, .exp = exp};
  } else {
    if (grown)
      h->toks = grown;
    free(copy);
    free(t);
    t = NULL;
  }
  pthread_mutex_unlock(&h->mu);
  return t;
}

/* ---- responses ----------------------------------------------------------- */

static enum MHD_Result send_text(struct MHD_Connection *c, int status,
                                 const char *ctype, const char *body) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, "Content-Type", ctype);
  if (status == 401)
    MHD_add_response_header(r, "WWW-Authenticate",
                            "Basic realm=\"Cumulocity\"");
  enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status,
                                  const char *kind, const char *msg) {
  json_t *j = json_pack("{s:s,s:s}", "error", kind, "message", msg);
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  enum MHD_Result rc = send_text(
      c, status, "application/vnd.com.nsn.cumulocity.error+json", s ? s : "{}");
  free(s);
  return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status,
                                 json_t *j) {
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  enum MHD_Result rc = send_text(c, status, "application/json", s ? s : "{}");
  free(s);
  return rc;
}

typedef struct file_reader {
  sim_http *h;
  int fd;
  uint64_t start, len, cut_at; /* cut_at relative to start; len = none */
  bool stall;                  /* hold at cut_at instead of cutting at once */
} file_reader;

/* Longest a download is held half way (a test that forgets it still ends). */
#define STALL_MAX_S 60

/* A held download: counted and announced, then the connection stays open
 * without data until the server stops (or STALL_MAX_S), and is cut. */
static void hold_download(sim_http *h) {
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += STALL_MAX_S;
  pthread_mutex_lock(&h->mu);
  h->stalled++;
  pthread_cond_broadcast(&h->cv);
  while (!h->stopping &&
         pthread_cond_timedwait(&h->cv, &h->mu, &dl) != ETIMEDOUT) {
  }
  pthread_mutex_unlock(&h->mu);
}

static ssize_t read_file(void *cls, uint64_t pos, char *buf, size_t max) {
  file_reader *fr = cls;
  if (pos >= fr->cut_at) {
    if (fr->stall) {
      fr->stall = false;
      hold_download(fr->h);
    }
    return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  if (pos >= fr->len)
    return MHD_CONTENT_READER_END_OF_STREAM;
  uint64_t left = (fr->cut_at < fr->len ? fr->cut_at : fr->len) - pos;
  if (max > left)
    max = (size_t)left;
  ssize_t n = pread(fr->fd, buf, max, (off_t)(fr->start + pos));
  return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void free_reader(void *cls) {
  file_reader *fr = cls;
  close(fr->fd);
  free(fr);
}

/* GET of a stored file, honouring "Range: bytes=N-[M]". */
static enum MHD_Result serve_file(sim_http *h, struct MHD_Connection *c,
                                  const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    if (fd >= 0)
      close(fd);
    return send_error(c, 404, "binaries/Not Found", "binary not found");
  }
  uint64_t size = (uint64_t)st.st_size, start = 0, end = size ? size - 1 : 0;
  bool partial = false;
  const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
  if (range) {
    unsigned long long a, b;
    char dash;
    int n = sscanf(range, "bytes=%llu%c%llu", &a, &dash, &b);
    if (n >= 2 && dash == '-') {
      if (a >= size) {
        close(fd);
        char cr[64];
        snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)size);
        struct MHD_Response *r = MHD_create_response_from_buffer(
            0, (void *)"", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Content-Range", cr);
        enum MHD_Result rc = MHD_queue_response(c, 416, r);
        MHD_destroy_response(r);
        return rc;
      }
      start = a;
      pthread_mutex_lock(&h->mu);
      h->ranges++;
      pthread_mutex_unlock(&h->mu);
      if (n == 3 && b < end && b >= a)
        end = b;
      partial = true;
    }
  }
  file_reader *fr = calloc(1, sizeof *fr);
  if (!fr) {
    close(fd);
    return MHD_NO;
  }
  fr->h = h;
  fr->fd = fd;
  fr->start = start;
  fr->len = size ? end - start + 1 : 0;
  fr->cut_at = UINT64_MAX;
  pthread_mutex_lock(&h->mu);
  if (h->cuts > 0 && fr->len > 1) {
    h->cuts--;
    fr->cut_at = fr->len / 2;
  } else if (h->stalls > 0 && fr->len > 1) {
    h->stalls--;
    fr->cut_at = fr->len / 2;
    fr->stall = true;
  }
  bool chunked = h->chunked;
  pthread_mutex_unlock(&h->mu);
  struct MHD_Response *r =
      MHD_create_response_from_callback(chunked ? MHD_SIZE_UNKNOWN : fr->len,
                                        64 * 1024, read_file, fr, free_reader);
  if (!r) {
    free_reader(fr);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", "application/octet-stream");
  MHD_add_response_header(r, "Accept-Ranges", "bytes");
  if (partial) {
    char cr[96];
    snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)start,
             (unsigned long long)end, (unsigned long long)size);
    MHD_add_response_header(r, "Content-Range", cr);
  }
  enum MHD_Result rc = MHD_queue_response(c, partial ? 206 : 200, r);
  MHD_destroy_response(r);
  return rc;
}

/* ---- requests ------------------------------------------------------------ */

enum route {
  R_NONE,
  R_IDENTITY,
  R_EVENT_CREATE,
  R_EVENT_BINARY_PUT,
  R_EVENT_BINARY_GET,
  R_BINARY_CREATE,
  R_BINARY_GET,
  R_EST_ENROLL,
  R_EST_REENROLL
};

typedef struct hreq {
  enum route route;
  char *arg; /* id from the path */
  char *body;
  size_t len;
  bool too_big;
  struct MHD_PostProcessor *pp;
  int fd;
  char *path;
  char *fname, *ftype;
  char *object; /* /inventory/binaries "object" part */
  bool failed;
  int reject; /* status to answer once the body is read (auth, faults) */
} hreq;

static void hreq_free(hreq *q) {
  if (!q)
    return;
  if (q->pp)
    MHD_destroy_post_processor(q->pp);
  if (q->fd >= 0)
    close(q->fd);
  free(q->arg);
  free(q->body);
  free(q->path);
  free(q->fname);
  free(q->ftype);
  free(q->object);
  free(q);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)c;
  (void)toe;
  hreq_free(*con_cls);
  *con_cls = NULL;
}

static bool append_body(hreq *q, const char *data, size_t n) {
  if (q->len + n > BODY_MAX) {
    q->too_big = true;
    return false;
  }
  char *grown = realloc(q->body, q->len + n + 1);
  if (!grown)
    return false;
  q->body = grown;
  memcpy(q->body + q->len, data, n);
  q->len += n;
  q->body[q->len] = '\0';
  return true;
}

static bool write_all(int fd, const char *data, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, data, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    data += w;
    n -= (size_t)w;
  }
  return true;
}

static int open_upload(sim_http *h, hreq *q) {
  pthread_mutex_lock(&h->mu);
  long id = h->next_id++;
  pthread_mutex_unlock(&h->mu);
  if (asprintf(&q->path, "%s/upload-%ld.bin", h->workdir, id) < 0) {
    q->path = NULL;
    return -1;
  }
  q->fd = open(q->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  return q->fd >= 0 ? 0 : -1;
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind,
                               const char *key, const char *filename,
                               const char *ctype, const char *enc,
                               const char *data, uint64_t off, size_t size) {
  (void)kind;
  (void)enc;
  hreq *q = cls;
  if (strcmp(key, "object") == 0) {
    char *grown = realloc(q->object, (size_t)off + size + 1);
    if (!grown || off + size > BODY_MAX)
      return MHD_NO;
    q->object = grown;
    memcpy(q->object + off, data, size);
    q->object[off + size] = '\0';
    return MHD_YES;
  }
  if (strcmp(key, "file") != 0)
    return MHD_YES;
  if (!q->fname && filename)
    q->fname = strdup(filename);
  if (!q->ftype && ctype)
    q->ftype = strdup(ctype);
  if (q->fd < 0) {
    q->failed = true;
    return MHD_NO;
  }
  if (size && !write_all(q->fd, data, size)) {
    q->failed = true;
    return MHD_NO;
  }
  return MHD_YES;
}

static bool bearer_ok_locked(sim_http *h, const char *a) {
  if (!a || strncasecmp(a, "Bearer ", 7) != 0 || h->reject)
    return false;
  long long now = (long long)time(NULL);
  for (size_t i = 0; i < h->ntoks; i++)
    if (strcmp(h->toks[i].text, a + 7) == 0 && !h->toks[i].expired &&
        h->toks[i].exp > now)
      return true;
  return false;
}

/* 0 = allowed; otherwise the status to answer. */
static int check_auth(sim_http *h, struct MHD_Connection *c) {
  return sim_http_check_authorization(
      h, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"));
}

int sim_http_check_authorization(sim_http *h, const char *a) {
  pthread_mutex_lock(&h->mu);
  if (a)
    h->auth_seen++;
  int rc = 401;
  if (h->open) {
    rc = 0;
  } else if (a && strcmp(a, h->basic) == 0) {
    rc = 0;
  } else if (bearer_ok_locked(h, a)) {
    rc = 0;
  }
  if (rc == 401)
    h->unauthorized++;
  pthread_mutex_unlock(&h->mu);
  return rc;
}

static enum route route_of(const char *method, const char *url, char **arg) {
  *arg = NULL;
  bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
  static const char ident[] = "/identity/externalIds/c8y_Serial/";
  if (get && strncmp(url, ident, sizeof ident - 1) == 0 &&
      url[sizeof ident - 1]) {
    *arg = strdup(url + sizeof ident - 1);
    return R_IDENTITY;
  }
  if (post && strcmp(url, "/event/events") == 0)
    return R_EVENT_CREATE;
  if (post && strcmp(url, "/inventory/binaries") == 0)
    return R_BINARY_CREATE;
  if (post && strcmp(url, "/.well-known/est/simpleenroll") == 0)
    return R_EST_ENROLL;
  if (post && strcmp(url, "/.well-known/est/simplereenroll") == 0)
    return R_EST_REENROLL;
  const char *p;
  if (strncmp(url, "/event/events/", 14) == 0 &&
      (p = strstr(url + 14, "/binaries")) && strcmp(p, "/binaries") == 0 &&
      p > url + 14 && (get || post)) {
    *arg = strndup(url + 14, (size_t)(p - (url + 14)));
    return post ? R_EVENT_BINARY_PUT : R_EVENT_BINARY_GET;
  }
  if (get && strncmp(url, "/inventory/binaries/", 20) == 0 && url[20] &&
      !strchr(url + 20, '/')) {
    *arg = strdup(url + 20);
    return R_BINARY_GET;
  }
  return R_NONE;
}

static ev *find_event(sim_http *h, const char *id) {
  for (size_t i = 0; i < h->nevs; i++)
    if (strcmp(h->evs[i].id, id) == 0)
      return &h->evs[i];
  return NULL;
}

/* The CN of a client certificate the TLS layer verified against the
 * client CA (sim_http_options.client_ca_pem). */
static bool client_cert_cn(struct MHD_Connection *c, char *cn, size_t cnlen) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  gnutls_session_t tls = ci ? (gnutls_session_t)ci->tls_session : NULL;
  unsigned status = 0, n = 0;
  if (!tls || gnutls_certificate_verify_peers2(tls, &status) != 0 || status)
    return false;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(tls, &n);
  gnutls_x509_crt_t crt;
  if (!certs || n == 0 || gnutls_x509_crt_init(&crt) != 0)
    return false;
  size_t len = cnlen;
  bool ok = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
            gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0,
                                          0, cn, &len) == 0;
  gnutls_x509_crt_deinit(crt);
  return ok;
}

/* The EST endpoints authenticate by themselves: a one-time password for
 * simpleenroll, the device's JWT for simplereenroll. */
static enum MHD_Result finish_est(sim_http *h, struct MHD_Connection *c,
                                  hreq *q) {
  const char *a =
      MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
  char *reply = NULL;
  const char *ctype = NULL;
  int status;
  if (q->route == R_EST_ENROLL) {
    status = sim_est_simpleenroll(h->est, a, q->body ? q->body : "", q->len,
                                  &reply, &ctype);
  } else {
    char cn[256];
    bool by_cert = h->est_auth != SIM_EST_AUTH_TOKEN &&
                   client_cert_cn(c, cn, sizeof cn) &&
                   sim_est_enrolled(h->est, cn);
    pthread_mutex_lock(&h->mu);
    bool by_token =
        h->est_auth != SIM_EST_AUTH_CLIENT_CERT && bearer_ok_locked(h, a);
    bool authenticated = by_cert || by_token;
    pthread_mutex_unlock(&h->mu);
    status = sim_est_simplereenroll(
        h->est, authenticated, q->body ? q->body : "", q->len, &reply, &ctype);
    pthread_mutex_lock(&h->mu);
    if (status == 200) {
      h->est_by_cert += by_cert;
      h->est_by_token += by_token && !by_cert;
    }
    for (size_t i = 0; status == 200 && h->est_single_use && by_token &&
                       !by_cert && i < h->ntoks;
         i++)
      if (strcmp(h->toks[i].text, a + 7) == 0)
        h->toks[i].expired = true;
    pthread_mutex_unlock(&h->mu);
  }
  if (status == 401) {
    pthread_mutex_lock(&h->mu);
    h->unauthorized++;
    pthread_mutex_unlock(&h->mu);
  }
  enum MHD_Result rc = send_text(c, status, ctype, reply ? reply : "");
  free(reply);
  return rc;
}

static enum MHD_Result finish(sim_http *h, struct MHD_Connection *c, hreq *q) {
  char self[256];
  switch (q->route) {
  case R_EST_ENROLL:
  case R_EST_REENROLL:
    return finish_est(h, c, q);
  case R_IDENTITY: {
    long mo = h->mqtt ? sim_device_mo_id(h->mqtt, q->arg) : -1;
    if (mo < 0) {
      char msg[300];
      snprintf(msg, sizeof msg,
               "External id not found; external id = ID [type=c8y_Serial, "
               "value=%s]",
               q->arg);
      return send_error(c, 404, "identity/Not Found", msg);
    }
    char id[32];
    snprintf(id, sizeof id, "%ld", mo);
    snprintf(self, sizeof self, "%s/inventory/managedObjects/%ld", h->url, mo);
    return send_json(c, 200,
                     json_pack("{s:{s:s,s:s},s:s,s:s}", "managedObject", "id",
                               id, "self", self, "externalId", q->arg, "type",
                               "c8y_Serial"));
  }
  case R_EVENT_CREATE: {
    json_t *j = q->body ? json_loads(q->body, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *text = json_string_value(json_object_get(j, "text"));
    const char *time_s = json_string_value(json_object_get(j, "time"));
    const char *src =
        json_string_value(json_object_get(json_object_get(j, "source"), "id"));
    if (!type || !text || !time_s || !src) {
      json_decref(j);
      return send_error(c, 422, "validationError",
                        "source.id, type, text and time are mandatory");
    }
    char *end = NULL;
    long src_id = strtol(src, &end, 10);
    if (h->mqtt && (*end || !sim_mo_exists(h->mqtt, src_id))) {
      json_decref(j);
      return send_error(c, 422, "validationError",
                        "source.id does not name a managed object");
    }
    pthread_mutex_lock(&h->mu);
    long n = h->next_id++;
    ev *grown = realloc(h->evs, (h->nevs + 1) * sizeof *grown);
    char id[32];
    snprintf(id, sizeof id, "%ld", n);
    if (grown) {
      h->evs = grown;
      h->evs[h->nevs++] =
          (ev){.id = strdup(id), .type = strdup(type), .source = strdup(src)};
    }
    pthread_mutex_unlock(&h->mu);
    snprintf(self, sizeof self, "%s/event/events/%s", h->url, id);
    json_t *out = json_pack("{s:s,s:s,s:s,s:s,s:{s:s}}", "id", id, "self", self,
                            "type", type, "text", text, "source", "id", src);
    json_decref(j);
    return send_json(c, 201, out);
  }
  case R_EVENT_BINARY_PUT: {
    if (q->failed || q->fd < 0)
      return send_error(c, 500, "general/Internal Error", "cannot store");
    fsync(q->fd);
    pthread_mutex_lock(&h->mu);
    ev *e = find_event(h, q->arg);
    int status = !e ? 404 : e->bin ? 409 : 201;
    if (status == 201) {
      if (h->echo) {
        printf("http event %s (%s) binary '%s' stored in %s\n", e->id, e->type,
               q->fname ? q->fname : "file", q->path);
        fflush(stdout);
      }
      e->bin = q->path;
      e->bin_name = q->fname ? q->fname : strdup("file");
      e->bin_type = q->ftype ? q->ftype : strdup("application/octet-stream");
      q->path = q->fname = q->ftype = NULL;
      pthread_cond_broadcast(&h->cv);
    }
    pthread_mutex_unlock(&h->mu);
    if (status == 404)
      return send_error(c, 404, "event/Not Found", "no such event");
    if (status == 409)
      return send_error(c, 409, "event/Conflict",
                        "the event already has a binary");
    snprintf(self, sizeof self, "%s/event/events/%s/binaries", h->url, q->arg);
    return send_json(c, 201,
                     json_pack("{s:s,s:s}", "self", self, "source", q->arg));
  }
  case R_EVENT_BINARY_GET: {
    pthread_mutex_lock(&h->mu);
    ev *e = find_event(h, q->arg);
    char *path = e && e->bin ? strdup(e->bin) : NULL;
    pthread_mutex_unlock(&h->mu);
    enum MHD_Result rc =
        path ? serve_file(h, c, path)
             : send_error(c, 404, "binaries/Not Found", "no binary");
    free(path);
    return rc;
  }
  case R_BINARY_CREATE: {
    if (q->failed || q->fd < 0 || !q->object)
      return send_error(c, 422, "validationError",
                        "multipart parts 'object' and 'file' are mandatory");
    close(q->fd);
    q->fd = -1;
    long id = sim_http_add_binary(h, q->path);
    snprintf(self, sizeof self, "%s/inventory/binaries/%ld", h->url, id);
    char ids[32];
    snprintf(ids, sizeof ids, "%ld", id);
    return send_json(c, 201, json_pack("{s:s,s:s}", "id", ids, "self", self));
  }
  case R_BINARY_GET: {
    long id = strtol(q->arg, NULL, 10);
    char *path = NULL;
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->nbins; i++)
      if (h->bins[i].id == id)
        path = strdup(h->bins[i].path);
    pthread_mutex_unlock(&h->mu);
    enum MHD_Result rc =
        path ? serve_file(h, c, path)
             : send_error(c, 404, "binaries/Not Found", "no such binary");
    free(path);
    return rc;
  }
  case R_NONE:
    break;
  }
  return send_error(c, 404, "general/Not Found", "unknown resource");
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c,
                               const char *url, const char *method,
                               const char *version, const char *upload_data,
                               size_t *upload_size, void **con_cls) {
  (void)version;
  sim_http *h = cls;
  hreq *q = *con_cls;
  if (!q) {
    char *line = NULL;
    if (asprintf(&line, "%s %s", method, url) < 0)
      return MHD_NO;
    pthread_mutex_lock(&h->mu);
    char **grown = realloc(h->req_log, (h->nreq + 1) * sizeof *grown);
    if (grown) {
      h->req_log = grown;
      h->req_log[h->nreq++] = line;
    } else {
      free(line);
    }
    int delay = h->delay_ms;
    int fail = 0;
    if (h->fails > 0) {
      h->fails--;
      fail = h->fail_status;
    }
    pthread_mutex_unlock(&h->mu);
    if (delay > 0) {
      struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
    if (h->echo) {
      printf("http %s %s\n", method, url);
      fflush(stdout);
    }
    bool est = strncmp(url, "/.well-known/est/", 17) == 0 && !h->open;
    int auth = est ? 0 : check_auth(h, c);
    q = calloc(1, sizeof *q);
    if (!q)
      return MHD_NO;
    q->fd = -1;
    /* Refusals are answered after the request body was read, so the
     * connection stays usable for the client's next request. */
    q->reject = auth ? auth : fail;
    if (q->reject) {
      *con_cls = q;
      return MHD_YES;
    }
    q->route = route_of(method, url, &q->arg);
    if (h->open && q->route != R_BINARY_GET) {
      hreq_free(q);
      return send_error(c, 404, "general/Not Found", "file host only");
    }
    if (q->route == R_EVENT_BINARY_PUT || q->route == R_BINARY_CREATE) {
      const char *ct =
          MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
      if (open_upload(h, q) != 0) {
        hreq_free(q);
        return send_error(c, 500, "general/Internal Error", "cannot store");
      }
      if (ct && strncasecmp(ct, "multipart/form-data", 19) == 0) {
        q->pp = MHD_create_post_processor(c, 64 * 1024, on_part, q);
        if (!q->pp) {
          hreq_free(q);
          return send_error(c, 400, "general/Bad Request",
                            "unreadable multipart body");
        }
      } else if (q->route == R_EVENT_BINARY_PUT) {
        q->ftype = strdup(ct ? ct : "application/octet-stream");
      }
    }
    *con_cls = q;
    return MHD_YES;
  }
  if (*upload_size > 0 && q->reject) {
    *upload_size = 0; /* discarded */
    return MHD_YES;
  }
  if (q->reject == 401)
    return send_error(c, 401, "security/Unauthorized",
                      "Invalid credentials! : Bad credentials");
  if (q->reject)
    return send_error(c, q->reject, "general/Internal Error",
                      "simulated failure");
  if (*upload_size > 0) {
    if (q->pp) {
      if (MHD_post_process(q->pp, upload_data, *upload_size) != MHD_YES)
        q->failed = true;
    } else if (q->fd >= 0) {
      if (!write_all(q->fd, upload_data, *upload_size))
        q->failed = true;
    } else {
      append_body(q, upload_data, *upload_size);
    }
    *upload_size = 0;
    return MHD_YES;
  }
  if (q->too_big)
    return send_error(c, 413, "general/Payload Too Large", "body too large");
  return finish(h, c, q);
}

/* ---- lifecycle ----------------------------------------------------------- */

static char *slurp(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f)
    return NULL;
  char *buf = malloc(1 << 16);
  size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
  fclose(f);
  if (buf)
    buf[n] = '\0';
  return buf;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

int sim_http_start(const sim_http_options *o, sim_http **out, char *err,
                   size_t errlen) {
  *out = NULL;
  sim_http *h = calloc(1, sizeof *h);
  if (!h) {
    seterr(err, errlen, "out of memory");
    return -1;
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &ca);
  pthread_condattr_destroy(&ca);
  h->mqtt = o->mqtt;
  h->open = o->open;
  h->echo = o->echo;
  h->est = sim_est_new();
  h->lifetime_s = 3600;
  h->next_id = 70001;
  h->tenant = strdup(o->tenant ? o->tenant : "t1");
  h->user = strdup(o->user ? o->user : "device");
  char *cred = NULL;
  if (asprintf(&cred, "%s/%s:%s", h->tenant, h->user,
               o->password ? o->password : "secret") < 0)
    cred = NULL;
  char *enc = cred ? b64((unsigned char *)cred, strlen(cred), false) : NULL;
  free(cred);
  if (!enc || asprintf(&h->basic, "Basic %s", enc) < 0)
    h->basic = NULL;
  free(enc);
  if (o->workdir) {
    h->workdir = strdup(o->workdir);
  } else {
    const char *tmp = getenv("TMPDIR");
    if (asprintf(&h->workdir, "%s/c8y-simhttp-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp") < 0 ||
        !mkdtemp(h->workdir)) {
      seterr(err, errlen, "cannot create a temporary dir: %s", strerror(errno));
      sim_http_stop(h);
      return -1;
    }
    h->own_workdir = true;
  }
  if (!h->tenant || !h->user || !h->basic || !h->workdir) {
    seterr(err, errlen, "out of memory");
    sim_http_stop(h);
    return -1;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)o->port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD |
                   MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
  char *cert = NULL, *key = NULL;
  bool tls = o->cert_pem && o->key_pem;
  if (tls) {
    cert = slurp(o->cert_pem);
    key = slurp(o->key_pem);
    if (!cert || !key) {
      seterr(err, errlen, "cannot read %s or %s", o->cert_pem, o->key_pem);
      free(cert);
      free(key);
      sim_http_stop(h);
      return -1;
    }
    flags |= MHD_USE_TLS;
  }
  /* With a client CA, TLS clients are asked (not required) for a
   * certificate: the EST re-enrollment can authenticate by it. */
  char *trust = tls && o->client_ca_pem ? slurp(o->client_ca_pem) : NULL;
  if (trust)
    h->d = MHD_start_daemon(
        flags, 0, NULL, NULL, handler, h, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
        MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_HTTPS_MEM_CERT, cert,
        MHD_OPTION_HTTPS_MEM_TRUST, trust, MHD_OPTION_END);
  else if (tls)
    h->d =
        MHD_start_daemon(flags, 0, NULL, NULL, handler, h, MHD_OPTION_SOCK_ADDR,
                         (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED,
                         on_done, NULL, MHD_OPTION_HTTPS_MEM_KEY, key,
                         MHD_OPTION_HTTPS_MEM_CERT, cert, MHD_OPTION_END);
  else
    h->d =
        MHD_start_daemon(flags, 0, NULL, NULL, handler, h, MHD_OPTION_SOCK_ADDR,
                         (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED,
                         on_done, NULL, MHD_OPTION_END);
  free(cert);
  free(key);
  free(trust);
  if (!h->d) {
    seterr(err, errlen, "cannot start the HTTP server on 127.0.0.1:%d",
           o->port);
    sim_http_stop(h);
    return -1;
  }
  const union MHD_DaemonInfo *info =
      MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
  h->port = info ? info->port : o->port;
  snprintf(h->url, sizeof h->url, "%s://127.0.0.1:%d", tls ? "https" : "http",
           h->port);
  if (h->mqtt)
    sim_set_token_source(h->mqtt, mint, h);
  *out = h;
  return 0;
}

void sim_http_stop(sim_http *h) {
  if (!h)
    return;
  if (h->mqtt && h->d)
    sim_set_token_source(h->mqtt, NULL, NULL);
  /* Held downloads end first: MHD_stop_daemon joins their threads. */
  pthread_mutex_lock(&h->mu);
  h->stopping = true;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  if (h->d)
    MHD_stop_daemon(h->d);
  for (size_t i = 0; i < h->ntoks; i++)
    free(h->toks[i].text);
  free(h->toks);
  for (size_t i = 0; i < h->nevs; i++) {
    ev *e = &h->evs[i];
    free(e->id);
    free(e->type);
    free(e->source);
    free(e->bin);
    free(e->bin_name);
    free(e->bin_type);
  }
  free(h->evs);
  for (size_t i = 0; i < h->nbins; i++)
    free(h->bins[i].path);
  free(h->bins);
  for (size_t i = 0; i < h->nreq; i++)
    free(h->req_log[i]);
  free(h->req_log);
  if (h->own_workdir && h->workdir)
    nftw(h->workdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free(h->workdir);
  sim_est_free(h->est);
  free(h->basic);
  free(h->tenant);
  free(h->user);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->cv);
  free(h);
}

int sim_http_port(const sim_http *h) { return h->port; }
sim_est *sim_http_est(sim_http *h) { return h->est; }
const char *sim_http_url(const sim_http *h) { return h->url; }

long sim_http_add_binary(sim_http *h, const char *path) {
  char *copy = strdup(path);
  if (!copy)
    return -1;
  pthread_mutex_lock(&h->mu);
  bin *grown = realloc(h->bins, (h->nbins + 1) * sizeof *grown);
  long id = -1;
  if (grown) {
    h->bins = grown;
    id = h->next_id++;
    h->bins[h->nbins++] = (bin){.id = id, .path = copy};
    copy = NULL;
  }
  pthread_mutex_unlock(&h->mu);
  free(copy);
  return id;
}

#define SETTER(name, type, field)                                              \
  void name(sim_http *h, type v) {                                             \
    pthread_mutex_lock(&h->mu);                                                \
    h->field = v;                                                              \
    pthread_mutex_unlock(&h->mu);                                              \
  }
SETTER(sim_http_cut_downloads, int, cuts)
SETTER(sim_http_stall_downloads, int, stalls)
SETTER(sim_http_reject_tokens, bool, reject)
SETTER(sim_http_set_token_lifetime, int, lifetime_s)
SETTER(sim_http_set_token_age, int, token_age_s)
SETTER(sim_http_set_delay, int, delay_ms)
SETTER(sim_http_set_chunked, bool, chunked)
SETTER(sim_http_est_single_use_tokens, bool, est_single_use)
SETTER(sim_http_set_est_auth, sim_http_est_auth, est_auth)

/* CLOCK_MONOTONIC (h->cv's clock) timeout_ms from now. */
static struct timespec deadline_in(int timeout_ms) {
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  return dl;
}

bool sim_http_wait_stalled(sim_http *h, size_t n, int timeout_ms) {
  struct timespec dl = deadline_in(timeout_ms);
  pthread_mutex_lock(&h->mu);
  while (h->stalled < n &&
         pthread_cond_timedwait(&h->cv, &h->mu, &dl) != ETIMEDOUT) {
  }
  bool ok = h->stalled >= n;
  pthread_mutex_unlock(&h->mu);
  return ok;
}

size_t sim_http_est_reenrolls(sim_http *h, bool by_cert) {
  pthread_mutex_lock(&h->mu);
  size_t n = by_cert ? h->est_by_cert : h->est_by_token;
  pthread_mutex_unlock(&h->mu);
  return n;
}

void sim_http_fail_requests(sim_http *h, int n, int status) {
  pthread_mutex_lock(&h->mu);
  h->fails = n;
  h->fail_status = status;
  pthread_mutex_unlock(&h->mu);
}

void sim_http_expire_tokens(sim_http *h) {
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->ntoks; i++)
    h->toks[i].expired = true;
  pthread_mutex_unlock(&h->mu);
}

size_t sim_http_requests(sim_http *h, const char *method, const char *prefix) {
  size_t n = 0, ml = method ? strlen(method) : 0;
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->nreq; i++) {
    const char *r = h->req_log[i];
    const char *path = strchr(r, ' ') + 1;
    if (method && (strncmp(r, method, ml) != 0 || r[ml] != ' '))
      continue;
    if (prefix && strncmp(path, prefix, strlen(prefix)) != 0)
      continue;
    n++;
  }
  pthread_mutex_unlock(&h->mu);
  return n;
}

#define COUNTER(name, field)                                                   \
  size_t name(sim_http *h) {                                                   \
    pthread_mutex_lock(&h->mu);                                                \
    size_t v = h->field;                                                       \
    pthread_mutex_unlock(&h->mu);                                              \
    return v;                                                                  \
  }
COUNTER(sim_http_auth_headers, auth_seen)
COUNTER(sim_http_unauthorized, unauthorized)
COUNTER(sim_http_range_requests, ranges)
COUNTER(sim_http_tokens_issued, ntoks)
COUNTER(sim_http_event_count, nevs)

#define EVENT_FIELD(name, field)                                               \
  const char *name(sim_http *h, size_t i) {                                    \
    pthread_mutex_lock(&h->mu);                                                \
    const char *v = i < h->nevs ? h->evs[i].field : NULL;                      \
    pthread_mutex_unlock(&h->mu);                                              \
    return v;                                                                  \
  }
EVENT_FIELD(sim_http_event_type, type)
EVENT_FIELD(sim_http_event_source, source)
EVENT_FIELD(sim_http_event_id, id)
EVENT_FIELD(sim_http_event_binary, bin)
EVENT_FIELD(sim_http_event_binary_name, bin_name)
EVENT_FIELD(sim_http_event_binary_type, bin_type)

bool sim_http_wait_binaries(sim_http *h, size_t n, int timeout_ms) {
  struct timespec dl = deadline_in(timeout_ms);
  pthread_mutex_lock(&h->mu);
  bool ok = false;
  for (;;) {
    size_t have = 0;
    for (size_t i = 0; i < h->nevs; i++)
      have += h->evs[i].bin != NULL;
    if (have >= n) {
      ok = true;
      break;
    }
    if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT)
      break;
  }
  pthread_mutex_unlock(&h->mu);
  return ok;
}
