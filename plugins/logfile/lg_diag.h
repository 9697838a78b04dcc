/* lg_diag: the agent's support bundle as a log type of the logfile plugin.
 *
 * A 522 for the name LG_DIAG_NAME runs `c8y-agent diag` (the agent's own
 * binary) and uploads the .tar.gz it writes as the c8y_Logfile event's
 * binary, so an operator gets versions, configuration without secrets,
 * status, statistics and the journal from the device management UI. */
#ifndef C8Y_LG_DIAG_H
#define C8Y_LG_DIAG_H

#include <c8y/plugin.h>

#include <stddef.h>

/* The log type offered in 118 (Cumulocity takes any name there). */
#define LG_DIAG_NAME "c8y-agent-diag"
/* The source that marks it in the plugin's list of logs. */
#define LG_DIAG_SOURCE "diag"

typedef struct lg_diag {
  int enabled;         /* `diag` (default true) and the agent can upload */
  const char *program; /* the agent's binary (`diag_program` overrides) */
  char self_exe[4096];
} lg_diag;

/* Reads `diag` and `diag_program`. C8Y_OK or C8Y_EINVAL (logged). */
int lg_diag_configure(const c8y_api *api, c8y_plugin *self, lg_diag *d);

/* Makes the bundle (journal lines: `lines`) in the plugin's state dir,
 * uploads it and removes it. C8Y_OK with the binary's URL in url, or an
 * error with why set. */
int lg_diag_request(const lg_diag *d, const c8y_api *api, c8y_plugin *self,
                    c8y_operation *op, int timeout_s, size_t lines, char *url,
                    size_t urln, char *why, size_t n);

#endif
