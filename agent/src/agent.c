#include "agent.h"

#include "bootstrap.h"
#include "config.h"
#include "fsutil.h"
#include "http.h"
#include "journal.h"
#include "loader.h"
#include "localapi.h"
#include "log.h"
#include "netdiag.h"
#include "notify.h"
#include "ops.h"
#include "outq.h"
#include "plugin.h"
#include "proto.h"
#include "registry.h"
#include "session.h"
#include "smartrest.h"
#include "sockopt.h"
#include "x509.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef C8Y_VERSION
#define C8Y_VERSION "0.0.0"
#endif

#define MAX_PAYLOAD 16000
#define MAX_INFLIGHT 8 /* batches; Paho's own window is larger */
/* Publish id of the liveness probe; queue batch ids never get this high. */
#define PROBE_ID UINT64_MAX
/* Queue tags of the registration lines and the 500 of one connect (two per
 * connect); operation tags (journal ids) never get this high. */
#define ANNOUNCE_TAG_BASE (UINT64_C(1) << 62)
/* Batches the broker can never take are kept here for an operator. */
#define REJECTED_FILE "rejected.log"
#define REJECTED_MAX_BYTES (1024 * 1024)

enum link_state { LINK_DOWN, LINK_CONNECTING, LINK_UP };
enum ev_kind {
  EV_CONNECTED,
  EV_CONNECT_FAILED,
  EV_LOST,
  EV_MESSAGE,
  EV_DELIVERED
};

typedef struct event {
  struct event *next;
  enum ev_kind kind;
  int code;
  bool ok;
  uint64_t id;
  char *topic;
  char *text; /* payload or message */
  size_t len;
} event;

typedef struct inflight {
  uint64_t id;
  uint64_t *tags;
  size_t ntags;
} inflight;

typedef struct agent {
  const char *config_path;
  agent_config cfg;
  outq *q;
  journal *j;
  registry reg;
  ops *ops;
  session *sess;
  plugin_host host;
  plugin_set plugins;
  char *queue_dir;
  http_ctx *http;
  atomic_bool token_wanted; /* a transfer waits for s/uat -> 71 */
  localapi *api;            /* NULL when disabled or it could not start */

  pthread_mutex_t evmu;
  event *ev_head, *ev_tail;
  int wake_fd;

  enum link_state link;
  long long reconnect_at;
  int attempt;
  int auth_failures;
  inflight window[MAX_INFLIGHT];
  size_t ninflight;
  uint64_t announce_gen;  /* connects so far */
  uint64_t reg_tag;       /* registration lines of this connect */
  uint64_t pending_tag;   /* the 500 of this connect */
  size_t reg_unacked;     /* registration lines not yet acknowledged */
  bool pending_requested; /* this connect's 500 is queued */
  long long last_inbound; /* last PUBACK or message from the broker */
  long long probe_sent;   /* 0 = no probe outstanding */
  bool dropping;          /* session_drop issued, waiting for the loss */
  long long next_tick;
  long long next_watchdog;
  long long watchdog_ms;
  bool running;
  bool reload_pending; /* SIGHUP arrived while operations were running */
  /* A plugin thread may still hold operation handles: the engine is not
   * freed at exit. */
  bool plugin_abandoned;
  int exit_code;
} agent;

static int signal_pipe[2] = {-1, -1};
/* With a plugin thread abandoned (still running, it may reach them) the HTTP
 * client and the operation engine stay allocated until the process ends;
 * kept reachable here so leak checkers see that as deliberate. */
static void *volatile kept_for_abandoned[2];

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_signal(int sig) {
  int saved = errno;
  unsigned char b = (unsigned char)sig;
  if (write(signal_pipe[1], &b, 1) < 0) {
    /* nothing sensible to do inside a handler */
  }
  errno = saved;
}

static void wake(void *ctx) {
  agent *a = ctx;
  uint64_t one = 1;
  if (write(a->wake_fd, &one, sizeof one) < 0) {
    /* the counter saturating still leaves the loop awake */
  }
}

/* http module, any thread: the main loop publishes the s/uat. */
static void request_token(void *ctx) {
  agent *a = ctx;
  atomic_store(&a->token_wanted, true);
  wake(a);
}

/* ---- events from Paho threads ---- */

static void post(agent *a, event *e) {
  pthread_mutex_lock(&a->evmu);
  if (a->ev_tail)
    a->ev_tail->next = e;
  else
    a->ev_head = e;
  a->ev_tail = e;
  pthread_mutex_unlock(&a->evmu);
  wake(a);
}

static event *new_event(enum ev_kind kind) {
  event *e = calloc(1, sizeof *e);
  if (e)
    e->kind = kind;
  return e;
}

static void cb_connected(void *ctx) {
  event *e = new_event(EV_CONNECTED);
  if (e)
    post(ctx, e);
}

static void cb_connect_failed(void *ctx, int code, const char *msg) {
  event *e = new_event(EV_CONNECT_FAILED);
  if (!e)
    return;
  e->code = code;
  e->text = msg ? strdup(msg) : NULL;
  post(ctx, e);
}

static void cb_lost(void *ctx, const char *cause) {
  event *e = new_event(EV_LOST);
  if (!e)
    return;
  e->text = strdup(cause);
  post(ctx, e);
}

static void cb_message(void *ctx, const char *topic, const char *payload,
                       size_t len) {
  event *e = new_event(EV_MESSAGE);
  if (!e)
    return;
  e->topic = strdup(topic);
  e->text = malloc(len + 1);
  if (!e->topic || !e->text) {
    free(e->topic);
    free(e->text);
    free(e);
    log_error("out of memory: dropped a message on %s", topic);
    return;
  }
  memcpy(e->text, payload, len);
  e->text[len] = 0;
  e->len = len;
  post(ctx, e);
}

