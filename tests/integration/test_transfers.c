/* File transfers end to end: the real agent with the xfer test plugin (or
 * the bundled logfile plugin) against the simulator's MQTT and REST sides. */
#include "fixture.h"
#include "sim_http.h"

#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct hx {
  fx f;
  sim_http *h;
  char *dir; /* test files */
} hx;

/* sha256 hex of a file (independent of the agent's code). */
static char *file_sha256(const char *path) {
  gchar *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  char *hex =
      g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
  g_free(data);
  return hex;
}

/* A file of `mb` MiB of pseudo-random bytes. */
static char *make_file(hx *x, const char *name, size_t mb) {
  char *path = g_build_filename(x->dir, name, NULL);
  FILE *f = fopen(path, "wb");
  g_assert_nonnull(f);
  GRand *r = g_rand_new_with_seed((guint32)mb * 7919u + (guint32)strlen(name));
  guint32 buf[16384];
  for (size_t i = 0; i < mb * 16; i++) {
    for (size_t k = 0; k < G_N_ELEMENTS(buf); k++)
      buf[k] = g_rand_int(r);
    g_assert_cmpuint(fwrite(buf, sizeof buf[0], G_N_ELEMENTS(buf), f), ==,
                     G_N_ELEMENTS(buf));
  }
  g_rand_free(r);
  g_assert_cmpint(fclose(f), ==, 0);
  return path;
}

static void hx_start_http(hx *x, const char *http_password, const char *cert,
                          const char *key) {
  x->dir = g_dir_make_tmp("c8y-http-XXXXXX", NULL);
  g_assert_nonnull(x->dir);
  fx_start_sim(&x->f);
  sim_http_options ho = {.mqtt = x->f.s,
                         .tenant = "t1",
                         .user = "device",
                         .password = http_password,
                         .cert_pem = cert,
                         .key_pem = key};
  char err[256];
  if (sim_http_start(&ho, &x->h, err, sizeof err) != 0)
    g_error("sim_http: %s", err);
}

/* Agent with the xfer plugin; `c8y_extra` goes into [c8y]. */
static void hx_up(hx *x, const char *plugin_dir, const char *c8y_extra,
                  const char *extra) {
  char *ini =
      g_strdup_printf("[c8y]\nhttp_url = %s\n%s\n%s", sim_http_url(x->h),
                      c8y_extra ? c8y_extra : "", extra ? extra : "");
  x->f.plugin_dir = plugin_dir ? plugin_dir : XFER_PLUGIN_DIR;
  fx_make_agent(&x->f, "secret", ini);
  g_free(ini);
  fx_start_connected(&x->f);
}

static void hx_down(hx *x) {
  /* The agent first: it may still be transferring. The MQTT sim last:
   * sim_http_stop unhooks its token source from it (it used the freed sim,
   * found by scripts/check-tsan.sh). */
  sim *s = x->f.s;
  x->f.s = NULL;
  fx_down(&x->f);
  sim_http_stop(x->h);
  if (s)
    sim_stop(s);
  if (x->dir)
    fx_rm_rf(x->dir);
  g_free(x->dir);
}

/* Runs a 511 text and returns the final status; *detail gets the result or
 * the failure reason (borrowed). */
static int run_cmd(hx *x, const char *text, const char **detail) {
  char *line = g_strdup_printf("511," FX_DEVICE ",\"%s\"", text);
  long id = sim_create_operation(x->f.s, line);
  g_free(line);
  g_assert_cmpint(id, >, 0);
  int st = fx_wait_op(&x->f, id, 120000);
  *detail = sim_operation_detail(x->f.s, id);
  g_test_message("%s -> %s: %s", text, sim_op_status_name((sim_op_status)st),
                 *detail ? *detail : "");
  return st;
}

static size_t uat_requests(hx *x) {
  size_t n = 0;
  for (size_t i = 0; i < sim_message_count(x->f.s); i++)
    n += strcmp(sim_message_at(x->f.s, i)->topic, "s/uat") == 0;
  return n;
}

/* ---- downloads ----------------------------------------------------------- */

static char *binary_url(hx *x, const char *path) {
  long id = sim_http_add_binary(x->h, path);
  g_assert_cmpint(id, >, 0);
  return g_strdup_printf("%s/inventory/binaries/%ld", sim_http_url(x->h), id);
}

