/* netdiag: why a connection to the broker fails, step by step.
 *
 * Paho reports every failure below MQTT as "TCP/TLS connect failure". The
 * probe does those steps itself, with the same settings as the session
 * (host, port, tls, ca_path, verify_hostname, client certificate), so the
 * cause is exact: the resolver's error text, "connection refused", a plain
 * port answering a TLS handshake, a certificate for another host name, a
 * CA that ca_path does not hold. `c8y-agent connect --test` prints the
 * steps; the daemon logs the cause after a failed connect. */
#ifndef C8Y_NETDIAG_H
#define C8Y_NETDIAG_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>

enum netdiag_step {
  NETDIAG_DNS = 1,
  NETDIAG_TCP,
  NETDIAG_TLS,
  NETDIAG_MQTT,
  NETDIAG_ROUNDTRIP
};

/* "DNS", "TCP", "TLS", "MQTT", "round trip". */
const char *netdiag_step_name(int step);

/* What a CONNACK return code means on Cumulocity (c8y-protocol.md 1.10),
 * e.g. 4: "bad user name or password: check ...". */
const char *netdiag_connack_meaning(int code);

/* Called after each step with its outcome and a one-line description. */
typedef void (*netdiag_report_fn)(void *ctx, int step, bool ok,
                                  const char *text);

/* Resolves cfg->host, connects TCP to cfg->port (each step bounded by
 * timeout_ms) and, with cfg->tls, runs a TLS handshake checking the server
 * as the session does. report may be NULL. Returns 0 when every step
 * passed, else the failed NETDIAG_* step with its reason in why. Blocks:
 * never call it on the main loop or a Paho thread. */
int netdiag_probe(const agent_config *cfg, int timeout_ms,
                  netdiag_report_fn report, void *ctx, char *why,
                  size_t whylen);

/* Runs netdiag_probe on a short-lived thread (settings copied) and logs the
 * cause as a warning naming the broker; returns at once. While one runs,
 * further calls are ignored. */
void netdiag_explain_async(const agent_config *cfg);
/* Waits (at most timeout_ms) for a running diagnosis to finish: before the
 * process exits, so the thread is not inside OpenSSL during its clean-up.
 * Returns 0, or C8Y_ETIMEDOUT when it is still running. */
int netdiag_wait(int timeout_ms);

#endif
