#include "config.h"

#include "cfgbool.h"

#include "ident.h"
#include "log.h"
#include "trust.h"
#include "x509.h"

#include <arpa/inet.h>
#include <c8y/plugin.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef C8Y_DEFAULT_PLUGINDIR
#define C8Y_DEFAULT_PLUGINDIR "/usr/lib/c8y-agent/plugins"
#endif
#ifndef C8Y_DEFAULT_RUNDIR
#define C8Y_DEFAULT_RUNDIR "/run/c8y-agent"
#endif
#ifndef C8Y_DEFAULT_STATEDIR
#define C8Y_DEFAULT_STATEDIR "/var/lib/c8y-agent"
#endif

#define CFG_LOCAL_DEVICE_ID "c8y-agent-local"
/* A backlog of a million measurement lines of up to ~38 bytes (a record
 * takes ~11 bytes more, outq.c); a day offline of the bundled plugins at
 * their default intervals takes under 1 MiB. */
#define CFG_DEFAULT_QUEUE_BYTES (48LL * 1024 * 1024)
#define CFG_DEFAULT_TRANSFER_BYTES (1024LL * 1024 * 1024)
/* inih copies section names into a 50-byte buffer and silently truncates. */
#define CFG_MAX_SECTION 49
#define CFG_PLUGIN_PREFIX "plugin."

enum kind {
  K_STR,    /* free text; empty = unset */
  K_SECRET, /* never echoed; empty = unset */
  K_PATH,   /* resolved against the setting file's directory; empty = unset */
  K_BOOL,
  K_INT,
  K_SIZE, /* bytes with optional K/M/G suffix */
  K_LEVEL,
  K_TENANT,
  K_HOST,
  K_DEVID,
  K_XID,
};

enum key_id {
  C_TENANT,
  C_USER,
  C_PASSWORD,
  C_PASSWORD_FILE,
  C_HOST,
  C_PORT,
  C_TLS,
  C_VERIFY,
  C_CA,
  C_CERT,
  C_KEY,
  C_KEEPALIVE,
  C_QOS,
  C_RMIN,
  C_RMAX,
  C_BOOTSTRAP,
  C_BS_USER,
  C_BS_PASSWORD,
  C_BS_PASSWORD_FILE,
  C_CERT_WARN,
  D_ID,
  D_XID,
  D_NAME,
  D_TYPE,
  D_INTERVAL,
  D_SERIAL,
  D_MODEL,
  D_REVISION,
  A_PLUGINDIR,
  A_STATEDIR,
  A_LOGLEVEL,
  A_OPTIMEOUT,
  A_QUEUE,
  A_STOPGRACE,
  C_HTTP_URL,
  C_HTTP_AUTH,
  A_TRANSFER,
  API_ENABLED,
  API_SOCKET,
  API_MODE,
  API_GROUP,
  C_ALLOW_PLAIN,
  A_MAX_PRODUCERS,
  A_MAX_LINES,
  C_ENROLL_OTP,
  C_ENROLL_OTP_FILE,
  C_ENROLL_URL,
  C_KEY_TYPE,
  C_RENEW_PERCENT,
  NKEYS
};

/* The agent_config field a key ends up in, for the keys a reload cannot
 * apply. */
enum field_type {
  FIELD_NONE, /* the key is reloadable */
  FIELD_STR,
  FIELD_BOOL,
  FIELD_INT,
  FIELD_UINT,
  FIELD_LLONG,
};
struct restart_field {
  size_t offset;
  enum field_type type;
};

#define KEY(section, key) section, key, "[" section "] " key
#define FIELD_TYPE(m)                                                          \
  _Generic(((agent_config *)0)->m,                                             \
      char *: FIELD_STR,                                                       \
      bool: FIELD_BOOL,                                                        \
      int: FIELD_INT,                                                          \
      unsigned: FIELD_UINT,                                                    \
      long long: FIELD_LLONG)
/* The MQTT session, the queue, the journal, the HTTP client or the local
 * socket were built from agent_config's field m when the agent started, so
 * a SIGHUP reload that would change it is refused. The field holds the
 * resolved value (defaults, password_file, stored credentials applied). */
#define RESTART_ONLY(m)                                                        \
  { offsetof(agent_config, m), FIELD_TYPE(m) }
/* A reload applies the key: what uses it reads the new agent_config. */
#define RELOADABLE                                                             \
  { 0, FIELD_NONE }

static const struct keydef {
  const char *section;
  const char *key;
  const char *name; /* "[section] key" */
  enum kind kind;
  long long min, max;
  struct restart_field restart;
} keydefs[NKEYS] = {
    [C_TENANT] = {KEY("c8y", "tenant"), K_TENANT, 0, 0, RESTART_ONLY(tenant)},
    [C_USER] = {KEY("c8y", "user"), K_STR, 0, 0, RESTART_ONLY(user)},
    [C_PASSWORD] = {KEY("c8y", "password"), K_SECRET, 0, 0,
                    RESTART_ONLY(password)},
    /* Its content is what [c8y] password compares. */
    [C_PASSWORD_FILE] = {KEY("c8y", "password_file"), K_PATH, 0, 0, RELOADABLE},
    [C_HOST] = {KEY("c8y", "host"), K_HOST, 0, 0, RESTART_ONLY(host)},
    [C_PORT] = {KEY("c8y", "port"), K_INT, 1, 65535, RESTART_ONLY(port)},
    [C_TLS] = {KEY("c8y", "tls"), K_BOOL, 0, 0, RESTART_ONLY(tls)},
    [C_VERIFY] = {KEY("c8y", "verify_hostname"), K_BOOL, 0, 0,
                  RESTART_ONLY(verify_hostname)},
    [C_CA] = {KEY("c8y", "ca_path"), K_PATH, 0, 0, RESTART_ONLY(ca_path)},
    [C_CERT] = {KEY("c8y", "cert_file"), K_PATH, 0, 0, RESTART_ONLY(cert_file)},
    [C_KEY] = {KEY("c8y", "key_file"), K_PATH, 0, 0, RESTART_ONLY(key_file)},
    [C_KEEPALIVE] = {KEY("c8y", "keepalive"), K_INT, 5, 3600,
                     RESTART_ONLY(keepalive)},
    [C_QOS] = {KEY("c8y", "qos"), K_INT, 0, 2, RELOADABLE},
    [C_RMIN] = {KEY("c8y", "reconnect_min_ms"), K_INT, 10, 3600000, RELOADABLE},
    [C_RMAX] = {KEY("c8y", "reconnect_max_ms"), K_INT, 10, 3600000, RELOADABLE},
    [C_BOOTSTRAP] = {KEY("c8y", "bootstrap"), K_BOOL, 0, 0, RELOADABLE},
    [C_BS_USER] = {KEY("c8y", "bootstrap_user"), K_STR, 0, 0, RELOADABLE},
    [C_BS_PASSWORD] = {KEY("c8y", "bootstrap_password"), K_SECRET, 0, 0,
                       RELOADABLE},
    [C_BS_PASSWORD_FILE] = {KEY("c8y", "bootstrap_password_file"), K_PATH, 0, 0,
                            RELOADABLE},
    [C_CERT_WARN] = {KEY("c8y", "cert_expiry_warn_days"), K_INT, 0, 3650,
                     RELOADABLE},
    [D_ID] = {KEY("device", "id"), K_DEVID, 0, 0, RESTART_ONLY(device_id)},
    [D_XID] = {KEY("device", "template_id"), K_XID, 0, 0,
               RESTART_ONLY(template_id)},
    [D_NAME] = {KEY("device", "name"), K_STR, 0, 0, RELOADABLE},
    [D_TYPE] = {KEY("device", "type"), K_STR, 0, 0, RELOADABLE},
    [D_INTERVAL] = {KEY("device", "required_interval"), K_INT, 0, 10080,
                    RELOADABLE},
    [D_SERIAL] = {KEY("device", "serial"), K_STR, 0, 0, RELOADABLE},
    [D_MODEL] = {KEY("device", "model"), K_STR, 0, 0, RELOADABLE},
    [D_REVISION] = {KEY("device", "revision"), K_STR, 0, 0, RELOADABLE},
    [A_PLUGINDIR] = {KEY("agent", "plugin_dir"), K_PATH, 0, 0, RELOADABLE},
    [A_STATEDIR] = {KEY("agent", "state_dir"), K_PATH, 0, 0,
                    RESTART_ONLY(state_dir)},
    [A_LOGLEVEL] = {KEY("agent", "log_level"), K_LEVEL, 0, 0, RELOADABLE},
    [A_OPTIMEOUT] = {KEY("agent", "op_timeout"), K_INT, 1, 604800,
                     RESTART_ONLY(op_timeout_s)},
    [A_STOPGRACE] = {KEY("agent", "stop_grace_ms"), K_INT, 0, 60000,
                     RELOADABLE},
    [A_QUEUE] = {KEY("agent", "queue_max_bytes"), K_SIZE, 1024,
                 64LL * 1024 * 1024 * 1024, RESTART_ONLY(queue_max_bytes)},
    [C_HTTP_URL] = {KEY("c8y", "http_url"), K_HOST, 0, 0,
                    RESTART_ONLY(http_url)},
    [C_HTTP_AUTH] = {KEY("c8y", "http_auth"), K_STR, 0, 0,
                     RESTART_ONLY(http_jwt)},
    [A_TRANSFER] = {KEY("agent", "transfer_max_bytes"), K_SIZE, 1024,
                    64LL * 1024 * 1024 * 1024,
                    RESTART_ONLY(transfer_max_bytes)},
    [API_ENABLED] = {KEY("api", "enabled"), K_BOOL, 0, 0,
                     RESTART_ONLY(api_enabled)},
    [API_SOCKET] = {KEY("api", "socket"), K_PATH, 0, 0,
                    RESTART_ONLY(api_socket)},
    [API_MODE] = {KEY("api", "mode"), K_STR, 0, 0, RESTART_ONLY(api_mode)},
    [API_GROUP] = {KEY("api", "group"), K_STR, 0, 0, RESTART_ONLY(api_gid)},
    [C_ALLOW_PLAIN] = {KEY("c8y", "allow_plaintext"), K_BOOL, 0, 0, RELOADABLE},
    [A_MAX_PRODUCERS] = {KEY("agent", "plugin_max_producers"), K_INT, 1, 10000,
                         RELOADABLE},
    [A_MAX_LINES] = {KEY("agent", "plugin_max_lines_per_s"), K_INT, 0, 10000000,
                     RELOADABLE},
    /* Enrollment is read at start only; renewal reads these each time. */
    [C_ENROLL_OTP] = {KEY("c8y", "enroll_otp"), K_SECRET, 0, 0, RELOADABLE},
    [C_ENROLL_OTP_FILE] = {KEY("c8y", "enroll_otp_file"), K_PATH, 0, 0,
                           RELOADABLE},
    [C_ENROLL_URL] = {KEY("c8y", "enroll_url"), K_HOST, 0, 0, RELOADABLE},
    [C_KEY_TYPE] = {KEY("c8y", "cert_key_type"), K_STR, 0, 0, RELOADABLE},
    [C_RENEW_PERCENT] = {KEY("c8y", "cert_renew_percent"), K_INT, 0, 99,
                         RELOADABLE},
};

