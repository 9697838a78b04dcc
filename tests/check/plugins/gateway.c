/* A plugin that keeps the SDK's contract on every channel the conformance
 * kit drives, for its tests (written only from c8y/plugin.h): a child
 * device, a producer measuring for it, a fragment operation (acme_Reset,
 * as JSON and as a custom template record) completed later from a thread
 * of its own, a static template for its children (510), a message
 * handler, and an upgrade (acme_Upgrade) that completes only after the
 * agent restarted (op_resume_after_restart). fini completes what is
 * pending and joins the thread. c8y-plugin-check must find nothing. */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <c8y/plugin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHILD "kit-gateway-child"
#define MAX_PENDING 64

static const c8y_api *api;

typedef struct gateway {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  c8y_operation *pending[MAX_PENDING];
  size_t npending;
  int stopping;
} gateway;

static int produce(c8y_plugin *self, c8y_batch *out, void *ud) {
  (void)self, (void)ud;
  int rc = api->batch_set_child(out, CHILD);
  if (rc == C8Y_OK)
    rc = api->batch_add(out, "c8y_Temperature", "T", 21.5, "C");
  return rc;
}

/* The resets run here, so the worker is free at once. */
static void *resetter(void *arg) {
  gateway *g = arg;
  pthread_mutex_lock(&g->mu);
  for (;;) {
    while (!g->npending && !g->stopping)
      pthread_cond_wait(&g->cv, &g->mu);
    if (!g->npending)
      break;
    c8y_operation *op = g->pending[--g->npending];
    pthread_mutex_unlock(&g->mu);
    struct timespec pause = {0, 10 * 1000 * 1000};
    nanosleep(&pause, NULL);
    const char *mode = api->op_json_value(op, "acme_Reset.mode");
    if (api->op_cancelled(op))
      api->op_fail(op, "the reset was stopped");
    else if (mode && strcmp(mode, "soft") != 0 && strcmp(mode, "hard") != 0)
      api->op_fail(op, "acme_Reset.mode must be soft or hard");
    else
      api->op_succeed(op, NULL);
    pthread_mutex_lock(&g->mu);
  }
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

static int on_reset(c8y_plugin *self, c8y_operation *op, void *ud) {
  gateway *g = ud;
  (void)self;
  pthread_mutex_lock(&g->mu);
  int full = g->npending == MAX_PENDING;
  if (!full) {
    g->pending[g->npending++] = op;
    pthread_cond_signal(&g->cv);
  }
  pthread_mutex_unlock(&g->mu);
  return full ? api->op_fail(op, "too many resets at once") : C8Y_PENDING;
}

static int on_child_restart(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self, (void)ud;
  const char *dev = api->op_device(op);
  if (!dev || strcmp(dev, CHILD) != 0)
    return api->op_fail(op, "unknown child");
  return api->op_succeed(op, NULL);
}

/* An upgrade to a version named in "text" (a plain word) with "value" 1
 * replaces the agent: it is decided after the restart; anything else is
 * refused at once. */
static int on_upgrade(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self, (void)ud;
  if (api->op_resumed(op))
    return api->op_succeed(op, "upgraded across a restart");
  const char *value = api->op_json_value(op, "acme_Upgrade.value");
  const char *text = api->op_json_value(op, "acme_Upgrade.text");
  if (!value || strcmp(value, "1") != 0)
    return api->op_fail(op, "acme_Upgrade.value must be 1");
  if (!text || !*text || strlen(text) > 64 || strpbrk(text, " \t\n\"\\,"))
    return api->op_fail(op, "acme_Upgrade.text must be a version, a word");
  if (api->op_resume_after_restart(op) != C8Y_OK)
    return api->op_fail(op, "cannot record the upgrade");
  return C8Y_PENDING; /* the agent's restart decides */
}

static void on_message(c8y_plugin *self, const c8y_message *msg, void *ud) {
  (void)ud;
  size_t n = api->msg_field_count(msg);
  api->log(self, C8Y_LOG_INFO, "message %s with %zu fields", api->msg_id(msg),
           n);
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  api = a;
  if (!C8Y_API_HAS(api, add_template_operation))
    return C8Y_ENOTSUP;
  gateway *g = calloc(1, sizeof *g);
  if (!g)
    return C8Y_ENOMEM;
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  int rc = api->add_child(self, CHILD, "Kit gateway child", "c8y_KitChild");
  if (rc == C8Y_OK)
    rc = api->add_producer(self, "temperature", 1000, produce, g);
  if (rc == C8Y_OK)
    rc = api->add_fragment_operation(self, "acme_Reset", 5000, on_reset, g);
  if (rc == C8Y_OK)
    rc = api->add_template_operation(self, "acme", "R1", "acme_Reset");
  if (rc == C8Y_OK)
    rc = api->add_fragment_operation(self, "acme_Upgrade", 0, on_upgrade, g);
  if (rc == C8Y_OK)
    rc = api->add_device_operation(self, C8Y_ALL_CHILDREN, "510", 0,
                                   on_child_restart, g);
  if (rc == C8Y_OK)
    rc = api->add_message_handler(self, "acme", "M1", on_message, g);
  if (rc == C8Y_OK && pthread_create(&g->thread, NULL, resetter, g) != 0)
    rc = C8Y_ENOMEM;
  if (rc != C8Y_OK) {
    free(g);
    return rc;
  }
  *ud = g;
  return C8Y_OK;
}

static void fini(c8y_plugin *self, void *ud) {
  gateway *g = ud;
  (void)self;
  pthread_mutex_lock(&g->mu);
  g->stopping = 1;
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);
  pthread_join(g->thread, NULL); /* it completes what is queued first */
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
  free(g);
}

C8Y_PLUGIN(.name = "gateway", .version = "1.0", .init = init, .fini = fini);
