#include "journal.h"

#include "clock.h"
#include "fsutil.h"
#include "ident.h"
#include "log.h"
#include "status.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define JOURNAL_FILE "operations.journal"
/* A running agent rewrites the journal once it has grown to twice what the
 * last rewrite left (amortised: each line is copied at most about once),
 * but not below this size, where a rewrite saves nothing worth a fsync. */
#define COMPACT_MIN_BYTES 65536u
/* A rewrite races with appends from other threads; it gives up when one
 * slipped in and tries again on a later append. */
#define COMPACT_RETRY_BYTES 4096u

/* Locking: mu guards everything below it. Lines are written to the file
 * under mu (page cache only); fdatasync runs outside it with a group-commit
 * token (syncing), so concurrent writers share one fsync and no thread waits
 * on the disk while holding mu. A rewrite builds the new file outside mu,
 * then swaps it in under mu only if no line was appended meanwhile. */
struct journal {
  char *dir;
  char *path;
  char *boot_id;
  pthread_mutex_t mu;
  pthread_cond_t synced_cv;
  int fd;
  uint64_t next_id;
  /* What the previous run left executing: borrowed by ops until
   * journal_forget_recovered, and in the file until then. */
  journal_entry *recovered;
  size_t nrecovered;
  bool *keep; /* parallel to recovered, after journal_keep_recovered */
  bool recovered_in_file;
  /* Operations begun by this run (and recovered ones kept executing): the
   * state a rewrite writes out. */
  journal_entry *live;
  size_t nlive, caplive;
  uint64_t appended;               /* lines written to the file */
  uint64_t synced;                 /* lines known durable */
  uint64_t failed_from, failed_to; /* lines whose fdatasync failed */
  bool syncing;
  bool compacting;
  bool torn; /* the file ends in a partial line that could not be cut off */
  uint64_t file_bytes, compact_at;
};

static void free_fields(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

static void entry_clear(journal_entry *e) {
  free(e->c8y_id);
  free(e->xid);
  free(e->json);
  free(e->template_id);
  free(e->fragment);
  free(e->device);
  free(e->boot_id);
  free_fields(e->fields, e->nfields);
  memset(e, 0, sizeof *e);
}

void journal_entry_free(journal_entry *e) { entry_clear(e); }

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static int copy_fields(const char *const *src, size_t n, char ***out) {
  *out = calloc(n + 1, sizeof **out);
  if (!*out)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (!((*out)[i] = strdup(src[i] ? src[i] : ""))) {
      free_fields(*out, i);
      *out = NULL;
      return -1;
    }
  return 0;
}

int journal_entry_copy(const journal_entry *e, journal_entry *out) {
  memset(out, 0, sizeof *out);
  *out = *e;
  out->c8y_id = dup_or_null(e->c8y_id);
  out->xid = dup_or_null(e->xid);
  out->json = dup_or_null(e->json);
  out->template_id = dup_or_null(e->template_id);
  out->fragment = dup_or_null(e->fragment);
  out->device = dup_or_null(e->device);
  out->boot_id = dup_or_null(e->boot_id);
  out->fields = NULL;
  out->nfields = 0;
  bool ok = (!e->c8y_id || out->c8y_id) && (!e->xid || out->xid) &&
            (!e->json || out->json) && (!e->template_id || out->template_id) &&
            (!e->fragment || out->fragment) && (!e->device || out->device) &&
            (!e->boot_id || out->boot_id);
  if (ok && copy_fields((const char *const *)e->fields, e->nfields,
                        &out->fields) == 0)
    out->nfields = e->nfields;
  else
    ok = false;
  if (!ok) {
    entry_clear(out);
    return -1;
  }
  return 0;
}

static json_t *fields_json(const char *const *fields, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++)
    json_array_append_new(a, json_string(fields[i] ? fields[i] : ""));
  return a;
}

/* A "begin" line; resume state and ids only when there are some, so
 * journals of ordinary operations look as they always did. */
