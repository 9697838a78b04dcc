/* http module: URL/host rules for credentials, JWT claims, sha256, and
 * Range resume of a download against the simulator's REST side. */
#include "http.h"
#include "sim_http.h"

#include "outq.h"

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <pthread.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <time.h>

static http_url_parts base_of(const char *url) {
  http_url_parts p;
  g_assert_cmpint(http_parse_url(url, &p), ==, 0);
  return p;
}

static void test_parse_url(void) {
  http_url_parts p;
  g_assert_cmpint(http_parse_url("https://Tenant.Example.com/x", &p), ==, 0);
  g_assert_true(p.https);
  g_assert_cmpstr(p.host, ==, "tenant.example.com");
  g_assert_cmpint(p.port, ==, 443);
  g_assert_cmpint(http_parse_url("http://127.0.0.1:8111", &p), ==, 0);
  g_assert_false(p.https);
  g_assert_cmpint(p.port, ==, 8111);
  g_assert_cmpint(http_parse_url("https://[::1]:9/a", &p), ==, 0);
  g_assert_cmpstr(p.host, ==, "::1");
  g_assert_cmpint(p.port, ==, 9);
  g_assert_cmpint(http_parse_url("https://u:pw@evil.example/", &p), ==, 0);
  g_assert_cmpstr(p.host, ==, "evil.example");
  g_assert_cmpint(http_parse_url("ftp://host/", &p), ==, C8Y_EINVAL);
  g_assert_cmpint(http_parse_url("https:///path", &p), ==, C8Y_EINVAL);
  g_assert_cmpint(http_parse_url("https://host:99999/", &p), ==, C8Y_EINVAL);
  g_assert_cmpint(http_parse_url("https://host:12ab/", &p), ==, C8Y_EINVAL);
}

static void test_auth_rules(void) {
  http_url_parts b = base_of("https://t1.example.com");
  const char *th = "mqtt.example.com";
  g_assert_true(http_auth_allowed(&b, th, "https://t1.example.com/inv/1"));
  g_assert_true(http_auth_allowed(&b, th, "https://T1.EXAMPLE.COM:443/x"));
  g_assert_true(http_auth_allowed(&b, th, "https://t1.example.com./x"));
  /* the tenant (MQTT) host over https */
  g_assert_true(http_auth_allowed(&b, th, "https://mqtt.example.com/x"));
  /* other hosts, ports and schemes get nothing */
  g_assert_false(http_auth_allowed(&b, th, "https://files.example.net/x"));
  g_assert_false(http_auth_allowed(&b, th, "https://t1.example.com:8443/x"));
  g_assert_false(http_auth_allowed(&b, th, "http://t1.example.com/x"));
  g_assert_false(http_auth_allowed(&b, th, "http://mqtt.example.com/x"));
  g_assert_false(
      http_auth_allowed(&b, th, "https://t1.example.com@evil.example/x"));
  g_assert_false(
      http_auth_allowed(&b, th, "https://t1.example.com.evil.example/x"));
  g_assert_false(http_auth_allowed(&b, th, "not a url"));
  http_url_parts local = base_of("http://127.0.0.1:18831");
  g_assert_true(http_auth_allowed(&local, "127.0.0.1",
                                  "http://127.0.0.1:18831/inventory/x"));
  g_assert_false(
      http_auth_allowed(&local, "127.0.0.1", "http://127.0.0.1:18832/x"));
}

static char *b64url(const char *s) {
  gchar *b = g_base64_encode((const guchar *)s, strlen(s));
  for (char *c = b; *c; c++)
    *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
  char *eq = strchr(b, '=');
  if (eq)
    *eq = '\0';
  return b;
}

static void test_jwt_times(void) {
  char *h = b64url("{\"alg\":\"RS256\"}");
  char *p = b64url("{\"sub\":\"t1/device\",\"iat\":1700000000,"
                   "\"exp\":1700003600}");
  char *tok = g_strdup_printf("%s.%s.c2lnbmF0dXJl", h, p);
  long long exp, iat;
  g_assert_cmpint(http_jwt_times(tok, &exp, &iat), ==, 0);
  g_assert_cmpint(exp, ==, 1700003600);
  g_assert_cmpint(iat, ==, 1700000000);
  char *nop = b64url("{\"sub\":\"x\"}");
  char *bad = g_strdup_printf("%s.%s.sig", h, nop);
  g_assert_cmpint(http_jwt_times(bad, &exp, &iat), ==, C8Y_EINVAL);
  g_assert_cmpint(http_jwt_times("no-dots-here", &exp, &iat), ==, C8Y_EINVAL);
  g_assert_cmpint(http_jwt_times("a.!!!.b", &exp, &iat), ==, C8Y_EINVAL);
  g_free(h);
  g_free(p);
  g_free(tok);
  g_free(nop);
  g_free(bad);
}

