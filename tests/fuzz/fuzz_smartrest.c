/* libFuzzer target for the SmartREST codec: any payload must decode without
 * memory errors, and every record that decoded cleanly must survive
 * decode(encode(record)) unchanged, up to what the encoder documents it
 * changes (control characters dropped; a backslash added before a quote that
 * an odd backslash run would otherwise escape). */
#include "smartrest.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int dropped(unsigned char c) {
  return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f;
}

static int ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The field as the encoder sends it, minus quoting: control chars dropped. */
static char *sanitised(const char *f) {
  size_t n = strlen(f);
  char *s = malloc(n + 1);
  if (!s)
    abort();
  size_t j = 0;
  for (size_t i = 0; i < n; i++)
    if (!dropped((unsigned char)f[i]))
      s[j++] = f[i];
  s[j] = '\0';
  return s;
}

static int quoted_by_encoder(const char *s) {
  size_t n = strlen(s);
  if (n && (ws((unsigned char)s[0]) || ws((unsigned char)s[n - 1])))
    return 1;
  return strpbrk(s, "\",\r\n\t") != NULL;
}

/* A quoted value cannot carry an odd backslash run right before a quote or
 * at its end: \" reads as an escaped quote. The encoder then adds one
 * backslash, so the oracle does the same. */
static char *expected(const char *field) {
  char *s = sanitised(field);
  if (!quoted_by_encoder(s))
    return s;
  size_t n = strlen(s);
  char *e = malloc(2 * n + 2);
  if (!e)
    abort();
  size_t j = 0, run = 0;
  for (size_t i = 0; i <= n; i++) {
    char c = s[i];
    if ((c == '"' || c == '\0') && (run & 1))
      e[j++] = '\\';
    run = c == '\\' ? run + 1 : 0;
    e[j++] = c;
  }
  free(s);
  return e;
}

static void fail(const char *what, const smartrest_record *rec, size_t idx,
                 const char *line) {
  fprintf(stderr, "fuzz_smartrest: %s (record %zu, field %zu)\nline: %s\n",
          what, rec->line, idx, line ? line : "(none)");
  abort();
}

static void check_record(const smartrest_record *rec) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  if (smartrest_encode_line(&b, (const char *const *)rec->fields,
                            rec->nfields) < 0)
    abort();
  smartrest_records again;
  if (smartrest_decode(b.data ? b.data : "", b.len, &again) < 0)
    abort();
  if (again.count != 1)
    fail("re-encoded record does not decode to exactly one record", rec, 0,
         b.data);
  const smartrest_record *r2 = &again.items[0];
  if (r2->error)
    fail(r2->error, rec, 0, b.data);
  if (r2->nfields != rec->nfields)
    fail("field count changed", rec, r2->nfields, b.data);
  for (size_t i = 0; i < rec->nfields; i++) {
    char *want = expected(rec->fields[i]);
    if (strcmp(want, r2->fields[i]) != 0)
      fail("field changed in the round trip", rec, i, b.data);
    free(want);
  }
  /* Encoding what came back must be stable: a second trip changes nothing. */
  smartrest_buf b2;
  smartrest_buf_init(&b2);
  if (smartrest_encode_line(&b2, (const char *const *)r2->fields, r2->nfields) <
      0)
    abort();
  if (b.len != b2.len || memcmp(b.data, b2.data, b.len) != 0)
    fail("encoding is not idempotent", rec, 0, b2.data);
  smartrest_buf_free(&b2);
  smartrest_records_free(&again);
  smartrest_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  smartrest_records recs;
  if (smartrest_decode((const char *)data, size, &recs) < 0)
    return 0; /* ENOMEM only */
  for (size_t i = 0; i < recs.count; i++) {
    const smartrest_record *rec = &recs.items[i];
    if (rec->line != i + 1)
      fail("record numbers are not consecutive", rec, 0, NULL);
    if (rec->error)
      continue;
    if (rec->nfields == 0)
      fail("clean record without fields", rec, 0, NULL);
    check_record(rec);
  }
  smartrest_records_free(&recs);
  return 0;
}