/* The winning assignment of one known key. */
struct setting {
  bool set;
  char *str;        /* K_STR/K_SECRET/K_PATH/...: owned */
  long long num;    /* K_BOOL/K_INT/K_SIZE/K_LEVEL */
  const char *file; /* interned in parse_ctx.files */
  unsigned line;
};

struct parse_ctx {
  agent_config *cfg; /* plugin entries go straight here */
  struct setting set[NKEYS];
  char **files; /* every file name parsed, owned */
  size_t nfiles;
  const char *main_file;

  /* the file being parsed */
  FILE *fp;
  const char *file;
  const char *dir; /* absolute directory for relative paths */
  unsigned line;
  int perm_checked; /* 0 = not yet, 1 = ok (password= check) */
  char *linebuf;
  size_t linecap;

  bool failed;
  unsigned fail_line;
  char *err;
  size_t errlen;
};

/* ---- small helpers --------------------------------------------------------
 */

static void wipe_free(char *s) {
  if (s) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

__attribute__((format(printf, 6, 0))) static void
fail_v(struct parse_ctx *p, const char *file, unsigned line,
       const char *section, const char *key, const char *fmt, va_list ap) {
  if (p->failed)
    return;
  p->failed = true;
  p->fail_line = line;
  if (!p->err || p->errlen == 0)
    return;
  int n;
  if (line > 0)
    n = snprintf(p->err, p->errlen, "%s:%u: ", file, line);
  else
    n = snprintf(p->err, p->errlen, "%s: ", file);
  if (n < 0 || (size_t)n >= p->errlen)
    return;
  if (section && key) {
    int m =
        snprintf(p->err + n, p->errlen - (size_t)n, "[%s] %s: ", section, key);
    if (m < 0 || (size_t)(n + m) >= p->errlen)
      return;
    n += m;
  }
  vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
  /* Keep the promise of exactly one line even if a value was odd. */
  for (char *c = p->err; *c; c++)
    if (*c == '\n' || *c == '\r')
      *c = ' ';
}

__attribute__((format(printf, 6, 7))) static void
fail_at(struct parse_ctx *p, const char *file, unsigned line,
        const char *section, const char *key, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_v(p, file, line, section, key, fmt, ap);
  va_end(ap);
}

/* Error about a known key at the place it was set (or the main file). */
__attribute__((format(printf, 3, 4))) static void
fail_key(struct parse_ctx *p, enum key_id k, const char *fmt, ...) {
  const struct setting *s = &p->set[k];
  va_list ap;
  va_start(ap, fmt);
  fail_v(p, s->set ? s->file : p->main_file, s->set ? s->line : 0,
         keydefs[k].section, keydefs[k].key, fmt, ap);
  va_end(ap);
}

/* Error about a key on the line being parsed right now. */
__attribute__((format(printf, 3, 4))) static void
fail_here(struct parse_ctx *p, enum key_id k, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_v(p, p->file, p->line, keydefs[k].section, keydefs[k].key, fmt, ap);
  va_end(ap);
}

static const char *intern_file(struct parse_ctx *p, const char *name) {
  char **n = realloc(p->files, (p->nfiles + 1) * sizeof *n);
  if (!n)
    return NULL;
  p->files = n;
  char *d = strdup(name);
  if (!d)
    return NULL;
  p->files[p->nfiles++] = d;
  return d;
}

/* Absolute directory holding `path` (relative paths are taken against the
 * cwd now, so a later chdir of the daemon does not change their meaning). */
static char *abs_dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (!slash)
    dir = strdup(".");
  else if (slash == path)
    dir = strdup("/");
  else
    dir = strndup(path, (size_t)(slash - path));
  if (!dir || dir[0] == '/')
    return dir;
  char *cwd = getcwd(NULL, 0);
  if (!cwd) {
    free(dir);
    return NULL;
  }
  char *out = NULL;
  if (strcmp(dir, ".") == 0)
    out = strdup(cwd);
  else if (asprintf(&out, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, dir) < 0)
    out = NULL;
  free(cwd);
  free(dir);
  return out;
}

static char *resolve_path(const char *dir, const char *value) {
  if (value[0] == '/')
    return strdup(value);
  char *out;
  if (asprintf(&out, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, value) < 0)
    return NULL;
  return out;
}

/* ---- public value parsers -------------------------------------------------
 */

int config_parse_bool(const char *s, bool *out) {
  return cfgbool_parse(s, out);
}

/* The number parsers tell the key's error message which of the two went
 * wrong; both are C8Y_EINVAL to anyone outside this file. */
enum num_parse { NUM_OK = 0, NUM_SYNTAX, NUM_RANGE };

