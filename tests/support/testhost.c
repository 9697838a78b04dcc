/* testhost: see testhost.h. The test thread is the agent's main loop: it
 * alone calls ops_* and outq_take/ack; plugin workers complete operations
 * and wake it through the condition variable. */
#include "testhost.h"

#include "config.h"
#include "crash.h"
#include "http.h"
#include "journal.h"
#include "log.h"
#include "ops.h"
#include "outq.h"
#include "plugin_host.h"
#include "registry.h"
#include "services.h"
#include "smartrest.h"
#include "status.h"

#include <dlfcn.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A producer's callback wrapped so the test learns its status; the worker
 * calls it exactly as it calls the plugin's own. */
typedef struct prod_wrap {
  c8y_produce_fn fn;
  void *ud;
  int rc;
} prod_wrap;

/* Each registered handler wrapped so the test sees when it returned. */
typedef struct handler_wrap {
  testhost *h;
  c8y_operation_fn fn;
  void *ud;
} handler_wrap;

struct testhost {
  char *device_id, *state_dir, *tmp_dir, *cfg_path;
  GPtrArray *cfg_keys; /* key, value, key, value ... */
  agent_config cfg;
  bool cfg_loaded;
  registry *reg;
  outq *q;
  journal *j;
  ops *o;
  services *svc; /* set_health works as in the agent */
  plugin_host host;
  c8y_plugin *p;
  void *dl;
  /* the plugin's own init, see init_with_test_api */
  int (*plugin_init)(c8y_plugin *self, const c8y_api *api, void **user_data);
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool woken;      /* under mu */
  GPtrArray *logs; /* under mu */
  GPtrArray *lines;
  bool op_done;
  bool op_ok;
  char *op_detail;
  char *op_fragment;
  GPtrArray *op_params;
  char *last_503; /* the last 503 captured, after "503," */
  /* transfers and the api table init gets */
  c8y_api api;
  bool transfers, abi_1_0;
  GPtrArray *downloads; /* url, path, ... (under mu) */
  GPtrArray *uploads;   /* UPLOAD_FIELDS per upload (under mu) */
  size_t ndownloads;    /* under mu */
  int xfer_fail;        /* under mu */
  long long skipped_ms; /* testhost_advance */
  uint64_t child_seq;   /* registry_child_seq the engine has seen */
  handler_wrap *wraps;
  size_t nwraps;
  atomic_bool handler_returned, reboot_requested, resume_requested;
  /* Bumped by each testhost_run_operation: a handler of an earlier
   * operation that returns late (its op_succeed already let the test go on)
   * must not mark the next one's handler as returned. */
  atomic_uint op_gen;
  char *xfer_reason; /* under mu */
  atomic_int crash;  /* testhost_crash */
  /* testhost_set_platform */
  agent_config platform_cfg;
  http_ctx *http;
};

#define UPLOAD_FIELDS 6

static long long mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The engine's clock: monotonic time plus what the test skipped. */
static long long engine_now(const testhost *h) {
  return mono_now() + h->skipped_ms;
}

static void wake(void *ctx) {
  testhost *h = ctx;
  pthread_mutex_lock(&h->mu);
  h->woken = true;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
}

/* Sleeps until woken or until ms passed. */
static void wait_wake(testhost *h, long long ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&h->mu);
  while (!h->woken)
    if (pthread_cond_timedwait(&h->cv, &h->mu, &ts) != 0)
      break;
  h->woken = false;
  pthread_mutex_unlock(&h->mu);
}

static void log_tap(void *ctx, int level, const char *line) {
  testhost *h = ctx;
  static const char *const names[] = {"error",   "error",  "error", "error",
                                      "warning", "notice", "info",  "debug"};
  char *s = g_strdup_printf("%s %s", names[level & 7], line);
  /* log_vmsg holds its own lock: mu nests inside it, never the reverse. */
  pthread_mutex_lock(&h->mu);
  g_ptr_array_add(h->logs, s);
  pthread_mutex_unlock(&h->mu);
}

static void dispatch(void *ctx, c8y_operation *op) {
  (void)ctx;
  if (plugin_host_queue_operation(ops_plugin(op), op) != 0)
    ops_dispatch_failed(op, "the plugin is shutting down");
}

