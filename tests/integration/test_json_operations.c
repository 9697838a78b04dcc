/* Operations of any fragment end to end: the real agent with the jsonop
 * plugin (SDK 1.2) against the simulator, which publishes operations as
 * Cumulocity does on devicecontrol/notifications (and on s/ds and
 * s/dc/<xid> where a template renders them). */
#include "fixture.h"

#include <glib.h>
#include <stdio.h>
#include <string.h>

static void up(fx *f, const char *plugin_section) {
  f->plugin_dir = JSONOP_PLUGIN_DIR;
  char *extra = g_strdup_printf("[plugin.jsonop]\n%s",
                                plugin_section ? plugin_section : "");
  fx_up(f, extra);
  g_free(extra);
}

/* Lines on `topic` starting with prefix. */
static size_t lines(fx *f, const char *topic, const char *prefix) {
  return sim_count_lines(f->s, topic, prefix);
}

static size_t log_count(fx *f, const char *needle) {
  char *log = agent_proc_log(f->a);
  size_t n = 0;
  for (const char *p = log; (p = strstr(p, needle)); p++)
    n++;
  g_free(log);
  return n;
}

static char *id_line(const char *tpl, long id) {
  return g_strdup_printf("%s,%ld", tpl, id);
}

/* A custom fragment for the root, created as the UI or REST API does:
 * started and finished by id, the handler read the document. */
static void test_custom_root(void) {
  fx f = {0};
  up(&f, NULL);
  long id = sim_create_json_operation(f.s, FX_DEVICE,
                                      "{\"acme_Reset\":{\"mode\":\"hard\"}}");
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_SUCCESSFUL);
  char *want = g_strdup_printf("hard,%ld", id);
  g_assert_cmpstr(sim_operation_detail(f.s, id), ==, want);
  g_free(want);
  char *l = id_line("504", id);
  g_assert_cmpuint(lines(&f, "s/us", l), ==, 1);
  g_free(l);
  g_assert_cmpuint(lines(&f, "s/us", "501,"), ==, 0);
  g_assert_cmpuint(lines(&f, "s/us", "503,"), ==, 0);
  /* The root announced the fragment. */
  char *supported = NULL;
  g_assert_cmpint(fx_line_pos(&f, "s/us", "114,", &supported), >=, 0);
  g_assert_nonnull(strstr(supported, "acme_Reset"));
  g_free(supported);
  fx_down(&f);
}

/* A child's JSON operation: its plugin serves every child it owns; the
 * statuses go on the child's own topic. */
static void test_custom_child(void) {
  fx f = {0};
  up(&f, "child = kid1\n");
  g_assert_cmpint(sim_wait_line(f.s, "s/us/kid1", "114,", 0, 10000), >=, 0);
  long id = sim_create_json_operation(f.s, "kid1", "{\"acme_Blink\":{}}");
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, id), ==, "blinked kid1");
  char *l = id_line("504", id);
  g_assert_cmpuint(lines(&f, "s/us/kid1", l), ==, 1);
  g_free(l);
  fx_down(&f);
}

/* One operation delivered on s/ds and as JSON runs once, and its final
 * status goes by id. */
