/* fake_api: a fake c8y-agent host for plugin unit tests (see fake_api.h).
 *
 * Everything is guarded by one mutex because several api functions are
 * [any thread] and operation handlers run on their own thread, as they do on
 * the agent's per-plugin worker. Per-plugin serialization is kept: before a
 * producer, message handler, operation or fini runs, the previous operation
 * handler must have returned. */
#include "fake_api.h"

#include "http.h"
#include "ops.h"
#include "proto.h"
#include "smartrest.h"
#include "status.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define FAKE_MAX_LINE 16000

typedef struct strvec {
  char **v;
  size_t n, cap;
} strvec;

typedef struct producer {
  char *name;
  uint32_t interval_ms;
  c8y_produce_fn fn;
  void *ud;
} producer;

typedef struct op_handler {
  char *template_id;
  uint32_t timeout_ms;
  c8y_operation_fn fn;
  void *ud;
} op_handler;

typedef struct msg_handler {
  char *xid, *msg_id;
  c8y_message_fn fn;
  void *ud;
} msg_handler;

struct c8y_plugin {
  fake_host *h;
};

struct c8y_batch {
  fake_host *h;
  const char *producer;
  bool active;
  char *type, *child;
  int64_t time_ms;
  strvec fields; /* fragment, series, value, unit per sample */
};

/* Operations stay allocated until the host is freed: a plugin may still
 * hold a pending one when the test dispatches the next. */
struct c8y_operation {
  fake_host *h;
  c8y_operation *older;  /* list of all operations, newest first */
  smartrest_records rec; /* rec.items[0]: template, device, fields... */
  const char *fragment;
  bool completed, cancelled, reboot, released;
  bool resume, resumed, rebooted; /* ABI 1.1 resume slots */
  fake_op_state state;
  char *detail;
  strvec params;
};

struct c8y_message {
  smartrest_record *rec;
};

struct fake_host {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct c8y_plugin self;
  char *device_id, *state_dir;
  strvec cfg;      /* key, value pairs; later entries win */
  strvec cfg_read; /* keys the plugin asked for */

  void *dl;
  c8y_plugin_info info;
  bool loaded, in_init;
  void *user_data;

  producer *producers;
  size_t nproducers;
  op_handler *ops;
  size_t nops;
  msg_handler *msgs;
  size_t nmsgs;
  strvec children; /* the queued 101 lines' fields: id, name, type */

  strvec lines, logs;

  /* ABI 1.1 transfers (fake_host_enable_transfers) */
  bool transfers;
  strvec downloads; /* url, path pairs */
  strvec uploads;   /* type, child, file_name, content_type, text, content */
  size_t ndownload_calls;
  int xfer_fail;
  char *xfer_reason;

  /* The last operation (NULL before the first). */
  c8y_operation *op;
  bool thread_live, handler_returned;
  pthread_t thread;
  op_handler *handler;

  /* ABI 1.1 resume (fake_host_set_resumed) and an ABI 1.0 table
   * (fake_host_set_abi_1_0). */
  bool next_resumed, next_rebooted;
  bool use_1_0;
  c8y_api api_1_0;
};

/* ---- small helpers --------------------------------------------------------
 */

static char *xstrdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d) {
    fputs("fake_api: out of memory\n", stderr);
    abort();
  }
  return d;
}

static void sv_push(strvec *s, const char *str) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    char **v = realloc(s->v, cap * sizeof *v);
    if (!v)
      abort();
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = xstrdup(str);
}

static void sv_clear(strvec *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->v[i]);
  s->n = 0;
}

static void sv_free(strvec *s) {
  sv_clear(s);
  free(s->v);
  s->v = NULL;
  s->cap = 0;
}

static bool sv_has(const strvec *s, const char *str) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->v[i], str) == 0)
      return true;
  return false;
}

static bool empty(const char *s) { return s == NULL || *s == '\0'; }

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *level_name(c8y_log_level l) {
  switch (l) {
  case C8Y_LOG_ERROR:
    return "error";
  case C8Y_LOG_WARNING:
    return "warning";
  case C8Y_LOG_NOTICE:
    return "notice";
  case C8Y_LOG_INFO:
    return "info";
  case C8Y_LOG_DEBUG:
    return "debug";
  }
  return "unknown";
}

static void host_vlog(fake_host *h, c8y_log_level level, const char *fmt,
                      va_list ap) C8Y_PRINTF(3, 0);
static void host_vlog(fake_host *h, c8y_log_level level, const char *fmt,
                      va_list ap) {
  char text[4096];
  vsnprintf(text, sizeof text, fmt, ap);
  char line[4200];
  snprintf(line, sizeof line, "%s %s", level_name(level), text);
  pthread_mutex_lock(&h->mu);
  sv_push(&h->logs, line);
  pthread_mutex_unlock(&h->mu);
  fprintf(stderr, "# [fake:%s] %s\n", h->info.name ? h->info.name : "-", line);
}

static void host_log(fake_host *h, c8y_log_level level, const char *fmt, ...)
    C8Y_PRINTF(3, 4);
static void host_log(fake_host *h, c8y_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  host_vlog(h, level, fmt, ap);
  va_end(ap);
}

/* Records "topic|line". */
static void record_raw(fake_host *h, const char *topic, const char *line) {
  char *rec = NULL;
  if (asprintf(&rec, "%s|%s", topic, line) < 0)
    abort();
  pthread_mutex_lock(&h->mu);
  sv_push(&h->lines, rec);
  pthread_mutex_unlock(&h->mu);
  free(rec);
}

/* Encodes fields as one line and records it, as the agent queues it. */
static int record_line(fake_host *h, const char *topic,
                       const char *const *fields, size_t n) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  int rc = smartrest_encode_line(&b, fields, n) == 0 ? C8Y_OK : C8Y_ENOMEM;
  if (rc == C8Y_OK && b.len > FAKE_MAX_LINE)
    rc = C8Y_ETOOBIG;
  if (rc == C8Y_OK)
    record_raw(h, topic, b.data ? b.data : "");
  smartrest_buf_free(&b);
  return rc;
}