static void finished(void *ctx, const ops_outcome *r) {
  testhost *h = ctx;
  h->op_done = true;
  h->op_ok = r->ok;
  g_free(h->op_detail);
  h->op_detail = g_strdup(r->ok ? "" : r->reason ? r->reason : "");
  g_free(h->op_fragment);
  h->op_fragment = g_strdup(r->fragment ? r->fragment : "");
}

static void set_params(testhost *h, const char *csv) {
  g_ptr_array_set_size(h->op_params, 0);
  smartrest_records r;
  if (!*csv || smartrest_decode(csv, strlen(csv), &r) != 0)
    return;
  if (r.count == 1 && !r.items[0].error)
    for (size_t i = 0; i < r.items[0].nfields; i++)
      g_ptr_array_add(h->op_params, g_strdup(r.items[0].fields[i]));
  smartrest_records_free(&r);
}

/* A batch's lines are joined by '\n'; a quoted field may hold one too. */
static gchar **split_lines(const char *payload) {
  GPtrArray *out = g_ptr_array_new();
  bool quoted = false;
  const char *start = payload;
  for (const char *c = payload;; c++) {
    if (*c == '"')
      quoted = !quoted;
    if (*c == '\0' || (*c == '\n' && !quoted)) {
      g_ptr_array_add(out, g_strndup(start, (gsize)(c - start)));
      if (!*c)
        break;
      start = c + 1;
    }
  }
  g_ptr_array_add(out, NULL);
  return (gchar **)g_ptr_array_free(out, FALSE);
}

/* The agent's drain: everything queued is "published" and acknowledged. */
static void drain(testhost *h) {
  for (int guard = 0; guard < 100000; guard++) {
    outq_batch b;
    if (outq_take(h->q, 16000, &b) != 1)
      break;
    gchar **lines = split_lines(b.payload);
    for (gchar **l = lines; *l; l++)
      if (**l) {
        g_ptr_array_add(h->lines, g_strdup_printf("%s|%s", b.topic, *l));
        if (g_str_has_prefix(*l, "503,")) {
          g_free(h->last_503);
          h->last_503 = g_strdup(*l + 4);
        }
      }
    g_strfreev(lines);
    outq_ack(h->q, b.id);
    for (size_t k = 0; k < b.ntags; k++)
      ops_on_acked(h->o, b.tags[k], true);
    outq_batch_free(&b);
  }
}

/* The engine may queue a 503 from the completing thread before its
 * main-loop turn reports the outcome: the detail is read from the captured
 * 503 once both are there. */
static void settle(testhost *h) {
  if (!h->op_done || !h->op_ok || !h->op_fragment || !h->last_503)
    return;
  const char *rest = h->last_503;
  size_t fl = strlen(h->op_fragment);
  if (strncmp(rest, h->op_fragment, fl) != 0 || (rest[fl] && rest[fl] != ','))
    return;
  set_params(h, rest[fl] == ',' ? rest + fl + 1 : "");
  g_ptr_array_add(h->op_params, NULL);
  g_free(h->op_detail);
  h->op_detail = g_strjoinv(",", (gchar **)h->op_params->pdata);
  g_ptr_array_set_size(h->op_params, h->op_params->len - 1);
  g_free(h->op_fragment);
  h->op_fragment = NULL;
}

/* One main-loop turn. */
static void pump(testhost *h) {
  uint64_t seq = registry_child_seq(h->reg);
  if (seq != h->child_seq) {
    h->child_seq = seq;
    ops_children_changed(h->o);
  }
  drain(h);
  ops_process(h->o, engine_now(h));
  drain(h);
  settle(h);
}

testhost *testhost_new(const char *device_id, const char *state_dir) {
  testhost *h = g_new0(testhost, 1);
  h->device_id = g_strdup(device_id);
  h->tmp_dir = g_dir_make_tmp("c8y-testhost-XXXXXX", NULL);
  g_assert_nonnull(h->tmp_dir);
  h->state_dir = g_strdup(state_dir ? state_dir : h->tmp_dir);
  g_assert_cmpint(g_mkdir_with_parents(h->state_dir, 0700), ==, 0);
  h->cfg_keys = g_ptr_array_new_with_free_func(g_free);
  h->logs = g_ptr_array_new_with_free_func(g_free);
  h->lines = g_ptr_array_new_with_free_func(g_free);
  h->op_params = g_ptr_array_new_with_free_func(g_free);
  h->downloads = g_ptr_array_new_with_free_func(g_free);
  h->uploads = g_ptr_array_new_with_free_func(g_free);
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->cv, NULL);
  h->reg = registry_new();
  g_assert_nonnull(h->reg);
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[512];
  if (outq_open(&qo, &h->q, err, sizeof err) != 0)
    g_error("outq: %s", err);
  log_set_tap(log_tap, h);
  /* The agent's start: the journal in the state dir, then what the
   * previous run on this state dir left executing is settled or kept for
   * ops_resume (testhost_load). A restart is testhost_free + testhost_new
   * on the same state dir. */
  if (journal_open(h->state_dir, &h->j, err, sizeof err) != 0)
    g_error("journal: %s", err);
  ops_host oh = {
      .ctx = h, .dispatch = dispatch, .wake = wake, .finished = finished};
  g_assert_cmpint(ops_new(h->device_id, h->reg, h->q, h->j, &oh, 60000, &h->o),
                  ==, 0);
  ops_recover(h->o);
  g_assert_cmpint(
      services_new(h->device_id, h->state_dir, h->q, h->reg, wake, h, &h->svc),
      ==, 0);
  return h;
}

