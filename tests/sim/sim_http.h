/* sim_http: the REST side of the Cumulocity simulator (libmicrohttpd on a
 * loopback port), the subset the agent uses:
 *   GET  /identity/externalIds/c8y_Serial/<id>  -> {"managedObject":{"id"}}
 *   POST /event/events                          -> 201 {"id",...}
 *   POST /event/events/<id>/binaries            (multipart part "file", or a
 *                                                raw body) -> 201
 *   GET  /event/events/<id>/binaries            -> the attached file
 *   POST /inventory/binaries                    (multipart "object" + "file")
 *   GET  /inventory/binaries/<id>               with Range (206)
 *   POST /.well-known/est/simpleenroll          (sim_est.h)
 *   POST /.well-known/est/simplereenroll
 * Every request needs Basic "<tenant>/<user>:<password>" or a Bearer token
 * minted for the MQTT side's s/uat (71 on s/dat), except on an "open"
 * server, which plays a foreign file host: it serves binaries to anyone and
 * only counts the Authorization headers it saw.
 * Fault switches: cut downloads half way, answer with a status, expire or
 * reject tokens, delay responses. */
#ifndef C8Y_SIM_HTTP_H
#define C8Y_SIM_HTTP_H

#include "sim.h"
#include "sim_est.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sim_http sim_http;

typedef struct sim_http_options {
  sim *mqtt;            /* device ids and s/uat; NULL for an open server */
  const char *tenant;   /* default "t1" */
  const char *user;     /* default "device" */
  const char *password; /* default "secret" */
  int port;             /* 0 = a free loopback port */
  const char *cert_pem; /* server certificate + key files: HTTPS */
  const char *key_pem;
  /* CA file whose client certificates the TLS layer accepts (asked for,
   * not required): simplereenroll may authenticate by one. */
  const char *client_ca_pem;
  bool open;           /* foreign host: no auth, counts Authorization */
  const char *workdir; /* where uploads are stored; NULL = a temp dir */
  bool echo;           /* print each request and stored file to stdout */
} sim_http_options;

int sim_http_start(const sim_http_options *o, sim_http **out, char *err,
                   size_t errlen);
void sim_http_stop(sim_http *h);
int sim_http_port(const sim_http *h);
/* "http[s]://127.0.0.1:<port>" (borrowed). */
const char *sim_http_url(const sim_http *h);

/* Serves `path` (copied at call time by reference: keep the file) at
 * /inventory/binaries/<id>. Returns the id (> 0) or -1. */
long sim_http_add_binary(sim_http *h, const char *path);

/* The REST side's credential check for another endpoint of the same
 * tenant (the remote-access WebSocket, sim_ws): 0 when the Authorization
 * value (NULL = none) is accepted, else 401; counted like a request's. */
int sim_http_check_authorization(sim_http *h, const char *authorization);

/* The certificate authority behind /.well-known/est/ (sim_est.h): set its
 * CA and one-time passwords there. Without a CA it answers 500. */
sim_est *sim_http_est(sim_http *h);
/* While true, a token that re-enrolled once is refused afterwards (the
 * device must fetch a new one over s/uat). */
void sim_http_est_single_use_tokens(sim_http *h, bool on);
/* What authenticates simplereenroll (default: either). */
typedef enum sim_http_est_auth {
  SIM_EST_AUTH_EITHER,
  SIM_EST_AUTH_TOKEN,      /* the device's JWT only */
  SIM_EST_AUTH_CLIENT_CERT /* its client certificate only */
} sim_http_est_auth;
void sim_http_set_est_auth(sim_http *h, sim_http_est_auth auth);
/* Re-enrollments accepted by client certificate (true) or by JWT. */
size_t sim_http_est_reenrolls(sim_http *h, bool by_cert);

/* ---- faults ---- */
/* The next n downloads stop (connection closed) half way through what they
 * were asked for. */
void sim_http_cut_downloads(sim_http *h, int n);
/* The next n downloads send half of what they were asked for, then hold the
 * connection open without more data until the server stops (at most 60 s),
 * and are cut: a transfer that is in the middle when the client stops. */
void sim_http_stall_downloads(sim_http *h, int n);
/* Waits until at least n downloads were held half way; false on timeout. */
bool sim_http_wait_stalled(sim_http *h, size_t n, int timeout_ms);
/* The next n requests get `status` with a Cumulocity error body. */
void sim_http_fail_requests(sim_http *h, int n, int status);
/* Tokens issued so far become invalid (401). */
void sim_http_expire_tokens(sim_http *h);
/* While true, every token (also new ones) is refused. */
void sim_http_reject_tokens(sim_http *h, bool reject);
/* Lifetime of new tokens (default 3600 s). */
void sim_http_set_token_lifetime(sim_http *h, int seconds);
/* New tokens claim to have been issued this long ago (iat = now - seconds;
 * default 0): a token whose renewal is near while its expiry is not. */
void sim_http_set_token_age(sim_http *h, int seconds);
/* Each answer waits this long first. */
void sim_http_set_delay(sim_http *h, int ms);
/* While true, downloads are sent chunked, without a Content-Length. */
void sim_http_set_chunked(sim_http *h, bool chunked);

/* ---- what was seen ---- */
/* Requests whose method matches (NULL = any) and path starts with prefix. */
size_t sim_http_requests(sim_http *h, const char *method, const char *prefix);
size_t sim_http_auth_headers(sim_http *h);   /* Authorization headers seen */
size_t sim_http_unauthorized(sim_http *h);   /* 401 answers */
size_t sim_http_range_requests(sim_http *h); /* satisfiable Range GETs */
size_t sim_http_tokens_issued(sim_http *h);
/* Events created, in order. Returned strings are borrowed until stop. */
size_t sim_http_event_count(sim_http *h);
const char *sim_http_event_type(sim_http *h, size_t i);
const char *sim_http_event_source(sim_http *h, size_t i);
const char *sim_http_event_id(sim_http *h, size_t i);
/* Path of the stored binary of event i (NULL if none yet), its file name
 * and content type as uploaded. */
const char *sim_http_event_binary(sim_http *h, size_t i);
const char *sim_http_event_binary_name(sim_http *h, size_t i);
const char *sim_http_event_binary_type(sim_http *h, size_t i);
/* Waits until at least n events have a binary; false on timeout. */
bool sim_http_wait_binaries(sim_http *h, size_t n, int timeout_ms);

#endif
