/* registration: what a connect tells the platform about the device, which
 * keeps nothing between sessions (clean session): 100 (name, type), 110
 * (hardware), 122 (agent), the agent's own service (102 ... up), every
 * child (101), 114 (the supported operations), the certificate expiry
 * alarm, 117 (required interval), each child's own 114; then, once the
 * platform acknowledged all of it, the subscriptions for operations
 * (s/ds, devicecontrol/notifications, s/dc/<xid>) and the 500 that asks
 * for the pending ones. Children plugins add later are announced on their
 * own (101 and their 114) once the registration is through.
 *
 * The content comes from the configuration, the registry, profile (the
 * 114 lists) and services; the lines go through upstream, volatile and
 * tagged (UPSTREAM_TAG_REGISTRATION, UPSTREAM_TAG_PENDING with the
 * connect's number), so the link sends them before anything plugins queued
 * earlier and hands their acknowledgements back here. The link (link.h)
 * owns the transport and the window; this module only what is said.
 * Main loop only. */
#ifndef C8Y_REGISTRATION_H
#define C8Y_REGISTRATION_H

#include "config.h"
#include "registry.h"
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct registration registration;

/* The link's side: the subscriptions of a connect. */
typedef struct registration_host {
  void *ctx;
  void (*subscribe)(void *ctx, const char *topic, int qos);
} registration_host;

/* cfg is read again at every connect (a reload may change it). All
 * borrowed. C8Y_ENOMEM. */
int registration_new(const agent_config *cfg, registry *reg, const upstream *up,
                     const registration_host *host, registration **out);
void registration_free(registration *r);

/* A connect is up: queues the registration and subscribes s/e and s/dat;
 * with nothing to wait for, subscribes for operations and queues the 500
 * at once. Also after a reload changed plugins or children. */
void registration_start(registration *r);
/* The tag of this connect's registration lines while some are not yet
 * acknowledged (only they may go then), else UPSTREAM_NO_TAG. */
upstream_tag registration_pending_lines(const registration *r);
/* This connect's 500 is queued: everything else may go, measurements
 * included. */
bool registration_operations_requested(const registration *r);
/* A tag of kind UPSTREAM_TAG_REGISTRATION or UPSTREAM_TAG_PENDING was
 * acknowledged (others are ignored). Returns true when it was this
 * connect's 500: the platform now publishes the pending operations. */
bool registration_acked(registration *r, upstream_tag tag);
/* The connect was lost: its registration lines and 500 still queued are
 * dropped; the next connect says it all again. */
void registration_lost(registration *r);
/* Announces children added since the registration, once it is through;
 * cheap when none was added. */
void registration_announce_children(registration *r);

#endif
