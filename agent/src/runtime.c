/* runtime: see runtime.h. */
#include "runtime.h"

#include "clock.h"
#include "downstream.h"
#include "fsutil.h"
#include "journal.h"
#include "localapi.h"
#include "log.h"
#include "outq.h"
#include "scheduler.h"
#include "services.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct runtime {
  runtime_options opt;
  char *device_id, *state_dir;
  agent_config *cfg;
  registry *reg;
  outq *q;
  upstream up; /* every line's way into q */
  journal *j;
  ops *ops;
  services *svc;
  plugin_host host;
  plugin_set plugins;
  downstream down;
  runtime_transport tr;
  bool has_transport;
  localapi *api;
  uint64_t child_seq; /* registry_child_seq the engine has seen */
  bool abandoned;
};

/* With a plugin thread abandoned (still running, it may reach them) the
 * engine and the services stay allocated until the process ends; kept
 * reachable here so leak checkers see that as deliberate. */
static void *volatile kept_for_abandoned[2];

/* ---- the engine's host ---- */

static void dispatch(void *ctx, c8y_operation *op) {
  (void)ctx;
  if (plugin_host_queue_operation(ops_plugin(op), op) != 0)
    ops_dispatch_failed(op, "the plugin is shutting down");
}

static void finished(void *ctx, const ops_outcome *r) {
  runtime *c = ctx;
  localapi_op_row row = {.id = (unsigned long long)r->id,
                         .template_id = r->template_id,
                         .fragment = r->fragment,
                         .device = r->device,
                         .ok = r->ok,
                         .reason = r->reason};
  localapi_record_op(c->api, &row);
  if (c->opt.finished)
    c->opt.finished(c->opt.finished_ctx, r);
}

/* An operation completed on some thread: the loop processes it. */
static void wake_loop(void *ctx) {
  runtime *c = ctx;
  if (c->opt.wake)
    c->opt.wake(c->opt.wake_ctx);
}

/* ---- construction ---- */

static int open_queue(runtime *c, char *err, size_t errlen) {
  const char *dir = c->opt.inspect ? NULL : c->opt.queue_dir;
  if (dir && fsutil_mkdir_p(dir, 0750) != 0) {
    snprintf(err, errlen, "queue dir %s: %s", dir, strerror(errno));
    return C8Y_EIO;
  }
  outq_options qo;
  outq_default_options(&qo, dir);
  if (c->opt.queue_max_bytes)
    qo.max_bytes = c->opt.queue_max_bytes;
  int rc = outq_open(&qo, &c->q, err, errlen);
  if (rc != 0)
    return rc;
  outq_stats st;
  outq_get_stats(c->q, &st);
  if (st.replayed)
    log_notice("%llu queued lines survived the restart and will be sent",
               (unsigned long long)st.replayed);
  return C8Y_OK;
}

int runtime_new(const runtime_options *o, runtime **out, char *err,
                size_t errlen) {
  *out = NULL;
  runtime *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return C8Y_ENOMEM;
  }
  c->opt = *o;
  c->cfg = o->cfg;
  c->device_id = strdup(o->device_id ? o->device_id : "");
  c->state_dir = strdup(o->state_dir ? o->state_dir : "");
  c->reg = registry_new();
  int rc = C8Y_ENOMEM;
  if (!c->device_id || !c->state_dir || !c->reg) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  if ((rc = open_queue(c, err, errlen)) != 0)
    goto fail;
  c->up = (upstream){.q = c->q,
                     .reg = c->reg,
                     .wake = o->inspect ? NULL : o->wake,
                     .wake_ctx = o->wake_ctx};
  if (!o->inspect) {
    if ((rc = journal_open(c->state_dir, &c->j, err, errlen)) != 0)
      goto fail;
    rc = C8Y_ENOMEM;
    if (services_new(c->device_id, c->state_dir, &c->up, c->reg, &c->svc) !=
        0) {
      snprintf(err, errlen, "out of memory");
      goto fail;
    }
    ops_host oh = {.ctx = c,
                   .dispatch = dispatch,
                   .wake = wake_loop,
                   .finished = finished};
    if (ops_new(c->device_id, c->reg, &c->up, c->j, &oh, o->op_timeout_ms,
                &c->ops) != 0) {
      snprintf(err, errlen, "out of memory");
      goto fail;
    }
    /* The agent's start: what the previous run on this state dir left
     * executing is settled, or kept for runtime_resume. */
    ops_recover(c->ops);
  }
  c->host = (plugin_host){.reg = c->reg,
                          .up = &c->up,
                          .device_id = c->device_id,
                          .state_dir = c->state_dir,
                          .svc = c->svc};
  runtime_set_config(c, o->cfg);
  c->down = (downstream){.ops = c->ops, .reg = c->reg};
  *out = c;
  return C8Y_OK;
