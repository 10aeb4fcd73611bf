#!/usr/bin/env bash
# Builds the fuzz targets (tests/fuzz/fuzz_*.cpp) with clang, libFuzzer, AddressSanitizer and
# UBSan in build-fuzz/, and runs each for LYRE_FUZZ_SECONDS (default 60) from its seed corpus,
# with libFuzzer's -seed=LYRE_FUZZ_SEED (default 1, so CI is reproducible; 0 is random, for
# hunting: LYRE_FUZZ_SEED=0 LYRE_FUZZ_SECONDS=1800 scripts/run-fuzz.sh).
# A crash, leak, timeout or sanitizer report fails the run and leaves the input that caused it
# in build-fuzz/ (crash-*, leak-*, timeout-*). CI runs this after the tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${LYRE_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${LYRE_FUZZ_SECONDS:-60}
seed=${LYRE_FUZZ_SEED:-1}
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLYRE_FUZZ=ON \
  -DLYRE_FUZZ_SECONDS="$seconds" -DLYRE_FUZZ_SEED="$seed" >/dev/null
targets=$(cd "$root/tests/fuzz" && ls fuzz_*.cpp | sed 's/\.cpp$//')
# shellcheck disable=SC2086
cmake --build "$build" --target $targets
cd "$build/tests/fuzz"
ctest --test-dir "$build" -L fuzz --output-on-failure
