/* Certificate enrollment and renewal (docs/certificates.md): the real agent
 * against the simulator playing Cumulocity's certificate authority (EST on
 * its HTTPS side, sim_est.h) and a mosquitto listener that requires a
 * client certificate from that CA with CN = the device id. The PKI is made
 * at test time with the openssl CLI: ca (trusted by broker and agent),
 * server (127.0.0.1, for the broker and the REST side) and rogue-ca (a CA
 * the broker does not trust, to have a renewed certificate refused). */
#include "agent_proc.h"
#include "enroll.h"
#include "sim.h"
#include "sim_http.h"
#include "x509.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEVICE "estdev1"
#define OTP "Otp-4711-never-logged"
#define DAY (24LL * 3600)

static char *g_pki;

/* Runs `cmd` with sh in the PKI dir; aborts the test when it fails. */
static void pki_sh(const char *cmd) {
  const char *argv[] = {"sh", "-c", cmd, NULL};
  gchar *err = NULL;
  gint status = 0;
  GError *e = NULL;
  if (!g_spawn_sync(g_pki, (gchar **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                    NULL, NULL, &err, &status, &e) ||
      !g_spawn_check_wait_status(status, NULL))
    g_error("%s: %s", cmd, e ? e->message : err);
  g_free(err);
}

static char *pki(const char *name) {
  return g_strdup_printf("%s/%s", g_pki, name);
}

static void make_pki(void) {
  GError *e = NULL;
  g_pki = g_dir_make_tmp("c8y-est-pki-XXXXXX", &e);
  g_assert_no_error(e);
#define MAKE_CA(name, cn)                                                      \
  C8Y_OPENSSL_CLI " req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "    \
                  "-nodes -days 3650 -keyout " name ".key -out " name ".pem "  \
                  "-subj '/CN=" cn "' "                                        \
                  "-addext basicConstraints=critical,CA:TRUE "                 \
                  "-addext keyUsage=critical,keyCertSign,cRLSign"
  pki_sh(MAKE_CA("ca", "c8y-agent test tenant CA"));
  pki_sh(MAKE_CA("rogue-ca", "a CA nobody trusts"));
  pki_sh("printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n"
         "subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext "
         "&& " C8Y_OPENSSL_CLI
         " req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
         "-keyout server.key -out server.csr -subj /CN=localhost "
         "&& " C8Y_OPENSSL_CLI
         " x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 7001 "
         "-days 3650 -extfile server.ext -out server.pem");
}

static void rm_rf(const char *dir) {
  const char *argv[] = {"rm", "-rf", dir, NULL};
  g_spawn_sync(NULL, (gchar **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
               NULL, NULL, NULL, NULL);
}

/* ---- the platform and the device ---------------------------------------- */

typedef struct fx {
  sim *s;
  sim_http *h;
  sim_est *est;
  char *dev;              /* the device's files: cert, key, one-time password */
  char *cert, *key, *otp; /* paths in dev */
  agent_proc *a;
} fx;

static void fx_start(fx *f) {
  memset(f, 0, sizeof *f);
  char err[512] = "";
  sim_options so = {.device_id = DEVICE};
  g_assert_cmpint(sim_start(&so, &f->s, err, sizeof err), ==, 0);
  char *ca = pki("ca.pem"), *cak = pki("ca.key");
  char *srv = pki("server.pem"), *srvk = pki("server.key");
  if (sim_add_cert_listener(f->s, ca, srv, srvk, err, sizeof err) <= 0)
    g_error("%s", err);
  sim_http_options ho = {
      .mqtt = f->s, .cert_pem = srv, .key_pem = srvk, .client_ca_pem = ca};
  if (sim_http_start(&ho, &f->h, err, sizeof err) != 0)
    g_error("%s", err);
  f->est = sim_http_est(f->h);
  if (sim_est_set_ca(f->est, ca, cak, err, sizeof err) != 0)
    g_error("%s", err);
  g_assert_cmpint(sim_est_add_otp(f->est, DEVICE, OTP), ==, 0);
  GError *e = NULL;
  f->dev = g_dir_make_tmp("c8y-est-dev-XXXXXX", &e);
  g_assert_no_error(e);
  f->cert = g_strdup_printf("%s/device.pem", f->dev);
  f->key = g_strdup_printf("%s/device.key", f->dev);
  f->otp = g_strdup_printf("%s/enroll-otp", f->dev);
  g_free(ca);
  g_free(cak);
  g_free(srv);
  g_free(srvk);
}

static void write_otp(fx *f, const char *otp) {
  GError *e = NULL;
  char *text = g_strdup_printf("%s\n", otp);
  g_file_set_contents(f->otp, text, -1, &e);
  g_assert_no_error(e);
  g_chmod(f->otp, 0600);
  g_free(text);
}

static agent_proc *fx_agent(fx *f, const char *extra) {
  char *ca = pki("ca.pem");
  char *ini = g_strdup_printf(
      "[c8y]\nhost = 127.0.0.1\nport = %d\ntls = true\nca_path = %s\n"
      "cert_file = %s\nkey_file = %s\nenroll_otp_file = %s\n"
      "http_url = %s\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n%s"
      "[device]\nid = " DEVICE "\n[agent]\nlog_level = debug\n"
      "[api]\nsocket = %s/api.sock\n",
      sim_cert_port(f->s), ca, f->cert, f->key, f->otp, sim_http_url(f->h),
      extra ? extra : "", f->dev);
  agent_proc *a = agent_proc_new(ini);
  g_assert_nonnull(a);
  g_free(ini);
  g_free(ca);
  return a;
}

static void dump_on_failure(agent_proc *a) {
  if (a && g_test_failed()) {
    char *log = agent_proc_log(a);
    g_printerr("---- agent log ----\n%s\n", log);
    free(log);
  }
}

static void fx_stop(fx *f) {
  if (f->a) {
    dump_on_failure(f->a);
    agent_proc_free(f->a);
  }
  sim_http_stop(f->h);
  sim_stop(f->s);
  if (!g_getenv("C8Y_KEEP_TEST_DIRS"))
    rm_rf(f->dev);
  g_free(f->dev);
  g_free(f->cert);
  g_free(f->key);
  g_free(f->otp);
}

static size_t count_in(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

/* Waits until the agent log holds `needle` n times (bounded). */
static bool wait_count(agent_proc *a, const char *needle, size_t n,
                       int timeout_ms) {
  for (int waited = 0;; waited += 50) {
    char *log = agent_proc_log(a);
    size_t c = count_in(log, needle);
    free(log);
    if (c >= n)
      return true;
    if (waited >= timeout_ms)
      return false;
    g_usleep(50 * 1000);
  }
}

static char *file_text(const char *path) {
  gchar *t = NULL;
  return g_file_get_contents(path, &t, NULL, NULL) ? t : NULL;
}

/* The key and certificate on disk belong together and name the device. */
static void assert_pair(fx *f) {
  char err[1024];
  if (x509_check_device_cert(f->cert, f->key, DEVICE, err, sizeof err) != 0)
    g_error("not a complete pair: %s", err);
  struct stat st;
  g_assert_cmpint(stat(f->key, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0600);
}

static bool staged_left(fx *f) {
  char *c = enroll_staged_path(f->cert), *k = enroll_staged_path(f->key);
  bool any = access(c, F_OK) == 0 || access(k, F_OK) == 0;
  free(c);
  free(k);
  return any;
}

/* ---- tests ----------------------------------------------------------------
 */

/* From nothing to connected: key, CSR, simpleenroll with the one-time
 * password, the pair stored, the password file removed, connected with the
 * certificate (the broker takes the CN as the identity). */
static void test_enroll_from_nothing(void) {
  fx f;
  fx_start(&f);
  write_otp(&f, OTP);
  f.a = fx_agent(&f, NULL);
  g_assert_cmpint(agent_proc_start(f.a), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "enrolled: ", 30000));
  g_assert_true(agent_proc_wait_log(f.a, "connected to ssl://", 30000));
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "100", 0, 20000), >=, 0);
  g_assert_cmpuint(
      sim_http_requests(f.h, "POST", "/.well-known/est/simpleenroll"), ==, 1);
  g_assert_cmpuint(sim_est_issued(f.est), ==, 1);
  assert_pair(&f);
  g_assert_false(staged_left(&f));
  g_assert_cmpint(access(f.otp, F_OK), !=, 0); /* used, removed */
  char *log = agent_proc_log(f.a);
  g_assert_null(strstr(log, OTP));
  g_assert_nonnull(strstr(log, "enroll_otp_file"));
  free(log);
  /* A restart does not enroll again: the certificate is usable. */
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  g_assert_cmpint(agent_proc_start(f.a), ==, 0);
  g_assert_true(wait_count(f.a, "connected to ssl://", 2, 30000));
  g_assert_cmpuint(sim_est_issued(f.est), ==, 1);
  fx_stop(&f);
}

/* A wrong one-time password: a clear error, no certificate, and no retry
 * storm (the next attempt is a minute away); SIGTERM still stops at once. */
static void test_enroll_wrong_otp(void) {
  fx f;
  fx_start(&f);
  write_otp(&f, "not-the-registered-password");
  f.a = fx_agent(&f, NULL);
  g_assert_cmpint(agent_proc_start(f.a), ==, 0);
  g_assert_true(agent_proc_wait_log(
      f.a, "certificate enrollment failed (attempt 1)", 30000));
  g_assert_true(
      agent_proc_wait_log(f.a, "the one-time password is wrong", 1000));
  g_assert_true(agent_proc_wait_log(f.a, "next attempt in 60 s", 1000));
  /* Still one request after a while, and nothing enrolled or connected. */
  g_assert_false(agent_proc_wait_log(f.a, "attempt 2", 2000));
  g_assert_cmpuint(
      sim_http_requests(f.h, "POST", "/.well-known/est/simpleenroll"), ==, 1);
  g_assert_cmpint(access(f.cert, F_OK), !=, 0);
  g_assert_false(staged_left(&f));
  g_assert_cmpint(access(f.otp, F_OK), ==, 0); /* not used: kept */
  char *log = agent_proc_log(f.a);
  g_assert_null(strstr(log, "not-the-registered-password"));
  g_assert_null(strstr(log, "connected to ssl://"));
  free(log);
  g_assert_cmpint(agent_proc_stop(f.a, 5000), ==, 0);
  fx_stop(&f);
}

static size_t lines_with(sim *s, const char *prefix) {
  return sim_count_lines(s, "s/us", prefix);
}

static bool wait_lines(sim *s, const char *prefix, size_t n, int timeout_ms) {
  for (int waited = 0; lines_with(s, prefix) < n; waited += 50) {
    if (waited >= timeout_ms)
      return false;
    g_usleep(50 * 1000);
  }
  return true;
}

/* Queues lines through the local API (c8y-agent send). */
static void send_events(agent_proc *a, int from, int n) {
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, g_strdup(g_getenv("C8Y_AGENT_BIN")));
  g_ptr_array_add(argv, g_strdup("-c"));
  g_ptr_array_add(argv, g_strdup(agent_proc_config(a)));
  g_ptr_array_add(argv, g_strdup("send"));
  for (int i = from; i < from + n; i++)
    g_ptr_array_add(argv, g_strdup_printf("400,c8y_RenewTest,event %d", i));
  g_ptr_array_add(argv, NULL);
  gint status = 0;
  gchar *err = NULL;
  g_assert_true(g_spawn_sync(NULL, (gchar **)argv->pdata, NULL, G_SPAWN_DEFAULT,
                             NULL, NULL, NULL, &err, &status, NULL));
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("c8y-agent send: %s", err);
  g_free(err);
  g_ptr_array_free(argv, TRUE);
}

