/* Tests of the software plugin (140/141/143, 528, 529) on the real plugin
 * host (testhost). A restart of the agent during an update is a host
 * restart on the same state dir. */
#include "plugin_test_util.h"
#include "smartrest.h"
#include "testhost.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEV "dev1"
#define OP_WAIT_MS 20000
#define LINE_MAX_BYTES 16000

typedef struct fixture {
  char *dir;
  char *state;
  char *db;  /* fake package database: name<TAB>version lines */
  char *log; /* what install/remove commands did */
  testhost *h;
} fixture;

static void fx_setup(fixture *f, gconstpointer data) {
  (void)data;
  f->dir = ptu_make_tmpdir("c8y-sw");
  f->db = g_build_filename(f->dir, "db", NULL);
  f->log = g_build_filename(f->dir, "log", NULL);
  f->state = g_build_filename(f->dir, "state", NULL);
  f->h = testhost_new(DEV, f->state);
}

static void fx_teardown(fixture *f, gconstpointer data) {
  (void)data;
  testhost_free(f->h);
  ptu_rm_rf(f->dir);
  g_free(f->dir);
  g_free(f->state);
  g_free(f->db);
  g_free(f->log);
}

/* The software-list lines (140/141) recorded from index `from` on. */
static GPtrArray *list_lines(testhost *h, size_t from) {
  GPtrArray *out = g_ptr_array_new();
  for (size_t i = from; i < testhost_line_count(h); i++) {
    const char *l = testhost_line(h, i);
    if (g_str_has_prefix(l, "s/us|140,") || g_str_has_prefix(l, "s/us|141,"))
      g_ptr_array_add(out, (gpointer)(l + strlen("s/us|")));
  }
  return out;
}

/* Decodes list lines into name -> "version|type|url", asserting the
 * 140-then-141 order, the size limit and that no package repeats. */
static GHashTable *decode_list(GPtrArray *lines) {
  GHashTable *pk =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  g_assert_cmpuint(lines->len, >, 0);
  for (guint i = 0; i < lines->len; i++) {
    const char *l = lines->pdata[i];
    g_assert_cmpuint(strlen(l), <=, LINE_MAX_BYTES);
    g_assert_true(g_str_has_prefix(l, i == 0 ? "140," : "141,"));
    smartrest_records r;
    g_assert_cmpint(smartrest_decode(l, strlen(l), &r), ==, 0);
    g_assert_cmpuint(r.count, ==, 1);
    g_assert_null(r.items[0].error);
    g_assert_cmpuint((r.items[0].nfields - 1) % 4, ==, 0);
    for (size_t k = 1; k + 3 < r.items[0].nfields; k += 4) {
      char **fl = r.items[0].fields;
      g_assert_false(g_hash_table_contains(pk, fl[k]));
      g_hash_table_insert(
          pk, g_strdup(fl[k]),
          g_strdup_printf("%s|%s|%s", fl[k + 1], fl[k + 2], fl[k + 3]));
    }
    smartrest_records_free(&r);
  }
  return pk;
}

/* ---- installed list ---------------------------------------------------------
 */

static void test_list_chunked(fixture *f, gconstpointer data) {
  (void)data;
  char *list = g_strdup_printf(
      "sh '%s'",
      g_test_get_filename(G_TEST_DIST, "data", "software", "list.sh", NULL));
  testhost_set_config(f->h, "list_command", list);
  g_free(list);
  testhost_set_config(f->h, "type", "apt");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_true(testhost_has_operation(f->h, "528"));
  g_assert_true(testhost_has_operation(f->h, "529"));
  g_assert_cmpstr(testhost_line(f->h, 0), ==, "s/us|143,apt");

  GPtrArray *lines = list_lines(f->h, 0);
  /* 3001 packages of ~160 bytes cannot fit in fewer than 30 lines. */
  g_assert_cmpuint(lines->len, >=, 30);
  g_assert_cmpuint(lines->len + 1, ==, testhost_line_count(f->h));
  /* Lines are filled: all but the last are close to the limit. */
  for (guint i = 0; i + 1 < lines->len; i++)
    g_assert_cmpuint(strlen(lines->pdata[i]), >, LINE_MAX_BYTES - 400);
  GHashTable *pk = decode_list(lines);
  g_assert_cmpuint(g_hash_table_size(pk), ==, 3001);
  const char *longs =
      "abcdefghijklmnopqrstuvwxyz-abcdefghijklmnopqrstuvwxyz-abcdefghijklmnop";
  for (int i = 0; i < 3000; i++) {
    char *name = g_strdup_printf("pkg-%04d-%s", i, longs);
    char *want = g_strdup_printf("%d.0.%d-%s|apt|", i, i, longs);
    g_assert_cmpstr(g_hash_table_lookup(pk, name), ==, want);
    g_free(name);
    g_free(want);
  }
  g_assert_cmpstr(g_hash_table_lookup(pk, "quoted\"pkg, one"), ==,
                  "1.0 \"beta\"|apt|");
  g_assert_nonnull(
      testhost_find_log(f->h, "1 line(s) are not name<TAB>version"));
  g_hash_table_unref(pk);
  g_ptr_array_unref(lines);
}

