/* The bundled configuration (524, 526) and firmware (515) plugins end to
 * end: the real agent with every bundled plugin against the simulator's
 * MQTT and REST sides, including a firmware update completed (or refused)
 * after a simulated reboot. */
#include "fixture.h"
#include "sim_http.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

typedef struct px {
  fx f;
  sim_http *h;
  char *dir;  /* files the plugins work on */
  char *boot; /* the boot id the agent sees */
} px;

static char *path_in(px *x, const char *name) {
  return g_build_filename(x->dir, name, NULL);
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

static void px_up(px *x, const char *extra) {
  x->dir = g_dir_make_tmp("c8y-httpplug-XXXXXX", NULL);
  g_assert_nonnull(x->dir);
  x->boot = path_in(x, "boot_id");
  write_file(x->boot, "boot-1\n");
  g_setenv("C8Y_BOOT_ID_FILE", x->boot, TRUE);
  fx_start_sim(&x->f);
  sim_http_options ho = {.mqtt = x->f.s};
  char err[256];
  if (sim_http_start(&ho, &x->h, err, sizeof err) != 0)
    g_error("sim_http: %s", err);
  char *ini = g_strdup_printf("[c8y]\nhttp_url = %s\n%s" FX_AS_PACKAGED,
                              sim_http_url(x->h), extra);
  x->f.plugin_dir = g_getenv("C8Y_PLUGIN_OUT");
  g_assert_nonnull(x->f.plugin_dir);
  fx_make_agent(&x->f, "secret", ini);
  g_free(ini);
  fx_start_connected(&x->f);
}

static void px_down(px *x) {
  /* sim_http_stop unhooks itself from the MQTT sim: stop that last. */
  sim *s = x->f.s;
  x->f.s = NULL;
  fx_down(&x->f);
  sim_http_stop(x->h);
  if (s)
    sim_stop(s);
  g_unsetenv("C8Y_BOOT_ID_FILE");
  fx_rm_rf(x->dir);
  g_free(x->dir);
  g_free(x->boot);
}

static char *binary_url(px *x, const char *path) {
  long id = sim_http_add_binary(x->h, path);
  g_assert_cmpint(id, >, 0);
  return g_strdup_printf("%s/inventory/binaries/%ld", sim_http_url(x->h), id);
}

static int run(px *x, const char *line, const char **detail) {
  long id = sim_create_operation(x->f.s, line);
  g_assert_cmpint(id, >, 0);
  int st = fx_wait_op(&x->f, id, 30000);
  if (detail)
    *detail = sim_operation_detail(x->f.s, id);
  return st;
}

/* ---- configuration ------------------------------------------------------ */

static void test_config_download_and_upload(void) {
  px x = {0};
  char *cfgdir = g_dir_make_tmp("c8y-httpplug-cfg-XXXXXX", NULL);
  g_assert_nonnull(cfgdir);
  char *target = g_build_filename(cfgdir, "app.conf", NULL);
  write_file(target, "mode=old\n");
  /* The apply command accepts only files with "ok" in them. */
  char *extra =
      g_strdup_printf("[plugin.configuration]\nfiles = app_conf=%s\n"
                      "file_apply_command = grep -q ok \"$C8Y_CONFIG_FILE\"\n",
                      target);
  px_up(&x, extra);
  g_free(extra);
  g_assert_cmpint(sim_wait_line(x.f.s, "s/us", "119,app_conf", 0, 10000), >=,
                  0);
  /* The platform offers the typed transfers only if 114 lists them. */
  long at = sim_wait_line(x.f.s, "s/us", "114,", 0, 10000);
  g_assert_cmpint(at, >=, 0);
  const char *ops = sim_message_at(x.f.s, (size_t)at)->payload;
  g_assert_nonnull(strstr(ops, "c8y_DownloadConfigFile"));
  g_assert_nonnull(strstr(ops, "c8y_UploadConfigFile"));

  /* 524: the file is replaced and 120 names type, URL and file name. */
  char *good = path_in(&x, "good.conf");
  write_file(good, "mode=new ok\n");
  char *url = binary_url(&x, good);
  char *line = g_strdup_printf("524," FX_DEVICE ",%s,app_conf", url);
  size_t seen = sim_message_count(x.f.s);
  g_assert_cmpint(run(&x, line, NULL), ==, SIM_OP_SUCCESSFUL);
  char *got = read_file(target);
  g_assert_cmpstr(got, ==, "mode=new ok\n");
  g_free(got);
  char *l120 = g_strdup_printf("120,app_conf,%s,app.conf,", url);
  g_assert_cmpint(sim_wait_line(x.f.s, "s/us", l120, seen, 5000), >=, 0);
  g_free(l120);
  g_free(line);
  g_free(url);

  /* The apply command refuses the next one: the old file comes back. */
  char *bad = path_in(&x, "bad.conf");
  write_file(bad, "mode=bad\n");
  url = binary_url(&x, bad);
  line = g_strdup_printf("524," FX_DEVICE ",%s,app_conf", url);
  const char *detail;
  g_assert_cmpint(run(&x, line, &detail), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "file_apply_command failed"));
  g_assert_nonnull(strstr(detail, "previous file restored"));
  got = read_file(target);
  g_assert_cmpstr(got, ==, "mode=new ok\n");
  g_free(got);
  g_free(line);
  g_free(url);

  /* A binary the platform does not have: the HTTP status is the reason. */
  line = g_strdup_printf("524," FX_DEVICE ",%s/inventory/binaries/999999,"
                         "app_conf",
                         sim_http_url(x.h));
  g_assert_cmpint(run(&x, line, &detail), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "download of 'app_conf' failed"));
  g_assert_nonnull(strstr(detail, "404"));
  g_free(line);

  /* 526: an event of the configuration type carries the file. */
  g_assert_cmpint(run(&x, "526," FX_DEVICE ",app_conf", &detail), ==,
                  SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(sim_http_event_count(x.h), ==, 1);
  g_assert_cmpstr(sim_http_event_type(x.h, 0), ==, "app_conf");
  g_assert_true(sim_http_wait_binaries(x.h, 1, 5000));
  got = read_file(sim_http_event_binary(x.h, 0));
  g_assert_cmpstr(got, ==, "mode=new ok\n");
  g_free(got);
  g_assert_cmpstr(sim_http_event_binary_name(x.h, 0), ==, "app.conf");
  g_assert_nonnull(strstr(detail, "/event/events/"));

  px_down(&x);
  fx_rm_rf(cfgdir);
  g_free(cfgdir);
  g_free(good);
  g_free(bad);
  g_free(target);
}

