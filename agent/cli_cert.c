#include "cli_cert.h"

#include "config.h"
#include "enroll.h"
#include "x509.h"

#include <c8y/plugin.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_DAYS 365

typedef struct cert_args {
  const char *cmd; /* "create", "csr" or "enroll" */
  const char *id, *cert, *key, *out, *owner;
  const char *url, *otp_file, *key_type; /* enroll */
  bool otp_stdin;
  long days;
  bool force;
  uid_t uid; /* (uid_t)-1: keep the creator's */
  gid_t gid;
} cert_args;

static const char *ssl_err(void) {
  static char buf[256];
  unsigned long e = ERR_get_error();
  if (!e)
    return "unknown OpenSSL error";
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

typedef int (*pem_writer)(FILE *f, void *obj);
static int write_key(FILE *f, void *k) {
  return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
}
static int write_cert(FILE *f, void *x) { return PEM_write_X509(f, x); }
static int write_req(FILE *f, void *r) { return PEM_write_X509_REQ(f, r); }

/* Writes a PEM file as a whole or not at all (temp file, fsync, rename),
 * owned by a->uid/gid when set. */
static int write_pem(const cert_args *a, const char *path, mode_t mode,
                     pem_writer w, void *obj) {
  char *tmp = NULL;
  if (asprintf(&tmp, "%s.tmp-%d", path, (int)getpid()) < 0)
    return -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  int rc = -1;
  if (!f) {
    fprintf(stderr, "c8y-agent cert: %s: cannot create: %s\n", tmp,
            strerror(errno));
    if (fd >= 0)
      close(fd);
    free(tmp);
    return -1;
  }
  fchmod(fd, mode); /* whatever the umask */
  if (a->uid != (uid_t)-1 && fchown(fd, a->uid, a->gid) != 0) {
    fprintf(stderr, "c8y-agent cert: %s: cannot give it to %s: %s\n", tmp,
            a->owner, strerror(errno));
    fclose(f);
    unlink(tmp);
    free(tmp);
    return -1;
  }
  bool ok = w(f, obj) == 1 && fflush(f) == 0 && fsync(fd) == 0;
  ok = fclose(f) == 0 && ok;
  if (!ok)
    fprintf(stderr, "c8y-agent cert: %s: write failed: %s\n", tmp,
            errno ? strerror(errno) : ssl_err());
  else if (rename(tmp, path) != 0)
    fprintf(stderr, "c8y-agent cert: cannot rename %s to %s: %s\n", tmp, path,
            strerror(errno));
  else
    rc = 0;
  if (rc != 0)
    unlink(tmp);
  free(tmp);
  return rc;
}

static EVP_PKEY *new_key(void) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  if (!k)
    fprintf(stderr, "c8y-agent cert: cannot generate an EC P-256 key: %s\n",
            ssl_err());
  return k;
}

static EVP_PKEY *read_key(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f) {
    fprintf(stderr, "c8y-agent cert: %s: cannot open: %s\n", path,
            strerror(errno));
    return NULL;
  }
  EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, x509_no_passphrase, NULL);
  fclose(f);
  if (!k)
    fprintf(stderr,
            "c8y-agent cert: %s: not an unencrypted PEM private key (%s)\n",
            path, ssl_err());
  return k;
}

static X509_NAME *device_name(const char *id) {
  X509_NAME *n = X509_NAME_new();
  if (n &&
      X509_NAME_add_entry_by_NID(n, NID_commonName, MBSTRING_UTF8,
                                 (const unsigned char *)id, -1, -1, 0) != 1) {
    X509_NAME_free(n);
    n = NULL;
  }
  return n;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
  int ok = e && X509_add_ext(x, e, -1) == 1;
  X509_EXTENSION_free(e);
  return ok ? 0 : -1;
}

/* Self-signed, CN = id. Cumulocity accepts a trusted certificate only with
 * BasicConstraints CA:TRUE, so the device certificate carries it (path
 * length 0: it can sign nothing below it). */
