#include "enroll.h"

#include "fsutil.h"
#include "log.h"
#include "status.h"
#include "x509.h"

#include <c8y/plugin.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* An EST reply is one certificate (a few KiB even with a chain). */
#define MAX_REPLY_BYTES (256 * 1024)
#define DEFAULT_TIMEOUT_S 60

bool enroll_key_type_valid(const char *key_type) {
  static const char *const known[] = {"ec-p256", "rsa-2048", "rsa-3072",
                                      "rsa-4096"};
  if (!key_type)
    return true;
  for (size_t i = 0; i < sizeof known / sizeof *known; i++)
    if (strcmp(key_type, known[i]) == 0)
      return true;
  return false;
}

static EVP_PKEY *new_key(const char *key_type, char *err, size_t errlen) {
  EVP_PKEY *k = NULL;
  if (!key_type || strcmp(key_type, "ec-p256") == 0)
    k = EVP_EC_gen("P-256");
  else if (strncmp(key_type, "rsa-", 4) == 0 && enroll_key_type_valid(key_type))
    k = EVP_RSA_gen((unsigned)atoi(key_type + 4));
  else {
    status_seterr(err, errlen,
                  "[c8y] cert_key_type '%s' is not ec-p256, rsa-2048, "
                  "rsa-3072 or rsa-4096",
                  key_type);
    return NULL;
  }
  if (!k)
    status_seterr(err, errlen, "cannot generate a %s key: %s",
                  key_type ? key_type : "ec-p256",
                  x509_ssl_reason("unknown OpenSSL error"));
  return k;
}

/* The CSR as base64 DER in 64-column lines: what RFC 7030 section 4.2.1
 * and Cumulocity's example send ("Content-Transfer-Encoding: base64"). */
static char *make_csr_base64(EVP_PKEY *k, const char *device_id, char *err,
                             size_t errlen) {
  X509_REQ *r = X509_REQ_new();
  X509_NAME *n = X509_NAME_new();
  unsigned char *der = NULL;
  char *out = NULL;
  bool ok =
      r && n &&
      X509_NAME_add_entry_by_NID(n, NID_commonName, MBSTRING_UTF8,
                                 (const unsigned char *)device_id, -1, -1,
                                 0) == 1 &&
      X509_REQ_set_version(r, 0) == 1 && X509_REQ_set_subject_name(r, n) == 1 &&
      X509_REQ_set_pubkey(r, k) == 1 && X509_REQ_sign(r, k, EVP_sha256()) > 0;
  int len = ok ? i2d_X509_REQ(r, &der) : -1;
  if (len > 0) {
    size_t b64 = 4 * (((size_t)len + 2) / 3);
    size_t cap = b64 + b64 / 64 + 2;
    out = malloc(cap + 1);
    unsigned char *tmp = malloc(b64 + 1);
    if (out && tmp && EVP_EncodeBlock(tmp, der, len) == (int)b64) {
      size_t o = 0;
      for (size_t i = 0; i < b64; i += 64) {
        size_t take = b64 - i < 64 ? b64 - i : 64;
        memcpy(out + o, tmp + i, take);
        o += take;
        out[o++] = '\n';
      }
      out[o] = '\0';
    } else {
      free(out);
      out = NULL;
    }
    free(tmp);
  }
  if (!out)
    status_seterr(err, errlen, "cannot build the certificate request: %s",
                  x509_ssl_reason("unknown OpenSSL error"));
  OPENSSL_free(der);
  X509_NAME_free(n);
  X509_REQ_free(r);
  return out;
}

/* ---- the reply ---- */

static STACK_OF(X509) * certs_from_pkcs7(PKCS7 *p7) {
  if (!p7 || !PKCS7_type_is_signed(p7) || !p7->d.sign)
    return NULL;
  return p7->d.sign->cert;
}

static int append_pem(BIO *out, X509 *x) {
  return PEM_write_bio_X509(out, x) == 1 ? 0 : -1;
}

