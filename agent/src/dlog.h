/* dlog: one durable append-only log file, shared by the queue (outq, one
 * per class) and the operation journal.
 *
 * What it does for its owner: appends (page cache), group commit (callers
 * waiting for durability share one fdatasync), and rewrites (a fresh file
 * with what the owner still needs, fdatasync'ed, renamed over the log, the
 * directory fsync'ed). The owner's records and their format are its own.
 *
 * Locking: a dlog has no lock of its own; it runs under the owner's mutex
 * (given to dlog_open) and every call except dlog_open and dlog_close is
 * made with it held. The rule is that no thread waits for the disk while
 * holding it: fdatasync, the directory fsync and the copying of a rewrite
 * run with the mutex released (the calls that do so say so); under it run
 * only page-cache writes of appends (and of the last few KiB a rewrite
 * copies at its swap), truncation and rename.
 *
 * Durability: an append is durable once dlog_sync for its generation
 * returned 0. A rewrite never loses what was durable: the new file holds
 * everything the old one made durable before it is renamed over it, and no
 * sync completes between the rename and the directory fsync. */
#ifndef C8Y_DLOG_H
#define C8Y_DLOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dlog dlog;

typedef struct dlog_stats {
  uint64_t fsyncs;    /* fdatasyncs of the log (group commits, rewrites) */
  uint64_t written;   /* bytes appended (rewrites not counted) */
  uint64_t rewritten; /* bytes written by rewrites */
} dlog_stats;

/* Opens (creating, mode 0600) <dir>/<name>; dirfd is the directory, kept
 * by the caller for as long as the log. Removes a <name>.tmp left by a
 * rewrite that died. 0, or -1 with one line in err. */
int dlog_open(int dirfd, const char *dir, const char *name, pthread_mutex_t *mu,
              dlog **out, char *err, size_t errlen);
/* fdatasync of what is not durable yet (unless a sync failed); no lock
 * needed, nobody may use the log any more. */
void dlog_close(dlog *d);

int dlog_fd(const dlog *d);
const char *dlog_path(const dlog *d); /* for messages */
uint64_t dlog_size(const dlog *d);

/* Appends len bytes at the end; a partial write is cut back off (where
 * that fails, it stays and the owner's replay must skip it: the size
 * counts it). 0, or -1 with errno. */
int dlog_append(dlog *d, const void *buf, size_t len);
/* The generation of the last append (or truncation); dlog_sync(gen)
 * makes everything up to it durable. */
uint64_t dlog_gen(const dlog *d);
bool dlog_dirty(const dlog *d);
/* Monotonic ms of the last completed sync (or of dlog_open). */
long long dlog_last_sync_ms(const dlog *d);
/* Returns once generation gen is durable (0) or its fdatasync failed
 * (-1, logged once: Linux reports a writeback error only once, so every
 * append of that batch is reported failed). The owner's mutex is released
 * around the fdatasync; writers arriving meanwhile share the next one. */
int dlog_sync(dlog *d, uint64_t gen);
/* Waits (releasing the mutex) until no sync or rewrite swap is running. */
void dlog_wait_idle(dlog *d);

/* Empties the file (the owner has nothing left in it); durable with the
 * next sync. 0 or -1 with errno. */
int dlog_truncate(dlog *d);
/* Zeros [off, off+len) and frees its blocks (FALLOC_FL_PUNCH_HOLE), the
 * size unchanged. 0 or -1 with errno. */
int dlog_punch(dlog *d, uint64_t off, uint64_t len);

/* Reading the file without the mutex: between dlog_read_begin (which
 * returns the descriptor to pread from) and dlog_read_end a rewrite does
 * not swap the file. Both with the mutex held. */
int dlog_read_begin(dlog *d);
void dlog_read_end(dlog *d);

/* A rewrite: the new file is `head` followed by the kept ranges of the
 * current file, in file order, followed by whatever was appended to the
 * current file after this call started (copied as it is). keep must be
 * sorted by offset and not overlap. */
typedef struct dlog_range {
  uint64_t off, len;
} dlog_range;

/* Where bytes of the old file are in the new one, for the owner's
 * offsets; valid only during the swap callback. */
typedef struct dlog_map dlog_map;
/* The new offset of old offset off, or UINT64_MAX when the rewrite dropped
 * it. */
uint64_t dlog_map_offset(const dlog_map *m, uint64_t off);

/* Called with the mutex held at the swap, before anyone can see the new
 * file: the owner moves its offsets. */
typedef void (*dlog_swap_fn)(void *ctx, const dlog_map *m);

/* Runs a rewrite; the mutex is released while the file is copied and
 * synced, taken for the swap. Returns 0 when the new file is in place, or
 * -1: an I/O error (logged, the old file stays) or, with errno EAGAIN,
 * another rewrite is running, the file was truncated or punched meanwhile,
 * or appends kept coming faster than the copy (the caller tries later). */
int dlog_rewrite(dlog *d, const void *head, size_t hlen, const dlog_range *keep,
                 size_t nkeep, dlog_swap_fn swap, void *ctx);

/* Whether a rewrite is running (mutex held). */
bool dlog_rewriting(const dlog *d);
void dlog_get_stats(const dlog *d, dlog_stats *out);
/* The sums over every log this process opened (closed ones included): what
 * the queue and the journal cost the disk. Thread-safe, no mutex. */
void dlog_process_stats(dlog_stats *out);

#endif