static void assert_downloaded(const char *detail, const char *want_sha,
                              size_t want_bytes) {
  g_assert_nonnull(detail);
  unsigned long long bytes = 0;
  char path[600];
  g_assert_cmpint(sscanf(detail, "%llu %599s", &bytes, path), ==, 2);
  g_assert_cmpuint(bytes, ==, want_bytes);
  char *got = file_sha256(path);
  g_assert_cmpstr(got, ==, want_sha);
  g_free(got);
  char *dir = g_path_get_dirname(path);
  char *base = g_path_get_basename(path);
  char *part = g_strdup_printf("%s/.%s.partial", dir, base);
  g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
  g_free(part);
  g_free(dir);
  g_free(base);
}

static void test_download_cut_twice(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  char *src = make_file(&x, "image.bin", 20);
  char *sha = file_sha256(src);
  char *url = binary_url(&x, src);
  hx_up(&x, NULL, NULL, NULL);
  sim_http_cut_downloads(x.h, 2);
  char *cmd = g_strdup_printf("download %s image.bin %s", url, sha);
  const char *detail = NULL;
  int st = run_cmd(&x, cmd, &detail);
  g_assert_cmpint(st, ==, SIM_OP_SUCCESSFUL);
  assert_downloaded(detail, sha, 20u << 20);
  /* first attempt + two resumes, each with credentials (tenant host) */
  g_assert_cmpuint(sim_http_requests(x.h, "GET", "/inventory/binaries/"), ==,
                   3);
  g_assert_cmpuint(sim_http_auth_headers(x.h), >=, 3);
  char *log = agent_proc_log(x.f.a);
  g_assert_nonnull(strstr(log, "resuming"));
  g_free(log);
  g_free(cmd);
  g_free(url);
  g_free(sha);
  g_free(src);
  hx_down(&x);
}

/* Whether the agent process has libcurl mapped. */
static bool agent_maps_libcurl(hx *x) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", (int)agent_proc_pid(x->f.a));
  gchar *maps = NULL;
  g_assert_true(g_file_get_contents(path, &maps, NULL, NULL));
  bool found = strstr(maps, "/libcurl") != NULL;
  g_free(maps);
  return found;
}

/* libcurl (and its dependency tree) is loaded by the first transfer, not
 * at start: connected and idle, the agent has not mapped it. */
static void test_libcurl_loaded_on_first_transfer(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  char *src = make_file(&x, "small.bin", 1);
  char *sha = file_sha256(src);
  char *url = binary_url(&x, src);
  hx_up(&x, NULL, NULL, NULL);
  g_assert_false(agent_maps_libcurl(&x));
  char *cmd = g_strdup_printf("download %s small.bin %s", url, sha);
  const char *detail = NULL;
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  assert_downloaded(detail, sha, 1u << 20);
  g_assert_true(agent_maps_libcurl(&x));
  g_free(cmd);
  g_free(url);
  g_free(sha);
  g_free(src);
  hx_down(&x);
}

static void test_download_checksum_and_limit(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  char *src = make_file(&x, "small.bin", 1);
  char *url = binary_url(&x, src);
  hx_up(&x, NULL, NULL, NULL);
  const char *detail = NULL;
  char *cmd = g_strdup_printf(
      "download %s small.bin "
      "0000000000000000000000000000000000000000000000000000000000000000",
      url);
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "sha256"));
  g_free(cmd);
  cmd = g_strdup_printf("download %s small.bin - 1000", url);
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "larger than the limit of 1000 bytes"));
  g_free(cmd);
  g_free(url);
  g_free(src);
  hx_down(&x);
}

