/* Also compiled into the bundled plugins' common library, which gets no
 * _GNU_SOURCE from the build. */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "cfgbool.h"

#include <c8y/plugin.h>
#include <stddef.h>
#include <strings.h>

int cfgbool_parse(const char *s, bool *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  if (!s || !out)
    return C8Y_EINVAL;
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return C8Y_EINVAL;
}
