#include "netdiag.h"

#include "clock.h"
#include "log.h"
#include "x509.h"

#include <arpa/inet.h>
#include <c8y/plugin.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DIAG_TIMEOUT_MS 5000

const char *netdiag_step_name(int step) {
  switch (step) {
  case NETDIAG_DNS:
    return "DNS";
  case NETDIAG_TCP:
    return "TCP";
  case NETDIAG_TLS:
    return "TLS";
  case NETDIAG_MQTT:
    return "MQTT";
  case NETDIAG_ROUNDTRIP:
    return "round trip";
  default:
    return "?";
  }
}

const char *netdiag_connack_meaning(int code) {
  switch (code) {
  case 0:
    return "accepted";
  case 1:
    return "unacceptable protocol version (Cumulocity accepts MQTT 3.1 and "
           "3.1.1 only)";
  case 2:
    return "identifier rejected: the clientId was not accepted (check "
           "[device] id and template_id)";
  case 3:
    return "server unavailable: a temporary problem on the platform side; "
           "retry later";
  case 4:
    return "bad user name or password: check [c8y] tenant, user and "
           "password";
  case 5:
    return "not authorized: wrong credentials or no permission, any "
           "certificate problem (CN not the device id, auto-registration "
           "failed), or a problem with the device's managed object";
  default:
    return "connection refused by the broker";
  }
}

typedef struct probe {
  const agent_config *cfg;
  int timeout_ms;
  netdiag_report_fn report;
  void *ctx;
  char *why;
  size_t whylen;
  char addr[INET6_ADDRSTRLEN + 8];
} probe;

__attribute__((format(printf, 4, 5))) static int
step_done(probe *p, int step, bool ok, const char *fmt, ...) {
  char text[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  if (p->report)
    p->report(p->ctx, step, ok, text);
  if (!ok && p->why && p->whylen)
    snprintf(p->why, p->whylen, "%s", text);
  return ok ? 0 : step;
}

static void addr_text(const struct sockaddr *sa, char *out, size_t outlen) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host,
              sizeof host);
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host,
              sizeof host);
  snprintf(out, outlen, sa->sa_family == AF_INET6 ? "[%s]" : "%s", host);
}

/* Non-blocking connect bounded by timeout_ms; the socket (blocking again),
 * or C8Y_EIO when there is none or C8Y_ENET when it does not connect, with
 * errno saying why. */
