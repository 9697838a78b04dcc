#include "sim_est.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct otp_entry {
  char *device_id;
  char *otp; /* NULL once used */
} otp_entry;

struct sim_est {
  pthread_mutex_t mu;
  X509 *ca, *renewal_ca;
  EVP_PKEY *ca_key, *renewal_key;
  long long age_s, lifetime_s;
  int validity_left; /* issues age_s/lifetime_s still apply to; -1 = all */
  otp_entry *otps;
  size_t notps;
  char **enrolled;
  size_t nenrolled;
  size_t issued;
};

#define DEFAULT_LIFETIME_S (365LL * 86400)
#define PKCS7_TYPE "application/pkcs7-mime; smime-type=certs-only"
#define ERROR_TYPE "application/vnd.com.nsn.cumulocity.error+json"

sim_est *sim_est_new(void) {
  sim_est *e = calloc(1, sizeof *e);
  if (!e)
    return NULL;
  pthread_mutex_init(&e->mu, NULL);
  e->lifetime_s = DEFAULT_LIFETIME_S;
  e->validity_left = -1;
  return e;
}

void sim_est_free(sim_est *e) {
  if (!e)
    return;
  X509_free(e->ca);
  EVP_PKEY_free(e->ca_key);
  X509_free(e->renewal_ca);
  EVP_PKEY_free(e->renewal_key);
  for (size_t i = 0; i < e->notps; i++) {
    free(e->otps[i].device_id);
    free(e->otps[i].otp);
  }
  free(e->otps);
  for (size_t i = 0; i < e->nenrolled; i++)
    free(e->enrolled[i]);
  free(e->enrolled);
  pthread_mutex_destroy(&e->mu);
  free(e);
}

static int load_ca(const char *ca_cert, const char *ca_key, X509 **x,
                   EVP_PKEY **k, char *err, size_t errlen) {
  FILE *f = fopen(ca_cert, "re");
  *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f)
    fclose(f);
  f = fopen(ca_key, "re");
  *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
  if (f)
    fclose(f);
  if (*x && *k)
    return 0;
  snprintf(err, errlen, "sim_est: cannot read the CA %s / %s", ca_cert, ca_key);
  X509_free(*x);
  EVP_PKEY_free(*k);
  return -1;
}

/* Loads a CA and puts it into *x and *k under the lock, freeing what was
 * there. */
static int replace_ca(sim_est *e, X509 **x, EVP_PKEY **k, const char *ca_cert,
                      const char *ca_key, char *err, size_t errlen) {
  X509 *nx;
  EVP_PKEY *nk;
  if (load_ca(ca_cert, ca_key, &nx, &nk, err, errlen) != 0)
    return -1;
  pthread_mutex_lock(&e->mu);
  X509_free(*x);
  EVP_PKEY_free(*k);
  *x = nx;
  *k = nk;
  pthread_mutex_unlock(&e->mu);
  return 0;
}

int sim_est_set_ca(sim_est *e, const char *ca_cert, const char *ca_key,
                   char *err, size_t errlen) {
  return replace_ca(e, &e->ca, &e->ca_key, ca_cert, ca_key, err, errlen);
}

int sim_est_set_renewal_ca(sim_est *e, const char *ca_cert, const char *ca_key,
                           char *err, size_t errlen) {
  return replace_ca(e, &e->renewal_ca, &e->renewal_key, ca_cert, ca_key, err,
                    errlen);
}

int sim_est_add_otp(sim_est *e, const char *device_id, const char *otp) {
  pthread_mutex_lock(&e->mu);
  otp_entry *grown = realloc(e->otps, (e->notps + 1) * sizeof *grown);
  int rc = -1;
  if (grown) {
    e->otps = grown;
    e->otps[e->notps] =
        (otp_entry){.device_id = strdup(device_id), .otp = strdup(otp)};
    e->notps++;
    rc = 0;
  }
  pthread_mutex_unlock(&e->mu);
  return rc;
}

void sim_est_set_validity(sim_est *e, long long age_s, long long lifetime_s,
                          int count) {
  pthread_mutex_lock(&e->mu);
  e->age_s = age_s;
  e->lifetime_s = lifetime_s;
  e->validity_left = count;
  pthread_mutex_unlock(&e->mu);
}

size_t sim_est_issued(sim_est *e) {
  pthread_mutex_lock(&e->mu);
  size_t n = e->issued;
  pthread_mutex_unlock(&e->mu);
  return n;
}

static bool enrolled_locked(sim_est *e, const char *id) {
  for (size_t i = 0; i < e->nenrolled; i++)
    if (strcmp(e->enrolled[i], id) == 0)
      return true;
  return false;
}

