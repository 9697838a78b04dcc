/* upstream: the one path of a line to the platform, whoever sends it
 * (plugins through plugin_host, the operation engine, the registration of a
 * connect, the services, the local API, the loader's and the renewal's
 * alarms):
 *
 *   fields -> SmartREST line (smartrest) -> topic (s/us, s/us/<child>,
 *   s/uc/<xid>, s/uc/<xid>/<child>) -> queue class, replace key and list
 *   flags (proto, by the template id) -> the durable queue (outq) -> a wake
 *   of the main loop, which drains the queue.
 *
 * Each caller keeps what is its own: a plugin's rate limit and attribution
 * stay in plugin_host, an operation's status order in ops; durability
 * (OUTQ_VOLATILE) and tags are parameters.
 *
 * Tags: a line may carry a tag the transport hands back once the platform
 * acknowledged it. Tags are typed here, in one place, so the module that
 * queued a line and the one that saw it acknowledged agree on what it was
 * without decoding each other's numbers.
 *
 * Thread-safe (outq is; the registry has its own lock). */
#ifndef C8Y_UPSTREAM_H
#define C8Y_UPSTREAM_H

#include "outq.h"
#include "registry.h"

#include <c8y/plugin.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a tagged line is, for the one who sees it acknowledged. */
typedef enum upstream_tag_kind {
  UPSTREAM_TAG_NONE = 0,
  /* An operation's 504/501 (seq: the engine's operation id): its handler
   * runs once the platform has it. */
  UPSTREAM_TAG_OPERATION = 1,
  /* The registration lines of one connect (seq: the connect). */
  UPSTREAM_TAG_REGISTRATION = 2,
  /* The 500 of one connect (seq: the connect). */
  UPSTREAM_TAG_PENDING = 3,
  /* An operation's final status, journaled with its end (seq: the journal
   * id): once the platform has it, the journal may let the status go. */
  UPSTREAM_TAG_STATUS = 4
} upstream_tag_kind;

/* seq stays below UPSTREAM_TAG_SEQ_LIMIT. */
typedef struct upstream_tag {
  upstream_tag_kind kind;
  uint64_t seq;
} upstream_tag;

#define UPSTREAM_TAG_SEQ_LIMIT (UINT64_C(1) << 60)
#define UPSTREAM_NO_TAG ((upstream_tag){UPSTREAM_TAG_NONE, 0})

/* The value outq stores (0 for UPSTREAM_NO_TAG), and back: a batch's tags
 * (outq_batch.tags) read with upstream_tag_of. */
uint64_t upstream_tag_bits(upstream_tag t);
upstream_tag upstream_tag_of(uint64_t bits);
bool upstream_tag_eq(upstream_tag a, upstream_tag b);

/* Where lines go: one per agent (or capture host), shared by every sender. */
typedef struct upstream {
  outq *q;
  /* The 102 of a plugin or the local API registers its service here. */
  registry *reg;
  /* A line was queued (any thread): the main loop drains soon. NULL: no
   * main loop (the plugins are only inspected). */
  void (*wake)(void *ctx);
  void *wake_ctx;
} upstream;

/* The class by template: a custom template's line (s/uc) is an event, a
 * static template's line the class proto gives its id. */
#define UPSTREAM_BY_TEMPLATE OUTQ_NCLASSES

/* s/us or s/us/<child> (xid NULL), s/uc/<xid> or s/uc/<xid>/<child>.
 * C8Y_OK, or C8Y_EINVAL for a child that is no valid device id (ident), an
 * xid that is empty, over 200 bytes or holds '/', '+' or '#', or a topic
 * that does not fit. */
int upstream_topic(const char *xid, const char *child, char *out, size_t len);
/* Whether xid can name a template collection (s/uc/<xid>, s/dc/<xid>). */
bool upstream_xid_ok(const char *xid);
/* The class a line of this template travels in on this topic (above). */
outq_class upstream_class(const char *topic, const char *template_id);

/* Encodes fields into one SmartREST line and queues it on topic in class
 * `cls` (UPSTREAM_BY_TEMPLATE: by fields[0]); an inventory line gets its
 * replace key and list flags from proto (others have none); flags may add
 * OUTQ_VOLATILE. Wakes the main loop once queued. C8Y_OK or, with nothing
 * queued, C8Y_ETOOBIG (over C8Y_MAX_LINE encoded), C8Y_ENOMEM or outq_push's
 * codes. */
int upstream_send(const upstream *u, outq_class cls, const char *topic,
                  const char *const *fields, size_t n, unsigned flags,
                  upstream_tag tag);
/* The same for a line encoded already (its template id is its first
 * field). */
int upstream_send_line(const upstream *u, outq_class cls, const char *topic,
                       const char *line, unsigned flags, upstream_tag tag);
/* Drops queued (not in-flight) lines carrying tag; returns how many. */
size_t upstream_unqueue(const upstream *u, upstream_tag tag);

/* The checks of a static line a plugin (owner) or the local API (owner
 * NULL) sends, then upstream_send by template to s/us or s/us/<child>: the
 * first field a numeric template id; no operation status (5xx) nor 114,
 * which the agent owns, except a plugin's 114 on a service it announced
 * listing only fragments it serves there; a 102 registers its service in
 * u->reg (registry_add_service) so operations for it reach its parent's
 * handlers. A refused line returns C8Y_EINVAL with a static reason in *why
 * (nullable). */
int upstream_send_static(const upstream *u, c8y_plugin *owner,
                         const char *child, const char *const *fields, size_t n,
                         const char **why);
/* A line of custom template collection xid (s/uc), queued as an event. */
int upstream_send_custom(const upstream *u, const char *xid, const char *child,
                         const char *const *fields, size_t n, const char **why);

#endif
