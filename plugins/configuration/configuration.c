/* configuration: the device's text configuration (513 c8y_Configuration)
 * and, with an HTTP helper, typed configuration files (524/526).
 *
 * Text configuration is written atomically, optionally applied by a command
 * and rolled back when that command fails. Typed file transfers need HTTP
 * (binaries API), which the agent does not speak: an external helper does
 * it, and without one the typed operations are not offered at all. */
#include <c8y/plugin.h>

#include "cmn_cfg.h"
#include "cmn_csv.h"
#include "cmn_op.h"
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

#define CFG_REPORT_MAX 15000              /* encoded 113 line, below 16000 */
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
  cmn_proc_opts o = {.env = env,
                     .timeout_s = c->timeout_s,
                     .api = api,
                     .op = op,
                     .out_cap = 64 * 1024};
  cmn_proc_result r;
  int rc = cmn_proc_run(argv, &o, &r);
  free(r.out);
  struct stat st;
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    cmn_proc_describe(&r, rc, desc, sizeof(desc));
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
  char env_dev[300], env_type[300];
  snprintf(env_dev, sizeof(env_dev), "C8Y_DEVICE_ID=%s", api->device_id(self));
  snprintf(env_type, sizeof(env_type), "C8Y_CONFIG_TYPE=%s", f->type);
  const char *env[] = {env_dev, env_type, NULL};
  char *argv[] = {(char *)c->http_helper, "upload", (char *)f->type,
                  (char *)f->path, NULL};
  cmn_proc_opts o = {.env = env,
                     .timeout_s = c->timeout_s,
                     .api = api,
                     .op = op,
                     .out_cap = 64 * 1024};
  cmn_proc_result r;
  int rc = cmn_proc_run(argv, &o, &r);
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    cmn_proc_describe(&r, rc, desc, sizeof(desc));
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
    const char *types[CFG_MAX_TYPES];
    for (size_t i = 0; i < c->nfiles; i++)
      types[i] = c->files[i].type;
    cmn_send_names(api, self, "119", types, c->nfiles);
  }
  *user_data = c;
  return C8Y_OK;
}

static void cfg_fini(c8y_plugin *self, void *user_data) { cfg_free(user_data); }

C8Y_PLUGIN(.name = "configuration", .version = "1.0.0", .init = cfg_init,
           .fini = cfg_fini);
