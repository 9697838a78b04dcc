/* One real Cumulocity session, end to end, through a real broker. */
#include "fixture.h"

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static void test_registration_sequence(void) {
  fx f = {0};
  fx_up(&f, NULL);
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "500", 0, 10000), >=, 0);
  const char *order[] = {"100,", "110,", "122,c8y-agent,",
                         "114,", "117,", "500"};
  long last = -1;
  for (size_t i = 0; i < G_N_ELEMENTS(order); i++) {
    long at = fx_line_pos(&f, "s/us", order[i], NULL);
    if (at < 0)
      g_error("no line starting with %s", order[i]);
    g_assert_cmpint(at, >, last);
    last = at;
  }
  /* 114 lists exactly the fragments of the registered handlers. */
  char *supported = NULL;
  g_assert_cmpint(fx_line_pos(&f, "s/us", "114,", &supported), >=, 0);
  g_assert_cmpstr(supported, ==, "114,c8y_Command,c8y_Restart");
  g_free(supported);
  g_assert_true(sim_device_exists(f.s, FX_DEVICE));
  /* The subscription to s/ds works: an operation reaches the agent. */
  long op = sim_create_operation(f.s, "511," FX_DEVICE ",ok pong");
  g_assert_cmpint(fx_wait_op(&f, op, 10000), ==, SIM_OP_SUCCESSFUL);
  fx_down(&f);
}

static void test_will_on_sigkill(void) {
  fx f = {0};
  fx_up(&f, NULL);
  size_t before = sim_message_count(f.s);
  agent_proc_kill(f.a);
  long will = sim_wait_line(f.s, "s/us",
                            "400,c8y_ConnectionEvent,\"Device connection was "
                            "lost.\"",
                            before, 10000);
  g_assert_cmpint(will, >=, 0);
  fx_down(&f);
}

/* The give-up message names where each credential was set: a password from
 * a conf.d drop-in is named there, not in agent.ini. */
static void test_give_up_names_the_drop_in(void) {
  fx f = {0};
  fx_start_sim(&f);
  fx_make_agent(&f, "secret", NULL);
  char *confd = g_build_filename(agent_proc_dir(f.a), "conf.d", NULL);
  g_assert_cmpint(g_mkdir_with_parents(confd, 0700), ==, 0);
  char *dropin = g_build_filename(confd, "50-credentials.ini", NULL);
  g_assert_true(g_file_set_contents(
      dropin, "[c8y]\npassword = not-the-password\n", -1, NULL));
  g_assert_cmpint(g_chmod(dropin, 0600), ==, 0);
  fx_start_agent(&f);
  g_assert_cmpint(agent_proc_wait_exit(f.a, 30000), ==, 3);
  char *log = agent_proc_log(f.a);
  char *want = g_strdup_printf("password (%s:2)", dropin);
  g_assert_nonnull(strstr(log, "giving up"));
  g_assert_nonnull(strstr(log, want));
  g_assert_null(strstr(log, "not-the-password"));
  g_free(want);
  g_free(log);
  g_free(dropin);
  g_free(confd);
  fx_down(&f);
}

static void test_no_will_on_clean_stop(void) {
  fx f = {0};
  fx_up(&f, NULL);
  size_t before = sim_message_count(f.s);
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  g_assert_cmpint(
      sim_wait_line(f.s, "s/us", "400,c8y_ConnectionEvent", before, 1500), <,
      0);
  fx_down(&f);
}

static void test_wrong_password(void) {
  fx f = {0};
  fx_start_sim(&f);
  fx_make_agent(&f, "not-the-password", NULL);
  gint64 t0 = g_get_monotonic_time();
  fx_start_agent(&f);
  int rc = agent_proc_wait_exit(f.a, 30000);
  gint64 elapsed_ms = (g_get_monotonic_time() - t0) / 1000;
  char *log = agent_proc_log(f.a);
  g_assert_cmpint(rc, ==, 3);
  g_assert_nonnull(strstr(log, "refused the connection for user t1/device"));
  g_assert_nonnull(strstr(log, "giving up"));
  g_assert_null(strstr(log, "not-the-password"));
  /* Bounded retries with backoff, not a busy loop: exactly 5 attempts,
   * spaced by at least 100+200+400+800 ms minus jitter. */
  int attempts = 0;
  for (const char *p = log; (p = strstr(p, "refused the connection")); p++)
    attempts++;
  g_assert_cmpint(attempts, ==, 5);
  g_assert_cmpint(elapsed_ms, >=, 1200);
  g_free(log);
  fx_down(&f);
}

static void test_broker_restart(void) {
  /* The simulator's own client needs ~3 s to be back after the broker
   * restarts (Paho's connect takes ~1 s here); a later agent reconnect
   * makes sure it watches the whole sequence. */
  fx f = {.reconnect_ms = 6000};
  fx_up(&f, NULL);
  g_assert_cmpint(sim_broker_kill(f.s), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "lost", 15000));
  size_t before = sim_message_count(f.s);
  g_assert_cmpint(sim_broker_start(f.s), ==, 0);
  /* The full sequence again, in order, after the reconnect. */
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "500", before, 20000), >=, 0);
  long d = fx_line_pos_from(&f, "s/us", "100,", before, NULL);
  long ops = fx_line_pos_from(&f, "s/us", "114,", before, NULL);
  long pend = fx_line_pos_from(&f, "s/us", "500", before, NULL);
  g_assert_cmpint(d, >=, 0);
  g_assert_cmpint(ops, >, d);
  g_assert_cmpint(pend, >, ops);
  long op = sim_create_operation(f.s, "511," FX_DEVICE ",ok again");
  g_assert_cmpint(fx_wait_op(&f, op, 10000), ==, SIM_OP_SUCCESSFUL);
  fx_down(&f);
}

