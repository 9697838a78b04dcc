#include "renew.h"

#include "clock.h"
#include "enroll.h"
#include "log.h"

#include <c8y/plugin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RETRY_MIN_S 60LL
#define RETRY_MAX_S (6LL * 3600)
/* A long sleep is cut short so a changed clock or file is seen. */
#define MAX_WAIT_MS (10LL * 60 * 1000)

enum state { IDLE, REQUESTING, STAGED, TRYING };

/* What the worker gets: copies, as a reload may replace the config. */
typedef struct job {
  char *base_url, *device_id, *key_type, *cert_file, *key_file, *ca_path;
  bool verify_hostname;
  int rc;
  char err[1024];
} job;

struct renew {
  const agent_config *cfg;
  const upstream *up;
  renew_host host;
  enum state state;
  long long next_wall_s; /* when to try next; 0 = compute from the cert */
  int failures;          /* in a row, for the retry delay */
  pthread_t worker;
  atomic_bool done;
  atomic_bool cancel;
  job *job;
  char *staged_cert, *staged_key;
  char *tried_cert, *tried_key; /* the configured names at try time */
};

static void free_job(job *j) {
  if (!j)
    return;
  free(j->base_url);
  free(j->device_id);
  free(j->key_type);
  free(j->cert_file);
  free(j->key_file);
  free(j->ca_path);
  free(j);
}

static char *dup_opt(const char *s) { return s ? strdup(s) : NULL; }

int renew_new(const agent_config *cfg, const upstream *up,
              const renew_host *host, renew **out) {
  renew *r = calloc(1, sizeof *r);
  if (!r)
    return C8Y_ENOMEM;
  r->cfg = cfg;
  r->up = up;
  r->host = *host;
  atomic_init(&r->done, false);
  atomic_init(&r->cancel, false);
  *out = r;
  return 0;
}

static void join_worker(renew *r) {
  if (r->state == REQUESTING) {
    pthread_join(r->worker, NULL);
    r->state = IDLE;
  }
}

void renew_free(renew *r) {
  if (!r)
    return;
  atomic_store(&r->cancel, true);
  join_worker(r);
  free_job(r->job);
  free(r->staged_cert);
  free(r->staged_key);
  free(r->tried_cert);
  free(r->tried_key);
  free(r);
}

const char *renew_state_name(const renew *r) {
  static const char *const names[] = {[IDLE] = "idle",
                                      [REQUESTING] = "requesting",
                                      [STAGED] = "staged",
                                      [TRYING] = "trying"};
  return r ? names[r->state] : "idle";
}

/* The alarm text goes unquoted into a CSV field. */
static void push_alarm(renew *r, const char *severity, const char *text) {
  char line[900];
  if (!text) {
    snprintf(line, sizeof line, "306," ENROLL_RENEW_ALARM);
  } else {
    char clean[800];
    snprintf(clean, sizeof clean, "%s", text);
    for (char *c = clean; *c; c++)
      if (*c == ',' || *c == '"' || (unsigned char)*c < 0x20)
        *c = *c == ',' ? ';' : ' ';
    snprintf(line, sizeof line, "%s," ENROLL_RENEW_ALARM ",%s", severity,
             clean);
  }
  if (upstream_send_line(r->up, UPSTREAM_BY_TEMPLATE, "s/us", line, 0,
                         UPSTREAM_NO_TAG) != 0)
    log_error("cannot queue the certificate renewal alarm");
}

/* Retry after a failure: doubling from a minute, at most 6 h and at most a
 * tenth of the time the certificate has left. */
static void schedule_retry(renew *r) {
  long long now = clock_wall_ms() / 1000;
  long long delay = RETRY_MIN_S;
  for (int i = 0; i < r->failures && delay < RETRY_MAX_S; i++)
    delay *= 2;
  if (delay > RETRY_MAX_S)
    delay = RETRY_MAX_S;
  long long renew_at, not_after;
  char err[512];
  if (enroll_renew_time(r->cfg->cert_file, 100, &renew_at, &not_after, err,
                        sizeof err) == 0 &&
      (not_after - now) / 10 < delay)
    delay = (not_after - now) / 10;
  if (delay < RETRY_MIN_S)
    delay = RETRY_MIN_S;
  r->failures++;
  r->next_wall_s = now + delay;
  log_notice("certificate renewal: next attempt in %lld s", delay);
}

static void *worker_main(void *arg) {
  renew *r = arg;
  job *j = r->job;
  char token[8192] = "";
  if (r->host.bearer &&
      r->host.bearer(r->host.ctx, NULL, token, sizeof token) != 0)
    token[0] = '\0';
  enroll_request req = {.base_url = j->base_url,
                        .device_id = j->device_id,
                        .key_type = j->key_type,
                        .cert_file = j->cert_file,
                        .key_file = j->key_file,
                        .ca_path = j->ca_path,
                        .verify_hostname = j->verify_hostname,
                        .bearer = token[0] ? token : NULL,
                        .cancel = &r->cancel};
  j->rc = enroll_request_certificate(&req, j->err, sizeof j->err);
  /* A token the platform no longer takes (expired, revoked, from before a
   * reconnect) is replaced once over s/uat -> 71, as transfers do. */
  char fresh[sizeof token];
  if (j->rc == C8Y_EAUTH && token[0] &&
      r->host.bearer(r->host.ctx, token, fresh, sizeof fresh) == 0 &&
      strcmp(fresh, token) != 0) {
    log_info("certificate renewal: the JWT was refused; again with a new one");
    req.bearer = fresh;
    j->rc = enroll_request_certificate(&req, j->err, sizeof j->err);
  }
  explicit_bzero(fresh, sizeof fresh);
  explicit_bzero(token, sizeof token);
  atomic_store(&r->done, true);
  r->host.wake(r->host.ctx);
  return NULL;
}

