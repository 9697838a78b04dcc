/* The services plugin against the real plugin host (testhost) and a
 * stand-in for systemd: a private dbus-daemon and a child process that owns
 * org.freedesktop.systemd1 with the calls the plugin makes (Subscribe,
 * LoadUnit, the units' ActiveState with PropertiesChanged), driven through a
 * pipe ("set <unit> <state>"). systemctl is a script on PATH that records
 * its arguments. The real systemd is tests/system/systemd_boot.sh. */
#include "plugin_test_util.h"
#include "testhost.h"

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#define SD_UNIT "org.freedesktop.systemd1.Unit"

/* ---- the stand-in (child process) ---- */

typedef struct fake_unit {
  char name[256];
  char path[512];
  char state[32];
} fake_unit;

static fake_unit fake_units[16];
static size_t nfake;
static unsigned fake_gets;

static int get_state(sd_bus *bus, const char *path, const char *iface,
                     const char *prop, sd_bus_message *reply, void *ud,
                     sd_bus_error *err) {
  (void)path;
  (void)iface;
  (void)prop;
  (void)err;
  /* A Get call; emitting PropertiesChanged reads the value too, outside
   * any incoming message. */
  if (sd_bus_get_current_message(bus))
    fake_gets++;
  return sd_bus_message_append(reply, "s", ((fake_unit *)ud)->state);
}

static const sd_bus_vtable unit_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("ActiveState", "s", get_state, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_VTABLE_END};

static int load_unit(sd_bus_message *m, void *ud, sd_bus_error *err) {
  (void)ud;
  (void)err;
  const char *name;
  int r = sd_bus_message_read(m, "s", &name);
  if (r < 0)
    return r;
  for (size_t i = 0; i < nfake; i++)
    if (strcmp(fake_units[i].name, name) == 0)
      return sd_bus_reply_method_return(m, "o", fake_units[i].path);
  if (nfake == G_N_ELEMENTS(fake_units))
    return -ENOMEM;
  fake_unit *u = &fake_units[nfake++];
  snprintf(u->name, sizeof u->name, "%s", name);
  snprintf(u->state, sizeof u->state, "inactive");
  char *path = NULL;
  sd_bus_path_encode("/org/freedesktop/systemd1/unit", name, &path);
  snprintf(u->path, sizeof u->path, "%s", path);
  free(path);
  sd_bus_add_object_vtable(sd_bus_message_get_bus(m), NULL, u->path, SD_UNIT,
                           unit_vtable, u);
  return sd_bus_reply_method_return(m, "o", u->path);
}

static int subscribe(sd_bus_message *m, void *ud, sd_bus_error *err) {
  (void)ud;
  (void)err;
  return sd_bus_reply_method_return(m, "");
}

static const sd_bus_vtable manager_vtable[] = {
    SD_BUS_VTABLE_START(0), SD_BUS_METHOD("LoadUnit", "s", "o", load_unit, 0),
    SD_BUS_METHOD("Subscribe", "", "", subscribe, 0), SD_BUS_VTABLE_END};

/* One command line from the test: "set <unit> <state>" or "gets". */
static void fake_command(sd_bus *bus, char *line, FILE *reply) {
  char unit[256], state[32];
  if (sscanf(line, "set %255s %31s", unit, state) == 2) {
    for (size_t i = 0; i < nfake; i++)
      if (strcmp(fake_units[i].name, unit) == 0) {
        snprintf(fake_units[i].state, sizeof fake_units[i].state, "%s", state);
        sd_bus_emit_properties_changed(bus, fake_units[i].path, SD_UNIT,
                                       "ActiveState", NULL);
      }
    fprintf(reply, "ok\n");
  } else {
    fprintf(reply, "%u\n", fake_gets);
  }
  fflush(reply);
}

static void fake_systemd(const char *address, int cmd_fd, int reply_fd) {
  sd_bus *bus = NULL;
  if (sd_bus_new(&bus) < 0 || sd_bus_set_address(bus, address) < 0 ||
      sd_bus_set_bus_client(bus, 1) < 0 || sd_bus_start(bus) < 0 ||
      sd_bus_add_object_vtable(bus, NULL, "/org/freedesktop/systemd1",
                               "org.freedesktop.systemd1.Manager",
                               manager_vtable, NULL) < 0 ||
      sd_bus_request_name(bus, "org.freedesktop.systemd1", 0) < 0)
    _exit(2);
  FILE *in = fdopen(cmd_fd, "r"), *out = fdopen(reply_fd, "w");
  if (write(reply_fd, "ready\n", 6) != 6)
    _exit(2);
  char line[512];
  for (;;) {
    while (sd_bus_process(bus, NULL) > 0) {
    }
    sd_bus_flush(bus);
    struct pollfd p[2] = {{.fd = sd_bus_get_fd(bus), .events = POLLIN},
                          {.fd = cmd_fd, .events = POLLIN}};
    if (poll(p, 2, -1) < 0)
      _exit(3);
    if (p[1].revents) {
      if (!fgets(line, sizeof line, in))
        _exit(0);
      fake_command(bus, line, out);
    }
  }
}

