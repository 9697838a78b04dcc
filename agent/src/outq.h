/* outq: the durable store-and-forward queue for everything the agent sends.
 *
 * Order: lines are queued per class and taken in priority order (operation
 * status first, measurements last); within a class, FIFO. One exception
 * keeps what a handler sent before completing ahead of its status: an
 * operation status is taken only once no alarm, event or inventory line of
 * the same topic that was queued before it is still queued or in flight;
 * while one is queued, outq_take returns that older line first, and while
 * one is in flight, statuses of that topic wait for its ack (statuses of
 * other topics are not held up). Measurements never hold a status back: a
 * measurement backlog can be huge and carries no state a status depends on.
 * Between topics, and among lines queued earlier, priority decides.
 * outq_take packs consecutive lines of one class and one topic into a single
 * payload joined by '\n' without exceeding max_payload bytes. An entry is
 * deleted only when its batch is acked (PUBACK); a nack or a disconnect puts
 * it back in its place.
 *
 * Durability: with a directory, every non-volatile entry is appended to an
 * append-only file in it (its class's dlog, see dlog.h) before outq_push
 * returns, and fsync'ed according to the class's policy (group commit: the
 * fsync runs outside the queue's lock and covers every pusher waiting for
 * it). outq_open replays what was not acked. Per class, with the default
 * policy (outq_default_options):
 *   - statuses and alarms (OUTQ_FSYNC_ALWAYS): outq_push returns after the
 *     fdatasync: the line survives kill -9 and power loss;
 *   - events, inventory (1000 ms), measurements (2000 ms): the line is in
 *     the page cache when outq_push returns, so it survives kill -9; a power
 *     loss may take the lines of the last interval;
 *   - OUTQ_VOLATILE entries (the agent's registration lines, 501/504, and
 *     the final statuses that the operation journal holds durably, see
 *     journal.h): memory only, rebuilt or re-queued after a restart;
 *   - acknowledgements (tombstones) are batched: written and fsync'ed with
 *     the class's next fsync, or by outq_tick one second after the first;
 *     a file with nothing alive left is truncated instead. A crash or power
 *     loss within that second sends those lines again (duplicates, never a
 *     loss): an entry sent but not yet acked is sent again anyway.
 * Compaction (a file mostly garbage is rewritten) and the full-disk reserve
 * never wait for the disk under the queue's lock.
 *
 * On-disk format: outq.c's records (format 2: ~11 bytes of header and
 * numbers per line, topics numbered per file). Compatibility: replay also
 * reads format 1 records (agents before format 2), so an upgrade sends what
 * the old agent queued; an agent from before format 2 skips format 2
 * records as damage (warnings), so a downgrade loses the queued lines.
 *
 * Memory: a queued line costs about 12 bytes of RAM (its place in the file,
 * size, topic id and flags; topics are interned); the line itself is read
 * back from the file when it is sent. Volatile entries, a memory-only queue
 * and statuses held on a full disk keep their bytes in memory; inventory
 * lines cost ~40 bytes more for the coalescing index. Memory is handed back
 * when the queue drains.
 *
 * Bounds: when the stored bytes (records as they are on disk) would exceed
 * max_bytes, the oldest entries of the least important non-empty class are
 * dropped (never in-flight ones).
 * Drops are counted in outq_stats and logged at most every 10 s with counts
 * per class.
 *
 * Coalescing (inventory only): a line identical to a queued one of the same
 * topic is folded into it. A line pushed with a replace key (the caller's,
 * e.g. proto_replace_key; the queue does not read the line) supersedes the
 * queued, not yet taken lines of the same topic and key. The key is stored
 * in the entry's record, so replayed entries keep it (format 1 records
 * too).
 *
 * Full disk (ENOSPC, EDQUOT, EFBIG): the queue makes room in this order:
 * queued measurements, then events, then inventory lines are dropped (their
 * records punched out of the files); statuses and alarms are never dropped
 * for space and may use a 256 KiB reserve file (queue.reserve) kept for
 * them. A status or alarm that still cannot be written is held in memory
 * (outq_stats.held), sent normally, and written in order as soon as space is
 * back (outq_push or outq_tick); it survives a restart only once written.
 * A line of those three classes takes room only from its own class and
 * the ones before it in that order, and is refused with C8Y_EAGAIN when
 * there is none. Entering and leaving that state is logged.
 *
 * All functions are thread-safe. Batches are read back from the files
 * without holding the queue's lock, so two concurrent outq_take calls may
 * return in either order (the agent takes from one thread). */
#ifndef C8Y_OUTQ_H
#define C8Y_OUTQ_H

