#include "plugin_host.h"

#include "clock.h"
#include "crash.h"
#include "fsutil.h"
#include "http.h"
#include "ident.h"
#include "log.h"
#include "proto.h"
#include "services.h"
#include "smartrest.h"
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum job_kind { JOB_PRODUCE, JOB_OPERATION, JOB_MESSAGE };

typedef struct plugin_job {
  struct plugin_job *next;
  enum job_kind kind;
  reg_producer *producer;
  c8y_operation *op;
  reg_message *message;
  char **fields;
  size_t nfields;
} plugin_job;

struct c8y_batch {
  c8y_plugin *plugin;
  reg_producer *producer;       /* NULL: begun with batch_begin */
  struct c8y_batch *next_begun; /* this thread's begun batches */
  long long time_ms;
  char *type;
  char *child;
  char **fields; /* fragment, series, value text, unit per sample */
  size_t n;      /* samples */
  size_t cap;    /* samples */
};

struct c8y_message {
  char **fields; /* fields[0] is the message id */
  size_t n;
};

/* ---- queueing upstream lines ---- */

/* Seconds of the per-plugin line rate a burst may use up at once. */
#define LINE_BURST_S 100
#define REFUSED_LOG_MS 10000

/* One line a plugin wants to queue: within [agent] plugin_max_lines_per_s
 * (on average, bursts of LINE_BURST_S seconds' worth pass)? A plugin over
 * its limit gets C8Y_ERATE (C8Y_EAGAIN when built for ABI 1.0/1.1, which
 * had no code of its own for it) and one warning per REFUSED_LOG_MS with
 * the count, so a flood cannot also flood the log. */
static int admit_line(c8y_plugin *p) {
  const agent_config *cfg = p->host->cfg;
  long long rate = cfg ? cfg->plugin_max_lines_per_s : 0;
  if (rate <= 0)
    return C8Y_OK;
  double cap = (double)rate * LINE_BURST_S;
  long long now = clock_mono_ms();
  int rc = C8Y_OK;
  unsigned long long report = 0;
  pthread_mutex_lock(&p->mu);
  if (p->line_refill_ms == 0) {
    p->line_tokens = cap;
  } else if (now > p->line_refill_ms) {
    p->line_tokens += (double)(now - p->line_refill_ms) * (double)rate / 1000.0;
    if (p->line_tokens > cap)
      p->line_tokens = cap;
  }
  p->line_refill_ms = now;
  if (p->line_tokens >= 1.0) {
    p->line_tokens -= 1.0;
  } else {
    rc = p->info.abi_minor >= 2 ? C8Y_ERATE : C8Y_EAGAIN;
    p->lines_refused++;
    if (p->refused_logged_ms == 0 ||
        now - p->refused_logged_ms >= REFUSED_LOG_MS) {
      report = p->lines_refused;
      p->lines_refused = 0;
      p->refused_logged_ms = now;
    }
  }
  pthread_mutex_unlock(&p->mu);
  if (report)
    log_warning("plugin %s: over its limit of %lld lines/s ([agent] "
                "plugin_max_lines_per_s); %llu line(s) refused since the last "
                "report",
                p->name, rate, report);
  return rc;
}

/* ---- api: basics ---- */

/* The attribute lets clang check that fmt reaches log_vmsg as a format. */
static void api_log(c8y_plugin *self, c8y_log_level level, const char *fmt, ...)
    C8Y_PRINTF(3, 4);
static void api_log(c8y_plugin *self, c8y_log_level level, const char *fmt,
                    ...) {
  va_list ap;
  va_start(ap, fmt);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "plugin %s", self ? self->name : "?");
  log_vmsg((int)level, prefix, fmt, ap);
  va_end(ap);
}

/* Remembers what the plugin asked for, so a misspelt key in its section can
 * be answered with the key it meant. */
static config_entry *lookup(c8y_plugin *self, const char *key) {
  if (!key)
    return NULL;
  pthread_mutex_lock(&self->mu);
  bool known = false;
  for (size_t i = 0; i < self->nasked && !known; i++)
    known = strcmp(self->asked[i], key) == 0;
  if (!known) {
    char **grown = realloc(self->asked, (self->nasked + 1) * sizeof *grown);
    if (grown) {
      self->asked = grown;
      if ((grown[self->nasked] = strdup(key)) != NULL)
        self->nasked++;
    }
  }
  pthread_mutex_unlock(&self->mu);
  return config_plugin_lookup(self->host->cfg, self->name, key);
}

static const char *api_config_string(c8y_plugin *self, const char *key,
                                     const char *fallback) {
  config_entry *e = lookup(self, key);
  return e ? e->value : fallback;
}

