/* c8y-agent: command line entry point. */
#include "agent.h"
#include "bootstrap.h"
#include "cli_api.h"
#include "cli_cert.h"
#include "cli_connect.h"
#include "cli_diag.h"
#include "config.h"
#include "crash.h"
#include "log.h"
#include "notify.h"
#include "x509.h"

#include <c8y/plugin.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef C8Y_VERSION
#define C8Y_VERSION "0.0.0"
#endif
#ifndef C8Y_DEFAULT_CONFIG
#define C8Y_DEFAULT_CONFIG "/etc/c8y-agent/agent.ini"
#endif

static void usage(FILE *out) {
  fprintf(out,
          "usage: c8y-agent [-c FILE] [--check-config | --list-plugins]\n"
          "       c8y-agent [-c FILE] send|status|ops|diag ... (CMD --help)\n"
          "\n"
          "Cumulocity IoT edge agent: one MQTT session, native plugins.\n"
          "\n"
          "  -c, --config FILE  configuration (default %s,\n"
          "                     or $C8Y_AGENT_CONFIG)\n"
          "      --check-config validate the configuration and exit\n"
          "      --list-plugins load the plugins, show what loaded and why\n"
          "                     others did not, and exit\n"
          "      --clear-quarantine NAME\n"
          "                     load plugin NAME again although it crashed\n"
          "                     the agent repeatedly, and exit\n"
          "  -V, --version      print the version and exit\n"
          "\n"
          "  connect --test     check DNS, TCP, TLS, MQTT and one round trip\n"
          "                     and say which step failed and why\n"
          "  cert create|csr    a device key + self-signed certificate, or a\n"
          "                     CSR, with CN = the device id (cert --help)\n"
          "  cert enroll        a device key + certificate from Cumulocity's\n"
          "                     certificate authority (one-time password)\n"
          "  diag [-o FILE]     a support bundle (.tar.gz): versions, config\n"
          "                     without secrets, status, logs (diag --help)\n"
          "  -h, --help         show this help\n",
          C8Y_DEFAULT_CONFIG);
}

