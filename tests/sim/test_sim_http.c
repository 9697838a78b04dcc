/* The simulator's REST side behaves like the documented Cumulocity subset:
 * auth, identity, events and their binaries (multipart and raw), inventory
 * binaries with Range, and the fault switches. Driven with plain libcurl. */
#include "sim.h"
#include "sim_http.h"

#include <curl/curl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

typedef struct resp {
  long code;
  GString *body;
  GString *headers;
} resp;

static size_t sink(char *d, size_t s, size_t n, void *ud) {
  g_string_append_len(ud, d, (gssize)(s * n));
  return s * n;
}

/* One request; body/ctype optional; range "N-" optional. */
static resp call(const char *method, const char *url, const char *auth,
                 const char *ctype, const char *body, const char *range,
                 curl_mime *(*mime)(CURL *, void *), void *mime_ud) {
  resp r = {.body = g_string_new(""), .headers = g_string_new("")};
  CURL *c = curl_easy_init();
  g_assert_nonnull(c);
  struct curl_slist *h = NULL;
  char *a = auth ? g_strdup_printf("Authorization: %s", auth) : NULL;
  char *ct = ctype ? g_strdup_printf("Content-Type: %s", ctype) : NULL;
  if (a)
    h = curl_slist_append(h, a);
  if (ct)
    h = curl_slist_append(h, ct);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, r.headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
  if (body)
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  if (range)
    curl_easy_setopt(c, CURLOPT_RANGE, range);
  curl_mime *m = mime ? mime(c, mime_ud) : NULL;
  if (m)
    curl_easy_setopt(c, CURLOPT_MIMEPOST, m);
  CURLcode cc = curl_easy_perform(c);
  if (cc != CURLE_OK)
    r.code = -(long)cc;
  else
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.code);
  curl_mime_free(m);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  g_free(a);
  g_free(ct);
  return r;
}

static void resp_free(resp *r) {
  g_string_free(r->body, TRUE);
  g_string_free(r->headers, TRUE);
}

typedef struct shx {
  sim *s;
  sim_http *h;
  char *basic;
  char *dir;
} shx;

static void shx_start(shx *x) {
  sim_options o = {.tenant = "t1", .user = "device", .password = "pw1"};
  char err[256];
  g_assert_cmpint(sim_start(&o, &x->s, err, sizeof err), ==, 0);
  sim_http_options ho = {.mqtt = x->s, .password = "pw1"};
  g_assert_cmpint(sim_http_start(&ho, &x->h, err, sizeof err), ==, 0);
  gchar *b = g_base64_encode((const guchar *)"t1/device:pw1", 13);
  x->basic = g_strdup_printf("Basic %s", b);
  g_free(b);
  x->dir = g_dir_make_tmp("c8y-simhttp-t-XXXXXX", NULL);
  /* the root device exists once it sent data */
  g_assert_cmpint(sim_publish(x->s, "s/us", "100,dev,c8y_Linux"), ==, 0);
  g_assert_cmpint(sim_wait_line(x->s, "s/us", "100,", 0, 10000), >=, 0);
  g_assert_true(sim_device_exists(x->s, "dev1"));
}

static void shx_stop(shx *x) {
  sim_http_stop(x->h);
  sim_stop(x->s);
  GDir *d = g_dir_open(x->dir, 0, NULL);
  const char *n;
  while (d && (n = g_dir_read_name(d))) {
    char *p = g_build_filename(x->dir, n, NULL);
    g_unlink(p);
    g_free(p);
  }
  if (d)
    g_dir_close(d);
  g_rmdir(x->dir);
  g_free(x->dir);
  g_free(x->basic);
}

static char *u(shx *x, const char *path) {
  return g_strdup_printf("%s%s", sim_http_url(x->h), path);
}

static void test_auth_and_identity(void) {
  shx x = {0};
  shx_start(&x);
  char *url = u(&x, "/identity/externalIds/c8y_Serial/dev1");
  resp r = call("GET", url, NULL, NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 401);
  g_assert_nonnull(strstr(r.body->str, "security/Unauthorized"));
  resp_free(&r);
  r = call("GET", url, "Basic dDEvZGV2aWNlOndyb25n", NULL, NULL, NULL, NULL,
           NULL);
  g_assert_cmpint(r.code, ==, 401);
  resp_free(&r);
  r = call("GET", url, x.basic, NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 200);
  char *want = g_strdup_printf("\"id\":\"%ld\"", sim_device_mo_id(x.s, "dev1"));
  g_assert_nonnull(strstr(r.body->str, want));
  g_free(want);
  resp_free(&r);
  g_free(url);
  url = u(&x, "/identity/externalIds/c8y_Serial/nobody");
  r = call("GET", url, x.basic, NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 404);
  g_assert_nonnull(strstr(r.body->str, "identity/Not Found"));
  resp_free(&r);
  g_assert_cmpuint(sim_http_unauthorized(x.h), ==, 2);
  g_assert_cmpuint(sim_http_auth_headers(x.h), ==, 3);
  g_free(url);
  shx_stop(&x);
}

static curl_mime *two_parts(CURL *c, void *ud) {
  curl_mime *m = curl_mime_init(c);
  curl_mimepart *p = curl_mime_addpart(m);
  curl_mime_name(p, "object");
  curl_mime_data(p, "{\"name\":\"fw.bin\",\"type\":\"application/x\"}",
                 CURL_ZERO_TERMINATED);
  p = curl_mime_addpart(m);
  curl_mime_name(p, "file");
  curl_mime_filedata(p, ud);
  return m;
}

