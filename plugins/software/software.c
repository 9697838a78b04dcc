/* software: installed-package list (140/141 with 143) and c8y_SoftwareUpdate
 * (528 and 529) through configurable package-manager commands.
 *
 * An item with an http(s) URL is downloaded by the agent (api->download) and
 * installed as a package file; plain names go to the package manager. When
 * the agent is not root (the shipped service), the actions are asked of the
 * privileged helper c8y-agent-priv (cmn_proc_priv_run), which runs them in its
 * own unit: an update of the agent itself survives the agent's restart, and the
 * operation, kept across the restart (op_resume_after_restart), is then
 * decided by checking the installed versions.
 *
 * Values from the platform never reach a shell unquoted: placeholders in the
 * commands are replaced by single-quoted values, and the same values are in
 * the environment (C8Y_SW_NAME, ...). */
#define _GNU_SOURCE
#include <c8y/plugin.h>

#include "cmn_cfg.h"
#include "cmn_csv.h"
#include "cmn_op.h"
#include "cmn_path.h"
#include "cmn_proc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SW_LINE_MAX C8Y_MAX_LINE
#define SW_LIST_OUT_MAX (64u * 1024 * 1024)

/* ---- Commands ---------------------------------------------------------------
 */

static const char APT_LIST[] =
    "dpkg-query -W -f '${db:Status-Abbrev}\\t${Package}\\t${Version}\\n' | "
    "awk -F '\\t' 'substr($1, 2, 1) == \"i\" { print $2 \"\\t\" $3 }'";
static const char RPM_LIST[] =
    "rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n'";
static const char APT_INSTALL[] = "apt-get install -y {name}={version}";
static const char APT_INSTALL_ANY[] = "apt-get install -y {name}";
static const char APT_REMOVE[] = "apt-get remove -y {name}";
static const char RPM_INSTALL[] = "yum install -y {name}-{version}";
static const char RPM_INSTALL_ANY[] = "yum install -y {name}";
static const char RPM_REMOVE[] = "yum remove -y {name}";
static const char DPKG_INSTALL_FILE[] = "dpkg -i {file}";
static const char RPM_INSTALL_FILE[] = "rpm -U --replacepkgs {file}";

static int in_path(const char *prog) {
  const char *path = getenv("PATH");
  if (!path || !*path)
    path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
  char buf[4096];
  while (*path) {
    size_t n = strcspn(path, ":");
    if (n > 0 &&
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog) <
            (int)sizeof(buf) &&
        access(buf, X_OK) == 0)
      return 1;
    path += n;
    if (*path == ':')
      path++;
  }
  return 0;
}

typedef struct sb {
  char *s;
  size_t len, cap;
} sb;

static int sb_add(sb *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p)
      return C8Y_ENOMEM;
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
  return C8Y_OK;
}

/* 'it'\''s' - safe inside any sh word. */
static int sb_add_quoted(sb *b, const char *v) {
  int rc = sb_add(b, "'", 1);
  for (; rc == C8Y_OK && *v; v++)
    rc = *v == '\'' ? sb_add(b, "'\\''", 4) : sb_add(b, v, 1);
  return rc == C8Y_OK ? sb_add(b, "'", 1) : rc;
}

typedef struct sw_item {
  const char *name, *version, *type, *url, *action;
  const char *file; /* downloaded package file, "" if none */
} sw_item;

#define SW_NKEYS 6

/* Replaces {name} {version} {type} {url} {action} {file} by quoted values.
 * Returns a malloc'ed command or NULL. */
static char *sw_expand(const char *tmpl, const sw_item *it) {
  static const char *const keys[SW_NKEYS] = {"{name}", "{version}", "{type}",
                                             "{url}",  "{action}",  "{file}"};
  const char *vals[SW_NKEYS] = {it->name, it->version, it->type,
                                it->url,  it->action,  it->file};
  sb b = {0};
  int rc = sb_add(&b, "", 0);
  while (rc == C8Y_OK && *tmpl) {
    size_t k = 0;
    while (k < SW_NKEYS && strncmp(tmpl, keys[k], strlen(keys[k])) != 0)
      k++;
    if (k < SW_NKEYS) {
      rc = sb_add_quoted(&b, vals[k]);
      tmpl += strlen(keys[k]);
    } else {
      rc = sb_add(&b, tmpl, 1);
      tmpl++;
    }
  }
  if (rc != C8Y_OK) {
    free(b.s);
    return NULL;
  }
  return b.s;
}

/* ---- Plugin state -----------------------------------------------------------
 */

