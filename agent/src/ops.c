#include "ops.h"

#include "clock.h"
#include "ident.h"
#include "log.h"
#include "profile.h"
#include "proto.h"
#include "smartrest.h"
#include "status.h"

#include <c8y/plugin.h>

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* OP_UNCERTAIN: the link dropped while the 501 was in flight, so the
 * platform may have it EXECUTING or still PENDING; settled after the
 * reconnect (see ops_on_disconnect). OP_FINISHING: completed, but its final
 * status could not be queued yet; retried. */
enum op_state {
  OP_QUEUED,
  OP_STARTING,
  OP_UNCERTAIN,
  OP_RUNNING,
  OP_FINISHING,
  OP_FINISHED
};

/* Distinct unhandled template ids and fragments remembered for "logged
 * once". */
#define OPS_IGNORED_MAX 64
/* Per payload: record-level warnings logged before the rest are counted. */
#define OPS_WARN_PER_PAYLOAD 5
/* After the reconnect's 500 was acknowledged: how long an operation whose
 * 501 was in flight waits to come back as PENDING before it is taken as
 * EXECUTING on the platform. */
#define OPS_RECONCILE_MS 5000
#define OPS_RETRY_MS 1000
/* Ids of ended operations, so a late JSON copy never runs one again. */
#define OPS_ENDED_IDS 1024
/* Operations that ended with only one of their copies seen. */
#define OPS_TOKENS_MAX 256
#define OPS_DEFAULT_GRACE_MS 3000
/* The failure text of a stop; a plugin's own reason follows it. */
#define OPS_STOP_TEXT "agent stopped"
/* Ended operations whose typed or untyped twin line (527/531, 528/529) may
 * still come in a publish of its own. */
#define OPS_TWIN_MEMO 16
/* Rounds of completions ops_process settles in one call: a profile step
 * that ends queues its profile's next step, whose handler may complete at
 * once. The rest waits for the next call (the completion woke the loop). */
#define OPS_DONE_ROUNDS 64

typedef struct json_memo {
  struct json_memo *next;
  char *path;
  char *value;
} json_memo;

struct c8y_operation {
  ops *engine;
  uint64_t id;       /* the journal's number */
  uintptr_t handle;  /* what the plugin holds; 0 until dispatched */
  char *template_id; /* static template or custom message id; NULL: JSON */
  char *xid;         /* the custom template collection, or NULL */
  char *fragment;
  char *device;
  bool child;
  char **fields; /* parameters after the device id */
  size_t nfields;
  bool has_line; /* a SmartREST copy arrived (main thread only) */
  char *c8y_id;  /* a JSON copy arrived (or the journal knew it) */
  char *json;    /* its document, compact */
  json_t *doc;   /* the same, parsed */
  /* What the plugin reads (template_id, xid, fields, c8y_id, json, doc) is
   * fixed once the handler is dispatched (handle != 0): the plugin may read
   * it on its own thread. A JSON copy matched later only gives the engine
   * the id for the statuses. */
  char *late_c8y_id;
  bool needs_line; /* its template handler waits for the SmartREST copy */
  bool awaiting_line_copy; /* came back PENDING by JSON; its line follows */
  long long arrived_ms;
  reg_handler *handler;   /* NULL: no plugin serves it for this child */
  enum op_state state;    /* main thread only */
  long long reconcile_at; /* OP_UNCERTAIN: 0 until the 500 was acked */
  long long deadline_ms;
  long long grace_until;      /* timed out: when the engine fails it itself */
  struct c8y_operation *next; /* FIFO or parked link (main thread) */
  struct c8y_operation *next_done;
  unsigned refs; /* under handles.mu */
  bool resumed;  /* handed again to its handler after a restart */
  bool rebooted; /* ... and the machine booted since it started */
  /* guarded by engine->mu */
  bool finished;
  bool plugin_released;
  bool engine_failed; /* ended by ops_fail_all: reason is the agent's */
  bool timed_out;
  bool cancelled; /* the agent is stopping */
  int cancel_reason;
  bool reboot;
  bool resume; /* op_resume_after_restart was called */
  bool ok;
  char **params;
  size_t nparams;
  char *reason;
  json_memo *memo; /* op_json_value answers, alive until the operation is */
  /* Device profiles (profile.h), main thread only. A profile no plugin
   * serves is run by the engine itself: its steps are operations of their
   * own (parent set) that the plugins run, without a status of their own
   * on the platform. */
  bool core_profile;            /* the engine runs it */
  profile_plan *plan;           /* its steps, once started */
  size_t steps_done;            /* steps that succeeded */
  bool advance_due;             /* its step succeeded: start the next one */
  uint64_t failed_step;         /* journal entry of the step that failed it */
  struct c8y_operation *parent; /* a step: its profile (a reference) */
  unsigned step;                /* a step: its index */
  bool twin_seen; /* its 527/531 or 528/529 twin line arrived too */
};

/* A line of an ended operation whose twin line may still come. */
typedef struct twin_memo {
  char *device, *template_id;
  char **fields;
  size_t nfields;
  long long until;
} twin_memo;

typedef struct op_fifo {
  char *device;
  char *fragment;
  c8y_operation *head, *tail;
} op_fifo;

/* An operation ended with only one copy seen: the other may still come
 * (within OPS_PAIR_WINDOW_MS) and must not start it again. */
typedef struct pair_token {
  char *device, *fragment;
  bool expect_line; /* else a JSON copy */
  long long until;
} pair_token;

struct ops {
  char *root;
  registry *reg;
  const upstream *up;
  journal *j;
  journal_entry *resumable; /* from ops_recover, for ops_resume */
  size_t nresumable;
  ops_host host;
  uint32_t default_timeout_ms;
  uint32_t grace_ms;
  op_fifo *fifos;
  size_t nfifos;
  pthread_mutex_t mu; /* done list, completion fields */
  c8y_operation *done_head, *done_tail;
  bool stopping;                  /* no new operation starts */
  char *ignored[OPS_IGNORED_MAX]; /* template ids logged as unhandled */
  size_t nignored;
  long long retry_at; /* an OP_FINISHING operation waits for the queue */
  bool json_seen;     /* a JSON operation arrived: the channel works */
  size_t nwaiting;    /* queued operations with needs_line */
  c8y_operation *parked_head, *parked_tail;
  size_t nparked;
  pair_token tokens[OPS_TOKENS_MAX];
  size_t ntokens;
  char *ended[OPS_ENDED_IDS];
  size_t ended_next;
  bool profiles_due; /* some profile's step succeeded: see run_due_profiles */
  twin_memo twins[OPS_TWIN_MEMO];
};

/* ---- handles -------------------------------------------------------------
 * The plugin holds a number: looked up here under one lock that also
 * guards every reference count, so a lookup never finds an operation whose
 * last reference is being dropped. Process-wide because several engines
 * can live in one process (tests), and the numbers must not collide. */

typedef struct handle_slot {
  uintptr_t key; /* 0 = empty */
  c8y_operation *op;
} handle_slot;

static struct {
  pthread_mutex_t mu;
  uintptr_t next;
  handle_slot *tab;
  size_t cap, n; /* cap is a power of two */
} handles = {.mu = PTHREAD_MUTEX_INITIALIZER, .next = 1};

static size_t slot_of(uintptr_t key, size_t cap) {
  return (size_t)(((uint64_t)key * UINT64_C(0x9E3779B97F4A7C15)) >> 17) &
         (cap - 1);
}

/* handles.mu held. */
static bool table_grow(void) {
  size_t cap = handles.cap ? handles.cap * 2 : 64;
  handle_slot *tab = calloc(cap, sizeof *tab);
  if (!tab)
    return false;
  for (size_t i = 0; i < handles.cap; i++) {
    if (!handles.tab[i].key)
      continue;
    size_t s = slot_of(handles.tab[i].key, cap);
    while (tab[s].key)
      s = (s + 1) & (cap - 1);
    tab[s] = handles.tab[i];
  }
  free(handles.tab);
  handles.tab = tab;
  handles.cap = cap;
  return true;
}

/* handles.mu held. */
static c8y_operation *table_find(uintptr_t key) {
  if (!key || !handles.cap)
    return NULL;
  for (size_t s = slot_of(key, handles.cap);; s = (s + 1) & (handles.cap - 1)) {
    if (!handles.tab[s].key)
      return NULL;
    if (handles.tab[s].key == key)
      return handles.tab[s].op;
  }
}

/* handles.mu held. Linear probing without tombstones: the entries after
 * the removed one move back into the gap where their probe allows. */
static void table_remove(uintptr_t key) {
  if (!handles.cap)
    return;
  size_t mask = handles.cap - 1, s = slot_of(key, handles.cap);
  while (handles.tab[s].key && handles.tab[s].key != key)
    s = (s + 1) & mask;
  if (!handles.tab[s].key)
    return;
  handles.tab[s].key = 0;
  handles.n--;
  for (size_t i = (s + 1) & mask; handles.tab[i].key; i = (i + 1) & mask) {
    size_t home = slot_of(handles.tab[i].key, handles.cap);
    /* Moves back if its home is not within (s, i] cyclically. */
    bool between = s <= i ? (home > s && home <= i) : (home > s || home <= i);
    if (!between) {
      handles.tab[s] = handles.tab[i];
      handles.tab[i].key = 0;
      s = i;
    }
  }
}

/* Gives op a handle number (its dispatch); false when out of memory. */
static bool handle_assign(c8y_operation *op) {
  pthread_mutex_lock(&handles.mu);
  bool ok = (handles.n + 1) * 2 <= handles.cap || table_grow();
  if (ok) {
    uintptr_t key = handles.next++;
    if (!handles.next) /* 32-bit wrap after 4e9 operations: skip 0 */
      handles.next = 1;
    size_t s = slot_of(key, handles.cap);
    while (handles.tab[s].key)
      s = (s + 1) & (handles.cap - 1);
    handles.tab[s] = (handle_slot){key, op};
    handles.n++;
    op->handle = key;
  }
  pthread_mutex_unlock(&handles.mu);
  return ok;
}

static void op_ref(c8y_operation *op, unsigned n) {
  pthread_mutex_lock(&handles.mu);
  op->refs += n;
  pthread_mutex_unlock(&handles.mu);
}

/* The live operation behind a plugin's handle, with a reference the caller
 * drops with op_release; NULL when it is gone. */
static c8y_operation *acquire(const c8y_operation *handle) {
  uintptr_t key = (uintptr_t)handle;
  pthread_mutex_lock(&handles.mu);
  c8y_operation *op = table_find(key);
  if (op)
    op->refs++;
  pthread_mutex_unlock(&handles.mu);
  return op;
}

