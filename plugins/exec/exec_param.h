/* exec_param: c8y_ParameterUpdate (532) for an exec drop-in: the
 * parameters checked before the hook runs, and reported back with 408 once
 * it applied them. */
#ifndef C8Y_EXEC_PARAM_H
#define C8Y_EXEC_PARAM_H

#include <c8y/plugin.h>

#include <stddef.h>

/* Whether the operation's parameters are (path,type,value) sets the hook
 * can be given and 408 can carry, at most max_fields fields (what fits the
 * command's argument list). 1, or 0 with the reason in why. */
int exec_param_check(const c8y_api *api, c8y_operation *op, size_t max_fields,
                     char *why, size_t whylen);
/* The applied values as 408 with change detection; 0, or the status of the
 * failed send (the reason in why). */
int exec_param_report(const c8y_api *api, c8y_plugin *self, c8y_operation *op,
                      char *why, size_t whylen);

#endif
