/* journal: what a restarted agent learns about operations that were
 * executing, including after torn writes. */
#include "journal.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

typedef struct {
  char *dir;
  char *path;
} fx;

static void fx_setup(fx *f, gconstpointer d) {
  f->dir = g_dir_make_tmp("c8y-journal-XXXXXX", NULL);
  f->path = g_build_filename(f->dir, "operations.journal", NULL);
  char *boot = g_build_filename(f->dir, "boot", NULL);
  g_assert_true(g_file_set_contents(boot, "boot-A\n", -1, NULL));
  g_setenv("C8Y_BOOT_ID_FILE", boot, TRUE);
  g_free(boot);
}

static void fx_teardown(fx *f, gconstpointer d) {
  GDir *dir = g_dir_open(f->dir, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name(dir))) {
    char *p = g_build_filename(f->dir, name, NULL);
    g_unlink(p);
    g_free(p);
  }
  g_dir_close(dir);
  g_rmdir(f->dir);
  g_free(f->dir);
  g_free(f->path);
}

static journal *open_j(fx *f) {
  journal *j = NULL;
  char err[256];
  if (journal_open(f->dir, &j, err, sizeof err) != 0)
    g_error("journal_open: %s", err);
  return j;
}

static journal_entry entry(uint64_t id, const char *fragment,
                           const char *device, bool child) {
  journal_entry e = {.id = id,
                     .template_id = (char *)"510",
                     .fragment = (char *)fragment,
                     .device = (char *)device,
                     .child = child};
  return e;
}

static void test_begin_end_recover(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 0);
  journal_entry a = entry(journal_next_id(j), "c8y_Restart", "dev1", false);
  journal_entry b = entry(journal_next_id(j), "c8y_Command", "child1", true);
  journal_entry c = entry(journal_next_id(j), "c8y_Firmware", "dev1", false);
  g_assert_cmpint(journal_begin(j, &a), ==, 0);
  g_assert_cmpint(journal_begin(j, &b), ==, 0);
  g_assert_cmpint(journal_begin(j, &c), ==, 0);
  g_assert_cmpint(journal_mark_reboot(j, a.id), ==, 0);
  g_assert_cmpint(journal_end(j, c.id), ==, 0);
  journal_close(j); /* as if killed: nothing else is written at close */

  j = open_j(f);
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 2);
  const journal_entry *ra = rec[0].id == a.id ? &rec[0] : &rec[1];
  const journal_entry *rb = rec[0].id == a.id ? &rec[1] : &rec[0];
  g_assert_cmpstr(ra->fragment, ==, "c8y_Restart");
  g_assert_true(ra->reboot);
  g_assert_cmpstr(ra->boot_id, ==, "boot-A");
  g_assert_false(ra->child);
  g_assert_cmpstr(rb->device, ==, "child1");
  g_assert_true(rb->child);
  g_assert_false(rb->reboot);
  /* Ids stay unique across restarts. */
  g_assert_cmpuint(journal_next_id(j), >, c.id);
  g_assert_cmpint(journal_forget_recovered(j), ==, 0);
  journal_close(j);

  j = open_j(f);
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 0);
  journal_close(j);
}

/* A journal holding one good entry `id`, then `text` appended raw. */
static void one_entry_then(fx *f, uint64_t id, const char *text) {
  journal *j = open_j(f);
  journal_entry a = entry(id, "c8y_Restart", "dev1", false);
  g_assert_cmpint(journal_begin(j, &a), ==, 0);
  journal_close(j);
  FILE *fp = fopen(f->path, "a");
  fputs(text, fp);
  fclose(fp);
}

static void test_torn_and_garbage_lines(fx *f, gconstpointer d) {
  /* A crash in the middle of the next append, and some noise. */
  one_entry_then(f, 7, "not json at all\n{\"op\":\"begin\",\"id\":8,\"fragm");
  journal *j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 1);
  g_assert_cmpuint(rec[0].id, ==, 7);
  journal_close(j);
}

/* An entry whose device could never be addressed (a topic wildcard, not
 * UTF-8) would make every status for it fail to publish: recovery skips it
 * and keeps the rest. */
