/* sim: a Cumulocity stand-in for tests and local runs.
 *
 * sim_start launches a real mosquitto bound to 127.0.0.1 on a free port (or
 * the one given) with a generated password file and an ACL: the device user
 * may publish s/us, s/us/#, s/uc/#, s/ut/#, s/uat, s/ucr and subscribe s/ds,
 * s/e, s/dc/#, s/dt, s/dat, s/dcr, but may NOT subscribe to s/us (as on the
 * real platform). The simulator itself connects as a separate "cloud" user,
 * records every message published upstream (including the last will), and
 * plays the platform's part:
 *   100 -> creates the device once; later 100s get "41,100,Device already
 *          existing" on s/e
 *   500 -> publishes every PENDING operation on s/ds, several lines in one
 *          publish, and those with a JSON document again on
 *          devicecontrol/notifications (as thin-edge saw, issue #3403)
 *   501/502/503 -> moves the oldest PENDING/EXECUTING operation of that
 *          fragment (per device topic) exactly like Cumulocity
 *   504/505/506 -> moves the operation with that id, if it belongs to the
 *          device of the topic
 *   123 -> "124,<id>"; 105 -> "106,<children>"; 101 registers a child;
 *   102 creates or updates a service, 104 on s/us/<service> sets its status;
 *   unknown template ids -> "40,<id>,No static template for this message id"
 * Operations are created with sim_create_operation and delivered immediately
 * when the device is subscribed to s/ds (as the platform does) and again on
 * every 500 while PENDING. */
#ifndef C8Y_SIM_H
#define C8Y_SIM_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sim sim;

typedef struct sim_options {
  const char *tenant;    /* default "t1" */
  const char *user;      /* default "device" */
  const char *password;  /* default "secret" */
  const char *device_id; /* the root's external id, default "dev1" */
  int port;              /* 0 = pick a free loopback port */
  const char *workdir;   /* NULL = a fresh mkdtemp dir, removed on stop */
  const char *mosquitto; /* NULL = "mosquitto" from PATH or /usr/sbin */
  bool echo;             /* print every message to stdout as it arrives */
  /* password of SIM_BOOTSTRAP_USER, NULL = SIM_BOOTSTRAP_PASSWORD */
  const char *bootstrap_password;
} sim_options;

typedef enum sim_op_status {
  SIM_OP_PENDING,
  SIM_OP_EXECUTING,
  SIM_OP_SUCCESSFUL,
  SIM_OP_FAILED
} sim_op_status;

typedef struct sim_message {
  char *topic;
  char *payload; /* NUL-terminated */
  size_t len;
  long long t_ms; /* monotonic receive time */
} sim_message;

/* Returns 0, or -1 with a one-line reason in err. */
int sim_start(const sim_options *o, sim **out, char *err, size_t errlen);
void sim_stop(sim *s); /* stops the broker and removes the workdir */
int sim_port(const sim *s);
const char *sim_workdir(const sim *s);

/* Broker faults: kill -9 the broker / start it again on the same port. */
int sim_broker_kill(sim *s);
int sim_broker_start(sim *s);

/* Creates an operation: line is the full s/ds line, e.g. "511,dev1,ls".
 * Returns the operation id (> 0) or -1. Its fragment comes from the
 * template id (510 c8y_Restart, 511 c8y_Command, ...). With JSON copies on
 * (sim_set_json_operations) it is also published as JSON on
 * devicecontrol/notifications, after the s/ds line. */
long sim_create_operation(sim *s, const char *line);
/* One operation that the platform sends as several s/ds lines in one
 * publish (a device profile's 527 and 531) and, when `fragments` (a JSON
 * object, as for sim_create_json_operation, plus e.g. "profileId") is not
 * NULL, also as that JSON document. The lines must name one device and one
 * fragment. Returns the id or -1. */
long sim_create_operation_copies(sim *s, const char *lines,
                                 const char *fragments);
/* Creates an operation of any fragment for `device` (root or child id), as
 * the UI or REST API does: `fragments` is a JSON object, e.g.
 * {"acme_Reset":{"mode":"hard"}}; its first key is the fragment. Published
 * only as JSON on devicecontrol/notifications ({"id", "status", "deviceId",
 * "agentId", "creationTime", "delivery", "externalSource", the fragments}).
 * Returns the id or -1. */
long sim_create_json_operation(sim *s, const char *device,
                               const char *fragments);
/* Creates an operation of `fragment` that a custom response template of
 * collection `xid` renders as `line` ("<message id>,<device id>,<values>",
 * SmartREST 2.0: the platform puts the device id after the message id) and
 * publishes it on s/dc/<xid> (again on every 500 while PENDING). Returns
 * the id or -1. */
long sim_create_custom_operation(sim *s, const char *xid, const char *line,
                                 const char *fragment);
/* Static operations get a JSON copy too (the platform sends both to a
 * device subscribed to both). Off by default. */
void sim_set_json_operations(sim *s, bool on);
sim_op_status sim_operation_status(sim *s, long id);
/* Result params / failure reason as received with 503/502 (borrowed, valid
 * until sim_stop), or NULL. */
