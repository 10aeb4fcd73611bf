#!/usr/bin/env bash
# Builds the tokenizer tests' text corpus from files Debian packages install, deterministically
# (sorted file lists, fixed byte caps): C++ headers (code), common licenses (English prose), and
# man pages in Japanese, Chinese, Russian and French (non-ASCII prose).
# Usage: make_corpus.sh OUT. Fails when the result is under 1.2 MB or under 25% non-ASCII lines.
set -euo pipefail
out=${1:?usage: make_corpus.sh OUT}
export LC_ALL=C
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

# Appends files (sorted) until `cap` bytes have come from this group; `cat_cmd` reads one file.
add_group() {
  local cap=$1 cat_cmd=$2; shift 2
  local total=0 f
  for f in $(printf '%s\n' "$@" | sort); do
    [[ -f $f ]] || continue
    (( total >= cap )) && break
    $cat_cmd "$f" >>"$tmp" 2>/dev/null || continue
    total=$(stat -c %s "$tmp")
    total=$(( total - ${group_start:-0} ))
  done
  group_start=$(stat -c %s "$tmp")
}

group_start=0
shopt -s nullglob globstar
add_group 200000 cat /usr/include/nlohmann/*.hpp /usr/include/nlohmann/detail/**/*.hpp
add_group 100000 cat /usr/include/spdlog/**/*.h
add_group 200000 cat /usr/share/common-licenses/*
for lang in ja zh_CN ru fr; do
  add_group 200000 "gzip -dc" /usr/share/man/$lang/man1/*.gz
done

size=$(stat -c %s "$tmp")
lines=$(wc -l <"$tmp")
nonascii=$(grep -c -P '[^\x00-\x7F]' "$tmp" || true)
if (( size < 1200000 )); then
  echo "make_corpus: only $size bytes (need >= 1200000): are nlohmann-json3-dev, libspdlog-dev and manpages-{ja,zh,ru,fr} installed? (scripts/install-deps.sh)" >&2
  exit 1
fi
if (( nonascii * 4 < lines )); then
  echo "make_corpus: only $nonascii of $lines lines hold non-ASCII text (need >= 25%): are manpages-{ja,zh,ru,fr} installed?" >&2
  exit 1
fi
mv "$tmp" "$out"
trap - EXIT
echo "make_corpus: $out: $size bytes, $lines lines, $nonascii with non-ASCII"