static void test_bad_device_skipped(fx *f, gconstpointer d) {
  one_entry_then(f, 3,
                 "{\"op\":\"begin\",\"id\":4,\"template\":\"511\",\"fragment\":"
                 "\"c8y_Command\",\"device\":\"evil/#\",\"child\":true}\n"
                 "{\"op\":\"begin\",\"id\":5,\"template\":\"511\",\"fragment\":"
                 "\"c8y_Command\",\"device\":\"a\\u0001b\",\"child\":true}\n");
  journal *j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 1);
  g_assert_cmpuint(rec[0].id, ==, 3);
  g_assert_cmpuint(journal_next_id(j), >, 5);
  journal_close(j);
}

/* A write that stops part-way (here the file size limit; a full disk is
 * the same) fails the call and leaves no partial line behind, so the next
 * line is whole and recovered. */
static void test_partial_write_cut_off(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  journal_entry a = entry(1, "c8y_Restart", "dev1", false);
  g_assert_cmpint(journal_begin(j, &a), ==, 0);
  GStatBuf st;
  g_assert_cmpint(g_stat(f->path, &st), ==, 0);
  struct rlimit old, small = {.rlim_cur = (rlim_t)st.st_size + 10};
  g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
  small.rlim_max = old.rlim_max;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &small), ==, 0);
  journal_entry b = entry(2, "c8y_Command", "dev1", false);
  int rc = journal_begin(j, &b);
  g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
  signal(SIGXFSZ, prev);
  g_assert_cmpint(rc, ==, C8Y_EIO);
  GStatBuf after;
  g_assert_cmpint(g_stat(f->path, &after), ==, 0);
  g_assert_cmpint(after.st_size, ==, st.st_size);
  journal_entry c = entry(3, "c8y_Firmware", "dev1", false);
  g_assert_cmpint(journal_begin(j, &c), ==, 0);
  journal_close(j);

  j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 2);
  g_assert_cmpuint(rec[0].id + rec[1].id, ==, 1 + 3);
  journal_close(j);
}

static void test_compaction(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  for (uint64_t i = 1; i <= 2000; i++) {
    journal_entry e = entry(i, "c8y_Command", "dev1", false);
    g_assert_cmpint(journal_begin(j, &e), ==, 0);
    g_assert_cmpint(journal_end(j, i), ==, 0);
  }
  journal_close(j);
  j = open_j(f); /* a restart rewrites the file with what is still open */
  journal_close(j);
  GStatBuf st;
  g_assert_cmpint(g_stat(f->path, &st), ==, 0);
  g_assert_cmpint(st.st_size, ==, 0);
}

static long long file_size(const char *path) {
  GStatBuf st;
  g_assert_cmpint(g_stat(path, &st), ==, 0);
  return (long long)st.st_size;
}

/* A long-running agent: thousands of operations come and go while one
 * waits for a reboot. The file is rewritten while running, so it stays
 * small, and a kill at any point still recovers exactly the open one. */
static void test_compaction_while_running(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  journal_entry open_op =
      entry(journal_next_id(j), "c8y_Restart", "dev1", false);
  g_assert_cmpint(journal_begin(j, &open_op), ==, 0);
  g_assert_cmpint(journal_mark_reboot(j, open_op.id), ==, 0);
  long long largest = 0;
  for (int i = 0; i < 5000; i++) {
    journal_entry e = entry(journal_next_id(j), "c8y_Command", "child1", true);
    g_assert_cmpint(journal_begin(j, &e), ==, 0);
    g_assert_cmpint(journal_end(j, e.id), ==, 0);
    long long size = file_size(f->path);
    if (size > largest)
      largest = size;
  }
  /* 5000 begin+end pairs are ~1 MB of lines; the rewrite threshold is
   * 64 KiB (twice the live set, which is one line here). */
  g_assert_cmpint(largest, <, 2 * 65536);
  uint64_t last = journal_next_id(j);
  journal_close(j); /* killed: no rewrite at close */

  j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 1);
  g_assert_cmpuint(rec[0].id, ==, open_op.id);
  g_assert_true(rec[0].reboot);
  g_assert_cmpstr(rec[0].boot_id, ==, "boot-A");
  g_assert_cmpuint(journal_next_id(j), >, last - 1);
  journal_close(j);
}

/* The rewrite of journal_forget_recovered keeps the kept entries and every
 * operation begun since the open, not only the recovered ones. */
