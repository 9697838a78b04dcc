#!/bin/sh
# unit_security.sh UNIT MAX: fails when `systemd-analyze security` rates the
# unit's exposure above MAX (0.0 = fully sandboxed, 10.0 = not at all).
unit=$1 max=$2
command -v systemd-analyze >/dev/null 2>&1 || {
  echo "SKIP: systemd-analyze not installed"; exit 77; }
[ -f "$unit" ] || { echo "FAIL: $unit does not exist"; exit 1; }
# A fresh directory: no stray drop-ins (c8y-agent.service.d) next to it.
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
cp "$unit" "$tmp/c8y-agent.service" || exit 1
# --offline needs systemd >= 250.
out=$(systemd-analyze security --offline=true --no-pager "$tmp/c8y-agent.service" 2>&1)
rc=$?
printf '%s\n' "$out" | grep -E '✗|exposure|[Ee]rror|[Uu]nknown'
if printf '%s\n' "$out" | grep -q -- "--offline"; then
  echo "SKIP: systemd-analyze has no --offline"; exit 77
fi
[ $rc -eq 0 ] || { echo "FAIL: systemd-analyze security exited $rc"; exit 1; }
level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]\).*/\1/p')
[ -n "$level" ] || { echo "FAIL: no 'Overall exposure level' in the output"; exit 1; }
if awk -v l="$level" -v m="$max" 'BEGIN { exit !(l + 0 <= m + 0) }'; then
  echo "PASS: exposure $level <= $max"
else
  echo "FAIL: exposure $level > $max: tighten the sandbox in packaging/systemd/c8y-agent.service.in"
  exit 1
fi
