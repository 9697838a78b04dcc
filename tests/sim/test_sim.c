/* Integration tests of the Cumulocity simulator: a real mosquitto, the sim's
 * Paho client, and a "device" Paho client (or a raw socket) in this test. */
#include "broker.h"
#include "sim.h"

#include <MQTTAsync.h>
#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TENANT "t1"
#define USER "device"
#define PASSWORD "secret"
#define DEVICE "dev1"

/* ---- a minimal device client ----------------------------------------------
 */

typedef struct dev_msg {
  char *topic;
  char *payload;
} dev_msg;

/* pthread, not GMutex/GCond: GLib's are raw futexes that ThreadSanitizer
 * (scripts/check-tsan.sh) cannot see, so every access from Paho's callback
 * thread would be reported as a race. */
typedef struct dev {
  MQTTAsync c;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC, see dev_cond_wait_until */
  GPtrArray *msgs;   /* dev_msg* */
  bool connect_done;
  int connect_rc; /* 0 or Paho's failure code */
  bool sub_done;
  int sub_qos; /* granted QoS, 0x80 = refused, -1 = failure callback */
  bool lost;
} dev;

/* g_cond_wait_until's contract: `end` in g_get_monotonic_time() units;
 * false once it has passed. */
static bool dev_cond_wait_until(dev *d, gint64 end) {
  struct timespec dl = {.tv_sec = (time_t)(end / G_USEC_PER_SEC),
                        .tv_nsec = (long)(end % G_USEC_PER_SEC) * 1000};
  return pthread_cond_timedwait(&d->cv, &d->mu, &dl) != ETIMEDOUT;
}

static void dev_msg_free(gpointer p) {
  dev_msg *m = p;
  g_free(m->topic);
  g_free(m->payload);
  g_free(m);
}

