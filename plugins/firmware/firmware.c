/* firmware: c8y_Firmware (515, name,version,url) for the agent's own device.
 *
 * The image is streamed by the agent's HTTP client (resumed after a cut),
 * optionally checked by verify_command, and handed to install_command (a
 * RAUC/SWUpdate call or a script). Whether it worked is only known once the
 * device runs the new image, so the operation is marked with
 * op_resume_after_restart before the install: after the reboot the agent
 * hands it back here, and it succeeds only if version_command reports the
 * requested version. A URL of "$PROVIDED" means the platform has no file:
 * install_command must find the image itself. */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include "cmn_cfg.h"
#include "cmn_op.h"
#include "cmn_path.h"
#include "cmn_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FW_PROVIDED "$PROVIDED"
#define FW_INSTALLED "installed" /* name, version, url of the last install */
#define FW_VERSION_TIMEOUT_S 30

typedef struct fw {
  const c8y_api *api;
  c8y_plugin *self;
  const char *install_command;
  const char *version_command;
  const char *verify_command; /* "" = none */
  const char *reboot_command;
  const char *name; /* reported at start before any install; "" = none */
  int reboot;
  int timeout_s;
  int64_t max_bytes;
} fw;

typedef struct fw_req {
  const char *name, *version, *url;
} fw_req;

/* ---- helpers -------------------------------------------------------------
 */

static void fw_env(fw *f, const fw_req *r, const char *file, char (*buf)[4200],
                   const char **env) {
  snprintf(buf[0], sizeof buf[0], "C8Y_FIRMWARE_NAME=%s", r->name);
  snprintf(buf[1], sizeof buf[1], "C8Y_FIRMWARE_VERSION=%s", r->version);
  snprintf(buf[2], sizeof buf[2], "C8Y_FIRMWARE_URL=%s", r->url);
  snprintf(buf[3], sizeof buf[3], "C8Y_FIRMWARE_FILE=%s", file ? file : "");
  snprintf(buf[4], sizeof buf[4], "C8Y_DEVICE_ID=%s",
           f->api->device_id(f->self));
  for (int i = 0; i < 5; i++)
    env[i] = buf[i];
  env[5] = NULL;
}

/* Runs `cmd`; 0 on exit 0, else -1 with "<what> failed (exit 3: ...)". */
static int fw_run(fw *f, c8y_operation *op, const char *what, const char *cmd,
                  const char *const *env, int timeout_s, char **out, char *why,
                  size_t whyn) {
  cmn_proc_opts o = {.env = env,
                     .timeout_s = timeout_s,
                     .api = f->api,
                     .op = op,
                     .out_cap = 4096};
  cmn_proc_result r;
  int rc = cmn_proc_shell(cmd, &o, &r);
  if (rc == 0 && r.exit_code == 0) {
    if (out)
      *out = r.out;
    else
      free(r.out);
    return 0;
  }
  char desc[1200];
  cmn_proc_describe(&r, rc, desc, sizeof desc);
  snprintf(why, whyn, "%s failed (%s)", what, desc);
  free(r.out);
  return -1;
}

/* The running firmware version: the first line of version_command. */
static int running_version(fw *f, c8y_operation *op, char *out, size_t n,
                           char *why, size_t whyn) {
  char *text = NULL;
  if (fw_run(f, op, "version_command", f->version_command, NULL,
             FW_VERSION_TIMEOUT_S, &text, why, whyn) != 0)
    return -1;
  text[strcspn(text, "\r\n")] = '\0';
  snprintf(out, n, "%s", text);
  free(text);
  if (!out[0]) {
    snprintf(why, whyn, "version_command printed no version");
    return -1;
  }
  return 0;
}

static void send_115(fw *f, const char *name, const char *version,
                     const char *url) {
  const char *fields[] = {"115", name, version, url};
  int rc = f->api->send_static(f->self, NULL, fields, 4);
  if (rc < 0)
    f->api->log(f->self, C8Y_LOG_ERROR, "cannot send 115: %s",
                f->api->status_str(rc));
}

