#include "loader.h"

#include "clock.h"
#include "crash.h"
#include "ident.h"
#include "log.h"
#include "status.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A path anyone else could write is a path anyone else could run code
 * through: refuse it. */
static const char *unsafe_mode(const struct stat *st) {
  if (st->st_mode & S_IWOTH)
    return "is world-writable";
  if (st->st_mode & S_IWGRP)
    return "is group-writable";
  if (st->st_uid != 0 && st->st_uid != geteuid())
    return "is owned by another user";
  return NULL;
}

/* The plugin dir's ancestors up to '/': a directory someone else can write
 * lets them swap the whole subtree. A root-owned sticky directory (/tmp) is
 * fine: others cannot rename or remove what they do not own in it. NULL, or
 * the reason with the offending directory in buf. */
static const char *unsafe_ancestor(const char *dir, char *buf, size_t len) {
  char *real = realpath(dir, NULL);
  if (!real) {
    snprintf(buf, len, "cannot resolve %s: %s", dir, strerror(errno));
    return buf;
  }
  const char *why = NULL;
  for (;;) {
    char *slash = strrchr(real, '/');
    if (!slash)
      break;
    if (slash == real)
      slash[1] = '\0'; /* "/" itself */
    else
      *slash = '\0';
    struct stat st;
    if (lstat(real, &st) != 0) {
      snprintf(buf, len, "cannot stat %s: %s", real, strerror(errno));
      why = buf;
      break;
    }
    bool sticky_root = (st.st_mode & S_ISVTX) && st.st_uid == 0;
    const char *bad = sticky_root && st.st_uid == 0 ? NULL : unsafe_mode(&st);
    if (bad) {
      snprintf(buf, len, "its parent directory %s %s", real, bad);
      why = buf;
      break;
    }
    if (strcmp(real, "/") == 0)
      break;
  }
  free(real);
  return why;
}

static loader_entry *add_entry(plugin_set *s, const char *file) {
  loader_entry *grown = realloc(s->entries, (s->nentries + 1) * sizeof *grown);
  if (!grown)
    return NULL;
  s->entries = grown;
  loader_entry *e = &grown[s->nentries++];
  memset(e, 0, sizeof *e);
  e->file = strdup(file);
  return e;
}

