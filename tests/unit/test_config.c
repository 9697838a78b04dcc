/* Unit tests for agent/src/config.c. Every test writes its files into a
 * fresh temporary directory, so the tests are independent of each other and
 * of the checkout. */
#include "config.h"
#include "log.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <ftw.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET "S3cr3t-Pa55-xyzzy"

/* Real-tenant base: lines 1..7. */
#define BASE                                                                   \
  "[c8y]\n"                                                                    \
  "tenant = t1\n"                                                              \
  "user = u\n"                                                                 \
  "password = " SECRET "\n"                                                    \
  "host = mqtt.example.invalid\n"                                              \
  "[device]\n"                                                                 \
  "id = dev1\n"

/* ---- fixtures ------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void rm_rf(const char *dir) {
  g_assert_cmpint(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), ==, 0);
}

static char *make_tmpdir(void) {
  GError *e = NULL;
  char *d = g_dir_make_tmp("test_config-XXXXXX", &e);
  g_assert_no_error(e);
  return d;
}

/* Writes dir/rel (creating parent directories) with the given mode. */
static char *write_file_len(const char *dir, const char *rel,
                            const char *content, gssize len, mode_t mode) {
  char *path = g_build_filename(dir, rel, NULL);
  char *parent = g_path_get_dirname(path);
  g_assert_cmpint(g_mkdir_with_parents(parent, 0700), ==, 0);
  g_free(parent);
  GError *e = NULL;
  g_file_set_contents(path, content, len, &e);
  g_assert_no_error(e);
  g_assert_cmpint(chmod(path, mode), ==, 0);
  return path;
}

static char *write_file(const char *dir, const char *rel, const char *content,
                        mode_t mode) {
  return write_file_len(dir, rel, content, -1, mode);
}

static void assert_zeroed(const agent_config *c) {
  agent_config z;
  memset(&z, 0, sizeof z);
  g_assert_true(memcmp(c, &z, sizeof z) == 0);
}

/* Loads a config that must be valid. */
static void load_ok(const char *path, agent_config *c) {
  char err[512] = "untouched";
  int rc = config_load(path, c, err, sizeof err);
  if (rc != 0)
    g_test_message("unexpected error: %s", err);
  g_assert_cmpint(rc, ==, 0);
}

/* Loads a config that must fail; checks the one-line "<file>:<line>: " prefix
 * (or "<file>: " for line 0), the expected text and that *out is zeroed. */
static void load_fail(const char *path, const char *file, unsigned line,
                      const char *needle) {
  agent_config c;
  memset(&c, 0xab, sizeof c);
  char err[512] = "";
  int rc = config_load(path, &c, err, sizeof err);
  g_test_message("err: %s", err);
  g_assert_cmpint(rc, ==, C8Y_EINVAL);
  assert_zeroed(&c);
  char *prefix = line ? g_strdup_printf("%s:%u: ", file, line)
                      : g_strdup_printf("%s: ", file);
  g_assert_true(g_str_has_prefix(err, prefix));
  g_free(prefix);
  g_assert_nonnull(strstr(err, needle));
  g_assert_null(strchr(err, '\n'));
  g_assert_null(strstr(err, SECRET));
}

/* ---- value parsers ----------------------------------------------------------
 */

static void test_parse_bool(void) {
  static const char *const t[] = {"true", "TRUE", "yes", "On", "1"};
  static const char *const f[] = {"false", "No", "off", "0", "FALSE"};
  static const char *const bad[] = {"", "2", "y", "truee", "off ", "nope"};
  bool b;
  for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
    b = false;
    g_assert_cmpint(config_parse_bool(t[i], &b), ==, 0);
    g_assert_true(b);
  }
  for (size_t i = 0; i < G_N_ELEMENTS(f); i++) {
    b = true;
    g_assert_cmpint(config_parse_bool(f[i], &b), ==, 0);
    g_assert_false(b);
  }
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
    g_assert_cmpint(config_parse_bool(bad[i], &b), ==, C8Y_EINVAL);
}

static void test_parse_int(void) {
  long long v = 0;
  g_assert_cmpint(config_parse_int("42", 0, 100, &v), ==, 0);
  g_assert_cmpint(v, ==, 42);
  g_assert_cmpint(config_parse_int("-5", -10, 10, &v), ==, 0);
  g_assert_cmpint(v, ==, -5);
  g_assert_cmpint(config_parse_int("0", 0, 0, &v), ==, 0);
  g_assert_cmpint(v, ==, 0);
  v = 7;
  g_assert_cmpint(config_parse_int("101", 0, 100, &v), ==, C8Y_EINVAL);
  g_assert_cmpint(config_parse_int("-1", 0, 100, &v), ==, C8Y_EINVAL);
  g_assert_cmpint(config_parse_int("", 0, 100, &v), ==, C8Y_EINVAL);
  g_assert_cmpint(config_parse_int(" 5", 0, 100, &v), ==, C8Y_EINVAL);
  g_assert_cmpint(config_parse_int("5x", 0, 100, &v), ==, C8Y_EINVAL);
  g_assert_cmpint(config_parse_int("0x10", 0, 100, &v), ==, C8Y_EINVAL);
  g_assert_cmpint(config_parse_int("99999999999999999999", 0, G_MAXINT64, &v),
                  ==, C8Y_EINVAL);
  g_assert_cmpint(v, ==, 7); /* untouched on error */
}

/* ---- valid configurations ---------------------------------------------- */

static void test_full(void) {
  char *dir = make_tmpdir();
  char *pw = write_file(dir, "pw.txt", "file-pass\nsecond line\n", 0600);
  char *path = write_file(dir, "agent.ini",
                          "; full configuration\n"
                          "[c8y]\n"
                          "tenant = t12345\n"
                          "user = device_dev1\n"
                          "password_file = pw.txt\n"
                          "host = mqtt.example.invalid\n"
                          "port = 9883\n"
                          "tls = yes\n"
                          "verify_hostname = true\n"
                          "ca_path = /etc/ssl/certs\n"
                          "cert_file = /etc/c8y/cert.pem\n"
                          "key_file = /etc/c8y/key.pem\n"
                          "keepalive = 120\n"
                          "qos = 0\n"
                          "reconnect_min_ms = 500\n"
                          "reconnect_max_ms = 30000\n"
                          "\n"
                          "[device]\n"
                          "id = dev1\n"
                          "template_id = myTemplates\n"
                          "name = My Device\n"
                          "type = c8y_Gateway\n"
                          "required_interval = 0\n"
                          "serial = SN-1\n"
                          "model = RPi 4\n"
                          "revision = 1.2 ; inline comment\n"
                          "[agent]\n"
                          "plugin_dir = /opt/plugins\n"
                          "state_dir = /var/tmp/c8y-state\n"
                          "log_level = debug\n"
                          "op_timeout = 30\n"
                          "queue_max_bytes = 2M\n"
                          "[plugin.shell]\n"
                          "allow = ls, df\n"
                          "timeout = 5\n",
                          0644);
  agent_config c;
  load_ok(path, &c);
  g_assert_cmpstr(c.path, ==, path);
  g_assert_false(c.local_sim);
  g_assert_cmpstr(c.tenant, ==, "t12345");
  g_assert_cmpstr(c.user, ==, "device_dev1");
  g_assert_cmpstr(c.password, ==, "file-pass");
  g_assert_cmpstr(c.password_file, ==, pw);
  g_assert_cmpstr(c.host, ==, "mqtt.example.invalid");
  g_assert_cmpint(c.port, ==, 9883);
  g_assert_true(c.tls);
  g_assert_true(c.verify_hostname);
  g_assert_cmpstr(c.ca_path, ==, "/etc/ssl/certs");
  g_assert_cmpstr(c.cert_file, ==, "/etc/c8y/cert.pem");
  g_assert_cmpstr(c.key_file, ==, "/etc/c8y/key.pem");
  g_assert_cmpint(c.keepalive, ==, 120);
  g_assert_cmpint(c.qos, ==, 0);
  g_assert_cmpint(c.reconnect_min_ms, ==, 500);
  g_assert_cmpint(c.reconnect_max_ms, ==, 30000);
  g_assert_cmpstr(c.device_id, ==, "dev1");
  g_assert_cmpstr(c.template_id, ==, "myTemplates");
  g_assert_cmpstr(c.device_name, ==, "My Device");
  g_assert_cmpstr(c.device_type, ==, "c8y_Gateway");
  g_assert_cmpint(c.required_interval, ==, 0);
  g_assert_cmpstr(c.hw_serial, ==, "SN-1");
  g_assert_cmpstr(c.hw_model, ==, "RPi 4");
  g_assert_cmpstr(c.hw_revision, ==, "1.2");
  g_assert_cmpstr(c.plugin_dir, ==, "/opt/plugins");
  g_assert_cmpstr(c.state_dir, ==, "/var/tmp/c8y-state");
  g_assert_cmpint(c.log_level, ==, LOG_LVL_DEBUG);
  g_assert_cmpint(c.op_timeout_s, ==, 30);
  g_assert_cmpint(c.queue_max_bytes, ==, 2 * 1024 * 1024);
  g_assert_cmpuint(c.nentries, ==, 2);
  g_assert_cmpstr(c.entries[0].section, ==, "plugin.shell");
  g_assert_cmpstr(c.entries[0].key, ==, "allow");
  g_assert_cmpstr(c.entries[0].value, ==, "ls, df");
  g_assert_cmpstr(c.entries[0].file, ==, path);
  g_assert_cmpuint(c.entries[0].line, ==, 34);
  g_assert_cmpstr(c.entries[1].key, ==, "timeout");
  g_assert_cmpuint(c.entries[1].line, ==, 35);
  g_assert_false(c.entries[0].used);
  config_free(&c);
  assert_zeroed(&c);
  config_free(&c); /* idempotent */
  rm_rf(dir);
  g_free(pw);
  g_free(path);
  g_free(dir);
}

