/* c8y-bench: measures the real c8y-agent binary against a raw Paho
 * MQTTAsync client (c8y-bench-paho) on one throw-away loopback mosquitto and
 * prints every result next to its baseline from the same run, as a ratio.
 *
 *   1. idle memory: agent with the bundled plugins vs an idle Paho client,
 *      then the time from SIGTERM to exit of both (no last will allowed)
 *   2. throughput: N measurement lines (itest `burst`) at QoS 1 and QoS 0
 *      vs the baseline publishing the same lines one per message
 *   3. operation latency: s/ds 511 -> the agent's 501, one at a time, vs a
 *      Paho echo round trip
 *   4. CPU per 1000 lines during the throughput runs
 *
 * The bench itself plays the platform as user "cloud": one Paho client that
 * counts lines on s/us and publishes operations on s/ds. Every wait is
 * bounded; children get PR_SET_PDEATHSIG and are stopped on every path; the
 * broker is stopped and the work directory removed before exit.
 * Exit status: 0 all measured, 1 some measurement failed, 2 usage/setup. */
#include "broker.h"

#include <MQTTAsync.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_AGENT_BIN
#define BENCH_AGENT_BIN ""
#endif
#ifndef BENCH_BASELINE_BIN
#define BENCH_BASELINE_BIN ""
#endif
#ifndef BENCH_ITEST_DIR
#define BENCH_ITEST_DIR ""
#endif
#ifndef BENCH_PLUGINS
#define BENCH_PLUGINS ""
#endif

#define DEVICE "benchdev"
#define DEVICE_PW "bench-device-pw"
#define CLOUD_PW "bench-cloud-pw"
#define WARMUP_OPS 5
#define STEP_MS 5000 /* bound for one operation or echo step */

extern char **environ;

/* Set by SIGINT/SIGTERM; every wait polls it so the normal cleanup runs. */
static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

typedef struct options {
  long lines;
  int ops;
  int idle_ms;
  int window;
  int timeout_s;
  const char *agent_bin;
  const char *baseline_bin;
  const char *itest_dir;
  const char *gateway_dir; /* holds gateway.so (children for registration) */
  long children;
  const char *plugins; /* ':'-separated .so paths */
  bool keep;
} options;

/* ---- time and small helpers ---- */

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !g_stop) {
  }
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("# ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static int write_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return -1;
  size_t len = strlen(text);
  ssize_t n = write(fd, text, len);
  return close(fd) == 0 && n == (ssize_t)len ? 0 : -1;
}

static int copy_file(const char *from, const char *to, mode_t mode) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  int out =
      in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  char buf[65536];
  ssize_t n = 0;
  while (out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
    if (write(out, buf, (size_t)n) != n) {
      n = -1;
      break;
    }
  int rc = in >= 0 && out >= 0 && n == 0 ? 0 : -1;
  if (in >= 0)
    close(in);
  if (out >= 0 && close(out) != 0)
    rc = -1;
  return rc;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

/* ---- child processes ---- */

typedef struct child {
  pid_t pid;
  bool exited;
  int status;
  struct rusage ru;
  long long t_start_ns;
  bool may_exit; /* a clean exit is its normal end (baseline publisher) */
  char log[PATH_MAX];
} child;

/* envp is prepared before fork: after fork in a threaded process only
 * async-signal-safe calls are allowed (no setenv/malloc). */
static int child_spawn(child *ch, const char *const argv[], const char *log,
                       char *const envp[]) {
  memset(ch, 0, sizeof *ch);
  snprintf(ch->log, sizeof ch->log, "%s", log);
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0)
    return -1;
  pid_t parent = getpid();
  ch->t_start_ns = now_ns();
  pid_t pid = fork();
  if (pid < 0) {
    close(fd);
    return -1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0)
      dup2(nul, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execve(argv[0], (char *const *)argv, envp);
    _exit(127);
  }
  close(fd);
  ch->pid = pid;
  return 0;
}

static bool child_poll(child *ch) {
  if (ch->pid <= 0 || ch->exited)
    return true;
  int st;
  if (wait4(ch->pid, &st, WNOHANG, &ch->ru) == ch->pid) {
    ch->exited = true;
    ch->status = st;
  }
  return ch->exited;
}

/* Waits for a voluntary exit; true if it exited within timeout_ms. */
static bool child_wait_exit(child *ch, int timeout_ms) {
  for (int waited = 0; !child_poll(ch) && waited < timeout_ms; waited += 10)
    sleep_ms(10);
  return ch->exited;
}

/* SIGTERM, SIGKILL after timeout_ms; always reaps. */
static void child_stop(child *ch, int timeout_ms) {
  if (ch->pid <= 0 || child_poll(ch))
    return;
  kill(ch->pid, SIGTERM);
  if (child_wait_exit(ch, timeout_ms))
    return;
  kill(ch->pid, SIGKILL);
  int st;
  if (wait4(ch->pid, &st, 0, &ch->ru) == ch->pid) {
    ch->exited = true;
    ch->status = st;
  }
}

static void child_dump_log(const child *ch) {
  FILE *f = fopen(ch->log, "r");
  if (!f)
    return;
  /* The tail is what explains a failure. */
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, size > 4000 ? size - 4000 : 0, SEEK_SET);
  char buf[4001];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  fprintf(stderr, "---- tail of %s ----\n%s\n----\n", ch->log, buf);
}

/* utime + stime of a live process, in ms (clock-tick resolution). */
static double proc_cpu_ms(pid_t pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  /* comm may contain spaces: fields are counted from the last ')'. */
  char *p = strrchr(buf, ')');
  unsigned long long ut, st;
  if (!p || sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu "
                   "%llu",
                   &ut, &st) != 2)
    return -1;
  return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static double rusage_cpu_ms(const struct rusage *ru) {
  return (double)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * 1000.0 +
         (double)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) / 1000.0;
}

typedef struct memstat {
  long rss_kib, hwm_kib, pss_kib, private_kib, threads;
  double stop_ms; /* SIGTERM -> exit after the idle period */
} memstat;

static long field_kib(const char *text, const char *key) {
  const char *p = strstr(text, key);
  return p ? atol(p + strlen(key)) : -1;
}

