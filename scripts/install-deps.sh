#!/usr/bin/env bash
# Installs the Debian 12 packages needed to build, test and run c8y-agent.
# Idempotent: does nothing when everything is already there.
#   scripts/install-deps.sh [PKG...]              native build (+ PKG...)
#   scripts/install-deps.sh --arch ARCH [PKG...]  also what a cross build for
#       the Debian architecture ARCH (arm64, armhf) needs: the cross
#       compilers, qemu-user with binfmt_misc, and every lib*-dev below as
#       its :ARCH package (so a library added here is cross-built too).
set -euo pipefail

cross_arch=""
if [ "${1:-}" = --arch ]; then
  cross_arch=${2:?--arch needs a Debian architecture (arm64, armhf)}
  shift 2
fi

packages=(
  build-essential cmake pkg-config
  libpaho-mqtt-dev libssl-dev libinih-dev libjansson-dev libglib2.0-dev
  mosquitto mosquitto-clients openssl curl dbus-daemon
  libcurl4-openssl-dev libmicrohttpd-dev libwebsockets-dev libsystemd-dev
  # c8y-plugin-check's leak check (ctest -L check), scripts/check-valgrind.sh
  valgrind
  "$@"
)

if [ -n "$cross_arch" ]; then
  for p in "${packages[@]}"; do
    case $p in lib*-dev) packages+=("$p:$cross_arch") ;; esac
  done
  packages+=("crossbuild-essential-$cross_arch" qemu-user-static binfmt-support)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || {
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  }
  sudo=sudo
fi
echo "install-deps: installing ${missing[*]}"
if [ -n "$cross_arch" ] &&
  ! dpkg --print-foreign-architectures | grep -qx "$cross_arch"; then
  $sudo dpkg --add-architecture "$cross_arch"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
