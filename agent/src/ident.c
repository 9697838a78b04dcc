#include "ident.h"

#include <stddef.h>
#include <string.h>

/* Length of the UTF-8 sequence at s, or 0 if it is not valid UTF-8. Sets
 * *cp to the code point. */
static size_t utf8_seq(const unsigned char *s, unsigned long *cp) {
  unsigned char c = s[0];
  size_t n;
  unsigned long v, min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    n = 2, v = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, v = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0; /* also stops at the terminating NUL */
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
    return 0;
  *cp = v;
  return n;
}

const char *ident_check(const char *id, bool root) {
  if (!id || !*id)
    return "is empty";
  size_t len = strlen(id);
  if (len > IDENT_MAX_BYTES)
    return "is longer than 200 bytes";
  if (id[0] == ' ' || id[0] == '\t' || id[len - 1] == ' ' ||
      id[len - 1] == '\t')
    return "begins or ends with whitespace";
  const unsigned char *s = (const unsigned char *)id;
  while (*s) {
    unsigned long cp;
    size_t n = utf8_seq(s, &cp);
    if (n == 0)
      return "is not valid UTF-8";
    if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F))
      return "contains a control character";
    switch (cp) {
    case '/':
      return "contains '/' (MQTT topic separator)";
    case '+':
      return "contains '+' (MQTT wildcard)";
    case '#':
      return "contains '#' (MQTT wildcard)";
    case ',':
      return "contains ',' (SmartREST field separator)";
    case '"':
      return "contains '\"' (SmartREST quote)";
    case ':':
      if (root)
        return "contains ':' (the MQTT clientId uses ':' as separator)";
      break;
    default:
      break;
    }
    s += n;
  }
  return NULL;
}

bool ident_plugin_name_ok(const char *name) {
  if (!name)
    return false;
  size_t n = 0;
  for (const char *c = name; *c; c++, n++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
      return false;
  return n >= 1 && n <= IDENT_PLUGIN_NAME_MAX;
}
