/* plugin_test_util: file and directory helpers shared by the plugin tests.
 * Every helper asserts (g_assert) instead of returning an error. */
#ifndef C8Y_PLUGIN_TEST_UTIL_H
#define C8Y_PLUGIN_TEST_UTIL_H

#include <glib.h>

/* A new directory "$TMPDIR/<prefix>-XXXXXX"; g_free the name. */
char *ptu_make_tmpdir(const char *prefix);

/* Removes path and, for a directory, everything below it. */
void ptu_rm_rf(const char *path);

void ptu_write_text(const char *path, const char *text);

/* The file's content; the file must exist. g_free it. */
char *ptu_read_text(const char *path);

/* The file's content, or "" when it cannot be read. g_free it. */
char *ptu_read_text_or_empty(const char *path);

/* Writes `body` to <dir>/<name> and returns the command "sh '<path>'";
 * g_free it. For commands too long for one agent.ini line (199
 * characters). */
char *ptu_sh_script(const char *dir, const char *name, const char *body);

/* Polls done(ctx) until it is true or timeout_ms passed; its last value. */
gboolean ptu_wait_until(gboolean (*done)(const void *ctx), const void *ctx,
                        int timeout_ms);
/* Waits up to timeout_ms for path to exist. */
gboolean ptu_wait_file(const char *path, int timeout_ms);

/* Copies tests/plugins/data/<subdir>/<name> to <dir>/<as> and makes it
 * executable (the source tree may not keep the x bit). Returns the new
 * path; g_free it. */
char *ptu_install_script(const char *dir, const char *subdir, const char *name,
                         const char *as);

/* A stand-in for c8y-agent-priv.socket (systemd, Accept=yes): listens on
 * `socket_path` and serves each connection in turn. With `helper` set it runs
 * that script as "sh helper --serve" with the connection as stdin/stdout,
 * ALWAYS with C8Y_PRIV_DRY_RUN=1 (actions are printed, never run),
 * C8Y_PRIV_PM=apt and C8Y_PRIV_STATEDIR=statedir, its stderr appended to
 * `errlog`. Without `helper` it answers every request with `reply` and
 * appends the request line to `errlog`. */
typedef struct ptu_priv ptu_priv;
ptu_priv *ptu_priv_start(const char *socket_path, const char *helper,
                         const char *statedir, const char *reply,
                         const char *errlog);
void ptu_priv_stop(ptu_priv *p);

#endif
