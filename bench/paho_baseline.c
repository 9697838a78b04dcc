/* c8y-bench-paho: the raw Eclipse Paho MQTTAsync baseline the benchmark
 * compares c8y-agent against. It does only the MQTT part of the agent's job,
 * with the same library (paho-mqtt3as) and the same connect options (MQTT
 * 3.1.1, clean session, keepalive 60), so every ratio shows what the agent
 * costs on top of a bare client:
 *
 *   idle    connect, publish "ready" on bench/ready, stay idle until SIGTERM
 *   publish publish "200,c8y_Seq,n,<i>" for i = 1..lines on s/us, ONE line
 *           per message, keeping at most `window` publishes outstanding
 *           (completed = onSuccess: PUBACK for QoS 1, written for QoS 0);
 *           exits once all completed
 *   echo    subscribe bench/in (QoS 1, as the agent subscribes s/ds);
 *           republish every message unchanged on bench/out with QOS from
 *           the main thread; "ready" after the subscription is granted;
 *           runs until SIGTERM
 *
 * usage: c8y-bench-paho MODE PORT USER [LINES QOS WINDOW]
 * The password comes from $C8Y_BENCH_PASSWORD (kept off the command line).
 * Exit status: 0 ok, 1 MQTT failure, 2 usage. */
#include <MQTTAsync.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_MS 30000 /* bound for every wait on the broker */
#define ECHO_QUEUE 64

typedef struct base {
  MQTTAsync client;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int connected; /* 0 pending, 1 ok, -1 failed */
  int subscribed;
  long outstanding;
  long failed;
  char *echoes[ECHO_QUEUE]; /* payloads waiting to be republished */
  int nechoes;
} base;

static volatile sig_atomic_t stop_requested;