/* Renewal close to expiry, twice: the first certificate is at 90 % of its
 * life (expiry alarm raised), so is the first renewed one; the simulator
 * takes each JWT for one re-enrollment only, so the second renewal needs a
 * token fetched over s/uat on the connection made with the renewed
 * certificate. Lines queued meanwhile all arrive; the expiry alarm clears. */
static void test_renewal(void) {
  fx f;
  fx_start(&f);
  sim_est_set_validity(f.est, 90 * DAY, 100 * DAY, 2);
  sim_http_set_est_auth(f.h, SIM_EST_AUTH_TOKEN);
  sim_http_est_single_use_tokens(f.h, true);
  write_otp(&f, OTP);
  f.a = fx_agent(&f, NULL);
  g_assert_cmpint(agent_proc_start(f.a), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "enrolled: ", 30000));
  g_assert_cmpint(
      sim_wait_line(f.s, "s/us", "304,c8y_CertificateExpiry", 0, 30000), >=, 0);
  g_assert_true(agent_proc_wait_log(f.a, "certificate renewal: asking", 30000));
  send_events(f.a, 0, 20);
  g_assert_true(wait_count(f.a, "replaced by the renewed pair", 2, 60000));
  send_events(f.a, 20, 20);
  g_assert_cmpuint(sim_est_issued(f.est), ==, 3);
  /* One refusal of the used token, then a new one. */
  g_assert_cmpuint(
      sim_http_requests(f.h, "POST", "/.well-known/est/simplereenroll"), ==, 3);
  g_assert_cmpuint(sim_http_tokens_issued(f.h), >=, 2);
  g_assert_cmpuint(sim_http_est_reenrolls(f.h, false), ==, 2);
  g_assert_true(wait_lines(f.s, "400,c8y_RenewTest,", 40, 30000));
  g_assert_cmpint(
      sim_wait_line(f.s, "s/us", "306,c8y_CertificateExpiry", 0, 30000), >=, 0);
  g_assert_cmpint(
      sim_wait_line(f.s, "s/us", "306,c8y_CertificateRenewal", 0, 30000), >=,
      0);
  assert_pair(&f);
  g_assert_false(staged_left(&f));
  /* The renewed certificate is the one in use: far from its end now. */
  long long renew_at = 0, not_after = 0;
  char err[512];
  g_assert_cmpint(
      enroll_renew_time(f.cert, 67, &renew_at, &not_after, err, sizeof err), ==,
      0);
  g_assert_cmpint(not_after, >, (long long)time(NULL) + 300 * DAY);
  /* Each renewal cost exactly one reconnect, a clean one: the broker
   * published no last will. */
  g_assert_true(wait_count(f.a, "connected to ssl://", 3, 30000));
  g_assert_false(wait_count(f.a, "connected to ssl://", 4, 1000));
  g_assert_cmpuint(lines_with(f.s, "400,c8y_ConnectionEvent"), ==, 0);
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  fx_stop(&f);
}

