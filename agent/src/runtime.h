/* runtime: the agent's runtime graph, wired once, for the daemon (agent.c,
 * over the MQTT link) and for the hosts that run one plugin and play the
 * platform themselves (capture.c, over its capture transport): the
 * registry, the durable queue and the one upstream path into it, the
 * journal, the operation engine (handlers dispatched straight to the
 * plugins' workers), the services, the plugin host and the loaded plugins,
 * the routing of what arrives (downstream) and the local API with the
 * snapshot it shows.
 *
 * What carries the queue to the platform is the transport (runtime_transport):
 * link.c over Paho (session.c) in the daemon, capture.c's drain in the
 * capture hosts. It hands back what the platform acknowledged (runtime_acked),
 * what a lost link left unacknowledged (runtime_lost), that the pending
 * operations were requested (runtime_operations_requested) and what arrived
 * (runtime_message).
 *
 * Threads: everything here runs on the main loop, except that plugin
 * threads reach the queue (upstream), the engine's completions and the
 * services through their own locks, and wake the loop with the wake the
 * options gave. */
#ifndef C8Y_RUNTIME_H
#define C8Y_RUNTIME_H

#include "config.h"
#include "loader.h"
#include "ops.h"
#include "plugin_host.h"
#include "registry.h"
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct runtime runtime;

/* The transport as the runtime drives it. */
typedef struct runtime_transport {
  void *ctx;
  /* Main loop: connects, watches the link, moves queued lines on; the
   * next time (ms, monotonic) it needs to run, or -1. */
  long long (*step)(void *ctx, long long now);
  /* Main loop: only moves queued lines on (while stopping). */
  void (*drain)(void *ctx);
  /* Main loop: takes what arrived meanwhile; while stopping only
   * acknowledgements and losses. NULL: nothing arrives on its own. */
  void (*process)(void *ctx, bool stopping);
  /* Main loop: plugins were reloaded: what the platform knows of the
   * device is said again. NULL: the platform needs no registration. */
  void (*announce)(void *ctx);
  /* Main loop: plugins added children. NULL as announce. */
  void (*announce_children)(void *ctx);
  /* Whether lines can go now; "down", "connecting" or "up"; the server
   * ("ssl://host:port", nullable), for `c8y-agent status`. */
  bool (*is_up)(void *ctx);
  const char *(*state)(void *ctx);
  const char *(*server)(void *ctx);
} runtime_transport;

typedef struct runtime_options {
  /* Borrowed; a reload changes what it points at (runtime_reload_plugins).
   * NULL until runtime_set_config (a capture host's plugin config). */
  agent_config *cfg;
  const char *device_id; /* the root's external id */
  const char *state_dir; /* the journal, services, plugins' dirs */
  /* The durable queue's directory (created); NULL: memory only. */
  const char *queue_dir;
  size_t queue_max_bytes; /* 0: outq's default */
  uint32_t op_timeout_ms; /* handlers registered with 0 */
  /* Only the plugins and their registrations, without starting anything
   * (--list-plugins, --check-config): no journal, engine or services, a
   * memory queue, no wake. */
  bool inspect;
  /* The main loop's wake (any thread): a line was queued, an operation
   * completed, a child was added. Its ctx is the plugins' host's too
   * (capture_of). */
  void (*wake)(void *ctx);
  void *wake_ctx;
  /* false once the agent stops: acknowledged 501s are then only
   * journaled, not run (ops_on_acked). NULL: always running. */
  const bool *running;
  /* An operation finished (main loop, after its status was queued);
   * nullable. */
  void (*finished)(void *ctx, const ops_outcome *r);
  void *finished_ctx;
} runtime_options;

/* Opens the queue (replaying what a previous run left), the journal, the
 * engine and the services, and settles what the previous run left
 * executing (ops_recover). C8Y_OK or, with one line in err, C8Y_EIO,
 * C8Y_EEXIST (the queue is another agent's) or C8Y_ENOMEM. */
int runtime_new(const runtime_options *o, runtime **out, char *err,
                size_t errlen);
