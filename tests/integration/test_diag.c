/* c8y-agent diag: the support bundle from the real binary, with the agent
 * stopped and with it running against the simulator. Known secrets are
 * planted in the configuration, a conf.d drop-in and the journal (a stand-in
 * journalctl first in PATH) and must not be found anywhere in the archive. */
#include "fixture.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PW "Sup3r-Secret-Pw!"
#define BOOT_PW "Bo0tstrap-Pw-99"
#define COMMENTED_PW "Commented-Secret-55"
#define TOKEN "tok-ABCDEF123456"
#define AES "k3yMaterial777x"
#define DROPIN_KEY "DropIn-Key-9090"
#define JWT_HEAD "eyJhbGciOiJIUzI1NiJ9"
#define JWT_SIG "c2lnbmF0dXJlX3NlY3JldA"
#define BOOT_CRED "BootCredPw42x"
#define PEM_BODY "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
#define RUN_PW "Run-Secret-8192"

static const char *const secrets[] = {
    PW,       BOOT_PW, COMMENTED_PW, TOKEN,    AES,   DROPIN_KEY,
    JWT_HEAD, JWT_SIG, BOOT_CRED,    PEM_BODY, RUN_PW};

static const char *const sections[] = {
    "SUMMARY.txt", "versions.txt", "config.txt", "check-config.txt",
    "status.txt",  "state.txt",    "journal.txt"};

/* What a journalctl of an agent that logged too much could print. */
static const char fake_journalctl[] =
    "#!/bin/sh\n"
    "echo \"$@\" > \"$(dirname \"$0\")/journalctl.args\"\n"
    "cat <<'EOF'\n"
    "2026-12-07T09:00:00+0000 vm c8y-agent[1]: login with password=" PW "\n"
    "2026-12-07T09:00:01+0000 vm c8y-agent[1]: GET /inventory "
    "Authorization: Bearer " JWT_HEAD ".eyJzdWIiOiJkZXYxIn0." JWT_SIG "\n"
    "2026-12-07T09:00:02+0000 vm c8y-agent[1]: s/dat 71," JWT_HEAD
    ".eyJ0ZW5hbnQiOiJ0MSJ9." JWT_SIG "\n"
    "2026-12-07T09:00:03+0000 vm c8y-agent[1]: the literal " PW
    " in free text\n"
    "2026-12-07T09:00:04+0000 vm c8y-agent[1]: s/dcr "
    "70,t1,device_dev1," BOOT_CRED "\n"
    "2026-12-07T09:00:05+0000 vm c8y-agent[1]: plugin said "
    "{\"api_token\": \"" TOKEN "\"}\n"
    "-----BEGIN PRIVATE KEY-----\n" PEM_BODY "\n"
    "-----END PRIVATE KEY-----\n"
    "2026-12-07T09:00:06+0000 vm c8y-agent[1]: still here\n"
    "EOF\n";

typedef struct run {
  gint status;
  char *out, *err;
} run;

static void run_free(run *r) {
  g_free(r->out);
  g_free(r->err);
}

/* c8y-agent with args, PATH led by bindir (nullable), or only bindir. */
static run run_agent_path(const char *bindir, gboolean only,
                          const char *const *args) {
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, (char *)g_getenv("C8Y_AGENT_BIN"));
  for (size_t i = 0; args[i]; i++)
    g_ptr_array_add(argv, (char *)args[i]);
  g_ptr_array_add(argv, NULL);
  char **env = g_get_environ();
  if (bindir) {
    char *path =
        only ? g_strdup(bindir)
             : g_strdup_printf("%s:%s", bindir, g_environ_getenv(env, "PATH"));
    env = g_environ_setenv(env, "PATH", path, TRUE);
    g_free(path);
  }
  env = g_environ_unsetenv(env, "C8Y_AGENT_CONFIG");
  run r = {.status = -1};
  GError *e = NULL;
  if (!g_spawn_sync(NULL, (char **)argv->pdata, env, 0, NULL, NULL, &r.out,
                    &r.err, &r.status, &e))
    g_error("spawn: %s", e->message);
  g_strfreev(env);
  g_ptr_array_free(argv, TRUE);
  return r;
}

