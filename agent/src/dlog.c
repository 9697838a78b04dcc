/* dlog: one durable append-only log file (see dlog.h). */
#include "dlog.h"

#include "clock.h"
#include "fsutil.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A rewrite copies what was appended meanwhile in rounds without the
 * mutex; at most this much is left for the swap itself, under it. */
#define SWAP_TAIL_MAX (64u * 1024u)
/* Rounds before a rewrite gives up on a log appended to faster than it
 * copies (it is retried later). */
#define COPY_ROUNDS 8
#define COPY_BUF (64u * 1024u)

struct dlog {
  pthread_mutex_t *mu;
  pthread_cond_t cv; /* a sync, a swap or a reader finished */
  int dirfd;
  int fd;
  char *name, *path;
  uint64_t size;
  /* Appends count wgen; generations up to sgen are durable; the last
   * fdatasync that failed covered [fail_lo, fail_hi]. */
  uint64_t wgen, sgen, fail_lo, fail_hi;
  uint64_t synced_size; /* bytes at the start of the file known durable */
  uint64_t epoch;       /* truncations and punches: a rewrite restarts */
  uint64_t truncations;
  bool syncing;  /* an fdatasync (or a swap's dir fsync) is running */
  bool swapping; /* a rewrite waits for readers to swap the file */
  bool rewriting;
  int readers;
  bool warned;
  long long last_sync;
  dlog_stats st;
};

/* Totals of every log of the process, for dlog_process_stats. */
static _Atomic uint64_t total_fsyncs, total_written, total_rewritten;

struct dlog_map {
  const dlog_range *keep;
  const uint64_t *newpos; /* new offset of each kept range */
  size_t n;
  uint64_t snap;      /* old size when the rewrite started */
  uint64_t tail_base; /* where the bytes appended after it start */
};

int dlog_open(int dirfd, const char *dir, const char *name, pthread_mutex_t *mu,
              dlog **out, char *err, size_t errlen) {
  *out = NULL;
  dlog *d = calloc(1, sizeof *d);
  if (!d || !(d->name = strdup(name)) ||
      asprintf(&d->path, "%s/%s", dir, name) < 0) {
    if (d)
      free(d->name);
    free(d);
    snprintf(err, errlen, "%s/%s: %s", dir, name, strerror(ENOMEM));
    return -1;
  }
  d->mu = mu;
  d->dirfd = dirfd;
  pthread_cond_init(&d->cv, NULL);
  char tmp[512];
  snprintf(tmp, sizeof tmp, "%s.tmp", name);
  unlinkat(dirfd, tmp, 0); /* a rewrite that died half-way */
  d->fd = openat(dirfd, name, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  struct stat sb;
  if (d->fd < 0 || fstat(d->fd, &sb) < 0) {
    snprintf(err, errlen, "%s: %s", d->path, strerror(errno));
    dlog_close(d);
    return -1;
  }
  d->size = (uint64_t)sb.st_size;
  d->synced_size = d->size; /* what a previous run left is taken as is */
  d->last_sync = clock_mono_ms();
  *out = d;
  return 0;
}

void dlog_close(dlog *d) {
  if (!d)
    return;
  if (d->fd >= 0) {
    if (d->sgen < d->wgen && fdatasync(d->fd) < 0)
      log_warning("%s: fdatasync: %s", d->path, strerror(errno));
    close(d->fd);
  }
  pthread_cond_destroy(&d->cv);
  free(d->name);
  free(d->path);
  free(d);
}

int dlog_fd(const dlog *d) { return d->fd; }
const char *dlog_path(const dlog *d) { return d->path; }
uint64_t dlog_size(const dlog *d) { return d->size; }
uint64_t dlog_gen(const dlog *d) { return d->wgen; }
bool dlog_dirty(const dlog *d) { return d->sgen < d->wgen; }
long long dlog_last_sync_ms(const dlog *d) { return d->last_sync; }
void dlog_get_stats(const dlog *d, dlog_stats *out) { *out = d->st; }
bool dlog_rewriting(const dlog *d) { return d->rewriting; }

void dlog_process_stats(dlog_stats *out) {
  out->fsyncs = atomic_load(&total_fsyncs);
  out->written = atomic_load(&total_written);
  out->rewritten = atomic_load(&total_rewritten);
}

int dlog_append(dlog *d, const void *buf, size_t len) {
  size_t off = 0;
  if (fsutil_write_all(d->fd, buf, len, &off) != 0) {
    int err = errno;
    if (off > 0 && ftruncate(d->fd, (off_t)d->size) < 0)
      d->size += off; /* the torn bytes stay; the owner's replay skips them */
    d->st.written += off;
    atomic_fetch_add(&total_written, off);
    errno = err;
    return -1;
  }
  d->size += len;
  d->wgen++;
  d->st.written += len;
  atomic_fetch_add(&total_written, len);
  return 0;
}

static void warn_once(dlog *d, const char *what, int err) {
  if (!d->warned)
    log_warning("%s: %s: %s", d->path, what, strerror(err));
  d->warned = true;
}

int dlog_sync(dlog *d, uint64_t gen) {
  while (d->sgen < gen) {
    if (d->syncing || d->swapping) {
      pthread_cond_wait(&d->cv, d->mu);
      continue;
    }
    d->syncing = true;
    uint64_t target = d->wgen, size = d->size, truncs = d->truncations;
    int fd = d->fd;
    pthread_mutex_unlock(d->mu);
    int rc = fdatasync(fd);
    int err = errno;
    pthread_mutex_lock(d->mu);
    d->syncing = false;
    d->st.fsyncs++;
    atomic_fetch_add(&total_fsyncs, 1);
    if (rc == 0) {
      d->warned = false;
      d->last_sync = clock_mono_ms();
      /* Too much is safe here (a rewrite syncs more than it must), too
       * little is not: after a truncation during the fdatasync, anything
       * appended since may be durable. */
      if (d->truncations != truncs)
        d->synced_size = d->size;
      else if (size > d->synced_size)
        d->synced_size = size;
    } else {
      /* Linux reports a writeback error once: a retry would wrongly
       * succeed, so the whole batch is reported failed. */
      d->fail_lo = d->sgen + 1;
      d->fail_hi = target;
      warn_once(d, "fdatasync", err);
    }
    if (target > d->sgen)
      d->sgen = target;
    pthread_cond_broadcast(&d->cv);
  }
  return gen >= d->fail_lo && gen <= d->fail_hi ? -1 : 0;
}

void dlog_wait_idle(dlog *d) {
  while (d->syncing || d->swapping)
    pthread_cond_wait(&d->cv, d->mu);
}

int dlog_truncate(dlog *d) {
  if (ftruncate(d->fd, 0) < 0)
    return -1;
  d->size = 0;
  d->synced_size = 0;
  d->wgen++; /* the new size is made durable by the next sync */
  d->epoch++;
  d->truncations++;
  return 0;
}

int dlog_punch(dlog *d, uint64_t off, uint64_t len) {
  d->epoch++;
  return fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   (off_t)off, (off_t)len);
}

