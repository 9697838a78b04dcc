#include "agent.h"

#include "bootstrap.h"
#include "clock.h"
#include "config.h"
#include "downstream.h"
#include "enroll.h"
#include "fsutil.h"
#include "http.h"
#include "journal.h"
#include "link.h"
#include "loader.h"
#include "localapi.h"
#include "log.h"
#include "netdiag.h"
#include "notify.h"
#include "ops.h"
#include "outq.h"
#include "plugin_host.h"
#include "proto.h"
#include "registry.h"
#include "renew.h"
#include "scheduler.h"
#include "services.h"
#include "smartrest.h"
#include "sockopt.h"
#include "x509.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef C8Y_VERSION
#define C8Y_VERSION "0.0.0"
#endif

typedef struct agent {
  const char *config_path;
  agent_config cfg;
  outq *q;
  upstream up; /* every line's way into q */
  journal *j;
  registry *reg;
  ops *ops;
  link_ctx *link;
  downstream down;
  plugin_host host;
  plugin_set plugins;
  char *queue_dir;
  http_ctx *http;
  atomic_bool token_wanted; /* a transfer waits for s/uat -> 71 */
  /* an upload waits for 123 -> 124 (the child, NULL = root) */
  pthread_mutex_t identity_mu;
  bool identity_wanted;
  char *identity_child;
  uint64_t child_seq;    /* registry_child_seq the engine and link have seen */
  localapi *api;         /* NULL when disabled or it could not start */
  renew *renew;          /* NULL without a client certificate */
  services *svc;         /* the agent's and the plugins' services */
  const char *link_text; /* the last state notify_status showed */

  int wake_fd;
  long long next_watchdog;
  long long watchdog_ms;
  bool running;
  bool reload_pending; /* SIGHUP arrived while operations were running */
  unsigned reloads;    /* reloads done or refused since the start */
  /* A plugin thread may still hold operation handles: the engine is not
   * freed at exit. */
  bool plugin_abandoned;
  int exit_code;
} agent;

static int signal_pipe[2] = {-1, -1};
/* Set by SIGTERM/SIGINT: ends a start-up enrollment request at once. */
static atomic_bool stop_signalled;
/* With a plugin thread abandoned (still running, it may reach them) the HTTP
 * client and the operation engine stay allocated until the process ends;
 * kept reachable here so leak checkers see that as deliberate. */
static void *volatile kept_for_abandoned[2];

static void on_signal(int sig) {
  int saved = errno;
  unsigned char b = (unsigned char)sig;
  if (sig != SIGHUP)
    atomic_store(&stop_signalled, true); /* lock-free: signal-safe */
  if (write(signal_pipe[1], &b, 1) < 0) {
    /* nothing sensible to do inside a handler */
  }
  errno = saved;
}

static void wake(void *ctx) {
  agent *a = ctx;
  uint64_t one = 1;
  if (write(a->wake_fd, &one, sizeof one) < 0) {
    /* the counter saturating still leaves the loop awake */
  }
}

/* http module, any thread: the main loop publishes the s/uat. */
static void request_token(void *ctx) {
  agent *a = ctx;
  atomic_store(&a->token_wanted, true);
  wake(a);
}

/* http module, any thread: the main loop publishes the 123. */
static void request_identity(void *ctx, const char *child) {
  agent *a = ctx;
  pthread_mutex_lock(&a->identity_mu);
  free(a->identity_child);
  a->identity_child = child ? strdup(child) : NULL;
  a->identity_wanted = !child || a->identity_child;
  pthread_mutex_unlock(&a->identity_mu);
  wake(a);
}

static void send_identity_request(agent *a) {
  pthread_mutex_lock(&a->identity_mu);
  bool wanted = a->identity_wanted;
  char *child = a->identity_child;
  a->identity_wanted = false;
  a->identity_child = NULL;
  pthread_mutex_unlock(&a->identity_mu);
  if (wanted)
    link_request_identity(a->link, child);
  free(child);
}

/* ABI 1.2: a plugin added children (any thread; its wake brings the loop
 * here): operations kept for them are dispatched, and they are announced. */
static void children_step(agent *a) {
  uint64_t seq = registry_child_seq(a->reg);
  if (seq != a->child_seq) {
    a->child_seq = seq;
    ops_children_changed(a->ops);
  }
  link_announce_children(a->link);
}

