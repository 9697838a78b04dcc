/* The local API and its CLI (send, status, ops) and the exec
 * plugin, through the real agent and the simulator. */
#include "fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* More than the longest request the API reads. */
#define LOCALAPI_TEST_BIG 20000

typedef struct lapi {
  fx f;
  char *dir; /* socket, scripts, drop-ins, plugin copy */
  char *sock;
  char *opsdir; /* exec drop-ins */
} lapi;

static void write_file(const char *path, const char *text, mode_t mode) {
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
  g_assert_cmpint(chmod(path, mode), ==, 0);
}

/* A plugin dir holding only the exec plugin, so no other bundled plugin
 * claims the templates the drop-ins use. */
static char *exec_plugin_dir(const char *dir) {
  char *src = g_build_filename(g_getenv("C8Y_PLUGIN_OUT"), "exec.so", NULL);
  char *pdir = g_build_filename(dir, "plugins", NULL);
  g_assert_cmpint(g_mkdir(pdir, 0755), ==, 0);
  char *dst = g_build_filename(pdir, "exec.so", NULL);
  gchar *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(src, &data, &len, NULL));
  g_assert_true(g_file_set_contents(dst, data, (gssize)len, NULL));
  g_assert_cmpint(chmod(dst, 0755), ==, 0);
  g_free(data);
  g_free(src);
  g_free(dst);
  return pdir;
}

/* api_extra: more [api] keys; exec: use the exec plugin. */
static void lapi_up(lapi *l, const char *api_extra, bool exec) {
  l->dir = g_dir_make_tmp("c8y-lapi-XXXXXX", NULL);
  g_assert_nonnull(l->dir);
  /* Other users must reach the socket for the refused-peer test. */
  g_assert_cmpint(chmod(l->dir, 0755), ==, 0);
  l->sock = g_build_filename(l->dir, "api.sock", NULL);
  l->opsdir = g_build_filename(l->dir, "operations.d", NULL);
  g_assert_cmpint(g_mkdir(l->opsdir, 0755), ==, 0);
  char *pdir = exec ? exec_plugin_dir(l->dir) : NULL;
  char *execsec = exec ? g_strdup_printf("[plugin.exec]\ndir = %s\n"
                                         "timeout = 20\n",
                                         l->opsdir)
                       : g_strdup("");
  char *extra = g_strdup_printf("[api]\nsocket = %s\n%s%s", l->sock,
                                api_extra ? api_extra : "", execsec);
  g_free(execsec);
  l->f.plugin_dir = pdir; /* NULL: the itest plugin */
  fx_start_sim(&l->f);
  fx_make_agent(&l->f, "secret", extra);
  g_free(extra);
}

static void lapi_start(lapi *l) {
  fx_start_agent(&l->f);
  if (sim_wait_line(l->f.s, "s/us", "500", 0, 15000) < 0) {
    char *log = agent_proc_log(l->f.a);
    g_error("agent never sent 500; log:\n%s", log);
  }
}

static void lapi_down(lapi *l) {
  fx_down(&l->f);
  char *argv[] = {"rm", "-rf", l->dir, NULL};
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
               NULL, NULL);
  g_free((char *)l->f.plugin_dir);
  g_free(l->dir);
  g_free(l->sock);
  g_free(l->opsdir);
}

static void stdin_from(gpointer data) { dup2(*(int *)data, STDIN_FILENO); }

typedef struct cli_out {
  int status;
  char *out, *err;
} cli_out;

/* Runs `c8y-agent -c <config> args...` with stdin from `in` (nullable). */
static cli_out cli(lapi *l, const char *in, const char *const *args) {
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, (char *)g_getenv("C8Y_AGENT_BIN"));
  g_ptr_array_add(argv, "-c");
  g_ptr_array_add(argv, (char *)agent_proc_config(l->f.a));
  for (size_t i = 0; args[i]; i++)
    g_ptr_array_add(argv, (char *)args[i]);
  g_ptr_array_add(argv, NULL);
  cli_out r = {0};
  GError *e = NULL;
  int fd = -1;
  if (in) {
    char *path = g_build_filename(l->dir, "stdin.txt", NULL);
    write_file(path, in, 0600);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_free(path);
  }
  int wait = 0;
  g_assert_true(g_spawn_sync(
      NULL, (char **)argv->pdata, NULL, in ? 0 : G_SPAWN_STDIN_FROM_DEV_NULL,
      in ? stdin_from : NULL, &fd, &r.out, &r.err, &wait, &e));
  g_assert_no_error(e);
  r.status = WIFEXITED(wait) ? WEXITSTATUS(wait) : 128;
  if (fd >= 0)
    close(fd);
  g_ptr_array_free(argv, TRUE);
  return r;
}

