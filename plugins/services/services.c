/* services: systemd units as services of the device (Cumulocity device
 * integration, fragment library "Services").
 *
 * [plugin.services] units lists the .service units to watch. Each becomes
 * the service <device>_<unit> (type "systemd", name the unit): 102 with its
 * state once the plugin has read it, then 104 on s/us/<service> for every
 * change of what the platform shows: "up" while systemd says the unit is
 * active (or reloading), "down" otherwise. Transitions inside one side
 * (inactive -> failed, activating) are no change, so one start or stop is
 * reported once.
 *
 * Changes arrive as D-Bus signals on the plugin's own thread (systemd's
 * PropertiesChanged for each unit, after Manager.Subscribe): no polling.
 * Without the system bus (a container without systemd, a test machine)
 * nothing is announced and the plugin reports itself down with the reason
 * (set_health), so the operator sees why.
 *
 * c8y_ServiceCommand (START, STOP, RESTART; the operation's device is the
 * service, or the device with c8y_ServiceCommand.serviceName naming the
 * unit) runs `systemctl start|stop|restart UNIT` through the privileged
 * helper (`c8y-agent-priv service ...`, which reads the allowed units from
 * the root-owned configuration itself) or directly when the agent runs as
 * root. Only listed units; anything else fails with the reason. Announced
 * (the device's 114 and each unit service's own) only when units are
 * listed, `commands` is on and the helper is there as installed. */
#define _GNU_SOURCE
#include "cmn_proc.h"

#include <c8y/plugin.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <systemd/sd-bus.h>

#include "svc_sdbus.h"
#include <time.h>
#include <unistd.h>

#define MAX_UNITS 64
#define UNIT_NAME_MAX 255
#define RECONNECT_MS 10000
#define SD_DEST "org.freedesktop.systemd1"
#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MANAGER "org.freedesktop.systemd1.Manager"
#define SD_UNIT "org.freedesktop.systemd1.Unit"

typedef struct unit {
  struct svc *s;
  char name[UNIT_NAME_MAX + 1];
  char id[600];   /* the service's external id */
  char path[512]; /* systemd's object path, once loaded */
  int shown;      /* -1 not reported yet, 0 down, 1 up */
  char state[32]; /* systemd's ActiveState */
} unit;

typedef struct svc {
  const c8y_api *api;
  c8y_plugin *self;
  unit units[MAX_UNITS];
  size_t n;
  int commands;
  int use_helper;
  const char *helper_socket;
  const char *bus_address; /* "" = the system bus */
  int stop_fd;
  pthread_t thread;
  bool thread_live;
  sd_bus *bus; /* the monitor thread's */
  bool bus_down_reported;
} svc;

/* systemd's unit name rules (systemd.unit(5)), narrowed to what may be
 * started: [A-Za-z0-9:_.\-@], at most 255 bytes, ending in ".service", not
 * starting with '-' or '.', an instance after '@' when there is one. */
static bool unit_name_ok(const char *n) {
  size_t len = strlen(n);
  const char *suffix = ".service";
  size_t sl = strlen(suffix);
  if (len <= sl || len > UNIT_NAME_MAX || strcmp(n + len - sl, suffix) != 0)
    return false;
  if (n[0] == '-' || n[0] == '.' || n[0] == '@')
    return false;
  const char *at = strchr(n, '@');
  if (at && (strchr(at + 1, '@') || at + 1 == n + len - sl))
    return false;
  for (const char *c = n; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
          (*c >= '0' && *c <= '9') || strchr(":_.-@\\", *c)))
      return false;
  return true;
}

static unit *find_unit(svc *s, const char *name) {
  for (size_t i = 0; name && i < s->n; i++)
    if (strcmp(s->units[i].name, name) == 0)
      return &s->units[i];
  return NULL;
}

static unit *unit_of_service(svc *s, const char *id) {
  for (size_t i = 0; id && i < s->n; i++)
    if (strcmp(s->units[i].id, id) == 0)
      return &s->units[i];
  return NULL;
}

/* ---- reporting ---- */

