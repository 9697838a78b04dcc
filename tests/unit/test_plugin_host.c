/* plugin: the host side of the SDK, driven through the real c8y_api table
 * with a memory-only queue (no loader, no worker threads). */
#include "config.h"
#include "outq.h"
#include "plugin_host.h"
#include "registry.h"

#include <c8y/plugin.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  agent_config cfg;
  registry *reg;
  outq *q;
  upstream up;
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
  f->up = (upstream){.q = f->q, .reg = f->reg};
  f->host.up = &f->up;
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

/* The rate limit's refusal has its own code for 1.2 plugins; one built for
 * 1.1 keeps getting the C8Y_EAGAIN it was documented. */
static void test_line_rate_code_by_abi(fx *f, gconstpointer d) {
  (void)d;
  f->cfg.plugin_max_lines_per_s = 1;
  for (int minor = 1; minor <= 2; minor++) {
    c8y_plugin *p = plugin_host_new_plugin(&f->host, minor == 1 ? "old" : "new",
                                           "1", "/x/p.so");
    p->info.abi_major = 1;
    p->info.abi_minor = (uint32_t)minor;
    int rc = C8Y_OK;
    for (int i = 0; i < 200 && rc == C8Y_OK; i++)
      rc = f->api->send_event(p, NULL, "c8y_Flood", "x", 0);
    g_assert_cmpint(rc, ==, minor == 1 ? C8Y_EAGAIN : C8Y_ERATE);
    g_assert_cmpstr(f->api->status_str(C8Y_ERATE), !=, "unknown status");
    plugin_host_free_plugin(p);
  }
}

static int op_nop(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)self;
  (void)op;
  (void)ud;
  return C8Y_OK;
}