static const char *api_config_origin(c8y_plugin *self, const char *key) {
  config_entry *e = lookup(self, key);
  if (!e)
    return NULL;
  char *text;
  if (asprintf(&text, "%s:%u", e->file, e->line) < 0)
    return NULL;
  const char *found = NULL;
  pthread_mutex_lock(&self->mu);
  for (size_t i = 0; i < self->norigins && !found; i++)
    if (strcmp(self->origins[i], text) == 0)
      found = self->origins[i];
  if (!found) {
    char **grown = realloc(self->origins, (self->norigins + 1) * sizeof *grown);
    if (grown) {
      self->origins = grown;
      found = grown[self->norigins++] = text;
      text = NULL;
    }
  }
  pthread_mutex_unlock(&self->mu);
  free(text);
  return found;
}

static int api_config_int(c8y_plugin *self, const char *key, int64_t fallback,
                          int64_t *out) {
  config_entry *e = lookup(self, key);
  if (!e) {
    *out = fallback;
    return C8Y_OK;
  }
  long long v;
  if (config_parse_int(e->value, LLONG_MIN, LLONG_MAX, &v) != 0) {
    log_error("%s:%u: [plugin.%s] %s: not an integer: '%s'", e->file, e->line,
              self->name, key, e->value);
    *out = fallback;
    return C8Y_EINVAL;
  }
  *out = v;
  return C8Y_OK;
}

static int api_config_bool(c8y_plugin *self, const char *key, int fallback,
                           int *out) {
  config_entry *e = lookup(self, key);
  if (!e) {
    *out = fallback;
    return C8Y_OK;
  }
  bool v;
  if (config_parse_bool(e->value, &v) != 0) {
    log_error("%s:%u: [plugin.%s] %s: not a boolean (true/false): '%s'",
              e->file, e->line, self->name, key, e->value);
    *out = fallback;
    return C8Y_EINVAL;
  }
  *out = v;
  return C8Y_OK;
}

/* ---- api: registration (init only) ---- */

static int api_add_producer(c8y_plugin *self, const char *name,
                            uint32_t interval_ms, c8y_produce_fn fn, void *ud) {
  if (!self->registering)
    return C8Y_ESTATE;
  if (!name || !*name || !fn || interval_ms < 100)
    return C8Y_EINVAL;
  size_t have = 0;
  registry_count_for(self->host->reg, self, &have, NULL);
  int max = self->host->cfg ? self->host->cfg->plugin_max_producers : 0;
  if (max > 0 && have >= (size_t)max) {
    api_log(self, C8Y_LOG_ERROR,
            "add_producer '%s' refused: the plugin already has %zu producers "
            "([agent] plugin_max_producers = %d)",
            name, have, max);
    return C8Y_EINVAL;
  }
  return registry_add_producer(self->host->reg, self, name, interval_ms, fn,
                               ud);
}

/* A fragment a plugin registers: a JSON key as Cumulocity names
 * fragments (c8y_Restart, acme_Reset), never all digits (a template id) and
 * never an operation's own property. */
static const char *fragment_problem(const char *f) {
  if (!f || !*f)
    return "is empty";
  if (strlen(f) > 100)
    return "is longer than 100 bytes";
  if (!((*f >= 'A' && *f <= 'Z') || (*f >= 'a' && *f <= 'z') || *f == '_'))
    return "must start with a letter or '_'";
  for (const char *c = f; *c; c++)
    if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
          (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
      return "may hold only letters, digits, '_' and '-'";
  if (strcmp(f, "delivery") == 0 || strcmp(f, "externalSource") == 0)
    return "is a property of every operation, not a fragment";
  return NULL;
}

/* Every operation registration: `what` a static template id ("510") or a
 * fragment; scope and child as registry_add_scoped_handler takes them. */
static int add_handler(c8y_plugin *self, const char *fn_name, const char *what,
                       reg_scope scope, const char *child, uint32_t timeout_ms,
                       c8y_operation_fn fn, void *ud, bool templates_only) {
  if (!self->registering)
    return C8Y_ESTATE;
  if (!what || !fn)
    return C8Y_EINVAL;
  const char *fragment = proto_fragment(what);
  const char *template_id = fragment ? what : NULL;
  if (!fragment && templates_only) {
    api_log(self, C8Y_LOG_ERROR,
            "%s: '%s' is not a static operation template (510-532)", fn_name,
            what);
    return C8Y_EINVAL;
  }
  if (!fragment) {
    const char *why = fragment_problem(what);
    if (why) {
      api_log(self, C8Y_LOG_ERROR,
              "%s: '%s' is neither a static operation template (510-532) nor "
              "a fragment name: it %s",
              fn_name, what, why);
      return C8Y_EINVAL;
    }
    fragment = what;
  }
  c8y_plugin *owner = NULL;
  int rc =
      registry_add_scoped_handler(self->host->reg, self, template_id, fragment,
                                  scope, child, timeout_ms, fn, ud, &owner);
  if (rc == C8Y_EEXIST && owner && owner != self && !self->init_error) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s %s is already handled by plugin %s",
             template_id ? "template" : "fragment", what, owner->name);
    self->init_error = strdup(buf);
  }
  return rc;
}

