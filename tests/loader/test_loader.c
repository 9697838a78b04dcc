/* The plugin loader's refusals, with purpose-built bad plugins
 * (tests/loader/fixtures). Each case copies the fixtures it needs into its
 * own 0755 plugin dir, loads it with the real loader (config_load of a temp
 * ini, a registry and a memory outq) and checks the entry, the one log
 * line, the registry afterwards and whether init/fini ran. The /cli cases
 * run `c8y-agent --list-plugins` on the same kind of dir. */
#include "config.h"
#include "loader.h"
#include "log.h"
#include "outq.h"
#include "plugin_host.h"
#include "registry.h"

#include <c8y/plugin.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct fx {
  char *root, *plugdir, *statedir, *ini, *marks, *logfile;
  agent_config cfg;
  registry *reg;
  outq *q;
  upstream up;
  plugin_host host;
  plugin_set set;
  bool loaded;
  char *log; /* what the loader wrote to stderr */
} fx;

static void fx_setup(fx *f, gconstpointer data) {
  (void)data;
  memset(f, 0, sizeof *f);
  GError *err = NULL;
  f->root = g_dir_make_tmp("c8y-loader-XXXXXX", &err);
  g_assert_no_error(err);
  f->plugdir = g_build_filename(f->root, "plugins", NULL);
  f->statedir = g_build_filename(f->root, "state", NULL);
  f->ini = g_build_filename(f->root, "agent.ini", NULL);
  f->marks = g_build_filename(f->root, "marks", NULL);
  f->logfile = g_build_filename(f->root, "stderr", NULL);
  g_assert_cmpint(g_mkdir(f->plugdir, 0755), ==, 0);
  g_assert_cmpint(chmod(f->plugdir, 0755), ==, 0); /* whatever the umask */
  g_assert_cmpint(g_mkdir(f->statedir, 0755), ==, 0);
  g_setenv("C8Y_FIXTURE_LOG", f->marks, TRUE);
  f->reg = registry_new();
  g_assert_nonnull(f->reg);
}

