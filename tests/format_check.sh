#!/bin/sh
# Fails when a tracked C source differs from the committed .clang-format.
cd "$1" || exit 1
command -v clang-format >/dev/null || { echo "clang-format not installed"; exit 77; }
files=$(git ls-files '*.c' '*.h' '*.cpp' 2>/dev/null) || { echo "not a git checkout"; exit 77; }
[ -n "$files" ] || exit 77
# shellcheck disable=SC2086
clang-format --dry-run --Werror $files
