/* services: the agent's own service lines and will, and plugins' health as
 * queued lines (102 before its alarm, only changes, remembered across
 * restarts). */
#include "outq.h"
#include "registry.h"
#include "services.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

static void test_will(void) {
  char buf[700];
  g_assert_cmpint(services_will("dev1", buf, sizeof buf), ==, C8Y_OK);
  g_assert_cmpstr(buf, ==,
                  "400,c8y_ConnectionEvent,\"Device connection was lost.\"\n"
                  "102,dev1_c8y-agent,c8y-agent,c8y-agent,down");
  g_assert_cmpint(services_agent_line("dev1", "up", buf, sizeof buf), ==,
                  C8Y_OK);
  g_assert_cmpstr(buf, ==, "102,dev1_c8y-agent,c8y-agent,c8y-agent,up");
  g_assert_cmpint(services_agent_id("dev1", buf, sizeof buf), ==, C8Y_OK);
  g_assert_cmpstr(buf, ==, "dev1_c8y-agent");
  /* Too small a buffer is an error, never a cut line. */
  g_assert_cmpint(services_will("dev1", buf, 40), ==, C8Y_EINVAL);
}

typedef struct world {
  char *dir;
  outq *q;
  upstream up;
  registry *reg;
  services *s;
} world;

static void open_world(world *w, const char *dir) {
  outq_options o;
  outq_default_options(&o, NULL);
  char err[256];
  g_assert_cmpint(outq_open(&o, &w->q, err, sizeof err), ==, 0);
  w->reg = registry_new();
  w->up = (upstream){.q = w->q, .reg = w->reg};
  g_assert_cmpint(services_new("dev1", dir, &w->up, w->reg, &w->s), ==, C8Y_OK);
}

static void close_world(world *w) {
  services_free(w->s);
  registry_free(w->reg);
  outq_close(w->q);
}

/* Everything queued, as "class topic|line" lines, oldest first. */
static GString *drain(world *w) {
  GString *all = g_string_new("");
  outq_batch b;
  while (outq_take(w->q, 16000, &b) == 1) {
    gchar **lines = g_strsplit(b.payload, "\n", -1);
    for (gchar **l = lines; *l; l++)
      g_string_append_printf(all, "%d %s|%s\n", (int)b.cls, b.topic, *l);
    g_strfreev(lines);
    outq_ack(w->q, b.id);
    outq_batch_free(&b);
  }
  return all;
}

static void expect(world *w, const char *want) {
  GString *got = drain(w);
  /* The alarm's time stamp varies: compare up to it. */
  gchar **g = g_strsplit(got->str, "\n", -1), **x = g_strsplit(want, "\n", -1);
  g_assert_cmpuint(g_strv_length(g), ==, g_strv_length(x));
  for (guint i = 0; x[i]; i++)
    if (!g_str_has_prefix(g[i], x[i]))
      g_error("line %u: got '%s', want '%s...'", i, g[i], x[i]);
  g_strfreev(g);
  g_strfreev(x);
  g_string_free(got, TRUE);
}

