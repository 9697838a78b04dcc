#include "registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* children_mu guards children, removed and child_seq (see registry.h). */
struct registry {
  reg_producer **producers;
  size_t nproducers;
  reg_handler **handlers;
  size_t nhandlers;
  reg_message **messages;
  size_t nmessages;
  reg_template_op **template_ops;
  size_t ntemplate_ops;
  pthread_mutex_t children_mu;
  reg_child **children;
  size_t nchildren;
  reg_child **removed; /* kept allocated: see registry.h */
  size_t nremoved;
  uint64_t child_seq;
  char **old_names; /* names and types a re-added child replaced */
  size_t nold_names;
  reg_service **services; /* under children_mu, never removed */
  size_t nservices;
};

registry *registry_new(void) {
  registry *r = calloc(1, sizeof(registry));
  if (r)
    pthread_mutex_init(&r->children_mu, NULL);
  return r;
}

size_t registry_producer_count(const registry *r) { return r->nproducers; }
reg_producer *registry_producer_at(const registry *r, size_t i) {
  return i < r->nproducers ? r->producers[i] : NULL;
}
size_t registry_handler_count(const registry *r) { return r->nhandlers; }
reg_handler *registry_handler_at(const registry *r, size_t i) {
  return i < r->nhandlers ? r->handlers[i] : NULL;
}
size_t registry_message_count(const registry *r) { return r->nmessages; }

size_t registry_child_count(registry *r) {
  pthread_mutex_lock(&r->children_mu);
  size_t n = r->nchildren;
  pthread_mutex_unlock(&r->children_mu);
  return n;
}

reg_child *registry_child_at(registry *r, size_t i) {
  pthread_mutex_lock(&r->children_mu);
  reg_child *c = i < r->nchildren ? r->children[i] : NULL;
  pthread_mutex_unlock(&r->children_mu);
  return c;
}

uint64_t registry_child_seq(registry *r) {
  pthread_mutex_lock(&r->children_mu);
  uint64_t s = r->child_seq;
  pthread_mutex_unlock(&r->children_mu);
  return s;
}

size_t registry_children_since(registry *r, uint64_t seq, reg_child ***out) {
  pthread_mutex_lock(&r->children_mu);
  size_t n = 0;
  *out = r->nchildren ? malloc(r->nchildren * sizeof **out) : NULL;
  for (size_t i = 0; *out && i < r->nchildren; i++)
    if (r->children[i]->seq > seq)
      (*out)[n++] = r->children[i];
  pthread_mutex_unlock(&r->children_mu);
  if (n == 0) {
    free(*out);
    *out = NULL;
  }
  return n;
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
  free(x->fragment);
  free(x->child);
  free(x);
}
static void free_message(reg_message *x) {
  free(x->xid);
  free(x->message_id);
  free(x);
}
static void free_template_op(reg_template_op *x) {
  free(x->xid);
  free(x->message_id);
  free(x->fragment);
  free(x);
}
static void free_child(reg_child *x) {
  free(x->id);
  free(x->name);
  free(x->type);
  free(x);
}

static void free_service(reg_service *x) {
  free(x->id);
  free(x->parent);
  free(x);
}

void registry_free(registry *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->nservices; i++)
    free_service(r->services[i]);
  free(r->services);
  for (size_t i = 0; i < r->nproducers; i++)
    free_producer(r->producers[i]);
  for (size_t i = 0; i < r->nhandlers; i++)
    free_handler(r->handlers[i]);
  for (size_t i = 0; i < r->nmessages; i++)
    free_message(r->messages[i]);
  for (size_t i = 0; i < r->ntemplate_ops; i++)
    free_template_op(r->template_ops[i]);
  for (size_t i = 0; i < r->nchildren; i++)
    free_child(r->children[i]);
  for (size_t i = 0; i < r->nremoved; i++)
    free_child(r->removed[i]);
  free(r->producers);
  free(r->handlers);
  free(r->messages);
  free(r->template_ops);
  free(r->children);
  free(r->removed);
  for (size_t i = 0; i < r->nold_names; i++)
    free(r->old_names[i]);
  free(r->old_names);
  pthread_mutex_destroy(&r->children_mu);
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

/* ---- handler scopes ---- */

static bool serves_root(const reg_handler *h) {
  return h->scope == REG_SCOPE_ROOT_AND_OWN_CHILDREN ||
         h->scope == REG_SCOPE_ROOT;
}