static void cb_delivered(void *ctx, uint64_t id, bool ok) {
  event *e = new_event(EV_DELIVERED);
  if (!e)
    return;
  e->id = id;
  e->ok = ok;
  post(ctx, e);
}

/* ---- connect sequence ---- */

/* DMI field, or NULL when unset: firmware fills unset fields with
 * placeholders. */
static char *read_dmi(const char *field) {
  char path[128];
  snprintf(path, sizeof path, "/sys/class/dmi/id/%s", field);
  char *v = fsu_read_first_line(path);
  if (v && (strcmp(v, "None") == 0 || strstr(v, "To Be Filled") != NULL ||
            strcmp(v, "Default string") == 0)) {
    free(v);
    v = NULL;
  }
  return v;
}

/* Registration goes through the queue like everything else: packed (1000
 * children's 101 lines take a handful of publishes), in order, confirmed,
 * and retried after a loss. Volatile: it is rebuilt on every connect. */
static size_t queue_announce(agent *a, const char *topic,
                             const char *const *fields, size_t n) {
  sr_buf b;
  sr_buf_init(&b);
  size_t queued = 0;
  if (sr_encode_line(&b, fields, n) == 0 &&
      outq_push(a->q, OUTQ_INVENTORY, topic, b.data, a->reg_tag,
                OUTQ_VOLATILE) == 0)
    queued = 1;
  else
    log_error("cannot queue the registration line '%.40s' for %s",
              b.data ? b.data : fields[0], topic);
  sr_buf_free(&b);
  return queued;
}

static size_t queue_supported(agent *a, const char *topic,
                              const char *supported) {
  if (!supported || !*supported)
    return 0;
  size_t n = strlen(supported) + 8;
  char *line = malloc(n);
  size_t queued = 0;
  if (line) {
    snprintf(line, n, "114,%s", supported);
    queued = outq_push(a->q, OUTQ_INVENTORY, topic, line, a->reg_tag,
                       OUTQ_VOLATILE) == 0;
    free(line);
  }
  return queued;
}

/* s/ds and the custom collections: downstream QoS is the subscription's. */
static int downstream_qos(const agent *a) { return a->cfg.qos == 2 ? 2 : 1; }

/* Every registration line was acknowledged: now the device exists with its
 * capabilities, so subscribe and ask for the pending operations. */
static void request_operations(agent *a) {
  int qos = downstream_qos(a);
  session_subscribe(a->sess, "s/ds", qos);
  const char **xids;
  size_t nx = registry_xids(&a->reg, &xids);
  for (size_t i = 0; i < nx; i++) {
    char topic[300];
    snprintf(topic, sizeof topic, "s/dc/%s", xids[i]);
    session_subscribe(a->sess, topic, qos);
  }
  free(xids);
  if (outq_push(a->q, OUTQ_OPSTATUS, "s/us", "500", a->pending_tag,
                OUTQ_VOLATILE) != 0)
    log_error("cannot queue the 500 request for pending operations");
  a->pending_requested = true;
  wake(a);
}

/* 100, 110, 122, children (101, then each child's 114), 114, 117 on every
 * connect, because Cumulocity keeps no session state (clean session); then
 * request_operations once all of it is acknowledged. */
static void announce(agent *a) {
  agent_config *c = &a->cfg;
  a->announce_gen++;
  a->reg_tag = ANNOUNCE_TAG_BASE + 2 * a->announce_gen;
  a->pending_tag = a->reg_tag + 1;
  a->pending_requested = false;
  size_t n = 0;
  const char *dev[] = {"100", c->device_name, c->device_type};
  n += queue_announce(a, "s/us", dev, 3);

  char *serial =
      c->hw_serial ? strdup(c->hw_serial) : read_dmi("product_serial");
  char *model = c->hw_model ? strdup(c->hw_model) : read_dmi("product_name");
  char *rev =
      c->hw_revision ? strdup(c->hw_revision) : read_dmi("product_version");
  struct utsname u;
  char machine[200] = "Linux";
  if (uname(&u) == 0)
    snprintf(machine, sizeof machine, "Linux %s", u.machine);
  const char *hw[] = {"110", serial ? serial : c->device_id,
                      model ? model : machine, rev ? rev : ""};
  n += queue_announce(a, "s/us", hw, 4);
  free(serial);
  free(model);
  free(rev);

  const char *agent_info[] = {"122", "c8y-agent", C8Y_VERSION, "",
                              "c8y-agent project"};
  n += queue_announce(a, "s/us", agent_info, 5);

  for (size_t i = 0; i < a->reg.nchildren; i++) {
    reg_child *ch = a->reg.children[i];
    const char *f[] = {"101", ch->id, ch->name, ch->type};
    n += queue_announce(a, "s/us", f, 4);
  }
  char *supported = registry_supported_operations(&a->reg);
  n += queue_supported(a, "s/us", supported);
  free(supported);
  char expiry[600];
  if (c->cert_file && c->cert_warn_days > 0 &&
      x509_expiry_line(c->cert_file, c->cert_warn_days, expiry,
                       sizeof expiry) == 0) {
    /* An alarm (raised or cleared), not registration: the 500 does not
     * wait for it. */
    char id[4] = {expiry[0], expiry[1], expiry[2], 0};
    if (outq_push(a->q, proto_class(id), "s/us", expiry, 0, OUTQ_VOLATILE) != 0)
      log_error("cannot queue the certificate expiry line");
  }
  if (c->required_interval > 0) {
    char interval[32];
    snprintf(interval, sizeof interval, "%d", c->required_interval);
    const char *f[] = {"117", interval};
    n += queue_announce(a, "s/us", f, 2);
  }
  for (size_t i = 0; i < a->reg.nchildren; i++) {
    reg_child *ch = a->reg.children[i];
    char topic[300];
    snprintf(topic, sizeof topic, "s/us/%s", ch->id);
    char *child_ops = registry_child_supported_operations(&a->reg, ch);
    n += queue_supported(a, topic, child_ops);
    free(child_ops);
  }
  a->reg_unacked = n;
  log_info("registration: %zu lines queued (%zu children)", n,
           a->reg.nchildren);
  session_subscribe(a->sess, "s/e", 0);
  session_subscribe(a->sess, "s/dat", 0); /* JWT for REST calls */
  if (n == 0)
    request_operations(a);
}

