/* config: agent.ini (+ conf.d/ *.ini drop-ins, sorted by name, later values
 * win) parsed with inih. Every problem is reported as one line
 * "<file>:<line>: [section] key: reason". */
#ifndef C8Y_CONFIG_H
#define C8Y_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

typedef struct config_entry {
  char *section; /* e.g. "plugin.shell" */
  char *key;
  char *value;
  char *file; /* where it was set (last writer wins) */
  unsigned line;
  bool used; /* set by config_plugin_lookup; unread keys get reported */
} config_entry;

typedef struct agent_config {
  char *path;     /* main file as given */
  bool local_sim; /* no tenant configured: talk to the local simulator */

  /* [c8y] */
  char *tenant;
  char *user;
  char *password; /* from password= or the first line of password_file= */
  char *password_file;
  char *host;
  int port; /* default 8883 with tls, 1883 without */
  bool tls;
  bool verify_hostname; /* default true; false logs a loud warning */
  char *ca_path;        /* file or directory; NULL = system default */
  char *cert_file;      /* X.509 client auth (clientId must be the cert CN) */
  char *key_file;
  int keepalive;        /* seconds, default 60 */
  int qos;              /* data and s/ds; statuses/registration use >= 1 */
  int reconnect_min_ms; /* backoff, default 1000 */
  int reconnect_max_ms; /* default 60000 */
  char *http_url; /* REST base without trailing '/'; default https://<host> */
  bool http_jwt;  /* http_auth: JWT over s/uat (cert devices) or Basic */
  /* Device bootstrap (s/ucr -> 70 on s/dcr) when no tenant/cert is set. */
  bool bootstrap;
  char *bootstrap_user;     /* "<tenant>/<user>", management/devicebootstrap */
  char *bootstrap_password; /* password= or bootstrap_password_file= */
  int cert_warn_days;       /* c8y_CertificateExpiry alarm window; 0 = off */
  /* Certificate authority (enroll/renew modules): the one-time password
   * (enroll_otp= or the first line of enroll_otp_file=, NULL once used and
   * removed), its file, the EST base URL (default http_url), the key type
   * (NULL = ec-p256) and when to renew (percent of the lifetime, 0 = never;
   * default 67). */
  char *enroll_otp;
  char *enroll_otp_file;
  char *enroll_url;
  char *cert_key_type;
  int cert_renew_percent;

  /* [device] */
  char *device_id;   /* mandatory unless local_sim (then "c8y-agent-local") */
  char *template_id; /* optional default template X-ID */
  char *device_name; /* default "c8y-agent <device_id>" */
  char *device_type; /* default "c8y_Linux" */
  int required_interval; /* 117, minutes, default 60; 0 = don't send */
  char *hw_serial, *hw_model, *hw_revision; /* 110; empty = read /sys */

  /* [agent] */
  char *plugin_dir;
  char *state_dir;
  int log_level;     /* LOG_LVL_*, default info */
  int op_timeout_s;  /* default operation handler timeout, default 600 */
  int stop_grace_ms; /* on stop: time running handlers get, default 3000 */
  long long queue_max_bytes;    /* durable queue cap, default 48 MiB */
  long long transfer_max_bytes; /* largest download, default 1 GiB */

  /* [api]: the local Unix socket (docs/local-api.md) */
  bool api_enabled;     /* default true */
  char *api_socket;     /* default <rundir>/api.sock, <state_dir>/api.sock for
                           the local simulator */
  char *api_socket_alt; /* with the default path only: <state_dir>/api.sock,
                           for when the runtime dir cannot be created */
  unsigned api_mode;    /* default 0660; never world-accessible */
  char *api_group;      /* NULL = only root and the agent's user */
  long long api_gid;    /* -1 when api_group is NULL */
  int plugin_max_producers; /* per plugin, default 64 */
  /* Lines one plugin may queue per second on average (0 = no limit),
   * default 1000; bursts of up to 100 s worth pass. */
  long long plugin_max_lines_per_s;

  /* every key of every [plugin.*] section, in file order */
  config_entry *entries;
  size_t nentries;

  /* "<file>:<line>" where each core key was set (config_origin) */
  char **origins;
} agent_config;

#define CFG_BOOTSTRAP_USER "management/devicebootstrap"

/* Local-simulator defaults used when no tenant is configured. */
#define CFG_LOCAL_HOST "127.0.0.1"
#define CFG_LOCAL_PORT 18830
#define CFG_LOCAL_TENANT "local"
#define CFG_LOCAL_USER "device"
#define CFG_LOCAL_PASSWORD "local-sim-password"
#define CFG_LOCAL_HTTP_URL "http://127.0.0.1:18831"

/* sun_path holds 108 bytes including the NUL. */
#define CFG_API_SOCKET_MAX 108

/* Loads `path` and its conf.d drop-ins (directory "conf.d" next to it).
 * Returns 0, or C8Y_EINVAL with one line in err naming the cause (a bad
 * value, an unreadable file, out of memory). On error *out is left zeroed. */
int config_load(const char *path, agent_config *out, char *err, size_t errlen);
void config_free(agent_config *c);

/* "d:<device_id>[:<template_id>]", malloc'ed. */
char *config_client_id(const agent_config *c);
/* "<tenant>/<user>", malloc'ed. */
char *config_username(const agent_config *c);

/* "[section] key" of the first key that differs between the two and that a
 * reload cannot apply (the MQTT session, queue, journal, HTTP client or local
 * socket were built from it), or NULL when a reload can take `loaded`.
 * Values are compared as loaded: defaults, password_file and stored
 * credentials applied. Which keys these are is marked in config.c's key
 * table. */
const char *config_restart_only_change(const agent_config *running,
                                       const agent_config *loaded);

/* "<file>:<line>" of the assignment of core key [section] key that won
 * (agent.ini or a conf.d drop-in), or NULL when it was not set. Borrowed
 * until config_free. */
const char *config_origin(const agent_config *c, const char *section,
                          const char *key);

/* "[section] k1 (<file>:<line>), k2 (not set), ..." for messages that tell
 * the operator which settings to fix, e.g. after the platform refused the
 * credentials: a key set in a conf.d drop-in is named there. Keys never set
 * are left out unless none of `keys` was set, so alternatives ("password",
 * "password_file") can both be passed. */
void config_origins_text(const agent_config *c, const char *section,
                         const char *const *keys, size_t nkeys, char *out,
                         size_t len);

/* Entry of [plugin.<plugin>] key, or NULL; marks it used. */
config_entry *config_plugin_lookup(agent_config *c, const char *plugin,
                                   const char *key);
/* Parses a boolean the way the whole config does (true/false/yes/no/on/off/
 * 1/0). Returns 0 or C8Y_EINVAL. */
int config_parse_bool(const char *s, bool *out);
/* Parses a base-10 integer in [min, max]. Returns 0 or C8Y_EINVAL. */
int config_parse_int(const char *s, long long min, long long max,
                     long long *out);

#endif
