/* c8y-plugin-check: the conformance kit for c8y-agent plugins. See
 * usage() and sdk/README.md, "Checking a plugin".
 *
 * The parent process only orchestrates: it starts itself as a child
 * (check_run.h) that is the agent and the platform, under valgrind when
 * leaks are checked that way, reads the child's records from a pipe and
 * prints the report. A crash of the plugin kills only the child: the
 * parent reports it, names the step, and starts a new child at the step
 * after it. */
#include "check_leaks.h"
#include "check_run.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define CHECK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHECK_ASAN 1
#endif
#endif
#ifndef CHECK_ASAN
#define CHECK_ASAN 0
#endif
/* valgrind cannot run a ThreadSanitizer build either. */
#if defined(__SANITIZE_THREAD__)
#define CHECK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHECK_TSAN 1
#endif
#endif
#ifndef CHECK_TSAN
#define CHECK_TSAN 0
#endif

/* Crashes after which the kit stops starting new children. */
#define MAX_CRASHES 3
/* valgrind runs the child many times slower: --wait is stretched. */
#define VALGRIND_SLOWDOWN 4
#define REPORT_FD 3
/* Suspected findings of one child that are kept (see check_run.h). */
#define MAX_SUSPECTS 64

enum { EXIT_CLEAN = 0, EXIT_FINDINGS = 1, EXIT_CANNOT = 2 };
typedef enum { LEAKS_NONE, LEAKS_VALGRIND, LEAKS_ASAN } leak_mode;

static void usage(FILE *f) {
  fprintf(
      f,
      "Usage: c8y-plugin-check PLUGIN.so [--config FILE] [--wait SECONDS]\n"
      "                        [--cycles N] [--leak-check auto|valgrind|off]\n"
      "                        [--verbose] [--keep]\n"
      "\n"
      "Checks that a c8y-agent plugin keeps the SDK's contract (c8y/plugin.h,\n"
      "ABI %d.%d). The plugin runs on the agent's own code: its loader, "
      "plugin\n"
      "host, operation engine and journal, with a capture transport instead\n"
      "of MQTT. The kit plays the platform (the \"simulator\"): no broker, no\n"
      "tenant and no network are used. It\n"
      "  - loads the plugin as the agent does (the same checks and messages),\n"
      "  - runs each producer --cycles times,\n"
      "  - sends each message handler valid and malformed records,\n"
      "  - sends every operation the plugin registered, on the root device\n"
      "    and each child it announced: for a static template (510-532)\n"
      "    valid parameters from the template's shape, then malformed ones\n"
      "    (none, one missing, one too many, an over-long field, quotes,\n"
      "    commas and newlines, bytes that are not UTF-8, all empty) and the\n"
      "    line with its JSON copy; for a fragment its JSON document with an\n"
      "    id (valid and malformed values) and, when the fragment has a\n"
      "    static template, its line alone (no id); for a custom template\n"
      "    operation its records,\n"
      "  - restarts the agent (and simulates a reboot) for an operation that\n"
      "    is to complete on reboot or to resume after a restart,\n"
      "  - stops the agent (fini) and looks for what is left.\n"
      "Values are harmless (the shell command is an echo, hosts are\n"
      "loopback, URLs are the kit's own, which it serves a small file at),\n"
      "but the plugin runs what it gets: give it a --config that keeps it\n"
      "from touching the machine (a reboot command of `true`, scratch files).\n"
      "\n"
      "An operation still running after --wait seconds (default 5) gets its\n"
      "timeout at once (the agent's clock is moved on) and then [agent]\n"
      "stop_grace_ms (3000) to complete, as the agent gives it at the real\n"
      "timeout; so no check waits for a timeout of minutes.\n"
      "\n"
      "Checks (each finding is one line: FAIL <check>: <what>: <why>):\n",
      C8Y_ABI_MAJOR, C8Y_ABI_MINOR);
  for (size_t i = 0; i < check_ninfos; i++)
    fprintf(f, "  %-16s %s\n", check_infos[i].name, check_infos[i].what);
  fprintf(
      f,
      "\n"
      "Leaks and memory errors: with --leak-check auto (the default) an\n"
      "AddressSanitizer build of the kit uses LeakSanitizer; otherwise the\n"
      "kit runs its child under valgrind when valgrind is installed (then\n"
      "--wait counts %d times), and says so when neither is there.\n"
      "\n"
      "Options:\n"
      "  --config FILE   an agent.ini: the plugin's [plugin.<name>] section\n"
      "                  and [agent] op_timeout, stop_grace_ms,\n"
      "                  plugin_max_lines_per_s (default: none, all defaults)\n"
      "  --wait SECONDS  real time an operation or callback gets (default 5)\n"
      "  --cycles N      producer cycles (default 3)\n"
      "  --leak-check M  auto, valgrind or off\n"
      "  --verbose       also print notes on slow operations, restarts and\n"
      "                  producers that failed, and the agent's log\n"
      "  --keep          keep the work directory (state, logs) and name it\n"
      "\n"
      "Exit status: 0 no findings, 1 findings, 2 the kit could not run the\n"
      "plugin (bad arguments, the agent refuses to load it, its init fails).\n",
      VALGRIND_SLOWDOWN);
}

