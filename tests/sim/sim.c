#include "sim.h"

#include "../support/broker.h"
#include "smartrest.h"

#include <MQTTAsync.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct sim_op {
  long id;
  int tpl;    /* static template, 0 for a JSON-only operation */
  char *line; /* its s/ds line, NULL for a JSON-only operation */
  char *device;
  const char *fragment;
  char *own_fragment; /* what fragment points to for JSON operations */
  char *fragments;    /* JSON object of its fragments, or NULL */
  char *xid; /* rendered by custom template collection xid on s/dc/<xid> */
  sim_op_status st;
  char *detail;
} sim_op;

typedef struct sim_dev {
  char *id;
  char *parent; /* NULL for the root */
  long mo_id;
  bool created;
  /* A c8y_Service child addition (102), not a device: its status (104) */
  bool service;
  char *status;
} sim_dev;

typedef struct sim_coll {
  char *xid;
  long id;
} sim_coll;

/* Replies computed under the lock and published after it is released: Paho
 * must never be entered while we hold `mu` (its thread calls us with its own
 * locks in an unknown state). */
typedef struct outmsg {
  char *topic;
  char *payload;
} outmsg;

typedef struct outbox {
  outmsg *items;
  size_t n, cap;
} outbox;

struct sim {
  char *tenant, *user, *password, *device_id;
  char *workdir;
  bool own_workdir;
  bool echo;
  char *passwd_path, *acl_path;
  char sim_password[33];
  broker *br;
  bool cert_device; /* device_id may log in by certificate (CN) */
  int cert_port;

  MQTTAsync client;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool subscribed;
  unsigned sub_gen;  /* bumped on every successful (re)subscription */
  unsigned kill_gen; /* sub_gen when the broker was last killed */
  bool connect_failed;
  char connect_err[160];
  bool disconnected;

  sim_message **msgs;
  size_t nmsgs, capmsgs;
  sim_op *ops;
  size_t nops, capops;
  long next_op_id;
  sim_dev *devs;
  size_t ndevs, capdevs;
  long next_mo_id;
  sim_coll *colls;
  size_t ncolls, capcolls;
  bool json_ops;                  /* static operations get a JSON copy too */
  char *(*mint_token)(void *ctx); /* s/uat answers; see sim_set_token_source */
  void *mint_ctx;

  /* device registration (bootstrap), see the section at the end */
  char *bs_password;
  struct sim_reg *regs;
  size_t nregs, capregs;
  size_t bs_requests;
};

static const struct {
  int tpl;
  const char *fragment;
} k_fragments[] = {
    {510, "c8y_Restart"},
    {511, "c8y_Command"},
    {513, "c8y_Configuration"},
    {515, "c8y_Firmware"},
    {516, "c8y_SoftwareList"},
    {517, "c8y_MeasurementRequestOperation"},
    {518, "c8y_Relay"},
    {519, "c8y_RelayArray"},
    {520, "c8y_UploadConfigFile"},
    {521, "c8y_DownloadConfigFile"},
    {522, "c8y_LogfileRequest"},
    {523, "c8y_CommunicationMode"},
    {524, "c8y_DownloadConfigFile"},
    {525, "c8y_Firmware"},
    {526, "c8y_UploadConfigFile"},
    {527, "c8y_DeviceProfile"},
    {528, "c8y_SoftwareUpdate"},
    {529, "c8y_SoftwareUpdate"},
    {530, "c8y_RemoteAccessConnect"},
    {531, "c8y_DeviceProfile"},
    {532, "c8y_ParameterUpdate"},
};

/* Upstream static template ids the platform accepts (c8y-protocol.md 3.1). */
static const int k_known_upstream[] = {
    100, 101, 102, 104, 105, 107, 110, 111, 112, 113, 114, 115, 116, 117,
    118, 119, 120, 121, 122, 123, 125, 140, 141, 142, 143, 150, 200, 201,
    210, 211, 212, 301, 302, 303, 304, 305, 306, 307, 400, 401, 402, 407,
    408, 500, 501, 502, 503, 504, 505, 506, 507, 600, 602};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec deadline_ts(int timeout_ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  long long ns = ts.tv_nsec + (long long)(timeout_ms % 1000) * 1000000LL;
  ts.tv_sec += timeout_ms / 1000 + ns / 1000000000LL;
  ts.tv_nsec = (long)(ns % 1000000000LL);
  return ts;
}

/* Waits on the condvar until the deadline; false once it has passed. */
static bool wait_until(sim *s, const struct timespec *dl) {
  return pthread_cond_timedwait(&s->cv, &s->mu, dl) != ETIMEDOUT;
}

static const char *fragment_of(int tpl) {
  for (size_t i = 0; i < sizeof k_fragments / sizeof k_fragments[0]; i++)
    if (k_fragments[i].tpl == tpl)
      return k_fragments[i].fragment;
  return NULL;
}

static bool known_upstream(int tpl) {
  for (size_t i = 0; i < sizeof k_known_upstream / sizeof k_known_upstream[0];
       i++)
    if (k_known_upstream[i] == tpl)
      return true;
  return false;
}

/* Strict decimal template id; -1 if the field is not one. */
static int parse_tpl(const char *f) {
  if (!f || !*f || strlen(f) > 6)
    return -1;
  int v = 0;
  for (const char *p = f; *p; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    v = v * 10 + (*p - '0');
  }
  return v;
}

static bool grow(void **arr, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return true;
  size_t nc = *cap ? *cap * 2 : 16;
  while (nc < need)
    nc *= 2;
  void *p = realloc(*arr, nc * elem);
  if (!p)
    return false;
  *arr = p;
  *cap = nc;
  return true;
}

/* ---- outbox -------------------------------------------------------------- */

static void outbox_add(outbox *ob, const char *topic, const char *payload) {
  if (!grow((void **)&ob->items, &ob->cap, ob->n + 1, sizeof *ob->items))
    return;
  outmsg *m = &ob->items[ob->n];
  m->topic = strdup(topic);
  m->payload = strdup(payload);
  if (!m->topic || !m->payload) {
    free(m->topic);
    free(m->payload);
    return;
  }
  ob->n++;
}

/* Encodes fields as one line and queues it. */
static void outbox_line(outbox *ob, const char *topic,
                        const char *const *fields, size_t n) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  if (smartrest_encode_line(&b, fields, n) == 0 && b.data)
    outbox_add(ob, topic, b.data);
  smartrest_buf_free(&b);
}

static void echo_msg(const char *prefix, const char *topic,
                     const char *payload) {
  flockfile(stdout);
  fputs(prefix, stdout);
  fputs(topic, stdout);
  putc_unlocked(' ', stdout);
  for (const char *p = payload; *p; p++) {
    if (*p == '\n')
      fputs("\\n", stdout);
    else if (*p != '\r')
      putc_unlocked(*p, stdout);
  }
  putc_unlocked('\n', stdout);
  fflush(stdout);
  funlockfile(stdout);
}

static int publish_raw(sim *s, const char *topic, const char *payload) {
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = (void *)payload;
  m.payloadlen = (int)strlen(payload);
  m.qos = 1;
  m.retained = 0;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  int rc = MQTTAsync_sendMessage(s->client, topic, &m, &ro);
  if (s->echo)
    echo_msg(rc == MQTTASYNC_SUCCESS ? "-> " : "-> (not sent) ", topic,
             payload);
  return rc == MQTTASYNC_SUCCESS ? 0 : -1;
}

