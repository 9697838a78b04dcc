/* The shell plugin against the real plugin host (testhost). */
#include "plugin_test_util.h"
#include "testhost.h"

#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A host with the plugin loaded and allow = true plus extra key/values. */
static testhost *load_allowed(const char *const *kv) {
  testhost *h = testhost_new("dev1", NULL);
  testhost_set_config(h, "allow", "true");
  for (; kv && kv[0]; kv += 2)
    testhost_set_config(h, kv[0], kv[1]);
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_true(testhost_has_operation(h, "511"));
  return h;
}

/* Runs "511,dev1,<encoded command>". */
static testhost_op_state run(testhost *h, const char *encoded, int timeout_ms) {
  char *line = g_strdup_printf("511,dev1,%s", encoded);
  testhost_op_state st = testhost_run_operation(h, line, timeout_ms);
  g_free(line);
  return st;
}

static void test_disabled_by_default(void) {
  testhost *h = testhost_new("dev1", NULL);
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_false(testhost_has_operation(h, "511"));
  g_assert_nonnull(
      testhost_find_log(h, "notice plugin shell: c8y_Command is disabled"));
  /* The engine leaves an operation nobody serves untouched (no 501/502):
   * another agent or the user may handle it. */
  g_assert_cmpint(testhost_run_operation(h, "511,dev1,id", 200), ==,
                  TESTHOST_OP_RUNNING);
  g_assert_nonnull(testhost_find_log(h, "no handler for template 511"));
  g_assert_cmpuint(testhost_line_count(h), ==, 0);
  testhost_free(h);

  h = testhost_new("dev1", NULL);
  testhost_set_config(h, "allow", "false");
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_false(testhost_has_operation(h, "511"));
  testhost_free(h);
}

static void test_registers(void) {
  testhost *h = load_allowed((const char *[]){"timeout", "5", NULL});
  /* The agent's timeout is a backstop behind the plugin's own. */
  g_assert_cmpuint(testhost_operation_timeout(h, "511"), >, 5000);
  g_assert_null(testhost_find_log(h, "unknown key"));
  testhost_free(h);
}

