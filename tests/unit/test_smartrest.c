/* Unit tests for the SmartREST 2.0 CSV codec (agent/src/smartrest.c). */
#include "smartrest.h"

#include <c8y/plugin.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------- */

static smartrest_records decode_str(const char *s) {
  smartrest_records r;
  g_assert_cmpint(smartrest_decode(s, strlen(s), &r), ==, 0);
  return r;
}

/* Asserts that `rec` parsed cleanly and holds exactly the NULL-terminated
 * list of expected fields. */
static void assert_fields(const smartrest_record *rec, ...) {
  va_list ap;
  va_start(ap, rec);
  g_assert_null(rec->error);
  size_t i = 0;
  for (const char *want = va_arg(ap, const char *); want;
       want = va_arg(ap, const char *), i++) {
    g_assert_cmpuint(i, <, rec->nfields);
    g_assert_cmpstr(rec->fields[i], ==, want);
  }
  va_end(ap);
  g_assert_cmpuint(rec->nfields, ==, i);
}

static char *encode_fields(char *const *fields, size_t n) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  g_assert_cmpint(smartrest_encode_line(&b, (const char *const *)fields, n), ==,
                  0);
  g_assert_nonnull(b.data);
  char *s = g_strdup(b.data);
  smartrest_buf_free(&b);
  return s;
}

static void assert_same_record(const smartrest_record *a,
                               const smartrest_record *b) {
  g_assert_null(a->error);
  g_assert_null(b->error);
  g_assert_cmpuint(a->nfields, ==, b->nfields);
  for (size_t i = 0; i < a->nfields; i++)
    g_assert_cmpstr(a->fields[i], ==, b->fields[i]);
}

