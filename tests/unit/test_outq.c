/* Tests for the durable outbound queue. */
#include "outq.h"

#include "clock.h"

#include <c8y/plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXP 16000

static char *make_dir(void) {
  GError *err = NULL;
  char *dir = g_dir_make_tmp("outq-test-XXXXXX", &err);
  g_assert_no_error(err);
  return dir;
}

static void rm_dir(char *dir) {
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d) {
    const char *name;
    while ((name = g_dir_read_name(d))) {
      char *p = g_build_filename(dir, name, NULL);
      g_unlink(p);
      g_free(p);
    }
    g_dir_close(d);
  }
  g_rmdir(dir);
  g_free(dir);
}

static outq *open_q(const char *dir, int fsync_ms, size_t max_bytes) {
  outq_options o;
  outq_default_options(&o, dir);
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    o.fsync_ms[c] = fsync_ms;
  o.max_bytes = max_bytes;
  outq *q = NULL;
  char err[256] = "";
  int rc = outq_open(&o, &q, err, sizeof err);
  if (rc != 0)
    g_error("outq_open: %s", err);
  g_assert_nonnull(q);
  return q;
}

static off_t file_size(const char *dir, int cls) {
  char *p = g_strdup_printf("%s/queue-%d.log", dir, cls);
  struct stat sb;
  int rc = stat(p, &sb);
  g_free(p);
  return rc == 0 ? sb.st_size : -1;
}

static char *queue_path(const char *dir, int cls) {
  return g_strdup_printf("%s/queue-%d.log", dir, cls);
}

/* Takes one batch, checks it, acks it and returns its payload. */
static char *take_ack(outq *q, size_t maxp, outq_class want_cls,
                      const char *want_topic) {
  outq_batch b;
  g_assert_cmpint(outq_take(q, maxp, &b), ==, 1);
  g_assert_cmpint(b.cls, ==, want_cls);
  if (want_topic)
    g_assert_cmpstr(b.topic, ==, want_topic);
  g_assert_cmpuint(strlen(b.payload), ==, b.len);
  g_assert_cmpint(outq_ack(q, b.id), ==, 0);
  char *s = g_strdup(b.payload);
  outq_batch_free(&b);
  return s;
}

static void assert_take_ack(outq *q, size_t maxp, outq_class cls,
                            const char *topic, const char *payload) {
  char *s = take_ack(q, maxp, cls, topic);
  g_assert_cmpstr(s, ==, payload);
  g_free(s);
}

static void assert_empty(outq *q) {
  outq_batch b;
  g_assert_cmpint(outq_take(q, MAXP, &b), ==, 0);
  outq_stats st;
  outq_get_stats(q, &st);
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    g_assert_cmpuint(st.queued[c], ==, 0);
}

/* Queues n measurements "<head><i><tail>" on "s/us", i from 0. */
static void push_numbered(outq *q, const char *head, const char *tail, int n) {
  for (int i = 0; i < n; i++) {
    char line[64];
    snprintf(line, sizeof line, "%s%d%s", head, i, tail);
    g_assert_cmpint(outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0), ==,
                    0);
  }
}

/* 9-byte lines "200,m,v,<i>". */
static void push_mv(outq *q, int n) { push_numbered(q, "200,m,v,", "", n); }

/* Bytes of an entry record (format 2, see outq.c) of an llen-byte line
 * whose sequence number and topic number take one byte each: magic, kind,
 * CRC (6), the body length (1), seq, topic number, [tag], line. */
static size_t entry_bytes(size_t llen, bool tag) {
  return 6 + 1 + 2 + (tag ? 8 : 0) + llen;
}

/* Uses up sequence numbers 1..n (volatile entries, removed again), so that
 * later entries' numbers take two bytes: record sizes stay the same for
 * the rest of a test. */
static void use_up_seqs(outq *q, int n) {
  for (int i = 0; i < n; i++) {
    g_assert_cmpint(
        outq_push(q, OUTQ_EVENT, 0, "s/us", "400,x", 99, OUTQ_VOLATILE), ==, 0);
    g_assert_cmpuint(outq_remove_tag(q, 99), ==, 1);
  }
}

/* Overwrites len bytes at off in the class file, as damage on disk would. */
static void poke(const char *dir, int cls, off_t off, const void *data,
                 size_t len) {
  char *path = queue_path(dir, cls);
  int fd = open(path, O_WRONLY);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(pwrite(fd, data, len, off), ==, (ssize_t)len);
  close(fd);
  g_free(path);
}

static void test_priority(void) {
  outq *q = open_q(NULL, OUTQ_FSYNC_NEVER, 0);
  /* One topic per line: between topics, the class priority decides. */
  g_assert_cmpint(
      outq_push(q, OUTQ_MEASUREMENT, 0, "s/us/m", "200,a,b,1", 0, 0), ==, 0);
  g_assert_cmpint(
      outq_push(q, OUTQ_INVENTORY, 0, "s/us/i", "114,c8y_Restart", 0, 0), ==,
      0);
  g_assert_cmpint(outq_push(q, OUTQ_EVENT, 0, "s/us/e", "400,t,x", 0, 0), ==,
                  0);
  g_assert_cmpint(outq_push(q, OUTQ_ALARM, 0, "s/us/a", "301,a,b", 0, 0), ==,
                  0);
  g_assert_cmpint(
      outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "503,c8y_Restart", 0, 0), ==, 0);
  /* max_payload 1 forces one line per batch, so the class order shows. */
  assert_take_ack(q, 1, OUTQ_OPSTATUS, "s/us", "503,c8y_Restart");
  assert_take_ack(q, 1, OUTQ_ALARM, "s/us/a", "301,a,b");
  assert_take_ack(q, 1, OUTQ_EVENT, "s/us/e", "400,t,x");
  assert_take_ack(q, 1, OUTQ_INVENTORY, "s/us/i", "114,c8y_Restart");
  assert_take_ack(q, 1, OUTQ_MEASUREMENT, "s/us/m", "200,a,b,1");
  assert_empty(q);
  /* On one topic, lines queued after a status still yield to it. */
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "501,c8y_Restart", 0, 0);
  outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,a,b,2", 0, 0);
  outq_push(q, OUTQ_INVENTORY, 0, "s/us", "114,c8y_Restart", 0, 0);
  outq_push(q, OUTQ_ALARM, 0, "s/us", "301,a,b", 0, 0);
  assert_take_ack(q, MAXP, OUTQ_OPSTATUS, "s/us", "501,c8y_Restart");
  assert_take_ack(q, MAXP, OUTQ_ALARM, "s/us", "301,a,b");
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "114,c8y_Restart");
  assert_take_ack(q, MAXP, OUTQ_MEASUREMENT, "s/us", "200,a,b,2");
  assert_empty(q);
  outq_close(q);
}

static void test_fifo_and_packing(void) {
  outq *q = open_q(NULL, OUTQ_FSYNC_NEVER, 0);
  push_mv(q, 5);
  /* Each line is 9 bytes: two lines plus the separator are 19 bytes. */
  assert_take_ack(q, 19, OUTQ_MEASUREMENT, "s/us", "200,m,v,0\n200,m,v,1");
  assert_take_ack(q, 18, OUTQ_MEASUREMENT, "s/us", "200,m,v,2");
  assert_take_ack(q, MAXP, OUTQ_MEASUREMENT, "s/us", "200,m,v,3\n200,m,v,4");
  assert_empty(q);

  /* A topic change ends a batch even when more would fit. */
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,a,1", 0, 0);
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,a,2", 0, 0);
  outq_push(q, OUTQ_EVENT, 0, "s/uc/x", "1,a", 0, 0);
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,a,3", 0, 0);
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,a,1\n400,a,2");
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/uc/x", "1,a");
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,a,3");
  assert_empty(q);
  outq_close(q);
}

static void test_line_limit(void) {
  outq *q = open_q(NULL, OUTQ_FSYNC_NEVER, 0);
  char *at = g_malloc(MAXP + 2);
  memset(at, 'x', MAXP + 1);
  at[MAXP + 1] = '\0';
  g_assert_cmpint(outq_push(q, OUTQ_EVENT, 0, "s/us", at, 0, 0), ==,
                  C8Y_ETOOBIG);
  at[MAXP] = '\0';
  g_assert_cmpint(outq_push(q, OUTQ_EVENT, 0, "s/us", at, 0, 0), ==, 0);
  g_assert_cmpint(outq_push(q, OUTQ_EVENT, 0, "s/us", "400,next", 0, 0), ==, 0);
  outq_batch b;
  g_assert_cmpint(outq_take(q, MAXP, &b), ==, 1);
  g_assert_cmpuint(b.len, ==, MAXP);
  g_assert_cmpuint(b.nlines, ==, 1);
  g_assert_cmpstr(b.payload, ==, at);
  outq_ack(q, b.id);
  outq_batch_free(&b);
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,next");
  /* Empty lines and topics are rejected, not queued. */
  g_assert_cmpint(outq_push(q, OUTQ_EVENT, 0, "s/us", "", 0, 0), ==,
                  C8Y_EINVAL);
  g_assert_cmpint(outq_push(q, OUTQ_EVENT, 0, "", "400,a", 0, 0), ==,
                  C8Y_EINVAL);
  assert_empty(q);
  /* A quoted SmartREST field may hold LFs (113 text, command output): the
   * line is kept whole. */
  g_assert_cmpint(
      outq_push(q, OUTQ_INVENTORY, 0, "s/us", "113,\"a=1\nb=2\"", 0, 0), ==, 0);
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "113,\"a=1\nb=2\"");
  assert_empty(q);
  g_free(at);
  outq_close(q);
}