/* Whether h serves `child`, owned by `owner`. */
static bool serves_child(const reg_handler *h, const c8y_plugin *owner,
                         const char *child) {
  if (h->plugin != owner)
    return false;
  switch (h->scope) {
  case REG_SCOPE_ROOT_AND_OWN_CHILDREN:
  case REG_SCOPE_OWN_CHILDREN:
    return true;
  case REG_SCOPE_CHILD:
    return strcmp(h->child, child) == 0;
  case REG_SCOPE_ROOT:
    return false;
  }
  return false;
}

/* Whether two handlers could both be asked for one operation of the same
 * device. Children belong to one plugin, so child scopes only meet within
 * a plugin. */
static bool scopes_meet(const reg_handler *a, const reg_handler *b) {
  if (serves_root(a) && serves_root(b))
    return true;
  if (a->plugin != b->plugin)
    return false;
  bool a_all = a->scope == REG_SCOPE_ROOT_AND_OWN_CHILDREN ||
               a->scope == REG_SCOPE_OWN_CHILDREN;
  bool b_all = b->scope == REG_SCOPE_ROOT_AND_OWN_CHILDREN ||
               b->scope == REG_SCOPE_OWN_CHILDREN;
  if (a_all && (b_all || b->scope == REG_SCOPE_CHILD))
    return true;
  if (b_all && a->scope == REG_SCOPE_CHILD)
    return true;
  return a->scope == REG_SCOPE_CHILD && b->scope == REG_SCOPE_CHILD &&
         strcmp(a->child, b->child) == 0;
}

/* The registered handler `x` would conflict with: the same template for an
 * overlapping set of devices (another plugin's child handlers never meet
 * this plugin's), or the same fragment served once by template handlers
 * and once by a fragment handler, or by two fragment handlers. Two
 * templates of one fragment (515 and 525) may have different plugins. */
static reg_handler *conflict(registry *r, const reg_handler *x) {
  for (size_t i = 0; i < r->nhandlers; i++) {
    reg_handler *h = r->handlers[i];
    if (!scopes_meet(h, x))
      continue;
    if (h->template_id && x->template_id) {
      if (strcmp(h->template_id, x->template_id) == 0)
        return h;
    } else if (strcmp(h->fragment, x->fragment) == 0) {
      return h;
    }
  }
  return NULL;
}

int registry_add_scoped_handler(registry *r, c8y_plugin *p,
                                const char *template_id, const char *fragment,
                                reg_scope scope, const char *child,
                                uint32_t timeout_ms, c8y_operation_fn fn,
                                void *ud, c8y_plugin **owner) {
  reg_handler *x = calloc(1, sizeof *x);
  if (!x)
    return C8Y_ENOMEM;
  x->plugin = p;
  x->scope = scope;
  x->template_id = template_id ? strdup(template_id) : NULL;
  x->fragment = strdup(fragment);
  x->child = scope == REG_SCOPE_CHILD && child ? strdup(child) : NULL;
  if ((template_id && !x->template_id) || !x->fragment ||
      (scope == REG_SCOPE_CHILD && !x->child)) {
    free_handler(x);
    return C8Y_ENOMEM;
  }
  x->timeout_ms = timeout_ms;
  x->fn = fn;
  x->user_data = ud;
  reg_handler *old = conflict(r, x);
  if (old) {
    if (owner)
      *owner = old->plugin;
    free_handler(x);
    return C8Y_EEXIST;
  }
  int rc = vec_push((void ***)&r->handlers, &r->nhandlers, x);
  if (rc != C8Y_OK)
    free_handler(x);
  return rc;
}

int registry_add_handler(registry *r, c8y_plugin *p, const char *template_id,
                         const char *fragment, uint32_t timeout_ms,
                         c8y_operation_fn fn, void *ud, c8y_plugin **owner) {
  return registry_add_scoped_handler(r, p, template_id, fragment,
                                     REG_SCOPE_ROOT_AND_OWN_CHILDREN, NULL,
                                     timeout_ms, fn, ud, owner);
}

int registry_add_child_handler(registry *r, c8y_plugin *p,
                               const char *template_id, const char *fragment,
                               uint32_t timeout_ms, c8y_operation_fn fn,
                               void *ud) {
  return registry_add_scoped_handler(r, p, template_id, fragment,
                                     REG_SCOPE_OWN_CHILDREN, NULL, timeout_ms,
                                     fn, ud, NULL);
}