static X509 *self_signed(EVP_PKEY *k, const char *id, long days) {
  X509 *x = X509_new();
  X509_NAME *name = device_name(id);
  unsigned char serial[16];
  BIGNUM *bn = NULL;
  bool ok = x && name && RAND_bytes(serial, sizeof serial) == 1;
  if (ok) {
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) &&
         X509_set_version(x, 2) == 1 &&
         X509_gmtime_adj(X509_getm_notBefore(x), -300) &&
         X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L) &&
         X509_set_subject_name(x, name) == 1 &&
         X509_set_issuer_name(x, name) == 1 && X509_set_pubkey(x, k) == 1;
  }
  if (ok) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ok = add_ext(x, &ctx, NID_basic_constraints,
                 "critical,CA:TRUE,pathlen:0") == 0 &&
         add_ext(x, &ctx, NID_key_usage,
                 "critical,digitalSignature,keyCertSign") == 0 &&
         add_ext(x, &ctx, NID_ext_key_usage, "clientAuth") == 0 &&
         add_ext(x, &ctx, NID_subject_key_identifier, "hash") == 0 &&
         add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") == 0 &&
         X509_sign(x, k, EVP_sha256()) > 0;
  }
  BN_free(bn);
  X509_NAME_free(name);
  if (!ok) {
    fprintf(stderr, "c8y-agent cert: cannot build the certificate: %s\n",
            ssl_err());
    X509_free(x);
    x = NULL;
  }
  return x;
}

static X509_REQ *make_csr(EVP_PKEY *k, const char *id) {
  X509_REQ *r = X509_REQ_new();
  X509_NAME *name = device_name(id);
  bool ok = r && name && X509_REQ_set_version(r, 0) == 1 &&
            X509_REQ_set_subject_name(r, name) == 1 &&
            X509_REQ_set_pubkey(r, k) == 1 &&
            X509_REQ_sign(r, k, EVP_sha256()) > 0;
  X509_NAME_free(name);
  if (!ok) {
    fprintf(stderr, "c8y-agent cert: cannot build the request: %s\n",
            ssl_err());
    X509_REQ_free(r);
    r = NULL;
  }
  return r;
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

static void print_fingerprint(X509 *x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(x, EVP_sha1(), md, &n) != 1)
    return;
  printf("SHA-1 fingerprint: ");
  for (unsigned int i = 0; i < n; i++)
    printf("%02X%s", md[i], i + 1 < n ? ":" : "\n");
}

static int cert_create(const cert_args *a) {
  if (!a->force && (exists(a->cert) || exists(a->key))) {
    fprintf(stderr,
            "c8y-agent cert create: %s already exists; it may be the "
            "device's registered identity. Use --force to replace it\n",
            exists(a->key) ? a->key : a->cert);
    return 1;
  }
  EVP_PKEY *k = new_key();
  X509 *x = k ? self_signed(k, a->id, a->days) : NULL;
  int rc = 1;
  /* The key first: a certificate without its key is useless. */
  if (x && write_pem(a, a->key, 0600, write_key, k) == 0 &&
      write_pem(a, a->cert, 0644, write_cert, x) == 0) {
    char err[1024];
    if (x509_check_device_cert(a->cert, a->key, a->id, err, sizeof err) != 0) {
      fprintf(stderr, "c8y-agent cert create: %s\n", err);
    } else {
      printf("created %s (CN=%s, self-signed, valid %ld days) and its key %s "
             "(mode 0600)\n",
             a->cert, a->id, a->days, a->key);
      print_fingerprint(x);
      if (geteuid() == 0 && a->uid == (uid_t)-1)
        printf("The key belongs to root: if the agent runs as another user "
               "(the service: c8y-agent), run again with --force --owner "
               "c8y-agent or chown it.\n");
      printf("Upload %s to the tenant as a trusted certificate (Device "
             "management > Management > Trusted certificates), with "
             "auto-registration enabled; see the README.\n",
             a->cert);
      rc = 0;
    }
  }
  X509_free(x);
  EVP_PKEY_free(k);
  return rc;
}

