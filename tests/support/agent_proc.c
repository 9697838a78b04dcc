#include "agent_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct agent_proc {
  char dir[256];
  char config[300];
  char log[300];
  pid_t pid;
  int status;
};

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

agent_proc *agent_proc_new(const char *ini) {
  agent_proc *a = calloc(1, sizeof *a);
  if (!a)
    return NULL;
  snprintf(a->dir, sizeof a->dir, "/tmp/c8y-agent-test-XXXXXX");
  if (!mkdtemp(a->dir)) {
    free(a);
    return NULL;
  }
  snprintf(a->config, sizeof a->config, "%s/agent.ini", a->dir);
  snprintf(a->log, sizeof a->log, "%s/agent.log", a->dir);
  FILE *f = fopen(a->config, "w");
  if (!f) {
    free(a);
    return NULL;
  }
  fchmod(fileno(f), 0600);
  fputs(ini, f);
  fputc('\n', f);
  if (!strstr(ini, "[agent]"))
    fprintf(f, "[agent]\n");
  fclose(f);
  /* Defaults appended as a drop-in so the test's own keys stay in order. */
  char confd[300];
  snprintf(confd, sizeof confd, "%s/conf.d", a->dir);
  mkdir(confd, 0700);
  char dflt[400];
  snprintf(dflt, sizeof dflt, "%s/00-test-defaults.ini", confd);
  if (!strstr(ini, "state_dir") || !strstr(ini, "plugin_dir")) {
    f = fopen(dflt, "w");
    if (f) {
      fchmod(fileno(f), 0600);
      fprintf(f, "[agent]\n");
      if (!strstr(ini, "state_dir"))
        fprintf(f, "state_dir = %s/state\n", a->dir);
      if (!strstr(ini, "plugin_dir")) {
        fprintf(f, "plugin_dir = %s/plugins\n", a->dir);
        char pd[300];
        snprintf(pd, sizeof pd, "%s/plugins", a->dir);
        mkdir(pd, 0755);
      }
      fclose(f);
    }
  }
  return a;
}

const char *agent_proc_dir(agent_proc *a) { return a->dir; }
const char *agent_proc_config(agent_proc *a) { return a->config; }
pid_t agent_proc_pid(agent_proc *a) { return a->pid; }

int agent_proc_start_args(agent_proc *a, const char *const *extra) {
  const char *bin = getenv("C8Y_AGENT_BIN");
  if (!bin)
    return -1;
  /* $C8Y_AGENT_WRAPPER ("/usr/bin/valgrind --leak-check=full ...", split on
   * spaces; the first word must be a path) runs the agent under a tool, see
   * scripts/check-valgrind.sh. Split before fork: the child only execs. */
  char wrap[2048] = "";
  const char *argv[48];
  int n = 0;
  const char *w = getenv("C8Y_AGENT_WRAPPER");
  if (w && *w) {
    snprintf(wrap, sizeof wrap, "%s", w);
    char *save = NULL;
    for (char *t = strtok_r(wrap, " ", &save); t && n < 24;
         t = strtok_r(NULL, " ", &save))
      argv[n++] = t;
  }
  argv[n++] = bin;
  argv[n++] = "-c";
  argv[n++] = a->config;
  for (int i = 0; extra && extra[i] && n < 47; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    /* A test that aborts on a failed assertion must not leave its agent
     * running (and reconnecting) forever. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    int fd = open(a->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      dup2(fd, 2);
      dup2(fd, 1);
      close(fd);
    }
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  a->pid = pid;
  return 0;
}

int agent_proc_start(agent_proc *a) { return agent_proc_start_args(a, NULL); }

static int decode_status(int st) {
  if (WIFEXITED(st))
    return WEXITSTATUS(st);
  if (WIFSIGNALED(st))
    return 128 + WTERMSIG(st);
  return -1;
}

int agent_proc_wait_exit(agent_proc *a, int timeout_ms) {
  if (a->pid <= 0)
    return a->status;
  for (int waited = 0; waited <= timeout_ms; waited += 20) {
    int st;
    pid_t r = waitpid(a->pid, &st, WNOHANG);
    if (r == a->pid) {
      a->pid = 0;
      a->status = decode_status(st);
      return a->status;
    }
    sleep_ms(20);
  }
  return -1;
}

int agent_proc_signal(agent_proc *a, int sig) {
  return a->pid > 0 ? kill(a->pid, sig) : -1;
}

int agent_proc_stop(agent_proc *a, int timeout_ms) {
  if (a->pid <= 0)
    return a->status;
  /* Under a wrapper the exit (and valgrind's leak check) is much slower; a
   * SIGKILL would hide its report. */
  const char *w = getenv("C8Y_AGENT_WRAPPER");
  if (w && *w && timeout_ms < 30000)
    timeout_ms = 30000;
  kill(a->pid, SIGTERM);
  int rc = agent_proc_wait_exit(a, timeout_ms);
  if (rc < 0) {
    agent_proc_kill(a);
    return 128 + SIGKILL;
  }
  return rc;
}

void agent_proc_kill(agent_proc *a) {
  if (a->pid <= 0)
    return;
  kill(a->pid, SIGKILL);
  int st;
  waitpid(a->pid, &st, 0);
  a->pid = 0;
  a->status = decode_status(st);
}

char *agent_proc_log(agent_proc *a) {
  FILE *f = fopen(a->log, "r");
  if (!f)
    return strdup("");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)(n > 0 ? n : 0) + 1);
  size_t got = buf ? fread(buf, 1, (size_t)(n > 0 ? n : 0), f) : 0;
  if (buf)
    buf[got] = 0;
  fclose(f);
  return buf;
}

bool agent_proc_wait_log(agent_proc *a, const char *needle, int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 25) {
    char *log = agent_proc_log(a);
    bool found = log && strstr(log, needle);
    free(log);
    if (found)
      return true;
    sleep_ms(25);
  }
  return false;
}

int agent_proc_log_count(agent_proc *a, const char *needle) {
  char *log = agent_proc_log(a);
  int n = 0;
  for (const char *p = log; p && (p = strstr(p, needle)) != NULL; p++)
    n++;
  free(log);
  return n;
}

bool agent_proc_wait_log_count(agent_proc *a, const char *needle, int n,
                               int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 25) {
    if (agent_proc_log_count(a, needle) >= n)
      return true;
    sleep_ms(25);
  }
  return false;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

void agent_proc_free(agent_proc *a) {
  if (!a)
    return;
  agent_proc_stop(a, 3000);
  if (!getenv("C8Y_KEEP_TEST_DIRS"))
    nftw(a->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(a);
}