__attribute__((format(printf, 2, 3))) static void refuse(loader_entry *e,
                                                         const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  free(e->reason);
  e->reason = strdup(buf);
  e->status = C8Y_EINVAL;
  log_error("plugin %s refused: %s", e->file, buf);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_so_suffix(const char *name) {
  size_t n = strlen(name);
  return n > 3 && strcmp(name + n - 3, ".so") == 0;
}

/* The descriptor stays open while the library is loaded: the dynamic linker
 * knows a library by its name, /proc/self/fd/<fd>, and a reused number
 * would hand back the previous plugin. */
static void close_lib(void *dl, int fd) {
  dlclose(dl);
  close(fd);
}

static void load_dir(plugin_host *h, const char *dir, bool start_workers,
                     plugin_set *out);

static void load_one(plugin_host *h, const char *path, bool start_workers,
                     plugin_set *s) {
  loader_entry *e = add_entry(s, path);
  if (!e || !e->file)
    return;
  /* Checked and loaded through one descriptor: neither a symlink nor a
   * rename between the check and dlopen can substitute another file. */
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ELOOP)
      refuse(e, "is a symbolic link (plugins are not loaded through links)");
    else
      refuse(e, "cannot open: %s", strerror(errno));
    return;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    refuse(e, "cannot stat: %s", strerror(errno));
    close(fd);
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    refuse(e, "not a regular file");
    close(fd);
    return;
  }
  const char *why = unsafe_mode(&st);
  if (why) {
    refuse(e, "the file %s", why);
    close(fd);
    return;
  }
  char qwhy[512], qname[80];
  if (h->state_dir && crash_quarantined(h->state_dir, path, &st, qwhy,
                                        sizeof qwhy, qname, sizeof qname)) {
    e->quarantined = true;
    e->name = strdup(qname);
    refuse(e, "%s", qwhy);
    close(fd);
    return;
  }
  char fdpath[64];
  snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
  /* Constructors run inside dlopen: a crash there counts too. */
  bool by_fd = access(fdpath, F_OK) == 0;
  if (!by_fd)
    log_warning("plugin %s: %s is not available (/proc not mounted?); "
                "loading it by path",
                path, fdpath);
  char *head = crash_plugin_head("", path, &st);
  crash_enter(head, "dlopen", NULL);
  void *dl = dlopen(by_fd ? fdpath : path, RTLD_NOW | RTLD_LOCAL);
  crash_leave();
  free(head);
  if (!dl) {
    const char *err = dlerror();
    if (!err)
      err = "unknown error";
    /* The linker names the descriptor; the operator knows the file. */
    size_t fl = strlen(fdpath);
    if (by_fd && strncmp(err, fdpath, fl) == 0)
      refuse(e, "dlopen failed: %s%s", path, err + fl);
    else
      refuse(e, "dlopen failed: %s", err);
    close(fd);
    return;
  }
  const c8y_plugin_info *info = dlsym(dl, C8Y_PLUGIN_SYMBOL_NAME);
  if (!info) {
    if (dlsym(dl, "c8y_plugin_info_v2"))
      refuse(e, "built for plugin ABI 2; this agent supports ABI 1");
    else
      refuse(e, "not a c8y-agent plugin (no %s symbol)",
             C8Y_PLUGIN_SYMBOL_NAME);
    close_lib(dl, fd);
    return;
  }
  char v[64];
  if (info->abi_major != C8Y_ABI_MAJOR) {
    snprintf(v, sizeof v, "%u", (unsigned)info->abi_major);
    refuse(e, "built for plugin ABI major %s; this agent supports 1", v);
    close_lib(dl, fd);
    return;
  }
  if (info->abi_minor > C8Y_ABI_MINOR) {
    snprintf(v, sizeof v, "1.%u, agent has 1.%u", (unsigned)info->abi_minor,
             (unsigned)C8Y_ABI_MINOR);
    refuse(e, "needs a newer agent (ABI %s)", v);
    close_lib(dl, fd);
    return;
  }
  size_t need = offsetof(c8y_plugin_info, fini) + sizeof info->fini;
  if (info->size < need) {
    refuse(e, "plugin descriptor is truncated (size field too small)");
    close_lib(dl, fd);
    return;
  }
  /* Read only what the plugin declared; newer fields stay zero. */
  c8y_plugin_info local;
  memset(&local, 0, sizeof local);
  memcpy(&local, info, info->size < sizeof local ? info->size : sizeof local);
  if (!ident_plugin_name_ok(local.name)) {
    refuse(e, "invalid plugin name '%s' (want [a-z0-9_], 1-32 chars)",
           local.name ? local.name : "(null)");
    close_lib(dl, fd);
    return;
  }
  e->name = strdup(local.name);
  e->version = strdup(local.version ? local.version : "");
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->plugins[i]->name, local.name) == 0) {
      refuse(e, "plugin name '%s' is already taken by %s", local.name,
             s->plugins[i]->path);
      close_lib(dl, fd);
      return;
    }
  if (!local.init) {
    refuse(e, "plugin '%s' has no init function", local.name);
    close_lib(dl, fd);
    return;
  }
  config_entry *en = config_plugin_lookup(h->cfg, local.name, "enabled");
  bool enabled = true;
  if (en && config_parse_bool(en->value, &enabled) != 0) {
    char where[512];
    snprintf(where, sizeof where, "%s:%u", en->file, en->line);
    refuse(e, "%s: [plugin.%s] enabled: not a boolean", where, local.name);
    close_lib(dl, fd);
    return;
  }
  if (!enabled) {
    e->disabled = true;
    free(e->reason);
    e->reason = strdup("disabled in the configuration");
    log_info("plugin %s (%s) disabled in the configuration", local.name, path);
    close_lib(dl, fd);
    return;
  }
  c8y_plugin *p = plugin_host_new_plugin(h, local.name, local.version, path);
  c8y_plugin **grown =
      p ? realloc(s->plugins, (s->n + 1) * sizeof *grown) : NULL;
  if (grown)
    s->plugins = grown;
  loader_lib *libs = grown ? realloc(s->libs, (s->n + 1) * sizeof *libs) : NULL;
  if (libs)
    s->libs = libs;
  if (!libs) {
    plugin_host_free_plugin(p);
    refuse(e, "out of memory");
    close_lib(dl, fd);
    return;
  }
  head = crash_plugin_head(local.name, path, &st);
  char why_init[512];
  int rc = plugin_host_init_plugin(p, &local, head, why_init, sizeof why_init);
  free(head);
  if (rc != C8Y_OK) {
    refuse(e, "%s", why_init);
    e->status = rc;
    plugin_host_free_plugin(p);
    close_lib(dl, fd);
    return;
  }
  plugin_host_report_unused_keys(p, false);
  if (start_workers && plugin_host_start_worker(p) != 0) {
    plugin_host_fini_plugin(p);
    registry_remove_plugin(h->reg, p);
    refuse(e, "cannot start its worker thread");
    plugin_host_free_plugin(p);
    close_lib(dl, fd);
    return;
  }
  s->libs[s->n] = (loader_lib){.dl = dl, .fd = fd};
  s->plugins[s->n++] = p;
  e->loaded = true;
  size_t np, nh;
  registry_count_for(h->reg, p, &np, &nh);
  log_info("plugin %s %s loaded from %s (%zu producers, %zu operation "
           "handlers)",
           p->name, p->version, path, np, nh);
}