fail:
  runtime_free(c);
  return rc;
}

void runtime_free(runtime *c) {
  if (!c)
    return;
  runtime_stop_api(c);
  if (!c->abandoned) {
    ops_free(c->ops);
    services_free(c->svc); /* else its thread may still call set_health */
  } else {
    kept_for_abandoned[0] = c->ops;
    kept_for_abandoned[1] = c->svc;
  }
  registry_free(c->reg);
  outq_close(c->q);
  journal_close(c->j);
  free(c->device_id);
  free(c->state_dir);
  free(c);
}

void runtime_set_transport(runtime *c, const runtime_transport *t) {
  c->has_transport = t != NULL;
  if (t)
    c->tr = *t;
}

void runtime_set_http(runtime *c, struct http_ctx *http) {
  c->host.http = http;
  c->down.http = http;
}

void runtime_set_config(runtime *c, agent_config *cfg) {
  c->cfg = cfg;
  c->host.cfg = cfg;
  if (cfg && c->ops)
    ops_set_cancel_grace(c->ops, (uint32_t)cfg->stop_grace_ms);
}

registry *runtime_registry(runtime *c) { return c->reg; }
ops *runtime_ops(runtime *c) { return c->ops; }
outq *runtime_queue(runtime *c) { return c->q; }
const upstream *runtime_upstream(runtime *c) { return &c->up; }
plugin_host *runtime_host(runtime *c) { return &c->host; }
services *runtime_services(runtime *c) { return c->svc; }
plugin_set *runtime_plugins(runtime *c) { return &c->plugins; }

/* ---- plugins ---- */