static void test_list_empty(fixture *f, gconstpointer data) {
  (void)data;
  testhost_set_config(f->h, "list_command", "true");
  testhost_set_config(f->h, "type", "apt");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpuint(testhost_line_count(f->h), ==, 2);
  g_assert_cmpstr(testhost_line(f->h, 0), ==, "s/us|143,apt");
  g_assert_cmpstr(testhost_line(f->h, 1), ==, "s/us|140,,,,");
}

static void test_list_command_fails(fixture *f, gconstpointer data) {
  (void)data;
  testhost_set_config(f->h, "list_command", "echo boom >&2; exit 2");
  testhost_set_config(f->h, "type", "apt");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_null(testhost_find_line(f->h, "140"));
  g_assert_nonnull(
      testhost_find_log(f->h, "list_command failed (exit 2: boom)"));
}

static void test_bad_config(fixture *f, gconstpointer data) {
  (void)data;
  testhost_set_config(f->h, "list_command", "true");
  testhost_set_config(f->h, "type", "opkg");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
  g_assert_nonnull(testhost_find_log(f->h, "install_command: required"));
  g_assert_false(testhost_has_operation(f->h, "528"));
}

static void test_bad_timeout(fixture *f, gconstpointer data) {
  (void)data;
  testhost_set_config(f->h, "list_command", "true");
  testhost_set_config(f->h, "type", "apt");
  testhost_set_config(f->h, "list_timeout", "0");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
  g_assert_nonnull(testhost_find_log(
      f->h, "list_timeout: 0 is out of range (1..86400 seconds)"));
  g_assert_false(testhost_has_operation(f->h, "528"));
}

/* ---- 528 / 529 --------------------------------------------------------------
 */

/* A fake package manager over f->db that logs every call to f->log. */
static void load_fake_pm(fixture *f, const char *install) {
  char *list = g_strdup_printf("cat '%s'", f->db);
  char *body =
      g_strdup_printf("echo \"install $C8Y_SW_NAME|$C8Y_SW_VERSION|$C8Y_SW_URL|"
                      "$C8Y_SW_TYPE\" >> '%s'\n",
                      f->log);
  char *log_install = ptu_sh_script(f->dir, "log-install.sh", body);
  g_free(body);
  char *inst = install
                   ? g_strdup(install)
                   : g_strdup_printf("printf '%%s\\t%%s\\n' {name} {version} "
                                     ">> '%s' && %s",
                                     f->db, log_install);
  g_free(log_install);
  body = g_strdup_printf(
      "awk -F '\\t' -v n=\"$C8Y_SW_NAME\" '$1 != n' '%s' > '%s.new' && "
      "mv '%s.new' '%s' && echo \"delete $C8Y_SW_NAME\" >> '%s'\n",
      f->db, f->db, f->db, f->db, f->log);
  char *rm = ptu_sh_script(f->dir, "remove.sh", body);
  g_free(body);
  testhost_set_config(f->h, "list_command", list);
  testhost_set_config(f->h, "install_command", inst);
  testhost_set_config(f->h, "remove_command", rm);
  testhost_set_config(f->h, "type", "apt");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_free(list);
  g_free(inst);
  g_free(rm);
}

static void test_update_install_delete(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "curl\t7.0\nvim\t9.0\n");
  /* The URL goes to install_command as {url}, not to a download. */
  testhost_set_config(f->h, "download", "false");
  load_fake_pm(f, NULL);
  testhost_clear_lines(f->h);
  g_assert_cmpint(
      testhost_run_operation(f->h,
                             "528," DEV ",nginx,1.2,http://127.0.0.1/nginx.deb,"
                             "install,curl,,,delete",
                             OP_WAIT_MS),
      ==, TESTHOST_OP_SUCCEEDED);
  char *log = ptu_read_text_or_empty(f->log);
  g_assert_cmpstr(log, ==,
                  "install nginx|1.2|http://127.0.0.1/nginx.deb|apt\n"
                  "delete curl\n");
  g_free(log);
  /* The list is re-reported after the update. */
  g_assert_cmpuint(testhost_sent_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_sent(f->h, 0), ==,
                  "s/us|140,vim,9.0,apt,,nginx,1.2,apt,");

  /* 529 carries a type per item; empty means the device's type. */
  testhost_clear_lines(f->h);
  g_assert_cmpint(
      testhost_run_operation(
          f->h, "529," DEV ",jq,1.6,apt,,install,tree,2,,,install", OP_WAIT_MS),
      ==, TESTHOST_OP_SUCCEEDED);
  g_assert_cmpstr(testhost_find_line(f->h, "140,"), ==,
                  "s/us|140,vim,9.0,apt,,nginx,1.2,apt,,jq,1.6,apt,,tree,2,"
                  "apt,");
}