static void state_path(fw *f, const char *file, char *out, size_t n) {
  const char *dir = f->api->state_dir(f->self);
  snprintf(out, n, "%s/%s", dir ? dir : ".", file);
}

/* Remembers what was installed, so the start-up 115 can name it. */
static void save_installed(fw *f, const fw_req *r) {
  char path[4096], tmp[4200];
  state_path(f, FW_INSTALLED, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *fp = fopen(tmp, "w");
  int ok = fp && fprintf(fp, "%s\n%s\n%s\n", r->name, r->version, r->url) > 0;
  if (fp && fflush(fp) == 0 && fsync(fileno(fp)) != 0)
    ok = 0;
  if (fp && fclose(fp) != 0)
    ok = 0;
  if (!ok || rename(tmp, path) != 0) {
    f->api->log(f->self, C8Y_LOG_WARNING, "cannot save %s: %s", path,
                strerror(errno));
    unlink(tmp);
  }
}

/* name/version/url of the last install, each "" when unknown. */
static void load_installed(fw *f, char (*v)[1024]) {
  char path[4096];
  state_path(f, FW_INSTALLED, path, sizeof path);
  for (int i = 0; i < 3; i++)
    v[i][0] = '\0';
  FILE *fp = fopen(path, "r");
  if (!fp)
    return;
  for (int i = 0; i < 3 && fgets(v[i], sizeof v[i], fp); i++)
    v[i][strcspn(v[i], "\n")] = '\0';
  fclose(fp);
}

/* Names, versions and URLs become lines of the state file and environment
 * values: control characters would corrupt both. */
static int printable(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 0;
  return 1;
}

/* ---- 515 -------------------------------------------------------------------
 */

static int succeed(fw *f, c8y_operation *op, const fw_req *r) {
  save_installed(f, r);
  send_115(f, r->name, r->version, r->url);
  f->api->log(f->self, C8Y_LOG_NOTICE, "firmware %s %s is running", r->name,
              r->version);
  return f->api->op_succeed(op, NULL);
}

/* The device runs the requested version now, or the operation fails with
 * what it runs instead. */
/* Right after a boot the tool behind version_command may not answer yet:
 * a few attempts, FW_VERSION_RETRY_S apart, before giving up. */
#define FW_VERSION_ATTEMPTS 5
#define FW_VERSION_RETRY_S 3

static int running_version_retried(fw *f, c8y_operation *op, char *out,
                                   size_t n, char *why, size_t whyn) {
  for (int attempt = 1;; attempt++) {
    if (running_version(f, op, out, n, why, whyn) == 0)
      return 0;
    if (attempt == FW_VERSION_ATTEMPTS || f->api->op_cancelled(op))
      return -1;
    f->api->log(f->self, C8Y_LOG_WARNING, "%s; trying again in %d s", why,
                FW_VERSION_RETRY_S);
    for (int i = 0; i < FW_VERSION_RETRY_S * 10 && !f->api->op_cancelled(op);
         i++) {
      struct timespec ts = {0, 100 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
}

static int check_running(fw *f, c8y_operation *op, const fw_req *r,
                         const char *when) {
  char running[512], why[1400];
  if (running_version_retried(f, op, running, sizeof running, why,
                              sizeof why) != 0)
    return f->api->op_fail(op, why);
  if (strcmp(running, r->version) == 0)
    return succeed(f, op, r);
  snprintf(why, sizeof why,
           "%s the running firmware version is '%.200s', not '%.200s'", when,
           running, r->version);
  f->api->log(f->self, C8Y_LOG_ERROR, "%s", why);
  return f->api->op_fail(op, why);
}

static int on_resumed(fw *f, c8y_operation *op, const fw_req *r) {
  if (f->api->op_rebooted(op))
    return check_running(f, op, r,
                         "after the reboot (the new image did not boot or "
                         "was rolled back)");
  /* The agent restarted but the machine did not: fine for an install that
   * needs no reboot, a failure for one still waiting for it. */
  return check_running(f, op, r,
                       "the agent restarted without a reboot of the device;");
}

static int fetch_image(fw *f, c8y_operation *op, const fw_req *r, char *path,
                       size_t n, char *why, size_t whyn) {
  /* One name for every image: a partial download is resumed only for the
   * same URL (the agent checks), and at most one image occupies the disk. */
  c8y_download d = {.size = sizeof d,
                    .url = r->url,
                    .file = "image",
                    .max_bytes = (uint64_t)f->max_bytes,
                    .op = op};
  int rc = f->api->download(f->self, &d);
  if (rc != C8Y_OK) {
    snprintf(why, whyn, "download of firmware %.200s %.100s failed: %s",
             r->name, r->version,
             d.error[0] ? d.error : f->api->status_str(rc));
    return -1;
  }
  snprintf(path, n, "%s", d.path);
  f->api->log(f->self, C8Y_LOG_INFO, "downloaded %llu bytes of %s %s",
              (unsigned long long)d.bytes, r->name, r->version);
  return 0;
}

static int on_firmware(c8y_plugin *self, c8y_operation *op, void *ud) {
  fw *f = ud;
  const c8y_api *api = f->api;
  if (!cmn_op_for_self(api, self, op) ||
      !cmn_op_fields(api, op, 3,
                     "c8y_Firmware: expected 3 fields (name,version,url)"))
    return C8Y_OK;
  fw_req r = {api->op_field(op, 0), api->op_field(op, 1), api->op_field(op, 2)};
  if (!r.name[0] || !r.version[0])
    return api->op_fail(op, "c8y_Firmware: name and version must not be "
                            "empty");
  if (!printable(r.name) || !printable(r.version) || !printable(r.url))
    return api->op_fail(op, "c8y_Firmware: name, version and url must not "
                            "contain control characters");
  if (api->op_resumed(op))
    return on_resumed(f, op, &r);

  char running[512], why[1400];
  if (running_version(f, op, running, sizeof running, why, sizeof why) != 0)
    return api->op_fail(op, why);
  if (strcmp(running, r.version) == 0) {
    api->log(self, C8Y_LOG_NOTICE,
             "firmware version %s is already running; nothing to install",
             r.version);
    return succeed(f, op, &r);
  }
  bool provided = strcmp(r.url, FW_PROVIDED) == 0;
  if (!provided && !r.url[0])
    return api->op_fail(op, "c8y_Firmware: empty url");
  char image[512] = "";
  if (!provided &&
      fetch_image(f, op, &r, image, sizeof image, why, sizeof why) != 0) {
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    return api->op_fail(op, why);
  }
  char envbuf[5][4200];
  const char *env[6];
  fw_env(f, &r, image, envbuf, env);
  int rc = 0;
  if (f->verify_command[0])
    rc = fw_run(f, op, "verify_command", f->verify_command, env, f->timeout_s,
                NULL, why, sizeof why);
  /* From here on the outcome is decided after a restart. */
  if (rc == 0 && f->reboot && (rc = api->op_resume_after_restart(op)) != 0)
    snprintf(why, sizeof why, "cannot record the operation for the reboot: %s",
             api->status_str(rc));
  if (rc == 0)
    rc = fw_run(f, op, "install_command", f->install_command, env, f->timeout_s,
                NULL, why, sizeof why);
  if (image[0])
    unlink(image); /* installed into the other slot, or refused */
  if (rc != 0) {
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    return api->op_fail(op, why);
  }
  if (!f->reboot)
    return check_running(f, op, &r, "after install_command");
  api->log(self, C8Y_LOG_NOTICE,
           "firmware %s %s installed; rebooting with '%s'", r.name, r.version,
           f->reboot_command);
  if (fw_run(f, op, "reboot_command", f->reboot_command, env, 60, NULL, why,
             sizeof why) != 0) {
    api->log(self, C8Y_LOG_ERROR, "%s", why);
    return api->op_fail(op, why);
  }
  return C8Y_PENDING; /* decided after the reboot (on_resumed) */
}

/* ---- lifecycle -------------------------------------------------------------
 */

/* 115 with what runs now; the name and URL of the last install if that is
 * still the running version. */
static void report_initial(fw *f) {
  char running[512], why[1400], last[3][1024];
  if (running_version(f, NULL, running, sizeof running, why, sizeof why) != 0) {
    f->api->log(f->self, C8Y_LOG_WARNING, "firmware not reported: %s", why);
    return;
  }
  load_installed(f, last);
  bool same = last[0][0] && strcmp(last[1], running) == 0;
  const char *name = last[0][0] ? last[0] : f->name;
  if (!name[0]) {
    f->api->log(f->self, C8Y_LOG_NOTICE,
                "firmware version %s not reported: set `name`", running);
    return;
  }
  send_115(f, name, running, same ? last[2] : "");
}

static int read_config(fw *f) {
  const c8y_api *api = f->api;
  c8y_plugin *self = f->self;
  f->install_command = api->config_string(self, "install_command", "");
  f->version_command = api->config_string(self, "version_command", "");
  f->verify_command = api->config_string(self, "verify_command", "");
  f->reboot_command =
      api->config_string(self, "reboot_command", "/sbin/reboot");
  f->name = api->config_string(self, "name", "");
  int64_t timeout;
  int rc = api->config_bool(self, "reboot", 1, &f->reboot);
  if (rc == C8Y_OK)
    rc = cmn_cfg_int(api, self, "timeout", 3600, 1, 7 * 86400, " seconds",
                     &timeout);
  if (rc == C8Y_OK)
    rc = cmn_cfg_int(api, self, "max_image_size", 0, 0, INT64_MAX / 2, " bytes",
                     &f->max_bytes);
  if (rc != C8Y_OK)
    return rc;
  f->timeout_s = (int)timeout;
  if (f->install_command[0] && !f->version_command[0]) {
    api->log(self, C8Y_LOG_ERROR,
             "install_command: needs version_command (the running version "
             "decides whether an install worked)");
    return C8Y_EINVAL;
  }
  if (f->reboot && !f->reboot_command[strspn(f->reboot_command, " \t")]) {
    api->log(self, C8Y_LOG_ERROR, "reboot_command: must not be empty");
    return C8Y_EINVAL;
  }
  if (!printable(f->name)) {
    api->log(self, C8Y_LOG_ERROR, "name: contains control characters");
    return C8Y_EINVAL;
  }
  if (cmn_path_check_key(api, self, "install_command", f->install_command) !=
          C8Y_OK ||
      cmn_path_check_key(api, self, "version_command", f->version_command) !=
          C8Y_OK ||
      cmn_path_check_key(api, self, "verify_command", f->verify_command) !=
          C8Y_OK ||
      (f->reboot && cmn_path_check_key(api, self, "reboot_command",
                                       f->reboot_command) != C8Y_OK))
    return C8Y_EINVAL;
  return C8Y_OK;
}

static int init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  fw *f = calloc(1, sizeof *f);
  if (!f)
    return C8Y_ENOMEM;
  f->api = api;
  f->self = self;
  int rc = read_config(f);
  if (rc != C8Y_OK) {
    free(f);
    return rc;
  }
  bool sdk = C8Y_API_HAS(api, download) && C8Y_API_HAS(api, op_rebooted);
  if (f->install_command[0] && sdk) {
    /* After a reboot the timeout starts again for the version check. */
    rc = api->add_operation(self, "515", (uint32_t)f->timeout_s * 1000,
                            on_firmware, f);
    if (rc != C8Y_OK) {
      free(f);
      return rc;
    }
  } else if (f->install_command[0]) {
    api->log(self, C8Y_LOG_NOTICE,
             "this agent lacks SDK 1.1 (download, resume after restart): "
             "c8y_Firmware (515) is not handled");
  } else {
    api->log(self, C8Y_LOG_NOTICE,
             "install_command not set: c8y_Firmware (515) is not handled");
  }
  if (f->version_command[0])
    report_initial(f);
  *user_data = f;
  return C8Y_OK;
}

static void fini(c8y_plugin *self, void *user_data) {
  (void)self;
  /* An operation waiting for its reboot stays with the agent's journal. */
  free(user_data);
}

C8Y_PLUGIN(.name = "firmware", .version = "1.0.0", .init = init, .fini = fini);
