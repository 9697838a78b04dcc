/* ops: the operation engine. The core, not the plugins, owns the Cumulocity
 * operation lifecycle:
 *   a copy arrives (s/ds line, s/dc/<xid> custom template record, JSON on
 *   devicecontrol/notifications) -> one operation per Cumulocity operation,
 *   queued per (device, fragment), strictly FIFO
 *   head of its queue -> 504,<id> (or 501,<fragment> when the id is not
 *   known) queued (volatile) -> on PUBACK: journal begin, handler
 *   dispatched to the plugin's worker -> completion (any thread) or timeout
 *   -> 506/505 (503/502) queued durably -> journal end -> next in queue.
 *
 * Channels and ids (sources: Cumulocity's static templates page: no
 * downstream template carries the operation id, 504-506 take it; its "JSON
 * via MQTT" page: devicecontrol/notifications carries "id", "status",
 * "externalSource" and the fragments, and "upon subscription, all
 * operations which are not yet forwarded will be published"; thin-edge's
 * c8y mapper (crates/extensions/c8y_mapper_ext, c8y.smartrest.
 * use_operation_id, default true): JSON operations with their id, statuses
 * 504/505/506 on the device's own SmartREST topic, no id for anything that
 * came as SmartREST, PENDING operations published again on JSON after
 * every 500 (thin-edge issues #3403, #3744, PR #2482)):
 *   - A JSON document carries its id: copies with a known id are dropped,
 *     documents whose status is not PENDING never start anything.
 *   - A SmartREST line has no id. A line and a document of the same device
 *     and fragment are one operation when each is the oldest copy not yet
 *     matched on its channel: Cumulocity sends both copies of a new
 *     operation at once, and PENDING operations oldest first on each
 *     channel. The operation starts on the first copy its handler can run
 *     from (a template handler needs the line, a fragment handler runs from
 *     either); the other copy only adds what it carries (the id and the
 *     document, or the line's fields). A copy that arrives within
 *     OPS_PAIR_WINDOW_MS after its operation ended is dropped.
 *   - Statuses go by id whenever the id is known (also when the 501 went
 *     out by fragment before the JSON copy arrived), by fragment otherwise,
 *     on the device's own topic (s/us or s/us/<child>: 504-506 require the
 *     requesting device to be the operation's source).
 *
 * Dispatch: by device and template or fragment (registry_handler_for,
 * registry_fragment_handler_for); a child's operation its plugin does not
 * handle gets 501 + 502 "not supported by <child>". An operation for a child
 * no plugin announced (yet) is parked (bounded) and dispatched once a plugin
 * adds that child (ops_children_changed). The journal entry ends only once
 * the final status is queued durably; it records Cumulocity's id, so a
 * restart or a reboot completes the right operation.
 *
 * Device profiles (profile.h): a c8y_DeviceProfile of the root that no
 * plugin serves is run by the engine: one operation (one 504/501, 121 false
 * at its start, 121 true once every step succeeded, one final status)
 * whose steps are operations of their own template and fragment, queued in
 * that fragment's FIFO and run by its handler, without statuses of their
 * own; a failing step fails the profile with "<step>: <reason>". The
 * journal records the profile and each step, so a step a plugin resumes
 * after a restart (firmware that reboots) is handed back to it and the
 * profile goes on. 527 and 531 (528 and 529) are one operation also when
 * they come in publishes of their own.
 *
 * Handles: plugins get a handle number, not the engine's memory. Numbers
 * are never reused (64 bits), so a late or second completion after any
 * number of operations finds nothing and returns C8Y_ESTATE. */
#ifndef C8Y_OPS_H
#define C8Y_OPS_H

#include "journal.h"
#include "registry.h"
#include "smartrest.h"
#include "upstream.h"

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
  const char *c8y_id; /* Cumulocity's id, or NULL */
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
/* How long the two copies of one operation (SmartREST line and JSON) are
 * matched after one of them arrived or its operation ended. */
#define OPS_PAIR_WINDOW_MS 30000
/* Operations for children nobody announced yet, kept for ops_children_changed
 * (the oldest are dropped beyond this; they stay PENDING on the platform and
 * come back with the next connect's 500). */
#define OPS_PARKED_MAX 1000

/* 0 or C8Y_ENOMEM. */
/* Statuses go out through up (borrowed). */
int ops_new(const char *root_device, registry *reg, const upstream *up,
            journal *j, const ops_host *host, uint32_t default_timeout_ms,
            ops **out);
void ops_free(ops *o);
/* How long a handler told to stop (timeout) has to report why before the
 * engine fails the operation itself (default 3000 ms). */
