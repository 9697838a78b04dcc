/* <c8y/plugin.h> must compile as strict C99 (-std=c99 -Wpedantic -Werror)
 * and give a plugin that exports only c8y_plugin_info_v1. Uses every macro
 * of the header. */
#include <c8y/plugin.h>

#include <stddef.h>

static const c8y_api *api;

static int produce(c8y_plugin *self, c8y_batch *out, void *user_data) {
  (void)self;
  (void)user_data;
  return api->batch_add(out, "c8y_Test", "v", 1.0, "u");
}

static int on_op(c8y_plugin *self, c8y_operation *op, void *user_data) {
  (void)self;
  (void)user_data;
  if (api->op_field_count(op) == 0)
    return C8Y_EINVAL;
  return api->op_succeed(op, NULL) == C8Y_OK ? C8Y_OK : C8Y_PENDING;
}

static void on_msg(c8y_plugin *self, const c8y_message *msg, void *ud) {
  (void)ud;
  api->log(self, C8Y_LOG_INFO, "message %s with %lu fields", api->msg_id(msg),
           (unsigned long)api->msg_field_count(msg));
}

static int init(c8y_plugin *self, const c8y_api *a, void **user_data) {
  int rc;
  *user_data = NULL;
  api = a;
  if (!C8Y_API_HAS(api, state_dir))
    return C8Y_ENOTSUP;
  rc = api->add_producer(self, "p", 1000u, produce, NULL);
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "511", 0, on_op, NULL);
  if (rc == C8Y_OK)
    rc = api->add_message_handler(self, "xid", "100", on_msg, NULL);
  return rc;
}

static void fini(c8y_plugin *self, void *user_data) {
  (void)user_data;
  api->log(self, C8Y_LOG_DEBUG, "bye (%s)", api->status_str(C8Y_OK));
}

C8Y_PLUGIN(.name = "header_c99", .version = "1.0", .init = init, .fini = fini);
