#include "session.h"

#include "log.h"
#include "services.h"

#include <MQTTAsync.h>
#include <c8y/plugin.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct session {
  MQTTAsync client;
  session_callbacks cb;
  char uri[600];
  char *client_id;
  char *username;
  char *password;
  char *ca_file;
  char *ca_dir;
  char *cert_file;
  char *key_file;
  bool tls;
  bool verify_hostname;
  bool with_will; /* the device's session; not the bootstrap user's */
  int keepalive;
  char will[700]; /* services_will: the 400 event and the agent's 102 down */
  /* session_disconnect waits for Paho's answer to its DISCONNECT. */
  pthread_mutex_t dmu;
  pthread_cond_t dcv;
  bool disconnecting, disconnected;
};

typedef struct pub_ctx {
  session *s;
  uint64_t id;
} pub_ctx;

const char *session_connack_text(int code) {
  switch (code) {
  case 1:
    return "unacceptable protocol version";
  case 2:
    return "client identifier rejected";
  case 3:
    return "server unavailable";
  case 4:
    return "bad user name or password";
  case 5:
    return "not authorized";
  default:
    return "connection failed";
  }
}

const char *session_uri(const session *s) { return s->uri; }

static void on_connection_lost(void *ctx, char *cause) {
  session *s = ctx;
  s->cb.lost(s->cb.ctx, cause ? cause : "connection lost");
}

static int on_message(void *ctx, char *topic, int topic_len,
                      MQTTAsync_message *m) {
  session *s = ctx;
  char *t = topic_len > 0 ? strndup(topic, (size_t)topic_len) : strdup(topic);
  if (t) {
    s->cb.message(s->cb.ctx, t, m->payload, (size_t)m->payloadlen);
    free(t);
  }
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_connect_success(void *ctx, MQTTAsync_successData *r) {
  session *s = ctx;
  if (s->tls)
    MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_ERROR);
  s->cb.connected(s->cb.ctx);
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *r) {
  session *s = ctx;
  int code = r ? r->code : -1;
  const char *msg = r && r->message ? r->message : NULL;
  s->cb.connect_failed(s->cb.ctx, code, msg);
}

static void on_publish_success(void *ctx, MQTTAsync_successData *r) {
  pub_ctx *p = ctx;
  p->s->cb.delivered(p->s->cb.ctx, p->id, true);
  free(p);
}

static void on_publish_failure(void *ctx, MQTTAsync_failureData *r) {
  pub_ctx *p = ctx;
  p->s->cb.delivered(p->s->cb.ctx, p->id, false);
  free(p);
}

static void on_subscribe_failure(void *ctx, MQTTAsync_failureData *r) {
  log_error("subscription failed (code %d%s%s)", r ? r->code : -1,
            r && r->message ? ": " : "", r && r->message ? r->message : "");
}

static int on_ssl_error(const char *str, size_t len, void *u) {
  log_error("TLS: %.*s", (int)len, str);
  return 0;
}

/* Certificate lines of Paho's trace, for debugging only: with an IP
 * address as host Paho logs a failed X509_check_host before it checks the
 * address, so a "failed" here is no verdict. The cause of a failed connect
 * is logged by netdiag (see agent.c). Protocol trace lines carry payload
 * excerpts and are not forwarded. */
static void on_paho_trace(enum MQTTASYNC_TRACE_LEVELS level, char *message) {
  if (message && (strstr(message, "X509") || strstr(message, "SSL")))
    log_debug("TLS (Paho trace, level %d): %s", (int)level, message);
}

static char *dup_opt(const char *s) { return s && *s ? strdup(s) : NULL; }

/* What the request itself makes impossible (retrying it could never
 * succeed) as opposed to the state of the link, which `otherwise` names. */
static int paho_status(int rc, int otherwise) {
  switch (rc) {
  case MQTTASYNC_BAD_UTF8_STRING:
  case MQTTASYNC_NULL_PARAMETER:
  case MQTTASYNC_TOPICNAME_TRUNCATED:
  case MQTTASYNC_BAD_STRUCTURE:
  case MQTTASYNC_BAD_QOS:
  case MQTTASYNC_BAD_PROTOCOL:
  case MQTTASYNC_BAD_MQTT_OPTION:
  case MQTTASYNC_WRONG_MQTT_VERSION:
  case MQTTASYNC_0_LEN_WILL_TOPIC:
    return C8Y_EINVAL;
  case MQTTASYNC_SSL_NOT_SUPPORTED:
    return C8Y_ENOTSUP;
  default:
    return otherwise;
  }
}

