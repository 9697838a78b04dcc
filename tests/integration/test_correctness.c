/* Correct under real conditions: child devices, registration at scale,
 * timestamps, shutdown with operations running, late completions, socket
 * options. Each runs the real agent against the simulator. */
#include "fixture.h"

#include <glib/gstdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A plugin dir holding copies of itest.so and the gateway plugin. */
static char *gateway_plugin_dir(void) {
  char *dir = g_dir_make_tmp("c8y-gw-XXXXXX", NULL);
  g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
  const char *from[][2] = {{ITEST_PLUGIN_DIR, "itest.so"},
                           {GATEWAY_PLUGIN_DIR, "gateway.so"}};
  for (size_t i = 0; i < G_N_ELEMENTS(from); i++) {
    char *src = g_build_filename(from[i][0], from[i][1], NULL);
    char *dst = g_build_filename(dir, from[i][1], NULL);
    char *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(src, &bytes, &len, NULL));
    g_assert_true(g_file_set_contents(dst, bytes, (gssize)len, NULL));
    g_assert_cmpint(g_chmod(dst, 0755), ==, 0);
    g_free(bytes);
    g_free(src);
    g_free(dst);
  }
  return dir;
}

static void remove_plugin_dir(char *dir) {
  char *a = g_build_filename(dir, "itest.so", NULL);
  char *b = g_build_filename(dir, "gateway.so", NULL);
  g_unlink(a);
  g_unlink(b);
  g_rmdir(dir);
  g_free(a);
  g_free(b);
  g_free(dir);
}

static char *line_on(fx *f, const char *topic, const char *prefix) {
  char *line = NULL;
  if (fx_line_pos(f, topic, prefix, &line) < 0)
    g_error("no line %s... on %s", prefix, topic);
  return line;
}

