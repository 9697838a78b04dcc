/* remote_access plugin on the real plugin host, against the simulator's
 * remote-access WebSocket endpoint (sim_ws, credentials checked by
 * sim_http's rule) and an echo server behind the "device". The test plays
 * the operator's end: what it writes into the simulator travels through the
 * tunnel to the echo server and back.
 *
 * After every session the process must hold as many fds and threads as
 * after the first one (the plugin's libwebsockets context and service
 * thread are made with the first session and live until unload). */
#include "plugin_test_util.h"
#include "sim_echo.h"
#include "sim_http.h"
#include "sim_ws.h"
#include "testhost.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <glib.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 20000
#define BIG (50u << 20) /* each way through the tunnel */

/* A loopback port nothing listens on. */
static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  g_assert_cmpint(bind(fd, (struct sockaddr *)&a, sizeof a), ==, 0);
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&a, &al), ==, 0);
  close(fd);
  return ntohs(a.sin_port);
}

/* ---- counting what the process holds ----------------------------------- */

static int count_dir(const char *path) {
  DIR *d = opendir(path);
  g_assert_nonnull(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - (strcmp(path, "/proc/self/fd") == 0); /* opendir's own fd */
}

typedef struct usage {
  int fds, threads;
} usage;

static usage usage_now(void) {
  return (usage){count_dir("/proc/self/fd"), count_dir("/proc/self/task")};
}

static gboolean usage_back(const void *ctx) {
  const usage *want = ctx;
  usage u = usage_now();
  return u.fds == want->fds && u.threads == want->threads;
}

/* ---- the fixture --------------------------------------------------------- */

typedef struct fx {
  sim_http *rest;
  sim_ws *ws;
  sim_echo echo;
  int dead_port;
  testhost *h;
  usage base;
  bool warm;
  unsigned keys;
} fx;

static unsigned char pattern(uint64_t i) {
  return (unsigned char)((i * 2654435761u) >> 24 ^ (i >> 16));
}

static void fx_host(fx *f, const char *key, const char *value);

/* key/value: one more [plugin.remote_access] key, or NULL. */
static void fx_start(fx *f, const char *password, const char *key,
                     const char *value) {
  memset(f, 0, sizeof *f);
  char err[256];
  sim_http_options ho = {.password = password};
  g_assert_cmpint(sim_http_start(&ho, &f->rest, err, sizeof err), ==, 0);
  sim_ws_options wo = {.auth = f->rest};
  g_assert_cmpint(sim_ws_start(&wo, &f->ws, err, sizeof err), ==, 0);
  g_assert_cmpint(sim_echo_start(&f->echo), ==, 0);
  f->dead_port = closed_port();
  fx_host(f, key, value);
}

/* A fresh agent with the plugin loaded (a restart is free + new). */
static void fx_host(fx *f, const char *key, const char *value) {
  f->h = testhost_new("dev1", NULL);
  testhost_set_platform(f->h, sim_ws_url(f->ws), NULL);
  char *targets =
      g_strdup_printf("127.0.0.1:%d,127.0.0.1:%d", f->echo.port, f->dead_port);
  testhost_set_config(f->h, "allowed_targets", targets);
  testhost_set_config(f->h, "connect_timeout", "10");
  if (key)
    testhost_set_config(f->h, key, value);
  g_free(targets);
  g_assert_cmpint(testhost_load(f->h, PLUGIN_PATH), ==, C8Y_OK);
}

static void fx_stop(fx *f) {
  testhost_free(f->h);
  sim_echo_stop(&f->echo);
  sim_ws_stop(f->ws);
  sim_http_stop(f->rest);
}

/* A 530 for a new key the platform knows; returns the key (g_free). */
static char *open_session(fx *f, int port, testhost_op_state want) {
  char *key = g_strdup_printf("eb5e9d13-1caa-486b-bdda-%012u", ++f->keys);
  sim_ws_add_key(f->ws, key);
  char *line = g_strdup_printf("530,dev1,127.0.0.1,%d,%s", port, key);
  testhost_op_state st = testhost_run_operation(f->h, line, WAIT_MS);
  if (st != want)
    g_test_message("530: %s", testhost_op_detail(f->h));
  g_assert_cmpint(st, ==, want);
  g_free(line);
  return key;
}

typedef struct session_end {
  testhost *h;
  const char *needle;
} session_end;

static gboolean logged(const void *ctx) {
  const session_end *e = ctx;
  return testhost_find_log(e->h, e->needle) != NULL;
}

/* The plugin logged the session's end, and fds and threads are back. */
static void assert_freed(fx *f, unsigned id) {
  char *needle = g_strdup_printf("session %u ended", id);
  session_end e = {f->h, needle};
  g_assert_true(ptu_wait_until(logged, &e, WAIT_MS));
  g_free(needle);
  if (f->warm && !ptu_wait_until(usage_back, &f->base, WAIT_MS)) {
    usage u = usage_now();
    g_test_message("fds %d (base %d), threads %d (base %d)", u.fds, f->base.fds,
                   u.threads, f->base.threads);
    g_assert_not_reached();
  }
}

static gboolean echo_idle(const void *ctx) {
  return atomic_load(&((const sim_echo *)ctx)->open) == 0;
}

/* ---- the operator's reader: checks every byte that comes back ---------- */

typedef struct reader {
  sim_ws *ws;
  const char *key;
  uint64_t want, got;
  bool mismatch;
} reader;

static void *read_back(void *arg) {
  reader *r = arg;
  static unsigned char buf[65536];
  while (r->got < r->want) {
    size_t n = sim_ws_recv(r->ws, r->key, buf, sizeof buf, WAIT_MS);
    if (n == 0)
      break;
    for (size_t i = 0; i < n; i++)
      if (buf[i] != pattern(r->got + i))
        r->mismatch = true;
    r->got += n;
  }
  return NULL;
}

static size_t send_pattern(fx *f, const char *key, uint64_t from, uint64_t len,
                           int timeout_ms) {
  static unsigned char chunk[1 << 20];
  uint64_t sent = 0;
  while (sent < len) {
    size_t n = len - sent < sizeof chunk ? (size_t)(len - sent) : sizeof chunk;
    for (size_t i = 0; i < n; i++)
      chunk[i] = pattern(from + sent + i);
    size_t took = sim_ws_send(f->ws, key, chunk, n, timeout_ms);
    sent += took;
    if (took < n)
      break;
  }
  return (size_t)sent;
}

/* The first session makes the plugin's context and thread: the baseline. */
static void warm_up(fx *f) {
  char *key = open_session(f, f->echo.port, TESTHOST_OP_SUCCEEDED);
  g_assert_true(sim_ws_wait_connected(f->ws, key, WAIT_MS));
  char ping[] = "ping";
  g_assert_cmpuint(sim_ws_send(f->ws, key, ping, 4, WAIT_MS), ==, 4);
  char pong[8] = "";
  size_t got = 0;
  while (got < 4) {
    size_t n = sim_ws_recv(f->ws, key, pong + got, 4 - got, WAIT_MS);
    g_assert_cmpuint(n, >, 0);
    got += n;
  }
  g_assert_cmpstr(pong, ==, "ping");
  sim_ws_close(f->ws, key);
  g_assert_true(ptu_wait_until(echo_idle, &f->echo, WAIT_MS));
  assert_freed(f, f->keys);
  f->base = usage_now();
  f->warm = true;
  g_free(key);
}

/* ---- tests --------------------------------------------------------------- */

static void test_announce(void) {
  fx f;
  fx_start(&f, NULL, NULL, NULL);
  g_assert_true(testhost_has_operation(f.h, "530"));
  g_assert_nonnull(testhost_find_line(f.h, "150,SSH,PASSTHROUGH"));
  fx_stop(&f);
}

static void test_fifty_megabytes_each_way(void) {
  fx f;
  fx_start(&f, NULL, NULL, NULL);
  warm_up(&f);
  char *key = open_session(&f, f.echo.port, TESTHOST_OP_SUCCEEDED);
  g_assert_true(sim_ws_wait_connected(f.ws, key, WAIT_MS));
  reader r = {.ws = f.ws, .key = key, .want = BIG};
  pthread_t t;
  g_assert_cmpint(pthread_create(&t, NULL, read_back, &r), ==, 0);
  g_assert_cmpuint(send_pattern(&f, key, 0, BIG, WAIT_MS), ==, BIG);
  pthread_join(t, NULL);
  g_assert_cmpuint(r.got, ==, BIG);
  g_assert_false(r.mismatch);
  g_assert_cmpuint(atomic_load(&f.echo.received), ==, BIG);
  sim_ws_close(f.ws, key);
  g_assert_true(ptu_wait_until(echo_idle, &f.echo, WAIT_MS));
  assert_freed(&f, f.keys);
  g_assert_nonnull(testhost_find_log(f.h, "the cloud closed the connection"));
  g_free(key);
  fx_stop(&f);
}

static void test_refused_target(void) {
  fx f;
  fx_start(&f, NULL, NULL, NULL);
  warm_up(&f);
  sim_ws_add_key(f.ws, "k-refused");
  g_assert_cmpint(
      testhost_run_operation(f.h, "530,dev1,10.0.0.67,22,k-refused", WAIT_MS),
      ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(
      strstr(testhost_op_detail(f.h), "target 10.0.0.67:22 is not allowed"));
  /* the allowed host on another port is refused as well */
  g_assert_cmpint(
      testhost_run_operation(f.h, "530,dev1,127.0.0.1,2222,k-refused", WAIT_MS),
      ==, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(f.h), "127.0.0.1:2222"));
  g_assert_false(sim_ws_wait_connected(f.ws, "k-refused", 100));
  g_assert_cmpuint(sim_ws_refused(f.ws, 404) + sim_ws_refused(f.ws, 401), ==,
                   0);
  g_assert_true(ptu_wait_until(usage_back, &f.base, WAIT_MS));
  fx_stop(&f);
}

static void test_unknown_key(void) {
  fx f;
  fx_start(&f, NULL, NULL, NULL);
  warm_up(&f);
  char *line =
      g_strdup_printf("530,dev1,127.0.0.1,%d,not-a-known-key", f.echo.port);
  g_assert_cmpint(testhost_run_operation(f.h, line, WAIT_MS), ==,
                  TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(f.h), "HTTP 404"));
  g_assert_cmpuint(sim_ws_refused(f.ws, 404), ==, 1);
  /* the target's connection made for it is closed again */
  g_assert_true(ptu_wait_until(echo_idle, &f.echo, WAIT_MS));
  f.keys++; /* session ids count 530s that got as far as connecting */
  assert_freed(&f, f.keys);
  g_free(line);
  fx_stop(&f);
}

