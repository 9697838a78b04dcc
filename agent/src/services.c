#include "services.h"

#include "clock.h"
#include "fsutil.h"
#include "log.h"
#include "smartrest.h"

#include <c8y/plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WHY_MAX 500

typedef struct svc_plugin {
  char *name;
  bool own_down, agent_down;
  char *own_why, *agent_why;
  bool reported;  /* a status was queued this run */
  bool last_down; /* ... and which */
  char *last_why;
  bool remembered; /* in <state_dir>/services */
  bool named;      /* a loader result named it this round */
} svc_plugin;

struct services {
  char *device_id;
  char *path; /* <state_dir>/services, NULL without a state dir */
  const upstream *up;
  registry *reg;
  /* mu guards the table; emit_mu keeps one plugin's lines in the order of
   * its changes while they are queued (outq I/O happens under emit_mu
   * only, never under mu, which the main loop takes for STATUS=). */
  pthread_mutex_t mu, emit_mu;
  svc_plugin **v;
  size_t n;
  bool changed;
};

int services_agent_id(const char *device_id, char *buf, size_t len) {
  int n = snprintf(buf, len, "%s_%s", device_id, SERVICES_AGENT_NAME);
  return n > 0 && (size_t)n < len ? C8Y_OK : C8Y_EINVAL;
}

int services_agent_line(const char *device_id, const char *status, char *buf,
                        size_t len) {
  /* Device ids hold no ',', '"' or control characters (ident), so the
   * line needs no quoting. */
  int n =
      snprintf(buf, len, "102,%s_%s,%s,%s,%s", device_id, SERVICES_AGENT_NAME,
               SERVICES_AGENT_TYPE, SERVICES_AGENT_NAME, status);
  return n > 0 && (size_t)n < len ? C8Y_OK : C8Y_EINVAL;
}

/* One payload may carry several SmartREST lines (Cumulocity SmartREST 2.0:
 * records separated by line breaks); thin-edge's Cumulocity bridge puts two
 * 102 ... down lines into its will on s/us the same way
 * (crates/core/tedge_mapper/src/c8y/mapper.rs @c6cc23d6). */
int services_will(const char *device_id, char *buf, size_t len) {
  char agent[400];
  if (services_agent_line(device_id, "down", agent, sizeof agent) != C8Y_OK)
    return C8Y_EINVAL;
  int n = snprintf(
      buf, len, "400,c8y_ConnectionEvent,\"Device connection was lost.\"\n%s",
      agent);
  return n > 0 && (size_t)n < len ? C8Y_OK : C8Y_EINVAL;
}

int services_plugin_id(const char *device_id, const char *plugin, char *buf,
                       size_t len) {
  int n =
      snprintf(buf, len, "%s_%s_%s", device_id, SERVICES_AGENT_NAME, plugin);
  return n > 0 && (size_t)n < len ? C8Y_OK : C8Y_EINVAL;
}

/* ---- the table ---- */

static void free_plugin(svc_plugin *p) {
  free(p->name);
  free(p->own_why);
  free(p->agent_why);
  free(p->last_why);
  free(p);
}

/* mu held. */
static svc_plugin *find(services *s, const char *name) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->v[i]->name, name) == 0)
      return s->v[i];
  return NULL;
}

/* mu held. */
static svc_plugin *find_or_add(services *s, const char *name) {
  svc_plugin *p = find(s, name);
  if (p)
    return p;
  svc_plugin **grown = realloc(s->v, (s->n + 1) * sizeof *grown);
  if (!grown)
    return NULL;
  s->v = grown;
  if (!(p = calloc(1, sizeof *p)) || !(p->name = strdup(name))) {
    free(p);
    return NULL;
  }
  s->v[s->n++] = p;
  return p;
}

static char *cut_copy(const char *why) {
  char buf[WHY_MAX + 1];
  snprintf(buf, sizeof buf, "%s", why && *why ? why : "no reason given");
  return strdup(buf);
}

/* Replaces *slot with a copy of why (NULL clears it). */
static bool set_why(char **slot, const char *why) {
  char *copy = NULL;
  if (why && !(copy = cut_copy(why)))
    return false;
  free(*slot);
  *slot = copy;
  return true;
}

/* ---- <state_dir>/services ---- */

static void load_remembered(services *s) {
  if (!s->path)
    return;
  FILE *f = fopen(s->path, "re");
  if (!f) {
    if (errno != ENOENT)
      log_warning("%s: %s; plugins reported as services before are not "
                  "reported again",
                  s->path, strerror(errno));
    return;
  }
  char line[256];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = '\0';
    if (!*line)
      continue;
    svc_plugin *p = find_or_add(s, line);
    if (p)
      p->remembered = true;
  }
  fclose(f);
}

/* Writes the names of every plugin with a service (tmp + rename), outside
 * mu; emit_mu held, so writers do not interleave. */
