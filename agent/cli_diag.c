/* c8y-agent diag: collects what support asks for into one .tar.gz, the way
 * `tedge diag collect` does for thin-edge.io.
 *
 * Every section is collected on its own: one that cannot be had (the agent
 * is not running, the journal is not readable by this user, a command timed
 * out) is named with the reason in SUMMARY.txt instead of failing the whole
 * bundle. Commands (this same binary's status/ops/--list-plugins/connect
 * --test, journalctl, the package manager's query) run as child processes
 * through execv with an argv array, never a shell, each under an alarm(2)
 * that survives exec, so a hanging one is killed. Every collected text goes
 * through one redaction pass before the archive is made with the system's
 * tar. */
#include "cli_diag.h"

#include "bootstrap.h"
#include "config.h"
#include "log.h"

#include <c8y/plugin.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef C8Y_VERSION
#define C8Y_VERSION "0.0.0"
#endif
#ifndef C8Y_DEFAULT_STATEDIR
#define C8Y_DEFAULT_STATEDIR "/var/lib/c8y-agent"
#endif

#define DIAG_DEFAULT_LINES 1000
#define DIAG_MAX_LINES 100000
#define DIAG_CMD_TIMEOUT_S 60
/* connect --test: up to 10 s per step (DNS, TCP, TLS, MQTT, round trip). */
#define DIAG_CONNECT_TIMEOUT_S 120
#define DIAG_STATE_MAX_ENTRIES 500
#define DIAG_REDACTED "<redacted>"
/* Shorter literal secrets would blank out ordinary words of the logs. */
#define DIAG_MIN_LITERAL 4
#define DIAG_MAX_SECRETS 8

typedef struct diag {
  const char *config;
  const char *socket; /* --socket, passed on to status/ops */
  char self[PATH_MAX];
  char tmp[PATH_MAX];    /* private work dir */
  char bundle[PATH_MAX]; /* tmp/<name>: becomes the archive's top dir */
  const char *name;      /* <name>, a pointer into bundle */
  int dirfd;             /* of bundle */
  long lines;
  enum { CONNECT_AUTO, CONNECT_ALWAYS, CONNECT_NEVER } connect;
  char *secrets[DIAG_MAX_SECRETS + 1];
  size_t nsecrets;
  FILE *summary; /* SUMMARY.txt, written last into the bundle */
  char *summary_buf;
  size_t summary_len;
  int collected, missing;
  char *state_dir;
  char *config_dir;
} diag;

static void usage(FILE *out) {
  fprintf(out,
          "usage: c8y-agent [-c FILE] diag [-o FILE] [--lines N]\n"
          "                 [--connect-test | --no-connect-test] "
          "[--socket PATH]\n"
          "\n"
          "Collects a support bundle into one .tar.gz: versions and system,\n"
          "the configuration (agent.ini, conf.d, operations.d) with every\n"
          "secret removed, status and recent operations of the running "
          "agent,\n"
          "queue and journal statistics, the state directory's listing, the\n"
          "last N lines of the agent's systemd journal, the plugin list and\n"
          "the output of connect --test. What cannot be collected is named\n"
          "in SUMMARY.txt inside the archive.\n"
          "\n"
          "  -o, --output FILE  the archive (default: "
          "$TMPDIR or /tmp/c8y-agent-diag-<host>-<time>.tar.gz)\n"
          "  --lines N          journal lines (default %d, 1..%d)\n"
          "  --connect-test     always run connect --test (it briefly\n"
          "                     disconnects a running agent)\n"
          "  --no-connect-test  never run it. Default: only when the agent\n"
          "                     is not running or its link is not up\n"
          "  --socket PATH      the local API socket (see status --help)\n"
          "\n"
          "Exit status: 0 archive written, 1 it could not be written, 2 "
          "usage.\n",
          DIAG_DEFAULT_LINES, DIAG_MAX_LINES);
}

/* ---- Summary ------------------------------------------------------------ */

/* One summary line: collected or not, the file or item, then the text. */
static void note_line(diag *d, bool ok, const char *what, const char *fmt,
                      va_list ap) {
  fprintf(d->summary, "%-14s %-20s ", ok ? "collected" : "NOT COLLECTED", what);
  vfprintf(d->summary, fmt, ap);
  fputc('\n', d->summary);
  if (ok)
    d->collected++;
  else
    d->missing++;
}