static json_t *entry_json(const journal_entry *e, const char *boot,
                          long long t) {
  json_t *o =
      json_pack("{s:s, s:I, s:s?, s:s, s:s, s:b, s:s?, s:b, s:I}", "op",
                "begin", "id", (json_int_t)e->id, "template", e->template_id,
                "fragment", e->fragment, "device", e->device, "child", e->child,
                "boot", boot, "reboot", e->reboot, "t", (json_int_t)t);
  if (o && e->c8y_id)
    json_object_set_new(o, "c8y_id", json_string(e->c8y_id));
  if (o && e->xid)
    json_object_set_new(o, "xid", json_string(e->xid));
  if (o && e->profile)
    json_object_set_new(o, "profile", json_true());
  if (o && e->parent)
    json_object_set_new(o, "parent", json_integer((json_int_t)e->parent));
  if (o && (e->profile || e->parent))
    json_object_set_new(o, "step", json_integer(e->step));
  if (o && e->resume) {
    json_object_set_new(o, "resume", json_true());
    json_object_set_new(
        o, "fields", fields_json((const char *const *)e->fields, e->nfields));
    if (e->json)
      json_object_set_new(o, "json", json_string(e->json));
    json_object_set_new(o, "resumes", json_integer(e->resumes));
  }
  return o;
}

/* Fields of a resume record; false if they are unreadable. */
static bool read_fields(json_t *arr, journal_entry *e) {
  if (!json_is_array(arr))
    return false;
  size_t n = json_array_size(arr);
  char **v = calloc(n + 1, sizeof *v);
  if (!v)
    return false;
  for (size_t i = 0; i < n; i++) {
    const char *s = json_string_value(json_array_get(arr, i));
    if (!s || !(v[i] = strdup(s))) {
      free_fields(v, i);
      return false;
    }
  }
  free_fields(e->fields, e->nfields);
  e->fields = v;
  e->nfields = n;
  return true;
}

static void read_resume(journal *j, size_t lineno, json_t *o,
                        journal_entry *e) {
  if (read_fields(json_object_get(o, "fields"), e)) {
    e->resume = true;
    const char *doc = json_string_value(json_object_get(o, "json"));
    free(e->json);
    e->json = dup_or_null(doc);
  } else {
    log_warning("%s:%zu: resume record of entry %llu without readable "
                "fields; the operation will fail instead",
                j->path, lineno, (unsigned long long)e->id);
    e->resume = false;
  }
}

/* The token in <RUNTIME_DIRECTORY>/boot-token, made on first use. The unit
 * keeps the directory across service restarts (RuntimeDirectoryPreserve=),
 * so only a new boot (a fresh /run) makes a new token. NULL without systemd
 * or when the token cannot be kept: then the kernel's id alone decides. */
static char *boot_token(void) {
  const char *dir = getenv("RUNTIME_DIRECTORY");
  if (!dir || dir[0] != '/')
    return NULL;
  char path[512];
  size_t dlen = strcspn(dir, ":"); /* several directories: the first */
  if (snprintf(path, sizeof path, "%.*s/boot-token", (int)dlen, dir) >=
      (int)sizeof path)
    return NULL;
  char *tok = fsutil_read_first_line(path);
  if (tok && strlen(tok) == 32 && strspn(tok, "0123456789abcdef") == 32)
    return tok;
  free(tok);
  unsigned char raw[16];
  int rfd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (rfd < 0)
    return NULL;
  ssize_t got = read(rfd, raw, sizeof raw);
  close(rfd);
  if (got != (ssize_t)sizeof raw)
    return NULL;
  char hex[33];
  for (size_t i = 0; i < sizeof raw; i++)
    snprintf(hex + 2 * i, 3, "%02x", raw[i]);
  /* O_EXCL: of two starts racing, one token wins and both read it. */
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd >= 0) {
    hex[32] = '\n';
    int ok = fsutil_write_all(fd, hex, 33, NULL) == 0;
    hex[32] = '\0';
    close(fd);
    if (!ok) {
      unlink(path);
      return NULL;
    }
  } else if (errno != EEXIST) {
    return NULL;
  }
  tok = fsutil_read_first_line(path);
  if (tok && strlen(tok) == 32)
    return tok;
  free(tok);
  return NULL;
}

char *journal_boot_id(void) {
  const char *path = getenv("C8Y_BOOT_ID_FILE");
  if (path && *path)
    return fsutil_read_first_line(path);
  char *kernel = fsutil_read_first_line("/proc/sys/kernel/random/boot_id");
  char *tok = boot_token();
  if (!kernel || !tok) {
    free(tok);
    return kernel;
  }
  char *both = malloc(strlen(kernel) + 1 + strlen(tok) + 1);
  if (both)
    sprintf(both, "%s %s", kernel, tok);
  free(kernel);
  free(tok);
  return both;
}

