#!/usr/bin/env bash
# Builds the whole project with ThreadSanitizer and runs the ctest suite
# under it, the agent children of the integration tests included.
#
#   scripts/check-tsan.sh [CTEST_ARGS...]     e.g. -R test_session
#
# Build dir: $C8Y_TSAN_BUILD_DIR (default build-tsan/ in the source tree).
# Compiler: $CC (default gcc; gcc 12 and clang both support -fsanitize=thread).
#
# The integration tests start $<TARGET_FILE:c8y-agent> of this build (ctest
# passes it as C8Y_AGENT_BIN), so the agent and the plugins it dlopen()s are
# TSan builds too. Every process writes its reports to <build>/tsan-logs/
# (log_path) instead of stderr, which the tests would discard with the
# agent's log; the run fails if ctest fails OR if any report file appears.
#
# Suppressions (tests/tsan.supp) name only races inside third-party
# libraries that TSan cannot see synchronize (they are not instrumented);
# each entry says why it is not our bug. Nothing of agent/, plugins/ or
# tests/support is suppressed.
#
# Not run: package_deb_install (installs a system package; it runs nothing
# under TSan anyway) and bench_* (timing ratios are meaningless at TSan's
# 5-15x slowdown). Tests that build code at test time (tests/sdk) compile
# without sanitizers on purpose; those plugins load into a TSan agent fine.
set -euo pipefail

san_root=$(cd "$(dirname "$0")/.." && pwd)
. "$san_root/scripts/lib-sanitizer-build.sh"
build=${C8Y_TSAN_BUILD_DIR:-$san_root/build-tsan}
jobs=${C8Y_JOBS:-2}

san_build "$build" thread "${CC:-gcc}" "$jobs"

logs=$build/tsan-logs
san_fresh_logs "$logs"

# halt_on_error: the first report stops the process (exit 66), so a race in
# an agent child also shows up as a failed test. log_path appends .<pid>.
# second_deadlock_stack: lock-order reports show both acquisitions.
# die_after_fork=0: run as root, the software plugin's tests fork the
# multi-threaded test process and load the plugin as nobody in the child
# (which starts threads); TSan would kill such a child instead of running it.
# The agent itself only forks to exec.
export TSAN_OPTIONS="halt_on_error=1:exitcode=66:second_deadlock_stack=1:\
history_size=4:report_signal_unsafe=1:die_after_fork=0:\
suppressions=$san_root/tests/tsan.supp:log_path=$logs/tsan"

san_ctest_and_check check-tsan ThreadSanitizer 80 "$build" "$logs" "$jobs" \
  -E '^(package_deb_install|bench_.*)$' "$@"
echo "check-tsan: clean (no ThreadSanitizer report, all tests passed)"