static void test_local_sim_defaults(void) {
  char *dir = make_tmpdir();
  char *path = write_file(dir, "agent.ini", "; nothing set\n", 0644);
  agent_config c;
  load_ok(path, &c);
  g_assert_true(c.local_sim);
  g_assert_cmpstr(c.tenant, ==, CFG_LOCAL_TENANT);
  g_assert_cmpstr(c.user, ==, CFG_LOCAL_USER);
  g_assert_cmpstr(c.password, ==, CFG_LOCAL_PASSWORD);
  g_assert_null(c.password_file);
  g_assert_cmpstr(c.host, ==, CFG_LOCAL_HOST);
  g_assert_cmpint(c.port, ==, CFG_LOCAL_PORT);
  g_assert_false(c.tls);
  g_assert_true(c.verify_hostname);
  g_assert_null(c.ca_path);
  g_assert_null(c.cert_file);
  g_assert_null(c.key_file);
  g_assert_cmpint(c.keepalive, ==, 60);
  g_assert_cmpint(c.qos, ==, 1);
  g_assert_cmpint(c.reconnect_min_ms, ==, 1000);
  g_assert_cmpint(c.reconnect_max_ms, ==, 60000);
  g_assert_cmpstr(c.device_id, ==, "c8y-agent-local");
  g_assert_null(c.template_id);
  g_assert_cmpstr(c.device_name, ==, "c8y-agent c8y-agent-local");
  g_assert_cmpstr(c.device_type, ==, "c8y_Linux");
  g_assert_cmpint(c.required_interval, ==, 60);
  g_assert_null(c.hw_serial);
  g_assert_null(c.hw_model);
  g_assert_null(c.hw_revision);
  g_assert_nonnull(c.plugin_dir);
  g_assert_true(c.plugin_dir[0] == '/');
  g_assert_nonnull(c.state_dir);
  g_assert_true(c.state_dir[0] == '/');
  g_assert_cmpint(c.log_level, ==, LOG_LVL_INFO);
  g_assert_cmpint(c.op_timeout_s, ==, 600);
  g_assert_cmpint(c.queue_max_bytes, ==, 48 * 1024 * 1024);
  g_assert_cmpuint(c.nentries, ==, 0);
  config_free(&c);

  /* Explicit values still win in local-sim mode. */
  char *p2 = write_file(dir, "agent.ini",
                        "[c8y]\nuser = bob\nport = 1884\ntls = on\n"
                        "[device]\nid = sim-dev\n",
                        0644);
  load_ok(p2, &c);
  g_assert_true(c.local_sim);
  g_assert_cmpstr(c.tenant, ==, CFG_LOCAL_TENANT);
  g_assert_cmpstr(c.user, ==, "bob");
  g_assert_cmpint(c.port, ==, 1884);
  g_assert_true(c.tls);
  g_assert_cmpstr(c.device_id, ==, "sim-dev");
  g_assert_cmpstr(c.device_name, ==, "c8y-agent sim-dev");
  config_free(&c);
  rm_rf(dir);
  g_free(path);
  g_free(p2);
  g_free(dir);
}

static void test_tenant_defaults(void) {
  char *dir = make_tmpdir();
  char *path = write_file(dir, "agent.ini", BASE, 0600);
  agent_config c;
  load_ok(path, &c);
  g_assert_false(c.local_sim);
  g_assert_true(c.tls);
  g_assert_cmpint(c.port, ==, 8883);
  g_assert_cmpstr(c.password, ==, SECRET);
  g_assert_cmpint(c.plugin_max_producers, ==, 64);
  g_assert_cmpint(c.plugin_max_lines_per_s, ==, 1000);
  config_free(&c);

  /* Plain MQTT to a remote host would send the password in clear: only
   * with the explicit opt-in... */
  char *p2 = write_file(dir, "agent.ini", BASE "[c8y]\ntls = false\n", 0600);
  load_fail(p2, p2, 9, "[c8y] tls: false would send the password in clear");
  g_free(write_file(dir, "agent.ini",
                    BASE "[c8y]\ntls = false\nallow_plaintext = true\n", 0600));
  load_ok(p2, &c);
  g_assert_false(c.tls);
  g_assert_cmpint(c.port, ==, 1883);
  config_free(&c);
  /* ...or to a broker on this machine. */
  static const char *const local[] = {"127.0.0.1", "localhost", "::1",
                                      "127.8.9.10"};
  for (size_t i = 0; i < G_N_ELEMENTS(local); i++) {
    char *txt = g_strdup_printf("[c8y]\ntenant = t1\nuser = u\npassword = "
                                "p\nhost = %s\ntls = false\n[device]\nid = "
                                "d\n",
                                local[i]);
    g_free(write_file(dir, "agent.ini", txt, 0600));
    load_ok(p2, &c);
    g_assert_false(c.tls);
    config_free(&c);
    g_free(txt);
  }
  g_free(write_file(dir, "agent.ini",
                    "[c8y]\ntenant = t1\nuser = u\npassword = p\nhost = "
                    "127.0.0.1.example.com\ntls = false\n[device]\nid = d\n",
                    0600));
  load_fail(p2, p2, 6, "would send the password in clear");

  /* X.509 only: no tenant, user or password needed. */
  char *p3 = write_file(dir, "agent.ini",
                        "[c8y]\nhost = h.invalid\ncert_file = /c.pem\n"
                        "key_file = /k.pem\n[device]\nid = d\n",
                        0644);
  load_ok(p3, &c);
  g_assert_false(c.local_sim);
  g_assert_true(c.tls);
  g_assert_cmpint(c.port, ==, 8883);
  g_assert_null(c.tenant);
  g_assert_null(c.password);
  g_assert_null(config_username(&c));
  config_free(&c);
  rm_rf(dir);
  g_free(path);
  g_free(p2);
  g_free(p3);
  g_free(dir);
}

