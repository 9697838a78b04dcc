#!/usr/bin/env bash
# Cross-builds c8y-agent for an ARM Debian architecture with Debian's cross
# toolchain and multiarch libraries, makes its .debs and runs its unit, SDK
# and plugin tests under qemu-user:
#
#   scripts/cross-build.sh arm64     # -> build-arm64/c8y-agent*_arm64.deb
#   scripts/cross-build.sh armhf     # -> build-armhf/c8y-agent*_armhf.deb
#
# Options (after the architecture):
#   --no-test     build and package only
#   -- ARGS...    passed to ctest instead of the default label selection
# Env: C8Y_BUILD_DIR (default build-<arch>), C8Y_WERROR (default ON).
#
# Installs what it needs (scripts/install-deps.sh --arch) and registers
# qemu-user in binfmt_misc, so it runs as root (or with sudo) on Debian 12.
# By default the integration, TLS and fault tests (mosquitto, the simulator,
# ~3.5 min more under qemu) are left out: pass their labels after -- to run
# them too (docs/packaging.md, "Other architectures").
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
arch=${1:-}
case $arch in
arm64) qemu=qemu-aarch64 ;;
armhf) qemu=qemu-arm ;;
-h | --help) usage; exit 0 ;;
*) echo "cross-build: architecture must be arm64 or armhf (got '$arch')" >&2; exit 2 ;;
esac
shift
run_tests=1
ctest_args=(-L 'unit|sdk|plugins|loader|fuzz')
while [ $# -gt 0 ]; do
  case $1 in
  --no-test) run_tests=0 ;;
  --) shift; ctest_args=("$@"); break ;;
  *) echo "cross-build: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
build=${C8Y_BUILD_DIR:-build-$arch}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
scripts/install-deps.sh --arch "$arch"

# Test executables run through qemu (CMAKE_CROSSCOMPILING_EMULATOR); what
# they start themselves (the agent, the plugin host's children) needs the
# kernel to hand ARM binaries to qemu.
if [ "$run_tests" = 1 ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    $sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if ! grep -qx enabled "/proc/sys/fs/binfmt_misc/$qemu" 2>/dev/null; then
    $sudo update-binfmts --enable "$qemu"
  fi
  grep -qx enabled "/proc/sys/fs/binfmt_misc/$qemu" || {
    echo "cross-build: binfmt_misc has no enabled $qemu entry" >&2
    exit 1
  }
fi

cmake -S . -B "$build" \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/toolchains/linux-$arch.cmake" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
  -DC8Y_WERROR="${C8Y_WERROR:-ON}" >/dev/null
cmake --build "$build" -j"$(nproc)"
(cd "$build" && cpack -G DEB >/dev/null && ls -1 "$PWD"/*.deb)
if [ "$run_tests" = 1 ]; then
  ctest --test-dir "$build" --output-on-failure --timeout 600 -j2 "${ctest_args[@]}"
fi
