/* profile: device profiles as plans (527, 531, JSON), the typed-twin rule,
 * the 114 rule; and the engine running them (ops with a real journal and a
 * memory-only queue): steps through their handlers, one 501 and one final
 * status, 121 around them, a failing step, restarts and reboots in the
 * middle (C8Y_BOOT_ID_FILE), 527 + 531 once. */
#include "ops.h"
#include "profile.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROOT "dev1"

/* Cumulocity's own examples (fragment library, device profile). */
#define P527                                                                   \
  "527," ROOT ",$FW,device_fw,1.0.1,https://cumulocity.com/fw,false,,$SW,"     \
  "curl,2.3.4,http://my.url.com,install,cumulocity_agent,1.2.3,https://"       \
  "cumulocity.com/agent,install,$CONF,http://cumulocity.com/conf,ssh_conf,"    \
  "https://demos.cumulocity.com/inventory/binaries/156719,agent_conf"
#define P531                                                                   \
  "531," ROOT ",$FW,device_fw,1.0.1,https://cumulocity.com/fw,false,,$SW,"     \
  "curl,2.3.4,rpm,http://my.url.com,install,cumulocity_agent,1.2.3,,https://"  \
  "cumulocity.com/agent,install,$CONF,http://cumulocity.com/conf,ssh_conf,"    \
  "https://demos.cumulocity.com/inventory/binaries/156719,agent_conf"
#define PJSON_BODY                                                             \
  "\"profileName\":\"my profile\",\"profileId\":\"158751\","                   \
  "\"c8y_DeviceProfile\":{\"software\":[{\"name\":\"curl\",\"action\":"        \
  "\"install\",\"softwareType\":\"rpm\",\"version\":\"2.3.4\",\"url\":"        \
  "\"http://my.url.com\"},{\"name\":\"cumulocity_agent\",\"action\":"          \
  "\"install\",\"version\":\"1.2.3\",\"url\":\"https://cumulocity.com/"        \
  "agent\"}],\"configuration\":[{\"name\":\"ssh_conf\",\"type\":\"ssh_conf\"," \
  "\"url\":\"http://cumulocity.com/conf\"},{\"name\":\"agent_conf\",\"type\":" \
  "\"agent_conf\",\"url\":\"https://demos.cumulocity.com/inventory/"           \
  "binaries/156719\"}],\"firmware\":{\"name\":\"device_fw\",\"version\":"      \
  "\"1.0.1\",\"url\":\"https://cumulocity.com/fw\"}}"
#define DOC(id, body)                                                          \
  "{\"id\":\"" id "\",\"status\":\"PENDING\",\"deviceId\":\"9\","              \
  "\"externalSource\":{\"externalId\":\"" ROOT                                 \
  "\",\"type\":\"c8y_Serial\"}," body "}"

/* ---- plans ---------------------------------------------------------------
 */

/* The parameters of a line after the template and the device id. */
static char **params_of(const char *line, size_t *n) {
  gchar **all = g_strsplit(line, ",", -1);
  size_t len = g_strv_length(all);
  g_assert_cmpuint(len, >=, 2);
  char **out = g_new0(char *, len - 1);
  for (size_t i = 2; i < len; i++)
    out[i - 2] = g_strdup(all[i]);
  *n = len - 2;
  g_strfreev(all);
  return out;
}

static int plan_line(const char *line, profile_plan *p, char *err,
                     size_t errlen) {
  size_t n;
  char **f = params_of(line, &n);
  char tid[4] = {line[0], line[1], line[2], 0};
  int rc = profile_plan_new(tid, f, n, NULL, p, err, errlen);
  g_strfreev(f);
  return rc;
}

static char *joined(const profile_step *s) {
  GString *g = g_string_new(s->template_id);
  for (size_t i = 0; i < s->nfields; i++)
    g_string_append_printf(g, ",%s", s->fields[i]);
  return g_string_free(g, FALSE);
}

static void assert_step(const profile_step *s, const char *want) {
  char *got = joined(s);
  g_assert_cmpstr(got, ==, want);
  g_free(got);
}