static void test_ack_nack(void) {
  outq *q = open_q(NULL, OUTQ_FSYNC_NEVER, 0);
  const char *lines[] = {"400,a", "400,b", "400,c", "400,d"};
  for (int i = 0; i < 4; i++)
    outq_push(q, OUTQ_EVENT, 0, "s/us", lines[i], (uint64_t)i + 1, 0);
  outq_batch b1, b2;
  g_assert_cmpint(outq_take(q, 11, &b1), ==, 1); /* a, b */
  g_assert_cmpint(outq_take(q, 11, &b2), ==, 1); /* c, d */
  g_assert_cmpstr(b1.payload, ==, "400,a\n400,b");
  g_assert_cmpstr(b2.payload, ==, "400,c\n400,d");
  g_assert_cmpuint(b1.ntags, ==, 2);
  g_assert_cmpuint(b1.tags[0], ==, 1);
  g_assert_cmpuint(b1.tags[1], ==, 2);
  g_assert_cmpuint(outq_inflight_batches(q), ==, 2);
  outq_stats st;
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.inflight, ==, 4);
  g_assert_cmpuint(st.queued[OUTQ_EVENT], ==, 0);
  outq_batch none;
  g_assert_cmpint(outq_take(q, MAXP, &none), ==, 0);

  /* Nack of b2 then a new line: b2's lines come back before it. */
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,e", 0, 0);
  g_assert_cmpint(outq_nack(q, b2.id), ==, 0);
  g_assert_cmpint(outq_nack(q, b2.id), ==, -1);
  g_assert_cmpint(outq_ack(q, b2.id), ==, -1);
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,c\n400,d\n400,e");
  g_assert_cmpuint(outq_inflight_batches(q), ==, 1);
  g_assert_cmpint(outq_ack(q, b1.id), ==, 0);
  g_assert_cmpuint(outq_inflight_batches(q), ==, 0);
  g_assert_cmpint(outq_ack(q, 12345), ==, -1);
  outq_batch_free(&b2);

  /* requeue_inflight restores the original order across batches. */
  for (int i = 0; i < 4; i++)
    outq_push(q, OUTQ_EVENT, 0, "s/us", lines[i], 0, 0);
  outq_batch x, y, z;
  g_assert_cmpint(outq_take(q, 5, &x), ==, 1);
  g_assert_cmpint(outq_take(q, 5, &y), ==, 1);
  g_assert_cmpint(outq_take(q, 5, &z), ==, 1);
  g_assert_cmpstr(z.payload, ==, "400,c");
  outq_requeue_inflight(q);
  g_assert_cmpuint(outq_inflight_batches(q), ==, 0);
  g_assert_cmpint(outq_ack(q, y.id), ==, -1);
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,a\n400,b\n400,c\n400,d");
  outq_batch_free(&x);
  outq_batch_free(&y);
  outq_batch_free(&z);
  outq_batch_free(&b1);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.inflight, ==, 0);
  g_assert_cmpuint(st.bytes, ==, 0);
  outq_close(q);
}

static void test_persist_reopen(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,m,v,1", 0, 0);
  outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,m,v,2", 0, 0);
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "503,c8y_Restart", 77, 0);
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "501,c8y_Restart", 0, OUTQ_VOLATILE);
  outq_push(q, OUTQ_EVENT, 0, "s/uc/x", "9,z", 0, 0);
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,a", 0, 0);
  /* Taken but not acked: must come back after the restart. */
  outq_batch b;
  g_assert_cmpint(outq_take(q, MAXP, &b), ==, 1);
  g_assert_cmpstr(b.payload, ==, "503,c8y_Restart\n501,c8y_Restart");
  outq_batch_free(&b);
  outq_close(q);

  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  outq_stats st;
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.replayed, ==, 5);
  g_assert_cmpuint(st.queued[OUTQ_OPSTATUS], ==, 1);
  g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, 2);
  g_assert_cmpuint(st.bytes, ==,
                   entry_bytes(strlen("503,c8y_Restart"), true) +
                       2 * entry_bytes(strlen("200,m,v,1"), false) +
                       entry_bytes(strlen("9,z"), false) +
                       entry_bytes(strlen("400,a"), false));
  g_assert_cmpint(outq_take(q, MAXP, &b), ==, 1);
  g_assert_cmpstr(b.payload, ==, "503,c8y_Restart"); /* volatile is gone */
  g_assert_cmpuint(b.ntags, ==, 1);
  g_assert_cmpuint(b.tags[0], ==, 77);
  g_assert_cmpint(outq_ack(q, b.id), ==, 0);
  outq_batch_free(&b);
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/uc/x", "9,z");
  outq_close(q);

  /* Acked entries are gone for good; the rest is still there. */
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.replayed, ==, 3);
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,a");
  /* New entries are numbered after the replayed ones. */
  outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,m,v,3", 0, 0);
  outq_close(q);
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  assert_take_ack(q, MAXP, OUTQ_MEASUREMENT, "s/us",
                  "200,m,v,1\n200,m,v,2\n200,m,v,3");
  assert_empty(q);
  outq_close(q);
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  assert_empty(q);
  outq_close(q);
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    g_assert_cmpint(file_size(dir, c), ==, 0);
  rm_dir(dir);
}

static void test_persist_volatile(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_ALWAYS, 0);
  g_assert_cmpint(outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "501,c8y_Command", 0,
                            OUTQ_VOLATILE),
                  ==, 0);
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    g_assert_cmpint(file_size(dir, c), ==, 0);
  outq_close(q);
  q = open_q(dir, OUTQ_FSYNC_ALWAYS, 0);
  assert_empty(q);
  outq_close(q);
  rm_dir(dir);
}

static void kill9_child(const char *dir, int n, int ack_first, int sig) {
  outq_options o;
  outq_default_options(&o, dir);
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    o.fsync_ms[c] = OUTQ_FSYNC_ALWAYS;
  outq *q;
  char err[256];
  if (outq_open(&o, &q, err, sizeof err) != 0)
    _exit(3);
  for (int i = 0; i < n; i++) {
    char line[32];
    snprintf(line, sizeof line, "400,e,%d", i);
    if (outq_push(q, i % 2 ? OUTQ_EVENT : OUTQ_ALARM, 0, "s/us", line, 0, 0) !=
        0)
      _exit(4);
  }
  if (ack_first) {
    outq_batch b;
    if (outq_take(q, MAXP, &b) != 1 || outq_ack(q, b.id) != 0)
      _exit(5);
  }
  if (sig)
    raise(sig);
  _exit(0);
}

static void test_kill9(void) {
  for (int variant = 0; variant < 2; variant++) {
    char *dir = make_dir();
    const int n = 200;
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0)
      kill9_child(dir, n, variant, variant ? SIGKILL : 0);
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    if (variant)
      g_assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    else
      g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
    outq_stats st;
    outq_get_stats(q, &st);
    /* Variant 1 acked the alarms (one batch) before dying. */
    g_assert_cmpuint(st.queued[OUTQ_ALARM], ==, variant ? 0 : n / 2);
    g_assert_cmpuint(st.queued[OUTQ_EVENT], ==, n / 2);
    GString *want = g_string_new(NULL);
    for (int i = 1; i < n; i += 2)
      g_string_append_printf(want, "%s400,e,%d", want->len ? "\n" : "", i);
    if (!variant) {
      GString *alarms = g_string_new(NULL);
      for (int i = 0; i < n; i += 2)
        g_string_append_printf(alarms, "%s400,e,%d", alarms->len ? "\n" : "",
                               i);
      assert_take_ack(q, MAXP, OUTQ_ALARM, "s/us", alarms->str);
      g_string_free(alarms, TRUE);
    }
    assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", want->str);
    g_string_free(want, TRUE);
    assert_empty(q);
    outq_close(q);
    rm_dir(dir);
  }
}

/* Five 9-byte lines on "s/us": every record is 6 + 1 + 1 + 1 + 9 = 18
 * bytes (see entry_bytes). */
#define REC 18
static void push_five(const char *dir) {
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  push_mv(q, 5);
  outq_close(q);
  g_assert_cmpint(file_size(dir, OUTQ_MEASUREMENT), ==, 5 * REC);
}

