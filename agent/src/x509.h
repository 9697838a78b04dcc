/* x509: the device identity in an X.509 client certificate. Cumulocity
 * authenticates a certificate-based device by the subject CN, and the MQTT
 * clientId must be d:<CN>: a mismatch, or a key that does not belong to the
 * certificate, would only show up as an opaque TLS or CONNACK failure, so
 * both are checked before connecting. */
#ifndef C8Y_X509_H
#define C8Y_X509_H

#include <stddef.h>

/* Subject CN of the first certificate in the PEM file `cert_file`.
 * Returns 0, or with one line in err: C8Y_EIO when the file cannot be
 * opened, C8Y_EINVAL for what is in it (not PEM, no CN, several CNs, a NUL
 * byte in it, too long for cnlen). */
int x509_subject_cn(const char *cert_file, char *cn, size_t cnlen, char *err,
                    size_t errlen);

/* Checks a client certificate set up: cert_file holds a PEM certificate,
 * key_file the (unencrypted) private key of that certificate, and, when
 * device_id is not NULL, the certificate's CN equals device_id. Logs a
 * warning when the certificate is expired or not yet valid. Returns 0, or
 * with one line in err naming the files and both identities: C8Y_EIO when
 * a file cannot be opened, C8Y_EINVAL when the files do not fit. */
int x509_check_device_cert(const char *cert_file, const char *key_file,
                           const char *device_id, char *err, size_t errlen);

/* An OpenSSL pem_password_cb that refuses (OpenSSL's -1, not a C8Y_*
 * code): a daemon must never prompt on a terminal for a key passphrase. */
int x509_no_passphrase(char *buf, int size, int rwflag, void *u);

/* OpenSSL's reason for the last failure on this thread (or `fallback`),
 * for a one-line error; the thread's error queue is emptied so that Paho
 * never reports a stale entry. */
const char *x509_ssl_reason(const char *fallback);

/* Alarm type raised while the device certificate is about to expire. */
#define X509_EXPIRY_ALARM "c8y_CertificateExpiry"

/* The upstream line for the certificate-expiry alarm of cert_file:
 * "304,c8y_CertificateExpiry,<text>" (WARNING) when it expires within
 * warn_days, "303,..." (MINOR) once it has expired, "306,c8y_Certificate
 * Expiry" (clear) otherwise; a raised alarm is also logged as a warning.
 * Returns 0, or C8Y_EIO (cannot open) or C8Y_EINVAL (not a certificate,
 * no readable expiry) with the reason in line. */
int x509_expiry_line(const char *cert_file, int warn_days, char *line,
                     size_t linelen);

#endif
