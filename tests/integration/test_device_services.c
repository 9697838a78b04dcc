/* The device's services end to end (Cumulocity "Services": 102 creates or
 * updates a c8y_Service child addition, 104 on s/us/<service> its status):
 * the agent itself (up at every connect, down by the will on kill -9 and
 * before a clean stop), plugins as services (set_health, a failed init, a
 * producer that keeps failing) and operations for a service a plugin
 * announced (c8y_ServiceCommand). */
#include "fixture.h"

#include <glib/gstdio.h>
#include <stdio.h>

#define AGENT_SVC FX_DEVICE "_c8y-agent"
#define PLUGIN_SVC FX_DEVICE "_c8y-agent_svctest"
#define OWN_SVC FX_DEVICE "_svctest-svc"

static void svc_up(fx *f, const char *extra) {
  f->plugin_dir = SVCTEST_PLUGIN_DIR;
  fx_up(f, extra);
}

static void rewrite_config(fx *f, const char *from, const char *to) {
  char *text = NULL;
  g_assert_true(
      g_file_get_contents(agent_proc_config(f->a), &text, NULL, NULL));
  char *at = strstr(text, from);
  g_assert_nonnull(at);
  *at = '\0';
  char *fixed = g_strconcat(text, to, at + strlen(from), NULL);
  g_assert_true(g_file_set_contents(agent_proc_config(f->a), fixed, -1, NULL));
  g_assert_cmpint(g_chmod(agent_proc_config(f->a), 0600), ==, 0);
  g_free(fixed);
  g_free(text);
}

/* The text of the plugin service's c8y_PluginDown alarm (g_free). */
static char *down_alarm(fx *f) {
  g_assert_cmpint(
      sim_wait_line(f->s, "s/us/" PLUGIN_SVC, "302,c8y_PluginDown,", 0, 5000),
      >=, 0);
  char *alarm = NULL;
  g_assert_cmpint(
      fx_line_pos(f, "s/us/" PLUGIN_SVC, "302,c8y_PluginDown,", &alarm), >=, 0);
  return alarm;
}

/* 102 ... up with the registration, before the 500; down through the will
 * (one payload: the 400 event and the 102) when the agent is killed; up
 * again when it is back. */
static void test_agent_service_and_will(void) {
  fx f = {0};
  svc_up(&f, NULL);
  g_assert_true(sim_wait_service_status(f.s, AGENT_SVC, "up", 5000));
  g_assert_cmpstr(sim_service_parent(f.s, AGENT_SVC), ==, FX_DEVICE);
  long svc =
      fx_line_pos(&f, "s/us", "102," AGENT_SVC ",c8y-agent,c8y-agent,up", NULL);
  long pending = fx_line_pos(&f, "s/us", "500", NULL);
  g_assert_cmpint(svc, >=, 0);
  g_assert_cmpint(svc, <, pending);

  size_t before = sim_message_count(f.s);
  agent_proc_kill(f.a);
  long will =
      sim_wait_line(f.s, "s/us", "400,c8y_ConnectionEvent", before, 10000);
  g_assert_cmpint(will, >=, 0);
  const sim_message *m = sim_message_at(f.s, (size_t)will);
  g_assert_cmpstr(m->payload, ==,
                  "400,c8y_ConnectionEvent,\"Device connection was lost.\"\n"
                  "102," AGENT_SVC ",c8y-agent,c8y-agent,down");
  g_assert_true(sim_wait_service_status(f.s, AGENT_SVC, "down", 5000));

  before = sim_message_count(f.s);
  fx_start_agent(&f);
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "500", before, 15000), >=, 0);
  g_assert_true(sim_wait_service_status(f.s, AGENT_SVC, "up", 5000));
  fx_down(&f);
}

/* A clean stop sends no will, so the agent says down itself. */
static void test_clean_stop_sets_down(void) {
  fx f = {0};
  svc_up(&f, NULL);
  g_assert_true(sim_wait_service_status(f.s, AGENT_SVC, "up", 5000));
  size_t before = sim_message_count(f.s);
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  g_assert_true(sim_wait_service_status(f.s, AGENT_SVC, "down", 5000));
  g_assert_cmpint(
      sim_wait_line(f.s, "s/us", "400,c8y_ConnectionEvent", before, 500), <, 0);
  fx_down(&f);
}

/* A plugin whose init fails is a service, down, with the reason as an
 * alarm on it; once it loads again it is up and the alarm is cleared. */