/* Re-enrollment authenticated by the current certificate alone (mutual
 * TLS): the simulator ignores tokens here. */
static void test_renewal_mtls(void) {
  fx f;
  fx_start(&f);
  sim_est_set_validity(f.est, 90 * DAY, 100 * DAY, 1);
  sim_http_set_est_auth(f.h, SIM_EST_AUTH_CLIENT_CERT);
  write_otp(&f, OTP);
  f.a = fx_agent(&f, NULL);
  g_assert_cmpint(agent_proc_start(f.a), ==, 0);
  g_assert_true(
      agent_proc_wait_log(f.a, "replaced by the renewed pair", 60000));
  g_assert_cmpuint(sim_http_est_reenrolls(f.h, true), ==, 1);
  g_assert_cmpuint(sim_est_issued(f.est), ==, 2);
  assert_pair(&f);
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  fx_stop(&f);
}

/* The platform refuses the renewed certificate (signed by a CA the broker
 * does not trust): the old pair stays on disk and in use, a MINOR alarm
 * says why, and the agent is connected again. */
static void test_renewal_refused(void) {
  fx f;
  fx_start(&f);
  char *rogue = pki("rogue-ca.pem"), *roguek = pki("rogue-ca.key");
  char err[512];
  g_assert_cmpint(sim_est_set_renewal_ca(f.est, rogue, roguek, err, sizeof err),
                  ==, 0);
  sim_est_set_validity(f.est, 90 * DAY, 100 * DAY, 1);
  write_otp(&f, OTP);
  f.a = fx_agent(&f, NULL);
  g_assert_cmpint(agent_proc_start(f.a), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, "enrolled: ", 30000));
  char *enrolled = NULL;
  g_assert_true(agent_proc_wait_log(f.a, "certificate renewal: asking", 30000));
  enrolled = file_text(f.cert);
  g_assert_nonnull(enrolled);
  g_assert_true(
      agent_proc_wait_log(f.a, "refused the renewed certificate", 60000));
  g_assert_cmpint(
      sim_wait_line(f.s, "s/us", "303,c8y_CertificateRenewal", 0, 30000), >=,
      0);
  /* Connected again, with the old certificate. */
  g_assert_true(wait_count(f.a, "connected to ssl://", 2, 30000));
  char *now = file_text(f.cert);
  g_assert_cmpstr(now, ==, enrolled);
  assert_pair(&f);
  g_assert_false(staged_left(&f));
  g_assert_true(agent_proc_wait_log(f.a, "next attempt in", 5000));
  g_assert_cmpint(agent_proc_stop(f.a, 10000), ==, 0);
  g_free(now);
  g_free(enrolled);
  g_free(rogue);
  g_free(roguek);
  fx_stop(&f);
}

