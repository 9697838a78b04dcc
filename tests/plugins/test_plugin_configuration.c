/* Tests of the configuration plugin (513, 524, 526, 119, 113) in the fake
 * host. */
#include "plugin_test_util.h"
#include "testhost.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEV "dev1"
#define OP_WAIT_MS 20000

typedef struct fixture {
  char *dir; /* temp dir: config files, state, helper */
  char *state;
  char *text_file;
  testhost *h;
} fixture;

static void fx_setup(fixture *f, gconstpointer data) {
  (void)data;
  f->dir = ptu_make_tmpdir("c8y-cfg");
  f->state = g_build_filename(f->dir, "state", NULL);
  f->text_file = g_build_filename(f->dir, "device-config.txt", NULL);
  f->h = testhost_new(DEV, f->state);
}

static void fx_teardown(fixture *f, gconstpointer data) {
  (void)data;
  testhost_free(f->h);
  ptu_rm_rf(f->dir);
  g_free(f->dir);
  g_free(f->state);
  g_free(f->text_file);
}

/* ---- init -----------------------------------------------------------------
 */

static void test_init_reports(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->text_file, "a=1\nname=\"x, y\"\n");
  testhost_set_config(f->h, "text_file", f->text_file);
  testhost_set_config(f->h, "files",
                      "agent_conf=/etc/c8y-agent/agent.ini "
                      "ssh_conf=/etc/ssh/sshd_config");
  testhost_set_abi_1_0(f->h);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpstr(testhost_find_line(f->h, "113,"), ==,
                  "s/us|113,\"a=1\nname=\"\"x, y\"\"\n\"");
  g_assert_cmpstr(testhost_find_line(f->h, "119,"), ==,
                  "s/us|119,agent_conf,ssh_conf");
  g_assert_true(testhost_has_operation(f->h, "513"));
  /* Typed transfers need HTTP: an agent older than SDK 1.1 has no client,
   * and without a helper they are not offered. */
  g_assert_false(testhost_has_operation(f->h, "524"));
  g_assert_false(testhost_has_operation(f->h, "526"));
  g_assert_nonnull(testhost_find_log(f->h, "need HTTP"));
}

static void test_init_big_file_not_reported(fixture *f, gconstpointer data) {
  (void)data;
  char *big = g_strnfill(20000, 'x');
  ptu_write_text(f->text_file, big);
  g_free(big);
  testhost_set_config(f->h, "text_file", f->text_file);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_null(testhost_find_line(f->h, "113"));
  g_assert_nonnull(testhost_find_log(f->h, "not reported"));
}

static void test_init_no_text_file(fixture *f, gconstpointer data) {
  (void)data;
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_false(testhost_has_operation(f->h, "513"));
  g_assert_cmpuint(testhost_sent_count(f->h), ==, 0);
}

/* A bad entry of `files` is named with its file and line and left out;
 * the good ones keep working. Only a list with none left fails. */
static void test_bad_config(fixture *f, gconstpointer data) {
  (void)data;
  testhost_set_config(f->h, "files", "agent_conf=/a noequals");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_nonnull(testhost_find_log(
      f->h, "agent.ini:6: files: entry 'noequals': not type=/absolute/path"));
  g_assert_cmpstr(testhost_find_line(f->h, "119,"), ==, "s/us|119,agent_conf");
  testhost_free(f->h);

  f->h = testhost_new(DEV, f->state);
  testhost_set_config(f->h, "files", "a=/x a=/y");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_nonnull(testhost_find_log(f->h,
                                     "files: entry 'a=/y': type 'a' is listed "
                                     "twice (the first one is used)"));
  g_assert_cmpstr(testhost_find_line(f->h, "119,"), ==, "s/us|119,a");
  testhost_free(f->h);

  f->h = testhost_new(DEV, f->state);
  testhost_set_config(f->h, "files", "noequals b=rel");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
  g_assert_nonnull(testhost_find_log(f->h, "entry 'b=rel'"));
  g_assert_nonnull(
      testhost_find_log(f->h, "agent.ini:6: files: no usable entry"));
  testhost_free(f->h);

  f->h = testhost_new(DEV, f->state);
  testhost_set_config(f->h, "files", "a=/x");
  testhost_set_config(f->h, "http_helper", "/nonexistent/no-such-helper");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
  g_assert_nonnull(testhost_find_log(f->h, "http_helper"));
}

/* Every check of the `files` list names the setting and the entry; the
 * entry next to it stays usable. */