static void rm_rf(const char *path) {
  GDir *d = g_dir_open(path, 0, NULL);
  if (d) {
    const char *n;
    while ((n = g_dir_read_name(d))) {
      char *c = g_build_filename(path, n, NULL);
      rm_rf(c);
      g_free(c);
    }
    g_dir_close(d);
  }
  g_remove(path);
}

void testhost_unload(testhost *h) {
  if (!h->p)
    return;
  /* The agent's stop: running handlers are told (op_cancelled), given the
   * grace time, what is left fails; then the worker stops and fini runs. */
  ops_stop(h->o);
  if (ops_cancel_running(h->o) > 0) {
    long long until = mono_now() + h->cfg.stop_grace_ms;
    while (ops_running(h->o) > 0 && mono_now() < until) {
      pump(h);
      wait_wake(h, 20);
    }
  }
  ops_fail_all(h->o, "agent stopped");
  pump(h);
  if (h->http) /* the agent's order: transfers end before the workers */
    http_stop(h->http);
  plugin_host_stop_worker(h->p);
  plugin_host_fini_plugin(h->p);
  http_free(h->http);
  h->http = NULL;
  /* Completions made by fini() become 503/502 lines. */
  pump(h);
  registry_remove_plugin(h->reg, h->p);
  plugin_host_free_plugin(h->p);
  h->p = NULL;
  dlclose(h->dl);
  h->dl = NULL;
  g_free(h->wraps);
  h->wraps = NULL;
}

void testhost_free(testhost *h) {
  if (!h)
    return;
  testhost_unload(h);
  log_set_tap(NULL, NULL);
  ops_free(h->o);
  services_free(h->svc);
  journal_close(h->j);
  outq_close(h->q);
  registry_free(h->reg);
  if (h->cfg_loaded)
    config_free(&h->cfg);
  rm_rf(h->tmp_dir);
  g_free(h->tmp_dir);
  g_free(h->state_dir);
  g_free(h->device_id);
  g_free(h->cfg_path);
  g_free(h->op_detail);
  g_free(h->op_fragment);
  g_free(h->last_503);
  g_ptr_array_free(h->cfg_keys, TRUE);
  g_ptr_array_free(h->logs, TRUE);
  g_ptr_array_free(h->lines, TRUE);
  g_ptr_array_free(h->op_params, TRUE);
  g_ptr_array_free(h->downloads, TRUE);
  g_ptr_array_free(h->uploads, TRUE);
  g_free(h->xfer_reason);
  g_free(h->platform_cfg.http_url);
  g_free(h->platform_cfg.ca_path);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->cv);
  g_free(h);
}

void testhost_set_platform(testhost *h, const char *http_url,
                           const char *ca_path) {
  g_free(h->platform_cfg.http_url);
  g_free(h->platform_cfg.ca_path);
  h->platform_cfg = (agent_config){.http_url = g_strdup(http_url),
                                   .host = "127.0.0.1",
                                   .tenant = "t1",
                                   .user = "device",
                                   .password = "secret",
                                   .ca_path = g_strdup(ca_path),
                                   .verify_hostname = true,
                                   .transfer_max_bytes = 1 << 20};
}

static void no_token_source(void *ctx) { (void)ctx; }

void testhost_set_config(testhost *h, const char *key, const char *value) {
  g_ptr_array_add(h->cfg_keys, g_strdup(key));
  g_ptr_array_add(h->cfg_keys, g_strdup(value));
}