/* Base64 with any whitespace in between, as EST servers wrap it. */
static unsigned char *unbase64(const char *body, size_t len, int *outlen) {
  char *clean = malloc(len + 1);
  if (!clean)
    return NULL;
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    char c = body[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
      continue;
    clean[n++] = c;
  }
  clean[n] = '\0';
  unsigned char *der = NULL;
  if (n > 0 && n % 4 == 0 && (der = malloc(n / 4 * 3 + 1)) != NULL) {
    int got = EVP_DecodeBlock(der, (unsigned char *)clean, (int)n);
    /* DecodeBlock counts the padding as zero bytes. */
    if (got >= 0) {
      if (n >= 1 && clean[n - 1] == '=')
        got--;
      if (n >= 2 && clean[n - 2] == '=')
        got--;
      *outlen = got;
    } else {
      free(der);
      der = NULL;
    }
  }
  free(clean);
  return der;
}

int enroll_reply_to_pem(const char *body, size_t len, const char *key_pem,
                        char **pem, char *err, size_t errlen) {
  *pem = NULL;
  EVP_PKEY *k = NULL;
  if (key_pem) {
    BIO *kb = BIO_new_mem_buf(key_pem, -1);
    k = kb ? PEM_read_bio_PrivateKey(kb, NULL, x509_no_passphrase, NULL) : NULL;
    BIO_free(kb);
  }
  STACK_OF(X509) *owned = sk_X509_new_null();
  PKCS7 *p7 = NULL;
  STACK_OF(X509) *certs = NULL;
  const char *what = "neither PKCS#7 nor PEM certificates";
  if (len > 0 && memmem(body, len, "-----BEGIN CERTIFICATE-----", 27)) {
    BIO *b = BIO_new_mem_buf(body, (int)len);
    X509 *x;
    while (b && owned &&
           (x = PEM_read_bio_X509(b, NULL, x509_no_passphrase, NULL)) != NULL)
      sk_X509_push(owned, x);
    ERR_clear_error();
    BIO_free(b);
    certs = owned;
  } else if (len > 0 && memmem(body, len, "-----BEGIN PKCS7-----", 21)) {
    BIO *b = BIO_new_mem_buf(body, (int)len);
    p7 = b ? PEM_read_bio_PKCS7(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    certs = certs_from_pkcs7(p7);
  } else if (len > 0) {
    int derlen = 0;
    unsigned char *der = NULL;
    const unsigned char *d = NULL;
    if ((unsigned char)body[0] == 0x30) { /* binary transfer encoding */
      d = (const unsigned char *)body;
      derlen = (int)len;
    } else if ((der = unbase64(body, len, &derlen)) != NULL) {
      d = der;
    }
    if (d)
      p7 = d2i_PKCS7(NULL, &d, derlen);
    free(der);
    certs = certs_from_pkcs7(p7);
  }
  int rc = C8Y_EINVAL;
  int n = certs ? sk_X509_num(certs) : 0;
  int leaf = -1;
  for (int i = 0; i < n && leaf < 0; i++)
    if (!k || X509_check_private_key(sk_X509_value(certs, i), k) == 1)
      leaf = i;
  ERR_clear_error();
  if (n == 0) {
    status_seterr(err, errlen, "the reply holds no certificate (%s)", what);
  } else if (leaf < 0) {
    status_seterr(
        err, errlen,
        "none of the %d certificate(s) in the reply is for the key this "
        "request was made with",
        n);
  } else {
    BIO *out = BIO_new(BIO_s_mem());
    bool ok = out && append_pem(out, sk_X509_value(certs, leaf)) == 0;
    for (int i = 0; ok && i < n; i++)
      if (i != leaf)
        ok = append_pem(out, sk_X509_value(certs, i)) == 0;
    char *data = NULL;
    long dlen = ok ? BIO_get_mem_data(out, &data) : 0;
    if (ok && dlen > 0 && (*pem = malloc((size_t)dlen + 1)) != NULL) {
      memcpy(*pem, data, (size_t)dlen);
      (*pem)[dlen] = '\0';
      rc = 0;
    } else {
      status_seterr(err, errlen, "out of memory");
      rc = C8Y_ENOMEM;
    }
    BIO_free(out);
  }
  PKCS7_free(p7);
  sk_X509_pop_free(owned, X509_free);
  EVP_PKEY_free(k);
  return rc;
}

/* ---- files ---- */

char *enroll_staged_path(const char *path) {
  char *p = NULL;
  if (asprintf(&p, "%s" ENROLL_STAGED_SUFFIX, path) < 0)
    return NULL;
  return p;
}

static int fsync_parent(const char *path) {
  char *copy = strdup(path);
  if (!copy)
    return C8Y_ENOMEM;
  int rc = fsutil_fsync_dir(dirname(copy));
  free(copy);
  return rc;
}

/* path as a whole or not at all: temp file with `mode` (whatever the
 * umask), fsync, rename, directory fsync. */
static int write_whole(const char *path, const char *data, size_t len,
                       mode_t mode, char *err, size_t errlen) {
  char *tmp = NULL;
  if (asprintf(&tmp, "%s.tmp-%d", path, (int)getpid()) < 0)
    return C8Y_ENOMEM;
  unlink(tmp);
  int fd =
      open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  int rc = C8Y_EIO;
  if (fd < 0) {
    status_seterr(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    free(tmp);
    return rc;
  }
  if (fchmod(fd, mode) != 0 || fsutil_write_all(fd, data, len, NULL) != 0 ||
      fsync(fd) != 0) {
    status_seterr(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
  } else if (close(fd) != 0) {
    fd = -1;
    status_seterr(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
  } else {
    fd = -1;
    if (rename(tmp, path) != 0)
      status_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, path,
                    strerror(errno));
    else if (fsync_parent(path) != 0)
      status_seterr(err, errlen, "%s: cannot sync its directory: %s", path,
                    strerror(errno));
    else
      rc = 0;
  }
  if (fd >= 0)
    close(fd);
  if (rc != 0)
    unlink(tmp);
  free(tmp);
  return rc;
}

static char *key_to_pem(EVP_PKEY *k) {
  BIO *b = BIO_new(BIO_s_mem());
  char *out = NULL, *data = NULL;
  if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1) {
    long n = BIO_get_mem_data(b, &data);
    if (n > 0 && (out = malloc((size_t)n + 1)) != NULL) {
      memcpy(out, data, (size_t)n);
      out[n] = '\0';
    }
  }
  BIO_free_all(b); /* BIO_s_mem clears what it held when freed */
  return out;
}

static void free_secret(char *s) {
  if (s) {
    OPENSSL_cleanse(s, strlen(s));
    free(s);
  }
}

static int stage_pair(const enroll_request *r, const char *key_pem,
                      const char *cert_pem, char *err, size_t errlen) {
  char *ks = enroll_staged_path(r->key_file);
  char *cs = enroll_staged_path(r->cert_file);
  int rc = C8Y_ENOMEM;
  if (ks && cs) {
    rc = write_whole(ks, key_pem, strlen(key_pem), 0600, err, errlen);
    if (rc == 0)
      rc = write_whole(cs, cert_pem, strlen(cert_pem), 0644, err, errlen);
    if (rc != 0) {
      unlink(ks);
      unlink(cs);
    }
  }
  free(ks);
  free(cs);
  return rc;
}

/* ---- HTTP ---- */

typedef struct membuf {
  char *data;
  size_t len;
  bool too_big;
} membuf;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
  membuf *b = ud;
  size_t n = size * nmemb;
  if (b->len + n > MAX_REPLY_BYTES) {
    b->too_big = true;
    return 0;
  }
  char *p = realloc(b->data, b->len + n + 1);
  if (!p)
    return 0;
  memcpy(p + b->len, data, n);
  b->len += n;
  p[b->len] = '\0';
  b->data = p;
  return n;
}

/* Cumulocity's error body is {"error":..,"message":..}; anything else is
 * shown as its first line, cut short. */
static void reply_reason(const membuf *b, char *out, size_t outlen) {
  out[0] = '\0';
  if (!b->data || !b->len)
    return;
  json_t *j = json_loadb(b->data, b->len, 0, NULL);
  const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
  if (m)
    snprintf(out, outlen, ": %s", m);
  else
    snprintf(out, outlen, ": %.*s", (int)strcspn(b->data, "\r\n"), b->data);
  for (char *c = out; *c; c++)
    if ((unsigned char)*c < 0x20)
      *c = ' ';
  json_decref(j);
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                       curl_off_t un) {
  (void)dt;
  (void)dn;
  (void)ut;
  (void)un;
  return atomic_load((const atomic_bool *)ud) ? 1 : 0;
}

static int post_csr(const enroll_request *r, const char *csr_b64, membuf *reply,
                    char *err, size_t errlen) {
  const char *path =
      r->otp ? ENROLL_PATH_SIMPLEENROLL : ENROLL_PATH_SIMPLEREENROLL;
  char *url = NULL;
  if (asprintf(&url, "%s%s", r->base_url, path) < 0)
    return C8Y_ENOMEM;
  if (strncmp(r->base_url, "https://", 8) != 0) {
    /* The one-time password and the new certificate's request must not
     * travel in clear text. */
    status_seterr(err, errlen, "%s: enrollment needs https", url);
    free(url);
    return C8Y_EINVAL;
  }
  CURL *c = curl_easy_init();
  if (!c) {
    free(url);
    return C8Y_ENOMEM;
  }
  struct curl_slist *h = NULL;
  h = curl_slist_append(h, "Content-Type: application/pkcs10");
  h = curl_slist_append(h, "Content-Transfer-Encoding: base64");
  h = curl_slist_append(h, "Accept: application/pkcs7-mime");
  h = curl_slist_append(h, "Expect:");
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, csr_b64);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(csr_b64));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, reply);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT,
                   (long)(r->timeout_s > 0 ? r->timeout_s : DEFAULT_TIMEOUT_S));
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, r->verify_hostname ? 2L : 0L);
  if (r->ca_path) {
    struct stat st;
    bool dir = stat(r->ca_path, &st) == 0 && S_ISDIR(st.st_mode);
    curl_easy_setopt(c, dir ? CURLOPT_CAPATH : CURLOPT_CAINFO, r->ca_path);
  }
  if (r->otp) {
    /* Basic <device id>:<one-time password>, as Cumulocity documents and
     * thin-edge's `tedge cert download c8y` sends. */
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, r->device_id);
    curl_easy_setopt(c, CURLOPT_PASSWORD, r->otp);
  } else {
    /* The current certificate proves who asks (mutual TLS); Cumulocity
     * documents a JWT for re-enrollment, so that goes along when the
     * device has one (thin-edge's renewal goes through its proxy, which
     * adds the device's JWT). */
    curl_easy_setopt(c, CURLOPT_SSLCERT, r->cert_file);
    curl_easy_setopt(c, CURLOPT_SSLKEY, r->key_file);
    if (r->bearer) {
      curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
      curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, r->bearer);
    }
  }
  if (r->cancel) {
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)r->cancel);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  }
  CURLcode cc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  int rc = 0;
  if (cc == CURLE_ABORTED_BY_CALLBACK) {
    status_seterr(err, errlen, "%s: the agent is stopping", url);
    rc = C8Y_ECANCELED;
  } else if (cc != CURLE_OK) {
    status_seterr(err, errlen, "%s: %s", url,
                  reply->too_big ? "the reply is too large"
                  : *errbuf      ? errbuf
                                 : curl_easy_strerror(cc));
    rc = C8Y_ENET;
  } else if (status != 200 && status != 201) {
    char why[300];
    reply_reason(reply, why, sizeof why);
    if (status == 401 || status == 403)
      status_seterr(err, errlen, "%s: HTTP %ld%s (%s)", url, status, why,
                    r->otp
                        ? "the one-time password is wrong or used up, or the "
                          "device is not registered with it in Cumulocity"
                        : "the platform refused the device's identity");
    else
      status_seterr(err, errlen, "%s: HTTP %ld%s", url, status, why);
    rc = status == 401 || status == 403 ? C8Y_EAUTH : C8Y_EHTTP;
  }
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  free(url);
  return rc;
}