static enum num_parse parse_int_detail(const char *s, long long min,
                                       long long max, long long *out) {
  if (!s || !*s || isspace((unsigned char)*s))
    return NUM_SYNTAX;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end != '\0')
    return NUM_SYNTAX;
  if (errno == ERANGE || v < min || v > max)
    return NUM_RANGE;
  *out = v;
  return NUM_OK;
}

int config_parse_int(const char *s, long long min, long long max,
                     long long *out) {
  long long v;
  if (!out || parse_int_detail(s, min, max, &v) != NUM_OK)
    return C8Y_EINVAL;
  *out = v;
  return 0;
}

/* Bytes with an optional binary suffix K/M/G (KiB, MiB, GiB). */
static enum num_parse parse_size(const char *s, long long min, long long max,
                                 long long *out) {
  if (!s || !isdigit((unsigned char)*s))
    return NUM_SYNTAX;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno == ERANGE)
    return NUM_RANGE;
  unsigned shift = 0;
  if (*end) {
    switch (toupper((unsigned char)*end)) {
    case 'K':
      shift = 10;
      break;
    case 'M':
      shift = 20;
      break;
    case 'G':
      shift = 30;
      break;
    default:
      return NUM_SYNTAX;
    }
    end++;
    if (*end == 'i' && end[1] == 'B')
      end += 2;
    else if (*end == 'B')
      end++;
    if (*end)
      return NUM_SYNTAX;
  }
  if (v > ((unsigned long long)LLONG_MAX >> shift))
    return NUM_RANGE;
  long long r = (long long)(v << shift);
  if (r < min || r > max)
    return NUM_RANGE;
  *out = r;
  return NUM_OK;
}

/* ---- the inih callbacks ------------------------------------------------- */

/* Feeds inih one line at a time so we know the line number (Debian builds
 * inih without INI_HANDLER_LINENO), refuse lines inih would silently split,
 * and drop indentation (inih would otherwise treat an indented line as a
 * continuation of the previous value). */
static char *cfg_reader(char *str, int num, void *stream) {
  struct parse_ctx *p = stream;
  if (p->failed || num < 2)
    return NULL;
  errno = 0;
  ssize_t n = getline(&p->linebuf, &p->linecap, p->fp);
  if (n < 0) {
    if (ferror(p->fp))
      fail_at(p, p->file, 0, NULL, NULL, "read error: %s",
              strerror(errno ? errno : EIO));
    return NULL;
  }
  p->line++;
  char *buf = p->linebuf;
  size_t len = (size_t)n;
  if (len > 0 && buf[len - 1] == '\n')
    buf[--len] = '\0';
  if (len > 0 && buf[len - 1] == '\r')
    buf[--len] = '\0';
  if (memchr(buf, '\0', len)) {
    fail_at(p, p->file, p->line, NULL, NULL, "NUL byte in line");
    return NULL;
  }
  if (len > (size_t)num - 1) {
    fail_at(p, p->file, p->line, NULL, NULL, "line longer than %d characters",
            num - 1);
    return NULL;
  }
  const char *s = buf;
  while (*s && isspace((unsigned char)*s))
    s++;
  if (*s == '[') {
    const char *close = strchr(s, ']');
    if (close && (size_t)(close - s - 1) > CFG_MAX_SECTION) {
      fail_at(p, p->file, p->line, NULL, NULL,
              "section name longer than %d characters", CFG_MAX_SECTION);
      return NULL;
    }
  }
  memcpy(str, s, strlen(s) + 1);
  return str;
}

/* The service account the package runs the agent as. */
#ifndef C8Y_SERVICE_USER
#define C8Y_SERVICE_USER "c8y-agent"
#endif

/* Whoever owns a secret file can rewrite it (or chmod it readable): a
 * trusted writer (trust.h: root, the user running now, or the package's
 * service account; the docs have the administrator give it the password
 * file; root checks the configuration with --check-config and `connect
 * --test`). */
static bool secret_owner_ok(const struct stat *st) {
  return trust_uid(st->st_uid);
}

static int check_password_file_mode(struct parse_ctx *p, enum key_id key,
                                    const char *path, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    fail_key(p, key, "cannot stat %s: %s", path, strerror(errno));
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    fail_key(p, key, "%s is not a regular file", path);
    return -1;
  }
  if (st.st_mode & 077) {
    fail_key(p, key, "%s is readable by others (mode %03o); run chmod 600 %s",
             path, (unsigned)(st.st_mode & 0777), path);
    return -1;
  }
  if (!secret_owner_ok(&st)) {
    fail_key(p, C_PASSWORD_FILE,
             "%s is owned by uid %u; a secret must be owned by root or the "
             "agent's user (" C8Y_SERVICE_USER " or uid %u)",
             path, (unsigned)st.st_uid, (unsigned)geteuid());
    return -1;
  }
  return 0;
}

static int add_plugin_entry(struct parse_ctx *p, const char *section,
                            const char *key, const char *value) {
  agent_config *c = p->cfg;
  for (size_t i = 0; i < c->nentries; i++) {
    config_entry *e = &c->entries[i];
    if (strcmp(e->section, section) == 0 && strcmp(e->key, key) == 0) {
      char *v = strdup(value);
      char *f = strdup(p->file);
      if (!v || !f) {
        free(v);
        free(f);
        return -1;
      }
      free(e->value);
      free(e->file);
      e->value = v;
      e->file = f;
      e->line = p->line;
      return 0;
    }
  }
  config_entry *n = realloc(c->entries, (c->nentries + 1) * sizeof *n);
  if (!n)
    return -1;
  c->entries = n;
  config_entry *e = &c->entries[c->nentries];
  memset(e, 0, sizeof *e);
  e->section = strdup(section);
  e->key = strdup(key);
  e->value = strdup(value);
  e->file = strdup(p->file);
  e->line = p->line;
  if (!e->section || !e->key || !e->value || !e->file) {
    free(e->section);
    free(e->key);
    free(e->value);
    free(e->file);
    memset(e, 0, sizeof *e);
    return -1;
  }
  c->nentries++;
  return 0;
}

static bool has_ctrl(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return true;
  return false;
}

