#include "broker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct broker {
  char *workdir;
  char *conf;
  char *out; /* mosquitto's own stdout/stderr */
  char *exe;
  int port;
  pid_t pid;
  broker *next; /* live-broker registry for the atexit handler */
};

/* Every started broker is listed here so that exit() kills it even when a
 * test forgets broker_stop; a mutex because tests may start brokers from
 * several threads. */
static pthread_mutex_t g_live_mu = PTHREAD_MUTEX_INITIALIZER;
static broker *g_live;
static pthread_once_t g_atexit_once = PTHREAD_ONCE_INIT;

static void kill_all_at_exit(void) {
  pthread_mutex_lock(&g_live_mu);
  for (broker *b = g_live; b; b = b->next) {
    if (b->pid > 0) {
      kill(b->pid, SIGKILL);
      waitpid(b->pid, NULL, 0);
      b->pid = 0;
    }
  }
  pthread_mutex_unlock(&g_live_mu);
}

static void register_atexit(void) { atexit(kill_all_at_exit); }

static void live_add(broker *b) {
  pthread_once(&g_atexit_once, register_atexit);
  pthread_mutex_lock(&g_live_mu);
  b->next = g_live;
  g_live = b;
  pthread_mutex_unlock(&g_live_mu);
}

static void live_remove(broker *b) {
  pthread_mutex_lock(&g_live_mu);
  for (broker **p = &g_live; *p; p = &(*p)->next) {
    if (*p == b) {
      *p = b->next;
      break;
    }
  }
  pthread_mutex_unlock(&g_live_mu);
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Looks for an executable in PATH, then in the sbin directories Debian puts
 * mosquitto in (not in a normal user's PATH). */
static char *find_exe(const char *name) {
  if (strchr(name, '/'))
    return access(name, X_OK) == 0 ? strdup(name) : NULL;
  const char *path = getenv("PATH");
  char *dirs = NULL;
  if (asprintf(&dirs, "%s:/usr/sbin:/usr/local/sbin:/sbin",
               path ? path : "/usr/bin:/bin") < 0)
    return NULL;
  char *save = NULL, *found = NULL;
  for (char *d = strtok_r(dirs, ":", &save); d && !found;
       d = strtok_r(NULL, ":", &save)) {
    char *cand = NULL;
    if (asprintf(&cand, "%s/%s", *d ? d : ".", name) < 0)
      break;
    if (access(cand, X_OK) == 0)
      found = cand;
    else
      free(cand);
  }
  free(dirs);
  return found;
}

int broker_hash_password(const char *password, char *out, size_t outlen) {
  enum { SALT = 12, HASH = 64, ITER = 101 };
  unsigned char salt[SALT], hash[HASH];
  unsigned char salt64[4 * ((SALT + 2) / 3) + 1];
  unsigned char hash64[4 * ((HASH + 2) / 3) + 1];
  if (RAND_bytes(salt, SALT) != 1)
    return -1;
  if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, SALT, ITER,
                        EVP_sha512(), HASH, hash) != 1)
    return -1;
  EVP_EncodeBlock(salt64, salt, SALT);
  EVP_EncodeBlock(hash64, hash, HASH);
  int n = snprintf(out, outlen, "$7$%d$%s$%s", ITER, (char *)salt64,
                   (char *)hash64);
  return n > 0 && (size_t)n < outlen ? 0 : -1;
}