/* The plugin's section goes through the agent's own config parser, so the
 * plugin sees what an agent.ini with these lines would give it. */
static int load_config(testhost *h, const char *plugin) {
  GString *ini = g_string_new("");
  g_string_append_printf(ini, "[device]\nid = %s\n[agent]\nstate_dir = %s\n",
                         h->device_id, h->state_dir);
  g_string_append_printf(ini, "[plugin.%s]\n", plugin);
  for (guint i = 0; i + 1 < h->cfg_keys->len; i += 2)
    g_string_append_printf(ini, "%s = %s\n",
                           (char *)g_ptr_array_index(h->cfg_keys, i),
                           (char *)g_ptr_array_index(h->cfg_keys, i + 1));
  if (h->cfg_loaded) /* loaded again after testhost_unload */
    config_free(&h->cfg);
  h->cfg_loaded = false;
  g_free(h->cfg_path);
  h->cfg_path = g_build_filename(h->tmp_dir, "agent.ini", NULL);
  g_assert_true(g_file_set_contents(h->cfg_path, ini->str, -1, NULL));
  g_string_free(ini, TRUE);
  char err[1024];
  if (config_load(h->cfg_path, &h->cfg, err, sizeof err) != 0) {
    log_error("%s", err); /* what the agent would say at start */
    return C8Y_EINVAL;
  }
  h->cfg_loaded = true;
  return C8Y_OK;
}

/* ---- transfers (see testhost.h) ---- */

static testhost *host_of(c8y_plugin *self) { return self->host->wake_ctx; }

static int xfer_failed(testhost *h, char *err, size_t len, long *code) {
  pthread_mutex_lock(&h->mu);
  int rc = h->xfer_fail;
  if (rc)
    snprintf(err, len, "%s", h->xfer_reason ? h->xfer_reason : "");
  pthread_mutex_unlock(&h->mu);
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

static int xfer_download(c8y_plugin *self, c8y_download *d) {
  testhost *h = host_of(self);
  if (!d || d->size < sizeof *d || !d->url || !d->file || !*d->file ||
      strchr(d->file, '/') || d->file[0] == '.')
    return C8Y_EINVAL;
  d->path[0] = d->error[0] = '\0';
  d->bytes = 0;
  d->http_code = 0;
  pthread_mutex_lock(&h->mu);
  h->ndownloads++;
  char *src = NULL;
  for (guint i = 0; i + 1 < h->downloads->len; i += 2)
    if (strcmp(g_ptr_array_index(h->downloads, i), d->url) == 0)
      src = g_strdup(g_ptr_array_index(h->downloads, i + 1));
  pthread_mutex_unlock(&h->mu);
  int rc = xfer_failed(h, d->error, sizeof d->error, &d->http_code);
  if (rc == C8Y_OK && !src) {
    snprintf(d->error, sizeof d->error, "HTTP 404 from testhost: not found");
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
             "sha256 of the file from testhost is %s, expected %s", hex,
             d->sha256);
    rc = C8Y_ECHECKSUM;
  }
  if (rc == C8Y_OK) {
    memcpy(d->path, path, sizeof path);
    d->http_code = 200;
  } else if (dir) {
    remove(path);
  }
  g_free(src);
  return rc;
}

static int xfer_upload(c8y_plugin *self, c8y_upload *u) {
  testhost *h = host_of(self);
  if (!u || u->size < sizeof *u || !u->path || !u->type || !*u->type)
    return C8Y_EINVAL;
  u->url[0] = u->error[0] = '\0';
  u->http_code = 0;
  int rc = xfer_failed(h, u->error, sizeof u->error, &u->http_code);
  if (rc != C8Y_OK)
    return rc;
  gchar *content = NULL;
  GError *err = NULL;
  if (!g_file_get_contents(u->path, &content, NULL, &err)) {
    snprintf(u->error, sizeof u->error, "cannot read %s: %s", u->path,
             err->message);
    g_error_free(err);
    return C8Y_EIO;
  }
  const char *base = strrchr(u->path, '/');
  pthread_mutex_lock(&h->mu);
  g_ptr_array_add(h->uploads, g_strdup(u->type));
  g_ptr_array_add(h->uploads, g_strdup(u->child_id ? u->child_id : ""));
  g_ptr_array_add(h->uploads, g_strdup(u->file_name ? u->file_name
                                       : base       ? base + 1
                                                    : u->path));
  g_ptr_array_add(
      h->uploads,
      g_strdup(u->content_type ? u->content_type : "application/octet-stream"));
  g_ptr_array_add(h->uploads, g_strdup(u->text ? u->text : u->type));
  g_ptr_array_add(h->uploads, content);
  size_t count = h->uploads->len / UPLOAD_FIELDS;
  pthread_mutex_unlock(&h->mu);
  snprintf(u->url, sizeof u->url, "testhost://binaries/%zu", count);
  u->http_code = 201;
  return C8Y_OK;
}