static int read_text(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, len - 1, f);
  fclose(f);
  buf[n] = 0;
  return 0;
}

static int proc_mem(pid_t pid, memstat *m) {
  char path[64], buf[8192];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  if (read_text(path, buf, sizeof buf) != 0)
    return -1;
  m->rss_kib = field_kib(buf, "\nVmRSS:");
  m->hwm_kib = field_kib(buf, "\nVmHWM:");
  m->threads = field_kib(buf, "\nThreads:");
  snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
  m->pss_kib = m->private_kib = -1;
  if (read_text(path, buf, sizeof buf) == 0) {
    m->pss_kib = field_kib(buf, "\nPss:");
    long pc = field_kib(buf, "\nPrivate_Clean:");
    long pd = field_kib(buf, "\nPrivate_Dirty:");
    if (pc >= 0 && pd >= 0)
      m->private_kib = pc + pd;
  }
  return m->rss_kib > 0 && m->hwm_kib > 0 ? 0 : -1;
}

/* ---- the "cloud": counting subscriber and operation source ---- */

typedef struct cloud {
  MQTTAsync client;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int connected; /* 0 pending, 1 up, -1 failed/lost */
  int subscribed;
  /* line counting on s/us */
  long expect;
  unsigned char *seen;
  long unique, dup_lines, seq_msgs, us_msgs;
  long long t_first_ns, t_done_ns;
  long n500;         /* "500" lines: the agent finished its connect sequence */
  long n101;         /* "101," lines: child registrations */
  long long t500_ns; /* arrival of the first 500 */
  long ready;        /* messages on bench/ready */
  long wills;        /* "400,c8y_ConnectionEvent" lines: a last will */
  /* one operation or echo in flight */
  char want503[64];
  long long t501_ns;
  bool got503, got502;
  char want_echo[64];
  long long t_echo_ns;
} cloud;

static void cloud_signal(cloud *c) {
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static void cl_conn_ok(void *ctx, MQTTAsync_successData *r) {
  (void)r;
  cloud *c = ctx;
  pthread_mutex_lock(&c->mu);
  c->connected = 1;
  cloud_signal(c);
}

static void cl_conn_fail(void *ctx, MQTTAsync_failureData *r) {
  (void)r;
  cloud *c = ctx;
  pthread_mutex_lock(&c->mu);
  c->connected = -1;
  cloud_signal(c);
}

static void cl_sub_ok(void *ctx, MQTTAsync_successData *r) {
  (void)r;
  cloud *c = ctx;
  pthread_mutex_lock(&c->mu);
  c->subscribed = 1;
  cloud_signal(c);
}

static void cl_sub_fail(void *ctx, MQTTAsync_failureData *r) {
  (void)r;
  cloud *c = ctx;
  pthread_mutex_lock(&c->mu);
  c->subscribed = -1;
  cloud_signal(c);
}

static void cl_lost(void *ctx, char *cause) {
  cloud *c = ctx;
  note("cloud client lost its connection: %s", cause ? cause : "");
  pthread_mutex_lock(&c->mu);
  c->connected = -1;
  cloud_signal(c);
}

/* One s/us line; c->mu held. Returns true when a waiter may care: waking
 * the main thread for every counted line would slow the counter down, and a
 * counter that falls behind makes mosquitto drop QoS 0 messages (more than
 * max_queued_messages = 1000 waiting for this client). */
static bool count_line(cloud *c, const char *line, size_t len, long long t,
                       bool *has_seq) {
  static const char seq[] = "200,c8y_Seq,n,";
  if (len > sizeof seq - 1 && memcmp(line, seq, sizeof seq - 1) == 0) {
    *has_seq = true;
    long v = 0;
    for (size_t i = sizeof seq - 1; i < len && line[i] >= '0' && line[i] <= '9';
         i++)
      v = v * 10 + (line[i] - '0');
    if (!c->seen || v < 1 || v > c->expect)
      return false;
    unsigned char bit = (unsigned char)(1u << (v & 7));
    if (c->seen[v >> 3] & bit) {
      c->dup_lines++;
      return false;
    }
    c->seen[v >> 3] |= bit;
    if (++c->unique < c->expect)
      return false;
    c->t_done_ns = t;
    return true;
  }
  if (len > 4 && memcmp(line, "101,", 4) == 0) {
    c->n101++;
    return false;
  }
  if (len >= 23 && memcmp(line, "400,c8y_ConnectionEvent", 23) == 0) {
    c->wills++;
    return true;
  }
  if (len == 3 && memcmp(line, "500", 3) == 0) {
    if (c->n500++ == 0)
      c->t500_ns = t;
  } else if (len >= 15 && memcmp(line, "501,c8y_Command", 15) == 0) {
    if (c->t501_ns == 0)
      c->t501_ns = t;
  } else if (len >= 16 && memcmp(line, "503,c8y_Command,", 16) == 0) {
    size_t wl = strlen(c->want503);
    if (wl && len - 16 == wl && memcmp(line + 16, c->want503, wl) == 0)
      c->got503 = true;
  } else if (len >= 15 && memcmp(line, "502,c8y_Command", 15) == 0) {
    c->got502 = true;
  } else {
    return false;
  }
  return true;
}

/* Timestamps are taken here, on arrival, so how fast a waiter wakes up does
 * not enter any measurement. */
static int cl_message(void *ctx, char *topic, int topiclen,
                      MQTTAsync_message *m) {
  (void)topiclen;
  long long t = now_ns();
  cloud *c = ctx;
  const char *p = m->payload;
  size_t len = (size_t)m->payloadlen;
  bool wake = true;
  pthread_mutex_lock(&c->mu);
  if (strcmp(topic, "s/us") == 0) {
    if (c->us_msgs++ == 0)
      c->t_first_ns = t;
    bool has_seq = false;
    wake = false;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
      if (i == len || p[i] == '\n') {
        if (i > start && count_line(c, p + start, i - start, t, &has_seq))
          wake = true;
        start = i + 1;
      }
    }
    if (has_seq)
      c->seq_msgs++;
  } else if (strcmp(topic, "bench/ready") == 0) {
    c->ready++;
  } else if (strcmp(topic, "bench/out") == 0) {
    size_t wl = strlen(c->want_echo);
    if (wl && len == wl && memcmp(p, c->want_echo, wl) == 0)
      c->t_echo_ns = t;
  }
  if (wake)
    pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

typedef bool (*cloud_pred)(const cloud *c, long arg);

static bool p_connected(const cloud *c, long arg) {
  (void)arg;
  return c->connected != 0;
}
static bool p_subscribed(const cloud *c, long arg) {
  (void)arg;
  return c->subscribed != 0;
}
static bool p_done(const cloud *c, long arg) {
  (void)arg;
  return c->unique == c->expect;
}
static bool p_n500(const cloud *c, long arg) { return c->n500 >= arg; }
static bool p_wills(const cloud *c, long arg) { return c->wills >= arg; }
static bool p_ready(const cloud *c, long arg) { return c->ready >= arg; }
static bool p_501(const cloud *c, long arg) {
  (void)arg;
  return c->t501_ns != 0 || c->got502;
}
static bool p_503(const cloud *c, long arg) {
  (void)arg;
  return c->got503 || c->got502;
}
static bool p_echo(const cloud *c, long arg) {
  (void)arg;
  return c->t_echo_ns != 0;
}

/* Waits (bounded) until pred holds. A child that dies with a failure, a
 * lost cloud connection or a signal ends the wait early. */
static bool cloud_wait(cloud *c, cloud_pred pred, long arg, int timeout_ms,
                       child *ch) {
  long long end = now_ns() + (long long)timeout_ms * 1000000LL;
  pthread_mutex_lock(&c->mu);
  bool ok;
  while (!(ok = pred(c, arg)) && !g_stop && now_ns() < end) {
    if (c->connected < 0 && pred != p_connected)
      break;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += 20 * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
      dl.tv_sec++;
      dl.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->cv, &c->mu, &dl);
    if (ch) {
      pthread_mutex_unlock(&c->mu);
      bool dead = child_poll(ch) && !(ch->may_exit && WIFEXITED(ch->status) &&
                                      WEXITSTATUS(ch->status) == 0);
      pthread_mutex_lock(&c->mu);
      if (dead) {
        ok = pred(c, arg);
        break;
      }
    }
  }
  pthread_mutex_unlock(&c->mu);
  return ok;
}

