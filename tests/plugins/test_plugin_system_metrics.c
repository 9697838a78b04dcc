/* The system_metrics plugin against the real plugin host (testhost), with /proc
 * fixtures from tests/plugins/data/system_metrics/{a,b} (b is a later reading
 * than a). */
#include "plugin_test_util.h"
#include "testhost.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#define TIME_RE "20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-9:]{8}\\.[0-9]{3}Z"

typedef struct fx {
  char *dir, *proc;
  testhost *h;
} fx;

static void put(const char *proc, const char *snapshot, const char *rel) {
  char *src = g_test_build_filename(G_TEST_DIST, "data", "system_metrics",
                                    snapshot, rel, NULL);
  char *dst = g_build_filename(proc, rel, NULL);
  char *text = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(src, &text, &len, NULL));
  g_assert_true(g_file_set_contents(dst, text, (gssize)len, NULL));
  g_free(text);
  g_free(src);
  g_free(dst);
}

/* Switches the fake /proc to snapshot "a" or "b". */
static void snapshot(fx *f, const char *which) {
  put(f->proc, which, "stat");
  put(f->proc, which, "meminfo");
  put(f->proc, which, "uptime");
  put(f->proc, which, "net/dev");
}

static void fx_setup(fx *f, gconstpointer data) {
  f->dir = ptu_make_tmpdir("c8y-sm");
  f->proc = g_build_filename(f->dir, "proc", NULL);
  char *net = g_build_filename(f->proc, "net", NULL);
  g_assert_cmpint(g_mkdir_with_parents(net, 0700), ==, 0);
  g_free(net);
  snapshot(f, "a");
  f->h = testhost_new("dev1", NULL);
  testhost_set_config(f->h, "proc_root", f->proc);
}

static void fx_teardown(fx *f, gconstpointer data) {
  testhost_free(f->h);
  ptu_rm_rf(f->dir);
  g_free(f->proc);
  g_free(f->dir);
}

static void assert_line(testhost *h, size_t i, const char *body_re) {
  const char *line = testhost_line(h, i);
  g_assert_nonnull(line);
  char *re =
      g_strdup_printf("^s/us\\|201,c8y_SystemMetrics,%s,%s$", TIME_RE, body_re);
  if (!g_regex_match_simple(re, line, 0, 0))
    g_error("line %s\ndoes not match %s", line, re);
  g_free(re);
}

static void test_registers(fx *f, gconstpointer data) {
  testhost_set_config(f->h, "interval", "15");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpuint(testhost_producer_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_producer_name(f->h, 0), ==, "system_metrics");
  g_assert_cmpuint(testhost_producer_interval(f->h, 0), ==, 15000);
  testhost_unload(f->h);
  testhost *h = testhost_new("dev1", NULL);
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpuint(testhost_producer_interval(h, 0), ==, 60000);
  testhost_free(h);
}

/* First reading primes CPU and network; the second one has rates computed
 * from the fixture deltas (10 s of uptime apart). */
static void test_two_readings(fx *f, gconstpointer data) {
  testhost_set_config(f->h, "disk", "false");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_producer(f->h, "system_metrics"), ==, C8Y_OK);
  g_assert_cmpuint(testhost_line_count(f->h), ==, 1);
  assert_line(f->h, 0,
              "c8y_Memory,used_percent,25,%,c8y_Memory,used,1953\\.13,MB,"
              "c8y_Memory,total,7812\\.5,MB,c8y_Uptime,uptime,1000,s");
  snapshot(f, "b");
  g_assert_cmpint(testhost_run_producer(f->h, "system_metrics"), ==, C8Y_OK);
  g_assert_cmpuint(testhost_line_count(f->h), ==, 2);
  /* cpu: busy 800 of 1500 jiffies; eth0: +100000/+20000 B in 10 s; lo is
   * left out when no interfaces are configured. */
  assert_line(f->h, 1,
              "c8y_CPU,usage,53\\.33,%,"
              "c8y_Memory,used_percent,50,%,c8y_Memory,used,3906\\.25,MB,"
              "c8y_Memory,total,7812\\.5,MB,c8y_Uptime,uptime,1010,s,"
              "c8y_Network,eth0_rx,10000,B/s,c8y_Network,eth0_tx,2000,B/s,"
              "c8y_Network,wlan0_rx,5,B/s,c8y_Network,wlan0_tx,3,B/s");
}

