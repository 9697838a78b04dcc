/* c8y-agent-priv: the privileged half of c8y-agent (docs/packaging.md,
 * "Privileged actions"). A security boundary: the agent that talks to it may
 * be compromised, so every request is checked as hostile input.
 *
 * The agent runs unprivileged in a sandbox. The few actions Cumulocity asks
 * of it that need root are done here, from a fixed verb table:
 *
 *   reboot                   reboot the machine (c8y_Restart)
 *   install NAME [VERSION]   install a package from the configured
 *                            repositories (apt-get / dnf / yum)
 *   remove NAME              remove a package
 *   install-file PATH        install a package file the agent downloaded
 *                            into <state_dir>/plugins/software (dpkg / rpm)
 *   service start|stop|restart UNIT
 *                            systemctl for a .service unit listed in the
 *                            root-owned [plugin.services] units, when
 *                            [plugin.services] commands is on
 *
 * Run by systemd per connection on /run/c8y-agent-priv/sock
 * (c8y-agent-priv.socket, Accept=yes) as `c8y-agent-priv --serve`, the
 * connection on stdin/stdout. The peer must be a process of
 * c8y-agent.service (its cgroup) running as the agent's user or root
 * (SO_PEERCRED): membership in the c8y-agent group, which admits operators
 * to the local API, gives nothing here. One request line "VERB ARG..." must
 * arrive within a few seconds; the reply is the action's output (its last
 * 8 KiB) and "=c8y-agent-priv status N" (0 done, 2 refused, else the
 * action's exit status). Root may also run it directly: c8y-agent-priv VERB
 * ARG...
 *
 * Commands run from argv arrays with a fixed environment, never through a
 * shell. A package file is opened once, without following symbolic links
 * anywhere on its path, and copied into a directory only root can write;
 * the copy is what gets installed. An upgrade of c8y-agent itself keeps the
 * installed package and reinstalls it when the new agent does not connect
 * in time (see priv_self_upgrade). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
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

#ifndef C8Y_PRIV_STATEDIR
#define C8Y_PRIV_STATEDIR "/var/lib/c8y-agent"
#endif
#ifndef C8Y_PRIV_HOME
#define C8Y_PRIV_HOME "/var/lib/c8y-agent-priv"
#endif
#ifndef C8Y_PRIV_SYSCONFDIR
#define C8Y_PRIV_SYSCONFDIR "/etc/c8y-agent"
#endif
#ifndef C8Y_PRIV_USER
#define C8Y_PRIV_USER "c8y-agent"
#endif
#ifndef C8Y_PRIV_PACKAGE
#define C8Y_PRIV_PACKAGE "c8y-agent"
#endif

#define PRIV_ME "c8y-agent-priv"
#define PRIV_STATUS "=c8y-agent-priv status "
#define PRIV_REQ_MAX 1024
#define PRIV_MAX_ARGS 4
#define PRIV_TAIL 8192
#define PRIV_NAME_MAX 200
/* apt-cache pkgnames of a short prefix lists many names. */
#define PRIV_QUERY_MAX (8 * 1024 * 1024)
#define PRIV_FILE_MAX ((off_t)2 << 30)
#define PRIV_ROLLBACK_DEFAULT_S 120
#define PRIV_HEALTHY_AFTER_S 5

typedef struct priv_cfg {
  const char *statedir; /* the agent's state directory */
  const char *home;     /* root's own: copies, kept packages, result */
  const char *sysconfdir;
  const char *pm;       /* apt, dnf, yum, none */
  const char *user;     /* the agent's service account */
  const char *cgroup;   /* the agent's unit's cgroup */
  const char *unit;     /* the agent's unit */
  const char *package;  /* the agent's own package */
  const char *dry_pkgs; /* dry run: "name=version ..." as the repository */
  int dry;
  int read_timeout_ms;
} priv_cfg;

/* The action's output, last PRIV_TAIL bytes, sent back to the client. */
typedef struct priv_out {
  char buf[PRIV_TAIL];
  size_t len;
} priv_out;

typedef struct priv_req {
  char line[PRIV_REQ_MAX + 1]; /* split into argv */
  char raw[PRIV_REQ_MAX + 1];  /* as received, for the journal */
  const char *argv[PRIV_MAX_ARGS + 1];
  int argc;
} priv_req;

typedef struct priv_ctx {
  priv_cfg cfg;
  priv_out out;
  bool serving;         /* say() also logs to the journal (stderr) */
  const char *exec_cwd; /* working directory of the next priv_exec */
  bool keep_sigmask;    /* the child inherits blocked SIGTERM (reboot) */
} priv_ctx;

typedef struct priv_verb {
  const char *name;
  int min_args, max_args; /* after the verb */
  const char *usage;
  int (*run)(priv_ctx *c, int argc, const char *const *argv);
} priv_verb;

/* ---- Output ---------------------------------------------------------------
 */

static void priv_out_add(priv_out *o, const char *p, size_t n) {
  if (n >= PRIV_TAIL) {
    memcpy(o->buf, p + n - PRIV_TAIL, PRIV_TAIL);
    o->len = PRIV_TAIL;
    return;
  }
  if (o->len + n > PRIV_TAIL) {
    size_t drop = o->len + n - PRIV_TAIL;
    memmove(o->buf, o->buf + drop, o->len - drop);
    o->len -= drop;
  }
  memcpy(o->buf + o->len, p, n);
  o->len += n;
}

/* A line for the client (and the journal through stderr). */
static void priv_line(priv_ctx *c, const char *prefix, const char *fmt,
                      va_list ap) {
  char line[1100];
  int p = snprintf(line, sizeof(line), "%s", prefix);
  int n = vsnprintf(line + p, sizeof(line) - (size_t)p - 1, fmt, ap);
  if (n < 0)
    return;
  n += p;
  if ((size_t)n > sizeof(line) - 2)
    n = (int)sizeof(line) - 2;
  line[n++] = '\n';
  priv_out_add(&c->out, line, (size_t)n);
  if (c->serving)
    fprintf(stderr, "%s%.*s", prefix[0] ? "" : PRIV_ME ": ", n, line);
}

/* The helper's own messages carry its name (the plugins show the last line
 * of the reply as the reason). */
