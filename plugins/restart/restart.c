/* restart: handles c8y_Restart (510) by running a reboot command.
 *
 * The operation is handed to the agent with op_complete_on_reboot() before
 * the command runs: if the machine goes down, the agent finds a new boot id
 * when it starts again and reports success; if the command fails, the
 * operation fails here with the command's exit status and first stderr line.
 * With `delay` > 0 the command runs on a plugin thread after the delay so
 * the agent can still deliver the 501 status before the network goes away.
 *
 * Not running as root (the shipped service), the reboot is asked of the
 * privileged helper c8y-agent-priv (verb "reboot") instead of running
 * `command`, which could not reboot from inside the sandbox. */
#define _GNU_SOURCE
#include <c8y/plugin.h>

#include "cmn_path.h"
#include "cmn_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct restart {
  const c8y_api *api;
  c8y_plugin *self;
  const char *command;
  const char *helper_socket;
  int use_helper; /* reboot through c8y-agent-priv */
  int64_t delay;  /* seconds */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool thread_live, thread_done, stopping; /* under mu */
  pthread_t thread;
  c8y_operation *op; /* the delayed operation, owned by the thread */
} restart;

static bool should_stop(restart *r, c8y_operation *op) {
  pthread_mutex_lock(&r->mu);
  bool stop = r->stopping;
  pthread_mutex_unlock(&r->mu);
  return stop || r->api->op_cancelled(op);
}

typedef struct watch_ctx {
  restart *r;
  c8y_operation *op;
  char err[1024];
  size_t elen;
} watch_ctx;

static int watch_stop(void *ctx) {
  watch_ctx *c = ctx;
  return should_stop(c->r, c->op);
}

static void keep_head(void *ctx, const char *data, size_t n) {
  watch_ctx *c = ctx;
  size_t room = sizeof c->err - 1 - c->elen;
  size_t take = n < room ? n : room;
  memcpy(c->err + c->elen, data, take);
  c->elen += take;
}

static int helper_stop(void *ctx) {
  restart *r = ctx;
  pthread_mutex_lock(&r->mu);
  bool stop = r->stopping;
  pthread_mutex_unlock(&r->mu);
  return stop;
}

static int run_helper(restart *r, c8y_operation *op, char *reason, size_t n) {
  const char *argv[] = {"reboot", NULL};
  cmn_proc_opts o = {.timeout_s = 120,
                     .api = r->api,
                     .op = op,
                     .stop = helper_stop,
                     .stop_ctx = r};
  cmn_proc_result res;
  int rc = cmn_proc_priv_run(r->helper_socket, argv, &o, &res);
  free(res.out);
  if (rc == 0 && res.exit_code == 0)
    return 0;
  /* The agent is stopping while the helper has the request: that is the
   * reboot's shutdown. The operation completes after the boot (or fails
   * then if there was none). */
  if (rc == C8Y_ECANCELED) {
    r->api->log(r->self, C8Y_LOG_NOTICE,
                "stopping while the privileged helper reboots; the operation "
                "is completed after the boot");
    return 0;
  }
  char desc[600];
  cmn_proc_describe(&res, rc, desc, sizeof desc);
  snprintf(reason, n, "reboot through the privileged helper failed: %s", desc);
  return -1;
}

/* Runs the command; 0 if it exited 0, else -1 with the reason filled in. */
static int run_command(restart *r, c8y_operation *op, char *reason, size_t n) {
  if (r->use_helper)
    return run_helper(r, op, reason, n);
  int errpipe[2];
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0 || pipe2(errpipe, O_CLOEXEC) != 0) {
    snprintf(reason, n, "cannot run reboot command '%s': %s", r->command,
             strerror(errno));
    if (devnull >= 0)
      close(devnull);
    return -1;
  }
  char *const argv[] = {"/bin/sh", "-c", (char *)r->command, NULL};
  sigset_t none;
  sigemptyset(&none);
  pid_t pid = fork();
  if (pid == 0) {
    /* Only async-signal-safe calls between fork and exec. The agent may
     * block or ignore signals; the command expects defaults. */
    setpgid(0, 0);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(errpipe[1], STDERR_FILENO);
    execv(argv[0], argv);
    _exit(127);
  }
  int saved = errno;
  close(devnull);
  close(errpipe[1]);
  if (pid < 0) {
    close(errpipe[0]);
    snprintf(reason, n, "cannot run reboot command '%s': %s", r->command,
             strerror(saved));
    return -1;
  }
  /* Keep the first 1 KiB of stderr; stop reading at EOF or shortly after
   * the shell exited (a daemon it started may keep the pipe open). */
  setpgid(pid, pid); /* also in the parent: kill(-pid) must not race */
  watch_ctx c = {.r = r, .op = op};
  cmn_proc_watcher w = {.stop = watch_stop, .on_data = keep_head, .ctx = &c};
  int status = 0;
  bool cancelled =
      cmn_proc_watch(pid, errpipe[0], &w, &status) != CMN_PROC_EXITED;
  close(errpipe[0]);
  if (cancelled) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  char *err = c.err;
  err[c.elen] = '\0';
  err[strcspn(err, "\r\n")] = '\0';
  if (cancelled) {
    snprintf(reason, n, "reboot command '%s' was stopped", r->command);
    return -1;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return 0;
  if (WIFEXITED(status))
    snprintf(reason, n, "reboot command '%s' exited with status %d%s%s",
             r->command, WEXITSTATUS(status), err[0] ? ": " : "", err);
  else
    snprintf(reason, n, "reboot command '%s' was killed by signal %d%s%s",
             r->command, WTERMSIG(status), err[0] ? ": " : "", err);
  return -1;
}

