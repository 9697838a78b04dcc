#define _POSIX_C_SOURCE 200809L
#include "cmn_cfg.h"

#include "cfgbool.h"
#include "cmn_path.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cmn_cfg_int(const c8y_api *api, c8y_plugin *self, const char *key,
                int64_t fallback, int64_t lo, int64_t hi, const char *unit,
                int64_t *out) {
  int rc = api->config_int(self, key, fallback, out);
  if (rc == C8Y_OK && (*out < lo || *out > hi)) {
    api->log(self, C8Y_LOG_ERROR, "%s: %lld is out of range (%lld..%lld%s)",
             key, (long long)*out, (long long)lo, (long long)hi, unit);
    rc = C8Y_EINVAL;
  }
  return rc;
}

int cmn_cfg_parse_bool(const char *s, bool *out) {
  return cfgbool_parse(s, out);
}

int cmn_cfg_program(const c8y_api *api, c8y_plugin *self, const char *key,
                    const char **out) {
  const char *v = api->config_string(self, key, "");
  *out = v;
  if (!v[0])
    return C8Y_OK;
  struct stat st;
  if (v[0] != '/' || stat(v, &st) != 0 || !S_ISREG(st.st_mode) ||
      access(v, X_OK) != 0) {
    api->log(self, C8Y_LOG_ERROR,
             "%s: '%s' is not an executable file (absolute path expected)", key,
             v);
    return C8Y_EINVAL;
  }
  char why[600];
  if (cmn_path_check_program(v, (uid_t)-1, NULL, why, sizeof why) != 0) {
    api->log(self, C8Y_LOG_ERROR,
             "%s: %s; only root and the agent's user may write what the agent "
             "runs",
             key, why);
    return C8Y_EINVAL;
  }
  return C8Y_OK;
}

/* "<file>:<line>: " of `key`, or "" (an agent before ABI 1.3, key unset). */
static const char *origin_of(const c8y_api *api, c8y_plugin *self,
                             const char *key, char *out, size_t n) {
  const char *o =
      C8Y_API_HAS(api, config_origin) ? api->config_origin(self, key) : NULL;
  snprintf(out, n, "%s%s", o ? o : "", o ? ": " : "");
  return out;
}

static void entry_verror(const c8y_api *api, c8y_plugin *self, const char *key,
                         const char *entry, int entry_len, const char *fmt,
                         va_list ap) {
  char why[700], where[600];
  vsnprintf(why, sizeof why, fmt, ap);
  api->log(self, C8Y_LOG_ERROR, "%s%s: entry '%.*s': %s",
           origin_of(api, self, key, where, sizeof where), key, entry_len,
           entry, why);
}

static void entry_error(const c8y_api *api, c8y_plugin *self, const char *key,
                        const char *entry, int entry_len, const char *fmt, ...)
    C8Y_PRINTF(6, 7);
static void entry_error(const c8y_api *api, c8y_plugin *self, const char *key,
                        const char *entry, int entry_len, const char *fmt,
                        ...) {
  va_list ap;
  va_start(ap, fmt);
  entry_verror(api, self, key, entry, entry_len, fmt, ap);
  va_end(ap);
}

void cmn_cfg_entry_error(const c8y_api *api, c8y_plugin *self, const char *key,
                         const cmn_cfg_pair *p, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  entry_verror(api, self, key, p->entry, p->entry_len, fmt, ap);
  va_end(ap);
}

static int blank(char c) { return c == ' ' || c == '\t'; }

/* One entry of `text` from *pos: unquoted into *out (NUL-terminated), with
 * *eq the position of its first '=' outside quotes (NULL: none). Returns 0,
 * or -1 for an unterminated quote (the entry then runs to the end). */
static int next_entry(const char *text, size_t *pos, char **out, char **eq) {
  const char *s = text + *pos;
  char *o = *out;
  *eq = NULL;
  int rc = 0;
  while (*s && !blank(*s)) {
    if (*s != '"') {
      if (*s == '=' && !*eq)
        *eq = o;
      *o++ = *s++;
      continue;
    }
    s++;
    while (*s && *s != '"') {
      if (*s == '\\' && (s[1] == '"' || s[1] == '\\'))
        s++;
      *o++ = *s++;
    }
    if (!*s) {
      rc = -1;
      break;
    }
    s++; /* the closing quote */
  }
  *o++ = '\0';
  *pos = (size_t)(s - text);
  *out = o;
  return rc;
}

int cmn_cfg_list(const c8y_api *api, c8y_plugin *self, const char *key,
                 const cmn_cfg_list_rule *rule, cmn_cfg_pair *out, size_t max,
                 size_t *n, char **buf) {
  *n = 0;
  const char *text = api->config_string(self, key, "");
  /* Unquoted entries are never longer than their text, and each ends
   * where a blank (or the end) was. */
  *buf = malloc(strlen(text) + 1);
  if (!*buf)
    return C8Y_ENOMEM;
  char *next = *buf;
  size_t pos = 0, given = 0;
  for (;;) {
    while (blank(text[pos]))
      pos++;
    if (!text[pos])
      break;
    given++;
    const char *entry = text + pos;
    char *k = next, *eq;
    int quote = next_entry(text, &pos, &next, &eq);
    int len = (int)(text + pos - entry);
    if (quote != 0) {
      entry_error(api, self, key, entry, len, "no closing '\"'");
      break; /* where the next entry would start is unknown */
    }
    if (!eq || eq == k || !rule->value_ok(eq + 1)) {
      entry_error(api, self, key, entry, len, "not %s", rule->form);
      continue;
    }
    *eq = '\0';
    if (!rule->key_ok(k)) {
      entry_error(api, self, key, entry, len, "%s '%s' %s", rule->noun, k,
                  rule->key_rule);
      continue;
    }
    bool twice = false;
    for (size_t i = 0; i < *n && !twice; i++)
      twice = strcmp(out[i].key, k) == 0;
    if (twice) {
      entry_error(api, self, key, entry, len,
                  "%s '%s' is listed twice (the first one is used)", rule->noun,
                  k);
      continue;
    }
    if (*n == max) {
      entry_error(api, self, key, entry, len, "more than %zu %s", max,
                  rule->plural);
      continue;
    }
    out[*n] = (cmn_cfg_pair){
        .key = k, .value = eq + 1, .entry = entry, .entry_len = len};
    (*n)++;
  }
  if (given > 0 && *n == 0) {
    char where[600];
    api->log(self, C8Y_LOG_ERROR, "%s%s: no usable entry",
             origin_of(api, self, key, where, sizeof where), key);
    return C8Y_EINVAL;
  }
  return C8Y_OK;
}