static void say(priv_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(priv_ctx *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  priv_line(c, PRIV_ME ": ", fmt, ap);
  va_end(ap);
}

/* A line as it is ("would run: ..." of a dry run). */
static void say_plain(priv_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say_plain(priv_ctx *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  priv_line(c, "", fmt, ap);
  va_end(ap);
}

static bool priv_is_apt(const priv_ctx *c) {
  return strcmp(c->cfg.pm, "apt") == 0;
}
static bool priv_is_rpm(const priv_ctx *c) {
  return strcmp(c->cfg.pm, "dnf") == 0 || strcmp(c->cfg.pm, "yum") == 0;
}

/* ---- Validation -------------------------------------------------------------
 */

/* A valid package name: Debian policy [a-z0-9][a-z0-9+.-]+ (RPM names
 * may also hold upper case and '_'), 2..200 characters. That alone does not
 * make it safe to pass on: apt reads a trailing '+'/'-' as "install"/
 * "remove" and a name it does not know as a regular expression ('.' and '+'
 * are regex characters). So the name is also looked up exactly before use
 * and always passed as "name=version" (priv_repo_version,
 * priv_installed_version). Never '*', '?', '[', '~', '^', '$', '|', '/',
 * '=' or a leading '-': patterns, options or version specs to apt/dnf. */
static bool priv_name_ok(const char *pm, const char *s) {
  bool rpm = strcmp(pm, "dnf") == 0 || strcmp(pm, "yum") == 0;
  size_t n = strlen(s);
  if (n < 2 || n > PRIV_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 (rpm && ((ch >= 'A' && ch <= 'Z') || ch == '_'));
    bool inner = ch == '+' || ch == '.' || ch == '-';
    if (!alnum && !(inner && i > 0))
      return false;
  }
  return true;
}

/* A Debian/RPM version: [epoch:]upstream[-revision], starting with a digit,
 * characters [A-Za-z0-9.+~:-] (RPM also '_'); not ending in '+' or '-'
 * (apt's modifiers again, "name=1.0-" would remove). */
static bool priv_version_ok(const char *pm, const char *s) {
  bool rpm = strcmp(pm, "dnf") == 0 || strcmp(pm, "yum") == 0;
  size_t n = strlen(s);
  if (n < 1 || n > PRIV_NAME_MAX || !isdigit((unsigned char)s[0]))
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!isalnum(ch) && !strchr(".+~:-", ch) && !(rpm && ch == '_'))
      return false;
  }
  return s[n - 1] != '+' && s[n - 1] != '-';
}

/* A file name the software plugin makes (sw_file_name): no path, no
 * leading '.' or '-', the package format's extension. */
static bool priv_file_name_ok(const char *s, const char *ext) {
  size_t n = strlen(s), e = strlen(ext);
  if (n <= e || n > 128 || strcmp(s + n - e, ext) != 0 || s[0] == '.' ||
      s[0] == '-')
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && !strchr("._+-", s[i]))
      return false;
  return true;
}

/* ---- Running commands -------------------------------------------------------
 */

static const char *const priv_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "HOME=/root", NULL};

/* The program's absolute path from the fixed PATH, or NULL. */
static const char *priv_which(const char *prog, char *buf, size_t n) {
  static const char *const dirs[] = {"/usr/local/sbin", "/usr/local/bin",
                                     "/usr/sbin",       "/usr/bin",
                                     "/sbin",           "/bin"};
  if (prog[0] == '/')
    return access(prog, X_OK) == 0 ? prog : NULL;
  for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
    snprintf(buf, n, "%s/%s", dirs[i], prog);
    if (access(buf, X_OK) == 0)
      return buf;
  }
  return NULL;
}

/* Runs argv with stdin /dev/null and stdout+stderr into a pipe: the whole
 * output into *all (when non-NULL, up to PRIV_QUERY_MAX, NUL-terminated;
 * the caller frees it), else its tail into the reply. Returns the exit
 * status, 126/127 when it could not run, 128+N for a signal. */
static int priv_exec(priv_ctx *c, const char *const *argv, char **all) {
  char path[256];
  const char *exe = priv_which(argv[0], path, sizeof(path));
  if (all)
    *all = NULL;
  if (!exe) {
    say(c, "%s not found", argv[0]);
    return 127;
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    say(c, "pipe: %s", strerror(errno));
    return 126;
  }
  pid_t pid = fork();
  if (pid < 0) {
    say(c, "fork: %s", strerror(errno));
    close(p[0]);
    close(p[1]);
    return 126;
  }
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, 0) < 0 || dup2(p[1], 1) < 0 || dup2(p[1], 2) < 0)
      _exit(126);
    sigset_t none;
    sigemptyset(&none);
    if (!c->keep_sigmask)
      sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    umask(022);
    if (c->exec_cwd && chdir(c->exec_cwd) != 0)
      _exit(126);
    execve(exe, (char *const *)argv, (char *const *)priv_env);
    _exit(127);
  }
  close(p[1]);
  size_t len = 0, cap = 0;
  char *buf = NULL;
  char chunk[4096];
  for (;;) {
    ssize_t r = read(p[0], chunk, sizeof(chunk));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    if (!all) {
      priv_out_add(&c->out, chunk, (size_t)r);
      continue;
    }
    if (len + (size_t)r + 1 > cap && len + (size_t)r < PRIV_QUERY_MAX) {
      size_t ncap = (len + (size_t)r + 1) * 2;
      char *nb = realloc(buf, ncap);
      if (!nb)
        continue;
      buf = nb;
      cap = ncap;
    }
    if (len + (size_t)r + 1 <= cap) {
      memcpy(buf + len, chunk, (size_t)r);
      len += (size_t)r;
    }
  }
  close(p[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (all) {
    if (!buf)
      buf = calloc(1, 1);
    else
      buf[len] = '\0';
    *all = buf;
  }
  if (WIFEXITED(st))
    return WEXITSTATUS(st);
  return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 126;
}

/* An action that changes the system: run, or in a dry run only shown. */
static int priv_action(priv_ctx *c, const char *const *argv) {
  if (c->cfg.dry) {
    char line[2048];
    size_t n = (size_t)snprintf(line, sizeof(line), "would run:");
    for (size_t i = 0; argv[i] && n < sizeof(line); i++)
      n += (size_t)snprintf(line + n, sizeof(line) - n, " %s", argv[i]);
    say_plain(c, "%s", line);
    return 0;
  }
  char line[2048];
  size_t n = 0;
  for (size_t i = 0; argv[i] && n < sizeof(line); i++)
    n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s", i ? " " : "",
                          argv[i]);
  fprintf(stderr, "%s: running %s\n", PRIV_ME, line);
  return priv_exec(c, argv, NULL);
}

/* ---- Package queries --------------------------------------------------------
 */

/* The line of `text` after "key" (e.g. "  Candidate: ") into out. */
static bool priv_field(const char *text, const char *key, char *out, size_t n) {
  for (const char *l = text; l && *l;
       l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
    const char *t = l + strspn(l, " \t");
    size_t k = strlen(key);
    if (strncmp(t, key, k) == 0) {
      t += k;
      size_t m = strcspn(t, "\n");
      if (m >= n)
        return false;
      memcpy(out, t, m);
      out[m] = '\0';
      return true;
    }
  }
  return false;
}

/* Dry run: "name=version" in C8Y_PRIV_DRY_PACKAGES stands for the
 * repository; "name=version*" for an installed package. */
static bool priv_dry_lookup(const priv_ctx *c, const char *name, bool installed,
                            char *ver, size_t n) {
  const char *s = c->cfg.dry_pkgs ? c->cfg.dry_pkgs : "";
  size_t k = strlen(name);
  while (*s) {
    size_t w = strcspn(s, " ");
    if (w > k && strncmp(s, name, k) == 0 && s[k] == '=') {
      bool inst = s[w - 1] == '*';
      size_t vl = w - k - 1 - (inst ? 1 : 0);
      if ((!installed || inst) && vl < n) {
        memcpy(ver, s + k + 1, vl);
        ver[vl] = '\0';
        return true;
      }
    }
    s += w;
    s += strspn(s, " ");
  }
  return false;
}