static int connect_one(const struct addrinfo *ai, int timeout_ms) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                  ai->ai_protocol);
  if (fd < 0)
    return C8Y_EIO;
  int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
  if (rc != 0 && errno == EINPROGRESS) {
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int n;
    do
      n = poll(&pfd, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n == 0) {
      close(fd);
      errno = ETIMEDOUT;
      return C8Y_ENET;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
      soerr = errno;
    if (soerr) {
      close(fd);
      errno = soerr;
      return C8Y_ENET;
    }
    rc = 0;
  }
  if (rc != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return C8Y_ENET;
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  struct timeval tv = {.tv_sec = timeout_ms / 1000,
                       .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

/* One lookup, shared by the caller and the thread doing it: whoever lets
 * go last frees it, so a caller that gave up does not wait for it. */
typedef struct lookup {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs;
  bool done;
  int rc, err;
  struct addrinfo *res;
  struct addrinfo hints;
  char host[256], port[16];
} lookup;

static void lookup_unref(lookup *l) {
  pthread_mutex_lock(&l->mu);
  int left = --l->refs;
  pthread_mutex_unlock(&l->mu);
  if (left)
    return;
  if (l->res)
    freeaddrinfo(l->res);
  pthread_cond_destroy(&l->cv);
  pthread_mutex_destroy(&l->mu);
  free(l);
}

static void *lookup_thread(void *arg) {
  lookup *l = arg;
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(l->host, l->port, &l->hints, &res);
  int err = errno;
  pthread_mutex_lock(&l->mu);
  l->rc = rc;
  l->err = err;
  l->res = res;
  l->done = true;
  pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
  lookup_unref(l);
  return NULL;
}

/* getaddrinfo bounded by timeout_ms: a resolver that does not answer is a
 * cause of its own (EAI_INPROGRESS), not a hang. */
static int resolve(const char *host, const char *port,
                   const struct addrinfo *hints, int timeout_ms,
                   struct addrinfo **res) {
  lookup *l = calloc(1, sizeof *l);
  if (!l)
    return EAI_MEMORY;
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cv, NULL);
  l->refs = 2;
  l->hints = *hints;
  snprintf(l->host, sizeof l->host, "%s", host);
  snprintf(l->port, sizeof l->port, "%s", port);
  pthread_attr_t at;
  pthread_t t;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  int started = pthread_create(&t, &at, lookup_thread, l);
  pthread_attr_destroy(&at);
  if (started != 0) {
    l->refs = 1;
    lookup_unref(l);
    return getaddrinfo(host, port, hints, res); /* unbounded, but answers */
  }
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  long long ns = dl.tv_nsec + (long long)(timeout_ms % 1000) * 1000000LL;
  dl.tv_sec += timeout_ms / 1000 + ns / 1000000000LL;
  dl.tv_nsec = (long)(ns % 1000000000LL);
  pthread_mutex_lock(&l->mu);
  while (!l->done && pthread_cond_timedwait(&l->cv, &l->mu, &dl) != ETIMEDOUT) {
  }
  int rc = l->done ? l->rc : EAI_INPROGRESS, err = l->err;
  if (l->done) {
    *res = l->res;
    l->res = NULL;
  }
  pthread_mutex_unlock(&l->mu);
  lookup_unref(l);
  errno = err; /* for EAI_SYSTEM */
  return rc;
}

/* DNS + TCP: a connected socket, or C8Y_ENET with the failed step in
 * *failed. */
static int probe_tcp(probe *p, int *failed) {
  const agent_config *c = p->cfg;
  char port[16];
  snprintf(port, sizeof port, "%d", c->port);
  /* No AI_ADDRCONFIG: with only a loopback interface it hides 127.0.0.1
   * and "localhost", which the session can still reach. */
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  long long t0 = clock_mono_ms();
  int g = resolve(c->host, port, &hints, p->timeout_ms, &res);
  if (g != 0) {
    *failed = step_done(
        p, NETDIAG_DNS, false,
        "cannot resolve host name '%s': %s (check [c8y] host and the DNS "
        "set-up)",
        c->host,
        g == EAI_SYSTEM       ? strerror(errno)
        : g == EAI_INPROGRESS ? "no answer from the resolver in time"
                              : gai_strerror(g));
    return C8Y_ENET;
  }
  char list[256] = "";
  size_t n = 0;
  for (struct addrinfo *ai = res; ai && n < sizeof list - 50;
       ai = ai->ai_next) {
    char a[INET6_ADDRSTRLEN + 2];
    addr_text(ai->ai_addr, a, sizeof a);
    if (!strstr(list, a))
      n +=
          (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", a);
  }
  step_done(p, NETDIAG_DNS, true, "%s resolves to %s (%lld ms)", c->host, list,
            clock_mono_ms() - t0);
  int fd = -1, err = 0;
  char last[INET6_ADDRSTRLEN + 2] = "?";
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    addr_text(ai->ai_addr, last, sizeof last);
    t0 = clock_mono_ms();
    fd = connect_one(ai, p->timeout_ms);
    if (fd < 0)
      err = errno;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    const char *hint =
        err == ECONNREFUSED ? " (nothing listens on that port: check [c8y] "
                              "port, 8883 for TLS, 1883 plain)"
        : err == ETIMEDOUT  ? " (no answer: a firewall dropping the packets, "
                              "or the wrong host)"
                            : "";
    *failed = step_done(p, NETDIAG_TCP, false,
                        "cannot connect to %s port %d: %s%s", last, c->port,
                        err == ETIMEDOUT ? "timed out" : strerror(err), hint);
    return C8Y_ENET;
  }
  snprintf(p->addr, sizeof p->addr, "%s", last);
  step_done(p, NETDIAG_TCP, true, "connected to %s port %d (%lld ms)", last,
            c->port, clock_mono_ms() - t0);
  return fd;
}

/* OpenSSL's reason for the last failure; the queue is emptied. */
static const char *ssl_reason(char *buf, size_t len) {
  unsigned long e = ERR_peek_last_error();
  if (!e)
    snprintf(buf, len, "%s", "no details");
  else
    ERR_error_string_n(e, buf, len);
  ERR_clear_error();
  return buf;
}

/* DNS names, IP addresses and CN of the server certificate. */
static void cert_names(X509 *x, char *out, size_t outlen) {
  size_t n = 0;
  out[0] = '\0';
  GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
    char buf[INET6_ADDRSTRLEN + 8] = "";
    if (g->type == GEN_DNS) {
      snprintf(buf, sizeof buf, "%.*s", ASN1_STRING_length(g->d.dNSName),
               (const char *)ASN1_STRING_get0_data(g->d.dNSName));
    } else if (g->type == GEN_IPADD) {
      int l = ASN1_STRING_length(g->d.iPAddress);
      const unsigned char *d = ASN1_STRING_get0_data(g->d.iPAddress);
      inet_ntop(l == 4 ? AF_INET : AF_INET6, d, buf, sizeof buf);
    }
    if (*buf && n < outlen)
      n += (size_t)snprintf(out + n, outlen - n, "%s%s", n ? ", " : "", buf);
  }
  GENERAL_NAMES_free(sans);
  char cn[256];
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
                                sizeof cn) > 0 &&
      n < outlen)
    snprintf(out + n, outlen - n, "%sCN %s", n ? ", " : "", cn);
}

