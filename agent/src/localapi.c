#include "localapi.h"

#include "clock.h"
#include "dlog.h"
#include "fsutil.h"
#include "log.h"
#include "smartrest.h"
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 32
#define IDLE_MS 60000 /* a client that says nothing for this long is closed */
#define MAX_OUT (1024 * 1024) /* answer bytes waiting for a slow reader */
#define MAX_GROUPS 256

typedef struct client {
  int fd;
  localapi_framer in;
  smartrest_buf out;
  size_t outoff;
  bool closing; /* close once `out` is written */
  long long last_ms;
} client;

typedef struct plugin_info {
  char *name, *version, *file, *state, *reason;
  size_t producers, handlers;
} plugin_info;

typedef struct op_record {
  unsigned long long id;
  char *template_id, *fragment, *device, *reason;
  bool ok;
  long long when_ms;
} op_record;

struct localapi {
  const upstream *up;
  char *path;
  dev_t dev;
  ino_t ino;
  long long gid;
  char *group;
  uid_t self_uid;
  int lfd, stopfd;
  pthread_t thread;
  client *clients[MAX_CLIENTS];
  size_t nclients;
  long long refusal_logged_ms; /* refusals are logged once a second */
  unsigned refusals_unlogged;

  pthread_mutex_t mu; /* the snapshot below */
  char link[16];
  char *server;
  long long link_since_ms;
  size_t ops_running;
  plugin_info *plugins;
  size_t nplugins;
  op_record history[LOCALAPI_HISTORY];
  size_t nhistory, hnext; /* ring: hnext is the slot written next */
  long long started_ms;
};

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

/* ---- protocol ---- */

static const char *skip_spaces(const char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  return s;
}

/* Copies the next blank-delimited word into a fresh string. */
static char *next_word(const char **s) {
  const char *p = skip_spaces(*s);
  const char *e = p;
  while (*e && *e != ' ' && *e != '\t')
    e++;
  if (e == p)
    return NULL;
  char *w = strndup(p, (size_t)(e - p));
  *s = e;
  return w;
}

static bool word_is(const char *s, const char *w) {
  size_t n = strlen(w);
  return strncmp(s, w, n) == 0 && (s[n] == 0 || s[n] == ' ' || s[n] == '\t');
}

/* The SmartREST part: exactly one record, decoded the way Cumulocity reads
 * upstream CSV. */
static int parse_line(const char *s, localapi_request *r, char *err,
                      size_t errlen) {
  s = skip_spaces(s);
  if (!*s)
    return status_error(C8Y_EINVAL, err, errlen, "no SmartREST line given");
  smartrest_records recs;
  int rc = smartrest_decode(s, strlen(s), &recs);
  if (rc != 0) {
    snprintf(err, errlen, "out of memory");
    return rc;
  }
  rc = C8Y_EINVAL;
  if (recs.count != 1)
    status_error(C8Y_EINVAL, err, errlen, "expected one SmartREST line");
  else if (recs.items[0].error)
    status_error(C8Y_EINVAL, err, errlen, "bad SmartREST line: %s",
                 recs.items[0].error);
  else {
    r->fields = recs.items[0].fields;
    r->nfields = recs.items[0].nfields;
    recs.items[0].fields = NULL;
    recs.items[0].nfields = 0;
    rc = 0;
  }
  smartrest_records_free(&recs);
  return rc;
}

static int parse_child(const char **s, localapi_request *r, char *err,
                       size_t errlen) {
  const char *p = skip_spaces(*s);
  if (!word_is(p, "--child"))
    return 0;
  p += strlen("--child");
  r->child = next_word(&p);
  if (!r->child)
    return status_error(C8Y_EINVAL, err, errlen,
                        "--child needs a child device id");
  *s = p;
  return 0;
}

static int parse_json_flag(const char *s, localapi_request *r, char *err,
                           size_t errlen, const char *cmd) {
  s = skip_spaces(s);
  if (word_is(s, "json")) {
    r->json = true;
    s = skip_spaces(s + 4);
  }
  if (*s)
    return status_error(C8Y_EINVAL, err, errlen,
                        "%s takes no argument other than 'json'", cmd);
  return 0;
}