/* What the encoder promises to keep: everything but control characters. */
static char *sanitise(const char *s) {
  GString *g = g_string_new(NULL);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (!((*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r') || *p == 0x7f))
      g_string_append_c(g, (char)*p);
  return g_string_free(g, FALSE);
}

/* ---- buffer -------------------------------------------------------------- */

static void test_buf_basic(void) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  g_assert_null(b.data);
  g_assert_cmpuint(b.len, ==, 0);
  g_assert_cmpint(smartrest_buf_append(&b, "abc", 3), ==, 0);
  g_assert_cmpstr(b.data, ==, "abc");
  for (int i = 0; i < 1000; i++)
    g_assert_cmpint(smartrest_buf_append(&b, "0123456789", 10), ==, 0);
  g_assert_cmpuint(b.len, ==, 10003);
  g_assert_cmpuint(strlen(b.data), ==, 10003);
  g_assert_cmpuint(b.cap, >, b.len);
  size_t cap = b.cap;
  smartrest_buf_reset(&b);
  g_assert_cmpuint(b.len, ==, 0);
  g_assert_cmpuint(b.cap, ==, cap);
  g_assert_cmpstr(b.data, ==, "");
  smartrest_buf_free(&b);
  g_assert_null(b.data);
  g_assert_cmpuint(b.cap, ==, 0);
}

/* ---- encoder ------------------------------------------------------------- */

static void check_encode(const char *in, const char *want) {
  char *got = smartrest_encode_field(in);
  g_assert_nonnull(got);
  g_assert_cmpstr(got, ==, want);
  free(got);
}

static void test_encode_quoting(void) {
  check_encode("plain", "plain");
  check_encode("Device connection was lost.", "Device connection was lost.");
  check_encode("type A", "type A"); /* inner space alone needs no quotes */
  check_encode("", "");
  check_encode(NULL, "");
  check_encode("a,b", "\"a,b\"");
  check_encode("say \"hi\"", "\"say \"\"hi\"\"\"");
  check_encode("\"", "\"\"\"\"");
  check_encode("l1\nl2", "\"l1\nl2\"");
  check_encode("cr\r", "\"cr\r\"");
  check_encode("a\tb", "\"a\tb\"");
  check_encode(" lead", "\" lead\"");
  check_encode("trail ", "\"trail \"");
  check_encode(" ", "\" \"");
  /* The two-character sequence \n is ordinary text. */
  check_encode("a\\nb", "a\\nb");
  check_encode("back\\slash", "back\\slash");
  check_encode("ünïcødé €", "ünïcødé €");
}

static void test_encode_control_chars(void) {
  check_encode("a\001b\037c\177", "abc");
  check_encode("\x01\x02", "");
  /* Quoting is judged on what is sent: the space becomes leading. */
  check_encode("\x01 x", "\" x\"");
  check_encode("x \x1b", "\"x \"");
  check_encode("\x01,", "\",\"");
  /* TAB, LF and CR are kept (and force quotes). */
  check_encode("\x01\t\x02", "\"\t\"");
}

static void test_encode_backslash_quote(void) {
  /* An even run of backslashes before a quote survives as is. */
  check_encode("a\\\\\"b", "\"a\\\\\"\"b\"");
  check_encode("x,\\\\", "\"x,\\\\\"");
  /* An odd run would swallow the quote in a \"-aware reader: one backslash
   * is added so the line keeps its framing. */
  check_encode("a\\\"b", "\"a\\\\\"\"b\"");
  check_encode("x,\\", "\"x,\\\\\"");
  /* Unquoted fields keep any backslashes. */
  check_encode("path\\", "path\\");

  smartrest_records r = decode_str("1,\"a\\\\\"\"b\",\"x,\\\\\"");
  g_assert_cmpuint(r.count, ==, 1);
  assert_fields(&r.items[0], "1", "a\\\\\"b", "x,\\\\", NULL);
  smartrest_records_free(&r);
}

static void test_encode_append_field(void) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  g_assert_cmpint(smartrest_append_field(&b, "200"), ==, 0);
  g_assert_cmpstr(b.data, ==, "200");
  g_assert_cmpint(smartrest_append_field(&b, "c8y_Temperature"), ==, 0);
  g_assert_cmpint(smartrest_append_field(&b, NULL), ==, 0);
  g_assert_cmpint(smartrest_append_field(&b, "a,b"), ==, 0);
  g_assert_cmpstr(b.data, ==, "200,c8y_Temperature,,\"a,b\"");
  g_assert_cmpint(smartrest_buf_append(&b, "\n", 1), ==, 0);
  g_assert_cmpint(smartrest_append_field(&b, "500"), ==, 0);
  g_assert_cmpstr(b.data, ==, "200,c8y_Temperature,,\"a,b\"\n500");
  smartrest_buf_free(&b);

  /* An empty first field still leaves a valid (empty) C string. */
  smartrest_buf_init(&b);
  g_assert_cmpint(smartrest_append_field(&b, ""), ==, 0);
  g_assert_nonnull(b.data);
  g_assert_cmpstr(b.data, ==, "");
  g_assert_cmpint(smartrest_append_field(&b, "myType"), ==, 0);
  /* The buffer was empty, so no comma: the caller gets what it asked. */
  g_assert_cmpstr(b.data, ==, "myType");
  smartrest_buf_free(&b);
}

static void test_encode_line(void) {
  const char *f[] = {"100", NULL, "myType"};
  smartrest_buf b;
  smartrest_buf_init(&b);
  g_assert_cmpint(smartrest_encode_line(&b, f, 3), ==, 0);
  g_assert_cmpstr(b.data, ==, "100,,myType");
  g_assert_cmpint(smartrest_buf_append(&b, "\n", 1), ==, 0);
  const char *g[] = {"502", "c8y_Restart", "Could not restart, \"busy\""};
  g_assert_cmpint(smartrest_encode_line(&b, g, 3), ==, 0);
  g_assert_cmpstr(b.data, ==,
                  "100,,myType\n502,c8y_Restart,"
                  "\"Could not restart, \"\"busy\"\"\"");
  smartrest_buf_free(&b);

  /* One empty field would be an empty line, which decoders skip. */
  const char *e[] = {""};
  smartrest_buf_init(&b);
  g_assert_cmpint(smartrest_encode_line(&b, e, 1), ==, 0);
  g_assert_cmpstr(b.data, ==, "\"\"");
  smartrest_records r = decode_str(b.data);
  g_assert_cmpuint(r.count, ==, 1);
  assert_fields(&r.items[0], "", NULL);
  smartrest_records_free(&r);
  smartrest_buf_free(&b);

  const char *two[] = {NULL, ""};
  smartrest_buf_init(&b);
  g_assert_cmpint(smartrest_encode_line(&b, two, 2), ==, 0);
  g_assert_cmpstr(b.data, ==, ",");
  const char *lead[] = {"", "", "x"};
  g_assert_cmpint(smartrest_buf_append(&b, "\n", 1), ==, 0);
  g_assert_cmpint(smartrest_encode_line(&b, lead, 3), ==, 0);
  g_assert_cmpstr(b.data, ==, ",\n,,x");
  smartrest_buf_free(&b);
}

/* ---- decoder ------------------------------------------------------------- */

static void test_decode_basic(void) {
  smartrest_records r = decode_str("510,DeviceSerial");
  g_assert_cmpuint(r.count, ==, 1);
  assert_fields(&r.items[0], "510", "DeviceSerial", NULL);
  g_assert_cmpuint(r.items[0].line, ==, 1);
  smartrest_records_free(&r);
  g_assert_cmpuint(r.count, ==, 0);
  g_assert_null(r.items);

  r = decode_str("");
  g_assert_cmpuint(r.count, ==, 0);
  smartrest_records_free(&r);
  r = decode_str("\n\r\n  \n\t\n");
  g_assert_cmpuint(r.count, ==, 0);
  smartrest_records_free(&r);
}

static void test_decode_multi_record(void) {
  smartrest_records r = decode_str("526,dev,a\n526,dev,b");
  g_assert_cmpuint(r.count, ==, 2);
  assert_fields(&r.items[0], "526", "dev", "a", NULL);
  assert_fields(&r.items[1], "526", "dev", "b", NULL);
  g_assert_cmpuint(r.items[0].line, ==, 1);
  g_assert_cmpuint(r.items[1].line, ==, 2);
  smartrest_records_free(&r);

  /* Trailing LF and empty lines in between add no records. */
  r = decode_str("\n526,dev,a\n\n\n526,dev,b\n");
  g_assert_cmpuint(r.count, ==, 2);
  assert_fields(&r.items[0], "526", "dev", "a", NULL);
  assert_fields(&r.items[1], "526", "dev", "b", NULL);
  smartrest_records_free(&r);
}

static void test_decode_crlf(void) {
  smartrest_records r = decode_str("510,dev\r\n511,dev,\"ls\"\r\n513,dev,x\r");
  g_assert_cmpuint(r.count, ==, 3);
  assert_fields(&r.items[0], "510", "dev", NULL);
  assert_fields(&r.items[1], "511", "dev", "ls", NULL);
  assert_fields(&r.items[2], "513", "dev", "x", NULL);
  smartrest_records_free(&r);

  /* A CR that is not part of a line break is data; inside quotes CRLF is. */
  r = decode_str("1,a\rb,\"c\r\nd\"\r\n");
  g_assert_cmpuint(r.count, ==, 1);
  assert_fields(&r.items[0], "1", "a\rb", "c\r\nd", NULL);
  smartrest_records_free(&r);
}

static void test_decode_empty_fields(void) {
  smartrest_records r = decode_str("a,,b\n100,,myType\n502,c8y_X,\n,\n\"\"");
  g_assert_cmpuint(r.count, ==, 5);
  assert_fields(&r.items[0], "a", "", "b", NULL);
  assert_fields(&r.items[1], "100", "", "myType", NULL);
  assert_fields(&r.items[2], "502", "c8y_X", "", NULL);
  assert_fields(&r.items[3], "", "", NULL);
  assert_fields(&r.items[4], "", NULL);
  smartrest_records_free(&r);
}

static void test_decode_quotes(void) {
  /* Both escapes for a quote; other backslash pairs stay literal. */
  smartrest_records r = decode_str("1,\"a \\\"b\\\" c\",\"a \"\"b\"\" c\","
                                   "\"x\\ny\\\\z\",\"\",\"a,b\",\"\\\\\"");
  g_assert_cmpuint(r.count, ==, 1);
  assert_fields(&r.items[0], "1", "a \"b\" c", "a \"b\" c", "x\\ny\\\\z", "",
                "a,b", "\\\\", NULL);
  smartrest_records_free(&r);

  /* Real LFs inside quotes belong to the value, not the record break. */
  r = decode_str("511,dev,\"line1\nline2\n\\\"q\\\"\"\n510,dev");
  g_assert_cmpuint(r.count, ==, 2);
  assert_fields(&r.items[0], "511", "dev", "line1\nline2\n\"q\"", NULL);
  assert_fields(&r.items[1], "510", "dev", NULL);
  g_assert_cmpuint(r.items[1].line, ==, 2);
  smartrest_records_free(&r);

  /* Blanks around a quoted value are allowed and dropped. */
  r = decode_str("1, \"a b\" ,\t\"c\"\t");
  g_assert_cmpuint(r.count, ==, 1);
  assert_fields(&r.items[0], "1", "a b", "c", NULL);
  smartrest_records_free(&r);

  /* A quote inside an unquoted value is plain text. */
  r = decode_str("41,100,Unknown \"thing\"");
  g_assert_cmpuint(r.count, ==, 1);
  assert_fields(&r.items[0], "41", "100", "Unknown \"thing\"", NULL);
  smartrest_records_free(&r);
}

static void test_decode_trim(void) {
  smartrest_records r = decode_str("  510 ,\tdev  x\t, \t\n 511, a ");
  g_assert_cmpuint(r.count, ==, 2);
  assert_fields(&r.items[0], "510", "dev  x", "", NULL);
  assert_fields(&r.items[1], "511", "a", NULL);
  smartrest_records_free(&r);
}

static void test_decode_malformed_middle(void) {
  smartrest_records r =
      decode_str("526,dev,a\n526,\"dev\"x,b\n526,dev,c\n"
                 "511,\"ok\" junk,\"multi\nline\"\n510,dev\n");
  g_assert_cmpuint(r.count, ==, 5);
  assert_fields(&r.items[0], "526", "dev", "a", NULL);
  g_assert_cmpstr(r.items[1].error, ==,
                  "unexpected character after closing quote");
  g_assert_cmpuint(r.items[1].line, ==, 2);
  /* Fields read before the error are kept for diagnostics. */
  g_assert_cmpuint(r.items[1].nfields, ==, 1);
  g_assert_cmpstr(r.items[1].fields[0], ==, "526");
  assert_fields(&r.items[2], "526", "dev", "c", NULL);
  g_assert_cmpuint(r.items[2].line, ==, 3);
  /* The quoted LF after the bad field still belongs to record 4. */
  g_assert_nonnull(r.items[3].error);
  g_assert_cmpuint(r.items[3].line, ==, 4);
  g_assert_cmpuint(r.items[3].nfields, ==, 1);
  assert_fields(&r.items[4], "510", "dev", NULL);
  g_assert_cmpuint(r.items[4].line, ==, 5);
  smartrest_records_free(&r);

  r = decode_str("511,\"ok\" junk,\"multi\nline\"\n510,dev\n");
  g_assert_cmpuint(r.count, ==, 2);
  g_assert_nonnull(r.items[0].error);
  assert_fields(&r.items[1], "510", "dev", NULL);
  g_assert_cmpuint(r.items[1].line, ==, 2);
  smartrest_records_free(&r);
}

static void test_decode_unterminated(void) {
  /* The unclosed quote spoils its own line; the records after it survive. */
  smartrest_records r =
      decode_str("510,dev\n511,dev,\"never closed\n510,dev\n512,dev,x\n");
  g_assert_cmpuint(r.count, ==, 4);
  assert_fields(&r.items[0], "510", "dev", NULL);
  g_assert_cmpstr(r.items[1].error, ==, "unterminated quoted field");
  g_assert_cmpuint(r.items[1].line, ==, 2);
  g_assert_cmpuint(r.items[1].nfields, ==, 2);
  assert_fields(&r.items[2], "510", "dev", NULL);
  assert_fields(&r.items[3], "512", "dev", "x", NULL);
  smartrest_records_free(&r);

  /* A trailing backslash escapes the would-be closing quote. */
  r = decode_str("1,\"abc\\\"");
  g_assert_cmpuint(r.count, ==, 1);
  g_assert_nonnull(r.items[0].error);
  smartrest_records_free(&r);
  r = decode_str("1,\"abc\\");
  g_assert_cmpuint(r.count, ==, 1);
  g_assert_nonnull(r.items[0].error);
  smartrest_records_free(&r);
}

static void test_decode_nul(void) {
  static const char in[] = "510,de\0v\n510,ok";
  smartrest_records r;
  g_assert_cmpint(smartrest_decode(in, sizeof in - 1, &r), ==, 0);
  g_assert_cmpuint(r.count, ==, 2);
  g_assert_cmpstr(r.items[0].error, ==, "NUL byte in record");
  assert_fields(&r.items[1], "510", "ok", NULL);
  smartrest_records_free(&r);

  /* Only `len` bytes are read: a record may stop right before the NUL. */
  g_assert_cmpint(smartrest_decode(in, 6, &r), ==, 0);
  g_assert_cmpuint(r.count, ==, 1);
  assert_fields(&r.items[0], "510", "de", NULL);
  smartrest_records_free(&r);
}

/* CPU time of this thread, in microseconds: what the decoder itself spent,
 * whatever else the machine runs (a quadratic scan of 1 MiB costs minutes
 * of it, a linear one milliseconds, so a bound of seconds only catches the
 * first). */
static gint64 thread_cpu_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (gint64)ts.tv_sec * G_USEC_PER_SEC + ts.tv_nsec / 1000;
}

