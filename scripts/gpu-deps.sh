#!/usr/bin/env bash
# Packs what a GPU machine without Debian's packages needs to build lyre with backend-cuda, into
# .gpu-deps/ (git-ignored; small enough to travel beside the working tree), for
# scripts/gpu-check.sh to unpack there into a private prefix. Runs HERE, on Debian 12 with apt.
#
#   .gpu-deps/debs/*.deb         Debian packages as apt-get download fetches them
#   .gpu-deps/slim/*.tar.xz      two -dev packages cut down to what the build reads: all of
#                                libboost1.74-dev is 9 MiB (138 MiB unpacked) and libicu-dev 10 MiB
#                                (static archives), against under 1 MiB kept of the two
#   .gpu-deps/parity-golden/     backend-torch's reference outputs for the parity test
#                                (LYRE_PARITY_GOLDEN there: the GPU build has no LibTorch)
#   .gpu-deps/manifest.txt       what is in it, sizes, and the glibc / libstdc++ versions the
#                                carried binaries need (gpu-check.sh checks them first)
#
# Usage: scripts/gpu-deps.sh [--no-golden]
#   --no-golden: leave .gpu-deps/parity-golden as it is (no build of backend-torch)
#   BUILD_DIR [build]: the full build (backend-torch on) whose parity_golden_writer writes them
#   JOBS [2]: its build parallelism
#   MAX_MIB [45]: fail when the carrier is larger (the device tool carries 64 MiB in all)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}
MAX_MIB=${MAX_MIB:-45}
write_golden=1
for arg in "$@"; do
  case "$arg" in
    --no-golden) write_golden=0 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "gpu-deps: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "gpu-deps: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# Carried as they come. The runtime libraries are here because the GPU image lacks them, not
# only their -dev halves: the host links libboost_filesystem, libspdlog (-> libfmt), libpcre2-8,
# libicu*, libsimdjson, libprotobuf-c, and opens libsentencepiece; protoc and protoc-gen-c run at
# build time (-> libprotoc, libprotobuf). pkgconf: CMake's pkg_check_modules needs a pkg-config.
debs=(
  libboost-filesystem1.74.0 libboost-filesystem1.74-dev
  nlohmann-json3-dev
  libspdlog1.10 libspdlog-dev libfmt9 libfmt-dev
  libpcre2-8-0 libpcre2-dev
  libicu72
  libsimdjson14 libsimdjson-dev
  libsentencepiece0 libsentencepiece-dev
  libprotobuf-c1 libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libprotoc32 libprotobuf32
  catch2
  libdlpack-dev
  pkgconf pkgconf-bin libpkgconf3
)
# Cut down (slim/<package>.tar.xz); see slim_boost and slim_icu below.
slimmed=(libboost1.74-dev libicu-dev)
# What any glibc/gcc system has; the carried ELF files may need nothing else from outside.
base_libs='^(libc|libm|libdl|libpthread|librt|ld-linux-x86-64|libstdc\+\+|libgcc_s|libz)\.so'

command -v apt-get >/dev/null || die "apt-get not found: run this on the Debian 12 machine"
out=$repo/.gpu-deps
stage=$(mktemp -d "${TMPDIR:-/tmp}/lyre-gpu-deps.XXXXXX")
trap 'rm -rf "$stage"' EXIT
start=$SECONDS

# ---- download ----
say "downloading ${#debs[@]} packages + ${#slimmed[@]} to cut down"
rm -rf "$out/debs" "$out/slim"
mkdir -p "$out/debs" "$out/slim" "$stage/slim-debs" "$stage/prefix"
# Sandbox user root: the target folders need not be readable by _apt.
(cd "$out/debs" && apt-get download -q -o APT::Sandbox::User=root "${debs[@]}") >"$stage/apt.log" 2>&1 ||
  { cat "$stage/apt.log" >&2; die "apt-get download (try apt-get update first)"; }
(cd "$stage/slim-debs" && apt-get download -q -o APT::Sandbox::User=root "${slimmed[@]}") >>"$stage/apt.log" 2>&1 ||
  { cat "$stage/apt.log" >&2; die "apt-get download of ${slimmed[*]}"; }

