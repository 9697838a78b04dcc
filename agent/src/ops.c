#include "ops.h"

#include "clock.h"
#include "ident.h"
#include "log.h"
#include "proto.h"
#include "smartrest.h"
#include "status.h"

#include <c8y/plugin.h>

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

/* Finished operations keep their (emptied) memory for this many later
 * completions, so a plugin that completes a handle twice or late from its
 * own thread gets C8Y_ESTATE instead of touching freed memory. */
#define OPS_RETIRED_KEEP 4096
/* Distinct unhandled template ids remembered for "logged once". */
#define OPS_IGNORED_MAX 64
/* Per payload: record-level warnings logged before the rest are counted. */
#define OPS_WARN_PER_PAYLOAD 5
/* After the reconnect's 500 was acknowledged: how long an operation whose
 * 501 was in flight waits to come back as PENDING before it is taken as
 * EXECUTING on the platform. */
#define OPS_RECONCILE_MS 5000
#define OPS_RETRY_MS 1000

struct c8y_operation {
  ops *engine;
  uint64_t id;
  char *template_id;
  const char *fragment;
  char *device;
  bool child;
  char **fields; /* parameters after the device id */
  size_t nfields;
  reg_handler *handler;   /* NULL: no plugin serves it for this child */
  enum op_state state;    /* main thread only */
  long long reconcile_at; /* OP_UNCERTAIN: 0 until the 500 was acked */
  long long deadline_ms;
  struct c8y_operation *next; /* FIFO link (main thread) */
  struct c8y_operation *next_done;
  atomic_int refs;
  bool resumed;  /* handed again to its handler after a restart */
  bool rebooted; /* ... and the machine booted since it started */
  /* guarded by engine->mu */
  bool finished;
  bool plugin_released;
  bool dead; /* memory kept only to refuse late calls (retired ring) */
  bool timed_out;
  bool cancelled; /* the agent is stopping */
  bool reboot;
  bool resume; /* op_resume_after_restart was called */
  bool ok;
  char **params;
  size_t nparams;
  char *reason;
};

typedef struct op_fifo {
  char *device;
  const char *fragment;
  c8y_operation *head, *tail;
} op_fifo;

struct ops {
  char *root;
  registry *reg;
  outq *q;
  journal *j;
  journal_entry *resumable; /* from ops_recover, for ops_resume */
  size_t nresumable;
  ops_host host;
  uint32_t default_timeout_ms;
  op_fifo *fifos;
  size_t nfifos;
  pthread_mutex_t mu; /* done list, completion fields, journal */
  c8y_operation *done_head, *done_tail;
  bool stopping;                  /* no new operation starts */
  char *ignored[OPS_IGNORED_MAX]; /* template ids logged as unhandled */
  size_t nignored;
  c8y_operation *retired[OPS_RETIRED_KEEP]; /* guarded by mu */
  size_t retired_next;
  long long retry_at; /* an OP_FINISHING operation waits for the queue */
};