static void test_http_settings(void) {
  char *dir = make_tmpdir();
  agent_config c;
  /* default: https on the MQTT host, Basic, 1 GiB */
  char *p = write_file(dir, "agent.ini", BASE, 0600);
  load_ok(p, &c);
  g_assert_cmpstr(c.http_url, ==, "https://mqtt.example.invalid");
  g_assert_false(c.http_jwt);
  g_assert_cmpint(c.transfer_max_bytes, ==, 1024LL * 1024 * 1024);
  config_free(&c);
  g_free(p);
  /* explicit URL (trailing '/' dropped), JWT, a smaller cap */
  p = write_file(dir, "agent.ini",
                 BASE "[c8y]\nhttp_url = https://t1.example.com/\n"
                      "http_auth = jwt\n[agent]\ntransfer_max_bytes = 64M\n",
                 0600);
  load_ok(p, &c);
  g_assert_cmpstr(c.http_url, ==, "https://t1.example.com");
  g_assert_true(c.http_jwt);
  g_assert_cmpint(c.transfer_max_bytes, ==, 64LL * 1024 * 1024);
  config_free(&c);
  g_free(p);
  /* plain http against loopback is accepted */
  p = write_file(dir, "agent.ini",
                 BASE "[c8y]\nhttp_url = http://127.0.0.1:8111\n", 0600);
  load_ok(p, &c);
  g_assert_cmpstr(c.http_url, ==, "http://127.0.0.1:8111");
  config_free(&c);
  g_free(p);
  /* certificate devices use a JWT; the local simulator its REST port */
  p = write_file(dir, "agent.ini",
                 "[c8y]\nhost = h.invalid\ncert_file = /c.pem\n"
                 "key_file = /k.pem\n[device]\nid = d\n",
                 0600);
  load_ok(p, &c);
  g_assert_true(c.http_jwt);
  g_assert_cmpstr(c.http_url, ==, "https://h.invalid");
  config_free(&c);
  g_free(p);
  p = write_file(dir, "agent.ini", "[agent]\nlog_level = info\n", 0600);
  load_ok(p, &c);
  g_assert_cmpstr(c.http_url, ==, CFG_LOCAL_HTTP_URL);
  g_assert_false(c.http_jwt);
  config_free(&c);
  g_free(p);
  rm_rf(dir);
  g_free(dir);
}

static void test_indented_lines(void) {
  /* inih would take an indented line as a continuation of the previous
   * value; we want indentation to be insignificant. */
  char *dir = make_tmpdir();
  char *path = write_file(dir, "agent.ini",
                          "[c8y]\n  host = h1\n    port = 1999\n"
                          "\t[device]\n\tid = x\n",
                          0644);
  agent_config c;
  load_ok(path, &c);
  g_assert_cmpstr(c.host, ==, "h1");
  g_assert_cmpint(c.port, ==, 1999);
  g_assert_cmpstr(c.device_id, ==, "x");
  config_free(&c);
  rm_rf(dir);
  g_free(path);
  g_free(dir);
}

static void test_queue_sizes(void) {
  static const struct {
    const char *in;
    long long want;
  } ok[] = {{"1024", 1024},     {"1K", 1024},      {"4k", 4096},
            {"3M", 3LL << 20},  {"2G", 2LL << 30}, {"5MiB", 5LL << 20},
            {"64G", 64LL << 30}};
  char *dir = make_tmpdir();
  for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
    char *txt = g_strdup_printf("[agent]\nqueue_max_bytes = %s\n", ok[i].in);
    char *path = write_file(dir, "agent.ini", txt, 0644);
    agent_config c;
    load_ok(path, &c);
    g_assert_cmpint(c.queue_max_bytes, ==, ok[i].want);
    config_free(&c);
    g_free(txt);
    g_free(path);
  }
  rm_rf(dir);
  g_free(dir);
}

/* ---- errors ----------------------------------------------------------------
 */

typedef struct {
  const char *name;
  const char *text;
  unsigned line; /* 0: "<file>: " */
  const char *needle;
} err_case;

static const err_case err_cases[] = {
    {"unknown_section", "[c8y]\n[foo]\nbar = 1\n", 3,
     "[foo] bar: unknown section"},
    {"unknown_key", "[c8y]\nhots = x\n", 2, "[c8y] hots: unknown key"},
    {"unknown_key_device", "[device]\nid = a\nserial_no = 1\n", 3,
     "[device] serial_no: unknown key"},
    {"outside_section", "port = 1\n", 1, "[] port: key outside any section"},
    {"port_not_int", "[c8y]\nport = 88a\n", 2,
     "[c8y] port: '88a' is not an integer"},
    {"port_range", "[c8y]\nport = 70000\n", 2,
     "[c8y] port: 70000 is out of range"},
    {"keepalive_low", "[c8y]\n\nkeepalive = 4\n", 3,
     "[c8y] keepalive: 4 is out of range (5..3600)"},
    {"keepalive_high", "[c8y]\nkeepalive = 3601\n", 2,
     "[c8y] keepalive: 3601 is out of range"},
    {"qos_3", "[c8y]\nqos = 3\n", 2, "[c8y] qos: 3 is out of range"},
    {"bad_bool", "[c8y]\ntls = maybe\n", 2,
     "[c8y] tls: 'maybe' is not a boolean"},
    {"bad_bool_verify", "[c8y]\nverify_hostname = 2\n", 2,
     "[c8y] verify_hostname:"},
    {"empty_device_id", "[device]\nid =\n", 2,
     "[device] id: must not be empty"},
    {"device_id_colon", "[device]\nid = a:b\n", 2,
     "[device] id: 'a:b' must not contain ':'"},
    {"device_id_comma", "[device]\nid = a,b\n", 2,
     "[device] id: not a usable device id: it contains ','"},
    {"device_id_quote", "[device]\nid = a\"b\n", 2,
     "[device] id: not a usable device id: it contains '\"'"},
    {"device_id_slash", "[device]\nid = evil/#\n", 2,
     "[device] id: not a usable device id: it contains '/'"},
    {"device_id_not_utf8", "[device]\nid = dev\xff\xfe\n", 2,
     "[device] id: not a usable device id: it is not valid UTF-8"},
    {"max_producers_zero", "[agent]\nplugin_max_producers = 0\n", 2,
     "[agent] plugin_max_producers: 0 is out of range"},
    {"max_lines_negative", "[agent]\nplugin_max_lines_per_s = -1\n", 2,
     "[agent] plugin_max_lines_per_s: -1 is out of range"},
    {"template_not_utf8", "[device]\ntemplate_id = x\xc3\n", 2,
     "[device] template_id: not a usable template id: it is not valid UTF-8"},
    {"template_colon", "[device]\ntemplate_id = x:y\n", 2,
     "[device] template_id:"},
    {"template_slash", "[device]\n\ntemplate_id = x/y\n", 3,
     "[device] template_id:"},
    {"tenant_slash", "[c8y]\ntenant = a/b\n", 2, "[c8y] tenant:"},
    {"interval_range", "[device]\nrequired_interval = 10081\n", 2,
     "[device] required_interval: 10081 is out of range (0..10080)"},
    {"bad_log_level", "[agent]\nlog_level = loud\n", 2,
     "[agent] log_level: unknown level 'loud'"},
    {"bad_queue_suffix", "[agent]\nqueue_max_bytes = 16X\n", 2,
     "[agent] queue_max_bytes: '16X' is not a size"},
    {"queue_too_small", "[agent]\nqueue_max_bytes = 10\n", 2,
     "[agent] queue_max_bytes: 10 is out of range"},
    {"queue_overflow", "[agent]\nqueue_max_bytes = 99999999999999999G\n", 2,
     "[agent] queue_max_bytes:"},
    {"op_timeout_zero", "[agent]\nop_timeout = 0\n", 2,
     "[agent] op_timeout: 0 is out of range"},
    {"both_passwords", BASE "[c8y]\npassword_file = /nonexistent/pw\n", 9,
     "[c8y] password_file: cannot be combined with password"},
    {"tenant_without_user",
     "[c8y]\ntenant = t1\nhost = h\npassword = " SECRET "\n[device]\nid = d\n",
     0, "[c8y] user: required when tenant is set"},
    {"missing_password", "[c8y]\ntenant = t1\nuser = u\nhost = h\n", 0,
     "[c8y] password: required"},
    {"missing_host", "[c8y]\ntenant = t1\nuser = u\npassword = " SECRET "\n", 0,
     "[c8y] host: required when tenant is set"},
    {"missing_device_id",
     "[c8y]\ntenant = t1\nuser = u\npassword = " SECRET "\nhost = h\n", 0,
     "[device] id: required when tenant is set"},
    {"cert_without_key", "[c8y]\nhost = h\ncert_file = c.pem\n", 3,
     "[c8y] key_file: required when cert_file is set"},
    {"key_without_cert", "[c8y]\nkey_file = k.pem\n", 2,
     "[c8y] cert_file: required when key_file is set"},
    {"cert_without_tls",
     "[c8y]\nhost = h\ntls = off\ncert_file = c\nkey_file = k\n[device]\n"
     "id = d\n",
     3, "[c8y] tls: must be true when cert_file is set"},
    {"reconnect_order",
     "[c8y]\nreconnect_min_ms = 5000\nreconnect_max_ms = 100\n", 3,
     "[c8y] reconnect_max_ms:"},
    {"bad_plugin_name", "[plugin.Foo-bar]\nx = 1\n", 2,
     "[plugin.Foo-bar] x: invalid plugin name"},
    {"empty_plugin_name", "[plugin.]\nx = 1\n", 2, "[plugin.] x:"},
    {"syntax_no_bracket", "[c8y]\nport = 1\n[device\n", 3, "syntax error"},
    {"syntax_no_equals", "[c8y]\njustaword\n", 2, "syntax error"},
    /* inih's error comes first: line 1, not the handler's line 2 */
    {"syntax_before_key_error", "[c8y\nfoo = 1\n", 1, "syntax error"},
    {"http_url_plain_remote", BASE "[c8y]\nhttp_url = http://t1.example.com\n",
     9,
     "[c8y] http_url: 'http://t1.example.com': plain http:// is only "
     "allowed against loopback"},
    {"http_url_scheme", BASE "[c8y]\nhttp_url = ftp://t1.example.com\n", 9,
     "[c8y] http_url: 'ftp://t1.example.com' must start with https://"},
    {"http_url_no_host", BASE "[c8y]\nhttp_url = https:///x\n", 9,
     "[c8y] http_url: 'https:///x' has no host"},
    {"http_auth_unknown", BASE "[c8y]\nhttp_auth = digest\n", 9,
     "[c8y] http_auth: 'digest' is not basic or jwt"},
    {"http_auth_basic_without_password",
     "[c8y]\nhost = h\ncert_file = /c.pem\nkey_file = /k.pem\n"
     "http_auth = basic\n[device]\nid = d\n",
     5, "[c8y] http_auth: basic needs a password"},
    {"transfer_too_small", "[agent]\ntransfer_max_bytes = 10\n", 2,
     "[agent] transfer_max_bytes: 10 is out of range"},
    {"long_section",
     "[plugin.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\n", 1,
     "section name longer than 49 characters"},
    {"api_bad_mode", "[api]\nmode = 0689\n", 2,
     "[api] mode: '0689' is not an octal file mode"},
    {"api_mode_too_big", "[api]\n\nmode = 1777\n", 3, "[api] mode:"},
    {"api_no_group", "[api]\ngroup = no-such-group-c8y\n", 2,
     "[api] group: no such group 'no-such-group-c8y'"},
    {"api_bad_bool", "[api]\nenabled = perhaps\n", 2, "[api] enabled:"},
    {"api_unknown_key", "[api]\nport = 1\n", 2, "[api] port: unknown key"},
    {"api_socket_too_long",
     "[api]\nsocket = /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
     2, "[api] socket: socket path /aaa"},
};