static void cli_free(cli_out *r) {
  g_free(r->out);
  g_free(r->err);
  r->out = r->err = NULL;
}

static void expect_in(const char *what, const char *text, const char *part) {
  if (!text || !strstr(text, part))
    g_error("%s lacks '%s':\n%s", what, part, text ? text : "(null)");
}

static void test_send(void) {
  lapi l = {0};
  lapi_up(&l, NULL, false);
  lapi_start(&l);
  size_t from = sim_message_count(l.f.s);
  cli_out r = cli(&l, NULL,
                  (const char *const[]){"send", "200,c8y_Temp,T,21.5,C",
                                        "400,c8y_Note,\"a, b\"", NULL});
  g_assert_cmpint(r.status, ==, 0);
  expect_in("send stdout", r.out, "queued measurement");
  expect_in("send stdout", r.out, "queued event");
  cli_free(&r);
  g_assert_cmpint(
      sim_wait_line(l.f.s, "s/us", "200,c8y_Temp,T,21.5,C", from, 10000), >=,
      0);
  g_assert_cmpint(
      sim_wait_line(l.f.s, "s/us", "400,c8y_Note,\"a, b\"", from, 10000), >=,
      0);

  /* child devices and custom templates, lines from stdin */
  r = cli(&l, "301,c8y_Hot,too hot\n",
          (const char *const[]){"send", "--child", "kid", NULL});
  g_assert_cmpint(r.status, ==, 0);
  cli_free(&r);
  g_assert_cmpint(
      sim_wait_line(l.f.s, "s/us/kid", "301,c8y_Hot,too hot", from, 10000), >=,
      0);
  r = cli(&l, NULL,
          (const char *const[]){"send", "--custom", "myxid", "m1,x", NULL});
  g_assert_cmpint(r.status, ==, 0);
  cli_free(&r);
  g_assert_cmpint(sim_wait_line(l.f.s, "s/uc/myxid", "m1,x", from, 10000), >=,
                  0);
  /* A service of the device, as a plugin may announce one: the API shares
   * the plugins' path, the registry included. */
  r = cli(&l, NULL,
          (const char *const[]){"send", "102,lapi_svc,script,Script,up", NULL});
  g_assert_cmpint(r.status, ==, 0);
  expect_in("send stdout", r.out, "queued inventory");
  cli_free(&r);
  g_assert_cmpint(sim_wait_line(l.f.s, "s/us", "102,lapi_svc,script,Script,up",
                                from, 10000),
                  >=, 0);

  /* refused lines: exit 1 with the reason, nothing sent */
  const char *bad[][2] = {{"503,c8y_Restart", "5xx"},
                          {"400,\"unterminated", "bad SmartREST line"},
                          {"c8y_Temp,1", "numeric static template id"}};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    r = cli(&l, NULL, (const char *const[]){"send", bad[i][0], NULL});
    g_assert_cmpint(r.status, ==, 1);
    expect_in("refusal", r.err, bad[i][1]);
    cli_free(&r);
  }
  r = cli(&l, NULL,
          (const char *const[]){"send", "--child", "a/b", "200,x,y,1", NULL});
  g_assert_cmpint(r.status, ==, 1);
  expect_in("refusal", r.err, "child id");
  cli_free(&r);
  /* A later line proves the refused ones were not queued before it. */
  r = cli(&l, NULL, (const char *const[]){"send", "400,c8y_Marker,end", NULL});
  g_assert_cmpint(r.status, ==, 0);
  cli_free(&r);
  g_assert_cmpint(
      sim_wait_line(l.f.s, "s/us", "400,c8y_Marker,end", from, 10000), >=, 0);
  g_assert_cmpuint(sim_count_lines(l.f.s, "s/us", "503,c8y_Restart"), ==, 0);
  g_assert_cmpuint(sim_count_lines(l.f.s, "s/us", "c8y_Temp,1"), ==, 0);
  lapi_down(&l);
}

