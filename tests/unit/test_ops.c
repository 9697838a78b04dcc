/* ops: the operation engine through its host interface (dispatch and wake
 * captured, a memory-only queue, a real journal), without a broker. */
#include "ops.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <time.h>

#define ROOT "dev1"

typedef struct {
  char *dir;
  outq *q;
  journal *j;
  registry *reg;
  ops *o;
  GPtrArray *dispatched; /* c8y_operation* handed to the "plugin" */
} fx;

static int handler(c8y_plugin *p, c8y_operation *op, void *ud) {
  return C8Y_PENDING;
}

/* Plays the plugin's worker: runs the handler (which answers PENDING), so
 * the test completes the operation later like a plugin thread would. */
static void on_dispatch(void *ctx, c8y_operation *op) {
  fx *f = ctx;
  g_ptr_array_add(f->dispatched, op);
  ops_run_handler(op);
}

static void on_wake(void *ctx) { (void)ctx; }

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fx_setup(fx *f, gconstpointer d) {
  f->dir = g_dir_make_tmp("c8y-ops-XXXXXX", NULL);
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[256];
  g_assert_cmpint(outq_open(&qo, &f->q, err, sizeof err), ==, 0);
  g_assert_cmpint(journal_open(f->dir, &f->j, err, sizeof err), ==, 0);
  f->reg = registry_new();
  g_assert_nonnull(f->reg);
  c8y_plugin *plugin = (c8y_plugin *)0x1;
  g_assert_cmpint(registry_add_handler(f->reg, plugin, "511", "c8y_Command",
                                       60000, handler, NULL, NULL),
                  ==, C8Y_OK);
  g_assert_cmpint(registry_add_child(f->reg, plugin, "kid", "Kid", "t"), ==,
                  C8Y_OK);
  f->dispatched = g_ptr_array_new();
  ops_host h = {.ctx = f, .dispatch = on_dispatch, .wake = on_wake};
  g_assert_cmpint(ops_new(ROOT, f->reg, f->q, f->j, &h, 60000, &f->o), ==, 0);
}

static void fx_teardown(fx *f, gconstpointer d) {
  ops_free(f->o);
  registry_free(f->reg);
  journal_close(f->j);
  outq_close(f->q);
  g_ptr_array_free(f->dispatched, TRUE);
  GDir *dir = g_dir_open(f->dir, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name(dir))) {
    char *p = g_build_filename(f->dir, name, NULL);
    g_unlink(p);
    g_free(p);
  }
  g_dir_close(dir);
  g_rmdir(f->dir);
  g_free(f->dir);
}

/* Takes the next batch; returns its payload (g_free) and acks or keeps it
 * in flight (then *id gets the batch id). */
static char *take(fx *f, bool ack, uint64_t **tags, size_t *ntags) {
  outq_batch b;
  if (outq_take(f->q, 16000, &b) != 1)
    return NULL;
  char *payload = g_strdup(b.payload);
  if (tags) {
    *tags = g_memdup2(b.tags, b.ntags * sizeof *b.tags);
    *ntags = b.ntags;
  }
  if (ack) {
    outq_ack(f->q, b.id);
    for (size_t i = 0; i < b.ntags; i++)
      ops_on_acked(f->o, b.tags[i], true);
  }
  outq_batch_free(&b);
  return payload;
}

static void feed(fx *f, const char *payload) {
  ops_handle_payload(f->o, payload, strlen(payload));
}

/* The 501 is sent, its PUBACK never comes, the link drops. */
static void lose_link_with_501_in_flight(fx *f) {
  uint64_t *tags = NULL;
  size_t ntags = 0;
  char *p = take(f, false, &tags, &ntags);
  g_assert_cmpstr(p, ==, "501,c8y_Command");
  g_free(p);
  outq_requeue_inflight(f->q);
  ops_on_disconnect(f->o, tags, ntags);
  g_free(tags);
}

/* The 501 reached the platform but its PUBACK was lost with the link: the
 * operation does not come back with the 500, so it is run. */
