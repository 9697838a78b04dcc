/* ra_lws: libwebsockets, loaded by the first remote access session (see
 * ra_lws.h). */
#define RA_LWS_IMPL
#include "ra_lws.h"

#include "cmn_lib.h"

#ifndef RA_LWS_SONAME
#error                                                                         \
    "RA_LWS_SONAME (libwebsockets' SONAME) comes from the plugin's CMakeLists"
#endif

/* Name, parameters, arguments of every function the plugin calls. */
#define RA_LWS_INT(X)                                                          \
  X(int, lws_add_http_header_by_token,                                         \
    (struct lws * wsi, enum lws_token_indexes token,                           \
     const unsigned char *value, int length, unsigned char **p,                \
     unsigned char *end),                                                      \
    (wsi, token, value, length, p, end), -1)                                   \
  X(int, lws_callback_on_writable, (struct lws * wsi), (wsi), -1)              \
  X(struct lws *, lws_client_connect_via_info,                                 \
    (const struct lws_client_connect_info *i), (i), NULL)                      \
  X(void *, lws_context_user, (struct lws_context * c), (c), NULL)             \
  X(struct lws_context *, lws_create_context,                                  \
    (const struct lws_context_creation_info *info), (info), NULL)              \
  X(struct lws_context *, lws_get_context, (const struct lws *wsi), (wsi),     \
    NULL)                                                                      \
  X(void *, lws_get_opaque_user_data, (const struct lws *wsi), (wsi), NULL)    \
  X(unsigned int, lws_http_client_http_response, (struct lws * wsi), (wsi), 0) \
  X(int, lws_rx_flow_control, (struct lws * wsi, int enable), (wsi, enable),   \
    -1)                                                                        \
  X(int, lws_service, (struct lws_context * c, int timeout_ms),                \
    (c, timeout_ms), -1)                                                       \
  X(int, lws_write,                                                            \
    (struct lws * wsi, unsigned char *buf, size_t len,                         \
     enum lws_write_protocol protocol),                                        \
    (wsi, buf, len, protocol), -1)

#define RA_LWS_VOID(X)                                                         \
  X(lws_cancel_service, (struct lws_context * c), (c))                         \
  X(lws_close_reason,                                                          \
    (struct lws * wsi, enum lws_close_status status, unsigned char *buf,       \
     size_t len),                                                              \
    (wsi, status, buf, len))                                                   \
  X(lws_context_destroy, (struct lws_context * c), (c))                        \
  X(lws_set_log_level, (int level, void (*emit)(int level, const char *line)), \
    (level, emit))                                                             \
  X(lws_set_opaque_user_data, (struct lws * wsi, void *data), (wsi, data))     \
  X(lws_set_timeout,                                                           \
    (struct lws * wsi, enum pending_timeout reason, int secs),                 \
    (wsi, reason, secs))                                                       \
  X(lwsl_emit_stderr, (int level, const char *line), (level, line))

static struct {
#define FIELD(ret, name, params, args, fail) ret(*name) params;
  RA_LWS_INT(FIELD)
#undef FIELD
#define FIELD_VOID(name, params, args) void(*name) params;
  RA_LWS_VOID(FIELD_VOID)
#undef FIELD_VOID
} fns;

static const cmn_lib_sym syms[] = {
#define SYM(ret, name, params, args, fail) {#name, &fns.name},
    RA_LWS_INT(SYM)
#undef SYM
#define SYM_VOID(name, params, args) {#name, &fns.name},
        RA_LWS_VOID(SYM_VOID)
#undef SYM_VOID
};

static cmn_lib lib =
    CMN_LIB_INIT(RA_LWS_SONAME, syms, sizeof syms / sizeof *syms);

bool ra_lws_load(char *err, size_t errlen) {
  return cmn_lib_load(&lib, err, errlen);
}

bool ra_lws_loaded(void) { return cmn_lib_loaded(&lib); }

#define DEFINE(ret, name, params, args, fail)                                  \
  ret ra_##name params { return ra_lws_load(NULL, 0) ? fns.name args : (fail); }
RA_LWS_INT(DEFINE)
#undef DEFINE

#define DEFINE_VOID(name, params, args)                                        \
  void ra_##name params {                                                      \
    if (ra_lws_load(NULL, 0))                                                  \
      fns.name args;                                                           \
  }
RA_LWS_VOID(DEFINE_VOID)
#undef DEFINE_VOID