void testhost_enable_transfers(testhost *h) { h->transfers = true; }
void testhost_set_abi_1_0(testhost *h) { h->abi_1_0 = true; }

void testhost_add_download(testhost *h, const char *url, const char *path) {
  pthread_mutex_lock(&h->mu);
  g_ptr_array_add(h->downloads, g_strdup(url));
  g_ptr_array_add(h->downloads, g_strdup(path));
  pthread_mutex_unlock(&h->mu);
}

void testhost_fail_transfers(testhost *h, int status, const char *reason) {
  pthread_mutex_lock(&h->mu);
  h->xfer_fail = status;
  g_free(h->xfer_reason);
  h->xfer_reason = g_strdup(reason);
  pthread_mutex_unlock(&h->mu);
}

size_t testhost_download_count(testhost *h) {
  pthread_mutex_lock(&h->mu);
  size_t n = h->ndownloads;
  pthread_mutex_unlock(&h->mu);
  return n;
}

size_t testhost_upload_count(testhost *h) {
  pthread_mutex_lock(&h->mu);
  size_t n = h->uploads->len / UPLOAD_FIELDS;
  pthread_mutex_unlock(&h->mu);
  return n;
}

/* Uploads are only appended: a field stays valid until testhost_free. */
const char *testhost_upload_field(testhost *h, size_t i, const char *field) {
  static const char *const names[UPLOAD_FIELDS] = {
      "type", "child", "file_name", "content_type", "text", "content"};
  const char *v = NULL;
  pthread_mutex_lock(&h->mu);
  for (size_t k = 0; k < UPLOAD_FIELDS; k++)
    if (strcmp(names[k], field) == 0 && i * UPLOAD_FIELDS + k < h->uploads->len)
      v = g_ptr_array_index(h->uploads, i * UPLOAD_FIELDS + k);
  pthread_mutex_unlock(&h->mu);
  return v;
}

static int wrapped_handler(c8y_plugin *self, c8y_operation *op, void *ud) {
  handler_wrap *w = ud;
  unsigned gen = atomic_load(&w->h->op_gen);
  int rc = w->fn(self, op, w->ud);
  if (atomic_load(&w->h->op_gen) == gen)
    atomic_store(&w->h->handler_returned, true);
  wake(w->h);
  return rc;
}

static void wrap_handlers(testhost *h) {
  h->wraps = g_new0(handler_wrap, registry_handler_count(h->reg) + 1);
  for (size_t i = 0; i < registry_handler_count(h->reg); i++) {
    reg_handler *r = registry_handler_at(h->reg, i);
    h->wraps[i] = (handler_wrap){.h = h, .fn = r->fn, .ud = r->user_data};
    r->fn = wrapped_handler;
    r->user_data = &h->wraps[i];
  }
  h->nwraps = registry_handler_count(h->reg);
}

/* The plugin's handle names its plugin only while it is live: read it
 * before the call that may end it. */
static testhost *host_of_op(c8y_operation *op) {
  c8y_plugin *p = ops_handle_plugin(op);
  return p ? p->host->wake_ctx : NULL;
}

static int observed_complete_on_reboot(c8y_operation *op) {
  testhost *h = host_of_op(op);
  int rc = plugin_host_api()->op_complete_on_reboot(op);
  if (rc == C8Y_OK && h)
    atomic_store(&h->reboot_requested, true);
  return rc;
}

/* The process dies as a kill -9 would end the agent at that point. */
static void crash_if(testhost *h, testhost_crash when) {
  if (h && atomic_load(&h->crash) == (int)when)
    kill(getpid(), SIGKILL);
}

static int observed_resume_after_restart(c8y_operation *op) {
  testhost *h = host_of_op(op);
  int rc = plugin_host_api()->op_resume_after_restart(op);
  if (rc == C8Y_OK && h)
    atomic_store(&h->resume_requested, true);
  crash_if(h, TESTHOST_CRASH_AFTER_RESUME_MARK);
  return rc;
}