static void note_ok(diag *d, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note_ok(diag *d, const char *file, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  note_line(d, true, file, fmt, ap);
  va_end(ap);
}

static void note_missing(diag *d, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note_missing(diag *d, const char *what, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  note_line(d, false, what, fmt, ap);
  va_end(ap);
}

/* ---- Redaction ---------------------------------------------------------- */

/* Names whose value is a secret; matched case-insensitively anywhere in a
 * key (password, bootstrap_password, auth_token, aes_key ...). */
static const char *const secret_words[] = {
    "password",   "passwd", "passphrase", "secret",  "token",      "jwt", "otp",
    "credential", "apikey", "api_key",    "privkey", "private_key"};

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

/* A key names a secret by its words, or is a key itself (key, aes_key);
 * paths to secrets (password_file, key_file, ca_path) are not secret. */
static bool secret_key(const char *key) {
  if (ends_with(key, "_file") || ends_with(key, "_path") ||
      ends_with(key, "_dir"))
    return false;
  for (size_t i = 0; i < sizeof secret_words / sizeof *secret_words; i++)
    if (strcasestr(key, secret_words[i]))
      return true;
  return strcasecmp(key, "key") == 0 || ends_with(key, "_key") ||
         ends_with(key, "-key");
}

typedef struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* Ends a rewrite of `text`: `rest` (a tail of text) appended, text freed.
 * The new text with its length in *len, or NULL when memory ran out. */
static char *sb_finish(sbuf *out, const char *rest, char *text, size_t *len) {
  sb_str(out, rest);
  free(text);
  if (out->oom) {
    free(out->p);
    return NULL;
  }
  *len = out->len;
  return out->p ? out->p : strdup("");
}

/* Patterns for text (logs, command output); group 2 is the secret. */
static const char *const patterns[] = {
    /* password=x, "token": "x", secret: x, bootstrap_password = x */
    "([a-z0-9_.-]*(password|passwd|passphrase|secret|token|jwt|otp|"
    "credentials?|api_?key|priv(ate_)?key)[a-z0-9_.-]*[\"']?[[:space:]]*[=:]"
    "[[:space:]]*[\"']?)([^[:space:]\"',;&]+)",
    /* HTTP credentials */
    "((authorization:[[:space:]]*)?(bearer|basic)[[:space:]]+)"
    "([A-Za-z0-9+/=._~-]{8,})",
    /* SmartREST 70 (bootstrap: tenant,user,password) */
    "((^|[[:space:]\"'|])70,[^,[:space:]]*,[^,[:space:]]*,)([^,[:space:]"
    "\"']+)",
};
/* The index of the secret's group in each pattern. */
static const int pattern_group[] = {4, 4, 3};

/* JWTs anywhere (SmartREST 71 carries one). */
#define JWT_PATTERN "eyJ[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*"

static char *redact_regex(char *text, size_t *len, const regex_t *re,
                          int group) {
  sbuf out = {0};
  const char *s = text;
  regmatch_t m[8];
  int eflags = 0;
  while (*s && regexec(re, s, 8, m, eflags) == 0) {
    regoff_t so = group >= 0 ? m[group].rm_so : m[0].rm_so;
    regoff_t eo = group >= 0 ? m[group].rm_eo : m[0].rm_eo;
    if (so < 0 || eo <= so) { /* nothing to hide in this match */
      regoff_t adv = m[0].rm_eo > 0 ? m[0].rm_eo : 1;
      sb_add(&out, s, (size_t)adv);
      s += adv;
      eflags = REG_NOTBOL;
      continue;
    }
    sb_add(&out, s, (size_t)so);
    sb_str(&out, DIAG_REDACTED);
    s += eo;
    eflags = REG_NOTBOL;
  }
  return sb_finish(&out, s, text, len);
}

static char *redact_literal(char *text, size_t *len, const char *secret) {
  size_t n = strlen(secret);
  if (n < DIAG_MIN_LITERAL || !strstr(text, secret))
    return text;
  sbuf out = {0};
  const char *s = text, *hit;
  while ((hit = strstr(s, secret)) != NULL) {
    sb_add(&out, s, (size_t)(hit - s));
    sb_str(&out, DIAG_REDACTED);
    s = hit + n;
  }
  return sb_finish(&out, s, text, len);
}

/* PEM private key blocks become one line. */
static char *redact_pem(char *text, size_t *len) {
  sbuf out = {0};
  const char *s = text;
  const char *begin;
  while ((begin = strstr(s, "-----BEGIN ")) != NULL) {
    const char *eol = strchr(begin, '\n');
    const char *end = strstr(begin, "-----END ");
    bool is_key =
        eol && memmem(begin, (size_t)(eol - begin), "PRIVATE KEY", 11) != NULL;
    if (!is_key || !end) {
      size_t skip = (size_t)(begin - s) + 11;
      sb_add(&out, s, skip);
      s += skip;
      continue;
    }
    const char *after = strchr(end + 9, '\n');
    after = after ? after : end + strlen(end);
    sb_add(&out, s, (size_t)(begin - s));
    sb_str(&out, DIAG_REDACTED " (PEM private key)");
    s = after;
  }
  return sb_finish(&out, s, text, len);
}

/* key_values: also the key=value patterns (off for the configuration dump,
 * already redacted by key name, whose *_file paths are worth keeping). */
static char *redact(char *text, size_t *len, char *const *secrets,
                    bool key_values) {
  /* Longest first would matter only for overlapping secrets; they are
   * replaced before the patterns so a pattern cannot split one. */
  for (size_t i = 0; text && secrets && secrets[i]; i++)
    text = redact_literal(text, len, secrets[i]);
  if (text)
    text = redact_pem(text, len);
  for (size_t i = key_values ? 0 : 1;
       text && i < sizeof patterns / sizeof *patterns; i++) {
    regex_t re;
    if (regcomp(&re, patterns[i], REG_EXTENDED | REG_ICASE) != 0)
      continue;
    text = redact_regex(text, len, &re, pattern_group[i]);
    regfree(&re);
  }
  regex_t jwt;
  if (text && regcomp(&jwt, JWT_PATTERN, REG_EXTENDED) == 0) {
    text = redact_regex(text, len, &jwt, -1);
    regfree(&jwt);
  }
  return text;
}

/* ---- Files in the bundle ------------------------------------------------- */

static int open_out(diag *d, const char *file) {
  return openat(d->dirfd, file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
}

static int write_text(diag *d, const char *file, const char *text, size_t len) {
  int fd = open_out(d, file);
  if (fd < 0)
    return -1;
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(fd, text + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      close(fd);
      return -1;
    }
    off += (size_t)n;
  }
  return close(fd);
}

/* Reads a whole file (at most max bytes; the rest is cut with a note). */
static char *slurp_fd(int fd, size_t max, size_t *len) {
  sbuf b = {0};
  char chunk[8192];
  ssize_t n;
  bool cut = false;
  while ((n = read(fd, chunk, sizeof chunk)) != 0) {
    if (n < 0) {
      if (errno == EINTR)
        continue;
      free(b.p);
      return NULL;
    }
    if (b.len + (size_t)n > max) {
      sb_add(&b, chunk, max - b.len);
      cut = true;
      break;
    }
    sb_add(&b, chunk, (size_t)n);
  }
  if (cut)
    sb_str(&b, "\n[cut: larger than the bundle keeps]\n");
  if (b.oom) {
    free(b.p);
    errno = ENOMEM;
    return NULL;
  }
  *len = b.len;
  return b.p ? b.p : strdup("");
}

static char *slurp(const char *path, size_t max, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  char *s = slurp_fd(fd, max, len);
  int e = errno;
  close(fd);
  errno = e;
  return s;
}

/* Redacts the bundle's file in place. */
static int redact_file(diag *d, const char *file) {
  int fd = openat(d->dirfd, file, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  size_t len;
  char *text = slurp_fd(fd, 64u << 20, &len);
  close(fd);
  if (!text)
    return -1;
  text = redact(text, &len, d->secrets, strcmp(file, "config.txt") != 0);
  if (!text)
    return -1;
  int rc = write_text(d, file, text, len);
  free(text);
  return rc;
}

/* ---- Commands ------------------------------------------------------------ */

/* An executable `name` from PATH (no shell is involved), or NULL. */
static char *find_program(const char *name) {
  const char *path = getenv("PATH");
  if (!path || !*path)
    path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
  while (*path) {
    size_t n = strcspn(path, ":");
    char *cand;
    if (n > 0 && asprintf(&cand, "%.*s/%s", (int)n, path, name) >= 0) {
      if (access(cand, X_OK) == 0)
        return cand;
      free(cand);
    }
    path += n + (path[n] == ':');
  }
  return NULL;
}

typedef struct cmd_result {
  int status; /* exit status, or -1 */
  int signal; /* terminating signal, or 0 */
  size_t bytes;
} cmd_result;

/* Runs argv (argv[0] an absolute path) with stdin from /dev/null, the
 * default signal handling and, when out_fd >= 0, stdout and stderr into
 * out_fd; a command still running after timeout_s (0: no limit) is killed
 * by SIGALRM. 0 with its wait status in *st, or -1 when it could not be
 * started. */
static int run_wait(char *const argv[], int out_fd, unsigned timeout_s,
                    int *st) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0)
      dup2(null, 0);
    if (out_fd >= 0) {
      dup2(out_fd, 1);
      dup2(out_fd, 2);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGALRM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    alarm(timeout_s); /* kept across execv: a hanging command dies */
    execv(argv[0], argv);
    dprintf(2, "%scannot run %s: %s\n", out_fd < 0 ? "c8y-agent diag: " : "",
            argv[0], strerror(errno));
    _exit(127);
  }
  while (waitpid(pid, st, 0) < 0 && errno == EINTR)
    ;
  return 0;
}

/* Runs argv (argv[0] an absolute path) with stdout and stderr appended to
 * the bundle's `file` after a "$ command" header. */
static int run_to_file(diag *d, const char *file, char *const argv[],
                       unsigned timeout_s, cmd_result *r) {
  *r = (cmd_result){.status = -1};
  int fd =
      openat(d->dirfd, file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0)
    return -1;
  sbuf head = {0};
  sb_str(&head, "$");
  for (size_t i = 0; argv[i]; i++) {
    sb_str(&head, " ");
    sb_str(&head, argv[i]);
  }
  sb_str(&head, "\n");
  if (!head.oom && write(fd, head.p, head.len) < 0) {
    free(head.p);
    close(fd);
    return -1;
  }
  free(head.p);
  off_t start = lseek(fd, 0, SEEK_END);
  int st;
  if (run_wait(argv, fd, timeout_s, &st) != 0) {
    close(fd);
    return -1;
  }
  off_t end = lseek(fd, 0, SEEK_END);
  r->bytes = end > start ? (size_t)(end - start) : 0;
  if (WIFEXITED(st)) {
    r->status = WEXITSTATUS(st);
    dprintf(fd, "[exit status %d]\n", r->status);
  } else if (WIFSIGNALED(st)) {
    r->signal = WTERMSIG(st);
    if (r->signal == SIGALRM)
      dprintf(fd, "[killed: no result within %u s]\n", timeout_s);
    else
      dprintf(fd, "[killed by signal %d (%s)]\n", r->signal,
              strsignal(r->signal));
  }
  close(fd);
  return 0;
}

static void describe(const cmd_result *r, char *out, size_t n,
                     unsigned timeout_s) {
  if (r->signal == SIGALRM)
    snprintf(out, n, "no result within %u s", timeout_s);
  else if (r->signal)
    snprintf(out, n, "killed by signal %d", r->signal);
  else
    snprintf(out, n, "exit status %d", r->status);
}

/* This binary's subcommand into `file`; its status through *r. */
static int run_self(diag *d, const char *file, const char *const *args,
                    unsigned timeout_s, cmd_result *r) {
  char *argv[16];
  size_t a = 0;
  argv[a++] = d->self;
  argv[a++] = "-c";
  argv[a++] = (char *)d->config;
  for (size_t i = 0; args[i] && a < 15; i++)
    argv[a++] = (char *)args[i];
  argv[a] = NULL;
  return run_to_file(d, file, argv, timeout_s, r);
}

/* ---- Sections ------------------------------------------------------------ */

static void section_versions(diag *d) {
  sbuf b = {0};
  char line[1024];
  snprintf(line, sizeof line, "c8y-agent %s (plugin ABI %d.%d)\n", C8Y_VERSION,
           C8Y_ABI_MAJOR, C8Y_ABI_MINOR);
  sb_str(&b, line);
  sb_str(&b, d->self);
  sb_str(&b, "\n\n");
  struct utsname u;
  if (uname(&u) == 0) {
    snprintf(line, sizeof line, "uname: %s %s %s %s %s\n", u.sysname,
             u.nodename, u.release, u.version, u.machine);
    sb_str(&b, line);
  }
  snprintf(line, sizeof line, "collected as uid %u gid %u\n\n",
           (unsigned)getuid(), (unsigned)getgid());
  sb_str(&b, line);
  size_t len;
  char *os = slurp("/etc/os-release", 64 * 1024, &len);
  if (os) {
    sb_str(&b, "/etc/os-release:\n");
    sb_add(&b, os, len);
    free(os);
  }
  if (b.oom || write_text(d, "versions.txt", b.p, b.len) != 0) {
    note_missing(d, "versions.txt", "cannot write: %s", strerror(errno));
    free(b.p);
    return;
  }
  free(b.p);
  /* The installed package, as the package manager sees it. */
  char *dpkg = find_program("dpkg-query");
  char *rpm = dpkg ? NULL : find_program("rpm");
  cmd_result r;
  if (dpkg) {
    char *argv[] = {dpkg,        "-W",
                    "-f",        "${Package} ${Version} ${Architecture}\\n",
                    "c8y-agent", "c8y-agent-dev",
                    NULL};
    run_to_file(d, "versions.txt", argv, DIAG_CMD_TIMEOUT_S, &r);
  } else if (rpm) {
    char *argv[] = {rpm, "-q", "c8y-agent", "c8y-agent-devel", NULL};
    run_to_file(d, "versions.txt", argv, DIAG_CMD_TIMEOUT_S, &r);
  }
  free(dpkg);
  free(rpm);
  note_ok(d, "versions.txt", "agent, kernel, OS and package versions");
}

/* One configuration file, secret values replaced by key name. Commented
 * keys (";password = x") are treated the same. */
static void dump_ini(sbuf *out, const char *path, const char *text) {
  sb_str(out, "==> ");
  sb_str(out, path);
  sb_str(out, " <==\n");
  const char *s = text;
  while (*s) {
    size_t n = strcspn(s, "\n");
    const char *p = s;
    while (p < s + n && (*p == ' ' || *p == '\t' || *p == ';' || *p == '#'))
      p++;
    size_t klen = 0;
    while (p + klen < s + n && p[klen] != '=' && p[klen] != ':')
      klen++;
    bool redacted = false;
    if (p + klen < s + n && klen > 0 && klen < 128) {
      char key[128];
      memcpy(key, p, klen);
      while (klen > 0 && (key[klen - 1] == ' ' || key[klen - 1] == '\t'))
        klen--;
      key[klen] = 0;
      if (klen > 0 && !strpbrk(key, " \t[") && secret_key(key)) {
        const char *eq = p + strcspn(p, "=:");
        const char *val = eq + 1;
        while (val < s + n && (*val == ' ' || *val == '\t'))
          val++;
        sb_add(out, s, (size_t)(val - s));
        sb_str(out, val < s + n ? DIAG_REDACTED : "");
        redacted = true;
      }
    }
    if (!redacted)
      sb_add(out, s, n);
    sb_str(out, "\n");
    s += n + (s[n] == '\n');
  }
  sb_str(out, "\n");
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The .ini files of dir in name order (as the agent reads conf.d). */
static void dump_ini_dir(sbuf *out, const char *dir) {
  DIR *dp = opendir(dir);
  if (!dp) {
    if (errno != ENOENT) {
      sb_str(out, "==> ");
      sb_str(out, dir);
      sb_str(out, " <== not readable: ");
      sb_str(out, strerror(errno));
      sb_str(out, "\n\n");
    }
    return;
  }
  char *names[256];
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(dp)) != NULL && n < 256)
    if (ends_with(e->d_name, ".ini") && e->d_name[0] != '.')
      names[n++] = strdup(e->d_name);
  closedir(dp);
  qsort(names, n, sizeof *names, name_cmp);
  for (size_t i = 0; i < n; i++) {
    char path[PATH_MAX];
    if (!names[i])
      continue;
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    size_t len;
    char *text = slurp(path, 1 << 20, &len);
    if (text) {
      dump_ini(out, path, text);
      free(text);
    } else {
      sb_str(out, "==> ");
      sb_str(out, path);
      sb_str(out, " <== not readable: ");
      sb_str(out, strerror(errno));
      sb_str(out, "\n\n");
    }
    free(names[i]);
  }
}

