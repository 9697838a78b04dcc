/* A plugin built only from the installed SDK files (pkg-config,
 * out of tree; tests/sdk/oot_build.sh) loads into the agent and handles an
 * operation end to end through the broker. */
#include "fixture.h"

#include <gio/gio.h>
#include <glib/gstdio.h>

static void test_oot_relay(void) {
  const char *so = OOT_PLUGIN;
  if (!g_file_test(so, G_FILE_TEST_EXISTS)) {
    g_test_skip("the out-of-tree plugin was not built (run the sdk tests)");
    return;
  }
  /* A plugin dir holding nothing but the out-of-tree build. */
  char *dir = g_dir_make_tmp("c8y-oot-XXXXXX", NULL);
  g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
  char *dst = g_build_filename(dir, "oot_relay.so", NULL);
  char *bytes = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(so, &bytes, &len, NULL));
  g_assert_true(g_file_set_contents(dst, bytes, (gssize)len, NULL));
  g_assert_cmpint(g_chmod(dst, 0755), ==, 0);
  g_free(bytes);

  fx f = {.plugin_dir = dir};
  fx_up(&f, NULL);
  char *supported = NULL;
  g_assert_cmpint(fx_line_pos(&f, "s/us", "114,", &supported), >=, 0);
  g_assert_cmpstr(supported, ==, "114,c8y_Relay");
  g_free(supported);
  long open = sim_create_operation(f.s, "518," FX_DEVICE ",OPEN");
  g_assert_cmpint(fx_wait_op(&f, open, 10000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "400,oot_relay,", 0, 5000), >=, 0);
  long bad = sim_create_operation(f.s, "518," FX_DEVICE ",HALF");
  g_assert_cmpint(fx_wait_op(&f, bad, 10000), ==, SIM_OP_FAILED);
  fx_down(&f);
  g_unlink(dst);
  g_rmdir(dir);
  g_free(dst);
  g_free(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/out-of-tree/relay", test_oot_relay);
  return g_test_run();
}
