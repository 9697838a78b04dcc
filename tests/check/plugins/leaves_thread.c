/* A plugin that breaks the SDK's contract on purpose, for the conformance
 * kit's tests (written only from c8y/plugin.h): init starts a thread of its
 * own that fini never stops or joins. Everything else is right.
 * c8y-plugin-check must report "left-thread". */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>
#include <pthread.h>
#include <unistd.h>

static const c8y_api *api;

static void *keep_watching(void *arg) {
  for (;;)
    pause(); /* the bug: nothing ever ends this thread */
  return arg;
}

static int on_request(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self;
  (void)ud;
  return api->op_succeed(op, NULL);
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  pthread_t t;
  if (pthread_create(&t, NULL, keep_watching, NULL) != 0)
    return C8Y_ENOMEM;
  pthread_detach(t);
  return api->add_operation(self, "517", 0, on_request, NULL);
}

C8Y_PLUGIN(.name = "leaves_thread", .version = "0", .init = init);