static int run_quiet(char *const argv[]) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    return -1;
  int st;
  while (waitpid(pid, &st, 0) < 0) {
    if (errno != EINTR)
      return -1;
  }
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int broker_write_passwd(const char *path, const broker_user *users, size_t n,
                        char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    if (!users[i].name || !*users[i].name || strchr(users[i].name, ':') ||
        strpbrk(users[i].name, "\r\n") || !users[i].password ||
        strpbrk(users[i].password, "\r\n")) {
      seterr(err, errlen,
             "%s: user %zu: name must be non-empty without ':' "
             "or newlines, password without newlines",
             path, i + 1);
      return -1;
    }
  }
  unlink(path);
  char *tool = find_exe("mosquitto_passwd");
  if (tool) {
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
      char *create[] = {tool,
                        "-c",
                        "-b",
                        (char *)path,
                        (char *)users[i].name,
                        (char *)users[i].password,
                        NULL};
      char *append[] = {tool,
                        "-b",
                        (char *)path,
                        (char *)users[i].name,
                        (char *)users[i].password,
                        NULL};
      char **argv = i == 0 ? create : append;
      rc = run_quiet(argv);
    }
    free(tool);
    if (rc == 0 && chmod(path, 0600) == 0)
      return 0;
    /* fall through: write the hashes ourselves */
  }
  FILE *f = fopen(path, "w");
  if (!f) {
    seterr(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    return -1;
  }
  fchmod(fileno(f), 0600);
  for (size_t i = 0; i < n; i++) {
    char hash[256];
    if (broker_hash_password(users[i].password, hash, sizeof hash) != 0) {
      fclose(f);
      seterr(err, errlen, "%s: cannot hash the password of user %s", path,
             users[i].name);
      return -1;
    }
    fprintf(f, "%s:%s\n", users[i].name, hash);
  }
  if (fclose(f) != 0) {
    seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static bool port_accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static int write_conf(broker *b, const char *passwd_file, const char *acl_file,
                      char *err, size_t errlen) {
  FILE *f = fopen(b->conf, "w");
  if (!f) {
    seterr(err, errlen, "%s: cannot create: %s", b->conf, strerror(errno));
    return -1;
  }
  /* As root mosquitto would switch to user "mosquitto", which cannot read a
   * 0700 temp dir; the option is ignored when not root. */
  struct passwd *pw = getpwuid(geteuid());
  fprintf(f,
          "# generated by tests/support/broker.c\n"
          "per_listener_settings false\n"
          "listener %d 127.0.0.1\n"
          "allow_anonymous false\n"
          "password_file %s\n"
          "acl_file %s\n"
          "persistence false\n"
          "log_dest file %s/mosquitto.log\n"
          "log_type error\nlog_type warning\nlog_type notice\n"
          "log_type information\n"
          "connection_messages true\n"
          "log_timestamp_format %%H:%%M:%%S\n",
          b->port, passwd_file, acl_file, b->workdir);
  if (pw && geteuid() == 0)
    fprintf(f, "user %s\n", pw->pw_name);
  if (fclose(f) != 0) {
    seterr(err, errlen, "%s: write failed: %s", b->conf, strerror(errno));
    return -1;
  }
  return 0;
}

/* True when `pid` holds a socket listening on 127.0.0.1:port: a connect
 * alone could reach another broker that already owns the port. */
bool broker_pid_listens(pid_t pid, int port) {
  FILE *f = fopen("/proc/net/tcp", "r");
  if (!f)
    return false;
  char line[512];
  unsigned long inodes[16];
  size_t n = 0;
  while (fgets(line, sizeof line, f) && n < 16) {
    unsigned addr, lport, st;
    unsigned long inode;
    /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
    if (sscanf(line, " %*d: %x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu",
               &addr, &lport, &st, &inode) == 4 &&
        (int)lport == port && st == 0x0A)
      inodes[n++] = inode;
  }
  fclose(f);
  if (n == 0)
    return false;
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
  bool found = false;
  for (int fd = 0; fd < 1024 && !found; fd++) {
    char path[96], target[64];
    snprintf(path, sizeof path, "%s/%d", dir, fd);
    ssize_t l = readlink(path, target, sizeof target - 1);
    if (l <= 0)
      continue;
    target[l] = '\0';
    unsigned long ino;
    if (sscanf(target, "socket:[%lu]", &ino) == 1)
      for (size_t i = 0; i < n; i++)
        if (inodes[i] == ino)
          found = true;
  }
  return found;
}

/* Last "Error" line of mosquitto's stdout/stderr or log (else the last
 * line), for error messages. */
static void last_output_line(const broker *b, char *buf, size_t len) {
  buf[0] = '\0';
  char *log = NULL;
  if (asprintf(&log, "%s/mosquitto.log", b->workdir) < 0)
    return;
  const char *files[] = {b->out, log};
  bool have_error = false;
  for (size_t i = 0; i < 2 && !have_error; i++) {
    FILE *f = fopen(files[i], "r");
    if (!f)
      continue;
    char line[512];
    while (fgets(line, sizeof line, f)) {
      line[strcspn(line, "\r\n")] = '\0';
      size_t l = strlen(line);
      bool is_error = strstr(line, "Error") != NULL;
      if (l == 0 || (have_error && !is_error) || (buf[0] && i > 0 && !is_error))
        continue;
      have_error = have_error || is_error;
      if (l >= len)
        l = len - 1;
      memcpy(buf, line, l);
      buf[l] = '\0';
    }
    fclose(f);
  }
  free(log);
}

/* Starts mosquitto on b->port and waits until it accepts connections.
 * Returns 0, 1 when mosquitto exited early (e.g. the port is taken), or -1. */
static int spawn_once(broker *b, char *err, size_t errlen) {
  char *argv[] = {b->exe, "-c", b->conf, NULL};
  pid_t parent = getpid();
  int outfd =
      open(b->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0600);
  if (outfd < 0) {
    seterr(err, errlen, "%s: cannot create: %s", b->out, strerror(errno));
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(outfd);
    seterr(err, errlen, "fork: %s", strerror(errno));
    return -1;
  }
  if (pid == 0) {
    /* Only async-signal-safe calls here: the parent may be multithreaded. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0)
      dup2(nul, 0);
    dup2(outfd, 1);
    dup2(outfd, 2);
    close_range(3, ~0U, 0); /* no Paho sockets leaking into the broker */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(argv[0], argv);
    _exit(127);
  }
  close(outfd);
  b->pid = pid;
  long long deadline = mono_ms() + 5000;
  while (mono_ms() < deadline) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      b->pid = 0;
      char last[400];
      last_output_line(b, last, sizeof last);
      seterr(err, errlen, "%s exited (status %d) on port %d: %s", b->exe,
             WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), b->port,
             last[0] ? last : "no output");
      return 1;
    }
    if (port_accepts(b->port) && broker_pid_listens(pid, b->port))
      return 0;
    sleep_ms(20);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  b->pid = 0;
  seterr(err, errlen,
         "mosquitto did not accept connections on 127.0.0.1:%d "
         "within 5 s",
         b->port);
  return -1;
}