/* Operation registrations: templates, fragments, devices, conflicts. */
static void test_operation_registrations(fx *f, gconstpointer d) {
  (void)d;
  f->p->registering = true;
  const c8y_api *a = f->api;
  g_assert_cmpint(
      a->add_fragment_operation(f->p, "acme_Reset", 0, op_nop, NULL), ==,
      C8Y_OK);
  /* a template id is not a fragment; bad names are refused */
  g_assert_cmpint(a->add_fragment_operation(f->p, "510", 0, op_nop, NULL), ==,
                  C8Y_EINVAL);
  static const char *const bad[] = {
      "", "9lives", "a,b", "a b", "delivery", "x.y", "Ã©", "externalSource"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
    g_assert_cmpint(a->add_fragment_operation(f->p, bad[i], 0, op_nop, NULL),
                    ==, C8Y_EINVAL);
  g_assert_cmpint(
      a->add_fragment_operation(f->p, "acme_Reset", 0, op_nop, NULL), ==,
      C8Y_EEXIST);
  /* a fragment served by a template handler cannot get a fragment handler
   * for the same device, and the other way round */
  g_assert_cmpint(a->add_operation(f->p, "511", 0, op_nop, NULL), ==, C8Y_OK);
  g_assert_cmpint(
      a->add_fragment_operation(f->p, "c8y_Command", 0, op_nop, NULL), ==,
      C8Y_EEXIST);
  /* devices: a child must be this plugin's */
  g_assert_cmpint(
      a->add_device_operation(f->p, "nobody", "acme_Blink", 0, op_nop, NULL),
      ==, C8Y_EINVAL);
  g_assert_cmpint(a->add_child(f->p, "root-dev:kid", "k", "t"), ==, C8Y_OK);
  g_assert_cmpint(a->add_device_operation(f->p, "root-dev:kid", "acme_Blink", 0,
                                          op_nop, NULL),
                  ==, C8Y_OK);
  g_assert_cmpint(
      a->add_device_operation(f->p, C8Y_ALL_CHILDREN, "510", 0, op_nop, NULL),
      ==, C8Y_OK);
  g_assert_cmpint(
      a->add_device_operation(f->p, NULL, "acme_Root", 0, op_nop, NULL), ==,
      C8Y_OK);
  g_assert_cmpint(a->add_template_operation(f->p, "acme", "dm1", "acme_Cfg"),
                  ==, C8Y_OK);
  g_assert_cmpint(a->add_template_operation(f->p, "acme", "dm1", "acme_Cfg"),
                  ==, C8Y_EEXIST);
  g_assert_cmpint(a->add_template_operation(f->p, "a/b", "dm2", "acme_Cfg"), ==,
                  C8Y_EINVAL);
  f->p->registering = false;
  g_assert_cmpint(a->add_fragment_operation(f->p, "acme_Late", 0, op_nop, NULL),
                  ==, C8Y_ESTATE);
  g_assert_cmpint(a->add_template_operation(f->p, "acme", "dm3", "acme_Cfg"),
                  ==, C8Y_ESTATE);
  char *root = registry_supported_operations(f->reg);
  g_assert_cmpstr(root, ==, "acme_Reset,c8y_Command,acme_Root");
  g_free(root);
  char *kid = registry_child_supported_operations(
      f->reg, registry_find_child(f->reg, "root-dev:kid"));
  /* the 1.0 add_operation serves the plugin's children too (1.1 rule) */
  g_assert_cmpstr(kid, ==, "c8y_Command,acme_Blink,c8y_Restart");
  g_free(kid);
}

/* Children after init: a 1.2 plugin may add and remove them at any time;
 * one built for 1.1 was promised C8Y_ESTATE. */
static void test_children_at_run_time(fx *f, gconstpointer d) {
  (void)d;
  f->p->info.abi_minor = 1;
  g_assert_cmpint(f->api->add_child(f->p, "root-dev:a", "a", "t"), ==,
                  C8Y_ESTATE);
  f->p->info.abi_minor = 2;
  uint64_t seq = registry_child_seq(f->reg);
  g_assert_cmpint(f->api->add_child(f->p, "root-dev:a", "a", "t"), ==, C8Y_OK);
  g_assert_cmpuint(registry_child_seq(f->reg), >, seq);
  g_assert_cmpint(f->api->add_child(f->p, "root-dev:a", "a", "t"), ==,
                  C8Y_EEXIST);
  g_assert_cmpint(f->api->remove_child(f->p, "root-dev:b"), ==, C8Y_EINVAL);
  c8y_plugin *other =
      plugin_host_new_plugin(&f->host, "other", "1", "/x/other.so");
  g_assert_cmpint(f->api->remove_child(other, "root-dev:a"), ==, C8Y_EINVAL);
  reg_child *kept = registry_find_child(f->reg, "root-dev:a");
  g_assert_cmpint(f->api->remove_child(f->p, "root-dev:a"), ==, C8Y_OK);
  g_assert_false(registry_has_child(f->reg, "root-dev:a"));
  /* the record the main loop may hold stays valid, and comes back */
  g_assert_cmpstr(kept->id, ==, "root-dev:a");
  g_assert_cmpint(f->api->add_child(f->p, "root-dev:a", "again", "t"), ==,
                  C8Y_OK);
  g_assert_true(registry_find_child(f->reg, "root-dev:a") == kept);
  g_assert_cmpstr(kept->name, ==, "again");
  plugin_host_free_plugin(other);
}

typedef struct batch_thread {
  fx *f;
  c8y_batch *b;
  int add, commit, late, discard_add;
} batch_thread;

static void *measure_now(void *arg) {
  batch_thread *t = arg;
  const c8y_api *a = t->f->api;
  t->b = a->batch_begin(t->f->p);
  t->add = a->batch_add(t->b, "c8y_Now", "v", 42, "u");
  a->batch_set_type(t->b, "now");
  t->commit = a->batch_commit(t->b);
  t->late = a->batch_add(t->b, "c8y_Now", "v", 1, "u"); /* committed */
  c8y_batch *d = a->batch_begin(t->f->p);
  t->discard_add = a->batch_add(d, "c8y_Gone", "v", 1, "u");
  a->batch_discard(d);
  return NULL;
}

static void *use_foreign(void *arg) {
  batch_thread *t = arg;
  t->add = t->f->api->batch_add(t->b, "c8y_T", "T", 1, "C");
  t->commit = t->f->api->batch_commit(t->b);
  return NULL;
}

/* ABI 1.2 batches from a thread of the plugin: its lines are queued at the
 * commit; a batch is refused on other threads and after its commit. */
static void test_batch_from_any_thread(fx *f, gconstpointer d) {
  (void)d;
  batch_thread t = {.f = f};
  pthread_t th;
  g_assert_cmpint(pthread_create(&th, NULL, measure_now, &t), ==, 0);
  pthread_join(th, NULL);
  g_assert_cmpint(t.add, ==, C8Y_OK);
  g_assert_cmpint(t.commit, ==, C8Y_OK);
  g_assert_cmpint(t.late, ==, C8Y_ESTATE);
  g_assert_cmpint(t.discard_add, ==, C8Y_OK);
  outq_stats st;
  outq_get_stats(f->q, &st);
  g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, 1);
  /* begun here, used on another thread: refused without being touched */
  c8y_batch *mine = f->api->batch_begin(f->p);
  batch_thread other = {.f = f, .b = mine};
  g_assert_cmpint(pthread_create(&th, NULL, use_foreign, &other), ==, 0);
  pthread_join(th, NULL);
  g_assert_cmpint(other.add, ==, C8Y_ESTATE);
  g_assert_cmpint(other.commit, ==, C8Y_ESTATE);
  g_assert_cmpint(f->api->batch_commit(NULL), ==, C8Y_EINVAL);
  g_assert_cmpint(f->api->batch_add(mine, "c8y_T", "T", 1, "C"), ==, C8Y_OK);
  f->api->batch_discard(mine);
  g_assert_cmpint(f->api->batch_commit(mine), ==, C8Y_ESTATE);
  outq_get_stats(f->q, &st);
  g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, 1);
  /* a stopping plugin gets none */
  f->p->stopping = true;
  g_assert_null(f->api->batch_begin(f->p));
  f->p->stopping = false;
}

/* Transfer structs are checked against the 1.1 size (the smallest a 1.x
 * plugin passes) and written no further than the plugin's struct. Neither
 * struct grew after 1.1, so its sizeof is the 1.1 size on every target
 * (tests/sdk/abi_layout.c freezes the numbers per data model). */
