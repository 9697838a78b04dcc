/* check_run: see check_run.h. The main thread is the agent's main loop and
 * the platform; the plugin's worker (and threads it starts) reach the kit
 * only through the observing api slots and callback wrappers, which take
 * `mu` for what they record. */
#include "check_run.h"

#include "capture.h"
#include "check_gen.h"
#include "clock.h"
#include "config.h"
#include "loader.h"
#include "ops.h"
#include "plugin_host.h"
#include "proto.h"
#include "registry.h"
#include "smartrest.h"
#include "status.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const check_info check_infos[] = {
    {"crash", "the process died (a signal or a sanitizer error) in init, a "
              "callback or fini; the kit goes on with the next step"},
    {"never-completed",
     "a handler returned C8Y_PENDING and nothing ever completed the "
     "operation: not after op_cancelled, not in fini"},
    {"completed-twice",
     "op_succeed, op_succeed_params or op_fail on an operation that was "
     "complete already (the call returned C8Y_ESTATE), also after the "
     "handler returned C8Y_OK or an error, which complete it"},
    {"timeout", "the operation outlived its timeout: not complete within "
                "[agent] stop_grace_ms after op_cancelled turned true, so "
                "the agent failed it itself"},
    {"blocked-worker",
     "a callback (handler, producer, message handler) did not return "
     "within --wait seconds, nor after op_cancelled; or the plugin's "
     "worker did not return within 1 s of the agent's stop, so the agent "
     "abandons the plugin"},
    {"bad-return", "a handler returned a status the SDK does not define "
                   "(above C8Y_PENDING)"},
    {"line-too-long", "the agent refused a line over C8Y_MAX_LINE (16000 "
                      "bytes) with C8Y_ETOOBIG"},
    {"line-refused", "the agent refused a malformed line or sample with "
                     "C8Y_EINVAL (a template, field, child id or value it "
                     "does not take)"},
    {"line-rate", "the agent refused lines over the plugin's rate "
                  "(C8Y_ERATE, C8Y_EAGAIN), or a producer's lines per cycle "
                  "at its interval are more than [agent] "
                  "plugin_max_lines_per_s"},
    {"restart", "after a simulated agent restart (for an operation marked "
                "to complete on reboot or to resume) the plugin did not "
                "load again"},
    {"left-thread",
     "fini returned while a thread the plugin started was still running"},
    {"left-process", "a process the plugin started was still running, or "
                     "never reaped, after fini"},
    {"leak", "memory definitely lost, allocated by the plugin's code "
             "(valgrind or LeakSanitizer)"},
    {"memory-error", "an invalid read, write or free, or a use of "
                     "uninitialised memory, in the plugin's code (valgrind "
                     "or AddressSanitizer)"},
};
const size_t check_ninfos = sizeof check_infos / sizeof check_infos[0];

#if defined(__SANITIZE_ADDRESS__)
#define CHECK_RUN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHECK_RUN_ASAN 1
#endif
#endif
#ifndef CHECK_RUN_ASAN
#define CHECK_RUN_ASAN 0
#endif

#define NO_CASE ((size_t)-1)
#define CHECK_DEVICE "c8y-plugin-check"
#define CHECK_URL "https://c8y-plugin-check.invalid/inventory/binaries/4711"
/* How long the kit waits after the last step for late completions. */
#define SETTLE_MS 200

/* What the kit saw of one case's operation. */
typedef struct case_state {
  int started, returned; /* handler calls (a resumed one runs again) */
  int handler_rc;
  int completions; /* op_succeed* / op_fail calls */
  int estate;      /* ... that returned C8Y_ESTATE */
  const char *estate_fn;
  int late; /* ... that came after the agent had failed it */
  const char *late_fn;
  bool outcome, outcome_ok, agent_gave_up;
  bool reboot, resume, reboot_ever, resume_ever;
  bool kit_timeout, blocked, bad_rc;
  uint32_t timeout_ms;
  int reported_estate;
  bool reported_timeout;
} case_state;

/* A handle the plugin was given, and its case. */
typedef struct handle_ref {
  uintptr_t handle;
  size_t ci;
} handle_ref;

/* A callback the plugin registered, wrapped. */
typedef struct kit_cb {
  c8y_operation_fn op_fn;
  c8y_message_fn msg_fn;
  void *ud;
  uint32_t timeout_ms;
  struct kit_cb *next;
} kit_cb;

/* Refused upstream calls, one entry per function and status. */
typedef struct refusal {
  const char *fn;
  int rc;
  unsigned count;
  char *example;
} refusal;

typedef struct strlist {
  char **v;
  size_t n;
} strlist;

typedef struct run {
  const check_options *o;
  FILE *report;
  pthread_mutex_t report_mu;
  agent_config cfg;
  bool cfg_loaded;
  char *cfg_path, *state_dir, *binary, *boot_id_file;
  capture *c;
  const c8y_api *real;
  c8y_api api;
  char *plugin_name;
  pthread_mutex_t mu; /* the fields below */
  case_state *st;
  size_t current;
  handle_ref *handles;
  size_t nhandles;
  kit_cb *cbs;
  strlist template_ops; /* xid, message id, fragment, ... */
  strlist messages;     /* xid, message id, ... */
  unsigned msg_started, msg_returned;
  unsigned stray; /* handler calls outside a case */
  bool platform_asked;
  refusal *refusals;
  size_t nrefusals;
  unsigned long long lines; /* upstream, statuses aside (main thread) */
  bool *rate_reported;      /* per producer index (main thread) */
  /* main thread only */
  strlist hints_seen; /* 118/119 first values */
  check_cases cases;
  check_hints hints;
  unsigned next_id; /* the platform's next operation id */
  size_t nsteps, next_step;
  bool abandoned;
  bool blocked; /* a blocked-worker finding was made */
} run;

/* The observing slots have no context argument: the one run of this
 * process. */
static run *the_run;

/* ---- report records ---- */

static void put_field(FILE *f, const char *s) {
  for (const char *c = s ? s : ""; *c; c++) {
    if (*c == '\t')
      fputs("\\t", f);
    else if (*c == '\n')
      fputs("\\n", f);
    else if (*c == '\\')
      fputs("\\\\", f);
    else
      fputc(*c, f);
  }
}

/* One record: its type and fields, NULL-terminated. */
static void record(run *r, const char *type, ...) {
  va_list ap;
  va_start(ap, type);
  pthread_mutex_lock(&r->report_mu);
  fputs(type, r->report);
  for (const char *s = va_arg(ap, const char *); s;
       s = va_arg(ap, const char *)) {
    fputc('\t', r->report);
    put_field(r->report, s);
  }
  fputc('\n', r->report);
  fflush(r->report);
  pthread_mutex_unlock(&r->report_mu);
  va_end(ap);
}

__attribute__((format(printf, 4, 5))) static void
finding(run *r, const char *check, const char *subject, const char *fmt, ...) {
  char detail[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  record(r, "finding", check, subject, detail, (char *)NULL);
}

__attribute__((format(printf, 3, 4))) static void note(run *r, const char *type,
                                                       const char *fmt, ...) {
  char text[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  record(r, type, text, (char *)NULL);
}

static char *xprintf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0)
    abort();
  va_end(ap);
  return s;
}