/* The version of `name` the repositories offer (apt: its candidate). The
 * name is first looked up exactly (apt-cache pkgnames lists names with that
 * prefix, no patterns): apt falls back to reading a name it does not know as
 * a regular expression, so only a name it knows exactly may be passed on. */
static bool priv_repo_version(priv_ctx *c, const char *name, char *ver,
                              size_t n) {
  if (c->cfg.dry)
    return priv_dry_lookup(c, name, false, ver, n);
  char *text = NULL;
  const char *names[] = {"apt-cache", "pkgnames", "--", name, NULL};
  int rc = priv_exec(c, names, &text);
  bool found = false;
  for (char *l = text; rc == 0 && l && *l && !found;) {
    size_t m = strcspn(l, "\n");
    found = m == strlen(name) && strncmp(l, name, m) == 0;
    l += m + (l[m] == '\n');
  }
  free(text);
  if (!found)
    return false;
  const char *policy[] = {"apt-cache", "policy", "--", name, NULL};
  rc = priv_exec(c, policy, &text);
  bool ok = rc == 0 && text && priv_field(text, "Candidate: ", ver, n) &&
            strcmp(ver, "(none)") != 0;
  free(text);
  return ok;
}

/* The installed version of `name` (exact: the name has no glob characters),
 * false when not installed. */
static bool priv_installed_version(priv_ctx *c, const char *name, char *ver,
                                   size_t n) {
  if (c->cfg.dry)
    return priv_dry_lookup(c, name, true, ver, n);
  char *text = NULL;
  int rc;
  if (strcmp(c->cfg.pm, "apt") == 0) {
    const char *q[] = {
        "dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}",
        "--",         name, NULL};
    rc = priv_exec(c, q, &text);
    bool ok = rc == 0 && text && strncmp(text, "installed ", 10) == 0 &&
              strlen(text + 10) < n && text[10];
    if (ok)
      snprintf(ver, n, "%s", text + 10);
    free(text);
    return ok;
  }
  const char *q[] = {"rpm", "-q", "--qf", "%{EPOCH}:%{VERSION}-%{RELEASE}",
                     "--",  name, NULL};
  rc = priv_exec(c, q, &text);
  bool ok = rc == 0 && text && text[0] && strlen(text) < n;
  if (ok) {
    /* "(none):" when there is no epoch. */
    const char *v = strncmp(text, "(none):", 7) == 0 ? text + 7 : text;
    snprintf(ver, n, "%s", v);
  }
  free(text);
  return ok;
}

/* ---- Files ------------------------------------------------------------------
 */

/* Opens the directory `path` (absolute) one component at a time from "/",
 * never following a symbolic link. */
static int priv_open_dir(const char *path) {
  if (path[0] != '/')
    return -1;
  int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  char comp[256];
  const char *p = path;
  while (fd >= 0) {
    p += strspn(p, "/");
    if (!*p)
      return fd;
    size_t m = strcspn(p, "/");
    if (m >= sizeof(comp) || (m == 1 && p[0] == '.') ||
        (m == 2 && p[0] == '.' && p[1] == '.')) {
      close(fd);
      errno = EINVAL;
      return -1;
    }
    memcpy(comp, p, m);
    comp[m] = '\0';
    int next =
        openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int saved = errno;
    close(fd);
    errno = saved;
    fd = next;
    p += m;
  }
  return -1;
}

/* Makes dir (0700 root, or `mode`) if missing; refuses one that is a
 * symbolic link or writable by others. */
static int priv_mkdir(priv_ctx *c, const char *dir, mode_t mode) {
  if (mkdir(dir, mode) != 0 && errno != EEXIST) {
    say(c, "cannot create %s: %s", dir, strerror(errno));
    return -1;
  }
  struct stat st;
  if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
      (!c->cfg.dry && st.st_uid != 0) || (st.st_mode & 022)) {
    say(c, "%s must be a directory owned by root, writable only by root", dir);
    return -1;
  }
  return 0;
}

/* Copies the open file into dir/name (replaced), returns 0. */
static int priv_copy(priv_ctx *c, int in, const char *dir, const char *name) {
  int dfd = priv_open_dir(dir);
  if (dfd < 0) {
    say(c, "cannot open %s: %s", dir, strerror(errno));
    return -1;
  }
  unlinkat(dfd, name, 0);
  int out = openat(dfd, name,
                   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  close(dfd);
  if (out < 0) {
    say(c, "cannot create %s/%s: %s", dir, name, strerror(errno));
    return -1;
  }
  char buf[65536];
  int rc = 0;
  for (;;) {
    ssize_t r = read(in, buf, sizeof(buf));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = -1;
      break;
    }
    if (r == 0)
      break;
    for (ssize_t off = 0; off < r;) {
      ssize_t w = write(out, buf + off, (size_t)(r - off));
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        rc = -1;
        break;
      }
      off += w;
    }
    if (rc)
      break;
  }
  if (rc == 0 && fsync(out) != 0)
    rc = -1;
  if (close(out) != 0)
    rc = -1;
  if (rc)
    say(c, "copying the package to %s/%s failed: %s", dir, name,
        strerror(errno));
  return rc;
}

/* ---- The agent's own configuration, as root reads it ------------------------
 * Only root-owned files that nobody else can write count: the key decides
 * what root does. */

typedef struct priv_agent_ini {
  int rollback_timeout_s;
  bool api_enabled;
  char api_socket[108];
  char service_units[4096]; /* [plugin.services] units, as written */
  bool service_commands;    /* [plugin.services] commands */
} priv_agent_ini;

/* inih's booleans as the agent reads them (config.c). */
static bool priv_ini_true(const char *v) {
  return strcmp(v, "false") != 0 && strcmp(v, "no") != 0 &&
         strcmp(v, "0") != 0 && strcmp(v, "off") != 0;
}