static void show(unit *u, const char *state) {
  svc *s = u->s;
  int up = strcmp(state, "active") == 0 || strcmp(state, "reloading") == 0;
  snprintf(u->state, sizeof u->state, "%s", state);
  if (u->shown == up)
    return;
  int rc;
  if (u->shown < 0) {
    const char *f[] = {"102", u->id, "systemd", u->name, up ? "up" : "down"};
    rc = s->api->send_static(s->self, NULL, f, 5);
    if (rc == C8Y_OK && s->commands) {
      const char *ops[] = {"114", "c8y_ServiceCommand"};
      rc = s->api->send_static(s->self, u->id, ops, 2);
    }
  } else {
    const char *f[] = {"104", up ? "up" : "down"};
    rc = s->api->send_static(s->self, u->id, f, 2);
  }
  if (rc != C8Y_OK) {
    s->api->log(s->self, C8Y_LOG_WARNING, "%s: cannot queue its status: %s",
                u->name, s->api->status_str(rc));
    return;
  }
  s->api->log(s->self, C8Y_LOG_INFO, "%s is %s (%s)", u->name,
              up ? "up" : "down", state);
  u->shown = up;
}

/* ---- D-Bus (the monitor thread only) ---- */

static int read_active_state(svc *s, unit *u) {
  sd_bus_error err = SD_BUS_ERROR_NULL;
  char *state = NULL;
  int r = sd_bus_get_property_string(s->bus, SD_DEST, u->path, SD_UNIT,
                                     "ActiveState", &err, &state);
  if (r < 0) {
    s->api->log(s->self, C8Y_LOG_WARNING, "%s: reading ActiveState: %s",
                u->name, err.message ? err.message : strerror(-r));
  } else {
    show(u, state);
  }
  free(state);
  sd_bus_error_free(&err);
  return r;
}

/* PropertiesChanged(s interface, a{sv} changed, as invalidated) */
static int on_properties(sd_bus_message *m, void *ud, sd_bus_error *ret) {
  (void)ret;
  unit *u = ud;
  const char *iface = NULL, *state = NULL;
  bool invalidated = false;
  int r = sd_bus_message_read(m, "s", &iface);
  if (r < 0 || strcmp(iface, SD_UNIT) != 0)
    return 0;
  if (sd_bus_message_enter_container(m, 'a', "{sv}") < 0)
    return 0;
  while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
    const char *key = NULL;
    if (sd_bus_message_read(m, "s", &key) < 0)
      return 0;
    if (strcmp(key, "ActiveState") == 0)
      r = sd_bus_message_read(m, "v", "s", &state);
    else
      r = sd_bus_message_skip(m, "v");
    if (r < 0 || sd_bus_message_exit_container(m) < 0)
      return 0;
  }
  if (sd_bus_message_exit_container(m) < 0)
    return 0;
  if (!state && sd_bus_message_enter_container(m, 'a', "s") > 0) {
    const char *key;
    while (sd_bus_message_read(m, "s", &key) > 0)
      if (strcmp(key, "ActiveState") == 0)
        invalidated = true;
  }
  if (state)
    show(u, state);
  else if (invalidated)
    read_active_state(u->s, u);
  return 0;
}

/* No sd-bus call before svc_sdbus_load: s->bus is only set after it. */
static void bus_close(svc *s) {
  if (s->bus)
    s->bus = sd_bus_flush_close_unref(s->bus);
}

static int bus_open(svc *s, char *why, size_t len) {
  if (!svc_sdbus_load(why, len))
    return -ENOSYS;
  int r;
  if (*s->bus_address) {
    r = sd_bus_new(&s->bus);
    if (r >= 0)
      r = sd_bus_set_address(s->bus, s->bus_address);
    if (r >= 0)
      r = sd_bus_set_bus_client(s->bus, 1);
    if (r >= 0)
      r = sd_bus_start(s->bus);
  } else {
    r = sd_bus_open_system(&s->bus);
  }
  if (r < 0) {
    snprintf(why, len, "cannot connect to the %s (%s): %s",
             *s->bus_address ? "D-Bus at bus_address" : "system bus",
             *s->bus_address ? s->bus_address : "/run/dbus/system_bus_socket",
             strerror(-r));
    bus_close(s);
  }
  return r;
}

