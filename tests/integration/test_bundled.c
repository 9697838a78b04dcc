/* The bundled plugins inside the real agent, driven through the
 * simulator: what an operator sees after installing the package. */
#include "fixture.h"

#include <glib/gstdio.h>

typedef struct bundled {
  fx f;
  char *dir; /* scratch files the plugins work on */
} bundled;

static void bundled_up(bundled *b) {
  b->dir = g_dir_make_tmp("c8y-bundled-XXXXXX", NULL);
  g_assert_nonnull(b->dir);
  char *text = g_build_filename(b->dir, "device.txt", NULL);
  g_assert_true(g_file_set_contents(text, "mode=eco\n", -1, NULL));
  char *extra = g_strdup_printf(
      "[plugin.shell]\nallow = true\ntimeout = 10\n"
      "[plugin.restart]\ncommand = true\n"
      "[plugin.system_metrics]\ninterval = 1\n"
      "[plugin.configuration]\ntext_file = %s\n"
      "[plugin.software]\nlist_command = printf "
      "'nginx\\t1.22\\ncurl\\t7.88\\n'\n"
      "type = apt\ninstall_command = echo install {name} {version}\n"
      "remove_command = echo remove {name}\n" FX_AS_PACKAGED,
      text);
  b->f.plugin_dir = g_getenv("C8Y_PLUGIN_OUT");
  g_assert_nonnull(b->f.plugin_dir);
  fx_up(&b->f, extra);
  g_free(extra);
  g_free(text);
}

static void bundled_down(bundled *b) {
  fx_down(&b->f);
  char *text = g_build_filename(b->dir, "device.txt", NULL);
  g_unlink(text);
  g_free(text);
  g_rmdir(b->dir);
  g_free(b->dir);
}

static const char *payload_of(sim *s, const char *prefix) {
  long at = sim_wait_line(s, "s/us", prefix, 0, 10000);
  return at >= 0 ? sim_message_at(s, (size_t)at)->payload : NULL;
}

static void test_announce_and_data(void) {
  bundled b = {0};
  bundled_up(&b);
  const char *ops = payload_of(b.f.s, "114,");
  g_assert_nonnull(ops);
  const char *expected[] = {"c8y_Command", "c8y_Restart", "c8y_Configuration",
                            "c8y_SoftwareUpdate",
                            "c8y_MeasurementRequestOperation"};
  for (size_t i = 0; i < G_N_ELEMENTS(expected); i++)
    if (!strstr(ops, expected[i]))
      g_error("114 lacks %s: %s", expected[i], ops);
  g_assert_nonnull(payload_of(b.f.s, "113,"));
  g_assert_nonnull(payload_of(b.f.s, "143,apt"));
  const char *list = payload_of(b.f.s, "140,");
  g_assert_nonnull(list);
  g_assert_nonnull(strstr(list, "nginx,1.22,apt"));
  g_assert_nonnull(strstr(list, "curl,7.88,apt"));
  /* system_metrics every second */
  g_assert_cmpint(
      sim_wait_line(b.f.s, "s/us", "201,c8y_SystemMetrics", 0, 10000), >=, 0);
  /* With every bundled plugin loaded, nothing transferred or tunnelled and
   * no unit watched, neither libcurl nor libwebsockets nor libsystemd is
   * mapped: they are loaded on first use (agent/src/libcurl.c,
   * plugins/remote_access/ra_lws.c, plugins/services/svc_sdbus.c). */
  char maps_path[64];
  snprintf(maps_path, sizeof maps_path, "/proc/%d/maps",
           (int)agent_proc_pid(b.f.a));
  gchar *maps = NULL;
  g_assert_true(g_file_get_contents(maps_path, &maps, NULL, NULL));
  g_assert_nonnull(strstr(maps, "remote_access.so"));
  g_assert_null(strstr(maps, "/libcurl"));
  g_assert_null(strstr(maps, "/libwebsockets"));
  g_assert_nonnull(strstr(maps, "services.so"));
  g_assert_null(strstr(maps, "/libsystemd"));
  g_free(maps);
  bundled_down(&b);
}

static void test_operations(void) {
  bundled b = {0};
  bundled_up(&b);
  long sh = sim_create_operation(b.f.s, "511," FX_DEVICE ",echo hello; exit 0");
  g_assert_cmpint(fx_wait_op(&b.f, sh, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_nonnull(strstr(sim_operation_detail(b.f.s, sh), "hello"));
  long bad = sim_create_operation(b.f.s, "511," FX_DEVICE ",exit 3");
  g_assert_cmpint(fx_wait_op(&b.f, bad, 15000), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(sim_operation_detail(b.f.s, bad), "3"));

  size_t before = sim_message_count(b.f.s);
  long cfg =
      sim_create_operation(b.f.s, "513," FX_DEVICE ",\"mode=turbo\nfan=on\"");
  g_assert_cmpint(fx_wait_op(&b.f, cfg, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpint(sim_wait_line(b.f.s, "s/us", "113,", before, 5000), >=, 0);
  char *path = g_build_filename(b.dir, "device.txt", NULL);
  char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "mode=turbo\nfan=on");
  g_free(text);
  g_free(path);

  long sw = sim_create_operation(b.f.s, "528," FX_DEVICE
                                        ",jq,1.6,,install,curl,7.88,,delete");
  g_assert_cmpint(fx_wait_op(&b.f, sw, 15000), ==, SIM_OP_SUCCESSFUL);

  long load = sim_create_operation(b.f.s, "517," FX_DEVICE ",LOAD");
  g_assert_cmpint(fx_wait_op(&b.f, load, 15000), ==, SIM_OP_SUCCESSFUL);
  bundled_down(&b);
}

static void test_restart_completes_after_reboot(void) {
  char *boot = fx_boot_id_file("first-boot\n");
  g_setenv("C8Y_BOOT_ID_FILE", boot, TRUE);
  bundled b = {0};
  bundled_up(&b);
  long op = sim_create_operation(b.f.s, "510," FX_DEVICE);
  /* Logged once the reboot is tracked (journaled) and the command ran: a
   * stop before that would fail the operation, which is not this test. */
  g_assert_true(
      agent_proc_wait_log(b.f.a, "reboot command 'true' started", 20000));
  g_assert_cmpint(fx_status_after_start(&b.f, op), ==, SIM_OP_EXECUTING);
  g_usleep(500 * 1000); /* a window for a wrong completion: none comes */
  g_assert_cmpint(sim_operation_status(b.f.s, op), ==, SIM_OP_EXECUTING);
  /* "Reboot": the agent stops with the machine, a new boot id appears. */
  agent_proc_stop(b.f.a, 10000);
  g_assert_true(g_file_set_contents(boot, "second-boot\n", -1, NULL));
  fx_start_agent(&b.f);
  g_assert_cmpint(fx_wait_op(&b.f, op, 15000), ==, SIM_OP_SUCCESSFUL);
  bundled_down(&b);
  g_unsetenv("C8Y_BOOT_ID_FILE");
  fx_boot_id_free(boot);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/bundled/announce-and-data", test_announce_and_data);
  g_test_add_func("/bundled/operations", test_operations);
  g_test_add_func("/bundled/restart-completes-after-reboot",
                  test_restart_completes_after_reboot);
  return g_test_run();
}