static void test_foreign_host_gets_no_credentials(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  sim_http *foreign = NULL;
  sim_http_options fo = {.open = true};
  char err[256];
  g_assert_cmpint(sim_http_start(&fo, &foreign, err, sizeof err), ==, 0);
  char *src = make_file(&x, "pkg.deb", 2);
  char *sha = file_sha256(src);
  long id = sim_http_add_binary(foreign, src);
  char *url =
      g_strdup_printf("%s/inventory/binaries/%ld", sim_http_url(foreign), id);
  hx_up(&x, NULL, NULL, NULL);
  sim_http_cut_downloads(foreign, 1); /* the resume must stay clean too */
  char *cmd = g_strdup_printf("download %s pkg.deb %s", url, sha);
  const char *detail = NULL;
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  assert_downloaded(detail, sha, 2u << 20);
  g_assert_cmpuint(sim_http_requests(foreign, "GET", "/inventory/"), ==, 2);
  g_assert_cmpuint(sim_http_auth_headers(foreign), ==, 0);
  /* The same agent does send credentials to its tenant. */
  char *own = binary_url(&x, src);
  g_free(cmd);
  cmd = g_strdup_printf("download %s own.deb %s", own, sha);
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(sim_http_auth_headers(x.h), ==, 1);
  g_free(own);
  g_free(cmd);
  g_free(url);
  g_free(sha);
  g_free(src);
  sim_http_stop(foreign);
  hx_down(&x);
}

/* ---- uploads ------------------------------------------------------------- */

static void test_upload_event_binary(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  hx_up(&x, NULL, NULL, NULL);
  char *path = g_build_filename(x.dir, "report.txt", NULL);
  g_assert_true(g_file_set_contents(path, "line one\nline two\n", -1, NULL));
  char *cmd = g_strdup_printf("upload %s c8y_TestFile", path);
  const char *detail = NULL;
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(sim_http_event_count(x.h), ==, 1);
  g_assert_cmpstr(sim_http_event_type(x.h, 0), ==, "c8y_TestFile");
  char mo[32];
  snprintf(mo, sizeof mo, "%ld", sim_device_mo_id(x.f.s, FX_DEVICE));
  g_assert_cmpstr(sim_http_event_source(x.h, 0), ==, mo);
  char *want = g_strdup_printf("%s/event/events/%s/binaries", sim_http_url(x.h),
                               sim_http_event_id(x.h, 0));
  g_assert_cmpstr(detail, ==, want);
  gchar *got = NULL;
  g_assert_true(
      g_file_get_contents(sim_http_event_binary(x.h, 0), &got, NULL, NULL));
  g_assert_cmpstr(got, ==, "line one\nline two\n");
  g_assert_cmpstr(sim_http_event_binary_name(x.h, 0), ==, "report.txt");
  g_assert_cmpstr(sim_http_event_binary_type(x.h, 0), ==, "text/plain");
  /* The identity is looked up once and cached. */
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(sim_http_requests(x.h, "GET", "/identity/"), ==, 1);
  g_free(got);
  g_free(want);
  g_free(cmd);
  g_free(path);
  hx_down(&x);
}

static void test_upload_to_child(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  hx_up(&x, NULL, NULL, "[plugin.xfer]\nchild = kid1\n");
  g_assert_cmpint(sim_wait_line(x.f.s, "s/us", "101,kid1", 0, 10000), >=, 0);
  char *path = g_build_filename(x.dir, "child.txt", NULL);
  g_assert_true(g_file_set_contents(path, "child data", -1, NULL));
  char *cmd = g_strdup_printf("upload %s c8y_ChildFile kid1", path);
  const char *detail = NULL;
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  char mo[32];
  snprintf(mo, sizeof mo, "%ld", sim_device_mo_id(x.f.s, "kid1"));
  g_assert_cmpstr(sim_http_event_source(x.h, 0), ==, mo);
  g_assert_cmpstr(sim_http_event_type(x.h, 0), ==, "c8y_ChildFile");
  /* an unknown child: the identity lookup's 404, explained */
  g_free(cmd);
  cmd = g_strdup_printf("upload %s c8y_ChildFile ghost", path);
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "HTTP 404 from 127.0.0.1: device ghost"));
  g_free(cmd);
  g_free(path);
  hx_down(&x);
}

static void test_wrong_password_fails_once(void) {
  hx x = {0};
  /* MQTT accepts the device, REST does not: a rotated password. */
  hx_start_http(&x, "not-the-mqtt-password", NULL, NULL);
  hx_up(&x, NULL, NULL, NULL);
  char *path = g_build_filename(x.dir, "f.txt", NULL);
  g_assert_true(g_file_set_contents(path, "x", -1, NULL));
  char *cmd = g_strdup_printf("upload %s c8y_TestFile", path);
  const char *detail = NULL;
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "HTTP 401 from 127.0.0.1"));
  g_assert_nonnull(strstr(detail, "credentials"));
  g_assert_cmpuint(sim_http_requests(x.h, NULL, "/"), ==, 1);
  g_free(cmd);
  g_free(path);
  hx_down(&x);
}