static void test_wrong_credentials(void) {
  fx f;
  fx_start(&f, "not-the-device-password", NULL, NULL);
  char *key = open_session(&f, f.echo.port, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(f.h), "HTTP 401"));
  g_assert_cmpuint(sim_ws_refused(f.ws, 401), ==, 1);
  assert_freed(&f, f.keys);
  g_free(key);
  fx_stop(&f);
}

static void test_closed_port(void) {
  fx f;
  fx_start(&f, NULL, NULL, NULL);
  warm_up(&f);
  char *key = open_session(&f, f.dead_port, TESTHOST_OP_FAILED);
  char *want = g_strdup_printf("cannot connect to 127.0.0.1:%d", f.dead_port);
  g_assert_nonnull(strstr(testhost_op_detail(f.h), want));
  g_assert_false(sim_ws_wait_connected(f.ws, key, 100));
  assert_freed(&f, f.keys);
  g_free(want);
  g_free(key);
  fx_stop(&f);
}

static void test_cloud_closes_mid_transfer(void) {
  fx f;
  fx_start(&f, NULL, NULL, NULL);
  warm_up(&f);
  char *key = open_session(&f, f.echo.port, TESTHOST_OP_SUCCEEDED);
  g_assert_true(sim_ws_wait_connected(f.ws, key, WAIT_MS));
  /* 8 MB on its way, nothing read back: the tunnel is full when the
   * operator's end goes away */
  g_assert_cmpuint(send_pattern(&f, key, 0, 8u << 20, WAIT_MS), ==, 8u << 20);
  sim_ws_close(f.ws, key);
  g_assert_true(sim_ws_wait_closed(f.ws, key, WAIT_MS));
  g_assert_true(ptu_wait_until(echo_idle, &f.echo, WAIT_MS));
  assert_freed(&f, f.keys);
  /* the operation stays successful: no 502 after the 503 */
  g_assert_null(testhost_find_line(f.h, "502,c8y_RemoteAccessConnect"));
  g_free(key);
  fx_stop(&f);
}

