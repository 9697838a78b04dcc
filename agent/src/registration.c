#include "registration.h"

#include "fsutil.h"
#include "log.h"
#include "profile.h"
#include "services.h"
#include "x509.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#ifndef C8Y_VERSION
#define C8Y_VERSION "0.0.0"
#endif

struct registration {
  const agent_config *cfg;
  registry *reg;
  const upstream *up;
  registration_host host;
  uint64_t announce_gen;    /* connects so far */
  upstream_tag reg_tag;     /* registration lines of this connect */
  upstream_tag pending_tag; /* the 500 of this connect */
  size_t reg_unacked;       /* registration lines not yet acknowledged */
  bool pending_requested;   /* this connect's 500 is queued */
  uint64_t announced_seq;   /* children up to this registry_child_seq */
};

static void subscribe(registration *r, const char *topic, int qos) {
  r->host.subscribe(r->host.ctx, topic, qos);
}

/* DMI field, or NULL when unset: firmware fills unset fields with
 * placeholders. */
static char *read_dmi(const char *field) {
  char path[128];
  snprintf(path, sizeof path, "/sys/class/dmi/id/%s", field);
  char *v = fsutil_read_first_line(path);
  if (v && (strcmp(v, "None") == 0 || strstr(v, "To Be Filled") != NULL ||
            strcmp(v, "Default string") == 0)) {
    free(v);
    v = NULL;
  }
  return v;
}

/* Registration goes through the queue like everything else: packed (1000
 * children's 101 lines take a handful of publishes), in order, confirmed,
 * and retried after a loss. Volatile: it is rebuilt on every connect. */
static size_t queue_announce(registration *r, const char *topic,
                             const char *const *fields, size_t n) {
  if (upstream_send(r->up, OUTQ_INVENTORY, topic, fields, n, OUTQ_VOLATILE,
                    r->reg_tag) == 0)
    return 1;
  log_error("cannot queue the registration line '%s,%.35s' for %s", fields[0],
            n > 1 && fields[1] ? fields[1] : "", topic);
  return 0;
}

static size_t queue_supported(registration *r, const char *topic,
                              const char *supported, upstream_tag tag) {
  if (!supported || !*supported)
    return 0;
  size_t n = strlen(supported) + 8;
  char *line = malloc(n);
  size_t queued = 0;
  if (line) {
    snprintf(line, n, "114,%s", supported);
    queued = upstream_send_line(r->up, OUTQ_INVENTORY, topic, line,
                                OUTQ_VOLATILE, tag) == 0;
    free(line);
  }
  return queued;
}

/* s/ds and the custom collections: downstream QoS is the subscription's. */
static int downstream_qos(const registration *r) {
  return r->cfg->qos == 2 ? 2 : 1;
}

/* Every registration line was acknowledged: now the device exists with its
 * capabilities, so subscribe and ask for the pending operations. JSON
 * operations too (Cumulocity "JSON via MQTT": operations of any fragment,
 * with their id; on subscription those not yet forwarded are published):
 * static templates keep arriving on s/ds, and the engine runs each
 * operation once whichever copies arrive (see ops.h). */
static void request_operations(registration *r) {
  int qos = downstream_qos(r);
  subscribe(r, "s/ds", qos);
  subscribe(r, "devicecontrol/notifications", qos);
  const char **xids;
  size_t nx = registry_xids(r->reg, &xids);
  for (size_t i = 0; i < nx; i++) {
    char topic[300];
    snprintf(topic, sizeof topic, "s/dc/%s", xids[i]);
    subscribe(r, topic, qos);
  }
  free(xids);
  if (upstream_send_line(r->up, OUTQ_OPSTATUS, "s/us", "500", OUTQ_VOLATILE,
                         r->pending_tag) != 0)
    log_error("cannot queue the 500 request for pending operations");
  r->pending_requested = true;
}

/* 100, 110, 122, children (101, then each child's 114), 114, 117 on every
 * connect, because Cumulocity keeps no session state (clean session); then
 * request_operations once all of it is acknowledged. */