/* Acknowledged tags that belong to the connect sequence, not operations. */
static bool announce_acked(agent *a, uint64_t tag) {
  if (tag < ANNOUNCE_TAG_BASE)
    return false;
  if (tag == a->reg_tag && a->reg_unacked > 0 && --a->reg_unacked == 0) {
    log_info("registration acknowledged; requesting pending operations");
    request_operations(a);
  } else if (tag == a->pending_tag) {
    ops_on_pending_requested(a->ops, mono_ms());
  }
  return true;
}

/* ---- queue draining ---- */

/* A topic the broker would answer with a protocol error (wildcards) or
 * Paho refuses (not UTF-8): such a batch could never leave the queue. */
static bool publishable_topic(const char *t) {
  if (!*t || strpbrk(t, "+#"))
    return false;
  const unsigned char *p = (const unsigned char *)t;
  while (*p) {
    int extra = *p < 0x80             ? 0
                : (*p & 0xE0) == 0xC0 ? 1
                : (*p & 0xF0) == 0xE0 ? 2
                : (*p & 0xF8) == 0xF0 ? 3
                                      : -1;
    if (extra < 0 || *p < 0x20 || *p == 0x7F)
      return false;
    p++;
    for (int i = 0; i < extra; i++, p++)
      if ((*p & 0xC0) != 0x80)
        return false;
  }
  return true;
}

/* Sets an undeliverable batch aside (appended to rejected.log in the queue
 * directory, capped) so it never blocks what is queued behind it. */
static void set_aside(agent *a, outq_batch *b, const char *why) {
  log_error("batch of %zu lines for topic '%s' can never be published (%s): "
            "set aside in %s/%s; first line: %.80s",
            b->nlines, b->topic, why, a->queue_dir, REJECTED_FILE, b->payload);
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", a->queue_dir, REJECTED_FILE);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  struct stat st;
  if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size < REJECTED_MAX_BYTES) {
    dprintf(fd, "# %s: %s\n%s\n", b->topic, why, b->payload);
  }
  if (fd >= 0)
    close(fd);
  outq_ack(a->q, b->id);
  for (size_t k = 0; k < b->ntags; k++)
    if (!announce_acked(a, b->tags[k]))
      ops_on_acked(a->ops, b->tags[k], a->running);
}

/* Statuses, 500 and registration need their acknowledgement: QoS >= 1
 * whatever [c8y] qos says for data. */
static int publish_qos(const agent *a, outq_class cls) {
  if ((cls == OUTQ_OPSTATUS || cls == OUTQ_INVENTORY) && a->cfg.qos < 1)
    return 1;
  return a->cfg.qos;
}

static void drain(agent *a) {
  while (a->link == LINK_UP && a->ninflight < MAX_INFLIGHT) {
    outq_batch b;
    if (outq_take(a->q, MAX_PAYLOAD, &b) != 1)
      break;
    if (!a->pending_requested && b.cls == OUTQ_MEASUREMENT) {
      /* A measurement backlog must not fill the window (and a slow link)
       * ahead of the 500 that follows the registration. */
      outq_nack(a->q, b.id);
      outq_batch_free(&b);
      break;
    }
    int rc = publishable_topic(b.topic)
                 ? session_publish(a->sess, b.topic, b.payload, b.len,
                                   publish_qos(a, b.cls), b.id)
                 : C8Y_EINVAL;
    if (rc == C8Y_EINVAL) {
      set_aside(a, &b, "invalid topic or payload");
      outq_batch_free(&b);
      continue;
    }
    if (rc != 0) {
      outq_nack(a->q, b.id);
      outq_batch_free(&b);
      break;
    }
    inflight *slot = &a->window[a->ninflight++];
    slot->id = b.id;
    slot->tags = b.tags;
    slot->ntags = b.ntags;
    b.tags = NULL;
    b.ntags = 0;
    outq_batch_free(&b);
  }
}

static void delivered(agent *a, uint64_t id, bool ok) {
  if (ok)
    a->last_inbound = mono_ms();
  if (id == PROBE_ID) {
    a->probe_sent = 0;
    return;
  }
  for (size_t i = 0; i < a->ninflight; i++) {
    if (a->window[i].id != id)
      continue;
    inflight slot = a->window[i];
    a->window[i] = a->window[--a->ninflight];
    if (ok) {
      outq_ack(a->q, id);
      for (size_t k = 0; k < slot.ntags; k++)
        if (!announce_acked(a, slot.tags[k]))
          ops_on_acked(a->ops, slot.tags[k], a->running);
    } else {
      log_debug("publish of batch %llu failed; it goes back to the queue",
                (unsigned long long)id);
      outq_nack(a->q, id);
    }
    free(slot.tags);
    return;
  }
}

/* The link dropped: what was in flight goes back to the queue, and the
 * operations among it learn that their 501 may or may not have arrived. The
 * registration of the lost connect is dropped: the next one redoes it. */
