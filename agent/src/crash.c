#include "crash.h"

#include "fsutil.h"
#include "log.h"

#include <c8y/plugin.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
#define NFATAL (sizeof fatal_signals / sizeof *fatal_signals)

/* Written once by crash_install before any plugin runs, read only by the
 * handler afterwards. */
static char record_path[4096];
static struct sigaction previous[NFATAL];
static bool installed;

static _Thread_local const char *cur_head;
static _Thread_local char cur_what[192];
static _Thread_local void *alt_stack;

/* ---- the handler: async-signal-safe calls only ---- */

static void put(int fd, const char *s) {
  size_t n = 0;
  while (s[n])
    n++;
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w <= 0)
      return;
    s += w;
    n -= (size_t)w;
  }
}

static void put_int(int fd, int v) {
  char buf[16];
  size_t i = sizeof buf;
  buf[--i] = '\0';
  unsigned u = v < 0 ? 0u : (unsigned)v;
  do {
    buf[--i] = (char)('0' + u % 10);
    u /= 10;
  } while (u && i > 0);
  put(fd, buf + i);
}

static void on_fatal(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  int saved = errno;
  int fd = open(record_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd >= 0) {
    put(fd, "signal=");
    put_int(fd, sig);
    put(fd, "\n");
    const char *head = cur_head;
    if (head) {
      put(fd, head);
      put(fd, "callback=");
      put(fd, cur_what);
      put(fd, "\n");
    }
    fsync(fd);
    close(fd);
  }
  for (size_t i = 0; i < NFATAL; i++)
    if (fatal_signals[i] == sig)
      sigaction(sig, &previous[i], NULL);
  errno = saved;
  /* A fault re-executes the faulting instruction on return and meets the
   * restored handler; a signal that was sent (abort, kill) is sent again. */
  if (!si || si->si_code <= 0)
    raise(sig);
}

/* ---- installation and markers ---- */

int crash_install(const char *state_dir) {
  int n = snprintf(record_path, sizeof record_path, "%s/%s", state_dir,
                   CRASH_RECORD_FILE);
  if (n < 0 || (size_t)n >= sizeof record_path)
    return C8Y_EINVAL;
  if (installed)
    return 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < NFATAL; i++)
    if (sigaction(fatal_signals[i], &sa, &previous[i]) != 0)
      return C8Y_ENOTSUP;
  installed = true;
  crash_thread_init();
  return 0;
}

void crash_thread_init(void) {
  stack_t cur;
  if (alt_stack ||
      (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)))
    return; /* this thread has one already (a sanitizer runtime's, say) */
  size_t size = 64 * 1024;
  alt_stack = malloc(size);
  if (!alt_stack)
    return;
  stack_t ss = {.ss_sp = alt_stack, .ss_size = size, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) != 0) {
    free(alt_stack);
    alt_stack = NULL;
  }
}

void crash_thread_fini(void) {
  if (!alt_stack)
    return;
  stack_t ss = {.ss_flags = SS_DISABLE};
  sigaltstack(&ss, NULL);
  free(alt_stack);
  alt_stack = NULL;
}

char *crash_plugin_head(const char *name, const char *path,
                        const struct stat *st) {
  char *s = NULL;
  if (asprintf(&s, "plugin=%s\nfile=%s\nid=%llu:%llu:%lld:%lld.%09ld\n",
               name ? name : "", path, (unsigned long long)st->st_dev,
               (unsigned long long)st->st_ino, (long long)st->st_size,
               (long long)st->st_mtim.tv_sec, (long)st->st_mtim.tv_nsec) < 0)
    return NULL;
  return s;
}

void crash_enter(const char *head, const char *what, const char *detail) {
  snprintf(cur_what, sizeof cur_what, "%s%s%s", what, detail ? " " : "",
           detail ? detail : "");
  cur_head = head;
}

void crash_leave(void) { cur_head = NULL; }

/* ---- records and the quarantine database ---- */

/* "<a>/<b>" into out; false (out empty) when it does not fit. */
static bool join(char *out, size_t len, const char *a, const char *b) {
  int n = snprintf(out, len, "%s/%s", a, b);
  if (n < 0 || (size_t)n >= len) {
    out[0] = '\0';
    return false;
  }
  return true;
}

