#include "registry.h"

#include <stdlib.h>
#include <string.h>

struct registry {
  reg_producer **producers;
  size_t nproducers;
  reg_handler **handlers;
  size_t nhandlers;
  reg_message **messages;
  size_t nmessages;
  reg_child **children;
  size_t nchildren;
};

registry *registry_new(void) { return calloc(1, sizeof(registry)); }

size_t registry_producer_count(const registry *r) { return r->nproducers; }
reg_producer *registry_producer_at(const registry *r, size_t i) {
  return i < r->nproducers ? r->producers[i] : NULL;
}
size_t registry_handler_count(const registry *r) { return r->nhandlers; }
reg_handler *registry_handler_at(const registry *r, size_t i) {
  return i < r->nhandlers ? r->handlers[i] : NULL;
}
size_t registry_message_count(const registry *r) { return r->nmessages; }
size_t registry_child_count(const registry *r) { return r->nchildren; }
reg_child *registry_child_at(const registry *r, size_t i) {
  return i < r->nchildren ? r->children[i] : NULL;
}

/* Appends to a pointer vector; the vectors are tiny, growth by one is fine. */
static int vec_push(void ***vec, size_t *n, void *item) {
  void **grown = realloc(*vec, (*n + 1) * sizeof *grown);
  if (!grown)
    return C8Y_ENOMEM;
  grown[(*n)++] = item;
  *vec = grown;
  return C8Y_OK;
}

static void free_producer(reg_producer *x) {
  free(x->name);
  free(x);
}
static void free_handler(reg_handler *x) {
  free(x->template_id);
  free(x);
}
static void free_message(reg_message *x) {
  free(x->xid);
  free(x->message_id);
  free(x);
}
static void free_child(reg_child *x) {
  free(x->id);
  free(x->name);
  free(x->type);
  free(x);
}

void registry_free(registry *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->nproducers; i++)
    free_producer(r->producers[i]);
  for (size_t i = 0; i < r->nhandlers; i++)
    free_handler(r->handlers[i]);
  for (size_t i = 0; i < r->nmessages; i++)
    free_message(r->messages[i]);
  for (size_t i = 0; i < r->nchildren; i++)
    free_child(r->children[i]);
  free(r->producers);
  free(r->handlers);
  free(r->messages);
  free(r->children);
  free(r);
}

int registry_add_producer(registry *r, c8y_plugin *p, const char *name,
                          uint32_t interval_ms, c8y_produce_fn fn, void *ud) {
  for (size_t i = 0; i < r->nproducers; i++)
    if (r->producers[i]->plugin == p &&
        strcmp(r->producers[i]->name, name) == 0)
      return C8Y_EEXIST;
  reg_producer *x = calloc(1, sizeof *x);
  if (!x || !(x->name = strdup(name))) {
    free(x);
    return C8Y_ENOMEM;
  }
  x->plugin = p;
  x->interval_ms = interval_ms;
  x->fn = fn;
  x->user_data = ud;
  atomic_init(&x->busy, false);
  int rc = vec_push((void ***)&r->producers, &r->nproducers, x);
  if (rc != C8Y_OK)
    free_producer(x);
  return rc;
}

static reg_handler *own_handler(registry *r, c8y_plugin *p,
                                const char *template_id) {
  for (size_t i = 0; i < r->nhandlers; i++)
    if (r->handlers[i]->plugin == p &&
        strcmp(r->handlers[i]->template_id, template_id) == 0)
      return r->handlers[i];
  return NULL;
}