static void test_child_operations_reach_their_plugin(void) {
  char *dir = gateway_plugin_dir();
  fx f = {.plugin_dir = dir};
  fx_up(&f, "[plugin.itest]\nchild = kid1\n[plugin.gateway]\nchildren = 2\n");

  /* Each device announces what its own plugin handles. */
  char *root = line_on(&f, "s/us", "114,");
  g_assert_cmpstr(root, ==, "114,c8y_Command,c8y_Restart");
  g_assert_cmpint(sim_wait_line(f.s, "s/us/gw1", "114,", 0, 10000), >=, 0);
  char *gw = line_on(&f, "s/us/gw1", "114,");
  g_assert_cmpstr(gw, ==, "114,c8y_Restart");
  char *kid = line_on(&f, "s/us/kid1", "114,");
  g_assert_cmpstr(kid, ==, "114,c8y_Command,c8y_Restart");
  g_free(root);
  g_free(gw);
  g_free(kid);

  /* A command for a gateway child: not run on the gateway, but failed. */
  long cmd = sim_create_operation(f.s, "511,gw1,ok should not run");
  g_assert_cmpint(fx_wait_op(&f, cmd, 10000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(f.s, cmd), ==, "not supported by gw1");
  g_assert_cmpint(sim_wait_line(f.s, "s/us/gw1", "501,c8y_Command", 0, 1000),
                  >=, 0);
  /* A restart of the child goes to the gateway plugin, not the reboot. */
  long rst = sim_create_operation(f.s, "510,gw2");
  g_assert_cmpint(fx_wait_op(&f, rst, 10000), ==, SIM_OP_SUCCESSFUL);
  g_assert_true(agent_proc_wait_log(f.a, "gateway: restart gw2", 5000));
  /* The plugin that registered kid1 serves it; the root still works. */
  long k = sim_create_operation(f.s, "511,kid1,ok kid ran");
  g_assert_cmpint(fx_wait_op(&f, k, 10000), ==, SIM_OP_SUCCESSFUL);
  long r = sim_create_operation(f.s, "511," FX_DEVICE ",ok root ran");
  g_assert_cmpint(fx_wait_op(&f, r, 10000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, r), ==, "root ran");
  fx_down(&f);
  remove_plugin_dir(dir);
}

/* Counts messages on s/us carrying at least one 101 line, and the lines. */
static size_t publishes_with(fx *f, const char *prefix, size_t from,
                             size_t *lines) {
  size_t n = 0, plen = strlen(prefix);
  *lines = 0;
  for (size_t i = from; i < sim_message_count(f->s); i++) {
    const sim_message *m = sim_message_at(f->s, i);
    if (strcmp(m->topic, "s/us") != 0)
      continue;
    size_t here = 0;
    for (const char *p = m->payload; p; p = strchr(p, '\n')) {
      if (*p == '\n')
        p++;
      here += strncmp(p, prefix, plen) == 0;
    }
    *lines += here;
    n += here > 0;
  }
  return n;
}

static void test_registration_of_1000_children(void) {
  char *dir = gateway_plugin_dir();
  /* The simulator's own client must be back on the restarted broker before
   * the agent reconnects, or it misses what the agent sends. */
  fx f = {.plugin_dir = dir, .reconnect_ms = 3000};
  fx_up(&f, "[plugin.gateway]\nchildren = 1000\n");
  size_t lines = 0;
  size_t pubs = publishes_with(&f, "101,", 0, &lines);
  g_assert_cmpuint(lines, ==, 1000);
  g_assert_cmpuint(pubs, <=, 10);
  /* The 500 came after every registration line. */
  long last101 = -1;
  char *line = NULL;
  char id[32];
  snprintf(id, sizeof id, "101,gw1000,");
  last101 = fx_line_pos(&f, "s/us", id, &line);
  g_free(line);
  g_assert_cmpint(last101, >=, 0);
  g_assert_cmpint(fx_line_pos(&f, "s/us", "500", NULL), >, last101);
  g_assert_cmpint(fx_line_pos(&f, "s/us", "117,", NULL), <,
                  fx_line_pos(&f, "s/us", "500", NULL));

  /* And again on the next connect. */
  g_assert_cmpint(sim_broker_kill(f.s), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "lost", 15000));
  size_t before = sim_message_count(f.s);
  g_assert_cmpint(sim_broker_start(f.s), ==, 0);
  if (sim_wait_line(f.s, "s/us", "500", before, 30000) < 0) {
    char *log = agent_proc_log(f.a);
    g_error("no 500 after the reconnect; log:\n%s", log);
  }
  publishes_with(&f, "101,", before, &lines);
  g_assert_cmpuint(lines, ==, 1000);
  long op = sim_create_operation(f.s, "510,gw777");
  g_assert_cmpint(fx_wait_op(&f, op, 10000), ==, SIM_OP_SUCCESSFUL);
  fx_down(&f);
  remove_plugin_dir(dir);
}

/* "2026-12-01T22:01:02.345Z"-like: the time the plugin made the call. */
static void assert_has_time(const char *line, size_t field) {
  gchar **f = g_strsplit(line, ",", -1);
  g_assert_cmpuint(g_strv_length(f), >, field);
  g_assert_true(g_regex_match_simple(
      "^20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-9:.]+(Z|[+-][0-9:]+)$", f[field],
      0, 0));
  g_strfreev(f);
}

/* A plugin's inventory line queued before the connect (the software
 * plugin's 143/140) goes out only after the registration: 100 creates the
 * device with its name and type, 114 lists its operations first. */
static void test_registration_before_plugin_lines(void) {
  fx f = {0};
  fx_up(&f, "[plugin.itest]\ninit_static = 143,itest_pkg\n");
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "143,itest_pkg", 0, 10000), >=, 0);
  long p100 = fx_line_pos(&f, "s/us", "100,", NULL);
  long p114 = fx_line_pos(&f, "s/us", "114,", NULL);
  long p143 = fx_line_pos(&f, "s/us", "143,itest_pkg", NULL);
  g_assert_cmpint(p100, ==, 0);
  g_assert_cmpint(p114, >, p100);
  g_assert_cmpint(p143, >, p114);
  fx_down(&f);
}

