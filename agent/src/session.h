/* session: the single MQTT connection to Cumulocity (Paho MQTTAsync).
 * clean session, MQTT 3.1.1, will on s/us (QoS 1, never retained): the
 * "400,c8y_ConnectionEvent,..." event and the agent's own service down
 * (services_will), TLS with server and hostname verification unless
 * configured otherwise. Reconnecting is the caller's decision (backoff lives
 * in the runtime). Callbacks run on Paho's threads: keep them short. */
#ifndef C8Y_SESSION_H
#define C8Y_SESSION_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESSION_WILL_TOPIC "s/us"

typedef struct session session;

typedef struct session_callbacks {
  void *ctx;
  void (*connected)(void *ctx);
  /* code: CONNACK return code (1-5) or a negative Paho code. */
  void (*connect_failed)(void *ctx, int code, const char *message);
  void (*lost)(void *ctx, const char *cause);
  void (*message)(void *ctx, const char *topic, const char *payload,
                  size_t len);
  /* The publish with this id was acknowledged (QoS 1: PUBACK) or failed. */
  void (*delivered)(void *ctx, uint64_t id, bool ok);
} session_callbacks;

/* 0, or C8Y_ENOMEM, C8Y_EINVAL (Paho refuses the URI or client id),
 * C8Y_ENOTSUP (no TLS in this Paho) or C8Y_EIO, with a message in err. */
int session_new(const agent_config *cfg, const session_callbacks *cb,
                session **out, char *err, size_t errlen);
/* For device registration (bootstrap.h): clientId = the plain device id,
 * the bootstrap user and password, no will and no client certificate;
 * otherwise the same connect and TLS options as session_new. */
int session_new_bootstrap(const agent_config *cfg, const session_callbacks *cb,
                          session **out, char *err, size_t errlen);
void session_free(session *s);
/* At process exit, after session_disconnect: when the DISCONNECT was
 * answered, frees the session but not Paho's client. Destroying the last
 * client stops Paho's threads, which sleeps at least 100 ms (Paho 1.3.12,
 * MQTTAsync_stop); after a clean DISCONNECT the threads have nothing to do
 * and end with the process. Otherwise (not connected, connecting, the
 * DISCONNECT unanswered) the same as session_free: a Paho thread may be
 * inside OpenSSL, which the exit handlers tear down. */
void session_free_at_exit(session *s);

/* Starts connecting; the outcome arrives as connected/connect_failed.
 * A request Paho refuses at once is logged and returns C8Y_EINVAL,
 * C8Y_ENOTSUP or C8Y_EIO. */
int session_connect(session *s);
/* id 0: the outcome is not reported. Returns 0, C8Y_EINVAL when the message
 * can never be published (e.g. a topic that is not valid UTF-8),
 * C8Y_ENOMEM, or C8Y_EAGAIN (the link is not up, Paho's buffer is full). */
int session_publish(session *s, const char *topic, const char *payload,
                    size_t len, int qos, uint64_t id);
/* 0, C8Y_EINVAL for a topic or QoS Paho refuses, or C8Y_EAGAIN. */
int session_subscribe(session *s, const char *topic, int qos);
/* Gives up on a link that stopped answering: closes it without waiting and
 * reports it through the `lost` callback like any other loss. C8Y_ESTATE
 * when it was already down (Paho reports that loss itself), C8Y_ENOMEM. */
int session_drop(session *s, const char *why);
/* Clean DISCONNECT (the broker drops the will); returns once Paho reports
 * it sent (or after timeout_ms). */
void session_disconnect(session *s, int timeout_ms);

/* The client certificate and key the next session_connect presents (a
 * renewed pair on trial, then the configured names again); the current
 * connection is not touched. 0 or C8Y_ENOMEM. */
int session_set_identity(session *s, const char *cert_file,
                         const char *key_file);

/* "bad user name or password" for CONNACK 4, ... */
const char *session_connack_text(int code);
/* "ssl://host:port" or "tcp://host:port" (for messages) */
const char *session_uri(const session *s);

#endif
