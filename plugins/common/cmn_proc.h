/* cmn_proc: runs a command for a plugin and collects what it printed.
 *
 * The command runs in its own process group (so a timeout or a cancelled
 * operation also kills whatever it started), with stdin from /dev/null, the
 * agent's environment plus extra variables and default signal handling. */
#ifndef C8Y_CMN_PROC_H
#define C8Y_CMN_PROC_H

#include <c8y/plugin.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CMN_PROC_ERR_TAIL 1024

typedef struct cmn_proc_opts {
  const char *const *env;  /* extra "KEY=value", NULL-terminated, nullable */
  int timeout_s;           /* <= 0: no limit */
  const c8y_api *api;      /* required (status texts) */
  const c8y_operation *op; /* polled with op_cancelled; nullable */
  size_t out_cap;          /* bytes of stdout kept; more is drained */
  /* If set, stdout goes here instead of cmn_proc_result.out; < 0 stops. */
  int (*on_out)(void *ctx, const char *data, size_t n);
  void *ctx;
  /* Polled like op_cancelled; non-zero stops the command (C8Y_ECANCELED),
   * e.g. when the plugin is being unloaded. Nullable. */
  int (*stop)(void *stop_ctx);
  void *stop_ctx;
} cmn_proc_opts;

typedef struct cmn_proc_result {
  int exit_code; /* -1 if it did not exit normally */
  char *out;     /* stdout, NUL-terminated, malloc'ed */
  size_t out_len;
  int out_truncated;
  char err[CMN_PROC_ERR_TAIL]; /* last bytes of stderr, one line, trimmed */
  char why[160]; /* set when the command did not run to completion */
} cmn_proc_result;

/* Runs argv (argv[0] searched in PATH unless it has a '/'). Returns 0 when
 * the command exited (see exit_code), or < 0 (C8Y_EIO, C8Y_ETIMEDOUT for
 * its own timeout or the operation's, C8Y_ECANCELED when the agent stops
 * the operation or `stop` says so, C8Y_ENOMEM, or on_out's error) with
 * `why` set.
 * r->out must be freed in every case. */
int cmn_proc_run(char *const argv[], const cmn_proc_opts *o,
                 cmn_proc_result *r);

/* cmn_proc_run of "/bin/sh -c cmd". */
int cmn_proc_shell(const char *cmd, const cmn_proc_opts *o, cmn_proc_result *r);

/* Runs an http_helper that uploads a file and prints the binary's URL on its
 * first line (blanks around it are ignored). C8Y_OK with the URL in url, or
 * C8Y_EIO with "upload of <what> failed (<exit and stderr>)" or "upload of
 * <what> failed: http_helper printed no URL" in why. */
int cmn_proc_upload_url(char *const argv[], const cmn_proc_opts *o,
                        const char *what, char *url, size_t urln, char *why,
                        size_t whyn);

/* "exit 3: <stderr tail>", "exit 3", or the reason the command did not
 * finish (rc != 0), for op_fail. */
void cmn_proc_describe(const cmn_proc_result *r, int rc, char *out, size_t n);

/* ---- Privileged actions through c8y-agent-priv ---------------------------
 * The shipped service runs the agent unprivileged and sandboxed. The few
 * actions that need root (reboot, installing or removing a package) are
 * asked of c8y-agent-priv, a root helper with a fixed set of verbs that
 * systemd starts per connection on this socket (c8y-agent-priv.socket,
 * mode 0660 root:c8y-agent) in its own unit, so outside the agent's
 * sandbox and cgroup: an install that restarts the agent completes. */
#define CMN_PRIV_SOCKET "/run/c8y-agent-priv.sock"

/* mode "auto": the helper when not root and `socket_path` exists; "helper":
 * always; "direct": never (run the configured commands). 1 = use the helper,
 * 0 = not, -1 = unknown mode. */
int cmn_proc_priv_use_helper(const char *mode, const char *socket_path);

/* Asks the helper to run argv (verb and arguments, NULL-terminated; no
 * whitespace or control characters in them) and waits for its status line.
 * Same contract as cmn_proc_run: 0 with exit_code set (out: what the action
 * printed, err: its last line), or < 0 with `why` (helper not reachable,
 * timeout, cancelled, stopped). Giving up does not stop the helper's action
 * (it must survive the agent's own restart). */
int cmn_proc_priv_run(const char *socket_path, const char *const argv[],
                      const cmn_proc_opts *o, cmn_proc_result *r);

/* ---- Lower level, for plugins that fork themselves (e.g. to switch user).
 */

/* SIGTERM to the process group `pid`, SIGKILL after 2 s (or at once to what
 * the leader left behind when it exited); reaps the leader into *status
 * (nullable). */
void cmn_proc_kill_group(pid_t pid, int *status);

typedef enum cmn_proc_end {
  CMN_PROC_EXITED,    /* *status is the child's wait status */
  CMN_PROC_TIMED_OUT, /* the child still runs and is not reaped */
  CMN_PROC_STOPPED    /* stop() said so; still runs, not reaped */
} cmn_proc_end;

typedef struct cmn_proc_watcher {
  int64_t timeout_ms; /* <= 0: no limit */
  /* Polled about ten times a second while the child runs; nullable. */
  int (*stop)(void *ctx);
  /* Every chunk read from the pipe; nullable (the output is drained). */
  void (*on_data)(void *ctx, const char *data, size_t n);
  void *ctx;
} cmn_proc_watcher;

/* Reads `fd` (the read end of the child's output pipe) until EOF, or until
 * shortly after `pid` exited when a background job keeps the pipe open.
 * Does not close fd. On timeout or stop the caller decides how to kill. */
cmn_proc_end cmn_proc_watch(pid_t pid, int fd, const cmn_proc_watcher *w,
                            int *status);

#endif
