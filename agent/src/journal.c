#include "journal.h"

#include "clock.h"
#include "dlog.h"
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
/* A rewrite that could not finish is tried again once the file grew by
 * this much. */
#define COMPACT_RETRY_BYTES 4096u

/* Locking: mu guards everything below it. Lines are written to the file
 * under mu (page cache only); the file is a dlog, so fdatasync (group
 * commit) and rewrites (the copying, the syncs) run with mu released: no
 * thread waits on the disk while holding it. */
struct journal {
  char *dir;
  char *path;
  char *boot_id;
  pthread_mutex_t mu;
  pthread_cond_t compact_cv; /* a rewrite finished */
  int dirfd;
  dlog *log;
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
  /* Final statuses of ended operations, in the file until they are sent
   * (journal_end_status .. journal_status_sent). */
  journal_status *unsent;
  size_t nunsent, capunsent;
  bool compacting;
  bool torn; /* the file ends in a partial line that could not be cut off */
  uint64_t compact_at;
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

/* Writes one JSON line (mu held); the append generation of the line in
 * *gen. A partial write is cut off again (dlog) so the next line starts
 * clean; where that fails, the next line starts on a line of its own, so
 * the torn one costs only itself at replay. */
static int write_line(journal *j, json_t *obj, uint64_t *gen) {
  char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
  json_decref(obj);
  if (!text)
    return C8Y_ENOMEM;
  size_t len = strlen(text);
  text[len] = '\n';
  int rc = C8Y_OK;
  if (j->torn) {
    if (dlog_append(j->log, "\n", 1) == 0)
      j->torn = false;
    else
      rc = C8Y_EIO;
  }
  uint64_t before = dlog_size(j->log);
  if (rc == C8Y_OK && dlog_append(j->log, text, len + 1) != 0) {
    rc = C8Y_EIO;
    log_error("%s: write failed: %s", j->path, strerror(errno));
    if (dlog_size(j->log) != before) {
      log_error("%s: cannot cut off the partial line", j->path);
      j->torn = true;
    }
  }
  if (rc == C8Y_OK)
    *gen = dlog_gen(j->log);
  free(text);
  return rc;
}

static void compact(journal *j, bool wait);

/* Appends one line, with `sync` returns once it is durable; may then
 * compact the file. Called with mu held, returns with it released. */
static int append_line_unlock(journal *j, json_t *obj, bool sync) {
  uint64_t gen = 0;
  int rc = write_line(j, obj, &gen);
  if (rc == C8Y_OK && sync && dlog_sync(j->log, gen) != 0)
    rc = C8Y_EIO;
  bool due = dlog_size(j->log) >= j->compact_at && !j->compacting;
  pthread_mutex_unlock(&j->mu);
  if (due)
    compact(j, false);
  return rc;
}

static int append_unlock(journal *j, json_t *obj) {
  return append_line_unlock(j, obj, true);
}

/* ---- final statuses not sent yet ---------------------------------------- */

static int unsent_add(journal *j, uint64_t id, const char *topic,
                      const char *line) {
  for (size_t i = 0; i < j->nunsent; i++)
    if (j->unsent[i].id == id)
      return C8Y_OK; /* an older copy of the same status */
  if (j->nunsent == j->capunsent) {
    size_t cap = j->capunsent ? 2 * j->capunsent : 8;
    journal_status *grown = realloc(j->unsent, cap * sizeof *grown);
    if (!grown)
      return C8Y_ENOMEM;
    j->unsent = grown;
    j->capunsent = cap;
  }
  journal_status *st = &j->unsent[j->nunsent];
  st->id = id;
  st->topic = strdup(topic);
  st->line = strdup(line);
  if (!st->topic || !st->line) {
    free(st->topic);
    free(st->line);
    return C8Y_ENOMEM;
  }
  j->nunsent++;
  return C8Y_OK;
}

static journal_status *unsent_find(journal *j, uint64_t id) {
  for (size_t i = 0; i < j->nunsent; i++)
    if (j->unsent[i].id == id)
      return &j->unsent[i];
  return NULL;
}

/* Order is kept: statuses are sent again in the order they ended. */
static bool unsent_remove(journal *j, uint64_t id) {
  for (size_t i = 0; i < j->nunsent; i++)
    if (j->unsent[i].id == id) {
      free(j->unsent[i].topic);
      free(j->unsent[i].line);
      memmove(&j->unsent[i], &j->unsent[i + 1],
              (j->nunsent - i - 1) * sizeof *j->unsent);
      j->nunsent--;
      return true;
    }
  return false;
}

static json_t *status_json(const journal_status *st) {
  return json_pack("{s:s, s:I, s:s, s:s}", "op", "end", "id",
                   (json_int_t)st->id, "topic", st->topic, "line", st->line);
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
  if (strcmp(kind, "begin") == 0 && !e && unsent_find(j, (uint64_t)id)) {
    /* Ended already (a damaged file: ids are never reused): the status
     * stands, the begin is not recovered. */
    log_warning("%s:%zu: begin of operation #%lld after its end; ignored",
                j->path, lineno, (long long)id);
  } else if (strcmp(kind, "begin") == 0 && !e) {
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
  } else if (strcmp(kind, "end") == 0) {
    const char *topic = json_string_value(json_object_get(o, "topic"));
    const char *text = json_string_value(json_object_get(o, "line"));
    if (topic && text && unsent_add(j, (uint64_t)id, topic, text) != C8Y_OK)
      log_warning("%s:%zu: out of memory for the final status of operation "
                  "#%lld; it is not sent again",
                  j->path, lineno, (long long)id);
    if (e) {
      entry_clear(e);
      *e = j->recovered[--j->nrecovered];
    }
  } else if (strcmp(kind, "sent") == 0) {
    unsent_remove(j, (uint64_t)id);
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

static void textbuf_add(textbuf *b, json_t *o) {
  char *text = NULL;
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

static void textbuf_add_entry(textbuf *b, const journal_entry *e) {
  textbuf_add(b, entry_json(e, e->boot_id, e->started_ms));
}

/* What the file must say now: the previous run's entries until they are
 * forgotten, then what is executing. mu held. */
static int snapshot(journal *j, textbuf *b) {
  for (size_t i = 0; j->recovered_in_file && i < j->nrecovered; i++)
    textbuf_add_entry(b, &j->recovered[i]);
  for (size_t i = 0; i < j->nlive; i++)
    textbuf_add_entry(b, &j->live[i]);
  for (size_t i = 0; i < j->nunsent; i++)
    textbuf_add(b, status_json(&j->unsent[i]));
  return b->failed ? C8Y_ENOMEM : C8Y_OK;
}

static void compact_done(journal *j, uint64_t next_at) {
  j->compacting = false;
  j->compact_at = next_at;
  pthread_cond_broadcast(&j->compact_cv);
}

/* Rewrites the journal with only what is still executing (and the final
 * statuses not sent yet) through dlog_rewrite: the snapshot is taken under
 * mu, the new file written and synced without it, and lines appended
 * meanwhile are carried over, so the file stays small however long the
 * agent runs. `wait`: wait for a rewrite in progress instead of skipping. */
static void compact_run(journal *j, bool wait, int *result) {
  pthread_mutex_lock(&j->mu);
  while (wait && j->compacting)
    pthread_cond_wait(&j->compact_cv, &j->mu);
  if (j->compacting) {
    pthread_mutex_unlock(&j->mu);
    *result = C8Y_EAGAIN;
    return;
  }
  j->compacting = true;
  textbuf b = {0};
  int rc = snapshot(j, &b);
  bool torn = j->torn;
  if (rc == C8Y_OK &&
      dlog_rewrite(j->log, b.p ? b.p : "", b.len, NULL, 0, NULL, NULL) != 0)
    rc = errno == EAGAIN ? C8Y_EAGAIN : C8Y_EIO;
  free(b.p);
  uint64_t size = dlog_size(j->log);
  if (rc == C8Y_OK) {
    /* A torn line left before the snapshot is gone with the old file. */
    if (torn)
      j->torn = false;
    uint64_t next_at = 2 * size;
    compact_done(j, next_at < COMPACT_MIN_BYTES ? COMPACT_MIN_BYTES : next_at);
  } else {
    compact_done(
        j, size + (rc == C8Y_EAGAIN ? COMPACT_RETRY_BYTES : COMPACT_MIN_BYTES));
  }
  pthread_mutex_unlock(&j->mu);
  *result = rc;
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
  pthread_cond_init(&j->compact_cv, NULL);
  j->dirfd = -1;
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
  j->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (j->dirfd < 0 || dlog_open(j->dirfd, dir, JOURNAL_FILE, &j->mu, &j->log,
                                err, errlen) != 0) {
    if (j->dirfd < 0)
      snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    journal_close(j);
    return C8Y_EIO;
  }
  /* Only what is still executing (or not sent) survives the restart. */
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
  dlog_close(j->log);
  if (j->dirfd >= 0)
    close(j->dirfd);
  for (size_t i = 0; i < j->nunsent; i++) {
    free(j->unsent[i].topic);
    free(j->unsent[i].line);
  }
  free(j->unsent);
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
  pthread_cond_destroy(&j->compact_cv);
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

int journal_end_status(journal *j, uint64_t id, const char *topic,
                       const char *line) {
  if (!topic || !line)
    return C8Y_EINVAL;
  pthread_mutex_lock(&j->mu);
  if (unsent_add(j, id, topic, line) != C8Y_OK) {
    pthread_mutex_unlock(&j->mu);
    return C8Y_ENOMEM;
  }
  journal_entry *e = find_live(j, id);
  if (e) {
    entry_clear(e);
    *e = j->live[--j->nlive];
  }
  journal_status st = {id, (char *)topic, (char *)line};
  int rc = append_unlock(j, status_json(&st));
  if (rc != C8Y_OK) {
    /* Not durable: the caller queues the status another way, so it must
     * not come back from here. */
    pthread_mutex_lock(&j->mu);
    unsent_remove(j, id);
    pthread_mutex_unlock(&j->mu);
  }
  return rc;
}

int journal_status_sent(journal *j, uint64_t id) {
  pthread_mutex_lock(&j->mu);
  if (!unsent_remove(j, id)) {
    pthread_mutex_unlock(&j->mu);
    return C8Y_EINVAL;
  }
  return append_line_unlock(
      j, json_pack("{s:s, s:I}", "op", "sent", "id", (json_int_t)id), false);
}

size_t journal_unsent(journal *j, journal_status **out) {
  pthread_mutex_lock(&j->mu);
  size_t n = j->nunsent;
  journal_status *v = n ? calloc(n, sizeof *v) : NULL;
  for (size_t i = 0; v && i < n; i++) {
    v[i].id = j->unsent[i].id;
    v[i].topic = strdup(j->unsent[i].topic);
    v[i].line = strdup(j->unsent[i].line);
    if (!v[i].topic || !v[i].line) {
      journal_status_free(v, i + 1);
      v = NULL;
    }
  }
  pthread_mutex_unlock(&j->mu);
  *out = v;
  return v ? n : 0;
}

void journal_status_free(journal_status *v, size_t n) {
  for (size_t i = 0; v && i < n; i++) {
    free(v[i].topic);
    free(v[i].line);
  }
  free(v);
}

void journal_get_stats(journal *j, journal_stats *out) {
  pthread_mutex_lock(&j->mu);
  dlog_stats ds;
  dlog_get_stats(j->log, &ds);
  out->fsyncs = ds.fsyncs;
  out->written = ds.written;
  out->unsent = j->nunsent;
  pthread_mutex_unlock(&j->mu);
}
