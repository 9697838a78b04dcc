#!/bin/sh
# load_check.sh <c8y-agent> <plugin.so> <plugin name> [ini lines...]
# Puts the plugin alone into a fresh plugin dir and runs the real loader
# (c8y-agent --list-plugins); succeeds only if the plugin is listed as
# loaded and the agent exits 0. Extra arguments are appended to the ini.
set -u
agent=$1 so=$2 name=$3
shift 3
umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/c8y-load-XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
mkdir -m 0755 "$work/plugins" "$work/state" || exit 1
cp "$so" "$work/plugins/$name.so" && chmod 0755 "$work/plugins/$name.so" ||
  exit 1
{
  echo "[agent]"
  echo "plugin_dir = $work/plugins"
  echo "state_dir = $work/state"
  for line in "$@"; do echo "$line"; done
} >"$work/agent.ini"
"$agent" --list-plugins -c "$work/agent.ini" >"$work/out" 2>"$work/err"
rc=$?
cat "$work/out" "$work/err"
if [ $rc -ne 0 ]; then
  echo "FAIL: c8y-agent --list-plugins exited $rc"
  exit 1
fi
if ! grep -Eq "^loaded +$name +.*$work/plugins/$name\.so\$" "$work/out"; then
  echo "FAIL: $name not listed as loaded"
  exit 1
fi
echo "ok: $name loads through the real loader"