static void priv_ini_file(priv_ctx *c, const char *path, priv_agent_ini *ini) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      (!c->cfg.dry && st.st_uid != 0) || (st.st_mode & 022)) {
    fprintf(stderr,
            "%s: %s ignored: not a regular file owned and writable "
            "only by root\n",
            PRIV_ME, path);
    close(fd);
    return;
  }
  FILE *f = fdopen(fd, "r");
  if (!f) {
    close(fd);
    return;
  }
  char line[1024], section[64] = "";
  unsigned lineno = 0;
  while (fgets(line, sizeof(line), f)) {
    lineno++;
    char *s = line + strspn(line, " \t");
    s[strcspn(s, "\r\n")] = '\0';
    if (*s == '[') {
      size_t m = strcspn(s + 1, "]");
      snprintf(section, sizeof(section), "%.*s", (int)m, s + 1);
      continue;
    }
    char *eq = strchr(s, '=');
    if (!eq || *s == '#' || *s == ';')
      continue;
    char *end = eq;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
      end--;
    *end = '\0';
    char *v = eq + 1 + strspn(eq + 1, " \t");
    size_t vl = strlen(v);
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
      v[--vl] = '\0';
    if (strcmp(section, "plugin.software") == 0 &&
        strcmp(s, "rollback_timeout") == 0) {
      char *e = NULL;
      long t = strtol(v, &e, 10);
      if (e && !*e && t >= 10 && t <= 86400)
        ini->rollback_timeout_s = (int)t;
      else
        fprintf(stderr,
                "%s: %s:%u: [plugin.software] rollback_timeout '%s' is not "
                "10..86400 "
                "seconds; using %d\n",
                PRIV_ME, path, lineno, v, ini->rollback_timeout_s);
    } else if (strcmp(section, "api") == 0 && strcmp(s, "enabled") == 0) {
      ini->api_enabled = priv_ini_true(v);
    } else if (strcmp(section, "api") == 0 && strcmp(s, "socket") == 0) {
      snprintf(ini->api_socket, sizeof(ini->api_socket), "%s", v);
    } else if (strcmp(section, "plugin.services") == 0 &&
               strcmp(s, "units") == 0) {
      snprintf(ini->service_units, sizeof(ini->service_units), "%s", v);
    } else if (strcmp(section, "plugin.services") == 0 &&
               strcmp(s, "commands") == 0) {
      ini->service_commands = priv_ini_true(v);
    }
  }
  fclose(f);
}

static int priv_cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* agent.ini, then conf.d/ *.ini in name order, as the agent reads them. */
static void priv_read_agent_ini(priv_ctx *c, priv_agent_ini *ini) {
  *ini = (priv_agent_ini){.rollback_timeout_s = PRIV_ROLLBACK_DEFAULT_S,
                          .api_enabled = true,
                          .service_commands = true,
                          .api_socket = "/run/c8y-agent/api.sock"};
  char path[512];
  snprintf(path, sizeof(path), "%s/agent.ini", c->cfg.sysconfdir);
  priv_ini_file(c, path, ini);
  snprintf(path, sizeof(path), "%s/conf.d", c->cfg.sysconfdir);
  DIR *d = opendir(path);
  if (!d)
    return;
  char *names[256];
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 256) {
    size_t l = strlen(e->d_name);
    if (l > 4 && e->d_name[0] != '.' && strcmp(e->d_name + l - 4, ".ini") == 0)
      if ((names[n] = strdup(e->d_name)))
        n++;
  }
  closedir(d);
  qsort(names, n, sizeof(names[0]), priv_cmp_str);
  for (size_t i = 0; i < n; i++) {
    snprintf(path, sizeof(path), "%s/conf.d/%s", c->cfg.sysconfdir, names[i]);
    priv_ini_file(c, path, ini);
    free(names[i]);
  }
}

/* ---- Self-upgrade with rollback ---------------------------------------------
 * The agent cannot judge its own replacement, so the helper does: it keeps
 * the installed agent package, installs the new one, and waits up to
 * [plugin.software] rollback_timeout seconds for the new agent to report its
 * link "up" for PRIV_HEALTHY_AFTER_S seconds on its local API, answered by the
 * unit's main process (SO_PEERCRED of the answer against MainPID). If that
 * does not happen, the kept package is reinstalled. The verdict goes to
 * <home>/self-upgrade (world-readable, root-written) for the software
 * plugin, which resumes the operation after the restart and reports 503 or
 * 502 with the reason. */

#define PRIV_VERDICT "self-upgrade"

/* Writes the verdict file atomically: key=value lines. */
static void priv_verdict(priv_ctx *c, const char *state, const char *request,
                         const char *from, const char *to, const char *reason) {
  char tmp[512], path[512];
  snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", c->cfg.home, PRIV_VERDICT);
  snprintf(path, sizeof(path), "%s/%s", c->cfg.home, PRIV_VERDICT);
  unlink(tmp);
  int fd =
      open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    fprintf(stderr, "%s: cannot write %s: %s\n", PRIV_ME, tmp, strerror(errno));
    return;
  }
  fchmod(fd, 0644);
  dprintf(fd, "state=%s\nrequest=%s\nfrom=%s\nto=%s\nreason=%s\n", state,
          request, from, to, reason ? reason : "");
  fsync(fd);
  close(fd);
  if (rename(tmp, path) != 0)
    fprintf(stderr, "%s: cannot write %s: %s\n", PRIV_ME, path,
            strerror(errno));
}

static long priv_main_pid(priv_ctx *c) {
  char *text = NULL;
  const char *q[] = {"systemctl", "show",      "-P", "MainPID",
                     "--",        c->cfg.unit, NULL};
  int rc = priv_exec(c, q, &text);
  long pid = rc == 0 && text ? strtol(text, NULL, 10) : 0;
  free(text);
  return pid;
}

/* Seconds the link has been up by the agent's local API, -1 if not up or
 * the answer does not come from `pid`. */
static long priv_link_up_s(const char *sock, long pid) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(sock) >= sizeof(sa.sun_path))
    return -1;
  memcpy(sa.sun_path, sock, strlen(sock) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  long up = -1;
  struct ucred cr;
  socklen_t cl = sizeof(cr);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0 &&
      (long)cr.pid == pid && send(fd, "status\n", 7, MSG_NOSIGNAL) == 7) {
    shutdown(fd, SHUT_WR);
    char buf[8192];
    size_t len = 0;
    struct pollfd pfd = {fd, POLLIN, 0};
    while (len < sizeof(buf) - 1 && poll(&pfd, 1, 3000) > 0) {
      ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
      if (r <= 0)
        break;
      len += (size_t)r;
    }
    buf[len] = '\0';
    /* "link: up since <time> (N s)" */
    const char *l = strstr(buf, "\nlink: up since ");
    const char *par = l ? strstr(l, " (") : NULL;
    if (par && par < strchr(l + 1, '\n'))
      up = strtol(par + 2, NULL, 10);
  }
  close(fd);
  return up;
}

/* Waits for the new agent; "" when healthy, else the reason. */
static void priv_wait_healthy(priv_ctx *c, const priv_agent_ini *ini,
                              const char *to, char *why, size_t n) {
  time_t t0 = time(NULL);
  long last_pid = 0;
  int restarts = 0;
  why[0] = '\0';
  if (c->cfg.dry)
    return;
  for (;;) {
    long pid = priv_main_pid(c);
    if (pid > 0 && last_pid > 0 && pid != last_pid)
      restarts++;
    if (pid > 0)
      last_pid = pid;
    if (ini->api_enabled) {
      if (pid > 0 &&
          priv_link_up_s(ini->api_socket, pid) >= PRIV_HEALTHY_AFTER_S)
        return;
    } else if (pid > 0 && restarts == 0 &&
               time(NULL) - t0 >= 6 * PRIV_HEALTHY_AFTER_S) {
      /* Without the local API only a crash loop can be seen. */
      return;
    }
    if (time(NULL) - t0 >= ini->rollback_timeout_s)
      break;
    sleep(1);
  }
  snprintf(why, n,
           "%s %s did not connect within %d s ([plugin.software] "
           "rollback_timeout)%s",
           c->cfg.package, to, ini->rollback_timeout_s,
           restarts ? "; it restarted" : "");
}