static int dev_on_message(void *ctx, char *topic, int tlen,
                          MQTTAsync_message *m) {
  dev *d = ctx;
  dev_msg *dm = g_new0(dev_msg, 1);
  dm->topic = tlen > 0 ? g_strndup(topic, (gsize)tlen) : g_strdup(topic);
  dm->payload = g_strndup(m->payload, (gsize)m->payloadlen);
  pthread_mutex_lock(&d->mu);
  g_ptr_array_add(d->msgs, dm);
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void dev_on_lost(void *ctx, char *cause) {
  dev *d = ctx;
  pthread_mutex_lock(&d->mu);
  d->lost = true;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
}

static void dev_on_connect(void *ctx, MQTTAsync_successData *r) {
  dev *d = ctx;
  pthread_mutex_lock(&d->mu);
  d->connect_done = true;
  d->connect_rc = 0;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
}

static void dev_on_connect_fail(void *ctx, MQTTAsync_failureData *r) {
  dev *d = ctx;
  pthread_mutex_lock(&d->mu);
  d->connect_done = true;
  d->connect_rc = r && r->code ? r->code : -1;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
}

static void dev_on_sub(void *ctx, MQTTAsync_successData *r) {
  dev *d = ctx;
  pthread_mutex_lock(&d->mu);
  d->sub_done = true;
  d->sub_qos = r ? r->alt.qos : 0;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
}

static void dev_on_sub_fail(void *ctx, MQTTAsync_failureData *r) {
  dev *d = ctx;
  pthread_mutex_lock(&d->mu);
  d->sub_done = true;
  d->sub_qos = -1;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
}

/* Waits on d->cv until *flag or 5 s; call with d->mu held. */
static bool dev_wait_flag(dev *d, const bool *flag, int timeout_ms) {
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  while (!*flag)
    if (!dev_cond_wait_until(d, end))
      break;
  return *flag;
}

/* Connects as `user`; returns the device or NULL with *rc set. */
static dev *dev_connect(int port, const char *user, const char *password,
                        int *rc) {
  dev *d = g_new0(dev, 1);
  pthread_mutex_init(&d->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&d->cv, &ca);
  pthread_condattr_destroy(&ca);
  d->msgs = g_ptr_array_new_with_free_func(dev_msg_free);
  char *uri = g_strdup_printf("tcp://127.0.0.1:%d", port);
  static int seq;
  char *cid = g_strdup_printf("d:" DEVICE "-%d-%d", (int)getpid(),
                              g_atomic_int_add(&seq, 1));
  g_assert_cmpint(
      MQTTAsync_create(&d->c, uri, cid, MQTTCLIENT_PERSISTENCE_NONE, NULL), ==,
      MQTTASYNC_SUCCESS);
  MQTTAsync_setCallbacks(d->c, d, dev_on_lost, dev_on_message, NULL);
  MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
  co.keepAliveInterval = 30;
  co.cleansession = 1;
  co.username = user;
  co.password = password;
  co.connectTimeout = 5;
  co.MQTTVersion = MQTTVERSION_3_1_1; /* no slow fallback to 3.1 */
  co.onSuccess = dev_on_connect;
  co.onFailure = dev_on_connect_fail;
  co.context = d;
  g_assert_cmpint(MQTTAsync_connect(d->c, &co), ==, MQTTASYNC_SUCCESS);
  pthread_mutex_lock(&d->mu);
  bool done = dev_wait_flag(d, &d->connect_done, 8000);
  *rc = done ? d->connect_rc : -99;
  pthread_mutex_unlock(&d->mu);
  g_free(uri);
  g_free(cid);
  if (*rc == 0)
    return d;
  MQTTAsync_destroy(&d->c);
  g_ptr_array_free(d->msgs, TRUE);
  g_free(d);
  return NULL;
}

static dev *dev_connect_ok(sim *s) {
  int rc = -1;
  dev *d = dev_connect(sim_port(s), TENANT "/" USER, PASSWORD, &rc);
  g_assert_cmpint(rc, ==, 0);
  g_assert_nonnull(d);
  return d;
}

static void dev_close(dev *d) {
  if (!d)
    return;
  if (MQTTAsync_isConnected(d->c)) {
    MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
    dopt.timeout = 200;
    MQTTAsync_disconnect(d->c, &dopt);
    g_usleep(50 * 1000);
  }
  MQTTAsync_destroy(&d->c);
  g_ptr_array_free(d->msgs, TRUE);
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->cv);
  g_free(d);
}

/* Returns the granted QoS, 0x80 when refused by SUBACK, -1 on failure. */
static int dev_subscribe(dev *d, const char *topic) {
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess = dev_on_sub;
  ro.onFailure = dev_on_sub_fail;
  ro.context = d;
  pthread_mutex_lock(&d->mu);
  d->sub_done = false;
  pthread_mutex_unlock(&d->mu);
  g_assert_cmpint(MQTTAsync_subscribe(d->c, topic, 1, &ro), ==,
                  MQTTASYNC_SUCCESS);
  pthread_mutex_lock(&d->mu);
  bool done = dev_wait_flag(d, &d->sub_done, 5000);
  int q = d->sub_qos;
  pthread_mutex_unlock(&d->mu);
  g_assert_true(done);
  return q;
}

static void dev_publish(dev *d, const char *topic, const char *payload) {
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = (void *)payload;
  m.payloadlen = (int)strlen(payload);
  m.qos = 1;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  g_assert_cmpint(MQTTAsync_sendMessage(d->c, topic, &m, &ro), ==,
                  MQTTASYNC_SUCCESS);
  g_assert_cmpint(MQTTAsync_waitForCompletion(d->c, ro.token, 5000), ==,
                  MQTTASYNC_SUCCESS);
}

/* Index of the first message at >= *from on `topic` whose payload starts
 * with `prefix`; advances *from past it. -1 on timeout. */
