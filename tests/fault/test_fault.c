/* Fault injection: the real agent loses no accepted data across broker
 * kills, agent kills, cut connections and a blackholed network.
 *
 * Every test queues a burst of N lines "200,c8y_Seq,n,<i>" (the itest
 * plugin's `burst`) and, after the faults, requires every i in 1..N among
 * the lines the simulator received; duplicates are allowed (at-least-once)
 * and reported.
 *
 * The agent reaches the broker through tests/fault/proxy.c, which caps the
 * agent's upload rate. The agent packs ~800 of these lines per 16000-byte
 * publish and would drain 10000 of them in milliseconds on loopback; the
 * cap (outside the agent, which is not throttled in any way) stretches the
 * drain to seconds so every fault provably lands mid-stream: each one is
 * triggered by the bytes the proxy has forwarded and asserted to happen
 * while lines are still missing.
 *
 * Why a missing line means the agent lost it. mosquitto drops a publish
 * that has no subscriber, and after a broker restart the simulator's client
 * needs 2-3 s to subscribe again; a publish in that window would be acked
 * to the agent and vanish. So the broker is only reachable while the
 * simulator is subscribed: before each kill the proxy switches to REFUSE
 * (new connections are reset), and only after sim_broker_start has seen the
 * simulator subscribed again does it pass connections through. While the
 * agent holds a connection, the simulator is subscribed. mosquitto hands a
 * QoS 1 message to connected subscribers before it sends the PUBACK, so an
 * acked batch has reached the simulator's socket by the time the agent may
 * delete it. The blackhole resets every connection that lived through it
 * when lifted, so bytes stuck in it cannot be delivered late in place of the
 * agent's own resend. */
#include "fixture.h"
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>

#define BURST 10000
#define RATE 64000 /* bytes/s, agent -> broker */
#define KEEPALIVE 5
#define SEQ_PREFIX "200,c8y_Seq,n,"

/* ---- counting the burst ---- */

typedef struct seq_count {
  int n;
  guint *hits;   /* hits[i] for i in 1..n */
  size_t next;   /* next simulator message to look at */
  long lines;    /* Seq lines received */
  long distinct; /* distinct i received */
} seq_count;

static void seq_init(seq_count *sc, int n) {
  memset(sc, 0, sizeof *sc);
  sc->n = n;
  sc->hits = g_new0(guint, (size_t)n + 1);
}

static void seq_free(seq_count *sc) { g_free(sc->hits); }

static void seq_scan(seq_count *sc, sim *s) {
  size_t count = sim_message_count(s);
  for (; sc->next < count; sc->next++) {
    const sim_message *m = sim_message_at(s, sc->next);
    if (strcmp(m->topic, "s/us") != 0)
      continue;
    char **lines = g_strsplit(m->payload, "\n", -1);
    for (char **l = lines; *l; l++) {
      if (!g_str_has_prefix(*l, SEQ_PREFIX))
        continue;
      char *end;
      long i = strtol(*l + strlen(SEQ_PREFIX), &end, 10);
      if (*end || i < 1 || i > sc->n)
        g_error("message %zu: malformed burst line '%s'", sc->next, *l);
      if (sc->hits[i]++ == 0)
        sc->distinct++;
      sc->lines++;
    }
    g_strfreev(lines);
  }
}

/* Waits until all n arrived; then checks and reports. */
static void seq_expect_complete(seq_count *sc, fx *f, int timeout_ms,
                                const char *what) {
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  seq_scan(sc, f->s);
  while (sc->distinct < sc->n && g_get_monotonic_time() < end) {
    g_usleep(100 * 1000);
    seq_scan(sc, f->s);
  }
  long lost = sc->n - sc->distinct;
  if (lost > 0) {
    GString *miss = g_string_new(NULL);
    int shown = 0;
    for (int i = 1; i <= sc->n && shown < 20; i++)
      if (!sc->hits[i]) {
        g_string_append_printf(miss, " %d", i);
        shown++;
      }
    char *log = agent_proc_log(f->a);
    g_printerr("%s: %ld of %d lines lost, first:%s\nagent log:\n%s\n", what,
               lost, sc->n, miss->str, log);
    g_free(log);
    g_string_free(miss, TRUE);
  }
  g_assert_cmpint(lost, ==, 0);
  g_test_message("%s: %d lines, 0 lost, duplicates: %ld", what, sc->n,
                 sc->lines - sc->distinct);
}