/* STATUS= for systemctl status, with what the operator must know. */
static void notify_status(void *ctx, const char *state) {
  agent *a = ctx;
  char note[512], down[512], buf[1100];
  a->link_text = state;
  loader_status_note(&a->plugins, note, sizeof note);
  services_status_note(a->svc, down, sizeof down);
  snprintf(buf, sizeof buf, "STATUS=%s%s%s", state, note, down);
  notify_send(buf);
}

/* What the loader made of each plugin file, for the plugins' services. */
static void report_plugins(agent *a) {
  for (size_t i = 0; i < a->plugins.nentries; i++) {
    const loader_entry *e = &a->plugins.entries[i];
    char name[64];
    const char *n = e->name;
    if (!n) {
      /* Not loaded far enough to know its name: the file's. */
      const char *base = strrchr(e->file, '/');
      snprintf(name, sizeof name, "%s", base ? base + 1 : e->file);
      char *dot = strstr(name, ".so");
      if (dot)
        *dot = '\0';
      /* It becomes part of a topic: nothing a topic cannot carry. */
      if (!*name || strspn(name, "abcdefghijklmnopqrstuvwxyz"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                        strlen(name))
        continue;
      n = name;
    }
    char why[600];
    snprintf(why, sizeof why, "%s%s",
             e->disabled ? "disabled in the configuration" : "",
             e->disabled ? "" : (e->reason ? e->reason : "not loaded"));
    services_plugin_loaded(a->svc, n, e->loaded, !e->loaded && !e->disabled,
                           why);
  }
  services_plugins_done(a->svc);
}

static c8y_plugin *loaded_plugin(const plugin_set *s, const char *name) {
  for (size_t i = 0; name && i < s->n; i++)
    if (strcmp(s->plugins[i]->name, name) == 0)
      return s->plugins[i];
  return NULL;
}

/* The plugin list `c8y-agent status` shows. */
static void publish_plugins(agent *a) {
  if (!a->api)
    return;
  size_t n = a->plugins.nentries;
  localapi_plugin_row *rows = calloc(n ? n : 1, sizeof *rows);
  if (!rows)
    return;
  for (size_t i = 0; i < n; i++) {
    const loader_entry *e = &a->plugins.entries[i];
    localapi_plugin_row *r = &rows[i];
    *r = (localapi_plugin_row){.name = e->name,
                               .version = e->version,
                               .file = e->file,
                               .state = e->loaded     ? "loaded"
                                        : e->disabled ? "disabled"
                                                      : "failed",
                               .reason = e->reason};
    c8y_plugin *lp = e->loaded ? loaded_plugin(&a->plugins, e->name) : NULL;
    if (lp)
      registry_count_for(a->reg, lp, &r->producers, &r->handlers);
  }
  localapi_set_plugins(a->api, rows, n);
  free(rows);
}

static void on_message(void *ctx, const char *topic, const char *payload,
                       size_t len) {
  downstream_handle(&((agent *)ctx)->down, topic, payload, len);
}

static void gave_up(void *ctx) {
  agent *a = ctx;
  static const char *const keys[] = {"tenant", "user", "password",
                                     "password_file"};
  char where[1024];
  config_origins_text(&a->cfg, "c8y", keys, sizeof keys / sizeof *keys, where,
                      sizeof where);
  log_error("giving up: the platform keeps refusing the credentials; check %s",
            where);
  bootstrap_explain_refusal(&a->cfg);
  a->exit_code = AGENT_EXIT_AUTH;
  a->running = false;
}

/* ---- the device certificate (enroll, renew) ---- */

static void identity_tried(void *ctx, bool accepted, const char *why) {
  renew_identity_result(((agent *)ctx)->renew, accepted, why);
}

static int try_identity(void *ctx, const char *cert_file,
                        const char *key_file) {
  return link_try_identity(((agent *)ctx)->link, cert_file, key_file);
}

/* Renewal worker: Cumulocity documents a JWT for simplereenroll. */
static int renewal_bearer(void *ctx, const char *stale, char *out,
                          size_t outlen) {
  agent *a = ctx;
  char err[512];
  int rc = http_bearer_token(a->http, stale, out, outlen, err, sizeof err);
  if (rc != 0)
    log_info("certificate renewal without a JWT: %s", err);
  return rc;
}

/* Sleeps up to ms unless SIGTERM/SIGINT arrives (true then). */
static bool wait_or_stop(long long ms) {
  long long until = clock_mono_ms() + ms;
  while (!atomic_load(&stop_signalled)) {
    long long left = until - clock_mono_ms();
    if (left <= 0)
      return false;
    struct pollfd p = {.fd = signal_pipe[0], .events = POLLIN};
    if (poll(&p, 1, (int)(left > 60000 ? 60000 : left)) > 0) {
      unsigned char sig;
      while (read(signal_pipe[0], &sig, 1) == 1)
        if (sig != SIGHUP)
          atomic_store(&stop_signalled, true);
    }
  }
  return true;
}

/* The one-time password did its job: it must not stay on disk. */
static void forget_otp(agent *a) {
  if (a->cfg.enroll_otp_file) {
    if (unlink(a->cfg.enroll_otp_file) == 0 || errno == ENOENT)
      log_notice("[c8y] enroll_otp_file %s: used, removed",
                 a->cfg.enroll_otp_file);
    else
      log_warning("[c8y] enroll_otp_file %s: used, but cannot remove it "
                  "(%s); remove it by hand",
                  a->cfg.enroll_otp_file, strerror(errno));
  }
  explicit_bzero(a->cfg.enroll_otp, strlen(a->cfg.enroll_otp));
  free(a->cfg.enroll_otp);
  a->cfg.enroll_otp = NULL;
}

/* Start: completes a certificate swap a stop cut short and, with a
 * one-time password and no usable certificate, enrolls one from
 * Cumulocity's certificate authority. A refused password is retried
 * slowly (from a minute up to an hour: the operator may still be
 * registering the device), a network failure with the reconnect backoff.
 * Returns 0, an AGENT_EXIT_* code, or -1 when a signal stopped it. */
static int enroll_at_start(agent *a) {
  const agent_config *c = &a->cfg;
  char err[1024];
  if (enroll_repair(c->cert_file, c->key_file, err, sizeof err) < 0) {
    log_error("%s", err);
    return AGENT_EXIT_RUNTIME;
  }
  if (!c->enroll_otp)
    return 0;
  if (enroll_pair_usable(c->cert_file, c->key_file, c->device_id, err,
                         sizeof err)) {
    log_info("[c8y] cert_file %s is usable: no enrollment needed",
             c->cert_file);
    return 0;
  }
  if (!c->enroll_url) {
    log_error("[c8y] enroll_url: no https URL for the certificate authority "
              "(http_url is %s)",
              c->http_url);
    return AGENT_EXIT_CONFIG;
  }
  log_notice("%s: enrolling device %s with the certificate authority at %s",
             err, c->device_id, c->enroll_url);
  enroll_request req = {.base_url = c->enroll_url,
                        .device_id = c->device_id,
                        .key_type = c->cert_key_type,
                        .cert_file = c->cert_file,
                        .key_file = c->key_file,
                        .ca_path = c->ca_path,
                        .verify_hostname = c->verify_hostname,
                        .otp = c->enroll_otp,
                        .cancel = &stop_signalled};
  long long net_delay = c->reconnect_min_ms;
  long long auth_delay =
      c->reconnect_max_ms > 60000 ? c->reconnect_max_ms : 60000;
  for (int attempt = 1;; attempt++) {
    int rc = enroll_request_certificate(&req, err, sizeof err);
    if (rc == 0)
      break;
    if (rc == C8Y_ECANCELED || atomic_load(&stop_signalled))
      return -1;
    long long *delay = rc == C8Y_EAUTH ? &auth_delay : &net_delay;
    long long cap = rc == C8Y_EAUTH ? 3600000 : c->reconnect_max_ms;
    log_error("certificate enrollment failed (attempt %d): %s; next attempt "
              "in %lld s",
              attempt, err, (*delay + 999) / 1000);
    notify_send(rc == C8Y_EAUTH ? "STATUS=enrollment refused: check the "
                                  "one-time password"
                                : "STATUS=enrollment failed: retrying");
    if (wait_or_stop(*delay))
      return -1;
    *delay = *delay * 2 > cap ? cap : *delay * 2;
  }
  if (enroll_commit(c->cert_file, c->key_file, err, sizeof err) != 0) {
    log_error("certificate enrollment: %s", err);
    return AGENT_EXIT_RUNTIME;
  }
  log_notice("enrolled: %s (CN=%s) and its key %s (mode 0600)", c->cert_file,
             c->device_id, c->key_file);
  forget_otp(a);
  return 0;
}

static int start_renewal(agent *a) {
  if (!a->cfg.cert_file)
    return 0;
  renew_host rh = {.ctx = a,
                   .wake = wake,
                   .try_identity = try_identity,
                   .bearer =
                       a->cfg.http_jwt && a->http ? renewal_bearer : NULL};
  return renew_new(&a->cfg, &a->up, &rh, &a->renew);
}

/* ---- setup ---- */

static void dispatch_op(void *ctx, c8y_operation *op) {
  (void)ctx;
  c8y_plugin *p = ops_plugin(op);
  if (plugin_host_queue_operation(p, op) != 0)
    ops_dispatch_failed(op, "the plugin is shutting down");
}

static int load_config(agent *a, const char *path) {
  char err[1024];
  int rc = config_load(path, &a->cfg, err, sizeof err);
  if (rc != 0) {
    log_error("%s", err);
    return rc;
  }
  log_set_level(a->cfg.log_level);
  if (a->cfg.local_sim)
    log_notice("no tenant configured in %s: using the local Cumulocity "
               "simulator at %s:%d",
               path, a->cfg.host, a->cfg.port);
  return 0;
}

static int open_state(agent *a) {
  char err[1024];
  int rc = fsutil_mkdir_p(a->cfg.state_dir, 0750);
  if (rc != 0) {
    log_error("state dir %s: %s", a->cfg.state_dir, strerror(errno));
    return rc;
  }
  size_t n = strlen(a->cfg.state_dir) + 16;
  a->queue_dir = malloc(n);
  if (!a->queue_dir)
    return C8Y_ENOMEM;
  snprintf(a->queue_dir, n, "%s/queue", a->cfg.state_dir);
  if ((rc = fsutil_mkdir_p(a->queue_dir, 0750)) != 0) {
    log_error("queue dir %s: %s", a->queue_dir, strerror(errno));
    return rc;
  }
  outq_options qo;
  outq_default_options(&qo, a->queue_dir);
  qo.max_bytes = (size_t)a->cfg.queue_max_bytes;
  if ((rc = outq_open(&qo, &a->q, err, sizeof err)) != 0) {
    log_error("%s", err);
    return rc;
  }
  a->up = (upstream){.q = a->q, .reg = a->reg, .wake = wake, .wake_ctx = a};
  outq_stats st;
  outq_get_stats(a->q, &st);
  if (st.replayed)
    log_notice("%llu queued lines survived the restart and will be sent",
               (unsigned long long)st.replayed);
  if ((rc = journal_open(a->cfg.state_dir, &a->j, err, sizeof err)) != 0) {
    log_error("%s", err);
    return rc;
  }
  return 0;
}

static void setup_host(agent *a) {
  a->host.cfg = &a->cfg;
  a->host.reg = a->reg;
  a->host.up = &a->up;
  a->host.device_id = a->cfg.device_id;
  a->host.state_dir = a->cfg.state_dir;
  a->host.svc = a->svc;
}

static void shutdown_plugins(agent *a) {
  loader_stop_all(&a->plugins);
  for (size_t i = 0; i < a->plugins.n; i++)
    a->plugin_abandoned |= a->plugins.plugins[i]->abandoned;
  /* Completions made by fini() become durable 503/502 lines. */
  if (a->ops)
    ops_process(a->ops, clock_mono_ms());
  loader_release_all(&a->plugins, a->reg);
}

/* SIGHUP: new config and plugins without dropping the MQTT session. What
 * the session, queue and journal were built from needs a restart. */
static void reload_apply(agent *a) {
  log_notice("SIGHUP: reloading %s and the plugins", a->config_path);
  agent_config fresh;
  char err[1024];
  if (config_load(a->config_path, &fresh, err, sizeof err) != 0) {
    log_error("reload refused, keeping the running configuration: %s", err);
    return;
  }
  if (bootstrap_load_stored(&fresh, err, sizeof err) < 0) {
    log_error("reload refused, keeping the running configuration: %s", err);
    config_free(&fresh);
    return;
  }
  const char *changed = config_restart_only_change(&a->cfg, &fresh);
  if (changed) {
    log_error("reload refused, keeping the running configuration: %s "
              "changed, which takes a restart of the agent",
              changed);
    config_free(&fresh);
    return;
  }
  shutdown_plugins(a);
  config_free(&a->cfg);
  a->cfg = fresh;
  log_set_level(a->cfg.log_level);
  ops_set_cancel_grace(a->ops, (uint32_t)a->cfg.stop_grace_ms);
  setup_host(a);
  loader_load_all(&a->host, a->cfg.plugin_dir, true, &a->plugins);
  report_plugins(a);
  publish_plugins(a);
  scheduler_reset(a->reg, clock_mono_ms());
  link_announce(a->link);
}

/* systemd learns when a reload starts and ends (RELOADING=1 ... READY=1,
 * the protocol of Type=notify-reload), and the unit's ExecReload= waits for
 * the count in $RUNTIME_DIRECTORY/reloads to change: systemd 252 has no
 * notify-reload, and its reload job would end when `kill -HUP` returns. */
static void reload_notify_start(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  char msg[96];
  snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
           (unsigned long long)ts.tv_sec * 1000000ULL +
               (unsigned long long)ts.tv_nsec / 1000ULL);
  notify_send(msg);
}

