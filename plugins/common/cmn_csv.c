#include "cmn_csv.h"

#include <string.h>

size_t cmn_csv_len(const char *s) {
  size_t n = strlen(s), quotes = 0, escapes = 0, run = 0;
  int quote = n > 0 && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' ||
                        s[n - 1] == '\t');
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"') {
      quotes++;
      /* The agent's encoder adds a backslash after an odd run of them
       * before a quote, so the platform does not read \" as an escape. */
      escapes += run % 2;
    }
    run = s[i] == '\\' ? run + 1 : 0;
    if (s[i] == '"' || s[i] == ',' || s[i] == '\r' || s[i] == '\n' ||
        s[i] == '\t')
      quote = 1;
  }
  escapes += run % 2; /* before the closing quote */
  return quote ? n + quotes + escapes + 2 : n;
}