static void test_events_and_alarms_keep_their_time(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long op = sim_create_operation(f.s, "511," FX_DEVICE ",emit");
  g_assert_cmpint(fx_wait_op(&f, op, 10000), ==, SIM_OP_SUCCESSFUL);
  char *ev = line_on(&f, "s/us", "400,itest_Event,");
  assert_has_time(ev, 4);
  char *al = line_on(&f, "s/us", "302,itest_Alarm,");
  assert_has_time(al, 3);
  g_free(ev);
  g_free(al);
  fx_down(&f);
}

static void test_sigterm_with_operations_running(void) {
  fx f = {0};
  fx_up(&f, NULL);
  /* One handler that gives up when told (op_cancelled), one that never
   * returns: the stop must not wait for either. */
  long coop = sim_create_operation(f.s, "511," FX_DEVICE ",hang");
  g_assert_true(agent_proc_wait_log(f.a, "queued as #", 5000));
  long stuck = sim_create_operation(f.s, "511," FX_DEVICE ",stuck");
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "501,c8y_Command", 0, 5000), >=,
                  0);
  size_t before = sim_message_count(f.s);
  gint64 t0 = g_get_monotonic_time();
  g_assert_cmpint(agent_proc_signal(f.a, SIGTERM), ==, 0);
  g_assert_cmpint(agent_proc_wait_exit(f.a, 10000), ==, 0);
  gint64 took_ms = (g_get_monotonic_time() - t0) / 1000;
  g_test_message("stop took %" G_GINT64_FORMAT " ms", took_ms);
  /* The cooperative handler's own reason after the agent's, and nothing
   * left EXECUTING. */
  g_assert_cmpint(sim_wait_operation_done(f.s, coop, 2000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(f.s, coop), ==,
                  "agent stopped: gave up after cancellation");
  /* The stuck one was queued behind it (same fragment): still PENDING, so
   * the next start's 500 brings it back. */
  g_assert_cmpint(sim_operation_status(f.s, stuck), ==, SIM_OP_PENDING);
  /* A clean DISCONNECT: no last will. */
  g_assert_cmpint(
      sim_wait_line(f.s, "s/us", "400,c8y_ConnectionEvent", before, 500), <, 0);
  fx_down(&f);
}

/* State letter of a process ('Z' zombie), or 0 when it is gone. */
static char process_state(long pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *close_paren = strrchr(buf, ')');
  return close_paren && close_paren[1] == ' ' ? close_paren[2] : 0;
}

static bool process_ended(long pid, int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    char st = process_state(pid);
    if (st == 0 || st == 'Z')
      return true;
    g_usleep(10000);
  }
  return false;
}

/* A process a plugin started and left running (its own process group, and
 * a child of that) ends with the agent's stop. */
static void test_sigterm_ends_left_processes(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long op = sim_create_operation(f.s, "511," FX_DEVICE ",leave");
  g_assert_cmpint(sim_wait_operation_done(f.s, op, 10000), ==,
                  SIM_OP_SUCCESSFUL);
  long leader = atol(sim_operation_detail(f.s, op));
  g_assert_cmpint(leader, >, 0);
  /* The shell's background sleep, in the leader's group. */
  long member = 0;
  for (int i = 0; i < 500 && member <= 0; i++) {
    char path[96];
    snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", leader, leader);
    char *text = NULL;
    if (g_file_get_contents(path, &text, NULL, NULL))
      member = atol(text);
    g_free(text);
    if (member <= 0)
      g_usleep(10000);
  }
  g_assert_cmpint(member, >, 0);
  g_assert_cmpint(process_state(member), !=, 0);
  g_assert_cmpint(agent_proc_signal(f.a, SIGTERM), ==, 0);
  g_assert_cmpint(agent_proc_wait_exit(f.a, 10000), ==, 0);
  char want[96];
  snprintf(want, sizeof want, "ending process %ld left by a plugin", leader);
  g_assert_true(agent_proc_wait_log(f.a, want, 1000));
  g_assert_true(process_ended(leader, 5000));
  g_assert_true(process_ended(member, 5000));
  fx_down(&f);
}