static void test_error_case(gconstpointer data) {
  const err_case *ec = data;
  char *dir = make_tmpdir();
  char *path = write_file(dir, "agent.ini", ec->text, 0600);
  load_fail(path, path, ec->line, ec->needle);
  rm_rf(dir);
  g_free(path);
  g_free(dir);
}

static void test_missing_file(void) {
  char *dir = make_tmpdir();
  char *path = g_build_filename(dir, "nope.ini", NULL);
  load_fail(path, path, 0, "cannot open");
  rm_rf(dir);
  g_free(path);
  g_free(dir);
}

static void test_nul_byte(void) {
  char *dir = make_tmpdir();
  static const char txt[] = "[c8y]\nhost = a\0b\n";
  char *path = write_file_len(dir, "agent.ini", txt, sizeof txt - 1, 0600);
  load_fail(path, path, 2, "NUL byte");
  rm_rf(dir);
  g_free(path);
  g_free(dir);
}

/* ---- long lines ------------------------------------------------------------
 */

static void test_long_line(void) {
  char *dir = make_tmpdir();
  /* "k = " + 195 chars = 199 characters: the longest accepted line */
  char *v195 = g_strnfill(195, 'v');
  char *txt = g_strdup_printf("[plugin.demo]\nk = %s\r\n", v195);
  char *path = write_file(dir, "agent.ini", txt, 0644);
  agent_config c;
  load_ok(path, &c);
  g_assert_cmpuint(c.nentries, ==, 1);
  g_assert_cmpstr(c.entries[0].value, ==, v195);
  config_free(&c);
  g_free(txt);
  g_free(path);

  char *v196 = g_strnfill(196, 'v');
  txt = g_strdup_printf("[plugin.demo]\nk = %s\nj = 1\n", v196);
  path = write_file(dir, "agent.ini", txt, 0644);
  load_fail(path, path, 2, "line longer than 199 characters");
  g_free(txt);
  g_free(path);

  /* a long last line without a newline */
  char *v300 = g_strnfill(300, 'x');
  txt = g_strdup_printf("[plugin.demo]\n; comment\n;%s", v300);
  path = write_file(dir, "agent.ini", txt, 0644);
  load_fail(path, path, 3, "line longer than 199 characters");
  g_free(txt);
  g_free(path);

  rm_rf(dir);
  g_free(v195);
  g_free(v196);
  g_free(v300);
  g_free(dir);
}

/* ---- conf.d -----------------------------------------------------------------
 */

static void test_confd(void) {
  char *dir = make_tmpdir();
  char *path = write_file(dir, "agent.ini",
                          "[c8y]\n"          /* 1 */
                          "keepalive = 30\n" /* 2 */
                          "qos = 0\n"        /* 3 */
                          "[plugin.demo]\n"  /* 4 */
                          "a = 1\n"          /* 5 */
                          "b = 2\n"          /* 6 */
                          "[plugin.other]\n" /* 7 */
                          "z = 9\n",         /* 8 */
                          0644);
  char *f10 = write_file(dir, "conf.d/10-first.ini",
                         "[c8y]\n"          /* 1 */
                         "keepalive = 40\n" /* 2 */
                         "[plugin.demo]\n"  /* 3 */
                         "a = 10\n"         /* 4 */
                         "c = 3\n",         /* 5 */
                         0644);
  char *f20 = write_file(dir, "conf.d/20-second.ini",
                         "; comment\n"             /* 1 */
                         "[c8y]\n"                 /* 2 */
                         "keepalive = 50\n"        /* 3 */
                         "[agent]\n"               /* 4 */
                         "plugin_dir = plugins\n", /* 5 */
                         0644);
  /* byte order: "9-..." sorts after "20-..." */
  char *f9 = write_file(dir, "conf.d/9-last.ini",
                        "[plugin.demo]\nb = 20\n[c8y]\nkeepalive = 55\n", 0644);
  /* none of these is a drop-in; each would fail to parse */
  char *n1 = write_file(dir, "conf.d/README", "not an ini [\n", 0644);
  char *n2 = write_file(dir, "conf.d/30-x.ini.bak", "junk\n", 0644);
  char *n3 = write_file(dir, "conf.d/.hidden.ini", "junk\n", 0644);
  char *d5 = g_build_filename(dir, "conf.d", "05-dir.ini", NULL);
  g_assert_cmpint(g_mkdir(d5, 0700), ==, 0);

  agent_config c;
  load_ok(path, &c);
  g_assert_cmpint(c.keepalive, ==, 55);
  g_assert_cmpint(c.qos, ==, 0);
  char *want_pd = g_build_filename(dir, "conf.d", "plugins", NULL);
  g_assert_cmpstr(c.plugin_dir, ==, want_pd);
  g_free(want_pd);

  g_assert_cmpuint(c.nentries, ==, 4);
  /* order of first appearance, values and places of the last writer */
  g_assert_cmpstr(c.entries[0].section, ==, "plugin.demo");
  g_assert_cmpstr(c.entries[0].key, ==, "a");
  g_assert_cmpstr(c.entries[0].value, ==, "10");
  g_assert_cmpstr(c.entries[0].file, ==, f10);
  g_assert_cmpuint(c.entries[0].line, ==, 4);
  g_assert_cmpstr(c.entries[1].key, ==, "b");
  g_assert_cmpstr(c.entries[1].value, ==, "20");
  g_assert_cmpstr(c.entries[1].file, ==, f9);
  g_assert_cmpuint(c.entries[1].line, ==, 2);
  g_assert_cmpstr(c.entries[2].section, ==, "plugin.other");
  g_assert_cmpstr(c.entries[2].key, ==, "z");
  g_assert_cmpstr(c.entries[2].file, ==, path);
  g_assert_cmpuint(c.entries[2].line, ==, 8);
  g_assert_cmpstr(c.entries[3].key, ==, "c");
  g_assert_cmpstr(c.entries[3].file, ==, f10);
  g_assert_cmpuint(c.entries[3].line, ==, 5);

  /* lookup marks used, and only the entry asked for */
  config_entry *e = config_plugin_lookup(&c, "demo", "b");
  g_assert_nonnull(e);
  g_assert_cmpstr(e->value, ==, "20");
  g_assert_true(e->used);
  g_assert_false(c.entries[0].used);
  g_assert_false(c.entries[2].used);
  g_assert_null(config_plugin_lookup(&c, "demo", "z"));
  g_assert_null(config_plugin_lookup(&c, "dem", "a"));
  g_assert_null(config_plugin_lookup(&c, "nope", "a"));
  config_free(&c);

  /* An error in a drop-in names the drop-in and its line; the winner's
   * place is what a later error refers to. */
  char *f15 = write_file(dir, "conf.d/15-bad.ini", "[c8y]\n\nport = x\n", 0644);
  load_fail(path, f15, 3, "[c8y] port:");
  g_assert_cmpint(remove(f15), ==, 0);
  f15 = (g_free(f15), write_file(dir, "conf.d/15-bad.ini",
                                 "[c8y]\nreconnect_max_ms = 500\n", 0644));
  char *f16 = write_file(dir, "conf.d/16-bad.ini",
                         "\n[c8y]\nreconnect_min_ms = 900\n"
                         "reconnect_max_ms = 800\n",
                         0644);
  load_fail(path, f16, 4, "[c8y] reconnect_max_ms:");

  rm_rf(dir);
  g_free(path);
  g_free(f10);
  g_free(f20);
  g_free(f9);
  g_free(f15);
  g_free(f16);
  g_free(n1);
  g_free(n2);
  g_free(n3);
  g_free(d5);
  g_free(dir);
}