/* Where the package of agent version `ver` is kept: rollback/<package>_
 * <version>.<ext>, with ':' (an epoch) made '%3a' as in apt's cache (also
 * into esc). */
static void priv_kept_path(const priv_ctx *c, const char *ver, char *path,
                           size_t n, char *esc, size_t en) {
  size_t k = 0;
  esc[0] = '\0';
  for (const char *v = ver; *v && k + 4 < en; v++)
    k += (size_t)(*v == ':' ? snprintf(esc + k, en - k, "%%3a")
                            : snprintf(esc + k, en - k, "%c", *v));
  snprintf(path, n, "%s/rollback/%s_%s.%s", c->cfg.home, c->cfg.package, esc,
           priv_is_rpm(c) ? "rpm" : "deb");
}

/* The kept package of the installed agent version, made if missing: a copy
 * the helper kept from an earlier upgrade, apt's cache, or dpkg-repack.
 * Returns 0 with its path. */
static int priv_keep_installed(priv_ctx *c, const char *ver, char *path,
                               size_t n) {
  char dir[512];
  snprintf(dir, sizeof(dir), "%s/rollback", c->cfg.home);
  if (priv_mkdir(c, dir, 0700) != 0)
    return -1;
  char esc[256];
  priv_kept_path(c, ver, path, n, esc, sizeof(esc));
  if (access(path, R_OK) == 0)
    return 0;
  if (c->cfg.dry)
    return 0;
  /* Only one kept package: the one installed now. */
  DIR *d = opendir(dir);
  for (struct dirent *e; d && (e = readdir(d));)
    if (e->d_name[0] != '.')
      unlinkat(dirfd(d), e->d_name, 0);
  if (d)
    closedir(d);
  if (priv_is_apt(c)) {
    char arch[64] = "", cache[600];
    char *text = NULL;
    const char *q[] = {"dpkg", "--print-architecture", NULL};
    if (priv_exec(c, q, &text) == 0 && text)
      snprintf(arch, sizeof(arch), "%.*s", (int)strcspn(text, "\n"), text);
    free(text);
    const char *arches[] = {arch, "all"};
    for (size_t i = 0; i < 2; i++) {
      snprintf(cache, sizeof(cache), "/var/cache/apt/archives/%s_%s_%s.deb",
               c->cfg.package, esc, arches[i]);
      int in = open(cache, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (in >= 0) {
        const char *base = strrchr(path, '/') + 1;
        int rc = priv_copy(c, in, dir, base);
        close(in);
        if (rc == 0)
          return 0;
      }
    }
    /* dpkg-repack writes <name>_<version>_<arch>.deb into its cwd. */
    if (priv_which("dpkg-repack", cache, sizeof(cache))) {
      char tmpdir[600];
      snprintf(tmpdir, sizeof(tmpdir), "%s/repack", c->cfg.home);
      const char *rm[] = {"rm", "-rf", "--", tmpdir, NULL};
      priv_exec(c, rm, NULL);
      if (priv_mkdir(c, tmpdir, 0700) == 0) {
        const char *rp[] = {"dpkg-repack", "--", c->cfg.package, NULL};
        char *log = NULL;
        c->exec_cwd = tmpdir;
        int rc = priv_exec(c, rp, &log);
        c->exec_cwd = NULL;
        if (rc != 0)
          say(c, "dpkg-repack %s failed (exit %d): %.300s", c->cfg.package, rc,
              log ? log : "");
        free(log);
        DIR *rd = rc == 0 ? opendir(tmpdir) : NULL;
        int made = -1;
        for (struct dirent *e; rd && made != 0 && (e = readdir(rd));) {
          size_t l = strlen(e->d_name);
          if (l <= 4 || strcmp(e->d_name + l - 4, ".deb") != 0)
            continue;
          int in =
              openat(dirfd(rd), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
          if (in >= 0) {
            made = priv_copy(c, in, dir, strrchr(path, '/') + 1);
            close(in);
          }
        }
        if (rd)
          closedir(rd);
        priv_exec(c, rm, NULL);
        if (made == 0)
          return 0;
      }
    }
  }
  say(c,
      "no copy of the installed %s %s to roll back to (install dpkg-repack "
      "to make one)",
      c->cfg.package, ver);
  return -1;
}

static int priv_install_file_cmd(priv_ctx *c, const char *file) {
  if (priv_is_apt(c)) {
    const char *a[] = {
        "dpkg", "--force-confdef", "--force-confold", "-i", "--", file, NULL};
    return priv_action(c, a);
  }
  const char *a[] = {"rpm", "-U", "--replacepkgs", "--oldpackage", "--",
                     file,  NULL};
  return priv_action(c, a);
}

/* An upgrade of the agent's own package: `install` runs it (returns the
 * package manager's status). */
static int priv_self_upgrade(priv_ctx *c, const char *request,
                             int (*install)(priv_ctx *, const void *),
                             const void *arg, const char *to) {
  char from[256] = "", kept[700] = "", why[600];
  if (priv_mkdir(c, c->cfg.home, 0755) != 0)
    return 1;
  bool have_from =
      priv_installed_version(c, c->cfg.package, from, sizeof(from));
  bool have_kept =
      have_from && priv_keep_installed(c, from, kept, sizeof(kept)) == 0;
  priv_agent_ini ini;
  priv_read_agent_ini(c, &ini);
  priv_verdict(c, "pending", request, from, to, NULL);
  say(c, "upgrading %s %s to %s; rollback %s within %d s", c->cfg.package,
      have_from ? from : "(not installed)", to,
      have_kept ? "armed" : "NOT possible", ini.rollback_timeout_s);
  int rc = install(c, arg);
  if (rc == 0) {
    priv_wait_healthy(c, &ini, to, why, sizeof(why));
    if (!why[0]) {
      say(c, "%s %s is connected", c->cfg.package, to);
      priv_verdict(c, "ok", request, from, to, NULL);
      return 0;
    }
  } else {
    snprintf(why, sizeof(why), "installing %s %s failed (exit %d)",
             c->cfg.package, to, rc);
  }
  say(c, "%s", why);
  if (!have_kept) {
    priv_verdict(c, "failed", request, from, to, why);
    return rc ? rc : 1;
  }
  priv_verdict(c, "rolling-back", request, from, to, why);
  int rb = priv_install_file_cmd(c, kept);
  char reason[900];
  snprintf(reason, sizeof(reason), "%s; %s %s %s", why,
           rb == 0 ? "rolled back to"
                   : "rolling back failed, could not reinstall",
           c->cfg.package, from);
  say(c, "%s", reason);
  priv_verdict(c, rb == 0 ? "rolled-back" : "failed", request, from, to,
               reason);
  return rc ? rc : 1;
}

/* ---- Verbs
 * --------------------------------------------------------------------
 */

static int verb_reboot(priv_ctx *c, int argc, const char *const *argv) {
  (void)argc;
  (void)argv;
  /* A shutdown stops this unit too: the status goes back before anything
   * is stopped (SIGTERM is blocked until then; see priv_serve). */
  c->keep_sigmask = true; /* systemctl too: the shutdown signals us all */
  if (access("/run/systemd/system", F_OK) == 0) {
    const char *a[] = {"systemctl", "--no-block", "reboot", NULL};
    return priv_action(c, a);
  }
  const char *a[] = {"reboot", NULL};
  return priv_action(c, a);
}

static int apt_install(priv_ctx *c, const void *arg) {
  const char *a[] = {"apt-get",
                     "install",
                     "-y",
                     "-q",
                     "--allow-downgrades",
                     "-o",
                     "Dpkg::Options::=--force-confdef",
                     "-o",
                     "Dpkg::Options::=--force-confold",
                     "--",
                     arg,
                     NULL};
  return priv_action(c, a);
}

static int dnf_install(priv_ctx *c, const void *arg) {
  const char *a[] = {c->cfg.pm, "install", "-y", "--", arg, NULL};
  return priv_action(c, a);
}

static int verb_install(priv_ctx *c, int argc, const char *const *argv) {
  const char *name = argv[0], *version = argc > 1 ? argv[1] : NULL;
  if (!priv_name_ok(c->cfg.pm, name)) {
    say(c, "refused package name '%.200s': not an exact package name", name);
    return 2;
  }
  if (version && !priv_version_ok(c->cfg.pm, version)) {
    say(c, "refused version '%.200s'", version);
    return 2;
  }
  char spec[512], ver[256];
  if (priv_is_apt(c)) {
    /* Always "name=version": apt reads nothing else into it. */
    if (!priv_repo_version(c, name, ver, sizeof(ver))) {
      say(c, "no package '%s' in the configured repositories", name);
      return 100;
    }
    snprintf(spec, sizeof(spec), "%s=%s", name, version ? version : ver);
  } else {
    snprintf(spec, sizeof(spec), "%s%s%s", name, version ? "-" : "",
             version ? version : "");
  }
  int (*install)(priv_ctx *, const void *) =
      priv_is_apt(c) ? apt_install : dnf_install;
  if (strcmp(name, c->cfg.package) == 0) {
    char request[600];
    snprintf(request, sizeof(request), "install %s%s%s", name,
             version ? " " : "", version ? version : "");
    return priv_self_upgrade(c, request, install, spec,
                             version          ? version
                             : priv_is_apt(c) ? ver
                                              : "latest");
  }
  return install(c, spec);
}

static int verb_remove(priv_ctx *c, int argc, const char *const *argv) {
  (void)argc;
  const char *name = argv[0];
  if (!priv_name_ok(c->cfg.pm, name)) {
    say(c, "refused package name '%.200s': not an exact package name", name);
    return 2;
  }
  if (strcmp(name, c->cfg.package) == 0) {
    say(c, "refused: removing %s would remove the agent itself", name);
    return 2;
  }
  char ver[256];
  if (!priv_installed_version(c, name, ver, sizeof(ver))) {
    say(c, "package '%s' is not installed", name);
    return 100;
  }
  if (priv_is_apt(c)) {
    char spec[512];
    snprintf(spec, sizeof(spec), "%s=%s", name, ver);
    const char *a[] = {"apt-get", "remove",
                       "-y",      "-q",
                       "-o",      "Dpkg::Options::=--force-confdef",
                       "-o",      "Dpkg::Options::=--force-confold",
                       "--",      spec,
                       NULL};
    return priv_action(c, a);
  }
  const char *a[] = {c->cfg.pm, "remove", "-y", "--", name, NULL};
  return priv_action(c, a);
}

static int install_copy(priv_ctx *c, const void *arg) {
  return priv_install_file_cmd(c, arg);
}

static int verb_install_file(priv_ctx *c, int argc, const char *const *argv) {
  (void)argc;
  const char *path = argv[0];
  const char *ext = priv_is_rpm(c) ? ".rpm" : ".deb";
  char dir[512];
  snprintf(dir, sizeof(dir), "%s/plugins/software", c->cfg.statedir);
  const char *base = strrchr(path, '/');
  if (!base || (size_t)(base - path) != strlen(dir) ||
      strncmp(path, dir, strlen(dir)) != 0 ||
      !priv_file_name_ok(base + 1, ext)) {
    say(c,
        "refused package file '%.200s': must be a %s file directly in %s "
        "(name of [A-Za-z0-9._+-])",
        path, ext, dir);
    return 2;
  }
  base++;
  /* Opened once, no symbolic link on the way; what is installed is a copy
   * in root's own directory, so the agent cannot change it afterwards. */
  int dfd = priv_open_dir(dir);
  int fd = dfd < 0 ? -1
                   : openat(dfd, base,
                            O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  int saved = errno;
  if (dfd >= 0)
    close(dfd);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      st.st_size > PRIV_FILE_MAX) {
    say(c, "refused package file '%.200s': %s", path,
        fd < 0 ? (saved == ELOOP || saved == ENOTDIR
                      ? "a symbolic link on its path"
                      : strerror(saved))
               : "not a regular file of at most 2 GiB");
    if (fd >= 0)
      close(fd);
    return 2;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  char work[600], copy[700], name[16];
  snprintf(work, sizeof(work), "%s/work", c->cfg.home);
  snprintf(name, sizeof(name), "install%s", ext);
  if (priv_mkdir(c, c->cfg.home, 0755) != 0 || priv_mkdir(c, work, 0700) != 0 ||
      priv_copy(c, fd, work, name) != 0) {
    close(fd);
    return 1;
  }
  close(fd);
  snprintf(copy, sizeof(copy), "%s/%s", work, name);
  /* Which package is it? The agent's own takes the rollback path. */
  char pkg[256] = "", ver[256] = "";
  char *text = NULL;
  if (priv_is_apt(c)) {
    const char *q[] = {
        "dpkg-deb", "--show", "--showformat", "${Package} ${Version}", "--",
        copy,       NULL};
    if (priv_exec(c, q, &text) == 0 && text)
      sscanf(text, "%255s %255s", pkg, ver);
  } else {
    const char *q[] = {
        "rpm", "-qp", "--qf", "%{NAME} %{EPOCH}:%{VERSION}-%{RELEASE}",
        "--",  copy,  NULL};
    if (priv_exec(c, q, &text) == 0 && text)
      sscanf(text, "%255s %255s", pkg, ver);
    if (strncmp(ver, "(none):", 7) == 0)
      memmove(ver, ver + 7, strlen(ver + 7) + 1);
  }
  free(text);
  int rc;
  if (strcmp(pkg, c->cfg.package) == 0) {
    char request[700];
    snprintf(request, sizeof(request), "install-file %s", path);
    rc = priv_self_upgrade(c, request, install_copy, copy, ver);
    /* The package now installed is the one to roll back to next time. */
    char next[700], esc[256];
    priv_kept_path(c, ver, next, sizeof(next), esc, sizeof(esc));
    if (rc == 0 && !c->cfg.dry && rename(copy, next) == 0) {
      char rb[600];
      snprintf(rb, sizeof(rb), "%s/rollback", c->cfg.home);
      DIR *d = opendir(rb);
      for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.' &&
            strcmp(e->d_name, strrchr(next, '/') + 1) != 0)
          unlinkat(dirfd(d), e->d_name, 0);
      if (d)
        closedir(d);
    }
  } else {
    rc = priv_install_file_cmd(c, copy);
  }
  unlink(copy);
  return rc;
}

/* systemd's unit name rules (systemd.unit(5)), narrowed to what the
 * agent may ask for: [A-Za-z0-9:_.\-@], at most 255 bytes, ending in
 * ".service", not starting with '-', '.' or '@' (never an option to
 * systemctl), an instance after '@' when there is one. */
static bool priv_unit_ok(const char *n) {
  static const char suffix[] = ".service";
  size_t len = strlen(n), sl = sizeof(suffix) - 1;
  if (len <= sl || len > 255 || strcmp(n + len - sl, suffix) != 0 ||
      strchr("-.@", n[0]))
    return false;
  const char *at = strchr(n, '@');
  if (at && (strchr(at + 1, '@') || at + 1 == n + len - sl))
    return false;
  for (const char *p = n; *p; p++)
    if (!isalnum((unsigned char)*p) && !strchr(":_.-@\\", *p))
      return false;
  return true;
}

/* Whether `unit` is one of the blank- or comma-separated names. */
static bool priv_listed(const char *list, const char *unit) {
  size_t ul = strlen(unit);
  for (const char *p = list; *p;) {
    p += strspn(p, " \t,");
    size_t l = strcspn(p, " \t,");
    if (l == ul && strncmp(p, unit, l) == 0)
      return true;
    p += l;
  }
  return false;
}

/* The allowed units come from the root-owned configuration, never from the
 * request: the agent asking is not trusted to say what it may do. */
static int verb_service(priv_ctx *c, int argc, const char *const *argv) {
  (void)argc;
  const char *action = argv[0], *unit = argv[1];
  if (strcmp(action, "start") != 0 && strcmp(action, "stop") != 0 &&
      strcmp(action, "restart") != 0) {
    say(c, "service: '%.40s' is not start, stop or restart", action);
    return 2;
  }
  if (!priv_unit_ok(unit)) {
    say(c, "service: '%.80s' is not a .service unit name", unit);
    return 2;
  }
  priv_agent_ini ini;
  priv_read_agent_ini(c, &ini);
  if (!ini.service_commands) {
    say(c, "service: refused: [plugin.services] commands is off in %s",
        c->cfg.sysconfdir);
    return 2;
  }
  if (!priv_listed(ini.service_units, unit)) {
    say(c,
        "service: refused: %s is not in [plugin.services] units of the "
        "root-owned configuration in %s",
        unit, c->cfg.sysconfdir);
    return 2;
  }
  const char *a[] = {"systemctl", action, "--", unit, NULL};
  return priv_action(c, a);
}

/* New verbs go here; each checks its own arguments. */
static const priv_verb priv_verbs[] = {
    {"reboot", 0, 0, "reboot", verb_reboot},
    {"install", 1, 2, "install NAME [VERSION]", verb_install},
    {"remove", 1, 1, "remove NAME", verb_remove},
    {"install-file", 1, 1, "install-file PATH", verb_install_file},
    {"service", 2, 2, "service start|stop|restart UNIT", verb_service},
};

static int priv_dispatch(priv_ctx *c, int argc, const char *const *argv) {
  char list[256] = "";
  size_t n = sizeof(priv_verbs) / sizeof(priv_verbs[0]);
  for (size_t i = 0; i < n; i++)
    snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
             i ? ", " : "", priv_verbs[i].name);
  if (argc < 1) {
    say(c, "no verb given (%s)", list);
    return 2;
  }
  for (size_t i = 0; i < n; i++) {
    const priv_verb *v = &priv_verbs[i];
    if (strcmp(v->name, argv[0]) != 0)
      continue;
    if (argc - 1 < v->min_args || argc - 1 > v->max_args) {
      say(c, "usage: %s", v->usage);
      return 2;
    }
    if (strcmp(c->cfg.pm, "none") == 0 && strcmp(v->name, "reboot") != 0) {
      say(c, "no supported package manager (apt-get, dnf, yum) found");
      return 2;
    }
    return v->run(c, argc - 1, argv + 1);
  }
  say(c, "unknown verb '%.60s' (%s)", argv[0], list);
  return 2;
}

/* ---- The connection -------------------------------------------------------
 */

/* The peer is the agent: its uid is the agent's user (or root, with the
 * privileged drop-in) and it lives in the agent unit's cgroup. The group
 * of the socket is not trusted: operators are in it for the local API. */
static bool priv_peer_ok(priv_ctx *c, int fd, char *why, size_t n) {
  struct ucred cr;
  socklen_t cl = sizeof(cr);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0) {
    snprintf(why, n, "no peer credentials: %s", strerror(errno));
    return false;
  }
  const struct passwd *pw = getpwnam(c->cfg.user);
  if (cr.uid != 0 && (!pw || cr.uid != pw->pw_uid)) {
    snprintf(why, n, "uid %u (pid %d) is neither root nor %s", (unsigned)cr.uid,
             (int)cr.pid, c->cfg.user);
    return false;
  }
  char path[64], buf[4096];
  snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)cr.pid);
  int cf = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t len = cf < 0 ? -1 : read(cf, buf, sizeof(buf) - 1);
  if (cf >= 0)
    close(cf);
  if (len <= 0) {
    snprintf(why, n, "pid %d: cannot read its cgroup", (int)cr.pid);
    return false;
  }
  buf[len] = '\0';
  /* The unified hierarchy's line ("0::/..."), else systemd's own v1 one. */
  const char *cg = strstr(buf, "0::");
  if (cg && cg != buf && cg[-1] != '\n')
    cg = NULL;
  cg = cg ? cg + 3 : strstr(buf, ":name=systemd:");
  if (cg && cg[0] == ':')
    cg += strlen(":name=systemd:");
  size_t want = strlen(c->cfg.cgroup);
  size_t have = cg ? strcspn(cg, "\n") : 0;
  if (!cg || have < want || strncmp(cg, c->cfg.cgroup, want) != 0 ||
      (have > want && cg[want] != '/')) {
    snprintf(why, n, "pid %d (uid %u) is not in %s (cgroup %.*s)", (int)cr.pid,
             (unsigned)cr.uid, c->cfg.unit, (int)(have > 200 ? 200 : have),
             cg ? cg : "?");
    return false;
  }
  return true;
}

