/* The restart plugin against the real plugin host (testhost). The reboot
 * "commands" are harmless shell snippets (true/false/echo). */
#include "plugin_test_util.h"
#include "testhost.h"

#include <glib.h>
#include <string.h>

static testhost *load(const char *command, const char *delay) {
  testhost *h = testhost_new("dev1", NULL);
  if (command)
    testhost_set_config(h, "command", command);
  if (delay)
    testhost_set_config(h, "delay", delay);
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_true(testhost_has_operation(h, "510"));
  return h;
}

static void test_registers(void) {
  testhost *h = load(NULL, NULL);
  g_assert_null(testhost_find_log(h, "unknown key"));
  /* Room for a slow shutdown: well above the command's run time. */
  g_assert_cmpuint(testhost_operation_timeout(h, "510"), >=, 60000);
  testhost_free(h);
}

static void test_command_fails(void) {
  testhost *h = load("false", NULL);
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 5000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(h), ==,
                  "reboot command 'false' exited with status 1");
  /* complete_on_reboot is armed before the command runs. */
  g_assert_true(testhost_op_reboot_requested(h));
  testhost_free(h);
}

static void test_command_stderr(void) {
  testhost *h = load("echo 'no permission' >&2; echo second >&2; exit 4", NULL);
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 5000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(h), ==,
                  "reboot command 'echo 'no permission' >&2; echo second >&2; "
                  "exit 4' exited with status 4: no permission");
  testhost_free(h);
}

static void test_command_missing(void) {
  testhost *h = load("/nonexistent/reboot", NULL);
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 5000), ==,
                  TESTHOST_OP_FAILED);
  const char *d = testhost_op_detail(h);
  g_assert_true(g_str_has_prefix(
      d, "reboot command '/nonexistent/reboot' exited with status 127: "));
  g_assert_nonnull(strstr(d, "/nonexistent/reboot"));
  testhost_free(h);
}

/* Success: the operation stays pending; the agent completes it after the
 * reboot. */
static void test_command_succeeds(void) {
  testhost *h = load("true", NULL);
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 300), ==,
                  TESTHOST_OP_RUNNING);
  g_assert_true(testhost_handler_returned(h));
  g_assert_true(testhost_op_reboot_requested(h));
  testhost_unload(h);
  g_assert_cmpint(testhost_op_state_now(h), ==, TESTHOST_OP_RUNNING);
  g_assert_null(testhost_find_log(h, "still pending"));
  testhost_free(h);
}

/* With a delay the handler returns at once and the command runs later on a
 * plugin thread, which may fail the operation. */
static void test_delay_then_fail(void) {
  testhost *h = load("exit 9", "1");
  gint64 t0 = g_get_monotonic_time();
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 200), ==,
                  TESTHOST_OP_RUNNING);
  g_assert_true(testhost_handler_returned(h));
  g_assert_true(testhost_wait_op_done(h, 5000));
  g_assert_cmpint(g_get_monotonic_time() - t0, >=, 900 * 1000);
  g_assert_cmpint(testhost_op_state_now(h), ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(h), ==,
                  "reboot command 'exit 9' exited with status 9");
  testhost_free(h);
}

static void test_delay_second_request(void) {
  testhost *h = load("true", "30");
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 100), ==,
                  TESTHOST_OP_RUNNING);
  /* The engine runs one operation per fragment and device at a time: the
   * second waits behind the first (no second 501) instead of reaching the
   * plugin. */
  testhost_clear_lines(h);
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 300), ==,
                  TESTHOST_OP_RUNNING);
  g_assert_null(testhost_find_line(h, "501,"));
  testhost_free(h); /* fini interrupts the 30 s wait */
}

/* fini during the delay: the plugin fails the operation and joins. */
static void test_delay_unload(void) {
  testhost *h = load("true", "30");
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 100), ==,
                  TESTHOST_OP_RUNNING);
  gint64 t0 = g_get_monotonic_time();
  testhost_unload(h);
  g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
  g_assert_cmpint(testhost_op_state_now(h), ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(h), "stopped"));
  testhost_free(h);
}