static void outbox_flush(sim *s, outbox *ob) {
  for (size_t i = 0; i < ob->n; i++) {
    publish_raw(s, ob->items[i].topic, ob->items[i].payload);
    free(ob->items[i].topic);
    free(ob->items[i].payload);
  }
  free(ob->items);
  ob->items = NULL;
  ob->n = ob->cap = 0;
}

/* ---- platform state (all under s->mu) ------------------------------------ */

static sim_dev *dev_find(sim *s, const char *id) {
  for (size_t i = 0; i < s->ndevs; i++)
    if (strcmp(s->devs[i].id, id) == 0)
      return &s->devs[i];
  return NULL;
}

static sim_dev *dev_add(sim *s, const char *id, const char *parent,
                        bool created) {
  if (!grow((void **)&s->devs, &s->capdevs, s->ndevs + 1, sizeof *s->devs))
    return NULL;
  sim_dev *d = &s->devs[s->ndevs];
  memset(d, 0, sizeof *d);
  d->id = strdup(id);
  d->parent = parent ? strdup(parent) : NULL;
  if (!d->id || (parent && !d->parent)) {
    free(d->id);
    free(d->parent);
    return NULL;
  }
  d->mo_id = s->next_mo_id++;
  d->created = created;
  s->ndevs++;
  return d;
}

static sim_op *op_find(sim *s, long id) {
  for (size_t i = 0; i < s->nops; i++)
    if (s->ops[i].id == id)
      return &s->ops[i];
  return NULL;
}

/* Oldest operation of `device` in state `st` with `fragment`. */
static sim_op *op_oldest(sim *s, const char *device, const char *fragment,
                         sim_op_status st) {
  for (size_t i = 0; i < s->nops; i++) {
    sim_op *o = &s->ops[i];
    if (o->st == st && strcmp(o->fragment, fragment) == 0 &&
        strcmp(o->device, device) == 0)
      return o;
  }
  return NULL;
}

/* Operation result: a single param is kept unescaped (a command's output),
 * several are re-encoded as CSV ("CLOSED,OPEN"). */
static void op_finish(sim_op *o, sim_op_status st, char *const *params,
                      size_t n) {
  o->st = st;
  free(o->detail);
  o->detail = NULL;
  if (n == 1) {
    o->detail = strdup(params[0]);
  } else if (n > 1) {
    smartrest_buf b;
    smartrest_buf_init(&b);
    if (smartrest_encode_line(&b, (const char *const *)params, n) == 0 &&
        b.data)
      o->detail = strdup(b.data);
    smartrest_buf_free(&b);
  }
}

/* The operation as devicecontrol/notifications carries it (Cumulocity
 * "JSON via MQTT", Receiving operations): the REST representation with
 * externalSource naming the device. Under s->mu; malloc'ed. */
static char *op_json(sim *s, const sim_op *o) {
  json_t *doc = json_loads(o->fragments, 0, NULL);
  if (!json_is_object(doc)) {
    json_decref(doc);
    return NULL;
  }
  char id[32], mo[32];
  snprintf(id, sizeof id, "%ld", o->id);
  json_object_set_new(doc, "id", json_string(id));
  /* Managed-object ids of the device and of the agent (the root), as far
   * as the platform side knows them. */
  const sim_dev *d = dev_find(s, o->device);
  const sim_dev *root = dev_find(s, s->device_id);
  if (d) {
    snprintf(mo, sizeof mo, "%ld", d->mo_id);
    json_object_set_new(doc, "deviceId", json_string(mo));
  }
  if (root) {
    snprintf(mo, sizeof mo, "%ld", root->mo_id);
    json_object_set_new(doc, "agentId", json_string(mo));
  }
  json_object_set_new(doc, "status", json_string(sim_op_status_name(o->st)));
  json_object_set_new(doc, "creationTime",
                      json_string("2026-01-01T00:00:00.000Z"));
  json_object_set_new(doc, "description", json_string(o->fragment));
  json_object_set_new(doc, "delivery",
                      json_pack("{s:[],s:s,s:s}", "log", "status",
                                sim_op_status_name(o->st), "time",
                                "2026-01-01T00:00:00.000Z"));
  json_object_set_new(
      doc, "externalSource",
      json_pack("{s:s,s:s}", "externalId", o->device, "type", "c8y_Serial"));
  char *text = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  return text;
}

static void reply_error(outbox *ob, const char *code, const char *tpl,
                        const char *text) {
  const char *f[] = {code, tpl, text};
  outbox_line(ob, "s/e", f, 3);
}