static int cloud_publish(cloud *c, const char *topic, const char *payload,
                         int qos) {
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = (void *)payload;
  m.payloadlen = (int)strlen(payload);
  m.qos = qos;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  return MQTTAsync_sendMessage(c->client, topic, &m, &ro) == MQTTASYNC_SUCCESS
             ? 0
             : -1;
}

static void cloud_reset(cloud *c, long expect) {
  pthread_mutex_lock(&c->mu);
  free(c->seen);
  c->seen = expect > 0 ? calloc((size_t)expect / 8 + 1, 1) : NULL;
  c->expect = c->seen ? expect : 0;
  c->unique = c->dup_lines = c->seq_msgs = c->us_msgs = 0;
  c->t_first_ns = c->t_done_ns = 0;
  c->n500 = 0;
  pthread_mutex_unlock(&c->mu);
}

static int cloud_start(cloud *c, int port, char *err, size_t errlen) {
  char uri[64];
  snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", port);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
  co.MQTTVersion = MQTTVERSION_3_1_1;
  if (MQTTAsync_createWithOptions(&c->client, uri, "bench-cloud",
                                  MQTTCLIENT_PERSISTENCE_NONE, NULL,
                                  &co) != MQTTASYNC_SUCCESS) {
    snprintf(err, errlen, "cloud client: cannot create a client for %s", uri);
    return -1;
  }
  MQTTAsync_setCallbacks(c->client, c, cl_lost, cl_message, NULL);
  MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
  o.keepAliveInterval = 60;
  o.cleansession = 1;
  o.username = "cloud";
  o.password = CLOUD_PW;
  o.onSuccess = cl_conn_ok;
  o.onFailure = cl_conn_fail;
  o.context = c;
  if (MQTTAsync_connect(c->client, &o) != MQTTASYNC_SUCCESS ||
      !cloud_wait(c, p_connected, 0, 10000, NULL) || c->connected != 1) {
    snprintf(err, errlen, "cloud client: cannot connect to %s", uri);
    return -1;
  }
  /* QoS 0 subscriptions: the counter must never be what throttles the
   * publisher (a QoS 1 subscription adds the broker's 20-message window to
   * this client). */
  char *topics[] = {"s/us", "bench/ready", "bench/out"};
  int qos[] = {0, 0, 0};
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess = cl_sub_ok;
  ro.onFailure = cl_sub_fail;
  ro.context = c;
  if (MQTTAsync_subscribeMany(c->client, 3, topics, qos, &ro) !=
          MQTTASYNC_SUCCESS ||
      !cloud_wait(c, p_subscribed, 0, 10000, NULL) || c->subscribed != 1) {
    snprintf(err, errlen, "cloud client: cannot subscribe to s/us");
    return -1;
  }
  return 0;
}

static void cloud_stop(cloud *c) {
  if (!c->client)
    return;
  if (MQTTAsync_isConnected(c->client)) {
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = 1000;
    MQTTAsync_disconnect(c->client, &d);
    for (int i = 0; i < 40 && MQTTAsync_isConnected(c->client); i++)
      sleep_ms(25);
  }
  MQTTAsync_destroy(&c->client);
  free(c->seen);
  c->seen = NULL;
}

/* ---- the bench ---- */

typedef struct bench {
  options o;
  char dir[PATH_MAX];
  int port;
  cloud c;
  char **env_baseline; /* environ + the baseline's password */
  int runs;            /* numbers agent working directories */
  int failures;
} bench;

typedef struct tp_result {
  bool ok;
  double e2e_lps; /* lines/s, process start -> last line received */
  double msg_ps;  /* messages carrying lines per second, same window */
  double lines_per_msg;
  double cpu_ms_per_1k;
  long dup_lines;
} tp_result;

typedef struct lat_result {
  bool ok;
  double p50_ms, p99_ms, max_ms;
  double fsyncs_per_op; /* agent only: its queue's and journal's, -1 unknown */
} lat_result;

static void fail(bench *b, const char *what) {
  b->failures++;
  note("FAILED: %s", what);
}