static void test_bad_files_list(fixture *f, gconstpointer data) {
  (void)data;
  GString *many = g_string_new("");
  for (int i = 0; i <= 64; i++)
    g_string_append_printf(many, "t%d=/x ", i);
  const char *cases[][2] = {
      {"=/x", "files: entry '=/x': not type=/absolute/path"},
      {"a=rel", "files: entry 'a=rel': not type=/absolute/path"},
      {"a,b=/x", "files: entry 'a,b=/x': type 'a,b' must not contain ',' or "
                 "'\"'"},
      {"a=\"/x y", "files: entry 'a=\"/x y': no closing '\"'"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    testhost_free(f->h);
    f->h = testhost_new(DEV, f->state);
    char *files = g_strdup_printf("good=/etc/good.conf %s", cases[i][0]);
    testhost_set_config(f->h, "files", files);
    g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
    if (!testhost_find_log(f->h, cases[i][1]))
      g_error("files=%.40s: no log with '%s'", files, cases[i][1]);
    g_assert_cmpstr(testhost_find_line(f->h, "119,"), ==, "s/us|119,good");
    g_free(files);
  }
  /* The agent's config parser refuses such a line before the plugin sees
   * it. */
  testhost_free(f->h);
  f->h = testhost_new(DEV, f->state);
  testhost_set_config(f->h, "files", many->str);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
  g_assert_nonnull(testhost_find_log(f->h, "line longer than 199 characters"));
  g_string_free(many, TRUE);

  /* An agent before ABI 1.3 cannot tell the line: the rest is the same. */
  testhost_free(f->h);
  f->h = testhost_new(DEV, f->state);
  testhost_set_config(f->h, "files", "good=/etc/good.conf bad");
  testhost_set_abi_1_0(f->h);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_nonnull(testhost_find_log(
      f->h, "configuration: files: entry 'bad': not type=/absolute/path"));
}

/* Types and paths with blanks are written in quotes; they work like any
 * other entry. */
static void test_files_with_blanks(fixture *f, gconstpointer data) {
  (void)data;
  char *sub = g_build_filename(f->dir, "my dir", NULL);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
  char *target = g_build_filename(sub, "app \"x\".conf", NULL);
  ptu_write_text(target, "[old]\n");
  char *src = g_build_filename(f->dir, "new.ini", NULL);
  ptu_write_text(src, "[new]\n");
  char *url = g_strdup_printf("file://%s", src);
  char *files = g_strdup_printf(
      "\"my app\"=\"%s/my dir/app \\\"x\\\".conf\" plain=%s/plain.conf", f->dir,
      f->dir);
  testhost_set_config(f->h, "files", files);
  testhost_enable_transfers(f->h);
  testhost_add_download(f->h, url, src);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_null(testhost_find_log(f->h, "entry"));
  g_assert_cmpstr(testhost_find_line(f->h, "119,"), ==,
                  "s/us|119,my app,plain");
  char *line = g_strdup_printf("524," DEV ",%s,my app", url);
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_SUCCEEDED);
  char *got = ptu_read_text(target);
  g_assert_cmpstr(got, ==, "[new]\n");
  g_free(got);
  g_free(line);
  g_free(files);
  g_free(url);
  g_free(src);
  g_free(target);
  g_free(sub);
}

/* ---- 513 ------------------------------------------------------------------
 */

static void test_513_writes_and_reports(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->text_file, "old=1\n");
  g_assert_cmpint(g_chmod(f->text_file, 0600), ==, 0);
  testhost_set_config(f->h, "text_file", f->text_file);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  testhost_clear_lines(f->h);

  /* Downstream: a quoted field with a real LF and an escaped quote. */
  testhost_op_state st = testhost_run_operation(
      f->h, "513," DEV ",\"line1=a\nkey=\\\"v, w\\\"\"", OP_WAIT_MS);
  g_assert_cmpint(st, ==, TESTHOST_OP_SUCCEEDED);
  char *got = ptu_read_text(f->text_file);
  g_assert_cmpstr(got, ==, "line1=a\nkey=\"v, w\"");
  g_free(got);
  struct stat sb;
  g_assert_cmpint(stat(f->text_file, &sb), ==, 0);
  g_assert_cmpint(sb.st_mode & 0777, ==, 0600);
  g_assert_cmpuint(testhost_sent_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_sent(f->h, 0), ==,
                  "s/us|113,\"line1=a\nkey=\"\"v, w\"\"\"");
  /* No temporary files left next to the target. */
  GDir *d = g_dir_open(f->dir, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL)
    g_assert_false(g_str_has_prefix(name, ".device-config.txt"));
  g_dir_close(d);
}

