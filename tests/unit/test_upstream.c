/* upstream: the one path of a line into the queue, and the typed tags. */
#include "upstream.h"

#include <glib.h>
#include <string.h>

typedef struct {
  outq *q;
  registry *reg;
  upstream up;
  int wakes;
} fx;

static void count_wake(void *ctx) { ((fx *)ctx)->wakes++; }

static void fx_setup(fx *f, gconstpointer d) {
  (void)d;
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[256];
  g_assert_cmpint(outq_open(&qo, &f->q, err, sizeof err), ==, 0);
  f->reg = registry_new();
  f->wakes = 0;
  f->up =
      (upstream){.q = f->q, .reg = f->reg, .wake = count_wake, .wake_ctx = f};
}

static void fx_teardown(fx *f, gconstpointer d) {
  (void)d;
  outq_close(f->q);
  registry_free(f->reg);
}

/* The next batch as "class topic|payload" (acked), or NULL. */
static char *take(fx *f) {
  outq_batch b;
  if (outq_take(f->q, C8Y_MAX_LINE, &b) != 1)
    return NULL;
  char *s = g_strdup_printf("%d %s|%s", (int)b.cls, b.topic, b.payload);
  outq_ack(f->q, b.id);
  outq_batch_free(&b);
  return s;
}

static void assert_next(fx *f, const char *want) {
  char *got = take(f);
  g_assert_cmpstr(got, ==, want);
  g_free(got);
}

static void test_tags_round_trip(void) {
  upstream_tag kinds[] = {{UPSTREAM_TAG_OPERATION, 1},
                          {UPSTREAM_TAG_OPERATION, UPSTREAM_TAG_SEQ_LIMIT - 1},
                          {UPSTREAM_TAG_REGISTRATION, 7},
                          {UPSTREAM_TAG_PENDING, 7}};
  for (size_t i = 0; i < G_N_ELEMENTS(kinds); i++) {
    uint64_t bits = upstream_tag_bits(kinds[i]);
    g_assert_cmpuint(bits, !=, 0);
    upstream_tag back = upstream_tag_of(bits);
    g_assert_cmpint(back.kind, ==, kinds[i].kind);
    g_assert_cmpuint(back.seq, ==, kinds[i].seq);
    for (size_t k = 0; k < G_N_ELEMENTS(kinds); k++)
      g_assert_true(upstream_tag_eq(kinds[i], kinds[k]) == (i == k));
  }
  /* The registration and the 500 of one connect never meet. */
  g_assert_false(upstream_tag_eq(kinds[2], kinds[3]));
  g_assert_cmpuint(upstream_tag_bits(UPSTREAM_NO_TAG), ==, 0);
  g_assert_cmpint(upstream_tag_of(0).kind, ==, UPSTREAM_TAG_NONE);
  /* Values no kind of ours produces are no tag. */
  g_assert_cmpint(upstream_tag_of(42).kind, ==, UPSTREAM_TAG_NONE);
  g_assert_cmpint(upstream_tag_of(UINT64_MAX).kind, ==, UPSTREAM_TAG_NONE);
}

static void test_topics(void) {
  char t[600];
  g_assert_cmpint(upstream_topic(NULL, NULL, t, sizeof t), ==, C8Y_OK);
  g_assert_cmpstr(t, ==, "s/us");
  g_assert_cmpint(upstream_topic(NULL, "kid", t, sizeof t), ==, C8Y_OK);
  g_assert_cmpstr(t, ==, "s/us/kid");
  g_assert_cmpint(upstream_topic("acme", NULL, t, sizeof t), ==, C8Y_OK);
  g_assert_cmpstr(t, ==, "s/uc/acme");
  g_assert_cmpint(upstream_topic("acme", "kid", t, sizeof t), ==, C8Y_OK);
  g_assert_cmpstr(t, ==, "s/uc/acme/kid");
  g_assert_cmpint(upstream_topic(NULL, "a/b", t, sizeof t), ==, C8Y_EINVAL);
  g_assert_cmpint(upstream_topic(NULL, "", t, sizeof t), ==, C8Y_EINVAL);
  g_assert_cmpint(upstream_topic("a+b", NULL, t, sizeof t), ==, C8Y_EINVAL);
  g_assert_cmpint(upstream_topic("", NULL, t, sizeof t), ==, C8Y_EINVAL);
  g_assert_cmpint(upstream_topic(NULL, "kid", t, 6), ==, C8Y_EINVAL);
  g_assert_cmpint(upstream_class("s/us", "301"), ==, OUTQ_ALARM);
  g_assert_cmpint(upstream_class("s/us/kid", "114"), ==, OUTQ_INVENTORY);
  /* A custom template's id is never taken for a static one. */
  g_assert_cmpint(upstream_class("s/uc/acme", "301"), ==, OUTQ_EVENT);
}

/* Class and replace key come from the template: a newer 113 supersedes
 * the queued one, a 400 is an event, and each queued line wakes the loop. */