/* ---- the test side ---- */

typedef struct world {
  char *dir;
  GPid daemon;
  char address[600];
  pid_t fake;
  FILE *cmd, *reply;
  char *systemctl_log;
  testhost *h;
} world;

static void start_dbus(world *w) {
  char *conf = g_build_filename(w->dir, "bus.conf", NULL);
  char *text = g_strdup_printf(
      "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus "
      "Configuration 1.0//EN\" "
      "\"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
      "<busconfig><type>custom</type><listen>unix:path=%s/bus</listen>"
      "<auth>EXTERNAL</auth><policy context=\"default\">"
      "<allow send_destination=\"*\" eavesdrop=\"true\"/>"
      "<allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n",
      w->dir);
  g_assert_true(g_file_set_contents(conf, text, -1, NULL));
  char *argv[] = {"dbus-daemon", "--nofork", "--print-address",
                  g_strdup_printf("--config-file=%s", conf), NULL};
  int out_fd = -1;
  GError *err = NULL;
  g_assert_true(g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_SEARCH_PATH,
                                         NULL, NULL, &w->daemon, NULL, &out_fd,
                                         NULL, &err));
  FILE *out = fdopen(out_fd, "r");
  g_assert_nonnull(fgets(w->address, sizeof w->address, out));
  w->address[strcspn(w->address, "\n")] = '\0';
  fclose(out);
  g_free(argv[3]);
  g_free(text);
  g_free(conf);
}

static void start_fake(world *w) {
  int cmd[2], reply[2];
  g_assert_cmpint(pipe(cmd), ==, 0);
  g_assert_cmpint(pipe(reply), ==, 0);
  w->fake = fork();
  g_assert_cmpint(w->fake, >=, 0);
  if (w->fake == 0) {
    close(cmd[1]);
    close(reply[0]);
    fake_systemd(w->address, cmd[0], reply[1]);
    _exit(0);
  }
  close(cmd[0]);
  close(reply[1]);
  w->cmd = fdopen(cmd[1], "w");
  w->reply = fdopen(reply[0], "r");
  char line[64];
  g_assert_nonnull(fgets(line, sizeof line, w->reply));
  g_assert_cmpstr(line, ==, "ready\n");
}