static void section_config(diag *d) {
  size_t len;
  char *text = slurp(d->config, 1 << 20, &len);
  if (!text) {
    note_missing(d, "config.txt", "%s: %s", d->config, strerror(errno));
    return;
  }
  sbuf out = {0};
  dump_ini(&out, d->config, text);
  free(text);
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/conf.d", d->config_dir);
  dump_ini_dir(&out, dir);
  snprintf(dir, sizeof dir, "%s/operations.d", d->config_dir);
  dump_ini_dir(&out, dir);
  if (out.oom || write_text(d, "config.txt", out.p, out.len) != 0)
    note_missing(d, "config.txt", "cannot write: %s", strerror(errno));
  else
    note_ok(d, "config.txt",
            "%s, conf.d/ and operations.d/, secret values removed", d->config);
  free(out.p);
  cmd_result r;
  const char *args[] = {"--check-config", NULL};
  char why[64];
  if (run_self(d, "check-config.txt", args, DIAG_CMD_TIMEOUT_S, &r) == 0) {
    describe(&r, why, sizeof why, DIAG_CMD_TIMEOUT_S);
    note_ok(d, "check-config.txt", "--check-config: %s", why);
  } else {
    note_missing(d, "check-config.txt", "cannot run: %s", strerror(errno));
  }
}

