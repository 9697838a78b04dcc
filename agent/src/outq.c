/* outq: durable store-and-forward queue (see outq.h).
 *
 * On disk: one append-only log per class, queue-<class>.log (a dlog: the
 * appends, group commits and rewrites are dlog's), holding three kinds of
 * records. An entry record carries one queued line; a tombstone record lists
 * the sequence ranges of entries that are gone (acked, dropped, superseded or
 * removed); a topic record gives a topic its number in this file, so entries
 * carry a number instead of the topic (the root's "s/us" is number 0 and is
 * never written). Replay = entries minus tombstones. Records start with a
 * magic byte and carry a CRC32, so that a torn append at the tail or a
 * damaged record in the middle is detected and skipped, resyncing on the next
 * magic. A file whose entries are all gone is truncated; one that is mostly
 * garbage is rewritten (dlog_rewrite: temp file + fsync + rename + fsync dir,
 * the copying without the queue's lock). Records of entries dropped to make
 * room on a full disk are punched out (zeros), which replay skips silently.
 *
 * Record layout (format 2), little endian, varints are LEB128:
 *   0 0xC9  1 kind: 0x50 | type (1 entry, 2 tombstone, 3 topic)
 *                   | 0x04 (a tag follows) | 0x08 (a replace key follows)
 *   2 crc32 of the bytes from 6 to the end
 *   6 varint: the length of the rest, then
 *     entry:     varint seq, varint topic number, [u64 tag], [u8 key], line
 *     tombstone: (varint first, varint count) repeated
 *     topic:     varint topic number, topic
 * A measurement of ~30 bytes costs ~11 bytes more on disk (format 1 took 36:
 * a 32-byte header and the topic in every record). A topic record is written
 * again once its last one is more than TOPIC_REDEF_BYTES behind, so damage to
 * one costs at most that much of its topic's lines.
 *
 * Compatibility: format 1 records ("\xC8QUE" magic: 32-byte header with u16
 * topic length, u32 data length, u64 seq, u64 tag, then topic and data) are
 * read by replay, and a file holding any is rewritten in format 2 at open,
 * so an agent upgraded over an existing state dir sends what the old one
 * queued. An agent from before format 2 skips format 2 records as damage
 * (warnings; the lines are lost): a downgrade loses what was queued.
 *
 * Memory: a queued line costs one 12-byte slot (file offset, record size,
 * header size, interned topic id, flags) in a per-class ring of mmap'ed
 * blocks that are unmapped as the ring drains; lines are read back (pread,
 * CRC-checked) when outq_take packs a batch, without the lock for plain
 * batches (the entries are marked in flight first). Appends (write) happen
 * under the lock, their fsyncs outside it (group commit). Only records not in
 * a file (volatile entries, a memory-only queue, statuses held while the disk
 * is full) keep their bytes in memory. Sequence numbers and tags live in the
 * records, so they are read back too when needed (tombstones, ordering).
 *
 * Acknowledgements are batched: tombstones are written with the class's next
 * fsync, by outq_tick TOMB_SYNC_MS after the first of them, or when many are
 * pending; a file that has nothing alive left is truncated instead. */
#include "outq.h"

#include "clock.h"
#include "dlog.h"
#include "log.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define OUTQ_MAX_LINE ((unsigned)C8Y_MAX_LINE)
#define OUTQ_MAX_TOPIC 1024u
#define OUTQ_DEFAULT_MAX_BYTES (48u * 1024u * 1024u)
/* Format 1 (read only): a fixed 32-byte header. */
#define REC1_HDR 32u
/* Format 2: magic, kind, crc, the body length (at most 3 bytes of varint),
 * then in an entry at most 10 + 5 bytes of varints, 8 of tag, 1 of key. */
#define REC2_FIXED 6u
#define REC2_HDR_MAX (REC2_FIXED + 3u + 10u + 5u + 8u + 1u)
#define REC_MAX (REC1_HDR + OUTQ_MAX_TOPIC + OUTQ_MAX_LINE)
#define REC_ENTRY 1u
#define REC_TOMB 2u
#define REC_TOPIC 3u
#define KIND_BASE 0x50u
#define KIND_TAG 0x04u
#define KIND_KEY 0x08u
#define REC2_MAGIC 0xC9u
/* A topic record is repeated once the last one is this far behind. */
#define TOPIC_REDEF_BYTES (1u << 20)
/* Pending tombstones written at once beyond this many ranges. */
#define TOMB_PENDING_MAX 256u
/* Tombstones are split so that no record is much larger than an entry:
 * resyncing after damage then costs at most a few KiB per candidate. */
#define TOMB_MAX_RANGES 1024u
/* Rewriting a file costs its live bytes; below this size it is not worth it
 * even when most of the file is garbage. */
#define COMPACT_MIN_BYTES 65536u
/* Read-back window: consecutive records of a class are usually adjacent in
 * its file, so one pread serves many lines of a batch. */
#define RB_WINDOW 65536u
/* Replay streams the files through a buffer of this size. */
#define REPLAY_BUF (1u << 20)
/* Kept free for statuses and alarms: released when the disk is full and
 * nothing else can be dropped, re-created once space is back. */
#define RESERVE_BYTES OUTQ_RESERVE_BYTES
/* How much a full disk makes room for at a time. */
#define ROOM_BYTES (64u * 1024u)
/* Drop reports are rate-limited to one line per this many ms. */
#define DROP_LOG_MS 10000
/* Tombstones of acks are written and fsync'ed with the next data fsync, or
 * by outq_tick this long after the first: losing one in a crash only
 * resends a line. */
#define TOMB_SYNC_MS 1000
#define MAX_TOPICS 65535u

static const unsigned char rec1_magic[4] = {0xC8, 'Q', 'U', 'E'};
static const char default_topic[] = "s/us"; /* topic number 0 */

static const uint32_t crc_table[256] = {
    0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau, 0x076dc419u,
    0x706af48fu, 0xe963a535u, 0x9e6495a3u, 0x0edb8832u, 0x79dcb8a4u,
    0xe0d5e91eu, 0x97d2d988u, 0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u,
    0x90bf1d91u, 0x1db71064u, 0x6ab020f2u, 0xf3b97148u, 0x84be41deu,
    0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u, 0x136c9856u,
    0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu, 0x14015c4fu, 0x63066cd9u,
    0xfa0f3d63u, 0x8d080df5u, 0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u,
    0xa2677172u, 0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu,
    0x35b5a8fau, 0x42b2986cu, 0xdbbbc9d6u, 0xacbcf940u, 0x32d86ce3u,
    0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u, 0x26d930acu, 0x51de003au,
    0xc8d75180u, 0xbfd06116u, 0x21b4f4b5u, 0x56b3c423u, 0xcfba9599u,
    0xb8bda50fu, 0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u,
    0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du, 0x76dc4190u,
    0x01db7106u, 0x98d220bcu, 0xefd5102au, 0x71b18589u, 0x06b6b51fu,
    0x9fbfe4a5u, 0xe8b8d433u, 0x7807c9a2u, 0x0f00f934u, 0x9609a88eu,
    0xe10e9818u, 0x7f6a0dbbu, 0x086d3d2du, 0x91646c97u, 0xe6635c01u,
    0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu, 0x6c0695edu,
    0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u, 0x65b0d9c6u, 0x12b7e950u,
    0x8bbeb8eau, 0xfcb9887cu, 0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u,
    0xfbd44c65u, 0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u,
    0x4adfa541u, 0x3dd895d7u, 0xa4d1c46du, 0xd3d6f4fbu, 0x4369e96au,
    0x346ed9fcu, 0xad678846u, 0xda60b8d0u, 0x44042d73u, 0x33031de5u,
    0xaa0a4c5fu, 0xdd0d7cc9u, 0x5005713cu, 0x270241aau, 0xbe0b1010u,
    0xc90c2086u, 0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
    0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u, 0x59b33d17u,
    0x2eb40d81u, 0xb7bd5c3bu, 0xc0ba6cadu, 0xedb88320u, 0x9abfb3b6u,
    0x03b6e20cu, 0x74b1d29au, 0xead54739u, 0x9dd277afu, 0x04db2615u,
    0x73dc1683u, 0xe3630b12u, 0x94643b84u, 0x0d6d6a3eu, 0x7a6a5aa8u,
    0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u, 0xf00f9344u,
    0x8708a3d2u, 0x1e01f268u, 0x6906c2feu, 0xf762575du, 0x806567cbu,
    0x196c3671u, 0x6e6b06e7u, 0xfed41b76u, 0x89d32be0u, 0x10da7a5au,
    0x67dd4accu, 0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u,
    0xd6d6a3e8u, 0xa1d1937eu, 0x38d8c2c4u, 0x4fdff252u, 0xd1bb67f1u,
    0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu, 0xd80d2bdau, 0xaf0a1b4cu,
    0x36034af6u, 0x41047a60u, 0xdf60efc3u, 0xa867df55u, 0x316e8eefu,
    0x4669be79u, 0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u,
    0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu, 0xc5ba3bbeu,
    0xb2bd0b28u, 0x2bb45a92u, 0x5cb36a04u, 0xc2d7ffa7u, 0xb5d0cf31u,
    0x2cd99e8bu, 0x5bdeae1du, 0x9b64c2b0u, 0xec63f226u, 0x756aa39cu,
    0x026d930au, 0x9c0906a9u, 0xeb0e363fu, 0x72076785u, 0x05005713u,
    0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u, 0x92d28e9bu,
    0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u, 0x86d3d2d4u, 0xf1d4e242u,
    0x68ddb3f8u, 0x1fda836eu, 0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u,
    0x18b74777u, 0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu,
    0x8f659effu, 0xf862ae69u, 0x616bffd3u, 0x166ccf45u, 0xa00ae278u,
    0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u, 0xa7672661u, 0xd06016f7u,
    0x4969474du, 0x3e6e77dbu, 0xaed16a4au, 0xd9d65adcu, 0x40df0b66u,
    0x37d83bf0u, 0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
    0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u, 0xbad03605u,
    0xcdd70693u, 0x54de5729u, 0x23d967bfu, 0xb3667a2eu, 0xc4614ab8u,
    0x5d681b02u, 0x2a6f2b94u, 0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu,
    0x2d02ef8du};

