/* registration: what a connect says first, as the link drains it. */
#include "registration.h"

#include <glib.h>
#include <string.h>

typedef struct {
  agent_config cfg;
  outq *q;
  registry *reg;
  upstream up;
  registration *r;
  GPtrArray *subs; /* "topic qos" */
} fx;

static void on_subscribe(void *ctx, const char *topic, int qos) {
  fx *f = ctx;
  g_ptr_array_add(f->subs, g_strdup_printf("%s %d", topic, qos));
}

static int handler(c8y_plugin *p, c8y_operation *op, void *ud) {
  (void)p, (void)op, (void)ud;
  return C8Y_OK;
}

static void fx_setup(fx *f, gconstpointer d) {
  (void)d;
  memset(f, 0, sizeof *f);
  f->cfg.device_id = "dev1";
  f->cfg.device_name = "Device 1";
  f->cfg.device_type = "c8y_Linux";
  f->cfg.hw_serial = "S1";
  f->cfg.hw_model = "M1";
  f->cfg.hw_revision = "R1";
  f->cfg.required_interval = 60;
  f->cfg.qos = 1;
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[256];
  g_assert_cmpint(outq_open(&qo, &f->q, err, sizeof err), ==, 0);
  f->reg = registry_new();
  c8y_plugin *p = (c8y_plugin *)0x1;
  g_assert_cmpint(registry_add_handler(f->reg, p, "510", "c8y_Restart", 0,
                                       handler, NULL, NULL),
                  ==, C8Y_OK);
  g_assert_cmpint(registry_add_child(f->reg, p, "kid", "Kid", "t"), ==, C8Y_OK);
  g_assert_cmpint(registry_add_child_handler(f->reg, p, "511", "c8y_Command", 0,
                                             handler, NULL),
                  ==, C8Y_OK);
  f->up = (upstream){.q = f->q, .reg = f->reg};
  f->subs = g_ptr_array_new_with_free_func(g_free);
  registration_host h = {.ctx = f, .subscribe = on_subscribe};
  g_assert_cmpint(registration_new(&f->cfg, f->reg, &f->up, &h, &f->r), ==,
                  C8Y_OK);
}

static void fx_teardown(fx *f, gconstpointer d) {
  (void)d;
  registration_free(f->r);
  registry_free(f->reg);
  outq_close(f->q);
  g_ptr_array_free(f->subs, TRUE);
}

/* Takes one batch as the link would while the registration is pending,
 * acks it and hands its tags back; returns "topic|payload" or NULL. */
static char *drain_one(fx *f, bool *pending_acked) {
  outq_batch b;
  upstream_tag first = registration_pending_lines(f->r);
  int took = first.kind != UPSTREAM_TAG_NONE
                 ? outq_take_tagged(f->q, upstream_tag_bits(first), 16000, &b)
                 : outq_take(f->q, 16000, &b);
  if (took != 1)
    return NULL;
  char *s = g_strdup_printf("%s|%s", b.topic, b.payload);
  outq_ack(f->q, b.id);
  for (size_t i = 0; i < b.ntags; i++)
    if (registration_acked(f->r, upstream_tag_of(b.tags[i])) && pending_acked)
      *pending_acked = true;
  outq_batch_free(&b);
  return s;
}

static bool has_sub(fx *f, const char *want) {
  for (guint i = 0; i < f->subs->len; i++)
    if (strcmp(g_ptr_array_index(f->subs, i), want) == 0)
      return true;
  return false;
}

/* The registration goes before a line plugins queued earlier; the
 * subscriptions for operations and the 500 only once it is acknowledged. */