int dlog_read_begin(dlog *d) {
  while (d->swapping)
    pthread_cond_wait(&d->cv, d->mu);
  d->readers++;
  return d->fd;
}

void dlog_read_end(dlog *d) {
  if (--d->readers == 0)
    pthread_cond_broadcast(&d->cv);
}

uint64_t dlog_map_offset(const dlog_map *m, uint64_t off) {
  if (off >= m->snap)
    return m->tail_base + (off - m->snap);
  size_t lo = 0, hi = m->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (m->keep[mid].off <= off)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0 || off - m->keep[lo - 1].off >= m->keep[lo - 1].len)
    return UINT64_MAX;
  return m->newpos[lo - 1] + (off - m->keep[lo - 1].off);
}

/* Copies [off, off+len) of `from` to the end of `to`; 0 or -1 with errno
 * (EIO for a file that ended early). */
static int copy_range(int from, int to, uint64_t off, uint64_t len,
                      unsigned char *buf) {
  while (len > 0) {
    size_t want = len < COPY_BUF ? (size_t)len : COPY_BUF;
    ssize_t n = pread(from, buf, want, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n == 0)
        errno = EIO;
      return -1;
    }
    if (fsutil_write_all(to, buf, (size_t)n, NULL) != 0)
      return -1;
    off += (uint64_t)n;
    len -= (uint64_t)n;
  }
  return 0;
}

/* Ends a rewrite that did not swap (mutex held). */
static int rewrite_abort(dlog *d, int tmpfd, int err) {
  if (tmpfd >= 0) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", d->name);
    close(tmpfd);
    unlinkat(d->dirfd, tmp, 0);
  }
  if (err != EAGAIN)
    warn_once(d, "rewrite", err);
  d->rewriting = false;
  d->swapping = false;
  pthread_cond_broadcast(&d->cv);
  errno = err;
  return -1;
}