static void test_both_channels_once(void) {
  fx f = {0};
  fx_start_sim(&f);
  sim_set_json_operations(f.s, true);
  f.plugin_dir = JSONOP_PLUGIN_DIR;
  fx_make_agent(&f, "secret", NULL);
  fx_start_connected(&f);
  long id = sim_create_operation(f.s, "511," FX_DEVICE ",hello");
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_SUCCESSFUL);
  /* The simulator publishes the line, then the JSON copy: the handler
   * usually learns the id, and the final status goes by id once it is
   * known; it is never sent twice. */
  char *want = g_strdup_printf("ran hello id=%ld", id);
  const char *detail = sim_operation_detail(f.s, id);
  g_assert_true(strcmp(detail, want) == 0 ||
                strcmp(detail, "ran hello id=none") == 0);
  g_assert_cmpuint(lines(&f, "s/us", "506,") + lines(&f, "s/us", "503,"), ==,
                   1);
  g_assert_cmpuint(log_count(&f, "jsonop: ran command hello"), ==, 1);
  g_free(want);
  /* A second one, while the copies of the first may still be around. */
  long id2 = sim_create_operation(f.s, "511," FX_DEVICE ",again");
  g_assert_cmpint(fx_wait_op(&f, id2, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(log_count(&f, "jsonop: ran command again"), ==, 1);
  g_assert_cmpuint(log_count(&f, "jsonop: ran command"), ==, 2);
  fx_down(&f);
}

/* Two PENDING operations of one fragment, delivered together by the 500
 * after connecting (several JSON documents in one publish), each get their
 * own final status, by id. */
static void test_two_pending_by_id(void) {
  fx f = {0};
  fx_start_sim(&f);
  long a = sim_create_json_operation(f.s, FX_DEVICE,
                                     "{\"acme_Reset\":{\"mode\":\"a\"}}");
  long b = sim_create_json_operation(f.s, FX_DEVICE,
                                     "{\"acme_Reset\":{\"mode\":\"b\"}}");
  f.plugin_dir = JSONOP_PLUGIN_DIR;
  fx_make_agent(&f, "secret", "[plugin.jsonop]\n");
  fx_start_connected(&f);
  g_assert_cmpint(fx_wait_op(&f, a, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpint(fx_wait_op(&f, b, 15000), ==, SIM_OP_SUCCESSFUL);
  char *da = g_strdup_printf("a,%ld", a), *db = g_strdup_printf("b,%ld", b);
  g_assert_cmpstr(sim_operation_detail(f.s, a), ==, da);
  g_assert_cmpstr(sim_operation_detail(f.s, b), ==, db);
  g_free(da);
  g_free(db);
  char *la = id_line("506", a), *lb = id_line("506", b);
  g_assert_cmpuint(lines(&f, "s/us", la), ==, 1);
  g_assert_cmpuint(lines(&f, "s/us", lb), ==, 1);
  g_free(la);
  g_free(lb);
  g_assert_cmpuint(log_count(&f, "jsonop: ran acme_Reset"), ==, 2);
  fx_down(&f);
}

/* A publish with a broken document and a good one: one warning, the good
 * one runs. */
static void test_bad_json(void) {
  fx f = {0};
  up(&f, NULL);
  g_assert_cmpint(
      sim_publish(f.s, "devicecontrol/notifications",
                  "{\"id\":\"900\",\"acme_Reset\":{broken\n"
                  "{\"id\":\"901\",\"status\":\"PENDING\",\"externalSource\":{"
                  "\"externalId\":\"" FX_DEVICE "\"},\"acme_Reset\":{}}\n"),
      ==, 0);
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "506,901", 0, 10000), >=, 0);
  g_assert_cmpuint(log_count(&f, "is not valid JSON"), ==, 1);
  g_assert_cmpuint(lines(&f, "s/us", "504,900"), ==, 0);
  fx_down(&f);
}

/* An operation rendered by a custom template on s/dc/<xid> gets 501 and
 * one final status (before ABI 1.2 it stayed PENDING). */
static void test_template_operation(void) {
  fx f = {0};
  up(&f, "xid = acme\n");
  long id = sim_create_custom_operation(f.s, "acme", "dm1," FX_DEVICE ",a=1",
                                        "acme_Config");
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, id), ==, "dm1 a=1");
  g_assert_cmpuint(lines(&f, "s/us", "501,acme_Config"), ==, 1);
  g_assert_cmpuint(lines(&f, "s/us", "503,acme_Config"), ==, 1);
  fx_down(&f);
}

/* A gateway finds a device at run time (from its own thread): the child is
 * announced (101, its own 114), and its operation that arrived before it
 * was known runs now. */
static void test_child_added_at_run_time(void) {
  fx f = {0};
  up(&f, NULL);
  long early = sim_create_json_operation(f.s, "kid9", "{\"acme_Blink\":{}}");
  g_assert_true(agent_proc_wait_log(f.a, "unknown device 'kid9'", 10000));
  g_assert_cmpint(sim_operation_status(f.s, early), ==, SIM_OP_PENDING);
  long disc = sim_create_json_operation(
      f.s, FX_DEVICE, "{\"acme_Discover\":{\"child\":\"kid9\"}}");
  g_assert_cmpint(fx_wait_op(&f, disc, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "101,kid9", 0, 10000), >=, 0);
  g_assert_cmpint(sim_wait_line(f.s, "s/us/kid9", "114,acme_Blink", 0, 10000),
                  >=, 0);
  g_assert_cmpint(fx_wait_op(&f, early, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, early), ==, "blinked kid9");
  long later = sim_create_json_operation(f.s, "kid9", "{\"acme_Blink\":{}}");
  g_assert_cmpint(fx_wait_op(&f, later, 15000), ==, SIM_OP_SUCCESSFUL);
  /* Removed: its operations are no longer dispatched. */
  long forget = sim_create_json_operation(
      f.s, FX_DEVICE, "{\"acme_Forget\":{\"child\":\"kid9\"}}");
  g_assert_cmpint(fx_wait_op(&f, forget, 15000), ==, SIM_OP_SUCCESSFUL);
  long after = sim_create_json_operation(f.s, "kid9", "{\"acme_Blink\":{}}");
  g_assert_true(
      agent_proc_wait_log(f.a, "no plugin announced such a child", 10000));
  g_assert_cmpint(sim_operation_status(f.s, after), ==, SIM_OP_PENDING);
  fx_down(&f);
}

/* "Measure now": a batch from a thread of the plugin, outside any produce
 * callback. */
static void test_batch_from_plugin_thread(void) {
  fx f = {0};
  up(&f, NULL);
  long id = sim_create_json_operation(f.s, FX_DEVICE, "{\"acme_Measure\":{}}");
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, id), ==, "commit 0");
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "200,c8y_Now,v,42,u", 0, 10000),
                  >=, 0);
  fx_down(&f);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/json-ops/custom-root", test_custom_root);
  g_test_add_func("/json-ops/custom-child", test_custom_child);
  g_test_add_func("/json-ops/both-channels-once", test_both_channels_once);
  g_test_add_func("/json-ops/two-pending-by-id", test_two_pending_by_id);
  g_test_add_func("/json-ops/bad-json", test_bad_json);
  g_test_add_func("/json-ops/template-operation", test_template_operation);
  g_test_add_func("/json-ops/child-added-at-run-time",
                  test_child_added_at_run_time);
  g_test_add_func("/json-ops/batch-from-plugin-thread",
                  test_batch_from_plugin_thread);
  return g_test_run();
}
