/* c8y-bench-outq: the durable queue's backlog cost, measured in-process.
 *
 * Pushes N measurement lines into a queue in a fresh directory (the
 * agent's default fsync policy), measures RSS above the idle process,
 * closes and replays the files, drains everything through take/ack, and
 * measures again. Baselines measured in the same run on the same files:
 * raw append throughput (one write() per line, as the queue does, without
 * the queue), raw sequential read of the same bytes, and the bytes of the
 * lines themselves (what holding them in RAM would cost at least). Prints
 * one table. It also measures what the queue writes to disk per line
 * (wchar of /proc/self/io, outside the queue) against the line's own bytes:
 * queued, queued and drained ("offline"), and sent one by one with one line
 * in flight ("online"), and how many lines of a 1M-line backlog the default
 * size bound keeps. The table:
 * metric, queue, baseline, queue/baseline ("n/a" where no baseline makes
 * sense; RSS is reported as MiB above idle, the old in-memory queue being
 * gone). */
#include "outq.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double rss_mib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, res = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &res) != 2)
      res = 0;
    fclose(f);
  }
  return (double)res * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

/* Bytes this process handed to write(2) and friends so far (wchar of
 * /proc/self/io): what the queue writes, counted outside the queue. */
static double written_bytes(void) {
  FILE *f = fopen("/proc/self/io", "r");
  char key[64];
  unsigned long long v, w = 0;
  while (f && fscanf(f, "%63s %llu", key, &v) == 2)
    if (strcmp(key, "wchar:") == 0)
      w = v;
  if (f)
    fclose(f);
  return (double)w;
}