/* Loads the configuration for the paths and the secrets to hide. */
static void load_config(diag *d) {
  char *slash = strrchr(d->config, '/');
  d->config_dir =
      slash ? strndup(d->config, (size_t)(slash - d->config)) : strdup(".");
  if (slash == d->config) {
    free(d->config_dir);
    d->config_dir = strdup("/");
  }
  agent_config cfg;
  char err[1024];
  int level = log_get_level();
  log_set_level(LOG_LVL_ERROR);
  int rc = config_load(d->config, &cfg, err, sizeof err);
  log_set_level(level);
  if (rc != 0) {
    fprintf(d->summary, "note           configuration not loaded: %s\n", err);
    d->state_dir = strdup(C8Y_DEFAULT_STATEDIR);
    return;
  }
  const char *found[] = {cfg.password, cfg.bootstrap_password};
  for (size_t i = 0; i < 2; i++)
    if (found[i] && d->nsecrets < DIAG_MAX_SECRETS)
      d->secrets[d->nsecrets++] = strdup(found[i]);
  d->state_dir = strdup(cfg.state_dir);
  /* Credentials from bootstrap replace the password when present. */
  char *before = cfg.password ? strdup(cfg.password) : NULL;
  if (bootstrap_load_stored(&cfg, err, sizeof err) > 0 && cfg.password &&
      (!before || strcmp(before, cfg.password) != 0) &&
      d->nsecrets < DIAG_MAX_SECRETS)
    d->secrets[d->nsecrets++] = strdup(cfg.password);
  free(before);
  config_free(&cfg);
}

