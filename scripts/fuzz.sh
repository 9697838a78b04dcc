#!/usr/bin/env bash
# Runs the libFuzzer targets for a while each.
#
#   scripts/fuzz.sh SECONDS [TARGET...]     (default: every tests/fuzz/fuzz_*.c)
#
# Configures a separate clang build with ASan+UBSan and libFuzzer
# ($C8Y_FUZZ_BUILD_DIR, default build-fuzz/ in the source tree), builds the
# fuzzers and runs each on a scratch copy of tests/fuzz/corpus/<target>.
# Crashing inputs are saved in <build>/fuzz-artifacts/<target>/; the grown
# corpus is left in <build>/fuzz-corpus/<target>/ for merging. Exits non-zero
# if any target crashed, leaked or timed out.
set -euo pipefail

usage() {
  echo "usage: $0 SECONDS [TARGET...]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
secs=$1
shift
[[ $secs =~ ^[1-9][0-9]*$ ]] || usage

root=$(cd "$(dirname "$0")/.." && pwd)
build=${C8Y_FUZZ_BUILD_DIR:-$root/build-fuzz}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$root"/tests/fuzz/fuzz_*.c; do
    [ -e "$f" ] || continue
    t=${f##*/fuzz_}
    targets+=("${t%.c}")
  done
fi
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz targets in tests/fuzz" >&2; exit 1; }
for t in "${targets[@]}"; do
  if [ ! -f "$root/tests/fuzz/fuzz_$t.c" ]; then
    echo "unknown fuzz target '$t': no tests/fuzz/fuzz_$t.c" >&2
    exit 2
  fi
done

cc=${CC:-clang}
if ! command -v "$cc" >/dev/null; then
  echo "$cc not found: the fuzzers need clang (apt-get install clang)" >&2
  exit 1
fi

echo "== configuring $build (clang, libFuzzer, address;undefined)"
CC=$cc cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DC8Y_FUZZ=ON -DC8Y_SANITIZE="address;undefined" >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 1; }
echo "== building ${targets[*]}"
cmake --build "$build" -j2 --target "${targets[@]/#/fuzz_}"

failed=()
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  seeds=$root/tests/fuzz/corpus/$t
  corpus=$build/fuzz-corpus/$t
  art=$build/fuzz-artifacts/$t
  rm -rf "$corpus"
  mkdir -p "$corpus" "$art"
  [ -d "$seeds" ] && cp -R "$seeds"/. "$corpus"/
  before=$(find "$corpus" -type f | wc -l)
  echo "== fuzz_$t for ${secs}s (seed corpus: $before inputs)"
  status=0
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art/" "$corpus" \
    >"$build/fuzz-$t.log" 2>&1 || status=$?
  after=$(find "$corpus" -type f | wc -l)
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$build/fuzz-$t.log" >&2
    echo "fuzz_$t: FAILED (exit $status); inputs in $art:" >&2
    ls -1 "$art" >&2 || true
    failed+=("$t")
  else
    grep -E '^stat::(number_of_executed_units|new_units_added)' \
      "$build/fuzz-$t.log" || true
    echo "fuzz_$t: no crash; $((after - before)) new inputs ($before -> $after)," \
      "kept in $corpus"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} passed, 0 failed"