static int crashing_succeed(c8y_operation *op, const char *result) {
  crash_if(host_of_op(op), TESTHOST_CRASH_AT_COMPLETION);
  return plugin_host_api()->op_succeed(op, result);
}

static int crashing_succeed_params(c8y_operation *op, const char *const *params,
                                   size_t n) {
  crash_if(host_of_op(op), TESTHOST_CRASH_AT_COMPLETION);
  return plugin_host_api()->op_succeed_params(op, params, n);
}

static int crashing_fail(c8y_operation *op, const char *reason) {
  crash_if(host_of_op(op), TESTHOST_CRASH_AT_COMPLETION);
  return plugin_host_api()->op_fail(op, reason);
}

void testhost_crash_at(testhost *h, testhost_crash when) {
  atomic_store(&h->crash, (int)when);
}

void testhost_advance(testhost *h, long long ms) {
  h->skipped_ms += ms;
  pump(h);
}

bool testhost_handler_returned(testhost *h) {
  return atomic_load(&h->handler_returned);
}

bool testhost_op_reboot_requested(testhost *h) {
  return atomic_load(&h->reboot_requested);
}

bool testhost_op_resume_requested(testhost *h) {
  return atomic_load(&h->resume_requested);
}

bool testhost_wait_handler_returned(testhost *h, int timeout_ms) {
  long long end = mono_now() + timeout_ms;
  for (;;) {
    pump(h);
    long long left = end - mono_now();
    if (atomic_load(&h->handler_returned))
      return true;
    if (left <= 0)
      return false;
    wait_wake(h, left < 50 ? left : 50);
  }
}

/* plugin_host_init_plugin hands init the agent's table: this stand-in for
 * the plugin's init passes the test's copy on instead (transfers, ABI 1.0,
 * the observed slots), so the rest of the lifecycle is the agent's own. */
static int init_with_test_api(c8y_plugin *self, const c8y_api *api,
                              void **user_data) {
  testhost *h = host_of(self);
  g_assert_true(api == plugin_host_api());
  h->api = *api;
  if (h->transfers) {
    h->api.download = xfer_download;
    h->api.upload = xfer_upload;
  }
  h->api.op_complete_on_reboot = observed_complete_on_reboot;
  h->api.op_resume_after_restart = observed_resume_after_restart;
  h->api.op_succeed = crashing_succeed;
  h->api.op_succeed_params = crashing_succeed_params;
  h->api.op_fail = crashing_fail;
  if (h->abi_1_0) {
    h->api.abi_minor = 0;
    h->api.size = offsetof(c8y_api, download);
  }
  return h->plugin_init(self, &h->api, user_data);
}

int testhost_load(testhost *h, const char *so_path) {
  g_assert_null(h->p);
  h->dl = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
  if (!h->dl) {
    g_test_message("dlopen %s: %s", so_path, dlerror());
    return C8Y_EINVAL;
  }
  const c8y_plugin_info *info = dlsym(h->dl, C8Y_PLUGIN_SYMBOL_NAME);
  g_assert_nonnull(info);
  /* As the loader: only what the plugin declared, newer fields zero. */
  c8y_plugin_info local;
  memset(&local, 0, sizeof local);
  memcpy(&local, info, info->size < sizeof local ? info->size : sizeof local);
  g_assert_nonnull(local.name);
  g_assert_nonnull(local.init);
  if (load_config(h, local.name) != C8Y_OK) {
    dlclose(h->dl);
    h->dl = NULL;
    return C8Y_EINVAL;
  }
  h->host = (plugin_host){.cfg = &h->cfg,
                          .reg = h->reg,
                          .q = h->q,
                          .device_id = h->device_id,
                          .state_dir = h->state_dir,
                          .wake = wake,
                          .wake_ctx = h,
                          .svc = h->svc};
  if (h->platform_cfg.http_url) {
    char err[256];
    g_assert_cmpint(http_new(&h->platform_cfg, no_token_source, NULL, &h->http,
                             err, sizeof err),
                    ==, 0);
    h->host.http = h->http;
  }
  h->p = plugin_host_new_plugin(&h->host, local.name, local.version, so_path);
  g_assert_nonnull(h->p);
  h->plugin_init = local.init;
  local.init = init_with_test_api;
  struct stat st;
  g_assert_cmpint(stat(so_path, &st), ==, 0);
  char *head = crash_plugin_head(local.name, so_path, &st);
  char why[512];
  int rc = plugin_host_init_plugin(h->p, &local, head, why, sizeof why);
  free(head);
  if (rc != C8Y_OK) {
    log_error("plugin %s refused: %s", so_path, why); /* as the loader */
    plugin_host_free_plugin(h->p);
    h->p = NULL;
    http_free(h->http);
    h->http = NULL;
    dlclose(h->dl);
    h->dl = NULL;
  } else {
    plugin_host_report_unused_keys(h->p, false);
    wrap_handlers(h);
    g_assert_cmpint(plugin_host_start_worker(h->p), ==, 0);
  }
  /* The agent's start after loading: operations kept across the restart
   * go to the handlers now registered, or fail. */
  ops_resume(h->o);
  pump(h);
  return rc;
}