static void start_request(renew *r) {
  const agent_config *c = r->cfg;
  job *j = calloc(1, sizeof *j);
  if (!j || !(j->base_url = dup_opt(c->enroll_url)) ||
      !(j->device_id = dup_opt(c->device_id)) ||
      (c->cert_key_type && !(j->key_type = dup_opt(c->cert_key_type))) ||
      !(j->cert_file = dup_opt(c->cert_file)) ||
      !(j->key_file = dup_opt(c->key_file)) ||
      (c->ca_path && !(j->ca_path = dup_opt(c->ca_path)))) {
    free_job(j);
    log_error("certificate renewal: out of memory");
    schedule_retry(r);
    return;
  }
  j->verify_hostname = c->verify_hostname;
  r->job = j;
  atomic_store(&r->done, false);
  log_notice("certificate renewal: asking %s%s for a new certificate for %s",
             j->base_url, ENROLL_PATH_SIMPLEREENROLL, j->device_id);
  r->state = REQUESTING;
  if (pthread_create(&r->worker, NULL, worker_main, r) != 0) {
    r->state = IDLE;
    free_job(r->job);
    r->job = NULL;
    log_error("certificate renewal: cannot start its thread");
    schedule_retry(r);
  }
}

static void request_finished(renew *r) {
  join_worker(r);
  job *j = r->job;
  r->job = NULL;
  if (j->rc != 0) {
    log_error("certificate renewal failed: %s", j->err);
    char text[1200];
    snprintf(text, sizeof text,
             "Certificate renewal failed: %s. The current certificate stays "
             "in use",
             j->err);
    push_alarm(r, "303", text);
    schedule_retry(r);
    free_job(j);
    return;
  }
  free(r->staged_cert);
  free(r->staged_key);
  r->staged_cert = enroll_staged_path(j->cert_file);
  r->staged_key = enroll_staged_path(j->key_file);
  free(r->tried_cert);
  free(r->tried_key);
  r->tried_cert = j->cert_file;
  r->tried_key = j->key_file;
  j->cert_file = j->key_file = NULL;
  free_job(j);
  if (!r->staged_cert || !r->staged_key || !r->tried_cert) {
    log_error("certificate renewal: out of memory");
    schedule_retry(r);
    return;
  }
  log_notice("certificate renewal: new certificate staged in %s; trying it",
             r->staged_cert);
  r->state = STAGED;
}

void renew_identity_result(renew *r, bool accepted, const char *why) {
  if (!r || r->state != TRYING)
    return;
  r->state = IDLE;
  char err[1024];
  if (!accepted) {
    enroll_discard(r->tried_cert, r->tried_key);
    log_error("certificate renewal: the platform refused the new "
              "certificate (%s); keeping the current one",
              why ? why : "no reason given");
    char text[1200];
    snprintf(text, sizeof text,
             "The platform refused the renewed certificate (%s). The current "
             "certificate stays in use",
             why ? why : "no reason given");
    push_alarm(r, "303", text);
    schedule_retry(r);
    return;
  }
  if (enroll_commit(r->tried_cert, r->tried_key, err, sizeof err) != 0) {
    log_error("certificate renewal: %s", err);
    push_alarm(r, "303", err);
    schedule_retry(r);
    return;
  }
  r->failures = 0;
  r->next_wall_s = 0;
  log_notice("certificate renewal: %s and %s replaced by the renewed pair",
             r->tried_cert, r->tried_key);
  /* The link announces the device next, with the expiry line of the new
   * certificate: that clears c8y_CertificateExpiry. */
  push_alarm(r, NULL, NULL);
}

static long long wait_ms(long long now_ms, long long now_wall_s,
                         long long due_s) {
  long long ms = (due_s - now_wall_s) * 1000;
  if (ms > MAX_WAIT_MS)
    ms = MAX_WAIT_MS;
  if (ms < 0)
    ms = 0;
  return now_ms + ms;
}

long long renew_step(renew *r, long long now_ms, bool link_up) {
  if (!r)
    return -1;
  const agent_config *c = r->cfg;
  switch (r->state) {
  case REQUESTING:
    if (atomic_load(&r->done))
      request_finished(r);
    return r->state == STAGED ? now_ms : -1;
  case STAGED:
    if (!link_up)
      return -1; /* a connect event wakes the loop */
    if (r->host.try_identity(r->host.ctx, r->staged_cert, r->staged_key) == 0) {
      r->state = TRYING;
      return -1;
    }
    return now_ms + 1000;
  case TRYING:
    return -1;
  case IDLE:
    break;
  }
  if (!c->cert_file || c->cert_renew_percent <= 0 || !c->enroll_url)
    return -1;
  long long now_s = clock_wall_ms() / 1000;
  if (r->next_wall_s == 0) {
    long long not_after;
    char err[512];
    if (enroll_renew_time(c->cert_file, c->cert_renew_percent, &r->next_wall_s,
                          &not_after, err, sizeof err) != 0) {
      log_warning("certificate renewal: %s", err);
      r->next_wall_s = now_s + RETRY_MIN_S;
    } else {
      char when[64] = "?";
      time_t t = (time_t)r->next_wall_s;
      struct tm tm;
      if (gmtime_r(&t, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
      log_info("certificate renewal due on %s (%d%% of its lifetime)", when,
               c->cert_renew_percent);
    }
  }
  if (now_s < r->next_wall_s)
    return wait_ms(now_ms, now_s, r->next_wall_s);
  if (!link_up)
    return -1;
  start_request(r);
  return r->state == IDLE ? wait_ms(now_ms, now_s, r->next_wall_s) : -1;
}