/* Writes agent.ini into a fresh directory and starts the agent. */
static int agent_start(bench *b, child *ch, const char *plugin_dir, int qos,
                       const char *extra) {
  char dir[PATH_MAX + 32], path[PATH_MAX + 64];
  snprintf(dir, sizeof dir, "%s/agent%d", b->dir, ++b->runs);
  if (mkdir(dir, 0700) != 0)
    return -1;
  char ini[3 * PATH_MAX];
  snprintf(ini, sizeof ini,
           "[c8y]\ntenant = t1\nuser = device\npassword = " DEVICE_PW "\n"
           "host = 127.0.0.1\nport = %d\ntls = false\nqos = %d\n"
           "[device]\nid = " DEVICE "\n"
           "[agent]\nplugin_dir = %s\nstate_dir = %s/state\n"
           "log_level = notice\n"
           "plugin_max_lines_per_s = 0\n" /* throughput, not the limit */
           "%s",
           b->port, qos, plugin_dir, dir, extra ? extra : "");
  snprintf(path, sizeof path, "%s/agent.ini", dir);
  if (write_file(path, ini, 0600) != 0)
    return -1;
  char log[PATH_MAX + 64];
  snprintf(log, sizeof log, "%s/agent.log", dir);
  const char *argv[] = {b->o.agent_bin, "-c", path, NULL};
  return child_spawn(ch, argv, log, environ);
}

static int baseline_start(bench *b, child *ch, const char *mode, long lines,
                          int qos) {
  char port[16], n[32], q[16], w[16], log[PATH_MAX + 32];
  snprintf(port, sizeof port, "%d", b->port);
  snprintf(n, sizeof n, "%ld", lines);
  snprintf(q, sizeof q, "%d", qos);
  snprintf(w, sizeof w, "%d", b->o.window);
  snprintf(log, sizeof log, "%s/baseline-%s.log", b->dir, mode);
  const char *argv[] = {
      b->o.baseline_bin, mode, port, "t1/device", n, q, w, NULL};
  return child_spawn(ch, argv, log, b->env_baseline);
}

/* SIGTERM to exit, in ms (the exit seen through a pidfd, not a polling
 * tick); -1 when it did not exit within timeout_ms (then it is killed). */
static double stop_time_ms(child *ch, int timeout_ms) {
  if (ch->pid <= 0 || child_poll(ch))
    return -1;
  int pidfd = (int)syscall(SYS_pidfd_open, ch->pid, 0);
  long long t0 = now_ns();
  if (pidfd < 0 || kill(ch->pid, SIGTERM) != 0) {
    if (pidfd >= 0)
      close(pidfd);
    return -1;
  }
  struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
  int n = poll(&pfd, 1, timeout_ms);
  long long t1 = now_ns();
  close(pidfd);
  if (n != 1) {
    child_stop(ch, 0);
    return -1;
  }
  int st;
  if (wait4(ch->pid, &st, 0, &ch->ru) == ch->pid) {
    ch->exited = true;
    ch->status = st;
  }
  return (double)(t1 - t0) / 1e6;
}

/* 1. Idle memory: both processes connected and idle side by side. */
static void run_idle(bench *b, memstat *agent_m, memstat *base_m) {
  char pdir[PATH_MAX + 16];
  snprintf(pdir, sizeof pdir, "%s/plugins", b->dir);
  mkdir(pdir, 0700);
  char *list = strdup(b->o.plugins);
  int nplugins = 0;
  char *save = NULL;
  for (char *so = list ? strtok_r(list, ":", &save) : NULL; so;
       so = strtok_r(NULL, ":", &save)) {
    const char *base = strrchr(so, '/');
    char link[PATH_MAX * 2];
    snprintf(link, sizeof link, "%s/%s", pdir, base ? base + 1 : so);
    if (copy_file(so, link, 0755) == 0) /* the loader refuses symlinks */
      nplugins++;
  }
  free(list);
  note("idle: agent with %d bundled plugins, %d ms idle after connect",
       nplugins, b->o.idle_ms);
  /* Sane intervals for a device in the field; the restart plugin must not
   * reboot the bench machine; shell stays at its default (allow = false);
   * configuration and logfile get a file each so they register their
   * operations. */
  char cfg_file[PATH_MAX + 32], log_file[PATH_MAX + 32];
  snprintf(cfg_file, sizeof cfg_file, "%s/device-config.txt", b->dir);
  snprintf(log_file, sizeof log_file, "%s/device.log", b->dir);
  char extra[3 * PATH_MAX];
  snprintf(extra, sizeof extra,
           "[plugin.system_metrics]\ninterval = 60\n"
           "[plugin.example]\ninterval = 60\n"
           "[plugin.restart]\ncommand = true\n"
           "[plugin.configuration]\ntext_file = %s\n"
           "[plugin.logfile]\nlogs = device=%s\n",
           cfg_file, log_file);
  if (write_file(cfg_file, "interval=60\n", 0600) != 0 ||
      write_file(log_file, "bench log line\n", 0600) != 0) {
    fail(b, "idle: cannot write the plugin files");
    return;
  }
  child a = {0}, p = {0};
  cloud_reset(&b->c, 0);
  long ready0 = b->c.ready;
  if (agent_start(b, &a, pdir, 1, extra) != 0 ||
      baseline_start(b, &p, "idle", 0, 1) != 0) {
    fail(b, "idle: cannot start the processes");
    goto out;
  }
  if (!cloud_wait(&b->c, p_n500, 1, 20000, &a)) {
    fail(b, "idle: the agent never connected (no 500 on s/us)");
    child_dump_log(&a);
    goto out;
  }
  if (!cloud_wait(&b->c, p_ready, ready0 + 1, 20000, &p)) {
    fail(b, "idle: the Paho baseline never connected");
    child_dump_log(&p);
    goto out;
  }
  sleep_ms(b->o.idle_ms);
  if (proc_mem(a.pid, agent_m) != 0 || proc_mem(p.pid, base_m) != 0)
    fail(b, "idle: cannot read /proc/<pid>/status");
  /* 1b. Stop when idle: SIGTERM to exit, the baseline doing what the agent
   * must at least do (a clean DISCONNECT, then freeing its client). A
   * clean stop leaves no last will on s/us. */
  pthread_mutex_lock(&b->c.mu);
  long wills0 = b->c.wills;
  pthread_mutex_unlock(&b->c.mu);
  agent_m->stop_ms = stop_time_ms(&a, 10000);
  base_m->stop_ms = stop_time_ms(&p, 10000);
  if (agent_m->stop_ms < 0 || base_m->stop_ms < 0)
    fail(b, "stop: a process did not exit within 10 s of SIGTERM");
  if (cloud_wait(&b->c, p_wills, wills0 + 1, 500, NULL))
    fail(b, "stop: the broker published the agent's last will (no clean "
            "DISCONNECT)");
  if (a.exited && (!WIFEXITED(a.status) || WEXITSTATUS(a.status) != 0))
    fail(b, "stop: the agent did not exit with status 0");
out:
  child_stop(&a, 10000);
  child_stop(&p, 5000);
}

