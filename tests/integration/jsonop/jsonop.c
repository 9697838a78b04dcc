/* jsonop: a plugin written from the SDK 1.2 header alone, for the JSON
 * operation tests. Every handler logs "jsonop: ran <what>" once per run.
 *   acme_Reset (root, add_fragment_operation): succeeds with
 *     acme_Reset.mode and its op_id
 *   acme_Blink (every child, add_device_operation(C8Y_ALL_CHILDREN)):
 *     succeeds with "blinked <device>"
 *   acme_Config (root; also the custom template `xid`/dm1 through
 *     add_template_operation): succeeds with op_template and field 0
 *   acme_Discover (root): a thread of the plugin adds the child named by
 *     acme_Discover.child (add_child after init), then succeeds
 *   acme_Forget (root): remove_child of acme_Forget.child
 *   acme_Measure (root): a thread of the plugin queues "c8y_Now v 42"
 *     through batch_begin/batch_add/batch_commit, then succeeds with
 *     the commit's status
 *   511 (add_operation): succeeds with "ran <text> id=<op_id or none>"
 * Config: child = <id> adds a child in init; xid = <X-ID> (default
 * "acme"). */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const c8y_api *api;

#define MAX_THREADS 16
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t threads[MAX_THREADS];
static size_t nthreads;

typedef struct job {
  c8y_plugin *self;
  c8y_operation *op;
  char child[128];
} job;

/* Threads the plugin starts are joined in fini. */
static int start(void *(*fn)(void *), job *j) {
  pthread_mutex_lock(&mu);
  int rc = nthreads < MAX_THREADS &&
                   pthread_create(&threads[nthreads], NULL, fn, j) == 0
               ? C8Y_OK
               : C8Y_EIO;
  if (rc == C8Y_OK)
    nthreads++;
  pthread_mutex_unlock(&mu);
  return rc;
}

static int on_reset(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  api->log(self, C8Y_LOG_INFO, "jsonop: ran acme_Reset %s", api->op_id(op));
  const char *mode = api->op_json_value(op, "acme_Reset.mode");
  const char *params[] = {mode ? mode : "(none)", api->op_id(op)};
  return api->op_succeed_params(op, params, 2);
}

static int on_blink(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  api->log(self, C8Y_LOG_INFO, "jsonop: ran acme_Blink on %s",
           api->op_device(op));
  char result[200];
  snprintf(result, sizeof result, "blinked %s", api->op_device(op));
  return api->op_succeed(op, result);
}

static int on_config(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  api->log(self, C8Y_LOG_INFO, "jsonop: ran acme_Config");
  char result[300];
  snprintf(result, sizeof result, "%s %s",
           api->op_template(op) ? api->op_template(op) : "json",
           api->op_field(op, 0) ? api->op_field(op, 0) : "-");
  return api->op_succeed(op, result);
}

static void *discover(void *arg) {
  job *j = arg;
  int rc = api->add_child(j->self, j->child, "discovered", "acme_Child");
  if (rc == C8Y_OK)
    api->op_succeed(j->op, NULL);
  else
    api->op_fail(j->op, api->status_str(rc));
  free(j);
  return NULL;
}

static int on_discover(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  api->log(self, C8Y_LOG_INFO, "jsonop: ran acme_Discover");
  const char *child = api->op_json_value(op, "acme_Discover.child");
  job *j = calloc(1, sizeof *j);
  if (!child || !j) {
    free(j);
    return C8Y_EINVAL;
  }
  j->self = self;
  j->op = op;
  snprintf(j->child, sizeof j->child, "%s", child);
  int rc = start(discover, j);
  if (rc != C8Y_OK)
    free(j);
  return rc == C8Y_OK ? C8Y_PENDING : rc;
}

static int on_forget(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  api->log(self, C8Y_LOG_INFO, "jsonop: ran acme_Forget");
  const char *child = api->op_json_value(op, "acme_Forget.child");
  return child ? api->remove_child(self, child) : C8Y_EINVAL;
}

static void *measure(void *arg) {
  job *j = arg;
  c8y_batch *b = api->batch_begin(j->self);
  int rc = b ? api->batch_add(b, "c8y_Now", "v", 42, "u") : C8Y_ENOMEM;
  if (rc == C8Y_OK)
    rc = api->batch_commit(b);
  else if (b)
    api->batch_discard(b);
  char result[64];
  snprintf(result, sizeof result, "commit %d", rc);
  api->op_succeed(j->op, result);
  free(j);
  return NULL;
}

static int on_measure(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  api->log(self, C8Y_LOG_INFO, "jsonop: ran acme_Measure");
  job *j = calloc(1, sizeof *j);
  if (!j)
    return C8Y_ENOMEM;
  j->self = self;
  j->op = op;
  int rc = start(measure, j);
  if (rc != C8Y_OK)
    free(j);
  return rc == C8Y_OK ? C8Y_PENDING : rc;
}

static int on_command(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  const char *text = api->op_field(op, 0) ? api->op_field(op, 0) : "";
  const char *id = api->op_id(op);
  api->log(self, C8Y_LOG_INFO, "jsonop: ran command %s", text);
  char result[300];
  snprintf(result, sizeof result, "ran %s id=%s", text, id ? id : "none");
  return api->op_succeed(op, result);
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  if (!C8Y_API_HAS(api, add_template_operation))
    return C8Y_ENOTSUP;
  const char *xid = api->config_string(self, "xid", "acme");
  const char *child = api->config_string(self, "child", NULL);
  int rc = api->add_fragment_operation(self, "acme_Reset", 0, on_reset, NULL);
  if (rc == C8Y_OK && child)
    rc = api->add_child(self, child, "jsonop child", "acme_Child");
  if (rc == C8Y_OK)
    rc = api->add_device_operation(self, C8Y_ALL_CHILDREN, "acme_Blink", 0,
                                   on_blink, NULL);
  if (rc == C8Y_OK)
    rc = api->add_fragment_operation(self, "acme_Config", 0, on_config, NULL);
  if (rc == C8Y_OK)
    rc = api->add_template_operation(self, xid, "dm1", "acme_Config");
  if (rc == C8Y_OK)
    rc = api->add_fragment_operation(self, "acme_Discover", 0, on_discover,
                                     NULL);
  if (rc == C8Y_OK)
    rc = api->add_fragment_operation(self, "acme_Forget", 0, on_forget, NULL);
  if (rc == C8Y_OK)
    rc = api->add_fragment_operation(self, "acme_Measure", 0, on_measure, NULL);
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "511", 0, on_command, NULL);
  return rc;
}

static void fini(c8y_plugin *self, void *ud) {
  (void)self;
  (void)ud;
  pthread_mutex_lock(&mu);
  size_t n = nthreads;
  pthread_mutex_unlock(&mu);
  for (size_t i = 0; i < n; i++)
    pthread_join(threads[i], NULL);
}

C8Y_PLUGIN(.name = "jsonop", .version = "1.0", .init = init, .fini = fini);
