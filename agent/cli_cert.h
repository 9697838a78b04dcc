/* c8y-agent cert create | csr: a device identity for Cumulocity's X.509
 * authentication. `create` makes an EC P-256 key (mode 0600) and a
 * self-signed certificate whose CN is the device id, to be uploaded as a
 * trusted certificate of the tenant; `csr` makes a certificate signing
 * request with that CN for a CA (the tenant's own CA or another one). */
#ifndef C8Y_CLI_CERT_H
#define C8Y_CLI_CERT_H

/* argv[0] is "cert". Returns the process exit status. */
int cli_cert_main(const char *config, int argc, char **argv);

#endif
