/* itest: a plugin whose behaviour the integration tests script through the
 * text of a c8y_Command (511) operation, so every lifecycle path of the core
 * can be driven from the simulator:
 *   ok <result>          succeed synchronously with <result>
 *   fail <reason>        fail synchronously
 *   error                return C8Y_EIO without completing
 *   async <ms> <result>  succeed from another thread after <ms>
 *   slow <ms>            log "itest: slow started" (the operation is
 *                        journaled by then), block the handler <ms>, then
 *                        succeed
 *   gate <path>          log "itest: gate waiting", block the handler until
 *                        <path> exists (at most 120 s), then succeed with
 *                        "gate opened": the test decides when it ends
 *   hang                 return C8Y_PENDING and only give up (op_fail) once
 *                        op_cancelled says the agent timed it out
 *   reboot               op_complete_on_reboot, log "itest: reboot armed"
 *                        (the mark is in the journal), then C8Y_PENDING
 *                        forever
 *   order <tag>          append <tag> to <state_dir>/order, succeed
 *   resume <tag>         op_resume_after_restart, log "itest: resume armed"
 *                        and stay PENDING; handed again after a restart it
 *                        succeeds with "resumed rebooted=<0|1> <tag>"
 *   resume-loop          like resume, but never completes, also when
 *                        resumed (an action that keeps killing the agent)
 *   emit                 send an event, raise + clear an alarm, a 113 and a
 *                        custom-template line (root and child), succeed
 *   twice                succeed from another thread, then complete the
 *                        same handle again and log what that returned
 *   stuck                block the handler for 10 minutes, ignoring
 *                        op_cancelled
 *   fds                  succeed with what a process the plugin starts
 *                        inherited: "sockets=<n> files=<n>" beyond 0-2
 *   leave                start `sleep 600 & exec sleep 600` in a process
 *                        group of its own and succeed with its pid, never
 *                        waiting for it (what the agent ends at its stop)
 * 510 (c8y_Restart) behaves like "reboot" (and logs the same line). A producer
 * "itest" emits a counter every `interval_ms` (0 = no producer). With `burst =
 * N`, init queues "200,c8y_Seq,n,<i>" for i = 1..N once per state dir (a marker
 * file keeps a restarted agent from queueing them again) and logs "itest: burst
 * of N queued": fault tests and benchmarks count them. With `hang_producer =
 * true` the first produce call of the process never returns (logs "itest:
 * producer hanging"), to test bounded stops. `child = <id>` registers a child
 * device whose operations reach the same handlers; `xid = <X-ID>` registers a
 * handler for message id 777 on s/dc/<X-ID> that logs "itest: message 777
 * <fields...>". */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const c8y_api *api;
static const char *xid; /* custom template collection, or NULL */

typedef struct job {
  c8y_operation *op;
  int ms;
  char result[256];
  int hang;
  int twice;
} job;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void *job_thread(void *arg) {
  job *j = arg;
  if (j->twice) {
    api->op_succeed(j->op, "first");
    sleep_ms(200); /* the agent has finished and released it by now */
    int rc = api->op_succeed(j->op, "second");
    int rc2 = api->op_fail(j->op, "third");
    api->log(NULL, C8Y_LOG_NOTICE, "itest: second completion returned %d %d",
             rc, rc2);
  } else if (j->hang) {
    for (int i = 0; i < 6000 && !api->op_cancelled(j->op); i++)
      sleep_ms(10);
    int rc = api->op_fail(j->op, "gave up after cancellation");
    api->log(NULL, C8Y_LOG_NOTICE, "itest: late completion returned %d (%s)",
             rc, api->status_str(rc));
  } else {
    sleep_ms(j->ms);
    api->op_succeed(j->op, j->result);
  }
  free(j);
  return NULL;
}

static int spawn(job *j) {
  pthread_t t;
  if (pthread_create(&t, NULL, job_thread, j) != 0) {
    free(j);
    return C8Y_ENOMEM;
  }
  pthread_detach(t);
  return C8Y_PENDING;
}

/* op_complete_on_reboot; once it returned the mark is journaled, which the
 * log line tells a test that is about to kill the agent. */
static int arm_reboot(c8y_plugin *self, c8y_operation *op) {
  int rc = api->op_complete_on_reboot(op);
  if (rc == C8Y_OK)
    api->log(self, C8Y_LOG_NOTICE, "itest: reboot armed");
  return rc == C8Y_OK ? C8Y_PENDING : rc;
}

