/* trust: the one rule for who may write what the agent runs, reads as a
 * secret or follows as a symlink.
 *
 * Trusted writers are root, the user the agent runs as and the service
 * account the package creates (c8y-agent): that account is the agent (an
 * agent started by root, e.g. `connect --test`, reads the files the service
 * owns). Anyone else who can write a program the agent runs,
 * a secret it reads or a symlink it follows gets the agent's privileges or
 * its secrets. Used by config (secret files) and, compiled into the bundled
 * plugins' common library, by cmn_path (commands, uploaded files). */
#ifndef C8Y_TRUST_H
#define C8Y_TRUST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Name of the service account; C8Y_SERVICE_USER at build time. */
const char *trust_service_user(void);

/* Whether `uid` is a trusted writer (see above). */
bool trust_uid(uid_t uid);

/* trust_uid, or `also` (an extra writer for one use, e.g. the user a command
 * runs as; (uid_t)-1 for none). */
bool trust_writer(uid_t uid, uid_t also);

/* Whether only trusted writers (and `also`) can change the file or
 * directory `st` describes: such an owner, no write bit for others, and the
 * group write bit only for root's group. Directories with the sticky bit
 * are the caller's business (their entries may still be safe). */
bool trust_stat(const struct stat *st, uid_t also);

/* Why trust_stat refused `st`, to follow a path: "is owned by uid 1000",
 * "is writable by group 100 (mode 0775)", "is writable by others (mode
 * 0777)"; "" if it did not. */
void trust_why(const struct stat *st, uid_t also, char *out, size_t n);

#endif
