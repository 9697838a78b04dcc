/* The local API's request parser: what a script may send and the reason
 * it gets for what it may not. */
#include "localapi.h"

#include <glib.h>
#include <string.h>

static localapi_request parse_ok(const char *line) {
  localapi_request r;
  char err[300] = "";
  if (localapi_parse(line, &r, err, sizeof err) != 0)
    g_error("'%s' refused: %s", line, err);
  return r;
}

static char *parse_err(const char *line) {
  localapi_request r;
  char err[300] = "";
  g_assert_cmpint(localapi_parse(line, &r, err, sizeof err), ==, C8Y_EINVAL);
  g_assert_null(r.fields);
  g_assert_null(r.child);
  g_assert_null(r.xid);
  g_assert_cmpstr(err, !=, "");
  return g_strdup(err);
}

static void test_send(void) {
  localapi_request r = parse_ok("send 200,c8y_Temp,T,21.5,C");
  g_assert_cmpint(r.cmd, ==, LOCALAPI_SEND);
  g_assert_null(r.child);
  g_assert_cmpuint(r.nfields, ==, 5);
  g_assert_cmpstr(r.fields[0], ==, "200");
  g_assert_cmpstr(r.fields[3], ==, "21.5");
  localapi_request_free(&r);

  /* Quoted fields keep commas, blanks and doubled quotes. */
  r = parse_ok("  send   400,c8y_Evt,\"hello, \"\"world\"\"\"  ");
  g_assert_cmpuint(r.nfields, ==, 3);
  g_assert_cmpstr(r.fields[2], ==, "hello, \"world\"");
  localapi_request_free(&r);

  r = parse_ok("send --child pump-7 301,c8y_Overheat,hot");
  g_assert_cmpstr(r.child, ==, "pump-7");
  g_assert_cmpstr(r.fields[0], ==, "301");
  localapi_request_free(&r);
}

static void test_custom(void) {
  localapi_request r = parse_ok("custom myxid m1,a,b");
  g_assert_cmpint(r.cmd, ==, LOCALAPI_CUSTOM);
  g_assert_cmpstr(r.xid, ==, "myxid");
  g_assert_null(r.child);
  g_assert_cmpuint(r.nfields, ==, 3);
  localapi_request_free(&r);
  r = parse_ok("custom myxid --child kid m1");
  g_assert_cmpstr(r.child, ==, "kid");
  g_assert_cmpstr(r.fields[0], ==, "m1");
  localapi_request_free(&r);
}

static void test_queries(void) {
  localapi_request r = parse_ok("status");
  g_assert_cmpint(r.cmd, ==, LOCALAPI_STATUS);
  g_assert_false(r.json);
  r = parse_ok("status json");
  g_assert_true(r.json);
  r = parse_ok("ops");
  g_assert_cmpint(r.cmd, ==, LOCALAPI_OPS);
  g_assert_false(r.json);
  r = parse_ok("ops json");
  g_assert_true(r.json);
  r = parse_ok("help");
  g_assert_cmpint(r.cmd, ==, LOCALAPI_HELP);
}

static void expect(const char *line, const char *part) {
  char *err = parse_err(line);
  if (!strstr(err, part))
    g_error("'%s': reason '%s' lacks '%s'", line, err, part);
  g_free(err);
}

static void test_refused(void) {
  expect("", "unknown command");
  expect("sendx 200,a", "unknown command 'sendx'");
  expect("send", "no SmartREST line");
  expect("send   ", "no SmartREST line");
  expect("send --child", "--child needs");
  expect("send --child kid", "no SmartREST line");
  expect("send 400,\"unterminated", "bad SmartREST line");
  expect("send 400,\"a\"b", "bad SmartREST line");
  expect("custom", "XID");
  expect("custom --child kid m1", "XID");
  expect("custom xid", "no SmartREST line");
  expect("status verbose", "status takes no argument");
  expect("ops json extra", "ops takes no argument");
  /* "statusjson" is not "status json" */
  expect("statusjson", "unknown command");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/localapi/parse/send", test_send);
  g_test_add_func("/localapi/parse/custom", test_custom);
  g_test_add_func("/localapi/parse/queries", test_queries);
  g_test_add_func("/localapi/parse/refused", test_refused);
  return g_test_run();
}
