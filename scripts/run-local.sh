#!/usr/bin/env bash
# Sets everything up and runs the agent against a local Cumulocity
# simulator: installs dependencies, builds, starts the simulator (a real
# mosquitto on 127.0.0.1:18830 with a password file, and its REST side on
# 127.0.0.1:18831 for file transfers) and runs c8y-agent in
# the foreground with the bundled plugins. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${C8Y_BUILD_DIR:-$root/build}
run=$build/local-run

scripts/install-deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target c8y-agent c8y-sim plugins

mkdir -p "$run"
chmod 700 "$run"
# No tenant configured: the agent targets the local simulator (see
# config/agent.ini); shell commands are allowed here so the demo operation
# below has something to do.
cat > "$run/agent.ini" <<INI
[agent]
plugin_dir = $build/plugins-out
state_dir = $run/state
log_level = info

[plugin.system_metrics]
interval = 10

# The example plugin (plugins/example, not packaged) also registers 517,
# which the bundled system_metrics answers; two handlers for one template
# refuse the second plugin, so the local run has the package's set.
[plugin.example]
enabled = false

[plugin.restart]
command = echo "a real device would reboot now"

[plugin.shell]
allow = true
timeout = 20

# 522 uploads the extract through the agent's own HTTP client (no helper).
[plugin.logfile]
logs = demo=$run/demo.log
INI
chmod 600 "$run/agent.ini"
{
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) demo INFO run-local started"
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) demo ERROR something to look at"
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) demo INFO all good again"
} > "$run/demo.log"

"$build/tests/sim/c8y-sim" --workdir "$run/sim" \
  --op '511,c8y-agent-local,uname -a' \
  --op '517,c8y-agent-local,LOAD' \
  --op '522,c8y-agent-local,demo,2000-01-01T00:00:00Z,2100-01-01T00:00:00Z,ERROR,100' </dev/null &
sim_pid=$!
trap 'kill $sim_pid 2>/dev/null; wait $sim_pid 2>/dev/null' EXIT
# Wait until the simulator's broker accepts connections; stop if the
# simulator died (e.g. port 18830 already taken by another broker).
for _ in $(seq 1 100); do
  kill -0 $sim_pid 2>/dev/null || { echo "run-local: the simulator did not start (see above)" >&2; exit 1; }
  (exec 3<>/dev/tcp/127.0.0.1/18830) 2>/dev/null && break
  sleep 0.1
done
sleep 0.5
kill -0 $sim_pid 2>/dev/null || { echo "run-local: the simulator did not start (see above)" >&2; exit 1; }

echo "== c8y-agent -> local simulator on 127.0.0.1:18830, REST on 18831 (Ctrl-C to stop)"
echo "== the 522 log request ends with 503,c8y_LogfileRequest,<binary URL>"
"$build/agent/c8y-agent" -c "$run/agent.ini"
