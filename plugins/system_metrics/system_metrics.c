/* system_metrics: CPU, memory, disk, network and uptime as one measurement of
 * type c8y_SystemMetrics (a 201 line) every `interval` seconds, and at once
 * for c8y_MeasurementRequestOperation (517, "Get measurements").
 *
 * Rates (CPU %, network bytes/s) need two readings, so the first call after
 * start only primes them. The elapsed time for network rates comes from
 * <proc_root>/uptime rather than a clock, so a fixture directory fully
 * determines the output (and /proc/uptime is CLOCK_BOOTTIME on Linux, which
 * keeps counting across suspend like the kernel's byte counters). */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#define SM_MAX_ITEMS 32
#define SM_NAME_MAX 64
/* A measurement request before any reading: the rates (CPU, network) need
 * a second reading this long after the first. */
#define SM_PRIME_MS 1000

typedef struct sm_mount {
  char path[256];
  char
      name[SM_NAME_MAX]; /* series prefix: "/" -> root, "/var/log" -> var_log */
  bool warned;
} sm_mount;

typedef struct sm_iface {
  char name[SM_NAME_MAX]; /* as in /proc/net/dev */
  char series[SM_NAME_MAX];
  bool seen, warned;
  bool primed; /* rx/tx hold the previous reading */
  uint64_t rx, tx;
} sm_iface;

typedef struct sm {
  const c8y_api *api;
  char proc_root[256];
  int cpu, memory, disk, network, uptime;
  bool all_ifaces; /* no `interfaces` given: every interface except lo */
  sm_mount mounts[SM_MAX_ITEMS];
  size_t nmounts;
  sm_iface ifaces[SM_MAX_ITEMS];
  size_t nifaces;
  bool cpu_primed;
  uint64_t cpu_total, cpu_idle;
  double last_uptime; /* < 0 until the first network reading */
  bool measured;      /* a reading was taken: the rates have a base */
} sm;

static double round2(double v) {
  return (double)(int64_t)(v * 100.0 + (v < 0 ? -0.5 : 0.5)) / 100.0;
}

/* Series names become JSON keys in Cumulocity: keep [A-Za-z0-9_-]. */
static void sanitize(const char *in, char *out, size_t n) {
  size_t k = 0;
  for (; *in && k + 1 < n; in++) {
    char c = *in;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-';
    out[k++] = ok ? c : '_';
  }
  out[k] = '\0';
}

static FILE *open_proc(const sm *s, const char *rel) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", s->proc_root, rel);
  return fopen(path, "r");
}

static void add_cpu(c8y_plugin *self, sm *s, c8y_batch *out) {
  FILE *f = open_proc(s, "stat");
  uint64_t v[8] = {0};
  int n = f ? fscanf(f,
                     "cpu %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                     " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
                     &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7])
            : -1;
  if (f)
    fclose(f);
  if (n < 4) {
    s->api->log(self, C8Y_LOG_WARNING, "%s/stat: no cpu line", s->proc_root);
    return;
  }
  /* user nice system idle iowait irq softirq steal; guest time is already
   * included in user. Idle = idle + iowait. */
  uint64_t total = 0;
  for (int i = 0; i < 8; i++)
    total += v[i];
  uint64_t idle = v[3] + v[4];
  if (s->cpu_primed && total > s->cpu_total && idle >= s->cpu_idle) {
    double dt = (double)(total - s->cpu_total);
    double di = (double)(idle - s->cpu_idle);
    double busy = dt > di ? (dt - di) / dt * 100.0 : 0.0;
    s->api->batch_add(out, "c8y_CPU", "usage", round2(busy), "%");
  }
  s->cpu_primed = true;
  s->cpu_total = total;
  s->cpu_idle = idle;
}