/* Builds ~1 MiB of records and checks that decoding is linear: the whole
 * thing must take well under the time a quadratic scan would need. */
static void test_decode_large(void) {
  GString *g = g_string_new(NULL);
  size_t n = 0;
  while (g->len < 1024 * 1024) {
    g_string_append_printf(g, "511,dev%zu,\"echo \\\"%zu\\\"\nls, -l\"\r\n", n,
                           n);
    g_string_append_printf(g, "526,dev%zu,a,,b\n", n);
    n++;
  }
  gint64 t0 = thread_cpu_us();
  smartrest_records r;
  g_assert_cmpint(smartrest_decode(g->str, g->len, &r), ==, 0);
  gint64 dt = thread_cpu_us() - t0;
  g_test_message("decoded %zu records (%zu bytes) in %" G_GINT64_FORMAT
                 " us of CPU",
                 r.count, g->len, dt);
  g_assert_cmpuint(r.count, ==, 2 * n);
  for (size_t i = 0; i < n; i++) {
    char dev[32], cmd[64];
    g_snprintf(dev, sizeof dev, "dev%zu", i);
    g_snprintf(cmd, sizeof cmd, "echo \"%zu\"\nls, -l", i);
    assert_fields(&r.items[2 * i], "511", dev, cmd, NULL);
    assert_fields(&r.items[2 * i + 1], "526", dev, "a", "", "b", NULL);
    g_assert_cmpuint(r.items[2 * i + 1].line, ==, 2 * i + 2);
  }
  smartrest_records_free(&r);
  g_assert_cmpint(dt, <, 5 * G_USEC_PER_SEC);
  g_string_free(g, TRUE);
}