/* ---- QoS 2 and verify_hostname warnings -------------------------------- */

static void test_qos2_kept(void) {
  if (g_test_subprocess()) {
    const char *dir = g_getenv("CFG_TEST_DIR");
    g_assert_nonnull(dir);
    char *path = g_build_filename(dir, "agent.ini", NULL);
    agent_config c;
    load_ok(path, &c);
    g_assert_cmpint(c.qos, ==, 2);
    g_assert_false(c.verify_hostname);
    config_free(&c);
    g_free(path);
    return;
  }
  char *dir = make_tmpdir();
  char *path = write_file(dir, "agent.ini",
                          "[c8y]\n\nqos = 2\nverify_hostname = off\n", 0644);
  g_setenv("CFG_TEST_DIR", dir, TRUE);
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed();
  char *want = g_strdup_printf("*%s:3: [c8y] qos: 2 is used for data and "
                               "s/ds; some Cumulocity endpoints (the newer "
                               "MQTT Service) refuse QoS 2*",
                               path);
  g_test_trap_assert_stderr(want);
  g_free(want);
  want = g_strdup_printf("*%s:4: [c8y] verify_hostname:*", path);
  g_test_trap_assert_stderr(want);
  g_free(want);
  g_unsetenv("CFG_TEST_DIR");
  rm_rf(dir);
  g_free(path);
  g_free(dir);
}

/* ---- permissions and secrecy -----------------------------------------------
 */

static void test_permissions(void) {
  char *dir = make_tmpdir();
  agent_config c;

  /* password= in a file others can read */
  char *path = write_file(dir, "agent.ini", BASE, 0644);
  load_fail(path, path, 4, "[c8y] password:");
  load_fail(path, path, 4, "is readable by others");
  char *chmod_hint = g_strdup_printf("run chmod 600 %s", path);
  load_fail(path, path, 4, chmod_hint);
  g_free(chmod_hint);
  g_assert_cmpint(chmod(path, 0640), ==, 0);
  load_fail(path, path, 4, "chmod 600");
  g_assert_cmpint(chmod(path, 0600), ==, 0);
  load_ok(path, &c);
  config_free(&c);
  g_free(path);

  /* the same in a drop-in */
  path = write_file(dir, "agent.ini", BASE, 0600);
  char *drop = write_file(dir, "conf.d/50-pw.ini",
                          "[c8y]\npassword = " SECRET "2\n", 0604);
  load_fail(path, drop, 2, "chmod 600");
  g_assert_cmpint(remove(drop), ==, 0);
  g_free(drop);
  g_free(path);

  /* password_file: private, first line, newline stripped */
  const char *pw_conf = "[c8y]\n"
                        "tenant = t1\n"
                        "user = u\n"
                        "password_file = pw\n"
                        "host = h\n"
                        "[device]\n"
                        "id = d\n";
  path = write_file(dir, "agent.ini", pw_conf, 0644);
  char *pw = write_file(dir, "pw", SECRET "\r\nline two\n", 0640);
  load_fail(path, path, 4, "[c8y] password_file:");
  char *hint = g_strdup_printf("%s is readable by others (mode 640); run "
                               "chmod 600 %s",
                               pw, pw);
  load_fail(path, path, 4, hint);
  g_free(hint);
  g_assert_cmpint(chmod(pw, 0600), ==, 0);
  load_ok(path, &c);
  g_assert_cmpstr(c.password, ==, SECRET);
  g_assert_cmpstr(c.password_file, ==, pw);
  config_free(&c);

  g_free(write_file(dir, "pw", SECRET, 0600)); /* no newline at all */
  load_ok(path, &c);
  g_assert_cmpstr(c.password, ==, SECRET);
  config_free(&c);

  g_free(write_file(dir, "pw", "\n" SECRET "\n", 0600));
  load_fail(path, path, 4, "is empty");
  g_free(write_file(dir, "pw", "", 0600));
  load_fail(path, path, 4, "is empty");
  g_assert_cmpint(remove(pw), ==, 0);
  load_fail(path, path, 4, "cannot open");

  /* without a password, a world-readable config is fine */
  g_free(path);
  path = write_file(dir, "agent.ini", "[device]\nid = d\n", 0644);
  load_ok(path, &c);
  config_free(&c);

  rm_rf(dir);
  g_free(pw);
  g_free(path);
  g_free(dir);
}

/* ---- client id / username ---------------------------------------------------
 */

/* A secret owned by someone else is under their control (they can rewrite
 * or chmod it at will): refused for the ini holding password= and for
 * password_file. */
static void test_secret_owner(void) {
  if (geteuid() != 0) {
    g_test_skip("needs root to chown a file to another user");
    return;
  }
  char *dir = make_tmpdir();
  char *path = write_file(dir, "agent.ini", BASE, 0600);
  g_assert_cmpint(chown(path, 65534, 65534), ==, 0);
  load_fail(path, path, 4, "owned by uid 65534; it must be owned by root or");
  char *pw = write_file(dir, "pw", SECRET "\n", 0600);
  g_assert_cmpint(chown(pw, 65534, 65534), ==, 0);
  char *txt = g_strdup_printf("[c8y]\ntenant = t1\nuser = u\npassword_file = "
                              "%s\nhost = h\n[device]\nid = d\n",
                              pw);
  g_free(write_file(dir, "agent.ini", txt, 0600));
  g_assert_cmpint(chown(path, 0, 0), ==, 0);
  load_fail(path, path, 4, "is owned by uid 65534; a secret must be owned");
  g_assert_cmpint(chown(pw, 0, 0), ==, 0);
  agent_config c;
  load_ok(path, &c);
  g_assert_cmpstr(c.password, ==, SECRET);
  config_free(&c);
  /* The client certificate's private key as well. */
  char *key = write_file(dir, "key.pem", "not really a key\n", 0600);
  g_assert_cmpint(chown(key, 65534, 65534), ==, 0);
  char *ktxt = g_strdup_printf("[c8y]\nhost = h.invalid\ncert_file = /c.pem\n"
                               "key_file = %s\n[device]\nid = d\n",
                               key);
  g_free(write_file(dir, "agent.ini", ktxt, 0600));
  load_fail(path, path, 4, "[c8y] key_file: ");
  g_assert_cmpint(chown(key, 0, 0), ==, 0);
  load_ok(path, &c);
  config_free(&c);
  g_free(ktxt);
  g_free(key);
  rm_rf(dir);
  g_free(txt);
  g_free(pw);
  g_free(path);
  g_free(dir);
}

