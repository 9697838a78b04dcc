/* svc_sdbus: libsystemd's sd-bus, loaded when the first unit is watched.
 *
 * The plugin is not linked with libsystemd: its library and theirs (lz4,
 * zstd, lzma, gcrypt, ...) would be mapped in the agent from the plugin's
 * load on, on every device, also on those that watch no unit (about 0.9 MiB
 * of the agent's idle RSS, measured by the bench). services.c includes this
 * header after <systemd/sd-bus.h>, so its sd_bus_* calls go through the
 * table that svc_sdbus_load fills (cmn_lib) by the library's SONAME
 * (SVC_SDBUS_SONAME from the build). No call may come before a successful
 * svc_sdbus_load. */
#ifndef SVC_SDBUS_H
#define SVC_SDBUS_H

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>

#define SVC_SDBUS_FUNCTIONS(X)                                                 \
  X(sd_bus_call_method)                                                        \
  X(sd_bus_error_free)                                                         \
  X(sd_bus_flush_close_unref)                                                  \
  X(sd_bus_get_events)                                                         \
  X(sd_bus_get_fd)                                                             \
  X(sd_bus_get_property_string)                                                \
  X(sd_bus_get_timeout)                                                        \
  X(sd_bus_match_signal)                                                       \
  X(sd_bus_message_enter_container)                                            \
  X(sd_bus_message_exit_container)                                             \
  X(sd_bus_message_read)                                                       \
  X(sd_bus_message_skip)                                                       \
  X(sd_bus_message_unref)                                                      \
  X(sd_bus_new)                                                                \
  X(sd_bus_open_system)                                                        \
  X(sd_bus_process)                                                            \
  X(sd_bus_set_address)                                                        \
  X(sd_bus_set_bus_client)                                                     \
  X(sd_bus_start)

typedef struct svc_sdbus_table {
#define SVC_SDBUS_FIELD(name) __typeof__(name) *name;
  SVC_SDBUS_FUNCTIONS(SVC_SDBUS_FIELD)
#undef SVC_SDBUS_FIELD
} svc_sdbus_table;

/* Filled by svc_sdbus_load; read-only after it. */
extern svc_sdbus_table svc_sdbus;

/* Loads the library now if it is not loaded yet; false (why in err) when
 * it cannot be. Thread-safe. */
bool svc_sdbus_load(char *err, size_t errlen);

#ifndef SVC_SDBUS_IMPL
#define SVC_SDBUS_CALL(name) svc_sdbus.name
#define sd_bus_call_method SVC_SDBUS_CALL(sd_bus_call_method)
#define sd_bus_error_free SVC_SDBUS_CALL(sd_bus_error_free)
#define sd_bus_flush_close_unref SVC_SDBUS_CALL(sd_bus_flush_close_unref)
#define sd_bus_get_events SVC_SDBUS_CALL(sd_bus_get_events)
#define sd_bus_get_fd SVC_SDBUS_CALL(sd_bus_get_fd)
#define sd_bus_get_property_string SVC_SDBUS_CALL(sd_bus_get_property_string)
#define sd_bus_get_timeout SVC_SDBUS_CALL(sd_bus_get_timeout)
#define sd_bus_match_signal SVC_SDBUS_CALL(sd_bus_match_signal)
#define sd_bus_message_enter_container                                         \
  SVC_SDBUS_CALL(sd_bus_message_enter_container)
#define sd_bus_message_exit_container                                          \
  SVC_SDBUS_CALL(sd_bus_message_exit_container)
#define sd_bus_message_read SVC_SDBUS_CALL(sd_bus_message_read)
#define sd_bus_message_skip SVC_SDBUS_CALL(sd_bus_message_skip)
#define sd_bus_message_unref SVC_SDBUS_CALL(sd_bus_message_unref)
#define sd_bus_new SVC_SDBUS_CALL(sd_bus_new)
#define sd_bus_open_system SVC_SDBUS_CALL(sd_bus_open_system)
#define sd_bus_process SVC_SDBUS_CALL(sd_bus_process)
#define sd_bus_set_address SVC_SDBUS_CALL(sd_bus_set_address)
#define sd_bus_set_bus_client SVC_SDBUS_CALL(sd_bus_set_bus_client)
#define sd_bus_start SVC_SDBUS_CALL(sd_bus_start)
#endif

#endif
