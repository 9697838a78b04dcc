/* plugin_host: the host side of the SDK. Owns struct c8y_plugin, the single
 * c8y_api table, batches, and one worker thread per plugin: every callback
 * of a plugin runs on its worker, so callbacks of one plugin never overlap
 * and a slow plugin delays only itself. */
#ifndef C8Y_PLUGIN_HOST_H
#define C8Y_PLUGIN_HOST_H

#include "config.h"
#include "ops.h"
#include "outq.h"
#include "registry.h"
#include "upstream.h"

#include <c8y/plugin.h>
#include <pthread.h>
#include <stdbool.h>

/* What every plugin shares: set up once by the runtime. */
typedef struct plugin_host {
  agent_config *cfg;
  registry *reg;
  /* Where plugins' lines go; its wake also tells the main loop that a
   * child was added. */
  const upstream *up;
  const char *device_id;
  const char *state_dir;
  struct http_ctx *http; /* REST client for download/upload; NULL = none */
  struct services *svc;  /* plugins' health (set_health); NULL = none */
  /* The table init() gets; NULL = plugin_host_api(). A capture host (see
   * capture.h) hands a copy whose slots observe the plugin's calls and then
   * call the agent's own. */
  const c8y_api *api;
} plugin_host;

struct c8y_plugin {
  plugin_host *host;
  char *name;
  char *version;
  char *path;
  char *crash_head; /* crash_plugin_head() of the file, see crash.h */
  c8y_plugin_info info;
  void *user_data;
  bool registering; /* inside init() */
  char *init_error; /* why registration made the plugin unloadable */
  char **asked;     /* config keys the plugin looked up, for "did you mean" */
  size_t nasked;
  char **origins; /* config_origin's answers, alive until the plugin is freed */
  size_t norigins;
  char *state_dir;
  bool worker_running;
  pthread_t worker;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct plugin_job *jobs_head, *jobs_tail;
  bool stopping;
  /* Its worker did not finish in time: its code may still run, so it is
   * never finalized, unloaded or freed. */
  bool abandoned;
  /* [agent] plugin_max_lines_per_s, a token bucket under mu */
  double line_tokens;
  long long line_refill_ms; /* 0 = bucket not started */
  unsigned long long lines_refused;
  long long refused_logged_ms;
  unsigned produce_failures; /* in a row, on the worker */
};

const c8y_api *plugin_host_api(void);

/* Creates the handle (no worker yet). */
c8y_plugin *plugin_host_new_plugin(plugin_host *host, const char *name,
                                   const char *version, const char *path);
/* Joins the worker (after its queue drains), then frees. Does not call
 * fini or dlclose. */
void plugin_host_free_plugin(c8y_plugin *p);

/* Takes the plugin's descriptor (read as far as the plugin declared it) and
 * its crash head (copied), then runs its init (registration open, crash
 * attribution "init").
 * On failure (init < 0, or a registration that made it unloadable) it calls
 * fini if init itself succeeded, rolls back p's registrations, writes the
 * reason to why and returns a C8Y_* error; p stays allocated. */
int plugin_host_init_plugin(c8y_plugin *p, const c8y_plugin_info *info,
                            const char *crash_head, char *why, size_t len);
/* Calls fini (crash attribution "fini"), unless the plugin has none or was
 * abandoned: its code may still run on its detached worker. */
void plugin_host_fini_plugin(c8y_plugin *p);

/* C8Y_OK, or C8Y_EAGAIN / C8Y_ENOMEM when no thread can be created. */
int plugin_host_start_worker(c8y_plugin *p);
/* Stops accepting jobs, lets queued ones finish and joins the worker. */
void plugin_host_stop_worker(c8y_plugin *p);
/* The same, but gives up at `wait_ms`: the worker is then left running
 * (detached), p->abandoned is set and false returned. */
bool plugin_host_stop_worker_within(c8y_plugin *p, int wait_ms);

/* Queue jobs on the plugin's worker (main thread): C8Y_OK, C8Y_ENOMEM, or
 * C8Y_ESTATE once the worker is stopping. */
int plugin_host_queue_produce(c8y_plugin *p, reg_producer *prod);
int plugin_host_queue_operation(c8y_plugin *p, c8y_operation *op);
int plugin_host_queue_message(c8y_plugin *p, reg_message *m, char **fields,
                              size_t nfields); /* takes ownership of fields */

/* After init(): logs the keys of [plugin.<name>] the plugin never read
 * ("file:line: [plugin.x] key: unknown key; did you mean ...?"), unless
 * quiet. Returns how many there are. */
size_t plugin_host_report_unused_keys(c8y_plugin *p, bool quiet);
/* The closest of `candidates` to `word` within a small edit distance, or
 * NULL: for "did you mean" hints. */
const char *plugin_host_closest(const char *word, const char *const *candidates,
                                size_t n);

#endif