static void forget_inflight(agent *a) {
  size_t n = 0;
  for (size_t i = 0; i < a->ninflight; i++)
    n += a->window[i].ntags;
  uint64_t *tags = n ? malloc(n * sizeof *tags) : NULL;
  size_t k = 0;
  for (size_t i = 0; i < a->ninflight; i++) {
    if (tags)
      memcpy(tags + k, a->window[i].tags, a->window[i].ntags * sizeof *tags);
    k += a->window[i].ntags;
    free(a->window[i].tags);
  }
  a->ninflight = 0;
  outq_requeue_inflight(a->q);
  outq_remove_tag(a->q, a->reg_tag);
  outq_remove_tag(a->q, a->pending_tag);
  a->reg_unacked = 0;
  ops_on_disconnect(a->ops, tags, tags ? n : 0);
  free(tags);
}

/* ---- link state ---- */

/* Paho notices a silent link only after about 2.5x keepalive (a PINGREQ
 * after keepalive, a give-up after another). While something waits for its
 * acknowledgement and nothing came back from the broker for half the
 * keepalive, a 125 heartbeat (an availability update on the platform) goes
 * out; no PUBACK within another half means the link is dead. So a
 * blackholed link is noticed within keepalive when it matters, and a quiet
 * device costs the platform nothing: with nothing outstanding, MQTT's own
 * PINGREQ watches the link. Returns the next time this needs to run, or -1
 * when nothing is waiting. */
static long long check_liveness(agent *a, long long now) {
  long long half = (long long)a->cfg.keepalive * 500;
  if (a->link != LINK_UP || a->dropping)
    return -1;
  if (a->probe_sent) {
    if (now - a->probe_sent < half)
      return a->probe_sent + half;
    log_warning("no answer from %s for %lld ms (keepalive %d s): dropping "
                "the connection",
                session_uri(a->sess), now - a->last_inbound, a->cfg.keepalive);
    a->probe_sent = 0;
    if (session_drop(a->sess, "no answer within keepalive") == 0)
      a->dropping = true;
    return -1;
  }
  if (a->ninflight == 0)
    return -1;
  if (now - a->last_inbound < half)
    return a->last_inbound + half;
  if (session_publish(a->sess, "s/us", "125", 3, 1, PROBE_ID) == 0)
    a->probe_sent = now;
  return now + half;
}

static void schedule_reconnect(agent *a) {
  long long delay = a->cfg.reconnect_min_ms;
  for (int i = 0; i < a->attempt && delay < a->cfg.reconnect_max_ms; i++)
    delay *= 2;
  if (delay > a->cfg.reconnect_max_ms)
    delay = a->cfg.reconnect_max_ms;
  /* +-20% jitter so a fleet does not reconnect in lockstep, within
   * [reconnect_min_ms, reconnect_max_ms]. */
  long long jitter = delay / 5;
  if (jitter > 0)
    delay += (long long)(rand() % (2 * jitter + 1)) - jitter;
  if (delay > a->cfg.reconnect_max_ms)
    delay = a->cfg.reconnect_max_ms;
  if (delay < a->cfg.reconnect_min_ms)
    delay = a->cfg.reconnect_min_ms;
  a->attempt++;
  a->reconnect_at = mono_ms() + delay;
  log_info("reconnecting to %s in %lld ms", session_uri(a->sess), delay);
}

static void handle_message(agent *a, event *e) {
  if (strcmp(e->topic, "s/ds") == 0) {
    ops_handle_payload(a->ops, e->text, e->len);
    return;
  }
  if (strcmp(e->topic, "s/dat") == 0) {
    if (strncmp(e->text, "71,", 3) == 0)
      http_token_received(a->http, e->text + 3);
    return;
  }
  if (strcmp(e->topic, "s/e") == 0) {
    log_warning("Cumulocity reported an error on s/e: %s", e->text);
    return;
  }
  if (strncmp(e->topic, "s/dc/", 5) == 0) {
    const char *xid = e->topic + 5;
    sr_records recs;
    if (sr_decode(e->text, e->len, &recs) != 0)
      return;
    for (size_t i = 0; i < recs.count; i++) {
      sr_record *r = &recs.items[i];
      if (r->error) {
        log_warning("%s record %zu: %s; ignored", e->topic, r->line, r->error);
        continue;
      }
      reg_message *m = registry_find_message(&a->reg, xid, r->fields[0]);
      if (!m) {
        log_info("%s: no handler for message id %s", e->topic, r->fields[0]);
        continue;
      }
      /* The job takes the fields. */
      plugin_queue_message(m->plugin, m, r->fields, r->nfields);
      r->fields = NULL;
      r->nfields = 0;
    }
    sr_records_free(&recs);
    return;
  }
  log_debug("message on unexpected topic %s ignored", e->topic);
}

/* STATUS= for systemctl status, with what the operator must know. */
static void notify_status(agent *a, const char *state) {
  char note[512], buf[640];
  loader_status_note(&a->plugins, note, sizeof note);
  snprintf(buf, sizeof buf, "STATUS=%s%s", state, note);
  notify_send(buf);
}

