/* cmn_csv: SmartREST field sizes as the agent's encoder writes them. */
#ifndef C8Y_CMN_CSV_H
#define C8Y_CMN_CSV_H

#include <stddef.h>

/* Length of `s` as one encoded SmartREST field (quoted and with doubled
 * quotes where the encoder does that). Plugins cannot link the core's codec,
 * so this repeats its quoting rule. It counts control characters the core
 * drops, but not the backslash the core adds after an odd run of backslashes
 * before a quote (agent/src/smartrest.c): such fields may be undercounted by
 * one byte per quote plus one. */
size_t cmn_csv_len(const char *s);

#endif