int localapi_parse(const char *line, localapi_request *r, char *err,
                   size_t errlen) {
  memset(r, 0, sizeof *r);
  const char *s = skip_spaces(line);
  int rc;
  if (word_is(s, "send")) {
    r->cmd = LOCALAPI_SEND;
    s += 4;
    rc = parse_child(&s, r, err, errlen);
    if (rc == 0)
      rc = parse_line(s, r, err, errlen);
  } else if (word_is(s, "custom")) {
    r->cmd = LOCALAPI_CUSTOM;
    s += 6;
    r->xid = next_word(&s);
    if (!r->xid || strcmp(r->xid, "--child") == 0)
      rc = status_error(C8Y_EINVAL, err, errlen,
                        "custom needs a template collection id (XID)");
    else if ((rc = parse_child(&s, r, err, errlen)) == 0)
      rc = parse_line(s, r, err, errlen);
  } else if (word_is(s, "status")) {
    r->cmd = LOCALAPI_STATUS;
    rc = parse_json_flag(s + 6, r, err, errlen, "status");
  } else if (word_is(s, "ops")) {
    r->cmd = LOCALAPI_OPS;
    rc = parse_json_flag(s + 3, r, err, errlen, "ops");
  } else if (word_is(s, "help")) {
    r->cmd = LOCALAPI_HELP;
    rc = 0;
  } else {
    char word[40];
    snprintf(word, sizeof word, "%.*s", (int)strcspn(s, " \t"), s);
    rc = status_error(C8Y_EINVAL, err, errlen,
                      "unknown command '%s' (send, custom, status, ops, help)",
                      word);
  }
  if (rc != 0)
    localapi_request_free(r);
  return rc;
}

void localapi_request_free(localapi_request *r) {
  if (!r)
    return;
  free(r->xid);
  free(r->child);
  for (size_t i = 0; i < r->nfields; i++)
    free(r->fields[i]);
  free(r->fields);
  memset(r, 0, sizeof *r);
}

/* ---- answers ---- */

static const char *const class_names[OUTQ_NCLASSES] = {
    "opstatus", "alarm", "event", "inventory", "measurement"};

static void append(smartrest_buf *b, const char *s) {
  if (smartrest_buf_append(b, s, strlen(s)) != 0)
    log_warning("local API: out of memory building an answer");
}

__attribute__((format(printf, 2, 3))) static void
appendf(smartrest_buf *b, const char *fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  append(b, line);
}

/* Answers with data: "ok <n>" and n lines. */
static void answer_lines(smartrest_buf *out, const smartrest_buf *lines,
                         size_t n) {
  appendf(out, "ok %zu\n", n);
  if (lines->len)
    append(out, lines->data);
}

static void answer_json(smartrest_buf *out, json_t *j) {
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  if (s) {
    appendf(out, "ok ");
    append(out, s);
    append(out, "\n");
  } else {
    append(out, "error out of memory\n");
  }
  free(s);
  json_decref(j);
}

static void iso_time(long long ms, char *out, size_t n) {
  if (ms <= 0)
    snprintf(out, n, "-");
  else
    smartrest_format_time(ms, out, n);
}

static void do_send(localapi *a, const localapi_request *r,
                    smartrest_buf *out) {
  const char *why = NULL;
  const char *const *f = (const char *const *)r->fields;
  int rc =
      r->cmd == LOCALAPI_SEND
          ? upstream_send_static(a->up, NULL, r->child, f, r->nfields, &why)
          : upstream_send_custom(a->up, r->xid, r->child, f, r->nfields, &why);
  if (rc == C8Y_OK) {
    outq_class cls = r->cmd == LOCALAPI_SEND
                         ? upstream_class("s/us", r->fields[0])
                         : OUTQ_EVENT;
    appendf(out, "ok queued %s\n", class_names[cls]);
  } else if (why) {
    appendf(out, "error %s\n", why);
  } else if (rc == C8Y_ETOOBIG) {
    appendf(out, "error line too long (at most %d bytes as sent)\n",
            C8Y_MAX_LINE);
  } else {
    appendf(out, "error not queued: %s\n", status_str(rc));
  }
}

