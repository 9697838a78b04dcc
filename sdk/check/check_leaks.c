/* check_leaks: see check_leaks.h. */
#include "check_leaks.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  size_t cap = 65536, n = 0, got;
  char *buf = malloc(cap);
  while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (n + 1 == cap) {
      char *grown = realloc(buf, cap * 2);
      if (!grown) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = grown;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf)
    buf[n] = '\0';
  return buf;
}

/* ---- valgrind XML ---- */

/* The text of the first <tag> in [s, end), entities decoded, into out. */
static bool tag_text(const char *s, const char *end, const char *tag, char *out,
                     size_t len) {
  char open[64], close[64];
  snprintf(open, sizeof open, "<%s>", tag);
  snprintf(close, sizeof close, "</%s>", tag);
  const char *a = strstr(s, open);
  if (!a || a >= end)
    return false;
  a += strlen(open);
  const char *b = strstr(a, close);
  if (!b || b > end)
    return false;
  static const struct {
    const char *ent, ch;
  } ents[] = {{"&lt;", '<'},
              {"&gt;", '>'},
              {"&amp;", '&'},
              {"&quot;", '"'},
              {"&apos;", '\''}};
  size_t o = 0;
  while (a < b && o + 1 < len) {
    bool done = false;
    for (size_t i = 0; i < sizeof ents / sizeof ents[0] && !done; i++) {
      size_t el = strlen(ents[i].ent);
      if ((size_t)(b - a) >= el && strncmp(a, ents[i].ent, el) == 0) {
        out[o++] = ents[i].ch;
        a += el;
        done = true;
      }
    }
    if (!done)
      out[o++] = *a++;
  }
  out[o] = '\0';
  return true;
}

/* "fn (file:line)" of the plugin's frames (callee first, at most 3,
 * joined by " < "), after ", via <fn>" of the frame the plugin called
 * (malloc, strdup). Whether there is one. */
static bool frames_text(const char *stack, const char *end, const char *object,
                        char *out, size_t len) {
  out[0] = '\0';
  int shown = 0;
  size_t used = 0;
  char callee[512] = "";
  for (const char *f = strstr(stack, "<frame>"); f && f < end && shown < 3;
       f = strstr(f + 1, "<frame>")) {
    const char *fe = strstr(f, "</frame>");
    if (!fe || fe > end)
      break;
    char obj[1024] = "", fn[512] = "?", file[512] = "", line[32] = "";
    tag_text(f, fe, "obj", obj, sizeof obj);
    tag_text(f, fe, "fn", fn, sizeof fn);
    tag_text(f, fe, "file", file, sizeof file);
    tag_text(f, fe, "line", line, sizeof line);
    if (strcmp(obj, object) != 0) {
      if (shown)
        break; /* back in the agent */
      snprintf(callee, sizeof callee, "%s", fn);
      continue;
    }
    int w = *file ? snprintf(out + used, len - used, "%s%s (%s:%s)",
                             shown ? " < " : "", fn, file, line)
                  : snprintf(out + used, len - used, "%s%s (in %s)",
                             shown ? " < " : "", fn, obj);
    if (w > 0 && (size_t)w < len - used)
      used += (size_t)w;
    shown++;
  }
  if (shown && *callee && used < len)
    snprintf(out + used, len - used, ", via %s", callee);
  return shown > 0;
}

int check_leaks_valgrind(const char *xml_path, const char *object, bool leaks,
                         check_leak_fn fn, void *ctx, size_t *others) {
  char *xml = slurp(xml_path);
  if (!xml)
    return -1;
  int n = 0;
  for (const char *e = strstr(xml, "<error>"); e;
       e = strstr(e + 1, "<error>")) {
    const char *end = strstr(e, "</error>");
    if (!end)
      break;
    char kind[64] = "", what[512] = "";
    tag_text(e, end, "kind", kind, sizeof kind);
    bool leak = strncmp(kind, "Leak_", 5) == 0;
    if (leak && strcmp(kind, "Leak_DefinitelyLost") != 0)
      continue;
    if (!tag_text(e, end, "what", what, sizeof what))
      tag_text(e, end, "text", what, sizeof what); /* a leak's <xwhat> */
    const char *stack = strstr(e, "<stack>");
    char frames[1024];
    if (!stack || stack > end ||
        !frames_text(stack, strstr(stack, "</stack>"), object, frames,
                     sizeof frames)) {
      (*others)++;
      continue;
    }
    if (leak && !leaks)
      continue;
    char detail[1600];
    snprintf(detail, sizeof detail, "%s (valgrind %s)", what, kind);
    fn(ctx, leak ? "leak" : "memory-error", frames, detail);
    n++;
  }
  free(xml);
  return n;
}

/* ---- sanitizer reports ---- */

/* The agent loads a plugin through /proc/self/fd/<n> (loader.c), so the
 * sanitizer knows the plugin's module by that name; nothing else in the
 * process has such a name. */
