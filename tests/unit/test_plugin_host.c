/* plugin: the host side of the SDK, driven through the real c8y_api table
 * with a memory-only queue (no loader, no worker threads). */
#include "config.h"
#include "outq.h"
#include "plugin_host.h"
#include "registry.h"

#include <c8y/plugin.h>
#include <glib.h>
#include <string.h>

typedef struct {
  agent_config cfg;
  registry *reg;
  outq *q;
  plugin_host host;
  c8y_plugin *p;
  const c8y_api *api;
} fx;

static void fx_setup(fx *f, gconstpointer d) {
  (void)d;
  memset(f, 0, sizeof *f);
  f->reg = registry_new();
  g_assert_nonnull(f->reg);
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[256];
  g_assert_cmpint(outq_open(&qo, &f->q, err, sizeof err), ==, 0);
  f->host.cfg = &f->cfg;
  f->host.reg = f->reg;
  f->host.q = f->q;
  f->host.device_id = "root-dev";
  f->host.state_dir = "/nonexistent";
  f->p =
      plugin_host_new_plugin(&f->host, "unit", "1.0", "/nonexistent/unit.so");
  g_assert_nonnull(f->p);
  f->api = plugin_host_api();
}

static void fx_teardown(fx *f, gconstpointer d) {
  (void)d;
  registry_remove_plugin(f->reg, f->p);
  plugin_host_free_plugin(f->p);
  registry_free(f->reg);
  outq_close(f->q);
}

/* A child id that is not a usable topic segment and external id is refused
 * where it enters, not when its first line fails to publish. */
static void test_add_child_validates(fx *f, gconstpointer d) {
  (void)d;
  f->p->registering = true;
  static const char *const bad[] = {"ch\xff\xfe", "a\x01z", "evil/#", "a,b",
                                    "q\"uote",    " pad",   ""};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
    g_assert_cmpint(f->api->add_child(f->p, bad[i], "n", "t"), ==, C8Y_EINVAL);
  g_assert_cmpuint(registry_child_count(f->reg), ==, 0);
  g_assert_cmpint(f->api->add_child(f->p, "root-dev:device:kid", "n", "t"), ==,
                  C8Y_OK);
  g_assert_true(registry_has_child(f->reg, "root-dev:device:kid"));
  f->p->registering = false;
  /* Lines addressed to a bad child are refused the same way. */
  g_assert_cmpint(f->api->send_event(f->p, "ch\xff", "t", "x", 0), ==,
                  C8Y_EINVAL);
  g_assert_cmpint(f->api->send_event(f->p, "root-dev:device:kid", "t", "x", 0),
                  ==, C8Y_OK);
}

static int produce_nothing(c8y_plugin *self, c8y_batch *b, void *ud) {
  (void)self;
  (void)b;
  (void)ud;
  return C8Y_OK;
}

static void test_producer_cap(fx *f, gconstpointer d) {
  (void)d;
  f->cfg.plugin_max_producers = 2;
  f->p->registering = true;
  g_assert_cmpint(f->api->add_producer(f->p, "a", 1000, produce_nothing, NULL),
                  ==, C8Y_OK);
  g_assert_cmpint(f->api->add_producer(f->p, "b", 1000, produce_nothing, NULL),
                  ==, C8Y_OK);
  g_assert_cmpint(f->api->add_producer(f->p, "c", 1000, produce_nothing, NULL),
                  ==, C8Y_EINVAL);
  g_assert_cmpuint(registry_producer_count(f->reg), ==, 2);
  f->p->registering = false;
}

/* 1 line/s on average, a burst of 100 s worth: the 101st line in a row is
 * refused, and nothing refused reaches the queue. */
static void test_line_rate(fx *f, gconstpointer d) {
  (void)d;
  f->cfg.plugin_max_lines_per_s = 1;
  int ok = 0, refused = 0;
  for (int i = 0; i < 150; i++) {
    int rc = f->api->send_event(f->p, NULL, "c8y_Flood", "x", 0);
    if (rc == C8Y_OK)
      ok++;
    else if (rc == C8Y_EAGAIN)
      refused++;
  }
  /* A second may pass during the loop on a loaded machine: one more. */
  g_assert_cmpint(ok, >=, 100);
  g_assert_cmpint(ok, <=, 102);
  g_assert_cmpint(ok + refused, ==, 150);
  outq_stats st;
  outq_get_stats(f->q, &st);
  g_assert_cmpuint(st.queued[OUTQ_EVENT], ==, (size_t)ok);
  /* Another plugin has its own allowance. */
  c8y_plugin *other =
      plugin_host_new_plugin(&f->host, "other", "1", "/x/other.so");
  g_assert_cmpint(f->api->send_event(other, NULL, "c8y_Ok", "x", 0), ==,
                  C8Y_OK);
  plugin_host_free_plugin(other);
}

static c8y_batch *kept_batch;
static int add_inside = -1;

static int produce_and_keep(c8y_plugin *self, c8y_batch *b, void *ud) {
  (void)self;
  (void)ud;
  kept_batch = b;
  add_inside = plugin_host_api()->batch_add(b, "c8y_T", "T", 1.5, "C");
  return C8Y_OK;
}

/* The batch lives on the worker's stack for the duration of the produce
 * call: a pointer kept past it is refused, never written through. */
static void test_batch_outside_callback(fx *f, gconstpointer d) {
  (void)d;
  f->p->registering = true;
  g_assert_cmpint(
      f->api->add_producer(f->p, "keep", 1000, produce_and_keep, NULL), ==,
      C8Y_OK);
  f->p->registering = false;
  g_assert_cmpint(plugin_host_start_worker(f->p), ==, 0);
  g_assert_cmpint(
      plugin_host_queue_produce(f->p, registry_producer_at(f->reg, 0)), ==, 0);
  plugin_host_stop_worker(f->p); /* runs the queued job, then joins */
  g_assert_cmpint(add_inside, ==, C8Y_OK);
  g_assert_nonnull(kept_batch);
  g_assert_cmpint(f->api->batch_add(kept_batch, "c8y_T", "T", 2.0, "C"), ==,
                  C8Y_ESTATE);
  g_assert_cmpint(f->api->batch_set_time(kept_batch, 1000), ==, C8Y_ESTATE);
  g_assert_cmpint(f->api->batch_set_type(kept_batch, "x"), ==, C8Y_ESTATE);
  g_assert_cmpint(f->api->batch_set_child(kept_batch, "kid"), ==, C8Y_ESTATE);
  g_assert_cmpint(f->api->batch_add(NULL, "c8y_T", "T", 2.0, "C"), ==,
                  C8Y_EINVAL);
  outq_stats st;
  outq_get_stats(f->q, &st);
  g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, 1); /* the inside one */
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add("/plugin/add-child-validates", fx, NULL, fx_setup,
             test_add_child_validates, fx_teardown);
  g_test_add("/plugin/producer-cap", fx, NULL, fx_setup, test_producer_cap,
             fx_teardown);
  g_test_add("/plugin/line-rate", fx, NULL, fx_setup, test_line_rate,
             fx_teardown);
  g_test_add("/plugin/batch-outside-callback", fx, NULL, fx_setup,
             test_batch_outside_callback, fx_teardown);
  return g_test_run();
}