static int run_ok(fx *f) {
  long op = sim_create_operation(f->s, "511," FX_DEVICE ",ok still here");
  return fx_wait_op(f, op, 10000);
}

/* SIGHUP: config and plugins reload without dropping the session; a broken
 * config is refused and the running one kept. */
static void test_sighup_reload(void) {
  fx f = {0};
  fx_up(&f, NULL);
  size_t before = sim_message_count(f.s);
  /* Switch the plugin off: the handler disappears and 114 is re-announced
   * without it (an empty list is not sent, so look for the 100 instead). */
  FILE *cfg = fopen(agent_proc_config(f.a), "a");
  g_assert_nonnull(cfg);
  fputs("[plugin.itest]\nenabled = false\n", cfg);
  fclose(cfg);
  g_assert_cmpint(agent_proc_signal(f.a, SIGHUP), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "itest (", 10000));
  g_assert_true(agent_proc_wait_log(f.a, "disabled in the configuration", 100));
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "100,", before, 10000), >=, 0);
  long unhandled = sim_create_operation(f.s, "511," FX_DEVICE ",ok nobody");
  g_assert_true(agent_proc_wait_log(f.a, "no handler for template 511", 10000));
  g_assert_cmpint(sim_operation_status(f.s, unhandled), ==, SIM_OP_PENDING);

  /* A reload during an operation waits for it to finish. */
  FILE *again = fopen(agent_proc_config(f.a), "a");
  fputs("[plugin.itest]\nenabled = true\n", again);
  fclose(again);
  /* (re-enable first, so an operation can run) */
  g_assert_cmpint(agent_proc_signal(f.a, SIGHUP), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "itest 1.0 loaded from", 10000));
  /* The operation ends when the test opens its gate, after the reload was
   * seen waiting: no race between its run time and the signal. */
  char *gate = g_strdup_printf("%s/gate", agent_proc_dir(f.a));
  char *line = g_strdup_printf("511," FX_DEVICE ",gate %s", gate);
  long slow = sim_create_operation(f.s, line);
  g_free(line);
  g_assert_true(agent_proc_wait_log(f.a, "itest: gate waiting", 20000));
  g_assert_cmpint(agent_proc_signal(f.a, SIGHUP), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "reload waits", 20000));
  g_assert_true(g_file_set_contents(gate, "", 0, NULL));
  g_free(gate);
  g_assert_cmpint(fx_wait_op(&f, slow, 20000), ==, SIM_OP_SUCCESSFUL);
  /* ...and then happens: a "reloading" line after the "waits" line. */
  gboolean reloaded = FALSE;
  for (int i = 0; i < 250 && !reloaded; i++) {
    char *log = agent_proc_log(f.a);
    const char *waits = strstr(log, "reload waits");
    reloaded = waits && strstr(waits, "SIGHUP: reloading");
    g_free(log);
    if (!reloaded)
      g_usleep(20 * 1000);
  }
  g_assert_true(reloaded);

  /* The device identity cannot change under a running session. */
  FILE *id = fopen(agent_proc_config(f.a), "a");
  fputs("[device]\nid = someone-else\n", id);
  fclose(id);
  g_assert_cmpint(agent_proc_signal(f.a, SIGHUP), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "[device] id changed", 10000));
  g_assert_cmpint(run_ok(&f), ==, SIM_OP_SUCCESSFUL);

  /* A broken config on reload: refused, everything keeps running. */
  cfg = fopen(agent_proc_config(f.a), "a");
  fputs("[c8y]\nkeepalive = 1\n", cfg);
  fclose(cfg);
  g_assert_cmpint(agent_proc_signal(f.a, SIGHUP), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "reload refused", 10000));
  g_assert_cmpint(agent_proc_wait_exit(f.a, 500), <, 0); /* still running */
  fx_down(&f);
}

/* The main thread's voluntary context switches: one per wakeup from poll. */
static long main_thread_wakeups(pid_t pid) {
  char path[64], line[128];
  snprintf(path, sizeof path, "/proc/%d/task/%d/status", (int)pid, (int)pid);
  FILE *fp = fopen(path, "r");
  long n = -1;
  while (fp && fgets(line, sizeof line, fp))
    if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1)
      break;
  if (fp)
    fclose(fp);
  return n;
}

/* Idle and connected, the main loop sleeps until its next deadline instead
 * of waking every second. The window is a measurement, not a wait. */
static void test_idle_loop_sleeps(void) {
  fx f = {0};
  fx_up(&f, NULL);
  /* Let the registration burst and its acks settle. */
  g_usleep(2000 * 1000);
  pid_t pid = agent_proc_pid(f.a);
  long before = main_thread_wakeups(pid);
  g_assert_cmpint(before, >=, 0);
  g_usleep(6000 * 1000);
  long woke = main_thread_wakeups(pid) - before;
  g_test_message("main loop woke %ld times in 6 s", woke);
  g_assert_cmpint(woke, <, 3);
  fx_down(&f);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/session/registration-sequence", test_registration_sequence);
  g_test_add_func("/session/will-on-sigkill", test_will_on_sigkill);
  g_test_add_func("/session/no-will-on-clean-stop", test_no_will_on_clean_stop);
  g_test_add_func("/session/wrong-password", test_wrong_password);
  g_test_add_func("/session/give-up-names-the-drop-in",
                  test_give_up_names_the_drop_in);
  g_test_add_func("/session/broker-restart", test_broker_restart);
  g_test_add_func("/session/sighup-reload", test_sighup_reload);
  g_test_add_func("/session/idle-loop-sleeps", test_idle_loop_sleeps);
  return g_test_run();
}