static void free_strv(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

static void op_free(c8y_operation *op) {
  free(op->late_c8y_id);
  free(op->template_id);
  free(op->xid);
  free(op->fragment);
  free(op->device);
  free(op->c8y_id);
  free(op->json);
  json_decref(op->doc);
  free_strv(op->fields, op->nfields);
  free_strv(op->params, op->nparams);
  free(op->reason);
  if (op->plan) {
    profile_plan_free(op->plan);
    free(op->plan);
  }
  for (json_memo *m = op->memo, *next; m; m = next) {
    next = m->next;
    free(m->path);
    free(m->value);
    free(m);
  }
  free(op);
}

static void op_release(c8y_operation *op) {
  pthread_mutex_lock(&handles.mu);
  bool last = --op->refs == 0;
  if (last && op->handle)
    table_remove(op->handle);
  pthread_mutex_unlock(&handles.mu);
  if (last)
    op_free(op);
}

/* ---- engine --------------------------------------------------------------
 */

int ops_new(const char *root_device, registry *reg, const upstream *up,
            journal *j, const ops_host *host, uint32_t default_timeout_ms,
            ops **out) {
  ops *o = calloc(1, sizeof *o);
  if (!o || !(o->root = strdup(root_device))) {
    free(o);
    return C8Y_ENOMEM;
  }
  o->reg = reg;
  o->up = up;
  o->j = j;
  o->host = *host;
  o->default_timeout_ms = default_timeout_ms;
  o->grace_ms = OPS_DEFAULT_GRACE_MS;
  pthread_mutex_init(&o->mu, NULL);
  *out = o;
  return 0;
}

void ops_set_cancel_grace(ops *o, uint32_t grace_ms) { o->grace_ms = grace_ms; }

static void release_list(c8y_operation *op) {
  while (op) {
    c8y_operation *next = op->next;
    /* Plugins are gone: references they never gave back (an operation
     * waiting for a reboot) die with the engine. */
    pthread_mutex_lock(&handles.mu);
    op->refs = 1;
    pthread_mutex_unlock(&handles.mu);
    op_release(op);
    op = next;
  }
}

static void tokens_clear(ops *o) {
  for (size_t i = 0; i < o->ntokens; i++) {
    free(o->tokens[i].device);
    free(o->tokens[i].fragment);
  }
  o->ntokens = 0;
}

static void twin_memo_clear(twin_memo *m) {
  free(m->device);
  free(m->template_id);
  free_strv(m->fields, m->nfields);
  memset(m, 0, sizeof *m);
}

void ops_free(ops *o) {
  if (!o)
    return;
  for (size_t i = 0; i < o->nfifos; i++) {
    release_list(o->fifos[i].head);
    free(o->fifos[i].device);
    free(o->fifos[i].fragment);
  }
  release_list(o->parked_head);
  for (size_t i = 0; i < o->nresumable; i++)
    journal_entry_free(&o->resumable[i]);
  free(o->resumable);
  free(o->fifos);
  for (size_t i = 0; i < o->nignored; i++)
    free(o->ignored[i]);
  for (size_t i = 0; i < OPS_ENDED_IDS; i++)
    free(o->ended[i]);
  tokens_clear(o);
  for (size_t i = 0; i < OPS_TWIN_MEMO; i++)
    twin_memo_clear(&o->twins[i]);
  pthread_mutex_destroy(&o->mu);
  free(o->root);
  free(o);
}

static const char *status_topic(const char *device, bool child, char *buf,
                                size_t len) {
  if (!child)
    return "s/us";
  snprintf(buf, len, "s/us/%s", device);
  return buf;
}

/* Cuts s to at most max bytes without splitting a UTF-8 sequence. */
static void utf8_truncate(char *s, size_t max) {
  size_t len = strlen(s);
  if (len <= max)
    return;
  size_t cut = max;
  while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
    cut--;
  s[cut] = 0;
}

/* The tag of an operation's 504/501. */
static upstream_tag start_tag(const c8y_operation *op) {
  return (upstream_tag){UPSTREAM_TAG_OPERATION, op->id};
}

static int queue_status_line(ops *o, const char *topic,
                             const char *const *fields, size_t n,
                             unsigned flags, upstream_tag tag) {
  int rc = upstream_send(o->up, OUTQ_OPSTATUS, topic, fields, n, flags, tag);
  if (rc != 0)
    log_error("cannot queue '%s,%.50s' for %s (status %d)", fields[0],
              n > 1 && fields[1] ? fields[1] : "", topic, rc);
  return rc;
}

/* A final status. With a journal id (end_id), the end of that operation and
 * the status go into one journal line (one fdatasync for both, see
 * journal_end_status) and the queue keeps the line in memory until its
 * PUBACK; *ended says so. Where the journal cannot take it, the status is
 * queued durably and the caller ends the journal entry itself, as before. */
/* The tag of a final status journaled with its operation's end (journal
 * id end_id): acknowledged, the journal may let the status go. */
static upstream_tag status_tag(uint64_t end_id) {
  return (upstream_tag){UPSTREAM_TAG_STATUS, end_id};
}

static int queue_final(ops *o, const char *topic, const char *line,
                       uint64_t end_id, bool *ended) {
  *ended = false;
  if (end_id && journal_end_status(o->j, end_id, topic, line) == C8Y_OK) {
    *ended = true;
    return upstream_send_line(o->up, OUTQ_OPSTATUS, topic, line, OUTQ_VOLATILE,
                              status_tag(end_id));
  }
  return upstream_send_line(o->up, OUTQ_OPSTATUS, topic, line, 0,
                            UPSTREAM_NO_TAG);
}

/* 503/506 with params: a result too large for one publish is cut, marked,
 * and sent rather than lost. `key` is the fragment (503) or the id (506).
 * end_id, ended: see queue_final. */
static int queue_success(ops *o, const char *topic, const char *key, bool by_id,
                         char **params, size_t nparams, uint64_t end_id,
                         bool *ended) {
  const char **fields = calloc(nparams + 2, sizeof *fields);
  if (!fields)
    return C8Y_ENOMEM;
  fields[0] = by_id ? "506" : "503";
  fields[1] = key;
  for (size_t i = 0; i < nparams; i++)
    fields[i + 2] = params[i];
  smartrest_buf b;
  smartrest_buf_init(&b);
  char *cut = NULL;
  for (int attempt = 0; attempt < 20; attempt++) {
    smartrest_buf_reset(&b);
    if (smartrest_encode_line(&b, fields, nparams + 2) != 0)
      break;
    if (b.len <= C8Y_MAX_LINE || nparams == 0)
      break;
    const char *last = fields[nparams + 1];
    size_t keep = strlen(last) * 8 / 10;
    char *shorter = malloc(keep + 32);
    if (!shorter)
      break;
    memcpy(shorter, last, keep);
    shorter[keep] = 0;
    utf8_truncate(shorter, keep);
    strcat(shorter, "...[truncated]");
    free(cut);
    cut = shorter;
    fields[nparams + 1] = cut;
  }
  *ended = false;
  int rc = b.data ? queue_final(o, topic, b.data, end_id, ended) : C8Y_ENOMEM;
  if (rc != 0)
    log_error("cannot queue the %s for %s on %s (status %d)", fields[0], key,
              topic, rc);
  smartrest_buf_free(&b);
  free(cut);
  free(fields);
  return rc;
}

static int queue_failure(ops *o, const char *topic, const char *key, bool by_id,
                         const char *reason, uint64_t end_id, bool *ended) {
  *ended = false;
  char *r = strdup(reason ? reason : "");
  if (!r)
    return C8Y_ENOMEM;
  utf8_truncate(r, OPS_REASON_MAX);
  const char *fields[] = {by_id ? "505" : "502", key, r};
  int rc;
  if (!end_id) {
    rc = queue_status_line(o, topic, fields, 3, 0, UPSTREAM_NO_TAG);
  } else {
    smartrest_buf b;
    smartrest_buf_init(&b);
    rc = smartrest_encode_line(&b, fields, 3);
    if (rc == 0)
      rc = queue_final(o, topic, b.data, end_id, ended);
    if (rc != 0)
      log_error("cannot queue '%.60s' for %s (status %d)", b.data ? b.data : "",
                topic, rc);
    smartrest_buf_free(&b);
  }
  free(r);
  return rc;
}

static op_fifo *fifo_for(ops *o, const char *device, const char *fragment,
                         bool create) {
  for (size_t i = 0; i < o->nfifos; i++)
    if (strcmp(o->fifos[i].device, device) == 0 &&
        strcmp(o->fifos[i].fragment, fragment) == 0)
      return &o->fifos[i];
  if (!create)
    return NULL;
  op_fifo *grown = realloc(o->fifos, (o->nfifos + 1) * sizeof *grown);
  if (!grown)
    return NULL;
  o->fifos = grown;
  op_fifo *f = &grown[o->nfifos];
  memset(f, 0, sizeof *f);
  f->device = strdup(device);
  f->fragment = strdup(fragment);
  if (!f->device || !f->fragment) {
    free(f->device);
    free(f->fragment);
    return NULL;
  }
  o->nfifos++;
  return f;
}

static void fifo_append(op_fifo *f, c8y_operation *op) {
  op->next = NULL;
  if (f->tail)
    f->tail->next = op;
  else
    f->head = op;
  f->tail = op;
}

/* Unlinks op (not necessarily the head) from f. */
static void fifo_unlink(op_fifo *f, c8y_operation *op) {
  c8y_operation *prev = NULL;
  for (c8y_operation *x = f->head; x; prev = x, x = x->next) {
    if (x != op)
      continue;
    if (prev)
      prev->next = x->next;
    else
      f->head = x->next;
    if (f->tail == x)
      f->tail = prev;
    x->next = NULL;
    return;
  }
}

static void park(ops *o, c8y_operation *op) {
  if (o->nparked >= OPS_PARKED_MAX) {
    c8y_operation *oldest = o->parked_head;
    o->parked_head = oldest->next;
    if (!o->parked_head)
      o->parked_tail = NULL;
    o->nparked--;
    log_warning("operation for %s (%s) dropped from the %d kept for children "
                "no plugin announced yet; it stays PENDING until the next "
                "connect",
                oldest->device, oldest->fragment, OPS_PARKED_MAX);
    op_release(oldest);
  }
  op->next = NULL;
  if (o->parked_tail)
    o->parked_tail->next = op;
  else
    o->parked_head = op;
  o->parked_tail = op;
  o->nparked++;
}

/* ---- starting ------------------------------------------------------------
 */

static void run_started(ops *o, c8y_operation *op);

/* The id the statuses use, once known (main thread). */
static const char *status_id(const c8y_operation *op) {
  return op->c8y_id ? op->c8y_id : op->late_c8y_id;
}
static bool start_queued(ops *o, c8y_operation *op) {
  char tbuf[512];
  const char *topic = status_topic(op->device, op->child, tbuf, sizeof tbuf);
  const char *fields[] = {status_id(op) ? "504" : "501",
                          status_id(op) ? status_id(op) : op->fragment};
  /* Volatile: a 501 left over from a previous run would move an operation
   * nobody is working on to EXECUTING. */
  if (queue_status_line(o, topic, fields, 2, OUTQ_VOLATILE, start_tag(op)) != 0)
    return false;
  op->state = OP_STARTING;
  return true;
}

/* Starts the head of f when it may start: not while stopping, not before
 * a template handler has its SmartREST line, and not for a child its plugin
 * removed since it was queued (then it is parked). */
static void start_head(ops *o, op_fifo *f) {
  while (f->head && f->head->state == OP_QUEUED && !o->stopping) {
    c8y_operation *op = f->head;
    if (op->child && !registry_device_known(o->reg, op->device)) {
      fifo_unlink(f, op);
      if (op->needs_line)
        o->nwaiting--;
      log_info("operation #%llu (%s): child %s is gone; kept until it is "
               "added again",
               (unsigned long long)op->id, op->fragment, op->device);
      op->handler = NULL;
      park(o, op);
      continue;
    }
    if (op->needs_line && !op->has_line)
      return;
    if (op->parent) /* a profile's step: no status of its own */
      run_started(o, op);
    else
      start_queued(o, op);
    return;
  }
}

static void fifo_advance(ops *o, op_fifo *f) {
  while (f->head && f->head->state == OP_FINISHED) {
    c8y_operation *done = f->head;
    f->head = done->next;
    if (!f->head)
      f->tail = NULL;
    op_release(done);
  }
  if (f->head && f->head->advance_due) /* a profile resumed behind another */
    o->profiles_due = true;
  start_head(o, f);
}

/* ---- arrival -------------------------------------------------------------
 */

/* Bounded, so a payload of 100k distinct bogus ids costs constant work per
 * record; past the bound new ids are no longer logged individually. */
static bool ignored_before(ops *o, const char *id) {
  for (size_t i = 0; i < o->nignored; i++)
    if (strcmp(o->ignored[i], id) == 0)
      return true;
  if (o->nignored < OPS_IGNORED_MAX) {
    char *copy = strdup(id);
    if (copy)
      o->ignored[o->nignored++] = copy;
    return false;
  }
  return true;
}

/* Record-level warnings of one payload: the first few are logged, the rest
 * counted and summed up once. */
typedef struct warn_budget {
  size_t logged, suppressed;
} warn_budget;

static bool may_warn(warn_budget *w) {
  if (w->logged < OPS_WARN_PER_PAYLOAD) {
    w->logged++;
    return true;
  }
  w->suppressed++;
  return false;
}

static bool ended_before(ops *o, const char *c8y_id) {
  for (size_t i = 0; i < OPS_ENDED_IDS; i++)
    if (o->ended[i] && strcmp(o->ended[i], c8y_id) == 0)
      return true;
  return false;
}

static void ended_add(ops *o, const char *c8y_id) {
  char *copy = strdup(c8y_id);
  if (!copy)
    return;
  free(o->ended[o->ended_next]);
  o->ended[o->ended_next] = copy;
  o->ended_next = (o->ended_next + 1) % OPS_ENDED_IDS;
}

static void token_add(ops *o, const c8y_operation *op, bool expect_line) {
  if (o->ntokens == OPS_TOKENS_MAX) {
    free(o->tokens[0].device);
    free(o->tokens[0].fragment);
    memmove(&o->tokens[0], &o->tokens[1],
            (OPS_TOKENS_MAX - 1) * sizeof o->tokens[0]);
    o->ntokens--;
  }
  pair_token *t = &o->tokens[o->ntokens];
  t->device = strdup(op->device);
  t->fragment = strdup(op->fragment);
  if (!t->device || !t->fragment) {
    free(t->device);
    free(t->fragment);
    return;
  }
  t->expect_line = expect_line;
  t->until = clock_mono_ms() + OPS_PAIR_WINDOW_MS;
  o->ntokens++;
}

/* A late copy of an operation that already ended: the oldest token of its
 * device and fragment that expects this kind of copy is used up. */
static bool token_take(ops *o, const c8y_operation *op, bool line) {
  long long now = clock_mono_ms();
  for (size_t i = 0; i < o->ntokens; i++) {
    pair_token *t = &o->tokens[i];
    if (t->until <= now || t->expect_line != line ||
        strcmp(t->device, op->device) != 0 ||
        strcmp(t->fragment, op->fragment) != 0)
      continue;
    free(t->device);
    free(t->fragment);
    memmove(t, t + 1, (o->ntokens - i - 1) * sizeof *t);
    o->ntokens--;
    return true;
  }
  return false;
}

/* ---- typed twins ---------------------------------------------------------
 * A device profile comes as 527 and, when a software item has a type, also
 * as 531 "alongside" (Cumulocity's device-profile page; 528/529 likewise
 * for a software update). In one publish the plain one is skipped
 * (superseded); these cover a twin that comes in a publish of its own: it
 * joins its operation (the typed line replaces the plain one while the
 * handler has not seen it) or, once that ended, is dropped. */

static bool is_twin_template(const char *template_id) {
  return proto_richer_twin(template_id) || proto_plain_twin(template_id);
}

/* An ended operation's line whose twin has not arrived. */
static void twin_memo_add(ops *o, const c8y_operation *op) {
  if (!op->has_line || op->twin_seen || !is_twin_template(op->template_id))
    return;
  twin_memo *m = &o->twins[0];
  for (size_t i = 1; i < OPS_TWIN_MEMO; i++) /* a free slot, else the oldest */
    if (m->device && (!o->twins[i].device || o->twins[i].until < m->until))
      m = &o->twins[i];
  twin_memo_clear(m);
  m->device = strdup(op->device);
  m->template_id = strdup(op->template_id);
  m->fields = calloc(op->nfields + 1, sizeof *m->fields);
  bool ok = m->device && m->template_id && m->fields;
  for (size_t i = 0; ok && i < op->nfields; i++)
    ok = (m->fields[m->nfields++] = strdup(op->fields[i])) != NULL;
  if (!ok) {
    twin_memo_clear(m);
    return;
  }
  m->until = clock_mono_ms() + OPS_PAIR_WINDOW_MS;
}

static bool twin_memo_take(ops *o, const c8y_operation *line) {
  long long now = clock_mono_ms();
  for (size_t i = 0; i < OPS_TWIN_MEMO; i++) {
    twin_memo *m = &o->twins[i];
    if (!m->device || m->until <= now || strcmp(m->device, line->device) != 0 ||
        !profile_twins(m->template_id, m->fields, m->nfields, line->template_id,
                       line->fields, line->nfields))
      continue;
    twin_memo_clear(m);
    return true;
  }
  return false;
}

/* True when `line` is the twin of an operation of f (it then joins it) or
 * of one that ended; the caller drops it. in_payload: its twin came in
 * the same publish (and was skipped there). */
static bool twin_copy(ops *o, op_fifo *f, c8y_operation *line,
                      bool in_payload) {
  if (!is_twin_template(line->template_id))
    return false;
  if (in_payload) {
    line->twin_seen = true;
    return false;
  }
  for (c8y_operation *x = f ? f->head : NULL; x; x = x->next) {
    if (x->state == OP_FINISHED || x->parent || !x->has_line || x->twin_seen ||
        !profile_twins(x->template_id, x->fields, x->nfields, line->template_id,
                       line->fields, line->nfields))
      continue;
    x->twin_seen = true;
    bool same_runner = x->core_profile == line->core_profile &&
                       (x->handler == line->handler ||
                        (x->handler && line->handler &&
                         x->handler->plugin == line->handler->plugin));
    bool richer = proto_plain_twin(line->template_id) != NULL;
    if (richer && same_runner && x->handle == 0 && !x->plan) {
      char *tid = x->template_id;
      char **fields = x->fields;
      size_t n = x->nfields;
      x->template_id = line->template_id;
      x->fields = line->fields;
      x->nfields = line->nfields;
      x->handler = line->handler;
      line->template_id = tid;
      line->fields = fields;
      line->nfields = n;
      log_info("operation #%llu (%s): its typed twin %s came on its own; it "
               "runs from that",
               (unsigned long long)x->id, x->fragment, x->template_id);
    } else {
      log_info("operation #%llu (%s): %s is its twin, come on its own; not "
               "run again",
               (unsigned long long)x->id, x->fragment, line->template_id);
    }
    return true;
  }
  if (twin_memo_take(o, line)) {
    log_info("%s copy of an operation of %s on %s that already ran (the twin "
             "of its line); ignored",
             line->template_id, line->fragment, line->device);
    return true;
  }
  return false;
}

/* The operation in the engine (queued, running or parked) with this id. */
static c8y_operation *find_by_c8y_id(ops *o, const char *c8y_id) {
  for (size_t i = 0; i < o->nfifos; i++)
    for (c8y_operation *op = o->fifos[i].head; op; op = op->next)
      if (status_id(op) && op->state != OP_FINISHED &&
          strcmp(status_id(op), c8y_id) == 0)
        return op;
  for (c8y_operation *op = o->parked_head; op; op = op->next)
    if (op->c8y_id && strcmp(op->c8y_id, c8y_id) == 0)
      return op;
  return NULL;
}

static c8y_operation *op_alloc(ops *o, const char *device, bool child,
                               const char *fragment) {
  c8y_operation *op = calloc(1, sizeof *op);
  if (!op)
    return NULL;
  op->engine = o;
  op->refs = 1;
  op->device = strdup(device);
  op->fragment = strdup(fragment);
  op->child = child;
  op->arrived_ms = clock_mono_ms();
  if (!op->device || !op->fragment) {
    op_release(op);
    return NULL;
  }
  return op;
}

/* The line's template, collection and parameters (fields after the device
 * id). */
static bool set_line(c8y_operation *op, const char *template_id,
                     const char *xid, char *const *params, size_t n) {
  op->template_id = strdup(template_id);
  op->xid = xid ? strdup(xid) : NULL;
  op->fields = calloc(n + 1, sizeof *op->fields);
  bool ok = op->template_id && (!xid || op->xid) && op->fields;
  for (size_t i = 0; ok && i < n; i++)
    ok = (op->fields[op->nfields++] = strdup(params[i])) != NULL;
  op->has_line = true;
  return ok;
}

static bool same_fields(const c8y_operation *op, const c8y_operation *line) {
  if (op->has_line && op->template_id &&
      profile_twins(op->template_id, op->fields, op->nfields, line->template_id,
                    line->fields, line->nfields))
    return true;
  if (!op->has_line || !op->template_id ||
      strcmp(op->template_id, line->template_id) != 0 ||
      op->nfields != line->nfields)
    return false;
  for (size_t i = 0; i < op->nfields; i++)
    if (strcmp(op->fields[i], line->fields[i]) != 0)
      return false;
  return true;
}

static int complete(c8y_operation *op, bool ok, const char *const *params,
                    size_t n, const char *reason);

/* The journal learns an id that arrived after the operation began. */
static void journal_id(ops *o, c8y_operation *op) {
  if ((op->state == OP_RUNNING || op->state == OP_FINISHING) &&
      journal_set_c8y_id(o->j, op->id, status_id(op)) != C8Y_OK)
    log_warning("operation #%llu: journal write failed; a restart during it "
                "reports it by fragment",
                (unsigned long long)op->id);
}

/* The other copy of `mate` arrived as `copy`: mate takes what it carries.
 * Once mate's handler was dispatched the plugin may be reading its fields
 * and document on its own thread, so they stay as they are: the engine
 * only learns the id for the statuses (and that the line came). The handler
 * stays the one chosen for mate unless mate has not started and the line
 * names a template a template handler serves. */
static void merge(ops *o, c8y_operation *mate, c8y_operation *copy) {
  /* A profile the engine runs reads its copy once, at its start. */
  bool visible = mate->handle != 0 || mate->plan != NULL;
  mate->twin_seen = mate->twin_seen || copy->twin_seen;
  if (copy->c8y_id && !status_id(mate)) {
    if (mate->plan) /* 121,true names the profile */
      profile_plan_learn_id(mate->plan, copy->json);
    if (visible) {
      mate->late_c8y_id = copy->c8y_id;
      copy->c8y_id = NULL;
    } else {
      mate->c8y_id = copy->c8y_id;
      mate->json = copy->json;
      mate->doc = copy->doc;
      copy->c8y_id = copy->json = NULL;
      copy->doc = NULL;
    }
    log_info("operation #%llu (%s) is Cumulocity operation %s",
             (unsigned long long)mate->id, mate->fragment, status_id(mate));
    journal_id(o, mate);
  }
  if (copy->has_line && !mate->has_line) {
    mate->has_line = true;
    if (!visible) {
      mate->template_id = copy->template_id;
      mate->xid = copy->xid;
      mate->fields = copy->fields;
      mate->nfields = copy->nfields;
      copy->template_id = copy->xid = NULL;
      copy->fields = NULL;
      copy->nfields = 0;
    }
    if (mate->needs_line) {
      mate->needs_line = false;
      o->nwaiting--;
    }
    if (mate->state == OP_QUEUED && copy->handler)
      mate->handler = copy->handler;
  }
}

/* The oldest operation of f that lacks the copy `op` is: one JSON copy and
 * one SmartREST copy per operation. An operation waiting to learn whether
 * its 501 arrived is settled by the reconnect, not matched. */
static c8y_operation *find_mate(op_fifo *f, const c8y_operation *op) {
  for (c8y_operation *x = f->head; x; x = x->next) {
    if (x->state == OP_FINISHED || x->state == OP_UNCERTAIN || x->parent)
      continue;
    if (op->c8y_id && !op->has_line && x->has_line && !status_id(x))
      return x;
    if (op->has_line && !op->c8y_id && status_id(x) && !x->has_line)
      return x;
  }
  return NULL;
}

/* Same for a parked copy (its child not announced yet). */
static c8y_operation *find_parked_mate(ops *o, const c8y_operation *op) {
  for (c8y_operation *x = o->parked_head; x; x = x->next) {
    if (strcmp(x->device, op->device) != 0 ||
        strcmp(x->fragment, op->fragment) != 0)
      continue;
    if ((op->c8y_id && !op->has_line && x->has_line && !x->c8y_id) ||
        (op->has_line && !op->c8y_id && x->c8y_id && !x->has_line))
      return x;
  }
  return NULL;
}

/* Queues a new copy: matched with its other copy, dropped as a late copy
 * of an ended operation, or a new operation at the end of its FIFO. Takes
 * the caller's reference. */
static void admit(ops *o, c8y_operation *op) {
  op_fifo *f = fifo_for(o, op->device, op->fragment, true);
  if (!f) {
    log_error("out of memory queueing an operation for %s", op->device);
    op_release(op);
    return;
  }
  c8y_operation *mate = find_mate(f, op);
  if (mate) {
    merge(o, mate, op);
    op_release(op);
    start_head(o, f);
    return;
  }
  bool line_only = op->has_line && !op->c8y_id;
  bool json_only = op->c8y_id && !op->has_line;
  if ((line_only || json_only) && token_take(o, op, line_only)) {
    log_info("%s copy of an operation of %s on %s that already ran; ignored",
             line_only ? "SmartREST" : "JSON", op->fragment, op->device);
    if (json_only)
      ended_add(o, op->c8y_id);
    else
      twin_memo_add(o, op); /* its twin line may follow on its own */
    op_release(op);
    return;
  }
  op->id = journal_next_id(o->j);
  op->needs_line = op->handler && op->handler->template_id && !op->has_line;
  if (op->needs_line)
    o->nwaiting++;
  bool both = op->template_id && op->c8y_id;
  log_info("operation %s (%s) for %s queued as #%llu%s%s%s",
           op->template_id ? op->template_id : op->c8y_id, op->fragment,
           op->device, (unsigned long long)op->id,
           both ? ", Cumulocity id " : "", both ? op->c8y_id : "",
           op->handler || op->core_profile
               ? ""
               : " (its device's plugin does not handle it)");
  fifo_append(f, op);
  if (f->head == op)
    start_head(o, f);
}

/* The head of f waits to learn whether its in-flight 501 reached the
 * platform. Cumulocity hands out PENDING operations oldest first, so the
 * first copy for this device and fragment after the reconnect settles it:
 * the same operation means it is still PENDING (and the copy is that
 * operation, not a new one); anything else means the 501 arrived and it is
 * EXECUTING. Returns true when `line` was the uncertain operation itself
 * (or a second copy of one that came back). */
static bool reconcile_line(ops *o, op_fifo *f, const c8y_operation *line) {
  for (c8y_operation *x = f->head; x; x = x->next)
    if (x->awaiting_line_copy && same_fields(x, line)) {
      x->awaiting_line_copy = false;
      return true;
    }
  c8y_operation *op = f->head;
  if (!op || op->state != OP_UNCERTAIN)
    return false;
  if (same_fields(op, line)) {
    log_info("operation #%llu (%s) came back as PENDING: starting it again",
             (unsigned long long)op->id, op->fragment);
    op->state = OP_QUEUED;
    op->awaiting_line_copy = false;
    start_head(o, f);
    return true;
  }
  log_info("operation #%llu (%s): its 501 reached the platform before the "
           "link dropped; running it",
           (unsigned long long)op->id, op->fragment);
  run_started(o, op);
  return false;
}

/* Where a copy comes from, for the log. */
typedef struct line_in {
  const char *where; /* "s/ds" or "s/dc/<xid>" */
  const char *template_id, *xid, *fragment;
  const smartrest_record *r;
  bool twin_in_payload; /* its 527/528 twin was in the same publish */
} line_in;

static void handle_line(ops *o, const line_in *in, warn_budget *w) {
  const smartrest_record *r = in->r;
  const char *tid = in->template_id;
  if (r->nfields < 2 || !r->fields[1][0]) {
    if (may_warn(w))
      log_warning("%s record %zu: template %s without a device id; ignored",
                  in->where, r->line, tid);
    return;
  }
  const char *device = r->fields[1];
  const char *bad_id = ident_check(device, false);
  if (bad_id) {
    log_warning("%s record %zu: operation %s: the device id %s; ignored",
                in->where, r->line, tid, bad_id);
    return;
  }
  bool child = strcmp(device, o->root) != 0;
  bool known = !child || registry_device_known(o->reg, device);
  reg_handler *h = NULL;
  if (known)
    h = in->xid ? registry_fragment_handler_for(o->reg, in->fragment,
                                                child ? device : NULL)
                : registry_handler_for(o->reg, tid, in->fragment,
                                       child ? device : NULL);
  /* A device profile no plugin serves: the engine runs its steps. */
  bool core = known && !h && !child && !in->xid &&
              strcmp(in->fragment, PROFILE_FRAGMENT) == 0;
  if (known && !h && !child && !core) {
    if (!ignored_before(o, tid))
      log_notice("%s: no handler for template %s on %s; left untouched "
                 "(logged once per template)",
                 in->where, tid, device);
    return;
  }
  c8y_operation *op = op_alloc(o, device, child, in->fragment);
  if (!op || !set_line(op, tid, in->xid, r->fields + 2, r->nfields - 2)) {
    log_error("out of memory queueing operation %s", tid);
    if (op)
      op_release(op);
    return;
  }
  op->handler = h;
  op->core_profile = core;
  if (!known) {
    c8y_operation *mate = find_parked_mate(o, op);
    if (mate) {
      merge(o, mate, op);
      op_release(op);
      return;
    }
    if (may_warn(w))
      log_notice("%s record %zu: operation %s for unknown device '%s': no "
                 "plugin announced such a child (yet); kept until one adds it",
                 in->where, r->line, tid, device);
    park(o, op);
    return;
  }
  op_fifo *f = fifo_for(o, device, in->fragment, false);
  if ((f && reconcile_line(o, f, op)) ||
      twin_copy(o, f, op, in->twin_in_payload)) {
    op_release(op);
    return;
  }
  admit(o, op);
}

/* 527/531 (device profile) and 528/529 (software update) describe the same
 * operation twice; only the richer one is handled. The richer records of a
 * payload are sorted by (template, device) once, so each lookup is a binary
 * search instead of a scan of the whole payload. */
typedef struct twin_set {
  const smartrest_record **recs;
  size_t n;
} twin_set;

static int twin_cmp(const void *a, const void *b) {
  const smartrest_record *x = *(const smartrest_record *const *)a;
  const smartrest_record *y = *(const smartrest_record *const *)b;
  int c = strcmp(x->fields[0], y->fields[0]);
  return c ? c : strcmp(x->fields[1], y->fields[1]);
}

/* Every well-formed record of the payload, so a twin of any template can be
 * looked up; only payloads that hold a template with a twin pay for it. */
static void twins_collect(const smartrest_records *recs, twin_set *t) {
  t->recs = NULL;
  t->n = 0;
  bool any = false;
  for (size_t i = 0; i < recs->count && !any; i++)
    any = !recs->items[i].error && recs->items[i].nfields >= 2 &&
          proto_richer_twin(recs->items[i].fields[0]) != NULL;
  if (!any || !(t->recs = malloc(recs->count * sizeof *t->recs)))
    return;
  for (size_t i = 0; i < recs->count; i++) {
    const smartrest_record *r = &recs->items[i];
    if (!r->error && r->nfields >= 2)
      t->recs[t->n++] = r;
  }
  qsort(t->recs, t->n, sizeof *t->recs, twin_cmp);
}

static bool twins_hold(const twin_set *t, const char *template_id,
                       const char *device) {
  if (t->n == 0)
    return false;
  char *key_fields[2] = {(char *)template_id, (char *)device};
  smartrest_record key = {.fields = key_fields, .nfields = 2};
  const smartrest_record *kp = &key;
  return bsearch(&kp, t->recs, t->n, sizeof *t->recs, twin_cmp) != NULL;
}

static bool superseded(const twin_set *t, const smartrest_record *r) {
  const char *richer = proto_richer_twin(r->fields[0]);
  return richer && r->nfields >= 2 && twins_hold(t, richer, r->fields[1]);
}

/* Downstream records that are answers, not operations. */
static bool is_reply(const char *tid) {
  return strcmp(tid, "106") == 0 || strcmp(tid, "124") == 0 ||
         strcmp(tid, "601") == 0 || strcmp(tid, "603") == 0;
}

void ops_handle_records(ops *o, const smartrest_records *recs) {
  twin_set twins;
  twins_collect(recs, &twins);
  warn_budget w = {0, 0};
  for (size_t i = 0; i < recs->count; i++) {
    const smartrest_record *r = &recs->items[i];
    if (r->error) {
      if (may_warn(&w))
        log_warning("s/ds record %zu: %s; record ignored", r->line, r->error);
      continue;
    }
    if (r->nfields == 0 || !r->fields[0][0] || is_reply(r->fields[0]))
      continue;
    if (superseded(&twins, r)) {
      log_debug("s/ds record %zu: template %s superseded by its typed twin",
                r->line, r->fields[0]);
      continue;
    }
    const char *fragment = proto_fragment(r->fields[0]);
    if (!fragment) {
      if (!ignored_before(o, r->fields[0]))
        log_notice("s/ds: no handler for template %s; left untouched (logged "
                   "once per template)",
                   r->fields[0]);
      continue;
    }
    const char *plain = proto_plain_twin(r->fields[0]);
    line_in in = {.where = "s/ds",
                  .template_id = r->fields[0],
                  .fragment = fragment,
                  .r = r,
                  .twin_in_payload = plain && r->nfields >= 2 &&
                                     twins_hold(&twins, plain, r->fields[1])};
    handle_line(o, &in, &w);
  }
  if (w.suppressed)
    log_warning("s/ds: %zu more bad records in the same payload not logged",
                w.suppressed);
  free(twins.recs);
}

void ops_handle_payload(ops *o, const char *payload, size_t len) {
  smartrest_records recs;
  if (smartrest_decode(payload, len, &recs) != 0) {
    log_error("s/ds: out of memory decoding a %zu-byte payload", len);
    return;
  }
  ops_handle_records(o, &recs);
  smartrest_records_free(&recs);
}

void ops_handle_template_record(ops *o, const reg_template_op *t,
                                const smartrest_record *r) {
  char where[300];
  snprintf(where, sizeof where, "s/dc/%s", t->xid);
  line_in in = {.where = where,
                .template_id = t->message_id,
                .xid = t->xid,
                .fragment = t->fragment,
                .r = r};
  warn_budget w = {0, 0};
  handle_line(o, &in, &w);
}

/* ---- JSON operations ------------------------------------------------------
 * Source: Cumulocity "JSON via MQTT", Receiving operations: the document
 * is the operation as the REST API has it ("id", "status", "deviceId",
 * "creationTime", "description", "delivery", the fragments) plus
 * "externalSource" naming the device or child. */

/* Keys of an operation that are no fragment of it. */
static bool operation_property(const char *key) {
  static const char *const props[] = {"delivery", "externalSource", "self",
                                      "com_cumulocity_model_event_"
                                      "CumulocitySeverity"};
  for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
    if (strcmp(key, props[i]) == 0)
      return true;
  return false;
}

/* The operation's fragment: the first one a handler serves for the device
 * (NULL = root; not looked up when !known), else the first one it
 * carries, with *h NULL. NULL: it carries none. */
static const char *json_fragment(ops *o, json_t *doc, const char *device,
                                 bool known, reg_handler **h) {
  const char *first = NULL, *key;
  json_t *v;
  *h = NULL;
  json_object_foreach(doc, key, v) {
    if ((!json_is_object(v) && !json_is_array(v)) || operation_property(key))
      continue;
    if (!first)
      first = key;
    if (!known)
      break;
    reg_handler *found = registry_fragment_handler_for(o->reg, key, device);
    if (found) {
      *h = found;
      return key;
    }
  }
  return first;
}

/* The id as text: Cumulocity sends it as a string; a number is taken too. */
static bool json_id(json_t *v, char *buf, size_t len) {
  if (json_is_string(v) && json_string_length(v) > 0 &&
      json_string_length(v) < len) {
    snprintf(buf, len, "%s", json_string_value(v));
  } else if (json_is_integer(v) && json_integer_value(v) > 0) {
    snprintf(buf, len, "%lld", (long long)json_integer_value(v));
  } else {
    return false;
  }
  /* It goes into 504/505/506 lines as one field: digits only. */
  for (const char *c = buf; *c; c++)
    if (*c < '0' || *c > '9')
      return false;
  return true;
}

static void handle_json_doc(ops *o, json_t *doc, size_t index, warn_budget *w) {
  char cid[64];
  if (!json_id(json_object_get(doc, "id"), cid, sizeof cid)) {
    if (may_warn(w))
      log_warning("devicecontrol/notifications document %zu: no operation "
                  "id (a string of digits); ignored",
                  index);
    return;
  }
  o->json_seen = true;
  const char *status = json_string_value(json_object_get(doc, "status"));
  bool pending = !status || strcmp(status, "PENDING") == 0;
  c8y_operation *known = find_by_c8y_id(o, cid);
  if (known && known->state == OP_UNCERTAIN && status &&
      strcmp(status, "EXECUTING") == 0) {
    log_info("operation #%llu (%s) is EXECUTING on the platform: its start "
             "arrived before the link dropped; running it",
             (unsigned long long)known->id, known->fragment);
    run_started(o, known);
    return;
  }
  if (!pending) {
    /* Another agent run or another channel moved it on already. */
    log_debug("operation %s is %s: not run again", cid, status);
    return;
  }
  json_t *ext = json_object_get(doc, "externalSource");
  const char *device = json_string_value(json_object_get(ext, "externalId"));
  /* The agent's own operations have deviceId == agentId (the device may
   * have more than one external id, and externalSource names one of
   * them); without externalSource there is only the agent itself. */
  const char *dev_mo = json_string_value(json_object_get(doc, "deviceId"));
  const char *agent_mo = json_string_value(json_object_get(doc, "agentId"));
  if (!ext || (dev_mo && agent_mo && strcmp(dev_mo, agent_mo) == 0))
    device = o->root;
  const char *bad_id = device ? ident_check(device, false) : "is missing";
  if (bad_id) {
    if (may_warn(w))
      log_warning("devicecontrol/notifications: operation %s: the device id "
                  "(externalSource.externalId) %s; ignored",
                  cid, bad_id);
    return;
  }
  if (known) {
    if (known->state == OP_UNCERTAIN) {
      log_info("operation #%llu (%s) came back as PENDING: starting it again",
               (unsigned long long)known->id, known->fragment);
      known->state = OP_QUEUED;
      known->awaiting_line_copy = known->has_line;
      op_fifo *kf = fifo_for(o, known->device, known->fragment, false);
      if (kf)
        start_head(o, kf);
    } else {
      log_debug("operation %s delivered again; already known", cid);
    }
    return;
  }
  if (ended_before(o, cid)) {
    log_debug("operation %s delivered again after it ended; ignored", cid);
    return;
  }
  bool child = strcmp(device, o->root) != 0;
  bool known_device = !child || registry_device_known(o->reg, device);
  reg_handler *h = NULL;
  const char *fragment =
      json_fragment(o, doc, child ? device : NULL, known_device, &h);
  if (!fragment) {
    if (may_warn(w))
      log_warning("devicecontrol/notifications: operation %s carries no "
                  "fragment; ignored",
                  cid);
    return;
  }
  /* A device profile no plugin serves: the engine runs its steps. */
  bool core = known_device && !h && !child &&
              json_is_object(json_object_get(doc, PROFILE_FRAGMENT));
  if (core)
    fragment = PROFILE_FRAGMENT;
  if (known_device && !h && !child && !core) {
    if (!ignored_before(o, fragment))
      log_notice("devicecontrol/notifications: no handler for fragment %s on "
                 "%s; left PENDING (logged once per fragment)",
                 fragment, device);
    return;
  }
  c8y_operation *op = op_alloc(o, device, child, fragment);
  if (op) {
    op->c8y_id = strdup(cid);
    op->json = json_dumps(doc, JSON_COMPACT);
    op->doc = json_incref(doc);
  }
  if (!op || !op->c8y_id || !op->json) {
    log_error("out of memory queueing operation %s", cid);
    if (op)
      op_release(op);
    return;
  }
  op->handler = h;
  op->core_profile = core;
  if (!known_device) {
    c8y_operation *mate = find_parked_mate(o, op);
    if (mate) {
      merge(o, mate, op);
      op_release(op);
      return;
    }
    log_notice("operation %s (%s) for unknown device '%s': no plugin "
               "announced such a child (yet); kept until one adds it",
               cid, fragment, device);
    park(o, op);
    return;
  }
  op_fifo *f = fifo_for(o, device, fragment, false);
  if (f && f->head && f->head->state == OP_UNCERTAIN && status_id(f->head)) {
    /* Another operation of the fragment comes first: the uncertain one's
     * 504 arrived (see reconcile_line). */
    log_info("operation #%llu (%s): its start reached the platform before "
             "the link dropped; running it",
             (unsigned long long)f->head->id, f->head->fragment);
    run_started(o, f->head);
  }
  admit(o, op);
}

void ops_handle_json(ops *o, const char *payload, size_t len) {
  warn_budget w = {0, 0};
  size_t pos = 0, index = 0, bad = 0;
  bool resyncing = false;
  while (pos < len) {
    while (pos < len && strchr(" \t\r\n", payload[pos]) && payload[pos])
      pos++;
    if (pos >= len)
      break;
    json_error_t err;
    json_t *doc =
        json_loadb(payload + pos, len - pos,
                   JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &err);
    if (doc) {
      pos += err.position > 0 ? (size_t)err.position : len - pos;
      index++;
      resyncing = false;
      if (json_is_object(doc))
        handle_json_doc(o, doc, index, &w);
      else if (may_warn(&w))
        log_warning("devicecontrol/notifications document %zu: not a JSON "
                    "object; ignored",
                    index);
      json_decref(doc);
      continue;
    }
    /* One warning per unreadable stretch, then the next line that parses:
     * the documents after it are not lost. */
    if (!resyncing) {
      index++;
      if (bad++ == 0)
        log_warning("devicecontrol/notifications: document %zu is not valid "
                    "JSON (%s at byte %zu); skipped",
                    index, err.text, pos + (size_t)err.position);
    }
    resyncing = true;
    const char *nl = memchr(payload + pos, '\n', len - pos);
    if (!nl)
      break;
    pos = (size_t)(nl - payload) + 1;
  }
  if (bad > 1)
    log_warning("devicecontrol/notifications: %zu more unreadable documents "
                "in the same payload",
                bad - 1);
  if (w.suppressed)
    log_warning("devicecontrol/notifications: %zu more bad documents in the "
                "same payload not logged",
                w.suppressed);
}

/* Parked copies whose child is now announced go to its plugin's handler. */
void ops_children_changed(ops *o) {
  c8y_operation *list = o->parked_head;
  o->parked_head = o->parked_tail = NULL;
  o->nparked = 0;
  while (list) {
    c8y_operation *op = list;
    list = op->next;
    op->next = NULL;
    if (!registry_device_known(o->reg, op->device)) {
      park(o, op);
      continue;
    }
    if (op->has_line && !op->xid)
      op->handler = registry_handler_for(o->reg, op->template_id, op->fragment,
                                         op->device);
    else if (op->has_line || !op->doc)
      op->handler =
          registry_fragment_handler_for(o->reg, op->fragment, op->device);
    else {
      reg_handler *h = NULL;
      const char *fragment = json_fragment(o, op->doc, op->device, true, &h);
      char *copy = fragment && h ? strdup(fragment) : NULL;
      if (copy) {
        free(op->fragment);
        op->fragment = copy;
      }
      op->handler = h;
    }
    log_info("operation for %s (%s): the child was added; queued", op->device,
             op->fragment);
    admit(o, op);
  }
}

/* ---- the lifecycle -------------------------------------------------------
 */

/* The 501 is only ever outstanding for the head of a FIFO. */
static c8y_operation *find_starting(ops *o, uint64_t id) {
  for (size_t i = 0; i < o->nfifos; i++) {
    c8y_operation *op = o->fifos[i].head;
    if (op && op->id == id)
      return op->state == OP_STARTING ? op : NULL;
  }
  return NULL;
}

static uint32_t timeout_of(const ops *o, const c8y_operation *op) {
  return op->handler && op->handler->timeout_ms ? op->handler->timeout_ms
                                                : o->default_timeout_ms;
}

static void profile_start(ops *o, c8y_operation *p);

/* The operation is EXECUTING on the platform: journal it, then run it. A
 * profile the engine runs is journaled with what it was started from, so
 * a restart goes on with it (the resume rule without a plugin); a step
 * names its profile. */
static void run_started(ops *o, c8y_operation *op) {
  journal_entry e = {.id = op->id,
                     .c8y_id = (char *)status_id(op),
                     .template_id = op->template_id,
                     .xid = op->xid,
                     .fragment = op->fragment,
                     .device = op->device,
                     .child = op->child,
                     .profile = op->core_profile,
                     .resume = op->core_profile,
                     .fields = op->core_profile ? op->fields : NULL,
                     .nfields = op->core_profile ? op->nfields : 0,
                     .json = op->core_profile ? op->json : NULL,
                     .parent = op->parent ? op->parent->id : 0,
                     .step = op->step};
  /* Not under o->mu: the journal fsyncs, and it has its own lock. */
  int jrc = journal_begin(o->j, &e);
  if (jrc != 0)
    log_warning("operation #%llu: journal write failed; a restart during it "
                "will leave it EXECUTING",
                (unsigned long long)op->id);
  op->state = OP_RUNNING;
  op->resume = op->core_profile;
  if (o->stopping || op->core_profile) {
    /* Plugins are gone: journaled, so the next start reports it failed
     * instead of leaving it EXECUTING forever. It must not expire in
     * ops_process either: "timed out" would be a false reason, and its
     * handler may already be unloaded (timeout_of read freed memory,
     * found by scripts/check-tsan.sh). A profile has no timeout of its
     * own: each step has its handler's. */
    op->deadline_ms = LLONG_MAX;
    if (!o->stopping)
      profile_start(o, op);
    return;
  }
  op->deadline_ms = clock_mono_ms() + timeout_of(o, op);
  if (!op->handler) {
    char reason[300];
    snprintf(reason, sizeof reason, "not supported by %s", op->device);
    op_ref(op, 1); /* released by the completion */
    complete(op, false, NULL, 0, reason);
    return;
  }
  if (!handle_assign(op)) {
    log_error("operation #%llu: out of memory for its handle",
              (unsigned long long)op->id);
    op_ref(op, 1);
    complete(op, false, NULL, 0, "out of memory in the agent");
    return;
  }
  /* One reference for the plugin (released by its completion call) and one
   * for the worker call itself. */
  op_ref(op, 2);
  o->host.dispatch(o->host.ctx, op);
}

void ops_on_acked(ops *o, upstream_tag tag, bool run) {
  if (tag.kind == UPSTREAM_TAG_STATUS) {
    /* A final status reached the platform: the journal may let it go. */
    journal_status_sent(o->j, tag.seq);
    return;
  }
  if (tag.kind != UPSTREAM_TAG_OPERATION)
    return;
  c8y_operation *op = find_starting(o, tag.seq);
  if (!op)
    return;
  if (!run)
    o->stopping = true;
  run_started(o, op);
}

static bool tag_in(upstream_tag tag, const upstream_tag *tags, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (upstream_tag_eq(tags[i], tag))
      return true;
  return false;
}

void ops_on_disconnect(ops *o, const upstream_tag *inflight, size_t ninflight) {
  for (size_t i = 0; i < o->nfifos; i++) {
    op_fifo *f = &o->fifos[i];
    c8y_operation **link = &f->head;
    c8y_operation *prev = NULL;
    while (*link) {
      c8y_operation *op = *link;
      if (op->state == OP_STARTING &&
          tag_in(start_tag(op), inflight, ninflight)) {
        /* Sent, not acknowledged: the platform may have it either way. */
        upstream_unqueue(o->up, start_tag(op));
        op->state = OP_UNCERTAIN;
        op->reconcile_at = 0;
        op->awaiting_line_copy = false;
        log_info("operation #%llu (%s): the link dropped with its 501 in "
                 "flight; settled after reconnecting",
                 (unsigned long long)op->id, op->fragment);
        prev = op;
        link = &op->next;
      } else if ((op->state == OP_QUEUED || op->state == OP_STARTING) &&
                 !op->parent) {
        if (op->state == OP_STARTING)
          upstream_unqueue(o->up, start_tag(op));
        if (op->needs_line)
          o->nwaiting--;
        log_info("operation #%llu (%s) not started before the link dropped; "
                 "the 500 after reconnecting brings it back",
                 (unsigned long long)op->id, op->fragment);
        *link = op->next;
        op_release(op);
      } else {
        op->awaiting_line_copy = false;
        prev = op;
        link = &op->next;
      }
    }
    f->tail = prev;
    /* A profile's step (no 501 of its own) that waited for one of those
     * runs now. */
    start_head(o, f);
  }
  /* Parked and late copies: the reconnect delivers what is still PENDING
   * again, on both channels. */
  release_list(o->parked_head);
  o->parked_head = o->parked_tail = NULL;
  o->nparked = 0;
  tokens_clear(o);
}

void ops_on_pending_requested(ops *o, long long now_ms) {
  for (size_t i = 0; i < o->nfifos; i++) {
    c8y_operation *op = o->fifos[i].head;
    if (op && op->state == OP_UNCERTAIN && op->reconcile_at == 0)
      op->reconcile_at = now_ms + OPS_RECONCILE_MS;
  }
}

/* The text of the final failure (malloc'ed): the agent's reason first when
 * it stopped the operation (timeout, stop), then the plugin's. */
static char *failure_text(const ops *o, const c8y_operation *op) {
  const char *plugin = op->reason && *op->reason ? op->reason : NULL;
  char agent_part[64] = "";
  if (op->timed_out)
    snprintf(agent_part, sizeof agent_part, "operation timed out after %u s",
             (unsigned)(timeout_of(o, op) / 1000));
  else if (op->cancelled && !op->engine_failed)
    snprintf(agent_part, sizeof agent_part, OPS_STOP_TEXT);
  size_t n = strlen(agent_part) + (plugin ? strlen(plugin) : 0) + 3;
  char *text = malloc(n);
  if (text)
    snprintf(text, n, "%s%s%s", agent_part, *agent_part && plugin ? ": " : "",
             plugin ? plugin : "");
  return text;
}

static void step_finished(ops *o, c8y_operation *s);

/* Queues the final status; the journal entry ends only once the status is
 * durable: both in one journal line (queue_final), or, where the journal
 * cannot take it, the status queued durably first. A status that cannot be
 * queued now is retried, and a crash in between reports the operation
 * again instead of losing it. */
static void finish(ops *o, c8y_operation *op) {
  if (op->parent) {
    step_finished(o, op);
    return;
  }
  char tbuf[512];
  const char *topic = status_topic(op->device, op->child, tbuf, sizeof tbuf);
  bool by_id = status_id(op) != NULL;
  const char *key = by_id ? status_id(op) : op->fragment;
  int rc;
  bool ended = false; /* the journal entry ended with the status */
  bool retry = op->state == OP_FINISHING;
  bool ok = op->ok && !op->timed_out;
  char *reason = NULL;
  if (ok) {
    if (!retry)
      log_info("operation #%llu (%s) succeeded", (unsigned long long)op->id,
               op->fragment);
    rc = queue_success(o, topic, key, by_id, op->params, op->nparams, op->id,
                       &ended);
  } else if (!(reason = failure_text(o, op))) {
    rc = C8Y_ENOMEM;
  } else {
    if (!retry) {
      if (op->timed_out)
        log_warning("operation #%llu (%s): %s", (unsigned long long)op->id,
                    op->fragment, reason);
      else
        log_info("operation #%llu (%s) failed: %s", (unsigned long long)op->id,
                 op->fragment, reason);
    }
    rc = queue_failure(o, topic, key, by_id, reason, op->id, &ended);
  }
  if (rc != 0) {
    if (!retry)
      log_error("operation #%llu (%s): its final status cannot be queued "
                "(%s); retrying every %d ms",
                (unsigned long long)op->id, op->fragment, status_str(rc),
                OPS_RETRY_MS);
    op->state = OP_FINISHING;
    o->retry_at = clock_mono_ms() + OPS_RETRY_MS;
    free(reason);
    return;
  }
  if (retry)
    log_notice("operation #%llu (%s): final status queued after retrying",
               (unsigned long long)op->id, op->fragment);
  if (o->host.finished) {
    ops_outcome r = {op->id,       op->template_id ? op->template_id : "-",
                     op->fragment, op->device,
                     ok,           ok ? NULL : reason,
                     status_id(op)};
    o->host.finished(o->host.ctx, &r);
  }
  free(reason);
  if (!ended)
    journal_end(o->j, op->id);
  /* A profile's failed step is kept until then: a crash in between
   * reports the profile failed, instead of running that step again. */
  if (op->failed_step)
    journal_end(o->j, op->failed_step);
  op->state = OP_FINISHED;
  /* A copy still on its way must not start it again. */
  if (status_id(op))
    ended_add(o, status_id(op));
  twin_memo_add(o, op);
  if (op->has_line && !status_id(op) && o->json_seen)
    token_add(o, op, false);
  else if (status_id(op) && !op->has_line &&
           (proto_fragment_has_template(op->fragment) ||
            registry_fragment_has_template(o->reg, op->fragment)))
    token_add(o, op, true);
  op_fifo *f = fifo_for(o, op->device, op->fragment, false);
  if (f)
    fifo_advance(o, f);
}

/* ---- device profiles run by the engine ------------------------------------
 * (profile.h) The profile is one Cumulocity operation: one 504/501, one
 * final status, 121 (c8y_Profile.profileExecuted) false at its start and
 * true only once every step succeeded, as Cumulocity's device-profile page
 * lists the device's actions. Each step is an operation of its own in the
 * FIFO of its fragment (so it waits for a firmware update already running,
 * and one arriving later waits for it), run by the handler its template
 * has, with no 501/503 of its own; what its plugin sends (115, 140, 120)
 * goes out as usual. A step that fails fails the profile with
 * "<step>: <reason>"; the steps after it never run. The journal records
 * the profile (what it was started from, how many steps succeeded) and
 * each step (its profile, its index, the plugin's reboot or resume mark),
 * so a step that waits for a reboot or a restart is settled after it and
 * the profile goes on. */

/* Ends a profile as a plugin's completion would (through the done list:
 * run_started's callers may still use the operation). */
static void engine_complete(ops *o, c8y_operation *p, bool ok,
                            const char *reason) {
  op_ref(p, 1); /* released by the completion */
  if (complete(p, ok, NULL, 0, reason) == C8Y_ESTATE)
    log_error("operation #%llu (%s) completed twice", (unsigned long long)p->id,
              p->fragment);
  (void)o;
}

/* 121,<profileExecuted>,<profileId>: the id when the JSON document named
 * it; empty, the platform takes the oldest EXECUTING profile operation's
 * (the static templates page; the device-profile page's own example is
 * "121,false,"). */
static void profile_report(ops *o, const c8y_operation *p, bool executed) {
  const char *fields[] = {"121", executed ? "true" : "false",
                          p->plan->profile_id ? p->plan->profile_id : ""};
  int rc = upstream_send(o->up, UPSTREAM_BY_TEMPLATE, "s/us", fields, 3, 0,
                         UPSTREAM_NO_TAG);
  if (rc != 0)
    log_error("operation #%llu (%s): cannot queue 121,%s (status %d)",
              (unsigned long long)p->id, p->fragment, fields[1], rc);
}

/* The step as an operation of its own template and fragment. */
static c8y_operation *step_op(ops *o, c8y_operation *p, size_t k,
                              reg_handler *h) {
  const profile_step *st = &p->plan->steps[k];
  c8y_operation *s = op_alloc(o, p->device, false, st->fragment);
  if (!s)
    return NULL;
  if (!set_line(s, st->template_id, NULL, st->fields, st->nfields) ||
      !(s->json = strdup(st->json)) ||
      !(s->doc = json_loads(st->json, 0, NULL))) {
    op_release(s);
    return NULL;
  }
  s->handler = h;
  s->step = (unsigned)k;
  s->id = journal_next_id(o->j);
  op_ref(p, 1); /* dropped when the step ends */
  s->parent = p;
  return s;
}

/* Queues the profile's next step, or ends the profile when none is left. */
static void profile_next(ops *o, c8y_operation *p) {
  const profile_plan *plan = p->plan;
  size_t k = p->steps_done;
  if (k >= plan->nsteps) {
    log_info("operation #%llu (%s): all %zu steps succeeded",
             (unsigned long long)p->id, p->fragment, plan->nsteps);
    profile_report(o, p, true);
    engine_complete(o, p, true, NULL);
    return;
  }
  const profile_step *st = &plan->steps[k];
  char reason[400];
  reg_handler *h = profile_step_handler(o->reg, st);
  if (!h) {
    snprintf(reason, sizeof reason,
             "%.200s: no plugin handles %s (template %s) any more", st->label,
             st->fragment, st->template_id);
    engine_complete(o, p, false, reason);
    return;
  }
  c8y_operation *s = step_op(o, p, k, h);
  op_fifo *f = s ? fifo_for(o, s->device, s->fragment, true) : NULL;
  if (!f) {
    if (s) {
      op_release(s->parent);
      s->parent = NULL;
      op_release(s);
    }
    snprintf(reason, sizeof reason, "%.200s: out of memory in the agent",
             st->label);
    engine_complete(o, p, false, reason);
    return;
  }
  log_info("operation #%llu (%s): step %zu of %zu (%s, template %s) is #%llu",
           (unsigned long long)p->id, p->fragment, k + 1, plan->nsteps,
           st->label, st->template_id, (unsigned long long)s->id);
  fifo_append(f, s);
  if (f->head == s)
    start_head(o, f);
}

/* run_started of a profile the engine runs: its steps, each checked to
 * have a handler before anything runs. */
static void profile_start(ops *o, c8y_operation *p) {
  char err[400];
  profile_plan *plan = calloc(1, sizeof *plan);
  int rc = plan ? profile_plan_new(p->template_id, p->fields, p->nfields,
                                   p->json, plan, err, sizeof err)
                : C8Y_ENOMEM;
  if (rc != C8Y_OK) {
    if (!plan)
      snprintf(err, sizeof err, "out of memory in the agent");
    free(plan);
    engine_complete(o, p, false, err);
    return;
  }
  p->plan = plan;
  for (size_t i = 0; i < plan->nsteps; i++) {
    const profile_step *st = &plan->steps[i];
    if (!profile_step_handler(o->reg, st)) {
      snprintf(err, sizeof err,
               "%.200s: no plugin handles %s (template %s); nothing was "
               "changed",
               st->label, st->fragment, st->template_id);
      engine_complete(o, p, false, err);
      return;
    }
  }
  log_info("operation #%llu (%s): device profile%s%s, %zu steps",
           (unsigned long long)p->id, p->fragment, plan->profile_id ? " " : "",
           plan->profile_id ? plan->profile_id : "", plan->nsteps);
  profile_report(o, p, false);
  profile_next(o, p);
}

/* finish() of a step: its profile goes on (run_due_profiles) or fails. */
static void step_finished(ops *o, c8y_operation *s) {
  c8y_operation *p = s->parent;
  bool ok = s->ok && !s->timed_out;
  const char *label = p->plan && s->step < p->plan->nsteps
                          ? p->plan->steps[s->step].label
                          : s->fragment;
  char *why = ok ? NULL : failure_text(o, s);
  if (ok) {
    log_info("operation #%llu (%s): step %u (%s) succeeded",
             (unsigned long long)p->id, p->fragment, s->step + 1, label);
    p->steps_done = s->step + 1;
    if (journal_mark_step(o->j, p->id, (unsigned)p->steps_done) != C8Y_OK)
      log_warning("operation #%llu: journal write failed; a restart now runs "
                  "step %u again",
                  (unsigned long long)p->id, s->step + 1);
    journal_end(o->j, s->id);
    p->advance_due = true;
    o->profiles_due = true;
  } else {
    size_t n = strlen(label) + (why ? strlen(why) : 0) + 3;
    char *reason = malloc(n);
    if (reason)
      snprintf(reason, n, "%s: %s", label, why ? why : "");
    p->failed_step = s->id;
    engine_complete(o, p, false, reason ? reason : label);
    free(reason);
  }
  free(why);
  s->state = OP_FINISHED;
  s->parent = NULL;
  op_fifo *f = fifo_for(o, s->device, s->fragment, false);
  if (f)
    fifo_advance(o, f); /* s may be gone now */
  op_release(p);
}

/* The profiles whose step succeeded queue their next one. Not from
 * finish(), whose callers loop over the FIFO array this may grow. */
static void run_due_profiles(ops *o) {
  if (!o->profiles_due)
    return;
  o->profiles_due = false;
  for (size_t i = 0; i < o->nfifos; i++) {
    c8y_operation *p = o->fifos[i].head;
    if (p && p->advance_due) {
      p->advance_due = false;
      profile_next(o, p);
    }
  }
}

static void keep_earliest(long long *deadline, long long at) {
  if (*deadline < 0 || at < *deadline)
    *deadline = at;
}

/* A JSON copy whose template handler never got its SmartREST line: left
 * PENDING on the platform (the next 500 brings both copies again). */
static void expire_waiting(ops *o, long long now_ms, long long *next) {
  for (size_t i = 0; i < o->nfifos && o->nwaiting; i++) {
    op_fifo *f = &o->fifos[i];
    c8y_operation *op = f->head;
    while (op) {
      c8y_operation *next_op = op->next;
      if (op->state == OP_QUEUED && op->needs_line && !op->has_line) {
        long long until = op->arrived_ms + OPS_PAIR_WINDOW_MS;
        if (until <= now_ms) {
          log_notice("operation %s (%s) for %s: its SmartREST line never "
                     "came, which its handler (template %s) needs; left "
                     "PENDING",
                     op->c8y_id, op->fragment, op->device,
                     op->handler->template_id);
          fifo_unlink(f, op);
          o->nwaiting--;
          op_release(op);
        } else {
          keep_earliest(next, until);
        }
      }
      op = next_op;
    }
    start_head(o, f);
  }
}

/* finish() never grows the FIFO array (fifo_for without create), so the
 * loops below can go on with the next FIFO after it. */
long long ops_process(ops *o, long long now_ms) {
  for (int round = 0; round < OPS_DONE_ROUNDS; round++) {
    pthread_mutex_lock(&o->mu);
    c8y_operation *done = o->done_head;
    o->done_head = o->done_tail = NULL;
    pthread_mutex_unlock(&o->mu);
    if (!done && !o->profiles_due)
      break;
    while (done) {
      c8y_operation *next = done->next_done;
      finish(o, done);
      done = next;
    }
    run_due_profiles(o);
  }
  pthread_mutex_lock(&o->mu);
  bool more = o->done_head != NULL;
  pthread_mutex_unlock(&o->mu);
  if (more || o->profiles_due) /* rounds used up: once more soon */
    o->host.wake(o->host.ctx);
  bool retry_now = o->retry_at && o->retry_at <= now_ms;
  if (retry_now)
    o->retry_at = 0;
  long long next_deadline = o->retry_at ? o->retry_at : -1;
  for (size_t i = 0; i < o->nfifos; i++) {
    c8y_operation *op = o->fifos[i].head;
    if (!op)
      continue;
    if (op->state == OP_FINISHING) {
      if (retry_now)
        finish(o, op);
      if (o->retry_at)
        keep_earliest(&next_deadline, o->retry_at);
    } else if (op->state == OP_UNCERTAIN && op->reconcile_at) {
      if (op->reconcile_at <= now_ms) {
        log_info("operation #%llu (%s) did not come back as PENDING: its 501 "
                 "reached the platform; running it",
                 (unsigned long long)op->id, op->fragment);
        run_started(o, op);
        if (op->state == OP_RUNNING)
          keep_earliest(&next_deadline, op->deadline_ms);
      } else {
        keep_earliest(&next_deadline, op->reconcile_at);
      }
    } else if (op->state == OP_RUNNING && !op->core_profile) {
      if (op->deadline_ms > now_ms) {
        keep_earliest(&next_deadline, op->deadline_ms);
        continue;
      }
      /* Timed out: the handler is told (op_cancelled) and has the grace
       * time to stop and say why; then the engine fails it itself. */
      pthread_mutex_lock(&o->mu);
      bool expire = false;
      if (!op->finished && !op->timed_out) {
        op->timed_out = true;
        if (!op->cancel_reason)
          op->cancel_reason = C8Y_ETIMEDOUT;
        op->grace_until = now_ms + o->grace_ms;
      }
      if (!op->finished && op->grace_until <= now_ms)
        expire = op->finished = true;
      long long grace_until = op->grace_until;
      bool waiting = !op->finished;
      pthread_mutex_unlock(&o->mu);
      if (expire)
        finish(o, op);
      else if (waiting)
        keep_earliest(&next_deadline, grace_until);
    }
  }
  if (o->nwaiting)
    expire_waiting(o, now_ms, &next_deadline);
  return next_deadline;
}

/* More starts than this without completing: the handler (or the action it
 * started) keeps killing the agent, so the operation fails instead of
 * looping forever. */
#define OPS_MAX_RESUMES 5

static const char *entry_topic(const journal_entry *e, char *buf, size_t len) {
  return status_topic(e->device, e->child, buf, len);
}

/* 502/505 for a journal entry. */
static int fail_entry(ops *o, const journal_entry *e, const char *reason) {
  char tbuf[512];
  bool ended;
  return queue_failure(o, entry_topic(e, tbuf, sizeof tbuf),
                       e->c8y_id ? e->c8y_id : e->fragment, e->c8y_id != NULL,
                       reason, 0, &ended);
}

/* Keeps copies of entries e[0..n) for ops_resume (all or none). 0, or -1
 * when out of memory. */
static int keep_entries(ops *o, const journal_entry *const *e, size_t n) {
  journal_entry *grown =
      realloc(o->resumable, (o->nresumable + n) * sizeof *grown);
  if (!grown)
    return -1;
  o->resumable = grown;
  size_t copied = 0;
  while (copied < n &&
         journal_entry_copy(e[copied], &grown[o->nresumable + copied]) == 0)
    copied++;
  /* After the first keep the journal's flags exist: the others cannot
   * fail. */
  if (copied < n || journal_keep_recovered(o->j, e[0]->id) != 0) {
    while (copied > 0)
      journal_entry_free(&grown[o->nresumable + --copied]);
    return -1;
  }
  for (size_t i = 1; i < n; i++)
    journal_keep_recovered(o->j, e[i]->id);
  o->nresumable += n;
  return 0;
}

/* An operation marked with op_resume_after_restart: kept executing for
 * ops_resume, or failed when it was resumed too often already. */
static int keep_resumable(ops *o, const journal_entry *e) {
  if (e->resumes < OPS_MAX_RESUMES && keep_entries(o, &e, 1) == 0) {
    log_notice("operation #%llu (%s) will be resumed once the plugins are "
               "loaded",
               (unsigned long long)e->id, e->fragment);
    return 0;
  }
  char reason[160];
  if (e->resumes >= OPS_MAX_RESUMES)
    snprintf(reason, sizeof reason,
             "the operation was resumed after %u agent restarts without "
             "completing",
             e->resumes);
  else
    snprintf(reason, sizeof reason,
             "out of memory resuming the operation after the restart");
  log_notice("operation #%llu (%s) failed: %s", (unsigned long long)e->id,
             e->fragment, reason);
  return fail_entry(o, e, reason);
}

/* Final statuses the previous run journaled but did not get acknowledged:
 * queued again first, in the order the operations ended. */
static void requeue_unsent(ops *o) {
  journal_status *v;
  size_t n = journal_unsent(o->j, &v);
  for (size_t i = 0; i < n; i++) {
    int rc = upstream_send_line(o->up, OUTQ_OPSTATUS, v[i].topic, v[i].line,
                                OUTQ_VOLATILE, status_tag(v[i].id));
    if (rc != 0)
      log_error("cannot queue the final status '%.60s' of operation #%llu "
                "(status %d); it stays in the journal for the next start",
                v[i].line, (unsigned long long)v[i].id, rc);
  }
  if (n)
    log_notice("%zu final status(es) of operations that ended before the "
               "restart will be sent",
               n);
  journal_status_free(v, n);
}

/* The label of a profile's step k ("firmware", ...) for a reason. */
static void step_label(const journal_entry *p, unsigned k,
                       const journal_entry *s, char *out, size_t n) {
  profile_plan plan;
  char err[300];
  if (profile_plan_new(p->template_id, p->fields, p->nfields, p->json, &plan,
                       err, sizeof err) == C8Y_OK &&
      k < plan.nsteps)
    snprintf(out, n, "%s", plan.steps[k].label);
  else
    snprintf(out, n, "%s", s->fragment);
  profile_plan_free(&plan);
}

/* A profile the engine ran, with the entries of its steps (settled[] marks
 * them): the step it was at (`step` = steps that succeeded) is kept with it
 * when its plugin asked to be resumed, counts as done when it waited for
 * the reboot that happened, and fails the profile otherwise; with no step
 * running the profile goes on with its next one. Older steps' entries only
 * missed their end line. */
static int recover_profile(ops *o, const journal_entry *es, size_t n, size_t pi,
                           const char *boot, bool *settled) {
  const journal_entry *p = &es[pi], *cur = NULL;
  for (size_t k = 0; k < n; k++)
    if (es[k].parent == p->id) {
      settled[k] = true;
      if (es[k].step == p->step)
        cur = &es[k];
    }
  char label[256] = "", reason[600] = "";
  const char *oom = "out of memory resuming the operation after the restart";
  if (cur)
    step_label(p, cur->step, cur, label, sizeof label);
  if (p->resumes >= OPS_MAX_RESUMES ||
      (cur && cur->resume && cur->resumes >= OPS_MAX_RESUMES)) {
    snprintf(reason, sizeof reason,
             "%s%sthe operation was resumed after %u agent restarts without "
             "completing",
             cur ? label : "", cur ? ": " : "", OPS_MAX_RESUMES);
  } else if (cur && cur->resume) {
    const journal_entry *both[] = {p, cur};
    if (keep_entries(o, both, 2) != 0)
      snprintf(reason, sizeof reason, "%s", oom);
  } else if (cur && cur->reboot && journal_booted_since(boot, cur->boot_id)) {
    log_notice("operation #%llu (%s): step %u (%s) completed by the reboot",
               (unsigned long long)p->id, p->fragment, cur->step + 1, label);
    if (keep_entries(o, &p, 1) != 0)
      snprintf(reason, sizeof reason, "%s", oom);
    else
      o->resumable[o->nresumable - 1].step = cur->step + 1;
  } else if (cur) {
    snprintf(reason, sizeof reason, "%s: %s", label,
             cur->reboot
                 ? "the agent restarted but the device did not reboot"
                 : "the agent stopped while the operation was executing");
  } else if (keep_entries(o, &p, 1) != 0) {
    snprintf(reason, sizeof reason, "%s", oom);
  }
  if (p->c8y_id)
    ended_add(o, p->c8y_id);
  if (!reason[0]) {
    log_notice("operation #%llu (%s) goes on once the plugins are loaded",
               (unsigned long long)p->id, p->fragment);
    return 0;
  }
  log_notice("operation #%llu (%s) failed: %s", (unsigned long long)p->id,
             p->fragment, reason);
  return fail_entry(o, p, reason) != 0;
}

void ops_recover(ops *o) {
  requeue_unsent(o);
  const journal_entry *entries;
  size_t n = journal_recovered(o->j, &entries);
  if (n == 0)
    return;
  char *boot = journal_boot_id();
  int failures = 0;
  bool *settled = calloc(n, sizeof *settled);
  for (size_t i = 0; settled && i < n; i++)
    if (entries[i].profile) {
      settled[i] = true;
      failures += recover_profile(o, entries, n, i, boot, settled);
    }
  for (size_t i = 0; i < n; i++) {
    const journal_entry *e = &entries[i];
    if (e->parent && settled && !settled[i])
      log_info("journal entry #%llu: a step of operation #%llu, which ended "
               "already; dropped",
               (unsigned long long)e->id, (unsigned long long)e->parent);
    /* A step never gets a status of its own. (Without memory for the
     * flags a profile is kept like any resumable operation, and goes on
     * with the step after those that succeeded.) */
    if ((settled && settled[i]) || e->parent)
      continue;
    bool rebooted = journal_booted_since(boot, e->boot_id);
    if (e->resume) {
      failures += keep_resumable(o, e) != 0;
    } else if (e->reboot && rebooted) {
      log_notice("operation #%llu (%s%s%s) completed by the reboot",
                 (unsigned long long)e->id, e->fragment,
                 e->c8y_id ? ", Cumulocity id " : "",
                 e->c8y_id ? e->c8y_id : "");
      char tbuf[512];
      const char *fields[] = {e->c8y_id ? "506" : "503",
                              e->c8y_id ? e->c8y_id : e->fragment};
      failures += queue_status_line(o, entry_topic(e, tbuf, sizeof tbuf),
                                    fields, 2, 0, UPSTREAM_NO_TAG) != 0;
    } else {
      const char *reason =
          e->reboot ? "the agent restarted but the device did not reboot"
                    : "the agent stopped while the operation was executing";
      log_notice("operation #%llu (%s) failed: %s", (unsigned long long)e->id,
                 e->fragment, reason);
      failures += fail_entry(o, e, reason) != 0;
    }
    if (e->c8y_id)
      ended_add(o, e->c8y_id);
  }
  free(settled);
  free(boot);
  if (failures == 0)
    journal_forget_recovered(o->j);
}

void ops_stop(ops *o) { o->stopping = true; }

size_t ops_active(ops *o) {
  size_t n = 0;
  for (size_t i = 0; i < o->nfifos; i++)
    for (c8y_operation *op = o->fifos[i].head; op; op = op->next)
      n += op->state != OP_FINISHED;
  return n;
}

size_t ops_running(ops *o) {
  size_t n = 0;
  for (size_t i = 0; i < o->nfifos; i++) {
    c8y_operation *op = o->fifos[i].head;
    if (op && op->state == OP_RUNNING && !op->core_profile) {
      pthread_mutex_lock(&o->mu);
      n += !op->finished;
      pthread_mutex_unlock(&o->mu);
    }
  }
  return n;
}

/* Operations that must survive the stop: the reboot or upgrade they wait
 * for is probably what stops the agent; the next start settles them. A
 * profile the engine runs has no handler to stop: it ends when its step
 * does (failed by the stop, or kept for the restart). */
static bool outlives_stop(const c8y_operation *op) {
  return op->reboot || op->resume || op->core_profile;
}

size_t ops_cancel_running(ops *o) {
  size_t n = 0;
  for (size_t i = 0; i < o->nfifos; i++) {
    c8y_operation *op = o->fifos[i].head;
    if (!op || op->state != OP_RUNNING)
      continue;
    pthread_mutex_lock(&o->mu);
    if (!op->finished && !outlives_stop(op)) {
      op->cancelled = true;
      if (!op->cancel_reason)
        op->cancel_reason = C8Y_ECANCELED;
      n++;
    }
    pthread_mutex_unlock(&o->mu);
  }
  return n;
}

void ops_fail_all(ops *o, const char *reason) {
  for (size_t i = 0; i < o->nfifos; i++) {
    c8y_operation *op = o->fifos[i].head;
    if (!op || op->state != OP_RUNNING)
      continue;
    pthread_mutex_lock(&o->mu);
    bool fail = !op->finished && !outlives_stop(op);
    if (fail) {
      /* Like a timeout: the engine ends it, the plugin's handle stays valid
       * and its late completion returns C8Y_ETIMEDOUT. */
      op->finished = true;
      op->ok = false;
      op->engine_failed = true;
      if (!op->timed_out) {
        free(op->reason);
        op->reason = strdup(reason);
      }
    }
    pthread_mutex_unlock(&o->mu);
    if (fail) {
      finish(o, op);
    }
  }
  ops_process(o, clock_mono_ms());
}

/* ---- completion (any thread) ---- */

static int complete(c8y_operation *op, bool ok, const char *const *params,
                    size_t n, const char *reason) {
  ops *o = op->engine;
  pthread_mutex_lock(&o->mu);
  if (op->plugin_released) {
    pthread_mutex_unlock(&o->mu);
    return C8Y_ESTATE;
  }
  op->plugin_released = true;
  if (op->finished) {
    pthread_mutex_unlock(&o->mu);
    op_release(op);
    return C8Y_ETIMEDOUT;
  }
  /* Within the grace after a timeout the plugin's reason still reaches
   * the 502 (after the agent's); a success came too late. */
  int rc = op->timed_out ? C8Y_ETIMEDOUT : C8Y_OK;
  op->finished = true;
  op->ok = ok && !op->timed_out;
  if (op->ok && n > 0) {
    op->params = calloc(n, sizeof *op->params);
    for (size_t i = 0; op->params && i < n; i++) {
      op->params[i] = strdup(params[i] ? params[i] : "");
      if (op->params[i])
        op->nparams++;
    }
  }
  if (!ok)
    op->reason = strdup(reason ? reason : "");
  if (o->done_tail)
    o->done_tail->next_done = op;
  else
    o->done_head = op;
  o->done_tail = op;
  pthread_mutex_unlock(&o->mu);
  o->host.wake(o->host.ctx);
  op_release(op);
  return rc;
}

int ops_op_succeed(c8y_operation *handle, const char *result) {
  if (!handle)
    return C8Y_EINVAL;
  c8y_operation *op = acquire(handle);
  if (!op)
    return C8Y_ESTATE;
  const char *params[] = {result};
  int rc = complete(op, true, params, result ? 1 : 0, NULL);
  op_release(op);
  return rc;
}

int ops_op_succeed_params(c8y_operation *handle, const char *const *params,
                          size_t n) {
  if (!handle || (n > 0 && !params))
    return C8Y_EINVAL;
  c8y_operation *op = acquire(handle);
  if (!op)
    return C8Y_ESTATE;
  int rc = complete(op, true, params, n, NULL);
  op_release(op);
  return rc;
}

int ops_op_fail(c8y_operation *handle, const char *reason) {
  if (!handle)
    return C8Y_EINVAL;
  c8y_operation *op = acquire(handle);
  if (!op)
    return C8Y_ESTATE;
  int rc = complete(op, false, NULL, 0, reason ? reason : "failed");
  op_release(op);
  return rc;
}

int ops_op_cancelled(const c8y_operation *handle) {
  c8y_operation *op = acquire(handle);
  if (!op)
    return 1; /* gone: nothing to work on any more */
  ops *o = op->engine;
  pthread_mutex_lock(&o->mu);
  int cancelled = op->timed_out || op->cancelled || op->plugin_released;
  pthread_mutex_unlock(&o->mu);
  op_release(op);
  return cancelled;
}

int ops_op_cancel_reason(const c8y_operation *handle) {
  c8y_operation *op = acquire(handle);
  if (!op)
    return C8Y_ESTATE;
  ops *o = op->engine;
  pthread_mutex_lock(&o->mu);
  int reason = op->plugin_released ? C8Y_ESTATE : op->cancel_reason;
  pthread_mutex_unlock(&o->mu);
  op_release(op);
  return reason;
}

/* Marks a live operation to be completed after a reboot (`reboot`) or
 * resumed after a restart: the flag, then its journal line. The journal
 * write (an fsync) runs without o->mu, which every status and the main loop
 * need; a failed write clears the flag again. If the operation finishes
 * meanwhile, its end line may precede the mark; replay ignores a mark for
 * an ended entry. The fields and the document are the operation's own,
 * fixed since dispatch. */
static int mark_op(c8y_operation *handle, bool reboot) {
  c8y_operation *op = acquire(handle);
  if (!op)
    return C8Y_ESTATE;
  ops *o = op->engine;
  bool *flag = reboot ? &op->reboot : &op->resume;
  pthread_mutex_lock(&o->mu);
  int rc = C8Y_OK;
  if (op->finished || op->plugin_released) {
    rc = C8Y_ESTATE;
  } else if (!*flag) {
    *flag = true;
    pthread_mutex_unlock(&o->mu);
    rc = reboot ? journal_mark_reboot(o->j, op->id)
                : journal_mark_resume(o->j, op->id,
                                      (const char *const *)op->fields,
                                      op->nfields, op->json);
    if (rc != C8Y_OK) {
      pthread_mutex_lock(&o->mu);
      *flag = false;
      pthread_mutex_unlock(&o->mu);
    }
    op_release(op);
    return rc;
  }
  pthread_mutex_unlock(&o->mu);
  op_release(op);
  return rc;
}

int ops_op_complete_on_reboot(c8y_operation *handle) {
  return mark_op(handle, true);
}

void ops_run_handler(c8y_operation *op) {
  reg_handler *h = op->handler;
  int rc = h->fn(h->plugin, (c8y_operation *)op->handle, h->user_data);
  ops *o = op->engine;
  pthread_mutex_lock(&o->mu);
  bool released = op->plugin_released;
  pthread_mutex_unlock(&o->mu);
  if (!released && rc != C8Y_PENDING) {
    if (rc == C8Y_OK)
      complete(op, true, NULL, 0, NULL);
    else
      complete(op, false, NULL, 0, status_str(rc));
  }
  op_release(op); /* the worker call's reference */
}

void ops_dispatch_failed(c8y_operation *op, const char *reason) {
  complete(op, false, NULL, 0, reason);
  op_release(op); /* the worker call's reference */
}

c8y_plugin *ops_plugin(const c8y_operation *op) { return op->handler->plugin; }

const char *ops_what(const c8y_operation *op) {
  return op->template_id ? op->template_id : op->fragment;
}

c8y_plugin *ops_handle_plugin(const c8y_operation *handle) {
  c8y_operation *op = acquire(handle);
  if (!op)
    return NULL;
  c8y_plugin *p = op->handler ? op->handler->plugin : NULL;
  op_release(op);
  return p;
}

/* The live operation behind a handle the plugin has not completed yet:
 * the accessors' strings live until the completion, so after it they
 * answer NULL instead of pointing into memory about to be freed. */
static c8y_operation *acquire_live(const c8y_operation *handle) {
  c8y_operation *op = acquire(handle);
  if (!op)
    return NULL;
  pthread_mutex_lock(&op->engine->mu);
  bool released = op->plugin_released;
  pthread_mutex_unlock(&op->engine->mu);
  if (released) {
    op_release(op);
    return NULL;
  }
  return op;
}

/* The reference taken for the lookup is dropped again at once: while the
 * plugin has not completed the operation, its own reference keeps the
 * memory the returned string points into. */
static const char *borrowed(c8y_operation *op, const char *s) {
  op_release(op);
  return s;
}

const char *ops_op_template(const c8y_operation *h) {
  c8y_operation *op = acquire_live(h);
  return op ? borrowed(op, op->template_id) : NULL;
}
const char *ops_op_fragment(const c8y_operation *h) {
  c8y_operation *op = acquire_live(h);
  return op ? borrowed(op, op->fragment) : NULL;
}
const char *ops_op_device(const c8y_operation *h) {
  c8y_operation *op = acquire_live(h);
  return op ? borrowed(op, op->device) : NULL;
}
size_t ops_op_field_count(const c8y_operation *h) {
  c8y_operation *op = acquire_live(h);
  if (!op)
    return 0;
  size_t n = op->nfields;
  op_release(op);
  return n;
}
const char *ops_op_field(const c8y_operation *h, size_t index) {
  c8y_operation *op = acquire_live(h);
  return op ? borrowed(op, index < op->nfields ? op->fields[index] : NULL)
            : NULL;
}
const char *ops_op_id(const c8y_operation *h) {
  c8y_operation *op = acquire_live(h);
  return op ? borrowed(op, op->c8y_id) : NULL;
}
const char *ops_op_json(const c8y_operation *h) {
  c8y_operation *op = acquire_live(h);
  return op ? borrowed(op, op->json) : NULL;
}
int ops_op_resumed(const c8y_operation *h) {
  c8y_operation *op = acquire(h);
  if (!op)
    return 0;
  int v = op->resumed;
  op_release(op);
  return v;
}
int ops_op_rebooted(const c8y_operation *h) {
  c8y_operation *op = acquire(h);
  if (!op)
    return 0;
  int v = op->resumed && op->rebooted;
  op_release(op);
  return v;
}

/* One value by a dotted path: object keys, array indexes. */
static char *json_path_value(json_t *doc, const char *path) {
  char *copy = strdup(path);
  if (!copy)
    return NULL;
  json_t *v = doc;
  char *save = NULL;
  for (char *part = strtok_r(copy, ".", &save); part && v;
       part = strtok_r(NULL, ".", &save)) {
    if (json_is_object(v)) {
      v = json_object_get(v, part);
    } else if (json_is_array(v)) {
      char *end;
      unsigned long i = strtoul(part, &end, 10);
      v = *part && !*end ? json_array_get(v, i) : NULL;
    } else {
      v = NULL;
    }
  }
  free(copy);
  if (!v || json_is_null(v))
    return NULL;
  if (json_is_string(v))
    return strdup(json_string_value(v));
  return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

const char *ops_op_json_value(const c8y_operation *handle, const char *path) {
  if (!path || !*path)
    return NULL;
  c8y_operation *op = acquire_live(handle);
  if (!op)
    return NULL;
  const char *out = NULL;
  if (op->doc) {
    ops *o = op->engine;
    pthread_mutex_lock(&o->mu);
    for (json_memo *m = op->memo; m && !out; m = m->next)
      if (strcmp(m->path, path) == 0)
        out = m->value;
    if (!out) {
      json_memo *m = calloc(1, sizeof *m);
      char *value = json_path_value(op->doc, path);
      if (m && value && (m->path = strdup(path))) {
        m->value = value;
        m->next = op->memo;
        op->memo = m;
        out = value;
      } else {
        free(m);
        free(value);
      }
    }
    pthread_mutex_unlock(&o->mu);
  }
  op_release(op);
  return out;
}

/* ---- resume after restart (ABI 1.1) ---- */

static void run_resumed(ops *o, c8y_operation *op) {
  op->state = OP_RUNNING;
  op->deadline_ms = clock_mono_ms() + timeout_of(o, op);
  if (!handle_assign(op)) {
    op_ref(op, 1);
    complete(op, false, NULL, 0, "out of memory in the agent");
    return;
  }
  op_ref(op, 2); /* the plugin's and the worker call's */
  o->host.dispatch(o->host.ctx, op);
}

/* The handler or child that should take the operation is gone: 502, and
 * the journal forgets it. */
static void resume_refused(ops *o, const journal_entry *e, const char *reason) {
  log_warning("operation #%llu (%s) cannot be resumed: %s",
              (unsigned long long)e->id, e->fragment, reason);
  fail_entry(o, e, reason);
  journal_end(o->j, e->id);
}

static c8y_operation *resumed_op(ops *o, journal_entry *e, reg_handler *h,
                                 const char *boot) {
  c8y_operation *op = op_alloc(o, e->device, e->child, e->fragment);
  if (!op)
    return NULL;
  op->id = e->id;
  op->handler = h;
  op->has_line = e->template_id != NULL;
  op->template_id = e->template_id; /* taken over from the entry */
  op->xid = e->xid;
  op->c8y_id = e->c8y_id;
  op->json = e->json;
  op->fields = e->fields;
  op->nfields = e->nfields;
  e->template_id = e->xid = e->c8y_id = e->json = NULL;
  e->fields = NULL;
  e->nfields = 0;
  op->doc = op->json ? json_loads(op->json, 0, NULL) : NULL;
  op->resume = op->resumed = true;
  op->rebooted = journal_booted_since(boot, e->boot_id);
  return op;
}

/* The handler now registered for the entry (the same lookup as for a new
 * copy of that operation and device). */
static reg_handler *resume_handler(ops *o, const journal_entry *e) {
  const char *device = e->child ? e->device : NULL;
  if (e->template_id && !e->xid)
    return registry_handler_for(o->reg, e->template_id, e->fragment, device);
  return registry_fragment_handler_for(o->reg, e->fragment, device);
}

/* The profile (resumed above) whose step this is, or NULL. */
static c8y_operation *resumed_profile(ops *o, const journal_entry *step) {
  op_fifo *f = fifo_for(o, step->device, PROFILE_FRAGMENT, false);
  for (c8y_operation *p = f ? f->head : NULL; p; p = p->next)
    if (p->id == step->parent && p->plan)
      return p;
  return NULL;
}

/* The step a profile was at, handed again to its plugin. */
static void resume_step(ops *o, journal_entry *e, const char *boot) {
  c8y_operation *p = resumed_profile(o, e);
  if (!p) { /* its profile failed already */
    journal_end(o->j, e->id);
    return;
  }
  p->advance_due = false;
  const char *label =
      e->step < p->plan->nsteps ? p->plan->steps[e->step].label : e->fragment;
  reg_handler *h = e->step < p->plan->nsteps ? resume_handler(o, e) : NULL;
  c8y_operation *s = h ? resumed_op(o, e, h, boot) : NULL;
  op_fifo *f = s ? fifo_for(o, s->device, s->fragment, true) : NULL;
  if (!f) {
    char reason[400];
    if (h)
      snprintf(reason, sizeof reason, "%.200s: out of memory in the agent",
               label);
    else
      snprintf(reason, sizeof reason,
               "%.200s: after the agent restarted no plugin handles %s %.40s "
               "any more",
               label, e->template_id ? "template" : "fragment",
               e->template_id ? e->template_id : e->fragment);
    if (s)
      op_release(s);
    p->failed_step = e->id;
    engine_complete(o, p, false, reason);
    return;
  }
  op_ref(p, 1);
  s->parent = p;
  s->step = e->step;
  log_notice("operation #%llu (%s): step %u (%s) resumed after the restart%s",
             (unsigned long long)p->id, p->fragment, s->step + 1, label,
             s->rebooted ? " (the machine rebooted)" : "");
  fifo_append(f, s);
  run_resumed(o, s);
}

/* Profiles kept by ops_recover go on: the step they were at is resumed in
 * its plugin, or their next step starts (run_due_profiles). */
static void resume_profiles(ops *o, const char *boot) {
  for (size_t i = 0; i < o->nresumable; i++) {
    journal_entry *e = &o->resumable[i];
    if (!e->profile)
      continue;
    char reason[400] = "out of memory resuming the operation";
    profile_plan *plan = calloc(1, sizeof *plan);
    if (!plan ||
        profile_plan_new(e->template_id, e->fields, e->nfields, e->json, plan,
                         reason, sizeof reason) != C8Y_OK) {
      free(plan);
      resume_refused(o, e, reason);
      continue;
    }
    unsigned done = e->step;
    c8y_operation *p = resumed_op(o, e, NULL, boot);
    op_fifo *f = p ? fifo_for(o, p->device, p->fragment, true) : NULL;
    if (!f) {
      profile_plan_free(plan);
      free(plan);
      if (p)
        op_release(p);
      log_error("operation #%llu: out of memory resuming it; the next start "
                "tries again",
                (unsigned long long)e->id);
      continue;
    }
    p->core_profile = true;
    p->plan = plan;
    p->steps_done = done;
    p->state = OP_RUNNING;
    p->deadline_ms = LLONG_MAX;
    p->advance_due = true; /* unless a step of it is resumed below */
    log_notice("operation #%llu (%s) goes on after the restart: %u of %zu "
               "steps done",
               (unsigned long long)p->id, p->fragment, done, plan->nsteps);
    fifo_append(f, p);
  }
  for (size_t i = 0; i < o->nresumable; i++)
    if (o->resumable[i].parent)
      resume_step(o, &o->resumable[i], boot);
  op_fifo *f = fifo_for(o, o->root, PROFILE_FRAGMENT, false);
  for (c8y_operation *p = f ? f->head : NULL; p; p = p->next)
    if (p->advance_due) {
      if (journal_mark_step(o->j, p->id, (unsigned)p->steps_done) != C8Y_OK)
        log_warning("operation #%llu: journal write failed",
                    (unsigned long long)p->id);
      if (p->steps_done == 0)
        profile_report(o, p, false);
      o->profiles_due = true;
    }
  run_due_profiles(o);
}

void ops_resume(ops *o) {
  char *boot = journal_boot_id();
  resume_profiles(o, boot);
  for (size_t i = 0; i < o->nresumable; i++) {
    journal_entry *e = &o->resumable[i];
    char reason[300];
    if (e->profile || e->parent)
      continue;
    if (e->child && !registry_device_known(o->reg, e->device)) {
      snprintf(reason, sizeof reason,
               "after the agent restarted no plugin announces the child "
               "device '%.200s' any more",
               e->device);
      resume_refused(o, e, reason);
      continue;
    }
    reg_handler *h = resume_handler(o, e);
    if (!h) {
      snprintf(reason, sizeof reason,
               "after the agent restarted no plugin handles %s %.40s any more",
               e->template_id ? "template" : "fragment",
               e->template_id ? e->template_id : e->fragment);
      resume_refused(o, e, reason);
      continue;
    }
    c8y_operation *op = resumed_op(o, e, h, boot);
    op_fifo *f = op ? fifo_for(o, op->device, op->fragment, true) : NULL;
    if (!f) {
      if (op)
        op_release(op);
      resume_refused(o, e, "out of memory resuming the operation");
      continue;
    }
    log_notice("operation #%llu (%s) for %s resumed after the restart%s",
               (unsigned long long)op->id, op->fragment, op->device,
               op->rebooted ? " (the machine rebooted)" : "");
    /* Its 501 was sent before the restart: it runs at once. (Nothing else
     * can be queued yet: s/ds is not subscribed before the plugins load.) */
    fifo_append(f, op);
    run_resumed(o, op);
  }
  free(boot);
  for (size_t i = 0; i < o->nresumable; i++)
    journal_entry_free(&o->resumable[i]);
  free(o->resumable);
  o->resumable = NULL;
  o->nresumable = 0;
}

int ops_op_resume_after_restart(c8y_operation *handle) {
  if (!handle)
    return C8Y_EINVAL;
  return mark_op(handle, false);
}
