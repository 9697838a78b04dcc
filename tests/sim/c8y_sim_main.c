/* c8y-sim: run the Cumulocity simulator for a local agent
 * (agent defaults: 127.0.0.1:18830, tenant "local", user "device"). */
#include "sim.h"
#include "sim_http.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static void usage(FILE *f) {
  fputs(
      "usage: c8y-sim [--port N] [--tenant T] [--user U] [--password-file F]\n"
      "               [--device ID] [--op LINE]... [--workdir D] [--quiet]\n"
      "               [--http-port N]\n"
      "Defaults match the agent's local mode: port 18830, tenant local,\n"
      "user device, password local-sim-password, device c8y-agent-local.\n"
      "Prints upstream messages as '<topic> <payload>' (LF shown as \\n),\n"
      "its own downstream publishes as '-> <topic> <payload>'.\n"
      "REST side (uploads, downloads) on 127.0.0.1:18831 unless --http-port.\n"
      "stdin commands: op <line> | json <device id> <fragments JSON> |\n"
      "                pub <topic> <payload> | file <path> |\n"
      "                accept <device id> | status | quit\n"
      "Bootstrap user " SIM_BOOTSTRAP_USER ", password " SIM_BOOTSTRAP_PASSWORD
      ".\n",
      f);
}

/* First line of the file, without the line end. */
static char *read_password(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "c8y-sim: %s: %s\n", path, strerror(errno));
    return NULL;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, f);
  fclose(f);
  if (n <= 0) {
    fprintf(stderr, "c8y-sim: %s:1: password file is empty\n", path);
    free(line);
    return NULL;
  }
  line[strcspn(line, "\r\n")] = '\0';
  if (!*line) {
    fprintf(stderr, "c8y-sim: %s:1: empty password\n", path);
    free(line);
    return NULL;
  }
  return line;
}

static void print_status(sim *s) {
  size_t n = sim_operation_count(s);
  if (n == 0)
    puts("no operations");
  for (size_t i = 0; i < n; i++) {
    long id = sim_operation_id_at(s, i);
    const char *detail = sim_operation_detail(s, id);
    const char *line = sim_operation_line(s, id);
    printf("op %ld %s %s%s%s\n", id,
           sim_op_status_name(sim_operation_status(s, id)),
           line ? line : "(JSON)", detail ? " | " : "", detail ? detail : "");
  }
  fflush(stdout);
}

static sim_http *g_http;

