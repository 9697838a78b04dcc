/* cli_api: the CLI subcommands that talk to the running agent (send,
 * status, ops). */
#ifndef C8Y_CLI_API_H
#define C8Y_CLI_API_H

#include <stdbool.h>

/* Whether argv word `arg` names one of these subcommands. */
bool cli_api_is_command(const char *arg);
/* argv[0] is the subcommand. Returns the process exit status. */
int cli_api_main(const char *config, int argc, char **argv);

#endif