static void test_events_and_binaries(void) {
  shx x = {0};
  shx_start(&x);
  char *url = u(&x, "/event/events");
  resp r = call("POST", url, x.basic, "application/json", "{\"type\":\"x\"}",
                NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 422);
  resp_free(&r);
  r = call("POST", url, x.basic, "application/json",
           "{\"source\":{\"id\":\"1\"},\"type\":\"c8y_Logfile\",\"text\":\"t\","
           "\"time\":\"2024-01-01T00:00:00.000Z\"}",
           NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 422); /* no such managed object */
  resp_free(&r);
  char *ev =
      g_strdup_printf("{\"source\":{\"id\":\"%ld\"},\"type\":\"c8y_Logfile\","
                      "\"text\":\"t\",\"time\":\"2024-01-01T00:00:00.000Z\"}",
                      sim_device_mo_id(x.s, "dev1"));
  r = call("POST", url, x.basic, "application/json", ev, NULL, NULL, NULL);
  g_free(ev);
  g_assert_cmpint(r.code, ==, 201);
  g_assert_cmpuint(sim_http_event_count(x.h), ==, 1);
  const char *eid = sim_http_event_id(x.h, 0);
  g_assert_nonnull(strstr(r.body->str, eid));
  resp_free(&r);
  /* raw body with its content type */
  char *bin =
      g_strdup_printf("%s/event/events/%s/binaries", sim_http_url(x.h), eid);
  r = call("POST", bin, x.basic, "text/plain", "raw content", NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 201);
  resp_free(&r);
  g_assert_cmpstr(sim_http_event_binary_type(x.h, 0), ==, "text/plain");
  r = call("GET", bin, x.basic, NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 200);
  g_assert_cmpstr(r.body->str, ==, "raw content");
  resp_free(&r);
  /* one binary per event */
  r = call("POST", bin, x.basic, "text/plain", "again", NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 409);
  resp_free(&r);

  /* inventory binaries: multipart create, Range, 416 */
  char *file = g_build_filename(x.dir, "fw.bin", NULL);
  g_assert_true(g_file_set_contents(file, "0123456789", 10, NULL));
  char *inv = u(&x, "/inventory/binaries");
  r = call("POST", inv, x.basic, NULL, NULL, NULL, two_parts, file);
  g_assert_cmpint(r.code, ==, 201);
  const char *self = strstr(r.body->str, "\"self\":\"");
  g_assert_nonnull(self);
  char *loc = g_strndup(self + 8, strcspn(self + 8, "\""));
  resp_free(&r);
  r = call("GET", loc, x.basic, NULL, NULL, "4-", NULL, NULL);
  g_assert_cmpint(r.code, ==, 206);
  g_assert_cmpstr(r.body->str, ==, "456789");
  g_assert_nonnull(strstr(r.headers->str, "bytes 4-9/10"));
  resp_free(&r);
  r = call("GET", loc, x.basic, NULL, NULL, "10-", NULL, NULL);
  g_assert_cmpint(r.code, ==, 416);
  resp_free(&r);
  r = call("GET", loc, x.basic, NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 200);
  g_assert_cmpstr(r.body->str, ==, "0123456789");
  resp_free(&r);
  g_assert_cmpuint(sim_http_range_requests(x.h), ==, 1);

  /* faults: a cut download, a forced status */
  sim_http_cut_downloads(x.h, 1);
  r = call("GET", loc, x.basic, NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, -(long)CURLE_PARTIAL_FILE);
  g_assert_cmpuint(r.body->len, ==, 5);
  resp_free(&r);
  sim_http_fail_requests(x.h, 1, 503);
  r = call("GET", loc, x.basic, NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 503);
  resp_free(&r);
  r = call("GET", loc, x.basic, NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 200);
  resp_free(&r);
  g_free(loc);
  g_free(inv);
  g_free(file);
  g_free(bin);
  g_free(url);
  shx_stop(&x);
}

static void test_open_server(void) {
  shx x = {0};
  shx_start(&x);
  sim_http *open = NULL;
  sim_http_options oo = {.open = true};
  char err[256];
  g_assert_cmpint(sim_http_start(&oo, &open, err, sizeof err), ==, 0);
  char *file = g_build_filename(x.dir, "pub.bin", NULL);
  g_assert_true(g_file_set_contents(file, "public", 6, NULL));
  long id = sim_http_add_binary(open, file);
  char *url =
      g_strdup_printf("%s/inventory/binaries/%ld", sim_http_url(open), id);
  resp r = call("GET", url, NULL, NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 200);
  g_assert_cmpstr(r.body->str, ==, "public");
  resp_free(&r);
  r = call("GET", url, "Bearer leaked", NULL, NULL, NULL, NULL, NULL);
  g_assert_cmpint(r.code, ==, 200);
  resp_free(&r);
  g_assert_cmpuint(sim_http_auth_headers(open), ==, 1);
  sim_http_stop(open);
  g_free(url);
  g_free(file);
  shx_stop(&x);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  g_test_add_func("/sim_http/auth-and-identity", test_auth_and_identity);
  g_test_add_func("/sim_http/events-and-binaries", test_events_and_binaries);
  g_test_add_func("/sim_http/open-server", test_open_server);
  int rc = g_test_run();
  curl_global_cleanup();
  return rc;
}