static void test_jwt_renewed_once_on_401(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  hx_up(&x, NULL, "http_auth = jwt", NULL);
  char *path = g_build_filename(x.dir, "f.txt", NULL);
  g_assert_true(g_file_set_contents(path, "jwt", -1, NULL));
  char *cmd = g_strdup_printf("upload %s c8y_TestFile", path);
  const char *detail = NULL;
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(sim_http_tokens_issued(x.h), ==, 1);
  g_assert_cmpuint(uat_requests(&x), ==, 1);
  /* An expired token: one 401, one renewal, success. */
  sim_http_expire_tokens(x.h);
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(sim_http_tokens_issued(x.h), ==, 2);
  g_assert_cmpuint(sim_http_unauthorized(x.h), ==, 1);
  /* A platform that refuses every token: a clear reason, no storm. */
  sim_http_reject_tokens(x.h, true);
  size_t before = sim_http_requests(x.h, NULL, "/");
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "HTTP 401 from 127.0.0.1"));
  g_assert_cmpuint(sim_http_requests(x.h, NULL, "/") - before, ==, 2);
  g_assert_cmpuint(sim_http_tokens_issued(x.h), ==, 3);
  g_free(cmd);
  g_free(path);
  hx_down(&x);
}

/* Tokens are renewed before they expire: no request ever gets a 401. */
static void test_jwt_renewed_before_expiry(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  /* Valid 12 s more, issued 28 s ago: the agent keeps a quarter of the
   * lifetime (10 s) as its margin, so the renewal is due in 2 s while a
   * request still has 10 s to reach the server before the old token
   * expires (with 8 s and no age, the margin was 2 s: a loaded machine
   * could spend that between taking the token and the server's check). */
  sim_http_set_token_lifetime(x.h, 12);
  sim_http_set_token_age(x.h, 28);
  hx_up(&x, NULL, "http_auth = jwt", NULL);
  char *path = g_build_filename(x.dir, "f.txt", NULL);
  g_assert_true(g_file_set_contents(path, "jwt", -1, NULL));
  char *cmd = g_strdup_printf("upload %s c8y_TestFile", path);
  const char *detail = NULL;
  gint64 until = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
  while (sim_http_tokens_issued(x.h) < 2 && g_get_monotonic_time() < until)
    g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(sim_http_tokens_issued(x.h), ==, 2);
  g_assert_cmpuint(sim_http_unauthorized(x.h), ==, 0);
  g_free(cmd);
  g_free(path);
  hx_down(&x);
}

/* A transfer stops once its operation timed out, instead of running on. */
static void test_slow_transfer_honours_cancel(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  char *src = make_file(&x, "slow.bin", 1);
  char *url = binary_url(&x, src);
  hx_up(&x, NULL, NULL, "[plugin.xfer]\ntimeout_ms = 1500\n");
  sim_http_set_delay(x.h, 6000);
  char *cmd = g_strdup_printf("download %s slow.bin", url);
  const char *detail = NULL;
  gint64 t0 = g_get_monotonic_time();
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "timed out"));
  g_assert_true(agent_proc_wait_log(x.f.a, "cancelled", 5000));
  /* stopped well before the server would have answered */
  g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
  sim_http_set_delay(x.h, 0);
  g_free(cmd);
  g_free(url);
  g_free(src);
  hx_down(&x);
}

/* SIGTERM during a transfer: the agent stops promptly instead of waiting
 * for the server. */
static void test_stop_during_transfer(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  char *src = make_file(&x, "stop.bin", 1);
  char *url = binary_url(&x, src);
  hx_up(&x, NULL, NULL, NULL);
  sim_http_set_delay(x.h, 8000);
  char *line =
      g_strdup_printf("511," FX_DEVICE ",\"download %s stop.bin\"", url);
  g_assert_cmpint(sim_create_operation(x.f.s, line), >, 0);
  /* the handler is inside the transfer once the server saw the GET */
  gint64 until = g_get_monotonic_time() + 15 * G_USEC_PER_SEC;
  while (sim_http_requests(x.h, "GET", "/inventory/") == 0 &&
         g_get_monotonic_time() < until)
    g_usleep(10000);
  g_assert_cmpuint(sim_http_requests(x.h, "GET", "/inventory/"), ==, 1);
  gint64 t0 = g_get_monotonic_time();
  g_assert_cmpint(agent_proc_stop(x.f.a, 20000), ==, 0);
  g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
  /* Ended by the stop itself or, first, by the operation's cancellation
   * that the stop sends to running handlers. */
  char *log = agent_proc_log(x.f.a);
  g_assert_true(strstr(log, "the agent is stopping") ||
                strstr(log, "cancelled"));
  g_free(log);
  sim_http_set_delay(x.h, 0);
  g_free(line);
  g_free(url);
  g_free(src);
  hx_down(&x);
}