bool journal_booted_since(const char *now, const char *then) {
  if (!now || !then)
    return false;
  size_t nk = strcspn(now, " "), tk = strcspn(then, " ");
  if (nk != tk || memcmp(now, then, nk) != 0)
    return true;
  /* Same kernel id: a token on both sides still tells a container reboot;
   * an entry written before tokens existed has none and is judged by the
   * kernel id alone. */
  if (now[nk] == ' ' && then[tk] == ' ')
    return strcmp(now + nk + 1, then + tk + 1) != 0;
  return false;
}

/* Waits until line `seq` is durable, running the fdatasync itself when no
 * other thread is; every line written before it is covered by the same
 * call. Called with mu held; mu is released around the fdatasync. */
static int sync_through(journal *j, uint64_t seq) {
  while (j->synced < seq) {
    if (j->syncing) {
      pthread_cond_wait(&j->synced_cv, &j->mu);
      continue;
    }
    j->syncing = true;
    uint64_t target = j->appended;
    int fd = j->fd;
    pthread_mutex_unlock(&j->mu);
    int rc = fdatasync(fd);
    int err = errno;
    pthread_mutex_lock(&j->mu);
    if (rc != 0) {
      log_error("%s: fdatasync failed: %s", j->path, strerror(err));
      /* Linux reports a writeback error once: retrying would wrongly
       * succeed, so every line of this batch is reported failed. */
      j->failed_from = j->synced + 1;
      j->failed_to = target;
    }
    j->synced = target;
    j->syncing = false;
    pthread_cond_broadcast(&j->synced_cv);
  }
  return seq >= j->failed_from && seq <= j->failed_to ? C8Y_EIO : C8Y_OK;
}

/* Writes one JSON line (mu held); the line's sequence number in *seq.
 * A partial write is cut off again so the next line starts clean; where
 * that fails, the next line starts on a line of its own, so the torn one
 * costs only itself at replay. */
static int write_line(journal *j, json_t *obj, uint64_t *seq) {
  char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
  json_decref(obj);
  if (!text)
    return C8Y_ENOMEM;
  size_t len = strlen(text), written = 0;
  text[len] = '\n';
  int rc = C8Y_OK;
  if (j->torn) {
    rc = fsutil_write_all(j->fd, "\n", 1, &written);
    j->file_bytes += written;
    j->torn = rc != C8Y_OK;
  }
  if (rc == C8Y_OK)
    rc = fsutil_write_all(j->fd, text, len + 1, &written);
  if (rc != C8Y_OK) {
    log_error("%s: write failed: %s", j->path, strerror(errno));
    if (written > 0 && ftruncate(j->fd, (off_t)j->file_bytes) != 0) {
      log_error("%s: cannot cut off the partial line: %s", j->path,
                strerror(errno));
      j->file_bytes += written;
      j->torn = true;
    }
  } else {
    j->file_bytes += len + 1;
    *seq = ++j->appended;
  }
  free(text);
  return rc;
}

static void compact(journal *j, bool wait);

/* Appends one line and returns once it is durable; may then compact the
 * file. Called with mu held, returns with it released. */
static int append_unlock(journal *j, json_t *obj) {
  uint64_t seq = 0;
  int rc = write_line(j, obj, &seq);
  if (rc == C8Y_OK)
    rc = sync_through(j, seq);
  bool due = j->file_bytes >= j->compact_at && !j->compacting;
  pthread_mutex_unlock(&j->mu);
  if (due)
    compact(j, false);
  return rc;
}

static journal_entry *find_recovered(journal_entry *v, size_t n, uint64_t id) {
  for (size_t i = 0; i < n; i++)
    if (v[i].id == id)
      return &v[i];
  return NULL;
}

/* A step number: a profile has a handful of steps; anything negative or
 * absurd is damage and reads as 0 (the profile starts from its first step,
 * whose plugins check what is installed already). */
static unsigned read_step(json_t *v) {
  json_int_t n = json_integer_value(v);
  return n > 0 && n < 100000 ? (unsigned)n : 0;
}