/* kill -9 at several points of a renewal: whatever the moment, the next
 * start finds a complete pair (old or new, never a mix), repairs or drops
 * what was staged, and connects. */
static void kill_at(const char *when, int delay_ms) {
  fx f;
  fx_start(&f);
  sim_est_set_validity(f.est, 90 * DAY, 100 * DAY, 2);
  write_otp(&f, OTP);
  f.a = fx_agent(&f, NULL);
  if (delay_ms)
    sim_http_set_delay(f.h, delay_ms);
  g_assert_cmpint(agent_proc_start(f.a), ==, 0);
  g_assert_true(agent_proc_wait_log(f.a, when, 60000));
  agent_proc_kill(f.a);
  /* The log goes on across the restart. */
  char *before = agent_proc_log(f.a);
  size_t connects = count_in(before, "connected to ssl://");
  free(before);
  sim_http_set_delay(f.h, 0);
  char err[1024];
  if (x509_check_device_cert(f.cert, f.key, DEVICE, err, sizeof err) != 0 &&
      !staged_left(&f))
    g_error("after kill -9 at '%s': neither a pair nor a staged swap: %s", when,
            err);
  /* No renewal after the restart: what is on disk is what the repair
   * left. */
  FILE *ini = fopen(agent_proc_config(f.a), "a");
  g_assert_nonnull(ini);
  fputs("[c8y]\ncert_renew_percent = 0\n", ini);
  fclose(ini);
  g_assert_cmpint(agent_proc_start(f.a), ==, 0);
  g_assert_true(wait_count(f.a, "connected to ssl://", connects + 1, 30000));
  assert_pair(&f);
  g_assert_false(staged_left(&f));
  agent_proc_kill(f.a);
  fx_stop(&f);
}