/* The platform learns about quarantined plugins through one major alarm,
 * cleared once none is left (a marker file remembers it was raised). */
static void quarantine_alarm(plugin_host *h, const plugin_set *s) {
  char marker[4200];
  snprintf(marker, sizeof marker, "%s/%s/.alarm", h->state_dir,
           CRASH_QUARANTINE_DIR);
  char text[1024] = "";
  size_t len = 0;
  for (size_t i = 0; i < s->nentries; i++) {
    const loader_entry *e = &s->entries[i];
    if (!e->quarantined)
      continue;
    int n = snprintf(text + len, sizeof text - len, "%sPlugin %s %s",
                     len ? "; " : "", e->name ? e->name : e->file, e->reason);
    if (n < 0 || (size_t)n >= sizeof text - len)
      break;
    len += (size_t)n;
  }
  if (len) {
    const char *f[] = {"302", "c8y_PluginQuarantined", text};
    if (upstream_send(h->up, UPSTREAM_BY_TEMPLATE, "s/us", f, 3, 0,
                      UPSTREAM_NO_TAG) == C8Y_OK) {
      int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (fd >= 0)
        close(fd);
    }
  } else if (access(marker, F_OK) == 0) {
    const char *f[] = {"306", "c8y_PluginQuarantined"};
    if (upstream_send(h->up, UPSTREAM_BY_TEMPLATE, "s/us", f, 2, 0,
                      UPSTREAM_NO_TAG) == C8Y_OK)
      unlink(marker);
  }
}

void loader_load_all(plugin_host *h, const char *dir, bool start_workers,
                     plugin_set *out) {
  memset(out, 0, sizeof *out);
  if (start_workers && h->state_dir) {
    /* The daemon: record crashes from now on, and learn of the last one
     * before deciding what to load. */
    int rc = crash_install(h->state_dir);
    if (rc != 0)
      log_warning("crash attribution disabled: %s",
                  rc == C8Y_EINVAL ? "state dir path too long"
                                   : "cannot install the signal handlers");
    crash_take_record(h->state_dir);
    out->state_dir = strdup(h->state_dir);
  }
  load_dir(h, dir, start_workers, out);
  if (out->state_dir)
    quarantine_alarm(h, out);
}

void loader_load_file(plugin_host *h, const char *path, bool start_workers,
                      plugin_set *out) {
  memset(out, 0, sizeof *out);
  load_one(h, path, start_workers, out);
}

static void refuse_dir(plugin_set *out, const char *dir, const char *sep,
                       const char *why) {
  log_error("plugin dir %s%s%s; refusing to load any plugin from it", dir, sep,
            why);
  char buf[4400];
  snprintf(buf, sizeof buf, "plugin dir %s%s%s", dir, sep, why);
  out->dir_refused = strdup(buf);
}

static void load_dir(plugin_host *h, const char *dir, bool start_workers,
                     plugin_set *out) {
  struct stat st;
  if (stat(dir, &st) != 0) {
    log_warning("plugin dir %s: %s; no plugins loaded", dir, strerror(errno));
    return;
  }
  const char *why = unsafe_mode(&st);
  char abuf[4200];
  if (why) {
    refuse_dir(out, dir, " ", why);
    return;
  }
  if ((why = unsafe_ancestor(dir, abuf, sizeof abuf))) {
    refuse_dir(out, dir, ": ", why);
    return;
  }
  DIR *d = opendir(dir);
  if (!d) {
    log_error("plugin dir %s: %s; no plugins loaded", dir, strerror(errno));
    return;
  }
  char **names = NULL;
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || !has_so_suffix(de->d_name))
      continue;
    char **grown = realloc(names, (n + 1) * sizeof *grown);
    if (!grown)
      break;
    names = grown;
    if ((names[n] = strdup(de->d_name)))
      n++;
  }
  closedir(d);
  if (n > 1) /* an empty dir has no array at all */
    qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    load_one(h, path, start_workers, out);
    free(names[i]);
  }
  free(names);
}

