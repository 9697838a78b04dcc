/* Tests of the logfile plugin (118, 522) in the real plugin host (testhost).
 * Runs with TZ=UTC so that times without an offset are deterministic. */
#include "plugin_test_util.h"
#include "testhost.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEV "dev1"
#define OP_WAIT_MS 20000
#define URL "https://127.0.0.1/inventory/binaries/7777"

typedef struct fixture {
  char *dir;
  char *state;
  char *copy; /* where the fake helper copies the uploaded file */
  char *helper;
  testhost *h;
} fixture;

static void fx_setup(fixture *f, gconstpointer data) {
  (void)data;
  f->dir = ptu_make_tmpdir("c8y-log");
  f->state = g_build_filename(f->dir, "state", NULL);
  f->copy = g_build_filename(f->dir, "uploaded", NULL);
  f->helper =
      ptu_install_script(f->dir, "logfile", "http_helper.sh", "http_helper");
  g_setenv("FAKE_HELPER_COPY", f->copy, TRUE);
  g_unsetenv("FAKE_HELPER_FAIL");
  f->h = testhost_new(DEV, f->state);
}

static void fx_teardown(fixture *f, gconstpointer data) {
  (void)data;
  testhost_free(f->h);
  ptu_rm_rf(f->dir);
  g_free(f->dir);
  g_free(f->state);
  g_free(f->copy);
  g_free(f->helper);
}

/* app = the fixture file, sys = a journal unit. */
static void load(fixture *f, gboolean with_helper) {
  char *logs = g_strdup_printf(
      "app=%s sys=journal:ssh.service",
      g_test_get_filename(G_TEST_DIST, "data", "logfile", "app.log", NULL));
  testhost_set_config(f->h, "logs", logs);
  testhost_set_config(f->h, "diag", "false"); /* tested on its own below */
  if (with_helper)
    testhost_set_config(f->h, "http_helper", f->helper);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_free(logs);
}

/* Runs a 522 that must succeed; returns the uploaded content. */
static char *request_ok(fixture *f, const char *params) {
  char *line = g_strdup_printf("522," DEV ",%s", params);
  testhost_op_state st = testhost_run_operation(f->h, line, OP_WAIT_MS);
  if (st != TESTHOST_OP_SUCCEEDED)
    g_error("%s: %s", line, testhost_op_detail(f->h));
  g_assert_cmpstr(testhost_op_detail(f->h), ==, URL);
  g_assert_cmpuint(testhost_op_param_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_op_param(f->h, 0), ==, URL);
  g_free(line);
  char *got = ptu_read_text(f->copy);
  g_unlink(f->copy);
  return got;
}

static const char *request_fails(fixture *f, const char *params) {
  char *line = g_strdup_printf("522," DEV ",%s", params);
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_FAILED);
  g_free(line);
  return testhost_op_detail(f->h);
}

/* ---- init -------------------------------------------------------------------
 */

static void test_init(fixture *f, gconstpointer data) {
  (void)data;
  load(f, TRUE);
  g_assert_true(testhost_has_operation(f->h, "522"));
  g_assert_cmpuint(testhost_line_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_line(f->h, 0), ==, "s/us|118,app,sys");
}

static void test_init_without_helper(fixture *f, gconstpointer data) {
  (void)data;
  /* The real agent always offers upload: "no upload" is an ABI 1.0 agent. */
  testhost_set_abi_1_0(f->h);
  load(f, FALSE);
  g_assert_false(testhost_has_operation(f->h, "522"));
  g_assert_nonnull(testhost_find_log(f->h, "needs HTTP"));
  g_assert_cmpstr(testhost_find_line(f->h, "118,"), ==, "s/us|118,app,sys");
}

/* A bad `logs` entry is named with its file and line and left out, the
 * others keep working; only a list with none left stops the plugin. */
