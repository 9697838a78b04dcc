#define _GNU_SOURCE
#include "cmn_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* environ plus `extra`, whose keys win. The strings stay borrowed. */
static char **merged_env(const char *const *extra) {
  size_t n = 0, k = 0;
  while (environ[n])
    n++;
  while (extra && extra[k])
    k++;
  char **env = calloc(n + k + 1, sizeof(*env));
  if (!env)
    return NULL;
  size_t j = 0;
  for (size_t i = 0; i < k; i++)
    env[j++] = (char *)extra[i];
  for (size_t i = 0; i < n; i++) {
    const char *eq = strchr(environ[i], '=');
    size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
    int overridden = 0;
    for (size_t x = 0; x < k && !overridden; x++)
      overridden =
          strncmp(extra[x], environ[i], klen) == 0 && extra[x][klen] == '=';
    if (!overridden)
      env[j++] = environ[i];
  }
  return env;
}

static void keep_tail(char *tail, size_t *len, const char *d, size_t n) {
  size_t cap = CMN_PROC_ERR_TAIL - 1;
  if (n >= cap) {
    memcpy(tail, d + n - cap, cap);
    *len = cap;
    return;
  }
  if (*len + n > cap) {
    size_t drop = *len + n - cap;
    memmove(tail, tail + drop, *len - drop);
    *len -= drop;
  }
  memcpy(tail + *len, d, n);
  *len += n;
}

/* Makes the stderr tail fit a one-line failure reason. */
static void flatten(char *s) {
  char *w = s;
  int space = 0;
  for (const char *r = s; *r; r++) {
    unsigned char c = (unsigned char)*r;
    if (c < 0x20 || c == 0x7f || c == ' ') {
      space = w != s;
      continue;
    }
    if (space)
      *w++ = ' ';
    space = 0;
    *w++ = (char)c;
  }
  *w = '\0';
  /* The tail may start inside a UTF-8 sequence. */
  size_t skip = 0;
  while (((unsigned char)s[skip] & 0xC0) == 0x80)
    skip++;
  memmove(s, s + skip, strlen(s + skip) + 1);
}

static int out_append(cmn_proc_result *r, const char *d, size_t n, size_t cap,
                      size_t *alloc) {
  if (r->out_len + n > cap) {
    n = cap > r->out_len ? cap - r->out_len : 0;
    r->out_truncated = 1;
  }
  if (n == 0)
    return 0;
  if (r->out_len + n + 1 > *alloc) {
    size_t na = *alloc ? *alloc : 4096;
    while (na < r->out_len + n + 1)
      na *= 2;
    char *p = realloc(r->out, na);
    if (!p)
      return -1;
    r->out = p;
    *alloc = na;
  }
  memcpy(r->out + r->out_len, d, n);
  r->out_len += n;
  r->out[r->out_len] = '\0';
  return 0;
}

void cmn_proc_kill_group(pid_t pid, int *status) {
  kill(-pid, SIGTERM);
  for (int i = 0; i < 40; i++) { /* up to 2 s of grace */
    if (waitpid(pid, status, WNOHANG) == pid) {
      kill(-pid, SIGKILL); /* whatever it left behind */
      return;
    }
    nanosleep(&(struct timespec){0, 50000000}, NULL);
  }
  kill(-pid, SIGKILL);
  waitpid(pid, status, 0);
}

cmn_proc_end cmn_proc_watch(pid_t pid, int fd, const cmn_proc_watcher *w,
                            int *status) {
  int64_t deadline = w->timeout_ms > 0 ? now_ms() + w->timeout_ms : INT64_MAX;
  int grace = 0;
  bool exited = false, eof = false;
  for (;;) {
    int pr = 0;
    if (!eof) {
      struct pollfd pfd = {fd, POLLIN, 0};
      pr = poll(&pfd, 1, 100);
      if (pr > 0) {
        char buf[4096];
        ssize_t got = read(fd, buf, sizeof buf);
        if (got > 0 && w->on_data)
          w->on_data(w->ctx, buf, (size_t)got);
        else if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
          eof = true;
      }
    } else {
      poll(NULL, 0, 100);
    }
    if (!exited && waitpid(pid, status, WNOHANG) == pid)
      exited = true;
    /* A background job may keep the pipe open: stop shortly after exit. */
    if (exited && (eof || (pr == 0 && ++grace > 2)))
      return CMN_PROC_EXITED;
    if (!exited && now_ms() >= deadline)
      return CMN_PROC_TIMED_OUT;
    if (!exited && w->stop && w->stop(w->ctx))
      return CMN_PROC_STOPPED;
  }
}

