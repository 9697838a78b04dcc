/* software: installed-package list (140/141 with 143) and c8y_SoftwareUpdate
 * (528 and 529) through configurable package-manager commands.
 *
 * Values from the platform never reach a shell unquoted: placeholders in the
 * commands are replaced by single-quoted values, and the same values are in
 * the environment (C8Y_SW_NAME, ...). */
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

/* ---- SmartREST lengths ------------------------------------------------------
 */

#define SW_LINE_MAX 16000 /* payload limit per published line */
#define SW_LIST_OUT_MAX (64u * 1024 * 1024)

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

/* ---- Commands ---------------------------------------------------------------
 */

static const char APT_LIST[] =
    "dpkg-query -W -f '${db:Status-Abbrev}\\t${Package}\\t${Version}\\n' | "
    "awk -F '\\t' 'substr($1, 2, 1) == \"i\" { print $2 \"\\t\" $3 }'";
static const char RPM_LIST[] =
    "rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n'";
static const char APT_INSTALL[] = "apt-get install -y {name}={version}";
static const char APT_INSTALL_ANY[] = "apt-get install -y {name}";
static const char APT_REMOVE[] = "apt-get remove -y {name}";
static const char RPM_INSTALL[] = "yum install -y {name}-{version}";
static const char RPM_INSTALL_ANY[] = "yum install -y {name}";
static const char RPM_REMOVE[] = "yum remove -y {name}";

static int in_path(const char *prog) {
  const char *path = getenv("PATH");
  if (!path || !*path)
    path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
  char buf[4096];
  while (*path) {
    size_t n = strcspn(path, ":");
    if (n > 0 &&
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog) <
            (int)sizeof(buf) &&
        access(buf, X_OK) == 0)
      return 1;
    path += n;
    if (*path == ':')
      path++;
  }
  return 0;
}

typedef struct sb {
  char *s;
  size_t len, cap;
} sb;

static int sb_add(sb *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p)
      return C8Y_ENOMEM;
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
  return C8Y_OK;
}

/* 'it'\''s' - safe inside any sh word. */
static int sb_add_quoted(sb *b, const char *v) {
  int rc = sb_add(b, "'", 1);
  for (; rc == C8Y_OK && *v; v++)
    rc = *v == '\'' ? sb_add(b, "'\\''", 4) : sb_add(b, v, 1);
  return rc == C8Y_OK ? sb_add(b, "'", 1) : rc;
}

typedef struct sw_item {
  const char *name, *version, *type, *url, *action;
} sw_item;

/* Replaces {name} {version} {type} {url} {action} by quoted values. Returns
 * a malloc'ed command or NULL. */
static char *sw_expand(const char *tmpl, const sw_item *it) {
  static const char *const keys[] = {"{name}", "{version}", "{type}", "{url}",
                                     "{action}"};
  const char *vals[] = {it->name, it->version, it->type, it->url, it->action};
  sb b = {0};
  int rc = sb_add(&b, "", 0);
  while (rc == C8Y_OK && *tmpl) {
    size_t k = 0;
    while (k < 5 && strncmp(tmpl, keys[k], strlen(keys[k])) != 0)
      k++;
    if (k < 5) {
      rc = sb_add_quoted(&b, vals[k]);
      tmpl += strlen(keys[k]);
    } else {
      rc = sb_add(&b, tmpl, 1);
      tmpl++;
    }
  }
  if (rc != C8Y_OK) {
    free(b.s);
    return NULL;
  }
  return b.s;
}

/* ---- Plugin state -----------------------------------------------------------
 */

typedef struct sw {
  c8y_plugin *self;
  const c8y_api *api;
  const char *list_command;
  const char *type;
  const char *install_command;
  const char *install_any; /* default without a version; NULL if custom */
  const char *remove_command;
  int timeout_s;
  int list_timeout_s;
} sw;

/* ---- Installed list (140 + 141...) ------------------------------------------
 */

typedef struct sw_chunk {
  const char **fields;
  size_t n;   /* fields used, including the template id */
  size_t len; /* encoded line length */
  size_t sent;
} sw_chunk;

static int sw_flush(sw *s, sw_chunk *c) {
  c->fields[0] = c->sent == 0 ? "140" : "141";
  int rc = s->api->send_static(s->self, NULL, c->fields, c->n);
  if (rc < 0)
    s->api->log(s->self, C8Y_LOG_ERROR, "cannot send %s software list: %s",
                c->fields[0], s->api->status_str(rc));
  c->sent++;
  c->n = 1;
  c->len = 3;
  return rc < 0 ? rc : C8Y_OK;
}