static void test_target_closes(void) {
  fx f;
  fx_start(&f, NULL, NULL, NULL);
  warm_up(&f);
  atomic_store(&f.echo.mode, SIM_ECHO_CLOSE_AFTER);
  f.echo.close_after = 1 << 20;
  char *key = open_session(&f, f.echo.port, TESTHOST_OP_SUCCEEDED);
  g_assert_true(sim_ws_wait_connected(f.ws, key, WAIT_MS));
  send_pattern(&f, key, 0, 4u << 20, 2000);
  g_assert_true(sim_ws_wait_closed(f.ws, key, WAIT_MS));
  assert_freed(&f, f.keys);
  g_assert_nonnull(testhost_find_log(f.h, "the target closed the connection"));
  g_free(key);
  fx_stop(&f);
}

/* A target that does not read: the plugin stops reading the WebSocket, so
 * the operator's end cannot push 64 MB; only socket buffers and the
 * plugin's bounded rings hold what it could. */
static void test_stalled_target_backpressure(void) {
  fx f;
  fx_start(&f, NULL, NULL, NULL);
  warm_up(&f);
  atomic_store(&f.echo.mode, SIM_ECHO_STALL);
  char *key = open_session(&f, f.echo.port, TESTHOST_OP_SUCCEEDED);
  g_assert_true(sim_ws_wait_connected(f.ws, key, WAIT_MS));
  size_t took = send_pattern(&f, key, 0, 64u << 20, 3000);
  g_test_message("the stalled tunnel took %zu bytes", took);
  g_assert_cmpuint(took, <, 40u << 20);
  g_assert_cmpuint(sim_ws_queued(f.ws, key), >, 0);
  /* the target reads again: everything arrives, in order */
  atomic_store(&f.echo.release, true);
  reader r = {.ws = f.ws, .key = key, .want = took};
  read_back(&r);
  g_assert_cmpuint(r.got, ==, took);
  g_assert_false(r.mismatch);
  sim_ws_close(f.ws, key);
  g_assert_true(ptu_wait_until(echo_idle, &f.echo, WAIT_MS));
  assert_freed(&f, f.keys);
  g_free(key);
  fx_stop(&f);
}