static void test_forget_keeps_new_operations(fx *f, gconstpointer d) {
  one_entry_then(f, 4, "");
  journal *j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 1);
  journal_entry fresh = entry(journal_next_id(j), "c8y_Command", "dev1", false);
  g_assert_cmpint(journal_begin(j, &fresh), ==, 0);
  g_assert_cmpint(journal_forget_recovered(j), ==, 0);
  journal_close(j);
  j = open_j(f);
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 1);
  g_assert_cmpuint(rec[0].id, ==, fresh.id);
  journal_close(j);
}

typedef struct {
  journal *j;
  unsigned thread;
  uint64_t left_open[50];
  size_t nleft;
} writer_args;

static gpointer writer(gpointer p) {
  writer_args *a = p;
  for (unsigned i = 0; i < 500; i++) {
    journal_entry e =
        entry(journal_next_id(a->j), "c8y_Command", "dev1", false);
    g_assert_cmpint(journal_begin(a->j, &e), ==, 0);
    if (i % 10 == 3) {
      g_assert_cmpint(journal_mark_reboot(a->j, e.id), ==, 0);
      a->left_open[a->nleft++] = e.id;
    } else {
      g_assert_cmpint(journal_end(a->j, e.id), ==, 0);
    }
  }
  return NULL;
}

/* Plugin workers and the main loop write concurrently (group commit, and
 * rewrites racing with appends): nothing is lost and nothing ended comes
 * back. */
static void test_concurrent_writers(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  writer_args args[4] = {{0}};
  GThread *threads[4];
  for (unsigned t = 0; t < 4; t++) {
    args[t].j = j;
    args[t].thread = t;
    threads[t] = g_thread_new("writer", writer, &args[t]);
  }
  for (unsigned t = 0; t < 4; t++)
    g_thread_join(threads[t]);
  journal_close(j);

  j = open_j(f);
  const journal_entry *rec;
  size_t n = journal_recovered(j, &rec);
  g_assert_cmpuint(n, ==, 4 * 50);
  for (unsigned t = 0; t < 4; t++)
    for (size_t k = 0; k < args[t].nleft; k++) {
      const journal_entry *e = NULL;
      for (size_t i = 0; i < n && !e; i++)
        if (rec[i].id == args[t].left_open[k])
          e = &rec[i];
      g_assert_nonnull(e);
      g_assert_true(e->reboot);
    }
  journal_close(j);
}

static void test_boot_id_override(fx *f, gconstpointer d) {
  char *id = journal_boot_id();
  g_assert_cmpstr(id, ==, "boot-A");
  g_free(id);
  g_unsetenv("C8Y_BOOT_ID_FILE");
  g_unsetenv("RUNTIME_DIRECTORY");
  id = journal_boot_id(); /* the kernel's */
  g_assert_nonnull(id);
  g_assert_cmpuint(strlen(id), ==, 36);
  g_free(id);
}

/* Under systemd a per-boot token in the runtime directory joins the kernel
 * id: kept across agent restarts, new when /run is new (a container reboot
 * with the host's kernel id unchanged). */
static void test_boot_token(fx *f, gconstpointer d) {
  g_unsetenv("C8Y_BOOT_ID_FILE");
  char *run = g_build_filename(f->dir, "run", NULL);
  g_assert_cmpint(g_mkdir(run, 0750), ==, 0);
  g_setenv("RUNTIME_DIRECTORY", run, TRUE);
  char *first = journal_boot_id();
  g_assert_nonnull(first);
  g_assert_cmpuint(strlen(first), ==, 36 + 1 + 32);
  char *again = journal_boot_id(); /* an agent restart: same boot */
  g_assert_cmpstr(again, ==, first);
  g_assert_false(journal_booted_since(again, first));
  char *tokfile = g_build_filename(run, "boot-token", NULL);
  g_assert_cmpint(g_unlink(tokfile), ==, 0); /* a new /run: a reboot */
  char *after = journal_boot_id();
  g_assert_nonnull(after);
  g_assert_cmpstr(after, !=, first);
  g_assert_true(journal_booted_since(after, first));
  /* An entry from before tokens: the kernel id alone decides. */
  char kernel_only[37];
  memcpy(kernel_only, first, 36);
  kernel_only[36] = '\0';
  g_assert_false(journal_booted_since(after, kernel_only));
  g_assert_true(journal_booted_since("other-kernel-id", kernel_only));
  g_assert_false(journal_booted_since(NULL, first));
  g_assert_false(journal_booted_since(after, NULL));
  g_unsetenv("RUNTIME_DIRECTORY");
  g_unlink(tokfile);
  g_rmdir(run);
  g_free(tokfile);
  g_free(run);
  g_free(first);
  g_free(again);
  g_free(after);
}