static void test_client_id(void) {
  char *dir = make_tmpdir();
  agent_config c;
  char *path = write_file(dir, "agent.ini", BASE, 0600);
  load_ok(path, &c);
  char *s = config_client_id(&c);
  g_assert_cmpstr(s, ==, "d:dev1");
  free(s);
  s = config_username(&c);
  g_assert_cmpstr(s, ==, "t1/u");
  free(s);
  config_free(&c);
  g_free(path);

  path = write_file(dir, "agent.ini", BASE "template_id = tpl_1\n", 0600);
  load_ok(path, &c);
  s = config_client_id(&c);
  g_assert_cmpstr(s, ==, "d:dev1:tpl_1");
  free(s);
  config_free(&c);
  g_free(path);

  /* empty template_id unsets it */
  path = write_file(dir, "agent.ini", BASE "template_id =\n", 0600);
  load_ok(path, &c);
  g_assert_null(c.template_id);
  s = config_client_id(&c);
  g_assert_cmpstr(s, ==, "d:dev1");
  free(s);
  config_free(&c);
  g_free(path);

  path = write_file(dir, "agent.ini", "", 0600);
  load_ok(path, &c);
  s = config_client_id(&c);
  g_assert_cmpstr(s, ==, "d:c8y-agent-local");
  free(s);
  s = config_username(&c);
  g_assert_cmpstr(s, ==, CFG_LOCAL_TENANT "/" CFG_LOCAL_USER);
  free(s);
  config_free(&c);
  g_assert_null(config_client_id(&c));
  g_assert_null(config_username(&c));

  rm_rf(dir);
  g_free(path);
  g_free(dir);
}

/* ---- relative paths
 * ---------------------------------------------------------- */

static void check_resolved(const agent_config *c, const char *etc) {
  char *want = g_build_filename(etc, "secret", "pw", NULL);
  g_assert_cmpstr(c->password_file, ==, want);
  g_free(want);
  want = g_build_filename(etc, "ca", NULL);
  g_assert_cmpstr(c->ca_path, ==, want);
  g_free(want);
  g_assert_cmpstr(c->cert_file, ==, "/abs/cert.pem");
  want = g_build_filename(etc, "keys", "key.pem", NULL);
  g_assert_cmpstr(c->key_file, ==, want);
  g_free(want);
  want = g_strdup_printf("%s/../plugins", etc);
  g_assert_cmpstr(c->plugin_dir, ==, want);
  g_free(want);
  g_assert_cmpstr(c->state_dir, ==, "/var/tmp/x");
  g_assert_cmpstr(c->password, ==, SECRET);
}

static void test_relative_paths(void) {
  char *dir = make_tmpdir();
  char *etc = g_build_filename(dir, "etc", NULL);
  char *path = write_file(dir, "etc/agent.ini",
                          "[c8y]\n"
                          "tenant = t1\n"
                          "user = u\n"
                          "password_file = secret/pw\n"
                          "host = h\n"
                          "ca_path = ca\n"
                          "cert_file = /abs/cert.pem\n"
                          "key_file = keys/key.pem\n"
                          "[device]\n"
                          "id = d\n"
                          "[agent]\n"
                          "plugin_dir = ../plugins\n"
                          "state_dir = /var/tmp/x\n",
                          0644);
  char *pw = write_file(dir, "etc/secret/pw", SECRET "\n", 0600);
  agent_config c;
  load_ok(path, &c);
  check_resolved(&c, etc);
  config_free(&c);

  /* a relative main path resolves against the cwd at load time */
  char *cwd = g_get_current_dir();
  g_assert_cmpint(chdir(dir), ==, 0);
  char err[512] = "";
  int rc = config_load("etc/agent.ini", &c, err, sizeof err);
  g_assert_cmpint(chdir(cwd), ==, 0);
  g_assert_cmpint(rc, ==, 0);
  g_assert_cmpstr(c.path, ==, "etc/agent.ini");
  check_resolved(&c, etc);
  config_free(&c);

  /* and errors name the file as given */
  g_assert_cmpint(chmod(pw, 0644), ==, 0);
  g_assert_cmpint(chdir(etc), ==, 0);
  memset(&c, 0x5a, sizeof c);
  rc = config_load("agent.ini", &c, err, sizeof err);
  g_assert_cmpint(chdir(cwd), ==, 0);
  g_assert_cmpint(rc, ==, C8Y_EINVAL);
  assert_zeroed(&c);
  g_assert_true(g_str_has_prefix(err, "agent.ini:4: [c8y] password_file: "));
  g_assert_nonnull(strstr(err, pw)); /* resolved path in the chmod hint */
  g_assert_null(strstr(err, SECRET));

  rm_rf(dir);
  g_free(cwd);
  g_free(pw);
  g_free(path);
  g_free(etc);
  g_free(dir);
}

/* Secrets never show up in any error, whatever goes wrong around them. */
static void test_password_never_in_err(void) {
  static const char *const texts[] = {
      "[c8y]\npassword = " SECRET "\ntenant = t\n",
      "[c8y]\npassword = " SECRET "\n[device]\npassword = " SECRET "\n",
      "[c8y]\npassword = " SECRET " ; " SECRET "\nport = x\n",
      "[c8y]\npassword " SECRET "\n",
      "[c8y]\npassword = " SECRET "\n[" SECRET "\n",
  };
  char *dir = make_tmpdir();
  for (size_t i = 0; i < G_N_ELEMENTS(texts); i++) {
    for (int pass = 0; pass < 2; pass++) {
      char *path = write_file(dir, "agent.ini", texts[i], pass ? 0644 : 0600);
      agent_config c;
      char err[512] = "";
      g_assert_cmpint(config_load(path, &c, err, sizeof err), ==, C8Y_EINVAL);
      g_test_message("err: %s", err);
      g_assert_cmpuint(strlen(err), >, 0);
      g_assert_null(strstr(err, SECRET));
      g_free(path);
    }
  }
  /* a tiny buffer is still terminated */
  char *path = write_file(dir, "agent.ini", texts[0], 0600);
  agent_config c;
  char small[8];
  memset(small, 'x', sizeof small);
  g_assert_cmpint(config_load(path, &c, small, sizeof small), ==, C8Y_EINVAL);
  g_assert_cmpuint(strlen(small), <, sizeof small);
  g_assert_cmpint(config_load(path, &c, NULL, 0), ==, C8Y_EINVAL);
  g_free(path);
  rm_rf(dir);
  g_free(dir);
}

/* [c8y] bootstrap: no tenant needed, the bootstrap password is. */
#define BS_BASE                                                                \
  "[c8y]\n"                                                                    \
  "bootstrap = true\n"                                                         \
  "host = mqtt.example.invalid\n"                                              \
  "[device]\n"                                                                 \
  "id = dev1\n"