static void do_status_text(localapi *a, smartrest_buf *out) {
  outq_stats st;
  outq_get_stats(a->up->q, &st);
  smartrest_buf l;
  smartrest_buf_init(&l);
  size_t n = 0;
  char since[40], when[40], problem[512];
  int level = 0;
  long long pms = log_last_problem(problem, sizeof problem, &level);
  pthread_mutex_lock(&a->mu);
  iso_time(a->link_since_ms, since, sizeof since);
  appendf(&l, "link: %s since %s (%lld s)\n", a->link, since,
          (clock_wall_ms() - a->link_since_ms) / 1000);
  appendf(&l, "server: %s\n", a->server ? a->server : "-");
  n += 2;
  size_t queued = 0;
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    queued += st.queued[c];
  appendf(&l, "queue: %zu queued, %zu in flight, %zu bytes stored\n", queued,
          st.inflight, st.bytes);
  n++;
  for (int c = 0; c < OUTQ_NCLASSES; c++, n++)
    appendf(&l, "queue %s: %zu queued, %llu dropped\n", class_names[c],
            st.queued[c], (unsigned long long)st.dropped[c]);
  appendf(&l, "operations running: %zu\n", a->ops_running);
  n++;
  for (size_t i = 0; i < a->nplugins; i++, n++) {
    plugin_info *p = &a->plugins[i];
    appendf(&l, "plugin %s %s: %s", p->name ? p->name : p->file,
            p->version ? p->version : "-", p->state);
    if (strcmp(p->state, "loaded") == 0)
      appendf(&l, " (%zu producers, %zu operations)", p->producers,
              p->handlers);
    else if (p->reason && strcmp(p->state, "failed") == 0)
      appendf(&l, ": %s", p->reason);
    append(&l, "\n");
  }
  pthread_mutex_unlock(&a->mu);
  iso_time(pms, when, sizeof when);
  if (pms)
    appendf(&l, "last error: %s %s: %s\n", when,
            level <= LOG_LVL_ERROR ? "error" : "warning", problem);
  else
    append(&l, "last error: none\n");
  n++;
  answer_lines(out, &l, n);
  smartrest_buf_free(&l);
}

static void do_status_json(localapi *a, smartrest_buf *out) {
  outq_stats st;
  outq_get_stats(a->up->q, &st);
  char since[40], when[40], problem[512];
  int level = 0;
  long long pms = log_last_problem(problem, sizeof problem, &level);
  json_t *classes = json_object();
  for (int c = 0; c < OUTQ_NCLASSES; c++)
    json_object_set_new(classes, class_names[c],
                        json_pack("{s:I,s:I}", "queued",
                                  (json_int_t)st.queued[c], "dropped",
                                  (json_int_t)st.dropped[c]));
  json_t *plugins = json_array();
  pthread_mutex_lock(&a->mu);
  iso_time(a->link_since_ms, since, sizeof since);
  json_t *link = json_pack("{s:s,s:s,s:s?}", "state", a->link, "since", since,
                           "server", a->server);
  for (size_t i = 0; i < a->nplugins; i++) {
    plugin_info *p = &a->plugins[i];
    json_array_append_new(
        plugins,
        json_pack("{s:s?,s:s?,s:s,s:s,s:s?,s:I,s:I}", "name", p->name,
                  "version", p->version, "file", p->file, "state", p->state,
                  "reason", p->reason, "producers", (json_int_t)p->producers,
                  "operations", (json_int_t)p->handlers));
  }
  json_int_t running = (json_int_t)a->ops_running;
  pthread_mutex_unlock(&a->mu);
  iso_time(pms, when, sizeof when);
  json_t *last = pms ? json_pack("{s:s,s:s,s:s}", "time", when, "level",
                                 level <= LOG_LVL_ERROR ? "error" : "warning",
                                 "text", problem)
                     : json_null();
  dlog_stats ds;
  dlog_process_stats(&ds);
  answer_json(
      out, json_pack("{s:o,s:{s:I,s:I,s:o},s:{s:I,s:I,s:I},s:I,s:o,s:o}",
                     "link", link, "queue", "bytes", (json_int_t)st.bytes,
                     "inflight", (json_int_t)st.inflight, "classes", classes,
                     "storage", "fsyncs", (json_int_t)ds.fsyncs,
                     "bytes_written", (json_int_t)ds.written, "bytes_rewritten",
                     (json_int_t)ds.rewritten, "operations_running", running,
                     "plugins", plugins, "last_error", last));
}