static void test_plugin_health(void) {
  world w = {0};
  w.dir = g_dir_make_tmp("services-XXXXXX", NULL);
  open_world(&w, w.dir);
  /* The agent's own service is one of the device's from the start. */
  g_assert_nonnull(registry_find_service(w.reg, "dev1_c8y-agent"));
  expect(&w, "");
  g_assert_cmpint(services_plugin_health(w.s, "gps", SERVICES_BY_PLUGIN, false,
                                         "no fix, antenna?"),
                  ==, C8Y_OK);
  /* The 102 and its alarm in one class, in order (1 = alarm class). */
  expect(&w, "1 s/us|102,dev1_c8y-agent_gps,c8y-agent-plugin,gps,down\n"
             "1 s/us/dev1_c8y-agent_gps|302,c8y_PluginDown,\"no fix, "
             "antenna?\",\n");
  g_assert_nonnull(registry_find_service(w.reg, "dev1_c8y-agent_gps"));
  g_assert_true(services_take_changed(w.s));
  g_assert_false(services_take_changed(w.s));
  char note[256];
  g_assert_cmpuint(services_status_note(w.s, note, sizeof note), ==, 1);
  g_assert_cmpstr(note, ==, "; plugins down: gps (no fix, antenna?)");
  /* The same again is no change. */
  services_plugin_health(w.s, "gps", SERVICES_BY_PLUGIN, false,
                         "no fix, antenna?");
  expect(&w, "");
  /* The agent's reason comes first while both say down. */
  services_plugin_health(w.s, "gps", SERVICES_BY_AGENT, false,
                         "producer x failed 5 times in a row: I/O error");
  expect(&w, "1 s/us|102,dev1_c8y-agent_gps,c8y-agent-plugin,gps,down\n"
             "1 s/us/dev1_c8y-agent_gps|302,c8y_PluginDown,producer x failed "
             "5 times in a row: I/O error,\n");
  services_plugin_health(w.s, "gps", SERVICES_BY_AGENT, true, NULL);
  expect(&w, "1 s/us|102,dev1_c8y-agent_gps,c8y-agent-plugin,gps,down\n"
             "1 s/us/dev1_c8y-agent_gps|302,c8y_PluginDown,\"no fix, "
             "antenna?\",\n");
  services_plugin_health(w.s, "gps", SERVICES_BY_PLUGIN, true, NULL);
  expect(&w, "1 s/us|102,dev1_c8y-agent_gps,c8y-agent-plugin,gps,up\n"
             "1 s/us/dev1_c8y-agent_gps|306,c8y_PluginDown\n");
  g_assert_cmpuint(services_status_note(w.s, note, sizeof note), ==, 0);
  g_assert_cmpstr(note, ==, "");
  g_assert_cmpint(
      services_plugin_health(w.s, "", SERVICES_BY_PLUGIN, true, NULL), ==,
      C8Y_EINVAL);
  close_world(&w);

  /* A later start remembers gps: up once it loads (alarm cleared). A
   * loaded plugin never reported before stays no service. */
  open_world(&w, w.dir);
  g_assert_nonnull(registry_find_service(w.reg, "dev1_c8y-agent_gps"));
  services_plugin_loaded(w.s, "other", true, false, NULL);
  services_plugin_loaded(w.s, "gps", true, false, NULL);
  services_plugins_done(w.s);
  expect(&w, "1 s/us|102,dev1_c8y-agent_gps,c8y-agent-plugin,gps,up\n"
             "1 s/us/dev1_c8y-agent_gps|306,c8y_PluginDown\n");
  close_world(&w);

  /* ... down with the loader's reason when it does not load; a failed
   * plugin is a service from then on; one whose file is gone is down
   * "not installed". */
  open_world(&w, w.dir);
  services_plugin_loaded(w.s, "broken", false, true, "init failed: I/O error");
  services_plugins_done(w.s);
  expect(&w, "1 s/us|102,dev1_c8y-agent_broken,c8y-agent-plugin,broken,down\n"
             "1 s/us/dev1_c8y-agent_broken|302,c8y_PluginDown,init failed: I/O "
             "error,\n"
             "1 s/us|102,dev1_c8y-agent_gps,c8y-agent-plugin,gps,down\n"
             "1 s/us/dev1_c8y-agent_gps|302,c8y_PluginDown,not installed,\n");
  close_world(&w);
  char *file = g_build_filename(w.dir, SERVICES_FILE, NULL);
  char *text = NULL;
  g_assert_true(g_file_get_contents(file, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "gps\nbroken\n");
  g_free(text);
  g_remove(file);
  g_free(file);
  g_rmdir(w.dir);
  g_free(w.dir);
}

/* What a plugin says in its init holds for that instance. */
static void test_reset(void) {
  world w = {0};
  open_world(&w, NULL);
  services_plugin_health(w.s, "p", SERVICES_BY_PLUGIN, false, "old");
  expect(&w, "1 s/us|102,dev1_c8y-agent_p,c8y-agent-plugin,p,down\n"
             "1 s/us/dev1_c8y-agent_p|302,c8y_PluginDown,old,\n");
  services_plugin_reset(w.s, "p");
  services_plugin_health(w.s, "p", SERVICES_BY_PLUGIN, false, "in init");
  services_plugin_loaded(w.s, "p", true, false, NULL);
  services_plugins_done(w.s);
  expect(&w, "1 s/us|102,dev1_c8y-agent_p,c8y-agent-plugin,p,down\n"
             "1 s/us/dev1_c8y-agent_p|302,c8y_PluginDown,in init,\n");
  services_plugin_reset(w.s, "p");
  services_plugin_loaded(w.s, "p", true, false, NULL);
  services_plugins_done(w.s);
  expect(&w, "1 s/us|102,dev1_c8y-agent_p,c8y-agent-plugin,p,up\n"
             "1 s/us/dev1_c8y-agent_p|306,c8y_PluginDown\n");
  close_world(&w);
}

/* A service's operations are its parent's (registry). */
static void test_service_routing(void) {
  registry *r = registry_new();
  c8y_plugin *p = (c8y_plugin *)0x1;
  int dummy;
  g_assert_cmpint(registry_add_scoped_handler(
                      r, p, NULL, "c8y_ServiceCommand", REG_SCOPE_ROOT, NULL, 0,
                      (c8y_operation_fn)0x2, &dummy, NULL),
                  ==, C8Y_OK);
  g_assert_false(registry_device_known(r, "dev1_x.service"));
  g_assert_null(
      registry_fragment_handler_for(r, "c8y_ServiceCommand", "dev1_x.service"));
  uint64_t seq = registry_child_seq(r);
  g_assert_cmpint(registry_add_service(r, p, "dev1_x.service", NULL), ==,
                  C8Y_OK);
  g_assert_cmpuint(registry_child_seq(r), >, seq);
  g_assert_true(registry_device_known(r, "dev1_x.service"));
  g_assert_true(registry_owns_service(r, p, "dev1_x.service"));
  g_assert_nonnull(
      registry_fragment_handler_for(r, "c8y_ServiceCommand", "dev1_x.service"));
  /* A service of a child nobody announced is not known. */
  g_assert_cmpint(registry_add_service(r, NULL, "kid_y.service", "kid"), ==,
                  C8Y_OK);
  g_assert_false(registry_device_known(r, "kid_y.service"));
  registry_remove_plugin(r, p);
  g_assert_false(registry_owns_service(r, p, "dev1_x.service"));
  g_assert_true(registry_device_known(r, "dev1_x.service"));
  registry_free(r);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/services/will", test_will);
  g_test_add_func("/services/plugin-health", test_plugin_health);
  g_test_add_func("/services/reset", test_reset);
  g_test_add_func("/services/routing", test_service_routing);
  return g_test_run();
}