/* ---- agent log ---- */

static int count_in(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; p && (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

static int log_count(fx *f, const char *needle) {
  char *log = agent_proc_log(f->a);
  int n = count_in(log, needle);
  g_free(log);
  return n;
}

/* Waits until `needle` occurs at least `want` times; returns the wait in ms
 * or -1 on timeout. */
static int wait_log_count(fx *f, const char *needle, int want, int timeout_ms) {
  gint64 t0 = g_get_monotonic_time();
  for (;;) {
    int ms = (int)((g_get_monotonic_time() - t0) / 1000);
    if (log_count(f, needle) >= want)
      return ms;
    if (ms > timeout_ms)
      return -1;
    g_usleep(20 * 1000);
  }
}

#define LOST_NEEDLE " lost: " /* "connection to <uri> lost: <cause>" */

/* ---- set-up ---- */

static proxy *start_proxy(fx *f) {
  proxy *p;
  char err[256];
  if (proxy_start(sim_port(f->s), &p, err, sizeof err) != 0)
    g_error("%s", err);
  proxy_set_rate(p, RATE);
  return p;
}

static void make_agent(fx *f, proxy *p, int burst) {
  char *ini = g_strdup_printf(
      "[c8y]\ntenant = t1\nuser = device\npassword = secret\n"
      "host = 127.0.0.1\nport = %d\ntls = false\nkeepalive = %d\n"
      "reconnect_min_ms = 100\nreconnect_max_ms = 1000\n"
      "[device]\nid = " FX_DEVICE "\n"
      "[agent]\nplugin_dir = %s\nlog_level = debug\n"
      "queue_max_bytes = 67108864\n"
      "[plugin.itest]\nburst = %d\n",
      proxy_port(p), KEEPALIVE, ITEST_PLUGIN_DIR, burst);
  f->a = agent_proc_new(ini);
  g_free(ini);
  g_assert_nonnull(f->a);
}

static void up(fx *f, proxy **p) {
  fx_start_sim(f);
  *p = start_proxy(f);
  make_agent(f, *p, BURST);
  fx_start_agent(f);
  if (sim_wait_line(f->s, "s/us", "500", 0, 20000) < 0) {
    char *log = agent_proc_log(f->a);
    g_error("agent never sent 500; log:\n%s", log);
  }
  g_assert_true(agent_proc_wait_log(f->a, "itest: burst of 10000 queued", 100));
}

static void down(fx *f, proxy *p) {
  fx_down(f); /* the agent first: it must not see the proxy vanish */
  proxy_stop(p);
}

/* Waits until the proxy forwarded `bytes` more than `base` upstream. */
static void wait_bytes_up(fx *f, proxy *p, seq_count *sc,
                          unsigned long long base, unsigned long long bytes) {
  for (int i = 0; i < 1500; i++) {
    if (proxy_bytes_up(p) - base >= bytes)
      return;
    g_usleep(10 * 1000);
  }
  /* A queue that ran dry early has usually dropped what was in flight. */
  seq_scan(sc, f->s);
  char *log = agent_proc_log(f->a);
  g_error("the agent sent only %llu of %llu bytes within 15 s with %ld of "
          "%d lines received (%d missing); log:\n%s",
          proxy_bytes_up(p) - base, bytes, sc->distinct, sc->n,
          sc->n - (int)sc->distinct, log);
}

/* The drain must still be running when a fault hits. */
static void expect_mid_drain(seq_count *sc, fx *f, const char *fault) {
  seq_scan(sc, f->s);
  g_test_message("%s with %ld of %d lines received", fault, sc->distinct,
                 sc->n);
  g_assert_cmpint(sc->distinct, <, sc->n);
}

/* A reconnect is complete when the simulator sees 100 and then 500 again. */
static void expect_reconnect(fx *f, size_t from, int timeout_ms) {
  long d = sim_wait_line(f->s, "s/us", "100,", from, timeout_ms);
  if (d < 0) {
    char *log = agent_proc_log(f->a);
    g_error("no new 100 within %d ms; log:\n%s", timeout_ms, log);
  }
  g_assert_cmpint(sim_wait_line(f->s, "s/us", "500", (size_t)d, 10000), >=, 0);
}

/* An operation created after the faults still completes. */
static void expect_operation(fx *f) {
  long op = sim_create_operation(f->s, "511," FX_DEVICE ",ok x");
  g_assert_cmpint(op, >, 0);
  g_assert_cmpint(fx_wait_op(f, op, 20000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f->s, op), ==, "x");
}

/* ---- tests ---- */

static void test_broker_restarts(void) {
  fx f = {0};
  proxy *p;
  up(&f, &p);
  seq_count sc;
  seq_init(&sc, BURST);
  unsigned long long base = proxy_bytes_up(p);
  for (int k = 0; k < 10; k++) {
    /* In the first publish, just after it, in the second: different
     * amounts acked and in flight at each kill. */
    wait_bytes_up(&f, p, &sc, base, 12000 + (unsigned long long)(k % 3) * 8000);
    char what[64];
    snprintf(what, sizeof what, "broker kill %d", k + 1);
    expect_mid_drain(&sc, &f, what);
    int lost = log_count(&f, LOST_NEEDLE);
    proxy_set_mode(p, PROXY_REFUSE);
    g_assert_cmpint(sim_broker_kill(f.s), ==, 0);
    g_assert_cmpint(wait_log_count(&f, LOST_NEEDLE, lost + 1, 10000), >=, 0);
    size_t from = sim_message_count(f.s);
    g_assert_cmpint(sim_broker_start(f.s), ==, 0);
    base = proxy_bytes_up(p);
    proxy_set_mode(p, PROXY_PASS);
    expect_reconnect(&f, from, 20000);
  }
  seq_expect_complete(&sc, &f, 60000, "broker-restarts");
  expect_operation(&f);
  seq_free(&sc);
  down(&f, p);
}

static void test_agent_kill9(void) {
  fx f = {0};
  proxy *p;
  up(&f, &p);
  seq_count sc;
  seq_init(&sc, BURST);
  size_t from = 0;
  for (int k = 0; k < 3; k++) {
    /* Some lines of this run arrived, not all. */
    if (sim_wait_line(f.s, "s/us", SEQ_PREFIX, from, 20000) < 0) {
      seq_scan(&sc, f.s);
      char *log = agent_proc_log(f.a);
      g_error("no burst line arrived in run %d (%ld of %d received); log:\n%s",
              k + 1, sc.distinct, sc.n, log);
    }
    char what[64];
    snprintf(what, sizeof what, "agent kill -9 %d", k + 1);
    expect_mid_drain(&sc, &f, what);
    agent_proc_kill(f.a);
    /* Stricter than the wire: bytes the dead agent left in the proxy are
     * dropped, so only the restarted agent's resend can deliver them. */
    proxy_cut(p);
    const char *started = "started: device";
    char *before = agent_proc_log(f.a);
    size_t mark = strlen(before);
    int starts = count_in(before, started);
    g_free(before);
    from = sim_message_count(f.s);
    fx_start_agent(&f);
    /* Plugins are initialised before the agent says it started. */
    g_assert_cmpint(wait_log_count(&f, started, starts + 1, 10000), >=, 0);
    char *log = agent_proc_log(f.a);
    /* The restarted agent must resend from its queue, not queue anew:
     * otherwise completeness would prove nothing. */
    g_assert_null(strstr(log + mark, "itest: burst of"));
    const char *at = strstr(log + mark, "survived the restart");
    while (at && at > log + mark && at[-1] != '\n')
      at--;
    g_test_message("run %d: %.*s", k + 2, at ? (int)strcspn(at, "\n") : 9,
                   at ? at : "no replay");
    g_free(log);
  }
  seq_expect_complete(&sc, &f, 60000, "agent-kill9");
  expect_operation(&f);
  seq_free(&sc);
  down(&f, p);
}

static void test_proxy_cut(void) {
  fx f = {0};
  proxy *p;
  up(&f, &p);
  seq_count sc;
  seq_init(&sc, BURST);
  unsigned long long base = proxy_bytes_up(p);
  for (int k = 0; k < 3; k++) {
    wait_bytes_up(&f, p, &sc, base, 12000 + (unsigned long long)k * 6000);
    char what[64];
    snprintf(what, sizeof what, "proxy cut %d", k + 1);
    expect_mid_drain(&sc, &f, what);
    int lost = log_count(&f, LOST_NEEDLE);
    size_t from = sim_message_count(f.s);
    g_assert_cmpint(proxy_cut(p), >=, 1);
    int ms = wait_log_count(&f, LOST_NEEDLE, lost + 1, 2 * KEEPALIVE * 1000);
    g_test_message("cut %d detected after %d ms", k + 1, ms);
    g_assert_cmpint(ms, >=, 0);
    expect_reconnect(&f, from, 20000);
    base = proxy_bytes_up(p);
  }
  expect_operation(&f);
  seq_expect_complete(&sc, &f, 60000, "proxy-cut");
  seq_free(&sc);
  down(&f, p);
}

static void test_proxy_blackhole(void) {
  fx f = {0};
  proxy *p;
  up(&f, &p);
  seq_count sc;
  seq_init(&sc, BURST);
  wait_bytes_up(&f, p, &sc, proxy_bytes_up(p), 24000);
  expect_mid_drain(&sc, &f, "blackhole");
  int lost = log_count(&f, LOST_NEEDLE);
  size_t from = sim_message_count(f.s);
  proxy_set_mode(p, PROXY_BLACKHOLE);
  /* Paho alone would notice after ~2.6x keepalive (13.2 s for keepalive 5:
   * a PINGREQ after 5.4 s, giving up 6.7 s later, the callback 1.1 s after
   * that). The agent probes a link that has been silent for keepalive/2 and
   * drops it when the probe is not acknowledged within another half, so it
   * notices within keepalive; 1 s of slack for scheduling. */
  int limit = KEEPALIVE * 1000 + 1000;
  int ms = wait_log_count(&f, LOST_NEEDLE, lost + 1, limit + 5000);
  g_test_message("blackhole detected after %d ms (keepalive %d s)", ms,
                 KEEPALIVE);
  g_assert_cmpint(ms, >=, 0);
  g_assert_cmpint(ms, <=, limit);
  /* The agent tries again into the blackhole: nothing gets through. */
  g_usleep(1500 * 1000);
  g_assert_cmpint(sim_wait_line(f.s, "s/us", "100,", from, 0), <, 0);
  from = sim_message_count(f.s);
  gint64 t0 = g_get_monotonic_time();
  proxy_set_mode(p, PROXY_PASS);
  expect_reconnect(&f, from, 30000);
  g_test_message("reconnected %" G_GINT64_FORMAT
                 " ms after the blackhole lifted",
                 (g_get_monotonic_time() - t0) / 1000);
  expect_operation(&f);
  seq_expect_complete(&sc, &f, 60000, "proxy-blackhole");
  seq_free(&sc);
  down(&f, p);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/fault/broker-restarts", test_broker_restarts);
  g_test_add_func("/fault/agent-kill9", test_agent_kill9);
  g_test_add_func("/fault/proxy-cut", test_proxy_cut);
  g_test_add_func("/fault/proxy-blackhole", test_proxy_blackhole);
  return g_test_run();
}