static void test_plan_527(void) {
  profile_plan p;
  char err[300];
  g_assert_cmpint(plan_line(P527, &p, err, sizeof err), ==, C8Y_OK);
  g_assert_null(p.profile_id);
  g_assert_cmpuint(p.nsteps, ==, 4);
  assert_step(&p.steps[0], "515,device_fw,1.0.1,https://cumulocity.com/fw");
  g_assert_cmpstr(p.steps[0].label, ==, "firmware");
  assert_step(&p.steps[1],
              "528,curl,2.3.4,http://my.url.com,install,cumulocity_agent,1.2."
              "3,https://cumulocity.com/agent,install");
  g_assert_cmpstr(p.steps[1].fragment, ==, "c8y_SoftwareUpdate");
  assert_step(&p.steps[2], "524,http://cumulocity.com/conf,ssh_conf");
  g_assert_cmpstr(p.steps[2].label, ==, "configuration ssh_conf");
  assert_step(&p.steps[3], "524,https://demos.cumulocity.com/inventory/"
                           "binaries/156719,agent_conf");
  g_assert_cmpstr(p.steps[3].json, ==,
                  "{\"c8y_DownloadConfigFile\":{\"url\":\"https://"
                  "demos.cumulocity.com/inventory/binaries/156719\",\"type\":"
                  "\"agent_conf\"}}");
  profile_plan_free(&p);
}

static void test_plan_531(void) {
  profile_plan p;
  char err[300];
  g_assert_cmpint(plan_line(P531, &p, err, sizeof err), ==, C8Y_OK);
  g_assert_cmpuint(p.nsteps, ==, 4);
  assert_step(&p.steps[1],
              "529,curl,2.3.4,rpm,http://my.url.com,install,cumulocity_agent,"
              "1.2.3,,https://cumulocity.com/agent,install");
  g_assert_cmpstr(p.steps[1].json, ==,
                  "{\"c8y_SoftwareUpdate\":[{\"name\":\"curl\",\"version\":"
                  "\"2.3.4\",\"url\":\"http://my.url.com\",\"action\":"
                  "\"install\",\"softwareType\":\"rpm\"},{\"name\":"
                  "\"cumulocity_agent\",\"version\":\"1.2.3\",\"url\":"
                  "\"https://cumulocity.com/agent\",\"action\":\"install\"}]}");
  profile_plan_free(&p);
}

static void test_plan_json(void) {
  profile_plan p;
  char err[300];
  g_assert_cmpint(profile_plan_new(NULL, NULL, 0, DOC("7", PJSON_BODY), &p, err,
                                   sizeof err),
                  ==, C8Y_OK);
  g_assert_cmpstr(p.profile_id, ==, "158751");
  g_assert_cmpuint(p.nsteps, ==, 4);
  /* Firmware first, software second, configuration third, whatever the
   * document's order. */
  assert_step(&p.steps[0], "515,device_fw,1.0.1,https://cumulocity.com/fw");
  g_assert_cmpstr(p.steps[0].json, ==,
                  "{\"c8y_Firmware\":{\"name\":\"device_fw\",\"version\":"
                  "\"1.0.1\",\"url\":\"https://cumulocity.com/fw\"}}");
  assert_step(&p.steps[1],
              "529,curl,2.3.4,rpm,http://my.url.com,install,cumulocity_agent,"
              "1.2.3,,https://cumulocity.com/agent,install");
  assert_step(&p.steps[2], "524,http://cumulocity.com/conf,ssh_conf");
  profile_plan_free(&p);
  /* The document wins over the line it came with. */
  size_t n;
  char **f = params_of(P527, &n);
  g_assert_cmpint(
      profile_plan_new("527", f, n, DOC("7", PJSON_BODY), &p, err, sizeof err),
      ==, C8Y_OK);
  g_assert_cmpstr(p.steps[1].template_id, ==, "529");
  g_assert_cmpstr(p.profile_id, ==, "158751");
  profile_plan_free(&p);
  g_strfreev(f);
}