static void handle_event(agent *a, event *e) {
  switch (e->kind) {
  case EV_CONNECTED:
    log_notice("connected to %s as %s", session_uri(a->sess), a->cfg.device_id);
    a->link = LINK_UP;
    a->attempt = 0;
    a->auth_failures = 0;
    a->last_inbound = mono_ms();
    a->probe_sent = 0;
    a->dropping = false;
    if (sockopt_nodelay_to_port(a->cfg.port) == 0)
      log_debug("TCP_NODELAY: no socket to port %d found", a->cfg.port);
    sockopt_cloexec_all();
    announce(a);
    notify_status(a, "connected");
    break;
  case EV_CONNECT_FAILED:
    a->link = LINK_DOWN;
    if (e->code == 4 || e->code == 5) {
      a->auth_failures++;
      log_error("Cumulocity refused the connection for user %s/%s at %s: "
                "CONNACK %d (%s) [%d of %d]",
                a->cfg.tenant ? a->cfg.tenant : "",
                a->cfg.user ? a->cfg.user : "", session_uri(a->sess), e->code,
                netdiag_connack_meaning(e->code), a->auth_failures,
                AGENT_MAX_AUTH_FAILURES);
      if (a->auth_failures >= AGENT_MAX_AUTH_FAILURES) {
        log_error("giving up: check [c8y] tenant, user and password in %s",
                  a->config_path);
        bootstrap_explain_refusal(&a->cfg);
        a->exit_code = AGENT_EXIT_AUTH;
        a->running = false;
        break;
      }
    } else {
      log_warning("cannot connect to %s: %s%s%s", session_uri(a->sess),
                  e->code > 0 ? netdiag_connack_meaning(e->code) : "failed",
                  e->text ? ": " : "", e->text ? e->text : "");
      if (e->code < 0)
        netdiag_explain_async(&a->cfg); /* names the exact cause */
    }
    schedule_reconnect(a);
    break;
  case EV_LOST:
    if (a->link != LINK_UP) {
      /* Paho and a session_drop can both report the same loss. */
      log_debug("loss already handled: %s", e->text ? e->text : "");
      break;
    }
    log_warning("connection to %s lost: %s", session_uri(a->sess),
                e->text ? e->text : "");
    a->link = LINK_DOWN;
    a->dropping = false;
    a->probe_sent = 0;
    forget_inflight(a);
    notify_status(a, "disconnected");
    schedule_reconnect(a);
    break;
  case EV_MESSAGE:
    a->last_inbound = mono_ms();
    handle_message(a, e);
    break;
  case EV_DELIVERED:
    delivered(a, e->id, e->ok);
    break;
  }
}

/* Takes every queued event. While stopping, only deliveries and losses
 * matter: the queue must not start new work. */
static void process_events(agent *a, bool stopping) {
  pthread_mutex_lock(&a->evmu);
  event *e = a->ev_head;
  a->ev_head = a->ev_tail = NULL;
  pthread_mutex_unlock(&a->evmu);
  while (e) {
    event *next = e->next;
    if (!stopping && a->running)
      handle_event(a, e);
    else if (stopping && e->kind == EV_DELIVERED)
      delivered(a, e->id, e->ok);
    else if (stopping && e->kind == EV_LOST)
      a->link = LINK_DOWN;
    free(e->topic);
    free(e->text);
    free(e);
    e = next;
  }
}

/* ---- scheduler ---- */

static long long run_producers(agent *a, long long now) {
  long long next = -1;
  for (size_t i = 0; i < a->reg.nproducers; i++) {
    reg_producer *p = a->reg.producers[i];
    if (p->next_due_ms <= now) {
      if (atomic_load(&p->busy))
        log_debug("producer %s still busy; skipping a cycle", p->name);
      else
        plugin_queue_produce(p->plugin, p);
      p->next_due_ms += p->interval_ms;
      if (p->next_due_ms <= now) /* fell behind: don't burst to catch up */
        p->next_due_ms = now + p->interval_ms;
    }
    if (next < 0 || p->next_due_ms < next)
      next = p->next_due_ms;
  }
  return next;
}

/* ---- setup ---- */

static void dispatch_op(void *ctx, c8y_operation *op) {
  (void)ctx;
  c8y_plugin *p = ops_plugin(op);
  if (plugin_queue_operation(p, op) != 0)
    ops_dispatch_failed(op, "the plugin is shutting down");
}

static int load_config(agent *a, const char *path) {
  char err[1024];
  if (cfg_load(path, &a->cfg, err, sizeof err) != 0) {
    log_error("%s", err);
    return -1;
  }
  log_set_level(a->cfg.log_level);
  if (a->cfg.local_sim)
    log_notice("no tenant configured in %s: using the local Cumulocity "
               "simulator at %s:%d",
               path, a->cfg.host, a->cfg.port);
  return 0;
}

static int open_state(agent *a) {
  char err[1024];
  if (fsu_mkdir_p(a->cfg.state_dir, 0750) != 0) {
    log_error("state dir %s: %s", a->cfg.state_dir, strerror(errno));
    return -1;
  }
  size_t n = strlen(a->cfg.state_dir) + 16;
  a->queue_dir = malloc(n);
  if (!a->queue_dir)
    return -1;
  snprintf(a->queue_dir, n, "%s/queue", a->cfg.state_dir);
  if (fsu_mkdir_p(a->queue_dir, 0750) != 0) {
    log_error("queue dir %s: %s", a->queue_dir, strerror(errno));
    return -1;
  }
  outq_options qo;
  outq_default_options(&qo, a->queue_dir);
  qo.max_bytes = (size_t)a->cfg.queue_max_bytes;
  if (outq_open(&qo, &a->q, err, sizeof err) != 0) {
    log_error("%s", err);
    return -1;
  }
  outq_stats st;
  outq_get_stats(a->q, &st);
  if (st.replayed)
    log_notice("%llu queued lines survived the restart and will be sent",
               (unsigned long long)st.replayed);
  if (journal_open(a->cfg.state_dir, &a->j, err, sizeof err) != 0) {
    log_error("%s", err);
    return -1;
  }
  return 0;
}

static void setup_host(agent *a) {
  a->host.cfg = &a->cfg;
  a->host.reg = &a->reg;
  a->host.q = a->q;
  a->host.device_id = a->cfg.device_id;
  a->host.state_dir = a->cfg.state_dir;
  a->host.wake = wake;
  a->host.wake_ctx = a;
}

static void shutdown_plugins(agent *a) {
  loader_stop_all(&a->plugins);
  for (size_t i = 0; i < a->plugins.n; i++)
    a->plugin_abandoned |= a->plugins.plugins[i]->abandoned;
  /* Completions made by fini() become durable 503/502 lines. */
  if (a->ops)
    ops_process(a->ops, mono_ms());
  loader_release_all(&a->plugins, &a->reg);
}

