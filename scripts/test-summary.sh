#!/usr/bin/env bash
# After a failing ctest run: which tests failed and why, at the end of the
# output where nobody can miss it (ctest --output-on-failure prints the whole
# output of each failure somewhere in the middle of a long run).
#
#   scripts/test-summary.sh BUILD_DIR [CTEST_CONSOLE_LOG]
#
# Reads BUILD_DIR/Testing/Temporary/LastTest.log, the whole record of the
# last ctest run in BUILD_DIR (LastTestsFailed.log is not rewritten by a run
# without failures, so it can be stale). For each failed test it prints the
# first lines that say why (a GLib assertion, a "Bail out!", a "not ok", a
# sanitizer report, a timeout), or else the last lines of its output; then
# one closing line "summary: N passed, N failed, N skipped" (skipped only
# known from the console output).
# With the console output of that run (tee'd to a file), each test also gets
# ctest's verdict: Failed, Timeout, Subprocess aborted, Exception: SegFault.
set -euo pipefail
build=${1:?usage: test-summary.sh BUILD_DIR [CTEST_CONSOLE_LOG]}
console=${2:-}
tmp=$build/Testing/Temporary
log=$tmp/LastTest.log
[ -f "$log" ] || { echo "test-summary: no $log" >&2; exit 1; }

total=$(grep -cE '^[0-9]+/[0-9]+ Testing: ' "$log" || true)
nfailed=$(grep -c '^Test Failed' "$log" || true)

if [ "$nfailed" -gt 0 ]; then
  echo
  echo "=================== FAILED TESTS ($nfailed) ==================="
  verdicts=""
  if [ -n "$console" ] && [ -f "$console" ]; then
    # " 3/4 Test #3: slow .....***Timeout   1.00 sec" -> "slow=Timeout|"
    verdicts=$(sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: ([^ ]+) \.*(\*\*\*)?([A-Za-z][^0-9]*[A-Za-z:])? +[0-9.]+ sec$/\1=\3/p' \
      "$console" | tr '\n' '|')
  fi
  awk -v verdicts="|$verdicts" '
    function emit(   i, k, shown) {
      printf "--- %s%s\n", name, verdict != "" ? " (" verdict ")" : ""
      shown = 0
      for (i = 0; i < n && shown < 4; i++)
        if (lines[i] ~ /ERROR|Bail out!|^not ok|FAIL|[Aa]ssertion|Sanitizer|runtime error|[Tt]imed? ?out|g_error|CRITICAL|Segmentation|Aborted|expected:/) {
          print "    " substr(lines[i], 1, 400)
          shown++
        }
      if (shown == 0) {
        k = n > 6 ? n - 6 : 0
        for (i = k; i < n; i++)
          print "    " substr(lines[i], 1, 400)
        if (n == 0)
          print "    (no output)"
      }
    }
    /^[0-9]+\/[0-9]+ Testing: / { name = $3; inout = 0; n = 0; verdict = ""; next }
    /^Output:$/ { getline; inout = 1; next }
    /^<end of output>$/ { inout = 0; next }
    inout { lines[n++] = $0; next }
    /^Test (Failed|Passed|Not Run)/ {
      verdict = $0; sub(/^Test /, "", verdict); sub(/\.$/, "", verdict)
      k = index(verdicts, "|" name "=")
      if (k > 0) {
        v = substr(verdicts, k + length(name) + 2)
        v = substr(v, 1, index(v, "|") - 1)
        gsub(/\*\*\*/, " ", v)
        sub(/:$/, "", v)
        if (v != "") verdict = v
      }
      if ($0 ~ /^Test Failed/) emit()
    }
  ' "$log"
  echo "Re-run one: ctest --test-dir $build -R '^<name>\$' --output-on-failure"
  echo "==============================================================="
fi
skipped=0
if [ -n "$console" ] && [ -f "$console" ]; then
  skipped=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(\*\*\*Skipped|Not Run)' \
    "$console" || true)
fi
echo "summary: $((total - nfailed - skipped)) passed, $nfailed failed, $skipped skipped"
