#!/bin/sh
# Fake http_helper for test_plugin_logfile: keeps a copy of the uploaded file
# and prints a binary URL, or fails like an HTTP error when asked to.
set -eu
if [ "$1" != upload-log ] || [ $# -ne 3 ]; then
  echo "usage: $0 upload-log <name> <file>" >&2
  exit 2
fi
if [ -n "${FAKE_HELPER_FAIL:-}" ]; then
  echo "HTTP 401 Unauthorized" >&2
  exit 4
fi
cp "$3" "$FAKE_HELPER_COPY"
echo "$C8Y_DEVICE_ID $2 $C8Y_LOG_NAME $C8Y_LOG_LINES" >"$FAKE_HELPER_COPY.meta"
echo "https://127.0.0.1/inventory/binaries/7777"