/* Parts with nothing to do are no step; a patch is 525. */
static void test_plan_parts(void) {
  profile_plan p;
  char err[300];
  g_assert_cmpint(plan_line("527," ROOT ",$FW,,,,false,,$SW,$CONF,http://u,t1",
                            &p, err, sizeof err),
                  ==, C8Y_OK);
  g_assert_cmpuint(p.nsteps, ==, 1);
  assert_step(&p.steps[0], "524,http://u,t1");
  profile_plan_free(&p);
  g_assert_cmpint(plan_line("527," ROOT ",$FW,fw,2.0,http://f,true,1.0", &p,
                            err, sizeof err),
                  ==, C8Y_OK);
  g_assert_cmpuint(p.nsteps, ==, 1);
  assert_step(&p.steps[0], "525,fw,2.0,http://f,1.0");
  profile_plan_free(&p);
  g_assert_cmpint(profile_plan_new(NULL, NULL, 0,
                                   DOC("8", "\"c8y_DeviceProfile\":{}"), &p,
                                   err, sizeof err),
                  ==, C8Y_OK);
  g_assert_cmpuint(p.nsteps, ==, 0);
  profile_plan_free(&p);
}

static void expect_bad(const char *line, const char *json, const char *why) {
  profile_plan p;
  char err[300] = "";
  int rc;
  if (line) {
    rc = plan_line(line, &p, err, sizeof err);
  } else {
    rc = profile_plan_new(NULL, NULL, 0, json, &p, err, sizeof err);
  }
  g_assert_cmpint(rc, ==, C8Y_EINVAL);
  g_assert_cmpstr(err, ==, why);
  g_assert_cmpuint(p.nsteps, ==, 0);
}

static void test_plan_errors(void) {
  expect_bad("527," ROOT ",$FW,fw,1.0,u,false,,$SW,a,1,u", NULL,
             "527: $SW has 3 parameters, not a multiple of 4 "
             "(name,version,url,action)");
  expect_bad("531," ROOT ",$SW,a,1,u,install", NULL,
             "531: $SW has 4 parameters, not a multiple of 5 "
             "(name,version,type,url,action)");
  expect_bad("527," ROOT ",fw,1.0", NULL,
             "527: parameter 1 is 'fw', expected $FW, $SW or $CONF");
  expect_bad("527," ROOT ",$SW,$FW", NULL,
             "527: $FW after $SW (the order is $FW, $SW, $CONF)");
  expect_bad("527," ROOT ",$FW,fw,,u", NULL,
             "527: $FW: firmware name and version must not be empty");
  expect_bad("527," ROOT ",$CONF,http://u", NULL,
             "527: $CONF has 1 parameters, not pairs of url,type");
  expect_bad(NULL,
             DOC("9", "\"c8y_DeviceProfile\":{\"firmware\":{\"name\":\"x\"}}"),
             "c8y_DeviceProfile.firmware.version is missing");
  expect_bad(NULL,
             DOC("9", "\"c8y_DeviceProfile\":{\"software\":[{\"name\":\"x\","
                      "\"version\":1,\"action\":\"install\"}]}"),
             "c8y_DeviceProfile.software.0.version is not a string");
  expect_bad(NULL, DOC("9", "\"c8y_DeviceProfile\":{\"configuration\":{}}"),
             "c8y_DeviceProfile.configuration is not an array");
}

static bool twins(const char *a, const char *b) {
  size_t na, nb;
  char **fa = params_of(a, &na), **fb = params_of(b, &nb);
  char ta[4] = {a[0], a[1], a[2], 0}, tb[4] = {b[0], b[1], b[2], 0};
  bool r = profile_twins(ta, fa, na, tb, fb, nb);
  g_strfreev(fa);
  g_strfreev(fb);
  return r;
}

static void test_twins(void) {
  g_assert_true(twins(P527, P531));
  g_assert_true(twins(P531, P527));
  g_assert_false(twins(P527, P527)); /* the same line: no twin */
  g_assert_false(
      twins(P527, "531," ROOT ",$FW,device_fw,1.0.2,https://cumulocity.com/"
                  "fw,false,,$SW,curl,2.3.4,rpm,http://my.url.com,install,"
                  "cumulocity_agent,1.2.3,,https://cumulocity.com/agent,"
                  "install,$CONF,http://cumulocity.com/conf,ssh_conf,https://"
                  "demos.cumulocity.com/inventory/binaries/156719,"
                  "agent_conf"));
  g_assert_true(
      twins("528," ROOT ",a,1,u,install", "529," ROOT ",a,1,apt,u,install"));
  g_assert_false(
      twins("528," ROOT ",a,1,u,install", "529," ROOT ",a,2,apt,u,install"));
  g_assert_false(twins("528," ROOT ",a,1,u,install", P531));
}