static int api_add_operation(c8y_plugin *self, const char *template_id,
                             uint32_t timeout_ms, c8y_operation_fn fn,
                             void *ud) {
  return add_handler(self, "add_operation", template_id,
                     REG_SCOPE_ROOT_AND_OWN_CHILDREN, NULL, timeout_ms, fn, ud,
                     true);
}

static int api_add_child_operation(c8y_plugin *self, const char *template_id,
                                   uint32_t timeout_ms, c8y_operation_fn fn,
                                   void *ud) {
  return add_handler(self, "add_child_operation", template_id,
                     REG_SCOPE_OWN_CHILDREN, NULL, timeout_ms, fn, ud, true);
}

static int api_add_device_operation(c8y_plugin *self, const char *device,
                                    const char *what, uint32_t timeout_ms,
                                    c8y_operation_fn fn, void *ud) {
  if (!self->registering)
    return C8Y_ESTATE;
  reg_scope scope = REG_SCOPE_ROOT;
  if (device && strcmp(device, C8Y_ALL_CHILDREN) == 0) {
    scope = REG_SCOPE_OWN_CHILDREN;
  } else if (device && strcmp(device, self->host->device_id) != 0) {
    if (!registry_owns_child(self->host->reg, self, device)) {
      api_log(self, C8Y_LOG_ERROR,
              "add_device_operation: '%s' is not a child this plugin added "
              "(add_child it first)",
              device);
      return C8Y_EINVAL;
    }
    scope = REG_SCOPE_CHILD;
  }
  return add_handler(self, "add_device_operation", what, scope,
                     scope == REG_SCOPE_CHILD ? device : NULL, timeout_ms, fn,
                     ud, false);
}

static int api_add_fragment_operation(c8y_plugin *self, const char *fragment,
                                      uint32_t timeout_ms, c8y_operation_fn fn,
                                      void *ud) {
  if (!self->registering)
    return C8Y_ESTATE;
  if (fragment && proto_fragment(fragment)) {
    api_log(self, C8Y_LOG_ERROR,
            "add_fragment_operation: '%s' is a template id; use add_operation "
            "or add_device_operation",
            fragment);
    return C8Y_EINVAL;
  }
  return add_handler(self, "add_fragment_operation", fragment, REG_SCOPE_ROOT,
                     NULL, timeout_ms, fn, ud, false);
}

static int api_add_message_handler(c8y_plugin *self, const char *xid,
                                   const char *message_id, c8y_message_fn fn,
                                   void *ud) {
  if (!self->registering)
    return C8Y_ESTATE;
  if (!upstream_xid_ok(xid) || !message_id || !*message_id || !fn)
    return C8Y_EINVAL;
  return registry_add_message(self->host->reg, self, xid, message_id, fn, ud);
}

static int api_add_template_operation(c8y_plugin *self, const char *xid,
                                      const char *message_id,
                                      const char *fragment) {
  if (!self->registering)
    return C8Y_ESTATE;
  if (!upstream_xid_ok(xid) || !message_id || !*message_id)
    return C8Y_EINVAL;
  const char *why = fragment_problem(fragment);
  if (why) {
    api_log(self, C8Y_LOG_ERROR, "add_template_operation: the fragment '%s' %s",
            fragment ? fragment : "", why);
    return C8Y_EINVAL;
  }
  return registry_add_template_op(self->host->reg, self, xid, message_id,
                                  fragment);
}

/* Inside init the child is announced with the registration of the next
 * connect; later (ABI 1.2) the main loop notices the new child (the
 * registry's child sequence) and announces it at once. */
static int api_add_child(c8y_plugin *self, const char *child_id,
                         const char *name, const char *type) {
  /* A plugin built for 1.0/1.1 was promised C8Y_ESTATE outside init. */
  if (!self->registering && self->info.abi_minor < 2)
    return C8Y_ESTATE;
  const char *why = ident_check(child_id, false);
  if (why) {
    api_log(self, C8Y_LOG_ERROR, "add_child: refused: the child id %s", why);
    return C8Y_EINVAL;
  }
  if (strcmp(child_id, self->host->device_id) == 0)
    return C8Y_EINVAL;
  int rc = registry_add_child(self->host->reg, self, child_id, name, type);
  if (rc == C8Y_OK && !self->registering) {
    api_log(self, C8Y_LOG_INFO, "child %s added", child_id);
    const upstream *up = self->host->up;
    if (up && up->wake)
      up->wake(up->wake_ctx);
  }
  return rc;
}

static int api_remove_child(c8y_plugin *self, const char *child_id) {
  if (!self || !child_id)
    return C8Y_EINVAL;
  int rc = registry_remove_child(self->host->reg, self, child_id);
  if (rc == C8Y_OK)
    api_log(self, C8Y_LOG_INFO,
            "child %s removed: its operations are no longer dispatched",
            child_id);
  return rc;
}

