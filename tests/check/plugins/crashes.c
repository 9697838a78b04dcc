/* A plugin that breaks the SDK's contract on purpose, for the conformance
 * kit's tests (written only from c8y/plugin.h): its c8y_Command handler
 * takes the first parameter for granted, and an operation without one
 * (op_field returns NULL) crashes the agent. c8y-plugin-check must report
 * "crash" naming that operation, and go on with the next one. */
#include <c8y/plugin.h>
#include <stdio.h>
#include <string.h>

static const c8y_api *api;

static int on_command(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self, (void)ud;
  char result[64];
  /* the bug: op_field(op, 0) is NULL when the line has no parameter */
  snprintf(result, sizeof result, "%zu bytes", strlen(api->op_field(op, 0)));
  return api->op_succeed(op, result);
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  return api->add_operation(self, "511", 0, on_command, NULL);
}

C8Y_PLUGIN(.name = "crashes", .version = "0", .init = init);