typedef struct parent {
  const char *plugin, *config;
  char plugin_real[PATH_MAX];
  char self[PATH_MAX];
  char *work;
  int wait_s, cycles;
  const char *leak_opt;
  bool verbose, keep;
  leak_mode leaks;
  char valgrind[PATH_MAX];
  int findings;
  bool cannot_run;
  char *name, *version;
  size_t steps, next_step, operations;
} parent;

static void print_finding(parent *p, const char *check, const char *subject,
                          const char *detail) {
  printf("FAIL %s: %s: %s\n", check, subject, detail);
  fflush(stdout);
  p->findings++;
}

static void leak_found(void *ctx, const char *check, const char *subject,
                       const char *detail) {
  print_finding(ctx, check, subject, detail);
}

/* Splits a record line into fields, undoing the escapes, in place. */
static size_t split_record(char *line, char **fields, size_t max) {
  size_t n = 0;
  char *out = line;
  fields[n++] = out;
  for (char *c = line; *c; c++) {
    if (*c == '\t' && n < max) {
      *out++ = '\0';
      fields[n++] = out;
    } else if (*c == '\\' && c[1]) {
      c++;
      *out++ = *c == 't' ? '\t' : *c == 'n' ? '\n' : *c;
    } else {
      *out++ = *c;
    }
  }
  *out = '\0';
  return n;
}

static bool find_in_path(const char *prog, char *out, size_t len) {
  const char *path = getenv("PATH");
  if (!path)
    path = "/usr/bin:/bin";
  char *copy = strdup(path), *save = NULL;
  bool found = false;
  for (char *d = strtok_r(copy, ":", &save); d && !found;
       d = strtok_r(NULL, ":", &save)) {
    snprintf(out, len, "%s/%s", d, prog);
    found = access(out, X_OK) == 0;
  }
  free(copy);
  return found;
}

/* One child. Returns its last step (or -1) through *last_step and whether
 * it got to the end (a done record). */