/* Stops the local API and frees the graph. With a plugin abandoned (its
 * code may still run and reach them) the engine and the services stay
 * allocated; the transport must be gone. NULL is a no-op. */
void runtime_free(runtime *c);

void runtime_set_transport(runtime *c,
                           const runtime_transport *t); /* NULL: none */
/* The REST client behind the plugins' transfers and the 124/s/dat
 * answers (borrowed, nullable). */
void runtime_set_http(runtime *c, struct http_ctx *http);
/* The configuration the plugins and the engine's stop grace read. */
void runtime_set_config(runtime *c, agent_config *cfg);

registry *runtime_registry(runtime *c);
ops *runtime_ops(runtime *c);
outq *runtime_queue(runtime *c);
const upstream *runtime_upstream(runtime *c);
plugin_host *runtime_host(runtime *c);
struct services *runtime_services(runtime *c);
plugin_set *runtime_plugins(runtime *c);

/* ---- plugins ---- */

/* Loads every plugin of dir (loader_load_all), reports each file's outcome
 * to the services, publishes the list to the local API and resets the
 * producers' schedule. */
void runtime_load_dir(runtime *c, const char *dir, bool start_workers);
/* Loads one plugin file with `api` as its table (NULL: the agent's).
 * C8Y_OK, or the init's status or C8Y_EINVAL with the loader's reason in
 * why; a refused plugin is released again. */
int runtime_load_file(runtime *c, const char *path, const c8y_api *api,
                      char *why, size_t len);
/* Operations kept by ops_recover go to the handlers now registered. */
void runtime_resume(runtime *c);
/* Stops every plugin (bounded), lets completions made by fini() become
 * lines and releases them. */
void runtime_stop_plugins(runtime *c);
/* A plugin's worker did not stop in time (its code may still run):
 * runtime_free keeps what it may reach. Set by runtime_stop_plugins, or by a
 * host that stops its plugin itself. */
bool runtime_plugin_abandoned(const runtime *c);
void runtime_mark_abandoned(runtime *c);
/* SIGHUP's part after the caller replaced *cfg: the plugins are stopped,
 * loaded again from cfg's plugin dir, and the transport announces them. */
void runtime_reload_plugins(runtime *c);

/* ---- the main loop ---- */

/* One turn of the daemon's loop: completions and timeouts, due producers,
 * the queue's periodic work, the transport, children added since the last
 * turn, the local API's snapshot. Returns the next deadline (ms,
 * monotonic) or -1. */
long long runtime_step(runtime *c, long long now);
/* Children added since the last call: their parked operations run, the
 * transport announces them. */
void runtime_children_step(runtime *c);
/* What arrived on the transport (runtime_transport.process). */
void runtime_process(runtime *c, bool stopping);
/* The operations' part of a turn (ops_process). */
long long runtime_process_ops(runtime *c, long long now);

/* ---- the transport's reports ---- */

void runtime_acked(runtime *c, upstream_tag tag);
void runtime_lost(runtime *c, const upstream_tag *inflight, size_t n);
void runtime_operations_requested(runtime *c);
void runtime_message(runtime *c, const char *topic, const char *payload,
                     size_t len);

/* ---- stopping ---- */

/* No operation starts any more; running ones are told (op_cancelled) and
 * get grace_ms, during which `turn` runs the main loop's stopping part
 * (at most wait_ms per call); what is left fails with "agent stopped"
 * (those waiting for a reboot or a restart stay journaled). */
void runtime_stop_operations(runtime *c, int grace_ms,
                             void (*turn)(void *ctx, int wait_ms), void *ctx);
/* A stopping turn: what arrived (acknowledgements, losses), completions,
 * and the queue moved on. */
void runtime_stopping_turn(runtime *c);

/* ---- the local API ---- */

/* Starts it (cfg's [api]) with the plugins' upstream path and publishes
 * the snapshot. 0 also when disabled; else its error with err. */
int runtime_start_api(runtime *c, char *err, size_t errlen);
void runtime_stop_api(runtime *c);

#endif