static void test_bad_config(fixture *f, gconstpointer data) {
  (void)data;
  static const struct {
    const char *logs, *why;
  } cases[] = {
      {"app=relative/path",
       "agent.ini:6: logs: entry 'app=relative/path': not name=/path, "
       "name=journal or name=journal:<unit>"},
      {"a/b=/var/log/x", "logs: entry 'a/b=/var/log/x': name 'a/b' may "
                         "contain only letters, digits, '_', '-' and '.'"},
      {"good=/var/log/other", "logs: entry 'good=/var/log/other': name "
                              "'good' is listed twice (the first one is "
                              "used)"},
      {"app=journal:", "logs: entry 'app=journal:'"},
      {"app=\"/var/log/x", "logs: entry 'app=\"/var/log/x': no closing '\"'"},
  };
  static const struct {
    const char *key, *value, *why;
  } keys[] = {
      {"max_lines", "0", "max_lines: 0 is out of range (1..100000)"},
      {"timeout", "86401", "timeout: 86401 is out of range (1..86400)"},
      {"http_helper", "relative/helper",
       "http_helper: 'relative/helper' is not an executable file (absolute "
       "path expected)"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
    testhost_free(f->h);
    f->h = testhost_new(DEV, f->state);
    testhost_set_config(f->h, "logs", "app=/var/log/app.log");
    testhost_set_config(f->h, keys[i].key, keys[i].value);
    g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
    g_assert_nonnull(testhost_find_log(f->h, keys[i].why));
  }
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    testhost_free(f->h);
    f->h = testhost_new(DEV, f->state);
    char *logs = g_strdup_printf("good=/var/log/good.log %s", cases[i].logs);
    testhost_set_config(f->h, "logs", logs);
    testhost_set_config(f->h, "diag", "false");
    g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
    if (!testhost_find_log(f->h, cases[i].why))
      g_error("logs = %s: no log with \"%s\"", logs, cases[i].why);
    g_assert_cmpstr(testhost_find_line(f->h, "118,"), ==, "s/us|118,good");
    g_free(logs);

    /* Alone, nothing usable is left (the twice case is good alone). */
    if (strstr(cases[i].why, "listed twice"))
      continue;
    testhost_free(f->h);
    f->h = testhost_new(DEV, f->state);
    testhost_set_config(f->h, "logs", cases[i].logs);
    g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
    g_assert_nonnull(testhost_find_log(f->h, "logs: no usable entry"));
  }
}

/* A log file whose path holds blanks is written in quotes. */
static void test_path_with_blanks(fixture *f, gconstpointer data) {
  (void)data;
  char *sub = g_build_filename(f->dir, "my logs", NULL);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
  char *path = g_build_filename(sub, "app 1.log", NULL);
  ptu_write_text(path, "2024-03-10T09:30:00+0200 ERROR disk low\n");
  char *logs = g_strdup_printf("app=\"%s\" other=/var/log/other.log", path);
  testhost_set_config(f->h, "logs", logs);
  testhost_set_config(f->h, "diag", "false");
  testhost_set_config(f->h, "http_helper", f->helper);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpstr(testhost_find_line(f->h, "118,"), ==, "s/us|118,app,other");
  char *got = request_ok(f, "app,2024-03-10T09:00:00+0200,"
                            "2024-03-10T10:00:00+0200,,100");
  g_assert_cmpstr(got, ==, "2024-03-10T09:30:00+0200 ERROR disk low\n");
  g_free(got);
  g_free(logs);
  g_free(path);
  g_free(sub);
}

/* ---- 522 over a file
 * ---------------------------------------------------------- */