# ---- cut down the two big -dev packages ----
# Boost: only the header libraries the host's #includes reach (Boost.DLL, Boost.Filesystem and
# what they pull in), each taken whole so that another compiler's #if branches find theirs too,
# plus every top-level boost/*.hpp and the CMake package configs.
slim_boost() {
  local deb=$1 tree=$stage/boost
  dpkg-deb -x "$deb" "$tree"
  local sources
  mapfile -t sources < <(grep -rl --include='*.cpp' --include='*.hpp' '#include <boost/' framework plugins tests bench)
  ((${#sources[@]})) || die "no source includes <boost/...>; is this the lyre tree?"
  local modules
  modules=$(for f in "${sources[@]}"; do
              g++ -std=c++17 -M -MG -DBOOST_ALL_NO_LIB -DBOOST_FILESYSTEM_DYN_LINK \
                -Iframework -Isdk/include -isystem "$tree/usr/include" "$f"
            done | tr ' \\' '\n\n' | sed -n "s|^$tree/usr/include/boost/\([^/]*\)/.*|\1|p" | sort -u) ||
    die "g++ -M on the sources that include Boost"
  [[ -n "$modules" ]] || die "found no Boost header library in the includes' closure"
  local keep=() m
  for m in $modules utility; do keep+=("usr/include/boost/$m"); done
  (cd "$tree" && tar -cJf "$out/slim/libboost1.74-dev.tar.xz" "${keep[@]}" usr/include/boost/*.hpp \
     usr/lib/x86_64-linux-gnu/cmake/Boost-1.74.0 usr/lib/x86_64-linux-gnu/cmake/boost_headers-1.74.0 \
     usr/lib/x86_64-linux-gnu/cmake/BoostDetectToolset-1.74.0.cmake) || die "packing the Boost headers"
  boost_modules=$(echo $modules utility)
}
# ICU: the headers, the unversioned .so links and the pkg-config files; not the 44 MiB of static
# archives (the host links ICU shared; libicu72 is carried as a .deb).
slim_icu() {
  local deb=$1 tree=$stage/icu
  dpkg-deb -x "$deb" "$tree"
  (cd "$tree" && tar -cJf "$out/slim/libicu-dev.tar.xz" usr/include/unicode usr/lib/x86_64-linux-gnu/*.so \
     usr/lib/x86_64-linux-gnu/pkgconfig) || die "packing the ICU headers"
}
boost_modules=""
slim_boost "$(ls "$stage"/slim-debs/libboost1.74-dev_*.deb)"
slim_icu "$(ls "$stage"/slim-debs/libicu-dev_*.deb)"

# ---- closure: every library a carried binary needs is carried or in the base system ----
for d in "$out"/debs/*.deb; do dpkg-deb -x "$d" "$stage/prefix"; done
for t in "$out"/slim/*.tar.xz; do tar -xJf "$t" -C "$stage/prefix"; done
mapfile -t elfs < <(find "$stage/prefix" -type f \( -name '*.so*' -o -path '*/usr/bin/*' \) \
                      -exec sh -c 'head -c4 "$1" | grep -q ELF' _ {} \; -print)
missing=()
for f in "${elfs[@]}"; do
  while read -r lib; do
    [[ "$lib" =~ $base_libs ]] && continue
    [[ -e "$stage/prefix/usr/lib/x86_64-linux-gnu/$lib" ]] || missing+=("$lib (needed by ${f#$stage/prefix/})")
  done < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done
((${#missing[@]} == 0)) || die "carried binaries need libraries nobody carries: ${missing[*]}"

# The newest symbol versions those binaries ask of glibc and libstdc++ (gpu-check.sh compares
# them with the GPU machine's before building anything).
newest() {
  local prefix=$1
  for f in "${elfs[@]}"; do readelf -W --version-info "$f"; done |
    grep -o "Name: ${prefix}_[0-9][0-9.]*" | sed "s/Name: ${prefix}_//" | sort -uV | tail -1
}
need_glibc=$(newest GLIBC)
need_glibcxx=$(newest GLIBCXX)
need_cxxabi=$(newest CXXABI)

# ---- golden files of the parity test (backend-torch's outputs) ----
# tests/parity's parity_golden_writer runs the parity cases through backend-torch at fp64 (LibTorch,
# which only this machine has) and writes their inputs and results; on the GPU machine
# LYRE_PARITY_GOLDEN=.gpu-deps/parity-golden stands in for backend-torch.
golden_note="not written (--no-golden)"
if [[ -d "$out/parity-golden" ]]; then
  golden_note="kept from an earlier run (--no-golden): $(find "$out/parity-golden" -type f | wc -l) files"
fi
if ((write_golden)); then
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    say "configuring $BUILD_DIR (a full build: backend-torch writes the golden files)"
    launcher=()
    command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLYRE_BACKEND_CUDA=OFF "${launcher[@]}" \
      >"$stage/golden-build.log" 2>&1 ||
      { tail -40 "$stage/golden-build.log" >&2; die "configuring $BUILD_DIR for the golden files"; }
  fi
  grep -q '^LYRE_BACKEND_TORCH:BOOL=OFF' "$BUILD_DIR/CMakeCache.txt" &&
    die "$BUILD_DIR has LYRE_BACKEND_TORCH=OFF; the golden files need backend-torch (set BUILD_DIR)"
  say "building parity_golden_writer and backend-torch in $BUILD_DIR"
  cmake --build "$BUILD_DIR" -j "$JOBS" --target parity_golden_writer lyre-backend-torch \
    >>"$stage/golden-build.log" 2>&1 ||
    { tail -40 "$stage/golden-build.log" >&2; die "building parity_golden_writer in $BUILD_DIR"; }
  rm -rf "$out/parity-golden"
  LYRE_PLUGIN_PATH="$(cd "$BUILD_DIR" && pwd)/lib/lyre/plugins" \
    "$BUILD_DIR/bin/parity_golden_writer" "$out/parity-golden" >"$stage/golden.log" 2>&1 ||
    { tail -40 "$stage/golden.log" >&2; die "$BUILD_DIR/bin/parity_golden_writer $out/parity-golden"; }
  cat "$stage/golden.log" >&2
  golden_note="$(find "$out/parity-golden" -type f | wc -l) files, $(du -sb "$out/parity-golden" | cut -f1) bytes"
fi

# ---- manifest ----
version_of() { dpkg-deb -f "$1" Version; }
{
  echo "# lyre GPU dependency carrier: scripts/gpu-deps.sh made it, scripts/gpu-check.sh unpacks it."
  echo "# made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release; echo "$PRETTY_NAME"), lyre $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "# form package version file bytes"
  for d in "$out"/debs/*.deb; do
    echo "deb $(dpkg-deb -f "$d" Package) $(version_of "$d") debs/$(basename "$d") $(stat -c %s "$d")"
  done
  for p in "${slimmed[@]}"; do
    d=$(ls "$stage"/slim-debs/"${p}"_*.deb)
    echo "slim $p $(version_of "$d") slim/$p.tar.xz $(stat -c %s "$out/slim/$p.tar.xz")"
  done
  echo "# libboost1.74-dev keeps boost/{$(echo "$boost_modules" | tr ' ' ',')}, boost/*.hpp and the CMake configs"
  echo "# libicu-dev keeps usr/include/unicode, the .so links and the .pc files"
  echo "need-glibc $need_glibc"
  echo "need-glibcxx $need_glibcxx"
  echo "need-cxxabi $need_cxxabi"
  echo "golden $golden_note"
} >"$out/manifest.txt"
total=$(du -sb "$out" | cut -f1)
echo "total-bytes $total" >>"$out/manifest.txt"

say "$(grep -c '^deb ' "$out/manifest.txt") debs, ${#slimmed[@]} cut down, golden: $golden_note"
say "needs glibc >= $need_glibc, GLIBCXX_$need_glibcxx, CXXABI_$need_cxxabi on the GPU machine"
say "$out: $((total / 1024)) KiB in all ($((SECONDS - start)) s)"
((total <= MAX_MIB * 1024 * 1024)) || die "$out is $((total / 1048576)) MiB, over MAX_MIB=$MAX_MIB"