static void test_sha256(void) {
  char *dir = g_dir_make_tmp("c8y-sha-XXXXXX", NULL);
  char *path = g_build_filename(dir, "abc", NULL);
  g_assert_true(g_file_set_contents(path, "abc", 3, NULL));
  char hex[65];
  g_assert_cmpint(http_sha256_file(path, hex), ==, 0);
  g_assert_cmpstr(
      hex, ==,
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  g_unlink(path);
  g_assert_cmpint(http_sha256_file(path, hex), ==, C8Y_EIO);
  g_rmdir(dir);
  g_free(path);
  g_free(dir);
}

/* ---- downloads against an in-process REST server ------------------------ */

typedef struct dl_fx {
  sim_http *srv;
  agent_config cfg;
  http_ctx *h;
  char *dir;
  char *src;
  char *sha;
  gchar *data;
  gsize len;
  char *url;
} dl_fx;

static void no_token(void *ctx) { (void)ctx; }

static void dl_setup(dl_fx *f, gconstpointer unused) {
  (void)unused;
  sim_http_options o = {.password = "secret"};
  char err[256];
  g_assert_cmpint(sim_http_start(&o, &f->srv, err, sizeof err), ==, 0);
  f->dir = g_dir_make_tmp("c8y-dl-XXXXXX", NULL);
  f->src = g_build_filename(f->dir, "source.bin", NULL);
  f->len = 3 * 1024 * 1024 + 17;
  f->data = g_malloc(f->len);
  for (gsize i = 0; i < f->len; i++)
    f->data[i] = (gchar)((i * 2654435761u) >> 13);
  g_assert_true(g_file_set_contents(f->src, f->data, (gssize)f->len, NULL));
  f->sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256,
                                       (const guchar *)f->data, f->len);
  long id = sim_http_add_binary(f->srv, f->src);
  f->url =
      g_strdup_printf("%s/inventory/binaries/%ld", sim_http_url(f->srv), id);
  f->cfg.http_url = (char *)sim_http_url(f->srv);
  f->cfg.host = "127.0.0.1";
  f->cfg.tenant = "t1";
  f->cfg.user = "device";
  f->cfg.password = "secret";
  f->cfg.verify_hostname = true;
  f->cfg.transfer_max_bytes = 64 * 1024 * 1024;
  g_assert_cmpint(http_new(&f->cfg, no_token, NULL, &f->h, err, sizeof err), ==,
                  0);
}

static void dl_teardown(dl_fx *f, gconstpointer unused) {
  (void)unused;
  http_free(f->h);
  sim_http_stop(f->srv);
  GDir *d = g_dir_open(f->dir, 0, NULL);
  const char *n;
  while (d && (n = g_dir_read_name(d))) {
    char *p = g_build_filename(f->dir, n, NULL);
    g_unlink(p);
    g_free(p);
  }
  if (d)
    g_dir_close(d);
  g_rmdir(f->dir);
  g_free(f->dir);
  g_free(f->src);
  g_free(f->sha);
  g_free(f->data);
  g_free(f->url);
}

static int download(dl_fx *f, const char *file, c8y_download *d) {
  *d = (c8y_download){
      .size = sizeof *d, .url = f->url, .file = file, .sha256 = f->sha};
  return http_download(f->h, f->dir, d, NULL);
}

static void assert_complete(dl_fx *f, const c8y_download *d) {
  gchar *got = NULL;
  gsize n = 0;
  g_assert_true(g_file_get_contents(d->path, &got, &n, NULL));
  g_assert_cmpuint(n, ==, f->len);
  g_assert_true(memcmp(got, f->data, n) == 0);
  g_assert_cmpuint(d->bytes, ==, f->len);
  g_free(got);
}

