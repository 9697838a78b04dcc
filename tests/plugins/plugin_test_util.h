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

/* Copies tests/plugins/data/<subdir>/<name> to <dir>/<as> and makes it
 * executable (the source tree may not keep the x bit). Returns the new
 * path; g_free it. */
char *ptu_install_script(const char *dir, const char *subdir, const char *name,
                         const char *as);

#endif
