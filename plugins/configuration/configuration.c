/* configuration: the device's text configuration (513 c8y_Configuration)
 * and, with an HTTP helper, typed configuration files (524/526).
 *
 * Text configuration is written atomically, optionally applied by a command
 * and rolled back when that command fails. Typed file transfers need HTTP
 * (binaries API), which the agent does not speak: an external helper does
 * it, and without one the typed operations are not offered at all. */
#include <c8y/plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- Child processes ------------------------------------------------------
 * Commands run in their own process group so that a timeout or a cancelled
 * operation also kills whatever they started. */

#define RUN_ERR_TAIL 1024

typedef struct run_opts {
  const char *const *env; /* extra "KEY=value", NULL-terminated, nullable */
  int timeout_s;          /* <= 0: no limit */
  const c8y_api *api;
  const c8y_operation *op; /* polled with op_cancelled; nullable */
  size_t out_cap;          /* bytes of stdout kept; more is drained */
  /* If set, stdout goes here instead of run_result.out; < 0 stops. */
  int (*on_out)(void *ctx, const char *data, size_t n);
  void *ctx;
} run_opts;

typedef struct run_result {
  int exit_code; /* -1 if killed by a signal */
  char *out;     /* stdout, NUL-terminated, malloc'ed */
  size_t out_len;
  int out_truncated;
  char err[RUN_ERR_TAIL]; /* last bytes of stderr, one line, trimmed */
  char why[160];          /* set when the command did not run to completion */
} run_result;

