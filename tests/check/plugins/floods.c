/* A plugin that breaks the SDK's contract on purpose, for the conformance
 * kit's tests (written only from c8y/plugin.h): every 100 ms its producer
 * sends one event per entry of a 200-entry table, 2000 lines a second,
 * twice what the agent lets a plugin keep up ([agent]
 * plugin_max_lines_per_s, 1000). c8y-plugin-check must report
 * "line-rate". */
#include <c8y/plugin.h>
#include <stdio.h>

static const c8y_api *api;

static int produce(c8y_plugin *self, c8y_batch *out, void *ud) {
  (void)ud, (void)out;
  for (int i = 0; i < 200; i++) { /* the bug: one line per entry */
    char text[32];
    snprintf(text, sizeof text, "entry %d", i);
    api->send_event(self, NULL, "acme_Entry", text, 0);
  }
  return C8Y_OK;
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  return api->add_producer(self, "entries", 100, produce, NULL);
}

C8Y_PLUGIN(.name = "floods", .version = "0", .init = init);