static void rm_rf(const char *path) {
  GDir *d = g_dir_open(path, 0, NULL);
  if (d) {
    const char *name;
    while ((name = g_dir_read_name(d))) {
      char *p = g_build_filename(path, name, NULL);
      if (g_file_test(p, G_FILE_TEST_IS_DIR) &&
          !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
        rm_rf(p);
      else
        g_unlink(p);
      g_free(p);
    }
    g_dir_close(d);
  }
  g_rmdir(path);
}

static void fx_teardown(fx *f, gconstpointer data) {
  (void)data;
  if (f->loaded) {
    loader_stop_all(&f->set);
    loader_release_all(&f->set, f->reg);
    outq_close(f->q);
    config_free(&f->cfg);
  }
  g_assert_cmpuint(registry_producer_count(f->reg), ==, 0);
  g_assert_cmpuint(registry_handler_count(f->reg), ==, 0);
  registry_free(f->reg);
  g_unsetenv("C8Y_FIXTURE_LOG");
  chmod(f->plugdir, 0755);
  rm_rf(f->root);
  g_free(f->root);
  g_free(f->plugdir);
  g_free(f->statedir);
  g_free(f->ini);
  g_free(f->marks);
  g_free(f->logfile);
  g_free(f->log);
}

/* Copies fixture <name>.so into the plugin dir as <as> (mode 0755) and
 * returns the new path. */
static char *add_plugin_path(fx *f, const char *name, const char *as) {
  char *src = g_strdup_printf("%s/%s.so", C8Y_FIXTURE_DIR, name);
  char *dst = g_build_filename(f->plugdir, as ? as : name, NULL);
  if (!as) {
    char *with_so = g_strconcat(dst, ".so", NULL);
    g_free(dst);
    dst = with_so;
  }
  gchar *bytes = NULL;
  gsize len = 0;
  GError *err = NULL;
  g_file_get_contents(src, &bytes, &len, &err);
  g_assert_no_error(err);
  g_file_set_contents(dst, bytes, (gssize)len, &err);
  g_assert_no_error(err);
  g_assert_cmpint(chmod(dst, 0755), ==, 0);
  g_free(bytes);
  g_free(src);
  return dst;
}

static void add_plugin(fx *f, const char *name, const char *as) {
  g_free(add_plugin_path(f, name, as));
}

static void write_ini(fx *f, const char *extra) {
  char *text = g_strdup_printf("[agent]\nplugin_dir = %s\nstate_dir = %s\n%s",
                               f->plugdir, f->statedir, extra ? extra : "");
  GError *err = NULL;
  g_file_set_contents(f->ini, text, -1, &err);
  g_assert_no_error(err);
  g_free(text);
}

/* Loads the plugin dir through the loader API, capturing its log lines. */
static void load(fx *f, const char *extra_ini) {
  write_ini(f, extra_ini);
  char err[512] = "";
  if (config_load(f->ini, &f->cfg, err, sizeof err) != 0)
    g_error("config_load: %s", err);
  outq_options qo;
  outq_default_options(&qo, NULL);
  g_assert_cmpint(outq_open(&qo, &f->q, err, sizeof err), ==, 0);
  f->up = (upstream){.q = f->q, .reg = f->reg};
  f->host = (plugin_host){.cfg = &f->cfg,
                          .reg = f->reg,
                          .up = &f->up,
                          .device_id = "loader-test",
                          .state_dir = f->statedir};
  fflush(stderr);
  int saved = dup(2);
  int fd = open(f->logfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  g_assert_cmpint(fd, >=, 0);
  dup2(fd, 2);
  close(fd);
  loader_load_all(&f->host, f->cfg.plugin_dir, false, &f->set);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  f->loaded = true;
  g_assert_true(g_file_get_contents(f->logfile, &f->log, NULL, NULL));
  g_test_message("loader log:\n%s", f->log);
}

static char *marks(fx *f) {
  char *text = NULL;
  if (!g_file_get_contents(f->marks, &text, NULL, NULL))
    text = g_strdup("");
  return text;
}

static const loader_entry *entry(fx *f, const char *file) {
  char *path = g_build_filename(f->plugdir, file, NULL);
  const loader_entry *found = NULL;
  for (size_t i = 0; i < f->set.nentries; i++)
    if (strcmp(f->set.entries[i].file, path) == 0)
      found = &f->set.entries[i];
  g_free(path);
  if (!found)
    g_error("no loader entry for %s", file);
  return found;
}

static c8y_plugin *loaded_plugin(fx *f, const char *name) {
  for (size_t i = 0; i < f->set.n; i++)
    if (strcmp(f->set.plugins[i]->name, name) == 0)
      return f->set.plugins[i];
  return NULL;
}

static size_t count_lines_with(const char *text, const char *a, const char *b) {
  size_t n = 0;
  char **lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++)
    if (strstr(*l, a) && (!b || strstr(*l, b)))
      n++;
  g_strfreev(lines);
  return n;
}

/* The file was refused with a reason containing `why`, and the log has
 * exactly one line "plugin <path> refused: <reason>". */
static void assert_refused(fx *f, const char *file, const char *why) {
  const loader_entry *e = entry(f, file);
  g_assert_false(e->loaded);
  g_assert_nonnull(e->reason);
  if (!strstr(e->reason, why))
    g_error("%s: reason '%s' does not contain '%s'", file, e->reason, why);
  char *line = g_strdup_printf("plugin %s refused: %s", e->file, e->reason);
  g_assert_cmpuint(count_lines_with(f->log, line, NULL), ==, 1);
  g_assert_cmpuint(count_lines_with(f->log, e->file, "refused"), ==, 1);
  g_free(line);
}

static void assert_no_registrations(fx *f) {
  g_assert_cmpuint(registry_producer_count(f->reg), ==, 0);
  g_assert_cmpuint(registry_handler_count(f->reg), ==, 0);
  g_assert_cmpuint(registry_message_count(f->reg), ==, 0);
  g_assert_cmpuint(registry_child_count(f->reg), ==, 0);
}

/* ---- plugins that load ---- */

static void test_good(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  load(f, NULL);
  const loader_entry *e = entry(f, "good.so");
  g_assert_true(e->loaded);
  g_assert_cmpstr(e->name, ==, "good");
  g_assert_cmpstr(e->version, ==, "1.0");
  g_assert_null(e->reason);
  c8y_plugin *p = loaded_plugin(f, "good");
  g_assert_nonnull(p);
  reg_handler *h = registry_find_handler(f->reg, "510");
  g_assert_nonnull(h);
  g_assert_true(h->plugin == p);
  g_assert_cmpstr(h->fragment, ==, "c8y_Restart");
  g_assert_cmpuint(registry_producer_count(f->reg), ==, 1);
  g_assert_cmpstr(registry_producer_at(f->reg, 0)->name, ==, "tick");
  g_assert_true(strstr(f->log, "plugin good 1.0 loaded from"));
  g_assert_null(strstr(f->log, "refused"));
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "init good\n");
  g_free(m);
  loader_stop_all(&f->set);
  m = marks(f);
  g_assert_cmpstr(m, ==, "init good\nfini good\n");
  g_free(m);
  loader_release_all(&f->set, f->reg);
  assert_no_registrations(f);
  outq_close(f->q);
  config_free(&f->cfg);
  f->loaded = false;
}

/* A 1.0 plugin (minor 0, the 1.0 descriptor size) keeps loading whatever
 * minor this agent has. */
static void test_minor0(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "minor0", NULL);
  load(f, NULL);
  g_assert_true(entry(f, "minor0.so")->loaded);
  g_assert_nonnull(loaded_plugin(f, "minor0"));
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "init minor0\n");
  g_free(m);
}

/* ---- refusals before init ---- */

typedef struct refusal {
  const char *fixture;
  const char *why;
} refusal;

static void test_refused_early(fx *f, gconstpointer data) {
  const refusal *r = data;
  add_plugin(f, r->fixture, NULL);
  add_plugin(f, "good", NULL); /* a bad plugin never stops the others */
  load(f, NULL);
  char *file = g_strconcat(r->fixture, ".so", NULL);
  assert_refused(f, file, r->why);
  g_free(file);
  g_assert_true(entry(f, "good.so")->loaded);
  g_assert_cmpuint(f->set.n, ==, 1);
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "init good\n"); /* the refused one never ran */
  g_free(m);
}

