/* journal: the on-disk record of operations the agent set to EXECUTING, and
 * of the final statuses of ended ones until they are sent.
 *
 * Each begin/reboot/resume/id/end is one JSON line appended to
 * <state_dir>/operations.journal and fdatasync'ed before the call returns, so
 * after a crash, kill -9 or a reboot the agent knows which operations were
 * still executing and finishes them (see ops.c: 503 for an operation that
 * waited for the reboot that happened, a second run of the handler for one
 * marked "resume" with its fields, 502 with a reason otherwise).
 *
 * journal_end_status ends an operation and records its final status in the
 * same line, one fdatasync for both: the status line survives kill -9 and
 * power loss from then on, and is sent again after a restart until
 * journal_status_sent (written without an fsync of its own: a lost one
 * only sends the status once more). ops queues such a status in memory
 * only (OUTQ_VOLATILE), so an operation's end costs one fdatasync instead
 * of two (the queue's and the journal's).
 *
 * The file holds only what is executing (and not sent) after every open
 * and, while the agent runs, whenever it has grown to twice what the last
 * rewrite left (at least 64 KiB): a dlog rewrite (temporary file,
 * fdatasync, rename, directory fsync; lines appended meanwhile carried
 * over).
 *
 * Compatibility: files written before final statuses were journaled replay
 * unchanged ("end" lines without "topic"/"line", no "sent" lines). An older
 * agent reads an "end" with a status as a plain end and ignores "sent":
 * after a downgrade, a final status that was not sent yet is lost (the
 * operation stays EXECUTING on the platform).
 *
 * Thread-safe. Writers that call concurrently share one fdatasync (group
 * commit), and no lock is held while the disk is waited for, so callers
 * need no lock of their own around these calls. */
#ifndef C8Y_JOURNAL_H
#define C8Y_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct journal_entry {
  uint64_t id;       /* the agent's own operation number */
  char *c8y_id;      /* Cumulocity's operation id, NULL when it was not known:
                        the final status after a restart goes by id (505/506)
                        when there is one, by fragment (502/503) otherwise */
  char *template_id; /* static template, custom message id, or NULL (JSON) */
  char *xid;         /* custom template collection of template_id, or NULL */
  char *fragment;
  char *device;  /* external id; the root or a child */
  bool child;    /* status goes to s/us/<device> */
  char *boot_id; /* of the boot during which the operation started */
  bool reboot;   /* completes when the machine has rebooted */
  long long started_ms;
  /* ABI 1.1 op_resume_after_restart: the next start hands the operation to
   * its handler again, with these fields (the parameters after the device
   * id). resumes counts the starts that already did so. */
  bool resume;
  char **fields;
  size_t nfields;
  char *json; /* the operation's JSON document, or NULL */
  unsigned resumes;
  /* Device profiles (profile.h): the profile operation itself has
   * `profile` set and `step` = how many of its steps succeeded; each step
   * runs as an operation of its own whose entry names the profile's id in
   * `parent` and its index in `step`. Such a step has no status of its
   * own on the platform: after a restart ops settles it through its
   * profile. */
  bool profile;
  uint64_t parent;
  unsigned step;
} journal_entry;

typedef struct journal journal;

/* A final status recorded with journal_end_status. */
typedef struct journal_status {
  uint64_t id;
  char *topic;
  char *line;
} journal_status;

typedef struct journal_stats {
  uint64_t fsyncs;  /* of the journal file, rewrites included */
  uint64_t written; /* bytes appended */
  size_t unsent;    /* final statuses not sent yet */
} journal_stats;

/* Opens (creating) the journal in dir and reads what a previous run left
 * executing. A corrupt line (a crash mid-write) is skipped with a warning.
 * Returns C8Y_OK or C8Y_ENOMEM / C8Y_EIO with one line in err. The calls
 * below return C8Y_OK, C8Y_ENOMEM, C8Y_EIO (write or fdatasync failed) or
 * C8Y_EINVAL (an id that is not recovered). */
int journal_open(const char *dir, journal **out, char *err, size_t errlen);
void journal_close(journal *j);

/* Operations left executing by the previous run (borrowed until
 * journal_forget_recovered). */
size_t journal_recovered(journal *j, const journal_entry **entries);
/* Rewrites the file without the recovered entries (call once their final
 * status is queued durably), except those passed to journal_keep_recovered:
 * they stay in the file as executing, with their resume count raised by
 * one, until journal_end. */
int journal_forget_recovered(journal *j);
int journal_keep_recovered(journal *j, uint64_t id);

/* A deep copy of e (*out is cleared first); journal_entry_free releases what
 * a copy owns. */
int journal_entry_copy(const journal_entry *e, journal_entry *out);
void journal_entry_free(journal_entry *e);

/* An id unique across restarts (larger than any id in the file). */
uint64_t journal_next_id(journal *j);

int journal_begin(journal *j, const journal_entry *e); /* e->boot_id ignored */
int journal_mark_reboot(journal *j, uint64_t id);
/* The operation is resumed after a restart, with these fields and JSON
 * document (nullable). */
int journal_mark_resume(journal *j, uint64_t id, const char *const *fields,
                        size_t nfields, const char *json);
/* Cumulocity's id of an operation begun without it (its JSON copy arrived
 * after the SmartREST line had started it). */
int journal_set_c8y_id(journal *j, uint64_t id, const char *c8y_id);
int journal_end(journal *j, uint64_t id);
/* A profile's steps before `step` succeeded (see journal_entry.profile). */
int journal_mark_step(journal *j, uint64_t id, unsigned step);
/* Ends the operation and records its final status (a SmartREST line and
 * its topic) durably in one line; the status stays in the journal until
 * journal_status_sent. Not C8Y_OK: nothing is recorded (the operation is
 * not ended either), the caller queues the status another way. */
int journal_end_status(journal *j, uint64_t id, const char *topic,
                       const char *line);
/* The status of `id` was acknowledged by the broker. C8Y_EINVAL when no
 * such status is waiting. */
int journal_status_sent(journal *j, uint64_t id);
/* Copies of the final statuses not sent yet, in the order they ended (what
 * a previous run left, and this run's); free with journal_status_free. */
size_t journal_unsent(journal *j, journal_status **out);
void journal_status_free(journal_status *v, size_t n);
void journal_get_stats(journal *j, journal_stats *out);

/* Which boot this is: the kernel's boot id, followed by " <token>" when the
 * agent runs with a systemd RuntimeDirectory (a token it keeps there, in
 * tmpfs, created on its first start of the boot). The token is needed in
 * containers: systemd-nspawn gives each container boot its own boot id only
 * in the container's /proc, and the unit's ProtectProc= mounts a fresh
 * procfs that shows the host's id, so a rebooted container would look like
 * the same boot. C8Y_BOOT_ID_FILE overrides it all for tests. malloc'ed, or
 * NULL when nothing can be read. */
char *journal_boot_id(void);
/* True when `then` (recorded by journal_boot_id at some earlier time) names
 * an earlier boot than `now`: the kernel ids differ, or both carry a token
 * and the tokens differ. False when either is NULL (unknown). */
bool journal_booted_since(const char *now, const char *then);

#endif