static void on_term(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void deadline_in(struct timespec *ts, int ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static void signal_locked(base *b) {
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *r) {
  (void)r;
  base *b = ctx;
  pthread_mutex_lock(&b->mu);
  b->connected = 1;
  signal_locked(b);
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData *r) {
  base *b = ctx;
  fprintf(stderr, "c8y-bench-paho: connect failed: %d %s\n", r ? r->code : 0,
          r && r->message ? r->message : "");
  pthread_mutex_lock(&b->mu);
  b->connected = -1;
  signal_locked(b);
}

static void on_sub_ok(void *ctx, MQTTAsync_successData *r) {
  (void)r;
  base *b = ctx;
  pthread_mutex_lock(&b->mu);
  b->subscribed = 1;
  signal_locked(b);
}

static void on_sub_fail(void *ctx, MQTTAsync_failureData *r) {
  (void)r;
  base *b = ctx;
  pthread_mutex_lock(&b->mu);
  b->subscribed = -1;
  signal_locked(b);
}

static void on_pub_ok(void *ctx, MQTTAsync_successData *r) {
  (void)r;
  base *b = ctx;
  pthread_mutex_lock(&b->mu);
  b->outstanding--;
  signal_locked(b);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *r) {
  (void)r;
  base *b = ctx;
  pthread_mutex_lock(&b->mu);
  b->outstanding--;
  b->failed++;
  signal_locked(b);
}

static void on_lost(void *ctx, char *cause) {
  base *b = ctx;
  fprintf(stderr, "c8y-bench-paho: connection lost: %s\n", cause ? cause : "");
  pthread_mutex_lock(&b->mu);
  b->connected = -1;
  signal_locked(b);
}

/* Echo: the arrival callback hands the payload to the main thread, which
 * republishes it, as the agent hands messages to its main loop. */
static int on_message(void *ctx, char *topic, int topiclen,
                      MQTTAsync_message *m) {
  (void)topiclen;
  base *b = ctx;
  if (strcmp(topic, "bench/in") == 0) {
    char *copy = malloc((size_t)m->payloadlen + 1);
    if (copy) {
      memcpy(copy, m->payload, (size_t)m->payloadlen);
      copy[m->payloadlen] = 0;
      pthread_mutex_lock(&b->mu);
      if (b->nechoes < ECHO_QUEUE)
        b->echoes[b->nechoes++] = copy;
      else
        free(copy);
      signal_locked(b);
    }
  }
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

/* Waits until *field leaves 0; returns its value (0 on timeout). */
static int wait_state(base *b, const int *field) {
  struct timespec dl;
  deadline_in(&dl, WAIT_MS);
  pthread_mutex_lock(&b->mu);
  while (*field == 0 && b->connected >= 0 &&
         pthread_cond_timedwait(&b->cv, &b->mu, &dl) != ETIMEDOUT) {
  }
  int v = *field;
  if (b->connected < 0)
    v = -1;
  pthread_mutex_unlock(&b->mu);
  return v;
}

static int publish(base *b, const char *topic, const char *payload, int qos,
                   bool track) {
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = (void *)payload;
  m.payloadlen = (int)strlen(payload);
  m.qos = qos;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  if (track) {
    ro.onSuccess = on_pub_ok;
    ro.onFailure = on_pub_fail;
    ro.context = b;
  }
  int rc = MQTTAsync_sendMessage(b->client, topic, &m, &ro);
  if (rc != MQTTASYNC_SUCCESS)
    fprintf(stderr, "c8y-bench-paho: publish on %s: %s\n", topic,
            MQTTAsync_strerror(rc));
  return rc == MQTTASYNC_SUCCESS ? 0 : -1;
}

/* Keeps `window` publishes outstanding; returns 0 once all completed. */
static int run_publish(base *b, long lines, int qos, long window) {
  char payload[64];
  struct timespec dl;
  for (long i = 1; i <= lines; i++) {
    deadline_in(&dl, WAIT_MS);
    pthread_mutex_lock(&b->mu);
    while (b->outstanding >= window && b->connected > 0 &&
           pthread_cond_timedwait(&b->cv, &b->mu, &dl) != ETIMEDOUT) {
    }
    bool ok = b->outstanding < window && b->connected > 0;
    if (ok)
      b->outstanding++;
    pthread_mutex_unlock(&b->mu);
    if (!ok || stop_requested) {
      fprintf(stderr, "c8y-bench-paho: stalled at line %ld\n", i);
      return -1;
    }
    snprintf(payload, sizeof payload, "200,c8y_Seq,n,%ld", i);
    if (publish(b, "s/us", payload, qos, true) != 0)
      return -1;
  }
  deadline_in(&dl, WAIT_MS);
  pthread_mutex_lock(&b->mu);
  while (b->outstanding > 0 && b->connected > 0 &&
         pthread_cond_timedwait(&b->cv, &b->mu, &dl) != ETIMEDOUT) {
  }
  int rc = b->outstanding == 0 && b->failed == 0 ? 0 : -1;
  if (rc != 0)
    fprintf(stderr, "c8y-bench-paho: %ld outstanding, %ld failed\n",
            b->outstanding, b->failed);
  pthread_mutex_unlock(&b->mu);
  return rc;
}

/* Idle (or echo) until SIGTERM; the condition wait is bounded so the
 * signal flag is seen within 20 ms. */
static void serve_until_term(base *b, int qos) {
  while (!stop_requested) {
    struct timespec dl;
    deadline_in(&dl, 20);
    pthread_mutex_lock(&b->mu);
    if (b->nechoes == 0)
      pthread_cond_timedwait(&b->cv, &b->mu, &dl);
    char *batch[ECHO_QUEUE];
    int n = b->nechoes;
    memcpy(batch, b->echoes, (size_t)n * sizeof *batch);
    b->nechoes = 0;
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < n; i++) {
      publish(b, "bench/out", batch[i], qos, false);
      free(batch[i]);
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr,
            "usage: %s idle|publish|echo PORT USER [LINES QOS WINDOW]\n",
            argv[0]);
    return 2;
  }
  const char *mode = argv[1];
  const char *password = getenv("C8Y_BENCH_PASSWORD");
  long lines = argc > 4 ? atol(argv[4]) : 0;
  int qos = argc > 5 ? atoi(argv[5]) : 1;
  long window = argc > 6 ? atol(argv[6]) : 64;
  bool is_pub = strcmp(mode, "publish") == 0;
  if ((!is_pub && strcmp(mode, "idle") != 0 && strcmp(mode, "echo") != 0) ||
      (is_pub &&
       (lines < 1 || qos < 0 || qos > 1 || window < 1 || window > 30000))) {
    fprintf(stderr,
            "%s: bad mode or publish arguments (LINES >= 1, QOS 0|1, "
            "WINDOW 1..30000)\n",
            argv[0]);
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  char uri[64];
  snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", atoi(argv[2]));
  char client_id[64];
  snprintf(client_id, sizeof client_id, "bench-paho-%s-%ld", mode,
           (long)getpid());
  base b = {.outstanding = 0};
  pthread_mutex_init(&b.mu, NULL);
  pthread_cond_init(&b.cv, NULL);
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
  co.MQTTVersion = MQTTVERSION_3_1_1;
  co.sendWhileDisconnected = 0;
  /* Paho refuses sends beyond maxBufferedMessages queued commands (default
   * 100) even while connected: leave room for the whole window. */
  co.maxBufferedMessages = (int)(window * 2 < 100 ? 100 : window * 2);
  if (MQTTAsync_createWithOptions(&b.client, uri, client_id,
                                  MQTTCLIENT_PERSISTENCE_NONE, NULL,
                                  &co) != MQTTASYNC_SUCCESS) {
    fprintf(stderr, "%s: cannot create the client\n", argv[0]);
    return 1;
  }
  MQTTAsync_setCallbacks(b.client, &b, on_lost, on_message, NULL);
  MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
  o.keepAliveInterval = 60;
  o.cleansession = 1;
  o.MQTTVersion = MQTTVERSION_3_1_1;
  /* Twice the application window, like the agent (8 batches in a Paho
   * window of 64): Debian's Paho 1.3.12 stalls up to 1 s on a full table. */
  o.maxInflight = (int)(window * 2 < 64 ? 64 : window * 2);
  o.connectTimeout = 15;
  o.username = argv[3];
  o.password = password;
  o.onSuccess = on_connect_ok;
  o.onFailure = on_connect_fail;
  o.context = &b;
  int rc = 1;
  if (MQTTAsync_connect(b.client, &o) != MQTTASYNC_SUCCESS ||
      wait_state(&b, &b.connected) != 1) {
    fprintf(stderr, "%s: not connected to %s\n", argv[0], uri);
    goto out;
  }
  if (is_pub) {
    rc = run_publish(&b, lines, qos, window) == 0 ? 0 : 1;
  } else {
    if (strcmp(mode, "echo") == 0) {
      MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
      ro.onSuccess = on_sub_ok;
      ro.onFailure = on_sub_fail;
      ro.context = &b;
      if (MQTTAsync_subscribe(b.client, "bench/in", 1, &ro) !=
              MQTTASYNC_SUCCESS ||
          wait_state(&b, &b.subscribed) != 1) {
        fprintf(stderr, "%s: cannot subscribe to bench/in\n", argv[0]);
        goto out;
      }
    }
    if (publish(&b, "bench/ready", mode, 1, false) != 0)
      goto out;
    serve_until_term(&b, qos);
    rc = 0;
  }
out:
  if (MQTTAsync_isConnected(b.client)) {
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = 1000;
    MQTTAsync_disconnect(b.client, &d);
    struct timespec ts = {0, 50 * 1000000L};
    for (int i = 0; i < 40 && MQTTAsync_isConnected(b.client); i++)
      nanosleep(&ts, NULL);
  }
  MQTTAsync_destroy(&b.client);
  pthread_mutex_destroy(&b.mu);
  pthread_cond_destroy(&b.cv);
  return rc;
}