typedef struct sw {
  c8y_plugin *self;
  const c8y_api *api;
  const char *list_command;
  const char *type;
  const char *install_command;
  const char *install_any; /* default without a version; NULL if custom */
  const char *remove_command;
  const char *install_file_command;
  const char *helper_socket;
  const char *helper_verdict; /* c8y-agent-priv's self-upgrade verdict */
  int use_helper;             /* actions through c8y-agent-priv */
  int rollback_timeout_s;     /* read by the helper; checked and shown here */
  int download;               /* URL items: download and install the file */
  int timeout_s;
  int list_timeout_s;
  int resume_wait_s;
  /* The update running on `thread` (one at a time; the agent runs the
   * operations of one fragment in order anyway). */
  pthread_mutex_t mu;
  bool thread_live;        /* under mu */
  atomic_bool thread_done; /* set by the thread as its last step */
  atomic_bool stopping;    /* fini: give up waiting, keep the op */
  pthread_t thread;
  c8y_operation *op;
} sw;

/* ---- Installed list (140 + 141...) ------------------------------------------
 */

typedef struct sw_chunk {
  int publish;
  const char **fields;
  size_t n;   /* fields used, including the template id */
  size_t len; /* encoded line length */
  size_t sent;
} sw_chunk;

static int sw_flush(sw *s, sw_chunk *c) {
  c->fields[0] = c->sent == 0 ? "140" : "141";
  int rc =
      c->publish ? s->api->send_static(s->self, NULL, c->fields, c->n) : C8Y_OK;
  if (rc < 0)
    s->api->log(s->self, C8Y_LOG_ERROR, "cannot send %s software list: %s",
                c->fields[0], s->api->status_str(rc));
  c->sent++;
  c->n = 1;
  c->len = 3;
  return rc < 0 ? rc : C8Y_OK;
}

/* Called for each listed package (with ctx) when set. */
typedef void (*sw_seen_fn)(void *ctx, const char *name, const char *version);

/* Runs list_command and publishes the list, the first line as 140 (set) and
 * the rest as 141 (append), each within SW_LINE_MAX. `seen` (nullable) sees
 * every package listed; without `publish` nothing is sent. */
static int sw_list(sw *s, sw_seen_fn seen, void *seen_ctx, int publish) {
  const c8y_api *api = s->api;
  cmn_proc_opts o = {
      .timeout_s = s->list_timeout_s, .api = api, .out_cap = SW_LIST_OUT_MAX};
  cmn_proc_result r;
  int rc = cmn_proc_shell(s->list_command, &o, &r);
  if (rc != 0 || r.exit_code != 0) {
    char desc[600];
    cmn_proc_describe(&r, rc, desc, sizeof(desc));
    api->log(s->self, C8Y_LOG_ERROR,
             "list_command failed (%s); software list not reported", desc);
    free(r.out);
    return rc != 0 ? rc : C8Y_EIO;
  }
  if (r.out_truncated)
    api->log(s->self, C8Y_LOG_WARNING,
             "list_command printed more than %u bytes; the rest is ignored",
             SW_LIST_OUT_MAX);
  size_t lines = 1;
  for (size_t i = 0; i < r.out_len; i++)
    lines += r.out[i] == '\n';
  /* A chunk holds at most SW_LINE_MAX / 4 packages (",a,b,t," each). */
  size_t cap = 1 + 4 * (lines < SW_LINE_MAX / 4 ? lines : SW_LINE_MAX / 4);
  sw_chunk c = {publish, calloc(cap, sizeof(char *)), 1, 3, 0};
  if (!c.fields) {
    free(r.out);
    return C8Y_ENOMEM;
  }
  size_t total = 0, bad = 0, bad_line = 0, too_long = 0, lineno = 0;
  size_t type_len = cmn_csv_len(s->type);
  rc = C8Y_OK;
  for (char *line = r.out, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    lineno++;
    line[strcspn(line, "\r")] = '\0';
    char *tab = strchr(line, '\t');
    if (!line[0])
      continue; /* blank lines carry no package */
    if (!tab || tab == line || !tab[1]) {
      if (bad++ == 0)
        bad_line = lineno;
      continue;
    }
    *tab = '\0';
    const char *name = line, *version = tab + 1;
    if (seen)
      seen(seen_ctx, name, version);
    size_t add =
        1 + cmn_csv_len(name) + 1 + cmn_csv_len(version) + 1 + type_len + 1;
    if (3 + add > SW_LINE_MAX) {
      too_long++;
      continue;
    }
    if (c.n > 1 && c.len + add > SW_LINE_MAX) {
      int frc = sw_flush(s, &c);
      if (frc < 0)
        rc = frc;
    }
    c.fields[c.n++] = name;
    c.fields[c.n++] = version;
    c.fields[c.n++] = s->type;
    c.fields[c.n++] = "";
    c.len += add;
    total++;
  }
  if (c.n > 1) {
    int frc = sw_flush(s, &c);
    if (frc < 0)
      rc = frc;
  } else if (c.sent == 0 && publish) {
    const char *empty[] = {"140", "", "", "", ""};
    rc = api->send_static(s->self, NULL, empty, 5);
    if (rc < 0)
      api->log(s->self, C8Y_LOG_ERROR, "cannot send 140 software list: %s",
               api->status_str(rc));
  }
  if (bad)
    api->log(s->self, C8Y_LOG_WARNING,
             "list_command: %zu line(s) are not name<TAB>version and were "
             "skipped (first: line %zu)",
             bad, bad_line);
  if (too_long)
    api->log(s->self, C8Y_LOG_WARNING,
             "list_command: %zu package(s) too long for one SmartREST line "
             "were skipped",
             too_long);
  if (publish)
    api->log(s->self, C8Y_LOG_INFO, "reported %zu packages in %zu line(s)",
             total, c.sent ? c.sent : 1);
  free(c.fields);
  free(r.out);
  return rc < 0 ? rc : C8Y_OK;
}