static uint32_t crc32_update(uint32_t crc, const void *data, size_t len) {
  const unsigned char *p = data;
  crc = ~crc;
  while (len--)
    crc = crc_table[(crc ^ *p++) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get16(const unsigned char *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
         ((uint32_t)p[3] << 24);
}

static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

/* ---- in-memory layout ------------------------------------------------- */

enum { ST_DEAD = 0, ST_QUEUED = 1, ST_INFLIGHT = 2 };
#define EF_STATE 3u
#define EF_MEM 4u  /* record bytes in q->mem, not in a file */
#define EF_HELD 8u /* durable class, not written yet: the disk was full */
#define EF_TAGGED 16u
#define EF_V1 32u /* a format 1 record (replayed from an older agent) */

typedef struct ent {
  uint32_t off;   /* file offset (low 32 bits) or memory slot */
  uint16_t rlen;  /* record size */
  uint16_t topic; /* interned topic id */
  uint8_t offhi;  /* file offset bits 32..39 */
  uint8_t flags;
  uint8_t key;  /* replace key (inventory), 0 if none */
  uint8_t hlen; /* record bytes before the line */
} ent;
_Static_assert(sizeof(ent) == 12, "a queued line costs 12 bytes");

#define BLK_SHIFT 12
#define BLK_N (1u << BLK_SHIFT)
#define BLK_BYTES (BLK_N * sizeof(ent))

/* Positions grow forever; [head, tail) is held in blocks of BLK_N slots.
 * No entry before cur is queued (they are dead or in flight). */
typedef struct ring {
  ent **blk;
  size_t nblk, capblk;
  uint64_t b0; /* block number of blk[0] */
  uint64_t head, tail, cur;
} ring;

typedef struct qtopic {
  char *s; /* NULL = free slot */
  uint32_t len, hash;
  uint32_t next;                /* bucket chain / free list: id + 1 */
  uint32_t live[OUTQ_NCLASSES]; /* queued + in flight, per class */
  uint32_t refs;
  /* Its number in each class file (0: none yet, or the default topic) and
   * where that file's last topic record for it ends. */
  uint32_t fid[OUTQ_NCLASSES];
  uint64_t fdef[OUTQ_NCLASSES];
  bool is_default;
} qtopic;

typedef struct tagref {
  uint64_t pos, tag;
  int cls;
} tagref;

/* Coalescing index node for a queued or in-flight inventory entry; nodes of
 * dead entries are skipped and swept in bulk. */
typedef struct inode {
  uint64_t h; /* 64-bit hash of (topic, line) */
  uint64_t pos;
  uint32_t nl, nt; /* chains: node + 1 */
} inode;

typedef struct qclass {
  ring r;
  size_t count;       /* queued entries */
  size_t nlive;       /* queued + in flight */
  size_t qbytes;      /* payload + topic bytes of queued entries */
  size_t nheld;       /* held in memory because the disk was full */
  dlog *log;          /* NULL without a directory */
  char *name;         /* file name inside the directory */
  char *path;         /* for messages */
  uint64_t live;      /* bytes of records of entries still alive */
  size_t ndisk;       /* alive entries that have a record */
  uint32_t next_fid;  /* next topic number in this file */
  int64_t tomb_since; /* when the first pending tombstone came, or 0 */
  int warned;         /* an I/O failure was logged; stay quiet until success */
} qclass;

typedef struct bent {
  uint64_t pos, seq;
} bent;

typedef struct batch {
  uint64_t id;
  int cls;
  bent *e;
  size_t n;
} batch;

typedef struct range {
  uint64_t first, count;
} range;

/* Growable list of deleted sequence numbers, written as one tombstone. */
typedef struct tomb {
  range *r;
  size_t n, cap;
} tomb;

struct outq {
  pthread_mutex_t mu;
  qclass c[OUTQ_NCLASSES];
  int fsync_ms[OUTQ_NCLASSES];
  size_t max_bytes;
  size_t bytes;
  uint64_t next_seq;
  uint64_t next_batch;
  batch *bt;
  size_t nbt, capbt;
  size_t inflight;
  /* interned topics */
  qtopic *tp;
  size_t ntp, captp;
  uint32_t tpfree; /* id + 1 */
  uint32_t *tpb;
  size_t ntpb, ntopics;
  /* records kept in memory */
  unsigned char **mem;
  size_t nmem, capmem;
  uint32_t *memfree;
  size_t nmemfree, capmemfree;
  /* tagged entries, for outq_remove_tag */
  tagref *tags;
  size_t ntags, captags, ntagged;
  /* inventory coalescing index */
  inode *in;
  size_t nin, capin, ninused;
  uint32_t infree;
  uint32_t *inl, *inkey;
  size_t ninb;
  /* read-back window */
  unsigned char *rb;
  int rb_cls;
  uint64_t rb_off;
  size_t rb_len;
  int dirfd;
  int lockfd;
  int resfd;        /* the space reserve, -1 if none */
  int reserve_out;  /* 0: in place, else to be (re)created */
  int reserve_busy; /* being allocated, without the lock */
  int64_t reserve_try;
  int disk_full; /* a write failed for lack of space and was not yet healed */
  char *dir;
  tomb tombs[OUTQ_NCLASSES];          /* pending tombstones per class */
  uint64_t droplog[2][OUTQ_NCLASSES]; /* unreported drops: bound, disk */
  int64_t droplog_ms;
  int trim;        /* the queue was large: return memory once it drains */
  int64_t tick_ms; /* the last outq_tick, for outq_next_deadline */
  outq_stats st;
  dlog_stats gone; /* of the logs replaced at open (format conversion) */
};

void outq_default_options(outq_options *o, const char *dir) {
  memset(o, 0, sizeof *o);
  o->dir = dir;
  o->max_bytes = OUTQ_DEFAULT_MAX_BYTES;
  o->fsync_ms[OUTQ_OPSTATUS] = OUTQ_FSYNC_ALWAYS;
  o->fsync_ms[OUTQ_ALARM] = OUTQ_FSYNC_ALWAYS;
  o->fsync_ms[OUTQ_EVENT] = 1000;
  o->fsync_ms[OUTQ_INVENTORY] = 1000;
  o->fsync_ms[OUTQ_MEASUREMENT] = 2000;
}

static uint32_t fnv1a(uint32_t h, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++)
    h = (h ^ p[i]) * 16777619u;
  return h;
}

static uint64_t fnv1a64(uint64_t h, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static uint64_t hash_line(const char *topic, size_t tlen, const char *line,
                          size_t llen) {
  uint64_t h = fnv1a64(14695981039346656037ull, topic, tlen);
  h = fnv1a64(h, "", 1);
  return fnv1a64(h, line, llen);
}

/* Room for one more element after the n in array p of *cap elements of
 * elem bytes (doubling, from `first`): the array, moved or not, or NULL
 * (p untouched) on ENOMEM. */
static void *grow(void *p, size_t n, size_t *cap, size_t elem, size_t first) {
  if (n < *cap)
    return p;
  size_t ncap = *cap ? *cap * 2 : first;
  void *np = realloc(p, ncap * elem);
  if (np)
    *cap = ncap;
  return np;
}

static int disk_full_errno(int e) {
  return e == ENOSPC || e == EDQUOT || e == EFBIG;
}

/* ---- ring ------------------------------------------------------------- */

static ent *ent_at(const ring *r, uint64_t pos) {
  return &r->blk[(pos >> BLK_SHIFT) - r->b0][pos & (BLK_N - 1)];
}

static int ent_state(const ent *e) { return e->flags & EF_STATE; }

static void ent_set_state(ent *e, int st) {
  e->flags = (uint8_t)((e->flags & ~EF_STATE) | (unsigned)st);
}

static uint64_t ent_off(const ent *e) {
  return (uint64_t)e->off | ((uint64_t)e->offhi << 32);
}

static void ent_set_off(ent *e, uint64_t off) {
  e->off = (uint32_t)off;
  e->offhi = (uint8_t)(off >> 32);
}

/* Appends a zeroed slot; returns it or NULL (ENOMEM). */
static ent *ring_push(ring *r) {
  uint64_t bn = r->tail >> BLK_SHIFT;
  if (r->nblk == 0)
    r->b0 = bn;
  if (bn - r->b0 == r->nblk) {
    ent **nb = grow(r->blk, r->nblk, &r->capblk, sizeof *nb, 8);
    if (!nb)
      return NULL;
    r->blk = nb;
    /* Own mappings, so that a drained ring gives its pages back at once
     * whatever malloc's heap looks like. */
    void *m = mmap(NULL, BLK_BYTES, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
      return NULL;
    r->blk[r->nblk++] = m;
  }
  ent *e = ent_at(r, r->tail);
  memset(e, 0, sizeof *e);
  r->tail++;
  return e;
}

/* Forgets dead slots at the front and unmaps blocks nobody needs. */
static void ring_trim(ring *r) {
  while (r->head < r->tail && ent_state(ent_at(r, r->head)) == ST_DEAD)
    r->head++;
  if (r->cur < r->head)
    r->cur = r->head;
  size_t drop = 0;
  if (r->head == r->tail)
    drop = r->nblk;
  else
    drop = (size_t)((r->head >> BLK_SHIFT) - r->b0);
  if (!drop)
    return;
  for (size_t i = 0; i < drop; i++)
    munmap(r->blk[i], BLK_BYTES);
  memmove(r->blk, r->blk + drop, (r->nblk - drop) * sizeof *r->blk);
  r->nblk -= drop;
  r->b0 += drop;
  if (r->nblk == 0) {
    free(r->blk);
    r->blk = NULL;
    r->capblk = 0;
  }
}

static void ring_free(ring *r) {
  for (size_t i = 0; i < r->nblk; i++)
    munmap(r->blk[i], BLK_BYTES);
  free(r->blk);
  memset(r, 0, sizeof *r);
}

static int ring_has(const ring *r, uint64_t pos) {
  return pos >= r->head && pos < r->tail;
}

/* ---- topics ----------------------------------------------------------- */

static int topic_rehash(outq *q, size_t nb) {
  uint32_t *b = calloc(nb, sizeof *b);
  if (!b)
    return -1;
  for (size_t i = 0; i < q->ntp; i++)
    if (q->tp[i].s) {
      size_t k = q->tp[i].hash & (nb - 1);
      q->tp[i].next = b[k];
      b[k] = (uint32_t)i + 1;
    }
  free(q->tpb);
  q->tpb = b;
  q->ntpb = nb;
  return 0;
}

/* Id of the topic, interned if new (with no reference yet); -1 with errno. */
static int topic_intern(outq *q, const char *s, size_t len) {
  uint32_t h = fnv1a(2166136261u, s, len);
  if (q->ntpb)
    for (uint32_t i = q->tpb[h & (q->ntpb - 1)]; i; i = q->tp[i - 1].next) {
      qtopic *t = &q->tp[i - 1];
      if (t->hash == h && t->len == len && memcmp(t->s, s, len) == 0)
        return (int)i - 1;
    }
  if (q->ntopics >= MAX_TOPICS) {
    errno = EAGAIN;
    return -1;
  }
  if (q->ntopics + 1 > q->ntpb / 2 &&
      topic_rehash(q, q->ntpb ? q->ntpb * 2 : 64) < 0)
    return -1;
  uint32_t id;
  if (q->tpfree) {
    id = q->tpfree - 1;
    q->tpfree = q->tp[id].next;
  } else {
    qtopic *nt = grow(q->tp, q->ntp, &q->captp, sizeof *nt, 16);
    if (!nt)
      return -1;
    q->tp = nt;
    id = (uint32_t)q->ntp++;
  }
  qtopic *t = &q->tp[id];
  memset(t, 0, sizeof *t);
  t->s = malloc(len + 1);
  if (!t->s) {
    t->next = q->tpfree;
    q->tpfree = id + 1;
    return -1;
  }
  memcpy(t->s, s, len);
  t->s[len] = '\0';
  t->len = (uint32_t)len;
  t->hash = h;
  t->is_default =
      len == sizeof default_topic - 1 && memcmp(s, default_topic, len) == 0;
  size_t k = h & (q->ntpb - 1);
  t->next = q->tpb[k];
  q->tpb[k] = id + 1;
  q->ntopics++;
  return (int)id;
}

/* Frees the topic once nothing refers to it. */
static void topic_release(outq *q, uint32_t id) {
  qtopic *t = &q->tp[id];
  if (t->refs)
    return;
  for (uint32_t *pp = &q->tpb[t->hash & (q->ntpb - 1)]; *pp;
       pp = &q->tp[*pp - 1].next)
    if (*pp == id + 1) {
      *pp = t->next;
      break;
    }
  free(t->s);
  t->s = NULL;
  t->next = q->tpfree;
  q->tpfree = id + 1;
  q->ntopics--;
}

static void topic_ref(outq *q, uint32_t id, int cls) {
  q->tp[id].refs++;
  q->tp[id].live[cls]++;
}

static void topic_unref(outq *q, uint32_t id, int cls) {
  q->tp[id].refs--;
  q->tp[id].live[cls]--;
  topic_release(q, id);
}

/* ---- records kept in memory ------------------------------------------- */

static int mem_put(outq *q, const unsigned char *rec, size_t len,
                   uint32_t *slot) {
  unsigned char *p = malloc(len);
  if (!p)
    return -1;
  memcpy(p, rec, len);
  if (q->nmemfree) {
    *slot = q->memfree[--q->nmemfree];
  } else {
    unsigned char **nm = grow(q->mem, q->nmem, &q->capmem, sizeof *nm, 16);
    if (!nm) {
      free(p);
      return -1;
    }
    q->mem = nm;
    *slot = (uint32_t)q->nmem++;
  }
  q->mem[*slot] = p;
  return 0;
}

static void mem_del(outq *q, uint32_t slot) {
  free(q->mem[slot]);
  q->mem[slot] = NULL;
  uint32_t *nf = grow(q->memfree, q->nmemfree, &q->capmemfree, sizeof *nf, 16);
  if (!nf)
    return; /* the slot is simply not reused */
  q->memfree = nf;
  q->memfree[q->nmemfree++] = slot;
  if (q->nmemfree == q->nmem) {
    free(q->mem);
    free(q->memfree);
    q->mem = NULL;
    q->memfree = NULL;
    q->nmem = q->capmem = q->nmemfree = q->capmemfree = 0;
  }
}

/* ---- records ---------------------------------------------------------- */

static size_t put_varint(unsigned char *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (unsigned char)v;
  return n;
}

/* Reads a varint from [*p, end); false if it is cut off or too long. */
static bool get_varint(const unsigned char **p, const unsigned char *end,
                       uint64_t *v) {
  uint64_t r = 0;
  for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
    unsigned char b = *(*p)++;
    r |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* Writes magic, kind, body length and CRC around a body that the caller
 * placed at p + off, where off = rec2_hdr_size(blen); returns the record
 * size. */
static size_t rec2_hdr_size(size_t blen) {
  return REC2_FIXED + varint_len(blen);
}

static size_t rec2_seal(unsigned char *p, unsigned kind, size_t blen) {
  p[0] = REC2_MAGIC;
  p[1] = (unsigned char)kind;
  size_t h = REC2_FIXED + put_varint(p + REC2_FIXED, blen);
  put32(p + 2, crc32_update(0, p + REC2_FIXED, h - REC2_FIXED + blen));
  return h + blen;
}

/* An entry record; its size, and in *hlen the bytes before the line. p has
 * room for REC2_HDR_MAX + llen. */
static size_t encode_entry(unsigned char *p, uint8_t key, uint32_t fid,
                           const char *line, size_t llen, uint64_t seq,
                           uint64_t tag, uint8_t *hlen) {
  unsigned char pre[32];
  size_t n = put_varint(pre, seq);
  n += put_varint(pre + n, fid);
  unsigned kind = KIND_BASE | REC_ENTRY;
  if (tag) {
    kind |= KIND_TAG;
    put64(pre + n, tag);
    n += 8;
  }
  if (key) {
    kind |= KIND_KEY;
    pre[n++] = key;
  }
  size_t blen = n + llen, off = rec2_hdr_size(blen);
  memcpy(p + off, pre, n);
  memcpy(p + off + n, line, llen);
  *hlen = (uint8_t)(off + n);
  return rec2_seal(p, kind, blen);
}

/* A topic record for topic number fid; p has room for REC2_HDR_MAX +
 * tlen. */
static size_t encode_topic(unsigned char *p, uint32_t fid, const char *topic,
                           size_t tlen) {
  unsigned char pre[8];
  size_t n = put_varint(pre, fid);
  size_t blen = n + tlen, off = rec2_hdr_size(blen);
  memcpy(p + off, pre, n);
  memcpy(p + off + n, topic, tlen);
  return rec2_seal(p, KIND_BASE | REC_TOPIC, blen);
}

typedef struct rec {
  unsigned type;
  int format; /* 1 or 2 */
  uint8_t key;
  uint64_t seq, tag;
  uint32_t fid;               /* format 2 entries and topic records */
  const unsigned char *topic; /* format 1 entries, topic records */
  uint32_t tlen;              /* of topic */
  const unsigned char *data;  /* the line, or the tombstone body */
  uint32_t dlen;
  size_t len;  /* the whole record */
  size_t hlen; /* format 2 entries: bytes before data */
} rec;

/* Validates one format 1 record at p. */
static int rec1_parse(const unsigned char *p, size_t avail, rec *r) {
  if (avail < REC1_HDR || memcmp(p, rec1_magic, 4) != 0)
    return -1;
  r->format = 1;
  r->type = p[8];
  r->key = p[9];
  r->tlen = get16(p + 10);
  r->dlen = get32(p + 12);
  r->seq = get64(p + 16);
  r->tag = get64(p + 24);
  r->fid = 0;
  if (r->type == REC_ENTRY) {
    if (r->tlen == 0 || r->tlen > OUTQ_MAX_TOPIC || r->dlen == 0 ||
        r->dlen > OUTQ_MAX_LINE || r->seq == 0 || r->seq == UINT64_MAX)
      return -1;
  } else if (r->type == REC_TOMB) {
    if (r->tlen != 0 || r->dlen == 0 || r->dlen % 16 != 0 ||
        r->dlen > TOMB_MAX_RANGES * 16 || r->seq != 0 || r->tag != 0 ||
        r->key != 0)
      return -1;
  } else {
    return -1;
  }
  r->len = REC1_HDR + (size_t)r->tlen + r->dlen;
  if (r->len > avail || crc32_update(0, p + 8, r->len - 8) != get32(p + 4))
    return -1;
  r->topic = p + REC1_HDR;
  r->data = r->topic + r->tlen;
  r->hlen = REC1_HDR + r->tlen;
  if (r->type == REC_ENTRY)
    return memchr(r->topic, 0, r->tlen) || memchr(r->data, 0, r->dlen) ? -1 : 0;
  for (size_t i = 0; i < r->dlen; i += 16) {
    uint64_t first = get64(r->data + i), count = get64(r->data + i + 8);
    if (first == 0 || count == 0 || first > UINT64_MAX - count)
      return -1;
  }
  return 0;
}

/* Checks the ranges of a format 2 tombstone body. */
static bool tomb2_valid(const unsigned char *b, const unsigned char *end) {
  size_t n = 0;
  while (b < end) {
    uint64_t first, count;
    if (!get_varint(&b, end, &first) || !get_varint(&b, end, &count) ||
        first == 0 || count == 0 || first > UINT64_MAX - count ||
        ++n > TOMB_MAX_RANGES)
      return false;
  }
  return n > 0;
}

/* Validates one format 2 record at p. */
static int rec2_parse(const unsigned char *p, size_t avail, rec *r) {
  if (avail < REC2_FIXED + 1 || p[0] != REC2_MAGIC)
    return -1;
  unsigned kind = p[1];
  if ((kind & 0xF0u) != KIND_BASE)
    return -1;
  const unsigned char *b = p + REC2_FIXED, *end = p + avail;
  uint64_t blen;
  if (!get_varint(&b, end > b + 3 ? b + 3 : end, &blen) ||
      blen > (uint64_t)(end - b))
    return -1;
  end = b + blen;
  r->format = 2;
  r->type = kind & 3u;
  r->len = (size_t)(end - p);
  r->key = 0;
  r->seq = r->tag = 0;
  r->fid = 0;
  r->topic = NULL;
  r->tlen = 0;
  if (crc32_update(0, p + REC2_FIXED, r->len - REC2_FIXED) != get32(p + 2))
    return -1;
  uint64_t v;
  if (r->type == REC_ENTRY) {
    if (!get_varint(&b, end, &r->seq) || r->seq == 0 || r->seq == UINT64_MAX ||
        !get_varint(&b, end, &v) || v > UINT32_MAX)
      return -1;
    r->fid = (uint32_t)v;
    if (kind & KIND_TAG) {
      if (end - b < 8 || !(r->tag = get64(b)))
        return -1;
      b += 8;
    }
    if (kind & KIND_KEY) {
      if (b >= end || !(r->key = *b++))
        return -1;
    }
    r->data = b;
    r->dlen = (uint32_t)(end - b);
    r->hlen = (size_t)(b - p);
    if (r->dlen == 0 || r->dlen > OUTQ_MAX_LINE || r->hlen > 255 ||
        memchr(r->data, 0, r->dlen))
      return -1;
    return 0;
  }
  if (kind & (KIND_TAG | KIND_KEY))
    return -1;
  if (r->type == REC_TOMB) {
    r->data = b;
    r->dlen = (uint32_t)(end - b);
    return tomb2_valid(b, end) ? 0 : -1;
  }
  if (r->type == REC_TOPIC) {
    if (!get_varint(&b, end, &v) || v == 0 || v > UINT32_MAX)
      return -1;
    r->fid = (uint32_t)v;
    r->topic = b;
    r->tlen = (uint32_t)(end - b);
    return r->tlen == 0 || r->tlen > OUTQ_MAX_TOPIC ||
                   memchr(r->topic, 0, r->tlen) ||
                   memchr(r->topic, '\n', r->tlen)
               ? -1
               : 0;
  }
  return -1;
}

/* Validates one record of either format at p; 0 if it is complete, intact
 * and sane. */
static int rec_parse(const unsigned char *p, size_t avail, rec *r) {
  if (avail > 0 && p[0] == REC2_MAGIC)
    return rec2_parse(p, avail, r);
  return rec1_parse(p, avail, r);
}

/* Calls fn for each range of a tombstone record. */
static void tomb_ranges(const rec *r, void (*fn)(void *, uint64_t, uint64_t),
                        void *ctx) {
  if (r->format == 1) {
    for (size_t i = 0; i < r->dlen; i += 16)
      fn(ctx, get64(r->data + i), get64(r->data + i + 8));
    return;
  }
  const unsigned char *b = r->data, *end = r->data + r->dlen;
  uint64_t first, count;
  while (b < end && get_varint(&b, end, &first) && get_varint(&b, end, &count))
    fn(ctx, first, count);
}

static void io_warn(qclass *c, const char *what) {
  if (!c->warned)
    log_warning("outq: %s: %s: %s", c->path, what, strerror(errno));
  c->warned = 1;
}

static ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

/* The record of a live entry, read back (files) and checked into *r; NULL
 * if it is unreadable or damaged (logged). The pointer stays valid until
 * the next read-back or file change. */
static const unsigned char *rec_get(outq *q, int cls, const ent *e, rec *r) {
  const unsigned char *p;
  qclass *c = &q->c[cls];
  uint64_t off = ent_off(e);
  if (e->flags & EF_MEM) {
    p = q->mem[e->off];
  } else {
    if (q->rb_cls != cls || off < q->rb_off ||
        off + e->rlen > q->rb_off + q->rb_len) {
      if (!q->rb && !(q->rb = malloc(RB_WINDOW + REC_MAX)))
        return NULL;
      uint64_t fsize = dlog_size(c->log);
      size_t want = RB_WINDOW;
      if (off + want > fsize)
        want = fsize > off ? (size_t)(fsize - off) : 0;
      if (want < e->rlen)
        want = e->rlen;
      ssize_t n = pread_full(dlog_fd(c->log), q->rb, want, off);
      q->rb_cls = -1;
      if (n < (ssize_t)e->rlen) {
        if (n >= 0)
          errno = EIO;
        io_warn(c, "reading back a queued line");
        return NULL;
      }
      q->rb_cls = cls;
      q->rb_off = off;
      q->rb_len = (size_t)n;
    }
    p = q->rb + (off - q->rb_off);
  }
  bool v1 = (e->flags & EF_V1) != 0;
  if (rec_parse(p, e->rlen, r) < 0 || r->type != REC_ENTRY ||
      r->len != e->rlen || (r->format == 1) != v1 ||
      (!v1 && r->hlen != e->hlen)) {
    log_error("outq: %s: the record at offset %" PRIu64
              " is damaged on disk; its line is lost",
              c->path ? c->path : "memory", off);
    return NULL;
  }
  return p;
}

/* The length of an entry's line, from its slot alone. */
static size_t ent_llen(const outq *q, const ent *e) {
  if (e->flags & EF_V1)
    return (size_t)e->rlen - REC1_HDR - q->tp[e->topic].len;
  return (size_t)e->rlen - e->hlen;
}

static void rb_invalidate(outq *q, int cls) {
  if (q->rb_cls == cls)
    q->rb_cls = -1;
}

/* ---- files ------------------------------------------------------------- */

static int class_dirty(const qclass *c) { return dlog_dirty(c->log); }

static void tomb_write(outq *q, int cls);

/* Makes the class file durable up to append generation gen, writing the
 * pending tombstones first so that they ride on the same fsync. The fsync
 * runs without q->mu (group commit). Called with q->mu held. */
static int sync_upto(outq *q, int cls, uint64_t gen) {
  qclass *c = &q->c[cls];
  if (q->tombs[cls].n)
    tomb_write(q, cls);
  return dlog_sync(c->log, gen);
}

static void tomb_add(outq *q, int cls, uint64_t seq) {
  tomb *t = &q->tombs[cls];
  if (!t->n)
    q->c[cls].tomb_since = clock_mono_ms();
  if (t->n && t->r[t->n - 1].first + t->r[t->n - 1].count == seq) {
    t->r[t->n - 1].count++;
    return;
  }
  range *nr = grow(t->r, t->n, &t->cap, sizeof *nr, 8);
  if (!nr)
    return; /* the entry reappears after a restart: a duplicate, no loss */
  t->r = nr;
  t->r[t->n].first = seq;
  t->r[t->n].count = 1;
  t->n++;
}

/* Appends the pending tombstones of the class to its file. A failure only
 * means the entries may be sent again after a restart. */
static void tomb_write(outq *q, int cls) {
  qclass *c = &q->c[cls];
  tomb *t = &q->tombs[cls];
  if (c->log) {
    for (size_t i = 0; i < t->n; i += TOMB_MAX_RANGES) {
      size_t n = t->n - i < TOMB_MAX_RANGES ? t->n - i : TOMB_MAX_RANGES;
      unsigned char stackbuf[REC2_HDR_MAX + 16 * 20];
      size_t cap = REC2_HDR_MAX + n * 20;
      unsigned char *p = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
      if (!p)
        break;
      unsigned char *body = p + REC2_FIXED + 3;
      size_t blen = 0;
      for (size_t k = 0; k < n; k++) {
        blen += put_varint(body + blen, t->r[i + k].first);
        blen += put_varint(body + blen, t->r[i + k].count);
      }
      size_t off = rec2_hdr_size(blen);
      memmove(p + off, body, blen);
      size_t len = rec2_seal(p, KIND_BASE | REC_TOMB, blen);
      if (dlog_append(c->log, p, len) < 0)
        io_warn(c, "writing acknowledgement");
      else
        c->warned = 0;
      if (p != stackbuf)
        free(p);
    }
  }
  t->n = 0;
  c->tomb_since = 0;
  if (t->cap > 64) {
    free(t->r);
    t->r = NULL;
    t->cap = 0;
  }
}

/* Sequence number of a live entry (read back for file entries); 0 if its
 * record is unreadable. */
static uint64_t ent_seq(outq *q, int cls, const ent *e) {
  rec r;
  return rec_get(q, cls, e, &r) ? r.seq : 0;
}

/* Forgets a live entry. seq: its number for the tombstone, 0 = no tombstone
 * (unreadable record or punched out). */
static void ent_kill(outq *q, int cls, uint64_t pos, uint64_t seq) {
  qclass *c = &q->c[cls];
  ent *e = ent_at(&c->r, pos);
  size_t bytes = e->rlen;
  if (ent_state(e) == ST_QUEUED) {
    c->count--;
    c->qbytes -= bytes;
  } else {
    q->inflight--;
  }
  c->nlive--;
  q->bytes -= bytes;
  if (e->flags & EF_MEM) {
    mem_del(q, e->off);
    if (e->flags & EF_HELD) {
      c->nheld--;
      q->st.held--;
    }
  } else {
    c->live -= e->rlen;
    c->ndisk--;
    if (seq)
      tomb_add(q, cls, seq);
  }
  if (e->flags & EF_TAGGED)
    q->ntagged--;
  topic_unref(q, e->topic, cls);
  e->flags = ST_DEAD;
}

/* Kills a queued entry whose sequence number is not known yet. */
static void ent_drop(outq *q, int cls, uint64_t pos) {
  ent *e = ent_at(&q->c[cls].r, pos);
  uint64_t seq = (e->flags & EF_MEM) ? 0 : ent_seq(q, cls, e);
  ent_kill(q, cls, pos, seq);
}

/* First queued position of the class at or after cur; advances cur. */
static int first_queued(outq *q, int cls, uint64_t *pos) {
  ring *r = &q->c[cls].r;
  if (!q->c[cls].count)
    return 0;
  for (; r->cur < r->tail; r->cur++)
    if (ent_state(ent_at(r, r->cur)) == ST_QUEUED) {
      *pos = r->cur;
      return 1;
    }
  return 0;
}

/* ---- compaction -------------------------------------------------------- */

/* The class file starts over: no topic has a number in it. */
static void topics_forget_file(outq *q, int cls) {
  for (size_t i = 0; i < q->ntp; i++) {
    q->tp[i].fid[cls] = 0;
    q->tp[i].fdef[cls] = 0;
  }
  q->c[cls].next_fid = 1;
}

typedef struct swap_ctx {
  outq *q;
  int cls;
} swap_ctx;

static int cmp_dlog_range(const void *a, const void *b) {
  const dlog_range *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

/* At a rewrite's swap (q->mu held): every live record's new offset. */
static void rewrite_swapped(void *ctx, const dlog_map *m) {
  swap_ctx *sc = ctx;
  outq *q = sc->q;
  qclass *c = &q->c[sc->cls];
  ring *r = &c->r;
  for (uint64_t pos = r->head; pos < r->tail; pos++) {
    ent *e = ent_at(r, pos);
    if (ent_state(e) == ST_DEAD || (e->flags & EF_MEM))
      continue;
    uint64_t off = dlog_map_offset(m, ent_off(e));
    if (off == UINT64_MAX) {
      /* Not kept: cannot happen for a live record; dropped, not lost
       * silently. */
      log_error("outq: %s: a queued line was not kept by the rewrite", c->path);
      ent_kill(q, sc->cls, pos, 0);
      continue;
    }
    ent_set_off(e, off);
  }
  /* The topic records went to the start of the new file. */
  for (size_t i = 0; i < q->ntp; i++)
    if (q->tp[i].fid[sc->cls])
      q->tp[i].fdef[sc->cls] = 0;
  rb_invalidate(q, sc->cls);
  c->warned = 0;
}

/* Rewrites the class file with only its live records (and the topic
 * records they need), through dlog_rewrite: q->mu is released while the
 * records are copied and the new file is synced. */
static int file_rewrite(outq *q, int cls) {
  qclass *c = &q->c[cls];
  ring *r = &c->r;
  dlog_range *keep = malloc((c->ndisk ? c->ndisk : 1) * sizeof *keep);
  size_t n = 0, hcap = 0, hlen = 0;
  unsigned char *head = NULL;
  int rc = keep ? 0 : -1;
  bool in_file_order = true;
  for (uint64_t pos = r->head; rc == 0 && pos < r->tail && n < c->ndisk;
       pos++) {
    ent *e = ent_at(r, pos);
    if (ent_state(e) != ST_DEAD && !(e->flags & EF_MEM)) {
      keep[n] = (dlog_range){ent_off(e), e->rlen};
      in_file_order =
          in_file_order && (n == 0 || keep[n - 1].off < keep[n].off);
      n++;
    }
  }
  if (rc == 0) {
    /* File order, and adjacent records as one range. Ring order is file
     * order unless lines were held (written after newer ones): only then
     * is the sort, under q->mu, needed. */
    if (!in_file_order)
      qsort(keep, n, sizeof *keep, cmp_dlog_range);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
      if (m && keep[m - 1].off + keep[m - 1].len == keep[i].off)
        keep[m - 1].len += keep[i].len;
      else
        keep[m++] = keep[i];
    }
    n = m;
  }
  for (size_t i = 0; rc == 0 && i < q->ntp; i++) {
    qtopic *t = &q->tp[i];
    if (!t->s || !t->fid[cls])
      continue;
    if (hlen + REC2_HDR_MAX + t->len > hcap) {
      size_t ncap = hcap ? 2 * hcap : 4096;
      while (ncap < hlen + REC2_HDR_MAX + t->len)
        ncap *= 2;
      unsigned char *nh = realloc(head, ncap);
      if (!nh) {
        rc = -1;
        break;
      }
      head = nh;
      hcap = ncap;
    }
    hlen += encode_topic(head + hlen, t->fid[cls], t->s, t->len);
  }
  if (rc == 0) {
    swap_ctx sc = {q, cls};
    rc = dlog_rewrite(c->log, head ? head : (const unsigned char *)"", hlen,
                      keep, n, rewrite_swapped, &sc);
  }
  free(keep);
  free(head);
  return rc;
}

/* Keeps a file from growing without bound: empty once everything in it is
 * gone, rewritten when most of it is garbage (only when `rewrite`, since a
 * rewrite costs the live bytes and two fsyncs, and releases q->mu). */
static void maybe_compact(outq *q, int cls, int rewrite) {
  qclass *c = &q->c[cls];
  if (!c->log || dlog_size(c->log) == 0)
    return;
  uint64_t fsize = dlog_size(c->log);
  if (c->ndisk == 0) {
    if (dlog_truncate(c->log) < 0) {
      io_warn(c, "truncate");
      return;
    }
    q->tombs[cls].n = 0; /* nothing left for them to cover */
    c->tomb_since = 0;
    topics_forget_file(q, cls);
    rb_invalidate(q, cls);
    c->live = 0;
    return;
  }
  if (rewrite && fsize >= COMPACT_MIN_BYTES && (fsize - c->live) * 2 > fsize)
    file_rewrite(q, cls);
}

/* After entries died: a file with nothing alive left is emptied (its
 * pending tombstones are not needed then); many pending tombstones are
 * written. The rest waits for the next fsync or outq_tick. */
static void settle_tombs(outq *q) {
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    if (!q->c[c].log)
      continue;
    if (q->c[c].ndisk == 0)
      maybe_compact(q, c, 0);
    else if (q->tombs[c].n > TOMB_PENDING_MAX)
      tomb_write(q, c);
  }
}

/* ---- tags ------------------------------------------------------------- */

static int tag_add(outq *q, int cls, uint64_t pos, uint64_t tag) {
  if (q->ntags > 2 * q->ntagged + 64) {
    size_t k = 0;
    for (size_t i = 0; i < q->ntags; i++) {
      tagref *t = &q->tags[i];
      ring *r = &q->c[t->cls].r;
      if (ring_has(r, t->pos) && ent_state(ent_at(r, t->pos)) != ST_DEAD &&
          (ent_at(r, t->pos)->flags & EF_TAGGED))
        q->tags[k++] = *t;
    }
    q->ntags = k;
  }
  tagref *nt = grow(q->tags, q->ntags, &q->captags, sizeof *nt, 16);
  if (!nt)
    return -1;
  q->tags = nt;
  q->tags[q->ntags++] = (tagref){pos, tag, cls};
  return 0;
}

/* ---- inventory coalescing index -------------------------------------- */

static uint32_t key_bucket(uint32_t topic, uint8_t key) {
  uint32_t k[2] = {topic, key};
  return fnv1a(2166136261u, k, sizeof k);
}

static void index_link(outq *q, uint32_t id) {
  inode *n = &q->in[id];
  ent *e = ent_at(&q->c[OUTQ_INVENTORY].r, n->pos);
  size_t m = q->ninb - 1;
  n->nl = q->inl[n->h & m];
  q->inl[n->h & m] = id + 1;
  n->nt = 0;
  if (e->key) {
    uint32_t b = key_bucket(e->topic, e->key) & m;
    n->nt = q->inkey[b];
    q->inkey[b] = id + 1;
  }
}

static int index_live(outq *q, const inode *n) {
  ring *r = &q->c[OUTQ_INVENTORY].r;
  return ring_has(r, n->pos) && ent_state(ent_at(r, n->pos)) != ST_DEAD;
}

static void index_reset(outq *q) {
  free(q->in);
  free(q->inl);
  free(q->inkey);
  q->in = NULL;
  q->inl = q->inkey = NULL;
  q->nin = q->capin = q->ninused = q->ninb = 0;
  q->infree = 0;
}

/* Drops nodes of dead entries and sizes the tables to what is alive. */
static int index_rebuild(outq *q, size_t want) {
  size_t nb = 64;
  while (nb < want)
    nb *= 2;
  uint32_t *nl = calloc(nb, sizeof *nl), *nt = calloc(nb, sizeof *nt);
  if (!nl || !nt) {
    free(nl);
    free(nt);
    return -1;
  }
  free(q->inl);
  free(q->inkey);
  q->inl = nl;
  q->inkey = nt;
  q->ninb = nb;
  q->infree = 0;
  q->ninused = 0;
  for (size_t i = q->nin; i-- > 0;) {
    if (q->in[i].pos != UINT64_MAX && index_live(q, &q->in[i])) {
      index_link(q, (uint32_t)i);
      q->ninused++;
    } else {
      q->in[i].pos = UINT64_MAX;
      q->in[i].nl = q->infree;
      q->infree = (uint32_t)i + 1;
    }
  }
  return 0;
}

/* Indexes a new inventory entry. Failing only makes coalescing miss it. */
static void index_add(outq *q, uint64_t pos, uint64_t h) {
  size_t live = q->c[OUTQ_INVENTORY].nlive;
  if (q->ninused >= q->ninb || q->ninused > 2 * live + 256) {
    if (live <= 1 && q->ninused) {
      index_reset(q);
    }
    if (index_rebuild(q, 2 * (live + 1)) < 0)
      return;
  }
  uint32_t id;
  if (q->infree) {
    id = q->infree - 1;
    q->infree = q->in[id].nl;
  } else {
    inode *nn = grow(q->in, q->nin, &q->capin, sizeof *nn, 64);
    if (!nn)
      return;
    q->in = nn;
    id = (uint32_t)q->nin++;
  }
  q->in[id].h = h;
  q->in[id].pos = pos;
  index_link(q, id);
  q->ninused++;
}

/* A queued inventory entry identical to (topic, line) that a new push may
 * be folded into; 1 if found. */
static int index_find_dup(outq *q, uint32_t topic, const char *line,
                          size_t llen, uint64_t h, int vol) {
  if (!q->ninb)
    return 0;
  qclass *c = &q->c[OUTQ_INVENTORY];
  for (uint32_t i = q->inl[h & (q->ninb - 1)]; i; i = q->in[i - 1].nl) {
    inode *n = &q->in[i - 1];
    if (n->h != h || !index_live(q, n))
      continue;
    ent *e = ent_at(&c->r, n->pos);
    /* A durable line is not folded into a volatile one: it must survive. */
    if (ent_state(e) != ST_QUEUED || e->topic != topic ||
        !(!(e->flags & EF_MEM) || (e->flags & EF_HELD) || vol || !c->log))
      continue;
    rec r;
    if (rec_get(q, OUTQ_INVENTORY, e, &r) && r.dlen == llen &&
        memcmp(r.data, line, llen) == 0)
      return 1;
  }
  return 0;
}

/* Bytes of the queued inventory entries of (topic, key) that a new entry
 * with that key supersedes; with `kill`, drops them too. */
static size_t index_superseded(outq *q, uint32_t topic, uint8_t key, int kill) {
  if (!q->ninb)
    return 0;
  size_t bytes = 0;
  ring *r = &q->c[OUTQ_INVENTORY].r;
  uint32_t b = key_bucket(topic, key) & (q->ninb - 1);
  for (uint32_t i = q->inkey[b]; i; i = q->in[i - 1].nt) {
    inode *n = &q->in[i - 1];
    if (!index_live(q, n))
      continue;
    ent *e = ent_at(r, n->pos);
    if (ent_state(e) != ST_QUEUED || e->topic != topic || e->key != key)
      continue;
    bytes += e->rlen;
    if (kill) {
      ent_drop(q, OUTQ_INVENTORY, n->pos);
      q->st.coalesced++;
    }
  }
  return bytes;
}

/* ---- size bound and full disks ---------------------------------------- */

static const char *const class_names[OUTQ_NCLASSES] = {
    "statuses", "alarms", "events", "inventory lines", "measurements"};

/* Drops the oldest queued entry of the least important non-empty class among
 * [min_cls, OUTQ_NCLASSES); 0 if one was dropped. */
static int drop_one(outq *q, int min_cls) {
  for (int d = OUTQ_NCLASSES - 1; d >= min_cls; d--) {
    uint64_t pos;
    if (!first_queued(q, d, &pos))
      continue;
    ent_drop(q, d, pos);
    ring_trim(&q->c[d].r);
    q->st.dropped[d]++;
    q->droplog[0][d]++;
    return 0;
  }
  return -1;
}

/* Formats the unreported drops into buf once per DROP_LOG_MS; 1 if there is
 * something to log (after unlocking). */
static int drop_report(outq *q, char *buf, size_t len) {
  int64_t now = clock_mono_ms();
  if (q->droplog_ms && now - q->droplog_ms < DROP_LOG_MS)
    return 0;
  size_t o = 0;
  for (int why = 0; why < 2; why++) {
    int any = 0;
    for (int c = 0; c < OUTQ_NCLASSES; c++) {
      if (!q->droplog[why][c])
        continue;
      if (!any && o < len)
        o += (size_t)snprintf(buf + o, len - o, "%s%s: dropped", o ? "; " : "",
                              why ? "disk full" : "queue full (max_bytes)");
      if (o < len)
        o += (size_t)snprintf(buf + o, len - o, "%s %" PRIu64 " %s",
                              any ? "," : "", q->droplog[why][c],
                              class_names[c]);
      any = 1;
      q->droplog[why][c] = 0;
    }
    uint64_t total = 0;
    for (int c = 0; c < OUTQ_NCLASSES; c++)
      total += why ? q->st.dropped_disk_full[c] : q->st.dropped[c];
    if (any && o < len)
      o += (size_t)snprintf(buf + o, len - o, " (%" PRIu64 " since the start)",
                            total);
  }
  if (!o)
    return 0;
  q->droplog_ms = now;
  return 1;
}

/* Frees disk space by dropping the oldest queued entries of class d and
 * punching their records out of the file (no tombstone needed, none could
 * be written anyway). Returns the bytes freed. */
static uint64_t make_room_in(outq *q, int d) {
  qclass *c = &q->c[d];
  ring *r = &c->r;
  uint64_t freed = 0, ps = 0, pe = 0;
  int punch_ok = 1;
  for (uint64_t pos = r->cur; pos < r->tail && freed < ROOM_BYTES; pos++) {
    ent *e = ent_at(r, pos);
    if (ent_state(e) != ST_QUEUED || (e->flags & EF_MEM))
      continue;
    uint64_t off = ent_off(e), len = e->rlen;
    uint64_t seq = ent_seq(q, d, e);
    ent_kill(q, d, pos, seq); /* tombstone in case punching is refused */
    q->st.dropped_disk_full[d]++;
    q->droplog[1][d]++;
    freed += len;
    if (pe != off) {
      if (pe > ps && dlog_punch(c->log, ps, pe - ps) < 0)
        punch_ok = 0;
      ps = off;
    }
    pe = off + len;
  }
  if (pe > ps && dlog_punch(c->log, ps, pe - ps) < 0)
    punch_ok = 0;
  if (!punch_ok && freed)
    log_warning("outq: %s: cannot punch dropped records out (%s); space "
                "comes back when the file is emptied",
                c->path, strerror(errno));
  rb_invalidate(q, d);
  ring_trim(r);
  if (c->ndisk == 0)
    maybe_compact(q, d, 0); /* emptied: its tombstones are not needed */
  return punch_ok || c->ndisk == 0 ? freed : 0;
}

/* What a full disk takes first. */
static const int room_order[3] = {OUTQ_MEASUREMENT, OUTQ_EVENT, OUTQ_INVENTORY};

/* Appends bytes at the end of the class file (their offset in *off); on a
 * full disk makes room by the drop order (measurements, then events, then
 * inventory; never statuses or alarms) and for statuses and alarms releases
 * the reserve. 0, 1 when making room emptied this very file (the caller's
 * topic numbers are void: it encodes again), or -1 with errno. */
static int append_room(outq *q, int cls, const unsigned char *p, size_t len,
                       uint64_t *off) {
  qclass *c = &q->c[cls];
  for (;;) {
    *off = dlog_size(c->log);
    if (dlog_append(c->log, p, len) == 0)
      return 0;
    int err = errno;
    if (!disk_full_errno(err))
      return -1;
    if (!q->disk_full) {
      q->disk_full = 1;
      q->st.disk_full++;
      log_warning("outq: %s: %s: making room by dropping measurements, "
                  "events, then inventory lines",
                  c->path, strerror(err));
    }
    uint64_t freed = 0;
    uint32_t fids = c->next_fid;
    for (int k = 0; k < 3 && !freed; k++) {
      freed = make_room_in(q, room_order[k]);
      if (room_order[k] == cls)
        break; /* a class takes room only from itself and those before */
    }
    if (c->next_fid < fids)
      return 1;
    if (freed)
      continue;
    if (cls <= OUTQ_ALARM && q->resfd >= 0 && !q->reserve_out &&
        !q->reserve_busy) {
      if (ftruncate(q->resfd, 0) == 0) {
        q->reserve_out = 1;
        log_warning("outq: disk full: released the %u KiB reserve for "
                    "statuses and alarms",
                    RESERVE_BYTES / 1024);
        continue;
      }
    }
    errno = err;
    return -1;
  }
}

/* Bytes a buffer for append_entry needs for a line of llen bytes. */
#define APPEND_BUF(llen) (2 * REC2_HDR_MAX + OUTQ_MAX_TOPIC + (llen))

/* Writes an entry record to the class file, after a topic record for its
 * topic when the file has none (or only one far behind). buf: room for
 * APPEND_BUF(llen). 0 with the record's offset, size and header size, or
 * -1 with errno. */
static int append_entry(outq *q, int cls, uint32_t tp, uint8_t key,
                        const char *line, size_t llen, uint64_t seq,
                        uint64_t tag, unsigned char *buf, uint64_t *off,
                        uint16_t *rlen, uint8_t *hlen) {
  qclass *c = &q->c[cls];
  qtopic *t = &q->tp[tp];
  for (;;) {
    size_t n = 0;
    uint32_t fid = 0;
    bool def = false;
    if (!t->is_default) {
      fid = t->fid[cls] ? t->fid[cls] : c->next_fid;
      def =
          !t->fid[cls] || dlog_size(c->log) - t->fdef[cls] > TOPIC_REDEF_BYTES;
      if (def)
        n = encode_topic(buf, fid, t->s, t->len);
    }
    size_t elen = encode_entry(buf + n, key, fid, line, llen, seq, tag, hlen);
    uint64_t start;
    int rc = append_room(q, cls, buf, n + elen, &start);
    if (rc == 1)
      continue; /* the file was emptied: numbered afresh */
    if (rc < 0)
      return -1;
    if (def) {
      if (!t->fid[cls])
        c->next_fid++;
      t->fid[cls] = fid;
      t->fdef[cls] = start + n;
    }
    *off = start + n;
    *rlen = (uint16_t)elen;
    return 0;
  }
}

/* Writes the class's held entries, oldest first; 0 once none is left. */
static int held_flush(outq *q, int cls) {
  qclass *c = &q->c[cls];
  ring *r = &c->r;
  size_t wrote = 0;
  unsigned char *buf = NULL;
  for (uint64_t pos = r->head; c->nheld && pos < r->tail; pos++) {
    ent *e = ent_at(r, pos);
    if (ent_state(e) == ST_DEAD || !(e->flags & EF_HELD))
      continue;
    rec mr;
    if (rec_parse(q->mem[e->off], e->rlen, &mr) < 0)
      break; /* cannot happen: the agent encoded it itself */
    if (!buf && !(buf = malloc(APPEND_BUF(OUTQ_MAX_LINE))))
      break;
    uint64_t off;
    uint16_t rlen;
    uint8_t hlen;
    if (append_entry(q, cls, e->topic, mr.key, (const char *)mr.data, mr.dlen,
                     mr.seq, mr.tag, buf, &off, &rlen, &hlen) < 0)
      break;
    mem_del(q, e->off);
    e->flags &= (uint8_t) ~(EF_MEM | EF_HELD);
    /* The number of its topic in the file may take another byte. */
    size_t delta = (size_t)rlen - e->rlen;
    q->bytes += delta;
    if (ent_state(e) == ST_QUEUED)
      c->qbytes += delta;
    e->rlen = rlen;
    e->hlen = hlen;
    ent_set_off(e, off);
    c->live += e->rlen;
    c->ndisk++;
    c->nheld--;
    q->st.held--;
    wrote++;
  }
  free(buf);
  if (wrote) {
    c->warned = 0;
    log_notice("outq: %s: disk space is back: wrote %zu held %s%s", c->path,
               wrote, class_names[cls], c->nheld ? " (more still held)" : "");
  }
  return c->nheld ? -1 : 0;
}

/* (Re)allocates the reserve when it is out, at most once a second. The
 * allocation writes blocks: it runs without q->mu (held on entry and on
 * return), and nothing releases the reserve meanwhile. */
static void reserve_make(outq *q) {
  if (q->resfd < 0 || !q->reserve_out || q->reserve_busy)
    return;
  int64_t now = clock_mono_ms();
  if (q->reserve_try && now - q->reserve_try < 1000)
    return;
  q->reserve_try = now;
  q->reserve_busy = 1;
  pthread_mutex_unlock(&q->mu);
  int rc = posix_fallocate(q->resfd, 0, RESERVE_BYTES);
  if (rc != 0 && ftruncate(q->resfd, 0) < 0) {
    /* stays released */
  }
  pthread_mutex_lock(&q->mu);
  q->reserve_busy = 0;
  if (rc == 0) {
    if (q->reserve_out == 1)
      log_notice("outq: disk space is back: the reserve for statuses and "
                 "alarms is restored");
    q->reserve_out = 0;
  }
}

/* ---- replay ----------------------------------------------------------- */

/* Streams a file through a bounded buffer, so that replaying a large
 * backlog does not hold the whole file in memory. */
typedef struct reader {
  int fd;
  unsigned char *buf;
  uint64_t boff, size;
  size_t blen;
} reader;

/* Bytes at pos: at least `want` (<= REPLAY_BUF) unless the file ends. */
static const unsigned char *rd_at(reader *r, uint64_t pos, size_t want,
                                  size_t *avail) {
  uint64_t bend = r->boff + r->blen;
  if (pos < r->boff || pos > bend || (pos + want > bend && bend < r->size)) {
    size_t n = REPLAY_BUF;
    if (pos + n > r->size)
      n = (size_t)(r->size - pos);
    ssize_t got = pread_full(r->fd, r->buf, n, pos);
    if (got < 0)
      got = 0;
    if ((size_t)got < n)
      r->size = pos + (uint64_t)got; /* shrank under us: replay what is there */
    r->boff = pos;
    r->blen = (size_t)got;
  }
  *avail = (size_t)(r->boff + r->blen - pos);
  return r->buf + (pos - r->boff);
}

/* Offset of the next intact record after `from`, or the file size. */
static uint64_t rd_resync(reader *r, uint64_t from) {
  uint64_t s = from;
  while (s + REC2_FIXED + 1 <= r->size) {
    size_t avail;
    const unsigned char *p = rd_at(r, s, RB_WINDOW, &avail);
    const unsigned char *m = NULL;
    for (size_t i = 0; i < avail && !m; i++)
      if (p[i] == REC2_MAGIC || p[i] == rec1_magic[0])
        m = p + i;
    if (!m) {
      if (!avail)
        break;
      s += avail;
      continue;
    }
    uint64_t cand = s + (uint64_t)(m - p);
    rec rr;
    p = rd_at(r, cand, REC_MAX, &avail);
    if (rec_parse(p, avail, &rr) == 0)
      return cand;
    s = cand + 1;
  }
  return r->size;
}

/* Punched-out records read as zeros: skipping them is not damage. */
static int rd_all_zero(reader *r, uint64_t from, uint64_t to) {
  while (from < to) {
    size_t avail;
    const unsigned char *p = rd_at(r, from, RB_WINDOW, &avail);
    if (!avail)
      break;
    size_t n = to - from < avail ? (size_t)(to - from) : avail;
    for (size_t i = 0; i < n; i++)
      if (p[i])
        return 0;
    from += n;
  }
  return 1;
}

static int cmp_range(const void *a, const void *b) {
  const range *x = a, *y = b;
  return x->first < y->first ? -1 : x->first > y->first;
}

/* Merges sorted ranges in place into disjoint ones; returns their number. */
static size_t ranges_merge(range *r, size_t n) {
  size_t out = 0;
  for (size_t i = 0; i < n; i++) {
    if (out && r[i].first <= r[out - 1].first + r[out - 1].count) {
      uint64_t end = r[i].first + r[i].count;
      if (end > r[out - 1].first + r[out - 1].count)
        r[out - 1].count = end - r[out - 1].first;
    } else {
      r[out++] = r[i];
    }
  }
  return out;
}

static int ranges_cover(const range *r, size_t n, uint64_t seq) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r[mid].first <= seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo > 0 && seq - r[lo - 1].first < r[lo - 1].count;
}

typedef struct replay {
  range *rv;
  size_t nr, capr;
  int damaged;
  int oom;
  uint64_t garbage; /* bytes of records no longer needed */
  /* This file's topic numbers: interned topic id + 1, 0 = not defined. */
  uint32_t *fid_topic;
  size_t nfid;
} replay;

static void replay_tomb_range(void *ctx, uint64_t first, uint64_t count) {
  replay *rp = ctx;
  range *nv = grow(rp->rv, rp->nr, &rp->capr, sizeof *nv, 64);
  if (!nv) {
    rp->oom = 1;
    return;
  }
  rp->rv = nv;
  rp->rv[rp->nr].first = first;
  rp->rv[rp->nr].count = count;
  rp->nr++;
}

/* A topic record: the number names the topic in this file from here on
 * (the topic is pinned until the replay ends). */
static int replay_topic(outq *q, int cls, const rec *r, uint64_t end,
                        replay *rp) {
  int tp = topic_intern(q, (const char *)r->topic, r->tlen);
  if (tp < 0)
    return -1;
  if (r->fid >= rp->nfid) {
    size_t n = rp->nfid ? rp->nfid : 16;
    while (n <= r->fid)
      n *= 2;
    uint32_t *nv = realloc(rp->fid_topic, n * sizeof *nv);
    if (!nv) {
      topic_release(q, (uint32_t)tp);
      return -1;
    }
    memset(nv + rp->nfid, 0, (n - rp->nfid) * sizeof *nv);
    rp->fid_topic = nv;
    rp->nfid = n;
  }
  uint32_t old = rp->fid_topic[r->fid];
  if (old != (uint32_t)tp + 1) {
    q->tp[tp].refs++;
    rp->fid_topic[r->fid] = (uint32_t)tp + 1;
    if (old) {
      q->tp[old - 1].refs--;
      topic_release(q, old - 1);
    }
  }
  qtopic *t = &q->tp[tp];
  t->fid[cls] = r->fid;
  t->fdef[cls] = end;
  if (r->fid >= q->c[cls].next_fid)
    q->c[cls].next_fid = r->fid + 1;
  return 0;
}

/* Releases the topics the replay pinned. */
static void replay_unpin(outq *q, replay *rp) {
  for (size_t i = 0; i < rp->nfid; i++)
    if (rp->fid_topic[i]) {
      q->tp[rp->fid_topic[i] - 1].refs--;
      topic_release(q, rp->fid_topic[i] - 1);
    }
  free(rp->fid_topic);
  rp->fid_topic = NULL;
  rp->nfid = 0;
}

/* Adds a replayed entry record (file offset off) of topic tp to the class
 * ring. */
static int replay_entry(outq *q, int cls, const rec *r, uint32_t tp,
                        uint64_t off) {
  qclass *c = &q->c[cls];
  uint64_t pos = c->r.tail;
  ent *e = ring_push(&c->r);
  if (!e)
    return -1;
  e->rlen = (uint16_t)r->len;
  e->topic = (uint16_t)tp;
  if (r->format == 1)
    e->flags |= EF_V1;
  else
    e->hlen = (uint8_t)r->hlen;
  ent_set_off(e, off);
  ent_set_state(e, ST_QUEUED);
  topic_ref(q, tp, cls);
  c->count++;
  c->nlive++;
  c->qbytes += r->len;
  c->live += r->len;
  c->ndisk++;
  q->bytes += r->len;
  q->st.replayed++;
  if (r->tag) {
    e->flags |= EF_TAGGED;
    q->ntagged++;
    if (tag_add(q, cls, pos, r->tag) < 0)
      return -1;
  }
  if (cls == OUTQ_INVENTORY) {
    e->key = r->key;
    index_add(
        q, pos,
        hash_line(q->tp[tp].s, q->tp[tp].len, (const char *)r->data, r->dlen));
  }
  return 0;
}

/* The interned topic of an entry record; -1 when it names a number no
 * topic record defined (damage: logged), -2 on ENOMEM. */
static int replay_entry_topic(outq *q, int cls, const rec *r, uint64_t off,
                              replay *rp) {
  if (r->format == 1) {
    int tp = topic_intern(q, (const char *)r->topic, r->tlen);
    return tp < 0 ? -2 : tp;
  }
  if (r->fid == 0) {
    int tp = topic_intern(q, default_topic, sizeof default_topic - 1);
    return tp < 0 ? -2 : tp;
  }
  if (r->fid < rp->nfid && rp->fid_topic[r->fid])
    return (int)rp->fid_topic[r->fid] - 1;
  log_warning("outq: %s: the record at offset %" PRIu64
              " names topic number %" PRIu32
              ", which no intact topic record defines; its line is lost",
              q->c[cls].path, off, r->fid);
  rp->damaged = 1;
  return -1;
}

/* One pass over the class file: pass 0 collects tombstones, pass 1 loads
 * the entries they do not cover and reports damage. */
static int replay_pass(outq *q, int cls, reader *rd, replay *rp, int pass) {
  qclass *c = &q->c[cls];
  uint64_t pos = 0, last_seq = 0;
  while (pos < rd->size) {
    size_t avail;
    const unsigned char *p = rd_at(rd, pos, REC_MAX, &avail);
    rec r;
    if (rec_parse(p, avail, &r) < 0 ||
        (r.type == REC_ENTRY && r.seq <= last_seq)) {
      uint64_t next = rd_resync(rd, pos + 1);
      rp->damaged = 1;
      if (pass == 1 && !rd_all_zero(rd, pos, next)) {
        if (next < rd->size)
          log_warning("outq: %s: corrupt record at offset %" PRIu64
                      ", skipped %" PRIu64 " bytes to the next valid record",
                      c->path, pos, next - pos);
        else
          log_warning("outq: %s: truncated or corrupt record at offset "
                      "%" PRIu64 ", ignoring the last %" PRIu64 " bytes",
                      c->path, pos, rd->size - pos);
      }
      pos = next;
      continue;
    }
    if (r.type == REC_ENTRY) {
      last_seq = r.seq;
      if (r.seq >= q->next_seq)
        q->next_seq = r.seq + 1;
      if (pass == 1) {
        if (ranges_cover(rp->rv, rp->nr, r.seq)) {
          rp->garbage += r.len;
        } else {
          int tp = replay_entry_topic(q, cls, &r, pos, rp);
          if (tp == -2 ||
              (tp >= 0 && replay_entry(q, cls, &r, (uint32_t)tp, pos) < 0))
            return -1;
          if (tp == -1)
            rp->garbage += r.len;
        }
      }
    } else if (r.type == REC_TOPIC) {
      if (pass == 1 && replay_topic(q, cls, &r, pos + r.len, rp) < 0)
        return -1;
    } else if (pass == 0) {
      tomb_ranges(&r, replay_tomb_range, rp);
      if (rp->oom)
        return -1;
    } else {
      rp->garbage += r.len;
    }
    pos += r.len;
  }
  if (pass == 0 && rp->nr) {
    qsort(rp->rv, rp->nr, sizeof *rp->rv, cmp_range);
    rp->nr = ranges_merge(rp->rv, rp->nr);
  }
  return 0;
}

/* Loads the class file: entries minus tombstones, in sequence order. */
static int replay_file(outq *q, int cls, char *err, size_t errlen) {
  qclass *c = &q->c[cls];
  reader rd = {.fd = dlog_fd(c->log), .size = dlog_size(c->log)};
  replay rp = {0};
  rd.buf = malloc(REPLAY_BUF);
  int rc = rd.buf ? C8Y_OK : C8Y_ENOMEM;
  c->next_fid = 1;
  for (int pass = 0; rc == 0 && pass < 2; pass++) {
    rd.boff = rd.blen = 0;
    rp.damaged = 0;
    rc = replay_pass(q, cls, &rd, &rp, pass) < 0 ? C8Y_ENOMEM : C8Y_OK;
  }
  free(rd.buf);
  free(rp.rv);
  replay_unpin(q, &rp);
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", c->path, strerror(ENOMEM));
    return rc;
  }
  /* Start from a clean file: damage would otherwise be reported again on
   * every start, and garbage left from before the restart is dropped. */
  if (rp.damaged || rp.garbage) {
    pthread_mutex_lock(&q->mu);
    if (c->ndisk == 0)
      maybe_compact(q, cls, 0);
    else
      file_rewrite(q, cls);
    pthread_mutex_unlock(&q->mu);
  }
  return 0;
}

/* ---- open and close --------------------------------------------------- */

/* The full-disk state ends once nothing is held and the reserve is back
 * (or, without one, there is room for it again). */
static void disk_recovered(outq *q) {
  if (!q->disk_full || q->st.held)
    return;
  if (q->resfd >= 0) {
    reserve_make(q);
    if (q->reserve_out)
      return;
  } else {
    struct statvfs sv;
    if (fstatvfs(q->dirfd, &sv) < 0 ||
        (uint64_t)sv.f_bavail * sv.f_frsize < RESERVE_BYTES)
      return;
  }
  q->disk_full = 0;
  log_notice("outq: disk space is back: queueing to %s normally again", q->dir);
}

void outq_close(outq *q) {
  if (!q)
    return;
  pthread_mutex_lock(&q->mu);
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    qclass *qc = &q->c[c];
    if (qc->log)
      dlog_wait_idle(qc->log);
    if (qc->nheld && held_flush(q, c) < 0)
      log_error("outq: %s: the disk is still full: %zu held %s are lost",
                qc->path, qc->nheld, class_names[c]);
    if (qc->log) {
      if (qc->ndisk == 0)
        maybe_compact(q, c, 0);
      else
        tomb_write(q, c);
      dlog_close(qc->log); /* fsyncs what is not durable yet */
      qc->log = NULL;
    }
    ring_free(&qc->r);
    free(qc->name);
    free(qc->path);
    free(q->tombs[c].r);
  }
  char msg[512];
  q->droplog_ms = 0; /* whatever was not reported yet */
  if (drop_report(q, msg, sizeof msg))
    log_warning("outq: %s", msg);
  for (size_t i = 0; i < q->nmem; i++)
    free(q->mem[i]);
  free(q->mem);
  free(q->memfree);
  for (size_t i = 0; i < q->ntp; i++)
    free(q->tp[i].s);
  free(q->tp);
  free(q->tpb);
  free(q->tags);
  index_reset(q);
  for (size_t b = 0; b < q->nbt; b++)
    free(q->bt[b].e);
  free(q->bt);
  free(q->rb);
  if (q->resfd >= 0)
    close(q->resfd);
  if (q->lockfd >= 0)
    close(q->lockfd); /* releases the flock */
  if (q->dirfd >= 0)
    close(q->dirfd);
  free(q->dir);
  pthread_mutex_unlock(&q->mu);
  pthread_mutex_destroy(&q->mu);
  free(q);
}