static const journal_entry *find_id(const journal_entry *v, size_t n,
                                    uint64_t id) {
  for (size_t i = 0; i < n; i++)
    if (v[i].id == id)
      return &v[i];
  return NULL;
}

/* op_resume_after_restart: the fields survive restarts (and the rewrite of
 * every open), a kept entry stays executing with its resume count raised,
 * and an end finally forgets it. */
static void test_resume_kept_across_restarts(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  journal_entry a = entry(journal_next_id(j), "c8y_Firmware", "dev1", false);
  journal_entry b = entry(journal_next_id(j), "c8y_Command", "dev1", false);
  g_assert_cmpint(journal_begin(j, &a), ==, 0);
  g_assert_cmpint(journal_begin(j, &b), ==, 0);
  const char *fields[] = {"fw", "2.0", "http://h/x?a=1,b=\"2\"", ""};
  g_assert_cmpint(journal_mark_resume(j, a.id, fields, 4, NULL), ==, 0);
  journal_close(j);

  for (unsigned run = 1; run <= 3; run++) {
    j = open_j(f);
    const journal_entry *rec;
    size_t n = journal_recovered(j, &rec);
    /* b (not resumable) is reported by the first restart, then forgotten. */
    g_assert_cmpuint(n, ==, run == 1 ? 2 : 1);
    const journal_entry *ra = find_id(rec, n, a.id);
    g_assert_nonnull(ra);
    g_assert_true(ra->resume);
    g_assert_cmpuint(ra->resumes, ==, run - 1);
    g_assert_cmpuint(ra->nfields, ==, 4);
    for (size_t i = 0; i < 4; i++)
      g_assert_cmpstr(ra->fields[i], ==, fields[i]);
    g_assert_cmpstr(ra->boot_id, ==, "boot-A");
    g_assert_cmpstr(ra->template_id, ==, "510");
    if (run == 1) {
      const journal_entry *rb = find_id(rec, n, b.id);
      g_assert_nonnull(rb);
      g_assert_false(rb->resume);
      g_assert_cmpuint(rb->nfields, ==, 0);
    }
    journal_entry copy;
    g_assert_cmpint(journal_entry_copy(ra, &copy), ==, 0);
    g_assert_cmpint(journal_keep_recovered(j, a.id), ==, 0);
    g_assert_cmpint(journal_keep_recovered(j, a.id), ==, 0); /* idempotent */
    g_assert_cmpint(journal_keep_recovered(j, 999), !=, 0);
    g_assert_cmpint(journal_forget_recovered(j), ==, 0);
    g_assert_cmpuint(journal_recovered(j, &rec), ==, 0);
    /* The copy owns its strings beyond forget. */
    g_assert_cmpstr(copy.fields[2], ==, fields[2]);
    g_assert_cmpstr(copy.fragment, ==, "c8y_Firmware");
    journal_entry_free(&copy);
    journal_close(j);
  }

  j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 1);
  g_assert_cmpuint(rec[0].resumes, ==, 3);
  g_assert_cmpint(journal_end(j, a.id), ==, 0);
  journal_close(j);
  j = open_j(f);
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 0);
  journal_close(j);
}

/* A resume record whose fields are unreadable degrades to an ordinary
 * entry (the operation fails) instead of resuming with wrong fields. */
/* Cumulocity's id survives a restart, also when it arrived after the begin
 * (the JSON copy came after the SmartREST line started the operation), and
 * with a resume the operation's document too; compaction keeps both. */
static void test_ids_survive(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  journal_entry a = entry(journal_next_id(j), "c8y_Restart", "dev1", false);
  journal_entry b = entry(journal_next_id(j), "acme_Reset", "kid", true);
  b.template_id = NULL;
  b.c8y_id = (char *)"778";
  g_assert_cmpint(journal_begin(j, &a), ==, 0);
  g_assert_cmpint(journal_begin(j, &b), ==, 0);
  g_assert_cmpint(journal_set_c8y_id(j, a.id, "777"), ==, 0);
  const char *none[] = {NULL};
  g_assert_cmpint(journal_mark_resume(j, b.id, none, 0,
                                      "{\"id\":\"778\",\"acme_Reset\":{}}"),
                  ==, 0);
  journal_close(j);
  for (int run = 0; run < 2; run++) { /* the second after a compaction */
    j = open_j(f);
    const journal_entry *e;
    g_assert_cmpuint(journal_recovered(j, &e), ==, 2);
    const journal_entry *ra = e[0].id == a.id ? &e[0] : &e[1];
    const journal_entry *rb = e[0].id == a.id ? &e[1] : &e[0];
    g_assert_cmpstr(ra->c8y_id, ==, "777");
    g_assert_cmpstr(ra->template_id, ==, "510");
    g_assert_cmpstr(rb->c8y_id, ==, "778");
    g_assert_null(rb->template_id);
    g_assert_true(rb->resume);
    g_assert_cmpstr(rb->json, ==, "{\"id\":\"778\",\"acme_Reset\":{}}");
    journal_close(j);
  }
}