/* A hanging command is killed when the agent times the operation out. */
static void test_cancel(void) {
  testhost *h = load("sleep 30", NULL);
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 300), ==,
                  TESTHOST_OP_RUNNING);
  gint64 t0 = g_get_monotonic_time();
  testhost_advance(h, testhost_operation_timeout(h, "510") + 1000);
  /* The plugin is told (op_cancelled) and may still say why within the
   * stop grace; the 502 follows at once when it does. */
  g_assert_true(testhost_wait_op_done(h, 10000));
  g_assert_cmpint(testhost_op_state_now(h), ==, TESTHOST_OP_FAILED);
  g_assert_true(g_str_has_prefix(testhost_op_detail(h), "operation timed out"));
  /* The plugin notices (op_cancelled) and its worker stops in time. */
  testhost_free(h);
  g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
}

static void test_bad_config(void) {
  const char *bad[][3] = {{"delay", "-1", "delay: "},
                          {"delay", "3601", "delay: "},
                          {"delay", "soon", "delay: not an integer"},
                          {"command", "", "command: "},
                          {"command", "  ", "command: "}};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    testhost *h = testhost_new("dev1", NULL);
    testhost_set_config(h, bad[i][0], bad[i][1]);
    g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_EINVAL);
    if (!testhost_find_log(h, bad[i][2]))
      g_error("%s=%s: no log with '%s'", bad[i][0], bad[i][1], bad[i][2]);
    g_assert_false(testhost_has_operation(h, "510"));
    testhost_free(h);
  }
}

/* Through the privileged helper (canned answers: nothing is ever run). */
static testhost *load_helper(const char *dir, const char *reply, ptu_priv **srv,
                             char **reqlog) {
  char *sock = g_build_filename(dir, "priv.sock", NULL);
  *reqlog = g_build_filename(dir, "requests", NULL);
  *srv = ptu_priv_start(sock, NULL, NULL, reply, *reqlog);
  testhost *h = testhost_new("dev1", NULL);
  testhost_set_config(h, "command", "false"); /* not used with the helper */
  testhost_set_config(h, "privileged", "helper");
  testhost_set_config(h, "helper_socket", sock);
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_free(sock);
  return h;
}

static void test_helper_reboots(void) {
  char *dir = ptu_make_tmpdir("c8y-restart");
  ptu_priv *srv;
  char *reqlog;
  testhost *h = load_helper(dir, "=c8y-agent-priv status 0\n", &srv, &reqlog);
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 5000), ==,
                  TESTHOST_OP_RUNNING);
  g_assert_true(testhost_op_reboot_requested(h));
  char *req = ptu_read_text(reqlog);
  g_assert_cmpstr(req, ==, "reboot\n");
  g_free(req);
  testhost_free(h);
  ptu_priv_stop(srv);
  ptu_rm_rf(dir);
  g_free(reqlog);
  g_free(dir);
}

static void test_helper_fails(void) {
  char *dir = ptu_make_tmpdir("c8y-restart");
  ptu_priv *srv;
  char *reqlog;
  testhost *h = load_helper(dir,
                            "Failed to reboot: Access denied\n"
                            "=c8y-agent-priv status 1\n",
                            &srv, &reqlog);
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 5000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(h), ==,
                  "reboot through the privileged helper failed: exit 1: "
                  "Failed to reboot: Access denied");
  testhost_free(h);
  ptu_priv_stop(srv);
  /* A helper that answers without a status line is not a success. */
  g_free(reqlog);
  h = load_helper(dir, "garbage\n", &srv, &reqlog);
  g_assert_cmpint(testhost_run_operation(h, "510,dev1", 5000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(h), "without a status line"));
  testhost_free(h);
  ptu_priv_stop(srv);
  ptu_rm_rf(dir);
  g_free(reqlog);
  g_free(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/plugin/restart/registers", test_registers);
  g_test_add_func("/plugin/restart/command-fails", test_command_fails);
  g_test_add_func("/plugin/restart/command-stderr", test_command_stderr);
  g_test_add_func("/plugin/restart/command-missing", test_command_missing);
  g_test_add_func("/plugin/restart/command-succeeds", test_command_succeeds);
  g_test_add_func("/plugin/restart/delay-then-fail", test_delay_then_fail);
  g_test_add_func("/plugin/restart/delay-second-request",
                  test_delay_second_request);
  g_test_add_func("/plugin/restart/delay-unload", test_delay_unload);
  g_test_add_func("/plugin/restart/cancel", test_cancel);
  g_test_add_func("/plugin/restart/bad-config", test_bad_config);
  g_test_add_func("/plugin/restart/helper/reboots", test_helper_reboots);
  g_test_add_func("/plugin/restart/helper/fails", test_helper_fails);
  return g_test_run();
}