/* Runs list_command and publishes the list, the first line as 140 (set) and
 * the rest as 141 (append), each within SW_LINE_MAX. */
static int sw_report(sw *s) {
  const c8y_api *api = s->api;
  run_opts o = {
      .timeout_s = s->list_timeout_s, .api = api, .out_cap = SW_LIST_OUT_MAX};
  run_result r;
  int rc = run_shell(s->list_command, &o, &r);
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    run_describe(&r, rc, desc, sizeof(desc));
    api->log(s->self, C8Y_LOG_ERROR,
             "list_command failed (%s); software list not reported", desc);
    free(r.out);
    return rc != 0 ? rc : C8Y_EIO;
  }
  if (r.out_truncated)
    api->log(s->self, C8Y_LOG_WARNING,
             "list_command printed more than %u bytes; the rest is ignored",
             SW_LIST_OUT_MAX);
  size_t lines = 1;
  for (size_t i = 0; i < r.out_len; i++)
    lines += r.out[i] == '\n';
  /* A chunk holds at most SW_LINE_MAX / 4 packages (",a,b,t," each). */
  size_t cap = 1 + 4 * (lines < SW_LINE_MAX / 4 ? lines : SW_LINE_MAX / 4);
  sw_chunk c = {calloc(cap, sizeof(char *)), 1, 3, 0};
  if (!c.fields) {
    free(r.out);
    return C8Y_ENOMEM;
  }
  size_t total = 0, bad = 0, bad_line = 0, too_long = 0, lineno = 0;
  size_t type_len = csv_len(s->type);
  rc = C8Y_OK;
  for (char *line = r.out, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    lineno++;
    line[strcspn(line, "\r")] = '\0';
    char *tab = strchr(line, '\t');
    if (!line[0])
      continue; /* blank lines carry no package */
    if (!tab || tab == line || !tab[1]) {
      if (bad++ == 0)
        bad_line = lineno;
      continue;
    }
    *tab = '\0';
    const char *name = line, *version = tab + 1;
    size_t add = 1 + csv_len(name) + 1 + csv_len(version) + 1 + type_len + 1;
    if (3 + add > SW_LINE_MAX) {
      too_long++;
      continue;
    }
    if (c.n > 1 && c.len + add > SW_LINE_MAX) {
      int frc = sw_flush(s, &c);
      if (frc < 0)
        rc = frc;
    }
    c.fields[c.n++] = name;
    c.fields[c.n++] = version;
    c.fields[c.n++] = s->type;
    c.fields[c.n++] = "";
    c.len += add;
    total++;
  }
  if (c.n > 1) {
    int frc = sw_flush(s, &c);
    if (frc < 0)
      rc = frc;
  } else if (c.sent == 0) {
    const char *empty[] = {"140", "", "", "", ""};
    rc = api->send_static(s->self, NULL, empty, 5);
    if (rc < 0)
      api->log(s->self, C8Y_LOG_ERROR, "cannot send 140 software list: %s",
               api->status_str(rc));
  }
  if (bad)
    api->log(s->self, C8Y_LOG_WARNING,
             "list_command: %zu line(s) are not name<TAB>version and were "
             "skipped (first: line %zu)",
             bad, bad_line);
  if (too_long)
    api->log(s->self, C8Y_LOG_WARNING,
             "list_command: %zu package(s) too long for one SmartREST line "
             "were skipped",
             too_long);
  api->log(s->self, C8Y_LOG_INFO, "reported %zu packages in %zu line(s)", total,
           c.sent ? c.sent : 1);
  free(c.fields);
  free(r.out);
  return rc < 0 ? rc : C8Y_OK;
}

/* ---- 528 / 529 c8y_SoftwareUpdate -------------------------------------------
 */

static int sw_own_device(sw *s, c8y_operation *op) {
  const char *dev = s->api->op_device(op);
  if (dev && strcmp(dev, s->api->device_id(s->self)) != 0) {
    char why[300];
    snprintf(why, sizeof(why),
             "c8y_SoftwareUpdate is not supported for child device '%.200s'",
             dev);
    s->api->op_fail(op, why);
    return 0;
  }
  return 1;
}

