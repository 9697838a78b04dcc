#include "downstream.h"

#include "log.h"
#include "plugin_host.h"
#include "smartrest.h"

#include <string.h>

/* s/dc/<xid>: a record whose message id a plugin declared an operation
 * template (add_template_operation) goes to the engine; any other to the
 * plugin that owns its message id. */
static void custom_records(const downstream *d, const char *topic,
                           const char *payload, size_t len) {
  const char *xid = topic + 5;
  smartrest_records recs;
  if (smartrest_decode(payload, len, &recs) != 0)
    return;
  for (size_t i = 0; i < recs.count; i++) {
    smartrest_record *r = &recs.items[i];
    if (r->error) {
      log_warning("%s record %zu: %s; ignored", topic, r->line, r->error);
      continue;
    }
    reg_template_op *t = registry_find_template_op(d->reg, xid, r->fields[0]);
    if (t) {
      ops_handle_template_record(d->ops, t, r);
      continue;
    }
    reg_message *m = registry_find_message(d->reg, xid, r->fields[0]);
    if (!m) {
      log_info("%s: no handler for message id %s", topic, r->fields[0]);
      continue;
    }
    /* The job takes the fields. */
    plugin_host_queue_message(m->plugin, m, r->fields, r->nfields);
    r->fields = NULL;
    r->nfields = 0;
  }
  smartrest_records_free(&recs);
}

/* s/ds: operations to the engine; 124 (the answer to 123) to the REST
 * client waiting for the device's managed-object id. */
static void static_records(const downstream *d, const char *payload,
                           size_t len) {
  smartrest_records recs;
  if (smartrest_decode(payload, len, &recs) != 0) {
    log_error("s/ds: out of memory decoding a %zu-byte payload", len);
    return;
  }
  for (size_t i = 0; i < recs.count; i++) {
    const smartrest_record *r = &recs.items[i];
    if (!r->error && r->nfields >= 2 && strcmp(r->fields[0], "124") == 0)
      http_identity_received(d->http, r->fields[1]);
  }
  ops_handle_records(d->ops, &recs);
  smartrest_records_free(&recs);
}

void downstream_handle(const downstream *d, const char *topic,
                       const char *payload, size_t len) {
  if (strcmp(topic, "s/ds") == 0) {
    static_records(d, payload, len);
    return;
  }
  if (strcmp(topic, "devicecontrol/notifications") == 0) {
    ops_handle_json(d->ops, payload, len);
    return;
  }
  if (strcmp(topic, "s/dat") == 0) {
    if (strncmp(payload, "71,", 3) == 0)
      http_token_received(d->http, payload + 3);
    return;
  }
  if (strcmp(topic, "s/e") == 0) {
    log_warning("Cumulocity reported an error on s/e: %s", payload);
    return;
  }
  if (strncmp(topic, "s/dc/", 5) == 0) {
    custom_records(d, topic, payload, len);
    return;
  }
  log_debug("message on unexpected topic %s ignored", topic);
}