static void test_update_values_are_quoted(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  char *pwned = g_build_filename(f->dir, "pwned", NULL);
  char *inst = g_strdup_printf("echo {name} {version} >> '%s'", f->log);
  load_fake_pm(f, inst);
  char *line = g_strdup_printf(
      "528," DEV ",\"x'; touch %s; '\",$(touch %s)`touch %s`,,install", pwned,
      pwned, pwned);
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_SUCCEEDED);
  char *log = ptu_read_text_or_empty(f->log);
  char *want = g_strdup_printf("x'; touch %s; ' $(touch %s)`touch %s`\n", pwned,
                               pwned, pwned);
  g_assert_cmpstr(log, ==, want);
  g_assert_false(g_file_test(pwned, G_FILE_TEST_EXISTS));
  g_free(want);
  g_free(log);
  g_free(line);
  g_free(inst);
  g_free(pwned);
}

/* Direct mode: a name or version starting with '-' would be an option of
 * the package manager (apt-get -o... runs commands): refused before any
 * command runs, as the helper refuses it. */
static void test_update_refuses_options(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  char *inst = g_strdup_printf("echo {name} {version} >> '%s'", f->log);
  load_fake_pm(f, inst);
  g_assert_cmpint(testhost_run_operation(
                      f->h,
                      "528," DEV ",-oAPT::Update::Pre-Invoke::=id,1,,install",
                      OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "c8y_SoftwareUpdate: item 1: name "
                  "'-oAPT::Update::Pre-Invoke::=id' must not start with '-'");
  g_assert_cmpint(testhost_run_operation(f->h,
                                         "528," DEV ",ok,1,,install,curl,"
                                         "--reinstall,,install",
                                         OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "c8y_SoftwareUpdate: item 2: version '--reinstall' must not "
                  "start with '-'");
  /* Nothing ran, not even the valid first item. */
  char *log = ptu_read_text_or_empty(f->log);
  g_assert_cmpstr(log, ==, "");
  g_free(log);
  g_free(inst);
}

/* A command that runs as root from a directory others can write is refused
 * at start, naming the key and the path. */
static void test_untrusted_command(fixture *f, gconstpointer data) {
  (void)data;
  char *open_dir = g_build_filename(f->dir, "open", NULL);
  g_assert_cmpint(g_mkdir(open_dir, 0755), ==, 0);
  g_assert_cmpint(chmod(open_dir, 0777), ==, 0);
  char *tool = g_build_filename(open_dir, "pm.sh", NULL);
  ptu_write_text(tool, "#!/bin/sh\nexit 0\n");
  g_assert_cmpint(chmod(tool, 0755), ==, 0);
  char *remove = g_strdup_printf("%s remove {name}", tool);
  testhost_set_config(f->h, "list_command", "true");
  testhost_set_config(f->h, "install_command", "true");
  testhost_set_config(f->h, "remove_command", remove);
  testhost_set_config(f->h, "type", "apt");
  testhost_set_config(f->h, "privileged", "direct");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
  char *want = g_strdup_printf("remove_command: %s is writable by others "
                               "(mode 0777); only root and the agent's user "
                               "may write what the agent runs",
                               open_dir);
  if (!testhost_find_log(f->h, want))
    g_error("no log line '%s'", want);
  g_assert_false(testhost_has_operation(f->h, "528"));
  g_free(want);
  g_free(remove);
  g_free(tool);
  g_free(open_dir);
}

static void test_update_stops_at_failure(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "base\t1\n");
  char *body = g_strdup_printf(
      "if [ \"$C8Y_SW_NAME\" = bad ]; then "
      "echo 'Reading package lists...' >&2; "
      "echo 'E: Unable to locate package bad' >&2; exit 100; fi; "
      "echo \"$C8Y_SW_NAME\" >> '%s'\n",
      f->log);
  char *inst = ptu_sh_script(f->dir, "install.sh", body);
  g_free(body);
  load_fake_pm(f, inst);
  testhost_clear_lines(f->h);
  g_assert_cmpint(testhost_run_operation(f->h,
                                         "528," DEV ",good1,1,,install,bad,"
                                         "2.0,,install,good2,3,,install",
                                         OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "install of bad 2.0 failed (exit 100): Reading package "
                  "lists... E: Unable to locate package bad");
  char *log = ptu_read_text_or_empty(f->log);
  g_assert_cmpstr(log, ==, "good1\n");
  g_free(log);
  /* Re-reported even after a failure (good1 may have changed things). */
  g_assert_cmpstr(testhost_find_line(f->h, "140,"), ==, "s/us|140,base,1,apt,");
  g_free(inst);
}

static void test_update_malformed(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  load_fake_pm(f, NULL);
  static const struct {
    const char *line, *why;
  } cases[] = {
      {"528," DEV ",a,1,,install,b",
       "5 fields is not a non-zero multiple of 4"},
      {"529," DEV ",a,1,,install", "4 fields is not a non-zero multiple of 5"},
      {"528," DEV ",a,1,,upgrade",
       "item 1 (a): unknown action 'upgrade' (expected install or delete)"},
      {"528," DEV ",a,1,,install,,2,,install", "item 2 has an empty name"},
      {"529," DEV ",a,1,apt,,install,b,2,rpm,,install",
       "item 2 (b): software type 'rpm' is not supported"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_assert_cmpint(testhost_run_operation(f->h, cases[i].line, OP_WAIT_MS), ==,
                    TESTHOST_OP_FAILED);
    g_assert_nonnull(strstr(testhost_op_detail(f->h), cases[i].why));
  }
  /* Validation happens before anything runs. */
  g_assert_false(g_file_test(f->log, G_FILE_TEST_EXISTS));
}

typedef struct log_wait {
  testhost *h;
  const char *substring;
} log_wait;

static gboolean logged(const void *ctx) {
  const log_wait *w = ctx;
  return testhost_find_log(w->h, w->substring) != NULL;
}

/* Waits up to timeout_ms for a log line containing substring. */
static gboolean wait_log(testhost *h, const char *substring, int timeout_ms) {
  log_wait w = {h, substring};
  return ptu_wait_until(logged, &w, timeout_ms);
}

/* An install that runs until it is stopped, touching `started` first. */
static char *blocking_install(const char *started) {
  return g_strdup_printf("touch '%s'; exec sleep 60", started);
}

/* A long install is stopped, and the plugin's unload does not wait for it:
 * when the operation times out (op_cancelled) it fails; when the agent
 * stops during it, it is kept for the next start (an update marked with
 * op_resume_after_restart outlives the stop: ops_cancel_running leaves it
 * alone, fini stops the install). */
static void test_update_cancelled(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  char *started = g_build_filename(f->dir, "started", NULL);
  char *inst = blocking_install(started);
  load_fake_pm(f, inst);
  gint64 start = g_get_monotonic_time();
  g_assert_cmpint(testhost_run_operation(f->h, "528," DEV ",a,1,,install", 0),
                  ==, TESTHOST_OP_RUNNING);
  g_assert_true(ptu_wait_file(started, OP_WAIT_MS));
  g_assert_true(testhost_op_resume_requested(f->h));
  testhost_advance(f->h, testhost_operation_timeout(f->h, "528") + 1000);
  /* Told (op_cancelled), the handler may still say why within the grace. */
  g_assert_true(testhost_wait_op_done(f->h, OP_WAIT_MS));
  g_assert_cmpint(testhost_op_state_now(f->h), ==, TESTHOST_OP_FAILED);
  g_assert_true(
      g_str_has_prefix(testhost_op_detail(f->h), "operation timed out after"));
  /* The handler's thread noticed and stopped the install by itself. */
  g_assert_true(wait_log(f->h, "install of a 1 failed: cancelled", OP_WAIT_MS));
  testhost_unload(f->h);
  g_assert_cmpint(g_get_monotonic_time() - start, <, 15 * G_USEC_PER_SEC);

  /* The agent stops during the install. */
  testhost_free(f->h);
  f->h = testhost_new(DEV, NULL);
  g_unlink(started);
  load_fake_pm(f, inst);
  start = g_get_monotonic_time();
  g_assert_cmpint(testhost_run_operation(f->h, "528," DEV ",a,1,,install", 0),
                  ==, TESTHOST_OP_RUNNING);
  g_assert_true(ptu_wait_file(started, OP_WAIT_MS));
  testhost_cancel_operation(f->h);
  testhost_unload(f->h); /* joins the handler: it must notice and stop */
  g_assert_cmpint(g_get_monotonic_time() - start, <, 15 * G_USEC_PER_SEC);
  g_assert_nonnull(testhost_find_log(
      f->h, "the agent is stopping during the software update; the result is "
            "checked after the restart"));
  g_assert_cmpint(testhost_op_state_now(f->h), ==, TESTHOST_OP_RUNNING);
  g_free(inst);
  g_free(started);
}

/* ---- package files and the privileged helper --------------------------------
 */

static void test_update_url_needs_download(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  testhost_set_abi_1_0(f->h);
  load_fake_pm(f, NULL);
  g_assert_cmpint(testhost_run_operation(
                      f->h,
                      "528," DEV ",nginx,1.2,https://t1.example/b/7,install",
                      OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(f->h),
                          "install of nginx 1.2: this agent cannot download "
                          "https://t1.example/b/7"));
  /* Not handed to the by-name install command instead. */
  g_assert_false(g_file_test(f->log, G_FILE_TEST_EXISTS));
}

/* A download that "fetches" any http(s) URL by copying a local package
 * file (ctx), and remembers what it was asked. */
static void test_update_url_downloads(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  char *src = g_build_filename(f->dir, "nginx_1.2_amd64.deb", NULL);
  ptu_write_text(src, "!<arch>\nfake deb\n");
  testhost_enable_transfers(f->h);
  testhost_add_download(f->h, "https://t1.example/inventory/binaries/42", src);
  /* The file must exist while the command runs; its content is logged. */
  char *body = g_strdup_printf(
      "{ echo \"file $C8Y_SW_FILE\"; cat \"$1\"; } >> '%s'\n", f->log);
  char *log_file = ptu_sh_script(f->dir, "log-file.sh", body);
  g_free(body);
  char *inst = g_strdup_printf(
      "printf '%%s\\t%%s\\n' {name} {version} >> '%s' && %s {file}", f->db,
      log_file);
  g_free(log_file);
  testhost_set_config(f->h, "install_file_command", inst);
  load_fake_pm(f, "false"); /* the by-name install must not run */
  g_assert_cmpint(testhost_run_operation(
                      f->h,
                      "528," DEV
                      ",nginx,1.2,https://t1.example/inventory/binaries/42,"
                      "install",
                      OP_WAIT_MS),
                  ==, TESTHOST_OP_SUCCEEDED);
  g_assert_cmpuint(testhost_download_count(f->h), ==, 1);
  char *state = g_build_filename(f->state, "plugins", "software",
                                 "pkg-1-nginx.deb", NULL);
  char *want = g_strdup_printf("file %s\n!<arch>\nfake deb\n", state);
  char *log = ptu_read_text_or_empty(f->log);
  g_assert_cmpstr(log, ==, want);
  /* Deleted after the install; the list shows the package. */
  g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));
  g_assert_nonnull(testhost_find_line(f->h, "140,nginx,1.2,apt,"));
  /* Marked before anything ran: an upgrade of the agent itself completes
   * after its restart. */
  g_assert_true(testhost_op_resume_requested(f->h));
  g_free(log);
  g_free(want);
  g_free(state);
  g_free(inst);
  g_free(src);
}

static void test_update_url_download_fails(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  testhost_enable_transfers(f->h); /* nothing registered: a 404 */
  char *inst = g_strdup_printf("echo ran >> '%s'", f->log);
  testhost_set_config(f->h, "install_file_command", inst);
  load_fake_pm(f, NULL);
  g_assert_cmpint(testhost_run_operation(
                      f->h,
                      "528," DEV ",nginx,1.2,http://t1.example/b/1,install",
                      OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "download of nginx 1.2 failed: HTTP 404 from testhost: not "
                  "found");
  g_assert_false(g_file_test(f->log, G_FILE_TEST_EXISTS));
  g_free(inst);
}

/* The agent stops during the update `op` (its own package's maintainer
 * script restarts it): the install command is running when the host stops,
 * and the host starts again on the same state dir. With `url` set, the
 * host serves a package file there. */
static void interrupt_update(fixture *f, const char *op, const char *url) {
  char *started = g_build_filename(f->dir, "started", NULL);
  char *inst = blocking_install(started);
  char *src = g_build_filename(f->dir, "agent.deb", NULL);
  g_unlink(started);
  if (url) {
    ptu_write_text(src, "deb\n");
    testhost_enable_transfers(f->h);
    testhost_add_download(f->h, url, src);
  }
  testhost_set_config(f->h, "install_file_command", inst);
  load_fake_pm(f, inst);
  g_assert_cmpint(testhost_run_operation(f->h, op, 0), ==, TESTHOST_OP_RUNNING);
  g_assert_true(ptu_wait_file(started, OP_WAIT_MS));
  testhost_free(f->h);
  f->h = testhost_new(DEV, f->state);
  g_free(src);
  g_free(inst);
  g_free(started);
}

/* The outcome of the operation the restarted agent resumed. */
static testhost_op_state resumed_outcome(fixture *f) {
  g_assert_true(testhost_wait_op_done(f->h, OP_WAIT_MS));
  return testhost_op_state_now(f->h);
}

/* Resumed after the agent restarted (its own package restarted it): the
 * result is what is installed now; nothing is run again. */
static void test_resumed_checks_versions(fixture *f, gconstpointer data) {
  (void)data;
  static const char url[] = "https://t1.example/b/9";
  static const char op[] = "528," DEV ",c8y-agent,0.2.0,https://t1.example/b/9,"
                           "install,old,,,delete";
  static const struct {
    const char *db, *list;
    testhost_op_state state;
    const char *why;
  } cases[] = {
      {"c8y-agent\t1:0.2.0-1\nold\t1\n",
       "140,c8y-agent,1:0.2.0-1,apt,,old,1,apt,", TESTHOST_OP_FAILED,
       "after the agent restarted, old 1 is still installed"},
      {"c8y-agent\t1:0.2.0-1\n", "140,c8y-agent,1:0.2.0-1,apt,",
       TESTHOST_OP_SUCCEEDED, ""},
      {"c8y-agent\t0.1.0-1\n", "140,c8y-agent,0.1.0-1,apt,", TESTHOST_OP_FAILED,
       "after the agent restarted, c8y-agent is at version 0.1.0-1, not 0.2.0 "
       "as requested"},
  };
  char *leftover = g_build_filename(f->state, "plugins", "software",
                                    "pkg-1-c8y-agent.deb", NULL);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    ptu_write_text(f->db, "c8y-agent\t0.1.0-1\nold\t1\n");
    interrupt_update(f, op, url);
    ptu_write_text(f->db, cases[i].db);
    testhost_set_config(f->h, "resume_wait", "1");
    load_fake_pm(f, NULL);
    g_assert_cmpint(resumed_outcome(f), ==, cases[i].state);
    g_assert_cmpstr(testhost_op_detail(f->h), ==, cases[i].why);
    /* Re-reported after the check (init reported once). */
    g_assert_cmpuint(testhost_count_lines(f->h, "140,"), ==, 2);
    g_assert_cmpuint(testhost_count_lines(f->h, cases[i].list), ==, 2);
    /* The interrupted install's package file is gone. */
    g_assert_false(g_file_test(leftover, G_FILE_TEST_EXISTS));
    testhost_free(f->h);
    f->h = testhost_new(DEV, f->state);
  }
  /* Nothing was installed or removed again. */
  g_assert_false(g_file_test(f->log, G_FILE_TEST_EXISTS));
  g_free(leftover);
}

/* dpkg may still be configuring the package when the new agent starts: the
 * check is repeated until it shows up. */
static void test_resumed_waits(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  interrupt_update(f, "528," DEV ",c8y-agent,0.2.0,,install", NULL);
  char *cnt = g_build_filename(f->dir, "count", NULL);
  char *body = g_strdup_printf(
      "n=$(cat '%s' 2>/dev/null || echo 0); echo $((n + 1)) > '%s'; "
      "[ \"$n\" -lt 2 ] || printf 'c8y-agent\\t0.2.0-1\\n'\n",
      cnt, cnt);
  char *list = ptu_sh_script(f->dir, "list.sh", body);
  g_free(body);
  testhost_set_config(f->h, "list_command", list);
  testhost_set_config(f->h, "type", "apt");
  testhost_set_config(f->h, "resume_wait", "60");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0); /* 1st list */
  g_assert_cmpint(resumed_outcome(f), ==, TESTHOST_OP_SUCCEEDED);
  char *n = ptu_read_text(cnt);
  /* init's list, a check that failed, one that passed, the report */
  g_assert_cmpstr(n, ==, "4\n");
  g_free(n);
  g_free(list);
  g_free(cnt);
}

