#!/usr/bin/env bash
# Builds c8y-agent and runs every test (unit, plugins, SDK, integration,
# fault, packaging) through ctest. Usage: scripts/test.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${C8Y_BUILD_DIR:-build}

scripts/install-deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DC8Y_WERROR="${C8Y_WERROR:-ON}" >/dev/null
cmake --build "$build" -j"$(nproc)"
# As many tests at once as there are cores: the suite must hold under load
# (tests wait on events, not time), and CI has 30 minutes for all of it.
# Tests that install system-wide are RUN_SERIAL.
ctest --test-dir "$build" --output-on-failure --timeout 900 -j"$(nproc)" "$@"