static int open_dir(outq *q, char *err, size_t errlen) {
  if (mkdir(q->dir, 0700) < 0 && errno != EEXIST) {
    snprintf(err, errlen, "queue dir %s: %s", q->dir, strerror(errno));
    return C8Y_EIO;
  }
  q->dirfd = open(q->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (q->dirfd < 0) {
    snprintf(err, errlen, "queue dir %s: %s", q->dir, strerror(errno));
    return C8Y_EIO;
  }
  /* Two processes appending to the same logs would corrupt each other. */
  q->lockfd =
      openat(q->dirfd, "queue.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (q->lockfd < 0) {
    snprintf(err, errlen, "queue dir %s: queue.lock: %s", q->dir,
             strerror(errno));
    return C8Y_EIO;
  }
  if (flock(q->lockfd, LOCK_EX | LOCK_NB) < 0) {
    bool busy = errno == EWOULDBLOCK;
    snprintf(err, errlen, "queue dir %s: %s", q->dir,
             busy ? "in use by another process" : strerror(errno));
    return busy ? C8Y_EEXIST : C8Y_EIO;
  }
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    qclass *qc = &q->c[c];
    if (dlog_open(q->dirfd, q->dir, qc->name, &q->mu, &qc->log, err, errlen) <
        0)
      return C8Y_EIO;
    int rc = replay_file(q, c, err, errlen);
    if (rc < 0)
      return rc;
  }
  /* Space a full disk cannot take from statuses and alarms. Without it
   * (e.g. the disk is already full) the queue still works. */
  q->resfd =
      openat(q->dirfd, "queue.reserve", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (q->resfd >= 0) {
    struct stat sb;
    /* 2: not there yet (quiet); 1: released for a full disk (logged) */
    q->reserve_out =
        fstat(q->resfd, &sb) < 0 || sb.st_size < RESERVE_BYTES ? 2 : 0;
    pthread_mutex_lock(&q->mu);
    reserve_make(q);
    pthread_mutex_unlock(&q->mu);
  }
  if (fsync(q->dirfd) < 0) {
    snprintf(err, errlen, "queue dir %s: fsync: %s", q->dir, strerror(errno));
    return C8Y_EIO;
  }
  return 0;
}

int outq_open(const outq_options *opts, outq **out, char *err, size_t errlen) {
  outq_options def;
  if (!opts) {
    outq_default_options(&def, NULL);
    opts = &def;
  }
  *out = NULL;
  outq *q = calloc(1, sizeof *q);
  if (!q) {
    snprintf(err, errlen, "queue: %s", strerror(ENOMEM));
    return C8Y_ENOMEM;
  }
  pthread_mutex_init(&q->mu, NULL);
  q->max_bytes = opts->max_bytes ? opts->max_bytes : OUTQ_DEFAULT_MAX_BYTES;
  q->next_seq = 1;
  q->dirfd = q->lockfd = q->resfd = -1;
  q->rb_cls = -1;
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    q->fsync_ms[c] = opts->fsync_ms[c];
    q->c[c].next_fid = 1;
  }
  int ok = 1;
  if (opts->dir) {
    q->dir = strdup(opts->dir);
    ok = q->dir != NULL;
    for (int c = 0; ok && c < OUTQ_NCLASSES; c++) {
      ok = asprintf(&q->c[c].name, "queue-%d.log", c) >= 0 &&
           asprintf(&q->c[c].path, "%s/queue-%d.log", opts->dir, c) >= 0;
      if (!ok)
        q->c[c].name = q->c[c].path = NULL;
    }
  }
  if (!ok) {
    snprintf(err, errlen, "queue: %s", strerror(ENOMEM));
    outq_close(q);
    return C8Y_ENOMEM;
  }
  int rc = opts->dir ? open_dir(q, err, errlen) : C8Y_OK;
  if (rc < 0) {
    outq_close(q);
    return rc;
  }
  /* The bound may have been lowered since the files were written. */
  pthread_mutex_lock(&q->mu);
  while (q->bytes > q->max_bytes && drop_one(q, 0) == 0)
    ;
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    if (q->c[c].log && q->tombs[c].n && q->c[c].ndisk)
      tomb_write(q, c);
  settle_tombs(q);
  pthread_mutex_unlock(&q->mu);
  char msg[512];
  if (drop_report(q, msg, sizeof msg))
    log_warning("outq: %s", msg);
  *out = q;
  return 0;
}

