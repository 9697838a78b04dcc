/* testhost: the real plugin host for plugin tests, without MQTT.
 *
 * It runs the agent's own modules through agent/src/capture (which
 * c8y-plugin-check runs too): the loader, the plugin host (plugin_host.c:
 * api table, batches, one worker per plugin), the operation engine (ops.c,
 * with a real journal in the state dir), the registry and an outq opened
 * memory-only. What would be published is captured by taking batches from
 * the queue and acknowledging them, feeding the 501 acks back to the engine
 * as the agent's drain does; the test thread plays the main loop. Only the
 * test controls are its own: config keys, running a producer now,
 * injecting an s/ds line, and reading the captured lines and log lines.
 *
 * A restart of the agent is testhost_free + testhost_new on the same state
 * dir: the journal lives there, as the agent's does, so what the plugin
 * left executing is settled or resumed by the next host. A reboot between
 * the two is a new boot id: the journal reads it from the file named by
 * C8Y_BOOT_ID_FILE (set it before the first testhost_new). */
#ifndef C8Y_TESTHOST_H
#define C8Y_TESTHOST_H

#include <c8y/plugin.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct testhost testhost;

typedef enum testhost_op_state {
  TESTHOST_OP_RUNNING,   /* no 503/502 queued yet */
  TESTHOST_OP_SUCCEEDED, /* the engine queued its 503 */
  TESTHOST_OP_FAILED     /* the engine queued its 502 */
} testhost_op_state;

/* state_dir: the agent's state dir (NULL = a temporary one, removed by
 * testhost_free); plugins get <state_dir>/plugins/<name> as the real agent
 * gives them. Opens the journal there and recovers what a previous host
 * left executing (ops_recover): its 502/503 lines are captured. */
testhost *testhost_new(const char *device_id, const char *state_dir);
void testhost_free(testhost *h); /* unloads the plugin if loaded */

/* A key of the plugin's [plugin.<name>] section; call before loading. */
void testhost_set_config(testhost *h, const char *key, const char *value);

/* Loads the .so through the agent's loader (loader_load_file: its checks,
 * dlopen, init, then its worker), then resumes the operations recovered
 * by testhost_new (ops_resume): wait for one with testhost_wait_op_done.
 * Returns init's status, or C8Y_EINVAL for a file the loader refuses
 * (negative: the plugin was not loaded, its registrations rolled back,
 * "plugin <path> refused: why" logged). */
int testhost_load(testhost *h, const char *so_path);
/* The agent's stop: running operations are cancelled and, after the grace
 * time, failed (except those waiting for a reboot or restart), the worker
 * stops and fini runs (plugin_host_fini_plugin). */
void testhost_unload(testhost *h);

/* What the plugin registered (from the real registry). */
size_t testhost_producer_count(testhost *h);
const char *testhost_producer_name(testhost *h, size_t i);
uint32_t testhost_producer_interval(testhost *h, size_t i);
bool testhost_has_operation(testhost *h, const char *template_id);
uint32_t testhost_operation_timeout(testhost *h, const char *template_id);

/* Queues producer `name` on the plugin's worker, waits for it and for its
 * lines to be captured. Returns the produce callback's status. */
int testhost_run_producer(testhost *h, const char *name);

/* Hands a downstream s/ds line (e.g. "511,dev1,ls -l") to the engine and
 * runs the main loop's part until the operation's 503/502 is queued or
 * timeout_ms passed. Detail: the 502's reason or the 503's fields after
 * the fragment, decoded and joined by ','. */
testhost_op_state testhost_run_operation(testhost *h, const char *line,
                                         int timeout_ms);
/* Whether a handler serves `fragment` for the root device. */
bool testhost_has_fragment(testhost *h, const char *fragment);
/* The same for a JSON operation as devicecontrol/notifications carries it
 * ({"id":"7","c8y_X":{...}} for the root; "externalSource" names a child
 * or a service). */
testhost_op_state testhost_run_json_operation(testhost *h, const char *json,
                                              int timeout_ms);
const char *testhost_op_detail(testhost *h);
testhost_op_state testhost_op_state_now(testhost *h);

/* The fields of the last operation's 503 after the fragment, decoded. */
size_t testhost_op_param_count(testhost *h);
const char *testhost_op_param(testhost *h, size_t i);
/* The agent's shutdown step 1 (ops_cancel_running): op_cancelled() turns
 * true for the running operation; the plugin still has to complete it. */
void testhost_cancel_operation(testhost *h);
/* Runs the main loop until the last operation's 503/502 is queued. */
bool testhost_wait_op_done(testhost *h, int timeout_ms);