static void test_selected_interface(fx *f, gconstpointer data) {
  const char *cfg[][2] = {{"disk", "false"},
                          {"memory", "off"},
                          {"uptime", "no"},
                          {"cpu", "0"},
                          {"interfaces", "lo eth0 eth9"}};
  for (size_t i = 0; i < G_N_ELEMENTS(cfg); i++)
    testhost_set_config(f->h, cfg[i][0], cfg[i][1]);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_producer(f->h, "system_metrics"), ==, C8Y_OK);
  g_assert_cmpuint(testhost_line_count(f->h), ==, 0);
  g_assert_nonnull(testhost_find_log(f->h, "interfaces: eth9"));
  snapshot(f, "b");
  g_assert_cmpint(testhost_run_producer(f->h, "system_metrics"), ==, C8Y_OK);
  assert_line(f->h, 0,
              "c8y_Network,lo_rx,2222\\.2,B/s,c8y_Network,lo_tx,2222\\.2,B/s,"
              "c8y_Network,eth0_rx,10000,B/s,c8y_Network,eth0_tx,2000,B/s");
}

/* A counter that went backwards (interface recreated) is not a rate. */
static void test_counter_reset(fx *f, gconstpointer data) {
  testhost_set_config(f->h, "interfaces", "eth0");
  testhost_set_config(f->h, "memory", "false");
  testhost_set_config(f->h, "disk", "false");
  testhost_set_config(f->h, "uptime", "false");
  testhost_set_config(f->h, "cpu", "false");
  snapshot(f, "b");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_producer(f->h, "system_metrics"), ==, C8Y_OK);
  put(f->proc, "a", "net/dev"); /* lower counters */
  char *up = g_build_filename(f->proc, "uptime", NULL);
  g_assert_true(g_file_set_contents(up, "1020.00 0\n", -1, NULL));
  g_assert_cmpint(testhost_run_producer(f->h, "system_metrics"), ==, C8Y_OK);
  g_assert_cmpuint(testhost_line_count(f->h), ==, 0);
  put(f->proc, "b", "net/dev");
  g_assert_true(g_file_set_contents(up, "1030.00 0\n", -1, NULL));
  g_free(up);
  g_assert_cmpint(testhost_run_producer(f->h, "system_metrics"), ==, C8Y_OK);
  /* One interface gives two samples: a 201 line. */
  assert_line(f->h, 0,
              "c8y_Network,eth0_rx,10000,B/s,c8y_Network,eth0_tx,2000,B/s");
}

static double field_value(const char *line, const char *series) {
  char *key = g_strdup_printf(",%s,", series);
  const char *p = strstr(line, key);
  g_assert_nonnull(p);
  double v = g_ascii_strtod(p + strlen(key), NULL);
  g_free(key);
  return v;
}

static void test_disk(fx *f, gconstpointer data) {
  const char *cfg[][2] = {{"memory", "false"},
                          {"uptime", "false"},
                          {"cpu", "false"},
                          {"network", "false"},
                          {"mounts", " /  /tmp /nonexistent-mount "}};
  for (size_t i = 0; i < G_N_ELEMENTS(cfg); i++)
    testhost_set_config(f->h, cfg[i][0], cfg[i][1]);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_producer(f->h, "system_metrics"), ==, C8Y_OK);
  g_assert_nonnull(testhost_find_log(f->h, "mounts: /nonexistent-mount"));
  const char *line = testhost_line(f->h, 0);
  g_assert_nonnull(line);
  assert_line(f->h, 0,
              "c8y_Disk,root_used_percent,[0-9.]+,%,c8y_Disk,root_free,"
              "[0-9.]+,MB,c8y_Disk,tmp_used_percent,[0-9.]+,%,"
              "c8y_Disk,tmp_free,[0-9.]+,MB");
  struct statvfs st;
  g_assert_cmpint(statvfs("/", &st), ==, 0);
  double free_mb = (double)st.f_bavail * (double)st.f_frsize / 1048576.0;
  double used = (double)(st.f_blocks - st.f_bfree);
  double pct = used / (used + (double)st.f_bavail) * 100.0;
  /* Others write to the disk meanwhile: allow some drift. */
  g_assert_cmpfloat_with_epsilon(field_value(line, "root_free"), free_mb,
                                 256.0);
  g_assert_cmpfloat_with_epsilon(field_value(line, "root_used_percent"), pct,
                                 1.0);
}

static void test_real_proc(fx *f, gconstpointer data) {
  testhost *h = testhost_new("dev1", NULL);
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_producer(h, "system_metrics"), ==, C8Y_OK);
  g_usleep(200 * 1000);
  g_assert_cmpint(testhost_run_producer(h, "system_metrics"), ==, C8Y_OK);
  const char *line = testhost_line(h, 1);
  g_assert_nonnull(line);
  double mem = field_value(line, "used_percent");
  g_assert_cmpfloat(mem, >, 0.0);
  g_assert_cmpfloat(mem, <=, 100.0);
  g_assert_cmpfloat(field_value(line, "uptime"), >, 0.0);
  g_assert_nonnull(strstr(line, ",c8y_Disk,root_free,"));
  testhost_free(h);
}