/* Topic segments must not carry MQTT wildcards or separators. */
static bool valid_id(const char *s) {
  if (empty(s))
    return false;
  for (; *s; s++)
    if (*s == '/' || *s == '+' || *s == '#' || (unsigned char)*s < 0x20)
      return false;
  return true;
}

static void make_topic(char *out, size_t n, const char *base,
                       const char *child) {
  if (child)
    snprintf(out, n, "%s/%s", base, child);
  else
    snprintf(out, n, "%s", base);
}

/* ---- api: misc ------------------------------------------------------------
 */

static void api_log(c8y_plugin *self, c8y_log_level level, const char *fmt, ...)
    C8Y_PRINTF(3, 4);
static void api_log(c8y_plugin *self, c8y_log_level level, const char *fmt,
                    ...) {
  va_list ap;
  va_start(ap, fmt);
  host_vlog(self->h, level, fmt, ap);
  va_end(ap);
}

static const char *api_device_id(c8y_plugin *self) {
  return self->h->device_id;
}

static const char *api_state_dir(c8y_plugin *self) {
  fake_host *h = self->h;
  if (!h->state_dir)
    return NULL;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s", h->state_dir);
  for (char *p = path + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      mkdir(path, 0700);
      *p = '/';
    }
  }
  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
    host_log(h, C8Y_LOG_ERROR, "state_dir: %s: %s", path, strerror(errno));
    return NULL;
  }
  return h->state_dir;
}

/* ---- api: config ----------------------------------------------------------
 */

static const char *cfg_lookup(fake_host *h, const char *key) {
  pthread_mutex_lock(&h->mu);
  if (!sv_has(&h->cfg_read, key))
    sv_push(&h->cfg_read, key);
  const char *v = NULL;
  for (size_t i = h->cfg.n; i >= 2; i -= 2)
    if (strcmp(h->cfg.v[i - 2], key) == 0) {
      v = h->cfg.v[i - 1];
      break;
    }
  pthread_mutex_unlock(&h->mu);
  return v;
}

static const char *api_config_string(c8y_plugin *self, const char *key,
                                     const char *fallback) {
  if (empty(key))
    return fallback;
  const char *v = cfg_lookup(self->h, key);
  return v ? v : fallback;
}

static int api_config_int(c8y_plugin *self, const char *key, int64_t fallback,
                          int64_t *out) {
  if (empty(key) || !out)
    return C8Y_EINVAL;
  *out = fallback;
  const char *v = cfg_lookup(self->h, key);
  if (!v)
    return C8Y_OK;
  char *end;
  errno = 0;
  long long n = strtoll(v, &end, 10);
  if (end == v || *end != '\0' || isspace((unsigned char)*v)) {
    host_log(self->h, C8Y_LOG_ERROR, "%s: not an integer: '%s'", key, v);
    return C8Y_EINVAL;
  }
  if (errno == ERANGE) {
    host_log(self->h, C8Y_LOG_ERROR, "%s: out of range: '%s'", key, v);
    return C8Y_EINVAL;
  }
  *out = n;
  return C8Y_OK;
}

static int api_config_bool(c8y_plugin *self, const char *key, int fallback,
                           int *out) {
  if (empty(key) || !out)
    return C8Y_EINVAL;
  *out = fallback;
  const char *v = cfg_lookup(self->h, key);
  if (!v)
    return C8Y_OK;
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0) {
      *out = 1;
      return C8Y_OK;
    }
    if (strcasecmp(v, no[i]) == 0) {
      *out = 0;
      return C8Y_OK;
    }
  }
  host_log(self->h, C8Y_LOG_ERROR,
           "%s: not a boolean (true/false/yes/no/on/off/1/0): '%s'", key, v);
  return C8Y_EINVAL;
}

/* ---- api: registration ----------------------------------------------------
 */

static int api_add_producer(c8y_plugin *self, const char *name,
                            uint32_t interval_ms, c8y_produce_fn fn,
                            void *user_data) {
  fake_host *h = self->h;
  if (!h->in_init)
    return C8Y_ESTATE;
  if (empty(name) || !fn || interval_ms == 0)
    return C8Y_EINVAL;
  for (size_t i = 0; i < h->nproducers; i++)
    if (strcmp(h->producers[i].name, name) == 0)
      return C8Y_EEXIST;
  producer *p = realloc(h->producers, (h->nproducers + 1) * sizeof *p);
  if (!p)
    return C8Y_ENOMEM;
  h->producers = p;
  p[h->nproducers++] = (producer){xstrdup(name), interval_ms, fn, user_data};
  return C8Y_OK;
}

static int api_add_operation(c8y_plugin *self, const char *template_id,
                             uint32_t timeout_ms, c8y_operation_fn fn,
                             void *user_data) {
  fake_host *h = self->h;
  if (!h->in_init)
    return C8Y_ESTATE;
  if (!valid_id(template_id) || strchr(template_id, ',') || !fn)
    return C8Y_EINVAL;
  for (size_t i = 0; i < h->nops; i++)
    if (strcmp(h->ops[i].template_id, template_id) == 0)
      return C8Y_EEXIST;
  op_handler *o = realloc(h->ops, (h->nops + 1) * sizeof *o);
  if (!o)
    return C8Y_ENOMEM;
  h->ops = o;
  o[h->nops++] = (op_handler){xstrdup(template_id), timeout_ms, fn, user_data};
  return C8Y_OK;
}

static int api_add_message_handler(c8y_plugin *self, const char *xid,
                                   const char *message_id, c8y_message_fn fn,
                                   void *user_data) {
  fake_host *h = self->h;
  if (!h->in_init)
    return C8Y_ESTATE;
  if (!valid_id(xid) || empty(message_id) || !fn)
    return C8Y_EINVAL;
  for (size_t i = 0; i < h->nmsgs; i++)
    if (strcmp(h->msgs[i].xid, xid) == 0 &&
        strcmp(h->msgs[i].msg_id, message_id) == 0)
      return C8Y_EEXIST;
  msg_handler *m = realloc(h->msgs, (h->nmsgs + 1) * sizeof *m);
  if (!m)
    return C8Y_ENOMEM;
  h->msgs = m;
  m[h->nmsgs++] =
      (msg_handler){xstrdup(xid), xstrdup(message_id), fn, user_data};
  return C8Y_OK;
}

