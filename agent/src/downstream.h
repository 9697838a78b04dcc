/* downstream: everything Cumulocity sends, routed by topic on the main
 * loop. s/ds -> the operation engine (124, the managed-object id, -> the
 * REST client), devicecontrol/notifications (JSON operations) -> the
 * engine, s/dc/<xid> -> the engine for template operations, else the
 * plugin that registered the custom template's message id, s/dat (71, the
 * JWT) -> the transfers, s/e -> the log. */
#ifndef C8Y_DOWNSTREAM_H
#define C8Y_DOWNSTREAM_H

#include "http.h"
#include "ops.h"
#include "registry.h"

#include <stddef.h>

typedef struct downstream {
  ops *ops;
  http_ctx *http; /* NULL: no transfers */
  registry *reg;
} downstream;

void downstream_handle(const downstream *d, const char *topic,
                       const char *payload, size_t len);

#endif
