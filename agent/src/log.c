#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static atomic_int log_level = LOG_LVL_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
/* guarded by log_lock: the last warning or error, for status reports */
static char last_line[512];
static int last_level;
static long long last_ms;

/* The last error line, for the reason a fatal exit gives systemd. */
static char last_error[512];

static const char *const level_names[8] = {
    "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"};

void log_set_level(int level) {
  if (level < LOG_LVL_ERROR)
    level = LOG_LVL_ERROR;
  if (level > LOG_LVL_DEBUG)
    level = LOG_LVL_DEBUG;
  atomic_store(&log_level, level);
}

int log_get_level(void) { return atomic_load(&log_level); }

int log_level_from_name(const char *name) {
  for (int i = LOG_LVL_ERROR; i <= LOG_LVL_DEBUG; i++)
    if (strcasecmp(name, level_names[i]) == 0)
      return i;
  if (strcasecmp(name, "warn") == 0)
    return LOG_LVL_WARNING;
  return -1;
}

/* prefix, ": ", line into a fixed buffer, cut if need be. */
static void join3(char *out, size_t size, const char *const parts[3]) {
  size_t k = 0;
  for (size_t i = 0; i < 3; i++)
    for (const char *c = parts[i]; *c && k + 1 < size; c++)
      out[k++] = *c;
  out[k] = 0;
}

static void (*log_tap_fn)(void *ctx, int level, const char *line);
static void *log_tap_ctx;

void log_set_tap(void (*fn)(void *ctx, int level, const char *line),
                 void *ctx) {
  pthread_mutex_lock(&log_lock);
  log_tap_fn = fn;
  log_tap_ctx = ctx;
  pthread_mutex_unlock(&log_lock);
}

void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap) {
  if (level > atomic_load(&log_level))
    return;
  if (level < 0)
    level = 0;
  if (level > 7)
    level = 7;
  char raw[2048];
  int n = vsnprintf(raw, sizeof raw, fmt, ap);
  if (n < 0)
    return;
  /* One record per line: embedded newlines would split a journald entry,
   * and other control bytes from the network (escape sequences) must not
   * reach a terminal: shown as \xNN. */
  char line[sizeof raw * 4];
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)raw; *p; p++) {
    if (*p == '\n' || *p == '\r')
      line[o++] = ' ';
    else if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
      o += (size_t)snprintf(line + o, sizeof line - o, "\\x%02x", *p);
    else
      line[o++] = (char)*p;
  }
  line[o] = 0;
  pthread_mutex_lock(&log_lock);
  if (level <= LOG_LVL_WARNING) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* A cut line is still the right hint. */
    const char *parts[] = {prefix ? prefix : "", prefix ? ": " : "", line};
    join3(last_line, sizeof last_line, parts);
    last_level = level;
    last_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (level <= LOG_LVL_ERROR)
      join3(last_error, sizeof last_error, parts);
  }
  if (log_tap_fn) {
    const char *parts[] = {prefix ? prefix : "", prefix ? ": " : "", line};
    char whole[sizeof line];
    join3(whole, sizeof whole, parts);
    log_tap_fn(log_tap_ctx, level, whole);
  }
  if (getenv("JOURNAL_STREAM"))
    fprintf(stderr, "<%d>%s%s%s\n", level, prefix ? prefix : "",
            prefix ? ": " : "", line);
  else
    fprintf(stderr, "c8y-agent[%s] %s%s%s\n", level_names[level],
            prefix ? prefix : "", prefix ? ": " : "", line);
  fflush(stderr);
  pthread_mutex_unlock(&log_lock);
}

void log_msg(int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_vmsg(level, NULL, fmt, ap);
  va_end(ap);
}

long long log_last_problem(char *buf, size_t n, int *level) {
  pthread_mutex_lock(&log_lock);
  long long when = last_ms;
  if (buf && n)
    snprintf(buf, n, "%s", last_line);
  if (level)
    *level = last_level;
  pthread_mutex_unlock(&log_lock);
  return when;
}

void log_last_error(char *out, size_t len) {
  if (!out || len == 0)
    return;
  pthread_mutex_lock(&log_lock);
  snprintf(out, len, "%s", last_error);
  pthread_mutex_unlock(&log_lock);
}
