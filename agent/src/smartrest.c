#include "smartrest.h"

#include "log.h"

#include <c8y/plugin.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- growable buffer ---------------------------------------------------- */

void smartrest_buf_init(smartrest_buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void smartrest_buf_free(smartrest_buf *b) {
  free(b->data);
  smartrest_buf_init(b);
}

void smartrest_buf_reset(smartrest_buf *b) {
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

/* Makes room for `extra` more bytes plus the terminating NUL. */
static int buf_reserve(smartrest_buf *b, size_t extra) {
  if (extra > SIZE_MAX - 1 - b->len) {
    errno = ENOMEM;
    return C8Y_ENOMEM;
  }
  size_t need = b->len + extra + 1;
  if (need <= b->cap)
    return 0;
  /* Doubling keeps appends amortised O(1) on megabyte payloads. */
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *p = realloc(b->data, cap);
  if (!p) {
    errno = ENOMEM;
    return C8Y_ENOMEM;
  }
  b->data = p;
  b->cap = cap;
  return 0;
}

int smartrest_buf_append(smartrest_buf *b, const char *s, size_t n) {
  if (buf_reserve(b, n) < 0)
    return C8Y_ENOMEM;
  if (n)
    memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

/* Gives an untouched buffer storage so it reads as "" rather than NULL. */
static int buf_materialise(smartrest_buf *b) {
  if (b->data)
    return 0;
  if (buf_reserve(b, 0) < 0)
    return C8Y_ENOMEM;
  b->data[0] = '\0';
  return 0;
}

static int buf_putc(smartrest_buf *b, char c) {
  if (b->len + 1 >= b->cap && buf_reserve(b, 1) < 0)
    return C8Y_ENOMEM;
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
  return 0;
}

/* ---- encoder ------------------------------------------------------------- */

/* Control characters confuse the platform's parser and log views; TAB, LF and
 * CR are kept because they are legitimate inside quoted free text. */
static int is_dropped(unsigned char c) {
  return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f;
}

static int is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Decides quoting on the text as it will be sent, i.e. after dropping control
 * characters, so " \x01" and "\x01 " are judged by their visible spaces. */
static int needs_quotes(const char *f) {
  const unsigned char *p = (const unsigned char *)f;
  int first = 1;
  unsigned char last = 0;
  for (; *p; p++) {
    if (is_dropped(*p))
      continue;
    if (*p == '"' || *p == ',' || *p == '\r' || *p == '\n' || *p == '\t')
      return 1;
    if (first && is_ws(*p))
      return 1;
    first = 0;
    last = *p;
  }
  return last && is_ws(last);
}

static int encode_into(smartrest_buf *b, const char *field) {
  if (!field)
    return 0;
  const unsigned char *p = (const unsigned char *)field;
  if (!needs_quotes(field)) {
    const unsigned char *run = p;
    for (; *p; p++) {
      if (!is_dropped(*p))
        continue;
      if (smartrest_buf_append(b, (const char *)run, (size_t)(p - run)) < 0)
        return C8Y_ENOMEM;
      run = p + 1;
    }
    return smartrest_buf_append(b, (const char *)run, (size_t)(p - run));
  }
  if (buf_putc(b, '"') < 0)
    return C8Y_ENOMEM;
  /* Downstream parsers (ours included) read \" as an escaped quote, so an odd
   * run of backslashes right before a quote or the closing quote would eat
   * it. One backslash is added there: the value changes slightly, but the
   * rest of the line keeps its framing. */
  size_t backslashes = 0;
  for (; *p; p++) {
    if (is_dropped(*p))
      continue;
    if (*p == '"') {
      if ((backslashes & 1) && buf_putc(b, '\\') < 0)
        return C8Y_ENOMEM;
      if (smartrest_buf_append(b, "\"\"", 2) < 0)
        return C8Y_ENOMEM;
      backslashes = 0;
      continue;
    }
    backslashes = *p == '\\' ? backslashes + 1 : 0;
    if (buf_putc(b, (char)*p) < 0)
      return C8Y_ENOMEM;
  }
  if ((backslashes & 1) && buf_putc(b, '\\') < 0)
    return C8Y_ENOMEM;
  return buf_putc(b, '"');
}

int smartrest_append_field(smartrest_buf *b, const char *field) {
  if (b->len > 0 && b->data[b->len - 1] != '\n' && buf_putc(b, ',') < 0)
    return C8Y_ENOMEM;
  /* Keep the buffer a valid C string even when the field is empty. */
  if (buf_materialise(b) < 0)
    return C8Y_ENOMEM;
  return encode_into(b, field);
}

static int is_empty_after_sanitising(const char *f) {
  if (!f)
    return 1;
  for (const unsigned char *p = (const unsigned char *)f; *p; p++)
    if (!is_dropped(*p))
      return 0;
  return 1;
}

int smartrest_encode_line(smartrest_buf *b, const char *const *fields,
                          size_t n) {
  size_t old = b->len;
  /* A line holding one empty field would be an empty line, which decoders
   * skip; "" keeps the record. */
  if (n == 1 && is_empty_after_sanitising(fields[0])) {
    if (smartrest_append_field(b, NULL) < 0 ||
        smartrest_buf_append(b, "\"\"", 2) < 0)
      goto fail;
    return 0;
  }
  /* Commas are written explicitly after the first field: the
   * "empty buffer" rule of smartrest_append_field would lose leading empty
   * fields. */
  for (size_t i = 0; i < n; i++) {
    int rc = i == 0 ? smartrest_append_field(b, fields[i])
                    : (buf_putc(b, ',') < 0 ? C8Y_ENOMEM
                                            : encode_into(b, fields[i]));
    if (rc < 0)
      goto fail;
  }
  return 0;
fail:
  b->len = old;
  if (b->data)
    b->data[old] = '\0';
  return C8Y_ENOMEM;
}

char *smartrest_encode_field(const char *field) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  if (buf_materialise(&b) < 0 || encode_into(&b, field) < 0) {
    smartrest_buf_free(&b);
    return NULL;
  }
  return b.data;
}

/* ---- decoder ------------------------------------------------------------- */

static const char ERR_UNTERMINATED[] = "unterminated quoted field";
static const char ERR_GARBAGE[] = "unexpected character after closing quote";
static const char ERR_NUL[] = "NUL byte in record";

typedef struct decoder {
  const char *p;
  size_t len;
  size_t i;
  smartrest_buf
      field; /* current field, reused for every field of the payload */
  size_t fields_cap;
} decoder;

static void record_free(smartrest_record *r) {
  for (size_t i = 0; i < r->nfields; i++)
    free(r->fields[i]);
  free(r->fields);
  r->fields = NULL;
  r->nfields = 0;
}

void smartrest_records_free(smartrest_records *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->count; i++)
    record_free(&r->items[i]);
  free(r->items);
  r->items = NULL;
  r->count = 0;
}

static int push_field(decoder *d, smartrest_record *r) {
  if (r->nfields == d->fields_cap) {
    size_t cap = d->fields_cap ? d->fields_cap * 2 : 8;
    char **f = realloc(r->fields, cap * sizeof *f);
    if (!f)
      return C8Y_ENOMEM;
    r->fields = f;
    d->fields_cap = cap;
  }
  char *s = malloc(d->field.len + 1);
  if (!s)
    return C8Y_ENOMEM;
  memcpy(s, d->field.data ? d->field.data : "", d->field.len);
  s[d->field.len] = '\0';
  r->fields[r->nfields++] = s;
  return 0;
}

/* CR counts as part of the line break only right before LF or at the very
 * end, so a lone CR inside a value survives. */
static int at_eol(const decoder *d, size_t i) {
  if (i >= d->len || d->p[i] == '\n')
    return 1;
  return d->p[i] == '\r' && (i + 1 >= d->len || d->p[i + 1] == '\n');
}

/* Steps over the line break at d->i (if any). */
static void skip_eol(decoder *d) {
  if (d->i < d->len && d->p[d->i] == '\r')
    d->i++;
  if (d->i < d->len && d->p[d->i] == '\n')
    d->i++;
}

static void set_error(smartrest_record *r, const char *why) {
  if (!r->error)
    r->error = why;
}

/* Reads the quoted field whose opening quote is at d->i. Returns 1 when the
 * closing quote was found, 0 when the payload ended first, C8Y_ENOMEM. */
static int read_quoted(decoder *d, smartrest_record *r) {
  const char *p = d->p;
  size_t i = d->i + 1;
  while (i < d->len) {
    char c = p[i];
    if (c == '\\' && i + 1 < d->len) {
      /* The platform escapes quotes with a backslash downstream; any other
       * pair (\n, \\) is kept verbatim, and consumed as a pair so that \\"
       * still ends the field. */
      int r1 = p[i + 1] == '"' ? buf_putc(&d->field, '"')
                               : smartrest_buf_append(&d->field, p + i, 2);
      if (r1 < 0)
        return C8Y_ENOMEM;
      if (p[i + 1] == '\0')
        set_error(r, ERR_NUL);
      i += 2;
      continue;
    }
    if (c == '"') {
      if (i + 1 < d->len && p[i + 1] == '"') {
        if (buf_putc(&d->field, '"') < 0)
          return C8Y_ENOMEM;
        i += 2;
        continue;
      }
      d->i = i + 1;
      return 1;
    }
    /* Copy the plain run in one go: keeps long values cheap. */
    size_t j = i;
    while (j < d->len && p[j] != '"' && p[j] != '\\' && p[j] != '\0')
      j++;
    if (j == i) { /* NUL, or a backslash that is the payload's last byte */
      if (p[i] == '\0')
        set_error(r, ERR_NUL);
      j = i + 1;
    }
    if (smartrest_buf_append(&d->field, p + i, j - i) < 0)
      return C8Y_ENOMEM;
    i = j;
  }
  d->i = d->len;
  return 0;
}

/* Reads an unquoted field up to ',' or the end of the line, trimmed. */
static int read_unquoted(decoder *d, smartrest_record *r) {
  const char *p = d->p;
  size_t i = d->i;
  while (i < d->len && p[i] != ',' && !at_eol(d, i)) {
    if (p[i] == '\0')
      set_error(r, ERR_NUL);
    i++;
  }
  size_t end = i;
  while (end > d->i && (p[end - 1] == ' ' || p[end - 1] == '\t'))
    end--;
  if (smartrest_buf_append(&d->field, p + d->i, end - d->i) < 0)
    return C8Y_ENOMEM;
  d->i = i;
  return 0;
}

/* Parses one record starting at d->i and leaves d->i after its line break.
 * Fields after the first error are not stored, but parsing goes on so the
 * record ends where a well-formed one would. */
static int read_record(decoder *d, smartrest_record *r) {
  d->fields_cap = 0;
  for (;;) {
    while (d->i < d->len && (d->p[d->i] == ' ' || d->p[d->i] == '\t'))
      d->i++;
    smartrest_buf_reset(&d->field);
    int ok = 1;
    if (d->i < d->len && d->p[d->i] == '"') {
      size_t quote_at = d->i;
      int rc = read_quoted(d, r);
      if (rc < 0)
        return C8Y_ENOMEM;
      if (rc == 0) {
        /* A quote that never closes spoils its own line only: valid
         * records after it are still decoded (quoted fields may hold line
         * breaks, but not an unclosed one). */
        set_error(r, ERR_UNTERMINATED);
        const char *nl = memchr(d->p + quote_at, '\n', d->len - quote_at);
        d->i = nl ? (size_t)(nl - d->p) + 1 : d->len;
        return 0;
      }
      while (d->i < d->len && (d->p[d->i] == ' ' || d->p[d->i] == '\t'))
        d->i++;
      if (d->i < d->len && d->p[d->i] != ',' && !at_eol(d, d->i)) {
        set_error(r, ERR_GARBAGE);
        ok = 0;
        /* Resynchronise as if the rest of the field were unquoted text. */
        if (read_unquoted(d, r) < 0)
          return C8Y_ENOMEM;
      }
    } else if (read_unquoted(d, r) < 0) {
      return C8Y_ENOMEM;
    }
    if (ok && !r->error && push_field(d, r) < 0)
      return C8Y_ENOMEM;
    if (d->i < d->len && d->p[d->i] == ',') {
      d->i++;
      continue;
    }
    skip_eol(d);
    return 0;
  }
}

/* A line of only blanks carries no message ID: skip it like an empty one. */
static int skip_blank_line(decoder *d) {
  size_t j = d->i;
  while (j < d->len && (d->p[j] == ' ' || d->p[j] == '\t' || d->p[j] == '\r'))
    j++;
  if (j < d->len && d->p[j] != '\n')
    return 0;
  d->i = j < d->len ? j + 1 : j;
  return 1;
}

int smartrest_decode(const char *payload, size_t len, smartrest_records *out) {
  out->count = 0;
  out->items = NULL;
  if (!payload && len) {
    errno = EINVAL;
    return C8Y_EINVAL;
  }
  decoder d = {.p = payload, .len = len, .i = 0};
  smartrest_buf_init(&d.field);
  size_t cap = 0;
  while (d.i < d.len) {
    if (skip_blank_line(&d))
      continue;
    if (out->count == cap) {
      size_t ncap = cap ? cap * 2 : 4;
      smartrest_record *items = realloc(out->items, ncap * sizeof *items);
      if (!items)
        goto enomem;
      out->items = items;
      cap = ncap;
    }
    smartrest_record *r = &out->items[out->count++];
    memset(r, 0, sizeof *r);
    r->line = out->count;
    if (read_record(&d, r) < 0)
      goto enomem;
  }
  smartrest_buf_free(&d.field);
  return 0;
enomem:
  smartrest_buf_free(&d.field);
  smartrest_records_free(out);
  errno = ENOMEM;
  return C8Y_ENOMEM;
}

/* ---- time ---------------------------------------------------------------- */

/* Proleptic Gregorian date of day `z` since 1970-01-01 (H. Hinnant's
 * days_from_civil inverse), without time_t: the range must not depend on its
 * width (32 bits on Debian 12 armhf, where gmtime_r stops in 2038). */
static void civil_from_days(long long z, long long *y, int *m, int *d) {
  z += 719468;
  long long era = (z >= 0 ? z : z - 146096) / 146097;
  long long doe = z - era * 146097; /* 0..146096 */
  long long yoe =
      (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* 0..399 */
  long long doy =
      doe - (365 * yoe + yoe / 4 - yoe / 100); /* 0..365, from Mar 1 */
  long long mp = (5 * doy + 2) / 153;          /* 0..11, from March */
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

void smartrest_format_time(long long unix_ms, char *out, size_t outlen) {
  if (!out || outlen == 0)
    return;
  /* floor division, so -1 ms is 23:59:59.999 of the day before */
  long long ms = unix_ms % 1000, secs = unix_ms / 1000;
  if (ms < 0) {
    ms += 1000;
    secs -= 1;
  }
  long long sod = secs % 86400, days = secs / 86400;
  if (sod < 0) {
    sod += 86400;
    days -= 1;
  }
  long long year;
  int mon, mday;
  civil_from_days(days, &year, &mon, &mday);
  if (year > 9999 || year < 0) {
    /* An empty time field makes the platform use its own clock. */
    log_warning("smartrest: timestamp %lld ms is out of range, sending none",
                unix_ms);
    out[0] = '\0';
    return;
  }
  snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (int)year, mon,
           mday, (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60),
           (int)ms);
}

void smartrest_format_value(double v, char *out, size_t outlen) {
  snprintf(out, outlen, "%.15g", v);
}

int smartrest_encode_measurements(const char *const *fields, size_t nsamples,
                                  const char *type, const char *when,
                                  size_t max_line,
                                  int (*emit)(void *ctx, const char *line),
                                  void *ctx) {
  if (nsamples == 0)
    return 0;
  smartrest_buf line;
  smartrest_buf_init(&line);
  int rc = 0;
  if (nsamples == 1) {
    const char *f[] = {"200", fields[0], fields[1], fields[2], fields[3], when};
    if (smartrest_encode_line(&line, f, 6) != 0)
      rc = C8Y_ENOMEM;
    else
      rc = line.len > max_line ? C8Y_ETOOBIG : emit(ctx, line.data);
    smartrest_buf_free(&line);
    return rc;
  }
  size_t i = 0;
  while (i < nsamples && rc == 0) {
    smartrest_buf_reset(&line);
    const char *head[] = {"201", type, when};
    if (smartrest_encode_line(&line, head, 3) != 0) {
      rc = C8Y_ENOMEM;
      break;
    }
    size_t in_line = 0;
    while (i < nsamples) {
      size_t mark = line.len;
      for (size_t k = 0; k < 4 && rc == 0; k++)
        if (smartrest_append_field(&line, fields[i * 4 + k]) != 0)
          rc = C8Y_ENOMEM;
      if (rc != 0)
        break;
      if (line.len > max_line) {
        /* This sample starts the next line. */
        line.len = mark;
        line.data[mark] = 0;
        if (in_line == 0)
          rc = C8Y_ETOOBIG;
        break;
      }
      in_line++;
      i++;
    }
    if (rc == 0)
      rc = emit(ctx, line.data);
  }
  smartrest_buf_free(&line);
  return rc;
}
