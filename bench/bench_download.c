/* c8y-bench-download: HTTP download throughput of the real agent against
 * curl fetching the same file from the same simulator in the same run, and
 * the agent's memory during the download (it must stream, not buffer).
 *
 *   c8y-bench-download [--mb N] [--rounds R]
 *
 * Prints "download MB/s  <agent> <curl> <agent/curl>" (best of R rounds each;
 * curl writes into a file next to the payload; the agent is timed from
 * operation creation to its 503, so it includes the MQTT round trip and the
 * fsync that makes the file durable) and "download RSS growth KiB <growth>
 * <limit>". Exit status: 0 ok, 1 the RSS growth reached the 4 MiB limit or a
 * transfer failed, 2 setup. */
#include "agent_proc.h"
#include "sim.h"
#include "sim_http.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RSS_LIMIT_KIB 4096

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kib(pid_t pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  const char *p = strstr(buf, "VmRSS:");
  return p ? strtol(p + 6, NULL, 10) : -1;
}

typedef struct sampler {
  pid_t pid;
  atomic_bool stop;
  long peak;
} sampler;

static void *sample(void *arg) {
  sampler *s = arg;
  while (!atomic_load(&s->stop)) {
    long v = rss_kib(s->pid);
    if (v > s->peak)
      s->peak = v;
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static int make_file(const char *path, long mb) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -1;
  static unsigned char buf[1 << 20];
  unsigned x = 12345;
  for (long i = 0; i < mb; i++) {
    for (size_t k = 0; k < sizeof buf; k++) {
      x = x * 1103515245u + 12345u;
      buf[k] = (unsigned char)(x >> 16);
    }
    if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
      close(fd);
      return -1;
    }
  }
  return close(fd);
}

/* curl into a file on the same file system (as the agent writes one), with
 * the device's credentials; seconds or -1. */
static double curl_once(const char *url, const char *out) {
  double t0 = now_s();
  pid_t pid = fork();
  if (pid == 0) {
    execlp("curl", "curl", "-sSf", "-o", out, "-u", "t1/device:secret", url,
           (char *)NULL);
    _exit(127);
  }
  int st;
  if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) ||
      WEXITSTATUS(st) != 0)
    return -1;
  double t = now_s() - t0;
  unlink(out);
  return t;
}

static double agent_once(sim *s, const char *url, int round) {
  char line[600];
  snprintf(line, sizeof line, "511,bench,\"download %s f%d.bin\"", url, round);
  double t0 = now_s();
  long id = sim_create_operation(s, line);
  if (id < 0 || sim_wait_operation_done(s, id, 600000) != SIM_OP_SUCCESSFUL) {
    const char *d = id > 0 ? sim_operation_detail(s, id) : NULL;
    fprintf(stderr, "agent download failed: %s\n", d ? d : "(timeout)");
    return -1;
  }
  return now_s() - t0;
}

int main(int argc, char **argv) {
  long mb = 100;
  int rounds = 3;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc)
      mb = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: c8y-bench-download [--mb N] [--rounds R]\n");
      return 2;
    }
  }
  if (mb < 1 || rounds < 1) {
    fprintf(stderr, "c8y-bench-download: --mb and --rounds must be >= 1\n");
    return 2;
  }
  setenv("C8Y_AGENT_BIN", BENCH_AGENT_BIN, 0);
  sim_options so = {.device_id = "bench"};
  sim *s = NULL;
  sim_http *h = NULL;
  char err[512];
  if (sim_start(&so, &s, err, sizeof err) != 0) {
    fprintf(stderr, "simulator: %s\n", err);
    return 2;
  }
  sim_http_options ho = {.mqtt = s};
  if (sim_http_start(&ho, &h, err, sizeof err) != 0) {
    fprintf(stderr, "simulator REST: %s\n", err);
    sim_stop(s);
    return 2;
  }
  char dir[] = "/tmp/c8y-bench-dl-XXXXXX";
  char file[600], url[700];
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 2;
  }
  snprintf(file, sizeof file, "%s/payload.bin", dir);
  if (make_file(file, mb) != 0) {
    perror(file);
    return 2;
  }
  long bid = sim_http_add_binary(h, file);
  snprintf(url, sizeof url, "%s/inventory/binaries/%ld", sim_http_url(h), bid);

  char ini[2048];
  snprintf(ini, sizeof ini,
           "[c8y]\ntenant = t1\nuser = device\npassword = secret\n"
           "host = 127.0.0.1\nport = %d\ntls = false\nhttp_url = %s\n"
           "[device]\nid = bench\n[agent]\nplugin_dir = %s\nlog_level = "
           "notice\n",
           sim_port(s), sim_http_url(h), BENCH_XFER_DIR);
  agent_proc *a = agent_proc_new(ini);
  int rc = 0;
  if (!a || agent_proc_start(a) != 0 ||
      sim_wait_line(s, "s/us", "500", 0, 15000) < 0) {
    fprintf(stderr, "the agent did not come up\n");
    rc = 2;
    goto out;
  }
  /* Warm-up: the first transfer pays for identity, DNS, allocator growth;
   * the RSS baseline is taken after it. */
  double best_agent = 1e9, best_curl = 1e9;
  if (agent_once(s, url, 0) < 0) {
    rc = 1;
    goto out;
  }
  long base = rss_kib(agent_proc_pid(a));
  sampler smp = {.pid = agent_proc_pid(a), .peak = base};
  pthread_t th;
  pthread_create(&th, NULL, sample, &smp);
  for (int r = 1; r <= rounds; r++) {
    double ta = agent_once(s, url, r);
    char out[700];
    snprintf(out, sizeof out, "%s/curl.bin", dir);
    double tc = curl_once(url, out);
    if (ta < 0 || tc < 0) {
      fprintf(stderr, "a transfer failed (curl %s)\n", tc < 0 ? "too" : "ok");
      rc = 1;
      break;
    }
    if (ta < best_agent)
      best_agent = ta;
    if (tc < best_curl)
      best_curl = tc;
  }
  atomic_store(&smp.stop, true);
  pthread_join(th, NULL);
  if (rc == 0) {
    double ma = (double)mb / best_agent, mc = (double)mb / best_curl;
    long growth = smp.peak - base;
    printf("%-34s %10s %10s %10s\n", "metric", "agent", "curl", "ratio");
    printf("%-34s %10.1f %10.1f %10.2f\n", "download MB/s", ma, mc, ma / mc);
    printf("%-34s %10ld %10s %10s\n", "download RSS before KiB", base, "-",
           "-");
    printf("%-34s %10ld %10d %10s\n", "download RSS growth KiB (limit)", growth,
           RSS_LIMIT_KIB, growth < RSS_LIMIT_KIB ? "ok" : "FAIL");
    printf("result: %s (%ld MiB, best of %d rounds)\n",
           growth < RSS_LIMIT_KIB ? "complete" : "rss limit exceeded", mb,
           rounds);
    if (growth >= RSS_LIMIT_KIB)
      rc = 1;
  }
out:
  if (a && rc != 0) {
    char *l = agent_proc_log(a);
    fprintf(stderr, "---- agent log ----\n%s\n", l ? l : "");
    free(l);
  }
  agent_proc_free(a);
  sim_http_stop(h);
  sim_stop(s);
  unlink(file);
  rmdir(dir);
  return rc;
}
