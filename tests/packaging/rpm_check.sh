#!/bin/sh
# rpm_check.sh <source dir> <work dir> <C compiler> <sysconfdir> <statedir>
#
# Builds the RPMs with the Fedora/RHEL layout (packaging/rpm/layout.cmake),
# runs rpmlint with packaging/rpm/rpmlint.toml (must report nothing), checks
# the paths, and runs each scriptlet for install, upgrade and erase with
# stand-ins for every command it calls (nothing on this machine changes),
# comparing what it does with what the Debian package does
# (docs/packaging.md, "RPM"). Exit 77 (skipped) without rpmbuild or rpmlint.
set -u
src=$1 work=$2 cc=$3 etc=$4 state=$5
user=c8y-agent
for t in rpmbuild rpm rpmlint; do
  command -v $t >/dev/null 2>&1 || {
    echo "SKIP: $t not installed (apt-get install rpm rpmlint)"
    exit 77
  }
done
failures=0
pass() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
check() { # <what> <command...>
  what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
has() { printf '%s\n' "$1" | grep -qE -- "$2"; }
hasnt() { ! has "$@"; }

rm -rf "$work" && mkdir -p "$work" || exit 1
build=$work/build
{
  cmake -C "$src/packaging/rpm/layout.cmake" -S "$src" -B "$build" \
    -DCMAKE_C_COMPILER="$cc" -DC8Y_BUILD_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
    cmake --build "$build" -j2 && (cd "$build" && cpack -G RPM)
} >"$work/build.log" 2>&1 || {
  tail -40 "$work/build.log"
  echo "FAIL: building the RPMs"
  exit 1
}
rpm_=$(ls "$build"/c8y-agent-[0-9]*.rpm | head -1)
devrpm=$(ls "$build"/c8y-agent-devel-[0-9]*.rpm | head -1)
[ -f "$rpm_" ] && [ -f "$devrpm" ] || { echo "FAIL: no .rpm made"; exit 1; }

# ---- rpmlint ---------------------------------------------------------------
lint=$(rpmlint -c "$src/packaging/rpm/rpmlint.toml" "$rpm_" "$devrpm" 2>&1)
echo "$lint" | tail -3
check "rpmlint: 0 errors, 0 warnings" has "$lint" ' 0 errors, 0 warnings'

# ---- paths: the RPM distributions' layout -----------------------------------
list=$(rpm -qpl "$rpm_")
arch=$(rpm -qp --qf '%{ARCH}' "$rpm_")
libdir=/usr/lib64
case $arch in i?86 | armv7*) libdir=/usr/lib ;; esac
for f in /usr/bin/c8y-agent /usr/lib/systemd/system/c8y-agent.service \
  /usr/lib/systemd/system/c8y-agent-priv.socket \
  "/usr/lib/systemd/system/c8y-agent-priv@.service" \
  /usr/libexec/c8y-agent/c8y-agent-priv "$libdir/c8y-agent/plugins/logfile.so" \
  "$etc/agent.ini" "$etc/conf.d" /usr/share/doc/c8y-agent/copyright \
  /usr/share/man/man8/c8y-agent.8.gz; do
  check "the RPM has $f" has "$list" "^$f\$"
done
check "no Debian multiarch directory" hasnt "$list" '^/usr/lib/[a-z0-9_]+-linux-gnu'
check "the state dir is made at install, not shipped" hasnt "$list" "^$state"
check "$etc/agent.ini is %config(noreplace)" \
  has "$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm_")" \
  "^$etc/agent.ini [a-z]*c[a-z]*n"
check "$etc/agent.ini is 0640 root:$user" \
  has "$(rpm -qp --dump "$rpm_")" "^$etc/agent.ini [0-9]+ [0-9]+ [0-9a-f]+ 0100640 root $user "
check "the devel package has plugin.h" has "$(rpm -qpl "$devrpm")" '^/usr/include/c8y/plugin\.h$'
check "the unit starts /usr/bin/c8y-agent" \
  has "$(rpm2cpio "$rpm_" 2>/dev/null | strings | grep '^ExecStart=')" \
  "^ExecStart=/usr/bin/c8y-agent -c $etc/agent.ini"

