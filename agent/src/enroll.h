/* enroll: the device certificate from Cumulocity's certificate authority
 * over EST (RFC 7030), used by `c8y-agent cert enroll` and the daemon.
 *
 * Cumulocity (c8y-docs content/device-certificate-authentication/
 * device-enroll-and-re-enroll.md) serves
 *   POST <base>/.well-known/est/simpleenroll    Basic <device id>:<one-time
 *        password> (the ENROLLMENT_OTP the operator registered)
 *   POST <base>/.well-known/est/simplereenroll  "its password or a JWT"
 * with Content-Type application/pkcs10, Content-Transfer-Encoding base64
 * and the base64 DER CSR as the body; the reply is
 * application/pkcs7-mime; smime-type=certs-only. thin-edge (crates/core/
 * tedge/src/cli/certificate/c8y/{download,renew,mod}.rs) sends the same and
 * decodes the reply as base64 BER PKCS#7; the documentation's example shows
 * PEM. Both are accepted here, and PEM PKCS#7 too.
 *
 * Every request makes a new key (ECDSA P-256 by default) and stages the new
 * pair next to the configured one as "<file>.new" (each written whole:
 * temp file, fsync, rename, directory fsync). enroll_commit swaps the pair
 * in: key first, then certificate, so after a kill -9 at any point the
 * files hold the old pair, or the new key with the new certificate still
 * staged, which enroll_repair completes at the next start. Nothing here
 * logs the one-time password or a token. */
#ifndef C8Y_ENROLL_H
#define C8Y_ENROLL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define ENROLL_PATH_SIMPLEENROLL "/.well-known/est/simpleenroll"
#define ENROLL_PATH_SIMPLEREENROLL "/.well-known/est/simplereenroll"
/* Suffix of the staged pair: "<cert_file>.new" and "<key_file>.new". */
#define ENROLL_STAGED_SUFFIX ".new"
/* Alarm type of a renewal that failed or that the platform refused. */
#define ENROLL_RENEW_ALARM "c8y_CertificateRenewal"

typedef struct enroll_request {
  const char *base_url;  /* "https://host[:port]", no trailing '/' */
  const char *device_id; /* the CSR's CN */
  const char *key_type;  /* "ec-p256" (NULL), "rsa-2048", "rsa-3072" or
                            "rsa-4096" */
  const char *cert_file; /* where the pair lives; the new one is staged */
  const char *key_file;  /* beside them */
  const char *ca_path;   /* file or directory; NULL = the system's */
  bool verify_hostname;
  /* simpleenroll when set; otherwise simplereenroll authenticated by the
   * current pair (mutual TLS) and, when set, the bearer token. */
  const char *otp;
  const char *bearer;
  int timeout_s; /* whole request; 0 = 60 */
  /* When it becomes true the request stops (C8Y_ECANCELED); may be NULL. */
  const atomic_bool *cancel;
} enroll_request;

/* Whether key_type names a key this module makes. */
bool enroll_key_type_valid(const char *key_type);

/* Makes a key and CSR, asks the CA, checks the answer (a certificate for
 * this key whose CN is the device id) and stages the pair. Blocking; never
 * on the main loop or a Paho thread. Returns 0, or with one line in err:
 * C8Y_EAUTH (401/403: a wrong or used one-time password, a refused
 * identity), C8Y_EHTTP (another HTTP status), C8Y_ENET (DNS, connect, TLS,
 * a cut reply), C8Y_EIO (a file), C8Y_EINVAL (a reply without a usable
 * certificate, a bad request), C8Y_ECANCELED, C8Y_ENOMEM. */
int enroll_request_certificate(const enroll_request *r, char *err,
                               size_t errlen);

/* "<path>.new", malloc'ed (NULL when out of memory). */
char *enroll_staged_path(const char *path);
/* Swaps the staged pair in (see above). 0, or C8Y_EIO/C8Y_ENOMEM with err;
 * on error the old certificate and key are still in place or enroll_repair
 * completes the swap. */
int enroll_commit(const char *cert_file, const char *key_file, char *err,
                  size_t errlen);
/* Removes a staged pair (a refused or unused renewal). */
void enroll_discard(const char *cert_file, const char *key_file);
/* At start: completes a swap a kill cut short (the key is the new one, the
 * certificate still staged) and removes a staged pair that was never
 * committed. Returns 1 when it completed a swap, 0 when nothing was to do
 * or it removed a stale staged pair, C8Y_EIO with err when a file cannot
 * be renamed or removed. */
int enroll_repair(const char *cert_file, const char *key_file, char *err,
                  size_t errlen);

/* Whether cert_file and key_file form a pair usable for device_id: both
 * readable, the key belongs to the certificate, CN = device_id and the
 * certificate valid now. When not, err says why. */
bool enroll_pair_usable(const char *cert_file, const char *key_file,
                        const char *device_id, char *err, size_t errlen);

/* When to renew cert_file: at `percent` of its lifetime (notBefore ..
 * notAfter), as wall-clock seconds since the epoch, with its expiry in
 * *not_after. Returns 0, or C8Y_EIO/C8Y_EINVAL with err. */
int enroll_renew_time(const char *cert_file, int percent, long long *renew_at,
                      long long *not_after, char *err, size_t errlen);

/* ---- pure helpers (exposed for unit tests) ---- */

/* The certificates of an EST reply (base64 or raw DER PKCS#7, PEM PKCS#7,
 * or PEM certificates) as PEM text, the one whose public key is that of
 * key_pem first. Returns 0 with *pem malloc'ed, C8Y_EINVAL with err. */
int enroll_reply_to_pem(const char *body, size_t len, const char *key_pem,
                        char **pem, char *err, size_t errlen);

#endif