int registry_add_message(registry *r, c8y_plugin *p, const char *xid,
                         const char *message_id, c8y_message_fn fn, void *ud) {
  if (registry_find_message(r, xid, message_id) ||
      registry_find_template_op(r, xid, message_id))
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

int registry_add_template_op(registry *r, c8y_plugin *p, const char *xid,
                             const char *message_id, const char *fragment) {
  if (registry_find_message(r, xid, message_id) ||
      registry_find_template_op(r, xid, message_id))
    return C8Y_EEXIST;
  reg_template_op *x = calloc(1, sizeof *x);
  if (!x)
    return C8Y_ENOMEM;
  x->plugin = p;
  x->xid = strdup(xid);
  x->message_id = strdup(message_id);
  x->fragment = strdup(fragment);
  if (!x->xid || !x->message_id || !x->fragment) {
    free_template_op(x);
    return C8Y_ENOMEM;
  }
  int rc = vec_push((void ***)&r->template_ops, &r->ntemplate_ops, x);
  if (rc != C8Y_OK)
    free_template_op(x);
  return rc;
}

/* ---- children (under children_mu) ---- */

static reg_child *find_in(reg_child **v, size_t n, const char *id, size_t *at) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i]->id, id) == 0) {
      if (at)
        *at = i;
      return v[i];
    }
  return NULL;
}

/* A child record's strings are read without the lock by the thread that
 * holds the record (the main loop announcing it): one that changes when a
 * removed child comes back is replaced, and the old string is kept until
 * the registry is freed. Children_mu held. */
static int set_str(registry *r, char **slot, const char *v) {
  if (!v)
    v = "";
  if (strcmp(*slot, v) == 0)
    return C8Y_OK;
  char *copy = strdup(v);
  if (!copy ||
      vec_push((void ***)&r->old_names, &r->nold_names, *slot) != C8Y_OK) {
    free(copy);
    return C8Y_ENOMEM;
  }
  *slot = copy;
  return C8Y_OK;
}

int registry_add_child(registry *r, c8y_plugin *p, const char *id,
                       const char *name, const char *type) {
  pthread_mutex_lock(&r->children_mu);
  int rc = C8Y_OK;
  size_t at = 0;
  reg_child *x = NULL;
  if (find_in(r->children, r->nchildren, id, NULL)) {
    rc = C8Y_EEXIST;
  } else if ((x = find_in(r->removed, r->nremoved, id, &at)) != NULL) {
    /* Removed before: the record comes back (another plugin may take it
     * over, as a device can move between gateways). */
    if (set_str(r, &x->name, name) != C8Y_OK ||
        set_str(r, &x->type, type) != C8Y_OK ||
        vec_push((void ***)&r->children, &r->nchildren, x) != C8Y_OK) {
      rc = C8Y_ENOMEM;
    } else {
      r->removed[at] = r->removed[--r->nremoved];
      x->plugin = p;
      x->seq = ++r->child_seq;
    }
  } else if (!(x = calloc(1, sizeof *x))) {
    rc = C8Y_ENOMEM;
  } else {
    x->plugin = p;
    x->id = strdup(id);
    x->name = strdup(name ? name : "");
    x->type = strdup(type ? type : "");
    if (!x->id || !x->name || !x->type ||
        vec_push((void ***)&r->children, &r->nchildren, x) != C8Y_OK) {
      free_child(x);
      rc = C8Y_ENOMEM;
    } else {
      x->seq = ++r->child_seq;
    }
  }
  pthread_mutex_unlock(&r->children_mu);
  return rc;
}

int registry_remove_child(registry *r, c8y_plugin *p, const char *id) {
  pthread_mutex_lock(&r->children_mu);
  size_t at = 0;
  reg_child *x = id ? find_in(r->children, r->nchildren, id, &at) : NULL;
  int rc = C8Y_OK;
  if (!x || x->plugin != p)
    rc = C8Y_EINVAL;
  else if (vec_push((void ***)&r->removed, &r->nremoved, x) != C8Y_OK)
    rc = C8Y_ENOMEM;
  else {
    /* Keeps the order of the others: registration follows it. */
    memmove(&r->children[at], &r->children[at + 1],
            (r->nchildren - at - 1) * sizeof *r->children);
    r->nchildren--;
  }
  pthread_mutex_unlock(&r->children_mu);
  return rc;
}

reg_child *registry_find_child(registry *r, const char *id) {
  pthread_mutex_lock(&r->children_mu);
  reg_child *c = find_in(r->children, r->nchildren, id, NULL);
  pthread_mutex_unlock(&r->children_mu);
  return c;
}