static void test_truncated_tail(void) {
  if (g_test_subprocess()) {
    char *dir = make_dir();
    push_five(dir);
    char *path = queue_path(dir, OUTQ_MEASUREMENT);
    g_assert_cmpint(truncate(path, 5 * REC - 3), ==, 0);
    outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
    outq_stats st;
    outq_get_stats(q, &st);
    g_assert_cmpuint(st.replayed, ==, 4);
    outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,m,v,9", 0, 0);
    outq_close(q);
    q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
    assert_take_ack(q, MAXP, OUTQ_MEASUREMENT, "s/us",
                    "200,m,v,0\n200,m,v,1\n200,m,v,2\n200,m,v,3\n200,m,v,9");
    outq_close(q);
    g_free(path);
    rm_dir(dir);
    return;
  }
  g_test_trap_subprocess(NULL, 0, 0);
  g_test_trap_assert_passed();
  /* One warning naming the file and the offset of the torn record. */
  g_test_trap_assert_stderr("*queue-4.log: truncated or corrupt record at "
                            "offset 72,*");
  g_test_trap_assert_stderr_unmatched("*queue-4.log*queue-4.log*");
}

/* One byte of the third line's record is damaged: it alone is lost. */
#define DAMAGE_OFF (2 * REC + 12)
#define DAMAGED_FIVE "200,m,v,0\n200,m,v,1\n200,m,v,3\n200,m,v,4"

/* Five lines written, damaged at off, replayed: want is what comes back. */
static void replay_damaged(off_t off, const void *data, size_t len,
                           const char *want) {
  char *dir = make_dir();
  push_five(dir);
  poke(dir, OUTQ_MEASUREMENT, off, data, len);
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  assert_take_ack(q, MAXP, OUTQ_MEASUREMENT, "s/us", want);
  assert_empty(q);
  outq_close(q);
  rm_dir(dir);
}

static void test_corrupt_middle(void) {
  if (g_test_subprocess()) {
    replay_damaged(DAMAGE_OFF, "#", 1, DAMAGED_FIVE);
    return;
  }
  g_test_trap_subprocess(NULL, 0, 0);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr("*queue-4.log: corrupt record at offset 36, "
                            "skipped 18 bytes*");
}

/* Records punched out to make room on a full disk read as zeros: replay
 * skips them without calling it damage. */
static void test_punched(void) {
  if (g_test_subprocess()) {
    static const char zeros[2 * REC];
    replay_damaged(REC, zeros, sizeof zeros, "200,m,v,0\n200,m,v,3\n200,m,v,4");
    return;
  }
  g_test_trap_subprocess(NULL, 0, 0);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr_unmatched("*corrupt*");
}

static void test_garbage_file(void) {
  if (g_test_subprocess()) {
    char *dir = make_dir();
    char *path = queue_path(dir, OUTQ_EVENT);
    g_assert_true(
        g_file_set_contents(path, "not a queue file at all\n", -1, NULL));
    outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
    assert_empty(q);
    outq_close(q);
    /* The damage was cleaned up: no warning on the next start. */
    g_assert_cmpint(file_size(dir, OUTQ_EVENT), ==, 0);
    g_free(path);
    rm_dir(dir);
    return;
  }
  g_test_trap_subprocess(NULL, 0, 0);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr("*queue-2.log: truncated or corrupt record at "
                            "offset 0, ignoring the last 24 bytes*");
}

static void test_drop_policy(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 1300);
  /* 26 bytes each: 16 of line, 10 of record (a 2-byte sequence number) */
  use_up_seqs(q, 130);
  g_assert_cmpint(
      outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "503,c8y_Restart1", 0, 0), ==, 0);
  g_assert_cmpint(outq_push(q, OUTQ_ALARM, 0, "s/us", "301,c8y_Alarm,xx", 0, 0),
                  ==, 0);
  for (int i = 0; i < 100; i++) {
    char line[32];
    snprintf(line, sizeof line, "200,c8y_T,T,%04d", i); /* 16 bytes */
    g_assert_cmpint(outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0), ==,
                    0);
  }
  outq_stats st;
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.bytes, <=, 1300);
  g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, 48);
  g_assert_cmpuint(st.dropped[OUTQ_MEASUREMENT], ==, 52);
  g_assert_cmpuint(st.queued[OUTQ_OPSTATUS], ==, 1);
  g_assert_cmpuint(st.queued[OUTQ_ALARM], ==, 1);

  /* The oldest measurements went; the newest are kept. An in-flight batch
   * is never dropped. */
  outq_batch hold, b;
  g_assert_cmpint(outq_take(q, MAXP, &hold), ==, 1);
  g_assert_cmpint(hold.cls, ==, OUTQ_OPSTATUS);
  g_assert_cmpint(outq_take(q, MAXP, &b), ==, 1);
  g_assert_cmpint(b.cls, ==, OUTQ_ALARM);
  outq_nack(q, b.id);
  outq_batch_free(&b);
  g_assert_cmpint(outq_take(q, 16, &b), ==, 1);
  g_assert_cmpint(b.cls, ==, OUTQ_ALARM);
  outq_nack(q, b.id);
  outq_batch_free(&b);

  /* Measurements can't displace an alarm: the new one is refused once the
   * measurements are gone... */
  for (int i = 0; i < 48; i++)
    g_assert_cmpint(
        outq_push(q, OUTQ_ALARM, 0, "s/us", "301,c8y_Alarm,yy", 0, 0), ==, 0);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, 0);
  g_assert_cmpuint(st.queued[OUTQ_ALARM], ==, 49);
  g_assert_cmpuint(st.bytes, ==, 1300);
  g_assert_cmpint(
      outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,c8y_T,T,9999", 0, 0), ==,
      C8Y_EAGAIN);
  /* ...but opstatus displaces alarms, and never the in-flight opstatus. */
  g_assert_cmpint(
      outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "503,c8y_Restart2", 0, 0), ==, 0);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.dropped[OUTQ_ALARM], ==, 1);
  g_assert_cmpuint(st.queued[OUTQ_ALARM], ==, 48);
  g_assert_cmpuint(st.inflight, ==, 1);
  /* A line larger than the whole bound can never fit. */
  char big[1400];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  g_assert_cmpint(outq_push(q, OUTQ_OPSTATUS, 0, "s/us", big, 0, 0), ==,
                  C8Y_EAGAIN);
  outq_batch_free(&hold);
  outq_close(q);

  /* Drops are durable: the dropped measurements don't come back. */
  q = open_q(dir, OUTQ_FSYNC_NEVER, 1300);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.queued[OUTQ_OPSTATUS], ==, 2);
  g_assert_cmpuint(st.queued[OUTQ_ALARM], ==, 48);
  g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, 0);
  outq_close(q);

  /* A lower bound at open drops the least important entries. */
  q = open_q(dir, OUTQ_FSYNC_NEVER, 500);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.bytes, <=, 500);
  g_assert_cmpuint(st.queued[OUTQ_OPSTATUS], ==, 2);
  g_assert_cmpuint(st.queued[OUTQ_ALARM], ==, 17); /* 2 * 26 + 17 * 26 */
  outq_close(q);
  rm_dir(dir);
}

/* An inventory line with its replace key (0 = none). */
static int push_inv(outq *q, const char *topic, const char *line, uint8_t key) {
  return outq_push(q, OUTQ_INVENTORY, key, topic, line, 0, 0);
}

static void test_coalesce(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  g_assert_cmpint(push_inv(q, "s/us", "114,c8y_Restart", 114), ==, 0);
  g_assert_cmpint(push_inv(q, "s/us", "114,c8y_Restart", 114), ==, 0);
  push_inv(q, "s/uc/x", "114,c8y_Restart", 114);
  push_inv(q, "s/us", "117,10", 117);
  push_inv(q, "s/us", "110,SN,model,1.0", 110);
  push_inv(q, "s/us", "117,20", 117);
  /* Lines without a key are kept even when they look alike. */
  push_inv(q, "s/us", "101,child,1", 0);
  push_inv(q, "s/us", "101,child,2", 0);
  /* Identical lines of other classes are not coalesced. */
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,a", 0, 0);
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,a", 0, 0);
  outq_stats st;
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.coalesced, ==, 2);
  g_assert_cmpuint(st.queued[OUTQ_INVENTORY], ==, 6);
  g_assert_cmpuint(st.queued[OUTQ_EVENT], ==, 2);
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,a\n400,a");
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "114,c8y_Restart");
  outq_close(q);

  /* The superseded line stays gone after a restart. */
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/uc/x", "114,c8y_Restart");
  outq_batch b;
  g_assert_cmpint(outq_take(q, MAXP, &b), ==, 1);
  g_assert_cmpstr(b.payload, ==,
                  "110,SN,model,1.0\n117,20\n101,child,1\n101,child,2");
  /* In-flight lines are neither coalesced with nor superseded. */
  push_inv(q, "s/us", "117,20", 117);
  push_inv(q, "s/us", "110,SN,model,2.0", 110);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.queued[OUTQ_INVENTORY], ==, 2);
  g_assert_cmpuint(st.inflight, ==, 4);
  /* After a nack the old batch is queued again: a newer 117 supersedes it. */
  outq_nack(q, b.id);
  outq_batch_free(&b);
  push_inv(q, "s/us", "117,30", 117);
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us",
                  "110,SN,model,1.0\n101,child,1\n101,child,2\n110,SN,model,"
                  "2.0\n117,30");
  assert_empty(q);
  outq_close(q);
  rm_dir(dir);
}

