/* proto: the one table of static templates the agent knows. */
#include "proto.h"

#include <glib.h>
#include <stdlib.h>

static void test_operation_templates(void) {
  g_assert_cmpstr(proto_fragment("510"), ==, "c8y_Restart");
  g_assert_cmpstr(proto_fragment("511"), ==, "c8y_Command");
  g_assert_cmpstr(proto_fragment("524"), ==, "c8y_DownloadConfigFile");
  g_assert_cmpstr(proto_fragment("529"), ==, "c8y_SoftwareUpdate");
  g_assert_cmpstr(proto_fragment("532"), ==, "c8y_ParameterUpdate");
  /* Upstream ids and unknown ones are not operation templates. */
  g_assert_null(proto_fragment("501"));
  g_assert_null(proto_fragment("512"));
  g_assert_null(proto_fragment("5111"));
  g_assert_null(proto_fragment(NULL));
  g_assert_cmpstr(proto_richer_twin("527"), ==, "531");
  g_assert_cmpstr(proto_richer_twin("528"), ==, "529");
  g_assert_null(proto_richer_twin("529"));
  g_assert_null(proto_richer_twin("511"));
}

static void test_upstream_classes(void) {
  g_assert_cmpint(proto_class("100"), ==, OUTQ_INVENTORY);
  g_assert_cmpint(proto_class("117"), ==, OUTQ_INVENTORY);
  g_assert_cmpint(proto_class("201"), ==, OUTQ_MEASUREMENT);
  g_assert_cmpint(proto_class("304"), ==, OUTQ_ALARM);
  g_assert_cmpint(proto_class("400"), ==, OUTQ_EVENT);
  g_assert_cmpint(proto_class("503"), ==, OUTQ_OPSTATUS);
  g_assert_cmpint(proto_class("9999"), ==, OUTQ_EVENT);
  g_assert_cmpint(proto_class("abc"), ==, OUTQ_EVENT);
  g_assert_cmpint(proto_class("42"), ==, OUTQ_EVENT);
  g_assert_cmpint(proto_class(""), ==, OUTQ_EVENT);
  g_assert_cmpint(proto_class(NULL), ==, OUTQ_EVENT);
}

static void test_replace_key_and_ownership(void) {
  /* The key is the template id itself, so distinct state never collides. */
  const char *state[] = {"110", "111", "114", "115", "116", "117",
                         "119", "121", "122", "143", "150"};
  for (size_t i = 0; i < G_N_ELEMENTS(state); i++)
    g_assert_cmpuint(proto_replace_key(state[i]), ==, atoi(state[i]));
  const char *not_state[] = {"100", "101",  "109", "120", "123", "144",
                             "151", "200",  "301", "400", "503", "1170",
                             "11",  "117a", "",    "abc"};
  for (size_t i = 0; i < G_N_ELEMENTS(not_state); i++)
    g_assert_cmpuint(proto_replace_key(not_state[i]), ==, 0);
  g_assert_cmpuint(proto_replace_key(NULL), ==, 0);
  /* The software list is one list over 140 + 141 chunks (+ 142): one key,
   * and only the head supersedes. */
  g_assert_cmpuint(proto_replace_key("140"), ==, 140);
  g_assert_cmpuint(proto_replace_key("141"), ==, 140);
  g_assert_cmpuint(proto_replace_key("142"), ==, 140);
  g_assert_cmpuint(proto_replace_flags("140"), ==, OUTQ_LIST_HEAD);
  g_assert_cmpuint(proto_replace_flags("141"), ==, OUTQ_LIST_CHUNK);
  g_assert_cmpuint(proto_replace_flags("142"), ==, OUTQ_LIST_CHUNK);
  g_assert_cmpuint(proto_replace_flags("114"), ==, 0);
  g_assert_cmpuint(proto_replace_flags(NULL), ==, 0);
  /* Every keyed id travels in the one class where the queue honours keys. */
  for (size_t i = 0; i < G_N_ELEMENTS(state); i++)
    g_assert_cmpint(proto_class(state[i]), ==, OUTQ_INVENTORY);
  g_assert_true(proto_agent_owned("500"));
  g_assert_true(proto_agent_owned("503"));
  g_assert_true(proto_agent_owned("114"));
  g_assert_false(proto_agent_owned("115"));
  g_assert_false(proto_agent_owned("400"));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/proto/operation-templates", test_operation_templates);
  g_test_add_func("/proto/upstream-classes", test_upstream_classes);
  g_test_add_func("/proto/replace-key-and-ownership",
                  test_replace_key_and_ownership);
  return g_test_run();
}
