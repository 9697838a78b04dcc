/* ra_lws: libwebsockets, loaded by the first remote access session.
 *
 * The plugin is not linked with libwebsockets: its library and theirs
 * (libcap, zlib, ...) would be mapped in the agent from the plugin's load
 * on, on every device, also on those that never open a tunnel. The calls
 * below go to the library dlopen'ed by its SONAME (RA_LWS_SONAME from the
 * build) on first use; remote_access.c includes this header after
 * <libwebsockets.h>, so its lws_* calls name these wrappers (hidden, like
 * everything in a plugin but its entry point). */
#ifndef RA_LWS_H
#define RA_LWS_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>

/* Loads the library now if it is not loaded yet; false (why in err) when
 * it cannot be. Thread-safe. */
bool ra_lws_load(char *err, size_t errlen);
bool ra_lws_loaded(void);

int ra_lws_add_http_header_by_token(struct lws *wsi,
                                    enum lws_token_indexes token,
                                    const unsigned char *value, int length,
                                    unsigned char **p, unsigned char *end);
int ra_lws_callback_on_writable(struct lws *wsi);
void ra_lws_cancel_service(struct lws_context *context);
struct lws *
ra_lws_client_connect_via_info(const struct lws_client_connect_info *i);
void ra_lws_close_reason(struct lws *wsi, enum lws_close_status status,
                         unsigned char *buf, size_t len);
void ra_lws_context_destroy(struct lws_context *context);
void *ra_lws_context_user(struct lws_context *context);
struct lws_context *
ra_lws_create_context(const struct lws_context_creation_info *info);
struct lws_context *ra_lws_get_context(const struct lws *wsi);
void *ra_lws_get_opaque_user_data(const struct lws *wsi);
unsigned int ra_lws_http_client_http_response(struct lws *wsi);
int ra_lws_rx_flow_control(struct lws *wsi, int enable);
int ra_lws_service(struct lws_context *context, int timeout_ms);
void ra_lws_set_log_level(int level,
                          void (*log_emit_function)(int level,
                                                    const char *line));
void ra_lws_set_opaque_user_data(struct lws *wsi, void *data);
void ra_lws_set_timeout(struct lws *wsi, enum pending_timeout reason, int secs);
int ra_lws_write(struct lws *wsi, unsigned char *buf, size_t len,
                 enum lws_write_protocol protocol);
void ra_lwsl_emit_stderr(int level, const char *line);

#ifndef RA_LWS_IMPL
#define lws_add_http_header_by_token ra_lws_add_http_header_by_token
#define lws_callback_on_writable ra_lws_callback_on_writable
#define lws_cancel_service ra_lws_cancel_service
#define lws_client_connect_via_info ra_lws_client_connect_via_info
#define lws_close_reason ra_lws_close_reason
#define lws_context_destroy ra_lws_context_destroy
#define lws_context_user ra_lws_context_user
#define lws_create_context ra_lws_create_context
#define lws_get_context ra_lws_get_context
#define lws_get_opaque_user_data ra_lws_get_opaque_user_data
#define lws_http_client_http_response ra_lws_http_client_http_response
#define lws_rx_flow_control ra_lws_rx_flow_control
#define lws_service ra_lws_service
#define lws_set_log_level ra_lws_set_log_level
#define lws_set_opaque_user_data ra_lws_set_opaque_user_data
#define lws_set_timeout ra_lws_set_timeout
#define lws_write ra_lws_write
#define lwsl_emit_stderr ra_lwsl_emit_stderr
#endif

#endif
