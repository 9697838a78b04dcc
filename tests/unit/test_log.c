/* log: one record per line; journald priority prefixes under systemd. */
#include "log.h"

#include <glib.h>
#include <stdlib.h>

static void test_journald_prefix(void) {
  if (g_test_subprocess()) {
    g_setenv("JOURNAL_STREAM", "8:1234", TRUE);
    log_set_level(LOG_LVL_DEBUG);
    log_error("broken %d", 1);
    log_warning("careful");
    log_info("two\nlines");
    log_debug("details");
    exit(0);
  }
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr(
      "<3>broken 1\n<4>careful\n<6>two lines\n<7>details\n");
}

static void test_plain_and_level(void) {
  if (g_test_subprocess()) {
    g_unsetenv("JOURNAL_STREAM");
    log_set_level(LOG_LVL_WARNING);
    log_error("shown");
    log_info("hidden");
    exit(0);
  }
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr("c8y-agent[error] shown\n");
}

static void test_control_bytes_escaped(void) {
  if (g_test_subprocess()) {
    g_unsetenv("JOURNAL_STREAM");
    log_set_level(LOG_LVL_INFO);
    log_warning("id '%s'", "a\x1b[2Jb\x7f\tc\r\nd");
    exit(0);
  }
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr("c8y-agent[warning] id 'a\\x1b[2Jb\\x7f\tc  d'\n");
}

static void test_level_names(void) {
  g_assert_cmpint(log_level_from_name("debug"), ==, LOG_LVL_DEBUG);
  g_assert_cmpint(log_level_from_name("WARN"), ==, LOG_LVL_WARNING);
  g_assert_cmpint(log_level_from_name("loud"), ==, -1);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/log/journald-prefix", test_journald_prefix);
  g_test_add_func("/log/plain-and-level", test_plain_and_level);
  g_test_add_func("/log/level-names", test_level_names);
  g_test_add_func("/log/control-bytes-escaped", test_control_bytes_escaped);
  return g_test_run();
}
