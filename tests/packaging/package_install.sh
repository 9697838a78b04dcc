#!/bin/bash
# package_install.sh SRC PKGBUILD CC SYSCONFDIR STATEDIR VERSION PLUGINS
#
# Builds the packages the way a distribution would (prefix /usr, Debian
# hardening flags) in PKGBUILD, runs lintian on the .debs, installs the
# runtime .deb on THIS machine, checks the installation, reinstalls, removes
# and purges it, then builds the RPMs and checks their contents.
#
# It changes the system (a package, a system user), so it runs only as root
# with C8Y_ALLOW_SYSTEM_TESTS=1 (CI on a throwaway machine); exit 77 = skip.
set -u
src=$1 pkgbuild=$2 cc=$3 sysconfdir=$4 statedir=$5 version=$6 plugins=$7
pkg=c8y-agent user=c8y-agent
config=$sysconfdir/agent.ini

skip() { echo "SKIP: $*"; exit 77; }
fails=0 passes=0
pass() { echo "PASS: $*"; passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
die() { echo "FAIL: $*"; exit 1; }
not() { ! "$@"; }
quiet() { "$@" >/dev/null 2>&1; }
# matches TEXT ERE: some line of TEXT matches.
matches() { grep -q -E -- "$2" <<<"$1"; }
# check DESCRIPTION COMMAND...: one assertion.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

[ "${C8Y_ALLOW_SYSTEM_TESTS:-}" = 1 ] ||
  skip "installs a package and a system user; set C8Y_ALLOW_SYSTEM_TESTS=1 to run"
[ "$(id -u)" = 0 ] || skip "needs root (dpkg -i)"
for t in dpkg dpkg-deb dpkg-query dpkg-statoverride cpack runuser; do
  command -v "$t" >/dev/null 2>&1 || skip "$t not installed"
done
# Opted in: missing tools are errors now, not skips.
for t in dpkg-shlibdeps lintian rpmbuild rpm; do
  command -v "$t" >/dev/null 2>&1 ||
    die "$t not installed (apt-get install dpkg-dev lintian rpm)"
done
# Never touch an installation or account that this test did not create.
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q -v 'not-installed'; then
  skip "package $pkg is already present on this machine; not touching it"
fi
if getent passwd "$user" >/dev/null || getent group "$user" >/dev/null; then
  skip "user or group $user already exists; not touching it"
fi

tmp=$(mktemp -d) || die "mktemp"
# Whatever happens, leave no package behind.
cleanup() {
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q -v 'not-installed'; then
    echo "cleanup: purging $pkg"
    dpkg --purge "$pkg" >/dev/null 2>&1 || echo "cleanup: dpkg --purge $pkg failed"
  fi
  # Purge keeps the system user on purpose; this test created it (it did not
  # exist before), so it removes it, with the secret it planted.
  rm -f "$sysconfdir/password"
  rmdir "$sysconfdir" 2>/dev/null
  if getent passwd "$user" >/dev/null; then
    userdel "$user" >/dev/null 2>&1 || echo "cleanup: userdel $user failed"
  fi
  if getent group "$user" >/dev/null; then
    groupdel "$user" >/dev/null 2>&1 || echo "cleanup: groupdel $user failed"
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# ---- build --------------------------------------------------------------
echo "building packages in $pkgbuild"
log=$tmp/build.log
flags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --export=sh 2>/dev/null)
eval "$flags"
rm -f "$pkgbuild"/*.deb "$pkgbuild"/*.rpm
if ! CFLAGS="${CFLAGS:-} ${CPPFLAGS:-}" LDFLAGS="${LDFLAGS:-}" \
    cmake -S "$src" -B "$pkgbuild" -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=None \
      -DC8Y_BUILD_TESTS=OFF -DC8Y_SYSCONFDIR="$sysconfdir" \
      -DC8Y_STATEDIR="$statedir" >"$log" 2>&1 ||
    ! cmake --build "$pkgbuild" -j2 >>"$log" 2>&1 ||
    ! (cd "$pkgbuild" && cpack -G DEB) >>"$log" 2>&1; then
  tail -40 "$log"
  die "building the .deb packages failed (log above)"
fi
deb=$(ls "$pkgbuild"/"$pkg"_*.deb 2>/dev/null | head -1)
devdeb=$(ls "$pkgbuild"/"$pkg"-dev_*.deb 2>/dev/null | head -1)
[ -f "$deb" ] && [ -f "$devdeb" ] || die "cpack made no $pkg/$pkg-dev .deb"
pass "cpack -G DEB: $(basename "$deb") $(basename "$devdeb")"
# The RPMs from the same build tree now; they are checked at the end.
(cd "$pkgbuild" && cpack -G RPM) >"$tmp/rpm.log" 2>&1
rpm_rc=$?

# ---- lintian --------------------------------------------------------------
lintian --tag-display-limit 0 "$deb" "$devdeb" >"$tmp/lintian" 2>&1
grep -E '^[EW]: ' "$tmp/lintian"
if grep -q '^E: ' "$tmp/lintian"; then
  fail "lintian reports errors"
else
  pass "lintian: no errors"
fi

# ---- package metadata -----------------------------------------------------
field() { dpkg-deb -f "$deb" "$1"; }
check "Package is $pkg" test "$(field Package)" = "$pkg"
check "Version is $version-<revision>" matches "$(field Version)" "^$version-[0-9]"
check "Depends has adduser" matches "$(field Depends)" '(^|, )adduser'
check "Depends has shlibdeps' libc6" matches "$(field Depends)" '(^|, )libc6 '
check "Depends has libcurl (loaded on the first transfer)" matches "$(field Depends)" '(^|, )libcurl4'
check "Depends has libwebsockets (loaded by remote_access's first session)" matches "$(field Depends)" '(^|, )libwebsockets[0-9]+'
check "conffiles lists $config" matches "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" "^$config\$"
dpkg-deb -c "$devdeb" >"$tmp/dev.list"
check "dev package has plugin.h" grep -q '/usr/include/c8y/plugin.h$' "$tmp/dev.list"
check "dev package has a pkg-config file" grep -q '/pkgconfig/.*\.pc$' "$tmp/dev.list"
check "dev package has the CMake package" grep -q '/cmake/.*Config\.cmake$' "$tmp/dev.list"
check "dev package has c8y-plugin-check" grep -q '/usr/bin/c8y-plugin-check$' "$tmp/dev.list"
check "dev package has its man page" grep -q '/man1/c8y-plugin-check\.1\.gz$' "$tmp/dev.list"

# ---- install --------------------------------------------------------------
if ! dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1; then
  cat "$tmp/dpkg.log"
  die "dpkg -i $(basename "$deb") failed"
fi
pass "dpkg -i"

bin=/usr/bin/c8y-agent
check "--version prints $version" matches "$("$bin" --version)" "^c8y-agent $version "
check "--check-config as root" "$bin" --check-config -c "$config"
check "--check-config as $user (runuser)" \
  runuser -u "$user" -- "$bin" --check-config -c "$config"
runuser -u "$user" -- "$bin" --list-plugins -c "$config" >"$tmp/plugins" 2>"$tmp/plugins.err"
rc=$?
check "--list-plugins as $user exits 0" test $rc -eq 0
IFS=, read -r -a plugin_list <<<"$plugins"
[ ${#plugin_list[@]} -gt 0 ] || fail "no bundled plugins were passed to the test"
for p in "${plugin_list[@]}"; do
  check "--list-plugins shows bundled plugin $p loaded" \
    grep -q -E "^loaded +$p " "$tmp/plugins"
done

# Owner, group and mode of what the package and its postinst created.
mode_is() { [ "$(stat -c '%U:%G %a' "$1" 2>/dev/null)" = "$2" ]; }
check "$config is root:$user 640" mode_is "$config" "root:$user 640"
check "$statedir is $user:$user 750" mode_is "$statedir" "$user:$user 750"
check "$bin is root:root 755" mode_is "$bin" "root:root 755"
check "dpkg-statoverride keeps $config" \
  matches "$(dpkg-statoverride --list "$config")" "^root $user 640 $config\$"
IFS=: read -r _ _ uid _ _ home shell <<<"$(getent passwd "$user")"
check "$user is a system user (uid ${uid:-?} < 1000)" test "${uid:-1000}" -lt 1000
check "$user has home $statedir" test "${home:-}" = "$statedir"
check "$user has no login shell (${shell:-})" matches "${shell:-}" '(/nologin|/false)$'

check "group $user exists" quiet getent group "$user"
unitfile=$(dpkg -L "$pkg" | grep '/systemd/system/c8y-agent.service$')
check "the unit is installed ($unitfile)" test -f "$unitfile"
check "the unit starts $bin" grep -q "^ExecStart=$bin -c $config\$" "$unitfile"
wants=/etc/systemd/system/multi-user.target.wants/c8y-agent.service
if command -v deb-systemd-helper >/dev/null 2>&1; then
  check "the unit is enabled (deb-systemd-helper, no running systemd needed)" \
    test -L "$wants"
fi
# The privileged path: the helper, its socket (enabled) and service template.
priv=$(dpkg -L "$pkg" | grep '/libexec/c8y-agent/c8y-agent-priv$')
check "the privileged helper is installed ($priv)" test -x "$priv"
check "the helper is root:root 755" mode_is "$priv" "root:root 755"
for u in c8y-agent-priv.socket c8y-agent-priv@.service; do
  check "$u is installed" test -f "$(dirname "$unitfile")/$u"
done
check "the helper's service runs the installed helper" \
  grep -q "^ExecStart=$priv --serve\$" "$(dirname "$unitfile")/c8y-agent-priv@.service"
check "the socket belongs to $user, mode 0600" \
  grep -q "^SocketUser=$user\$" "$(dirname "$unitfile")/c8y-agent-priv.socket"
if command -v deb-systemd-helper >/dev/null 2>&1; then
  check "the helper's socket is enabled" \
    test -L /etc/systemd/system/sockets.target.wants/c8y-agent-priv.socket
fi
check "the helper refuses a bad package name (dry run)" \
  sh -c "C8Y_PRIV_DRY_RUN=1 $priv install 'a;id' >/dev/null 2>&1; test \$? -eq 2"
# --serve answers only a peer on a Unix socket that is the agent's unit:
# a pipe has no peer credentials.
check "the helper serves nobody but a socket peer" \
  sh -c "printf 'reboot\\n' | C8Y_PRIV_DRY_RUN=1 $priv --serve 2>&1 | grep -q 'no peer credentials'"
check "the example plugin is not in the package" \
  not matches "$(dpkg -L "$pkg")" '/plugins/example\.so$'
check "the configuration reference man 5 c8y-agent.ini" \
  test -f /usr/share/man/man5/c8y-agent.ini.5.gz
for p in "${plugin_list[@]}"; do
  check "plugin README /usr/share/doc/$pkg/plugins/$p.md" test -f "/usr/share/doc/$pkg/plugins/$p.md"
done
check "copyright and changelog in /usr/share/doc/$pkg" \
  test -f /usr/share/doc/$pkg/copyright -a -f /usr/share/doc/$pkg/changelog.Debian.gz
check "manual page /usr/share/man/man8/c8y-agent.8.gz" \
  test -f /usr/share/man/man8/c8y-agent.8.gz
check "no RPATH/RUNPATH in $bin" not matches "$(LC_ALL=C readelf -d "$bin")" 'RPATH|RUNPATH' 
for so in $(dpkg -L "$pkg" | grep '/plugins/.*\.so$'); do
  check "plugin $(basename "$so") is root:root 644" mode_is "$so" "root:root 644"
done

# The agent really runs as $user: a short start against a closed loopback
# port must write its state, as $user, into $statedir.
printf '[c8y]\nhost = 127.0.0.1\nport = 1\n' >"$tmp/agent.ini"
chmod 755 "$tmp"
chmod 644 "$tmp/agent.ini"
runuser -u "$user" -- timeout -s TERM 5 "$bin" -c "$tmp/agent.ini" >"$tmp/run.log" 2>&1
rc=$?
if [ $rc -ne 124 ]; then
  cat "$tmp/run.log"
  fail "the agent as $user stopped by itself within 5 s (exit $rc)"
else
  pass "the agent runs as $user (stopped by the timeout)"
fi
check "the agent wrote state into $statedir" test -n "$(ls -A "$statedir")"
not_owned=$(find "$statedir" ! -user "$user" -printf '%p (%u)\n')
check "everything in $statedir belongs to $user${not_owned:+; not: $not_owned}" \
  test -z "$not_owned"

# ---- reinstall (the upgrade path of the maintainer scripts) ---------------
uid_before=$(id -u "$user")
if dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1; then
  pass "dpkg -i again (upgrade path)"
else
  cat "$tmp/dpkg.log"
  fail "dpkg -i again failed"
fi
check "the upgrade keeps the user" test "$(id -u "$user" 2>/dev/null)" = "$uid_before"
check "the upgrade keeps $config root:$user 640" mode_is "$config" "root:$user 640"

# ---- remove: configuration, state and user stay ---------------------------
if dpkg -r "$pkg" >"$tmp/dpkg.log" 2>&1; then
  pass "dpkg -r"
else
  cat "$tmp/dpkg.log"
  fail "dpkg -r failed"
fi
check "remove deletes $bin" test ! -e "$bin"
check "remove keeps $config" test -f "$config"
check "remove keeps the user" quiet getent passwd "$user"
check "remove keeps $statedir" test -d "$statedir"

# ---- purge: nothing of the package is left --------------------------------
# Secrets the agent's user holds: credentials the agent stored itself (in
# its state directory, like bootstrap's) and a password file the
# administrator gave it in /etc.
uid=$(id -u "$user")
install -m 0600 -o "$user" -g "$user" /dev/null "$statedir/credentials"
echo 'secret' >"$statedir/credentials"
install -m 0600 -o "$user" -g "$user" /dev/null "$sysconfdir/password"
echo 'secret' >"$sysconfdir/password"
if dpkg --purge "$pkg" >"$tmp/dpkg.log" 2>&1; then
  pass "dpkg --purge"
else
  cat "$tmp/dpkg.log"
  fail "dpkg --purge failed"
fi
check "purge deletes $statedir (the agent's own secrets)" test ! -e "$statedir"
# No later account can get the uid and with it what the user still owns.
check "purge keeps the user with its uid" test "$(id -u "$user" 2>/dev/null)" = "$uid"
check "purge keeps the group" quiet getent group "$user"
check "the kept user has no login shell" \
  matches "$(getent passwd "$user" | cut -d: -f7)" '(/nologin|/false)$'
left=$(find /etc /var -xdev -uid "$uid" 2>/dev/null | grep -v -x "$sysconfdir/password")
check "after purge the uid owns nothing but the administrator's password file" \
  test -z "$left"
rm -f "$sysconfdir/password"
rmdir "$sysconfdir" 2>/dev/null
check "purge deletes $sysconfdir" test ! -e "$sysconfdir"
check "purge drops the statoverride" not dpkg-statoverride --list "$config"
check "purge drops the enablement link" test ! -e "$wants" -a ! -L "$wants"

# ---- RPM --------------------------------------------------------------------
if [ $rpm_rc -eq 0 ]; then
  rpm_=$(ls "$pkgbuild"/"$pkg"-[0-9]*.rpm 2>/dev/null | head -1)
  devrpm=$(ls "$pkgbuild"/"$pkg"-devel-*.rpm 2>/dev/null | head -1)
  if [ -f "$rpm_" ] && [ -f "$devrpm" ]; then
    pass "cpack -G RPM: $(basename "$rpm_") $(basename "$devrpm")"
    rpm -qpl "$rpm_" >"$tmp/rpm.list"
    for f in "$bin" "$config" "$sysconfdir/conf.d" "$unitfile" \
        /usr/share/doc/$pkg/copyright /usr/share/man/man5/c8y-agent.ini.5.gz \
        "$priv" "$(dirname "$unitfile")/c8y-agent-priv.socket"; do
      check "rpm -qpl lists $f" grep -qx "$f" "$tmp/rpm.list"
    done
    for p in "${plugin_list[@]}"; do
      check "rpm -qpl lists plugin $p.so" grep -q "/plugins/$p\.so\$" "$tmp/rpm.list"
    done
    for d in "$(dirname "$unitfile")" /usr/share/man/man8 /usr/lib /lib; do
      check "the RPM does not claim the system directory $d" \
        not grep -qx "$d" "$tmp/rpm.list"
    done
    check "rpm -qpl lists the manual page" \
      grep -qx /usr/share/man/man8/c8y-agent.8.gz "$tmp/rpm.list"
    # --dump: path size mtime digest mode owner group isconfig ...
    check "the RPM has $config as %config, 0640 root:$user" \
      matches "$(rpm -qp --dump "$rpm_")" "^$config [0-9]+ [0-9]+ [0-9a-f]+ 0100640 root $user 1 "
    check "the RPM %pre creates the user" matches "$(rpm -qp --scripts "$rpm_")" 'useradd -r'
    check "the RPM starts the helper's socket" \
      matches "$(rpm -qp --scripts "$rpm_")" 'c8y-agent-priv\.socket'
    check "the example plugin is not in the RPM" not grep -q '/plugins/example\.so$' "$tmp/rpm.list"
    check "rpm -qpl of the devel package lists plugin.h" \
      matches "$(rpm -qpl "$devrpm")" '^/usr/include/c8y/plugin\.h$' 
  else
    fail "cpack made no $pkg/$pkg-devel .rpm"
  fi
else
  tail -30 "$tmp/rpm.log"
  fail "cpack -G RPM failed"
fi

echo "package_install: $passes checks ok, $fails checks failed"
[ $fails -eq 0 ]
