#include "upstream.h"

#include "ident.h"
#include "proto.h"
#include "smartrest.h"

#include <stdio.h>
#include <string.h>

/* ---- tags ---- */

#define KIND_SHIFT 60

uint64_t upstream_tag_bits(upstream_tag t) {
  if (t.kind == UPSTREAM_TAG_NONE)
    return 0;
  return ((uint64_t)t.kind << KIND_SHIFT) |
         (t.seq & (UPSTREAM_TAG_SEQ_LIMIT - 1));
}

upstream_tag upstream_tag_of(uint64_t bits) {
  upstream_tag t = {(upstream_tag_kind)(bits >> KIND_SHIFT),
                    bits & (UPSTREAM_TAG_SEQ_LIMIT - 1)};
  if (t.kind == UPSTREAM_TAG_NONE || t.kind > UPSTREAM_TAG_STATUS)
    return UPSTREAM_NO_TAG;
  return t;
}

bool upstream_tag_eq(upstream_tag a, upstream_tag b) {
  return upstream_tag_bits(a) == upstream_tag_bits(b);
}

/* ---- topics and classes ---- */

#define CUSTOM_PREFIX "s/uc/"

bool upstream_xid_ok(const char *xid) {
  if (!xid || !*xid || strlen(xid) > 200)
    return false;
  return strpbrk(xid, "/+#") == NULL;
}

int upstream_topic(const char *xid, const char *child, char *out, size_t len) {
  if (xid && !upstream_xid_ok(xid))
    return C8Y_EINVAL;
  if (child && ident_check(child, false))
    return C8Y_EINVAL;
  int n = snprintf(out, len, "%s%s%s%s", xid ? CUSTOM_PREFIX : "s/us",
                   xid ? xid : "", child ? "/" : "", child ? child : "");
  return n >= 0 && (size_t)n < len ? C8Y_OK : C8Y_EINVAL;
}

outq_class upstream_class(const char *topic, const char *template_id) {
  if (strncmp(topic, CUSTOM_PREFIX, strlen(CUSTOM_PREFIX)) == 0)
    return OUTQ_EVENT;
  return proto_class(template_id);
}

/* ---- queueing ---- */

static int push(const upstream *u, outq_class cls, const char *topic,
                const char *template_id, const char *line, unsigned flags,
                upstream_tag tag) {
  if (cls == UPSTREAM_BY_TEMPLATE)
    cls = upstream_class(topic, template_id);
  /* Only static inventory templates replace state; custom templates (s/uc)
   * are queued as events, so their ids are never taken for static ones. */
  uint8_t key = 0;
  if (cls == OUTQ_INVENTORY) {
    key = proto_replace_key(template_id);
    flags |= proto_replace_flags(template_id);
  }
  int rc =
      outq_push(u->q, cls, key, topic, line, upstream_tag_bits(tag), flags);
  if (rc != C8Y_OK)
    return rc; /* already in the SDK's code space */
  if (u->wake)
    u->wake(u->wake_ctx);
  return C8Y_OK;
}

int upstream_send(const upstream *u, outq_class cls, const char *topic,
                  const char *const *fields, size_t n, unsigned flags,
                  upstream_tag tag) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  int rc = n && smartrest_encode_line(&b, fields, n) == 0 ? C8Y_OK
           : n                                            ? C8Y_ENOMEM
                                                          : C8Y_EINVAL;
  if (rc == C8Y_OK)
    rc = b.len > C8Y_MAX_LINE
             ? C8Y_ETOOBIG
             : push(u, cls, topic, fields[0], b.data, flags, tag);
  smartrest_buf_free(&b);
  return rc;
}

int upstream_send_line(const upstream *u, outq_class cls, const char *topic,
                       const char *line, unsigned flags, upstream_tag tag) {
  char id[8];
  snprintf(id, sizeof id, "%.*s", (int)strcspn(line, ","), line);
  return push(u, cls, topic, id, line, flags, tag);
}

size_t upstream_unqueue(const upstream *u, upstream_tag tag) {
  return outq_remove_tag(u->q, upstream_tag_bits(tag));
}

/* ---- lines from plugins and the local API ---- */

/* Sets *why (static text) when the line is refused. */
static int refuse(const char **why, const char *reason) {
  if (why)
    *why = reason;
  return C8Y_EINVAL;
}

/* The fragments of a 114 line for a service `owner` announced must be
 * ones `owner` serves for the service's parent (what it can do there). */
static bool service_ops_served(registry *reg, c8y_plugin *owner,
                               const char *service, const char *const *fields,
                               size_t n) {
  reg_service *svc = registry_find_service(reg, service);
  if (!svc || n < 2)
    return false;
  for (size_t i = 1; i < n; i++) {
    reg_handler *hd =
        fields[i] ? registry_fragment_handler_for(reg, fields[i], service)
                  : NULL;
    if (!hd || hd->plugin != owner)
      return false;
  }
  return true;
}

#define BAD_CHILD                                                              \
  "invalid child id (empty, over 200 bytes, or with '/', '+' or '#')"

/* A 102 makes its service one of the device's (registry_add_service):
 * operations for it reach the handlers of its parent. A plugin may state
 * what a service it announced supports (114 on s/us/<service>), listing
 * only fragments it serves there (Cumulocity "Services": a service
 * announces c8y_ServiceCommand in its own c8y_SupportedOperations). */
int upstream_send_static(const upstream *u, c8y_plugin *owner,
                         const char *child, const char *const *fields, size_t n,
                         const char **why) {
  if (!fields || n == 0 || !fields[0] || !*fields[0])
    return refuse(why, "empty line");
  for (const char *c = fields[0]; *c; c++)
    if (*c < '0' || *c > '9')
      return refuse(why, "the first field must be a numeric static template "
                         "id (custom templates go through send --custom)");
  bool service_ops = strcmp(fields[0], "114") == 0 && owner && child &&
                     registry_owns_service(u->reg, owner, child) &&
                     service_ops_served(u->reg, owner, child, fields, n);
  if (proto_agent_owned(fields[0]) && !service_ops)
    return refuse(why, "operation statuses (5xx) and the supported "
                       "operations list (114) are refused: the agent owns "
                       "them (a plugin may send 114 for a service it "
                       "announced, listing fragments it serves)");
  char topic[300];
  if (upstream_topic(NULL, child, topic, sizeof topic) != C8Y_OK)
    return refuse(why, BAD_CHILD);
  if (strcmp(fields[0], "102") == 0) {
    if (n < 5 || !fields[1] || ident_check(fields[1], false))
      return refuse(why, "102 needs a valid service id, type, name and "
                         "status");
    if (registry_add_service(u->reg, owner, fields[1], child) != C8Y_OK)
      return C8Y_ENOMEM;
  }
  return upstream_send(u, UPSTREAM_BY_TEMPLATE, topic, fields, n, 0,
                       UPSTREAM_NO_TAG);
}

int upstream_send_custom(const upstream *u, const char *xid, const char *child,
                         const char *const *fields, size_t n,
                         const char **why) {
  if (!upstream_xid_ok(xid))
    return refuse(why, "invalid template collection id (empty, over 200 "
                       "bytes, or with '/', '+' or '#')");
  if (!fields || n == 0 || !fields[0] || !*fields[0])
    return refuse(why, "empty line");
  char topic[600];
  if (upstream_topic(xid, child, topic, sizeof topic) != C8Y_OK)
    return refuse(why, BAD_CHILD);
  return upstream_send(u, OUTQ_EVENT, topic, fields, n, 0, UPSTREAM_NO_TAG);
}