static void test_file_window_search(fixture *f, gconstpointer data) {
  (void)data;
  load(f, TRUE);
  char *got = request_ok(
      f, "app,2024-03-10T09:15:00+0200,2024-03-10T10:30:00+0200,ERROR,1000");
  g_assert_cmpstr(got, ==,
                  "2024-03-10T09:30:00+0200 ERROR disk low\n"
                  "2024-03-10T10:00:00.500+02:00 ERROR disk full\n"
                  "  continuation line with ERROR but no time\n"
                  "2024-03-10T08:15:00Z ERROR reported in UTC\n"
                  "2024-03-10T10:25:00.123456+0200 ERROR microseconds\n");
  g_free(got);
  char *meta_path = g_strconcat(f->copy, ".meta", NULL);
  char *meta = ptu_read_text(meta_path);
  g_assert_cmpstr(meta, ==, DEV " app app 5\n");
  g_free(meta);
  g_free(meta_path);

  /* maxLines keeps the newest matching lines. */
  got = request_ok(
      f, "app,2024-03-10T09:15:00+02:00,2024-03-10T10:30:00+02:00,ERROR,2");
  g_assert_cmpstr(got, ==,
                  "2024-03-10T08:15:00Z ERROR reported in UTC\n"
                  "2024-03-10T10:25:00.123456+0200 ERROR microseconds\n");
  g_free(got);

  /* The window bounds are inclusive, to the millisecond. */
  got = request_ok(
      f, "app,2024-03-10T10:00:00.500+0200,2024-03-10T08:00:00.500Z,disk,10");
  g_assert_cmpstr(got, ==, "2024-03-10T10:00:00.500+02:00 ERROR disk full\n");
  g_free(got);

  /* No window and no search: the last lines of the file. */
  got = request_ok(f, "app,,,,3");
  g_assert_cmpstr(got, ==,
                  "2024-03-10T10:20:00+0200 WARN no match here\n"
                  "2024-03-10T10:25:00.123456+0200 ERROR microseconds\n"
                  "2024-03-10T11:00:00+0200 ERROR after the window\n");
  g_free(got);
}

static void test_syslog_times(fixture *f, gconstpointer data) {
  (void)data;
  /* Syslog times have no year: the plugin takes the latest year that is
   * not in the future, so the fixture is built relative to now. */
  time_t now = time(NULL);
  char in[64], old[64], from[64], to[64];
  time_t t_in = now - 2 * 86400, t_old = now - 5 * 86400;
  time_t t_from = now - 3 * 86400, t_to = now - 86400;
  strftime(in, sizeof in, "%b %e %H:%M:%S", gmtime(&t_in));
  strftime(old, sizeof old, "%b %e %H:%M:%S", gmtime(&t_old));
  strftime(from, sizeof from, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t_from));
  strftime(to, sizeof to, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t_to));
  char *path = g_build_filename(f->dir, "syslog", NULL);
  char *text = g_strdup_printf("%s host a: old\n%s host a: in window\n"
                               "no time at all\n",
                               old, in);
  ptu_write_text(path, text);
  char *logs = g_strdup_printf("syslog=%s", path);
  testhost_set_config(f->h, "logs", logs);
  testhost_set_config(f->h, "http_helper", f->helper);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  char *params = g_strdup_printf("syslog,%s,%s,,", from, to);
  char *got = request_ok(f, params);
  char *want = g_strdup_printf("%s host a: in window\nno time at all\n", in);
  g_assert_cmpstr(got, ==, want);
  g_free(want);
  g_free(got);
  g_free(params);
  g_free(logs);
  g_free(text);
  g_free(path);
}

static void test_keeps_newest_extracts(fixture *f, gconstpointer data) {
  (void)data;
  load(f, TRUE);
  for (int i = 0; i < 7; i++)
    g_free(request_ok(f, "app,,,,1"));
  /* The real host gives each plugin <state_dir>/plugins/<name>. */
  char *pdir = g_build_filename(f->state, "plugins", "logfile", NULL);
  GDir *d = g_dir_open(pdir, 0, NULL);
  g_free(pdir);
  g_assert_nonnull(d);
  const char *name;
  int n = 0;
  while ((name = g_dir_read_name(d)) != NULL) {
    g_assert_true(g_str_has_prefix(name, "app-"));
    g_assert_true(g_str_has_suffix(name, ".log"));
    n++;
  }
  g_dir_close(d);
  g_assert_cmpint(n, ==, 5);
}