static int noop(c8y_plugin *p, c8y_operation *op, void *ud) {
  (void)p, (void)op, (void)ud;
  return C8Y_PENDING;
}

/* c8y_DeviceProfile joins the 114 only with all three parts served. */
static void test_supported(void) {
  registry *r = registry_new();
  c8y_plugin *pl = (c8y_plugin *)0x1;
  g_assert_cmpint(
      registry_add_handler(r, pl, "515", "c8y_Firmware", 0, noop, NULL, NULL),
      ==, C8Y_OK);
  g_assert_cmpint(registry_add_handler(r, pl, "529", "c8y_SoftwareUpdate", 0,
                                       noop, NULL, NULL),
                  ==, C8Y_OK);
  char *s = profile_supported_operations(r);
  g_assert_cmpstr(s, ==, "c8y_Firmware,c8y_SoftwareUpdate");
  g_free(s);
  g_assert_cmpint(registry_add_handler(r, pl, "524", "c8y_DownloadConfigFile",
                                       0, noop, NULL, NULL),
                  ==, C8Y_OK);
  s = profile_supported_operations(r);
  g_assert_cmpstr(s, ==,
                  "c8y_Firmware,c8y_SoftwareUpdate,c8y_DownloadConfigFile,c8y_"
                  "DeviceProfile");
  g_free(s);
  registry_free(r);
}

/* ---- the engine ----------------------------------------------------------
 */

typedef struct fx {
  char *dir, *boot_file;
  outq *q;
  upstream up;
  journal *j;
  registry *reg;
  ops *o;
  GPtrArray *ops; /* handles the "plugins" got, in order */
  bool no_config; /* no 524 handler */
  /* what the firmware "plugin" does with its operation */
  enum { FW_PENDING, FW_RESUME, FW_REBOOT } fw_mode;
} fx;

static int handler(c8y_plugin *p, c8y_operation *op, void *ud) {
  (void)p;
  fx *f = ud;
  g_ptr_array_add(f->ops, op);
  if (strcmp(ops_op_template(op), "515") == 0 && !ops_op_resumed(op)) {
    if (f->fw_mode == FW_RESUME)
      g_assert_cmpint(ops_op_resume_after_restart(op), ==, C8Y_OK);
    else if (f->fw_mode == FW_REBOOT)
      g_assert_cmpint(ops_op_complete_on_reboot(op), ==, C8Y_OK);
  }
  return C8Y_PENDING;
}

static void on_dispatch(void *ctx, c8y_operation *op) {
  (void)ctx;
  ops_run_handler(op);
}

static void on_wake(void *ctx) { (void)ctx; }

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_boot(fx *f, const char *id) {
  g_assert_true(g_file_set_contents(f->boot_file, id, -1, NULL));
}

/* The agent's start on the state dir: journal, registry with the plugins'
 * handlers, engine, recovery, plugins "loaded", resume. */
static void start(fx *f) {
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[256];
  g_assert_cmpint(outq_open(&qo, &f->q, err, sizeof err), ==, 0);
  f->up = (upstream){.q = f->q};
  g_assert_cmpint(journal_open(f->dir, &f->j, err, sizeof err), ==, 0);
  f->reg = registry_new();
  c8y_plugin *fw = (c8y_plugin *)0x1, *sw = (c8y_plugin *)0x2,
             *cf = (c8y_plugin *)0x3;
  g_assert_cmpint(registry_add_handler(f->reg, fw, "515", "c8y_Firmware", 60000,
                                       handler, f, NULL),
                  ==, C8Y_OK);
  g_assert_cmpint(registry_add_handler(f->reg, sw, "528", "c8y_SoftwareUpdate",
                                       60000, handler, f, NULL),
                  ==, C8Y_OK);
  g_assert_cmpint(registry_add_handler(f->reg, sw, "529", "c8y_SoftwareUpdate",
                                       60000, handler, f, NULL),
                  ==, C8Y_OK);
  if (!f->no_config)
    g_assert_cmpint(registry_add_handler(f->reg, cf, "524",
                                         "c8y_DownloadConfigFile", 60000,
                                         handler, f, NULL),
                    ==, C8Y_OK);
  ops_host h = {.ctx = f, .dispatch = on_dispatch, .wake = on_wake};
  g_assert_cmpint(ops_new(ROOT, f->reg, &f->up, f->j, &h, 60000, &f->o), ==, 0);
  ops_recover(f->o);
  ops_resume(f->o);
}

