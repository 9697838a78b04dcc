/* svctest: a plugin written from the SDK 1.2 header alone, for the
 * services tests.
 *   init: with `fail_init = yes` init fails (C8Y_EIO); otherwise it
 *     announces the service <device>_svctest-svc (102 through send_static,
 *     type "test", name "svctest-svc"), serves c8y_ServiceCommand and says
 *     so on the service (114 on s/us/<service>).
 *   c8y_ServiceCommand: succeeds with "<command> <op_device>" for its own
 *     service, fails "<op_device> is not a service of svctest" otherwise.
 *   svctest_Health: set_health(svctest_Health.up == "true",
 *     svctest_Health.reason) from a thread of the plugin, then succeeds.
 *   `fail_produce = yes`: a producer every 100 ms that fails. */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const c8y_api *api;
static char service[300];

typedef struct health_job {
  c8y_plugin *self;
  int up;
  char reason[300];
  int rc;
} health_job;

static void *report_health(void *arg) {
  health_job *j = arg;
  j->rc = api->set_health(j->self, j->up, j->reason[0] ? j->reason : NULL);
  return NULL;
}

static int on_health(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  health_job j = {.self = self};
  const char *up = api->op_json_value(op, "svctest_Health.up");
  const char *reason = api->op_json_value(op, "svctest_Health.reason");
  j.up = up && strcmp(up, "true") == 0;
  snprintf(j.reason, sizeof j.reason, "%s", reason ? reason : "");
  pthread_t t;
  if (pthread_create(&t, NULL, report_health, &j) != 0)
    return api->op_fail(op, "no thread");
  pthread_join(t, NULL);
  char result[64];
  snprintf(result, sizeof result, "set_health %s", api->status_str(j.rc));
  return api->op_succeed(op, result);
}

static int on_service_command(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  const char *device = api->op_device(op);
  const char *command = api->op_json_value(op, "c8y_ServiceCommand.command");
  api->log(self, C8Y_LOG_INFO, "svctest: ServiceCommand %s on %s",
           command ? command : "(none)", device);
  char text[400];
  if (strcmp(device, service) != 0) {
    snprintf(text, sizeof text, "%s is not a service of svctest", device);
    return api->op_fail(op, text);
  }
  snprintf(text, sizeof text, "%s %s", command ? command : "-", device);
  return api->op_succeed(op, text);
}

static int failing_producer(c8y_plugin *self, c8y_batch *out, void *ud) {
  (void)self;
  (void)out;
  (void)ud;
  return C8Y_EIO;
}

static int init(c8y_plugin *self, const c8y_api *a, void **user_data) {
  (void)user_data;
  api = a;
  int fail = 0, fail_produce = 0;
  if (api->config_bool(self, "fail_init", 0, &fail) != C8Y_OK ||
      api->config_bool(self, "fail_produce", 0, &fail_produce) != C8Y_OK)
    return C8Y_EINVAL;
  if (fail) {
    api->log(self, C8Y_LOG_ERROR, "svctest: told to fail");
    return C8Y_EIO;
  }
  snprintf(service, sizeof service, "%s_svctest-svc", api->device_id(self));
  int rc = api->add_fragment_operation(self, "c8y_ServiceCommand", 0,
                                       on_service_command, NULL);
  if (rc == C8Y_OK)
    rc =
        api->add_fragment_operation(self, "svctest_Health", 0, on_health, NULL);
  if (rc == C8Y_OK && fail_produce)
    rc = api->add_producer(self, "broken", 100, failing_producer, NULL);
  const char *svc[] = {"102", service, "test", "svctest-svc", "up"};
  if (rc == C8Y_OK)
    rc = api->send_static(self, NULL, svc, 5);
  const char *ops[] = {"114", "c8y_ServiceCommand"};
  if (rc == C8Y_OK)
    rc = api->send_static(self, service, ops, 2);
  return rc;
}

C8Y_PLUGIN(.name = "svctest", .version = "1.0", .init = init);