static SSL_CTX *make_ctx(probe *p, int *failed) {
  const agent_config *c = p->cfg;
  char r[256];
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    *failed = step_done(p, NETDIAG_TLS, false, "cannot set up TLS: %s",
                        ssl_reason(r, sizeof r));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_default_passwd_cb(ctx, x509_no_passphrase);
  int ok;
  struct stat st;
  if (!c->ca_path)
    ok = SSL_CTX_set_default_verify_paths(ctx);
  else if (stat(c->ca_path, &st) == 0 && S_ISDIR(st.st_mode))
    ok = SSL_CTX_load_verify_locations(ctx, NULL, c->ca_path);
  else
    ok = SSL_CTX_load_verify_locations(ctx, c->ca_path, NULL);
  if (ok != 1) {
    *failed = step_done(p, NETDIAG_TLS, false,
                        "[c8y] ca_path %s: cannot load CA certificates: %s",
                        c->ca_path ? c->ca_path : "(system default)",
                        ssl_reason(r, sizeof r));
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (c->cert_file &&
      (SSL_CTX_use_certificate_chain_file(ctx, c->cert_file) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx, c->key_file, SSL_FILETYPE_PEM) != 1)) {
    *failed = step_done(p, NETDIAG_TLS, false,
                        "[c8y] cert_file %s / key_file %s: cannot load: %s",
                        c->cert_file, c->key_file, ssl_reason(r, sizeof r));
    SSL_CTX_free(ctx);
    return NULL;
  }
  /* The verdict is read after the handshake, to say exactly what is wrong
   * with the certificate instead of a bare "verify failed". */
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  return ctx;
}

