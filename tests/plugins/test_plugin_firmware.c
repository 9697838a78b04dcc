/* Tests of the firmware plugin (515, 115) in the fake host: the install
 * contract, the decision after the restart and the "nothing to do" paths. */
#include "fake_api.h"
#include "plugin_test_util.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#define DEV "dev1"
#define OP_WAIT_MS 20000

typedef struct fixture {
  char *dir;
  char *state;
  char *version_file; /* what version_command prints */
  char *install_log;  /* install_command's environment */
  char *reboot_mark;  /* reboot_command touches it */
  char *image;        /* the file the fake download serves */
  fake_host *h;
  int downloads;
} fixture;

static void fx_setup(fixture *f, gconstpointer data) {
  (void)data;
  f->dir = ptu_make_tmpdir("c8y-fw");
  f->state = g_build_filename(f->dir, "state", NULL);
  f->version_file = g_build_filename(f->dir, "version", NULL);
  f->install_log = g_build_filename(f->dir, "install.log", NULL);
  f->reboot_mark = g_build_filename(f->dir, "rebooted", NULL);
  f->image = g_build_filename(f->dir, "fw-2.0.img", NULL);
  ptu_write_text(f->version_file, "1.0\n");
  ptu_write_text(f->image, "IMAGE 2.0");
  f->h = fake_host_new(DEV, f->state);
}

static void fx_teardown(fixture *f, gconstpointer data) {
  (void)data;
  fake_host_free(f->h);
  ptu_rm_rf(f->dir);
  g_free(f->dir);
  g_free(f->state);
  g_free(f->version_file);
  g_free(f->install_log);
  g_free(f->reboot_mark);
  g_free(f->image);
}

static int counting_download(void *ctx, c8y_download *d) {
  fixture *f = ctx;
  f->downloads++;
  return fake_file_download(NULL, d);
}

/* install_command records its environment and the image content, and
 * "installs" by writing `installs_version` (NULL: exit 4) as the version
 * the next boot will run into a pending file. */
static void configure(fixture *f, const char *installs_version,
                      const char *extra_key, const char *extra_value) {
  char *pending = g_build_filename(f->dir, "pending", NULL);
  char *install =
      installs_version
          ? g_strdup_printf(
                "{ echo \"$C8Y_FIRMWARE_NAME|$C8Y_FIRMWARE_VERSION|"
                "$C8Y_FIRMWARE_URL|$C8Y_DEVICE_ID\"; "
                "if [ -n \"$C8Y_FIRMWARE_FILE\" ]; then cat "
                "\"$C8Y_FIRMWARE_FILE\"; else echo no-file; fi; } > %s; "
                "echo %s > %s",
                f->install_log, installs_version, pending)
          : g_strdup("echo 'slot B is bad' >&2; exit 4");
  char *version = g_strdup_printf("cat %s", f->version_file);
  char *reboot = g_strdup_printf("touch %s", f->reboot_mark);
  fake_host_set_config(f->h, "install_command", install);
  fake_host_set_config(f->h, "version_command", version);
  fake_host_set_config(f->h, "reboot_command", reboot);
  fake_host_set_config(f->h, "name", "os");
  if (extra_key)
    fake_host_set_config(f->h, extra_key, extra_value);
  fake_host_set_transfers(f->h, counting_download, NULL, f);
  g_assert_cmpint(fake_host_load(f->h, PLUGIN_PATH), ==, 0);
  g_free(install);
  g_free(version);
  g_free(reboot);
  g_free(pending);
}

/* The "reboot": the pending version becomes the running one. */
static void boot_pending(fixture *f) {
  char *pending = g_build_filename(f->dir, "pending", NULL);
  char *v = ptu_read_text(pending);
  ptu_write_text(f->version_file, v);
  g_free(v);
  g_free(pending);
}

static char *op_line(fixture *f, const char *version) {
  return g_strdup_printf("515," DEV ",os,%s,file://%s", version, f->image);
}

static void test_init_reports_and_registers(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, "2.0", NULL, NULL);
  g_assert_true(fake_host_has_operation(f->h, "515"));
  g_assert_cmpuint(fake_host_operation_timeout(f->h, "515"), ==, 3600 * 1000);
  g_assert_cmpstr(fake_host_find_line(f->h, "115,"), ==, "s/us|115,os,1.0,");
}