static void replay_line(journal *j, const char *line, size_t lineno) {
  json_error_t jerr;
  json_t *o = json_loads(line, 0, &jerr);
  if (!json_is_object(o)) {
    log_warning("%s:%zu: skipping unreadable journal line (%s)", j->path,
                lineno, o ? "not an object" : jerr.text);
    json_decref(o);
    return;
  }
  const char *kind = json_string_value(json_object_get(o, "op"));
  json_int_t id = json_integer_value(json_object_get(o, "id"));
  /* Ids count operations; one near INT64_MAX is damage, and the next id
   * after it would not survive the next write. */
  if (!kind || id <= 0 || id > ((json_int_t)1 << 53)) {
    log_warning("%s:%zu: skipping journal line without op/id", j->path, lineno);
    json_decref(o);
    return;
  }
  if ((uint64_t)id >= j->next_id)
    j->next_id = (uint64_t)id + 1;
  journal_entry *e = find_recovered(j->recovered, j->nrecovered, (uint64_t)id);
  if (strcmp(kind, "begin") == 0 && !e) {
    journal_entry *grown =
        realloc(j->recovered, (j->nrecovered + 1) * sizeof *grown);
    if (grown) {
      j->recovered = grown;
      e = &grown[j->nrecovered++];
      memset(e, 0, sizeof *e);
      e->id = (uint64_t)id;
      e->template_id =
          dup_or_null(json_string_value(json_object_get(o, "template")));
      e->c8y_id = dup_or_null(json_string_value(json_object_get(o, "c8y_id")));
      e->xid = dup_or_null(json_string_value(json_object_get(o, "xid")));
      e->fragment =
          dup_or_null(json_string_value(json_object_get(o, "fragment")));
      e->device = dup_or_null(json_string_value(json_object_get(o, "device")));
      e->child = json_is_true(json_object_get(o, "child"));
      e->boot_id = dup_or_null(json_string_value(json_object_get(o, "boot")));
      e->reboot = json_is_true(json_object_get(o, "reboot"));
      e->started_ms = json_integer_value(json_object_get(o, "t"));
      json_int_t resumes = json_integer_value(json_object_get(o, "resumes"));
      e->resumes = resumes > 0 ? (unsigned)resumes : 0;
      e->profile = json_is_true(json_object_get(o, "profile"));
      json_int_t parent = json_integer_value(json_object_get(o, "parent"));
      e->parent =
          parent > 0 && parent <= ((json_int_t)1 << 53) ? (uint64_t)parent : 0;
      e->step = read_step(json_object_get(o, "step"));
      if (json_is_true(json_object_get(o, "resume")))
        read_resume(j, lineno, o, e);
      const char *bad = e->device ? ident_check(e->device, false) : NULL;
      if (!e->fragment || !e->device || bad) {
        if (bad)
          log_warning("%s:%zu: journal entry %lld skipped: its device id %s",
                      j->path, lineno, (long long)id, bad);
        else
          log_warning("%s:%zu: journal entry %lld lacks fragment/device",
                      j->path, lineno, (long long)id);
        entry_clear(e);
        j->nrecovered--;
      }
    }
  } else if (strcmp(kind, "reboot") == 0 && e) {
    e->reboot = true;
  } else if (strcmp(kind, "resume") == 0 && e) {
    read_resume(j, lineno, o, e);
  } else if (strcmp(kind, "step") == 0 && e) {
    e->step = read_step(json_object_get(o, "step"));
  } else if (strcmp(kind, "cid") == 0 && e) {
    const char *cid = json_string_value(json_object_get(o, "c8y_id"));
    if (cid && !e->c8y_id)
      e->c8y_id = strdup(cid);
  } else if (strcmp(kind, "end") == 0 && e) {
    entry_clear(e);
    *e = j->recovered[--j->nrecovered];
  }
  json_decref(o);
}

static int journal_replay(journal *j) {
  FILE *f = fopen(j->path, "re");
  if (!f)
    return errno == ENOENT ? 0 : -1;
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  size_t lineno = 0;
  while ((n = getline(&line, &cap, f)) > 0) {
    lineno++;
    if (n > 0 && line[n - 1] == '\n')
      line[n - 1] = 0;
    if (line[0])
      replay_line(j, line, lineno);
  }
  free(line);
  fclose(f);
  return 0;
}

/* ---- the executing set and rewrites ------------------------------------ */

static journal_entry *find_live(journal *j, uint64_t id) {
  for (size_t i = 0; i < j->nlive; i++)
    if (j->live[i].id == id)
      return &j->live[i];
  return NULL;
}

