/* Shared set-up for integration tests: a simulator (real mosquitto on a
 * free loopback port) and the real agent binary configured against it with
 * the scriptable itest plugin. */
#ifndef C8Y_IT_FIXTURE_H
#define C8Y_IT_FIXTURE_H

#include "agent_proc.h"
#include "sim.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#define FX_DEVICE "dev1"
/* For tests that load the bundled plugins (C8Y_PLUGIN_OUT) as the package
 * installs them: the example plugin is built there too, but it is not in
 * the package (and it would take 517 from system_metrics). */
#define FX_AS_PACKAGED "[plugin.example]\nenabled = false\n"

typedef struct fx {
  sim *s;
  agent_proc *a;
  int reconnect_ms;       /* backoff floor and ceiling; 0 = 100/1000 ms */
  const char *plugin_dir; /* NULL = the itest plugin only */
} fx;

/* Lines, not messages: the agent packs several lines into one publish.
 * Returns the position of the first line on `topic` starting with `prefix`
 * counted over all lines received on that topic from message `from` on, or
 * -1; *line (nullable) gets a malloc'ed copy of the whole line. */
static inline long fx_line_pos_from(fx *f, const char *topic,
                                    const char *prefix, size_t from,
                                    char **line) {
  long pos = 0;
  size_t plen = strlen(prefix);
  for (size_t i = from; i < sim_message_count(f->s); i++) {
    const sim_message *m = sim_message_at(f->s, i);
    if (strcmp(m->topic, topic) != 0)
      continue;
    const char *p = m->payload;
    for (;;) {
      const char *nl = strchr(p, '\n');
      size_t len = nl ? (size_t)(nl - p) : strlen(p);
      if (len >= plen && strncmp(p, prefix, plen) == 0) {
        if (line)
          *line = g_strndup(p, len);
        return pos;
      }
      pos++;
      if (!nl)
        break;
      p = nl + 1;
    }
  }
  return -1;
}

static inline long fx_line_pos(fx *f, const char *topic, const char *prefix,
                               char **line) {
  return fx_line_pos_from(f, topic, prefix, 0, line);
}

static inline void fx_start_sim(fx *f) {
  sim_options o = {.tenant = "t1",
                   .user = "device",
                   .password = "secret",
                   .device_id = FX_DEVICE};
  char err[512];
  if (sim_start(&o, &f->s, err, sizeof err) != 0)
    g_error("simulator: %s", err);
}

/* `extra` is appended to the generated agent.ini (may add sections). */
static inline void fx_make_agent(fx *f, const char *password,
                                 const char *extra) {
  char *ini = g_strdup_printf(
      "[c8y]\ntenant = t1\nuser = device\npassword = %s\nhost = 127.0.0.1\n"
      "port = %d\ntls = false\nreconnect_min_ms = %d\n"
      "reconnect_max_ms = %d\n[device]\nid = " FX_DEVICE "\n"
      "[agent]\nplugin_dir = %s\nlog_level = debug\n%s",
      password, sim_port(f->s), f->reconnect_ms ? f->reconnect_ms : 100,
      f->reconnect_ms ? f->reconnect_ms : 1000,
      f->plugin_dir ? f->plugin_dir : ITEST_PLUGIN_DIR, extra ? extra : "");
  f->a = agent_proc_new(ini);
  g_free(ini);
  g_assert_nonnull(f->a);
}

static inline void fx_start_agent(fx *f) {
  g_assert_cmpint(agent_proc_start(f->a), ==, 0);
}

/* Starts both and waits until the agent asked for pending operations. */
/* Starts the agent made by fx_make_agent and waits for its 500. */
static inline void fx_start_connected(fx *f) {
  fx_start_agent(f);
  if (sim_wait_line(f->s, "s/us", "500", 0, 15000) < 0) {
    char *log = agent_proc_log(f->a);
    g_error("agent never sent 500; log:\n%s", log);
  }
}

static inline void fx_up(fx *f, const char *extra) {
  fx_start_sim(f);
  fx_make_agent(f, "secret", extra);
  fx_start_connected(f);
}

/* After the handler showed it runs: the broker acknowledged the 501 before
 * the handler was called, but the simulator's own client may read it a
 * moment later. Returns the status once it left PENDING (bounded). */
static inline sim_op_status fx_status_after_start(fx *f, long id) {
  for (int i = 0; i < 500 && sim_operation_status(f->s, id) == SIM_OP_PENDING;
       i++)
    g_usleep(10 * 1000);
  return sim_operation_status(f->s, id);
}

/* Removes a test's directory tree (symlinks are removed, not followed). */
static inline void fx_rm_rf(const char *dir) {
  GDir *d = g_dir_open(dir, 0, NULL);
  if (!d)
    return;
  const char *n;
  while ((n = g_dir_read_name(d))) {
    char *p = g_build_filename(dir, n, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_DIR) &&
        !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
      fx_rm_rf(p);
    else
      g_unlink(p);
    g_free(p);
  }
  g_dir_close(d);
  g_rmdir(dir);
}

/* Prints the agent's log when the test has failed. */
static inline void fx_log_on_failure(agent_proc *a) {
  if (a && g_test_failed()) {
    char *log = agent_proc_log(a);
    g_printerr("---- agent log ----\n%s\n-------------------\n", log);
    g_free(log);
  }
}

static inline void fx_down(fx *f) {
  fx_log_on_failure(f->a);
  agent_proc_free(f->a);
  f->a = NULL;
  if (f->s)
    sim_stop(f->s);
  f->s = NULL;
}

/* Waits for an operation to finish; returns its status. */
static inline int fx_wait_op(fx *f, long id, int timeout_ms) {
  int st = sim_wait_operation_done(f->s, id, timeout_ms);
  if (st < 0) {
    char *log = agent_proc_log(f->a);
    g_printerr("operation %ld still %s; agent log:\n%s\n", id,
               sim_op_status_name(sim_operation_status(f->s, id)), log);
    g_free(log);
  }
  return st;
}

#endif