/* ---- push ------------------------------------------------------------- */

static void maybe_trim(outq *q, int *trim) {
  size_t live = 0;
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    live += q->c[c].nlive;
  if (live > 65536)
    q->trim = 1;
  else if (live == 0 && q->trim) {
    q->trim = 0;
    *trim = 1;
  }
}

/* After unlocking: logs pending drop reports, hands memory back. */
static void after_unlock(const char *msg, int trim) {
  if (msg)
    log_warning("outq: %s", msg);
  if (trim)
    malloc_trim(0);
}

/* Size of an entry record of llen bytes in memory (topic number 0), which
 * is within a byte or two of its size in a file. */
static size_t entry_size(size_t llen, uint64_t seq, uint64_t tag, uint8_t key) {
  size_t blen = varint_len(seq) + 1 + (tag ? 8 : 0) + (key ? 1 : 0) + llen;
  return rec2_hdr_size(blen) + blen;
}

int outq_push(outq *q, outq_class cls, uint8_t replace_key, const char *topic,
              const char *line, uint64_t tag, unsigned flags) {
  if (!q || !topic || !line || (int)cls < 0 || cls >= OUTQ_NCLASSES ||
      (replace_key && cls != OUTQ_INVENTORY))
    return C8Y_EINVAL;
  size_t tlen = strlen(topic), llen = strlen(line);
  if (llen > OUTQ_MAX_LINE)
    return C8Y_ETOOBIG;
  /* A line may hold LFs inside quoted SmartREST fields (113 text, command
   * output); the platform splits records only outside quotes, so packing
   * lines with '\n' between them stays unambiguous. */
  if (tlen == 0 || tlen > OUTQ_MAX_TOPIC || llen == 0 ||
      memchr(topic, '\n', tlen))
    return C8Y_EINVAL;
  int vol = (flags & OUTQ_VOLATILE) != 0;
  unsigned char stackbuf[APPEND_BUF(512)];
  size_t bufsize = APPEND_BUF(llen);
  unsigned char *rb = bufsize <= sizeof stackbuf ? stackbuf : malloc(bufsize);
  if (!rb)
    return C8Y_ENOMEM;
  pthread_mutex_lock(&q->mu);
  qclass *c = &q->c[cls];
  int rc = C8Y_OK;
  char msgbuf[512];
  const char *msg = NULL;
  int trim = 0;
  int tp = topic_intern(q, topic, tlen);
  if (tp < 0) {
    rc = errno == EAGAIN ? C8Y_EAGAIN : C8Y_ENOMEM;
    goto out;
  }
  /* Pinned for the whole push: making room, supersedes, drops, or a take
   * and ack while we wait for the fsync may remove every other entry of
   * the topic meanwhile. */
  q->tp[tp].refs++;
  uint64_t hl = 0;
  size_t sup_bytes = 0;
  if (cls == OUTQ_INVENTORY) {
    hl = hash_line(topic, tlen, line, llen);
    int listed = (flags & (OUTQ_LIST_HEAD | OUTQ_LIST_CHUNK)) != 0;
    if (!listed && index_find_dup(q, (uint32_t)tp, line, llen, hl, vol)) {
      q->st.coalesced++;
      goto out;
    }
    if (replace_key && !(flags & OUTQ_LIST_CHUNK))
      sup_bytes = index_superseded(q, (uint32_t)tp, replace_key, 0);
  }
  uint64_t seq = q->next_seq;
  size_t need = entry_size(llen, seq, tag, replace_key);
  if (q->bytes - sup_bytes + need > q->max_bytes) {
    size_t droppable = 0;
    for (int d = (int)cls; d < OUTQ_NCLASSES; d++)
      droppable += q->c[d].qbytes;
    if (cls <= OUTQ_INVENTORY)
      droppable -= sup_bytes;
    if (q->bytes - sup_bytes - droppable + need > q->max_bytes) {
      rc = C8Y_EAGAIN;
      goto out;
    }
  }
  int durable = c->log && !vol, held = 0;
  uint64_t off = 0, gen = 0;
  uint16_t rlen = 0;
  uint8_t hlen = 0;
  if (durable) {
    int wrc = c->nheld ? held_flush(q, cls) : 0;
    if (wrc == 0)
      wrc = append_entry(q, cls, (uint32_t)tp, replace_key, line, llen, seq,
                         tag, rb, &off, &rlen, &hlen);
    else
      errno = ENOSPC;
    if (wrc < 0) {
      int err = errno;
      if (!disk_full_errno(err)) {
        q->st.io_errors++;
        io_warn(c, "write");
        rc = C8Y_EIO;
        goto out;
      }
      if (cls > OUTQ_ALARM) {
        q->st.dropped_disk_full[cls]++;
        q->droplog[1][cls]++;
        rc = C8Y_EAGAIN;
        goto out;
      }
      /* Never lose a status or an alarm to a full disk: keep it in memory
       * and write it, in order, as soon as space is back. */
      if (!c->nheld)
        log_warning("outq: %s: %s: holding %s in memory until space is back",
                    c->path, strerror(err), class_names[cls]);
      held = 1;
    } else {
      gen = dlog_gen(c->log);
      c->warned = 0;
    }
  }
  uint32_t slot = 0;
  if (!durable || held) {
    rlen =
        (uint16_t)encode_entry(rb, replace_key, 0, line, llen, seq, tag, &hlen);
    if (mem_put(q, rb, rlen, &slot) < 0) {
      rc = C8Y_ENOMEM;
      goto out;
    }
  }
  uint64_t pos = c->r.tail;
  ent *e = ring_push(&c->r);
  if (!e) {
    if (!durable || held)
      mem_del(q, slot);
    else /* the written record must not come back after a restart */
      tomb_add(q, cls, seq);
    q->next_seq++;
    settle_tombs(q);
    rc = C8Y_ENOMEM;
    goto out;
  }
  e->rlen = rlen;
  e->hlen = hlen;
  e->topic = (uint16_t)tp;
  e->key = replace_key;
  if (!durable || held) {
    e->off = slot;
    e->flags = EF_MEM | (held ? EF_HELD : 0);
  } else {
    ent_set_off(e, off);
    c->live += rlen;
    c->ndisk++;
  }
  ent_set_state(e, ST_QUEUED);
  if (held) {
    c->nheld++;
    q->st.held++;
  }
  topic_ref(q, (uint32_t)tp, cls);
  if (tag) {
    e->flags |= EF_TAGGED;
    q->ntagged++;
    tag_add(q, cls, pos, tag);
  }
  c->count++;
  c->nlive++;
  c->qbytes += rlen;
  q->bytes += rlen;
  q->next_seq++;
  if (cls == OUTQ_INVENTORY)
    index_add(q, pos, hl);
  if (sup_bytes) {
    /* The new entry is not superseded by itself: it is matched by (topic,
     * key) too, so take it out of the way first. */
    ent_set_state(e, ST_INFLIGHT);
    index_superseded(q, (uint32_t)tp, replace_key, 1);
    ent_set_state(ent_at(&c->r, pos), ST_QUEUED);
    ring_trim(&q->c[OUTQ_INVENTORY].r);
  }
  while (q->bytes > q->max_bytes && drop_one(q, (int)cls) == 0)
    ;
  settle_tombs(q);
  if (durable && !held) {
    int ms = q->fsync_ms[cls];
    if (ms == OUTQ_FSYNC_ALWAYS) {
      if (sync_upto(q, cls, gen) < 0) {
        /* Not durable, so not accepted. */
        ring *r = &c->r;
        if (ring_has(r, pos) && ent_state(ent_at(r, pos)) == ST_QUEUED) {
          ent_drop(q, cls, pos);
          ring_trim(r);
          settle_tombs(q);
        }
        q->st.io_errors++;
        rc = C8Y_EIO;
      }
    } else if (ms > 0 && class_dirty(c) &&
               clock_mono_ms() - dlog_last_sync_ms(c->log) >= ms) {
      sync_upto(q, cls, dlog_gen(c->log));
    }
  }
out:
  if (tp >= 0) {
    q->tp[tp].refs--;
    topic_release(q, (uint32_t)tp);
  }
  if (drop_report(q, msgbuf, sizeof msgbuf))
    msg = msgbuf;
  maybe_trim(q, &trim);
  pthread_mutex_unlock(&q->mu);
  if (rb != stackbuf)
    free(rb);
  after_unlock(msg, trim);
  return rc;
}

