/* plugin: the host side of the SDK, driven through the real c8y_api table
 * with a memory-only queue (no loader, no worker threads). */
#include "config.h"
#include "outq.h"
#include "plugin.h"
#include "registry.h"

#include <c8y/plugin.h>
#include <glib.h>
#include <string.h>

typedef struct {
  agent_config cfg;
  registry reg;
  outq *q;
  plugin_host host;
  c8y_plugin *p;
  const c8y_api *api;
} fx;

static void fx_setup(fx *f, gconstpointer d) {
  (void)d;
  memset(f, 0, sizeof *f);
  registry_init(&f->reg);
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[256];
  g_assert_cmpint(outq_open(&qo, &f->q, err, sizeof err), ==, 0);
  f->host.cfg = &f->cfg;
  f->host.reg = &f->reg;
  f->host.q = f->q;
  f->host.device_id = "root-dev";
  f->host.state_dir = "/nonexistent";
  f->p = plugin_new(&f->host, "unit", "1.0", "/nonexistent/unit.so");
  g_assert_nonnull(f->p);
  f->api = plugin_api();
}

static void fx_teardown(fx *f, gconstpointer d) {
  (void)d;
  registry_remove_plugin(&f->reg, f->p);
  plugin_free(f->p);
  registry_free(&f->reg);
  outq_close(f->q);
}

/* A child id that is not a usable topic segment and external id is refused
 * where it enters, not when its first line fails to publish. */
static void test_add_child_validates(fx *f, gconstpointer d) {
  (void)d;
  f->p->registering = true;
  static const char *const bad[] = {"ch\xff\xfe", "a\x01z", "evil/#", "a,b",
                                    "q\"uote",    " pad",   ""};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
    g_assert_cmpint(f->api->add_child(f->p, bad[i], "n", "t"), ==, C8Y_EINVAL);
  g_assert_cmpuint(f->reg.nchildren, ==, 0);
  g_assert_cmpint(f->api->add_child(f->p, "root-dev:device:kid", "n", "t"), ==,
                  C8Y_OK);
  g_assert_true(registry_has_child(&f->reg, "root-dev:device:kid"));
  f->p->registering = false;
  /* Lines addressed to a bad child are refused the same way. */
  g_assert_cmpint(f->api->send_event(f->p, "ch\xff", "t", "x", 0), ==,
                  C8Y_EINVAL);
  g_assert_cmpint(f->api->send_event(f->p, "root-dev:device:kid", "t", "x", 0),
                  ==, C8Y_OK);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add("/plugin/add-child-validates", fx, NULL, fx_setup,
             test_add_child_validates, fx_teardown);
  return g_test_run();
}
