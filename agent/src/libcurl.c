/* libcurl: the HTTP library, loaded on the first transfer (see libcurl.h). */
#define CURL_DISABLE_TYPECHECK /* the functions below are the real ones */
#include "libcurl.h"

#include "cmn_lib.h"
#include "log.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef C8Y_CURL_SONAME
#error "C8Y_CURL_SONAME (libcurl's SONAME) comes from agent/CMakeLists.txt"
#endif

/* Any function pointer: options of the FUNCTIONPOINT type travel as one. */
typedef void (*any_fn)(void);

/* What is forwarded: return type, name, parameters, arguments, and what a
 * call returns while the library cannot be loaded. */
#define LIBCURL_FORWARDED(X)                                                   \
  X(CURLcode, curl_global_init, (long flags), (flags), CURLE_FAILED_INIT)      \
  X(CURL *, curl_easy_init, (void), (), NULL)                                  \
  X(CURLcode, curl_easy_perform, (CURL * c), (c), CURLE_FAILED_INIT)           \
  X(const char *, curl_easy_strerror, (CURLcode code), (code),                 \
    "libcurl cannot be loaded")                                                \
  X(char *, curl_easy_escape, (CURL * c, const char *s, int len), (c, s, len), \
    NULL)                                                                      \
  X(CURLSH *, curl_share_init, (void), (), NULL)                               \
  X(CURLSHcode, curl_share_cleanup, (CURLSH * sh), (sh), CURLSHE_INVALID)      \
  X(struct curl_slist *, curl_slist_append,                                    \
    (struct curl_slist * list, const char *data), (list, data), NULL)          \
  X(curl_mime *, curl_mime_init, (CURL * c), (c), NULL)                        \
  X(curl_mimepart *, curl_mime_addpart, (curl_mime * m), (m), NULL)            \
  X(CURLcode, curl_mime_name, (curl_mimepart * p, const char *name),           \
    (p, name), CURLE_FAILED_INIT)                                              \
  X(CURLcode, curl_mime_type, (curl_mimepart * p, const char *type),           \
    (p, type), CURLE_FAILED_INIT)                                              \
  X(CURLcode, curl_mime_filename, (curl_mimepart * p, const char *name),       \
    (p, name), CURLE_FAILED_INIT)                                              \
  X(CURLcode, curl_mime_filedata, (curl_mimepart * p, const char *file),       \
    (p, file), CURLE_FAILED_INIT)

/* Nothing to do without the library: nothing of it was ever allocated. */
#define LIBCURL_FORWARDED_VOID(X)                                              \
  X(curl_global_cleanup, (void), ())                                           \
  X(curl_easy_cleanup, (CURL * c), (c))                                        \
  X(curl_slist_free_all, (struct curl_slist * list), (list))                   \
  X(curl_mime_free, (curl_mime * m), (m))                                      \
  X(curl_free, (void *p), (p))

typedef struct table {
#define FIELD(ret, name, params, args, fail) ret(*name) params;
  LIBCURL_FORWARDED(FIELD)
#undef FIELD
#define FIELD_VOID(name, params, args) void(*name) params;
  LIBCURL_FORWARDED_VOID(FIELD_VOID)
#undef FIELD_VOID
  CURLcode (*curl_easy_setopt)(CURL *, CURLoption, ...);
  CURLcode (*curl_easy_getinfo)(CURL *, CURLINFO, ...);
  CURLSHcode (*curl_share_setopt)(CURLSH *, CURLSHoption, ...);
} table;

static table fns;

static const cmn_lib_sym syms[] = {
#define SYM(ret, name, params, args, fail) {#name, &fns.name},
    LIBCURL_FORWARDED(SYM)
#undef SYM
#define SYM_VOID(name, params, args) {#name, &fns.name},
        LIBCURL_FORWARDED_VOID(SYM_VOID)
#undef SYM_VOID
            {"curl_easy_setopt", &fns.curl_easy_setopt},
    {"curl_easy_getinfo", &fns.curl_easy_getinfo},
    {"curl_share_setopt", &fns.curl_share_setopt},
};

