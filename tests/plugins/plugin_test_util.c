#include "plugin_test_util.h"

#include <glib/gstdio.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

char *ptu_make_tmpdir(const char *prefix) {
  GError *err = NULL;
  char *tmpl = g_strdup_printf("%s-XXXXXX", prefix);
  char *dir = g_dir_make_tmp(tmpl, &err);
  g_assert_no_error(err);
  g_free(tmpl);
  return dir;
}

void ptu_rm_rf(const char *path) {
  GDir *d = g_dir_open(path, 0, NULL);
  if (d) {
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL) {
      char *p = g_build_filename(path, name, NULL);
      ptu_rm_rf(p);
      g_free(p);
    }
    g_dir_close(d);
    g_rmdir(path);
  } else {
    g_unlink(path);
  }
}

void ptu_write_text(const char *path, const char *text) {
  GError *err = NULL;
  g_file_set_contents(path, text, -1, &err);
  g_assert_no_error(err);
}

char *ptu_read_text(const char *path) {
  char *text = NULL;
  GError *err = NULL;
  g_file_get_contents(path, &text, NULL, &err);
  g_assert_no_error(err);
  return text;
}

char *ptu_sh_script(const char *dir, const char *name, const char *body) {
  char *path = g_build_filename(dir, name, NULL);
  ptu_write_text(path, body);
  char *cmd = g_strdup_printf("sh '%s'", path);
  g_free(path);
  return cmd;
}

gboolean ptu_wait_until(gboolean (*done)(const void *ctx), const void *ctx,
                        int timeout_ms) {
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  while (!done(ctx)) {
    if (g_get_monotonic_time() >= end)
      return done(ctx);
    g_usleep(10 * 1000);
  }
  return TRUE;
}

static gboolean file_exists(const void *path) {
  return g_file_test(path, G_FILE_TEST_EXISTS);
}

gboolean ptu_wait_file(const char *path, int timeout_ms) {
  return ptu_wait_until(file_exists, path, timeout_ms);
}

char *ptu_read_text_or_empty(const char *path) {
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    text = g_strdup("");
  return text;
}

char *ptu_install_script(const char *dir, const char *subdir, const char *name,
                         const char *as) {
  char *src = ptu_read_text(
      g_test_get_filename(G_TEST_DIST, "data", subdir, name, NULL));
  char *dst = g_build_filename(dir, as, NULL);
  ptu_write_text(dst, src);
  g_assert_cmpint(g_chmod(dst, 0755), ==, 0);
  g_free(src);
  return dst;
}

struct ptu_priv {
  int lfd;
  pthread_t thread;
  atomic_bool stop;
  char *path, *helper, *statedir, *reply, *errlog;
};

static void priv_canned(ptu_priv *p, int c) {
  char req[2048];
  size_t n = 0;
  /* The client half-closes after its line. */
  for (;;) {
    struct pollfd pfd = {c, POLLIN, 0};
    if (poll(&pfd, 1, 5000) <= 0)
      break;
    ssize_t got = read(c, req + n, sizeof(req) - 1 - n);
    if (got <= 0)
      break;
    n += (size_t)got;
    if (n == sizeof(req) - 1)
      break;
  }
  req[n] = '\0';
  FILE *f = fopen(p->errlog, "a");
  g_assert_nonnull(f);
  fputs(req, f);
  fclose(f);
  g_assert_cmpint(write(c, p->reply, strlen(p->reply)), ==,
                  (ssize_t)strlen(p->reply));
}

/* This process's cgroup: the helper admits only the agent unit's, and the
 * plugin under test runs here. */
static char *own_cgroup(void) {
  char *cg = NULL;
  g_assert_true(g_file_get_contents("/proc/self/cgroup", &cg, NULL, NULL));
  const char *l = strstr(cg, "0::");
  if (l && (l == cg || l[-1] == '\n'))
    l += 3;
  else if ((l = strstr(cg, ":name=systemd:")))
    l += strlen(":name=systemd:");
  g_assert_nonnull(l);
  char *r = g_strndup(l, strcspn(l, "\n"));
  g_free(cg);
  return r;
}

static void priv_exec(ptu_priv *p, int c) {
  char *cg = own_cgroup();
  char *envp[] = {
      g_strdup("C8Y_PRIV_DRY_RUN=1"), g_strdup("C8Y_PRIV_PM=apt"),
      g_strdup_printf("C8Y_PRIV_STATEDIR=%s", p->statedir),
      g_strdup_printf("C8Y_PRIV_HOME=%s-priv", p->statedir),
      g_strdup_printf("C8Y_PRIV_CGROUP=%s", cg),
      /* The dry run's "repository" and installed packages (name=version*). */
      g_strdup("C8Y_PRIV_DRY_PACKAGES=nginx=1.2-1 jq=1.6-2 curl=7.0* "
               "c8y-agent=0.1.0-1*"),
      NULL};
  g_free(cg);
  int err = open(p->errlog, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  g_assert_cmpint(err, >=, 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(c, 0);
    dup2(c, 1);
    dup2(err, 2);
    execle(p->helper, p->helper, "--serve", (char *)NULL, envp);
    _exit(127);
  }
  g_assert_cmpint(pid, >, 0);
  close(err);
  int status;
  waitpid(pid, &status, 0);
  for (size_t i = 0; envp[i]; i++)
    g_free(envp[i]);
}

static void *priv_main(void *arg) {
  ptu_priv *p = arg;
  while (!atomic_load(&p->stop)) {
    struct pollfd pfd = {p->lfd, POLLIN, 0};
    if (poll(&pfd, 1, 50) <= 0)
      continue;
    int c = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
      continue;
    if (p->helper)
      priv_exec(p, c);
    else
      priv_canned(p, c);
    close(c);
  }
  return NULL;
}

ptu_priv *ptu_priv_start(const char *socket_path, const char *helper,
                         const char *statedir, const char *reply,
                         const char *errlog) {
  ptu_priv *p = g_new0(ptu_priv, 1);
  p->path = g_strdup(socket_path);
  p->helper = g_strdup(helper);
  p->statedir = g_strdup(statedir ? statedir : "/nonexistent");
  p->reply = g_strdup(reply ? reply : "");
  p->errlog = g_strdup(errlog);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  g_assert_cmpuint(strlen(socket_path), <, sizeof(sa.sun_path));
  strcpy(sa.sun_path, socket_path);
  p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(p->lfd, >=, 0);
  unlink(socket_path);
  g_assert_cmpint(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
  g_assert_cmpint(listen(p->lfd, 8), ==, 0);
  g_assert_cmpint(pthread_create(&p->thread, NULL, priv_main, p), ==, 0);
  return p;
}

void ptu_priv_stop(ptu_priv *p) {
  atomic_store(&p->stop, true);
  pthread_join(p->thread, NULL);
  close(p->lfd);
  unlink(p->path);
  g_free(p->path);
  g_free(p->helper);
  g_free(p->statedir);
  g_free(p->reply);
  g_free(p->errlog);
  g_free(p);
}