/* Subscribes, loads every unit, watches it and reports its state. */
static int bus_watch(svc *s, char *why, size_t len) {
  sd_bus_error err = SD_BUS_ERROR_NULL;
  int r = sd_bus_call_method(s->bus, SD_DEST, SD_PATH, SD_MANAGER, "Subscribe",
                             &err, NULL, "");
  if (r < 0) {
    snprintf(why, len, "systemd's Subscribe failed: %s",
             err.message ? err.message : strerror(-r));
    sd_bus_error_free(&err);
    return r;
  }
  for (size_t i = 0; i < s->n; i++) {
    unit *u = &s->units[i];
    sd_bus_message *reply = NULL;
    const char *path = NULL;
    r = sd_bus_call_method(s->bus, SD_DEST, SD_PATH, SD_MANAGER, "LoadUnit",
                           &err, &reply, "s", u->name);
    if (r >= 0)
      r = sd_bus_message_read(reply, "o", &path);
    if (r < 0) {
      snprintf(why, len, "systemd cannot load %s: %s", u->name,
               err.message ? err.message : strerror(-r));
      sd_bus_message_unref(reply);
      sd_bus_error_free(&err);
      return r;
    }
    snprintf(u->path, sizeof u->path, "%s", path);
    sd_bus_message_unref(reply);
    r = sd_bus_match_signal(s->bus, NULL, SD_DEST, u->path,
                            "org.freedesktop.DBus.Properties",
                            "PropertiesChanged", on_properties, u);
    if (r < 0) {
      snprintf(why, len, "cannot watch %s: %s", u->name, strerror(-r));
      return r;
    }
    /* After the match: a change in between is seen either way. */
    r = read_active_state(s, u);
    if (r < 0) {
      snprintf(why, len, "cannot read the state of %s", u->name);
      return r;
    }
  }
  return 0;
}

static bool stopped(svc *s, int timeout_ms) {
  struct pollfd p = {.fd = s->stop_fd, .events = POLLIN};
  return poll(&p, 1, timeout_ms) > 0;
}

static void set_bus_health(svc *s, bool up, const char *why) {
  if (up && !s->bus_down_reported)
    return;
  if (up)
    s->api->log(s->self, C8Y_LOG_NOTICE, "unit monitoring works again");
  else
    s->api->log(s->self, C8Y_LOG_WARNING, "unit monitoring unavailable: %s",
                why);
  s->bus_down_reported = !up;
  if (C8Y_API_HAS(s->api, set_health))
    s->api->set_health(s->self, up, up ? NULL : why);
}

/* Serves the bus until it fails (then the reason is in why) or stop. */
static bool serve(svc *s, char *why, size_t len) {
  for (;;) {
    int r;
    while ((r = sd_bus_process(s->bus, NULL)) > 0) {
    }
    if (r < 0) {
      snprintf(why, len, "the D-Bus connection failed: %s", strerror(-r));
      return false;
    }
    struct pollfd p[2] = {{.fd = sd_bus_get_fd(s->bus),
                           .events = (short)sd_bus_get_events(s->bus)},
                          {.fd = s->stop_fd, .events = POLLIN}};
    uint64_t usec = UINT64_MAX;
    int timeout = -1;
    if (sd_bus_get_timeout(s->bus, &usec) >= 0 && usec != UINT64_MAX) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      uint64_t n =
          (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
      timeout = usec > n ? (int)((usec - n + 999) / 1000) : 0;
    }
    if (poll(p, 2, timeout) < 0 && errno != EINTR) {
      snprintf(why, len, "poll: %s", strerror(errno));
      return false;
    }
    if (p[1].revents)
      return true;
  }
}

static void *monitor(void *arg) {
  svc *s = arg;
  char why[400];
  for (;;) {
    bool stop = false;
    if (bus_open(s, why, sizeof why) >= 0 &&
        bus_watch(s, why, sizeof why) >= 0) {
      set_bus_health(s, true, NULL);
      stop = serve(s, why, sizeof why);
    }
    bus_close(s);
    if (stop)
      break;
    set_bus_health(s, false, why);
    if (stopped(s, RECONNECT_MS))
      break;
  }
  return NULL;
}