static void test_bad_config(fx *f, gconstpointer data) {
  const char *bad[][3] = {
      {"interval", "0", "interval: "},
      {"interval", "x", "interval: not an integer"},
      {"proc_root", "proc", "proc_root: "},
      {"mounts", "/ var", "mounts: "},
      {"interfaces", "eth0 eth0", "interfaces: "},
      {"cpu", "maybe", "cpu: "},
      {"network", "2", "network: "},
      {"measurement_request", "maybe", "measurement_request: "},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    testhost *h = testhost_new("dev1", NULL);
    testhost_set_config(h, bad[i][0], bad[i][1]);
    g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_EINVAL);
    if (!testhost_find_log(h, bad[i][2]))
      g_error("%s=%s: no log with '%s'", bad[i][0], bad[i][1], bad[i][2]);
    g_assert_cmpuint(testhost_producer_count(h), ==, 0);
    testhost_free(h);
  }
}

/* The index of the k-th captured 201 line (the engine's 501/503 are
 * captured too). */
static size_t nth_201(testhost *h, size_t k) {
  for (size_t i = 0; i < testhost_line_count(h); i++)
    if (g_str_has_prefix(testhost_line(h, i), "s/us|201,") && k-- == 0)
      return i;
  g_error("no 201 line %zu", k);
  return 0;
}

/* c8y_MeasurementRequestOperation (517): all data points measured at
 * once, as the periodic producer would, and the operation succeeds; the
 * rates continue from the last reading, whichever took it. */
static void test_measurement_request(fx *f, gconstpointer data) {
  testhost_set_config(f->h, "disk", "false");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_true(testhost_has_operation(f->h, "517"));
  g_assert_cmpint(testhost_run_producer(f->h, "system_metrics"), ==, C8Y_OK);
  snapshot(f, "b");
  g_assert_cmpint(testhost_run_operation(f->h, "517,dev1,all", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_cmpuint(testhost_count_lines(f->h, "201,"), ==, 2);
  assert_line(f->h, nth_201(f->h, 1),
              "c8y_CPU,usage,53\\.33,%,"
              "c8y_Memory,used_percent,50,%,c8y_Memory,used,3906\\.25,MB,"
              "c8y_Memory,total,7812\\.5,MB,c8y_Uptime,uptime,1010,s,"
              "c8y_Network,eth0_rx,10000,B/s,c8y_Network,eth0_tx,2000,B/s,"
              "c8y_Network,wlan0_rx,5,B/s,c8y_Network,wlan0_tx,3,B/s");
  g_assert_nonnull(testhost_find_line(f->h, "503,c8y_MeasurementRequest"));
}

/* A request before any reading: the rates get their base first (on the
 * real /proc: CPU time always passes in the second between the two), so
 * the answer has every data point. */
static void test_measurement_request_first(fx *f, gconstpointer data) {
  testhost *h = testhost_new("dev1", NULL);
  g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_operation(h, "517,dev1,LOGA", 10000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_cmpuint(testhost_count_lines(h, "201,"), ==, 1);
  const char *line = testhost_line(h, nth_201(h, 0));
  g_assert_nonnull(strstr(line, ",c8y_CPU,usage,"));
  g_assert_nonnull(strstr(line, ",c8y_Memory,used_percent,"));
  g_assert_nonnull(strstr(line, ",c8y_Disk,root_free,"));
  testhost_free(h);
}

/* measurement_request = false leaves 517 to another plugin. */
static void test_measurement_request_off(fx *f, gconstpointer data) {
  testhost_set_config(f->h, "measurement_request", "false");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_false(testhost_has_operation(f->h, "517"));
  g_assert_cmpuint(testhost_producer_count(f->h), ==, 1);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, fx, NULL, fx_setup, fn, fx_teardown)
  ADD("/plugin/system_metrics/registers", test_registers);
  ADD("/plugin/system_metrics/two-readings", test_two_readings);
  ADD("/plugin/system_metrics/selected-interface", test_selected_interface);
  ADD("/plugin/system_metrics/counter-reset", test_counter_reset);
  ADD("/plugin/system_metrics/disk", test_disk);
  ADD("/plugin/system_metrics/real-proc", test_real_proc);
  ADD("/plugin/system_metrics/bad-config", test_bad_config);
  ADD("/plugin/system_metrics/measurement-request", test_measurement_request);
  ADD("/plugin/system_metrics/measurement-request-first",
      test_measurement_request_first);
  ADD("/plugin/system_metrics/measurement-request-off",
      test_measurement_request_off);
  return g_test_run();
}
