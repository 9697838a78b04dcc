/* http: the agent's Cumulocity REST client (libcurl), used by the SDK's
 * download/upload calls.
 *
 * One easy handle per transfer, run on the calling (plugin) thread; the
 * handles share one connection, DNS and TLS-session cache. Authentication
 * uses the MQTT session's identity: Basic "<tenant>/<user>:<password>", or
 * for certificate devices a JWT that the main loop fetches over MQTT (s/uat ->
 * "71,<token>" on s/dat). Credentials go only to the tenant host and the
 * http_url host; any other URL is fetched without them. */
#ifndef C8Y_HTTP_H
#define C8Y_HTTP_H

#include "config.h"

#include <c8y/plugin.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_ctx http_ctx;

/* Called (from any thread) when a JWT is needed: the agent publishes an empty
 * s/uat on its main loop and later hands the 71 reply to
 * http_token_received. Must not block. */
typedef void (*http_token_request_fn)(void *ctx);

/* cfg must outlive the context. Returns 0, or with one line in err
 * C8Y_EINVAL (http_url, missing Basic credentials), C8Y_ENOMEM or C8Y_EIO
 * (libcurl does not initialise). */
int http_new(const agent_config *cfg, http_token_request_fn request_token,
             void *ctx, http_ctx **out, char *err, size_t errlen);
/* Ends running transfers and refuses new ones (C8Y_ECANCELED, "the agent
 * is stopping"); partial downloads stay for the next start to resume. Any
 * thread; call before joining the plugin workers. */
void http_stop(http_ctx *h);
void http_free(http_ctx *h);

/* The "71" reply's token (main loop). */
void http_token_received(http_ctx *h, const char *token);

/* The device's JWT for a REST call the agent makes itself (certificate
 * renewal): blocking, bounded, any thread except the main loop and Paho's.
 * stale: a token the server just refused (a new one is fetched), or NULL.
 * 0, C8Y_ENOTSUP (Basic authentication), C8Y_EAUTH (no token came),
 * C8Y_ECANCELED (http_stop), with the reason in err. */
int http_bearer_token(http_ctx *h, const char *stale, char *out, size_t outlen,
                      char *err, size_t errlen);
/* Asks (from any thread, must not block) for "123" on the device's topic:
 * s/us for the root (child NULL), s/us/<child> for a child. The answer
 * "124,<id>" goes to http_identity_received. */
typedef void (*http_identity_request_fn)(void *ctx, const char *child);
/* Where REST cannot read the root device's identity (HTTP 403/404),
 * uploads ask over MQTT (never for a child: a line on s/us/<child> would
 * create it). Without a source they fail with the REST error. */
void http_set_identity_source(http_ctx *h, http_identity_request_fn fn,
                              void *ctx);
/* The "124" reply's id (main loop). */
void http_identity_received(http_ctx *h, const char *mo);

/* Cancellation probe for a transfer (e.g. ops_op_cancelled). */
typedef int (*http_cancel_fn)(const c8y_operation *op);

/* The SDK calls: `dir` is the plugin's state dir. Blocking; any thread
 * except the main loop and Paho's. Fill d->error / u->error on failure. */
int http_download(http_ctx *h, const char *dir, c8y_download *d,
                  http_cancel_fn cancelled);
int http_upload(http_ctx *h, const char *device_id, c8y_upload *u,
                http_cancel_fn cancelled);

/* The SDK's platform_auth: the Authorization value for a connection the
 * plugin opens itself to a->url (http, https, ws or wss; ws(s) counts as
 * http(s) for the tenant-host rule), the base URL and the TLS trust
 * settings. May wait (bounded) for a JWT; any thread except the main loop
 * and Paho's. Returns C8Y_OK, C8Y_EINVAL, C8Y_EAUTH, C8Y_ECANCELED with
 * a->error filled. */
int http_platform_auth(http_ctx *h, c8y_platform_auth *a);

/* ---- what a server sends (exposed for tests and the fuzzer) ----
 * The curl callbacks hand every header line and piece of body (curl has
 * undone any chunking) to these, and the answers are read from the
 * result; nothing here trusts the server. */

#define HTTP_BODY_MAX 4096 /* error and JSON bodies kept in memory */

typedef struct http_reply {
  long code;                    /* of the last status line, 0 before one */
  char body[HTTP_BODY_MAX + 1]; /* a body that is not the file, cut */
  size_t body_len;              /* NUL-terminated at body_len */
  int fd;                       /* download sink: >= 0 takes 2xx bodies */
  uint64_t offset;              /* bytes already in fd (the Range start) */
  uint64_t max;                 /* cap on the whole file, 0 = none */
  bool too_big;                 /* the cap was exceeded */
  bool write_failed;            /* a local write error (write_errno) */
  int write_errno;
  bool no_space;        /* it would not fit with OUTQ_RESERVE_BYTES free */
  uint64_t space_avail; /* what the file system had left then */
  uint64_t space_need;  /* the file's size (or so far: space_more) */
  bool space_more;
} http_reply;

/* One header line as curl gives it (not NUL-terminated, line end
 * included): the status line resets the body, a 200 to a Range request
 * rewinds the sink, Content-Length is checked against the cap and the free
 * space. false to abort the transfer (the reason is in r). */
bool http_reply_header(http_reply *r, const char *data, size_t n);
/* A piece of the body: a 2xx answer goes to the sink (capped, space
 * checked), any other body is kept in body. false to abort. */
bool http_reply_body(http_reply *r, const char *data, size_t n);
/* The reason in an error answer: Cumulocity's {"error","message"}, else
 * its first line; control characters blanked. */
void http_reply_error_text(const http_reply *r, char *out, size_t n);
/* managedObject.id of an identity answer / id of a created event, checked
 * to be a plain id (letters, digits, '-', '_'). 0, or C8Y_EINVAL. */
int http_reply_identity(const http_reply *r, char *mo, size_t n);
int http_reply_event_id(const http_reply *r, char *id, size_t n);

/* ---- pure helpers (exposed for unit tests) ---- */

typedef struct http_url_parts {
  bool https;
  char host[256]; /* lower case, without brackets for IPv6 */
  int port;       /* explicit or the scheme's default */
} http_url_parts;

/* Parses "http[s]://[user@]host[:port][/...]". Returns 0 or C8Y_EINVAL. */
int http_parse_url(const char *url, http_url_parts *out);
/* Whether the device's credentials may go to `url`: same scheme, host and
 * port as http_url, or https on the tenant (MQTT) host's port 443. */
bool http_auth_allowed(const http_url_parts *base, const char *tenant_host,
                       const char *url);
/* The exp and iat claims of a JWT (seconds since the epoch; iat 0 when
 * absent). Returns 0, C8Y_EINVAL when the token has no readable exp, or
 * C8Y_ENOMEM. */
int http_jwt_times(const char *token, long long *exp, long long *iat);
/* Lowercase hex sha256 of a file into hex[65]. Returns 0, C8Y_EIO or
 * C8Y_ENOMEM (errno says why). */
int http_sha256_file(const char *path, char hex[65]);

#endif
