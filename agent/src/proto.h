/* proto: what the agent knows about Cumulocity's static SmartREST 2.0
 * templates, in one table (shared/c8y-protocol.md section 3): for each
 * template id, which queue class an upstream line travels in, whether a
 * newer line replaces the state an older one carries (its replace key, so
 * the queue may drop the older one), whether only the agent itself may send it,
 * and for downstream operation templates their fragment and typed twin.
 * Upstream (1xx-4xx, 500-507) and downstream (510-532) ids do not overlap. */
#ifndef C8Y_PROTO_H
#define C8Y_PROTO_H

#include "outq.h"

#include <stdbool.h>

/* Static operation template id -> fragment ("511" -> "c8y_Command"), or
 * NULL when the id is not a downstream operation template. */
const char *proto_fragment(const char *template_id);
/* Whether a static downstream template delivers operations of this
 * fragment (then a SmartREST copy of its JSON operations is sent too). */
bool proto_fragment_has_template(const char *fragment);
/* 527 and 528 describe the same operation as the richer 531 and 529 sent
 * in the same payload: the twin that supersedes template_id, or NULL. */
const char *proto_richer_twin(const char *template_id);
/* The reverse: the twin that 531 or 529 supersedes, or NULL. */
const char *proto_plain_twin(const char *template_id);

/* Queue class of an upstream line by its template id: 1xx inventory, 2xx
 * measurement, 3xx alarm, 5xx operation status, anything else (4xx events,
 * custom templates) event. */
outq_class proto_class(const char *template_id);
/* Replace key for outq_push: an upstream line that states the current value
 * of something (hardware, firmware, software list, supported operations,
 * ...) makes an older queued one with the same id on the same topic
 * pointless, so its key is its template id (110-119, 121, 122, 143, 150;
 * all fit a byte; 140-142 share 140, see proto_replace_flags); 0 for every
 * other line. */
uint8_t proto_replace_key(const char *template_id);
/* outq_push flags that go with the replace key: the software list is sent
 * as 140 (the head, which sets the list) and 141 chunks (which append) and
 * 142 (removals); all share key 140 and a new 140 makes every queued line
 * of an older list pointless (OUTQ_LIST_HEAD / OUTQ_LIST_CHUNK). 0 for
 * every other template. */
unsigned proto_replace_flags(const char *template_id);
/* Owned by the agent: operation statuses (the engine runs the lifecycle)
 * and the supported-operations list (built from every plugin's handlers).
 * Plugins and the local API may not send them. */
bool proto_agent_owned(const char *template_id);

#endif