static void test_failures(fixture *f, gconstpointer data) {
  (void)data;
  load(f, TRUE);
  g_assert_cmpstr(request_fails(f, "nope,,,,10"), ==,
                  "unknown log 'nope' (supported: app, sys)");
  g_assert_cmpstr(request_fails(f, "app,yesterday,,,10"), ==,
                  "c8y_LogfileRequest: dateFrom 'yesterday' is not an ISO "
                  "8601 time");
  g_assert_cmpstr(request_fails(f, "app,,2024-13-01T00:00:00Z,,10"), ==,
                  "c8y_LogfileRequest: dateTo '2024-13-01T00:00:00Z' is not "
                  "an ISO 8601 time");
  g_assert_nonnull(strstr(
      request_fails(f, "app,2024-03-11T00:00:00Z,2024-03-10T00:00:00Z,,10"),
      "is after dateTo"));
  g_assert_nonnull(strstr(request_fails(f, "app,,,,ten"),
                          "maxLines 'ten' is not a non-negative integer"));
  g_assert_nonnull(strstr(request_fails(f, "app,,,"), "expected 5 fields"));
  g_assert_false(g_file_test(f->copy, G_FILE_TEST_EXISTS));

  g_setenv("FAKE_HELPER_FAIL", "1", TRUE);
  g_assert_cmpstr(request_fails(f, "app,,,,10"), ==,
                  "upload of log 'app' failed (exit 4: HTTP 401 Unauthorized)");
}

static void test_missing_file(fixture *f, gconstpointer data) {
  (void)data;
  testhost_set_config(f->h, "logs", "gone=/nonexistent/c8y-test.log");
  testhost_set_config(f->h, "http_helper", f->helper);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpstr(request_fails(f, "gone,,,,10"), ==,
                  "cannot open /nonexistent/c8y-test.log: No such file or "
                  "directory");
}

/* A user who can write the log directory plants a symlink (or a hard link)
 * to a file only root may read in place of the log: the agent does not
 * follow it, so that file is never uploaded. The same file reached through
 * a symlink in a directory only root can write is read. */
static void test_planted_link_not_followed(fixture *f, gconstpointer data) {
  (void)data;
  char *logdir = g_build_filename(f->dir, "log", NULL);
  g_assert_cmpint(g_mkdir(logdir, 0755), ==, 0);
  g_assert_cmpint(g_chmod(logdir, 0777), ==, 0);
  char *secret = g_build_filename(f->dir, "shadow", NULL);
  ptu_write_text(secret, "root:$6$secret:19000::::::\n");
  g_assert_cmpint(g_chmod(secret, 0600), ==, 0);
  char *planted = g_build_filename(logdir, "app.log", NULL);
  g_assert_cmpint(symlink(secret, planted), ==, 0);
  char *hard = g_build_filename(logdir, "hard.log", NULL);
  g_assert_cmpint(link(secret, hard), ==, 0);
  char *inside = g_build_filename(logdir, "sub", NULL);
  char *via_dir = g_build_filename(inside, "x.log", NULL);
  g_assert_cmpint(symlink(f->dir, inside), ==, 0); /* a planted directory */
  char *safe = g_build_filename(f->dir, "etc-link.log", NULL);
  g_assert_cmpint(symlink(secret, safe), ==, 0);
  char *logs = g_strdup_printf("app=%s hard=%s via=%s/shadow safe=%s", planted,
                               hard, inside, safe);
  testhost_set_config(f->h, "logs", logs);
  testhost_set_config(f->h, "http_helper", f->helper);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);

  char *want = g_strdup_printf("%s is a symlink in %s, which is writable by "
                               "others (mode 0777); not followed",
                               planted, logdir);
  g_assert_cmpstr(request_fails(f, "app,,,,10"), ==, want);
  g_free(want);
  want = g_strdup_printf("%s has 2 hard links in %s, which is writable by "
                         "others (mode 0777); not read",
                         hard, logdir);
  g_assert_cmpstr(request_fails(f, "hard,,,,10"), ==, want);
  g_free(want);
  want = g_strdup_printf("%s is a symlink in %s, which is writable by "
                         "others (mode 0777); not followed",
                         inside, logdir);
  g_assert_cmpstr(request_fails(f, "via,,,,10"), ==, want);
  g_free(want);
  g_assert_false(g_file_test(f->copy, G_FILE_TEST_EXISTS));
  /* Root's own symlink is followed. */
  char *got = request_ok(f, "safe,,,,10");
  g_assert_cmpstr(got, ==, "root:$6$secret:19000::::::\n");
  g_free(got);
  g_free(logs);
  g_free(safe);
  g_free(via_dir);
  g_free(inside);
  g_free(hard);
  g_free(planted);
  g_free(secret);
  g_free(logdir);
}