static int sw_report(sw *s) { return sw_list(s, NULL, NULL, 1); }

/* ---- 528 / 529 c8y_SoftwareUpdate -------------------------------------------
 */

static void sw_item_at(const c8y_api *api, c8y_operation *op, size_t stride,
                       size_t i, const char *type, sw_item *it) {
  size_t b = i * stride;
  it->name = api->op_field(op, b);
  it->version = api->op_field(op, b + 1);
  it->type = stride == 5 ? api->op_field(op, b + 2) : "";
  it->url = api->op_field(op, b + stride - 2);
  it->action = api->op_field(op, b + stride - 1);
  if (!it->type[0])
    it->type = type;
}

/* Checks every item before touching the system. */
static int sw_validate(sw *s, c8y_operation *op, size_t stride, size_t items,
                       char *why, size_t n) {
  for (size_t i = 0; i < items; i++) {
    sw_item it;
    sw_item_at(s->api, op, stride, i, s->type, &it);
    if (!it.name[0]) {
      snprintf(why, n, "c8y_SoftwareUpdate: item %zu has an empty name", i + 1);
      return 0;
    }
    /* The package manager would read it as an option (apt-get's -o can run
     * any command): refused as the helper refuses it. */
    if (!s->use_helper && (it.name[0] == '-' || it.version[0] == '-')) {
      snprintf(why, n,
               "c8y_SoftwareUpdate: item %zu: %s '%.200s' must not start "
               "with '-'",
               i + 1, it.name[0] == '-' ? "name" : "version",
               it.name[0] == '-' ? it.name : it.version);
      return 0;
    }
    if (strcmp(it.action, "install") != 0 && strcmp(it.action, "delete") != 0) {
      snprintf(why, n,
               "c8y_SoftwareUpdate: item %zu (%.200s): unknown action '%.100s' "
               "(expected install or delete)",
               i + 1, it.name, it.action);
      return 0;
    }
    if (strcmp(it.type, s->type) != 0) {
      snprintf(why, n,
               "c8y_SoftwareUpdate: item %zu (%.200s): software type '%.100s' "
               "is not supported (this device manages '%.100s')",
               i + 1, it.name, it.type, s->type);
      return 0;
    }
  }
  return 1;
}

static int sw_stop(void *ctx) {
  sw *s = ctx;
  return atomic_load(&s->stopping);
}

/* An item to download first: an http(s) URL. Other values (empty, a blank,
 * a repository name) mean "from the package manager". */
static int sw_has_url(const sw_item *it) {
  return strncmp(it->url, "https://", 8) == 0 ||
         strncmp(it->url, "http://", 7) == 0;
}

/* The download's file name in the plugin's state dir: item number and the
 * name reduced to [A-Za-z0-9._+-] (what the helper accepts in a path), with
 * the package format's extension (apt-get and rpm look at it). */
