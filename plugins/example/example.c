/* example: the smallest useful c8y-agent plugin. Copy this file to start.
 *
 * It sends the system load average as measurement c8y_LoadAverage every
 * `interval` seconds, and answers c8y_MeasurementRequestOperation (517,
 * "take a reading now") by sending one immediately. See README.md. */
#define _POSIX_C_SOURCE 200809L
#include <c8y/plugin.h>

#include <stdio.h>
#include <stdlib.h>

/* Plugin state lives in a struct handed back through user_data, not in
 * globals: every callback receives it. */
typedef struct example {
  const c8y_api *api; /* the agent's services; valid until fini returns */
  const char *path;   /* borrowed from the config until fini returns */
} example;

/* Reads the three load averages; 0 or -1 (the reason is logged). */
static int read_load(c8y_plugin *self, const example *ex, double load[3]) {
  FILE *f = fopen(ex->path, "r");
  int n = f ? fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) : -1;
  if (f)
    fclose(f);
  if (n != 3) {
    ex->api->log(self, C8Y_LOG_WARNING, "%s: cannot read the load average",
                 ex->path);
    return -1;
  }
  return 0;
}

/* The three samples; they become one 201 line of type c8y_LoadAverage. */
static int add_load(const c8y_api *api, c8y_batch *b, const double load[3]) {
  api->batch_set_type(b, "c8y_LoadAverage");
  api->batch_add(b, "c8y_LoadAverage", "1min", load[0], NULL);
  api->batch_add(b, "c8y_LoadAverage", "5min", load[1], NULL);
  return api->batch_add(b, "c8y_LoadAverage", "15min", load[2], NULL);
}

/* Producer: called on the plugin's own worker every interval. The agent
 * queues what was added to `out` durably after the call. */
static int produce(c8y_plugin *self, c8y_batch *out, void *user_data) {
  example *ex = user_data;
  double load[3];
  if (read_load(self, ex, load) != 0)
    return C8Y_EIO; /* the batch is dropped; the agent logs the status */
  return add_load(ex->api, out, load);
}

/* Operation handler for 517: the agent already sent 501 (EXECUTING). Either
 * complete the operation here and return C8Y_OK, or return C8Y_PENDING and
 * complete it later (from any thread). Fields: 0 = requestName (ignored). */
static int on_measurement_request(c8y_plugin *self, c8y_operation *op,
                                  void *user_data) {
  example *ex = user_data;
  double load[3];
  if (read_load(self, ex, load) != 0)
    return ex->api->op_fail(op, "cannot read the load average");
  /* Outside a producer: a batch of our own (ABI 1.2), queued at commit. */
  c8y_batch *b = ex->api->batch_begin(self);
  if (!b)
    return ex->api->op_fail(op, "the agent is stopping");
  int rc = add_load(ex->api, b, load);
  if (rc == C8Y_OK)
    rc = ex->api->batch_commit(b); /* releases b */
  else
    ex->api->batch_discard(b);
  if (rc != C8Y_OK)
    return ex->api->op_fail(op, ex->api->status_str(rc));
  return ex->api->op_succeed(op, NULL);
}

/* init: read and check every config key, then register. Any error returns
 * < 0; the agent rolls back the registrations and unloads the plugin. */
static int init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  example *ex = calloc(1, sizeof *ex);
  if (!ex)
    return C8Y_ENOMEM;
  ex->api = api;
  ex->path = api->config_string(self, "path", "/proc/loadavg");
  int64_t interval;
  int rc = api->config_int(self, "interval", 60, &interval);
  if (rc == C8Y_OK && (interval < 1 || interval > 86400)) {
    api->log(self, C8Y_LOG_ERROR, "interval: must be 1..86400 s, got %lld",
             (long long)interval);
    rc = C8Y_EINVAL;
  } /* (config_int logs bad values itself) */
  if (rc == C8Y_OK)
    rc = api->add_producer(self, "loadavg", (uint32_t)interval * 1000u, produce,
                           ex);
  if (rc == C8Y_OK) /* timeout 0: the agent's default */
    rc = api->add_operation(self, "517", 0, on_measurement_request, ex);
  if (rc != C8Y_OK) {
    free(ex); /* fini is not called when init fails */
    return rc;
  }
  *user_data = ex;
  return C8Y_OK;
}

/* Called once after the last callback returned. */
static void fini(c8y_plugin *self, void *user_data) { free(user_data); }

/* The one exported symbol; the name selects the [plugin.example] section. */
C8Y_PLUGIN(.name = "example", .version = "1.0.0", .init = init, .fini = fini);
