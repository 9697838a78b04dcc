/* registry: template ownership, rollback of one plugin, and the 114 list. */
#include "registry.h"

#include <glib.h>
#include <stdlib.h>

static int op(c8y_plugin *p, c8y_operation *o, void *ud) { return C8Y_OK; }
static int prod(c8y_plugin *p, c8y_batch *b, void *ud) { return C8Y_OK; }

static void test_supported_operations_and_rollback(void) {
  registry *r = registry_new();
  g_assert_nonnull(r);
  c8y_plugin *a = (c8y_plugin *)0x1, *b = (c8y_plugin *)0x2;
  c8y_plugin *owner = NULL;
  g_assert_cmpint(
      registry_add_handler(r, a, "511", "c8y_Command", 0, op, NULL, &owner), ==,
      C8Y_OK);
  g_assert_cmpint(registry_add_handler(r, b, "524", "c8y_DownloadConfigFile", 0,
                                       op, NULL, &owner),
                  ==, C8Y_OK);
  g_assert_cmpint(registry_add_handler(r, b, "521", "c8y_DownloadConfigFile", 0,
                                       op, NULL, &owner),
                  ==, C8Y_OK);
  /* Template taken: the owner is reported. */
  g_assert_cmpint(
      registry_add_handler(r, b, "511", "c8y_Command", 0, op, NULL, &owner), ==,
      C8Y_EEXIST);
  g_assert_true(owner == a);
  g_assert_cmpint(registry_add_producer(r, b, "p", 1000, prod, NULL), ==,
                  C8Y_OK);
  g_assert_cmpint(registry_add_producer(r, b, "p", 1000, prod, NULL), ==,
                  C8Y_EEXIST);
  g_assert_cmpint(registry_add_child(r, b, "kid", "Kid", "t"), ==, C8Y_OK);
  g_assert_cmpint(registry_add_message(r, b, "x1", "777", NULL, NULL), ==,
                  C8Y_OK);
  /* The accessors see registration order; out of range is NULL. */
  g_assert_cmpuint(registry_handler_count(r), ==, 3);
  g_assert_cmpstr(registry_handler_at(r, 1)->template_id, ==, "524");
  g_assert_null(registry_handler_at(r, 3));
  g_assert_cmpuint(registry_producer_count(r), ==, 1);
  g_assert_cmpstr(registry_producer_at(r, 0)->name, ==, "p");
  g_assert_null(registry_producer_at(r, 1));
  g_assert_cmpuint(registry_child_count(r), ==, 1);
  g_assert_cmpstr(registry_child_at(r, 0)->id, ==, "kid");
  g_assert_null(registry_child_at(r, 1));
  g_assert_cmpuint(registry_message_count(r), ==, 1);
  /* Fragments once each, in registration order. */
  char *ops = registry_supported_operations(r);
  g_assert_cmpstr(ops, ==, "c8y_Command,c8y_DownloadConfigFile");
  free(ops);

  registry_remove_plugin(r, b);
  ops = registry_supported_operations(r);
  g_assert_cmpstr(ops, ==, "c8y_Command");
  free(ops);
  g_assert_null(registry_find_handler(r, "524"));
  g_assert_nonnull(registry_find_handler(r, "511"));
  g_assert_false(registry_has_child(r, "kid"));
  g_assert_null(registry_find_message(r, "x1", "777"));
  size_t np, nh;
  g_assert_cmpuint(registry_count_for(r, b, &np, &nh), ==, 0);
  g_assert_cmpuint(registry_handler_count(r), ==, 1);
  g_assert_cmpuint(registry_producer_count(r), ==, 0);
  g_assert_cmpuint(registry_child_count(r), ==, 0);
  g_assert_cmpuint(registry_message_count(r), ==, 0);
  registry_free(r);
}

/* Children come and go at run time: a sequence number tells what was
 * added since, removed records stay valid, and a child's plugin serves it
 * only while it owns it. */
static void test_children_at_run_time(void) {
  registry *r = registry_new();
  c8y_plugin *a = (c8y_plugin *)0x1, *b = (c8y_plugin *)0x2;
  g_assert_cmpint(registry_add_scoped_handler(r, a, NULL, "acme_Blink",
                                              REG_SCOPE_OWN_CHILDREN, NULL, 0,
                                              op, NULL, NULL),
                  ==, C8Y_OK);
  g_assert_cmpint(registry_add_child(r, a, "k1", "one", "t"), ==, C8Y_OK);
  uint64_t seq = registry_child_seq(r);
  g_assert_cmpint(registry_add_child(r, a, "k2", "two", "t"), ==, C8Y_OK);
  reg_child **added = NULL;
  g_assert_cmpuint(registry_children_since(r, seq, &added), ==, 1);
  g_assert_cmpstr(added[0]->id, ==, "k2");
  free(added);
  g_assert_nonnull(registry_fragment_handler_for(r, "acme_Blink", "k2"));
  g_assert_null(registry_fragment_handler_for(r, "acme_Blink", NULL));
  reg_child *k2 = registry_find_child(r, "k2");
  g_assert_cmpint(registry_remove_child(r, b, "k2"), ==, C8Y_EINVAL);
  g_assert_cmpint(registry_remove_child(r, a, "k2"), ==, C8Y_OK);
  g_assert_null(registry_fragment_handler_for(r, "acme_Blink", "k2"));
  g_assert_cmpuint(registry_child_count(r), ==, 1);
  const char *old_name = k2->name;
  /* Another plugin takes it over; the old name stays readable. */
  g_assert_cmpint(registry_add_child(r, b, "k2", "moved", "t"), ==, C8Y_OK);
  g_assert_true(registry_find_child(r, "k2") == k2);
  g_assert_cmpstr(old_name, ==, "two");
  g_assert_cmpstr(k2->name, ==, "moved");
  g_assert_null(registry_fragment_handler_for(r, "acme_Blink", "k2"));
  g_assert_cmpuint(registry_children_since(r, registry_child_seq(r), &added),
                   ==, 0);
  g_assert_null(added);
  registry_free(r);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/registry/children-at-run-time", test_children_at_run_time);
  g_test_add_func("/registry/supported-operations-and-rollback",
                  test_supported_operations_and_rollback);
  return g_test_run();
}