static void sw_file_name(const sw *s, size_t i, const sw_item *it, char *out,
                         size_t n) {
  char clean[65];
  size_t k = 0;
  for (const char *c = it->name; *c && k < sizeof(clean) - 1; c++)
    clean[k++] = (strchr("._+-", *c) || (*c >= '0' && *c <= '9') ||
                  (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'))
                     ? *c
                     : '_';
  clean[k] = '\0';
  const char *ext = strcmp(s->type, "rpm") == 0 ? ".rpm" : ".deb";
  snprintf(out, n, "pkg-%zu-%s%s", i + 1, clean, ext);
}

/* Runs one item: through the helper, or the configured command. Returns 1
 * on success, else 0 with the reason in why; *stopped when fini stopped it. */
static int sw_run_action(sw *s, c8y_operation *op, const sw_item *it, char *why,
                         size_t n, int *stopped) {
  int install = strcmp(it->action, "install") == 0;
  cmn_proc_opts o = {.timeout_s = s->timeout_s,
                     .api = s->api,
                     .op = op,
                     .out_cap = 64 * 1024,
                     .stop = sw_stop,
                     .stop_ctx = s};
  cmn_proc_result r = {0};
  int rc;
  char *cmd = NULL;
  char *env[SW_NKEYS] = {NULL};
  if (s->use_helper) {
    const char *argv[4] = {NULL};
    if (!install)
      argv[0] = "remove", argv[1] = it->name;
    else if (it->file[0])
      argv[0] = "install-file", argv[1] = it->file;
    else
      argv[0] = "install", argv[1] = it->name,
      argv[2] = it->version[0] ? it->version : NULL;
    s->api->log(s->self, C8Y_LOG_INFO, "%s %s %s: c8y-agent-priv %s %s%s%s",
                it->action, it->name, it->version, argv[0], argv[1],
                argv[2] ? " " : "", argv[2] ? argv[2] : "");
    rc = cmn_proc_priv_run(s->helper_socket, argv, &o, &r);
  } else {
    const char *tmpl = !install      ? s->remove_command
                       : it->file[0] ? s->install_file_command
                       : it->version[0] || !s->install_any ? s->install_command
                                                           : s->install_any;
    cmd = sw_expand(tmpl, it);
    static const char *const keys[SW_NKEYS] = {
        "C8Y_SW_NAME", "C8Y_SW_VERSION", "C8Y_SW_TYPE",
        "C8Y_SW_URL",  "C8Y_SW_ACTION",  "C8Y_SW_FILE"};
    const char *vals[SW_NKEYS] = {it->name, it->version, it->type,
                                  it->url,  it->action,  it->file};
    int ok = cmd != NULL;
    for (size_t i = 0; i < SW_NKEYS && ok; i++)
      ok = asprintf(&env[i], "%s=%s", keys[i], vals[i]) >= 0;
    const char *envp[SW_NKEYS + 2] = {"DEBIAN_FRONTEND=noninteractive"};
    for (size_t i = 0; i < SW_NKEYS; i++)
      envp[i + 1] = env[i];
    o.env = envp;
    if (ok) {
      s->api->log(s->self, C8Y_LOG_INFO, "%s %s %s: %s", it->action, it->name,
                  it->version, cmd);
      rc = cmn_proc_shell(cmd, &o, &r);
    } else {
      rc = C8Y_ENOMEM;
      snprintf(r.why, sizeof(r.why), "out of memory");
    }
  }
  free(r.out);
  free(cmd);
  for (size_t i = 0; i < SW_NKEYS; i++)
    free(env[i]);
  *stopped = rc == C8Y_ECANCELED;
  if (rc == 0 && r.exit_code == 0)
    return 1;
  const char *verb = install ? "install" : "delete";
  if (rc != 0)
    snprintf(why, n, "%s of %.200s %.100s failed: %s", verb, it->name,
             it->version, r.why);
  else if (r.err[0])
    snprintf(why, n, "%s of %.200s %.100s failed (exit %d): %.400s", verb,
             it->name, it->version, r.exit_code, r.err);
  else
    snprintf(why, n, "%s of %.200s %.100s failed (exit %d)", verb, it->name,
             it->version, r.exit_code);
  return 0;
}

/* Downloads the item's package file (the agent's HTTP client: tenant auth,
 * resume, size cap), then installs it. */
static int sw_apply(sw *s, c8y_operation *op, size_t i, sw_item *it, char *why,
                    size_t n, int *stopped) {
  *stopped = 0;
  it->file = "";
  if (strcmp(it->action, "install") != 0 || !sw_has_url(it) || !s->download)
    return sw_run_action(s, op, it, why, n, stopped);
  const c8y_api *api = s->api;
  if (!C8Y_API_HAS(api, download)) {
    snprintf(why, n,
             "install of %.200s %.100s: this agent cannot download %.200s "
             "(no api->download, agent ABI %u.%u)",
             it->name, it->version, it->url, api->abi_major, api->abi_minor);
    return 0;
  }
  char file[128];
  sw_file_name(s, i, it, file, sizeof(file));
  c8y_download d = {.size = sizeof(d), .url = it->url, .file = file, .op = op};
  api->log(s->self, C8Y_LOG_INFO, "downloading %s %s from %s", it->name,
           it->version, it->url);
  int rc = api->download(s->self, &d);
  if (rc != C8Y_OK) {
    snprintf(why, n, "download of %.200s %.100s failed: %.250s", it->name,
             it->version, d.error[0] ? d.error : api->status_str(rc));
    return 0;
  }
  it->file = d.path;
  int ok = sw_run_action(s, op, it, why, n, stopped);
  /* The helper may still be installing it when the agent stops. */
  if (!*stopped)
    unlink(d.path);
  it->file = "";
  return ok;
}

/* ---- Resumed after a restart: check the result ------------------------------
 */

typedef struct sw_check {
  const sw_item *items;
  size_t n;
  char (*found)[128]; /* installed version per item, "" if not listed */
} sw_check;

static void sw_check_seen(void *ctx, const char *name, const char *version) {
  sw_check *c = ctx;
  for (size_t i = 0; i < c->n; i++)
    if (strcmp(c->items[i].name, name) == 0)
      snprintf(c->found[i], sizeof(c->found[i]), "%s", version);
}

/* `installed` is `wanted`, allowing a distribution revision ("1.2-1" for
 * "1.2") and an epoch ("1:1.2") the platform does not know about. */
static int sw_version_matches(const char *installed, const char *wanted) {
  if (!wanted[0])
    return installed[0] != '\0';
  const char *colon = strchr(installed, ':');
  if (colon && !strchr(wanted, ':'))
    installed = colon + 1;
  size_t n = strlen(wanted);
  return strncmp(installed, wanted, n) == 0 &&
         (installed[n] == '\0' || installed[n] == '-');
}

/* Whether the system is now as the items asked; else the reason in why. */
static int sw_check_items(sw *s, const sw_item *it, size_t items,
                          char (*found)[128], char *why, size_t n) {
  for (size_t i = 0; i < items; i++)
    found[i][0] = '\0';
  sw_check c = {it, items, found};
  if (sw_list(s, sw_check_seen, &c, 0) != C8Y_OK) {
    snprintf(why, n,
             "c8y_SoftwareUpdate: cannot check the result after the "
             "agent restarted: list_command failed");
    return 0;
  }
  for (size_t i = 0; i < items; i++) {
    int install = strcmp(it[i].action, "install") == 0;
    if (install && !sw_version_matches(found[i], it[i].version)) {
      snprintf(why, n,
               "after the agent restarted, %.200s is %s%.100s, not %.100s as "
               "requested",
               it[i].name, found[i][0] ? "at version " : "not installed",
               found[i], it[i].version[0] ? it[i].version : "installed");
      return 0;
    }
    if (!install && found[i][0]) {
      snprintf(why, n,
               "after the agent restarted, %.200s %.100s is still installed",
               it[i].name, found[i]);
      return 0;
    }
  }
  return 1;
}

/* ---- The helper's verdict on an upgrade of the agent itself ----------------
 * c8y-agent-priv keeps the installed agent package, installs the new one
 * and waits for the new agent to connect; if it does not within
 * rollback_timeout, it reinstalls the kept one. Its verdict, a root-owned
 * file of key=value lines, names the request it came from. The (old or new)
 * agent that resumes the operation reads it: "pending"/"rolling-back" means
 * wait, "rolled-back"/"failed" is the 502 reason, "ok" lets the usual check
 * decide. */
enum sw_verdict { SW_V_NONE, SW_V_WAIT, SW_V_OK, SW_V_FAILED };

/* The request sw_run_action sent the helper for item i. */
static void sw_helper_request(const sw *s, size_t i, const sw_item *it,
                              char *out, size_t n) {
  const char *dir = s->api->state_dir(s->self);
  if (sw_has_url(it) && s->download && dir) {
    char file[128];
    sw_file_name(s, i, it, file, sizeof(file));
    snprintf(out, n, "install-file %s/%s", dir, file);
  } else {
    snprintf(out, n, "install %s%s%s", it->name, it->version[0] ? " " : "",
             it->version);
  }
}

static enum sw_verdict sw_read_verdict(const sw *s, const sw_item *it,
                                       size_t items, char *why, size_t n) {
  if (!s->use_helper || !s->helper_verdict[0])
    return SW_V_NONE;
  FILE *f = fopen(s->helper_verdict, "re");
  if (!f)
    return SW_V_NONE;
  char line[1200], state[32] = "", request[700] = "", reason[1000] = "";
  while (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "state=", 6) == 0)
      snprintf(state, sizeof(state), "%.31s", line + 6);
    else if (strncmp(line, "request=", 8) == 0)
      snprintf(request, sizeof(request), "%.699s", line + 8);
    else if (strncmp(line, "reason=", 7) == 0)
      snprintf(reason, sizeof(reason), "%.999s", line + 7);
  }
  fclose(f);
  bool ours = false;
  for (size_t i = 0; i < items && !ours; i++) {
    if (strcmp(it[i].action, "install") != 0)
      continue;
    char req[700];
    sw_helper_request(s, i, &it[i], req, sizeof(req));
    ours = strcmp(req, request) == 0;
  }
  if (!ours)
    return SW_V_NONE;
  if (strcmp(state, "pending") == 0 || strcmp(state, "rolling-back") == 0)
    return SW_V_WAIT;
  if (strcmp(state, "ok") == 0)
    return SW_V_OK;
  snprintf(why, n, "%s", reason[0] ? reason : "the self-upgrade failed");
  return SW_V_FAILED;
}

