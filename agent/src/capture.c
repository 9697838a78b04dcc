/* capture: see capture.h. The caller's thread is the main loop; plugin
 * threads complete operations and queue lines, and wake it through the
 * condition variable. */
#include "capture.h"

#include "clock.h"
#include "fsutil.h"
#include "http.h"
#include "outq.h"
#include "runtime.h"
#include "status.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The fields kept per upload, in capture_upload_field's order. */
#define UPLOAD_FIELDS 6

/* A producer's callback wrapped so the caller learns its status; the worker
 * calls it exactly as it calls the plugin's own. */
typedef struct prod_wrap {
  c8y_produce_fn fn;
  void *ud;
  int rc;
} prod_wrap;

struct capture {
  char *platform;
  capture_options opt;
  runtime *rt; /* the agent's, with this capture as its transport */
  bool loaded, abandoned;
  agent_config *cfg;
  long long skipped_ms;
  /* A producer that did not return in time keeps its wrapper. */
  prod_wrap *stuck_producer;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool woken; /* under mu */
  /* transfers, under mu */
  char **downloads; /* url, path, url, path ... */
  size_t ndownload_pairs;
  size_t ndownloads;
  int xfer_fail;
  char *xfer_reason;
  char **uploads; /* UPLOAD_FIELDS per upload */
  size_t nuploads;
};

static void wake(void *ctx) {
  capture *c = ctx;
  pthread_mutex_lock(&c->mu);
  c->woken = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

void capture_wake(capture *c) { wake(c); }

void capture_wait(capture *c, long long ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (ms < 0)
    ms = 0;
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&c->mu);
  while (!c->woken)
    if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0)
      break;
  c->woken = false;
  pthread_mutex_unlock(&c->mu);
}

long long capture_now(const capture *c) {
  return clock_mono_ms() + c->skipped_ms;
}

static void finished(void *ctx, const ops_outcome *r) {
  capture *c = ctx;
  if (c->opt.on_finished)
    c->opt.on_finished(c->opt.ctx, r);
}

/* A batch's lines are joined by '\n'; a quoted field may hold one too. */
static void emit_lines(capture *c, const char *topic, char *payload) {
  bool quoted = false;
  char *start = payload;
  for (char *p = payload;; p++) {
    if (*p == '"')
      quoted = !quoted;
    if (*p == '\0' || (*p == '\n' && !quoted)) {
      char end = *p;
      *p = '\0';
      if (*start && c->opt.on_line)
        c->opt.on_line(c->opt.ctx, topic, start);
      if (!end)
        break;
      start = p + 1;
    }
  }
}

/* The agent's drain: everything queued is "published" and acknowledged;
 * the acks of 501s start their handlers, as the link's PUBACKs do. */
static void drain(capture *c) {
  outq *q = runtime_queue(c->rt);
  for (int guard = 0; guard < 100000; guard++) {
    outq_batch b;
    if (outq_take(q, C8Y_MAX_LINE, &b) != 1)
      break;
    emit_lines(c, b.topic, b.payload);
    outq_ack(q, b.id);
    for (size_t k = 0; k < b.ntags; k++)
      runtime_acked(c->rt, upstream_tag_of(b.tags[k]));
    outq_batch_free(&b);
  }
}

/* The capture transport: always up, every batch published and
 * acknowledged at once; no registration (the host plays a platform that
 * needs none). */
static long long tr_step(void *ctx, long long now) {
  (void)now;
  drain(ctx);
  return -1;
}
static void tr_drain(void *ctx) { drain(ctx); }
static bool tr_is_up(void *ctx) {
  (void)ctx;
  return true;
}

void capture_pump(capture *c) {
  runtime_children_step(c->rt);
  drain(c);
  runtime_process_ops(c->rt, capture_now(c));
  drain(c);
}

void capture_advance(capture *c, long long ms) {
  c->skipped_ms += ms;
  capture_pump(c);
}

void capture_reset_clock(capture *c) { c->skipped_ms = 0; }

static char *dup_or(const char *s, const char *fallback) {
  return strdup(s ? s : fallback);
}

