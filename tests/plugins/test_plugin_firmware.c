/* Tests of the firmware plugin (515, 115) on the real plugin host
 * (testhost): the install contract, the decision after the restart and the
 * "nothing to do" paths. The reboot is a restart of the host on the same
 * state dir with a new boot id. */
#include "plugin_test_util.h"
#include "testhost.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#define DEV "dev1"
#define OP_WAIT_MS 20000

typedef struct fixture {
  char *dir;
  char *state;
  char *boot_id;      /* the journal's boot id (C8Y_BOOT_ID_FILE) */
  int boots;          /* how many boots boot_id has seen */
  char *version_file; /* what version_command prints */
  char *install_log;  /* install_command's environment */
  char *reboot_mark;  /* reboot_command touches it */
  char *image;        /* the file the host's download serves */
  testhost *h;
} fixture;

static void write_boot_id(fixture *f) {
  char *id = g_strdup_printf("boot-%d\n", ++f->boots);
  ptu_write_text(f->boot_id, id);
  g_free(id);
}

static void fx_setup(fixture *f, gconstpointer data) {
  (void)data;
  f->dir = ptu_make_tmpdir("c8y-fw");
  f->state = g_build_filename(f->dir, "state", NULL);
  f->boot_id = g_build_filename(f->dir, "boot_id", NULL);
  f->boots = 0;
  f->version_file = g_build_filename(f->dir, "version", NULL);
  f->install_log = g_build_filename(f->dir, "install.log", NULL);
  f->reboot_mark = g_build_filename(f->dir, "rebooted", NULL);
  f->image = g_build_filename(f->dir, "fw-2.0.img", NULL);
  ptu_write_text(f->version_file, "1.0\n");
  ptu_write_text(f->image, "IMAGE 2.0");
  write_boot_id(f);
  /* Before any host thread runs: journal_boot_id() reads it. */
  g_assert_true(g_setenv("C8Y_BOOT_ID_FILE", f->boot_id, TRUE));
  f->h = testhost_new(DEV, f->state);
}

static void fx_teardown(fixture *f, gconstpointer data) {
  (void)data;
  testhost_free(f->h);
  g_unsetenv("C8Y_BOOT_ID_FILE");
  ptu_rm_rf(f->dir);
  g_free(f->dir);
  g_free(f->state);
  g_free(f->boot_id);
  g_free(f->version_file);
  g_free(f->install_log);
  g_free(f->reboot_mark);
  g_free(f->image);
}

/* The agent stops and starts again on the same state dir; with `reboot`
 * the machine booted in between. */
static void restart(fixture *f, gboolean reboot) {
  testhost_free(f->h);
  if (reboot)
    write_boot_id(f);
  f->h = testhost_new(DEV, f->state);
}

/* The host serves the image at file://<image>. */
static void serve_image(fixture *f) {
  char *url = g_strdup_printf("file://%s", f->image);
  testhost_enable_transfers(f->h);
  testhost_add_download(f->h, url, f->image);
  g_free(url);
}

/* install_command records its environment and the image content, and
 * "installs" by writing `installs_version` (NULL: exit 4) as the version
 * the next boot will run into a pending file. version_command: NULL prints
 * the version file. */
static void configure(fixture *f, const char *installs_version,
                      const char *version_command, const char *extra_key,
                      const char *extra_value) {
  char *pending = g_build_filename(f->dir, "pending", NULL);
  char *body =
      g_strdup_printf("{ echo \"$C8Y_FIRMWARE_NAME|$C8Y_FIRMWARE_VERSION|"
                      "$C8Y_FIRMWARE_URL|$C8Y_DEVICE_ID\"; "
                      "if [ -n \"$C8Y_FIRMWARE_FILE\" ]; then cat "
                      "\"$C8Y_FIRMWARE_FILE\"; else echo no-file; fi; } > %s; "
                      "echo %s > %s\n",
                      f->install_log, installs_version, pending);
  char *install = installs_version
                      ? ptu_sh_script(f->dir, "install.sh", body)
                      : g_strdup("echo 'slot B is bad' >&2; exit 4");
  g_free(body);
  char *version = version_command ? g_strdup(version_command)
                                  : g_strdup_printf("cat %s", f->version_file);
  char *reboot = g_strdup_printf("touch %s", f->reboot_mark);
  testhost_set_config(f->h, "install_command", install);
  testhost_set_config(f->h, "version_command", version);
  testhost_set_config(f->h, "reboot_command", reboot);
  testhost_set_config(f->h, "name", "os");
  if (extra_key)
    testhost_set_config(f->h, extra_key, extra_value);
  serve_image(f);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
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

/* Runs the operation until its handler returned; the state then. */
static testhost_op_state run_until_returned(fixture *f, const char *line) {
  testhost_run_operation(f->h, line, 0);
  g_assert_true(testhost_wait_handler_returned(f->h, OP_WAIT_MS));
  return testhost_op_state_now(f->h);
}

/* The outcome of the operation the restarted agent resumed. */
static testhost_op_state resumed_outcome(fixture *f) {
  g_assert_true(testhost_wait_op_done(f->h, OP_WAIT_MS));
  return testhost_op_state_now(f->h);
}

static void test_init_reports_and_registers(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, "2.0", NULL, NULL, NULL);
  g_assert_true(testhost_has_operation(f->h, "515"));
  g_assert_cmpuint(testhost_operation_timeout(f->h, "515"), ==, 3600 * 1000);
  g_assert_cmpstr(testhost_find_line(f->h, "115,"), ==, "s/us|115,os,1.0,");
}