static long dev_wait(dev *d, const char *topic, const char *prefix, guint *from,
                     int timeout_ms) {
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  long found = -1;
  pthread_mutex_lock(&d->mu);
  for (;;) {
    for (guint i = *from; i < d->msgs->len && found < 0; i++) {
      dev_msg *m = g_ptr_array_index(d->msgs, i);
      if (strcmp(m->topic, topic) == 0 && g_str_has_prefix(m->payload, prefix))
        found = (long)i;
    }
    if (found >= 0 || !dev_cond_wait_until(d, end))
      break;
  }
  if (found >= 0)
    *from = (guint)found + 1;
  pthread_mutex_unlock(&d->mu);
  return found;
}

static const char *dev_payload(dev *d, long index) {
  pthread_mutex_lock(&d->mu);
  dev_msg *m = g_ptr_array_index(d->msgs, (guint)index);
  pthread_mutex_unlock(&d->mu);
  return m->payload;
}

static guint dev_count(dev *d, const char *topic) {
  guint n = 0;
  pthread_mutex_lock(&d->mu);
  for (guint i = 0; i < d->msgs->len; i++)
    if (!topic ||
        strcmp(((dev_msg *)g_ptr_array_index(d->msgs, i))->topic, topic) == 0)
      n++;
  pthread_mutex_unlock(&d->mu);
  return n;
}

static sim *start_sim(void) {
  sim_options o = {.tenant = TENANT,
                   .user = USER,
                   .password = PASSWORD,
                   .device_id = DEVICE};
  sim *s = NULL;
  char err[512] = "";
  int rc = sim_start(&o, &s, err, sizeof err);
  if (rc != 0)
    g_error("sim_start: %s", err);
  g_assert_nonnull(s);
  g_assert_cmpint(sim_port(s), >, 0);
  return s;
}

/* Round trip through the sim so earlier publishes have been processed: the
 * broker keeps per-client order, and the sim handles messages in order. */
static void sync_with_sim(sim *s, dev *d, const char *topic) {
  size_t from = sim_message_count(s);
  char *marker =
      g_strdup_printf("400,c8y_Sync,%" G_GINT64_FORMAT, g_get_monotonic_time());
  dev_publish(d, topic, marker);
  g_assert_cmpint(sim_wait_line(s, topic, marker, from, 5000), >=, 0);
  g_free(marker);
}

/* ---- tests ----------------------------------------------------------------
 */

static void test_auth(void) {
  sim *s = start_sim();
  int rc = 0;
  dev *d = dev_connect(sim_port(s), TENANT "/" USER, "wrong-password", &rc);
  g_assert_null(d);
  g_assert_cmpint(rc, !=, 0);
  d = dev_connect(sim_port(s), "t2/" USER, PASSWORD, &rc);
  g_assert_null(d);
  g_assert_cmpint(rc, !=, 0);
  d = dev_connect(sim_port(s), NULL, NULL, &rc); /* anonymous */
  g_assert_null(d);
  g_assert_cmpint(rc, !=, 0);
  d = dev_connect_ok(s);
  dev_close(d);
  /* The simulator's workdir holds what the broker was started with. */
  char *conf = g_build_filename(sim_workdir(s), "mosquitto.conf", NULL);
  char *text = NULL;
  g_assert_true(g_file_get_contents(conf, &text, NULL, NULL));
  g_assert_nonnull(strstr(text, "allow_anonymous false"));
  g_assert_nonnull(strstr(text, "127.0.0.1"));
  g_free(text);
  char *wd = g_strdup(sim_workdir(s));
  sim_stop(s);
  g_assert_false(g_file_test(wd, G_FILE_TEST_EXISTS));
  g_free(wd);
  g_free(conf);
}