static int api_add_child(c8y_plugin *self, const char *child_id,
                         const char *name, const char *type) {
  fake_host *h = self->h;
  if (!h->in_init)
    return C8Y_ESTATE;
  if (!valid_id(child_id) || strcmp(child_id, h->device_id) == 0)
    return C8Y_EINVAL;
  for (size_t i = 0; i < h->children.n; i += 3)
    if (strcmp(h->children.v[i], child_id) == 0)
      return C8Y_EEXIST;
  sv_push(&h->children, child_id);
  sv_push(&h->children, name ? name : "");
  sv_push(&h->children, type ? type : "");
  return C8Y_OK;
}

/* ---- api: batches ----------------------------------------------------------
 */

typedef struct flush_ctx {
  fake_host *h;
  const char *topic;
} flush_ctx;

static int emit_line(void *ctx, const char *line) {
  flush_ctx *f = ctx;
  record_raw(f->h, f->topic, line);
  return 0;
}

/* The agent's own encoder: 1 sample -> 200; more -> 201 lines of one type,
 * none longer than the limit. */
static int batch_flush(fake_host *h, const c8y_batch *b, const char *topic) {
  char when[40];
  smartrest_format_time(b->time_ms, when, sizeof when);
  flush_ctx ctx = {h, topic};
  int rc = smartrest_encode_measurements(
      (const char *const *)b->fields.v, b->fields.n / 4,
      b->type ? b->type : b->producer, when, FAKE_MAX_LINE, emit_line, &ctx);
  if (rc == C8Y_ENOMEM)
    abort();
  return rc;
}

static int api_batch_add(c8y_batch *b, const char *fragment, const char *series,
                         double value, const char *unit) {
  if (!b || empty(fragment) || empty(series) || !isfinite(value))
    return C8Y_EINVAL;
  if (!b->active)
    return C8Y_ESTATE;
  char num[64];
  smartrest_format_value(value, num, sizeof num);
  sv_push(&b->fields, fragment);
  sv_push(&b->fields, series);
  sv_push(&b->fields, num);
  sv_push(&b->fields, unit ? unit : "");
  return C8Y_OK;
}

static int api_batch_set_time(c8y_batch *b, int64_t unix_ms) {
  if (!b || unix_ms <= 0)
    return C8Y_EINVAL;
  if (!b->active)
    return C8Y_ESTATE;
  b->time_ms = unix_ms;
  return C8Y_OK;
}

static int api_batch_set_type(c8y_batch *b, const char *type) {
  if (!b || empty(type))
    return C8Y_EINVAL;
  if (!b->active)
    return C8Y_ESTATE;
  free(b->type);
  b->type = xstrdup(type);
  return C8Y_OK;
}

static int api_batch_set_child(c8y_batch *b, const char *child_id) {
  if (!b || (child_id && !valid_id(child_id)))
    return C8Y_EINVAL;
  if (!b->active)
    return C8Y_ESTATE;
  free(b->child);
  b->child = child_id ? xstrdup(child_id) : NULL;
  return C8Y_OK;
}

/* ---- api: upstream data -----------------------------------------------------
 */

static int api_send_event(c8y_plugin *self, const char *child_id,
                          const char *type, const char *text, int64_t time_ms) {
  if (empty(type) || !text || time_ms < 0 || (child_id && !valid_id(child_id)))
    return C8Y_EINVAL;
  char topic[512], tbuf[40];
  make_topic(topic, sizeof topic, "s/us", child_id);
  const char *f[4] = {"400", type, text, tbuf};
  if (time_ms > 0)
    smartrest_format_time(time_ms, tbuf, sizeof tbuf);
  return record_line(self->h, topic, f, time_ms > 0 ? 4 : 3);
}

static int api_raise_alarm(c8y_plugin *self, const char *child_id,
                           c8y_severity severity, const char *type,
                           const char *text) {
  if (empty(type) || severity < C8Y_CRITICAL || severity > C8Y_WARNING ||
      (child_id && !valid_id(child_id)))
    return C8Y_EINVAL;
  char topic[512], sev[8];
  make_topic(topic, sizeof topic, "s/us", child_id);
  snprintf(sev, sizeof sev, "%d", (int)severity);
  const char *f[3] = {sev, type, text ? text : ""};
  return record_line(self->h, topic, f, 3);
}

static int api_clear_alarm(c8y_plugin *self, const char *child_id,
                           const char *type) {
  if (empty(type) || (child_id && !valid_id(child_id)))
    return C8Y_EINVAL;
  char topic[512];
  make_topic(topic, sizeof topic, "s/us", child_id);
  const char *f[2] = {"306", type};
  return record_line(self->h, topic, f, 2);
}

static int api_send_static(c8y_plugin *self, const char *child_id,
                           const char *const *fields, size_t nfields) {
  if (!fields || nfields == 0 || empty(fields[0]) ||
      strspn(fields[0], "0123456789") != strlen(fields[0]) ||
      fields[0][0] == '5' || (child_id && !valid_id(child_id)))
    return C8Y_EINVAL; /* 5xx: the agent owns the operation lifecycle */
  char topic[512];
  make_topic(topic, sizeof topic, "s/us", child_id);
  return record_line(self->h, topic, fields, nfields);
}

static int api_send_custom(c8y_plugin *self, const char *xid,
                           const char *child_id, const char *const *fields,
                           size_t nfields) {
  if (!valid_id(xid) || !fields || nfields == 0 || empty(fields[0]) ||
      (child_id && !valid_id(child_id)))
    return C8Y_EINVAL;
  char base[300], topic[600];
  snprintf(base, sizeof base, "s/uc/%s", xid);
  make_topic(topic, sizeof topic, base, child_id);
  return record_line(self->h, topic, fields, nfields);
}

/* ---- api: operations --------------------------------------------------------
 */

static const smartrest_record *op_rec(const c8y_operation *op) {
  return &op->rec.items[0];
}

static const char *api_op_template(const c8y_operation *op) {
  return op_rec(op)->fields[0];
}

static const char *api_op_fragment(const c8y_operation *op) {
  return op->fragment;
}

static const char *api_op_device(const c8y_operation *op) {
  return op_rec(op)->fields[1];
}

static size_t api_op_field_count(const c8y_operation *op) {
  return op_rec(op)->nfields - 2;
}

