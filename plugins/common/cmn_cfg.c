#define _POSIX_C_SOURCE 200809L
#include "cmn_cfg.h"

#include "cmn_path.h"

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

int cmn_cfg_list(const c8y_api *api, c8y_plugin *self, const char *key,
                 const cmn_cfg_list_rule *rule, cmn_cfg_pair *out, size_t max,
                 size_t *n, char **buf) {
  *n = 0;
  *buf = strdup(api->config_string(self, key, ""));
  if (!*buf)
    return C8Y_ENOMEM;
  char *save = NULL;
  for (char *tok = strtok_r(*buf, " \t", &save); tok;
       tok = strtok_r(NULL, " \t", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq || eq == tok || !rule->value_ok(eq + 1)) {
      api->log(self, C8Y_LOG_ERROR, "%s: entry '%s' is not %s", key, tok,
               rule->form);
      return C8Y_EINVAL;
    }
    *eq = '\0';
    if (!rule->key_ok(tok)) {
      api->log(self, C8Y_LOG_ERROR, "%s: %s '%s' %s", key, rule->noun, tok,
               rule->key_rule);
      return C8Y_EINVAL;
    }
    for (size_t i = 0; i < *n; i++) {
      if (strcmp(out[i].key, tok) == 0) {
        api->log(self, C8Y_LOG_ERROR, "%s: %s '%s' is listed twice", key,
                 rule->noun, tok);
        return C8Y_EINVAL;
      }
    }
    if (*n == max) {
      api->log(self, C8Y_LOG_ERROR, "%s: more than %zu %s", key, max,
               rule->plural);
      return C8Y_EINVAL;
    }
    out[*n].key = tok;
    out[*n].value = eq + 1;
    (*n)++;
  }
  return C8Y_OK;
}