typedef struct helper_fx {
  char *sock, *errlog, *state;
  ptu_priv *srv;
} helper_fx;

/* The plugin configured to use the privileged helper, which is served by
 * the real c8y-agent-priv script in dry-run mode (it prints the command it
 * would run). */
static void load_with_helper(fixture *f, helper_fx *x, const char *reply) {
  x->sock = g_build_filename(f->dir, "priv.sock", NULL);
  x->errlog = g_build_filename(f->dir, "priv.log", NULL);
  x->state = g_build_filename(f->dir, "state", NULL);
  x->srv = ptu_priv_start(x->sock, reply ? NULL : PRIV_HELPER, x->state, reply,
                          x->errlog);
  char *list = g_strdup_printf("cat '%s'", f->db);
  testhost_set_config(f->h, "list_command", list);
  testhost_set_config(f->h, "type", "apt");
  testhost_set_config(f->h, "privileged", "helper");
  testhost_set_config(f->h, "helper_socket", x->sock);
  /* Must not be used with the helper. */
  testhost_set_config(f->h, "install_command", "false");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_free(list);
}

static void helper_done(helper_fx *x) {
  ptu_priv_stop(x->srv);
  g_free(x->sock);
  g_free(x->errlog);
  g_free(x->state);
}

static void test_helper_install_remove(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "curl\t7.0\n");
  helper_fx x;
  load_with_helper(f, &x, NULL);
  g_assert_nonnull(testhost_find_log(f->h, "through the privileged helper"));
  g_assert_cmpint(testhost_run_operation(f->h,
                                         "528," DEV
                                         ",nginx,1.2-1,,install,jq,,,install,"
                                         "curl,,,delete",
                                         OP_WAIT_MS),
                  ==, TESTHOST_OP_SUCCEEDED);
  char *log = ptu_read_text_or_empty(x.errlog);
  g_assert_nonnull(
      strstr(log, "c8y-agent-priv: request: install nginx 1.2-1\n"));
  g_assert_nonnull(strstr(log, "c8y-agent-priv: request: install jq\n"));
  g_assert_nonnull(strstr(log, "c8y-agent-priv: request: remove curl\n"));
  g_assert_nonnull(strstr(log, "install finished with status 0"));
  g_free(log);
  helper_done(&x);
}

