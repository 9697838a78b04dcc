#!/usr/bin/env bash
# Installs the Debian 12 packages needed to build, test and run c8y-agent.
# Idempotent: does nothing when everything is already there.
#   scripts/install-deps.sh [PKG...]              native build (+ PKG...)
#   scripts/install-deps.sh --arch ARCH [PKG...]  also what a cross build for
#       the Debian architecture ARCH (arm64, armhf) needs: the cross
#       compilers, qemu-user with binfmt_misc, and every lib*-dev below as
#       its :ARCH package (so a library added here is cross-built too).
#       A -dev package that Debian cannot install for two architectures at
#       once is unpacked into /var/cache/c8y-agent-cross/ARCH instead
#       (cmake/toolchains/debian-cross.cmake looks there first).
set -euo pipefail

# -dev packages whose :ARCH copy conflicts with the host's (a generated
# header that differs per architecture: libwebsockets-dev's lws_config.h
# names the multiarch libdir), and what must be installed for ARCH instead:
# the runtime library and the -dev packages its .pc file requires.
declare -A unpack_only=([libwebsockets-dev]="libwebsockets17 libcap-dev")
cross_overlay=/var/cache/c8y-agent-cross

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

unpack=()
if [ -n "$cross_arch" ]; then
  for p in "${packages[@]}"; do
    case $p in
    lib*-dev)
      if [ -n "${unpack_only[$p]:-}" ]; then
        unpack+=("$p")
        for r in ${unpack_only[$p]}; do packages+=("$r:$cross_arch"); done
      else
        packages+=("$p:$cross_arch")
      fi
      ;;
    esac
  done
  packages+=("crossbuild-essential-$cross_arch" qemu-user-static binfmt-support)
fi

# Unpacks the target's copy of each unpack-only -dev package into the
# overlay, pointing its .pc file and its .so link at the overlay's headers
# and the installed runtime library. Idempotent (a stamp per version).
unpack_dev() {
  local arch=$1 pkg=$2 dir="$cross_overlay/$1" ver deb triple
  triple=$(dpkg-architecture -a"$arch" -qDEB_HOST_MULTIARCH 2>/dev/null)
  ver=$(apt-cache policy "$pkg:$arch" | awk '/Candidate:/ {print $2}')
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || {
    echo "install-deps: no $pkg for $arch in the configured repositories" >&2
    return 1
  }
  [ -f "$dir/.$pkg-$ver" ] && return 0
  $sudo mkdir -p "$dir"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q "$pkg:$arch=$ver" >/dev/null 2>&1) || {
    rm -rf "$tmp"
    echo "install-deps: cannot download $pkg:$arch $ver" >&2
    return 1
  }
  deb=$(ls "$tmp"/*.deb)
  $sudo dpkg-deb -x "$deb" "$dir"
  rm -rf "$tmp"
  local pc so target
  for pc in "$dir/usr/lib/$triple/pkgconfig"/*.pc; do
    [ -e "$pc" ] && $sudo sed -i "s|^prefix=.*|prefix=\"$dir/usr\"|" "$pc"
  done
  for so in "$dir/usr/lib/$triple"/*.so; do
    [ -L "$so" ] || continue
    target=$(readlink "$so")
    case $target in /*) ;; *) $sudo ln -sfn "/usr/lib/$triple/$target" "$so" ;; esac
  done
  $sudo touch "$dir/.$pkg-$ver"
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
if [ ${#missing[@]} -eq 0 ]; then
  for p in "${unpack[@]}"; do unpack_dev "$cross_arch" "$p"; done
  exit 0
fi

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
for p in "${unpack[@]}"; do unpack_dev "$cross_arch" "$p"; done