/* Never closed: handles and callbacks live as long as the process. */
static cmn_lib lib =
    CMN_LIB_INIT(C8Y_CURL_SONAME, syms, sizeof syms / sizeof *syms);
static atomic_bool reported;

bool libcurl_load(void) {
  if (cmn_lib_loaded(&lib))
    return true;
  char err[600];
  bool ok = cmn_lib_load(&lib, err, sizeof err);
  if (atomic_exchange(&reported, true))
    return ok;
  if (ok)
    log_debug("libcurl loaded (%s) for the first transfer", C8Y_CURL_SONAME);
  else
    log_error("HTTP transfers are not available: %s; is the package libcurl4 "
              "installed?",
              err);
  return ok;
}

bool libcurl_loaded(void) { return cmn_lib_loaded(&lib); }

const char *libcurl_error(void) { return libcurl_loaded() ? "" : lib.error; }

#define DEFINE(ret, name, params, args, fail)                                  \
  ret name params { return libcurl_load() ? fns.name args : (fail); }
LIBCURL_FORWARDED(DEFINE)
#undef DEFINE

#define DEFINE_VOID(name, params, args)                                        \
  void name params {                                                           \
    if (libcurl_loaded())                                                      \
      fns.name args;                                                           \
  }
LIBCURL_FORWARDED_VOID(DEFINE_VOID)
#undef DEFINE_VOID

/* A variadic option carries one argument whose type the option's number
 * range says (CURLOPTTYPE_*, as curl's own setopt reads it). */
CURLcode curl_easy_setopt(CURL *c, CURLoption option, ...) {
  if (!libcurl_load())
    return CURLE_FAILED_INIT;
  va_list ap;
  va_start(ap, option);
  CURLcode rc;
  if (option < CURLOPTTYPE_OBJECTPOINT)
    rc = fns.curl_easy_setopt(c, option, va_arg(ap, long));
  else if (option < CURLOPTTYPE_FUNCTIONPOINT)
    rc = fns.curl_easy_setopt(c, option, va_arg(ap, void *));
  else if (option < CURLOPTTYPE_OFF_T)
    rc = fns.curl_easy_setopt(c, option, va_arg(ap, any_fn));
  else if (option < CURLOPTTYPE_BLOB)
    rc = fns.curl_easy_setopt(c, option, va_arg(ap, curl_off_t));
  else
    rc = fns.curl_easy_setopt(c, option, va_arg(ap, void *));
  va_end(ap);
  return rc;
}

/* Every CURLINFO takes a pointer to where the answer goes. */
CURLcode curl_easy_getinfo(CURL *c, CURLINFO info, ...) {
  if (!libcurl_load())
    return CURLE_FAILED_INIT;
  va_list ap;
  va_start(ap, info);
  CURLcode rc = fns.curl_easy_getinfo(c, info, va_arg(ap, void *));
  va_end(ap);
  return rc;
}

CURLSHcode curl_share_setopt(CURLSH *sh, CURLSHoption option, ...) {
  if (!libcurl_load())
    return CURLSHE_INVALID;
  va_list ap;
  va_start(ap, option);
  CURLSHcode rc;
  switch (option) {
  case CURLSHOPT_SHARE:
  case CURLSHOPT_UNSHARE:
    rc = fns.curl_share_setopt(sh, option, va_arg(ap, int));
    break;
  case CURLSHOPT_LOCKFUNC:
  case CURLSHOPT_UNLOCKFUNC:
    rc = fns.curl_share_setopt(sh, option, va_arg(ap, any_fn));
    break;
  default:
    rc = fns.curl_share_setopt(sh, option, va_arg(ap, void *));
    break;
  }
  va_end(ap);
  return rc;
}
