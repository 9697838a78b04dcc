#!/usr/bin/env bash
# Builds the whole project with AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer included) and runs the complete ctest suite under it.
#
#   scripts/check-sanitizers.sh [CTEST_ARGS...]     e.g. -R test_session
#
# Build dir: $C8Y_SAN_BUILD_DIR (default build-san/ in the source tree).
# Compiler: $CC (default gcc; clang works too).
#
# Every sanitized process writes its reports to <build>/san-logs/ instead of
# stderr: that includes the c8y-agent children of the integration tests and
# the plugins they dlopen() (built with the same flags through c8y_options),
# whose stderr would otherwise end up in a log file that the test deletes.
# The run fails if ctest fails OR if any report file appears, so a leak in a
# child process whose exit status a test does not check still fails here.
#
# Nothing is excluded: every test in the suite runs. Tests that build code
# at test time (tests/sdk) compile without sanitizers on purpose (the way a
# plugin author would); those plugins load fine into a sanitized agent.
set -euo pipefail

san_root=$(cd "$(dirname "$0")/.." && pwd)
. "$san_root/scripts/lib-sanitizer-build.sh"
build=${C8Y_SAN_BUILD_DIR:-$san_root/build-san}
jobs=${C8Y_JOBS:-2}

san_build "$build" "address;undefined" "${CC:-gcc}" "$jobs"

logs=$build/san-logs
san_fresh_logs "$logs"

# halt_on_error + -fno-sanitize-recover=all (set by C8Y_SANITIZE): the first
# finding stops the process with a non-zero status. log_path appends .<pid>.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:\
detect_stack_use_after_return=1:check_initialization_order=1:\
strict_init_order=1:detect_invalid_pointer_pairs=0:\
print_summary=1:fast_unwind_on_malloc=0:malloc_context_size=30:\
log_path=$logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"

san_ctest_and_check check-sanitizers sanitizer 60 "$build" "$logs" "$jobs" "$@"
echo "check-sanitizers: clean (no sanitizer report, all tests passed)"