static void test_stdout_and_stderr(void) {
  testhost *h = load_allowed(NULL);
  g_assert_cmpint(run(h, "echo hi; echo err >&2; exit 0", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  const char *out = testhost_op_detail(h);
  g_assert_nonnull(strstr(out, "hi\n"));
  g_assert_nonnull(strstr(out, "err\n"));
  g_assert_cmpuint(testhost_op_param_count(h), ==, 1);
  g_assert_cmpstr(testhost_op_param(h, 0), ==, out);
  testhost_free(h);
}

static void test_exit_status(void) {
  testhost *h = load_allowed(NULL);
  g_assert_cmpint(run(h, "exit 3", 10000), ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "exit status 3");
  g_assert_cmpint(run(h, "echo first; echo oops >&2; exit 7", 10000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "exit status 7: first\noops");
  g_assert_cmpint(run(h, "kill -9 $$", 10000), ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "killed by signal 9");
  testhost_free(h);
}

/* The failure reason quotes only the end of a long output. */
static void test_failure_tail(void) {
  testhost *h = load_allowed(NULL);
  g_assert_cmpint(
      run(h,
          "i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done; "
          "exit 1",
          10000),
      ==, TESTHOST_OP_FAILED);
  const char *d = testhost_op_detail(h);
  g_assert_true(g_str_has_prefix(d, "exit status 1: ..."));
  g_assert_true(g_str_has_suffix(d, "\nline499"));
  g_assert_null(strstr(d, "line0\n"));
  g_assert_cmpuint(strlen(d), <, 1100);
  testhost_free(h);
}

static void test_timeout(void) {
  testhost *h = load_allowed((const char *[]){"timeout", "1", NULL});
  gint64 t0 = g_get_monotonic_time();
  g_assert_cmpint(run(h, "echo started; sleep 10", 8000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
  g_assert_cmpstr(testhost_op_detail(h), ==, "timed out after 1 s");
  testhost_free(h);
}

static bool process_alive(pid_t pid) {
  char path[64], *stat = NULL;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if (!g_file_get_contents(path, &stat, NULL, NULL))
    return false;
  /* A zombie nobody reaped (no init in a container) counts as dead. */
  const char *rp = strrchr(stat, ')');
  bool alive = rp && rp[1] == ' ' && rp[2] != 'Z';
  g_free(stat);
  return alive;
}

/* The whole process group dies on timeout, not just the shell. */
static void test_timeout_kills_group(void) {
  char *dir = ptu_make_tmpdir("c8y-shell");
  char *pidfile = g_build_filename(dir, "pid", NULL);
  testhost *h = load_allowed((const char *[]){"timeout", "1", NULL});
  char *cmd = g_strdup_printf("sleep 30 & echo $! > %s; wait", pidfile);
  g_assert_cmpint(run(h, cmd, 8000), ==, TESTHOST_OP_FAILED);
  char *text = NULL;
  g_assert_true(g_file_get_contents(pidfile, &text, NULL, NULL));
  pid_t pid = (pid_t)atoi(text);
  g_assert_cmpint(pid, >, 1);
  bool alive = true;
  for (int i = 0; i < 50 && alive; i++) {
    alive = process_alive(pid);
    if (alive)
      g_usleep(100 * 1000);
  }
  if (alive)
    kill(pid, SIGKILL);
  g_assert_false(alive);
  testhost_free(h);
  g_free(text);
  g_free(cmd);
  ptu_rm_rf(dir);
  g_free(pidfile);
  g_free(dir);
}

static void test_output_cap(void) {
  testhost *h = load_allowed((const char *[]){"max_output", "10", NULL});
  g_assert_cmpint(run(h, "printf abcdefghijklmnopqrstuvwxyz", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "abcdefghij...[truncated]");
  /* Exactly max_output: not truncated. */
  g_assert_cmpint(run(h, "printf 0123456789", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "0123456789");
  /* A quote is sent doubled, so it counts twice. */
  g_assert_cmpint(run(h, "\"printf '\\\"\\\"\\\"\\\"\\\"\\\"\\\"'\"", 10000),
                  ==, TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "\"\"\"\"\"...[truncated]");
  /* A multi-byte character is never cut in half (ä is 2 bytes). */
  g_assert_cmpint(run(h, "printf 'abcdefghi\xc3\xa4xyz'", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "abcdefghi...[truncated]");
  testhost_free(h);
}

/* A large output keeps being drained, so the command does not block on a
 * full pipe. */
static void test_output_cap_large(void) {
  testhost *h = load_allowed(NULL);
  g_assert_cmpint(run(h, "head -c 1000000 /dev/zero | tr '\\0' x", 20000), ==,
                  TESTHOST_OP_SUCCEEDED);
  const char *d = testhost_op_detail(h);
  g_assert_cmpuint(strlen(d), ==, 8000 + strlen("...[truncated]"));
  g_assert_true(g_str_has_suffix(d, "xxx...[truncated]"));
  testhost_free(h);
}

static void test_multiline(void) {
  testhost *h = load_allowed(NULL);
  /* As the platform sends it: a quoted field with real LFs and \" quotes. */
  g_assert_cmpint(
      run(h, "\"echo one\necho \\\"two, three\\\"\nexit 0\"", 10000), ==,
      TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "one\ntwo, three\n");
  testhost_free(h);
}

static void test_stdin_is_devnull(void) {
  testhost *h = load_allowed(NULL);
  g_assert_cmpint(run(h, "cat; echo done", 10000), ==, TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "done\n");
  testhost_free(h);
}

static void test_no_command(void) {
  testhost *h = load_allowed(NULL);
  g_assert_cmpint(testhost_run_operation(h, "511,dev1,", 5000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "no command text");
  g_assert_cmpint(testhost_run_operation(h, "511,dev1", 5000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "no command text");
  testhost_free(h);
}

static void test_cancel(void) {
  testhost *h = load_allowed(NULL);
  g_assert_cmpint(run(h, "sleep 30", 300), ==, TESTHOST_OP_RUNNING);
  gint64 t0 = g_get_monotonic_time();
  testhost_cancel_operation(h);
  g_assert_true(testhost_wait_op_done(h, 8000));
  g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
  /* The stop's reason first, then what the plugin did (not "timed out"). */
  g_assert_cmpstr(testhost_op_detail(h), ==,
                  "agent stopped: the command was killed");
  testhost_free(h);
}

static void test_other_shell(void) {
  testhost *h = load_allowed((const char *[]){"shell", "/bin/bash", NULL});
  g_assert_cmpint(run(h, "echo $BASH_VERSION", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_detail(h), !=, "\n");
  testhost_free(h);
}

static void test_user(void) {
  if (geteuid() != 0) {
    testhost *h = testhost_new("dev1", NULL);
    testhost_set_config(h, "allow", "true");
    testhost_set_config(h, "user", "nobody");
    g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_EINVAL);
    g_assert_nonnull(testhost_find_log(h, "not root"));
    testhost_free(h);
    return;
  }
  testhost *h = load_allowed((const char *[]){"user", "nobody", NULL});
  g_assert_cmpint(run(h, "id -un; id -u; echo $USER", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_detail(h), ==, "nobody\n65534\nnobody\n");
  testhost_free(h);
}

static void test_bad_config(void) {
  const char *bad[][3] = {
      {"allow", "maybe", "allow: not a boolean"},
      {"timeout", "0", "timeout: "},
      {"timeout", "1m", "timeout: not an integer"},
      {"max_output", "15001", "max_output: "},
      {"max_output", "0", "max_output: "},
      {"shell", "/nonexistent/sh", "shell: "},
      {"shell", "sh", "shell: "},
      {"user", "no_such_user_c8y", "user: no such user 'no_such_user_c8y'"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    testhost *h = testhost_new("dev1", NULL);
    testhost_set_config(h, "allow", "true");
    testhost_set_config(h, bad[i][0], bad[i][1]);
    g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_EINVAL);
    if (!testhost_find_log(h, bad[i][2]))
      g_error("%s=%s: no log with '%s'", bad[i][0], bad[i][1], bad[i][2]);
    g_assert_false(testhost_has_operation(h, "511"));
    testhost_free(h);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/plugin/shell/disabled-by-default",
                  test_disabled_by_default);
  g_test_add_func("/plugin/shell/registers", test_registers);
  g_test_add_func("/plugin/shell/stdout-and-stderr", test_stdout_and_stderr);
  g_test_add_func("/plugin/shell/exit-status", test_exit_status);
  g_test_add_func("/plugin/shell/failure-tail", test_failure_tail);
  g_test_add_func("/plugin/shell/timeout", test_timeout);
  g_test_add_func("/plugin/shell/timeout-kills-group",
                  test_timeout_kills_group);
  g_test_add_func("/plugin/shell/output-cap", test_output_cap);
  g_test_add_func("/plugin/shell/output-cap-large", test_output_cap_large);
  g_test_add_func("/plugin/shell/multiline", test_multiline);
  g_test_add_func("/plugin/shell/stdin-is-devnull", test_stdin_is_devnull);
  g_test_add_func("/plugin/shell/no-command", test_no_command);
  g_test_add_func("/plugin/shell/cancel", test_cancel);
  g_test_add_func("/plugin/shell/other-shell", test_other_shell);
  g_test_add_func("/plugin/shell/user", test_user);
  g_test_add_func("/plugin/shell/bad-config", test_bad_config);
  return g_test_run();
}