static bool same_str(const char *x, const char *y) {
  return (!x && !y) || (x && y && strcmp(x, y) == 0);
}

/* The first setting whose change the running session, queue or journal
 * cannot pick up, or NULL. */
static const char *restart_only_change(const agent_config *o,
                                       const agent_config *n) {
  if (!same_str(o->device_id, n->device_id))
    return "[device] id";
  if (!same_str(o->template_id, n->template_id))
    return "[device] template_id";
  if (!same_str(o->tenant, n->tenant) || !same_str(o->user, n->user) ||
      !same_str(o->password, n->password))
    return "[c8y] tenant/user/password";
  if (!same_str(o->host, n->host) || o->port != n->port || o->tls != n->tls)
    return "[c8y] host/port/tls";
  if (!same_str(o->ca_path, n->ca_path) ||
      !same_str(o->cert_file, n->cert_file) ||
      !same_str(o->key_file, n->key_file) ||
      o->verify_hostname != n->verify_hostname)
    return "[c8y] ca_path/cert_file/key_file/verify_hostname";
  if (o->keepalive != n->keepalive)
    return "[c8y] keepalive";
  if (!same_str(o->state_dir, n->state_dir) ||
      o->queue_max_bytes != n->queue_max_bytes)
    return "[agent] state_dir/queue_max_bytes";
  if (o->op_timeout_s != n->op_timeout_s)
    return "[agent] op_timeout";
  if (o->api_enabled != n->api_enabled ||
      !same_str(o->api_socket, n->api_socket) || o->api_mode != n->api_mode ||
      o->api_gid != n->api_gid)
    return "[api] enabled/socket/mode/group";
  if (!same_str(o->http_url, n->http_url) || o->http_jwt != n->http_jwt ||
      o->transfer_max_bytes != n->transfer_max_bytes)
    return "[c8y] http_url/http_auth or [agent] transfer_max_bytes";
  return NULL;
}

/* SIGHUP: new config and plugins without dropping the MQTT session. What
 * the session, queue and journal were built from needs a restart. */
static void reload(agent *a) {
  if (ops_active(a->ops) > 0) {
    if (!a->reload_pending)
      log_notice("SIGHUP: reload waits until the running operations finish");
    a->reload_pending = true;
    return;
  }
  a->reload_pending = false;
  log_notice("SIGHUP: reloading %s and the plugins", a->config_path);
  agent_config fresh;
  char err[1024];
  if (cfg_load(a->config_path, &fresh, err, sizeof err) != 0) {
    log_error("reload refused, keeping the running configuration: %s", err);
    return;
  }
  if (bootstrap_load_stored(&fresh, err, sizeof err) < 0) {
    log_error("reload refused, keeping the running configuration: %s", err);
    cfg_free(&fresh);
    return;
  }
  const char *changed = restart_only_change(&a->cfg, &fresh);
  if (changed) {
    log_error("reload refused, keeping the running configuration: %s "
              "changed, which takes a restart of the agent",
              changed);
    cfg_free(&fresh);
    return;
  }
  shutdown_plugins(a);
  cfg_free(&a->cfg);
  a->cfg = fresh;
  log_set_level(a->cfg.log_level);
  setup_host(a);
  loader_load_all(&a->host, a->cfg.plugin_dir, true, &a->plugins);
  localapi_set_plugins(a->api, &a->plugins, &a->reg);
  long long now = mono_ms();
  for (size_t i = 0; i < a->reg.nproducers; i++)
    a->reg.producers[i]->next_due_ms = now;
  if (a->link == LINK_UP)
    announce(a);
}

static void stopping_step(agent *a, int wait_ms);

static void flush_before_exit(agent *a) {
  /* Give queued statuses a moment to reach the platform; anything left
   * stays in the durable queue for the next start. */
  long long until = mono_ms() + 2000;
  while (a->link == LINK_UP && mono_ms() < until) {
    drain(a);
    outq_stats st;
    outq_get_stats(a->q, &st);
    if (st.inflight == 0 && st.queued[OUTQ_OPSTATUS] == 0)
      break;
    stopping_step(a, 50);
  }
}

static void install_signals(void) {
  if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
    return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
}

/* The snapshot `c8y-agent status` shows. */
static void publish_state(agent *a) {
  static const char *const names[] = {
      [LINK_DOWN] = "down", [LINK_CONNECTING] = "connecting", [LINK_UP] = "up"};
  localapi_set_state(a->api, names[a->link], session_uri(a->sess),
                     ops_active(a->ops));
}

static void op_finished(void *ctx, const ops_outcome *r) {
  localapi_record_op(((agent *)ctx)->api, r);
}

