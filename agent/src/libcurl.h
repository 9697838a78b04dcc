/* libcurl: the HTTP library, loaded on the first transfer.
 *
 * The agent is not linked with libcurl: its dependency tree (TLS, Kerberos,
 * LDAP, SSH, ... about 4.5 MiB resident) would be mapped at exec on every
 * device, also on those that never transfer a file. This module defines the
 * part of libcurl's API that `http` and `enroll` call (curl_easy_*,
 * curl_share_*, curl_mime_*, curl_slist_*, curl_global_*, curl_free) as
 * forwarding functions; the first call loads the library (dlopen of its
 * SONAME, C8Y_CURL_SONAME from the build) and resolves every function once.
 * This is the one module whose functions do not carry its prefix: they are
 * libcurl's own, declared in <curl/curl.h>.
 *
 * When the library cannot be loaded, the failure is logged once (with
 * dlerror's text) and the calls fail as libcurl reports failures: NULL
 * handles, CURLE_FAILED_INIT; libcurl_error says why. Thread-safe. */
#ifndef C8Y_LIBCURL_H
#define C8Y_LIBCURL_H

#include <stdbool.h>

/* Loads the library now if it is not loaded yet; true when it is. */
bool libcurl_load(void);
/* Whether a call has loaded it (for tests and diagnostics). */
bool libcurl_loaded(void);
/* Why loading failed ("libcurl.so.4: cannot open shared object file: ..."),
 * or "" when it did not fail. */
const char *libcurl_error(void);

#endif
