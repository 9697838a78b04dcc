#!/bin/sh
# Stands in for diag_program: runs the real `c8y-agent diag` (args: diag
# --output FILE --lines N) and keeps a copy of the archive it wrote, which
# the plugin removes after the upload. DIAG_FAIL=1: fails like a broken
# binary would.
[ -z "$DIAG_FAIL" ] || { echo "diag broke" >&2; exit 3; }
"$C8Y_AGENT_BIN" "$@" || exit $?
cp "$3" "$DIAG_COPY"
