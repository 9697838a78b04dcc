/* c8y/plugin.h - the only header a c8y-agent plugin includes.
 *
 * C99 and C++ compatible, libc headers only. A plugin exports exactly one
 * symbol, c8y_plugin_info_v1, made with C8Y_PLUGIN(...). Everything the agent
 * offers reaches the plugin through the c8y_api table handed to init(), so a
 * plugin links with -Wl,--no-undefined and needs no agent symbols.
 *
 * ABI rules: the major version is part of the exported symbol's name; a minor
 * bump only appends fields at the end of c8y_api / c8y_plugin_info; status
 * values are never renumbered or reused. Use C8Y_API_HAS() before calling
 * anything newer than 1.0.
 *
 * OWNERSHIP: strings a plugin passes in are copied before the call returns
 * (stack memory is fine). Strings the agent returns are borrowed, with the
 * lifetime stated next to each function. Nothing is freed across the boundary.
 *
 * THREADS: the agent never runs two callbacks of the same plugin at the same
 * time (each plugin has its own worker thread), so a plugin needs no locks
 * unless it starts threads itself. Functions marked [any thread] may also be
 * called from threads the plugin created; all others only from inside a
 * callback of the same plugin (init counts as one).
 *
 * CONTRACT: next to each function: [any thread] or not, [blocks] when it
 * may wait (only ever the calling thread, never the agent's main loop),
 * and the status codes it returns. A function not marked [blocks] returns
 * without waiting for the network or another plugin (it may take a short
 * internal lock or write the agent's queue).
 */
#ifndef C8Y_PLUGIN_H
#define C8Y_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Major must equal the agent's; minor must be <= the agent's. */
#define C8Y_ABI_MAJOR 1
#define C8Y_ABI_MINOR 2

#if defined(__GNUC__)
#define C8Y_EXPORT __attribute__((visibility("default")))
#define C8Y_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define C8Y_EXPORT
#define C8Y_PRINTF(f, a)
#endif

/* Opaque handles, owned by the agent. */
typedef struct c8y_plugin c8y_plugin;       /* this loaded plugin */
typedef struct c8y_batch c8y_batch;         /* samples of one produce call */
typedef struct c8y_operation c8y_operation; /* one Cumulocity operation */
typedef struct c8y_message c8y_message;     /* one downstream custom record */

/* Longest SmartREST line the agent publishes (Cumulocity's MQTT payload
 * limit), in bytes; a longer line is refused with C8Y_ETOOBIG. */
#define C8Y_MAX_LINE 16000

/* 0 ok, > 0 non-error status, < 0 error. Fixed forever. */
enum {
  C8Y_OK = 0,
  C8Y_PENDING = 1,    /* operation handler: "I complete it later" */
  C8Y_EINVAL = -1,    /* bad argument or bad config value */
  C8Y_ENOMEM = -2,    /* out of memory */
  C8Y_ENOTSUP = -3,   /* not supported by this agent */
  C8Y_EEXIST = -4,    /* name or template id already registered */
  C8Y_ESTATE = -5,    /* called at the wrong time (e.g. register after init) */
  C8Y_EAGAIN = -6,    /* agent queue full: data dropped, try next cycle */
  C8Y_EIO = -7,       /* plugin-side I/O failure */
  C8Y_ETIMEDOUT = -8, /* the operation timed out and was already failed */
  C8Y_ETOOBIG = -9,   /* a line would exceed the 16000-byte payload limit */
  /* ABI 1.1 */
  C8Y_EHTTP = -10,     /* the HTTP peer answered with an error status */
  C8Y_EAUTH = -11,     /* the platform refused the device's credentials */
  C8Y_ENET = -12,      /* DNS, connect, TLS or a cut transfer */
  C8Y_ECHECKSUM = -13, /* the downloaded file did not match its sha256 */
  C8Y_ECANCELED = -14, /* stopped because the operation was cancelled */
  /* ABI 1.2 */
  C8Y_ERATE = -15 /* over the plugin's configured line rate: not queued */
};

/* ABI 1.2: add_device_operation's `device` for "every child this plugin
 * owns, also those added later". */
#define C8Y_ALL_CHILDREN "*"

