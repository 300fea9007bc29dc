#!/usr/bin/env bash
# Renders an attribution-graph page (`mechinterp graph … --out DIR` writes DIR/graph.html) in
# headless Chromium (Debian's `chromium` package), checks from the DOM Chromium built that every
# node of DIR/graph.json was drawn and that a click on PIN answers, and writes a PNG screenshot
# to check the page by eye:
#   scripts/graph_screenshot.sh IN.html OUT.png [PIN]
# PIN is a node id of graph.json (e.g. 19_3681_5, a logit); the page clicks it on load
# (`#pin=PIN`), so the screenshot shows its strongest paths. Without PIN, the first logit.
set -euo pipefail
in=$(realpath "$1"); out=$2; pin=${3:-}
json=$(dirname "$in")/graph.json
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --user-data-dir="$profile")
if [[ -z "$pin" && -f "$json" ]]; then
  pin=$(python3 -c 'import json,sys; print(next(n["node_id"] for n in json.load(open(sys.argv[1]))["nodes"] if n["feature_type"]=="logit"))' "$json")
fi
url="file://$in"; [[ -n "$pin" ]] && url="$url#pin=$pin"
dom=$(chromium "${flags[@]}" --dump-dom "$url" 2>/dev/null)
count() { grep -o "$1" <<<"$2" | wc -l; }
fail=0
drawn=$(count '<g class="node ' "$dom")
if [[ -f "$json" ]]; then
  want=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["nodes"]))' "$json")
  [[ $drawn -eq $want ]] || { echo "FAIL: $drawn nodes drawn, graph.json has $want"; fail=1; }
fi
if [[ -n "$pin" ]]; then
  hl=$(grep -o 'data-highlighted-edges="[0-9]*"' <<<"$dom" | grep -o '[0-9]*' || true)
  grep -q 'class="node [a-z]* pinned"' <<<"$dom" || { echo "FAIL: the click on $pin pinned nothing"; fail=1; }
  echo "pinned $pin: ${hl:-0} edges highlighted"
fi
echo "rendered: $drawn nodes, $(count '<path' "$dom") edges"
if grep -Eq '(src|href)="https?://|url\(https?:' <<<"$dom"; then
  echo "FAIL: the page references the network"; fail=1
fi
[[ $fail -eq 0 ]] || exit 1
# As wide and tall as the drawing, plus the header and the side panel.
w=$(grep -o '<svg [^>]*width="[0-9.]*"' <<<"$dom" | head -1 | grep -o 'width="[0-9.]*"' | grep -o '[0-9.]*' || echo 1000)
h=$(grep -o '<svg [^>]*height="[0-9.]*"' <<<"$dom" | head -1 | grep -o 'height="[0-9.]*"' | grep -o '[0-9.]*' || echo 800)
width=$(python3 -c "print(min(4000, int(float('$w')) + 400))")
height=$(python3 -c "print(min(6000, int(float('$h')) + 200))")
chromium "${flags[@]}" --hide-scrollbars --window-size="$width,$height" \
  --screenshot="$out" "$url" 2>/dev/null
echo "wrote $out"
