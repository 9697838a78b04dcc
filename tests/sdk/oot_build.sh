#!/bin/sh
# oot_build.sh <build dir> <abi major.minor> <c8y-agent> <work dir> [dest.so]
# Env: CMAKE, CC, NM, PKG_CONFIG (defaults: cmake, cc, nm, pkg-config).
#
# Installs the SDK ("dev" component) of <build dir> into <work dir>/prefix,
# then builds tests/sdk/oot/oot_plugin.c as a third party would:
#   (a) cc $(pkg-config --cflags c8y-plugin) -shared -fPIC -Wl,--no-undefined
#   (b) a CMake project: find_package(C8yAgentSDK 1.0) + c8y_add_plugin
# Both results must export only c8y_plugin_info_v1 and load through the real
# loader, and the CMake-built one passes the conformance kit the SDK
# installs (the project's own ctest, as sdk/README.md shows it).
# SameMajorVersion is checked too: asking for ABI 2.0 or for a newer minor
# must fail. The CMake-built plugin is copied to dest.so if given.
set -u
build=$1 abi=$2 agent=$3 work=$4 dest=${5:-}
CTEST=${CTEST:-ctest} CMAKE=${CMAKE:-cmake} CC=${CC:-cc} NM=${NM:-nm} PKG_CONFIG=${PKG_CONFIG:-pkg-config}
here=$(cd "$(dirname "$0")" && pwd)
umask 022
fail() { echo "FAIL: $*"; exit 1; }

rm -rf "$work" && mkdir -p "$work" || exit 1
prefix=$work/prefix
"$CMAKE" --install "$build" --prefix "$prefix" --component dev ||
  fail "cmake --install --component dev"
echo "installed SDK:"
(cd "$prefix" && find . -type f | sort)
[ -f "$prefix/include/c8y/plugin.h" ] || fail "no include/c8y/plugin.h"
pc=$(find "$prefix" -name c8y-plugin.pc -path '*/pkgconfig/*')
[ -n "$pc" ] || fail "no pkgconfig/c8y-plugin.pc installed"
cfg=$(find "$prefix" -name C8yAgentSDKConfig.cmake -path '*/cmake/C8yAgentSDK/*')
[ -n "$cfg" ] || fail "no cmake/C8yAgentSDK/C8yAgentSDKConfig.cmake installed"
for f in C8yAgentSDKConfigVersion.cmake C8yAgentSDKTargets.cmake C8yPlugin.cmake; do
  [ -f "$(dirname "$cfg")/$f" ] || fail "no $f next to $cfg"
done

# (a) pkg-config. The .pc carries the configured prefix; relocate it to the
# staging prefix the way a packager's sysroot would.
if command -v "$PKG_CONFIG" >/dev/null 2>&1; then
  export PKG_CONFIG_PATH="$(dirname "$pc")"
  pcq() { "$PKG_CONFIG" --define-variable=prefix="$prefix" "$@" c8y-plugin; }
  ver=$(pcq --modversion) || fail "pkg-config cannot read $pc"
  [ "$ver" = "$abi" ] || fail "c8y-plugin.pc version '$ver', want ABI '$abi'"
  "$PKG_CONFIG" --atleast-version="$abi" c8y-plugin || fail "--atleast-version $abi"
  cflags=$(pcq --cflags)
  plugindir=$(pcq --variable=plugindir)
  libs=$(pcq --libs)
  echo "pkg-config: version $ver, cflags '$cflags', libs '$libs', plugindir '$plugindir'"
  [ -z "$libs" ] || fail "the SDK is header-only; Libs must be empty, got '$libs'"
  case $plugindir in
  "$prefix"/*/c8y-agent/plugins) ;;
  *) fail "plugindir '$plugindir' is not <prefix>/<libdir>/c8y-agent/plugins" ;;
  esac
  # shellcheck disable=SC2086
  sh "$here/compile_plugin.sh" "$CC" "$NM" "$work/pc/oot_relay.so" $cflags \
    -std=c99 -Wall -Wextra -Werror "$here/oot/oot_plugin.c" ||
    fail "pkg-config build"
  sh "$here/load_check.sh" "$agent" "$work/pc/oot_relay.so" oot_relay ||
    fail "pkg-config-built plugin does not load"
else
  echo "note: $PKG_CONFIG not found, pkg-config build skipped"
fi

# (b) CMake package.
configure() { # <build dir> <version>
  "$CMAKE" -S "$here/oot" -B "$1" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$CC" -DOOT_SDK_VERSION="$2" -DCMAKE_BUILD_TYPE=Release
}
configure "$work/cmake" 1.0 >"$work/cmake.log" 2>&1 || {
  cat "$work/cmake.log"
  fail "find_package(C8yAgentSDK 1.0) project did not configure"
}
cat "$work/cmake.log"
grep -q "C8yAgentSDK $abi from $(dirname "$cfg")" "$work/cmake.log" ||
  fail "find_package did not pick the SDK from $prefix"
grep -q "C8Y_PLUGINDIR=$prefix/.*/c8y-agent/plugins" "$work/cmake.log" ||
  fail "C8Y_PLUGINDIR does not default to the SDK's plugin dir"
"$CMAKE" --build "$work/cmake" || fail "CMake build of the plugin"
so=$work/cmake/plugins-out/oot_relay.so
[ -f "$so" ] || fail "c8y_add_plugin did not produce $so"
syms=$("$NM" -D --defined-only "$so" | awk 'NF >= 3 { print $3 }')
[ "$syms" = "c8y_plugin_info_v1" ] || fail "$so exports: $syms"
# Strong undefined symbols must all come from versioned system libraries
# (libc): nothing may be left for the agent to provide.
undef=$("$NM" -D --undefined-only "$so" | awk '$1 == "U" && $2 !~ /@/ { print $2 }')
[ -z "$undef" ] || fail "$so needs unversioned symbols (agent internals?): $undef"
sh "$here/load_check.sh" "$agent" "$so" oot_relay ||
  fail "CMake-built plugin does not load"
[ -x "$prefix/bin/c8y-plugin-check" ] || fail "no bin/c8y-plugin-check installed"
"$CTEST" --test-dir "$work/cmake" --output-on-failure ||
  fail "the plugin's conformance test (c8y-plugin-check from the SDK) failed"

# SameMajorVersion: another major, or a newer minor, must not be accepted.
major=${abi%%.*} minor=${abi#*.}
for bad in "$((major + 1)).0" "$major.$((minor + 1))"; do
  if configure "$work/cmake-$bad" "$bad" >"$work/cmake-$bad.log" 2>&1; then
    cat "$work/cmake-$bad.log"
    fail "find_package(C8yAgentSDK $bad) accepted SDK $abi"
  fi
  grep -q "C8yAgentSDKConfig.cmake" "$work/cmake-$bad.log" ||
    fail "find_package($bad) failed for another reason: $(cat "$work/cmake-$bad.log")"
  echo "ok: find_package(C8yAgentSDK $bad) refused"
done

if [ -n "$dest" ]; then
  mkdir -p "$(dirname "$dest")" && cp "$so" "$dest" && chmod 0755 "$dest" ||
    fail "cannot copy to $dest"
  echo "out-of-tree plugin left at $dest"
fi
echo "ok: out-of-tree builds (pkg-config and CMake) load"