/* Shapes that punish naive parsers: one huge field, a huge number of fields,
 * escape-heavy values and a megabyte of blank lines. */
static void test_decode_pathological(void) {
  const size_t big = 1024 * 1024;
  char *buf = g_malloc(big + 16);
  smartrest_records r;
  gint64 t0 = thread_cpu_us();

  memset(buf, ',', big); /* big + 1 empty fields */
  g_assert_cmpint(smartrest_decode(buf, big, &r), ==, 0);
  g_assert_cmpuint(r.count, ==, 1);
  g_assert_cmpuint(r.items[0].nfields, ==, big + 1);
  smartrest_records_free(&r);

  buf[0] = '"'; /* "\"\"\"..." : a quoted field of escaped quotes */
  for (size_t i = 1; i + 1 < big; i += 2)
    buf[i] = '\\', buf[i + 1] = '"';
  buf[big - 1] = '"';
  g_assert_cmpint(smartrest_decode(buf, big, &r), ==, 0);
  g_assert_cmpuint(r.count, ==, 1);
  g_assert_null(r.items[0].error);
  g_assert_cmpuint(strlen(r.items[0].fields[0]), ==, (big - 2) / 2);
  smartrest_records_free(&r);

  memset(buf, '\n', big);
  g_assert_cmpint(smartrest_decode(buf, big, &r), ==, 0);
  g_assert_cmpuint(r.count, ==, 0);
  smartrest_records_free(&r);

  buf[0] = '"'; /* unterminated: swallows everything, once */
  memset(buf + 1, 'x', big - 1);
  g_assert_cmpint(smartrest_decode(buf, big, &r), ==, 0);
  g_assert_cmpuint(r.count, ==, 1);
  g_assert_nonnull(r.items[0].error);
  smartrest_records_free(&r);

  gint64 dt = thread_cpu_us() - t0;
  g_test_message("pathological payloads took %" G_GINT64_FORMAT " us of CPU",
                 dt);
  g_assert_cmpint(dt, <, 10 * G_USEC_PER_SEC);
  g_free(buf);
}

