/* A plugin that breaks the SDK's contract on purpose, for the conformance
 * kit's tests (written only from c8y/plugin.h): its measurement request
 * handler (517) keeps a copy of the request name that it never frees.
 * Everything else is right. c8y-plugin-check must report "leak". */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include <c8y/plugin.h>
#include <stdlib.h>
#include <string.h>

static const c8y_api *api;

static int on_request(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  const char *name = api->op_field(op, 0);
  char *copy = strdup(name ? name : "");
  if (!copy)
    return C8Y_ENOMEM;
  api->log(self, C8Y_LOG_INFO, "measuring %s", copy);
  return api->op_succeed(op, NULL); /* the bug: copy is never freed */
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  return api->add_operation(self, "517", 0, on_request, NULL);
}

C8Y_PLUGIN(.name = "leaks", .version = "0", .init = init);