static int live_reserve(journal *j, size_t more) {
  if (j->nlive + more <= j->caplive)
    return C8Y_OK;
  size_t cap = j->caplive ? j->caplive : 8;
  while (cap < j->nlive + more)
    cap *= 2;
  journal_entry *grown = realloc(j->live, cap * sizeof *grown);
  if (!grown)
    return C8Y_ENOMEM;
  j->live = grown;
  j->caplive = cap;
  return C8Y_OK;
}

typedef struct textbuf {
  char *p;
  size_t len, cap;
  bool failed;
} textbuf;

static void textbuf_add_entry(textbuf *b, const journal_entry *e) {
  char *text = NULL;
  json_t *o = entry_json(e, e->boot_id, e->started_ms);
  if (o)
    text = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  size_t n = text ? strlen(text) + 1 : 0;
  if (text && b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
      cap *= 2;
    char *grown = realloc(b->p, cap);
    if (grown) {
      b->p = grown;
      b->cap = cap;
    }
  }
  if (!text || b->len + n > b->cap) {
    b->failed = true;
  } else {
    memcpy(b->p + b->len, text, n - 1);
    b->p[b->len + n - 1] = '\n';
    b->len += n;
  }
  free(text);
}

/* What the file must say now: the previous run's entries until they are
 * forgotten, then what is executing. mu held. */
static int snapshot(journal *j, textbuf *b) {
  for (size_t i = 0; j->recovered_in_file && i < j->nrecovered; i++)
    textbuf_add_entry(b, &j->recovered[i]);
  for (size_t i = 0; i < j->nlive; i++)
    textbuf_add_entry(b, &j->live[i]);
  return b->failed ? C8Y_ENOMEM : C8Y_OK;
}

/* A fresh file holding `b`, durable; its descriptor or a C8Y_* code. */
static int write_fresh(const char *tmp, const textbuf *b) {
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    log_error("%s: %s", tmp, strerror(errno));
    return C8Y_EIO;
  }
  if (fsutil_write_all(fd, b->p ? b->p : "", b->len, NULL) != 0 ||
      fdatasync(fd) != 0) {
    log_error("%s: %s", tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    return C8Y_EIO;
  }
  return fd;
}

static void compact_done(journal *j, uint64_t next_at) {
  j->compacting = false;
  j->compact_at = next_at;
  pthread_cond_broadcast(&j->synced_cv);
}

/* Rewrites the journal with only what is still executing and renames it
 * over the old one, so the file stays small however long the agent runs.
 * `wait`: take over from a rewrite in progress instead of skipping. */
static void compact_run(journal *j, bool wait, int *result) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", j->path);
  pthread_mutex_lock(&j->mu);
  while (wait && j->compacting)
    pthread_cond_wait(&j->synced_cv, &j->mu);
  if (j->compacting) {
    pthread_mutex_unlock(&j->mu);
    *result = C8Y_EAGAIN;
    return;
  }
  j->compacting = true;
  textbuf b = {0};
  int rc = snapshot(j, &b);
  uint64_t gen = j->appended;
  pthread_mutex_unlock(&j->mu);

  int fd = rc == C8Y_OK ? write_fresh(tmp, &b) : rc;
  free(b.p);
  pthread_mutex_lock(&j->mu);
  if (fd < 0) {
    compact_done(j, j->file_bytes + COMPACT_MIN_BYTES);
    pthread_mutex_unlock(&j->mu);
    *result = fd;
    return;
  }
  /* The sync token: no fdatasync may run on the descriptor being replaced,
   * and appenders wait for the directory fsync below. */
  while (j->syncing)
    pthread_cond_wait(&j->synced_cv, &j->mu);
  if (j->appended != gen) {
    compact_done(j, j->file_bytes + COMPACT_RETRY_BYTES);
    pthread_mutex_unlock(&j->mu);
    close(fd);
    unlink(tmp);
    *result = C8Y_EAGAIN;
    return;
  }
  /* Under mu because the swap must be atomic with appends: a line written
   * to the old file after the rename would be lost. rename(2) only updates
   * the directory in memory; the fsync that waits for the disk follows
   * outside mu. */
  if (rename(tmp, j->path) != 0) {
    log_error("%s: rename failed: %s", j->path, strerror(errno));
    compact_done(j, j->file_bytes + COMPACT_MIN_BYTES);
    pthread_mutex_unlock(&j->mu);
    close(fd);
    unlink(tmp);
    *result = C8Y_EIO;
    return;
  }
  int old = j->fd;
  j->fd = fd;
  j->file_bytes = (uint64_t)b.len;
  j->torn = false;
  j->syncing = true;
  pthread_mutex_unlock(&j->mu);
  if (old >= 0)
    close(old);
  /* Without it a power cut could bring the old name back, and with it the
   * old file, without the lines appended to the new one from now on. */
  rc = fsutil_fsync_dir(j->dir);
  if (rc != 0)
    log_error("%s: fsync failed: %s", j->dir, strerror(errno));
  pthread_mutex_lock(&j->mu);
  j->syncing = false;
  if (j->synced < gen)
    j->synced = gen;
  uint64_t next_at = 2 * j->file_bytes;
  compact_done(j, next_at < COMPACT_MIN_BYTES ? COMPACT_MIN_BYTES : next_at);
  pthread_mutex_unlock(&j->mu);
  *result = rc == 0 ? C8Y_OK : C8Y_EIO;
}

