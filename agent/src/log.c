#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static atomic_int log_level = LOG_LVL_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

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

void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap) {
  if (level > atomic_load(&log_level))
    return;
  if (level < 0)
    level = 0;
  if (level > 7)
    level = 7;
  char line[2048];
  int n = vsnprintf(line, sizeof line, fmt, ap);
  if (n < 0)
    return;
  /* One record per line: embedded newlines would split a journald entry. */
  for (char *p = line; *p; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  pthread_mutex_lock(&log_lock);
  if (level <= LOG_LVL_ERROR) {
    size_t pl = prefix ? strlen(prefix) : 0, at = 0;
    const char *parts[3] = {prefix ? prefix : "", prefix ? ": " : "", line};
    size_t lens[3] = {pl, prefix ? 2 : 0, strlen(line)};
    for (int k = 0; k < 3; k++) {
      size_t take = lens[k] < sizeof last_error - 1 - at
                        ? lens[k]
                        : sizeof last_error - 1 - at;
      memcpy(last_error + at, parts[k], take);
      at += take;
    }
    last_error[at] = '\0';
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

void log_last_error(char *out, size_t len) {
  if (!out || len == 0)
    return;
  pthread_mutex_lock(&log_lock);
  snprintf(out, len, "%s", last_error);
  pthread_mutex_unlock(&log_lock);
}
