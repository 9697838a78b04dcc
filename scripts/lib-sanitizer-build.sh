# Shared part of scripts/check-sanitizers.sh and scripts/check-tsan.sh:
# configure + build one sanitized tree, then run ctest and fail on a test
# failure OR on any sanitizer report file (children whose exit status no
# test checks still count). Sourced, not run; the caller sets -euo pipefail.

# san_build BUILD_DIR SANITIZE CC JOBS
san_build() {
  local build=$1 sanitize=$2 cc=$3 jobs=$4
  command -v "$cc" >/dev/null || { echo "$cc not found" >&2; exit 1; }
  echo "== configuring $build ($cc, $sanitize, -Werror)"
  mkdir -p "$build"
  CC=$cc cmake -S "$san_root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DC8Y_SANITIZE="$sanitize" -DC8Y_WERROR=ON \
    >"$build/configure.log" 2>&1 || { cat "$build/configure.log" >&2; exit 1; }
  echo "== building (-j$jobs)"
  cmake --build "$build" -j"$jobs" >"$build/build.log" 2>&1 ||
    { tail -n 80 "$build/build.log" >&2; echo "build failed, see $build/build.log" >&2; exit 1; }
}

# san_fresh_logs DIR: an empty report directory for log_path. Sticky and
# world-writable (like /tmp): tests run as root drop children to nobody
# (the software plugin's helper checks), and a sanitizer that cannot open
# its log in such a child exits with its error code instead of reporting.
san_fresh_logs() {
  rm -rf "$1"
  mkdir -p "$1"
  chmod 1777 "$1"
}

# san_ctest_and_check NAME WHAT HEAD BUILD LOGS JOBS [CTEST_ARGS...]
# NAME prefixes the verdict line, WHAT names the reports, HEAD is how many
# lines of each report to show. Exits 1 on failure, returns on success.
san_ctest_and_check() {
  local name=$1 what=$2 head=$3 build=$4 logs=$5 jobs=$6
  shift 6
  echo "== ctest"
  set +e
  ctest --test-dir "$build" --output-on-failure -j"$jobs" "$@" 2>&1 |
    tee "$build/ctest.log"
  local ctest_status=${PIPESTATUS[0]}
  set -e
  local status=$ctest_status

  local reports
  reports=$(find "$logs" -type f | sort)
  if [ -n "$reports" ]; then
    echo "== $what reports (from tests or the processes they started):" >&2
    for r in $reports; do
      echo "---- $r" >&2
      head -n "$head" "$r" >&2
    done
    status=1
  fi
  if [ "$ctest_status" -ne 0 ]; then
    "$san_root/scripts/test-summary.sh" "$build" "$build/ctest.log" >&2
  fi
  if [ "$status" -ne 0 ]; then
    local nrep=0
    [ -n "$reports" ] && nrep=$(printf '%s\n' "$reports" | wc -l)
    echo "$name: FAILED (ctest exit $ctest_status, $nrep $what report file(s) in $logs)" >&2
    exit 1
  fi
}
