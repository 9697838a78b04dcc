/* fsutil: mkdir -p, and which status says why it failed. */
#include "fsutil.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>

static void test_mkdir_p(void) {
  g_autofree char *dir = g_dir_make_tmp("c8y-fsutil-XXXXXX", NULL);
  g_autofree char *a = g_build_filename(dir, "a", NULL);
  g_autofree char *b = g_build_filename(a, "b", NULL);
  g_autofree char *deep = g_build_filename(b, "c", NULL);
  g_assert_cmpint(fsutil_mkdir_p(deep, 0750), ==, 0);
  g_assert_true(g_file_test(deep, G_FILE_TEST_IS_DIR));
  /* Existing directories are fine. */
  g_assert_cmpint(fsutil_mkdir_p(deep, 0750), ==, 0);

  /* A file in the way is an I/O error, with errno saying which. */
  g_autofree char *file = g_build_filename(dir, "f", NULL);
  g_assert_true(g_file_set_contents(file, "x", -1, NULL));
  g_autofree char *under = g_build_filename(file, "sub", NULL);
  g_assert_cmpint(fsutil_mkdir_p(under, 0750), ==, C8Y_EIO);
  g_assert_cmpint(errno, ==, ENOTDIR);

  const char *made[] = {deep, b, a, file, dir};
  for (size_t i = 0; i < G_N_ELEMENTS(made); i++)
    g_assert_cmpint(g_remove(made[i]), ==, 0);
}

/* A path that does not fit is refused before anything is created. */
static void test_too_long(void) {
  char path[5000];
  memset(path, 'x', sizeof path - 1);
  path[0] = '/';
  path[sizeof path - 1] = '\0';
  errno = 0;
  g_assert_cmpint(fsutil_mkdir_p(path, 0750), ==, C8Y_EINVAL);
  g_assert_cmpint(errno, ==, ENAMETOOLONG);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/fsutil/mkdir-p", test_mkdir_p);
  g_test_add_func("/fsutil/too-long", test_too_long);
  return g_test_run();
}
