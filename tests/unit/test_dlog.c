/* dlog: appends, group commit and rewrites of one durable log file, with
 * the owner's mutex released while the disk is waited for. */
#include "dlog.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct fx {
  char *dir;
  int dirfd;
  pthread_mutex_t mu;
  dlog *d;
} fx;

static void fx_setup(fx *f, gconstpointer data) {
  (void)data;
  f->dir = g_dir_make_tmp("c8y-dlog-XXXXXX", NULL);
  f->dirfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint(f->dirfd, >=, 0);
  pthread_mutex_init(&f->mu, NULL);
  char err[256];
  g_assert_cmpint(
      dlog_open(f->dirfd, f->dir, "x.log", &f->mu, &f->d, err, sizeof err), ==,
      0);
}

static void fx_teardown(fx *f, gconstpointer data) {
  (void)data;
  dlog_close(f->d);
  close(f->dirfd);
  pthread_mutex_destroy(&f->mu);
  GDir *d = g_dir_open(f->dir, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name(d))) {
    char *p = g_build_filename(f->dir, name, NULL);
    g_unlink(p);
    g_free(p);
  }
  g_dir_close(d);
  g_rmdir(f->dir);
  g_free(f->dir);
}

static char *contents(fx *f) {
  char *p = g_build_filename(f->dir, "x.log", NULL);
  gchar *text = NULL;
  g_assert_true(g_file_get_contents(p, &text, NULL, NULL));
  g_free(p);
  return text;
}

static void append(fx *f, const char *s) {
  pthread_mutex_lock(&f->mu);
  g_assert_cmpint(dlog_append(f->d, s, strlen(s)), ==, 0);
  pthread_mutex_unlock(&f->mu);
}

#define WRITERS 4
#define PER_WRITER 200

static void *writer(void *arg) {
  fx *f = arg;
  for (int i = 0; i < PER_WRITER; i++) {
    pthread_mutex_lock(&f->mu);
    g_assert_cmpint(dlog_append(f->d, "line\n", 5), ==, 0);
    uint64_t gen = dlog_gen(f->d);
    g_assert_cmpint(dlog_sync(f->d, gen), ==, 0);
    g_assert_false(dlog_gen(f->d) < gen);
    pthread_mutex_unlock(&f->mu);
  }
  return NULL;
}

/* Every writer waits for its own line to be durable; together they never
 * need more fdatasyncs than lines, and every line is in the file. */
static void test_group_commit(fx *f, gconstpointer data) {
  (void)data;
  pthread_t t[WRITERS];
  for (int i = 0; i < WRITERS; i++)
    pthread_create(&t[i], NULL, writer, f);
  for (int i = 0; i < WRITERS; i++)
    pthread_join(t[i], NULL);
  dlog_stats st;
  dlog_get_stats(f->d, &st);
  g_assert_cmpuint(st.written, ==, WRITERS * PER_WRITER * 5);
  g_assert_cmpuint(st.fsyncs, <=, WRITERS * PER_WRITER);
  g_test_message("%d durable appends, %llu fdatasyncs", WRITERS * PER_WRITER,
                 (unsigned long long)st.fsyncs);
  pthread_mutex_lock(&f->mu);
  g_assert_false(dlog_dirty(f->d));
  pthread_mutex_unlock(&f->mu);
  char *text = contents(f);
  g_assert_cmpuint(strlen(text), ==, WRITERS * PER_WRITER * 5);
  g_free(text);
}

typedef struct swap_seen {
  uint64_t where_b, where_tail;
  int calls;
} swap_seen;

static void on_swap(void *ctx, const dlog_map *m) {
  swap_seen *s = ctx;
  s->calls++;
  s->where_b = dlog_map_offset(m, 4);     /* "bbb\n" at 4 in the old file */
  s->where_tail = dlog_map_offset(m, 12); /* the first byte after it */
}

/* A rewrite keeps the given ranges after the head; what is appended after
 * it started is carried over; the owner learns the new offsets at the
 * swap, and dropped bytes map to UINT64_MAX. */
static void test_rewrite_keeps_and_maps(fx *f, gconstpointer data) {
  (void)data;
  append(f, "aaa\nbbb\nccc\n");
  dlog_range keep[] = {{4, 4}};
  swap_seen seen = {0};
  pthread_mutex_lock(&f->mu);
  g_assert_cmpint(dlog_rewrite(f->d, "HEAD\n", 5, keep, 1, on_swap, &seen), ==,
                  0);
  g_assert_cmpuint(dlog_size(f->d), ==, 9);
  pthread_mutex_unlock(&f->mu);
  g_assert_cmpint(seen.calls, ==, 1);
  g_assert_cmpuint(seen.where_b, ==, 5);
  g_assert_cmpuint(seen.where_tail, ==, 9);
  append(f, "ddd\n");
  char *text = contents(f);
  g_assert_cmpstr(text, ==, "HEAD\nbbb\nddd\n");
  g_free(text);
  dlog_stats st;
  dlog_get_stats(f->d, &st);
  g_assert_cmpuint(st.rewritten, ==, 9);
  /* The new file is durable and in place: nothing is dirty. */
  pthread_mutex_lock(&f->mu);
  g_assert_cmpint(dlog_sync(f->d, dlog_gen(f->d)), ==, 0);
  pthread_mutex_unlock(&f->mu);
}

typedef struct feeder {
  fx *f;
  atomic_int n;
  atomic_bool stop;
} feeder;

