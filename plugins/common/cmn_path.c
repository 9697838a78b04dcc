#define _GNU_SOURCE
#include "cmn_path.h"

#include "trust.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LINKS 40 /* the kernel's own limit */
#define REST_MAX 8192

typedef enum walk_kind {
  WALK_PROGRAM, /* everything on the way and the file: trusted writers only */
  WALK_DIR,     /* the same for a directory that must not gain entries */
  WALK_READ     /* follow symlinks only where trusted writers put them */
} walk_kind;

typedef struct walker {
  walk_kind kind;
  uid_t also;
  int dfd;          /* O_PATH descriptor of the directory reached */
  struct stat dst;  /* its stat */
  char shown[4096]; /* its real path, "" for / */
  char *why;
  size_t n;
} walker;

__attribute__((format(printf, 2, 3))) static int refuse(walker *w,
                                                        const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->why, w->n, fmt, ap);
  va_end(ap);
  return -1;
}

static const char *dir_name(const walker *w) {
  return w->shown[0] ? w->shown : "/";
}

/* Whether an entry (stat e) of the current directory can only have been
 * put there, and can only be replaced, by trusted writers: the directory is
 * theirs alone, or it is sticky and both it and the entry are theirs. */
static bool entry_protected(const walker *w, const struct stat *e) {
  if (trust_stat(&w->dst, w->also))
    return true;
  return (w->dst.st_mode & S_ISVTX) && trust_writer(w->dst.st_uid, w->also) &&
         trust_writer(e->st_uid, w->also);
}

/* Why entry_protected refused `name` (stat e). */
static int refuse_entry(walker *w, const char *name, const struct stat *e,
                        const char *what) {
  char why[160];
  if ((w->dst.st_mode & S_ISVTX) && trust_writer(w->dst.st_uid, w->also)) {
    trust_why(e, w->also, why, sizeof why);
    return refuse(w, "%s/%s %s in the sticky directory %s%s", w->shown, name,
                  why, dir_name(w), what);
  }
  trust_why(&w->dst, w->also, why, sizeof why);
  if (S_ISLNK(e->st_mode))
    return refuse(w, "%s/%s is a symlink in %s, which %s%s", w->shown, name,
                  dir_name(w), why, what);
  return refuse(w, "%s %s", dir_name(w), why);
}

static int enter_root(walker *w) {
  if (w->dfd >= 0)
    close(w->dfd);
  w->dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  w->shown[0] = '\0';
  if (w->dfd < 0 || fstat(w->dfd, &w->dst) != 0)
    return refuse(w, "cannot open /: %s", strerror(errno));
  return 0;
}

/* Moves into directory `name` of the current one (stat e, not a symlink). */
static int enter(walker *w, const char *name, const struct stat *e) {
  int fd = openat(w->dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    int err = errno;
    if (fd >= 0)
      close(fd);
    return refuse(w, "cannot open %s/%s: %s", w->shown, name, strerror(err));
  }
  if (st.st_dev != e->st_dev || st.st_ino != e->st_ino) {
    close(fd);
    return refuse(w, "%s/%s changed while it was checked", w->shown, name);
  }
  close(w->dfd);
  w->dfd = fd;
  w->dst = st;
  size_t len = strlen(w->shown);
  if (len + 1 + strlen(name) >= sizeof w->shown)
    return refuse(w, "path too long: %s/%s", w->shown, name);
  snprintf(w->shown + len, sizeof w->shown - len, "/%s", name);
  return 0;
}

static int enter_parent(walker *w) {
  int fd = openat(w->dfd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &w->dst) != 0) {
    int err = errno;
    if (fd >= 0)
      close(fd);
    return refuse(w, "cannot open %s/..: %s", w->shown, strerror(err));
  }
  close(w->dfd);
  w->dfd = fd;
  char *slash = strrchr(w->shown, '/');
  if (slash)
    *slash = '\0';
  return 0;
}

