#!/bin/sh
# Runs c8y-plugin-check on one plugin and checks its verdict.
#   run_check.sh KIT PLUGIN EXPECT CONFIG DATA [KIT OPTION...]
# EXPECT: "clean" (exit 0, no finding) or a check name (exit 1 and a
# "FAIL <check>: " line). CONFIG: an agent.ini template or "-"; @SCRATCH@ in
# it becomes a fresh scratch directory, into which DATA (a directory or
# "-") is copied first. A leak expected where the kit has no leak checker
# (valgrind missing) is a skip (77), not a pass.
set -u
kit=$1 plugin=$2 expect=$3 config=$4 data=$5
shift 5
scratch=$(mktemp -d "${TMPDIR:-/tmp}/c8y-check-test.XXXXXX") || exit 1
trap 'rm -rf "$scratch"' EXIT
set -- "$plugin" "$@"
if [ "$data" != - ]; then
  cp -R "$data"/. "$scratch"/ || exit 1
fi
if [ "$config" != - ]; then
  sed "s|@SCRATCH@|$scratch|g" "$config" >"$scratch/agent.ini" || exit 1
  set -- "$@" --config "$scratch/agent.ini"
fi
start=$(date +%s)
out=$("$kit" "$@" 2>&1)
rc=$?
printf '%s\n' "$out"
echo "run_check: exit $rc after $(($(date +%s) - start)) s"
if [ "$expect" = clean ]; then
  [ "$rc" -eq 0 ] && exit 0
  echo "run_check: expected no finding (exit 0), got exit $rc" >&2
  exit 1
fi
if [ "$expect" = leak ] && printf '%s\n' "$out" | grep -q 'leaks: not checked'; then
  echo "run_check: no leak checker here (valgrind not installed): skipped" >&2
  exit 77
fi
if [ "$rc" -ne 1 ]; then
  echo "run_check: expected findings (exit 1), got exit $rc" >&2
  exit 1
fi
if ! printf '%s\n' "$out" | grep -q "^FAIL $expect: "; then
  echo "run_check: no '$expect' finding" >&2
  exit 1
fi
exit 0