static void test_acl(void) {
  sim *s = start_sim();
  dev *d = dev_connect_ok(s);
  dev *spy = dev_connect_ok(s);
  /* mosquitto 2.0.11 grants subscriptions and applies "read" rules when
   * delivering, so the property to check is that nothing arrives. */
  int q = dev_subscribe(spy, "s/us");
  int qw = dev_subscribe(spy, "s/#");
  g_test_message("device subscribe s/us -> 0x%x, s/# -> 0x%x", q, qw);
  g_assert_cmpint(dev_subscribe(d, "s/ds"), ==, 1);
  dev_subscribe(d, "s/us");

  dev_publish(d, "s/us", "200,c8y_Temperature,T,25");
  g_assert_cmpint(sim_wait_line(s, "s/us", "200,c8y_Temperature", 0, 5000), >=,
                  0);
  /* A device may not publish downstream: nobody receives it. */
  dev_publish(spy, "s/ds", "510," DEVICE);
  /* The op the sim creates afterwards arrives, and the forged one never. */
  long op = sim_create_operation(s, "511," DEVICE ",ls");
  g_assert_cmpint(op, >, 0);
  guint from = 0;
  g_assert_cmpint(dev_wait(d, "s/ds", "511," DEVICE ",ls", &from, 5000), >=, 0);
  sync_with_sim(s, d, "s/us");
  guint zero = 0;
  g_assert_cmpint(dev_wait(d, "s/ds", "510", &zero, 200), ==, -1);
  g_assert_cmpuint(dev_count(spy, "s/us"), ==, 0);
  g_assert_cmpuint(dev_count(d, "s/us"), ==, 0);
  /* The sim ignores what it publishes itself: nothing downstream recorded. */
  g_assert_cmpuint(sim_count_lines(s, "s/ds", ""), ==, 0);
  dev_close(spy);
  dev_close(d);
  sim_stop(s);
}

static void test_device_create(void) {
  sim *s = start_sim();
  dev *d = dev_connect_ok(s);
  g_assert_cmpint(dev_subscribe(d, "s/e"), ==, 1);
  g_assert_cmpint(dev_subscribe(d, "s/ds"), ==, 1);
  g_assert_false(sim_device_exists(s, DEVICE));
  dev_publish(d, "s/us", "100,My device,c8y_Linux");
  sync_with_sim(s, d, "s/us");
  g_assert_true(sim_device_exists(s, DEVICE));
  guint from = 0;
  g_assert_cmpint(dev_wait(d, "s/e", "", &from, 300), ==, -1);
  dev_publish(d, "s/us", "100,My device,c8y_Linux");
  from = 0;
  long i = dev_wait(d, "s/e", "41,100", &from, 5000);
  g_assert_cmpint(i, >=, 0);
  g_assert_cmpstr(dev_payload(d, i), ==, "41,100,Device already existing");

  dev_publish(d, "s/us", "999,I made this up");
  i = dev_wait(d, "s/e", "40,999", &from, 5000);
  g_assert_cmpint(i, >=, 0);
  g_assert_cmpstr(dev_payload(d, i), ==,
                  "40,999,No static template for this message id");

  guint dfrom = 0;
  dev_publish(d, "s/us", "123");
  i = dev_wait(d, "s/ds", "124,", &dfrom, 5000);
  g_assert_cmpint(i, >=, 0);
  g_assert_cmpint(atol(dev_payload(d, i) + 4), >, 0);

  dev_publish(d, "s/us",
              "101," DEVICE ":child1,Child one\n101," DEVICE
              ":child2,Child two");
  dev_publish(d, "s/us", "105");
  i = dev_wait(d, "s/ds", "106", &dfrom, 5000);
  g_assert_cmpint(i, >=, 0);
  g_assert_cmpstr(dev_payload(d, i), ==,
                  "106," DEVICE ":child1," DEVICE ":child2");
  g_assert_true(sim_device_exists(s, DEVICE ":child2"));
  /* The child's own id differs from the root's. */
  dev_publish(d, "s/us/" DEVICE ":child1", "123");
  long j = dev_wait(d, "s/ds", "124,", &dfrom, 5000);
  g_assert_cmpint(j, >=, 0);
  g_assert_cmpstr(dev_payload(d, j), !=, "124,50001");
  dev_close(d);
  sim_stop(s);
}