/* 2+4. N lines through the agent (itest burst) or the baseline. */
static tp_result run_throughput(bench *b, bool agent, int qos) {
  tp_result r = {0};
  child ch = {0};
  long n = b->o.lines;
  const char *who = agent ? "agent" : "baseline";
  cloud_reset(&b->c, n);
  if (!b->c.seen) {
    fail(b, "throughput: out of memory");
    return r;
  }
  int rc;
  if (agent) {
    char extra[128];
    snprintf(extra, sizeof extra, "[plugin.itest]\nburst = %ld\n", n);
    rc = agent_start(b, &ch, b->o.itest_dir, qos, extra);
  } else {
    rc = baseline_start(b, &ch, "publish", n, qos);
  }
  if (rc != 0) {
    fail(b, "throughput: cannot start the process");
    return r;
  }
  /* In slices, so a publisher that finished while lines are still missing
   * (dropped by the broker) ends the wait after 2 s instead of the timeout. */
  bool done = false;
  long last_unique = -1;
  for (int waited = 0; !done && waited < b->o.timeout_s * 1000 && !g_stop;
       waited += 2000) {
    done = cloud_wait(&b->c, p_done, 0, 2000, &ch);
    pthread_mutex_lock(&b->c.mu);
    long u = b->c.unique;
    pthread_mutex_unlock(&b->c.mu);
    if (!done && ch.exited && u == last_unique)
      break;
    last_unique = u;
  }
  double cpu_ms = -1;
  if (done && agent) {
    cpu_ms = proc_cpu_ms(ch.pid);
  } else if (done) {
    /* The baseline exits once every publish completed. */
    if (child_wait_exit(&ch, 10000) && WIFEXITED(ch.status) &&
        WEXITSTATUS(ch.status) == 0)
      cpu_ms = rusage_cpu_ms(&ch.ru);
  }
  pthread_mutex_lock(&b->c.mu);
  long unique = b->c.unique, msgs = b->c.seq_msgs;
  long long t_first = b->c.t_first_ns, t_done = b->c.t_done_ns;
  r.dup_lines = b->c.dup_lines;
  pthread_mutex_unlock(&b->c.mu);
  child_stop(&ch, 10000);
  char what[160];
  if (!done || cpu_ms < 0) {
    snprintf(what, sizeof what,
             "throughput QoS %d %s: %ld of %ld lines received%s", qos, who,
             unique, n,
             done ? ", CPU time unreadable"
             : ch.exited && WIFEXITED(ch.status) && !WEXITSTATUS(ch.status)
                 ? " although the publisher completed: the broker dropped "
                   "them (QoS 0 beyond max_queued_messages?)"
                 : "");
    fail(b, what);
    child_dump_log(&ch);
    return r;
  }
  double e2e_s = (double)(t_done - ch.t_start_ns) / 1e9;
  double drain_s = (double)(t_done - t_first) / 1e9;
  r.ok = e2e_s > 0;
  if (!r.ok) {
    fail(b, "throughput: the clock did not advance");
    return r;
  }
  r.e2e_lps = (double)n / e2e_s;
  r.msg_ps = (double)msgs / e2e_s;
  r.lines_per_msg = msgs ? (double)n / (double)msgs : 0;
  r.cpu_ms_per_1k = cpu_ms / ((double)n / 1000.0);
  note("throughput QoS %d %-8s: %ld lines in %ld messages, %.3f s from "
       "start, %.3f s first->last, %.0f ms CPU",
       qos, who, n, msgs, e2e_s, drain_s, cpu_ms);
  return r;
}

static int cmp_ll(const void *x, const void *y) {
  long long a = *(const long long *)x, b = *(const long long *)y;
  return (a > b) - (a < b);
}

static lat_result percentiles(long long *v, int k) {
  lat_result r = {.ok = true};
  qsort(v, (size_t)k, sizeof *v, cmp_ll);
  /* nearest rank */
  int i50 = (k * 50 + 99) / 100 - 1, i99 = (k * 99 + 99) / 100 - 1;
  r.p50_ms = (double)v[i50 < 0 ? 0 : i50] / 1e6;
  r.p99_ms = (double)v[i99 < 0 ? 0 : i99] / 1e6;
  r.max_ms = (double)v[k - 1] / 1e6;
  return r;
}

/* The fdatasyncs the agent's queue and journal made so far ("storage" of
 * `status json` on its local API socket), or -1. */
static long long agent_fsyncs(const char *sock) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
  static const char req[] = "status json\n";
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  shutdown(fd, SHUT_WR);
  char buf[65536];
  size_t len = 0;
  for (;;) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (len + 1 >= sizeof buf || poll(&pfd, 1, 5000) != 1)
      break;
    ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = 0;
  const char *st = strstr(buf, "\"storage\":");
  const char *f = st ? strstr(st, "\"fsyncs\":") : NULL;
  return f ? strtoll(f + 9, NULL, 10) : -1;
}

