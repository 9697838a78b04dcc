/* configuration: the device's text configuration (513 c8y_Configuration)
 * and typed configuration files (524 download, 526 upload).
 *
 * New content is always written atomically, optionally applied by a command
 * and rolled back when that command fails. Typed files travel over the
 * agent's HTTP client (SDK 1.1), or an external http_helper if configured. */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include "cmn_cfg.h"
#include "cmn_csv.h"
#include "cmn_op.h"
#include "cmn_path.h"
#include "cmn_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Files ----------------------------------------------------------------
 */

#define CFG_REPORT_MAX CMN_CSV_TEXT_MAX   /* encoded 113 line */
#define CFG_BACKUP_MAX (16 * 1024 * 1024) /* old text config kept in memory */
#define CFG_MAX_TYPES 64

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

/* ---- 513 c8y_Configuration ------------------------------------------------
 */

static int on_text_config(c8y_plugin *self, c8y_operation *op, void *ud) {
  cfg *c = ud;
  const c8y_api *api = c->api;
  char why[1024];
  /* Child devices have no configuration on this machine. */
  if (!cmn_op_for_self(api, self, op) ||
      !cmn_op_fields(api, op, 1,
                     "c8y_Configuration: expected 1 field (configurationText)"))
    return C8Y_OK;
  const char *text = api->op_field(op, 0);
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
    cmn_proc_opts o = {.env = env,
                       .timeout_s = c->timeout_s,
                       .api = api,
                       .op = op,
                       .out_cap = 64 * 1024};
    cmn_proc_result r;
    rc = cmn_proc_shell(c->apply_command, &o, &r);
    free(r.out);
    if (rc != 0 || r.exit_code != 0) {
      char desc[600], restore[512] = "";
      cmn_proc_describe(&r, rc, desc, sizeof(desc));
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

/* Runs file_apply_command; on failure puts the old file (or no file) back
 * and describes both in why. Returns 0 when the new file stays. */
static int apply_or_rollback(cfg *c, c8y_operation *op, const cfg_file *f,
                             const char *backup, int have_backup, char *why,
                             size_t whyn) {
  cfg_envbuf eb;
  const char *const *env = cfg_env(c, f, &eb, 1);
  cmn_proc_opts o = {.env = env,
                     .timeout_s = c->timeout_s,
                     .api = c->api,
                     .op = op,
                     .out_cap = 64 * 1024};
  cmn_proc_result r;
  int rc = cmn_proc_shell(c->file_apply_command, &o, &r);
  free(r.out);
  if (rc == 0 && r.exit_code == 0)
    return 0;
  char desc[600];
  cmn_proc_describe(&r, rc, desc, sizeof(desc));
  int rrc = have_backup ? rename(backup, f->path) : unlink(f->path);
  const char *undo = rrc != 0      ? "RESTORE FAILED: "
                     : have_backup ? "previous file restored"
                                   : "new file removed";
  snprintf(why, whyn, "file_apply_command failed for '%.100s' (%.500s); %s%s",
           f->type, desc, undo, rrc != 0 ? strerror(errno) : "");
  fsync_dir_of(f->path);
  return -1;
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
  const char *url = api->op_field(op, 0);
  const cfg_file *f;
  if (!cfg_typed_file(c, op, api->op_field(op, 1), &f))
    return C8Y_OK;
  if (!url[0]) {
    api->op_fail(op, "c8y_DownloadConfigFile: empty url");
    return C8Y_OK;
  }
  char tmp[4200], backup[4200];
  int have_backup = 0;
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
  if (!why[0] && c->file_apply_command[0])
    backup_target(f->path, backup, sizeof(backup), &have_backup, why,
                  sizeof(why));
  if (!why[0] && rename(tmp, f->path) != 0)
    snprintf(why, sizeof(why), "cannot install %.400s as %.400s: %s", tmp,
             f->path, strerror(errno));
  if (why[0]) {
    unlink(tmp);
    if (have_backup)
      unlink(backup);
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  fsync_dir_of(f->path);
  if (c->file_apply_command[0] &&
      apply_or_rollback(c, op, f, backup, have_backup, why, sizeof(why)) != 0) {
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
    return C8Y_OK;
  }
  if (have_backup)
    unlink(backup);
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
                              char *url, size_t urln, char *why, size_t whyn) {
  cfg_envbuf eb;
  const char *const *env = cfg_env(c, f, &eb, 0);
  char *argv[] = {(char *)c->http_helper, "upload", (char *)f->type,
                  (char *)f->path, NULL};
  cmn_proc_opts o = {.env = env,
                     .timeout_s = c->timeout_s,
                     .api = c->api,
                     .op = op,
                     .out_cap = 64 * 1024};
  cmn_proc_result r;
  int rc = cmn_proc_run(argv, &o, &r);
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    cmn_proc_describe(&r, rc, desc, sizeof(desc));
    snprintf(why, whyn, "upload of '%s' failed (%s)", f->type, desc);
  } else {
    r.out[strcspn(r.out, "\r\n")] = '\0';
    if (!r.out[0])
      snprintf(why, whyn, "upload of '%s' failed: http_helper printed no URL",
               f->type);
    else
      snprintf(url, urln, "%s", r.out);
  }
  free(r.out);
  return why[0] ? C8Y_EIO : C8Y_OK;
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
  if (access(f->path, R_OK) != 0) {
    snprintf(why, sizeof(why), "configuration '%s': cannot read %s: %s",
             f->type, f->path, strerror(errno));
    api->op_fail(op, why);
    return C8Y_OK;
  }
  char url[1024] = "";
  if (c->http_helper[0]) {
    upload_with_helper(c, op, f, url, sizeof(url), why, sizeof(why));
  } else {
    /* The snapshot: an event of the configuration type with the file as
     * its binary, which the platform lists in the device's configuration
     * repository. */
    char text[300];
    snprintf(text, sizeof(text), "Configuration snapshot '%.200s'", f->type);
    const char *slash = strrchr(f->path, '/');
    c8y_upload u = {.size = sizeof(u),
                    .path = f->path,
                    .type = f->type,
                    .text = text,
                    .file_name = slash ? slash + 1 : f->path,
                    .op = op};
    int rc = api->upload(self, &u);
    if (rc != C8Y_OK)
      snprintf(why, sizeof(why), "upload of '%s' failed: %s", f->type,
               u.error[0] ? u.error : api->status_str(rc));
    else
      snprintf(url, sizeof(url), "%s", u.url);
  }
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

/* `files = type=/path type2=/path2`: types become the 119 list. */
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
  if (c->text_file[0])
    cfg_report_initial(c);
  if (c->nfiles > 0) {
    const char *types[CFG_MAX_TYPES];
    for (size_t i = 0; i < c->nfiles; i++)
      types[i] = c->files[i].type;
    cmn_op_send_names(api, self, "119", types, c->nfiles);
  }
  *user_data = c;
  return C8Y_OK;
}

static void cfg_fini(c8y_plugin *self, void *user_data) { cfg_free(user_data); }

C8Y_PLUGIN(.name = "configuration", .version = "1.1.0", .init = cfg_init,
           .fini = cfg_fini);