/* One line within the read timeout; -1 with the reason otherwise. */
static int priv_read_request(priv_ctx *c, int fd, priv_req *r, char *why,
                             size_t n) {
  size_t len = 0;
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = c->cfg.read_timeout_ms - ((now.tv_sec - t0.tv_sec) * 1000 +
                                          (now.tv_nsec - t0.tv_nsec) / 1000000);
    if (left <= 0) {
      snprintf(why, n, "no complete request within %d ms",
               c->cfg.read_timeout_ms);
      return -1;
    }
    struct pollfd pfd = {fd, POLLIN, 0};
    int pr = poll(&pfd, 1, (int)left);
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0)
      continue;
    ssize_t got = read(fd, r->line + len, PRIV_REQ_MAX + 1 - len);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0) {
      snprintf(why, n, "%s",
               len ? "request without a line end" : "empty request");
      return -1;
    }
    len += (size_t)got;
    char *nl = memchr(r->line, '\n', len);
    if (nl) {
      *nl = '\0';
      len = (size_t)(nl - r->line);
      break;
    }
    if (len > PRIV_REQ_MAX) {
      snprintf(why, n, "request longer than %d bytes", PRIV_REQ_MAX);
      return -1;
    }
  }
  memcpy(r->raw, r->line, len + 1);
  /* Printable ASCII words separated by single blanks. */
  r->argc = 0;
  char *s = r->line;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch > 0x7e) {
      snprintf(why, n, "request has a control or non-ASCII byte (0x%02x)", ch);
      return -1;
    }
  }
  while (*s) {
    if (*s == ' ') {
      snprintf(why, n, "request has an empty word");
      return -1;
    }
    if (r->argc == PRIV_MAX_ARGS) {
      snprintf(why, n, "request has more than %d words", PRIV_MAX_ARGS);
      return -1;
    }
    r->argv[r->argc++] = s;
    char *sp = strchr(s, ' ');
    if (!sp)
      break;
    *sp = '\0';
    s = sp + 1;
    if (!*s) {
      snprintf(why, n, "request ends with a blank");
      return -1;
    }
  }
  r->argv[r->argc] = NULL;
  return 0;
}