static void test_init_unconfigured_or_old_agent(fixture *f,
                                                gconstpointer data) {
  (void)data;
  /* Bundled and loaded everywhere: unconfigured it does nothing. */
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_false(testhost_has_operation(f->h, "515"));
  g_assert_cmpuint(testhost_line_count(f->h), ==, 0);
  g_assert_nonnull(testhost_find_log(f->h, "install_command not set"));
  testhost_free(f->h);

  f->h = testhost_new(DEV, f->state);
  testhost_set_abi_1_0(f->h);
  testhost_set_config(f->h, "install_command", "true");
  testhost_set_config(f->h, "version_command", "echo 1.0");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_false(testhost_has_operation(f->h, "515"));
  g_assert_nonnull(testhost_find_log(f->h, "lacks SDK 1.1"));
  testhost_free(f->h);

  f->h = testhost_new(DEV, f->state);
  testhost_set_config(f->h, "install_command", "true");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_EINVAL);
  g_assert_nonnull(testhost_find_log(f->h, "needs version_command"));
}

/* The whole path: download, install, reboot, and success only after the
 * restart when the new version runs. */
static void test_install_reboot_and_confirm(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, "2.0", NULL, NULL, NULL);
  testhost_clear_lines(f->h);
  char *line = op_line(f, "2.0");
  g_assert_cmpint(run_until_returned(f, line), ==, TESTHOST_OP_RUNNING);
  g_assert_true(testhost_op_resume_requested(f->h));
  g_assert_cmpuint(testhost_download_count(f->h), ==, 1);
  char *log = ptu_read_text(f->install_log);
  char *want = g_strdup_printf("os|2.0|file://%s|" DEV "\nIMAGE 2.0", f->image);
  g_assert_cmpstr(log, ==, want);
  g_free(want);
  g_free(log);
  g_assert_true(g_file_test(f->reboot_mark, G_FILE_TEST_EXISTS));
  /* The image was deleted after the install. */
  char *pdir = g_build_filename(f->state, "plugins", "firmware", NULL);
  GDir *d = g_dir_open(pdir, 0, NULL);
  g_assert_nonnull(d);
  const char *name;
  while ((name = g_dir_read_name(d)))
    g_assert_cmpstr(name, !=, "image");
  g_dir_close(d);
  g_free(pdir);
  g_assert_null(testhost_find_line(f->h, "115,"));

  /* After the reboot the agent hands it back; the version tool answers
   * only from its third call on: init's report and the operation's first
   * attempt fail, its second attempt succeeds. */
  boot_pending(f);
  char *calls = g_build_filename(f->dir, "version-calls", NULL);
  char *body = g_strdup_printf(
      "n=$(cat %s 2>/dev/null || echo 0); echo $((n + 1)) > %s; "
      "[ \"$n\" -ge 2 ] || { echo 'not ready' >&2; exit 1; }; cat %s\n",
      calls, calls, f->version_file);
  char *version = ptu_sh_script(f->dir, "version.sh", body);
  restart(f, TRUE);
  configure(f, "2.0", version, NULL, NULL);
  g_free(version);
  g_free(body);
  g_free(calls);
  g_assert_nonnull(testhost_find_log(f->h, "firmware not reported"));
  g_assert_cmpint(resumed_outcome(f), ==, TESTHOST_OP_SUCCEEDED);
  g_assert_cmpuint(testhost_download_count(f->h), ==, 0);
  g_assert_nonnull(testhost_find_log(f->h, "not ready); trying again"));
  char *l115 = g_strdup_printf("s/us|115,os,2.0,file://%s", f->image);
  g_assert_cmpuint(testhost_count_lines(f->h, "115,"), ==, 1);
  g_assert_cmpstr(testhost_find_line(f->h, "115,"), ==, l115);

  /* The next start names the installed firmware and its URL. */
  restart(f, FALSE);
  configure(f, "2.0", NULL, NULL, NULL);
  g_assert_cmpstr(testhost_find_line(f->h, "115,"), ==, l115);
  g_free(l115);
  g_free(line);
}