static void test_resume_after_cut(dl_fx *f, gconstpointer unused) {
  (void)unused;
  sim_http_cut_downloads(f->srv, 2);
  c8y_download d;
  g_assert_cmpint(download(f, "out.bin", &d), ==, C8Y_OK);
  assert_complete(f, &d);
  g_assert_cmpuint(sim_http_requests(f->srv, "GET", "/inventory/"), ==, 3);
  g_assert_cmpuint(sim_http_range_requests(f->srv), ==, 2);
  g_assert_cmpint(d.http_code, ==, 206);
}

static void write_partial(dl_fx *f, const char *file, const char *url,
                          gsize bytes) {
  char *part = g_strdup_printf("%s/.%s.partial", f->dir, file);
  char *src = g_strdup_printf("%s/.%s.source", f->dir, file);
  g_assert_true(g_file_set_contents(part, f->data, (gssize)bytes, NULL));
  g_assert_true(g_file_set_contents(src, url, -1, NULL));
  g_free(part);
  g_free(src);
}

/* A partial file left by an earlier call (e.g. before a reboot) is resumed
 * when it came from the same URL, and ignored otherwise. */
static void test_resume_across_calls(dl_fx *f, gconstpointer unused) {
  (void)unused;
  write_partial(f, "a.bin", f->url, f->len / 3);
  c8y_download d;
  g_assert_cmpint(download(f, "a.bin", &d), ==, C8Y_OK);
  assert_complete(f, &d);
  g_assert_cmpuint(sim_http_range_requests(f->srv), ==, 1);

  /* same name, other URL: starts from zero */
  write_partial(f, "b.bin", "http://127.0.0.1:1/other", f->len / 3);
  g_assert_cmpint(download(f, "b.bin", &d), ==, C8Y_OK);
  assert_complete(f, &d);
  g_assert_cmpuint(sim_http_range_requests(f->srv), ==, 1);

  /* a partial that is garbage fails the checksum and is not kept */
  char junk[1024];
  memset(junk, 'x', sizeof junk);
  char *part = g_strdup_printf("%s/.c.bin.partial", f->dir);
  char *src = g_strdup_printf("%s/.c.bin.source", f->dir);
  g_assert_true(g_file_set_contents(part, junk, sizeof junk, NULL));
  g_assert_true(g_file_set_contents(src, f->url, -1, NULL));
  g_assert_cmpint(download(f, "c.bin", &d), ==, C8Y_ECHECKSUM);
  g_assert_nonnull(strstr(d.error, "sha256"));
  g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
  g_free(part);
  g_free(src);
}

static void test_bad_arguments(dl_fx *f, gconstpointer unused) {
  (void)unused;
  c8y_download d;
  g_assert_cmpint(download(f, "../escape", &d), ==, C8Y_EINVAL);
  g_assert_nonnull(strstr(d.error, "plain name"));
  g_assert_cmpint(download(f, ".hidden", &d), ==, C8Y_EINVAL);
  d = (c8y_download){
      .size = sizeof d, .url = f->url, .file = "x", .sha256 = "12ab"};
  g_assert_cmpint(http_download(f->h, f->dir, &d, NULL), ==, C8Y_EINVAL);
  d = (c8y_download){.size = 8, .url = f->url, .file = "x"};
  g_assert_cmpint(http_download(f->h, f->dir, &d, NULL), ==, C8Y_EINVAL);
  d = (c8y_download){.size = sizeof d, .url = "ftp://x/y", .file = "x"};
  g_assert_cmpint(http_download(f->h, f->dir, &d, NULL), ==, C8Y_EINVAL);
  g_assert_cmpuint(sim_http_requests(f->srv, NULL, NULL), ==, 0);
}

static void test_not_found(dl_fx *f, gconstpointer unused) {
  (void)unused;
  c8y_download d = {.size = sizeof d, .file = "nf.bin"};
  char *url =
      g_strdup_printf("%s/inventory/binaries/999", sim_http_url(f->srv));
  d.url = url;
  g_assert_cmpint(http_download(f->h, f->dir, &d, NULL), ==, C8Y_EHTTP);
  g_assert_cmpint(d.http_code, ==, 404);
  g_assert_true(g_str_has_prefix(d.error, "HTTP 404 from 127.0.0.1: "));
  /* 404 is final: one request, no retries */
  g_assert_cmpuint(sim_http_requests(f->srv, NULL, NULL), ==, 1);
  g_free(url);
}