static int on_command(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  const char *text = api->op_field(op, 0);
  if (!text)
    return api->op_fail(op, "no command text");
  if (strncmp(text, "ok ", 3) == 0)
    return api->op_succeed(op, text + 3);
  if (strncmp(text, "fail ", 5) == 0)
    return api->op_fail(op, text + 5);
  if (strcmp(text, "error") == 0)
    return C8Y_EIO;
  if (strncmp(text, "async ", 6) == 0 || strcmp(text, "hang") == 0) {
    job *j = calloc(1, sizeof *j);
    if (!j)
      return C8Y_ENOMEM;
    j->op = op;
    j->hang = strcmp(text, "hang") == 0;
    if (!j->hang)
      sscanf(text + 6, "%d %255[^\n]", &j->ms, j->result);
    return spawn(j);
  }
  if (strcmp(text, "twice") == 0) {
    job *j = calloc(1, sizeof *j);
    if (!j)
      return C8Y_ENOMEM;
    j->op = op;
    j->twice = 1;
    return spawn(j);
  }
  if (strcmp(text, "fds") == 0) {
    /* The shell's own descriptors, as a process a plugin starts sees them. */
    FILE *p = popen("for f in /proc/$$/fd/*; do n=${f##*/}; "
                    "[ \"$n\" -gt 2 ] && readlink \"$f\"; done",
                    "r");
    if (!p)
      return api->op_fail(op, "popen failed");
    char line[512];
    int sockets = 0, files = 0;
    while (fgets(line, sizeof line, p)) {
      if (strncmp(line, "socket:", 7) == 0)
        sockets++;
      else if (strncmp(line, "pipe:", 5) != 0)
        files++;
    }
    pclose(p);
    char result[64];
    snprintf(result, sizeof result, "sockets=%d files=%d", sockets, files);
    return api->op_succeed(op, result);
  }
  if (strcmp(text, "leave") == 0) {
    pid_t pid = fork();
    if (pid < 0)
      return api->op_fail(op, "fork failed");
    if (pid == 0) {
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", "sleep 600 & exec sleep 600", (char *)NULL);
      _exit(127);
    }
    setpgid(pid, pid); /* whichever of the two runs first */
    char result[32];
    snprintf(result, sizeof result, "%d", (int)pid);
    return api->op_succeed(op, result);
  }
  if (strcmp(text, "stuck") == 0) {
    sleep_ms(600000);
    return api->op_succeed(op, "stuck done");
  }
  if (strncmp(text, "gate ", 5) == 0) {
    api->log(self, C8Y_LOG_NOTICE, "itest: gate waiting");
    for (int waited = 0; access(text + 5, F_OK) != 0; waited += 10) {
      if (waited >= 120000)
        return api->op_fail(op, "gate never opened");
      sleep_ms(10);
    }
    return api->op_succeed(op, "gate opened");
  }
  if (strncmp(text, "slow ", 5) == 0) {
    api->log(self, C8Y_LOG_NOTICE, "itest: slow started");
    sleep_ms(atoi(text + 5));
    return api->op_succeed(op, "slow done");
  }
  if (strcmp(text, "resume-loop") == 0) {
    int rc = api->op_resumed(op) ? C8Y_OK : api->op_resume_after_restart(op);
    if (rc == C8Y_OK)
      api->log(self, C8Y_LOG_NOTICE, "itest: resume armed");
    return rc == C8Y_OK ? C8Y_PENDING : rc;
  }
  if (strncmp(text, "resume ", 7) == 0) {
    if (api->op_resumed(op)) {
      char result[300];
      snprintf(result, sizeof result, "resumed rebooted=%d %s",
               api->op_rebooted(op) ? 1 : 0, text + 7);
      return api->op_succeed(op, result);
    }
    int rc = api->op_resume_after_restart(op);
    if (rc == C8Y_OK)
      api->log(self, C8Y_LOG_NOTICE, "itest: resume armed");
    return rc == C8Y_OK ? C8Y_PENDING : rc;
  }
  if (strcmp(text, "reboot") == 0)
    return arm_reboot(self, op);
  if (strncmp(text, "order ", 6) == 0) {
    char path[4096];
    snprintf(path, sizeof path, "%s/order", api->state_dir(self));
    FILE *f = fopen(path, "a");
    if (!f)
      return api->op_fail(op, "cannot open the order file");
    fprintf(f, "%s\n", text + 6);
    fclose(f);
    return api->op_succeed(op, text + 6);
  }
  if (strcmp(text, "emit") == 0) {
    const char *dev = api->op_device(op);
    const char *child = strcmp(dev, api->device_id(self)) == 0 ? NULL : dev;
    const char *inv[] = {"113", "a=1\nb=\"two\""};
    const char *custom[] = {"999", "25"};
    int rc = api->send_event(self, child, "itest_Event", "hello, event", 0);
    if (rc == C8Y_OK)
      rc = api->raise_alarm(self, child, C8Y_MAJOR, "itest_Alarm", "raised");
    if (rc == C8Y_OK)
      rc = api->clear_alarm(self, child, "itest_Alarm");
    if (rc == C8Y_OK)
      rc = api->send_static(self, child, inv, 2);
    if (rc == C8Y_OK && xid)
      rc = api->send_custom(self, xid, child, custom, 2);
    return rc == C8Y_OK ? api->op_succeed(op, dev) : rc;
  }
  return api->op_fail(op, "unknown itest command");
}

