/* libFuzzer target for the local API's request handling as the daemon runs
 * it: the bytes a client sends go through the framer (localapi_framer_feed,
 * in reads of any size, then localapi_framer_end as at EOF) and every
 * request line through localapi_parse.
 *
 * Input: byte 0 = the read size - 1, then the byte stream.
 *
 * Invariants: a line handed over has no LF or NUL (only the CR of a CR LF
 * is removed: "help\r\r\n" is a request "help\r") and fits
 * LOCALAPI_MAX_REQUEST; a refused request has a reason and leaves nothing
 * allocated; an accepted send/custom has at least one field and no NULL
 * field, custom has an XID, --child has an id; once the framer reports an
 * error the daemon closes, so the rest is not fed. */
#include "localapi.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_localapi: invariant violated: %s\n", what);
    abort();
  }
}

static void on_line(void *ctx, const char *line) {
  size_t *lines = ctx;
  (*lines)++;
  size_t len = strlen(line);
  check(len > 0 && len <= LOCALAPI_MAX_REQUEST, "line within the limit");
  check(!strchr(line, '\n'), "no line end in a line");
  /* An exact-size copy: the parser must not read past the line. */
  char *copy = malloc(len + 1);
  if (!copy)
    abort();
  memcpy(copy, line, len + 1);
  localapi_request r;
  char err[300] = "";
  int rc = localapi_parse(copy, &r, err, sizeof err);
  if (rc != 0) {
    check(rc == C8Y_EINVAL || rc == C8Y_ENOMEM, "refusal is EINVAL/ENOMEM");
    check(err[0] != '\0', "a refusal has a reason");
    check(!r.xid && !r.child && !r.fields && r.nfields == 0,
          "nothing kept from a refused request");
  } else if (r.cmd == LOCALAPI_SEND || r.cmd == LOCALAPI_CUSTOM) {
    check(r.nfields > 0 && r.fields, "a line to send has fields");
    for (size_t i = 0; i < r.nfields; i++)
      check(r.fields[i] != NULL, "no NULL field");
    check(r.cmd != LOCALAPI_CUSTOM || (r.xid && r.xid[0]), "custom has XID");
    check(!r.child || r.child[0], "--child has an id");
  } else {
    check(!r.fields && !r.xid && !r.child, "status/ops/help carry no line");
  }
  localapi_request_free(&r);
  free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t step = (size_t)data[0] + 1;
  data++;
  size--;
  localapi_framer *f = calloc(1, sizeof *f);
  if (!f)
    abort();
  size_t lines = 0;
  bool closed = false;
  for (size_t off = 0; off < size && !closed;) {
    size_t n = size - off < step ? size - off : step;
    char *chunk = malloc(n);
    if (!chunk)
      abort();
    memcpy(chunk, data + off, n);
    localapi_frame fr = localapi_framer_feed(f, chunk, n, on_line, &lines);
    free(chunk);
    off += n;
    if (fr != LOCALAPI_FRAME_OK) {
      check(f->len == 0, "an error empties the framer");
      closed = true;
    }
    check(f->len <= LOCALAPI_MAX_REQUEST, "buffered rest within the limit");
  }
  if (!closed)
    localapi_framer_end(f, on_line, &lines);
  check(lines <= size, "at most one line per byte");
  free(f);
  return 0;
}
