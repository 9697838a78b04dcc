/* logfile: c8y_LogfileRequest (522) over files and the systemd journal.
 *
 * The matching lines are extracted here and uploaded through the agent
 * (SDK 1.1 api->upload) as the binary of a c8y_Logfile event; the binary's
 * URL completes the operation. An http_helper program, when configured,
 * does the upload instead (and is what an agent older than 1.1 needs).
 * Date filtering of files is best-effort: lines starting with an ISO 8601 or
 * syslog time are filtered, lines without a time are kept. */
#define _GNU_SOURCE
#include <c8y/plugin.h>

#include "cmn_cfg.h"
#include "cmn_op.h"
#include "cmn_path.h"
#include "cmn_proc.h"
#include "lg_diag.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Time stamps ------------------------------------------------------------
 */

#define LOG_MAX_LINES_LIMIT 100000
#define LOG_MAX_SOURCES 64

static int digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 1;
}

static int tm_valid(const struct tm *tm) {
  return tm->tm_mon >= 0 && tm->tm_mon <= 11 && tm->tm_mday >= 1 &&
         tm->tm_mday <= 31 && tm->tm_hour >= 0 && tm->tm_hour <= 23 &&
         tm->tm_min >= 0 && tm->tm_min <= 59 && tm->tm_sec >= 0 &&
         tm->tm_sec <= 60;
}

/* "YYYY-MM-DD[T ]hh:mm[:ss[.fff]][Z|+hh|+hhmm|+hh:mm]" at s. Without an
 * offset the time is local. Returns the number of bytes used, 0 if none. */
static size_t parse_iso(const char *s, int64_t *ms) {
  struct tm tm = {0};
  int v, frac_ms = 0;
  if (!digits(s, 4, &v) || s[4] != '-')
    return 0;
  tm.tm_year = v - 1900;
  if (!digits(s + 5, 2, &v) || s[7] != '-')
    return 0;
  tm.tm_mon = v - 1;
  if (!digits(s + 8, 2, &tm.tm_mday) || (s[10] != 'T' && s[10] != ' '))
    return 0;
  if (!digits(s + 11, 2, &tm.tm_hour) || s[13] != ':' ||
      !digits(s + 14, 2, &tm.tm_min))
    return 0;
  size_t i = 16;
  if (s[i] == ':') {
    if (!digits(s + i + 1, 2, &tm.tm_sec))
      return 0;
    i += 3;
    if (s[i] == '.' || s[i] == ',') {
      int scale = 100;
      i++;
      if (s[i] < '0' || s[i] > '9')
        return 0;
      for (; s[i] >= '0' && s[i] <= '9'; i++, scale /= 10)
        frac_ms += (s[i] - '0') * scale;
    }
  }
  if (!tm_valid(&tm))
    return 0;
  int64_t off_s = 0;
  int has_off = 0;
  if (s[i] == 'Z') {
    has_off = 1;
    i++;
  } else if ((s[i] == '+' || s[i] == '-') && digits(s + i + 1, 2, &v)) {
    int sign = s[i] == '-' ? -1 : 1, mm = 0;
    size_t j = i + 3;
    if (s[j] == ':' && digits(s + j + 1, 2, &mm))
      j += 3;
    else if (digits(s + j, 2, &mm))
      j += 2;
    if (v > 23 || mm > 59)
      return 0;
    off_s = sign * (v * 3600 + mm * 60);
    has_off = 1;
    i = j;
  }
  time_t t;
  if (has_off) {
    t = timegm(&tm);
  } else {
    tm.tm_isdst = -1;
    t = mktime(&tm);
  }
  *ms = ((int64_t)t - off_s) * 1000 + frac_ms;
  return i;
}

/* "Mmm dd hh:mm:ss" (local time, no year: the latest year that is not in
 * the future). Returns the bytes used or 0. */
