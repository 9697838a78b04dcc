/* outq: durable store-and-forward queue (see outq.h).
 *
 * On disk: one append-only log per class, queue-<class>.log, holding two
 * kinds of records. An entry record carries one queued line; a tombstone
 * record lists the sequence ranges of entries that are gone (acked, dropped,
 * superseded or removed). Replay = entries minus tombstones. Records start
 * with magic bytes and carry a CRC32 so that a torn append at the tail or a
 * damaged record in the middle is detected and skipped, resyncing on the next
 * magic. A file whose entries are all gone is truncated; one that is mostly
 * garbage is rewritten (temp file + fsync + rename + fsync dir).
 *
 * Record layout, little endian:
 *   0 magic "\xC8QUE"  4 crc32 of bytes 8..end  8 type  9 reserved (0)
 *  10 topic length u16  12 data length u32  16 seq u64  24 tag u64
 *  32 topic bytes, then data (the line, or tombstone ranges: u64 first,
 *     u64 count, repeated). */
#include "outq.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OUTQ_MAX_LINE 16000u
#define OUTQ_MAX_TOPIC 1024u
#define OUTQ_DEFAULT_MAX_BYTES (16u * 1024u * 1024u)
#define REC_HDR 32u
#define REC_ENTRY 1u
#define REC_TOMB 2u
/* Tombstones are split so that no record is much larger than an entry:
 * resyncing after damage then costs at most a few KiB per candidate. */
#define TOMB_MAX_RANGES 1024u
/* Rewriting a file costs its live bytes; below this size it is not worth it
 * even when most of the file is garbage. */
#define COMPACT_MIN_BYTES 65536u

static const unsigned char rec_magic[4] = {0xC8, 'Q', 'U', 'E'};

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

static void put16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
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

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct entry {
  struct entry *prev, *next;  /* class FIFO while queued */
  struct entry *hline, *htid; /* inventory coalescing hash chains */
  uint64_t seq, tag;
  uint32_t tlen, llen;
  uint32_t disk;      /* record size in the class file; 0 = volatile */
  uint32_t hash_line; /* hash of (topic, line) */
  uint32_t hash_tid;  /* hash of (topic, template id) */
  uint16_t tid;       /* replace-semantics template id, 0 if none */
  uint8_t cls;
  uint8_t indexed;
  char *topic; /* both point into data[] */
  char *line;
  char data[];
} entry;

typedef struct qclass {
  entry *head, *tail;
  size_t count;   /* queued entries */
  size_t qbytes;  /* payload + topic bytes of queued entries */
  int fd;         /* -1 without a directory */
  char *name;     /* file name inside the directory */
  char *path;     /* for messages */
  uint64_t fsize; /* bytes in the file */
  uint64_t live;  /* bytes of records of entries still alive */
  size_t ndisk;   /* alive entries that have a record */
  int dirty;      /* written since the last fsync */
  int64_t last_sync;
  int warned; /* an I/O failure was logged; stay quiet until success */
} qclass;

typedef struct batch {
  uint64_t id;
  int cls;
  entry **e;
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
  entry **hl, **ht; /* coalescing hash tables (inventory, queued only) */
  size_t hsize, nindexed;
  int dirfd;
  int lockfd;
  char *dir;
  tomb tombs[OUTQ_NCLASSES]; /* pending tombstones per class */
  outq_stats st;
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

/* Leading number of a template id or of a line's first CSV field; -1 if the
 * field is not a plain number. */
static long leading_id(const char *s, size_t len) {
  long v = 0;
  size_t i = 0;
  for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
    v = v * 10 + (s[i] - '0');
    if (v > 99999)
      return -1;
  }
  if (i == 0 || (i < len && s[i] != ','))
    return -1;
  return v;
}

outq_class outq_class_for_template(const char *template_id) {
  if (!template_id)
    return OUTQ_EVENT;
  long id = leading_id(template_id, strlen(template_id));
  if (id >= 100 && id < 200)
    return OUTQ_INVENTORY;
  if (id >= 200 && id < 300)
    return OUTQ_MEASUREMENT;
  if (id >= 300 && id < 400)
    return OUTQ_ALARM;
  if (id >= 500 && id < 600)
    return OUTQ_OPSTATUS;
  return OUTQ_EVENT;
}

/* Template ids whose line replaces the previous state of the same fragment,
 * so an older queued one is pointless once a newer one is queued. */
static uint16_t replace_tid(const char *line, size_t len) {
  long id = leading_id(line, len);
  if ((id >= 110 && id <= 119) || id == 121 || id == 122 || id == 143 ||
      id == 150)
    return (uint16_t)id;
  return 0;
}

