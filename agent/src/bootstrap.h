/* bootstrap: device credentials from Cumulocity's device registration.
 *
 * With [c8y] bootstrap = true and neither tenant nor cert_file configured,
 * the agent connects as the bootstrap user (management/devicebootstrap by
 * default) with clientId = the device id, subscribes s/dcr and publishes an
 * empty s/ucr every BOOTSTRAP_INTERVAL_MS until an operator accepts the
 * device in Device management > Device registration and the platform answers
 * 70,<tenant>,<user>,<password>. Those are stored in
 * <state_dir>/BOOTSTRAP_FILE (mode 0600, written atomically and fsync'ed) and
 * used from then on; deleting the file makes the device register again. */
#ifndef C8Y_BOOTSTRAP_H
#define C8Y_BOOTSTRAP_H

#include "config.h"

#include <stddef.h>

#define BOOTSTRAP_FILE "credentials"
#define BOOTSTRAP_INTERVAL_MS 5000

/* Whether cfg asks for bootstrap: bootstrap = true without tenant/cert. */
int bootstrap_wanted(const agent_config *cfg);

/* When bootstrap is wanted and credentials were stored earlier, puts them
 * into cfg (tenant, user, password). Returns 1 if it did, 0 if there are
 * none (or bootstrap is not wanted), or with one line in err: C8Y_EIO when
 * the file is unreadable, C8Y_EINVAL when it is not private or malformed,
 * C8Y_ENOMEM. */
int bootstrap_load_stored(agent_config *cfg, char *err, size_t errlen);

/* After the platform kept refusing the credentials: when they came from
 * bootstrap, logs how to register the device again. */
void bootstrap_explain_refusal(const agent_config *cfg);

/* Stored credentials first; otherwise runs the registration flow until the
 * credentials arrive, or a signal other than SIGHUP arrives on stop_fd (a
 * non-blocking pipe of signal numbers, one byte each; -1 = none), or the
 * bootstrap user is refused too often. Returns 0 when cfg holds usable
 * credentials, C8Y_ECANCELED when stop_fd asked to stop first, C8Y_EAUTH
 * when the bootstrap user kept being refused, or what went wrong with the
 * stored file, the state dir or the MQTT client (logged). Blocks: call it
 * before the main loop. */
int bootstrap_ensure(agent_config *cfg, int stop_fd);

/* Stores credentials as <state_dir>/BOOTSTRAP_FILE (0600; temp file,
 * fsync, rename, fsync of the directory). Returns 0, or with one line in
 * err C8Y_ENOMEM, C8Y_EIO, or C8Y_EINVAL for too long a state dir path. */
int bootstrap_store(const char *state_dir, const char *tenant, const char *user,
                    const char *password, char *err, size_t errlen);

#endif