/* Sleeps up to ms, returning early (non-zero) when fini stops the plugin. */
static int sw_nap(sw *s, int ms) {
  for (int t = 0; t < ms; t += 100) {
    if (atomic_load(&s->stopping))
      return 1;
    nanosleep(&(struct timespec){0, 100000000}, NULL);
  }
  return atomic_load(&s->stopping);
}

/* The agent restarted while the update ran (an upgrade of the agent itself):
 * decides by what is installed. The package manager may still be finishing
 * (the agent was restarted from the package's own maintainer script, so the
 * package is not yet "installed"): the check is repeated every 5 s for up
 * to resume_wait seconds before it fails. Returns 0 when fini stopped it
 * (the operation is then resumed by the next start again). */
static int sw_resume(sw *s, c8y_operation *op, size_t stride, size_t items) {
  const c8y_api *api = s->api;
  sw_item *it = calloc(items, sizeof(*it));
  char(*found)[128] = calloc(items, sizeof(*found));
  if (!it || !found) {
    free(it);
    free(found);
    api->op_fail(op, "out of memory");
    return 1;
  }
  for (size_t i = 0; i < items; i++) {
    sw_item_at(api, op, stride, i, s->type, &it[i]);
    char file[128], path[700];
    sw_file_name(s, i, &it[i], file, sizeof(file));
    const char *dir = api->state_dir(s->self);
    if (dir &&
        snprintf(path, sizeof(path), "%s/%s", dir, file) < (int)sizeof(path))
      unlink(path); /* left by the interrupted install */
  }
  char why[1024] = "";
  int ok = 0, stopped = 0;
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    enum sw_verdict v = sw_read_verdict(s, it, items, why, sizeof(why));
    if (v == SW_V_FAILED)
      ok = 0;
    else if (v == SW_V_WAIT)
      snprintf(why, sizeof(why),
               "the privileged helper is still deciding on the upgrade of the "
               "agent (no verdict in %s)",
               s->helper_verdict);
    else
      ok = sw_check_items(s, it, items, found, why, sizeof(why));
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (v == SW_V_FAILED)
      break;
    /* While the helper decides, its rollback_timeout adds to the wait. */
    int wait_s =
        s->resume_wait_s + (v == SW_V_WAIT ? s->rollback_timeout_s + 60 : 0);
    if (ok || now.tv_sec - t0.tv_sec >= wait_s || api->op_cancelled(op))
      break;
    if (sw_nap(s, 5000)) {
      stopped = 1;
      break;
    }
  }
  if (!stopped) {
    sw_report(s);
    atomic_store(&s->thread_done, true);
    if (!ok) {
      api->log(s->self, C8Y_LOG_ERROR, "%s", why);
      api->op_fail(op, why);
    } else {
      api->log(s->self, C8Y_LOG_NOTICE,
               "software update completed across an agent restart");
      api->op_succeed(op, NULL);
    }
  }
  free(it);
  free(found);
  return !stopped;
}

