#include "link.h"

#include "clock.h"
#include "log.h"
#include "netdiag.h"
#include "registration.h"
#include "services.h"
#include "session.h"
#include "sockopt.h"
#include "upstream.h"

#include <c8y/plugin.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_INFLIGHT 8 /* batches; Paho's own window is larger */
/* Publish id of the liveness probe; queue batch ids never get this high. */
#define PROBE_ID UINT64_MAX
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
  uint64_t *tags; /* upstream_tag_bits */
  size_t ntags;
} inflight;

struct link_ctx {
  const agent_config *cfg;
  const upstream *up;
  outq *q;
  runtime *rt;
  const char *queue_dir;
  const bool *running;
  int max_auth_failures;
  link_host host;
  session *sess;

  pthread_mutex_t evmu;
  event *ev_head, *ev_tail;
  /* requests for transfers, under evmu */
  bool token_wanted;
  bool identity_wanted;
  char *identity_child; /* NULL: the root */

  enum link_state state;
  long long reconnect_at;
  int attempt;
  int auth_failures;
  inflight window[MAX_INFLIGHT];
  size_t ninflight;
  registration *regn;     /* what each connect says first */
  long long last_inbound; /* last PUBACK or message from the broker */
  long long probe_sent;   /* 0 = no probe outstanding */
  bool dropping;          /* session_drop issued, waiting for the loss */
  bool trying_identity;   /* reconnecting with a renewed certificate */
};

/* ---- events from Paho threads ---- */