/* A downloaded package goes to the helper as install-file; the real helper
 * accepts the path the plugin uses (below <state>/plugins/software). */
static void test_helper_install_file(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  char *pstate = g_build_filename(f->state, "plugins", "software", NULL);
  char *src = g_build_filename(f->dir, "pkg.deb", NULL);
  ptu_write_text(src, "deb\n");
  testhost_enable_transfers(f->h);
  testhost_add_download(f->h, "https://t1.example/b/3", src);
  helper_fx x;
  load_with_helper(f, &x, NULL);
  g_assert_cmpint(
      testhost_run_operation(
          f->h, "528," DEV ",c8y-agent,0.2.0,https://t1.example/b/3,install",
          OP_WAIT_MS),
      ==, TESTHOST_OP_SUCCEEDED);
  char *log = ptu_read_text_or_empty(x.errlog);
  char *want = g_strdup_printf(
      "c8y-agent-priv: request: install-file %s/pkg-1-c8y-agent.deb\n", pstate);
  g_assert_nonnull(strstr(log, want));
  g_assert_nonnull(strstr(log, "install-file finished with status 0"));
  g_free(want);
  g_free(log);
  g_free(src);
  g_free(pstate);
  helper_done(&x);
}

static void test_helper_refuses(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  helper_fx x;
  load_with_helper(f, &x, NULL);
  char *pwned = g_build_filename(f->dir, "pwned", NULL);
  char *line = g_strdup_printf("528," DEV ",x;touch$IFS%s,1,,install", pwned);
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(f->h), "(exit 2)"));
  g_assert_nonnull(
      strstr(testhost_op_detail(f->h), "c8y-agent-priv: refused package name"));
  /* Whitespace never reaches the helper. */
  g_assert_cmpint(testhost_run_operation(f->h, "528," DEV ",\"a b\",1,,install",
                                         OP_WAIT_MS),
                  ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(f->h), "whitespace"));
  g_assert_false(g_file_test(pwned, G_FILE_TEST_EXISTS));
  g_free(line);
  g_free(pwned);
  helper_done(&x);
}