/* The agent told the operation to stop: why (ABI 1.2 op_cancel_reason;
 * an older agent only cancels on a timeout) is its status, and the text
 * says what happened here; the agent puts its own reason in front. */
static int cancel_status(const cmn_proc_opts *o, cmn_proc_result *r) {
  snprintf(r->why, sizeof(r->why), "cancelled: the command was stopped");
  int why = C8Y_API_HAS(o->api, op_cancel_reason)
                ? o->api->op_cancel_reason(o->op)
                : C8Y_ETIMEDOUT;
  return why == C8Y_ECANCELED ? C8Y_ECANCELED : C8Y_ETIMEDOUT;
}

/* A run's deadline from o->timeout_s (none: INT64_MAX). */
static int64_t run_deadline(const cmn_proc_opts *o) {
  return o->timeout_s > 0 ? now_ms() + o->timeout_s * 1000LL : INT64_MAX;
}

/* Why a run must end now (the operation cancelled, the plugin unloading,
 * the deadline passed), with the text in r->why; 0 to go on. */
static int stop_status(const cmn_proc_opts *o, int64_t deadline,
                       cmn_proc_result *r) {
  if (o->op && o->api->op_cancelled(o->op))
    return cancel_status(o, r);
  if (o->stop && o->stop(o->stop_ctx)) {
    snprintf(r->why, sizeof(r->why), "stopped: the plugin is unloading");
    return C8Y_ECANCELED;
  }
  if (now_ms() > deadline) {
    snprintf(r->why, sizeof(r->why), "timed out after %d s", o->timeout_s);
    return C8Y_ETIMEDOUT;
  }
  return 0;
}

int cmn_proc_run(char *const argv[], const cmn_proc_opts *o,
                 cmn_proc_result *r) {
  memset(r, 0, sizeof(*r));
  r->exit_code = -1;
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    snprintf(r->why, sizeof(r->why), "cannot create pipe: %s", strerror(errno));
    for (int i = 0; i < 2; i++)
      if (out[i] >= 0)
        close(out[i]);
    return C8Y_EIO;
  }
  char **env = merged_env(o->env);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawnattr_init(&at);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &all);
  posix_spawnattr_setpgroup(&at, 0);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                    POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = env ? posix_spawnp(&pid, argv[0], &fa, &at, argv, env) : ENOMEM;
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  free(env);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    snprintf(r->why, sizeof(r->why), "cannot start %s: %s", argv[0],
             strerror(rc));
    close(out[0]);
    close(err[0]);
    return C8Y_EIO;
  }

  int64_t deadline = run_deadline(o);
  struct pollfd pf[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  size_t alloc = 0, err_len = 0;
  int open_fds = 2, status = 0, result = 0;
  char buf[8192];
  for (;;) {
    if ((result = stop_status(o, deadline, r)) != 0)
      break;
    if (open_fds == 0) {
      pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid)
        break;
      if (w < 0 && errno != EINTR) {
        snprintf(r->why, sizeof(r->why), "waitpid: %s", strerror(errno));
        result = C8Y_EIO;
        break;
      }
      nanosleep(&(struct timespec){0, 20000000}, NULL);
      continue;
    }
    int pr = poll(pf, 2, 200);
    if (pr < 0 && errno != EINTR) {
      snprintf(r->why, sizeof(r->why), "poll: %s", strerror(errno));
      result = C8Y_EIO;
      break;
    }
    for (int i = 0; i < 2 && pr > 0; i++) {
      if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      ssize_t n = read(pf[i].fd, buf, sizeof(buf));
      if (n < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (n <= 0) {
        close(pf[i].fd);
        pf[i].fd = -1;
        open_fds--;
        continue;
      }
      if (i == 1) {
        keep_tail(r->err, &err_len, buf, (size_t)n);
      } else if (o->on_out) {
        result = o->on_out(o->ctx, buf, (size_t)n);
        if (result < 0) {
          snprintf(r->why, sizeof(r->why), "output processing failed: %s",
                   o->api->status_str(result));
          break;
        }
        result = 0;
      } else if (out_append(r, buf, (size_t)n, o->out_cap, &alloc) != 0) {
        snprintf(r->why, sizeof(r->why), "out of memory");
        result = C8Y_ENOMEM;
        break;
      }
    }
    if (result)
      break;
  }
  for (int i = 0; i < 2; i++)
    if (pf[i].fd >= 0)
      close(pf[i].fd);
  if (result != 0) {
    cmn_proc_kill_group(pid, NULL);
  } else if (WIFEXITED(status)) {
    r->exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    snprintf(r->why, sizeof(r->why), "killed by signal %d", WTERMSIG(status));
    result = C8Y_EIO;
  }
  r->err[err_len] = '\0';
  flatten(r->err);
  if (!r->out && result == 0) {
    r->out = strdup("");
    if (!r->out)
      result = C8Y_ENOMEM;
  }
  return result;
}

