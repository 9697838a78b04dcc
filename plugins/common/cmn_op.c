#define _POSIX_C_SOURCE 200809L
#include "cmn_op.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cmn_op_for_self(const c8y_api *api, c8y_plugin *self, c8y_operation *op) {
  const char *dev = api->op_device(op);
  if (dev && strcmp(dev, api->device_id(self)) != 0) {
    char why[300];
    snprintf(why, sizeof(why), "%s is not supported for child device '%.200s'",
             api->op_fragment(op), dev);
    api->op_fail(op, why);
    return 0;
  }
  return 1;
}

const char *cmn_op_state_stamp(const c8y_api *api, c8y_plugin *self,
                               char stamp[32], char *why, size_t whyn) {
  const char *dir = api->state_dir(self);
  if (!dir) {
    snprintf(why, whyn, "the plugin has no state directory");
    return NULL;
  }
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(stamp, 32, "%Y%m%dT%H%M%SZ", &tm);
  return dir;
}

int cmn_op_upload(const c8y_api *api, c8y_plugin *self, c8y_upload *u,
                  const char *what, char *url, size_t urln, char *why,
                  size_t whyn) {
  int rc = api->upload(self, u);
  if (rc != C8Y_OK)
    snprintf(why, whyn, "upload of %s failed: %s", what,
             u->error[0] ? u->error : api->status_str(rc));
  else
    snprintf(url, urln, "%s", u->url);
  return rc;
}

int cmn_op_fields(const c8y_api *api, c8y_operation *op, size_t n,
                  const char *usage) {
  size_t got = api->op_field_count(op);
  if (got == n)
    return 1;
  char why[400];
  snprintf(why, sizeof(why), "%.300s, got %zu", usage, got);
  api->op_fail(op, why);
  return 0;
}

int cmn_op_send_names(const c8y_api *api, c8y_plugin *self,
                      const char *template_id, const void *table, size_t stride,
                      size_t offset, size_t n) {
  if (n == 0)
    return C8Y_OK;
  const char **fields = calloc(n + 1, sizeof *fields);
  if (!fields)
    return C8Y_ENOMEM;
  fields[0] = template_id;
  for (size_t i = 0; i < n; i++)
    memcpy(&fields[i + 1], (const char *)table + i * stride + offset,
           sizeof fields[i + 1]);
  int rc = api->send_static(self, NULL, fields, n + 1);
  if (rc < 0)
    api->log(self, C8Y_LOG_ERROR, "cannot send %s: %s", template_id,
             api->status_str(rc));
  free(fields);
  return rc;
}