static const refusal r_nosym = {"nosym", "not a c8y-agent plugin (no "
                                         "c8y_plugin_info_v1 symbol)"};
static const refusal r_major2 = {
    "major2", "built for plugin ABI major 2; this agent supports 1"};
static const refusal r_v2only = {
    "v2only", "built for plugin ABI 2; this agent supports ABI 1"};
static const refusal r_badname = {
    "badname", "invalid plugin name 'Bad-Name' (want [a-z0-9_], 1-32 chars)"};
static const refusal r_truncated = {"truncated",
                                    "plugin descriptor is truncated"};
static const refusal r_noinit = {"noinit",
                                 "plugin 'noinit' has no init function"};
static const refusal r_undef = {"undef", "dlopen failed: "};

static void test_newer_minor(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "newminor", NULL);
  load(f, NULL);
  char *why = g_strdup_printf("needs a newer agent (ABI 1.%d, agent has 1.%d)",
                              C8Y_ABI_MINOR + 1, C8Y_ABI_MINOR);
  assert_refused(f, "newminor.so", why);
  g_free(why);
  g_assert_cmpuint(f->set.n, ==, 0);
}

static void test_undefined_symbol(fx *f, gconstpointer data) {
  test_refused_early(f, &r_undef);
  g_assert_nonnull(
      strstr(entry(f, "undef.so")->reason, "c8y_fixture_missing_function"));
  /* Named by its file, not by the descriptor it was loaded through. */
  char *named = g_strdup_printf("dlopen failed: %s/undef.so: ", f->plugdir);
  g_assert_nonnull(strstr(entry(f, "undef.so")->reason, named));
  g_free(named);
}

static void test_duplicate_name(fx *f, gconstpointer data) {
  (void)data;
  char *first = add_plugin_path(f, "good", "a_good.so");
  add_plugin(f, "good", "b_good.so");
  load(f, NULL);
  g_assert_true(entry(f, "a_good.so")->loaded);
  char *why =
      g_strdup_printf("plugin name 'good' is already taken by %s", first);
  assert_refused(f, "b_good.so", why);
  g_free(why);
  g_assert_cmpuint(f->set.n, ==, 1);
  g_assert_cmpuint(registry_producer_count(f->reg), ==, 1);
  g_assert_true(registry_find_handler(f->reg, "510")->plugin ==
                f->set.plugins[0]);
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "init good\n");
  g_free(m);
  g_free(first);
}

static void test_file_mode(fx *f, gconstpointer data) {
  unsigned mode = GPOINTER_TO_UINT(data);
  char *path = add_plugin_path(f, "good", NULL);
  g_assert_cmpint(chmod(path, mode), ==, 0);
  load(f, NULL);
  assert_refused(f, "good.so",
                 mode & 002 ? "the file is world-writable"
                            : "the file is group-writable");
  g_assert_cmpuint(f->set.n, ==, 0);
  char *m = marks(f);
  g_assert_cmpstr(m, ==, ""); /* never dlopened, never initialised */
  g_free(m);
  g_free(path);
}

static void test_dir_mode(fx *f, gconstpointer data) {
  unsigned mode = GPOINTER_TO_UINT(data);
  add_plugin(f, "good", NULL);
  g_assert_cmpint(chmod(f->plugdir, mode), ==, 0);
  load(f, NULL);
  g_assert_cmpuint(f->set.n, ==, 0);
  g_assert_cmpuint(f->set.nentries, ==, 0);
  char *line = g_strdup_printf(
      "plugin dir %s %s; refusing to load any plugin from it", f->plugdir,
      mode & 002 ? "is world-writable" : "is group-writable");
  g_assert_cmpuint(count_lines_with(f->log, line, NULL), ==, 1);
  g_free(line);
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "");
  g_free(m);
}

/* A writable directory above the plugin dir lets its writer swap the
 * whole plugin dir: nothing loads. */
static void test_parent_dir_mode(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  g_assert_cmpint(chmod(f->root, 0775), ==, 0);
  load(f, NULL);
  chmod(f->root, 0700);
  g_assert_cmpuint(f->set.n, ==, 0);
  g_assert_nonnull(f->set.dir_refused);
  char *line = g_strdup_printf("plugin dir %s: its parent directory %s is "
                               "group-writable; refusing to load any plugin",
                               f->plugdir, f->root);
  g_assert_cmpuint(count_lines_with(f->log, line, NULL), ==, 1);
  g_free(line);
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "");
  g_free(m);
}

/* A symlink in the plugin dir is not followed (its target could be
 * anywhere, and swapped at any time); the real files still load. */
