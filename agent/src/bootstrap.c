#include "bootstrap.h"

#include "clock.h"
#include "fsutil.h"
#include "log.h"
#include "netdiag.h"
#include "notify.h"
#include "session.h"
#include "smartrest.h"
#include "status.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Bootstrap-user refusals in a row before giving up (as for the device). */
#define BOOTSTRAP_MAX_REFUSALS 5

int bootstrap_wanted(const agent_config *cfg) {
  return cfg->bootstrap && !cfg->tenant && !cfg->cert_file;
}

static char *cred_path(const char *state_dir) {
  char *p;
  return asprintf(&p, "%s/%s", state_dir, BOOTSTRAP_FILE) < 0 ? NULL : p;
}

static void wipe_free(char *s) {
  if (s) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

/* ---- the credentials file: "tenant=", "user=", "password=" lines ---- */

int bootstrap_store(const char *state_dir, const char *tenant, const char *user,
                    const char *password, char *err, size_t errlen) {
  char *path = cred_path(state_dir);
  char *tmp = NULL;
  int fd = -1, rc = C8Y_ENOMEM;
  if (!path || asprintf(&tmp, "%s.tmp", path) < 0) {
    tmp = NULL;
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  rc = fsutil_mkdir_p(state_dir, 0750);
  if (rc != 0) {
    snprintf(err, errlen, "state dir %s: %s", state_dir, strerror(errno));
    goto out;
  }
  rc = C8Y_EIO;
  unlink(tmp); /* a leftover of a crash in the middle */
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    goto out;
  }
  char *text = NULL;
  int n = asprintf(&text, "tenant=%s\nuser=%s\npassword=%s\n", tenant, user,
                   password);
  if (n < 0) {
    snprintf(err, errlen, "out of memory");
    rc = C8Y_ENOMEM;
    goto out;
  }
  int wrc = fsutil_write_all(fd, text, (size_t)n, NULL);
  int werr = errno;
  explicit_bzero(text, (size_t)n);
  free(text);
  if (wrc != 0) {
    snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(werr));
    goto out;
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    fd = -1;
    snprintf(err, errlen, "%s: fsync failed: %s", tmp, strerror(errno));
    goto out;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    snprintf(err, errlen, "%s: cannot rename to %s: %s", tmp, path,
             strerror(errno));
    goto out;
  }
  /* The rename itself must survive a power cut too. */
  fsutil_fsync_dir(state_dir);
  rc = 0;
out:
  if (fd >= 0)
    close(fd);
  if (rc != 0 && tmp)
    unlink(tmp);
  free(tmp);
  free(path);
  return rc;
}

int bootstrap_load_stored(agent_config *cfg, char *err, size_t errlen) {
  if (!bootstrap_wanted(cfg))
    return 0;
  char *path = cred_path(cfg->state_dir);
  if (!path) {
    snprintf(err, errlen, "out of memory");
    return C8Y_ENOMEM;
  }
  FILE *f = fopen(path, "re");
  if (!f) {
    int e = errno;
    if (e != ENOENT)
      snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
    free(path);
    return e == ENOENT ? 0 : C8Y_EIO;
  }
  struct stat st;
  char line[1024] = "";
  char *vals[3] = {NULL, NULL, NULL};
  static const char *const keys[3] = {"tenant=", "user=", "password="};
  int rc = C8Y_EIO;
  if (fstat(fileno(f), &st) != 0) {
    snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
    goto out;
  }
  rc = C8Y_EINVAL;
  if (st.st_mode & 077) {
    snprintf(err, errlen,
             "%s: readable by others (mode %03o); it holds the device "
             "password: run chmod 600 %s",
             path, (unsigned)(st.st_mode & 0777), path);
    goto out;
  }
  unsigned lineno = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    line[strcspn(line, "\r\n")] = '\0';
    bool known = false;
    for (int k = 0; k < 3; k++) {
      size_t kl = strlen(keys[k]);
      if (strncmp(line, keys[k], kl) == 0 && line[kl]) {
        wipe_free(vals[k]);
        vals[k] = strdup(line + kl);
        known = true;
      }
    }
    if (!known) {
      snprintf(err, errlen,
               "%s:%u: expected tenant=, user= or password= with a value; "
               "delete the file to register the device again",
               path, lineno);
      goto out;
    }
  }
  for (int k = 0; k < 3; k++)
    if (!vals[k]) {
      snprintf(err, errlen,
               "%s: no %s line; delete the file to register the device again",
               path, keys[k]);
      goto out;
    }
  cfg->tenant = vals[0];
  cfg->user = vals[1];
  wipe_free(cfg->password);
  cfg->password = vals[2];
  vals[0] = vals[1] = vals[2] = NULL;
  rc = 1;