static const char *api_op_field(const c8y_operation *op, size_t index) {
  if (index >= api_op_field_count(op))
    return NULL;
  return op_rec(op)->fields[index + 2];
}

/* Records the outcome under h->mu. */
static int op_finish(c8y_operation *op, fake_op_state st, const char *detail,
                     const char *const *params, size_t nparams) {
  fake_host *h = op->h;
  pthread_mutex_lock(&h->mu);
  int rc = C8Y_OK;
  if (op->completed) {
    rc = C8Y_ESTATE;
  } else if (op->cancelled) {
    op->completed = true;
    op->released = true;
    rc = C8Y_ETIMEDOUT;
  } else {
    op->completed = true;
    op->released = true;
    op->state = st;
    free(op->detail);
    op->detail = xstrdup(detail);
    sv_clear(&op->params);
    for (size_t i = 0; i < nparams; i++)
      sv_push(&op->params, params[i]);
  }
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  if (rc == C8Y_ESTATE)
    host_log(h, C8Y_LOG_ERROR,
             "fake_host: operation completed twice or after release");
  return rc;
}

static int api_op_succeed(c8y_operation *op, const char *result) {
  if (!op)
    return C8Y_EINVAL;
  const char *p[1] = {result};
  return op_finish(op, FAKE_OP_SUCCEEDED, result, p, result ? 1 : 0);
}

static int api_op_succeed_params(c8y_operation *op, const char *const *params,
                                 size_t nparams) {
  if (!op || (nparams && !params))
    return C8Y_EINVAL;
  for (size_t i = 0; i < nparams; i++)
    if (!params[i])
      return C8Y_EINVAL;
  return op_finish(op, FAKE_OP_SUCCEEDED, nparams ? params[0] : "", params,
                   nparams);
}

static int api_op_fail(c8y_operation *op, const char *reason) {
  if (!op)
    return C8Y_EINVAL;
  return op_finish(op, FAKE_OP_FAILED, reason ? reason : "", NULL, 0);
}

static int api_op_cancelled(const c8y_operation *op) {
  fake_host *h = op->h;
  pthread_mutex_lock(&h->mu);
  int c = op->cancelled;
  pthread_mutex_unlock(&h->mu);
  return c;
}

static int api_op_resume_after_restart(c8y_operation *op) {
  fake_host *h = op->h;
  pthread_mutex_lock(&h->mu);
  int rc = C8Y_OK;
  if (op->completed)
    rc = C8Y_ESTATE;
  else
    op->resume = true;
  pthread_mutex_unlock(&h->mu);
  return rc;
}

static int api_op_resumed(const c8y_operation *op) { return op->resumed; }
static int api_op_rebooted(const c8y_operation *op) {
  return op->resumed && op->rebooted;
}

static int api_op_complete_on_reboot(c8y_operation *op) {
  fake_host *h = op->h;
  pthread_mutex_lock(&h->mu);
  int rc = C8Y_OK;
  if (op->completed)
    rc = C8Y_ESTATE;
  else
    op->reboot = true;
  pthread_mutex_unlock(&h->mu);
  return rc;
}

/* ---- api: messages ----------------------------------------------------------
 */

static const char *api_msg_id(const c8y_message *msg) {
  return msg->rec->fields[0];
}

static size_t api_msg_field_count(const c8y_message *msg) {
  return msg->rec->nfields - 1;
}

static const char *api_msg_field(const c8y_message *msg, size_t index) {
  if (index >= api_msg_field_count(msg))
    return NULL;
  return msg->rec->fields[index + 1];
}

/* ---- api: transfers (ABI 1.1, opt-in) -----------------------------------
 */

#define UPLOAD_FIELDS 6

static int xfer_failed(fake_host *h, char *err, size_t len, long *code) {
  pthread_mutex_lock(&h->mu);
  int rc = h->xfer_fail;
  if (rc)
    snprintf(err, len, "%s", h->xfer_reason ? h->xfer_reason : "");
  pthread_mutex_unlock(&h->mu);
  if (rc == C8Y_EHTTP || rc == C8Y_EAUTH)
    *code = rc == C8Y_EAUTH ? 401 : 500;
  return rc;
}

static int copy_file(const char *from, const char *to, uint64_t max,
                     uint64_t *bytes) {
  FILE *in = fopen(from, "rb");
  FILE *out = in ? fopen(to, "wb") : NULL;
  int rc = in && out ? C8Y_OK : C8Y_EIO;
  char buf[65536];
  size_t n;
  *bytes = 0;
  while (rc == C8Y_OK && (n = fread(buf, 1, sizeof buf, in)) > 0) {
    *bytes += n;
    if (max && *bytes > max)
      rc = C8Y_ETOOBIG;
    else if (fwrite(buf, 1, n, out) != n)
      rc = C8Y_EIO;
  }
  if (in)
    fclose(in);
  if (out && fclose(out) != 0 && rc == C8Y_OK)
    rc = C8Y_EIO;
  return rc;
}

static int api_download(c8y_plugin *self, c8y_download *d) {
  fake_host *h = self->h;
  if (!d || d->size < sizeof *d || !d->url || !d->file || !*d->file ||
      strchr(d->file, '/') || d->file[0] == '.')
    return C8Y_EINVAL;
  d->path[0] = d->error[0] = '\0';
  d->bytes = 0;
  d->http_code = 0;
  pthread_mutex_lock(&h->mu);
  h->ndownload_calls++;
  char *src = NULL;
  for (size_t i = 0; i + 1 < h->downloads.n; i += 2)
    if (strcmp(h->downloads.v[i], d->url) == 0)
      src = xstrdup(h->downloads.v[i + 1]);
  pthread_mutex_unlock(&h->mu);
  int rc = xfer_failed(h, d->error, sizeof d->error, &d->http_code);
  if (rc == C8Y_OK && !src) {
    snprintf(d->error, sizeof d->error, "HTTP 404 from fake: not found");
    d->http_code = 404;
    rc = C8Y_EHTTP;
  }
  const char *dir = rc == C8Y_OK ? api_state_dir(self) : NULL;
  if (rc == C8Y_OK && !dir)
    rc = C8Y_EIO;
  char path[sizeof d->path];
  if (rc == C8Y_OK) {
    snprintf(path, sizeof path, "%s/%s", dir, d->file);
    rc = copy_file(src, path, d->max_bytes, &d->bytes);
    if (rc != C8Y_OK)
      snprintf(d->error, sizeof d->error, "%s", status_str(rc));
  }
  char hex[65];
  if (rc == C8Y_OK && d->sha256 &&
      (http_sha256_file(path, hex) != 0 || strcasecmp(hex, d->sha256) != 0)) {
    snprintf(d->error, sizeof d->error,
             "sha256 of the file from fake is %s, "
             "expected %s",
             hex, d->sha256);
    rc = C8Y_ECHECKSUM;
  }
  if (rc == C8Y_OK) {
    memcpy(d->path, path, sizeof path);
    d->http_code = 200;
  } else if (dir) {
    remove(path);
  }
  free(src);
  return rc;
}