int cmn_proc_shell(const char *cmd, const cmn_proc_opts *o,
                   cmn_proc_result *r) {
  char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
  return cmn_proc_run(argv, o, r);
}

int cmn_proc_upload_url(char *const argv[], const cmn_proc_opts *o,
                        const char *what, char *url, size_t urln, char *why,
                        size_t whyn) {
  cmn_proc_result r;
  int rc = cmn_proc_run(argv, o, &r);
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    cmn_proc_describe(&r, rc, desc, sizeof(desc));
    snprintf(why, whyn, "upload of %s failed (%s)", what, desc);
    free(r.out);
    return C8Y_EIO;
  }
  char *u = r.out + strspn(r.out, " \t\r\n");
  u[strcspn(u, "\r\n")] = '\0';
  size_t ulen = strlen(u);
  while (ulen > 0 && (u[ulen - 1] == ' ' || u[ulen - 1] == '\t'))
    u[--ulen] = '\0';
  if (ulen == 0 || ulen >= urln) {
    if (ulen)
      snprintf(why, whyn,
               "upload of %s failed: http_helper printed a URL longer than "
               "%zu bytes",
               what, urln - 1);
    else
      snprintf(why, whyn, "upload of %s failed: http_helper printed no URL",
               what);
    free(r.out);
    return C8Y_EIO;
  }
  memcpy(url, u, ulen + 1);
  free(r.out);
  return C8Y_OK;
}

void cmn_proc_describe(const cmn_proc_result *r, int rc, char *out, size_t n) {
  if (rc != 0)
    snprintf(out, n, "%s", r->why);
  else if (r->err[0])
    snprintf(out, n, "exit %d: %.400s", r->exit_code, r->err);
  else
    snprintf(out, n, "exit %d", r->exit_code);
}

/* ---- Privileged helper client -------------------------------------------- */