static uint32_t fnv1a(uint32_t h, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++)
    h = (h ^ p[i]) * 16777619u;
  return h;
}

static uint32_t hash_pair(const char *topic, size_t tlen, const void *b,
                          size_t blen) {
  uint32_t h = fnv1a(2166136261u, topic, tlen);
  h = fnv1a(h, "", 1);
  return fnv1a(h, b, blen);
}

/* ---- coalescing index ------------------------------------------------- */

static int index_grow(outq *q) {
  size_t nsize = q->hsize ? q->hsize * 2 : 64;
  entry **nl = calloc(nsize, sizeof *nl);
  entry **nt = calloc(nsize, sizeof *nt);
  if (!nl || !nt) {
    free(nl);
    free(nt);
    return -1;
  }
  for (size_t i = 0; i < q->hsize; i++) {
    for (entry *e = q->hl[i], *nx; e; e = nx) {
      nx = e->hline;
      e->hline = nl[e->hash_line & (nsize - 1)];
      nl[e->hash_line & (nsize - 1)] = e;
    }
    for (entry *e = q->ht[i], *nx; e; e = nx) {
      nx = e->htid;
      e->htid = nt[e->hash_tid & (nsize - 1)];
      nt[e->hash_tid & (nsize - 1)] = e;
    }
  }
  free(q->hl);
  free(q->ht);
  q->hl = nl;
  q->ht = nt;
  q->hsize = nsize;
  return 0;
}

/* Only queued inventory entries are indexed. Failing to grow the table only
 * makes chains longer, so it is not an error. */
static void index_add(outq *q, entry *e) {
  if (e->cls != OUTQ_INVENTORY || e->indexed)
    return;
  if (q->nindexed >= q->hsize && index_grow(q) < 0 && !q->hsize)
    return;
  size_t m = q->hsize - 1;
  e->hline = q->hl[e->hash_line & m];
  q->hl[e->hash_line & m] = e;
  if (e->tid) {
    e->htid = q->ht[e->hash_tid & m];
    q->ht[e->hash_tid & m] = e;
  }
  e->indexed = 1;
  q->nindexed++;
}

static void index_del(outq *q, entry *e) {
  if (!e->indexed)
    return;
  size_t m = q->hsize - 1;
  for (entry **pp = &q->hl[e->hash_line & m]; *pp; pp = &(*pp)->hline)
    if (*pp == e) {
      *pp = e->hline;
      break;
    }
  if (e->tid)
    for (entry **pp = &q->ht[e->hash_tid & m]; *pp; pp = &(*pp)->htid)
      if (*pp == e) {
        *pp = e->htid;
        break;
      }
  e->hline = e->htid = NULL;
  e->indexed = 0;
  q->nindexed--;
}

/* ---- FIFO ------------------------------------------------------------- */

static void fifo_push_back(outq *q, entry *e) {
  qclass *c = &q->c[e->cls];
  e->next = NULL;
  e->prev = c->tail;
  if (c->tail)
    c->tail->next = e;
  else
    c->head = e;
  c->tail = e;
  c->count++;
  c->qbytes += e->tlen + e->llen;
  index_add(q, e);
}

static void fifo_push_front(outq *q, entry *e) {
  qclass *c = &q->c[e->cls];
  e->prev = NULL;
  e->next = c->head;
  if (c->head)
    c->head->prev = e;
  else
    c->tail = e;
  c->head = e;
  c->count++;
  c->qbytes += e->tlen + e->llen;
  index_add(q, e);
}

static void fifo_unlink(outq *q, entry *e) {
  qclass *c = &q->c[e->cls];
  if (e->prev)
    e->prev->next = e->next;
  else
    c->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    c->tail = e->prev;
  e->prev = e->next = NULL;
  c->count--;
  c->qbytes -= e->tlen + e->llen;
  index_del(q, e);
}

/* ---- records and files ----------------------------------------------- */

static entry *entry_new(outq_class cls, const char *topic, size_t tlen,
                        const char *line, size_t llen, uint64_t seq,
                        uint64_t tag) {
  entry *e = malloc(sizeof *e + tlen + llen + 2);
  if (!e)
    return NULL;
  memset(e, 0, sizeof *e);
  e->topic = e->data;
  e->line = e->data + tlen + 1;
  memcpy(e->topic, topic, tlen);
  e->topic[tlen] = '\0';
  memcpy(e->line, line, llen);
  e->line[llen] = '\0';
  e->tlen = (uint32_t)tlen;
  e->llen = (uint32_t)llen;
  e->cls = (uint8_t)cls;
  e->seq = seq;
  e->tag = tag;
  if (cls == OUTQ_INVENTORY) {
    e->hash_line = hash_pair(topic, tlen, line, llen);
    e->tid = replace_tid(line, llen);
    if (e->tid)
      e->hash_tid = hash_pair(topic, tlen, &e->tid, sizeof e->tid);
  }
  return e;
}

