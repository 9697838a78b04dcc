/* cmn_csv: SmartREST field sizes as the agent's encoder writes them. */
#ifndef C8Y_CMN_CSV_H
#define C8Y_CMN_CSV_H

#include <c8y/plugin.h>

#include <stddef.h>

/* What a line keeps free besides its one long text field (a 503's output, a
 * 113's configuration): room for the template id, the fragment and the other
 * fields with their commas, and for what cmn_csv_len may undercount. */
#define CMN_CSV_HEADROOM 1000
/* The longest such text field, encoded. */
#define CMN_CSV_TEXT_MAX (C8Y_MAX_LINE - CMN_CSV_HEADROOM)

/* Length of `s` as one encoded SmartREST field (quoted and with doubled
 * quotes where the encoder does that). Plugins cannot link the core's codec,
 * so this repeats its quoting rule. It counts control characters the core
 * drops, but not the backslash the core adds after an odd run of backslashes
 * before a quote (agent/src/smartrest.c): such fields may be undercounted by
 * one byte per quote plus one. */
size_t cmn_csv_len(const char *s);

#endif