/* ---- firmware ------------------------------------------------------------ */

typedef struct fwx {
  px x;
  char *cfgdir, *running, *pending, *slot, *reboot_mark;
} fwx;

/* install_command copies the image into "slot B" and records the version
 * that would boot next; version_command reads the running one;
 * reboot_command only leaves a mark (the test plays the reboot). */
static void fw_up(fwx *w) {
  g_assert_nonnull(w->cfgdir = g_dir_make_tmp("c8y-httpplug-fw-XXXXXX", NULL));
  w->running = g_build_filename(w->cfgdir, "running", NULL);
  w->pending = g_build_filename(w->cfgdir, "pending", NULL);
  w->slot = g_build_filename(w->cfgdir, "slot-b", NULL);
  w->reboot_mark = g_build_filename(w->cfgdir, "reboot-requested", NULL);
  write_file(w->running, "1.0\n");
  char *extra =
      g_strdup_printf("[plugin.firmware]\nname = devos\n"
                      "install_command = cp \"$C8Y_FIRMWARE_FILE\" %s && echo "
                      "\"$C8Y_FIRMWARE_VERSION\" > %s\n"
                      "version_command = cat %s\nreboot_command = touch %s\n",
                      w->slot, w->pending, w->running, w->reboot_mark);
  px_up(&w->x, extra);
  g_free(extra);
}

static void fw_down(fwx *w) {
  px_down(&w->x);
  fx_rm_rf(w->cfgdir);
  g_free(w->cfgdir);
  g_free(w->running);
  g_free(w->pending);
  g_free(w->slot);
  g_free(w->reboot_mark);
}

/* Waits (bounded) until the plugin asked for the reboot. */
static void wait_reboot_request(fwx *w) {
  for (int i = 0; i < 1500 && !g_file_test(w->reboot_mark, G_FILE_TEST_EXISTS);
       i++)
    g_usleep(20 * 1000);
  if (!g_file_test(w->reboot_mark, G_FILE_TEST_EXISTS)) {
    char *log = agent_proc_log(w->x.f.a);
    g_error("no reboot requested; agent log:\n%s", log);
  }
  g_unlink(w->reboot_mark);
}

/* The machine goes down (the agent is stopped with it) and boots again:
 * with `apply` the new slot is what runs now. */
static void simulate_reboot(fwx *w, const char *boot_id, bool apply) {
  g_assert_cmpint(agent_proc_stop(w->x.f.a, 10000), ==, 0);
  if (apply) {
    char *v = read_file(w->pending);
    write_file(w->running, v);
    g_free(v);
  }
  write_file(w->x.boot, boot_id);
  fx_start_agent(&w->x.f);
}

static char *make_image(fwx *w, const char *name, size_t kib) {
  char *path = g_build_filename(w->cfgdir, name, NULL);
  GString *s = g_string_sized_new(kib * 1024);
  GRand *r = g_rand_new_with_seed((guint32)kib);
  for (size_t i = 0; i < kib * 1024; i++)
    g_string_append_c(s, (char)g_rand_int_range(r, 0, 256));
  g_rand_free(r);
  g_assert_true(g_file_set_contents(path, s->str, (gssize)s->len, NULL));
  g_string_free(s, TRUE);
  return path;
}

