/* xfer: a plugin that drives the SDK's file transfers from the text of a
 * c8y_Command (511), written only from sdk/README.md:
 *   download <url> <file> [sha256|-] [max_bytes]
 *       -> succeeds with "<bytes> <path>", fails with the agent's reason
 *   upload <path> <type> [child]
 *       -> succeeds with the binary URL, fails with the agent's reason
 * Fails with "no transfers" when the agent predates ABI 1.1.
 * [plugin.xfer] timeout_ms sets the operation timeout (default 120000). */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const c8y_api *api;

static int on_command(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  const char *text = api->op_field(op, 0);
  char buf[2048];
  snprintf(buf, sizeof buf, "%s", text ? text : "");
  char *save = NULL;
  char *verb = strtok_r(buf, " ", &save);
  char *a1 = strtok_r(NULL, " ", &save);
  char *a2 = strtok_r(NULL, " ", &save);
  char *a3 = strtok_r(NULL, " ", &save);
  char *a4 = strtok_r(NULL, " ", &save);
  char why[600];
  if (verb && strcmp(verb, "download") == 0 && a1 && a2) {
    if (!C8Y_API_HAS(api, download))
      return api->op_fail(op, "no transfers");
    c8y_download d = {.size = sizeof d, .url = a1, .file = a2, .op = op};
    if (a3 && strcmp(a3, "-") != 0)
      d.sha256 = a3;
    if (a4)
      d.max_bytes = strtoull(a4, NULL, 10);
    int rc = api->download(self, &d);
    if (rc != C8Y_OK) {
      snprintf(why, sizeof why, "%s (%s, HTTP %ld)", d.error,
               api->status_str(rc), d.http_code);
      return api->op_fail(op, why);
    }
    snprintf(why, sizeof why, "%llu %s", (unsigned long long)d.bytes, d.path);
    return api->op_succeed(op, why);
  }
  if (verb && strcmp(verb, "upload") == 0 && a1 && a2) {
    if (!C8Y_API_HAS(api, upload))
      return api->op_fail(op, "no transfers");
    c8y_upload u = {.size = sizeof u,
                    .path = a1,
                    .type = a2,
                    .text = "xfer upload",
                    .child_id = a3,
                    .content_type = "text/plain",
                    .op = op};
    int rc = api->upload(self, &u);
    if (rc != C8Y_OK) {
      snprintf(why, sizeof why, "%s (%s, HTTP %ld)", u.error,
               api->status_str(rc), u.http_code);
      return api->op_fail(op, why);
    }
    return api->op_succeed(op, u.url);
  }
  return api->op_fail(op, "usage: download <url> <file> [sha] [max] | "
                          "upload <path> <type> [child]");
}

static int xfer_init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  int64_t timeout;
  int rc = api->config_int(self, "timeout_ms", 120000, &timeout);
  if (rc != C8Y_OK)
    return rc;
  return api->add_operation(self, "511", (uint32_t)timeout, on_command, NULL);
}

C8Y_PLUGIN(.name = "xfer", .version = "1.0", .init = xfer_init);
