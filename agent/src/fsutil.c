#include "fsutil.h"

#include <c8y/plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fsutil_mkdir_p(const char *path, mode_t mode) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
    errno = ENAMETOOLONG;
    return C8Y_EINVAL;
  }
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = 0;
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
      return C8Y_EIO;
    *p = '/';
  }
  return mkdir(buf, mode) != 0 && errno != EEXIST ? C8Y_EIO : 0;
}

char *fsutil_read_first_line(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f)
    return NULL;
  char buf[256] = {0};
  char *ok = fgets(buf, sizeof buf, f);
  fclose(f);
  if (!ok)
    return NULL;
  buf[strcspn(buf, "\r\n")] = 0;
  return buf[0] ? strdup(buf) : NULL;
}

int fsutil_fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return C8Y_EIO;
  int rc = fsync(fd);
  int err = errno;
  close(fd);
  errno = err;
  return rc == 0 ? 0 : C8Y_EIO;
}

int fsutil_write_all(int fd, const void *buf, size_t len, size_t *written) {
  const char *p = buf;
  size_t off = 0;
  int rc = 0;
  while (off < len) {
    ssize_t n = write(fd, p + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n == 0)
        errno = EIO;
      rc = C8Y_EIO;
      break;
    }
    off += (size_t)n;
  }
  if (written)
    *written = off;
  return rc;
}
