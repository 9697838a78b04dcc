#!/bin/sh
# readme_build_command.sh <README.md> <build dir> <c8y-agent> <workdir>
# Env: CC (default: the README's own `cc`), PKG_CONFIG is not used: the
# command calls pkg-config itself (the .pc is header-only, any arch).
# Runs the SDK README's one-line pkg-config build command, exactly as
# written, against the SDK installed into a temporary prefix (so the
# installed, ${pcfiledir}-relative c8y-plugin.pc is what is used), on a
# plugin that uses a thread and libm, then loads the result with the real
# loader. A command missing -lm fails at link time (--no-undefined).
set -u
readme=$1 build=$2 agent=$3 work=$4
here=$(dirname "$0")
rm -rf "$work" && mkdir -p "$work" || exit 1
cmd=$(awk '/^## Building a plugin/ { sec = 1 }
           sec && /^```sh/ { on = 1; next }
           on && /^```/ { exit }
           on && /^cc / { cc = 1 }
           on && cc { print; if ($0 !~ /\\$/) exit }' "$readme")
case $cmd in
cc\ *uptime.c*) echo "the README's command: $cmd" ;;
*) echo "FAIL: no 'cc ... uptime.c' command in the sh block of '## Building a plugin' in $readme"; exit 1 ;;
esac
env -u DESTDIR cmake --install "$build" --component dev --prefix "$work/sdk" >"$work/install.log" 2>&1 || {
  cat "$work/install.log"; echo "FAIL: installing the SDK into $work/sdk"; exit 1; }
PKG_CONFIG_PATH=$(dirname "$(find "$work/sdk" -name c8y-plugin.pc | head -1)")
export PKG_CONFIG_PATH
cat >"$work/uptime.c" <<'C'
/* A plugin that starts a thread in init and uses libm. */
#include <c8y/plugin.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

typedef struct st {
  pthread_t t;
  double v;
} st;

static void *work(void *arg) {
  st *s = arg;
  s->v = sqrt(s->v) + log1p(s->v); /* not constant: from the ABI below */
  return NULL;
}

static int init(c8y_plugin *self, const c8y_api *api, void **ud) {
  st *s = calloc(1, sizeof(*s));
  if (!s)
    return C8Y_ENOMEM;
  s->v = (double)api->abi_minor + 2.0;
  if (pthread_create(&s->t, NULL, work, s) != 0) {
    free(s);
    return C8Y_EIO;
  }
  pthread_join(s->t, NULL);
  api->log(self, C8Y_LOG_INFO, "computed %.3f on a thread", s->v);
  *ud = s;
  return C8Y_OK;
}

static void fini(c8y_plugin *self, void *ud) { free(ud); }

C8Y_PLUGIN(.name = "uptime", .version = "1.0", .init = init, .fini = fini);
C
# The README says `cc`: the compiler under test stands in for it (the cross
# compiler in a cross build, whose plugin the target's agent must load).
if [ -n "${CC:-}" ]; then
  cc_path=$(command -v "$CC") || { echo "FAIL: compiler '$CC' not found"; exit 1; }
  mkdir -p "$work/bin" && ln -sf "$cc_path" "$work/bin/cc" || exit 1
  PATH=$work/bin:$PATH
fi
(cd "$work" && eval "$cmd") || { echo "FAIL: the README's build command failed"; exit 1; }
sh "$here/load_check.sh" "$agent" "$work/uptime.so" uptime