static int api_upload(c8y_plugin *self, c8y_upload *u) {
  fake_host *h = self->h;
  if (!u || u->size < sizeof *u || !u->path || !u->type || !*u->type)
    return C8Y_EINVAL;
  u->url[0] = u->error[0] = '\0';
  u->http_code = 0;
  int rc = xfer_failed(h, u->error, sizeof u->error, &u->http_code);
  if (rc != C8Y_OK)
    return rc;
  FILE *f = fopen(u->path, "rb");
  if (!f) {
    snprintf(u->error, sizeof u->error, "cannot read %s: %s", u->path,
             strerror(errno));
    return C8Y_EIO;
  }
  char *content = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&content, &len);
  char buf[65536];
  size_t n;
  while (mem && (n = fread(buf, 1, sizeof buf, f)) > 0)
    fwrite(buf, 1, n, mem);
  fclose(f);
  if (!mem || fclose(mem) != 0)
    abort();
  const char *base = strrchr(u->path, '/');
  pthread_mutex_lock(&h->mu);
  sv_push(&h->uploads, u->type);
  sv_push(&h->uploads, u->child_id ? u->child_id : "");
  sv_push(&h->uploads, u->file_name ? u->file_name : base ? base + 1 : u->path);
  sv_push(&h->uploads,
          u->content_type ? u->content_type : "application/octet-stream");
  sv_push(&h->uploads, u->text ? u->text : u->type);
  sv_push(&h->uploads, content);
  size_t count = h->uploads.n / UPLOAD_FIELDS;
  pthread_mutex_unlock(&h->mu);
  free(content);
  snprintf(u->url, sizeof u->url, "fake://binaries/%zu", count);
  u->http_code = 201;
  return C8Y_OK;
}

static const c8y_api fake_api_table = {
    .abi_major = C8Y_ABI_MAJOR,
    .abi_minor = C8Y_ABI_MINOR,
    .size = sizeof(c8y_api),
    .status_str = status_str,
    .log = api_log,
    .config_string = api_config_string,
    .config_int = api_config_int,
    .config_bool = api_config_bool,
    .add_producer = api_add_producer,
    .add_operation = api_add_operation,
    .add_message_handler = api_add_message_handler,
    .add_child = api_add_child,
    .batch_add = api_batch_add,
    .batch_set_time = api_batch_set_time,
    .batch_set_type = api_batch_set_type,
    .batch_set_child = api_batch_set_child,
    .send_event = api_send_event,
    .raise_alarm = api_raise_alarm,
    .clear_alarm = api_clear_alarm,
    .send_static = api_send_static,
    .send_custom = api_send_custom,
    .op_template = api_op_template,
    .op_fragment = api_op_fragment,
    .op_device = api_op_device,
    .op_field_count = api_op_field_count,
    .op_field = api_op_field,
    .op_succeed = api_op_succeed,
    .op_succeed_params = api_op_succeed_params,
    .op_fail = api_op_fail,
    .op_cancelled = api_op_cancelled,
    .op_complete_on_reboot = api_op_complete_on_reboot,
    .op_resume_after_restart = api_op_resume_after_restart,
    .op_resumed = api_op_resumed,
    .op_rebooted = api_op_rebooted,
    .msg_id = api_msg_id,
    .msg_field_count = api_msg_field_count,
    .msg_field = api_msg_field,
    .device_id = api_device_id,
    .state_dir = api_state_dir,
};

const c8y_api *fake_host_api(void) { return &fake_api_table; }

/* The same table with the 1.1 transfer slots filled, for hosts that
 * enabled transfers; written once, then only read. */
static c8y_api xfer_api_table;
static pthread_once_t xfer_api_once = PTHREAD_ONCE_INIT;

static void xfer_api_init(void) {
  xfer_api_table = fake_api_table;
  xfer_api_table.download = api_download;
  xfer_api_table.upload = api_upload;
}

static const c8y_api *host_api(const fake_host *h) {
  if (!h->transfers)
    return &fake_api_table;
  pthread_once(&xfer_api_once, xfer_api_init);
  return &xfer_api_table;
}

/* ---- host lifecycle
 * ----------------------------------------------------------- */

fake_host *fake_host_new(const char *device_id, const char *state_dir) {
  fake_host *h = calloc(1, sizeof *h);
  if (!h)
    abort();
  pthread_mutex_init(&h->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &ca);
  pthread_condattr_destroy(&ca);
  h->self.h = h;
  h->device_id = xstrdup(device_id ? device_id : "fake-device");
  h->state_dir = state_dir ? xstrdup(state_dir) : NULL;
  return h;
}

/* Waits until the running handler (if any) returned and joins its thread:
 * the agent never runs two callbacks of one plugin at the same time. */
static void join_handler(fake_host *h) {
  if (h->thread_live) {
    pthread_join(h->thread, NULL);
    h->thread_live = false;
  }
}

static void free_ops(fake_host *h) {
  while (h->op) {
    c8y_operation *op = h->op;
    h->op = op->older;
    smartrest_records_free(&op->rec);
    free(op->detail);
    sv_free(&op->params);
    free(op);
  }
}

