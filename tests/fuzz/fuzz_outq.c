/* Fuzzes queue replay: the input becomes a queue file, which must open
 * (damage is skipped, never fatal), drain through take/ack/nack with
 * consistent batches, and leave nothing behind once everything is acked. */
#include "log.h"
#include "outq.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Class whose file receives the input (EVENT: queue-2.log). */
#define FUZZ_CLASS OUTQ_EVENT

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_outq: invariant violated: %s\n", what);
    abort();
  }
}

static void clear_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') {
      char p[4096];
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
  closedir(d);
}

static char *fuzz_dir;

static void remove_dir(void) {
  if (fuzz_dir) {
    clear_dir(fuzz_dir);
    rmdir(fuzz_dir);
    free(fuzz_dir);
    fuzz_dir = NULL;
  }
}

static outq *open_or_die(const char *dir) {
  outq_options o;
  outq_default_options(&o, dir);
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    o.fsync_ms[c] = OUTQ_FSYNC_NEVER;
  /* Small enough that larger inputs also exercise dropping at open. */
  o.max_bytes = 8192;
  outq *q = NULL;
  char err[512];
  if (outq_open(&o, &q, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_outq: outq_open failed: %s\n", err);
    abort();
  }
  return q;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!fuzz_dir) {
    log_set_level(LOG_LVL_ERROR); /* damage warnings are expected */
    const char *tmp = getenv("TMPDIR");
    if (asprintf(&fuzz_dir, "%s/fuzz-outq-XXXXXX", tmp ? tmp : "/tmp") < 0 ||
        !mkdtemp(fuzz_dir))
      abort();
    atexit(remove_dir);
  }
  clear_dir(fuzz_dir);
  char path[4096];
  snprintf(path, sizeof path, "%s/queue-%d.log", fuzz_dir, FUZZ_CLASS);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
    abort();
  close(fd);

  outq *q = open_or_die(fuzz_dir);
  outq_stats st;
  outq_get_stats(q, &st);
  size_t queued = 0;
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    queued += st.queued[c];
  check(queued == st.queued[FUZZ_CLASS], "entries replayed into other class");
  check(st.bytes <= 8192, "size bound after open");

  /* Drain, nacking some batches: every replayed line is taken exactly once
   * more than it is nacked. */
  size_t acked = 0, nacks = 0;
  size_t maxp = size % 2 ? 64 : 16000;
  for (size_t round = 0; round < queued + 8; round++) {
    outq_batch b;
    int r = outq_take(q, maxp, &b);
    if (r == 0)
      break;
    check(r == 1, "take failed");
    check(b.cls == FUZZ_CLASS, "batch class");
    check(b.nlines >= 1 && strlen(b.payload) == b.len, "batch length");
    check(b.nlines == 1 || b.len <= maxp, "batch over max_payload");
    size_t nl = 1;
    for (size_t i = 0; i < b.len; i++)
      nl += b.payload[i] == '\n';
    check(nl == b.nlines, "lines in batch");
    if (round % 3 == 1 && nacks < 4) {
      check(outq_nack(q, b.id) == 0, "nack");
      nacks++;
    } else {
      check(outq_ack(q, b.id) == 0, "ack");
      acked += b.nlines;
    }
    outq_batch_free(&b);
  }
  check(acked == queued, "every replayed entry acked once");
  outq_get_stats(q, &st);
  check(st.bytes == 0 && st.inflight == 0, "empty after draining");
  check(outq_push(q, OUTQ_ALARM, 0, "s/us", "301,c8y_Fuzz,fuzz", 0, 0) == 0,
        "push after replay");
  outq_close(q);

  /* Acks are durable: only the new line survives a reopen. */
  q = open_or_die(fuzz_dir);
  outq_get_stats(q, &st);
  check(st.replayed == 1 && st.queued[OUTQ_ALARM] == 1, "replay after acks");
  outq_batch b;
  check(outq_take(q, 16000, &b) == 1 &&
            strcmp(b.payload, "301,c8y_Fuzz,fuzz") == 0,
        "pushed line after reopen");
  check(outq_ack(q, b.id) == 0, "ack after reopen");
  outq_batch_free(&b);
  outq_close(q);
  return 0;
}