int enroll_request_certificate(const enroll_request *r, char *err,
                               size_t errlen) {
  if (!r->base_url || !r->device_id || !r->cert_file || !r->key_file) {
    status_seterr(err, errlen,
                  "enrollment needs a URL, a device id, cert_file and "
                  "key_file");
    return C8Y_EINVAL;
  }
  EVP_PKEY *k = new_key(r->key_type, err, errlen);
  if (!k)
    return C8Y_EINVAL;
  char *key_pem = key_to_pem(k);
  char *csr = key_pem ? make_csr_base64(k, r->device_id, err, errlen) : NULL;
  EVP_PKEY_free(k);
  if (!csr) {
    free_secret(key_pem);
    return key_pem ? C8Y_EINVAL : C8Y_ENOMEM;
  }
  membuf reply = {0};
  int rc = post_csr(r, csr, &reply, err, errlen);
  char *cert_pem = NULL;
  if (rc == 0) {
    char why[400];
    rc = enroll_reply_to_pem(reply.data ? reply.data : "", reply.len, key_pem,
                             &cert_pem, why, sizeof why);
    if (rc != 0)
      status_seterr(
          err, errlen, "%s%s: %s", r->base_url,
          r->otp ? ENROLL_PATH_SIMPLEENROLL : ENROLL_PATH_SIMPLEREENROLL, why);
  }
  if (rc == 0)
    rc = stage_pair(r, key_pem, cert_pem, err, errlen);
  if (rc == 0) {
    /* The CA may have signed something else than was asked for. */
    char *cs = enroll_staged_path(r->cert_file);
    char *ks = enroll_staged_path(r->key_file);
    char xerr[600];
    if (!cs || !ks) {
      rc = C8Y_ENOMEM;
    } else if (x509_check_device_cert(cs, ks, r->device_id, xerr,
                                      sizeof xerr) != 0) {
      status_seterr(err, errlen, "the issued certificate does not fit: %s",
                    xerr);
      rc = C8Y_EINVAL;
      enroll_discard(r->cert_file, r->key_file);
    }
    free(cs);
    free(ks);
  }
  free(cert_pem);
  free(csr);
  free_secret(key_pem);
  free(reply.data);
  return rc;
}