static int add_handler(registry *r, c8y_plugin *p, const char *template_id,
                       const char *fragment, uint32_t timeout_ms,
                       c8y_operation_fn fn, void *ud, bool children_only,
                       c8y_plugin **owner) {
  reg_handler *old = own_handler(r, p, template_id);
  if (!old && !children_only)
    old = registry_find_handler(r, template_id);
  if (old) {
    if (owner)
      *owner = old->plugin;
    return C8Y_EEXIST;
  }
  reg_handler *x = calloc(1, sizeof *x);
  if (!x || !(x->template_id = strdup(template_id))) {
    free(x);
    return C8Y_ENOMEM;
  }
  x->plugin = p;
  x->fragment = fragment;
  x->timeout_ms = timeout_ms;
  x->fn = fn;
  x->user_data = ud;
  x->children_only = children_only;
  int rc = vec_push((void ***)&r->handlers, &r->nhandlers, x);
  if (rc != C8Y_OK)
    free_handler(x);
  return rc;
}

int registry_add_handler(registry *r, c8y_plugin *p, const char *template_id,
                         const char *fragment, uint32_t timeout_ms,
                         c8y_operation_fn fn, void *ud, c8y_plugin **owner) {
  return add_handler(r, p, template_id, fragment, timeout_ms, fn, ud, false,
                     owner);
}

int registry_add_child_handler(registry *r, c8y_plugin *p,
                               const char *template_id, const char *fragment,
                               uint32_t timeout_ms, c8y_operation_fn fn,
                               void *ud) {
  return add_handler(r, p, template_id, fragment, timeout_ms, fn, ud, true,
                     NULL);
}

int registry_add_message(registry *r, c8y_plugin *p, const char *xid,
                         const char *message_id, c8y_message_fn fn, void *ud) {
  if (registry_find_message(r, xid, message_id))
    return C8Y_EEXIST;
  reg_message *x = calloc(1, sizeof *x);
  if (!x || !(x->xid = strdup(xid)) || !(x->message_id = strdup(message_id))) {
    if (x)
      free(x->xid);
    free(x);
    return C8Y_ENOMEM;
  }
  x->plugin = p;
  x->fn = fn;
  x->user_data = ud;
  int rc = vec_push((void ***)&r->messages, &r->nmessages, x);
  if (rc != C8Y_OK)
    free_message(x);
  return rc;
}

int registry_add_child(registry *r, c8y_plugin *p, const char *id,
                       const char *name, const char *type) {
  if (registry_has_child(r, id))
    return C8Y_EEXIST;
  reg_child *x = calloc(1, sizeof *x);
  if (!x)
    return C8Y_ENOMEM;
  x->plugin = p;
  x->id = strdup(id);
  x->name = strdup(name ? name : "");
  x->type = strdup(type ? type : "");
  if (!x->id || !x->name || !x->type) {
    free_child(x);
    return C8Y_ENOMEM;
  }
  int rc = vec_push((void ***)&r->children, &r->nchildren, x);
  if (rc != C8Y_OK)
    free_child(x);
  return rc;
}

/* Keeps the order of what stays: 114 and producers follow load order. */
#define REMOVE_OWNED(vec, n, freefn)                                           \
  do {                                                                         \
    size_t kept = 0;                                                           \
    for (size_t i = 0; i < (n); i++) {                                         \
      if ((vec)[i]->plugin == p)                                               \
        freefn((vec)[i]);                                                      \
      else                                                                     \
        (vec)[kept++] = (vec)[i];                                              \
    }                                                                          \
    (n) = kept;                                                                \
  } while (0)

void registry_remove_plugin(registry *r, c8y_plugin *p) {
  REMOVE_OWNED(r->producers, r->nproducers, free_producer);
  REMOVE_OWNED(r->handlers, r->nhandlers, free_handler);
  REMOVE_OWNED(r->messages, r->nmessages, free_message);
  REMOVE_OWNED(r->children, r->nchildren, free_child);
}

/* What registry_forget_plugin removed stays allocated for the abandoned
 * thread; kept reachable here so leak checkers see it as deliberate. Only
 * the main thread forgets plugins (on a stop or reload). */
static void **graveyard;
static size_t ngraveyard;

static void keep_allocated(void *x) {
  void **grown = realloc(graveyard, (ngraveyard + 1) * sizeof *grown);
  if (grown) {
    graveyard = grown;
    graveyard[ngraveyard++] = x;
  }
}