/* A handshake that failed before the certificate could be judged. */
static int handshake_failed(probe *p, SSL *ssl, int ret) {
  const agent_config *c = p->cfg;
  int se = SSL_get_error(ssl, ret);
  int sys = errno;
  char r[256];
  ssl_reason(r, sizeof r);
  unsigned long got = BIO_number_read(SSL_get_rbio(ssl));
  char hint[160];
  snprintf(hint, sizeof hint,
           "is port %d a plain MQTT port? (TLS: 8883; with a plain port set "
           "[c8y] tls = false)",
           c->port);
  if (se == SSL_ERROR_SYSCALL && (sys == EAGAIN || sys == EWOULDBLOCK))
    return step_done(p, NETDIAG_TLS, false,
                     "no TLS answer from %s port %d within %d ms: %s", p->addr,
                     c->port, p->timeout_ms, hint);
  if (got == 0)
    return step_done(p, NETDIAG_TLS, false,
                     "%s port %d closed the connection without answering "
                     "the TLS handshake: %s",
                     p->addr, c->port, hint);
  if (strstr(r, "wrong version number") || strstr(r, "packet length") ||
      strstr(r, "record layer"))
    return step_done(p, NETDIAG_TLS, false,
                     "%s port %d does not speak TLS (%s): %s", p->addr, c->port,
                     r, hint);
  return step_done(p, NETDIAG_TLS, false,
                   "TLS handshake with %s port %d "
                   "failed: %s",
                   p->addr, c->port,
                   strcmp(r, "no details") != 0 ? r
                   : sys                        ? strerror(sys)
                                                : "connection closed");
}