static void test_operations(void) {
  sim *s = start_sim();
  dev *d = dev_connect_ok(s);
  g_assert_cmpint(dev_subscribe(d, "s/ds"), ==, 1);

  g_assert_cmpint(sim_create_operation(s, "999," DEVICE), ==, -1);
  g_assert_cmpint(sim_create_operation(s, "510"), ==, -1);
  g_assert_cmpint(sim_create_operation(s, "abc," DEVICE), ==, -1);
  g_assert_cmpint(sim_create_operation(s, "510," DEVICE "\n510," DEVICE), ==,
                  -1);
  g_assert_false(sim_operation_exists(s, 1));

  /* Delivered at creation while the device is subscribed. */
  long cmd = sim_create_operation(s, "511," DEVICE ",\"ls -l\"");
  g_assert_cmpint(cmd, >, 0);
  guint from = 0;
  long i = dev_wait(d, "s/ds", "511,", &from, 5000);
  g_assert_cmpint(i, >=, 0);
  g_assert_cmpstr(dev_payload(d, i), ==, "511," DEVICE ",\"ls -l\"");
  long restart = sim_create_operation(s, "510," DEVICE);
  long child = sim_create_operation(s, "510,child1");
  long cfg = sim_create_operation(s, "513," DEVICE ",\"a=1\nb=2\"");
  g_assert_cmpint(sim_operation_count(s), ==, 4);
  g_assert_cmpint(sim_operation_id_at(s, 1), ==, restart);
  g_assert_cmpint(sim_operation_status(s, cmd), ==, SIM_OP_PENDING);
  g_assert_cmpint(sim_wait_operation_done(s, cmd, 100), ==, -1);

  /* 500: every PENDING op in one publish, lines joined by LF. */
  dev_publish(d, "s/us", "500");
  i = dev_wait(d, "s/ds", "511," DEVICE ",\"ls -l\"\n", &from, 5000);
  g_assert_cmpint(i, >=, 0);
  g_assert_cmpstr(dev_payload(d, i), ==,
                  "511," DEVICE ",\"ls -l\"\n510," DEVICE "\n510,child1\n"
                  "513," DEVICE ",\"a=1\nb=2\"");

  /* 501/503 on the root: SUCCESSFUL with the result. */
  dev_publish(d, "s/us", "501,c8y_Command");
  sync_with_sim(s, d, "s/us");
  g_assert_cmpint(sim_operation_status(s, cmd), ==, SIM_OP_EXECUTING);
  dev_publish(d, "s/us", "503,c8y_Command,\"total 0\nfile, with comma\"");
  g_assert_cmpint(sim_wait_operation_done(s, cmd, 5000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(s, cmd), ==,
                  "total 0\nfile, with comma");

  /* Root 501 must not touch the child's c8y_Restart; packed payload. */
  dev_publish(d, "s/us",
              "501,c8y_Restart\n502,c8y_Restart,\"Could not "
              "restart\"");
  g_assert_cmpint(sim_wait_operation_done(s, restart, 5000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(s, restart), ==, "Could not restart");
  g_assert_cmpint(sim_operation_status(s, child), ==, SIM_OP_PENDING);
  /* 503 on a PENDING op does nothing. */
  dev_publish(d, "s/us/child1", "503,c8y_Restart");
  sync_with_sim(s, d, "s/us/child1");
  g_assert_cmpint(sim_operation_status(s, child), ==, SIM_OP_PENDING);
  dev_publish(d, "s/us/child1", "501,c8y_Restart\n503,c8y_Restart");
  g_assert_cmpint(sim_wait_operation_done(s, child, 5000), ==,
                  SIM_OP_SUCCESSFUL);
  g_assert_null(sim_operation_detail(s, child));

  /* Several params are kept as CSV. */
  dev_publish(d, "s/us", "501,c8y_Configuration");
  dev_publish(d, "s/us", "503,c8y_Configuration,a,\"b,c\"");
  g_assert_cmpint(sim_wait_operation_done(s, cfg, 5000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(s, cfg), ==, "a,\"b,c\"");

  /* Nothing PENDING left: 500 publishes nothing. */
  guint before = dev_count(d, "s/ds");
  dev_publish(d, "s/us", "500");
  sync_with_sim(s, d, "s/us");
  g_usleep(100 * 1000);
  g_assert_cmpuint(dev_count(d, "s/ds"), ==, before);

  /* Upstream lines are recorded per message; lines are counted. */
  g_assert_cmpuint(sim_count_lines(s, "s/us", "501,"), ==, 3);
  g_assert_cmpuint(sim_count_lines(s, "s/us/child1", "50"), ==, 3);
  g_assert_cmpint(sim_wait_line(s, "s/us", "502,c8y_Restart", 0, 10), >=, 0);
  g_assert_cmpint(sim_wait_line(s, "s/us", "502,c8y_Command", 0, 10), ==, -1);
  dev_close(d);
  sim_stop(s);
}

/* MQTT 3.1.1 CONNECT with a QoS 1 will; built before fork so the child only
 * makes syscalls. */
static size_t build_connect(unsigned char *buf, size_t cap, const char *cid,
                            const char *will_topic, const char *will_msg,
                            const char *user, const char *pass) {
  unsigned char body[512];
  size_t n = 0;
  body[n++] = 0;
  body[n++] = 4;
  memcpy(body + n, "MQTT", 4);
  n += 4;
  body[n++] = 4;    /* protocol level 3.1.1 */
  body[n++] = 0xCE; /* user, password, will QoS 1, will, clean session */
  body[n++] = 0;
  body[n++] = 60;
  const char *fields[] = {cid, will_topic, will_msg, user, pass};
  for (size_t i = 0; i < 5; i++) {
    size_t l = strlen(fields[i]);
    g_assert_cmpuint(n + 2 + l, <, sizeof body);
    body[n++] = (unsigned char)(l >> 8);
    body[n++] = (unsigned char)(l & 0xff);
    memcpy(body + n, fields[i], l);
    n += l;
  }
  g_assert_cmpuint(n, <, 16384);
  size_t o = 0;
  buf[o++] = 0x10;
  size_t rl = n;
  do {
    unsigned char b = rl % 128;
    rl /= 128;
    buf[o++] = (unsigned char)(b | (rl ? 0x80 : 0));
  } while (rl);
  g_assert_cmpuint(o + n, <=, cap);
  memcpy(buf + o, body, n);
  return o + n;
}

static void test_will(void) {
  sim *s = start_sim();
  unsigned char pkt[600];
  size_t len = build_connect(pkt, sizeof pkt, "d:" DEVICE, "s/us",
                             "400,c8y_ConnectionEvent,\"Connection lost\"",
                             TENANT "/" USER, PASSWORD);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)sim_port(s)),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
      _exit(2);
    if (write(fd, pkt, len) != (ssize_t)len)
      _exit(3);
    unsigned char ack[4];
    size_t got = 0;
    while (got < 4) {
      ssize_t r = read(fd, ack + got, 4 - got);
      if (r <= 0)
        _exit(4);
      got += (size_t)r;
    }
    if (ack[0] != 0x20 || ack[3] != 0)
      _exit(5);
    _exit(9); /* dies without DISCONNECT: the broker publishes the will */
  }
  int st = 0;
  g_assert_cmpint(waitpid(pid, &st, 0), ==, pid);
  g_assert_true(WIFEXITED(st));
  g_assert_cmpint(WEXITSTATUS(st), ==, 9);
  long i = sim_wait_line(s, "s/us", "400,c8y_ConnectionEvent", 0, 5000);
  g_assert_cmpint(i, >=, 0);
  const sim_message *m = sim_message_at(s, (size_t)i);
  g_assert_nonnull(m);
  g_assert_cmpstr(m->payload, ==,
                  "400,c8y_ConnectionEvent,\"Connection lost\"");
  g_assert_cmpuint(m->len, ==, strlen(m->payload));
  g_assert_cmpint(m->t_ms, >, 0);
  g_assert_null(sim_message_at(s, sim_message_count(s)));
  sim_stop(s);
}