out:
  explicit_bzero(line, sizeof line);
  for (int k = 0; k < 3; k++)
    wipe_free(vals[k]);
  fclose(f);
  free(path);
  return rc;
}

void bootstrap_explain_refusal(const agent_config *cfg) {
  if (!cfg->bootstrap || cfg->cert_file)
    return;
  char *path = cred_path(cfg->state_dir);
  if (path && access(path, F_OK) == 0)
    log_error("the credentials came from device registration (%s): if the "
              "device was deleted or its user changed in Cumulocity, delete "
              "that file to register the device again",
              path);
  free(path);
}

/* ---- the registration flow ---- */

typedef struct bs {
  const agent_config *cfg;
  session *sess;
  int wake_fd;
  pthread_mutex_t mu;
  enum { BS_DOWN, BS_CONNECTING, BS_UP, BS_FAILED } state;
  int fail_code; /* CONNACK code or negative Paho code */
  char fail_text[256];
  char *tenant, *user, *password; /* from 70 */
} bs;

static void bs_wake(bs *b) {
  uint64_t one = 1;
  if (write(b->wake_fd, &one, sizeof one) < 0) {
    /* saturated counter: the loop is awake anyway */
  }
}

static void bs_set_state(bs *b, int state, int code, const char *text) {
  pthread_mutex_lock(&b->mu);
  b->state = state;
  b->fail_code = code;
  snprintf(b->fail_text, sizeof b->fail_text, "%s", text ? text : "");
  pthread_mutex_unlock(&b->mu);
  bs_wake(b);
}

static void bs_on_lost(void *ctx, const char *cause) {
  bs_set_state(ctx, BS_FAILED, 0, cause ? cause : "connection lost");
}

static void bs_on_connected(void *ctx) { bs_set_state(ctx, BS_UP, 0, NULL); }

static void bs_on_connect_failed(void *ctx, int code, const char *message) {
  bs_set_state(ctx, BS_FAILED, code, message ? message : "connect failed");
}

static void bs_on_delivered(void *ctx, uint64_t id, bool ok) {
  (void)ctx;
  (void)id;
  (void)ok;
}

/* 70,<tenant>,<user>,<password> on s/dcr (several lines possible). */
static void bs_on_message(void *ctx, const char *topic, const char *payload,
                          size_t len) {
  bs *b = ctx;
  smartrest_records recs;
  if (strcmp(topic, "s/dcr") != 0 || smartrest_decode(payload, len, &recs) != 0)
    return;
  for (size_t i = 0; i < recs.count; i++) {
    smartrest_record *r = &recs.items[i];
    if (r->error || r->nfields < 4 || strcmp(r->fields[0], "70") != 0 ||
        !*r->fields[1] || !*r->fields[2] || !*r->fields[3] ||
        strpbrk(r->fields[1], "/\n") || strchr(r->fields[2], '\n') ||
        strchr(r->fields[3], '\n')) {
      log_warning("bootstrap: ignored an unexpected line on s/dcr "
                  "(record %zu, %zu fields)",
                  r->line, r->nfields);
      continue;
    }
    pthread_mutex_lock(&b->mu);
    if (!b->tenant) {
      b->tenant = strdup(r->fields[1]);
      b->user = strdup(r->fields[2]);
      b->password = strdup(r->fields[3]);
    }
    pthread_mutex_unlock(&b->mu);
    explicit_bzero(r->fields[3], strlen(r->fields[3]));
  }
  smartrest_records_free(&recs);
  bs_wake(b);
}

