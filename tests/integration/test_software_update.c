/* c8y_SoftwareUpdate end to end: the real agent with the bundled plugins
 * against the simulator's MQTT and REST sides.
 *   - 528 with a URL on the tenant: the agent downloads the package file
 *     (authenticated) and the software plugin installs it as a file;
 *   - the agent updating itself: the install restarts the agent (as a
 *     package's postinst does) before the operation completes; the next
 *     start resumes the operation, the plugin finds the requested version
 *     installed and reports 503 with the new list. */
#include "fixture.h"
#include "plugin_test_util.h"
#include "sim_http.h"

#include <glib.h>
#include <string.h>

typedef struct swx {
  fx f;
  sim_http *h;
  char *dir, *db, *installed, *mark;
} swx;

/* install_file_command "installs" the package: copies it, records the
 * package in the fake package database, leaves a mark, and with `hang`
 * keeps running (the agent is restarted meanwhile, as by a postinst). */
static void swx_up(swx *x, const char *version, int hang, int resume_wait) {
  x->dir = ptu_make_tmpdir("c8y-it-sw");
  x->db = g_build_filename(x->dir, "db", NULL);
  x->installed = g_build_filename(x->dir, "installed.deb", NULL);
  x->mark = g_build_filename(x->dir, "mark", NULL);
  ptu_write_text(x->db, "c8y-agent\t0.1.0-1\n");
  fx_start_sim(&x->f);
  sim_http_options ho = {.mqtt = x->f.s};
  char err[256];
  if (sim_http_start(&ho, &x->h, err, sizeof err) != 0)
    g_error("sim_http: %s", err);
  char *ini = g_strdup_printf(
      "[c8y]\nhttp_url = %s\n"
      "[plugin.software]\ntype = apt\nprivileged = direct\n"
      "list_command = cat '%s'\n"
      "install_file_command = cp {file} '%s' && printf '%%s\\t%%s\\n' {name} "
      "'%s' > '%s' && touch '%s'%s\n"
      "resume_wait = %d\n" FX_AS_PACKAGED,
      sim_http_url(x->h), x->db, x->installed, version, x->db, x->mark,
      hang ? " && sleep 60" : "", resume_wait);
  x->f.plugin_dir = g_getenv("C8Y_PLUGIN_OUT");
  g_assert_nonnull(x->f.plugin_dir);
  fx_make_agent(&x->f, "secret", ini);
  g_free(ini);
  fx_start_agent(&x->f);
  if (sim_wait_line(x->f.s, "s/us", "500", 0, 15000) < 0) {
    char *log = agent_proc_log(x->f.a);
    g_error("agent never sent 500; log:\n%s", log);
  }
}

static void swx_down(swx *x) {
  /* sim_http_stop unhooks itself from the MQTT sim: stop that last. */
  sim *s = x->f.s;
  x->f.s = NULL;
  fx_down(&x->f);
  sim_http_stop(x->h);
  if (s)
    sim_stop(s);
  ptu_rm_rf(x->dir);
  g_free(x->dir);
  g_free(x->db);
  g_free(x->installed);
  g_free(x->mark);
}

static char *package(swx *x, const char *name, const char *body, long *id) {
  char *path = g_build_filename(x->dir, name, NULL);
  ptu_write_text(path, body);
  *id = sim_http_add_binary(x->h, path);
  g_assert_cmpint(*id, >, 0);
  g_free(path);
  return g_strdup_printf("%s/inventory/binaries/%ld", sim_http_url(x->h), *id);
}

/* Serves BODY as the binary FILE and asks for c8y-agent 0.2.0 from it
 * (528); returns the operation's id. */
static long request_update(swx *x, const char *file, const char *body) {
  long bin;
  char *url = package(x, file, body, &bin);
  char *line =
      g_strdup_printf("528," FX_DEVICE ",c8y-agent,0.2.0,%s,install", url);
  long id = sim_create_operation(x->f.s, line);
  g_free(line);
  g_free(url);
  return id;
}

/* Bounded wait for the install command's mark: the "postinst" ran. */
static void wait_installed(swx *x) {
  for (int i = 0; i < 1500 && !g_file_test(x->mark, G_FILE_TEST_EXISTS); i++)
    g_usleep(20 * 1000);
  g_assert_true(g_file_test(x->mark, G_FILE_TEST_EXISTS));
}

static void test_528_url(void) {
  swx x = {0};
  swx_up(&x, "0.2.0-1", 0, 30);
  size_t from = sim_message_count(x.f.s);
  long id = request_update(&x, "c8y-agent_0.2.0-1_amd64.deb", "!<arch>\nv2\n");
  g_assert_cmpint(fx_wait_op(&x.f, id, 30000), ==, SIM_OP_SUCCESSFUL);
  char *got = ptu_read_text_or_empty(x.installed);
  g_assert_cmpstr(got, ==, "!<arch>\nv2\n");
  /* Fetched from the tenant's binaries, with the device's credentials. */
  g_assert_cmpuint(sim_http_requests(x.h, "GET", "/inventory/binaries"), >=, 1);
  g_assert_cmpuint(sim_http_unauthorized(x.h), ==, 0);
  g_assert_cmpint(
      sim_wait_line(x.f.s, "s/us", "140,c8y-agent,0.2.0-1,apt,", from, 5000),
      >=, 0);
  g_free(got);
  swx_down(&x);
}

static void test_self_update_across_restart(void) {
  swx x = {0};
  swx_up(&x, "0.2.0-1", 1, 30);
  long id = request_update(&x, "c8y-agent.deb", "!<arch>\nv2\n");
  /* The install ran; the "postinst" now restarts the agent. */
  wait_installed(&x);
  g_assert_cmpint(fx_status_after_start(&x.f, id), ==, SIM_OP_EXECUTING);
  g_assert_cmpint(agent_proc_stop(x.f.a, 15000), ==, 0);
  g_assert_cmpint(sim_operation_status(x.f.s, id), ==, SIM_OP_EXECUTING);
  size_t from = sim_message_count(x.f.s);
  fx_start_agent(&x.f);
  g_assert_cmpint(fx_wait_op(&x.f, id, 30000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpint(
      sim_wait_line(x.f.s, "s/us", "140,c8y-agent,0.2.0-1,apt,", from, 5000),
      >=, 0);
  swx_down(&x);
}

static void test_self_update_wrong_version(void) {
  swx x = {0};
  /* The package turns out to carry another version than requested; the
   * check gives up after resume_wait (short here). */
  swx_up(&x, "0.1.9-1", 1, 1);
  long id = request_update(&x, "c8y-agent.deb", "!<arch>\nold\n");
  wait_installed(&x);
  g_assert_cmpint(agent_proc_stop(x.f.a, 15000), ==, 0);
  fx_start_agent(&x.f);
  g_assert_cmpint(fx_wait_op(&x.f, id, 30000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(x.f.s, id), ==,
                  "after the agent restarted, c8y-agent is at version 0.1.9-1, "
                  "not 0.2.0 as requested");
  swx_down(&x);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/software/528-url", test_528_url);
  g_test_add_func("/software/self-update-across-restart",
                  test_self_update_across_restart);
  g_test_add_func("/software/self-update-wrong-version",
                  test_self_update_wrong_version);
  return g_test_run();
}