/* ---- round trips --------------------------------------------------------- */

static void test_roundtrip_strings(void) {
  static const char *const cases[] = {
      "",     " ",        "a",      " a",          "a ",      "\t",
      "a,b",  "\"",       "\"\"",   "a\nb",        "a\r\nb",  "\r",
      "x\\",  "x\\\\",    "\\\\\"", "\\n",         "ünïcødé", "a\001b",
      "\x7f", "  \x01 ",  ",,,",    "\"a\",\"b\"", "\n\n",    "trail\t",
      "\\",   "\"\\\\\"", "a\\b,c", "x\\\\,\"y\"", "$FW",     "  ",
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *f[] = {"999", (char *)cases[i], "end"};
    char *line = encode_fields(f, 3);
    smartrest_records r = decode_str(line);
    g_assert_cmpuint(r.count, ==, 1);
    char *want = sanitise(cases[i]);
    assert_fields(&r.items[0], "999", want, "end", NULL);
    g_free(want);
    smartrest_records_free(&r);
    g_free(line);
  }
}

/* ---- official examples --------------------------------------------------- */

typedef struct example {
  char *id, *dir, *line;
  size_t lineno;
} example;

/* Reads `templateId|up/down|line|source`; the line may itself hold '|', so
 * the source is what follows the last one. */
static GPtrArray *load_examples(void) {
  const char *path = g_getenv("C8Y_EXAMPLES");
  if (!path || !*path)
    g_error("C8Y_EXAMPLES is not set (ctest sets it to "
            "tests/unit/data/c8y-examples.txt)");
  char *text = NULL;
  GError *err = NULL;
  if (!g_file_get_contents(path, &text, NULL, &err))
    g_error("%s: cannot read examples: %s", path, err->message);
  GPtrArray *out = g_ptr_array_new();
  char **lines = g_strsplit(text, "\n", -1);
  for (size_t i = 0; lines[i]; i++) {
    char *l = lines[i];
    size_t n = strlen(l);
    if (n && l[n - 1] == '\r')
      l[--n] = '\0';
    if (!n || l[0] == '#')
      continue;
    char *p1 = strchr(l, '|');
    char *p2 = p1 ? strchr(p1 + 1, '|') : NULL;
    char *p3 = strrchr(l, '|');
    if (!p2 || p3 == p2)
      g_error("%s:%zu: expected id|dir|line|source", path, i + 1);
    example *e = g_new0(example, 1);
    e->id = g_strndup(l, (size_t)(p1 - l));
    e->dir = g_strndup(p1 + 1, (size_t)(p2 - p1 - 1));
    e->line = g_strndup(p2 + 1, (size_t)(p3 - p2 - 1));
    e->lineno = i + 1;
    if (strcmp(e->dir, "up") && strcmp(e->dir, "down"))
      g_error("%s:%zu: direction '%s' is neither up nor down", path, i + 1,
              e->dir);
    g_ptr_array_add(out, e);
  }
  g_strfreev(lines);
  g_free(text);
  g_assert_cmpuint(out->len, >, 50);
  return out;
}

static void free_examples(GPtrArray *a) {
  for (size_t i = 0; i < a->len; i++) {
    example *e = a->pdata[i];
    g_free(e->id);
    g_free(e->dir);
    g_free(e->line);
    g_free(e);
  }
  g_ptr_array_free(a, TRUE);
}

typedef struct field_check {
  int idx;
  const char *value;
} field_check;

/* Explicit expectations for down lines; `contains` picks one line of an id
 * that occurs more than once. Each entry must match exactly one line. */
typedef struct down_expect {
  const char *id, *contains;
  size_t nfields;
  field_check checks[4];
} down_expect;