/* The last component for WALK_READ: opened without following a symlink and
 * without blocking on a FIFO, checked to be the entry that was examined. */
static int open_final(walker *w, const char *name, const struct stat *e) {
  int fd = openat(w->dfd, name,
                  O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    int err = errno;
    if (fd >= 0)
      close(fd);
    errno = err;
    return refuse(w, "cannot open %s/%s: %s", w->shown, name, strerror(err));
  }
  if (st.st_dev != e->st_dev || st.st_ino != e->st_ino) {
    close(fd);
    errno = EAGAIN;
    return refuse(w, "%s/%s changed while it was opened", w->shown, name);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    errno = EINVAL;
    return refuse(w, "%s/%s is not a regular file", w->shown, name);
  }
  /* A hard link to a file the directory's writers may not read would
   * otherwise pass for theirs (where the kernel does not refuse to create
   * it: fs.protected_hardlinks = 0). */
  if (st.st_nlink > 1 && !entry_protected(w, &st)) {
    close(fd);
    errno = EPERM;
    char why[160];
    trust_why(&w->dst, w->also, why, sizeof why);
    return refuse(w, "%s/%s has %lu hard links in %s, which %s; not read",
                  w->shown, name, (unsigned long)st.st_nlink, dir_name(w), why);
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

/* The last component for WALK_PROGRAM and WALK_DIR. */
static int check_final(walker *w, const char *name, const struct stat *e) {
  char why[160];
  if (w->kind == WALK_DIR && !S_ISDIR(e->st_mode))
    return refuse(w, "%s/%s is not a directory", w->shown, name);
  if (w->kind == WALK_PROGRAM && !S_ISREG(e->st_mode))
    return refuse(w, "%s/%s is not a regular file", w->shown, name);
  if (!trust_stat(e, w->also)) {
    trust_why(e, w->also, why, sizeof why);
    return refuse(w, "%s/%s %s", w->shown, name, why);
  }
  return 0;
}

/* A missing entry may be created by whoever can write its directory. */
static int check_missing_dir(walker *w, const char *name) {
  if (trust_stat(&w->dst, w->also))
    return 0;
  char why[160];
  trust_why(&w->dst, w->also, why, sizeof why);
  return refuse(w, "%s/%s does not exist and %s %s", w->shown, name,
                dir_name(w), why);
}

/* Takes the next component of rest (advancing *pos) into name; false at
 * the end. */
static bool next_component(const char *rest, size_t *pos, char *name,
                           size_t cap) {
  while (rest[*pos] == '/')
    (*pos)++;
  if (!rest[*pos])
    return false;
  size_t len = strcspn(rest + *pos, "/");
  snprintf(name, cap, "%.*s", (int)(len < cap ? len : cap - 1), rest + *pos);
  *pos += len;
  return true;
}

static bool at_end(const char *rest, size_t pos) {
  return rest[pos + strspn(rest + pos, "/")] == '\0';
}

/* Walks absolute `path`. WALK_READ returns an open descriptor; the others
 * 0. -1 with why set on refusal; *missing (nullable) tells that a
 * component does not exist (errno ENOENT). */
static int walk(const char *path, walk_kind kind, uid_t also, bool *missing,
                char *why, size_t n) {
  walker w = {.kind = kind, .also = also, .dfd = -1, .why = why, .n = n};
  if (missing)
    *missing = false;
  if (path[0] != '/')
    return refuse(&w, "'%s' is not an absolute path", path);
  char *rest = malloc(REST_MAX);
  if (!rest)
    return refuse(&w, "out of memory");
  snprintf(rest, REST_MAX, "%s", path);
  size_t pos = 0;
  int links = 0, rc = enter_root(&w);
  if (rc == 0 && kind != WALK_READ && !trust_stat(&w.dst, also) &&
      !(w.dst.st_mode & S_ISVTX)) {
    char r[160];
    trust_why(&w.dst, also, r, sizeof r);
    rc = refuse(&w, "/ %s", r);
  }
  char name[256];
  while (rc == 0) {
    if (!next_component(rest, &pos, name, sizeof name)) {
      /* "/" itself, or a path ending in "." or "..". */
      if (kind == WALK_READ)
        rc = refuse(&w, "%s is not a regular file", path);
      else if (kind == WALK_PROGRAM)
        rc = refuse(&w, "%s is a directory", path);
      else if (!trust_stat(&w.dst, also)) {
        char r[160];
        trust_why(&w.dst, also, r, sizeof r);
        rc = refuse(&w, "%s %s", dir_name(&w), r);
      }
      break;
    }
    bool last = at_end(rest, pos);
    if (strcmp(name, ".") == 0)
      continue;
    if (strcmp(name, "..") == 0) {
      rc = enter_parent(&w);
      continue;
    }
    struct stat e;
    if (fstatat(w.dfd, name, &e, AT_SYMLINK_NOFOLLOW) != 0) {
      int err = errno;
      if (err == ENOENT && missing)
        *missing = true;
      /* What does not exist yet may be created by the directory's writers:
       * for a program or a PATH directory they must be trusted. */
      if (err == ENOENT && kind != WALK_READ)
        rc = check_missing_dir(&w, name);
      else
        rc = refuse(&w, "cannot open %s: %s", path, strerror(err));
      errno = err;
      break;
    }
    bool is_link = S_ISLNK(e.st_mode);
    /* Programs: every entry on the way. Reads: what decides where the path
     * leads (a symlink). */
    if ((kind != WALK_READ || is_link) && !entry_protected(&w, &e)) {
      rc = refuse_entry(&w, name, &e, is_link ? "; not followed" : "");
      errno = EPERM;
      break;
    }
    if (is_link) {
      char target[4096];
      ssize_t tl = readlinkat(w.dfd, name, target, sizeof target - 1);
      if (tl <= 0 || ++links > MAX_LINKS) {
        rc = refuse(&w, "%s/%s: %s", w.shown, name,
                    tl <= 0 ? strerror(errno) : "too many symlinks");
        break;
      }
      target[tl] = '\0';
      if (strlen(target) + 1 + strlen(rest + pos) >= REST_MAX) {
        rc = refuse(&w, "%s/%s: path too long", w.shown, name);
        break;
      }
      char *spliced = malloc(REST_MAX);
      if (!spliced) {
        rc = refuse(&w, "out of memory");
        break;
      }
      size_t tlen = strlen(target);
      memcpy(spliced, target, tlen);
      spliced[tlen] = '/';
      memcpy(spliced + tlen + 1, rest + pos, strlen(rest + pos) + 1);
      free(rest);
      rest = spliced;
      pos = 0;
      if (target[0] == '/')
        rc = enter_root(&w);
      continue;
    }
    if (!last) {
      if (!S_ISDIR(e.st_mode)) {
        rc = refuse(&w, "%s/%s is not a directory", w.shown, name);
        break;
      }
      rc = enter(&w, name, &e);
      continue;
    }
    rc = kind == WALK_READ ? open_final(&w, name, &e)
                           : check_final(&w, name, &e);
    break;
  }
  int saved = errno;
  free(rest);
  if (w.dfd >= 0)
    close(w.dfd);
  errno = saved;
  return rc;
}

/* `path` made absolute against the working directory. */
static int absolute(const char *path, char *out, size_t cap) {
  if (path[0] == '/')
    return snprintf(out, cap, "%s", path) < (int)cap ? 0 : -1;
  char cwd[4096];
  if (!getcwd(cwd, sizeof cwd))
    return -1;
  return snprintf(out, cap, "%s/%s", cwd, path) < (int)cap ? 0 : -1;
}

int cmn_path_check_program(const char *prog, uid_t also, int *found, char *why,
                           size_t n) {
  int dummy;
  if (!found)
    found = &dummy;
  *found = 1;
  char full[4096];
  if (strchr(prog, '/')) {
    if (absolute(prog, full, sizeof full) != 0) {
      snprintf(why, n, "%s: cannot make the path absolute", prog);
      return -1;
    }
    bool missing;
    int rc = walk(full, WALK_PROGRAM, also, &missing, why, n);
    *found = !missing;
    return rc < 0 ? -1 : 0;
  }
  /* As execvp searches, with glibc's default when PATH is unset. */
  const char *path = getenv("PATH");
  if (!path)
    path = "/bin:/usr/bin";
  while (1) {
    size_t len = strcspn(path, ":");
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", (int)len, path);
    if (!dir[0])
      snprintf(dir, sizeof dir, ".");
    char d[4096];
    if (absolute(dir, d, sizeof d) == 0 &&
        snprintf(full, sizeof full, "%s/%s", d, prog) < (int)sizeof full) {
      struct stat st;
      if (stat(full, &st) == 0 && S_ISREG(st.st_mode) &&
          access(full, X_OK) == 0)
        return walk(full, WALK_PROGRAM, also, NULL, why, n) < 0 ? -1 : 0;
      /* Searched before the match: nobody untrusted may add `prog` here.
       * A directory this process cannot search is skipped by execvp too. */
      if (access(d, X_OK) == 0 && walk(d, WALK_DIR, also, NULL, why, n) < 0) {
        char inner[600];
        snprintf(inner, sizeof inner, "%s", why);
        snprintf(why, n, "%s would be searched in PATH directory %s: %s", prog,
                 d, inner);
        return -1;
      }
    }
    if (!path[len])
      break;
    path += len + 1;
  }
  *found = 0;
  return 0;
}

int cmn_path_check_dir(const char *dir, char *why, size_t n) {
  return walk(dir, WALK_DIR, (uid_t)-1, NULL, why, n) < 0 ? -1 : 0;
}

int cmn_path_check_fd(int fd, char *why, size_t n) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    snprintf(why, n, "%s", strerror(errno));
    return -1;
  }
  if (trust_stat(&st, (uid_t)-1))
    return 0;
  trust_why(&st, (uid_t)-1, why, n);
  return -1;
}