/* ---- c8y_ServiceCommand ---- */

static int stop_never(void *ctx) {
  (void)ctx;
  return 0;
}

static int on_command(c8y_plugin *self, c8y_operation *op, void *ud) {
  svc *s = ud;
  const c8y_api *api = s->api;
  const char *device = api->op_device(op);
  const char *command = api->op_json_value(op, "c8y_ServiceCommand.command");
  const char *name = api->op_json_value(op, "c8y_ServiceCommand.serviceName");
  const char *type = api->op_json_value(op, "c8y_ServiceCommand.serviceType");
  char why[700];
  unit *u;
  if (strcmp(device, api->device_id(self)) == 0) {
    u = find_unit(s, name);
    if (!u) {
      snprintf(why, sizeof why,
               "refused: service '%.200s' is not one of the units in "
               "[plugin.services] units",
               name ? name : "(no serviceName)");
      return api->op_fail(op, why);
    }
  } else if (!(u = unit_of_service(s, device))) {
    snprintf(why, sizeof why,
             "refused: %.200s is not a service of a unit in "
             "[plugin.services] units",
             device);
    return api->op_fail(op, why);
  } else if (name && strcmp(name, u->name) != 0) {
    snprintf(why, sizeof why,
             "refused: serviceName '%.200s' is not the unit of service %.200s "
             "(%.200s)",
             name, device, u->name);
    return api->op_fail(op, why);
  }
  if (type && strcmp(type, "systemd") != 0) {
    snprintf(why, sizeof why,
             "refused: serviceType '%.100s': only systemd units are served",
             type);
    return api->op_fail(op, why);
  }
  const char *verb = NULL;
  if (command && strcasecmp(command, "START") == 0)
    verb = "start";
  else if (command && strcasecmp(command, "STOP") == 0)
    verb = "stop";
  else if (command && strcasecmp(command, "RESTART") == 0)
    verb = "restart";
  if (!verb) {
    snprintf(why, sizeof why,
             "refused: command '%.100s': only START, STOP and RESTART",
             command ? command : "(none)");
    return api->op_fail(op, why);
  }
  cmn_proc_opts o = {.api = api,
                     .op = op,
                     .timeout_s = 0,
                     .out_cap = 4096,
                     .stop = stop_never};
  cmn_proc_result r;
  int rc;
  if (s->use_helper) {
    const char *argv[] = {"service", verb, u->name, NULL};
    rc = cmn_proc_priv_run(s->helper_socket, argv, &o, &r);
  } else {
    char *argv[] = {"systemctl", (char *)verb, "--", u->name, NULL};
    rc = cmn_proc_run(argv, &o, &r);
  }
  if (rc == 0 && r.exit_code == 0) {
    free(r.out);
    api->log(self, C8Y_LOG_NOTICE, "systemctl %s %s done", verb, u->name);
    return api->op_succeed(op, NULL);
  }
  char desc[400];
  cmn_proc_describe(&r, rc, desc, sizeof desc);
  free(r.out);
  snprintf(why, sizeof why, "systemctl %s %.255s failed: %s", verb, u->name,
           desc);
  return api->op_fail(op, why);
}

/* ---- life cycle ---- */

static int read_units(svc *s) {
  const c8y_api *api = s->api;
  const char *list = api->config_string(s->self, "units", "");
  char *copy = strdup(list);
  if (!copy)
    return C8Y_ENOMEM;
  int rc = C8Y_OK;
  char *save = NULL;
  for (char *t = strtok_r(copy, " \t,", &save); t;
       t = strtok_r(NULL, " \t,", &save)) {
    if (!unit_name_ok(t)) {
      api->log(s->self, C8Y_LOG_ERROR,
               "units: '%s' is not a .service unit name (letters, digits, "
               "':', '_', '.', '-', '\\', '@'; not starting with '-' or '.')",
               t);
      rc = C8Y_EINVAL;
    } else if (find_unit(s, t)) {
      api->log(s->self, C8Y_LOG_ERROR, "units: '%s' is listed twice", t);
      rc = C8Y_EINVAL;
    } else if (s->n == MAX_UNITS) {
      api->log(s->self, C8Y_LOG_ERROR, "units: more than %d units", MAX_UNITS);
      rc = C8Y_EINVAL;
      break;
    } else {
      unit *u = &s->units[s->n++];
      u->s = s;
      u->shown = -1;
      snprintf(u->name, sizeof u->name, "%s", t);
      if (snprintf(u->id, sizeof u->id, "%s_%s", api->device_id(s->self), t) >=
          (int)sizeof u->id)
        rc = C8Y_EINVAL;
    }
  }
  free(copy);
  return rc;
}