# ---- scriptlets, run against stand-ins --------------------------------------
stubs=$work/stubs
mkdir -p "$stubs"
log=$work/calls.log
cat >"$stubs/stub" <<EOF
#!/bin/sh
echo "\${0##*/} \$*" >>"$log"
case \${0##*/} in getent) exit \${GETENT_RC:-0} ;; esac
exit 0
EOF
chmod 755 "$stubs/stub"
for c in getent groupadd useradd userdel groupdel systemctl mkdir chown chmod rm rmdir; do
  ln -sf stub "$stubs/$c"
done
sh=$(command -v sh)
for s in PREIN POSTIN PREUN POSTUN; do
  rpm -qp --qf "%{$s}" "$rpm_" >"$work/$s.sh"
done
# run <scriptlet> <$1> [getent rc]: what it called, one command a line
run() {
  : >"$log"
  if ! GETENT_RC=${3:-0} PATH=$stubs "$sh" "$work/$1.sh" "$2" >"$work/out" 2>&1; then
    fail "%$1 $2 exited non-zero: $(cat "$work/out")"
  fi
  [ ! -s "$work/out" ] || fail "%$1 $2 printed: $(cat "$work/out")"
  cat "$log"
}
systemd_runs=false
[ -d /run/systemd/system ] && systemd_runs=true
units="c8y-agent.service c8y-agent-priv.socket"

# first install: user and group (Debian: adduser --system --group), state
# dir 0750, both units enabled, the agent not started
c=$(run PREIN 1 2)
check "install: %pre adds the system group" has "$c" "^groupadd -r $user\$"
check "install: %pre adds the system user (home $state, no shell)" \
  has "$c" "^useradd -r -g $user -d $state -M -s /usr/sbin/nologin -c Cumulocity IoT agent $user\$"
c=$(run POSTIN 1)
check "install: %post makes $state" has "$c" "^mkdir -p $state\$"
check "install: %post owns it to $user" has "$c" "^chown $user:$user $state\$"
check "install: %post makes it 0750" has "$c" "^chmod 0750 $state\$"
check "install: %post enables both units" has "$c" "^systemctl --no-reload enable $units\$"
check "install: %post does not start the agent" hasnt "$c" 'start c8y-agent\.service'
if $systemd_runs; then
  check "install: %post starts the helper's socket" has "$c" '^systemctl start c8y-agent-priv\.socket$'
fi

# upgrade: nothing re-created or re-enabled; the running agent restarted
c=$(run PREIN 2 0)
check "upgrade: %pre keeps the existing user" hasnt "$c" '^(useradd|groupadd)'
c=$(run POSTIN 2)
check "upgrade: %post keeps the administrator's enablement" hasnt "$c" 'enable|disable'
c=$(run PREUN 1)
check "upgrade: %preun of the old package stops nothing" hasnt "$c" 'stop|disable'
c=$(run POSTUN 1)
check "upgrade: %postun keeps the state" hasnt "$c" '^rm '
if $systemd_runs; then
  check "upgrade: %postun restarts a running agent" has "$c" '^systemctl try-restart c8y-agent\.service$'
fi
check "upgrade: the helper's socket is never restarted" hasnt "$c" 'restart c8y-agent-priv'

# erase = Debian's remove + purge: stopped, disabled, state removed, user kept
c=$(run PREUN 0)
check "erase: %preun disables both units" has "$c" "^systemctl --no-reload disable $units\$"
if $systemd_runs; then
  check "erase: %preun stops both" has "$c" "^systemctl stop $units\$"
fi
c=$(run POSTUN 0)
check "erase: %postun removes $state" has "$c" "^rm -rf $state\$"
check "erase: the user and group are kept" hasnt "$c" '^(userdel|groupdel)'

echo "$failures failure(s)"
[ $failures -eq 0 ]
