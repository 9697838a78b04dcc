/* fsutil: mkdir -p, whole writes, and which status says why they failed. */
#include "fsutil.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

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

static void test_write_all(void) {
  g_autofree char *dir = g_dir_make_tmp("c8y-fsutil-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(dir, "f", NULL);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_assert_cmpint(fd, >=, 0);
  size_t len = 1 << 20, written = 0;
  char *buf = g_malloc(len);
  for (size_t i = 0; i < len; i++)
    buf[i] = (char)(i * 31);
  g_assert_cmpint(fsutil_write_all(fd, buf, len, &written), ==, 0);
  g_assert_cmpuint(written, ==, len);
  close(fd);
  g_autofree char *back = NULL;
  gsize blen = 0;
  g_assert_true(g_file_get_contents(path, &back, &blen, NULL));
  g_assert_cmpuint(blen, ==, len);
  g_assert_true(memcmp(back, buf, len) == 0);

  /* A short write followed by a failing one (the file size limit): what
   * reached the file is reported, errno says why the rest did not. */
  fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
  g_assert_cmpint(fd, >=, 0);
  struct rlimit old, small = {.rlim_cur = 1000};
  g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
  small.rlim_max = old.rlim_max;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &small), ==, 0);
  errno = 0;
  int rc = fsutil_write_all(fd, buf, 4000, &written);
  int err = errno;
  g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
  signal(SIGXFSZ, prev);
  g_assert_cmpint(rc, ==, C8Y_EIO);
  g_assert_cmpint(err, ==, EFBIG);
  g_assert_cmpuint(written, ==, 1000);
  close(fd);

  /* Nothing written at all; written may be NULL. */
  errno = 0;
  g_assert_cmpint(fsutil_write_all(-1, buf, 10, &written), ==, C8Y_EIO);
  g_assert_cmpint(errno, ==, EBADF);
  g_assert_cmpuint(written, ==, 0);
  g_assert_cmpint(fsutil_write_all(-1, buf, 10, NULL), ==, C8Y_EIO);
  g_free(buf);
  g_assert_cmpint(g_remove(path), ==, 0);
  g_assert_cmpint(g_remove(dir), ==, 0);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/fsutil/mkdir-p", test_mkdir_p);
  g_test_add_func("/fsutil/too-long", test_too_long);
  g_test_add_func("/fsutil/write-all", test_write_all);
  return g_test_run();
}
