#!/bin/sh
# doc_check.sh KIT README MANPAGE: every check `c8y-plugin-check --help`
# lists is documented in the SDK README's table and in the man page.
kit=$1 readme=$2 man=$3
names=$("$kit" --help | awk '/^Checks \(/ { on = 1; next }
  on && /^$/ { exit }
  on && /^  [a-z]/ { print $1 }')
[ -n "$names" ] || { echo "FAIL: --help lists no checks"; exit 1; }
fail=0
for n in $names; do
  grep -q "^| \`$n\` |" "$readme" || { echo "FAIL: $readme has no row for $n"; fail=1; }
  grep -q "^\.B $n\$" "$man" || { echo "FAIL: $man does not describe $n"; fail=1; }
done
[ $fail -eq 0 ] && echo "ok: $(echo $names | wc -w) checks documented"
exit $fail