/* 3. s/ds 511 -> 501 through the agent, one operation at a time. */
static lat_result run_latency_agent(bench *b, int qos) {
  lat_result r = {0};
  int k = b->o.ops;
  long long *v = calloc((size_t)k, sizeof *v);
  child ch = {0};
  cloud *c = &b->c;
  cloud_reset(c, 0);
  r.fsyncs_per_op = -1;
  /* Its local API, to read how many fdatasyncs the operations cost. */
  char sock[PATH_MAX + 32], api[PATH_MAX + 64];
  snprintf(sock, sizeof sock, "%s/api-qos%d.sock", b->dir, qos);
  snprintf(api, sizeof api, "[api]\nsocket = %s\n", sock);
  long long fsyncs0 = -1;
  if (!v || agent_start(b, &ch, b->o.itest_dir, qos, api) != 0) {
    fail(b, "latency: cannot start the agent");
    goto out;
  }
  if (!cloud_wait(c, p_n500, 1, 20000, &ch)) {
    fail(b, "latency: the agent never connected (no 500 on s/us)");
    child_dump_log(&ch);
    goto out;
  }
  for (int i = -WARMUP_OPS; i < k; i++) {
    char op[96];
    if (i == 0)
      fsyncs0 = agent_fsyncs(sock);
    pthread_mutex_lock(&c->mu);
    snprintf(c->want503, sizeof c->want503, "r%d", i);
    c->t501_ns = 0;
    c->got503 = c->got502 = false;
    pthread_mutex_unlock(&c->mu);
    snprintf(op, sizeof op, "511," DEVICE ",ok r%d", i);
    long long t0 = now_ns();
    if (cloud_publish(c, "s/ds", op, qos) != 0 ||
        !cloud_wait(c, p_501, 0, STEP_MS, &ch) ||
        !cloud_wait(c, p_503, 0, STEP_MS, &ch) || c->got502) {
      char what[128];
      snprintf(what, sizeof what, "latency: operation %d got no 501/503%s", i,
               c->got502 ? " (it failed: 502)" : "");
      fail(b, what);
      child_dump_log(&ch);
      goto out;
    }
    if (i >= 0)
      v[i] = c->t501_ns - t0;
  }
  r = percentiles(v, k);
  long long fsyncs1 = agent_fsyncs(sock);
  if (fsyncs0 < 0 || fsyncs1 < fsyncs0) {
    fail(b, "latency: cannot read the agent's fsyncs (status json)");
    r.fsyncs_per_op = -1;
  } else
    r.fsyncs_per_op = (double)(fsyncs1 - fsyncs0) / k;
out:
  child_stop(&ch, 10000);
  free(v);
  return r;
}

/* 3. baseline: a raw Paho echo, bench/in -> bench/out. */
static lat_result run_latency_echo(bench *b, int qos) {
  lat_result r = {0};
  int k = b->o.ops;
  long long *v = calloc((size_t)k, sizeof *v);
  child ch = {0};
  cloud *c = &b->c;
  long ready0 = c->ready;
  if (!v || baseline_start(b, &ch, "echo", 0, qos) != 0) {
    fail(b, "latency: cannot start the echo baseline");
    goto out;
  }
  if (!cloud_wait(c, p_ready, ready0 + 1, 20000, &ch)) {
    fail(b, "latency: the echo baseline never became ready");
    child_dump_log(&ch);
    goto out;
  }
  for (int i = -WARMUP_OPS; i < k; i++) {
    char msg[32];
    snprintf(msg, sizeof msg, "e%d", i);
    pthread_mutex_lock(&c->mu);
    snprintf(c->want_echo, sizeof c->want_echo, "%s", msg);
    c->t_echo_ns = 0;
    pthread_mutex_unlock(&c->mu);
    long long t0 = now_ns();
    if (cloud_publish(c, "bench/in", msg, qos) != 0 ||
        !cloud_wait(c, p_echo, 0, STEP_MS, &ch)) {
      fail(b, "latency: an echo did not come back");
      child_dump_log(&ch);
      goto out;
    }
    if (i >= 0)
      v[i] = c->t_echo_ns - t0;
  }
  r = percentiles(v, k);
out:
  child_stop(&ch, 5000);
  free(v);
  return r;
}

/* ---- output ---- */

typedef struct reg_result {
  bool ok;
  double ms;     /* process start -> 500 (agent) or last PUBACK (base) */
  long messages; /* s/us publishes it took */
  long lines;    /* registration lines */
} reg_result;

/* 5. Registration of `children` children: the agent (gateway plugin)
 * from start to its 500, which follows the confirmed registration; the
 * baseline publishes as many lines one per message, as the agent used to
 * (and then lost what overflowed Paho's buffer). */
static reg_result run_registration(bench *b, bool agent, long children) {
  reg_result r = {0};
  child ch = {0};
  long lines = children + 5; /* 100, 110, 122, 101 x N, 114, 117 */
  cloud_reset(&b->c, agent ? 0 : lines);
  char extra[128];
  snprintf(extra, sizeof extra, "[plugin.gateway]\nchildren = %ld\n", children);
  int rc = agent ? agent_start(b, &ch, b->o.gateway_dir, 1, extra)
                 : baseline_start(b, &ch, "publish", lines, 1);
  if (rc != 0) {
    fail(b, "registration: cannot start the process");
    return r;
  }
  bool done = agent ? cloud_wait(&b->c, p_n500, 1, b->o.timeout_s * 1000, &ch)
                    : cloud_wait(&b->c, p_done, 0, b->o.timeout_s * 1000, &ch);
  pthread_mutex_lock(&b->c.mu);
  long long t_end = agent ? b->c.t500_ns : b->c.t_done_ns;
  long n101 = b->c.n101, msgs = b->c.us_msgs;
  pthread_mutex_unlock(&b->c.mu);
  child_stop(&ch, 10000);
  if (!done || (agent && n101 != children)) {
    char what[160];
    snprintf(what, sizeof what, "registration %s: %s (%ld of %ld 101 lines)",
             agent ? "agent" : "baseline", done ? "lines missing" : "timed out",
             n101, children);
    fail(b, what);
    child_dump_log(&ch);
    return r;
  }
  r.ok = true;
  r.ms = (double)(t_end - ch.t_start_ns) / 1e6;
  r.messages = msgs;
  r.lines = lines;
  note("registration %-8s: %ld lines in %ld messages, %.1f ms from start",
       agent ? "agent" : "baseline", lines, msgs, r.ms);
  return r;
}

/* The same operation latency against a broker that sets TCP_NODELAY
 * (mosquitto's set_tcp_nodelay), so only the agent's own socket decides. */