static void test_symlink(fx *f, gconstpointer data) {
  (void)data;
  char *target = g_build_filename(f->root, "elsewhere.so", NULL);
  char *src = add_plugin_path(f, "good", "real.so");
  g_assert_cmpint(rename(src, target), ==, 0);
  char *link = g_build_filename(f->plugdir, "linked.so", NULL);
  g_assert_cmpint(symlink(target, link), ==, 0);
  add_plugin(f, "minor0", NULL);
  load(f, NULL);
  assert_refused(f, "linked.so", "is a symbolic link");
  g_assert_true(entry(f, "minor0.so")->loaded);
  g_assert_cmpuint(f->set.n, ==, 1);
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "init minor0\n");
  g_free(m);
  g_free(target);
  g_free(src);
  g_free(link);
}

/* ---- refusals during init, with rollback ---- */

static void test_init_failure(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  add_plugin(f, "initfail", NULL);
  load(f, NULL);
  assert_refused(f, "initfail.so", "init failed: I/O failure");
  /* Everything initfail registered is gone; good's registrations stay. */
  c8y_plugin *good = loaded_plugin(f, "good");
  g_assert_nonnull(good);
  g_assert_null(loaded_plugin(f, "initfail"));
  g_assert_cmpuint(registry_producer_count(f->reg), ==, 1);
  g_assert_true(registry_producer_at(f->reg, 0)->plugin == good);
  g_assert_cmpuint(registry_handler_count(f->reg), ==, 1);
  g_assert_true(registry_find_handler(f->reg, "510")->plugin == good);
  g_assert_null(registry_find_handler(f->reg, "513"));
  g_assert_null(registry_find_handler(f->reg, "515"));
  g_assert_null(registry_find_message(f->reg, "fx_xid", "901"));
  g_assert_cmpuint(registry_message_count(f->reg), ==, 0);
  g_assert_cmpuint(registry_child_count(f->reg), ==, 0);
  g_assert_false(registry_has_child(f->reg, "fx-child"));
  /* A failed init is not followed by fini. */
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "init good\ninit initfail\n");
  g_free(m);
}

static void test_template_conflict(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "claim_a", NULL);
  add_plugin(f, "claim_b", NULL);
  load(f, NULL);
  g_assert_true(entry(f, "claim_a.so")->loaded);
  assert_refused(f, "claim_b.so",
                 "template 511 is already handled by plugin claim_a");
  c8y_plugin *a = loaded_plugin(f, "claim_a");
  g_assert_nonnull(a);
  g_assert_null(loaded_plugin(f, "claim_b"));
  reg_handler *h = registry_find_handler(f->reg, "511");
  g_assert_nonnull(h);
  g_assert_true(h->plugin == a);
  /* claim_b's other registrations were rolled back. */
  g_assert_null(registry_find_handler(f->reg, "510"));
  g_assert_cmpuint(registry_handler_count(f->reg), ==, 1);
  g_assert_cmpuint(registry_producer_count(f->reg), ==, 1);
  g_assert_true(registry_producer_at(f->reg, 0)->plugin == a);
  g_assert_cmpuint(registry_message_count(f->reg), ==, 0);
  g_assert_cmpuint(registry_child_count(f->reg), ==, 0);
  g_assert_null(registry_find_message(f->reg, "fx_xid", "901"));
  /* claim_b's init returned OK (it ignored the error), so it may hold
   * resources: the loader must have called its fini. */
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "init claim_a\ninit claim_b\nfini claim_b\n");
  g_free(m);
}

/* Registration after init returns C8Y_ESTATE and changes nothing, except
 * add_child, which an ABI 1.2 plugin may call at any time (gateways find
 * their devices at run time). */
static void test_late_registration(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  load(f, NULL);
  c8y_plugin *p = loaded_plugin(f, "good");
  g_assert_nonnull(p);
  g_assert_false(p->registering);
  g_assert_cmpuint(registry_producer_count(f->reg), ==, 1);
  reg_producer *prod = registry_producer_at(f->reg, 0);
  /* The fixture's producer tries add_producer, add_operation,
   * add_message_handler and add_child; it returns 100 + the index of the
   * first one that was not refused with C8Y_ESTATE. */
  g_assert_cmpint(prod->fn(p, NULL, prod->user_data), ==, 103);
  g_assert_cmpuint(registry_producer_count(f->reg), ==, 1);
  g_assert_cmpuint(registry_handler_count(f->reg), ==, 1);
  g_assert_cmpuint(registry_message_count(f->reg), ==, 0);
  g_assert_cmpuint(registry_child_count(f->reg), ==, 1);
  g_assert_true(registry_owns_child(f->reg, p, "late-child"));
  g_assert_null(registry_find_handler(f->reg, "519"));
}

/* ---- configuration ---- */

static void test_disabled(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  add_plugin(f, "minor0", NULL);
  load(f, "[plugin.good]\nenabled = false\n");
  const loader_entry *e = entry(f, "good.so");
  g_assert_false(e->loaded);
  g_assert_cmpstr(e->reason, ==, "disabled in the configuration");
  g_assert_true(entry(f, "minor0.so")->loaded);
  g_assert_null(loaded_plugin(f, "good"));
  assert_no_registrations(f); /* minor0 registers nothing */
  g_assert_cmpuint(count_lines_with(f->log, "plugin good (", "disabled"), ==,
                   1);
  g_assert_null(strstr(f->log, "refused"));
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "init minor0\n"); /* good's init never ran */
  g_free(m);
}