static void test_bootstrap_keys(void) {
  char *dir = make_tmpdir();
  char *path =
      write_file(dir, "agent.ini",
                 BS_BASE "[c8y]\nbootstrap_password = " SECRET "\n", 0600);
  agent_config c;
  load_ok(path, &c);
  g_assert_true(c.bootstrap);
  g_assert_false(c.local_sim);
  g_assert_null(c.tenant);
  g_assert_cmpstr(c.bootstrap_user, ==, "management/devicebootstrap");
  g_assert_cmpstr(c.bootstrap_password, ==, SECRET);
  g_assert_cmpint(c.cert_warn_days, ==, 30);
  g_assert_true(c.tls);
  g_assert_cmpint(c.port, ==, 8883);
  config_free(&c);
  g_free(path);

  /* The password is required, from one of the two keys. */
  path = write_file(dir, "agent.ini", BS_BASE, 0600);
  load_fail(path, path, 2,
            "[c8y] bootstrap_password: required when "
            "bootstrap is true");
  g_free(path);
  char *pw = write_file(dir, "bs-pw", SECRET "\n", 0600);
  char *text = g_strdup_printf(BS_BASE "[c8y]\nbootstrap_password_file = %s\n"
                                       "bootstrap_user = other/boot\n"
                                       "cert_expiry_warn_days = 0\n",
                               pw);
  path = write_file(dir, "agent.ini", text, 0600);
  load_ok(path, &c);
  g_assert_cmpstr(c.bootstrap_password, ==, SECRET);
  g_assert_cmpstr(c.bootstrap_user, ==, "other/boot");
  g_assert_cmpint(c.cert_warn_days, ==, 0);
  config_free(&c);
  g_free(path);
  g_free(text);
  g_assert_cmpint(chmod(pw, 0644), ==, 0);
  text = g_strdup_printf(BS_BASE "[c8y]\nbootstrap_password_file = %s\n", pw);
  path = write_file(dir, "agent.ini", text, 0600);
  load_fail(path, path, 7, "readable by others");
  g_free(path);
  g_free(text);
  text = g_strdup_printf(BS_BASE "[c8y]\nbootstrap_password = x\n"
                                 "bootstrap_password_file = %s\n",
                         pw);
  path = write_file(dir, "agent.ini", text, 0600);
  load_fail(path, path, 8, "cannot be combined with bootstrap_password");
  g_free(path);
  g_free(text);
  path = write_file(dir, "agent.ini",
                    BS_BASE "[c8y]\nbootstrap_password = x\n"
                            "bootstrap_user = nouser\n",
                    0600);
  load_fail(path, path, 8, "must be <tenant>/<user>");
  g_free(path);
  /* Without host, bootstrap says why host is needed. */
  path = write_file(dir, "agent.ini",
                    "[c8y]\nbootstrap = true\nbootstrap_password = x\n"
                    "[device]\nid = d\n",
                    0600);
  load_fail(path, path, 0, "[c8y] host: required when bootstrap is true");
  g_free(path);
  g_free(pw);
  rm_rf(dir);
  g_free(dir);
}

/* The agent.ini shipped to users loads as is (local simulator) and documents
 * every key. */
static void test_shipped_default(void) {
  static const char *const keys[] = {"tenant",
                                     "user",
                                     "password",
                                     "password_file",
                                     "host",
                                     "port",
                                     "tls",
                                     "verify_hostname",
                                     "ca_path",
                                     "cert_file",
                                     "key_file",
                                     "keepalive",
                                     "qos",
                                     "reconnect_min_ms",
                                     "reconnect_max_ms",
                                     "bootstrap",
                                     "bootstrap_user",
                                     "bootstrap_password",
                                     "bootstrap_password_file",
                                     "cert_expiry_warn_days",
                                     "id",
                                     "template_id",
                                     "name",
                                     "type",
                                     "required_interval",
                                     "serial",
                                     "model",
                                     "revision",
                                     "plugin_dir",
                                     "state_dir",
                                     "log_level",
                                     "op_timeout",
                                     "queue_max_bytes",
                                     "allow_plaintext",
                                     "plugin_max_producers",
                                     "plugin_max_lines_per_s"};
  const char *src = g_getenv("C8Y_SOURCE_DIR");
  if (!src) {
    g_test_skip("C8Y_SOURCE_DIR not set");
    return;
  }
  char *shipped = g_build_filename(src, "config", "agent.ini", NULL);
  char *text = NULL;
  GError *e = NULL;
  g_file_get_contents(shipped, &text, NULL, &e);
  g_assert_no_error(e);
  for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
    char *want = g_strdup_printf("\n;%s =", keys[i]);
    if (!strstr(text, want))
      g_test_message("not documented: %s", keys[i]);
    g_assert_nonnull(strstr(text, want));
    g_free(want);
  }
  char *dir = make_tmpdir();
  char *path = write_file(dir, "agent.ini", text, 0644);
  agent_config c;
  load_ok(path, &c);
  g_assert_true(c.local_sim);
  g_assert_cmpstr(c.host, ==, CFG_LOCAL_HOST);
  g_assert_cmpint(c.port, ==, CFG_LOCAL_PORT);
  g_assert_cmpstr(c.device_id, ==, "c8y-agent-local");
  g_assert_cmpuint(c.nentries, ==, 0);
  config_free(&c);
  rm_rf(dir);
  g_free(path);
  g_free(dir);
  g_free(text);
  g_free(shipped);
}

/* [api]: defaults follow the mode of operation; values are taken as set. */
static void test_api(void) {
  char *dir = make_tmpdir();
  char *path = write_file(dir, "agent.ini", "[agent]\nstate_dir = st\n", 0600);
  agent_config c;
  load_ok(path, &c);
  g_assert_true(c.api_enabled);
  char *want = g_build_filename(dir, "st", "api.sock", NULL);
  g_assert_cmpstr(c.api_socket, ==, want); /* local simulator: state dir */
  g_free(want);
  g_assert_cmpuint(c.api_mode, ==, 0660);
  g_assert_null(c.api_socket_alt);
  g_assert_null(c.api_group);
  g_assert_cmpint(c.api_gid, ==, -1);
  config_free(&c);
  g_free(path);

  path = write_file(dir, "agent.ini", BASE, 0600);
  load_ok(path, &c);
  g_assert_false(c.local_sim);
  g_assert_cmpstr(c.api_socket, ==, "/run/c8y-agent/api.sock");
  /* where the agent goes when it cannot create the runtime dir */
  char *alt = g_build_filename(c.state_dir, "api.sock", NULL);
  g_assert_cmpstr(c.api_socket_alt, ==, alt);
  g_free(alt);
  config_free(&c);
  g_free(path);

  struct group *g = getgrgid(getegid());
  g_assert_nonnull(g);
  char *text = g_strdup_printf("[api]\nenabled = no\nsocket = run/x.sock\n"
                               "mode = 0600\ngroup = %s\n",
                               g->gr_name);
  path = write_file(dir, "agent.ini", text, 0600);
  load_ok(path, &c);
  g_assert_false(c.api_enabled);
  want = g_build_filename(dir, "run", "x.sock", NULL);
  g_assert_cmpstr(c.api_socket, ==, want); /* relative to the file */
  g_free(want);
  g_assert_cmpuint(c.api_mode, ==, 0600);
  g_assert_null(c.api_socket_alt); /* a path set by hand is the only one */
  g_assert_cmpstr(c.api_group, ==, g->gr_name);
  g_assert_cmpint(c.api_gid, ==, (long long)getegid());
  config_free(&c);
  g_free(text);
  g_free(path);

  /* the shipped file documents every [api] key */
  const char *src = g_getenv("C8Y_SOURCE_DIR");
  if (src) {
    char *shipped = g_build_filename(src, "config", "agent.ini", NULL);
    g_assert_true(g_file_get_contents(shipped, &text, NULL, NULL));
    g_assert_nonnull(strstr(text, "\n[api]\n"));
    const char *keys[] = {"enabled", "socket", "mode", "group"};
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
      char *k = g_strdup_printf("\n;%s =", keys[i]);
      g_assert_nonnull(strstr(strstr(text, "\n[api]\n"), k));
      g_free(k);
    }
    g_free(text);
    g_free(shipped);
  }
  rm_rf(dir);
  g_free(dir);
}

/* ---- what a reload cannot apply ------------------------------------------
 */

/* config_restart_only_change between BASE + before and BASE + after. */
static const char *restart_change(const char *before, const char *after) {
  char *dir = make_tmpdir();
  agent_config running, loaded;
  char *text = g_strconcat(BASE, before, NULL);
  char *path = write_file(dir, "agent.ini", text, 0600);
  load_ok(path, &running);
  g_free(text);
  g_free(path);
  text = g_strconcat(BASE, after, NULL);
  path = write_file(dir, "agent.ini", text, 0600);
  load_ok(path, &loaded);
  const char *changed = config_restart_only_change(&running, &loaded);
  g_assert_true(config_restart_only_change(&running, &running) == NULL);
  config_free(&running);
  config_free(&loaded);
  g_free(text);
  g_free(path);
  rm_rf(dir);
  g_free(dir);
  return changed;
}