/* Validates one assignment of a known key; 0 or -1 (error already set). */
static int store_setting(struct parse_ctx *p, enum key_id k,
                         const char *value) {
  const struct keydef *d = &keydefs[k];
  struct setting tmp = {.set = true, .file = p->file, .line = p->line};
  long long v;
  enum num_parse np;
  int rc;
  bool b;
  const char *why;

  if ((d->kind == K_DEVID || d->kind == K_XID) && has_ctrl(value)) {
    fail_here(p, k, "must not contain control characters");
    return -1;
  }
  switch (d->kind) {
  case K_BOOL:
    if (config_parse_bool(value, &b) != 0) {
      fail_here(p, k,
                "'%s' is not a boolean (use true/false, yes/no, on/off, 1/0)",
                value);
      return -1;
    }
    tmp.num = b;
    break;
  case K_INT:
    np = parse_int_detail(value, d->min, d->max, &v);
    if (np == NUM_SYNTAX) {
      fail_here(p, k, "'%s' is not an integer", value);
      return -1;
    }
    if (np == NUM_RANGE) {
      fail_here(p, k, "%s is out of range (%lld..%lld)", value, d->min, d->max);
      return -1;
    }
    tmp.num = v;
    break;
  case K_SIZE:
    np = parse_size(value, d->min, d->max, &v);
    if (np == NUM_SYNTAX) {
      fail_here(p, k,
                "'%s' is not a size (bytes, optionally with suffix K, M or G)",
                value);
      return -1;
    }
    if (np == NUM_RANGE) {
      fail_here(p, k, "%s is out of range (1K..64G bytes)", value);
      return -1;
    }
    tmp.num = v;
    break;
  case K_LEVEL:
    rc = log_level_from_name(value);
    if (rc < 0) {
      fail_here(p, k,
                "unknown level '%s' (use error, warning, notice, info, debug)",
                value);
      return -1;
    }
    tmp.num = rc;
    break;
  case K_DEVID:
    if (!*value) {
      fail_here(p, k, "must not be empty");
      return -1;
    }
    if (strchr(value, ':')) {
      fail_here(p, k,
                "'%s' must not contain ':' (the MQTT clientId uses ':' as "
                "separator)",
                value);
      return -1;
    }
    if ((why = ident_check(value, true)) != NULL) {
      fail_here(p, k, "not a usable device id: it %s", why);
      return -1;
    }
    break;
  case K_XID:
    if (strpbrk(value, ":/+#")) {
      fail_here(p, k,
                "'%s' must not contain ':', '/', '+' or '#' (it is part of the "
                "clientId and of MQTT topics)",
                value);
      return -1;
    }
    /* Also a topic segment (s/uc/<X-ID>): the same rule as an id. */
    if (*value && (why = ident_check(value, true)) != NULL) {
      fail_here(p, k, "not a usable template id: it %s", why);
      return -1;
    }
    break;
  case K_TENANT:
    if (strchr(value, '/')) {
      fail_here(p, k,
                "'%s' must not contain '/' (the MQTT username is "
                "<tenant>/<user>)",
                value);
      return -1;
    }
    break;
  case K_HOST:
    for (const char *c = value; *c; c++)
      if (isspace((unsigned char)*c) || (unsigned char)*c < 0x20) {
        fail_here(p, k, "'%s' must not contain whitespace", value);
        return -1;
      }
    break;
  case K_SECRET:
    /* The file that holds the secret must be private too. */
    if (*value && p->perm_checked == 0) {
      struct stat st;
      if (fstat(fileno(p->fp), &st) == 0 && (st.st_mode & 077)) {
        fail_here(p, k,
                  "%s is readable by others (mode %03o) and holds a password; "
                  "run chmod 600 %s",
                  p->file, (unsigned)(st.st_mode & 0777), p->file);
        return -1;
      }
      if (fstat(fileno(p->fp), &st) == 0 && !secret_owner_ok(&st)) {
        fail_here(p, k,
                  "%s holds a password and is owned by uid %u; it must be "
                  "owned by root or the agent's user (" C8Y_SERVICE_USER
                  " or uid %u)",
                  p->file, (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
      }
      p->perm_checked = 1;
    }
    break;
  case K_STR:
  case K_PATH:
    break;
  }

  switch (d->kind) {
  case K_BOOL:
  case K_INT:
  case K_SIZE:
  case K_LEVEL:
    break;
  case K_PATH:
    if (*value) {
      tmp.str = resolve_path(p->dir, value);
      if (!tmp.str)
        goto oom;
    }
    break;
  default:
    /* An empty value unsets an optional key (e.g. in a conf.d drop-in);
     * the device id is the exception and was refused above. */
    if (*value) {
      tmp.str = strdup(value);
      if (!tmp.str)
        goto oom;
    }
    break;
  }
  if (!tmp.str &&
      (d->kind == K_STR || d->kind == K_SECRET || d->kind == K_PATH ||
       d->kind == K_TENANT || d->kind == K_HOST || d->kind == K_XID))
    tmp.set = false;
  if (k == C_PASSWORD || k == C_BS_PASSWORD)
    wipe_free(p->set[k].str);
  else
    free(p->set[k].str);
  p->set[k] = tmp;
  return 0;
oom:
  fail_here(p, k, "out of memory");
  return -1;
}

static int cfg_handler(void *user, const char *section, const char *name,
                       const char *value) {
  struct parse_ctx *p = user;
  if (p->failed)
    return 0;
  if (strncmp(section, CFG_PLUGIN_PREFIX, strlen(CFG_PLUGIN_PREFIX)) == 0) {
    const char *plugin = section + strlen(CFG_PLUGIN_PREFIX);
    if (!ident_plugin_name_ok(plugin)) {
      fail_at(p, p->file, p->line, section, name,
              "invalid plugin name '%s' (must match [a-z0-9_]{1,32})", plugin);
      return 0;
    }
    if (add_plugin_entry(p, section, name, value) != 0) {
      fail_at(p, p->file, p->line, section, name, "out of memory");
      return 0;
    }
    return 1;
  }
  if (!*section) {
    fail_at(p, p->file, p->line, section, name,
            "key outside any section (start with [c8y], [device], [agent] "
            "or [plugin.<name>])");
    return 0;
  }
  bool known_section = false;
  for (int k = 0; k < NKEYS; k++) {
    if (strcmp(keydefs[k].section, section) != 0)
      continue;
    known_section = true;
    if (strcmp(keydefs[k].key, name) == 0)
      return store_setting(p, (enum key_id)k, value) == 0;
  }
  if (known_section)
    fail_at(p, p->file, p->line, section, name, "unknown key");
  else
    fail_at(p, p->file, p->line, section, name,
            "unknown section [%s] (known: [c8y], [device], [agent], [api], "
            "[plugin.<name>])",
            section);
  return 0;
}

/* Parses one file; 0 or -1 (error set). A missing file is an error. */
static int parse_file(struct parse_ctx *p, const char *display,
                      const char *dir) {
  const char *file = intern_file(p, display);
  if (!file) {
    fail_at(p, display, 0, NULL, NULL, "out of memory");
    return -1;
  }
  FILE *fp = fopen(display, "re");
  if (!fp) {
    fail_at(p, display, 0, NULL, NULL, "cannot open: %s", strerror(errno));
    return -1;
  }
  p->fp = fp;
  p->file = file;
  p->dir = dir;
  p->line = 0;
  p->perm_checked = 0;
  int rc = ini_parse_stream(cfg_reader, p, cfg_handler, p);
  fclose(fp);
  p->fp = NULL;
  /* The line buffer may have held a password. */
  if (p->linebuf)
    explicit_bzero(p->linebuf, p->linecap);
  if (rc > 0 && (!p->failed || (unsigned)rc < p->fail_line)) {
    /* inih found a malformed line before any error of ours. */
    p->failed = false;
    fail_at(p, file, (unsigned)rc, NULL, NULL, "syntax error");
    return -1;
  }
  if (p->failed)
    return -1;
  if (rc < 0) {
    fail_at(p, file, 0, NULL, NULL, "cannot parse (error %d)", rc);
    return -1;
  }
  return 0;
}

static int ini_name_filter(const struct dirent *d) {
  size_t n = strlen(d->d_name);
  return d->d_name[0] != '.' && n > 4 && strcmp(d->d_name + n - 4, ".ini") == 0;
}

/* Byte order, not the locale's collation: the order must not depend on the
 * environment the daemon happens to run in. */
static int name_cmp(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

static int parse_confd(struct parse_ctx *p, const char *main_path,
                       const char *main_absdir) {
  const char *slash = strrchr(main_path, '/');
  char *disp_dir = NULL, *abs_dir = NULL;
  int rc = -1;
  if (slash) {
    if (asprintf(&disp_dir, "%.*s/conf.d", (int)(slash - main_path),
                 main_path) < 0)
      disp_dir = NULL;
  } else {
    disp_dir = strdup("conf.d");
  }
  if (asprintf(&abs_dir, "%s/conf.d",
               strcmp(main_absdir, "/") == 0 ? "" : main_absdir) < 0)
    abs_dir = NULL;
  if (!disp_dir || !abs_dir) {
    fail_at(p, main_path, 0, NULL, NULL, "out of memory");
    goto out;
  }
  struct dirent **names = NULL;
  int n = scandir(abs_dir, &names, ini_name_filter, name_cmp);
  if (n < 0) {
    if (errno == ENOENT)
      rc = 0;
    else
      fail_at(p, disp_dir, 0, NULL, NULL, "cannot read directory: %s",
              strerror(errno));
    goto out;
  }
  rc = 0;
  for (int i = 0; i < n; i++) {
    if (rc == 0) {
      char *full = NULL;
      struct stat st;
      if (asprintf(&full, "%s/%s", disp_dir, names[i]->d_name) < 0) {
        fail_at(p, disp_dir, 0, NULL, NULL, "out of memory");
        rc = -1;
      } else if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
        /* a directory named *.ini is not a drop-in */
      } else if (parse_file(p, full, abs_dir) != 0) {
        rc = -1;
      }
      free(full);
    }
    free(names[i]);
  }
  free(names);
out:
  free(disp_dir);
  free(abs_dir);
  return rc;
}

/* ---- building the result --------------------------------------------------
 */

static int take_str(struct parse_ctx *p, enum key_id k, char **dst,
                    const char *fallback) {
  if (p->set[k].set && p->set[k].str) {
    *dst = p->set[k].str;
    p->set[k].str = NULL;
    return 0;
  }
  if (!fallback) {
    *dst = NULL;
    return 0;
  }
  *dst = strdup(fallback);
  return *dst ? 0 : -1;
}

/* The plugin directory of the installation this binary belongs to:
 * <dir of the executable>/C8Y_PLUGINDIR_FROM_BINDIR when that exists (an
 * install with `cmake --install --prefix P` finds P's plugins), else the
 * directory compiled in. */
static const char *default_plugindir(char *buf, size_t n) {
#ifdef C8Y_PLUGINDIR_FROM_BINDIR
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  struct stat st;
  if (len > 0) {
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      char dir[PATH_MAX];
      if (snprintf(dir, sizeof(dir), "%s/%s", exe, C8Y_PLUGINDIR_FROM_BINDIR) <
              (int)sizeof(dir) &&
          n >= PATH_MAX && realpath(dir, buf) && stat(buf, &st) == 0 &&
          S_ISDIR(st.st_mode))
        return buf;
    }
  }
#endif
  (void)buf;
  (void)n;
  return C8Y_DEFAULT_PLUGINDIR;
}

static long long num_or(const struct parse_ctx *p, enum key_id k,
                        long long fallback) {
  return p->set[k].set ? p->set[k].num : fallback;
}

/* First line of the password file, which must be private. */
static int read_password_file(struct parse_ctx *p, enum key_id key,
                              const char *path, char **out) {
  FILE *fp = fopen(path, "re");
  if (!fp) {
    fail_key(p, key, "cannot open %s: %s", path, strerror(errno));
    return -1;
  }
  if (check_password_file_mode(p, key, path, fileno(fp)) != 0) {
    fclose(fp);
    return -1;
  }
  char *line = NULL;
  size_t cap = 0;
  errno = 0;
  ssize_t n = getline(&line, &cap, fp);
  int err = errno;
  bool bad_read = n < 0 && ferror(fp);
  fclose(fp);
  if (n < 0)
    n = 0;
  size_t len = (size_t)n;
  if (len > 0 && line[len - 1] == '\n')
    line[--len] = '\0';
  if (len > 0 && line[len - 1] == '\r')
    line[--len] = '\0';
  if (bad_read || len == 0 || memchr(line, '\0', len)) {
    if (line)
      explicit_bzero(line, cap);
    free(line);
    if (bad_read)
      fail_key(p, key, "cannot read %s: %s", path, strerror(err ? err : EIO));
    else if (len == 0)
      fail_key(p, key, "%s is empty (its first line must hold the password)",
               path);
    else
      fail_key(p, key, "%s contains a NUL byte", path);
    return -1;
  }
  *out = strdup(line);
  explicit_bzero(line, cap);
  free(line);
  if (!*out) {
    fail_key(p, key, "out of memory");
    return -1;
  }
  return 0;
}

/* Host part of "http[s]://host[:port][/...]" is loopback. */
static bool url_is_loopback(const char *rest) {
  size_t n = strcspn(rest, ":/?#");
  if (rest[0] == '[')
    return strncmp(rest, "[::1]", 5) == 0;
  return (n == 9 && strncasecmp(rest, "localhost", 9) == 0) ||
         strncmp(rest, "127.", 4) == 0;
}

/* [c8y] http_url and http_auth: where and how the REST calls go. */
static int finalize_http(struct parse_ctx *p) {
  agent_config *c = p->cfg;
  struct setting *s = p->set;
  if (s[C_HTTP_URL].set) {
    const char *u = s[C_HTTP_URL].str;
    bool https = strncmp(u, "https://", 8) == 0;
    const char *rest = u + (https ? 8 : 7);
    if (!https && strncmp(u, "http://", 7) != 0) {
      fail_key(p, C_HTTP_URL,
               "'%s' must start with https:// (or http:// for "
               "a loopback test server)",
               u);
      return -1;
    }
    if (!*rest || *rest == '/' || *rest == ':') {
      fail_key(p, C_HTTP_URL, "'%s' has no host", u);
      return -1;
    }
    if (!https && !url_is_loopback(rest)) {
      fail_key(p, C_HTTP_URL,
               "'%s': plain http:// is only allowed against loopback "
               "(the device's credentials would travel unencrypted)",
               u);
      return -1;
    }
    if (!https)
      log_warning("%s:%u: [c8y] http_url: %s is plain http (loopback test "
                  "server only)",
                  s[C_HTTP_URL].file, s[C_HTTP_URL].line, u);
    if (take_str(p, C_HTTP_URL, &c->http_url, NULL))
      goto oom;
    size_t n = strlen(c->http_url);
    while (n > 0 && c->http_url[n - 1] == '/')
      c->http_url[--n] = '\0';
  } else if (c->local_sim) {
    if (!(c->http_url = strdup(CFG_LOCAL_HTTP_URL)))
      goto oom;
  } else if (asprintf(&c->http_url, "https://%s", c->host) < 0) {
    c->http_url = NULL;
    goto oom;
  }
  c->http_jwt = c->cert_file != NULL;
  if (s[C_HTTP_AUTH].set) {
    const char *a = s[C_HTTP_AUTH].str;
    if (strcmp(a, "jwt") == 0) {
      c->http_jwt = true;
    } else if (strcmp(a, "basic") == 0 && c->password) {
      c->http_jwt = false;
    } else if (strcmp(a, "basic") == 0) {
      fail_key(p, C_HTTP_AUTH,
               "basic needs a password (certificate devices use jwt)");
      return -1;
    } else {
      fail_key(p, C_HTTP_AUTH, "'%s' is not basic or jwt", a);
      return -1;
    }
  }
  return 0;
oom:
  fail_key(p, C_HTTP_URL, "out of memory");
  return -1;
}

/* [api]: the local socket. Its default lives under the runtime dir, or in
 * the state dir for the local simulator (no runtime dir is set up then). */
static int finalize_api(struct parse_ctx *p) {
  agent_config *c = p->cfg;
  struct setting *s = p->set;
  c->api_enabled = num_or(p, API_ENABLED, true);
  if (s[API_SOCKET].set) {
    c->api_socket = s[API_SOCKET].str;
    s[API_SOCKET].str = NULL;
  } else if (asprintf(&c->api_socket, "%s/api.sock",
                      c->local_sim ? c->state_dir : C8Y_DEFAULT_RUNDIR) < 0) {
    c->api_socket = NULL;
    fail_at(p, p->main_file, 0, NULL, NULL, "out of memory");
    return -1;
  }
  if (!s[API_SOCKET].set && !c->local_sim &&
      asprintf(&c->api_socket_alt, "%s/api.sock", c->state_dir) < 0) {
    c->api_socket_alt = NULL;
    fail_at(p, p->main_file, 0, NULL, NULL, "out of memory");
    return -1;
  }
  if (c->api_socket_alt && strlen(c->api_socket_alt) >= CFG_API_SOCKET_MAX) {
    free(c->api_socket_alt); /* the state dir is deep: no fallback then */
    c->api_socket_alt = NULL;
  }
  if (strlen(c->api_socket) >= CFG_API_SOCKET_MAX) {
    enum key_id k = s[API_SOCKET].set ? API_SOCKET : A_STATEDIR;
    fail_key(p, k,
             "socket path %s is %zu bytes long; a Unix socket path must be "
             "shorter than %d",
             c->api_socket, strlen(c->api_socket), CFG_API_SOCKET_MAX);
    return -1;
  }
  c->api_mode = 0660;
  if (s[API_MODE].set) {
    const char *m = s[API_MODE].str;
    char *end = NULL;
    long v = strtol(m, &end, 8);
    if (!*m || *end || v < 0 || v > 0777 ||
        strspn(m, "01234567") != strlen(m)) {
      fail_key(p, API_MODE, "'%s' is not an octal file mode (e.g. 0660)", m);
      return -1;
    }
    /* Peers are checked by credentials anyway; this is a second fence. */
    if (v & 0007)
      log_warning("%s:%u: [api] mode: %s lets every local user connect (the "
                  "agent still refuses those not admitted); prefer a group",
                  s[API_MODE].file, s[API_MODE].line, m);
    c->api_mode = (unsigned)v;
  }
  c->api_gid = -1;
  if (s[API_GROUP].set) {
    struct group gr, *res = NULL;
    char buf[4096];
    int e = getgrnam_r(s[API_GROUP].str, &gr, buf, sizeof buf, &res);
    if (!res) {
      fail_key(p, API_GROUP, "no such group '%s'%s%s", s[API_GROUP].str,
               e ? ": " : "", e ? strerror(e) : "");
      return -1;
    }
    c->api_gid = (long long)gr.gr_gid;
    c->api_group = s[API_GROUP].str;
    s[API_GROUP].str = NULL;
  }
  return 0;
}

/* Bootstrap keys: the bootstrap password has no default (Cumulocity hands
 * it out on request), so bootstrap = true without one is an error. */
static int bootstrap_settings(struct parse_ctx *p) {
  agent_config *c = p->cfg;
  struct setting *s = p->set;
  c->cert_warn_days = (int)num_or(p, C_CERT_WARN, 30);
  if (s[C_BS_PASSWORD].set && s[C_BS_PASSWORD_FILE].set) {
    fail_key(p, C_BS_PASSWORD_FILE,
             "cannot be combined with bootstrap_password (set at %s:%u); "
             "keep one",
             s[C_BS_PASSWORD].file, s[C_BS_PASSWORD].line);
    return -1;
  }
  if (take_str(p, C_BS_USER, &c->bootstrap_user, CFG_BOOTSTRAP_USER))
    goto oom;
  if (!strchr(c->bootstrap_user, '/')) {
    fail_key(p, C_BS_USER, "'%s' must be <tenant>/<user>", c->bootstrap_user);
    return -1;
  }
  if (s[C_BS_PASSWORD_FILE].set)
    return read_password_file(p, C_BS_PASSWORD_FILE, s[C_BS_PASSWORD_FILE].str,
                              &c->bootstrap_password);
  if (s[C_BS_PASSWORD].set) {
    c->bootstrap_password = s[C_BS_PASSWORD].str;
    s[C_BS_PASSWORD].str = NULL;
  } else if (c->bootstrap && !s[C_TENANT].set && !s[C_CERT].set) {
    fail_at(p, s[C_BOOTSTRAP].file, s[C_BOOTSTRAP].line, "c8y",
            "bootstrap_password",
            "required when bootstrap is true (ask Cumulocity support for the "
            "password of %s; or set bootstrap_password_file)",
            c->bootstrap_user);
    return -1;
  }
  return 0;
oom:
  fail_at(p, p->main_file, 0, NULL, NULL, "out of memory");
  return -1;
}

/* Certificate authority keys. The one-time password file is removed once
 * the certificate is enrolled, so a missing file means "nothing to enroll
 * with", not an error. */
static int enroll_settings(struct parse_ctx *p) {
  agent_config *c = p->cfg;
  struct setting *s = p->set;
  if (s[C_ENROLL_OTP].set && s[C_ENROLL_OTP_FILE].set) {
    fail_key(p, C_ENROLL_OTP_FILE,
             "cannot be combined with enroll_otp (set at %s:%u); keep one",
             s[C_ENROLL_OTP].file, s[C_ENROLL_OTP].line);
    return -1;
  }
  if ((s[C_ENROLL_OTP].set || s[C_ENROLL_OTP_FILE].set) && !s[C_CERT].set) {
    enum key_id k = s[C_ENROLL_OTP].set ? C_ENROLL_OTP : C_ENROLL_OTP_FILE;
    fail_key(p, k,
             "needs cert_file and key_file (where the enrolled certificate "
             "and its key are stored)");
    return -1;
  }
  if ((s[C_ENROLL_OTP].set || s[C_ENROLL_OTP_FILE].set) && !s[D_ID].set) {
    enum key_id k = s[C_ENROLL_OTP].set ? C_ENROLL_OTP : C_ENROLL_OTP_FILE;
    fail_key(p, k,
             "needs [device] id (the CN of the certificate to enroll, as "
             "registered in Cumulocity)");
    return -1;
  }
  if (s[C_ENROLL_OTP_FILE].set) {
    const char *path = s[C_ENROLL_OTP_FILE].str;
    if (access(path, F_OK) == 0 &&
        read_password_file(p, C_ENROLL_OTP_FILE, path, &c->enroll_otp) != 0)
      return -1;
    c->enroll_otp_file = s[C_ENROLL_OTP_FILE].str;
    s[C_ENROLL_OTP_FILE].str = NULL;
  } else if (s[C_ENROLL_OTP].set) {
    c->enroll_otp = s[C_ENROLL_OTP].str;
    s[C_ENROLL_OTP].str = NULL;
  }
  if (s[C_KEY_TYPE].set) {
    static const char *const types[] = {"ec-p256", "rsa-2048", "rsa-3072",
                                        "rsa-4096"};
    bool known = false;
    for (size_t i = 0; i < sizeof types / sizeof *types && !known; i++)
      known = strcmp(s[C_KEY_TYPE].str, types[i]) == 0;
    if (!known) {
      fail_key(p, C_KEY_TYPE,
               "'%s' is not ec-p256, rsa-2048, rsa-3072 or rsa-4096",
               s[C_KEY_TYPE].str);
      return -1;
    }
  }
  if (take_str(p, C_KEY_TYPE, &c->cert_key_type, NULL))
    goto oom;
  if (s[C_ENROLL_URL].set) {
    if (strncmp(s[C_ENROLL_URL].str, "https://", 8) != 0) {
      fail_key(p, C_ENROLL_URL,
               "'%s' must start with https:// (the one-time password and "
               "the device's identity travel with it)",
               s[C_ENROLL_URL].str);
      return -1;
    }
    if (take_str(p, C_ENROLL_URL, &c->enroll_url, NULL))
      goto oom;
    size_t n = strlen(c->enroll_url);
    while (n > 0 && c->enroll_url[n - 1] == '/')
      c->enroll_url[--n] = '\0';
  } else if (c->http_url && strncmp(c->http_url, "https://", 8) == 0 &&
             !(c->enroll_url = strdup(c->http_url))) {
    goto oom;
  }
  c->cert_renew_percent = (int)num_or(p, C_RENEW_PERCENT, 67);
  return 0;
oom:
  fail_at(p, p->main_file, 0, NULL, NULL, "out of memory");
  return -1;
}

static bool is_loopback(const char *host) {
  unsigned char a[16];
  if (strcasecmp(host, "localhost") == 0)
    return true;
  if (inet_pton(AF_INET, host, a) == 1)
    return a[0] == 127;
  if (inet_pton(AF_INET6, host, a) == 1)
    return IN6_IS_ADDR_LOOPBACK((struct in6_addr *)a);
  return false;
}

static int finalize(struct parse_ctx *p) {
  agent_config *c = p->cfg;
  struct setting *s = p->set;

  c->bootstrap = num_or(p, C_BOOTSTRAP, false);
  c->local_sim = !s[C_TENANT].set && !s[C_CERT].set && !c->bootstrap;
  const char *why = s[C_TENANT].set ? "required when tenant is set"
                    : s[C_CERT].set ? "required when cert_file is set"
                                    : "required when bootstrap is true";

  /* Credential consistency first: it is what people get wrong. */
  if (s[C_PASSWORD].set && s[C_PASSWORD_FILE].set) {
    fail_key(p, C_PASSWORD_FILE,
             "cannot be combined with password (set at %s:%u); keep one",
             s[C_PASSWORD].file, s[C_PASSWORD].line);
    return -1;
  }
  if (s[C_TENANT].set && !s[C_USER].set) {
    fail_at(p, p->main_file, 0, "c8y", "user", "required when tenant is set");
    return -1;
  }
  if (!c->local_sim && !s[C_TENANT].set && s[C_USER].set) {
    fail_key(p, C_USER, "set, but tenant is not (username is <tenant>/<user>)");
    return -1;
  }
  if (s[C_CERT].set && !s[C_KEY].set) {
    fail_at(p, s[C_CERT].file, s[C_CERT].line, "c8y", "key_file",
            "required when cert_file is set");
    return -1;
  }
  if (s[C_KEY].set && !s[C_CERT].set) {
    fail_at(p, s[C_KEY].file, s[C_KEY].line, "c8y", "cert_file",
            "required when key_file is set");
    return -1;
  }

  c->tls = num_or(p, C_TLS, !c->local_sim);
  if (s[C_CERT].set && !c->tls) {
    fail_key(p, C_TLS, "must be true when cert_file is set");
    return -1;
  }
  c->verify_hostname = num_or(p, C_VERIFY, true);
  /* A password sent without TLS can be read by anyone on the path; only a
   * broker on this machine (a local bridge, tests) is exempt. */
  if (!c->local_sim && !c->tls && !s[C_CERT].set &&
      (s[C_PASSWORD].set || s[C_PASSWORD_FILE].set) && s[C_HOST].set &&
      !is_loopback(s[C_HOST].str) && !num_or(p, C_ALLOW_PLAIN, false)) {
    fail_key(p, C_TLS,
             "false would send the password in clear text to %s; enable TLS, "
             "or set [c8y] allow_plaintext = true if the path is trusted",
             s[C_HOST].str);
    return -1;
  }

  char *pw = NULL;
  if (s[C_PASSWORD_FILE].set &&
      read_password_file(p, C_PASSWORD_FILE, s[C_PASSWORD_FILE].str, &pw) != 0)
    return -1;
  if (s[C_PASSWORD].set) {
    pw = s[C_PASSWORD].str;
    s[C_PASSWORD].str = NULL;
  }
  c->password = pw;
  if (bootstrap_settings(p) != 0)
    return -1;

  if (c->local_sim) {
    if (take_str(p, C_TENANT, &c->tenant, CFG_LOCAL_TENANT) ||
        take_str(p, C_USER, &c->user, CFG_LOCAL_USER) ||
        take_str(p, C_HOST, &c->host, CFG_LOCAL_HOST))
      goto oom;
    if (!c->password && !(c->password = strdup(CFG_LOCAL_PASSWORD)))
      goto oom;
    c->port = (int)num_or(p, C_PORT, CFG_LOCAL_PORT);
  } else {
    if (!s[C_HOST].set) {
      fail_at(p, p->main_file, 0, "c8y", "host", "%s", why);
      return -1;
    }
    if (s[C_TENANT].set && !s[C_CERT].set && !c->password) {
      fail_at(p, p->main_file, 0, "c8y", "password",
              "required when tenant is set without cert_file (set password "
              "or password_file)");
      return -1;
    }
    if (take_str(p, C_TENANT, &c->tenant, NULL) ||
        take_str(p, C_USER, &c->user, NULL) ||
        take_str(p, C_HOST, &c->host, NULL))
      goto oom;
    c->port = (int)num_or(p, C_PORT, c->tls ? 8883 : 1883);
  }

  if (take_str(p, C_PASSWORD_FILE, &c->password_file, NULL) ||
      take_str(p, C_CA, &c->ca_path, NULL) ||
      take_str(p, C_CERT, &c->cert_file, NULL) ||
      take_str(p, C_KEY, &c->key_file, NULL))
    goto oom;
  /* The private key is a secret too: whoever owns it controls it. */
  struct stat kst;
  if (c->key_file && stat(c->key_file, &kst) == 0) {
    if (!secret_owner_ok(&kst)) {
      fail_key(p, C_KEY,
               "%s is owned by uid %u; a secret must be owned by root or the "
               "agent's user (" C8Y_SERVICE_USER " or uid %u)",
               c->key_file, (unsigned)kst.st_uid, (unsigned)geteuid());
      return -1;
    }
    if (kst.st_mode & 077)
      log_warning("%s:%u: [c8y] key_file: %s is readable by others (mode "
                  "%03o); run chmod 600 %s",
                  s[C_KEY].file, s[C_KEY].line, c->key_file,
                  (unsigned)(kst.st_mode & 0777), c->key_file);
  }
  c->keepalive = (int)num_or(p, C_KEEPALIVE, 60);
  c->qos = (int)num_or(p, C_QOS, 1);
  c->reconnect_min_ms = (int)num_or(p, C_RMIN, 1000);
  c->reconnect_max_ms = (int)num_or(p, C_RMAX, 60000);
  if (c->reconnect_min_ms > c->reconnect_max_ms) {
    enum key_id k = s[C_RMAX].set ? C_RMAX : C_RMIN;
    fail_key(p, k,
             "reconnect_min_ms (%d) must not exceed reconnect_max_ms "
             "(%d)",
             c->reconnect_min_ms, c->reconnect_max_ms);
    return -1;
  }

  /* [device]: with a client certificate the CN is the identity Cumulocity
   * uses, so it is the natural default. */
  const char *id_default = CFG_LOCAL_DEVICE_ID;
  char cn[256];
  if (!s[D_ID].set && !c->local_sim) {
    if (!c->cert_file) {
      fail_at(p, p->main_file, 0, "device", "id", "%s", why);
      return -1;
    }
    char xerr[512];
    if (x509_subject_cn(c->cert_file, cn, sizeof cn, xerr, sizeof xerr) != 0) {
      fail_key(p, C_CERT, "%s", xerr);
      return -1;
    }
    const char *bad = ident_check(cn, true);
    if (bad) {
      fail_key(p, C_CERT,
               "the certificate CN cannot be a device id: it %s; set "
               "[device] id",
               bad);
      return -1;
    }
    id_default = cn;
  }
  if (take_str(p, D_ID, &c->device_id, id_default) ||
      take_str(p, D_XID, &c->template_id, NULL) ||
      take_str(p, D_TYPE, &c->device_type, "c8y_Linux") ||
      take_str(p, D_SERIAL, &c->hw_serial, NULL) ||
      take_str(p, D_MODEL, &c->hw_model, NULL) ||
      take_str(p, D_REVISION, &c->hw_revision, NULL))
    goto oom;
  if (s[D_NAME].set) {
    if (take_str(p, D_NAME, &c->device_name, NULL))
      goto oom;
  } else if (asprintf(&c->device_name, "c8y-agent %s", c->device_id) < 0) {
    c->device_name = NULL;
    goto oom;
  }
  c->required_interval = (int)num_or(p, D_INTERVAL, 60);

  /* [agent] */
  char plugindir[PATH_MAX];
  if (take_str(p, A_PLUGINDIR, &c->plugin_dir,
               default_plugindir(plugindir, sizeof(plugindir))) ||
      take_str(p, A_STATEDIR, &c->state_dir, C8Y_DEFAULT_STATEDIR))
    goto oom;
  c->log_level = (int)num_or(p, A_LOGLEVEL, LOG_LVL_INFO);
  c->op_timeout_s = (int)num_or(p, A_OPTIMEOUT, 600);
  c->stop_grace_ms = (int)num_or(p, A_STOPGRACE, 3000);
  c->queue_max_bytes = num_or(p, A_QUEUE, CFG_DEFAULT_QUEUE_BYTES);
  c->plugin_max_producers = (int)num_or(p, A_MAX_PRODUCERS, 64);
  c->plugin_max_lines_per_s = num_or(p, A_MAX_LINES, 1000);
  c->transfer_max_bytes = num_or(p, A_TRANSFER, CFG_DEFAULT_TRANSFER_BYTES);
  if (finalize_http(p) != 0 || finalize_api(p) != 0 || enroll_settings(p) != 0)
    return -1;

  /* Warnings only once the whole configuration is known to be valid. */
  if (c->qos == 2)
    log_warning("%s:%u: [c8y] qos: 2 is used for data and s/ds; some "
                "Cumulocity endpoints (the newer MQTT Service) refuse QoS 2",
                s[C_QOS].file, s[C_QOS].line);
  if (!c->verify_hostname)
    log_warning("%s:%u: [c8y] verify_hostname: false; the server's identity "
                "is NOT checked, anyone on the path can impersonate it. Use "
                "this for testing only",
                s[C_VERIFY].file, s[C_VERIFY].line);
  return 0;
oom:
  fail_at(p, p->main_file, 0, NULL, NULL, "out of memory");
  return -1;
}

/* ---- public API ------------------------------------------------------------
 */

int config_load(const char *path, agent_config *out, char *err, size_t errlen) {
  if (err && errlen)
    err[0] = '\0';
  if (!out) {
    if (err && errlen)
      snprintf(err, errlen, "config_load: no output structure");
    return C8Y_EINVAL;
  }
  memset(out, 0, sizeof *out);
  if (!path || !*path) {
    if (err && errlen)
      snprintf(err, errlen, "config_load: no configuration file given");
    return C8Y_EINVAL;
  }

  agent_config c;
  memset(&c, 0, sizeof c);
  struct parse_ctx p;
  memset(&p, 0, sizeof p);
  p.cfg = &c;
  p.err = err;
  p.errlen = errlen;
  p.main_file = path;

  int rc = C8Y_EINVAL;
  char *absdir = abs_dir_of(path);
  c.path = strdup(path);
  if (!absdir || !c.path) {
    fail_at(&p, path, 0, NULL, NULL, "cannot resolve directory: %s",
            strerror(errno ? errno : ENOMEM));
    goto out;
  }
  if (parse_file(&p, path, absdir) != 0 || parse_confd(&p, path, absdir) != 0)
    goto out;
  if (finalize(&p) != 0)
    goto out;
  c.origins = calloc(NKEYS, sizeof *c.origins);
  if (!c.origins) {
    fail_at(&p, path, 0, NULL, NULL, "out of memory");
    goto out;
  }
  for (int k = 0; k < NKEYS; k++) {
    if (p.set[k].set && p.set[k].file &&
        asprintf(&c.origins[k], "%s:%u", p.set[k].file, p.set[k].line) < 0) {
      c.origins[k] = NULL;
      fail_at(&p, path, 0, NULL, NULL, "out of memory");
      goto out;
    }
  }
  rc = 0;

out:
  for (int k = 0; k < NKEYS; k++) {
    if (k == C_PASSWORD || k == C_BS_PASSWORD)
      wipe_free(p.set[k].str);
    else
      free(p.set[k].str);
  }
  for (size_t i = 0; i < p.nfiles; i++)
    free(p.files[i]);
  free(p.files);
  free(p.linebuf);
  free(absdir);
  if (rc == 0)
    *out = c;
  else
    config_free(&c);
  return rc;
}

void config_free(agent_config *c) {
  if (!c)
    return;
  char **strs[] = {&c->http_url,    &c->path,          &c->tenant,
                   &c->user,        &c->password_file, &c->host,
                   &c->ca_path,     &c->cert_file,     &c->key_file,
                   &c->device_id,   &c->template_id,   &c->device_name,
                   &c->device_type, &c->hw_serial,     &c->hw_model,
                   &c->hw_revision, &c->plugin_dir,    &c->state_dir};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
    free(*strs[i]);
  free(c->api_socket);
  free(c->api_socket_alt);
  free(c->api_group);
  wipe_free(c->password);
  free(c->bootstrap_user);
  wipe_free(c->bootstrap_password);
  wipe_free(c->enroll_otp);
  free(c->enroll_otp_file);
  free(c->enroll_url);
  free(c->cert_key_type);
  for (size_t i = 0; i < c->nentries; i++) {
    free(c->entries[i].section);
    free(c->entries[i].key);
    free(c->entries[i].value);
    free(c->entries[i].file);
  }
  free(c->entries);
  if (c->origins)
    for (int k = 0; k < NKEYS; k++)
      free(c->origins[k]);
  free(c->origins);
  memset(c, 0, sizeof *c);
}

void config_origins_text(const agent_config *c, const char *section,
                         const char *const *keys, size_t nkeys, char *out,
                         size_t len) {
  if (!out || len == 0)
    return;
  size_t n = (size_t)snprintf(out, len, "[%s]", section);
  bool any = false;
  for (size_t i = 0; i < nkeys; i++)
    any |= config_origin(c, section, keys[i]) != NULL;
  bool first = true;
  for (size_t i = 0; i < nkeys && n < len; i++) {
    const char *o = config_origin(c, section, keys[i]);
    if (!o && any)
      continue;
    n += (size_t)snprintf(out + n, len - n, "%s %s (%s)", first ? "" : ",",
                          keys[i], o ? o : "not set");
    first = false;
  }
}

const char *config_origin(const agent_config *c, const char *section,
                          const char *key) {
  if (!c || !c->origins || !section || !key)
    return NULL;
  for (int k = 0; k < NKEYS; k++)
    if (strcmp(keydefs[k].section, section) == 0 &&
        strcmp(keydefs[k].key, key) == 0)
      return c->origins[k];
  return NULL;
}

char *config_client_id(const agent_config *c) {
  if (!c || !c->device_id)
    return NULL;
  char *s;
  int n = c->template_id ? asprintf(&s, "d:%s:%s", c->device_id, c->template_id)
                         : asprintf(&s, "d:%s", c->device_id);
  return n < 0 ? NULL : s;
}

char *config_username(const agent_config *c) {
  if (!c || !c->tenant || !c->user)
    return NULL;
  char *s;
  return asprintf(&s, "%s/%s", c->tenant, c->user) < 0 ? NULL : s;
}

static bool field_equal(const agent_config *a, const agent_config *b,
                        struct restart_field f) {
  const char *x = (const char *)a + f.offset;
  const char *y = (const char *)b + f.offset;
  switch (f.type) {
  case FIELD_STR: {
    const char *s = *(char *const *)x, *t = *(char *const *)y;
    return (!s && !t) || (s && t && strcmp(s, t) == 0);
  }
  case FIELD_BOOL:
    return *(const bool *)x == *(const bool *)y;
  case FIELD_INT:
    return *(const int *)x == *(const int *)y;
  case FIELD_UINT:
    return *(const unsigned *)x == *(const unsigned *)y;
  case FIELD_LLONG:
    return *(const long long *)x == *(const long long *)y;
  case FIELD_NONE:
    break;
  }
  return true;
}

const char *config_restart_only_change(const agent_config *running,
                                       const agent_config *loaded) {
  for (int k = 0; k < NKEYS; k++)
    if (keydefs[k].restart.type != FIELD_NONE &&
        !field_equal(running, loaded, keydefs[k].restart))
      return keydefs[k].name;
  return NULL;
}

config_entry *config_plugin_lookup(agent_config *c, const char *plugin,
                                   const char *key) {
  if (!c || !plugin || !key)
    return NULL;
  size_t plen = strlen(CFG_PLUGIN_PREFIX);
  for (size_t i = 0; i < c->nentries; i++) {
    config_entry *e = &c->entries[i];
    if (strncmp(e->section, CFG_PLUGIN_PREFIX, plen) == 0 &&
        strcmp(e->section + plen, plugin) == 0 && strcmp(e->key, key) == 0) {
      e->used = true;
      return e;
    }
  }
  return NULL;
}
