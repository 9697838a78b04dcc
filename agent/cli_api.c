/* c8y-agent send / status / ops: clients of the running agent's local API
 * (docs/local-api.md). */
#include "cli_api.h"

#include "config.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef C8Y_DEFAULT_RUNDIR
#define C8Y_DEFAULT_RUNDIR "/run/c8y-agent"
#endif

#define ANSWER_TIMEOUT_MS 15000
#define MAX_ANSWER (64 * 1024 * 1024)

typedef struct buf {
  char *data;
  size_t len, cap;
} buf;

static int buf_add(buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
      return -1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = 0;
  return 0;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: c8y-agent [-c FILE] send [--child ID] [--custom XID] "
          "[LINE...]\n"
          "       c8y-agent [-c FILE] status [--json]\n"
          "       c8y-agent [-c FILE] ops [--json]\n"
          "\n"
          "Talk to the running agent through its local API socket ([api] "
          "socket\n"
          "in the configuration, or --socket PATH, or $C8Y_AGENT_SOCKET).\n"
          "\n"
          "  send    queue SmartREST lines (one per argument, or one per line "
          "of\n"
          "          stdin without LINE arguments) through the agent's "
          "validation\n"
          "          and durable queue; --custom XID sends on s/uc/XID. Exit "
          "1 if a\n"
          "          line was refused (the reason is printed).\n"
          "  status  link, queue, operations, plugins and the last error\n"
          "  ops     recent operations and their outcome\n"
          "\n"
          "Exit status: 0 ok, 1 refused or failed, 2 usage, 3 the agent is "
          "not\n"
          "reachable.\n");
}

/* --socket, $C8Y_AGENT_SOCKET, the configuration, or the built-in default
 * when the configuration cannot be read by this user. */
static char *socket_path(const char *config, const char *opt, char *note,
                         size_t notelen, char **alt) {
  note[0] = 0;
  *alt = NULL;
  if (opt)
    return strdup(opt);
  const char *env = getenv("C8Y_AGENT_SOCKET");
  if (env && *env)
    return strdup(env);
  agent_config cfg;
  char err[1024];
  /* Only the path is wanted: the loader's warnings are not this tool's. */
  int level = log_get_level();
  log_set_level(LOG_LVL_ERROR);
  int rc = config_load(config, &cfg, err, sizeof err);
  log_set_level(level);
  if (rc != 0) {
    snprintf(note, notelen,
             "(the configuration could not be read: %s; tried the default "
             "socket)",
             err);
    return strdup(C8Y_DEFAULT_RUNDIR "/api.sock");
  }
  char *path = cfg.api_enabled ? strdup(cfg.api_socket) : NULL;
  if (path && cfg.api_socket_alt)
    *alt = strdup(cfg.api_socket_alt);
  if (!cfg.api_enabled)
    snprintf(note, notelen, "the local API is disabled in %s ([api] enabled)",
             config);
  config_free(&cfg);
  return path;
}

/* A connected socket, or -1 with errno set. */
static int connect_path(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
    return fd;
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}

/* path, or alt (where the agent binds when it cannot create the default
 * runtime dir) when nothing answers at path. */
static int connect_api(const char *path, const char *alt, const char *note) {
  int fd = connect_path(path);
  if (fd >= 0)
    return fd;
  int e = errno;
  if (alt && (e == ENOENT || e == ECONNREFUSED || e == EACCES)) {
    fd = connect_path(alt);
    if (fd >= 0)
      return fd;
  }
  if (e == ENOENT || e == ECONNREFUSED)
    fprintf(stderr,
            "c8y-agent: the agent is not running (%s %s%s%s)%s%s\n"
            "  start it with: systemctl start c8y-agent\n",
            e == ENOENT ? "no socket at" : "nothing listens on", path,
            alt ? " or " : "", alt ? alt : "", note[0] ? " " : "", note);
  else if (e == EACCES || e == EPERM)
    fprintf(stderr,
            "c8y-agent: %s: %s: run as root or the agent's user, or as a "
            "member of the group set in [api] group\n",
            path, strerror(e));
  else
    fprintf(stderr, "c8y-agent: cannot connect to %s: %s%s%s\n", path,
            strerror(e), note[0] ? " " : "", note);
  return -1;
}