static void test_max_sessions(void) {
  fx f;
  fx_start(&f, NULL, "max_sessions", "1");
  char *a = open_session(&f, f.echo.port, TESTHOST_OP_SUCCEEDED);
  char *b = open_session(&f, f.echo.port, TESTHOST_OP_FAILED);
  g_assert_nonnull(strstr(testhost_op_detail(f.h), "max_sessions"));
  sim_ws_close(f.ws, a);
  g_assert_true(ptu_wait_until(echo_idle, &f.echo, WAIT_MS));
  assert_freed(&f, 1);
  char *c = open_session(&f, f.echo.port, TESTHOST_OP_SUCCEEDED);
  sim_ws_close(f.ws, c);
  g_free(a);
  g_free(b);
  g_free(c);
  fx_stop(&f);
}

/* A session without traffic for idle_timeout is closed at both ends. */
static void test_idle_timeout(void) {
  fx f;
  fx_start(&f, NULL, "idle_timeout", "5");
  char *key = open_session(&f, f.echo.port, TESTHOST_OP_SUCCEEDED);
  g_assert_true(sim_ws_wait_connected(f.ws, key, WAIT_MS));
  g_assert_true(sim_ws_wait_closed(f.ws, key, WAIT_MS));
  g_assert_true(ptu_wait_until(echo_idle, &f.echo, WAIT_MS));
  assert_freed(&f, 1);
  g_assert_nonnull(testhost_find_log(f.h, "idle for 5 s"));
  g_free(key);
  fx_stop(&f);
}