static void test_firmware_update_after_reboot(void) {
  fwx w = {0};
  fw_up(&w);
  px *x = &w.x;
  g_assert_cmpint(sim_wait_line(x->f.s, "s/us", "115,devos,1.0", 0, 10000), >=,
                  0);
  long at = sim_wait_line(x->f.s, "s/us", "114,", 0, 10000);
  g_assert_cmpint(at, >=, 0);
  g_assert_nonnull(
      strstr(sim_message_at(x->f.s, (size_t)at)->payload, "c8y_Firmware"));
  char *image = make_image(&w, "os-2.0.img", 3 * 1024);
  char *url = binary_url(x, image);
  /* The download is cut once half way and resumed. */
  sim_http_cut_downloads(x->h, 1);
  char *line = g_strdup_printf("515," FX_DEVICE ",devos,2.0,%s", url);
  long op = sim_create_operation(x->f.s, line);
  wait_reboot_request(&w);
  g_assert_cmpint(fx_status_after_start(&x->f, op), ==, SIM_OP_EXECUTING);
  g_assert_cmpuint(sim_http_range_requests(x->h), >=, 1);
  char *want, *got;
  gsize wl, gl;
  g_assert_true(g_file_get_contents(image, &want, &wl, NULL));
  g_assert_true(g_file_get_contents(w.slot, &got, &gl, NULL));
  g_assert_cmpuint(wl, ==, gl);
  g_assert_cmpint(memcmp(want, got, wl), ==, 0);
  g_free(want);
  g_free(got);

  /* Reboot into the new slot: 115 with the new version, then 503. */
  size_t seen = sim_message_count(x->f.s);
  simulate_reboot(&w, "boot-2\n", true);
  g_assert_cmpint(fx_wait_op(&x->f, op, 30000), ==, SIM_OP_SUCCESSFUL);
  char *l115 = g_strdup_printf("115,devos,2.0,%s", url);
  g_assert_cmpint(sim_wait_line(x->f.s, "s/us", l115, seen, 5000), >=, 0);
  /* The documented order: the new version is reported before the 503,
   * also when both waited in the queue for the link after the restart. */
  long at115 = fx_line_pos_from(&x->f, "s/us", l115, seen, NULL);
  long at503 = fx_line_pos_from(&x->f, "s/us", "503,c8y_Firmware", seen, NULL);
  g_assert_cmpint(at115, >=, 0);
  g_assert_cmpint(at503, >, at115);
  g_free(l115);
  g_assert_cmpuint(sim_count_lines(x->f.s, "s/us", "501,c8y_Firmware"), ==, 1);
  g_free(line);

  /* The next image does not boot: the bootloader stays on 2.0. */
  char *image3 = make_image(&w, "os-3.0.img", 64);
  char *url3 = binary_url(x, image3);
  line = g_strdup_printf("515," FX_DEVICE ",devos,3.0,%s", url3);
  op = sim_create_operation(x->f.s, line);
  wait_reboot_request(&w);
  simulate_reboot(&w, "boot-3\n", false);
  g_assert_cmpint(fx_wait_op(&x->f, op, 30000), ==, SIM_OP_FAILED);
  g_assert_cmpstr(sim_operation_detail(x->f.s, op), ==,
                  "after the reboot (the new image did not boot or was rolled "
                  "back) the running firmware version is '2.0', not '3.0'");
  g_free(line);

  /* The running version requested again, as "$PROVIDED": nothing to
   * download or install. */
  size_t gets = sim_http_requests(x->h, "GET", "/inventory/binaries");
  seen = sim_message_count(x->f.s);
  g_assert_cmpint(run(x, "515," FX_DEVICE ",devos,2.0,$PROVIDED", NULL), ==,
                  SIM_OP_SUCCESSFUL);
  g_assert_cmpint(
      sim_wait_line(x->f.s, "s/us", "115,devos,2.0,$PROVIDED", seen, 5000), >=,
      0);
  g_assert_cmpuint(sim_http_requests(x->h, "GET", "/inventory/binaries"), ==,
                   gets);
  g_assert_false(g_file_test(w.reboot_mark, G_FILE_TEST_EXISTS));

  fw_down(&w);
  g_free(url);
  g_free(url3);
  g_free(image);
  g_free(image3);
}

/* The agent restarts before the machine rebooted (same boot id): the old
 * version still runs, so the operation fails with that reason. */
static void test_firmware_restart_without_reboot(void) {
  fwx w = {0};
  fw_up(&w);
  px *x = &w.x;
  char *image = make_image(&w, "os-2.0.img", 32);
  char *url = binary_url(x, image);
  char *line = g_strdup_printf("515," FX_DEVICE ",devos,2.0,%s", url);
  long op = sim_create_operation(x->f.s, line);
  wait_reboot_request(&w);
  agent_proc_kill(x->f.a);
  fx_start_agent(&x->f);
  g_assert_cmpint(fx_wait_op(&x->f, op, 30000), ==, SIM_OP_FAILED);
  g_assert_true(g_str_has_prefix(sim_operation_detail(x->f.s, op),
                                 "the agent restarted without a reboot"));
  fw_down(&w);
  g_free(line);
  g_free(url);
  g_free(image);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/http-plugins/configuration-524-526",
                  test_config_download_and_upload);
  g_test_add_func("/http-plugins/firmware-515-after-reboot",
                  test_firmware_update_after_reboot);
  g_test_add_func("/http-plugins/firmware-515-restart-without-reboot",
                  test_firmware_restart_without_reboot);
  return g_test_run();
}