static void compact(journal *j, bool wait) {
  int rc;
  compact_run(j, wait, &rc);
  if (rc != C8Y_OK && rc != C8Y_EAGAIN)
    log_warning("%s: not compacted (%s); it keeps growing until the next "
                "rewrite succeeds",
                j->path, status_str(rc));
}

int journal_open(const char *dir, journal **out, char *err, size_t errlen) {
  *out = NULL;
  journal *j = calloc(1, sizeof *j);
  if (!j) {
    snprintf(err, errlen, "out of memory");
    return C8Y_ENOMEM;
  }
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->synced_cv, NULL);
  j->fd = -1;
  j->next_id = 1;
  j->recovered_in_file = true;
  j->compact_at = COMPACT_MIN_BYTES;
  size_t plen = strlen(dir) + sizeof(JOURNAL_FILE) + 2;
  j->path = malloc(plen);
  j->dir = strdup(dir);
  if (!j->path || !j->dir) {
    journal_close(j);
    snprintf(err, errlen, "out of memory");
    return C8Y_ENOMEM;
  }
  snprintf(j->path, plen, "%s/%s", dir, JOURNAL_FILE);
  if (journal_replay(j) != 0) {
    snprintf(err, errlen, "%s: %s", j->path, strerror(errno));
    journal_close(j);
    return C8Y_EIO;
  }
  j->boot_id = journal_boot_id();
  /* Only what is still executing survives the restart. */
  int rc;
  compact_run(j, true, &rc);
  if (rc != C8Y_OK) {
    snprintf(err, errlen, "%s: cannot rewrite the journal: %s", j->path,
             status_str(rc));
    journal_close(j);
    return rc;
  }
  *out = j;
  return C8Y_OK;
}

void journal_close(journal *j) {
  if (!j)
    return;
  if (j->fd >= 0)
    close(j->fd);
  for (size_t i = 0; i < j->nrecovered; i++)
    entry_clear(&j->recovered[i]);
  for (size_t i = 0; i < j->nlive; i++)
    entry_clear(&j->live[i]);
  free(j->recovered);
  free(j->live);
  free(j->keep);
  free(j->boot_id);
  free(j->path);
  free(j->dir);
  pthread_cond_destroy(&j->synced_cv);
  pthread_mutex_destroy(&j->mu);
  free(j);
}

size_t journal_recovered(journal *j, const journal_entry **entries) {
  *entries = j->recovered;
  return j->nrecovered;
}

int journal_keep_recovered(journal *j, uint64_t id) {
  pthread_mutex_lock(&j->mu);
  int rc = C8Y_OK;
  journal_entry *e = find_recovered(j->recovered, j->nrecovered, id);
  if (!e)
    rc = C8Y_EINVAL;
  else if (!j->keep && !(j->keep = calloc(j->nrecovered, sizeof *j->keep)))
    rc = C8Y_ENOMEM;
  if (rc == C8Y_OK) {
    size_t i = (size_t)(e - j->recovered);
    if (!j->keep[i])
      e->resumes++;
    j->keep[i] = true;
  }
  pthread_mutex_unlock(&j->mu);
  return rc;
}