static uint64_t read_varint(const unsigned char **p) {
  uint64_t v = 0;
  for (unsigned shift = 0;; shift += 7) {
    unsigned char b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return v;
  }
}

/* The replace key stored in the n-th entry record of a class file (format
 * 2: kind bit 0x08 says a key byte follows seq, topic number and tag). */
static int record_key(const char *dir, int cls, int n) {
  char *path = queue_path(dir, cls);
  gchar *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  g_free(path);
  size_t off = 0;
  int key = -1;
  for (int entries = 0; key < 0;) {
    g_assert_cmpuint(off + 7, <=, len);
    const unsigned char *p = (const unsigned char *)data + off;
    g_assert_cmpint(p[0], ==, 0xC9);
    const unsigned char *b = p + 6;
    uint64_t blen = read_varint(&b);
    off = (size_t)(b - (const unsigned char *)data) + blen;
    g_assert_cmpuint(off, <=, len);
    if ((p[1] & 3) != 1 || entries++ < n)
      continue;
    read_varint(&b); /* seq */
    read_varint(&b); /* topic number */
    if (p[1] & 0x04)
      b += 8;
    key = (p[1] & 0x08) ? *b : 0;
  }
  g_free(data);
  return key;
}

/* The queue never reads the line: only the caller's key supersedes. */
static void test_replace_keys(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  push_inv(q, "s/us", "a,1", 7);
  push_inv(q, "s/us/child", "a,1 child", 7); /* another topic */
  push_inv(q, "s/us", "b,1", 8);             /* another key */
  push_inv(q, "s/us", "117,1", 0);           /* looks like state, no key */
  push_inv(q, "s/us", "a,2", 7);             /* supersedes "a,1" only */
  outq_stats st;
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.coalesced, ==, 1);
  g_assert_cmpuint(st.queued[OUTQ_INVENTORY], ==, 4);
  /* A key is for inventory lines only. */
  g_assert_cmpint(outq_push(q, OUTQ_EVENT, 7, "s/us", "a,3", 0, 0), ==,
                  C8Y_EINVAL);
  g_assert_cmpint(outq_push(q, OUTQ_MEASUREMENT, 1, "s/us", "200,a,b,1", 0, 0),
                  ==, C8Y_EINVAL);
  /* Stored in the record (none when 0). */
  g_assert_cmpint(record_key(dir, OUTQ_INVENTORY, 0), ==, 7);
  g_assert_cmpint(record_key(dir, OUTQ_INVENTORY, 2), ==, 8);
  g_assert_cmpint(record_key(dir, OUTQ_INVENTORY, 3), ==, 0);
  outq_close(q);

  /* Replayed entries keep their key: newer lines still supersede them, and
   * lines written without one replay and are not superseded. */
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.replayed, ==, 4);
  push_inv(q, "s/us", "a,3", 7);
  push_inv(q, "s/us", "b,2", 8);
  push_inv(q, "s/us", "117,2", 117);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.coalesced, ==, 2);
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us/child", "a,1 child");
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "117,1\na,3\nb,2\n117,2");
  assert_empty(q);
  outq_close(q);
  rm_dir(dir);
}

/* The registration of a connect goes before inventory lines plugins queued
 * earlier (a software list, supported types): taken by its tag, packed,
 * with the other lines stepped over and left in their place. */
static void test_take_tagged(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  g_assert_cmpint(outq_push(q, OUTQ_INVENTORY, 0, "s/us", "143,apt", 0, 0), ==,
                  0);
  g_assert_cmpint(
      outq_push(q, OUTQ_INVENTORY, 0, "s/us", "140,a,1", 0, OUTQ_VOLATILE), ==,
      0);
  g_assert_cmpint(outq_push(q, OUTQ_ALARM, 0, "s/us", "301,x", 0, 0), ==, 0);
  const uint64_t reg = 1000;
  g_assert_cmpint(
      outq_push(q, OUTQ_INVENTORY, 0, "s/us", "100,dev,t", reg, OUTQ_VOLATILE),
      ==, 0);
  g_assert_cmpint(
      outq_push(q, OUTQ_INVENTORY, 0, "s/us", "110,1,m,r", reg, OUTQ_VOLATILE),
      ==, 0);
  g_assert_cmpint(outq_push(q, OUTQ_INVENTORY, 0, "s/us/c1", "114,c8y_Restart",
                            reg, OUTQ_VOLATILE),
                  ==, 0);
  outq_batch b;
  g_assert_cmpint(outq_take_tagged(q, reg, MAXP, &b), ==, 1);
  g_assert_cmpstr(b.topic, ==, "s/us");
  g_assert_cmpstr(b.payload, ==, "100,dev,t\n110,1,m,r");
  g_assert_cmpuint(b.ntags, ==, 2);
  uint64_t first = b.id;
  outq_batch_free(&b);
  g_assert_cmpint(outq_take_tagged(q, reg, MAXP, &b), ==, 1);
  g_assert_cmpstr(b.topic, ==, "s/us/c1");
  g_assert_cmpstr(b.payload, ==, "114,c8y_Restart");
  uint64_t second = b.id;
  outq_batch_free(&b);
  g_assert_cmpint(outq_take_tagged(q, reg, MAXP, &b), ==, 0);
  g_assert_cmpint(outq_take_tagged(q, 77, MAXP, &b), ==, 0);
  /* A lost link puts a registration batch back; it is taken again first. */
  g_assert_cmpint(outq_nack(q, second), ==, 0);
  g_assert_cmpint(outq_take_tagged(q, reg, MAXP, &b), ==, 1);
  g_assert_cmpstr(b.payload, ==, "114,c8y_Restart");
  second = b.id;
  outq_batch_free(&b);
  g_assert_cmpint(outq_ack(q, first), ==, 0);
  g_assert_cmpint(outq_ack(q, second), ==, 0);
  /* What was stepped over is still there, in its order. */
  assert_take_ack(q, MAXP, OUTQ_ALARM, "s/us", "301,x");
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "143,apt");
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "140,a,1");
  assert_empty(q);
  outq_close(q);
  rm_dir(dir);
}

/* A software list queued before a restart (140 + 141 chunks) is replaced as
 * a whole by the list the restarted agent sends: the first 140 the platform
 * gets after a self-upgrade lists the new version, and no stale chunk of
 * the old list is appended to the new one. */
static void test_list_replaced_whole(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  g_assert_cmpint(outq_push(q, OUTQ_INVENTORY, 140, "s/us", "140,agent,1.0", 0,
                            OUTQ_LIST_HEAD),
                  ==, 0);
  g_assert_cmpint(outq_push(q, OUTQ_INVENTORY, 140, "s/us", "141,old,1", 0,
                            OUTQ_LIST_CHUNK),
                  ==, 0);
  g_assert_cmpint(outq_push(q, OUTQ_INVENTORY, 140, "s/us", "141,gone,1", 0,
                            OUTQ_LIST_CHUNK),
                  ==, 0);
  outq_close(q);
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0); /* the upgraded agent */
  g_assert_cmpint(outq_push(q, OUTQ_INVENTORY, 140, "s/us", "140,agent,2.0", 0,
                            OUTQ_LIST_HEAD),
                  ==, 0);
  g_assert_cmpint(outq_push(q, OUTQ_INVENTORY, 140, "s/us", "141,old,1", 0,
                            OUTQ_LIST_CHUNK),
                  ==, 0);
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "140,agent,2.0\n141,old,1");
  assert_empty(q);
  /* An unchanged head is not folded into the queued one: the chunks after
   * it still replace the old chunks. */
  g_assert_cmpint(
      outq_push(q, OUTQ_INVENTORY, 140, "s/us", "140,a,1", 0, OUTQ_LIST_HEAD),
      ==, 0);
  g_assert_cmpint(
      outq_push(q, OUTQ_INVENTORY, 140, "s/us", "141,b,1", 0, OUTQ_LIST_CHUNK),
      ==, 0);
  g_assert_cmpint(
      outq_push(q, OUTQ_INVENTORY, 140, "s/us", "140,a,1", 0, OUTQ_LIST_HEAD),
      ==, 0);
  g_assert_cmpint(
      outq_push(q, OUTQ_INVENTORY, 140, "s/us", "141,c,1", 0, OUTQ_LIST_CHUNK),
      ==, 0);
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "140,a,1\n141,c,1");
  assert_empty(q);
  outq_close(q);
  rm_dir(dir);
}