static void test_kill_during_request(void) {
  kill_at("certificate renewal: asking", 1500);
}
static void test_kill_when_staged(void) {
  kill_at("new certificate staged", 0);
}
static void test_kill_when_trying(void) {
  kill_at("with the renewed certificate", 0);
}

/* The swap itself, cut between its two renames (key already new, the
 * certificate still staged), and a staged pair never committed. */
static void test_repair(void) {
  fx f;
  fx_start(&f);
  write_otp(&f, OTP);
  char err[1024];
  enroll_request r = {.base_url = sim_http_url(f.h),
                      .device_id = DEVICE,
                      .cert_file = f.cert,
                      .key_file = f.key,
                      .ca_path = NULL,
                      .verify_hostname = true,
                      .otp = OTP};
  char *ca = pki("ca.pem");
  r.ca_path = ca;
  g_assert_cmpint(enroll_request_certificate(&r, err, sizeof err), ==, 0);
  g_assert_cmpint(enroll_commit(f.cert, f.key, err, sizeof err), ==, 0);
  assert_pair(&f);
  char *old = file_text(f.cert);
  /* A second pair, staged: never committed, so repair drops it. */
  g_assert_cmpint(sim_est_add_otp(f.est, DEVICE, "second"), ==, 0);
  r.otp = "second";
  g_assert_cmpint(enroll_request_certificate(&r, err, sizeof err), ==, 0);
  g_assert_true(staged_left(&f));
  g_assert_cmpint(enroll_repair(f.cert, f.key, err, sizeof err), ==, 0);
  g_assert_false(staged_left(&f));
  char *still = file_text(f.cert);
  g_assert_cmpstr(still, ==, old);
  /* A third, half swapped in: repair completes the swap. */
  g_assert_cmpint(sim_est_add_otp(f.est, DEVICE, "third"), ==, 0);
  r.otp = "third";
  g_assert_cmpint(enroll_request_certificate(&r, err, sizeof err), ==, 0);
  char *staged_key = enroll_staged_path(f.key);
  char *staged_cert = enroll_staged_path(f.cert);
  char *newcert = file_text(staged_cert);
  g_assert_cmpint(rename(staged_key, f.key), ==, 0);
  g_assert_cmpint(enroll_repair(f.cert, f.key, err, sizeof err), ==, 1);
  assert_pair(&f);
  g_assert_false(staged_left(&f));
  char *now = file_text(f.cert);
  g_assert_cmpstr(now, ==, newcert);
  /* A used one-time password is refused: C8Y_EAUTH, nothing staged. */
  g_assert_cmpint(enroll_request_certificate(&r, err, sizeof err), ==,
                  C8Y_EAUTH);
  g_assert_nonnull(strstr(err, "HTTP 401"));
  g_assert_false(staged_left(&f));
  free(staged_key);
  free(staged_cert);
  g_free(newcert);
  g_free(now);
  g_free(still);
  g_free(old);
  g_free(ca);
  fx_stop(&f);
}

