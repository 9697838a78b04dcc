/* TLS and X.509: the real agent against a real mosquitto TLS listener on
 * 127.0.0.1, with a throw-away PKI made by the openssl CLI:
 *   ca        the test CA (the agent's ca_path)
 *   server    CN localhost, SAN IP:127.0.0.1 + DNS:localhost
 *   wronghost CN/SAN wrong.example.invalid (same CA)
 *   rogue-ca + rogue: a server cert for 127.0.0.1 from a CA the agent does
 *             not trust
 *   device    CN = DEVICE (client auth), other.key: an unrelated key */
#include "agent_proc.h"
#include "broker.h"
#include "sim.h"
#include "x509.h"

#define CLI_FAILED 4 /* c8y-agent connect --test: a step failed */

#include <arpa/inet.h>
#include <c8y/plugin.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEVICE "tlsdev1"
#define TENANT_USER "t1/device"
/* Distinctive, and free of ';' and '#' (inih comment characters). */
#define PASSWORD "Pw-never-logged-7Qz4Xk"

/* The PKI directory, made once in main() and removed at exit. */
static char g_pki[64];

static char *pki(const char *file) {
  return g_strdup_printf("%s/%s", g_pki, file);
}

/* Runs a command (argv NULL-terminated) in the PKI dir; aborts the test
 * with its stderr when it fails. */
static void run(const char *const *argv) {
  gchar *err = NULL;
  gint status = 0;
  GError *e = NULL;
  gboolean ok = g_spawn_sync(g_pki, (gchar **)argv, NULL, G_SPAWN_DEFAULT, NULL,
                             NULL, NULL, &err, &status, &e);
  if (!ok || !g_spawn_check_wait_status(status, NULL)) {
    gchar *cmd = g_strjoinv(" ", (gchar **)argv);
    g_error("%s: %s", cmd, e ? e->message : err);
  }
  g_free(err);
}

static void write_file(const char *name, const char *text) {
  char *p = pki(name);
  GError *e = NULL;
  g_file_set_contents(p, text, -1, &e);
  g_assert_no_error(e);
  g_free(p);
}

static void make_key(const char *name) {
  char *key = g_strdup_printf("%s.key", name);
  const char *argv[] = {
      C8Y_OPENSSL_CLI,           "genpkey", "-algorithm", "EC", "-pkeyopt",
      "ec_paramgen_curve:P-256", "-out",    key,          NULL};
  run(argv);
  g_free(key);
}

static void make_ca(const char *name, const char *cn) {
  make_key(name);
  char *key = g_strdup_printf("%s.key", name);
  char *pem = g_strdup_printf("%s.pem", name);
  char *subj = g_strdup_printf("/CN=%s", cn);
  const char *argv[] = {C8Y_OPENSSL_CLI,
                        "req",
                        "-x509",
                        "-new",
                        "-key",
                        key,
                        "-out",
                        pem,
                        "-days",
                        "2",
                        "-subj",
                        subj,
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                        "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign",
                        NULL};
  run(argv);
  g_free(key);
  g_free(pem);
  g_free(subj);
}

/* A leaf certificate <name>.pem/.key signed by <ca>. */
static void make_leaf(const char *ca, const char *name, const char *subj,
                      const char *ext, const char *serial) {
  make_key(name);
  char *key = g_strdup_printf("%s.key", name);
  char *csr = g_strdup_printf("%s.csr", name);
  char *pem = g_strdup_printf("%s.pem", name);
  char *extf = g_strdup_printf("%s.ext", name);
  char *cap = g_strdup_printf("%s.pem", ca);
  char *cak = g_strdup_printf("%s.key", ca);
  write_file(extf, ext);
  const char *req[] = {C8Y_OPENSSL_CLI, "req", "-new",  "-key", key,
                       "-out",          csr,   "-subj", subj,   NULL};
  run(req);
  const char *sign[] = {
      C8Y_OPENSSL_CLI, "x509",  "-req",   "-in",      csr,
      "-CA",           cap,     "-CAkey", cak,        "-set_serial",
      serial,          "-days", "2",      "-extfile", extf,
      "-out",          pem,     NULL};
  run(sign);
  g_free(key);
  g_free(csr);
  g_free(pem);
  g_free(extf);
  g_free(cap);
  g_free(cak);
}

