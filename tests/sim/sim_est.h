/* sim_est: the simulator's certificate authority, Cumulocity's EST
 * endpoints (c8y-docs device-enroll-and-re-enroll.md) as sim_http serves
 * them:
 *   POST /.well-known/est/simpleenroll    Basic <device id>:<one-time
 *        password>; the password works once
 *   POST /.well-known/est/simplereenroll  for a device enrolled before,
 *        authenticated by sim_http (a JWT from s/uat, or its client
 *        certificate)
 * Body: the CSR as base64 DER (Content-Transfer-Encoding: base64) or PEM;
 * its CN must be the device id and its signature valid. Reply: 200,
 * application/pkcs7-mime; smime-type=certs-only, base64 DER PKCS#7 with
 * the certificate signed by the test CA (CN from the CSR, clientAuth).
 * Thread-safe. */
#ifndef C8Y_SIM_EST_H
#define C8Y_SIM_EST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sim_est sim_est;

sim_est *sim_est_new(void);
void sim_est_free(sim_est *e);

/* The CA (PEM files) that signs from now on. 0 or -1 with err. */
int sim_est_set_ca(sim_est *e, const char *ca_cert, const char *ca_key,
                   char *err, size_t errlen);
/* Registers device_id with a one-time password (the operator's step). */
int sim_est_add_otp(sim_est *e, const char *device_id, const char *otp);
/* The CA that signs simplereenroll answers from now on (default: the one
 * of sim_est_set_ca), e.g. one the broker does not trust. */
int sim_est_set_renewal_ca(sim_est *e, const char *ca_cert, const char *ca_key,
                           char *err, size_t errlen);
/* The next `count` certificates issued (-1: all) were valid since `age_s`
 * ago, for `lifetime_s` in all; then the default again (0 and 365 days). */
void sim_est_set_validity(sim_est *e, long long age_s, long long lifetime_s,
                          int count);
/* Enrolled or re-enrolled so far. */
size_t sim_est_issued(sim_est *e);
/* Whether device_id was issued a certificate. */
bool sim_est_enrolled(sim_est *e, const char *device_id);

/* Answers a request: the HTTP status, *reply (malloc'ed) and its type.
 * authorization: the request's header (simpleenroll); authenticated: the
 * identity sim_http established for simplereenroll (NULL = none). */
int sim_est_simpleenroll(sim_est *e, const char *authorization,
                         const char *body, size_t len, char **reply,
                         const char **ctype);
int sim_est_simplereenroll(sim_est *e, bool authenticated, const char *body,
                           size_t len, char **reply, const char **ctype);

#endif