static void do_ops(localapi *a, bool json, smartrest_buf *out) {
  smartrest_buf l;
  smartrest_buf_init(&l);
  json_t *arr = json ? json_array() : NULL;
  pthread_mutex_lock(&a->mu);
  size_t n = a->nhistory;
  for (size_t k = 0; k < n; k++) {
    /* oldest first */
    size_t i = (a->hnext + LOCALAPI_HISTORY - n + k) % LOCALAPI_HISTORY;
    op_record *r = &a->history[i];
    char when[40];
    iso_time(r->when_ms, when, sizeof when);
    if (json) {
      json_array_append_new(
          arr, json_pack("{s:I,s:s,s:s?,s:s?,s:s?,s:s,s:s?}", "id",
                         (json_int_t)r->id, "time", when, "template",
                         r->template_id, "fragment", r->fragment, "device",
                         r->device, "outcome", r->ok ? "successful" : "failed",
                         "reason", r->ok ? NULL : r->reason));
    } else {
      appendf(&l, "%s #%llu %s (%s) on %s: %s%s%s\n", when, r->id, r->fragment,
              r->template_id, r->device, r->ok ? "successful" : "failed",
              r->ok ? "" : ": ",
              r->ok       ? ""
              : r->reason ? r->reason
                          : "");
    }
  }
  pthread_mutex_unlock(&a->mu);
  if (json)
    answer_json(out, arr);
  else
    answer_lines(out, &l, n);
  smartrest_buf_free(&l);
}

static void do_help(smartrest_buf *out) {
  static const char *const lines[] = {
      "send [--child ID] LINE      queue a static SmartREST line (s/us)",
      "custom XID [--child ID] LINE  queue a line of template collection XID",
      "status [json]               link, queue, operations, plugins, errors",
      "ops [json]                  recent operations and their outcome",
      "help                        this list"};
  size_t n = sizeof lines / sizeof lines[0];
  appendf(out, "ok %zu\n", n);
  for (size_t i = 0; i < n; i++)
    appendf(out, "%s\n", lines[i]);
}

static void handle_request(localapi *a, const char *line, smartrest_buf *out) {
  localapi_request r;
  char err[300];
  if (localapi_parse(line, &r, err, sizeof err) != 0) {
    appendf(out, "error %s\n", err);
    return;
  }
  switch (r.cmd) {
  case LOCALAPI_SEND:
  case LOCALAPI_CUSTOM:
    do_send(a, &r, out);
    break;
  case LOCALAPI_STATUS:
    if (r.json)
      do_status_json(a, out);
    else
      do_status_text(a, out);
    break;
  case LOCALAPI_OPS:
    do_ops(a, r.json, out);
    break;
  case LOCALAPI_HELP:
    do_help(out);
    break;
  }
  localapi_request_free(&r);
}

/* ---- peers ---- */

/* Whether the peer may use the API; else a one-line reason. */
static bool peer_allowed(localapi *a, int fd, char *why, size_t n) {
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
    snprintf(why, n, "cannot read the peer's credentials: %s", strerror(errno));
    return false;
  }
  if (cr.uid == 0 || cr.uid == a->self_uid)
    return true;
  if (a->gid >= 0) {
    if ((long long)cr.gid == a->gid)
      return true;
    gid_t groups[MAX_GROUPS];
    socklen_t glen = sizeof groups;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0)
      for (size_t i = 0; i < glen / sizeof(gid_t); i++)
        if ((long long)groups[i] == a->gid)
          return true;
    snprintf(why, n,
             "permission denied: uid %u (pid %d) is neither root, the agent's "
             "user (uid %u) nor in group %s",
             (unsigned)cr.uid, (int)cr.pid, (unsigned)a->self_uid, a->group);
  } else {
    snprintf(why, n,
             "permission denied: uid %u (pid %d) is neither root nor the "
             "agent's user (uid %u); set [api] group to admit others",
             (unsigned)cr.uid, (int)cr.pid, (unsigned)a->self_uid);
  }
  return false;
}

