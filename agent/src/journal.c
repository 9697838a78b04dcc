#include "journal.h"

#include "clock.h"
#include "fsutil.h"
#include "ident.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define JOURNAL_FILE "operations.journal"

struct journal {
  char *path;
  int fd;
  char *boot_id;
  uint64_t next_id;
  journal_entry *recovered;
  size_t nrecovered;
  bool *keep; /* parallel to recovered, after journal_keep_recovered */
};

static void free_fields(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

static void entry_clear(journal_entry *e) {
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
  out->template_id = dup_or_null(e->template_id);
  out->fragment = dup_or_null(e->fragment);
  out->device = dup_or_null(e->device);
  out->boot_id = dup_or_null(e->boot_id);
  out->fields = NULL;
  out->nfields = 0;
  bool ok = (!e->template_id || out->template_id) &&
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

/* A "begin" line; resume state only when there is some, so journals of
 * ordinary operations look as they always did. */
static json_t *entry_json(const journal_entry *e, const char *boot,
                          long long t) {
  json_t *o =
      json_pack("{s:s, s:I, s:s?, s:s, s:s, s:b, s:s?, s:b, s:I}", "op",
                "begin", "id", (json_int_t)e->id, "template", e->template_id,
                "fragment", e->fragment, "device", e->device, "child", e->child,
                "boot", boot, "reboot", e->reboot, "t", (json_int_t)t);
  if (o && e->resume) {
    json_object_set_new(o, "resume", json_true());
    json_object_set_new(
        o, "fields", fields_json((const char *const *)e->fields, e->nfields));
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
  } else {
    log_warning("%s:%zu: resume record of entry %llu without readable "
                "fields; the operation will fail instead",
                j->path, lineno, (unsigned long long)e->id);
    e->resume = false;
  }
}

char *journal_boot_id(void) {
  const char *path = getenv("C8Y_BOOT_ID_FILE");
  return fsutil_read_first_line(
      path && *path ? path : "/proc/sys/kernel/random/boot_id");
}

/* Appends one JSON line and makes it durable before returning. */
static int journal_append(journal *j, json_t *obj) {
  char *text = json_dumps(obj, JSON_COMPACT);
  json_decref(obj);
  if (!text)
    return -1;
  size_t len = strlen(text);
  text[len] = '\n';
  ssize_t off = 0;
  int rc = 0;
  while ((size_t)off < len + 1) {
    ssize_t n = write(j->fd, text + off, len + 1 - (size_t)off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      log_error("%s: write failed: %s", j->path, strerror(errno));
      rc = -1;
      break;
    }
    off += n;
  }
  free(text);
  if (rc == 0 && fdatasync(j->fd) != 0) {
    log_error("%s: fdatasync failed: %s", j->path, strerror(errno));
    rc = -1;
  }
  return rc;
}

static journal_entry *find_recovered(journal_entry *v, size_t n, uint64_t id) {
  for (size_t i = 0; i < n; i++)
    if (v[i].id == id)
      return &v[i];
  return NULL;
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
      e->fragment =
          dup_or_null(json_string_value(json_object_get(o, "fragment")));
      e->device = dup_or_null(json_string_value(json_object_get(o, "device")));
      e->child = json_is_true(json_object_get(o, "child"));
      e->boot_id = dup_or_null(json_string_value(json_object_get(o, "boot")));
      e->reboot = json_is_true(json_object_get(o, "reboot"));
      e->started_ms = json_integer_value(json_object_get(o, "t"));
      json_int_t resumes = json_integer_value(json_object_get(o, "resumes"));
      e->resumes = resumes > 0 ? (unsigned)resumes : 0;
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

/* Writes the still-recovered entries to a fresh file and renames it over the
 * journal, so the file never grows without bound. */
static int journal_rewrite(journal *j, bool only_kept) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", j->path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    log_error("%s: %s", tmp, strerror(errno));
    return -1;
  }
  int old = j->fd;
  j->fd = fd;
  int rc = 0;
  for (size_t i = 0; i < j->nrecovered && rc == 0; i++) {
    journal_entry *e = &j->recovered[i];
    if (only_kept && !(j->keep && j->keep[i]))
      continue;
    rc = journal_append(j, entry_json(e, e->boot_id, e->started_ms));
  }
  if (rc == 0 && rename(tmp, j->path) != 0) {
    log_error("%s: rename failed: %s", j->path, strerror(errno));
    rc = -1;
  }
  if (rc != 0) {
    close(fd);
    unlink(tmp);
    j->fd = old;
    return -1;
  }
  if (old >= 0)
    close(old);
  /* Keep appending to the new file. */
  if (lseek(j->fd, 0, SEEK_END) < 0)
    return -1;
  return 0;
}

int journal_open(const char *dir, journal **out, char *err, size_t errlen) {
  *out = NULL;
  journal *j = calloc(1, sizeof *j);
  if (!j) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  j->fd = -1;
  j->next_id = 1;
  size_t plen = strlen(dir) + sizeof(JOURNAL_FILE) + 2;
  j->path = malloc(plen);
  if (!j->path) {
    free(j);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  snprintf(j->path, plen, "%s/%s", dir, JOURNAL_FILE);
  if (journal_replay(j) != 0) {
    snprintf(err, errlen, "%s: %s", j->path, strerror(errno));
    journal_close(j);
    return -1;
  }
  j->fd = open(j->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (j->fd < 0) {
    snprintf(err, errlen, "%s: %s", j->path, strerror(errno));
    journal_close(j);
    return -1;
  }
  j->boot_id = journal_boot_id();
  /* Compact: only what is still executing survives the restart. */
  if (journal_rewrite(j, false) != 0) {
    snprintf(err, errlen, "%s: cannot rewrite the journal", j->path);
    journal_close(j);
    return -1;
  }
  *out = j;
  return 0;
}

void journal_close(journal *j) {
  if (!j)
    return;
  if (j->fd >= 0)
    close(j->fd);
  for (size_t i = 0; i < j->nrecovered; i++)
    entry_clear(&j->recovered[i]);
  free(j->recovered);
  free(j->keep);
  free(j->boot_id);
  free(j->path);
  free(j);
}

size_t journal_recovered(journal *j, const journal_entry **entries) {
  *entries = j->recovered;
  return j->nrecovered;
}

int journal_keep_recovered(journal *j, uint64_t id) {
  journal_entry *e = find_recovered(j->recovered, j->nrecovered, id);
  if (!e)
    return -1;
  if (!j->keep && !(j->keep = calloc(j->nrecovered, sizeof *j->keep)))
    return -1;
  size_t i = (size_t)(e - j->recovered);
  if (!j->keep[i])
    e->resumes++;
  j->keep[i] = true;
  return 0;
}

int journal_forget_recovered(journal *j) {
  int rc = journal_rewrite(j, true);
  for (size_t i = 0; i < j->nrecovered; i++)
    entry_clear(&j->recovered[i]);
  j->nrecovered = 0;
  free(j->keep);
  j->keep = NULL;
  return rc;
}

uint64_t journal_next_id(journal *j) { return j->next_id++; }

int journal_begin(journal *j, const journal_entry *e) {
  long long now = clock_wall_ms();
  if (e->id >= j->next_id)
    j->next_id = e->id + 1;
  return journal_append(j, entry_json(e, j->boot_id, now));
}

int journal_mark_resume(journal *j, uint64_t id, const char *const *fields,
                        size_t nfields) {
  json_t *o = json_pack("{s:s, s:I}", "op", "resume", "id", (json_int_t)id);
  if (o)
    json_object_set_new(o, "fields", fields_json(fields, nfields));
  return journal_append(j, o);
}

int journal_mark_reboot(journal *j, uint64_t id) {
  return journal_append(
      j, json_pack("{s:s, s:I}", "op", "reboot", "id", (json_int_t)id));
}

int journal_end(journal *j, uint64_t id) {
  return journal_append(
      j, json_pack("{s:s, s:I}", "op", "end", "id", (json_int_t)id));
}
