/* cmn_cfg: plugin configuration values checked the same way everywhere,
 * each failure logged as one line naming the key. */
#ifndef C8Y_CMN_CFG_H
#define C8Y_CMN_CFG_H

#include <c8y/plugin.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* config_int of `key` that must lie in lo..hi; the error reads
 * "<key>: <v> is out of range (<lo>..<hi><unit>)". */
int cmn_cfg_int(const c8y_api *api, c8y_plugin *self, const char *key,
                int64_t fallback, int64_t lo, int64_t hi, const char *unit,
                int64_t *out);

/* config_string of `key` (default ""): empty, or an executable regular file
 * given by an absolute path that only trusted writers can change (cmn_path).
 * *out stays borrowed from the config. */
int cmn_cfg_program(const c8y_api *api, c8y_plugin *self, const char *key,
                    const char **out);

/* A boolean written in a file the plugin reads itself: the words the
 * agent's config accepts (cfgbool: true/yes/on/1, false/no/off/0, any
 * case). 0 with *out set, or C8Y_EINVAL. */
int cmn_cfg_parse_bool(const char *s, bool *out);

/* One "key=value" entry of a list-valued setting; `entry` is its text as
 * written (quotes included), for messages. */
typedef struct cmn_cfg_pair {
  const char *key, *value;
  const char *entry;
  int entry_len;
} cmn_cfg_pair;

/* How the entries of a list-valued setting are checked. The texts complete
 * its error lines, e.g. for setting "files":
 *   files: entry 'x': not <form>
 *   files: entry 'k=v': <noun> 'k' <key_rule>
 *   files: entry 'k=v': <noun> 'k' is listed twice (the first one is used)
 *   files: entry 'k=v': more than <max> <plural> */
typedef struct cmn_cfg_list_rule {
  const char *form;
  const char *noun;
  const char *key_rule;
  const char *plural;
  int (*key_ok)(const char *key);
  int (*value_ok)(const char *value);
} cmn_cfg_list_rule;

/* Reads setting `key` (default "") into at most `max` pairs with non-empty,
 * unique keys. Entries are separated by blanks; a key or value holding
 * blanks is written in double quotes, where \" and \\ stand for " and \
 * (name="/var/log/my app.log"). An entry that breaks a rule is logged as
 * "<file>:<line>: <key>: entry '<entry>': <why>" and left out, the others
 * are kept. Returns C8Y_OK, C8Y_ENOMEM, or C8Y_EINVAL when entries were
 * given but none is usable (also logged). The strings live in *buf, which
 * the caller frees, also after an error. */
int cmn_cfg_list(const c8y_api *api, c8y_plugin *self, const char *key,
                 const cmn_cfg_list_rule *rule, cmn_cfg_pair *out, size_t max,
                 size_t *n, char **buf);

/* Logs "<file>:<line>: <key>: entry '<entry>': <why>" for an entry of a
 * list-valued setting that the plugin leaves out after cmn_cfg_list (the
 * file and line when the agent tells them, ABI 1.3). */
void cmn_cfg_entry_error(const c8y_api *api, c8y_plugin *self, const char *key,
                         const cmn_cfg_pair *p, const char *fmt, ...)
    C8Y_PRINTF(5, 6);

#endif