static void test_status(void) {
  lapi l = {0};
  lapi_up(&l, NULL, false);
  lapi_start(&l);
  cli_out r = {0};
  /* the main loop publishes "up" right after the connect */
  for (int i = 0; i < 100; i++) {
    cli_free(&r);
    r = cli(&l, NULL, (const char *const[]){"status", NULL});
    if (r.out && strstr(r.out, "link: up"))
      break;
    g_usleep(50 * 1000);
  }
  g_assert_cmpint(r.status, ==, 0);
  expect_in("status", r.out, "link: up since ");
  expect_in("status", r.out, "queue measurement: ");
  expect_in("status", r.out, "operations running: 0");
  expect_in("status", r.out, "plugin itest ");
  expect_in("status", r.out, "last error: ");
  cli_free(&r);
  r = cli(&l, NULL, (const char *const[]){"status", "--json", NULL});
  g_assert_cmpint(r.status, ==, 0);
  expect_in("status --json", r.out, "\"state\":\"up\"");
  expect_in("status --json", r.out, "\"name\":\"itest\"");
  expect_in("status --json", r.out, "\"operations_running\":0");
  cli_free(&r);

  /* the broker goes away: the link state follows */
  sim_broker_kill(l.f.s);
  for (int i = 0; i < 200; i++) {
    cli_free(&r);
    r = cli(&l, NULL, (const char *const[]){"status", NULL});
    if (r.out && !strstr(r.out, "link: up"))
      break;
    g_usleep(50 * 1000);
  }
  g_assert_null(strstr(r.out, "link: up"));
  expect_in("status after the broker died", r.out, "last error: ");
  cli_free(&r);
  lapi_down(&l);
}

static void test_not_running(void) {
  lapi l = {0};
  lapi_up(&l, NULL, false);
  /* agent configured, never started */
  cli_out r = cli(&l, NULL, (const char *const[]){"status", NULL});
  g_assert_cmpint(r.status, ==, 3);
  expect_in("stderr", r.err, "not running");
  expect_in("stderr", r.err, l.sock);
  cli_free(&r);
  r = cli(&l, NULL, (const char *const[]){"send", "200,a,b,1", NULL});
  g_assert_cmpint(r.status, ==, 3);
  cli_free(&r);
  lapi_down(&l);
}

/* In a child as nobody: one request, the answer's first line. */
static char *request_as(uid_t uid, gid_t gid, const char *sock,
                        const char *req) {
  int p[2];
  g_assert_cmpint(pipe(p), ==, 0);
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    close(p[0]);
    if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0)
      _exit(10);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      dprintf(p[1], "connect: %s", strerror(errno));
      _exit(11);
    }
    (void)!write(fd, req, strlen(req));
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n > 0)
      (void)!write(p[1], buf, (size_t)n);
    _exit(0);
  }
  close(p[1]);
  GString *s = g_string_new(NULL);
  char buf[512];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof buf)) > 0)
    g_string_append_len(s, buf, n);
  close(p[0]);
  int st;
  waitpid(pid, &st, 0);
  g_assert_true(WIFEXITED(st));
  g_assert_cmpint(WEXITSTATUS(st), !=, 10);
  return g_string_free(s, FALSE);
}

static void test_refused_peer(void) {
  if (geteuid() != 0) {
    g_test_skip("needs root to act as another user");
    return;
  }
  lapi l = {0};
  /* The file mode lets anyone connect; the credential check refuses. */
  lapi_up(&l, "mode = 0666\n", false);
  lapi_start(&l);
  char *ans = request_as(65534, 65534, l.sock, "send 400,c8y_Intruder,x\n");
  expect_in("answer to nobody", ans, "error permission denied: uid 65534");
  g_free(ans);
  g_assert_true(agent_proc_wait_log(l.f.a, "refused a client", 5000));
  /* the same user is served (root here) */
  cli_out r =
      cli(&l, NULL, (const char *const[]){"send", "400,c8y_Marker,x", NULL});
  g_assert_cmpint(r.status, ==, 0);
  cli_free(&r);
  g_assert_cmpint(sim_wait_line(l.f.s, "s/us", "400,c8y_Marker,x", 0, 10000),
                  >=, 0);
  g_assert_cmpuint(sim_count_lines(l.f.s, "s/us", "400,c8y_Intruder"), ==, 0);
  lapi_down(&l);
}