/* A device profile and its step: the profile's progress (step) and the
 * step's parent survive a restart, also through a rewrite of the file. */
static void test_profile_steps(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  char *fields[] = {"$FW", "fw", "2", "http://f"};
  journal_entry p =
      entry(journal_next_id(j), "c8y_DeviceProfile", "dev1", false);
  p.template_id = (char *)"527";
  p.profile = p.resume = true;
  p.fields = fields;
  p.nfields = 4;
  journal_entry s = entry(journal_next_id(j), "c8y_Firmware", "dev1", false);
  s.template_id = (char *)"515";
  s.parent = p.id;
  s.step = 1;
  g_assert_cmpint(journal_begin(j, &p), ==, 0);
  g_assert_cmpint(journal_mark_step(j, p.id, 1), ==, 0);
  g_assert_cmpint(journal_begin(j, &s), ==, 0);
  journal_close(j);
  for (int round = 0; round < 2; round++) {
    j = open_j(f); /* each open rewrites the file from what it read */
    const journal_entry *rec;
    g_assert_cmpuint(journal_recovered(j, &rec), ==, 2);
    const journal_entry *rp = rec[0].id == p.id ? &rec[0] : &rec[1];
    const journal_entry *rs = rec[0].id == p.id ? &rec[1] : &rec[0];
    g_assert_true(rp->profile);
    g_assert_cmpuint(rp->step, ==, 1);
    g_assert_cmpuint(rp->parent, ==, 0);
    g_assert_cmpuint(rp->nfields, ==, 4);
    g_assert_false(rs->profile);
    g_assert_cmpuint(rs->parent, ==, p.id);
    g_assert_cmpuint(rs->step, ==, 1);
    journal_close(j);
  }
}

static void test_resume_bad_fields(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  journal_entry a = entry(3, "c8y_Firmware", "dev1", false);
  g_assert_cmpint(journal_begin(j, &a), ==, 0);
  journal_close(j);
  FILE *fp = fopen(f->path, "a");
  fputs("{\"op\":\"resume\",\"id\":3,\"fields\":[1,2]}\n", fp);
  fclose(fp);
  j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 1);
  g_assert_false(rec[0].resume);
  journal_close(j);
}

/* A final status ends its operation and stays (across restarts and
 * compactions) until it is sent; one fdatasync for the end and the status. */
static void test_end_status(fx *f, gconstpointer d) {
  journal *j = open_j(f);
  journal_entry a = entry(1, "c8y_Restart", "dev1", false);
  journal_entry b = entry(2, "c8y_Command", "kid", true);
  g_assert_cmpint(journal_begin(j, &a), ==, C8Y_OK);
  g_assert_cmpint(journal_begin(j, &b), ==, C8Y_OK);
  journal_stats st0, st;
  journal_get_stats(j, &st0);
  g_assert_cmpint(journal_end_status(j, 1, "s/us", "503,c8y_Restart"), ==,
                  C8Y_OK);
  g_assert_cmpint(journal_end_status(j, 2, "s/us/kid", "502,c8y_Command,no"),
                  ==, C8Y_OK);
  journal_get_stats(j, &st);
  g_assert_cmpuint(st.fsyncs - st0.fsyncs, ==, 2);
  g_assert_cmpuint(st.unsent, ==, 2);
  g_assert_cmpint(journal_status_sent(j, 1), ==, C8Y_OK);
  g_assert_cmpint(journal_status_sent(j, 1), ==, C8Y_EINVAL);
  journal_get_stats(j, &st);
  g_assert_cmpuint(st.fsyncs - st0.fsyncs, ==, 2); /* "sent": no fsync */
  journal_close(j);

  /* Restart: both operations ended, one status still to send. */
  j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 0);
  journal_status *v;
  g_assert_cmpuint(journal_unsent(j, &v), ==, 1);
  g_assert_cmpuint(v[0].id, ==, 2);
  g_assert_cmpstr(v[0].topic, ==, "s/us/kid");
  g_assert_cmpstr(v[0].line, ==, "502,c8y_Command,no");
  journal_status_free(v, 1);
  /* Compacted at open: the status is all that is left in the file. */
  gchar *text = NULL;
  g_assert_true(g_file_get_contents(f->path, &text, NULL, NULL));
  g_assert_null(strstr(text, "begin"));
  g_assert_nonnull(strstr(text, "502,c8y_Command,no"));
  g_free(text);
  g_assert_cmpint(journal_status_sent(j, 2), ==, C8Y_OK);
  journal_close(j);
  j = open_j(f);
  g_assert_cmpuint(journal_unsent(j, &v), ==, 0);
  g_assert_null(v);
  journal_close(j);
}

