/* agent: the daemon as a process. Loads the config, builds the runtime
 * (runtime.h: queue, journal, engine, plugins, services, local API) with
 * the MQTT link as its transport, runs the main loop (the runtime's turn,
 * the certificate renewal, sd_notify's watchdog and status) and handles
 * signals (TERM/INT stop in order, HUP reloads config and plugins). */
#ifndef C8Y_AGENT_H
#define C8Y_AGENT_H

#include <stdio.h>

/* Exit codes */
#define AGENT_EXIT_OK 0
#define AGENT_EXIT_CONFIG 1  /* bad configuration */
#define AGENT_EXIT_RUNTIME 2 /* state dir, queue, journal unusable */
#define AGENT_EXIT_AUTH 3    /* the platform kept refusing the credentials */

/* Connection refusals in a row (CONNACK 4/5) before the agent gives up. */
#define AGENT_MAX_AUTH_FAILURES 5

/* Runs until SIGTERM/SIGINT; returns an AGENT_EXIT_* code. */
int agent_run(const char *config_path);
/* Loads plugins without connecting and prints what loaded and why others
 * did not. Returns 0 if every plugin loaded. */
int agent_list_plugins(const char *config_path, FILE *out);
/* --check-config's plugin part: loads the plugins and reports, with
 * file:line, [plugin.<name>] sections for plugins that do not exist and
 * keys a plugin never reads (with "did you mean" hints). Returns 0 or
 * AGENT_EXIT_CONFIG. */
int agent_check_plugin_sections(const char *config_path, FILE *out);

#endif