static void test_broker_restart(void) {
  sim *s = start_sim();
  int port = sim_port(s);
  dev *d = dev_connect_ok(s);
  dev_publish(d, "s/us", "100");
  sync_with_sim(s, d, "s/us");
  g_assert_cmpint(sim_broker_kill(s), ==, 0);
  /* Bounded wait for both clients to notice. */
  pthread_mutex_lock(&d->mu);
  g_assert_true(dev_wait_flag(d, &d->lost, 5000));
  pthread_mutex_unlock(&d->mu);
  int rc = 0;
  g_assert_null(dev_connect(port, TENANT "/" USER, PASSWORD, &rc));
  g_assert_cmpint(rc, !=, 0);
  dev_close(d);

  g_assert_cmpint(sim_broker_start(s), ==, 0);
  g_assert_cmpint(sim_port(s), ==, port);
  g_assert_true(sim_connected(s));
  d = dev_connect_ok(s);
  g_assert_cmpint(dev_subscribe(d, "s/e"), ==, 1);
  g_assert_cmpint(dev_subscribe(d, "s/ds"), ==, 1);
  /* The device survives the restart on the platform side. */
  dev_publish(d, "s/us", "100");
  guint from = 0;
  g_assert_cmpint(
      dev_wait(d, "s/e", "41,100,Device already existing", &from, 5000), >=, 0);
  long op = sim_create_operation(s, "510," DEVICE);
  from = 0;
  g_assert_cmpint(dev_wait(d, "s/ds", "510," DEVICE, &from, 5000), >=, 0);
  g_assert_cmpint(sim_publish(s, "s/ds", "511," DEVICE ",raw"), ==, 0);
  g_assert_cmpint(dev_wait(d, "s/ds", "511," DEVICE ",raw", &from, 5000), >=,
                  0);
  g_assert_cmpint(sim_operation_status(s, op), ==, SIM_OP_PENDING);
  dev_close(d);
  sim_stop(s);
}

