/* crash: how records of crashes become quarantines, and what ends them
 * (the handler itself is exercised by /loader/quarantine/crash-loop). */
#include "crash.h"
#include "log.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
  char *dir;
  char *so_a, *so_b;
  struct stat st_a, st_b;
} fx;

static void fx_setup(fx *f, gconstpointer d) {
  (void)d;
  f->dir = g_dir_make_tmp("c8y-crash-XXXXXX", NULL);
  f->so_a = g_build_filename(f->dir, "a.so", NULL);
  f->so_b = g_build_filename(f->dir, "b.so", NULL);
  g_assert_true(g_file_set_contents(f->so_a, "A", -1, NULL));
  g_assert_true(g_file_set_contents(f->so_b, "BB", -1, NULL));
  g_assert_cmpint(stat(f->so_a, &f->st_a), ==, 0);
  g_assert_cmpint(stat(f->so_b, &f->st_b), ==, 0);
}

static void rm_rf(const char *dir) {
  const char *argv[] = {"rm", "-rf", dir, NULL};
  g_assert_true(g_spawn_sync(NULL, (gchar **)argv, NULL, G_SPAWN_SEARCH_PATH,
                             NULL, NULL, NULL, NULL, NULL, NULL));
}

static void fx_teardown(fx *f, gconstpointer d) {
  (void)d;
  rm_rf(f->dir);
  g_free(f->dir);
  g_free(f->so_a);
  g_free(f->so_b);
}

/* What the signal handler writes for a crash in `name`'s producer. */
static void crash_in(fx *f, const char *name, const char *path,
                     const struct stat *st) {
  char *head = crash_plugin_head(name, path, st);
  char *text = g_strdup_printf("signal=11\n%scallback=producer tick\n", head);
  char *rec = g_build_filename(f->dir, CRASH_RECORD_FILE, NULL);
  g_assert_true(g_file_set_contents(rec, text, -1, NULL));
  g_assert_true(crash_take_record(f->dir));
  g_assert_false(g_file_test(rec, G_FILE_TEST_EXISTS)); /* consumed */
  g_free(rec);
  g_free(text);
  g_free(head);
}

static bool quarantined(fx *f, const char *path, const struct stat *st) {
  char why[512] = "", name[80] = "";
  bool q =
      crash_quarantined(f->dir, path, st, why, sizeof why, name, sizeof name);
  if (q)
    g_assert_nonnull(strstr(why, "crashed the agent 3 times in a row"));
  return q;
}

static void test_streak(fx *f, gconstpointer d) {
  (void)d;
  g_assert_false(crash_take_record(f->dir)); /* nothing to take */
  crash_in(f, "a", f->so_a, &f->st_a);
  crash_in(f, "a", f->so_a, &f->st_a);
  g_assert_false(quarantined(f, f->so_a, &f->st_a));
  /* A crash elsewhere ends a's streak... */
  crash_in(f, "b", f->so_b, &f->st_b);
  crash_in(f, "a", f->so_a, &f->st_a);
  crash_in(f, "a", f->so_a, &f->st_a);
  g_assert_false(quarantined(f, f->so_a, &f->st_a));
  /* ...so does a clean stop. */
  crash_reset_streaks(f->dir);
  crash_in(f, "a", f->so_a, &f->st_a);
  crash_in(f, "a", f->so_a, &f->st_a);
  g_assert_false(quarantined(f, f->so_a, &f->st_a));
  crash_in(f, "a", f->so_a, &f->st_a);
  g_assert_true(quarantined(f, f->so_a, &f->st_a));
  g_assert_false(quarantined(f, f->so_b, &f->st_b));
  /* A quarantine outlives clean stops and other plugins' crashes. */
  crash_reset_streaks(f->dir);
  crash_in(f, "b", f->so_b, &f->st_b);
  g_assert_true(quarantined(f, f->so_a, &f->st_a));
}