static const down_expect down_expects[] = {
    {"510", NULL, 2, {{1, "DeviceSerial"}, {-1, NULL}}},
    {"511",
     NULL,
     3,
     {{1, "myDeviceSerial"},
      /* The file has a two-character \n: literal text, not a line break. */
      {2, "execute this\\nand this\\nand \"this\""},
      {-1, NULL}}},
    {"513", NULL, 3, {{2, "val1=1\\nval2=2"}, {-1, NULL}}},
    {"522",
     "logfileA",
     7,
     {{2, "logfileA"},
      {3, "2013-06-22T17:03:14.000+02:00"},
      {6, "1000"},
      {-1, NULL}}},
    {"522",
     "syslog",
     7,
     {{3, "2021-09-21T11:40:27+0200"}, {5, "ERROR"}, {-1, NULL}}},
    {"527",
     "firmwareName",
     22,
     {{2, "$FW"}, {8, "$SW"}, {17, "$CONF"}, {21, "type2"}}},
    {"527",
     "device_fw",
     22,
     {{6, "false"}, {7, ""}, {8, "$SW"}, {21, "agent_conf"}}},
    {"529",
     NULL,
     12,
     {{4, "type A"},
      {5, "http://example.com/software_a"},
      {9, "type B"},
      {11, "delete"}}},
    {"532",
     NULL,
     8,
     {{2, "c8y_RelayStatus.left"}, {4, "false"}, {7, "true"}, {-1, NULL}}},
    {"124", NULL, 2, {{1, "12345"}, {-1, NULL}}},
    {"40",
     NULL,
     3,
     {{1, "999"}, {2, "No static template for this message id"}, {-1, NULL}}},
    {"526", NULL, 3, {{1, "10000000b1bc91d3"}, {2, "t3k_PlcList"}, {-1, NULL}}},
};

static int expect_matches(const down_expect *x, const example *e) {
  return strcmp(x->id, e->id) == 0 &&
         (!x->contains || strstr(e->line, x->contains));
}

static void test_examples_down(void) {
  GPtrArray *ex = load_examples();
  size_t hits[G_N_ELEMENTS(down_expects)] = {0};
  size_t ndown = 0;
  for (size_t i = 0; i < ex->len; i++) {
    const example *e = ex->pdata[i];
    if (strcmp(e->dir, "down"))
      continue;
    ndown++;
    g_test_message("examples:%zu: %s", e->lineno, e->line);
    smartrest_records r = decode_str(e->line);
    g_assert_cmpuint(r.count, ==, 1);
    const smartrest_record *rec = &r.items[0];
    g_assert_null(rec->error);
    g_assert_cmpuint(rec->nfields, >=, 1);
    g_assert_cmpstr(rec->fields[0], ==, e->id);
    int explicit = 0;
    for (size_t k = 0; k < G_N_ELEMENTS(down_expects); k++) {
      const down_expect *x = &down_expects[k];
      if (!expect_matches(x, e))
        continue;
      hits[k]++;
      explicit = 1;
      g_assert_cmpuint(rec->nfields, ==, x->nfields);
      for (size_t c = 0; c < G_N_ELEMENTS(x->checks); c++) {
        if (x->checks[c].idx < 0)
          break;
        g_assert_cmpstr(rec->fields[x->checks[c].idx], ==, x->checks[c].value);
      }
    }
    if (!strchr(e->line, '"')) {
      /* No quoting: the structure is exactly the comma-separated pieces. */
      char **parts = g_strsplit(e->line, ",", -1);
      g_assert_cmpuint(rec->nfields, ==, g_strv_length(parts));
      for (size_t k = 0; parts[k]; k++)
        g_assert_cmpstr(rec->fields[k], ==, parts[k]);
      g_strfreev(parts);
    } else if (!explicit) {
      g_error("examples:%zu: quoted down line %s has no explicit expectation",
              e->lineno, e->line);
    }
    smartrest_records_free(&r);
  }
  g_assert_cmpuint(ndown, >=, 20);
  for (size_t k = 0; k < G_N_ELEMENTS(down_expects); k++) {
    if (hits[k] != 1)
      g_error("expectation for %s (%s) matched %zu example lines, wanted 1",
              down_expects[k].id,
              down_expects[k].contains ? down_expects[k].contains : "-",
              hits[k]);
  }
  free_examples(ex);
}

/* Up lines that quote something, and what our encoder makes of their
 * decoded fields: quotes only where needed, "" for embedded quotes. */
