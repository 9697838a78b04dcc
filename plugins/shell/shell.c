/* shell: handles c8y_Command (511) by running the text with `shell -c`.
 *
 * Disabled unless `allow = true`: remote shell access is a deliberate
 * choice. Commands run synchronously on the plugin's worker thread, one at a
 * time in arrival order. That is required, not just simpler: 502/503 update
 * the *oldest* EXECUTING c8y_Command, so two commands finishing out of order
 * would report each other's results. Other plugins are not blocked (each
 * plugin has its own worker).
 *
 * The command runs in a new session (so the whole process group can be
 * killed on timeout), stdin is /dev/null, stdout and stderr are merged. The
 * output is capped at `max_output` bytes as sent (a double quote counts
 * twice, since SmartREST doubles it) so the 503 line always fits. */
#define _GNU_SOURCE
#include <c8y/plugin.h>

#include "cmn_csv.h"
#include "cmn_path.h"
#include "cmn_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define SH_TAIL 1000             /* output bytes quoted in a failure reason */
#define SH_MARK "...[truncated]" /* appended when output was cut */

extern char **environ;

typedef struct shell {
  const c8y_api *api;
  int64_t timeout, max_output;
  const char *shell;
  bool switch_user;
  uid_t uid;
  gid_t gid;
  gid_t *groups;
  int ngroups;
  char *user, *home;
} shell;

typedef struct output {
  char *head; /* first max_output encoded bytes, NUL-terminated */
  size_t hlen, henc, hmax;
  bool truncated;
  char tail[SH_TAIL]; /* ring of the last SH_TAIL bytes */
  size_t total;
} output;

static void out_add(output *o, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    size_t cost = p[i] == '"' ? 2 : 1;
    if (!o->truncated && o->henc + cost <= o->hmax) {
      o->head[o->hlen++] = p[i];
      o->henc += cost;
    } else {
      o->truncated = true;
    }
    o->tail[o->total % SH_TAIL] = p[i];
    o->total++;
  }
}

/* Drops an incomplete UTF-8 sequence at the end of s[0..*len). */
static void utf8_trim_end(const char *s, size_t *len) {
  size_t i = *len, back = 0;
  while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
    i--, back++;
  if (i == 0)
    return;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  if (need > back + 1)
    *len = i - 1;
}

/* The last SH_TAIL bytes without trailing newlines, "..."-prefixed if cut. */
static void out_tail(const output *o, char *dst, size_t n) {
  size_t len = o->total < SH_TAIL ? o->total : SH_TAIL;
  char buf[SH_TAIL + 1];
  for (size_t i = 0; i < len; i++)
    buf[i] = o->tail[(o->total - len + i) % SH_TAIL];
  size_t start = 0;
  while (start < len && ((unsigned char)buf[start] & 0xC0) == 0x80)
    start++;
  while (len > start && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
    len--;
  buf[len] = '\0';
  snprintf(dst, n, "%s%s", o->total > SH_TAIL ? "..." : "", buf + start);
}

/* environ with HOME/USER/LOGNAME of the target user (malloc'ed array). */
static char **user_env(const shell *sh, char *bufs[3]) {
  size_t n = 0;
  while (environ[n])
    n++;
  char **env = calloc(n + 4, sizeof *env);
  if (!env)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "HOME=", 5) && strncmp(environ[i], "USER=", 5) &&
        strncmp(environ[i], "LOGNAME=", 8))
      env[k++] = environ[i];
  if (asprintf(&bufs[0], "HOME=%s", sh->home) < 0 ||
      asprintf(&bufs[1], "USER=%s", sh->user) < 0 ||
      asprintf(&bufs[2], "LOGNAME=%s", sh->user) < 0) {
    free(env);
    return NULL;
  }
  env[k++] = bufs[0];
  env[k++] = bufs[1];
  env[k++] = bufs[2];
  return env;
}

typedef struct run_ctx {
  output *out;
  const c8y_api *api;
  c8y_operation *op;
} run_ctx;

static int run_cancelled(void *ctx) {
  run_ctx *c = ctx;
  return c->api->op_cancelled(c->op);
}

static void run_output(void *ctx, const char *data, size_t n) {
  out_add(((run_ctx *)ctx)->out, data, n);
}