/* Our own $7$ hashes (used when mosquitto_passwd is missing) must be
 * accepted by mosquitto. */
static void test_broker_hash(void) {
  char *dir = g_dir_make_tmp("c8y-broker-XXXXXX", NULL);
  g_assert_nonnull(dir);
  char *pw = g_build_filename(dir, "pw", NULL);
  char *acl = g_build_filename(dir, "acl", NULL);
  char hash[256];
  g_assert_cmpint(broker_hash_password("p@ss word", hash, sizeof hash), ==, 0);
  g_assert_true(g_str_has_prefix(hash, "$7$101$"));
  char *text = g_strdup_printf("u1:%s\n", hash);
  g_assert_true(g_file_set_contents(pw, text, -1, NULL));
  g_assert_true(
      g_file_set_contents(acl, "user u1\ntopic readwrite #\n", -1, NULL));
  broker *b = NULL;
  char err[512] = "";
  if (broker_start(dir, pw, acl, 0, &b, err, sizeof err) != 0)
    g_error("broker_start: %s", err);
  g_assert_cmpint(broker_pid(b), >, 0);
  int rc = 0;
  dev *d = dev_connect(broker_port(b), "u1", "p@ss word", &rc);
  g_assert_cmpint(rc, ==, 0);
  dev_close(d);
  g_assert_null(dev_connect(broker_port(b), "u1", "p@ss wore", &rc));
  /* A fixed port that is taken is reported, not silently replaced. */
  broker *b2 = NULL;
  char *dir2 = g_dir_make_tmp("c8y-broker-XXXXXX", NULL);
  g_assert_nonnull(dir2);
  g_assert_cmpint(
      broker_start(dir2, pw, acl, broker_port(b), &b2, err, sizeof err), ==,
      -1);
  char *rm2 = g_strdup_printf("rm -rf '%s'", dir2);
  g_assert_cmpint(system(rm2), ==, 0);
  g_free(rm2);
  g_free(dir2);
  g_assert_null(b2);
  g_test_message("second broker on a taken port: %s", err);
  g_assert_cmpuint(strlen(err), >, 0);
  g_assert_null(strchr(err, '\n'));
  broker_stop(b);

  /* broker_write_passwd (mosquitto_passwd or our hash) round trip. */
  broker_user users[] = {{"a/b", "x"}, {"sim", "y"}};
  g_assert_cmpint(broker_write_passwd(pw, users, 2, err, sizeof err), ==, 0);
  g_assert_true(
      g_file_set_contents(acl, "user a/b\ntopic readwrite #\n", -1, NULL));
  g_assert_cmpint(broker_start(dir, pw, acl, 0, &b, err, sizeof err), ==, 0);
  d = dev_connect(broker_port(b), "a/b", "x", &rc);
  g_assert_cmpint(rc, ==, 0);
  dev_close(d);
  broker_user bad[] = {{"c:d", "x"}};
  g_assert_cmpint(broker_write_passwd(pw, bad, 1, err, sizeof err), ==, -1);
  broker_stop(b);

  char *rm = g_strdup_printf("rm -rf '%s'", dir);
  g_assert_cmpint(system(rm), ==, 0);
  g_free(rm);
  g_free(text);
  g_free(pw);
  g_free(acl);
  g_free(dir);
}