/* Numerically equal to syslog priorities. */
typedef enum c8y_log_level {
  C8Y_LOG_ERROR = 3,
  C8Y_LOG_WARNING = 4,
  C8Y_LOG_NOTICE = 5,
  C8Y_LOG_INFO = 6,
  C8Y_LOG_DEBUG = 7
} c8y_log_level;

typedef enum c8y_severity {
  C8Y_CRITICAL = 301,
  C8Y_MAJOR = 302,
  C8Y_MINOR = 303,
  C8Y_WARNING = 304
} c8y_severity;

/* ---- Callbacks a plugin implements --------------------------------------- */

/* Add the current samples to `out` (valid only during the call). Return < 0
 * to drop the batch; the agent logs the status text. */
typedef int (*c8y_produce_fn)(c8y_plugin *self, c8y_batch *out,
                              void *user_data);

/* Handle one operation. The agent has already reported it EXECUTING (504 by
 * its id, or 501 by fragment when the id is not known). Either call
 * op_succeed/op_fail and return C8Y_OK, or return C8Y_PENDING and complete
 * it later from any thread. Any other return value fails the operation
 * (505/502) with the status text. */
typedef int (*c8y_operation_fn)(c8y_plugin *self, c8y_operation *op,
                                void *user_data);

/* One record that arrived on s/dc/<xid> with a registered message id. The
 * message and its strings are valid only during the call. */
typedef void (*c8y_message_fn)(c8y_plugin *self, const c8y_message *msg,
                               void *user_data);

/* ---- ABI 1.1: file transfers ----------------------------------------------
 * Both structs are owned by the plugin (stack is fine). Set `size` to
 * sizeof(the struct) so later minors can append fields. Inputs are read,
 * outputs written by the agent before the call returns. The calls block the
 * calling thread (never the agent's main loop) until the transfer ends.
 * On failure `error` holds one line a human can act on, e.g.
 * "HTTP 403 from example.cumulocity.com: access denied". */
typedef struct c8y_download {
  size_t size;             /* sizeof(c8y_download) */
  const char *url;         /* http(s) URL; tenant URLs get the device's auth */
  const char *file;        /* file name inside the plugin's state dir */
  uint64_t max_bytes;      /* refuse larger files; 0 = the agent's limit */
  const char *sha256;      /* expected lowercase hex digest, or NULL */
  const c8y_operation *op; /* stop when op_cancelled(op); nullable */
  /* outputs */
  char path[512];  /* full path of the complete file on success */
  uint64_t bytes;  /* size of the complete file */
  long http_code;  /* last HTTP status seen, 0 if none */
  char error[256]; /* reason on failure, "" on success */
} c8y_download;

typedef struct c8y_upload {
  size_t size;              /* sizeof(c8y_upload) */
  const char *path;         /* file to attach (any readable path) */
  const char *child_id;     /* NULL = the agent's own device */
  const char *type;         /* event type, e.g. "c8y_Logfile" */
  const char *text;         /* event text */
  const char *content_type; /* NULL = "application/octet-stream" */
  const char *file_name;    /* name shown in Cumulocity; NULL = basename */
  const c8y_operation *op;  /* stop when op_cancelled(op); nullable */
  /* outputs */
  char url[512];   /* URL of the attached binary on success */
  long http_code;  /* last HTTP status seen, 0 if none */
  char error[256]; /* reason on failure, "" on success */
} c8y_upload;

/* ---- ABI 1.2: the platform, for plugins that open their own connections --
 * (remote access opens a WebSocket to the tenant). Owned by the plugin; set
 * `size` to sizeof(c8y_platform_auth). The secret in `authorization` is the
 * device's: never log it, never send it to another host. */
typedef struct c8y_platform_auth {
  size_t size;     /* sizeof(c8y_platform_auth) */
  const char *url; /* the http(s)/ws(s) URL the plugin is going to open */
  /* outputs */
  char authorization[8192]; /* "Basic ..." or "Bearer <jwt>" when `url` is on
                               the tenant's host, "" otherwise */
  char base_url[512];       /* the tenant's https base URL, no trailing '/' */
  char ca_file[512];        /* trust anchors: "" = the system's */
  char ca_path[512];        /* "" = the system's */
  int verify_peer;          /* 0 only when the configuration turns it off */
  /* Whether the certificate must name the host ([c8y] verify_hostname);
   * independent of verify_peer (the chain is still checked when this is 0).
   */
  int verify_hostname;
  char error[256]; /* reason on failure, "" on success */
} c8y_platform_auth;

