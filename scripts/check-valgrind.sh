#!/usr/bin/env bash
# Runs the test suite under valgrind memcheck, including every c8y-agent
# process that the integration tests start.
#
#   scripts/check-valgrind.sh [CTEST_ARGS...]     e.g. -R test_session
#
# Build dir: $C8Y_VG_BUILD_DIR (default build/ in the source tree; a normal
# RelWithDebInfo build without sanitizers, which valgrind cannot run).
#
# Each selected test runs as
#   valgrind --leak-check=full --errors-for-leak-kinds=definite
#            --error-exitcode=99 --log-file=<build>/vg-logs/test.<pid>.log
# and the agent children get the same through $C8Y_AGENT_WRAPPER, read by
# tests/support/agent_proc.c. The run fails when ctest fails or when any
# valgrind log (test or agent) reports an error, so an agent whose exit
# status a test does not look at still fails the check.
#
# Selection (everything that runs product code in-process or as the agent):
# every test_* and fuzz_replay_* ctest EXCEPT
#   test_sim: exercises the test simulator, not the agent, and its broker
#             fault tests rely on sub-second timings valgrind cannot keep.
# Not run: sdk_* and plugin_exports/plugin_readmes run the compiler, cmake or
# nm on the SDK; valgrinding those tools tests nothing of ours.
# Integration tests (test_operations, test_session, test_tls) run in full.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${C8Y_VG_BUILD_DIR:-$root/build}
jobs=${C8Y_JOBS:-2}

command -v python3 >/dev/null ||
  { echo "python3 not found (reads ctest's test list)" >&2; exit 1; }
vg=$(command -v valgrind) ||
  { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }

echo "== configuring $build"
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DC8Y_SANITIZE= -DC8Y_WERROR=ON >"$build/vg-configure.log" 2>&1 ||
  { cat "$build/vg-configure.log" >&2; exit 1; }
echo "== building (-j$jobs)"
cmake --build "$build" -j"$jobs" >"$build/vg-build.log" 2>&1 ||
  { tail -n 80 "$build/vg-build.log" >&2; echo "build failed, see $build/vg-build.log" >&2; exit 1; }

logs=$build/vg-logs
rm -rf "$logs"
mkdir -p "$logs"

supp=$root/tests/valgrind.supp
# --fair-sched: without it a thread spinning on a poll starves the others
# under valgrind (it runs one thread at a time), e.g. test_outq /outq/threads.
common=(--leak-check=full --errors-for-leak-kinds=definite
        --show-leak-kinds=definite --error-exitcode=99 --num-callers=30
        --track-origins=yes --fair-sched=yes)
[ -f "$supp" ] && common+=("--suppressions=$supp")

# The agent's wrapper is split on spaces: none of these paths may hold one.
case "$logs$supp$vg" in *" "*)
  echo "paths with spaces are not supported: $logs $supp" >&2; exit 1 ;;
esac
export C8Y_AGENT_WRAPPER="$vg ${common[*]} --log-file=$logs/agent.%p.log"

# ctest's memcheck mode would need CTest's dashboard files; a plain ctest run
# with the test command prefixed does the same through this small launcher.
launcher=$build/vg-launch.sh
cat >"$launcher" <<EOF
#!/bin/sh
exec "$vg" ${common[*]} --log-file="$logs/test.%p.log" "\$@"
EOF
chmod +x "$launcher"

# ctest can only prefix test commands in its dashboard memcheck mode
# (CTest module + DartConfiguration), so ask ctest for each test's command and
# properties (json-v1) and run them here with the same environment.
tests_json=$build/vg-tests.json
ctest --test-dir "$build" --show-only=json-v1 "$@" >"$tests_json"

set +e
python3 - "$tests_json" "$launcher" "$build" <<'PY'
import json, os, re, subprocess, sys, time

data = json.load(open(sys.argv[1]))
launcher, build = sys.argv[2], sys.argv[3]
select = re.compile(r"^(test_|fuzz_replay_)")
skip = {"test_sim"}
passed = failed = 0
failures = []
for t in data.get("tests", []):
    name = t["name"]
    if not select.match(name) or name in skip:
        continue
    cmd = t.get("command")
    if not cmd:
        continue
    env = dict(os.environ)
    timeout = 300
    cwd = build
    for p in t.get("properties", []):
        if p["name"] == "ENVIRONMENT":
            for kv in p["value"]:
                k, _, v = kv.partition("=")
                env[k] = v
        elif p["name"] == "TIMEOUT":
            # valgrind runs code 10-50x slower
            timeout = max(600, float(p["value"]) * 10)
        elif p["name"] == "WORKING_DIRECTORY":
            cwd = p["value"]
    start = time.monotonic()
    log = os.path.join(build, "vg-logs", "ctest-%s.out" % name)
    with open(log, "w") as out:
        try:
            rc = subprocess.run([launcher] + cmd, env=env, cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    secs = time.monotonic() - start
    if rc == 0:
        passed += 1
        print("%-32s Passed  %7.1f s" % (name, secs), flush=True)
    else:
        failed += 1
        failures.append(name)
        print("%-32s FAILED  %7.1f s (exit %s), output: %s" %
              (name, secs, rc, log), flush=True)
        with open(log) as f:
            tail = f.readlines()[-40:]
        sys.stdout.write("".join("    " + l for l in tail))
print("valgrind tests: %d passed, %d failed" % (passed, failed))
if failures:
    print("failed: " + " ".join(failures))
sys.exit(1 if failed or not passed else 0)
PY
status=$?
set -e

# Any valgrind log whose ERROR SUMMARY is not 0 (agents included).
bad=()
for f in "$logs"/test.*.log "$logs"/agent.*.log; do
  [ -e "$f" ] || continue
  if grep -Eq 'ERROR SUMMARY: [1-9]' "$f"; then
    bad+=("$f")
  fi
done
nagent=$(find "$logs" -name 'agent.*.log' | wc -l)
echo "== valgrind logs: $(find "$logs" -name 'test.*.log' | wc -l) test processes, $nagent agent processes"
if [ ${#bad[@]} -gt 0 ]; then
  for f in "${bad[@]}"; do
    echo "---- $f" >&2
    grep -E '^==[0-9]+== ' "$f" | head -n 80 >&2
  done
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "check-valgrind: FAILED (${#bad[@]} valgrind log(s) with errors)" >&2
  exit 1
fi
echo "check-valgrind: clean (memcheck found no error, no definite leak)"
