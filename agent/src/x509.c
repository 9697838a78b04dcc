#include "x509.h"

#include "log.h"
#include "status.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *x509_ssl_reason(const char *fallback) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return r ? r : fallback;
}

int x509_no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return -1;
}

static int read_cert(const char *path, X509 **out, char *err, size_t errlen) {
  FILE *f = fopen(path, "re");
  if (!f) {
    status_seterr(err, errlen, "[c8y] cert_file %s: cannot open: %s", path,
                  strerror(errno));
    return C8Y_EIO;
  }
  *out = PEM_read_X509(f, NULL, x509_no_passphrase, NULL);
  fclose(f);
  if (!*out) {
    status_seterr(err, errlen, "[c8y] cert_file %s: not a PEM certificate (%s)",
                  path, x509_ssl_reason("no PEM data found"));
    return C8Y_EINVAL;
  }
  return 0;
}

static int cert_cn(X509 *x, const char *path, char *cn, size_t cnlen, char *err,
                   size_t errlen) {
  X509_NAME *name = X509_get_subject_name(x);
  int at = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (at < 0) {
    status_seterr(
        err, errlen,
        "[c8y] cert_file %s: the certificate subject has no CN (Cumulocity "
        "takes the device id from it)",
        path);
    return C8Y_EINVAL;
  }
  if (X509_NAME_get_index_by_NID(name, NID_commonName, at) >= 0) {
    status_seterr(
        err, errlen,
        "[c8y] cert_file %s: the certificate subject has several CNs; "
        "the device id must be unambiguous",
        path);
    return C8Y_EINVAL;
  }
  ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at));
  unsigned char *utf8 = NULL;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) {
    status_seterr(err, errlen, "[c8y] cert_file %s: unreadable subject CN (%s)",
                  path, x509_ssl_reason("no PEM data found"));
    return C8Y_EINVAL;
  }
  int rc = 0;
  if (n == 0 || memchr(utf8, '\0', (size_t)n)) {
    status_seterr(err, errlen, "[c8y] cert_file %s: the subject CN is %s", path,
                  n == 0 ? "empty" : "not text (contains a NUL byte)");
    rc = C8Y_EINVAL;
  } else if ((size_t)n >= cnlen) {
    status_seterr(err, errlen,
                  "[c8y] cert_file %s: the subject CN is too long (%d bytes)",
                  path, n);
    rc = C8Y_EINVAL;
  } else {
    memcpy(cn, utf8, (size_t)n);
    cn[n] = '\0';
  }
  OPENSSL_free(utf8);
  return rc;
}

int x509_subject_cn(const char *cert_file, char *cn, size_t cnlen, char *err,
                    size_t errlen) {
  X509 *x;
  int rc = read_cert(cert_file, &x, err, errlen);
  if (rc != 0)
    return rc;
  rc = cert_cn(x, cert_file, cn, cnlen, err, errlen);
  X509_free(x);
  return rc;
}

static int check_key(X509 *x, const char *cert_file, const char *key_file,
                     char *err, size_t errlen) {
  FILE *f = fopen(key_file, "re");
  if (!f) {
    status_seterr(err, errlen, "[c8y] key_file %s: cannot open: %s", key_file,
                  strerror(errno));
    return C8Y_EIO;
  }
  EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, x509_no_passphrase, NULL);
  fclose(f);
  if (!k) {
    status_seterr(err, errlen,
                  "[c8y] key_file %s: not an unencrypted PEM private key (%s)",
                  key_file, x509_ssl_reason("no PEM data found"));
    return C8Y_EINVAL;
  }
  int ok = X509_check_private_key(x, k);
  EVP_PKEY_free(k);
  ERR_clear_error();
  if (ok != 1) {
    status_seterr(
        err, errlen,
        "[c8y] key_file %s: is not the private key of the certificate in "
        "[c8y] cert_file %s",
        key_file, cert_file);
    return C8Y_EINVAL;
  }
  return 0;
}

static void warn_validity(X509 *x, const char *path) {
  if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
    log_warning("[c8y] cert_file %s: the certificate has EXPIRED; the "
                "platform will refuse it",
                path);
  else if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0)
    log_warning("[c8y] cert_file %s: the certificate is not valid yet "
                "(check the system clock)",
                path);
}

int x509_check_device_cert(const char *cert_file, const char *key_file,
                           const char *device_id, char *err, size_t errlen) {
  X509 *x;
  int rc = read_cert(cert_file, &x, err, errlen);
  if (rc != 0)
    return rc;
  char cn[256];
  rc = cert_cn(x, cert_file, cn, sizeof cn, err, errlen);
  if (rc == 0 && device_id && strcmp(cn, device_id) != 0) {
    status_seterr(
        err, errlen,
        "[c8y] cert_file %s: the certificate CN is \"%s\" but [device] id "
        "is \"%s\"; Cumulocity identifies the device by the CN, so they "
        "must be equal",
        cert_file, cn, device_id);
    rc = C8Y_EINVAL;
  }
  if (rc == 0)
    rc = check_key(x, cert_file, key_file, err, errlen);
  if (rc == 0)
    warn_validity(x, cert_file);
  X509_free(x);
  return rc;
}

int x509_expiry_line(const char *cert_file, int warn_days, char *line,
                     size_t linelen) {
  char err[512];
  X509 *x;
  int rc = read_cert(cert_file, &x, err, sizeof err);
  if (rc != 0) {
    snprintf(line, linelen, "%s", err);
    return rc;
  }
  int days = 0, secs = 0;
  const ASN1_TIME *na = X509_get0_notAfter(x);
  struct tm tm;
  char when[64] = "?";
  if (ASN1_TIME_to_tm(na, &tm) == 1)
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
  int ok = ASN1_TIME_diff(&days, &secs, NULL, na);
  X509_free(x);
  if (!ok) {
    snprintf(line, linelen, "[c8y] cert_file %s: unreadable expiry date",
             cert_file);
    return C8Y_EINVAL;
  }
  long long left = (long long)days * 86400 + secs;
  /* The text goes unquoted into a CSV field: no ',' or '"' from the path. */
  char name[256];
  snprintf(name, sizeof name, "%s", cert_file);
  for (char *c = name; *c; c++)
    if (*c == ',' || *c == '"' || (unsigned char)*c < 0x20)
      *c = '_';
  if (left <= (long long)warn_days * 86400)
    log_warning("[c8y] cert_file %s: the device certificate %s %s; raising "
                "the %s alarm",
                cert_file, left <= 0 ? "expired on" : "expires on", when,
                X509_EXPIRY_ALARM);
  if (left <= 0)
    snprintf(line, linelen,
             "303," X509_EXPIRY_ALARM ",Device certificate %s expired on %s",
             name, when);
  else if (left <= (long long)warn_days * 86400)
    snprintf(line, linelen,
             "304," X509_EXPIRY_ALARM
             ",Device certificate %s expires on %s (in %d days)",
             name, when, days);
  else
    snprintf(line, linelen, "306," X509_EXPIRY_ALARM);
  return 0;
}
