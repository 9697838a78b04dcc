/* qos = 2 is honoured: what the agent publishes and the s/ds subscription
 * use QoS 2 on the wire. A plain mosquitto (no simulator) and an observer
 * subscribed at QoS 2 see the delivery QoS, which is the publisher's. */
#include "agent_proc.h"
#include "broker.h"

#include <MQTTClient.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

typedef struct seen {
  char *topic;
  char *payload;
  int qos;
} seen;

/* Receives until a line starting with `want` arrived on `topic` or the
 * deadline passed; records everything in `log`. */
static bool receive_until(MQTTClient c, GPtrArray *log, const char *topic,
                          const char *want, int timeout_ms) {
  gint64 until = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  while (g_get_monotonic_time() < until) {
    char *t = NULL;
    int tlen = 0;
    MQTTClient_message *m = NULL;
    if (MQTTClient_receive(c, &t, &tlen, &m, 200) != MQTTCLIENT_SUCCESS)
      continue;
    if (!m) {
      if (t)
        MQTTClient_free(t);
      continue;
    }
    seen *s = g_new0(seen, 1);
    s->topic = g_strdup(t);
    s->payload = g_strndup(m->payload, (gsize)m->payloadlen);
    s->qos = m->qos;
    g_ptr_array_add(log, s);
    MQTTClient_freeMessage(&m);
    MQTTClient_free(t);
    if (strcmp(s->topic, topic) == 0) {
      gchar **lines = g_strsplit(s->payload, "\n", -1);
      bool hit = false;
      for (gchar **l = lines; *l && !hit; l++)
        hit = g_str_has_prefix(*l, want);
      g_strfreev(lines);
      if (hit)
        return true;
    }
  }
  return false;
}

static size_t count_lines(GPtrArray *log, const char *prefix) {
  size_t n = 0;
  for (guint i = 0; i < log->len; i++) {
    seen *s = g_ptr_array_index(log, i);
    gchar **lines = g_strsplit(s->payload, "\n", -1);
    for (gchar **l = lines; *l; l++)
      n += g_str_has_prefix(*l, prefix);
    g_strfreev(lines);
  }
  return n;
}

static void free_seen(gpointer p) {
  seen *s = p;
  g_free(s->topic);
  g_free(s->payload);
  g_free(s);
}

/* The QoS a line must arrive with when the agent runs with [c8y] qos:
 * statuses, 500 and registration (5xx, 1xx) never below 1. */
static int expected_qos(int cfg_qos, const char *payload) {
  if (cfg_qos >= 1)
    return cfg_qos;
  return payload[0] == '5' || payload[0] == '1' ? 1 : 0;
}