/* Sends one command and waits for the stand-in's answer. */
static unsigned fake(world *w, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static unsigned fake(world *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(w->cmd, fmt, ap);
  va_end(ap);
  fputc('\n', w->cmd);
  fflush(w->cmd);
  char line[64];
  g_assert_nonnull(fgets(line, sizeof line, w->reply));
  return (unsigned)strtoul(line, NULL, 10);
}

static bool has_dbus_daemon(void) {
  char *p = g_find_program_in_path("dbus-daemon");
  g_free(p);
  return p != NULL;
}

static world *start(const char *units, const char *commands) {
  world *w = g_new0(world, 1);
  w->dir = g_dir_make_tmp("svc-test-XXXXXX", NULL);
  start_dbus(w);
  start_fake(w);
  /* systemctl: records its arguments; "fail.service" fails like systemd. */
  w->systemctl_log = g_build_filename(w->dir, "systemctl.log", NULL);
  char *script = g_build_filename(w->dir, "systemctl", NULL);
  char *text = g_strdup_printf(
      "#!/bin/sh\necho \"$*\" >>'%s'\n"
      "case \"$*\" in *fail.service) echo 'Job for fail.service failed.' >&2; "
      "exit 1;; esac\n",
      w->systemctl_log);
  g_assert_true(g_file_set_contents(script, text, -1, NULL));
  g_assert_cmpint(g_chmod(script, 0755), ==, 0);
  char *path = g_strdup_printf("%s:%s", w->dir, g_getenv("PATH"));
  g_setenv("PATH", path, TRUE);
  g_free(path);
  g_free(text);
  g_free(script);
  w->h = testhost_new("dev1", NULL);
  testhost_set_config(w->h, "units", units);
  testhost_set_config(w->h, "bus_address", w->address);
  testhost_set_config(w->h, "privileged", "direct");
  if (commands)
    testhost_set_config(w->h, "commands", commands);
  g_assert_cmpint(testhost_load(w->h, PLUGIN_PATH), ==, C8Y_OK);
  return w;
}

static void stop(world *w) {
  testhost_free(w->h);
  if (w->cmd)
    fclose(w->cmd);
  if (w->reply)
    fclose(w->reply);
  if (w->fake > 0) {
    kill(w->fake, SIGKILL);
    waitpid(w->fake, NULL, 0);
  }
  kill(w->daemon, SIGTERM);
  waitpid(w->daemon, NULL, 0);
  g_spawn_close_pid(w->daemon);
  ptu_rm_rf(w->dir);
  g_free(w->dir);
  g_free(w->systemctl_log);
  g_free(w);
}

/* Lines "topic|line" starting with want. */
static size_t lines(world *w, const char *want) {
  size_t n = 0, total = testhost_line_count(w->h);
  for (size_t i = 0; i < total; i++)
    n += g_str_has_prefix(testhost_line(w->h, i), want);
  return n;
}

/* Bounded wait until `count` lines start with want. */
static void wait_lines(world *w, const char *want, size_t count) {
  for (int i = 0; i < 1000 && lines(w, want) < count; i++)
    g_usleep(10 * 1000);
  g_assert_cmpuint(lines(w, want), ==, count);
}

static void test_watch(void) {
  if (!has_dbus_daemon()) {
    g_test_skip("dbus-daemon is not installed");
    return;
  }
  world *w = start("a.service, b.service", NULL);
  wait_lines(w, "s/us|102,dev1_a.service,systemd,a.service,down", 1);
  wait_lines(w, "s/us|102,dev1_b.service,systemd,b.service,down", 1);
  wait_lines(w, "s/us/dev1_a.service|114,c8y_ServiceCommand", 1);
  g_assert_true(testhost_has_fragment(w->h, "c8y_ServiceCommand"));
  /* activating is no change of up/down; active is, once. The change of b
   * after it is the sync point: signals arrive in order. */
  fake(w, "set a.service activating");
  fake(w, "set a.service active");
  fake(w, "set b.service active");
  wait_lines(w, "s/us/dev1_b.service|104,up", 1);
  wait_lines(w, "s/us/dev1_a.service|104,up", 1);
  fake(w, "set a.service reloading");
  fake(w, "set a.service deactivating");
  fake(w, "set a.service failed");
  fake(w, "set a.service inactive");
  fake(w, "set b.service inactive");
  wait_lines(w, "s/us/dev1_b.service|104,down", 1);
  g_assert_cmpuint(lines(w, "s/us/dev1_a.service|104,"), ==, 2);
  wait_lines(w, "s/us/dev1_a.service|104,down", 1);
  /* The changes came as signals: the state was read once per unit. */
  g_assert_cmpuint(fake(w, "gets"), ==, 2);
  stop(w);
}

static testhost_op_state command(world *w, const char *device,
                                 const char *fragment) {
  static int id = 100;
  char *doc = g_strdup_printf(
      "{\"id\":\"%d\",\"status\":\"PENDING\",\"externalSource\":{"
      "\"externalId\":\"%s\",\"type\":\"c8y_Serial\"},"
      "\"c8y_ServiceCommand\":%s}",
      ++id, device, fragment);
  testhost_op_state st = testhost_run_json_operation(w->h, doc, 10000);
  g_free(doc);
  return st;
}

static char *systemctl_calls(world *w) {
  char *text = NULL;
  if (!g_file_get_contents(w->systemctl_log, &text, NULL, NULL))
    text = g_strdup("");
  return text;
}

static void test_commands(void) {
  if (!has_dbus_daemon()) {
    g_test_skip("dbus-daemon is not installed");
    return;
  }
  world *w = start("a.service fail.service", NULL);
  wait_lines(w, "s/us|102,dev1_a.service,", 1);
  /* On the service: any case of the documented commands. */
  g_assert_cmpint(command(w, "dev1_a.service",
                          "{\"command\":\"restart\",\"serviceName\":"
                          "\"a.service\",\"serviceType\":\"systemd\"}"),
                  ==, TESTHOST_OP_SUCCEEDED);
  /* On the device, naming the unit. */
  g_assert_cmpint(command(w, "dev1",
                          "{\"command\":\"STOP\",\"serviceName\":\"a.service\","
                          "\"serviceType\":\"systemd\"}"),
                  ==, TESTHOST_OP_SUCCEEDED);
  char *calls = systemctl_calls(w);
  g_assert_cmpstr(calls, ==, "restart -- a.service\nstop -- a.service\n");
  g_free(calls);
  /* Refused, nothing run. */
  g_assert_cmpint(command(w, "dev1",
                          "{\"command\":\"STOP\",\"serviceName\":"
                          "\"ssh.service\",\"serviceType\":\"systemd\"}"),
                  ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(w->h), ==,
                  "refused: service 'ssh.service' is not one of the units in "
                  "[plugin.services] units");
  g_assert_cmpint(
      command(w, "dev1_a.service",
              "{\"command\":\"RELOAD\",\"serviceName\":\"a.service\"}"),
      ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(w->h), ==,
                  "refused: command 'RELOAD': only START, STOP and RESTART");
  g_assert_cmpint(
      command(w, "dev1_a.service",
              "{\"command\":\"START\",\"serviceName\":\"b.service\"}"),
      ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(w->h), "is not the unit"));
  g_assert_cmpint(
      command(w, "dev1_c8y-agent",
              "{\"command\":\"STOP\",\"serviceName\":\"c8y-agent\"}"),
      ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(w->h), ==,
                  "refused: dev1_c8y-agent is not a service of a unit in "
                  "[plugin.services] units");
  g_assert_cmpint(command(w, "dev1_a.service",
                          "{\"command\":\"START\",\"serviceType\":\"docker\"}"),
                  ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(w->h), "only systemd units"));
  calls = systemctl_calls(w);
  g_assert_cmpstr(calls, ==, "restart -- a.service\nstop -- a.service\n");
  g_free(calls);
  /* systemctl's failure is the operation's reason. */
  g_assert_cmpint(command(w, "dev1_fail.service", "{\"command\":\"START\"}"),
                  ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(w->h), "Job for fail.service"));
  stop(w);
}