/* A download that the network cut keeps its partial file for a Range
 * resume, across calls too. */
static void test_cut_keeps_partial(dl_fx *f, gconstpointer unused) {
  (void)unused;
  sim_http_cut_downloads(f->srv, 6); /* every attempt of the call */
  c8y_download d;
  g_assert_cmpint(download(f, "cut.bin", &d), ==, C8Y_ENET);
  char *part = g_strdup_printf("%s/.cut.bin.partial", f->dir);
  g_assert_true(g_file_test(part, G_FILE_TEST_EXISTS));
  g_assert_cmpint(download(f, "cut.bin", &d), ==, C8Y_OK);
  assert_complete(f, &d);
  g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
  g_free(part);
}

/* A small file system of its own for the downloads (tmpfs, root only);
 * NULL with the test skipped when it cannot be mounted. */
static char *small_fs(dl_fx *f, unsigned long long bytes) {
  if (geteuid() != 0) {
    g_test_skip("mounting a small tmpfs needs root");
    return NULL;
  }
  char *dir = g_build_filename(f->dir, "small", NULL);
  g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
  char opts[64];
  snprintf(opts, sizeof opts, "size=%llu,mode=0700", bytes);
  if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) {
    char *why = g_strdup_printf("cannot mount a tmpfs: %s", g_strerror(errno));
    g_test_skip(why);
    g_free(why);
    g_rmdir(dir);
    g_free(dir);
    return NULL;
  }
  return dir;
}

static void small_fs_free(char *dir) {
  g_assert_cmpint(umount2(dir, MNT_DETACH), ==, 0);
  g_rmdir(dir);
  g_free(dir);
}

static unsigned long long free_bytes(const char *dir) {
  struct statvfs sv;
  g_assert_cmpint(statvfs(dir, &sv), ==, 0);
  return (unsigned long long)sv.f_bavail * sv.f_frsize;
}

static size_t entries(const char *dir) {
  GDir *d = g_dir_open(dir, 0, NULL);
  g_assert_nonnull(d);
  size_t n = 0;
  while (g_dir_read_name(d))
    n++;
  g_dir_close(d);
  return n;
}

/* A file larger than the disk: refused (before any byte when the size is
 * announced, at the limit when it is not), nothing left behind, so a URL
 * the platform chose cannot keep the disk full and starve the queue. */
static void test_no_space(dl_fx *f, gconstpointer chunked) {
  char *dir = small_fs(f, 1024 * 1024);
  if (!dir)
    return;
  unsigned long long before = free_bytes(dir);
  sim_http_set_chunked(f->srv, chunked != NULL);
  c8y_download d = {.size = sizeof d, .url = f->url, .file = "big.bin"};
  g_assert_cmpint(http_download(f->h, dir, &d, NULL), ==, C8Y_EIO);
  g_test_message("%s", d.error);
  g_assert_nonnull(strstr(d.error, "not enough disk space for the file from "
                                   "127.0.0.1"));
  g_assert_cmpuint(entries(dir), ==, 0);
  g_assert_cmpuint(free_bytes(dir), ==, before);
  /* Final: not tried again. */
  g_assert_cmpuint(sim_http_requests(f->srv, "GET", "/inventory/"), ==, 1);
  small_fs_free(dir);
}

/* A file that fits the disk but would leave less than the queue's reserve
 * free is refused too: transfers never use the queue's room. */
static void test_keeps_queue_room(dl_fx *f, gconstpointer chunked) {
  char *dir = small_fs(f, f->len + OUTQ_RESERVE_BYTES / 2);
  if (!dir)
    return;
  g_assert_cmpuint(free_bytes(dir), >=, f->len);
  sim_http_set_chunked(f->srv, chunked != NULL);
  c8y_download d = {.size = sizeof d, .url = f->url, .file = "fits.bin"};
  g_assert_cmpint(http_download(f->h, dir, &d, NULL), ==, C8Y_EIO);
  g_assert_nonnull(strstr(d.error, "the agent keeps 256 KiB free for its "
                                   "queue"));
  g_assert_cmpuint(entries(dir), ==, 0);
  small_fs_free(dir);

  /* With room to spare it is taken. */
  dir = small_fs(f, f->len + 2 * OUTQ_RESERVE_BYTES);
  if (!dir)
    return;
  g_assert_cmpint(http_download(f->h, dir, &d, NULL), ==, C8Y_OK);
  assert_complete(f, &d);
  small_fs_free(dir);
}

