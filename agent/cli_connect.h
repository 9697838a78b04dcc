/* c8y-agent connect --test: checks the connection to Cumulocity step by
 * step (DNS, TCP, TLS, MQTT CONNECT, one round trip) and names the step
 * that failed and why. */
#ifndef C8Y_CLI_CONNECT_H
#define C8Y_CLI_CONNECT_H

/* Exit status when one of the steps failed (1 is a configuration error). */
#define CLI_CONNECT_FAILED 4

/* argv[0] is "connect". Returns the process exit status. */
int cli_connect_main(const char *config, int argc, char **argv);

#endif