static void test_sigterm_with_a_stuck_handler(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long stuck = sim_create_operation(f.s, "511," FX_DEVICE ",stuck");
  g_assert_true(agent_proc_wait_log(f.a, "queued as #", 5000));
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "501,c8y_Command", 0, 5000), >=,
                  0);
  g_assert_cmpint(agent_proc_signal(f.a, SIGTERM), ==, 0);
  g_assert_cmpint(agent_proc_wait_exit(f.a, 10000), ==, 0);
  g_assert_cmpint(sim_wait_operation_done(f.s, stuck, 2000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(f.s, stuck), ==, "agent stopped");
  char *log = agent_proc_log(f.a);
  g_assert_nonnull(strstr(log, "abandoning the plugin"));
  g_free(log);
  fx_down(&f);
}

static void test_late_completion_is_refused_safely(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long op = sim_create_operation(f.s, "511," FX_DEVICE ",twice");
  g_assert_cmpint(fx_wait_op(&f, op, 10000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, op), ==, "first");
  g_assert_true(agent_proc_wait_log(
      f.a, "itest: second completion returned -5 -5", 5000));
  /* Still alive and working. */
  long next = sim_create_operation(f.s, "511," FX_DEVICE ",ok still here");
  g_assert_cmpint(fx_wait_op(&f, next, 10000), ==, SIM_OP_SUCCESSFUL);
  fx_down(&f);
}

/* The MQTT socket inside the agent: duplicated into this process with
 * pidfd_getfd (needs ptrace rights over the agent: root or same user). */
static int agent_socket_nodelay(fx *f) {
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_getfd)
  int pidfd = (int)syscall(SYS_pidfd_open, agent_proc_pid(f->a), 0);
  if (pidfd < 0)
    return -1;
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/fd", (int)agent_proc_pid(f->a));
  GDir *d = g_dir_open(dir, 0, NULL);
  int result = -1;
  const char *name;
  while (d && (name = g_dir_read_name(d)) != NULL) {
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, atoi(name), 0);
    if (fd < 0)
      continue;
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &len) == 0 &&
        peer.sin_family == AF_INET && ntohs(peer.sin_port) == sim_port(f->s)) {
      int v = 0;
      socklen_t vl = sizeof v;
      if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &vl) == 0)
        result = v != 0;
    }
    close(fd);
  }
  if (d)
    g_dir_close(d);
  close(pidfd);
  return result;
#else
  (void)f;
  return -1;
#endif
}

static void test_mqtt_socket_has_nodelay(void) {
  fx f = {0};
  fx_up(&f, NULL);
  int v = agent_socket_nodelay(&f);
  if (v < 0) {
    g_test_skip("cannot inspect the agent's sockets (pidfd_getfd)");
  } else {
    g_assert_cmpint(v, ==, 1);
  }
  fx_down(&f);
}

static void test_unterminated_quote_spoils_one_record(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long op = sim_create_operation(f.s, "511," FX_DEVICE ",ok after");
  g_assert_cmpint(fx_wait_op(&f, op, 10000), ==, SIM_OP_SUCCESSFUL);
  /* A broken record followed by a valid one in the same publish. */
  long op2 = sim_create_operation(f.s, "511," FX_DEVICE ",ok second");
  (void)op2;
  g_assert_cmpint(sim_publish(f.s, "s/ds",
                              "511," FX_DEVICE ",\"never closed\n"
                              "510,unknown-device\n"),
                  ==, 0);
  g_assert_true(
      agent_proc_wait_log(f.a, "unknown device 'unknown-device'", 5000));
  fx_down(&f);
}

/* Processes plugins start inherit neither the MQTT socket nor the queue
 * and journal files. */
static void test_no_descriptor_leaks_into_children(void) {
  fx f = {0};
  fx_up(&f, NULL);
  long op = sim_create_operation(f.s, "511," FX_DEVICE ",fds");
  g_assert_cmpint(fx_wait_op(&f, op, 10000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, op), ==, "sockets=0 files=0");
  fx_down(&f);
}