/* ---- 522 over the journal
 * ------------------------------------------------------ */

static void test_journal(fixture *f, gconstpointer data) {
  (void)data;
  char *bin = g_build_filename(f->dir, "bin", NULL);
  g_assert_cmpint(g_mkdir(bin, 0755), ==, 0);
  g_free(ptu_install_script(bin, "logfile", "journalctl", "journalctl"));
  char *path = g_strdup_printf("%s:%s", bin, g_getenv("PATH"));
  char *saved_path = g_strdup(g_getenv("PATH"));
  g_setenv("PATH", path, TRUE);
  char *args = g_build_filename(f->dir, "journal-args", NULL);
  char *jdata = g_build_filename(f->dir, "journal-data", NULL);
  g_setenv("FAKE_JOURNAL_ARGS", args, TRUE);
  g_setenv("FAKE_JOURNAL_DATA", jdata, TRUE);
  g_unsetenv("FAKE_JOURNAL_FAIL");
  ptu_write_text(
      jdata, "2024-03-10T09:20:00+0200 host sshd[1]: Accepted key for root\n"
             "2024-03-10T09:21:00+0200 host sshd[1]: session opened\n"
             "2024-03-10T09:22:00+0200 host sshd[2]: Accepted password\n"
             "2024-03-10T11:22:00+0200 host sshd[3]: Accepted late");
  load(f, TRUE);

  char *got = request_ok(
      f, "sys,2024-03-10T09:15:00+0200,2024-03-10T10:30:00+0200,Accepted,10");
  /* journalctl selects the window; search and maxLines are applied here,
   * and so is the window (the last line lies outside it). */
  g_assert_cmpstr(
      got, ==,
      "2024-03-10T09:20:00+0200 host sshd[1]: Accepted key for root\n"
      "2024-03-10T09:22:00+0200 host sshd[2]: Accepted password\n");
  g_free(got);
  char *a = ptu_read_text(args);
  g_assert_cmpstr(a, ==,
                  "--no-pager\n--quiet\n--output=short-iso\n--unit\n"
                  "ssh.service\n--since=@1710054900\n--until=@1710059400\n");
  g_free(a);

  /* Without search text journalctl does the tail itself. */
  g_free(request_ok(f, "sys,,,,2"));
  a = ptu_read_text(args);
  g_assert_cmpstr(a, ==,
                  "--no-pager\n--quiet\n--output=short-iso\n--unit\n"
                  "ssh.service\n--lines=2\n");
  g_free(a);

  g_setenv("FAKE_JOURNAL_FAIL", "1", TRUE);
  g_assert_cmpstr(request_fails(f, "sys,,,,2"), ==,
                  "journalctl failed (exit 1: Failed to open journal: "
                  "Permission denied)");
  g_unsetenv("FAKE_JOURNAL_FAIL");
  g_setenv("PATH", saved_path, TRUE);
  g_free(saved_path);
  g_free(path);
  g_free(args);
  g_free(jdata);
  g_free(bin);
}

