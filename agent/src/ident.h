/* ident: the one rule for device identifiers (the root's [device] id, child
 * ids from add_child, device ids in s/ds records and in the journal), and
 * the one rule for plugin names.
 *
 * An id becomes an MQTT topic segment (s/us/<id>), a SmartREST field and an
 * external id, so it must be: 1..200 bytes of valid UTF-8 (no overlong
 * forms, surrogates or code points above U+10FFFF); free of control
 * characters (C0, DEL, C1); free of the MQTT wildcards and separator
 * '/', '+', '#'; free of the SmartREST field syntax ',' and '"'; and not
 * begin or end with whitespace (unquoted SmartREST fields are trimmed).
 * The root id additionally must not contain ':' (the clientId separator). */
#ifndef C8Y_IDENT_H
#define C8Y_IDENT_H

#include <stdbool.h>

#define IDENT_MAX_BYTES 200

/* NULL when `id` is acceptable, else a static reason ("contains '/'"). */
const char *ident_check(const char *id, bool root);

#define IDENT_PLUGIN_NAME_MAX 32
/* A plugin name (c8y_plugin_info.name, the <name> of [plugin.<name>]) is
 * [a-z0-9_]{1,32}: it is also a config section and a file name. */
bool ident_plugin_name_ok(const char *name);

#endif