static void add_memory(c8y_plugin *self, sm *s, c8y_batch *out) {
  FILE *f = open_proc(s, "meminfo");
  if (!f) {
    s->api->log(self, C8Y_LOG_WARNING, "%s/meminfo: %s", s->proc_root,
                strerror(errno));
    return;
  }
  char line[256];
  long long total = -1, avail = -1, mfree = 0, buffers = 0, cached = 0, kb;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "MemTotal: %lld", &kb) == 1)
      total = kb;
    else if (sscanf(line, "MemAvailable: %lld", &kb) == 1)
      avail = kb;
    else if (sscanf(line, "MemFree: %lld", &kb) == 1)
      mfree = kb;
    else if (sscanf(line, "Buffers: %lld", &kb) == 1)
      buffers = kb;
    else if (sscanf(line, "Cached: %lld", &kb) == 1)
      cached = kb;
  }
  fclose(f);
  if (avail < 0) /* kernels before 3.14 */
    avail = mfree + buffers + cached;
  if (total <= 0 || avail > total) {
    s->api->log(self, C8Y_LOG_WARNING, "%s/meminfo: no usable MemTotal",
                s->proc_root);
    return;
  }
  double used_kb = (double)(total - avail);
  s->api->batch_add(out, "c8y_Memory", "used_percent",
                    round2(used_kb / (double)total * 100.0), "%");
  s->api->batch_add(out, "c8y_Memory", "used", round2(used_kb / 1024.0), "MB");
  s->api->batch_add(out, "c8y_Memory", "total", round2((double)total / 1024.0),
                    "MB");
}

static void add_disks(c8y_plugin *self, sm *s, c8y_batch *out) {
  for (size_t i = 0; i < s->nmounts; i++) {
    sm_mount *m = &s->mounts[i];
    struct statvfs st;
    if (statvfs(m->path, &st) != 0) {
      if (!m->warned)
        s->api->log(self, C8Y_LOG_WARNING, "mounts: %s: %s", m->path,
                    strerror(errno));
      m->warned = true;
      continue;
    }
    m->warned = false;
    double bs = (double)st.f_frsize;
    double used = ((double)st.f_blocks - (double)st.f_bfree) * bs;
    double avail = (double)st.f_bavail * bs;
    char series[SM_NAME_MAX + 16];
    /* Like df: used / (used + available to unprivileged users). */
    if (used + avail > 0) {
      snprintf(series, sizeof series, "%s_used_percent", m->name);
      s->api->batch_add(out, "c8y_Disk", series,
                        round2(used / (used + avail) * 100.0), "%");
    }
    snprintf(series, sizeof series, "%s_free", m->name);
    s->api->batch_add(out, "c8y_Disk", series, round2(avail / 1048576.0), "MB");
  }
}

static double read_uptime(const sm *s) {
  FILE *f = open_proc(s, "uptime");
  double up = -1;
  if (f) {
    if (fscanf(f, "%lf", &up) != 1)
      up = -1;
    fclose(f);
  }
  return up;
}

static sm_iface *find_iface(sm *s, const char *name) {
  for (size_t i = 0; i < s->nifaces; i++)
    if (strcmp(s->ifaces[i].name, name) == 0)
      return &s->ifaces[i];
  return NULL;
}

static sm_iface *add_iface(sm *s, const char *name) {
  if (s->nifaces == SM_MAX_ITEMS)
    return NULL;
  sm_iface *it = &s->ifaces[s->nifaces++];
  memset(it, 0, sizeof *it);
  snprintf(it->name, sizeof it->name, "%s", name);
  sanitize(name, it->series, sizeof it->series);
  return it;
}

