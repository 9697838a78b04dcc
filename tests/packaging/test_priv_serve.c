/* c8y-agent-priv --serve as c8y-agent-priv.socket runs it: the connection
 * on stdin/stdout. Checks the helper as a security boundary: who may ask
 * (uid and the agent unit's cgroup, never a group), how long a silent
 * client may hold a connection, what a request may look like, and how a
 * package file is opened (no symbolic links, a copy in root's directory).
 * Always a dry run: nothing is installed. Peer checks with another uid need
 * root (setuid in the client); without root those cases are skipped. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *helper;
static char *tmp;
static char own_cgroup[512];

typedef struct client_spec {
  uid_t uid; /* (uid_t)-1: stay */
  gid_t gid;
  const char *send; /* NULL: send nothing, keep the connection open */
} client_spec;

typedef struct reply {
  char *text;
  int status; /* from "=c8y-agent-priv status N", -1 if missing */
  double seconds;
} reply;

static void reply_free(reply *r) { g_free(r->text); }

/* Runs one connection: a client process (possibly another uid) connects
 * to a socket of ours and sends `send`; the accepted end becomes the
 * helper's stdin/stdout as under systemd. The client writes what it
 * receives into a file, read after both ended. */
static reply ask(const client_spec *cs, const char *const *env) {
  char *file = g_build_filename(tmp, "reply", NULL);
  unlink(file);
  char *path = g_build_filename(tmp, "sock", NULL);
  unlink(path);
  int ls = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, path);
  g_assert_cmpint(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
  chmod(path, 0666);
  chmod(tmp, 0755);
  g_assert_cmpint(listen(ls, 1), ==, 0);
  int fd_out = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  g_assert_cmpint(fd_out, >=, 0);
  fchmod(fd_out, 0666);
  pid_t cl = fork();
  g_assert_cmpint(cl, >=, 0);
  if (cl == 0) {
    close(ls);
    if (cs->uid != (uid_t)-1) {
      gid_t g = cs->gid;
      if (setgroups(1, &g) != 0 || setgid(cs->gid) != 0 || setuid(cs->uid) != 0)
        _exit(3);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
      _exit(4);
    if (cs->send && write(fd, cs->send, strlen(cs->send)) < 0)
      _exit(5);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
      if (write(fd_out, buf, (size_t)n) != n)
        _exit(6);
    _exit(0);
  }
  close(fd_out);
  int conn = accept(ls, NULL, NULL);
  g_assert_cmpint(conn, >=, 0);
  close(ls);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t h = fork();
  g_assert_cmpint(h, >=, 0);
  if (h == 0) {
    dup2(conn, 0);
    dup2(conn, 1);
    char *argv[] = {helper, "--serve", NULL};
    execve(helper, argv, (char *const *)env);
    _exit(127);
  }
  close(conn);
  int st = 0;
  for (int i = 0;; i++) {
    if (waitpid(h, &st, WNOHANG) == h)
      break;
    if (i == 3000) {
      kill(h, SIGKILL);
      waitpid(h, &st, 0);
      kill(cl, SIGKILL);
      waitpid(cl, NULL, 0);
      g_error("the helper did not end within 30 s");
    }
    g_usleep(10000);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  int cst = 0;
  waitpid(cl, &cst, 0);
  g_assert_true(WIFEXITED(cst));
  g_assert_cmpint(WEXITSTATUS(cst), ==, 0);
  reply r = {.status = -1,
             .seconds = (double)(t1.tv_sec - t0.tv_sec) +
                        (double)(t1.tv_nsec - t0.tv_nsec) / 1e9};
  g_assert_true(g_file_get_contents(file, &r.text, NULL, NULL));
  const char *st_line = g_strrstr(r.text, "=c8y-agent-priv status ");
  if (st_line && (st_line == r.text || st_line[-1] == '\n'))
    r.status = atoi(st_line + strlen("=c8y-agent-priv status "));
  g_test_message("reply (%.2f s): %s", r.seconds, r.text);
  g_free(file);
  g_free(path);
  return r;
}

/* The helper's environment: dry run, this test's directories, and the
 * agent's "unit" given as `cgroup`. */
static const char *const *env_for(const char *cgroup, const char *user) {
  static char e[8][700];
  static const char *env[9];
  snprintf(e[0], sizeof(e[0]), "C8Y_PRIV_DRY_RUN=1");
  snprintf(e[1], sizeof(e[1]), "C8Y_PRIV_PM=apt");
  snprintf(e[2], sizeof(e[2]), "C8Y_PRIV_STATEDIR=%s/state", tmp);
  snprintf(e[3], sizeof(e[3]), "C8Y_PRIV_HOME=%s/home", tmp);
  snprintf(e[4], sizeof(e[4]), "C8Y_PRIV_CGROUP=%s", cgroup);
  snprintf(e[5], sizeof(e[5]), "C8Y_PRIV_USER=%s", user);
  snprintf(e[6], sizeof(e[6]), "C8Y_PRIV_READ_TIMEOUT_MS=500");
  snprintf(e[7], sizeof(e[7]),
           "C8Y_PRIV_DRY_PACKAGES=nginx=1.2-1 g++=4:12.2.0-3");
  for (int i = 0; i < 8; i++)
    env[i] = e[i];
  env[8] = NULL;
  return env;
}

static client_spec me(const char *send) {
  return (client_spec){.uid = (uid_t)-1, .send = send};
}

static void test_agent_unit_accepted(void) {
  client_spec cs = me("install nginx\n");
  reply r = ask(&cs, env_for(own_cgroup, "c8y-agent"));
  g_assert_cmpint(r.status, ==, 0);
  g_assert_nonnull(strstr(r.text, "would run: apt-get install"));
  g_assert_nonnull(strstr(r.text, "-- nginx=1.2-1\n"));
  reply_free(&r);
}

/* Today's main admitted anyone who could open the socket (the c8y-agent
 * group, which operators join for the local API). */
static void test_other_unit_refused(void) {
  client_spec cs = me("install nginx\n");
  reply r = ask(&cs, env_for("/system.slice/c8y-agent.service", "c8y-agent"));
  g_assert_cmpint(r.status, ==, 2);
  g_assert_nonnull(strstr(r.text, "refused: "));
  g_assert_nonnull(strstr(r.text, "is not in c8y-agent.service"));
  g_assert_null(strstr(r.text, "would run"));
  reply_free(&r);
}

static void test_other_uid_refused(void) {
  if (geteuid() != 0) {
    g_test_skip("needs root to connect as another user");
    return;
  }
  /* getpwnam's result is static: copy it before the next call. */
  struct passwd *pw = getpwnam("nobody");
  struct passwd nobody = pw ? *pw : (struct passwd){0};
  pw = getpwnam("daemon");
  struct passwd daemon_pw = pw ? *pw : (struct passwd){0};
  if (!nobody.pw_uid || !daemon_pw.pw_uid) {
    g_test_skip("no users nobody/daemon");
    return;
  }
  /* The agent's user (here: nobody) is admitted ... */
  client_spec ok = {nobody.pw_uid, nobody.pw_gid, "install nginx\n"};
  reply r = ask(&ok, env_for(own_cgroup, "nobody"));
  g_assert_cmpint(r.status, ==, 0);
  reply_free(&r);
  /* ... an operator in the agent's group is not, whatever its groups. */
  client_spec op = {daemon_pw.pw_uid, nobody.pw_gid, "install nginx\n"};
  r = ask(&op, env_for(own_cgroup, "nobody"));
  g_assert_cmpint(r.status, ==, 2);
  g_assert_nonnull(strstr(r.text, "is neither root nor nobody"));
  g_assert_null(strstr(r.text, "would run"));
  reply_free(&r);
}

/* A client that says nothing is dropped after the read timeout (500 ms
 * here, 10 s by default), not held for hours. */
static void test_silent_client_dropped(void) {
  client_spec cs = me(NULL);
  reply r = ask(&cs, env_for(own_cgroup, "c8y-agent"));
  g_assert_cmpint(r.status, ==, 2);
  g_assert_nonnull(strstr(r.text, "no complete request within 500 ms"));
  g_assert_cmpfloat(r.seconds, <, 10.0);
  reply_free(&r);
  client_spec half = me("install ngi");
  r = ask(&half, env_for(own_cgroup, "c8y-agent"));
  /* The client closed without a line end: refused at once. */
  g_assert_cmpint(r.status, ==, 2);
  reply_free(&r);
}

static void expect_refused(const char *req, const char *why) {
  client_spec cs = me(req);
  reply r = ask(&cs, env_for(own_cgroup, "c8y-agent"));
  if (r.status != 2 || strstr(r.text, "would run") ||
      (why && !strstr(r.text, why)))
    g_error("request '%s' was not refused (%s): %s", req, why ? why : "",
            r.text);
  reply_free(&r);
}

static void test_requests_refused(void) {
  expect_refused("install\tnginx\n", "control");
  expect_refused("install  nginx\n", "empty word");
  expect_refused("install nginx \n", "blank");
  expect_refused("install nginx 1 2 3\n", "more than");
  expect_refused("frobnicate\n", "unknown verb");
  expect_refused("reboot now\n", "usage: reboot");
  char *long_req = g_strnfill(2000, 'a');
  char *line = g_strdup_printf("install %s\n", long_req);
  expect_refused(line, "longer than");
  g_free(line);
  g_free(long_req);
  /* What apt would read as something else than one package. */
  const char *names[] = {"-o",   "-oAPT::x=1", "nginx*", "ngin?", "~nginx",
                         "^ngx", "ng[i]nx",    "n",      "NGINX", "a/b",
                         "a=1",  "$(id)",      "a;b",    "..",    ".nginx",
                         "+a",   "a|b",        "é"};
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
    char *req = g_strdup_printf("install %s\n", names[i]);
    expect_refused(req, NULL);
    g_free(req);
    req = g_strdup_printf("remove %s\n", names[i]);
    expect_refused(req, NULL);
    g_free(req);
  }
  const char *versions[] = {"1.0-", "1.0+", "-1", "1;id", "a1", "1/2"};
  for (size_t i = 0; i < G_N_ELEMENTS(versions); i++) {
    char *req = g_strdup_printf("install nginx %s\n", versions[i]);
    expect_refused(req, "refused version");
    g_free(req);
  }
}

/* A name apt does not know exactly is never passed on (it would read
 * "ngin." as a regular expression); a known one with '+' goes as
 * name=version, which apt cannot misread. */
static void test_exact_names(void) {
  client_spec cs = me("install ngin.\n");
  reply r = ask(&cs, env_for(own_cgroup, "c8y-agent"));
  g_assert_cmpint(r.status, !=, 0);
  g_assert_null(strstr(r.text, "would run"));
  reply_free(&r);
  cs = me("install g++\n");
  r = ask(&cs, env_for(own_cgroup, "c8y-agent"));
  g_assert_cmpint(r.status, ==, 0);
  g_assert_nonnull(strstr(r.text, "-- g++=4:12.2.0-3\n"));
  reply_free(&r);
}

static void test_package_file(void) {
  char *sw = g_build_filename(tmp, "state", "plugins", "software", NULL);
  char *elsewhere = g_build_filename(tmp, "elsewhere", NULL);
  g_assert_cmpint(g_mkdir_with_parents(sw, 0755), ==, 0);
  g_assert_cmpint(g_mkdir_with_parents(elsewhere, 0755), ==, 0);
  char *good = g_build_filename(sw, "pkg-1-nginx.deb", NULL);
  g_assert_true(g_file_set_contents(good, "not really a deb", -1, NULL));
  char *target = g_build_filename(elsewhere, "x.deb", NULL);
  g_assert_true(g_file_set_contents(target, "x", -1, NULL));
  char *link = g_build_filename(sw, "link.deb", NULL);
  unlink(link);
  g_assert_cmpint(symlink(target, link), ==, 0);

  char *req = g_strdup_printf("install-file %s\n", good);
  client_spec cs = me(req);
  reply r = ask(&cs, env_for(own_cgroup, "c8y-agent"));
  g_assert_cmpint(r.status, ==, 0);
  /* The copy is installed, not the agent's file. */
  char *copy = g_build_filename(tmp, "home", "work", "install.deb", NULL);
  char *want = g_strdup_printf("would run: dpkg --force-confdef "
                               "--force-confold -i -- %s\n",
                               copy);
  g_assert_nonnull(strstr(r.text, want));
  reply_free(&r);
  g_free(req);

  req = g_strdup_printf("install-file %s\n", link);
  expect_refused(req, "symbolic link");
  g_free(req);
  req = g_strdup_printf("install-file %s/../../elsewhere/x.deb\n", sw);
  expect_refused(req, "must be a .deb file directly in");
  g_free(req);
  expect_refused("install-file /etc/passwd\n", "must be a .deb file");
  /* A symbolic link in the middle of the path: plugins -> elsewhere. */
  char *plugins = g_build_filename(tmp, "state", "plugins", NULL);
  char *moved = g_build_filename(tmp, "state", "plugins.real", NULL);
  g_assert_cmpint(rename(plugins, moved), ==, 0);
  g_assert_cmpint(symlink(moved, plugins), ==, 0);
  req = g_strdup_printf("install-file %s\n", good);
  expect_refused(req, "symbolic link");
  g_free(req);
  unlink(plugins);
  g_assert_cmpint(rename(moved, plugins), ==, 0);

  g_free(plugins);
  g_free(moved);
  g_free(copy);
  g_free(want);
  g_free(sw);
  g_free(elsewhere);
  g_free(good);
  g_free(target);
  g_free(link);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  helper = g_strdup(g_getenv("C8Y_PRIV_HELPER"));
  if (!helper || access(helper, X_OK) != 0) {
    printf("1..0 # SKIP C8Y_PRIV_HELPER not set or not executable\n");
    return 77;
  }
  tmp = g_dir_make_tmp("priv-serve-XXXXXX", NULL);
  g_assert_nonnull(tmp);
  chmod(tmp, 0755);
  /* This process's cgroup stands for the agent's unit where it is
   * admitted. */
  char *cg = NULL;
  g_assert_true(g_file_get_contents("/proc/self/cgroup", &cg, NULL, NULL));
  const char *l = strstr(cg, "0::");
  if (l && (l == cg || l[-1] == '\n'))
    l += 3;
  else if ((l = strstr(cg, ":name=systemd:")))
    l += strlen(":name=systemd:");
  g_assert_nonnull(l);
  snprintf(own_cgroup, sizeof(own_cgroup), "%.*s", (int)strcspn(l, "\n"), l);
  g_free(cg);
  g_test_add_func("/priv/agent_unit_accepted", test_agent_unit_accepted);
  g_test_add_func("/priv/other_unit_refused", test_other_unit_refused);
  g_test_add_func("/priv/other_uid_refused", test_other_uid_refused);
  g_test_add_func("/priv/silent_client_dropped", test_silent_client_dropped);
  g_test_add_func("/priv/requests_refused", test_requests_refused);
  g_test_add_func("/priv/exact_names", test_exact_names);
  g_test_add_func("/priv/package_file", test_package_file);
  int rc = g_test_run();
  char *argv_rm[] = {"rm", "-rf", tmp, NULL};
  g_spawn_sync(NULL, argv_rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
               NULL, NULL);
  return rc;
}