static void test_513_wrong_field_count(fixture *f, gconstpointer data) {
  (void)data;
  testhost_set_config(f->h, "text_file", f->text_file);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpint(testhost_run_operation(f->h, "513," DEV ",a,b", OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(f->h), "expected 1 field"));
  g_assert_false(g_file_test(f->text_file, G_FILE_TEST_EXISTS));
}

static void test_513_apply_failure_restores(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->text_file, "old=1\n");
  testhost_set_config(f->h, "text_file", f->text_file);
  testhost_set_config(
      f->h, "apply_command",
      "grep -q '^good' \"$C8Y_CONFIG_FILE\" || "
      "{ echo \"rejected: $(cat \"$C8Y_CONFIG_FILE\")\" >&2; exit 3; }");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  testhost_clear_lines(f->h);

  g_assert_cmpint(testhost_run_operation(f->h, "513," DEV ",bad=2", OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  const char *why = testhost_op_detail(f->h);
  g_assert_nonnull(strstr(why, "exit 3"));
  g_assert_nonnull(strstr(why, "rejected: bad=2"));
  g_assert_nonnull(strstr(why, "previous configuration restored"));
  char *got = ptu_read_text(f->text_file);
  g_assert_cmpstr(got, ==, "old=1\n");
  g_free(got);
  g_assert_cmpuint(testhost_sent_count(f->h), ==, 0);

  g_assert_cmpint(
      testhost_run_operation(f->h, "513," DEV ",good=3", OP_WAIT_MS), ==,
      TESTHOST_OP_SUCCEEDED);
  got = ptu_read_text(f->text_file);
  g_assert_cmpstr(got, ==, "good=3");
  g_free(got);
  g_assert_cmpstr(testhost_find_line(f->h, "113,"), ==, "s/us|113,good=3");
}

static void test_513_apply_failure_removes_new_file(fixture *f,
                                                    gconstpointer data) {
  (void)data;
  testhost_set_config(f->h, "text_file", f->text_file);
  testhost_set_config(f->h, "apply_command", "exit 1");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpint(testhost_run_operation(f->h, "513," DEV ",x=1", OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_false(g_file_test(f->text_file, G_FILE_TEST_EXISTS));
}

/* ---- 524 / 526 through the helper -----------------------------------------
 */

static void load_with_helper(fixture *f, char **target, char **helper_log) {
  char *helper = ptu_install_script(f->dir, "configuration", "http_helper.sh",
                                    "http_helper");
  *target = g_build_filename(f->dir, "agent.ini", NULL);
  *helper_log = g_build_filename(f->dir, "helper.log", NULL);
  g_setenv("FAKE_HELPER_LOG", *helper_log, TRUE);
  ptu_write_text(*target, "[old]\n");
  char *files =
      g_strdup_printf("agent_conf=%s ssh_conf=%s/sshd_config", *target, f->dir);
  testhost_set_config(f->h, "files", files);
  testhost_set_config(f->h, "http_helper", helper);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_true(testhost_has_operation(f->h, "524"));
  g_assert_true(testhost_has_operation(f->h, "526"));
  testhost_clear_lines(f->h);
  g_free(files);
  g_free(helper);
}

static void test_524_download(fixture *f, gconstpointer data) {
  (void)data;
  char *target, *helper_log;
  load_with_helper(f, &target, &helper_log);
  char *src = g_build_filename(f->dir, "new.ini", NULL);
  ptu_write_text(src, "[new]\nx=1\n");
  char *line = g_strdup_printf("524," DEV ",file://%s,agent_conf", src);
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_SUCCEEDED);
  char *got = ptu_read_text(target);
  g_assert_cmpstr(got, ==, "[new]\nx=1\n");
  g_free(got);
  g_assert_cmpuint(testhost_sent_count(f->h), ==, 1);
  char *prefix =
      g_strdup_printf("s/us|120,agent_conf,file://%s,agent.ini,", src);
  const char *l120 = testhost_sent(f->h, 0);
  g_assert_true(g_str_has_prefix(l120, prefix));
  /* 2026-11-24T23:05:28.123Z */
  GRegex *re = g_regex_new(
      "^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$", 0, 0, NULL);
  g_assert_true(g_regex_match(re, l120 + strlen(prefix), 0, NULL));
  g_regex_unref(re);
  g_free(prefix);
  g_free(line);

  /* A failing download leaves the file and the directory untouched. */
  line = g_strdup_printf("524," DEV ",file://%s/missing,agent_conf", f->dir);
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_FAILED);
  g_assert_nonnull(
      strstr(testhost_op_detail(f->h), "download of 'agent_conf' failed"));
  g_assert_nonnull(strstr(testhost_op_detail(f->h), "exit 1"));
  got = ptu_read_text(target);
  g_assert_cmpstr(got, ==, "[new]\nx=1\n");
  g_free(got);
  GDir *d = g_dir_open(f->dir, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL)
    g_assert_false(g_str_has_prefix(name, ".agent.ini"));
  g_dir_close(d);
  g_free(line);
  g_free(src);
  g_free(target);
  g_free(helper_log);
}

static void test_526_upload(fixture *f, gconstpointer data) {
  (void)data;
  char *target, *helper_log;
  load_with_helper(f, &target, &helper_log);
  g_assert_cmpint(
      testhost_run_operation(f->h, "526," DEV ",agent_conf", OP_WAIT_MS), ==,
      TESTHOST_OP_SUCCEEDED);
  char *got = ptu_read_text(helper_log);
  char *want = g_strdup_printf(DEV " agent_conf agent_conf %s\n", target);
  g_assert_cmpstr(got, ==, want);
  g_free(got);
  g_free(want);

  /* The configured file of ssh_conf does not exist. */
  g_assert_cmpint(
      testhost_run_operation(f->h, "526," DEV ",ssh_conf", OP_WAIT_MS), ==,
      TESTHOST_OP_FAILED);
  want = g_strdup_printf("configuration 'ssh_conf': cannot open "
                         "%s/sshd_config: No such file or directory",
                         f->dir);
  g_assert_cmpstr(testhost_op_detail(f->h), ==, want);
  g_free(want);
  g_free(target);
  g_free(helper_log);
}

/* ---- 524 / 526 through the agent's HTTP client ----------------------------
 */

typedef struct builtin {
  char *target, *src, *url, *env_log;
} builtin;

static void load_builtin(fixture *f, builtin *b, const char *apply) {
  b->target = g_build_filename(f->dir, "agent.ini", NULL);
  b->src = g_build_filename(f->dir, "new.ini", NULL);
  b->url = g_strdup_printf("file://%s", b->src);
  b->env_log = g_build_filename(f->dir, "apply.env", NULL);
  ptu_write_text(b->target, "[old]\n");
  g_chmod(b->target, 0640);
  ptu_write_text(b->src, "[new]\nx=1\n");
  char *files =
      g_strdup_printf("agent_conf=%s fresh=%s/fresh.conf", b->target, f->dir);
  testhost_set_config(f->h, "files", files);
  if (apply) {
    char *cmd = g_strdup_printf("echo \"$C8Y_CONFIG_TYPE $C8Y_CONFIG_FILE "
                                "$(cat \"$C8Y_CONFIG_FILE\")\" >> %s; %s",
                                b->env_log, apply);
    testhost_set_config(f->h, "file_apply_command", cmd);
    g_free(cmd);
  }
  testhost_enable_transfers(f->h);
  testhost_add_download(f->h, b->url, b->src);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_true(testhost_has_operation(f->h, "524"));
  g_assert_true(testhost_has_operation(f->h, "526"));
  g_assert_null(testhost_find_log(f->h, "need HTTP"));
  testhost_clear_lines(f->h);
  g_free(files);
}

static void builtin_free(builtin *b) {
  g_free(b->target);
  g_free(b->src);
  g_free(b->url);
  g_free(b->env_log);
}

/* No temporary or backup file is left next to the target. */
static void assert_no_leftovers(fixture *f) {
  GDir *d = g_dir_open(f->dir, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL)
    if (strstr(name, ".c8y-"))
      g_error("left behind: %s", name);
  g_dir_close(d);
}

static void run_524(fixture *f, const char *url, const char *type,
                    testhost_op_state want) {
  char *line = g_strdup_printf("524," DEV ",%s,%s", url, type);
  testhost_op_state st = testhost_run_operation(f->h, line, OP_WAIT_MS);
  if (st != want)
    g_error("%s: state %d, want %d (%s)", line, st, want,
            testhost_op_detail(f->h));
  g_free(line);
}

static void test_524_builtin_download(fixture *f, gconstpointer data) {
  (void)data;
  builtin b;
  load_builtin(f, &b, NULL);
  const char *url = b.url;
  run_524(f, url, "agent_conf", TESTHOST_OP_SUCCEEDED);
  char *got = ptu_read_text(b.target);
  g_assert_cmpstr(got, ==, "[new]\nx=1\n");
  g_free(got);
  /* The replaced file keeps the old one's mode. */
  GStatBuf st;
  g_assert_cmpint(g_stat(b.target, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0640);
  char *prefix = g_strdup_printf("s/us|120,agent_conf,%s,agent.ini,", url);
  g_assert_cmpuint(testhost_sent_count(f->h), ==, 1);
  g_assert_true(g_str_has_prefix(testhost_sent(f->h, 0), prefix));
  g_free(prefix);
  assert_no_leftovers(f);
  /* The download went to the state dir and was moved from there; only the
   * operation's record (kept until the next 524) is there. */
  /* The real host gives each plugin <state_dir>/plugins/<name>. */
  char *pdir = g_build_filename(f->state, "plugins", "configuration", NULL);
  GDir *d = g_dir_open(pdir, 0, NULL);
  g_free(pdir);
  g_assert_cmpstr(g_dir_read_name(d), ==, "apply-524");
  g_assert_null(g_dir_read_name(d));
  g_dir_close(d);

  /* A failed download names the peer's answer and changes nothing. */
  char *missing = g_strdup_printf("file://%s/missing", f->dir);
  run_524(f, missing, "agent_conf", TESTHOST_OP_FAILED);
  g_assert_true(g_str_has_prefix(testhost_op_detail(f->h),
                                 "download of 'agent_conf' failed: HTTP 404"));
  got = ptu_read_text(b.target);
  g_assert_cmpstr(got, ==, "[new]\nx=1\n");
  g_free(got);
  assert_no_leftovers(f);
  g_free(missing);
  builtin_free(&b);
}

static void test_524_apply_and_rollback(fixture *f, gconstpointer data) {
  (void)data;
  builtin b;
  load_builtin(f, &b, "test \"$C8Y_CONFIG_TYPE\" = agent_conf || exit 3");
  const char *url = b.url;
  /* agent_conf applies; the command saw the new file. */
  run_524(f, url, "agent_conf", TESTHOST_OP_SUCCEEDED);
  char *log = ptu_read_text(b.env_log);
  char *want = g_strdup_printf("agent_conf %s [new]\nx=1\n", b.target);
  g_assert_cmpstr(log, ==, want);
  g_free(want);
  g_free(log);
  assert_no_leftovers(f);

  /* The apply command refuses "fresh", which had no file: it is removed. */
  char *fresh = g_build_filename(f->dir, "fresh.conf", NULL);
  run_524(f, url, "fresh", TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "file_apply_command failed for 'fresh' (exit 3); new file "
                  "removed");
  g_assert_false(g_file_test(fresh, G_FILE_TEST_EXISTS));
  g_assert_null(testhost_find_line(f->h, "120,fresh"));

  /* A refused change of an existing file puts the old content back. */
  ptu_write_text(fresh, "old fresh\n");
  run_524(f, url, "fresh", TESTHOST_OP_FAILED);
  g_assert_true(
      g_str_has_suffix(testhost_op_detail(f->h), "previous file restored"));
  char *got = ptu_read_text(fresh);
  g_assert_cmpstr(got, ==, "old fresh\n");
  g_free(got);
  assert_no_leftovers(f);
  g_free(fresh);
  builtin_free(&b);
}

static void test_526_builtin_upload(fixture *f, gconstpointer data) {
  (void)data;
  builtin b;
  load_builtin(f, &b, NULL);
  g_assert_cmpint(
      testhost_run_operation(f->h, "526," DEV ",agent_conf", OP_WAIT_MS), ==,
      TESTHOST_OP_SUCCEEDED);
  /* The binary URL is the result; the file went up as the event binary of
   * an event of the configuration type. */
  g_assert_cmpstr(testhost_op_detail(f->h), ==, "testhost://binaries/1");
  g_assert_cmpuint(testhost_upload_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "type"), ==, "agent_conf");
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "child"), ==, "");
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "file_name"), ==, "agent.ini");
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "content"), ==, "[old]\n");

  testhost_fail_transfers(
      f->h, C8Y_EHTTP,
      "HTTP 403 from testhost: access denied (role ROLE_EVENT_ADMIN)");
  g_assert_cmpint(
      testhost_run_operation(f->h, "526," DEV ",agent_conf", OP_WAIT_MS), ==,
      TESTHOST_OP_FAILED);
  g_assert_cmpstr(
      testhost_op_detail(f->h), ==,
      "upload of 'agent_conf' failed: HTTP 403 from testhost: access "
      "denied (role ROLE_EVENT_ADMIN)");
  builtin_free(&b);
}

