/* Fuzzes the downstream dispatcher: the input is an s/ds payload handed to
 * the operation engine with a few handlers and one child registered. The
 * engine must never crash or leak, whatever the records hold, and every
 * operation it starts must end once its 501 is acknowledged and the
 * handlers complete (the handler succeeds, fails or stays pending depending
 * on the operation's first parameter; pending ones complete at the end of
 * the input, some after their timeout). */
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

/* Operations a handler left pending: completed at the end of the input, as
 * a plugin finishing late (possibly after the timeout) would. */
#define MAX_HELD 256
static c8y_operation *held[MAX_HELD];
static size_t nheld;

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_ops: invariant violated: %s\n", what);
    abort();
  }
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int handler(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self;
  (void)ud;
  const char *first = ops_op_field_count(op) ? ops_op_field(op, 0) : "";
  check(ops_op_device(op) != NULL && ops_op_fragment(op) != NULL,
        "operation has device and fragment");
  switch (first[0]) {
  case 'f':
    return C8Y_EIO; /* the engine fails it */
  case 'p':
    if (nheld == MAX_HELD)
      return C8Y_EIO;
    held[nheld++] = op;
    return C8Y_PENDING;
  case 'x':
    check(ops_op_fail(op, first) == C8Y_OK, "explicit fail");
    check(ops_op_fail(op, first) == C8Y_ESTATE, "second completion refused");
    return C8Y_OK;
  default:
    return ops_op_succeed(op, first) == C8Y_OK ? C8Y_OK : C8Y_EIO;
  }
}

static void dispatch(void *ctx, c8y_operation *op) {
  (void)ctx;
  ops_run_handler(op); /* the worker, synchronously */
}

static void wake(void *ctx) { (void)ctx; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fuzz_tmp_state_dir("ops");
  log_set_level(LOG_LVL_ERROR); /* refusals are expected */
  unlink(fuzz_journal_path);

  c8y_plugin *pl = (c8y_plugin *)&plugin_token;
  registry *reg = registry_new();
  check(reg != NULL, "registry_new");
  static const char *const templates[][2] = {{"510", "c8y_Restart"},
                                             {"511", "c8y_Command"},
                                             {"513", "c8y_Configuration"},
                                             {"515", "c8y_Firmware"}};
  for (size_t i = 0; i < sizeof templates / sizeof *templates; i++)
    check(registry_add_handler(reg, pl, templates[i][0], templates[i][1],
                               i == 0 ? 1 : 0, handler, NULL, NULL) == C8Y_OK,
          "add handler");
  check(registry_add_child(reg, pl, ROOT ":device:kid", "kid", "t") == C8Y_OK,
        "add child");

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

  uint64_t first = journal_next_id(j);
  ops_handle_payload(o, (const char *)data, size);
  /* Acknowledge every 501 as it appears; finishing one starts the next of
   * its queue. Bounded: each round finishes at least the heads. */
  uint64_t acked = first;
  for (int round = 0; round < 64; round++) {
    uint64_t next = journal_next_id(j);
    for (uint64_t id = acked + 1; id < next; id++)
      ops_on_acked(o, (upstream_tag){UPSTREAM_TAG_OPERATION, id}, true);
    acked = next;
    ops_process(o, now_ms());
    if (ops_active(o) == 0)
      break;
  }
  if (size % 2) {
    /* Every second time also with the 501s taken as in flight, so the
     * reconcile path after a reconnect is covered too. */
    upstream_tag inflight[64];
    size_t n = 0;
    for (uint64_t id = first; id < journal_next_id(j) && n < 64; id++)
      inflight[n++] = (upstream_tag){UPSTREAM_TAG_OPERATION, id};
    ops_on_disconnect(o, inflight, size % 4 == 1 ? n : 0);
    ops_on_pending_requested(o, now_ms());
    ops_handle_payload(o, (const char *)data, size);
    ops_process(o, now_ms() + 60000);
  }
  for (size_t i = 0; i < nheld; i++) {
    int rc = ops_op_succeed(held[i], NULL);
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
