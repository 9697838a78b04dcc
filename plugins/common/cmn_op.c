#include "cmn_op.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
                      const char *template_id, const char *const *names,
                      size_t n) {
  const char **fields = calloc(n + 1, sizeof *fields);
  if (!fields)
    return C8Y_ENOMEM;
  fields[0] = template_id;
  for (size_t i = 0; i < n; i++)
    fields[i + 1] = names[i];
  int rc = api->send_static(self, NULL, fields, n + 1);
  if (rc < 0)
    api->log(self, C8Y_LOG_ERROR, "cannot send %s: %s", template_id,
             api->status_str(rc));
  free(fields);
  return rc;
}
