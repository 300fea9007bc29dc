#!/usr/bin/env bash
# Renders a feature-dashboard page (`mechinterp sae dashboard … --out DIR` writes
# DIR/dashboard.html) in headless Chromium (Debian's `chromium` package), checks from the DOM
# Chromium built that every latent's card, contexts and histogram are there, and writes a PNG
# screenshot to check the page by eye:
#   scripts/dashboard_screenshot.sh IN.html OUT.png [LATENTS]
# LATENTS (e.g. 12,40) are the latents the page must show; without it, every card the file
# declares must come out of the browser.
set -euo pipefail
in=$(realpath "$1"); out=$2; want=${3:-}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --user-data-dir="$profile")
dom=$(chromium "${flags[@]}" --dump-dom "file://$in" 2>/dev/null)
count() { grep -o "$1" <<<"$2" | wc -l; }
cards=$(count '<section class="latent"' "$dom")
if [[ -z "$want" ]]; then
  want=$(grep -o 'data-latent="[0-9]*"' "$in" | grep -o '[0-9]*' | paste -sd, -)
fi
IFS=, read -ra latents <<<"$want"
fail=0
for l in "${latents[@]}"; do
  if ! grep -q "data-latent=\"$l\"" <<<"$dom"; then
    echo "FAIL: latent $l has no card in the rendered page"; fail=1
  fi
done
if [[ $cards -ne ${#latents[@]} ]]; then
  echo "FAIL: the rendered page has $cards cards, expected ${#latents[@]} (${want})"; fail=1
fi
svgs=$(count '<svg' "$dom"); ctxs=$(count 'class="ctx"' "$dom")
echo "rendered: $cards latent cards, $svgs histograms, $ctxs context lines"
if grep -Eq '(src|href)="https?://' <<<"$dom"; then
  echo "FAIL: the page references the network"; fail=1
fi
[[ $fail -eq 0 ]] || exit 1
# Tall enough for every card (about 430 px each, a header above).
height=$((160 + 440 * cards)); (( height > 8000 )) && height=8000
chromium "${flags[@]}" --hide-scrollbars --window-size=1280,"$height" \
  --screenshot="$out" "file://$in" 2>/dev/null
echo "wrote $out"
