#include "agent.h"

#include "bootstrap.h"
#include "clock.h"
#include "config.h"
#include "enroll.h"
#include "fsutil.h"
#include "http.h"
#include "link.h"
#include "log.h"
#include "netdiag.h"
#include "notify.h"
#include "renew.h"
#include "runtime.h"
#include "scheduler.h"
#include "services.h"
#include "x509.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
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
  runtime *rt;    /* the runtime graph: queue, engine, plugins, services */
  link_ctx *link; /* the runtime's transport */
  char *queue_dir;
  http_ctx *http;
  renew *renew;          /* NULL without a client certificate */
  const char *link_text; /* the last state notify_status showed */

  int wake_fd;
  long long next_watchdog;
  long long watchdog_ms;
  bool running;
  bool reload_pending; /* SIGHUP arrived while operations were running */
  unsigned reloads;    /* reloads done or refused since the start */
  int exit_code;
} agent;

static int signal_pipe[2] = {-1, -1};
/* Set by SIGTERM/SIGINT: ends a start-up enrollment request at once. */
static atomic_bool stop_signalled;
/* With a plugin thread abandoned (still running, it may reach it) the HTTP
 * client stays allocated until the process ends; kept reachable here so
 * leak checkers see that as deliberate (runtime.c keeps the engine). */
static void *volatile kept_for_abandoned;

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

/* STATUS= for systemctl status, with what the operator must know. */
static void notify_status(void *ctx, const char *state) {
  agent *a = ctx;
  char note[512], down[512], buf[1100];
  a->link_text = state;
  loader_status_note(runtime_plugins(a->rt), note, sizeof note);
  services_status_note(runtime_services(a->rt), down, sizeof down);
  snprintf(buf, sizeof buf, "STATUS=%s%s%s", state, note, down);
  notify_send(buf);
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
  return renew_new(&a->cfg, runtime_upstream(a->rt), &rh, &a->renew);
}

/* ---- setup ---- */

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

/* The state dir and the runtime in it: the durable queue in <state_dir>/queue
 * (what a previous run left is replayed), the journal, the engine (what the
 * previous run left executing is settled), the services. */
static int open_runtime(agent *a) {
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
  runtime_options o = {.cfg = &a->cfg,
                       .device_id = a->cfg.device_id,
                       .state_dir = a->cfg.state_dir,
                       .queue_dir = a->queue_dir,
                       .queue_max_bytes = (size_t)a->cfg.queue_max_bytes,
                       .op_timeout_ms = (uint32_t)a->cfg.op_timeout_s * 1000u,
                       .wake = wake,
                       .wake_ctx = a,
                       .running = &a->running};
  char err[1024];
  if ((rc = runtime_new(&o, &a->rt, err, sizeof err)) != 0)
    log_error("%s", err);
  return rc;
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
  runtime_stop_plugins(a->rt);
  config_free(&a->cfg);
  a->cfg = fresh;
  log_set_level(a->cfg.log_level);
  runtime_reload_plugins(a->rt);
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
  if (ops_active(runtime_ops(a->rt)) > 0) {
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
    outq_get_stats(runtime_queue(a->rt), &st);
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
    if (a->watchdog_ms > 0 && a->next_watchdog < deadline)
      deadline = a->next_watchdog;
    long long next_runtime = runtime_step(a->rt, now);
    if (next_runtime >= 0 && next_runtime < deadline)
      deadline = next_runtime;
    long long next_renew = renew_step(a->renew, now, link_is_up(a->link));
    if (next_renew >= 0 && next_renew < deadline)
      deadline = next_renew;
    if (services_take_changed(runtime_services(a->rt)) && a->link_text)
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
    runtime_process(a->rt, false);
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
  runtime_stopping_turn(a->rt);
}

static void stopping_turn(void *ctx, int wait_ms) {
  stopping_step(ctx, wait_ms);
}

/* Ends the process pid and, when it leads one, its process group. */
static void end_left_process(long pid) {
  log_notice("stopping: ending process %ld left by a plugin", pid);
  if (kill(-(pid_t)pid, SIGKILL) != 0)
    kill((pid_t)pid, SIGKILL);
}

/* The children of this process from /proc/self/task/<tid>/children (each
 * thread's own: plugins fork from their workers); false when the kernel
 * has no such files (CONFIG_PROC_CHILDREN). */
static bool end_children_of_tasks(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d)
    return false;
  bool found_file = false;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%.20s/children", e->d_name);
    FILE *f = fopen(path, "re");
    if (!f)
      continue;
    found_file = true;
    long pid;
    while (fscanf(f, "%ld", &pid) == 1)
      if (pid > 0)
        end_left_process(pid);
    fclose(f);
  }
  closedir(d);
  return found_file;
}

