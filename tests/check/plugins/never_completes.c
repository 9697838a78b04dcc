/* A plugin that breaks the SDK's contract on purpose, for the conformance
 * kit's tests (written only from c8y/plugin.h): its c8y_Command handler
 * promises to complete the operation later (C8Y_PENDING) and forgets it,
 * and its fini does not complete what is pending either.
 * c8y-plugin-check must report "never-completed". */
#include <c8y/plugin.h>
#include <string.h>

static const c8y_api *api;

static int on_command(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self, (void)ud;
  const char *text = api->op_field(op, 0);
  if (text && strcmp(text, "echo c8y-plugin-check") == 0)
    return C8Y_PENDING; /* the bug: nobody ever calls op_succeed/op_fail */
  return api->op_fail(op, "only the kit's echo is known");
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  return api->add_operation(self, "511", 0, on_command, NULL);
}

C8Y_PLUGIN(.name = "never_completes", .version = "0", .init = init);
