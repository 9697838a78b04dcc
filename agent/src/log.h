/* log: one-line diagnostics to stderr, journald-friendly.
 * Under systemd (JOURNAL_STREAM set) each line starts with "<N>" so journald
 * records the priority; otherwise a short level word is printed. */
#ifndef C8Y_LOG_H
#define C8Y_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum {
  LOG_LVL_ERROR = 3,
  LOG_LVL_WARNING = 4,
  LOG_LVL_NOTICE = 5,
  LOG_LVL_INFO = 6,
  LOG_LVL_DEBUG = 7
};

/* Lines above `level` are dropped. Thread-safe. */
void log_set_level(int level);
int log_get_level(void);
/* Parses "error", "warning", "notice", "info", "debug"; -1 if unknown. */
int log_level_from_name(const char *name);

void log_msg(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* The last warning or error line printed, copied into buf, its level into
 * *level. Returns when it was logged (unix ms), 0 if none yet. Thread-safe. */
long long log_last_problem(char *buf, size_t n, int *level);
/* Copies the most recent error line (empty if none) into out. */
void log_last_error(char *out, size_t len);

/* Test hook: every printed line (prefix included) is also handed to fn,
 * under the log lock (fn must not log). NULL removes it. */
void log_set_tap(void (*fn)(void *ctx, int level, const char *line), void *ctx);
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