static void test_enabled_not_bool(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  /* [agent] takes lines 1-3 of the ini: enabled is on line 5. */
  load(f, "[plugin.good]\nenabled = maybe\n");
  char *why =
      g_strdup_printf("%s:5: [plugin.good] enabled: not a boolean", f->ini);
  assert_refused(f, "good.so", why);
  g_free(why);
  char *m = marks(f);
  g_assert_cmpstr(m, ==, "");
  g_free(m);
}

static void test_unknown_key(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  load(f, "[plugin.good]\ninterval = 5\nintreval = 6\nenabled = yes\n");
  g_assert_true(entry(f, "good.so")->loaded);
  g_assert_cmpuint(registry_producer_at(f->reg, 0)->interval_ms, ==, 5000);
  char *line = g_strdup_printf("%s:6: [plugin.good] intreval: unknown key "
                               "(plugin good never read it); did you mean "
                               "'interval'?",
                               f->ini);
  g_assert_cmpuint(count_lines_with(f->log, line, NULL), ==, 1);
  g_free(line);
  /* Read keys and the host's own key are not reported. */
  g_assert_cmpuint(count_lines_with(f->log, "unknown key", NULL), ==, 1);
}

/* ---- the api table itself ---- */

#define API_FIELDS(X)                                                          \
  X(status_str)                                                                \
  X(log)                                                                       \
  X(config_string)                                                             \
  X(config_int)                                                                \
  X(config_bool)                                                               \
  X(add_producer)                                                              \
  X(add_operation)                                                             \
  X(add_message_handler)                                                       \
  X(add_child)                                                                 \
  X(batch_add)                                                                 \
  X(batch_set_time)                                                            \
  X(batch_set_type)                                                            \
  X(batch_set_child)                                                           \
  X(send_event)                                                                \
  X(raise_alarm)                                                               \
  X(clear_alarm)                                                               \
  X(send_static)                                                               \
  X(send_custom)                                                               \
  X(op_template)                                                               \
  X(op_fragment)                                                               \
  X(op_device)                                                                 \
  X(op_field_count)                                                            \
  X(op_field)                                                                  \
  X(op_succeed)                                                                \
  X(op_succeed_params)                                                         \
  X(op_fail)                                                                   \
  X(op_cancelled)                                                              \
  X(op_complete_on_reboot)                                                     \
  X(msg_id)                                                                    \
  X(msg_field_count)                                                           \
  X(msg_field)                                                                 \
  X(device_id)                                                                 \
  X(state_dir)                                                                 \
  X(download)                                                                  \
  X(upload)                                                                    \
  X(op_resume_after_restart)                                                   \
  X(op_resumed)                                                                \
  X(op_rebooted)                                                               \
  X(add_child_operation)                                                       \
  X(add_fragment_operation)                                                    \
  X(add_device_operation)                                                      \
  X(op_id)                                                                     \
  X(op_json)                                                                   \
  X(op_json_value)                                                             \
  X(op_cancel_reason)                                                          \
  X(remove_child)                                                              \
  X(batch_begin)                                                               \
  X(batch_commit)                                                              \
  X(batch_discard)                                                             \
  X(set_health)                                                                \
  X(platform_auth)                                                             \
  X(add_template_operation)                                                    \
  X(config_origin)
/* Declared 1.2 slots that other parts of the agent fill as they land: they
 * move to API_FIELDS then. */
#define API_FIELDS_PENDING(X)