static void test_class_and_key_by_template(fx *f, gconstpointer d) {
  (void)d;
  const char *a[] = {"113", "a=1"}, *b[] = {"113", "a=2"};
  const char *ev[] = {"400", "t", "x,y"};
  g_assert_cmpint(upstream_send(&f->up, UPSTREAM_BY_TEMPLATE, "s/us", a, 2, 0,
                                UPSTREAM_NO_TAG),
                  ==, C8Y_OK);
  g_assert_cmpint(upstream_send(&f->up, UPSTREAM_BY_TEMPLATE, "s/us", ev, 3, 0,
                                UPSTREAM_NO_TAG),
                  ==, C8Y_OK);
  g_assert_cmpint(upstream_send(&f->up, UPSTREAM_BY_TEMPLATE, "s/us", b, 2, 0,
                                UPSTREAM_NO_TAG),
                  ==, C8Y_OK);
  g_assert_cmpint(f->wakes, ==, 3);
  assert_next(f, "2 s/us|400,t,\"x,y\"");
  assert_next(f, "3 s/us|113,a=2");
  g_assert_null(take(f));
  /* An encoded line is read for its template id the same way. */
  g_assert_cmpint(upstream_send_line(&f->up, UPSTREAM_BY_TEMPLATE, "s/us",
                                     "306,c8y_X", 0, UPSTREAM_NO_TAG),
                  ==, C8Y_OK);
  g_assert_cmpint(upstream_send_line(&f->up, UPSTREAM_BY_TEMPLATE, "s/us",
                                     "500", 0, UPSTREAM_NO_TAG),
                  ==, C8Y_OK);
  /* (A status waits for older lines of its topic.) */
  assert_next(f, "1 s/us|306,c8y_X");
  assert_next(f, "0 s/us|500");
  /* A line over the limit is refused whole. */
  char *big = g_malloc(C8Y_MAX_LINE + 10);
  memset(big, 'x', C8Y_MAX_LINE + 9);
  big[C8Y_MAX_LINE + 9] = 0;
  const char *huge[] = {"400", "t", big};
  g_assert_cmpint(upstream_send(&f->up, UPSTREAM_BY_TEMPLATE, "s/us", huge, 3,
                                0, UPSTREAM_NO_TAG),
                  ==, C8Y_ETOOBIG);
  g_free(big);
  g_assert_null(take(f));
}

/* Tagged lines come back tagged, and only their kind's lines go when
 * unqueued. */
static void test_tagged(fx *f, gconstpointer d) {
  (void)d;
  upstream_tag reg = {UPSTREAM_TAG_REGISTRATION, 3};
  upstream_tag op = {UPSTREAM_TAG_OPERATION, 3};
  const char *dev[] = {"100", "dev", "t"}, *s501[] = {"501", "c8y_Restart"};
  g_assert_cmpint(
      upstream_send(&f->up, OUTQ_INVENTORY, "s/us", dev, 3, OUTQ_VOLATILE, reg),
      ==, C8Y_OK);
  g_assert_cmpint(
      upstream_send(&f->up, OUTQ_OPSTATUS, "s/us", s501, 2, OUTQ_VOLATILE, op),
      ==, C8Y_OK);
  g_assert_cmpuint(upstream_unqueue(&f->up, reg), ==, 1);
  outq_batch b;
  g_assert_cmpint(outq_take(f->q, C8Y_MAX_LINE, &b), ==, 1);
  g_assert_cmpstr(b.payload, ==, "501,c8y_Restart");
  g_assert_cmpuint(b.ntags, ==, 1);
  upstream_tag back = upstream_tag_of(b.tags[0]);
  g_assert_true(upstream_tag_eq(back, op));
  outq_ack(f->q, b.id);
  outq_batch_free(&b);
  g_assert_null(take(f));
}

/* What plugins and the local API may send. */
static void test_static_checks(fx *f, gconstpointer d) {
  (void)d;
  const char *why = NULL;
  const char *status[] = {"503", "c8y_Restart"};
  g_assert_cmpint(upstream_send_static(&f->up, NULL, NULL, status, 2, &why), ==,
                  C8Y_EINVAL);
  g_assert_nonnull(strstr(why, "agent owns"));
  const char *custom[] = {"m1", "x"};
  g_assert_cmpint(upstream_send_static(&f->up, NULL, NULL, custom, 2, &why), ==,
                  C8Y_EINVAL);
  g_assert_nonnull(strstr(why, "numeric"));
  const char *ev[] = {"400", "t", "x"};
  g_assert_cmpint(upstream_send_static(&f->up, NULL, "a#b", ev, 3, &why), ==,
                  C8Y_EINVAL);
  g_assert_nonnull(strstr(why, "child"));
  g_assert_null(take(f));
  /* A 102 from the local API registers its service (no owner). */
  const char *svc[] = {"102", "dev_svc", "t", "svc", "up"};
  g_assert_null(registry_find_service(f->reg, "dev_svc"));
  g_assert_cmpint(upstream_send_static(&f->up, NULL, NULL, svc, 5, &why), ==,
                  C8Y_OK);
  g_assert_nonnull(registry_find_service(f->reg, "dev_svc"));
  assert_next(f, "3 s/us|102,dev_svc,t,svc,up");
  g_assert_cmpint(upstream_send_custom(&f->up, "acme", "kid", custom, 2, &why),
                  ==, C8Y_OK);
  assert_next(f, "2 s/uc/acme/kid|m1,x");
  g_assert_cmpint(upstream_send_custom(&f->up, "a/b", NULL, custom, 2, &why),
                  ==, C8Y_EINVAL);
  g_assert_nonnull(strstr(why, "template collection"));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/upstream/tags", test_tags_round_trip);
  g_test_add_func("/upstream/topics", test_topics);
  g_test_add("/upstream/class_and_key", fx, NULL, fx_setup,
             test_class_and_key_by_template, fx_teardown);
  g_test_add("/upstream/tagged", fx, NULL, fx_setup, test_tagged, fx_teardown);
  g_test_add("/upstream/static_checks", fx, NULL, fx_setup, test_static_checks,
             fx_teardown);
  return g_test_run();
}