/* ---- api: batches ---- */

/* The batch of the produce call running on this thread, and the batches
 * this thread began (ABI 1.2 batch_begin) and has not committed or
 * discarded. A pointer a plugin kept past its callback or its commit, or
 * uses from another thread, is refused: it is only compared with these,
 * never dereferenced. */
static _Thread_local c8y_batch *live_batch;
static _Thread_local c8y_batch *begun_batches;

static bool begun_here(const c8y_batch *b) {
  for (const c8y_batch *x = begun_batches; x; x = x->next_begun)
    if (x == b)
      return true;
  return false;
}

static int batch_check(const c8y_batch *b) {
  if (!b)
    return C8Y_EINVAL;
  return b == live_batch || begun_here(b) ? C8Y_OK : C8Y_ESTATE;
}

static int api_batch_add(c8y_batch *b, const char *fragment, const char *series,
                         double value, const char *unit) {
  int live = batch_check(b);
  if (live != C8Y_OK)
    return live;
  if (!fragment || !*fragment || !series || !*series || !isfinite(value))
    return C8Y_EINVAL;
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 8;
    char **grown = realloc(b->fields, cap * 4 * sizeof *grown);
    if (!grown)
      return C8Y_ENOMEM;
    b->fields = grown;
    b->cap = cap;
  }
  char num[64];
  smartrest_format_value(value, num, sizeof num);
  char **f = &b->fields[b->n * 4];
  f[0] = strdup(fragment);
  f[1] = strdup(series);
  f[2] = strdup(num);
  f[3] = strdup(unit ? unit : "");
  if (!f[0] || !f[1] || !f[2] || !f[3]) {
    for (int k = 0; k < 4; k++)
      free(f[k]);
    return C8Y_ENOMEM;
  }
  b->n++;
  return C8Y_OK;
}

static int api_batch_set_time(c8y_batch *b, int64_t unix_ms) {
  int live = batch_check(b);
  if (live != C8Y_OK)
    return live;
  if (unix_ms <= 0)
    return C8Y_EINVAL;
  b->time_ms = unix_ms;
  return C8Y_OK;
}

static int replace_str(char **slot, const char *value) {
  char *copy = strdup(value);
  if (!copy)
    return C8Y_ENOMEM;
  free(*slot);
  *slot = copy;
  return C8Y_OK;
}

static int api_batch_set_type(c8y_batch *b, const char *type) {
  int live = batch_check(b);
  if (live != C8Y_OK)
    return live;
  if (!type || !*type)
    return C8Y_EINVAL;
  return replace_str(&b->type, type);
}

static int api_batch_set_child(c8y_batch *b, const char *child) {
  int live = batch_check(b);
  if (live != C8Y_OK)
    return live;
  if (ident_check(child, false))
    return C8Y_EINVAL;
  return replace_str(&b->child, child);
}

static void batch_clear(c8y_batch *b) {
  for (size_t i = 0; i < b->n * 4; i++)
    free(b->fields[i]);
  free(b->fields);
  free(b->type);
  free(b->child);
}

typedef struct flush_ctx {
  c8y_plugin *plugin;
  const char *topic;
} flush_ctx;

static int emit_measurement(void *ctx, const char *line) {
  flush_ctx *f = ctx;
  int rc = admit_line(f->plugin);
  return rc != C8Y_OK
             ? rc
             : upstream_send_line(f->plugin->host->up, OUTQ_MEASUREMENT,
                                  f->topic, line, 0, UPSTREAM_NO_TAG);
}

/* 1 sample -> 200; more -> 201 lines of one measurement type. */
static int batch_flush(c8y_batch *b) {
  if (b->n == 0)
    return C8Y_OK;
  char topic[300];
  if (upstream_topic(NULL, b->child, topic, sizeof topic) != C8Y_OK)
    return C8Y_EINVAL;
  char when[40];
  smartrest_format_time(b->time_ms, when, sizeof when);
  flush_ctx ctx = {.plugin = b->plugin, .topic = topic};
  int rc =
      smartrest_encode_measurements((const char *const *)b->fields, b->n,
                                    b->type       ? b->type
                                    : b->producer ? b->producer->name
                                                  : b->plugin->name,
                                    when, C8Y_MAX_LINE, emit_measurement, &ctx);
  return rc;
}

/* ABI 1.2: a batch outside a produce call ("measure now"), owned by the
 * thread that began it until it commits or discards it. */
static c8y_batch *api_batch_begin(c8y_plugin *self) {
  if (!self)
    return NULL;
  pthread_mutex_lock(&self->mu);
  bool stopping = self->stopping;
  pthread_mutex_unlock(&self->mu);
  if (stopping)
    return NULL;
  c8y_batch *b = calloc(1, sizeof *b);
  if (!b)
    return NULL;
  b->plugin = self;
  b->time_ms = clock_wall_ms();
  b->next_begun = begun_batches;
  begun_batches = b;
  return b;
}