/* The agent's stop (what outlives it stays in the journal), or a kill
 * (nothing more is written). */
static void stop(fx *f, bool kill) {
  if (!kill) {
    ops_stop(f->o);
    ops_cancel_running(f->o);
    ops_fail_all(f->o, "agent stopped");
  }
  ops_free(f->o);
  registry_free(f->reg);
  journal_close(f->j);
  outq_close(f->q);
  f->o = NULL;
}

static void fx_setup(fx *f, gconstpointer d) {
  (void)d;
  f->dir = g_dir_make_tmp("c8y-profile-XXXXXX", NULL);
  f->boot_file = g_build_filename(f->dir, "boot", NULL);
  set_boot(f, "boot-A");
  g_setenv("C8Y_BOOT_ID_FILE", f->boot_file, TRUE);
  f->ops = g_ptr_array_new();
}

static void fx_teardown(fx *f, gconstpointer d) {
  (void)d;
  if (f->o)
    stop(f, true);
  g_ptr_array_free(f->ops, TRUE);
  GDir *dir = g_dir_open(f->dir, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name(dir))) {
    char *p = g_build_filename(f->dir, name, NULL);
    g_unlink(p);
    g_free(p);
  }
  g_dir_close(dir);
  g_rmdir(f->dir);
  g_free(f->dir);
  g_free(f->boot_file);
}

/* Publishes and acknowledges everything queued, as the drain does; the
 * lines joined by '\n' (g_free). */
static char *take_all(fx *f) {
  GString *all = g_string_new(NULL);
  for (int guard = 0; guard < 100; guard++) {
    ops_process(f->o, now_ms());
    outq_batch b;
    if (outq_take(f->q, 16000, &b) != 1)
      break;
    if (all->len)
      g_string_append_c(all, '\n');
    g_string_append(all, b.payload);
    outq_ack(f->q, b.id);
    for (size_t i = 0; i < b.ntags; i++)
      ops_on_acked(f->o, upstream_tag_of(b.tags[i]), true);
    outq_batch_free(&b);
  }
  return g_string_free(all, FALSE);
}

/* Publishes what is queued; the test does not look at it. */
static void flush(fx *f) { g_free(take_all(f)); }

static void expect_lines(fx *f, const char *want) {
  char *got = take_all(f);
  g_assert_cmpstr(got, ==, want);
  g_free(got);
}

static void feed(fx *f, const char *payload) {
  ops_handle_payload(f->o, payload, strlen(payload));
}

static void feed_json(fx *f, const char *payload) {
  ops_handle_json(f->o, payload, strlen(payload));
}

/* The i-th operation a plugin got: its template and fields. */
static c8y_operation *got_op(fx *f, guint i, const char *want) {
  g_assert_cmpuint(f->ops->len, >, i);
  c8y_operation *op = g_ptr_array_index(f->ops, i);
  GString *g = g_string_new(ops_op_template(op));
  for (size_t k = 0; k < ops_op_field_count(op); k++)
    g_string_append_printf(g, ",%s", ops_op_field(op, k));
  g_assert_cmpstr(g->str, ==, want);
  g_string_free(g, TRUE);
  return op;
}

static void succeed(fx *f, c8y_operation *op) {
  g_assert_cmpint(ops_op_succeed(op, NULL), ==, C8Y_OK);
  (void)f;
}

#define FW_STEP "515,device_fw,1.0.1,https://cumulocity.com/fw"
#define SW_STEP_528                                                            \
  "528,curl,2.3.4,http://my.url.com,install,cumulocity_agent,1.2.3,https://"   \
  "cumulocity.com/agent,install"
#define SW_STEP_529                                                            \
  "529,curl,2.3.4,rpm,http://my.url.com,install,cumulocity_agent,1.2.3,,"      \
  "https://cumulocity.com/agent,install"
#define CONF1_STEP "524,http://cumulocity.com/conf,ssh_conf"
#define CONF2_STEP                                                             \
  "524,https://demos.cumulocity.com/inventory/binaries/156719,agent_conf"