static void test_server_errors_are_retried_bounded(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  hx_up(&x, NULL, NULL, NULL);
  char *path = g_build_filename(x.dir, "f.txt", NULL);
  g_assert_true(g_file_set_contents(path, "retry", -1, NULL));
  char *cmd = g_strdup_printf("upload %s c8y_TestFile", path);
  const char *detail = NULL;
  sim_http_fail_requests(x.h, 2, 500);
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_SUCCESSFUL);
  sim_http_fail_requests(x.h, 1000, 503);
  size_t before = sim_http_requests(x.h, NULL, "/");
  g_assert_cmpint(run_cmd(&x, cmd, &detail), ==, SIM_OP_FAILED);
  g_assert_nonnull(strstr(detail, "HTTP 503 from 127.0.0.1"));
  size_t tries = sim_http_requests(x.h, NULL, "/") - before;
  g_assert_cmpuint(tries, >=, 2);
  g_assert_cmpuint(tries, <=, 6);
  sim_http_fail_requests(x.h, 0, 0);
  g_free(cmd);
  g_free(path);
  hx_down(&x);
}

/* ---- HTTPS --------------------------------------------------------------- */

static void sh(const char *dir, const char *script) {
  const char *argv[] = {"/bin/sh", "-ec", script, NULL};
  gint status = 0;
  gchar *err = NULL;
  g_assert_true(g_spawn_sync(dir, (gchar **)argv, NULL, G_SPAWN_DEFAULT, NULL,
                             NULL, NULL, &err, &status, NULL));
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("%s: %s", script, err);
  g_free(err);
}

static void make_certs(const char *dir) {
  sh(dir, "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key "
          "-out ca.pem -days 2 -subj '/CN=c8y http test CA' "
          "-addext basicConstraints=critical,CA:TRUE "
          "-addext keyUsage=critical,keyCertSign 2>/dev/null\n"
          "for n in good wrong; do\n"
          " openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr "
          "-subj /CN=$n 2>/dev/null\n"
          "done\n"
          "printf 'subjectAltName=IP:127.0.0.1\\n' > good.ext\n"
          "printf 'subjectAltName=DNS:wrong.example.invalid\\n' > wrong.ext\n"
          "for n in good wrong; do\n"
          " openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key "
          "-set_serial 0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \\n') "
          "-days 2 -extfile $n.ext -out $n.pem 2>/dev/null\n"
          "done\n");
}

static void https_case(const char *leaf, bool expect_ok, bool verify) {
  char *pki = g_dir_make_tmp("c8y-pki-XXXXXX", NULL);
  make_certs(pki);
  char *cert = g_strdup_printf("%s/%s.pem", pki, leaf);
  char *key = g_strdup_printf("%s/%s.key", pki, leaf);
  hx x = {0};
  hx_start_http(&x, "secret", cert, key);
  char *src = make_file(&x, "tls.bin", 1);
  char *sha = file_sha256(src);
  char *url = binary_url(&x, src);
  g_assert_true(g_str_has_prefix(url, "https://127.0.0.1:"));
  char *ca = g_strdup_printf("ca_path = %s/ca.pem\n%s", pki,
                             verify ? "" : "verify_hostname = false\n");
  hx_up(&x, NULL, ca, NULL);
  char *cmd = g_strdup_printf("download %s tls.bin %s", url, sha);
  const char *detail = NULL;
  int st = run_cmd(&x, cmd, &detail);
  if (expect_ok) {
    g_assert_cmpint(st, ==, SIM_OP_SUCCESSFUL);
    assert_downloaded(detail, sha, 1u << 20);
  } else {
    g_assert_cmpint(st, ==, SIM_OP_FAILED);
    g_assert_nonnull(strstr(detail, "TLS with 127.0.0.1"));
    /* credentials never left: the handshake failed first */
    g_assert_cmpuint(sim_http_auth_headers(x.h), ==, 0);
  }
  g_free(cmd);
  g_free(ca);
  g_free(url);
  g_free(sha);
  g_free(src);
  hx_down(&x);
  fx_rm_rf(pki);
  g_free(pki);
  g_free(cert);
  g_free(key);
}

