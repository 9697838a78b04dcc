/* outq: the durable store-and-forward queue for everything the agent sends.
 *
 * Lines are queued per class and taken in strict priority order (operation
 * status first, measurements last); within a class, FIFO. outq_take packs
 * consecutive lines of one class and one topic into a single payload joined
 * by '\n' without exceeding max_payload bytes. An entry is deleted only when
 * its batch is acked (PUBACK); a nack or a disconnect puts it back in front.
 *
 * Durability: with a directory, every non-volatile entry is appended to an
 * append-only file in it before outq_push returns, and fsync'ed according to
 * the class's policy. outq_open replays what was not acked, so a crash or
 * kill -9 loses nothing that outq_push accepted (duplicates are possible: an
 * entry sent but not yet acked is sent again).
 *
 * Bounds: when the stored bytes would exceed max_bytes, the oldest entries of
 * the least important non-empty class are dropped (never in-flight ones).
 * Inventory lines that replace state (110-119, 121, 122, 143, 150) supersede
 * an older queued line of the same template id and topic.
 *
 * All functions are thread-safe. */
#ifndef C8Y_OUTQ_H
#define C8Y_OUTQ_H

#include <stddef.h>
#include <stdint.h>

typedef enum outq_class {
  OUTQ_OPSTATUS = 0,
  OUTQ_ALARM = 1,
  OUTQ_EVENT = 2,
  OUTQ_INVENTORY = 3,
  OUTQ_MEASUREMENT = 4,
  OUTQ_NCLASSES = 5
} outq_class;

/* fsync policies */
#define OUTQ_FSYNC_ALWAYS 0   /* fsync before outq_push returns */
#define OUTQ_FSYNC_NEVER (-1) /* leave it to the kernel */
/* > 0: fsync at most every N milliseconds (on push or outq_tick) */

/* Entry flags */
#define OUTQ_VOLATILE 1u /* kept in memory only, never written to disk */

typedef struct outq_options {
  const char *dir;  /* NULL = memory only */
  size_t max_bytes; /* 0 = 16 MiB */
  int fsync_ms[OUTQ_NCLASSES];
} outq_options;

/* Default policy: ALWAYS for opstatus and alarms, 1000 ms for events and
 * inventory, 2000 ms for measurements. */
void outq_default_options(outq_options *o, const char *dir);

typedef struct outq outq;

typedef struct outq_batch {
  uint64_t id;
  outq_class cls;
  char *topic;   /* owned by the batch */
  char *payload; /* lines joined by '\n', NUL-terminated, owned */
  size_t len;
  size_t nlines;
  uint64_t *tags; /* non-zero tags of the packed entries, owned */
  size_t ntags;
} outq_batch;

typedef struct outq_stats {
  size_t queued[OUTQ_NCLASSES];    /* entries waiting (not in flight) */
  size_t inflight;                 /* entries in taken, unacked batches */
  size_t bytes;                    /* stored bytes (payload + topic) */
  uint64_t dropped[OUTQ_NCLASSES]; /* dropped by the size bound */
  uint64_t coalesced;
  uint64_t replayed; /* entries recovered by outq_open */
} outq_stats;

/* Returns 0 or -1 with one line in err (e.g. "state dir: Permission denied").
 * A corrupt or truncated record at a file's tail is skipped with a warning
 * (a crash mid-append); everything before it is kept. */
int outq_open(const outq_options *opts, outq **out, char *err, size_t errlen);
void outq_close(outq *q); /* fsyncs; in-flight entries stay stored */

/* Queues one line (no trailing newline, < max payload). tag: opaque non-zero
 * value reported back in the batch (0 = none). Returns 0, -1 on I/O error or
 * ENOMEM (nothing queued), -2 if the line alone exceeds 16000 bytes. */
int outq_push(outq *q, outq_class cls, const char *topic, const char *line,
              uint64_t tag, unsigned flags);

/* Takes the next batch. Returns 1 and fills *b, or 0 if nothing is queued. */
int outq_take(outq *q, size_t max_payload, outq_batch *b);
/* Frees the batch's memory (not its entries). */
void outq_batch_free(outq_batch *b);
int outq_ack(outq *q, uint64_t batch_id);  /* entries deleted for good */
int outq_nack(outq *q, uint64_t batch_id); /* entries back in front */
void outq_requeue_inflight(outq *q);       /* every in-flight batch nacked */
/* Drops queued (not in-flight) entries carrying `tag`; returns how many. */
size_t outq_remove_tag(outq *q, uint64_t tag);

/* Periodic work: time-based fsync and compaction of fully acked files. */
void outq_tick(outq *q);
void outq_get_stats(outq *q, outq_stats *s);
size_t outq_inflight_batches(outq *q);

/* Class of a static template line by its id ("200" -> MEASUREMENT, ...). */
outq_class outq_class_for_template(const char *template_id);

#endif