static void test_helper_failure_reason(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  helper_fx x;
  load_with_helper(f, &x,
                   "Reading package lists...\n"
                   "E: Unable to locate package nosuch\n"
                   "=c8y-agent-priv status 100\n");
  g_assert_cmpint(
      testhost_run_operation(f->h, "528," DEV ",nosuch,1,,install", OP_WAIT_MS),
      ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "install of nosuch 1 failed (exit 100): E: Unable to locate "
                  "package nosuch");
  char *log = ptu_read_text_or_empty(x.errlog);
  g_assert_cmpstr(log, ==, "install nosuch 1\n");
  g_free(log);
  helper_done(&x);
}

static void test_helper_unreachable(fixture *f, gconstpointer data) {
  (void)data;
  ptu_write_text(f->db, "");
  char *list = g_strdup_printf("cat '%s'", f->db);
  char *sock = g_build_filename(f->dir, "nobody.sock", NULL);
  testhost_set_config(f->h, "list_command", list);
  testhost_set_config(f->h, "type", "apt");
  testhost_set_config(f->h, "privileged", "helper");
  testhost_set_config(f->h, "helper_socket", sock);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpint(
      testhost_run_operation(f->h, "528," DEV ",a,1,,install", OP_WAIT_MS), ==,
      TESTHOST_OP_FAILED);
  g_assert_nonnull(
      strstr(testhost_op_detail(f->h), "cannot reach the privileged helper"));
  g_assert_nonnull(strstr(testhost_op_detail(f->h), "c8y-agent-priv.socket"));
  g_free(list);
  g_free(sock);
}

