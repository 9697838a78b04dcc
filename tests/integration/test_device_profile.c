/* Device profiles, device parameters and "measure now" end to end: the real
 * agent with the bundled plugins as the package installs them, against the
 * simulator's MQTT and REST sides.
 *   - a profile with firmware, software and configuration (527 and 531 in
 *     one publish, and its JSON document) across the reboot its firmware
 *     step needs: the agent is killed where the firmware plugin reboots and
 *     started again with a new boot id;
 *   - a profile whose software step fails: configuration not applied, 502;
 *   - 527 and 531 in publishes of their own: the profile runs once;
 *   - 532 through an exec drop-in: 408 then 503; a failing hook: 502;
 *   - 517 measured now by system_metrics. */
#include "fixture.h"
#include "sim_http.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct dp {
  fx f;
  sim_http *h;
  char *dir;
  char *boot, *running, *pending, *slot, *reboot_mark; /* firmware */
  char *db, *installs;                                 /* software */
  char *ssh, *agent_conf;                              /* configuration */
  char *params;                                        /* 532 hook */
} dp;

static char *in_dir(dp *d, const char *name) {
  return g_build_filename(d->dir, name, NULL);
}

static void write_file(const char *path, const char *text) {
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static char *read_file(const char *path) {
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return g_strdup("");
  return text;
}

static char *binary(dp *d, const char *name, const char *body) {
  char *path = in_dir(d, name);
  write_file(path, body);
  long id = sim_http_add_binary(d->h, path);
  g_assert_cmpint(id, >, 0);
  g_free(path);
  return g_strdup_printf("%s/inventory/binaries/%ld", sim_http_url(d->h), id);
}

static void dp_up(dp *d) {
  g_assert_nonnull(d->dir = g_dir_make_tmp("c8y-it-profile-XXXXXX", NULL));
  d->boot = in_dir(d, "boot-id");
  d->running = in_dir(d, "running");
  d->pending = in_dir(d, "pending");
  d->slot = in_dir(d, "slot-b");
  d->reboot_mark = in_dir(d, "reboot-requested");
  d->db = in_dir(d, "packages");
  d->installs = in_dir(d, "installs");
  d->ssh = in_dir(d, "ssh.conf");
  d->agent_conf = in_dir(d, "agent.conf");
  d->params = in_dir(d, "params");
  write_file(d->boot, "boot-1\n");
  g_setenv("C8Y_BOOT_ID_FILE", d->boot, TRUE);
  write_file(d->running, "1.0\n");
  write_file(d->db, "base\t1.0\n");
  write_file(d->ssh, "old ssh\n");
  write_file(d->agent_conf, "old agent\n");
  write_file(d->params, "old\n");
  /* The 532 hook: records its arguments, refuses the value "refuse". */
  char *ops = in_dir(d, "operations.d");
  g_assert_cmpint(g_mkdir(ops, 0755), ==, 0);
  char *hook = in_dir(d, "set-params.sh");
  char *body = g_strdup_printf(
      "#!/bin/sh\nfor v in \"$@\"; do [ \"$v\" = refuse ] && { echo \"cannot "
      "set $1\" >&2; exit 4; }; done\nprintf '%%s|' \"$@\" > '%s'\n",
      d->params);
  write_file(hook, body);
  g_assert_cmpint(chmod(hook, 0755), ==, 0);
  char *dropin = g_build_filename(ops, "params.ini", NULL);
  char *ini = g_strdup_printf("template = 532\ncommand = %s\n", hook);
  write_file(dropin, ini);
  g_assert_cmpint(chmod(dropin, 0644), ==, 0);

  fx_start_sim(&d->f);
  sim_http_options ho = {.mqtt = d->f.s};
  char err[256];
  if (sim_http_start(&ho, &d->h, err, sizeof err) != 0)
    g_error("sim_http: %s", err);
  char *extra = g_strdup_printf(
      "[c8y]\nhttp_url = %s\n"
      "[plugin.firmware]\nname = devos\n"
      "install_command = cp \"$C8Y_FIRMWARE_FILE\" '%s' && echo "
      "\"$C8Y_FIRMWARE_VERSION\" > '%s'\n"
      "version_command = cat '%s'\nreboot_command = touch '%s'\n"
      "[plugin.software]\ntype = apt\nprivileged = direct\n"
      "list_command = cat '%s'\n"
      "install_command = test {name} != badpkg && printf '%%s\\t%%s\\n' "
      "{name} {version} >> '%s' && echo {name} >> '%s'\n"
      "remove_command = false\n"
      "[plugin.configuration]\nfiles = ssh_conf=%s agent_conf=%s\n"
      "[plugin.exec]\ndir = %s\n"
      "[plugin.system_metrics]\ninterval = 86400\n" FX_AS_PACKAGED,
      sim_http_url(d->h), d->slot, d->pending, d->running, d->reboot_mark,
      d->db, d->db, d->installs, d->ssh, d->agent_conf, ops);
  d->f.plugin_dir = g_getenv("C8Y_PLUGIN_OUT");
  g_assert_nonnull(d->f.plugin_dir);
  fx_make_agent(&d->f, "secret", extra);
  fx_start_connected(&d->f);
  g_free(extra);
  g_free(ini);
  g_free(dropin);
  g_free(body);
  g_free(hook);
  g_free(ops);
}

static void dp_down(dp *d) {
  sim *s = d->f.s; /* sim_http unhooks itself from the MQTT sim first */
  d->f.s = NULL;
  fx_down(&d->f);
  sim_http_stop(d->h);
  if (s)
    sim_stop(s);
  g_unsetenv("C8Y_BOOT_ID_FILE");
  fx_rm_rf(d->dir);
  char **paths[] = {&d->dir,  &d->boot,        &d->running, &d->pending,
                    &d->slot, &d->reboot_mark, &d->db,      &d->installs,
                    &d->ssh,  &d->agent_conf,  &d->params};
  for (size_t i = 0; i < G_N_ELEMENTS(paths); i++)
    g_free(*paths[i]);
}

/* Position of the first s/us line that starts with `prefix` and holds
 * `part` (NULL: any), counting lines from message `from` on; -1 if none. */
static long pos_of(dp *d, const char *prefix, const char *part, size_t from) {
  long pos = 0;
  for (size_t i = 0; i < sim_message_count(d->f.s); i++) {
    const sim_message *m = sim_message_at(d->f.s, i);
    if (strcmp(m->topic, "s/us") != 0)
      continue;
    gchar **lines = g_strsplit(m->payload, "\n", -1);
    for (gchar **l = lines; *l; l++, pos++)
      if (i >= from && g_str_has_prefix(*l, prefix) &&
          (!part || strstr(*l, part))) {
        g_strfreev(lines);
        return pos;
      }
    g_strfreev(lines);
  }
  return -1;
}

static size_t count(dp *d, const char *prefix) {
  return sim_count_lines(d->f.s, "s/us", prefix);
}

/* Waits (bounded) until the firmware plugin asks for the reboot. */
static void wait_reboot_request(dp *d) {
  for (int i = 0; i < 1500 && !g_file_test(d->reboot_mark, G_FILE_TEST_EXISTS);
       i++)
    g_usleep(20 * 1000);
  if (!g_file_test(d->reboot_mark, G_FILE_TEST_EXISTS)) {
    char *log = agent_proc_log(d->f.a);
    g_error("no reboot requested; agent log:\n%s", log);
  }
}

static void test_profile_across_reboot(void) {
  dp d = {0};
  dp_up(&d);
  long at114 = sim_wait_line(d.f.s, "s/us", "114,", 0, 10000);
  g_assert_cmpint(at114, >=, 0);
  const char *ops = sim_message_at(d.f.s, (size_t)at114)->payload;
  g_assert_nonnull(strstr(ops, "c8y_DeviceProfile"));
  g_assert_nonnull(strstr(ops, "c8y_ParameterUpdate"));
  char *fw = binary(&d, "os-2.0.img", "the new image\n");
  char *ssh = binary(&d, "ssh_conf", "new ssh\n");
  char *agent = binary(&d, "agent_conf", "new agent\n");
  char *lines = g_strdup_printf(
      "527," FX_DEVICE ",$FW,devos,2.0,%s,false,,$SW,jq,1.6,,install,$CONF,"
      "%s,ssh_conf,%s,agent_conf\n"
      "531," FX_DEVICE ",$FW,devos,2.0,%s,false,,$SW,jq,1.6,apt,,install,"
      "$CONF,%s,ssh_conf,%s,agent_conf",
      fw, ssh, agent, fw, ssh, agent);
  char *doc = g_strdup_printf(
      "{\"profileName\":\"p1\",\"profileId\":\"777\",\"c8y_DeviceProfile\":{"
      "\"firmware\":{\"name\":\"devos\",\"version\":\"2.0\",\"url\":\"%s\"},"
      "\"software\":[{\"name\":\"jq\",\"version\":\"1.6\",\"softwareType\":"
      "\"apt\",\"url\":\"\",\"action\":\"install\"}],\"configuration\":["
      "{\"name\":\"ssh_conf\",\"type\":\"ssh_conf\",\"url\":\"%s\"},"
      "{\"name\":\"agent_conf\",\"type\":\"agent_conf\",\"url\":\"%s\"}]}}",
      fw, ssh, agent);
  long id = sim_create_operation_copies(d.f.s, lines, doc);
  g_assert_cmpint(id, >, 0);
  wait_reboot_request(&d);
  g_assert_cmpint(fx_status_after_start(&d.f, id), ==, SIM_OP_EXECUTING);
  char *slot = read_file(d.slot);
  g_assert_cmpstr(slot, ==, "the new image\n");
  g_free(slot);
  /* The machine goes down where the plugin reboots it: no clean stop. */
  agent_proc_kill(d.f.a);
  size_t before = sim_message_count(d.f.s);
  char *v = read_file(d.pending);
  write_file(d.running, v);
  g_free(v);
  write_file(d.boot, "boot-2\n");
  fx_start_agent(&d.f);
  g_assert_cmpint(fx_wait_op(&d.f, id, 60000), ==, SIM_OP_SUCCESSFUL);

  /* Once started, once ended, by id once known; the steps have no status
   * of their own. */
  char *by_id = g_strdup_printf("504,%ld", id);
  g_assert_cmpuint(count(&d, "501,c8y_DeviceProfile") + count(&d, by_id), ==,
                   1);
  g_free(by_id);
  char *end = g_strdup_printf("506,%ld", id);
  g_assert_cmpint(sim_wait_line(d.f.s, "s/us", end, 0, 5000), >=, 0);
  const char *step_status[] = {"501,c8y_Firmware",
                               "503,c8y_Firmware",
                               "501,c8y_SoftwareUpdate",
                               "503,c8y_SoftwareUpdate",
                               "501,c8y_DownloadConfigFile",
                               "503,c8y_DownloadConfigFile",
                               "502,",
                               "505,"};
  for (size_t i = 0; i < G_N_ELEMENTS(step_status); i++)
    g_assert_cmpuint(count(&d, step_status[i]), ==, 0);
  /* The documented order: 121 false, firmware, software, configuration,
   * 121 true, the final status. */
  /* (121,false names the profile when its JSON copy came before the
   * start; the platform takes the executing profile's otherwise.) */
  long p121f = pos_of(&d, "121,false,", NULL, 0);
  long p115 = pos_of(&d, "115,devos,2.0,", fw, before);
  long p140 = pos_of(&d, "140,", "jq,1.6", before);
  long p120a = pos_of(&d, "120,ssh_conf,", NULL, before);
  long p120b = pos_of(&d, "120,agent_conf,", NULL, before);
  long p121t = pos_of(&d, "121,true,777", NULL, before);
  long pend = pos_of(&d, end, NULL, before);
  g_assert_cmpint(p121f, >=, 0);
  g_assert_cmpint(p115, >, p121f);
  g_assert_cmpint(p140, >, p115);
  g_assert_cmpint(p120a, >, p140);
  g_assert_cmpint(p120b, >, p120a);
  g_assert_cmpint(p121t, >, p120b);
  g_assert_cmpint(pend, >, p121t);
  g_assert_cmpuint(count(&d, "121,true"), ==, 1);
  g_free(end);
  char *got = read_file(d.ssh);
  g_assert_cmpstr(got, ==, "new ssh\n");
  g_free(got);
  got = read_file(d.agent_conf);
  g_assert_cmpstr(got, ==, "new agent\n");
  g_free(got);
  got = read_file(d.installs);
  g_assert_cmpstr(got, ==, "jq\n");
  g_free(got);
  g_free(lines);
  g_free(doc);
  g_free(fw);
  g_free(ssh);
  g_free(agent);
  dp_down(&d);
}

/* The software step fails: the profile fails with its reason, the
 * configuration step never runs, 121 never turns true. */
static void test_profile_software_fails(void) {
  dp d = {0};
  dp_up(&d);
  char *ssh = binary(&d, "ssh_conf", "new ssh\n");
  char *line = g_strdup_printf("527," FX_DEVICE ",$FW,,,,false,,$SW,"
                               "badpkg,2.0,,install,$CONF,%s,ssh_conf",
                               ssh);
  long id = sim_create_operation_copies(d.f.s, line, NULL);
  g_assert_cmpint(fx_wait_op(&d.f, id, 30000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(d.f.s, id), ==,
                  "software: install of badpkg 2.0 failed (exit 1)");
  g_assert_cmpint(
      sim_wait_line(d.f.s, "s/us", "502,c8y_DeviceProfile", 0, 5000), >=, 0);
  char *got = read_file(d.ssh);
  g_assert_cmpstr(got, ==, "old ssh\n");
  g_free(got);
  g_assert_cmpuint(count(&d, "120,"), ==, 0);
  g_assert_cmpuint(count(&d, "121,false"), ==, 1);
  g_assert_cmpuint(count(&d, "121,true"), ==, 0);
  g_free(line);
  g_free(ssh);
  dp_down(&d);
}

/* 527 and 531 of one profile in publishes of their own: it runs once. */
static void test_profile_twins_apart(void) {
  dp d = {0};
  dp_up(&d);
  char *ssh = binary(&d, "ssh_conf", "new ssh\n");
  char *plain = g_strdup_printf(
      "527," FX_DEVICE ",$FW,$SW,jq,1.7,,install,$CONF,%s,ssh_conf", ssh);
  char *typed = g_strdup_printf(
      "531," FX_DEVICE ",$FW,$SW,jq,1.7,apt,,install,$CONF,%s,ssh_conf", ssh);
  long id = sim_create_operation_copies(d.f.s, plain, NULL);
  g_assert_cmpint(sim_publish(d.f.s, "s/ds", typed), ==, 0);
  g_assert_cmpint(fx_wait_op(&d.f, id, 30000), ==, SIM_OP_SUCCESSFUL);
  /* Anything run twice would follow within the pair window; the agent's
   * log says the twin was dropped (after which nothing else runs). */
  g_assert_true(agent_proc_wait_log(d.f.a, "twin", 10000));
  g_assert_cmpuint(count(&d, "501,c8y_DeviceProfile"), ==, 1);
  g_assert_cmpuint(count(&d, "503,c8y_DeviceProfile"), ==, 1);
  g_assert_cmpuint(count(&d, "121,true"), ==, 1);
  g_assert_cmpuint(count(&d, "120,ssh_conf"), ==, 1);
  char *got = read_file(d.installs);
  g_assert_cmpstr(got, ==, "jq\n");
  g_free(got);
  g_free(plain);
  g_free(typed);
  g_free(ssh);
  dp_down(&d);
}

/* 532: the hook applies, 408 reports (change detection), then 503; a
 * failing hook: 502 with its reason, no 408, the old value stays. */
static void test_parameter_update(void) {
  dp d = {0};
  dp_up(&d);
  size_t from = sim_message_count(d.f.s);
  long id = sim_create_operation(d.f.s, "532," FX_DEVICE
                                        ",c8y_RelayStatus.left,b,false,"
                                        "Maint.name,s,\"Smith, J.\"");
  g_assert_cmpint(fx_wait_op(&d.f, id, 30000), ==, SIM_OP_SUCCESSFUL);
  char *got = read_file(d.params);
  g_assert_cmpstr(got, ==,
                  "c8y_RelayStatus.left|b|false|Maint.name|s|Smith, "
                  "J.|");
  g_free(got);
  const char *l408 = "408,,,true,c8y_RelayStatus.left,BOOLEAN,false,"
                     "Maint.name,STRING,\"Smith, J.\"";
  long p408 = pos_of(&d, l408, NULL, from);
  long p503 = pos_of(&d, "503,c8y_ParameterUpdate", NULL, from);
  g_assert_cmpint(p408, >=, 0);
  g_assert_cmpint(p503, >, p408);

  write_file(d.params, "old\n");
  id = sim_create_operation(d.f.s, "532," FX_DEVICE ",Mode,s,refuse");
  g_assert_cmpint(fx_wait_op(&d.f, id, 30000), ==, SIM_OP_FAILED);
  const char *why = sim_operation_detail(d.f.s, id);
  g_assert_nonnull(strstr(why, "exit 4"));
  g_assert_nonnull(strstr(why, "cannot set Mode"));
  g_assert_cmpuint(count(&d, "408,"), ==, 1);
  got = read_file(d.params);
  g_assert_cmpstr(got, ==, "old\n");
  g_free(got);
  dp_down(&d);
}

/* 517 with only the bundled plugins: system_metrics measures at once (its
 * interval here is a day). */
static void test_measurement_request(void) {
  dp d = {0};
  dp_up(&d);
  long at114 = sim_wait_line(d.f.s, "s/us", "114,", 0, 10000);
  g_assert_cmpint(at114, >=, 0);
  g_assert_nonnull(strstr(sim_message_at(d.f.s, (size_t)at114)->payload,
                          "c8y_MeasurementRequestOperation"));
  /* The reading at start; the next one of the producer is a day away. */
  g_assert_cmpint(
      sim_wait_line(d.f.s, "s/us", "201,c8y_SystemMetrics,", 0, 10000), >=, 0);
  size_t from = sim_message_count(d.f.s);
  long id = sim_create_operation(d.f.s, "517," FX_DEVICE ",all");
  g_assert_cmpint(fx_wait_op(&d.f, id, 30000), ==, SIM_OP_SUCCESSFUL);
  /* (Measurements never hold a status back in the queue: the 201 may
   * arrive just after the 503.) */
  long at = sim_wait_line(d.f.s, "s/us", "201,c8y_SystemMetrics,", from, 10000);
  g_assert_cmpint(at, >=, 0);
  g_assert_nonnull(
      strstr(sim_message_at(d.f.s, (size_t)at)->payload, ",c8y_Memory,"));
  dp_down(&d);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/profile/across-reboot", test_profile_across_reboot);
  g_test_add_func("/profile/software-fails", test_profile_software_fails);
  g_test_add_func("/profile/twins-apart", test_profile_twins_apart);
  g_test_add_func("/parameter/update", test_parameter_update);
  g_test_add_func("/measurement/request", test_measurement_request);
  return g_test_run();
}
