/* cmn_path: what a plugin runs and what it reads for the platform must not
 * be under the control of users with less privilege than the agent.
 *
 * The rule for who may write (root, the agent's user, the service account)
 * is the agent's own (agent/src/trust.c, compiled into this library). A path
 * is walked from / one component at a time, never letting the kernel follow
 * a symlink by itself:
 *  - a program is accepted only when it and every directory on the way are
 *    writable by trusted writers only (a sticky directory such as /tmp is
 *    passed when the entry in it is owned by a trusted writer);
 *  - a file to read is opened following a symlink only when the directory
 *    holding the symlink is trusted in that sense, so a user who can write a
 *    log directory cannot point the agent at a root-only file; in such a
 *    directory a file with more than one hard link is refused too, and only
 *    regular files are read (a FIFO cannot block the agent). */
#ifndef C8Y_CMN_PATH_H
#define C8Y_CMN_PATH_H

#include <c8y/plugin.h>

#include <stddef.h>
#include <sys/types.h>

/* Checks program `prog` the plugin will execute: an absolute path, or a bare
 * name found in PATH the way execvp finds it (then every PATH directory
 * searched before the match must be trusted as well, or a file planted there
 * would win). `also` is one more uid allowed to write it, for a program run
 * as that user (-1: none). 0 when safe, else -1 with one line in why naming
 * the offending path, e.g. "/opt/tools is writable by others (mode 0777)".
 * A program that does not exist is not an error here (*found = 0;
 * nullable; running it fails later) as long as only trusted writers could
 * create it. */
int cmn_path_check_program(const char *prog, uid_t also, int *found, char *why,
                           size_t n);

/* cmn_path_check_program for `shell` and for every program the command line
 * `cmd` (run as shell -c cmd) names literally as a command word: the first
 * word of each pipeline element and list, after variable assignments.
 * Words built at run time ($x, `...`, globs) cannot be checked. */
int cmn_path_check_command(const char *shell, const char *cmd, uid_t also,
                           char *why, size_t n);

/* Logs "<key>: <why>; only root and the agent's user may write what the
 * agent runs" and returns C8Y_EINVAL when the configured shell command line
 * `cmd` (key `key`, run with /bin/sh) is not safe; C8Y_OK when it is or is
 * empty. */
int cmn_path_check_key(const c8y_api *api, c8y_plugin *self, const char *key,
                       const char *cmd);

/* Checks directory `dir` whose files decide what the plugin runs (e.g.
 * drop-ins): it and every directory up to / are writable by trusted writers
 * only (a directory that does not exist yet: its parent). 0, or -1 with
 * why. */
int cmn_path_check_dir(const char *dir, char *why, size_t n);

/* Whether the open file `fd` is writable by trusted writers only (owner,
 * mode). 0, or -1 with why: "is owned by uid 1000", "is writable by ...". */
int cmn_path_check_fd(int fd, char *why, size_t n);

/* Opens `path` (absolute) read-only as described above. Returns the file
 * descriptor (O_CLOEXEC), or -1 with errno set and one line in why, e.g.
 * "/var/log/app/app.log is a symlink in /var/log/app, which is writable by
 * uid 1000: not followed". */
int cmn_path_open_read(const char *path, char *why, size_t n);

#endif