/* Processes plugins started (in their own process groups) and left behind:
 * ended with their group, so a stop leaves nothing running. Reads only this
 * process's threads where the kernel lists their children, every process
 * otherwise. */
static void end_child_processes(void) {
  if (end_children_of_tasks())
    return;
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
    if (ppid == self)
      end_left_process(pid);
  }
  closedir(d);
}

/* The ordered stop. SIGTERM with operations running: their handlers are
 * told (op_cancelled) and given stop_grace_ms, then what is left fails with
 * a durable 502, so nothing stays EXECUTING and the stop stays well within
 * systemd's timeout (operations waiting for a reboot are left to the next
 * start). */
static void agent_cleanup(agent *a) {
  if (a->rt) {
    runtime_stop_api(a->rt);
    runtime_stop_operations(a->rt, a->cfg.stop_grace_ms, stopping_turn, a);
  }
  http_stop(a->http);   /* workers in a transfer return promptly */
  renew_free(a->renew); /* its request is cancelled, its token wait ended */
  a->renew = NULL;
  if (a->rt)
    runtime_stop_plugins(a->rt);
  end_child_processes();
  if (a->link) {
    flush_before_exit(a);
    link_end_session(a->link, 1000);
  }
  if (a->rt)
    runtime_set_transport(a->rt, NULL);
  link_free(a->link); /* frees whatever arrived late */
  if (a->rt && runtime_plugin_abandoned(a->rt))
    kept_for_abandoned = a->http;
  else
    http_free(a->http);
  runtime_free(a->rt); /* keeps what an abandoned plugin may reach */
  free(a->queue_dir);
  if (a->wake_fd >= 0)
    close(a->wake_fd);
  config_free(&a->cfg);
  netdiag_wait(3000); /* not inside OpenSSL while the process exits */
}