static int probe_tls(probe *p, int fd) {
  const agent_config *c = p->cfg;
  int failed = 0;
  SSL_CTX *ctx = make_ctx(p, &failed);
  if (!ctx)
    return failed;
  SSL *ssl = SSL_new(ctx);
  unsigned char ip[16];
  bool is_ip = inet_pton(AF_INET, c->host, ip) == 1 ||
               inet_pton(AF_INET6, c->host, ip) == 1;
  if (!is_ip)
    SSL_set_tlsext_host_name(ssl, c->host);
  if (c->verify_hostname) {
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (is_ip)
      X509_VERIFY_PARAM_set1_ip_asc(vp, c->host);
    else
      X509_VERIFY_PARAM_set1_host(vp, c->host, 0);
  }
  SSL_set_fd(ssl, fd);
  errno = 0;
  long long t0 = clock_mono_ms();
  int ret = SSL_connect(ssl);
  if (ret != 1) {
    failed = handshake_failed(p, ssl, ret);
    goto out;
  }
  X509 *peer = SSL_get1_peer_certificate(ssl);
  long v = SSL_get_verify_result(ssl);
  char names[512] = "", issuer[256] = "?";
  if (peer) {
    cert_names(peer, names, sizeof names);
    X509_NAME_oneline(X509_get_issuer_name(peer), issuer, sizeof issuer);
  }
  X509_free(peer);
  if (!peer) {
    failed = step_done(p, NETDIAG_TLS, false,
                       "the server at %s sent no certificate", p->addr);
  } else if (v == X509_V_ERR_HOSTNAME_MISMATCH ||
             v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
    failed = step_done(p, NETDIAG_TLS, false,
                       "certificate name mismatch: the server certificate is "
                       "not valid for host name %s (it is for: %s); check "
                       "[c8y] host",
                       c->host, names);
  } else if (v != X509_V_OK) {
    failed = step_done(p, NETDIAG_TLS, false,
                       "untrusted server certificate: %s (issuer %s); the CA "
                       "is not in [c8y] ca_path %s",
                       X509_verify_cert_error_string(v), issuer,
                       c->ca_path ? c->ca_path : "(system default)");
  } else {
    /* TLS 1.3 servers that want a client certificate say so only after
     * the handshake: peek briefly for that alert. */
    struct timeval tv = {.tv_sec = 0, .tv_usec = 300 * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b;
    errno = 0;
    int pr = SSL_peek(ssl, &b, 1);
    int se = pr <= 0 ? SSL_get_error(ssl, pr) : SSL_ERROR_NONE;
    char r[256];
    if (se == SSL_ERROR_SSL || se == SSL_ERROR_ZERO_RETURN ||
        (se == SSL_ERROR_SYSCALL && errno != EAGAIN && errno != EWOULDBLOCK))
      failed = step_done(p, NETDIAG_TLS, false,
                         "the server ended the TLS session after the "
                         "handshake: %s%s",
                         ssl_reason(r, sizeof r),
                         c->cert_file ? ""
                                      : " (does it require a client "
                                        "certificate? set [c8y] cert_file)");
    else
      step_done(p, NETDIAG_TLS, true,
                "%s, server certificate verified%s%s (%s; issuer %s) (%lld ms)",
                SSL_get_version(ssl), c->verify_hostname ? " for " : "",
                c->verify_hostname ? c->host : " (host name NOT checked)",
                names, issuer, clock_mono_ms() - t0);
    ERR_clear_error();
  }
out:
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return failed;
}

int netdiag_probe(const agent_config *cfg, int timeout_ms,
                  netdiag_report_fn report, void *ctx, char *why,
                  size_t whylen) {
  probe p = {.cfg = cfg,
             .timeout_ms = timeout_ms > 0 ? timeout_ms : DIAG_TIMEOUT_MS,
             .report = report,
             .ctx = ctx,
             .why = why,
             .whylen = whylen};
  if (why && whylen)
    why[0] = '\0';
  int failed = 0;
  int fd = probe_tcp(&p, &failed);
  if (fd < 0)
    return failed;
  if (cfg->tls)
    failed = probe_tls(&p, fd);
  close(fd);
  return failed;
}

/* ---- the daemon's diagnosis thread ---- */

static pthread_mutex_t diag_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t diag_cv = PTHREAD_COND_INITIALIZER;
static bool diag_running; /* under diag_mu */

static void diag_done(void) {
  pthread_mutex_lock(&diag_mu);
  diag_running = false;
  pthread_cond_broadcast(&diag_cv);
  pthread_mutex_unlock(&diag_mu);
}

static void *diag_thread(void *arg) {
  agent_config *c = arg;
  char why[1024];
  int step = netdiag_probe(c, DIAG_TIMEOUT_MS, NULL, NULL, why, sizeof why);
  if (step)
    log_warning("connection diagnosis for %s://%s:%d: %s step failed: %s",
                c->tls ? "ssl" : "tcp", c->host, c->port,
                netdiag_step_name(step), why);
  else
    log_info("connection diagnosis for %s://%s:%d: DNS, TCP%s work; the "
             "failure is in the MQTT layer",
             c->tls ? "ssl" : "tcp", c->host, c->port,
             c->tls ? " and TLS" : "");
  config_free(c);
  free(c);
  diag_done();
  return NULL;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

void netdiag_explain_async(const agent_config *cfg) {
  pthread_mutex_lock(&diag_mu);
  bool busy = diag_running;
  diag_running = true;
  pthread_mutex_unlock(&diag_mu);
  if (busy)
    return;
  agent_config *c = calloc(1, sizeof *c);
  if (c) {
    c->host = dup_or_null(cfg->host);
    c->ca_path = dup_or_null(cfg->ca_path);
    c->cert_file = dup_or_null(cfg->cert_file);
    c->key_file = dup_or_null(cfg->key_file);
    c->port = cfg->port;
    c->tls = cfg->tls;
    c->verify_hostname = cfg->verify_hostname;
  }
  pthread_attr_t at;
  pthread_t t;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  if (!c || !c->host || pthread_create(&t, &at, diag_thread, c) != 0) {
    if (c) {
      config_free(c);
      free(c);
    }
    diag_done();
  }
  pthread_attr_destroy(&at);
}

int netdiag_wait(int timeout_ms) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  long long ns = dl.tv_nsec + (long long)(timeout_ms % 1000) * 1000000LL;
  dl.tv_sec += timeout_ms / 1000 + ns / 1000000000LL;
  dl.tv_nsec = (long)(ns % 1000000000LL);
  pthread_mutex_lock(&diag_mu);
  while (diag_running &&
         pthread_cond_timedwait(&diag_cv, &diag_mu, &dl) != ETIMEDOUT) {
  }
  bool running = diag_running;
  pthread_mutex_unlock(&diag_mu);
  return running ? C8Y_ETIMEDOUT : 0;
}