static void save_remembered(services *s) {
  if (!s->path)
    return;
  pthread_mutex_lock(&s->mu);
  size_t len = 0;
  for (size_t i = 0; i < s->n; i++)
    len += strlen(s->v[i]->name) + 1;
  char *text = malloc(len + 1);
  size_t at = 0;
  for (size_t i = 0; text && i < s->n; i++) {
    size_t l = strlen(s->v[i]->name);
    memcpy(text + at, s->v[i]->name, l);
    text[at + l] = '\n';
    at += l + 1;
    s->v[i]->remembered = true;
  }
  pthread_mutex_unlock(&s->mu);
  if (!text)
    return;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", s->path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  bool ok =
      fd >= 0 && fsutil_write_all(fd, text, at, NULL) == 0 && fsync(fd) == 0;
  if (fd >= 0 && close(fd) != 0)
    ok = false;
  if (!ok || rename(tmp, s->path) != 0) {
    log_warning("cannot write %s: %s; a later start does not know which "
                "plugins were reported as services",
                s->path, strerror(errno));
    unlink(tmp);
  }
  free(text);
}

/* ---- lines ---- */

static void queue_fields(services *s, outq_class cls, const char *topic,
                         const char *const *f, size_t n) {
  if (upstream_send(s->up, cls, topic, f, n, 0, UPSTREAM_NO_TAG) != C8Y_OK)
    log_error("cannot queue the service line '%s,%.50s' for %s", f[0],
              n > 1 && f[1] ? f[1] : "", topic);
}

/* The 102 travels in the alarm class: the queue takes classes by priority
 * and each class in order, so the alarm on s/us/<service> can never
 * overtake the line that creates the service (data for an unknown
 * external id would create a device of that id instead). */
static void emit(services *s, const char *name, bool down, const char *why,
                 bool clear) {
  char id[600], topic[700];
  if (services_plugin_id(s->device_id, name, id, sizeof id) != C8Y_OK)
    return;
  snprintf(topic, sizeof topic, "s/us/%s", id);
  const char *svc[] = {"102", id, SERVICES_PLUGIN_TYPE, name,
                       down ? "down" : "up"};
  queue_fields(s, OUTQ_ALARM, "s/us", svc, 5);
  if (down) {
    char when[40];
    smartrest_format_time(clock_wall_ms(), when, sizeof when);
    const char *alarm[] = {"302", SERVICES_DOWN_ALARM, why, when};
    queue_fields(s, OUTQ_ALARM, topic, alarm, 4);
  } else if (clear) {
    const char *alarm[] = {"306", SERVICES_DOWN_ALARM};
    queue_fields(s, OUTQ_ALARM, topic, alarm, 2);
  }
}

/* What p shows now, and whether that differs from what was queued: then
 * the lines to queue are filled in (mu held). */
typedef struct pending {
  bool emit, down, clear, first;
  char name[64];
  char why[WHY_MAX + 1];
} pending;

static void settle(services *s, svc_plugin *p, pending *out) {
  memset(out, 0, sizeof *out);
  bool down = p->own_down || p->agent_down;
  const char *why = p->agent_down ? p->agent_why : p->own_why;
  if (p->reported && p->last_down == down &&
      (!down || (p->last_why && why && strcmp(p->last_why, why) == 0)))
    return;
  out->emit = true;
  out->down = down;
  /* Up after down, or up for the first time this run (an alarm of an
   * earlier run may still be active). */
  out->clear = !down && (!p->reported || p->last_down);
  out->first = !p->remembered;
  snprintf(out->name, sizeof out->name, "%s", p->name);
  snprintf(out->why, sizeof out->why, "%s", why ? why : "");
  p->reported = true;
  p->last_down = down;
  set_why(&p->last_why, down ? why : NULL);
  s->changed = true;
}

static void flush(services *s, const pending *pd) {
  if (!pd->emit)
    return;
  if (pd->down)
    log_warning("plugin %s is down: %s", pd->name, pd->why);
  else
    log_notice("plugin %s is up", pd->name);
  emit(s, pd->name, pd->down, pd->why, pd->clear);
  if (pd->first)
    save_remembered(s);
}

int services_new(const char *device_id, const char *state_dir,
                 const upstream *up, registry *reg, services **out) {
  services *s = calloc(1, sizeof *s);
  if (!s)
    return C8Y_ENOMEM;
  s->up = up;
  s->reg = reg;
  pthread_mutex_init(&s->mu, NULL);
  pthread_mutex_init(&s->emit_mu, NULL);
  s->device_id = strdup(device_id);
  if (state_dir) {
    size_t len = strlen(state_dir) + sizeof SERVICES_FILE + 2;
    if ((s->path = malloc(len)))
      snprintf(s->path, len, "%s/%s", state_dir, SERVICES_FILE);
  }
  char id[600];
  if (!s->device_id || (state_dir && !s->path) ||
      services_agent_id(device_id, id, sizeof id) != C8Y_OK ||
      registry_add_service(reg, NULL, id, NULL) != C8Y_OK) {
    services_free(s);
    return C8Y_ENOMEM;
  }
  load_remembered(s);
  for (size_t i = 0; i < s->n; i++)
    if (services_plugin_id(device_id, s->v[i]->name, id, sizeof id) == 0)
      registry_add_service(reg, NULL, id, NULL);
  *out = s;
  return C8Y_OK;
}