static void main_loop(agent *a) {
  a->running = true;
  a->next_tick = mono_ms() + 1000;
  a->watchdog_ms = notify_watchdog_interval_ms();
  a->next_watchdog = mono_ms();
  notify_send("READY=1");
  notify_status(a, "connecting");
  while (a->running) {
    long long now = mono_ms();
    if (a->link == LINK_DOWN && now >= a->reconnect_at) {
      a->link = LINK_CONNECTING;
      if (session_connect(a->sess) != 0) {
        a->link = LINK_DOWN;
        schedule_reconnect(a);
      }
    }
    /* The ping proves the loop runs: it comes from here, not a timer. */
    if (a->watchdog_ms > 0 && now >= a->next_watchdog) {
      notify_send("WATCHDOG=1");
      a->next_watchdog = now + a->watchdog_ms;
    }
    long long deadline = now + 1000;
    long long next_op = ops_process(a->ops, now);
    if (next_op >= 0 && next_op < deadline)
      deadline = next_op;
    long long next_prod = run_producers(a, now);
    if (next_prod >= 0 && next_prod < deadline)
      deadline = next_prod;
    if (a->link == LINK_DOWN && a->reconnect_at < deadline)
      deadline = a->reconnect_at;
    if (a->watchdog_ms > 0 && a->next_watchdog < deadline)
      deadline = a->next_watchdog;
    long long next_probe = check_liveness(a, now);
    if (next_probe >= 0 && next_probe < deadline)
      deadline = next_probe;
    if (now >= a->next_tick) {
      outq_tick(a->q);
      a->next_tick = now + 1000;
    }
    drain(a);
    /* QoS 0 and only while up: a queued token request would be stale. */
    if (a->link == LINK_UP && atomic_exchange(&a->token_wanted, false))
      session_publish(a->sess, "s/uat", "", 0, 0, 0);
    publish_state(a);

    int timeout = (int)(deadline > now ? deadline - now : 0);
    struct pollfd pfd[2] = {{.fd = a->wake_fd, .events = POLLIN},
                            {.fd = signal_pipe[0], .events = POLLIN}};
    int n = poll(pfd, 2, timeout);
    if (n < 0 && errno != EINTR) {
      log_error("poll: %s", strerror(errno));
      break;
    }
    if (pfd[0].revents & POLLIN) {
      uint64_t v;
      if (read(a->wake_fd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing pending */
      }
    }
    if (pfd[1].revents & POLLIN) {
      unsigned char sig;
      while (read(signal_pipe[0], &sig, 1) == 1) {
        if (sig == SIGHUP) {
          reload(a);
        } else {
          log_notice("signal %d: stopping", sig);
          a->running = false;
        }
      }
    }
    process_events(a, false);
    if (a->reload_pending && a->running)
      reload(a);
  }
  notify_send("STOPPING=1");
}

/* Waits (bounded) for the wake fd, then handles what arrived while
 * stopping: deliveries, completions, losses. */
static void stopping_step(agent *a, int wait_ms) {
  struct pollfd pfd = {.fd = a->wake_fd, .events = POLLIN};
  if (poll(&pfd, 1, wait_ms) > 0) {
    uint64_t v;
    if (read(a->wake_fd, &v, sizeof v) < 0) {
      /* spurious */
    }
  }
  process_events(a, true);
  ops_process(a->ops, mono_ms());
  drain(a);
}

/* SIGTERM with operations running: tell their handlers (op_cancelled),
 * give them stop_grace_ms, then fail what is left with a durable 502, so
 * nothing stays EXECUTING and the stop stays well within systemd's
 * timeout. Operations waiting for a reboot are left to the next start. */
static void stop_operations(agent *a) {
  ops_stop(a->ops);
  size_t n = ops_cancel_running(a->ops);
  if (n == 0)
    return;
  log_notice("stopping: %zu running operation(s) told to stop; waiting up to "
             "%d ms",
             n, a->cfg.stop_grace_ms);
  long long until = mono_ms() + a->cfg.stop_grace_ms;
  while (ops_running(a->ops) > 0 && mono_ms() < until)
    stopping_step(a, 20);
  ops_fail_all(a->ops, "agent stopped");
}

/* Processes plugins started (in their own process groups) and left behind:
 * ended with their group, so a stop leaves nothing running. */
static void end_child_processes(void) {
  DIR *d = opendir("/proc");
  if (!d)
    return;
  pid_t self = getpid();
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0)
      continue;
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
      continue;
    long ppid = 0, pgrp = 0;
    /* pid (comm) state ppid pgrp: comm may hold spaces and parentheses. */
    char buf[512];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *close_paren = strrchr(buf, ')');
    if (!close_paren ||
        sscanf(close_paren + 1, " %*c %ld %ld", &ppid, &pgrp) != 2)
      continue;
    if (ppid != self)
      continue;
    log_notice("stopping: ending process %ld left by a plugin", pid);
    if (pgrp == pid)
      kill(-(pid_t)pgrp, SIGKILL);
    else
      kill((pid_t)pid, SIGKILL);
  }
  closedir(d);
}

static void agent_cleanup(agent *a) {
  localapi_stop(a->api);
  a->api = NULL;
  if (a->ops)
    stop_operations(a);
  http_stop(a->http); /* workers in a transfer return promptly */
  shutdown_plugins(a);
  end_child_processes();
  if (a->sess) {
    flush_before_exit(a);
    session_disconnect(a->sess, 1000);
    session_free(a->sess);
  }
  process_events(a, true); /* frees whatever arrived late */
  if (!a->plugin_abandoned) {
    http_free(a->http);
    ops_free(a->ops);
  } else {
    kept_for_abandoned[0] = a->http;
    kept_for_abandoned[1] = a->ops;
  }
  registry_free(&a->reg);
  for (size_t i = 0; i < a->ninflight; i++)
    free(a->window[i].tags);
  outq_close(a->q);
  journal_close(a->j);
  free(a->queue_dir);
  if (a->wake_fd >= 0)
    close(a->wake_fd);
  pthread_mutex_destroy(&a->evmu);
  cfg_free(&a->cfg);
  netdiag_wait(3000); /* not inside OpenSSL while the process exits */
}

static int agent_init(agent *a, const char *config_path) {
  memset(a, 0, sizeof *a);
  a->config_path = config_path;
  a->wake_fd = -1;
  pthread_mutex_init(&a->evmu, NULL);
  registry_init(&a->reg);
  if (load_config(a, config_path) != 0)
    return AGENT_EXIT_CONFIG;
  a->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (a->wake_fd < 0) {
    log_error("eventfd: %s", strerror(errno));
    return AGENT_EXIT_RUNTIME;
  }
  return 0;
}