static void test_bad_privileged(fixture *f, gconstpointer data) {
  (void)data;
  testhost_set_config(f->h, "list_command", "true");
  testhost_set_config(f->h, "type", "apt");
  testhost_set_config(f->h, "privileged", "sudo");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
  g_assert_nonnull(testhost_find_log(f->h, "privileged: 'sudo'"));
}

/* privileged = auto (the default) with helper_socket at `sock`: does the
 * plugin choose the helper? */
static int auto_uses_helper(const char *sock) {
  testhost *h = testhost_new(DEV, NULL);
  testhost_set_config(h, "list_command", "true");
  testhost_set_config(h, "type", "apt");
  testhost_set_config(h, "helper_socket", sock);
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, 0);
  int r = testhost_find_log(h, "through the privileged helper") != NULL;
  testhost_free(h);
  return r;
}

/* Not root and the helper's socket exists: the helper; root, or no socket:
 * the configured commands. */
static void test_auto_not_root(fixture *f, gconstpointer data) {
  (void)data;
  char *sock = g_build_filename(f->dir, "priv.sock", NULL);
  char *missing = g_build_filename(f->dir, "missing.sock", NULL);
  char *log = g_build_filename(f->dir, "priv.log", NULL);
  ptu_priv *srv = ptu_priv_start(sock, NULL, NULL, "", log);
  g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
  if (geteuid() != 0) {
    g_assert_true(auto_uses_helper(sock));
    g_assert_false(auto_uses_helper(missing));
  } else {
    g_assert_false(auto_uses_helper(sock));
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
      if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
        _exit(2);
      _exit(auto_uses_helper(sock) && !auto_uses_helper(missing) ? 0 : 1);
    }
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
  }
  ptu_priv_stop(srv);
  g_free(sock);
  g_free(missing);
  g_free(log);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, fixture, NULL, fx_setup, fn, fx_teardown)
  ADD("/plugin/software/list/chunked", test_list_chunked);
  ADD("/plugin/software/list/empty", test_list_empty);
  ADD("/plugin/software/list/command-fails", test_list_command_fails);
  ADD("/plugin/software/init/bad-config", test_bad_config);
  ADD("/plugin/software/init/bad-timeout", test_bad_timeout);
  ADD("/plugin/software/update/install-delete", test_update_install_delete);
  ADD("/plugin/software/update/quoting", test_update_values_are_quoted);
  ADD("/plugin/software/update/stops-at-failure", test_update_stops_at_failure);
  ADD("/plugin/software/update/refuses-options", test_update_refuses_options);
  ADD("/plugin/software/init/untrusted-command", test_untrusted_command);
  ADD("/plugin/software/update/malformed", test_update_malformed);
  ADD("/plugin/software/update/cancelled", test_update_cancelled);
  ADD("/plugin/software/update/url-needs-download",
      test_update_url_needs_download);
  ADD("/plugin/software/init/bad-privileged", test_bad_privileged);
  ADD("/plugin/software/update/url-downloads", test_update_url_downloads);
  ADD("/plugin/software/update/url-download-fails",
      test_update_url_download_fails);
  ADD("/plugin/software/resumed/checks-versions", test_resumed_checks_versions);
  ADD("/plugin/software/resumed/waits", test_resumed_waits);
  ADD("/plugin/software/helper/install-remove", test_helper_install_remove);
  ADD("/plugin/software/helper/refuses", test_helper_refuses);
  ADD("/plugin/software/helper/install-file", test_helper_install_file);
  ADD("/plugin/software/helper/failure-reason", test_helper_failure_reason);
  ADD("/plugin/software/helper/unreachable", test_helper_unreachable);
  ADD("/plugin/software/helper/auto-not-root", test_auto_not_root);
#undef ADD
  return g_test_run();
}