static void make_pki(void) {
  make_ca("ca", "c8y-agent test CA");
  make_ca("rogue-ca", "some other CA");
  const char *server_ext = "basicConstraints=CA:FALSE\n"
                           "extendedKeyUsage=serverAuth\n"
                           "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  make_leaf("ca", "server", "/CN=localhost", server_ext, "1001");
  make_leaf("rogue-ca", "rogue", "/CN=localhost", server_ext, "1002");
  make_leaf("ca", "wronghost", "/CN=wrong.example.invalid",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            "subjectAltName=DNS:wrong.example.invalid\n",
            "1003");
  make_leaf("ca", "device", "/O=c8y-agent tests/CN=" DEVICE,
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n", "1004");
  make_leaf("ca", "nocn", "/O=no common name",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n", "1005");
  make_key("other");
  write_file("garbage.pem", "this is not a certificate\n");
}

/* ---- a mosquitto with one TLS listener ---------------------------------- */

typedef struct tls_broker {
  char *dir; /* own temp dir: conf, log, password file */
  char *log;
  int port;
  pid_t pid;
} tls_broker;

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

static bool port_accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

static const char *mosquitto_exe(void) {
  static const char *const cands[] = {
      "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"};
  for (size_t i = 0; i < G_N_ELEMENTS(cands); i++)
    if (access(cands[i], X_OK) == 0)
      return cands[i];
  return "mosquitto";
}

/* client_certs: require a client certificate and take its CN as the user
 * name (Cumulocity's certificate authentication); otherwise a password file
 * with TENANT_USER / PASSWORD. */
static void tb_start_ca(tls_broker *b, const char *server_cert,
                        bool client_certs, const char *client_ca) {
  memset(b, 0, sizeof *b);
  GError *e = NULL;
  b->dir = g_dir_make_tmp("c8y-tls-broker-XXXXXX", &e);
  g_assert_no_error(e);
  b->log = g_strdup_printf("%s/mosquitto.log", b->dir);
  char *passwd = g_strdup_printf("%s/passwd", b->dir);
  if (!client_certs) {
    broker_user u = {TENANT_USER, PASSWORD};
    char err[256];
    if (broker_write_passwd(passwd, &u, 1, err, sizeof err) != 0)
      g_error("%s", err);
  }
  char *conf = g_strdup_printf("%s/mosquitto.conf", b->dir);
  char *out = g_strdup_printf("%s/mosquitto.out", b->dir);
  struct passwd *pw = getpwuid(geteuid());
  for (int attempt = 0; attempt < 5 && !b->pid; attempt++) {
    b->port = free_port();
    g_assert_cmpint(b->port, >, 0);
    char *text = g_strdup_printf(
        "per_listener_settings false\n"
        "listener %d 127.0.0.1\n"
        "cafile %s\ncertfile %s/%s.pem\nkeyfile %s/%s.key\n"
        "require_certificate %s\n%s"
        "allow_anonymous false\n%s%s%s"
        "persistence false\n"
        "log_dest file %s\nlog_type all\nconnection_messages true\n"
        "%s%s%s",
        b->port, client_ca, g_pki, server_cert, g_pki, server_cert,
        client_certs ? "true" : "false",
        client_certs ? "use_identity_as_username true\n" : "",
        client_certs ? "" : "password_file ", client_certs ? "" : passwd,
        client_certs ? "" : "\n", b->log,
        /* as root mosquitto would switch to a user that cannot read the
         * private temp dirs */
        pw && geteuid() == 0 ? "user " : "",
        pw && geteuid() == 0 ? pw->pw_name : "",
        pw && geteuid() == 0 ? "\n" : "");
    g_file_set_contents(conf, text, -1, &e);
    g_assert_no_error(e);
    g_free(text);
    pid_t parent = getpid();
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent)
        _exit(127);
      int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      const char *exe = mosquitto_exe();
      execl(exe, exe, "-c", conf, (char *)NULL);
      _exit(127);
    }
    for (int waited = 0; waited < 5000; waited += 20) {
      int st;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = 0; /* exited: most likely the port was taken, try another */
        break;
      }
      if (port_accepts(b->port) && broker_pid_listens(pid, b->port)) {
        b->pid = pid;
        break;
      }
      g_usleep(20 * 1000);
    }
    if (!b->pid && pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
    }
  }
  if (!b->pid) {
    gchar *o = NULL;
    g_file_get_contents(out, &o, NULL, NULL);
    g_error("mosquitto did not start: %s", o ? o : "no output");
  }
  g_free(conf);
  g_free(out);
  g_free(passwd);
}

static void tb_start(tls_broker *b, const char *server_cert,
                     bool client_certs) {
  char *ca = pki("ca.pem");
  tb_start_ca(b, server_cert, client_certs, ca);
  g_free(ca);
}

static char *tb_log(tls_broker *b) {
  gchar *text = NULL;
  if (!g_file_get_contents(b->log, &text, NULL, NULL))
    text = g_strdup("");
  return text;
}

