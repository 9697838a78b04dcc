/* Device bootstrap against the simulator's registration flow: the agent
 * has no credentials, only [c8y] bootstrap = true and the bootstrap
 * password; it must ask on s/ucr until the device is accepted, store the
 * credentials it gets (0600) and use them, also on the next start. */
#include "fixture.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#define BS_DEVICE "bsdev1"

static sim *start_sim(void) {
  sim_options o = {.tenant = "t7",
                   .user = "device",
                   .password = "not-known-to-the-agent",
                   .device_id = BS_DEVICE};
  sim *s = NULL;
  char err[512];
  if (sim_start(&o, &s, err, sizeof err) != 0)
    g_error("simulator: %s", err);
  return s;
}

static agent_proc *bootstrap_agent(sim *s, const char *password) {
  char *ini = g_strdup_printf(
      "[c8y]\nbootstrap = true\nbootstrap_password = %s\nhost = 127.0.0.1\n"
      "port = %d\ntls = false\nreconnect_min_ms = 100\n"
      "reconnect_max_ms = 1000\n[device]\nid = " BS_DEVICE "\n"
      "[agent]\nplugin_dir = %s\nlog_level = debug\n",
      password, sim_port(s), ITEST_PLUGIN_DIR);
  agent_proc *a = agent_proc_new(ini);
  g_free(ini);
  g_assert_nonnull(a);
  return a;
}

/* Receive times of the s/ucr requests so far. */
static size_t request_times(sim *s, long long *t, size_t max) {
  size_t n = 0;
  for (size_t i = 0; i < sim_message_count(s) && n < max; i++) {
    const sim_message *m = sim_message_at(s, i);
    if (strcmp(m->topic, "s/ucr") == 0) {
      g_assert_cmpuint(m->len, ==, 0); /* an empty request */
      t[n++] = m->t_ms;
    }
  }
  return n;
}