static void test_cli(void) {
  const char *bdir = g_getenv("G_TEST_BUILDDIR");
  if (!bdir) {
    g_test_skip("G_TEST_BUILDDIR not set");
    return;
  }
  char *exe = g_build_filename(bdir, "c8y-sim", NULL);
  g_assert_true(g_file_test(exe, G_FILE_TEST_IS_EXECUTABLE));
  char *cmd = g_strdup_printf(
      "printf 'op 513,c8y-agent-local,x\\nbogus\\nstatus\\nquit\\n' | "
      "timeout 20 '%s' --port 0 --http-port 0 --quiet "
      "--op 510,c8y-agent-local",
      exe);
  char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  char *out = NULL, *errs = NULL;
  int status = -1;
  g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                             &out, &errs, &status, NULL));
  g_test_message("stdout: %s\nstderr: %s", out, errs);
  g_assert_true(g_spawn_check_wait_status(status, NULL));
  g_assert_nonnull(strstr(out, "op 1001 created"));
  g_assert_nonnull(strstr(out, "op 1002 created"));
  g_assert_nonnull(strstr(out, "error: unknown command 'bogus'"));
  g_assert_nonnull(strstr(out, "op 1001 PENDING 510,c8y-agent-local"));
  g_assert_nonnull(strstr(out, "op 1002 PENDING 513,c8y-agent-local,x"));
  g_assert_nonnull(strstr(errs, "user local/device"));
  g_free(out);
  g_free(errs);
  g_free(cmd);

  /* A bad --op is a one-line error and a non-zero exit. */
  cmd = g_strdup_printf("timeout 20 '%s' --port 0 --op 999,x </dev/null", exe);
  char *argv2[] = {"/bin/sh", "-c", cmd, NULL};
  g_assert_true(g_spawn_sync(NULL, argv2, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                             &out, &errs, &status, NULL));
  g_assert_false(g_spawn_check_wait_status(status, NULL));
  g_assert_nonnull(strstr(errs, "--op 1: '999,x'"));
  g_free(out);
  g_free(errs);
  g_free(cmd);
  g_free(exe);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  signal(SIGPIPE, SIG_IGN);
  g_test_add_func("/sim/auth", test_auth);
  g_test_add_func("/sim/acl", test_acl);
  g_test_add_func("/sim/device_create", test_device_create);
  g_test_add_func("/sim/operations", test_operations);
  g_test_add_func("/sim/will", test_will);
  g_test_add_func("/sim/broker_restart", test_broker_restart);
  g_test_add_func("/sim/broker_hash", test_broker_hash);
  g_test_add_func("/sim/cli", test_cli);
  return g_test_run();
}