static void *delayed_main(void *arg) {
  restart *r = arg;
  c8y_operation *op = r->op;
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += (time_t)r->delay;
  pthread_mutex_lock(&r->mu);
  while (!r->stopping &&
         pthread_cond_timedwait(&r->cv, &r->mu, &until) != ETIMEDOUT) {
  }
  bool stopping = r->stopping;
  pthread_mutex_unlock(&r->mu);
  char reason[1400];
  if (stopping)
    r->api->op_fail(op, "the agent stopped before the reboot command ran");
  else if (run_command(r, op, reason, sizeof reason) != 0)
    r->api->op_fail(op, reason);
  /* On success the operation stays with the agent until the reboot. */
  pthread_mutex_lock(&r->mu);
  r->thread_done = true;
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

static int on_restart(c8y_plugin *self, c8y_operation *op, void *user_data) {
  restart *r = user_data;
  pthread_mutex_lock(&r->mu);
  bool busy = r->thread_live && !r->thread_done;
  bool reap = r->thread_live && r->thread_done;
  pthread_mutex_unlock(&r->mu);
  if (busy)
    return r->api->op_fail(op, "a restart is already scheduled");
  if (reap) {
    pthread_join(r->thread, NULL);
    r->thread_live = false;
  }
  int rc = r->api->op_complete_on_reboot(op);
  if (rc != C8Y_OK) {
    char reason[200];
    snprintf(reason, sizeof reason, "cannot track the reboot: %s",
             r->api->status_str(rc));
    return r->api->op_fail(op, reason);
  }
  if (r->delay > 0) {
    r->op = op;
    r->thread_done = false;
    if (pthread_create(&r->thread, NULL, delayed_main, r) != 0)
      return r->api->op_fail(op, "cannot start the restart thread");
    r->thread_live = true;
    return C8Y_PENDING;
  }
  char reason[1400];
  if (run_command(r, op, reason, sizeof reason) != 0)
    return r->api->op_fail(op, reason);
  r->api->log(self, C8Y_LOG_NOTICE, "reboot command '%s' started",
              r->use_helper ? "c8y-agent-priv reboot" : r->command);
  return C8Y_PENDING; /* completed by the agent after the reboot */
}

static int init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  restart *r = calloc(1, sizeof *r);
  if (!r)
    return C8Y_ENOMEM;
  r->api = api;
  r->self = self;
  r->command = api->config_string(self, "command", "/sbin/reboot");
  int rc = C8Y_OK;
  if (r->command[strspn(r->command, " \t")] == '\0') {
    api->log(self, C8Y_LOG_ERROR, "command: must not be empty");
    rc = C8Y_EINVAL;
  }
  const char *mode = api->config_string(self, "privileged", "auto");
  r->helper_socket = api->config_string(self, "helper_socket", CMN_PRIV_SOCKET);
  r->use_helper = cmn_proc_priv_use_helper(mode, r->helper_socket);
  if (r->use_helper < 0) {
    api->log(self, C8Y_LOG_ERROR,
             "privileged: '%s' is not auto, helper or direct", mode);
    rc = C8Y_EINVAL;
  } else if (r->use_helper) {
    api->log(self, C8Y_LOG_INFO,
             "reboots go through the privileged helper at %s (command is "
             "not used)",
             r->helper_socket);
  } else if (rc == C8Y_OK &&
             cmn_path_check_key(api, self, "command", r->command) != C8Y_OK) {
    rc = C8Y_EINVAL;
  }
  if (api->config_int(self, "delay", 0, &r->delay) != C8Y_OK) {
    rc = C8Y_EINVAL;
  } else if (r->delay < 0 || r->delay > 3600) {
    api->log(self, C8Y_LOG_ERROR, "delay: must be 0..3600 s, got %lld",
             (long long)r->delay);
    rc = C8Y_EINVAL;
  }
  /* The operation outlives the command until the machine is back; give the
   * agent's timeout room for the delay and a slow shutdown. */
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "510", (uint32_t)(r->delay + 600) * 1000u,
                            on_restart, r);
  if (rc != C8Y_OK) {
    free(r);
    return rc;
  }
  pthread_mutex_init(&r->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&r->cv, &ca);
  pthread_condattr_destroy(&ca);
  *user_data = r;
  return C8Y_OK;
}

static void fini(c8y_plugin *self, void *user_data) {
  restart *r = user_data;
  pthread_mutex_lock(&r->mu);
  r->stopping = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (r->thread_live)
    pthread_join(r->thread, NULL);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

C8Y_PLUGIN(.name = "restart", .version = "1.0.0", .init = init, .fini = fini);