static bool restart_broker_nodelay(bench *b, broker *br) {
  char err[256];
  cloud_stop(&b->c);
  pthread_mutex_destroy(&b->c.mu);
  pthread_cond_destroy(&b->c.cv);
  memset(&b->c, 0, sizeof b->c);
  if (broker_restart_with(br, "set_tcp_nodelay true", err, sizeof err) != 0 ||
      cloud_start(&b->c, b->port, err, sizeof err) != 0) {
    fail(b, err);
    return false;
  }
  note("broker restarted with set_tcp_nodelay true");
  return true;
}

static void row(const char *metric, double a, double base, int decimals) {
  char sa[32] = "n/a", sb[32] = "n/a", sr[32] = "n/a";
  if (a >= 0)
    snprintf(sa, sizeof sa, "%.*f", decimals, a);
  if (base >= 0)
    snprintf(sb, sizeof sb, "%.*f", decimals, base);
  if (a >= 0 && base > 0)
    snprintf(sr, sizeof sr, "%.2f", a / base);
  printf("%-36s %14s %14s %9s\n", metric, sa, sb, sr);
}

static void print_results(const bench *b, const memstat *am, const memstat *bm,
                          const tp_result tp[2][2], const lat_result lat[2][2],
                          const reg_result reg[2], const lat_result lat_nd[2]) {
  printf("\nc8y-agent benchmark: loopback mosquitto, %ld CPUs, N = %ld lines, "
         "K = %d operations, baseline window %d\n",
         sysconf(_SC_NPROCESSORS_ONLN), b->o.lines, b->o.ops, b->o.window);
  printf("%-36s %14s %14s %9s\n", "metric", "agent", "baseline", "agent/base");
  row("idle VmRSS KiB", (double)am->rss_kib, (double)bm->rss_kib, 0);
  row("idle VmHWM KiB", (double)am->hwm_kib, (double)bm->hwm_kib, 0);
  row("idle Pss KiB", (double)am->pss_kib, (double)bm->pss_kib, 0);
  row("idle private KiB", (double)am->private_kib, (double)bm->private_kib, 0);
  row("idle threads", (double)am->threads, (double)bm->threads, 0);
  row("stop when idle ms (SIGTERM->exit)", am->stop_ms, bm->stop_ms, 1);
  for (int q = 1; q >= 0; q--) {
    const tp_result *a = &tp[q][0], *p = &tp[q][1];
    char m[64];
#define TP(label, field, fmt)                                                  \
  snprintf(m, sizeof m, "qos%d " label, q);                                    \
  row(m, a->ok ? a->field : -1, p->ok ? p->field : -1, fmt)
    TP("lines/s (start->last line)", e2e_lps, 0);
    TP("messages/s (start->last line)", msg_ps, 0);
    TP("lines per message", lines_per_msg, 1);
    TP("CPU ms per 1000 lines", cpu_ms_per_1k, 2);
#undef TP
  }
  for (int q = 1; q >= 0; q--) {
    const lat_result *a = &lat[q][0], *e = &lat[q][1];
    char m[64];
#define LAT(label, field)                                                      \
  snprintf(m, sizeof m, "op qos%d latency " label " ms", q);                   \
  row(m, a->ok ? a->field : -1, e->ok ? e->field : -1, 3)
    LAT("p50", p50_ms);
    LAT("p99", p99_ms);
    LAT("max", max_ms);
#undef LAT
  }
  /* An operation has two durable steps: its begin and its end. */
  row("op fdatasyncs per op (base: 2 steps)", lat[1][0].fsyncs_per_op,
      lat[1][0].ok ? 2.0 : -1, 2);
  const lat_result *na = &lat_nd[0], *ne = &lat_nd[1];
  row("op qos1 latency p50 ms, no-delay broker", na->ok ? na->p50_ms : -1,
      ne->ok ? ne->p50_ms : -1, 3);
  row("op qos1 latency p99 ms, no-delay broker", na->ok ? na->p99_ms : -1,
      ne->ok ? ne->p99_ms : -1, 3);
  char m[64];
  snprintf(m, sizeof m, "registration of %ld children ms", b->o.children);
  row(m, reg[0].ok ? reg[0].ms : -1, reg[1].ok ? reg[1].ms : -1, 1);
  snprintf(m, sizeof m, "registration of %ld children messages", b->o.children);
  row(m, reg[0].ok ? (double)reg[0].messages : -1,
      reg[1].ok ? (double)reg[1].messages : -1, 0);
  printf("result: %s\n",
         b->failures ? "INCOMPLETE (see FAILED lines)" : "complete");
}

/* ---- setup ---- */

static void usage(const char *argv0) {
  fprintf(
      stderr,
      "usage: %s [--lines N] [--ops K] [--idle-ms MS] [--window W]\n"
      "          [--timeout-s S] [--keep] [--agent PATH] [--baseline PATH]\n"
      "          [--itest-dir DIR] [--plugins A.so:B.so] [--children N]\n"
      "defaults: --lines 100000 --ops 200 --idle-ms 5000 --window 64 "
      "--timeout-s 60 --children 1000\n",
      argv0);
}