/* ---- The update, on the plugin's own thread ---------------------------------
 */

static void *sw_update_main(void *arg) {
  sw *s = arg;
  c8y_operation *op = s->op;
  const c8y_api *api = s->api;
  size_t stride = strcmp(api->op_template(op), "529") == 0 ? 5 : 4;
  size_t items = api->op_field_count(op) / stride;
  if (C8Y_API_HAS(api, op_resumed) && api->op_resumed(op)) {
    if (!sw_resume(s, op, stride, items))
      api->log(s->self, C8Y_LOG_NOTICE,
               "stopped while checking a resumed software update; it is "
               "checked again after the restart");
    atomic_store(&s->thread_done, true);
    return NULL;
  }
  /* If the agent stops before the end (its own package's maintainer
   * scripts restart it), the next start resumes the operation and checks. */
  int resumable = C8Y_API_HAS(api, op_resume_after_restart) &&
                  api->op_resume_after_restart(op) == C8Y_OK;
  char why[1024];
  int ok = 1, stopped = 0;
  for (size_t i = 0; i < items && ok && !stopped; i++) {
    sw_item it;
    sw_item_at(api, op, stride, i, s->type, &it);
    ok = sw_apply(s, op, i, &it, why, sizeof(why), &stopped);
  }
  if (!stopped)
    sw_report(s); /* also after a failure: earlier items may have
                                 changed the system */
  /* Done before the completion: the agent may dispatch the next update as
   * soon as this one completes, and that one joins this thread. */
  atomic_store(&s->thread_done, true);
  if (stopped && resumable) {
    api->log(s->self, C8Y_LOG_NOTICE,
             "the agent is stopping during the software update; the result "
             "is checked after the restart");
  } else if (stopped) {
    api->op_fail(op, "the agent stopped during the software update");
  } else if (!ok) {
    api->log(s->self, C8Y_LOG_ERROR, "%s", why);
    api->op_fail(op, why);
  } else {
    api->op_succeed(op, NULL);
  }
  return NULL;
}