/* ---- the pair on disk ---- */

static EVP_PKEY *load_key(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f)
    return NULL;
  EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, x509_no_passphrase, NULL);
  fclose(f);
  ERR_clear_error();
  return k;
}

static X509 *load_cert(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f)
    return NULL;
  X509 *x = PEM_read_X509(f, NULL, x509_no_passphrase, NULL);
  fclose(f);
  ERR_clear_error();
  return x;
}

/* Whether the certificate in cert_path belongs to the key in key_path. */
static bool files_match(const char *cert_path, const char *key_path) {
  X509 *x = load_cert(cert_path);
  EVP_PKEY *k = x ? load_key(key_path) : NULL;
  bool ok = x && k && X509_check_private_key(x, k) == 1;
  ERR_clear_error();
  EVP_PKEY_free(k);
  X509_free(x);
  return ok;
}

static int rename_synced(const char *from, const char *to, char *err,
                         size_t errlen) {
  if (rename(from, to) != 0) {
    status_seterr(err, errlen, "cannot rename %s to %s: %s", from, to,
                  strerror(errno));
    return C8Y_EIO;
  }
  if (fsync_parent(to) != 0) {
    status_seterr(err, errlen, "%s: cannot sync its directory: %s", to,
                  strerror(errno));
    return C8Y_EIO;
  }
  return 0;
}