static void test_remove_tag(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "501,c8y_A", 7, 0);
  outq_push(q, OUTQ_OPSTATUS, 0, "s/uc/x", "1,x", 8, 0);
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "503,c8y_A", 7, 0);
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,a", 7, OUTQ_VOLATILE);
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,b", 0, 0);
  outq_batch b;
  g_assert_cmpint(outq_take(q, MAXP, &b), ==, 1); /* 501 in flight */
  g_assert_cmpstr(b.payload, ==, "501,c8y_A");
  g_assert_cmpuint(outq_remove_tag(q, 7), ==, 2);
  g_assert_cmpuint(outq_remove_tag(q, 7), ==, 0);
  g_assert_cmpuint(outq_remove_tag(q, 0), ==, 0);
  outq_stats st;
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.queued[OUTQ_OPSTATUS], ==, 1);
  g_assert_cmpuint(st.queued[OUTQ_EVENT], ==, 1);
  g_assert_cmpuint(st.inflight, ==, 1);
  outq_batch_free(&b);
  outq_close(q);
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  assert_take_ack(q, MAXP, OUTQ_OPSTATUS, "s/us", "501,c8y_A");
  assert_take_ack(q, MAXP, OUTQ_OPSTATUS, "s/uc/x", "1,x");
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,b");
  assert_empty(q);
  outq_close(q);
  rm_dir(dir);
}

static void test_compaction(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  /* An entry held in flight the whole time keeps the file from ever being
   * empty, so only a rewrite can bound it. */
  outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,keep,me,1", 0, 0);
  outq_batch hold;
  g_assert_cmpint(outq_take(q, MAXP, &hold), ==, 1);
  off_t max_seen = 0;
  for (int i = 0; i < 6000; i++) {
    char line[64];
    snprintf(line, sizeof line, "200,c8y_Temperature,T,%d", i);
    g_assert_cmpint(outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0), ==,
                    0);
    g_assert_cmpint(outq_push(q, OUTQ_EVENT, 0, "s/us", "400,a,b", 0, 0), ==,
                    0);
    char *s = take_ack(q, MAXP, OUTQ_EVENT, "s/us");
    g_free(s);
    s = take_ack(q, MAXP, OUTQ_MEASUREMENT, "s/us");
    g_assert_cmpstr(s, ==, line);
    g_free(s);
    outq_tick(q);
    off_t sz = file_size(dir, OUTQ_MEASUREMENT);
    if (sz > max_seen)
      max_seen = sz;
    /* A fully acked file is emptied right away. */
    g_assert_cmpint(file_size(dir, OUTQ_EVENT), ==, 0);
  }
  /* Uncompacted, 6000 cycles would leave ~550 KB. */
  g_assert_cmpint(max_seen, <, 200000);
  outq_batch_free(&hold);
  outq_close(q);
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  outq_stats st;
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.replayed, ==, 1);
  assert_take_ack(q, MAXP, OUTQ_MEASUREMENT, "s/us", "200,keep,me,1");
  outq_close(q);
  rm_dir(dir);
}

static void test_open_errors(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  outq_options o;
  outq_default_options(&o, dir);
  outq *q2 = NULL;
  char err[256] = "";
  /* A second process (or instance) must not append to the same files. */
  g_assert_cmpint(outq_open(&o, &q2, err, sizeof err), ==, C8Y_EEXIST);
  g_assert_null(q2);
  g_assert_nonnull(strstr(err, "in use by another process"));
  g_assert_nonnull(strstr(err, dir));
  outq_close(q);

  char *file = g_build_filename(dir, "plainfile", NULL);
  g_assert_true(g_file_set_contents(file, "x", 1, NULL));
  outq_default_options(&o, file);
  g_assert_cmpint(outq_open(&o, &q2, err, sizeof err), ==, C8Y_EIO);
  g_assert_nonnull(strstr(err, file));
  g_assert_nonnull(strstr(err, "Not a directory"));
  g_free(file);
  rm_dir(dir);
}

static void test_many(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 64u << 20);
  const int n = 100000;
  gint64 t0 = g_get_monotonic_time();
  push_numbered(q, "200,c8y_Temperature,T,", ".5,C", n);
  gint64 t1 = g_get_monotonic_time();
  size_t lines = 0, batches = 0;
  outq_batch b;
  while (outq_take(q, MAXP, &b) == 1) {
    g_assert_cmpuint(b.len, <=, MAXP);
    lines += b.nlines;
    batches++;
    g_assert_cmpint(outq_ack(q, b.id), ==, 0);
    outq_batch_free(&b);
    g_assert_cmpuint(batches, <=, (size_t)n);
  }
  gint64 t2 = g_get_monotonic_time();
  g_assert_cmpuint(lines, ==, (size_t)n);
  g_test_message("100k: push %.3f s, take+ack %.3f s, %zu batches",
                 (t1 - t0) / 1e6, (t2 - t1) / 1e6, batches);
  g_assert_cmpint(file_size(dir, OUTQ_MEASUREMENT), ==, 0);
  outq_close(q);
  rm_dir(dir);
}

/* A pusher queues n lines "<tid>,t<id>,<i>" of one class on "s/us". */
typedef struct {
  outq *q;
  outq_class cls;
  const char *tid;
  int id, n;
  GThread *th;
} pusher_arg;

static gpointer pusher(gpointer p) {
  pusher_arg *a = p;
  for (int i = 0; i < a->n; i++) {
    char line[32];
    snprintf(line, sizeof line, "%s,t%d,%d", a->tid, a->id, i);
    g_assert_cmpint(outq_push(a->q, a->cls, 0, "s/us", line, 0, 0), ==, 0);
  }
  return NULL;
}

#define NPUSHERS 4

static void pushers_start(pusher_arg *a, outq *q, outq_class cls,
                          const char *tid, int n) {
  for (int i = 0; i < NPUSHERS; i++) {
    a[i] = (pusher_arg){q, cls, tid, i, n, NULL};
    a[i].th = g_thread_new("pusher", pusher, &a[i]);
  }
}

static void pushers_join(pusher_arg *a) {
  for (int i = 0; i < NPUSHERS; i++)
    g_thread_join(a[i].th);
}

/* Concurrent pushers and one consumer: every line arrives exactly once.
 * dir: lines are read back from the files outside the lock while the
 * pushers append. */
static void threads_run(const char *dir) {
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  pusher_arg args[NPUSHERS];
  pushers_start(args, q, OUTQ_EVENT, "400", 2000);
  size_t got = 0;
  int next[NPUSHERS] = {0};
  for (int spins = 0; got < 8000 && spins < 10000000; spins++) {
    outq_batch b;
    if (outq_take(q, 200, &b) != 1)
      continue;
    gchar **lines = g_strsplit(b.payload, "\n", -1);
    for (gchar **l = lines; *l; l++) {
      int t, i;
      g_assert_cmpint(sscanf(*l, "400,t%d,%d", &t, &i), ==, 2);
      g_assert_cmpint(i, ==, next[t]); /* FIFO per producer */
      next[t]++;
      got++;
    }
    g_strfreev(lines);
    outq_ack(q, b.id);
    outq_batch_free(&b);
  }
  pushers_join(args);
  g_assert_cmpuint(got, ==, 8000);
  outq_close(q);
}

static void test_threads(void) {
  threads_run(NULL);
  char *dir = make_dir();
  threads_run(dir);
  rm_dir(dir);
}

/* A status closes what was sent before it on its topic: the lines a
 * handler queued before completing reach the platform first, whatever
 * their class. */