static void clear_registrations(fake_host *h) {
  for (size_t i = 0; i < h->nproducers; i++)
    free(h->producers[i].name);
  free(h->producers);
  h->producers = NULL;
  h->nproducers = 0;
  for (size_t i = 0; i < h->nops; i++)
    free(h->ops[i].template_id);
  free(h->ops);
  h->ops = NULL;
  h->nops = 0;
  for (size_t i = 0; i < h->nmsgs; i++) {
    free(h->msgs[i].xid);
    free(h->msgs[i].msg_id);
  }
  free(h->msgs);
  h->msgs = NULL;
  h->nmsgs = 0;
  sv_clear(&h->children);
}

void fake_host_unload(fake_host *h) {
  if (!h->loaded)
    return;
  join_handler(h);
  if (h->info.fini)
    h->info.fini(&h->self, h->user_data);
  for (c8y_operation *op = h->op; op; op = op->older) {
    pthread_mutex_lock(&h->mu);
    bool orphan = op->rec.count && !op->completed && !op->reboot;
    pthread_mutex_unlock(&h->mu);
    if (orphan)
      host_log(h, C8Y_LOG_ERROR,
               "fake_host: operation %s still pending after fini",
               api_op_template(op));
  }
  clear_registrations(h);
  if (h->dl)
    dlclose(h->dl);
  h->dl = NULL;
  h->loaded = false;
}

void fake_host_free(fake_host *h) {
  if (!h)
    return;
  fake_host_unload(h);
  free_ops(h);
  sv_free(&h->cfg);
  sv_free(&h->cfg_read);
  sv_free(&h->children);
  sv_free(&h->lines);
  sv_free(&h->logs);
  sv_free(&h->downloads);
  sv_free(&h->uploads);
  free(h->xfer_reason);
  free(h->device_id);
  free(h->state_dir);
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
  free(h);
}

void fake_host_set_config(fake_host *h, const char *key, const char *value) {
  pthread_mutex_lock(&h->mu);
  sv_push(&h->cfg, key);
  sv_push(&h->cfg, value);
  pthread_mutex_unlock(&h->mu);
}

static bool valid_plugin_name(const char *s) {
  size_t n = 0;
  if (!s)
    return false;
  for (; s[n]; n++)
    if (!(islower((unsigned char)s[n]) || isdigit((unsigned char)s[n]) ||
          s[n] == '_'))
      return false;
  return n >= 1 && n <= 32;
}

int fake_host_init(fake_host *h, const c8y_plugin_info *info) {
  if (h->loaded) {
    host_log(h, C8Y_LOG_ERROR, "fake_host: a plugin is already loaded");
    return C8Y_ESTATE;
  }
  if (!info || info->abi_major != C8Y_ABI_MAJOR ||
      info->abi_minor > C8Y_ABI_MINOR ||
      info->size < offsetof(c8y_plugin_info, fini) + sizeof info->fini) {
    host_log(h, C8Y_LOG_ERROR, "fake_host: incompatible plugin info");
    return C8Y_EINVAL;
  }
  memset(&h->info, 0, sizeof h->info);
  memcpy(&h->info, info,
         info->size < sizeof h->info ? info->size : sizeof h->info);
  if (!valid_plugin_name(h->info.name) || !h->info.init) {
    host_log(h, C8Y_LOG_ERROR, "fake_host: bad plugin name or no init");
    memset(&h->info, 0, sizeof h->info);
    return C8Y_EINVAL;
  }
  h->in_init = true;
  h->user_data = NULL;
  const c8y_api *api = host_api(h);
  if (h->use_1_0) {
    h->api_1_0 = *api;
    h->api_1_0.abi_minor = 0;
    h->api_1_0.size = offsetof(c8y_api, download);
    api = &h->api_1_0;
  }
  int rc = h->info.init(&h->self, api, &h->user_data);
  h->in_init = false;
  if (rc < 0) {
    host_log(h, C8Y_LOG_ERROR, "fake_host: init failed: %s", status_str(rc));
    clear_registrations(h);
    return rc;
  }
  if (rc != C8Y_OK) {
    host_log(h, C8Y_LOG_ERROR, "fake_host: init returned %d", rc);
    clear_registrations(h);
    return C8Y_EINVAL;
  }
  h->loaded = true;
  /* Children are announced only once init succeeded (rollback otherwise). */
  for (size_t i = 0; i < h->children.n; i += 3) {
    const char *f[4] = {"101", h->children.v[i], h->children.v[i + 1],
                        h->children.v[i + 2]};
    record_line(h, "s/us", f, 4);
  }
  for (size_t i = 0; i < h->cfg.n; i += 2)
    if (!sv_has(&h->cfg_read, h->cfg.v[i]))
      host_log(h, C8Y_LOG_WARNING, "%s: unknown key (ignored)", h->cfg.v[i]);
  return C8Y_OK;
}

int fake_host_load(fake_host *h, const char *so_path) {
  if (h->loaded) {
    host_log(h, C8Y_LOG_ERROR, "fake_host: a plugin is already loaded");
    return C8Y_ESTATE;
  }
  void *dl = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    host_log(h, C8Y_LOG_ERROR, "fake_host: %s", dlerror());
    return C8Y_EINVAL;
  }
  const c8y_plugin_info *info = dlsym(dl, C8Y_PLUGIN_SYMBOL_NAME);
  if (!info) {
    host_log(h, C8Y_LOG_ERROR, "fake_host: %s: not a v1 plugin", so_path);
    dlclose(dl);
    return C8Y_EINVAL;
  }
  int rc = fake_host_init(h, info);
  if (rc != C8Y_OK) {
    dlclose(dl);
    return rc;
  }
  h->dl = dl;
  return C8Y_OK;
}

/* ---- registrations
 * --------------------------------------------------------------- */

size_t fake_host_producer_count(fake_host *h) { return h->nproducers; }

const char *fake_host_producer_name(fake_host *h, size_t i) {
  return i < h->nproducers ? h->producers[i].name : NULL;
}

uint32_t fake_host_producer_interval(fake_host *h, size_t i) {
  return i < h->nproducers ? h->producers[i].interval_ms : 0;
}

static op_handler *find_op(fake_host *h, const char *template_id) {
  for (size_t i = 0; i < h->nops; i++)
    if (strcmp(h->ops[i].template_id, template_id) == 0)
      return &h->ops[i];
  return NULL;
}

bool fake_host_has_operation(fake_host *h, const char *template_id) {
  return find_op(h, template_id) != NULL;
}