static void strlist_add(strlist *l, const char *s) {
  char **grown = realloc(l->v, (l->n + 1) * sizeof *grown);
  if (!grown || !(grown[l->n] = strdup(s ? s : "")))
    abort();
  l->v = grown;
  l->n++;
}

static void strlist_free(strlist *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* "511 c8y_Command on dev [valid] (echo ...)" */
static char *case_subject(const check_case *k) {
  const char *frag = k->channel != CHECK_RECORD ? proto_fragment(k->what) : 0;
  return xprintf("%s%s%s on %s [%s] (%s)", k->what, frag ? " " : "",
                 frag ? frag : "", k->device, k->variant, k->shown);
}

/* ---- what the plugin does, observed (any thread) ---- */

static size_t find_handle(run *r, const c8y_operation *op) {
  for (size_t i = r->nhandles; i-- > 0;)
    if (r->handles[i].handle == (uintptr_t)op)
      return r->handles[i].ci;
  return NO_CASE;
}

static int kit_handler(c8y_plugin *self, c8y_operation *op, void *ud) {
  run *r = the_run;
  kit_cb *cb = ud;
  pthread_mutex_lock(&r->mu);
  size_t ci = r->current;
  handle_ref *grown =
      realloc(r->handles, (r->nhandles + 1) * sizeof *r->handles);
  if (grown) {
    r->handles = grown;
    r->handles[r->nhandles++] = (handle_ref){(uintptr_t)op, ci};
  }
  if (ci == NO_CASE)
    r->stray++;
  if (ci != NO_CASE) {
    r->st[ci].started++;
    r->st[ci].timeout_ms =
        cb->timeout_ms ? cb->timeout_ms : (uint32_t)r->cfg.op_timeout_s * 1000u;
  }
  pthread_mutex_unlock(&r->mu);
  int rc = cb->op_fn(self, op, cb->ud);
  pthread_mutex_lock(&r->mu);
  if (ci != NO_CASE) {
    r->st[ci].returned++;
    r->st[ci].handler_rc = rc;
    if (rc > C8Y_PENDING)
      r->st[ci].bad_rc = true;
  }
  pthread_mutex_unlock(&r->mu);
  capture_wake(capture_of(self));
  return rc;
}

static void kit_message(c8y_plugin *self, const c8y_message *msg, void *ud) {
  run *r = the_run;
  kit_cb *cb = ud;
  pthread_mutex_lock(&r->mu);
  r->msg_started++;
  pthread_mutex_unlock(&r->mu);
  cb->msg_fn(self, msg, cb->ud);
  pthread_mutex_lock(&r->mu);
  r->msg_returned++;
  pthread_mutex_unlock(&r->mu);
  capture_wake(capture_of(self));
}

static kit_cb *new_cb(run *r, c8y_operation_fn fn, c8y_message_fn mfn, void *ud,
                      uint32_t timeout_ms) {
  if (!fn && !mfn)
    return NULL;
  kit_cb *cb = calloc(1, sizeof *cb);
  if (!cb)
    return NULL;
  *cb =
      (kit_cb){.op_fn = fn, .msg_fn = mfn, .ud = ud, .timeout_ms = timeout_ms};
  pthread_mutex_lock(&r->mu);
  cb->next = r->cbs;
  r->cbs = cb;
  pthread_mutex_unlock(&r->mu);
  return cb;
}

/* A registration the agent refuses never calls its wrapper; the wrapper
 * stays listed (freed with the run). */
static int w_add_operation(c8y_plugin *self, const char *tid, uint32_t t,
                           c8y_operation_fn fn, void *ud) {
  kit_cb *cb = new_cb(the_run, fn, NULL, ud, t);
  return the_run->real->add_operation(self, tid, t, cb ? kit_handler : NULL,
                                      cb);
}

static int w_add_child_operation(c8y_plugin *self, const char *tid, uint32_t t,
                                 c8y_operation_fn fn, void *ud) {
  kit_cb *cb = new_cb(the_run, fn, NULL, ud, t);
  return the_run->real->add_child_operation(self, tid, t,
                                            cb ? kit_handler : NULL, cb);
}

static int w_add_fragment_operation(c8y_plugin *self, const char *fragment,
                                    uint32_t t, c8y_operation_fn fn, void *ud) {
  kit_cb *cb = new_cb(the_run, fn, NULL, ud, t);
  return the_run->real->add_fragment_operation(self, fragment, t,
                                               cb ? kit_handler : NULL, cb);
}

static int w_add_device_operation(c8y_plugin *self, const char *device,
                                  const char *what, uint32_t t,
                                  c8y_operation_fn fn, void *ud) {
  kit_cb *cb = new_cb(the_run, fn, NULL, ud, t);
  return the_run->real->add_device_operation(self, device, what, t,
                                             cb ? kit_handler : NULL, cb);
}

static int w_add_message_handler(c8y_plugin *self, const char *xid,
                                 const char *message_id, c8y_message_fn fn,
                                 void *ud) {
  run *r = the_run;
  kit_cb *cb = new_cb(r, NULL, fn, ud, 0);
  int rc = r->real->add_message_handler(self, xid, message_id,
                                        cb ? kit_message : NULL, cb);
  if (rc == C8Y_OK) {
    pthread_mutex_lock(&r->mu);
    strlist_add(&r->messages, xid);
    strlist_add(&r->messages, message_id);
    pthread_mutex_unlock(&r->mu);
  }
  return rc;
}

static int w_add_template_operation(c8y_plugin *self, const char *xid,
                                    const char *message_id,
                                    const char *fragment) {
  run *r = the_run;
  int rc = r->real->add_template_operation(self, xid, message_id, fragment);
  if (rc == C8Y_OK) {
    pthread_mutex_lock(&r->mu);
    strlist_add(&r->template_ops, xid);
    strlist_add(&r->template_ops, message_id);
    strlist_add(&r->template_ops, fragment);
    pthread_mutex_unlock(&r->mu);
  }
  return rc;
}

/* Before a completion: its case, and whether the agent had ended the
 * operation already (then only C8Y_ETIMEDOUT can come back). */
static size_t before_completion(const c8y_operation *op, bool *after_outcome) {
  run *r = the_run;
  pthread_mutex_lock(&r->mu);
  size_t ci = find_handle(r, op);
  *after_outcome = false;
  if (ci != NO_CASE) {
    r->st[ci].completions++;
    *after_outcome = r->st[ci].outcome;
  }
  pthread_mutex_unlock(&r->mu);
  return ci;
}

static int after_completion(size_t ci, bool after_outcome, int rc,
                            const char *fn) {
  run *r = the_run;
  pthread_mutex_lock(&r->mu);
  if (ci != NO_CASE) {
    case_state *st = &r->st[ci];
    if (rc == C8Y_ESTATE) {
      st->estate++;
      if (!st->estate_fn)
        st->estate_fn = fn;
    } else if (rc == C8Y_ETIMEDOUT && after_outcome) {
      st->late++;
      if (!st->late_fn)
        st->late_fn = fn;
    }
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

static int w_op_succeed(c8y_operation *op, const char *result) {
  bool after;
  size_t ci = before_completion(op, &after);
  return after_completion(ci, after, the_run->real->op_succeed(op, result),
                          "op_succeed");
}

static int w_op_succeed_params(c8y_operation *op, const char *const *params,
                               size_t n) {
  bool after;
  size_t ci = before_completion(op, &after);
  return after_completion(ci, after,
                          the_run->real->op_succeed_params(op, params, n),
                          "op_succeed_params");
}

static int w_op_fail(c8y_operation *op, const char *reason) {
  bool after;
  size_t ci = before_completion(op, &after);
  return after_completion(ci, after, the_run->real->op_fail(op, reason),
                          "op_fail");
}

static void mark_waiting(const c8y_operation *op, bool reboot) {
  run *r = the_run;
  pthread_mutex_lock(&r->mu);
  size_t ci = find_handle(r, op);
  if (ci != NO_CASE) {
    if (reboot)
      r->st[ci].reboot = r->st[ci].reboot_ever = true;
    else
      r->st[ci].resume = r->st[ci].resume_ever = true;
  }
  pthread_mutex_unlock(&r->mu);
}

static int w_op_complete_on_reboot(c8y_operation *op) {
  int rc = the_run->real->op_complete_on_reboot(op);
  if (rc == C8Y_OK)
    mark_waiting(op, true);
  return rc;
}

static int w_op_resume_after_restart(c8y_operation *op) {
  int rc = the_run->real->op_resume_after_restart(op);
  if (rc == C8Y_OK)
    mark_waiting(op, false);
  return rc;
}

/* A refused upstream call. C8Y_ENOMEM and C8Y_EIO are the agent's
 * trouble, not the plugin's. */
static int refused(const char *fn, int rc, const char *example) {
  if (rc >= 0 || rc == C8Y_ENOMEM || rc == C8Y_EIO)
    return rc;
  run *r = the_run;
  pthread_mutex_lock(&r->mu);
  refusal *e = NULL;
  for (size_t i = 0; i < r->nrefusals; i++)
    if (r->refusals[i].fn == fn && r->refusals[i].rc == rc)
      e = &r->refusals[i];
  if (!e) {
    refusal *grown =
        realloc(r->refusals, (r->nrefusals + 1) * sizeof *r->refusals);
    if (grown) {
      r->refusals = grown;
      e = &grown[r->nrefusals++];
      *e = (refusal){.fn = fn, .rc = rc, .example = strdup(example)};
    }
  }
  if (e)
    e->count++;
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* "a,b,c" of up to 3 fields, cut, for the report. */
static void fields_example(char *buf, size_t len, const char *const *f,
                           size_t n) {
  buf[0] = '\0';
  size_t used = 0;
  for (size_t i = 0; f && i < n && i < 3 && used < len; i++) {
    const char *v = f[i] ? f[i] : "";
    size_t vl = strlen(v);
    int w = snprintf(buf + used, len - used, "%s%.40s%s", i ? "," : "", v,
                     vl > 40 ? "..." : "");
    if (w > 0)
      used += (size_t)w;
  }
  if (n > 3 && used < len)
    snprintf(buf + used, len - used, ",... (%zu fields)", n);
}

static int w_send_event(c8y_plugin *self, const char *child, const char *type,
                        const char *text, int64_t time_ms) {
  char ex[200];
  snprintf(ex, sizeof ex, "type %.60s, text %.60s%s", type ? type : "(null)",
           text ? text : "(null)", text && strlen(text) > 60 ? "..." : "");
  return refused("send_event",
                 the_run->real->send_event(self, child, type, text, time_ms),
                 ex);
}

static int w_raise_alarm(c8y_plugin *self, const char *child,
                         c8y_severity severity, const char *type,
                         const char *text) {
  char ex[200];
  snprintf(ex, sizeof ex, "type %.60s, text %.60s%s", type ? type : "(null)",
           text ? text : "(null)", text && strlen(text) > 60 ? "..." : "");
  return refused("raise_alarm",
                 the_run->real->raise_alarm(self, child, severity, type, text),
                 ex);
}

static int w_clear_alarm(c8y_plugin *self, const char *child,
                         const char *type) {
  char ex[120];
  snprintf(ex, sizeof ex, "type %.60s", type ? type : "(null)");
  return refused("clear_alarm", the_run->real->clear_alarm(self, child, type),
                 ex);
}

static int w_send_static(c8y_plugin *self, const char *child,
                         const char *const *fields, size_t n) {
  char ex[200];
  fields_example(ex, sizeof ex, fields, n);
  return refused("send_static",
                 the_run->real->send_static(self, child, fields, n), ex);
}

static int w_send_custom(c8y_plugin *self, const char *xid, const char *child,
                         const char *const *fields, size_t n) {
  char ex[260];
  snprintf(ex, 60, "s/uc/%s: ", xid ? xid : "(null)");
  fields_example(ex + strlen(ex), sizeof ex - strlen(ex), fields, n);
  return refused("send_custom",
                 the_run->real->send_custom(self, xid, child, fields, n), ex);
}

static int w_batch_add(c8y_batch *b, const char *fragment, const char *series,
                       double value, const char *unit) {
  char ex[200];
  snprintf(ex, sizeof ex, "%.60s.%.60s = %g", fragment ? fragment : "(null)",
           series ? series : "(null)", value);
  return refused("batch_add",
                 the_run->real->batch_add(b, fragment, series, value, unit),
                 ex);
}

static int w_batch_set_time(c8y_batch *b, int64_t unix_ms) {
  char ex[64];
  snprintf(ex, sizeof ex, "%lld", (long long)unix_ms);
  return refused("batch_set_time", the_run->real->batch_set_time(b, unix_ms),
                 ex);
}

static int w_batch_set_type(c8y_batch *b, const char *type) {
  char ex[80];
  snprintf(ex, sizeof ex, "%.60s", type ? type : "(null)");
  return refused("batch_set_type", the_run->real->batch_set_type(b, type), ex);
}

static int w_batch_set_child(c8y_batch *b, const char *child) {
  char ex[80];
  snprintf(ex, sizeof ex, "%.60s", child ? child : "(null)");
  return refused("batch_set_child", the_run->real->batch_set_child(b, child),
                 ex);
}

static int w_batch_commit(c8y_batch *b) {
  return refused("batch_commit", the_run->real->batch_commit(b),
                 "the batch's lines");
}

/* The kit has no tenant: platform_auth answers as an agent without a REST
 * client does (C8Y_EAUTH), and what the plugin would do with its own
 * connection is not checked. Said once. */
static int w_platform_auth(c8y_plugin *self, c8y_platform_auth *a) {
  run *r = the_run;
  pthread_mutex_lock(&r->mu);
  bool first = !r->platform_asked;
  r->platform_asked = true;
  pthread_mutex_unlock(&r->mu);
  if (first)
    note(r, "note",
         "the plugin asked for the platform's credentials (platform_auth) "
         "for %s: the kit has no tenant and answers as an agent without a "
         "REST client; the connection it would open is not checked",
         a && a->size >= sizeof *a && a->url ? a->url : "its connection");
  return r->real->platform_auth(self, a);
}

/* The agent's table, each slot the kit watches replaced by an observer
 * that calls the agent's own; transfers go to the kit's platform. */
static void build_api(run *r) {
  r->real = plugin_host_api();
  r->api = *r->real;
  c8y_api *a = &r->api;
  a->add_operation = w_add_operation;
  a->add_child_operation = w_add_child_operation;
  a->add_fragment_operation = w_add_fragment_operation;
  a->add_device_operation = w_add_device_operation;
  a->add_message_handler = w_add_message_handler;
  a->add_template_operation = w_add_template_operation;
  a->op_succeed = w_op_succeed;
  a->op_succeed_params = w_op_succeed_params;
  a->op_fail = w_op_fail;
  a->op_complete_on_reboot = w_op_complete_on_reboot;
  a->op_resume_after_restart = w_op_resume_after_restart;
  a->send_event = w_send_event;
  a->raise_alarm = w_raise_alarm;
  a->clear_alarm = w_clear_alarm;
  a->send_static = w_send_static;
  a->send_custom = w_send_custom;
  a->batch_add = w_batch_add;
  a->batch_set_time = w_batch_set_time;
  a->batch_set_type = w_batch_set_type;
  a->batch_set_child = w_batch_set_child;
  a->batch_commit = w_batch_commit;
  a->download = capture_download;
  a->upload = capture_upload;
  a->platform_auth = w_platform_auth;
}

/* ---- the capture's callbacks (main thread) ---- */

static bool is_status_line(const char *line) {
  return strncmp(line, "50", 2) == 0 && line[2] >= '1' && line[2] <= '7' &&
         line[3] == ',';
}

static void on_line(void *ctx, const char *topic, const char *line) {
  run *r = ctx;
  (void)topic;
  if (is_status_line(line))
    return;
  r->lines++;
  /* 118 (log types) and 119 (configuration types): valid parameters
   * name what the plugin announced. */
  if ((strncmp(line, "118,", 4) == 0 || strncmp(line, "119,", 4) == 0) &&
      r->hints_seen.n < 4) {
    smartrest_records rec;
    if (smartrest_decode(line, strlen(line), &rec) == 0) {
      if (rec.count == 1 && rec.items[0].nfields > 1 &&
          *rec.items[0].fields[1]) {
        strlist_add(&r->hints_seen, rec.items[0].fields[0]);
        strlist_add(&r->hints_seen, rec.items[0].fields[1]);
      }
      smartrest_records_free(&rec);
    }
  }
}

static void on_finished(void *ctx, const ops_outcome *o) {
  run *r = ctx;
  pthread_mutex_lock(&r->mu);
  if (r->current != NO_CASE) {
    case_state *st = &r->st[r->current];
    st->outcome = true;
    st->outcome_ok = o->ok;
    /* The agent ended it at its timeout before the plugin tried to
     * (completions are counted under mu before they reach the agent). */
    st->agent_gave_up =
        !o->ok && st->completions == 0 && o->reason &&
        strncmp(o->reason, "operation timed out after ", 26) == 0;
  }
  pthread_mutex_unlock(&r->mu);
}

/* ---- set-up ---- */

static int write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  int ok = fputs(text, f) >= 0;
  return fclose(f) == 0 && ok ? 0 : -1;
}

/* The platform's JSON channel has delivered something before: the agent
 * then expects the second copy of an operation that came on one channel
 * (send_twin). */
static void prime_json_channel(run *r) {
  char *doc = check_gen_settled_document(CHECK_DEVICE, &r->next_id);
  ops_handle_json(capture_ops(r->c), doc, strlen(doc));
  free(doc);
}

static int open_capture(run *r, char *err, size_t len) {
  capture_options co = {.device_id = CHECK_DEVICE,
                        .state_dir = r->state_dir,
                        .op_timeout_ms = (uint32_t)r->cfg.op_timeout_s * 1000u,
                        .platform_name = "c8y-plugin-check",
                        .ctx = r,
                        .on_line = on_line,
                        .on_finished = on_finished};
  int rc = capture_new(&co, &r->c, err, len);
  if (rc == C8Y_OK) {
    capture_add_download(r->c, CHECK_URL, r->binary);
    prime_json_channel(r);
  }
  return rc;
}

static int load_plugin(run *r, char *why, size_t len) {
  int rc = capture_load(r->c, r->o->plugin, &r->cfg, &r->api, NULL, why, len);
#if CHECK_RUN_ASAN
  /* LeakSanitizer reports at exit, when the agent has unloaded the
   * plugin: kept mapped, its frames still name it. (A restart then keeps
   * the plugin's static data; valgrind, with --keep-debuginfo, needs no
   * such help.) */
  void *keep = rc == C8Y_OK ? dlopen(r->o->plugin,
                                     RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)
                            : NULL;
  if (keep)
    dlclose(keep);
#endif
  capture_resume(r->c);
  return rc;
}

static void *no_work(void *arg) { return arg; }

/* The thread names of this process, for left-thread. */
static void thread_names(strlist *out) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (e->d_name[0] == '.')
      continue;
    char path[300], name[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (f) {
      if (fgets(name, sizeof name, f))
        name[strcspn(name, "\n")] = '\0';
      fclose(f);
    }
    strlist_add(out, name);
  }
  if (d)
    closedir(d);
}

/* ---- the steps ---- */

/* Its operation ended and every handler call returned; or it waits for a
 * reboot, which completes it: nothing the plugin does would. An operation
 * marked for resuming may still complete on its own: it waits like any
 * other, and the agent restarts only if it has not completed after
 * --wait (run_case). */
static bool case_settled(run *r, size_t ci) {
  pthread_mutex_lock(&r->mu);
  case_state *st = &r->st[ci];
  bool all_returned = st->returned == st->started;
  bool s = (st->outcome && all_returned) ||
           (st->reboot && !st->resume && st->started > 0 && all_returned);
  pthread_mutex_unlock(&r->mu);
  return s;
}

static bool messages_returned(run *r, size_t want) {
  pthread_mutex_lock(&r->mu);
  bool s = r->msg_returned >= want;
  pthread_mutex_unlock(&r->mu);
  return s;
}

/* Pumps until done(r, arg) or ms passed. */
static bool wait_for(run *r, long long ms, bool (*done)(run *, size_t),
                     size_t arg) {
  long long end = clock_mono_ms() + ms;
  for (;;) {
    capture_pump(r->c);
    if (done(r, arg))
      return true;
    long long left = end - clock_mono_ms();
    if (left <= 0)
      return false;
    capture_wait(r->c, left < 50 ? left : 50);
  }
}

static void feed(run *r, const check_case *k) {
  ops *o = capture_ops(r->c);
  if (k->line && k->channel != CHECK_RECORD)
    ops_handle_payload(o, k->line, strlen(k->line));
  if (k->json && k->channel != CHECK_RECORD)
    ops_handle_json(o, k->json, strlen(k->json));
  if (k->channel == CHECK_RECORD) {
    smartrest_records rec;
    if (smartrest_decode(k->line, strlen(k->line), &rec) == 0) {
      const reg_template_op *t =
          rec.count == 1 && rec.items[0].nfields > 0
              ? registry_find_template_op(capture_registry(r->c), k->xid,
                                          rec.items[0].fields[0])
              : NULL;
      if (t)
        ops_handle_template_record(o, t, &rec.items[0]);
      smartrest_records_free(&rec);
    }
    if (k->json) /* its JSON copy */
      ops_handle_json(o, k->json, strlen(k->json));
  }
  capture_pump(r->c);
}

/* The second copy of an operation that came on one channel, after it
 * ended: the platform sends an operation of a fragment with a SmartREST
 * template on both, and the agent, which expects it, drops it. Without it
 * the agent would take the next operation's copy for this one's. */
static void send_twin(run *r, const check_case *k) {
  bool line_only =
      (k->channel == CHECK_LINE || (k->channel == CHECK_RECORD && !k->json));
  char *copy = NULL;
  if (line_only) {
    copy =
        check_gen_twin_document(k->fragment, k->device, &r->hints, &r->next_id);
    ops_handle_json(capture_ops(r->c), copy, strlen(copy));
  } else if (k->channel == CHECK_JSON) {
    copy = check_gen_twin_line(k->fragment, k->device, &r->hints);
    if (copy) {
      ops_handle_payload(capture_ops(r->c), copy, strlen(copy));
    } else {
      /* a custom template of the fragment renders it instead */
      for (size_t i = 0; i + 3 <= r->template_ops.n; i += 3)
        if (strcmp(r->template_ops.v[i + 2], k->fragment) == 0) {
          const char *variant;
          char **f = check_gen_message_fields(0, &variant);
          smartrest_record rec = {0};
          char *fields[4] = {r->template_ops.v[i + 1], k->device, f[0], f[1]};
          rec.nfields = 4;
          rec.fields = fields;
          const reg_template_op *t = registry_find_template_op(
              capture_registry(r->c), r->template_ops.v[i],
              r->template_ops.v[i + 1]);
          if (t)
            ops_handle_template_record(capture_ops(r->c), t, &rec);
          free(f[0]);
          free(f[1]);
          free(f);
          break;
        }
    }
  }
  free(copy);
  /* and the line of its other template (528/529, 527/531) */
  copy = k->channel == CHECK_LINE || k->channel == CHECK_LINE_JSON
             ? check_gen_twin_template_line(k->line)
             : NULL;
  if (copy)
    ops_handle_payload(capture_ops(r->c), copy, strlen(copy));
  free(copy);
  pthread_mutex_lock(&r->mu);
  unsigned before = r->stray;
  pthread_mutex_unlock(&r->mu);
  capture_pump(r->c);
  pthread_mutex_lock(&r->mu);
  bool started = r->stray != before;
  pthread_mutex_unlock(&r->mu);
  if (started)
    note(r, "note",
         "the second copy of an operation of %s started the plugin's "
         "handler again: the agent did not take it for a copy",
         k->fragment);
}

/* The agent restarts (a reboot first: a new boot id): stop, a new engine
 * on the same state dir, the plugin loaded again, what it left resumed. */
static bool restart(run *r, bool reboot, const char *subject) {
  if (!capture_unload(r->c, LOADER_STOP_BUDGET_MS)) {
    finding(r, "blocked-worker", subject,
            "a callback did not return within %d ms of the agent's stop "
            "(for the restart): the agent abandons the plugin",
            LOADER_STOP_BUDGET_MS);
    r->blocked = true;
    r->abandoned = true;
    return false;
  }
  capture_free(r->c);
  r->c = NULL;
  if (reboot) {
    char id[64];
    snprintf(id, sizeof id, "c8y-plugin-check-boot-%lld\n", clock_mono_ms());
    if (write_file(r->boot_id_file, id) != 0)
      note(r, "note", "cannot write %s: the reboot is not simulated",
           r->boot_id_file);
  }
  char err[512];
  if (open_capture(r, err, sizeof err) != C8Y_OK) {
    note(r, "fatal", "restarting the agent: %s", err);
    return false;
  }
  int rc = load_plugin(r, err, sizeof err);
  if (rc != C8Y_OK) {
    finding(r, "restart", subject,
            "after a simulated agent %s the plugin did not load again: %s",
            reboot ? "reboot" : "restart", err);
    return false;
  }
  return true;
}

/* Case findings. A second completion is certain when it happens; whether
 * an operation the agent failed at its timeout is ever completed is known
 * only after fini, so it is a suspect until then (the parent reports
 * suspects as findings if the process dies before). */
static void case_findings(run *r, size_t ci, bool final) {
  check_case *k = &r->cases.v[ci];
  pthread_mutex_lock(&r->mu);
  case_state st = r->st[ci];
  r->st[ci].reported_estate = st.estate;
  pthread_mutex_unlock(&r->mu);
  if (st.started == 0 || st.blocked)
    return;
  char *subject = case_subject(k);
  if (st.estate > st.reported_estate)
    finding(r, "completed-twice", subject,
            "%d completion calls for one operation; %s returned C8Y_ESTATE "
            "(the operation was complete already%s)",
            st.completions, st.estate_fn,
            st.handler_rc == C8Y_OK || st.handler_rc < 0
                ? ": a handler that returns C8Y_OK or an error completes it"
                : "");
  if (st.bad_rc && !final)
    finding(r, "bad-return", subject,
            "the handler returned %d; the SDK defines C8Y_OK, C8Y_PENDING "
            "and negative errors",
            st.handler_rc);
  bool exempt = st.reboot_ever || st.resume_ever;
  char timeout[200];
  snprintf(timeout, sizeof timeout, "its timeout (%u s%s)",
           st.timeout_ms / 1000,
           st.kit_timeout ? ", given early by the kit after --wait" : "");
  bool never = st.completions == 0 && st.handler_rc == C8Y_PENDING && !exempt;
  if (!final && st.agent_gave_up && !exempt)
    record(r, "suspect", "timeout", subject,
           "still not complete after its timeout and the grace after "
           "op_cancelled: the agent failed it itself",
           (char *)NULL);
  if (final && never)
    finding(r, "never-completed", subject,
            "the handler returned C8Y_PENDING and nothing completed the "
            "operation: not within %s plus %d ms after op_cancelled (the "
            "agent failed it), not later, not in fini",
            timeout, r->cfg.stop_grace_ms);
  else if (final && st.agent_gave_up && !exempt)
    finding(r, "timeout", subject,
            "not complete %d ms after op_cancelled at %s, so the agent "
            "failed it itself; %s came only later (it returned "
            "C8Y_ETIMEDOUT)",
            r->cfg.stop_grace_ms, timeout, st.late_fn ? st.late_fn : "nothing");
  free(subject);
}

/* Runs one operation to its end. False: the worker is stuck (or the agent
 * could not restart), so no further step can run. */
static bool run_case(run *r, size_t ci) {
  check_case *k = &r->cases.v[ci];
  case_state *st = &r->st[ci];
  pthread_mutex_lock(&r->mu);
  r->current = ci;
  pthread_mutex_unlock(&r->mu);
  char *subject = case_subject(k);
  feed(r, k);
  bool go_on = true;
  for (int restarts = 0;; restarts++) {
    if (!wait_for(r, r->o->wait_ms, case_settled, ci)) {
      pthread_mutex_lock(&r->mu);
      bool started = st->started > 0, outcome = st->outcome;
      bool resume = st->resume && st->returned == st->started;
      uint32_t timeout = st->timeout_ms;
      pthread_mutex_unlock(&r->mu);
      if (resume && !outcome)
        goto waits; /* the restart it is waiting for, not its timeout */
      if (!started && !outcome) {
        note(r, "info",
             "%s: the agent did not hand it to the plugin within %d ms",
             subject, r->o->wait_ms);
        break;
      }
      if (!outcome) {
        /* Its timeout now: what the agent does when it passes. */
        st->kit_timeout = true;
        capture_advance(r->c, timeout);
        wait_for(r, r->cfg.stop_grace_ms + 1000, case_settled, ci);
      }
      pthread_mutex_lock(&r->mu);
      bool blocked = st->returned < st->started;
      st->blocked = blocked;
      pthread_mutex_unlock(&r->mu);
      if (blocked) {
        finding(r, "blocked-worker", subject,
                "the handler did not return within %d ms, nor within %d ms "
                "after op_cancelled: no other callback of the plugin can run",
                r->o->wait_ms, r->cfg.stop_grace_ms);
        r->blocked = true;
        go_on = false;
        break;
      }
      if (st->kit_timeout && !st->agent_gave_up)
        note(r, "info",
             "%s: still running after %d ms; completed after op_cancelled",
             subject, r->o->wait_ms);
    }
  waits:
    pthread_mutex_lock(&r->mu);
    bool waits = (st->reboot || st->resume) && !st->outcome;
    bool reboot = st->reboot && !st->resume;
    st->reboot = st->resume = false;
    pthread_mutex_unlock(&r->mu);
    if (!waits)
      break;
    if (restarts == 2) {
      note(r, "info", "%s: still waiting for a restart after 2 restarts",
           subject);
      break;
    }
    note(r, "info", "%s: waits for a %s: restarting the agent", subject,
         reboot ? "reboot" : "restart");
    if (!restart(r, reboot, subject)) {
      go_on = false;
      break;
    }
    if (reboot)
      break; /* the journal settled it at the start */
  }
  case_findings(r, ci, false);
  pthread_mutex_lock(&r->mu);
  r->current = NO_CASE;
  bool ended = st->outcome;
  pthread_mutex_unlock(&r->mu);
  if (go_on) {
    capture_reset_clock(r->c);
    if (ended)
      send_twin(r, k);
  }
  free(subject);
  return go_on;
}

static bool run_producer(run *r, size_t pi, int cycle) {
  registry *reg = capture_registry(r->c);
  reg_producer *prod = registry_producer_at(reg, pi);
  int rc;
  unsigned long long before = r->lines;
  if (!capture_run_producer(r->c, prod, r->o->wait_ms, &rc)) {
    char *subject = xprintf("producer %s (cycle %d)", prod->name, cycle + 1);
    finding(r, "blocked-worker", subject,
            "its callback did not return within %d ms: no other callback of "
            "the plugin can run",
            r->o->wait_ms);
    r->blocked = true;
    free(subject);
    return false;
  }
  if (rc < 0)
    note(r, "info", "producer %s (cycle %d) returned %s", prod->name, cycle + 1,
         status_str(rc));
  /* Its lines per cycle at its interval is the rate it keeps up (the kit
   * runs the cycles back to back; operations come in bursts, which the
   * agent lets pass). */
  unsigned long long lines = r->lines - before;
  double rate = (double)lines * 1000.0 / prod->interval_ms;
  if (!r->rate_reported)
    r->rate_reported =
        calloc(registry_producer_count(reg) + 1, sizeof *r->rate_reported);
  if (r->rate_reported && !r->rate_reported[pi] &&
      rate > (double)r->cfg.plugin_max_lines_per_s) {
    r->rate_reported[pi] = true;
    char *subject = xprintf("producer %s", prod->name);
    finding(r, "line-rate", subject,
            "%llu lines a cycle every %u ms is %.0f lines/s, over [agent] "
            "plugin_max_lines_per_s (%lld): once the burst allowance is "
            "spent the agent refuses them (C8Y_ERATE)",
            lines, prod->interval_ms, rate, r->cfg.plugin_max_lines_per_s);
    free(subject);
  }
  return true;
}

static bool run_message(run *r, const char *xid, const char *msgid,
                        size_t variant) {
  registry *reg = capture_registry(r->c);
  reg_message *m = registry_find_message(reg, xid, msgid);
  const char *vname;
  char **fields = check_gen_message_fields(variant, &vname);
  size_t n = 0;
  while (fields[n])
    n++;
  /* The job takes a record whose field 0 is the message id. */
  char **rec = calloc(n + 2, sizeof *rec);
  if (!rec || !m)
    abort();
  rec[0] = strdup(msgid);
  memcpy(rec + 1, fields, n * sizeof *fields);
  free(fields);
  pthread_mutex_lock(&r->mu);
  unsigned want = r->msg_returned + 1;
  pthread_mutex_unlock(&r->mu);
  if (plugin_host_queue_message(m->plugin, m, rec, n + 1) != 0)
    return true;
  if (wait_for(r, r->o->wait_ms, messages_returned, want))
    return true;
  char *subject = xprintf("message %s/%s [%s]", xid, msgid, vname);
  finding(r, "blocked-worker", subject,
          "its callback did not return within %d ms: no other callback of "
          "the plugin can run",
          r->o->wait_ms);
  r->blocked = true;
  free(subject);
  return false;
}

/* The devices a handler serves. */
static void devices_of(registry *reg, const reg_handler *h, strlist *out) {
  if (h->scope == REG_SCOPE_ROOT || h->scope == REG_SCOPE_ROOT_AND_OWN_CHILDREN)
    strlist_add(out, CHECK_DEVICE);
  if (h->scope == REG_SCOPE_CHILD) {
    strlist_add(out, h->child);
    return;
  }
  if (h->scope == REG_SCOPE_ROOT)
    return;
  for (size_t i = 0; i < registry_child_count(reg); i++) {
    reg_child *c = registry_child_at(reg, i);
    if (c && c->plugin == h->plugin)
      strlist_add(out, c->id);
  }
}

static void build_cases(run *r) {
  registry *reg = capture_registry(r->c);
  for (size_t i = 0; i + 1 < r->hints_seen.n; i += 2) {
    if (strcmp(r->hints_seen.v[i], "118") == 0 && !r->hints.log_type)
      r->hints.log_type = r->hints_seen.v[i + 1];
    if (strcmp(r->hints_seen.v[i], "119") == 0 && !r->hints.config_type)
      r->hints.config_type = r->hints_seen.v[i + 1];
  }
  r->hints.url = CHECK_URL;
  strlist seen = {0};
  for (size_t i = 0; i < registry_handler_count(reg); i++) {
    const reg_handler *h = registry_handler_at(reg, i);
    strlist devices = {0};
    devices_of(reg, h, &devices);
    for (size_t d = 0; d < devices.n; d++) {
      char *key = xprintf(
          "%s|%s", h->template_id ? h->template_id : h->fragment, devices.v[d]);
      bool dup = false;
      for (size_t s = 0; s < seen.n && !dup; s++)
        dup = strcmp(seen.v[s], key) == 0;
      if (!dup) {
        strlist_add(&seen, key);
        if (h->template_id)
          check_gen_template(&r->cases, h->template_id, devices.v[d], &r->hints,
                             &r->next_id);
        else
          check_gen_fragment(&r->cases, h->fragment, devices.v[d], &r->hints,
                             &r->next_id);
      }
      free(key);
    }
    strlist_free(&devices);
  }
  strlist_free(&seen);
  for (size_t i = 0; i + 3 <= r->template_ops.n; i += 3) {
    const char *xid = r->template_ops.v[i], *msgid = r->template_ops.v[i + 1],
               *fragment = r->template_ops.v[i + 2];
    if (registry_fragment_handler_for(reg, fragment, NULL))
      check_gen_record(&r->cases, xid, msgid, fragment, CHECK_DEVICE,
                       &r->next_id);
    for (size_t c = 0; c < registry_child_count(reg); c++) {
      reg_child *ch = registry_child_at(reg, c);
      if (ch && registry_fragment_handler_for(reg, fragment, ch->id))
        check_gen_record(&r->cases, xid, msgid, fragment, ch->id, &r->next_id);
    }
  }
  r->st = calloc(r->cases.n + 1, sizeof *r->st);
  if (!r->st)
    abort();
}

/* Processes whose parent is this one: a plugin's commands that outlived
 * fini. They are ended afterwards, as the agent ends them at its stop. */
static void left_processes(run *r) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  pid_t self = getpid();
  while (d && (e = readdir(d))) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0)
      continue;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *open = strchr(buf, '('), *close = strrchr(buf, ')');
    char state;
    long ppid;
    if (!open || !close || sscanf(close + 1, " %c %ld", &state, &ppid) != 2 ||
        ppid != self)
      continue;
    *close = '\0';
    char *subject = xprintf("process %ld (%s)", pid, open + 1);
    if (state == 'Z')
      finding(r, "left-process", subject,
              "exited but was never reaped (waitpid) by the plugin");
    else
      finding(r, "left-process", subject,
              "still running after fini; the agent kills it at its stop");
    free(subject);
    kill((pid_t)pid, SIGKILL);
  }
  if (d)
    closedir(d);
}