int enroll_commit(const char *cert_file, const char *key_file, char *err,
                  size_t errlen) {
  char *ks = enroll_staged_path(key_file);
  char *cs = enroll_staged_path(cert_file);
  int rc = C8Y_ENOMEM;
  if (ks && cs) {
    /* The key first: between the two renames the new key sits beside the
     * old certificate and the new certificate is still staged, which
     * enroll_repair recognises and completes. */
    rc = rename_synced(ks, key_file, err, errlen);
    if (rc == 0)
      rc = rename_synced(cs, cert_file, err, errlen);
  }
  free(ks);
  free(cs);
  return rc;
}

void enroll_discard(const char *cert_file, const char *key_file) {
  char *ks = enroll_staged_path(key_file);
  char *cs = enroll_staged_path(cert_file);
  if (ks)
    unlink(ks);
  if (cs)
    unlink(cs);
  free(ks);
  free(cs);
}

int enroll_repair(const char *cert_file, const char *key_file, char *err,
                  size_t errlen) {
  char *ks = enroll_staged_path(key_file);
  char *cs = enroll_staged_path(cert_file);
  if (!ks || !cs) {
    free(ks);
    free(cs);
    status_seterr(err, errlen, "out of memory");
    return C8Y_ENOMEM;
  }
  int rc = 0;
  bool staged_cert = access(cs, F_OK) == 0;
  bool staged_key = access(ks, F_OK) == 0;
  if (staged_cert && !staged_key && !files_match(cert_file, key_file) &&
      files_match(cs, key_file)) {
    rc = rename_synced(cs, cert_file, err, errlen);
    if (rc == 0) {
      log_notice("[c8y] cert_file %s: completed the certificate swap a stop "
                 "interrupted (the key %s was already the new one)",
                 cert_file, key_file);
      rc = 1;
    }
  } else if (staged_cert || staged_key) {
    /* Never committed: the pair in place is the one in use. */
    log_info("removing the uncommitted certificate renewal %s%s%s", cs,
             staged_key ? " and " : "", staged_key ? ks : "");
    if ((staged_cert && unlink(cs) != 0 && errno != ENOENT) ||
        (staged_key && unlink(ks) != 0 && errno != ENOENT)) {
      status_seterr(err, errlen, "cannot remove the staged pair %s, %s: %s", cs,
                    ks, strerror(errno));
      rc = C8Y_EIO;
    }
  }
  free(ks);
  free(cs);
  return rc;
}