static int cert_csr(const cert_args *a) {
  bool have_key = exists(a->key);
  EVP_PKEY *k = have_key ? read_key(a->key) : new_key();
  if (!k)
    return 1;
  int rc = 1;
  X509_REQ *r = NULL;
  if (!have_key && write_pem(a, a->key, 0600, write_key, k) != 0)
    goto out;
  if (!(r = make_csr(k, a->id)))
    goto out;
  if (a->out) {
    if (write_pem(a, a->out, 0644, write_req, r) != 0)
      goto out;
    fprintf(stderr, "wrote %s (CN=%s) for the key %s%s\n", a->out, a->id,
            a->key, have_key ? "" : " (new, mode 0600)");
  } else if (PEM_write_X509_REQ(stdout, r) != 1 || fflush(stdout) != 0) {
    fprintf(stderr, "c8y-agent cert csr: cannot write the request\n");
    goto out;
  }
  rc = 0;
out:
  X509_REQ_free(r);
  EVP_PKEY_free(k);
  return rc;
}

/* First line of path (the one-time password), malloc'ed, or NULL. */
static char *read_secret_line(FILE *f) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, f);
  if (n <= 0) {
    free(line);
    return NULL;
  }
  line[strcspn(line, "\r\n")] = '\0';
  if (!*line) {
    free(line);
    return NULL;
  }
  return line;
}

static void wipe(char *s) {
  if (s) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

static int give_to_owner(const cert_args *a, const char *path) {
  if (a->uid == (uid_t)-1 || chown(path, a->uid, a->gid) == 0)
    return 0;
  fprintf(stderr, "c8y-agent cert enroll: %s: cannot give it to %s: %s\n", path,
          a->owner, strerror(errno));
  return -1;
}

/* The by-hand form of what the daemon does at start with a one-time
 * password (see agent.c enroll_at_start): one attempt, its outcome
 * printed. */
static int cert_enroll(const cert_args *a, const agent_config *cfg) {
  char err[1024];
  if (!a->force &&
      enroll_pair_usable(a->cert, a->key, a->id, err, sizeof err)) {
    fprintf(stderr,
            "c8y-agent cert enroll: %s already holds a usable certificate "
            "for %s; use --force to enroll a new one\n",
            a->cert, a->id);
    return 1;
  }
  const char *url = a->url ? a->url : cfg ? cfg->enroll_url : NULL;
  const char *key_type = a->key_type ? a->key_type
                         : cfg       ? cfg->cert_key_type
                                     : NULL;
  if (!url || strncmp(url, "https://", 8) != 0) {
    fprintf(stderr,
            "c8y-agent cert enroll: no https URL of the certificate "
            "authority: set [c8y] enroll_url or http_url, or pass --url\n");
    return 1;
  }
  if (!enroll_key_type_valid(key_type)) {
    fprintf(stderr,
            "c8y-agent cert enroll: key type '%s' is not ec-p256, rsa-2048, "
            "rsa-3072 or rsa-4096\n",
            key_type);
    return 2;
  }
  const char *otp_file = a->otp_file            ? a->otp_file
                         : a->otp_stdin || !cfg ? NULL
                                                : cfg->enroll_otp_file;
  char *otp = NULL;
  if (a->otp_file) {
    FILE *f = fopen(a->otp_file, "re");
    if (!f) {
      fprintf(stderr, "c8y-agent cert enroll: --otp-file %s: %s\n", a->otp_file,
              strerror(errno));
      return 1;
    }
    otp = read_secret_line(f);
    fclose(f);
  } else if (a->otp_stdin) {
    otp = read_secret_line(stdin);
  } else if (cfg && cfg->enroll_otp) {
    otp = strdup(cfg->enroll_otp);
  }
  if (!otp) {
    fprintf(stderr, "c8y-agent cert enroll: no one-time password: set [c8y] "
                    "enroll_otp_file, or pass --otp-file FILE or --otp-stdin "
                    "(its first line)\n");
    return 1;
  }
  enroll_request req = {.base_url = url,
                        .device_id = a->id,
                        .key_type = key_type,
                        .cert_file = a->cert,
                        .key_file = a->key,
                        .ca_path = cfg ? cfg->ca_path : NULL,
                        .verify_hostname = cfg ? cfg->verify_hostname : true,
                        .otp = otp};
  int rc = enroll_request_certificate(&req, err, sizeof err);
  wipe(otp);
  char *staged_key = enroll_staged_path(a->key);
  char *staged_cert = enroll_staged_path(a->cert);
  if (rc == 0 &&
      (!staged_key || !staged_cert || give_to_owner(a, staged_key) != 0 ||
       give_to_owner(a, staged_cert) != 0)) {
    enroll_discard(a->cert, a->key);
    rc = C8Y_EIO;
    snprintf(err, sizeof err, "the new files could not be handed over");
  }
  free(staged_key);
  free(staged_cert);
  if (rc == 0)
    rc = enroll_commit(a->cert, a->key, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "c8y-agent cert enroll: %s\n", err);
    return rc == C8Y_EAUTH ? 3 : 1;
  }
  printf("enrolled %s (CN=%s, issued by the certificate authority at %s) "
         "and its key %s (mode 0600)\n",
         a->cert, a->id, url, a->key);
  if (otp_file) {
    if (unlink(otp_file) == 0)
      printf("removed the used one-time password file %s\n", otp_file);
    else if (errno != ENOENT)
      fprintf(stderr,
              "c8y-agent cert enroll: cannot remove the used one-time "
              "password file %s: %s; remove it by hand\n",
              otp_file, strerror(errno));
  }
  return 0;
}