static size_t entry_rec_size(const entry *e) {
  return REC_HDR + e->tlen + e->llen;
}

static void rec_header(unsigned char *p, unsigned type, size_t tlen,
                       size_t dlen, uint64_t seq, uint64_t tag) {
  memcpy(p, rec_magic, 4);
  p[8] = (unsigned char)type;
  p[9] = 0;
  put16(p + 10, (uint16_t)tlen);
  put32(p + 12, (uint32_t)dlen);
  put64(p + 16, seq);
  put64(p + 24, tag);
}

static void rec_seal(unsigned char *p, size_t len) {
  put32(p + 4, crc32_update(0, p + 8, len - 8));
}

/* Encodes e into p (entry_rec_size(e) bytes). */
static void encode_entry(unsigned char *p, const entry *e) {
  rec_header(p, REC_ENTRY, e->tlen, e->llen, e->seq, e->tag);
  memcpy(p + REC_HDR, e->topic, e->tlen);
  memcpy(p + REC_HDR + e->tlen, e->line, e->llen);
  rec_seal(p, entry_rec_size(e));
}

static void io_warn(qclass *c, const char *what) {
  if (!c->warned)
    log_warning("outq: %s: %s: %s", c->path, what, strerror(errno));
  c->warned = 1;
}

/* A partial append is cut back so that the file never ends in a torn
 * record we wrote ourselves. */
static int file_append(qclass *c, const void *buf, size_t len) {
  const unsigned char *p = buf;
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(c->fd, p + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      if (off > 0 && ftruncate(c->fd, (off_t)c->fsize) < 0)
        c->fsize += off; /* the torn record stays; replay skips it */
      errno = err;
      return -1;
    }
    off += (size_t)n;
  }
  c->fsize += len;
  c->dirty = 1;
  return 0;
}

static int file_sync(qclass *c) {
  if (c->fd < 0 || !c->dirty)
    return 0;
  if (fdatasync(c->fd) < 0) {
    io_warn(c, "fsync");
    return -1;
  }
  c->dirty = 0;
  c->last_sync = now_ms();
  return 0;
}

/* Applies the class's fsync policy after a write. */
static void sync_policy(outq *q, int cls) {
  qclass *c = &q->c[cls];
  int ms = q->fsync_ms[cls];
  if (!c->dirty || ms < 0)
    return;
  if (ms == OUTQ_FSYNC_ALWAYS || now_ms() - c->last_sync >= ms)
    file_sync(c);
}

static void tomb_add(tomb *t, uint64_t seq) {
  if (t->n && t->r[t->n - 1].first + t->r[t->n - 1].count == seq) {
    t->r[t->n - 1].count++;
    return;
  }
  if (t->n == t->cap) {
    size_t ncap = t->cap ? t->cap * 2 : 8;
    range *nr = realloc(t->r, ncap * sizeof *nr);
    if (!nr)
      return; /* the entry reappears after a restart: a duplicate, no loss */
    t->r = nr;
    t->cap = ncap;
  }
  t->r[t->n].first = seq;
  t->r[t->n].count = 1;
  t->n++;
}

/* Appends the tombstones in t to the class file and empties t. A failure
 * only means the entries may be sent again after a restart. */
static void tomb_write(qclass *c, tomb *t) {
  if (c->fd >= 0) {
    for (size_t i = 0; i < t->n; i += TOMB_MAX_RANGES) {
      size_t n = t->n - i < TOMB_MAX_RANGES ? t->n - i : TOMB_MAX_RANGES;
      size_t len = REC_HDR + n * 16;
      unsigned char stackbuf[REC_HDR + 16 * 16];
      unsigned char *p = len <= sizeof stackbuf ? stackbuf : malloc(len);
      if (!p)
        break;
      rec_header(p, REC_TOMB, 0, n * 16, 0, 0);
      for (size_t k = 0; k < n; k++) {
        put64(p + REC_HDR + 16 * k, t->r[i + k].first);
        put64(p + REC_HDR + 16 * k + 8, t->r[i + k].count);
      }
      rec_seal(p, len);
      if (file_append(c, p, len) < 0)
        io_warn(c, "writing acknowledgement");
      else
        c->warned = 0;
      if (p != stackbuf)
        free(p);
    }
  }
  t->n = 0;
}