/* Index of the first captured line that starts with prefix (after
 * "topic|"), or -1. */
static long line_index(fixture *f, const char *prefix) {
  for (size_t i = 0; i < testhost_line_count(f->h); i++) {
    const char *l = strchr(testhost_line(f->h, i), '|');
    if (l && g_str_has_prefix(l + 1, prefix))
      return (long)i;
  }
  return -1;
}

/* A device profile's firmware step (527: the engine hands this plugin a
 * 515 of the profile's firmware, without a 501 of its own): the reboot in
 * the middle is the same, and after the restart the profile ends with the
 * step's outcome, 121 around it. */
static void test_profile_step_across_reboot(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, "2.0", NULL, NULL, NULL);
  testhost_clear_lines(f->h);
  char *line = g_strdup_printf(
      "527," DEV ",$FW,os,2.0,file://%s,false,,$SW,$CONF", f->image);
  g_assert_cmpint(run_until_returned(f, line), ==, TESTHOST_OP_RUNNING);
  g_assert_true(testhost_op_resume_requested(f->h));
  g_assert_true(g_file_test(f->reboot_mark, G_FILE_TEST_EXISTS));
  g_assert_cmpstr(testhost_line(f->h, 0), ==, "s/us|501,c8y_DeviceProfile");
  g_assert_cmpstr(testhost_line(f->h, 1), ==, "s/us|121,false,");
  boot_pending(f);
  restart(f, TRUE);
  configure(f, "2.0", NULL, NULL, NULL);
  g_assert_cmpint(resumed_outcome(f), ==, TESTHOST_OP_SUCCEEDED);
  char *l115 = g_strdup_printf("115,os,2.0,file://%s", f->image);
  long at115 = line_index(f, l115), at121 = line_index(f, "121,true,"),
       at503 = line_index(f, "503,c8y_DeviceProfile");
  g_assert_cmpint(at115, >=, 0);
  g_assert_cmpint(at121, >, at115);
  g_assert_cmpint(at503, >, at121);
  g_assert_cmpint(line_index(f, "503,c8y_Firmware"), ==, -1);
  g_assert_cmpint(line_index(f, "501,"), ==, -1); /* not started again */
  g_free(l115);
  g_free(line);

  /* The next image does not boot: the profile fails with the step's
   * reason, 121 stays false. */
  testhost_clear_lines(f->h);
  line = g_strdup_printf("527," DEV ",$FW,os,3.0,file://%s,false,,$SW,$CONF",
                         f->image);
  g_assert_cmpint(run_until_returned(f, line), ==, TESTHOST_OP_RUNNING);
  restart(f, TRUE);
  configure(f, "3.0", NULL, NULL, NULL);
  g_assert_cmpint(resumed_outcome(f), ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "firmware: after the reboot (the new image did not boot or "
                  "was rolled back) the running firmware version is '2.0', "
                  "not '3.0'");
  g_assert_cmpint(line_index(f, "121,true"), ==, -1);
  g_free(line);
}

static void test_rolled_back_image_fails(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, "2.0", NULL, NULL, NULL);
  char *line = op_line(f, "2.0");
  g_assert_cmpint(run_until_returned(f, line), ==, TESTHOST_OP_RUNNING);
  /* The bootloader fell back: still 1.0 after the reboot. */
  restart(f, TRUE);
  configure(f, "2.0", NULL, NULL, NULL);
  g_assert_cmpint(resumed_outcome(f), ==, TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "after the reboot (the new image did not boot or was rolled "
                  "back) the running firmware version is '1.0', not '2.0'");
  /* Only init's report: the failure reports no version. */
  g_assert_cmpuint(testhost_count_lines(f->h, "115,"), ==, 1);
  g_assert_cmpstr(testhost_find_line(f->h, "115,"), ==, "s/us|115,os,1.0,");

  /* A restart of the agent alone says so. */
  g_assert_cmpint(run_until_returned(f, line), ==, TESTHOST_OP_RUNNING);
  restart(f, FALSE);
  configure(f, "2.0", NULL, NULL, NULL);
  g_assert_cmpint(resumed_outcome(f), ==, TESTHOST_OP_FAILED);
  g_assert_true(g_str_has_prefix(testhost_op_detail(f->h),
                                 "the agent restarted without a reboot"));
  g_free(line);
}