/* ---- take ------------------------------------------------------------- */

/* An entry taken into a batch: out of the queue, in flight. */
static void ent_take(outq *q, int cls, uint64_t pos) {
  qclass *c = &q->c[cls];
  ent *e = ent_at(&c->r, pos);
  ent_set_state(e, ST_INFLIGHT);
  c->count--;
  c->qbytes -= e->rlen;
  q->inflight++;
}

/* An in-flight entry back in its place in the queue. */
static void ent_requeue(outq *q, int cls, uint64_t pos) {
  qclass *c = &q->c[cls];
  ent *e = ent_at(&c->r, pos);
  ent_set_state(e, ST_QUEUED);
  c->count++;
  c->qbytes += e->rlen;
  q->inflight--;
  if (pos < c->r.cur)
    c->r.cur = pos;
}

/* Room for one more batch in q->bt; -1 on ENOMEM. */
static int bt_reserve(outq *q) {
  batch *nb = grow(q->bt, q->nbt, &q->capbt, sizeof *nb, 8);
  if (!nb)
    return -1;
  q->bt = nb;
  return 0;
}

/* A batch being packed: its lines joined by '\n', its entries and tags. */
typedef struct pack {
  char *payload;
  size_t len;
  bent *ev;
  size_t nb, capb;
  uint64_t *tags;
  size_t ntags, capt;
} pack;