static void test_status_order(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,m,v,1", 0, 0);
  outq_push(q, OUTQ_INVENTORY, 0, "s/us", "115,pkg,1.0", 0, 0);
  outq_push(q, OUTQ_INVENTORY, 0, "s/us", "140,pkg,1.0,url", 0, 0);
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,c8y_Log,done", 0, 0);
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "503,c8y_SoftwareUpdate", 0, 0);
  /* Another device's status is not held up by the root's lines. */
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us/child", "503,c8y_Restart", 0, 0);
  /* Queued after the status: not ahead of it. */
  outq_push(q, OUTQ_ALARM, 0, "s/us", "301,c8y_Late,late", 0, 0);
  outq_close(q);
  /* The rule holds for replayed entries too. */
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  /* The older inventory lines go first, in one payload; the child's
   * status is not blocked, but the root's status waits for the ack. */
  outq_batch inv;
  g_assert_cmpint(outq_take(q, MAXP, &inv), ==, 1);
  g_assert_cmpint(inv.cls, ==, OUTQ_INVENTORY);
  g_assert_cmpstr(inv.payload, ==, "115,pkg,1.0\n140,pkg,1.0,url");
  assert_take_ack(q, MAXP, OUTQ_OPSTATUS, "s/us/child", "503,c8y_Restart");
  /* In flight: the root's status waits for it; unrelated classes and the
   * alarm queued after the status wait for their turn as usual. */
  outq_batch ev;
  g_assert_cmpint(outq_take(q, MAXP, &ev), ==, 1);
  g_assert_cmpint(ev.cls, ==, OUTQ_ALARM);
  g_assert_cmpstr(ev.payload, ==, "301,c8y_Late,late");
  outq_batch ev2;
  g_assert_cmpint(outq_take(q, MAXP, &ev2), ==, 1);
  g_assert_cmpint(ev2.cls, ==, OUTQ_EVENT);
  g_assert_cmpstr(ev2.payload, ==, "400,c8y_Log,done");
  /* Both older lines in flight: nothing may pass them but measurements. */
  outq_batch m;
  g_assert_cmpint(outq_take(q, MAXP, &m), ==, 1);
  g_assert_cmpint(m.cls, ==, OUTQ_MEASUREMENT);
  outq_batch none;
  g_assert_cmpint(outq_take(q, MAXP, &none), ==, 0);
  g_assert_cmpint(outq_ack(q, inv.id), ==, 0);
  g_assert_cmpint(outq_take(q, MAXP, &none), ==, 0);
  /* A lost batch comes back ahead of the status. */
  g_assert_cmpint(outq_nack(q, ev2.id), ==, 0);
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,c8y_Log,done");
  assert_take_ack(q, MAXP, OUTQ_OPSTATUS, "s/us", "503,c8y_SoftwareUpdate");
  g_assert_cmpint(outq_ack(q, ev.id), ==, 0);
  g_assert_cmpint(outq_ack(q, m.id), ==, 0);
  outq_batch_free(&inv);
  outq_batch_free(&ev);
  outq_batch_free(&ev2);
  outq_batch_free(&m);
  assert_empty(q);

  /* Statuses are packed only up to a line that must go before the next. */
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "501,c8y_A", 0, 0);
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "503,c8y_A", 0, 0);
  outq_push(q, OUTQ_INVENTORY, 0, "s/us", "115,b,2", 0, 0);
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "501,c8y_B", 0, 0);
  outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "503,c8y_B", 0, 0);
  assert_take_ack(q, MAXP, OUTQ_OPSTATUS, "s/us", "501,c8y_A\n503,c8y_A");
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "115,b,2");
  assert_take_ack(q, MAXP, OUTQ_OPSTATUS, "s/us", "501,c8y_B\n503,c8y_B");
  assert_empty(q);
  outq_close(q);
  rm_dir(dir);
}

/* Spins until the monotonic clock reaches ms (bounded: callers pass a time
 * at most a period ahead). */
static void wait_mono(long long ms) {
  while (clock_mono_ms() < ms)
    sched_yield();
}

#define DEADLINE_FSYNC_MS 500

static void test_next_deadline(void) {
  /* Memory only: an fsync period never makes work for outq_tick. */
  outq *q = open_q(NULL, DEADLINE_FSYNC_MS, 0);
  g_assert_cmpint(outq_next_deadline(q), ==, -1);
  outq_push(q, OUTQ_EVENT, 0, "s/us", "400,e,mem", 0, 0);
  g_assert_cmpint(outq_next_deadline(q), ==, -1);
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,e,mem");
  g_assert_cmpint(outq_next_deadline(q), ==, -1);
  outq_close(q);

  char *dir = make_dir();
  long long opened = clock_mono_ms();
  q = open_q(dir, DEADLINE_FSYNC_MS, 0);
  g_assert_cmpint(outq_next_deadline(q), ==, -1);
  /* A push that finds the last fsync a period old syncs at once and leaves
   * nothing due; the next one is due a period after that fsync. */
  long long due = -1;
  int pushed = 0;
  while (due < 0 && pushed < 10) {
    char line[32];
    snprintf(line, sizeof line, "400,e,%d", pushed++);
    g_assert_cmpint(outq_push(q, OUTQ_EVENT, 0, "s/us", line, 0, 0), ==, 0);
    due = outq_next_deadline(q);
  }
  g_assert_cmpint(due, >=, opened + DEADLINE_FSYNC_MS);
  g_assert_cmpint(due, <=, clock_mono_ms() + DEADLINE_FSYNC_MS);
  outq_stats st;
  outq_get_stats(q, &st);
  uint64_t fsyncs = st.fsyncs;
  wait_mono(due);
  long long ticked = clock_mono_ms();
  outq_tick(q);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.fsyncs, >, fsyncs);
  g_assert_cmpint(outq_next_deadline(q), ==, -1);

  /* Drained: the emptied file is truncated, and that too is synced by a
   * tick a period later; then nothing is due. */
  for (int i = 0; i < pushed; i++)
    g_free(take_ack(q, 1, OUTQ_EVENT, "s/us"));
  assert_empty(q);
  g_assert_cmpint(file_size(dir, OUTQ_EVENT), ==, 0);
  due = outq_next_deadline(q);
  g_assert_cmpint(due, >=, ticked + DEADLINE_FSYNC_MS);
  g_assert_cmpint(due, <=, clock_mono_ms() + DEADLINE_FSYNC_MS);
  wait_mono(due);
  outq_tick(q);
  g_assert_cmpint(outq_next_deadline(q), ==, -1);
  outq_close(q);
  rm_dir(dir);
}

/* Lines are read back from the files: damage after the write is detected
 * by the CRC when sending, logged, and costs only that line. */
static void test_readback_crc(void) {
  if (g_test_subprocess()) {
    char *dir = make_dir();
    outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
    push_mv(q, 5);
    poke(dir, OUTQ_MEASUREMENT, DAMAGE_OFF, "#", 1);
    assert_take_ack(q, MAXP, OUTQ_MEASUREMENT, "s/us", DAMAGED_FIVE);
    assert_empty(q);
    outq_close(q);
    rm_dir(dir);
    return;
  }
  g_test_trap_subprocess(NULL, 0, 0);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr("*queue-4.log: the record at offset 36 is damaged "
                            "on disk*");
}

/* Acks are not fsync'ed one by one; pushers share fsyncs (group commit)
 * and every accepted line is durable. */
static void test_group_commit(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_ALWAYS, 0);
  outq_stats st;
  outq_get_stats(q, &st);
  uint64_t f0 = st.fsyncs;
  g_assert_cmpint(outq_push(q, OUTQ_OPSTATUS, 0, "s/us", "501,c8y_A", 0, 0), ==,
                  0);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.fsyncs, ==, f0 + 1);
  assert_take_ack(q, MAXP, OUTQ_OPSTATUS, "s/us", "501,c8y_A");
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.fsyncs, ==, f0 + 1); /* the ack was not fsync'ed */

  pusher_arg args[NPUSHERS];
  pushers_start(args, q, OUTQ_ALARM, "301", 100);
  /* Lines are taken and acked while their pushers still wait for the
   * fsync: each one arrives once, and the queue's books stay right. */
  int got = 0;
  for (long spins = 0; got < 400 && spins < 100000000; spins++) {
    outq_batch b;
    if (outq_take(q, MAXP, &b) != 1) {
      g_thread_yield();
      continue;
    }
    got += (int)b.nlines;
    g_assert_cmpint(outq_ack(q, b.id), ==, 0);
    outq_batch_free(&b);
  }
  pushers_join(args);
  g_assert_cmpint(got, ==, 400);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.topics, ==, 0);
  g_assert_cmpuint(st.bytes, ==, 0);
  g_assert_cmpint(outq_push(q, OUTQ_ALARM, 0, "s/us", "301,again", 0, 0), ==,
                  0);
  assert_take_ack(q, MAXP, OUTQ_ALARM, "s/us", "301,again");
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.fsyncs - f0 - 1, <=, 400);
  g_test_message("400 concurrent durable pushes: %" G_GUINT64_FORMAT " fsyncs",
                 st.fsyncs - f0 - 1);
  /* Durable before outq_push returned: a child killed right after its
   * pushes (no close) loses nothing. */
  outq_close(q);
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    outq *cq = open_q(dir, OUTQ_FSYNC_ALWAYS, 0);
    pusher_arg a = {cq, OUTQ_ALARM, "301", 9, 100, NULL};
    pusher(&a);
    raise(SIGKILL);
    _exit(1);
  }
  int status;
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  q = open_q(dir, OUTQ_FSYNC_NEVER, 0);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.queued[OUTQ_ALARM], ==, 100);
  outq_close(q);
  rm_dir(dir);
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, res = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &res) != 2)
      res = 0;
    fclose(f);
  }
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* A backlog costs ~12 bytes of RAM per line, not the line: 200k lines of
 * 40 bytes held in memory would take > 12 MiB. After the drain the memory
 * is handed back. */