bool sim_est_enrolled(sim_est *e, const char *device_id) {
  pthread_mutex_lock(&e->mu);
  bool yes = enrolled_locked(e, device_id);
  pthread_mutex_unlock(&e->mu);
  return yes;
}

static char *error_json(const char *kind, const char *msg) {
  char *s = NULL;
  if (asprintf(&s, "{\"error\":\"%s\",\"message\":\"%s\"}", kind, msg) < 0)
    return NULL;
  return s;
}

static unsigned char *decode_b64(const char *body, size_t len, int *outlen) {
  char *clean = malloc(len + 1);
  if (!clean)
    return NULL;
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    if (!strchr(" \t\r\n", body[i]))
      clean[n++] = body[i];
  clean[n] = '\0';
  unsigned char *out = n && n % 4 == 0 ? malloc(n) : NULL;
  int got = out ? EVP_DecodeBlock(out, (unsigned char *)clean, (int)n) : -1;
  if (got >= 0) {
    got -= (n >= 1 && clean[n - 1] == '=') + (n >= 2 && clean[n - 2] == '=');
    *outlen = got;
  } else {
    free(out);
    out = NULL;
  }
  free(clean);
  return out;
}

static X509_REQ *parse_csr(const char *body, size_t len) {
  if (len && memmem(body, len, "-----BEGIN", 10)) {
    BIO *b = BIO_new_mem_buf(body, (int)len);
    X509_REQ *r = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return r;
  }
  int n = 0;
  unsigned char *der = decode_b64(body, len, &n);
  const unsigned char *p = der;
  X509_REQ *r = der ? d2i_X509_REQ(NULL, &p, n) : NULL;
  free(der);
  return r;
}

/* CN of a request with a valid signature, malloc'ed, or NULL. */
static char *csr_cn(X509_REQ *r) {
  EVP_PKEY *pk = X509_REQ_get0_pubkey(r);
  if (!pk || X509_REQ_verify(r, pk) != 1)
    return NULL;
  X509_NAME *n = X509_REQ_get_subject_name(r);
  int at = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
  if (at < 0)
    return NULL;
  unsigned char *utf8 = NULL;
  int len = ASN1_STRING_to_UTF8(
      &utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, at)));
  char *cn = len > 0 ? strndup((char *)utf8, (size_t)len) : NULL;
  OPENSSL_free(utf8);
  return cn;
}

/* Signs under e->mu. */
static X509 *issue(sim_est *e, X509_REQ *r, bool renewal) {
  X509 *ca = renewal && e->renewal_ca ? e->renewal_ca : e->ca;
  EVP_PKEY *ca_key = renewal && e->renewal_ca ? e->renewal_key : e->ca_key;
  long long age = e->age_s, lifetime = e->lifetime_s;
  if (e->validity_left > 0 && --e->validity_left == 0) {
    e->age_s = 0;
    e->lifetime_s = DEFAULT_LIFETIME_S;
  }
  X509 *x = X509_new();
  unsigned char serial[12];
  BIGNUM *bn = NULL;
  bool ok = x && ca && RAND_bytes(serial, sizeof serial) == 1;
  if (ok) {
    serial[0] &= 0x7f;
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) &&
         X509_set_version(x, 2) == 1 &&
         X509_gmtime_adj(X509_getm_notBefore(x), -age) &&
         X509_gmtime_adj(X509_getm_notAfter(x), lifetime - age) &&
         X509_set_subject_name(x, X509_REQ_get_subject_name(r)) == 1 &&
         X509_set_issuer_name(x, X509_get_subject_name(ca)) == 1 &&
         X509_set_pubkey(x, X509_REQ_get0_pubkey(r)) == 1;
  }
  if (ok) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
    const char *exts[][2] = {{"basicConstraints", "critical,CA:FALSE"},
                             {"keyUsage", "critical,digitalSignature"},
                             {"extendedKeyUsage", "clientAuth"}};
    for (size_t i = 0; ok && i < sizeof exts / sizeof *exts; i++) {
      X509_EXTENSION *ext = X509V3_EXT_conf(NULL, &ctx, exts[i][0], exts[i][1]);
      ok = ext && X509_add_ext(x, ext, -1) == 1;
      X509_EXTENSION_free(ext);
    }
    ok = ok && X509_sign(x, ca_key, EVP_sha256()) > 0;
  }
  BN_free(bn);
  if (!ok) {
    X509_free(x);
    x = NULL;
  }
  return x;
}