/* Who connects: the device (session_new) or the bootstrap user. */
typedef struct identity {
  char *client_id, *username, *password, *cert_file, *key_file;
  bool will;
} identity;

static int create(const agent_config *cfg, const session_callbacks *cb,
                  identity *id, session **out, char *err, size_t errlen) {
  *out = NULL;
  session *s = calloc(1, sizeof *s);
  if (!s || !id->client_id) {
    free(s);
    free(id->client_id);
    free(id->username);
    free(id->password);
    free(id->cert_file);
    free(id->key_file);
    snprintf(err, errlen, "out of memory");
    return C8Y_ENOMEM;
  }
  s->cb = *cb;
  s->tls = cfg->tls;
  s->verify_hostname = cfg->verify_hostname;
  s->keepalive = cfg->keepalive;
  s->with_will = id->will;
  s->client_id = id->client_id;
  s->username = id->username;
  s->password = id->password;
  s->cert_file = id->cert_file;
  s->key_file = id->key_file;
  pthread_mutex_init(&s->dmu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->dcv, &ca);
  pthread_condattr_destroy(&ca);
  snprintf(s->uri, sizeof s->uri, "%s://%s:%d", cfg->tls ? "ssl" : "tcp",
           cfg->host, cfg->port);
  if (s->with_will && services_will(cfg->device_id ? cfg->device_id : "",
                                    s->will, sizeof s->will) != C8Y_OK) {
    session_free(s);
    snprintf(err, errlen, "device id too long for the last will");
    return C8Y_EINVAL;
  }
  if (cfg->ca_path) {
    struct stat st;
    if (stat(cfg->ca_path, &st) == 0 && S_ISDIR(st.st_mode))
      s->ca_dir = strdup(cfg->ca_path);
    else
      s->ca_file = strdup(cfg->ca_path);
    if (!s->ca_dir && !s->ca_file) {
      session_free(s);
      snprintf(err, errlen, "out of memory");
      return C8Y_ENOMEM;
    }
  }
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
  co.MQTTVersion = MQTTVERSION_3_1_1;
  /* The agent's own durable queue holds data while offline, not Paho. */
  co.sendWhileDisconnected = 0;
  int rc = MQTTAsync_createWithOptions(&s->client, s->uri, s->client_id,
                                       MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
  if (rc != MQTTASYNC_SUCCESS) {
    snprintf(err, errlen, "cannot create MQTT client for %s: %s", s->uri,
             MQTTAsync_strerror(rc));
    s->client = NULL;
    session_free(s);
    return paho_status(rc, C8Y_EIO);
  }
  MQTTAsync_setCallbacks(s->client, s, on_connection_lost, on_message, NULL);
  *out = s;
  return 0;
}

int session_new(const agent_config *cfg, const session_callbacks *cb,
                session **out, char *err, size_t errlen) {
  identity id = {.client_id = config_client_id(cfg), .will = true};
  /* With a client certificate the CN identifies the device: no user name. */
  if (cfg->tenant || !cfg->cert_file) {
    id.username = config_username(cfg);
    id.password = dup_opt(cfg->password);
  }
  id.cert_file = dup_opt(cfg->cert_file);
  id.key_file = dup_opt(cfg->key_file);
  if ((cfg->cert_file && !id.cert_file) || (cfg->key_file && !id.key_file))
    id.client_id = (free(id.client_id), NULL);
  return create(cfg, cb, &id, out, err, errlen);
}

int session_new_bootstrap(const agent_config *cfg, const session_callbacks *cb,
                          session **out, char *err, size_t errlen) {
  /* As the registration expects: clientId = the plain device id. No will:
   * the device does not exist on the platform yet. */
  identity id = {.client_id = dup_opt(cfg->device_id),
                 .username = dup_opt(cfg->bootstrap_user),
                 .password = dup_opt(cfg->bootstrap_password)};
  if ((cfg->bootstrap_user && !id.username) ||
      (cfg->bootstrap_password && !id.password))
    id.client_id = (free(id.client_id), NULL);
  return create(cfg, cb, &id, out, err, errlen);
}

void session_free(session *s) {
  if (!s)
    return;
  if (s->client)
    MQTTAsync_destroy(&s->client);
  free(s->client_id);
  free(s->username);
  free(s->password);
  free(s->ca_file);
  free(s->ca_dir);
  free(s->cert_file);
  free(s->key_file);
  pthread_cond_destroy(&s->dcv);
  pthread_mutex_destroy(&s->dmu);
  free(s);
}

void session_free_at_exit(session *s) {
  if (!s)
    return;
  pthread_mutex_lock(&s->dmu);
  bool clean = s->disconnecting && s->disconnected;
  pthread_mutex_unlock(&s->dmu);
  if (!clean || !s->client || MQTTAsync_isConnected(s->client)) {
    /* Not known idle (never connected, still connecting, lost, or the
     * DISCONNECT unanswered): a Paho thread may be inside OpenSSL, which
     * the process's exit handlers tear down. The full destroy stops the
     * threads first. */
    session_free(s);
    return;
  }
  /* Cleanly disconnected: Paho's threads have no socket and no work; only
   * their shutdown (and the client's destruction) is skipped. */
  s->client = NULL;
  session_free(s);
}

int session_connect(session *s) {
  MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
  MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
  MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
  o.keepAliveInterval = s->keepalive;
  o.cleansession = 1;
  o.MQTTVersion = MQTTVERSION_3_1_1;
  /* Well above the runtime's own window so Paho never blocks on a full
   * in-flight table (Debian's 1.3.12 stalls for up to 1 s when it does). */
  o.maxInflight = 64;
  o.connectTimeout = 15;
  o.automaticReconnect = 0;
  o.username = s->username;
  o.password = s->password;
  will.topicName = SESSION_WILL_TOPIC;
  will.message = s->will;
  will.qos = 1;
  will.retained = 0;
  o.will = s->with_will ? &will : NULL;
  if (s->tls) {
    ssl.enableServerCertAuth = 1;
    ssl.verify = s->verify_hostname ? 1 : 0;
    ssl.trustStore = s->ca_file;
    ssl.CApath = s->ca_dir;
    ssl.keyStore = s->cert_file;
    ssl.privateKey = s->key_file;
    ssl.sslVersion = MQTT_SSL_VERSION_TLS_1_2;
    ssl.ssl_error_cb = on_ssl_error;
    o.ssl = &ssl;
  }
  if (s->tls) {
    /* Trace costs a little per packet: only while connecting (MINIMUM is
     * the level of the IP address check line), see on_connect_success. */
    MQTTAsync_setTraceCallback(on_paho_trace);
    MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_MINIMUM);
  }
  o.onSuccess = on_connect_success;
  o.onFailure = on_connect_failure;
  o.context = s;
  int rc = MQTTAsync_connect(s->client, &o);
  if (rc != MQTTASYNC_SUCCESS) {
    log_error("cannot start connecting to %s: %s", s->uri,
              MQTTAsync_strerror(rc));
    return paho_status(rc, C8Y_EIO);
  }
  return 0;
}