/* Room for any first line (an unreadable one may be skipped) and for
 * nent entries to start with; -1 on ENOMEM. */
static int pack_init(pack *pk, size_t max_payload, size_t nent) {
  memset(pk, 0, sizeof *pk);
  size_t cap = max_payload > OUTQ_MAX_LINE ? max_payload : OUTQ_MAX_LINE;
  pk->payload = malloc(cap + 1);
  pk->ev = malloc(nent * sizeof *pk->ev);
  pk->capb = nent;
  return pk->payload && pk->ev ? 0 : -1;
}

static void pack_free(pack *pk) {
  free(pk->payload);
  free(pk->ev);
  free(pk->tags);
}

/* Appends the line of the entry at pos; -1 (nothing appended) on ENOMEM.
 * The caller keeps the payload within its capacity. */
static int pack_add(pack *pk, const void *line, size_t llen, uint64_t pos,
                    uint64_t seq, uint64_t tag) {
  bent *nv = grow(pk->ev, pk->nb, &pk->capb, sizeof *nv, 16);
  if (!nv)
    return -1;
  pk->ev = nv;
  if (tag) {
    uint64_t *nt = grow(pk->tags, pk->ntags, &pk->capt, sizeof *nt, 8);
    if (!nt)
      return -1;
    pk->tags = nt;
    pk->tags[pk->ntags++] = tag;
  }
  if (pk->nb)
    pk->payload[pk->len++] = '\n';
  memcpy(pk->payload + pk->len, line, llen);
  pk->len += llen;
  pk->ev[pk->nb++] = (bent){pos, seq};
  return 0;
}

