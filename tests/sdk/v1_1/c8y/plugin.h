/* The SDK header as released with ABI 1.1 (git 63ab2d8), kept unchanged so
 * tests can build a plugin exactly as a 1.1 plugin author did and load it
 * into the current agent. Never edit it. */
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
 * callback of the same plugin.
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
#define C8Y_ABI_MINOR 1

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
  C8Y_ECANCELED = -14  /* stopped because the operation was cancelled */
};

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

/* Handle one operation. The agent has already reported it EXECUTING (501).
 * Either call op_succeed/op_fail and return C8Y_OK, or return C8Y_PENDING and
 * complete it later from any thread. Any other return value fails the
 * operation (502) with the status text. */
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

/* ---- Services the agent provides ------------------------------------------
 */
typedef struct c8y_api {
  uint32_t abi_major; /* of the running agent */
  uint32_t abi_minor;
  size_t size; /* sizeof(c8y_api) in the running agent */

  const char *(*status_str)(int status); /* [any thread] */

  /* Prefixed with the plugin name. [any thread] */
  void (*log)(c8y_plugin *self, c8y_log_level level, const char *fmt, ...)
      C8Y_PRINTF(3, 4);

  /* The plugin's own config section, [plugin.<name>]. Returned strings are
   * borrowed until fini() returns. Typed getters store the value or the
   * fallback and return C8Y_OK, or log "file:line: key: why" and return
   * C8Y_EINVAL. Keys a plugin never reads are reported as unknown. */
  const char *(*config_string)(c8y_plugin *self, const char *key,
                               const char *fallback);
  int (*config_int)(c8y_plugin *self, const char *key, int64_t fallback,
                    int64_t *out);
  int (*config_bool)(c8y_plugin *self, const char *key, int fallback, int *out);

  /* Registration: only inside init(); strings are copied. On error the
   * callback is never called. timeout_ms 0 = the agent's default. */
  int (*add_producer)(c8y_plugin *self, const char *name, uint32_t interval_ms,
                      c8y_produce_fn fn, void *user_data);
  int (*add_operation)(c8y_plugin *self, const char *template_id,
                       uint32_t timeout_ms, c8y_operation_fn fn,
                       void *user_data);
  int (*add_message_handler)(c8y_plugin *self, const char *xid,
                             const char *message_id, c8y_message_fn fn,
                             void *user_data);
  /* Announce a child device (101 on the root topic) whose operations are then
   * dispatched to this plugin's handlers (see add_child_operation for the
   * rule). Only inside init(). */
  int (*add_child)(c8y_plugin *self, const char *child_id, const char *name,
                   const char *type);

  /* Producing: only inside c8y_produce_fn, on the batch it received. One
   * sample gives a 200 line; several give one 201 line of type `type` (the
   * producer name unless set). Time defaults to the start of the call. */
  int (*batch_add)(c8y_batch *b, const char *fragment, const char *series,
                   double value, const char *unit);
  int (*batch_set_time)(c8y_batch *b, int64_t unix_ms);
  int (*batch_set_type)(c8y_batch *b, const char *type);
  int (*batch_set_child)(c8y_batch *b, const char *child_id);

  /* Upstream data, stored durably and sent in order of importance.
   * child_id NULL = the agent's own device. time_ms 0 = the time of the call
   * (events and alarms keep the time they happened, also when they are sent
   * after an outage). [any thread] */
  int (*send_event)(c8y_plugin *self, const char *child_id, const char *type,
                    const char *text, int64_t time_ms);
  int (*raise_alarm)(c8y_plugin *self, const char *child_id,
                     c8y_severity severity, const char *type, const char *text);
  int (*clear_alarm)(c8y_plugin *self, const char *child_id, const char *type);
  /* Any static template line on s/us[/child]: fields[0] is the template id
   * (1xx inventory, 2xx measurement, 3xx alarm, 4xx event). Operation status
   * templates (5xx) are refused: the agent owns the lifecycle. [any thread] */
  int (*send_static)(c8y_plugin *self, const char *child_id,
                     const char *const *fields, size_t nfields);
  /* A line of custom template collection `xid` on s/uc/<xid>[/child].
   * [any thread] */
  int (*send_custom)(c8y_plugin *self, const char *xid, const char *child_id,
                     const char *const *fields, size_t nfields);

  /* Operations. Strings are borrowed until the operation is completed.
   * Fields are the parameters after the device id (index 0 = first one). */
  const char *(*op_template)(const c8y_operation *op); /* "511" */
  const char *(*op_fragment)(const c8y_operation *op); /* "c8y_Command" */
  const char *(*op_device)(const c8y_operation *op);   /* external id */
  size_t (*op_field_count)(const c8y_operation *op);
  const char *(*op_field)(const c8y_operation *op, size_t index); /* NULL if
                                                                     out of
                                                                     range */
  /* Exactly one of these per operation; the handle is dead afterwards.
   * After a timeout they return C8Y_ETIMEDOUT (the agent already sent 502)
   * and still release the handle. [any thread] */
  int (*op_succeed)(c8y_operation *op, const char *result /* nullable */);
  int (*op_succeed_params)(c8y_operation *op, const char *const *params,
                           size_t nparams);
  int (*op_fail)(c8y_operation *op, const char *reason);
  /* Non-zero once the operation timed out: stop working on it. [any thread] */
  int (*op_cancelled)(const c8y_operation *op);
  /* The operation succeeds when the machine has rebooted (the agent notices
   * a new boot id after restart) and fails if the agent restarts without a
   * reboot. Call before starting the reboot. */
  int (*op_complete_on_reboot)(c8y_operation *op);

  /* Downstream custom records (c8y_message_fn). */
  const char *(*msg_id)(const c8y_message *msg);
  size_t (*msg_field_count)(const c8y_message *msg); /* after the id */
  const char *(*msg_field)(const c8y_message *msg, size_t index);

  /* The root device's external id; valid for the plugin's lifetime. */
  const char *(*device_id)(c8y_plugin *self);
  /* A directory owned by this plugin, <state_dir>/plugins/<name>, created on
   * first use; valid for the plugin's lifetime. NULL on error. */
  const char *(*state_dir)(c8y_plugin *self);

  /* ---- ABI 1.1 ---- */
  /* Streams `url` into <state_dir>/<file>: written to a partial file,
   * resumed with Range after a cut, checked against sha256, fsync'ed and
   * renamed into place. Returns C8Y_OK or C8Y_EINVAL, C8Y_EHTTP, C8Y_EAUTH,
   * C8Y_ENET, C8Y_ECHECKSUM, C8Y_ETOOBIG, C8Y_ECANCELED, C8Y_EIO. Credentials
   * are sent only to the tenant's own host ([c8y] http_url's, and the MQTT
   * host over https); other URLs are fetched without them. A partial file
   * from an earlier call for the same URL is resumed. [any thread] */
  int (*download)(c8y_plugin *self, c8y_download *d);
  /* Creates an event of `type` on the device and attaches the file to it as
   * its binary. Same return values as download. [any thread] */
  int (*upload)(c8y_plugin *self, c8y_upload *u);
  /* The operation outlives an agent restart: if the agent stops before it
   * completes (e.g. the handler started a reboot or an upgrade of the agent
   * itself), the next start hands it again to the handler registered for its
   * template and device, with op_resumed() non-zero and the same fields, and
   * the plugin decides (e.g. succeed only if the running firmware version is
   * the requested one). Call before starting the action; fini() may then
   * leave it incomplete. It is resumed at most 5 times, then fails. The
   * handler's timeout starts again at each resume. [any thread] */
  int (*op_resume_after_restart)(c8y_operation *op);
  /* Non-zero if this operation was resumed after an agent restart; then
   * op_rebooted() tells whether the machine booted since it started. */
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
   * supported by <child>"; each child's 114 lists what its plugin handles. */
  int (*add_child_operation)(c8y_plugin *self, const char *template_id,
                             uint32_t timeout_ms, c8y_operation_fn fn,
                             void *user_data);

  /* ---- ABI 1.2+ fields go here, appended only ---- */
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
