/* The example plugin against the real plugin host (testhost). */
#include "plugin_test_util.h"
#include "testhost.h"

#include <glib.h>

typedef struct fx {
  char *dir, *loadavg;
  testhost *h;
} fx;

static void fx_setup(fx *f, gconstpointer data) {
  f->dir = ptu_make_tmpdir("c8y-example");
  f->loadavg = g_build_filename(f->dir, "loadavg", NULL);
  g_assert_true(g_file_set_contents(f->loadavg, "0.52 0.58 0.59 1/467 12345\n",
                                    -1, NULL));
  f->h = testhost_new("dev1", NULL);
  testhost_set_config(f->h, "path", f->loadavg);
}

static void fx_teardown(fx *f, gconstpointer data) {
  testhost_free(f->h);
  ptu_rm_rf(f->dir);
  g_free(f->loadavg);
  g_free(f->dir);
}

static void test_registers(fx *f, gconstpointer data) {
  testhost_set_config(f->h, "interval", "5");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpuint(testhost_producer_count(f->h), ==, 1);
  g_assert_cmpstr(testhost_producer_name(f->h, 0), ==, "loadavg");
  g_assert_cmpuint(testhost_producer_interval(f->h, 0), ==, 5000);
  g_assert_true(testhost_has_operation(f->h, "517"));
  g_assert_null(testhost_find_log(f->h, "unknown key"));
}

static void test_default_interval(fx *f, gconstpointer data) {
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpuint(testhost_producer_interval(f->h, 0), ==, 60000);
}

static void test_produce(fx *f, gconstpointer data) {
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_producer(f->h, "loadavg"), ==, C8Y_OK);
  g_assert_cmpuint(testhost_line_count(f->h), ==, 1);
  const char *line = testhost_line(f->h, 0);
  g_assert_true(g_regex_match_simple(
      "^s/us\\|201,c8y_LoadAverage,"
      "20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-9:]{8}\\.[0-9]{3}Z,"
      "c8y_LoadAverage,1min,0\\.52,,c8y_LoadAverage,5min,0\\.58,,"
      "c8y_LoadAverage,15min,0\\.59,$",
      line, 0, 0));
}

static void test_produce_missing_file(fx *f, gconstpointer data) {
  testhost_set_config(f->h, "path", "/nonexistent/loadavg");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_producer(f->h, "loadavg"), ==, C8Y_EIO);
  g_assert_cmpuint(testhost_line_count(f->h), ==, 0);
  g_assert_nonnull(testhost_find_log(f->h, "/nonexistent/loadavg"));
}

static void test_bad_interval(fx *f, gconstpointer data) {
  const char *bad[] = {"0", "-5", "86401", "abc", "10s", ""};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    testhost *h = testhost_new("dev1", NULL);
    testhost_set_config(h, "interval", bad[i]);
    g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_EINVAL);
    g_assert_nonnull(testhost_find_log(h, "interval: "));
    g_assert_cmpuint(testhost_producer_count(h), ==, 0);
    testhost_free(h);
  }
}

static void test_measurement_request(fx *f, gconstpointer data) {
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_operation(f->h, "517,dev1,LOGA", 5000), ==,
                  TESTHOST_OP_SUCCEEDED);
  g_assert_true(g_regex_match_simple(
      "^s/us\\|201,c8y_LoadAverage,"
      "20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-9:]{8}\\.[0-9]{3}Z,"
      "c8y_LoadAverage,1min,0\\.52,,c8y_LoadAverage,5min,0\\.58,,"
      "c8y_LoadAverage,15min,0\\.59,$",
      testhost_find_line(f->h, "201,"), 0, 0));
}

static void test_measurement_request_fails(fx *f, gconstpointer data) {
  testhost_set_config(f->h, "path", "/nonexistent/loadavg");
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
  g_assert_cmpint(testhost_run_operation(f->h, "517,dev1,LOGA", 5000), ==,
                  TESTHOST_OP_FAILED);
  g_assert_cmpstr(testhost_op_detail(f->h), ==, "cannot read the load average");
  /* The real engine publishes the operation's 501 and 502, nothing else. */
  g_assert_null(testhost_find_line(f->h, "201,"));
  g_assert_cmpstr(testhost_find_line(f->h, "502,"), ==,
                  "s/us|502,c8y_MeasurementRequestOperation,"
                  "cannot read the load average");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, fx, NULL, fx_setup, fn, fx_teardown)
  ADD("/plugin/example/registers", test_registers);
  ADD("/plugin/example/default-interval", test_default_interval);
  ADD("/plugin/example/produce", test_produce);
  ADD("/plugin/example/produce-missing-file", test_produce_missing_file);
  ADD("/plugin/example/bad-interval", test_bad_interval);
  ADD("/plugin/example/measurement-request", test_measurement_request);
  ADD("/plugin/example/measurement-request-fails",
      test_measurement_request_fails);
  return g_test_run();
}
