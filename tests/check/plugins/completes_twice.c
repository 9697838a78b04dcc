/* A plugin that breaks the SDK's contract on purpose, for the conformance
 * kit's tests (written only from c8y/plugin.h): its acme_Reset handler
 * (a JSON operation) reports success and then, on its error path, a
 * failure too: two completions of one operation.
 * c8y-plugin-check must report "completed-twice". */
#include <c8y/plugin.h>
#include <string.h>

static const c8y_api *api;

static int on_reset(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self, (void)ud;
  const char *mode = api->op_json_value(op, "acme_Reset.mode");
  api->op_succeed(op, NULL);
  if (!mode || strcmp(mode, "hard") != 0)
    return api->op_fail(op, "acme_Reset.mode must be hard"); /* the bug */
  return C8Y_OK;
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  if (!C8Y_API_HAS(api, add_fragment_operation))
    return C8Y_ENOTSUP;
  return api->add_fragment_operation(self, "acme_Reset", 0, on_reset, NULL);
}

C8Y_PLUGIN(.name = "completes_twice", .version = "0", .init = init);