/* The reply formats EST servers use: base64 PKCS#7 (RFC 7030, thin-edge's
 * reading of Cumulocity), raw DER, PEM PKCS#7, PEM certificates (the
 * Cumulocity documentation's example); the certificate for the key comes
 * first whatever the order. */
static void test_reply_formats(void) {
  pki_sh(C8Y_OPENSSL_CLI " crl2pkcs7 -nocrl -certfile ca.pem -certfile "
                         "server.pem -out both.p7.pem && " C8Y_OPENSSL_CLI
                         " crl2pkcs7 -nocrl -certfile server.pem -outform DER "
                         "-out server.p7.der && base64 server.p7.der > "
                         "server.p7.b64 && cat ca.pem server.pem > both.pem");
  char *key_path = pki("server.key"), *cert_path = pki("server.pem");
  char *key = file_text(key_path), *cert = file_text(cert_path);
  const char *files[] = {"both.p7.pem", "server.p7.der", "server.p7.b64",
                         "both.pem"};
  char err[512];
  for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
    char *path = pki(files[i]);
    gchar *body = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(path, &body, &len, NULL));
    char *pem = NULL;
    int rc = enroll_reply_to_pem(body, len, key, &pem, err, sizeof err);
    if (rc != 0)
      g_error("%s: %s", files[i], err);
    g_assert_true(g_str_has_prefix(pem, cert)); /* the leaf first */
    free(pem);
    /* Another key: no certificate in the reply is for it. */
    char *ca_key_path = pki("ca.key");
    char *other = file_text(ca_key_path);
    if (strstr(files[i], "both")) {
      g_assert_cmpint(
          enroll_reply_to_pem(body, len, other, &pem, err, sizeof err), ==, 0);
      g_assert_false(g_str_has_prefix(pem, cert));
      free(pem);
    } else {
      g_assert_cmpint(
          enroll_reply_to_pem(body, len, other, &pem, err, sizeof err), ==,
          C8Y_EINVAL);
      g_assert_nonnull(strstr(err, "is for the key"));
    }
    g_free(other);
    g_free(ca_key_path);
    g_free(body);
    g_free(path);
  }
  char *pem = NULL;
  g_assert_cmpint(
      enroll_reply_to_pem("<html>oops</html>", 17, key, &pem, err, sizeof err),
      ==, C8Y_EINVAL);
  g_assert_nonnull(strstr(err, "no certificate"));
  g_free(key);
  g_free(cert);
  g_free(key_path);
  g_free(cert_path);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  make_pki();
  g_test_add_func("/enroll/reply-formats", test_reply_formats);
  g_test_add_func("/enroll/repair", test_repair);
  g_test_add_func("/enroll/from-nothing", test_enroll_from_nothing);
  g_test_add_func("/enroll/wrong-otp", test_enroll_wrong_otp);
  g_test_add_func("/enroll/renewal", test_renewal);
  g_test_add_func("/enroll/renewal-mtls", test_renewal_mtls);
  g_test_add_func("/enroll/renewal-refused", test_renewal_refused);
  g_test_add_func("/enroll/kill/during-request", test_kill_during_request);
  g_test_add_func("/enroll/kill/when-staged", test_kill_when_staged);
  g_test_add_func("/enroll/kill/when-trying", test_kill_when_trying);
  int rc = g_test_run();
  if (!g_getenv("C8Y_KEEP_TEST_DIRS"))
    rm_rf(g_pki);
  g_free(g_pki);
  return rc;
}