void loader_stop_all(plugin_set *s) {
  /* Stop every worker first, so one slow plugin does not delay the others'
   * stop, then wait for them within one shared budget. */
  long long start = clock_mono_ms();
  for (size_t i = s->n; i-- > 0;) {
    c8y_plugin *p = s->plugins[i];
    long long left = LOADER_STOP_BUDGET_MS - (clock_mono_ms() - start);
    plugin_host_stop_worker_within(p, left > 0 ? (int)left : 0);
    plugin_host_fini_plugin(p);
  }
  if (s->state_dir)
    crash_reset_streaks(s->state_dir); /* a clean stop */
}

void loader_release_all(plugin_set *s, registry *reg) {
  for (size_t i = s->n; i-- > 0;) {
    c8y_plugin *p = s->plugins[i];
    if (p->abandoned) {
      /* Its thread may still run plugin code that reaches its handle and
       * registrations: they stay allocated, out of the registry. */
      registry_forget_plugin(reg, p);
      continue;
    }
    registry_remove_plugin(reg, p);
    plugin_host_free_plugin(p);
    close_lib(s->libs[i].dl, s->libs[i].fd);
  }
  free(s->plugins);
  free(s->libs);
  for (size_t i = 0; i < s->nentries; i++) {
    free(s->entries[i].file);
    free(s->entries[i].name);
    free(s->entries[i].version);
    free(s->entries[i].reason);
  }
  free(s->entries);
  free(s->dir_refused);
  free(s->state_dir);
  memset(s, 0, sizeof *s);
}

size_t loader_failures(const plugin_set *s) {
  size_t n = s->dir_refused ? 1 : 0;
  for (size_t i = 0; i < s->nentries; i++)
    n += !s->entries[i].loaded && !s->entries[i].disabled;
  return n;
}

void loader_print(const plugin_set *s, registry *reg, FILE *out) {
  if (s->dir_refused) {
    fprintf(out, "refused  all plugins: %s\n", s->dir_refused);
    return;
  }
  if (s->nentries == 0) {
    fprintf(out, "no plugins found\n");
    return;
  }
  for (size_t i = 0; i < s->nentries; i++) {
    const loader_entry *e = &s->entries[i];
    fprintf(out, "%-8s %-16s %-10s %s\n",
            e->loaded        ? "loaded"
            : e->disabled    ? "disabled"
            : e->quarantined ? "quarantined"
                             : "refused",
            e->name ? e->name : "-",
            e->version && *e->version ? e->version : "-", e->file);
    if (!e->loaded) {
      fprintf(out, "         reason: %s\n", e->reason ? e->reason : "?");
      continue;
    }
    for (size_t k = 0; k < s->n; k++) {
      c8y_plugin *p = s->plugins[k];
      if (strcmp(p->path, e->file) != 0)
        continue;
      for (size_t j = 0; j < registry_handler_count(reg); j++) {
        const reg_handler *hd = registry_handler_at(reg, j);
        if (hd->plugin == p)
          fprintf(out, "         operation %s %s\n",
                  hd->template_id ? hd->template_id : "-", hd->fragment);
      }
      for (size_t j = 0; j < registry_producer_count(reg); j++) {
        const reg_producer *pr = registry_producer_at(reg, j);
        if (pr->plugin == p)
          fprintf(out, "         producer %s every %u ms\n", pr->name,
                  pr->interval_ms);
      }
    }
  }
}

size_t loader_status_note(const plugin_set *s, char *buf, size_t len) {
  size_t n = 0, used = 0;
  if (len)
    buf[0] = '\0';
  for (size_t i = 0; i < s->nentries; i++) {
    const loader_entry *e = &s->entries[i];
    if (!e->quarantined)
      continue;
    n++;
    if (used < len) {
      int w = snprintf(buf + used, len - used, "%s%s",
                       n == 1 ? "; quarantined plugins: " : ", ",
                       e->name ? e->name : e->file);
      if (w > 0)
        used += (size_t)w;
    }
  }
  return n;
}