static int64_t run_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* environ plus `extra`, whose keys win. The strings stay borrowed. */
static char **run_env(const char *const *extra) {
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

static void run_keep_tail(char *tail, size_t *len, const char *d, size_t n) {
  size_t cap = RUN_ERR_TAIL - 1;
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
static void run_flatten(char *s) {
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

static int run_out_append(run_result *r, const char *d, size_t n, size_t cap,
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

static void run_kill(pid_t pid) {
  kill(-pid, SIGTERM);
  for (int i = 0; i < 40; i++) { /* up to 2 s of grace */
    if (waitpid(pid, NULL, WNOHANG) == pid)
      return;
    nanosleep(&(struct timespec){0, 50000000}, NULL);
  }
  kill(-pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

/* Runs argv (argv[0] searched in PATH unless it has a '/') with stdin from
 * /dev/null. Returns 0 when the command exited (see exit_code), or < 0 with
 * `why` set. Free r->out. */
static int run_argv(char *const argv[], const run_opts *o, run_result *r) {
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
  char **env = run_env(o->env);
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

  int64_t deadline =
      o->timeout_s > 0 ? run_now_ms() + o->timeout_s * 1000LL : INT64_MAX;
  struct pollfd pf[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  size_t alloc = 0, err_len = 0;
  int open_fds = 2, status = 0, result = 0;
  char buf[8192];
  for (;;) {
    if (o->op && o->api->op_cancelled(o->op)) {
      snprintf(r->why, sizeof(r->why), "cancelled: the operation timed out");
      result = C8Y_ETIMEDOUT;
      break;
    }
    if (run_now_ms() > deadline) {
      snprintf(r->why, sizeof(r->why), "timed out after %d s", o->timeout_s);
      result = C8Y_ETIMEDOUT;
      break;
    }
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
        run_keep_tail(r->err, &err_len, buf, (size_t)n);
      } else if (o->on_out) {
        result = o->on_out(o->ctx, buf, (size_t)n);
        if (result < 0) {
          snprintf(r->why, sizeof(r->why), "output processing failed: %s",
                   o->api->status_str(result));
          break;
        }
        result = 0;
      } else if (run_out_append(r, buf, (size_t)n, o->out_cap, &alloc) != 0) {
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
    run_kill(pid);
  } else if (WIFEXITED(status)) {
    r->exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    snprintf(r->why, sizeof(r->why), "killed by signal %d", WTERMSIG(status));
    result = C8Y_EIO;
  }
  r->err[err_len] = '\0';
  run_flatten(r->err);
  if (!r->out && result == 0) {
    r->out = strdup("");
    if (!r->out)
      result = C8Y_ENOMEM;
  }
  return result;
}

static int run_shell(const char *cmd, const run_opts *o, run_result *r) {
  char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
  return run_argv(argv, o, r);
}

/* "exit 3: <stderr tail>" or the reason it did not finish, for op_fail. */
static void run_describe(const run_result *r, int rc, char *out, size_t n) {
  if (rc != 0)
    snprintf(out, n, "%s", r->why);
  else if (r->err[0])
    snprintf(out, n, "exit %d: %.400s", r->exit_code, r->err);
  else
    snprintf(out, n, "exit %d", r->exit_code);
}

/* ---- Files ----------------------------------------------------------------
 */

#define CFG_REPORT_MAX 15000              /* encoded 113 line, below 16000 */
#define CFG_BACKUP_MAX (16 * 1024 * 1024) /* old text config kept in memory */
#define CFG_MAX_TYPES 64

/* Length of a field as the SmartREST encoder writes it. Plugins cannot link
 * the core's codec, so this repeats its quoting rule; it never undercounts
 * (the core also drops control characters this counts). */
static size_t csv_len(const char *s) {
  size_t n = strlen(s), len = n, quotes = 0;
  int quote = n > 0 && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' ||
                        s[n - 1] == '\t');
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"')
      quotes++;
    if (s[i] == '"' || s[i] == ',' || s[i] == '\r' || s[i] == '\n' ||
        s[i] == '\t')
      quote = 1;
  }
  return quote ? len + quotes + 2 : len;
}

/* Reads at most `max` bytes. *exists = 0 and C8Y_OK when there is no file;
 * C8Y_ETOOBIG when the file is longer than max. */
static int read_file(const char *path, size_t max, char **out, size_t *len,
                     int *exists) {
  *out = NULL;
  *len = 0;
  *exists = 0;
  FILE *f = fopen(path, "rb");
  if (!f)
    return errno == ENOENT ? C8Y_OK : C8Y_EIO;
  *exists = 1;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  int rc = buf ? C8Y_OK : C8Y_ENOMEM;
  while (rc == C8Y_OK) {
    if (n + 1 >= cap) {
      char *p = realloc(buf, cap * 2);
      if (!p) {
        rc = C8Y_ENOMEM;
        break;
      }
      buf = p;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (n > max)
      rc = C8Y_ETOOBIG;
    else if (got == 0)
      break;
  }
  if (rc == C8Y_OK && ferror(f))
    rc = C8Y_EIO;
  fclose(f);
  if (rc != C8Y_OK) {
    free(buf);
    return rc;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return C8Y_OK;
}

static void fsync_dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  char dir[4096];
  if (!slash)
    snprintf(dir, sizeof(dir), ".");
  else if (slash == path)
    snprintf(dir, sizeof(dir), "/");
  else
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

/* "<dir>/.<base>.c8y-XXXXXX", a temporary name next to `path` so that the
 * final rename stays on one file system. */
static int temp_next_to(const char *path, char *out, size_t n) {
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  int dirlen = slash ? (int)(slash - path) : 1;
  const char *dir = slash ? path : ".";
  if (snprintf(out, n, "%.*s/.%s.c8y-XXXXXX", dirlen, dir, base) >= (int)n)
    return -1;
  int fd = mkstemp(out);
  if (fd >= 0)
    fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

/* Gives `fd` the mode and owner of the file it replaces (0644 if new). */
static void copy_mode(int fd, const char *path) {
  struct stat st;
  if (stat(path, &st) == 0) {
    if (fchown(fd, st.st_uid, st.st_gid) != 0) {
      /* Not root: the new file keeps our ownership. */
    }
    fchmod(fd, st.st_mode & 07777);
  } else {
    fchmod(fd, 0644);
  }
}

static int write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, data, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    data += w;
    len -= (size_t)w;
  }
  return 0;
}

/* temp + fsync + rename + fsync(dir). */
static int write_atomic(const char *path, const char *data, size_t len,
                        char *why, size_t whyn) {
  char tmp[4200];
  int fd = temp_next_to(path, tmp, sizeof(tmp));
  if (fd < 0) {
    snprintf(why, whyn, "cannot create a temporary file next to %s: %s", path,
             strerror(errno));
    return C8Y_EIO;
  }
  copy_mode(fd, path);
  if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
    snprintf(why, whyn, "cannot write %.400s: %s", tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    return C8Y_EIO;
  }
  close(fd);
  if (rename(tmp, path) != 0) {
    snprintf(why, whyn, "cannot rename %.400s to %.400s: %s", tmp, path,
             strerror(errno));
    unlink(tmp);
    return C8Y_EIO;
  }
  fsync_dir_of(path);
  return C8Y_OK;
}

static void iso_now(char *out, size_t n) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (int)(ts.tv_nsec / 1000000) % 1000);
}

/* ---- Plugin state ----------------------------------------------------------
 */

typedef struct cfg_file {
  char *type;
  char *path;
} cfg_file;

typedef struct cfg {
  c8y_plugin *self;
  const c8y_api *api;
  const char *text_file;     /* borrowed from the config until fini */
  const char *apply_command; /* "" = none */
  const char *http_helper;   /* "" = none */
  int timeout_s;
  char *files_buf; /* owns the strings of files[] */
  cfg_file files[CFG_MAX_TYPES];
  size_t nfiles;
} cfg;

static const cfg_file *cfg_find(const cfg *c, const char *type) {
  for (size_t i = 0; i < c->nfiles; i++)
    if (strcmp(c->files[i].type, type) == 0)
      return &c->files[i];
  return NULL;
}

/* Child devices have no configuration on this machine. */
static int cfg_own_device(cfg *c, c8y_operation *op) {
  const char *dev = c->api->op_device(op);
  if (dev && strcmp(dev, c->api->device_id(c->self)) != 0) {
    char why[300];
    snprintf(why, sizeof(why), "%s is not supported for child device '%.200s'",
             c->api->op_fragment(op), dev);
    c->api->op_fail(op, why);
    return 0;
  }
  return 1;
}

static void cfg_report_text(cfg *c, const char *text) {
  if (4 + csv_len(text) > CFG_REPORT_MAX) {
    c->api->log(c->self, C8Y_LOG_WARNING,
                "%s: configuration text is longer than %d bytes encoded; not "
                "reported (113)",
                c->text_file, CFG_REPORT_MAX);
    return;
  }
  const char *fields[] = {"113", text};
  int rc = c->api->send_static(c->self, NULL, fields, 2);
  if (rc < 0)
    c->api->log(c->self, C8Y_LOG_ERROR, "cannot send 113: %s",
                c->api->status_str(rc));
}

/* ---- 513 c8y_Configuration ------------------------------------------------
 */

static int on_text_config(c8y_plugin *self, c8y_operation *op, void *ud) {
  cfg *c = ud;
  const c8y_api *api = c->api;
  char why[1024];
  if (!cfg_own_device(c, op))
    return C8Y_OK;
  const char *text = api->op_field(op, 0);
  if (!text || api->op_field_count(op) != 1) {
    snprintf(why, sizeof(why),
             "c8y_Configuration: expected 1 field (configurationText), got %zu",
             api->op_field_count(op));
    api->op_fail(op, why);
    return C8Y_OK;
  }
  char *old = NULL;
  size_t old_len = 0;
  int existed = 0;
  int rc = read_file(c->text_file, CFG_BACKUP_MAX, &old, &old_len, &existed);
  if (rc != C8Y_OK) {
    snprintf(why, sizeof(why), "cannot back up %s: %s", c->text_file,
             rc == C8Y_ETOOBIG ? "file larger than 16 MiB" : strerror(errno));
    api->op_fail(op, why);
    return C8Y_OK;
  }
  if (write_atomic(c->text_file, text, strlen(text), why, sizeof(why)) != 0) {
    free(old);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  if (c->apply_command[0]) {
    char env_file[4200];
    snprintf(env_file, sizeof(env_file), "C8Y_CONFIG_FILE=%s", c->text_file);
    const char *env[] = {env_file, NULL};
    run_opts o = {.env = env,
                  .timeout_s = c->timeout_s,
                  .api = api,
                  .op = op,
                  .out_cap = 64 * 1024};
    run_result r;
    rc = run_shell(c->apply_command, &o, &r);
    free(r.out);
    if (rc != 0 || r.exit_code != 0) {
      char desc[600], restore[512] = "";
      run_describe(&r, rc, desc, sizeof(desc));
      int rrc = existed ? write_atomic(c->text_file, old, old_len, restore,
                                       sizeof(restore))
                        : (unlink(c->text_file) == 0 ? 0 : C8Y_EIO);
      if (rrc != 0 && !restore[0])
        snprintf(restore, sizeof(restore), "cannot remove %s: %s", c->text_file,
                 strerror(errno));
      snprintf(why, sizeof(why), "apply_command failed (%.500s); %s%.400s",
               desc,
               rrc != 0  ? "RESTORE FAILED: "
               : existed ? "previous configuration restored"
                         : "new file removed",
               rrc == 0 ? "" : restore);
      api->log(self, C8Y_LOG_ERROR, "%s", why);
      free(old);
      api->op_fail(op, why);
      return C8Y_OK;
    }
  }
  free(old);
  api->log(self, C8Y_LOG_INFO, "wrote %zu bytes of configuration to %s",
           strlen(text), c->text_file);
  cfg_report_text(c, text);
  api->op_succeed(op, NULL);
  return C8Y_OK;
}

/* ---- 524 / 526 typed configuration files (through http_helper) ------------
 */

static int cfg_typed_file(cfg *c, c8y_operation *op, const char *type,
                          const cfg_file **out) {
  char why[400];
  *out = type ? cfg_find(c, type) : NULL;
  if (*out)
    return 1;
  snprintf(why, sizeof(why), "unknown configuration type '%.200s'",
           type ? type : "");
  c->api->op_fail(op, why);
  return 0;
}

static int on_download_file(c8y_plugin *self, c8y_operation *op, void *ud) {
  cfg *c = ud;
  const c8y_api *api = c->api;
  char why[1024];
  if (!cfg_own_device(c, op))
    return C8Y_OK;
  if (api->op_field_count(op) != 2) {
    snprintf(why, sizeof(why),
             "c8y_DownloadConfigFile: expected 2 fields (url,configType), got "
             "%zu",
             api->op_field_count(op));
    api->op_fail(op, why);
    return C8Y_OK;
  }
  const char *url = api->op_field(op, 0);
  const cfg_file *f;
  if (!cfg_typed_file(c, op, api->op_field(op, 1), &f))
    return C8Y_OK;
  if (!url[0]) {
    api->op_fail(op, "c8y_DownloadConfigFile: empty url");
    return C8Y_OK;
  }
  char tmp[4200];
  int fd = temp_next_to(f->path, tmp, sizeof(tmp));
  if (fd < 0) {
    snprintf(why, sizeof(why), "cannot create a temporary file next to %s: %s",
             f->path, strerror(errno));
    api->op_fail(op, why);
    return C8Y_OK;
  }
  close(fd);
  char env_dev[300], env_type[300];
  snprintf(env_dev, sizeof(env_dev), "C8Y_DEVICE_ID=%s", api->device_id(self));
  snprintf(env_type, sizeof(env_type), "C8Y_CONFIG_TYPE=%s", f->type);
  const char *env[] = {env_dev, env_type, NULL};
  char *argv[] = {(char *)c->http_helper, "download", (char *)url, tmp, NULL};
  run_opts o = {.env = env,
                .timeout_s = c->timeout_s,
                .api = api,
                .op = op,
                .out_cap = 64 * 1024};
  run_result r;
  int rc = run_argv(argv, &o, &r);
  free(r.out);
  struct stat st;
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    run_describe(&r, rc, desc, sizeof(desc));
    snprintf(why, sizeof(why), "download of '%s' failed (%s)", f->type, desc);
  } else if (stat(tmp, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
    snprintf(why, sizeof(why),
             "download of '%s' failed: http_helper left no data in %.400s",
             f->type, tmp);
  } else {
    why[0] = '\0';
  }
  if (!why[0]) {
    fd = open(tmp, O_RDWR | O_CLOEXEC);
    if (fd < 0 || (copy_mode(fd, f->path), fsync(fd)) != 0 ||
        rename(tmp, f->path) != 0)
      snprintf(why, sizeof(why), "cannot install %.400s as %.400s: %s", tmp,
               f->path, strerror(errno));
    if (fd >= 0)
      close(fd);
  }
  if (why[0]) {
    unlink(tmp);
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  fsync_dir_of(f->path);
  api->log(self, C8Y_LOG_INFO, "installed configuration '%s' at %s", f->type,
           f->path);
  const char *slash = strrchr(f->path, '/');
  char now[64];
  iso_now(now, sizeof(now));
  const char *fields[] = {"120", f->type, url, slash ? slash + 1 : f->path,
                          now};
  rc = api->send_static(self, NULL, fields, 5);
  if (rc < 0)
    api->log(self, C8Y_LOG_ERROR, "cannot send 120: %s", api->status_str(rc));
  api->op_succeed(op, NULL);
  return C8Y_OK;
}

static int on_upload_file(c8y_plugin *self, c8y_operation *op, void *ud) {
  cfg *c = ud;
  const c8y_api *api = c->api;
  char why[1024];
  if (!cfg_own_device(c, op))
    return C8Y_OK;
  if (api->op_field_count(op) != 1) {
    snprintf(why, sizeof(why),
             "c8y_UploadConfigFile: expected 1 field (configType), got %zu",
             api->op_field_count(op));
    api->op_fail(op, why);
    return C8Y_OK;
  }
  const cfg_file *f;
  if (!cfg_typed_file(c, op, api->op_field(op, 0), &f))
    return C8Y_OK;
  if (access(f->path, R_OK) != 0) {
    snprintf(why, sizeof(why), "configuration '%s': cannot read %s: %s",
             f->type, f->path, strerror(errno));
    api->op_fail(op, why);
    return C8Y_OK;
  }
  char env_dev[300], env_type[300];
  snprintf(env_dev, sizeof(env_dev), "C8Y_DEVICE_ID=%s", api->device_id(self));
  snprintf(env_type, sizeof(env_type), "C8Y_CONFIG_TYPE=%s", f->type);
  const char *env[] = {env_dev, env_type, NULL};
  char *argv[] = {(char *)c->http_helper, "upload", f->type, f->path, NULL};
  run_opts o = {.env = env,
                .timeout_s = c->timeout_s,
                .api = api,
                .op = op,
                .out_cap = 64 * 1024};
  run_result r;
  int rc = run_argv(argv, &o, &r);
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    run_describe(&r, rc, desc, sizeof(desc));
    snprintf(why, sizeof(why), "upload of '%s' failed (%s)", f->type, desc);
  } else {
    r.out[strcspn(r.out, "\r\n")] = '\0';
    if (!r.out[0])
      snprintf(why, sizeof(why),
               "upload of '%s' failed: http_helper printed no URL", f->type);
    else
      why[0] = '\0';
  }
  if (why[0]) {
    free(r.out);
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  api->log(self, C8Y_LOG_INFO, "uploaded configuration '%s' to %s", f->type,
           r.out);
  free(r.out);
  api->op_succeed(op, NULL);
  return C8Y_OK;
}

/* ---- Lifecycle ------------------------------------------------------------
 */

/* `files = type=/path type2=/path2`: types become the 119 list. */
static int cfg_parse_files(cfg *c, const char *spec) {
  c->files_buf = strdup(spec);
  if (!c->files_buf)
    return C8Y_ENOMEM;
  char *save = NULL;
  for (char *tok = strtok_r(c->files_buf, " \t", &save); tok;
       tok = strtok_r(NULL, " \t", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq || eq == tok || eq[1] != '/') {
      c->api->log(c->self, C8Y_LOG_ERROR,
                  "files: entry '%s' is not type=/absolute/path", tok);
      return C8Y_EINVAL;
    }
    *eq = '\0';
    if (strpbrk(tok, ",\"")) {
      c->api->log(c->self, C8Y_LOG_ERROR,
                  "files: type '%s' must not contain ',' or '\"'", tok);
      return C8Y_EINVAL;
    }
    if (cfg_find(c, tok)) {
      c->api->log(c->self, C8Y_LOG_ERROR, "files: type '%s' is listed twice",
                  tok);
      return C8Y_EINVAL;
    }
    if (c->nfiles == CFG_MAX_TYPES) {
      c->api->log(c->self, C8Y_LOG_ERROR, "files: more than %d types",
                  CFG_MAX_TYPES);
      return C8Y_EINVAL;
    }
    c->files[c->nfiles].type = tok;
    c->files[c->nfiles].path = eq + 1;
    c->nfiles++;
  }
  return C8Y_OK;
}

static void cfg_free(cfg *c) {
  free(c->files_buf);
  free(c);
}

static int cfg_read_config(cfg *c) {
  const c8y_api *api = c->api;
  c->text_file = api->config_string(c->self, "text_file", "");
  c->apply_command = api->config_string(c->self, "apply_command", "");
  c->http_helper = api->config_string(c->self, "http_helper", "");
  int64_t timeout;
  int rc = api->config_int(c->self, "timeout", 300, &timeout);
  if (rc != C8Y_OK)
    return rc;
  if (timeout < 1 || timeout > 86400) {
    api->log(c->self, C8Y_LOG_ERROR,
             "timeout: %lld is out of range (1..86400 seconds)",
             (long long)timeout);
    return C8Y_EINVAL;
  }
  c->timeout_s = (int)timeout;
  if (c->text_file[0] && c->text_file[0] != '/') {
    api->log(c->self, C8Y_LOG_ERROR, "text_file: '%s' is not an absolute path",
             c->text_file);
    return C8Y_EINVAL;
  }
  if (c->apply_command[0] && !c->text_file[0]) {
    api->log(c->self, C8Y_LOG_ERROR, "apply_command: needs text_file");
    return C8Y_EINVAL;
  }
  if (c->http_helper[0]) {
    struct stat st;
    if (c->http_helper[0] != '/' || stat(c->http_helper, &st) != 0 ||
        !S_ISREG(st.st_mode) || access(c->http_helper, X_OK) != 0) {
      api->log(c->self, C8Y_LOG_ERROR,
               "http_helper: '%s' is not an executable file (absolute path "
               "expected)",
               c->http_helper);
      return C8Y_EINVAL;
    }
  }
  return cfg_parse_files(c, api->config_string(c->self, "files", ""));
}

static void cfg_report_initial(cfg *c) {
  char *text;
  size_t len;
  int exists;
  int rc = read_file(c->text_file, CFG_REPORT_MAX, &text, &len, &exists);
  if (rc == C8Y_ETOOBIG) {
    c->api->log(c->self, C8Y_LOG_WARNING,
                "%s: larger than %d bytes; configuration text not reported "
                "(113)",
                c->text_file, CFG_REPORT_MAX);
  } else if (rc != C8Y_OK) {
    c->api->log(c->self, C8Y_LOG_WARNING, "cannot read %s: %s", c->text_file,
                strerror(errno));
  } else if (exists) {
    if (strlen(text) != len)
      c->api->log(c->self, C8Y_LOG_WARNING,
                  "%s: contains NUL bytes; configuration text not reported",
                  c->text_file);
    else
      cfg_report_text(c, text);
  }
  free(text);
}

static int cfg_init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  cfg *c = calloc(1, sizeof(*c));
  if (!c)
    return C8Y_ENOMEM;
  c->self = self;
  c->api = api;
  int rc = cfg_read_config(c);
  if (rc == C8Y_OK && c->text_file[0])
    rc = api->add_operation(self, "513", (uint32_t)c->timeout_s * 1000,
                            on_text_config, c);
  if (rc == C8Y_OK && c->nfiles > 0 && c->http_helper[0]) {
    rc = api->add_operation(self, "524", (uint32_t)c->timeout_s * 1000,
                            on_download_file, c);
    if (rc == C8Y_OK)
      rc = api->add_operation(self, "526", (uint32_t)c->timeout_s * 1000,
                              on_upload_file, c);
  }
  if (rc != C8Y_OK) {
    cfg_free(c);
    return rc;
  }
  if (!c->text_file[0])
    api->log(self, C8Y_LOG_NOTICE,
             "text_file not set: c8y_Configuration (513) is not handled");
  if (c->nfiles > 0 && !c->http_helper[0])
    api->log(self, C8Y_LOG_NOTICE,
             "typed configuration files need HTTP: without http_helper "
             "c8y_UploadConfigFile (526) and c8y_DownloadConfigFile (524) "
             "are not offered");
  if (c->text_file[0])
    cfg_report_initial(c);
  if (c->nfiles > 0) {
    const char *fields[CFG_MAX_TYPES + 1] = {"119"};
    for (size_t i = 0; i < c->nfiles; i++)
      fields[i + 1] = c->files[i].type;
    rc = api->send_static(self, NULL, fields, c->nfiles + 1);
    if (rc < 0)
      api->log(self, C8Y_LOG_ERROR, "cannot send 119: %s", api->status_str(rc));
  }
  *user_data = c;
  return C8Y_OK;
}

static void cfg_fini(c8y_plugin *self, void *user_data) { cfg_free(user_data); }

C8Y_PLUGIN(.name = "configuration", .version = "1.0.0", .init = cfg_init,
           .fini = cfg_fini);