bool registry_has_child(registry *r, const char *id) {
  return registry_find_child(r, id) != NULL;
}

bool registry_owns_child(registry *r, c8y_plugin *p, const char *id) {
  pthread_mutex_lock(&r->children_mu);
  reg_child *c = find_in(r->children, r->nchildren, id, NULL);
  bool own = c && c->plugin == p;
  pthread_mutex_unlock(&r->children_mu);
  return own;
}

/* The plugin owning the child, read under the lock (the record may be
 * taken over by another plugin after a removal). */
static c8y_plugin *child_owner(registry *r, const char *id) {
  pthread_mutex_lock(&r->children_mu);
  reg_child *c = find_in(r->children, r->nchildren, id, NULL);
  c8y_plugin *p = c ? c->plugin : NULL;
  pthread_mutex_unlock(&r->children_mu);
  return p;
}

/* children_mu held. */
static void disown_services(registry *r, c8y_plugin *p) {
  for (size_t i = 0; i < r->nservices; i++)
    if (r->services[i]->owner == p)
      r->services[i]->owner = NULL;
}

/* ---- services (under children_mu) ---- */

static reg_service *service_in(registry *r, const char *id) {
  for (size_t i = 0; id && i < r->nservices; i++)
    if (strcmp(r->services[i]->id, id) == 0)
      return r->services[i];
  return NULL;
}

int registry_add_service(registry *r, c8y_plugin *owner, const char *id,
                         const char *parent) {
  if (!id || !*id)
    return C8Y_EINVAL;
  pthread_mutex_lock(&r->children_mu);
  int rc = C8Y_OK;
  reg_service *x = service_in(r, id);
  if (x) {
    /* The parent stays: its string may be read without the lock. */
    if (owner)
      x->owner = owner;
  } else if (!(x = calloc(1, sizeof *x)) || !(x->id = strdup(id)) ||
             (parent && !(x->parent = strdup(parent))) ||
             vec_push((void ***)&r->services, &r->nservices, x) != C8Y_OK) {
    if (x)
      free_service(x);
    rc = C8Y_ENOMEM;
  } else {
    x->owner = owner;
    /* Operations kept for it until now may run (ops_children_changed). */
    r->child_seq++;
  }
  pthread_mutex_unlock(&r->children_mu);
  return rc;
}

reg_service *registry_find_service(registry *r, const char *id) {
  pthread_mutex_lock(&r->children_mu);
  reg_service *x = service_in(r, id);
  pthread_mutex_unlock(&r->children_mu);
  return x;
}

bool registry_owns_service(registry *r, c8y_plugin *owner, const char *id) {
  pthread_mutex_lock(&r->children_mu);
  reg_service *x = service_in(r, id);
  bool own = x && owner && x->owner == owner;
  pthread_mutex_unlock(&r->children_mu);
  return own;
}

bool registry_device_known(registry *r, const char *id) {
  if (registry_has_child(r, id))
    return true;
  reg_service *x = registry_find_service(r, id);
  return x && (!x->parent || registry_has_child(r, x->parent));
}

/* A service's operations are its parent's: the device whose handlers run
 * them (NULL = root). Anything else is itself. */
static const char *handler_device(registry *r, const char *device) {
  if (!device || registry_has_child(r, device))
    return device;
  reg_service *x = registry_find_service(r, device);
  return x ? x->parent : device;
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
  REMOVE_OWNED(r->template_ops, r->ntemplate_ops, free_template_op);
  pthread_mutex_lock(&r->children_mu);
  REMOVE_OWNED(r->children, r->nchildren, free_child);
  REMOVE_OWNED(r->removed, r->nremoved, free_child);
  disown_services(r, p);
  pthread_mutex_unlock(&r->children_mu);
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
  REMOVE_OWNED(r->template_ops, r->ntemplate_ops, keep_allocated);
  pthread_mutex_lock(&r->children_mu);
  REMOVE_OWNED(r->children, r->nchildren, keep_allocated);
  REMOVE_OWNED(r->removed, r->nremoved, keep_allocated);
  disown_services(r, p);
  pthread_mutex_unlock(&r->children_mu);
}

/* ---- lookups ---- */

reg_handler *registry_find_handler(registry *r, const char *template_id) {
  for (size_t i = 0; i < r->nhandlers; i++) {
    reg_handler *h = r->handlers[i];
    if (serves_root(h) && h->template_id &&
        strcmp(h->template_id, template_id) == 0)
      return h;
  }
  return NULL;
}