/* A journal written before final statuses were journaled (the fixture of
 * tests/unit/data/format1) replays as it always did. */
static void test_compat_before_statuses(fx *f, gconstpointer d) {
  gchar *from = g_test_build_filename(G_TEST_DIST, "data", "format1",
                                      "operations.journal", NULL);
  gchar *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(from, &data, &len, NULL));
  g_assert_true(g_file_set_contents(f->path, data, (gssize)len, NULL));
  g_free(data);
  g_free(from);
  journal *j = open_j(f);
  const journal_entry *rec;
  g_assert_cmpuint(journal_recovered(j, &rec), ==, 1);
  g_assert_cmpuint(rec[0].id, ==, 5);
  g_assert_cmpstr(rec[0].template_id, ==, "510");
  g_assert_cmpstr(rec[0].fragment, ==, "c8y_Restart");
  g_assert_true(rec[0].reboot);
  g_assert_nonnull(rec[0].boot_id);
  journal_status *v;
  g_assert_cmpuint(journal_unsent(j, &v), ==, 0);
  g_assert_cmpuint(journal_next_id(j), ==, 7);
  journal_close(j);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add("/journal/begin-end-recover", fx, NULL, fx_setup,
             test_begin_end_recover, fx_teardown);
  g_test_add("/journal/torn-and-garbage-lines", fx, NULL, fx_setup,
             test_torn_and_garbage_lines, fx_teardown);
  g_test_add("/journal/bad-device-skipped", fx, NULL, fx_setup,
             test_bad_device_skipped, fx_teardown);
  g_test_add("/journal/partial-write-cut-off", fx, NULL, fx_setup,
             test_partial_write_cut_off, fx_teardown);
  g_test_add("/journal/compaction", fx, NULL, fx_setup, test_compaction,
             fx_teardown);
  g_test_add("/journal/compaction-while-running", fx, NULL, fx_setup,
             test_compaction_while_running, fx_teardown);
  g_test_add("/journal/forget-keeps-new-operations", fx, NULL, fx_setup,
             test_forget_keeps_new_operations, fx_teardown);
  g_test_add("/journal/boot-id-override", fx, NULL, fx_setup,
             test_boot_id_override, fx_teardown);
  g_test_add("/journal/boot-token", fx, NULL, fx_setup, test_boot_token,
             fx_teardown);
  g_test_add("/journal/resume-kept-across-restarts", fx, NULL, fx_setup,
             test_resume_kept_across_restarts, fx_teardown);
  g_test_add("/journal/ids-survive", fx, NULL, fx_setup, test_ids_survive,
             fx_teardown);
  g_test_add("/journal/profile-steps", fx, NULL, fx_setup, test_profile_steps,
             fx_teardown);
  g_test_add("/journal/resume-bad-fields", fx, NULL, fx_setup,
             test_resume_bad_fields, fx_teardown);
  /* Last: it starts threads, after which the fixtures' setenv is unsafe. */
  g_test_add("/journal/end-status", fx, NULL, fx_setup, test_end_status,
             fx_teardown);
  g_test_add("/journal/compat/before-statuses", fx, NULL, fx_setup,
             test_compat_before_statuses, fx_teardown);
  g_test_add("/journal/concurrent-writers", fx, NULL, fx_setup,
             test_concurrent_writers, fx_teardown);
  return g_test_run();
}