int cmn_proc_priv_use_helper(const char *mode, const char *socket_path) {
  if (strcmp(mode, "direct") == 0)
    return 0;
  if (strcmp(mode, "helper") == 0)
    return 1;
  if (strcmp(mode, "auto") != 0)
    return -1;
  struct stat st;
  return geteuid() != 0 && stat(socket_path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* The helper's last line: "=c8y-agent-priv status N". */
#define PRIV_STATUS "=c8y-agent-priv status "

static int priv_connect(const char *path, cmn_proc_result *r) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path)) {
    snprintf(r->why, sizeof(r->why), "helper socket path too long: %.100s",
             path);
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    snprintf(r->why, sizeof(r->why),
             "cannot reach the privileged helper at %.80s: %s (is "
             "c8y-agent-priv.socket running?)",
             path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

static int priv_request(const char *const argv[], char *req, size_t n,
                        cmn_proc_result *r) {
  size_t len = 0;
  for (size_t i = 0; argv[i]; i++) {
    const char *a = argv[i];
    for (const char *c = a; *c; c++)
      if ((unsigned char)*c <= ' ' || *c == 0x7f) {
        snprintf(r->why, sizeof(r->why),
                 "argument '%.60s' has whitespace or control characters", a);
        return C8Y_EINVAL;
      }
    if (!a[0] || len + strlen(a) + 2 > n) {
      snprintf(r->why, sizeof(r->why), "empty or too long helper request");
      return C8Y_EINVAL;
    }
    len += (size_t)snprintf(req + len, n - len, "%s%s", i ? " " : "", a);
  }
  req[len++] = '\n';
  req[len] = '\0';
  return C8Y_OK;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Splits the status line off the output; the line before it goes to err. */
static int priv_parse(cmn_proc_result *r) {
  while (r->out_len > 0 && r->out[r->out_len - 1] == '\n')
    r->out[--r->out_len] = '\0';
  char *last = strrchr(r->out, '\n');
  last = last ? last + 1 : r->out;
  char *end = NULL;
  long code = -1;
  if (strncmp(last, PRIV_STATUS, strlen(PRIV_STATUS)) == 0)
    code = strtol(last + strlen(PRIV_STATUS), &end, 10);
  if (code < 0 || code > 255 || !end || *end) {
    snprintf(r->why, sizeof(r->why),
             "the privileged helper ended without a status line%s%.100s",
             r->out_len ? ": " : "", last);
    return C8Y_EIO;
  }
  r->exit_code = (int)code;
  *last = '\0';
  r->out_len = (size_t)(last - r->out);
  while (r->out_len > 0 && r->out[r->out_len - 1] == '\n')
    r->out[--r->out_len] = '\0';
  const char *line = strrchr(r->out, '\n');
  snprintf(r->err, sizeof(r->err), "%s", line ? line + 1 : r->out);
  flatten(r->err);
  return 0;
}

int cmn_proc_priv_run(const char *socket_path, const char *const argv[],
                      const cmn_proc_opts *o, cmn_proc_result *r) {
  memset(r, 0, sizeof(*r));
  r->exit_code = -1;
  char req[4096];
  int rc = priv_request(argv, req, sizeof(req), r);
  if (rc != C8Y_OK)
    return rc;
  int fd = priv_connect(socket_path, r);
  if (fd < 0)
    return C8Y_EIO;
  if (write_all(fd, req, strlen(req)) != 0) {
    snprintf(r->why, sizeof(r->why), "cannot send to the privileged helper: %s",
             strerror(errno));
    close(fd);
    return C8Y_EIO;
  }
  shutdown(fd, SHUT_WR);
  int64_t deadline = run_deadline(o);
  size_t alloc = 0, cap = o->out_cap ? o->out_cap : 64 * 1024;
  int result = 0;
  char buf[8192];
  for (;;) {
    if ((result = stop_status(o, deadline, r)) != 0)
      break;
    struct pollfd pfd = {fd, POLLIN, 0};
    int pr = poll(&pfd, 1, 200);
    if (pr < 0 && errno != EINTR) {
      snprintf(r->why, sizeof(r->why), "poll: %s", strerror(errno));
      result = C8Y_EIO;
      break;
    }
    if (pr <= 0)
      continue;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0) {
      snprintf(r->why, sizeof(r->why), "reading from the helper: %s",
               strerror(errno));
      result = C8Y_EIO;
      break;
    }
    if (n == 0)
      break;
    /* Keep the tail: the status line comes last. */
    if (r->out_len + (size_t)n > cap && r->out_len > 0) {
      size_t drop =
          r->out_len + (size_t)n > cap ? r->out_len + (size_t)n - cap : 0;
      drop = drop > r->out_len ? r->out_len : drop;
      memmove(r->out, r->out + drop, r->out_len - drop);
      r->out_len -= drop;
      r->out_truncated = 1;
    }
    if (out_append(r, buf, (size_t)n, SIZE_MAX, &alloc) != 0) {
      snprintf(r->why, sizeof(r->why), "out of memory");
      result = C8Y_ENOMEM;
      break;
    }
  }
  close(fd);
  if (!r->out) {
    r->out = strdup("");
    if (!r->out)
      return C8Y_ENOMEM;
  }
  return result != 0 ? result : priv_parse(r);
}