/* Every step through its handler, one 501 and one 503 for the profile, 121
 * false at its start and true before its end; no status of any step. */
static void test_run_all_steps(fx *f, gconstpointer d) {
  (void)d;
  start(f);
  feed(f, P527);
  expect_lines(f, "501,c8y_DeviceProfile\n121,false,");
  c8y_operation *fw = got_op(f, 0, FW_STEP);
  g_assert_cmpstr(ops_op_fragment(fw), ==, "c8y_Firmware");
  g_assert_null(ops_op_id(fw));
  g_assert_cmpstr(ops_op_json_value(fw, "c8y_Firmware.version"), ==, "1.0.1");
  g_assert_cmpuint(f->ops->len, ==, 1);
  succeed(f, fw);
  expect_lines(f, "");
  succeed(f, got_op(f, 1, SW_STEP_528));
  expect_lines(f, "");
  succeed(f, got_op(f, 2, CONF1_STEP));
  expect_lines(f, "");
  g_assert_cmpuint(ops_active(f->o), ==, 2);
  succeed(f, got_op(f, 3, CONF2_STEP));
  expect_lines(f, "121,true,\n503,c8y_DeviceProfile");
  g_assert_cmpuint(ops_active(f->o), ==, 0);
}

/* A failing step fails the profile with its reason; later steps never
 * run, 121 never turns true. */
static void test_failing_step(fx *f, gconstpointer d) {
  (void)d;
  start(f);
  feed(f, P527);
  expect_lines(f, "501,c8y_DeviceProfile\n121,false,");
  succeed(f, got_op(f, 0, FW_STEP));
  expect_lines(f, "");
  g_assert_cmpint(ops_op_fail(got_op(f, 1, SW_STEP_528), "install of curl "
                                                         "failed (exit 100)"),
                  ==, C8Y_OK);
  expect_lines(f, "502,c8y_DeviceProfile,software: install of curl failed "
                  "(exit 100)");
  g_assert_cmpuint(f->ops->len, ==, 2);
  g_assert_cmpuint(ops_active(f->o), ==, 0);
}

/* A part no plugin handles fails the profile before anything runs. */
static void test_missing_handler(fx *f, gconstpointer d) {
  (void)d;
  f->no_config = true;
  start(f);
  feed(f, P527);
  expect_lines(f, "501,c8y_DeviceProfile\n502,c8y_DeviceProfile,"
                  "configuration ssh_conf: no plugin handles "
                  "c8y_DownloadConfigFile (template 524); nothing was "
                  "changed");
  g_assert_cmpuint(f->ops->len, ==, 0);
}

/* 527 and 531 in one publish, and JSON: one profile, run from the richest
 * copy, reported by id with the profile's id in 121. */
static void test_twins_and_json_once(fx *f, gconstpointer d) {
  (void)d;
  start(f);
  feed(f, P527 "\n" P531);
  feed_json(f, DOC("4711", PJSON_BODY));
  expect_lines(f, "501,c8y_DeviceProfile\n121,false,158751");
  g_assert_cmpuint(ops_active(f->o), ==, 2); /* the profile, its step */
  for (guint i = 0; i < 4; i++) {
    if (i == 1)
      got_op(f, 1, SW_STEP_529);
    succeed(f, g_ptr_array_index(f->ops, i));
    if (i < 3)
      flush(f);
  }
  expect_lines(f, "121,true,158751\n506,4711");
  g_assert_cmpuint(f->ops->len, ==, 4);
  g_assert_cmpuint(ops_active(f->o), ==, 0);
  /* (the 506 went out with the last take; the document delivered again
   * starts nothing) */
  feed_json(f, DOC("4711", PJSON_BODY));
  expect_lines(f, "");
  g_assert_cmpuint(ops_active(f->o), ==, 0);
}

/* 527 and 531 in publishes of their own: still one profile, from 531; the
 * same after it ended. */
