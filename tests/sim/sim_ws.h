/* sim_ws: the Cumulocity Cloud Remote Access side of the simulator, a
 * WebSocket server (libwebsockets) on a loopback port.
 *
 * The device connects to <url>/service/remoteaccess/device/<connectionKey>
 * with subprotocol "binary" and its credentials in Authorization, checked
 * by the REST side's rule (sim_http_check_authorization). An unknown key is
 * answered 404, bad credentials 401 (the upgrade is refused). The test plays
 * the operator's end of the tunnel: it adds the key (what the platform does
 * when the user presses Connect, before it creates the 530), then writes
 * bytes towards the device and reads what the device sends, per key.
 *
 * Towards the device at most `max_queue` bytes wait in the simulator
 * (sim_ws_send blocks beyond that); from the device at most 4 MiB wait for
 * sim_ws_recv, then the simulator stops reading (back-pressure, as a slow
 * operator's browser). */
#ifndef C8Y_SIM_WS_H
#define C8Y_SIM_WS_H

#include "sim_http.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct sim_ws sim_ws;

typedef struct sim_ws_options {
  sim_http *auth;       /* whose credentials and tokens are valid */
  const char *cert_pem; /* server certificate + key files: wss */
  const char *key_pem;
  size_t max_queue; /* bytes towards the device; 0 = 1 MiB */
} sim_ws_options;

int sim_ws_start(const sim_ws_options *o, sim_ws **out, char *err,
                 size_t errlen);
void sim_ws_stop(sim_ws *w);
int sim_ws_port(const sim_ws *w);
/* "http[s]://127.0.0.1:<port>": the device's [c8y] http_url. */
const char *sim_ws_url(const sim_ws *w);

/* A connection key the device may now connect with (once). */
void sim_ws_add_key(sim_ws *w, const char *key);
/* Until the device's WebSocket for key is established. */
bool sim_ws_wait_connected(sim_ws *w, const char *key, int timeout_ms);
/* Queues bytes towards the device; waits while max_queue bytes are queued,
 * at most timeout_ms in all. Returns the bytes taken (fewer on timeout or
 * when the connection closed). */
size_t sim_ws_send(sim_ws *w, const char *key, const void *data, size_t len,
                   int timeout_ms);
/* Bytes the device sent: waits up to timeout_ms for at least one. Returns
 * the count, 0 on timeout or once closed and drained. */
size_t sim_ws_recv(sim_ws *w, const char *key, void *buf, size_t len,
                   int timeout_ms);
/* The operator's end closes the WebSocket (close frame, then the TCP). */
void sim_ws_close(sim_ws *w, const char *key);
/* Until the key's WebSocket is closed (by either end). */
bool sim_ws_wait_closed(sim_ws *w, const char *key, int timeout_ms);
/* Bytes towards the device not yet written to its socket. */
size_t sim_ws_queued(sim_ws *w, const char *key);
/* Upgrades refused with this HTTP status so far (401, 404). */
size_t sim_ws_refused(sim_ws *w, int status);

#endif