size_t testhost_producer_count(testhost *h) {
  return registry_producer_count(h->reg);
}

const char *testhost_producer_name(testhost *h, size_t i) {
  return i < registry_producer_count(h->reg)
             ? registry_producer_at(h->reg, i)->name
             : NULL;
}

uint32_t testhost_producer_interval(testhost *h, size_t i) {
  return i < registry_producer_count(h->reg)
             ? registry_producer_at(h->reg, i)->interval_ms
             : 0;
}

bool testhost_has_operation(testhost *h, const char *template_id) {
  return registry_find_handler(h->reg, template_id) != NULL;
}

uint32_t testhost_operation_timeout(testhost *h, const char *template_id) {
  reg_handler *r = registry_find_handler(h->reg, template_id);
  return r ? r->timeout_ms : 0;
}

static int wrapped_produce(c8y_plugin *self, c8y_batch *out, void *ud) {
  prod_wrap *w = ud;
  w->rc = w->fn(self, out, w->ud);
  return w->rc;
}

int testhost_run_producer(testhost *h, const char *name) {
  reg_producer *prod = NULL;
  for (size_t i = 0; i < registry_producer_count(h->reg); i++)
    if (strcmp(registry_producer_at(h->reg, i)->name, name) == 0)
      prod = registry_producer_at(h->reg, i);
  g_assert_nonnull(prod);
  prod_wrap w = {.fn = prod->fn, .ud = prod->user_data, .rc = C8Y_EINVAL};
  prod->fn = wrapped_produce;
  prod->user_data = &w;
  g_assert_cmpint(plugin_host_queue_produce(h->p, prod), ==, 0);
  long long end = mono_now() + 30000;
  while (atomic_load(&prod->busy) && mono_now() < end)
    wait_wake(h, 10);
  g_assert_false(atomic_load(&prod->busy));
  prod->fn = w.fn;
  prod->user_data = w.ud;
  pump(h);
  return w.rc;
}

testhost_op_state testhost_op_state_now(testhost *h) {
  pump(h);
  if (!h->op_done)
    return TESTHOST_OP_RUNNING;
  return h->op_ok ? TESTHOST_OP_SUCCEEDED : TESTHOST_OP_FAILED;
}

/* Forgets what the previous operation left: the next one is observed. */
static void begin_operation(testhost *h) {
  h->op_done = false;
  g_free(h->op_detail);
  h->op_detail = NULL;
  g_free(h->op_fragment);
  h->op_fragment = NULL;
  g_ptr_array_set_size(h->op_params, 0);
  atomic_fetch_add(&h->op_gen, 1);
  atomic_store(&h->handler_returned, false);
  atomic_store(&h->reboot_requested, false);
  atomic_store(&h->resume_requested, false);
  g_free(h->last_503);
  h->last_503 = NULL;
}

testhost_op_state testhost_run_operation(testhost *h, const char *line,
                                         int timeout_ms) {
  begin_operation(h);
  ops_handle_payload(h->o, line, strlen(line));
  testhost_wait_op_done(h, timeout_ms);
  return testhost_op_state_now(h);
}

bool testhost_has_fragment(testhost *h, const char *fragment) {
  return registry_fragment_handler_for(h->reg, fragment, NULL) != NULL;
}

testhost_op_state testhost_run_json_operation(testhost *h, const char *json,
                                              int timeout_ms) {
  begin_operation(h);
  ops_handle_json(h->o, json, strlen(json));
  testhost_wait_op_done(h, timeout_ms);
  return testhost_op_state_now(h);
}

