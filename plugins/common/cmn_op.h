/* cmn_op: checks at the start of an operation handler. Each returns 1 when
 * the handler may go on, or calls op_fail with a one-line reason and
 * returns 0. */
#ifndef C8Y_CMN_OP_H
#define C8Y_CMN_OP_H

#include <c8y/plugin.h>

#include <stddef.h>

/* The operation is for the agent's own device: a plugin that manages only
 * this machine refuses child devices ("<fragment> is not supported for child
 * device '<id>'"). */
int cmn_op_for_self(const c8y_api *api, c8y_plugin *self, c8y_operation *op);

/* The operation has exactly `n` fields; `usage` names them, e.g.
 * "c8y_UploadConfigFile: expected 1 field (configType)", and the reason
 * reads "<usage>, got <count>". */
int cmn_op_fields(const c8y_api *api, c8y_operation *op, size_t n,
                  const char *usage);

/* Sends "<template_id>,<names...>" (e.g. 118 supported logs, 119 supported
 * configurations) for the agent's own device, the names taken from a
 * plugin's table of n entries of `stride` bytes, each holding its name as
 * the `const char *` at `offset` (sizeof and offsetof of its struct).
 * Nothing is sent for n == 0; a failure is logged. Returns the send
 * status. */
int cmn_op_send_names(const c8y_api *api, c8y_plugin *self,
                      const char *template_id, const void *table, size_t stride,
                      size_t offset, size_t n);

/* For a file an operation writes into the plugin's state directory: the
 * directory, with the current UTC time as "20240310T093000Z" in stamp for
 * its name; NULL with "the plugin has no state directory" in why. */
const char *cmn_op_state_stamp(const c8y_api *api, c8y_plugin *self,
                               char stamp[32], char *why, size_t whyn);

/* api->upload(self, u) for an operation: C8Y_OK with the binary's URL in
 * url, or the upload's status with "upload of <what> failed: <error>" in
 * why (what: "log 'app'", "'agent_conf'"). */
int cmn_op_upload(const c8y_api *api, c8y_plugin *self, c8y_upload *u,
                  const char *what, char *url, size_t urln, char *why,
                  size_t whyn);

#endif