/* RFC 7030 4.2.3: a certs-only SignedData, base64 in 64-column lines. */
static char *certs_only_b64(X509 *x) {
  PKCS7 *p7 = PKCS7_new();
  unsigned char *der = NULL;
  char *out = NULL;
  if (p7 && PKCS7_set_type(p7, NID_pkcs7_signed) == 1 &&
      PKCS7_content_new(p7, NID_pkcs7_data) == 1 &&
      PKCS7_add_certificate(p7, x) == 1) {
    int n = i2d_PKCS7(p7, &der);
    if (n > 0) {
      BIO *b64 = BIO_new(BIO_f_base64());
      BIO *mem = BIO_new(BIO_s_mem());
      if (b64 && mem) {
        BIO *chain = BIO_push(b64, mem);
        char *data = NULL;
        if (BIO_write(chain, der, n) == n && BIO_flush(chain) == 1) {
          long len = BIO_get_mem_data(mem, &data);
          out = len > 0 ? strndup(data, (size_t)len) : NULL;
        }
        BIO_free_all(chain);
      } else {
        BIO_free(b64);
        BIO_free(mem);
      }
    }
  }
  OPENSSL_free(der);
  PKCS7_free(p7);
  return out;
}

static int answer(sim_est *e, const char *device_id, bool renewal,
                  const char *body, size_t len, char **reply,
                  const char **ctype) {
  X509_REQ *r = parse_csr(body, len);
  char *cn = r ? csr_cn(r) : NULL;
  int status = 200;
  if (!cn) {
    *reply = error_json("certificate/Bad Request",
                        "The request does not contain a valid "
                        "CertificateSigningRequest");
    status = 400;
  } else if (strcmp(cn, device_id) != 0) {
    *reply = error_json("certificate/Bad Request",
                        "The CSR common name is not the device id");
    status = 400;
  } else {
    pthread_mutex_lock(&e->mu);
    X509 *x = issue(e, r, renewal);
    if (x) {
      e->issued++;
      if (!enrolled_locked(e, cn)) {
        char **grown = realloc(e->enrolled, (e->nenrolled + 1) * sizeof *grown);
        if (grown) {
          e->enrolled = grown;
          e->enrolled[e->nenrolled++] = strdup(cn);
        }
      }
    }
    pthread_mutex_unlock(&e->mu);
    *reply = x ? certs_only_b64(x) : NULL;
    X509_free(x);
    if (!*reply) {
      *reply = error_json("general/Internal Error",
                          "Tenant CA certificate is either missing, expired, "
                          "or has a validity of less than one year");
      status = 500;
    }
  }
  *ctype = status == 200 ? PKCS7_TYPE : ERROR_TYPE;
  free(cn);
  X509_REQ_free(r);
  ERR_clear_error();
  return status;
}

/* "Basic base64(id:otp)" against the registered one-time passwords; the
 * one that matches is used up. Returns the device id (malloc'ed) or
 * NULL. */
static char *take_otp(sim_est *e, const char *authorization) {
  if (!authorization || strncasecmp(authorization, "Basic ", 6) != 0)
    return NULL;
  const char *b = authorization + 6;
  int n = 0;
  unsigned char *dec = decode_b64(b, strlen(b), &n);
  if (!dec)
    return NULL;
  char *text = strndup((char *)dec, (size_t)n);
  free(dec);
  char *colon = text ? strchr(text, ':') : NULL;
  char *id = NULL;
  if (colon) {
    *colon = '\0';
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->notps && !id; i++)
      if (e->otps[i].otp && strcmp(e->otps[i].device_id, text) == 0 &&
          strcmp(e->otps[i].otp, colon + 1) == 0) {
        free(e->otps[i].otp);
        e->otps[i].otp = NULL;
        id = strdup(text);
      }
    pthread_mutex_unlock(&e->mu);
  }
  free(text);
  return id;
}

int sim_est_simpleenroll(sim_est *e, const char *authorization,
                         const char *body, size_t len, char **reply,
                         const char **ctype) {
  char *id = take_otp(e, authorization);
  if (!id) {
    *reply = error_json("security/Unauthorized",
                        "Invalid credentials! : Bad credentials");
    *ctype = ERROR_TYPE;
    return 401;
  }
  int status = answer(e, id, false, body, len, reply, ctype);
  free(id);
  return status;
}

int sim_est_simplereenroll(sim_est *e, bool authenticated, const char *body,
                           size_t len, char **reply, const char **ctype) {
  X509_REQ *r = authenticated ? parse_csr(body, len) : NULL;
  char *cn = r ? csr_cn(r) : NULL;
  X509_REQ_free(r);
  bool known = cn && sim_est_enrolled(e, cn);
  if (!authenticated || (cn && !known)) {
    free(cn);
    *reply = error_json("security/Unauthorized",
                        "Invalid credentials! : Bad credentials");
    *ctype = ERROR_TYPE;
    return 401;
  }
  int status = answer(e, cn ? cn : "", true, body, len, reply, ctype);
  free(cn);
  return status;
}
