/* old11: a plugin built against the ABI 1.1 header (tests/sdk/v1_1), as a
 * 1.1 author built it, loaded into the current agent. It handles 511:
 *   download <url>   -> c8y_download (the 1.1 struct), succeeds with
 *                       "bytes=<n> file=<name> size=<sizeof>"
 *   upload <path>    -> c8y_upload (the 1.1 struct), succeeds with the URL
 *   hang             -> PENDING until op_cancelled, then op_fail
 * and logs what it was given: "old11: agent abi 1.<minor>". */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#if C8Y_ABI_MINOR != 1
#error "old11 must be built against the ABI 1.1 header"
#endif

static const c8y_api *api;

static int on_command(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  const char *text = api->op_field(op, 0) ? api->op_field(op, 0) : "";
  char result[900];
  if (strncmp(text, "download ", 9) == 0) {
    c8y_download d;
    memset(&d, 0, sizeof d);
    d.size = sizeof d;
    d.url = text + 9;
    d.file = "old11.bin";
    d.op = op;
    int rc = api->download(self, &d);
    if (rc != C8Y_OK)
      return api->op_fail(op, d.error[0] ? d.error : api->status_str(rc));
    const char *base = strrchr(d.path, '/');
    snprintf(result, sizeof result, "bytes=%llu file=%s size=%zu",
             (unsigned long long)d.bytes, base ? base + 1 : d.path, d.size);
    return api->op_succeed(op, result);
  }
  if (strncmp(text, "upload ", 7) == 0) {
    c8y_upload u;
    memset(&u, 0, sizeof u);
    u.size = sizeof u;
    u.path = text + 7;
    u.type = "old11_File";
    u.op = op;
    int rc = api->upload(self, &u);
    if (rc != C8Y_OK)
      return api->op_fail(op, u.error[0] ? u.error : api->status_str(rc));
    return api->op_succeed(op, u.url);
  }
  if (strcmp(text, "hang") == 0) {
    while (!api->op_cancelled(op)) {
      struct timespec ts = {0, 20 * 1000000L};
      nanosleep(&ts, NULL);
    }
    return api->op_fail(op, "old11 stopped");
  }
  return api->op_fail(op, "unknown command");
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  if (!C8Y_API_HAS(api, download) || !C8Y_API_HAS(api, add_child_operation))
    return C8Y_ENOTSUP;
  api->log(self, C8Y_LOG_INFO, "old11: agent abi %u.%u, table %zu bytes",
           (unsigned)api->abi_major, (unsigned)api->abi_minor, api->size);
  return api->add_operation(self, "511", 0, on_command, NULL);
}

C8Y_PLUGIN(.name = "old11", .version = "1.1", .init = init);