static void test_unknown_type(fixture *f, gconstpointer data) {
  (void)data;
  char *target, *helper_log;
  load_with_helper(f, &target, &helper_log);
  g_assert_cmpint(testhost_run_operation(f->h, "526," DEV ",nope", OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "unknown configuration type 'nope'");
  g_assert_cmpint(testhost_run_operation(
                      f->h, "524," DEV ",file:///dev/null,other", OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "unknown configuration type 'other'");
  g_assert_false(g_file_test(helper_log, G_FILE_TEST_EXISTS));
  g_free(target);
  g_free(helper_log);
}

/* ---- a crash at each step of 513 and 524 ------------------------------------
 * A forked child plays the agent on f->state and dies with SIGKILL at one
 * step (a real kill -9 of the process, from a command of the operation, or
 * testhost_crash_at); the next start on the same state dir must end with
 * either the old file and 502 or the new file and 503, leave nothing next to
 * the target, and report (113) what is in force. */

typedef enum crash_step {
  STEP_NONE,
  STEP_DOWNLOAD,    /* 524: the helper is still fetching the new file */
  STEP_APPLY,       /* the new file is in place, the apply command runs */
  STEP_RESUME_MARK, /* applied, the operation marked to outlive a restart */
  STEP_COMPLETION   /* the plugin completes it; the engine never hears */
} crash_step;

typedef struct crash_case {
  const char *kind; /* "513" or "524" */
  crash_step step;
} crash_case;

#define KILL_PARENT "kill -9 $PPID; sleep 30"

/* text_file / agent_conf with "old" content; the commands kill the agent
 * at `step` and succeed otherwise. */
static void crash_configure(fixture *f, testhost *h, const char *kind,
                            crash_step step) {
  const char *apply = step == STEP_APPLY ? KILL_PARENT : "true";
  if (strcmp(kind, "513") == 0) {
    testhost_set_config(h, "text_file", f->text_file);
    testhost_set_config(h, "apply_command", apply);
  } else {
    char *helper = g_build_filename(f->dir, "crash-helper.sh", NULL);
    char *body = g_strdup_printf(
        "#!/bin/sh\ncase \"$1\" in\ndownload) %s;;\n*) exit 2;;\nesac\n",
        step == STEP_DOWNLOAD ? "printf partial > \"$3\"; " KILL_PARENT
                              : "cp \"${2#file://}\" \"$3\"");
    ptu_write_text(helper, body);
    g_assert_cmpint(g_chmod(helper, 0755), ==, 0);
    char *files = g_strdup_printf("agent_conf=%s/agent.ini", f->dir);
    testhost_set_config(h, "files", files);
    testhost_set_config(h, "http_helper", helper);
    testhost_set_config(h, "file_apply_command", apply);
    g_free(files);
    g_free(body);
    g_free(helper);
  }
}

static char *crash_target(fixture *f, const char *kind) {
  return strcmp(kind, "513") == 0 ? g_strdup(f->text_file)
                                  : g_build_filename(f->dir, "agent.ini", NULL);
}

/* Runs the operation in a child that dies at `step`, then starts the next
 * host (f->h) on the same state dir with the plugin loaded. */
static void crash_and_restart(fixture *f, const crash_case *cc) {
  char *src = g_build_filename(f->dir, "new.ini", NULL);
  ptu_write_text(src, "new=1");
  char *line = strcmp(cc->kind, "513") == 0
                   ? g_strdup("513," DEV ",new=1")
                   : g_strdup_printf("524," DEV ",file://%s,agent_conf", src);
  testhost_free(f->h);
  f->h = NULL;
  fflush(NULL);
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    testhost *h = testhost_new(DEV, f->state);
    crash_configure(f, h, cc->kind, cc->step);
    if (testhost_load(h, PLUGIN_PATH) != 0)
      _exit(2);
    testhost_crash_at(
        h, cc->step == STEP_RESUME_MARK  ? TESTHOST_CRASH_AFTER_RESUME_MARK
           : cc->step == STEP_COMPLETION ? TESTHOST_CRASH_AT_COMPLETION
                                         : TESTHOST_CRASH_NONE);
    testhost_run_operation(h, line, OP_WAIT_MS);
    _exit(3); /* not killed: the step was never reached */
  }
  int status = 0;
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
    g_error("the agent did not die at step %d (status 0x%x)", cc->step,
            (unsigned)status);
  f->h = testhost_new(DEV, f->state);
  crash_configure(f, f->h, cc->kind, STEP_NONE);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_free(line);
  g_free(src);
}

static void test_crash(fixture *f, gconstpointer data) {
  const crash_case *cc = data;
  bool text = strcmp(cc->kind, "513") == 0;
  const char *fragment = text ? "c8y_Configuration" : "c8y_DownloadConfigFile";
  char *target = crash_target(f, cc->kind);
  ptu_write_text(target, "old=1");
  crash_and_restart(f, cc);

  bool applied = cc->step == STEP_COMPLETION;
  char *got = ptu_read_text(target);
  g_assert_cmpstr(got, ==, applied ? "new=1" : "old=1");
  g_free(got);
  char *engine_502 = g_strdup_printf("502,%s,the agent stopped while the "
                                     "operation was executing",
                                     fragment);
  if (cc->step == STEP_DOWNLOAD || cc->step == STEP_APPLY) {
    /* Not marked to outlive a restart: the engine fails it at start. */
    g_assert_nonnull(testhost_find_line(f->h, engine_502));
    g_assert_cmpuint(testhost_count_lines(f->h, "502,"), ==, 1);
  } else {
    /* Handed back to the plugin, which reports what its record says (it
     * may have done so already while the plugin loaded). */
    g_assert_null(testhost_find_line(f->h, engine_502));
    g_assert_true(testhost_wait_op_done(f->h, OP_WAIT_MS));
    g_assert_cmpint(testhost_op_state_now(f->h), ==,
                    applied ? TESTHOST_OP_SUCCEEDED : TESTHOST_OP_FAILED);
    if (!applied) {
      char *want = g_strdup_printf("the agent stopped while the new %s was "
                                   "applied; previous file restored",
                                   target);
      g_assert_cmpstr(testhost_op_detail(f->h), ==, want);
      g_free(want);
    }
  }
  g_free(engine_502);
  if (cc->step == STEP_APPLY || cc->step == STEP_RESUME_MARK)
    g_assert_nonnull(testhost_find_log(f->h, "previous file restored"));
  /* What is in force is what 113 reported at start. */
  if (text)
    g_assert_cmpstr(testhost_find_line(f->h, "113,"), ==,
                    applied ? "s/us|113,new=1" : "s/us|113,old=1");
  assert_no_leftovers(f);

  /* The next operation of the kind works as usual. */
  testhost_clear_lines(f->h);
  char *src = g_build_filename(f->dir, "new.ini", NULL);
  ptu_write_text(src, "newer=2");
  char *line = text ? g_strdup("513," DEV ",newer=2")
                    : g_strdup_printf("524," DEV ",file://%s,agent_conf", src);
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_SUCCEEDED);
  got = ptu_read_text(target);
  g_assert_cmpstr(got, ==, "newer=2");
  g_free(got);
  assert_no_leftovers(f);
  g_free(line);
  g_free(src);
  g_free(target);
}

