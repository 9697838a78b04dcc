/* configuration: the device's text configuration (513 c8y_Configuration)
 * and typed configuration files (524 download, 526 upload).
 *
 * New content is always written atomically, optionally applied by a command
 * and rolled back when that command fails, and a crash or power cut at any
 * point ends with either the old file and 502 or the new file and 503 (see
 * "Replacing a file" below). Configured files are read without following a
 * symlink someone with less privilege could have planted (cmn_path). Typed
 * files travel over the agent's HTTP client (SDK 1.1), or an external
 * http_helper if configured. */
#define _GNU_SOURCE
#include <c8y/plugin.h>

#include "cmn_cfg.h"
#include "cmn_csv.h"
#include "cmn_op.h"
#include "cmn_path.h"
#include "cmn_proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Files ----------------------------------------------------------------
 */

#define CFG_REPORT_MAX CMN_CSV_TEXT_MAX /* encoded 113 line */
#define CFG_MAX_TYPES 64

/* Reads at most `max` bytes (cmn_path_open_read: no planted symlink is
 * followed). *exists = 0 and C8Y_OK when there is no file; C8Y_ETOOBIG when
 * the file is longer than max; C8Y_EIO with the reason in why. */
static int read_file(const char *path, size_t max, char **out, size_t *len,
                     int *exists, char *why, size_t whyn) {
  *out = NULL;
  *len = 0;
  *exists = 0;
  int fd = cmn_path_open_read(path, why, whyn);
  FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
  if (!f) {
    if (fd >= 0) {
      snprintf(why, whyn, "cannot read %s: %s", path, strerror(errno));
      close(fd);
    }
    return errno == ENOENT ? C8Y_OK : C8Y_EIO;
  }
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
  if (rc == C8Y_OK && ferror(f)) {
    snprintf(why, whyn, "cannot read %s: %s", path, strerror(errno));
    rc = C8Y_EIO;
  }
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
  const char *type;
  const char *path;
} cfg_file;

