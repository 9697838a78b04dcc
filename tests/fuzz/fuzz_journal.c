/* Fuzzes journal recovery: the input becomes operations.journal, which must
 * open (damage is skipped, never fatal), recover only entries whose fields
 * are usable (a device id that could never be addressed is dropped), hand
 * out ids above every id it read, and after forget_recovered reopen empty. */
#include "fuzz_tmp.h"
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

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_journal: invariant violated: %s\n", what);
    abort();
  }
}

static journal *open_or_die(const char *dir) {
  journal *j = NULL;
  char err[512];
  if (journal_open(dir, &j, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_journal: journal_open failed: %s\n", err);
    abort();
  }
  return j;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fuzz_tmp_state_dir("journal");
  log_set_level(LOG_LVL_ERROR); /* damage warnings are expected */
  int fd = open(fuzz_journal_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
    abort();
  close(fd);

  journal *j = open_or_die(dir);
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
  /* Final statuses not sent yet: one more, ended with its status. */
  journal_status *st;
  size_t nst = journal_unsent(j, &st);
  for (size_t i = 0; i < nst; i++) {
    check(st[i].topic && st[i].line, "unsent status complete");
    for (size_t k = 0; k < i; k++)
      check(st[k].id != st[i].id, "unsent ids unique");
  }
  journal_status_free(st, nst);
  journal_entry e2 = e;
  e2.id = next + 1;
  check(journal_begin(j, &e2) == 0, "second begin");
  check(journal_end_status(j, e2.id, "s/us", "503,c8y_Command") == 0,
        "end with status");
  journal_close(j);

  j = open_or_die(dir);
  size_t n2 = journal_recovered(j, &rec);
  check(n2 == n + 1, "recovered set stable across a reopen");
  check(journal_next_id(j) > next + 1, "ids stay unique across a reopen");
  check(journal_unsent(j, &st) == nst + 1, "unsent statuses stable");
  for (size_t i = 0; i < nst + 1; i++)
    check(journal_status_sent(j, st[i].id) == 0, "status sent");
  journal_status_free(st, nst + 1);
  check(journal_forget_recovered(j) == 0, "forget_recovered");
  journal_close(j);

  j = open_or_die(dir);
  check(journal_recovered(j, &rec) == 0, "nothing left after forget");
  check(journal_unsent(j, &st) == 0, "nothing unsent after sent");
  journal_close(j);
  return 0;
}