static int on_update(c8y_plugin *self, c8y_operation *op, void *ud) {
  sw *s = ud;
  const c8y_api *api = s->api;
  char why[1024];
  if (!cmn_op_for_self(api, self, op))
    return C8Y_OK;
  const char *tmpl = api->op_template(op);
  size_t stride = strcmp(tmpl, "529") == 0 ? 5 : 4;
  size_t n = api->op_field_count(op);
  if (n == 0 || n % stride != 0) {
    snprintf(why, sizeof(why),
             "c8y_SoftwareUpdate (%s): %zu fields is not a non-zero multiple "
             "of %zu (%s)",
             tmpl, n, stride,
             stride == 5 ? "name,version,type,url,action"
                         : "name,version,url,action");
    api->op_fail(op, why);
    return C8Y_OK;
  }
  size_t items = n / stride;
  if (!sw_validate(s, op, stride, items, why, sizeof(why))) {
    api->op_fail(op, why);
    return C8Y_OK;
  }
  pthread_mutex_lock(&s->mu);
  if (s->thread_live && !atomic_load(&s->thread_done)) {
    pthread_mutex_unlock(&s->mu);
    api->op_fail(op, "another software update is still running");
    return C8Y_OK;
  }
  if (s->thread_live)
    pthread_join(s->thread, NULL);
  s->thread_live = false;
  s->op = op;
  atomic_store(&s->thread_done, false);
  if (pthread_create(&s->thread, NULL, sw_update_main, s) != 0) {
    pthread_mutex_unlock(&s->mu);
    api->op_fail(op, "cannot start the software update thread");
    return C8Y_OK;
  }
  s->thread_live = true;
  pthread_mutex_unlock(&s->mu);
  return C8Y_PENDING;
}

/* ---- Lifecycle --------------------------------------------------------------
 */

static int sw_timeout(sw *s, const char *key, int64_t fallback, int *out) {
  int64_t v;
  int rc =
      cmn_cfg_int(s->api, s->self, key, fallback, 1, 86400, " seconds", &v);
  if (rc == C8Y_OK)
    *out = (int)v;
  return rc;
}

