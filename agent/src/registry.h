/* registry: what plugins registered (producers, operation handlers by
 * template id or fragment and device, custom message handlers, custom
 * templates that carry operations, child devices).
 *
 * Threads: producers, handlers, messages and template operations are
 * registered on the loading thread while no plugin callback runs (init), and
 * looked up on the main loop afterwards. Children are different (ABI 1.2): a
 * plugin may add or remove one at any time from any thread, so everything
 * that touches children takes the registry's lock, and a child record, once
 * created, stays allocated (a removed child is only marked) until its plugin
 * is removed: a reg_child pointer the main loop holds never dangles. */
#ifndef C8Y_REGISTRY_H
#define C8Y_REGISTRY_H

#include <c8y/plugin.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct reg_producer {
  c8y_plugin *plugin;
  char *name;
  uint32_t interval_ms;
  c8y_produce_fn fn;
  void *user_data;
  long long next_due_ms;
  atomic_bool busy; /* a produce job is queued or running */
} reg_producer;

/* Which devices a handler serves. */
typedef enum reg_scope {
  /* ABI 1.0 add_operation: the root, and the children of its plugin (the
   * 1.1 rule: a child's operation goes to the plugin that registered the
   * child, if that plugin registered the template with either function) */
  REG_SCOPE_ROOT_AND_OWN_CHILDREN,
  /* add_child_operation, add_device_operation(C8Y_ALL_CHILDREN) */
  REG_SCOPE_OWN_CHILDREN,
  /* add_device_operation(NULL), add_fragment_operation */
  REG_SCOPE_ROOT,
  /* add_device_operation(<child id>) */
  REG_SCOPE_CHILD
} reg_scope;

typedef struct reg_handler {
  c8y_plugin *plugin;
  /* A static template ("511"): the handler runs from the template's
   * SmartREST line. NULL: a fragment handler, which runs from the JSON
   * document or from any SmartREST line of its fragment. */
  char *template_id;
  char *fragment; /* the template's fragment, or the one registered */
  reg_scope scope;
  char *child; /* REG_SCOPE_CHILD */
  uint32_t timeout_ms;
  c8y_operation_fn fn;
  void *user_data;
} reg_handler;

typedef struct reg_message {
  c8y_plugin *plugin;
  char *xid;
  char *message_id;
  c8y_message_fn fn;
  void *user_data;
} reg_message;

/* A response template of custom collection `xid` renders operations of
 * `fragment` (ABI 1.2 add_template_operation): its records on s/dc/<xid>
 * are operations, run by the fragment's handler for their device. */
typedef struct reg_template_op {
  c8y_plugin *plugin;
  char *xid;
  char *message_id;
  char *fragment;
} reg_template_op;

typedef struct reg_child {
  c8y_plugin *plugin;
  char *id;
  char *name;
  char *type;
  uint64_t seq; /* registry_child_seq when it was (last) added */
} reg_child;

/* A service of the device (a c8y_Service child addition, announced with
 * 102): the agent's own, a plugin's health, or one a plugin announced with
 * send_static. Not a device of its own: its operations (c8y_ServiceCommand)
 * are operations of its parent, run by the parent's handler with
 * op_device() the service's id. There is no MQTT message to delete a
 * service, so a record stays until the registry is freed. */
typedef struct reg_service {
  c8y_plugin *owner; /* who announced it; NULL: the agent, or its plugin left */
  char *id;          /* external id */
  char *parent;      /* NULL: the root device; else a child id */
} reg_service;

typedef struct registry registry;

/* NULL when out of memory. */
registry *registry_new(void);
void registry_free(registry *r);

/* The entries in registration order, for iterating (i < count). Children:
 * only those not removed; the count and each pointer are read under the
 * lock, so a child added meanwhile is simply seen by the next iteration. */
size_t registry_producer_count(const registry *r);
reg_producer *registry_producer_at(const registry *r, size_t i);
size_t registry_handler_count(const registry *r);
reg_handler *registry_handler_at(const registry *r, size_t i);
size_t registry_message_count(const registry *r);
size_t registry_child_count(registry *r);
reg_child *registry_child_at(registry *r, size_t i);

int registry_add_producer(registry *r, c8y_plugin *p, const char *name,
                          uint32_t interval_ms, c8y_produce_fn fn, void *ud);
/* Who runs an operation (registry_handler_for): one for the root goes to a
 * handler whose scope includes the root; one for a child to a handler of
 * the plugin that owns the child whose scope includes that child. Per
 * device, one plugin serves a template, and a fragment is served either by
 * template handlers or by one fragment handler. Conflicts return C8Y_EEXIST
 * with *owner (nullable) set to the plugin that has it. A template handler
 * is added with registry_add_handler (template_id set), a fragment handler
 * with template_id NULL. `child` is used with REG_SCOPE_CHILD only. */
