/* Fuzzes journal recovery: the input becomes operations.journal, which must
 * open (damage is skipped, never fatal), recover only entries whose fields
 * are usable (a device id that could never be addressed is dropped), hand
 * out ids above every id it read, and after forget_recovered reopen empty. */
#include "ident.h"
#include "journal.h"
#include "log.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *fuzz_dir;
static char journal_path[4096];

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_journal: invariant violated: %s\n", what);
    abort();
  }
}

static void remove_dir(void) {
  if (fuzz_dir) {
    unlink(journal_path);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", journal_path);
    unlink(tmp);
    rmdir(fuzz_dir);
    free(fuzz_dir);
    fuzz_dir = NULL;
  }
}

static journal *open_or_die(void) {
  journal *j = NULL;
  char err[512];
  if (journal_open(fuzz_dir, &j, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_journal: journal_open failed: %s\n", err);
    abort();
  }
  return j;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!fuzz_dir) {
    log_set_level(LOG_LVL_ERROR); /* damage warnings are expected */
    /* fdatasync per entry: a tmpfs keeps the fuzzer fast. */
    const char *tmp = getenv("TMPDIR");
    if (!tmp && access("/dev/shm", W_OK) == 0)
      tmp = "/dev/shm";
    if (asprintf(&fuzz_dir, "%s/fuzz-journal-XXXXXX", tmp ? tmp : "/tmp") < 0 ||
        !mkdtemp(fuzz_dir))
      abort();
    snprintf(journal_path, sizeof journal_path, "%s/operations.journal",
             fuzz_dir);
    atexit(remove_dir);
  }
  int fd = open(journal_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
    abort();
  close(fd);

  journal *j = open_or_die();
  const journal_entry *rec;
  size_t n = journal_recovered(j, &rec);
  uint64_t next = journal_next_id(j);
  for (size_t i = 0; i < n; i++) {
    check(rec[i].id > 0 && rec[i].id < next, "recovered id below next id");
    check(rec[i].fragment && rec[i].device, "recovered entry complete");
    check(ident_check(rec[i].device, false) == NULL,
          "recovered device id is usable");
    for (size_t k = 0; k < i; k++)
      check(rec[k].id != rec[i].id, "recovered ids unique");
  }
  /* A new operation survives a restart next to what was recovered. */
  journal_entry e = {.id = next,
                     .template_id = (char *)"511",
                     .fragment = (char *)"c8y_Command",
                     .device = (char *)"fuzz-dev"};
  check(journal_begin(j, &e) == 0, "begin after recovery");
  journal_close(j);

  j = open_or_die();
  size_t n2 = journal_recovered(j, &rec);
  check(n2 == n + 1, "recovered set stable across a reopen");
  check(journal_next_id(j) > next, "ids stay unique across a reopen");
  check(journal_forget_recovered(j) == 0, "forget_recovered");
  journal_close(j);

  j = open_or_die();
  check(journal_recovered(j, &rec) == 0, "nothing left after forget");
  journal_close(j);
  return 0;
}