static void rm_rf(const char *dir) {
  const char *argv[] = {"rm", "-rf", dir, NULL};
  g_spawn_sync(NULL, (gchar **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
               NULL, NULL, NULL, NULL);
}

static void tb_stop(tls_broker *b) {
  if (b->pid > 0) {
    kill(b->pid, SIGTERM);
    waitpid(b->pid, NULL, 0);
  }
  if (g_test_failed()) {
    char *log = tb_log(b);
    g_printerr("---- mosquitto log ----\n%s\n", log);
    g_free(log);
  }
  if (!g_getenv("C8Y_KEEP_TEST_DIRS"))
    rm_rf(b->dir);
  g_free(b->dir);
  g_free(b->log);
}

/* ---- the agent ----------------------------------------------------------- */

/* [c8y] section body (without host/port/tls/ca_path, which come from here). */
static agent_proc *agent_for(tls_broker *b, const char *c8y_extra,
                             const char *device_id) {
  char *ca = pki("ca.pem");
  char *ini = g_strdup_printf(
      "[c8y]\nhost = 127.0.0.1\nport = %d\ntls = true\nca_path = %s\n"
      "reconnect_min_ms = 100\nreconnect_max_ms = 1000\n%s"
      "[device]\n%s%s\n"
      "[agent]\nplugin_dir = %s\nlog_level = debug\n",
      b->port, ca, c8y_extra, device_id ? "id = " : "",
      device_id ? device_id : "", ITEST_PLUGIN_DIR);
  agent_proc *a = agent_proc_new(ini);
  g_assert_nonnull(a);
  g_free(ini);
  g_free(ca);
  return a;
}

static void dump_on_failure(agent_proc *a) {
  if (g_test_failed()) {
    char *log = agent_proc_log(a);
    g_printerr("---- agent log ----\n%s\n", log);
    free(log);
  }
}

static bool contains(const char *hay, const char *needle) {
  return hay && strstr(hay, needle) != NULL;
}

#define PW_LINES "tenant = t1\nuser = device\npassword = " PASSWORD "\n"

/* (a) password authentication over TLS, server verified against ca_path. */
static void test_password_over_tls(void) {
  tls_broker b;
  tb_start(&b, "server", false);
  agent_proc *a = agent_for(&b, PW_LINES, DEVICE);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  char *want = g_strdup_printf("connected to ssl://127.0.0.1:%d", b.port);
  bool up = agent_proc_wait_log(a, want, 20000);
  dump_on_failure(a);
  g_assert_true(up);
  char *blog = tb_log(&b);
  g_assert_true(contains(blog, "as d:" DEVICE));
  g_assert_true(contains(blog, "u'" TENANT_USER "'"));
  g_assert_cmpint(agent_proc_stop(a, 10000), ==, 0);
  char *log = agent_proc_log(a);
  g_assert_false(contains(log, PASSWORD));
  g_assert_false(contains(log, "verify_hostname: false"));
  /* The certificate matches 127.0.0.1 through its IP SAN: no name error. */
  g_assert_false(contains(log, "not valid for this host name"));
  g_assert_false(contains(log, "c8y-agent[error] TLS"));
  free(log);
  g_free(blog);
  g_free(want);
  agent_proc_free(a);
  tb_stop(&b);
}

/* Starts an agent that must NOT get through; returns its log after a few
 * failed attempts. */
static char *refused_log(tls_broker *b, const char *extra) {
  agent_proc *a = agent_for(b, extra, DEVICE);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  char *want = g_strdup_printf("cannot connect to ssl://127.0.0.1:%d", b->port);
  bool failed = agent_proc_wait_log(a, want, 20000);
  /* Give it time for a reconnect or two: none may succeed. */
  bool up = agent_proc_wait_log(a, "connected to ssl://", 2500);
  dump_on_failure(a);
  g_assert_true(failed);
  g_assert_false(up);
  agent_proc_stop(a, 10000);
  char *log = agent_proc_log(a);
  agent_proc_free(a);
  g_free(want);
  char *blog = tb_log(b);
  g_assert_false(contains(blog, "New client connected"));
  g_free(blog);
  return log;
}

/* (b) a certificate for another host name is refused... */
static void test_wrong_host_refused(void) {
  tls_broker b;
  tb_start(&b, "wronghost", false);
  char *log = refused_log(&b, PW_LINES);
  g_test_message("agent log:\n%s", log);
  /* The reason reaches the log: the connection diagnosis names it. */
  g_assert_true(contains(log, "TLS step failed: certificate name mismatch: "
                              "the server certificate is not valid for host "
                              "name 127.0.0.1"));
  free(log);
  tb_stop(&b);
}

/* ...unless verify_hostname = false, which connects and says so loudly. */
static void test_wrong_host_unverified(void) {
  tls_broker b;
  tb_start(&b, "wronghost", false);
  agent_proc *a = agent_for(&b, PW_LINES "verify_hostname = false\n", DEVICE);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  bool up = agent_proc_wait_log(a, "connected to ssl://", 20000);
  dump_on_failure(a);
  g_assert_true(up);
  char *log = agent_proc_log(a);
  g_assert_true(contains(log, "[c8y] verify_hostname: false"));
  g_assert_true(contains(log, "c8y-agent[warning]"));
  free(log);
  agent_proc_free(a);
  tb_stop(&b);
}

/* verify_hostname = false never turns off the chain check: a certificate
 * from a CA that ca_path does not hold is refused. */
static void test_untrusted_ca_refused(void) {
  tls_broker b;
  tb_start(&b, "rogue", false);
  char *log = refused_log(&b, PW_LINES "verify_hostname = false\n");
  g_test_message("agent log:\n%s", log);
  g_assert_true(contains(log, "c8y-agent[error] TLS: "));
  g_assert_true(contains(log, "certificate verify failed"));
  free(log);
  tb_stop(&b);
}

static char *cert_lines(const char *cert, const char *key) {
  char *c = pki(cert), *k = pki(key);
  char *s = g_strdup_printf("cert_file = %s\nkey_file = %s\n", c, k);
  g_free(c);
  g_free(k);
  return s;
}

/* (c) X.509 client authentication: no tenant, no password; the broker takes
 * the certificate CN as the user, the clientId is d:<CN>. */
static void test_client_certificate(void) {
  tls_broker b;
  tb_start(&b, "server", true);
  char *lines = cert_lines("device.pem", "device.key");
  /* No [device] id: the certificate's CN is the device id. */
  agent_proc *a = agent_for(&b, lines, NULL);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  bool up = agent_proc_wait_log(a, "connected to ssl://", 20000);
  dump_on_failure(a);
  g_assert_true(up);
  char *blog = tb_log(&b);
  g_assert_true(contains(blog, "as d:" DEVICE " "));
  g_assert_true(contains(blog, "u'" DEVICE "'"));
  g_assert_cmpint(agent_proc_stop(a, 10000), ==, 0);
  g_free(blog);
  agent_proc_free(a);

  /* The same broker refuses a client without a certificate: the test above
   * really authenticated with it. */
  a = agent_for(&b, PW_LINES, DEVICE);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  g_assert_true(agent_proc_wait_log(a, "cannot connect to ssl://", 20000));
  g_assert_false(agent_proc_wait_log(a, "connected to ssl://", 1000));
  agent_proc_free(a);
  g_free(lines);
  tb_stop(&b);
}

/* Runs an agent whose set-up is wrong: it must exit by itself, quickly,
 * without ever reaching the broker, and log the reason. */
static char *startup_refusal(const char *lines, const char *device_id) {
  tls_broker b;
  tb_start(&b, "server", true);
  agent_proc *a = agent_for(&b, lines, device_id);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  int rc = agent_proc_wait_exit(a, 20000);
  dump_on_failure(a);
  g_assert_cmpint(rc, ==, 1); /* a configuration error */
  char *log = agent_proc_log(a);
  agent_proc_free(a);
  char *blog = tb_log(&b);
  g_assert_false(contains(blog, "New client connected"));
  g_free(blog);
  tb_stop(&b);
  return log;
}

static const char *line_with(const char *log, const char *needle) {
  const char *p = strstr(log, needle);
  if (!p)
    return NULL;
  while (p > log && p[-1] != '\n')
    p--;
  return p;
}

/* (d) device id != certificate CN: one error line naming both. */
static void test_cn_mismatch(void) {
  char *lines = cert_lines("device.pem", "device.key");
  char *log = startup_refusal(lines, "not-the-cn");
  g_test_message("agent log:\n%s", log);
  const char *l = line_with(log, "not-the-cn");
  g_assert_nonnull(l);
  const char *eol = strchr(l, '\n');
  char *one = g_strndup(l, eol ? (gsize)(eol - l) : strlen(l));
  g_assert_true(contains(one, "c8y-agent[error]"));
  g_assert_true(contains(one, "\"" DEVICE "\""));
  g_assert_true(contains(one, "\"not-the-cn\""));
  g_assert_true(contains(one, "CN"));
  g_assert_true(contains(one, "device.pem"));
  g_free(one);
  free(log);
  g_free(lines);
}

/* (d) a key that does not belong to the certificate. */
static void test_key_mismatch(void) {
  char *lines = cert_lines("device.pem", "other.key");
  char *log = startup_refusal(lines, DEVICE);
  g_test_message("agent log:\n%s", log);
  const char *l = line_with(log, "is not the private key");
  g_assert_nonnull(l);
  g_assert_true(contains(l, "other.key"));
  free(log);
  g_free(lines);
}

/* ---- x509 module, in process --------------------------------------------- */

static void test_x509_module(void) {
  char err[512], cn[128];
  char *dev = pki("device.pem"), *key = pki("device.key");
  char *other = pki("other.key"), *nocn = pki("nocn.pem");
  char *garbage = pki("garbage.pem"), *missing = pki("missing.pem");
  g_assert_cmpint(x509_subject_cn(dev, cn, sizeof cn, err, sizeof err), ==, 0);
  g_assert_cmpstr(cn, ==, DEVICE);
  g_assert_cmpint(x509_check_device_cert(dev, key, DEVICE, err, sizeof err), ==,
                  0);
  g_assert_cmpint(x509_check_device_cert(dev, key, NULL, err, sizeof err), ==,
                  0);
  g_assert_cmpint(x509_check_device_cert(dev, key, "x", err, sizeof err), ==,
                  C8Y_EINVAL);
  g_assert_true(contains(err, "\"" DEVICE "\"") && contains(err, "\"x\""));
  g_assert_cmpint(x509_check_device_cert(dev, other, DEVICE, err, sizeof err),
                  ==, C8Y_EINVAL);
  g_assert_true(contains(err, "other.key"));
  g_assert_cmpint(x509_subject_cn(nocn, cn, sizeof cn, err, sizeof err), ==,
                  C8Y_EINVAL);
  g_assert_true(contains(err, "no CN"));
  g_assert_cmpint(x509_subject_cn(garbage, cn, sizeof cn, err, sizeof err), ==,
                  C8Y_EINVAL);
  g_assert_true(contains(err, "garbage.pem") && contains(err, "not a PEM"));
  g_assert_cmpint(x509_subject_cn(missing, cn, sizeof cn, err, sizeof err), ==,
                  C8Y_EIO);
  g_assert_true(contains(err, "missing.pem") && contains(err, "cannot open"));
  /* A key file that holds a certificate, not a key. */
  g_assert_cmpint(x509_check_device_cert(dev, dev, DEVICE, err, sizeof err), ==,
                  C8Y_EINVAL);
  g_assert_true(contains(err, "key_file"));
  /* Too small a buffer is an error, not a truncated CN. */
  g_assert_cmpint(x509_subject_cn(dev, cn, 4, err, sizeof err), ==, C8Y_EINVAL);
  g_free(dev);
  g_free(key);
  g_free(other);
  g_free(nocn);
  g_free(garbage);
  g_free(missing);
}

static sim *plain_sim(void) {
  sim_options o = {.tenant = "t1",
                   .user = "device",
                   .password = PASSWORD,
                   .device_id = DEVICE};
  sim *s = NULL;
  char err[512];
  if (sim_start(&o, &s, err, sizeof err) != 0)
    g_error("simulator: %s", err);
  return s;
}

/* (e) debug logging through a full session and an operation never shows
 * the password (plain MQTT here: what is logged does not depend on TLS). */
static void test_no_secret_in_log(void) {
  sim *s = plain_sim();
  char *ini = g_strdup_printf(
      "[c8y]\ntenant = t1\nuser = device\npassword = %s\nhost = 127.0.0.1\n"
      "port = %d\ntls = false\nreconnect_min_ms = 100\n"
      "reconnect_max_ms = 1000\n[device]\nid = " DEVICE "\n"
      "[agent]\nplugin_dir = %s\nlog_level = debug\n",
      PASSWORD, sim_port(s), ITEST_PLUGIN_DIR);
  agent_proc *a = agent_proc_new(ini);
  g_free(ini);
  g_assert_nonnull(a);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  long at = sim_wait_line(s, "s/us", "500", 0, 20000);
  dump_on_failure(a);
  g_assert_cmpint(at, >=, 0);
  long op = sim_create_operation(s, "511," DEVICE ",ok pong");
  g_assert_cmpint(op, >, 0);
  g_assert_cmpint(sim_wait_operation_done(s, op, 20000), ==, SIM_OP_SUCCESSFUL);
  /* The reload path re-reads the file holding the password. */
  agent_proc_signal(a, SIGHUP);
  g_usleep(300 * 1000);
  g_assert_cmpint(agent_proc_stop(a, 10000), ==, 0);
  char *log = agent_proc_log(a);
  g_test_message("agent log: %zu bytes", strlen(log));
  /* The log really is a debug log of a whole session... */
  g_assert_true(contains(log, "c8y-agent[debug]") ||
                contains(log, "connected to tcp://"));
  g_assert_true(contains(log, "connected to tcp://"));
  /* ...and holds the password nowhere, not even a part of it. */
  g_assert_false(contains(log, PASSWORD));
  g_assert_false(contains(log, "never-logged"));
  free(log);
  agent_proc_free(a);
  sim_stop(s);
}

/* ---- connect --test, the daemon's diagnosis, cert create/csr ------------ */

/* Runs argv (NULL-terminated; argv[0] a path) and returns its exit status;
 * stdout followed by stderr in *out. */
static int capture(const char *const *argv, char **out) {
  gchar *o = NULL, *e = NULL;
  gint status = 0;
  GError *err = NULL;
  if (!g_spawn_sync(NULL, (gchar **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &o,
                    &e, &status, &err))
    g_error("%s: %s", argv[0], err->message);
  *out = g_strconcat(o, e, NULL);
  g_free(o);
  g_free(e);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* `c8y-agent -c <tmp>/agent.ini <args>` with `ini` (a state dir added). */
static int agent_cli(const char *ini, const char *const *args, char **out) {
  GError *e = NULL;
  char *dir = g_dir_make_tmp("c8y-cli-XXXXXX", &e);
  g_assert_no_error(e);
  char *conf = g_strdup_printf("%s/agent.ini", dir);
  char *text = g_strdup_printf("%s\n[agent]\nstate_dir = %s/state\n", ini, dir);
  g_assert_true(g_file_set_contents(conf, text, -1, NULL));
  g_chmod(conf, 0600);
  const char *argv[16] = {g_getenv("C8Y_AGENT_BIN"), "-c", conf};
  int n = 3;
  for (int i = 0; args[i] && n < 15; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  int rc = capture(argv, out);
  g_test_message("c8y-agent %s -> %d:\n%s", args[0], rc, *out);
  rm_rf(dir);
  g_free(text);
  g_free(conf);
  g_free(dir);
  return rc;
}

static char *connect_ini(const char *host, int port, bool tls,
                         const char *c8y_extra) {
  char *ca = pki("ca.pem");
  char *ini =
      g_strdup_printf("[c8y]\nhost = %s\nport = %d\ntls = %s\n"
                      "ca_path = %s\n%s[device]\nid = " DEVICE "\n",
                      host, port, tls ? "true" : "false", ca, c8y_extra);
  g_free(ca);
  return ini;
}

/* connect --test output for one set-up; asserts the exit status. */
static char *connect_test(const char *host, int port, bool tls,
                          const char *c8y_extra, int want_rc) {
  char *ini = connect_ini(host, port, tls, c8y_extra);
  const char *args[] = {"connect", "--test", "--timeout", "5", NULL};
  char *out = NULL;
  int rc = agent_cli(ini, args, &out);
  g_assert_cmpint(rc, ==, want_rc);
  g_free(ini);
  return out;
}

static void test_connect_ok_tls(void) {
  tls_broker b;
  tb_start(&b, "server", false);
  char *out = connect_test("127.0.0.1", b.port, true, PW_LINES, 0);
  g_assert_true(contains(out, "[ ok ] DNS"));
  g_assert_true(contains(out, "[ ok ] TCP"));
  g_assert_true(contains(out, "[ ok ] TLS"));
  g_assert_true(contains(out, "server certificate verified for 127.0.0.1"));
  g_assert_true(contains(out, "[ ok ] MQTT       CONNACK 0: connected as "
                              "t1/device"));
  g_assert_true(contains(out, "[ ok ] round trip 123 on s/us acknowledged"));
  g_assert_true(contains(out, "connection test passed"));
  g_assert_false(contains(out, PASSWORD));
  g_free(out);
  tb_stop(&b);
}

/* Against the simulator the round trip also gets the platform's answer. */
static void test_connect_ok_sim(void) {
  sim *s = plain_sim();
  char *out = connect_test("127.0.0.1", sim_port(s), false, PW_LINES, 0);
  g_assert_true(contains(out, "answer 124,"));
  g_assert_cmpuint(sim_count_lines(s, "s/us", "123"), ==, 1);
  g_free(out);
  sim_stop(s);
}

static void test_connect_dns(void) {
  char *out =
      connect_test("nonexistent.invalid", 8883, true, PW_LINES, CLI_FAILED);
  g_assert_true(contains(out, "[FAIL] DNS        cannot resolve host name "
                              "'nonexistent.invalid': "));
  g_assert_true(contains(out, "FAILED at step DNS"));
  g_assert_false(contains(out, "[ ok ]"));
  g_free(out);
}

static void test_connect_refused(void) {
  int port = free_port();
  char *out = connect_test("127.0.0.1", port, false, PW_LINES, CLI_FAILED);
  char *want = g_strdup_printf("[FAIL] TCP        cannot connect to 127.0.0.1 "
                               "port %d: Connection refused",
                               port);
  g_assert_true(contains(out, want));
  g_assert_true(contains(out, "[ ok ] DNS"));
  g_free(want);
  g_free(out);
}

static void test_connect_tls_on_plain_port(void) {
  sim *s = plain_sim();
  char *out =
      connect_test("127.0.0.1", sim_port(s), true, PW_LINES, CLI_FAILED);
  g_assert_true(contains(out, "[ ok ] TCP"));
  g_assert_true(contains(out, "[FAIL] TLS"));
  g_assert_true(contains(out, "a plain MQTT port?"));
  g_free(out);
  sim_stop(s);
}

static void test_connect_wrong_host(void) {
  tls_broker b;
  tb_start(&b, "wronghost", false);
  char *out = connect_test("127.0.0.1", b.port, true, PW_LINES, CLI_FAILED);
  g_assert_true(contains(out, "[FAIL] TLS        certificate name mismatch: "
                              "the server certificate is not valid for host "
                              "name 127.0.0.1 (it is for: "
                              "wrong.example.invalid"));
  g_free(out);
  tb_stop(&b);
}

static void test_connect_untrusted_ca(void) {
  tls_broker b;
  tb_start(&b, "rogue", false);
  char *out = connect_test("127.0.0.1", b.port, true, PW_LINES, CLI_FAILED);
  g_assert_true(
      contains(out, "[FAIL] TLS        untrusted server certificate"));
  g_assert_true(contains(out, "some other CA"));
  g_free(out);
  tb_stop(&b);
}

static void test_connect_bad_password(void) {
  tls_broker b;
  tb_start(&b, "server", false);
  char *out = connect_test("127.0.0.1", b.port, true,
                           "tenant = t1\nuser = device\npassword = wrong\n",
                           CLI_FAILED);
  g_assert_true(contains(out, "[ ok ] TLS"));
  /* mosquitto says 5 (not authorized); Cumulocity may say 4. */
  g_assert_true(contains(out, "[FAIL] MQTT       CONNACK 5 (not authorized): "
                              "not authorized: wrong credentials") ||
                contains(out, "[FAIL] MQTT       CONNACK 4 (bad user name or "
                              "password)"));
  g_free(out);
  tb_stop(&b);
}

/* A broker that wants a client certificate says so only after a TLS 1.3
 * handshake; connect --test still names TLS as the failed step. */
static void test_connect_needs_client_cert(void) {
  tls_broker b;
  tb_start(&b, "server", true);
  char *out = connect_test("127.0.0.1", b.port, true, PW_LINES, CLI_FAILED);
  g_assert_true(contains(out, "[FAIL] TLS"));
  g_assert_true(contains(out, "client certificate"));
  g_free(out);
  tb_stop(&b);
}

/* The daemon's own log names the same causes as connect --test. */
static void diag_logged(const char *ini_extra, int port, bool tls,
                        const char *host, const char *want) {
  char *ca = pki("ca.pem");
  char *ini = g_strdup_printf(
      "[c8y]\nhost = %s\nport = %d\ntls = %s\nca_path = %s\n"
      "reconnect_min_ms = 200\nreconnect_max_ms = 1000\n%s"
      "[device]\nid = " DEVICE "\n[agent]\nplugin_dir = %s\n",
      host, port, tls ? "true" : "false", ca, ini_extra, ITEST_PLUGIN_DIR);
  agent_proc *a = agent_proc_new(ini);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  char *line = g_strdup_printf("connection diagnosis for %s://%s:%d: %s",
                               tls ? "ssl" : "tcp", host, port, want);
  bool found = agent_proc_wait_log(a, line, 20000);
  dump_on_failure(a);
  if (!found)
    g_printerr("expected: %s\n", line);
  g_assert_true(found);
  g_assert_true(agent_proc_wait_log(a, "cannot connect to", 1000));
  g_assert_cmpint(agent_proc_stop(a, 10000), ==, 0);
  g_free(line);
  g_free(ini);
  g_free(ca);
  agent_proc_free(a);
}

static void test_daemon_diagnosis(void) {
  diag_logged(PW_LINES, 8883, true, "nonexistent.invalid",
              "DNS step failed: cannot resolve host name "
              "'nonexistent.invalid'");
  int port = free_port();
  char *want = g_strdup_printf("TCP step failed: cannot connect to 127.0.0.1 "
                               "port %d: Connection refused",
                               port);
  diag_logged(PW_LINES, port, false, "127.0.0.1", want);
  g_free(want);
  sim *s = plain_sim();
  diag_logged(PW_LINES, sim_port(s), true, "127.0.0.1", "TLS step failed: ");
  sim_stop(s);
  tls_broker b;
  tb_start(&b, "wronghost", false);
  diag_logged(PW_LINES, b.port, true, "127.0.0.1",
              "TLS step failed: certificate name mismatch");
  tb_stop(&b);
  tb_start(&b, "rogue", false);
  diag_logged(PW_LINES, b.port, true, "127.0.0.1",
              "TLS step failed: untrusted server certificate");
  tb_stop(&b);
  /* A refusal is explained by its CONNACK code. */
  tb_start(&b, "server", false);
  agent_proc *a =
      agent_for(&b, "tenant = t1\nuser = device\npassword = wrong\n", DEVICE);
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  g_assert_cmpint(agent_proc_wait_exit(a, 30000), ==, 3);
  char *log = agent_proc_log(a);
  g_assert_true(contains(log, "refused the connection for user t1/device"));
  g_assert_true(contains(log, "CONNACK 5 (not authorized: wrong credentials"));
  free(log);
  agent_proc_free(a);
  tb_stop(&b);
}

static char *openssl_out(const char *const *args) {
  const char *argv[16] = {C8Y_OPENSSL_CLI};
  int n = 1;
  for (int i = 0; args[i] && n < 15; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  char *out = NULL;
  int rc = capture(argv, &out);
  if (rc != 0)
    g_error("openssl %s failed: %s", args[0], out);
  return out;
}

static mode_t file_mode(const char *path) {
  struct stat st;
  g_assert_cmpint(g_stat(path, &st), ==, 0);
  return st.st_mode & 0777;
}

static void test_cert_create(void) {
  GError *e = NULL;
  char *dir = g_dir_make_tmp("c8y-cert-XXXXXX", &e);
  g_assert_no_error(e);
  char *pem = g_strdup_printf("%s/device-cert.pem", dir);
  char *key = g_strdup_printf("%s/device-key.pem", dir);
  char *ini = g_strdup_printf("[c8y]\nhost = 127.0.0.1\ncert_file = %s\n"
                              "key_file = %s\n[device]\nid = certdev1\n",
                              pem, key);
  const char *create[] = {"cert", "create", NULL};
  char *out = NULL;
  g_assert_cmpint(agent_cli(ini, create, &out), ==, 0);
  g_free(out);
  g_assert_cmpint(file_mode(key), ==, 0600);
  const char *subj[] = {
      "x509",     "-in",     pem,    "-noout",           "-subject",
      "-nameopt", "RFC2253", "-ext", "basicConstraints", NULL};
  out = openssl_out(subj);
  g_assert_true(contains(out, "subject=CN=certdev1\n"));
  g_assert_true(contains(out, "CA:TRUE"));
  g_free(out);
  const char *ktext[] = {"pkey", "-in", key, "-noout", "-text", NULL};
  out = openssl_out(ktext);
  g_assert_true(contains(out, "P-256"));
  g_free(out);
  char err[512];
  g_assert_cmpint(x509_check_device_cert(pem, key, "certdev1", err, sizeof err),
                  ==, 0);

  /* An existing identity is not replaced by accident. */
  gchar *before = NULL;
  g_assert_true(g_file_get_contents(key, &before, NULL, NULL));
  g_assert_cmpint(agent_cli(ini, create, &out), ==, 1);
  g_assert_true(contains(out, "already exists"));
  g_free(out);
  const char *force[] = {"cert", "create", "--force", "--days", "30", NULL};
  g_assert_cmpint(agent_cli(ini, force, &out), ==, 0);
  g_free(out);
  gchar *after = NULL;
  g_assert_true(g_file_get_contents(key, &after, NULL, NULL));
  g_assert_cmpstr(before, !=, after);
  g_assert_cmpint(x509_check_device_cert(pem, key, "certdev1", err, sizeof err),
                  ==, 0);
  /* 30 days: inside the default 30-day warning window. */
  char line[600];
  g_assert_cmpint(x509_expiry_line(pem, 30, line, sizeof line), ==, 0);
  g_assert_true(g_str_has_prefix(line, "304,c8y_CertificateExpiry,"));
  g_assert_cmpint(x509_expiry_line(pem, 7, line, sizeof line), ==, 0);
  g_assert_cmpstr(line, ==, "306,c8y_CertificateExpiry");
  g_free(before);
  g_free(after);

  /* The created pair authenticates against a broker that trusts it. */
  tls_broker b;
  tb_start_ca(&b, "server", true, pem);
  char *lines = g_strdup_printf("cert_file = %s\nkey_file = %s\n", pem, key);
  agent_proc *a = agent_for(&b, lines, "certdev1");
  g_assert_cmpint(agent_proc_start(a), ==, 0);
  bool up = agent_proc_wait_log(a, "connected to ssl://", 20000);
  dump_on_failure(a);
  g_assert_true(up);
  char *blog = tb_log(&b);
  g_assert_true(contains(blog, "u'certdev1'"));
  g_free(blog);
  /* 30 days left: the expiry alarm goes up on connect, and is logged. */
  g_assert_true(agent_proc_wait_log(a,
                                    "raising the c8y_CertificateExpiry "
                                    "alarm",
                                    5000));
  agent_proc_free(a);
  tb_stop(&b);
  g_free(lines);
  rm_rf(dir);
  g_free(ini);
  g_free(pem);
  g_free(key);
  g_free(dir);
}

static void test_cert_csr(void) {
  GError *e = NULL;
  char *dir = g_dir_make_tmp("c8y-csr-XXXXXX", &e);
  g_assert_no_error(e);
  char *key = g_strdup_printf("%s/new.key", dir);
  char *csr = g_strdup_printf("%s/req.csr", dir);
  /* No usable configuration: the flags give everything. */
  const char *argv[] = {g_getenv("C8Y_AGENT_BIN"),
                        "-c",
                        "/nonexistent.ini",
                        "cert",
                        "csr",
                        "--id",
                        "csrdev1",
                        "--key",
                        key,
                        "--out",
                        csr,
                        NULL};
  char *out = NULL;
  g_assert_cmpint(capture(argv, &out), ==, 0);
  g_free(out);
  g_assert_cmpint(file_mode(key), ==, 0600);
  const char *req[] = {"req",      "-in",      csr,       "-noout", "-verify",
                       "-subject", "-nameopt", "RFC2253", NULL};
  out = openssl_out(req);
  g_assert_true(contains(out, "subject=CN=csrdev1"));
  g_assert_true(contains(out, "verify OK"));
  g_free(out);
  /* For an existing key, to stdout; the request carries that key. */
  argv[9] = NULL; /* the same without --out */
  g_assert_cmpint(capture(argv, &out), ==, 0);
  g_assert_true(g_str_has_prefix(out, "-----BEGIN CERTIFICATE REQUEST-----"));
  char *csr2 = g_strdup_printf("%s/stdout.csr", dir);
  g_assert_true(g_file_set_contents(csr2, out, -1, NULL));
  g_free(out);
  const char *pub1[] = {"req", "-in", csr2, "-noout", "-pubkey", NULL};
  const char *pub2[] = {"pkey", "-in", key, "-pubout", NULL};
  char *p1 = openssl_out(pub1), *p2 = openssl_out(pub2);
  g_assert_cmpstr(p1, ==, p2);
  g_free(p1);
  g_free(p2);
  g_free(csr2);
  /* --owner: root hands the key to the service user (here: nobody);
   * anyone else can only name themselves. */
  struct passwd *who =
      geteuid() == 0 ? getpwnam("nobody") : getpwuid(geteuid());
  g_assert_nonnull(who);
  char *owner = g_strdup(who->pw_name);
  uid_t owner_uid = who->pw_uid;
  char *key3 = g_strdup_printf("%s/owned.key", dir);
  /* The first command, for another key and with --owner. */
  const char **owned = argv;
  owned[8] = key3;
  owned[9] = "--owner";
  owned[10] = owner;
  g_assert_cmpint(capture(owned, &out), ==, 0);
  g_free(out);
  struct stat st;
  g_assert_cmpint(g_stat(key3, &st), ==, 0);
  g_assert_cmpint(st.st_uid, ==, owner_uid);
  g_assert_cmpint(st.st_mode & 0777, ==, 0600);
  owned[10] = "no-such-user-c8y";
  g_assert_cmpint(capture(owned, &out), ==, 2);
  g_assert_true(contains(out, "--owner no-such-user-c8y: no such user"));
  g_free(out);
  g_free(key3);
  g_free(owner);
  rm_rf(dir);
  g_free(key);
  g_free(csr);
  g_free(dir);
}

static void test_expiry_line(void) {
  char *dev = pki("device.pem"), *missing = pki("missing.pem");
  char line[600];
  g_assert_cmpint(x509_expiry_line(dev, 30, line, sizeof line), ==, 0);
  g_assert_true(g_str_has_prefix(line, "304," X509_EXPIRY_ALARM ","));
  g_assert_true(contains(line, "device.pem expires on "));
  g_assert_null(
      strchr(strchr(line, ',') + 1 + strlen(X509_EXPIRY_ALARM) + 1, ','));
  g_assert_cmpint(x509_expiry_line(dev, 1, line, sizeof line), ==, 0);
  g_assert_cmpstr(line, ==, "306," X509_EXPIRY_ALARM);
  g_assert_cmpint(x509_expiry_line(missing, 30, line, sizeof line), ==,
                  C8Y_EIO);
  g_assert_true(contains(line, "cannot open"));
  g_free(dev);
  g_free(missing);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  snprintf(g_pki, sizeof g_pki, "/tmp/c8y-tls-pki-XXXXXX");
  if (!g_mkdtemp(g_pki))
    g_error("mkdtemp: %s", g_strerror(errno));
  make_pki();
  g_test_add_func("/tls/x509-module", test_x509_module);
  g_test_add_func("/tls/password-over-tls", test_password_over_tls);
  g_test_add_func("/tls/wrong-host-refused", test_wrong_host_refused);
  g_test_add_func("/tls/wrong-host-unverified", test_wrong_host_unverified);
  g_test_add_func("/tls/untrusted-ca-refused", test_untrusted_ca_refused);
  g_test_add_func("/tls/client-certificate", test_client_certificate);
  g_test_add_func("/tls/cn-mismatch", test_cn_mismatch);
  g_test_add_func("/tls/key-mismatch", test_key_mismatch);
  g_test_add_func("/tls/no-secret-in-log", test_no_secret_in_log);
  g_test_add_func("/tls/connect-test/ok-tls", test_connect_ok_tls);
  g_test_add_func("/tls/connect-test/ok-sim", test_connect_ok_sim);
  g_test_add_func("/tls/connect-test/dns", test_connect_dns);
  g_test_add_func("/tls/connect-test/refused", test_connect_refused);
  g_test_add_func("/tls/connect-test/tls-on-plain-port",
                  test_connect_tls_on_plain_port);
  g_test_add_func("/tls/connect-test/wrong-host", test_connect_wrong_host);
  g_test_add_func("/tls/connect-test/untrusted-ca", test_connect_untrusted_ca);
  g_test_add_func("/tls/connect-test/bad-password", test_connect_bad_password);
  g_test_add_func("/tls/connect-test/needs-client-cert",
                  test_connect_needs_client_cert);
  g_test_add_func("/tls/daemon-diagnosis", test_daemon_diagnosis);
  g_test_add_func("/tls/cert/create", test_cert_create);
  g_test_add_func("/tls/cert/csr", test_cert_csr);
  g_test_add_func("/tls/cert/expiry-line", test_expiry_line);
  int rc = g_test_run();
  if (!g_getenv("C8Y_KEEP_TEST_DIRS"))
    rm_rf(g_pki);
  return rc;
}