/* The reply: output tail, then the status on a line of its own. The client
 * may be gone (the agent restarting during its own upgrade): that is no
 * error, the action has run. */
static void priv_reply(priv_ctx *c, int fd, int status) {
  char tail[64];
  int tl =
      snprintf(tail, sizeof(tail), "%s%s%d\n",
               c->out.len && c->out.buf[c->out.len - 1] != '\n' ? "\n" : "",
               PRIV_STATUS, status);
  priv_out_add(&c->out, tail, (size_t)tl);
  const char *p = c->out.buf;
  size_t left = c->out.len;
  while (left > 0) {
    ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      fprintf(stderr,
              "%s: the agent went away before the reply (it restarted or "
              "stopped); the action's status was %d\n",
              PRIV_ME, status);
      return;
    }
    p += w;
    left -= (size_t)w;
  }
}

static int priv_serve(priv_ctx *c) {
  /* The client may go away while the action runs; SIGTERM is held back
   * while a reply is due, so that a reboot's status still goes out. */
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  c->serving = true;
  char why[512];
  if (!priv_peer_ok(c, 0, why, sizeof(why))) {
    fprintf(stderr, "%s: refused connection: %s\n", PRIV_ME, why);
    say(c, "refused: %s", why);
    priv_reply(c, 1, 2);
    return 0;
  }
  priv_req r;
  if (priv_read_request(c, 0, &r, why, sizeof(why)) != 0) {
    say(c, "%s; dropped", why);
    priv_reply(c, 1, 2);
    return 0;
  }
  fprintf(stderr, "%s: request: %s\n", PRIV_ME, r.raw[0] ? r.raw : "(empty)");
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  bool reboot = r.argc == 1 && strcmp(r.argv[0], "reboot") == 0;
  if (reboot)
    sigprocmask(SIG_BLOCK, &term, NULL);
  int rc = priv_dispatch(c, r.argc, r.argv);
  fprintf(stderr, "%s: %s finished with status %d\n", PRIV_ME,
          r.argc ? r.argv[0] : "(none)", rc);
  priv_reply(c, 1, rc);
  shutdown(1, SHUT_WR);
  return 0;
}

