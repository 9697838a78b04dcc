/* localapi: the local API, a Unix stream socket with a line protocol
 * (docs/local-api.md) for scripts and the c8y-agent CLI.
 *
 * It runs on its own thread, polling the listening socket and its clients,
 * so a slow or stuck client never holds the main loop. Every peer's
 * credentials are checked with SO_PEERCRED: root, the agent's own user and
 * members of the configured group are served; anyone else gets one
 * "error ..." line naming the reason and is disconnected (and logged).
 *
 * Lines sent through it take the plugins' path (upstream_send_static/custom:
 * same checks, same class per template, the durable queue, then a wake of
 * the main loop). What `status` reports is a snapshot the main loop
 * publishes as plain rows (localapi_set_*); the API thread never reads
 * agent state. */
#ifndef C8Y_LOCALAPI_H
#define C8Y_LOCALAPI_H

#include "config.h"
#include "upstream.h"

#include <c8y/plugin.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct localapi localapi;

/* Operations remembered for `ops`. */
#define LOCALAPI_HISTORY 64
/* Longest request line, newline excluded: a C8Y_MAX_LINE SmartREST line plus
 * the command words. */
#define LOCALAPI_MAX_REQUEST (C8Y_MAX_LINE + 400)

/* Binds cfg->api_socket (mode, group), starts the thread. up (borrowed) is
 * where accepted lines go; `status` reads its queue's counters. Returns 0,
 * or with one line in err C8Y_EEXIST (the path is another agent's socket or
 * not a socket), C8Y_EIO, C8Y_EINVAL (too long a path) or C8Y_ENOMEM; a
 * NULL *out with 0 means the API is disabled in the configuration. */
int localapi_start(const agent_config *cfg, const upstream *up, localapi **out,
                   char *err, size_t errlen);
/* Stops the thread, disconnects clients, removes the socket. NULL is a
 * no-op. */
void localapi_stop(localapi *a);

/* ---- snapshot, published by the main loop (NULL a is a no-op) ---- */

/* Link state ("down", "connecting", "up"), the server, operations known to
 * the engine. The API records when the state last changed. */
void localapi_set_state(localapi *a, const char *link, const char *server,
                        size_t ops_running);

/* One plugin file as the loader left it (strings borrowed for the call). */
typedef struct localapi_plugin_row {
  const char *name, *version; /* NULL when not known */
  const char *file;
  const char *state;  /* "loaded", "disabled" or "failed" */
  const char *reason; /* why it is not loaded, or NULL */
  size_t producers, handlers;
} localapi_plugin_row;

/* The loaded and refused plugins with their registrations (replaces the
 * previous list). */
void localapi_set_plugins(localapi *a, const localapi_plugin_row *rows,
                          size_t n);

/* One finished operation (strings borrowed for the call). */
typedef struct localapi_op_row {
  unsigned long long id;
  const char *template_id, *fragment, *device; /* nullable */
  bool ok;
  const char *reason; /* failures: what went upstream with the 502 */
} localapi_op_row;

/* An operation finished. */
void localapi_record_op(localapi *a, const localapi_op_row *r);

/* ---- protocol (exposed for tests) ---- */

typedef enum localapi_cmd {
  LOCALAPI_SEND,   /* send [--child ID] LINE */
  LOCALAPI_CUSTOM, /* custom XID [--child ID] LINE */
  LOCALAPI_STATUS, /* status [json] */
  LOCALAPI_OPS,    /* ops [json] */
  LOCALAPI_HELP    /* help */
} localapi_cmd;

typedef struct localapi_request {
  localapi_cmd cmd;
  bool json;
  char *xid;     /* custom */
  char *child;   /* NULL = the agent's own device */
  char **fields; /* send/custom: the decoded SmartREST line */
  size_t nfields;
} localapi_request;

/* The request framing of one client's byte stream: the daemon hands every
 * read to localapi_framer_feed, which calls `fn` for each complete request
 * line (line end and a CR before it removed, empty lines skipped). */
typedef struct localapi_framer {
  char in[LOCALAPI_MAX_REQUEST + 2];
  size_t len;
} localapi_framer;

typedef enum localapi_frame {
  LOCALAPI_FRAME_OK,
  LOCALAPI_FRAME_TOO_LONG, /* a line longer than LOCALAPI_MAX_REQUEST */
  LOCALAPI_FRAME_NUL       /* a NUL byte: none of `data` is served */
} localapi_frame;

typedef void (*localapi_line_fn)(void *ctx, const char *line);

/* Feeds `n` bytes the client sent. On an error the client is to be closed
 * after its answer; the framer is then empty. */
localapi_frame localapi_framer_feed(localapi_framer *f, const char *data,
                                    size_t n, localapi_line_fn fn, void *ctx);
/* The client shut down its side: a last request without a newline still
 * counts. */
void localapi_framer_end(localapi_framer *f, localapi_line_fn fn, void *ctx);

/* Parses one request line (no newline), as the daemon does with each line
 * the framer gives. Returns 0, or C8Y_EINVAL (or C8Y_ENOMEM) with a
 * one-line reason in err. */
int localapi_parse(const char *line, localapi_request *r, char *err,
                   size_t errlen);
void localapi_request_free(localapi_request *r);

#endif
