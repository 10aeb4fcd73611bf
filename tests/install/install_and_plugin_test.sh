#!/usr/bin/env bash
# usage: install_and_plugin_test.sh BUILD_DIR SOURCE_DIR GENERATOR
set -euo pipefail
build=$1 source=$2 generator=$3
work=$(mktemp -d /tmp/lyre-install-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
unset LYRE_PLUGIN_PATH
fail() { echo "FAILED: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
for f in bin/lyre include/lyre/abi.h include/lyre/plugin.hpp lib/cmake/lyre/lyreConfig.cmake \
         lib/lyre/plugins/liblyre-backend-cpu.so lib/lyre/plugins/liblyre-objective-sft.so \
         lib/lyre/plugins/liblyre-checkpointer-safetensors.so; do
  [[ -e "$work/prefix/$f" ]] || fail "install did not write $f"
done

# The installed binary finds the installed plugins beside it, with no environment help.
"$work/prefix/bin/lyre" plugins > "$work/plugins.txt"
grep -q "$work/prefix/lib/lyre/plugins/liblyre-backend-cpu.so" "$work/plugins.txt" || fail "backend-cpu not found: $(cat "$work/plugins.txt")"
grep -q "3 files found, 3 loaded, 0 rejected" "$work/plugins.txt" || fail "unexpected listing: $(cat "$work/plugins.txt")"

# A user's objective, built against the installed SDK only.
cmake -S "$source/examples/objective-plugin" -B "$work/plugin-build" -G "$generator" \
      -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release > "$work/plugin-configure.log"
cmake --build "$work/plugin-build" > "$work/plugin-build.log" || fail "out-of-tree build: $(cat "$work/plugin-build.log")"
[[ -e "$work/plugin-build/liblyre-objective-seq-mean.so" ]] || fail "no liblyre-objective-seq-mean.so"
exported=$(nm -D --defined-only "$work/plugin-build/liblyre-objective-seq-mean.so" | awk '{print $3}')
[[ "$exported" == "lyre_plugin_init" ]] || fail "the plugin exports more than lyre_plugin_init: $exported"

export LYRE_PLUGIN_PATH="$work/plugin-build"
"$work/prefix/bin/lyre" plugins > "$work/plugins2.txt"
grep -q "name:        objective-seq-mean" "$work/plugins2.txt" || fail "seq-mean not listed: $(cat "$work/plugins2.txt")"

# ... and training uses it.
"$work/prefix/bin/lyre" train "$build/examples/quickstart/config.json" \
  --set 'objective={"name": "seq-mean"}' --set steps=3 --set log_steps_interval=1 \
  --set exact_match=null --set eval_dataloader=null --set eval_steps_interval=null > "$work/train.log" 2>&1 \
  || fail "training with seq-mean failed: $(cat "$work/train.log")"
grep -q "step 3/3" "$work/train.log" || fail "no step 3 in: $(cat "$work/train.log")"
echo "install test passed"
