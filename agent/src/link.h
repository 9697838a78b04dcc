/* link: the MQTT link as the main loop sees it: the transport and its
 * window. Owns the session, the door through which Paho's threads hand
 * events to the main loop, the link state with its reconnect backoff and
 * liveness probe, and the window of batches in flight (queue -> Paho ->
 * PUBACK -> outq_ack and the tags: an operation's to the engine, the
 * registration's to it). What a connect says first, and the subscriptions
 * it makes, is registration.h's: the link sends only those lines until the
 * platform acknowledged them, and no measurements before the 500.
 * Everything except the event door runs on the main loop's thread. */
#ifndef C8Y_LINK_H
#define C8Y_LINK_H

#include "config.h"
#include "registry.h"
#include "runtime.h"
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct link_ctx link_ctx;

typedef struct link_host {
  void *ctx;
  /* Any thread: an event is waiting for link_process_events. */
  void (*wake)(void *ctx);
  /* "connected" / "disconnected", for the service manager's status. */
  void (*state)(void *ctx, const char *what);
  /* The platform refused the credentials AGENT_MAX_AUTH_FAILURES times. */
  void (*gave_up)(void *ctx);
  /* Main loop, may be NULL: the outcome of link_try_identity (why: the
   * refusal). Called on acceptance before the device is announced. */
  void (*identity_tried)(void *ctx, bool accepted, const char *why);
} link_host;

typedef struct link_params {
  const agent_config *cfg; /* read again after every reload */
  const upstream *up;      /* its queue is the one drained */
  /* Gets what the platform acknowledged, what a loss left in flight, that
   * the pending operations were requested, and what arrived. */
  runtime *rt;
  registry *reg;
  const char *queue_dir; /* rejected.log goes here */
  const bool *running;   /* false once the agent stops */
  int max_auth_failures;
  link_host host;
} link_params;

int link_new(const link_params *p, link_ctx **out);
/* Creates the MQTT session (not yet connected). */
int link_open_session(link_ctx *l, char *err, size_t errlen);
/* Disconnects cleanly (the broker drops the will) and frees the session. */
void link_close_session(link_ctx *l, int timeout_ms);
/* The same as the process ends: Paho's client is not destroyed (see
 * session_free_at_exit), which saves its 100 ms thread shutdown. */
void link_end_session(link_ctx *l, int timeout_ms);
void link_free(link_ctx *l);

/* Main loop: connects when the backoff allows, watches liveness and moves
 * queued batches into the window. Returns the next time it needs to run
 * (ms, monotonic) or -1. */
long long link_step(link_ctx *l, long long now);
/* Moves queued batches into the in-flight window while the link is up. */
void link_drain(link_ctx *l);
/* Handles what Paho's threads posted. While stopping, only deliveries and
 * losses are taken; the rest is freed. */
void link_process_events(link_ctx *l, bool stopping);
/* Redoes the registration (after a reload changed plugins or children). */
void link_announce(link_ctx *l);
/* What a transfer waits for (any thread; http.h's request functions, ctx
 * the link): an empty s/uat (answered by 71 on s/dat), a 123 on s/us or
 * s/us/<child> (answered by 124). Sent by link_step while the link is up
 * (QoS 0: a queued request would be stale). */
void link_want_token(void *link);
void link_want_identity(void *link, const char *child);
/* The link as the runtime's transport (runtime.h). */
void link_transport(link_ctx *l, runtime_transport *out);
/* Announces children added since the registration (101, their own 114)
 * once it is through; cheap when nothing was added. */
void link_announce_children(link_ctx *l);

/* Certificate renewal: drops the link cleanly (no will) and connects again
 * at once with cert_file/key_file; the outcome arrives through
 * host.identity_tried. After an acceptance later connects use the
 * configured names again (the caller has put the new pair there); after a
 * refusal the link reconnects at once with the configured pair, without
 * counting it as an authentication failure. C8Y_ESTATE while the link is
 * not up or a try runs, C8Y_ENOMEM. */
int link_try_identity(link_ctx *l, const char *cert_file, const char *key_file);

bool link_is_up(const link_ctx *l);
/* "down", "connecting" or "up" */
const char *link_state_name(const link_ctx *l);
/* "ssl://host:port" */
const char *link_uri(const link_ctx *l);

#endif