/* The names in `after` that `before` does not account for (each name of
 * before matches once); returns how many, their indexes in extra. */
static size_t unmatched_threads(const strlist *before, const strlist *after,
                                size_t *extra) {
  bool *used = calloc(before->n + 1, sizeof *used);
  size_t n = 0;
  for (size_t i = 0; i < after->n; i++) {
    bool found = false;
    for (size_t k = 0; k < before->n && !found; k++)
      if (used && !used[k] && strcmp(before->v[k], after->v[i]) == 0)
        used[k] = found = true;
    if (!found)
      extra[n++] = i;
  }
  free(used);
  return n;
}

/* A thread the plugin joined may still be listed for a moment: the kernel
 * (and qemu-user, sooner) wakes pthread_join when the thread clears its tid,
 * before the thread leaves /proc/self/task. So a thread counts as left only
 * when it is still there after LEFT_THREAD_GRACE_MS. */
#define LEFT_THREAD_GRACE_MS 2000

static void left_threads(run *r, const strlist *before) {
  long long until = clock_mono_ms() + LEFT_THREAD_GRACE_MS;
  for (;;) {
    strlist after = {0};
    thread_names(&after);
    size_t *extra = calloc(after.n + 1, sizeof *extra);
    size_t n = extra ? unmatched_threads(before, &after, extra) : 0;
    if (n > 0 && clock_mono_ms() < until) {
      free(extra);
      strlist_free(&after);
      struct timespec ts = {0, 10 * 1000000L};
      nanosleep(&ts, NULL);
      continue;
    }
    for (size_t i = 0; i < n; i++) {
      char *subject = xprintf("thread '%s'", after.v[extra[i]]);
      finding(r, "left-thread", subject,
              "still running after fini returned; fini must join the "
              "threads the plugin started");
      free(subject);
    }
    free(extra);
    strlist_free(&after);
    return;
  }
}

