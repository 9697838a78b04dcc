/* The exec plugin against the real plugin host (testhost): drop-in files, what
 * the command gets, what the operation reports. */
#include "plugin_test_util.h"
#include "testhost.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct env {
  char *dir; /* scratch: scripts and output files */
  char *ops; /* the drop-in directory */
  testhost *h;
} env;

static void env_init(env *e) {
  e->dir = ptu_make_tmpdir("test-exec");
  e->ops = g_build_filename(e->dir, "operations.d", NULL);
  g_assert_cmpint(g_mkdir(e->ops, 0755), ==, 0);
}

static char *script(env *e, const char *name, const char *body) {
  char *path = g_build_filename(e->dir, name, NULL);
  char *text = g_strdup_printf("#!/bin/sh\n%s", body);
  ptu_write_text(path, text);
  g_assert_cmpint(chmod(path, 0755), ==, 0);
  g_free(text);
  return path;
}

static char *dropin(env *e, const char *name, const char *text) {
  char *path = g_build_filename(e->ops, name, NULL);
  ptu_write_text(path, text);
  g_assert_cmpint(chmod(path, 0644), ==, 0);
  return path;
}

static void load(env *e, const char *const *kv) {
  e->h = testhost_new("dev1", NULL);
  testhost_set_config(e->h, "dir", e->ops);
  for (; kv && kv[0]; kv += 2)
    testhost_set_config(e->h, kv[0], kv[1]);
  g_assert_cmpint(testhost_load(e->h, PLUGIN_PATH), ==, C8Y_OK);
}

static void env_free(env *e) {
  if (e->h)
    testhost_free(e->h);
  ptu_rm_rf(e->dir);
  g_free(e->dir);
  g_free(e->ops);
}

static void expect_log(env *e, const char *part) {
  if (!testhost_find_log(e->h, part))
    g_error("no log line with '%s'", part);
}

static void test_no_dir(void) {
  env e;
  env_init(&e);
  ptu_rm_rf(e.ops);
  load(&e, NULL);
  expect_log(&e, "no operations");
  g_assert_false(testhost_has_operation(e.h, "511"));
  env_free(&e);
}

static void test_arguments_and_environment(void) {
  env e;
  env_init(&e);
  char *cmd = script(&e, "cmd.sh",
                     "echo \"n=$# 1=$1 2=$2 3=$3\"\n"
                     "echo \"t=$C8Y_OP_TEMPLATE f=$C8Y_OP_FRAGMENT "
                     "d=$C8Y_OP_DEVICE c=$C8Y_OP_FIELD_COUNT "
                     "e1=$C8Y_OP_FIELD_1 e2=$C8Y_OP_FIELD_2\"\n"
                     "echo ignored >&2\n");
  char *ini = g_strdup_printf("# relays\n[operation]\ntemplate = 519\n"
                              "command = %s fixed\n",
                              cmd);
  g_free(dropin(&e, "relays.ini", ini));
  g_free(ini);
  load(&e, NULL);
  g_assert_true(testhost_has_operation(e.h, "519"));
  g_assert_cmpint(testhost_run_operation(e.h, "519,dev1,OPEN,\"a b\"", 10000),
                  ==, TESTHOST_OP_SUCCEEDED);
  g_assert_cmpuint(testhost_op_param_count(e.h), ==, 1);
  g_assert_cmpstr(testhost_op_param(e.h, 0), ==,
                  "n=3 1=fixed 2=OPEN 3=a b\n"
                  "t=519 f=c8y_RelayArray d=dev1 c=2 e1=OPEN e2=a b");
  g_free(cmd);
  env_free(&e);
}