static void add_network(c8y_plugin *self, sm *s, c8y_batch *out, double up) {
  FILE *f = open_proc(s, "net/dev");
  if (!f) {
    s->api->log(self, C8Y_LOG_WARNING, "%s/net/dev: %s", s->proc_root,
                strerror(errno));
    return;
  }
  double dt =
      s->last_uptime >= 0 && up > s->last_uptime ? up - s->last_uptime : 0.0;
  for (size_t i = 0; i < s->nifaces; i++)
    s->ifaces[i].seen = false;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (!colon) /* the two header lines */
      continue;
    *colon = '\0';
    char *name = line + strspn(line, " ");
    uint64_t rx, tx, skip;
    if (sscanf(colon + 1,
               "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
               " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
               &rx, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &tx) != 9)
      continue;
    sm_iface *it = find_iface(s, name);
    if (!it && s->all_ifaces && strcmp(name, "lo") != 0)
      it = add_iface(s, name);
    if (!it)
      continue;
    if (it->seen) /* listed twice */
      continue;
    /* A counter going back means the interface was recreated: re-prime. */
    if (dt > 0 && it->primed && rx >= it->rx && tx >= it->tx) {
      char series[SM_NAME_MAX + 8];
      snprintf(series, sizeof series, "%s_rx", it->series);
      s->api->batch_add(out, "c8y_Network", series,
                        round2((double)(rx - it->rx) / dt), "B/s");
      snprintf(series, sizeof series, "%s_tx", it->series);
      s->api->batch_add(out, "c8y_Network", series,
                        round2((double)(tx - it->tx) / dt), "B/s");
    }
    it->rx = rx;
    it->tx = tx;
    it->seen = true;
    it->primed = true;
    it->warned = false;
  }
  fclose(f);
  for (size_t i = 0; i < s->nifaces; i++) {
    sm_iface *it = &s->ifaces[i];
    if (!it->seen) {
      if (!it->warned && !s->all_ifaces)
        s->api->log(self, C8Y_LOG_WARNING, "interfaces: %s: not in net/dev",
                    it->name);
      it->warned = true;
      it->primed = false; /* stale counters: re-prime when it is back */
    }
  }
  s->last_uptime = up;
}

static int produce(c8y_plugin *self, c8y_batch *out, void *user_data) {
  sm *s = user_data;
  s->api->batch_set_type(out, "c8y_SystemMetrics");
  s->measured = true;
  if (s->cpu)
    add_cpu(self, s, out);
  if (s->memory)
    add_memory(self, s, out);
  if (s->disk)
    add_disks(self, s, out);
  double up = (s->uptime || s->network) ? read_uptime(s) : -1;
  if (s->uptime && up >= 0)
    s->api->batch_add(out, "c8y_Uptime", "uptime", round2(up), "s");
  if (s->network)
    add_network(self, s, out, up);
  return C8Y_OK;
}

/* c8y_MeasurementRequestOperation (517,<device>,<requestName>): Cumulocity's
 * "Manual status update" page (fragment library, measurement-request.md):
 * "There is no additional configuration to specify the set of requested
 * data points available. We recommend triggering an upload of the complete
 * device state." So every request name gets all this plugin measures, now,
 * in a batch of its own (ABI 1.2). Runs on the plugin's worker like
 * produce(), never at the same time, so the rate bases are shared: the
 * next periodic reading's rates start from this one. */
static int on_measurement_request(c8y_plugin *self, c8y_operation *op,
                                  void *user_data) {
  sm *s = user_data;
  const c8y_api *api = s->api;
  if (!s->measured && (s->cpu || s->network)) {
    /* The first reading only primes the rates: one now, the real one a
     * moment later, so the answer holds every data point. */
    c8y_batch *prime = api->batch_begin(self);
    if (prime) {
      produce(self, prime, s);
      api->batch_discard(prime);
    }
    for (int t = 0; t < SM_PRIME_MS && !api->op_cancelled(op); t += 50)
      nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
  }
  c8y_batch *b = api->batch_begin(self);
  if (!b)
    return api->op_fail(op, "the agent is stopping");
  int rc = produce(self, b, s);
  if (rc == C8Y_OK)
    rc = api->batch_commit(b); /* releases b */
  else
    api->batch_discard(b);
  if (rc != C8Y_OK) {
    char why[200];
    snprintf(why, sizeof why, "the measurement was not queued: %s",
             api->status_str(rc));
    return api->op_fail(op, why);
  }
  const char *name = api->op_field_count(op) > 0 ? api->op_field(op, 0) : "";
  api->log(self, C8Y_LOG_INFO, "measured now for request '%s'",
           name ? name : "");
  return api->op_succeed(op, NULL);
}

/* Splits a space-separated list; calls fn for each word. */
static int each_word(const char *list, int (*fn)(sm *, const char *), sm *s) {
  const char *p = list;
  while (*p) {
    p += strspn(p, " \t");
    size_t n = strcspn(p, " \t");
    if (n == 0)
      break;
    char word[256];
    if (n >= sizeof word)
      return -1;
    memcpy(word, p, n);
    word[n] = '\0';
    if (fn(s, word) != 0)
      return -1;
    p += n;
  }
  return 0;
}