int registry_add_scoped_handler(registry *r, c8y_plugin *p,
                                const char *template_id, const char *fragment,
                                reg_scope scope, const char *child,
                                uint32_t timeout_ms, c8y_operation_fn fn,
                                void *ud, c8y_plugin **owner);
/* ABI 1.0 add_operation and 1.1 add_child_operation. */
int registry_add_handler(registry *r, c8y_plugin *p, const char *template_id,
                         const char *fragment, uint32_t timeout_ms,
                         c8y_operation_fn fn, void *ud, c8y_plugin **owner);
int registry_add_child_handler(registry *r, c8y_plugin *p,
                               const char *template_id, const char *fragment,
                               uint32_t timeout_ms, c8y_operation_fn fn,
                               void *ud);
/* C8Y_EEXIST when the message id of xid is a message or a template
 * operation already. */
int registry_add_message(registry *r, c8y_plugin *p, const char *xid,
                         const char *message_id, c8y_message_fn fn, void *ud);
int registry_add_template_op(registry *r, c8y_plugin *p, const char *xid,
                             const char *message_id, const char *fragment);
/* Any thread. C8Y_EEXIST when a plugin has a child of that id; a child its
 * own plugin removed earlier is added again (new name and type). */
int registry_add_child(registry *r, c8y_plugin *p, const char *id,
                       const char *name, const char *type);
/* Any thread: operations for the child are no longer dispatched. C8Y_EINVAL
 * when p has no such child. */
int registry_remove_child(registry *r, c8y_plugin *p, const char *id);
/* Grows by one with every child added (also again after a removal): a
 * caller that remembers it learns whether children were added since. */
uint64_t registry_child_seq(registry *r);
/* The children (not removed) added after sequence number `seq`, read under
 * one lock: a malloc'ed array the caller frees (not the records, which
 * stay valid). Returns how many; *out is NULL when none or out of memory. */
size_t registry_children_since(registry *r, uint64_t seq, reg_child ***out);
/* Any thread: records (or takes over, for a new owner) the service `id`
 * of `parent` (NULL = root). A new service bumps registry_child_seq, so
 * operations kept for it are dispatched. C8Y_ENOMEM. */
int registry_add_service(registry *r, c8y_plugin *owner, const char *id,
                         const char *parent);
/* The service record, or NULL; stays valid until registry_free. */
reg_service *registry_find_service(registry *r, const char *id);
/* Whether owner announced the service `id`. */
bool registry_owns_service(registry *r, c8y_plugin *owner, const char *id);
/* A device operations may name besides the root: a child (not removed) or
 * a service of the root or of such a child. */
bool registry_device_known(registry *r, const char *id);
/* Removes every registration of p (init rollback, unload); services it
 * announced stay, without an owner. */
void registry_remove_plugin(registry *r, c8y_plugin *p);
/* Removes p's registrations from the lookups without freeing them: for a
 * plugin whose thread may still be running inside one of them. */
void registry_forget_plugin(registry *r, c8y_plugin *p);

/* The 1.0 handler serving the root device for this template, or NULL. */
reg_handler *registry_find_handler(registry *r, const char *template_id);
/* The handler for a static template's line for `device` (NULL = root; a
 * service's operations go to its parent's handlers): a template handler of
 * template_id, else a fragment handler of the template's fragment. */
reg_handler *registry_handler_for(registry *r, const char *template_id,
                                  const char *fragment, const char *device);
/* The handler for an operation of `fragment` (JSON or a custom template):
 * a fragment handler, else a template handler of a template with that
 * fragment (which then needs the operation's SmartREST line). */
reg_handler *registry_fragment_handler_for(registry *r, const char *fragment,
                                           const char *device);
reg_child *registry_find_child(registry *r, const char *id);
reg_message *registry_find_message(registry *r, const char *xid,
                                   const char *message_id);
reg_template_op *registry_find_template_op(registry *r, const char *xid,
                                           const char *message_id);
/* Whether some custom template renders operations of this fragment. */
bool registry_fragment_has_template(registry *r, const char *fragment);
bool registry_has_child(registry *r, const char *id);
/* Whether id is a child of p (not removed). */
bool registry_owns_child(registry *r, c8y_plugin *p, const char *id);
size_t registry_count_for(registry *r, c8y_plugin *p, size_t *producers,
                          size_t *handlers);

/* Distinct fragments of the handlers serving the root device in registration
 * order, joined with ',' (the 114 payload without the id); malloc'ed. */
char *registry_supported_operations(registry *r);
/* The same for one child: what its owning plugin handles for it. */
char *registry_child_supported_operations(registry *r, const reg_child *child);
/* Distinct custom template X-IDs with message handlers or template
 * operations; the caller frees the array (not the strings). */
size_t registry_xids(registry *r, const char ***xids);

#endif