typedef struct cfg {
  c8y_plugin *self;
  const c8y_api *api;
  const char *text_file;          /* borrowed from the config until fini */
  const char *apply_command;      /* "" = none */
  const char *http_helper;        /* "" = none: the agent's HTTP client */
  const char *file_apply_command; /* "" = none */
  int64_t max_bytes;              /* download limit; 0 = the agent's */
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

static void cfg_report_text(cfg *c, const char *text) {
  if (4 + cmn_csv_len(text) > CFG_REPORT_MAX) {
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

/* ---- 524 / 526 typed configuration files --------------------------------
 * Transfers use the agent's HTTP client (SDK 1.1 download/upload), or the
 * http_helper program when one is configured (an override). */

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

typedef struct cfg_envbuf {
  char dev[300], type[300], file[4200];
  const char *env[4];
} cfg_envbuf;

/* C8Y_DEVICE_ID, C8Y_CONFIG_TYPE and (with_file) C8Y_CONFIG_FILE. */
static const char *const *cfg_env(cfg *c, const cfg_file *f, cfg_envbuf *b,
                                  int with_file) {
  snprintf(b->dev, sizeof(b->dev), "C8Y_DEVICE_ID=%s",
           c->api->device_id(c->self));
  snprintf(b->type, sizeof(b->type), "C8Y_CONFIG_TYPE=%s", f->type);
  snprintf(b->file, sizeof(b->file), "C8Y_CONFIG_FILE=%s", f->path);
  b->env[0] = b->dev;
  b->env[1] = b->type;
  b->env[2] = with_file ? b->file : NULL;
  b->env[3] = NULL;
  return b->env;
}

/* <http_helper> download <url> <tmp>: the helper fills tmp itself. */
static int fetch_with_helper(cfg *c, c8y_operation *op, const cfg_file *f,
                             const char *url, const char *tmp, char *why,
                             size_t whyn) {
  cfg_envbuf eb;
  const char *const *env = cfg_env(c, f, &eb, 0);
  char *argv[] = {(char *)c->http_helper, "download", (char *)url, (char *)tmp,
                  NULL};
  cmn_proc_opts o = {.env = env,
                     .timeout_s = c->timeout_s,
                     .api = c->api,
                     .op = op,
                     .out_cap = 64 * 1024};
  cmn_proc_result r;
  int rc = cmn_proc_run(argv, &o, &r);
  free(r.out);
  struct stat st;
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    cmn_proc_describe(&r, rc, desc, sizeof(desc));
    snprintf(why, whyn, "download of '%s' failed (%s)", f->type, desc);
    return C8Y_EIO;
  }
  if (stat(tmp, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
    snprintf(why, whyn,
             "download of '%s' failed: http_helper left no data in %.400s",
             f->type, tmp);
    return C8Y_EIO;
  }
  return C8Y_OK;
}

static int copy_fd(int in, int out) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(in, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      return 0;
    if (write_all(out, buf, (size_t)n) != 0)
      return -1;
  }
}

/* Moves `from` to `to` (an existing temporary file), copying when they are
 * on different file systems. */
static int move_file(const char *from, const char *to) {
  if (rename(from, to) == 0)
    return 0;
  if (errno != EXDEV)
    return -1;
  int in = open(from, O_RDONLY | O_CLOEXEC);
  int out = open(to, O_WRONLY | O_TRUNC | O_CLOEXEC);
  int rc = in >= 0 && out >= 0 ? copy_fd(in, out) : -1;
  int saved = errno;
  if (in >= 0)
    close(in);
  if (out >= 0)
    close(out);
  if (rc == 0)
    unlink(from);
  errno = saved;
  return rc;
}

/* The agent's HTTP client streams the file into the state dir; it then
 * moves next to the target. */
static int fetch_builtin(cfg *c, c8y_operation *op, const cfg_file *f,
                         const char *url, const char *tmp, char *why,
                         size_t whyn) {
  const c8y_api *api = c->api;
  /* One name per type: a partial file is resumed only for the same URL
   * (the agent checks), and a type never leaves more than one behind. */
  char name[64];
  snprintf(name, sizeof(name), "config-%zu", (size_t)(f - c->files));
  c8y_download d = {.size = sizeof(d),
                    .url = url,
                    .file = name,
                    .max_bytes = (uint64_t)c->max_bytes,
                    .op = op};
  int rc = api->download(c->self, &d);
  if (rc != C8Y_OK) {
    snprintf(why, whyn, "download of '%s' failed: %s", f->type,
             d.error[0] ? d.error : api->status_str(rc));
    return rc;
  }
  if (move_file(d.path, tmp) != 0) {
    snprintf(why, whyn, "cannot move %.400s to %.400s: %s", d.path, tmp,
             strerror(errno));
    unlink(d.path);
    return C8Y_EIO;
  }
  return C8Y_OK;
}

/* Keeps the current target reachable under `backup` (a hard link, or a
 * copy where links are impossible) for the rollback. *have = 0 when there
 * is no current file. */
static int backup_target(const char *path, char *backup, size_t n, int *have,
                         char *why, size_t whyn) {
  *have = 0;
  if (access(path, F_OK) != 0)
    return C8Y_OK;
  int fd = temp_next_to(path, backup, n);
  if (fd < 0) {
    snprintf(why, whyn, "cannot back up %.400s: %s", path, strerror(errno));
    return C8Y_EIO;
  }
  close(fd);
  unlink(backup);
  if (link(path, backup) == 0) {
    *have = 1;
    return C8Y_OK;
  }
  int in = open(path, O_RDONLY | O_CLOEXEC);
  int out = open(backup, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  int rc = in >= 0 && out >= 0 ? copy_fd(in, out) : -1;
  if (rc == 0) {
    copy_mode(out, path);
    rc = fsync(out);
  }
  if (rc != 0)
    snprintf(why, whyn, "cannot back up %.400s: %s", path, strerror(errno));
  if (in >= 0)
    close(in);
  if (out >= 0)
    close(out);
  if (rc != 0) {
    unlink(backup);
    return C8Y_EIO;
  }
  *have = 1;
  return C8Y_OK;
}

/* ---- Replacing a file, restart-proof ---------------------------------------
 * The new content waits in a temporary file next to the target
 * (".<base>.c8y-XXXXXX"), the current file is kept beside it as a hard link
 * (or a copy), and before the target is touched a record in the plugin's
 * state dir (apply-513, apply-524: one operation of each kind runs at a
 * time) says "installing" with the three paths. The outcome replaces it:
 * "succeeded" once the apply command accepted the new file and the
 * operation is marked to be resumed after a restart, or "restored" with the
 * reason once the old file is back. Only then does the backup go.
 *
 * After a crash or power cut the next start (cfg_settle, before 113 is
 * reported) puts the old file back for a record still "installing": the
 * operation was not marked, so the engine reports it failed (502), or the
 * mark was written but not the outcome, and the resumed operation reads
 * "restored" and fails. A resumed operation reports what its record says,
 * so "succeeded" ends as 503 with the new file. A record stays until the
 * next operation of its kind starts, when the engine has journaled the end
 * of the one before; a restart in between still finds it. */

typedef enum txn_phase {
  TXN_NONE,
  TXN_INSTALLING,
  TXN_SUCCEEDED,
  TXN_RESTORED
} txn_phase;

static const char *const txn_names[] = {"none", "installing", "succeeded",
                                        "restored"};

#define TXN_MAGIC "c8y-configuration-apply 1"

typedef struct txn {
  txn_phase phase;
  char target[4096];
  char fresh[4200];  /* the new content before the rename */
  char backup[4200]; /* "" when there was no file */
  char reason[1100]; /* restored: why */
} txn;

static int txn_path(cfg *c, const char *kind, char *out, size_t n) {
  const char *dir = c->api->state_dir(c->self);
  if (!dir || snprintf(out, n, "%s/apply-%s", dir, kind) >= (int)n)
    return -1;
  return 0;
}

/* Writes the record atomically and durably. 0, or -1 with errno. */
static int txn_write(cfg *c, const char *kind, const txn *t) {
  char path[4200], tmp[4300];
  if (txn_path(c, kind, path, sizeof(path)) != 0) {
    errno = ENOENT;
    return -1;
  }
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  char *text = NULL;
  int len =
      asprintf(&text, TXN_MAGIC "\n%s\n%s\n%s\n%s\n%s\n", txn_names[t->phase],
               t->target, t->fresh, t->backup[0] ? t->backup : "-", t->reason);
  if (len < 0)
    return -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int rc = fd >= 0 && write_all(fd, text, (size_t)len) == 0 && fsync(fd) == 0
               ? 0
               : -1;
  int saved = errno;
  free(text);
  if (fd >= 0)
    close(fd);
  if (rc == 0 && rename(tmp, path) != 0) {
    saved = errno;
    rc = -1;
  }
  if (rc != 0)
    unlink(tmp);
  else
    fsync_dir_of(path);
  errno = saved;
  return rc;
}

/* The record of `kind`, TXN_NONE when there is none (or it is unreadable:
 * logged). */
static txn_phase txn_read(cfg *c, const char *kind, txn *t) {
  memset(t, 0, sizeof(*t));
  char path[4200];
  FILE *f =
      txn_path(c, kind, path, sizeof(path)) == 0 ? fopen(path, "re") : NULL;
  if (!f)
    return TXN_NONE;
  char line[4300];
  char *fields[6] = {NULL};
  size_t n = 0;
  while (n < 6 && fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\n")] = '\0';
    fields[n++] = strdup(line);
  }
  fclose(f);
  txn_phase phase = TXN_NONE;
  if (n == 6 && fields[0] && strcmp(fields[0], TXN_MAGIC) == 0)
    for (int p = TXN_INSTALLING; p <= TXN_RESTORED; p++)
      if (fields[1] && strcmp(fields[1], txn_names[p]) == 0)
        phase = (txn_phase)p;
  if (phase != TXN_NONE && fields[2][0] == '/' && fields[3][0] == '/') {
    snprintf(t->target, sizeof(t->target), "%s", fields[2]);
    snprintf(t->fresh, sizeof(t->fresh), "%s", fields[3]);
    snprintf(t->backup, sizeof(t->backup), "%s",
             strcmp(fields[4], "-") == 0 ? "" : fields[4]);
    snprintf(t->reason, sizeof(t->reason), "%s", fields[5]);
    t->phase = phase;
  } else {
    c->api->log(c->self, C8Y_LOG_WARNING, "%s: not a readable record; ignored",
                path);
  }
  for (size_t i = 0; i < n; i++)
    free(fields[i]);
  return t->phase;
}

/* Puts the old file back (or removes the new one when there was none). 0,
 * or -1 with errno. */
static int txn_restore(const txn *t) {
  int rc = t->backup[0] ? rename(t->backup, t->target) : unlink(t->target);
  if (rc != 0 && !t->backup[0] && errno == ENOENT)
    rc = 0;
  if (rc == 0)
    fsync_dir_of(t->target);
  return rc;
}

/* Settles what a previous operation of `kind` left: a record still
 * "installing" (the agent died before the outcome) is rolled back and
 * becomes "restored"; the backup of a decided one goes. With `forget` the
 * record goes too (its operation's end is journaled). */
static void cfg_settle(cfg *c, const char *kind, bool forget) {
  txn t;
  txn_phase phase = txn_read(c, kind, &t);
  if (phase == TXN_INSTALLING) {
    int rc = 0;
    if (access(t.fresh, F_OK) == 0) {
      unlink(t.fresh);
      if (t.backup[0])
        unlink(t.backup);
      snprintf(t.reason, sizeof(t.reason),
               "the agent stopped before %.400s was replaced; it is unchanged",
               t.target);
    } else if ((rc = txn_restore(&t)) == 0) {
      snprintf(t.reason, sizeof(t.reason),
               "the agent stopped while the new %.400s was applied; %s",
               t.target,
               t.backup[0] ? "previous file restored" : "new file removed");
    }
    if (rc != 0) {
      c->api->log(c->self, C8Y_LOG_ERROR,
                  "cannot restore %s from %s after the agent stopped: %s; "
                  "trying again at the next start",
                  t.target, t.backup[0] ? t.backup : "(no file)",
                  strerror(errno));
      return;
    }
    c->api->log(c->self, C8Y_LOG_NOTICE, "%s", t.reason);
    t.phase = TXN_RESTORED;
    t.backup[0] = '\0';
    if (txn_write(c, kind, &t) != 0)
      c->api->log(c->self, C8Y_LOG_ERROR, "cannot record the restore of %s: %s",
                  t.target, strerror(errno));
  } else if (phase == TXN_SUCCEEDED && t.backup[0]) {
    unlink(t.backup);
  }
  char path[4200];
  if (forget && phase != TXN_NONE && txn_path(c, kind, path, sizeof(path)) == 0)
    unlink(path);
}

/* Installs `fresh` (complete and fsync'ed, next to `target`) as `target`,
 * runs `cmd` (if any) and keeps the new file only when it succeeds. `what`
 * starts a failure reason ("apply_command failed"), `restored` ends it
 * ("previous configuration restored"). 0 when the new file is in force;
 * -1 with why when the old one is (fresh is gone either way). */
static int cfg_install(cfg *c, const char *kind, c8y_operation *op,
                       const char *target, const char *fresh, const char *cmd,
                       const char *const *env, const char *what,
                       const char *restored, char *why, size_t whyn) {
  const c8y_api *api = c->api;
  txn t = {.phase = TXN_INSTALLING};
  snprintf(t.target, sizeof(t.target), "%s", target);
  snprintf(t.fresh, sizeof(t.fresh), "%s", fresh);
  int have = 0;
  if (backup_target(target, t.backup, sizeof(t.backup), &have, why, whyn) !=
      C8Y_OK) {
    unlink(fresh);
    return -1;
  }
  if (!have)
    t.backup[0] = '\0';
  if (txn_write(c, kind, &t) != 0) {
    snprintf(why, whyn, "cannot record the change of %.400s in %s: %s", target,
             api->state_dir(c->self) ? api->state_dir(c->self) : "(none)",
             strerror(errno));
    unlink(fresh);
    if (have)
      unlink(t.backup);
    return -1;
  }
  if (rename(fresh, target) != 0) {
    snprintf(why, whyn, "cannot install %.400s as %.400s: %s", fresh, target,
             strerror(errno));
    unlink(fresh);
    if (have)
      unlink(t.backup);
    t.phase = TXN_RESTORED;
    t.backup[0] = '\0';
    snprintf(t.reason, sizeof(t.reason), "%s", why);
    txn_write(c, kind, &t);
    return -1;
  }
  fsync_dir_of(target);
  int ok = 1;
  char desc[600] = "";
  if (cmd[0]) {
    cmn_proc_opts o = {.env = env,
                       .timeout_s = c->timeout_s,
                       .api = api,
                       .op = op,
                       .out_cap = 64 * 1024};
    cmn_proc_result r;
    int rc = cmn_proc_shell(cmd, &o, &r);
    free(r.out);
    ok = rc == 0 && r.exit_code == 0;
    if (!ok)
      cmn_proc_describe(&r, rc, desc, sizeof(desc));
  }
  if (ok) {
    /* From here a restart must end in 503: the mark lets the next start
     * hand the operation back, and the record tells it the outcome. */
    if (C8Y_API_HAS(api, op_resume_after_restart) &&
        api->op_resume_after_restart(op) != C8Y_OK)
      api->log(c->self, C8Y_LOG_WARNING,
               "%s: the operation is not kept across a restart; a crash "
               "now reports it failed",
               target);
    t.phase = TXN_SUCCEEDED;
    if (txn_write(c, kind, &t) == 0) {
      if (have)
        unlink(t.backup);
      return 0;
    }
    snprintf(desc, sizeof(desc), "cannot record the outcome: %s",
             strerror(errno));
  }
  int rrc = txn_restore(&t);
  snprintf(why, whyn, "%s (%.500s); %s%s", what, desc,
           rrc != 0 ? "RESTORE FAILED: "
           : have   ? restored
                    : "new file removed",
           rrc != 0 ? strerror(errno) : "");
  if (rrc == 0) {
    /* A failed restore keeps "installing": the next start tries again. */
    t.phase = TXN_RESTORED;
    t.backup[0] = '\0';
    snprintf(t.reason, sizeof(t.reason), "%s", why);
    txn_write(c, kind, &t);
  }
  return -1;
}

/* A 513/524 handed back after a restart: only the ones that succeeded were
 * marked, and their record says how they ended. */
static void cfg_resumed(cfg *c, c8y_operation *op, const char *kind) {
  txn t;
  txn_phase phase = txn_read(c, kind, &t);
  if (phase == TXN_SUCCEEDED) {
    c->api->log(c->self, C8Y_LOG_NOTICE,
                "%s was in force before the agent restarted", t.target);
    c->api->op_succeed(op, NULL);
  } else if (phase == TXN_RESTORED) {
    c->api->op_fail(op, t.reason);
  } else {
    c->api->op_fail(op, "the agent restarted before the new file was "
                        "installed; nothing was changed");
  }
}

/* Removes ".<base>.c8y-*" next to `path`: temporaries and backups a crash
 * left behind (cfg_settle has put back what a record still needed). */
static void remove_strays(cfg *c, const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return;
  char dir[4096], prefix[600];
  snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path),
           path);
  if (snprintf(prefix, sizeof(prefix), ".%s.c8y-", slash + 1) >=
      (int)sizeof(prefix))
    return;
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    struct stat st;
    if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 ||
        fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        S_ISDIR(st.st_mode))
      continue;
    if (unlinkat(dirfd(d), e->d_name, 0) == 0)
      c->api->log(c->self, C8Y_LOG_NOTICE, "removed %s/%s, left by a crash",
                  dir, e->d_name);
  }
  closedir(d);
}