static int agent_init(agent *a, const char *config_path) {
  memset(a, 0, sizeof *a);
  a->config_path = config_path;
  a->wake_fd = -1;
  if (load_config(a, config_path) != 0)
    return AGENT_EXIT_CONFIG;
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
  if (open_runtime(&a) != 0) {
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  /* The link exists before the plugins load (a transfer may ask it for a
   * token or an identity); its session only after the bootstrap. */
  link_params lp = {.cfg = &a.cfg,
                    .up = runtime_upstream(a.rt),
                    .rt = a.rt,
                    .reg = runtime_registry(a.rt),
                    .queue_dir = a.queue_dir,
                    .running = &a.running,
                    .max_auth_failures = AGENT_MAX_AUTH_FAILURES,
                    .host = {.ctx = &a,
                             .wake = wake,
                             .state = notify_status,
                             .gave_up = gave_up,
                             .identity_tried = identity_tried}};
  if (link_new(&lp, &a.link) != 0) {
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  char err[1024];
  if (http_new(&a.cfg, link_want_token, a.link, &a.http, err, sizeof err) != 0)
    log_error("no file transfers: %s", err);
  http_set_identity_source(a.http, link_want_identity, a.link);
  runtime_set_http(a.rt, a.http);
  runtime_load_dir(a.rt, a.cfg.plugin_dir, true);
  runtime_resume(a.rt);
  if (a.cfg.cert_file && (rc = enroll_at_start(&a)) != 0) {
    agent_cleanup(&a);
    return rc < 0 ? AGENT_EXIT_OK : rc;
  }
  if (a.cfg.cert_file) {
    if (x509_check_device_cert(a.cfg.cert_file, a.cfg.key_file, a.cfg.device_id,
                               err, sizeof err) != 0) {
      log_error("%s", err);
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
  if (link_open_session(a.link, err, sizeof err) != 0) {
    log_error("%s", err);
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  runtime_transport mqtt;
  link_transport(a.link, &mqtt);
  runtime_set_transport(a.rt, &mqtt);
  if (start_renewal(&a) != 0) {
    agent_cleanup(&a);
    return AGENT_EXIT_RUNTIME;
  }
  if (runtime_start_api(a.rt, err, sizeof err) != 0)
    log_error("%s; running without it", err);
  scheduler_reset(runtime_registry(a.rt), clock_mono_ms());
  log_notice("c8y-agent %s started: device %s, %zu plugins", C8Y_VERSION,
             a.cfg.device_id, runtime_plugins(a.rt)->n);
  main_loop(&a);
  rc = a.exit_code;
  agent_cleanup(&a);
  return rc;
}

/* Root inspecting the agent (`--check-config`, `--list-plugins`, as the
 * README's set-up steps do) runs the plugins' init as the agent's user, the
 * owner of the state directory. That init reads and writes files the
 * agent's user can change (a configuration plugin's interrupted apply, its
 * records, links planted in place of directories), which root must never
 * act on; and what it creates must stay the service's. A root-owned state
 * directory is root's agent: nothing changes. Permanent: the rest of the
 * check reads what the service itself would read. */
static int drop_to_state_owner(const char *state_dir) {
  struct stat st;
  if (geteuid() != 0 || !state_dir || stat(state_dir, &st) != 0 ||
      st.st_uid == 0)
    return 0;
  const struct passwd *pw = getpwuid(st.st_uid);
  int rc = pw ? initgroups(pw->pw_name, st.st_gid) : setgroups(0, NULL);
  if (rc == 0)
    rc = setresgid(st.st_gid, st.st_gid, st.st_gid);
  if (rc == 0)
    rc = setresuid(st.st_uid, st.st_uid, st.st_uid);
  if (rc != 0) {
    log_error("%s: cannot run the plugins as its owner (uid %u): %s", state_dir,
              (unsigned)st.st_uid, strerror(errno));
    return C8Y_EIO;
  }
  log_info("plugins loaded as %s (uid %u), the owner of %s",
           pw ? pw->pw_name : "?", (unsigned)st.st_uid, state_dir);
  return 0;
}

/* Loads config and plugins as a start would, without connecting or starting
 * workers (plugins may queue data during init: a memory-only queue). */
static int load_for_inspection(agent *a, const char *config_path) {
  int rc = agent_init(a, config_path);
  if (rc != 0)
    return rc;
  if (drop_to_state_owner(a->cfg.state_dir) != 0) {
    agent_cleanup(a);
    return AGENT_EXIT_RUNTIME;
  }
  runtime_options o = {.cfg = &a->cfg,
                       .device_id = a->cfg.device_id,
                       .state_dir = a->cfg.state_dir,
                       .inspect = true};
  char err[256];
  if (runtime_new(&o, &a->rt, err, sizeof err) != 0) {
    log_error("%s", err);
    agent_cleanup(a);
    return AGENT_EXIT_RUNTIME;
  }
  runtime_load_dir(a->rt, a->cfg.plugin_dir, false);
  return 0;
}

int agent_list_plugins(const char *config_path, FILE *out) {
  agent a;
  int rc = load_for_inspection(&a, config_path);
  if (rc != 0)
    return rc;
  fprintf(out, "plugin dir: %s\n", a.cfg.plugin_dir);
  loader_print(runtime_plugins(a.rt), runtime_registry(a.rt), out);
  rc = loader_failures(runtime_plugins(a.rt)) == 0 ? 0 : 1;
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
  const plugin_set *plugins = runtime_plugins(a.rt);
  const char **names = calloc(plugins->nentries + 1, sizeof *names);
  size_t nnames = 0;
  for (size_t i = 0; names && i < plugins->nentries; i++)
    if (plugins->entries[i].name)
      names[nnames++] = plugins->entries[i].name;
  /* Unknown keys were logged (with file:line) as the plugins loaded. */
  for (size_t i = 0; i < plugins->n; i++)
    problems += plugin_host_report_unused_keys(plugins->plugins[i], true);
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