/* Temporaries and backups a crash left next to the configured files are
 * removed at start. */
static void test_strays_removed(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->text_file, "a=1\n");
  char *stray = g_build_filename(f->dir, ".device-config.txt.c8y-Ab12Cd", NULL);
  char *other = g_build_filename(f->dir, ".unrelated.c8y-Ab12Cd", NULL);
  ptu_write_text(stray, "half a file");
  ptu_write_text(other, "not ours");
  testhost_set_config(f->h, "text_file", f->text_file);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_false(g_file_test(stray, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(other, G_FILE_TEST_EXISTS));
  g_unlink(other);
  g_free(stray);
  g_free(other);
}

/* A text_file replaced by a symlink to a file its writer may not read is
 * not followed: 113 does not report that file. */
static void test_513_symlink_not_followed(fixture *f, gconstpointer data) {
  (void)data;
  char *open_dir = g_build_filename(f->dir, "app", NULL);
  g_assert_cmpint(g_mkdir(open_dir, 0755), ==, 0);
  g_assert_cmpint(g_chmod(open_dir, 0777), ==, 0);
  char *secret = g_build_filename(f->dir, "secret", NULL);
  ptu_write_text(secret, "root-only\n");
  g_assert_cmpint(g_chmod(secret, 0600), ==, 0);
  char *text_file = g_build_filename(open_dir, "app.conf", NULL);
  g_assert_cmpint(symlink(secret, text_file), ==, 0);
  testhost_set_config(f->h, "text_file", text_file);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_null(testhost_find_line(f->h, "113,"));
  char *want = g_strdup_printf("%s is a symlink in %s, which is writable by "
                               "others (mode 0777); not followed",
                               text_file, open_dir);
  if (!testhost_find_log(f->h, want))
    g_error("no log line '%s'", want);
  g_free(want);
  g_free(text_file);
  g_free(secret);
  g_free(open_dir);
}

