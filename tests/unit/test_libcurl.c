/* libcurl loaded on first use: nothing of it is mapped before the first
 * call, and the forwarders pass every kind of option argument (long,
 * pointer, function pointer, curl_off_t) through to the real library. */
#include "libcurl.h"

#include <curl/curl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

static bool maps_libcurl(void) {
  gchar *maps = NULL;
  g_assert_true(g_file_get_contents("/proc/self/maps", &maps, NULL, NULL));
  bool found = strstr(maps, "/libcurl") != NULL;
  g_free(maps);
  return found;
}

typedef struct sink {
  GString *body;
} sink;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  sink *s = ud;
  g_string_append_len(s->body, p, (gssize)(size * n));
  return size * n;
}

static int locks;

static void on_lock(CURL *c, curl_lock_data d, curl_lock_access a, void *ud) {
  (void)c;
  (void)d;
  (void)a;
  g_assert_true(ud == &locks);
  locks++;
}

static void on_unlock(CURL *c, curl_lock_data d, void *ud) {
  (void)c;
  (void)d;
  (void)ud;
}

static void test_loaded_on_first_call(void) {
  g_assert_false(libcurl_loaded());
  g_assert_false(maps_libcurl());
  g_assert_cmpstr(libcurl_error(), ==, "");

  char *dir = g_dir_make_tmp("c8y-libcurl-XXXXXX", NULL);
  char *path = g_build_filename(dir, "f.txt", NULL);
  g_assert_true(g_file_set_contents(path, "hello, file", -1, NULL));
  char *url = g_strdup_printf("file://%s", path);

  CURL *c = curl_easy_init();
  g_assert_nonnull(c);
  g_assert_true(libcurl_loaded());
  g_assert_true(maps_libcurl());

  CURLSH *sh = curl_share_init();
  g_assert_nonnull(sh);
  g_assert_cmpint(curl_share_setopt(sh, CURLSHOPT_LOCKFUNC, on_lock), ==,
                  CURLSHE_OK);
  g_assert_cmpint(curl_share_setopt(sh, CURLSHOPT_UNLOCKFUNC, on_unlock), ==,
                  CURLSHE_OK);
  g_assert_cmpint(curl_share_setopt(sh, CURLSHOPT_USERDATA, &locks), ==,
                  CURLSHE_OK);
  g_assert_cmpint(curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS),
                  ==, CURLSHE_OK);

  sink s = {g_string_new(NULL)};
  char errbuf[CURL_ERROR_SIZE] = "";
  g_assert_cmpint(curl_easy_setopt(c, CURLOPT_URL, url), ==, CURLE_OK);
  g_assert_cmpint(curl_easy_setopt(c, CURLOPT_SHARE, sh), ==, CURLE_OK);
  g_assert_cmpint(curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L), ==, CURLE_OK);
  g_assert_cmpint(curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body), ==,
                  CURLE_OK);
  g_assert_cmpint(curl_easy_setopt(c, CURLOPT_WRITEDATA, &s), ==, CURLE_OK);
  g_assert_cmpint(curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf), ==,
                  CURLE_OK);
  g_assert_cmpint(
      curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)1 << 20), ==,
      CURLE_OK);
  g_assert_cmpint(curl_easy_perform(c), ==, CURLE_OK);
  g_assert_cmpstr(s.body->str, ==, "hello, file");
  curl_off_t got = 0;
  g_assert_cmpint(curl_easy_getinfo(c, CURLINFO_SIZE_DOWNLOAD_T, &got), ==,
                  CURLE_OK);
  g_assert_cmpint(got, ==, 11);
  g_assert_cmpint(locks, >, 0); /* the share called back through the table */

  /* An offset passed as curl_off_t arrives intact: the rest from byte 7. */
  g_string_truncate(s.body, 0);
  g_assert_cmpint(curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)7),
                  ==, CURLE_OK);
  g_assert_cmpint(curl_easy_perform(c), ==, CURLE_OK);
  g_assert_cmpstr(s.body->str, ==, "file");
  g_assert_nonnull(strstr(curl_easy_strerror(CURLE_FILESIZE_EXCEEDED), "size"));

  char *esc = curl_easy_escape(c, "a b/c", 0);
  g_assert_cmpstr(esc, ==, "a%20b%2Fc");
  curl_free(esc);
  struct curl_slist *h = curl_slist_append(NULL, "X-A: 1");
  g_assert_nonnull(h);
  curl_slist_free_all(h);
  curl_mime *m = curl_mime_init(c);
  curl_mimepart *part = curl_mime_addpart(m);
  g_assert_cmpint(curl_mime_name(part, "object"), ==, CURLE_OK);
  g_assert_cmpint(curl_mime_type(part, "text/plain"), ==, CURLE_OK);
  g_assert_cmpint(curl_mime_filedata(part, path), ==, CURLE_OK);
  g_assert_cmpint(curl_mime_filename(part, "f.txt"), ==, CURLE_OK);
  curl_mime_free(m);

  curl_easy_cleanup(c);
  g_assert_cmpint(curl_share_cleanup(sh), ==, CURLSHE_OK);
  g_string_free(s.body, TRUE);
  g_unlink(path);
  g_rmdir(dir);
  g_free(url);
  g_free(path);
  g_free(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/libcurl/loaded-on-first-call", test_loaded_on_first_call);
  return g_test_run();
}