static void test_api_table(void) {
  const c8y_api *api = plugin_host_api();
  g_assert_cmpuint(api->abi_major, ==, C8Y_ABI_MAJOR);
  g_assert_cmpuint(api->abi_minor, ==, C8Y_ABI_MINOR);
  g_assert_cmpuint(api->size, ==, sizeof(c8y_api));
  size_t n = 0;
#define CHECK(field)                                                           \
  if (!C8Y_API_HAS(api, field))                                                \
    g_error("the agent's c8y_api lacks " #field);                              \
  n++;
  API_FIELDS(CHECK)
#undef CHECK
#define COUNT(field) n++;
  API_FIELDS_PENDING(COUNT)
#undef COUNT
  /* Every pointer slot after the header is listed above. */
  g_assert_cmpuint(offsetof(c8y_api, status_str) + n * sizeof(void (*)(void)),
                   ==, sizeof(c8y_api));
}

/* ---- c8y-agent --list-plugins ---- */

static int run_list(fx *f, char **out) {
  const char *bin = g_getenv("C8Y_AGENT_BIN");
  if (!bin)
    g_error("C8Y_AGENT_BIN is not set (run through ctest)");
  write_ini(f, NULL);
  char *argv[] = {(char *)bin, "--list-plugins", "-c", f->ini, NULL};
  char *err = NULL;
  int status = -1;
  GError *gerr = NULL;
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, out, &err,
               &status, &gerr);
  g_assert_no_error(gerr);
  g_test_message("stdout:\n%s\nstderr:\n%s", *out, err);
  g_free(err);
  g_assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

/* `refused  <name> <version> <path>` followed by `reason: <why>`. */
static void assert_listed_refused(fx *f, const char *out, const char *file,
                                  const char *why) {
  char *path = g_build_filename(f->plugdir, file, NULL);
  char **lines = g_strsplit(out, "\n", -1);
  bool ok = false;
  for (char **l = lines; *l && !ok; l++)
    if (g_str_has_prefix(*l, "refused") && g_str_has_suffix(*l, path) && l[1] &&
        strstr(l[1], "reason: ") && strstr(l[1], why))
      ok = true;
  g_strfreev(lines);
  if (!ok)
    g_error("--list-plugins does not show %s refused with '%s'", file, why);
  g_free(path);
}

static void test_cli_refusals(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  add_plugin(f, "nosym", NULL);
  add_plugin(f, "major2", NULL);
  add_plugin(f, "v2only", NULL);
  add_plugin(f, "newminor", NULL);
  add_plugin(f, "badname", NULL);
  add_plugin(f, "truncated", NULL);
  add_plugin(f, "undef", NULL);
  add_plugin(f, "initfail", NULL);
  add_plugin(f, "claim_a", NULL);
  add_plugin(f, "claim_b", NULL);
  add_plugin(f, "good", "z_good.so");
  char *ww = add_plugin_path(f, "minor0", "ww.so");
  g_assert_cmpint(chmod(ww, 0666), ==, 0);
  g_free(ww);
  char *out = NULL;
  g_assert_cmpint(run_list(f, &out), ==, 1);
  g_assert_true(g_str_has_prefix(out, "plugin dir: "));
  char *p = g_build_filename(f->plugdir, "good.so", NULL);
  char **lines = g_strsplit(out, "\n", -1);
  bool good_ok = false;
  for (char **l = lines; *l; l++)
    if (g_str_has_prefix(*l, "loaded") && strstr(*l, " good ") &&
        g_str_has_suffix(*l, p))
      good_ok = true;
  g_strfreev(lines);
  g_free(p);
  g_assert_true(good_ok);
  g_assert_nonnull(strstr(out, "operation 510 c8y_Restart"));
  g_assert_nonnull(strstr(out, "producer tick every 1000 ms"));
  assert_listed_refused(f, out, "nosym.so", "no c8y_plugin_info_v1 symbol");
  assert_listed_refused(f, out, "major2.so", "ABI major 2");
  assert_listed_refused(f, out, "v2only.so", "built for plugin ABI 2");
  assert_listed_refused(f, out, "newminor.so", "needs a newer agent");
  assert_listed_refused(f, out, "badname.so", "invalid plugin name");
  assert_listed_refused(f, out, "truncated.so", "truncated");
  assert_listed_refused(f, out, "undef.so", "c8y_fixture_missing_function");
  assert_listed_refused(f, out, "initfail.so", "init failed: I/O failure");
  assert_listed_refused(f, out, "claim_b.so",
                        "template 511 is already handled by plugin claim_a");
  assert_listed_refused(f, out, "z_good.so", "already taken");
  assert_listed_refused(f, out, "ww.so", "world-writable");
  g_free(out);
}

/* --check-config loads the plugins: a section nobody owns and a key nobody
 * reads fail it, each with file:line and the likely intent. */
static void test_cli_check_config(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  const char *bin = g_getenv("C8Y_AGENT_BIN");
  write_ini(f, "[plugin.good]\ninterval = 5\n[plugin.goood]\nx = 1\n");
  char *argv[] = {(char *)bin, "--check-config", "-c", f->ini, NULL};
  char *out = NULL, *err = NULL;
  int status = -1;
  GError *gerr = NULL;
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
               &status, &gerr);
  g_assert_no_error(gerr);
  g_test_message("stdout:\n%s\nstderr:\n%s", out, err);
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 1);
  char *want = g_strdup_printf("%s:7: [plugin.goood]: no plugin 'goood' in %s; "
                               "did you mean [plugin.good]?",
                               f->ini, f->plugdir);
  g_assert_nonnull(strstr(err, want));
  g_free(want);
  g_free(out);
  g_free(err);

  /* A misspelt key of an existing plugin fails it too. */
  write_ini(f, "[plugin.good]\nintervall = 5\n");
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
               &status, &gerr);
  g_assert_no_error(gerr);
  g_assert_cmpint(WEXITSTATUS(status), ==, 1);
  g_assert_nonnull(strstr(err, "intervall: unknown key"));
  g_assert_nonnull(strstr(err, "did you mean 'interval'?"));
  g_free(out);
  g_free(err);

  /* Clean sections pass. */
  write_ini(f, "[plugin.good]\ninterval = 5\n");
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
               &status, &gerr);
  g_assert_no_error(gerr);
  g_test_message("stdout:\n%s\nstderr:\n%s", out, err);
  g_assert_cmpint(WEXITSTATUS(status), ==, 0);
  g_free(out);
  g_free(err);
}

static void test_cli_all_load(fx *f, gconstpointer data) {
  (void)data;
  add_plugin(f, "good", NULL);
  add_plugin(f, "claim_a", NULL);
  add_plugin(f, "minor0", NULL);
  char *out = NULL;
  g_assert_cmpint(run_list(f, &out), ==, 0);
  g_assert_null(strstr(out, "refused"));
  g_assert_cmpuint(count_lines_with(out, "loaded", NULL), ==, 3);
  g_assert_nonnull(strstr(out, "operation 511 c8y_Command"));
  g_free(out);
}

