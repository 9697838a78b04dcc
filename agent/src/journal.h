/* journal: the on-disk record of operations the agent set to EXECUTING.
 *
 * Each begin/reboot/resume/id/end is one JSON line appended to
 * <state_dir>/operations.journal and fdatasync'ed before the call returns, so
 * after a crash, kill -9 or a reboot the agent knows which operations were
 * still executing and finishes them (see ops.c: 503 for an operation that
 * waited for the reboot that happened, a second run of the handler for one
 * marked "resume" with its fields, 502 with a reason otherwise).
 *
 * The file holds only what is executing after every open and, while the
 * agent runs, whenever it has grown to twice what the last rewrite left
 * (at least 64 KiB): the rewrite goes to a temporary file, is fdatasync'ed,
 * renamed over the journal and the directory fsync'ed.
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
