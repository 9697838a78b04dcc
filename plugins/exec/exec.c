/* exec: operations without C. Every *.ini in a directory maps one operation
 * (a static operation template, or a message of a custom SmartREST template
 * collection) to an executable; see README.md.
 *
 * Commands run synchronously on the plugin's worker, one at a time in
 * arrival order: 502/503 update the oldest EXECUTING operation of a
 * fragment, so commands finishing out of order would report each other's
 * results. The drop-ins are read in init, so the agent's SIGHUP reload
 * (fini + init) picks up new, changed and removed files. */
#define _GNU_SOURCE
#include <c8y/plugin.h>

#include "cmn_cfg.h"
#include "cmn_csv.h"
#include "cmn_path.h"
#include "cmn_proc.h"
#include "exec_param.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef EXEC_DEFAULT_DIR
#define EXEC_DEFAULT_DIR "/etc/c8y-agent/operations.d"
#endif
#define SETPRIV "/usr/bin/setpriv"
#define MAX_ARGS 32
#define MAX_FILES 256
#define MARK "...[truncated]"

typedef struct exec_op {
  struct exec_plugin *plugin;
  char *file;
  char *template_id;    /* static template, or NULL */
  char *xid, *msg_id;   /* custom template message, or NULL */
  char *argv[MAX_ARGS]; /* command and its fixed arguments */
  size_t argc;
  long long timeout_s;
  bool output_is_result;
  char *user; /* NULL = the agent's user */
  uid_t uid;
  gid_t gid;
  char *home;
} exec_op;

typedef struct exec_plugin {
  const c8y_api *api;
  c8y_plugin *self;
  int64_t max_output;
  exec_op **ops;
  size_t nops;
} exec_plugin;

static void op_free(exec_op *o) {
  if (!o)
    return;
  free(o->file);
  free(o->template_id);
  free(o->xid);
  free(o->msg_id);
  for (size_t i = 0; i < o->argc; i++)
    free(o->argv[i]);
  free(o->user);
  free(o->home);
  free(o);
}

static void plugin_free(exec_plugin *p) {
  for (size_t i = 0; i < p->nops; i++)
    op_free(p->ops[i]);
  free(p->ops);
  free(p);
}

/* ---- running a command ---- */

static char *env_entry(const char *key, const char *value) {
  char *s;
  return asprintf(&s, "%s=%s", key, value ? value : "") < 0 ? NULL : s;
}

typedef struct env_list {
  char *v[MAX_ARGS + 80];
  size_t n;
} env_list;

static void env_add(env_list *e, const char *key, const char *value) {
  if (e->n + 1 < sizeof e->v / sizeof e->v[0]) {
    char *s = env_entry(key, value);
    if (s)
      e->v[e->n++] = s;
  }
}

static void env_free(env_list *e) {
  for (size_t i = 0; i < e->n; i++)
    free(e->v[i]);
}

/* argv: [setpriv ...] command fixed-args params...; strings borrowed. */
static size_t build_argv(const exec_op *o, const char *const *params,
                         size_t nparams, char *ids[2], const char **argv,
                         size_t cap) {
  size_t n = 0;
  if (o->user) {
    argv[n++] = SETPRIV;
    argv[n++] = ids[0];
    argv[n++] = ids[1];
    argv[n++] = "--init-groups";
    argv[n++] = "--";
  }
  for (size_t i = 0; i < o->argc && n + 1 < cap; i++)
    argv[n++] = o->argv[i];
  for (size_t i = 0; i < nparams && n + 1 < cap; i++)
    argv[n++] = params[i] ? params[i] : "";
  argv[n] = NULL;
  return n;
}

/* Cuts the output at max bytes, never inside a UTF-8 character, without
 * trailing line ends. */