static void post(link_ctx *l, event *e) {
  pthread_mutex_lock(&l->evmu);
  if (l->ev_tail)
    l->ev_tail->next = e;
  else
    l->ev_head = e;
  l->ev_tail = e;
  pthread_mutex_unlock(&l->evmu);
  l->host.wake(l->host.ctx);
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

/* ---- acknowledgements ---- */

/* An acknowledged tag: the registration's own, or an operation's (its
 * start or its journaled final status). */
static void tag_acked(link_ctx *l, upstream_tag tag) {
  switch (tag.kind) {
  case UPSTREAM_TAG_REGISTRATION:
  case UPSTREAM_TAG_PENDING:
    if (registration_acked(l->regn, tag))
      runtime_operations_requested(l->rt);
    break;
  case UPSTREAM_TAG_OPERATION:
  case UPSTREAM_TAG_STATUS:
    runtime_acked(l->rt, tag);
    break;
  case UPSTREAM_TAG_NONE:
    break;
  }
}

/* The registration's subscriptions, on this connect's session. */
static void subscribe(void *ctx, const char *topic, int qos) {
  session_subscribe(((link_ctx *)ctx)->sess, topic, qos);
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
static void set_aside(link_ctx *l, outq_batch *b, const char *why) {
  log_error("batch of %zu lines for topic '%s' can never be published (%s): "
            "set aside in %s/%s; first line: %.80s",
            b->nlines, b->topic, why, l->queue_dir, REJECTED_FILE, b->payload);
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", l->queue_dir, REJECTED_FILE);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  struct stat st;
  if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size < REJECTED_MAX_BYTES) {
    dprintf(fd, "# %s: %s\n%s\n", b->topic, why, b->payload);
  }
  if (fd >= 0)
    close(fd);
  outq_ack(l->q, b->id);
  for (size_t k = 0; k < b->ntags; k++)
    tag_acked(l, upstream_tag_of(b->tags[k]));
}

/* Statuses, 500 and registration need their acknowledgement: QoS >= 1
 * whatever [c8y] qos says for data. */
static int publish_qos(const link_ctx *l, outq_class cls) {
  if ((cls == OUTQ_OPSTATUS || cls == OUTQ_INVENTORY) && l->cfg->qos < 1)
    return 1;
  return l->cfg->qos;
}

void link_drain(link_ctx *l) {
  if (!l)
    return;
  while (l->state == LINK_UP && l->ninflight < MAX_INFLIGHT) {
    outq_batch b;
    /* Until the platform acknowledged this connect's registration, only its
     * lines go: 100 must create the device (with its name and type) before
     * lines plugins queued earlier, e.g. the software list, reach it. */
    upstream_tag first = registration_pending_lines(l->regn);
    int took =
        first.kind != UPSTREAM_TAG_NONE
            ? outq_take_tagged(l->q, upstream_tag_bits(first), C8Y_MAX_LINE, &b)
            : outq_take(l->q, C8Y_MAX_LINE, &b);
    if (took != 1)
      break;
    if (!registration_operations_requested(l->regn) &&
        b.cls == OUTQ_MEASUREMENT) {
      /* A measurement backlog must not fill the window (and a slow link)
       * ahead of the 500 that follows the registration. */
      outq_nack(l->q, b.id);
      outq_batch_free(&b);
      break;
    }
    int rc = publishable_topic(b.topic)
                 ? session_publish(l->sess, b.topic, b.payload, b.len,
                                   publish_qos(l, b.cls), b.id)
                 : C8Y_EINVAL;
    if (rc == C8Y_EINVAL) {
      set_aside(l, &b, "invalid topic or payload");
      outq_batch_free(&b);
      continue;
    }
    if (rc != 0) {
      outq_nack(l->q, b.id);
      outq_batch_free(&b);
      break;
    }
    inflight *slot = &l->window[l->ninflight++];
    slot->id = b.id;
    slot->tags = b.tags;
    slot->ntags = b.ntags;
    b.tags = NULL;
    b.ntags = 0;
    outq_batch_free(&b);
  }
}

static void delivered(link_ctx *l, uint64_t id, bool ok) {
  if (ok)
    l->last_inbound = clock_mono_ms();
  if (id == PROBE_ID) {
    l->probe_sent = 0;
    return;
  }
  for (size_t i = 0; i < l->ninflight; i++) {
    if (l->window[i].id != id)
      continue;
    inflight slot = l->window[i];
    l->window[i] = l->window[--l->ninflight];
    if (ok) {
      outq_ack(l->q, id);
      for (size_t k = 0; k < slot.ntags; k++)
        tag_acked(l, upstream_tag_of(slot.tags[k]));
    } else {
      log_debug("publish of batch %llu failed; it goes back to the queue",
                (unsigned long long)id);
      outq_nack(l->q, id);
    }
    free(slot.tags);
    return;
  }
}

/* The link dropped: what was in flight goes back to the queue, and the
 * operations among it learn that their 501 may or may not have arrived. The
 * registration of the lost connect is dropped: the next one redoes it. */
static void forget_inflight(link_ctx *l) {
  size_t n = 0;
  for (size_t i = 0; i < l->ninflight; i++)
    n += l->window[i].ntags;
  upstream_tag *tags = n ? malloc(n * sizeof *tags) : NULL;
  size_t k = 0;
  for (size_t i = 0; i < l->ninflight; i++) {
    for (size_t t = 0; tags && t < l->window[i].ntags; t++)
      tags[k + t] = upstream_tag_of(l->window[i].tags[t]);
    k += l->window[i].ntags;
    free(l->window[i].tags);
  }
  l->ninflight = 0;
  outq_requeue_inflight(l->q);
  registration_lost(l->regn);
  runtime_lost(l->rt, tags, tags ? n : 0);
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
static long long check_liveness(link_ctx *l, long long now) {
  long long half = (long long)l->cfg->keepalive * 500;
  if (l->state != LINK_UP || l->dropping)
    return -1;
  if (l->probe_sent) {
    if (now - l->probe_sent < half)
      return l->probe_sent + half;
    log_warning("no answer from %s for %lld ms (keepalive %d s): dropping "
                "the connection",
                session_uri(l->sess), now - l->last_inbound, l->cfg->keepalive);
    l->probe_sent = 0;
    if (session_drop(l->sess, "no answer within keepalive") == 0)
      l->dropping = true;
    return -1;
  }
  if (l->ninflight == 0)
    return -1;
  if (now - l->last_inbound < half)
    return l->last_inbound + half;
  if (session_publish(l->sess, "s/us", "125", 3, 1, PROBE_ID) == 0)
    l->probe_sent = now;
  return now + half;
}

static void schedule_reconnect(link_ctx *l) {
  long long delay = l->cfg->reconnect_min_ms;
  for (int i = 0; i < l->attempt && delay < l->cfg->reconnect_max_ms; i++)
    delay *= 2;
  if (delay > l->cfg->reconnect_max_ms)
    delay = l->cfg->reconnect_max_ms;
  /* +-20% jitter so a fleet does not reconnect in lockstep, within
   * [reconnect_min_ms, reconnect_max_ms]. */
  long long jitter = delay / 5;
  if (jitter > 0)
    delay += (long long)(rand() % (2 * jitter + 1)) - jitter;
  if (delay > l->cfg->reconnect_max_ms)
    delay = l->cfg->reconnect_max_ms;
  if (delay < l->cfg->reconnect_min_ms)
    delay = l->cfg->reconnect_min_ms;
  l->attempt++;
  l->reconnect_at = clock_mono_ms() + delay;
  log_info("reconnecting to %s in %lld ms", session_uri(l->sess), delay);
}

/* The end of a try with a renewed pair: whatever the outcome, later
 * connects use the configured names (holding the new pair once the host
 * committed it on acceptance, the old one otherwise). */
static void identity_outcome(link_ctx *l, bool accepted, const char *why) {
  l->trying_identity = false;
  if (l->host.identity_tried)
    l->host.identity_tried(l->host.ctx, accepted, why);
  if (session_set_identity(l->sess, l->cfg->cert_file, l->cfg->key_file) != 0)
    log_error("out of memory: the next connect may use the wrong "
              "certificate");
}

static void handle_event(link_ctx *l, event *e) {
  switch (e->kind) {
  case EV_CONNECTED:
    log_notice("connected to %s as %s", session_uri(l->sess),
               l->cfg->device_id);
    if (l->trying_identity)
      identity_outcome(l, true, NULL);
    l->state = LINK_UP;
    l->attempt = 0;
    l->auth_failures = 0;
    l->last_inbound = clock_mono_ms();
    l->probe_sent = 0;
    l->dropping = false;
    if (sockopt_nodelay_to_port(l->cfg->port) == 0)
      log_debug("TCP_NODELAY: no socket to port %d found", l->cfg->port);
    sockopt_cloexec_all();
    registration_start(l->regn);
    l->host.state(l->host.ctx, "connected");
    break;
  case EV_CONNECT_FAILED:
    l->state = LINK_DOWN;
    if (l->trying_identity) {
      char why[400];
      snprintf(why, sizeof why, "%s%s%s",
               e->code > 0 ? netdiag_connack_meaning(e->code)
                           : "the TLS or MQTT connect failed",
               e->text ? ": " : "", e->text ? e->text : "");
      log_warning("%s refused the renewed certificate: %s; connecting again "
                  "with the current one",
                  session_uri(l->sess), why);
      identity_outcome(l, false, why);
      l->reconnect_at = clock_mono_ms();
      break;
    }
    if (e->code == 4 || e->code == 5) {
      l->auth_failures++;
      log_error("Cumulocity refused the connection for user %s/%s at %s: "
                "CONNACK %d (%s) [%d of %d]",
                l->cfg->tenant ? l->cfg->tenant : "",
                l->cfg->user ? l->cfg->user : "", session_uri(l->sess), e->code,
                netdiag_connack_meaning(e->code), l->auth_failures,
                l->max_auth_failures);
      if (l->auth_failures >= l->max_auth_failures) {
        l->host.gave_up(l->host.ctx);
        break;
      }
    } else {
      log_warning("cannot connect to %s: %s%s%s", session_uri(l->sess),
                  e->code > 0 ? netdiag_connack_meaning(e->code) : "failed",
                  e->text ? ": " : "", e->text ? e->text : "");
      if (e->code < 0)
        netdiag_explain_async(l->cfg); /* names the exact cause */
    }
    schedule_reconnect(l);
    break;
  case EV_LOST:
    if (l->state != LINK_UP) {
      /* Paho and a session_drop can both report the same loss. */
      log_debug("loss already handled: %s", e->text ? e->text : "");
      break;
    }
    log_warning("connection to %s lost: %s", session_uri(l->sess),
                e->text ? e->text : "");
    l->state = LINK_DOWN;
    l->dropping = false;
    l->probe_sent = 0;
    forget_inflight(l);
    l->host.state(l->host.ctx, "disconnected");
    if (l->trying_identity)
      l->reconnect_at = clock_mono_ms(); /* the renewal's one reconnect */
    else
      schedule_reconnect(l);
    break;
  case EV_MESSAGE:
    l->last_inbound = clock_mono_ms();
    runtime_message(l->rt, e->topic, e->text, e->len);
    break;
  case EV_DELIVERED:
    delivered(l, e->id, e->ok);
    break;
  }
}

/* Takes every queued event. While stopping, only deliveries and losses
 * matter: the queue must not start new work. */
void link_process_events(link_ctx *l, bool stopping) {
  if (!l)
    return;
  pthread_mutex_lock(&l->evmu);
  event *e = l->ev_head;
  l->ev_head = l->ev_tail = NULL;
  pthread_mutex_unlock(&l->evmu);
  while (e) {
    event *next = e->next;
    if (!stopping && *l->running)
      handle_event(l, e);
    else if (stopping && e->kind == EV_DELIVERED)
      delivered(l, e->id, e->ok);
    else if (stopping && e->kind == EV_LOST)
      l->state = LINK_DOWN;
    free(e->topic);
    free(e->text);
    free(e);
    e = next;
  }
}

/* ---- interface ---- */

int link_new(const link_params *p, link_ctx **out) {
  *out = NULL;
  link_ctx *l = calloc(1, sizeof *l);
  if (!l)
    return C8Y_ENOMEM;
  l->cfg = p->cfg;
  l->up = p->up;
  l->q = p->up->q;
  l->rt = p->rt;
  l->queue_dir = p->queue_dir;
  l->running = p->running;
  l->max_auth_failures = p->max_auth_failures;
  l->host = p->host;
  registration_host rh = {.ctx = l, .subscribe = subscribe};
  if (registration_new(p->cfg, p->reg, p->up, &rh, &l->regn) != C8Y_OK) {
    free(l);
    return C8Y_ENOMEM;
  }
  pthread_mutex_init(&l->evmu, NULL);
  *out = l;
  return 0;
}

int link_open_session(link_ctx *l, char *err, size_t errlen) {
  session_callbacks cb = {.ctx = l,
                          .connected = cb_connected,
                          .connect_failed = cb_connect_failed,
                          .lost = cb_lost,
                          .message = cb_message,
                          .delivered = cb_delivered};
  return session_new(l->cfg, &cb, &l->sess, err, errlen);
}

/* A clean DISCONNECT drops the will, so the agent's service goes down
 * here. At QoS 0: Paho writes it before the DISCONNECT on the same TCP
 * stream, and the broker handles both in order. At QoS 1 the DISCONNECT
 * waited for its PUBACK, which Paho's disconnect only notices on its next
 * check, about a second later (a 1 s stop where 2 ms is the bench's
 * figure). */
static void disconnect_cleanly(link_ctx *l, int timeout_ms) {
  char down[700];
  if (l->state == LINK_UP && timeout_ms > 0 &&
      services_agent_line(l->cfg->device_id, "down", down, sizeof down) == 0)
    session_publish(l->sess, "s/us", down, strlen(down), 0, 0);
  session_disconnect(l->sess, timeout_ms);
}

void link_close_session(link_ctx *l, int timeout_ms) {
  if (!l || !l->sess)
    return;
  disconnect_cleanly(l, timeout_ms);
  session_free(l->sess);
  l->sess = NULL;
}

void link_end_session(link_ctx *l, int timeout_ms) {
  if (!l || !l->sess)
    return;
  disconnect_cleanly(l, timeout_ms);
  session_free_at_exit(l->sess);
  l->sess = NULL;
}

void link_free(link_ctx *l) {
  if (!l)
    return;
  link_close_session(l, 0);
  link_process_events(l, true); /* frees whatever arrived late */
  for (size_t i = 0; i < l->ninflight; i++)
    free(l->window[i].tags);
  pthread_mutex_destroy(&l->evmu);
  free(l->identity_child);
  registration_free(l->regn);
  free(l);
}

void link_want_token(void *link) {
  link_ctx *l = link;
  pthread_mutex_lock(&l->evmu);
  l->token_wanted = true;
  pthread_mutex_unlock(&l->evmu);
  l->host.wake(l->host.ctx);
}

void link_want_identity(void *link, const char *child) {
  link_ctx *l = link;
  char *copy = child ? strdup(child) : NULL;
  pthread_mutex_lock(&l->evmu);
  free(l->identity_child);
  l->identity_child = copy;
  l->identity_wanted = !child || copy;
  pthread_mutex_unlock(&l->evmu);
  l->host.wake(l->host.ctx);
}

/* s/uat and 123 for the transfers waiting for them, while up. */
static void send_requests(link_ctx *l) {
  if (l->state != LINK_UP)
    return;
  pthread_mutex_lock(&l->evmu);
  bool token = l->token_wanted, identity = l->identity_wanted;
  char *child = l->identity_child;
  l->token_wanted = l->identity_wanted = false;
  l->identity_child = NULL;
  pthread_mutex_unlock(&l->evmu);
  if (token)
    session_publish(l->sess, "s/uat", "", 0, 0, 0);
  if (identity) {
    char topic[300];
    if (child)
      snprintf(topic, sizeof topic, "s/us/%s", child);
    session_publish(l->sess, child ? topic : "s/us", "123", 3, 0, 0);
  }
  free(child);
}

long long link_step(link_ctx *l, long long now) {
  if (l->sess && l->state == LINK_DOWN && now >= l->reconnect_at) {
    l->state = LINK_CONNECTING;
    if (session_connect(l->sess) != 0) {
      l->state = LINK_DOWN;
      schedule_reconnect(l);
    }
  }
  long long next = l->state == LINK_DOWN ? l->reconnect_at : -1;
  long long next_probe = check_liveness(l, now);
  if (next_probe >= 0 && (next < 0 || next_probe < next))
    next = next_probe;
  link_drain(l);
  send_requests(l);
  return next;
}

void link_announce(link_ctx *l) {
  if (l->state == LINK_UP)
    registration_start(l->regn);
}

void link_announce_children(link_ctx *l) {
  if (l && l->state == LINK_UP)
    registration_announce_children(l->regn);
}

int link_try_identity(link_ctx *l, const char *cert_file,
                      const char *key_file) {
  if (!l->sess || l->state != LINK_UP || l->trying_identity || l->dropping)
    return C8Y_ESTATE;
  int rc = session_set_identity(l->sess, cert_file, key_file);
  if (rc != 0)
    return rc;
  log_notice("reconnecting to %s with the renewed certificate %s",
             session_uri(l->sess), cert_file);
  rc = session_drop(l->sess, "reconnecting with the renewed certificate");
  if (rc != 0) {
    session_set_identity(l->sess, l->cfg->cert_file, l->cfg->key_file);
    return rc;
  }
  l->trying_identity = true;
  l->dropping = true;
  return 0;
}

bool link_is_up(const link_ctx *l) { return l && l->state == LINK_UP; }

const char *link_state_name(const link_ctx *l) {
  static const char *const names[] = {
      [LINK_DOWN] = "down", [LINK_CONNECTING] = "connecting", [LINK_UP] = "up"};
  return names[l ? l->state : LINK_DOWN];
}

const char *link_uri(const link_ctx *l) {
  return l && l->sess ? session_uri(l->sess) : NULL;
}

/* ---- as the runtime's transport ---- */

static long long tr_step(void *ctx, long long now) {
  return link_step(ctx, now);
}
static void tr_drain(void *ctx) { link_drain(ctx); }
static void tr_process(void *ctx, bool stopping) {
  link_process_events(ctx, stopping);
}
static void tr_announce(void *ctx) { link_announce(ctx); }
static void tr_announce_children(void *ctx) { link_announce_children(ctx); }
static bool tr_is_up(void *ctx) { return link_is_up(ctx); }
static const char *tr_state(void *ctx) { return link_state_name(ctx); }
static const char *tr_server(void *ctx) { return link_uri(ctx); }

void link_transport(link_ctx *l, runtime_transport *out) {
  *out = (runtime_transport){.ctx = l,
                             .step = tr_step,
                             .drain = tr_drain,
                             .process = tr_process,
                             .announce = tr_announce,
                             .announce_children = tr_announce_children,
                             .is_up = tr_is_up,
                             .state = tr_state,
                             .server = tr_server};
}