uint32_t fake_host_operation_timeout(fake_host *h, const char *template_id) {
  op_handler *o = find_op(h, template_id);
  return o ? o->timeout_ms : 0;
}

/* ---- producers
 * ----------------------------------------------------------------- */

int fake_host_run_producer(fake_host *h, const char *name) {
  producer *p = NULL;
  for (size_t i = 0; i < h->nproducers; i++)
    if (strcmp(h->producers[i].name, name) == 0)
      p = &h->producers[i];
  if (!h->loaded || !p)
    return C8Y_EINVAL;
  join_handler(h);
  c8y_batch b = {
      .h = h, .producer = p->name, .active = true, .time_ms = now_ms()};
  int rc = p->fn(&h->self, &b, p->ud);
  b.active = false;
  if (rc < 0) {
    host_log(h, C8Y_LOG_WARNING, "fake_host: producer %s: %s", name,
             status_str(rc));
  } else {
    char topic[512];
    make_topic(topic, sizeof topic, "s/us", b.child);
    int lrc = batch_flush(h, &b, topic);
    if (lrc < 0) {
      host_log(h, C8Y_LOG_ERROR, "fake_host: producer %s: %s", name,
               status_str(lrc));
      rc = lrc;
    }
  }
  sv_free(&b.fields);
  free(b.type);
  free(b.child);
  return rc;
}

/* ---- operations
 * ------------------------------------------------------------------ */

static void *op_thread_main(void *arg) {
  fake_host *h = arg;
  c8y_operation *op = h->op;
  op_handler *hd = h->handler;
  int rc = hd->fn(&h->self, op, hd->ud);
  pthread_mutex_lock(&h->mu);
  h->handler_returned = true;
  bool completed = op->completed;
  pthread_mutex_unlock(&h->mu);
  if (!completed && rc == C8Y_OK) {
    op_finish(op, FAKE_OP_FAILED,
              "handler returned C8Y_OK without completing the operation", NULL,
              0);
    host_log(h, C8Y_LOG_ERROR,
             "fake_host: handler returned C8Y_OK without completing");
  } else if (!completed && rc != C8Y_PENDING) {
    op_finish(op, FAKE_OP_FAILED, status_str(rc), NULL, 0);
  } else if (completed && rc != C8Y_OK && rc != C8Y_PENDING) {
    host_log(h, C8Y_LOG_WARNING,
             "fake_host: handler returned %s after completing", status_str(rc));
  }
  pthread_mutex_lock(&h->mu);
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static bool known_device(fake_host *h, const char *dev) {
  if (strcmp(dev, h->device_id) == 0)
    return true;
  for (size_t i = 0; i < h->children.n; i += 3)
    if (strcmp(h->children.v[i], dev) == 0)
      return true;
  return false;
}

fake_op_state fake_host_run_operation(fake_host *h, const char *line,
                                      int timeout_ms) {
  join_handler(h);
  c8y_operation *op = calloc(1, sizeof *op);
  if (!op)
    abort();
  op->h = h;
  op->state = FAKE_OP_FAILED;
  pthread_mutex_lock(&h->mu);
  op->older = h->op;
  h->op = op;
  pthread_mutex_unlock(&h->mu);
  const char *error = NULL;
  op_handler *hd = NULL;
  if (smartrest_decode(line, strlen(line), &op->rec) != 0 ||
      op->rec.count != 1 || op->rec.items[0].error ||
      op->rec.items[0].nfields < 2) {
    error = "fake_host: not one valid operation line";
  } else if (!h->loaded || !(hd = find_op(h, op->rec.items[0].fields[0]))) {
    error = "fake_host: no handler";
  } else if (!known_device(h, op->rec.items[0].fields[1])) {
    error = "fake_host: unknown device";
  }
  if (error) {
    smartrest_records_free(&op->rec);
    op->completed = op->released = true;
    op->detail = xstrdup(error);
    h->handler_returned = true;
    return op->state;
  }
  const char *fragment = proto_fragment(op->rec.items[0].fields[0]);
  op->fragment = fragment ? fragment : "";
  op->state = FAKE_OP_RUNNING;
  op->resumed = h->next_resumed;
  op->rebooted = h->next_rebooted;
  h->next_resumed = h->next_rebooted = false;
  h->handler = hd;
  h->handler_returned = false;
  if (pthread_create(&h->thread, NULL, op_thread_main, h) != 0)
    abort();
  h->thread_live = true;

  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&h->mu);
  while (!op->completed && !op->cancelled)
    if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT)
      break;
  fake_op_state st = op->state;
  pthread_mutex_unlock(&h->mu);
  return st;
}

/* Results of the last operation; its strings live until fake_host_free. */
const char *fake_host_op_detail(fake_host *h) {
  pthread_mutex_lock(&h->mu);
  const char *d = h->op && h->op->detail ? h->op->detail : "";
  pthread_mutex_unlock(&h->mu);
  return d;
}

size_t fake_host_op_param_count(fake_host *h) {
  pthread_mutex_lock(&h->mu);
  size_t n = h->op ? h->op->params.n : 0;
  pthread_mutex_unlock(&h->mu);
  return n;
}

const char *fake_host_op_param(fake_host *h, size_t i) {
  pthread_mutex_lock(&h->mu);
  const char *p = h->op && i < h->op->params.n ? h->op->params.v[i] : NULL;
  pthread_mutex_unlock(&h->mu);
  return p;
}

bool fake_host_op_reboot_requested(fake_host *h) {
  pthread_mutex_lock(&h->mu);
  bool r = h->op && h->op->reboot;
  pthread_mutex_unlock(&h->mu);
  return r;
}

void fake_host_cancel_operation(fake_host *h) {
  pthread_mutex_lock(&h->mu);
  c8y_operation *op = h->op;
  if (op && !op->completed && !op->cancelled) {
    op->cancelled = true;
    op->state = FAKE_OP_FAILED;
    free(op->detail);
    op->detail = xstrdup("fake_host: operation timed out");
    pthread_cond_broadcast(&h->cv);
  }
  pthread_mutex_unlock(&h->mu);
}

fake_op_state fake_host_op_state(fake_host *h) {
  pthread_mutex_lock(&h->mu);
  fake_op_state st = h->op ? h->op->state : FAKE_OP_FAILED;
  pthread_mutex_unlock(&h->mu);
  return st;
}