static void test_twins_apart(fx *f, gconstpointer d) {
  (void)d;
  start(f);
  feed(f, P527);
  feed(f, P531);
  expect_lines(f, "501,c8y_DeviceProfile\n121,false,");
  g_assert_cmpuint(ops_active(f->o), ==, 2);
  succeed(f, got_op(f, 0, FW_STEP));
  flush(f);
  succeed(f, got_op(f, 1, SW_STEP_529));
  flush(f);
  succeed(f, g_ptr_array_index(f->ops, 2));
  flush(f);
  succeed(f, g_ptr_array_index(f->ops, 3));
  expect_lines(f, "121,true,\n503,c8y_DeviceProfile");
  /* Ended with only its 527: its 531 (on its own) runs nothing. */
  feed(f, "527," ROOT ",$SW,a,1,u,install");
  expect_lines(f, "501,c8y_DeviceProfile\n121,false,");
  succeed(f, got_op(f, 4, "528,a,1,u,install"));
  expect_lines(f, "121,true,\n503,c8y_DeviceProfile");
  feed(f, "531," ROOT ",$SW,a,1,apt,u,install");
  expect_lines(f, "");
  g_assert_cmpuint(ops_active(f->o), ==, 0);
}

/* The firmware step asks to be resumed and reboots the machine: after the
 * restart its plugin gets it again (rebooted), then the other steps run
 * and the profile ends by id. */
static void test_resume_across_reboot(fx *f, gconstpointer d) {
  (void)d;
  f->fw_mode = FW_RESUME;
  start(f);
  feed_json(f, DOC("90", PJSON_BODY));
  expect_lines(f, "504,90\n121,false,158751");
  got_op(f, 0, FW_STEP);
  stop(f, false); /* the reboot stops the agent: nothing is failed */
  set_boot(f, "boot-B");
  g_ptr_array_set_size(f->ops, 0);
  start(f);
  c8y_operation *fw = got_op(f, 0, FW_STEP);
  g_assert_true(ops_op_resumed(fw));
  g_assert_true(ops_op_rebooted(fw));
  expect_lines(f, "");
  succeed(f, fw);
  flush(f);
  for (guint i = 1; i < 4; i++) {
    if (i == 1)
      got_op(f, 1, SW_STEP_529);
    succeed(f, g_ptr_array_index(f->ops, i));
    if (i < 3)
      expect_lines(f, "");
  }
  expect_lines(f, "121,true,158751\n506,90");
  stop(f, false);
  /* Nothing left in the journal. */
  g_ptr_array_set_size(f->ops, 0);
  start(f);
  expect_lines(f, "");
  g_assert_cmpuint(f->ops->len, ==, 0);
}

/* The firmware step completes by the reboot (op_complete_on_reboot): the
 * next start goes on with the software step; without a reboot the profile
 * fails with the firmware step's reason. */
static void test_complete_on_reboot(fx *f, gconstpointer d) {
  (void)d;
  f->fw_mode = FW_REBOOT;
  start(f);
  feed(f, P527);
  flush(f);
  stop(f, true);
  set_boot(f, "boot-B");
  g_ptr_array_set_size(f->ops, 0);
  start(f);
  got_op(f, 0, SW_STEP_528);
  succeed(f, g_ptr_array_index(f->ops, 0));
  flush(f);
  succeed(f, g_ptr_array_index(f->ops, 1));
  flush(f);
  succeed(f, g_ptr_array_index(f->ops, 2));
  expect_lines(f, "121,true,\n503,c8y_DeviceProfile");

  feed(f, "531," ROOT ",$FW,fw,9,http://f");
  flush(f);
  got_op(f, 3, "515,fw,9,http://f");
  stop(f, true);
  g_ptr_array_set_size(f->ops, 0);
  start(f); /* same boot */
  expect_lines(f, "502,c8y_DeviceProfile,firmware: the agent restarted but "
                  "the device did not reboot");
  g_assert_cmpuint(f->ops->len, ==, 0);
}

/* Killed during a step that cannot be resumed: the profile fails with
 * that step's reason after the restart. Killed between steps (the
 * software step queued behind another software update): the profile goes
 * on with that step. */