void registry_forget_plugin(registry *r, c8y_plugin *p) {
  REMOVE_OWNED(r->producers, r->nproducers, keep_allocated);
  REMOVE_OWNED(r->handlers, r->nhandlers, keep_allocated);
  REMOVE_OWNED(r->messages, r->nmessages, keep_allocated);
  REMOVE_OWNED(r->children, r->nchildren, keep_allocated);
}

reg_handler *registry_find_handler(registry *r, const char *template_id) {
  for (size_t i = 0; i < r->nhandlers; i++)
    if (!r->handlers[i]->children_only &&
        strcmp(r->handlers[i]->template_id, template_id) == 0)
      return r->handlers[i];
  return NULL;
}

reg_handler *registry_handler_for(registry *r, const char *template_id,
                                  const char *device) {
  if (!device)
    return registry_find_handler(r, template_id);
  reg_child *c = registry_find_child(r, device);
  return c ? own_handler(r, c->plugin, template_id) : NULL;
}

reg_message *registry_find_message(registry *r, const char *xid,
                                   const char *message_id) {
  for (size_t i = 0; i < r->nmessages; i++)
    if (strcmp(r->messages[i]->xid, xid) == 0 &&
        strcmp(r->messages[i]->message_id, message_id) == 0)
      return r->messages[i];
  return NULL;
}

reg_child *registry_find_child(registry *r, const char *id) {
  for (size_t i = 0; i < r->nchildren; i++)
    if (strcmp(r->children[i]->id, id) == 0)
      return r->children[i];
  return NULL;
}

bool registry_has_child(registry *r, const char *id) {
  return registry_find_child(r, id) != NULL;
}

size_t registry_count_for(registry *r, c8y_plugin *p, size_t *producers,
                          size_t *handlers) {
  size_t np = 0, nh = 0;
  for (size_t i = 0; i < r->nproducers; i++)
    np += r->producers[i]->plugin == p;
  for (size_t i = 0; i < r->nhandlers; i++)
    nh += r->handlers[i]->plugin == p;
  if (producers)
    *producers = np;
  if (handlers)
    *handlers = nh;
  return np + nh;
}

/* Handlers serving the root (owner NULL) or the children of owner. */
static bool serves(const reg_handler *h, const c8y_plugin *owner) {
  return owner ? h->plugin == owner : !h->children_only;
}

static char *supported_for(registry *r, const c8y_plugin *owner) {
  size_t cap = 1;
  for (size_t i = 0; i < r->nhandlers; i++)
    cap += strlen(r->handlers[i]->fragment) + 1;
  char *out = calloc(1, cap);
  if (!out)
    return NULL;
  for (size_t i = 0; i < r->nhandlers; i++) {
    if (!serves(r->handlers[i], owner))
      continue;
    const char *frag = r->handlers[i]->fragment;
    bool seen = false;
    for (size_t k = 0; k < i && !seen; k++)
      seen = serves(r->handlers[k], owner) &&
             strcmp(r->handlers[k]->fragment, frag) == 0;
    if (seen)
      continue;
    if (*out)
      strcat(out, ",");
    strcat(out, frag);
  }
  return out;
}

char *registry_supported_operations(registry *r) {
  return supported_for(r, NULL);
}

char *registry_child_supported_operations(registry *r, const reg_child *child) {
  return supported_for(r, child->plugin);
}

size_t registry_xids(registry *r, const char ***xids) {
  *xids = calloc(r->nmessages + 1, sizeof **xids);
  size_t n = 0;
  if (!*xids)
    return 0;
  for (size_t i = 0; i < r->nmessages; i++) {
    bool seen = false;
    for (size_t k = 0; k < n && !seen; k++)
      seen = strcmp((*xids)[k], r->messages[i]->xid) == 0;
    if (!seen)
      (*xids)[n++] = r->messages[i]->xid;
  }
  return n;
}