static size_t parse_syslog(const char *s, int64_t *ms) {
  static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  struct tm tm = {0};
  int mon = -1;
  for (int m = 0; m < 12 && mon < 0; m++)
    if (strncmp(s, months + 3 * m, 3) == 0)
      mon = m;
  if (mon < 0 || s[3] != ' ')
    return 0;
  tm.tm_mon = mon;
  const char *d = s + 4;
  if (d[0] == ' ' && digits(d + 1, 1, &tm.tm_mday))
    d += 2;
  else if (digits(d, 2, &tm.tm_mday))
    d += 2;
  else
    return 0;
  if (d[0] != ' ' || !digits(d + 1, 2, &tm.tm_hour) || d[3] != ':' ||
      !digits(d + 4, 2, &tm.tm_min) || d[6] != ':' ||
      !digits(d + 7, 2, &tm.tm_sec) || !tm_valid(&tm))
    return 0;
  time_t now = time(NULL);
  struct tm lt;
  localtime_r(&now, &lt);
  tm.tm_year = lt.tm_year;
  tm.tm_isdst = -1;
  struct tm copy = tm;
  time_t t = mktime(&tm);
  if (t > now + 86400) {
    copy.tm_year--;
    t = mktime(&copy);
  }
  *ms = (int64_t)t * 1000;
  return (size_t)(d + 9 - s);
}

static int line_time(const char *line, int64_t *ms) {
  return parse_iso(line, ms) > 0 || parse_syslog(line, ms) > 0;
}

/* An operation's date: empty = unbounded; otherwise the whole value must be
 * a time (trailing spaces allowed). */
static int parse_op_date(const char *s, int64_t *ms, int64_t unbounded) {
  if (!s || !s[0]) {
    *ms = unbounded;
    return 1;
  }
  size_t n = parse_iso(s, ms);
  if (n == 0)
    return 0;
  while (s[n] == ' ')
    n++;
  return s[n] == '\0';
}

/* ---- Matching ---------------------------------------------------------------
 */

/* Keeps the newest `max` matching lines in a ring. */
typedef struct matcher {
  const char *search; /* "" = every line */
  int64_t from_ms, to_ms;
  size_t max;
  char **ring;
  size_t head, count;
  size_t matched;
  char *partial; /* incomplete line of streamed input */
  size_t partial_len;
} matcher;

static int matcher_line(matcher *m, const char *line, size_t len) {
  if (len > 0 && line[len - 1] == '\r')
    len--;
  char *copy = strndup(line, len);
  if (!copy)
    return C8Y_ENOMEM;
  int64_t t;
  int keep = (!m->search[0] || strstr(copy, m->search)) &&
             (!line_time(copy, &t) || (t >= m->from_ms && t <= m->to_ms));
  if (!keep || m->max == 0) {
    free(copy);
    return C8Y_OK;
  }
  m->matched++;
  if (m->count < m->max) {
    m->ring[(m->head + m->count++) % m->max] = copy;
  } else {
    free(m->ring[m->head]);
    m->ring[m->head] = copy;
    m->head = (m->head + 1) % m->max;
  }
  return C8Y_OK;
}

static int matcher_feed(void *ctx, const char *data, size_t n) {
  matcher *m = ctx;
  while (n > 0) {
    const char *nl = memchr(data, '\n', n);
    size_t take = nl ? (size_t)(nl - data) : n;
    char *p = realloc(m->partial, m->partial_len + take + 1);
    if (!p)
      return C8Y_ENOMEM;
    m->partial = p;
    memcpy(p + m->partial_len, data, take);
    m->partial_len += take;
    if (!nl)
      break;
    int rc = matcher_line(m, m->partial, m->partial_len);
    m->partial_len = 0;
    if (rc != C8Y_OK)
      return rc;
    data += take + 1;
    n -= take + 1;
  }
  return C8Y_OK;
}

static int matcher_finish(matcher *m) {
  int rc = m->partial_len ? matcher_line(m, m->partial, m->partial_len) : 0;
  m->partial_len = 0;
  return rc;
}

static void matcher_free(matcher *m) {
  for (size_t i = 0; i < m->count; i++)
    free(m->ring[(m->head + i) % m->max]);
  free(m->ring);
  free(m->partial);
}

/* ---- Plugin state -----------------------------------------------------------
 */

typedef struct log_source {
  const char *name;
  const char *source; /* absolute path, "journal" or "journal:<unit>" */
} log_source;

typedef struct lg {
  c8y_plugin *self;
  const c8y_api *api;
  const char *http_helper;
  int timeout_s;
  size_t default_lines;
  size_t keep_files;
  char *logs_buf; /* owns the strings of logs[] */
  log_source logs[LOG_MAX_SOURCES];
  size_t nlogs;
  lg_diag diag; /* the support bundle as one more log (lg_diag.c) */
} lg;

static const log_source *lg_find(const lg *l, const char *name) {
  for (size_t i = 0; i < l->nlogs; i++)
    if (strcmp(l->logs[i].name, name) == 0)
      return &l->logs[i];
  return NULL;
}