int capture_new(const capture_options *o, capture **out, char *err,
                size_t len) {
  *out = NULL;
  capture *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, len, "out of memory");
    return C8Y_ENOMEM;
  }
  c->opt = *o;
  c->platform = dup_or(o->platform_name, "capture");
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  int rc = C8Y_ENOMEM;
  if (!c->platform) {
    snprintf(err, len, "out of memory");
    goto fail;
  }
  const char *dir = o->state_dir ? o->state_dir : "";
  if (fsutil_mkdir_p(dir, 0700) != 0) {
    snprintf(err, len, "cannot create %s: %s", dir, strerror(errno));
    rc = C8Y_EIO;
    goto fail;
  }
  /* The agent's start: a memory-only queue, the journal in the state dir;
   * what the previous run on it left executing is settled, or kept for
   * capture_resume. */
  runtime_options co = {.device_id = o->device_id,
                        .state_dir = dir,
                        .op_timeout_ms = o->op_timeout_ms,
                        .wake = wake,
                        .wake_ctx = c,
                        .finished = finished,
                        .finished_ctx = c};
  if ((rc = runtime_new(&co, &c->rt, err, len)) != C8Y_OK) {
    if (rc != C8Y_ENOMEM)
      rc = C8Y_EIO;
    goto fail;
  }
  runtime_set_transport(c->rt, &(runtime_transport){.ctx = c,
                                                    .step = tr_step,
                                                    .drain = tr_drain,
                                                    .is_up = tr_is_up});
  capture_pump(c);
  *out = c;
  return C8Y_OK;
fail:
  capture_free(c);
  return rc;
}