/* Whether h serves `device` (NULL = root) owned by `owner`. */
static bool serves(const reg_handler *h, const char *device,
                   const c8y_plugin *owner) {
  return device ? serves_child(h, owner, device) : serves_root(h);
}

reg_handler *registry_handler_for(registry *r, const char *template_id,
                                  const char *fragment, const char *device) {
  device = handler_device(r, device);
  c8y_plugin *owner = device ? child_owner(r, device) : NULL;
  if (device && !owner)
    return NULL;
  reg_handler *by_fragment = NULL;
  for (size_t i = 0; i < r->nhandlers; i++) {
    reg_handler *h = r->handlers[i];
    if (!serves(h, device, owner))
      continue;
    if (h->template_id && strcmp(h->template_id, template_id) == 0)
      return h;
    if (!h->template_id && !by_fragment && strcmp(h->fragment, fragment) == 0)
      by_fragment = h;
  }
  return by_fragment;
}

reg_handler *registry_fragment_handler_for(registry *r, const char *fragment,
                                           const char *device) {
  device = handler_device(r, device);
  c8y_plugin *owner = device ? child_owner(r, device) : NULL;
  if (device && !owner)
    return NULL;
  reg_handler *by_template = NULL;
  for (size_t i = 0; i < r->nhandlers; i++) {
    reg_handler *h = r->handlers[i];
    if (!serves(h, device, owner) || strcmp(h->fragment, fragment) != 0)
      continue;
    if (!h->template_id)
      return h;
    if (!by_template)
      by_template = h;
  }
  return by_template;
}

reg_message *registry_find_message(registry *r, const char *xid,
                                   const char *message_id) {
  for (size_t i = 0; i < r->nmessages; i++)
    if (strcmp(r->messages[i]->xid, xid) == 0 &&
        strcmp(r->messages[i]->message_id, message_id) == 0)
      return r->messages[i];
  return NULL;
}

reg_template_op *registry_find_template_op(registry *r, const char *xid,
                                           const char *message_id) {
  for (size_t i = 0; i < r->ntemplate_ops; i++)
    if (strcmp(r->template_ops[i]->xid, xid) == 0 &&
        strcmp(r->template_ops[i]->message_id, message_id) == 0)
      return r->template_ops[i];
  return NULL;
}

bool registry_fragment_has_template(registry *r, const char *fragment) {
  for (size_t i = 0; i < r->ntemplate_ops; i++)
    if (strcmp(r->template_ops[i]->fragment, fragment) == 0)
      return true;
  return false;
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

/* Distinct fragments of the handlers serving the root (child NULL) or that
 * child of `owner`, in registration order. */
static char *supported_for(registry *r, const c8y_plugin *owner,
                           const char *child) {
  size_t cap = 1;
  for (size_t i = 0; i < r->nhandlers; i++)
    cap += strlen(r->handlers[i]->fragment) + 1;
  char *out = calloc(1, cap);
  if (!out)
    return NULL;
  for (size_t i = 0; i < r->nhandlers; i++) {
    if (!serves(r->handlers[i], child, owner))
      continue;
    const char *frag = r->handlers[i]->fragment;
    bool seen = false;
    for (size_t k = 0; k < i && !seen; k++)
      seen = serves(r->handlers[k], child, owner) &&
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
  return supported_for(r, NULL, NULL);
}

char *registry_child_supported_operations(registry *r, const reg_child *child) {
  pthread_mutex_lock(&r->children_mu);
  c8y_plugin *owner = child->plugin;
  char *id = strdup(child->id);
  pthread_mutex_unlock(&r->children_mu);
  char *out = id ? supported_for(r, owner, id) : NULL;
  free(id);
  return out;
}

size_t registry_xids(registry *r, const char ***xids) {
  *xids = calloc(r->nmessages + r->ntemplate_ops + 1, sizeof **xids);
  size_t n = 0;
  if (!*xids)
    return 0;
  for (size_t i = 0; i < r->nmessages + r->ntemplate_ops; i++) {
    const char *x = i < r->nmessages ? r->messages[i]->xid
                                     : r->template_ops[i - r->nmessages]->xid;
    bool seen = false;
    for (size_t k = 0; k < n && !seen; k++)
      seen = strcmp((*xids)[k], x) == 0;
    if (!seen)
      (*xids)[n++] = x;
  }
  return n;
}
