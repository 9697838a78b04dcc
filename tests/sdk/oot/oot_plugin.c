/* oot_relay: a plugin built outside the agent's tree, only from the
 * installed SDK (pkg-config or find_package). It counts produce calls and
 * handles c8y_Relay (518,<device>,OPEN|CLOSED): it succeeds for OPEN and
 * CLOSED, sends an event "oot_relay" naming the new state, and fails
 * anything else. */
#include <c8y/plugin.h>

#include <stdio.h>
#include <string.h>

static const c8y_api *api;

typedef struct relay {
  double produced;
  char state[8];
} relay;

static relay the_relay = {0, "CLOSED"};

static int produce(c8y_plugin *self, c8y_batch *out, void *user_data) {
  relay *r = user_data;
  (void)self;
  r->produced += 1;
  return api->batch_add(out, "c8y_OotCounter", "produced", r->produced, "");
}

static int on_relay(c8y_plugin *self, c8y_operation *op, void *user_data) {
  relay *r = user_data;
  const char *want = api->op_field(op, 0);
  char text[64];
  if (!want || (strcmp(want, "OPEN") != 0 && strcmp(want, "CLOSED") != 0)) {
    api->op_fail(op, "relay state must be OPEN or CLOSED");
    return C8Y_OK;
  }
  snprintf(r->state, sizeof r->state, "%s", want);
  snprintf(text, sizeof text, "relay is %s", r->state);
  api->send_event(self, NULL, "oot_relay", text, 0);
  api->op_succeed(op, NULL);
  return C8Y_OK;
}

static int init(c8y_plugin *self, const c8y_api *a, void **user_data) {
  int64_t interval;
  int rc;
  api = a;
  *user_data = &the_relay;
  if (api->config_int(self, "interval", 60, &interval) != C8Y_OK ||
      interval < 1)
    return C8Y_EINVAL;
  rc = api->add_producer(self, "oot", (uint32_t)interval * 1000u, produce,
                         &the_relay);
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "518", 0, on_relay, &the_relay);
  return rc;
}

C8Y_PLUGIN(.name = "oot_relay", .version = "0.1.0", .init = init);