static void trim_output(cmn_proc_result *r, size_t max) {
  if (!r->out)
    return;
  size_t len = r->out_len < max ? r->out_len : max;
  bool cut = r->out_truncated || r->out_len > max;
  if (cut)
    while (len > 0 && ((unsigned char)r->out[len] & 0xC0) == 0x80)
      len--;
  while (!cut && len > 0 &&
         (r->out[len - 1] == '\n' || r->out[len - 1] == '\r'))
    len--;
  r->out[len] = 0;
  if (cut) {
    char *s = realloc(r->out, len + sizeof MARK);
    if (s) {
      memcpy(s + len, MARK, sizeof MARK);
      r->out = s;
    }
  }
}

#define TRUST_HINT                                                             \
  "only root and the agent's user may write what the agent runs"

/* The command (and setpriv) may be run only while nobody with less
 * privilege than the agent can change them; a command run as `user` may
 * also be that user's own. 0, or -1 with why. */
static int command_trusted(const exec_op *o, char *why, size_t n) {
  uid_t also = o->user ? o->uid : (uid_t)-1;
  if (cmn_path_check_program(o->argv[0], also, NULL, why, n) != 0)
    return -1;
  return o->user ? cmn_path_check_program(SETPRIV, (uid_t)-1, NULL, why, n) : 0;
}

/* Runs the command; returns the cmn_proc status and fills r. */
static int run_command(exec_op *o, const char *const *params, size_t nparams,
                       env_list *env, c8y_operation *op, cmn_proc_result *r) {
  exec_plugin *p = o->plugin;
  memset(r, 0, sizeof *r);
  char *ids[2] = {NULL, NULL};
  if (o->user) {
    if (asprintf(&ids[0], "--reuid=%u", (unsigned)o->uid) < 0)
      ids[0] = NULL;
    if (asprintf(&ids[1], "--regid=%u", (unsigned)o->gid) < 0)
      ids[1] = NULL;
    env_add(env, "HOME", o->home);
    env_add(env, "USER", o->user);
    env_add(env, "LOGNAME", o->user);
  }
  const char *argv[MAX_ARGS * 2 + 8];
  build_argv(o, params, nparams, ids, argv, sizeof argv / sizeof argv[0]);
  env->v[env->n] = NULL;
  cmn_proc_opts po = {.env = (const char *const *)env->v,
                      .timeout_s = (int)o->timeout_s,
                      .api = p->api,
                      .op = op,
                      .out_cap = (size_t)p->max_output + 1};
  int rc = C8Y_ENOMEM;
  char why[600];
  if (command_trusted(o, why, sizeof why) != 0) {
    /* Changed since the drop-in was loaded. */
    snprintf(r->why, sizeof r->why, "command: %.150s", why);
    rc = C8Y_EIO;
  } else if (!o->user || (ids[0] && ids[1])) {
    rc = cmn_proc_run((char *const *)argv, &po, r);
  }
  free(ids[0]);
  free(ids[1]);
  return rc;
}