const char *sim_operation_detail(sim *s, long id);
/* Waits until the operation leaves PENDING/EXECUTING; returns its final
 * status or -1 on timeout. */
int sim_wait_operation_done(sim *s, long id, int timeout_ms);

/* Raw downstream publish (QoS 1). */
int sim_publish(sim *s, const char *topic, const char *payload);

/* Recorded upstream messages, in arrival order; one entry per MQTT message
 * (a packed payload is one entry). Pointers stay valid until sim_stop. */
size_t sim_message_count(sim *s);
const sim_message *sim_message_at(sim *s, size_t index);
/* Waits for a message on `topic` with a line starting with `line_prefix`,
 * looking at indexes >= from. Returns the message index or -1 on timeout. */
long sim_wait_line(sim *s, const char *topic, const char *line_prefix,
                   size_t from, int timeout_ms);
/* Counts lines (not messages) on `topic` starting with `line_prefix`. */
size_t sim_count_lines(sim *s, const char *topic, const char *line_prefix);

/* ---- additions (local runs and tests) ---- */

/* "PENDING", "EXECUTING", "SUCCESSFUL", "FAILED" (or "?"). */
const char *sim_op_status_name(sim_op_status st);
/* Operations in creation order; id_at returns -1 past the end. An unknown
 * id gives SIM_OP_FAILED from sim_operation_status: check with
 * sim_operation_exists first when that matters. */
size_t sim_operation_count(sim *s);
long sim_operation_id_at(sim *s, size_t index);
bool sim_operation_exists(sim *s, long id);
/* The s/ds line the operation was created with (borrowed until sim_stop);
 * NULL for a JSON-only operation. */
const char *sim_operation_line(sim *s, long id);
/* Whether the platform side has created the device (root: by 100 or any
 * data on s/us; child: by 101 or data on s/us/<child>). */
bool sim_device_exists(sim *s, const char *external_id);
/* Services (Cumulocity "Services"): 102 on s/us[/<device>] creates the
 * service of that device or updates its status, 104 on s/us/<service>
 * updates it. The status (malloc'ed), or NULL when no service has that
 * id (a device of that id is no service). */
char *sim_service_status(sim *s, const char *external_id);
/* Waits until the service has `status`; false on timeout. */
bool sim_wait_service_status(sim *s, const char *external_id,
                             const char *status, int timeout_ms);
/* The device the service belongs to (borrowed until sim_stop), or NULL. */
const char *sim_service_parent(sim *s, const char *external_id);
/* True while the simulator's own MQTT client is connected and subscribed. */
bool sim_connected(sim *s);

/* ---- HTTP side hooks (sim_http.h) ---- */

/* An empty publish on s/uat is answered with "71,<mint(ctx)>" on s/dat
 * (malloc'ed token; NULL = no answer). mint runs under the simulator's lock
 * and must not call back into it. */
void sim_set_token_source(sim *s, char *(*mint)(void *ctx), void *ctx);
/* Managed-object id of a created device, or -1. */
long sim_device_mo_id(sim *s, const char *external_id);
/* Whether a created device has this managed-object id. */
bool sim_mo_exists(sim *s, long mo_id);

/* ---- certificate devices (c8y-protocol.md 1.3) ----
 * A second broker listener (TLS on 127.0.0.1) that requires a client
 * certificate issued by ca_file and takes its CN as the user name, which
 * then must be the device id (it gets the device's ACL). cert_file/key_file
 * are the server's. The broker restarts with it (the simulator reconnects
 * before this returns). Returns the listener's port, or -1 with err. */
int sim_add_cert_listener(sim *s, const char *ca_file, const char *cert_file,
                          const char *key_file, char *err, size_t errlen);
/* That port, 0 before. */
int sim_cert_port(const sim *s);

/* ---- device registration (bootstrap, c8y-protocol.md 1.5) ----
 * The broker also knows the bootstrap user, who may only publish s/ucr and
 * subscribe s/dcr. Empty s/ucr requests are counted; once a test accepts a
 * device (the operator's "accept" in Device registration), the simulator
 * creates the user device_<id> with a fresh password in the tenant, makes
 * the broker accept it (password file + ACL reloaded), and answers the next
 * s/ucr with 70,<tenant>,device_<id>,<password> on s/dcr. The broker cannot
 * say which client asked, so register one device at a time. */
#define SIM_BOOTSTRAP_USER "management/devicebootstrap"
#define SIM_BOOTSTRAP_PASSWORD "sim-bootstrap-password"

size_t sim_bootstrap_requests(sim *s);
/* Waits until at least n requests arrived; false on timeout. */
bool sim_wait_bootstrap_requests(sim *s, size_t n, int timeout_ms);
/* Returns 0 once the new credentials work, -1 on failure or if the device
 * was accepted before. Call from the thread that started the simulator. */
int sim_accept_registration(sim *s, const char *device_id);
/* Credentials created for an accepted device (borrowed until sim_stop). */
const char *sim_registration_user(sim *s, const char *device_id);
const char *sim_registration_password(sim *s, const char *device_id);

#endif