static int init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  if (!C8Y_API_HAS(api, add_fragment_operation))
    return C8Y_ENOTSUP;
  svc *s = calloc(1, sizeof *s);
  if (!s)
    return C8Y_ENOMEM;
  s->api = api;
  s->self = self;
  s->stop_fd = -1;
  int rc = read_units(s);
  if (rc == C8Y_OK)
    rc = api->config_bool(self, "commands", 1, &s->commands);
  s->bus_address = api->config_string(self, "bus_address", "");
  const char *mode = api->config_string(self, "privileged", "auto");
  s->helper_socket = api->config_string(self, "helper_socket", CMN_PRIV_SOCKET);
  s->use_helper = cmn_proc_priv_use_helper(mode, s->helper_socket);
  if (s->use_helper < 0) {
    api->log(self, C8Y_LOG_ERROR,
             "privileged: '%s' is not auto, helper or "
             "direct",
             mode);
    rc = C8Y_EINVAL;
  }
  if (rc != C8Y_OK) {
    free(s);
    return rc;
  }
  if (s->n == 0) {
    api->log(self, C8Y_LOG_INFO,
             "no units configured ([plugin.services] "
             "units): nothing to watch");
    *user_data = s;
    return C8Y_OK;
  }
  /* The bus first: without it there is nothing to show or command. */
  char why[400];
  if (bus_open(s, why, sizeof why) < 0) {
    free(s);
    api->log(self, C8Y_LOG_WARNING,
             "unit monitoring unavailable: %s; no unit is announced", why);
    if (C8Y_API_HAS(api, set_health))
      api->set_health(self, 0, why);
    *user_data = NULL;
    return C8Y_OK;
  }
  bus_close(s);
  if (s->commands && s->use_helper && access(s->helper_socket, F_OK) != 0) {
    api->log(self, C8Y_LOG_WARNING,
             "c8y_ServiceCommand not offered: the privileged helper's socket "
             "%s is missing (is c8y-agent-priv.socket running?)",
             s->helper_socket);
    s->commands = 0;
  }
  if (s->commands &&
      (rc = api->add_fragment_operation(self, "c8y_ServiceCommand", 0,
                                        on_command, s)) != C8Y_OK) {
    free(s);
    return rc;
  }
  s->stop_fd = eventfd(0, EFD_CLOEXEC);
  if (s->stop_fd < 0 || pthread_create(&s->thread, NULL, monitor, s) != 0) {
    if (s->stop_fd >= 0)
      close(s->stop_fd);
    free(s);
    return C8Y_EIO;
  }
  s->thread_live = true;
  api->log(self, C8Y_LOG_INFO, "watching %zu unit(s)%s", s->n,
           s->commands ? "; c8y_ServiceCommand through "
                         "the privileged helper or systemctl"
                       : "");
  *user_data = s;
  return C8Y_OK;
}

static void fini(c8y_plugin *self, void *user_data) {
  (void)self;
  svc *s = user_data;
  if (!s)
    return;
  if (s->thread_live) {
    uint64_t one = 1;
    if (write(s->stop_fd, &one, sizeof one) < 0) {
      /* the thread still ends at its next wake-up */
    }
    pthread_join(s->thread, NULL);
  }
  if (s->stop_fd >= 0)
    close(s->stop_fd);
  free(s);
}

C8Y_PLUGIN(.name = "services", .version = "1.0.0", .init = init, .fini = fini);
