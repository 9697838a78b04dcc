/* registry: what plugins registered during init (producers, operation
 * handlers by template id, custom message handlers, child devices).
 * Registration happens on the loading thread only while no plugin callback
 * runs; lookups happen on the main loop thread afterwards. */
#ifndef C8Y_REGISTRY_H
#define C8Y_REGISTRY_H

#include <c8y/plugin.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct reg_producer {
  c8y_plugin *plugin;
  char *name;
  uint32_t interval_ms;
  c8y_produce_fn fn;
  void *user_data;
  long long next_due_ms;
  atomic_bool busy; /* a produce job is queued or running */
} reg_producer;

typedef struct reg_handler {
  c8y_plugin *plugin;
  char *template_id;
  const char *fragment; /* static string from the template table */
  uint32_t timeout_ms;
  c8y_operation_fn fn;
  void *user_data;
  bool children_only; /* serves the plugin's children, never the root */
} reg_handler;

typedef struct reg_message {
  c8y_plugin *plugin;
  char *xid;
  char *message_id;
  c8y_message_fn fn;
  void *user_data;
} reg_message;

typedef struct reg_child {
  c8y_plugin *plugin;
  char *id;
  char *name;
  char *type;
} reg_child;

typedef struct registry registry;

/* NULL when out of memory. */
registry *registry_new(void);
void registry_free(registry *r);

/* The entries in registration order, for iterating (i < count). */
size_t registry_producer_count(const registry *r);
reg_producer *registry_producer_at(const registry *r, size_t i);
size_t registry_handler_count(const registry *r);
reg_handler *registry_handler_at(const registry *r, size_t i);
size_t registry_message_count(const registry *r);
size_t registry_child_count(const registry *r);
reg_child *registry_child_at(const registry *r, size_t i);

int registry_add_producer(registry *r, c8y_plugin *p, const char *name,
                          uint32_t interval_ms, c8y_produce_fn fn, void *ud);
/* Who runs an operation: the root device's operations go to the plugin that
 * registered the template with registry_add_handler; a child's go to the
 * plugin that registered the child, if it registered the template (either
 * way). So conflicts are per device: two plugins may not both serve the
 * template for the root (C8Y_EEXIST, *owner gets the plugin that has it),
 * while a gateway plugin may serve it for its children alone
 * (registry_add_child_handler) next to another plugin serving the root. */
int registry_add_handler(registry *r, c8y_plugin *p, const char *template_id,
                         const char *fragment, uint32_t timeout_ms,
                         c8y_operation_fn fn, void *ud, c8y_plugin **owner);
int registry_add_child_handler(registry *r, c8y_plugin *p,
                               const char *template_id, const char *fragment,
                               uint32_t timeout_ms, c8y_operation_fn fn,
                               void *ud);
int registry_add_message(registry *r, c8y_plugin *p, const char *xid,
                         const char *message_id, c8y_message_fn fn, void *ud);
int registry_add_child(registry *r, c8y_plugin *p, const char *id,
                       const char *name, const char *type);
/* Removes every registration of p (init rollback, unload). */
void registry_remove_plugin(registry *r, c8y_plugin *p);
/* Removes p's registrations from the lookups without freeing them: for a
 * plugin whose thread may still be running inside one of them. */
void registry_forget_plugin(registry *r, c8y_plugin *p);

/* The handler serving the root device for this template, or NULL. */
reg_handler *registry_find_handler(registry *r, const char *template_id);
/* The handler serving `device` (NULL = root): see registry_add_handler. */
reg_handler *registry_handler_for(registry *r, const char *template_id,
                                  const char *device);
reg_child *registry_find_child(registry *r, const char *id);
reg_message *registry_find_message(registry *r, const char *xid,
                                   const char *message_id);
bool registry_has_child(registry *r, const char *id);
size_t registry_count_for(registry *r, c8y_plugin *p, size_t *producers,
                          size_t *handlers);

/* Distinct fragments of the handlers serving the root device in registration
 * order, joined with ',' (the 114 payload without the id); malloc'ed. */
char *registry_supported_operations(registry *r);
/* The same for one child: what its owning plugin handles for it. */
char *registry_child_supported_operations(registry *r, const reg_child *child);
/* Distinct custom template X-IDs with message handlers; the caller frees
 * the array (not the strings). */
size_t registry_xids(registry *r, const char ***xids);

#endif
