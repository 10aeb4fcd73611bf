#!/usr/bin/env bash
# Installs the Debian 12 packages lyre needs to build and test. Idempotent: installs only what
# is missing, so a second run changes nothing and needs no network. Run as root (or with sudo).
#   --bench   also the benchmark peer (python3-torch)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libboost-dev libboost-filesystem-dev   # Boost.DLL (header-only) and its filesystem
  libdnnl-dev                            # oneDNN: the CPU backend's matmuls
  libdlpack-dev                          # DLTensor, how tensors cross the plugin ABI
  nlohmann-json3-dev libspdlog-dev catch2
  libpcre2-dev                           # tokenizers' split regexes (look-ahead, Unicode classes)
  libicu-dev                             # Unicode normalization (NFC/NFKC) that tokenizers ask for
  libsimdjson-dev                        # JSONL datasets at GB/s
  libtorch-dev                           # LibTorch: backend-torch, the numerical reference the parity tests compare against
  libsentencepiece-dev sentencepiece     # SentencePiece .model files; spm_train builds test models
  clang libclang-rt-14-dev               # libFuzzer: the fuzz targets that CI runs for a bounded time
  protobuf-compiler protobuf-c-compiler libprotobuf-c-dev  # TensorBoard events: protoc compiles Event/Summary to C
  python3                                # tests read our safetensors and configs with Python's stdlib
  manpages-ja manpages-zh manpages-ru manpages-fr  # real non-ASCII prose for the tokenizer tests
)
# node and npm run the reference tokenizers the tests compare against (scripts/fetch-test-data.sh).
# A machine may carry them from elsewhere (NodeSource's nodejs bundles npm and conflicts with
# Debian's npm package), so install Debian's only when the commands are missing.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then packages+=(nodejs npm); fi
if [[ "${1:-}" == "--bench" ]]; then
  # libopenblas0-openmp: the BLAS that gives the PyTorch peer its best speed here (docs/benchmarks.md)
  packages+=(python3-torch python3-numpy libopenblas0 libopenblas0-openmp)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
