/* lg_diag: `c8y-agent diag` on a 522 for LG_DIAG_NAME (see lg_diag.h). */
#define _GNU_SOURCE
#include "lg_diag.h"

#include "cmn_cfg.h"
#include "cmn_op.h"
#include "cmn_proc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int lg_diag_configure(const c8y_api *api, c8y_plugin *self, lg_diag *d) {
  int on = 1;
  int rc = api->config_bool(self, "diag", 1, &on);
  if (rc != C8Y_OK)
    return rc;
  rc = cmn_cfg_program(api, self, "diag_program", &d->program);
  if (rc != C8Y_OK)
    return rc;
  if (!d->program[0]) {
    /* Running inside the agent: its own binary. */
    ssize_t len =
        readlink("/proc/self/exe", d->self_exe, sizeof(d->self_exe) - 1);
    if (len <= 0) {
      if (on)
        api->log(self, C8Y_LOG_WARNING,
                 "diag: cannot find the agent's binary (%s); the %s log is "
                 "not offered (set diag_program)",
                 strerror(errno), LG_DIAG_NAME);
      on = 0;
    } else {
      d->self_exe[len] = '\0';
      d->program = d->self_exe;
    }
  }
  d->enabled = on && C8Y_API_HAS(api, upload);
  return C8Y_OK;
}

int lg_diag_request(const lg_diag *d, const c8y_api *api, c8y_plugin *self,
                    c8y_operation *op, int timeout_s, size_t lines, char *url,
                    size_t urln, char *why, size_t n) {
  char stamp[32], path[4200], nlines[32];
  const char *dir = cmn_op_state_stamp(api, self, stamp, why, n);
  if (!dir)
    return C8Y_EIO;
  if (snprintf(path, sizeof(path), "%s/%s-%s.tar.gz", dir, LG_DIAG_NAME,
               stamp) >= (int)sizeof(path)) {
    snprintf(why, n, "state directory path too long");
    return C8Y_EIO;
  }
  snprintf(nlines, sizeof(nlines), "%zu", lines);
  /* The agent's configuration reaches the child as C8Y_AGENT_CONFIG. */
  char *argv[] = {(char *)d->program, "diag", "--output", path,
                  "--lines",          nlines, NULL};
  cmn_proc_opts o = {
      .timeout_s = timeout_s, .api = api, .op = op, .out_cap = 4096};
  cmn_proc_result r;
  int rc = cmn_proc_run(argv, &o, &r);
  free(r.out);
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    cmn_proc_describe(&r, rc, desc, sizeof(desc));
    snprintf(why, n, "c8y-agent diag failed (%s)", desc);
    unlink(path);
    return C8Y_EIO;
  }
  const char *base = strrchr(path, '/') + 1;
  c8y_upload u = {.size = sizeof(u),
                  .path = path,
                  .type = "c8y_Logfile",
                  .text = "Support bundle '" LG_DIAG_NAME "' (c8y-agent diag)",
                  .content_type = "application/gzip",
                  .file_name = base,
                  .op = op};
  rc = api->upload(self, &u);
  /* Made on demand and holding the configuration: not kept. */
  unlink(path);
  if (rc != C8Y_OK) {
    snprintf(why, n, "upload of log '%s' failed: %s", LG_DIAG_NAME,
             u.error[0] ? u.error : api->status_str(rc));
    return rc;
  }
  api->log(self, C8Y_LOG_INFO, "log '%s': support bundle uploaded",
           LG_DIAG_NAME);
  snprintf(url, urln, "%s", u.url);
  return C8Y_OK;
}