typedef struct kv {
  int signal;
  int crashes;
  char plugin[64];
  char file[4096];
  char id[128];
  char callback[192]; /* record: callback=, quarantine: last= */
} kv;

static void copy_field(char *dst, size_t len, const char *src) {
  size_t n = strcspn(src, "\n");
  if (n >= len)
    n = len - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Parses key=value lines; unknown keys and torn lines are ignored. */
static bool read_kv(const char *path, kv *out) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "re");
  if (!f)
    return false;
  char line[4200];
  while (fgets(line, sizeof line, f)) {
    char *eq = strchr(line, '=');
    if (!eq)
      continue;
    *eq = '\0';
    const char *v = eq + 1;
    if (strcmp(line, "signal") == 0)
      out->signal = atoi(v);
    else if (strcmp(line, "crashes") == 0)
      out->crashes = atoi(v);
    else if (strcmp(line, "plugin") == 0)
      copy_field(out->plugin, sizeof out->plugin, v);
    else if (strcmp(line, "file") == 0)
      copy_field(out->file, sizeof out->file, v);
    else if (strcmp(line, "id") == 0)
      copy_field(out->id, sizeof out->id, v);
    else if (strcmp(line, "callback") == 0 || strcmp(line, "last") == 0)
      copy_field(out->callback, sizeof out->callback, v);
  }
  fclose(f);
  return true;
}

static const char *signal_name(int sig) {
  switch (sig) {
  case SIGSEGV:
    return "SIGSEGV";
  case SIGBUS:
    return "SIGBUS";
  case SIGILL:
    return "SIGILL";
  case SIGFPE:
    return "SIGFPE";
  case SIGABRT:
    return "SIGABRT";
  default:
    return "a fatal signal";
  }
}

/* Quarantine names are plugin names; a crash before the descriptor was read
 * (a constructor) uses the file name without .so, made safe. */
static void quarantine_name(const kv *r, char *out, size_t len) {
  const char *src = r->plugin;
  char base[256];
  if (!*src) {
    const char *slash = strrchr(r->file, '/');
    copy_field(base, sizeof base, slash ? slash + 1 : r->file);
    size_t n = strlen(base);
    if (n > 3 && strcmp(base + n - 3, ".so") == 0)
      base[n - 3] = '\0';
    for (char *c = base; *c; c++)
      if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' ||
            *c == '-'))
        *c = '_';
    src = *base ? base : "unknown";
  }
  /* valid_name's limit, so --clear-quarantine accepts every name. */
  snprintf(out, len, "%.64s", src);
}

static bool valid_name(const char *name) {
  if (!*name || strlen(name) > 64)
    return false;
  for (const char *c = name; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' ||
          *c == '-'))
      return false;
  return true;
}

static int write_entry(const char *dir, const char *name, const kv *e) {
  char path[4200], tmp[4300];
  char tmpname[128];
  snprintf(tmpname, sizeof tmpname, ".%.64s.tmp", name);
  if (!join(path, sizeof path, dir, name) ||
      !join(tmp, sizeof tmp, dir, tmpname)) {
    errno = ENAMETOOLONG;
    return C8Y_EINVAL;
  }
  FILE *f = fopen(tmp, "we");
  if (!f)
    return C8Y_EIO;
  fprintf(f, "crashes=%d\nplugin=%s\nfile=%s\nid=%s\nlast=%s\n", e->crashes,
          e->plugin, e->file, e->id, e->callback);
  bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    int saved = errno;
    unlink(tmp);
    errno = saved;
    return C8Y_EIO;
  }
  return 0;
}

/* Removes the entries below the threshold except `keep`. */
static void end_streaks(const char *dir, const char *keep) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || (keep && strcmp(de->d_name, keep) == 0))
      continue;
    char path[4200];
    kv e;
    if (!join(path, sizeof path, dir, de->d_name))
      continue;
    if (read_kv(path, &e) && e.crashes < CRASH_QUARANTINE_AFTER)
      unlink(path);
  }
  closedir(d);
}

static void quarantine_dir(const char *state_dir, char *out, size_t len) {
  join(out, len, state_dir, CRASH_QUARANTINE_DIR);
}