static void test_failed_init_is_down(void) {
  fx f = {0};
  svc_up(&f, "[plugin.svctest]\nfail_init = yes\n");
  g_assert_true(sim_wait_service_status(f.s, PLUGIN_SVC, "down", 5000));
  g_assert_cmpstr(sim_service_parent(f.s, PLUGIN_SVC), ==, FX_DEVICE);
  char *alarm = down_alarm(&f);
  g_assert_nonnull(strstr(alarm, "init failed"));
  g_free(alarm);
  /* The service line came first: the alarm's topic names a service, not a
   * new device. */
  char *status = sim_service_status(f.s, PLUGIN_SVC);
  g_assert_cmpstr(status, ==, "down");
  g_free(status);
  char *log = agent_proc_log(f.a);
  g_assert_nonnull(strstr(log, "plugin svctest is down: init failed"));
  g_free(log);

  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  rewrite_config(&f, "fail_init = yes", "fail_init = no");
  size_t before = sim_message_count(f.s);
  fx_start_agent(&f);
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "500", before, 15000), >=, 0);
  g_assert_true(sim_wait_service_status(f.s, PLUGIN_SVC, "up", 5000));
  g_assert_cmpint(sim_wait_line(f.s, "s/us/" PLUGIN_SVC, "306,c8y_PluginDown",
                                before, 5000),
                  >=, 0);
  fx_down(&f);
}

static long health_op(fx *f, bool up, const char *reason) {
  char *frag =
      g_strdup_printf("{\"svctest_Health\":{\"up\":%s,\"reason\":\"%s\"}}",
                      up ? "true" : "false", reason);
  long id = sim_create_json_operation(f->s, FX_DEVICE, frag);
  g_free(frag);
  g_assert_cmpint(fx_wait_op(f, id, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f->s, id), ==, "set_health ok");
  return id;
}

/* set_health from a plugin's own thread: down with the reason, up again;
 * a plugin that never reports is no service. */
static void test_set_health(void) {
  fx f = {0};
  svc_up(&f, NULL);
  g_assert_null(sim_service_status(f.s, PLUGIN_SVC));
  size_t before = sim_message_count(f.s);
  health_op(&f, false, "sensor bus, unplugged");
  g_assert_true(sim_wait_service_status(f.s, PLUGIN_SVC, "down", 5000));
  long a = sim_wait_line(f.s, "s/us/" PLUGIN_SVC,
                         "302,c8y_PluginDown,\"sensor bus, unplugged\"", before,
                         5000);
  g_assert_cmpint(a, >=, 0);
  before = sim_message_count(f.s);
  health_op(&f, true, "");
  g_assert_true(sim_wait_service_status(f.s, PLUGIN_SVC, "up", 5000));
  g_assert_cmpint(sim_wait_line(f.s, "s/us/" PLUGIN_SVC, "306,c8y_PluginDown",
                                before, 5000),
                  >=, 0);
  /* Saying the same again is no change: nothing more is sent. */
  before = sim_message_count(f.s);
  health_op(&f, true, "");
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "102," PLUGIN_SVC, before, 500), <,
                  0);
  fx_down(&f);
}

/* Producers failing SERVICES_PRODUCE_FAILURES times in a row. */
static void test_failing_producer_is_down(void) {
  fx f = {0};
  svc_up(&f, "[plugin.svctest]\nfail_produce = yes\n");
  g_assert_true(sim_wait_service_status(f.s, PLUGIN_SVC, "down", 10000));
  char *alarm = down_alarm(&f);
  g_assert_nonnull(strstr(alarm, "producer broken failed 5 times in a row"));
  g_free(alarm);
  fx_down(&f);
}

/* Cumulocity "Services", service commands: the operation's device is the
 * service; the plugin that announced it (102) and serves the fragment
 * runs it with op_device() the service; its 114 on the service lists the
 * command. Statuses go by id on the service's topic. */
static void test_service_command(void) {
  fx f = {0};
  svc_up(&f, NULL);
  g_assert_true(sim_wait_service_status(f.s, OWN_SVC, "up", 5000));
  g_assert_cmpstr(sim_service_parent(f.s, OWN_SVC), ==, FX_DEVICE);
  g_assert_cmpint(
      fx_line_pos(&f, "s/us/" OWN_SVC, "114,c8y_ServiceCommand", NULL), >=, 0);
  long id = sim_create_json_operation(
      f.s, OWN_SVC,
      "{\"c8y_ServiceCommand\":{\"command\":\"RESTART\",\"serviceName\":"
      "\"svctest-svc\",\"serviceType\":\"test\"}}");
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, id), ==, "RESTART " OWN_SVC);
  /* One on the agent's own service reaches the same handler, which
   * refuses it with its reason. */
  id = sim_create_json_operation(
      f.s, AGENT_SVC,
      "{\"c8y_ServiceCommand\":{\"command\":\"STOP\",\"serviceName\":"
      "\"c8y-agent\",\"serviceType\":\"c8y-agent\"}}");
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(f.s, id), ==,
                  AGENT_SVC " is not a service of svctest");
  fx_down(&f);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/services/agent-up-and-will", test_agent_service_and_will);
  g_test_add_func("/services/clean-stop-down", test_clean_stop_sets_down);
  g_test_add_func("/services/failed-init-down", test_failed_init_is_down);
  g_test_add_func("/services/set-health", test_set_health);
  g_test_add_func("/services/failing-producer", test_failing_producer_is_down);
  g_test_add_func("/services/service-command", test_service_command);
  return g_test_run();
}