int dlog_rewrite(dlog *d, const void *head, size_t hlen, const dlog_range *keep,
                 size_t nkeep, dlog_swap_fn swap, void *ctx) {
  if (d->rewriting) {
    errno = EAGAIN;
    return -1;
  }
  d->rewriting = true;
  uint64_t snap = d->size, epoch = d->epoch;
  int oldfd = d->fd; /* only this rewrite replaces it */
  char tmp[512];
  snprintf(tmp, sizeof tmp, "%s.tmp", d->name);
  uint64_t *newpos = nkeep ? malloc(nkeep * sizeof *newpos) : NULL;
  unsigned char *buf = malloc(COPY_BUF);
  pthread_mutex_unlock(d->mu);

  int err = 0;
  int tmpfd = -1;
  uint64_t pos = hlen, copied = snap, synced_copied = 0;
  if ((nkeep && !newpos) || !buf)
    err = ENOMEM;
  if (!err) {
    tmpfd = openat(d->dirfd, tmp,
                   O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (tmpfd < 0 || fsutil_write_all(tmpfd, head, hlen, NULL) != 0)
      err = errno ? errno : EIO;
  }
  for (size_t i = 0; !err && i < nkeep; i++) {
    newpos[i] = pos;
    if (copy_range(oldfd, tmpfd, keep[i].off, keep[i].len, buf) != 0)
      err = errno;
    pos += keep[i].len;
  }
  uint64_t tail_base = pos;
  /* Rounds without the mutex: what was appended meanwhile, then a sync,
   * until the durable part of the old file is in the new one and little
   * is left for the swap. */
  pthread_mutex_lock(d->mu);
  for (int round = 0;; round++) {
    if (err)
      break;
    if (d->epoch != epoch || round == COPY_ROUNDS) {
      err = EAGAIN;
      break;
    }
    while (d->syncing)
      pthread_cond_wait(&d->cv, d->mu);
    uint64_t durable = d->synced_size > snap ? d->synced_size : snap;
    if (round > 0 && durable <= synced_copied &&
        d->size - copied <= SWAP_TAIL_MAX)
      break;
    uint64_t upto = d->size;
    pthread_mutex_unlock(d->mu);
    if (copy_range(oldfd, tmpfd, copied, upto - copied, buf) != 0)
      err = errno;
    else
      copied = upto;
    if (!err && fdatasync(tmpfd) != 0)
      err = errno;
    pthread_mutex_lock(d->mu);
    d->st.fsyncs++;
    atomic_fetch_add(&total_fsyncs, 1);
    if (!err)
      synced_copied = copied;
  }
  if (!err) {
    /* The swap: no reader may hold the old descriptor, no sync may run. */
    d->swapping = true;
    while (d->readers || d->syncing)
      pthread_cond_wait(&d->cv, d->mu);
    if (d->epoch != epoch)
      err = EAGAIN;
    else if (copy_range(oldfd, tmpfd, copied, d->size - copied, buf) != 0 ||
             renameat(d->dirfd, tmp, d->dirfd, d->name) != 0)
      err = errno;
  }
  free(buf);
  if (err && d->epoch != epoch)
    err = EAGAIN; /* truncated or punched under the copy: not an I/O error */
  if (err) {
    free(newpos);
    return rewrite_abort(d, tmpfd, err);
  }
  uint64_t old_size = d->size;
  struct dlog_map m = {keep, newpos, nkeep, snap, tail_base};
  if (swap)
    swap(ctx, &m);
  free(newpos);
  d->fd = tmpfd;
  d->size = tail_base + (old_size - snap);
  d->st.rewritten += d->size;
  atomic_fetch_add(&total_rewritten, d->size);
  /* Synced in the new file: the head, the kept ranges, the tail up to
   * synced_copied. The generations stay: everything durable stays so. */
  d->synced_size = tail_base + (synced_copied - snap);
  d->epoch++;
  d->swapping = false;
  /* Until the rename is durable no sync may complete: a power cut could
   * bring the old file back without what was synced to the new one. */
  d->syncing = true;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(d->mu);
  close(oldfd);
  int drc = fsync(d->dirfd);
  int derr = errno;
  pthread_mutex_lock(d->mu);
  d->st.fsyncs++;
  atomic_fetch_add(&total_fsyncs, 1);
  d->syncing = false;
  d->rewriting = false;
  if (drc != 0)
    warn_once(d, "fsync of the directory", derr);
  else
    d->warned = false;
  pthread_cond_broadcast(&d->cv);
  return 0;
}