static void on_message(c8y_plugin *self, const c8y_message *msg, void *ud) {
  (void)ud;
  char fields[512] = "";
  for (size_t i = 0; i < api->msg_field_count(msg); i++) {
    strncat(fields, " ", sizeof fields - strlen(fields) - 1);
    strncat(fields, api->msg_field(msg, i), sizeof fields - strlen(fields) - 1);
  }
  api->log(self, C8Y_LOG_NOTICE, "itest: message %s%s", api->msg_id(msg),
           fields);
}

static int on_restart(c8y_plugin *self, c8y_operation *op, void *ud) {
  (void)ud;
  return arm_reboot(self, op);
}

static long counter;

static int hang_producer;
static int hung; /* once per process: a reloaded instance must work */

static int produce(c8y_plugin *self, c8y_batch *b, void *ud) {
  (void)ud;
  if (hang_producer && !hung) {
    hung = 1;
    api->log(self, C8Y_LOG_NOTICE, "itest: producer hanging");
    for (;;)
      sleep_ms(1000);
  }
  return api->batch_add(b, "c8y_Counter", "n", (double)++counter, "");
}

static int queue_burst(c8y_plugin *self, int64_t n) {
  char marker[4096];
  snprintf(marker, sizeof marker, "%s/burst-done", api->state_dir(self));
  FILE *f = fopen(marker, "r");
  if (f) {
    fclose(f);
    return C8Y_OK;
  }
  for (int64_t i = 1; i <= n; i++) {
    char value[32];
    snprintf(value, sizeof value, "%lld", (long long)i);
    const char *fields[] = {"200", "c8y_Seq", "n", value};
    int rc = api->send_static(self, NULL, fields, 4);
    if (rc != C8Y_OK) {
      api->log(self, C8Y_LOG_ERROR, "itest: burst stopped at %lld: %s",
               (long long)i, api->status_str(rc));
      return rc;
    }
  }
  f = fopen(marker, "w");
  if (f)
    fclose(f);
  api->log(self, C8Y_LOG_NOTICE, "itest: burst of %lld queued", (long long)n);
  return C8Y_OK;
}

static int init(c8y_plugin *self, const c8y_api *a, void **ud) {
  (void)ud;
  api = a;
  int64_t timeout_ms, interval_ms, burst;
  if (api->config_int(self, "timeout_ms", 0, &timeout_ms) != C8Y_OK ||
      api->config_int(self, "interval_ms", 0, &interval_ms) != C8Y_OK ||
      api->config_int(self, "burst", 0, &burst) != C8Y_OK ||
      api->config_bool(self, "hang_producer", 0, &hang_producer) != C8Y_OK)
    return C8Y_EINVAL;
  if (burst > 0 && queue_burst(self, burst) != C8Y_OK)
    return C8Y_EIO;
  /* An inventory line queued at init, before the agent has connected (as
   * the software plugin's 143/140 are). */
  const char *init_static = api->config_string(self, "init_static", NULL);
  if (init_static) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", init_static);
    const char *fields[16];
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && n < 16;
         tok = strtok_r(NULL, ",", &save))
      fields[n++] = tok;
    if (n == 0 || api->send_static(self, NULL, fields, n) != C8Y_OK)
      return C8Y_EINVAL;
  }
  int rc =
      api->add_operation(self, "511", (uint32_t)timeout_ms, on_command, NULL);
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "510", 0, on_restart, NULL);
  const char *child = api->config_string(self, "child", NULL);
  if (rc == C8Y_OK && child)
    rc = api->add_child(self, child, "itest child", "itest_Child");
  xid = api->config_string(self, "xid", NULL);
  if (rc == C8Y_OK && xid)
    rc = api->add_message_handler(self, xid, "777", on_message, NULL);
  if (rc == C8Y_OK && interval_ms > 0)
    rc = api->add_producer(self, "itest", (uint32_t)interval_ms, produce, NULL);
  return rc;
}

C8Y_PLUGIN(.name = "itest", .version = "1.0", .init = init);