static int on_operation(c8y_plugin *self, c8y_operation *op, void *ud) {
  exec_op *o = ud;
  const c8y_api *api = o->plugin->api;
  size_t n = api->op_field_count(op);
  /* c8y_ParameterUpdate: checked before the hook runs, reported with 408
   * once it applied the values (exec_param.h). */
  bool param = o->template_id && strcmp(o->template_id, "532") == 0;
  char why[600];
  size_t room = MAX_ARGS * 2 + 8 - 1 - o->argc - (o->user ? 5 : 0);
  if (param && !exec_param_check(api, op, room, why, sizeof why))
    return api->op_fail(op, why);
  const char **params = calloc(n + 1, sizeof *params);
  env_list env = {.n = 0};
  if (!params)
    return api->op_fail(op, "out of memory");
  env_add(&env, "C8Y_OP_TEMPLATE", api->op_template(op));
  env_add(&env, "C8Y_OP_FRAGMENT", api->op_fragment(op));
  env_add(&env, "C8Y_OP_DEVICE", api->op_device(op));
  char count[32];
  snprintf(count, sizeof count, "%zu", n);
  env_add(&env, "C8Y_OP_FIELD_COUNT", count);
  for (size_t i = 0; i < n; i++) {
    params[i] = api->op_field(op, i);
    char key[48];
    snprintf(key, sizeof key, "C8Y_OP_FIELD_%zu", i + 1);
    if (i < MAX_ARGS)
      env_add(&env, key, params[i]);
  }
  cmn_proc_result r;
  int rc = run_command(o, params, n, &env, op, &r);
  int done;
  if (rc == 0 && r.exit_code == 0 && param) {
    done = exec_param_report(api, self, op, why, sizeof why) == C8Y_OK
               ? api->op_succeed(op, NULL)
               : api->op_fail(op, why);
  } else if (rc == 0 && r.exit_code == 0) {
    trim_output(&r, (size_t)o->plugin->max_output);
    done = api->op_succeed(op, o->output_is_result ? r.out : NULL);
  } else {
    char reason[CMN_PROC_ERR_TAIL + 200];
    cmn_proc_describe(&r, rc, reason, sizeof reason);
    done = api->op_fail(op, reason);
  }
  free(r.out);
  free(params);
  env_free(&env);
  /* C8Y_ETIMEDOUT: the agent failed it already; the handle is released. */
  return done == C8Y_ETIMEDOUT ? C8Y_OK : done;
}

/* Custom templates carry no operation id the agent could report on, so the
 * command's outcome is only logged; the command reports itself if it must
 * (e.g. with `c8y-agent send`). */
static void on_message(c8y_plugin *self, const c8y_message *m, void *ud) {
  exec_op *o = ud;
  const c8y_api *api = o->plugin->api;
  size_t n = api->msg_field_count(m);
  const char **params = calloc(n + 1, sizeof *params);
  env_list env = {.n = 0};
  if (!params) {
    api->log(self, C8Y_LOG_ERROR, "%s: out of memory", o->file);
    return;
  }
  env_add(&env, "C8Y_OP_XID", o->xid);
  env_add(&env, "C8Y_OP_MESSAGE_ID", api->msg_id(m));
  char count[32];
  snprintf(count, sizeof count, "%zu", n);
  env_add(&env, "C8Y_OP_FIELD_COUNT", count);
  for (size_t i = 0; i < n; i++) {
    params[i] = api->msg_field(m, i);
    char key[48];
    snprintf(key, sizeof key, "C8Y_OP_FIELD_%zu", i + 1);
    if (i < MAX_ARGS)
      env_add(&env, key, params[i]);
  }
  cmn_proc_result r;
  int rc = run_command(o, params, n, &env, NULL, &r);
  if (rc == 0 && r.exit_code == 0) {
    api->log(self, C8Y_LOG_INFO, "%s: message %s/%s handled", o->file, o->xid,
             o->msg_id);
  } else {
    char reason[CMN_PROC_ERR_TAIL + 200];
    cmn_proc_describe(&r, rc, reason, sizeof reason);
    api->log(self, C8Y_LOG_WARNING, "%s: message %s/%s failed: %s", o->file,
             o->xid, o->msg_id, reason);
  }
  free(r.out);
  free(params);
  env_free(&env);
}

/* ---- drop-in files ---- */

typedef struct parse {
  exec_plugin *p;
  const char *file;
  unsigned line;
  bool failed;
} parse;

__attribute__((format(printf, 2, 3))) static void bad(parse *ps,
                                                      const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (ps->line)
    ps->p->api->log(ps->p->self, C8Y_LOG_ERROR, "%s:%u: %s", ps->file, ps->line,
                    msg);
  else
    ps->p->api->log(ps->p->self, C8Y_LOG_ERROR, "%s: %s", ps->file, msg);
  ps->failed = true;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s))
    s++;
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    s[--n] = 0;
  return s;
}

static bool parse_bool(const char *v, bool *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcmp(v, yes[i]) == 0)
      return *out = true;
    if (strcmp(v, no[i]) == 0) {
      *out = false;
      return true;
    }
  }
  return false;
}