typedef struct restart_case {
  const char *key; /* what the change must be reported as */
  const char *before, *after;
} restart_case;

/* Every key the running session, queue, journal, HTTP client or local
 * socket was built from; port is pinned where a default would follow. */
static const restart_case restart_cases[] = {
    {"[c8y] tenant", "", "[c8y]\ntenant = t2\n"},
    {"[c8y] user", "", "[c8y]\nuser = u2\n"},
    {"[c8y] password", "", "[c8y]\npassword = another-secret\n"},
    {"[c8y] host", "", "[c8y]\nhost = other.example.invalid\n"},
    {"[c8y] port", "", "[c8y]\nport = 8884\n"},
    {"[c8y] tls", "[c8y]\nport = 8883\nallow_plaintext = true\n",
     "[c8y]\nport = 8883\nallow_plaintext = true\ntls = false\n"},
    {"[c8y] verify_hostname", "", "[c8y]\nverify_hostname = false\n"},
    {"[c8y] ca_path", "", "[c8y]\nca_path = /etc/ssl/other.pem\n"},
    {"[c8y] cert_file", "", "[c8y]\ncert_file = /c.pem\nkey_file = /k.pem\n"},
    {"[c8y] key_file", "[c8y]\ncert_file = /c.pem\nkey_file = /k.pem\n",
     "[c8y]\ncert_file = /c.pem\nkey_file = /k2.pem\n"},
    {"[c8y] keepalive", "", "[c8y]\nkeepalive = 30\n"},
    {"[c8y] http_url", "", "[c8y]\nhttp_url = https://rest.example.invalid\n"},
    {"[c8y] http_auth", "", "[c8y]\nhttp_auth = jwt\n"},
    {"[device] id", "", "id = dev2\n"},
    {"[device] template_id", "", "template_id = tpl\n"},
    {"[agent] state_dir", "", "[agent]\nstate_dir = /var/lib/other\n"},
    {"[agent] op_timeout", "", "[agent]\nop_timeout = 60\n"},
    {"[agent] queue_max_bytes", "", "[agent]\nqueue_max_bytes = 2M\n"},
    {"[agent] transfer_max_bytes", "", "[agent]\ntransfer_max_bytes = 2M\n"},
    {"[api] enabled", "", "[api]\nenabled = false\n"},
    {"[api] socket", "", "[api]\nsocket = /tmp/other.sock\n"},
    {"[api] mode", "", "[api]\nmode = 0600\n"},
};

static void test_restart_only_key(gconstpointer data) {
  const restart_case *c = data;
  g_assert_cmpstr(restart_change(c->before, c->after), ==, c->key);
}

static void test_restart_only_group(void) {
  struct group *g = getgrgid(getegid());
  g_assert_nonnull(g);
  char *group = g_strdup_printf("[api]\ngroup = %s\n", g->gr_name);
  g_assert_cmpstr(restart_change("", group), ==, "[api] group");
  g_free(group);
}

/* Keys a reload applies: a change of any of them alone is no reason to
 * refuse it. */
static void test_reloadable_keys(void) {
  static const char *const changes[] = {
      "[c8y]\nqos = 0\n",
      "[c8y]\nreconnect_min_ms = 500\n",
      "[c8y]\nreconnect_max_ms = 120000\n",
      "[c8y]\nbootstrap = true\n",
      "[c8y]\nbootstrap_user = t9/u9\n",
      "[c8y]\nbootstrap_password = bs-secret\n",
      "[c8y]\ncert_expiry_warn_days = 7\n",
      "[c8y]\nallow_plaintext = true\n",
      "name = other name\n",
      "type = other_type\n",
      "required_interval = 5\n",
      "serial = S1\n",
      "model = M1\n",
      "revision = R1\n",
      "[agent]\nplugin_dir = /tmp/other-plugins\n",
      "[agent]\nlog_level = debug\n",
      "[agent]\nstop_grace_ms = 100\n",
      "[agent]\nplugin_max_producers = 8\n",
      "[agent]\nplugin_max_lines_per_s = 10\n",
      "[plugin.shell]\nallow = true\n",
  };
  for (size_t i = 0; i < G_N_ELEMENTS(changes); i++) {
    g_test_message("change: %s", changes[i]);
    g_assert_null(restart_change("", changes[i]));
  }
}

/* The password is compared as loaded: moving the same secret from
 * password= to password_file= changes nothing, another secret does. */
static void test_restart_password_file(void) {
  char *dir = make_tmpdir();
  agent_config inline_pw, file_pw;
  char *path = write_file(dir, "agent.ini", BASE, 0600);
  load_ok(path, &inline_pw);
  g_free(path);
  path = write_file(dir, "agent.ini",
                    "[c8y]\ntenant = t1\nuser = u\npassword_file = pw\n"
                    "host = mqtt.example.invalid\n[device]\nid = dev1\n",
                    0600);
  char *pw = write_file(dir, "pw", SECRET "\n", 0600);
  load_ok(path, &file_pw);
  g_assert_null(config_restart_only_change(&inline_pw, &file_pw));
  config_free(&file_pw);
  g_free(pw);
  pw = write_file(dir, "pw", "another-secret\n", 0600);
  load_ok(path, &file_pw);
  g_assert_cmpstr(config_restart_only_change(&inline_pw, &file_pw), ==,
                  "[c8y] password");
  config_free(&file_pw);
  config_free(&inline_pw);
  g_free(pw);
  g_free(path);
  rm_rf(dir);
  g_free(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/config/api", test_api);
  g_test_add_func("/config/parse_bool", test_parse_bool);
  g_test_add_func("/config/http_settings", test_http_settings);
  g_test_add_func("/config/parse_int", test_parse_int);
  g_test_add_func("/config/full", test_full);
  g_test_add_func("/config/local_sim_defaults", test_local_sim_defaults);
  g_test_add_func("/config/tenant_defaults", test_tenant_defaults);
  g_test_add_func("/config/indented_lines", test_indented_lines);
  g_test_add_func("/config/queue_sizes", test_queue_sizes);
  for (size_t i = 0; i < G_N_ELEMENTS(err_cases); i++) {
    char *name = g_strdup_printf("/config/error/%s", err_cases[i].name);
    g_test_add_data_func(name, &err_cases[i], test_error_case);
    g_free(name);
  }
  g_test_add_func("/config/error/missing_file", test_missing_file);
  g_test_add_func("/config/error/nul_byte", test_nul_byte);
  g_test_add_func("/config/long_line", test_long_line);
  g_test_add_func("/config/confd", test_confd);
  g_test_add_func("/config/qos2_kept", test_qos2_kept);
  g_test_add_func("/config/permissions", test_permissions);
  g_test_add_func("/config/client_id", test_client_id);
  g_test_add_func("/config/secret_owner", test_secret_owner);
  g_test_add_func("/config/relative_paths", test_relative_paths);
  g_test_add_func("/config/password_never_in_err", test_password_never_in_err);
  g_test_add_func("/config/shipped_default", test_shipped_default);
  g_test_add_func("/config/bootstrap_keys", test_bootstrap_keys);
  for (size_t i = 0; i < G_N_ELEMENTS(restart_cases); i++) {
    /* "[c8y] tenant" -> /config/restart_only/c8y/tenant */
    char **parts = g_strsplit(restart_cases[i].key + 1, "] ", 2);
    char *name =
        g_strdup_printf("/config/restart_only/%s/%s", parts[0], parts[1]);
    g_strfreev(parts);
    g_test_add_data_func(name, &restart_cases[i], test_restart_only_key);
    g_free(name);
  }
  g_test_add_func("/config/restart_only/api/group", test_restart_only_group);
  g_test_add_func("/config/restart_only/reloadable", test_reloadable_keys);
  g_test_add_func("/config/restart_only/password_file",
                  test_restart_password_file);
  return g_test_run();
}