/* JWT: a token request answered at once (before the asking thread even
 * waits) is used, and cached for the next transfer. */
typedef struct instant {
  http_ctx *h;
  int asked;
  char *token;
} instant;

static void answer_now(void *ctx) {
  instant *in = ctx;
  in->asked++;
  http_token_received(in->h, in->token);
}

static void test_jwt_answered_at_once(void) {
  sim_http *srv = NULL;
  sim_http_options o = {.open = true};
  char err[256];
  g_assert_cmpint(sim_http_start(&o, &srv, err, sizeof err), ==, 0);
  char *dir = g_dir_make_tmp("c8y-jwt-XXXXXX", NULL);
  char *src = g_build_filename(dir, "src", NULL);
  g_assert_true(g_file_set_contents(src, "payload", -1, NULL));
  long id = sim_http_add_binary(srv, src);
  char *url =
      g_strdup_printf("%s/inventory/binaries/%ld", sim_http_url(srv), id);
  char *hdr = b64url("{\"alg\":\"none\"}");
  char *claims =
      g_strdup_printf("{\"exp\":%lld}", (long long)time(NULL) + 3600);
  char *pl = b64url(claims);
  instant in = {.token = g_strdup_printf("%s.%s.sig", hdr, pl)};
  agent_config cfg = {.http_url = (char *)sim_http_url(srv),
                      .host = "127.0.0.1",
                      .http_jwt = true,
                      .verify_hostname = true,
                      .transfer_max_bytes = 1 << 20};
  g_assert_cmpint(http_new(&cfg, answer_now, &in, &in.h, err, sizeof err), ==,
                  0);
  for (int i = 0; i < 2; i++) {
    c8y_download d = {.size = sizeof d, .url = url, .file = "got"};
    g_assert_cmpint(http_download(in.h, dir, &d, NULL), ==, C8Y_OK);
    g_assert_cmpuint(d.bytes, ==, 7);
  }
  g_assert_cmpint(in.asked, ==, 1);
  g_assert_cmpuint(sim_http_auth_headers(srv), ==, 2);
  http_free(in.h);
  sim_http_stop(srv);
  char *got = g_build_filename(dir, "got", NULL);
  g_unlink(got);
  g_unlink(src);
  g_rmdir(dir);
  g_free(got);
  g_free(in.token);
  g_free(pl);
  g_free(claims);
  g_free(hdr);
  g_free(url);
  g_free(src);
  g_free(dir);
}

static void never_asked(void *ctx) { (void)ctx; }

/* platform_auth: the tenant-host rule covers ws/wss like http/https, Basic
 * is "<tenant>/<user>:<password>", a certificate device gets the JWT, and
 * the trust settings are the REST client's. */