int cmn_path_open_read(const char *path, char *why, size_t n) {
  return walk(path, WALK_READ, (uid_t)-1, NULL, why, n);
}

/* ---- command lines ------------------------------------------------------ */

typedef struct cmd_scan {
  uid_t also;
  char *why;
  size_t n;
} cmd_scan;

static bool word_in(const char *w, const char *const *list) {
  for (; *list; list++)
    if (strcmp(w, *list) == 0)
      return true;
  return false;
}

/* Reserved words after which a command word follows. */
static const char *const reserved[] = {"if", "then",  "else",  "elif",
                                       "do", "while", "until", "!",
                                       "{",  "time",  NULL};
/* Commands that run their argument (after options) as the command. */
static const char *const wrappers[] = {"exec", "command", "nohup", "nice",
                                       "env",  "builtin", NULL};
/* Shells whose first operand is a script they run. */
static const char *const shells[] = {"sh",  "bash", "dash",    "ash",
                                     "ksh", "zsh",  "busybox", NULL};

static bool is_assignment(const char *w) {
  if (!((*w >= 'A' && *w <= 'Z') || (*w >= 'a' && *w <= 'z') || *w == '_'))
    return false;
  size_t k = strspn(w, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789_");
  return w[k] == '=';
}

/* Reads one shell word at *p into out (quotes removed). *literal = false
 * when its value is only known at run time. Stops at blanks and operators. */
static void read_word(const char **p, char *out, size_t cap, bool *literal) {
  size_t len = 0;
  *literal = true;
  const char *s = *p;
  while (*s && !strchr(" \t\n|&;()<>", *s)) {
    char c = *s++;
    if (c == '\'') {
      while (*s && *s != '\'') {
        if (len + 1 < cap)
          out[len++] = *s;
        s++;
      }
      if (*s)
        s++;
      continue;
    }
    if (c == '"') {
      while (*s && *s != '"') {
        if (*s == '\\' && s[1])
          s++;
        else if (*s == '$' || *s == '`')
          *literal = false;
        if (len + 1 < cap)
          out[len++] = *s;
        s++;
      }
      if (*s)
        s++;
      continue;
    }
    if (c == '\\' && *s)
      c = *s++;
    else if (strchr("$`*?[~", c))
      *literal = false;
    if (len + 1 < cap)
      out[len++] = c;
    else
      *literal = false; /* cut: not the real word */
  }
  out[len] = '\0';
  *p = s;
}

static int check_word(cmd_scan *c, const char *word) {
  int found;
  return cmn_path_check_program(word, c->also, &found, c->why, c->n);
}

int cmn_path_check_command(const char *shell, const char *cmd, uid_t also,
                           char *why, size_t n) {
  if (cmn_path_check_program(shell, also, NULL, why, n) != 0)
    return -1;
  cmd_scan c = {.also = also, .why = why, .n = n};
  bool at_command = true;  /* the next word is a command word */
  bool redirect = false;   /* the next word is a redirection's target */
  bool skip_name = false;  /* the next word is a name (for/case) */
  bool script_arg = false; /* the next operand is a script a shell runs */
  bool source_arg = false; /* the next word is a file . or source reads */
  char word[4096];
  const char *p = cmd;
  while (*p) {
    if (*p == ' ' || *p == '\t') {
      p++;
      continue;
    }
    if (*p == '#') {
      p += strcspn(p, "\n");
      continue;
    }
    if (*p == '<' || *p == '>') {
      p += strspn(p, "<>&|");
      redirect = true;
      continue;
    }
    if (strchr("\n|&;()", *p)) {
      p++;
      at_command = true;
      redirect = skip_name = script_arg = source_arg = false;
      continue;
    }
    bool literal;
    read_word(&p, word, sizeof word, &literal);
    if (redirect || skip_name) {
      redirect = skip_name = false;
      continue;
    }
    if (*p == '<' || *p == '>') {
      if (word[strspn(word, "0123456789")] == '\0')
        continue; /* 2>&1: a descriptor number */
    }
    if (source_arg || script_arg) {
      bool sourced = source_arg;
      if (script_arg && word[0] == '-') {
        if (strcmp(word, "-c") == 0)
          script_arg = false; /* the text follows, not a file */
        continue;
      }
      source_arg = script_arg = false;
      if (literal && (sourced || strchr(word, '/')) && check_word(&c, word))
        return -1;
      continue;
    }
    if (!at_command)
      continue;
    if (literal && is_assignment(word))
      continue;
    if (literal && word_in(word, reserved))
      continue;
    if (literal && (strcmp(word, "for") == 0 || strcmp(word, "case") == 0)) {
      skip_name = true;
      at_command = false;
      continue;
    }
    if (literal && word[0] == '-')
      continue; /* an option of a wrapper */
    at_command = false;
    if (!literal)
      continue;
    if (strcmp(word, ".") == 0 || strcmp(word, "source") == 0) {
      source_arg = true;
      continue;
    }
    if (check_word(&c, word))
      return -1;
    const char *base = strrchr(word, '/');
    base = base ? base + 1 : word;
    if (word_in(base, wrappers))
      at_command = true;
    else if (word_in(base, shells))
      script_arg = true;
  }
  return 0;
}

int cmn_path_check_key(const c8y_api *api, c8y_plugin *self, const char *key,
                       const char *cmd) {
  char why[1024];
  if (!cmd[0] ||
      cmn_path_check_command("/bin/sh", cmd, (uid_t)-1, why, sizeof why) == 0)
    return C8Y_OK;
  api->log(self, C8Y_LOG_ERROR,
           "%s: %s; only root and the agent's user may write what the agent "
           "runs",
           key, why);
  return C8Y_EINVAL;
}