static const struct {
  const char *source, *encoded;
} up_expects[] = {
    {"113,\"val1=1\\nval2=2\"", "113,val1=1\\nval2=2"},
    {"113,\"c8y.url.http=https://management.cumulocity.com\\nc8y.url.mqtt="
     "mqtt.cumulocity.com\\n\"",
     "113,c8y.url.http=https://management.cumulocity.com\\nc8y.url.mqtt="
     "mqtt.cumulocity.com\\n"},
    {"140,software_a,3.0.0,\"type A\",http://example.com/software_a,"
     "software_b,2.0.0,\"type B\",http://example.com/software_b",
     "140,software_a,3.0.0,type A,http://example.com/software_a,"
     "software_b,2.0.0,type B,http://example.com/software_b"},
    {"400,c8y_ConnectionEvent,\"Device connection was lost.\"",
     "400,c8y_ConnectionEvent,Device connection was lost."},
    {"502,c8y_Restart,\"Could not restart\"",
     "502,c8y_Restart,Could not restart"},
    {"503,c8y_LogfileRequest,"
     "\"https://demos.cumulocity.com/event/events/157700/binaries\"",
     "503,c8y_LogfileRequest,"
     "https://demos.cumulocity.com/event/events/157700/binaries"},
    {"505,123,\"Could not restart\"", "505,123,Could not restart"},
    /* These need their quotes, so the encoding is byte-identical. */
    {"502,c8y_SoftwareUpdate,\"Failed to install collectd, modbus, and "
     "golang.\"",
     "502,c8y_SoftwareUpdate,\"Failed to install collectd, modbus, and "
     "golang.\""},
    {"304,temperature_alarm,\"I, raised, it\",2021-04-23T19:00:00+05:00",
     "304,temperature_alarm,\"I, raised, it\",2021-04-23T19:00:00+05:00"},
    {"304,temperature_alarm,\"External \"\"sensor\"\" raised alarm\","
     "2021-04-23T19:00:00+05:00",
     "304,temperature_alarm,\"External \"\"sensor\"\" raised alarm\","
     "2021-04-23T19:00:00+05:00"},
};

static void test_examples_up(void) {
  GPtrArray *ex = load_examples();
  size_t hits[G_N_ELEMENTS(up_expects)] = {0};
  size_t nup = 0;
  for (size_t i = 0; i < ex->len; i++) {
    const example *e = ex->pdata[i];
    if (strcmp(e->dir, "up"))
      continue;
    nup++;
    g_test_message("examples:%zu: %s", e->lineno, e->line);
    smartrest_records r1 = decode_str(e->line);
    g_assert_cmpuint(r1.count, ==, 1);
    g_assert_null(r1.items[0].error);
    g_assert_cmpstr(r1.items[0].fields[0], ==, e->id);
    char *enc = encode_fields(r1.items[0].fields, r1.items[0].nfields);
    smartrest_records r2 = decode_str(enc);
    g_assert_cmpuint(r2.count, ==, 1);
    assert_same_record(&r1.items[0], &r2.items[0]);

    const char *want = NULL;
    for (size_t k = 0; k < G_N_ELEMENTS(up_expects); k++)
      if (strcmp(up_expects[k].source, e->line) == 0) {
        hits[k]++;
        want = up_expects[k].encoded;
      }
    if (!want && strchr(e->line, '"'))
      g_error("examples:%zu: quoted up line %s has no explicit expectation",
              e->lineno, e->line);
    /* Unquoted example lines need no quoting, so they come out unchanged. */
    g_assert_cmpstr(enc, ==, want ? want : e->line);
    g_free(enc);
    smartrest_records_free(&r1);
    smartrest_records_free(&r2);
  }
  g_assert_cmpuint(nup, >=, 50);
  for (size_t k = 0; k < G_N_ELEMENTS(up_expects); k++)
    if (hits[k] != 1)
      g_error("up expectation '%s' matched %zu example lines, wanted 1",
              up_expects[k].source, hits[k]);
  free_examples(ex);
}

/* ---- time ---------------------------------------------------------------- */

static void check_time(long long ms, const char *want) {
  char out[32];
  memset(out, 'X', sizeof out);
  smartrest_format_time(ms, out, sizeof out);
  g_assert_cmpstr(out, ==, want);
}

static void test_time_format(void) {
  check_time(0, "1970-01-01T00:00:00.000Z");
  check_time(1, "1970-01-01T00:00:00.001Z");
  check_time(-1, "1969-12-31T23:59:59.999Z");
  check_time(1647691407845LL, "2022-03-19T12:03:27.845Z");
  check_time(1795561528123LL, "2026-11-24T23:05:28.123Z");
  check_time(951782400000LL, "2000-02-29T00:00:00.000Z"); /* leap day */
  check_time(253402300799999LL, "9999-12-31T23:59:59.999Z");
  /* Out of range: empty, so the platform stamps the value itself. */
  check_time(253402300800000LL, "");

  char small[8];
  smartrest_format_time(0, small, sizeof small);
  g_assert_cmpstr(small, ==, "1970-01");
}

static int collect_line(void *ctx, const char *line) {
  g_ptr_array_add(ctx, g_strdup(line));
  return 0;
}

/* Fails like a full queue, an invalid line or a broken disk would. */
static int refuse_line(void *ctx, const char *line) {
  (void)line;
  return *(const int *)ctx;
}

/* What emit() returns reaches the caller unchanged: a full queue stays
 * C8Y_EAGAIN and a refused line C8Y_EINVAL instead of being read as the
 * encoder's own out-of-memory. */
