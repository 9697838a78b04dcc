#!/bin/sh
# compile_plugin.sh <compiler> <nm> <out.so> <compiler args...>
# Builds a plugin the way a third party would (-shared -fPIC, hidden
# visibility, -Wl,--no-undefined) and checks that its dynamic symbol table
# defines exactly c8y_plugin_info_v1. Exit 77 (skipped) without the compiler.
set -u
cc=$1 nm=$2 out=$3
shift 3
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "SKIP: compiler '$cc' not found"
  exit 77
fi
mkdir -p "$(dirname "$out")" || exit 1
rm -f "$out"
set -x
"$cc" -shared -fPIC -fvisibility=hidden -Wl,--no-undefined -o "$out" "$@" ||
  exit 1
set +x
syms=$("$nm" -D --defined-only "$out" | awk 'NF >= 3 { print $3 }' | sort)
if [ "$syms" != "c8y_plugin_info_v1" ]; then
  echo "FAIL: $out must define only c8y_plugin_info_v1, defines:" $syms
  exit 1
fi
echo "ok: $out exports only c8y_plugin_info_v1"
