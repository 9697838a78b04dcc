/* gateway: a test plugin written only against the SDK, playing a gateway
 * for `children` child devices "<prefix>1".."<prefix>N": it restarts its
 * children (510 through add_child_operation, so another plugin may restart
 * the gateway itself) and logs "gateway: restart <child>" for each. */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include <stdio.h>

static const c8y_api *api;

static int on_child_restart(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  api->log(self, C8Y_LOG_NOTICE, "gateway: restart %s", api->op_device(op));
  return api->op_succeed(op, NULL);
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  if (!C8Y_API_HAS(api, add_child_operation))
    return C8Y_ENOTSUP;
  int64_t n;
  if (api->config_int(self, "children", 0, &n) != C8Y_OK || n < 0)
    return C8Y_EINVAL;
  const char *prefix = api->config_string(self, "prefix", "gw");
  int rc = api->add_child_operation(self, "510", 0, on_child_restart, NULL);
  for (int64_t i = 1; rc == C8Y_OK && i <= n; i++) {
    char id[64], name[64];
    snprintf(id, sizeof id, "%s%lld", prefix, (long long)i);
    snprintf(name, sizeof name, "gateway child %lld", (long long)i);
    rc = api->add_child(self, id, name, "gw_Child");
  }
  return rc;
}

C8Y_PLUGIN(.name = "gateway", .version = "1.0", .init = init);