static void reload_notify_done(agent *a) {
  a->reloads++;
  const char *dir = getenv("RUNTIME_DIRECTORY");
  if (dir && *dir && !strchr(dir, ':')) {
    char path[512], tmp[520];
    snprintf(path, sizeof path, "%s/reloads", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (f) {
      fprintf(f, "%u\n", a->reloads);
      if (fclose(f) != 0 || rename(tmp, path) != 0)
        log_warning("cannot write %s: %s", path, strerror(errno));
    }
  }
  notify_send("READY=1");
}

static void reload(agent *a) {
  if (!a->reload_pending)
    reload_notify_start();
  if (ops_active(a->ops) > 0) {
    if (!a->reload_pending)
      log_notice("SIGHUP: reload waits until the running operations finish");
    a->reload_pending = true;
    return;
  }
  a->reload_pending = false;
  reload_apply(a);
  reload_notify_done(a);
}

static void stopping_step(agent *a, int wait_ms);

static void flush_before_exit(agent *a) {
  /* Give queued statuses a moment to reach the platform; anything left
   * stays in the durable queue for the next start. */
  long long until = clock_mono_ms() + 2000;
  while (link_is_up(a->link) && clock_mono_ms() < until) {
    link_drain(a->link);
    outq_stats st;
    outq_get_stats(a->q, &st);
    if (st.inflight == 0 && st.queued[OUTQ_OPSTATUS] == 0)
      break;
    stopping_step(a, 50);
  }
}

static void install_signals(void) {
  if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
    return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
}

/* The snapshot `c8y-agent status` shows. */
static void publish_state(agent *a) {
  localapi_set_state(a->api, link_state_name(a->link), link_uri(a->link),
                     ops_active(a->ops));
}

static void op_finished(void *ctx, const ops_outcome *r) {
  localapi_op_row row = {.id = (unsigned long long)r->id,
                         .template_id = r->template_id,
                         .fragment = r->fragment,
                         .device = r->device,
                         .ok = r->ok,
                         .reason = r->reason};
  localapi_record_op(((agent *)ctx)->api, &row);
}

/* A missed wakeup costs at most this much. */
#define MAIN_LOOP_MAX_SLEEP_MS 60000

static void main_loop(agent *a) {
  a->running = true;
  a->watchdog_ms = notify_watchdog_interval_ms();
  a->next_watchdog = clock_mono_ms();
  notify_send("READY=1");
  notify_status(a, "connecting");
  while (a->running) {
    long long now = clock_mono_ms();
    /* The ping proves the loop runs: it comes from here, not a timer. */
    if (a->watchdog_ms > 0 && now >= a->next_watchdog) {
      notify_send("WATCHDOG=1");
      a->next_watchdog = now + a->watchdog_ms;
    }
    /* Each module says when it next has work; the cap only bounds the damage
     * of a missed wakeup. */
    long long deadline = now + MAIN_LOOP_MAX_SLEEP_MS;
    long long next_op = ops_process(a->ops, now);
    if (next_op >= 0 && next_op < deadline)
      deadline = next_op;
    long long next_prod = scheduler_run(a->reg, now);
    if (next_prod >= 0 && next_prod < deadline)
      deadline = next_prod;
    if (a->watchdog_ms > 0 && a->next_watchdog < deadline)
      deadline = a->next_watchdog;
    long long next_q = outq_next_deadline(a->q);
    if (next_q >= 0 && next_q <= now) {
      outq_tick(a->q);
      next_q = outq_next_deadline(a->q);
    }
    if (next_q >= 0 && next_q < deadline)
      deadline = next_q;
    long long next_link = link_step(a->link, now);
    if (next_link >= 0 && next_link < deadline)
      deadline = next_link;
    long long next_renew = renew_step(a->renew, now, link_is_up(a->link));
    if (next_renew >= 0 && next_renew < deadline)
      deadline = next_renew;
    if (link_is_up(a->link) && atomic_exchange(&a->token_wanted, false))
      link_request_token(a->link);
    if (link_is_up(a->link))
      send_identity_request(a);
    children_step(a);
    publish_state(a);
    if (services_take_changed(a->svc) && a->link_text)
      notify_status(a, a->link_text);

    int timeout = (int)(deadline > now ? deadline - now : 0);
    struct pollfd pfd[2] = {{.fd = a->wake_fd, .events = POLLIN},
                            {.fd = signal_pipe[0], .events = POLLIN}};
    int n = poll(pfd, 2, timeout);
    if (n < 0 && errno != EINTR) {
      log_error("poll: %s", strerror(errno));
      break;
    }
    if (pfd[0].revents & POLLIN) {
      uint64_t v;
      if (read(a->wake_fd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing pending */
      }
    }
    if (pfd[1].revents & POLLIN) {
      unsigned char sig;
      while (read(signal_pipe[0], &sig, 1) == 1) {
        if (sig == SIGHUP) {
          reload(a);
        } else {
          log_notice("signal %d: stopping", sig);
          a->running = false;
        }
      }
    }
    link_process_events(a->link, false);
    if (a->reload_pending && a->running)
      reload(a);
  }
  notify_send("STOPPING=1");
}

/* Waits (bounded) for the wake fd, then handles what arrived while
 * stopping: deliveries, completions, losses. */
static void stopping_step(agent *a, int wait_ms) {
  struct pollfd pfd = {.fd = a->wake_fd, .events = POLLIN};
  if (poll(&pfd, 1, wait_ms) > 0) {
    uint64_t v;
    if (read(a->wake_fd, &v, sizeof v) < 0) {
      /* spurious */
    }
  }
  link_process_events(a->link, true);
  ops_process(a->ops, clock_mono_ms());
  link_drain(a->link);
}

/* SIGTERM with operations running: tell their handlers (op_cancelled),
 * give them stop_grace_ms, then fail what is left with a durable 502, so
 * nothing stays EXECUTING and the stop stays well within systemd's
 * timeout. Operations waiting for a reboot are left to the next start. */
static void stop_operations(agent *a) {
  ops_stop(a->ops);
  size_t n = ops_cancel_running(a->ops);
  if (n == 0)
    return;
  log_notice("stopping: %zu running operation(s) told to stop; waiting up to "
             "%d ms",
             n, a->cfg.stop_grace_ms);
  long long until = clock_mono_ms() + a->cfg.stop_grace_ms;
  while (ops_running(a->ops) > 0 && clock_mono_ms() < until)
    stopping_step(a, 20);
  ops_fail_all(a->ops, "agent stopped");
}

/* Processes plugins started (in their own process groups) and left behind:
 * ended with their group, so a stop leaves nothing running. */
static void end_child_processes(void) {
  DIR *d = opendir("/proc");
  if (!d)
    return;
  pid_t self = getpid();
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0)
      continue;
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
      continue;
    long ppid = 0, pgrp = 0;
    /* pid (comm) state ppid pgrp: comm may hold spaces and parentheses. */
    char buf[512];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *close_paren = strrchr(buf, ')');
    if (!close_paren ||
        sscanf(close_paren + 1, " %*c %ld %ld", &ppid, &pgrp) != 2)
      continue;
    if (ppid != self)
      continue;
    log_notice("stopping: ending process %ld left by a plugin", pid);
    if (pgrp == pid)
      kill(-(pid_t)pgrp, SIGKILL);
    else
      kill((pid_t)pid, SIGKILL);
  }
  closedir(d);
}

