/* capture: the agent's runtime with a capture transport instead of MQTT,
 * for hosts that run one plugin and play the platform themselves: the
 * plugin tests (tests/support/testhost) and the conformance kit
 * (c8y-plugin-check, sdk/check).
 *
 * It is the graph the daemon runs, built by the same code (runtime.h): the
 * loader (the same checks, dlopen by descriptor), the plugin host (api
 * table, batches, the plugin's worker), the services, the operation engine
 * with a real journal in the state dir, the registry and an outq opened
 * memory-only. Only the transport differs: the drain takes each batch the
 * link would publish, hands its lines to on_line in publish order and
 * acknowledges it, feeding the 501 tags back to the runtime as the link's
 * PUBACK does; the platform it plays needs no registration. The caller's thread
 * is the agent's main loop: it alone calls capture_pump (and ops_handle_*
 * through capture_ops); plugin threads only wake it.
 *
 * Differences from the daemon, all on purpose: the engine's clock can be
 * moved forward (capture_advance: timeouts without waiting for them), and
 * the platform's file transfers are answered from local files the caller
 * registers (capture_download, capture_upload: c8y_api slots a caller puts
 * into the table it hands the plugin).
 *
 * A restart of the agent is capture_free + capture_new on the same state
 * dir: the journal lives there, so what the plugin left executing is
 * settled (its lines reach on_line from capture_new) or resumed after the
 * next capture_load. A reboot in between is a new boot id (journal.h). */
#ifndef C8Y_CAPTURE_H
#define C8Y_CAPTURE_H

#include "config.h"
#include "ops.h"
#include "plugin_host.h"
#include "registry.h"

#include <c8y/plugin.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct capture capture;

typedef struct capture_options {
  const char *device_id;  /* the root device's external id */
  const char *state_dir;  /* created if missing; must be private to the host */
  uint32_t op_timeout_ms; /* [agent] op_timeout: handlers registered with 0 */
  /* The platform's name in transfer replies and binary URLs (NULL =
   * "capture"): "HTTP 404 from <name>: not found", "<name>://binaries/1". */
  const char *platform_name;
  void *ctx; /* for the callbacks; capture_ctx */
  /* Each line the agent would publish, in publish order (main loop). */
  void (*on_line)(void *ctx, const char *topic, const char *line);
  /* An operation ended: its final status is queued (main loop); nullable. */
  void (*on_finished)(void *ctx, const ops_outcome *r);
} capture_options;

/* Opens the memory queue, the journal in state_dir and the engine, and
 * settles what a previous host on this state dir left executing
 * (ops_recover). C8Y_OK, or an error with its reason in err. */
int capture_new(const capture_options *o, capture **out, char *err, size_t len);
/* Unloads the plugin (capture_unload with an unbounded stop) if loaded. */
void capture_free(capture *c);
void *capture_ctx(const capture *c);
/* The capture a plugin of it belongs to (any thread). */
capture *capture_of(const c8y_plugin *p);

/* Loads the plugin file as the agent's loader does (loader_load_file: its
 * checks, dlopen, init with `api`, NULL = the agent's table; its worker),
 * with `cfg` (borrowed until capture_unload; the plugin's section, the
 * stop grace) and `http` (borrowed, nullable: the REST client behind the
 * agent's own download/upload/platform_auth slots). Returns C8Y_OK, or the
 * init's status or C8Y_EINVAL with the loader's reason in why (also
 * logged, "plugin <path> refused: ..."). */
int capture_load(capture *c, const char *so_path, agent_config *cfg,
                 const c8y_api *api, struct http_ctx *http, char *why,
                 size_t len);
/* The agent's start after loading (also after a failed load): operations a
 * previous host left for resuming go to the handlers now registered, or
 * fail (ops_resume). Separate from capture_load so a caller can wrap the
 * registered callbacks before any of them runs. */
void capture_resume(capture *c);
/* The agent's stop: queued operations are not started, running ones are
 * told (op_cancelled), given [agent] stop_grace_ms, and what is left fails
 * (those waiting for a reboot or a restart stay journaled); the transfers
 * are stopped, then the worker, then fini runs; the plugin is released.
 * stop_budget_ms bounds the wait for the worker's last callback (< 0:
 * unbounded); a worker that does not return in time is abandoned as the
 * agent abandons it (never finalized or unloaded). Returns false then. */
bool capture_unload(capture *c, int stop_budget_ms);
/* The loaded plugin, or NULL. */
c8y_plugin *capture_plugin(capture *c);
ops *capture_ops(capture *c);
registry *capture_registry(capture *c);
plugin_host *capture_host(capture *c);

/* One turn of the agent's main loop: children added since the last turn
 * get their parked operations, queued lines are drained (and acknowledged)
 * into on_line, completions and timeouts are processed. */
void capture_pump(capture *c);
/* Sleeps until a plugin thread wakes the loop or ms passed. */
void capture_wait(capture *c, long long ms);
/* Wakes the loop (any thread): for a caller's wrappers of plugin callbacks. */
void capture_wake(capture *c);
/* The engine's clock: monotonic ms plus what capture_advance skipped. */
long long capture_now(const capture *c);
/* Moves the engine's clock forward (operation timeouts) and pumps. The
 * engine stamps deadlines with the monotonic clock, so every deadline set
 * later looks that much nearer: see capture_reset_clock. */
void capture_advance(capture *c, long long ms);
/* The engine's clock is the monotonic clock again. Only while no operation
 * runs (one that timed out meanwhile would get its grace again). */
void capture_reset_clock(capture *c);

/* Queues producer `prod` on the plugin's worker and waits up to timeout_ms
 * (< 0: unbounded) for its callback to return, then pumps. Returns true
 * with the callback's status in *rc, or false when it is still running. */
bool capture_run_producer(capture *c, reg_producer *prod, int timeout_ms,
                          int *rc);

/* ---- The platform's file transfers ----
 * capture_download and capture_upload are c8y_api download/upload slots.
 * A download of a URL registered with capture_add_download copies that
 * file into the plugin's state dir, honouring max_bytes (C8Y_ETOOBIG) and
 * sha256 (C8Y_ECHECKSUM); other URLs fail with C8Y_EHTTP "HTTP 404 from
 * <platform_name>: not found". capture_fail_transfers makes every transfer
 * return `status` with `reason` (0 = stop). Uploads are recorded and
 * answered with "<platform_name>://binaries/<n>" (n from 1). Any thread. */
int capture_download(c8y_plugin *self, c8y_download *d);
int capture_upload(c8y_plugin *self, c8y_upload *u);
void capture_add_download(capture *c, const char *url, const char *path);
void capture_fail_transfers(capture *c, int status, const char *reason);
size_t capture_download_count(capture *c); /* calls, also failed ones */
size_t capture_upload_count(capture *c);
/* Upload i's "type", "child" ("" = root), "file_name", "content_type",
 * "text" or "content" (the file's bytes); valid until capture_free. */
const char *capture_upload_field(capture *c, size_t i, const char *field);

#endif