/* Sends the requests, then reads every answer until the agent closes. */
static int exchange(int fd, const buf *req, buf *ans) {
  size_t off = 0;
  while (off < req->len) {
    ssize_t n = send(fd, req->data + off, req->len - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* refused peers are cut off: their one answer is still read */
    off += (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc = poll(&p, 1, ANSWER_TIMEOUT_MS);
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc <= 0) {
      fprintf(stderr, "c8y-agent: no answer from the agent within %d s\n",
              ANSWER_TIMEOUT_MS / 1000);
      return -1;
    }
    char chunk[8192];
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == ECONNRESET && ans->len > 0)
      return 0;
    if (n < 0) {
      fprintf(stderr, "c8y-agent: reading the answer: %s\n", strerror(errno));
      return -1;
    }
    if (n == 0)
      return 0;
    if (ans->len + (size_t)n > MAX_ANSWER || buf_add(ans, chunk, (size_t)n)) {
      fprintf(stderr, "c8y-agent: answer too large\n");
      return -1;
    }
  }
}

/* Next answer line (NUL-terminated in place), or NULL at the end. */
static char *next_line(char **cur) {
  char *s = *cur;
  if (!s || !*s)
    return NULL;
  char *nl = strchr(s, '\n');
  if (nl) {
    *nl = 0;
    *cur = nl + 1;
  } else {
    *cur = s + strlen(s);
  }
  return s;
}

static int add_request(buf *req, const char *verb, const char *xid,
                       const char *child, const char *line, size_t len) {
  char head[600];
  snprintf(head, sizeof head, "%s%s%s%s%s ", verb, xid ? " " : "",
           xid ? xid : "", child ? " --child " : "", child ? child : "");
  if (buf_add(req, head, strlen(head)) || buf_add(req, line, len) ||
      buf_add(req, "\n", 1))
    return -1;
  return 0;
}

static bool has_blank(const char *s) { return strpbrk(s, " \t\r\n") != NULL; }

/* Splits each argument at its line ends; empty lines are skipped. */
static int add_lines(buf *req, const char *verb, const char *xid,
                     const char *child, const char *text, size_t *count) {
  while (*text) {
    size_t len = strcspn(text, "\n");
    size_t l = len;
    if (l > 0 && text[l - 1] == '\r')
      l--;
    if (l > 0) {
      if (add_request(req, verb, xid, child, text, l) != 0)
        return -1;
      (*count)++;
    }
    text += len;
    if (*text == '\n')
      text++;
  }
  return 0;
}

static int cmd_send(const char *path, const char *alt, const char *note,
                    int argc, char **argv) {
  const char *child = NULL, *xid = NULL;
  int i = 0;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--child") == 0 && i + 1 < argc)
      child = argv[++i];
    else if (strcmp(argv[i], "--custom") == 0 && i + 1 < argc)
      xid = argv[++i];
    else if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      fprintf(stderr, "c8y-agent send: unknown option '%s' (see --help)\n",
              argv[i]);
      return 2;
    } else
      break;
  }
  if ((child && (!*child || has_blank(child))) ||
      (xid && (!*xid || has_blank(xid)))) {
    fprintf(stderr, "c8y-agent send: --child and --custom take one word\n");
    return 2;
  }
  buf req = {0};
  size_t count = 0;
  const char *verb = xid ? "custom" : "send";
  int rc = 0;
  if (i < argc) {
    for (; i < argc && rc == 0; i++)
      rc = add_lines(&req, verb, xid, child, argv[i], &count);
  } else {
    char chunk[8192];
    buf in = {0};
    size_t n;
    while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
      rc = buf_add(&in, chunk, n);
    if (rc == 0 && in.data)
      rc = add_lines(&req, verb, xid, child, in.data, &count);
    free(in.data);
  }
  if (rc != 0) {
    fprintf(stderr, "c8y-agent: out of memory\n");
    free(req.data);
    return 1;
  }
  if (count == 0) {
    fprintf(stderr, "c8y-agent send: no line to send\n");
    free(req.data);
    return 2;
  }
  int fd = connect_api(path, alt, note);
  if (fd < 0) {
    free(req.data);
    return 3;
  }
  buf ans = {0};
  rc = exchange(fd, &req, &ans);
  close(fd);
  int status = rc == 0 ? 0 : 1;
  char *cur = ans.data;
  size_t answered = 0;
  for (char *l; rc == 0 && (l = next_line(&cur));) {
    answered++;
    if (strncmp(l, "ok", 2) == 0) {
      printf("line %zu: %s\n", answered, l[2] ? l + 3 : "ok");
    } else {
      fprintf(stderr, "c8y-agent: line %zu refused: %s\n", answered,
              strncmp(l, "error ", 6) == 0 ? l + 6 : l);
      status = 1;
    }
  }
  if (rc == 0 && answered < count) {
    fprintf(stderr, "c8y-agent: %zu of %zu lines got no answer\n",
            count - answered, count);
    status = 1;
  }
  free(req.data);
  free(ans.data);
  return status;
}

