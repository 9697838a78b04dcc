#!/bin/sh
# priv_helper.sh HELPER: the privileged helper c8y-agent-priv, run by root
# as a command, accepts its fixed verbs with well-formed arguments and
# refuses everything else (--serve, the socket's side, is test_priv_serve.c).
#
# Always in dry-run mode (C8Y_PRIV_DRY_RUN=1): the helper prints the command
# it would run instead of running it, so nothing here changes the machine.
helper=$1
[ -f "$helper" ] || { echo "FAIL: $helper does not exist"; exit 1; }
helper=$(cd "$(dirname "$helper")" && pwd)/$(basename "$helper")
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
export C8Y_PRIV_DRY_RUN=1 C8Y_PRIV_STATEDIR="$tmp/state" C8Y_PRIV_PM=apt \
  C8Y_PRIV_HOME="$tmp/home" C8Y_PRIV_DRY_PACKAGES="nginx=1.2-1 libfoo+bar=2.0-1 curl=7.88-1* c8y-agent=1.0-1*"
mkdir -p "$tmp/state/plugins/software" "$tmp/elsewhere"
good=$tmp/state/plugins/software/pkg-1-nginx.deb
: >"$good"
: >"${good%.deb}.rpm"
: >"$tmp/elsewhere/x.deb"
ln -s "$tmp/elsewhere/x.deb" "$tmp/state/plugins/software/link.deb"
fail=0
pass() { echo "PASS: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# ok EXPECTED-OUTPUT ARG...: exit 0 and prints exactly EXPECTED-OUTPUT.
ok() {
  want=$1
  shift
  out=$("$helper" "$@" 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && [ "$out" = "$want" ]; then
    pass "accepts: $*"
  else
    bad "'$*' gave exit $rc, output '$out' (want 0, '$want')"
  fi
}
# refused ARG...: exit 2, a "c8y-agent-priv:" reason and nothing run.
refused() {
  out=$("$helper" "$@" 2>&1)
  rc=$?
  case $out in
  *"would run"*) bad "'$*' would have run something: $out" ;;
  "")  bad "'$*' gave exit $rc without a reason" ;;
  *)
    if [ $rc -eq 2 ]; then pass "refuses: $* ($out)"; else bad "'$*' exit $rc: $out"; fi ;;
  esac
}

A="apt-get install -y -q --allow-downgrades -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --"
R="apt-get remove -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --"
ok "would run: $A nginx=1.2-1" install nginx 1.2-1
# Without a version: the repository's candidate, so apt reads one name.
ok "would run: $A nginx=1.2-1" install nginx
ok "would run: $A libfoo+bar=1:2.0~rc1+b1" install libfoo+bar 1:2.0~rc1+b1
ok "would run: $R curl=7.88-1" remove curl
ok "would run: dpkg --force-confdef --force-confold -i -- $tmp/home/work/install.deb" install-file "$good"
C8Y_PRIV_PM=dnf ok "would run: dnf install -y -- nginx-1.2" install nginx 1.2
C8Y_PRIV_PM=yum ok "would run: yum remove -y -- curl" remove curl
C8Y_PRIV_PM=dnf ok "would run: rpm -U --replacepkgs --oldpackage -- $tmp/home/work/install.rpm" install-file "${good%.deb}.rpm"
ok "would run: reboot" reboot

refused
refused frobnicate
refused sh -c id
refused reboot now
refused install
refused install a 1 extra
refused remove a 1
# Not in the (dry-run) repository or not installed: never passed on.
refused_nf() {
  out=$("$helper" "$@" 2>&1)
  rc=$?
  case $out in *"would run"*) bad "'$*' would have run: $out" ;; *)
    if [ $rc -ne 0 ]; then pass "not passed on: $* ($out)"; else bad "'$*' exit 0"; fi ;; esac
}
refused_nf install ngin.x
refused_nf remove nginx
refused_nf install nginx-
refused_nf remove nginx+
refused remove c8y-agent
for name in 'a;id' 'a b' '$(id)' '`id`' 'a|b' 'a&b' '-o' '../x' 'a>b' "a'b" 'a"b' \
    'a\b' '*' 'a?' "$(printf 'a\nb')" 'x' '~nginx' '^ng' 'A' 'a=1'; do
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

# service: only units listed in the root-owned [plugin.services] units (the
# helper reads the file itself), only start/stop/restart, only .service
# names that cannot be an option.
mkdir -p "$tmp/etc/conf.d"
printf '[plugin.services]\nunits = nginx.service, getty@tty1.service\n' >"$tmp/etc/agent.ini"
chmod 644 "$tmp/etc/agent.ini"
export C8Y_PRIV_SYSCONFDIR="$tmp/etc"
ok "would run: systemctl restart -- nginx.service" service restart nginx.service
ok "would run: systemctl stop -- getty@tty1.service" service stop getty@tty1.service
ok "would run: systemctl start -- nginx.service" service start nginx.service
refused service reload nginx.service
refused service restart ssh.service
refused service restart nginx
refused service restart
refused service restart nginx.service extra
for unit in '-H.service' '--now.service' '.service' '@x.service' 'getty@.service' \
    'a;b.service' 'a b.service' '$(id).service' '../x.service' 'nginx.socket' \
    'a@b@c.service' "$(printf 'a\nb.service')"; do
  refused service restart "$unit"
done
# A drop-in that turns commands off wins; one writable by others is ignored.
printf '[plugin.services]\ncommands = no\n' >"$tmp/etc/conf.d/50-off.ini"
chmod 644 "$tmp/etc/conf.d/50-off.ini"
refused service restart nginx.service
printf '[plugin.services]\nunits = ssh.service\n' >"$tmp/etc/conf.d/60-evil.ini"
chmod 666 "$tmp/etc/conf.d/60-evil.ini"
rm "$tmp/etc/conf.d/50-off.ini"
out=$("$helper" service restart nginx.service 2>&1)
case $? in 0) case $out in
  *"60-evil.ini ignored"*"would run: systemctl restart -- nginx.service") pass "a drop-in writable by others is ignored, and says so" ;;
  *) bad "evil drop-in: '$out'" ;; esac ;;
*) bad "evil drop-in: exit $?: '$out'" ;; esac
refused service restart ssh.service
unset C8Y_PRIV_SYSCONFDIR

# Only root may run it (without the dry run).
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then
  out=$(env -u C8Y_PRIV_DRY_RUN setpriv --reuid=65534 --regid=65534 \
    --clear-groups "$helper" install nginx 2>&1)
  rc=$?
  case $rc:$out in
  2:*"must run as root"*) pass "refuses a non-root caller" ;;
  *) bad "non-root caller: exit $rc '$out'" ;;
  esac
fi
exit $fail