static bool run_child(parent *p, int run, size_t from, long *last_step,
                      char *last_label, size_t label_len, bool *in_stop,
                      bool *abandoned, int *wstatus) {
  int fds[2];
  if (pipe(fds) != 0) {
    fprintf(stderr, "c8y-plugin-check: pipe: %s\n", strerror(errno));
    return false;
  }
  char log_path[PATH_MAX], vg_xml[PATH_MAX], vg_log[PATH_MAX];
  snprintf(log_path, sizeof log_path, "%s/agent.%d.log", p->work, run);
  snprintf(vg_xml, sizeof vg_xml, "%s/valgrind.%d.xml", p->work, run);
  snprintf(vg_log, sizeof vg_log, "%s/valgrind.%d.log", p->work, run);
  char wait_ms[32], cycles[32], from_s[32], run_s[32], fd_s[32];
  int wait =
      p->wait_s * 1000 * (p->leaks == LEAKS_VALGRIND ? VALGRIND_SLOWDOWN : 1);
  snprintf(wait_ms, sizeof wait_ms, "%d", wait);
  snprintf(cycles, sizeof cycles, "%d", p->cycles);
  snprintf(from_s, sizeof from_s, "%zu", from);
  snprintf(run_s, sizeof run_s, "%d", run);
  snprintf(fd_s, sizeof fd_s, "%d", REPORT_FD);
  char xml_opt[PATH_MAX + 16], log_opt[PATH_MAX + 16];
  snprintf(xml_opt, sizeof xml_opt, "--xml-file=%s", vg_xml);
  snprintf(log_opt, sizeof log_opt, "--log-file=%s", vg_log);
  const char *argv[40];
  size_t a = 0;
  if (p->leaks == LEAKS_VALGRIND) {
    const char *vg[] = {p->valgrind,
                        "--tool=memcheck",
                        "--leak-check=full",
                        "--show-leak-kinds=definite",
                        "--errors-for-leak-kinds=definite",
                        "--num-callers=30",
                        "--fair-sched=yes",
                        "--keep-debuginfo=yes",
                        "--child-silent-after-fork=yes",
                        "--xml=yes",
                        xml_opt,
                        log_opt};
    for (size_t i = 0; i < sizeof vg / sizeof vg[0]; i++)
      argv[a++] = vg[i];
  }
  argv[a++] = p->self;
  argv[a++] = "--child";
  argv[a++] = p->plugin;
  argv[a++] = "--work";
  argv[a++] = p->work;
  argv[a++] = "--run";
  argv[a++] = run_s;
  argv[a++] = "--wait-ms";
  argv[a++] = wait_ms;
  argv[a++] = "--cycles";
  argv[a++] = cycles;
  argv[a++] = "--from";
  argv[a++] = from_s;
  argv[a++] = "--report-fd";
  argv[a++] = fd_s;
  if (p->config) {
    argv[a++] = "--config";
    argv[a++] = p->config;
  }
  argv[a] = NULL;
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "c8y-plugin-check: fork: %s\n", strerror(errno));
    return false;
  }
  if (pid == 0) {
    close(fds[0]);
    if (fds[1] != REPORT_FD) {
      dup2(fds[1], REPORT_FD);
      close(fds[1]);
    }
    int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log >= 0) {
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
    }
    if (CHECK_ASAN) {
      /* Later flags win: the reports go to the work dir, where the
       * parent reads them, whatever the caller's ASAN_OPTIONS say (also
       * with --leak-check off: a crash's report is read from there). */
      const char *old = getenv("ASAN_OPTIONS");
      char *opts = NULL;
      if (asprintf(&opts,
                   "%s%sdetect_leaks=%d:log_path=%s/asan.%d:"
                   "stack_trace_format=%s",
                   old ? old : "", old && *old ? ":" : "",
                   p->leaks == LEAKS_ASAN, p->work, run,
                   CHECK_ASAN_FRAME_FORMAT) > 0)
        setenv("ASAN_OPTIONS", opts, 1);
    }
    if (CHECK_TSAN) {
      /* A plugin's crash is the kit's finding, not a race report. */
      const char *old = getenv("TSAN_OPTIONS");
      char *opts = NULL;
      if (asprintf(&opts, "%s%shandle_segv=0", old ? old : "",
                   old && *old ? ":" : "") > 0)
        setenv("TSAN_OPTIONS", opts, 1);
    }
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "c8y-plugin-check: cannot run %s: %s\n", argv[0],
            strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  FILE *in = fdopen(fds[0], "r");
  char *line = NULL;
  size_t cap = 0;
  bool done = false;
  static struct {
    char check[64], subject[600], detail[600];
  } suspects[MAX_SUSPECTS];
  size_t nsuspects = 0;
  while (in && getline(&line, &cap, in) > 0) {
    line[strcspn(line, "\n")] = '\0';
    char *f[8];
    size_t n = split_record(line, f, 8);
    if (strcmp(f[0], "plugin") == 0 && n >= 3) {
      if (!p->name) {
        p->name = strdup(f[1]);
        p->version = strdup(f[2]);
        printf("c8y-plugin-check: plugin %s %s (%s)\n", p->name, p->version,
               p->plugin_real);
        fflush(stdout);
      }
    } else if (strcmp(f[0], "step") == 0 && n >= 4) {
      *last_step = strtol(f[1], NULL, 10);
      snprintf(last_label, label_len, "%s", f[3]);
      *in_stop = strcmp(f[2], "stop") == 0;
      if (strcmp(f[2], "operation") == 0)
        p->operations++;
    } else if (strcmp(f[0], "finding") == 0 && n >= 4) {
      print_finding(p, f[1], f[2], f[3]);
    } else if (strcmp(f[0], "suspect") == 0 && n >= 4) {
      if (nsuspects < MAX_SUSPECTS) {
        snprintf(suspects[nsuspects].check, sizeof suspects[0].check, "%s",
                 f[1]);
        snprintf(suspects[nsuspects].subject, sizeof suspects[0].subject, "%s",
                 f[2]);
        snprintf(suspects[nsuspects].detail, sizeof suspects[0].detail, "%s",
                 f[3]);
        nsuspects++;
      }
    } else if (strcmp(f[0], "note") == 0 && n >= 2) {
      printf("note: %s\n", f[1]);
    } else if (strcmp(f[0], "info") == 0 && n >= 2) {
      if (p->verbose)
        printf("info: %s\n", f[1]);
    } else if (strcmp(f[0], "fatal") == 0 && n >= 2) {
      printf("c8y-plugin-check: cannot run the plugin: %s\n", f[1]);
      p->cannot_run = true;
    } else if (strcmp(f[0], "abandoned") == 0) {
      *abandoned = true;
    } else if (strcmp(f[0], "done") == 0 && n >= 3) {
      done = true;
      p->steps = strtoul(f[1], NULL, 10);
      p->next_step = strtoul(f[2], NULL, 10);
    }
    fflush(stdout);
  }
  free(line);
  if (in)
    fclose(in);
  while (waitpid(pid, wstatus, 0) < 0 && errno == EINTR)
    ;
  /* The child died before it could settle them: what it saw stands. */
  for (size_t i = 0; !done && i < nsuspects; i++)
    print_finding(p, suspects[i].check, suspects[i].subject,
                  suspects[i].detail);
  /* Why it could not run is often in the plugin's own log lines. */
  if (p->verbose || p->cannot_run) {
    FILE *l = fopen(log_path, "r");
    char buf[4096];
    fprintf(stderr, "---- the agent's log (run %d)\n", run);
    while (l && fgets(buf, sizeof buf, l))
      fputs(buf, stderr);
    if (l)
      fclose(l);
  }
  return done;
}