static void free_strings(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

void capture_free(capture *c) {
  if (!c)
    return;
  if (c->rt)
    capture_unload(c, -1);
  if (c->abandoned) {
    /* Its worker may still run plugin code that reaches the engine, the
     * registry or this capture: they stay, as the agent keeps them. */
    return;
  }
  runtime_free(c->rt);
  free(c->stuck_producer);
  free_strings(c->downloads, c->ndownload_pairs * 2);
  free_strings(c->uploads, c->nuploads * UPLOAD_FIELDS);
  free(c->xfer_reason);
  free(c->platform);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

void *capture_ctx(const capture *c) { return c->opt.ctx; }

capture *capture_of(const c8y_plugin *p) {
  return p && p->host && p->host->up ? p->host->up->wake_ctx : NULL;
}

c8y_plugin *capture_plugin(capture *c) {
  return c->loaded ? runtime_plugins(c->rt)->plugins[0] : NULL;
}

ops *capture_ops(capture *c) { return runtime_ops(c->rt); }
registry *capture_registry(capture *c) { return runtime_registry(c->rt); }
plugin_host *capture_host(capture *c) { return runtime_host(c->rt); }

int capture_load(capture *c, const char *so_path, agent_config *cfg,
                 const c8y_api *api, struct http_ctx *http, char *why,
                 size_t len) {
  if (c->loaded) {
    snprintf(why, len, "a plugin is loaded already");
    return C8Y_ESTATE;
  }
  c->cfg = cfg;
  runtime_set_config(c->rt, cfg);
  runtime_set_http(c->rt, http);
  int rc = runtime_load_file(c->rt, so_path, api, why, len);
  c->loaded = rc == C8Y_OK;
  capture_pump(c);
  return rc;
}

void capture_resume(capture *c) {
  runtime_resume(c->rt);
  capture_pump(c);
}

/* A turn of the loop while operations are told to stop. */
static void stopping_turn(void *ctx, int wait_ms) {
  capture_pump(ctx);
  capture_wait(ctx, wait_ms);
}

bool capture_unload(capture *c, int stop_budget_ms) {
  if (!c->loaded)
    return !c->abandoned;
  plugin_set *set = runtime_plugins(c->rt);
  c8y_plugin *p = set->plugins[0];
  runtime_stop_operations(c->rt, c->cfg->stop_grace_ms, stopping_turn, c);
  capture_pump(c);
  struct http_ctx *http = runtime_host(c->rt)->http;
  if (http) /* the agent's order: transfers end before the workers */
    http_stop(http);
  bool stopped = true;
  if (stop_budget_ms < 0)
    plugin_host_stop_worker(p);
  else
    stopped = plugin_host_stop_worker_within(p, stop_budget_ms);
  plugin_host_fini_plugin(p); /* not for an abandoned plugin */
  /* Completions made by fini() become lines. */
  capture_pump(c);
  c->abandoned = !stopped;
  if (c->abandoned)
    runtime_mark_abandoned(c->rt);
  loader_release_all(set, runtime_registry(c->rt));
  c->loaded = false;
  runtime_set_http(c->rt, NULL);
  return stopped;
}

static int wrapped_produce(c8y_plugin *self, c8y_batch *out, void *ud) {
  prod_wrap *w = ud;
  w->rc = w->fn(self, out, w->ud);
  return w->rc;
}

bool capture_run_producer(capture *c, reg_producer *prod, int timeout_ms,
                          int *rc) {
  *rc = C8Y_EINVAL;
  if (!c->loaded || c->stuck_producer)
    return false;
  prod_wrap *w = malloc(sizeof *w);
  if (!w)
    return false;
  *w = (prod_wrap){.fn = prod->fn, .ud = prod->user_data, .rc = C8Y_EINVAL};
  prod->fn = wrapped_produce;
  prod->user_data = w;
  if (plugin_host_queue_produce(capture_plugin(c), prod) != C8Y_OK) {
    prod->fn = w->fn;
    prod->user_data = w->ud;
    free(w);
    return false;
  }
  long long end = clock_mono_ms() + timeout_ms;
  while (atomic_load(&prod->busy) && (timeout_ms < 0 || clock_mono_ms() < end))
    capture_wait(c, 10);
  if (atomic_load(&prod->busy)) {
    c->stuck_producer = w; /* the callback still runs with it */
    return false;
  }
  prod->fn = w->fn;
  prod->user_data = w->ud;
  *rc = w->rc;
  free(w);
  capture_pump(c);
  return true;
}

/* ---- transfers (see capture.h) ---- */

static int xfer_failed(capture *c, char *err, size_t len, long *code) {
  pthread_mutex_lock(&c->mu);
  int rc = c->xfer_fail;
  if (rc)
    snprintf(err, len, "%s", c->xfer_reason ? c->xfer_reason : "");
  pthread_mutex_unlock(&c->mu);
  if (rc == C8Y_EHTTP || rc == C8Y_EAUTH)
    *code = rc == C8Y_EAUTH ? 401 : 500;
  return rc;
}

static int copy_file(const char *from, const char *to, uint64_t max,
                     uint64_t *bytes) {
  FILE *in = fopen(from, "rb");
  FILE *out = in ? fopen(to, "wb") : NULL;
  int rc = in && out ? C8Y_OK : C8Y_EIO;
  char buf[65536];
  size_t n;
  *bytes = 0;
  while (rc == C8Y_OK && (n = fread(buf, 1, sizeof buf, in)) > 0) {
    *bytes += n;
    if (max && *bytes > max)
      rc = C8Y_ETOOBIG;
    else if (fwrite(buf, 1, n, out) != n)
      rc = C8Y_EIO;
  }
  if (in)
    fclose(in);
  if (out && fclose(out) != 0 && rc == C8Y_OK)
    rc = C8Y_EIO;
  return rc;
}

int capture_download(c8y_plugin *self, c8y_download *d) {
  capture *c = capture_of(self);
  if (!c || !d || d->size < sizeof *d || !d->url || !d->file || !*d->file ||
      strchr(d->file, '/') || d->file[0] == '.')
    return C8Y_EINVAL;
  d->path[0] = d->error[0] = '\0';
  d->bytes = 0;
  d->http_code = 0;
  pthread_mutex_lock(&c->mu);
  c->ndownloads++;
  char *src = NULL;
  for (size_t i = 0; i < c->ndownload_pairs; i++)
    if (strcmp(c->downloads[2 * i], d->url) == 0) {
      free(src);
      src = strdup(c->downloads[2 * i + 1]);
    }
  pthread_mutex_unlock(&c->mu);
  int rc = xfer_failed(c, d->error, sizeof d->error, &d->http_code);
  if (rc == C8Y_OK && !src) {
    snprintf(d->error, sizeof d->error, "HTTP 404 from %s: not found",
             c->platform);
    d->http_code = 404;
    rc = C8Y_EHTTP;
  }
  /* The real slot's destination: the plugin's state dir. */
  const char *dir = rc == C8Y_OK ? plugin_host_api()->state_dir(self) : NULL;
  if (rc == C8Y_OK && !dir)
    rc = C8Y_EIO;
  char path[sizeof d->path];
  if (rc == C8Y_OK) {
    snprintf(path, sizeof path, "%s/%s", dir, d->file);
    rc = copy_file(src, path, d->max_bytes, &d->bytes);
    if (rc != C8Y_OK)
      snprintf(d->error, sizeof d->error, "%s", status_str(rc));
  }
  char hex[65];
  if (rc == C8Y_OK && d->sha256 &&
      (http_sha256_file(path, hex) != 0 || strcasecmp(hex, d->sha256) != 0)) {
    snprintf(d->error, sizeof d->error,
             "sha256 of the file from %s is %s, expected %s", c->platform, hex,
             d->sha256);
    rc = C8Y_ECHECKSUM;
  }
  if (rc == C8Y_OK) {
    memcpy(d->path, path, sizeof path);
    d->http_code = 200;
  } else if (dir) {
    remove(path);
  }
  free(src);
  return rc;
}

static char *read_file(const char *path, char *err, size_t len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, len, "cannot read %s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0, got;
  char *buf = malloc(cap);
  while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (cap - n - 1 == 0) {
      char *grown = realloc(buf, cap * 2);
      if (!grown) {
        free(buf);
        buf = NULL;
      }
      buf = grown;
      cap *= 2;
    }
  }
  fclose(f);
  if (!buf)
    snprintf(err, len, "out of memory");
  else
    buf[n] = '\0';
  return buf;
}

int capture_upload(c8y_plugin *self, c8y_upload *u) {
  capture *c = capture_of(self);
  if (!c || !u || u->size < sizeof *u || !u->path || !u->type || !*u->type)
    return C8Y_EINVAL;
  u->url[0] = u->error[0] = '\0';
  u->http_code = 0;
  int rc = xfer_failed(c, u->error, sizeof u->error, &u->http_code);
  if (rc != C8Y_OK)
    return rc;
  char *content = read_file(u->path, u->error, sizeof u->error);
  if (!content)
    return C8Y_EIO;
  const char *base = strrchr(u->path, '/');
  char *f[UPLOAD_FIELDS] = {
      strdup(u->type),
      strdup(u->child_id ? u->child_id : ""),
      strdup(u->file_name ? u->file_name
             : base       ? base + 1
                          : u->path),
      strdup(u->content_type ? u->content_type : "application/octet-stream"),
      strdup(u->text ? u->text : u->type),
      content};
  pthread_mutex_lock(&c->mu);
  char **grown =
      realloc(c->uploads, (c->nuploads + 1) * UPLOAD_FIELDS * sizeof *grown);
  size_t count = 0;
  if (grown) {
    c->uploads = grown;
    memcpy(grown + c->nuploads * UPLOAD_FIELDS, f, sizeof f);
    count = ++c->nuploads;
  }
  pthread_mutex_unlock(&c->mu);
  if (!grown) {
    for (size_t i = 0; i < UPLOAD_FIELDS; i++)
      free(f[i]);
    return C8Y_ENOMEM;
  }
  snprintf(u->url, sizeof u->url, "%s://binaries/%zu", c->platform, count);
  u->http_code = 201;
  return C8Y_OK;
}

void capture_add_download(capture *c, const char *url, const char *path) {
  pthread_mutex_lock(&c->mu);
  char **grown =
      realloc(c->downloads, (c->ndownload_pairs + 1) * 2 * sizeof *grown);
  if (grown) {
    c->downloads = grown;
    grown[2 * c->ndownload_pairs] = strdup(url);
    grown[2 * c->ndownload_pairs + 1] = strdup(path);
    c->ndownload_pairs++;
  }
  pthread_mutex_unlock(&c->mu);
}

void capture_fail_transfers(capture *c, int status, const char *reason) {
  pthread_mutex_lock(&c->mu);
  c->xfer_fail = status;
  free(c->xfer_reason);
  c->xfer_reason = reason ? strdup(reason) : NULL;
  pthread_mutex_unlock(&c->mu);
}

size_t capture_download_count(capture *c) {
  pthread_mutex_lock(&c->mu);
  size_t n = c->ndownloads;
  pthread_mutex_unlock(&c->mu);
  return n;
}

size_t capture_upload_count(capture *c) {
  pthread_mutex_lock(&c->mu);
  size_t n = c->nuploads;
  pthread_mutex_unlock(&c->mu);
  return n;
}

/* Uploads are only appended: a field stays valid until capture_free. */
const char *capture_upload_field(capture *c, size_t i, const char *field) {
  static const char *const names[UPLOAD_FIELDS] = {
      "type", "child", "file_name", "content_type", "text", "content"};
  const char *v = NULL;
  pthread_mutex_lock(&c->mu);
  for (size_t k = 0; k < UPLOAD_FIELDS; k++)
    if (strcmp(names[k], field) == 0 && i < c->nuploads)
      v = c->uploads[i * UPLOAD_FIELDS + k];
  pthread_mutex_unlock(&c->mu);
  return v;
}
