/* Fuzzes the engine's JSON side: the input is a devicecontrol/notifications
 * payload (or, split at a line "--", an s/ds payload and then one for
 * devicecontrol/notifications, so the matching of the two copies of one
 * operation is covered too), handed to the engine with template handlers,
 * fragment handlers for the root and for the children, a custom template
 * operation and one child registered. Whatever the documents hold, the
 * engine must not crash or leak; every operation it dispatches has a
 * device, a fragment and (when its JSON copy was matched) an id, and ends
 * once its start is acknowledged and the handlers complete. */
#include "fuzz_tmp.h"
#include "journal.h"
#include "log.h"
#include "ops.h"
#include "outq.h"
#include "registry.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROOT "fuzz-root"

static int plugin_token; /* stands in for the owning plugin */

#define MAX_HELD 256
static c8y_operation *held[MAX_HELD];
static size_t nheld;

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_ops_json: invariant violated: %s\n", what);
    abort();
  }
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What to do: the document's "<fragment>.do", else the first parameter. */
static int handler(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self;
  (void)ud;
  const char *fragment = ops_op_fragment(op);
  check(ops_op_device(op) != NULL && fragment != NULL,
        "operation has device and fragment");
  check(!ops_op_json(op) || ops_op_id(op), "a JSON copy brings its id");
  char path[160];
  snprintf(path, sizeof path, "%s.do", fragment);
  const char *what = ops_op_json_value(op, path);
  if (!what)
    what = ops_op_field_count(op) ? ops_op_field(op, 0) : "";
  switch (what[0]) {
  case 'f':
    return C8Y_EIO;
  case 'p':
    if (nheld == MAX_HELD)
      return C8Y_EIO;
    held[nheld++] = op;
    return C8Y_PENDING;
  case 'r':
    ops_op_resume_after_restart(op);
    return ops_op_succeed(op, what) == C8Y_OK ? C8Y_OK : C8Y_EIO;
  default: {
    const char *params[] = {what, ops_op_json_value(op, "description")};
    check(ops_op_succeed_params(op, params, params[1] ? 2 : 1) == C8Y_OK,
          "success");
    check(ops_op_fail(op, "again") == C8Y_ESTATE, "second completion refused");
    return C8Y_OK;
  }
  }
}

static void dispatch(void *ctx, c8y_operation *op) {
  (void)ctx;
  ops_run_handler(op);
}

static void wake(void *ctx) { (void)ctx; }

static void ack_all(ops *o, journal *j, uint64_t *acked) {
  for (int round = 0; round < 64; round++) {
    uint64_t next = journal_next_id(j);
    for (uint64_t id = *acked; id < next; id++)
      ops_on_acked(o, (upstream_tag){UPSTREAM_TAG_OPERATION, id}, true);
    *acked = next;
    ops_process(o, now_ms());
    if (ops_active(o) == 0)
      break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fuzz_tmp_state_dir("ops_json");
  log_set_level(LOG_LVL_ERROR); /* refusals are expected */
  unlink(fuzz_journal_path);

  c8y_plugin *pl = (c8y_plugin *)&plugin_token;
  registry *reg = registry_new();
  check(reg != NULL, "registry_new");
  check(registry_add_handler(reg, pl, "511", "c8y_Command", 0, handler, NULL,
                             NULL) == C8Y_OK,
        "add 511");
  check(registry_add_handler(reg, pl, "510", "c8y_Restart", 1, handler, NULL,
                             NULL) == C8Y_OK,
        "add 510");
  check(registry_add_scoped_handler(reg, pl, NULL, "acme_Reset", REG_SCOPE_ROOT,
                                    NULL, 0, handler, NULL, NULL) == C8Y_OK,
        "add acme_Reset");
  check(registry_add_scoped_handler(reg, pl, NULL, "acme_Blink",
                                    REG_SCOPE_OWN_CHILDREN, NULL, 0, handler,
                                    NULL, NULL) == C8Y_OK,
        "add acme_Blink");
  check(registry_add_template_op(reg, pl, "acme", "dm1", "acme_Reset") ==
            C8Y_OK,
        "add template op");
  check(registry_add_child(reg, pl, "kid", "kid", "t") == C8Y_OK, "add child");

  outq_options qo;
  outq_default_options(&qo, NULL);
  qo.max_bytes = 64 * 1024;
  outq *q = NULL;
  char err[256];
  journal *j = NULL;
  check(outq_open(&qo, &q, err, sizeof err) == 0, "outq_open");
  check(journal_open(dir, &j, err, sizeof err) == 0, "journal_open");
  ops_host host = {.ctx = NULL, .dispatch = dispatch, .wake = wake};
  ops *o = NULL;
  upstream up = {.q = q, .reg = reg};
  check(ops_new(ROOT, reg, &up, j, &host, 60000, &o) == 0, "ops_new");
  ops_set_cancel_grace(o, 0);

  const char *text = (const char *)data;
  const char *sep = size >= 4 ? memmem(text, size, "\n--\n", 4) : NULL;
  size_t json_off = sep ? (size_t)(sep - text) + 4 : 0;
  uint64_t acked = journal_next_id(j);
  if (sep)
    ops_handle_payload(o, text, (size_t)(sep - text));
  ops_handle_json(o, text + json_off, size - json_off);
  ack_all(o, j, &acked);
  /* The child arrives later (parked copies run now), and the same input
   * once more, as a reconnect's 500 publishes it again. */
  registry_add_child(reg, pl, "late-kid", "late", "t");
  ops_children_changed(o);
  ack_all(o, j, &acked);
  if (size % 2) {
    upstream_tag inflight[64];
    size_t n = 0;
    for (uint64_t id = 1; id < journal_next_id(j) && n < 64; id++)
      inflight[n++] = (upstream_tag){UPSTREAM_TAG_OPERATION, id};
    ops_on_disconnect(o, inflight, size % 4 == 1 ? n : 0);
    ops_on_pending_requested(o, now_ms());
    if (sep)
      ops_handle_payload(o, text, (size_t)(sep - text));
    ops_handle_json(o, text + json_off, size - json_off);
    ops_process(o, now_ms() + 120000);
    ack_all(o, j, &acked);
  }
  for (size_t i = 0; i < nheld; i++) {
    int rc = ops_op_fail(held[i], "late");
    check(rc == C8Y_OK || rc == C8Y_ETIMEDOUT || rc == C8Y_ESTATE,
          "late completion");
  }
  nheld = 0;
  ops_process(o, now_ms());
  ops_stop(o);
  ops_free(o);
  journal_close(j);
  outq_close(q);
  registry_free(reg);
  return 0;
}
