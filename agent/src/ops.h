/* ops: the operation engine. The core, not the plugins, owns the Cumulocity
 * operation lifecycle:
 *   s/ds record -> queued per (device, fragment), strictly FIFO
 *   head of its queue -> 501 queued (volatile) -> on PUBACK: journal begin,
 *   handler dispatched to the plugin's worker -> completion (any thread) or
 *   timeout -> 503/502 queued durably -> journal end -> next in queue.
 * Dispatch: the root device's operations go to the plugin serving the
 * template for the root; a child's to the plugin that registered the child
 * (registry_handler_for); a child's operation its plugin does not handle
 * gets 501 + 502 "not supported by <child>". The journal entry ends only
 * once the final status is queued durably. */
#ifndef C8Y_OPS_H
#define C8Y_OPS_H

#include "journal.h"
#include "outq.h"
#include "registry.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ops ops;

/* How an operation ended, for the host's history (borrowed strings). */
typedef struct ops_outcome {
  uint64_t id;
  const char *template_id, *fragment, *device;
  bool ok;
  const char *reason; /* failures: what went upstream with the 502 */
} ops_outcome;

typedef struct ops_host {
  void *ctx;
  /* Queue the handler call on the plugin's worker (main thread). */
  void (*dispatch)(void *ctx, c8y_operation *op);
  /* An operation completed on some thread: call ops_process soon. */
  void (*wake)(void *ctx);
  /* An operation finished (main thread, after its 503/502 was queued);
   * nullable. */
  void (*finished)(void *ctx, const ops_outcome *r);
} ops_host;

/* Max failure reason sent upstream, in bytes. */
#define OPS_REASON_MAX 500

/* 0 or C8Y_ENOMEM. */
int ops_new(const char *root_device, registry *reg, outq *q, journal *j,
            const ops_host *host, uint32_t default_timeout_ms, ops **out);
void ops_free(ops *o);

/* A payload that arrived on s/ds. */
void ops_handle_payload(ops *o, const char *payload, size_t len);
/* A batch carrying this tag (an operation's 501) was acknowledged. With
 * run false (the agent is stopping, plugins are gone) the operation is only
 * journaled, so the next start reports it failed instead of leaving it
 * EXECUTING forever. */
void ops_on_acked(ops *o, uint64_t tag, bool run);
/* The MQTT link dropped (after outq_requeue_inflight). inflight: the tags
 * of the batches that were sent but not acknowledged. An operation whose
 * 501 was among them may be EXECUTING on the platform or still PENDING: it
 * stays first in its queue until the reconnect settles it (it comes back
 * with the 500: PENDING, started again; another operation of its fragment
 * comes first, or nothing within a few seconds after the 500 was
 * acknowledged: EXECUTING, run). Operations not yet sent are forgotten:
 * the 500 brings them back. */
void ops_on_disconnect(ops *o, const uint64_t *inflight, size_t ninflight);
/* The reconnect's 500 was acknowledged. */
void ops_on_pending_requested(ops *o, long long now_ms);
/* Completions and timeouts; returns the next deadline (ms, monotonic) or
 * -1 when none. */
long long ops_process(ops *o, long long now_ms);
/* Finishes what the previous run left executing (see journal.h).
 * Operations marked with op_resume_after_restart are kept for ops_resume. */
void ops_recover(ops *o);
/* After the plugins are loaded: hands each operation kept by ops_recover to
 * the handler now registered for its template (no second 501), or fails it
 * (502) when there is none or its child device is gone. */
void ops_resume(ops *o);
/* The agent is stopping: operations still queued are not started (they
 * stay PENDING in Cumulocity and come back with the next start's 500). */
void ops_stop(ops *o);
/* Operations known to the engine (queued, starting or running). */
size_t ops_active(ops *o);
/* Operations whose handler is running and not yet completed. */
size_t ops_running(ops *o);
/* Shutdown, step 1: op_cancelled() turns true for every running operation
 * (except those waiting for a reboot, which the next start settles).
 * Returns how many were cancelled. */
size_t ops_cancel_running(ops *o);
/* Shutdown, step 2: ends every running operation still not completed
 * (except those waiting for a reboot) with a 502 queued durably; the
 * plugin's late completion returns C8Y_ETIMEDOUT. */
void ops_fail_all(ops *o, const char *reason);

/* The handler could not be queued (the plugin is stopping): fails the
 * operation and drops the reference the worker would have released. */
void ops_dispatch_failed(c8y_operation *op, const char *reason);
/* Runs the handler on the calling (plugin worker) thread. */
void ops_run_handler(c8y_operation *op);
/* The plugin that must run this operation's handler. */
c8y_plugin *ops_plugin(const c8y_operation *op);

/* c8y_api implementations. */
const char *ops_op_template(const c8y_operation *op);
const char *ops_op_fragment(const c8y_operation *op);
const char *ops_op_device(const c8y_operation *op);
size_t ops_op_field_count(const c8y_operation *op);
const char *ops_op_field(const c8y_operation *op, size_t index);
int ops_op_succeed(c8y_operation *op, const char *result);
int ops_op_succeed_params(c8y_operation *op, const char *const *params,
                          size_t n);
int ops_op_fail(c8y_operation *op, const char *reason);
int ops_op_cancelled(const c8y_operation *op);
int ops_op_complete_on_reboot(c8y_operation *op);
int ops_op_resume_after_restart(c8y_operation *op);
int ops_op_resumed(const c8y_operation *op);
int ops_op_rebooted(const c8y_operation *op);

#endif