static void upstream_findings(run *r) {
  for (size_t i = 0; i < r->nrefusals; i++) {
    refusal *e = &r->refusals[i];
    const char *check = e->rc == C8Y_ETOOBIG ? "line-too-long"
                        : e->rc == C8Y_ERATE || e->rc == C8Y_EAGAIN
                            ? "line-rate"
                            : "line-refused";
    char *subject = xprintf("%s(%s)", e->fn, e->example ? e->example : "");
    finding(r, check, subject, "refused %u time%s with %s: %s", e->count,
            e->count == 1 ? "" : "s",
            e->rc == C8Y_ETOOBIG  ? "C8Y_ETOOBIG"
            : e->rc == C8Y_ERATE  ? "C8Y_ERATE"
            : e->rc == C8Y_EAGAIN ? "C8Y_EAGAIN"
            : e->rc == C8Y_EINVAL ? "C8Y_EINVAL"
                                  : "an error",
            status_str(e->rc));
    free(subject);
  }
}

static void free_run(run *r) {
  check_cases_free(&r->cases);
  free(r->st);
  free(r->handles);
  free(r->rate_reported);
  while (r->cbs) {
    kit_cb *next = r->cbs->next;
    free(r->cbs);
    r->cbs = next;
  }
  for (size_t i = 0; i < r->nrefusals; i++)
    free(r->refusals[i].example);
  free(r->refusals);
  strlist_free(&r->template_ops);
  strlist_free(&r->messages);
  strlist_free(&r->hints_seen);
  if (r->cfg_loaded)
    config_free(&r->cfg);
  free(r->cfg_path);
  free(r->state_dir);
  free(r->binary);
  free(r->boot_id_file);
  free(r->plugin_name);
}