/* status and ops: "ok <n>" + n lines, or "ok <json>" with json. */
static int cmd_query(const char *path, const char *alt, const char *note,
                     const char *verb, int argc, char **argv) {
  bool json = false;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      json = true;
    } else {
      fprintf(stderr, "c8y-agent %s: unknown argument '%s' (see --help)\n",
              verb, argv[i]);
      return 2;
    }
  }
  buf req = {0};
  char line[64];
  snprintf(line, sizeof line, "%s%s\n", verb, json ? " json" : "");
  if (buf_add(&req, line, strlen(line)) != 0)
    return 1;
  int fd = connect_api(path, alt, note);
  if (fd < 0) {
    free(req.data);
    return 3;
  }
  buf ans = {0};
  int rc = exchange(fd, &req, &ans);
  close(fd);
  free(req.data);
  if (rc != 0) {
    free(ans.data);
    return 1;
  }
  char *cur = ans.data;
  char *first = next_line(&cur);
  int status = 0;
  if (!first) {
    fprintf(stderr, "c8y-agent: the agent closed the connection without an "
                    "answer\n");
    status = 1;
  } else if (strncmp(first, "ok ", 3) != 0) {
    fprintf(stderr, "c8y-agent: %s\n",
            strncmp(first, "error ", 6) == 0 ? first + 6 : first);
    status = 1;
  } else if (json) {
    printf("%s\n", first + 3);
  } else if (strcmp(first, "ok 0") == 0 && strcmp(verb, "ops") == 0) {
    printf("no operation finished since the agent started\n");
  } else {
    for (char *l; (l = next_line(&cur));)
      printf("%s\n", l);
  }
  free(ans.data);
  return status;
}

bool cli_api_is_command(const char *arg) {
  return strcmp(arg, "send") == 0 || strcmp(arg, "status") == 0 ||
         strcmp(arg, "ops") == 0;
}

int cli_api_main(const char *config, int argc, char **argv) {
  const char *verb = argv[0];
  const char *sock = NULL;
  /* --socket and -c may come anywhere among the subcommand's options. */
  int n = 0;
  char **rest = calloc((size_t)argc, sizeof *rest);
  if (!rest)
    return 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
      sock = argv[++i];
    else if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
             i + 1 < argc)
      config = argv[++i];
    else if (strncmp(argv[i], "--socket=", 9) == 0)
      sock = argv[i] + 9;
    else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      free(rest);
      return 0;
    } else
      rest[n++] = argv[i];
  }
  char note[1200];
  char *alt = NULL;
  char *path = socket_path(config, sock, note, sizeof note, &alt);
  int rc;
  if (!path) {
    fprintf(stderr, "c8y-agent: %s\n", note[0] ? note : "out of memory");
    rc = 3;
  } else if (strcmp(verb, "send") == 0) {
    rc = cmd_send(path, alt, note, n, rest);
  } else {
    rc = cmd_query(path, alt, note, verb, n, rest);
  }
  free(path);
  free(alt);
  free(rest);
  return rc;
}