static void agent_cleanup(agent *a) {
  localapi_stop(a->api);
  a->api = NULL;
  if (a->ops)
    stop_operations(a);
  http_stop(a->http);   /* workers in a transfer return promptly */
  renew_free(a->renew); /* its request is cancelled, its token wait ended */
  a->renew = NULL;
  shutdown_plugins(a);
  end_child_processes();
  if (a->link) {
    flush_before_exit(a);
    link_close_session(a->link, 1000);
  }
  link_free(a->link); /* frees whatever arrived late */
  if (!a->plugin_abandoned) {
    http_free(a->http);
    ops_free(a->ops);
  } else {
    kept_for_abandoned[0] = a->http;
    kept_for_abandoned[1] = a->ops;
  }
  if (!a->plugin_abandoned)
    services_free(a->svc); /* else its thread may still call set_health */
  registry_free(a->reg);
  outq_close(a->q);
  journal_close(a->j);
  free(a->queue_dir);
  free(a->identity_child);
  pthread_mutex_destroy(&a->identity_mu);
  if (a->wake_fd >= 0)
    close(a->wake_fd);
  config_free(&a->cfg);
  netdiag_wait(3000); /* not inside OpenSSL while the process exits */
}

static int agent_init(agent *a, const char *config_path) {
  memset(a, 0, sizeof *a);
  a->config_path = config_path;
  a->wake_fd = -1;
  pthread_mutex_init(&a->identity_mu, NULL);
  if (load_config(a, config_path) != 0)
    return AGENT_EXIT_CONFIG;
  a->reg = registry_new();
  if (!a->reg) {
    log_error("out of memory");
    return AGENT_EXIT_RUNTIME;
  }
  a->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (a->wake_fd < 0) {
    log_error("eventfd: %s", strerror(errno));
    return AGENT_EXIT_RUNTIME;
  }
  return 0;
}