static void test_new_file_lifts(fx *f, gconstpointer d) {
  (void)d;
  for (int i = 0; i < CRASH_QUARANTINE_AFTER; i++)
    crash_in(f, "a", f->so_a, &f->st_a);
  g_assert_true(quarantined(f, f->so_a, &f->st_a));
  struct stat changed = f->st_a;
  changed.st_size += 1; /* another build of the plugin */
  g_assert_false(quarantined(f, f->so_a, &changed));
  g_assert_false(quarantined(f, f->so_a, &f->st_a)); /* the record is gone */
}

static void test_clear(fx *f, gconstpointer d) {
  (void)d;
  for (int i = 0; i < CRASH_QUARANTINE_AFTER; i++)
    crash_in(f, "a", f->so_a, &f->st_a);
  g_assert_cmpint(crash_clear_quarantine(f->dir, "../a"), ==, C8Y_EINVAL);
  g_assert_cmpint(errno, ==, EINVAL);
  g_assert_cmpint(crash_clear_quarantine(f->dir, "a"), ==, 0);
  g_assert_false(quarantined(f, f->so_a, &f->st_a));
  g_assert_cmpint(crash_clear_quarantine(f->dir, "a"), ==, C8Y_ESTATE);
}

/* A crash before the plugin's name was known (in its constructor) is
 * counted under the file name. */
static void test_unnamed(fx *f, gconstpointer d) {
  (void)d;
  for (int i = 0; i < CRASH_QUARANTINE_AFTER; i++)
    crash_in(f, "", f->so_b, &f->st_b);
  char why[512], name[80];
  g_assert_true(crash_quarantined(f->dir, f->so_b, &f->st_b, why, sizeof why,
                                  name, sizeof name));
  g_assert_cmpstr(name, ==, "b");
}

/* A long file name still gives a name --clear-quarantine accepts. */
static void test_unnamed_long_file(fx *f, gconstpointer d) {
  (void)d;
  char base[81];
  memset(base, 'x', 77);
  memcpy(base + 77, ".so", 4);
  char *so = g_build_filename(f->dir, base, NULL);
  struct stat st;
  g_assert_true(g_file_set_contents(so, "C", -1, NULL));
  g_assert_cmpint(stat(so, &st), ==, 0);
  for (int i = 0; i < CRASH_QUARANTINE_AFTER; i++)
    crash_in(f, "", so, &st);
  char why[512], name[80];
  g_assert_true(
      crash_quarantined(f->dir, so, &st, why, sizeof why, name, sizeof name));
  g_assert_cmpuint(strlen(name), ==, 64);
  g_assert_cmpint(crash_clear_quarantine(f->dir, name), ==, 0);
  g_assert_false(
      crash_quarantined(f->dir, so, &st, why, sizeof why, name, sizeof name));
  g_free(so);
}

/* A record path that does not fit is refused before any handler is
 * installed. */
static void test_install_long_path(void) {
  char dir[4200];
  memset(dir, 'd', sizeof dir - 1);
  dir[0] = '/';
  dir[sizeof dir - 1] = '\0';
  g_assert_cmpint(crash_install(dir), ==, C8Y_EINVAL);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  log_set_level(LOG_LVL_ERROR);
  g_test_add("/crash/streak", fx, NULL, fx_setup, test_streak, fx_teardown);
  g_test_add("/crash/new-file-lifts", fx, NULL, fx_setup, test_new_file_lifts,
             fx_teardown);
  g_test_add("/crash/clear", fx, NULL, fx_setup, test_clear, fx_teardown);
  g_test_add("/crash/unnamed", fx, NULL, fx_setup, test_unnamed, fx_teardown);
  g_test_add("/crash/unnamed-long-file", fx, NULL, fx_setup,
             test_unnamed_long_file, fx_teardown);
  g_test_add_func("/crash/install-long-path", test_install_long_path);
  return g_test_run();
}
