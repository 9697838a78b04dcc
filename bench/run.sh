#!/bin/sh
# One command for the benchmark: configures a Release build in its own
# directory, builds only what the bench needs and runs it. Arguments go to
# c8y-bench (e.g. --lines 20000 --ops 50); see docs/benchmarks.md.
# Build dir: $C8Y_BENCH_BUILD_DIR, default ${TMPDIR:-/tmp}/c8y-agent-bench-build.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${C8Y_BENCH_BUILD_DIR:-${TMPDIR:-/tmp}/c8y-agent-bench-build}
log="$build.log"
echo "# building Release in $build (log: $log)" >&2
if ! { cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
         -DC8Y_BUILD_TESTS=ON &&
       cmake --build "$build" -j2 --target c8y-bench; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "bench/run.sh: build failed; full log in $log" >&2
  exit 2
fi
rc=0
"$build/bench/c8y-bench" "$@" || rc=$?
echo "# download throughput and memory (c8y-bench-download)" >&2
"$build/bench/c8y-bench-download" || rc=$?
exit $rc