static void test_already_running_and_provided(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, "3.0", NULL, NULL, NULL);
  testhost_clear_lines(f->h);
  /* The requested version runs already: no download, no install. */
  g_assert_cmpint(
      testhost_run_operation(f->h, "515," DEV ",os,1.0,$PROVIDED", OP_WAIT_MS),
      ==, TESTHOST_OP_SUCCEEDED);
  g_assert_cmpuint(testhost_download_count(f->h), ==, 0);
  g_assert_false(g_file_test(f->install_log, G_FILE_TEST_EXISTS));
  g_assert_cmpstr(testhost_find_line(f->h, "115,"), ==,
                  "s/us|115,os,1.0,$PROVIDED");

  /* $PROVIDED: the device resolves the image; nothing is downloaded. */
  g_assert_cmpint(run_until_returned(f, "515," DEV ",os,3.0,$PROVIDED"), ==,
                  TESTHOST_OP_RUNNING);
  g_assert_cmpuint(testhost_download_count(f->h), ==, 0);
  char *log = ptu_read_text(f->install_log);
  g_assert_cmpstr(log, ==, "os|3.0|$PROVIDED|" DEV "\nno-file\n");
  g_free(log);
}

static void test_failures_before_reboot(fixture *f, gconstpointer data) {
  (void)data;
  configure(f, NULL, NULL, NULL, NULL);
  /* The download fails: nothing installed, the reason names it. */
  char *missing =
      g_strdup_printf("515," DEV ",os,2.0,file://%s/missing.img", f->dir);
  g_assert_cmpint(testhost_run_operation(f->h, missing, OP_WAIT_MS), ==,
                  TESTHOST_OP_FAILED);
  g_assert_true(g_str_has_prefix(testhost_op_detail(f->h),
                                 "download of firmware os 2.0 failed: HTTP "
                                 "404 from testhost"));
  g_assert_false(g_file_test(f->reboot_mark, G_FILE_TEST_EXISTS));
  /* The install command fails: no reboot. */
  char *line = op_line(f, "2.0");
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "install_command failed (exit 4: slot B is bad)");
  g_assert_false(g_file_test(f->reboot_mark, G_FILE_TEST_EXISTS));
  /* Bad operations. */
  g_assert_cmpint(
      testhost_run_operation(f->h, "515," DEV ",os,2.0", OP_WAIT_MS), ==,
      TESTHOST_OP_FAILED);
  g_assert_true(g_str_has_prefix(testhost_op_detail(f->h),
                                 "c8y_Firmware: expected 3 fields"));
  g_assert_cmpint(
      testhost_run_operation(f->h, "515," DEV ",os,,http://x", OP_WAIT_MS), ==,
      TESTHOST_OP_FAILED);
  g_free(line);
  g_free(missing);
}

static void test_verify_and_no_reboot(fixture *f, gconstpointer data) {
  (void)data;
  char *verify = g_strdup_printf("grep -q 'IMAGE 2.0' \"$C8Y_FIRMWARE_FILE\"");
  configure(f, "2.0", NULL, "verify_command", verify);
  g_free(verify);
  /* A corrupt image is refused by verify_command before the install. */
  ptu_write_text(f->image, "garbage");
  char *line = op_line(f, "2.0");
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==,
                  "verify_command failed (exit 1)");
  g_assert_false(g_file_test(f->install_log, G_FILE_TEST_EXISTS));
  testhost_free(f->h);

  /* reboot = false: decided right after the install. */
  f->h = testhost_new(DEV, f->state);
  ptu_write_text(f->image, "IMAGE 2.0");
  char *install = g_strdup_printf("echo 2.0 > %s", f->version_file);
  testhost_set_config(f->h, "install_command", install);
  g_free(install);
  char *version = g_strdup_printf("cat %s", f->version_file);
  testhost_set_config(f->h, "version_command", version);
  g_free(version);
  testhost_set_config(f->h, "reboot", "false");
  serve_image(f);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, 0);
  g_assert_cmpint(testhost_run_operation(f->h, line, OP_WAIT_MS), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_false(testhost_op_resume_requested(f->h));
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
  ADD("/plugin/firmware/profile-step-across-reboot",
      test_profile_step_across_reboot);
  ADD("/plugin/firmware/515/verify-and-no-reboot", test_verify_and_no_reboot);
#undef ADD
  return g_test_run();
}
