/* testhost: see testhost.h. The agent's core and its capture transport are
 * capture.c's (shared with c8y-plugin-check); this file adds the test
 * controls. The test thread is the agent's main loop: it alone pumps the
 * capture; plugin workers complete operations and wake it. */
#include "testhost.h"

#include "capture.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "ops.h"
#include "plugin_host.h"
#include "registry.h"
#include "smartrest.h"

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
#include <time.h>
#include <unistd.h>

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
  capture *c;
  pthread_mutex_t mu;
  GPtrArray *logs; /* under mu */
  GPtrArray *lines;
  bool op_done;
  bool op_ok;
  char *op_detail;
  char *op_fragment;
  GPtrArray *op_params;
  char *last_503; /* the last 503 captured, after "503," */
  /* the api table init gets */
  c8y_api api;
  bool transfers, abi_1_0;
  handler_wrap *wraps;
  size_t nwraps;
  atomic_bool handler_returned, reboot_requested, resume_requested;
  /* Bumped by each testhost_run_operation: a handler of an earlier
   * operation that returns late (its op_succeed already let the test go on)
   * must not mark the next one's handler as returned. */
  atomic_uint op_gen;
  atomic_int crash; /* testhost_crash */
  /* testhost_set_platform */
  agent_config platform_cfg;
  http_ctx *http;
};

static long long mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps until woken or until ms passed. */
static void wait_wake(testhost *h, long long ms) { capture_wait(h->c, ms); }

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