/* ---- crash attribution and quarantine (the real daemon) ---- */

typedef struct run_result {
  bool signaled;
  int code; /* exit status, or the signal */
  char *log;
} run_result;

/* Runs `c8y-agent -c ini` with stderr to a file. When `stop_on` appears in
 * the log the agent gets SIGTERM; either way it is reaped within 20 s. */
static run_result run_agent(fx *f, const char *stop_on) {
  const char *bin = g_getenv("C8Y_AGENT_BIN");
  if (!bin)
    g_error("C8Y_AGENT_BIN is not set (run through ctest)");
  static int runs;
  char *logname = g_strdup_printf("agent-%d.log", ++runs);
  char *logpath = g_build_filename(f->root, logname, NULL);
  g_free(logname);
  /* A sanitizer build must let the fault through, as a release build does
   * (ASan's and TSan's own SEGV handlers would report and exit instead). */
  const char *asan = g_getenv("ASAN_OPTIONS");
  char *asan_env =
      g_strdup_printf("%s%shandle_segv=0", asan ? asan : "", asan ? ":" : "");
  const char *tsan = g_getenv("TSAN_OPTIONS");
  char *tsan_env =
      g_strdup_printf("%s%shandle_segv=0", tsan ? tsan : "", tsan ? ":" : "");
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    setenv("ASAN_OPTIONS", asan_env, 1);
    setenv("TSAN_OPTIONS", tsan_env, 1);
    execl(bin, bin, "-c", f->ini, (char *)NULL);
    _exit(127);
  }
  g_free(asan_env);
  g_free(tsan_env);
  run_result r = {0};
  int status = 0;
  bool termed = false;
  gint64 end = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid)
      break;
    gchar *text = NULL;
    if (!termed && stop_on && g_file_get_contents(logpath, &text, NULL, NULL) &&
        strstr(text, stop_on)) {
      kill(pid, SIGTERM);
      termed = true;
    }
    g_free(text);
    if (g_get_monotonic_time() > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      g_error("the agent neither crashed nor stopped within 20 s");
    }
    g_usleep(20 * 1000); /* polling a child: bounded by `end` */
  }
  r.signaled = WIFSIGNALED(status);
  r.code = r.signaled ? WTERMSIG(status) : WEXITSTATUS(status);
  g_assert_true(g_file_get_contents(logpath, &r.log, NULL, NULL));
  g_test_message("agent %s %d, log:\n%s",
                 r.signaled ? "killed by signal" : "exit", r.code, r.log);
  g_free(logpath);
  return r;
}

