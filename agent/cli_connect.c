#include "cli_connect.h"

#include "bootstrap.h"
#include "config.h"
#include "log.h"
#include "netdiag.h"
#include "session.h"
#include "x509.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDTRIP_ID 1

typedef struct conn_test {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool connected, failed, lost, delivered, delivered_ok, answered;
  int code;
  char text[512];
  char answer[128]; /* the 124 line, if any */
} conn_test;

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ct_update(conn_test *t, void (*fn)(conn_test *, const void *),
                      const void *arg) {
  pthread_mutex_lock(&t->mu);
  fn(t, arg);
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

static void set_connected(conn_test *t, const void *a) {
  (void)a;
  t->connected = true;
}
static void cb_connected(void *ctx) { ct_update(ctx, set_connected, NULL); }

typedef struct failure {
  int code;
  const char *text;
} failure;
static void set_failed(conn_test *t, const void *a) {
  const failure *f = a;
  t->failed = true;
  t->code = f->code;
  snprintf(t->text, sizeof t->text, "%s", f->text ? f->text : "");
}
static void cb_connect_failed(void *ctx, int code, const char *message) {
  failure f = {code, message};
  ct_update(ctx, set_failed, &f);
}

static void set_lost(conn_test *t, const void *a) {
  t->lost = true;
  snprintf(t->text, sizeof t->text, "%s", (const char *)a);
}
static void cb_lost(void *ctx, const char *cause) {
  ct_update(ctx, set_lost, cause ? cause : "connection lost");
}

static void set_answer(conn_test *t, const void *a) {
  if (!t->answered)
    snprintf(t->answer, sizeof t->answer, "%s", (const char *)a);
  t->answered = true;
}
static void cb_message(void *ctx, const char *topic, const char *payload,
                       size_t len) {
  if (strcmp(topic, "s/ds") != 0)
    return;
  /* Several records may come in one message: take the 124 line. */
  char line[128];
  for (const char *p = payload; p < payload + len;) {
    const char *eol = memchr(p, '\n', (size_t)(payload + len - p));
    size_t l = eol ? (size_t)(eol - p) : (size_t)(payload + len - p);
    if (l > 4 && l < sizeof line && strncmp(p, "124,", 4) == 0) {
      memcpy(line, p, l);
      line[l] = '\0';
      line[strcspn(line, "\r")] = '\0';
      ct_update(ctx, set_answer, line);
      return;
    }
    p += l + 1;
  }
}

static void set_delivered(conn_test *t, const void *a) {
  t->delivered = true;
  t->delivered_ok = *(const bool *)a;
}
static void cb_delivered(void *ctx, uint64_t id, bool ok) {
  if (id == ROUNDTRIP_ID)
    ct_update(ctx, set_delivered, &ok);
}

/* Waits until *flag or any failure, at most until `until` (monotonic ms). */
static void ct_wait(conn_test *t, const bool *flag, long long until) {
  pthread_mutex_lock(&t->mu);
  while (!*flag && !t->failed && !t->lost) {
    long long left = until - mono_ms();
    if (left <= 0)
      break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = ts.tv_nsec + (left % 1000) * 1000000LL;
    ts.tv_sec += left / 1000 + ns / 1000000000LL;
    ts.tv_nsec = (long)(ns % 1000000000LL);
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
  }
  pthread_mutex_unlock(&t->mu);
}

static void report(void *ctx, int step, bool ok, const char *text) {
  (void)ctx;
  printf("[%s] %-10s %s\n", ok ? " ok " : "FAIL", netdiag_step_name(step),
         text);
  fflush(stdout);
}

static int failed_at(int step, const char *why) {
  printf("connection test FAILED at step %s: %s\n", netdiag_step_name(step),
         why);
  return CLI_CONNECT_FAILED;
}

/* CONNECT and one round trip through the agent's own session code; as the
 * bootstrap user (registration) only the CONNECT. */
static int mqtt_steps(const agent_config *cfg, int timeout_s,
                      bool registration) {
  conn_test t;
  memset(&t, 0, sizeof t);
  pthread_mutex_init(&t.mu, NULL);
  pthread_cond_init(&t.cv, NULL);
  session_callbacks cb = {.ctx = &t,
                          .connected = cb_connected,
                          .connect_failed = cb_connect_failed,
                          .lost = cb_lost,
                          .message = cb_message,
                          .delivered = cb_delivered};
  session *s = NULL;
  char err[1024];
  int rc = 0;
  /* The bootstrap user connects the way the registration does (clientId
   * = the plain device id), not as the device will once registered. */
  int new_rc = registration
                   ? session_new_bootstrap(cfg, &cb, &s, err, sizeof err)
                   : session_new(cfg, &cb, &s, err, sizeof err);
  if (new_rc != 0) {
    report(NULL, NETDIAG_MQTT, false, err);
    rc = failed_at(NETDIAG_MQTT, err);
    goto out;
  }
  long long t0 = mono_ms();
  if (session_connect(s) != 0) {
    report(NULL, NETDIAG_MQTT, false, "cannot start connecting");
    rc = failed_at(NETDIAG_MQTT, "cannot start connecting");
    goto out;
  }
  ct_wait(&t, &t.connected, t0 + timeout_s * 1000LL);
  char *user = config_username(cfg);
  char line[1024];
  if (!t.connected) {
    if (t.failed && t.code > 0)
      snprintf(line, sizeof line, "CONNACK %d (%s): %s", t.code,
               session_connack_text(t.code), netdiag_connack_meaning(t.code));
    else
      snprintf(line, sizeof line, "%s",
               t.failed || t.lost ? t.text : "no CONNACK in time");
    report(NULL, NETDIAG_MQTT, false, line);
    free(user);
    rc = failed_at(NETDIAG_MQTT, line);
    goto out;
  }
  snprintf(line, sizeof line, "CONNACK 0: connected as %s (%lld ms)",
           user ? user : "the certificate's CN", mono_ms() - t0);
  free(user);
  report(NULL, NETDIAG_MQTT, true, line);
  if (registration) {
    printf("[skip] %-10s the bootstrap user may only ask for credentials\n",
           netdiag_step_name(NETDIAG_ROUNDTRIP));
    goto done;
  }
  /* 123 asks for the device's managed-object id: harmless, and the PUBACK
   * proves the broker took it. */
  t0 = mono_ms();
  session_subscribe(s, "s/ds", 1);
  if (session_publish(s, "s/us", "123", 3, 1, ROUNDTRIP_ID) != 0) {
    report(NULL, NETDIAG_ROUNDTRIP, false, "cannot publish on s/us");
    rc = failed_at(NETDIAG_ROUNDTRIP, "cannot publish on s/us");
    goto out;
  }
  ct_wait(&t, &t.delivered, t0 + timeout_s * 1000LL);
  if (!t.delivered || !t.delivered_ok) {
    snprintf(line, sizeof line, "no PUBACK for 123 on s/us%s%s",
             t.lost ? ": " : " in time", t.lost ? t.text : "");
    report(NULL, NETDIAG_ROUNDTRIP, false, line);
    rc = failed_at(NETDIAG_ROUNDTRIP, line);
    goto out;
  }
  long long acked = mono_ms() - t0;
  ct_wait(&t, &t.answered, mono_ms() + 3000);
  pthread_mutex_lock(&t.mu);
  if (t.answered)
    snprintf(line, sizeof line,
             "123 on s/us acknowledged (%lld ms), answer %s on s/ds (%lld ms)",
             acked, t.answer, mono_ms() - t0);
  else
    snprintf(line, sizeof line,
             "123 on s/us acknowledged (%lld ms); no 124 answer on s/ds "
             "within 3 s",
             acked);
  pthread_mutex_unlock(&t.mu);
  report(NULL, NETDIAG_ROUNDTRIP, true, line);
done:
  printf("connection test passed\n");
out:
  if (s) {
    session_disconnect(s, 1000);
    /* Paho calls onFailure before it is done with the failed attempt;
     * destroying the client at once races with its threads (a double free
     * seen with 1.3.12, paho.mqtt.c issue #323). */
    if (rc != 0) {
      struct timespec grace = {0, 200 * 1000000L};
      nanosleep(&grace, NULL);
    }
    session_free(s);
  }
  pthread_cond_destroy(&t.cv);
  pthread_mutex_destroy(&t.mu);
  return rc;
}

static void usage(FILE *f) {
  fputs("usage: c8y-agent [-c FILE] connect --test [--timeout SECONDS]\n"
        "Checks each step of the connection with the configured settings:\n"
        "DNS, TCP, TLS, MQTT CONNECT, one round trip (123 on s/us).\n"
        "Exit status: 0 all passed, 1 configuration error, 4 a step "
        "failed.\n"
        "A running agent with the same device id is disconnected briefly\n"
        "(one client per device id) and reconnects by itself.\n",
        f);
}

int cli_connect_main(const char *config, int argc, char **argv) {
  bool test = false;
  long timeout_s = 10;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--test") == 0) {
      test = true;
    } else if ((strcmp(argv[i], "-c") == 0 ||
                strcmp(argv[i], "--config") == 0) &&
               i + 1 < argc) {
      config = argv[++i];
    } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
      char *end;
      timeout_s = strtol(argv[++i], &end, 10);
      if (*end || timeout_s < 1 || timeout_s > 300) {
        fprintf(stderr,
                "c8y-agent connect: --timeout %s: not a number of "
                "seconds in 1..300\n",
                argv[i]);
        return 2;
      }
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "c8y-agent connect: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (!test) {
    usage(stderr);
    return 2;
  }
  agent_config cfg;
  char err[1024];
  if (config_load(config, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  log_set_level(cfg.log_level < LOG_LVL_WARNING ? cfg.log_level
                                                : LOG_LVL_WARNING);
  int rc = 1;
  if (cfg.cert_file &&
      x509_check_device_cert(cfg.cert_file, cfg.key_file, cfg.device_id, err,
                             sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    goto out;
  }
  if (bootstrap_load_stored(&cfg, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    goto out;
  }
  bool bootstrap_user = bootstrap_wanted(&cfg);
  if (bootstrap_user) {
    /* Not registered yet: test what the registration would use. */
    const char *slash = strchr(cfg.bootstrap_user, '/');
    cfg.tenant =
        strndup(cfg.bootstrap_user, (size_t)(slash - cfg.bootstrap_user));
    cfg.user = strdup(slash + 1);
    if (cfg.password)
      explicit_bzero(cfg.password, strlen(cfg.password));
    free(cfg.password);
    cfg.password = strdup(cfg.bootstrap_password);
  }
  char *cid = bootstrap_user ? strdup(cfg.device_id) : config_client_id(&cfg);
  char *user = config_username(&cfg);
  printf("Testing %s://%s:%d as %s%s (clientId %s), %s\n",
         cfg.tls ? "ssl" : "tcp", cfg.host, cfg.port,
         cfg.cert_file ? "the certificate " : "",
         cfg.cert_file ? cfg.cert_file : (user ? user : "?"), cid ? cid : "?",
         cfg.local_sim    ? "local simulator"
         : bootstrap_user ? "bootstrap user (the device has no credentials yet)"
                          : "Cumulocity tenant");
  free(cid);
  free(user);
  fflush(stdout);
  char why[1024];
  int step =
      netdiag_probe(&cfg, (int)timeout_s * 1000, report, NULL, why, sizeof why);
  if (step)
    rc = failed_at(step, why);
  else
    rc = mqtt_steps(&cfg, (int)timeout_s, bootstrap_user);
out:
  config_free(&cfg);
  return rc;
}