static void usage(FILE *f) {
  fputs("usage: c8y-agent [-c FILE] cert create [--id ID] [--cert FILE] "
        "[--key FILE]\n"
        "                                  [--days N] [--force] [--owner "
        "USER[:GROUP]]\n"
        "       c8y-agent [-c FILE] cert csr [--id ID] [--key FILE] [--out "
        "FILE]\n"
        "                                  [--owner USER[:GROUP]]\n"
        "create: a new EC P-256 key (mode 0600) and a self-signed "
        "certificate with\n"
        "        CN = the device id (default 365 days); refuses to replace "
        "existing\n"
        "        files without --force.\n"
        "csr:    a certificate signing request (PEM, to stdout without "
        "--out) with\n"
        "        CN = the device id, for the key (created when missing).\n"
        "       c8y-agent [-c FILE] cert enroll [--id ID] [--cert FILE] "
        "[--key FILE]\n"
        "                                  [--otp-file FILE | --otp-stdin] "
        "[--url URL]\n"
        "                                  [--key-type TYPE] [--force] "
        "[--owner USER[:GROUP]]\n"
        "enroll: a new key (ec-p256, or --key-type rsa-2048|rsa-3072|"
        "rsa-4096) and a\n"
        "        certificate from Cumulocity's certificate authority (EST "
        "simpleenroll),\n"
        "        authenticated by the device's one-time password ([c8y] "
        "enroll_otp or\n"
        "        enroll_otp_file, --otp-file, or one line on stdin); a used "
        "password file\n"
        "        is removed. Refuses to replace a usable certificate without "
        "--force.\n"
        "--owner:  who owns the new files (the agent's user must read the "
        "key).\n"
        "Defaults: [device] id, [c8y] cert_file and key_file of the "
        "configuration.\n",
        f);
}

/* --owner USER[:GROUP]: the service user must be able to read its key. */
static int resolve_owner(cert_args *a) {
  char user[256];
  snprintf(user, sizeof user, "%s", a->owner);
  char *group = strchr(user, ':');
  if (group)
    *group++ = '\0';
  struct passwd *pw = getpwnam(user);
  if (!pw) {
    fprintf(stderr, "c8y-agent cert: --owner %s: no such user\n", user);
    return -1;
  }
  a->uid = pw->pw_uid;
  a->gid = pw->pw_gid;
  if (group && *group) {
    struct group *gr = getgrnam(group);
    if (!gr) {
      fprintf(stderr, "c8y-agent cert: --owner %s: no such group %s\n",
              a->owner, group);
      return -1;
    }
    a->gid = gr->gr_gid;
  }
  return 0;
}