static void test_failure_reports_stderr(void) {
  env e;
  env_init(&e);
  char *cmd = script(&e, "fail.sh",
                     "echo stdout-text\necho \"bad value $1\" >&2\nexit 7\n");
  char *ini = g_strdup_printf("template = 511\ncommand = %s\n", cmd);
  g_free(dropin(&e, "cmd.ini", ini));
  g_free(ini);
  load(&e, NULL);
  g_assert_cmpint(testhost_run_operation(e.h, "511,dev1,xyz", 10000), ==,
                  TESTHOST_OP_FAILED);
  const char *why = testhost_op_detail(e.h);
  g_assert_nonnull(strstr(why, "7"));
  g_assert_nonnull(strstr(why, "bad value xyz"));
  g_assert_null(strstr(why, "stdout-text"));
  g_free(cmd);
  env_free(&e);
}

static void test_output_cap_and_no_result(void) {
  env e;
  env_init(&e);
  char *big = script(&e, "big.sh",
                     "i=0; while [ $i -lt 100 ]; do printf 'ééééé'; "
                     "i=$((i+1)); done\n");
  char *ini = g_strdup_printf("template = 511\ncommand = %s\n", big);
  g_free(dropin(&e, "a.ini", ini));
  g_free(ini);
  ini = g_strdup_printf("template = 518\ncommand = %s\noutput_is_result = "
                        "no\n",
                        big);
  g_free(dropin(&e, "b.ini", ini));
  g_free(ini);
  load(&e, (const char *[]){"max_output", "101", NULL});
  g_assert_cmpint(testhost_run_operation(e.h, "511,dev1,x", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  const char *out = testhost_op_param(e.h, 0);
  /* 101 bytes cut back to a character boundary (50 two-byte characters) */
  g_assert_true(g_str_has_suffix(out, "...[truncated]"));
  g_assert_cmpuint(strlen(out), ==, 100 + strlen("...[truncated]"));
  g_assert_true(g_utf8_validate(out, -1, NULL));
  g_assert_cmpint(testhost_run_operation(e.h, "518,dev1,OPEN", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_cmpuint(testhost_op_param_count(e.h), ==, 0);
  g_free(big);
  env_free(&e);
}

static void test_timeout(void) {
  env e;
  env_init(&e);
  char *slow = script(&e, "slow.sh", "sleep 30\n");
  char *ini =
      g_strdup_printf("template = 511\ncommand = %s\ntimeout = 1\n", slow);
  g_free(dropin(&e, "slow.ini", ini));
  g_free(ini);
  load(&e, NULL);
  /* the agent's backstop is behind the plugin's own timeout */
  g_assert_cmpuint(testhost_operation_timeout(e.h, "511"), >, 1000);
  g_assert_cmpint(testhost_run_operation(e.h, "511,dev1,x", 15000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(e.h), "timed out"));
  g_free(slow);
  env_free(&e);
}

static void test_bad_files(void) {
  env e;
  env_init(&e);
  char *cmd = script(&e, "ok.sh", "exit 0\n");
  char *plain = g_build_filename(e.dir, "plain.txt", NULL);
  ptu_write_text(plain, "not a program");
  struct {
    const char *name, *text, *log;
  } cases[] = {
      {"01-unknown.ini", "template = 511\ncolour = red\n",
       "01-unknown.ini:2: unknown key 'colour'"},
      {"02-template.ini", "template = 600\ncommand = @\n",
       "02-template.ini:1: template: '600' is not a static operation"},
      {"03-nocommand.ini", "template = 513\n",
       "03-nocommand.ini: command is required"},
      {"04-relative.ini", "\ntemplate = 515\ncommand = ok.sh\n",
       "04-relative.ini:3: command: 'ok.sh' must be an absolute path"},
      {"05-notexec.ini", "template = 516\ncommand = @plain\n",
       "05-notexec.ini:2: command: "},
      {"06-timeout.ini", "template = 517\ncommand = @\ntimeout = 0\n",
       "06-timeout.ini:3: timeout: '0' is not 1..86400"},
      {"07-both.ini", "template = 520\nxid = x\nmessage_id = m\ncommand = @\n",
       "07-both.ini: set either template or xid + message_id"},
      {"08-syntax.ini", "template 521\n", "08-syntax.ini:1: expected"},
      {"09-section.ini", "[other]\n", "09-section.ini:1: unknown section"},
      {"10-dup.ini", "template = 522\ncommand = @\n", NULL},
      {"11-dup.ini", "template = 522\ncommand = @\n",
       "template 522 is already mapped by"},
      {"12-bool.ini", "template = 523\ncommand = @\noutput_is_result = maybe\n",
       "12-bool.ini:3: output_is_result:"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    GString *t = g_string_new(cases[i].text);
    g_string_replace(t, "@plain", plain, 0);
    g_string_replace(t, "@", cmd, 0);
    g_free(dropin(&e, cases[i].name, t->str));
    g_string_free(t, TRUE);
  }
  /* writable by others: refused whatever it says */
  char *open_file = g_strdup_printf("template = 524\ncommand = %s\n", cmd);
  char *p = dropin(&e, "13-mode.ini", open_file);
  g_assert_cmpint(chmod(p, 0666), ==, 0);
  g_free(p);
  g_free(open_file);
  g_free(dropin(&e, "14-ignored.txt", "garbage"));
  load(&e, NULL);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
    if (cases[i].log)
      expect_log(&e, cases[i].log);
  expect_log(&e, "13-mode.ini: the drop-in is writable by others (mode 0666)");
  const char *never[] = {"511", "513", "515", "516", "517",
                         "520", "521", "523", "524", "600"};
  for (size_t i = 0; i < G_N_ELEMENTS(never); i++)
    if (testhost_has_operation(e.h, never[i]))
      g_error("template %s registered from a bad file", never[i]);
  /* the good file among them still works */
  g_assert_true(testhost_has_operation(e.h, "522"));
  g_assert_null(testhost_find_log(e.h, "14-ignored"));
  g_free(cmd);
  g_free(plain);
  env_free(&e);
}

static void test_custom_message(void) {
  env e;
  env_init(&e);
  char *out = g_build_filename(e.dir, "out.txt", NULL);
  char *body = g_strdup_printf(
      "echo \"$C8Y_OP_XID $C8Y_OP_MESSAGE_ID $C8Y_OP_FIELD_COUNT $*\" > %s\n",
      out);
  char *cmd = script(&e, "msg.sh", body);
  g_free(body);
  char *ini =
      g_strdup_printf("xid = myxid\nmessage_id = m7\ncommand = %s\n", cmd);
  g_free(dropin(&e, "msg.ini", ini));
  g_free(ini);
  load(&e, NULL);
  g_assert_cmpint(testhost_deliver_message(e.h, "myxid", "m7,dev1,on"), ==,
                  C8Y_OK);
  for (int i = 0; i < 200 && !testhost_find_log(e.h, "handled"); i++)
    g_usleep(20 * 1000);
  expect_log(&e, "message myxid/m7 handled");
  char *text = ptu_read_text(out);
  g_assert_cmpstr(text, ==, "myxid m7 2 dev1 on\n");
  g_free(text);
  g_free(cmd);
  g_free(out);
  env_free(&e);
}

static void test_user(void) {
  env e;
  env_init(&e);
  char *cmd = script(&e, "id.sh", "id -u\n");
  char *ini =
      g_strdup_printf("template = 511\ncommand = %s\nuser = nobody\n", cmd);
  g_free(dropin(&e, "id.ini", ini));
  g_free(ini);
  load(&e, NULL);
  if (geteuid() != 0) {
    expect_log(&e, "id.ini:3: user: cannot run the command as 'nobody'");
    g_assert_false(testhost_has_operation(e.h, "511"));
  } else {
    struct passwd *pw = getpwnam("nobody");
    g_assert_nonnull(pw);
    /* the script lives in a private tmp dir: let nobody reach it */
    g_assert_cmpint(chmod(e.dir, 0755), ==, 0);
    g_assert_cmpint(testhost_run_operation(e.h, "511,dev1,x", 10000), ==,
                    TESTHOST_OP_SUCCEEDED);
    char *want = g_strdup_printf("%u", (unsigned)pw->pw_uid);
    g_assert_cmpstr(testhost_op_param(e.h, 0), ==, want);
    g_free(want);
  }
  g_free(cmd);
  env_free(&e);
}

#define TRUST_HINT                                                             \
  "only root and the agent's user may write what the agent runs"

/* A drop-in's command runs with the agent's privileges: the executable and
 * every directory up to / must be writable by root or the agent's user
 * only, else the file is refused with one line naming the key and path. */
static void test_untrusted_command(void) {
  env e;
  env_init(&e);
  char *open_dir = g_build_filename(e.dir, "open", NULL);
  g_assert_cmpint(g_mkdir(open_dir, 0755), ==, 0);
  g_assert_cmpint(chmod(open_dir, 0777), ==, 0);
  char *in_open = g_build_filename(open_dir, "cmd.sh", NULL);
  ptu_write_text(in_open, "#!/bin/sh\nexit 0\n");
  g_assert_cmpint(chmod(in_open, 0755), ==, 0);
  char *writable = script(&e, "writable.sh", "exit 0\n");
  g_assert_cmpint(chmod(writable, 0777), ==, 0);
  /* A symlink from a safe place into the open directory: followed, and
   * what it leads to is checked too. */
  char *link = g_build_filename(e.dir, "link.sh", NULL);
  g_assert_cmpint(symlink(in_open, link), ==, 0);
  /* A sticky directory (like /tmp) is fine for an entry that is ours. */
  char *sticky = g_build_filename(e.dir, "sticky", NULL);
  g_assert_cmpint(g_mkdir(sticky, 0755), ==, 0);
  g_assert_cmpint(chmod(sticky, 01777), ==, 0);
  char *in_sticky = g_build_filename(sticky, "ok.sh", NULL);
  ptu_write_text(in_sticky, "#!/bin/sh\necho sticky-ok\n");
  g_assert_cmpint(chmod(in_sticky, 0755), ==, 0);
  struct {
    const char *file, *template_id, *cmd, *log;
  } cases[] = {
      {"20-open-dir.ini", "511", in_open, open_dir},
      {"21-writable.ini", "513", writable, writable},
      {"22-link.ini", "515", link, open_dir},
      {"23-sticky.ini", "516", in_sticky, NULL},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *ini = g_strdup_printf("template = %s\ncommand = %s\n",
                                cases[i].template_id, cases[i].cmd);
    g_free(dropin(&e, cases[i].file, ini));
    g_free(ini);
  }
  load(&e, NULL);
  char *want = g_strdup_printf("20-open-dir.ini: command: %s is writable by "
                               "others (mode 0777); " TRUST_HINT,
                               open_dir);
  expect_log(&e, want);
  g_free(want);
  want = g_strdup_printf("21-writable.ini: command: %s is writable by others "
                         "(mode 0777); " TRUST_HINT,
                         writable);
  expect_log(&e, want);
  g_free(want);
  want = g_strdup_printf("22-link.ini: command: %s is writable by others",
                         open_dir);
  expect_log(&e, want);
  g_free(want);
  g_assert_false(testhost_has_operation(e.h, "511"));
  g_assert_false(testhost_has_operation(e.h, "513"));
  g_assert_false(testhost_has_operation(e.h, "515"));
  g_assert_true(testhost_has_operation(e.h, "516"));
  g_assert_cmpint(testhost_run_operation(e.h, "516,dev1,x", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_param(e.h, 0), ==, "sticky-ok");

  /* Opened up after loading: refused when it would run. */
  g_assert_cmpint(chmod(sticky, 0777), ==, 0);
  g_assert_cmpint(testhost_run_operation(e.h, "516,dev1,x", 10000), ==,
                  TESTHOST_OP_FAILED);
  want =
      g_strdup_printf("command: %s is writable by others (mode 0777)", sticky);
  g_assert_cmpstr(testhost_op_detail(e.h), ==, want);
  g_free(want);
  g_free(in_sticky);
  g_free(sticky);
  g_free(link);
  g_free(writable);
  g_free(in_open);
  g_free(open_dir);
  env_free(&e);
}

/* Whoever can add a drop-in chooses what runs: the directory itself must be
 * safe, else nothing in it is loaded. */
static void test_untrusted_dir(void) {
  env e;
  env_init(&e);
  char *cmd = script(&e, "ok.sh", "exit 0\n");
  char *ini = g_strdup_printf("template = 511\ncommand = %s\n", cmd);
  g_free(dropin(&e, "ok.ini", ini));
  g_free(ini);
  g_assert_cmpint(chmod(e.ops, 0777), ==, 0);
  load(&e, NULL);
  char *want = g_strdup_printf("dir: %s is writable by others (mode 0777); "
                               "" TRUST_HINT "; no operations",
                               e.ops);
  expect_log(&e, want);
  g_free(want);
  g_assert_false(testhost_has_operation(e.h, "511"));
  g_free(cmd);
  env_free(&e);
}

/* Run as another user, the command may be that user's own: it gains
 * nothing. Anyone else's is still refused. */
static void test_untrusted_command_of_user(void) {
  if (geteuid() != 0) {
    g_test_skip("switching users needs root");
    return;
  }
  struct passwd *pw = getpwnam("nobody");
  g_assert_nonnull(pw);
  uid_t nobody = pw->pw_uid;
  gid_t nogroup = pw->pw_gid;
  env e;
  env_init(&e);
  g_assert_cmpint(chmod(e.dir, 0755), ==, 0);
  char *cmd = script(&e, "mine.sh", "id -u\n");
  g_assert_cmpint(chown(cmd, nobody, nogroup), ==, 0);
  char *ini =
      g_strdup_printf("template = 511\ncommand = %s\nuser = nobody\n", cmd);
  g_free(dropin(&e, "as-nobody.ini", ini));
  g_free(ini);
  ini = g_strdup_printf("template = 513\ncommand = %s\n", cmd);
  g_free(dropin(&e, "as-agent.ini", ini));
  g_free(ini);
  load(&e, NULL);
  g_assert_true(testhost_has_operation(e.h, "511"));
  char *want = g_strdup_printf("as-agent.ini: command: %s is owned by uid %u",
                               cmd, (unsigned)nobody);
  expect_log(&e, want);
  g_free(want);
  g_assert_false(testhost_has_operation(e.h, "513"));
  g_free(cmd);
  env_free(&e);
}

/* c8y_ParameterUpdate (532): the hook gets path type value per parameter
 * as arguments; once it applied them, 408 with change detection reports
 * them, then 503. A failing hook: 502 with its reason, no 408, and the
 * hook's state keeps the old value. */
static void test_parameter_update(void) {
  env e;
  env_init(&e);
  char *state = g_build_filename(e.dir, "params", NULL);
  ptu_write_text(state, "old\n");
  char *body = g_strdup_printf(
      "for v in \"$@\"; do [ \"$v\" = refuse ] && { echo \"cannot set $1\" "
      ">&2; exit 4; }; done\n"
      "printf '%%s|' \"$#\" \"$@\" > '%s'\n",
      state);
  char *cmd = script(&e, "params.sh", body);
  g_free(body);
  char *ini = g_strdup_printf("template = 532\ncommand = %s\n", cmd);
  g_free(dropin(&e, "params.ini", ini));
  g_free(ini);
  load(&e, NULL);
  g_assert_true(testhost_has_operation(e.h, "532"));
  g_assert_cmpint(
      testhost_run_operation(e.h,
                             "532,dev1,c8y_RelayStatus.left,b,false,"
                             "Maint.name,s,\"Smith, J.\",Limit,n,2.5,Gone,,",
                             10000),
      ==, TESTHOST_OP_SUCCEEDED);
  g_assert_cmpuint(testhost_op_param_count(e.h), ==, 0);
  char *got = ptu_read_text_or_empty(state);
  g_assert_cmpstr(got, ==,
                  "12|c8y_RelayStatus.left|b|false|Maint.name|s|Smith, J.|"
                  "Limit|n|2.5|Gone|||");
  g_free(got);
  g_assert_cmpstr(testhost_find_line(e.h, "408,"), ==,
                  "s/us|408,,,true,c8y_RelayStatus.left,BOOLEAN,false,"
                  "Maint.name,STRING,\"Smith, J.\",Limit,NUMBER,2.5,Gone,"
                  "STRING,");
  /* 408 before the 503 */
  size_t at408 = 0, at503 = 0;
  for (size_t i = 0; i < testhost_line_count(e.h); i++) {
    if (g_str_has_prefix(testhost_line(e.h, i), "s/us|408,"))
      at408 = i + 1;
    if (g_str_has_prefix(testhost_line(e.h, i), "s/us|503,c8y_Parameter"))
      at503 = i + 1;
  }
  g_assert_cmpuint(at408, >, 0);
  g_assert_cmpuint(at503, >, at408);

  testhost_clear_lines(e.h);
  ptu_write_text(state, "old\n");
  g_assert_cmpint(testhost_run_operation(e.h, "532,dev1,Mode,s,refuse", 10000),
                  ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(e.h), "exit 4"));
  g_assert_nonnull(strstr(testhost_op_detail(e.h), "cannot set Mode"));
  g_assert_null(testhost_find_line(e.h, "408,"));
  got = ptu_read_text_or_empty(state);
  g_assert_cmpstr(got, ==, "old\n");
  g_free(got);

  /* Refused before the hook runs: what 408 could not report truthfully. */
  const char *bad[][2] = {
      {"532,dev1,a,b,maybe", "parameter 1 (a, type 'b') has type b with a "
                             "value that is not true or false"},
      {"532,dev1,a,s,x,b,q,1", "parameter 2 (b, type 'q') has an unknown type "
                               "code (b, s, n or empty for null)"},
      {"532,dev1,a,n,1e", "type n with a value that is not a number"},
      {"532,dev1,a,s", "2 parameters are not sets of path,type,value"},
      {"532,dev1,,s,x", "has an empty path"}};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_cmpint(testhost_run_operation(e.h, bad[i][0], 10000), ==,
                    TESTHOST_OP_FAILED);
    if (!strstr(testhost_op_detail(e.h), bad[i][1]))
      g_error("%s: %s", bad[i][0], testhost_op_detail(e.h));
  }
  got = ptu_read_text_or_empty(state);
  g_assert_cmpstr(got, ==, "old\n");
  g_free(got);
  g_assert_null(testhost_find_line(e.h, "408,"));
  g_free(state);
  g_free(cmd);
  env_free(&e);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/exec/no-dir", test_no_dir);
  g_test_add_func("/exec/arguments-and-environment",
                  test_arguments_and_environment);
  g_test_add_func("/exec/failure-reports-stderr", test_failure_reports_stderr);
  g_test_add_func("/exec/output-cap-and-no-result",
                  test_output_cap_and_no_result);
  g_test_add_func("/exec/timeout", test_timeout);
  g_test_add_func("/exec/bad-files", test_bad_files);
  g_test_add_func("/exec/custom-message", test_custom_message);
  g_test_add_func("/exec/user", test_user);
  g_test_add_func("/exec/untrusted-command", test_untrusted_command);
  g_test_add_func("/exec/untrusted-dir", test_untrusted_dir);
  g_test_add_func("/exec/untrusted-command-of-user",
                  test_untrusted_command_of_user);
  g_test_add_func("/exec/parameter-update", test_parameter_update);
  return g_test_run();
}