static void test_group_admits(void) {
  if (geteuid() != 0) {
    g_test_skip("needs root to act as another user");
    return;
  }
  struct group *g = getgrgid(65534);
  if (!g) {
    g_test_skip("no group 65534");
    return;
  }
  lapi l = {0};
  char *extra = g_strdup_printf("group = %s\n", g->gr_name);
  lapi_up(&l, extra, false);
  g_free(extra);
  lapi_start(&l);
  struct stat st;
  g_assert_cmpint(stat(l.sock, &st), ==, 0);
  g_assert_cmpuint(st.st_gid, ==, 65534);
  g_assert_cmpuint(st.st_mode & 0777, ==, 0660);
  char *ans = request_as(65534, 65534, l.sock, "send 400,c8y_Member,x\n");
  expect_in("answer to a group member", ans, "ok queued event");
  g_free(ans);
  g_assert_cmpint(sim_wait_line(l.f.s, "s/us", "400,c8y_Member,x", 0, 10000),
                  >=, 0);
  lapi_down(&l);
}

static void test_bad_requests(void) {
  lapi l = {0};
  lapi_up(&l, NULL, false);
  lapi_start(&l);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", l.sock);
  g_assert_cmpint(connect(fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  /* pipelined: every line gets its answer, in order */
  const char *req = "bogus\nsend\nhelp\r\nsend 200,a,b,1\n";
  g_assert_cmpint(write(fd, req, strlen(req)), ==, (ssize_t)strlen(req));
  GString *s = g_string_new(NULL);
  char buf[4096];
  while (!strstr(s->str, "queued measurement")) {
    ssize_t n = read(fd, buf, sizeof buf);
    g_assert_cmpint(n, >, 0);
    g_string_append_len(s, buf, n);
  }
  gchar **lines = g_strsplit(s->str, "\n", -1);
  g_assert_true(g_str_has_prefix(lines[0], "error unknown command 'bogus'"));
  g_assert_true(g_str_has_prefix(lines[1], "error no SmartREST line"));
  g_assert_cmpstr(lines[2], ==, "ok 5");
  g_assert_cmpstr(lines[8], ==, "ok queued measurement");
  g_strfreev(lines);
  /* an endless line is refused and the connection closed */
  char *big = g_malloc(LOCALAPI_TEST_BIG);
  memset(big, 'x', LOCALAPI_TEST_BIG);
  g_string_truncate(s, 0);
  ssize_t off = 0;
  while (off < LOCALAPI_TEST_BIG) {
    ssize_t n = write(fd, big + off, (size_t)(LOCALAPI_TEST_BIG - off));
    if (n <= 0)
      break;
    off += n;
  }
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0)
    g_string_append_len(s, buf, n);
  expect_in("answer to a long line", s->str, "error request line too long");
  g_free(big);
  g_string_free(s, TRUE);
  close(fd);
  /* the agent is still fine */
  cli_out r = cli(&l, NULL, (const char *const[]){"status", NULL});
  g_assert_cmpint(r.status, ==, 0);
  cli_free(&r);
  lapi_down(&l);
}

static void test_exec_operations(void) {
  lapi l = {0};
  lapi_up(&l, NULL, true);
  char *script = g_build_filename(l.dir, "cmd.sh", NULL);
  write_file(script,
             "#!/bin/sh\n"
             "echo \"args:$#:$1\"\n"
             "echo \"env:$C8Y_OP_TEMPLATE:$C8Y_OP_FRAGMENT:$C8Y_OP_DEVICE:"
             "$C8Y_OP_FIELD_COUNT:$C8Y_OP_FIELD_1\"\n",
             0755);
  char *fails = g_build_filename(l.dir, "fails.sh", NULL);
  write_file(fails,
             "#!/bin/sh\necho some output\necho \"no relay $2\" >&2\n"
             "exit 4\n",
             0755);
  char *ini =
      g_strdup_printf("[operation]\ntemplate = 511\ncommand = %s\n", script);
  char *p511 = g_build_filename(l.opsdir, "command.ini", NULL);
  write_file(p511, ini, 0644);
  g_free(ini);
  ini = g_strdup_printf("template = 519\ncommand = %s\ntimeout = 5\n", fails);
  char *p519 = g_build_filename(l.opsdir, "relays.ini", NULL);
  write_file(p519, ini, 0644);
  g_free(ini);
  char *pbad = g_build_filename(l.opsdir, "bad.ini", NULL);
  write_file(pbad, "template = 518\nbogus = 1\n", 0644);
  lapi_start(&l);

  long at = sim_wait_line(l.f.s, "s/us", "114,", 0, 10000);
  g_assert_cmpint(at, >=, 0);
  const char *ops = sim_message_at(l.f.s, (size_t)at)->payload;
  expect_in("114", ops, "c8y_Command");
  expect_in("114", ops, "c8y_RelayArray");
  g_assert_null(strstr(ops, "c8y_Relay,"));
  g_assert_true(
      agent_proc_wait_log(l.f.a, "bad.ini:2: unknown key 'bogus'", 5000));

  long ok = sim_create_operation(l.f.s, "511," FX_DEVICE ",\"hello world\"");
  g_assert_cmpint(fx_wait_op(&l.f, ok, 20000), ==, SIM_OP_SUCCESSFUL);
  const char *detail = sim_operation_detail(l.f.s, ok);
  expect_in("503", detail, "args:1:hello world");
  expect_in("503", detail, "env:511:c8y_Command:" FX_DEVICE ":1:hello world");

  long bad = sim_create_operation(l.f.s, "519," FX_DEVICE ",OPEN,CLOSED");
  g_assert_cmpint(fx_wait_op(&l.f, bad, 20000), ==, SIM_OP_FAILED);
  detail = sim_operation_detail(l.f.s, bad);
  expect_in("502", detail, "4");
  expect_in("502", detail, "no relay CLOSED");
  g_assert_null(strstr(detail, "some output"));

  /* ops shows both outcomes */
  cli_out r = cli(&l, NULL, (const char *const[]){"ops", NULL});
  g_assert_cmpint(r.status, ==, 0);
  expect_in("ops", r.out, "c8y_Command (511) on " FX_DEVICE ": successful");
  expect_in("ops", r.out, "c8y_RelayArray (519) on " FX_DEVICE ": failed: ");
  expect_in("ops", r.out, "no relay CLOSED");
  cli_free(&r);
  r = cli(&l, NULL, (const char *const[]){"ops", "--json", NULL});
  g_assert_cmpint(r.status, ==, 0);
  expect_in("ops --json", r.out, "\"outcome\":\"failed\"");
  expect_in("ops --json", r.out, "\"fragment\":\"c8y_Command\"");
  cli_free(&r);

  /* SIGHUP: the fixed file is picked up, a removed one is gone */
  ini = g_strdup_printf("template = 518\ncommand = %s\n", script);
  write_file(pbad, ini, 0644);
  g_free(ini);
  g_unlink(p519);
  size_t from = sim_message_count(l.f.s);
  g_assert_cmpint(agent_proc_signal(l.f.a, SIGHUP), ==, 0);
  at = sim_wait_line(l.f.s, "s/us", "114,", from, 10000);
  g_assert_cmpint(at, >=, 0);
  ops = sim_message_at(l.f.s, (size_t)at)->payload;
  expect_in("114 after reload", ops, "c8y_Relay");
  g_assert_null(strstr(ops, "c8y_RelayArray"));
  long relay = sim_create_operation(l.f.s, "518," FX_DEVICE ",OPEN");
  g_assert_cmpint(fx_wait_op(&l.f, relay, 20000), ==, SIM_OP_SUCCESSFUL);
  expect_in("503", sim_operation_detail(l.f.s, relay), "env:518:c8y_Relay:");

  g_free(script);
  g_free(fails);
  g_free(p511);
  g_free(p519);
  g_free(pbad);
  lapi_down(&l);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/localapi/send", test_send);
  g_test_add_func("/localapi/status", test_status);
  g_test_add_func("/localapi/not-running", test_not_running);
  g_test_add_func("/localapi/refused-peer", test_refused_peer);
  g_test_add_func("/localapi/group-admits", test_group_admits);
  g_test_add_func("/localapi/bad-requests", test_bad_requests);
  g_test_add_func("/localapi/exec-operations", test_exec_operations);
  return g_test_run();
}
