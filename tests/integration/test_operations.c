/* The operation engine end to end through the broker: 501 before
 * the handler, 503/502 after, FIFO per fragment, async completion, timeouts,
 * unknown templates left alone, and the journal across restarts. */
#include "fixture.h"

#include <glib/gstdio.h>
#include <stdio.h>

static int run_op(fx *f, const char *line, const char **detail) {
  long id = sim_create_operation(f->s, line);
  g_assert_cmpint(id, >, 0);
  int st = fx_wait_op(f, id, 15000);
  if (detail)
    *detail = sim_operation_detail(f->s, id);
  return st;
}

static void test_success_with_result(void) {
  fx f = {0};
  fx_up(&f, NULL);
  const char *detail;
  g_assert_cmpint(
      run_op(&f, "511," FX_DEVICE ",\"ok hello, \"\"world\"\"\"", &detail), ==,
      SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(detail, ==, "hello, \"world\"");
  /* 501 went out before 503. */
  long exec = sim_wait_line(f.s, "s/us", "501,c8y_Command", 0, 100);
  long done = sim_wait_line(f.s, "s/us", "503,c8y_Command", 0, 100);
  g_assert_cmpint(exec, >=, 0);
  g_assert_cmpint(done, >, exec);
  fx_down(&f);
}

static void test_failures(void) {
  fx f = {0};
  fx_up(&f, NULL);
  const char *detail;
  g_assert_cmpint(run_op(&f,
                         "511," FX_DEVICE ",\"fail bad \\\"thing\\\", really\"",
                         &detail),
                  ==, SIM_OP_FAILED);
  g_assert_cmpstr(detail, ==, "bad \"thing\", really");
  /* A handler error without completion becomes 502 with the status text. */
  g_assert_cmpint(run_op(&f, "511," FX_DEVICE ",error", &detail), ==,
                  SIM_OP_FAILED);
  g_assert_cmpstr(detail, ==, "I/O failure");
  /* Reasons are capped at 500 bytes. */
  GString *line = g_string_new("511," FX_DEVICE ",fail ");
  for (int i = 0; i < 2000; i++)
    g_string_append_c(line, 'x');
  g_assert_cmpint(run_op(&f, line->str, &detail), ==, SIM_OP_FAILED);
  g_assert_cmpuint(strlen(detail), ==, 500);
  g_string_free(line, TRUE);
  fx_down(&f);
}

static void test_async_and_timeout(void) {
  fx f = {0};
  fx_up(&f, "[plugin.itest]\ntimeout_ms = 800\n");
  const char *detail;
  g_assert_cmpint(run_op(&f, "511," FX_DEVICE ",async 200 later", &detail), ==,
                  SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(detail, ==, "later");
  g_assert_cmpint(run_op(&f, "511," FX_DEVICE ",hang", &detail), ==,
                  SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "timed out"));
  /* The plugin's late completion is refused with C8Y_ETIMEDOUT. */
  g_assert_true(agent_proc_wait_log(f.a, "late completion returned -8", 5000));
  /* The engine moved on: the next operation of that fragment runs. */
  g_assert_cmpint(run_op(&f, "511," FX_DEVICE ",ok next", &detail), ==,
                  SIM_OP_SUCCESSFUL);
  fx_down(&f);
}

static void test_fifo_per_fragment(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long ids[6];
  ids[0] = sim_create_operation(f.s, "511," FX_DEVICE ",slow 300");
  for (int i = 1; i < 6; i++) {
    char line[64];
    snprintf(line, sizeof line, "511," FX_DEVICE ",order %d", i);
    ids[i] = sim_create_operation(f.s, line);
  }
  for (int i = 0; i < 6; i++)
    g_assert_cmpint(fx_wait_op(&f, ids[i], 15000), ==, SIM_OP_SUCCESSFUL);
  char *path = g_build_filename(agent_proc_dir(f.a), "state", "plugins",
                                "itest", "order", NULL);
  char *order = NULL;
  g_assert_true(g_file_get_contents(path, &order, NULL, NULL));
  g_assert_cmpstr(order, ==, "1\n2\n3\n4\n5\n");
  g_free(order);
  g_free(path);
  /* Never two EXECUTING at once: each 501 follows the previous 503. */
  size_t n = sim_message_count(f.s);
  int executing = 0;
  for (size_t i = 0; i < n; i++) {
    const sim_message *m = sim_message_at(f.s, i);
    char **lines = g_strsplit(m->payload, "\n", -1);
    for (char **it = lines; *it; it++) {
      if (g_str_has_prefix(*it, "501,c8y_Command"))
        executing++;
      if (g_str_has_prefix(*it, "503,c8y_Command") ||
          g_str_has_prefix(*it, "502,c8y_Command"))
        executing--;
      g_assert_cmpint(executing, <=, 1);
    }
    g_strfreev(lines);
  }
  fx_down(&f);
}

static void test_pending_delivered_on_connect(void) {
  fx f = {0};
  fx_start_sim(&f);
  /* Created while the agent is offline: only the 500 brings them, both in
   * one publish. */
  long a = sim_create_operation(f.s, "511," FX_DEVICE ",ok first");
  long b = sim_create_operation(f.s, "511," FX_DEVICE ",ok second");
  fx_make_agent(&f, "secret", NULL);
  fx_start_agent(&f);
  g_assert_cmpint(fx_wait_op(&f, a, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpint(fx_wait_op(&f, b, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, a), ==, "first");
  g_assert_cmpstr(sim_operation_detail(f.s, b), ==, "second");
  fx_down(&f);
}

static void test_unknown_template_untouched(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long relay = sim_create_operation(f.s, "519," FX_DEVICE ",OPEN,CLOSED");
  long relay2 = sim_create_operation(f.s, "519," FX_DEVICE ",CLOSED,OPEN");
  /* A handled one afterwards proves the agent saw and skipped the others. */
  g_assert_cmpint(run_op(&f, "511," FX_DEVICE ",ok done", NULL), ==,
                  SIM_OP_SUCCESSFUL);
  g_assert_cmpint(sim_operation_status(f.s, relay), ==, SIM_OP_PENDING);
  g_assert_cmpint(sim_operation_status(f.s, relay2), ==, SIM_OP_PENDING);
  char *log = agent_proc_log(f.a);
  const char *first = strstr(log, "no handler for template 519");
  g_assert_nonnull(first);
  g_assert_null(strstr(first + 1, "no handler for template 519"));
  g_free(log);
  /* An operation for a device that is neither the root nor a child. */
  long other = sim_create_operation(f.s, "511,someone-else,ok x");
  g_assert_true(
      agent_proc_wait_log(f.a, "unknown device 'someone-else'", 5000));
  g_assert_cmpint(sim_operation_status(f.s, other), ==, SIM_OP_PENDING);
  fx_down(&f);
}

/* SIGTERM while an operation runs and others wait behind it: the running
 * one finishes, the waiting ones are not started (they stay PENDING) and
 * the next start picks them up. */
static void test_stop_leaves_queued_pending(void) {
  fx f = {0};
  /* The grace only bounds the stop: the running operation ends when the
   * test opens its gate, once the stop told it to. */
  fx_up(&f, "[agent]\nstop_grace_ms = 30000\n");
  char *gate = g_strdup_printf("%s/gate", agent_proc_dir(f.a));
  char *line = g_strdup_printf("511," FX_DEVICE ",gate %s", gate);
  long slow = sim_create_operation(f.s, line);
  g_free(line);
  long a = sim_create_operation(f.s, "511," FX_DEVICE ",ok a");
  long b = sim_create_operation(f.s, "511," FX_DEVICE ",ok b");
  /* The handler runs: the SIGTERM finds it running, a and b queued. */
  g_assert_true(agent_proc_wait_log(f.a, "itest: gate waiting", 20000));
  g_assert_cmpint(fx_status_after_start(&f, slow), ==, SIM_OP_EXECUTING);
  g_assert_cmpint(agent_proc_signal(f.a, SIGTERM), ==, 0);
  g_assert_true(agent_proc_wait_log(
      f.a, "stopping: 1 running operation(s) told to stop", 20000));
  g_assert_true(g_file_set_contents(gate, "", 0, NULL));
  g_free(gate);
  g_assert_cmpint(agent_proc_wait_exit(f.a, 40000), ==, 0);
  g_assert_cmpint(fx_wait_op(&f, slow, 5000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpint(sim_operation_status(f.s, a), ==, SIM_OP_PENDING);
  g_assert_cmpint(sim_operation_status(f.s, b), ==, SIM_OP_PENDING);
  fx_start_agent(&f);
  g_assert_cmpint(fx_wait_op(&f, a, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpint(fx_wait_op(&f, b, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, b), ==, "b");
  fx_down(&f);
}

static void write_boot_id(const char *path, const char *id) {
  g_assert_true(g_file_set_contents(path, id, -1, NULL));
}

/* The journal finishes what a killed agent left executing. */
static void test_journal_after_kill(void) {
  fx f = {0};
  char *boot = fx_boot_id_file("boot-1\n");
  g_setenv("C8Y_BOOT_ID_FILE", boot, TRUE);
  fx_up(&f, NULL);

  /* 1. A restart that really rebooted: 503 after the agent comes back. */
  long restart = sim_create_operation(f.s, "510," FX_DEVICE);
  long slow = sim_create_operation(f.s, "511," FX_DEVICE ",slow 20000");
  /* Both handlers ran, so both operations are in the journal (it is
   * written after the 501's PUBACK, before the handler) and the reboot
   * mark too: the kill comes after that, not after a guess of how long
   * it takes. */
  g_assert_true(agent_proc_wait_log(f.a, "itest: reboot armed", 20000));
  g_assert_true(agent_proc_wait_log(f.a, "itest: slow started", 20000));
  g_assert_cmpint(fx_status_after_start(&f, restart), ==, SIM_OP_EXECUTING);
  g_assert_cmpint(fx_status_after_start(&f, slow), ==, SIM_OP_EXECUTING);
  agent_proc_kill(f.a);
  write_boot_id(boot, "boot-2\n");
  fx_start_agent(&f);
  g_assert_cmpint(fx_wait_op(&f, restart, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpint(fx_wait_op(&f, slow, 15000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(f.s, slow), ==,
                  "the agent stopped while the operation was executing");

  /* 2. The agent restarts but the machine did not reboot: 502. */
  long again = sim_create_operation(f.s, "510," FX_DEVICE);
  g_assert_true(
      agent_proc_wait_log_count(f.a, "itest: reboot armed", 2, 20000));
  agent_proc_kill(f.a);
  fx_start_agent(&f);
  g_assert_cmpint(fx_wait_op(&f, again, 15000), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(sim_operation_detail(f.s, again), "did not reboot"));

  fx_down(&f);
  g_unsetenv("C8Y_BOOT_ID_FILE");
  fx_boot_id_free(boot);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/operations/success-with-result", test_success_with_result);
  g_test_add_func("/operations/failures", test_failures);
  g_test_add_func("/operations/async-and-timeout", test_async_and_timeout);
  g_test_add_func("/operations/fifo-per-fragment", test_fifo_per_fragment);
  g_test_add_func("/operations/pending-delivered-on-connect",
                  test_pending_delivered_on_connect);
  g_test_add_func("/operations/unknown-template-untouched",
                  test_unknown_template_untouched);
  g_test_add_func("/operations/stop-leaves-queued-pending",
                  test_stop_leaves_queued_pending);
  g_test_add_func("/operations/journal-after-kill", test_journal_after_kill);
  return g_test_run();
}
