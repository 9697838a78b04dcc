/* renew: renews the device certificate before it expires, without a human
 * and without losing anything queued.
 *
 * At [c8y] cert_renew_percent of the certificate's lifetime (default 67)
 * a worker thread re-enrolls (enroll: EST simplereenroll, authenticated by
 * the current pair and, for a JWT device, its token) and stages the new
 * pair. The main loop then has the link reconnect once with the staged
 * pair (there is one MQTT session: a second connection with the same
 * client id would make the broker drop the first). Only when the platform
 * accepts it is the pair committed under the configured names; a refused
 * pair is discarded, the link goes back to the current one, and a MINOR
 * alarm c8y_CertificateRenewal says why. Success clears that alarm, and
 * the announcement on the new connection clears the expiry alarm. A failed
 * attempt is retried with a growing delay (at most a tenth of the time left,
 * never sooner than a minute).
 *
 * Everything but the worker runs on the main loop; the worker only does
 * the request and the files of the staged pair. */
#ifndef C8Y_RENEW_H
#define C8Y_RENEW_H

#include "config.h"
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct renew renew;

typedef struct renew_host {
  void *ctx;
  /* Any thread: renew_step has work. */
  void (*wake)(void *ctx);
  /* Main loop: reconnect once with this pair; the outcome comes back as
   * renew_identity_result. 0, or a C8Y_* code when that cannot start now
   * (the link is down): then it is asked again later. */
  int (*try_identity)(void *ctx, const char *cert_file, const char *key_file);
  /* Worker thread, may be NULL: the device's JWT into out (blocking,
   * bounded), a fresh one when `stale` (the token just refused) is set; 0
   * or a C8Y_* code (then the request goes without it). */
  int (*bearer)(void *ctx, const char *stale, char *out, size_t outlen);
} renew_host;

/* cfg is the running configuration (read again at each step: a reload
 * may change the renewal keys); alarms go into q. */
int renew_new(const agent_config *cfg, const upstream *up,
              const renew_host *host, renew **out);
/* Stops a running request (bounded by its progress check) and frees. */
void renew_free(renew *r);

/* Main loop: starts, finishes and reschedules renewals. Returns the next
 * time (monotonic ms) it needs to run, or -1. */
long long renew_step(renew *r, long long now_ms, bool link_up);
/* Main loop: the outcome of try_identity. On acceptance the staged pair is
 * committed (before the link announces the device, so the expiry alarm is
 * computed from the new certificate). why: the refusal, for the alarm. */
void renew_identity_result(renew *r, bool accepted, const char *why);

/* "idle", "requesting", "staged", "trying" (status and tests). */
const char *renew_state_name(const renew *r);

#endif
