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
 * configurations) for the agent's own device; a failure is logged. Returns
 * the send status. */
int cmn_op_send_names(const c8y_api *api, c8y_plugin *self,
                      const char *template_id, const char *const *names,
                      size_t n);

#endif