/* ---- Services the agent provides ------------------------------------------
 */
typedef struct c8y_api {
  uint32_t abi_major; /* of the running agent */
  uint32_t abi_minor;
  size_t size; /* sizeof(c8y_api) in the running agent */

  /* The text of a status code; never NULL ("unknown status"). [any
   * thread] */
  const char *(*status_str)(int status);

  /* One log record, prefixed with the plugin name. [any thread] */
  void (*log)(c8y_plugin *self, c8y_log_level level, const char *fmt, ...)
      C8Y_PRINTF(3, 4);

  /* The plugin's own config section, [plugin.<name>]. Returned strings are
   * borrowed until fini() returns. Typed getters store the value or the
   * fallback and return C8Y_OK, or log "file:line: key: why" and return
   * C8Y_EINVAL. Keys a plugin never reads are reported as unknown.
   * [any thread] */
  const char *(*config_string)(c8y_plugin *self, const char *key,
                               const char *fallback);
  int (*config_int)(c8y_plugin *self, const char *key, int64_t fallback,
                    int64_t *out);
  int (*config_bool)(c8y_plugin *self, const char *key, int fallback, int *out);

  /* Registration: only inside init() (else C8Y_ESTATE); strings are
   * copied. On error the callback is never called. timeout_ms 0 = the
   * agent's default ([agent] op_timeout).
   * add_producer: C8Y_OK, C8Y_EINVAL (no name or fn, interval under 100 ms,
   * over [agent] plugin_max_producers), C8Y_EEXIST (name taken by this
   * plugin), C8Y_ESTATE, C8Y_ENOMEM.
   * add_operation: a static template ("511") for the agent's own device and
   * this plugin's children (see add_child_operation for who gets what).
   * C8Y_OK, C8Y_EINVAL (not a template 510-532, no fn), C8Y_EEXIST (another
   * plugin serves it; the plugin is then not loaded), C8Y_ESTATE,
   * C8Y_ENOMEM.
   * add_message_handler: records of `message_id` on s/dc/<xid>. C8Y_OK,
   * C8Y_EINVAL (xid empty, over 200 bytes or with '/', '+', '#'; no id or
   * fn), C8Y_EEXIST, C8Y_ESTATE, C8Y_ENOMEM. */
  int (*add_producer)(c8y_plugin *self, const char *name, uint32_t interval_ms,
                      c8y_produce_fn fn, void *user_data);
  int (*add_operation)(c8y_plugin *self, const char *template_id,
                       uint32_t timeout_ms, c8y_operation_fn fn,
                       void *user_data);
  int (*add_message_handler)(c8y_plugin *self, const char *xid,
                             const char *message_id, c8y_message_fn fn,
                             void *user_data);
  /* Announce a child device (101 on the root topic, then its own 114) whose
   * operations are then dispatched to this plugin's handlers (see
   * add_child_operation for the rule). For a 1.0/1.1 plugin only inside
   * init(); from ABI 1.2 at any time, from any thread (see remove_child).
   * C8Y_OK, C8Y_EINVAL (the id is empty, over 200 bytes, not UTF-8, holds
   * '/', '+', '#', ',', '"', control characters or edge spaces, or is the
   * agent's own id), C8Y_EEXIST (a plugin has that child), C8Y_ESTATE
   * (a 1.0/1.1 plugin after init), C8Y_ENOMEM. */
  int (*add_child)(c8y_plugin *self, const char *child_id, const char *name,
                   const char *type);

  /* Producing: on the batch a c8y_produce_fn received, only inside that
   * call, or (ABI 1.2) on a batch_begin batch, only on the thread that began
   * it until it is committed. One sample gives a 200 line; several give one
   * 201 line of type `type` (the producer name, or the plugin name for a
   * batch_begin batch, unless set). Time defaults to the start of the call
   * (of batch_begin). Each returns C8Y_OK, C8Y_EINVAL (NULL batch, empty
   * fragment or series, a value that is not finite, time <= 0, a bad child
   * id), C8Y_ESTATE (the batch is not live on this thread: kept past its
   * call, committed, or another thread's), C8Y_ENOMEM. */
  int (*batch_add)(c8y_batch *b, const char *fragment, const char *series,
                   double value, const char *unit);
  int (*batch_set_time)(c8y_batch *b, int64_t unix_ms);
  int (*batch_set_type)(c8y_batch *b, const char *type);
  int (*batch_set_child)(c8y_batch *b, const char *child_id);

  /* Upstream data, stored durably and sent in order of importance.
   * child_id NULL = the agent's own device. time_ms 0 = the time of the call
   * (events and alarms keep the time they happened, also when they are sent
   * after an outage). Each returns C8Y_OK, C8Y_EINVAL (empty type, bad child
   * id or field, a refused template), C8Y_ETOOBIG (over C8Y_MAX_LINE),
   * C8Y_EAGAIN (the queue is full: dropped), C8Y_ERATE (over [agent]
   * plugin_max_lines_per_s: not queued; C8Y_EAGAIN for a 1.0/1.1 plugin),
   * C8Y_ENOMEM, C8Y_EIO (the queue cannot write). [any thread] */
  int (*send_event)(c8y_plugin *self, const char *child_id, const char *type,
                    const char *text, int64_t time_ms);
  int (*raise_alarm)(c8y_plugin *self, const char *child_id,
                     c8y_severity severity, const char *type, const char *text);
  int (*clear_alarm)(c8y_plugin *self, const char *child_id, const char *type);
  /* Any static template line on s/us[/child]: fields[0] is the template id
   * (1xx inventory, 2xx measurement, 3xx alarm, 4xx event). Operation status
   * templates (5xx) and 114 are refused (C8Y_EINVAL): the agent owns the
   * lifecycle. Since 1.2, a 102 (a service) makes the service part of the
   * device: its operations reach the handlers of its parent with
   * op_device() the service; and 114 with child_id a service this plugin
   * announced, listing fragments it serves there, is accepted. Returns like
   * send_event. [any thread] */
  int (*send_static)(c8y_plugin *self, const char *child_id,
                     const char *const *fields, size_t nfields);
  /* A line of custom template collection `xid` on s/uc/<xid>[/child].
   * Returns like send_event. [any thread] */
  int (*send_custom)(c8y_plugin *self, const char *xid, const char *child_id,
                     const char *const *fields, size_t nfields);

  /* Operations. Strings are borrowed until the operation is completed;
   * after the completion (or on a handle that is not live) the accessors
   * return NULL / 0. Fields are the parameters of the SmartREST line after
   * the device id (index 0 = first one); an operation that arrived only as
   * JSON has none (read op_json_value). [any thread] */
  /* "511", a custom template's message id, or NULL (only JSON arrived) */
  const char *(*op_template)(const c8y_operation *op);
  const char *(*op_fragment)(const c8y_operation *op); /* "c8y_Command" */
  const char *(*op_device)(const c8y_operation *op);   /* external id */
  size_t (*op_field_count)(const c8y_operation *op);
  const char *(*op_field)(const c8y_operation *op, size_t index); /* NULL if
                                                                     out of
                                                                     range */
  /* Exactly one of these per operation; the handle is dead afterwards
   * (the agent checks handles, so a late or second call is safe).
   * op_succeed's result and op_succeed_params' params become the
   * parameters of 506/503 (c8y_Command: the result; c8y_LogfileRequest:
   * the file URL; see Cumulocity's "Updating operations"); op_fail's
   * reason (cut to 500 bytes) that of 505/502. Returns C8Y_OK, C8Y_EINVAL
   * (NULL handle, params NULL with nparams > 0), C8Y_ESTATE (completed
   * already, or no live handle), C8Y_ETIMEDOUT (it timed out, or a stop
   * failed it: the agent sends the failure; within [agent] stop_grace_ms
   * of the timeout op_fail's reason still follows the agent's; the handle
   * is released). After a stop's op_cancelled a completion within the
   * grace returns C8Y_OK (a failure reads "agent stopped: <reason>").
   * [any thread] */
  int (*op_succeed)(c8y_operation *op, const char *result /* nullable */);
  int (*op_succeed_params)(c8y_operation *op, const char *const *params,
                           size_t nparams);
  int (*op_fail)(c8y_operation *op, const char *reason);
  /* Non-zero once the operation timed out, the agent is stopping it, or
   * the handle is not live: stop working on it (op_cancel_reason says why)
   * and complete it soon. [any thread] */
  int (*op_cancelled)(const c8y_operation *op);
  /* The operation succeeds when the machine has rebooted (the agent notices
   * a new boot id after restart) and fails if the agent restarts without a
   * reboot. Call before starting the reboot. Returns C8Y_OK, C8Y_ESTATE
   * (completed, or no live handle), C8Y_EIO / C8Y_ENOMEM (the journal
   * write failed: do not reboot). [blocks] (an fsync) [any thread] */
  int (*op_complete_on_reboot)(c8y_operation *op);

  /* Downstream custom records (c8y_message_fn), valid only during it. */
  const char *(*msg_id)(const c8y_message *msg);
  size_t (*msg_field_count)(const c8y_message *msg); /* after the id */
  const char *(*msg_field)(const c8y_message *msg, size_t index);

  /* The root device's external id; valid for the plugin's lifetime.
   * [any thread] */
  const char *(*device_id)(c8y_plugin *self);
  /* A directory owned by this plugin, <state_dir>/plugins/<name>, created on
   * first use; valid for the plugin's lifetime. NULL on error (logged).
   * [any thread] */
  const char *(*state_dir)(c8y_plugin *self);

  /* ---- ABI 1.1 ---- */
  /* Streams `url` into <state_dir>/<file>: written to a partial file,
   * resumed with Range after a cut, checked against sha256, fsync'ed and
   * renamed into place. Returns C8Y_OK or C8Y_EINVAL, C8Y_EHTTP, C8Y_EAUTH,
   * C8Y_ENET, C8Y_ECHECKSUM, C8Y_ETOOBIG, C8Y_ECANCELED, C8Y_EIO,
   * C8Y_ENOTSUP (the agent has no HTTP client). `size` must be at least the
   * 1.1 struct's; the agent writes no further than `size`. Credentials
   * are sent only to the tenant's own host ([c8y] http_url's, and the MQTT
   * host over https); other URLs are fetched without them. A partial file
   * from an earlier call for the same URL is resumed.
   * [blocks] until the transfer ends [any thread] */
  int (*download)(c8y_plugin *self, c8y_download *d);
  /* Creates an event of `type` on the device and attaches the file to it as
   * its binary. Same return values as download. The device's managed-object
   * id is looked up once (concurrent uploads share the lookup). [blocks]
   * [any thread] */
  int (*upload)(c8y_plugin *self, c8y_upload *u);
  /* The operation outlives an agent restart: if the agent stops before it
   * completes (e.g. the handler started a reboot or an upgrade of the agent
   * itself), the next start hands it again to the handler registered for its
   * template and device, with op_resumed() non-zero and the same fields, and
   * the plugin decides (e.g. succeed only if the running firmware version is
   * the requested one). Call before starting the action; fini() may then
   * leave it incomplete. It is resumed at most 5 times, then fails. The
   * handler's timeout starts again at each resume. A JSON operation comes
   * back with its op_id and op_json. Returns C8Y_OK, C8Y_EINVAL,
   * C8Y_ESTATE, C8Y_EIO / C8Y_ENOMEM (journal). [blocks] (an fsync)
   * [any thread] */
  int (*op_resume_after_restart)(c8y_operation *op);
  /* Non-zero if this operation was resumed after an agent restart; then
   * op_rebooted() tells whether the machine booted since it started.
   * [any thread] */
  int (*op_resumed)(const c8y_operation *op);
  int (*op_rebooted)(const c8y_operation *op);
  /* Like add_operation, but for this plugin's children (add_child) only,
   * never the agent's own device: a gateway plugin can restart its children
   * (510) while the restart plugin restarts the gateway. Only inside init().
   *
   * Who gets an operation: one for the agent's own device goes to the plugin
   * that registered the template with add_operation (one plugin per
   * template); one for a child goes to the plugin that registered the child,
   * if that plugin registered the template (with either function). A child's
   * operation that its plugin does not handle is answered 501 + 502 "not
   * supported by <child>"; each child's 114 lists what its plugin handles.
   * Returns like add_operation, but C8Y_EEXIST only within this plugin. */
  int (*add_child_operation)(c8y_plugin *self, const char *template_id,
                             uint32_t timeout_ms, c8y_operation_fn fn,
                             void *user_data);

  /* ---- ABI 1.2 ---- */
  /* Operations by fragment: any operation of the agent's own device that
   * carries `fragment` (e.g. "c8y_ServiceCommand" or "acme_Reset"), as JSON
   * on devicecontrol/notifications, as a custom template record on
   * s/dc/<xid> (add_template_operation) or as a static template line of
   * that fragment. The fragment joins the device's 114. One plugin per
   * fragment and device; a fragment is served either by template handlers
   * or by one fragment handler. The handler reads op_json()/
   * op_json_value() and op_id() (op_field() for a SmartREST copy). A
   * fragment is a JSON key: letters, digits, '_' and '-', starting with a
   * letter or '_', at most 100 bytes. Only inside init(). Returns C8Y_OK,
   * C8Y_EINVAL (bad name, a template id, no fn), C8Y_EEXIST (served
   * already; another plugin's: this plugin is not loaded), C8Y_ESTATE,
   * C8Y_ENOMEM. */
  int (*add_fragment_operation)(c8y_plugin *self, const char *fragment,
                                uint32_t timeout_ms, c8y_operation_fn fn,
                                void *user_data);
  /* A handler scoped to a device. `device`: NULL = the agent's own device;
   * a child id this plugin added; C8Y_ALL_CHILDREN = every child this plugin
   * owns, including children added after init. `what`: a static template id
   * ("510") or a fragment ("c8y_Custom"). Only inside init(). Returns like
   * add_fragment_operation; C8Y_EINVAL also for a device that is not one of
   * this plugin's children. */
  int (*add_device_operation)(c8y_plugin *self, const char *device,
                              const char *what, uint32_t timeout_ms,
                              c8y_operation_fn fn, void *user_data);
  /* The Cumulocity operation id ("12345"), or NULL when the platform did not
   * tell it (a static template line with no JSON copy). Borrowed until the
   * operation is completed. With an id the agent reports by id (504/505/
   * 506), so a status can never complete another operation of the fragment.
   * [any thread] */
  const char *(*op_id)(const c8y_operation *op);
  /* The operation as Cumulocity's JSON document, or NULL when only a
   * SmartREST line arrived. Borrowed until the operation is completed.
   * [any thread] */
  const char *(*op_json)(const c8y_operation *op);
  /* One value of the JSON document by a dotted path ("c8y_Command.text",
   * "c8y_Foo.items.0.name"): strings unquoted, numbers and booleans as
   * written, objects and arrays as compact JSON. NULL if absent, null, or
   * there is no JSON (keys holding '.' cannot be named). Borrowed until the
   * operation is completed. [any thread] */
  const char *(*op_json_value)(const c8y_operation *op, const char *path);
  /* Why op_cancelled() is non-zero: 0 = not cancelled, C8Y_ETIMEDOUT = the
   * handler's timeout passed, C8Y_ECANCELED = the agent is stopping,
   * C8Y_ESTATE = completed already or no live handle. A reason the plugin
   * then passes to op_fail (within [agent] stop_grace_ms) follows the
   * agent's own text: "operation timed out after 60 s: <reason>", "agent
   * stopped: <reason>"; so say what the plugin did ("the command was
   * killed"), not why. [any thread] */
  int (*op_cancel_reason)(const c8y_operation *op);
  /* From ABI 1.2 add_child() may be called at any time, from any thread:
   * the child is announced (101, its own 114) and its queued operations
   * reach this plugin, also those that arrived before (the agent keeps up
   * to 1000 operations for children nobody announced yet). remove_child()
   * stops dispatching to it; operations of it still running complete
   * normally, queued ones wait until it is added again (there is no MQTT
   * message to delete a device: it stays in the inventory). Returns
   * C8Y_OK, C8Y_EINVAL (unknown or not this plugin's child), C8Y_ENOMEM.
   * [any thread] */
  int (*remove_child)(c8y_plugin *self, const char *child_id);
  /* Measurements outside a produce callback ("measure now"): a batch owned
   * by the caller until batch_commit (queues its lines, like the end of a
   * produce call) or batch_discard; either releases it. batch_add and the
   * batch_set_* calls work on it from the same thread. NULL on C8Y_ENOMEM
   * or while the plugin is stopping. batch_commit returns C8Y_OK, C8Y_EINVAL
   * (NULL), C8Y_ESTATE (not a live batch of this thread), or the first
   * error queueing its lines (C8Y_EAGAIN, C8Y_ERATE, C8Y_ETOOBIG,
   * C8Y_ENOMEM, C8Y_EIO; the batch is released either way). [any thread] */
  c8y_batch *(*batch_begin)(c8y_plugin *self);
  int (*batch_commit)(c8y_batch *b);
  void (*batch_discard)(c8y_batch *b);
  /* The plugin's health, shown as its service on the device (102/104):
   * up != 0 "up", 0 "down" with `reason` logged, in STATUS and as the text
   * of a c8y_PluginDown alarm on the service (cleared when up again). Only
   * a change is sent. C8Y_OK, C8Y_EINVAL, C8Y_ENOMEM. [any thread]
   */
  int (*set_health)(c8y_plugin *self, int up, const char *reason);
  /* Fills `a` for a connection the plugin opens itself to `a->url`. May
   * block (bounded, at most 30 s) while a JWT is fetched. Returns C8Y_OK,
   * C8Y_EINVAL, C8Y_EAUTH (no credentials yet), C8Y_ETIMEDOUT, C8Y_ECANCELED
   * (the agent is stopping). With a->url NULL it fills only base_url and
   * the trust settings (for a plugin that derives its URL from the
   * tenant's) and returns C8Y_OK.
   * [any thread] */
  int (*platform_auth)(c8y_plugin *self, c8y_platform_auth *a);
  /* Records of message id `message_id` of custom template collection `xid`
   * (a response template whose records are operations: the platform puts
   * the device's id after the message id) are operations of `fragment`:
   * the agent subscribes s/dc/<xid>, reports them 501 and exactly one final
   * status, and runs the handler registered for the fragment and the
   * record's device (add_fragment_operation, add_device_operation) with
   * op_template() the message id and op_field() the record's fields after
   * the device id. Only inside init(). Returns C8Y_OK, C8Y_EINVAL,
   * C8Y_EEXIST (the message id is a message handler's or taken), C8Y_ESTATE,
   * C8Y_ENOMEM. */
  int (*add_template_operation)(c8y_plugin *self, const char *xid,
                                const char *message_id, const char *fragment);

  /* ---- ABI 1.3+ fields go here, appended only ---- */
} c8y_api;