static void bs_connect(bs *b) {
  pthread_mutex_lock(&b->mu);
  b->state = BS_CONNECTING;
  pthread_mutex_unlock(&b->mu);
  int rc = session_connect(b->sess); /* logs a refusal */
  if (rc != 0)
    bs_set_state(b, BS_FAILED, -1, status_str(rc));
}

static void bs_request(bs *b) {
  if (session_publish(b->sess, "s/ucr", "", 0, 0, 0) == 0)
    log_debug("bootstrap: asked for credentials on s/ucr");
}

/* The loop: connect (with backoff), subscribe, ask every interval, until
 * 70 arrives. Returns what bootstrap_ensure does. */
static int bs_run(bs *b, int stop_fd) {
  const agent_config *c = b->cfg;
  long long next_connect = 0, next_request = 0, next_watchdog = 0;
  long long wd = notify_watchdog_interval_ms();
  int attempt = 0, refusals = 0, seen = BS_DOWN;
  for (;;) {
    long long now = clock_mono_ms();
    pthread_mutex_lock(&b->mu);
    int state = b->state, code = b->fail_code;
    char text[256];
    snprintf(text, sizeof text, "%s", b->fail_text);
    bool got = b->tenant != NULL;
    pthread_mutex_unlock(&b->mu);
    if (got)
      return 0;
    if (state != seen) {
      seen = state;
      if (state == BS_UP) {
        log_notice("bootstrap: connected to %s as %s (clientId %s); waiting "
                   "for the device to be accepted in Device management > "
                   "Device registration",
                   session_uri(b->sess), c->bootstrap_user, c->device_id);
        attempt = refusals = 0;
        session_subscribe(b->sess, "s/dcr", 1);
        next_request = now; /* the first request right away */
      } else if (state == BS_FAILED) {
        if (code == 4 || code == 5) {
          refusals++;
          log_error("bootstrap: %s refused %s: CONNACK %d (%s) [%d of %d]",
                    session_uri(b->sess), c->bootstrap_user, code,
                    netdiag_connack_meaning(code), refusals,
                    BOOTSTRAP_MAX_REFUSALS);
          if (refusals >= BOOTSTRAP_MAX_REFUSALS) {
            static const char *const keys[] = {"bootstrap_user",
                                               "bootstrap_password",
                                               "bootstrap_password_file"};
            char where[1024];
            config_origins_text(c, "c8y", keys, sizeof keys / sizeof *keys,
                                where, sizeof where);
            log_error("bootstrap: giving up: check %s (bootstrap_user "
                      "defaults to " CFG_BOOTSTRAP_USER ")",
                      where);
            return C8Y_EAUTH;
          }
        } else {
          log_warning("bootstrap: no connection to %s: %s",
                      session_uri(b->sess), text);
          if (code < 0)
            netdiag_explain_async(c); /* names the exact cause */
        }
        long long delay = c->reconnect_min_ms;
        for (int i = 0; i < attempt && delay < c->reconnect_max_ms; i++)
          delay *= 2;
        if (delay > c->reconnect_max_ms)
          delay = c->reconnect_max_ms;
        attempt++;
        next_connect = now + delay;
        pthread_mutex_lock(&b->mu);
        b->state = BS_DOWN;
        pthread_mutex_unlock(&b->mu);
        seen = BS_DOWN;
        state = BS_DOWN;
      }
    }
    if (state == BS_DOWN && now >= next_connect)
      bs_connect(b);
    if (state == BS_UP && now >= next_request) {
      bs_request(b);
      next_request = now + BOOTSTRAP_INTERVAL_MS;
    }
    if (wd > 0 && now >= next_watchdog) {
      notify_send("WATCHDOG=1");
      next_watchdog = now + wd;
    }
    long long until = state == BS_UP     ? next_request
                      : state == BS_DOWN ? next_connect
                                         : now + 1000;
    if (wd > 0 && next_watchdog < until)
      until = next_watchdog;
    int timeout = until > now ? (int)(until - now) : 0;
    if (timeout > 1000)
      timeout = 1000;
    struct pollfd pfd[2] = {{.fd = b->wake_fd, .events = POLLIN},
                            {.fd = stop_fd, .events = POLLIN}};
    int n = poll(pfd, stop_fd >= 0 ? 2 : 1, timeout);
    if (n < 0 && errno != EINTR)
      return C8Y_EIO;
    if (n > 0 && (pfd[0].revents & POLLIN)) {
      uint64_t v;
      if (read(b->wake_fd, &v, sizeof v) < 0) {
        /* nothing pending */
      }
    }
    if (stop_fd >= 0 && n > 0 && (pfd[1].revents & POLLIN)) {
      unsigned char sig;
      while (read(stop_fd, &sig, 1) == 1) {
        if (sig != SIGHUP)
          return C8Y_ECANCELED;
        /* Nothing to reload yet: the session does not exist. */
        log_notice("SIGHUP: ignored while the device is not registered");
      }
    }
  }
}