static void wire_case(int qos) {
  char *dir = g_dir_make_tmp("c8y-qos2-XXXXXX", NULL);
  g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
  char *passwd = g_build_filename(dir, "passwd", NULL);
  char *acl = g_build_filename(dir, "acl", NULL);
  broker_user users[] = {{"t1/device", "secret"}, {"observer", "watch"}};
  char err[512];
  g_assert_cmpint(broker_write_passwd(passwd, users, 2, err, sizeof err), ==,
                  0);
  g_assert_true(g_file_set_contents(
      acl,
      "user t1/device\ntopic readwrite #\nuser observer\ntopic readwrite #\n",
      -1, NULL));
  broker *b = NULL;
  if (broker_start(dir, passwd, acl, 0, &b, err, sizeof err) != 0)
    g_error("broker: %s", err);

  char uri[64];
  snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", broker_port(b));
  MQTTClient c;
  g_assert_cmpint(
      MQTTClient_create(&c, uri, "observer", MQTTCLIENT_PERSISTENCE_NONE, NULL),
      ==, MQTTCLIENT_SUCCESS);
  MQTTClient_connectOptions co = MQTTClient_connectOptions_initializer;
  co.username = "observer";
  co.password = "watch";
  co.cleansession = 1;
  g_assert_cmpint(MQTTClient_connect(c, &co), ==, MQTTCLIENT_SUCCESS);
  g_assert_cmpint(MQTTClient_subscribe(c, "s/us", 2), ==, MQTTCLIENT_SUCCESS);

  char *ini = g_strdup_printf(
      "[c8y]\ntenant = t1\nuser = device\npassword = secret\n"
      "host = 127.0.0.1\nport = %d\ntls = false\nqos = %d\n"
      "reconnect_min_ms = 100\nreconnect_max_ms = 1000\n"
      "[device]\nid = dev1\n[agent]\nplugin_dir = %s\nlog_level = debug\n",
      broker_port(b), qos, ITEST_PLUGIN_DIR);
  agent_proc *a = agent_proc_new(ini);
  g_free(ini);
  g_assert_cmpint(agent_proc_start(a), ==, 0);

  GPtrArray *log = g_ptr_array_new_with_free_func(free_seen);
  g_assert_true(receive_until(c, log, "s/us", "500", 15000));
  /* The agent subscribed s/ds at QoS 2: an operation published at QoS 2
   * reaches it, and its statuses come back at QoS 2, once each. */
  g_assert_true(agent_proc_wait_log(a, "registration acknowledged", 5000));
  MQTTClient_message m = MQTTClient_message_initializer;
  /* With qos = 0 the handler also sends data, which stays at QoS 0. */
  const char *op = qos == 2 ? "511,dev1,ok exactly once" : "511,dev1,emit";
  m.payload = (void *)op;
  m.payloadlen = (int)strlen(op);
  m.qos = qos == 2 ? 2 : 1;
  MQTTClient_deliveryToken tok;
  g_assert_cmpint(MQTTClient_publishMessage(c, "s/ds", &m, &tok), ==,
                  MQTTCLIENT_SUCCESS);
  g_assert_cmpint(MQTTClient_waitForCompletion(c, tok, 5000), ==,
                  MQTTCLIENT_SUCCESS);
  g_assert_true(receive_until(c, log, "s/us", "503,c8y_Command", 15000));
  /* A little longer: a duplicate would show up now. */
  receive_until(c, log, "s/us", "never", 500);
  for (guint i = 0; i < log->len; i++) {
    seen *s = g_ptr_array_index(log, i);
    if (s->qos != expected_qos(qos, s->payload))
      g_error("'%.40s' on %s arrived with QoS %d, not %d", s->payload, s->topic,
              s->qos, expected_qos(qos, s->payload));
  }
  g_assert_cmpuint(count_lines(log, "100,"), ==, 1);
  g_assert_cmpuint(count_lines(log, "501,c8y_Command"), ==, 1);
  if (qos == 2) {
    g_assert_cmpuint(count_lines(log, "503,c8y_Command,exactly once"), ==, 1);
    char *alog = agent_proc_log(a);
    g_assert_nonnull(strstr(alog, "some Cumulocity endpoints (the newer MQTT "
                                  "Service) refuse QoS 2"));
    g_free(alog);
  } else {
    g_assert_cmpuint(count_lines(log, "400,itest_Event,"), ==, 1);
  }

  g_assert_cmpint(agent_proc_stop(a, 10000), ==, 0);
  agent_proc_free(a);
  g_ptr_array_free(log, TRUE);
  MQTTClient_disconnect(c, 1000);
  MQTTClient_destroy(&c);
  broker_stop(b);
  g_unlink(passwd);
  g_unlink(acl);
  g_free(passwd);
  g_free(acl);
  g_free(dir);
}

static void test_qos2_on_the_wire(void) { wire_case(2); }

/* qos = 0 for data: statuses, 500 and registration still need their
 * PUBACK, so they go at QoS 1 while the event stays at QoS 0. */
static void test_qos0_keeps_statuses_at_1(void) { wire_case(0); }

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/qos2/on-the-wire", test_qos2_on_the_wire);
  g_test_add_func("/qos0/statuses-at-1", test_qos0_keeps_statuses_at_1);
  return g_test_run();
}