void ops_set_cancel_grace(ops *o, uint32_t grace_ms);

/* A payload that arrived on s/ds (decoded here, or by the caller). Records
 * that are no operation (106, 124, 601, 603) are ignored. */
void ops_handle_payload(ops *o, const char *payload, size_t len);
void ops_handle_records(ops *o, const smartrest_records *recs);
/* A record on s/dc/<xid> whose message id is a template operation
 * (registry_find_template_op): fields[0] the message id, fields[1] the
 * device, the rest its parameters. */
void ops_handle_template_record(ops *o, const reg_template_op *t,
                                const smartrest_record *r);
/* A payload that arrived on devicecontrol/notifications: one or more JSON
 * documents (newline-separated or just concatenated). A document that does
 * not parse costs one warning; the documents after it are still read. */
void ops_handle_json(ops *o, const char *payload, size_t len);
/* Children were added (registry_child_seq changed): parked operations of
 * the new children are dispatched. */
void ops_children_changed(ops *o);

/* A batch carrying this tag was acknowledged: an operation's 504/501
 * (UPSTREAM_TAG_OPERATION; other kinds are not the engine's and ignored)
 * starts its handler. With run false (the agent is stopping, plugins are
 * gone) the operation is only journaled, so the next start reports it
 * failed instead of leaving it EXECUTING forever. */
void ops_on_acked(ops *o, upstream_tag tag, bool run);
/* The MQTT link dropped (after outq_requeue_inflight). inflight: the tags
 * of the batches that were sent but not acknowledged. An operation whose
 * 501 was among them may be EXECUTING on the platform or still PENDING: it
 * stays first in its queue until the reconnect settles it (it comes back
 * with the 500: PENDING, started again; another operation of its fragment
 * comes first, or nothing within a few seconds after the 500 was
 * acknowledged: EXECUTING, run). Operations not yet sent are forgotten:
 * the 500 brings them back. */
void ops_on_disconnect(ops *o, const upstream_tag *inflight, size_t ninflight);
/* The reconnect's 500 was acknowledged. */
void ops_on_pending_requested(ops *o, long long now_ms);
/* Completions and timeouts; returns the next deadline (ms, monotonic) or
 * -1 when none. */
long long ops_process(ops *o, long long now_ms);
/* Finishes what the previous run left executing (see journal.h).
 * Operations marked with op_resume_after_restart are kept for ops_resume. */
void ops_recover(ops *o);
/* After the plugins are loaded: hands each operation kept by ops_recover to
 * the handler now registered for its template or fragment (no second 501),
 * or fails it (502) when there is none or its child device is gone. */
void ops_resume(ops *o);
/* The agent is stopping: operations still queued are not started (they
 * stay PENDING in Cumulocity and come back with the next start's 500). */
void ops_stop(ops *o);
/* Operations known to the engine (queued, starting or running). */
size_t ops_active(ops *o);
/* Operations whose handler is running and not yet completed. */
size_t ops_running(ops *o);
/* Shutdown, step 1: op_cancelled() turns true for every running operation
 * (except those waiting for a reboot, which the next start settles), with
 * op_cancel_reason() C8Y_ECANCELED. Returns how many were cancelled. */
size_t ops_cancel_running(ops *o);
/* Shutdown, step 2: ends every running operation still not completed
 * (except those waiting for a reboot) with a 502 queued durably; the
 * plugin's late completion returns C8Y_ETIMEDOUT. */
void ops_fail_all(ops *o, const char *reason);

/* Engine side (the internal pointer, never a plugin's handle). */
/* The handler could not be queued (the plugin is stopping): fails the
 * operation and drops the reference the worker would have released. */
void ops_dispatch_failed(c8y_operation *op, const char *reason);
/* Runs the handler on the calling (plugin worker) thread. */
void ops_run_handler(c8y_operation *op);
/* The plugin that must run this operation's handler. */
c8y_plugin *ops_plugin(const c8y_operation *op);
/* What the crash record names: the template id or the fragment. */
const char *ops_what(const c8y_operation *op);

/* The plugin a live handle belongs to, or NULL (any thread). */
c8y_plugin *ops_handle_plugin(const c8y_operation *handle);

/* c8y_api implementations: they take the plugin's handle. */
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
const char *ops_op_id(const c8y_operation *op);
const char *ops_op_json(const c8y_operation *op);
const char *ops_op_json_value(const c8y_operation *op, const char *path);
int ops_op_cancel_reason(const c8y_operation *op);

#endif
