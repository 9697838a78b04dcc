/* cmn_lib: a shared library a plugin loads on first use instead of linking
 * it. A linked library and its whole dependency tree are mapped into the
 * agent from the plugin's load on, on every device, also on those that never
 * use what the library is for (libwebsockets without a tunnel, libsystemd
 * without a unit to watch). The plugin keeps a table of function pointers,
 * fills it here by the library's SONAME (from the build) and calls through
 * it. */
#ifndef CMN_LIB_H
#define CMN_LIB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* One function: its name in the library, and the address of the function
 * pointer that receives it. */
typedef struct cmn_lib_sym {
  const char *name;
  void *slot;
} cmn_lib_sym;

typedef struct cmn_lib {
  const char *soname;
  const cmn_lib_sym *syms;
  size_t nsyms;
  pthread_mutex_t mu;
  bool tried;
  atomic_bool ok;
  char error[512];
} cmn_lib;

#define CMN_LIB_INIT(soname, syms, nsyms)                                      \
  { (soname), (syms), (nsyms), PTHREAD_MUTEX_INITIALIZER, false, false, "" }

/* Loads the library and resolves every symbol, once (later calls return
 * the first outcome). false, with "cannot load <soname>: <why>" in err
 * (nullable), when the library or one of its symbols is missing; then no
 * slot may be used. Thread-safe. The library is never closed: a plugin
 * can be unloaded and loaded again, and what the library set up (threads,
 * handlers) may outlive the plugin. */
bool cmn_lib_load(cmn_lib *l, char *err, size_t errlen);
/* Whether cmn_lib_load succeeded already; never loads. */
bool cmn_lib_loaded(cmn_lib *l);

#endif