static void test_first_and_second_start(void) {
  sim *s = start_sim();
  agent_proc *a = bootstrap_agent(s, SIM_BOOTSTRAP_PASSWORD);
  const char *check[] = {"--check-config", NULL};
  g_assert_cmpint(agent_proc_start_args(a, check), ==, 0);
  g_assert_cmpint(agent_proc_wait_exit(a, 10000), ==, 0);
  g_assert_true(agent_proc_wait_log(a, "bootstrap: not registered yet", 1000));
  g_assert_cmpint(agent_proc_start(a), ==, 0);

  /* Not accepted yet: the agent keeps asking, every 5 s; a SIGHUP does not
   * interrupt that. */
  bool asked = sim_wait_bootstrap_requests(s, 1, 20000);
  fx_log_on_failure(a);
  g_assert_true(asked);
  g_assert_cmpint(agent_proc_signal(a, SIGHUP), ==, 0);
  g_assert_true(agent_proc_wait_log(a, "SIGHUP: ignored while", 5000));
  asked = sim_wait_bootstrap_requests(s, 2, 20000);
  fx_log_on_failure(a);
  g_assert_true(asked);
  long long t[4];
  g_assert_cmpuint(request_times(s, t, 4), >=, 2);
  g_assert_cmpint(t[1] - t[0], >=, 4000);
  g_assert_cmpuint(sim_count_lines(s, "s/us", "100"), ==, 0);
  g_assert_true(
      agent_proc_wait_log(a, "waiting for the device to be accepted", 1000));
  /* As the registration expects: clientId = the plain device id, user =
   * the bootstrap user. */
  char *blog_path = g_strdup_printf("%s/mosquitto.log", sim_workdir(s));
  gchar *blog = NULL;
  g_assert_true(g_file_get_contents(blog_path, &blog, NULL, NULL));
  g_assert_nonnull(strstr(blog, " as " BS_DEVICE " ("));
  g_assert_nonnull(strstr(blog, "u'" SIM_BOOTSTRAP_USER "'"));
  g_free(blog);
  g_free(blog_path);

  /* The operator accepts: the next request gets 70, the agent reconnects
   * with the new user (only it may publish s/us) and announces itself. */
  g_assert_cmpint(sim_accept_registration(s, BS_DEVICE), ==, 0);
  long at = sim_wait_line(s, "s/us", "100", 0, 20000);
  fx_log_on_failure(a);
  g_assert_cmpint(at, >=, 0);
  g_assert_cmpint(sim_wait_line(s, "s/us", "500", 0, 10000), >=, 0);
  g_assert_true(agent_proc_wait_log(
      a, "received credentials for t7/device_" BS_DEVICE, 1000));

  char *file = g_strdup_printf("%s/state/credentials", agent_proc_dir(a));
  struct stat st;
  g_assert_cmpint(g_stat(file, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0600);
  gchar *text = NULL;
  g_assert_true(g_file_get_contents(file, &text, NULL, NULL));
  char *want =
      g_strdup_printf("tenant=t7\nuser=device_" BS_DEVICE "\npassword=%s\n",
                      sim_registration_password(s, BS_DEVICE));
  g_assert_cmpstr(text, ==, want);
  g_free(want);
  g_free(text);
  /* No temp file left behind. */
  char *tmp = g_strdup_printf("%s.tmp", file);
  g_assert_false(g_file_test(tmp, G_FILE_TEST_EXISTS));
  g_free(tmp);
  /* The password never reaches the log. */
  char *log = agent_proc_log(a);
  g_assert_null(strstr(log, sim_registration_password(s, BS_DEVICE)));
  g_assert_null(strstr(log, SIM_BOOTSTRAP_PASSWORD));
  free(log);
  g_assert_cmpint(agent_proc_stop(a, 10000), ==, 0);
  g_assert_cmpint(agent_proc_start_args(a, check), ==, 0);
  g_assert_cmpint(agent_proc_wait_exit(a, 10000), ==, 0);
  g_assert_true(agent_proc_wait_log(
      a, "Cumulocity tenant, credentials from bootstrap", 1000));

  /* Second start: the stored credentials, no registration. */
  size_t requests = sim_bootstrap_requests(s);
  size_t from = sim_message_count(s);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  at = sim_wait_line(s, "s/us", "500", from, 20000);
  fx_log_on_failure(a);
  g_assert_cmpint(at, >=, 0);
  g_assert_cmpuint(sim_bootstrap_requests(s), ==, requests);
  g_assert_true(agent_proc_wait_log(
      a, "using the credentials of t7/device_" BS_DEVICE, 1000));
  /* A reload keeps the stored credentials (it would refuse a change). */
  g_assert_cmpint(agent_proc_signal(a, SIGHUP), ==, 0);
  g_assert_true(agent_proc_wait_log(a, "SIGHUP: reloading", 10000));
  g_assert_false(agent_proc_wait_log(a, "reload refused", 1500));
  g_assert_cmpint(agent_proc_stop(a, 10000), ==, 0);

  /* A stored file others can read is refused at start. */
  g_assert_cmpint(g_chmod(file, 0644), ==, 0);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  int rc = agent_proc_wait_exit(a, 15000);
  fx_log_on_failure(a);
  g_assert_cmpint(rc, ==, 2);
  g_assert_true(agent_proc_wait_log(a, "readable by others", 1000));

  /* Stored credentials the platform no longer accepts: the agent gives up
   * and says how to register again. */
  g_assert_true(g_file_set_contents(
      file, "tenant=t7\nuser=device_" BS_DEVICE "\npassword=revoked\n", -1,
      NULL));
  g_assert_cmpint(g_chmod(file, 0600), ==, 0);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  rc = agent_proc_wait_exit(a, 30000);
  fx_log_on_failure(a);
  g_assert_cmpint(rc, ==, 3);
  g_assert_true(agent_proc_wait_log(
      a, "delete that file to register the device again", 1000));
  g_free(file);
  agent_proc_free(a);
  sim_stop(s);
}

/* connect --test before registration tests what the registration uses: the
 * bootstrap user with clientId = the plain device id, not d:<id>. */
static void test_connect_test_as_registration(void) {
  sim *s = start_sim();
  agent_proc *a = bootstrap_agent(s, SIM_BOOTSTRAP_PASSWORD);
  const char *args[] = {"connect", "--test", "--timeout", "5", NULL};
  g_assert_cmpint(agent_proc_start_args(a, args), ==, 0);
  int rc = agent_proc_wait_exit(a, 20000);
  char *log = agent_proc_log(a);
  g_test_message("connect --test -> %d:\n%s", rc, log);
  g_assert_cmpint(rc, ==, 0);
  g_assert_nonnull(strstr(log, "as " SIM_BOOTSTRAP_USER " (clientId " BS_DEVICE
                               "), bootstrap user"));
  g_assert_nonnull(strstr(log, "connection test passed"));
  g_free(log);
  /* The broker saw that clientId (it logs the CONNECT before its CONNACK,
   * so the line is there once the test passed). */
  char *blog_path = g_strdup_printf("%s/mosquitto.log", sim_workdir(s));
  gchar *blog = NULL;
  g_assert_true(g_file_get_contents(blog_path, &blog, NULL, NULL));
  g_assert_nonnull(
      strstr(blog, " as " BS_DEVICE " (p2, c1, k60, u'" SIM_BOOTSTRAP_USER));
  g_assert_null(strstr(blog, " as d:" BS_DEVICE));
  g_free(blog);
  g_free(blog_path);
  g_assert_cmpuint(sim_bootstrap_requests(s), ==, 0);
  agent_proc_free(a);
  sim_stop(s);
}

/* A wrong bootstrap password: CONNACK refusals named, then exit 3. */
static void test_bootstrap_refused(void) {
  sim *s = start_sim();
  agent_proc *a = bootstrap_agent(s, "wrong-bootstrap-password");
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  int rc = agent_proc_wait_exit(a, 30000);
  fx_log_on_failure(a);
  g_assert_cmpint(rc, ==, 3);
  char *log = agent_proc_log(a);
  g_assert_nonnull(strstr(log, "refused " SIM_BOOTSTRAP_USER ": CONNACK 5"));
  g_assert_nonnull(strstr(log, "bootstrap_password"));
  free(log);
  g_assert_cmpuint(sim_bootstrap_requests(s), ==, 0);
  agent_proc_free(a);
  sim_stop(s);
}

/* Registration cannot reach the broker: the log names why. */
static void test_bootstrap_diagnosis(void) {
  sim *s = start_sim();
  agent_proc *a = bootstrap_agent(s, SIM_BOOTSTRAP_PASSWORD);
  int port = sim_port(s);
  sim_stop(s); /* nothing listens on the port any more */
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  char *want = g_strdup_printf("connection diagnosis for tcp://127.0.0.1:%d: "
                               "TCP step failed: cannot connect to 127.0.0.1 "
                               "port %d: Connection refused",
                               port, port);
  bool found = agent_proc_wait_log(a, want, 15000);
  fx_log_on_failure(a);
  g_assert_true(found);
  g_assert_true(agent_proc_wait_log(a, "bootstrap: no connection to", 1000));
  g_assert_cmpint(agent_proc_stop(a, 10000), ==, 0);
  g_free(want);
  agent_proc_free(a);
}

/* bootstrap = true needs the bootstrap password; one line names the key. */
static void test_bootstrap_needs_password(void) {
  agent_proc *a = agent_proc_new("[c8y]\nbootstrap = true\nhost = 127.0.0.1\n"
                                 "[device]\nid = " BS_DEVICE "\n");
  const char *args[] = {"--check-config", NULL};
  g_assert_cmpint(agent_proc_start_args(a, args), ==, 0);
  g_assert_cmpint(agent_proc_wait_exit(a, 10000), ==, 1);
  char *log = agent_proc_log(a);
  g_assert_nonnull(strstr(log, "[c8y] bootstrap_password: required when "
                               "bootstrap is true"));
  free(log);
  agent_proc_free(a);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/bootstrap/first_and_second_start",
                  test_first_and_second_start);
  g_test_add_func("/bootstrap/refused", test_bootstrap_refused);
  g_test_add_func("/bootstrap/connect_test_as_registration",
                  test_connect_test_as_registration);
  g_test_add_func("/bootstrap/diagnosis", test_bootstrap_diagnosis);
  g_test_add_func("/bootstrap/needs_password", test_bootstrap_needs_password);
  return g_test_run();
}
