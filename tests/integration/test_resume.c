/* SDK 1.1 op_resume_after_restart end to end: an operation whose handler
 * asked to be resumed survives a graceful stop, a kill -9 and a reboot of
 * the agent, reaches the handler again with its fields and without a second
 * 501, and fails with a clear reason when no handler is left for it. */
#include "fixture.h"

#include <glib/gstdio.h>
#include <stdio.h>

static void write_boot_id(const char *path, const char *id) {
  g_assert_true(g_file_set_contents(path, id, -1, NULL));
}

static int count_in_log(fx *f, const char *needle) {
  char *log = agent_proc_log(f->a);
  int n = 0;
  for (const char *p = log; (p = strstr(p, needle)); p++)
    n++;
  g_free(log);
  return n;
}

/* Creates "511,dev1,resume <tag>" and waits until the handler armed it
 * (which happens after the journal recorded the operation). */
static long arm(fx *f, const char *tag, int armed_before) {
  char *line = g_strdup_printf("511," FX_DEVICE ",resume %s", tag);
  long id = sim_create_operation(f->s, line);
  g_free(line);
  g_assert_cmpint(id, >, 0);
  g_assert_true(agent_proc_wait_log_count(f->a, "itest: resume armed",
                                          armed_before + 1, 20000));
  g_assert_cmpint(fx_status_after_start(f, id), ==, SIM_OP_EXECUTING);
  return id;
}

static void test_resume_after_stop_kill_and_reboot(void) {
  fx f = {0};
  char *boot = fx_boot_id_file("boot-1\n");
  g_setenv("C8Y_BOOT_ID_FILE", boot, TRUE);
  fx_up(&f, NULL);

  /* 1. A graceful stop (an agent upgrading itself): the same boot. */
  long a = arm(&f, "first", 0);
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  g_assert_cmpint(fx_status_after_start(&f, a), ==, SIM_OP_EXECUTING);
  fx_start_agent(&f);
  g_assert_cmpint(fx_wait_op(&f, a, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, a), ==, "resumed rebooted=0 first");
  /* Its 501 was sent once, before the restart. */
  g_assert_cmpuint(sim_count_lines(f.s, "s/us", "501,c8y_Command"), ==, 1);

  /* 2. kill -9 and a new boot id (the machine rebooted). */
  long b = arm(&f, "second", 1);
  agent_proc_kill(f.a);
  write_boot_id(boot, "boot-2\n");
  fx_start_agent(&f);
  g_assert_cmpint(fx_wait_op(&f, b, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, b), ==,
                  "resumed rebooted=1 second");
  g_assert_cmpuint(sim_count_lines(f.s, "s/us", "501,c8y_Command"), ==, 2);

  /* 3. Completed operations are not resumed again (the log accumulates
   * over the restarts: two resumes so far). */
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  size_t seen = sim_message_count(f.s);
  fx_start_agent(&f);
  g_assert_true(sim_wait_line(f.s, "s/us", "500", seen, 15000) >= 0);
  g_assert_cmpint(count_in_log(&f, "resumed after the restart"), ==, 2);

  fx_down(&f);
  g_unsetenv("C8Y_BOOT_ID_FILE");
  fx_boot_id_free(boot);
}

/* Replaces `from` by `to` in the agent's config file (mode kept 0600). */
static void edit_config(fx *f, const char *from, const char *to) {
  char *ini = NULL;
  g_assert_true(g_file_get_contents(agent_proc_config(f->a), &ini, NULL, NULL));
  char **parts = g_strsplit(ini, from, 2);
  g_assert_nonnull(parts[1]);
  char *fresh = g_strconcat(parts[0], to, parts[1], NULL);
  g_assert_true(g_file_set_contents(agent_proc_config(f->a), fresh, -1, NULL));
  g_chmod(agent_proc_config(f->a), 0600);
  g_strfreev(parts);
  g_free(fresh);
  g_free(ini);
}

/* After the restart no plugin handles the template any more. */
static void test_resume_without_handler_fails(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long a = arm(&f, "orphan", 0);
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  /* The same state dir, but a plugin directory without the plugin. */
  char *empty = g_build_filename(agent_proc_dir(f.a), "no-plugins", NULL);
  g_assert_cmpint(g_mkdir(empty, 0700), ==, 0);
  char *from = g_strdup_printf("plugin_dir = %s\n", ITEST_PLUGIN_DIR);
  char *to = g_strdup_printf("plugin_dir = %s\n", empty);
  edit_config(&f, from, to);
  fx_start_agent(&f);
  g_assert_cmpint(fx_wait_op(&f, a, 15000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(f.s, a), ==,
                  "after the agent restarted no plugin handles template 511 "
                  "any more");
  g_free(from);
  g_free(to);
  fx_down(&f);
  g_free(empty);
}

/* After the restart the child device the operation was for is gone. */
static void test_resume_without_child_fails(void) {
  fx f = {0};
  fx_up(&f, "[plugin.itest]\nchild = kid\n");
  long id = sim_create_operation(f.s, "511,kid,resume child");
  g_assert_cmpint(id, >, 0);
  g_assert_true(
      agent_proc_wait_log_count(f.a, "itest: resume armed", 1, 20000));
  g_assert_cmpint(count_in_log(&f, "itest: resume armed"), ==, 1);
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  edit_config(&f, "child = kid\n", "");
  size_t seen = sim_message_count(f.s);
  fx_start_agent(&f);
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(f.s, id), ==,
                  "after the agent restarted no plugin announces the child "
                  "device 'kid' any more");
  /* The status went to the child's topic. */
  g_assert_cmpint(sim_wait_line(f.s, "s/us/kid", "502,c8y_Command", seen, 100),
                  >=, 0);
  fx_down(&f);
}

/* An operation that never completes is not resumed forever. */
static void test_resume_gives_up(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long id = sim_create_operation(f.s, "511," FX_DEVICE ",resume-loop");
  g_assert_cmpint(id, >, 0);
  g_assert_true(
      agent_proc_wait_log_count(f.a, "itest: resume armed", 1, 20000));
  for (int restart = 1; restart <= 5; restart++) {
    agent_proc_kill(f.a);
    fx_start_agent(&f);
    g_assert_true(agent_proc_wait_log_count(f.a, "itest: resume armed",
                                            restart + 1, 20000));
    g_assert_cmpint(count_in_log(&f, "itest: resume armed"), ==, restart + 1);
    g_assert_cmpint(fx_status_after_start(&f, id), ==, SIM_OP_EXECUTING);
  }
  agent_proc_kill(f.a);
  fx_start_agent(&f);
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(f.s, id), ==,
                  "the operation was resumed after 5 agent restarts without "
                  "completing");
  fx_down(&f);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/resume/after-stop-kill-and-reboot",
                  test_resume_after_stop_kill_and_reboot);
  g_test_add_func("/resume/without-handler-fails",
                  test_resume_without_handler_fails);
  g_test_add_func("/resume/gives-up-after-5", test_resume_gives_up);
  g_test_add_func("/resume/without-child-fails",
                  test_resume_without_child_fails);
  return g_test_run();
}