static void test_killed(fx *f, gconstpointer d) {
  (void)d;
  start(f);
  feed(f, P527);
  flush(f);
  succeed(f, got_op(f, 0, FW_STEP));
  flush(f);
  got_op(f, 1, SW_STEP_528);
  stop(f, true);
  g_ptr_array_set_size(f->ops, 0);
  start(f);
  expect_lines(f, "502,c8y_DeviceProfile,software: the agent stopped while "
                  "the operation was executing");
  g_assert_cmpuint(f->ops->len, ==, 0);

  feed(f, "528," ROOT ",x,1,u,install");
  expect_lines(f, "501,c8y_SoftwareUpdate");
  got_op(f, 0, "528,x,1,u,install");
  feed(f, P527);
  expect_lines(f, "501,c8y_DeviceProfile\n121,false,");
  succeed(f, got_op(f, 1, FW_STEP));
  expect_lines(f, "");
  g_assert_cmpuint(f->ops->len, ==, 2); /* the step waits its turn */
  stop(f, true);
  g_ptr_array_set_size(f->ops, 0);
  start(f);
  got_op(f, 0, SW_STEP_528);
  expect_lines(f, "502,c8y_SoftwareUpdate,the agent stopped while the "
                  "operation was executing");
  succeed(f, g_ptr_array_index(f->ops, 0));
  flush(f);
  succeed(f, g_ptr_array_index(f->ops, 1));
  flush(f);
  succeed(f, g_ptr_array_index(f->ops, 2));
  expect_lines(f, "121,true,\n503,c8y_DeviceProfile");
}

/* SIGTERM during a step that cannot outlive it: the step is told, then
 * failed, and with it the profile, before the agent exits; nothing is
 * left for the next start. */
static void test_stopped(fx *f, gconstpointer d) {
  (void)d;
  start(f);
  feed(f, P527);
  flush(f);
  succeed(f, got_op(f, 0, FW_STEP));
  flush(f);
  c8y_operation *sw = got_op(f, 1, SW_STEP_528);
  ops_stop(f->o);
  g_assert_cmpuint(ops_cancel_running(f->o), ==, 1); /* the step only */
  g_assert_true(ops_op_cancelled(sw));
  g_assert_cmpuint(ops_running(f->o), ==, 1);
  ops_fail_all(f->o, "agent stopped");
  expect_lines(f, "502,c8y_DeviceProfile,software: agent stopped");
  g_assert_cmpuint(ops_active(f->o), ==, 0);
  stop(f, true);
  g_ptr_array_set_size(f->ops, 0);
  start(f);
  expect_lines(f, "");
  g_assert_cmpuint(f->ops->len, ==, 0);
}

/* A step's timeout fails the profile with the agent's reason. */
static void test_step_timeout(fx *f, gconstpointer d) {
  (void)d;
  start(f);
  feed(f, "527," ROOT ",$FW,fw,2,http://f");
  flush(f);
  c8y_operation *fw = got_op(f, 0, "515,fw,2,http://f");
  ops_set_cancel_grace(f->o, 0);
  ops_process(f->o, now_ms() + 61000);
  g_assert_true(ops_op_cancelled(fw));
  ops_process(f->o, now_ms() + 62000);
  expect_lines(f, "502,c8y_DeviceProfile,firmware: operation timed out "
                  "after 60 s");
  g_assert_cmpint(ops_op_succeed(fw, NULL), ==, C8Y_ETIMEDOUT);
}

#define ADD(path, fn) g_test_add(path, fx, NULL, fx_setup, fn, fx_teardown)

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/profile/plan/527", test_plan_527);
  g_test_add_func("/profile/plan/531", test_plan_531);
  g_test_add_func("/profile/plan/json", test_plan_json);
  g_test_add_func("/profile/plan/parts", test_plan_parts);
  g_test_add_func("/profile/plan/errors", test_plan_errors);
  g_test_add_func("/profile/twins", test_twins);
  g_test_add_func("/profile/supported", test_supported);
  ADD("/profile/run/all-steps", test_run_all_steps);
  ADD("/profile/run/failing-step", test_failing_step);
  ADD("/profile/run/missing-handler", test_missing_handler);
  ADD("/profile/run/twins-and-json-once", test_twins_and_json_once);
  ADD("/profile/run/twins-apart", test_twins_apart);
  ADD("/profile/run/resume-across-reboot", test_resume_across_reboot);
  ADD("/profile/run/complete-on-reboot", test_complete_on_reboot);
  ADD("/profile/run/killed", test_killed);
  ADD("/profile/run/stopped", test_stopped);
  ADD("/profile/run/step-timeout", test_step_timeout);
  return g_test_run();
}