static void test_platform_auth(void) {
  char err[256];
  agent_config cfg = {.http_url = "https://t1.example.com",
                      .host = "mqtt.example.com",
                      .tenant = "t1",
                      .user = "device",
                      .password = "secret",
                      .ca_path = "/nonexistent/ca.pem",
                      .verify_hostname = false,
                      .transfer_max_bytes = 1 << 20};
  http_ctx *h = NULL;
  g_assert_cmpint(http_new(&cfg, never_asked, NULL, &h, err, sizeof err), ==,
                  0);
  c8y_platform_auth a = {
      .size = sizeof a,
      .url = "wss://t1.example.com/service/remoteaccess/device/k1"};
  g_assert_cmpint(http_platform_auth(h, &a), ==, C8Y_OK);
  gchar *basic = g_base64_encode((const guchar *)"t1/device:secret", 16);
  gchar *want = g_strconcat("Basic ", basic, NULL);
  g_assert_cmpstr(a.authorization, ==, want);
  g_assert_cmpstr(a.base_url, ==, "https://t1.example.com");
  g_assert_cmpstr(a.ca_file, ==, "/nonexistent/ca.pem");
  g_assert_cmpstr(a.ca_path, ==, "");
  g_assert_cmpint(a.verify_peer, ==, 1);
  g_assert_cmpint(a.verify_hostname, ==, 0);
  g_assert_cmpstr(a.error, ==, "");
  /* the MQTT host over wss (port 443) is the tenant too */
  a.url = "wss://mqtt.example.com/service/remoteaccess/device/k1";
  g_assert_cmpint(http_platform_auth(h, &a), ==, C8Y_OK);
  g_assert_cmpstr(a.authorization, ==, want);
  /* another host, port or plain ws gets no credentials */
  const char *foreign[] = {"wss://evil.example/service/remoteaccess/device/k",
                           "wss://t1.example.com:8443/x",
                           "ws://t1.example.com/x",
                           "wss://t1.example.com@evil.example/x"};
  for (size_t i = 0; i < G_N_ELEMENTS(foreign); i++) {
    a.url = foreign[i];
    g_assert_cmpint(http_platform_auth(h, &a), ==, C8Y_OK);
    g_assert_cmpstr(a.authorization, ==, "");
  }
  a.url = NULL; /* only the tenant's URL and the trust settings */
  g_assert_cmpint(http_platform_auth(h, &a), ==, C8Y_OK);
  g_assert_cmpstr(a.authorization, ==, "");
  g_assert_cmpstr(a.base_url, ==, "https://t1.example.com");
  g_assert_cmpstr(a.ca_file, ==, "/nonexistent/ca.pem");
  a.url = "ftp://t1.example.com/x";
  g_assert_cmpint(http_platform_auth(h, &a), ==, C8Y_EINVAL);
  g_assert_nonnull(strstr(a.error, "ftp://t1.example.com/x"));
  http_stop(h);
  a.url = "wss://t1.example.com/x";
  g_assert_cmpint(http_platform_auth(h, &a), ==, C8Y_ECANCELED);
  http_free(h);
  g_free(want);
  g_free(basic);

  /* a certificate device: the JWT fetched over s/uat, as a Bearer */
  char *hdr = b64url("{\"alg\":\"none\"}");
  char *claims =
      g_strdup_printf("{\"exp\":%lld}", (long long)time(NULL) + 3600);
  char *pl = b64url(claims);
  instant in = {.token = g_strdup_printf("%s.%s.sig", hdr, pl)};
  agent_config jcfg = {.http_url = "https://t1.example.com",
                       .host = "t1.example.com",
                       .http_jwt = true,
                       .verify_hostname = true,
                       .transfer_max_bytes = 1 << 20};
  g_assert_cmpint(http_new(&jcfg, answer_now, &in, &in.h, err, sizeof err), ==,
                  0);
  c8y_platform_auth j = {.size = sizeof j,
                         .url = "wss://t1.example.com/service/x"};
  g_assert_cmpint(http_platform_auth(in.h, &j), ==, C8Y_OK);
  gchar *bearer = g_strconcat("Bearer ", in.token, NULL);
  g_assert_cmpstr(j.authorization, ==, bearer);
  g_assert_cmpint(j.verify_hostname, ==, 1);
  g_assert_cmpstr(j.ca_file, ==, "");
  g_assert_cmpint(in.asked, ==, 1);
  http_free(in.h);
  g_free(bearer);
  g_free(in.token);
  g_free(pl);
  g_free(claims);
  g_free(hdr);
}

/* ---- the device's managed-object id ------------------------------------ */

typedef struct ident_fx {
  dl_fx *f;
  pthread_mutex_t mu;
  int asked;
  bool asked_child;
  c8y_upload u[2];
  int rc[2];
} ident_fx;

static void ask_identity(void *ctx, const char *child) {
  ident_fx *x = ctx;
  pthread_mutex_lock(&x->mu);
  x->asked++;
  x->asked_child |= child != NULL;
  pthread_mutex_unlock(&x->mu);
}

static void *upload_thread(void *arg) {
  ident_fx **pp = arg;
  ident_fx *x = pp[0];
  int i = (int)(pp[1] != NULL);
  x->rc[i] = http_upload(x->f->h, "dev1", &x->u[i], NULL);
  return NULL;
}

/* Two uploads at once share one identity lookup; REST does not know the
 * root (404 here), so the lookup asks over MQTT once (123 -> 124), and
 * both events get the answer. A child is never asked over MQTT. */