/* SDK 1.1: without a helper the agent uploads; the result is its URL. */
static void test_upload_through_agent(fixture *f, gconstpointer data) {
  (void)data;
  testhost_enable_transfers(f->h);
  load(f, FALSE);
  g_assert_true(testhost_has_operation(f->h, "522"));
  testhost_op_state st =
      testhost_run_operation(f->h, "522," DEV ",app,,,disk,10", OP_WAIT_MS);
  g_assert_cmpint(st, ==, TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==, "testhost://binaries/1");
  g_assert_cmpuint(testhost_upload_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "type"), ==, "c8y_Logfile");
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "child"), ==, "");
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "content_type"), ==,
                  "text/plain");
  g_assert_true(
      g_str_has_prefix(testhost_upload_field(f->h, 0, "file_name"), "app-"));
  const char *content = testhost_upload_field(f->h, 0, "content");
  g_assert_nonnull(strstr(content, "ERROR disk low"));
  g_assert_nonnull(strstr(content, "ERROR disk full"));
  g_assert_null(strstr(content, "service started"));
  /* an upload failure fails the operation with the agent's reason */
  testhost_fail_transfers(f->h, C8Y_EHTTP,
                          "HTTP 403 from t1.example.com: access denied");
  st = testhost_run_operation(f->h, "522," DEV ",app,,,disk,10", OP_WAIT_MS);
  g_assert_cmpint(st, ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "upload of log 'app' failed: HTTP 403 from t1.example.com: "
                  "access denied");
}

/* ---- the support bundle (lg_diag.c) --------------------------------------
 */

#define DIAG_SECRET "Diag-Secret-4711"

static gboolean tar_lists(const char *archive, const char *name) {
  char *argv[] = {"tar", "-tzf", (char *)archive, NULL};
  char *out = NULL;
  gint status = -1;
  g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             &out, NULL, &status, NULL));
  g_assert_cmpint(status, ==, 0);
  gboolean found = FALSE;
  char **lines = g_strsplit(out, "\n", -1);
  for (char **l = lines; *l; l++)
    if (g_str_has_suffix(*l, name))
      found = TRUE;
  g_strfreev(lines);
  g_free(out);
  return found;
}

static void test_diag_bundle(fixture *f, gconstpointer data) {
  (void)data;
  const char *agent = g_getenv("C8Y_AGENT_BIN");
  g_assert_nonnull(agent);
  char *conf = g_build_filename(f->dir, "agent.ini", NULL);
  char *ini = g_strdup_printf(
      "[c8y]\ntenant = t1\nuser = dev\npassword = " DIAG_SECRET "\n"
      "host = 127.0.0.1\nport = 1\ntls = false\n[device]\nid = " DEV "\n"
      "[agent]\nstate_dir = %s/agent-state\n",
      f->dir);
  ptu_write_text(conf, ini);
  g_chmod(conf, 0600);
  char *agent_state = g_build_filename(f->dir, "agent-state", NULL);
  g_assert_cmpint(g_mkdir(agent_state, 0700), ==, 0);
  g_free(agent_state);
  char *copy = g_build_filename(f->dir, "bundle.tar.gz", NULL);
  char *wrap = ptu_install_script(f->dir, "logfile", "diag_wrap.sh", "diag");
  g_setenv("C8Y_AGENT_CONFIG", conf, TRUE);
  g_setenv("DIAG_COPY", copy, TRUE);
  g_unsetenv("DIAG_FAIL");

  testhost_enable_transfers(f->h);
  testhost_set_config(f->h, "diag_program", wrap);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  /* offered without any `logs` */
  g_assert_true(testhost_has_operation(f->h, "522"));
  g_assert_cmpstr(testhost_find_line(f->h, "118,"), ==,
                  "s/us|118,c8y-agent-diag");

  testhost_op_state st = testhost_run_operation(
      f->h, "522," DEV ",c8y-agent-diag,,,,20", OP_WAIT_MS);
  if (st != TESTHOST_OP_SUCCEEDED)
    g_error("diag 522: %s", testhost_op_detail(f->h));
  g_assert_cmpstr(testhost_op_detail(f->h), ==, "testhost://binaries/1");
  g_assert_cmpuint(testhost_upload_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "type"), ==, "c8y_Logfile");
  g_assert_cmpstr(testhost_upload_field(f->h, 0, "content_type"), ==,
                  "application/gzip");
  const char *name = testhost_upload_field(f->h, 0, "file_name");
  g_assert_true(g_str_has_prefix(name, "c8y-agent-diag-"));
  g_assert_true(g_str_has_suffix(name, ".tar.gz"));
  /* gzip magic: what was uploaded is the archive */
  g_assert_true(
      g_str_has_prefix(testhost_upload_field(f->h, 0, "content"), "\x1f\x8b"));
  /* the same archive, kept by the wrapper: every section, no secret */
  g_assert_true(tar_lists(copy, "/SUMMARY.txt"));
  g_assert_true(tar_lists(copy, "/config.txt"));
  g_assert_true(tar_lists(copy, "/versions.txt"));
  g_assert_true(tar_lists(copy, "/state.txt"));
  char *x = g_build_filename(f->dir, "x", NULL);
  g_assert_cmpint(g_mkdir(x, 0700), ==, 0);
  char *argv[] = {"tar", "-xzf", copy, "-C", x, NULL};
  gint status = -1;
  g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             NULL, NULL, &status, NULL));
  g_assert_cmpint(status, ==, 0);
  char *grep[] = {"grep", "-r", "-l", DIAG_SECRET, x, NULL};
  char *hits = NULL;
  g_assert_true(g_spawn_sync(NULL, grep, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             &hits, NULL, &status, NULL));
  g_assert_cmpstr(hits, ==, ""); /* grep found nothing */
  g_free(hits);
  /* made on demand, not kept in the plugin's state dir */
  char *find[] = {"find", f->state, "-name", "*.tar.gz", NULL};
  char *left = NULL;
  g_assert_true(g_spawn_sync(NULL, find, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             &left, NULL, &status, NULL));
  g_assert_cmpstr(left, ==, "");
  g_free(left);

  /* a bundle that cannot be made fails the operation with the reason */
  g_setenv("DIAG_FAIL", "1", TRUE);
  st = testhost_run_operation(f->h, "522," DEV ",c8y-agent-diag,,,,20",
                              OP_WAIT_MS);
  g_assert_cmpint(st, ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(f->h), "c8y-agent diag failed"));
  g_assert_nonnull(strstr(testhost_op_detail(f->h), "diag broke"));
  g_unsetenv("DIAG_FAIL");
  g_unsetenv("C8Y_AGENT_CONFIG");
  g_unsetenv("DIAG_COPY");
  g_free(x);
  g_free(wrap);
  g_free(copy);
  g_free(ini);
  g_free(conf);
}