/* What the loader made of each plugin file, for the plugins' services. */
static void report_plugins(runtime *c) {
  for (size_t i = 0; i < c->plugins.nentries; i++) {
    const loader_entry *e = &c->plugins.entries[i];
    char name[64];
    const char *n = e->name;
    if (!n) {
      /* Not loaded far enough to know its name: the file's. */
      const char *base = strrchr(e->file, '/');
      snprintf(name, sizeof name, "%s", base ? base + 1 : e->file);
      char *dot = strstr(name, ".so");
      if (dot)
        *dot = '\0';
      /* It becomes part of a topic: nothing a topic cannot carry. */
      if (!*name || strspn(name, "abcdefghijklmnopqrstuvwxyz"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                        strlen(name))
        continue;
      n = name;
    }
    char why[600];
    snprintf(why, sizeof why, "%s%s",
             e->disabled ? "disabled in the configuration" : "",
             e->disabled ? "" : (e->reason ? e->reason : "not loaded"));
    services_plugin_loaded(c->svc, n, e->loaded, !e->loaded && !e->disabled,
                           why);
  }
  services_plugins_done(c->svc);
}

static c8y_plugin *loaded_plugin(const plugin_set *s, const char *name) {
  for (size_t i = 0; name && i < s->n; i++)
    if (strcmp(s->plugins[i]->name, name) == 0)
      return s->plugins[i];
  return NULL;
}

/* The plugin list `c8y-agent status` shows. */
static void publish_plugins(runtime *c) {
  if (!c->api)
    return;
  size_t n = c->plugins.nentries;
  localapi_plugin_row *rows = calloc(n ? n : 1, sizeof *rows);
  if (!rows)
    return;
  for (size_t i = 0; i < n; i++) {
    const loader_entry *e = &c->plugins.entries[i];
    localapi_plugin_row *r = &rows[i];
    *r = (localapi_plugin_row){.name = e->name,
                               .version = e->version,
                               .file = e->file,
                               .state = e->loaded     ? "loaded"
                                        : e->disabled ? "disabled"
                                                      : "failed",
                               .reason = e->reason};
    c8y_plugin *lp = e->loaded ? loaded_plugin(&c->plugins, e->name) : NULL;
    if (lp)
      registry_count_for(c->reg, lp, &r->producers, &r->handlers);
  }
  localapi_set_plugins(c->api, rows, n);
  free(rows);
}

/* The link state `c8y-agent status` shows. */
static void publish_state(runtime *c) {
  if (!c->api)
    return;
  bool t = c->has_transport;
  localapi_set_state(c->api, t && c->tr.state ? c->tr.state(c->tr.ctx) : "down",
                     t && c->tr.server ? c->tr.server(c->tr.ctx) : NULL,
                     c->ops ? ops_active(c->ops) : 0);
}

void runtime_load_dir(runtime *c, const char *dir, bool start_workers) {
  c->host.api = NULL;
  loader_load_all(&c->host, dir, start_workers, &c->plugins);
  if (c->svc)
    report_plugins(c);
  publish_plugins(c);
}

int runtime_load_file(runtime *c, const char *path, const c8y_api *api,
                      char *why, size_t len) {
  c->host.api = api;
  loader_load_file(&c->host, path, true, &c->plugins);
  if (c->plugins.n == 1)
    return C8Y_OK;
  const loader_entry *e = c->plugins.nentries ? &c->plugins.entries[0] : NULL;
  int rc = e && e->status < 0 ? e->status : C8Y_EINVAL;
  snprintf(why, len, "%s", e && e->reason ? e->reason : "not loaded");
  loader_release_all(&c->plugins, c->reg);
  return rc;
}

void runtime_resume(runtime *c) {
  if (c->ops)
    ops_resume(c->ops);
}

void runtime_stop_plugins(runtime *c) {
  loader_stop_all(&c->plugins);
  for (size_t i = 0; i < c->plugins.n; i++)
    c->abandoned |= c->plugins.plugins[i]->abandoned;
  /* Completions made by fini() become durable 503/502 lines. */
  if (c->ops)
    ops_process(c->ops, clock_mono_ms());
  loader_release_all(&c->plugins, c->reg);
}

void runtime_mark_abandoned(runtime *c) { c->abandoned = true; }

bool runtime_plugin_abandoned(const runtime *c) { return c->abandoned; }

void runtime_reload_plugins(runtime *c) {
  runtime_set_config(c, c->cfg);
  runtime_load_dir(c, c->cfg->plugin_dir, true);
  scheduler_reset(c->reg, clock_mono_ms());
  if (c->has_transport && c->tr.announce)
    c->tr.announce(c->tr.ctx);
}

/* ---- the main loop ---- */

static void sooner(long long *deadline, long long t) {
  if (t >= 0 && (*deadline < 0 || t < *deadline))
    *deadline = t;
}

void runtime_children_step(runtime *c) {
  uint64_t seq = registry_child_seq(c->reg);
  if (seq != c->child_seq) {
    c->child_seq = seq;
    if (c->ops)
      ops_children_changed(c->ops);
  }
  if (c->has_transport && c->tr.announce_children)
    c->tr.announce_children(c->tr.ctx);
}

long long runtime_process_ops(runtime *c, long long now) {
  return c->ops ? ops_process(c->ops, now) : -1;
}

long long runtime_step(runtime *c, long long now) {
  long long deadline = -1;
  sooner(&deadline, runtime_process_ops(c, now));
  sooner(&deadline, scheduler_run(c->reg, now));
  long long next_q = outq_next_deadline(c->q);
  if (next_q >= 0 && next_q <= now) {
    outq_tick(c->q);
    next_q = outq_next_deadline(c->q);
  }
  sooner(&deadline, next_q);
  if (c->has_transport && c->tr.step)
    sooner(&deadline, c->tr.step(c->tr.ctx, now));
  runtime_children_step(c);
  publish_state(c);
  return deadline;
}

void runtime_process(runtime *c, bool stopping) {
  if (c->has_transport && c->tr.process)
    c->tr.process(c->tr.ctx, stopping);
}

/* ---- the transport's reports ---- */

void runtime_acked(runtime *c, upstream_tag tag) {
  if (c->ops)
    ops_on_acked(c->ops, tag, !c->opt.running || *c->opt.running);
}

void runtime_lost(runtime *c, const upstream_tag *inflight, size_t n) {
  if (c->ops)
    ops_on_disconnect(c->ops, inflight, n);
}

void runtime_operations_requested(runtime *c) {
  if (c->ops)
    ops_on_pending_requested(c->ops, clock_mono_ms());
}

void runtime_message(runtime *c, const char *topic, const char *payload,
                     size_t len) {
  downstream_handle(&c->down, topic, payload, len);
}

/* ---- stopping ---- */

void runtime_stop_operations(runtime *c, int grace_ms,
                             void (*turn)(void *ctx, int wait_ms), void *ctx) {
  if (!c->ops)
    return;
  ops_stop(c->ops);
  size_t n = ops_cancel_running(c->ops);
  if (n > 0) {
    log_notice("stopping: %zu running operation(s) told to stop; waiting up "
               "to %d ms",
               n, grace_ms);
    long long until = clock_mono_ms() + grace_ms;
    while (ops_running(c->ops) > 0 && clock_mono_ms() < until)
      turn(ctx, 20);
  }
  ops_fail_all(c->ops, "agent stopped");
}

void runtime_stopping_turn(runtime *c) {
  runtime_process(c, true);
  runtime_process_ops(c, clock_mono_ms());
  if (c->has_transport && c->tr.drain)
    c->tr.drain(c->tr.ctx);
}

/* ---- the local API ---- */

int runtime_start_api(runtime *c, char *err, size_t errlen) {
  int rc = localapi_start(c->cfg, &c->up, &c->api, err, errlen);
  publish_plugins(c);
  publish_state(c);
  return rc;
}

void runtime_stop_api(runtime *c) {
  localapi_stop(c->api);
  c->api = NULL;
}
