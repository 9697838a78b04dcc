/* services: the device's services as the agent reports them (Cumulocity
 * device integration, fragment library "Services": c8y_Service child
 * additions, 102 creates or updates one, 104 on s/us/<service> sets its
 * status; 'up', 'down', 'unknown' or a custom status).
 *
 * The agent itself is the service <device>_c8y-agent: 102 ... up with the
 * registration of every connect, 102 ... down in the last will next to the
 * 400 event (one payload, two SmartREST lines), and 102 ... down before a
 * clean disconnect (no will then).
 *
 * A plugin is a service <device>_c8y-agent_<plugin> of type
 * c8y-agent-plugin once it has something to say: it reported its health
 * (set_health), or the agent found it broken (its init failed, it is
 * quarantined, it could not be loaded, its producers failed
 * SERVICES_PRODUCE_FAILURES times in a row). Down comes with the reason as
 * a c8y_PluginDown alarm on the service (cleared when it is up again), in
 * the log and in STATUS=. Plugins with a service are remembered in
 * <state_dir>/services, so a later start reports them again: up once they
 * load, down with the reason when they do not. Every plugin as a service
 * would be ten entries of noise on every device.
 *
 * Threads: services_plugin_* and the status note from any thread; lines go
 * to the durable queue outside the lock the main loop reads. */
#ifndef C8Y_SERVICES_H
#define C8Y_SERVICES_H

#include "registry.h"
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>

#define SERVICES_AGENT_NAME "c8y-agent"
#define SERVICES_AGENT_TYPE "c8y-agent"
#define SERVICES_PLUGIN_TYPE "c8y-agent-plugin"
#define SERVICES_DOWN_ALARM "c8y_PluginDown"
#define SERVICES_PRODUCE_FAILURES 5
#define SERVICES_FILE "services"

/* "<device>_c8y-agent" into buf; C8Y_EINVAL when it does not fit. */
int services_agent_id(const char *device_id, char *buf, size_t len);
/* "102,<device>_c8y-agent,c8y-agent,c8y-agent,<status>". */
int services_agent_line(const char *device_id, const char *status, char *buf,
                        size_t len);
/* The last will's payload on s/us: the 400 c8y_ConnectionEvent the
 * platform expects, then the agent's own 102 ... down. */
int services_will(const char *device_id, char *buf, size_t len);
/* "<device>_c8y-agent_<plugin>". */
int services_plugin_id(const char *device_id, const char *plugin, char *buf,
                       size_t len);

typedef struct services services;

/* Who says a plugin is down: the plugin itself (set_health) or the agent. */
typedef enum services_source {
  SERVICES_BY_PLUGIN,
  SERVICES_BY_AGENT
} services_source;

/* Reads <state_dir>/services (plugins that were services before) and
 * registers the agent's own service. Lines go out through up (borrowed).
 * C8Y_ENOMEM. */
int services_new(const char *device_id, const char *state_dir,
                 const upstream *up, registry *reg, services **out);
void services_free(services *s);

/* Any thread. The plugin's health as `source` sees it; the service is down
 * while either source says down (the agent's reason first). A change is
 * logged and queued (102, the alarm raised or cleared). reason: what is
 * wrong (cut to 500 bytes); NULL with up. C8Y_OK, C8Y_EINVAL (no name),
 * C8Y_ENOMEM. */
int services_plugin_health(services *s, const char *plugin,
                           services_source source, bool up, const char *why);
/* Before a plugin's init (the loading thread): what an earlier instance
 * said of itself no longer holds; nothing is sent until it says more or
 * services_plugin_loaded settles it. */
void services_plugin_reset(services *s, const char *plugin);
/* Main loop, after the plugins were (re)loaded: one call per plugin file;
 * a loaded plugin starts afresh (up), one that did not load is down with
 * `why` if it is a service already or `failed` (a refusal, not the
 * operator's choice). */
void services_plugin_loaded(services *s, const char *plugin, bool loaded,
                            bool failed, const char *why);
/* Then: plugins that were services but no file names any more are down
 * ("not installed"). */
void services_plugins_done(services *s);

/* "; plugins down: a (why), b (why)" (empty when none); how many. */
size_t services_status_note(services *s, char *buf, size_t len);
/* True once after any change of a plugin's health (for STATUS=). */
bool services_take_changed(services *s);

#endif