/* Unlinks and frees a begun batch of this thread; false if it is none. */
static bool batch_end(c8y_batch *b, bool commit, int *rc) {
  c8y_batch **link = &begun_batches;
  while (*link && *link != b)
    link = &(*link)->next_begun;
  if (!b || !*link)
    return false;
  *link = b->next_begun;
  *rc = commit ? batch_flush(b) : C8Y_OK;
  if (*rc != C8Y_OK)
    log_warning("plugin %s: batch_commit: %s; batch dropped", b->plugin->name,
                status_str(*rc));
  batch_clear(b);
  free(b);
  return true;
}

static int api_batch_commit(c8y_batch *b) {
  int rc;
  if (!b)
    return C8Y_EINVAL;
  return batch_end(b, true, &rc) ? rc : C8Y_ESTATE;
}

static void api_batch_discard(c8y_batch *b) {
  int rc;
  batch_end(b, false, &rc);
}

/* ---- api: upstream data ---- */

static int api_send_static(c8y_plugin *self, const char *child,
                           const char *const *fields, size_t n) {
  int rc = admit_line(self);
  if (rc != C8Y_OK)
    return rc;
  return upstream_send_static(self->host->up, self, child, fields, n, NULL);
}

/* ---- api: health ---- */

static int api_set_health(c8y_plugin *self, int up, const char *reason) {
  if (!self)
    return C8Y_EINVAL;
  if (!self->host->svc)
    return C8Y_ENOTSUP;
  return services_plugin_health(self->host->svc, self->name, SERVICES_BY_PLUGIN,
                                up != 0, reason);
}

static int api_send_event(c8y_plugin *self, const char *child, const char *type,
                          const char *text, int64_t time_ms) {
  if (!type || !*type || !text)
    return C8Y_EINVAL;
  if (time_ms < 0)
    return C8Y_EINVAL;
  /* Stamped now, not when the line leaves the queue: after an outage the
   * platform would otherwise date it at the upload. */
  char when[40];
  smartrest_format_time(time_ms > 0 ? time_ms : clock_wall_ms(), when,
                        sizeof when);
  const char *f[] = {"400", type, text, when};
  return api_send_static(self, child, f, 4);
}

static int api_raise_alarm(c8y_plugin *self, const char *child,
                           c8y_severity severity, const char *type,
                           const char *text) {
  const char *id;
  switch (severity) {
  case C8Y_CRITICAL:
    id = "301";
    break;
  case C8Y_MAJOR:
    id = "302";
    break;
  case C8Y_MINOR:
    id = "303";
    break;
  case C8Y_WARNING:
    id = "304";
    break;
  default:
    return C8Y_EINVAL;
  }
  if (!type || !*type)
    return C8Y_EINVAL;
  char when[40];
  smartrest_format_time(clock_wall_ms(), when, sizeof when);
  const char *f[] = {id, type, text ? text : "", when};
  return api_send_static(self, child, f, 4);
}

static int api_clear_alarm(c8y_plugin *self, const char *child,
                           const char *type) {
  if (!type || !*type)
    return C8Y_EINVAL;
  const char *f[] = {"306", type};
  return api_send_static(self, child, f, 2);
}

static int api_send_custom(c8y_plugin *self, const char *xid, const char *child,
                           const char *const *fields, size_t n) {
  int rc = admit_line(self);
  if (rc != C8Y_OK)
    return rc;
  return upstream_send_custom(self->host->up, xid, child, fields, n, NULL);
}

/* ---- api: messages, identity ---- */

static const char *api_msg_id(const c8y_message *m) { return m->fields[0]; }
static size_t api_msg_field_count(const c8y_message *m) { return m->n - 1; }
static const char *api_msg_field(const c8y_message *m, size_t i) {
  return i + 1 < m->n ? m->fields[i + 1] : NULL;
}

static const char *api_device_id(c8y_plugin *self) {
  return self->host->device_id;
}

/* A symlink planted in place of a directory here (the agent's user can
 * write the state directory) is never followed. */