static void *feed(void *arg) {
  feeder *fd = arg;
  for (int i = 0; !atomic_load(&fd->stop) && i < 200000; i++) {
    char line[32];
    snprintf(line, sizeof line, "t%07d\n", i);
    pthread_mutex_lock(&fd->f->mu);
    g_assert_cmpint(dlog_append(fd->f->d, line, 9), ==, 0);
    if (i % 64 == 0)
      dlog_sync(fd->f->d, dlog_gen(fd->f->d));
    pthread_mutex_unlock(&fd->f->mu);
    atomic_store(&fd->n, i + 1);
  }
  return NULL;
}

/* Appends from another thread while the rewrite copies (without the mutex)
 * all end up in the new file, in order, after the kept bytes. */
static void test_rewrite_with_appends(fx *f, gconstpointer data) {
  (void)data;
  GString *old = g_string_new(NULL);
  for (int i = 0; i < 20000; i++)
    g_string_append_printf(old, "o%07d\n", i);
  append(f, old->str);
  feeder fd = {.f = f};
  pthread_t t;
  pthread_create(&t, NULL, feed, &fd);
  int rc = -1;
  for (int attempt = 0; attempt < 100 && rc != 0; attempt++) {
    pthread_mutex_lock(&f->mu);
    /* Lines 1000..1999 of the old ones, and the new ones appended before
     * this attempt (a rewrite that gave up left them in the old file). */
    dlog_range keep[] = {{9 * 1000, 9 * 1000},
                         {old->len, dlog_size(f->d) - old->len}};
    rc = dlog_rewrite(f->d, "", 0, keep, keep[1].len ? 2 : 1, NULL, NULL);
    if (rc != 0)
      g_test_message("attempt %d: %s", attempt, g_strerror(errno));
    pthread_mutex_unlock(&f->mu);
  }
  atomic_store(&fd.stop, true);
  pthread_join(t, NULL);
  g_assert_cmpint(rc, ==, 0);
  char *text = contents(f);
  GString *want = g_string_new(NULL);
  for (int i = 1000; i < 2000; i++)
    g_string_append_printf(want, "o%07d\n", i);
  for (int i = 0; i < atomic_load(&fd.n); i++)
    g_string_append_printf(want, "t%07d\n", i);
  g_assert_cmpuint(strlen(text), ==, want->len);
  g_assert_true(strcmp(text, want->str) == 0);
  g_free(text);
  g_string_free(want, TRUE);
  g_string_free(old, TRUE);
}

typedef struct rewriter {
  fx *f;
  int rc;
} rewriter;

static void *rewrite_thread(void *arg) {
  rewriter *r = arg;
  pthread_mutex_lock(&r->f->mu);
  r->rc = dlog_rewrite(r->f->d, "new\n", 4, NULL, 0, NULL, NULL);
  pthread_mutex_unlock(&r->f->mu);
  return NULL;
}

/* A truncation while a rewrite runs (here: while it waits for a reader to
 * swap) wins: the rewrite gives up with EAGAIN and the file is what the
 * truncation and later appends made it. */
static void test_rewrite_gives_way_to_truncation(fx *f, gconstpointer data) {
  (void)data;
  append(f, "aaa\n");
  pthread_mutex_lock(&f->mu);
  dlog_read_begin(f->d);
  pthread_mutex_unlock(&f->mu);
  rewriter r = {f, 0};
  pthread_t t;
  pthread_create(&t, NULL, rewrite_thread, &r);
  pthread_mutex_lock(&f->mu);
  /* Until the rewrite runs (bounded: it waits for the reader at the end). */
  for (int i = 0; i < 10000 && !dlog_rewriting(f->d); i++) {
    pthread_mutex_unlock(&f->mu);
    g_usleep(1000);
    pthread_mutex_lock(&f->mu);
  }
  g_assert_true(dlog_rewriting(f->d));
  g_assert_cmpint(dlog_truncate(f->d), ==, 0);
  g_assert_cmpint(dlog_append(f->d, "bbb\n", 4), ==, 0);
  dlog_read_end(f->d);
  pthread_mutex_unlock(&f->mu);
  pthread_join(t, NULL);
  g_assert_cmpint(r.rc, ==, -1);
  char *text = contents(f);
  g_assert_cmpstr(text, ==, "bbb\n");
  g_free(text);
}

/* A reader keeps the descriptor it got: the swap waits for it, and what
 * it reads is the file it started on. */
static void test_reader_holds_swap(fx *f, gconstpointer data) {
  (void)data;
  append(f, "old\n");
  pthread_mutex_lock(&f->mu);
  int fd = dlog_read_begin(f->d);
  pthread_mutex_unlock(&f->mu);
  rewriter r = {f, -1};
  pthread_t t;
  pthread_create(&t, NULL, rewrite_thread, &r);
  char buf[8] = "";
  g_assert_cmpint(pread(fd, buf, 4, 0), ==, 4);
  g_assert_cmpstr(buf, ==, "old\n");
  pthread_mutex_lock(&f->mu);
  dlog_read_end(f->d);
  pthread_mutex_unlock(&f->mu);
  pthread_join(t, NULL);
  g_assert_cmpint(r.rc, ==, 0);
  char *text = contents(f);
  g_assert_cmpstr(text, ==, "new\n");
  g_free(text);
}

#define ADD(path, fn) g_test_add(path, fx, NULL, fx_setup, fn, fx_teardown)

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  ADD("/dlog/group-commit", test_group_commit);
  ADD("/dlog/rewrite/keeps-and-maps", test_rewrite_keeps_and_maps);
  ADD("/dlog/rewrite/with-appends", test_rewrite_with_appends);
  ADD("/dlog/rewrite/gives-way-to-truncation",
      test_rewrite_gives_way_to_truncation);
  ADD("/dlog/rewrite/reader-holds-swap", test_reader_holds_swap);
  return g_test_run();
}
