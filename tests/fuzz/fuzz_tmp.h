/* A scratch state dir for fuzz targets that need a journal file: created
 * once per process (on a tmpfs when one is writable: the journal fsyncs
 * every entry), removed at exit. */
#ifndef C8Y_FUZZ_TMP_H
#define C8Y_FUZZ_TMP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char *fuzz_tmp_dir;
static char fuzz_journal_path[4096];

static void fuzz_tmp_remove(void) {
  if (!fuzz_tmp_dir)
    return;
  unlink(fuzz_journal_path);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", fuzz_journal_path);
  unlink(tmp);
  rmdir(fuzz_tmp_dir);
  free(fuzz_tmp_dir);
  fuzz_tmp_dir = NULL;
}

/* The dir (its operations.journal is fuzz_journal_path); aborts on error. */
static const char *fuzz_tmp_state_dir(const char *tag) {
  if (fuzz_tmp_dir)
    return fuzz_tmp_dir;
  const char *tmp = getenv("TMPDIR");
  if (!tmp && access("/dev/shm", W_OK) == 0)
    tmp = "/dev/shm";
  if (asprintf(&fuzz_tmp_dir, "%s/fuzz-%s-XXXXXX", tmp ? tmp : "/tmp", tag) <
          0 ||
      !mkdtemp(fuzz_tmp_dir))
    abort();
  snprintf(fuzz_journal_path, sizeof fuzz_journal_path, "%s/operations.journal",
           fuzz_tmp_dir);
  atexit(fuzz_tmp_remove);
  return fuzz_tmp_dir;
}

#endif