int session_set_identity(session *s, const char *cert_file,
                         const char *key_file) {
  char *c = cert_file ? strdup(cert_file) : NULL;
  char *k = key_file ? strdup(key_file) : NULL;
  if ((cert_file && !c) || (key_file && !k)) {
    free(c);
    free(k);
    return C8Y_ENOMEM;
  }
  free(s->cert_file);
  free(s->key_file);
  s->cert_file = c;
  s->key_file = k;
  return 0;
}

int session_publish(session *s, const char *topic, const char *payload,
                    size_t len, int qos, uint64_t id) {
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  pub_ctx *ctx = NULL;
  if (id) {
    ctx = malloc(sizeof *ctx);
    if (!ctx)
      return C8Y_ENOMEM;
    ctx->s = s;
    ctx->id = id;
    ro.onSuccess = on_publish_success;
    ro.onFailure = on_publish_failure;
    ro.context = ctx;
  }
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = (void *)payload;
  m.payloadlen = (int)len;
  m.qos = qos;
  m.retained = 0;
  int rc = MQTTAsync_sendMessage(s->client, topic, &m, &ro);
  if (rc != MQTTASYNC_SUCCESS) {
    free(ctx);
    log_debug("publish on %s failed: %s", topic, MQTTAsync_strerror(rc));
    return paho_status(rc, C8Y_EAGAIN);
  }
  return 0;
}