static bool valid_word(const char *s) {
  if (!*s || strlen(s) > 200)
    return false;
  for (; *s; s++)
    if ((unsigned char)*s <= ' ' || strchr("/+#,\"", *s))
      return false;
  return true;
}

static void set_command(parse *ps, exec_op *o, char *v) {
  for (size_t i = 0; i < o->argc; i++)
    free(o->argv[i]);
  o->argc = 0;
  char *save = NULL;
  for (char *tok = strtok_r(v, " \t", &save); tok;
       tok = strtok_r(NULL, " \t", &save)) {
    if (o->argc == MAX_ARGS) {
      bad(ps, "command: more than %d words", MAX_ARGS);
      return;
    }
    o->argv[o->argc++] = strdup(tok);
  }
  if (o->argc == 0) {
    bad(ps, "command: empty");
    return;
  }
  const char *prog = o->argv[0];
  struct stat st;
  if (prog[0] != '/')
    bad(ps, "command: '%s' must be an absolute path", prog);
  else if (stat(prog, &st) != 0)
    bad(ps, "command: %s: %s", prog, strerror(errno));
  else if (!S_ISREG(st.st_mode) || access(prog, X_OK) != 0)
    bad(ps, "command: %s is not an executable file", prog);
}

static void set_user(parse *ps, exec_op *o, const char *v) {
  struct passwd pw, *res = NULL;
  char buf[4096];
  int e = getpwnam_r(v, &pw, buf, sizeof buf, &res);
  if (!res) {
    bad(ps, "user: no such user '%s'%s%s", v, e ? ": " : "",
        e ? strerror(e) : "");
    return;
  }
  if (pw.pw_uid == geteuid())
    return; /* already that user */
  if (geteuid() != 0) {
    bad(ps, "user: cannot run the command as '%s': the agent is not root", v);
    return;
  }
  if (access(SETPRIV, X_OK) != 0) {
    bad(ps, "user: switching users needs " SETPRIV " (util-linux): %s",
        strerror(errno));
    return;
  }
  o->user = strdup(v);
  o->home = strdup(pw.pw_dir && *pw.pw_dir ? pw.pw_dir : "/");
  o->uid = pw.pw_uid;
  o->gid = pw.pw_gid;
}

static void set_key(parse *ps, exec_op *o, const char *key, char *v) {
  if (strcmp(key, "template") == 0) {
    free(o->template_id);
    o->template_id = strdup(v);
    if (strspn(v, "0123456789") != strlen(v) || strlen(v) != 3 ||
        strcmp(v, "510") < 0 || strcmp(v, "532") > 0)
      bad(ps, "template: '%s' is not a static operation template (510-532)", v);
  } else if (strcmp(key, "fragment") == 0) {
    bad(ps, "fragment: operations by fragment need JSON operations, which "
            "this agent does not receive yet; use template");
  } else if (strcmp(key, "xid") == 0) {
    free(o->xid);
    o->xid = strdup(v);
    if (!valid_word(v))
      bad(ps, "xid: '%s' is not a template collection id", v);
  } else if (strcmp(key, "message_id") == 0) {
    free(o->msg_id);
    o->msg_id = strdup(v);
    if (!valid_word(v))
      bad(ps, "message_id: '%s' is not a message id", v);
  } else if (strcmp(key, "command") == 0) {
    set_command(ps, o, v);
  } else if (strcmp(key, "timeout") == 0) {
    char *end = NULL;
    errno = 0;
    long long t = strtoll(v, &end, 10);
    if (!*v || *end || errno || t < 1 || t > 86400)
      bad(ps, "timeout: '%s' is not 1..86400 seconds", v);
    else
      o->timeout_s = t;
  } else if (strcmp(key, "user") == 0) {
    free(o->user);
    o->user = NULL;
    if (*v)
      set_user(ps, o, v);
  } else if (strcmp(key, "output_is_result") == 0) {
    if (!parse_bool(v, &o->output_is_result))
      bad(ps, "output_is_result: '%s' is not a boolean (true/false)", v);
  } else {
    bad(ps,
        "unknown key '%s' (template, xid, message_id, command, timeout, user, "
        "output_is_result)",
        key);
  }
}