/* Forgets an entry that is no longer queued nor in flight. */
static void entry_gone(outq *q, entry *e, tomb *t) {
  qclass *c = &q->c[e->cls];
  q->bytes -= e->tlen + e->llen;
  if (e->disk) {
    c->live -= e->disk;
    c->ndisk--;
    tomb_add(t, e->seq);
  }
  free(e);
}

static int cmp_entry_seq(const void *a, const void *b) {
  const entry *x = *(entry *const *)a, *y = *(entry *const *)b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Rewrites the class file with only its live records, atomically. */
static int file_rewrite(outq *q, int cls) {
  qclass *c = &q->c[cls];
  size_t n = 0, cap = c->ndisk ? c->ndisk : 1;
  entry **v = malloc(cap * sizeof *v);
  if (!v)
    return -1;
  for (entry *e = c->head; e; e = e->next)
    if (e->disk && n < cap)
      v[n++] = e;
  for (size_t b = 0; b < q->nbt; b++)
    if (q->bt[b].cls == cls)
      for (size_t i = 0; i < q->bt[b].n; i++)
        if (q->bt[b].e[i]->disk && n < cap)
          v[n++] = q->bt[b].e[i];
  qsort(v, n, sizeof *v, cmp_entry_seq);

  char tmp[64];
  snprintf(tmp, sizeof tmp, "%s.tmp", c->name);
  int fd = openat(q->dirfd, tmp,
                  O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    io_warn(c, "compaction");
    free(v);
    return -1;
  }
  qclass nc = *c;
  nc.fd = fd;
  nc.fsize = 0;
  unsigned char *buf = malloc(65536 + REC_HDR + OUTQ_MAX_TOPIC + OUTQ_MAX_LINE);
  int rc = buf ? 0 : -1;
  size_t fill = 0;
  for (size_t i = 0; rc == 0 && i <= n; i++) {
    if (fill && (i == n || fill >= 65536)) {
      rc = file_append(&nc, buf, fill);
      fill = 0;
    }
    if (i < n) {
      encode_entry(buf + fill, v[i]);
      fill += entry_rec_size(v[i]);
    }
  }
  free(buf);
  free(v);
  if (rc == 0 && fdatasync(fd) < 0)
    rc = -1;
  if (rc == 0 && renameat(q->dirfd, tmp, q->dirfd, c->name) < 0)
    rc = -1;
  if (rc < 0) {
    io_warn(c, "compaction");
    close(fd);
    unlinkat(q->dirfd, tmp, 0);
    return -1;
  }
  if (fsync(q->dirfd) < 0)
    io_warn(c, "fsync of the directory");
  close(c->fd);
  c->fd = fd;
  c->fsize = nc.fsize;
  c->live = nc.fsize;
  c->dirty = 0;
  c->last_sync = now_ms();
  c->warned = 0;
  return 0;
}

/* Keeps a file from growing without bound: empty once everything in it is
 * gone, rewritten when most of it is garbage (only when `rewrite`, since a
 * rewrite costs the live bytes and two fsyncs). */
static void maybe_compact(outq *q, int cls, int rewrite) {
  qclass *c = &q->c[cls];
  if (c->fd < 0 || c->fsize == 0)
    return;
  if (c->ndisk == 0) {
    if (ftruncate(c->fd, 0) < 0) {
      io_warn(c, "truncate");
      return;
    }
    c->fsize = 0;
    c->live = 0;
    c->dirty = 1;
    sync_policy(q, cls);
    return;
  }
  if (rewrite && c->fsize >= COMPACT_MIN_BYTES &&
      (c->fsize - c->live) * 2 > c->fsize)
    file_rewrite(q, cls);
}

/* ---- replay ----------------------------------------------------------- */

typedef struct rec {
  unsigned type;
  uint32_t tlen, dlen;
  uint64_t seq, tag;
  const unsigned char *topic, *data;
  size_t len;
} rec;

/* Validates one record at p; 0 if it is complete, intact and sane. */
static int rec_parse(const unsigned char *p, size_t avail, rec *r) {
  if (avail < REC_HDR || memcmp(p, rec_magic, 4) != 0 || p[9] != 0)
    return -1;
  r->type = p[8];
  r->tlen = get16(p + 10);
  r->dlen = get32(p + 12);
  r->seq = get64(p + 16);
  r->tag = get64(p + 24);
  if (r->type == REC_ENTRY) {
    if (r->tlen == 0 || r->tlen > OUTQ_MAX_TOPIC || r->dlen == 0 ||
        r->dlen > OUTQ_MAX_LINE || r->seq == 0 || r->seq == UINT64_MAX)
      return -1;
  } else if (r->type == REC_TOMB) {
    if (r->tlen != 0 || r->dlen == 0 || r->dlen % 16 != 0 ||
        r->dlen > TOMB_MAX_RANGES * 16 || r->seq != 0 || r->tag != 0)
      return -1;
  } else {
    return -1;
  }
  r->len = REC_HDR + (size_t)r->tlen + r->dlen;
  if (r->len > avail || crc32_update(0, p + 8, r->len - 8) != get32(p + 4))
    return -1;
  r->topic = p + REC_HDR;
  r->data = r->topic + r->tlen;
  if (r->type == REC_ENTRY)
    return memchr(r->topic, 0, r->tlen) || memchr(r->data, 0, r->dlen) ? -1 : 0;
  for (size_t i = 0; i < r->dlen; i += 16) {
    uint64_t first = get64(r->data + i), count = get64(r->data + i + 8);
    if (first == 0 || count == 0 || first > UINT64_MAX - count)
      return -1;
  }
  return 0;
}

/* Offset of the next intact record after `from`, or `size` if none. */
static size_t resync(const unsigned char *buf, size_t size, size_t from) {
  while (from + REC_HDR <= size) {
    const unsigned char *m = memmem(buf + from, size - from, rec_magic, 4);
    if (!m)
      break;
    rec r;
    if (rec_parse(m, size - (size_t)(m - buf), &r) == 0)
      return (size_t)(m - buf);
    from = (size_t)(m - buf) + 1;
  }
  return size;
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

static int read_all(int fd, unsigned char **out, size_t *len) {
  struct stat sb;
  if (fstat(fd, &sb) < 0)
    return -1;
  size_t size = (size_t)sb.st_size;
  unsigned char *buf = malloc(size ? size : 1);
  if (!buf)
    return -1;
  size_t off = 0;
  while (off < size) {
    ssize_t n = pread(fd, buf + off, size - off, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* shrank under us: replay what was read */
    off += (size_t)n;
  }
  *out = buf;
  *len = off;
  return 0;
}

/* Loads the class file: entries minus tombstones, in sequence order. */
static int replay_file(outq *q, int cls, char *err, size_t errlen) {
  qclass *c = &q->c[cls];
  unsigned char *buf;
  size_t size;
  if (read_all(c->fd, &buf, &size) < 0) {
    snprintf(err, errlen, "%s: %s", c->path, strerror(errno));
    return -1;
  }
  c->fsize = size;
  entry **ev = NULL;
  range *rv = NULL;
  size_t ne = 0, cape = 0, nr = 0, capr = 0;
  uint64_t last_seq = 0;
  int damaged = 0, rc = 0;
  size_t pos = 0;
  while (pos < size) {
    rec r;
    if (rec_parse(buf + pos, size - pos, &r) < 0 ||
        (r.type == REC_ENTRY && r.seq <= last_seq)) {
      size_t next = resync(buf, size, pos + 1);
      damaged = 1;
      if (next < size)
        log_warning("outq: %s: corrupt record at offset %zu, skipped %zu "
                    "bytes to the next valid record",
                    c->path, pos, next - pos);
      else
        log_warning("outq: %s: truncated or corrupt record at offset %zu, "
                    "ignoring the last %zu bytes",
                    c->path, pos, size - pos);
      pos = next;
      continue;
    }
    pos += r.len;
    if (r.type == REC_ENTRY) {
      last_seq = r.seq;
      if (r.seq >= q->next_seq)
        q->next_seq = r.seq + 1;
      if (ne == cape) {
        size_t ncap = cape ? cape * 2 : 64;
        entry **nv = realloc(ev, ncap * sizeof *nv);
        if (!nv)
          goto oom;
        ev = nv;
        cape = ncap;
      }
      entry *e = entry_new((outq_class)cls, (const char *)r.topic, r.tlen,
                           (const char *)r.data, r.dlen, r.seq, r.tag);
      if (!e)
        goto oom;
      e->disk = (uint32_t)r.len;
      ev[ne++] = e;
    } else {
      for (size_t i = 0; i < r.dlen; i += 16) {
        if (nr == capr) {
          size_t ncap = capr ? capr * 2 : 64;
          range *nv = realloc(rv, ncap * sizeof *nv);
          if (!nv)
            goto oom;
          rv = nv;
          capr = ncap;
        }
        rv[nr].first = get64(r.data + i);
        rv[nr].count = get64(r.data + i + 8);
        nr++;
      }
    }
  }
  if (nr) {
    qsort(rv, nr, sizeof *rv, cmp_range);
    nr = ranges_merge(rv, nr);
  }
  for (size_t i = 0; i < ne; i++) {
    entry *e = ev[i];
    if (ranges_cover(rv, nr, e->seq)) {
      free(e);
      continue;
    }
    c->live += e->disk;
    c->ndisk++;
    q->bytes += e->tlen + e->llen;
    q->st.replayed++;
    fifo_push_back(q, e);
  }
  /* Start from a clean file: damage would otherwise be reported again on
   * every start, and garbage left from before the restart is dropped. */
  if (damaged || c->fsize != c->live) {
    if (c->ndisk == 0)
      maybe_compact(q, cls, 0);
    else
      file_rewrite(q, cls);
  }
  goto out;
oom:
  snprintf(err, errlen, "%s: %s", c->path, strerror(ENOMEM));
  for (size_t i = 0; i < ne; i++)
    free(ev[i]);
  rc = -1;
out:
  free(ev);
  free(rv);
  free(buf);
  return rc;
}

/* ---- public API -------------------------------------------------------- */

/* Drops the oldest queued entry of the least important non-empty class among
 * [min_cls, OUTQ_NCLASSES); 0 if one was dropped. */
static int drop_one(outq *q, int min_cls) {
  for (int d = OUTQ_NCLASSES - 1; d >= min_cls; d--) {
    entry *v = q->c[d].head;
    if (!v)
      continue;
    fifo_unlink(q, v);
    entry_gone(q, v, &q->tombs[d]);
    q->st.dropped[d]++;
    return 0;
  }
  return -1;
}

static void flush_tombs(outq *q) {
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    if (q->tombs[c].n) {
      tomb_write(&q->c[c], &q->tombs[c]);
      maybe_compact(q, c, 0);
    }
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    sync_policy(q, c);
}

static void free_entries(outq *q) {
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    for (entry *e = q->c[c].head, *nx; e; e = nx) {
      nx = e->next;
      free(e);
    }
    q->c[c].head = q->c[c].tail = NULL;
  }
  for (size_t b = 0; b < q->nbt; b++) {
    for (size_t i = 0; i < q->bt[b].n; i++)
      free(q->bt[b].e[i]);
    free(q->bt[b].e);
  }
}

void outq_close(outq *q) {
  if (!q)
    return;
  pthread_mutex_lock(&q->mu);
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    file_sync(&q->c[c]);
    if (q->c[c].fd >= 0)
      close(q->c[c].fd);
    free(q->c[c].name);
    free(q->c[c].path);
    free(q->tombs[c].r);
  }
  free_entries(q);
  free(q->bt);
  free(q->hl);
  free(q->ht);
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
    return -1;
  }
  q->dirfd = open(q->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (q->dirfd < 0) {
    snprintf(err, errlen, "queue dir %s: %s", q->dir, strerror(errno));
    return -1;
  }
  /* Two processes appending to the same logs would corrupt each other. */
  q->lockfd =
      openat(q->dirfd, "queue.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (q->lockfd < 0) {
    snprintf(err, errlen, "queue dir %s: queue.lock: %s", q->dir,
             strerror(errno));
    return -1;
  }
  if (flock(q->lockfd, LOCK_EX | LOCK_NB) < 0) {
    snprintf(err, errlen, "queue dir %s: %s", q->dir,
             errno == EWOULDBLOCK ? "in use by another process"
                                  : strerror(errno));
    return -1;
  }
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    qclass *qc = &q->c[c];
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", qc->name);
    unlinkat(q->dirfd, tmp, 0); /* a compaction that died half-way */
    qc->fd = openat(q->dirfd, qc->name, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC,
                    0600);
    if (qc->fd < 0) {
      snprintf(err, errlen, "%s: %s", qc->path, strerror(errno));
      return -1;
    }
    if (replay_file(q, c, err, errlen) < 0)
      return -1;
  }
  if (fsync(q->dirfd) < 0) {
    snprintf(err, errlen, "queue dir %s: fsync: %s", q->dir, strerror(errno));
    return -1;
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
    return -1;
  }
  pthread_mutex_init(&q->mu, NULL);
  q->max_bytes = opts->max_bytes ? opts->max_bytes : OUTQ_DEFAULT_MAX_BYTES;
  q->next_seq = 1;
  q->dirfd = q->lockfd = -1;
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    q->fsync_ms[c] = opts->fsync_ms[c];
    q->c[c].fd = -1;
    q->c[c].last_sync = now_ms();
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
    return -1;
  }
  if (opts->dir && open_dir(q, err, errlen) < 0) {
    outq_close(q);
    return -1;
  }
  /* The bound may have been lowered since the files were written. */
  while (q->bytes > q->max_bytes && drop_one(q, 0) == 0)
    ;
  flush_tombs(q);
  *out = q;
  return 0;
}