/* Stopping the agent ends a running session: both ends see it close. */
static void test_stop_closes_sessions(void) {
  fx f;
  fx_start(&f, NULL, NULL, NULL);
  testhost_free(f.h);
  usage before = usage_now(); /* no agent, no plugin */
  fx_host(&f, NULL, NULL);
  char *key = open_session(&f, f.echo.port, TESTHOST_OP_SUCCEEDED);
  g_assert_true(sim_ws_wait_connected(f.ws, key, WAIT_MS));
  testhost_free(f.h);
  f.h = NULL;
  g_assert_true(sim_ws_wait_closed(f.ws, key, WAIT_MS));
  g_assert_true(ptu_wait_until(echo_idle, &f.echo, WAIT_MS));
  /* the plugin's thread and context are gone with it */
  g_assert_true(ptu_wait_until(usage_back, &before, WAIT_MS));
  g_free(key);
  fx_stop(&f);
}

static void test_bad_config(void) {
  const char *bad[][2] = {{"allowed_targets", "127.0.0.1"},
                          {"allowed_targets", "127.0.0.1:70000"},
                          {"allowed_targets", ""},
                          {"protocols", "SSH,RDP"},
                          {"max_sessions", "0"},
                          {"buffer_bytes", "1024"}};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    testhost *h = testhost_new("dev1", NULL);
    testhost_set_config(h, bad[i][0], bad[i][1]);
    g_assert_cmpint(testhost_load(h, PLUGIN_PATH), ==, C8Y_EINVAL);
    char *want = g_strdup_printf("%s:", bad[i][0]);
    g_assert_nonnull(testhost_find_log(h, want));
    g_free(want);
    testhost_free(h);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/remote_access/announce", test_announce);
  g_test_add_func("/remote_access/fifty-megabytes-each-way",
                  test_fifty_megabytes_each_way);
  g_test_add_func("/remote_access/refused-target", test_refused_target);
  g_test_add_func("/remote_access/unknown-key-404", test_unknown_key);
  g_test_add_func("/remote_access/wrong-credentials-401",
                  test_wrong_credentials);
  g_test_add_func("/remote_access/closed-port", test_closed_port);
  g_test_add_func("/remote_access/cloud-closes-mid-transfer",
                  test_cloud_closes_mid_transfer);
  g_test_add_func("/remote_access/target-closes", test_target_closes);
  g_test_add_func("/remote_access/stalled-target-backpressure",
                  test_stalled_target_backpressure);
  g_test_add_func("/remote_access/max-sessions", test_max_sessions);
  g_test_add_func("/remote_access/idle-timeout", test_idle_timeout);
  g_test_add_func("/remote_access/stop-closes-sessions",
                  test_stop_closes_sessions);
  g_test_add_func("/remote_access/bad-config", test_bad_config);
  return g_test_run();
}