/* At start, before 113 reports the text configuration: what is on disk is
 * what is in force. */
static void cfg_recover(cfg *c) {
  cfg_settle(c, "513", false);
  cfg_settle(c, "524", false);
  if (c->text_file[0])
    remove_strays(c, c->text_file);
  for (size_t i = 0; i < c->nfiles; i++)
    remove_strays(c, c->files[i].path);
}

/* ---- 513 c8y_Configuration ------------------------------------------------
 */

static int on_text_config(c8y_plugin *self, c8y_operation *op, void *ud) {
  cfg *c = ud;
  const c8y_api *api = c->api;
  char why[1200];
  /* Child devices have no configuration on this machine. */
  if (!cmn_op_for_self(api, self, op) ||
      !cmn_op_fields(api, op, 1,
                     "c8y_Configuration: expected 1 field (configurationText)"))
    return C8Y_OK;
  if (C8Y_API_HAS(api, op_resumed) && api->op_resumed(op)) {
    cfg_resumed(c, op, "513");
    return C8Y_OK;
  }
  cfg_settle(c, "513", true);
  const char *text = api->op_field(op, 0);
  char fresh[4200];
  int fd = temp_next_to(c->text_file, fresh, sizeof(fresh));
  if (fd < 0) {
    snprintf(why, sizeof(why), "cannot create a temporary file next to %s: %s",
             c->text_file, strerror(errno));
    api->op_fail(op, why);
    return C8Y_OK;
  }
  copy_mode(fd, c->text_file);
  if (write_all(fd, text, strlen(text)) != 0 || fsync(fd) != 0) {
    snprintf(why, sizeof(why), "cannot write %.400s: %s", fresh,
             strerror(errno));
    close(fd);
    unlink(fresh);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  close(fd);
  char env_file[4200];
  snprintf(env_file, sizeof(env_file), "C8Y_CONFIG_FILE=%s", c->text_file);
  const char *env[] = {env_file, NULL};
  if (cfg_install(c, "513", op, c->text_file, fresh, c->apply_command, env,
                  "apply_command failed", "previous configuration restored",
                  why, sizeof(why)) != 0) {
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  api->log(self, C8Y_LOG_INFO, "wrote %zu bytes of configuration to %s",
           strlen(text), c->text_file);
  cfg_report_text(c, text);
  api->op_succeed(op, NULL);
  return C8Y_OK;
}

static int on_download_file(c8y_plugin *self, c8y_operation *op, void *ud) {
  cfg *c = ud;
  const c8y_api *api = c->api;
  char why[1200] = "";
  if (!cmn_op_for_self(api, self, op) ||
      !cmn_op_fields(api, op, 2,
                     "c8y_DownloadConfigFile: expected 2 fields "
                     "(url,configType)"))
    return C8Y_OK;
  if (C8Y_API_HAS(api, op_resumed) && api->op_resumed(op)) {
    cfg_resumed(c, op, "524");
    return C8Y_OK;
  }
  cfg_settle(c, "524", true);
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
  int rc = c->http_helper[0]
               ? fetch_with_helper(c, op, f, url, tmp, why, sizeof(why))
               : fetch_builtin(c, op, f, url, tmp, why, sizeof(why));
  if (rc == C8Y_OK) {
    fd = open(tmp, O_RDWR | O_CLOEXEC);
    if (fd < 0 || (copy_mode(fd, f->path), fsync(fd)) != 0)
      snprintf(why, sizeof(why), "cannot write %.400s: %s", tmp,
               strerror(errno));
    if (fd >= 0)
      close(fd);
  }
  cfg_envbuf eb;
  char what[200];
  snprintf(what, sizeof(what), "file_apply_command failed for '%.100s'",
           f->type);
  if (why[0])
    unlink(tmp);
  else
    cfg_install(c, "524", op, f->path, tmp, c->file_apply_command,
                cfg_env(c, f, &eb, 1), what, "previous file restored", why,
                sizeof(why));
  if (why[0]) {
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
    return C8Y_OK;
  }
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

/* <http_helper> upload <type> <path> prints the binary URL. */
static int upload_with_helper(cfg *c, c8y_operation *op, const cfg_file *f,
                              const char *what, char *url, size_t urln,
                              char *why, size_t whyn) {
  cfg_envbuf eb;
  const char *const *env = cfg_env(c, f, &eb, 0);
  char *argv[] = {(char *)c->http_helper, "upload", (char *)f->type,
                  (char *)f->path, NULL};
  cmn_proc_opts o = {.env = env,
                     .timeout_s = c->timeout_s,
                     .api = c->api,
                     .op = op,
                     .out_cap = 64 * 1024};
  return cmn_proc_upload_url(argv, &o, what, url, urln, why, whyn);
}

static int on_upload_file(c8y_plugin *self, c8y_operation *op, void *ud) {
  cfg *c = ud;
  const c8y_api *api = c->api;
  char why[1024] = "";
  if (!cmn_op_for_self(api, self, op) ||
      !cmn_op_fields(api, op, 1,
                     "c8y_UploadConfigFile: expected 1 field (configType)"))
    return C8Y_OK;
  const cfg_file *f;
  if (!cfg_typed_file(c, op, api->op_field(op, 0), &f))
    return C8Y_OK;
  /* Not through a symlink a user who can write the file's directory put in
   * its place: that would upload a file only the agent may read. */
  char opened[700];
  int fd = cmn_path_open_read(f->path, opened, sizeof(opened));
  if (fd < 0) {
    snprintf(why, sizeof(why), "configuration '%s': %s", f->type, opened);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  char url[1024] = "", what[200];
  snprintf(what, sizeof(what), "'%.190s'", f->type);
  if (c->http_helper[0]) {
    /* The helper opens the path itself (checked just now). */
    upload_with_helper(c, op, f, what, url, sizeof(url), why, sizeof(why));
  } else {
    /* The snapshot: an event of the configuration type with the file as
     * its binary, which the platform lists in the device's configuration
     * repository. */
    char text[300];
    snprintf(text, sizeof(text), "Configuration snapshot '%.200s'", f->type);
    const char *slash = strrchr(f->path, '/');
    /* The agent reads the descriptor opened above: /proc/self/fd/N is that
     * file, whatever happens to the path meanwhile. */
    char self_fd[64];
    snprintf(self_fd, sizeof(self_fd), "/proc/self/fd/%d", fd);
    c8y_upload u = {.size = sizeof(u),
                    .path = self_fd,
                    .type = f->type,
                    .text = text,
                    .file_name = slash ? slash + 1 : f->path,
                    .op = op};
    cmn_op_upload(api, self, &u, what, url, sizeof(url), why, sizeof(why));
  }
  close(fd);
  if (why[0]) {
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  api->log(self, C8Y_LOG_INFO, "uploaded configuration '%s' to %s", f->type,
           url);
  /* The binary URL as the result, as thin-edge reports it. */
  api->op_succeed(op, url[0] ? url : NULL);
  return C8Y_OK;
}

/* ---- Lifecycle ------------------------------------------------------------
 */

static int type_ok(const char *type) { return !strpbrk(type, ",\""); }

static int path_ok(const char *path) { return path[0] == '/'; }

/* `files = type=/path type2=/path2`: types become the 119 list. Quotes
 * hold blanks ("my app"="/etc/my app/app.conf"); an entry that cannot be
 * used is logged and left out. */
static int cfg_parse_files(cfg *c) {
  static const cmn_cfg_list_rule rule = {.form = "type=/absolute/path",
                                         .noun = "type",
                                         .key_rule =
                                             "must not contain ',' or '\"'",
                                         .plural = "types",
                                         .key_ok = type_ok,
                                         .value_ok = path_ok};
  cmn_cfg_pair pairs[CFG_MAX_TYPES];
  size_t n;
  int rc = cmn_cfg_list(c->api, c->self, "files", &rule, pairs, CFG_MAX_TYPES,
                        &n, &c->files_buf);
  for (size_t i = 0; rc == C8Y_OK && i < n; i++)
    c->files[c->nfiles++] = (cfg_file){pairs[i].key, pairs[i].value};
  return rc;
}

static void cfg_free(cfg *c) {
  free(c->files_buf);
  free(c);
}

static int cfg_read_config(cfg *c) {
  const c8y_api *api = c->api;
  c->text_file = api->config_string(c->self, "text_file", "");
  c->apply_command = api->config_string(c->self, "apply_command", "");
  int64_t timeout;
  int rc =
      cmn_cfg_int(api, c->self, "timeout", 300, 1, 86400, " seconds", &timeout);
  if (rc != C8Y_OK)
    return rc;
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
  rc = cmn_cfg_program(api, c->self, "http_helper", &c->http_helper);
  if (rc != C8Y_OK)
    return rc;
  c->file_apply_command = api->config_string(c->self, "file_apply_command", "");
  if (cmn_path_check_key(api, c->self, "apply_command", c->apply_command) !=
          C8Y_OK ||
      cmn_path_check_key(api, c->self, "file_apply_command",
                         c->file_apply_command) != C8Y_OK)
    return C8Y_EINVAL;
  rc = cmn_cfg_int(api, c->self, "max_file_size", 0, 0, INT64_MAX / 2, " bytes",
                   &c->max_bytes);
  if (rc != C8Y_OK)
    return rc;
  return cfg_parse_files(c);
}

static void cfg_report_initial(cfg *c) {
  char *text;
  size_t len;
  int exists;
  char why[700] = "";
  int rc = read_file(c->text_file, CFG_REPORT_MAX, &text, &len, &exists, why,
                     sizeof(why));
  if (rc == C8Y_ETOOBIG) {
    c->api->log(c->self, C8Y_LOG_WARNING,
                "%s: larger than %d bytes; configuration text not reported "
                "(113)",
                c->text_file, CFG_REPORT_MAX);
  } else if (rc != C8Y_OK) {
    c->api->log(c->self, C8Y_LOG_WARNING,
                "%s; configuration text not reported (113)", why);
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
  int http = c->http_helper[0] ||
             (C8Y_API_HAS(api, download) && C8Y_API_HAS(api, upload));
  if (rc == C8Y_OK && c->nfiles > 0 && http) {
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
  if (c->nfiles > 0 && !http)
    api->log(self, C8Y_LOG_NOTICE,
             "typed configuration files need HTTP: this agent has no HTTP "
             "client (SDK < 1.1) and no http_helper is set, so "
             "c8y_UploadConfigFile (526) and c8y_DownloadConfigFile (524) "
             "are not offered");
  cfg_recover(c);
  if (c->text_file[0])
    cfg_report_initial(c);
  cmn_op_send_names(api, self, "119", c->files, sizeof(c->files[0]),
                    offsetof(cfg_file, type), c->nfiles);
  *user_data = c;
  return C8Y_OK;
}

static void cfg_fini(c8y_plugin *self, void *user_data) { cfg_free(user_data); }

C8Y_PLUGIN(.name = "configuration", .version = "1.1.0", .init = cfg_init,
           .fini = cfg_fini);