static void handle_record(sim *s, sim_dev *dev, const smartrest_record *r,
                          outbox *ob) {
  if (r->nfields == 0)
    return;
  const char *id0 = r->fields[0];
  if (r->error) {
    char text[128];
    snprintf(text, sizeof text, "Malformed Request (%s)", r->error);
    reply_error(ob, "42", id0, text);
    return;
  }
  int tpl = parse_tpl(id0);
  if (tpl < 0 || !known_upstream(tpl)) {
    reply_error(ob, "40", id0, "No static template for this message id");
    return;
  }
  char *const *arg = r->fields + 1;
  size_t nargs = r->nfields - 1;
  if (tpl == 100) {
    if (dev->created)
      reply_error(ob, "41", "100", "Device already existing");
    dev->created = true;
    return;
  }
  /* Data for an unknown device creates it, as on the platform. */
  dev->created = true;
  const char *devid = dev->id;
  switch (tpl) {
  case 101: {
    if (nargs < 1 || !*arg[0]) {
      reply_error(ob, "45", id0, "Wrong number of arguments");
      return;
    }
    sim_dev *c = dev_find(s, arg[0]);
    if (!c)
      dev_add(s, arg[0], devid, true);
    else
      c->created = true;
    return;
  }
  case 102: {
    /* Cumulocity "Services": 102 creates the service of the device of the
     * topic, or updates an existing one's status (thin-edge sends 102 for
     * every status change). */
    if (nargs < 4 || !*arg[0] || !*arg[3]) {
      reply_error(ob, "45", id0, "Wrong number of arguments");
      return;
    }
    sim_dev *c = dev_find(s, arg[0]);
    if (!c && !(c = dev_add(s, arg[0], devid, true)))
      return;
    c->created = true;
    c->service = true;
    free(c->status);
    c->status = strdup(arg[3]);
    return;
  }
  case 104: {
    if (nargs < 1 || !*arg[0]) {
      reply_error(ob, "45", id0, "Wrong number of arguments");
      return;
    }
    if (!dev->service)
      return; /* not a service: nothing to update */
    free(dev->status);
    dev->status = strdup(arg[0]);
    return;
  }
  case 105: {
    size_t n = 1;
    const char **f = malloc((s->ndevs + 1) * sizeof *f);
    if (!f)
      return;
    f[0] = "106";
    for (size_t i = 0; i < s->ndevs; i++)
      if (s->devs[i].parent && strcmp(s->devs[i].parent, devid) == 0)
        f[n++] = s->devs[i].id;
    outbox_line(ob, "s/ds", f, n);
    free(f);
    return;
  }
  case 123: {
    char num[32];
    snprintf(num, sizeof num, "%ld", dev->mo_id);
    const char *f[] = {"124", num};
    outbox_line(ob, "s/ds", f, 2);
    return;
  }
  case 500: {
    smartrest_buf b;
    smartrest_buf_init(&b);
    bool root = dev->parent == NULL;
    for (size_t i = 0; i < s->nops; i++) {
      sim_op *o = &s->ops[i];
      if (o->st != SIM_OP_PENDING || !o->line || o->xid ||
          (!root && strcmp(o->device, devid) != 0))
        continue;
      if (b.len)
        smartrest_buf_append(&b, "\n", 1);
      smartrest_buf_append(&b, o->line, strlen(o->line));
    }
    if (b.len)
      outbox_add(ob, "s/ds", b.data);
    /* The platform publishes PENDING operations again on JSON as well
     * (thin-edge issue #3403). */
    smartrest_buf_reset(&b);
    for (size_t i = 0; i < s->nops; i++) {
      sim_op *o = &s->ops[i];
      if (o->st != SIM_OP_PENDING || !o->fragments ||
          (!root && strcmp(o->device, devid) != 0))
        continue;
      char *doc = op_json(s, o);
      if (doc) {
        if (b.len)
          smartrest_buf_append(&b, "\n", 1);
        smartrest_buf_append(&b, doc, strlen(doc));
      }
      free(doc);
    }
    if (b.len)
      outbox_add(ob, "devicecontrol/notifications", b.data);
    smartrest_buf_free(&b);
    for (size_t i = 0; i < s->nops; i++) {
      sim_op *o = &s->ops[i];
      if (o->st != SIM_OP_PENDING || !o->xid ||
          (!root && strcmp(o->device, devid) != 0))
        continue;
      char topic[300];
      snprintf(topic, sizeof topic, "s/dc/%s", o->xid);
      outbox_add(ob, topic, o->line);
    }
    return;
  }
  case 501:
  case 502:
  case 503: {
    if (nargs < 1 || !*arg[0]) {
      reply_error(ob, "45", id0, "Wrong number of arguments");
      return;
    }
    sim_op *o = op_oldest(s, devid, arg[0],
                          tpl == 501 ? SIM_OP_PENDING : SIM_OP_EXECUTING);
    if (!o)
      return; /* the platform silently ignores it */
    if (tpl == 501)
      o->st = SIM_OP_EXECUTING;
    else
      op_finish(o, tpl == 502 ? SIM_OP_FAILED : SIM_OP_SUCCESSFUL, arg + 1,
                nargs - 1);
    return;
  }
  case 504:
  case 505:
  case 506: {
    char *end = NULL;
    long id = nargs >= 1 ? strtol(arg[0], &end, 10) : 0;
    if (nargs < 1 || !*arg[0] || *end) {
      reply_error(ob, "45", id0, "Wrong number of arguments");
      return;
    }
    sim_op *o = op_find(s, id);
    if (!o || strcmp(o->device, devid) != 0)
      return;
    if (tpl == 504) {
      if (o->st == SIM_OP_PENDING)
        o->st = SIM_OP_EXECUTING;
    } else if (o->st == SIM_OP_PENDING || o->st == SIM_OP_EXECUTING) {
      op_finish(o, tpl == 505 ? SIM_OP_FAILED : SIM_OP_SUCCESSFUL, arg + 1,
                nargs - 1);
    }
    return;
  }
  case 507: {
    const char *frag = nargs >= 1 && *arg[0] ? arg[0] : NULL;
    for (size_t i = 0; i < s->nops; i++) {
      sim_op *o = &s->ops[i];
      if (o->st == SIM_OP_EXECUTING && strcmp(o->device, devid) == 0 &&
          (!frag || strcmp(o->fragment, frag) == 0))
        op_finish(o, SIM_OP_FAILED, arg + 1, nargs >= 2 ? 1 : 0);
    }
    return;
  }
  case 600: {
    const char *f[] = {"601", "c8y-sim"};
    outbox_line(ob, "s/ds", f, 2);
    return;
  }
  case 602: {
    smartrest_buf b;
    smartrest_buf_init(&b);
    smartrest_append_field(&b, "603");
    char num[16];
    for (size_t i = 0; i < sizeof k_known_upstream / sizeof k_known_upstream[0];
         i++) {
      snprintf(num, sizeof num, "%d", k_known_upstream[i]);
      smartrest_append_field(&b, num);
    }
    if (b.data)
      outbox_add(ob, "s/ds", b.data);
    smartrest_buf_free(&b);
    return;
  }
  default:
    return; /* data templates: recorded, nothing to answer */
  }
}

/* s/ut/<X-ID>: a payload creates the collection; an empty one asks whether
 * it exists. */
static void handle_template_collection(sim *s, const char *xid,
                                       const char *payload, outbox *ob) {
  sim_coll *c = NULL;
  for (size_t i = 0; i < s->ncolls; i++)
    if (strcmp(s->colls[i].xid, xid) == 0)
      c = &s->colls[i];
  char num[32];
  if (!*payload) {
    if (c) {
      snprintf(num, sizeof num, "%ld", c->id);
      const char *f[] = {"20", xid, num};
      outbox_line(ob, "s/dt", f, 3);
    } else {
      const char *f[] = {"41", xid};
      outbox_line(ob, "s/dt", f, 2);
    }
    return;
  }
  if (c) {
    reply_error(ob, "41", xid,
                "Cannot create templates for already existing template "
                "object");
    return;
  }
  if (!grow((void **)&s->colls, &s->capcolls, s->ncolls + 1, sizeof *s->colls))
    return;
  c = &s->colls[s->ncolls];
  if (!(c->xid = strdup(xid)))
    return;
  c->id = s->next_mo_id++;
  s->ncolls++;
  snprintf(num, sizeof num, "%ld", c->id);
  const char *f[] = {"20", xid, num};
  outbox_line(ob, "s/dt", f, 3);
}

/* Topics the simulator itself publishes (it sees them through "#"). */
static bool is_downstream(const char *topic) {
  if (strcmp(topic, "s/e") == 0 || strcmp(topic, "error") == 0 ||
      strncmp(topic, "devicecontrol/", 14) == 0)
    return true;
  return strchr("stqc", topic[0]) && topic[0] && topic[1] == '/' &&
         topic[2] == 'd';
}

static void handle_bootstrap_request(sim *s, outbox *ob);

static void handle_upstream(sim *s, const char *topic, const char *payload,
                            size_t len, outbox *ob) {
  if (strcmp(topic, "s/ucr") == 0) {
    handle_bootstrap_request(s, ob);
    return;
  }
  /* <s|t|q|c>/us[/<child>] */
  if (strchr("stqc", topic[0]) && topic[0] &&
      strncmp(topic + 1, "/us", 3) == 0 &&
      (topic[4] == '\0' ||
       (topic[4] == '/' && topic[5] && !strchr(topic + 5, '/')))) {
    sim_dev *dev = dev_find(s, topic[4] ? topic + 5 : s->device_id);
    if (!dev)
      dev = dev_add(s, topic + 5, s->device_id, false);
    if (!dev)
      return;
    smartrest_records recs = {0};
    if (smartrest_decode(payload, len, &recs) != 0)
      return;
    for (size_t i = 0; i < recs.count; i++) {
      /* Re-find: dev_add (101) may move the array. */
      sim_dev *d = dev_find(s, topic[4] ? topic + 5 : s->device_id);
      if (d)
        handle_record(s, d, &recs.items[i], ob);
    }
    smartrest_records_free(&recs);
    return;
  }
  if (strncmp(topic, "s/ut/", 5) == 0 && topic[5] && !strchr(topic + 5, '/'))
    handle_template_collection(s, topic + 5, payload, ob);
  if (strcmp(topic, "s/uat") == 0 && s->mint_token) {
    char *tok = s->mint_token(s->mint_ctx);
    if (tok) {
      const char *f[] = {"71", tok};
      outbox_line(ob, "s/dat", f, 2);
    }
    free(tok);
  }
}