static void test_commands_off(void) {
  if (!has_dbus_daemon()) {
    g_test_skip("dbus-daemon is not installed");
    return;
  }
  world *w = start("a.service", "false");
  wait_lines(w, "s/us|102,dev1_a.service,", 1);
  g_assert_false(testhost_has_fragment(w->h, "c8y_ServiceCommand"));
  g_assert_cmpuint(lines(w, "s/us/dev1_a.service|114,"), ==, 0);
  stop(w);
}

/* Without a bus nothing is announced, and the plugin says why as its own
 * service, down. The same once the bus goes away later. */
static void test_no_bus(void) {
  testhost *h = testhost_new("dev1", NULL);
  testhost_set_config(h, "units", "a.service");
  testhost_set_config(h, "bus_address", "unix:path=/nonexistent/bus");
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_false(testhost_has_fragment(h, "c8y_ServiceCommand"));
  g_assert_nonnull(testhost_find_log(h, "unit monitoring unavailable: cannot "
                                        "connect to the D-Bus at bus_address"));
  g_assert_nonnull(testhost_find_line(
      h, "102,dev1_c8y-agent_services,c8y-agent-plugin,services,down"));
  g_assert_null(testhost_find_line(h, "102,dev1_a.service"));
  testhost_free(h);
}

static void test_bus_lost(void) {
  if (!has_dbus_daemon()) {
    g_test_skip("dbus-daemon is not installed");
    return;
  }
  world *w = start("a.service", NULL);
  wait_lines(w, "s/us|102,dev1_a.service,", 1);
  kill(w->daemon, SIGTERM);
  wait_lines(
      w, "s/us|102,dev1_c8y-agent_services,c8y-agent-plugin,services,down", 1);
  g_assert_nonnull(testhost_find_log(w->h,
                                     "unit monitoring unavailable: the D-Bus "
                                     "connection failed"));
  stop(w);
}

static void test_bad_config(void) {
  static const char *const bad[] = {"nginx", "-x.service",
                                    "a.service a.service", "a b;c.service",
                                    "getty@.service"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    testhost *h = testhost_new("dev1", NULL);
    testhost_set_config(h, "units", bad[i]);
    g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_EINVAL);
    g_assert_nonnull(testhost_find_log(h, "units: '"));
    testhost_free(h);
  }
}

static void test_no_units(void) {
  testhost *h = testhost_new("dev1", NULL);
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_false(testhost_has_fragment(h, "c8y_ServiceCommand"));
  g_assert_nonnull(testhost_find_log(h, "no units configured"));
  g_assert_cmpuint(testhost_sent_count(h), ==, 0);
  testhost_free(h);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  /* A dead stand-in must not kill the test with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  g_test_add_func("/services/watch", test_watch);
  g_test_add_func("/services/commands", test_commands);
  g_test_add_func("/services/commands-off", test_commands_off);
  g_test_add_func("/services/no-bus", test_no_bus);
  g_test_add_func("/services/bus-lost", test_bus_lost);
  g_test_add_func("/services/bad-config", test_bad_config);
  g_test_add_func("/services/no-units", test_no_units);
  return g_test_run();
}
