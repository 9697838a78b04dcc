#!/bin/bash
# rootfs.sh [CACHE]: prints the path of a Debian root file system for the
# system test (tests/system/systemd_boot.sh), made with debootstrap from the
# Debian mirror this machine's apt uses, and cached under CACHE (default
# /var/cache/c8y-agent-systest) keyed by mirror, suite, architecture and
# package list: later runs reuse it. The cached tree is never booted itself
# (the test boots an overlay on it), so it stays clean.
#
# Exit 77 (skip) when debootstrap is missing; 1 when it fails.
set -u
cache=${1:-/var/cache/c8y-agent-systest}

# What the booted container needs: a real init (systemd, dbus for
# systemctl/logind), and what the package depends on, so that each run does
# not download it again (528 still installs from the mirror inside).
include=systemd,systemd-sysv,dbus,adduser,ca-certificates,dpkg-repack
include=$include,libpaho-mqtt1.3,libinih1,libjansson4,libcurl4,libssl3

# The mirror apt uses here: the first deb822 "URIs:" or one-line "deb" entry
# of the Debian archive (a path ending in /debian).
mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
      /etc/apt/sources.list; do
    [ -f "$f" ] || continue
    awk '/^[[:space:]]*#/ { next }
         $1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
         $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }' "$f"
  done | grep -E '/debian/?$' | head -1
}

command -v debootstrap >/dev/null 2>&1 || { echo "SKIP: debootstrap not installed" >&2; exit 77; }
url=$(mirror)
[ -n "$url" ] || { echo "no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
. /etc/os-release
suite=${C8Y_SYSTEST_SUITE:-${VERSION_CODENAME:-bookworm}}
arch=$(dpkg --print-architecture)
key=$(printf '%s\n' "$url" "$suite" "$arch" "$include" | sha256sum | cut -c1-16)
dir=$cache/$suite-$arch-$key
if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$cache" || exit 1
rm -rf "$dir.tmp"
log=$cache/debootstrap-$key.log
echo "rootfs: debootstrap $suite ($arch) from $url into $dir" >&2
if ! debootstrap --variant=minbase --include="$include" "$suite" "$dir.tmp" \
    "$url" >"$log" 2>&1; then
  tail -20 "$log" >&2
  rm -rf "$dir.tmp"
  exit 1
fi
# The suite's updates and security sources as on this machine are not
# needed: the test installs from the plain suite.
echo "deb $url $suite main" >"$dir.tmp/etc/apt/sources.list"
# No root password, no console getty: the test talks to it through
# systemd-run/nsenter only. A machine-id is made at each boot.
rm -f "$dir.tmp/etc/machine-id"
ln -sf /dev/null "$dir.tmp/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$dir.tmp/etc/systemd/system/getty@.service"
echo c8y-systest >"$dir.tmp/etc/hostname"
# apt's lists, so that 528 can install from the mirror at once.
chroot "$dir.tmp" apt-get update -qq >>"$log" 2>&1 || { tail -5 "$log" >&2; rm -rf "$dir.tmp"; exit 1; }
touch "$dir.tmp/.complete"
mv "$dir.tmp" "$dir" || exit 1
echo "$dir"
