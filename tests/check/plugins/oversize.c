/* A plugin that breaks the SDK's contract on purpose, for the conformance
 * kit's tests (written only from c8y/plugin.h): its producer sends its
 * whole status file as one event text, which can be longer than a line
 * may be (C8Y_MAX_LINE), and ignores the refusal.
 * c8y-plugin-check must report "line-too-long". */
#include <c8y/plugin.h>
#include <string.h>

static const c8y_api *api;
static char status_text[C8Y_MAX_LINE + 100];

static int produce(c8y_plugin *self, c8y_batch *out, void *ud) {
  (void)ud, (void)out;
  api->send_event(self, NULL, "acme_Status", status_text, 0); /* the bug */
  return C8Y_OK;
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  memset(status_text, 's', sizeof status_text - 1);
  return api->add_producer(self, "status", 60000, produce, NULL);
}

C8Y_PLUGIN(.name = "oversize", .version = "0", .init = init);
