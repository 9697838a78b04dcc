/* The agent speaks the systemd notify protocol itself: READY
 * once running, STATUS on connect, WATCHDOG from the healthy main loop,
 * STOPPING on shutdown. */
#include "fixture.h"

#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int notify_socket(char *path, size_t len) {
  snprintf(path, len, "%s/c8y-notify-%d.sock", g_get_tmp_dir(), getpid());
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  g_strlcpy(sa.sun_path, path, sizeof sa.sun_path);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  struct timeval tv = {0, 200 * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

/* Collects datagrams until `want` appears or the time is up. */
static gboolean wait_state(int fd, GString *seen, const char *want,
                           int timeout_ms) {
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  while (!strstr(seen->str, want) && g_get_monotonic_time() < end) {
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
      buf[n] = 0;
      g_string_append(seen, buf);
      g_string_append_c(seen, '\n');
    }
  }
  return strstr(seen->str, want) != NULL;
}

static void test_notify(void) {
  char path[256];
  int fd = notify_socket(path, sizeof path);
  g_setenv("NOTIFY_SOCKET", path, TRUE);
  g_setenv("WATCHDOG_USEC", "400000", TRUE); /* a ping every 200 ms */
  fx f = {0};
  fx_start_sim(&f);
  fx_make_agent(&f, "secret", NULL);
  fx_start_agent(&f);
  g_unsetenv("NOTIFY_SOCKET");
  g_unsetenv("WATCHDOG_USEC");
  GString *seen = g_string_new("");
  g_assert_true(wait_state(fd, seen, "READY=1", 10000));
  g_assert_true(wait_state(fd, seen, "STATUS=connected", 10000));
  /* Several watchdog pings within a second. */
  g_string_truncate(seen, 0);
  gint64 end = g_get_monotonic_time() + G_USEC_PER_SEC;
  while (g_get_monotonic_time() < end)
    wait_state(fd, seen, "never", 100);
  int pings = 0;
  for (const char *p = seen->str; (p = strstr(p, "WATCHDOG=1")); p++)
    pings++;
  g_assert_cmpint(pings, >=, 3);
  agent_proc_signal(f.a, SIGTERM);
  g_assert_true(wait_state(fd, seen, "STOPPING=1", 10000));
  g_assert_cmpint(agent_proc_wait_exit(f.a, 10000), ==, 0);
  g_string_free(seen, TRUE);
  close(fd);
  unlink(path);
  fx_down(&f);
}

/* A plugin that is down says so in systemctl status, with the reason, and
 * the line follows when it reports itself up again. */
static void test_plugin_down_status(void) {
  char path[256];
  int fd = notify_socket(path, sizeof path);
  g_setenv("NOTIFY_SOCKET", path, TRUE);
  fx f = {.plugin_dir = SVCTEST_PLUGIN_DIR};
  fx_start_sim(&f);
  fx_make_agent(&f, "secret", NULL);
  fx_start_agent(&f);
  g_unsetenv("NOTIFY_SOCKET");
  GString *seen = g_string_new("");
  g_assert_true(wait_state(fd, seen, "STATUS=connected", 10000));
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "500", 0, 15000), >=, 0);
  long id = sim_create_json_operation(
      f.s, FX_DEVICE,
      "{\"svctest_Health\":{\"up\":false,\"reason\":\"bus unplugged\"}}");
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_true(wait_state(
      fd, seen, "STATUS=connected; plugins down: svctest (bus unplugged)",
      10000));
  g_string_truncate(seen, 0);
  id = sim_create_json_operation(
      f.s, FX_DEVICE, "{\"svctest_Health\":{\"up\":true,\"reason\":\"\"}}");
  g_assert_cmpint(fx_wait_op(&f, id, 15000), ==, SIM_OP_SUCCESSFUL);
  g_assert_true(wait_state(fd, seen, "STATUS=connected\n", 10000));
  g_string_free(seen, TRUE);
  close(fd);
  unlink(path);
  fx_down(&f);
}

/* A start a restart cannot fix (a bad device id) exits with the status the
 * unit's RestartPreventExitStatus lists and tells systemd why. */
static void test_fatal_status(void) {
  char path[256];
  int fd = notify_socket(path, sizeof path);
  g_setenv("NOTIFY_SOCKET", path, TRUE);
  agent_proc *a = agent_proc_new("[c8y]\ntenant = t1\nuser = u\npassword = p\n"
                                 "host = 127.0.0.1\ntls = false\n"
                                 "[device]\nid = dev,1\n");
  g_assert_nonnull(a);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  g_unsetenv("NOTIFY_SOCKET");
  GString *seen = g_string_new("");
  g_assert_true(
      wait_state(fd, seen, "STATUS=exited 1 (bad configuration", 10000));
  g_assert_nonnull(strstr(seen->str, "[device] id: not a usable device id"));
  g_assert_null(strstr(seen->str, "READY=1"));
  g_assert_cmpint(agent_proc_wait_exit(a, 10000), ==, 1);
  agent_proc_free(a);
  g_string_free(seen, TRUE);
  close(fd);
  unlink(path);
}

/* --check-config refuses what a start would refuse (a non-UTF-8 id used to
 * pass it, then the daemon exited 2 and systemd restarted it forever). */
static void test_check_config_agrees(void) {
  agent_proc *a = agent_proc_new("[c8y]\ntenant = t1\nuser = u\npassword = p\n"
                                 "host = 127.0.0.1\ntls = false\n"
                                 "[device]\nid = dev\xff\xfe\n");
  g_assert_nonnull(a);
  const char *bin = g_getenv("C8Y_AGENT_BIN");
  char *argv[] = {(char *)bin, "--check-config", "-c",
                  (char *)agent_proc_config(a), NULL};
  char *err = NULL;
  int status = -1;
  GError *gerr = NULL;
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
               &err, &status, &gerr);
  g_assert_no_error(gerr);
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 1);
  g_assert_nonnull(strstr(err, "[device] id: not a usable device id: it is "
                               "not valid UTF-8"));
  g_free(err);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  g_assert_cmpint(agent_proc_wait_exit(a, 10000), ==, 1);
  agent_proc_free(a);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/notify/plugin-down", test_plugin_down_status);
  g_test_add_func("/notify/ready-watchdog-stopping", test_notify);
  g_test_add_func("/notify/fatal-exit-status", test_fatal_status);
  g_test_add_func("/notify/check-config-agrees", test_check_config_agrees);
  return g_test_run();
}