static void test_init_unconfigured_or_old_agent(fixture *f,
                                                gconstpointer data) {
  (void)data;
  /* Bundled and loaded everywhere: unconfigured it does nothing. */
  g_assert_cmpint(fake_host_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_false(fake_host_has_operation(f->h, "515"));
  g_assert_cmpuint(fake_host_line_count(f->h), ==, 0);
  g_assert_nonnull(fake_host_find_log(f->h, "install_command not set"));
  fake_host_free(f->h);

  f->h = fake_host_new(DEV, f->state);
  fake_host_set_abi_1_0(f->h);
  fake_host_set_config(f->h, "install_command", "true");
  fake_host_set_config(f->h, "version_command", "echo 1.0");
  g_assert_cmpint(fake_host_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_false(fake_host_has_operation(f->h, "515"));
  g_assert_nonnull(fake_host_find_log(f->h, "lacks SDK 1.1"));
  fake_host_free(f->h);

  f->h = fake_host_new(DEV, f->state);
  fake_host_set_config(f->h, "install_command", "true");
  g_assert_cmpint(fake_host_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
  g_assert_nonnull(fake_host_find_log(f->h, "needs version_command"));
}

/* The whole path: download, install, reboot, and success only after the
 * restart when the new version runs. */
static void test_install_reboot_and_confirm(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, "2.0", NULL, NULL);
  fake_host_clear_lines(f->h);
  char *line = op_line(f, "2.0");
  g_assert_cmpint(fake_host_run_operation(f->h, line, OP_WAIT_MS), ==,
                  FAKE_OP_RUNNING);
  g_assert_true(fake_host_handler_returned(f->h));
  g_assert_true(fake_host_op_resume_requested(f->h));
  g_assert_cmpint(f->downloads, ==, 1);
  char *log = ptu_read_text(f->install_log);
  char *want = g_strdup_printf("os|2.0|file://%s|" DEV "\nIMAGE 2.0", f->image);
  g_assert_cmpstr(log, ==, want);
  g_free(want);
  g_free(log);
  g_assert_true(g_file_test(f->reboot_mark, G_FILE_TEST_EXISTS));
  /* The image was deleted after the install. */
  GDir *d = g_dir_open(f->state, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name(d)))
    g_assert_false(g_str_has_prefix(name, "image-"));
  g_dir_close(d);
  g_assert_null(fake_host_find_line(f->h, "115,"));

  /* After the reboot the agent hands it back. */
  boot_pending(f);
  fake_host_unload(f->h);
  fake_host_clear_lines(f->h);
  g_assert_cmpint(fake_host_load(f->h, PLUGIN_PATH), ==, 0);
  fake_host_clear_lines(f->h);
  fake_host_set_resumed(f->h, true);
  g_assert_cmpint(fake_host_run_operation(f->h, line, OP_WAIT_MS), ==,
                  FAKE_OP_SUCCEEDED);
  g_assert_cmpint(f->downloads, ==, 1);
  char *l115 = g_strdup_printf("s/us|115,os,2.0,file://%s", f->image);
  g_assert_cmpstr(fake_host_find_line(f->h, "115,"), ==, l115);

  /* The next start names the installed firmware and its URL. */
  fake_host_unload(f->h);
  fake_host_clear_lines(f->h);
  g_assert_cmpint(fake_host_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpstr(fake_host_find_line(f->h, "115,"), ==, l115);
  g_free(l115);
  g_free(line);
}

static void test_rolled_back_image_fails(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, "2.0", NULL, NULL);
  char *line = op_line(f, "2.0");
  g_assert_cmpint(fake_host_run_operation(f->h, line, OP_WAIT_MS), ==,
                  FAKE_OP_RUNNING);
  /* The bootloader fell back: still 1.0 after the reboot. */
  fake_host_set_resumed(f->h, true);
  fake_host_clear_lines(f->h);
  g_assert_cmpint(fake_host_run_operation(f->h, line, OP_WAIT_MS), ==,
                  FAKE_OP_FAILED);
  g_assert_cmpstr(fake_host_op_detail(f->h), ==,
                  "after the reboot (the new image did not boot or was rolled "
                  "back) the running firmware version is '1.0', not '2.0'");
  g_assert_null(fake_host_find_line(f->h, "115,"));

  /* A restart of the agent alone says so. */
  fake_host_set_resumed(f->h, false);
  g_assert_cmpint(fake_host_run_operation(f->h, line, OP_WAIT_MS), ==,
                  FAKE_OP_FAILED);
  g_assert_true(g_str_has_prefix(fake_host_op_detail(f->h),
                                 "the agent restarted without a reboot"));
  g_free(line);
}

static void test_already_running_and_provided(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, "3.0", NULL, NULL);
  fake_host_clear_lines(f->h);
  /* The requested version runs already: no download, no install. */
  g_assert_cmpint(
      fake_host_run_operation(f->h, "515," DEV ",os,1.0,$PROVIDED", OP_WAIT_MS),
      ==, FAKE_OP_SUCCEEDED);
  g_assert_cmpint(f->downloads, ==, 0);
  g_assert_false(g_file_test(f->install_log, G_FILE_TEST_EXISTS));
  g_assert_cmpstr(fake_host_find_line(f->h, "115,"), ==,
                  "s/us|115,os,1.0,$PROVIDED");

  /* $PROVIDED: the device resolves the image; nothing is downloaded. */
  g_assert_cmpint(
      fake_host_run_operation(f->h, "515," DEV ",os,3.0,$PROVIDED", OP_WAIT_MS),
      ==, FAKE_OP_RUNNING);
  g_assert_cmpint(f->downloads, ==, 0);
  char *log = ptu_read_text(f->install_log);
  g_assert_cmpstr(log, ==, "os|3.0|$PROVIDED|" DEV "\nno-file\n");
  g_free(log);
}

