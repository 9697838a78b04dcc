#include "plugin_test_util.h"

#include <glib/gstdio.h>

char *ptu_make_tmpdir(const char *prefix) {
  GError *err = NULL;
  char *tmpl = g_strdup_printf("%s-XXXXXX", prefix);
  char *dir = g_dir_make_tmp(tmpl, &err);
  g_assert_no_error(err);
  g_free(tmpl);
  return dir;
}

void ptu_rm_rf(const char *path) {
  GDir *d = g_dir_open(path, 0, NULL);
  if (d) {
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL) {
      char *p = g_build_filename(path, name, NULL);
      ptu_rm_rf(p);
      g_free(p);
    }
    g_dir_close(d);
    g_rmdir(path);
  } else {
    g_unlink(path);
  }
}

void ptu_write_text(const char *path, const char *text) {
  GError *err = NULL;
  g_file_set_contents(path, text, -1, &err);
  g_assert_no_error(err);
}

char *ptu_read_text(const char *path) {
  char *text = NULL;
  GError *err = NULL;
  g_file_get_contents(path, &text, NULL, &err);
  g_assert_no_error(err);
  return text;
}

char *ptu_read_text_or_empty(const char *path) {
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    text = g_strdup("");
  return text;
}

char *ptu_install_script(const char *dir, const char *subdir, const char *name,
                         const char *as) {
  char *src = ptu_read_text(
      g_test_get_filename(G_TEST_DIST, "data", subdir, name, NULL));
  char *dst = g_build_filename(dir, as, NULL);
  ptu_write_text(dst, src);
  g_assert_cmpint(g_chmod(dst, 0755), ==, 0);
  g_free(src);
  return dst;
}