static int check_config(const char *path) {
  agent_config cfg;
  char err[1024];
  /* The configuration is read three times here; its warnings are shown by
   * the read that also loads the plugins (agent_check_plugin_sections), so
   * that each appears once. Errors come back in err. */
  int level = log_get_level();
  log_set_level(LOG_LVL_ERROR);
  int loaded = config_load(path, &cfg, err, sizeof err);
  log_set_level(level);
  if (loaded != 0) {
    fprintf(stderr, "%s\n", err);
    return AGENT_EXIT_CONFIG;
  }
  /* A device that enrolls at start has no certificate yet. */
  bool enrolls = cfg.enroll_otp && access(cfg.cert_file, F_OK) != 0;
  if (cfg.cert_file && !enrolls &&
      x509_check_device_cert(cfg.cert_file, cfg.key_file, cfg.device_id, err,
                             sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    config_free(&cfg);
    return AGENT_EXIT_CONFIG;
  }
  config_free(&cfg);
  /* Plugin sections need the plugins themselves to tell a typo. */
  int rc = agent_check_plugin_sections(path, stderr);
  if (rc != 0)
    return rc;
  log_set_level(LOG_LVL_ERROR);
  loaded = config_load(path, &cfg, err, sizeof err);
  log_set_level(level);
  if (loaded != 0) {
    fprintf(stderr, "%s\n", err);
    return AGENT_EXIT_CONFIG;
  }
  int stored = bootstrap_load_stored(&cfg, err, sizeof err);
  if (stored < 0) {
    fprintf(stderr, "%s\n", err);
    config_free(&cfg);
    return AGENT_EXIT_CONFIG;
  }
  char *client_id = config_client_id(&cfg);
  printf("%s: OK (%s, clientId %s, %s:%d%s)\n", path,
         cfg.local_sim            ? "local simulator"
         : bootstrap_wanted(&cfg) ? "bootstrap: not registered yet"
         : stored ? "Cumulocity tenant, credentials from bootstrap"
                  : "Cumulocity tenant",
         client_id ? client_id : "?", cfg.host, cfg.port,
         cfg.tls ? " TLS" : "");
  free(client_id);
  config_free(&cfg);
  return 0;
}

/* The reason a failed start or a fatal exit gives `systemctl status`: the
 * unit does not restart on AGENT_EXIT_CONFIG/AGENT_EXIT_AUTH
 * (RestartPreventExitStatus), so this line is what the operator sees. */
static int report_exit(int rc) {
  if (rc == AGENT_EXIT_OK)
    return rc;
  const char *what =
      rc == AGENT_EXIT_CONFIG ? "bad configuration, not restarted"
      : rc == AGENT_EXIT_AUTH ? "credentials refused, not restarted"
                              : "runtime failure";
  char last[512], status[700];
  log_last_error(last, sizeof last);
  snprintf(status, sizeof status, "STATUS=exited %d (%s)%s%s", rc, what,
           last[0] ? ": " : "", last);
  notify_send(status);
  return rc;
}

static int clear_quarantine(const char *path, const char *name) {
  agent_config cfg;
  char err[1024];
  if (config_load(path, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return AGENT_EXIT_CONFIG;
  }
  int rc = crash_clear_quarantine(cfg.state_dir, name);
  if (rc == 0)
    printf("plugin %s: quarantine cleared; it loads at the next start or "
           "reload\n",
           name);
  else if (rc == C8Y_ESTATE)
    fprintf(stderr, "plugin %s is not quarantined (see --list-plugins)\n",
            name);
  else
    fprintf(stderr, "plugin %s: cannot clear the quarantine in %s: %s\n", name,
            cfg.state_dir, strerror(errno));
  config_free(&cfg);
  return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  const char *config = getenv("C8Y_AGENT_CONFIG");
  if (!config || !*config)
    config = C8Y_DEFAULT_CONFIG;
  enum { RUN, CHECK, LIST, CLEAR } mode = RUN;
  const char *clear_name = NULL;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "-c") == 0 || strcmp(arg, "--config") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "c8y-agent: %s needs a file name\n", arg);
        return 2;
      }
      config = argv[++i];
    } else if (strncmp(arg, "--config=", 9) == 0) {
      config = arg + 9;
    } else if (strcmp(arg, "--check-config") == 0) {
      mode = CHECK;
    } else if (strcmp(arg, "--list-plugins") == 0) {
      mode = LIST;
    } else if (strcmp(arg, "--clear-quarantine") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "c8y-agent: %s needs a plugin name\n", arg);
        return 2;
      }
      mode = CLEAR;
      clear_name = argv[++i];
    } else if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
      printf("c8y-agent %s (plugin ABI %d.%d)\n", C8Y_VERSION, C8Y_ABI_MAJOR,
             C8Y_ABI_MINOR);
      return 0;
    } else if (strcmp(arg, "cert") == 0) {
      return cli_cert_main(config, argc - i, argv + i);
    } else if (strcmp(arg, "connect") == 0) {
      return cli_connect_main(config, argc - i, argv + i);
    } else if (strcmp(arg, "diag") == 0) {
      return cli_diag_main(config, argc - i, argv + i);
    } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (cli_api_is_command(arg)) {
      return cli_api_main(config, argc - i, argv + i);
    } else {
      fprintf(stderr, "c8y-agent: unknown option '%s' (see --help)\n", arg);
      return 2;
    }
  }
  if (!*config) {
    fprintf(stderr, "c8y-agent: empty configuration file name\n");
    return 2;
  }
  switch (mode) {
  case CHECK:
    return check_config(config);
  case LIST:
    return agent_list_plugins(config, stdout);
  case CLEAR:
    return clear_quarantine(config, clear_name);
  case RUN:
    break;
  }
#ifdef C8Y_SYSTEST_BROKEN_AGENT
  /* A deliberately broken build (CMake C8Y_SYSTEST_BROKEN_AGENT, never for
   * a release) for the system test of a self-upgrade that must roll back:
   * it never connects and exits with a status systemd restarts. */
  fprintf(stderr, "c8y-agent: built broken on purpose "
                  "(C8Y_SYSTEST_BROKEN_AGENT); exiting\n");
  return 2;
#endif
  /* What plugins start (the logfile plugin's `c8y-agent diag`) reads the
   * configuration this agent runs with, also when it came from -c. */
  if (setenv("C8Y_AGENT_CONFIG", config, 1) != 0)
    log_warning("setenv(C8Y_AGENT_CONFIG): %s", strerror(errno));
  /* The process holds the password: no core dump, no ptrace by the same
   * user, no /proc/<pid>/mem for others (the unit adds LimitCORE=0). */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
    log_warning("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
  return report_exit(agent_run(config));
}