/* Files that decide what runs, maybe as root, must be writable by trusted
 * writers only (cmn_path: root, the agent's user). */
static bool safe_file(parse *ps, int fd) {
  struct stat st;
  char why[200];
  if (fstat(fd, &st) != 0) {
    bad(ps, "%s", strerror(errno));
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    bad(ps, "not a regular file");
    return false;
  }
  if (cmn_path_check_fd(fd, why, sizeof why) != 0) {
    bad(ps, "the drop-in %s; " TRUST_HINT, why);
    return false;
  }
  return true;
}

static exec_op *load_file(exec_plugin *p, const char *path, int64_t timeout) {
  parse ps = {.p = p, .file = path};
  FILE *f = fopen(path, "re");
  if (!f) {
    bad(&ps, "cannot open: %s", strerror(errno));
    return NULL;
  }
  exec_op *o = calloc(1, sizeof *o);
  if (!o || !safe_file(&ps, fileno(f))) {
    fclose(f);
    free(o);
    return NULL;
  }
  o->plugin = p;
  o->file = strdup(path);
  o->timeout_s = timeout;
  o->output_is_result = true;
  char line[1024];
  while (!ps.failed && fgets(line, sizeof line, f)) {
    ps.line++;
    if (!strchr(line, '\n') && !feof(f)) {
      bad(&ps, "line longer than %zu bytes", sizeof line - 2);
      break;
    }
    char *s = trim(line);
    if (!*s || *s == '#' || *s == ';')
      continue;
    if (*s == '[') {
      if (strcmp(s, "[operation]") != 0)
        bad(&ps, "unknown section %s (the only one is [operation])", s);
      continue;
    }
    char *eq = strchr(s, '=');
    if (!eq) {
      bad(&ps, "expected 'key = value', got '%s'", s);
      break;
    }
    *eq = 0;
    set_key(&ps, o, trim(s), trim(eq + 1));
  }
  fclose(f);
  ps.line = 0;
  if (!ps.failed) {
    bool custom = o->xid || o->msg_id;
    if (o->template_id && custom)
      bad(&ps, "set either template or xid + message_id, not both");
    else if (!o->template_id && !custom)
      bad(&ps, "template (or xid + message_id) is required");
    else if (custom && (!o->xid || !o->msg_id))
      bad(&ps, "xid and message_id go together");
    else if (o->argc == 0)
      bad(&ps, "command is required");
  }
  char why[600];
  if (!ps.failed && command_trusted(o, why, sizeof why) != 0)
    bad(&ps, "command: %s; " TRUST_HINT, why);
  if (ps.failed) {
    op_free(o);
    return NULL;
  }
  return o;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

static bool is_ini(const struct dirent *d) {
  size_t n = strlen(d->d_name);
  return d->d_name[0] != '.' && n > 4 && strcmp(d->d_name + n - 4, ".ini") == 0;
}

static int filter_ini(const struct dirent *d) { return is_ini(d); }

/* The earlier file that claims the same operation, or NULL. */
static exec_op *claimed(exec_plugin *p, const exec_op *o) {
  for (size_t i = 0; i < p->nops; i++) {
    exec_op *x = p->ops[i];
    if (o->template_id && x->template_id &&
        strcmp(o->template_id, x->template_id) == 0)
      return x;
    if (o->xid && x->xid && strcmp(o->xid, x->xid) == 0 &&
        strcmp(o->msg_id, x->msg_id) == 0)
      return x;
  }
  return NULL;
}

static int register_op(exec_plugin *p, exec_op *o) {
  const c8y_api *api = p->api;
  if (o->template_id)
    /* The agent's timeout is a backstop; ours fires first with a reason. */
    return api->add_operation(p->self, o->template_id,
                              (uint32_t)(o->timeout_s + 15) * 1000u,
                              on_operation, o);
  return api->add_message_handler(p->self, o->xid, o->msg_id, on_message, o);
}

static void load_dir(exec_plugin *p, const char *dir, int64_t timeout) {
  const c8y_api *api = p->api;
  char why[600];
  /* Whoever can add a file here chooses what the agent runs. */
  if (access(dir, F_OK) == 0 && cmn_path_check_dir(dir, why, sizeof why) != 0) {
    api->log(p->self, C8Y_LOG_ERROR, "dir: %s; " TRUST_HINT "; no operations",
             why);
    return;
  }
  struct dirent **names = NULL;
  int n = scandir(dir, &names, filter_ini, by_name);
  if (n < 0) {
    api->log(p->self, errno == ENOENT ? C8Y_LOG_NOTICE : C8Y_LOG_ERROR,
             "dir: %s: %s; no operations", dir, strerror(errno));
    return;
  }
  p->ops = calloc((size_t)n + 1, sizeof *p->ops);
  for (int i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
    free(names[i]);
    if (!p->ops || i >= MAX_FILES) {
      if (p->ops && i == MAX_FILES)
        api->log(p->self, C8Y_LOG_ERROR,
                 "dir: %s: more than %d files; the rest are ignored", dir,
                 MAX_FILES);
      continue;
    }
    exec_op *o = load_file(p, path, timeout);
    if (!o)
      continue;
    exec_op *x = claimed(p, o);
    if (x) {
      api->log(p->self, C8Y_LOG_ERROR,
               "%s: %s %s%s%s is already mapped by %s; file ignored", path,
               o->template_id ? "template" : "message",
               o->template_id ? o->template_id : o->xid,
               o->template_id ? "" : "/", o->template_id ? "" : o->msg_id,
               x->file);
      op_free(o);
      continue;
    }
    int rc = register_op(p, o);
    if (rc != C8Y_OK) {
      api->log(p->self, C8Y_LOG_ERROR, "%s: cannot register it: %s", path,
               api->status_str(rc));
      op_free(o);
      continue;
    }
    api->log(p->self, C8Y_LOG_INFO, "%s: %s%s%s%s -> %s", path,
             o->template_id ? "template " : "message ",
             o->template_id ? o->template_id : o->xid,
             o->template_id ? "" : "/", o->template_id ? "" : o->msg_id,
             o->argv[0]);
    p->ops[p->nops++] = o;
  }
  free(names);
}

static int init(c8y_plugin *self, const c8y_api *api, void **user_data) {
  exec_plugin *p = calloc(1, sizeof *p);
  if (!p)
    return C8Y_ENOMEM;
  p->api = api;
  p->self = self;
  int64_t timeout = 0;
  int rc = C8Y_OK;
  if (cmn_cfg_int(api, self, "timeout", 60, 1, 86400, " s", &timeout) !=
          C8Y_OK ||
      cmn_cfg_int(api, self, "max_output", 8000, 1, CMN_CSV_TEXT_MAX, " bytes",
                  &p->max_output) != C8Y_OK)
    rc = C8Y_EINVAL;
  const char *dir = api->config_string(self, "dir", EXEC_DEFAULT_DIR);
  if (rc == C8Y_OK && dir[0] != '/') {
    api->log(self, C8Y_LOG_ERROR, "dir: '%s' must be an absolute path", dir);
    rc = C8Y_EINVAL;
  }
  if (rc != C8Y_OK) {
    plugin_free(p);
    return rc;
  }
  load_dir(p, dir, timeout);
  *user_data = p;
  return C8Y_OK;
}

static void fini(c8y_plugin *self, void *user_data) {
  (void)self;
  plugin_free(user_data);
}

C8Y_PLUGIN(.name = "exec", .version = "1.0.0", .init = init, .fini = fini);
