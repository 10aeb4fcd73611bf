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
         lib/lyre/plugins/liblyre-checkpointer-safetensors.so lib/lyre/liblyre-sentencepiece.so; do
  [[ -e "$work/prefix/$f" ]] || fail "install did not write $f"
done
torch=0
if [[ -e "$build/lib/lyre/plugins/liblyre-backend-torch.so" ]]; then
  torch=1
  [[ -e "$work/prefix/lib/lyre/plugins/torch/liblyre-backend-torch-impl.so" ]] \
    || fail "install did not write backend-torch's implementation (lib/lyre/plugins/torch/)"
fi
if [[ -e "$build/lib/lyre/plugins/liblyre-backend-cuda.so" ]]; then
  [[ -e "$work/prefix/lib/lyre/plugins/cuda/liblyre-backend-cuda-impl.so" ]] \
    || fail "install did not write backend-cuda's implementation (lib/lyre/plugins/cuda/)"
fi

# The installed binary finds the installed plugins beside it, with no environment help.
"$work/prefix/bin/lyre" plugins > "$work/plugins.txt"
grep -q "$work/prefix/lib/lyre/plugins/liblyre-backend-cpu.so" "$work/plugins.txt" || fail "backend-cpu not found: $(cat "$work/plugins.txt")"
built=$(find "$build/lib/lyre/plugins" -maxdepth 1 -name 'liblyre-*.so' | wc -l)
grep -q "$built files found, $built loaded, 0 rejected" "$work/plugins.txt" || fail "unexpected listing: $(cat "$work/plugins.txt")"

# The installed backend-torch finds its LibTorch implementation in the install tree and trains.
if ((torch)); then
  "$work/prefix/bin/lyre" train "$build/examples/quickstart/config.json" --set backend=torch \
    --set steps=2 --set log_steps_interval=1 --set exact_match=null --set eval_dataloader=null \
    --set eval_steps_interval=null > "$work/train-torch.log" 2>&1 \
    || fail "training on the installed backend-torch failed: $(cat "$work/train-torch.log")"
  grep -q "backend-torch" "$work/train-torch.log" || fail "not on backend-torch: $(cat "$work/train-torch.log")"
  grep -q "step 2/2" "$work/train-torch.log" || fail "no step 2 in: $(cat "$work/train-torch.log")"
fi

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