static run run_agent(const char *bindir, const char *const *args) {
  return run_agent_path(bindir, FALSE, args);
}

/* Unpacks the archive into dir; returns the bundle's top directory. */
static char *unpack(const char *archive, const char *dir) {
  g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
  char *argv[] = {"tar", "-xzf", (char *)archive, "-C", (char *)dir, NULL};
  gint status = -1;
  g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             NULL, NULL, &status, NULL));
  g_assert_cmpint(status, ==, 0);
  GDir *d = g_dir_open(dir, 0, NULL);
  g_assert_nonnull(d);
  const char *name = g_dir_read_name(d);
  g_assert_nonnull(name);
  g_assert_true(g_str_has_prefix(name, "c8y-agent-diag-"));
  char *top = g_build_filename(dir, name, NULL);
  g_assert_null(g_dir_read_name(d)); /* one top directory */
  g_dir_close(d);
  return top;
}

static char *section(const char *top, const char *name) {
  char *p = g_build_filename(top, name, NULL);
  char *text = NULL;
  if (!g_file_get_contents(p, &text, NULL, NULL))
    g_error("the bundle has no %s", name);
  g_free(p);
  return text;
}

/* No planted secret in any file of the bundle. */
static void assert_no_secret(const char *top) {
  GDir *d = g_dir_open(top, 0, NULL);
  g_assert_nonnull(d);
  const char *name;
  size_t files = 0;
  while ((name = g_dir_read_name(d))) {
    char *text = section(top, name);
    for (size_t i = 0; i < G_N_ELEMENTS(secrets); i++)
      if (strstr(text, secrets[i]))
        g_error("%s of the bundle contains the secret '%s':\n%s", name,
                secrets[i], text);
    g_free(text);
    files++;
  }
  g_dir_close(d);
  g_assert_cmpuint(files, >=, G_N_ELEMENTS(sections));
}

static void write_file(const char *path, const char *text, int mode) {
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
  g_assert_cmpint(g_chmod(path, mode), ==, 0);
}