static void test_inflight_501_was_delivered(fx *f, gconstpointer d) {
  feed(f, "511," ROOT ",ls");
  lose_link_with_501_in_flight(f);
  g_assert_null(take(f, true, NULL, NULL)); /* no 501 resent blindly */
  g_assert_cmpuint(ops_active(f->o), ==, 1);
  /* Reconnected, 500 acknowledged, nothing came back: after the settle time
   * it runs, without a second 501. */
  long long t = now_ms();
  ops_on_pending_requested(f->o, t);
  g_assert_cmpint(ops_process(f->o, t), >, t);
  g_assert_cmpuint(f->dispatched->len, ==, 0);
  ops_process(f->o, t + 60000);
  g_assert_cmpuint(f->dispatched->len, ==, 1);
  g_assert_null(take(f, true, NULL, NULL));
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpint(ops_op_succeed(op, "done"), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  char *p = take(f, true, NULL, NULL);
  g_assert_cmpstr(p, ==, "503,c8y_Command,done");
  g_free(p);
}

/* The 501 never arrived: the platform hands the operation out again with
 * the 500; it is the same operation, started once more, not a second one. */
static void test_inflight_501_was_lost(fx *f, gconstpointer d) {
  feed(f, "511," ROOT ",ls");
  lose_link_with_501_in_flight(f);
  feed(f, "511," ROOT ",ls");
  g_assert_cmpuint(ops_active(f->o), ==, 1);
  char *p = take(f, true, NULL, NULL);
  g_assert_cmpstr(p, ==, "501,c8y_Command");
  g_free(p);
  g_assert_cmpuint(f->dispatched->len, ==, 1);
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpstr(ops_op_field(op, 0), ==, "ls");
  g_assert_cmpint(ops_op_fail(op, "no"), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  p = take(f, true, NULL, NULL);
  g_assert_cmpstr(p, ==, "502,c8y_Command,no");
  g_free(p);
}

/* Another operation of the fragment comes first after the reconnect: the
 * uncertain one was EXECUTING (the platform hands out the oldest first). */
static void test_inflight_501_then_other_operation(fx *f, gconstpointer d) {
  feed(f, "511," ROOT ",first");
  lose_link_with_501_in_flight(f);
  feed(f, "511," ROOT ",second");
  g_assert_cmpuint(f->dispatched->len, ==, 1);
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpstr(ops_op_field(op, 0), ==, "first");
  g_assert_cmpuint(ops_active(f->o), ==, 2);
  g_assert_null(take(f, true, NULL, NULL)); /* "second" waits its turn */
  g_assert_cmpint(ops_op_succeed(op, NULL), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  char *p = take(f, true, NULL, NULL);
  g_assert_cmpstr(p, ==, "503,c8y_Command\n501,c8y_Command");
  g_free(p);
}

/* A child the plugin registered but whose template it does not handle. */
static void test_child_without_handler(fx *f, gconstpointer d) {
  feed(f, "510,kid");
  g_assert_cmpuint(f->dispatched->len, ==, 0);
  char *p = take(f, true, NULL, NULL);
  g_assert_cmpstr(p, ==, "501,c8y_Restart");
  g_free(p);
  ops_process(f->o, now_ms());
  p = take(f, true, NULL, NULL);
  g_assert_cmpstr(p, ==, "502,c8y_Restart,not supported by kid");
  g_free(p);
  g_assert_cmpuint(ops_active(f->o), ==, 0);
}

/* Completing twice, or after the engine ended it, is refused safely. */
static void test_double_completion(fx *f, gconstpointer d) {
  feed(f, "511," ROOT ",x");
  g_free(take(f, true, NULL, NULL));
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpint(ops_op_succeed(op, NULL), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  g_free(take(f, true, NULL, NULL));
  /* The engine is done with it; the handle still answers. */
  g_assert_cmpint(ops_op_succeed(op, NULL), ==, C8Y_ESTATE);
  g_assert_cmpint(ops_op_fail(op, "again"), ==, C8Y_ESTATE);
  g_assert_true(ops_op_cancelled(op));
}

/* Shutdown: a running handler is told to stop, then failed durably. */
static void test_stop_cancels_then_fails(fx *f, gconstpointer d) {
  feed(f, "511," ROOT ",x");
  g_free(take(f, true, NULL, NULL));
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_false(ops_op_cancelled(op));
  ops_stop(f->o);
  g_assert_cmpuint(ops_cancel_running(f->o), ==, 1);
  g_assert_true(ops_op_cancelled(op));
  g_assert_cmpuint(ops_running(f->o), ==, 1);
  ops_fail_all(f->o, "agent stopped");
  char *p = take(f, true, NULL, NULL);
  g_assert_cmpstr(p, ==, "502,c8y_Command,agent stopped");
  g_free(p);
  g_assert_cmpint(ops_op_succeed(op, NULL), ==, C8Y_ETIMEDOUT);
}

/* The 501's PUBACK arrives while stopping: the plugins are gone, so the
 * operation is journaled (the next start fails it) and never run; it must
 * not expire either, with a false "timed out" (and its handler unloaded). */
static void test_acked_while_stopping(fx *f, gconstpointer d) {
  feed(f, "511," ROOT ",x");
  uint64_t *tags = NULL;
  size_t ntags = 0;
  char *p = take(f, false, &tags, &ntags);
  g_assert_cmpstr(p, ==, "501,c8y_Command");
  g_free(p);
  g_assert_cmpuint(ntags, ==, 1);
  ops_stop(f->o);
  ops_on_acked(f->o, tags[0], false);
  g_free(tags);
  g_assert_cmpuint(f->dispatched->len, ==, 0);
  ops_process(f->o, now_ms() + 24LL * 3600 * 1000);
  p = take(f, true, NULL, NULL);
  g_assert_null(p);
}

/* 100k distinct unknown templates: constant work per record. */
static void test_unknown_template_flood(fx *f, gconstpointer d) {
  GString *s = g_string_new(NULL);
  for (int i = 0; i < 100000; i++)
    g_string_append_printf(s, "9%05d," ROOT "\n", i);
  gint64 t0 = g_get_monotonic_time();
  feed(f, s->str);
  gint64 dt = g_get_monotonic_time() - t0;
  g_test_message("100k unknown templates: %" G_GINT64_FORMAT " us", dt);
  g_assert_cmpuint(ops_active(f->o), ==, 0);
  g_string_free(s, TRUE);
}

#define ADD(path, fn) g_test_add(path, fx, NULL, fx_setup, fn, fx_teardown)

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  ADD("/ops/reconnect/501-delivered", test_inflight_501_was_delivered);
  ADD("/ops/reconnect/501-lost", test_inflight_501_was_lost);
  ADD("/ops/reconnect/501-then-other", test_inflight_501_then_other_operation);
  ADD("/ops/child-without-handler", test_child_without_handler);
  ADD("/ops/double-completion", test_double_completion);
  ADD("/ops/stop", test_stop_cancels_then_fails);
  ADD("/ops/stop/acked-while-stopping", test_acked_while_stopping);
  ADD("/ops/unknown-template-flood", test_unknown_template_flood);
  return g_test_run();
}