int agent_run(const char *config_path) {
  agent a;
  int rc = agent_init(&a, config_path);
  if (rc != 0) {
    if (rc != AGENT_EXIT_CONFIG)
      agent_cleanup(&a);
    else
      pthread_mutex_destroy(&a.evmu);
    return rc;
  }
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  install_signals();
  if (open_state(&a) != 0) {
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  setup_host(&a);
  char herr[512];
  if (http_new(&a.cfg, request_token, &a, &a.http, herr, sizeof herr) != 0)
    log_error("no file transfers: %s", herr);
  a.host.http = a.http;
  ops_host oh = {.ctx = &a,
                 .dispatch = dispatch_op,
                 .wake = wake,
                 .finished = op_finished};
  if (ops_new(a.cfg.device_id, &a.reg, a.q, a.j, &oh,
              (uint32_t)a.cfg.op_timeout_s * 1000u, &a.ops) != 0) {
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  ops_recover(a.ops);
  loader_load_all(&a.host, a.cfg.plugin_dir, true, &a.plugins);
  ops_resume(a.ops);
  if (a.cfg.cert_file) {
    char xerr[1024];
    if (x509_check_device_cert(a.cfg.cert_file, a.cfg.key_file, a.cfg.device_id,
                               xerr, sizeof xerr) != 0) {
      log_error("%s", xerr);
      agent_cleanup(&a);
      return AGENT_EXIT_CONFIG;
    }
  }
  rc = bootstrap_ensure(&a.cfg, signal_pipe[0]);
  if (rc != BOOTSTRAP_OK) {
    agent_cleanup(&a);
    return rc == BOOTSTRAP_STOPPED   ? AGENT_EXIT_OK
           : rc == BOOTSTRAP_REFUSED ? AGENT_EXIT_AUTH
                                     : AGENT_EXIT_RUNTIME;
  }
  session_callbacks cb = {.ctx = &a,
                          .connected = cb_connected,
                          .connect_failed = cb_connect_failed,
                          .lost = cb_lost,
                          .message = cb_message,
                          .delivered = cb_delivered};
  char err[1024];
  if (session_new(&a.cfg, &cb, &a.sess, err, sizeof err) != 0) {
    log_error("%s", err);
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  if (localapi_start(&a.cfg, a.q, wake, &a, &a.api, err, sizeof err) != 0)
    log_error("%s; running without it", err);
  localapi_set_plugins(a.api, &a.plugins, &a.reg);
  publish_state(&a);
  long long now = mono_ms();
  for (size_t i = 0; i < a.reg.nproducers; i++)
    a.reg.producers[i]->next_due_ms = now;
  log_notice("c8y-agent %s started: device %s, %zu plugins", C8Y_VERSION,
             a.cfg.device_id, a.plugins.n);
  main_loop(&a);
  rc = a.exit_code;
  agent_cleanup(&a);
  return rc;
}

/* Loads config and plugins as a start would, without connecting or starting
 * workers (plugins may queue data during init: a memory-only queue). */
static int load_for_inspection(agent *a, const char *config_path) {
  int rc = agent_init(a, config_path);
  if (rc != 0) {
    pthread_mutex_destroy(&a->evmu);
    return rc;
  }
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[256];
  if (outq_open(&qo, &a->q, err, sizeof err) != 0) {
    log_error("%s", err);
    agent_cleanup(a);
    return AGENT_EXIT_RUNTIME;
  }
  setup_host(a);
  a->host.wake = NULL;
  loader_load_all(&a->host, a->cfg.plugin_dir, false, &a->plugins);
  return 0;
}

int agent_list_plugins(const char *config_path, FILE *out) {
  agent a;
  int rc = load_for_inspection(&a, config_path);
  if (rc != 0)
    return rc;
  fprintf(out, "plugin dir: %s\n", a.cfg.plugin_dir);
  loader_print(&a.plugins, &a.reg, out);
  rc = loader_failures(&a.plugins) == 0 ? 0 : 1;
  agent_cleanup(&a);
  return rc;
}

/* [plugin.<name>] sections nobody loads, and keys no plugin reads: typos
 * that would otherwise silently leave a setting at its default. */
int agent_check_plugin_sections(const char *config_path, FILE *out) {
  agent a;
  int rc = load_for_inspection(&a, config_path);
  if (rc != 0)
    return rc;
  size_t problems = 0;
  const char **names = calloc(a.plugins.nentries + 1, sizeof *names);
  size_t nnames = 0;
  for (size_t i = 0; names && i < a.plugins.nentries; i++)
    if (a.plugins.entries[i].name)
      names[nnames++] = a.plugins.entries[i].name;
  /* Unknown keys were logged (with file:line) as the plugins loaded. */
  for (size_t i = 0; i < a.plugins.n; i++)
    problems += plugin_report_unused_keys(a.plugins.plugins[i], true);
  const char *reported = NULL;
  for (size_t i = 0; i < a.cfg.nentries; i++) {
    const cfg_entry *e = &a.cfg.entries[i];
    const char *name = e->section + strlen("plugin.");
    bool known = false;
    for (size_t k = 0; k < nnames && !known; k++)
      known = strcmp(names[k], name) == 0;
    if (known || (reported && strcmp(reported, e->section) == 0))
      continue;
    reported = e->section;
    const char *hint = names ? plugin_closest(name, names, nnames) : NULL;
    fprintf(out, "%s:%u: [%s]: no plugin '%s' in %s%s%s%s\n", e->file, e->line,
            e->section, name, a.cfg.plugin_dir,
            hint ? "; did you mean [plugin." : "", hint ? hint : "",
            hint ? "]?" : "");
    problems++;
  }
  free(names);
  agent_cleanup(&a);
  if (problems)
    fprintf(out, "%s: %zu problem(s) in plugin sections\n", config_path,
            problems);
  return problems == 0 ? 0 : AGENT_EXIT_CONFIG;
}
