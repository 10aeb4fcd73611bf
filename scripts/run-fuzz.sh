#!/usr/bin/env bash
# Builds the fuzz targets (tests/fuzz/fuzz_*.cpp) with clang, libFuzzer, AddressSanitizer and
# UBSan in build-fuzz/, and runs each for LYRE_FUZZ_SECONDS (default 60) from its seed corpus.
# A crash, leak, timeout or sanitizer report fails the run and leaves the input that caused it
# in build-fuzz/ (crash-*, leak-*, timeout-*). CI runs this after the tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${LYRE_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${LYRE_FUZZ_SECONDS:-60}
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLYRE_FUZZ=ON \
  -DLYRE_FUZZ_SECONDS="$seconds" >/dev/null
targets=$(cd "$root/tests/fuzz" && ls fuzz_*.cpp | sed 's/\.cpp$//')
# shellcheck disable=SC2086
cmake --build "$build" --target $targets
cd "$build/tests/fuzz"
ctest --test-dir "$build" -L fuzz --output-on-failure