static int sw_read_config(sw *s) {
  const c8y_api *api = s->api;
  int dpkg = in_path("dpkg-query");
  int rpm = !dpkg && in_path("rpm");
  const char *auto_type = dpkg ? "apt" : rpm ? "rpm" : "";
  s->list_command = api->config_string(s->self, "list_command", "auto");
  s->type = api->config_string(s->self, "type", auto_type);
  s->install_command = api->config_string(s->self, "install_command", "");
  s->remove_command = api->config_string(s->self, "remove_command", "");
  int rc = sw_timeout(s, "timeout", 3600, &s->timeout_s);
  if (rc == C8Y_OK)
    rc = sw_timeout(s, "list_timeout", 120, &s->list_timeout_s);
  if (rc == C8Y_OK)
    rc = sw_timeout(s, "resume_wait", 600, &s->resume_wait_s);
  if (rc != C8Y_OK)
    return rc;
  if (strcmp(s->list_command, "auto") == 0) {
    if (!dpkg && !rpm) {
      api->log(s->self, C8Y_LOG_ERROR,
               "list_command: auto found neither dpkg-query nor rpm in PATH; "
               "set list_command");
      return C8Y_EINVAL;
    }
    s->list_command = dpkg ? APT_LIST : RPM_LIST;
  }
  if (cmn_path_check_key(api, s->self, "list_command", s->list_command) !=
      C8Y_OK)
    return C8Y_EINVAL;
  if (!s->type[0] || strpbrk(s->type, ",\"\n")) {
    api->log(s->self, C8Y_LOG_ERROR,
             "type: '%s' is not a software type (set type, e.g. apt)", s->type);
    return C8Y_EINVAL;
  }
  int apt = strcmp(s->type, "apt") == 0, yum = strcmp(s->type, "rpm") == 0;
  if (!s->install_command[0]) {
    s->install_command = apt ? APT_INSTALL : yum ? RPM_INSTALL : "";
    s->install_any = apt ? APT_INSTALL_ANY : yum ? RPM_INSTALL_ANY : NULL;
  }
  if (!s->remove_command[0])
    s->remove_command = apt ? APT_REMOVE : yum ? RPM_REMOVE : "";
  s->install_file_command =
      api->config_string(s->self, "install_file_command", "");
  if (!s->install_file_command[0])
    s->install_file_command = apt   ? DPKG_INSTALL_FILE
                              : yum ? RPM_INSTALL_FILE
                                    : "";
  if (api->config_bool(s->self, "download", 1, &s->download) != C8Y_OK)
    return C8Y_EINVAL;
  const char *mode = api->config_string(s->self, "privileged", "auto");
  s->helper_socket =
      api->config_string(s->self, "helper_socket", CMN_PRIV_SOCKET);
  s->helper_verdict = api->config_string(
      s->self, "helper_verdict", "/var/lib/c8y-agent-priv/self-upgrade");
  /* Read by c8y-agent-priv (as root, from the root-owned agent.ini); checked
   * here so that a bad value is reported where the others are. */
  rc = sw_timeout(s, "rollback_timeout", 120, &s->rollback_timeout_s);
  if (rc == C8Y_OK && s->rollback_timeout_s < 10) {
    api->log(s->self, C8Y_LOG_ERROR, "rollback_timeout: %d is below 10 seconds",
             s->rollback_timeout_s);
    rc = C8Y_EINVAL;
  }
  if (rc != C8Y_OK)
    return rc;
  s->use_helper = cmn_proc_priv_use_helper(mode, s->helper_socket);
  if (s->use_helper < 0) {
    api->log(s->self, C8Y_LOG_ERROR,
             "privileged: '%s' is not auto, helper or direct", mode);
    return C8Y_EINVAL;
  }
  if (s->use_helper) {
    /* The helper knows apt/dnf/yum only, and runs its own commands. */
    if (!apt && !yum) {
      api->log(s->self, C8Y_LOG_ERROR,
               "privileged: the helper manages apt and rpm packages only, "
               "not type '%s'; set privileged = direct with own commands",
               s->type);
      return C8Y_EINVAL;
    }
    api->log(s->self, C8Y_LOG_INFO,
             "installs and removals go through the privileged helper at %s",
             s->helper_socket);
    return C8Y_OK;
  }
  if (!s->install_command[0] || !s->remove_command[0] ||
      !s->install_file_command[0]) {
    api->log(s->self, C8Y_LOG_ERROR,
             "%s: required for software type '%s' (defaults exist only for "
             "apt and rpm)",
             !s->install_command[0]  ? "install_command"
             : !s->remove_command[0] ? "remove_command"
                                     : "install_file_command",
             s->type);
    return C8Y_EINVAL;
  }
  /* Direct mode runs these with the agent's privileges (root). */
  if (cmn_path_check_key(api, s->self, "install_command", s->install_command) !=
          C8Y_OK ||
      (s->install_any && cmn_path_check_key(api, s->self, "install_command",
                                            s->install_any) != C8Y_OK) ||
      cmn_path_check_key(api, s->self, "remove_command", s->remove_command) !=
          C8Y_OK ||
      cmn_path_check_key(api, s->self, "install_file_command",
                         s->install_file_command) != C8Y_OK)
    return C8Y_EINVAL;
  return C8Y_OK;
}

static int sw_init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  sw *s = calloc(1, sizeof(*s));
  if (!s)
    return C8Y_ENOMEM;
  s->self = self;
  s->api = api;
  pthread_mutex_init(&s->mu, NULL);
  int rc = sw_read_config(s);
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "528", (uint32_t)s->timeout_s * 1000,
                            on_update, s);
  if (rc == C8Y_OK)
    rc = api->add_operation(self, "529", (uint32_t)s->timeout_s * 1000,
                            on_update, s);
  if (rc != C8Y_OK) {
    pthread_mutex_destroy(&s->mu);
    free(s);
    return rc;
  }
  const char *types[] = {"143", s->type};
  rc = api->send_static(self, NULL, types, 2);
  if (rc < 0)
    api->log(self, C8Y_LOG_ERROR, "cannot send 143: %s", api->status_str(rc));
  sw_report(s);
  *user_data = s;
  return C8Y_OK;
}

/* A running update stops waiting (the helper's action goes on) and is
 * resumed by the next start when the agent supports that. */
static void sw_fini(c8y_plugin *self, void *user_data) {
  sw *s = user_data;
  atomic_store(&s->stopping, true);
  pthread_mutex_lock(&s->mu);
  if (s->thread_live)
    pthread_join(s->thread, NULL);
  s->thread_live = false;
  pthread_mutex_unlock(&s->mu);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

C8Y_PLUGIN(.name = "software", .version = "1.1.0", .init = sw_init,
           .fini = sw_fini);
