#!/bin/sh
# priv_helper.sh HELPER: the privileged helper c8y-agent-priv accepts its
# fixed verbs with well-formed arguments and refuses everything else, both
# as a command and in --serve mode (one request line on stdin, as systemd's
# c8y-agent-priv.socket hands it a connection).
#
# Always in dry-run mode (C8Y_PRIV_DRY_RUN=1): the helper prints the command
# it would run instead of running it, so nothing here changes the machine.
helper=$1
[ -f "$helper" ] || { echo "FAIL: $helper does not exist"; exit 1; }
helper=$(cd "$(dirname "$helper")" && pwd)/$(basename "$helper")
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
export C8Y_PRIV_DRY_RUN=1 C8Y_PRIV_STATEDIR="$tmp/state" C8Y_PRIV_PM=apt
mkdir -p "$tmp/state/plugins/software" "$tmp/elsewhere"
good=$tmp/state/plugins/software/pkg-1-nginx.deb
: >"$good"
: >"$tmp/elsewhere/x.deb"
ln -s "$tmp/elsewhere/x.deb" "$tmp/state/plugins/software/link.deb"
fail=0
pass() { echo "PASS: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# ok EXPECTED-OUTPUT ARG...: exit 0 and prints exactly EXPECTED-OUTPUT.
ok() {
  want=$1
  shift
  out=$(sh "$helper" "$@" 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && [ "$out" = "$want" ]; then
    pass "accepts: $*"
  else
    bad "'$*' gave exit $rc, output '$out' (want 0, '$want')"
  fi
}
# refused ARG...: exit 2, a "c8y-agent-priv:" reason and nothing run.
refused() {
  out=$(sh "$helper" "$@" 2>&1)
  rc=$?
  case $out in
  *"would run"*) bad "'$*' would have run something: $out" ;;
  "c8y-agent-priv: "*)
    if [ $rc -eq 2 ]; then pass "refuses: $* ($out)"; else bad "'$*' exit $rc"; fi ;;
  *) bad "'$*' gave exit $rc without a reason: '$out'" ;;
  esac
}

A="apt-get install -y -q --allow-downgrades -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
ok "would run: $A nginx=1.2-1" install nginx 1.2-1
ok "would run: $A nginx" install nginx
ok "would run: $A libfoo+bar=1:2.0~rc1+b1" install libfoo+bar 1:2.0~rc1+b1
ok "would run: apt-get remove -y -q --allow-downgrades -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold curl" remove curl
ok "would run: dpkg --force-confdef --force-confold -i $good" install-file "$good"
C8Y_PRIV_PM=dnf ok "would run: dnf install -y nginx-1.2" install nginx 1.2
C8Y_PRIV_PM=yum ok "would run: yum remove -y nginx" remove nginx
C8Y_PRIV_PM=dnf ok "would run: rpm -U --replacepkgs --oldpackage $good" install-file "$good"

refused
refused frobnicate
refused sh -c id
refused reboot now
refused install
refused install a 1 extra
refused remove a 1
for name in 'a;id' 'a b' '$(id)' '`id`' 'a|b' 'a&b' '-o' '../x' 'a>b' "a'b" 'a"b' \
    'a\b' '*' 'a?' "$(printf 'a\nb')"; do
  refused install "$name"
  refused remove "$name"
done
for version in '1;id' '$(id)' '1 2' '-1' '1|2'; do
  refused install nginx "$version"
done
refused install-file /etc/passwd
refused install-file "$tmp/elsewhere/x.deb"
refused install-file "$tmp/state/plugins/software/link.deb"
refused install-file "$tmp/state/plugins/software/../../../elsewhere/x.deb"
refused install-file "$tmp/state/plugins/software/missing.deb"
refused install-file "$tmp/state/plugins/software"
refused install-file "$tmp/state/plugins/software/a;b.deb"
C8Y_PRIV_PM=none refused install nginx

# --serve: the socket protocol, as the plugins speak it.
serve() { printf '%s' "$1" | sh "$helper" --serve 2>"$tmp/serve.err"; }
out=$(serve 'install nginx 1.2
')
case $out in
"would run: $A nginx=1.2
=c8y-agent-priv status 0") pass "--serve runs a good request, status line last" ;;
*) bad "--serve install gave '$out'" ;;
esac
grep -q '^c8y-agent-priv: request: install nginx 1.2$' "$tmp/serve.err" ||
  bad "--serve does not log the request to stderr (the journal)"
for req in 'install a;id' 'install $(id)' 'frobnicate' '' 'remove *' 'reboot x'; do
  out=$(serve "$req
")
  case $out in
  *"would run"*) bad "--serve '$req' would have run something" ;;
  *"=c8y-agent-priv status 2") pass "--serve refuses '$req'" ;;
  *) bad "--serve '$req' gave '$out'" ;;
  esac
done
# No newline at the end, and an over-long line.
out=$(serve 'remove curl')
case $out in *"=c8y-agent-priv status 0") pass "--serve without a final newline" ;;
*) bad "--serve 'remove curl' (no newline) gave '$out'" ;; esac
long=$(printf '%01100d' 0)
out=$(serve "install $long
")
case $out in *"=c8y-agent-priv status 2") pass "--serve refuses an over-long line" ;;
*) bad "--serve long line gave '$out'" ;; esac
# Globbing is off: a * must not expand to file names.
out=$(cd "$tmp/state/plugins/software" && serve 'install-file *
')
case $out in *"would run"*) bad "--serve expanded a glob" ;;
*"=c8y-agent-priv status 2") pass "--serve does not expand globs" ;;
*) bad "--serve glob gave '$out'" ;; esac

# The client going away (the agent restarted by the package it installs)
# does not stop the action: it still runs to its end.
printf 'remove curl\n' | sh "$helper" --serve 2>"$tmp/gone.err" | :
grep -q '^c8y-agent-priv: remove finished with status 0$' "$tmp/gone.err" &&
  pass "--serve finishes the action when the client has gone" ||
  bad "--serve with the client gone: $(cat "$tmp/gone.err")"

# Without dry-run, only root may use it directly (checked before the verb
# runs; as a non-root user nothing could be run anyway).
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then
  out=$(env -u C8Y_PRIV_DRY_RUN setpriv --reuid=65534 --regid=65534 \
    --clear-groups sh "$helper" install nginx 2>&1)
  rc=$?
  case $rc:$out in
  2:*"must run as root"*) pass "refuses a non-root caller" ;;
  *) bad "non-root caller: exit $rc '$out'" ;;
  esac
fi
exit $fail
