/* fsutil: small file-system helpers shared by the core modules. */
#ifndef C8Y_FSUTIL_H
#define C8Y_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* mkdir -p with `mode` for every directory it creates. 0, C8Y_EINVAL for a
 * path longer than 4095 bytes or C8Y_EIO; errno says why either way. */
int fsutil_mkdir_p(const char *path, mode_t mode);
/* First line of a file without its line end; malloc'ed, NULL when the file
 * is missing, unreadable or empty. */
char *fsutil_read_first_line(const char *path);
/* fsync of a directory, so a rename or create in it survives a power cut.
 * 0 or C8Y_EIO; errno says why. */
int fsutil_fsync_dir(const char *dir);
/* write(2) until all `len` bytes are written, across short writes and
 * EINTR. 0, or C8Y_EIO with errno saying why (EIO for a write that wrote
 * nothing); *written (may be NULL) is what reached the file either way, so
 * a caller can cut a torn record off again. */
int fsutil_write_all(int fd, const void *buf, size_t len, size_t *written);

#endif