/* After a stuck callback the next agent starts at the first step of
 * another producer, message handler or operation (what, device): the same
 * callback would only block again. */
static size_t skip_same(run *r, size_t step, size_t first, size_t count,
                        size_t per, size_t idx, const char *what) {
  size_t next = first + (idx / per + 1) * per;
  if (next > first + count)
    next = first + count;
  if (next > step + 1)
    note(r, "note",
         "%zu more step(s) of %s skipped: the same callback would "
         "block again",
         next - step - 1, what);
  return next;
}

/* The steps in a fixed order, so a run after a crash can skip to the one
 * after it: producer cycles, message records, operations. */
static void run_steps(run *r) {
  registry *reg = capture_registry(r->c);
  size_t nprod = registry_producer_count(reg);
  size_t nmsg = r->messages.n / 2, nvar = check_gen_message_variants();
  size_t cycles = (size_t)r->o->cycles;
  size_t first_msg = nprod * cycles, first_case = first_msg + nmsg * nvar;
  r->nsteps = first_case + r->cases.n;
  r->next_step = r->nsteps;
  char n[32];
  for (size_t step = r->o->from; step < r->nsteps; step++) {
    snprintf(n, sizeof n, "%zu", step);
    if (step < first_msg) {
      size_t p = step / cycles, cyc = step % cycles;
      const char *name = registry_producer_at(reg, p)->name;
      char *label = xprintf("producer %s, cycle %zu", name, cyc + 1);
      record(r, "step", n, "producer", label, (char *)NULL);
      free(label);
      if (!run_producer(r, p, (int)cyc)) {
        char *what = xprintf("producer %s", name);
        r->next_step = skip_same(r, step, 0, first_msg, cycles, step, what);
        free(what);
        return;
      }
    } else if (step < first_case) {
      size_t m = (step - first_msg) / nvar, v = (step - first_msg) % nvar;
      const char *vname;
      char **f = check_gen_message_fields(v, &vname);
      for (size_t k = 0; f[k]; k++)
        free(f[k]);
      free(f);
      char *label = xprintf("message %s/%s [%s]", r->messages.v[2 * m],
                            r->messages.v[2 * m + 1], vname);
      record(r, "step", n, "message", label, (char *)NULL);
      free(label);
      if (!run_message(r, r->messages.v[2 * m], r->messages.v[2 * m + 1], v)) {
        char *what = xprintf("message %s/%s", r->messages.v[2 * m],
                             r->messages.v[2 * m + 1]);
        r->next_step = skip_same(r, step, first_msg, nmsg * nvar, nvar,
                                 step - first_msg, what);
        free(what);
        return;
      }
    } else {
      size_t ci = step - first_case;
      check_case *k = &r->cases.v[ci];
      char *label = case_subject(k);
      record(r, "step", n, "operation", label, (char *)NULL);
      free(label);
      if (!run_case(r, ci)) {
        size_t j = ci + 1;
        while (j < r->cases.n && strcmp(r->cases.v[j].what, k->what) == 0 &&
               strcmp(r->cases.v[j].device, k->device) == 0)
          j++;
        if (j > ci + 1)
          note(r, "note",
               "%zu more operation(s) of %s on %s skipped: its handler "
               "would block again",
               j - ci - 1, k->what, k->device);
        r->next_step = first_case + j;
        return;
      }
    }
  }
}

