#!/bin/sh
# install_prefix.sh BUILD SYSCONFDIR STATEDIR: `cmake --install BUILD
# --prefix P` (DESTDIR unset) writes nothing outside P, and what it installs
# points into P: the pkg-config file and the CMake package find P's header
# and plugin directory, and the installed agent loads P's plugins.
build=$1 sysconfdir=$2 statedir=$3
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
P=$tmp/prefix
fail=0
pass() { echo "PASS: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# A second in the past: file times may have a 1 s granularity.
marker=$tmp/marker
touch -d "@$(($(date +%s) - 1))" "$marker"
if ! env -u DESTDIR cmake --install "$build" --prefix "$P" >"$tmp/log" 2>&1; then
  cat "$tmp/log"
  echo "FAIL: cmake --install --prefix failed"
  exit 1
fi
# Any file by the name of one this install wrote, changed since it started,
# in the system directories (unrelated activity on the machine does not
# write files of these names).
names=$(find "$P" -type f -exec basename {} \; | sort -u)
[ -n "$names" ] || bad "nothing was installed below $P"
set --
for n in $names; do
  [ $# -eq 0 ] || set -- "$@" -o
  set -- "$@" -name "$n"
done
stray=$(find /etc /var /usr /lib /opt /run -xdev -type f -newer "$marker" \( "$@" \) \
  2>/dev/null | grep -v "^$tmp")
[ -z "$stray" ] && pass "no file of the install appeared in /etc /var /usr /lib /opt /run" ||
  bad "cmake --install --prefix $P also wrote: $stray"
# cmake names every file it writes ("-- Installing: <path>").
written=$(sed -n 's/^-- \(Installing\|Up-to-date\): //p' "$tmp/log")
[ -n "$written" ] || bad "cmake --install listed no files"
outside=$(printf '%s\n' "$written" | grep -v "^$P/")
[ -z "$outside" ] && pass "every file cmake installed is below the prefix" ||
  bad "installed outside $P: $outside"
for f in etc/c8y-agent/agent.ini bin/c8y-agent; do
  [ -f "$P/$f" ] && pass "$f is in the prefix" || bad "$P/$f is missing"
done
[ -n "$(find "$P" -name c8y-agent.service)" ] && pass "the unit is in the prefix" ||
  bad "no c8y-agent.service below $P"
[ -n "$(find "$P" -path '*libexec/c8y-agent/c8y-agent-priv' -perm -u+x)" ] &&
  pass "the privileged helper is in the prefix's libexec" ||
  bad "no libexec/c8y-agent/c8y-agent-priv below $P"
[ -z "$(find "$P" -name 'example.so')" ] && pass "the example plugin is not installed" ||
  bad "example.so was installed"

# pkg-config: ${pcfiledir}-relative, so the paths are P's.
pc=$(find "$P" -name c8y-plugin.pc | head -1)
if [ -z "$pc" ]; then
  bad "no c8y-plugin.pc below $P"
elif command -v pkg-config >/dev/null 2>&1; then
  export PKG_CONFIG_PATH
  PKG_CONFIG_PATH=$(dirname "$pc")
  inc=$(pkg-config --variable=includedir c8y-plugin)
  pdir=$(pkg-config --variable=plugindir c8y-plugin)
  [ -f "$inc/c8y/plugin.h" ] && pass "pkg-config includedir is P's ($inc)" ||
    bad "pkg-config includedir '$inc' has no c8y/plugin.h"
  [ -d "$pdir" ] && case $(cd "$pdir" && pwd -P) in "$(cd "$P" && pwd -P)"/*) true ;; *) false ;; esac &&
    pass "pkg-config plugindir is P's ($pdir)" || bad "pkg-config plugindir '$pdir' is not below $P"
fi

# The CMake package.
mkdir -p "$tmp/proj"
cat >"$tmp/proj/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.21)
project(probe NONE)
find_package(C8yAgentSDK 1.0 REQUIRED)
message(STATUS "PLUGINDIR=${C8yAgentSDK_PLUGINDIR}")
message(STATUS "INCLUDE=${C8yAgentSDK_INCLUDE_DIR}")
CM
if cmake -S "$tmp/proj" -B "$tmp/proj/b" -DCMAKE_PREFIX_PATH="$P" >"$tmp/cm.log" 2>&1; then
  grep -q "PLUGINDIR=$P/" "$tmp/cm.log" && pass "find_package(C8yAgentSDK): plugin dir is P's" ||
    bad "find_package(C8yAgentSDK) plugin dir: $(grep PLUGINDIR= "$tmp/cm.log")"
else
  cat "$tmp/cm.log"
  bad "find_package(C8yAgentSDK) with CMAKE_PREFIX_PATH=$P failed"
fi

# The installed agent finds the plugins of its own prefix. Its state goes
# below $tmp: the compiled-in state directory is the system's
# /var/lib/c8y-agent, which a test of a prefix install must not create
# (root-owned, it broke the package test that ran after this one).
mkdir -p "$P/etc/c8y-agent/conf.d"
printf '[agent]\nstate_dir = %s/state\n' "$tmp" >"$P/etc/c8y-agent/conf.d/test-state.ini"
out=$("$P/bin/c8y-agent" --list-plugins -c "$P/etc/c8y-agent/agent.ini" 2>&1)
pdir=$(cd "$P" && pwd -P)
printf '%s\n' "$out" | grep -q "loaded from $pdir/.*/plugins/software.so" &&
  pass "the installed agent loads its prefix's plugins" ||
  { printf '%s\n' "$out" | head -5; bad "the agent below $P does not load P's plugins"; }
exit $fail