static int parse_long(const char *arg, const char *name, long lo, long hi,
                      long *out) {
  char *end;
  errno = 0;
  long v = strtol(arg ? arg : "", &end, 10);
  if (!arg || errno || *end || end == arg || v < lo || v > hi) {
    fprintf(stderr, "c8y-bench: %s: '%s' is not an integer in %ld..%ld\n", name,
            arg ? arg : "", lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_args(int argc, char **argv, options *o) {
  *o = (options){.lines = 100000,
                 .ops = 200,
                 .idle_ms = 5000,
                 .window = 64,
                 .timeout_s = 60,
                 .agent_bin = BENCH_AGENT_BIN,
                 .baseline_bin = BENCH_BASELINE_BIN,
                 .itest_dir = BENCH_ITEST_DIR,
                 .gateway_dir = BENCH_GATEWAY_DIR,
                 .children = 1000,
                 .plugins = BENCH_PLUGINS};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    long n;
    if (strcmp(a, "--keep") == 0) {
      o->keep = true;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(argv[0]);
      return 1;
    }
    i++;
    if (strcmp(a, "--lines") == 0) {
      if (parse_long(v, a, 1, 100000000, &n) != 0)
        return -1;
      o->lines = n;
    } else if (strcmp(a, "--ops") == 0) {
      if (parse_long(v, a, 1, 100000, &n) != 0)
        return -1;
      o->ops = (int)n;
    } else if (strcmp(a, "--idle-ms") == 0) {
      if (parse_long(v, a, 0, 600000, &n) != 0)
        return -1;
      o->idle_ms = (int)n;
    } else if (strcmp(a, "--window") == 0) {
      if (parse_long(v, a, 1, 30000, &n) != 0)
        return -1;
      o->window = (int)n;
    } else if (strcmp(a, "--timeout-s") == 0) {
      if (parse_long(v, a, 1, 3600, &n) != 0)
        return -1;
      o->timeout_s = (int)n;
    } else if (v && strcmp(a, "--agent") == 0) {
      o->agent_bin = v;
    } else if (v && strcmp(a, "--baseline") == 0) {
      o->baseline_bin = v;
    } else if (v && strcmp(a, "--itest-dir") == 0) {
      o->itest_dir = v;
    } else if (strcmp(a, "--children") == 0) {
      if (parse_long(v, a, 1, 100000, &n) != 0)
        return -1;
      o->children = n;
    } else if (v && strcmp(a, "--plugins") == 0) {
      o->plugins = v;
    } else {
      fprintf(stderr, "c8y-bench: unknown option or missing value: %s\n", a);
      usage(argv[0]);
      return -1;
    }
  }
  struct {
    const char *what, *path;
    int mode;
  } need[] = {{"--agent", o->agent_bin, X_OK},
              {"--baseline", o->baseline_bin, X_OK},
              {"--itest-dir", o->itest_dir, R_OK},
              {"gateway plugin dir", o->gateway_dir, R_OK}};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
    if (!*need[i].path || access(need[i].path, need[i].mode) != 0) {
      fprintf(stderr, "c8y-bench: %s: '%s' is not usable: %s\n", need[i].what,
              need[i].path, *need[i].path ? strerror(errno) : "not set");
      return -1;
    }
  }
  return 0;
}

static char **env_with(const char *extra) {
  size_t n = 0;
  while (environ[n])
    n++;
  char **env = calloc(n + 2, sizeof *env);
  if (!env)
    return NULL;
  for (size_t i = 0; i < n; i++)
    env[i] = environ[i];
  env[n] = (char *)extra;
  return env;
}

static int setup(bench *b, broker **br) {
  snprintf(b->dir, sizeof b->dir, "%s/c8y-bench-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(b->dir)) {
    fprintf(stderr, "c8y-bench: mkdtemp %s: %s\n", b->dir, strerror(errno));
    b->dir[0] = 0;
    return -1;
  }
  char passwd[PATH_MAX + 16], acl[PATH_MAX + 16], err[512];
  snprintf(passwd, sizeof passwd, "%s/passwd", b->dir);
  snprintf(acl, sizeof acl, "%s/acl", b->dir);
  broker_user users[] = {{"t1/device", DEVICE_PW}, {"cloud", CLOUD_PW}};
  if (broker_write_passwd(passwd, users, 2, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-bench: %s\n", err);
    return -1;
  }
  /* Authentication as on the platform; no topic restrictions (the bench
   * measures speed, the simulator tests the ACL). */
  if (write_file(acl, "pattern readwrite #\n", 0600) != 0) {
    fprintf(stderr, "c8y-bench: %s: cannot write\n", acl);
    return -1;
  }
  if (broker_start(b->dir, passwd, acl, 0, br, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-bench: broker: %s\n", err);
    return -1;
  }
  b->port = broker_port(*br);
  if (cloud_start(&b->c, b->port, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-bench: %s\n", err);
    return -1;
  }
  b->env_baseline = env_with("C8Y_BENCH_PASSWORD=" DEVICE_PW);
  return b->env_baseline ? 0 : -1;
}

int main(int argc, char **argv) {
  bench b;
  memset(&b, 0, sizeof b);
  int prc = parse_args(argc, argv, &b.o);
  if (prc != 0)
    return prc > 0 ? 0 : 2;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);

  broker *br = NULL;
  int rc = 2;
  long long t0 = now_ns();
  if (setup(&b, &br) == 0) {
    note("broker on 127.0.0.1:%d, work dir %s", b.port, b.dir);
    memstat am = {-1, -1, -1, -1, -1, -1}, bm = {-1, -1, -1, -1, -1, -1};
    tp_result tp[2][2] = {{{0}}};
    lat_result lat[2][2] = {{{0}}};
    run_idle(&b, &am, &bm);
    for (int q = 1; q >= 0 && !g_stop; q--) {
      tp[q][0] = run_throughput(&b, true, q);
      if (!g_stop)
        tp[q][1] = run_throughput(&b, false, q);
    }
    for (int q = 1; q >= 0 && !g_stop; q--) {
      lat[q][0] = run_latency_agent(&b, q);
      if (!g_stop)
        lat[q][1] = run_latency_echo(&b, q);
    }
    reg_result reg[2] = {{0}};
    if (!g_stop)
      reg[0] = run_registration(&b, true, b.o.children);
    if (!g_stop)
      reg[1] = run_registration(&b, false, b.o.children);
    lat_result lat_nd[2] = {{0}};
    if (!g_stop && restart_broker_nodelay(&b, br)) {
      lat_nd[0] = run_latency_agent(&b, 1);
      if (!g_stop)
        lat_nd[1] = run_latency_echo(&b, 1);
    }
    if (g_stop)
      fail(&b, "interrupted by a signal");
    print_results(&b, &am, &bm, (const tp_result(*)[2])tp,
                  (const lat_result(*)[2])lat, reg, lat_nd);
    note("total bench time %.1f s", (double)(now_ns() - t0) / 1e9);
    rc = b.failures ? 1 : 0;
  }
  cloud_stop(&b.c);
  broker_stop(br);
  free(b.env_baseline);
  if (b.dir[0] && !b.o.keep)
    nftw(b.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  else if (b.dir[0])
    note("kept %s", b.dir);
  return rc;
}