/* Static, not on the stack: when the plugin is abandoned the run's memory
 * stays, reachable, for its still running thread. */
static run the_run_storage;

int check_run(const check_options *o) {
  run *r = &the_run_storage;
  *r = (run){.o = o, .current = NO_CASE, .next_id = 1000};
  the_run = r;
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->report_mu, NULL);
  r->report = fdopen(o->report_fd, "w");
  if (!r->report)
    return 2;
  int status = 2;
  char err[1024];
  r->state_dir = xprintf("%s/state.%d", o->work_dir, o->run);
  r->binary = xprintf("%s/binary", o->work_dir);
  r->boot_id_file = xprintf("%s/boot_id", o->work_dir);
  if (o->config) {
    r->cfg_path = strdup(o->config);
  } else {
    r->cfg_path = xprintf("%s/agent.ini", o->work_dir);
    char *ini = xprintf("[device]\nid = " CHECK_DEVICE "\n");
    int w = write_file(r->cfg_path, ini);
    free(ini);
    if (w != 0) {
      note(r, "fatal", "cannot write %s: %s", r->cfg_path, strerror(errno));
      goto out;
    }
  }
  if (config_load(r->cfg_path, &r->cfg, err, sizeof err) != 0) {
    note(r, "fatal", "%s", err);
    goto out;
  }
  r->cfg_loaded = true;
  if (write_file(r->binary, "c8y-plugin-check: a file the platform serves\n")) {
    note(r, "fatal", "cannot write %s: %s", r->binary, strerror(errno));
    goto out;
  }
  if (open_capture(r, err, sizeof err) != C8Y_OK) {
    note(r, "fatal", "%s", err);
    goto out;
  }
  build_api(r);
  /* A sanitizer's runtime starts its own thread with the first one the
   * process creates: that one is made here, before the count. */
  pthread_t warm;
  if (pthread_create(&warm, NULL, no_work, NULL) == 0)
    pthread_join(warm, NULL);
  strlist threads_before = {0};
  thread_names(&threads_before);
  if (load_plugin(r, err, sizeof err) != C8Y_OK) {
    note(r, "fatal", "the agent does not load %s: %s", o->plugin, err);
    strlist_free(&threads_before);
    goto out;
  }
  c8y_plugin *p = capture_plugin(r->c);
  r->plugin_name = strdup(p->name);
  record(r, "plugin", p->name, p->version, (char *)NULL);
  build_cases(r);
  run_steps(r);
  /* Late completions (a second one from a plugin thread) arrive now. */
  long long end = clock_mono_ms() + SETTLE_MS;
  while (clock_mono_ms() < end) {
    capture_pump(r->c);
    capture_wait(r->c, 20);
  }
  char stop_step[32];
  snprintf(stop_step, sizeof stop_step, "%zu", r->nsteps);
  record(r, "step", stop_step, "stop", "the agent's stop (fini)", (char *)NULL);
  /* A step that blocked the worker was reported; the stop that then
   * abandons the plugin is its consequence. */
  bool stuck = r->blocked;
  if (!r->abandoned && !capture_unload(r->c, LOADER_STOP_BUDGET_MS)) {
    if (!stuck)
      finding(r, "blocked-worker", "the agent's stop",
              "a callback did not return within %d ms of the stop: the "
              "agent abandons the plugin (fini is not called, the .so stays "
              "loaded)",
              LOADER_STOP_BUDGET_MS);
    r->abandoned = true;
  }
  for (size_t ci = 0; ci < r->cases.n; ci++)
    case_findings(r, ci, true);
  upstream_findings(r);
  if (!r->abandoned) {
    left_threads(r, &threads_before);
    left_processes(r);
  }
  strlist_free(&threads_before);
  if (r->abandoned) {
    record(r, "abandoned", (char *)NULL);
  } else {
    capture_free(r->c);
    r->c = NULL;
  }
  char steps[32], next[32];
  snprintf(steps, sizeof steps, "%zu", r->nsteps);
  snprintf(next, sizeof next, "%zu", r->next_step);
  record(r, "done", steps, next, (char *)NULL);
  status = 0;
out:
  if (r->c && !r->abandoned)
    capture_free(r->c);
  if (!r->abandoned)
    free_run(r);
  fclose(r->report);
  return status;
}