static void sw_item_at(const c8y_api *api, c8y_operation *op, size_t stride,
                       size_t i, const char *type, sw_item *it) {
  size_t b = i * stride;
  it->name = api->op_field(op, b);
  it->version = api->op_field(op, b + 1);
  it->type = stride == 5 ? api->op_field(op, b + 2) : "";
  it->url = api->op_field(op, b + stride - 2);
  it->action = api->op_field(op, b + stride - 1);
  if (!it->type[0])
    it->type = type;
}

/* Checks every item before touching the system. */
static int sw_validate(sw *s, c8y_operation *op, size_t stride, size_t items,
                       char *why, size_t n) {
  for (size_t i = 0; i < items; i++) {
    sw_item it;
    sw_item_at(s->api, op, stride, i, s->type, &it);
    if (!it.name[0]) {
      snprintf(why, n, "c8y_SoftwareUpdate: item %zu has an empty name", i + 1);
      return 0;
    }
    if (strcmp(it.action, "install") != 0 && strcmp(it.action, "delete") != 0) {
      snprintf(why, n,
               "c8y_SoftwareUpdate: item %zu (%.200s): unknown action '%.100s' "
               "(expected install or delete)",
               i + 1, it.name, it.action);
      return 0;
    }
    if (strcmp(it.type, s->type) != 0) {
      snprintf(why, n,
               "c8y_SoftwareUpdate: item %zu (%.200s): software type '%.100s' "
               "is not supported (this device manages '%.100s')",
               i + 1, it.name, it.type, s->type);
      return 0;
    }
  }
  return 1;
}

static int sw_apply(sw *s, c8y_operation *op, const sw_item *it, char *why,
                    size_t n) {
  int install = strcmp(it->action, "install") == 0;
  const char *tmpl = install ? s->install_command : s->remove_command;
  if (install && !it->version[0] && s->install_any)
    tmpl = s->install_any;
  char *cmd = sw_expand(tmpl, it);
  char *env[6] = {NULL};
  const char *keys[] = {"C8Y_SW_NAME", "C8Y_SW_VERSION", "C8Y_SW_TYPE",
                        "C8Y_SW_URL", "C8Y_SW_ACTION"};
  const char *vals[] = {it->name, it->version, it->type, it->url, it->action};
  int ok = cmd != NULL;
  for (size_t i = 0; i < 5 && ok; i++)
    ok = asprintf(&env[i], "%s=%s", keys[i], vals[i]) >= 0;
  const char *envp[8] = {"DEBIAN_FRONTEND=noninteractive"};
  for (size_t i = 0; i < 5; i++)
    envp[i + 1] = env[i];
  int rc = C8Y_ENOMEM;
  run_result r = {0};
  if (ok) {
    run_opts o = {.env = envp,
                  .timeout_s = s->timeout_s,
                  .api = s->api,
                  .op = op,
                  .out_cap = 64 * 1024};
    s->api->log(s->self, C8Y_LOG_INFO, "%s %s %s: %s", it->action, it->name,
                it->version, cmd);
    rc = run_shell(cmd, &o, &r);
    free(r.out);
  } else {
    snprintf(r.why, sizeof(r.why), "out of memory");
  }
  free(cmd);
  for (size_t i = 0; i < 5; i++)
    free(env[i]);
  if (rc == 0 && r.exit_code == 0)
    return 1;
  const char *verb = install ? "install" : "delete";
  if (rc != 0)
    snprintf(why, n, "%s of %.200s %.100s failed: %s", verb, it->name,
             it->version, r.why);
  else if (r.err[0])
    snprintf(why, n, "%s of %.200s %.100s failed (exit %d): %.400s", verb,
             it->name, it->version, r.exit_code, r.err);
  else
    snprintf(why, n, "%s of %.200s %.100s failed (exit %d)", verb, it->name,
             it->version, r.exit_code);
  return 0;
}

static int on_update(c8y_plugin *self, c8y_operation *op, void *ud) {
  sw *s = ud;
  const c8y_api *api = s->api;
  char why[1024];
  if (!sw_own_device(s, op))
    return C8Y_OK;
  const char *tmpl = api->op_template(op);
  size_t stride = strcmp(tmpl, "529") == 0 ? 5 : 4;
  size_t n = api->op_field_count(op);
  if (n == 0 || n % stride != 0) {
    snprintf(why, sizeof(why),
             "c8y_SoftwareUpdate (%s): %zu fields is not a non-zero multiple "
             "of %zu (%s)",
             tmpl, n, stride,
             stride == 5 ? "name,version,type,url,action"
                         : "name,version,url,action");
    api->op_fail(op, why);
    return C8Y_OK;
  }
  size_t items = n / stride;
  if (!sw_validate(s, op, stride, items, why, sizeof(why))) {
    api->op_fail(op, why);
    return C8Y_OK;
  }
  int ok = 1;
  for (size_t i = 0; i < items && ok; i++) {
    sw_item it;
    sw_item_at(api, op, stride, i, s->type, &it);
    ok = sw_apply(s, op, &it, why, sizeof(why));
  }
  /* Also after a failure: earlier items may have changed the system. */
  sw_report(s);
  if (!ok) {
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
  } else {
    api->op_succeed(op, NULL);
  }
  return C8Y_OK;
}

