#!/usr/bin/env bash
# Renders an attention-viewer HTML file in headless Chromium (Debian's `chromium` package)
# and writes a PNG screenshot, to check the viewer by eye: scripts/viewer_screenshot.sh IN.html OUT.png
set -euo pipefail
in=$(realpath "$1"); out=$2
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1000,420 --screenshot="$out" "file://$in" 2>/dev/null
echo "wrote $out"