static int run(shell *sh, c8y_operation *op, const char *cmd) {
  const c8y_api *api = sh->api;
  output o = {.hmax = (size_t)sh->max_output};
  o.head = malloc(o.hmax + sizeof SH_MARK + 1);
  char *envbufs[3] = {NULL, NULL, NULL};
  char **env = sh->switch_user ? user_env(sh, envbufs) : environ;
  int fds[2] = {-1, -1};
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  char execerr[300];
  snprintf(execerr, sizeof execerr, "cannot execute %s\n", sh->shell);
  char *const argv[] = {(char *)sh->shell, "-c", (char *)cmd, NULL};
  pid_t pid = -1;
  int err = ENOMEM;
  sigset_t none;
  sigemptyset(&none);
  if (!o.head || !env)
    err = ENOMEM;
  else if (devnull < 0 || pipe2(fds, O_CLOEXEC) != 0)
    err = errno;
  else if ((pid = fork()) < 0)
    err = errno;
  if (pid == 0) {
    /* Only async-signal-safe calls between fork and exec. */
    setsid();
    /* The agent may block or ignore signals; commands expect defaults. */
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    dup2(devnull, STDIN_FILENO);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    if (sh->switch_user) {
      if (setgroups((size_t)sh->ngroups, sh->groups) != 0 ||
          setgid(sh->gid) != 0 || setuid(sh->uid) != 0) {
        static const char msg[] = "cannot switch user\n";
        (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
        _exit(126);
      }
      if (chdir(sh->home) != 0)
        (void)!chdir("/");
    }
    execve(sh->shell, argv, env);
    (void)!write(STDERR_FILENO, execerr, strlen(execerr));
    _exit(127);
  }
  if (devnull >= 0)
    close(devnull);
  if (fds[1] >= 0)
    close(fds[1]);
  if (pid < 0) {
    char reason[300];
    snprintf(reason, sizeof reason, "cannot run the command: %s",
             strerror(err));
    if (fds[0] >= 0)
      close(fds[0]);
    free(o.head);
    if (env != environ)
      free(env);
    for (int i = 0; i < 3; i++)
      free(envbufs[i]);
    return api->op_fail(op, reason);
  }
  setpgid(pid, pid); /* setsid() in the child may not have run yet */

  run_ctx ctx = {&o, api, op};
  cmn_proc_watcher w = {.timeout_ms = sh->timeout * 1000,
                        .stop = run_cancelled,
                        .on_data = run_output,
                        .ctx = &ctx};
  int status = 0;
  cmn_proc_end end = cmn_proc_watch(pid, fds[0], &w, &status);
  bool timed_out = end == CMN_PROC_TIMED_OUT;
  bool cancelled = end == CMN_PROC_STOPPED;
  if (end != CMN_PROC_EXITED)
    cmn_proc_kill_group(pid, &status);
  close(fds[0]);
  if (env != environ)
    free(env);
  for (int i = 0; i < 3; i++)
    free(envbufs[i]);

  if (o.truncated) {
    utf8_trim_end(o.head, &o.hlen);
    memcpy(o.head + o.hlen, SH_MARK, sizeof SH_MARK);
  } else {
    o.head[o.hlen] = '\0';
  }
  char tail[SH_TAIL + 8], reason[SH_TAIL + 100];
  out_tail(&o, tail, sizeof tail);
  const char *sep = tail[0] ? ": " : "";
  int rc;
  if (cancelled) {
    /* The agent puts why first ("operation timed out after N s: ",
     * "agent stopped: "). */
    rc = api->op_fail(op, "the command was killed");
  } else if (timed_out) {
    snprintf(reason, sizeof reason, "timed out after %lld s",
             (long long)sh->timeout);
    rc = api->op_fail(op, reason);
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    rc = api->op_succeed(op, o.head);
  } else if (WIFEXITED(status)) {
    snprintf(reason, sizeof reason, "exit status %d%s%s", WEXITSTATUS(status),
             sep, tail);
    rc = api->op_fail(op, reason);
  } else {
    snprintf(reason, sizeof reason, "killed by signal %d%s%s", WTERMSIG(status),
             sep, tail);
    rc = api->op_fail(op, reason);
  }
  free(o.head);
  /* C8Y_ETIMEDOUT: the agent already failed it; the handle is released. */
  return rc == C8Y_ETIMEDOUT ? C8Y_OK : rc;
}

static int on_command(c8y_plugin *self, c8y_operation *op, void *user_data) {
  shell *sh = user_data;
  /* The platform quotes the text, so it is one field; rejoin stray splits. */
  size_t n = sh->api->op_field_count(op), len = 0;
  for (size_t i = 0; i < n; i++)
    len += strlen(sh->api->op_field(op, i)) + 1;
  char *cmd = calloc(1, len + 1);
  if (!cmd)
    return C8Y_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (i)
      strcat(cmd, ",");
    strcat(cmd, sh->api->op_field(op, i));
  }
  int rc;
  if (cmd[strspn(cmd, " \t\r\n")] == '\0') {
    rc = sh->api->op_fail(op, "no command text");
  } else {
    sh->api->log(self, C8Y_LOG_INFO, "running command (%zu bytes)",
                 strlen(cmd));
    rc = run(sh, op, cmd);
  }
  free(cmd);
  return rc;
}

static void shell_free(shell *sh) {
  free(sh->groups);
  free(sh->user);
  free(sh->home);
  free(sh);
}

