#!/bin/sh
# Fake list_command for test_plugin_software: 3000 packages with long names
# (so the list needs many 140/141 lines), one that needs CSV quoting, one
# malformed line (no TAB) and one blank line.
long=abcdefghijklmnopqrstuvwxyz-abcdefghijklmnopqrstuvwxyz-abcdefghijklmnop
i=0
while [ "$i" -lt 3000 ]; do
  printf 'pkg-%04d-%s\t%d.0.%d-%s\n' "$i" "$long" "$i" "$i" "$long"
  i=$((i + 1))
done
printf 'quoted"pkg, one\t1.0 "beta"\n'
printf 'this line has no tab\n'
printf '\n'