int agent_run(const char *config_path) {
  agent a;
  int rc = agent_init(&a, config_path);
  if (rc != 0) {
    if (rc != AGENT_EXIT_CONFIG)
      agent_cleanup(&a);
    return rc;
  }
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  install_signals();
  if (open_state(&a) != 0) {
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  if (services_new(a.cfg.device_id, a.cfg.state_dir, &a.up, a.reg, &a.svc) !=
      0) {
    log_error("out of memory");
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  setup_host(&a);
  char herr[512];
  if (http_new(&a.cfg, request_token, &a, &a.http, herr, sizeof herr) != 0)
    log_error("no file transfers: %s", herr);
  http_set_identity_source(a.http, request_identity, &a);
  a.host.http = a.http;
  ops_host oh = {.ctx = &a,
                 .dispatch = dispatch_op,
                 .wake = wake,
                 .finished = op_finished};
  if (ops_new(a.cfg.device_id, a.reg, &a.up, a.j, &oh,
              (uint32_t)a.cfg.op_timeout_s * 1000u, &a.ops) != 0) {
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  ops_set_cancel_grace(a.ops, (uint32_t)a.cfg.stop_grace_ms);
  ops_recover(a.ops);
  loader_load_all(&a.host, a.cfg.plugin_dir, true, &a.plugins);
  report_plugins(&a);
  ops_resume(a.ops);
  if (a.cfg.cert_file && (rc = enroll_at_start(&a)) != 0) {
    agent_cleanup(&a);
    return rc < 0 ? AGENT_EXIT_OK : rc;
  }
  if (a.cfg.cert_file) {
    char xerr[1024];
    if (x509_check_device_cert(a.cfg.cert_file, a.cfg.key_file, a.cfg.device_id,
                               xerr, sizeof xerr) != 0) {
      log_error("%s", xerr);
      agent_cleanup(&a);
      return AGENT_EXIT_CONFIG;
    }
  }
  rc = bootstrap_ensure(&a.cfg, signal_pipe[0]);
  if (rc != 0) {
    agent_cleanup(&a);
    return rc == C8Y_ECANCELED ? AGENT_EXIT_OK
           : rc == C8Y_EAUTH   ? AGENT_EXIT_AUTH
                               : AGENT_EXIT_RUNTIME;
  }
  link_params lp = {.cfg = &a.cfg,
                    .up = &a.up,
                    .ops = a.ops,
                    .reg = a.reg,
                    .queue_dir = a.queue_dir,
                    .running = &a.running,
                    .max_auth_failures = AGENT_MAX_AUTH_FAILURES,
                    .host = {.ctx = &a,
                             .wake = wake,
                             .message = on_message,
                             .state = notify_status,
                             .gave_up = gave_up,
                             .identity_tried = identity_tried}};
  a.down = (downstream){.ops = a.ops, .http = a.http, .reg = a.reg};
  char err[1024];
  if (link_new(&lp, &a.link) != 0) {
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  if (link_open_session(a.link, err, sizeof err) != 0) {
    log_error("%s", err);
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  if (start_renewal(&a) != 0) {
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  if (localapi_start(&a.cfg, &a.up, &a.api, err, sizeof err) != 0)
    log_error("%s; running without it", err);
  publish_plugins(&a);
  publish_state(&a);
  scheduler_reset(a.reg, clock_mono_ms());
  log_notice("c8y-agent %s started: device %s, %zu plugins", C8Y_VERSION,
             a.cfg.device_id, a.plugins.n);
  main_loop(&a);
  rc = a.exit_code;
  agent_cleanup(&a);
  return rc;
}

/* Loads config and plugins as a start would, without connecting or starting
 * workers (plugins may queue data during init: a memory-only queue). */
static int load_for_inspection(agent *a, const char *config_path) {
  int rc = agent_init(a, config_path);
  if (rc != 0)
    return rc;
  outq_options qo;
  outq_default_options(&qo, NULL);
  char err[256];
  if (outq_open(&qo, &a->q, err, sizeof err) != 0) {
    log_error("%s", err);
    agent_cleanup(a);
    return AGENT_EXIT_RUNTIME;
  }
  a->up = (upstream){.q = a->q, .reg = a->reg}; /* no main loop to wake */
  setup_host(a);
  loader_load_all(&a->host, a->cfg.plugin_dir, false, &a->plugins);
  return 0;
}

int agent_list_plugins(const char *config_path, FILE *out) {
  agent a;
  int rc = load_for_inspection(&a, config_path);
  if (rc != 0)
    return rc;
  fprintf(out, "plugin dir: %s\n", a.cfg.plugin_dir);
  loader_print(&a.plugins, a.reg, out);
  rc = loader_failures(&a.plugins) == 0 ? 0 : 1;
  agent_cleanup(&a);
  return rc;
}

/* [plugin.<name>] sections nobody loads, and keys no plugin reads: typos
 * that would otherwise silently leave a setting at its default. */
int agent_check_plugin_sections(const char *config_path, FILE *out) {
  agent a;
  int rc = load_for_inspection(&a, config_path);
  if (rc != 0)
    return rc;
  size_t problems = 0;
  const char **names = calloc(a.plugins.nentries + 1, sizeof *names);
  size_t nnames = 0;
  for (size_t i = 0; names && i < a.plugins.nentries; i++)
    if (a.plugins.entries[i].name)
      names[nnames++] = a.plugins.entries[i].name;
  /* Unknown keys were logged (with file:line) as the plugins loaded. */
  for (size_t i = 0; i < a.plugins.n; i++)
    problems += plugin_host_report_unused_keys(a.plugins.plugins[i], true);
  const char *reported = NULL;
  for (size_t i = 0; i < a.cfg.nentries; i++) {
    const config_entry *e = &a.cfg.entries[i];
    const char *name = e->section + strlen("plugin.");
    bool known = false;
    for (size_t k = 0; k < nnames && !known; k++)
      known = strcmp(names[k], name) == 0;
    if (known || (reported && strcmp(reported, e->section) == 0))
      continue;
    reported = e->section;
    const char *hint = names ? plugin_host_closest(name, names, nnames) : NULL;
    fprintf(out, "%s:%u: [%s]: no plugin '%s' in %s%s%s%s\n", e->file, e->line,
            e->section, name, a.cfg.plugin_dir,
            hint ? "; did you mean [plugin." : "", hint ? hint : "",
            hint ? "]?" : "");
    problems++;
  }
  free(names);
  agent_cleanup(&a);
  if (problems)
    fprintf(out, "%s: %zu problem(s) in plugin sections\n", config_path,
            problems);
  return problems == 0 ? 0 : AGENT_EXIT_CONFIG;
}