static void test_failures_before_reboot(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, NULL, NULL, NULL);
  /* The download fails: nothing installed, the reason names it. */
  char *missing =
      g_strdup_printf("515," DEV ",os,2.0,file://%s/missing.img", f->dir);
  g_assert_cmpint(fake_host_run_operation(f->h, missing, OP_WAIT_MS), ==,
                  FAKE_OP_FAILED);
  g_assert_true(g_str_has_prefix(fake_host_op_detail(f->h),
                                 "download of firmware os 2.0 failed: HTTP "
                                 "404 from fake"));
  g_assert_false(g_file_test(f->reboot_mark, G_FILE_TEST_EXISTS));
  /* The install command fails: no reboot. */
  char *line = op_line(f, "2.0");
  g_assert_cmpint(fake_host_run_operation(f->h, line, OP_WAIT_MS), ==,
                  FAKE_OP_FAILED);
  g_assert_cmpstr(fake_host_op_detail(f->h), ==,
                  "install_command failed (exit 4: slot B is bad)");
  g_assert_false(g_file_test(f->reboot_mark, G_FILE_TEST_EXISTS));
  /* Bad operations. */
  g_assert_cmpint(
      fake_host_run_operation(f->h, "515," DEV ",os,2.0", OP_WAIT_MS), ==,
      FAKE_OP_FAILED);
  g_assert_true(g_str_has_prefix(fake_host_op_detail(f->h),
                                 "c8y_Firmware: expected 3 fields"));
  g_assert_cmpint(
      fake_host_run_operation(f->h, "515," DEV ",os,,http://x", OP_WAIT_MS), ==,
      FAKE_OP_FAILED);
  g_free(line);
  g_free(missing);
}

static void test_verify_and_no_reboot(fixture *f, gconstpointer data) {
  (void)data;
  char *verify = g_strdup_printf("grep -q 'IMAGE 2.0' \"$C8Y_FIRMWARE_FILE\"");
  configure(f, "2.0", "verify_command", verify);
  g_free(verify);
  /* A corrupt image is refused by verify_command before the install. */
  ptu_write_text(f->image, "garbage");
  char *line = op_line(f, "2.0");
  g_assert_cmpint(fake_host_run_operation(f->h, line, OP_WAIT_MS), ==,
                  FAKE_OP_FAILED);
  g_assert_cmpstr(fake_host_op_detail(f->h), ==,
                  "verify_command failed (exit 1)");
  g_assert_false(g_file_test(f->install_log, G_FILE_TEST_EXISTS));
  fake_host_free(f->h);

  /* reboot = false: decided right after the install. */
  f->h = fake_host_new(DEV, f->state);
  ptu_write_text(f->image, "IMAGE 2.0");
  char *install = g_strdup_printf("echo 2.0 > %s", f->version_file);
  fake_host_set_config(f->h, "install_command", install);
  g_free(install);
  char *version = g_strdup_printf("cat %s", f->version_file);
  fake_host_set_config(f->h, "version_command", version);
  g_free(version);
  fake_host_set_config(f->h, "reboot", "false");
  fake_host_set_transfers(f->h, counting_download, NULL, f);
  g_assert_cmpint(fake_host_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpint(fake_host_run_operation(f->h, line, OP_WAIT_MS), ==,
                  FAKE_OP_SUCCEEDED);
  g_assert_false(fake_host_op_resume_requested(f->h));
  g_assert_false(g_file_test(f->reboot_mark, G_FILE_TEST_EXISTS));
  g_free(line);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, fixture, NULL, fx_setup, fn, fx_teardown)
  ADD("/plugin/firmware/init/reports", test_init_reports_and_registers);
  ADD("/plugin/firmware/init/unconfigured-or-old-agent",
      test_init_unconfigured_or_old_agent);
  ADD("/plugin/firmware/515/install-reboot-confirm",
      test_install_reboot_and_confirm);
  ADD("/plugin/firmware/515/rolled-back", test_rolled_back_image_fails);
  ADD("/plugin/firmware/515/already-running-and-provided",
      test_already_running_and_provided);
  ADD("/plugin/firmware/515/failures", test_failures_before_reboot);
  ADD("/plugin/firmware/515/verify-and-no-reboot", test_verify_and_no_reboot);
#undef ADD
  return g_test_run();
}