bool testhost_wait_op_done(testhost *h, int timeout_ms) {
  long long end = mono_now() + timeout_ms;
  for (;;) {
    testhost_op_state st = testhost_op_state_now(h);
    long long left = end - mono_now();
    if (st != TESTHOST_OP_RUNNING)
      return true;
    if (left <= 0)
      return false;
    wait_wake(h, left < 50 ? left : 50);
  }
}

size_t testhost_op_param_count(testhost *h) {
  pump(h);
  return h->op_params->len;
}

const char *testhost_op_param(testhost *h, size_t i) {
  pump(h);
  return i < h->op_params->len ? g_ptr_array_index(h->op_params, i) : NULL;
}

void testhost_cancel_operation(testhost *h) {
  ops_cancel_running(h->o);
  pump(h);
}

int testhost_deliver_message(testhost *h, const char *xid, const char *line) {
  smartrest_records r;
  g_assert_cmpint(smartrest_decode(line, strlen(line), &r), ==, 0);
  g_assert_cmpuint(r.count, ==, 1);
  g_assert_null(r.items[0].error);
  reg_message *m = registry_find_message(h->reg, xid, r.items[0].fields[0]);
  int rc = C8Y_EINVAL;
  if (m) {
    /* The job takes the fields. */
    rc = plugin_host_queue_message(m->plugin, m, r.items[0].fields,
                                   r.items[0].nfields) == 0
             ? C8Y_OK
             : C8Y_EIO;
    r.items[0].fields = NULL;
    r.items[0].nfields = 0;
  }
  smartrest_records_free(&r);
  return rc;
}

const char *testhost_op_detail(testhost *h) {
  return h->op_detail ? h->op_detail : "";
}

size_t testhost_line_count(testhost *h) {
  pump(h);
  return h->lines->len;
}

const char *testhost_line(testhost *h, size_t i) {
  pump(h);
  return i < h->lines->len ? g_ptr_array_index(h->lines, i) : NULL;
}

static bool line_has_prefix(const char *topic_line, const char *prefix) {
  const char *bar = strchr(topic_line, '|');
  return bar && g_str_has_prefix(bar + 1, prefix);
}

const char *testhost_find_line(testhost *h, const char *prefix) {
  pump(h);
  for (guint i = 0; i < h->lines->len; i++)
    if (line_has_prefix(g_ptr_array_index(h->lines, i), prefix))
      return g_ptr_array_index(h->lines, i);
  return NULL;
}

size_t testhost_count_lines(testhost *h, const char *prefix) {
  pump(h);
  size_t n = 0;
  for (guint i = 0; i < h->lines->len; i++)
    n += line_has_prefix(g_ptr_array_index(h->lines, i), prefix);
  return n;
}

static bool engine_status(const char *topic_line) {
  const char *l = strchr(topic_line, '|');
  return l &&
         (g_str_has_prefix(l + 1, "501,") || g_str_has_prefix(l + 1, "502,") ||
          g_str_has_prefix(l + 1, "503,"));
}

const char *testhost_sent(testhost *h, size_t i) {
  pump(h);
  for (guint k = 0; k < h->lines->len; k++) {
    const char *l = g_ptr_array_index(h->lines, k);
    if (!engine_status(l) && i-- == 0)
      return l;
  }
  return NULL;
}

size_t testhost_sent_count(testhost *h) {
  size_t n = 0;
  while (testhost_sent(h, n))
    n++;
  return n;
}

void testhost_clear_lines(testhost *h) {
  pump(h);
  g_ptr_array_set_size(h->lines, 0);
}

size_t testhost_log_count(testhost *h) {
  pthread_mutex_lock(&h->mu);
  size_t n = h->logs->len;
  pthread_mutex_unlock(&h->mu);
  return n;
}

/* Log lines are only appended while the host lives: a returned pointer
 * stays valid until testhost_free. */
const char *testhost_log(testhost *h, size_t i) {
  pthread_mutex_lock(&h->mu);
  const char *s = i < h->logs->len ? g_ptr_array_index(h->logs, i) : NULL;
  pthread_mutex_unlock(&h->mu);
  return s;
}

const char *testhost_find_log(testhost *h, const char *substring) {
  const char *found = NULL;
  pthread_mutex_lock(&h->mu);
  for (guint i = 0; i < h->logs->len && !found; i++)
    if (strstr(g_ptr_array_index(h->logs, i), substring))
      found = g_ptr_array_index(h->logs, i);
  pthread_mutex_unlock(&h->mu);
  return found;
}
