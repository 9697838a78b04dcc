/* svc_sdbus: libsystemd's sd-bus, loaded when the first unit is watched
 * (see svc_sdbus.h). */
#define SVC_SDBUS_IMPL
#include "svc_sdbus.h"

#include "cmn_lib.h"

#ifndef SVC_SDBUS_SONAME
#error                                                                         \
    "SVC_SDBUS_SONAME (libsystemd's SONAME) comes from the plugin's CMakeLists"
#endif

svc_sdbus_table svc_sdbus;

static const cmn_lib_sym syms[] = {
#define SYM(name) {#name, &svc_sdbus.name},
    SVC_SDBUS_FUNCTIONS(SYM)
#undef SYM
};

static cmn_lib lib =
    CMN_LIB_INIT(SVC_SDBUS_SONAME, syms, sizeof syms / sizeof *syms);

bool svc_sdbus_load(char *err, size_t errlen) {
  return cmn_lib_load(&lib, err, errlen);
}
