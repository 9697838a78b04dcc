/* c8y-agent diag: a support bundle (versions, configuration without
 * secrets, status, queue and journal statistics, the last log lines, the
 * plugin list, connect --test) in one .tar.gz. */
#ifndef C8Y_CLI_DIAG_H
#define C8Y_CLI_DIAG_H

/* argv[0] is "diag". Returns the process exit status: 0 when the archive
 * was written (sections that could not be collected are named inside it),
 * 1 when it could not be written, 2 for a usage error. */
int cli_diag_main(const char *config, int argc, char **argv);

#endif