static void test_transfer_struct_sizes(fx *f, gconstpointer d) {
  (void)d;
  struct {
    c8y_download d;
    unsigned char canary[64];
  } buf;
  memset(&buf, 0xAA, sizeof buf);
  c8y_download *dl = &buf.d;
  memset(dl, 0, sizeof *dl);
  dl->url = "http://example.invalid/x";
  dl->file = "x";
  /* Up to the end of `error`, the last 1.1 field (sizeof may add tail
   * padding on some targets, e.g. 32-bit ARM). */
  const size_t dl_v11 = offsetof(c8y_download, error) + sizeof dl->error;
  const size_t up_v11 =
      offsetof(c8y_upload, error) + sizeof(((c8y_upload *)0)->error);
  dl->size = dl_v11 - 1;
  g_assert_cmpint(f->api->download(f->p, dl), ==, C8Y_EINVAL);
  dl->size = dl_v11;
  /* no HTTP client in this host: refused past the size check */
  g_assert_cmpint(f->api->download(f->p, dl), ==, C8Y_ENOTSUP);
  g_assert_cmpuint(dl->size, ==, dl_v11);
  g_assert_cmpstr(dl->error, !=, "");
  for (size_t i = 0; i < sizeof buf.canary; i++)
    g_assert_cmpuint(buf.canary[i], ==, 0xAA);
  c8y_upload u;
  memset(&u, 0, sizeof u);
  u.path = "/nonexistent";
  u.type = "t";
  u.size = up_v11 - sizeof(void *);
  g_assert_cmpint(f->api->upload(f->p, &u), ==, C8Y_EINVAL);
  u.size = up_v11;
  g_assert_cmpint(f->api->upload(f->p, &u), !=, C8Y_EINVAL);
}

/* The plugin's state directory is made under <state>/plugins; a symlink
 * planted in place of plugins/ (the agent's user can write the state
 * directory) is not followed. */
static void test_state_dir(fx *f, gconstpointer d) {
  (void)d;
  gchar *top = g_dir_make_tmp("c8y-ph-XXXXXX", NULL);
  f->host.state_dir = top;
  gchar *want = g_build_filename(top, "plugins", "unit", NULL);
  g_assert_cmpstr(f->api->state_dir(f->p), ==, want);
  g_assert_true(g_file_test(want, G_FILE_TEST_IS_DIR));
  g_free(want);

  gchar *top2 = g_dir_make_tmp("c8y-ph-XXXXXX", NULL);
  gchar *elsewhere = g_dir_make_tmp("c8y-ph-XXXXXX", NULL);
  gchar *link = g_build_filename(top2, "plugins", NULL);
  g_assert_cmpint(symlink(elsewhere, link), ==, 0);
  c8y_plugin *p2 =
      plugin_host_new_plugin(&f->host, "unit2", "1.0", "/nonexistent/u2.so");
  f->host.state_dir = top2;
  g_assert_null(f->api->state_dir(p2));
  gchar *planted = g_build_filename(elsewhere, "unit2", NULL);
  g_assert_false(g_file_test(planted, G_FILE_TEST_EXISTS));
  plugin_host_free_plugin(p2);
  f->host.state_dir = "/nonexistent";
  g_assert_cmpint(unlink(link), ==, 0);
  g_rmdir(elsewhere);
  g_rmdir(top2);
  gchar *pd = g_build_filename(top, "plugins", "unit", NULL);
  g_rmdir(pd);
  g_free(pd);
  pd = g_build_filename(top, "plugins", NULL);
  g_rmdir(pd);
  g_free(pd);
  g_rmdir(top);
  g_free(planted);
  g_free(link);
  g_free(elsewhere);
  g_free(top2);
  g_free(top);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add("/plugin/state-dir", fx, NULL, fx_setup, test_state_dir,
             fx_teardown);
  g_test_add("/plugin/add-child-validates", fx, NULL, fx_setup,
             test_add_child_validates, fx_teardown);
  g_test_add("/plugin/producer-cap", fx, NULL, fx_setup, test_producer_cap,
             fx_teardown);
  g_test_add("/plugin/line-rate", fx, NULL, fx_setup, test_line_rate,
             fx_teardown);
  g_test_add("/plugin/batch-outside-callback", fx, NULL, fx_setup,
             test_batch_outside_callback, fx_teardown);
  g_test_add("/plugin/line-rate-code-by-abi", fx, NULL, fx_setup,
             test_line_rate_code_by_abi, fx_teardown);
  g_test_add("/plugin/operation-registrations", fx, NULL, fx_setup,
             test_operation_registrations, fx_teardown);
  g_test_add("/plugin/children-at-run-time", fx, NULL, fx_setup,
             test_children_at_run_time, fx_teardown);
  g_test_add("/plugin/batch-from-any-thread", fx, NULL, fx_setup,
             test_batch_from_any_thread, fx_teardown);
  g_test_add("/plugin/transfer-struct-sizes", fx, NULL, fx_setup,
             test_transfer_struct_sizes, fx_teardown);
  return g_test_run();
}