bool enroll_pair_usable(const char *cert_file, const char *key_file,
                        const char *device_id, char *err, size_t errlen) {
  if (access(cert_file, F_OK) != 0) {
    status_seterr(err, errlen, "[c8y] cert_file %s does not exist", cert_file);
    return false;
  }
  if (x509_check_device_cert(cert_file, key_file, device_id, err, errlen) != 0)
    return false;
  X509 *x = load_cert(cert_file);
  bool valid = x && X509_cmp_current_time(X509_get0_notAfter(x)) > 0 &&
               X509_cmp_current_time(X509_get0_notBefore(x)) < 0;
  if (x && !valid)
    status_seterr(
        err, errlen, "[c8y] cert_file %s: the certificate is %s", cert_file,
        X509_cmp_current_time(X509_get0_notAfter(x)) <= 0 ? "expired"
                                                          : "not valid yet");
  X509_free(x);
  return valid;
}

static bool asn1_time_to_epoch(const ASN1_TIME *t, long long *out) {
  struct tm tm;
  if (ASN1_TIME_to_tm(t, &tm) != 1)
    return false;
  *out = (long long)timegm(&tm);
  return true;
}

int enroll_renew_time(const char *cert_file, int percent, long long *renew_at,
                      long long *not_after, char *err, size_t errlen) {
  X509 *x = load_cert(cert_file);
  if (!x) {
    status_seterr(err, errlen,
                  "[c8y] cert_file %s: cannot read the certificate", cert_file);
    return access(cert_file, R_OK) == 0 ? C8Y_EINVAL : C8Y_EIO;
  }
  long long nb = 0, na = 0;
  bool ok = asn1_time_to_epoch(X509_get0_notBefore(x), &nb) &&
            asn1_time_to_epoch(X509_get0_notAfter(x), &na) && na > nb;
  X509_free(x);
  if (!ok) {
    status_seterr(err, errlen, "[c8y] cert_file %s: unreadable validity period",
                  cert_file);
    return C8Y_EINVAL;
  }
  *renew_at = nb + (na - nb) * percent / 100;
  *not_after = na;
  return 0;
}