/* Returns false when the user asked to quit. */
static bool run_command(sim *s, char *line) {
  line[strcspn(line, "\r\n")] = '\0';
  char *cmd = line + strspn(line, " \t");
  if (!*cmd)
    return true;
  if (strncmp(cmd, "op ", 3) == 0) {
    long id = sim_create_operation(s, cmd + 3);
    if (id > 0)
      printf("op %ld created\n", id);
    else
      printf("error: not an operation line with a known template id "
             "(510-532) and a device id: %s\n",
             cmd + 3);
  } else if (strncmp(cmd, "json ", 5) == 0) {
    char *device = cmd + 5;
    char *sp = strchr(device, ' ');
    long id = -1;
    if (sp) {
      *sp = '\0';
      id = sim_create_json_operation(s, device, sp + 1);
    }
    if (id > 0)
      printf("op %ld created\n", id);
    else
      puts("error: usage: json <device id> {\"<fragment>\":{...}}");
  } else if (strncmp(cmd, "pub ", 4) == 0) {
    char *topic = cmd + 4;
    char *sp = strchr(topic, ' ');
    if (!sp) {
      puts("error: usage: pub <topic> <payload>");
    } else {
      *sp = '\0';
      if (sim_publish(s, topic, sp + 1) != 0)
        printf("error: publish on %s failed\n", topic);
    }
  } else if (strncmp(cmd, "file ", 5) == 0) {
    long id = sim_http_add_binary(g_http, cmd + 5);
    if (id > 0)
      printf("file %s served at %s/inventory/binaries/%ld\n", cmd + 5,
             sim_http_url(g_http), id);
    else
      puts("error: out of memory");
  } else if (strncmp(cmd, "accept ", 7) == 0) {
    /* The operator accepting a device in Device registration. */
    if (sim_accept_registration(s, cmd + 7) == 0)
      printf("registration of %s accepted: user device_%s, password %s\n",
             cmd + 7, cmd + 7, sim_registration_password(s, cmd + 7));
    else
      printf("error: cannot accept the registration of '%s'\n", cmd + 7);
  } else if (strcmp(cmd, "status") == 0) {
    print_status(s);
    for (size_t i = 0; i < sim_http_event_count(g_http); i++)
      printf("event %s %s on %s%s%s\n", sim_http_event_id(g_http, i),
             sim_http_event_type(g_http, i), sim_http_event_source(g_http, i),
             sim_http_event_binary(g_http, i) ? " binary " : "",
             sim_http_event_binary(g_http, i) ? sim_http_event_binary(g_http, i)
                                              : "");
  } else if (strcmp(cmd, "quit") == 0 || strcmp(cmd, "exit") == 0) {
    return false;
  } else if (strcmp(cmd, "help") == 0) {
    usage(stdout);
  } else {
    printf("error: unknown command '%s' (op, json, pub, accept, status, quit, "
           "help)\n",
           cmd);
  }
  fflush(stdout);
  return true;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"port", required_argument, NULL, 'p'},
      {"tenant", required_argument, NULL, 't'},
      {"user", required_argument, NULL, 'u'},
      {"password-file", required_argument, NULL, 'P'},
      {"device", required_argument, NULL, 'd'},
      {"op", required_argument, NULL, 'o'},
      {"workdir", required_argument, NULL, 'w'},
      {"quiet", no_argument, NULL, 'q'},
      {"http-port", required_argument, NULL, 'H'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  sim_options o = {.tenant = "local",
                   .user = "device",
                   .password = "local-sim-password",
                   .device_id = "c8y-agent-local",
                   .port = 18830,
                   .echo = true};
  char **ops = calloc((size_t)argc, sizeof *ops);
  size_t nops = 0;
  char *password = NULL;
  int http_port = 18831;
  int c;
  while ((c = getopt_long(argc, argv, "p:t:u:P:d:o:w:qhH:", longopts, NULL)) !=
         -1) {
    switch (c) {
    case 'p': {
      char *end;
      long v = strtol(optarg, &end, 10);
      if (*end || v < 0 || v > 65535) {
        fprintf(stderr, "c8y-sim: --port: '%s' is not a port (0..65535)\n",
                optarg);
        return 2;
      }
      o.port = (int)v;
      break;
    }
    case 'H': {
      char *end;
      long v = strtol(optarg, &end, 10);
      if (*end || v < 0 || v > 65535) {
        fprintf(stderr, "c8y-sim: --http-port: '%s' is not a port (0..65535)\n",
                optarg);
        return 2;
      }
      http_port = (int)v;
      break;
    }
    case 't':
      o.tenant = optarg;
      break;
    case 'u':
      o.user = optarg;
      break;
    case 'P':
      free(password);
      if (!(password = read_password(optarg)))
        return 2;
      o.password = password;
      break;
    case 'd':
      o.device_id = optarg;
      break;
    case 'o':
      ops[nops++] = optarg;
      break;
    case 'w':
      o.workdir = optarg;
      break;
    case 'q':
      o.echo = false;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "c8y-sim: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }

  /* Blocked before sim_start so Paho's threads inherit the mask and the
   * signals reach ppoll below. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  sim *s = NULL;
  char err[512];
  if (sim_start(&o, &s, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-sim: %s\n", err);
    free(password);
    free(ops);
    return 1;
  }
  sim_http_options ho = {.mqtt = s,
                         .tenant = o.tenant,
                         .user = o.user,
                         .password = o.password,
                         .port = http_port,
                         .workdir = sim_workdir(s),
                         .echo = o.echo};
  if (sim_http_start(&ho, &g_http, err, sizeof err) != 0) {
    fprintf(stderr, "c8y-sim: %s\n", err);
    sim_stop(s);
    free(password);
    free(ops);
    return 1;
  }
  fprintf(stderr,
          "c8y-sim: listening on 127.0.0.1:%d (user %s/%s, device %s, "
          "workdir %s), REST at %s\n",
          sim_port(s), o.tenant, o.user, o.device_id, sim_workdir(s),
          sim_http_url(g_http));
  int rc = 0;
  for (size_t i = 0; i < nops; i++) {
    long id = sim_create_operation(s, ops[i]);
    if (id < 0) {
      fprintf(stderr,
              "c8y-sim: --op %zu: '%s' is not an operation line "
              "with a known template id (510-532) and a device id\n",
              i + 1, ops[i]);
      rc = 2;
      break;
    }
    printf("op %ld created\n", id);
  }
  fflush(stdout);

  int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
  if (sfd < 0) {
    fprintf(stderr, "c8y-sim: signalfd: %s\n", strerror(errno));
    rc = 1;
  }
  int caught = 0;
  bool stdin_open = true;
  char *line = NULL;
  size_t cap = 0;
  while (rc == 0 && !caught) {
    struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN},
                            {.fd = stdin_open ? 0 : -1, .events = POLLIN}};
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      fprintf(stderr, "c8y-sim: poll: %s\n", strerror(errno));
      rc = 1;
      break;
    }
    if (pfd[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
        caught = (int)si.ssi_signo;
      continue;
    }
    if (!(pfd[1].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    if (getline(&line, &cap, stdin) < 0) {
      stdin_open = false; /* EOF: keep serving until a signal */
      continue;
    }
    if (!run_command(s, line))
      break;
  }
  if (sfd >= 0)
    close(sfd);
  free(line);
  if (caught)
    fprintf(stderr, "c8y-sim: %s, stopping\n", strsignal(caught));
  sim_http_stop(g_http);
  sim_stop(s);
  free(password);
  free(ops);
  return rc;
}