bool fake_host_wait_op_released(fake_host *h, int timeout_ms) {
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&h->mu);
  while (h->op && !h->op->released)
    if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT)
      break;
  bool r = h->op && h->op->released;
  pthread_mutex_unlock(&h->mu);
  return r;
}

bool fake_host_handler_returned(fake_host *h) {
  pthread_mutex_lock(&h->mu);
  bool r = h->op && h->handler_returned;
  pthread_mutex_unlock(&h->mu);
  return r;
}

/* ---- messages
 * ------------------------------------------------------------------- */

int fake_host_deliver_message(fake_host *h, const char *xid, const char *line) {
  if (!h->loaded || !xid || !line)
    return C8Y_EINVAL;
  smartrest_records recs;
  if (smartrest_decode(line, strlen(line), &recs) != 0)
    return C8Y_ENOMEM;
  int rc = C8Y_OK;
  for (size_t r = 0; r < recs.count && rc == C8Y_OK; r++) {
    smartrest_record *rec = &recs.items[r];
    if (rec->error || rec->nfields == 0) {
      rc = C8Y_EINVAL;
      break;
    }
    msg_handler *m = NULL;
    for (size_t i = 0; i < h->nmsgs; i++)
      if (strcmp(h->msgs[i].xid, xid) == 0 &&
          strcmp(h->msgs[i].msg_id, rec->fields[0]) == 0)
        m = &h->msgs[i];
    if (!m) {
      rc = C8Y_EINVAL;
      break;
    }
    join_handler(h);
    c8y_message msg = {rec};
    m->fn(&h->self, &msg, m->ud);
  }
  smartrest_records_free(&recs);
  return rc;
}

/* ---- recorded lines and logs
 * --------------------------------------------------------- */

/* Recorded strings are never freed before fake_host_clear_lines/free, so
 * returning them after unlocking is safe for the test thread. */
static size_t sv_count_locked(fake_host *h, const strvec *sv) {
  pthread_mutex_lock(&h->mu);
  size_t n = sv->n;
  pthread_mutex_unlock(&h->mu);
  return n;
}

/* Entry i, or the last entry if `last`; NULL if there is none. */
static const char *sv_at_locked(fake_host *h, const strvec *sv, size_t i,
                                bool last) {
  pthread_mutex_lock(&h->mu);
  if (last)
    i = sv->n - 1; /* wraps to SIZE_MAX, i.e. none, when empty */
  const char *s = i < sv->n ? sv->v[i] : NULL;
  pthread_mutex_unlock(&h->mu);
  return s;
}

/* The first entry for which match(entry + skip_topic, what) is true. */
static const char *sv_find_locked(fake_host *h, const strvec *sv,
                                  bool skip_topic, const char *what) {
  const char *found = NULL;
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < sv->n && !found; i++) {
    const char *s = sv->v[i];
    if (skip_topic) {
      const char *bar = strchr(s, '|');
      if (bar && strncmp(bar + 1, what, strlen(what)) == 0)
        found = s;
    } else if (strstr(s, what)) {
      found = s;
    }
  }
  pthread_mutex_unlock(&h->mu);
  return found;
}

size_t fake_host_line_count(fake_host *h) {
  return sv_count_locked(h, &h->lines);
}

const char *fake_host_line(fake_host *h, size_t i) {
  return sv_at_locked(h, &h->lines, i, false);
}

const char *fake_host_find_line(fake_host *h, const char *prefix) {
  return sv_find_locked(h, &h->lines, true, prefix);
}

void fake_host_clear_lines(fake_host *h) {
  pthread_mutex_lock(&h->mu);
  sv_clear(&h->lines);
  pthread_mutex_unlock(&h->mu);
}

size_t fake_host_log_count(fake_host *h) {
  return sv_count_locked(h, &h->logs);
}

const char *fake_host_log(fake_host *h, size_t i) {
  return sv_at_locked(h, &h->logs, i, false);
}

const char *fake_host_last_log(fake_host *h) {
  return sv_at_locked(h, &h->logs, 0, true);
}

const char *fake_host_find_log(fake_host *h, const char *substring) {
  return sv_find_locked(h, &h->logs, false, substring);
}

/* ---- transfers (ABI 1.1) ---- */

void fake_host_enable_transfers(fake_host *h) { h->transfers = true; }

void fake_host_add_download(fake_host *h, const char *url, const char *path) {
  pthread_mutex_lock(&h->mu);
  sv_push(&h->downloads, url);
  sv_push(&h->downloads, path);
  pthread_mutex_unlock(&h->mu);
}

void fake_host_fail_transfers(fake_host *h, int status, const char *reason) {
  pthread_mutex_lock(&h->mu);
  h->xfer_fail = status;
  free(h->xfer_reason);
  h->xfer_reason = reason ? xstrdup(reason) : NULL;
  pthread_mutex_unlock(&h->mu);
}

size_t fake_host_download_count(fake_host *h) {
  pthread_mutex_lock(&h->mu);
  size_t n = h->ndownload_calls;
  pthread_mutex_unlock(&h->mu);
  return n;
}

size_t fake_host_upload_count(fake_host *h) {
  return sv_count_locked(h, &h->uploads) / UPLOAD_FIELDS;
}

const char *fake_host_upload_field(fake_host *h, size_t i, const char *field) {
  static const char *const names[UPLOAD_FIELDS] = {
      "type", "child", "file_name", "content_type", "text", "content"};
  for (size_t k = 0; k < UPLOAD_FIELDS; k++)
    if (strcmp(names[k], field) == 0)
      return sv_at_locked(h, &h->uploads, i * UPLOAD_FIELDS + k, false);
  return NULL;
}

void fake_host_set_resumed(fake_host *h, bool rebooted) {
  h->next_resumed = true;
  h->next_rebooted = rebooted;
}

bool fake_host_op_resume_requested(fake_host *h) {
  pthread_mutex_lock(&h->mu);
  bool r = h->op && h->op->resume;
  pthread_mutex_unlock(&h->mu);
  return r;
}

void fake_host_set_abi_1_0(fake_host *h) { h->use_1_0 = true; }