static int same_topic_line(const entry *e, const char *topic, size_t tlen,
                           const char *line, size_t llen) {
  return e->tlen == tlen && e->llen == llen &&
         memcmp(e->topic, topic, tlen) == 0 && memcmp(e->line, line, llen) == 0;
}

int outq_push(outq *q, outq_class cls, const char *topic, const char *line,
              uint64_t tag, unsigned flags) {
  if (!q || !topic || !line || (int)cls < 0 || cls >= OUTQ_NCLASSES) {
    errno = EINVAL;
    return -1;
  }
  size_t tlen = strlen(topic), llen = strlen(line);
  if (llen > OUTQ_MAX_LINE)
    return -2;
  /* A line may hold LFs inside quoted SmartREST fields (113 text, command
   * output); the platform splits records only outside quotes, so packing
   * lines with '\n' between them stays unambiguous. */
  if (tlen == 0 || tlen > OUTQ_MAX_TOPIC || llen == 0) {
    errno = EINVAL;
    return -1;
  }
  int vol = (flags & OUTQ_VOLATILE) != 0;
  size_t need = tlen + llen;
  pthread_mutex_lock(&q->mu);
  uint16_t tid = 0;
  uint32_t htid = 0;
  size_t sup_bytes = 0;
  if (cls == OUTQ_INVENTORY && q->hsize) {
    size_t m = q->hsize - 1;
    uint32_t h = hash_pair(topic, tlen, line, llen);
    for (entry *e = q->hl[h & m]; e; e = e->hline)
      /* A durable line is not folded into a volatile one: it must survive. */
      if (e->hash_line == h && same_topic_line(e, topic, tlen, line, llen) &&
          (e->disk || vol || q->c[cls].fd < 0)) {
        q->st.coalesced++;
        pthread_mutex_unlock(&q->mu);
        return 0;
      }
    tid = replace_tid(line, llen);
    if (tid) {
      htid = hash_pair(topic, tlen, &tid, sizeof tid);
      for (entry *e = q->ht[htid & m]; e; e = e->htid)
        if (e->tid == tid && e->tlen == tlen &&
            memcmp(e->topic, topic, tlen) == 0)
          sup_bytes += e->tlen + e->llen;
    }
  }
  if (q->bytes - sup_bytes + need > q->max_bytes) {
    size_t droppable = 0;
    for (int d = (int)cls; d < OUTQ_NCLASSES; d++)
      droppable += q->c[d].qbytes;
    if (cls <= OUTQ_INVENTORY)
      droppable -= sup_bytes;
    if (q->bytes - sup_bytes - droppable + need > q->max_bytes) {
      pthread_mutex_unlock(&q->mu);
      errno = ENOSPC;
      return -1;
    }
  }
  entry *e = entry_new(cls, topic, tlen, line, llen, q->next_seq, tag);
  if (!e) {
    pthread_mutex_unlock(&q->mu);
    errno = ENOMEM;
    return -1;
  }
  qclass *c = &q->c[cls];
  if (c->fd >= 0 && !vol) {
    size_t rlen = entry_rec_size(e);
    unsigned char stackbuf[2048];
    unsigned char *p = rlen <= sizeof stackbuf ? stackbuf : malloc(rlen);
    int rc = -1;
    if (p) {
      encode_entry(p, e);
      rc = file_append(c, p, rlen);
      if (rc < 0)
        io_warn(c, "write");
      if (p != stackbuf)
        free(p);
    }
    if (rc == 0 && q->fsync_ms[cls] == OUTQ_FSYNC_ALWAYS && file_sync(c) < 0) {
      /* Not durable, so not accepted: take the record back. */
      if (ftruncate(c->fd, (off_t)(c->fsize - rlen)) == 0)
        c->fsize -= rlen;
      rc = -1;
    }
    if (rc < 0) {
      int errsv = p ? errno : ENOMEM;
      free(e);
      pthread_mutex_unlock(&q->mu);
      errno = errsv;
      return -1;
    }
    c->warned = 0;
    e->disk = (uint32_t)rlen;
    c->live += rlen;
    c->ndisk++;
  }
  q->next_seq++;
  if (sup_bytes) {
    size_t m = q->hsize - 1;
    entry *old;
    do {
      old = NULL;
      for (entry *x = q->ht[htid & m]; x; x = x->htid)
        if (x->tid == tid && x->tlen == tlen &&
            memcmp(x->topic, topic, tlen) == 0) {
          old = x;
          break;
        }
      if (old) {
        fifo_unlink(q, old);
        entry_gone(q, old, &q->tombs[OUTQ_INVENTORY]);
        q->st.coalesced++;
      }
    } while (old);
  }
  while (q->bytes + need > q->max_bytes && drop_one(q, (int)cls) == 0)
    ;
  q->bytes += need;
  fifo_push_back(q, e);
  flush_tombs(q);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

int outq_take(outq *q, size_t max_payload, outq_batch *b) {
  memset(b, 0, sizeof *b);
  if (!q)
    return 0;
  pthread_mutex_lock(&q->mu);
  int cls = 0;
  while (cls < OUTQ_NCLASSES && !q->c[cls].head)
    cls++;
  if (cls == OUTQ_NCLASSES) {
    pthread_mutex_unlock(&q->mu);
    return 0;
  }
  /* The first line always goes, even over max_payload: it was accepted by
   * outq_push and must not block the queue forever. */
  entry *first = q->c[cls].head, *x = first->next;
  size_t n = 1, len = first->llen, ntags = first->tag != 0;
  for (; x && x->tlen == first->tlen && len + 1 + x->llen <= max_payload &&
         memcmp(x->topic, first->topic, first->tlen) == 0;
       x = x->next) {
    len += 1 + x->llen;
    n++;
    ntags += x->tag != 0;
  }
  if (q->nbt == q->capbt) {
    size_t ncap = q->capbt ? q->capbt * 2 : 8;
    batch *nb = realloc(q->bt, ncap * sizeof *nb);
    if (!nb)
      goto oom;
    q->bt = nb;
    q->capbt = ncap;
  }
  entry **ev = malloc(n * sizeof *ev);
  b->payload = malloc(len + 1);
  b->topic = strdup(first->topic);
  b->tags = ntags ? malloc(ntags * sizeof *b->tags) : NULL;
  if (!ev || !b->payload || !b->topic || (ntags && !b->tags)) {
    free(ev);
    outq_batch_free(b);
    goto oom;
  }
  char *p = b->payload;
  entry *e = first;
  for (size_t i = 0; i < n; i++) {
    entry *nx = e->next;
    if (i)
      *p++ = '\n';
    memcpy(p, e->line, e->llen);
    p += e->llen;
    if (e->tag)
      b->tags[b->ntags++] = e->tag;
    fifo_unlink(q, e);
    ev[i] = e;
    e = nx;
  }
  *p = '\0';
  batch *bt = &q->bt[q->nbt++];
  bt->id = ++q->next_batch;
  bt->cls = cls;
  bt->e = ev;
  bt->n = n;
  q->inflight += n;
  b->id = bt->id;
  b->cls = (outq_class)cls;
  b->len = len;
  b->nlines = n;
  pthread_mutex_unlock(&q->mu);
  return 1;
oom:
  pthread_mutex_unlock(&q->mu);
  memset(b, 0, sizeof *b);
  errno = ENOMEM;
  return -1;
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
      q->inflight -= out->n;
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
  for (size_t i = 0; i < bt.n; i++)
    entry_gone(q, bt.e[i], &q->tombs[bt.cls]);
  free(bt.e);
  flush_tombs(q);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

static void nack_locked(outq *q, batch *bt) {
  for (size_t i = bt->n; i-- > 0;)
    fifo_push_front(q, bt->e[i]);
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
  /* Newest first, so that the oldest batch ends up in front again. */
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
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    for (entry *e = q->c[c].head, *nx; e; e = nx) {
      nx = e->next;
      if (e->tag != tag)
        continue;
      fifo_unlink(q, e);
      entry_gone(q, e, &q->tombs[c]);
      n++;
    }
  flush_tombs(q);
  pthread_mutex_unlock(&q->mu);
  return n;
}

void outq_tick(outq *q) {
  if (!q)
    return;
  pthread_mutex_lock(&q->mu);
  int64_t now = now_ms();
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    int ms = q->fsync_ms[c];
    if (q->c[c].dirty && ms >= 0 && now - q->c[c].last_sync >= ms)
      file_sync(&q->c[c]);
    maybe_compact(q, c, 1);
  }
  pthread_mutex_unlock(&q->mu);
}

void outq_get_stats(outq *q, outq_stats *s) {
  memset(s, 0, sizeof *s);
  if (!q)
    return;
  pthread_mutex_lock(&q->mu);
  *s = q->st;
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    s->queued[c] = q->c[c].count;
  s->inflight = q->inflight;
  s->bytes = q->bytes;
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