static void test_https_verified(void) { https_case("good", true, true); }
static void test_https_wrong_host_refused(void) {
  https_case("wrong", false, true);
}
/* verify_hostname = false (MQTT's setting) applies to HTTPS too. */
static void test_https_wrong_host_unverified(void) {
  https_case("wrong", true, false);
}

/* ---- 522 through the bundled logfile plugin ------------------------------ */

static void test_logfile_522_uploads(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  char *plugins = g_build_filename(x.dir, "plugins", NULL);
  g_assert_cmpint(g_mkdir(plugins, 0700), ==, 0);
  char *so = g_build_filename(plugins, "logfile.so", NULL);
  /* A copy: the loader refuses symlinked plugins. */
  char *bytes = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(C8Y_LOGFILE_PLUGIN_DIR "/logfile.so",
                                    &bytes, &len, NULL));
  g_assert_true(g_file_set_contents(so, bytes, (gssize)len, NULL));
  g_assert_cmpint(chmod(so, 0755), ==, 0);
  g_free(bytes);
  char *log = g_build_filename(x.dir, "app.log", NULL);
  g_assert_true(g_file_set_contents(log,
                                    "2024-01-01T10:00:00Z first INFO line\n"
                                    "2024-01-01T11:00:00Z an ERROR happened\n"
                                    "2024-01-01T12:00:00Z another ERROR here\n",
                                    -1, NULL));
  char *extra = g_strdup_printf("[plugin.logfile]\nlogs = app=%s\n", log);
  hx_up(&x, plugins, NULL, extra);
  g_assert_cmpint(sim_wait_line(x.f.s, "s/us", "114,", 0, 10000), >=, 0);
  long id =
      sim_create_operation(x.f.s, "522," FX_DEVICE ",app,2023-12-31T00:00:00Z,"
                                  "2024-01-02T00:00:00Z,ERROR,100");
  g_assert_cmpint(fx_wait_op(&x.f, id, 60000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(sim_http_event_count(x.h), ==, 1);
  g_assert_cmpstr(sim_http_event_type(x.h, 0), ==, "c8y_Logfile");
  gchar *got = NULL;
  g_assert_true(
      g_file_get_contents(sim_http_event_binary(x.h, 0), &got, NULL, NULL));
  g_assert_nonnull(strstr(got, "an ERROR happened"));
  g_assert_nonnull(strstr(got, "another ERROR here"));
  g_assert_null(strstr(got, "first INFO line"));
  char *want = g_strdup_printf("%s/event/events/%s/binaries", sim_http_url(x.h),
                               sim_http_event_id(x.h, 0));
  g_assert_cmpstr(sim_operation_detail(x.f.s, id), ==, want);
  g_free(want);
  g_free(got);
  g_free(extra);
  g_free(log);
  g_free(so);
  g_free(plugins);
  hx_down(&x);
}

/* The support bundle as a log: a 522 for c8y-agent-diag makes the archive
 * with the agent's own binary and configuration and attaches it. */
static void test_logfile_522_diag_bundle(void) {
  hx x = {0};
  hx_start_http(&x, "secret", NULL, NULL);
  char *plugins = g_build_filename(x.dir, "plugins", NULL);
  g_assert_cmpint(g_mkdir(plugins, 0700), ==, 0);
  char *so = g_build_filename(plugins, "logfile.so", NULL);
  char *bytes = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(C8Y_LOGFILE_PLUGIN_DIR "/logfile.so",
                                    &bytes, &len, NULL));
  g_assert_true(g_file_set_contents(so, bytes, (gssize)len, NULL));
  g_assert_cmpint(chmod(so, 0755), ==, 0);
  g_free(bytes);
  /* no `logs`: the bundle is offered by default; a private API socket */
  char *extra = g_strdup_printf("[api]\nsocket = %s/api.sock\n", x.dir);
  hx_up(&x, plugins, NULL, extra);
  g_assert_cmpint(sim_wait_line(x.f.s, "s/us", "118,c8y-agent-diag", 0, 10000),
                  >=, 0);
  long id =
      sim_create_operation(x.f.s, "522," FX_DEVICE ",c8y-agent-diag,,,,50");
  g_assert_cmpint(fx_wait_op(&x.f, id, 120000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpuint(sim_http_event_count(x.h), ==, 1);
  g_assert_cmpstr(sim_http_event_type(x.h, 0), ==, "c8y_Logfile");
  const char *bin = sim_http_event_binary(x.h, 0);
  char *out = g_build_filename(x.dir, "bundle", NULL);
  g_assert_cmpint(g_mkdir(out, 0700), ==, 0);
  char *tar[] = {"tar", "-xzf", (char *)bin, "-C", out, NULL};
  gint status = -1;
  g_assert_true(g_spawn_sync(NULL, tar, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             NULL, NULL, &status, NULL));
  g_assert_cmpint(status, ==, 0); /* the attachment is the .tar.gz */
  char *find[] = {"find", out, "-name", "*.txt", NULL};
  char *files = NULL;
  g_assert_true(g_spawn_sync(NULL, find, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             &files, NULL, &status, NULL));
  for (const char *const *f =
           (const char *const[]){"/SUMMARY.txt", "/versions.txt", "/config.txt",
                                 "/status.txt", "/state.txt", NULL};
       *f; f++)
    if (!strstr(files, *f))
      g_error("the uploaded bundle has no %s:\n%s", *f, files);
  /* the running agent answered its status: its own configuration was used */
  char *st_path = NULL;
  char **lines = g_strsplit(files, "\n", -1);
  for (char **l = lines; *l; l++)
    if (g_str_has_suffix(*l, "/status.txt"))
      st_path = g_strdup(*l);
  g_strfreev(lines);
  char *st = NULL;
  g_assert_true(g_file_get_contents(st_path, &st, NULL, NULL));
  g_assert_nonnull(strstr(st, "\nlink: up"));
  /* the password ("secret") is nowhere in it */
  char *grep[] = {"grep", "-r", "-l", "secret", out, NULL};
  char *hits = NULL;
  g_assert_true(g_spawn_sync(NULL, grep, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             &hits, NULL, &status, NULL));
  g_assert_cmpstr(hits, ==, "");
  g_free(hits);
  g_free(st);
  g_free(st_path);
  g_free(files);
  g_free(out);
  g_free(extra);
  g_free(so);
  g_free(plugins);
  hx_down(&x);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/http/logfile-522-diag-bundle",
                  test_logfile_522_diag_bundle);
  g_test_add_func("/http/download-cut-twice-resumes", test_download_cut_twice);
  g_test_add_func("/http/libcurl-loaded-on-first-transfer",
                  test_libcurl_loaded_on_first_transfer);
  g_test_add_func("/http/download-checksum-and-limit",
                  test_download_checksum_and_limit);
  g_test_add_func("/http/foreign-host-gets-no-credentials",
                  test_foreign_host_gets_no_credentials);
  g_test_add_func("/http/upload-event-binary", test_upload_event_binary);
  g_test_add_func("/http/upload-to-child", test_upload_to_child);
  g_test_add_func("/http/wrong-password-fails-once",
                  test_wrong_password_fails_once);
  g_test_add_func("/http/jwt-renewed-once-on-401",
                  test_jwt_renewed_once_on_401);
  g_test_add_func("/http/jwt-renewed-before-expiry",
                  test_jwt_renewed_before_expiry);
  g_test_add_func("/http/slow-transfer-honours-cancel",
                  test_slow_transfer_honours_cancel);
  g_test_add_func("/http/stop-during-transfer", test_stop_during_transfer);
  g_test_add_func("/http/server-errors-retried-bounded",
                  test_server_errors_are_retried_bounded);
  g_test_add_func("/http/https-verified", test_https_verified);
  g_test_add_func("/http/https-wrong-host-refused",
                  test_https_wrong_host_refused);
  g_test_add_func("/http/https-wrong-host-unverified",
                  test_https_wrong_host_unverified);
  g_test_add_func("/http/logfile-522-uploads", test_logfile_522_uploads);
  return g_test_run();
}