bool crash_take_record(const char *state_dir) {
  char path[4200], dir[4200];
  join(path, sizeof path, state_dir, CRASH_RECORD_FILE);
  quarantine_dir(state_dir, dir, sizeof dir);
  kv r;
  if (!read_kv(path, &r))
    return false;
  unlink(path);
  if (!*r.file) {
    log_error("the previous run died of %s outside any plugin callback",
              signal_name(r.signal));
    end_streaks(dir, NULL);
    return true;
  }
  char name[80];
  quarantine_name(&r, name, sizeof name);
  log_error("the previous run died of %s in plugin %s (%s) during %s",
            signal_name(r.signal), name, r.file,
            *r.callback ? r.callback : "an unknown callback");
  if (fsutil_mkdir_p(dir, 0750) != 0) {
    log_error("%s: %s; the crash is not counted", dir, strerror(errno));
    return true;
  }
  char epath[4300];
  join(epath, sizeof epath, dir, name);
  kv e;
  bool had = read_kv(epath, &e);
  int crashes = had && strcmp(e.id, r.id) == 0 ? e.crashes + 1 : 1;
  e = r;
  e.crashes = crashes;
  snprintf(e.callback, sizeof e.callback, "%.150s (%s)", r.callback,
           signal_name(r.signal));
  if (write_entry(dir, name, &e) != 0)
    log_error("%s: cannot record the crash: %s", epath, strerror(errno));
  end_streaks(dir, name);
  if (crashes >= CRASH_QUARANTINE_AFTER)
    log_error("plugin %s crashed the agent %d times in a row: quarantined, it "
              "is not loaded until its file changes or `c8y-agent "
              "--clear-quarantine %s` is run",
              name, crashes, name);
  else
    log_warning("plugin %s: crash %d of %d before it is quarantined", name,
                crashes, CRASH_QUARANTINE_AFTER);
  return true;
}

static bool same_file(const kv *e, const struct stat *st) {
  char *head = crash_plugin_head("", "", st);
  if (!head)
    return true; /* cannot tell: keep the quarantine */
  const char *id = strstr(head, "id=");
  bool same = id && strncmp(id + 3, e->id, strlen(e->id)) == 0 &&
              id[3 + strlen(e->id)] == '\n';
  free(head);
  return same;
}

bool crash_quarantined(const char *state_dir, const char *path,
                       const struct stat *st, char *why, size_t whylen,
                       char *name, size_t namelen) {
  char dir[4200];
  quarantine_dir(state_dir, dir, sizeof dir);
  DIR *d = opendir(dir);
  if (!d)
    return false;
  bool found = false;
  struct dirent *de;
  while (!found && (de = readdir(d))) {
    if (de->d_name[0] == '.')
      continue;
    char epath[4300];
    kv e;
    if (!join(epath, sizeof epath, dir, de->d_name))
      continue;
    if (!read_kv(epath, &e) || strcmp(e.file, path) != 0 ||
        e.crashes < CRASH_QUARANTINE_AFTER)
      continue;
    if (!same_file(&e, st)) {
      log_notice("plugin %s: %s changed since it was quarantined; loading it "
                 "again",
                 de->d_name, path);
      unlink(epath);
      continue;
    }
    snprintf(why, whylen,
             "quarantined: it crashed the agent %d times in a row (last: %s); "
             "replace the file or run c8y-agent --clear-quarantine %s",
             e.crashes, e.callback, de->d_name);
    snprintf(name, namelen, "%s", de->d_name);
    found = true;
  }
  closedir(d);
  return found;
}

void crash_reset_streaks(const char *state_dir) {
  char dir[4200];
  quarantine_dir(state_dir, dir, sizeof dir);
  end_streaks(dir, NULL);
}

int crash_clear_quarantine(const char *state_dir, const char *name) {
  if (!valid_name(name)) {
    errno = EINVAL;
    return C8Y_EINVAL;
  }
  char dir[4200], path[4300];
  quarantine_dir(state_dir, dir, sizeof dir);
  if (!join(path, sizeof path, dir, name)) {
    errno = ENAMETOOLONG;
    return C8Y_EINVAL;
  }
  if (unlink(path) == 0)
    return 0;
  return errno == ENOENT ? C8Y_ESTATE : C8Y_EIO;
}