static int add_mount(sm *s, const char *path) {
  if (path[0] != '/' || s->nmounts == SM_MAX_ITEMS)
    return -1;
  sm_mount *m = &s->mounts[s->nmounts++];
  snprintf(m->path, sizeof m->path, "%s", path);
  if (strcmp(path, "/") == 0)
    snprintf(m->name, sizeof m->name, "root");
  else
    sanitize(path + 1, m->name, sizeof m->name);
  return 0;
}

static int add_iface_word(sm *s, const char *name) {
  if (strlen(name) >= SM_NAME_MAX || find_iface(s, name))
    return -1;
  return add_iface(s, name) ? 0 : -1;
}

static int init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  sm *s = calloc(1, sizeof *s);
  if (!s)
    return C8Y_ENOMEM;
  s->api = api;
  s->last_uptime = -1;
  int64_t interval = 60;
  int rc = api->config_int(self, "interval", 60, &interval);
  if (rc == C8Y_OK && (interval < 1 || interval > 86400)) {
    api->log(self, C8Y_LOG_ERROR, "interval: must be 1..86400 s, got %lld",
             (long long)interval);
    rc = C8Y_EINVAL;
  }
  const char *root = api->config_string(self, "proc_root", "/proc");
  if (rc == C8Y_OK && (root[0] != '/' || strlen(root) >= sizeof s->proc_root)) {
    api->log(self, C8Y_LOG_ERROR, "proc_root: not an absolute path: '%s'",
             root);
    rc = C8Y_EINVAL;
  }
  snprintf(s->proc_root, sizeof s->proc_root, "%s", root);
  const char *keys[] = {"cpu", "memory", "disk", "network", "uptime"};
  int *flags[] = {&s->cpu, &s->memory, &s->disk, &s->network, &s->uptime};
  for (size_t i = 0; i < 5; i++)
    if (api->config_bool(self, keys[i], 1, flags[i]) != C8Y_OK)
      rc = C8Y_EINVAL;
  const char *mounts = api->config_string(self, "mounts", "/");
  if (each_word(mounts, add_mount, s) != 0) {
    api->log(self, C8Y_LOG_ERROR,
             "mounts: want up to %d absolute paths separated by spaces, "
             "got '%s'",
             SM_MAX_ITEMS, mounts);
    rc = C8Y_EINVAL;
  }
  const char *ifaces = api->config_string(self, "interfaces", "");
  if (each_word(ifaces, add_iface_word, s) != 0) {
    api->log(self, C8Y_LOG_ERROR,
             "interfaces: want up to %d distinct interface names separated "
             "by spaces, got '%s'",
             SM_MAX_ITEMS, ifaces);
    rc = C8Y_EINVAL;
  }
  s->all_ifaces = s->nifaces == 0;
  int request = 1;
  if (api->config_bool(self, "measurement_request", 1, &request) != C8Y_OK)
    rc = C8Y_EINVAL;
  if (rc == C8Y_OK)
    rc = api->add_producer(self, "system_metrics", (uint32_t)interval * 1000u,
                           produce, s);
  /* Measuring now needs a batch outside produce() (ABI 1.2): an older agent
   * does not get 517 announced. */
  bool sdk = C8Y_API_HAS(api, batch_begin) && C8Y_API_HAS(api, batch_commit) &&
             C8Y_API_HAS(api, batch_discard);
  if (rc == C8Y_OK && request && sdk)
    rc = api->add_operation(self, "517", 0, on_measurement_request, s);
  else if (rc == C8Y_OK && request)
    api->log(self, C8Y_LOG_NOTICE,
             "this agent lacks SDK 1.2 (batch_begin): "
             "c8y_MeasurementRequestOperation (517) is not handled");
  if (rc != C8Y_OK) {
    free(s);
    return rc;
  }
  *user_data = s;
  return C8Y_OK;
}

static void fini(c8y_plugin *self, void *user_data) { free(user_data); }

C8Y_PLUGIN(.name = "system_metrics", .version = "1.0.0", .init = init,
           .fini = fini);