static void test_backlog_memory(void) {
  /* Sanitizers and valgrind bring their own allocators and quarantines:
   * RSS says nothing about the queue there. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  g_test_skip("RSS is meaningless under a sanitizer");
  return;
#endif
  const char *pre = getenv("LD_PRELOAD");
  if (pre && strstr(pre, "vgpreload")) {
    g_test_skip("RSS is meaningless under valgrind");
    return;
  }
  char *dir = make_dir();
  outq *q = open_q(dir, OUTQ_FSYNC_NEVER, 256u << 20);
  const int n = 200000;
  long before = rss_kib();
  push_numbered(q, "200,c8y_Temperature,T,", ".5,C", n);
  long full = rss_kib();
  g_test_message("200k lines: RSS +%ld KiB", full - before);
  g_assert_cmpint(full - before, <, 6 * 1024);
  outq_close(q);
  /* Replay does not load the lines either. */
  before = rss_kib();
  q = open_q(dir, OUTQ_FSYNC_NEVER, 256u << 20);
  outq_stats st;
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, (size_t)n);
  long replayed = rss_kib();
  g_test_message("200k lines replayed: RSS +%ld KiB", replayed - before);
  g_assert_cmpint(replayed - before, <, 6 * 1024);
  int got = 0;
  outq_batch b;
  while (got < n && outq_take(q, MAXP, &b) == 1) {
    gchar **lines = g_strsplit(b.payload, "\n", -1);
    for (gchar **l = lines; *l; l++) {
      int v;
      g_assert_cmpint(sscanf(*l, "200,c8y_Temperature,T,%d.5,C", &v), ==, 1);
      g_assert_cmpint(v, ==, got);
      got++;
    }
    g_strfreev(lines);
    outq_ack(q, b.id);
    outq_batch_free(&b);
  }
  g_assert_cmpint(got, ==, n);
  long drained = rss_kib();
  g_test_message("drained: RSS %+ld KiB against before the replay",
                 drained - before);
  g_assert_cmpint(drained - before, <, 1024);
  outq_close(q);
  rm_dir(dir);
}

/* Drops at the bound are logged with counts per class, rate-limited: the
 * first at once, the rest summed up (here: at close). */
static void test_drop_log(void) {
  if (g_test_subprocess()) {
    outq *q = open_q(NULL, OUTQ_FSYNC_NEVER, 1000);
    use_up_seqs(q, 130); /* 26-byte measurements, 27-byte events */
    for (int i = 0; i < 100; i++) {
      char line[32];
      snprintf(line, sizeof line, "200,c8y_T,T,%04d", i);
      g_assert_cmpint(outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0), ==,
                      0);
    }
    for (int i = 0; i < 60; i++)
      g_assert_cmpint(
          outq_push(q, OUTQ_EVENT, 0, "s/us", "400,c8y_E,eeeeeee", 0, 0), ==,
          0);
    outq_stats st;
    outq_get_stats(q, &st);
    g_assert_cmpuint(st.dropped[OUTQ_MEASUREMENT], ==, 100);
    g_assert_cmpuint(st.dropped[OUTQ_EVENT], ==, 23);
    outq_close(q);
    return;
  }
  g_test_trap_subprocess(NULL, 0, 0);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr(
      "*queue full (max_bytes): dropped 1 measurements (1 since the start)\n"
      "*queue full (max_bytes): dropped 23 events, 99 measurements (123 since "
      "the start)\n*");
}

/* /proc files take one write(), not a temp file and a rename. */
static int write_proc(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* Mounts a small tmpfs on dir in a private mount namespace (as root, or
 * as root of a new user namespace); NULL or why not. */
static const char *mount_small_fs(const char *dir, const char *size) {
  static char why[256];
  if (unshare(CLONE_NEWNS) != 0) {
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      snprintf(why, sizeof why, "unshare: %s", g_strerror(errno));
      return why;
    }
    char map[64];
    snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
    write_proc("/proc/self/setgroups", "deny");
    if (write_proc("/proc/self/uid_map", map) < 0) {
      snprintf(why, sizeof why, "uid_map: %s", g_strerror(errno));
      return why;
    }
    snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
    if (write_proc("/proc/self/gid_map", map) < 0) {
      snprintf(why, sizeof why, "gid_map: %s", g_strerror(errno));
      return why;
    }
  }
  if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    snprintf(why, sizeof why, "private mounts: %s", g_strerror(errno));
    return why;
  }
  char opts[64];
  snprintf(opts, sizeof opts, "size=%s,mode=0700", size);
  if (mount("tmpfs", dir, "tmpfs", 0, opts) != 0) {
    snprintf(why, sizeof why, "mount tmpfs: %s", g_strerror(errno));
    return why;
  }
  return NULL;
}

/* Writes a file until the file system is full; returns its size. */
static off_t fill_fs(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  g_assert_cmpint(fd, >=, 0);
  static char chunk[4096];
  memset(chunk, 'f', sizeof chunk);
  off_t total = 0;
  for (int i = 0; i < 1 << 20; i++) {
    ssize_t n = write(fd, chunk, sizeof chunk);
    if (n <= 0)
      break;
    total += n;
  }
  close(fd);
  return total;
}

/* A full disk: measurements, then events, then inventory make room; a
 * status is never lost: held in memory, sent, and written once space is
 * back; the recovery is logged. */
static void disk_full_child(int report) {
  {
    char *dir = make_dir();
    const char *why = mount_small_fs(dir, "2m");
    if (why) {
      if (write(report, why, strlen(why)) < 0)
        _exit(1);
      g_rmdir(dir);
      _exit(77);
    }
    char *qdir = g_build_filename(dir, "q", NULL);
    outq *q;
    outq_options o;
    outq_default_options(&o, qdir);
    o.max_bytes = 64u << 20;
    char err[256];
    g_assert_cmpint(outq_open(&o, &q, err, sizeof err), ==, 0);
    for (int i = 0; i < 3000; i++) {
      char line[64];
      snprintf(line, sizeof line, "200,c8y_Temperature,T,%d", i);
      g_assert_cmpint(outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0), ==,
                      0);
    }
    for (int i = 0; i < 300; i++) {
      char line[64];
      snprintf(line, sizeof line, "400,c8y_Ev,event %d", i);
      g_assert_cmpint(outq_push(q, OUTQ_EVENT, 0, "s/us/ev", line, 0, 0), ==,
                      0);
      snprintf(line, sizeof line, "101,child%d,name,c8y_Child", i);
      g_assert_cmpint(outq_push(q, OUTQ_INVENTORY, 0, "s/us/inv", line, 0, 0),
                      ==, 0);
    }
    char *filler = g_build_filename(dir, "filler", NULL);
    g_assert_cmpint(fill_fs(filler), >, 0);

    /* Events take the room of the oldest measurements (the files' last
     * pages may still hold a few). */
    outq_stats st;
    int nev = 0;
    do {
      g_assert_cmpint(
          outq_push(q, OUTQ_EVENT, 0, "s/us/ev", "400,c8y_Ev,after full", 0, 0),
          ==, 0);
      outq_get_stats(q, &st);
    } while (!st.disk_full && ++nev < 1000);
    g_assert_cmpuint(st.disk_full, ==, 1);
    g_assert_cmpuint(st.dropped_disk_full[OUTQ_MEASUREMENT], >, 0);
    g_assert_cmpuint(st.dropped_disk_full[OUTQ_EVENT], ==, 0);
    g_assert_cmpuint(st.dropped_disk_full[OUTQ_INVENTORY], ==, 0);

    /* Statuses take everything else, then the reserve, then are held. */
    int n = 0;
    for (; n < 40000; n++) {
      char line[160];
      snprintf(line, sizeof line,
               "503,c8y_Command,status %06d with some result text to fill the "
               "disk faster than short lines would",
               n);
      g_assert_cmpint(outq_push(q, OUTQ_OPSTATUS, 0, "s/us", line, 0, 0), ==,
                      0);
      outq_get_stats(q, &st);
      if (st.held >= 50)
        break;
    }
    n++;
    g_assert_cmpuint(st.held, ==, 50);
    g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, 0);
    g_assert_cmpuint(st.queued[OUTQ_EVENT], ==, 0);
    g_assert_cmpuint(st.queued[OUTQ_INVENTORY], ==, 0);
    g_assert_cmpuint(st.dropped_disk_full[OUTQ_INVENTORY], ==, 300);
    g_assert_cmpuint(st.queued[OUTQ_OPSTATUS], ==, (size_t)n);
    /* An alarm is held too; lower classes are refused. */
    g_assert_cmpint(outq_push(q, OUTQ_ALARM, 0, "s/us", "301,c8y_A,a", 0, 0),
                    ==, 0);
    g_assert_cmpint(
        outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,m,v,1", 0, 0), ==,
        C8Y_EAGAIN);
    /* Held lines are sent like any other; the first batch is in flight
     * (not acked) when space comes back. */
    outq_batch b;
    g_assert_cmpint(outq_take(q, MAXP, &b), ==, 1);
    g_assert_cmpint(b.cls, ==, OUTQ_OPSTATUS);
    size_t first = b.nlines;
    g_assert_cmpint(unlink(filler), ==, 0);
    outq_tick(q);
    outq_get_stats(q, &st);
    g_assert_cmpuint(st.held, ==, 0);
    outq_batch_free(&b);
    outq_close(q);

    /* Nothing accepted was lost, in order. */
    g_assert_cmpint(outq_open(&o, &q, err, sizeof err), ==, 0);
    outq_get_stats(q, &st);
    g_assert_cmpuint(st.queued[OUTQ_OPSTATUS], ==, (size_t)n);
    g_assert_cmpuint(st.queued[OUTQ_ALARM], ==, 1);
    int next = 0;
    while (outq_take(q, MAXP, &b) == 1 && b.cls == OUTQ_OPSTATUS) {
      gchar **lines = g_strsplit(b.payload, "\n", -1);
      for (gchar **l = lines; *l; l++) {
        int v;
        g_assert_cmpint(sscanf(*l, "503,c8y_Command,status %d", &v), ==, 1);
        g_assert_cmpint(v, ==, next);
        next++;
      }
      g_strfreev(lines);
      outq_ack(q, b.id);
      outq_batch_free(&b);
    }
    outq_batch_free(&b);
    g_assert_cmpint(next, ==, n);
    g_assert_cmpuint(first, >, 0);
    outq_close(q);
    umount2(dir, MNT_DETACH);
    g_free(filler);
    g_free(qdir);
    g_rmdir(dir);
    g_free(dir);
    _exit(0);
  }
}