/* ---- Lifecycle --------------------------------------------------------------
 */

static int sw_timeout(sw *s, const char *key, int64_t fallback, int *out) {
  int64_t v;
  int rc = s->api->config_int(s->self, key, fallback, &v);
  if (rc != C8Y_OK)
    return rc;
  if (v < 1 || v > 86400) {
    s->api->log(s->self, C8Y_LOG_ERROR,
                "%s: %lld is out of range (1..86400 seconds)", key,
                (long long)v);
    return C8Y_EINVAL;
  }
  *out = (int)v;
  return C8Y_OK;
}

static int sw_read_config(sw *s) {
  const c8y_api *api = s->api;
  int dpkg = in_path("dpkg-query");
  int rpm = !dpkg && in_path("rpm");
  const char *auto_type = dpkg ? "apt" : rpm ? "rpm" : "";
  s->list_command = api->config_string(s->self, "list_command", "auto");
  s->type = api->config_string(s->self, "type", auto_type);
  s->install_command = api->config_string(s->self, "install_command", "");
  s->remove_command = api->config_string(s->self, "remove_command", "");
  int rc = sw_timeout(s, "timeout", 3600, &s->timeout_s);
  if (rc == C8Y_OK)
    rc = sw_timeout(s, "list_timeout", 120, &s->list_timeout_s);
  if (rc != C8Y_OK)
    return rc;
  if (strcmp(s->list_command, "auto") == 0) {
    if (!dpkg && !rpm) {
      api->log(s->self, C8Y_LOG_ERROR,
               "list_command: auto found neither dpkg-query nor rpm in PATH; "
               "set list_command");
      return C8Y_EINVAL;
    }
    s->list_command = dpkg ? APT_LIST : RPM_LIST;
  }
  if (!s->type[0] || strpbrk(s->type, ",\"\n")) {
    api->log(s->self, C8Y_LOG_ERROR,
             "type: '%s' is not a software type (set type, e.g. apt)", s->type);
    return C8Y_EINVAL;
  }
  int apt = strcmp(s->type, "apt") == 0, yum = strcmp(s->type, "rpm") == 0;
  if (!s->install_command[0]) {
    s->install_command = apt ? APT_INSTALL : yum ? RPM_INSTALL : "";
    s->install_any = apt ? APT_INSTALL_ANY : yum ? RPM_INSTALL_ANY : NULL;
  }
  if (!s->remove_command[0])
    s->remove_command = apt ? APT_REMOVE : yum ? RPM_REMOVE : "";
  if (!s->install_command[0] || !s->remove_command[0]) {
    api->log(s->self, C8Y_LOG_ERROR,
             "%s: required for software type '%s' (defaults exist only for "
             "apt and rpm)",
             s->install_command[0] ? "remove_command" : "install_command",
             s->type);
    return C8Y_EINVAL;
  }
  return C8Y_OK;
}

static int sw_init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  sw *s = calloc(1, sizeof(*s));
  if (!s)
    return C8Y_ENOMEM;
  s->self = self;
  s->api = api;
  int rc = sw_read_config(s);
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "528", (uint32_t)s->timeout_s * 1000,
                            on_update, s);
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "529", (uint32_t)s->timeout_s * 1000,
                            on_update, s);
  if (rc != C8Y_OK) {
    free(s);
    return rc;
  }
  const char *types[] = {"143", s->type};
  rc = api->send_static(self, NULL, types, 2);
  if (rc < 0)
    api->log(self, C8Y_LOG_ERROR, "cannot send 143: %s", api->status_str(rc));
  sw_report(s);
  *user_data = s;
  return C8Y_OK;
}

static void sw_fini(c8y_plugin *self, void *user_data) { free(user_data); }

C8Y_PLUGIN(.name = "software", .version = "1.0.0", .init = sw_init,
           .fini = sw_fini);
