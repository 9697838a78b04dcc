/* smartrest: SmartREST 2.0 CSV codec (see shared c8y-protocol.md section 4).
 *
 * Upstream: fields are quoted when they contain '"', ',', CR, LF, TAB or
 * leading/trailing whitespace; embedded quotes are doubled (""). Control
 * characters other than TAB/LF/CR are dropped.
 * Downstream: a payload holds several records separated by LF outside quotes
 * (CRLF accepted, empty lines skipped); inside quotes both \" and "" mean a
 * quote; unquoted fields are trimmed of spaces/tabs; empty fields are kept. */
#ifndef C8Y_SMARTREST_H
#define C8Y_SMARTREST_H

#include <stddef.h>

/* Errors are the SDK's C8Y_* codes (c8y/plugin.h): C8Y_ENOMEM when memory
 * runs out, C8Y_EINVAL for a bad argument, C8Y_ETOOBIG for a sample that
 * cannot fit in one line. */

/* A growable byte buffer, always NUL-terminated when data != NULL. */
typedef struct smartrest_buf {
  char *data;
  size_t len;
  size_t cap;
} smartrest_buf;

void smartrest_buf_init(smartrest_buf *b);
void smartrest_buf_free(smartrest_buf *b);
void smartrest_buf_reset(smartrest_buf *b); /* len = 0, keeps memory */
int smartrest_buf_append(smartrest_buf *b, const char *s,
                         size_t n); /* 0 or C8Y_ENOMEM */

/* Appends one field, preceded by ',' unless the buffer is empty or ends in
 * '\n'. Returns 0 or C8Y_ENOMEM. */
int smartrest_append_field(smartrest_buf *b, const char *field);
/* Appends fields[0..n) as one line (no trailing newline). NULL fields are
 * written empty. Returns 0 or C8Y_ENOMEM (b is then as before). */
int smartrest_encode_line(smartrest_buf *b, const char *const *fields,
                          size_t n);
/* Encodes one field into a fresh malloc'ed string (quoted if needed). */
char *smartrest_encode_field(const char *field);

typedef struct smartrest_record {
  size_t nfields;
  char **fields;     /* unescaped, NUL-terminated, owned by the record */
  const char *error; /* NULL if the record parsed; else a static reason */
  size_t line;       /* 1-based record number inside the payload */
} smartrest_record;

typedef struct smartrest_records {
  size_t count;
  smartrest_record *items;
} smartrest_records;

/* Splits a downstream payload into records. A malformed record (unterminated
 * quote, garbage after a closing quote) gets `error` set and parsing goes on
 * with the next record. Returns 0, C8Y_EINVAL (NULL payload with a length)
 * or C8Y_ENOMEM; out is empty on error. */
int smartrest_decode(const char *payload, size_t len, smartrest_records *out);
void smartrest_records_free(smartrest_records *r);

/* A measurement value as sent: 15 significant digits, no exponent for
 * ordinary magnitudes ("%.15g"). */
void smartrest_format_value(double v, char *out, size_t outlen);

/* Encodes measurement samples: one sample gives "200,frag,series,value,unit,
 * when"; several give "201,type,when,(frag,series,value,unit)..." lines, each
 * at most max_line bytes. `fields` holds 4 strings per sample (fragment,
 * series, value text, unit). emit() is called once per line and may return
 * non-zero to stop (that value is returned as is). Returns 0, C8Y_ENOMEM, or
 * C8Y_ETOOBIG when one sample alone does not fit in max_line. */
int smartrest_encode_measurements(const char *const *fields, size_t nsamples,
                                  const char *type, const char *when,
                                  size_t max_line,
                                  int (*emit)(void *ctx, const char *line),
                                  void *ctx);

/* Formats unix milliseconds as 2026-11-24T23:05:28.123Z into out (>= 32). */
void smartrest_format_time(long long unix_ms, char *out, size_t outlen);

#endif