static void test_quarantine(fx *f, gconstpointer data) {
  (void)data;
  char *crashy = add_plugin_path(f, "crashy", NULL);
  add_plugin(f, "good", NULL);
  /* No broker on port 1: the producers run all the same. */
  write_ini(f, "[c8y]\nhost = 127.0.0.1\nport = 1\n");
  for (int i = 1; i <= 3; i++) {
    run_result r = run_agent(f, NULL);
    g_assert_true(r.signaled);
    g_assert_cmpint(r.code, ==, SIGSEGV);
    if (i > 1) {
      /* The previous crash is named on the next start. */
      char *want = g_strdup_printf("the previous run died of SIGSEGV in plugin "
                                   "crashy (%s) during producer boom",
                                   crashy);
      g_assert_nonnull(strstr(r.log, want));
      g_free(want);
      char *n = g_strdup_printf("crash %d of 3", i - 1);
      g_assert_nonnull(strstr(r.log, n));
      g_free(n);
    }
    g_free(r.log);
  }
  /* The fourth start runs without it and says why. */
  /* systemd hears it too (STATUS=, see `systemctl status`). */
  char *sock_path = g_build_filename(f->root, "notify.sock", NULL);
  int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  g_strlcpy(sa.sun_path, sock_path, sizeof sa.sun_path);
  g_assert_cmpint(bind(sock, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  g_setenv("NOTIFY_SOCKET", sock_path, TRUE);
  run_result r = run_agent(f, " started: device ");
  g_unsetenv("NOTIFY_SOCKET");
  GString *states = g_string_new("");
  char dgram[512];
  ssize_t got;
  while ((got = recv(sock, dgram, sizeof dgram - 1, 0)) > 0) {
    dgram[got] = '\0';
    g_string_append_printf(states, "%s\n", dgram);
  }
  close(sock);
  g_assert_nonnull(strstr(states->str, "STATUS=connecting; quarantined "
                                       "plugins: crashy"));
  g_string_free(states, TRUE);
  g_free(sock_path);
  g_assert_false(r.signaled);
  g_assert_cmpint(r.code, ==, 0);
  g_assert_nonnull(strstr(r.log, "crashed the agent 3 times in a row: "
                                 "quarantined"));
  char *refused = g_strdup_printf(
      "plugin %s refused: quarantined: it crashed the agent 3 times in a row "
      "(last: producer boom (SIGSEGV)); replace the file or run c8y-agent "
      "--clear-quarantine crashy",
      crashy);
  g_assert_nonnull(strstr(r.log, refused));
  g_assert_nonnull(strstr(r.log, "plugin good 1.0 loaded"));
  g_free(r.log);
  /* ...and tells the platform: a major alarm waits in the durable queue. */
  char *q = g_build_filename(f->statedir, "queue", "queue-1.log", NULL);
  gchar *qtext = NULL;
  gsize qlen = 0;
  g_assert_true(g_file_get_contents(q, &qtext, &qlen, NULL));
  static const char alarm[] =
      "302,c8y_PluginQuarantined,Plugin crashy quarantined: it crashed";
  g_assert_nonnull(memmem(qtext, qlen, alarm, sizeof alarm - 1));
  g_free(qtext);
  g_free(q);

  char *out = NULL;
  g_assert_cmpint(run_list(f, &out), ==, 1);
  g_assert_nonnull(strstr(out, "quarantined crashy"));
  g_assert_nonnull(strstr(out, "reason: quarantined: it crashed"));
  g_free(out);

  /* A new file (another mtime) lifts the quarantine. */
  char *entry_path =
      g_build_filename(f->statedir, "quarantine", "crashy", NULL);
  gchar *saved = NULL;
  gsize saved_len = 0;
  g_assert_true(g_file_get_contents(entry_path, &saved, &saved_len, NULL));
  struct timespec ts[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
  g_assert_cmpint(utimensat(AT_FDCWD, crashy, ts, 0), ==, 0);
  g_assert_cmpint(run_list(f, &out), ==, 0);
  g_assert_null(strstr(out, "quarantined"));
  g_free(out);
  g_assert_false(g_file_test(entry_path, G_FILE_TEST_EXISTS));

  /* So does the operator. */
  g_assert_true(
      g_file_set_contents(entry_path, saved, (gssize)saved_len, NULL));
  const char *bin = g_getenv("C8Y_AGENT_BIN");
  char *argv[] = {(char *)bin, "--clear-quarantine", "crashy", "-c", f->ini,
                  NULL};
  int status = -1;
  GError *gerr = NULL;
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, NULL, NULL,
               &status, &gerr);
  g_assert_no_error(gerr);
  g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  g_assert_false(g_file_test(entry_path, G_FILE_TEST_EXISTS));
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, NULL,
               NULL, &status, &gerr);
  g_assert_no_error(gerr);
  g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  g_free(saved);
  g_free(entry_path);
  g_free(refused);
  g_free(crashy);
}

#define ADD(path, fn, data)                                                    \
  g_test_add(path, fx, data, fx_setup, fn, fx_teardown)

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  log_set_level(LOG_LVL_DEBUG);
  ADD("/loader/load/good", test_good, NULL);
  ADD("/loader/load/abi-1.0-descriptor", test_minor0, NULL);
  ADD("/loader/refuse/no-symbol", test_refused_early, &r_nosym);
  ADD("/loader/refuse/abi-major-2", test_refused_early, &r_major2);
  ADD("/loader/refuse/v2-symbol-only", test_refused_early, &r_v2only);
  ADD("/loader/refuse/newer-minor", test_newer_minor, NULL);
  ADD("/loader/refuse/bad-name", test_refused_early, &r_badname);
  ADD("/loader/refuse/truncated-size", test_refused_early, &r_truncated);
  ADD("/loader/refuse/no-init", test_refused_early, &r_noinit);
  ADD("/loader/refuse/undefined-symbol", test_undefined_symbol, NULL);
  ADD("/loader/refuse/duplicate-name", test_duplicate_name, NULL);
  ADD("/loader/refuse/world-writable-file", test_file_mode,
      GUINT_TO_POINTER(0666));
  ADD("/loader/refuse/group-writable-file", test_file_mode,
      GUINT_TO_POINTER(0775));
  ADD("/loader/refuse/world-writable-dir", test_dir_mode,
      GUINT_TO_POINTER(0777));
  ADD("/loader/refuse/group-writable-dir", test_dir_mode,
      GUINT_TO_POINTER(0775));
  ADD("/loader/refuse/writable-parent-dir", test_parent_dir_mode, NULL);
  ADD("/loader/refuse/symlink", test_symlink, NULL);
  ADD("/loader/refuse/init-failure-rolls-back", test_init_failure, NULL);
  ADD("/loader/refuse/template-conflict", test_template_conflict, NULL);
  ADD("/loader/registration-after-init", test_late_registration, NULL);
  ADD("/loader/config/disabled", test_disabled, NULL);
  ADD("/loader/config/enabled-not-boolean", test_enabled_not_bool, NULL);
  ADD("/loader/config/unknown-key", test_unknown_key, NULL);
  ADD("/loader/quarantine/crash-loop", test_quarantine, NULL);
  g_test_add_func("/loader/api/table-complete", test_api_table);
  ADD("/loader/cli/refusals", test_cli_refusals, NULL);
  ADD("/loader/cli/all-load", test_cli_all_load, NULL);
  ADD("/loader/cli/check-config", test_cli_check_config, NULL);
  return g_test_run();
}