static void section_status(diag *d, bool *running, bool *link_up) {
  const char *sock[] = {"--socket", d->socket, NULL};
  const char *status[] = {"status", d->socket ? sock[0] : NULL, sock[1], NULL};
  const char *status_json[] = {"status", "--json", d->socket ? sock[0] : NULL,
                               sock[1], NULL};
  const char *ops[] = {"ops", d->socket ? sock[0] : NULL, sock[1], NULL};
  cmd_result r;
  *running = *link_up = false;
  if (run_self(d, "status.txt", status, DIAG_CMD_TIMEOUT_S, &r) != 0) {
    note_missing(d, "status.txt", "cannot run: %s", strerror(errno));
    return;
  }
  if (r.status == 3) {
    note_missing(d, "status.txt",
                 "the agent is not running or its local API is not "
                 "reachable (see status.txt)");
    return;
  }
  if (r.status != 0) {
    char why[64];
    describe(&r, why, sizeof why, DIAG_CMD_TIMEOUT_S);
    note_missing(d, "status.txt", "status failed (%s, see status.txt)", why);
    return;
  }
  *running = true;
  size_t len;
  int fd = openat(d->dirfd, "status.txt", O_RDONLY | O_CLOEXEC);
  char *text = fd >= 0 ? slurp_fd(fd, 1 << 20, &len) : NULL;
  if (fd >= 0)
    close(fd);
  *link_up = text && strstr(text, "\nlink: up") != NULL;
  free(text);
  note_ok(d, "status.txt",
          "link, queue per class, running operations, plugins, last error");
  run_self(d, "status.json", status_json, DIAG_CMD_TIMEOUT_S, &r);
  if (r.status == 0)
    note_ok(d, "status.json", "the same as JSON");
  run_self(d, "ops.txt", ops, DIAG_CMD_TIMEOUT_S, &r);
  if (r.status == 0)
    note_ok(d, "ops.txt", "recent operations and their outcome");
}

