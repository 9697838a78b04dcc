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
  upstream up;
  journal *j;
  registry *reg;
  ops *o;
  GPtrArray *dispatched; /* the handles the "plugin" got */
} fx;

/* The plugin's handler: keeps its handle and answers PENDING, so the test
 * completes the operation later like a plugin thread would. */
static int handler(c8y_plugin *p, c8y_operation *op, void *ud) {
  fx *f = ud;
  g_ptr_array_add(f->dispatched, op);
  return C8Y_PENDING;
}

/* Plays the plugin's worker. */
static void on_dispatch(void *ctx, c8y_operation *op) {
  (void)ctx;
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
  f->up = (upstream){.q = f->q};
  g_assert_cmpint(journal_open(f->dir, &f->j, err, sizeof err), ==, 0);
  f->reg = registry_new();
  g_assert_nonnull(f->reg);
  c8y_plugin *plugin = (c8y_plugin *)0x1;
  f->dispatched = g_ptr_array_new();
  g_assert_cmpint(registry_add_handler(f->reg, plugin, "511", "c8y_Command",
                                       60000, handler, f, NULL),
                  ==, C8Y_OK);
  g_assert_cmpint(registry_add_child(f->reg, plugin, "kid", "Kid", "t"), ==,
                  C8Y_OK);
  ops_host h = {.ctx = f, .dispatch = on_dispatch, .wake = on_wake};
  g_assert_cmpint(ops_new(ROOT, f->reg, &f->up, f->j, &h, 60000, &f->o), ==, 0);
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
      ops_on_acked(f->o, upstream_tag_of(b.tags[i]), true);
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
  upstream_tag *inflight = g_new(upstream_tag, ntags);
  for (size_t i = 0; i < ntags; i++)
    inflight[i] = upstream_tag_of(tags[i]);
  ops_on_disconnect(f->o, inflight, ntags);
  g_free(inflight);
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
  ops_on_acked(f->o, upstream_tag_of(tags[0]), false);
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

/* ---- JSON operations (devicecontrol/notifications) ---- */

#define PLUGIN ((c8y_plugin *)0x1)

static void feed_json(fx *f, const char *payload) {
  ops_handle_json(f->o, payload, strlen(payload));
}

static void add_fragment(fx *f, const char *fragment, reg_scope scope) {
  g_assert_cmpint(registry_add_scoped_handler(f->reg, PLUGIN, NULL, fragment,
                                              scope, NULL, 60000, handler, f,
                                              NULL),
                  ==, C8Y_OK);
}

/* Takes and acks every queued batch; their lines joined by '\n'. */
static char *take_all(fx *f) {
  GString *all = g_string_new(NULL);
  char *p;
  while ((p = take(f, true, NULL, NULL))) {
    if (all->len)
      g_string_append_c(all, '\n');
    g_string_append(all, p);
    g_free(p);
  }
  return g_string_free(all, FALSE);
}

#define DOC(id, extra)                                                         \
  "{\"id\":\"" id "\",\"status\":\"PENDING\",\"deviceId\":\"9\","              \
  "\"externalSource\":{\"externalId\":\"" ROOT                                 \
  "\",\"type\":\"c8y_Serial\"}," extra "}"

/* A custom fragment for the root: started and completed by id, the handler
 * reads the document. */
static void test_json_custom_root(fx *f, gconstpointer d) {
  add_fragment(f, "acme_Reset", REG_SCOPE_ROOT);
  feed_json(f, DOC("4711", "\"description\":\"reset\","
                           "\"acme_Reset\":{\"mode\":\"hard\",\"level\":3,"
                           "\"items\":[{\"name\":\"a\"}]}"));
  char *p = take_all(f);
  g_assert_cmpstr(p, ==, "504,4711");
  g_free(p);
  g_assert_cmpuint(f->dispatched->len, ==, 1);
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpstr(ops_op_id(op), ==, "4711");
  g_assert_cmpstr(ops_op_fragment(op), ==, "acme_Reset");
  g_assert_null(ops_op_template(op));
  g_assert_cmpstr(ops_op_device(op), ==, ROOT);
  g_assert_cmpuint(ops_op_field_count(op), ==, 0);
  g_assert_nonnull(strstr(ops_op_json(op), "\"acme_Reset\""));
  g_assert_cmpstr(ops_op_json_value(op, "acme_Reset.mode"), ==, "hard");
  g_assert_cmpstr(ops_op_json_value(op, "acme_Reset.level"), ==, "3");
  g_assert_cmpstr(ops_op_json_value(op, "acme_Reset.items.0.name"), ==, "a");
  g_assert_cmpstr(ops_op_json_value(op, "acme_Reset.items"), ==,
                  "[{\"name\":\"a\"}]");
  g_assert_null(ops_op_json_value(op, "acme_Reset.nope"));
  g_assert_null(ops_op_json_value(op, "acme_Reset.items.7"));
  const char *params[] = {"done", "a,b"};
  g_assert_cmpint(ops_op_succeed_params(op, params, 2), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  p = take_all(f);
  g_assert_cmpstr(p, ==, "506,4711,done,\"a,b\"");
  g_free(p);
  /* The same document again (a 500 publishes PENDING ones once more): the
   * operation ended, it does not run twice. */
  feed_json(f, DOC("4711", "\"acme_Reset\":{}"));
  g_assert_null(take(f, true, NULL, NULL));
  g_assert_cmpuint(f->dispatched->len, ==, 1);
  /* The agent's own operation named by another of its external ids:
   * deviceId == agentId says it is the agent's. */
  feed_json(f, "{\"id\":\"4712\",\"status\":\"PENDING\",\"deviceId\":\"5\","
               "\"agentId\":\"5\",\"externalSource\":{\"externalId\":"
               "\"imei-1\",\"type\":\"c8y_IMEI\"},\"acme_Reset\":{}}");
  p = take_all(f);
  g_assert_cmpstr(p, ==, "504,4712");
  g_free(p);
}

/* A child's JSON operation: statuses on the child's own topic (504-506
 * need the requesting device to be the operation's source). */
static void test_json_child(fx *f, gconstpointer d) {
  add_fragment(f, "acme_Blink", REG_SCOPE_OWN_CHILDREN);
  feed_json(f, "{\"id\":\"77\",\"status\":\"PENDING\","
               "\"externalSource\":{\"externalId\":\"kid\"},"
               "\"acme_Blink\":{\"n\":2}}");
  uint64_t *tags = NULL;
  size_t ntags = 0;
  outq_batch b;
  g_assert_cmpint(outq_take(f->q, 16000, &b), ==, 1);
  g_assert_cmpstr(b.topic, ==, "s/us/kid");
  g_assert_cmpstr(b.payload, ==, "504,77");
  outq_ack(f->q, b.id);
  for (size_t i = 0; i < b.ntags; i++)
    ops_on_acked(f->o, upstream_tag_of(b.tags[i]), true);
  outq_batch_free(&b);
  (void)tags;
  (void)ntags;
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpstr(ops_op_device(op), ==, "kid");
  g_assert_cmpint(ops_op_fail(op, "no LED"), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  g_assert_cmpint(outq_take(f->q, 16000, &b), ==, 1);
  g_assert_cmpstr(b.topic, ==, "s/us/kid");
  g_assert_cmpstr(b.payload, ==, "505,77,no LED");
  outq_ack(f->q, b.id);
  outq_batch_free(&b);
  /* The root has no handler for it: a root operation stays untouched. */
  feed_json(f, DOC("78", "\"acme_Blink\":{}"));
  g_assert_null(take(f, true, NULL, NULL));
}

/* One operation on both channels runs once, whichever copy comes first;
 * once the id is known, the statuses use it. */
static void test_both_channels(fx *f, gconstpointer d) {
  /* Line first: 501 by fragment, then the JSON copy gives the id. */
  feed(f, "511," ROOT ",uptime");
  feed_json(f, DOC("100", "\"c8y_Command\":{\"text\":\"uptime\"}"));
  char *p = take_all(f);
  g_assert_cmpstr(p, ==, "501,c8y_Command");
  g_free(p);
  g_assert_cmpuint(f->dispatched->len, ==, 1);
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpstr(ops_op_id(op), ==, "100");
  g_assert_cmpstr(ops_op_field(op, 0), ==, "uptime");
  g_assert_cmpstr(ops_op_json_value(op, "c8y_Command.text"), ==, "uptime");
  g_assert_cmpint(ops_op_succeed(op, "up 3 days"), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  p = take_all(f);
  g_assert_cmpstr(p, ==, "506,100,up 3 days");
  g_free(p);
  /* JSON first: the template handler waits for its line, then 504. */
  feed_json(f, DOC("101", "\"c8y_Command\":{\"text\":\"ls\"}"));
  g_assert_null(take(f, true, NULL, NULL));
  feed(f, "511," ROOT ",ls");
  p = take_all(f);
  g_assert_cmpstr(p, ==, "504,101");
  g_free(p);
  g_assert_cmpuint(f->dispatched->len, ==, 2);
  op = g_ptr_array_index(f->dispatched, 1);
  g_assert_cmpstr(ops_op_field(op, 0), ==, "ls");
  g_assert_cmpint(ops_op_fail(op, "no"), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  p = take_all(f);
  g_assert_cmpstr(p, ==, "505,101,no");
  g_free(p);
  /* The JSON copy after the handler started: what the plugin reads stays
   * as it was (it may be reading it on its own thread), the final status
   * still goes by id, and the journal learns it. */
  feed(f, "511," ROOT ",late");
  g_free(take_all(f));
  op = g_ptr_array_index(f->dispatched, 2);
  feed_json(f, DOC("102", "\"c8y_Command\":{\"text\":\"late\"}"));
  g_assert_null(ops_op_id(op));
  g_assert_null(ops_op_json(op));
  g_assert_cmpint(ops_op_succeed(op, "ok"), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  p = take_all(f);
  g_assert_cmpstr(p, ==, "506,102,ok");
  g_free(p);
  g_assert_cmpuint(f->dispatched->len, ==, 3);
  g_assert_cmpuint(ops_active(f->o), ==, 0);
}

/* Two pending operations of one fragment each get their own final status,
 * by id, in order. */
static void test_two_pending_by_id(fx *f, gconstpointer d) {
  add_fragment(f, "acme_Ping", REG_SCOPE_ROOT);
  feed_json(f, DOC("1", "\"acme_Ping\":{}") "\n" DOC("2", "\"acme_Ping\":{}"));
  char *p = take_all(f);
  g_assert_cmpstr(p, ==, "504,1");
  g_free(p);
  c8y_operation *first = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpint(ops_op_succeed(first, NULL), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  p = take_all(f);
  g_assert_cmpstr(p, ==, "506,1\n504,2");
  g_free(p);
  c8y_operation *second = g_ptr_array_index(f->dispatched, 1);
  g_assert_cmpstr(ops_op_id(second), ==, "2");
  g_assert_cmpint(ops_op_fail(second, "x"), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  p = take_all(f);
  g_assert_cmpstr(p, ==, "505,2,x");
  g_free(p);
}

/* One bad document in a publish costs a warning; the others still run.
 * Documents that are no longer PENDING never start anything. */
static void test_json_bad_and_not_pending(fx *f, gconstpointer d) {
  add_fragment(f, "acme_Ping", REG_SCOPE_ROOT);
  feed_json(
      f, "{\"id\":\"5\",\"acme_Ping\":{\n"
         "  broken\n"
         "}\n" DOC("6", "\"acme_Ping\":{}") "\n"
                                            "{\"id\":\"7\",\"status\":"
                                            "\"EXECUTING\",\"acme_Ping\":{}}"
                                            "{\"id\":\"8\",\"status\":"
                                            "\"SUCCESSFUL\",\"acme_Ping\":{}}\n"
                                            "[1,2]\n{\"status\":\"PENDING\","
                                            "\"acme_Ping\":{}}\n"
                                            "{\"id\":\"9\",\"status\":"
                                            "\"PENDING\",\"nothing\":1}");
  char *p = take_all(f);
  g_assert_cmpstr(p, ==, "504,6");
  g_free(p);
  g_assert_cmpuint(ops_active(f->o), ==, 1);
}

/* The handle is a number: after many more operations than the old guard
 * kept, a late completion is refused and nothing freed is touched (this
 * test runs under ASan in check-sanitizers.sh). */
static void test_handles_after_retirements(fx *f, gconstpointer d) {
  add_fragment(f, "acme_Ping", REG_SCOPE_ROOT);
  c8y_operation *first = NULL;
  for (int i = 1; i <= 4200; i++) {
    char doc[256];
    snprintf(doc, sizeof doc, DOC("%d", "\"acme_Ping\":{}"), i);
    feed_json(f, doc);
    g_free(take_all(f));
    c8y_operation *op =
        g_ptr_array_index(f->dispatched, f->dispatched->len - 1);
    if (!first)
      first = op;
    g_assert_cmpint(ops_op_succeed(op, NULL), ==, C8Y_OK);
    ops_process(f->o, now_ms());
    g_free(take_all(f));
  }
  g_assert_cmpuint(f->dispatched->len, ==, 4200);
  g_assert_cmpint(ops_op_succeed(first, NULL), ==, C8Y_ESTATE);
  g_assert_cmpint(ops_op_fail(first, "late"), ==, C8Y_ESTATE);
  g_assert_cmpint(ops_op_complete_on_reboot(first), ==, C8Y_ESTATE);
  g_assert_cmpint(ops_op_resume_after_restart(first), ==, C8Y_ESTATE);
  g_assert_true(ops_op_cancelled(first));
  g_assert_cmpint(ops_op_cancel_reason(first), ==, C8Y_ESTATE);
  g_assert_null(ops_op_fragment(first));
  g_assert_null(ops_op_id(first));
  g_assert_null(ops_op_json_value(first, "acme_Ping"));
  /* Never a handle at all. */
  g_assert_cmpint(ops_op_succeed((c8y_operation *)(uintptr_t)0x7fffffff, NULL),
                  ==, C8Y_ESTATE);
  g_assert_null(take(f, true, NULL, NULL));
}

/* A timed-out handler is told why and may still say what it did: its
 * reason follows the agent's. A stopped one likewise. */
static void test_cancel_reasons(fx *f, gconstpointer d) {
  ops_set_cancel_grace(f->o, 60000);
  feed(f, "511," ROOT ",sleep 999");
  g_free(take_all(f));
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpint(ops_op_cancel_reason(op), ==, 0);
  long long t = now_ms();
  ops_process(f->o, t + 61000); /* the 60 s timeout passed */
  g_assert_true(ops_op_cancelled(op));
  g_assert_cmpint(ops_op_cancel_reason(op), ==, C8Y_ETIMEDOUT);
  g_assert_null(take(f, true, NULL, NULL)); /* the plugin may still say why */
  g_assert_cmpint(ops_op_fail(op, "the command was killed"), ==, C8Y_ETIMEDOUT);
  ops_process(f->o, t + 62000);
  char *p = take_all(f);
  g_assert_cmpstr(p, ==,
                  "502,c8y_Command,operation timed out after 60 s: the "
                  "command was killed");
  g_free(p);
  /* A handler that says nothing is failed when the grace ends. */
  feed(f, "511," ROOT ",sleep 998");
  g_free(take_all(f));
  op = g_ptr_array_index(f->dispatched, 1);
  t = now_ms();
  ops_process(f->o, t + 61000);
  g_assert_null(take(f, true, NULL, NULL));
  ops_process(f->o, t + 61000 + 60001);
  p = take_all(f);
  g_assert_cmpstr(p, ==, "502,c8y_Command,operation timed out after 60 s");
  g_free(p);
  g_assert_cmpint(ops_op_fail(op, "late"), ==, C8Y_ETIMEDOUT);
  /* The stop: op_cancel_reason says so, the plugin's text follows. */
  feed(f, "511," ROOT ",sleep 997");
  g_free(take_all(f));
  op = g_ptr_array_index(f->dispatched, 2);
  ops_stop(f->o);
  g_assert_cmpuint(ops_cancel_running(f->o), ==, 1);
  g_assert_cmpint(ops_op_cancel_reason(op), ==, C8Y_ECANCELED);
  g_assert_cmpint(ops_op_fail(op, "the command was stopped"), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  p = take_all(f);
  g_assert_cmpstr(p, ==,
                  "502,c8y_Command,agent stopped: the command was "
                  "stopped");
  g_free(p);
}

/* An operation for a child nobody announced yet is kept; once a plugin
 * adds the child (at run time), it runs. */
static void test_parked_until_child_added(fx *f, gconstpointer d) {
  feed(f, "511,late-kid,reboot");
  feed_json(f, "{\"id\":\"31\",\"status\":\"PENDING\","
               "\"externalSource\":{\"externalId\":\"late-kid\"},"
               "\"c8y_Command\":{\"text\":\"reboot\"}}");
  g_assert_null(take(f, true, NULL, NULL));
  g_assert_cmpuint(ops_active(f->o), ==, 0);
  g_assert_cmpint(registry_add_child(f->reg, PLUGIN, "late-kid", "n", "t"), ==,
                  C8Y_OK);
  ops_children_changed(f->o);
  outq_batch b;
  g_assert_cmpint(outq_take(f->q, 16000, &b), ==, 1);
  g_assert_cmpstr(b.topic, ==, "s/us/late-kid");
  g_assert_cmpstr(b.payload, ==, "504,31");
  outq_ack(f->q, b.id);
  for (size_t i = 0; i < b.ntags; i++)
    ops_on_acked(f->o, upstream_tag_of(b.tags[i]), true);
  outq_batch_free(&b);
  g_assert_cmpuint(f->dispatched->len, ==, 1);
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpstr(ops_op_field(op, 0), ==, "reboot");
  g_assert_cmpstr(ops_op_id(op), ==, "31");
  g_assert_cmpint(ops_op_succeed(op, NULL), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  g_free(take_all(f));
  /* A removed child's queued operations are not dispatched. */
  g_assert_cmpint(registry_remove_child(f->reg, PLUGIN, "late-kid"), ==,
                  C8Y_OK);
  feed(f, "511,late-kid,again");
  g_assert_null(take(f, true, NULL, NULL));
}

/* A record of a custom template that carries operations: 501 and one final
 * status, by fragment (no id in a SmartREST record). */
static void test_template_record(fx *f, gconstpointer d) {
  add_fragment(f, "acme_Config", REG_SCOPE_ROOT);
  g_assert_cmpint(
      registry_add_template_op(f->reg, PLUGIN, "acme", "dm7", "acme_Config"),
      ==, C8Y_OK);
  reg_template_op *t = registry_find_template_op(f->reg, "acme", "dm7");
  g_assert_nonnull(t);
  smartrest_records recs;
  const char *line = "dm7," ROOT ",a=1,b=2";
  g_assert_cmpint(smartrest_decode(line, strlen(line), &recs), ==, 0);
  ops_handle_template_record(f->o, t, &recs.items[0]);
  smartrest_records_free(&recs);
  char *p = take_all(f);
  g_assert_cmpstr(p, ==, "501,acme_Config");
  g_free(p);
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpstr(ops_op_template(op), ==, "dm7");
  g_assert_cmpstr(ops_op_field(op, 1), ==, "b=2");
  g_assert_null(ops_op_json(op));
  g_assert_cmpint(ops_op_succeed(op, NULL), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  p = take_all(f);
  g_assert_cmpstr(p, ==, "503,acme_Config");
  g_free(p);
}

/* A restart while a JSON operation executes completes it by its id. */
static void test_journal_keeps_id(fx *f, gconstpointer d) {
  add_fragment(f, "acme_Ping", REG_SCOPE_ROOT);
  feed_json(f, DOC("900", "\"acme_Ping\":{}"));
  g_free(take_all(f));
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpint(ops_op_complete_on_reboot(op), ==, C8Y_OK);
  /* The agent dies; the machine reboots. */
  ops_free(f->o);
  journal_close(f->j);
  char *boot = g_build_filename(f->dir, "boot_id", NULL);
  g_assert_true(g_file_set_contents(boot, "another-boot\n", -1, NULL));
  g_setenv("C8Y_BOOT_ID_FILE", boot, TRUE);
  char err[256];
  g_assert_cmpint(journal_open(f->dir, &f->j, err, sizeof err), ==, 0);
  ops_host h = {.ctx = f, .dispatch = on_dispatch, .wake = on_wake};
  g_assert_cmpint(ops_new(ROOT, f->reg, &f->up, f->j, &h, 60000, &f->o), ==, 0);
  ops_recover(f->o);
  g_unsetenv("C8Y_BOOT_ID_FILE");
  g_unlink(boot);
  g_free(boot);
  char *p = take_all(f);
  g_assert_cmpstr(p, ==, "506,900");
  g_free(p);
  /* Its JSON copy after the restart does not run it again. */
  feed_json(f, DOC("900", "\"acme_Ping\":{}"));
  g_assert_null(take(f, true, NULL, NULL));
}

/* The agent dies and starts again on the same journal (a fresh queue). */
static void restart(fx *f) {
  ops_free(f->o);
  journal_close(f->j);
  outq_close(f->q);
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[256];
  g_assert_cmpint(outq_open(&qo, &f->q, err, sizeof err), ==, 0);
  f->up.q = f->q;
  g_assert_cmpint(journal_open(f->dir, &f->j, err, sizeof err), ==, 0);
  ops_host h = {.ctx = f, .dispatch = on_dispatch, .wake = on_wake};
  g_assert_cmpint(ops_new(ROOT, f->reg, &f->up, f->j, &h, 60000, &f->o), ==, 0);
  ops_recover(f->o);
}

static uint64_t journal_fsyncs(fx *f) {
  journal_stats st;
  journal_get_stats(f->j, &st);
  return st.fsyncs;
}

/* Each step of an operation costs one journal fdatasync: the begin, and the
 * end with its final status in the same line. The status goes into the
 * queue in memory and stays in the journal until its PUBACK: a restart
 * before that sends it again, one after it does not. */
static void test_final_status_journaled(fx *f, gconstpointer d) {
  feed(f, "511," ROOT ",x");
  uint64_t before = journal_fsyncs(f);
  g_free(take(f, true, NULL, NULL)); /* the 501's PUBACK: journal begin */
  g_assert_cmpuint(journal_fsyncs(f), ==, before + 1);
  c8y_operation *op = g_ptr_array_index(f->dispatched, 0);
  g_assert_cmpint(ops_op_succeed(op, "done"), ==, C8Y_OK);
  ops_process(f->o, now_ms());
  g_assert_cmpuint(journal_fsyncs(f), ==, before + 2);
  journal_stats js;
  journal_get_stats(f->j, &js);
  g_assert_cmpuint(js.unsent, ==, 1);

  /* Sent, not acknowledged, the agent dies: the next start sends it. */
  uint64_t *tags = NULL;
  size_t ntags = 0;
  char *p = take(f, false, &tags, &ntags);
  g_assert_cmpstr(p, ==, "503,c8y_Command,done");
  g_assert_cmpuint(ntags, ==, 1);
  g_free(tags);
  g_free(p);
  restart(f);
  p = take(f, true, NULL, NULL); /* acknowledged this time */
  g_assert_cmpstr(p, ==, "503,c8y_Command,done");
  g_free(p);
  journal_get_stats(f->j, &js);
  g_assert_cmpuint(js.unsent, ==, 0);
  /* ... and not again after that. */
  restart(f);
  g_assert_null(take(f, true, NULL, NULL));
  g_assert_cmpuint(ops_active(f->o), ==, 0);
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
  ADD("/ops/json/custom-root", test_json_custom_root);
  ADD("/ops/json/child", test_json_child);
  ADD("/ops/json/both-channels-once", test_both_channels);
  ADD("/ops/json/two-pending-by-id", test_two_pending_by_id);
  ADD("/ops/json/bad-and-not-pending", test_json_bad_and_not_pending);
  ADD("/ops/handles-after-retirements", test_handles_after_retirements);
  ADD("/ops/cancel-reasons", test_cancel_reasons);
  ADD("/ops/parked-until-child-added", test_parked_until_child_added);
  ADD("/ops/template-record", test_template_record);
  ADD("/ops/journal-keeps-id", test_journal_keeps_id);
  ADD("/ops/final-status-journaled", test_final_status_journaled);
  return g_test_run();
}