/* Moves the engine's clock forward (operation timeouts) and runs a
 * main-loop turn. */
void testhost_advance(testhost *h, long long ms);
/* True once the last operation's handler function returned (its worker
 * job ended). */
bool testhost_handler_returned(testhost *h);
/* Runs the main loop until then, at most timeout_ms; false if it did not. */
bool testhost_wait_handler_returned(testhost *h, int timeout_ms);
/* The plugin called op_complete_on_reboot on the last operation (observed
 * by a wrapper around the real slot that calls it first). */
bool testhost_op_reboot_requested(testhost *h);
/* The same for op_resume_after_restart. */
bool testhost_op_resume_requested(testhost *h);

/* ---- Crashes, for a forked child playing the agent ----
 * The process SIGKILLs itself at that point of an operation, as a kill -9
 * or a power cut would stop the agent there; the test then starts a new
 * host on the same state dir (the journal and the plugin's files are what
 * the next start finds; the queue is memory-only, so statuses queued before
 * are lost as unsent ones would be). */
typedef enum testhost_crash {
  TESTHOST_CRASH_NONE,
  /* op_resume_after_restart returned, its mark journaled */
  TESTHOST_CRASH_AFTER_RESUME_MARK,
  /* the plugin calls op_succeed/op_fail: the engine never sees it */
  TESTHOST_CRASH_AT_COMPLETION
} testhost_crash;
void testhost_crash_at(testhost *h, testhost_crash when);

/* Hands a custom downstream record "<message id>,<fields>" of template
 * `xid` to its handler on the plugin's worker, as the agent's dispatcher
 * does. C8Y_EINVAL if no handler serves it. */
int testhost_deliver_message(testhost *h, const char *xid, const char *line);

/* ---- Transfers: the one deviation from the real api table ----
 * The real api->download/upload need Cumulocity's REST side over HTTPS.
 * After testhost_enable_transfers (before loading) the plugin's init gets a
 * copy of the real table whose download and upload slots are replaced (all
 * other slots stay the agent's): a download of a URL registered with
 * testhost_add_download copies that file into the plugin's state dir,
 * honouring max_bytes (C8Y_ETOOBIG) and sha256 (C8Y_ECHECKSUM); other URLs
 * fail with C8Y_EHTTP "HTTP 404 from testhost: not found".
 * testhost_fail_transfers makes every transfer return `status` with `reason`
 * (0 = stop). Uploads are recorded and answered with
 * "testhost://binaries/<n>" (n from 1). */
void testhost_enable_transfers(testhost *h);
void testhost_add_download(testhost *h, const char *url, const char *path);
void testhost_fail_transfers(testhost *h, int status, const char *reason);
size_t testhost_download_count(testhost *h); /* calls, also failed ones */
size_t testhost_upload_count(testhost *h);
/* Upload i's "type", "child" ("" = root), "file_name", "content_type",
 * "text" or "content" (the file's bytes as text); borrowed until free. */
const char *testhost_upload_field(testhost *h, size_t i, const char *field);
/* init() gets the table as an ABI 1.0 agent has it (no transfers, no
 * resume): call before loading. */
void testhost_set_abi_1_0(testhost *h);

/* ---- The platform: api->platform_auth (ABI 1.2) ----
 * After testhost_set_platform (before loading) the host has the agent's own
 * REST client (http.c) for [c8y] http_url = `http_url` with Basic
 * "t1/device:secret" (what sim_http accepts by default); `ca_path` as
 * [c8y] ca_path (NULL = the system's). Without it platform_auth fails with
 * C8Y_EAUTH, as on an agent that has no REST client. */
void testhost_set_platform(testhost *h, const char *http_url,
                           const char *ca_path);

/* Captured lines "topic|line" in publish order (501/503/502 included). */
size_t testhost_line_count(testhost *h);
const char *testhost_line(testhost *h, size_t i); /* borrowed until clear */
/* First captured line starting with prefix (after "topic|"), or NULL. */
const char *testhost_find_line(testhost *h, const char *prefix);
/* How many captured lines start with prefix (after "topic|"). */
size_t testhost_count_lines(testhost *h, const char *prefix);
void testhost_clear_lines(testhost *h);
/* The same without the engine's operation statuses (501, 502, 503): what
 * the plugin itself sent. */
size_t testhost_sent_count(testhost *h);
const char *testhost_sent(testhost *h, size_t i);

/* The agent's log lines while this host exists, in order. */
size_t testhost_log_count(testhost *h);
const char *testhost_log(testhost *h, size_t i);
const char *testhost_find_log(testhost *h, const char *substring);

#endif