/* The file is opened as cmn_path_open_read does: a symlink (or a hard link)
 * that a user who can write the log directory planted in its place is not
 * followed, so the agent never uploads a file that user cannot read. */
static int collect_file(const char *path, matcher *m, const c8y_api *api,
                        const c8y_operation *op, char *why, size_t n) {
  int fd = cmn_path_open_read(path, why, n);
  FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
  if (!f) {
    if (fd >= 0) {
      snprintf(why, n, "cannot open %.400s: %s", path, strerror(errno));
      close(fd);
    }
    return C8Y_EIO;
  }
  char *line = NULL;
  size_t cap = 0, count = 0;
  ssize_t len;
  int rc = C8Y_OK;
  while (rc == C8Y_OK && (len = getline(&line, &cap, f)) >= 0) {
    if (len > 0 && line[len - 1] == '\n')
      len--;
    rc = matcher_line(m, line, (size_t)len);
    if (rc == C8Y_OK && ++count % 4096 == 0 && api->op_cancelled(op)) {
      /* The agent puts why (timeout or stop) in front of this. */
      snprintf(why, n, "stopped reading the log files");
      rc = C8Y_ECANCELED;
    }
  }
  if (rc == C8Y_OK && ferror(f)) {
    snprintf(why, n, "cannot read %.400s: %s", path, strerror(errno));
    rc = C8Y_EIO;
  } else if (rc == C8Y_ENOMEM) {
    snprintf(why, n, "out of memory");
  }
  free(line);
  fclose(f);
  return rc;
}

static int collect_journal(lg *l, const char *source, matcher *m,
                           const c8y_operation *op, char *why, size_t n) {
  char since[40], until[40], lines[40];
  char *argv[12];
  size_t a = 0;
  argv[a++] = "journalctl";
  argv[a++] = "--no-pager";
  argv[a++] = "--quiet";
  argv[a++] = "--output=short-iso";
  if (source[7] == ':') {
    argv[a++] = "--unit";
    argv[a++] = (char *)source + 8;
  }
  if (m->from_ms != INT64_MIN) {
    snprintf(since, sizeof(since), "--since=@%lld",
             (long long)(m->from_ms / 1000 - (m->from_ms % 1000 < 0)));
    argv[a++] = since;
  }
  if (m->to_ms != INT64_MAX) {
    snprintf(until, sizeof(until), "--until=@%lld",
             (long long)(m->to_ms / 1000 + (m->to_ms % 1000 > 0)));
    argv[a++] = until;
  }
  if (!m->search[0]) {
    /* Nothing to filter in-process: let the journal do the tail. */
    snprintf(lines, sizeof(lines), "--lines=%zu", m->max);
    argv[a++] = lines;
  }
  argv[a] = NULL;
  cmn_proc_opts o = {.timeout_s = l->timeout_s,
                     .api = l->api,
                     .op = op,
                     .on_out = matcher_feed,
                     .ctx = m};
  cmn_proc_result r;
  int rc = cmn_proc_run(argv, &o, &r);
  free(r.out);
  if (rc == 0)
    rc = matcher_finish(m);
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    cmn_proc_describe(&r, rc, desc, sizeof(desc));
    snprintf(why, n, "journalctl failed (%s)", desc);
    return C8Y_EIO;
  }
  return C8Y_OK;
}

static int lg_write(lg *l, const char *name, const matcher *m, char *path,
                    size_t pathn, char *why, size_t n) {
  char stamp[32];
  const char *dir = cmn_op_state_stamp(l->api, l->self, stamp, why, n);
  if (!dir)
    return C8Y_EIO;
  int fd = -1;
  for (int i = 1; fd < 0 && i <= 100; i++) {
    if (i == 1)
      snprintf(path, pathn, "%s/%s-%s.log", dir, name, stamp);
    else
      snprintf(path, pathn, "%s/%s-%s-%d.log", dir, name, stamp, i);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0 && errno != EEXIST)
      break;
  }
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f) {
    snprintf(why, n, "cannot create %.400s: %s", path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return C8Y_EIO;
  }
  for (size_t i = 0; i < m->count; i++) {
    fputs(m->ring[(m->head + i) % m->max], f);
    fputc('\n', f);
  }
  if (fflush(f) != 0 || ferror(f) || fclose(f) != 0) {
    snprintf(why, n, "cannot write %.400s: %s", path, strerror(errno));
    unlink(path);
    return C8Y_EIO;
  }
  return C8Y_OK;
}

