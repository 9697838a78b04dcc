#!/bin/sh
# Fake http_helper for test_plugin_configuration: "downloads" file:// URLs
# with cp and "uploads" by logging the call and printing a binary URL.
set -eu
case "$1" in
download)
  cp "${2#file://}" "$3"
  ;;
upload)
  echo "$C8Y_DEVICE_ID $C8Y_CONFIG_TYPE $2 $3" >>"$FAKE_HELPER_LOG"
  echo "https://127.0.0.1/inventory/binaries/4242"
  ;;
*)
  echo "usage: $0 download|upload ..." >&2
  exit 2
  ;;
esac
