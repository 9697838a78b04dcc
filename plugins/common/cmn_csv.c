#include "cmn_csv.h"

#include <string.h>

size_t cmn_csv_len(const char *s) {
  size_t n = strlen(s), len = n, quotes = 0;
  int quote = n > 0 && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' ||
                        s[n - 1] == '\t');
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"')
      quotes++;
    if (s[i] == '"' || s[i] == ',' || s[i] == '\r' || s[i] == '\n' ||
        s[i] == '\t')
      quote = 1;
  }
  return quote ? len + quotes + 2 : len;
}