/* Hands the packed lines over as batch b (topic: owned by it) and enters
 * it in the table of in-flight batches, where bt_reserve made room. */
static void pack_publish(outq *q, int cls, pack *pk, char *topic,
                         outq_batch *b) {
  pk->payload[pk->len] = '\0';
  batch *bt = &q->bt[q->nbt++];
  bt->id = ++q->next_batch;
  bt->cls = cls;
  bt->e = pk->ev;
  bt->n = pk->nb;
  b->id = bt->id;
  b->cls = (outq_class)cls;
  b->topic = topic;
  b->payload = pk->payload;
  b->len = pk->len;
  b->nlines = pk->nb;
  b->tags = pk->tags;
  b->ntags = pk->ntags;
}

/* Packs queued entries of one class and topic, from `start` on, into a
 * batch: consecutive in the class (dead entries skipped), within
 * max_payload (the first line always goes: outq_push accepted it), and with
 * sequence numbers below seq_limit. 1 if a batch was made, 0 if `start`
 * turned out unreadable (dropped), -1 on ENOMEM. */
/* Packs queued entries of start's topic from start on. only_tag != 0: only
 * entries carrying that tag; the others are stepped over and stay queued in
 * their place. */
static int make_batch_of(outq *q, int cls, uint64_t start, size_t max_payload,
                         uint64_t seq_limit, uint64_t only_tag, outq_batch *b) {
  ring *r = &q->c[cls].r;
  uint32_t tp = ent_at(r, start)->topic;
  pack pk;
  if (pack_init(&pk, max_payload, 16) < 0 || bt_reserve(q) < 0)
    goto oom;
  for (uint64_t pos = start; pos < r->tail; pos++) {
    ent *e = ent_at(r, pos);
    int st = ent_state(e);
    if (st == ST_DEAD)
      continue;
    if (only_tag && (st != ST_QUEUED || !(e->flags & EF_TAGGED)))
      continue;
    if (st != ST_QUEUED || e->topic != tp)
      break;
    size_t llen = ent_llen(q, e);
    if (pk.nb && pk.len + 1 + llen > max_payload)
      break;
    rec rr;
    if (!rec_get(q, cls, e, &rr)) {
      ent_kill(q, cls, pos, 0);
      continue;
    }
    if (only_tag && rr.tag != only_tag)
      continue;
    if (pk.nb && rr.seq >= seq_limit)
      break;
    if (pack_add(&pk, rr.data, rr.dlen, pos, rr.seq, rr.tag) < 0)
      goto oom;
  }
  if (!pk.nb) {
    pack_free(&pk);
    ring_trim(r);
    return 0;
  }
  char *topic = strdup(q->tp[tp].s);
  if (!topic)
    goto oom;
  for (size_t i = 0; i < pk.nb; i++)
    ent_take(q, cls, pk.ev[i].pos);
  pack_publish(q, cls, &pk, topic, b);
  first_queued(q, cls, &start); /* moves cur past what was taken */
  return 1;
oom:
  pack_free(&pk);
  return -1;
}

static int make_batch(outq *q, int cls, uint64_t start, size_t max_payload,
                      uint64_t seq_limit, outq_batch *b) {
  return make_batch_of(q, cls, start, max_payload, seq_limit, 0, b);
}

/* Reads above this span record by record instead of in one pread. */
#define READ_SPAN_MAX (1u << 20)

typedef struct rd_ent {
  uint64_t pos, off;
  uint32_t rlen;
  int bad;
} rd_ent;

/* make_batch for entries in a class file, with the lines read back without
 * q->mu: the entries are marked in flight first (nothing else touches
 * them then, and a punch or truncation never covers a live record), and the
 * file is not swapped by a rewrite between dlog_read_begin and _end.
 * Called and returns with q->mu held; same results as make_batch. */
static int make_batch_io(outq *q, int cls, uint64_t start, size_t max_payload,
                         outq_batch *b) {
  qclass *c = &q->c[cls];
  ring *r = &c->r;
  if (ent_at(r, start)->flags & EF_MEM)
    return make_batch(q, cls, start, max_payload, UINT64_MAX, b);
  /* May wait for a rewrite's swap (q->mu released): start is checked
   * again after it. */
  int fd = dlog_read_begin(c->log);
  if (!ring_has(r, start) || ent_state(ent_at(r, start)) != ST_QUEUED ||
      (ent_at(r, start)->flags & EF_MEM)) {
    dlog_read_end(c->log);
    return 0;
  }
  uint32_t tp = ent_at(r, start)->topic;
  size_t tlen = q->tp[tp].len;
  char *topic = strdup(q->tp[tp].s);
  size_t n = 0, capn = 16, len = 0;
  rd_ent *v = malloc(capn * sizeof *v);
  pack pk;
  if (pack_init(&pk, max_payload, capn) < 0 || bt_reserve(q) < 0 || !topic ||
      !v)
    goto oom;
  for (uint64_t pos = start; pos < r->tail; pos++) {
    ent *e = ent_at(r, pos);
    int st = ent_state(e);
    if (st == ST_DEAD)
      continue;
    if (st != ST_QUEUED || e->topic != tp || (e->flags & EF_MEM))
      break;
    size_t llen = ent_llen(q, e);
    if (n && len + 1 + llen > max_payload)
      break;
    rd_ent *nv = grow(v, n, &capn, sizeof *v, 16);
    if (!nv)
      goto oom;
    v = nv;
    v[n++] = (rd_ent){pos, ent_off(e), e->rlen, 0};
    len += (n > 1) + llen;
  }
  for (size_t i = 0; i < n; i++)
    ent_take(q, cls, v[i].pos);
  first_queued(q, cls, &start); /* moves cur past what was taken */
  pthread_mutex_unlock(&q->mu);

  uint64_t span = v[n - 1].off + v[n - 1].rlen - v[0].off;
  unsigned char *buf = malloc(span <= READ_SPAN_MAX ? span : REC_MAX);
  int io_err = 0;
  if (buf && span <= READ_SPAN_MAX &&
      pread_full(fd, buf, span, v[0].off) != (ssize_t)span)
    io_err = errno ? errno : EIO;
  for (size_t i = 0; buf && i < n; i++) {
    const unsigned char *p;
    if (span <= READ_SPAN_MAX) {
      p = buf + (v[i].off - v[0].off);
      if (io_err) {
        v[i].bad = 1;
        continue;
      }
    } else {
      p = buf;
      if (pread_full(fd, buf, v[i].rlen, v[i].off) != (ssize_t)v[i].rlen) {
        v[i].bad = 1;
        io_err = errno ? errno : EIO;
        continue;
      }
    }
    rec rr;
    if (rec_parse(p, v[i].rlen, &rr) < 0 || rr.type != REC_ENTRY ||
        rr.len != v[i].rlen || (rr.format == 1 && rr.tlen != tlen)) {
      v[i].bad = 1;
      continue;
    }
    if (pack_add(&pk, rr.data, rr.dlen, v[i].pos, rr.seq, rr.tag) < 0)
      v[i].bad = 2; /* no memory: back in the queue, not lost */
  }
  free(buf);

  pthread_mutex_lock(&q->mu);
  dlog_read_end(c->log);
  if (!buf) {
    for (size_t i = 0; i < n; i++)
      v[i].bad = 2;
    pk.nb = 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (!v[i].bad)
      continue;
    if (v[i].bad == 2) {
      ent_requeue(q, cls, v[i].pos);
      continue;
    }
    if (io_err) {
      errno = io_err;
      io_warn(c, "reading back a queued line");
    } else {
      log_error("outq: %s: the record at offset %" PRIu64
                " is damaged on disk; its line is lost",
                c->path, v[i].off);
    }
    ent_kill(q, cls, v[i].pos, 0);
  }
  free(v);
  ring_trim(r);
  if (!pk.nb) {
    pack_free(&pk);
    free(topic);
    return !buf ? -1 : 0;
  }
  pack_publish(q, cls, &pk, topic, b);
  return 1;
oom:
  dlog_read_end(c->log);
  pack_free(&pk);
  free(topic);
  free(v);
  return -1;
}