typedef struct extract {
  char name[512];
  struct timespec mtime;
} extract;

static int extract_newer_first(const void *a, const void *b) {
  const extract *x = a, *y = b;
  if (x->mtime.tv_sec != y->mtime.tv_sec)
    return x->mtime.tv_sec < y->mtime.tv_sec ? 1 : -1;
  if (x->mtime.tv_nsec != y->mtime.tv_nsec)
    return x->mtime.tv_nsec < y->mtime.tv_nsec ? 1 : -1;
  return -strcmp(x->name, y->name);
}

/* Keeps the newest keep_files extracts (*.log) of the state directory. */
static void lg_prune(lg *l) {
  const char *dir = l->api->state_dir(l->self);
  DIR *d = dir ? opendir(dir) : NULL;
  if (!d)
    return;
  extract *list = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    struct stat st;
    if (len < 5 || len >= sizeof(list->name) ||
        strcmp(e->d_name + len - 4, ".log") != 0 ||
        fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode))
      continue;
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 16;
      extract *p = realloc(list, nc * sizeof(*p));
      if (!p)
        break;
      list = p;
      cap = nc;
    }
    memcpy(list[n].name, e->d_name, len + 1);
    list[n].mtime = st.st_mtim;
    n++;
  }
  if (n > l->keep_files) {
    qsort(list, n, sizeof(*list), extract_newer_first);
    for (size_t i = l->keep_files; i < n; i++)
      if (unlinkat(dirfd(d), list[i].name, 0) != 0)
        l->api->log(l->self, C8Y_LOG_WARNING, "cannot remove %s/%s: %s", dir,
                    list[i].name, strerror(errno));
  }
  free(list);
  closedir(d);
}

/* Through the agent's own HTTP client (event c8y_Logfile + binary), or the
 * http_helper when one is set. */
static int lg_upload(lg *l, c8y_operation *op, const char *name,
                     const char *path, size_t lines, char *url, size_t urln,
                     char *why, size_t n) {
  const c8y_api *api = l->api;
  char what[200];
  snprintf(what, sizeof(what), "log '%s'", name);
  if (!l->http_helper[0]) {
    char text[300];
    snprintf(text, sizeof(text), "Log file '%s' (%zu lines)", name, lines);
    const char *base = strrchr(path, '/');
    c8y_upload u = {.size = sizeof(u),
                    .path = path,
                    .type = "c8y_Logfile",
                    .text = text,
                    .content_type = "text/plain",
                    .file_name = base ? base + 1 : path,
                    .op = op};
    return cmn_op_upload(api, l->self, &u, what, url, urln, why, n);
  }
  char env_dev[300], env_name[300], env_lines[64];
  snprintf(env_dev, sizeof(env_dev), "C8Y_DEVICE_ID=%s",
           api->device_id(l->self));
  snprintf(env_name, sizeof(env_name), "C8Y_LOG_NAME=%s", name);
  snprintf(env_lines, sizeof(env_lines), "C8Y_LOG_LINES=%zu", lines);
  const char *env[] = {env_dev, env_name, env_lines, NULL};
  char *argv[] = {(char *)l->http_helper, "upload-log", (char *)name,
                  (char *)path, NULL};
  cmn_proc_opts o = {.env = env,
                     .timeout_s = l->timeout_s,
                     .api = api,
                     .op = op,
                     .out_cap = 64 * 1024};
  return cmn_proc_upload_url(argv, &o, what, url, urln, why, n);
}

/* ---- 522 c8y_LogfileRequest -------------------------------------------------
 */