static const char *env_or(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v && *v ? v : fallback;
}

static const char *priv_detect_pm(void) {
  char buf[256];
  if (priv_which("apt-get", buf, sizeof(buf)) &&
      priv_which("dpkg", buf, sizeof(buf)))
    return "apt";
  if (priv_which("dnf", buf, sizeof(buf)))
    return "dnf";
  if (priv_which("yum", buf, sizeof(buf)))
    return "yum";
  return "none";
}

int main(int argc, char **argv) {
  static priv_ctx c;
  /* C8Y_PRIV_* override the paths for tests; under systemd the environment
   * is the unit's, which only root can change. */
  c.cfg.statedir = env_or("C8Y_PRIV_STATEDIR", C8Y_PRIV_STATEDIR);
  c.cfg.home = env_or("C8Y_PRIV_HOME", C8Y_PRIV_HOME);
  c.cfg.sysconfdir = env_or("C8Y_PRIV_SYSCONFDIR", C8Y_PRIV_SYSCONFDIR);
  c.cfg.user = env_or("C8Y_PRIV_USER", C8Y_PRIV_USER);
  c.cfg.unit = "c8y-agent.service";
  c.cfg.cgroup = env_or("C8Y_PRIV_CGROUP", "/system.slice/c8y-agent.service");
  c.cfg.package = C8Y_PRIV_PACKAGE;
  c.cfg.dry = getenv("C8Y_PRIV_DRY_RUN") && *getenv("C8Y_PRIV_DRY_RUN");
  c.cfg.dry_pkgs = getenv("C8Y_PRIV_DRY_PACKAGES");
  c.cfg.pm = env_or("C8Y_PRIV_PM", NULL);
  if (!c.cfg.pm)
    c.cfg.pm = priv_detect_pm();
  c.cfg.read_timeout_ms = atoi(env_or("C8Y_PRIV_READ_TIMEOUT_MS", "10000"));
  if (c.cfg.read_timeout_ms <= 0)
    c.cfg.read_timeout_ms = 10000;
  umask(022);
  if (argc >= 2 && strcmp(argv[1], "--serve") == 0)
    return priv_serve(&c);
  if (argc >= 2 &&
      (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    printf("usage: %s reboot | install NAME [VERSION] | remove NAME | "
           "install-file PATH |\n       service start|stop|restart UNIT\n"
           "       %s --serve   (one request on stdin; "
           "run by c8y-agent-priv.socket)\n",
           PRIV_ME, PRIV_ME);
    return 0;
  }
  if (geteuid() != 0 && !c.cfg.dry) {
    fprintf(stderr, "%s: must run as root\n", PRIV_ME);
    return 2;
  }
  int rc = priv_dispatch(&c, argc - 1, (const char *const *)argv + 1);
  fwrite(c.out.buf, 1, c.out.len, stdout);
  return rc;
}