int journal_forget_recovered(journal *j) {
  pthread_mutex_lock(&j->mu);
  size_t kept = 0;
  for (size_t i = 0; j->keep && i < j->nrecovered; i++)
    kept += j->keep[i];
  if (live_reserve(j, kept) != C8Y_OK) {
    pthread_mutex_unlock(&j->mu);
    return C8Y_ENOMEM;
  }
  /* Kept entries stay executing: they move to the set a rewrite writes. */
  for (size_t i = 0; i < j->nrecovered; i++) {
    if (j->keep && j->keep[i]) {
      j->live[j->nlive++] = j->recovered[i];
      memset(&j->recovered[i], 0, sizeof j->recovered[i]);
    } else {
      entry_clear(&j->recovered[i]);
    }
  }
  j->nrecovered = 0;
  j->recovered_in_file = false;
  free(j->keep);
  j->keep = NULL;
  pthread_mutex_unlock(&j->mu);
  int rc;
  compact_run(j, true, &rc);
  return rc;
}

uint64_t journal_next_id(journal *j) {
  pthread_mutex_lock(&j->mu);
  uint64_t id = j->next_id++;
  pthread_mutex_unlock(&j->mu);
  return id;
}

int journal_begin(journal *j, const journal_entry *e) {
  pthread_mutex_lock(&j->mu);
  if (e->id >= j->next_id)
    j->next_id = e->id + 1;
  journal_entry *copy = NULL;
  if (live_reserve(j, 1) == C8Y_OK) {
    copy = &j->live[j->nlive];
    if (journal_entry_copy(e, copy) == 0) {
      j->nlive++;
      free(copy->boot_id);
      copy->boot_id = dup_or_null(j->boot_id);
      copy->started_ms = clock_wall_ms();
    } else {
      copy = NULL;
    }
  }
  if (!copy || (j->boot_id && !copy->boot_id)) {
    if (copy)
      entry_clear(&j->live[--j->nlive]);
    pthread_mutex_unlock(&j->mu);
    return C8Y_ENOMEM;
  }
  return append_unlock(j, entry_json(copy, copy->boot_id, copy->started_ms));
}

int journal_mark_resume(journal *j, uint64_t id, const char *const *fields,
                        size_t nfields, const char *json) {
  pthread_mutex_lock(&j->mu);
  journal_entry *e = find_live(j, id);
  if (e) {
    char **copy;
    char *doc = dup_or_null(json);
    if ((json && !doc) || copy_fields(fields, nfields, &copy) != 0) {
      free(doc);
      pthread_mutex_unlock(&j->mu);
      return C8Y_ENOMEM;
    }
    free_fields(e->fields, e->nfields);
    e->fields = copy;
    e->nfields = nfields;
    free(e->json);
    e->json = doc;
    e->resume = true;
  }
  json_t *o = json_pack("{s:s, s:I}", "op", "resume", "id", (json_int_t)id);
  if (o)
    json_object_set_new(o, "fields", fields_json(fields, nfields));
  if (o && json)
    json_object_set_new(o, "json", json_string(json));
  return append_unlock(j, o);
}

int journal_set_c8y_id(journal *j, uint64_t id, const char *c8y_id) {
  if (!c8y_id)
    return C8Y_EINVAL;
  pthread_mutex_lock(&j->mu);
  journal_entry *e = find_live(j, id);
  if (e && !e->c8y_id && !(e->c8y_id = strdup(c8y_id))) {
    pthread_mutex_unlock(&j->mu);
    return C8Y_ENOMEM;
  }
  return append_unlock(j, json_pack("{s:s, s:I, s:s}", "op", "cid", "id",
                                    (json_int_t)id, "c8y_id", c8y_id));
}

int journal_mark_reboot(journal *j, uint64_t id) {
  pthread_mutex_lock(&j->mu);
  journal_entry *e = find_live(j, id);
  if (e)
    e->reboot = true;
  return append_unlock(
      j, json_pack("{s:s, s:I}", "op", "reboot", "id", (json_int_t)id));
}

int journal_mark_step(journal *j, uint64_t id, unsigned step) {
  pthread_mutex_lock(&j->mu);
  journal_entry *e = find_live(j, id);
  if (e)
    e->step = step;
  return append_unlock(j, json_pack("{s:s, s:I, s:I}", "op", "step", "id",
                                    (json_int_t)id, "step", (json_int_t)step));
}

int journal_end(journal *j, uint64_t id) {
  pthread_mutex_lock(&j->mu);
  journal_entry *e = find_live(j, id);
  if (e) {
    entry_clear(e);
    *e = j->live[--j->nlive];
  }
  return append_unlock(
      j, json_pack("{s:s, s:I}", "op", "end", "id", (json_int_t)id));
}