/* A configured log may not take the bundle's name while it is offered. */
static void test_diag_name_taken(fixture *f, gconstpointer data) {
  (void)data;
  testhost_enable_transfers(f->h);
  testhost_set_config(f->h, "logs",
                      "c8y-agent-diag=/var/log/syslog app=/var/log/app.log");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_nonnull(testhost_find_log(
      f->h, "logs: entry 'c8y-agent-diag=/var/log/syslog': name "
            "'c8y-agent-diag' is the support bundle's"));
  g_assert_cmpstr(testhost_find_line(f->h, "118,"), ==,
                  "s/us|118,app,c8y-agent-diag");
}

int main(int argc, char **argv) {
  g_setenv("TZ", "UTC", TRUE);
  tzset();
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, fixture, NULL, fx_setup, fn, fx_teardown)
  ADD("/plugin/logfile/init/registers", test_init);
  ADD("/plugin/logfile/init/without-helper", test_init_without_helper);
  ADD("/plugin/logfile/init/bad-config", test_bad_config);
  ADD("/plugin/logfile/init/path-with-blanks", test_path_with_blanks);
  ADD("/plugin/logfile/file/window-search", test_file_window_search);
  ADD("/plugin/logfile/file/syslog-times", test_syslog_times);
  ADD("/plugin/logfile/file/keeps-newest", test_keeps_newest_extracts);
  ADD("/plugin/logfile/file/missing", test_missing_file);
  ADD("/plugin/logfile/file/planted-link", test_planted_link_not_followed);
  ADD("/plugin/logfile/failures", test_failures);
  ADD("/plugin/logfile/journal", test_journal);
  ADD("/plugin/logfile/upload-through-agent", test_upload_through_agent);
  ADD("/plugin/logfile/diag/bundle", test_diag_bundle);
  ADD("/plugin/logfile/diag/name-taken", test_diag_name_taken);
#undef ADD
  return g_test_run();
}
