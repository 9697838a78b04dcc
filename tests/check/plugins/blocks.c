/* A plugin that breaks the SDK's contract on purpose, for the conformance
 * kit's tests (written only from c8y/plugin.h): its restart handler (510)
 * waits for a device that never answers, on the plugin's worker, without
 * looking at op_cancelled. c8y-plugin-check must report "blocked-worker". */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <c8y/plugin.h>
#include <time.h>

static const c8y_api *api;

static int on_restart(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self, (void)ud;
  for (;;) { /* the bug: no op_cancelled(op), no end */
    struct timespec t = {0, 50 * 1000 * 1000};
    nanosleep(&t, NULL);
  }
  return api->op_succeed(op, NULL);
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  return api->add_operation(self, "510", 0, on_restart, NULL);
}

C8Y_PLUGIN(.name = "blocks", .version = "0", .init = init);