void registration_start(registration *r) {
  const agent_config *c = r->cfg;
  r->announce_gen++;
  r->reg_tag = (upstream_tag){UPSTREAM_TAG_REGISTRATION, r->announce_gen};
  r->pending_tag = (upstream_tag){UPSTREAM_TAG_PENDING, r->announce_gen};
  r->pending_requested = false;
  /* Children added from now on are announced on their own afterwards. */
  r->announced_seq = registry_child_seq(r->reg);
  size_t n = 0;
  const char *dev[] = {"100", c->device_name, c->device_type};
  n += queue_announce(r, "s/us", dev, 3);

  char *serial =
      c->hw_serial ? strdup(c->hw_serial) : read_dmi("product_serial");
  char *model = c->hw_model ? strdup(c->hw_model) : read_dmi("product_name");
  char *rev =
      c->hw_revision ? strdup(c->hw_revision) : read_dmi("product_version");
  struct utsname u;
  char machine[200] = "Linux";
  if (uname(&u) == 0)
    snprintf(machine, sizeof machine, "Linux %s", u.machine);
  const char *hw[] = {"110", serial ? serial : c->device_id,
                      model ? model : machine, rev ? rev : ""};
  n += queue_announce(r, "s/us", hw, 4);
  free(serial);
  free(model);
  free(rev);

  const char *agent_info[] = {"122", "c8y-agent", C8Y_VERSION, "",
                              "c8y-agent project"};
  n += queue_announce(r, "s/us", agent_info, 5);
  /* The agent as a service of the device: up while connected; the will
   * (services_will) and a clean stop set it down. */
  char up[700];
  if (services_agent_line(c->device_id, "up", up, sizeof up) == 0 &&
      upstream_send_line(r->up, OUTQ_INVENTORY, "s/us", up, OUTQ_VOLATILE,
                         r->reg_tag) == 0)
    n++;
  else
    log_error("cannot queue the agent's own 102 for s/us");

  for (size_t i = 0; i < registry_child_count(r->reg); i++) {
    reg_child *ch = registry_child_at(r->reg, i);
    const char *f[] = {"101", ch->id, ch->name, ch->type};
    n += queue_announce(r, "s/us", f, 4);
  }
  char *supported = profile_supported_operations(r->reg);
  n += queue_supported(r, "s/us", supported, r->reg_tag);
  free(supported);
  char expiry[600];
  if (c->cert_file && c->cert_warn_days > 0 &&
      x509_expiry_line(c->cert_file, c->cert_warn_days, expiry,
                       sizeof expiry) == 0) {
    /* An alarm (raised or cleared), not registration: the 500 does not
     * wait for it. */
    if (upstream_send_line(r->up, UPSTREAM_BY_TEMPLATE, "s/us", expiry,
                           OUTQ_VOLATILE, UPSTREAM_NO_TAG) != 0)
      log_error("cannot queue the certificate expiry line");
  }
  if (c->required_interval > 0) {
    char interval[32];
    snprintf(interval, sizeof interval, "%d", c->required_interval);
    const char *f[] = {"117", interval};
    n += queue_announce(r, "s/us", f, 2);
  }
  for (size_t i = 0; i < registry_child_count(r->reg); i++) {
    reg_child *ch = registry_child_at(r->reg, i);
    char topic[300];
    snprintf(topic, sizeof topic, "s/us/%s", ch->id);
    char *child_ops = registry_child_supported_operations(r->reg, ch);
    n += queue_supported(r, topic, child_ops, r->reg_tag);
    free(child_ops);
  }
  r->reg_unacked = n;
  log_info("registration: %zu lines queued (%zu children)", n,
           registry_child_count(r->reg));
  subscribe(r, "s/e", 0);
  subscribe(r, "s/dat", 0); /* JWT for REST calls */
  if (n == 0)
    request_operations(r);
}

upstream_tag registration_pending_lines(const registration *r) {
  return r->reg_unacked > 0 ? r->reg_tag : UPSTREAM_NO_TAG;
}

bool registration_operations_requested(const registration *r) {
  return r->pending_requested;
}

bool registration_acked(registration *r, upstream_tag tag) {
  if (tag.kind == UPSTREAM_TAG_REGISTRATION) {
    if (upstream_tag_eq(tag, r->reg_tag) && r->reg_unacked > 0 &&
        --r->reg_unacked == 0) {
      log_info("registration acknowledged; requesting pending operations");
      request_operations(r);
    }
    return false;
  }
  return tag.kind == UPSTREAM_TAG_PENDING &&
         upstream_tag_eq(tag, r->pending_tag);
}

void registration_lost(registration *r) {
  upstream_unqueue(r->up, r->reg_tag);
  upstream_unqueue(r->up, r->pending_tag);
  r->reg_unacked = 0;
}

/* ABI 1.2 children added at run time, once the registration of this
 * connect is through: each gets its 101 and its own 114, queued volatile
 * (the next connect's registration announces every child again). */
void registration_announce_children(registration *r) {
  if (!r->pending_requested)
    return;
  uint64_t seq = registry_child_seq(r->reg);
  if (seq == r->announced_seq)
    return;
  reg_child **added;
  size_t n = registry_children_since(r->reg, r->announced_seq, &added);
  for (size_t i = 0; i < n; i++) {
    reg_child *ch = added[i];
    const char *f[] = {"101", ch->id, ch->name, ch->type};
    if (upstream_send(r->up, OUTQ_INVENTORY, "s/us", f, 4, OUTQ_VOLATILE,
                      UPSTREAM_NO_TAG) != 0)
      log_error("cannot queue the 101 of child %s", ch->id);
    char topic[300];
    snprintf(topic, sizeof topic, "s/us/%s", ch->id);
    char *child_ops = registry_child_supported_operations(r->reg, ch);
    if (child_ops && *child_ops &&
        !queue_supported(r, topic, child_ops, UPSTREAM_NO_TAG))
      log_error("cannot queue the 114 of child %s", ch->id);
    free(child_ops);
  }
  free(added);
  r->announced_seq = seq;
  if (n)
    log_info("registration: %zu child(ren) added at run time announced", n);
}

int registration_new(const agent_config *cfg, registry *reg, const upstream *up,
                     const registration_host *host, registration **out) {
  *out = calloc(1, sizeof **out);
  if (!*out)
    return C8Y_ENOMEM;
  **out = (registration){.cfg = cfg, .reg = reg, .up = up, .host = *host};
  return C8Y_OK;
}

void registration_free(registration *r) { free(r); }