static int state_subdir(int dirfd, const char *name) {
  if (mkdirat(dirfd, name, 0750) != 0 && errno != EEXIST)
    return -1;
  return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* <state>/plugins/<name>, made and opened a level at a time. */
static int make_state_dir(const char *state_dir, const char *name) {
  if (fsutil_mkdir_p(state_dir, 0750) != 0)
    return -1;
  int top = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int plugins = top < 0 ? -1 : state_subdir(top, "plugins");
  int dir = plugins < 0 ? -1 : state_subdir(plugins, name);
  int saved = errno;
  if (top >= 0)
    close(top);
  if (plugins >= 0)
    close(plugins);
  if (dir >= 0)
    close(dir);
  errno = saved;
  return dir < 0 ? -1 : 0;
}

static const char *api_state_dir(c8y_plugin *self) {
  pthread_mutex_lock(&self->mu);
  if (!self->state_dir) {
    char buf[4096 + 256];
    snprintf(buf, sizeof buf, "%s/plugins/%s", self->host->state_dir,
             self->name);
    if (make_state_dir(self->host->state_dir, self->name) == 0)
      self->state_dir = strdup(buf);
    else
      log_error("plugin %s: cannot create %s: %s", self->name, buf,
                strerror(errno));
  }
  pthread_mutex_unlock(&self->mu);
  return self->state_dir;
}

/* ---- api: file transfers (ABI 1.1) ---- */

/* The smallest struct any 1.x plugin can pass: the 1.1 layout, which every
 * later minor only appends to. A plugin's struct is copied into the
 * agent's current one (fields it does not have stay zero) and the outputs
 * are copied back only as far as the plugin's struct reaches, so a plugin
 * built against 1.1 keeps working with every later agent. */
#define DOWNLOAD_SIZE_1_1                                                      \
  (offsetof(c8y_download, error) + sizeof(((c8y_download *)0)->error))
#define UPLOAD_SIZE_1_1                                                        \
  (offsetof(c8y_upload, error) + sizeof(((c8y_upload *)0)->error))

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static int api_download(c8y_plugin *self, c8y_download *d) {
  if (!self || !d || d->size < DOWNLOAD_SIZE_1_1)
    return C8Y_EINVAL;
  c8y_download mine;
  memset(&mine, 0, sizeof mine);
  size_t n = min_size(d->size, sizeof mine);
  memcpy(&mine, d, n);
  mine.size = sizeof mine;
  int rc = http_download(self->host->http, api_state_dir(self), &mine,
                         ops_op_cancelled);
  mine.size = d->size;
  memcpy(d, &mine, n);
  if (rc != C8Y_OK)
    log_warning("plugin %s: download of %s failed: %s", self->name,
                mine.url ? mine.url : "(null)", mine.error);
  return rc;
}

static int api_upload(c8y_plugin *self, c8y_upload *u) {
  if (!self || !u || u->size < UPLOAD_SIZE_1_1)
    return C8Y_EINVAL;
  c8y_upload mine;
  memset(&mine, 0, sizeof mine);
  size_t n = min_size(u->size, sizeof mine);
  memcpy(&mine, u, n);
  mine.size = sizeof mine;
  int rc = http_upload(self->host->http, self->host->device_id, &mine,
                       ops_op_cancelled);
  mine.size = u->size;
  memcpy(u, &mine, n);
  if (rc != C8Y_OK)
    log_warning("plugin %s: upload of %s failed: %s", self->name,
                mine.path ? mine.path : "(null)", mine.error);
  return rc;
}

/* ---- api: the platform for a plugin's own connections (ABI 1.2) ---- */

static int api_platform_auth(c8y_plugin *self, c8y_platform_auth *a) {
  if (!self || !a || a->size < sizeof *a)
    return C8Y_EINVAL;
  if (!self->host->http) {
    snprintf(a->error, sizeof a->error,
             "the agent has no REST client (see the start-up log)");
    return C8Y_EAUTH;
  }
  int rc = http_platform_auth(self->host->http, a);
  if (rc != C8Y_OK)
    log_warning("plugin %s: credentials for %s: %s", self->name,
                a->url ? a->url : "(null)", a->error);
  return rc;
}

static const c8y_api the_api = {
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
    .op_template = ops_op_template,
    .op_fragment = ops_op_fragment,
    .op_device = ops_op_device,
    .op_field_count = ops_op_field_count,
    .op_field = ops_op_field,
    .op_succeed = ops_op_succeed,
    .op_succeed_params = ops_op_succeed_params,
    .op_fail = ops_op_fail,
    .op_cancelled = ops_op_cancelled,
    .op_complete_on_reboot = ops_op_complete_on_reboot,
    .op_resume_after_restart = ops_op_resume_after_restart,
    .op_resumed = ops_op_resumed,
    .op_rebooted = ops_op_rebooted,
    .msg_id = api_msg_id,
    .msg_field_count = api_msg_field_count,
    .msg_field = api_msg_field,
    .device_id = api_device_id,
    .state_dir = api_state_dir,
    .add_child_operation = api_add_child_operation,
    .download = api_download,
    .upload = api_upload,
    .add_fragment_operation = api_add_fragment_operation,
    .add_device_operation = api_add_device_operation,
    .op_id = ops_op_id,
    .op_json = ops_op_json,
    .op_json_value = ops_op_json_value,
    .op_cancel_reason = ops_op_cancel_reason,
    .remove_child = api_remove_child,
    .batch_begin = api_batch_begin,
    .batch_commit = api_batch_commit,
    .batch_discard = api_batch_discard,
    .platform_auth = api_platform_auth,
    .set_health = api_set_health,
    .add_template_operation = api_add_template_operation,
    .config_origin = api_config_origin,
};

const c8y_api *plugin_host_api(void) { return &the_api; }

/* ---- lifecycle and worker ---- */

c8y_plugin *plugin_host_new_plugin(plugin_host *host, const char *name,
                                   const char *version, const char *path) {
  c8y_plugin *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->host = host;
  p->name = strdup(name);
  p->version = strdup(version ? version : "");
  p->path = strdup(path ? path : "");
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  if (!p->name || !p->version || !p->path) {
    plugin_host_free_plugin(p);
    return NULL;
  }
  return p;
}

int plugin_host_init_plugin(c8y_plugin *p, const c8y_plugin_info *info,
                            const char *crash_head, char *why, size_t len) {
  p->info = *info;
  free(p->crash_head);
  p->crash_head = crash_head ? strdup(crash_head) : NULL;
  p->registering = true;
  services_plugin_reset(p->host->svc, p->name);
  crash_enter(p->crash_head, "init", NULL);
  int rc = p->info.init(p, p->host->api ? p->host->api : plugin_host_api(),
                        &p->user_data);
  crash_leave();
  p->registering = false;
  if (rc >= 0 && !p->init_error)
    return C8Y_OK;
  if (rc >= 0)
    plugin_host_fini_plugin(p); /* init succeeded: it may hold resources */
  registry_remove_plugin(p->host->reg, p);
  if (p->init_error)
    snprintf(why, len, "%s", p->init_error);
  else
    snprintf(why, len, "init failed: %s", status_str(rc));
  return rc < 0 ? rc : C8Y_EINVAL;
}

void plugin_host_fini_plugin(c8y_plugin *p) {
  if (!p->info.fini || p->abandoned)
    return;
  crash_enter(p->crash_head, "fini", NULL);
  p->info.fini(p, p->user_data);
  crash_leave();
}

static void free_fields(char **f, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(f[i]);
  free(f);
}

static void run_produce(c8y_plugin *p, reg_producer *prod) {
  c8y_batch b = {.plugin = p, .producer = prod, .time_ms = clock_wall_ms()};
  live_batch = &b;
  crash_enter(p->crash_head, "producer", prod->name);
  int rc = prod->fn(p, &b, prod->user_data);
  crash_leave();
  live_batch = NULL;
  bool failed = rc < 0;
  if (rc < 0)
    log_warning("plugin %s: producer %s failed: %s; batch dropped", p->name,
                prod->name, status_str(rc));
  else if ((rc = batch_flush(&b)) != C8Y_OK)
    log_warning("plugin %s: producer %s: %s; batch dropped", p->name,
                prod->name, status_str(rc));
  batch_clear(&b);
  /* A plugin whose producers keep failing is down until one succeeds
   * (services.h); a full queue is the agent's trouble, not the plugin's. */
  if (failed && ++p->produce_failures == SERVICES_PRODUCE_FAILURES) {
    char why[300];
    snprintf(why, sizeof why, "producer %s failed %d times in a row: %s",
             prod->name, SERVICES_PRODUCE_FAILURES, status_str(rc));
    services_plugin_health(p->host->svc, p->name, SERVICES_BY_AGENT, false,
                           why);
  } else if (!failed && p->produce_failures) {
    if (p->produce_failures >= SERVICES_PRODUCE_FAILURES)
      services_plugin_health(p->host->svc, p->name, SERVICES_BY_AGENT, true,
                             NULL);
    p->produce_failures = 0;
  }
  atomic_store(&prod->busy, false);
}

static void run_job(c8y_plugin *p, plugin_job *job) {
  switch (job->kind) {
  case JOB_PRODUCE:
    run_produce(p, job->producer);
    break;
  case JOB_OPERATION:
    crash_enter(p->crash_head, "operation handler", ops_what(job->op));
    ops_run_handler(job->op);
    crash_leave();
    break;
  case JOB_MESSAGE: {
    c8y_message m = {.fields = job->fields, .n = job->nfields};
    crash_enter(p->crash_head, "message handler", job->message->message_id);
    job->message->fn(p, &m, job->message->user_data);
    crash_leave();
    free_fields(job->fields, job->nfields);
    break;
  }
  }
  free(job);
}

static void *worker_main(void *arg) {
  c8y_plugin *p = arg;
  crash_thread_init();
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->jobs_head && !p->stopping)
      pthread_cond_wait(&p->cv, &p->mu);
    plugin_job *job = p->jobs_head;
    if (!job)
      break; /* stopping and drained */
    p->jobs_head = job->next;
    if (!p->jobs_head)
      p->jobs_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    run_job(p, job);
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  crash_thread_fini();
  return NULL;
}