/* 526: a symlink planted in place of the configured file (in a directory a
 * less privileged user can write) is not followed, so no root-only file is
 * uploaded; the same file reached through a symlink root put in a safe
 * directory is. */
static void test_526_symlink_not_followed(fixture *f, gconstpointer data) {
  (void)data;
  char *open_dir = g_build_filename(f->dir, "app", NULL);
  g_assert_cmpint(g_mkdir(open_dir, 0755), ==, 0);
  g_assert_cmpint(g_chmod(open_dir, 0777), ==, 0);
  char *secret = g_build_filename(f->dir, "secret", NULL);
  ptu_write_text(secret, "root-only\n");
  g_assert_cmpint(g_chmod(secret, 0600), ==, 0);
  char *planted = g_build_filename(open_dir, "app.conf", NULL);
  g_assert_cmpint(symlink(secret, planted), ==, 0);
  char *safe_dir = g_build_filename(f->dir, "etc", NULL);
  g_assert_cmpint(g_mkdir(safe_dir, 0755), ==, 0);
  char *safe_link = g_build_filename(safe_dir, "app.conf", NULL);
  g_assert_cmpint(symlink(secret, safe_link), ==, 0);
  char *files = g_strdup_printf("planted=%s linked=%s", planted, safe_link);
  testhost_set_config(f->h, "files", files);
  testhost_enable_transfers(f->h);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpint(
      testhost_run_operation(f->h, "526," DEV ",planted", OP_WAIT_MS), ==,
      TESTHOST_OP_FAILED);
  char *want = g_strdup_printf("configuration 'planted': %s is a symlink in "
                               "%s, which is writable by others (mode "
                               "0777); not followed",
                               planted, open_dir);
  g_assert_cmpstr(testhost_op_detail(f->h), ==, want);
  g_assert_cmpuint(testhost_upload_count(f->h), ==, 0);
  g_assert_cmpint(
      testhost_run_operation(f->h, "526," DEV ",linked", OP_WAIT_MS), ==,
      TESTHOST_OP_SUCCEEDED);
  g_assert_cmpuint(testhost_upload_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "content"), ==, "root-only\n");
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "file_name"), ==, "app.conf");
  g_free(want);
  g_free(files);
  g_free(safe_link);
  g_free(safe_dir);
  g_free(planted);
  g_free(secret);
  g_free(open_dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, fixture, NULL, fx_setup, fn, fx_teardown)
  ADD("/plugin/configuration/init/reports", test_init_reports);
  ADD("/plugin/configuration/init/big-file", test_init_big_file_not_reported);
  ADD("/plugin/configuration/init/no-text-file", test_init_no_text_file);
  ADD("/plugin/configuration/init/bad-config", test_bad_config);
  ADD("/plugin/configuration/init/bad-files-list", test_bad_files_list);
  ADD("/plugin/configuration/init/files-with-blanks", test_files_with_blanks);
  ADD("/plugin/configuration/513/write", test_513_writes_and_reports);
  ADD("/plugin/configuration/513/field-count", test_513_wrong_field_count);
  ADD("/plugin/configuration/513/apply-restores",
      test_513_apply_failure_restores);
  ADD("/plugin/configuration/513/apply-removes-new",
      test_513_apply_failure_removes_new_file);
  ADD("/plugin/configuration/524/download", test_524_download);
  ADD("/plugin/configuration/526/upload", test_526_upload);
  ADD("/plugin/configuration/typed/unknown-type", test_unknown_type);
  ADD("/plugin/configuration/524/builtin-download", test_524_builtin_download);
  ADD("/plugin/configuration/524/apply-and-rollback",
      test_524_apply_and_rollback);
  ADD("/plugin/configuration/526/builtin-upload", test_526_builtin_upload);
  ADD("/plugin/configuration/526/symlink-not-followed",
      test_526_symlink_not_followed);
  ADD("/plugin/configuration/513/symlink-not-followed",
      test_513_symlink_not_followed);
  ADD("/plugin/configuration/init/strays-removed", test_strays_removed);
#undef ADD
  static const crash_case cases[] = {
      {"524", STEP_DOWNLOAD},   {"524", STEP_APPLY}, {"524", STEP_RESUME_MARK},
      {"524", STEP_COMPLETION}, {"513", STEP_APPLY}, {"513", STEP_RESUME_MARK},
      {"513", STEP_COMPLETION},
  };
  static const char *const steps[] = {"none", "download", "apply",
                                      "resume-mark", "completion"};
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *path = g_strdup_printf("/plugin/configuration/%s/crash-at-%s",
                                 cases[i].kind, steps[cases[i].step]);
    g_test_add(path, fixture, &cases[i], fx_setup, test_crash, fx_teardown);
    g_free(path);
  }
  return g_test_run();
}
