#!/bin/sh
# readme_example.sh <README.md> <cc> <nm> <c8y-agent> <include dir> <workdir>
# Extracts the first ```c block of the SDK README, builds it as a plugin
# (C99, -Wpedantic -Werror, --no-undefined, only c8y_plugin_info_v1
# exported) and loads it with the real loader, so the documented example
# cannot rot.
set -u
readme=$1 cc=$2 nm=$3 agent=$4 inc=$5 work=$6
here=$(dirname "$0")
mkdir -p "$work" || exit 1
src=$work/readme_example.c
awk '/^```c[[:space:]]*$/ && !done { on = 1; next }
     /^```/ && on { on = 0; done = 1; next }
     on { print }' "$readme" >"$src" || exit 1
lines=$(wc -l <"$src")
if [ "$lines" -lt 20 ]; then
  echo "FAIL: no complete \`\`\`c block found in $readme ($lines lines)"
  exit 1
fi
echo "extracted $lines lines from $readme"
name=$(sed -n 's/.*C8Y_PLUGIN(.*\.name *= *"\([a-z0-9_]*\)".*/\1/p' "$src")
if [ -z "$name" ]; then
  echo "FAIL: the example has no C8Y_PLUGIN(.name = \"...\") line"
  exit 1
fi
sh "$here/compile_plugin.sh" "$cc" "$nm" "$work/$name.so" \
  -std=c99 -Wall -Wextra -Wpedantic -Werror -I"$inc" "$src" || exit 1
sh "$here/load_check.sh" "$agent" "$work/$name.so" "$name" \
  "[plugin.$name]" "interval = 30"