int bootstrap_ensure(agent_config *cfg, int stop_fd) {
  char err[1024];
  int st = bootstrap_load_stored(cfg, err, sizeof err);
  if (st < 0) {
    log_error("bootstrap: %s", err);
    return st;
  }
  if (st > 0)
    log_info("bootstrap: using the credentials of %s/%s stored in %s/%s",
             cfg->tenant, cfg->user, cfg->state_dir, BOOTSTRAP_FILE);
  if (!bootstrap_wanted(cfg))
    return 0;

  bs b;
  memset(&b, 0, sizeof b);
  b.cfg = cfg;
  pthread_mutex_init(&b.mu, NULL);
  b.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int rc = C8Y_EIO;
  session_callbacks cb = {.ctx = &b,
                          .connected = bs_on_connected,
                          .connect_failed = bs_on_connect_failed,
                          .lost = bs_on_lost,
                          .message = bs_on_message,
                          .delivered = bs_on_delivered};
  if (b.wake_fd < 0) {
    log_error("bootstrap: eventfd: %s", strerror(errno));
    goto out;
  }
  rc = session_new_bootstrap(cfg, &cb, &b.sess, err, sizeof err);
  if (rc != 0) {
    log_error("bootstrap: %s", err);
    goto out;
  }
  notify_send("READY=1\nSTATUS=waiting for device registration (bootstrap)");
  log_notice("bootstrap: no credentials yet for device %s: registering "
             "through %s",
             cfg->device_id, session_uri(b.sess));
  rc = bs_run(&b, stop_fd);
  if (rc == 0) {
    rc = bootstrap_store(cfg->state_dir, b.tenant, b.user, b.password, err,
                         sizeof err);
    if (rc != 0)
      log_error("bootstrap: cannot store the credentials: %s", err);
  }
  if (rc == 0) {
    log_notice("bootstrap: received credentials for %s/%s, stored in %s/%s",
               b.tenant, b.user, cfg->state_dir, BOOTSTRAP_FILE);
    cfg->tenant = b.tenant;
    cfg->user = b.user;
    wipe_free(cfg->password);
    cfg->password = b.password;
    b.tenant = b.user = b.password = NULL;
  }
  pthread_mutex_lock(&b.mu);
  bool up = b.state == BS_UP;
  pthread_mutex_unlock(&b.mu);
  session_disconnect(b.sess, 1000);
  if (!up && rc != 0) {
    /* Paho may still be finishing an attempt on its threads; destroying
     * the client at once races with them (paho.mqtt.c #323). */
    struct timespec grace = {0, 200 * 1000000L};
    nanosleep(&grace, NULL);
  }
out:
  session_free(b.sess);
  if (b.wake_fd >= 0)
    close(b.wake_fd);
  free(b.tenant);
  free(b.user);
  wipe_free(b.password);
  pthread_mutex_destroy(&b.mu);
  return rc;
}
