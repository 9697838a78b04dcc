/* check_leaks: what a memory checker found in a run of the kit's child,
 * attributed to the plugin. A record counts when one frame of its stack
 * lies in the plugin's object (its real path): memory the agent allocates
 * for a call of the plugin's (a batch it never commits) is the plugin's
 * too, while records without such a frame are the agent's or a library's
 * and only counted in *others.
 *
 * valgrind: its XML output (--xml=yes --xml-file=...), kinds
 * Leak_DefinitelyLost and every memory error (InvalidRead, UninitCondition,
 * ...). LeakSanitizer/AddressSanitizer: the report files of log_path,
 * written with CHECK_ASAN_FRAME_FORMAT so each frame names its module (the
 * plugin's is /proc/self/fd/<n>, the name the agent's loader opened it
 * by). */
#ifndef C8Y_CHECK_LEAKS_H
#define C8Y_CHECK_LEAKS_H

#include <stdbool.h>
#include <stddef.h>

/* stack_trace_format for the sanitizers: "<module>" ends each frame. */
#define CHECK_ASAN_FRAME_FORMAT "'#%n %F %L <%m>'"

/* A record attributed to the plugin: check is "leak" or "memory-error". */
typedef void (*check_leak_fn)(void *ctx, const char *check, const char *subject,
                              const char *detail);

/* Each returns how many records it reported through fn; with leaks false
 * only memory errors are (a run that crashed or abandoned its plugin holds
 * memory it never had the chance to free). -1 when the file cannot be
 * read. */
int check_leaks_valgrind(const char *xml_path, const char *object, bool leaks,
                         check_leak_fn fn, void *ctx, size_t *others);
/* Every file in dir whose name starts with prefix. */
int check_leaks_asan(const char *dir, const char *prefix, const char *object,
                     bool leaks, check_leak_fn fn, void *ctx, size_t *others);

#endif