static void leak_results(parent *p, int run, bool leaks) {
  size_t others = 0;
  int n = 0;
  if (p->leaks == LEAKS_VALGRIND) {
    char xml[PATH_MAX];
    snprintf(xml, sizeof xml, "%s/valgrind.%d.xml", p->work, run);
    n = check_leaks_valgrind(xml, p->plugin_real, leaks, leak_found, p,
                             &others);
    if (n < 0)
      printf("note: valgrind wrote no report (%s)\n", xml);
  } else if (p->leaks == LEAKS_ASAN) {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "asan.%d.", run);
    n = check_leaks_asan(p->work, prefix, p->plugin_real, leaks, leak_found, p,
                         &others);
  }
  if (others)
    printf("note: %zu memory checker record(s) without a frame in the "
           "plugin (the agent's or a library's; --keep shows them)\n",
           others);
}

static const char *signal_name(int sig) {
  const char *d = strsignal(sig);
  return d ? d : "a signal";
}

static int parent_main(parent *p) {
  char tmpl[PATH_MAX];
  const char *tmp = getenv("TMPDIR");
  snprintf(tmpl, sizeof tmpl, "%s/c8y-plugin-check.XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  p->work = mkdtemp(tmpl) ? strdup(tmpl) : NULL;
  if (!p->work) {
    fprintf(stderr, "c8y-plugin-check: cannot create %s: %s\n", tmpl,
            strerror(errno));
    return EXIT_CANNOT;
  }
  /* The journal reads the boot id from here: a reboot is a new one. */
  char boot[PATH_MAX];
  snprintf(boot, sizeof boot, "%s/boot_id", p->work);
  FILE *b = fopen(boot, "w");
  if (!b || fprintf(b, "c8y-plugin-check-boot-0\n") < 0 || fclose(b) != 0) {
    fprintf(stderr, "c8y-plugin-check: cannot write %s\n", boot);
    return EXIT_CANNOT;
  }
  setenv("C8Y_BOOT_ID_FILE", boot, 1);
  switch (p->leaks) {
  case LEAKS_VALGRIND:
    printf("c8y-plugin-check: leaks and memory errors: valgrind (%s)\n",
           p->valgrind);
    break;
  case LEAKS_ASAN:
    printf("c8y-plugin-check: leaks and memory errors: this kit is an "
           "AddressSanitizer build (LeakSanitizer)\n");
    break;
  default:
    break;
  }
  size_t from = 0;
  int crashes = 0, run = 0; /* crashes: also agents a stuck worker ended */
  bool finished = false;
  while (!finished && !p->cannot_run) {
    run++;
    long last_step = -1;
    char label[1024] = "";
    bool abandoned = false, in_stop = false;
    int ws = 0;
    bool done = run_child(p, run, from, &last_step, label, sizeof label,
                          &in_stop, &abandoned, &ws);
    if (p->cannot_run)
      break;
    bool crashed = WIFSIGNALED(ws) || (!done && WIFEXITED(ws));
    if (p->leaks != LEAKS_NONE)
      leak_results(p, run, done && !abandoned);
    if (abandoned && p->leaks != LEAKS_NONE)
      printf("note: leaks not checked in run %d: the plugin's worker was "
             "abandoned, so its memory was never freed\n",
             run);
    if (done && p->next_step >= p->steps) {
      finished = true;
      break;
    }
    if (done) { /* a stuck worker stopped it: the rest in a new agent */
      if (++crashes >= MAX_CRASHES) {
        printf("note: %d agents stopped early: the remaining steps are not "
               "run\n",
               crashes);
        break;
      }
      from = p->next_step;
      printf("note: going on with step %zu in a new agent\n", from + 1);
      continue;
    }
    if (!crashed)
      break;
    char why[256];
    if (WIFSIGNALED(ws))
      snprintf(why, sizeof why, "died of signal %d (%s)", WTERMSIG(ws),
               signal_name(WTERMSIG(ws)));
    else
      snprintf(why, sizeof why, "exited with status %d", WEXITSTATUS(ws));
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == 127) {
      printf("c8y-plugin-check: cannot start the check (see %s/agent.%d.log)\n",
             p->work, run);
      p->cannot_run = true;
      break;
    }
    print_finding(p, "crash",
                  last_step < 0 ? "loading the plugin (init)" : label, why);
    crashes++;
    if (last_step < 0 || in_stop || crashes >= MAX_CRASHES) {
      if (crashes >= MAX_CRASHES)
        printf("note: %d crashes: the remaining steps are not run\n", crashes);
      break;
    }
    from = (size_t)last_step + 1;
    printf("note: going on with step %zu in a new agent\n", from + 1);
  }
  if (p->cannot_run)
    return EXIT_CANNOT;
  const char *how = p->leaks == LEAKS_VALGRIND ? "valgrind"
                    : p->leaks == LEAKS_ASAN   ? "LeakSanitizer"
                                               : "not checked";
  printf("c8y-plugin-check: %s: %d finding%s; %zu operations sent; leaks: %s\n",
         p->name ? p->name : p->plugin, p->findings,
         p->findings == 1 ? "" : "s", p->operations, how);
  return p->findings ? EXIT_FINDINGS : EXIT_CLEAN;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

static void remove_tree(const char *path) {
  nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static bool parse_int(const char *s, int lo, int hi, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > hi)
    return false;
  *out = (int)v;
  return true;
}

int main(int argc, char **argv) {
  /* The child: the agent and the platform. */
  if (argc > 1 && strcmp(argv[1], "--child") == 0) {
    check_options o = {.plugin = argc > 2 ? argv[2] : NULL,
                       .wait_ms = 5000,
                       .cycles = 3,
                       .report_fd = REPORT_FD};
    for (int i = 3; i + 1 < argc; i += 2) {
      int v;
      if (strcmp(argv[i], "--work") == 0)
        o.work_dir = argv[i + 1];
      else if (strcmp(argv[i], "--config") == 0)
        o.config = argv[i + 1];
      else if (strcmp(argv[i], "--run") == 0 &&
               parse_int(argv[i + 1], 1, 99, &v))
        o.run = v;
      else if (strcmp(argv[i], "--wait-ms") == 0 &&
               parse_int(argv[i + 1], 1, INT_MAX, &v))
        o.wait_ms = v;
      else if (strcmp(argv[i], "--cycles") == 0 &&
               parse_int(argv[i + 1], 0, 1000, &v))
        o.cycles = v;
      else if (strcmp(argv[i], "--from") == 0 &&
               parse_int(argv[i + 1], 0, INT_MAX, &v))
        o.from = (size_t)v;
      else if (strcmp(argv[i], "--report-fd") == 0 &&
               parse_int(argv[i + 1], 0, 1023, &v))
        o.report_fd = v;
    }
    if (!o.plugin || !o.work_dir)
      return EXIT_CANNOT;
    return check_run(&o);
  }
  parent p = {.wait_s = 5, .cycles = 3, .leak_opt = "auto"};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return EXIT_CLEAN;
    } else if (strcmp(a, "--version") == 0) {
      printf("c8y-plugin-check %s (plugin ABI %d.%d)\n", C8Y_VERSION,
             C8Y_ABI_MAJOR, C8Y_ABI_MINOR);
      return EXIT_CLEAN;
    } else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
      p.verbose = true;
    } else if (strcmp(a, "--keep") == 0) {
      p.keep = true;
    } else if (strcmp(a, "--config") == 0 && v) {
      p.config = v;
      i++;
    } else if (strcmp(a, "--wait") == 0 && v) {
      if (!parse_int(v, 1, 3600, &p.wait_s)) {
        fprintf(stderr, "c8y-plugin-check: --wait %s: want 1..3600 seconds\n",
                v);
        return EXIT_CANNOT;
      }
      i++;
    } else if (strcmp(a, "--cycles") == 0 && v) {
      if (!parse_int(v, 0, 1000, &p.cycles)) {
        fprintf(stderr, "c8y-plugin-check: --cycles %s: want 0..1000\n", v);
        return EXIT_CANNOT;
      }
      i++;
    } else if (strcmp(a, "--leak-check") == 0 && v) {
      if (strcmp(v, "auto") && strcmp(v, "valgrind") && strcmp(v, "off")) {
        fprintf(stderr,
                "c8y-plugin-check: --leak-check %s: want auto, valgrind or "
                "off\n",
                v);
        return EXIT_CANNOT;
      }
      p.leak_opt = v;
      i++;
    } else if (a[0] == '-') {
      fprintf(stderr, "c8y-plugin-check: %s: unknown option%s (see --help)\n",
              a, v || strncmp(a, "--", 2) ? "" : " or a value missing");
      return EXIT_CANNOT;
    } else if (p.plugin) {
      fprintf(stderr, "c8y-plugin-check: %s: one plugin at a time\n", a);
      return EXIT_CANNOT;
    } else {
      p.plugin = a;
    }
  }
  if (!p.plugin) {
    usage(stderr);
    return EXIT_CANNOT;
  }
  struct stat st;
  if (stat(p.plugin, &st) != 0 || !S_ISREG(st.st_mode) ||
      !realpath(p.plugin, p.plugin_real)) {
    fprintf(stderr, "c8y-plugin-check: %s: %s\n", p.plugin,
            errno ? strerror(errno) : "not a regular file");
    return EXIT_CANNOT;
  }
  /* The child runs with the plugin's real path: its frames in a memory
   * checker's report name that file. */
  p.plugin = p.plugin_real;
  if (p.config && access(p.config, R_OK) != 0) {
    fprintf(stderr, "c8y-plugin-check: --config %s: %s\n", p.config,
            strerror(errno));
    return EXIT_CANNOT;
  }
  ssize_t n = readlink("/proc/self/exe", p.self, sizeof p.self - 1);
  if (n <= 0) {
    fprintf(stderr, "c8y-plugin-check: cannot find its own program: %s\n",
            strerror(errno));
    return EXIT_CANNOT;
  }
  p.self[n] = '\0';
  bool want_vg = strcmp(p.leak_opt, "valgrind") == 0;
  if (CHECK_ASAN && strcmp(p.leak_opt, "off") != 0) {
    p.leaks = LEAKS_ASAN;
    if (want_vg)
      printf("note: this kit is an AddressSanitizer build, which valgrind "
             "cannot run: LeakSanitizer checks leaks instead\n");
  } else if (CHECK_TSAN && strcmp(p.leak_opt, "off") != 0) {
    if (want_vg) {
      fprintf(stderr, "c8y-plugin-check: --leak-check valgrind: this kit is "
                      "a ThreadSanitizer build, which valgrind cannot run\n");
      return EXIT_CANNOT;
    }
    printf("note: leaks and memory errors not checked: this kit is a "
           "ThreadSanitizer build, which valgrind cannot run\n");
  } else if (strcmp(p.leak_opt, "off") != 0) {
    if (find_in_path("valgrind", p.valgrind, sizeof p.valgrind)) {
      p.leaks = LEAKS_VALGRIND;
    } else if (want_vg) {
      fprintf(stderr, "c8y-plugin-check: --leak-check valgrind: valgrind is "
                      "not installed\n");
      return EXIT_CANNOT;
    } else {
      printf("note: leaks and memory errors not checked: valgrind is not "
             "installed (apt-get install valgrind)\n");
    }
  } else {
    printf("note: leaks and memory errors not checked (--leak-check off)\n");
  }
  if (geteuid() == 0)
    printf("note: running as root: the plugin acts on this machine with "
           "root's rights, and the operations are real (a restart handler "
           "that is not configured for a dry run reboots it)\n");
  signal(SIGPIPE, SIG_IGN);
  int rc = parent_main(&p);
  if (p.work) {
    if (p.keep)
      printf("c8y-plugin-check: work directory kept: %s\n", p.work);
    else
      remove_tree(p.work);
  }
  free(p.work);
  free(p.name);
  free(p.version);
  return rc;
}
