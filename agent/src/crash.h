/* crash: which plugin callback was running when the agent died, and the
 * quarantine of a plugin that keeps killing it.
 *
 * The plugin worker and the loader mark the calling thread around every
 * plugin callback (crash_enter/crash_leave). On SIGSEGV, SIGBUS, SIGILL,
 * SIGFPE or SIGABRT a handler writes that marker to
 * <state_dir>/crash.record with async-signal-safe calls only, then lets the
 * signal take its normal course (the previous handler or the default).
 *
 * The next start (crash_take_record) logs the record and counts the crash
 * against the plugin in <state_dir>/quarantine/<name>. CRASH_QUARANTINE_AFTER
 * crashes in a row in the same plugin file quarantine it: the loader skips
 * it until its file changes (device, inode, size or mtime) or an operator
 * runs `c8y-agent --clear-quarantine <name>` (or deletes that file). A clean
 * stop, or a crash elsewhere, ends the streak of the plugins not yet
 * quarantined. */
#ifndef C8Y_CRASH_H
#define C8Y_CRASH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#define CRASH_QUARANTINE_AFTER 3
#define CRASH_RECORD_FILE "crash.record"
#define CRASH_QUARANTINE_DIR "quarantine"

/* Installs the fatal-signal handlers (once) and sets where the record goes.
 * Returns 0, C8Y_EINVAL when the record path would be too long, or
 * C8Y_ENOTSUP when the system refuses a handler. */
int crash_install(const char *state_dir);
/* An alternate signal stack for the calling thread, so a plugin that
 * overflows its stack is still recorded. Pair with crash_thread_fini. */
void crash_thread_init(void);
void crash_thread_fini(void);

/* The identity written for a plugin file: malloc'ed "plugin=..\nfile=..\n
 * id=..\n" (name may be empty before the descriptor was read). */
char *crash_plugin_head(const char *name, const char *path,
                        const struct stat *st);
/* Marks the calling thread as running callback `what` (`detail` may be
 * NULL) of the plugin whose head is given; head must stay valid until
 * crash_leave. */
void crash_enter(const char *head, const char *what, const char *detail);
void crash_leave(void);

/* Reads, logs and removes the record of a crash of the previous run, and
 * counts it for quarantine. Returns true if there was one. */
bool crash_take_record(const char *state_dir);
/* The plugin at `path` (with fstat result st) is quarantined: true, with the
 * reason and the quarantine name (for --clear-quarantine) filled in. A
 * record for a file that changed since is removed (logged). */
bool crash_quarantined(const char *state_dir, const char *path,
                       const struct stat *st, char *why, size_t whylen,
                       char *name, size_t namelen);
/* A clean stop: streaks of plugins not quarantined end. */
void crash_reset_streaks(const char *state_dir);
/* Removes the quarantine of `name`. 0 removed, C8Y_ESTATE when it is not
 * quarantined, C8Y_EINVAL for a name that cannot be one (errno EINVAL) or
 * too long a path, C8Y_EIO when removing fails (errno says why). */
int crash_clear_quarantine(const char *state_dir, const char *name);

#endif