static void test_connect_sequence(fx *f, gconstpointer d) {
  (void)d;
  const char *sw[] = {"140", "pkg", "1.0"};
  g_assert_cmpint(upstream_send(&f->up, UPSTREAM_BY_TEMPLATE, "s/us", sw, 3, 0,
                                UPSTREAM_NO_TAG),
                  ==, C8Y_OK);
  registration_start(f->r);
  g_assert_true(has_sub(f, "s/e 0"));
  g_assert_true(has_sub(f, "s/dat 0"));
  g_assert_false(has_sub(f, "s/ds 1"));
  g_assert_false(registration_operations_requested(f->r));
  g_assert_cmpint(registration_pending_lines(f->r).kind, ==,
                  UPSTREAM_TAG_REGISTRATION);
  /* One packed payload on s/us, then the child's 114 on its topic. */
  char *first = drain_one(f, NULL);
  g_assert_nonnull(first);
  g_assert_true(g_str_has_prefix(first, "s/us|100,Device 1,c8y_Linux\n"
                                        "110,S1,M1,R1\n122,c8y-agent,"));
  g_assert_nonnull(strstr(first, "\n102,dev1_c8y-agent,"));
  g_assert_nonnull(strstr(first, "\n101,kid,Kid,t\n"));
  g_assert_nonnull(strstr(first, "\n114,c8y_Restart"));
  g_assert_nonnull(strstr(first, "\n117,60"));
  g_assert_null(strstr(first, "140,pkg"));
  g_free(first);
  g_assert_false(registration_operations_requested(f->r));
  char *kid = drain_one(f, NULL);
  g_assert_cmpstr(kid, ==, "s/us/kid|114,c8y_Restart,c8y_Command");
  g_free(kid);
  /* All acknowledged: operations are asked for. */
  g_assert_true(registration_operations_requested(f->r));
  g_assert_cmpint(registration_pending_lines(f->r).kind, ==, UPSTREAM_TAG_NONE);
  g_assert_true(has_sub(f, "s/ds 1"));
  g_assert_true(has_sub(f, "devicecontrol/notifications 1"));
  /* Now the rest, the 500 behind the older line of its topic. */
  bool pending_acked = false;
  char *next = drain_one(f, &pending_acked);
  g_assert_cmpstr(next, ==, "s/us|140,pkg,1.0");
  g_free(next);
  g_assert_false(pending_acked);
  next = drain_one(f, &pending_acked);
  g_assert_cmpstr(next, ==, "s/us|500");
  g_free(next);
  g_assert_true(pending_acked);
}

/* A lost connect drops its registration; a child added later is announced
 * on its own once the registration is through. */
static void test_lost_and_children(fx *f, gconstpointer d) {
  (void)d;
  registration_start(f->r);
  registration_lost(f->r);
  g_assert_cmpint(registration_pending_lines(f->r).kind, ==, UPSTREAM_TAG_NONE);
  g_assert_null(drain_one(f, NULL));
  /* Not through yet: a child added now waits. */
  registration_start(f->r);
  g_assert_cmpint(
      registry_add_child(f->reg, (c8y_plugin *)0x1, "kid2", "Kid 2", "t"), ==,
      C8Y_OK);
  registration_announce_children(f->r);
  g_free(drain_one(f, NULL));
  g_free(drain_one(f, NULL));
  g_free(drain_one(f, NULL)); /* the 500 */
  g_assert_null(drain_one(f, NULL));
  registration_announce_children(f->r);
  char *line = drain_one(f, NULL);
  g_assert_cmpstr(line, ==, "s/us|101,kid2,Kid 2,t");
  g_free(line);
  line = drain_one(f, NULL);
  g_assert_cmpstr(line, ==, "s/us/kid2|114,c8y_Restart,c8y_Command");
  g_free(line);
  registration_announce_children(f->r); /* nothing new */
  g_assert_null(drain_one(f, NULL));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add("/registration/connect_sequence", fx, NULL, fx_setup,
             test_connect_sequence, fx_teardown);
  g_test_add("/registration/lost_and_children", fx, NULL, fx_setup,
             test_lost_and_children, fx_teardown);
  return g_test_run();
}
