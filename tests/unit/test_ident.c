/* ident: which device ids the agent accepts anywhere (config, add_child,
 * s/ds fields, journal recovery). */
#include "ident.h"

#include <glib.h>
#include <string.h>

typedef struct {
  const char *id;
  bool root_ok;
  bool child_ok;
  const char *reason; /* substring of the refusal, NULL when accepted */
} id_case;

static const id_case cases[] = {
    {"dev1", true, true, NULL},
    {"Gerät-Ölpumpe", true, true, NULL}, /* UTF-8 is fine */
    {"main:device:child01", false, true, "':'"},
    {"a b", true, true, NULL},
    {"", false, false, "empty"},
    {" lead", false, false, "whitespace"},
    {"trail\t", false, false, "whitespace"},
    {"evil/#", false, false, "'/'"},
    {"a+b", false, false, "'+'"},
    {"a#b", false, false, "'#'"},
    {"a,b", false, false, "','"},
    {"a\"b", false, false, "'\"'"},
    {"a\nb", false, false, "control"},
    {"a\x7f", false, false, "control"},
    {"a\xc2\x85", false, false, "control"},      /* C1 NEL */
    {"\xff\xfe", false, false, "UTF-8"},         /* not UTF-8 at all */
    {"a\xc3", false, false, "UTF-8"},            /* truncated sequence */
    {"\xc0\xaf", false, false, "UTF-8"},         /* overlong '/' */
    {"\xed\xa0\x80", false, false, "UTF-8"},     /* surrogate */
    {"\xf4\x90\x80\x80", false, false, "UTF-8"}, /* above U+10FFFF */
    {"\xf0\x9f\x92\xa1", true, true, NULL},      /* U+1F4A1 */
};

static void test_case(gconstpointer d) {
  const id_case *c = d;
  const char *r = ident_check(c->id, true);
  const char *ch = ident_check(c->id, false);
  g_assert_true((r == NULL) == c->root_ok);
  g_assert_true((ch == NULL) == c->child_ok);
  if (c->reason) {
    const char *why = r ? r : ch;
    g_assert_nonnull(why);
    g_assert_nonnull(strstr(why, c->reason));
  }
}

static void test_length(void) {
  char buf[IDENT_MAX_BYTES + 2];
  memset(buf, 'x', sizeof buf);
  buf[IDENT_MAX_BYTES] = '\0';
  g_assert_null(ident_check(buf, true));
  buf[IDENT_MAX_BYTES] = 'x';
  buf[IDENT_MAX_BYTES + 1] = '\0';
  g_assert_nonnull(ident_check(buf, true));
  g_assert_nonnull(ident_check(NULL, false));
}

static void test_plugin_name(void) {
  static const char *const good[] = {"a", "shell", "system_metrics", "x9_",
                                     "0"};
  static const char *const bad[] = {"",    "Shell",    "a-b",      "a.b",
                                    "a b", "plugin/x", "\xc3\xa9", "a\n"};
  for (size_t i = 0; i < G_N_ELEMENTS(good); i++)
    g_assert_true(ident_plugin_name_ok(good[i]));
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
    g_assert_false(ident_plugin_name_ok(bad[i]));
  g_assert_false(ident_plugin_name_ok(NULL));
  char buf[IDENT_PLUGIN_NAME_MAX + 2];
  memset(buf, 'p', sizeof buf);
  buf[IDENT_PLUGIN_NAME_MAX] = '\0';
  g_assert_true(ident_plugin_name_ok(buf));
  buf[IDENT_PLUGIN_NAME_MAX] = 'p';
  buf[IDENT_PLUGIN_NAME_MAX + 1] = '\0';
  g_assert_false(ident_plugin_name_ok(buf));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *name = g_strdup_printf("/ident/case/%zu", i);
    g_test_add_data_func(name, &cases[i], test_case);
    g_free(name);
  }
  g_test_add_func("/ident/length", test_length);
  g_test_add_func("/ident/plugin_name", test_plugin_name);
  return g_test_run();
}
