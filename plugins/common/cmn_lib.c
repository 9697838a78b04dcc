/* cmn_lib: a shared library loaded on first use (see cmn_lib.h). */
#include "cmn_lib.h"

#include <dlfcn.h>
#include <stdio.h>

static void load_locked(cmn_lib *l) {
  void *lib = dlopen(l->soname, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    snprintf(l->error, sizeof l->error, "%s", why ? why : "not found");
    return;
  }
  for (size_t i = 0; i < l->nsyms; i++) {
    void *sym = dlsym(lib, l->syms[i].name);
    if (!sym) {
      snprintf(l->error, sizeof l->error, "no symbol %s", l->syms[i].name);
      return;
    }
    *(void **)l->syms[i].slot = sym; /* POSIX's way from void * to code */
  }
  atomic_store(&l->ok, true);
}

bool cmn_lib_load(cmn_lib *l, char *err, size_t errlen) {
  if (!atomic_load(&l->ok)) {
    pthread_mutex_lock(&l->mu);
    if (!l->tried) {
      l->tried = true;
      load_locked(l);
    }
    pthread_mutex_unlock(&l->mu);
  }
  bool ok = atomic_load(&l->ok);
  if (!ok && err && errlen)
    snprintf(err, errlen, "cannot load %s: %s", l->soname, l->error);
  return ok;
}

bool cmn_lib_loaded(cmn_lib *l) { return atomic_load(&l->ok); }