static void refuse(int fd, const char *why) {
  char line[400];
  int len = snprintf(line, sizeof line, "error %s\n", why);
  /* Non-blocking and short: it fits the fresh socket's buffer. */
  if (send(fd, line, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
    /* the peer is gone already */
  }
  close(fd);
}

static void accept_clients(localapi *a) {
  for (;;) {
    int fd = accept4(a->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        log_warning("local API: accept on %s: %s", a->path, strerror(errno));
      return;
    }
    char why[300];
    if (!peer_allowed(a, fd, why, sizeof why)) {
      /* A local user hammering the socket must not flood the journal. */
      long long now = clock_mono_ms();
      if (now - a->refusal_logged_ms >= 1000) {
        if (a->refusals_unlogged)
          log_warning("local API: %u more clients refused",
                      a->refusals_unlogged);
        log_warning("local API: refused a client on %s: %s", a->path, why);
        a->refusal_logged_ms = now;
        a->refusals_unlogged = 0;
      } else {
        a->refusals_unlogged++;
      }
      refuse(fd, why);
      continue;
    }
    if (a->nclients == MAX_CLIENTS) {
      refuse(fd, "too many clients, try again later");
      continue;
    }
    client *c = calloc(1, sizeof *c);
    if (!c) {
      refuse(fd, "out of memory");
      continue;
    }
    c->fd = fd;
    smartrest_buf_init(&c->out);
    c->last_ms = clock_mono_ms();
    a->clients[a->nclients++] = c;
  }
}

static void drop_client(localapi *a, size_t i) {
  client *c = a->clients[i];
  close(c->fd);
  smartrest_buf_free(&c->out);
  free(c);
  a->clients[i] = a->clients[--a->nclients];
}

/* Answers every complete line in the buffer from `start` on; returns
 * where the incomplete rest begins. */
static size_t take_lines(localapi_framer *f, size_t start, localapi_line_fn fn,
                         void *ctx) {
  for (;;) {
    char *nl = memchr(f->in + start, '\n', f->len - start);
    if (!nl)
      return start;
    *nl = 0;
    if (nl > f->in + start && nl[-1] == '\r')
      nl[-1] = 0;
    const char *line = f->in + start;
    start = (size_t)(nl - f->in) + 1;
    if (*line)
      fn(ctx, line);
  }
}

localapi_frame localapi_framer_feed(localapi_framer *f, const char *data,
                                    size_t n, localapi_line_fn fn, void *ctx) {
  if (memchr(data, 0, n)) {
    f->len = 0;
    return LOCALAPI_FRAME_NUL;
  }
  while (n > 0) {
    /* The rest of a line never exceeds LOCALAPI_MAX_REQUEST here, so
     * there is room for at least one more byte. */
    size_t room = sizeof f->in - 1 - f->len;
    size_t take = n < room ? n : room;
    memcpy(f->in + f->len, data, take);
    f->len += take;
    data += take;
    n -= take;
    size_t rest = take_lines(f, 0, fn, ctx);
    memmove(f->in, f->in + rest, f->len - rest);
    f->len -= rest;
    if (f->len > LOCALAPI_MAX_REQUEST) {
      f->len = 0;
      return LOCALAPI_FRAME_TOO_LONG;
    }
  }
  return LOCALAPI_FRAME_OK;
}

void localapi_framer_end(localapi_framer *f, localapi_line_fn fn, void *ctx) {
  if (f->len > 0 && f->len <= LOCALAPI_MAX_REQUEST) {
    f->in[f->len++] = '\n';
    take_lines(f, 0, fn, ctx);
  }
  f->len = 0;
}

typedef struct serve_ctx {
  localapi *a;
  client *c;
} serve_ctx;

static void serve_line(void *ctx, const char *line) {
  serve_ctx *s = ctx;
  handle_request(s->a, line, &s->c->out);
}

/* Reads what the client sent; false when it is to be dropped now. */
static bool client_read(localapi *a, client *c) {
  serve_ctx sc = {a, c};
  char buf[4096];
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n > 0) {
      c->last_ms = clock_mono_ms();
      localapi_frame fr =
          localapi_framer_feed(&c->in, buf, (size_t)n, serve_line, &sc);
      if (fr == LOCALAPI_FRAME_NUL)
        append(&c->out, "error NUL byte in request\n");
      else if (fr == LOCALAPI_FRAME_TOO_LONG)
        appendf(&c->out, "error request line too long (at most %d bytes)\n",
                LOCALAPI_MAX_REQUEST);
      c->closing = fr != LOCALAPI_FRAME_OK;
      if (c->closing || c->out.len > MAX_OUT)
        return true;
      continue;
    }
    if (n == 0) {
      localapi_framer_end(&c->in, serve_line, &sc);
      c->closing = true;
      return true;
    }
    if (errno == EINTR)
      continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

/* Writes pending answer bytes; false when the client is to be dropped. */
static bool client_write(client *c) {
  while (c->outoff < c->out.len) {
    ssize_t n = send(c->fd, c->out.data + c->outoff, c->out.len - c->outoff,
                     MSG_NOSIGNAL);
    if (n > 0) {
      c->outoff += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return true;
    return false;
  }
  smartrest_buf_reset(&c->out);
  c->outoff = 0;
  return !c->closing;
}

static void *api_main(void *arg) {
  localapi *a = arg;
  struct pollfd pfd[MAX_CLIENTS + 2];
  for (;;) {
    pfd[0] = (struct pollfd){.fd = a->stopfd, .events = POLLIN};
    pfd[1] = (struct pollfd){.fd = a->lfd, .events = POLLIN};
    for (size_t i = 0; i < a->nclients; i++) {
      client *c = a->clients[i];
      short ev = 0;
      if (!c->closing && c->out.len <= MAX_OUT)
        ev |= POLLIN;
      if (c->out.len > c->outoff)
        ev |= POLLOUT;
      pfd[i + 2] = (struct pollfd){.fd = c->fd, .events = ev};
    }
    size_t nc = a->nclients;
    int n = poll(pfd, (nfds_t)(nc + 2), 1000);
    if (n < 0 && errno != EINTR) {
      log_error("local API: poll: %s", strerror(errno));
      break;
    }
    if (pfd[0].revents)
      break;
    long long now = clock_mono_ms();
    /* Backwards: drop_client moves the last client into slot i. */
    for (size_t i = nc; i-- > 0;) {
      client *c = a->clients[i];
      short re = pfd[i + 2].revents;
      bool keep = true;
      if (re & POLLIN)
        keep = client_read(a, c);
      else if (re & (POLLERR | POLLHUP | POLLNVAL))
        keep = c->out.len > c->outoff && !(re & (POLLERR | POLLNVAL));
      if (keep && (c->out.len > c->outoff || c->closing))
        keep = client_write(c);
      if (keep && now - c->last_ms > IDLE_MS)
        keep = false;
      if (!keep)
        drop_client(a, i);
    }
    if (pfd[1].revents & POLLIN)
      accept_clients(a);
  }
  return NULL;
}

/* ---- socket ---- */

/* A socket file left by a crashed agent is removed; a live one (another
 * agent answering) or a non-socket file is an error. */
static int clear_stale(const char *path, char *err, size_t errlen) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? 0 : C8Y_EIO;
  if (!S_ISSOCK(st.st_mode)) {
    snprintf(err, errlen, "%s exists and is not a socket; remove it", path);
    return C8Y_EEXIST;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return C8Y_EIO;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  close(fd);
  if (rc == 0) {
    snprintf(err, errlen,
             "%s: another c8y-agent is serving this socket; set [api] socket "
             "to a different path",
             path);
    return C8Y_EEXIST;
  }
  if (unlink(path) != 0 && errno != ENOENT) {
    snprintf(err, errlen, "cannot remove the stale socket %s: %s", path,
             strerror(errno));
    return C8Y_EIO;
  }
  return 0;
}

static char *parent_dir(const char *path) {
  char *d = strdup(path);
  if (!d)
    return NULL;
  char *slash = strrchr(d, '/');
  if (!slash) {
    free(d);
    return strdup(".");
  }
  if (slash == d)
    slash[1] = 0;
  else
    *slash = 0;
  return d;
}

static int bind_socket(localapi *a, const agent_config *cfg, const char *path,
                       char *err, size_t errlen) {
  char *dir = parent_dir(path);
  int rc = dir ? fsutil_mkdir_p(dir, 0755) : C8Y_ENOMEM;
  if (rc != 0) {
    snprintf(err, errlen, "local API: cannot create %s: %s", dir ? dir : path,
             dir ? strerror(errno) : "out of memory");
    free(dir);
    return rc;
  }
  free(dir);
  char why[300] = "";
  rc = clear_stale(path, why, sizeof why);
  if (rc != 0) {
    snprintf(err, errlen, "local API: %s", why[0] ? why : strerror(errno));
    return rc;
  }
  a->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (a->lfd < 0) {
    snprintf(err, errlen, "local API: socket: %s", strerror(errno));
    return C8Y_EIO;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  /* No umask games (it is process-wide and plugins' threads run): until
   * the chmod below the socket has the umask's mode, and every peer is
   * checked by its credentials anyway. */
  if (bind(a->lfd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    snprintf(err, errlen, "local API: cannot bind %s: %s", path,
             strerror(errno));
    return C8Y_EIO;
  }
  struct stat st;
  if (stat(path, &st) == 0) {
    a->dev = st.st_dev;
    a->ino = st.st_ino;
  }
  if (cfg->api_gid >= 0 && chown(path, (uid_t)-1, (gid_t)cfg->api_gid) != 0) {
    snprintf(err, errlen,
             "local API: cannot give %s to group %s: %s (the agent must be "
             "root or a member of that group)",
             path, cfg->api_group, strerror(errno));
    return C8Y_EIO;
  }
  if (chmod(path, (mode_t)cfg->api_mode) != 0 || listen(a->lfd, 16) != 0) {
    snprintf(err, errlen, "local API: %s: %s", path, strerror(errno));
    return C8Y_EIO;
  }
  return 0;
}

/* Removes the socket only if it is still the one this agent bound. */
static void unlink_own(localapi *a) {
  struct stat st;
  if (a->path && a->ino && stat(a->path, &st) == 0 && st.st_dev == a->dev &&
      st.st_ino == a->ino)
    unlink(a->path);
}

static void free_plugins(localapi *a) {
  for (size_t i = 0; i < a->nplugins; i++) {
    plugin_info *p = &a->plugins[i];
    free(p->name);
    free(p->version);
    free(p->file);
    free(p->state);
    free(p->reason);
  }
  free(a->plugins);
  a->plugins = NULL;
  a->nplugins = 0;
}

static void free_api(localapi *a) {
  if (a->lfd >= 0)
    close(a->lfd);
  if (a->stopfd >= 0)
    close(a->stopfd);
  unlink_own(a);
  free_plugins(a);
  for (size_t i = 0; i < LOCALAPI_HISTORY; i++) {
    op_record *r = &a->history[i];
    free(r->template_id);
    free(r->fragment);
    free(r->device);
    free(r->reason);
  }
  free(a->server);
  free(a->path);
  free(a->group);
  pthread_mutex_destroy(&a->mu);
  free(a);
}

int localapi_start(const agent_config *cfg, const upstream *up, localapi **out,
                   char *err, size_t errlen) {
  *out = NULL;
  if (!cfg->api_enabled)
    return 0;
  localapi *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err, errlen, "local API: out of memory");
    return C8Y_ENOMEM;
  }
  a->lfd = a->stopfd = -1;
  pthread_mutex_init(&a->mu, NULL);
  a->up = up;
  a->self_uid = geteuid();
  a->gid = cfg->api_gid;
  snprintf(a->link, sizeof a->link, "down");
  a->started_ms = a->link_since_ms = clock_wall_ms();
  a->group = dup_or_null(cfg->api_group);
  if (cfg->api_group && !a->group) {
    snprintf(err, errlen, "local API: out of memory");
    free_api(a);
    return C8Y_ENOMEM;
  }
  const char *path = cfg->api_socket;
  int rc = bind_socket(a, cfg, path, err, errlen);
  if (rc != 0 && cfg->api_socket_alt) {
    /* The default runtime dir needs root or systemd's RuntimeDirectory. */
    log_warning("%s; using %s instead", err, cfg->api_socket_alt);
    if (a->lfd >= 0)
      close(a->lfd);
    a->lfd = -1;
    path = cfg->api_socket_alt;
    rc = bind_socket(a, cfg, path, err, errlen);
  }
  if (rc == 0 && !(a->path = strdup(path))) {
    snprintf(err, errlen, "local API: out of memory");
    rc = C8Y_ENOMEM;
  }
  if (rc != 0) {
    free_api(a);
    return rc;
  }
  a->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int e = a->stopfd < 0 ? errno : pthread_create(&a->thread, NULL, api_main, a);
  if (e != 0) {
    snprintf(err, errlen, "local API: cannot start its thread: %s",
             strerror(e));
    free_api(a);
    return C8Y_EIO;
  }
  log_info("local API listening on %s (mode %04o%s%s)", a->path, cfg->api_mode,
           a->group ? ", group " : "", a->group ? a->group : "");
  *out = a;
  return 0;
}

void localapi_stop(localapi *a) {
  if (!a)
    return;
  uint64_t one = 1;
  if (write(a->stopfd, &one, sizeof one) < 0) {
    /* an eventfd write only fails when the counter is saturated */
  }
  pthread_join(a->thread, NULL);
  while (a->nclients)
    drop_client(a, a->nclients - 1);
  free_api(a);
}

/* ---- snapshot ---- */

void localapi_set_state(localapi *a, const char *link, const char *server,
                        size_t ops_running) {
  if (!a)
    return;
  pthread_mutex_lock(&a->mu);
  if (strcmp(a->link, link) != 0) {
    snprintf(a->link, sizeof a->link, "%s", link);
    a->link_since_ms = clock_wall_ms();
  }
  if (server && (!a->server || strcmp(a->server, server) != 0)) {
    free(a->server);
    a->server = strdup(server);
  }
  a->ops_running = ops_running;
  pthread_mutex_unlock(&a->mu);
}

void localapi_set_plugins(localapi *a, const localapi_plugin_row *rows,
                          size_t n) {
  if (!a)
    return;
  plugin_info *list = calloc(n ? n : 1, sizeof *list);
  if (!list)
    return;
  for (size_t i = 0; i < n; i++) {
    const localapi_plugin_row *r = &rows[i];
    plugin_info *p = &list[i];
    p->name = dup_or_null(r->name);
    p->version = dup_or_null(r->version);
    p->file = strdup(r->file ? r->file : "?");
    p->state = strdup(r->state);
    p->reason = dup_or_null(r->reason);
    p->producers = r->producers;
    p->handlers = r->handlers;
  }
  pthread_mutex_lock(&a->mu);
  free_plugins(a);
  a->plugins = list;
  a->nplugins = n;
  pthread_mutex_unlock(&a->mu);
}

void localapi_record_op(localapi *a, const localapi_op_row *r) {
  if (!a)
    return;
  op_record n = {.id = r->id,
                 .template_id = dup_or_null(r->template_id),
                 .fragment = dup_or_null(r->fragment),
                 .device = dup_or_null(r->device),
                 .reason = dup_or_null(r->reason),
                 .ok = r->ok,
                 .when_ms = clock_wall_ms()};
  pthread_mutex_lock(&a->mu);
  op_record *slot = &a->history[a->hnext];
  op_record old = *slot;
  *slot = n;
  a->hnext = (a->hnext + 1) % LOCALAPI_HISTORY;
  if (a->nhistory < LOCALAPI_HISTORY)
    a->nhistory++;
  pthread_mutex_unlock(&a->mu);
  free(old.template_id);
  free(old.fragment);
  free(old.device);
  free(old.reason);
}