static void test_offline(void) {
  char *dir = g_dir_make_tmp("c8y-diag-XXXXXX", NULL);
  g_assert_nonnull(dir);
  char *state = g_build_filename(dir, "state", NULL);
  char *confd = g_build_filename(dir, "conf.d", NULL);
  char *bin = g_build_filename(dir, "bin", NULL);
  g_assert_cmpint(g_mkdir(state, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(confd, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(bin, 0700), ==, 0);
  char *conf = g_build_filename(dir, "agent.ini", NULL);
  char *ini = g_strdup_printf(
      "[c8y]\ntenant = t1\nuser = dev\npassword = " PW "\n"
      ";password = " COMMENTED_PW "\n"
      "bootstrap_password = " BOOT_PW "\n"
      "host = 127.0.0.1\nport = 1\ntls = false\n"
      "[device]\nid = dev1\n[agent]\nstate_dir = %s\nplugin_dir = %s\n"
      "[api]\nsocket = %s/api.sock\n"
      "[plugin.foo]\nauth_token = " TOKEN "\naes_key = " AES "\n"
      "key_file = /etc/x/key.pem\n",
      state, dir, dir);
  write_file(conf, ini, 0600);
  char *dropin = g_build_filename(confd, "10-extra.ini", NULL);
  write_file(dropin, "[plugin.bar]\napi_key = " DROPIN_KEY "\n", 0600);
  char *journal = g_build_filename(state, "operations.journal", NULL);
  write_file(journal, "{\"op\":1}\n{\"op\":2}\n", 0600);
  char *queue = g_build_filename(state, "queue-0.log", NULL);
  write_file(queue, "0123456789", 0600);
  char *jc = g_build_filename(bin, "journalctl", NULL);
  write_file(jc, fake_journalctl, 0700);
  char *out = g_build_filename(dir, "bundle.tar.gz", NULL);

  const char *args[] = {"-c", conf, "diag", "-o", out, "--lines", "7", NULL};
  run r = run_agent(bin, args);
  if (r.status != 0)
    g_error("diag exited %d: %s", r.status, r.err);
  char *printed = g_strconcat(out, "\n", NULL);
  g_assert_cmpstr(r.out, ==, printed); /* the archive's path on stdout */
  g_free(printed);
  struct stat st;
  g_assert_cmpint(g_stat(out, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 077, ==, 0); /* for the caller only */

  char *x = g_build_filename(dir, "x", NULL);
  char *top = unpack(out, x);
  for (size_t i = 0; i < G_N_ELEMENTS(sections); i++)
    g_free(section(top, sections[i]));
  char *plugins = section(top, "plugins.txt");
  g_assert_nonnull(strstr(plugins, "--list-plugins"));
  g_free(plugins);
  char *conn = section(top, "connect-test.txt");
  g_assert_nonnull(strstr(conn, "connect --test"));
  g_assert_nonnull(strstr(conn, "[FAIL] TCP"));
  g_free(conn);

  char *summary = section(top, "SUMMARY.txt");
  g_assert_nonnull(strstr(summary, "NOT COLLECTED  status.txt"));
  g_assert_nonnull(strstr(summary, "the agent is not running"));
  g_free(summary);

  char *cfg = section(top, "config.txt");
  g_assert_nonnull(strstr(cfg, "\npassword = <redacted>\n"));
  g_assert_nonnull(strstr(cfg, "\n;password = <redacted>\n"));
  g_assert_nonnull(strstr(cfg, "\nauth_token = <redacted>\n"));
  g_assert_nonnull(strstr(cfg, "\naes_key = <redacted>\n"));
  g_assert_nonnull(strstr(cfg, "\napi_key = <redacted>\n"));      /* conf.d */
  g_assert_nonnull(strstr(cfg, "\nkey_file = /etc/x/key.pem\n")); /* a path */
  g_assert_nonnull(strstr(cfg, "tenant = t1"));
  g_free(cfg);

  char *stats = section(top, "state.txt");
  g_assert_nonnull(strstr(stats, "operation journal: 2 entries"));
  g_assert_nonnull(strstr(stats, "queue: 1 file(s), 10 bytes"));
  g_assert_null(strstr(stats, "{\"op\"")); /* counted, not copied */
  g_free(stats);

  char *log = section(top, "journal.txt");
  g_assert_nonnull(strstr(log, "still here"));
  g_assert_nonnull(strstr(log, "password=<redacted>"));
  g_assert_nonnull(strstr(log, "Bearer <redacted>"));
  g_assert_nonnull(strstr(log, "(PEM private key)"));
  g_free(log);
  char *argsf = g_build_filename(bin, "journalctl.args", NULL);
  char *jargs = NULL;
  g_assert_true(g_file_get_contents(argsf, &jargs, NULL, NULL));
  g_assert_nonnull(strstr(jargs, "--lines=7"));
  g_assert_nonnull(strstr(jargs, "--unit=c8y-agent.service"));
  g_free(jargs);
  g_free(argsf);

  assert_no_secret(top);
  run_free(&r);

  /* Without journalctl the journal is named as not collected; so is the
   * connect test that was asked not to run. */
  g_unlink(jc);
  g_unlink(out);
  /* tar and the gzip it runs stay reachable */
  const char *keep[] = {"tar", "gzip"};
  for (size_t i = 0; i < G_N_ELEMENTS(keep); i++) {
    char *prog = g_find_program_in_path(keep[i]);
    char *link = g_build_filename(bin, keep[i], NULL);
    g_assert_nonnull(prog);
    g_assert_cmpint(symlink(prog, link), ==, 0);
    g_free(link);
    g_free(prog);
  }
  const char *args2[] = {"-c", conf, "diag", "-o", out, "--no-connect-test",
                         NULL};
  r = run_agent_path(bin, TRUE, args2); /* no journalctl in PATH */
  if (r.status != 0)
    g_error("diag exited %d: %s", r.status, r.err);
  fx_rm_rf(x);
  g_free(top);
  top = unpack(out, x);
  summary = section(top, "SUMMARY.txt");
  g_assert_nonnull(strstr(summary, "NOT COLLECTED  journal.txt"));
  g_assert_nonnull(strstr(summary, "journalctl not found"));
  g_assert_nonnull(strstr(summary, "NOT COLLECTED  connect-test.txt"));
  g_assert_nonnull(strstr(summary, "--no-connect-test"));
  g_free(summary);
  assert_no_secret(top);
  run_free(&r);

  fx_rm_rf(dir);
  g_free(top);
  g_free(x);
  g_free(out);
  g_free(jc);
  g_free(queue);
  g_free(journal);
  g_free(dropin);
  g_free(ini);
  g_free(conf);
  g_free(bin);
  g_free(confd);
  g_free(state);
  g_free(dir);
}

static void test_running(void) {
  fx f = {0};
  sim_options o = {.tenant = "t1",
                   .user = "device",
                   .password = RUN_PW,
                   .device_id = FX_DEVICE};
  char err[512];
  if (sim_start(&o, &f.s, err, sizeof err) != 0)
    g_error("simulator: %s", err);
  char *dir = g_dir_make_tmp("c8y-diag-XXXXXX", NULL);
  char *sock = g_build_filename(dir, "api.sock", NULL);
  char *extra = g_strdup_printf("[api]\nsocket = %s\n", sock);
  fx_make_agent(&f, RUN_PW, extra);
  fx_start_connected(&f);

  char *out = g_build_filename(dir, "bundle.tar.gz", NULL);
  const char *args[] = {"-c", agent_proc_config(f.a), "diag", "-o", out, NULL};
  run r = run_agent(NULL, args);
  if (r.status != 0)
    g_error("diag exited %d: %s", r.status, r.err);
  char *x = g_build_filename(dir, "x", NULL);
  char *top = unpack(out, x);
  char *status = section(top, "status.txt");
  g_assert_nonnull(strstr(status, "\nlink: up"));
  g_assert_nonnull(strstr(status, "queue measurement:"));
  g_free(status);
  char *json = section(top, "status.json");
  g_assert_nonnull(strstr(json, "\"link\""));
  g_free(json);
  g_free(section(top, "ops.txt"));
  char *summary = section(top, "SUMMARY.txt");
  g_assert_nonnull(strstr(summary, "collected      status.txt"));
  /* a connect test would have thrown the running agent off its session */
  g_assert_nonnull(strstr(summary, "NOT COLLECTED  connect-test.txt"));
  g_assert_nonnull(strstr(summary, "link is up"));
  g_free(summary);
  assert_no_secret(top);

  run_free(&r);
  fx_down(&f);
  fx_rm_rf(dir);
  g_free(top);
  g_free(x);
  g_free(out);
  g_free(extra);
  g_free(sock);
  g_free(dir);
}

static void test_usage(void) {
  const char *bad_lines[] = {"diag", "--lines", "0", NULL};
  run r = run_agent(NULL, bad_lines);
  g_assert_cmpint(r.status, ==, 2 << 8);
  g_assert_nonnull(strstr(r.err, "--lines 0"));
  run_free(&r);
  const char *bad_opt[] = {"diag", "--bogus", NULL};
  r = run_agent(NULL, bad_opt);
  g_assert_cmpint(r.status, ==, 2 << 8);
  g_assert_nonnull(strstr(r.err, "unknown argument '--bogus'"));
  run_free(&r);
  const char *help[] = {"diag", "--help", NULL};
  r = run_agent(NULL, help);
  g_assert_cmpint(r.status, ==, 0);
  g_assert_nonnull(strstr(r.out, "SUMMARY.txt"));
  run_free(&r);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/diag/offline", test_offline);
  g_test_add_func("/diag/running", test_running);
  g_test_add_func("/diag/usage", test_usage);
  return g_test_run();
}