static void row(const char *metric, double a, double base, int decimals) {
  char sa[32] = "n/a", sb[32] = "n/a", sr[32] = "n/a";
  if (a >= 0)
    snprintf(sa, sizeof sa, "%.*f", decimals, a);
  if (base >= 0)
    snprintf(sb, sizeof sb, "%.*f", decimals, base);
  if (a >= 0 && base > 0)
    snprintf(sr, sizeof sr, "%.2f", a / base);
  printf("%-40s %14s %14s %9s\n", metric, sa, sb, sr);
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void line_for(char *buf, size_t len, long i) {
  snprintf(buf, len, "200,c8y_Temperature,T,%ld.5,C", i % 100000);
}

static int die(const char *what) {
  fprintf(stderr, "c8y-bench-outq: %s: %s\n", what, strerror(errno));
  return 2;
}

int main(int argc, char **argv) {
  long n = 1000000;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--lines") == 0 && i + 1 < argc) {
      char *end;
      n = strtol(argv[++i], &end, 10);
      if (*end || n < 1000 || n > 50000000) {
        fprintf(stderr, "c8y-bench-outq: --lines: 1000..50000000\n");
        return 2;
      }
    } else {
      fprintf(stderr, "usage: %s [--lines N]\n", argv[0]);
      return 2;
    }
  }
  log_set_level(LOG_LVL_ERROR);
  const char *tmp = getenv("TMPDIR");
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/c8y-bench-outq-XXXXXX", tmp ? tmp : "/tmp");
  if (!mkdtemp(dir))
    return die("mkdtemp");
  char qdir[4200], raw[4200];
  snprintf(qdir, sizeof qdir, "%s/q", dir);
  snprintf(raw, sizeof raw, "%s/raw", dir);
  char line[64];

  /* Baseline: the same appends without the queue. */
  int fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
  if (fd < 0)
    return die(raw);
  double t0 = now_s(), line_bytes = 0;
  for (long i = 0; i < n; i++) {
    line_for(line, sizeof line, i);
    size_t len = strlen(line);
    line_bytes += (double)(len + strlen("s/us"));
    line[len] = '\n';
    if (write(fd, line, len + 1) != (ssize_t)(len + 1))
      return die("raw write");
  }
  fdatasync(fd);
  double raw_write_s = now_s() - t0;
  close(fd);

  double idle = rss_mib();
  double w0 = written_bytes();
  outq_options o;
  outq_default_options(&o, qdir);
  o.max_bytes = (size_t)n * 64 + (64u << 20);
  outq *q;
  char err[512];
  if (outq_open(&o, &q, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-bench-outq: %s\n", err);
    return 2;
  }
  t0 = now_s();
  for (long i = 0; i < n; i++) {
    line_for(line, sizeof line, i);
    if (outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0) != 0) {
      fprintf(stderr, "c8y-bench-outq: push %ld failed\n", i);
      return 2;
    }
  }
  double push_s = now_s() - t0;
  double backlog = rss_mib() - idle;
  outq_close(q);
  double written_push = written_bytes() - w0;

  t0 = now_s();
  if (outq_open(&o, &q, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-bench-outq: %s\n", err);
    return 2;
  }
  double replay_s = now_s() - t0;
  double replayed = rss_mib() - idle;

  /* Baseline for the drain: reading the same bytes sequentially. */
  fd = open(raw, O_RDONLY);
  if (fd < 0)
    return die(raw);
  static char buf[65536];
  long nl = 0;
  t0 = now_s();
  for (;;) {
    ssize_t got = read(fd, buf, sizeof buf);
    if (got <= 0)
      break;
    for (ssize_t i = 0; i < got; i++)
      nl += buf[i] == '\n';
  }
  double raw_read_s = now_s() - t0;
  close(fd);

  long drained = 0, batches = 0;
  t0 = now_s();
  outq_batch b;
  while (outq_take(q, 16000, &b) == 1) {
    drained += (long)b.nlines;
    batches++;
    outq_ack(q, b.id);
    outq_batch_free(&b);
  }
  double drain_s = now_s() - t0;
  outq_tick(q);
  double after = rss_mib() - idle;
  outq_close(q);
  /* Offline: the backlog written, then its acks (the file emptied). */
  double written_offline = written_bytes() - w0;

  /* Online: lines sent as they come, one in flight while the next is
   * queued (the file never empties, so acks are tombstones). */
  long m = n < 100000 ? n : 100000;
  double online_line_bytes = 0;
  if (outq_open(&o, &q, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-bench-outq: %s\n", err);
    return 2;
  }
  double w1 = written_bytes();
  uint64_t inflight = 0;
  for (long i = 0; i < m; i++) {
    line_for(line, sizeof line, i);
    online_line_bytes += (double)strlen(line);
    if (outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0) != 0)
      return die("online push");
    if (outq_take(q, 16000, &b) != 1)
      return die("online take");
    if (inflight)
      outq_ack(q, inflight);
    inflight = b.id;
    outq_batch_free(&b);
  }
  outq_ack(q, inflight);
  outq_tick(q);
  outq_close(q);
  double written_online = written_bytes() - w1;

  /* A 1M-line backlog at the default size bound (offline for long): how
   * many lines the queue keeps. */
  char qdir2[4200];
  snprintf(qdir2, sizeof qdir2, "%s/q-default", dir);
  outq_options od;
  outq_default_options(&od, qdir2);
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    od.fsync_ms[c] = OUTQ_FSYNC_NEVER; /* the count, not the disk */
  if (outq_open(&od, &q, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-bench-outq: %s\n", err);
    return 2;
  }
  long big = 1000000;
  for (long i = 0; i < big; i++) {
    line_for(line, sizeof line, i);
    if (outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0) != 0)
      return die("backlog push");
  }
  outq_stats sd;
  outq_get_stats(q, &sd);
  outq_close(q);
  double kept = (double)sd.queued[OUTQ_MEASUREMENT];
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  if (drained != n || nl != n) {
    fprintf(stderr, "c8y-bench-outq: drained %ld of %ld lines\n", drained, n);
    return 1;
  }

  double per_m = 1e6 / (double)n;
  printf("\nc8y-agent queue benchmark: N = %ld measurement lines of ~30 "
         "bytes, default fsync policy, %ld CPUs\n",
         n, sysconf(_SC_NPROCESSORS_ONLN));
  printf("%-40s %14s %14s %9s\n", "metric", "queue", "baseline", "q/base");
  row("idle RSS MiB", idle, -1, 1);
  /* Baseline: what keeping the lines themselves in RAM would take. */
  double mib_lines = line_bytes / (1024.0 * 1024.0) * per_m;
  row("backlog RSS MiB above idle per 1M lines", backlog * per_m, mib_lines, 1);
  row("replayed RSS MiB above idle per 1M", replayed * per_m, mib_lines, 1);
  row("drained RSS MiB above idle", after, -1, 1);
  row("push lines/s (baseline: raw write)", n / push_s, n / raw_write_s, 0);
  row("drain lines/s (baseline: raw read)", n / drain_s, n / raw_read_s, 0);
  row("replay lines/s (open)", n / replay_s, -1, 0);
  row("lines per batch", (double)n / (double)batches, -1, 1);
  /* Baseline: the line itself (payload bytes), per line. */
  double avg_line = line_bytes / (double)n - strlen("s/us");
  row("disk bytes per line, queued (base: line)", written_push / (double)n,
      avg_line, 1);
  row("disk bytes per line, offline (base: line)", written_offline / (double)n,
      avg_line, 1);
  row("disk bytes per line, online (base: line)", written_online / (double)m,
      online_line_bytes / (double)m, 1);
  row("lines kept of 1M at default max_bytes", kept, (double)big, 0);
  printf("result: complete\n");
  return 0;
}
