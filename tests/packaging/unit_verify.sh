#!/bin/sh
# unit_verify.sh UNIT AGENT_BINARY DROPIN PRIV_SOCKET PRIV_SERVICE PRIV_HELPER:
# `systemd-analyze verify` of the unit alone and with the privileged drop-in,
# of the privileged helper's socket and service template, plus the
# directives the agent relies on. verify exits 0 even for ignored (unparsable) lines, so any
# output about the unit counts as a failure. The unit's ExecStart= names the
# installed path, which need not exist here: the copy points at the build.
unit=$1 agent=$2 dropin=$3 psock=$4 psvc=$5 phelper=$6
command -v systemd-analyze >/dev/null 2>&1 || {
  echo "SKIP: systemd-analyze not installed"; exit 77; }
[ -f "$unit" ] || { echo "FAIL: $unit does not exist"; exit 1; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0

# Directives the agent's behaviour depends on (notify protocol, reload,
# exit codes, user, state directory).
for want in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=' \
    'ExecStart=/.*/c8y-agent -c /.*/agent.ini$' \
    'ExecReload=/bin/sh -c .*/reloads;.*kill -HUP' 'Restart=on-failure' \
    'RestartPreventExitStatus=1 3$' 'LimitCORE=0$' 'MemoryMax=[0-9]' \
    'TasksMax=[0-9]' 'User=c8y-agent' 'Group=c8y-agent' \
    'StateDirectory=' 'ProtectSystem=strict' 'CapabilityBoundingSet=$' \
    'WantedBy=multi-user.target' 'NoNewPrivileges=yes' 'PrivateUsers=yes' \
    'Wants=.*c8y-agent-priv\.socket' 'After=.*c8y-agent-priv\.socket'; do
  if ! grep -q -E "^$want" "$unit"; then
    echo "FAIL: $unit has no line matching ^$want"
    fail=1
  fi
done
# The helper's socket: only root and the agent's user may connect (not its
# group, which operators join for the local API), no file left behind, one
# service instance per connection (so each request is its own unit, outside
# the agent's cgroup), and the instance runs the helper on the connection.
for want in 'ListenStream=/run/c8y-agent-priv\.sock$' 'SocketUser=c8y-agent$' \
    'SocketMode=0600$' 'RemoveOnStop=yes$' 'Accept=yes$' \
    'WantedBy=sockets.target$'; do
  grep -q -E "^$want" "$psock" || {
    echo "FAIL: $psock has no line matching ^$want"; fail=1; }
done
for want in 'ExecStart=/.*/c8y-agent-priv --serve$' 'StandardInput=socket$' \
    'StandardOutput=socket$' 'User=root$' 'RuntimeMaxSec=' \
    'StateDirectory=c8y-agent-priv$'; do
  grep -q -E "^$want" "$psvc" || {
    echo "FAIL: $psvc has no line matching ^$want"; fail=1; }
done

check() {
  out=$(systemd-analyze verify --man=no "$1" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || [ -n "$out" ]; then
    printf '%s\n' "$out"
    echo "FAIL: systemd-analyze verify $2 (exit $rc)"
    fail=1
  else
    echo "PASS: verify $2"
  fi
}
mkdir "$tmp/plain" "$tmp/priv" "$tmp/priv/c8y-agent.service.d"
sed "s#^ExecStart=[^ ]*#ExecStart=$agent#" "$unit" >"$tmp/plain/c8y-agent.service"
cp "$tmp/plain/c8y-agent.service" "$tmp/priv/"
# The socket and its template next to the unit (verify loads them from
# there, also for the unit's Wants=).
for d in plain priv; do
  cp "$psock" "$tmp/$d/"
  sed "s#^ExecStart=[^ ]*#ExecStart=$phelper#" "$psvc" >"$tmp/$d/$(basename "$psvc")"
done
check "$tmp/plain/c8y-agent.service" "the unit"
check "$tmp/plain/$(basename "$psock")" "c8y-agent-priv.socket and its service"
# The drop-in, with its commented-out host-administration lines enabled too.
sed 's/^#\([A-Z][A-Za-z]*=\)/\1/' "$dropin" >"$tmp/priv/c8y-agent.service.d/privileged.conf"
check "$tmp/priv/c8y-agent.service" "the unit + privileged.conf"
# The drop-in must really grant what it is for: with it, the analysis
# (offline, it reads drop-ins next to the unit) must see CAP_SYS_BOOT.
sec=$(systemd-analyze security --offline=true --no-pager "$tmp/priv/c8y-agent.service" 2>&1)
if printf '%s\n' "$sec" | grep -q 'CapabilityBoundingSet=~CAP_SYS_BOOT'; then
  if printf '%s\n' "$sec" | grep -q '✓ CapabilityBoundingSet=~CAP_SYS_BOOT'; then
    echo "FAIL: with privileged.conf the service still cannot reboot (CAP_SYS_BOOT)"
    fail=1
  else
    echo "PASS: privileged.conf grants CAP_SYS_BOOT"
  fi
fi
exit $fail
