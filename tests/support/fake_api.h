/* fake_api: a fake c8y-agent host for unit-testing plugins without the core.
 *
 * It fills a c8y_api table whose functions record what the plugin does:
 * registrations, every upstream line (encoded exactly as the agent would send
 * it, prefixed by its topic: "s/us|200,c8y_Temperature,T,25,C"), log lines,
 * and operation results. Config values are set per key beforehand. */
#ifndef C8Y_FAKE_API_H
#define C8Y_FAKE_API_H

#include <c8y/plugin.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct fake_host fake_host;

typedef enum fake_op_state {
  FAKE_OP_RUNNING,   /* handler returned C8Y_PENDING and has not completed */
  FAKE_OP_SUCCEEDED, /* op_succeed / op_succeed_params */
  FAKE_OP_FAILED     /* op_fail, or handler returned an error */
} fake_op_state;

/* device_id: what api->device_id returns. state_dir: a directory that
 * api->state_dir returns (created if missing). */
fake_host *fake_host_new(const char *device_id, const char *state_dir);
void fake_host_free(fake_host *h); /* unloads the plugin if loaded */

/* Config of the plugin's section; call before loading. */
void fake_host_set_config(fake_host *h, const char *key, const char *value);

/* dlopen()s the .so (RTLD_NOW|RTLD_LOCAL), finds c8y_plugin_info_v1 and calls
 * init. Returns init's status (or C8Y_EINVAL if the .so cannot be loaded; the
 * reason is in fake_host_last_log). */
int fake_host_load(fake_host *h, const char *so_path);
/* The same with an info struct linked into the test. */
int fake_host_init(fake_host *h, const c8y_plugin_info *info);
void fake_host_unload(fake_host *h); /* calls fini */

/* Registrations seen during init. */
size_t fake_host_producer_count(fake_host *h);
const char *fake_host_producer_name(fake_host *h, size_t i);
uint32_t fake_host_producer_interval(fake_host *h, size_t i);
bool fake_host_has_operation(fake_host *h, const char *template_id);
uint32_t fake_host_operation_timeout(fake_host *h, const char *template_id);

/* Runs producer `name` once; its samples are recorded as lines. Returns the
 * produce callback's status. */
int fake_host_run_producer(fake_host *h, const char *name);

/* Dispatches a downstream line such as "511,dev1,ls -l" (decoded with the
 * real SmartREST codec) to the registered handler and waits up to
 * timeout_ms for completion (handlers may complete from another thread).
 * Returns the final state; detail (result/reason, borrowed until the next
 * call) via fake_host_op_detail. */
fake_op_state fake_host_run_operation(fake_host *h, const char *line,
                                      int timeout_ms);
const char *fake_host_op_detail(fake_host *h);
/* Params passed to the last op_succeed/op_succeed_params. */
size_t fake_host_op_param_count(fake_host *h);
const char *fake_host_op_param(fake_host *h, size_t i);
bool fake_host_op_reboot_requested(fake_host *h);
/* Makes op_cancelled() return non-zero for the running operation. */
void fake_host_cancel_operation(fake_host *h);

/* Delivers a custom downstream record to a message handler: xid + line. */
int fake_host_deliver_message(fake_host *h, const char *xid, const char *line);

/* Recorded upstream lines "topic|line", in order. */
size_t fake_host_line_count(fake_host *h);
const char *fake_host_line(fake_host *h, size_t i);
/* First recorded line starting with prefix (after "topic|"), or NULL. */
const char *fake_host_find_line(fake_host *h, const char *prefix);
void fake_host_clear_lines(fake_host *h);

/* Log lines "<level> <text>", in order. */
size_t fake_host_log_count(fake_host *h);
const char *fake_host_log(fake_host *h, size_t i);
const char *fake_host_last_log(fake_host *h);

/* ---- Additions (beyond the original interface) ---- */

/* The api table handed to plugins, for tests that call it directly. */
const c8y_api *fake_host_api(void);
/* The current state of the last operation (it may change after
 * fake_host_run_operation returned RUNNING). */
fake_op_state fake_host_op_state(fake_host *h);
/* Waits up to timeout_ms until the plugin called op_succeed/op_fail on the
 * last operation, even after fake_host_cancel_operation (which, like the
 * agent's timeout, marks it FAILED at once; later completions return
 * C8Y_ETIMEDOUT and only release the handle). */
bool fake_host_wait_op_released(fake_host *h, int timeout_ms);
/* True once the last operation's handler function returned. */
bool fake_host_handler_returned(fake_host *h);
/* First log line containing substring, or NULL. */
const char *fake_host_find_log(fake_host *h, const char *substring);

/* ---- ABI 1.1 ---- */
/* api->download / api->upload call these (on the plugin's thread). The
 * host checks the struct and, for downloads, fills d->path with
 * <state_dir>/<file> before the call: the function writes the file there
 * (or fails: status + d->error). A slot whose function is not set before
 * loading is NULL in the table init() gets (an agent without HTTP). */
typedef int (*fake_download_fn)(void *ctx, c8y_download *d);
typedef int (*fake_upload_fn)(void *ctx, c8y_upload *u);
void fake_host_set_transfers(fake_host *h, fake_download_fn download,
                             fake_upload_fn upload, void *ctx);
/* The next fake_host_run_operation looks resumed after an agent restart
 * (op_resumed() true), with op_rebooted() as given. */
void fake_host_set_resumed(fake_host *h, bool rebooted);
/* The plugin called op_resume_after_restart on the last operation. */
bool fake_host_op_resume_requested(fake_host *h);
/* init() gets the table of an ABI 1.0 agent (no transfers, no resume);
 * call before loading. */
void fake_host_set_abi_1_0(fake_host *h);
/* Ready-made transfer functions: download copies the file of a file://
 * URL (a missing one gives C8Y_EHTTP, "HTTP 404 ..."); upload copies the
 * file to <ctx dir>/<n>-<type>-<file name> and answers the URL
 * http://fake/event/events/<n>/binaries. */
int fake_file_download(void *ctx, c8y_download *d);
int fake_dir_upload(void *ctx, c8y_upload *u);

#endif
