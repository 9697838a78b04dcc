/* libFuzzer target for what an HTTP server sends the agent (http_reply_*):
 * the header lines, the body in pieces of any size (curl hands over a
 * chunked body de-chunked, in pieces like these) and the JSON of error,
 * identity and event answers.
 *
 * Input: byte 0 = flags (bit 0: a download sink; bit 1: a cap on the file;
 * bit 2: a partial file already there, i.e. a Range request; the rest sizes
 * the cap), byte 1 = the body's piece size - 1, then header lines up to the
 * first empty one, then the body. Every line and piece is passed in a
 * buffer of exactly its size, so reading past it is caught.
 *
 * Invariants: the kept body stays within HTTP_BODY_MAX and NUL-terminated;
 * the status is 0 or a three-digit code; the sink holds exactly `offset`
 * bytes, never more than the cap; an error text has no control characters;
 * an accepted identity or event id is a plain id. */
#include "http.h"
#include "log.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_http: invariant violated: %s\n", what);
    abort();
  }
}

/* The download sink: an unlinked file on a tmpfs when one is writable
 * (statvfs must see a real file system: the space check uses it). */
static int sink_fd(void) {
  static int fd = -2;
  if (fd != -2)
    return fd;
  const char *dir = getenv("TMPDIR");
  if (!dir)
    dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  char path[4096];
  snprintf(path, sizeof path, "%s/fuzz-http-XXXXXX", dir);
  fd = mkstemp(path);
  if (fd < 0)
    abort();
  unlink(path);
  log_set_level(LOG_LVL_ERROR); /* "the server ignored Range" is expected */
  return fd;
}

/* Calls fn on an exact-size copy of data[0..n). */
static bool pass(bool (*fn)(http_reply *, const char *, size_t), http_reply *r,
                 const uint8_t *data, size_t n) {
  char *copy = malloc(n ? n : 1);
  if (!copy)
    abort();
  memcpy(copy, data, n);
  bool ok = fn(r, copy, n);
  free(copy);
  return ok;
}

static bool plain_id(const char *s) {
  return *s && strspn(s, "0123456789abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ-_") == strlen(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  uint8_t flags = data[0];
  size_t piece = (size_t)data[1] + 1;
  data += 2;
  size -= 2;
  http_reply *r = calloc(1, sizeof *r);
  if (!r)
    abort();
  r->fd = -1;
  int fd = sink_fd();
  if (flags & 1) {
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
      abort();
    r->fd = fd;
    if (flags & 4) {
      /* A partial file from an earlier attempt. */
      static const char earlier[37] = "bytes of an earlier, cut attempt....";
      if (write(fd, earlier, sizeof earlier) != (ssize_t)sizeof earlier)
        abort();
      r->offset = sizeof earlier;
    }
  }
  if (flags & 2)
    r->max = r->offset + 1 + (uint64_t)(flags >> 3) * 97;

  const uint8_t *p = data, *end = data + size;
  bool ok = true;
  while (ok && p < end) {
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
    bool blank = n == 1 || (n == 2 && p[0] == '\r');
    ok = pass(http_reply_header, r, p, n);
    p += n;
    /* curl hands over the headers of a 100 Continue too. */
    if (blank && !(r->code >= 100 && r->code < 200))
      break;
    check(r->code == 0 || (r->code >= 100 && r->code <= 999),
          "status is a three-digit code");
  }
  while (ok && p < end) {
    size_t n = (size_t)(end - p) < piece ? (size_t)(end - p) : piece;
    ok = pass(http_reply_body, r, p, n);
    p += n;
    check(r->body_len <= HTTP_BODY_MAX, "kept body within HTTP_BODY_MAX");
    check(r->body[r->body_len] == '\0', "kept body NUL-terminated");
  }
  if (r->fd >= 0 && !r->write_failed) {
    struct stat st;
    check(fstat(fd, &st) == 0 && (uint64_t)st.st_size == r->offset,
          "the sink holds exactly offset bytes");
    check(!r->max || r->offset <= r->max, "the sink stays within the cap");
  }
  char text[300];
  http_reply_error_text(r, text, sizeof text);
  for (const char *c = text; *c; c++)
    check((unsigned char)*c >= ' ' && *c != 0x7f,
          "error text without control characters");
  char id[128];
  if (http_reply_identity(r, id, sizeof id) == 0)
    check(plain_id(id), "identity is a plain id");
  if (http_reply_event_id(r, id, sizeof id) == 0)
    check(plain_id(id), "event id is a plain id");
  free(r);
  return 0;
}