static void test_encode_measurements_emit_status(void) {
  const char *one[] = {"c8y_Temperature", "T", "25", "C"};
  const char *two[] = {"c8y_T", "a", "1", "C", "c8y_T", "b", "2", "C"};
  const int codes[] = {C8Y_EINVAL, C8Y_ENOMEM, C8Y_EAGAIN, C8Y_EIO,
                       C8Y_ETOOBIG};
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    int code = codes[i];
    g_assert_cmpint(smartrest_encode_measurements(one, 1, "t", "", 16000,
                                                  refuse_line, &code),
                    ==, code);
    g_assert_cmpint(smartrest_encode_measurements(two, 2, "t", "", 16000,
                                                  refuse_line, &code),
                    ==, code);
  }
}

static void test_encode_measurements(void) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  const char *one[] = {"c8y_Temperature", "T", "25", "C"};
  g_assert_cmpint(
      smartrest_encode_measurements(one, 1, "x", "", 16000, collect_line, out),
      ==, 0);
  g_assert_cmpuint(out->len, ==, 1);
  g_assert_cmpstr(g_ptr_array_index(out, 0), ==, "200,c8y_Temperature,T,25,C,");
  g_ptr_array_set_size(out, 0);
  /* 1000 samples, each ~30 bytes: split into several 201 lines, none over
   * the limit, every sample exactly once and in order. */
  GPtrArray *f = g_ptr_array_new_with_free_func(g_free);
  for (int i = 0; i < 1000; i++) {
    g_ptr_array_add(f, g_strdup("c8y_Series"));
    g_ptr_array_add(f, g_strdup_printf("s%d", i));
    g_ptr_array_add(f, g_strdup_printf("%d", i));
    g_ptr_array_add(f, g_strdup("unit"));
  }
  g_assert_cmpint(smartrest_encode_measurements(
                      (const char *const *)f->pdata, 1000, "c8y_Many",
                      "2026-01-01T00:00:00Z", 2000, collect_line, out),
                  ==, 0);
  g_assert_cmpuint(out->len, >, 10);
  int next = 0;
  for (guint i = 0; i < out->len; i++) {
    const char *line = g_ptr_array_index(out, i);
    g_assert_cmpuint(strlen(line), <=, 2000);
    g_assert_true(g_str_has_prefix(line, "201,c8y_Many,2026-01-01T00:00:00Z,"));
    smartrest_records r;
    g_assert_cmpint(smartrest_decode(line, strlen(line), &r), ==, 0);
    g_assert_cmpuint((r.items[0].nfields - 3) % 4, ==, 0);
    for (size_t k = 3; k < r.items[0].nfields; k += 4)
      g_assert_cmpint(atoi(r.items[0].fields[k + 2]), ==, next++);
    smartrest_records_free(&r);
  }
  g_assert_cmpint(next, ==, 1000);
  /* A sample that cannot fit alone is refused, not cut. */
  const char *big[] = {"a", "b", "1", "u", "c8y_Long", "series", "2", "unit"};
  g_ptr_array_set_size(out, 0);
  g_assert_cmpint(
      smartrest_encode_measurements(big, 2, "t", "", 20, collect_line, out), ==,
      C8Y_ETOOBIG);
  char num[64];
  smartrest_format_value(0.1 + 0.2, num, sizeof num);
  g_assert_cmpstr(num, ==, "0.3");
  g_ptr_array_free(f, TRUE);
  g_ptr_array_free(out, TRUE);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/smartrest/buf/basic", test_buf_basic);
  g_test_add_func("/smartrest/encode/quoting", test_encode_quoting);
  g_test_add_func("/smartrest/encode/control-chars", test_encode_control_chars);
  g_test_add_func("/smartrest/encode/backslash-quote",
                  test_encode_backslash_quote);
  g_test_add_func("/smartrest/encode/append-field", test_encode_append_field);
  g_test_add_func("/smartrest/encode/line", test_encode_line);
  g_test_add_func("/smartrest/decode/basic", test_decode_basic);
  g_test_add_func("/smartrest/decode/multi-record", test_decode_multi_record);
  g_test_add_func("/smartrest/decode/crlf", test_decode_crlf);
  g_test_add_func("/smartrest/decode/empty-fields", test_decode_empty_fields);
  g_test_add_func("/smartrest/decode/quotes", test_decode_quotes);
  g_test_add_func("/smartrest/decode/trim", test_decode_trim);
  g_test_add_func("/smartrest/decode/malformed-middle",
                  test_decode_malformed_middle);
  g_test_add_func("/smartrest/decode/unterminated", test_decode_unterminated);
  g_test_add_func("/smartrest/decode/nul", test_decode_nul);
  g_test_add_func("/smartrest/decode/large", test_decode_large);
  g_test_add_func("/smartrest/decode/pathological", test_decode_pathological);
  g_test_add_func("/smartrest/roundtrip/strings", test_roundtrip_strings);
  g_test_add_func("/smartrest/examples/down", test_examples_down);
  g_test_add_func("/smartrest/examples/up", test_examples_up);
  g_test_add_func("/smartrest/time/format", test_time_format);
  g_test_add_func("/smartrest/encode/measurements", test_encode_measurements);
  g_test_add_func("/smartrest/encode/measurements_emit_status",
                  test_encode_measurements_emit_status);
  return g_test_run();
}