static int parse_args(int argc, char **argv, const char **config,
                      cert_args *a) {
  if (argc < 2 || (strcmp(argv[1], "create") && strcmp(argv[1], "csr") &&
                   strcmp(argv[1], "enroll"))) {
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
      usage(stdout);
      return 0;
    }
    usage(stderr);
    return 2;
  }
  a->cmd = argv[1];
  for (int i = 2; i < argc; i++) {
    const char *o = argv[i];
    const char **dst = !strcmp(o, "--id")         ? &a->id
                       : !strcmp(o, "--cert")     ? &a->cert
                       : !strcmp(o, "--key")      ? &a->key
                       : !strcmp(o, "--out")      ? &a->out
                       : !strcmp(o, "--owner")    ? &a->owner
                       : !strcmp(o, "--url")      ? &a->url
                       : !strcmp(o, "--otp-file") ? &a->otp_file
                       : !strcmp(o, "--key-type") ? &a->key_type
                       : (!strcmp(o, "-c") || !strcmp(o, "--config")) ? config
                                                                      : NULL;
    if (dst && i + 1 < argc) {
      *dst = argv[++i];
    } else if (!strcmp(o, "--days") && i + 1 < argc) {
      char *end;
      a->days = strtol(argv[++i], &end, 10);
      if (*end || a->days < 1 || a->days > 36500) {
        fprintf(stderr, "c8y-agent cert: --days %s: not in 1..36500\n",
                argv[i]);
        return 2;
      }
    } else if (!strcmp(o, "--force")) {
      a->force = true;
    } else if (!strcmp(o, "--otp-stdin")) {
      a->otp_stdin = true;
    } else {
      fprintf(stderr, "c8y-agent cert: unknown or incomplete argument '%s'\n",
              o);
      return 2;
    }
  }
  if (a->owner && resolve_owner(a) != 0)
    return 2;
  return -1; /* go on */
}

int cli_cert_main(const char *config, int argc, char **argv) {
  cert_args a = {.days = DEFAULT_DAYS, .uid = (uid_t)-1, .gid = (gid_t)-1};
  int rc = parse_args(argc, argv, &config, &a);
  if (rc >= 0)
    return rc;
  /* The configuration supplies what the flags leave out; with every value
   * given it is not needed (it may not load yet: a cert_file that does not
   * exist). */
  agent_config cfg;
  char err[1024];
  bool have_cfg = config_load(config, &cfg, err, sizeof err) == 0;
  bool need_cfg = !a.id || !a.key || (strcmp(a.cmd, "csr") && !a.cert) ||
                  (!strcmp(a.cmd, "enroll") && !a.url);
  if (!have_cfg && need_cfg) {
    fprintf(stderr, "%s\n", err);
    fprintf(stderr, "c8y-agent cert: or pass --id, --key%s\n",
            !strcmp(a.cmd, "csr")      ? ""
            : !strcmp(a.cmd, "enroll") ? ", --cert and --url"
                                       : " and --cert");
    return 1;
  }
  if (have_cfg) {
    if (!a.id)
      a.id = cfg.device_id;
    if (!a.cert)
      a.cert = cfg.cert_file;
    if (!a.key)
      a.key = cfg.key_file;
  }
  rc = 1;
  if (!a.key || (strcmp(a.cmd, "csr") && !a.cert))
    fprintf(stderr,
            "c8y-agent cert: no %s file: set [c8y] cert_file and key_file in "
            "%s or pass --cert/--key\n",
            a.key ? "certificate" : "key", config);
  else if (!*a.id || strpbrk(a.id, ":/+#"))
    fprintf(stderr,
            "c8y-agent cert: device id '%s' cannot be a certificate CN for "
            "Cumulocity (':', '/', '+' and '#' are not allowed)\n",
            a.id);
  else if (!strcmp(a.cmd, "enroll"))
    rc = cert_enroll(&a, have_cfg ? &cfg : NULL);
  else
    rc = !strcmp(a.cmd, "create") ? cert_create(&a) : cert_csr(&a);
  if (have_cfg)
    config_free(&cfg);
  return rc;
}
