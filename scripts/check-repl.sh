#!/usr/bin/env bash
# CI: a three-line session piped through the terminal REPL launcher (load the default model,
# run a prompt, print the top next tokens) must print the expected answer.
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
out="$(printf '%s\n' \
  'let model = HookedTransformer::gemma3_270m()?;' \
  'let logits = model.forward(&model.to_tokens("English: I like green apples.\nFrench: J'"'"'aime les pommes")?)?;' \
  'println!("TOP {:?}", model.top_next_tokens(&logits, 3)?);' \
  | "$project/scripts/repl.sh" 2>&1)"
# Anywhere in a line: with TERM=dumb, rustyline prints its ">> " prompts to stdout before it.
if ! grep -q 'TOP \[(" vertes"' <<<"$out"; then
  echo "$out" | tail -20
  echo "FAIL: the REPL session did not print \" vertes\" as the top next token"
  exit 1
fi
echo "ok: $(grep -o 'TOP .*' <<<"$out")"