#include <stddef.h>
#include <stdint.h>

/* The size of queue.reserve. Transfers (http) keep at least this much of
 * the state file system free, so a download can never take the room the
 * queue needs to re-create its reserve. */
#define OUTQ_RESERVE_BYTES (256u * 1024u)

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
/* A list sent as several lines (a software list: 140, then 141 chunks)
 * shares one replace key. The head (OUTQ_LIST_HEAD) supersedes every queued
 * line of its topic and key, the chunks of an older list included; a chunk
 * (OUTQ_LIST_CHUNK) supersedes nothing. Neither is folded into an identical
 * queued line: a list is only right as a whole, in its order. */
#define OUTQ_LIST_HEAD 2u
#define OUTQ_LIST_CHUNK 4u

typedef struct outq_options {
  const char *dir;  /* NULL = memory only */
  size_t max_bytes; /* record bytes; 0 = 48 MiB */
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
  size_t bytes;                    /* stored bytes (records) */
  uint64_t dropped[OUTQ_NCLASSES]; /* dropped by the size bound */
  uint64_t coalesced;
  uint64_t replayed; /* entries recovered by outq_open */
  uint64_t dropped_disk_full[OUTQ_NCLASSES]; /* dropped or refused: disk full */
  size_t held;        /* statuses/alarms waiting in memory for disk space */
  uint64_t disk_full; /* times the queue ran into a full disk */
  uint64_t io_errors; /* pushes refused for an I/O error */
  uint64_t fsyncs;    /* fsyncs of the class files (group commits and
                         rewrites, the directory's included) */
  size_t topics;      /* distinct topics of queued and in-flight entries */
  uint64_t written;   /* bytes appended to the class files */
  uint64_t rewritten; /* bytes written by compaction (rewrites) */
} outq_stats;

/* Returns 0 or, with one line in err (e.g. "state dir: Permission denied"),
 * C8Y_EIO, C8Y_ENOMEM or C8Y_EEXIST (the directory is locked by another
 * process).
 * A corrupt or truncated record at a file's tail is skipped with a warning
 * (a crash mid-append); everything before it is kept. */
int outq_open(const outq_options *opts, outq **out, char *err, size_t errlen);
void outq_close(outq *q); /* fsyncs; in-flight entries stay stored */

/* Queues one line (no trailing newline, < max payload). replace_key: 0, or
 * for an inventory line that states the current value of something, a key
 * under which it supersedes older queued lines of its topic (see above).
 * tag: opaque non-zero value reported back in the batch (0 = none). Returns
 * C8Y_OK (0) or, with nothing queued, an SDK code: C8Y_EAGAIN (queue full at
 * max_bytes, or disk full for a class below alarms), C8Y_EIO (write or fsync
 * failed), C8Y_ETOOBIG (the line alone exceeds C8Y_MAX_LINE bytes), C8Y_EINVAL
 * (empty line or topic, topic over 1024 bytes or holding '\n', a replace key
 * outside the inventory class), C8Y_ENOMEM. */
int outq_push(outq *q, outq_class cls, uint8_t replace_key, const char *topic,
              const char *line, uint64_t tag, unsigned flags);

/* Takes the next batch. Returns 1 and fills *b, or 0 if nothing is queued. */
int outq_take(outq *q, size_t max_payload, outq_batch *b);
/* Like outq_take, but only entries queued with `tag`, oldest first, packed
 * by topic; everything else stays queued in its place. The link uses it to
 * send the registration of a connect before lines plugins queued earlier.
 * Returns 1, 0 (none queued) or -1 (ENOMEM). */
int outq_take_tagged(outq *q, uint64_t tag, size_t max_payload, outq_batch *b);
/* Frees the batch's memory (not its entries). */
void outq_batch_free(outq_batch *b);
int outq_ack(outq *q, uint64_t batch_id);  /* entries deleted for good */
int outq_nack(outq *q, uint64_t batch_id); /* entries back in front */
void outq_requeue_inflight(outq *q);       /* every in-flight batch nacked */
/* Drops queued (not in-flight) entries carrying `tag`; returns how many. */
size_t outq_remove_tag(outq *q, uint64_t tag);

/* Periodic work: time-based fsync and compaction of fully acked files. */
void outq_tick(outq *q);
/* Monotonic ms (clock_mono_ms) at which outq_tick has work to do (a due
 * fsync, a compaction, a full-disk retry, a drop report), or -1 for none:
 * an idle queue needs no tick. A push may make it earlier. */
long long outq_next_deadline(outq *q);
void outq_get_stats(outq *q, outq_stats *s);
size_t outq_inflight_batches(outq *q);

#endif