/* Resolves `user` now: NSS lookups are not safe in the forked child. */
static int setup_user(c8y_plugin *self, shell *sh, const char *user) {
  const c8y_api *api = sh->api;
  struct passwd pw, *res = NULL;
  char buf[4096];
  int e = getpwnam_r(user, &pw, buf, sizeof buf, &res);
  if (!res) {
    api->log(self, C8Y_LOG_ERROR, "user: no such user '%s'%s%s", user,
             e ? ": " : "", e ? strerror(e) : "");
    return C8Y_EINVAL;
  }
  if (pw.pw_uid == geteuid())
    return C8Y_OK; /* already that user */
  if (geteuid() != 0) {
    api->log(self, C8Y_LOG_ERROR,
             "user: cannot run commands as '%s': the agent is not root", user);
    return C8Y_EINVAL;
  }
  int ng = 64;
  for (int tries = 0; tries < 4; tries++) {
    gid_t *g = realloc(sh->groups, (size_t)ng * sizeof *g);
    if (!g)
      return C8Y_ENOMEM;
    sh->groups = g;
    int want = ng;
    if (getgrouplist(user, pw.pw_gid, g, &want) >= 0) {
      ng = want;
      break;
    }
    ng = want > ng ? want : ng * 2;
    if (tries == 3) {
      api->log(self, C8Y_LOG_ERROR, "user: cannot list the groups of '%s'",
               user);
      return C8Y_EINVAL;
    }
  }
  sh->ngroups = ng;
  sh->uid = pw.pw_uid;
  sh->gid = pw.pw_gid;
  sh->user = strdup(user);
  sh->home = strdup(pw.pw_dir && pw.pw_dir[0] ? pw.pw_dir : "/");
  if (!sh->user || !sh->home)
    return C8Y_ENOMEM;
  sh->switch_user = true;
  return C8Y_OK;
}

static int init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  shell *sh = calloc(1, sizeof *sh);
  if (!sh)
    return C8Y_ENOMEM;
  sh->api = api;
  int allow = 0, rc = C8Y_OK;
  /* Every key is checked even when disabled, so a typo shows up at once. */
  if (api->config_bool(self, "allow", 0, &allow) != C8Y_OK)
    rc = C8Y_EINVAL;
  if (api->config_int(self, "timeout", 60, &sh->timeout) != C8Y_OK) {
    rc = C8Y_EINVAL;
  } else if (sh->timeout < 1 || sh->timeout > 86400) {
    api->log(self, C8Y_LOG_ERROR, "timeout: must be 1..86400 s, got %lld",
             (long long)sh->timeout);
    rc = C8Y_EINVAL;
  }
  if (api->config_int(self, "max_output", 8000, &sh->max_output) != C8Y_OK) {
    rc = C8Y_EINVAL;
  } else if (sh->max_output < 1 || sh->max_output > CMN_CSV_TEXT_MAX) {
    api->log(self, C8Y_LOG_ERROR,
             "max_output: must be 1..%d bytes (the result must fit one "
             "%d-byte line), got %lld",
             CMN_CSV_TEXT_MAX, C8Y_MAX_LINE, (long long)sh->max_output);
    rc = C8Y_EINVAL;
  }
  sh->shell = api->config_string(self, "shell", "/bin/sh");
  if (sh->shell[0] != '/' || access(sh->shell, X_OK) != 0) {
    api->log(self, C8Y_LOG_ERROR,
             "shell: '%s' is not an executable absolute"
             " path",
             sh->shell);
    rc = C8Y_EINVAL;
  }
  const char *user = api->config_string(self, "user", "");
  if (user[0] && rc == C8Y_OK)
    rc = setup_user(self, sh, user);
  char why[600];
  if (rc == C8Y_OK &&
      cmn_path_check_program(sh->shell, sh->switch_user ? sh->uid : (uid_t)-1,
                             NULL, why, sizeof why) != 0) {
    api->log(self, C8Y_LOG_ERROR,
             "shell: %s; only root and the agent's user may write what the "
             "agent runs",
             why);
    rc = C8Y_EINVAL;
  }
  if (rc == C8Y_OK && !allow) {
    api->log(self, C8Y_LOG_NOTICE,
             "c8y_Command is disabled; set allow = true in [plugin.shell] "
             "to enable it");
  } else if (rc == C8Y_OK) {
    /* The agent's timeout is a backstop; ours fires first with a reason. */
    rc = api->add_operation(self, "511", (uint32_t)(sh->timeout + 15) * 1000u,
                            on_command, sh);
  }
  if (rc != C8Y_OK) {
    shell_free(sh);
    return rc;
  }
  *user_data = sh;
  return C8Y_OK;
}

static void fini(c8y_plugin *self, void *user_data) { shell_free(user_data); }

C8Y_PLUGIN(.name = "shell", .version = "1.0.0", .init = init, .fini = fini);