void services_free(services *s) {
  if (!s)
    return;
  for (size_t i = 0; i < s->n; i++)
    free_plugin(s->v[i]);
  free(s->v);
  free(s->path);
  free(s->device_id);
  pthread_mutex_destroy(&s->mu);
  pthread_mutex_destroy(&s->emit_mu);
  free(s);
}

int services_plugin_health(services *s, const char *plugin,
                           services_source source, bool up, const char *why) {
  if (!s || !plugin || !*plugin)
    return C8Y_EINVAL;
  char id[600];
  if (services_plugin_id(s->device_id, plugin, id, sizeof id) != C8Y_OK)
    return C8Y_EINVAL;
  pthread_mutex_lock(&s->emit_mu);
  pthread_mutex_lock(&s->mu);
  svc_plugin *p = find_or_add(s, plugin);
  bool ok = p != NULL;
  if (ok && source == SERVICES_BY_PLUGIN) {
    ok = set_why(&p->own_why, up ? NULL : why);
    if (ok)
      p->own_down = !up;
  } else if (ok) {
    ok = set_why(&p->agent_why, up ? NULL : why);
    if (ok)
      p->agent_down = !up;
  }
  pending pd = {0};
  if (ok)
    settle(s, p, &pd);
  pthread_mutex_unlock(&s->mu);
  if (ok) {
    registry_add_service(s->reg, NULL, id, NULL);
    flush(s, &pd);
  }
  pthread_mutex_unlock(&s->emit_mu);
  return ok ? C8Y_OK : C8Y_ENOMEM;
}

void services_plugin_loaded(services *s, const char *plugin, bool loaded,
                            bool failed, const char *why) {
  if (!s || !plugin || !*plugin)
    return;
  pthread_mutex_lock(&s->emit_mu);
  pthread_mutex_lock(&s->mu);
  svc_plugin *p = loaded || !failed ? find(s, plugin) : find_or_add(s, plugin);
  pending pd = {0};
  if (p) {
    p->named = true;
    p->agent_down = !loaded;
    if (!loaded && !set_why(&p->agent_why, why ? why : "not loaded"))
      p->agent_down = false;
    settle(s, p, &pd);
  }
  pthread_mutex_unlock(&s->mu);
  if (p) {
    char id[600];
    if (services_plugin_id(s->device_id, plugin, id, sizeof id) == C8Y_OK)
      registry_add_service(s->reg, NULL, id, NULL);
  }
  flush(s, &pd);
  pthread_mutex_unlock(&s->emit_mu);
}

void services_plugin_reset(services *s, const char *plugin) {
  if (!s || !plugin)
    return;
  pthread_mutex_lock(&s->mu);
  svc_plugin *p = find(s, plugin);
  if (p) {
    p->own_down = false;
    set_why(&p->own_why, NULL);
  }
  pthread_mutex_unlock(&s->mu);
}

void services_plugins_done(services *s) {
  if (!s)
    return;
  pthread_mutex_lock(&s->emit_mu);
  for (size_t i = 0;; i++) {
    pending pd = {0};
    pthread_mutex_lock(&s->mu);
    bool more = i < s->n;
    if (more) {
      svc_plugin *p = s->v[i];
      if (!p->named) {
        p->own_down = false;
        p->agent_down = set_why(&p->agent_why, "not installed");
        settle(s, p, &pd);
      }
      p->named = false; /* for the next reload */
    }
    pthread_mutex_unlock(&s->mu);
    if (!more)
      break;
    flush(s, &pd);
  }
  pthread_mutex_unlock(&s->emit_mu);
}

size_t services_status_note(services *s, char *buf, size_t len) {
  if (len)
    buf[0] = '\0';
  if (!s)
    return 0;
  size_t n = 0, at = 0;
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->n; i++) {
    svc_plugin *p = s->v[i];
    if (!p->reported || !p->last_down)
      continue;
    int w = snprintf(buf + at, len > at ? len - at : 0, "%s%s (%.80s)",
                     n ? ", " : "; plugins down: ", p->name,
                     p->last_why ? p->last_why : "");
    n++;
    if (w < 0 || (size_t)w >= (len > at ? len - at : 0))
      break;
    at += (size_t)w;
  }
  pthread_mutex_unlock(&s->mu);
  return n;
}

bool services_take_changed(services *s) {
  if (!s)
    return false;
  pthread_mutex_lock(&s->mu);
  bool c = s->changed;
  s->changed = false;
  pthread_mutex_unlock(&s->mu);
  return c;
}