int plugin_host_start_worker(c8y_plugin *p) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  /* Plugins run small callbacks; a modest stack keeps the agent lean. */
  pthread_attr_setstacksize(&attr, 512 * 1024);
  int rc = pthread_create(&p->worker, &attr, worker_main, p);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    return rc == EAGAIN ? C8Y_EAGAIN : C8Y_ENOMEM;
  p->worker_running = true;
  return 0;
}

static void stop_accepting(c8y_plugin *p) {
  pthread_mutex_lock(&p->mu);
  p->stopping = true;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

void plugin_host_stop_worker(c8y_plugin *p) {
  if (!p->worker_running)
    return;
  stop_accepting(p);
  pthread_join(p->worker, NULL);
  p->worker_running = false;
}

bool plugin_host_stop_worker_within(c8y_plugin *p, int wait_ms) {
  if (!p->worker_running)
    return true;
  stop_accepting(p);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += wait_ms / 1000;
  until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  if (pthread_timedjoin_np(p->worker, NULL, &until) == 0) {
    p->worker_running = false;
    return true;
  }
  log_error("plugin %s: a callback did not return within %d ms of the stop; "
            "abandoning the plugin (it is not finalized or unloaded)",
            p->name, wait_ms);
  pthread_detach(p->worker);
  p->worker_running = false;
  p->abandoned = true;
  return false;
}

static int enqueue(c8y_plugin *p, plugin_job *job) {
  pthread_mutex_lock(&p->mu);
  if (p->stopping) {
    pthread_mutex_unlock(&p->mu);
    return C8Y_ESTATE;
  }
  if (p->jobs_tail)
    p->jobs_tail->next = job;
  else
    p->jobs_head = job;
  p->jobs_tail = job;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

int plugin_host_queue_produce(c8y_plugin *p, reg_producer *prod) {
  plugin_job *job = calloc(1, sizeof *job);
  if (!job)
    return C8Y_ENOMEM;
  job->kind = JOB_PRODUCE;
  job->producer = prod;
  atomic_store(&prod->busy, true);
  int rc = enqueue(p, job);
  if (rc != C8Y_OK) {
    atomic_store(&prod->busy, false);
    free(job);
  }
  return rc;
}

int plugin_host_queue_operation(c8y_plugin *p, c8y_operation *op) {
  plugin_job *job = calloc(1, sizeof *job);
  if (!job)
    return C8Y_ENOMEM;
  job->kind = JOB_OPERATION;
  job->op = op;
  int rc = enqueue(p, job);
  if (rc != C8Y_OK)
    free(job);
  return rc;
}

int plugin_host_queue_message(c8y_plugin *p, reg_message *m, char **fields,
                              size_t nfields) {
  plugin_job *job = calloc(1, sizeof *job);
  if (!job) {
    free_fields(fields, nfields);
    return C8Y_ENOMEM;
  }
  job->kind = JOB_MESSAGE;
  job->message = m;
  job->fields = fields;
  job->nfields = nfields;
  int rc = enqueue(p, job);
  if (rc != C8Y_OK) {
    free_fields(fields, nfields);
    free(job);
  }
  return rc;
}

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64)
    return SIZE_MAX;
  size_t row[65];
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

const char *plugin_host_closest(const char *word, const char *const *candidates,
                                size_t n) {
  const char *best = NULL;
  size_t best_d = strlen(word) <= 4 ? 1 : 2;
  for (size_t i = 0; i < n; i++) {
    size_t d = edit_distance(word, candidates[i]);
    if (d <= best_d && (!best || d < edit_distance(word, best)))
      best = candidates[i];
  }
  return best;
}

size_t plugin_host_report_unused_keys(c8y_plugin *p, bool quiet) {
  agent_config *c = p->host->cfg;
  char section[128];
  snprintf(section, sizeof section, "plugin.%s", p->name);
  size_t n = 0;
  for (size_t i = 0; i < c->nentries; i++) {
    config_entry *e = &c->entries[i];
    if (e->used || strcmp(e->section, section) != 0 ||
        strcmp(e->key, "enabled") == 0)
      continue;
    n++;
    if (quiet)
      continue;
    const char *hint =
        plugin_host_closest(e->key, (const char *const *)p->asked, p->nasked);
    log_warning("%s:%u: [%s] %s: unknown key (plugin %s never read it)%s%s%s",
                e->file, e->line, section, e->key, p->name,
                hint ? "; did you mean '" : "", hint ? hint : "",
                hint ? "'?" : "");
  }
  return n;
}

void plugin_host_free_plugin(c8y_plugin *p) {
  if (!p)
    return;
  plugin_host_stop_worker(p);
  plugin_job *job = p->jobs_head;
  while (job) {
    plugin_job *next = job->next;
    if (job->kind == JOB_MESSAGE)
      free_fields(job->fields, job->nfields);
    free(job);
    job = next;
  }
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p->name);
  free(p->version);
  free(p->path);
  free(p->init_error);
  for (size_t i = 0; i < p->nasked; i++)
    free(p->asked[i]);
  free(p->asked);
  for (size_t i = 0; i < p->norigins; i++)
    free(p->origins[i]);
  free(p->origins);
  free(p->state_dir);
  free(p->crash_head);
  free(p);
}