/* Backoff with jitter stays within [reconnect_min_ms, reconnect_max_ms]. */
static void test_reconnect_delay_bounded(void) {
  fx f = {.reconnect_ms = 150};
  fx_up(&f, NULL);
  g_assert_cmpint(sim_broker_kill(f.s), ==, 0);
  /* With min = max = 150 ms, +-20% jitter used to give up to 180 ms. */
  for (int tries = 0; tries < 300; tries++) {
    char *log = agent_proc_log(f.a);
    int n = 0;
    for (const char *p = log; (p = strstr(p, "reconnecting to ")); p++) {
      const char *in = strstr(p, " in ");
      long ms = in ? strtol(in + 4, NULL, 10) : -1;
      g_assert_cmpint(ms, >=, 150);
      g_assert_cmpint(ms, <=, 150);
      n++;
    }
    g_free(log);
    if (n >= 8)
      break;
    g_usleep(20 * 1000);
  }
  g_assert_cmpint(sim_broker_start(f.s), ==, 0);
  fx_down(&f);
}

/* A quiet device costs the platform nothing: no 125 probes while nothing
 * waits for an acknowledgement (MQTT's PINGREQ watches the link). */
static void test_idle_link_sends_no_heartbeat(void) {
  fx f = {0};
  fx_up(&f, "[c8y]\nkeepalive = 5\n");
  size_t from = sim_message_count(f.s);
  /* Three half-keepalive periods of silence. */
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "125", from, 7500), <, 0);
  long op = sim_create_operation(f.s, "511," FX_DEVICE ",ok alive");
  g_assert_cmpint(fx_wait_op(&f, op, 10000), ==, SIM_OP_SUCCESSFUL);
  fx_down(&f);
}

/* SIGHUP while a producer never returns: the reload abandons that worker
 * and goes on; the reloaded plugin works. */
static void test_reload_with_a_stuck_producer(void) {
  fx f = {0};
  fx_up(&f, "[plugin.itest]\ninterval_ms = 200\nhang_producer = true\n");
  g_assert_true(agent_proc_wait_log(f.a, "itest: producer hanging", 10000));
  g_assert_cmpint(agent_proc_signal(f.a, SIGHUP), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "abandoning the plugin", 10000));
  g_assert_true(agent_proc_wait_log(f.a, "plugin itest 1.0 loaded", 10000));
  long op = sim_create_operation(f.s, "511," FX_DEVICE ",ok reloaded");
  g_assert_cmpint(fx_wait_op(&f, op, 10000), ==, SIM_OP_SUCCESSFUL);
  gint64 t0 = g_get_monotonic_time();
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  g_test_message("stop took %" G_GINT64_FORMAT " ms",
                 (g_get_monotonic_time() - t0) / 1000);
  fx_down(&f);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/correct/child-operations",
                  test_child_operations_reach_their_plugin);
  g_test_add_func("/correct/registration-1000-children",
                  test_registration_of_1000_children);
  g_test_add_func("/correct/registration-before-plugin-lines",
                  test_registration_before_plugin_lines);
  g_test_add_func("/correct/timestamps",
                  test_events_and_alarms_keep_their_time);
  g_test_add_func("/correct/sigterm-running",
                  test_sigterm_with_operations_running);
  g_test_add_func("/correct/sigterm-stuck", test_sigterm_with_a_stuck_handler);
  g_test_add_func("/correct/sigterm-ends-left-processes",
                  test_sigterm_ends_left_processes);
  g_test_add_func("/correct/late-completion",
                  test_late_completion_is_refused_safely);
  g_test_add_func("/correct/nodelay", test_mqtt_socket_has_nodelay);
  g_test_add_func("/correct/unterminated-quote",
                  test_unterminated_quote_spoils_one_record);
  g_test_add_func("/correct/no-fd-leaks",
                  test_no_descriptor_leaks_into_children);
  g_test_add_func("/correct/reconnect-bounded", test_reconnect_delay_bounded);
  g_test_add_func("/correct/idle-no-heartbeat",
                  test_idle_link_sends_no_heartbeat);
  g_test_add_func("/correct/reload-stuck-producer",
                  test_reload_with_a_stuck_producer);
  return g_test_run();
}