static void free_strv(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

static void op_release(c8y_operation *op) {
  if (atomic_fetch_sub(&op->refs, 1) != 1)
    return;
  ops *o = op->engine;
  pthread_mutex_lock(&o->mu);
  free(op->template_id);
  free(op->device);
  free_strv(op->fields, op->nfields);
  free_strv(op->params, op->nparams);
  free(op->reason);
  op->template_id = op->device = op->reason = NULL;
  op->fields = op->params = NULL;
  op->nfields = op->nparams = 0;
  op->dead = true;
  c8y_operation *evicted = o->retired[o->retired_next];
  o->retired[o->retired_next] = op;
  o->retired_next = (o->retired_next + 1) % OPS_RETIRED_KEEP;
  pthread_mutex_unlock(&o->mu);
  free(evicted);
}

int ops_new(const char *root_device, registry *reg, outq *q, journal *j,
            const ops_host *host, uint32_t default_timeout_ms, ops **out) {
  ops *o = calloc(1, sizeof *o);
  if (!o || !(o->root = strdup(root_device))) {
    free(o);
    return C8Y_ENOMEM;
  }
  o->reg = reg;
  o->q = q;
  o->j = j;
  o->host = *host;
  o->default_timeout_ms = default_timeout_ms;
  pthread_mutex_init(&o->mu, NULL);
  *out = o;
  return 0;
}

void ops_free(ops *o) {
  if (!o)
    return;
  for (size_t i = 0; i < o->nfifos; i++) {
    c8y_operation *op = o->fifos[i].head;
    while (op) {
      c8y_operation *next = op->next;
      /* Plugins are gone: references they never gave back (an operation
       * waiting for a reboot) die with the engine. */
      atomic_store(&op->refs, 1);
      op_release(op);
      op = next;
    }
    free(o->fifos[i].device);
  }
  for (size_t i = 0; i < o->nresumable; i++)
    journal_entry_free(&o->resumable[i]);
  free(o->resumable);
  free(o->fifos);
  for (size_t i = 0; i < o->nignored; i++)
    free(o->ignored[i]);
  for (size_t i = 0; i < OPS_RETIRED_KEEP; i++)
    free(o->retired[i]);
  pthread_mutex_destroy(&o->mu);
  free(o->root);
  free(o);
}

static const char *status_topic(const c8y_operation *op, char *buf,
                                size_t len) {
  if (!op->child)
    return "s/us";
  snprintf(buf, len, "s/us/%s", op->device);
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

static int queue_status_line(ops *o, const char *topic,
                             const char *const *fields, size_t n,
                             unsigned flags, uint64_t tag) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  int rc = smartrest_encode_line(&b, fields, n);
  if (rc == 0)
    rc = outq_push(o->q, OUTQ_OPSTATUS, 0, topic, b.data, tag, flags);
  if (rc != 0)
    log_error("cannot queue '%.60s' for %s (status %d)", b.data ? b.data : "",
              topic, rc);
  smartrest_buf_free(&b);
  return rc;
}

/* 503 with params: a result too large for one publish is cut, marked, and
 * sent rather than lost. */
static int queue_success(ops *o, const char *topic, const char *fragment,
                         char **params, size_t nparams) {
  const char **fields = calloc(nparams + 2, sizeof *fields);
  if (!fields)
    return C8Y_ENOMEM;
  fields[0] = "503";
  fields[1] = fragment;
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
  int rc = b.data ? outq_push(o->q, OUTQ_OPSTATUS, 0, topic, b.data, 0, 0)
                  : C8Y_ENOMEM;
  if (rc != 0)
    log_error("cannot queue the 503 for %s on %s (status %d)", fragment, topic,
              rc);
  smartrest_buf_free(&b);
  free(cut);
  free(fields);
  return rc;
}

static int queue_failure(ops *o, const char *topic, const char *fragment,
                         const char *reason) {
  char *r = strdup(reason ? reason : "");
  if (!r)
    return C8Y_ENOMEM;
  utf8_truncate(r, OPS_REASON_MAX);
  const char *fields[] = {"502", fragment, r};
  int rc = queue_status_line(o, topic, fields, 3, 0, 0);
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
  if (!(f->device = strdup(device)))
    return NULL;
  f->fragment = fragment;
  o->nfifos++;
  return f;
}

static void op_start(ops *o, c8y_operation *op) {
  if (o->stopping)
    return;
  char tbuf[512];
  const char *fields[] = {"501", op->fragment};
  /* Volatile: a 501 left over from a previous run would move an operation
   * nobody is working on to EXECUTING. */
  if (queue_status_line(o, status_topic(op, tbuf, sizeof tbuf), fields, 2,
                        OUTQ_VOLATILE, op->id) == 0)
    op->state = OP_STARTING;
}

static void fifo_advance(ops *o, op_fifo *f) {
  while (f->head && f->head->state == OP_FINISHED) {
    c8y_operation *done = f->head;
    f->head = done->next;
    if (!f->head)
      f->tail = NULL;
    op_release(done);
  }
  if (f->head && f->head->state == OP_QUEUED)
    op_start(o, f->head);
}

/* Bounded, so a payload of 100k distinct bogus ids costs constant work per
 * record; past the bound new ids are no longer logged individually. */
static bool ignored_before(ops *o, const char *id) {
  for (size_t i = 0; i < o->nignored; i++)
    if (strcmp(o->ignored[i], id) == 0)
      return true;
  if (o->nignored == OPS_IGNORED_MAX)
    return true;
  if ((o->ignored[o->nignored] = strdup(id)) != NULL)
    o->nignored++;
  if (o->nignored == OPS_IGNORED_MAX)
    log_notice("s/ds: %d distinct unhandled templates seen; further ones are "
               "not logged",
               OPS_IGNORED_MAX);
  return false;
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

static bool superseded(const twin_set *t, const smartrest_record *r) {
  const char *richer = proto_richer_twin(r->fields[0]);
  if (!richer || r->nfields < 2 || t->n == 0)
    return false;
  char *key_fields[2] = {(char *)richer, r->fields[1]};
  smartrest_record key = {.fields = key_fields, .nfields = 2};
  const smartrest_record *kp = &key;
  return bsearch(&kp, t->recs, t->n, sizeof *t->recs, twin_cmp) != NULL;
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

static bool same_fields(const c8y_operation *op, const smartrest_record *r) {
  if (strcmp(op->template_id, r->fields[0]) != 0 ||
      op->nfields != r->nfields - 2)
    return false;
  for (size_t i = 0; i < op->nfields; i++)
    if (strcmp(op->fields[i], r->fields[i + 2]) != 0)
      return false;
  return true;
}

static void run_started(ops *o, c8y_operation *op);
static int complete(c8y_operation *op, bool ok, const char *const *params,
                    size_t n, const char *reason);

/* The head of f waits to learn whether its in-flight 501 reached the
 * platform. Cumulocity hands out PENDING operations oldest first, so the
 * first record for this device and fragment after the reconnect settles it:
 * the same operation means it is still PENDING (and r is that operation, not
 * a new one); anything else means the 501 arrived and it is EXECUTING.
 * Returns true when r was the uncertain operation itself. */
static bool reconcile_with(ops *o, op_fifo *f, const smartrest_record *r) {
  c8y_operation *op = f->head;
  if (!op || op->state != OP_UNCERTAIN)
    return false;
  if (same_fields(op, r)) {
    log_info("operation #%llu (%s) came back as PENDING: starting it again",
             (unsigned long long)op->id, op->fragment);
    op->state = OP_QUEUED;
    op_start(o, op);
    return true;
  }
  log_info("operation #%llu (%s): its 501 reached the platform before the "
           "link dropped; running it",
           (unsigned long long)op->id, op->fragment);
  run_started(o, op);
  return false;
}

static void handle_record(ops *o, const smartrest_record *r, warn_budget *w) {
  const char *tid = r->fields[0];
  const char *fragment = proto_fragment(tid);
  if (!fragment) {
    if (!ignored_before(o, tid))
      log_notice("s/ds: no handler for template %s; left untouched (logged "
                 "once per template)",
                 tid);
    return;
  }
  if (r->nfields < 2 || !r->fields[1][0]) {
    if (may_warn(w))
      log_warning("s/ds record %zu: template %s without a device id; ignored",
                  r->line, tid);
    return;
  }
  const char *device = r->fields[1];
  const char *bad_id = ident_check(device, false);
  if (bad_id) {
    log_warning("s/ds record %zu: operation %s: the device id %s; ignored",
                r->line, tid, bad_id);
    return;
  }
  bool child = strcmp(device, o->root) != 0;
  if (child && !registry_has_child(o->reg, device)) {
    if (may_warn(w))
      log_warning("s/ds record %zu: operation %s for unknown device '%s'; "
                  "ignored",
                  r->line, tid, device);
    return;
  }
  reg_handler *h = registry_handler_for(o->reg, tid, child ? device : NULL);
  if (!h && !child) {
    if (!ignored_before(o, tid))
      log_notice("s/ds: no handler for template %s on %s; left untouched "
                 "(logged once per template)",
                 tid, device);
    return;
  }
  op_fifo *f = fifo_for(o, device, fragment, true);
  if (f && reconcile_with(o, f, r))
    return;
  c8y_operation *op = calloc(1, sizeof *op);
  if (!op)
    return;
  op->engine = o;
  op->id = journal_next_id(o->j);
  op->template_id = strdup(tid);
  op->device = strdup(device);
  op->child = child;
  op->fragment = fragment;
  op->handler = h;
  op->nfields = r->nfields - 2;
  op->fields = calloc(op->nfields + 1, sizeof *op->fields);
  atomic_init(&op->refs, 1);
  bool ok = op->template_id && op->device && op->fields;
  for (size_t i = 0; ok && i < op->nfields; i++)
    ok = (op->fields[i] = strdup(r->fields[i + 2])) != NULL;
  if (!ok || !f) {
    log_error("out of memory queueing operation %s", tid);
    op_release(op);
    return;
  }
  log_info("operation %s (%s) for %s queued as #%llu%s", tid, fragment, device,
           (unsigned long long)op->id,
           h ? "" : " (its device's plugin does not handle it)");
  if (f->tail)
    f->tail->next = op;
  else
    f->head = op;
  f->tail = op;
  if (f->head == op)
    op_start(o, op);
}

void ops_handle_payload(ops *o, const char *payload, size_t len) {
  smartrest_records recs;
  if (smartrest_decode(payload, len, &recs) != 0) {
    log_error("s/ds: out of memory decoding a %zu-byte payload", len);
    return;
  }
  twin_set twins;
  twins_collect(&recs, &twins);
  warn_budget w = {0, 0};
  for (size_t i = 0; i < recs.count; i++) {
    const smartrest_record *r = &recs.items[i];
    if (r->error) {
      if (may_warn(&w))
        log_warning("s/ds record %zu: %s; record ignored", r->line, r->error);
      continue;
    }
    if (r->nfields == 0 || !r->fields[0][0])
      continue;
    if (superseded(&twins, r)) {
      log_debug("s/ds record %zu: template %s superseded by its typed twin",
                r->line, r->fields[0]);
      continue;
    }
    handle_record(o, r, &w);
  }
  if (w.suppressed)
    log_warning("s/ds: %zu more bad records in the same %zu-byte payload not "
                "logged",
                w.suppressed, len);
  free(twins.recs);
  smartrest_records_free(&recs);
}

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

/* The operation is EXECUTING on the platform: journal it, then run it. */
static void run_started(ops *o, c8y_operation *op) {
  journal_entry e = {.id = op->id,
                     .template_id = op->template_id,
                     .fragment = (char *)op->fragment,
                     .device = op->device,
                     .child = op->child};
  /* Not under o->mu: the journal fsyncs, and it has its own lock. */
  int jrc = journal_begin(o->j, &e);
  if (jrc != 0)
    log_warning("operation #%llu: journal write failed; a restart during it "
                "will leave it EXECUTING",
                (unsigned long long)op->id);
  op->state = OP_RUNNING;
  if (o->stopping) {
    /* Plugins are gone: journaled, so the next start reports it failed
     * instead of leaving it EXECUTING forever. It must not expire in
     * ops_process either: "timed out" would be a false reason, and its
     * handler may already be unloaded (timeout_of read freed memory,
     * found by scripts/check-tsan.sh). */
    op->deadline_ms = LLONG_MAX;
    return;
  }
  op->deadline_ms = clock_mono_ms() + timeout_of(o, op);
  if (!op->handler) {
    char reason[300];
    snprintf(reason, sizeof reason, "not supported by %s", op->device);
    atomic_fetch_add(&op->refs, 1); /* released by the completion */
    complete(op, false, NULL, 0, reason);
    return;
  }
  /* One reference for the plugin (released by its completion call) and one
   * for the worker call itself. */
  atomic_fetch_add(&op->refs, 2);
  o->host.dispatch(o->host.ctx, op);
}

void ops_on_acked(ops *o, uint64_t tag, bool run) {
  c8y_operation *op = find_starting(o, tag);
  if (!op)
    return;
  if (!run)
    o->stopping = true;
  run_started(o, op);
}

static bool tag_in(uint64_t tag, const uint64_t *tags, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (tags[i] == tag)
      return true;
  return false;
}

void ops_on_disconnect(ops *o, const uint64_t *inflight, size_t ninflight) {
  for (size_t i = 0; i < o->nfifos; i++) {
    op_fifo *f = &o->fifos[i];
    c8y_operation **link = &f->head;
    c8y_operation *prev = NULL;
    while (*link) {
      c8y_operation *op = *link;
      if (op->state == OP_STARTING && tag_in(op->id, inflight, ninflight)) {
        /* Sent, not acknowledged: the platform may have it either way. */
        outq_remove_tag(o->q, op->id);
        op->state = OP_UNCERTAIN;
        op->reconcile_at = 0;
        log_info("operation #%llu (%s): the link dropped with its 501 in "
                 "flight; settled after reconnecting",
                 (unsigned long long)op->id, op->fragment);
        prev = op;
        link = &op->next;
      } else if (op->state == OP_QUEUED || op->state == OP_STARTING) {
        if (op->state == OP_STARTING)
          outq_remove_tag(o->q, op->id);
        log_info("operation #%llu (%s) not started before the link dropped; "
                 "the 500 after reconnecting brings it back",
                 (unsigned long long)op->id, op->fragment);
        *link = op->next;
        op_release(op);
      } else {
        prev = op;
        link = &op->next;
      }
    }
    f->tail = prev;
  }
}

void ops_on_pending_requested(ops *o, long long now_ms) {
  for (size_t i = 0; i < o->nfifos; i++) {
    c8y_operation *op = o->fifos[i].head;
    if (op && op->state == OP_UNCERTAIN && op->reconcile_at == 0)
      op->reconcile_at = now_ms + OPS_RECONCILE_MS;
  }
}

/* Queues the final status; the journal entry ends only once it is queued
 * durably, so a status that cannot be queued now is retried, and a crash
 * in between reports the operation again instead of losing it. */
static void finish(ops *o, c8y_operation *op) {
  char tbuf[512];
  const char *topic = status_topic(op, tbuf, sizeof tbuf);
  int rc;
  bool retry = op->state == OP_FINISHING;
  char reason[128] = "";
  if (op->timed_out) {
    snprintf(reason, sizeof reason, "operation timed out after %u s",
             (unsigned)(timeout_of(o, op) / 1000));
    if (!retry)
      log_warning("operation #%llu (%s): %s", (unsigned long long)op->id,
                  op->fragment, reason);
    rc = queue_failure(o, topic, op->fragment, reason);
  } else if (op->ok) {
    if (!retry)
      log_info("operation #%llu (%s) succeeded", (unsigned long long)op->id,
               op->fragment);
    rc = queue_success(o, topic, op->fragment, op->params, op->nparams);
  } else {
    if (!retry)
      log_info("operation #%llu (%s) failed: %s", (unsigned long long)op->id,
               op->fragment, op->reason ? op->reason : "");
    rc = queue_failure(o, topic, op->fragment, op->reason);
  }
  if (rc != 0) {
    if (!retry)
      log_error("operation #%llu (%s): its final status cannot be queued "
                "(%s); retrying every %d ms",
                (unsigned long long)op->id, op->fragment, status_str(rc),
                OPS_RETRY_MS);
    op->state = OP_FINISHING;
    o->retry_at = clock_mono_ms() + OPS_RETRY_MS;
    return;
  }
  if (retry)
    log_notice("operation #%llu (%s): final status queued after retrying",
               (unsigned long long)op->id, op->fragment);
  if (o->host.finished) {
    ops_outcome r = {op->id,
                     op->template_id,
                     op->fragment,
                     op->device,
                     op->ok && !op->timed_out,
                     op->timed_out ? reason : op->reason};
    o->host.finished(o->host.ctx, &r);
  }
  journal_end(o->j, op->id);
  op->state = OP_FINISHED;
  op_fifo *f = fifo_for(o, op->device, op->fragment, false);
  if (f)
    fifo_advance(o, f);
}

static void keep_earliest(long long *deadline, long long at) {
  if (*deadline < 0 || at < *deadline)
    *deadline = at;
}

/* finish() never grows the FIFO array (fifo_for without create), so the
 * loops below can go on with the next FIFO after it. */
long long ops_process(ops *o, long long now_ms) {
  pthread_mutex_lock(&o->mu);
  c8y_operation *done = o->done_head;
  o->done_head = o->done_tail = NULL;
  pthread_mutex_unlock(&o->mu);
  while (done) {
    c8y_operation *next = done->next_done;
    finish(o, done);
    done = next;
  }
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
    } else if (op->state == OP_RUNNING) {
      if (op->deadline_ms > now_ms) {
        keep_earliest(&next_deadline, op->deadline_ms);
        continue;
      }
      pthread_mutex_lock(&o->mu);
      bool expire = !op->finished;
      if (expire)
        op->finished = op->timed_out = true;
      pthread_mutex_unlock(&o->mu);
      if (expire)
        finish(o, op);
    }
  }
  return next_deadline;
}

/* More starts than this without completing: the handler (or the action it
 * started) keeps killing the agent, so the operation fails instead of
 * looping forever. */
#define OPS_MAX_RESUMES 5

/* An operation marked with op_resume_after_restart: kept executing for
 * ops_resume, or failed when it was resumed too often already. */
static int keep_resumable(ops *o, const journal_entry *e, const char *topic) {
  if (e->resumes < OPS_MAX_RESUMES) {
    journal_entry *grown =
        realloc(o->resumable, (o->nresumable + 1) * sizeof *grown);
    if (grown) {
      o->resumable = grown;
      if (journal_entry_copy(e, &grown[o->nresumable]) == 0) {
        if (journal_keep_recovered(o->j, e->id) == 0) {
          o->nresumable++;
          log_notice("operation #%llu (%s) will be resumed once the plugins "
                     "are loaded",
                     (unsigned long long)e->id, e->fragment);
          return 0;
        }
        journal_entry_free(&grown[o->nresumable]);
      }
    }
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
  const char *fields[] = {"502", e->fragment, reason};
  return queue_status_line(o, topic, fields, 3, 0, 0);
}

void ops_recover(ops *o) {
  const journal_entry *entries;
  size_t n = journal_recovered(o->j, &entries);
  if (n == 0)
    return;
  char *boot = journal_boot_id();
  int failures = 0;
  for (size_t i = 0; i < n; i++) {
    const journal_entry *e = &entries[i];
    char tbuf[512];
    const char *topic = "s/us";
    if (e->child) {
      snprintf(tbuf, sizeof tbuf, "s/us/%s", e->device);
      topic = tbuf;
    }
    bool rebooted = journal_booted_since(boot, e->boot_id);
    if (e->resume) {
      failures += keep_resumable(o, e, topic) != 0;
    } else if (e->reboot && rebooted) {
      log_notice("operation #%llu (%s) completed by the reboot",
                 (unsigned long long)e->id, e->fragment);
      const char *fields[] = {"503", e->fragment};
      failures += queue_status_line(o, topic, fields, 2, 0, 0) != 0;
    } else {
      const char *reason =
          e->reboot ? "the agent restarted but the device did not reboot"
                    : "the agent stopped while the operation was executing";
      log_notice("operation #%llu (%s) failed: %s", (unsigned long long)e->id,
                 e->fragment, reason);
      const char *fields[] = {"502", e->fragment, reason};
      failures += queue_status_line(o, topic, fields, 3, 0, 0) != 0;
    }
  }
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
    if (op && op->state == OP_RUNNING) {
      pthread_mutex_lock(&o->mu);
      n += !op->finished;
      pthread_mutex_unlock(&o->mu);
    }
  }
  return n;
}

/* Operations that must survive the stop: the reboot or upgrade they wait
 * for is probably what stops the agent; the next start settles them. */
static bool outlives_stop(const c8y_operation *op) {
  return op->reboot || op->resume;
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
      free(op->reason);
      op->reason = strdup(reason);
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
  if (op->plugin_released || op->dead) {
    pthread_mutex_unlock(&o->mu);
    return C8Y_ESTATE;
  }
  op->plugin_released = true;
  if (op->finished) {
    pthread_mutex_unlock(&o->mu);
    op_release(op);
    return C8Y_ETIMEDOUT;
  }
  op->finished = true;
  op->ok = ok;
  if (ok && n > 0) {
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
  return C8Y_OK;
}

int ops_op_succeed(c8y_operation *op, const char *result) {
  if (!op)
    return C8Y_EINVAL;
  const char *params[] = {result};
  return complete(op, true, params, result ? 1 : 0, NULL);
}

int ops_op_succeed_params(c8y_operation *op, const char *const *params,
                          size_t n) {
  if (!op || (n > 0 && !params))
    return C8Y_EINVAL;
  return complete(op, true, params, n, NULL);
}

int ops_op_fail(c8y_operation *op, const char *reason) {
  if (!op)
    return C8Y_EINVAL;
  return complete(op, false, NULL, 0, reason ? reason : "failed");
}

int ops_op_cancelled(const c8y_operation *op) {
  ops *o = op->engine;
  pthread_mutex_lock(&o->mu);
  int cancelled = op->timed_out || op->cancelled || op->dead;
  pthread_mutex_unlock(&o->mu);
  return cancelled;
}

int ops_op_complete_on_reboot(c8y_operation *op) {
  ops *o = op->engine;
  pthread_mutex_lock(&o->mu);
  int rc = C8Y_OK;
  if (op->finished || op->dead || op->plugin_released)
    rc = C8Y_ESTATE;
  else if (!op->reboot) {
    op->reboot = true;
    /* The journal write (an fsync) runs without o->mu, which every status
     * and the main loop need. If the operation finishes meanwhile, its
     * end line may precede this one; replay ignores a reboot mark for an
     * ended entry. */
    pthread_mutex_unlock(&o->mu);
    rc = journal_mark_reboot(o->j, op->id);
    if (rc != C8Y_OK) {
      pthread_mutex_lock(&o->mu);
      op->reboot = false;
      pthread_mutex_unlock(&o->mu);
    }
    return rc;
  }
  pthread_mutex_unlock(&o->mu);
  return rc;
}

void ops_run_handler(c8y_operation *op) {
  reg_handler *h = op->handler;
  int rc = h->fn(h->plugin, op, h->user_data);
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
const char *ops_op_template(const c8y_operation *op) { return op->template_id; }
const char *ops_op_fragment(const c8y_operation *op) { return op->fragment; }
const char *ops_op_device(const c8y_operation *op) { return op->device; }
size_t ops_op_field_count(const c8y_operation *op) { return op->nfields; }
const char *ops_op_field(const c8y_operation *op, size_t index) {
  return index < op->nfields ? op->fields[index] : NULL;
}

/* ---- resume after restart (ABI 1.1) ---- */

static void run_resumed(ops *o, c8y_operation *op) {
  op->state = OP_RUNNING;
  uint32_t timeout =
      op->handler->timeout_ms ? op->handler->timeout_ms : o->default_timeout_ms;
  op->deadline_ms = clock_mono_ms() + timeout;
  atomic_fetch_add(&op->refs, 2); /* the plugin's and the worker call's */
  o->host.dispatch(o->host.ctx, op);
}

/* The handler or child that should take the operation is gone: 502, and
 * the journal forgets it. */
static void resume_refused(ops *o, const journal_entry *e, const char *reason) {
  char tbuf[512];
  const char *topic = "s/us";
  if (e->child) {
    snprintf(tbuf, sizeof tbuf, "s/us/%s", e->device);
    topic = tbuf;
  }
  log_warning("operation #%llu (%s) cannot be resumed: %s",
              (unsigned long long)e->id, e->fragment, reason);
  queue_failure(o, topic, e->fragment, reason);
  journal_end(o->j, e->id);
}

static c8y_operation *resumed_op(ops *o, journal_entry *e, reg_handler *h,
                                 const char *boot) {
  c8y_operation *op = calloc(1, sizeof *op);
  if (!op)
    return NULL;
  op->engine = o;
  op->id = e->id;
  op->template_id = strdup(e->template_id);
  op->device = strdup(e->device);
  op->child = e->child;
  op->fragment = h->fragment;
  op->handler = h;
  op->fields = e->fields; /* taken over from the entry */
  op->nfields = e->nfields;
  e->fields = NULL;
  e->nfields = 0;
  op->resume = op->resumed = true;
  op->rebooted = journal_booted_since(boot, e->boot_id);
  atomic_init(&op->refs, 1);
  if (!op->template_id || !op->device) {
    op_release(op);
    return NULL;
  }
  return op;
}

/* The handler now registered for the entry's template (the same lookup as
 * for a new operation of that template and device). */
static reg_handler *resume_handler(ops *o, const journal_entry *e) {
  return e->template_id ? registry_handler_for(o->reg, e->template_id,
                                               e->child ? e->device : NULL)
                        : NULL;
}

void ops_resume(ops *o) {
  char *boot = journal_boot_id();
  for (size_t i = 0; i < o->nresumable; i++) {
    journal_entry *e = &o->resumable[i];
    char reason[300];
    if (e->child && !registry_has_child(o->reg, e->device)) {
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
               "after the agent restarted no plugin handles template %.40s "
               "any more",
               e->template_id ? e->template_id : "(unknown)");
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
    if (f->tail)
      f->tail->next = op;
    else
      f->head = op;
    f->tail = op;
    run_resumed(o, op);
  }
  free(boot);
  for (size_t i = 0; i < o->nresumable; i++)
    journal_entry_free(&o->resumable[i]);
  free(o->resumable);
  o->resumable = NULL;
  o->nresumable = 0;
}

int ops_op_resume_after_restart(c8y_operation *op) {
  if (!op)
    return C8Y_EINVAL;
  ops *o = op->engine;
  pthread_mutex_lock(&o->mu);
  int rc = C8Y_OK;
  if (op->finished)
    rc = C8Y_ESTATE;
  else if (!op->resume) {
    op->resume = true;
    /* As for the reboot mark: no fsync under o->mu. The fields are the
     * operation's own, fixed since dispatch. */
    pthread_mutex_unlock(&o->mu);
    rc = journal_mark_resume(o->j, op->id, (const char *const *)op->fields,
                             op->nfields);
    if (rc != C8Y_OK) {
      pthread_mutex_lock(&o->mu);
      op->resume = false;
      pthread_mutex_unlock(&o->mu);
    }
    return rc;
  }
  pthread_mutex_unlock(&o->mu);
  return rc;
}

int ops_op_resumed(const c8y_operation *op) { return op && op->resumed; }
int ops_op_rebooted(const c8y_operation *op) {
  return op && op->resumed && op->rebooted;
}