/* True if the running agent provides `field` (for anything newer than 1.0). */
#define C8Y_API_HAS(api, field)                                                \
  ((api)->size >= offsetof(c8y_api, field) + sizeof((api)->field) &&           \
   (api)->field != NULL)

/* ---- What a plugin exports ------------------------------------------------
 */
typedef struct c8y_plugin_info {
  uint32_t abi_major;  /* C8Y_ABI_MAJOR at plugin compile time */
  uint32_t abi_minor;  /* C8Y_ABI_MINOR at plugin compile time */
  size_t size;         /* sizeof(c8y_plugin_info) at compile time */
  const char *name;    /* unique, [a-z0-9_]{1,32}; selects [plugin.<name>] */
  const char *version; /* the plugin's own version */
  /* Called once, before any other callback; register here. On failure (< 0)
   * registrations are rolled back, fini is NOT called, the .so is unloaded. */
  int (*init)(c8y_plugin *self, const c8y_api *api, void **user_data);
  /* Called once at unload, after the last callback returned. Must complete or
   * fail pending operations and join threads the plugin started. */
  void (*fini)(c8y_plugin *self, void *user_data);
} c8y_plugin_info;

#define C8Y_PLUGIN_SYMBOL c8y_plugin_info_v1
#define C8Y_PLUGIN_SYMBOL_NAME "c8y_plugin_info_v1"

#ifdef __cplusplus
#define C8Y_PLUGIN_EXTERN extern "C"
#else
#define C8Y_PLUGIN_EXTERN extern
#endif

/* One line per plugin: C8Y_PLUGIN(.name = "x", .version = "1.0", .init = f);
 * C++20 needs the fields in declaration order (name, version, init, fini). */
#define C8Y_PLUGIN(...)                                                        \
  C8Y_PLUGIN_EXTERN C8Y_EXPORT const c8y_plugin_info C8Y_PLUGIN_SYMBOL;        \
  const c8y_plugin_info C8Y_PLUGIN_SYMBOL = {.abi_major = C8Y_ABI_MAJOR,       \
                                             .abi_minor = C8Y_ABI_MINOR,       \
                                             .size = sizeof(c8y_plugin_info),  \
                                             __VA_ARGS__}

#ifdef __cplusplus
}
#endif
#endif /* C8Y_PLUGIN_H */