static void section_plugins(diag *d, bool running) {
  if (running) {
    note_ok(d, "plugins", "in status.txt, as the running agent loaded them");
    return;
  }
  /* Without a running agent: load them the way it would (inspection only,
   * nothing is sent). */
  const char *args[] = {"--list-plugins", NULL};
  cmd_result r;
  char why[64];
  if (run_self(d, "plugins.txt", args, DIAG_CMD_TIMEOUT_S, &r) != 0) {
    note_missing(d, "plugins.txt", "cannot run: %s", strerror(errno));
    return;
  }
  describe(&r, why, sizeof why, DIAG_CMD_TIMEOUT_S);
  if (r.signal)
    note_missing(d, "plugins.txt", "--list-plugins: %s", why);
  else
    note_ok(d, "plugins.txt", "--list-plugins: %s", why);
}

typedef struct walk {
  sbuf *out;
  size_t entries;
  size_t journal_lines;
  bool journal_seen;
  unsigned long long queue_bytes;
  unsigned queue_files;
} walk;

static void list_dir(walk *w, int fd, const char *rel, int depth) {
  DIR *dp = fdopendir(fd);
  if (!dp) {
    close(fd);
    return;
  }
  char *names[DIAG_STATE_MAX_ENTRIES];
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(dp)) != NULL && n < DIAG_STATE_MAX_ENTRIES)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      names[n++] = strdup(e->d_name);
  qsort(names, n, sizeof *names, name_cmp);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (!names[i] ||
        fstatat(dirfd(dp), names[i], &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        ++w->entries > DIAG_STATE_MAX_ENTRIES) {
      free(names[i]);
      continue;
    }
    char line[PATH_MAX + 128], when[32];
    struct tm tm;
    gmtime_r(&st.st_mtime, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(line, sizeof line, "%c%04o %5u:%-5u %12lld %s %s%s%s\n",
             S_ISDIR(st.st_mode)    ? 'd'
             : S_ISLNK(st.st_mode)  ? 'l'
             : S_ISSOCK(st.st_mode) ? 's'
                                    : '-',
             (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
             (unsigned)st.st_gid, (long long)st.st_size, when, rel, names[i],
             S_ISDIR(st.st_mode) ? "/" : "");
    sb_str(w->out, line);
    if (S_ISREG(st.st_mode) && strncmp(names[i], "queue-", 6) == 0 &&
        ends_with(names[i], ".log")) {
      w->queue_bytes += (unsigned long long)st.st_size;
      w->queue_files++;
    }
    /* Entries of the operation journal are counted, never copied: their
     * parameters are the operator's (commands, URLs). */
    if (depth == 0 && S_ISREG(st.st_mode) &&
        strcmp(names[i], "operations.journal") == 0) {
      int jfd = openat(dirfd(dp), names[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (jfd >= 0) {
        char buf[8192];
        ssize_t k;
        w->journal_seen = true;
        while ((k = read(jfd, buf, sizeof buf)) > 0)
          for (ssize_t j = 0; j < k; j++)
            w->journal_lines += buf[j] == '\n';
        close(jfd);
      }
    }
    if (S_ISDIR(st.st_mode) && depth < 2) {
      int sub = openat(dirfd(dp), names[i],
                       O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
      if (sub >= 0) {
        char subrel[PATH_MAX];
        snprintf(subrel, sizeof subrel, "%s%s/", rel, names[i]);
        list_dir(w, sub, subrel, depth + 1);
      }
    }
    free(names[i]);
  }
  closedir(dp);
}

static void section_state(diag *d) {
  int fd = open(d->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    note_missing(d, "state.txt", "state directory %s: %s", d->state_dir,
                 strerror(errno));
    return;
  }
  sbuf out = {0};
  char line[PATH_MAX + 200];
  snprintf(line, sizeof line,
           "State directory %s (names, sizes and times only; no content)\n",
           d->state_dir);
  sb_str(&out, line);
  struct statvfs vfs;
  if (fstatvfs(fd, &vfs) == 0) {
    snprintf(line, sizeof line,
             "file system: %llu of %llu KiB free, %llu of %llu inodes free\n",
             (unsigned long long)vfs.f_bavail * vfs.f_frsize / 1024,
             (unsigned long long)vfs.f_blocks * vfs.f_frsize / 1024,
             (unsigned long long)vfs.f_favail, (unsigned long long)vfs.f_files);
    sb_str(&out, line);
  }
  sb_str(&out, "\n");
  walk w = {.out = &out};
  list_dir(&w, fd, "", 0);
  if (w.entries > DIAG_STATE_MAX_ENTRIES)
    sb_str(&out, "[listing cut]\n");
  snprintf(line, sizeof line,
           "\nqueue: %u file(s), %llu bytes on disk\n"
           "operation journal: %s%zu entr%s\n",
           w.queue_files, w.queue_bytes,
           w.journal_seen ? "" : "(no operations.journal) ", w.journal_lines,
           w.journal_lines == 1 ? "y" : "ies");
  sb_str(&out, line);
  if (out.oom || write_text(d, "state.txt", out.p, out.len) != 0)
    note_missing(d, "state.txt", "cannot write: %s", strerror(errno));
  else
    note_ok(d, "state.txt",
            "queue (%u files, %llu bytes) and journal (%zu entries) "
            "statistics, listing",
            w.queue_files, w.queue_bytes, w.journal_lines);
  free(out.p);
}

/* journalctl exits 0 also when it shows nothing (no journal, or only the
 * caller's own entries). */
static bool journal_empty(diag *d) {
  int fd = openat(d->dirfd, "journal.txt", O_RDONLY | O_CLOEXEC);
  size_t len;
  char *text = fd >= 0 ? slurp_fd(fd, 1 << 20, &len) : NULL;
  if (fd >= 0)
    close(fd);
  bool empty = !text || strstr(text, "-- No entries --") ||
               strstr(text, "No journal files were found");
  free(text);
  return empty;
}

static void section_journal(diag *d) {
  char *jc = find_program("journalctl");
  if (!jc) {
    note_missing(d, "journal.txt",
                 "journalctl not found: no systemd journal on this system");
    return;
  }
  char lines[32];
  snprintf(lines, sizeof lines, "--lines=%ld", d->lines);
  char *argv[] = {jc,
                  "--no-pager",
                  "--output=short-iso",
                  "--unit=c8y-agent.service",
                  "--unit=c8y-agent-priv@*.service",
                  "--unit=c8y-agent-priv.socket",
                  lines,
                  NULL};
  cmd_result r;
  if (run_to_file(d, "journal.txt", argv, DIAG_CMD_TIMEOUT_S, &r) != 0) {
    note_missing(d, "journal.txt", "cannot run journalctl: %s",
                 strerror(errno));
  } else if (r.status != 0) {
    char why[64];
    describe(&r, why, sizeof why, DIAG_CMD_TIMEOUT_S);
    note_missing(d, "journal.txt", "journalctl failed (%s, see journal.txt)",
                 why);
  } else if (journal_empty(d)) {
    note_missing(d, "journal.txt",
                 "no journal entries of the agent's units are visible to uid "
                 "%u%s (see journal.txt)",
                 (unsigned)getuid(),
                 getuid() == 0 ? ""
                               : ": members of adm or systemd-journal see "
                                 "them, or run diag as root");
  } else {
    note_ok(d, "journal.txt", "last %ld journal lines of the agent's units%s",
            d->lines,
            getuid() == 0 ? ""
                          : " (as far as this user may read them: members "
                            "of adm or systemd-journal see all)");
  }
  free(jc);
}

static void section_connect(diag *d, bool running, bool link_up) {
  if (d->connect == CONNECT_NEVER ||
      (d->connect == CONNECT_AUTO && running && link_up)) {
    note_missing(d, "connect-test.txt",
                 d->connect == CONNECT_NEVER
                     ? "skipped (--no-connect-test)"
                     : "skipped: the running agent's link is up (status.txt) "
                       "and a test would disconnect it; use --connect-test");
    return;
  }
  const char *args[] = {"connect", "--test", NULL};
  cmd_result r;
  char why[64];
  if (run_self(d, "connect-test.txt", args, DIAG_CONNECT_TIMEOUT_S, &r) != 0) {
    note_missing(d, "connect-test.txt", "cannot run: %s", strerror(errno));
    return;
  }
  describe(&r, why, sizeof why, DIAG_CONNECT_TIMEOUT_S);
  note_ok(d, "connect-test.txt", "connect --test: %s%s", why,
          r.status == 0 ? " (all steps passed)" : "");
}

/* ---- Archive ------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static int make_archive(diag *d, const char *output) {
  char *tar = find_program("tar");
  if (!tar) {
    fprintf(stderr, "c8y-agent diag: no tar program in PATH\n");
    return -1;
  }
  char *argv[] = {
      tar,           "--create", "--gzip", "--file",        (char *)output,
      "--directory", d->tmp,     "--",     (char *)d->name, NULL};
  int st;
  int started = run_wait(argv, -1, 0, &st);
  free(tar);
  if (started != 0)
    return -1;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "c8y-agent diag: tar failed writing %s\n", output);
    unlink(output);
    return -1;
  }
  return 0;
}

static const char *const text_files[] = {
    "versions.txt", "config.txt",      "check-config.txt", "status.txt",
    "status.json",  "ops.txt",         "plugins.txt",      "state.txt",
    "journal.txt",  "connect-test.txt"};

int cli_diag_main(const char *config, int argc, char **argv) {
  diag d = {.config = config, .lines = DIAG_DEFAULT_LINES, .dirfd = -1};
  const char *output = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool has_next = i + 1 < argc;
    if ((strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) && has_next) {
      output = argv[++i];
    } else if (strncmp(a, "--output=", 9) == 0) {
      output = a + 9;
    } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) &&
               has_next) {
      d.config = argv[++i];
    } else if (strcmp(a, "--socket") == 0 && has_next) {
      d.socket = argv[++i];
    } else if (strcmp(a, "--lines") == 0 && has_next) {
      char *end;
      errno = 0;
      d.lines = strtol(argv[++i], &end, 10);
      if (errno || *end || d.lines < 1 || d.lines > DIAG_MAX_LINES) {
        fprintf(stderr, "c8y-agent diag: --lines %s: not a number in 1..%d\n",
                argv[i], DIAG_MAX_LINES);
        return 2;
      }
    } else if (strcmp(a, "--connect-test") == 0) {
      d.connect = CONNECT_ALWAYS;
    } else if (strcmp(a, "--no-connect-test") == 0) {
      d.connect = CONNECT_NEVER;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "c8y-agent diag: unknown argument '%s' (see --help)\n",
              a);
      return 2;
    }
  }
  if (output && !*output) {
    fprintf(stderr, "c8y-agent diag: empty --output\n");
    return 2;
  }
  /* The bundle holds the configuration: for the caller only. */
  umask(077);
  ssize_t n = readlink("/proc/self/exe", d.self, sizeof d.self - 1);
  if (n <= 0) {
    fprintf(stderr, "c8y-agent diag: cannot find this program: %s\n",
            strerror(errno));
    return 1;
  }
  d.self[n] = 0;

  const char *tmpdir = getenv("TMPDIR");
  if (!tmpdir || !*tmpdir)
    tmpdir = "/tmp";
  char host[256] = "localhost", stamp[32];
  gethostname(host, sizeof host - 1);
  for (char *h = host; *h; h++)
    if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
          (*h >= '0' && *h <= '9') || *h == '-' || *h == '.'))
      *h = '_';
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  snprintf(d.tmp, sizeof d.tmp, "%s/c8y-agent-diag.XXXXXX", tmpdir);
  if (!mkdtemp(d.tmp)) {
    fprintf(stderr, "c8y-agent diag: cannot create a directory in %s: %s\n",
            tmpdir, strerror(errno));
    return 1;
  }
  if (snprintf(d.bundle, sizeof d.bundle, "%s/c8y-agent-diag-%s-%s", d.tmp,
               host, stamp) >= (int)sizeof d.bundle) {
    fprintf(stderr, "c8y-agent diag: %s: path too long\n", d.tmp);
    rmdir(d.tmp);
    return 1;
  }
  d.name = strrchr(d.bundle, '/') + 1;
  char out_path[PATH_MAX], cwd[PATH_MAX];
  int len;
  if (!output)
    len = snprintf(out_path, sizeof out_path, "%s/%s.tar.gz", tmpdir, d.name);
  else if (output[0] != '/' && getcwd(cwd, sizeof cwd))
    len = snprintf(out_path, sizeof out_path, "%s/%s", cwd, output);
  else
    len = snprintf(out_path, sizeof out_path, "%s", output);
  if (len >= (int)sizeof out_path) {
    fprintf(stderr, "c8y-agent diag: output path too long\n");
    rmdir(d.tmp);
    return 1;
  }
  output = out_path;
  int rc = 1;
  if (mkdir(d.bundle, 0700) != 0 ||
      (d.dirfd = open(d.bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
      !(d.summary = open_memstream(&d.summary_buf, &d.summary_len))) {
    fprintf(stderr, "c8y-agent diag: cannot create %s: %s\n", d.bundle,
            strerror(errno));
    goto out;
  }
  fprintf(d.summary,
          "c8y-agent %s support bundle, %s UTC, uid %u, host %s\n"
          "configuration: %s\n\n",
          C8Y_VERSION, stamp, (unsigned)getuid(), host, d.config);

  load_config(&d);
  bool running, link_up;
  section_versions(&d);
  section_config(&d);
  section_status(&d, &running, &link_up);
  section_plugins(&d, running);
  section_state(&d);
  section_journal(&d);
  section_connect(&d, running, link_up);

  for (size_t i = 0; i < sizeof text_files / sizeof *text_files; i++)
    if (faccessat(d.dirfd, text_files[i], F_OK, 0) == 0 &&
        redact_file(&d, text_files[i]) != 0) {
      /* A file that cannot be redacted must not go out. */
      unlinkat(d.dirfd, text_files[i], 0);
      note_missing(&d, text_files[i], "removed: redaction failed (%s)",
                   strerror(errno));
    }
  fprintf(d.summary, "\n%d section(s) collected, %d not collected\n",
          d.collected, d.missing);
  fclose(d.summary);
  d.summary = NULL;
  size_t slen = d.summary_len;
  char *summary = redact(d.summary_buf, &slen, d.secrets, true);
  d.summary_buf = NULL;
  if (!summary || write_text(&d, "SUMMARY.txt", summary, slen) != 0) {
    fprintf(stderr, "c8y-agent diag: cannot write SUMMARY.txt: %s\n",
            strerror(errno));
    free(summary);
    goto out;
  }
  free(summary);
  if (make_archive(&d, output) != 0)
    goto out;
  printf("%s\n", output);
  fprintf(stderr,
          "c8y-agent diag: wrote %s (%d section(s) collected, %d not "
          "collected: see SUMMARY.txt)\n",
          output, d.collected, d.missing);
  rc = 0;
out:
  if (d.summary)
    fclose(d.summary);
  free(d.summary_buf);
  if (d.dirfd >= 0)
    close(d.dirfd);
  nftw(d.tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  for (size_t i = 0; i < d.nsecrets; i++) {
    explicit_bzero(d.secrets[i], strlen(d.secrets[i]));
    free(d.secrets[i]);
  }
  free(d.state_dir);
  free(d.config_dir);
  return rc;
}