static int on_log_request(c8y_plugin *self, c8y_operation *op, void *ud) {
  lg *l = ud;
  const c8y_api *api = l->api;
  char why[1024];
  if (!cmn_op_for_self(api, self, op) ||
      !cmn_op_fields(api, op, 5,
                     "c8y_LogfileRequest: expected 5 fields "
                     "(logFile,dateFrom,dateTo,searchText,maxLines)"))
    return C8Y_OK;
  const char *name = api->op_field(op, 0), *from = api->op_field(op, 1),
             *to = api->op_field(op, 2), *max = api->op_field(op, 4);
  const log_source *src = lg_find(l, name);
  if (!src) {
    int len =
        snprintf(why, sizeof(why), "unknown log '%.200s' (supported:", name);
    for (size_t i = 0; i < l->nlogs && len < (int)sizeof(why) - 40; i++)
      len += snprintf(why + len, sizeof(why) - (size_t)len, "%s %s",
                      i ? "," : "", l->logs[i].name);
    if (len < (int)sizeof(why) - 2)
      snprintf(why + len, sizeof(why) - (size_t)len, ")");
    api->op_fail(op, why);
    return C8Y_OK;
  }
  matcher m = {.search = api->op_field(op, 3)};
  if (!parse_op_date(from, &m.from_ms, INT64_MIN) ||
      !parse_op_date(to, &m.to_ms, INT64_MAX)) {
    snprintf(why, sizeof(why),
             "c8y_LogfileRequest: %s '%.100s' is not an ISO 8601 time",
             parse_op_date(from, &m.from_ms, INT64_MIN) ? "dateTo" : "dateFrom",
             parse_op_date(from, &m.from_ms, INT64_MIN) ? to : from);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  if (m.from_ms > m.to_ms) {
    snprintf(why, sizeof(why),
             "c8y_LogfileRequest: dateFrom '%.60s' is after dateTo '%.60s'",
             from, to);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  m.max = l->default_lines;
  if (max[0]) {
    char *end;
    errno = 0;
    long long v = strtoll(max, &end, 10);
    if (errno || *end || v < 0) {
      snprintf(why, sizeof(why),
               "c8y_LogfileRequest: maxLines '%.60s' is not a non-negative "
               "integer",
               max);
      api->op_fail(op, why);
      return C8Y_OK;
    }
    if (v > 0)
      m.max = v > LOG_MAX_LINES_LIMIT ? LOG_MAX_LINES_LIMIT : (size_t)v;
  }
  if (strcmp(src->source, LG_DIAG_SOURCE) == 0) {
    char url[4096];
    int rc = lg_diag_request(&l->diag, api, self, op, l->timeout_s, m.max, url,
                             sizeof(url), why, sizeof(why));
    if (rc != C8Y_OK) {
      api->log(self, C8Y_LOG_ERROR, "%s", why);
      api->op_fail(op, why);
    } else {
      api->op_succeed(op, url);
    }
    return C8Y_OK;
  }
  m.ring = calloc(m.max, sizeof(char *));
  if (!m.ring) {
    api->op_fail(op, "out of memory");
    return C8Y_OK;
  }
  int rc = strncmp(src->source, "journal", 7) == 0
               ? collect_journal(l, src->source, &m, op, why, sizeof(why))
               : collect_file(src->source, &m, api, op, why, sizeof(why));
  char path[4200], url[4096];
  if (rc == C8Y_OK)
    rc = lg_write(l, src->name, &m, path, sizeof(path), why, sizeof(why));
  size_t lines = m.count;
  matcher_free(&m);
  if (rc == C8Y_OK) {
    lg_prune(l);
    api->log(self, C8Y_LOG_INFO, "log '%s': %zu line(s) in %s", src->name,
             lines, path);
    rc = lg_upload(l, op, src->name, path, lines, url, sizeof(url), why,
                   sizeof(why));
  }
  if (rc != C8Y_OK) {
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  api->op_succeed(op, url);
  return C8Y_OK;
}

/* ---- Lifecycle --------------------------------------------------------------
 */

static int name_ok(const char *name) {
  if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return 0;
  for (const char *s = name; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' || *s == '.'))
      return 0;
  return 1;
}

static int source_ok(const char *src) {
  return src[0] == '/' || strcmp(src, "journal") == 0 ||
         (strncmp(src, "journal:", 8) == 0 && src[8]);
}

/* `logs = name=/path other=journal unit=journal:ssh.service`, a path with
 * blanks in quotes (app="/var/log/my app.log"). An entry that cannot be
 * used is logged and left out; only a list with none left fails. */
static int lg_parse_logs(lg *l) {
  static const cmn_cfg_list_rule rule = {
      .form = "name=/path, name=journal or name=journal:<unit>",
      .noun = "name",
      .key_rule = "may contain only letters, digits, '_', '-' and '.'",
      .plural = "entries",
      .key_ok = name_ok,
      .value_ok = source_ok};
  cmn_cfg_pair pairs[LOG_MAX_SOURCES];
  size_t n;
  /* The support bundle takes the last place of the list. */
  size_t max = LOG_MAX_SOURCES - (l->diag.enabled ? 1 : 0);
  int rc = cmn_cfg_list(l->api, l->self, "logs", &rule, pairs, max, &n,
                        &l->logs_buf);
  if (rc != C8Y_OK)
    return rc;
  int journal = -1; /* unknown until an entry needs journalctl */
  for (size_t i = 0; i < n; i++) {
    const cmn_cfg_pair *p = &pairs[i];
    if (l->diag.enabled && strcmp(p->key, LG_DIAG_NAME) == 0) {
      cmn_cfg_entry_error(l->api, l->self, "logs", p,
                          "name '%s' is the support bundle's (set diag = "
                          "false to use it for a log)",
                          p->key);
      continue;
    }
    if (strncmp(p->value, "journal", 7) == 0) {
      if (journal < 0)
        journal =
            cmn_path_check_key(l->api, l->self, "logs", "journalctl") == C8Y_OK;
      if (!journal) {
        cmn_cfg_entry_error(l->api, l->self, "logs", p,
                            "journalctl cannot be run (see above)");
        continue;
      }
    }
    l->logs[l->nlogs++] = (log_source){p->key, p->value};
  }
  if (n > 0 && l->nlogs == 0) {
    l->api->log(l->self, C8Y_LOG_ERROR, "logs: no usable entry");
    return C8Y_EINVAL;
  }
  return C8Y_OK;
}

static int lg_read_config(lg *l) {
  const c8y_api *api = l->api;
  int64_t timeout, lines, keep;
  int rc = cmn_cfg_int(api, l->self, "timeout", 300, 1, 86400, "", &timeout);
  if (rc == C8Y_OK)
    rc = cmn_cfg_int(api, l->self, "max_lines", 1000, 1, LOG_MAX_LINES_LIMIT,
                     "", &lines);
  if (rc == C8Y_OK)
    rc = cmn_cfg_int(api, l->self, "keep_files", 5, 1, 1000, "", &keep);
  if (rc != C8Y_OK)
    return rc;
  l->timeout_s = (int)timeout;
  l->default_lines = (size_t)lines;
  l->keep_files = (size_t)keep;
  rc = cmn_cfg_program(api, l->self, "http_helper", &l->http_helper);
  if (rc == C8Y_OK)
    rc = lg_diag_configure(api, l->self, &l->diag);
  if (rc != C8Y_OK)
    return rc;
  return lg_parse_logs(l);
}

/* The support bundle goes last in the 118 list: lg_parse_logs kept its
 * name and its place free. */
static void lg_add_diag(lg *l) {
  l->logs[l->nlogs++] = (log_source){LG_DIAG_NAME, LG_DIAG_SOURCE};
}

static void lg_free(lg *l) {
  free(l->logs_buf);
  free(l);
}

static int lg_init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  lg *l = calloc(1, sizeof(*l));
  if (!l)
    return C8Y_ENOMEM;
  l->self = self;
  l->api = api;
  int rc = lg_read_config(l);
  size_t configured = l->nlogs;
  if (rc == C8Y_OK && l->diag.enabled)
    lg_add_diag(l);
  /* http_helper is only set once the config was read without error. */
  int can_upload =
      rc == C8Y_OK && (l->http_helper[0] || C8Y_API_HAS(api, upload));
  if (rc == C8Y_OK && l->nlogs > 0 && can_upload)
    rc = api->add_operation(self, "522", (uint32_t)l->timeout_s * 1000,
                            on_log_request, l);
  if (rc != C8Y_OK) {
    lg_free(l);
    return rc;
  }
  if (configured == 0)
    api->log(self, C8Y_LOG_NOTICE, "logs not set: no log files offered%s",
             l->nlogs ? " (only the support bundle " LG_DIAG_NAME ")" : "");
  else if (!can_upload)
    api->log(self, C8Y_LOG_NOTICE,
             "log upload needs HTTP: this agent has no upload (SDK < 1.1) and "
             "no http_helper is set, so c8y_LogfileRequest (522) is not "
             "offered");
  cmn_op_send_names(api, self, "118", l->logs, sizeof(l->logs[0]),
                    offsetof(log_source, name), l->nlogs);
  *user_data = l;
  return C8Y_OK;
}

static void lg_fini(c8y_plugin *self, void *user_data) { lg_free(user_data); }

C8Y_PLUGIN(.name = "logfile", .version = "1.0.0", .init = lg_init,
           .fini = lg_fini);