/* Restarts on the same port; mosquitto may exit early if the old socket
 * is not released yet, so retry a few times with a growing pause. */
static int spawn_retrying(broker *b, char *err, size_t errlen) {
  int rc = -1;
  for (int attempt = 0; attempt < 5; attempt++) {
    rc = spawn_once(b, err, errlen);
    if (rc <= 0)
      return rc;
    sleep_ms(100 * (attempt + 1));
  }
  return -1;
}

int broker_start(const char *workdir, const char *passwd_file,
                 const char *acl_file, int port, broker **out, char *err,
                 size_t errlen) {
  *out = NULL;
  if (port < 0 || port > 65535) {
    seterr(err, errlen, "broker port %d out of range 0..65535", port);
    return -1;
  }
  broker *b = calloc(1, sizeof *b);
  if (!b || !(b->workdir = strdup(workdir)) ||
      asprintf(&b->conf, "%s/mosquitto.conf", workdir) < 0 ||
      asprintf(&b->out, "%s/mosquitto.out", workdir) < 0) {
    if (b) {
      free(b->workdir);
      free(b);
    }
    seterr(err, errlen, "out of memory");
    return -1;
  }
  b->exe = find_exe("mosquitto");
  if (!b->exe) {
    seterr(err, errlen,
           "mosquitto not found in PATH or /usr/sbin (install "
           "package mosquitto)");
    broker_stop(b);
    return -1;
  }
  b->port = port;
  /* The conf names the port, so write it per attempt when we pick ports. */
  int rc = -1;
  for (int attempt = 0; attempt < 5; attempt++) {
    if (port == 0) {
      b->port = free_port();
      if (b->port <= 0) {
        seterr(err, errlen, "cannot find a free loopback port: %s",
               strerror(errno));
        break;
      }
    }
    if (write_conf(b, passwd_file, acl_file, err, errlen) != 0)
      break;
    rc = spawn_once(b, err, errlen);
    if (rc <= 0)
      break;
    rc = -1;
    if (port != 0)
      break; /* a fixed port that mosquitto cannot bind: report it */
  }
  if (rc != 0) {
    broker_stop(b);
    return -1;
  }
  live_add(b);
  *out = b;
  return 0;
}

int broker_kill(broker *b) {
  if (!b || b->pid <= 0)
    return -1;
  kill(b->pid, SIGKILL);
  while (waitpid(b->pid, NULL, 0) < 0 && errno == EINTR) {
  }
  b->pid = 0;
  return 0;
}

int broker_restart(broker *b, char *err, size_t errlen) {
  if (!b) {
    seterr(err, errlen, "no broker");
    return -1;
  }
  if (b->pid > 0)
    broker_kill(b);
  return spawn_retrying(b, err, errlen) == 0 ? 0 : -1;
}

int broker_restart_with(broker *b, const char *extra_conf, char *err,
                        size_t errlen) {
  if (!b) {
    seterr(err, errlen, "no broker");
    return -1;
  }
  if (b->pid > 0)
    broker_kill(b);
  FILE *f = fopen(b->conf, "a");
  if (!f || fputs(extra_conf, f) < 0 || fputc('\n', f) < 0) {
    seterr(err, errlen, "%s: cannot append: %s", b->conf, strerror(errno));
    if (f)
      fclose(f);
    return -1;
  }
  fclose(f);
  return spawn_retrying(b, err, errlen) == 0 ? 0 : -1;
}

int broker_port(const broker *b) { return b ? b->port : -1; }

int broker_free_port(void) { return free_port(); }

int broker_pid(const broker *b) { return b ? (int)b->pid : 0; }

void broker_stop(broker *b) {
  if (!b)
    return;
  live_remove(b);
  if (b->pid > 0) {
    kill(b->pid, SIGTERM);
    long long deadline = mono_ms() + 2000;
    bool gone = false;
    while (!gone && mono_ms() < deadline) {
      pid_t r = waitpid(b->pid, NULL, WNOHANG);
      if (r == b->pid || (r < 0 && errno == ECHILD))
        gone = true;
      else
        sleep_ms(10);
    }
    if (!gone) {
      kill(b->pid, SIGKILL);
      waitpid(b->pid, NULL, 0);
    }
    b->pid = 0;
  }
  free(b->workdir);
  free(b->conf);
  free(b->out);
  free(b->exe);
  free(b);
}