/* Oldest live (queued or in flight) entry of topic tp in class cls; 1 and
 * its position and sequence number if there is one. */
static int oldest_on_topic(outq *q, int cls, uint32_t tp, uint64_t *pos,
                           uint64_t *seq) {
  if (!q->tp[tp].live[cls])
    return 0;
  ring *r = &q->c[cls].r;
  for (uint64_t p = r->head; p < r->tail; p++) {
    ent *e = ent_at(r, p);
    if (ent_state(e) == ST_DEAD || e->topic != tp)
      continue;
    *seq = ent_seq(q, cls, e);
    *pos = p;
    return *seq != 0;
  }
  return 0;
}

/* Statuses close what a handler sent before them: a status is taken only
 * once no older alarm, event or inventory line of its topic is queued or in
 * flight; a queued one is taken first instead (see outq.h). */
static int take_status(outq *q, size_t max_payload, outq_batch *b) {
  ring *r = &q->c[OUTQ_OPSTATUS].r;
  uint32_t blocked[32];
  size_t nblocked = 0;
  uint64_t start;
  if (!first_queued(q, OUTQ_OPSTATUS, &start))
    return 0;
  for (uint64_t pos = start; pos < r->tail; pos++) {
    ent *e = ent_at(r, pos);
    if (ent_state(e) != ST_QUEUED)
      continue;
    uint32_t tp = e->topic;
    int skip = 0;
    for (size_t i = 0; i < nblocked && !skip; i++)
      skip = blocked[i] == tp;
    if (skip)
      continue;
    uint64_t sseq = ent_seq(q, OUTQ_OPSTATUS, e);
    uint64_t min_seq = UINT64_MAX, bpos = 0;
    int bcls = -1;
    for (int d = OUTQ_ALARM; d <= OUTQ_INVENTORY; d++) {
      uint64_t p2, s2;
      if (oldest_on_topic(q, d, tp, &p2, &s2) && s2 < min_seq) {
        min_seq = s2;
        bpos = p2;
        bcls = d;
      }
    }
    if (bcls < 0 || sseq < min_seq)
      return make_batch(q, OUTQ_OPSTATUS, pos, max_payload, min_seq, b);
    if (ent_state(ent_at(&q->c[bcls].r, bpos)) == ST_QUEUED)
      return make_batch(q, bcls, bpos, max_payload, UINT64_MAX, b);
    /* Waits for the in-flight line; later statuses of the topic too. */
    if (nblocked == sizeof blocked / sizeof *blocked)
      break;
    blocked[nblocked++] = tp;
  }
  return 0;
}

int outq_take(outq *q, size_t max_payload, outq_batch *b) {
  memset(b, 0, sizeof *b);
  if (!q)
    return 0;
  pthread_mutex_lock(&q->mu);
  int rc = 0;
  for (int cls = 0; cls < OUTQ_NCLASSES && rc == 0; cls++) {
    while (q->c[cls].count) {
      uint64_t pos;
      if (cls == OUTQ_OPSTATUS)
        rc = take_status(q, max_payload, b);
      else if (first_queued(q, cls, &pos))
        rc = q->c[cls].log
                 ? make_batch_io(q, cls, pos, max_payload, b)
                 : make_batch(q, cls, pos, max_payload, UINT64_MAX, b);
      /* 0 from make_batch: the line was unreadable and dropped; retry. */
      if (rc != 0 || cls == OUTQ_OPSTATUS)
        break;
    }
  }
  pthread_mutex_unlock(&q->mu);
  if (rc < 0) {
    memset(b, 0, sizeof *b);
    errno = ENOMEM;
    return -1;
  }
  return rc;
}

/* Whether t still refers to a queued (not in-flight) line tagged tag; a
 * reference outlives its line until the tag table is compacted. */
static bool queued_with_tag(outq *q, const tagref *t, uint64_t tag) {
  ring *r = &q->c[t->cls].r;
  if (t->tag != tag || !ring_has(r, t->pos))
    return false;
  ent *e = ent_at(r, t->pos);
  return ent_state(e) == ST_QUEUED && (e->flags & EF_TAGGED);
}

int outq_take_tagged(outq *q, uint64_t tag, size_t max_payload, outq_batch *b) {
  memset(b, 0, sizeof *b);
  if (!q || !tag)
    return 0;
  pthread_mutex_lock(&q->mu);
  /* The oldest queued entry with the tag, most important class first. */
  int best_cls = -1;
  uint64_t best_pos = 0;
  for (size_t i = 0; i < q->ntags; i++) {
    tagref *t = &q->tags[i];
    if (!queued_with_tag(q, t, tag))
      continue;
    if (best_cls < 0 || t->cls < best_cls ||
        (t->cls == best_cls && t->pos < best_pos)) {
      best_cls = t->cls;
      best_pos = t->pos;
    }
  }
  int rc = best_cls < 0 ? 0
                        : make_batch_of(q, best_cls, best_pos, max_payload,
                                        UINT64_MAX, tag, b);
  pthread_mutex_unlock(&q->mu);
  if (rc < 0) {
    memset(b, 0, sizeof *b);
    errno = ENOMEM;
    return -1;
  }
  return rc;
}

void outq_batch_free(outq_batch *b) {
  if (!b)
    return;
  free(b->topic);
  free(b->payload);
  free(b->tags);
  memset(b, 0, sizeof *b);
}

/* Removes the in-flight batch `id` from the table into *out; -1 if unknown. */
static int batch_detach(outq *q, uint64_t id, batch *out) {
  for (size_t i = 0; i < q->nbt; i++)
    if (q->bt[i].id == id) {
      *out = q->bt[i];
      memmove(&q->bt[i], &q->bt[i + 1], (q->nbt - i - 1) * sizeof *q->bt);
      q->nbt--;
      return 0;
    }
  return -1;
}

int outq_ack(outq *q, uint64_t batch_id) {
  if (!q)
    return -1;
  pthread_mutex_lock(&q->mu);
  batch bt;
  if (batch_detach(q, batch_id, &bt) < 0) {
    pthread_mutex_unlock(&q->mu);
    return -1;
  }
  qclass *c = &q->c[bt.cls];
  for (size_t i = 0; i < bt.n; i++) {
    ent *e = ent_at(&c->r, bt.e[i].pos);
    ent_kill(q, bt.cls, bt.e[i].pos, (e->flags & EF_MEM) ? 0 : bt.e[i].seq);
  }
  free(bt.e);
  ring_trim(&c->r);
  settle_tombs(q);
  int trim = 0;
  maybe_trim(q, &trim);
  if (q->nbt == 0 && q->capbt > 64) {
    free(q->bt);
    q->bt = NULL;
    q->capbt = 0;
  }
  pthread_mutex_unlock(&q->mu);
  after_unlock(NULL, trim);
  return 0;
}

static void nack_locked(outq *q, batch *bt) {
  for (size_t i = 0; i < bt->n; i++)
    ent_requeue(q, bt->cls, bt->e[i].pos);
  free(bt->e);
}

int outq_nack(outq *q, uint64_t batch_id) {
  if (!q)
    return -1;
  pthread_mutex_lock(&q->mu);
  batch bt;
  int rc = batch_detach(q, batch_id, &bt);
  if (rc == 0)
    nack_locked(q, &bt);
  pthread_mutex_unlock(&q->mu);
  return rc;
}

void outq_requeue_inflight(outq *q) {
  if (!q)
    return;
  pthread_mutex_lock(&q->mu);
  /* Entries keep their place in their class, so order is restored. */
  while (q->nbt) {
    batch bt;
    batch_detach(q, q->bt[q->nbt - 1].id, &bt);
    nack_locked(q, &bt);
  }
  pthread_mutex_unlock(&q->mu);
}

size_t outq_remove_tag(outq *q, uint64_t tag) {
  if (!q || !tag)
    return 0;
  size_t n = 0;
  pthread_mutex_lock(&q->mu);
  for (size_t i = 0; i < q->ntags; i++) {
    tagref *t = &q->tags[i];
    if (!queued_with_tag(q, t, tag))
      continue;
    ent_drop(q, t->cls, t->pos);
    n++;
  }
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    ring_trim(&q->c[c].r);
  settle_tombs(q);
  pthread_mutex_unlock(&q->mu);
  return n;
}

void outq_tick(outq *q) {
  if (!q)
    return;
  pthread_mutex_lock(&q->mu);
  q->tick_ms = clock_mono_ms();
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    qclass *qc = &q->c[c];
    if (!qc->log)
      continue;
    if (qc->nheld)
      held_flush(q, c);
    int64_t now = clock_mono_ms();
    if (q->tombs[c].n && now - qc->tomb_since >= TOMB_SYNC_MS)
      tomb_write(q, c);
    int ms = q->fsync_ms[c];
    if (ms == OUTQ_FSYNC_ALWAYS)
      ms = TOMB_SYNC_MS;
    if (class_dirty(qc) && ms >= 0 && now - dlog_last_sync_ms(qc->log) >= ms)
      sync_upto(q, c, dlog_gen(qc->log));
    maybe_compact(q, c, 1); /* a rewrite releases q->mu meanwhile */
  }
  disk_recovered(q);
  if (!q->st.held)
    reserve_make(q);
  char msgbuf[512];
  const char *msg = drop_report(q, msgbuf, sizeof msgbuf) ? msgbuf : NULL;
  int trim = 0;
  maybe_trim(q, &trim);
  pthread_mutex_unlock(&q->mu);
  after_unlock(msg, trim);
}

static int64_t earlier(int64_t a, int64_t b) { return a < 0 || b < a ? b : a; }

long long outq_next_deadline(outq *q) {
  if (!q)
    return -1;
  pthread_mutex_lock(&q->mu);
  int64_t due = -1;
  /* Work outq_tick retries about once a second while it lasts. */
  int retry = q->disk_full || q->st.held || q->reserve_out || q->trim;
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    qclass *qc = &q->c[c];
    retry |= q->droplog[0][c] || q->droplog[1][c];
    int ms = q->fsync_ms[c];
    if (ms == OUTQ_FSYNC_ALWAYS)
      ms = TOMB_SYNC_MS;
    if (!qc->log)
      continue;
    if (q->tombs[c].n)
      due = earlier(due, qc->tomb_since + TOMB_SYNC_MS);
    if (class_dirty(qc) && ms >= 0)
      due = earlier(due, dlog_last_sync_ms(qc->log) + ms);
    uint64_t fsize = dlog_size(qc->log);
    if (fsize > 0 && (qc->ndisk == 0 || (fsize >= COMPACT_MIN_BYTES &&
                                         (fsize - qc->live) * 2 > fsize)))
      due = earlier(due, q->tick_ms + 1000);
  }
  if (retry)
    due = earlier(due, q->tick_ms + 1000);
  pthread_mutex_unlock(&q->mu);
  return due;
}

void outq_get_stats(outq *q, outq_stats *s) {
  memset(s, 0, sizeof *s);
  if (!q)
    return;
  pthread_mutex_lock(&q->mu);
  *s = q->st;
  s->fsyncs = q->gone.fsyncs;
  s->written = q->gone.written;
  s->rewritten = q->gone.rewritten;
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    s->queued[c] = q->c[c].count;
    if (q->c[c].log) {
      dlog_stats ds;
      dlog_get_stats(q->c[c].log, &ds);
      s->fsyncs += ds.fsyncs;
      s->written += ds.written;
      s->rewritten += ds.rewritten;
    }
  }
  s->inflight = q->inflight;
  s->bytes = q->bytes;
  s->topics = q->ntopics;
  pthread_mutex_unlock(&q->mu);
}

size_t outq_inflight_batches(outq *q) {
  if (!q)
    return 0;
  pthread_mutex_lock(&q->mu);
  size_t n = q->nbt;
  pthread_mutex_unlock(&q->mu);
  return n;
}
