/* A plugin built against the ABI 1.1 header as released (old11, compiled
 * with tests/sdk/v1_1) works with the current agent: it loads, its 511
 * handler runs, and its 1.1-sized transfer structs are accepted and filled
 * no further than they reach. */
#include "fixture.h"
#include "sim_http.h"

#include <c8y/plugin.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

typedef struct cx {
  fx f;
  sim_http *h;
  char *dir;
} cx;

static void cx_up(cx *x) {
  x->dir = g_dir_make_tmp("c8y-abi-XXXXXX", NULL);
  g_assert_nonnull(x->dir);
  fx_start_sim(&x->f);
  sim_http_options ho = {
      .mqtt = x->f.s, .tenant = "t1", .user = "device", .password = "secret"};
  char err[256];
  if (sim_http_start(&ho, &x->h, err, sizeof err) != 0)
    g_error("sim_http: %s", err);
  char *ini = g_strdup_printf("[c8y]\nhttp_url = %s\n", sim_http_url(x->h));
  x->f.plugin_dir = OLD11_PLUGIN_DIR;
  fx_make_agent(&x->f, "secret", ini);
  g_free(ini);
  fx_start_connected(&x->f);
}

static void cx_down(cx *x) {
  sim *s = x->f.s;
  x->f.s = NULL;
  fx_down(&x->f);
  sim_http_stop(x->h);
  if (s)
    sim_stop(s);
  fx_rm_rf(x->dir);
  g_free(x->dir);
}

static int run(cx *x, const char *text, const char **detail) {
  char *line = g_strdup_printf("511," FX_DEVICE ",\"%s\"", text);
  long id = sim_create_operation(x->f.s, line);
  g_free(line);
  int st = fx_wait_op(&x->f, id, 60000);
  *detail = sim_operation_detail(x->f.s, id);
  return st;
}

static void test_plugin_1_1(void) {
  cx x = {0};
  cx_up(&x);
  char *table = g_strdup_printf("old11: agent abi 1.%d, table %zu bytes",
                                C8Y_ABI_MINOR, sizeof(c8y_api));
  g_assert_true(agent_proc_wait_log(x.f.a, table, 5000));
  g_free(table);
  char *path = g_build_filename(x.dir, "payload.bin", NULL);
  g_assert_true(g_file_set_contents(path, "0123456789", 10, NULL));
  long bin = sim_http_add_binary(x.h, path);
  char *cmd = g_strdup_printf("download %s/inventory/binaries/%ld",
                              sim_http_url(x.h), bin);
  const char *detail = NULL;
  g_assert_cmpint(run(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  /* The 1.1 struct, as the plugin built it (the struct has not grown). */
  char *want =
      g_strdup_printf("bytes=10 file=old11.bin size=%zu", sizeof(c8y_download));
  g_assert_cmpstr(detail, ==, want);
  g_free(want);
  g_free(cmd);
  cmd = g_strdup_printf("upload %s", path);
  g_assert_cmpint(run(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  g_assert_nonnull(strstr(detail, "/binaries"));
  g_assert_cmpstr(sim_http_event_type(x.h, 0), ==, "old11_File");
  g_free(cmd);
  g_free(path);
  cx_down(&x);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/abi/plugin-built-for-1.1", test_plugin_1_1);
  return g_test_run();
}