/* What the agent's drain publishes (capture.c). */
static void captured(void *ctx, const char *topic, const char *line) {
  testhost *h = ctx;
  g_ptr_array_add(h->lines, g_strdup_printf("%s|%s", topic, line));
  if (g_str_has_prefix(line, "503,")) {
    g_free(h->last_503);
    h->last_503 = g_strdup(line + 4);
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
  capture_pump(h->c);
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
  pthread_mutex_init(&h->mu, NULL);
  log_set_tap(log_tap, h);
  /* The agent's start: the journal in the state dir, then what the
   * previous run on this state dir left executing is settled or kept for
   * ops_resume (testhost_load). A restart is testhost_free + testhost_new
   * on the same state dir. */
  capture_options co = {.device_id = h->device_id,
                        .state_dir = h->state_dir,
                        .op_timeout_ms = 60000,
                        .platform_name = "testhost",
                        .ctx = h,
                        .on_line = captured,
                        .on_finished = finished};
  char err[512];
  if (capture_new(&co, &h->c, err, sizeof err) != C8Y_OK)
    g_error("capture: %s", err);
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
  if (!capture_plugin(h->c))
    return;
  /* The agent's stop: running handlers are told (op_cancelled), given the
   * grace time, what is left fails; then the worker stops and fini runs. */
  capture_unload(h->c, -1);
  settle(h);
  http_free(h->http);
  h->http = NULL;
  g_free(h->wraps);
  h->wraps = NULL;
}

void testhost_free(testhost *h) {
  if (!h)
    return;
  testhost_unload(h);
  capture_free(h->c);
  log_set_tap(NULL, NULL);
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
  g_free(h->platform_cfg.http_url);
  g_free(h->platform_cfg.ca_path);
  pthread_mutex_destroy(&h->mu);
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

/* ---- transfers (see testhost.h): capture.c's platform ---- */

void testhost_enable_transfers(testhost *h) { h->transfers = true; }
void testhost_set_abi_1_0(testhost *h) { h->abi_1_0 = true; }

void testhost_add_download(testhost *h, const char *url, const char *path) {
  capture_add_download(h->c, url, path);
}

void testhost_fail_transfers(testhost *h, int status, const char *reason) {
  capture_fail_transfers(h->c, status, reason);
}

size_t testhost_download_count(testhost *h) {
  return capture_download_count(h->c);
}

size_t testhost_upload_count(testhost *h) { return capture_upload_count(h->c); }

const char *testhost_upload_field(testhost *h, size_t i, const char *field) {
  return capture_upload_field(h->c, i, field);
}

static testhost *host_of(c8y_plugin *self) {
  return capture_ctx(capture_of(self));
}

static int wrapped_handler(c8y_plugin *self, c8y_operation *op, void *ud) {
  handler_wrap *w = ud;
  unsigned gen = atomic_load(&w->h->op_gen);
  int rc = w->fn(self, op, w->ud);
  if (atomic_load(&w->h->op_gen) == gen)
    atomic_store(&w->h->handler_returned, true);
  capture_wake(w->h->c);
  return rc;
}

static void wrap_handlers(testhost *h) {
  registry *reg = capture_registry(h->c);
  h->wraps = g_new0(handler_wrap, registry_handler_count(reg) + 1);
  for (size_t i = 0; i < registry_handler_count(reg); i++) {
    reg_handler *r = registry_handler_at(reg, i);
    h->wraps[i] = (handler_wrap){.h = h, .fn = r->fn, .ud = r->user_data};
    r->fn = wrapped_handler;
    r->user_data = &h->wraps[i];
  }
  h->nwraps = registry_handler_count(reg);
}

/* The plugin's handle names its plugin only while it is live: read it
 * before the call that may end it. */
static testhost *host_of_op(c8y_operation *op) {
  c8y_plugin *p = ops_handle_plugin(op);
  return p ? host_of(p) : NULL;
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
  capture_advance(h->c, ms);
  settle(h);
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

/* The table the plugin's init gets (capture_load hands it on): the agent's
 * own, with the test's deviations (transfers, ABI 1.0) and the observed
 * slots, so the rest of the lifecycle is the agent's own. */
static void build_test_api(testhost *h) {
  h->api = *plugin_host_api();
  if (h->transfers) {
    h->api.download = capture_download;
    h->api.upload = capture_upload;
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
}

/* The plugin's name selects its config section, which must be written
 * before the loader runs init: read from its descriptor first. */
static char *plugin_name(const char *so_path) {
  void *dl = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    g_test_message("dlopen %s: %s", so_path, dlerror());
    return NULL;
  }
  const c8y_plugin_info *info = dlsym(dl, C8Y_PLUGIN_SYMBOL_NAME);
  char *name = info && info->name ? g_strdup(info->name) : NULL;
  dlclose(dl);
  return name;
}

int testhost_load(testhost *h, const char *so_path) {
  g_assert_null(capture_plugin(h->c));
  char *name = plugin_name(so_path);
  if (!name)
    return C8Y_EINVAL;
  int rc = load_config(h, name);
  g_free(name);
  if (rc != C8Y_OK)
    return C8Y_EINVAL;
  if (h->platform_cfg.http_url) {
    char err[256];
    g_assert_cmpint(http_new(&h->platform_cfg, no_token_source, NULL, &h->http,
                             err, sizeof err),
                    ==, 0);
  }
  build_test_api(h);
  char why[512];
  rc = capture_load(h->c, so_path, &h->cfg, &h->api, h->http, why, sizeof why);
  if (rc != C8Y_OK) {
    http_free(h->http);
    h->http = NULL;
  } else {
    wrap_handlers(h);
  }
  /* The agent's start after loading: operations kept across the restart
   * go to the handlers now registered, or fail. */
  capture_resume(h->c);
  settle(h);
  return rc;
}

size_t testhost_producer_count(testhost *h) {
  return registry_producer_count(capture_registry(h->c));
}

const char *testhost_producer_name(testhost *h, size_t i) {
  registry *reg = capture_registry(h->c);
  return i < registry_producer_count(reg) ? registry_producer_at(reg, i)->name
                                          : NULL;
}

uint32_t testhost_producer_interval(testhost *h, size_t i) {
  registry *reg = capture_registry(h->c);
  return i < registry_producer_count(reg)
             ? registry_producer_at(reg, i)->interval_ms
             : 0;
}

bool testhost_has_operation(testhost *h, const char *template_id) {
  return registry_find_handler(capture_registry(h->c), template_id) != NULL;
}

uint32_t testhost_operation_timeout(testhost *h, const char *template_id) {
  reg_handler *r = registry_find_handler(capture_registry(h->c), template_id);
  return r ? r->timeout_ms : 0;
}

int testhost_run_producer(testhost *h, const char *name) {
  registry *reg = capture_registry(h->c);
  reg_producer *prod = NULL;
  for (size_t i = 0; i < registry_producer_count(reg); i++)
    if (strcmp(registry_producer_at(reg, i)->name, name) == 0)
      prod = registry_producer_at(reg, i);
  g_assert_nonnull(prod);
  int rc;
  g_assert_true(capture_run_producer(h->c, prod, 30000, &rc));
  settle(h);
  return rc;
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
  ops_handle_payload(capture_ops(h->c), line, strlen(line));
  testhost_wait_op_done(h, timeout_ms);
  return testhost_op_state_now(h);
}

bool testhost_has_fragment(testhost *h, const char *fragment) {
  return registry_fragment_handler_for(capture_registry(h->c), fragment,
                                       NULL) != NULL;
}

testhost_op_state testhost_run_json_operation(testhost *h, const char *json,
                                              int timeout_ms) {
  begin_operation(h);
  ops_handle_json(capture_ops(h->c), json, strlen(json));
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
  ops_cancel_running(capture_ops(h->c));
  pump(h);
}

int testhost_deliver_message(testhost *h, const char *xid, const char *line) {
  smartrest_records r;
  g_assert_cmpint(smartrest_decode(line, strlen(line), &r), ==, 0);
  g_assert_cmpuint(r.count, ==, 1);
  g_assert_null(r.items[0].error);
  reg_message *m =
      registry_find_message(capture_registry(h->c), xid, r.items[0].fields[0]);
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
