/* plugins/common cmn_csv_len must predict exactly what the agent's encoder
 * sends, or a plugin's "fits in 16000 bytes" check is wrong. */
#include "cmn_csv.h"
#include "smartrest.h"

#include <glib.h>
#include <stdlib.h>
#include <string.h>

static void test_matches_encoder(void) {
  const char *cases[] = {
      "plain",       "",          "a,b",         " lead",
      "trail ",      "tab\there", "q\"uote",     "\"\"",
      "line\nbreak", "cr\rhere",  "back\\slash", "odd\\\"quote",
      "even\\\\\"q", "end\\",     "end,\\",      "end,\\\\",
      "x\\\\\\\",y"};
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *enc = smartrest_encode_field(cases[i]);
    g_assert_nonnull(enc);
    if (strlen(enc) != cmn_csv_len(cases[i]))
      g_error("case %zu <%s>: encoder %zu bytes <%s>, cmn_csv_len %zu", i,
              cases[i], strlen(enc), enc, cmn_csv_len(cases[i]));
    free(enc);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/plugins/common/csv-len-matches-encoder",
                  test_matches_encoder);
  return g_test_run();
}