#define FD_MODULE "/proc/self/fd/"

/* A frame line "#1 in fn file:line:col <module>": the text between "in"
 * and the module into out (a plugin's fd name replaced by its path), and
 * whether the module is the plugin. */
static bool frame_line(const char *l, const char *object, char *out,
                       size_t len) {
  const char *lt = strrchr(l, '<'), *gt = strrchr(l, '>');
  if (!lt || !gt || gt < lt)
    return false;
  size_t mlen = (size_t)(gt - lt - 1);
  bool by_fd = mlen > strlen(FD_MODULE) &&
               strncmp(lt + 1, FD_MODULE, strlen(FD_MODULE)) == 0;
  bool ours =
      by_fd || (mlen == strlen(object) && strncmp(lt + 1, object, mlen) == 0);
  const char *in = strstr(l, " in ");
  const char *from = in ? in + 4 : strchr(l, ' '); /* after "#<n>" */
  if (!from)
    from = l;
  while (*from == ' ')
    from++;
  int text = lt - from > 0 ? (int)(lt - from - 1) : 0;
  snprintf(out, len, "%.*s", text, from);
  /* "(/proc/self/fd/5+0x129c)": unsymbolised, name the file instead */
  char *fd = strstr(out, FD_MODULE);
  if (fd) {
    char *end = fd + strlen(FD_MODULE);
    while (*end >= '0' && *end <= '9')
      end++;
    char rest[512];
    snprintf(rest, sizeof rest, "%s", end);
    snprintf(fd, len - (size_t)(fd - out), "%s%s", object, rest);
  }
  return ours;
}

static int asan_file(const char *path, const char *object, bool leaks,
                     check_leak_fn fn, void *ctx, size_t *others) {
  char *text = slurp(path);
  if (!text)
    return -1;
  int n = 0;
  char *save = NULL;
  char head[512] = "", frames[1024] = "", callee[256] = "";
  bool in_record = false, is_leak = false;
  int shown = 0; /* the plugin's frames; -1 once back in the agent */
  size_t used = 0;
  /* A record: a head line, then "#n" frame lines. */
  for (char *l = strtok_r(text, "\n", &save);;
       l = strtok_r(NULL, "\n", &save)) {
    const char *t = l;
    while (t && (*t == ' ' || *t == '\t'))
      t++;
    bool frame = t && *t == '#';
    if (in_record && !frame) {
      if (shown && (!is_leak || leaks)) {
        if (*callee && used < sizeof frames)
          snprintf(frames + used, sizeof frames - used, ", via %s", callee);
        fn(ctx, is_leak ? "leak" : "memory-error", frames, head);
        n++;
      } else if (!shown) {
        (*others)++;
      }
      in_record = false;
    }
    if (!l)
      break;
    if (frame && in_record) {
      char f[600];
      bool mine = frame_line(t, object, f, sizeof f);
      if (!mine && shown > 0)
        shown = -shown; /* back in the agent: the rest is not shown */
      if (!mine && shown == 0) {
        /* the function the plugin called, without its source location */
        snprintf(callee, sizeof callee, "%.255s", f);
        callee[strcspn(callee, " ")] = '\0';
      }
      if (mine && shown >= 0 && shown < 3) {
        int w = snprintf(frames + used, sizeof frames - used, "%s%s",
                         shown ? " < " : "", f);
        if (w > 0 && (size_t)w < sizeof frames - used)
          used += (size_t)w;
        shown++;
      }
      continue;
    }
    bool leak_head = strncmp(t, "Direct leak of ", 15) == 0;
    const char *err = strstr(t, "ERROR: AddressSanitizer: ");
    bool access_head = strncmp(t, "READ of size", 12) == 0 ||
                       strncmp(t, "WRITE of size", 13) == 0;
    if (err && !access_head) {
      /* the access line and the stack follow */
      snprintf(head, sizeof head, "%s (AddressSanitizer)",
               err + strlen("ERROR: AddressSanitizer: "));
      continue;
    }
    if (leak_head || access_head) {
      if (leak_head) {
        snprintf(head, sizeof head, "%s", t + strlen("Direct leak of "));
        char *from = strstr(head, " allocated from:");
        if (from)
          *from = '\0';
        snprintf(head + strlen(head), sizeof head - strlen(head),
                 " definitely lost (LeakSanitizer)");
      }
      in_record = true;
      is_leak = leak_head;
      shown = 0;
      used = 0;
      frames[0] = callee[0] = '\0';
    }
  }
  free(text);
  return n;
}

int check_leaks_asan(const char *dir, const char *prefix, const char *object,
                     bool leaks, check_leak_fn fn, void *ctx, size_t *others) {
  DIR *d = opendir(dir);
  if (!d)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
      continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    int k = asan_file(path, object, leaks, fn, ctx, others);
    if (k > 0)
      n += k;
  }
  closedir(d);
  return n;
}