/* ---- Paho callbacks (Paho's thread) ---------------------------------------
 */

static int on_message(void *ctx, char *topic, int topiclen,
                      MQTTAsync_message *m) {
  sim *s = ctx;
  char *t = topiclen > 0 ? strndup(topic, (size_t)topiclen) : strdup(topic);
  outbox ob = {0};
  if (t && !is_downstream(t)) {
    bool stored = false;
    sim_message *msg = calloc(1, sizeof *msg);
    char *p = malloc((size_t)m->payloadlen + 1);
    if (msg && p) {
      memcpy(p, m->payload, (size_t)m->payloadlen);
      p[m->payloadlen] = '\0';
      msg->topic = t;
      msg->payload = p;
      msg->len = (size_t)m->payloadlen;
      msg->t_ms = mono_ms();
      t = NULL;
      pthread_mutex_lock(&s->mu);
      if (grow((void **)&s->msgs, &s->capmsgs, s->nmsgs + 1, sizeof *s->msgs)) {
        s->msgs[s->nmsgs++] = msg;
        if (s->echo)
          echo_msg("", msg->topic, msg->payload);
        handle_upstream(s, msg->topic, msg->payload, msg->len, &ob);
        stored = true;
      }
      pthread_cond_broadcast(&s->cv);
      pthread_mutex_unlock(&s->mu);
    }
    if (!stored) {
      if (msg)
        free(msg->topic);
      free(msg);
      free(p);
    }
  }
  free(t);
  outbox_flush(s, &ob);
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_subscribed(void *ctx, MQTTAsync_successData *r) {
  sim *s = ctx;
  pthread_mutex_lock(&s->mu);
  if (r && r->alt.qos == 0x80) {
    s->connect_failed = true;
    snprintf(s->connect_err, sizeof s->connect_err,
             "broker refused the simulator's subscription to #");
  } else {
    s->subscribed = true;
    s->sub_gen++;
  }
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_subscribe_failed(void *ctx, MQTTAsync_failureData *r) {
  sim *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->connect_failed = true;
  snprintf(s->connect_err, sizeof s->connect_err,
           "subscribing to # failed (code %d)", r ? r->code : 0);
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* Clean session: subscribe again after every (re)connect. */
static void on_connected(void *ctx, char *cause) {
  sim *s = ctx;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess = on_subscribed;
  ro.onFailure = on_subscribe_failed;
  ro.context = s;
  MQTTAsync_subscribe(s->client, "#", 1, &ro);
}

static void on_connect_failed(void *ctx, MQTTAsync_failureData *r) {
  sim *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->connect_failed = true;
  snprintf(s->connect_err, sizeof s->connect_err,
           "simulator client cannot connect (code %d%s%s)", r ? r->code : 0,
           r && r->message ? ": " : "", r && r->message ? r->message : "");
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_connection_lost(void *ctx, char *cause) {
  sim *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->subscribed = false;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_disconnected(void *ctx, MQTTAsync_successData *r) {
  sim *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->disconnected = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_disconnect_failed(void *ctx, MQTTAsync_failureData *r) {
  on_disconnected(ctx, NULL);
}

/* ---- setup ----------------------------------------------------------------
 */

/* What a device user may do on the platform. No s/us read: a device never
 * sees other devices' (or its own) upstream traffic. */
static void acl_device_name(FILE *f, const char *name) {
  static const char *const writes[] = {"s/us",   "s/us/#", "s/uc/#",
                                       "s/ut/#", "s/uat",  "s/ucr",
                                       "t/us",   "q/us",   "c/us"};
  static const char *const reads[] = {"s/ds",
                                      "s/e",
                                      "s/dc/#",
                                      "s/dt",
                                      "s/dat",
                                      "s/dcr",
                                      "devicecontrol/notifications"};
  fprintf(f, "\nuser %s\n", name);
  for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++)
    fprintf(f, "topic write %s\n", writes[i]);
  for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++)
    fprintf(f, "topic read %s\n", reads[i]);
}

static void acl_device_user(FILE *f, const char *tenant, const char *user) {
  char name[512];
  snprintf(name, sizeof name, "%s/%s", tenant, user);
  acl_device_name(f, name);
}

static const char *reg_user(const sim *s, size_t i);

static int write_acl(sim *s, char *err, size_t errlen) {
  FILE *f = fopen(s->acl_path, "w");
  if (!f) {
    seterr(err, errlen, "%s: cannot create: %s", s->acl_path, strerror(errno));
    return -1;
  }
  fchmod(fileno(f), 0600);
  fprintf(f, "user sim\ntopic readwrite #\n");
  acl_device_user(f, s->tenant, s->user);
  /* A certificate device's user name is its CN, without a tenant. */
  if (s->cert_device)
    acl_device_name(f, s->device_id);
  /* The bootstrap user can only ask for credentials and receive them. */
  fprintf(f, "\nuser " SIM_BOOTSTRAP_USER "\ntopic write s/ucr\n"
             "topic read s/dcr\n");
  for (size_t i = 0; i < s->nregs; i++)
    if (reg_user(s, i))
      acl_device_user(f, s->tenant, reg_user(s, i));
  if (fclose(f) != 0) {
    seterr(err, errlen, "%s: write failed: %s", s->acl_path, strerror(errno));
    return -1;
  }
  return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

static void free_regs(sim *s);
static int write_passwd(sim *s, char *err, size_t errlen);

static void free_sim(sim *s) {
  for (size_t i = 0; i < s->nmsgs; i++) {
    free(s->msgs[i]->topic);
    free(s->msgs[i]->payload);
    free(s->msgs[i]);
  }
  free(s->msgs);
  for (size_t i = 0; i < s->nops; i++) {
    free(s->ops[i].line);
    free(s->ops[i].device);
    free(s->ops[i].detail);
    free(s->ops[i].own_fragment);
    free(s->ops[i].fragments);
    free(s->ops[i].xid);
  }
  free(s->ops);
  for (size_t i = 0; i < s->ndevs; i++) {
    free(s->devs[i].id);
    free(s->devs[i].parent);
    free(s->devs[i].status);
  }
  free(s->devs);
  for (size_t i = 0; i < s->ncolls; i++)
    free(s->colls[i].xid);
  free(s->colls);
  free(s->tenant);
  free(s->user);
  free(s->password);
  free(s->device_id);
  free(s->workdir);
  free(s->passwd_path);
  free(s->acl_path);
  free_regs(s);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s);
}

static bool valid_name(const char *v) {
  return v && *v && !strpbrk(v, "/+#:\r\n ");
}

/* Connects the simulator's client and waits (<= 5 s) for its subscription. */
static int connect_client(sim *s, char *err, size_t errlen) {
  char uri[64], cid[64];
  snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", broker_port(s->br));
  snprintf(cid, sizeof cid, "c8y-sim-%d-%p", (int)getpid(), (void *)s);
  if (MQTTAsync_create(&s->client, uri, cid, MQTTCLIENT_PERSISTENCE_NONE,
                       NULL) != MQTTASYNC_SUCCESS) {
    s->client = NULL;
    seterr(err, errlen, "MQTTAsync_create(%s) failed", uri);
    return -1;
  }
  MQTTAsync_setCallbacks(s->client, s, on_connection_lost, on_message, NULL);
  MQTTAsync_setConnected(s->client, s, on_connected);
  MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
  co.keepAliveInterval = 10;
  co.cleansession = 1;
  co.username = "sim";
  co.password = s->sim_password;
  co.connectTimeout = 5;
  co.MQTTVersion = MQTTVERSION_3_1_1;
  co.automaticReconnect = 1;
  co.minRetryInterval = 1;
  co.maxRetryInterval = 2;
  co.onFailure = on_connect_failed;
  co.context = s;
  int rc = MQTTAsync_connect(s->client, &co);
  if (rc != MQTTASYNC_SUCCESS) {
    seterr(err, errlen, "MQTTAsync_connect(%s) failed: %d", uri, rc);
    return -1;
  }
  struct timespec dl = deadline_ts(5000);
  pthread_mutex_lock(&s->mu);
  while (!s->subscribed && !s->connect_failed && wait_until(s, &dl)) {
  }
  bool ok = s->subscribed;
  if (!ok)
    seterr(err, errlen, "%s",
           s->connect_failed ? s->connect_err
                             : "simulator client not subscribed within 5 s");
  pthread_mutex_unlock(&s->mu);
  return ok ? 0 : -1;
}

int sim_start(const sim_options *o, sim **out, char *err, size_t errlen) {
  *out = NULL;
  sim_options d = {0};
  if (o)
    d = *o;
  if (!d.tenant)
    d.tenant = "t1";
  if (!d.user)
    d.user = "device";
  if (!d.password)
    d.password = "secret";
  if (!d.device_id)
    d.device_id = "dev1";
  if (!valid_name(d.tenant) || !valid_name(d.user) ||
      !valid_name(d.device_id) || strchr(d.password, '\n')) {
    seterr(err, errlen,
           "sim options: tenant, user and device id must be "
           "non-empty without '/', '+', '#', ':', spaces or newlines");
    return -1;
  }
  if (d.port < 0 || d.port > 65535) {
    seterr(err, errlen, "sim options: port %d out of range 0..65535", d.port);
    return -1;
  }
  sim *s = calloc(1, sizeof *s);
  if (!s) {
    seterr(err, errlen, "out of memory");
    return -1;
  }
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &ca);
  pthread_condattr_destroy(&ca);
  s->echo = d.echo;
  s->next_op_id = 1001;
  s->next_mo_id = 50001;
  s->tenant = strdup(d.tenant);
  s->user = strdup(d.user);
  s->password = strdup(d.password);
  s->device_id = strdup(d.device_id);
  if (!s->tenant || !s->user || !s->password || !s->device_id ||
      !dev_add(s, d.device_id, NULL, false)) {
    seterr(err, errlen, "out of memory");
    free_sim(s);
    return -1;
  }
  if (d.workdir) {
    if (mkdir(d.workdir, 0700) != 0 && errno != EEXIST) {
      seterr(err, errlen, "%s: cannot create workdir: %s", d.workdir,
             strerror(errno));
      free_sim(s);
      return -1;
    }
    s->workdir = strdup(d.workdir);
  } else {
    const char *tmp = getenv("TMPDIR");
    if (asprintf(&s->workdir, "%s/c8y-sim-XXXXXX", tmp && *tmp ? tmp : "/tmp") <
            0 ||
        !mkdtemp(s->workdir)) {
      seterr(err, errlen, "cannot create a temporary workdir: %s",
             strerror(errno));
      free_sim(s);
      return -1;
    }
    s->own_workdir = true;
  }
  unsigned char rnd[16];
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
    seterr(err, errlen, "getrandom failed: %s", strerror(errno));
    sim_stop(s);
    return -1;
  }
  for (size_t i = 0; i < sizeof rnd; i++)
    snprintf(s->sim_password + 2 * i, 3, "%02x", rnd[i]);
  if (asprintf(&s->passwd_path, "%s/passwd", s->workdir) < 0 ||
      asprintf(&s->acl_path, "%s/acl", s->workdir) < 0) {
    seterr(err, errlen, "out of memory");
    sim_stop(s);
    return -1;
  }
  if (!(s->bs_password =
            strdup(d.bootstrap_password ? d.bootstrap_password
                                        : SIM_BOOTSTRAP_PASSWORD))) {
    seterr(err, errlen, "out of memory");
    sim_stop(s);
    return -1;
  }
  if (write_passwd(s, err, errlen) != 0 || write_acl(s, err, errlen) != 0 ||
      broker_start(s->workdir, s->passwd_path, s->acl_path, d.port, &s->br, err,
                   errlen) != 0 ||
      connect_client(s, err, errlen) != 0) {
    sim_stop(s);
    return -1;
  }
  *out = s;
  return 0;
}

void sim_stop(sim *s) {
  if (!s)
    return;
  if (s->client) {
    MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
    dopt.timeout = 500;
    dopt.onSuccess = on_disconnected;
    dopt.onFailure = on_disconnect_failed;
    dopt.context = s;
    if (MQTTAsync_isConnected(s->client) &&
        MQTTAsync_disconnect(s->client, &dopt) == MQTTASYNC_SUCCESS) {
      struct timespec dl = deadline_ts(1000);
      pthread_mutex_lock(&s->mu);
      while (!s->disconnected && wait_until(s, &dl)) {
      }
      pthread_mutex_unlock(&s->mu);
    }
    MQTTAsync_destroy(&s->client);
  }
  broker_stop(s->br);
  s->br = NULL;
  if (s->own_workdir && s->workdir)
    nftw(s->workdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free_sim(s);
}

int sim_port(const sim *s) { return broker_port(s->br); }

const char *sim_workdir(const sim *s) { return s->workdir; }

int sim_broker_kill(sim *s) {
  pthread_mutex_lock(&s->mu);
  s->kill_gen = s->sub_gen;
  pthread_mutex_unlock(&s->mu);
  return broker_kill(s->br);
}

/* After a broker restart: skips Paho's back-off so the sim is back before
 * the device usually is, and waits (10 s at most) until it subscribed
 * again. */
static bool reconnected(sim *s) {
  MQTTAsync_reconnect(s->client);
  struct timespec dl = deadline_ts(10000);
  pthread_mutex_lock(&s->mu);
  while (!(s->subscribed && s->sub_gen > s->kill_gen) && wait_until(s, &dl)) {
  }
  bool ok = s->subscribed && s->sub_gen > s->kill_gen;
  pthread_mutex_unlock(&s->mu);
  return ok;
}

int sim_broker_start(sim *s) {
  char err[256];
  if (broker_restart(s->br, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-sim: broker restart failed: %s\n", err);
    return -1;
  }
  if (!reconnected(s)) {
    fprintf(stderr, "c8y-sim: simulator did not reconnect within 10 s\n");
    return -1;
  }
  return 0;
}

int sim_add_cert_listener(sim *s, const char *ca_file, const char *cert_file,
                          const char *key_file, char *err, size_t errlen) {
  s->cert_device = true; /* only this (the test's) thread writes the ACL */
  if (write_acl(s, err, errlen) != 0)
    return -1;
  int port = broker_free_port();
  if (port <= 0) {
    seterr(err, errlen, "no free port for the certificate listener");
    return -1;
  }
  char conf[4096];
  /* Cumulocity's certificate authentication: a client certificate from the
   * tenant's CA is required and its CN is the identity. */
  snprintf(conf, sizeof conf,
           "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
           "require_certificate true\nuse_identity_as_username true\n",
           port, ca_file, cert_file, key_file);
  pthread_mutex_lock(&s->mu);
  s->kill_gen = s->sub_gen;
  pthread_mutex_unlock(&s->mu);
  if (broker_restart_with(s->br, conf, err, errlen) != 0)
    return -1;
  s->cert_port = port;
  if (!reconnected(s)) {
    seterr(err, errlen, "the simulator did not reconnect within 10 s");
    return -1;
  }
  return port;
}

int sim_cert_port(const sim *s) { return s->cert_port; }

/* ---- operations -----------------------------------------------------------
 */

/* The fragment object of a static operation's JSON copy: c8y_Command
 * carries its text, the others their parameters as the line has them. */
static char *static_fragments(const smartrest_record *r, const char *frag) {
  json_t *inner = json_object();
  if (strcmp(frag, "c8y_Command") == 0 && r->nfields >= 3)
    json_object_set_new(inner, "text", json_string(r->fields[2]));
  else if (r->nfields > 2) {
    json_t *params = json_array();
    for (size_t i = 2; i < r->nfields; i++)
      json_array_append_new(params, json_string(r->fields[i]));
    json_object_set_new(inner, "parameters", params);
  }
  json_t *doc = json_object();
  json_object_set_new(doc, frag, inner);
  char *text = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  return text;
}

/* Publishes the operation's JSON document (not under s->mu). */
static void publish_json(sim *s, long id) {
  pthread_mutex_lock(&s->mu);
  sim_op *o = op_find(s, id);
  char *doc = o && o->fragments ? op_json(s, o) : NULL;
  pthread_mutex_unlock(&s->mu);
  if (doc)
    publish_raw(s, "devicecontrol/notifications", doc);
  free(doc);
}

/* Appends `o` (its strings taken over) as a PENDING operation when `ok`
 * (all its strings were allocated); frees them otherwise. Under s->mu.
 * Returns its id or -1. */
static long op_append(sim *s, sim_op *o, bool ok) {
  if (ok && grow((void **)&s->ops, &s->capops, s->nops + 1, sizeof *s->ops)) {
    o->id = s->next_op_id++;
    o->st = SIM_OP_PENDING;
    if (o->own_fragment)
      o->fragment = o->own_fragment;
    s->ops[s->nops++] = *o;
    pthread_cond_broadcast(&s->cv);
    return o->id;
  }
  free(o->line);
  free(o->device);
  free(o->own_fragment);
  free(o->fragments);
  free(o->xid);
  return -1;
}

/* A strdup of line without its line end. */
static char *line_copy(const char *line) {
  char *c = strdup(line);
  size_t l = c ? strlen(c) : 0;
  while (l && (c[l - 1] == '\n' || c[l - 1] == '\r'))
    c[--l] = '\0';
  return c;
}

long sim_create_operation(sim *s, const char *line) {
  if (!line)
    return -1;
  smartrest_records recs = {0};
  if (smartrest_decode(line, strlen(line), &recs) != 0)
    return -1;
  long id = -1;
  const smartrest_record *r = recs.count == 1 ? &recs.items[0] : NULL;
  int tpl = r && !r->error && r->nfields >= 2 ? parse_tpl(r->fields[0]) : -1;
  const char *frag = tpl > 0 ? fragment_of(tpl) : NULL;
  bool json = false;
  if (frag && *r->fields[1]) {
    pthread_mutex_lock(&s->mu);
    json = s->json_ops;
    sim_op o = {.tpl = tpl,
                .fragment = frag,
                .line = line_copy(line),
                .device = strdup(r->fields[1]),
                .fragments = json ? static_fragments(r, frag) : NULL};
    id = op_append(s, &o, o.line && o.device && (!json || o.fragments));
    pthread_mutex_unlock(&s->mu);
  }
  smartrest_records_free(&recs);
  if (id > 0) {
    /* Lost if the device is not subscribed, like on the platform; a 500
     * delivers it again. */
    publish_raw(s, "s/ds", sim_operation_line(s, id));
    if (json)
      publish_json(s, id);
  }
  return id;
}

long sim_create_operation_copies(sim *s, const char *lines,
                                 const char *fragments) {
  smartrest_records recs = {0};
  if (!lines || smartrest_decode(lines, strlen(lines), &recs) != 0)
    return -1;
  const char *frag = NULL, *device = NULL;
  bool ok = recs.count > 0;
  for (size_t i = 0; ok && i < recs.count; i++) {
    const smartrest_record *r = &recs.items[i];
    int tpl = !r->error && r->nfields >= 2 ? parse_tpl(r->fields[0]) : -1;
    const char *f = tpl > 0 ? fragment_of(tpl) : NULL;
    ok = f && *r->fields[1] && (!frag || strcmp(f, frag) == 0) &&
         (!device || strcmp(r->fields[1], device) == 0);
    frag = f;
    device = r->fields[1];
  }
  json_t *doc = fragments ? json_loads(fragments, 0, NULL) : NULL;
  ok = ok && (!fragments || json_is_object(doc));
  long id = -1;
  if (ok) {
    pthread_mutex_lock(&s->mu);
    sim_op o = {.tpl = parse_tpl(recs.items[0].fields[0]),
                .fragment = frag,
                .line = line_copy(lines),
                .device = strdup(device),
                .fragments = doc ? json_dumps(doc, JSON_COMPACT) : NULL};
    id = op_append(s, &o, o.line && o.device && (!doc || o.fragments));
    pthread_mutex_unlock(&s->mu);
  }
  json_decref(doc);
  smartrest_records_free(&recs);
  if (id > 0) {
    publish_raw(s, "s/ds", sim_operation_line(s, id));
    if (fragments)
      publish_json(s, id);
  }
  return id;
}

long sim_create_json_operation(sim *s, const char *device,
                               const char *fragments) {
  json_t *doc =
      device && *device && fragments ? json_loads(fragments, 0, NULL) : NULL;
  const char *first = NULL;
  const char *key;
  json_t *v;
  if (json_is_object(doc))
    json_object_foreach(doc, key, v) {
      if (!first)
        first = key;
    }
  long id = -1;
  if (first) {
    pthread_mutex_lock(&s->mu);
    sim_op o = {.device = strdup(device),
                .own_fragment = strdup(first),
                .fragments = json_dumps(doc, JSON_COMPACT)};
    id = op_append(s, &o, o.device && o.own_fragment && o.fragments);
    pthread_mutex_unlock(&s->mu);
  }
  json_decref(doc);
  if (id > 0)
    publish_json(s, id);
  return id;
}

long sim_create_custom_operation(sim *s, const char *xid, const char *line,
                                 const char *fragment) {
  smartrest_records recs = {0};
  if (!xid || !*xid || !line || !fragment || !*fragment ||
      smartrest_decode(line, strlen(line), &recs) != 0)
    return -1;
  long id = -1;
  if (recs.count == 1 && !recs.items[0].error && recs.items[0].nfields >= 2 &&
      *recs.items[0].fields[1]) {
    pthread_mutex_lock(&s->mu);
    sim_op o = {.line = line_copy(line),
                .device = strdup(recs.items[0].fields[1]),
                .own_fragment = strdup(fragment),
                .xid = strdup(xid)};
    id = op_append(s, &o, o.line && o.device && o.own_fragment && o.xid);
    pthread_mutex_unlock(&s->mu);
  }
  smartrest_records_free(&recs);
  if (id > 0) {
    char topic[300];
    snprintf(topic, sizeof topic, "s/dc/%s", xid);
    publish_raw(s, topic, sim_operation_line(s, id));
  }
  return id;
}

void sim_set_json_operations(sim *s, bool on) {
  pthread_mutex_lock(&s->mu);
  s->json_ops = on;
  pthread_mutex_unlock(&s->mu);
}

sim_op_status sim_operation_status(sim *s, long id) {
  pthread_mutex_lock(&s->mu);
  sim_op *o = op_find(s, id);
  sim_op_status st = o ? o->st : SIM_OP_FAILED;
  pthread_mutex_unlock(&s->mu);
  return st;
}

const char *sim_operation_detail(sim *s, long id) {
  pthread_mutex_lock(&s->mu);
  sim_op *o = op_find(s, id);
  const char *d = o ? o->detail : NULL;
  pthread_mutex_unlock(&s->mu);
  return d;
}

int sim_wait_operation_done(sim *s, long id, int timeout_ms) {
  struct timespec dl = deadline_ts(timeout_ms);
  int res = -1;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    sim_op *o = op_find(s, id);
    if (!o)
      break;
    if (o->st == SIM_OP_SUCCESSFUL || o->st == SIM_OP_FAILED) {
      res = (int)o->st;
      break;
    }
    if (!wait_until(s, &dl))
      break;
  }
  pthread_mutex_unlock(&s->mu);
  return res;
}

const char *sim_op_status_name(sim_op_status st) {
  switch (st) {
  case SIM_OP_PENDING:
    return "PENDING";
  case SIM_OP_EXECUTING:
    return "EXECUTING";
  case SIM_OP_SUCCESSFUL:
    return "SUCCESSFUL";
  case SIM_OP_FAILED:
    return "FAILED";
  }
  return "?";
}

size_t sim_operation_count(sim *s) {
  pthread_mutex_lock(&s->mu);
  size_t n = s->nops;
  pthread_mutex_unlock(&s->mu);
  return n;
}

long sim_operation_id_at(sim *s, size_t index) {
  pthread_mutex_lock(&s->mu);
  long id = index < s->nops ? s->ops[index].id : -1;
  pthread_mutex_unlock(&s->mu);
  return id;
}

bool sim_operation_exists(sim *s, long id) {
  pthread_mutex_lock(&s->mu);
  bool e = op_find(s, id) != NULL;
  pthread_mutex_unlock(&s->mu);
  return e;
}

const char *sim_operation_line(sim *s, long id) {
  pthread_mutex_lock(&s->mu);
  sim_op *o = op_find(s, id);
  const char *l = o ? o->line : NULL;
  pthread_mutex_unlock(&s->mu);
  return l;
}

bool sim_device_exists(sim *s, const char *external_id) {
  pthread_mutex_lock(&s->mu);
  sim_dev *d = dev_find(s, external_id);
  bool e = d && d->created;
  pthread_mutex_unlock(&s->mu);
  return e;
}

char *sim_service_status(sim *s, const char *external_id) {
  pthread_mutex_lock(&s->mu);
  sim_dev *d = dev_find(s, external_id);
  char *st = d && d->service && d->status ? strdup(d->status) : NULL;
  pthread_mutex_unlock(&s->mu);
  return st;
}

bool sim_wait_service_status(sim *s, const char *external_id,
                             const char *status, int timeout_ms) {
  struct timespec dl = deadline_ts(timeout_ms);
  pthread_mutex_lock(&s->mu);
  bool ok = false;
  for (;;) {
    sim_dev *d = dev_find(s, external_id);
    if (d && d->service && d->status && strcmp(d->status, status) == 0) {
      ok = true;
      break;
    }
    if (!wait_until(s, &dl))
      break;
  }
  pthread_mutex_unlock(&s->mu);
  return ok;
}

const char *sim_service_parent(sim *s, const char *external_id) {
  pthread_mutex_lock(&s->mu);
  sim_dev *d = dev_find(s, external_id);
  const char *p = d && d->service ? d->parent : NULL;
  pthread_mutex_unlock(&s->mu);
  return p;
}

void sim_set_token_source(sim *s, char *(*mint)(void *ctx), void *ctx) {
  pthread_mutex_lock(&s->mu);
  s->mint_token = mint;
  s->mint_ctx = ctx;
  pthread_mutex_unlock(&s->mu);
}

long sim_device_mo_id(sim *s, const char *external_id) {
  pthread_mutex_lock(&s->mu);
  sim_dev *d = dev_find(s, external_id);
  long id = d && d->created ? d->mo_id : -1;
  pthread_mutex_unlock(&s->mu);
  return id;
}

bool sim_mo_exists(sim *s, long mo_id) {
  bool found = false;
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->ndevs && !found; i++)
    found = s->devs[i].created && s->devs[i].mo_id == mo_id;
  pthread_mutex_unlock(&s->mu);
  return found;
}

bool sim_connected(sim *s) {
  pthread_mutex_lock(&s->mu);
  bool c = s->subscribed;
  pthread_mutex_unlock(&s->mu);
  return c;
}

int sim_publish(sim *s, const char *topic, const char *payload) {
  if (!topic || !*topic || !payload)
    return -1;
  return publish_raw(s, topic, payload);
}

/* ---- recorded messages ----------------------------------------------------
 */

size_t sim_message_count(sim *s) {
  pthread_mutex_lock(&s->mu);
  size_t n = s->nmsgs;
  pthread_mutex_unlock(&s->mu);
  return n;
}

const sim_message *sim_message_at(sim *s, size_t index) {
  pthread_mutex_lock(&s->mu);
  const sim_message *m = index < s->nmsgs ? s->msgs[index] : NULL;
  pthread_mutex_unlock(&s->mu);
  return m;
}

/* Records end at LF outside double quotes (a quoted field may hold LFs);
 * counts those starting with prefix. */
static size_t count_prefixed_lines(const char *p, const char *prefix) {
  size_t plen = strlen(prefix), n = 0;
  const char *start = p;
  bool quoted = false;
  for (;; p++) {
    if (*p == '"') {
      quoted = !quoted;
    } else if (*p == '\0' || (*p == '\n' && !quoted)) {
      size_t l = (size_t)(p - start);
      if (l && start[l - 1] == '\r')
        l--;
      if (l > 0 && l >= plen && strncmp(start, prefix, plen) == 0)
        n++;
      if (!*p)
        break;
      start = p + 1;
    }
  }
  return n;
}

long sim_wait_line(sim *s, const char *topic, const char *line_prefix,
                   size_t from, int timeout_ms) {
  struct timespec dl = deadline_ts(timeout_ms);
  long found = -1;
  size_t i = from;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    for (; i < s->nmsgs && found < 0; i++) {
      const sim_message *m = s->msgs[i];
      if (strcmp(m->topic, topic) == 0 &&
          count_prefixed_lines(m->payload, line_prefix) > 0)
        found = (long)i;
    }
    if (found >= 0 || !wait_until(s, &dl))
      break;
  }
  pthread_mutex_unlock(&s->mu);
  return found;
}

size_t sim_count_lines(sim *s, const char *topic, const char *line_prefix) {
  size_t n = 0;
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->nmsgs; i++)
    if (strcmp(s->msgs[i]->topic, topic) == 0)
      n += count_prefixed_lines(s->msgs[i]->payload, line_prefix);
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* ---- device registration (bootstrap) --------------------------------------
 * Only the test thread (sim_accept_registration) adds registrations and
 * writes the broker's files; Paho's thread reads `ready`/`delivered` under
 * mu. */

typedef struct sim_reg {
  char *device_id;
  char *user, *password;
  bool ready;     /* the broker accepts the new credentials */
  bool delivered; /* 70 went out */
} sim_reg;

static const char *reg_user(const sim *s, size_t i) { return s->regs[i].user; }

static void free_regs(sim *s) {
  for (size_t i = 0; i < s->nregs; i++) {
    free(s->regs[i].device_id);
    free(s->regs[i].user);
    free(s->regs[i].password);
  }
  free(s->regs);
  free(s->bs_password);
}

static int write_passwd(sim *s, char *err, size_t errlen) {
  size_t n = 3 + s->nregs;
  broker_user *users = calloc(n, sizeof *users);
  char **names = calloc(n, sizeof *names);
  int rc = -1;
  if (!users || !names ||
      asprintf(&names[0], "%s/%s", s->tenant, s->user) < 0) {
    seterr(err, errlen, "out of memory");
    goto out;
  }
  users[0] = (broker_user){names[0], s->password};
  users[1] = (broker_user){"sim", s->sim_password};
  users[2] = (broker_user){SIM_BOOTSTRAP_USER, s->bs_password};
  for (size_t i = 0; i < s->nregs; i++) {
    if (asprintf(&names[3 + i], "%s/%s", s->tenant, s->regs[i].user) < 0) {
      seterr(err, errlen, "out of memory");
      goto out;
    }
    users[3 + i] = (broker_user){names[3 + i], s->regs[i].password};
  }
  rc = broker_write_passwd(s->passwd_path, users, n, err, errlen);
out:
  for (size_t i = 0; names && i < n; i++)
    free(names[i]);
  free(names);
  free(users);
  return rc;
}

/* An empty s/ucr: answered with 70 once a registration is accepted and its
 * user exists in the broker (called with mu held). The broker cannot tell
 * the simulator which client asked, so the first accepted registration not
 * yet delivered is the answer: tests register one device at a time. */
static void handle_bootstrap_request(sim *s, outbox *ob) {
  s->bs_requests++;
  for (size_t i = 0; i < s->nregs; i++) {
    sim_reg *r = &s->regs[i];
    if (r->ready && !r->delivered) {
      const char *f[] = {"70", s->tenant, r->user, r->password};
      outbox_line(ob, "s/dcr", f, 4);
      r->delivered = true;
      return;
    }
  }
}

typedef struct login_probe {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int result; /* 0 pending, 1 ok, -1 refused */
} login_probe;

static void probe_set(login_probe *p, int result) {
  pthread_mutex_lock(&p->mu);
  p->result = result;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}
static void probe_ok(void *ctx, MQTTAsync_successData *r) { probe_set(ctx, 1); }
static void probe_failed(void *ctx, MQTTAsync_failureData *r) {
  probe_set(ctx, -1);
}

/* Whether the broker accepts user/password now (one CONNECT, <= 2 s). */
static bool broker_accepts(sim *s, const char *user, const char *password) {
  char uri[64], cid[64];
  snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", broker_port(s->br));
  snprintf(cid, sizeof cid, "c8y-sim-probe-%d", (int)getpid());
  MQTTAsync c;
  if (MQTTAsync_create(&c, uri, cid, MQTTCLIENT_PERSISTENCE_NONE, NULL) !=
      MQTTASYNC_SUCCESS)
    return false;
  login_probe p = {.result = 0};
  pthread_mutex_init(&p.mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p.cv, &ca);
  pthread_condattr_destroy(&ca);
  MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
  co.cleansession = 1;
  co.username = user;
  co.password = password;
  co.connectTimeout = 2;
  co.MQTTVersion = MQTTVERSION_3_1_1;
  co.onSuccess = probe_ok;
  co.onFailure = probe_failed;
  co.context = &p;
  if (MQTTAsync_connect(c, &co) == MQTTASYNC_SUCCESS) {
    struct timespec dl = deadline_ts(3000);
    pthread_mutex_lock(&p.mu);
    while (p.result == 0 &&
           pthread_cond_timedwait(&p.cv, &p.mu, &dl) != ETIMEDOUT) {
    }
    pthread_mutex_unlock(&p.mu);
  }
  bool ok = p.result == 1;
  if (ok) {
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = 500;
    MQTTAsync_disconnect(c, &d);
    for (int i = 0; i < 50 && MQTTAsync_isConnected(c); i++)
      usleep(10 * 1000);
  }
  MQTTAsync_destroy(&c);
  pthread_cond_destroy(&p.cv);
  pthread_mutex_destroy(&p.mu);
  return ok;
}

size_t sim_bootstrap_requests(sim *s) {
  pthread_mutex_lock(&s->mu);
  size_t n = s->bs_requests;
  pthread_mutex_unlock(&s->mu);
  return n;
}

bool sim_wait_bootstrap_requests(sim *s, size_t n, int timeout_ms) {
  long long until = mono_ms() + timeout_ms;
  while (sim_bootstrap_requests(s) < n) {
    if (mono_ms() >= until)
      return false;
    usleep(20 * 1000);
  }
  return true;
}

int sim_accept_registration(sim *s, const char *device_id) {
  if (!valid_name(device_id))
    return -1;
  for (size_t i = 0; i < s->nregs; i++)
    if (strcmp(s->regs[i].device_id, device_id) == 0)
      return -1; /* accepted already */
  unsigned char rnd[12];
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
    return -1;
  char pw[2 * sizeof rnd + 1];
  for (size_t i = 0; i < sizeof rnd; i++)
    snprintf(pw + 2 * i, 3, "%02x", rnd[i]);
  pthread_mutex_lock(&s->mu);
  bool ok = grow((void **)&s->regs, &s->capregs, s->nregs + 1, sizeof *s->regs);
  sim_reg *r = ok ? &s->regs[s->nregs] : NULL;
  if (r) {
    memset(r, 0, sizeof *r);
    r->device_id = strdup(device_id);
    r->password = strdup(pw);
    if (asprintf(&r->user, "device_%s", device_id) < 0)
      r->user = NULL;
    ok = r->device_id && r->password && r->user;
    if (ok)
      s->nregs++;
    else {
      free(r->device_id);
      free(r->password);
      free(r->user);
    }
  }
  pthread_mutex_unlock(&s->mu);
  char err[256];
  if (!ok || write_passwd(s, err, sizeof err) != 0 ||
      write_acl(s, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-sim: cannot create the device user for %s\n",
            device_id);
    return -1;
  }
  /* mosquitto re-reads its password file and ACL on SIGHUP, asynchronously:
   * the registration is ready once a login with the new user works. */
  int pid = broker_pid(s->br);
  char *login = NULL;
  if (pid <= 0 || kill(pid, SIGHUP) != 0 ||
      asprintf(&login, "%s/device_%s", s->tenant, device_id) < 0)
    return -1;
  bool accepted = false;
  for (int i = 0; i < 50 && !accepted; i++) {
    accepted = broker_accepts(s, login, pw);
    if (!accepted)
      usleep(100 * 1000);
  }
  free(login);
  if (!accepted) {
    fprintf(stderr, "c8y-sim: the broker does not accept the new user of %s\n",
            device_id);
    return -1;
  }
  pthread_mutex_lock(&s->mu);
  s->regs[s->nregs - 1].ready = true;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static const sim_reg *reg_find(sim *s, const char *device_id) {
  for (size_t i = 0; i < s->nregs; i++)
    if (strcmp(s->regs[i].device_id, device_id) == 0)
      return &s->regs[i];
  return NULL;
}

const char *sim_registration_user(sim *s, const char *device_id) {
  const sim_reg *r = reg_find(s, device_id);
  return r ? r->user : NULL;
}

const char *sim_registration_password(sim *s, const char *device_id) {
  const sim_reg *r = reg_find(s, device_id);
  return r ? r->password : NULL;
}