static void test_disk_full(void) {
  /* A child of our own: unsharing namespaces needs a single thread, and the
   * mount must vanish with it. */
  int p[2];
  g_assert_cmpint(pipe(p), ==, 0);
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    close(p[0]);
    disk_full_child(p[1]);
  }
  close(p[1]);
  char why[256] = "";
  ssize_t n = read(p[0], why, sizeof why - 1);
  why[n > 0 ? n : 0] = '\0';
  close(p[0]);
  int status;
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
    char *msg = g_strdup_printf("cannot mount a small file system: %s", why);
    g_test_skip(msg);
    g_free(msg);
    return;
  }
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

/* Copies the format 1 fixture (tests/unit/data/format1, written by the
 * agent before format 2) into a fresh queue directory. */
static char *format1_dir(void) {
  char *dir = make_dir();
  for (int c = 0; c < OUTQ_NCLASSES; c++) {
    char name[32];
    snprintf(name, sizeof name, "queue-%d.log", c);
    gchar *from =
        g_test_build_filename(G_TEST_DIST, "data", "format1", name, NULL);
    gchar *data = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(from, &data, &len, NULL));
    char *to = queue_path(dir, c);
    g_assert_true(g_file_set_contents(to, data, (gssize)len, NULL));
    g_free(to);
    g_free(data);
    g_free(from);
  }
  return dir;
}

/* An agent upgraded over a state dir of one from before format 2 sends what
 * that one queued: lines, topics, tags and replace keys of format 1 records,
 * minus what its tombstones acked; new lines go next to them in format 2,
 * and both replay again. */
static void test_compat_format1(void) {
  char *dir = format1_dir();
  outq *q = open_q(dir, 1000, 0);
  outq_stats st;
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.replayed, ==, 9);
  g_assert_cmpuint(st.queued[OUTQ_MEASUREMENT], ==, 3); /* 1, 2 were acked */
  g_assert_cmpint(
      outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", "200,c8y_T,T,6", 0, 0), ==, 0);
  g_assert_cmpint(
      outq_push(q, OUTQ_EVENT, 0, "s/us/child1", "400,c8y_E,new", 0, 0), ==, 0);
  outq_close(q);
  q = open_q(dir, 1000, 0);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.replayed, ==, 11);
  /* A key stored in format 1 still names what a new line supersedes. */
  g_assert_cmpint(push_inv(q, "s/us", "117,31", 117), ==, 0);
  /* The usual order: the status waits for the older event and inventory
   * lines of its topic. */
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us", "400,c8y_E,root event");
  assert_take_ack(q, MAXP, OUTQ_INVENTORY, "s/us", "114,c8y_Restart\n117,31");
  outq_batch b;
  g_assert_cmpint(outq_take(q, MAXP, &b), ==, 1);
  g_assert_cmpstr(b.payload, ==, "503,c8y_Restart");
  g_assert_cmpuint(b.ntags, ==, 1);
  g_assert_cmpuint(b.tags[0], ==, 77);
  g_assert_cmpint(outq_ack(q, b.id), ==, 0);
  outq_batch_free(&b);
  assert_take_ack(q, MAXP, OUTQ_ALARM, "s/us/child1", "301,c8y_A,x");
  assert_take_ack(q, MAXP, OUTQ_EVENT, "s/us/child1",
                  "400,c8y_E,child event\n400,c8y_E,new");
  assert_take_ack(q, MAXP, OUTQ_MEASUREMENT, "s/us",
                  "200,c8y_T,T,3\n200,c8y_T,T,4\n200,c8y_T,T,5\n"
                  "200,c8y_T,T,6");
  assert_empty(q);
  outq_close(q);
  q = open_q(dir, 1000, 0);
  assert_empty(q);
  outq_close(q);
  rm_dir(dir);
}

/* Bytes written per queued line: a ~30-byte measurement costs its line and
 * an 11-byte record header in one file append; acks of a file that empties
 * cost nothing (it is truncated), those of a backlog a few bytes per batch. */
static void test_bytes_per_line(void) {
  char *dir = make_dir();
  outq *q = open_q(dir, 2000, 0);
  use_up_seqs(q, 20000); /* 3-byte sequence numbers, as in a long run */
  const char *line = "200,c8y_Temperature,T,21.5,C"; /* 28 bytes */
  outq_stats st0, st;
  outq_get_stats(q, &st0);
  /* Offline: a backlog of 1000 lines, then drained. */
  for (int i = 0; i < 1000; i++)
    g_assert_cmpint(outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0), ==,
                    0);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.written - st0.written, ==, 1000 * (6 + 1 + 3 + 1 + 28));
  outq_batch b;
  while (outq_take(q, MAXP, &b) == 1) {
    outq_ack(q, b.id);
    outq_batch_free(&b);
  }
  outq_tick(q);
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.written - st0.written, <=, 1000 * 39 + 100);
  g_assert_cmpint(file_size(dir, OUTQ_MEASUREMENT), ==, 0);
  /* Online: one line at a time, each sent before the next. */
  outq_get_stats(q, &st0);
  for (int i = 0; i < 100; i++) {
    g_assert_cmpint(outq_push(q, OUTQ_MEASUREMENT, 0, "s/us", line, 0, 0), ==,
                    0);
    g_assert_cmpint(outq_take(q, MAXP, &b), ==, 1);
    outq_ack(q, b.id);
    outq_batch_free(&b);
  }
  outq_get_stats(q, &st);
  g_assert_cmpuint(st.written - st0.written, ==, 100 * 39);
  outq_close(q);
  rm_dir(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/outq/priority", test_priority);
  g_test_add_func("/outq/fifo_packing", test_fifo_and_packing);
  g_test_add_func("/outq/line_limit", test_line_limit);
  g_test_add_func("/outq/ack_nack", test_ack_nack);
  g_test_add_func("/outq/persist/reopen", test_persist_reopen);
  g_test_add_func("/outq/persist/volatile", test_persist_volatile);
  g_test_add_func("/outq/persist/kill9", test_kill9);
  g_test_add_func("/outq/persist/truncated_tail", test_truncated_tail);
  g_test_add_func("/outq/persist/corrupt_middle", test_corrupt_middle);
  g_test_add_func("/outq/persist/garbage_file", test_garbage_file);
  g_test_add_func("/outq/drop_policy", test_drop_policy);
  g_test_add_func("/outq/coalesce", test_coalesce);
  g_test_add_func("/outq/replace_keys", test_replace_keys);
  g_test_add_func("/outq/remove_tag", test_remove_tag);
  g_test_add_func("/outq/take_tagged", test_take_tagged);
  g_test_add_func("/outq/list_replaced_whole", test_list_replaced_whole);
  g_test_add_func("/outq/compaction", test_compaction);
  g_test_add_func("/outq/open_errors", test_open_errors);
  g_test_add_func("/outq/many", test_many);
  g_test_add_func("/outq/threads", test_threads);
  g_test_add_func("/outq/status_order", test_status_order);
  g_test_add_func("/outq/persist/readback_crc", test_readback_crc);
  g_test_add_func("/outq/persist/group_commit", test_group_commit);
  g_test_add_func("/outq/persist/next_deadline", test_next_deadline);
  g_test_add_func("/outq/memory/backlog", test_backlog_memory);
  g_test_add_func("/outq/persist/disk_full", test_disk_full);
  g_test_add_func("/outq/drop_log", test_drop_log);
  g_test_add_func("/outq/persist/punched", test_punched);
  g_test_add_func("/outq/compat/format1", test_compat_format1);
  g_test_add_func("/outq/bytes_per_line", test_bytes_per_line);
  return g_test_run();
}