static void test_identity_shared(dl_fx *f, gconstpointer unused) {
  (void)unused;
  ident_fx x = {.f = f};
  pthread_mutex_init(&x.mu, NULL);
  http_set_identity_source(f->h, ask_identity, &x);
  sim_http_set_delay(f->srv, 300);
  for (int i = 0; i < 2; i++)
    x.u[i] = (c8y_upload){
        .size = sizeof x.u[i], .path = f->src, .type = "c8y_Log", .text = "t"};
  ident_fx *args[2][2] = {{&x, NULL}, {&x, &x}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    g_assert_cmpint(pthread_create(&th[i], NULL, upload_thread, args[i]), ==,
                    0);
  /* The main loop's part: publish 123, hand the 124 back. */
  for (int i = 0; i < 500; i++) {
    pthread_mutex_lock(&x.mu);
    int asked = x.asked;
    pthread_mutex_unlock(&x.mu);
    if (asked)
      break;
    g_usleep(10000);
  }
  http_identity_received(f->h, "4242");
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  g_assert_cmpint(x.rc[0], ==, C8Y_OK);
  g_assert_cmpint(x.rc[1], ==, C8Y_OK);
  g_assert_cmpint(x.asked, ==, 1);
  g_assert_cmpuint(sim_http_requests(f->srv, "GET", "/identity/"), ==, 1);
  g_assert_cmpuint(sim_http_event_count(f->srv), ==, 2);
  g_assert_cmpstr(sim_http_event_source(f->srv, 0), ==, "4242");
  g_assert_cmpstr(sim_http_event_source(f->srv, 1), ==, "4242");
  /* Cached now: no more lookups. */
  sim_http_set_delay(f->srv, 0);
  c8y_upload again = {
      .size = sizeof again, .path = f->src, .type = "c8y_Log", .text = "t"};
  g_assert_cmpint(http_upload(f->h, "dev1", &again, NULL), ==, C8Y_OK);
  g_assert_cmpuint(sim_http_requests(f->srv, "GET", "/identity/"), ==, 1);
  /* A child: the REST answer stands; nothing on s/us/<child>. */
  c8y_upload child = {.size = sizeof child,
                      .path = f->src,
                      .type = "c8y_Log",
                      .child_id = "kid"};
  g_assert_cmpint(http_upload(f->h, "dev1", &child, NULL), ==, C8Y_EHTTP);
  g_assert_nonnull(strstr(child.error, "HTTP 404"));
  g_assert_false(x.asked_child);
  g_assert_cmpint(x.asked, ==, 1);
  pthread_mutex_destroy(&x.mu);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add("/http/identity-shared", dl_fx, NULL, dl_setup,
             test_identity_shared, dl_teardown);
  g_test_add_func("/http/parse-url", test_parse_url);
  g_test_add_func("/http/auth-rules", test_auth_rules);
  g_test_add_func("/http/jwt-times", test_jwt_times);
  g_test_add_func("/http/sha256", test_sha256);
  g_test_add_func("/http/jwt-answered-at-once", test_jwt_answered_at_once);
  g_test_add_func("/http/platform-auth", test_platform_auth);
  g_test_add("/http/resume-after-cut", dl_fx, NULL, dl_setup,
             test_resume_after_cut, dl_teardown);
  g_test_add("/http/resume-across-calls", dl_fx, NULL, dl_setup,
             test_resume_across_calls, dl_teardown);
  g_test_add("/http/bad-arguments", dl_fx, NULL, dl_setup, test_bad_arguments,
             dl_teardown);
  g_test_add("/http/not-found", dl_fx, NULL, dl_setup, test_not_found,
             dl_teardown);
  g_test_add("/http/cut-keeps-partial", dl_fx, NULL, dl_setup,
             test_cut_keeps_partial, dl_teardown);
  g_test_add("/http/no-space/sized", dl_fx, NULL, dl_setup, test_no_space,
             dl_teardown);
  g_test_add("/http/no-space/chunked", dl_fx, "chunked", dl_setup,
             test_no_space, dl_teardown);
  g_test_add("/http/keeps-queue-room/sized", dl_fx, NULL, dl_setup,
             test_keeps_queue_room, dl_teardown);
  g_test_add("/http/keeps-queue-room/chunked", dl_fx, "chunked", dl_setup,
             test_keeps_queue_room, dl_teardown);
  return g_test_run();
}