int session_subscribe(session *s, const char *topic, int qos) {
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onFailure = on_subscribe_failure;
  ro.context = s;
  int rc = MQTTAsync_subscribe(s->client, topic, qos, &ro);
  if (rc != MQTTASYNC_SUCCESS) {
    log_error("cannot subscribe to %s: %s", topic, MQTTAsync_strerror(rc));
    return paho_status(rc, C8Y_EAGAIN);
  }
  return 0;
}

typedef struct drop_ctx {
  session *s;
  char why[200];
} drop_ctx;

static void on_dropped(void *ctx, MQTTAsync_successData *r) {
  drop_ctx *d = ctx;
  d->s->cb.lost(d->s->cb.ctx, d->why);
  free(d);
}

static void on_drop_failed(void *ctx, MQTTAsync_failureData *r) {
  drop_ctx *d = ctx;
  d->s->cb.lost(d->s->cb.ctx, d->why);
  free(d);
}

int session_drop(session *s, const char *why) {
  drop_ctx *d = calloc(1, sizeof *d);
  if (!d)
    return C8Y_ENOMEM;
  d->s = s;
  snprintf(d->why, sizeof d->why, "%s", why);
  MQTTAsync_disconnectOptions o = MQTTAsync_disconnectOptions_initializer;
  o.timeout = 0;
  o.onSuccess = on_dropped;
  o.onFailure = on_drop_failed;
  o.context = d;
  if (MQTTAsync_disconnect(s->client, &o) != MQTTASYNC_SUCCESS) {
    /* Already disconnected: the loss is (or was) reported by Paho. */
    free(d);
    return C8Y_ESTATE;
  }
  return 0;
}

static void on_disconnected(void *ctx, MQTTAsync_successData *r) {
  (void)r;
  session *s = ctx;
  pthread_mutex_lock(&s->dmu);
  s->disconnected = true;
  pthread_cond_broadcast(&s->dcv);
  pthread_mutex_unlock(&s->dmu);
}

static void on_disconnect_failed(void *ctx, MQTTAsync_failureData *r) {
  (void)r;
  on_disconnected(ctx, NULL);
}

void session_disconnect(session *s, int timeout_ms) {
  if (!MQTTAsync_isConnected(s->client))
    return;
  MQTTAsync_disconnectOptions o = MQTTAsync_disconnectOptions_initializer;
  o.timeout = timeout_ms;
  o.onSuccess = on_disconnected;
  o.onFailure = on_disconnect_failed;
  o.context = s;
  pthread_mutex_lock(&s->dmu);
  s->disconnecting = true;
  s->disconnected = false;
  pthread_mutex_unlock(&s->dmu);
  if (MQTTAsync_disconnect(s->client, &o) != MQTTASYNC_SUCCESS) {
    pthread_mutex_lock(&s->dmu);
    s->disconnecting = false;
    pthread_mutex_unlock(&s->dmu);
    return;
  }
  /* Destroying the client before DISCONNECT went out would look like a
   * lost link to the broker, which then publishes the will. Paho answers
   * once the packet is written (no in-flight messages) or after the
   * timeout; the wait ends on that answer, not on a polling tick. */
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  long long ns = until.tv_nsec + (long long)(timeout_ms + 100) * 1000000LL;
  until.tv_sec += (time_t)(ns / 1000000000LL);
  until.tv_nsec = (long)(ns % 1000000000LL);
  pthread_mutex_lock(&s->dmu);
  int rc = 0;
  while (!s->disconnected && rc != ETIMEDOUT)
    rc = pthread_cond_timedwait(&s->dcv, &s->dmu, &until);
  pthread_mutex_unlock(&s->dmu);
}
