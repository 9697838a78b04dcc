/* loader: finds, checks and loads plugin .so files from the plugin dir.
 * A plugin is refused, with one log line naming the file and the reason,
 * and the agent keeps running, when: its file or the dir is group/world-
 * writable or owned by another user; dlopen fails; it has no
 * c8y_plugin_info_v1 symbol; its ABI major differs or its minor is newer;
 * its name is invalid or taken; it is disabled in the config; init fails
 * (its registrations are rolled back); or it claims a template id another
 * plugin already handles; or it is quarantined for crashing the agent again
 * and again (see crash.h; the daemon raises a c8y_PluginQuarantined alarm).
 * A plugin is opened without following symlinks, checked with fstat and
 * loaded through that descriptor; the plugin dir's ancestors must not be
 * writable by others either. */
#ifndef C8Y_LOADER_H
#define C8Y_LOADER_H

#include "plugin_host.h"

#include <stdbool.h>
#include <stdio.h>

/* How long all workers together get to return from their callbacks on a
 * stop or reload; stuck ones are abandoned so the agent stays responsive. */
#define LOADER_STOP_BUDGET_MS 1000

typedef struct loader_entry {
  char *file;
  char *name; /* NULL if it never got that far */
  char *version;
  bool loaded;
  bool disabled;    /* switched off in the config: not a failure */
  bool quarantined; /* crashed the agent too often, see crash.h */
  char *reason;     /* why not */
  int status;       /* refused: init's status or C8Y_EINVAL; else C8Y_OK */
} loader_entry;

/* A loaded library, open until its plugin is released. */
typedef struct loader_lib {
  void *dl;
  int fd;
} loader_lib;

typedef struct plugin_set {
  c8y_plugin **plugins; /* loaded, in load order */
  loader_lib *libs;     /* plugins[i]'s library */
  size_t n;
  loader_entry *entries; /* one per candidate file, for --list-plugins */
  size_t nentries;
  char *dir_refused; /* why the whole plugin dir was refused, or NULL */
  char *state_dir;   /* set for the daemon (crash records, quarantine) */
} plugin_set;

/* Plugins that should have loaded but did not (refusals, not disabled). */
size_t loader_failures(const plugin_set *s);

/* Loads every *.so of dir in name order. Starts workers when
 * start_workers is set. Never fails as a whole: problems are per plugin. */
void loader_load_all(plugin_host *h, const char *dir, bool start_workers,
                     plugin_set *out);
/* Loads the one plugin file `path` with the same checks (except the
 * plugin dir's); out->entries[0] says how it went. For a host that runs a
 * single plugin (capture.h). */
void loader_load_file(plugin_host *h, const char *path, bool start_workers,
                      plugin_set *out);
/* Stops workers and calls fini for every plugin (reverse order). */
void loader_stop_all(plugin_set *s);
/* Removes registrations, dlcloses and frees everything in s. */
void loader_release_all(plugin_set *s, registry *reg);

/* For the systemd status line: "; quarantined plugins: a, b" in buf (empty
 * when none); returns how many. */
size_t loader_status_note(const plugin_set *s, char *buf, size_t len);

/* Writes the --list-plugins table. */
void loader_print(const plugin_set *s, registry *reg, FILE *out);

#endif
