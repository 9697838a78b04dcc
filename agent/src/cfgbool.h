/* cfgbool: the one rule for the words a boolean setting accepts: true, yes,
 * on, 1 and false, no, off, 0, in any case. Used by config (agent.ini and
 * every [plugin.*] key read with config_bool) and, compiled into the bundled
 * plugins' common library, by cmn_cfg for files the plugins read themselves
 * (exec's operations.d), so a word that works in one works in the other. */
#ifndef C8Y_CFGBOOL_H
#define C8Y_CFGBOOL_H

#include <stdbool.h>

/* 0 with *out set, or C8Y_EINVAL (not one of the words, or NULL). */
int cfgbool_parse(const char *s, bool *out);

#endif
