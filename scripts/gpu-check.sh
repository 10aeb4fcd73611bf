#!/usr/bin/env bash
# backend-cuda on a GPU machine, in one call from the repository root: unpacks the Debian
# packages scripts/gpu-deps.sh carried in .gpu-deps/ into a private prefix (never into /),
# configures and builds lyre against it (no backend-cpu, no backend-torch: sm_90, Ninja), runs
# the gpu-labelled tests (the parity reference comes from .gpu-deps/parity-golden) and the GPU
# benchmark (bench/run_gpu_bench.sh), and prints one summary table last.
#
# Usage: bash scripts/gpu-check.sh [--skip-build] [--only-tests | --only-bench] [--build-dir DIR]
#                                  [--jobs N]
#   --skip-build   use the build already in DIR (a second call on a machine still warm)
#   --only-tests   build (unless --skip-build) and run the tests, no benchmark
#   --only-bench   build (unless --skip-build) and run the benchmark, no tests
# Environment: BUILD_DIR [build-gpu], JOBS [16], CTEST_TIMEOUT [300 s per test],
#   GPU_CHECK_BUDGET_S [570]: the whole call's time; each phase is cut off (by timeout) so that
#   the summary and the logs still come out inside it, and a phase that cannot start in what is
#   left is skipped with the command that resumes it. The benchmark's own knobs pass through
#   (MODELS, STEPS, BATCH_1B, ... see bench/run_gpu_bench.sh).
# Logs (full build, ctest and benchmark output, the summary) go to $OUT when it is set, else to
# DIR/gpu-check-logs; they are written as the phases run, so a call cut off still leaves them.
#
# Every step that fails says so in a line starting "gpu-check: FAILED", naming the step.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
BUILD_DIR=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-16}
CTEST_TIMEOUT=${CTEST_TIMEOUT:-300}
BUDGET_S=${GPU_CHECK_BUDGET_S:-570}
skip_build=0
run_tests=1
run_bench=1
while (($#)); do
  case "$1" in
    --skip-build) skip_build=1 ;;
    --only-tests) run_bench=0 ;;
    --only-bench) run_tests=0 ;;
    --build-dir) BUILD_DIR=${2:?--build-dir needs a value}; shift ;;
    --jobs) JOBS=${2:?--jobs needs a value}; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
((run_tests || run_bench)) || { echo "gpu-check: --only-tests and --only-bench exclude each other" >&2; exit 2; }

deps=$repo/.gpu-deps
mkdir -p "$BUILD_DIR" || { echo "gpu-check: FAILED: cannot create $BUILD_DIR" >&2; exit 1; }
build=$(cd "$BUILD_DIR" && pwd)
prefix=$build/deps-prefix
deps_lib=$prefix/usr/lib/x86_64-linux-gnu
logs=${OUT:-$build/gpu-check-logs}
mkdir -p "$logs"
rm -f "$logs"/{gpu-check.log,build.log,tests.log,ctest-LastTest.log,bench.log,bench-results.tar.gz,summary.md}
exec > >(tee -a "$logs/gpu-check.log") 2>&1

phases=()        # "name rc seconds", in order
failed_steps=()  # what failed, for the last line
phase=""
phase_start=0

say() { echo "gpu-check: $*"; }
fail() { say "FAILED at ${phase:-setup}: $*"; failed_steps+=("$phase: $*"); }
begin() {
  phase=$1
  phase_start=$SECONDS
  echo
  echo "==== $phase (at ${SECONDS}s of ${BUDGET_S}s)"
}
end() {  # $1: rc
  local secs=$((SECONDS - phase_start))
  phases+=("$phase $1 $secs")
  if (($1 == 0)); then say "$phase: ok in ${secs}s"; else say "$phase: FAILED (rc $1) in ${secs}s"; fi
}
skip() {  # $1: why
  phases+=("$phase skipped 0")
  say "$phase: skipped ($1)"
}
# Seconds a phase may run: what is left of the budget, less a margin for the summary.
allowance() { local left=$((BUDGET_S - SECONDS - 20)); echo $((left > 1 ? left : 1)); }
# The tail of a log, for a failure's message.
show_tail() { echo "---- last $2 lines of $1"; tail -n "$2" "$1"; echo "----"; }

# The carried libraries' environment. LD_LIBRARY_PATH only for what runs lyre's binaries or the
# carried tools (cmake's pkg-config, ninja's protoc, ctest); the PyTorch peer keeps the caller's.
deps_ld_path=$deps_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
with_deps() {
  env LD_LIBRARY_PATH="$deps_ld_path" PATH="$prefix/usr/bin:$PATH" \
    PKG_CONFIG_PATH="$deps_lib/pkgconfig:$prefix/usr/share/pkgconfig" PKG_CONFIG_LIBDIR="" \
    CPATH="$prefix/usr/include${CPATH:+:$CPATH}" "$@"
}

# ---------------------------------------------------------------------------------------------
begin environment
env_rc=0
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname)  user: $(id -un)"
echo "os: $( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || uname -s) / kernel $(uname -r)"
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
[[ -n "$glibc" ]] || glibc=$(ldd --version 2>/dev/null | head -1 | grep -o '[0-9]\+\.[0-9]\+$')
echo "glibc: ${glibc:-unknown}"
echo "lyre: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git metadata') (working tree as copied)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi || say "nvidia-smi failed (rc $?): no usable driver or device; the tests will skip"
else
  say "nvidia-smi not found: no NVIDIA driver here; the tests will skip and the benchmark fail"
fi
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
missing_tools=()
for tool in cmake ninja g++ nvcc python3 tar; do
  command -v "$tool" >/dev/null || missing_tools+=("$tool")
done
if ((${#missing_tools[@]})); then
  fail "tools not found: ${missing_tools[*]}"
  env_rc=1
fi
echo "g++: $(g++ --version 2>/dev/null | head -1)"
echo "nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*, V[0-9.]*' | head -1) ($(command -v nvcc))"
echo "cmake: $(cmake --version 2>/dev/null | head -1)   ninja: $(ninja --version 2>/dev/null)   $(python3 --version 2>&1)"
echo "cpus: $(nproc)   memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)   disk free here: $(df -h . | awk 'NR == 2 {print $4}')"

# What the carried Debian 12 binaries ask of this machine's glibc and libstdc++.
if [[ ! -f "$deps/manifest.txt" ]]; then
  fail "$deps/manifest.txt not found: run 'bash scripts/gpu-deps.sh' on the Debian machine and carry .gpu-deps"
  env_rc=1
else
  need_glibc=$(awk '$1 == "need-glibc" {print $2}' "$deps/manifest.txt")
  need_glibcxx=$(awk '$1 == "need-glibcxx" {print $2}' "$deps/manifest.txt")
  echo "carried: $(grep -c '^deb ' "$deps/manifest.txt") .debs + $(grep -c '^slim ' "$deps/manifest.txt") cut down; they need glibc >= $need_glibc, GLIBCXX_$need_glibcxx"
  if [[ -n "$glibc" && -n "$need_glibc" ]] &&
     [[ "$(printf '%s\n%s\n' "$need_glibc" "$glibc" | sort -V | head -1)" != "$need_glibc" ]]; then
    fail "glibc $glibc is older than the $need_glibc the carried Debian 12 libraries need"
    env_rc=1
  fi
  libstdcxx=$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')
  [[ -n "$libstdcxx" ]] || libstdcxx=$(g++ -print-file-name=libstdc++.so.6 2>/dev/null)
  if [[ -n "$need_glibcxx" && -e "$libstdcxx" ]]; then
    if grep -qa "GLIBCXX_$need_glibcxx" "$(readlink -f "$libstdcxx")"; then
      echo "libstdc++: $(readlink -f "$libstdcxx") has GLIBCXX_$need_glibcxx"
    else
      fail "$(readlink -f "$libstdcxx") lacks GLIBCXX_$need_glibcxx (GCC 12's libstdc++), which the carried libraries need"
      env_rc=1
    fi
  fi
  if [[ -d "$deps/parity-golden" ]]; then
    echo "parity golden files: $(find "$deps/parity-golden" -type f | wc -l) in $deps/parity-golden"
  else
    say "warning: no $deps/parity-golden (gpu-deps.sh --no-golden?): the parity gpu tests have no reference"
  fi
fi
end $env_rc

# ---------------------------------------------------------------------------------------------
# Debian packages are data.tar.* inside an ar archive: dpkg-deb where it exists, else Python.
extract_deb() {  # $1: .deb, $2: destination
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$2"
  else
    python3 - "$1" "$2" <<'EOF'
import io, sys, tarfile
deb, dest = sys.argv[1:3]
with open(deb, "rb") as f:
    if f.read(8) != b"!<arch>\n":
        sys.exit(f"{deb}: not a Debian package (no ar header)")
    while True:
        header = f.read(60)
        if len(header) < 60:
            sys.exit(f"{deb}: no data.tar member")
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        data = f.read(size)
        f.read(size % 2)
        if name.startswith("data.tar"):
            kw = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
            tarfile.open(fileobj=io.BytesIO(data)).extractall(dest, **kw)
            break
EOF
  fi
}
extract_tar() {  # $1: .tar.xz, $2: destination
  if command -v xz >/dev/null; then
    tar -xJf "$1" -C "$2"
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
  fi
}

begin deps
deps_rc=0
# The packages' lines only: new golden files need no new prefix.
stamp_want=$(grep -E '^(deb|slim) ' "$deps/manifest.txt" 2>/dev/null | sha256sum | cut -d' ' -f1)
if [[ ! -f "$deps/manifest.txt" ]]; then
  fail "nothing to unpack ($deps/manifest.txt missing)"
  deps_rc=1
elif [[ -f "$prefix/.manifest-sha256" && "$(cat "$prefix/.manifest-sha256")" == "$stamp_want" ]]; then
  say "prefix $prefix is already unpacked from this manifest"
else
  rm -rf "$prefix"
  mkdir -p "$prefix"
  while read -r form package _version file _bytes; do
    [[ "$form" == deb || "$form" == slim ]] || continue
    if [[ ! -f "$deps/$file" ]]; then
      fail "$deps/$file ($package) is missing"
      deps_rc=1
    elif [[ "$form" == deb ]]; then
      extract_deb "$deps/$file" "$prefix" || { fail "unpacking $file"; deps_rc=1; }
    else
      extract_tar "$deps/$file" "$prefix" || { fail "unpacking $file"; deps_rc=1; }
    fi
  done <"$deps/manifest.txt"
  # .pc files say prefix=/usr: point them at the private prefix.
  find "$prefix" -name '*.pc' -print0 | xargs -0 -r sed -i -E \
    -e "s#^([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*/usr(/|\$)#\\1=$prefix/usr\\2#" \
    -e "s#(-[IL])/usr/#\\1$prefix/usr/#g"
  ((deps_rc)) || echo "$stamp_want" >"$prefix/.manifest-sha256"
  say "unpacked $(grep -cE '^(deb|slim) ' "$deps/manifest.txt") packages into $prefix"
fi
if ((deps_rc == 0)); then
  # The carried tools run here (glibc, libstdc++) and see the carried .pc files.
  if ! out_text=$(with_deps protoc --version 2>&1); then
    fail "the carried protoc does not run: $out_text"
    deps_rc=1
  elif ! pc_text=$(with_deps pkgconf --modversion libpcre2-8 libprotobuf-c sentencepiece icu-uc 2>&1); then
    fail "the carried pkgconf cannot resolve the carried .pc files: $pc_text"
    deps_rc=1
  else
    echo "protoc: $out_text; pkgconf finds pcre2 $(echo $pc_text | cut -d' ' -f1), protobuf-c, sentencepiece, icu"
    du -sh "$prefix" | awk '{print "prefix: " $2 ", " $1}'
  fi
fi
end $deps_rc

# ---------------------------------------------------------------------------------------------
build_rc=0
if ((skip_build)); then
  begin configure; skip "--skip-build"
  begin build; skip "--skip-build"
  [[ -f "$build/build.ninja" ]] || { fail "--skip-build, but $build has no build.ninja"; build_rc=1; }
elif ((env_rc || deps_rc)); then
  begin configure; skip "environment or deps failed"
  begin build; skip "environment or deps failed"
  build_rc=1
else
  begin configure
  # A build tree configured from another checkout path cannot be reused.
  home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null)
  if [[ -n "$home" && "$home" != "$repo" ]]; then
    say "$build was configured for $home; starting it afresh"
    find "$build" -mindepth 1 -maxdepth 1 ! -name deps-prefix ! -name gpu-check-logs -exec rm -rf {} +
  fi
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  fi
  # Each package's config named outright: the prefix is multiarch (lib/x86_64-linux-gnu), which
  # CMake searches by itself only where the compiler reports that library architecture.
  configure_args=(
    -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
    -DLYRE_BACKEND_CPU=OFF -DLYRE_BACKEND_TORCH=OFF -DCMAKE_CUDA_ARCHITECTURES=90
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc)"
    -DCMAKE_PREFIX_PATH="$prefix/usr"
    -DCMAKE_LIBRARY_PATH="$deps_lib" -DCMAKE_INCLUDE_PATH="$prefix/usr/include"
    -DPKG_CONFIG_EXECUTABLE="$prefix/usr/bin/pkgconf"
    -DLYRE_PROTOC="$prefix/usr/bin/protoc" -DLYRE_PROTOC_GEN_C="$prefix/usr/bin/protoc-gen-c"
    -DBoost_DIR="$deps_lib/cmake/Boost-1.74.0"
    -Dnlohmann_json_DIR="$prefix/usr/share/cmake/nlohmann_json"
    -Dspdlog_DIR="$deps_lib/cmake/spdlog" -Dfmt_DIR="$deps_lib/cmake/fmt"
    -Dsimdjson_DIR="$deps_lib/cmake/simdjson" -DCatch2_DIR="$prefix/usr/lib/cmake/Catch2"
    -DICU_ROOT="$prefix/usr"
    "${launcher[@]}")
  {
    echo "\$ cmake ${configure_args[*]}"
    with_deps timeout -k 10 "$(allowance)" cmake "${configure_args[@]}"
  } >"$logs/build.log" 2>&1
  configure_rc=$?
  if ((configure_rc)); then
    fail "cmake configure (rc $configure_rc; $logs/build.log)"
    show_tail "$logs/build.log" 40
    build_rc=1
  else
    grep -E '^-- lyre: ' "$logs/build.log"
    # Where each dependency resolved: the prefix, or (a warning) the system.
    for var in Boost_DIR spdlog_DIR fmt_DIR nlohmann_json_DIR simdjson_DIR Catch2_DIR ICU_INCLUDE_DIR \
               ICU_UC_LIBRARY_RELEASE pkgcfg_lib_PCRE2_pcre2-8 pkgcfg_lib_SENTENCEPIECE_sentencepiece \
               pkgcfg_lib_PROTOBUF_C_protobuf-c LYRE_PROTOC; do
      value=$(grep -E "^$var:[A-Z]+=" "$build/CMakeCache.txt" | head -1 | cut -d= -f2-)
      case "$value" in
        "$prefix"/*) echo "  $var -> prefix${value#$prefix}" ;;
        "") echo "  $var -> (not in the cache)" ;;
        *) say "warning: $var resolved outside the prefix: $value" ;;
      esac
    done
  fi
  end $build_rc

  begin build
  if ((build_rc)); then
    skip "configure failed"
  else
    wanted=(lyre lyre-objective-sft lyre-backend-cuda test_backend_cuda test_parity lyre-bench-train)
    known=$(ninja -C "$build" -t targets all 2>/dev/null | cut -d: -f1)
    targets=()
    for t in "${wanted[@]}"; do
      if grep -qx "$t" <<<"$known"; then targets+=("$t"); else fail "$t is not a target of this tree"; build_rc=1; fi
    done
    say "ninja -j$JOBS ${targets[*]} (log: $logs/build.log)"
    with_deps timeout -k 10 "$(allowance)" ninja -C "$build" -j "$JOBS" "${targets[@]}" >>"$logs/build.log" 2>&1
    ninja_rc=$?
    if ((ninja_rc == 124)); then
      fail "ninja ran out of the time budget; call again with the same options to resume"
      build_rc=1
    elif ((ninja_rc)); then
      fail "ninja (rc $ninja_rc): the first errors follow"
      grep -E -m 30 'error|FAILED:' "$logs/build.log"
      show_tail "$logs/build.log" 25
      build_rc=1
    else
      grep -cE '(warning|Warning)' "$logs/build.log" | awk '{print "compiler warnings in the log: " $1}'
      # Every carried library resolves (no "not found"), and from the prefix.
      for bin in "$build/bin/lyre" "$build/bin/lyre-bench-train" "$build/bin/test_backend_cuda"; do
        [[ -x "$bin" ]] || continue
        unresolved=$(with_deps ldd "$bin" | grep 'not found')
        [[ -z "$unresolved" ]] || { fail "$(basename "$bin") has unresolved libraries: $unresolved"; build_rc=1; }
      done
      # Headers of the carried packages that came from the system's /usr/include instead.
      leaked=$(ninja -C "$build" -t deps 2>/dev/null |
        grep -oE '^ +/usr/include/(boost|spdlog|fmt|nlohmann|unicode|pcre2|simdjson|sentencepiece|protobuf-c|catch2|dlpack)[^ ]*' |
        awk -F/ '{print $4}' | sort | uniq -c | tr '\n' ' ')
      [[ -z "$leaked" ]] || say "warning: headers from the system instead of the prefix (count by folder): $leaked"
    fi
  fi
  end $build_rc
fi

# ---------------------------------------------------------------------------------------------
tests_rc=0
if ((run_tests)); then
  begin tests
  if [[ ! -f "$build/CTestTestfile.cmake" ]]; then
    skip "no build tree"
    tests_rc=1
  elif (($(allowance) < 30)); then
    skip "only $(allowance)s left; run: bash scripts/gpu-check.sh --skip-build --only-tests"
    tests_rc=1
  else
    golden=$deps/parity-golden
    say "ctest -L gpu (LYRE_PARITY_GOLDEN=$golden, ${CTEST_TIMEOUT}s per test; log: $logs/tests.log)"
    (cd "$build" && with_deps env LYRE_PARITY_GOLDEN="$golden" timeout -k 10 "$(allowance)" \
       ctest -L gpu --output-on-failure --no-tests=error --timeout "$CTEST_TIMEOUT") >"$logs/tests.log" 2>&1
    tests_rc=$?
    cp -f "$build/Testing/Temporary/LastTest.log" "$logs/ctest-LastTest.log" 2>/dev/null
    if ((tests_rc == 124)); then
      fail "ctest ran out of the time budget (the tests done so far are in the table)"
    elif ((tests_rc)); then
      fail "ctest -L gpu (rc $tests_rc): see the table below and $logs/tests.log"
      sed -n '/tests passed/,$p' "$logs/tests.log" | head -40
    else
      grep -E 'tests passed' "$logs/tests.log"
    fi
    # CTest counts a skipped test as passed; on a machine with a GPU a skip means the test
    # could not reach it (driver, device visibility, a missing plugin or golden folder).
    skipped=$(grep -cE '^ *[0-9]+/[0-9]+ Test .*\*\*\*Skipped' "$logs/tests.log")
    if ((skipped)) && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
      fail "$skipped gpu tests were skipped although nvidia-smi lists a GPU (see $logs/tests.log)"
      tests_rc=1
    fi
  fi
  end $tests_rc
fi

# ---------------------------------------------------------------------------------------------
bench_rc=0
if ((run_bench)); then
  begin bench
  if [[ ! -x "$build/bin/lyre-bench-train" ]]; then
    skip "lyre-bench-train is not built"
    bench_rc=1
  elif (($(allowance) < 60)); then
    skip "only $(allowance)s left; run: bash scripts/gpu-check.sh --skip-build --only-bench"
    bench_rc=1
  else
    say "bench/run_gpu_bench.sh (log: $logs/bench.log)"
    # set -o pipefail: the benchmark's status, not grep's.
    BUILD_DIR=$build RESULTS_DIR=$build/bench-results LYRE_LD_LIBRARY_PATH="$deps_ld_path" \
      timeout -k 10 "$(allowance)" bash bench/run_gpu_bench.sh 2>&1 | tee "$logs/bench.log" | grep --line-buffered -v '^BENCH_RESULT '
    bench_rc=${PIPESTATUS[0]}
    ((bench_rc == 0)) || fail "bench/run_gpu_bench.sh (rc $bench_rc$( ((bench_rc == 124)) && echo ': out of the time budget'))"
    (cd "$build" && tar -czf "$logs/bench-results.tar.gz" bench-results 2>/dev/null)
  fi
  end $bench_rc
fi

# ---------------------------------------------------------------------------------------------
echo
echo "==== summary (after ${SECONDS}s)"
python3 - "$logs" "$build" "${phases[@]}" <<'EOF' | tee "$logs/summary.md"
import json, os, re, subprocess, sys

logs, build, phases = sys.argv[1], sys.argv[2], sys.argv[3:]

def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or "no GPU"
    except (OSError, subprocess.SubprocessError):
        return "no nvidia-smi"

print(f"## gpu-check: {gpu_name()}, glibc {os.confstr('CS_GNU_LIBC_VERSION').split()[-1]}")
print("phases: " + " | ".join(
    f"{n} {'ok' if rc == '0' else ('skipped' if rc == 'skipped' else 'FAILED')} {s}s"
    for n, rc, s in (p.split() for p in phases)))

# ---- tests: one row per gpu test, from ctest's progress lines ----
# " 3/53 Test  #3: name .......***Skipped   0.11 sec" (Passed has no ***; others read "Failed",
# "Not Run", "Timeout", "Exception: SegFault", "Subprocess aborted", ...)
line_re = re.compile(r"^\s*\d+/\d+ Test\s+#\d+: (.+?) \.{3,}\s*(?:\*\*\*)?(.+?)\s+([\d.]+) sec\s*$")
def status_of(text):
    for known in ("Passed", "Skipped", "Failed", "Not Run", "Timeout", "Exception", "Subprocess aborted"):
        if text.startswith(known):
            return known
    return text.split()[0] if text.split() else "?"
tests = []
path = os.path.join(logs, "tests.log")
if os.path.exists(path):
    for line in open(path, errors="replace"):
        m = line_re.match(line)
        if m:
            tests.append((m.group(1).strip(), status_of(m.group(2)), m.group(3)))
if tests:
    counts = {}
    for _, status, _ in tests:
        counts[status] = counts.get(status, 0) + 1
    print()
    print("### gpu tests: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) + f" (of {len(tests)})")
    print("| result | s | test |")
    print("|---|---:|---|")
    for name, status, secs in tests:
        mark = status if status in ("Passed", "Skipped") else f"**{status.upper()}**"
        print(f"| {mark} | {secs} | {name if len(name) <= 90 else name[:58] + ' ... ' + name[-27:]} |")
elif os.path.exists(path):
    print("\n### gpu tests: none ran (see tests.log)")

# ---- benchmark: the BENCH_RESULT lines ----
runs = []
path = os.path.join(logs, "bench.log")
if os.path.exists(path):
    for line in open(path, errors="replace"):
        if line.startswith("BENCH_RESULT "):
            try:
                runs.append(json.loads(line[len("BENCH_RESULT "):]))
            except ValueError:
                pass
if os.path.exists(path) and not runs:
    print("\n### benchmark: no results (see bench.log)")
if runs:
    print()
    peaks = sorted({r.get("peak_flops") or 0 for r in runs})
    print(f"### benchmark (MFU against {', '.join(f'{p / 1e12:.0f}' for p in peaks) or '?'} TFLOP/s; "
          "both sides share lyre's FLOPs/token)")
    print("| model | impl | batch x seq | tokens/s | MFU | peak mem (own allocator) | peak mem (nvidia-smi) | loss first -> last |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    gib = lambda b: f"{b / 2**30:.1f} GiB" if b else "n/a"
    for r in runs:
        if "error" in r:
            print(f"| {r['model']} | {r['side']} | | FAILED: {r['error'][:100]} | | | | |")
            continue
        mem = gib(r.get("memory_peak_bytes"))
        if r["side"] == "torch":
            mem += f" (reserved {gib(r.get('memory_reserved_peak_bytes'))})"
        smi = f"{r['smi_peak_mib'] / 1024:.1f} GiB" if r.get("smi_peak_mib") is not None else "n/a"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        print(f"| {r['model']} | {r['side']} | {r['batch']} x {r['seq']} | {r['tokens_per_s']:,.0f} | {mfu} | {mem} "
              f"| {smi} | {r['loss_first']:.3f} -> {r['loss_last']:.3f} |")

    # ---- targets ----
    print()
    print("### targets: MFU >= 50% on the 1B shape; tokens/s >= 1.3x PyTorch eager at lower peak memory")
    print("| model | lyre MFU | tokens/s lyre / pytorch | peak mem lyre / pytorch (allocators) | (nvidia-smi) | verdict |")
    print("|---|---:|---:|---:|---:|---|")
    by = {}
    for r in runs:
        by.setdefault(r["model"], {})[r["side"]] = r
    for model, s in by.items():
        l, t = s.get("lyre"), s.get("torch")
        ok_l = l is not None and "error" not in l
        ok_t = t is not None and "error" not in t
        verdicts = []
        mfu_text = "n/a"
        if ok_l and l.get("mfu") is not None:
            mfu_text = f"{100 * l['mfu']:.1f}%"
            if model == "1b":
                verdicts.append("MFU " + ("met" if l["mfu"] >= 0.5 else "NOT met"))
        ratio_text = mem_text = smi_text = "n/a"
        if ok_l and ok_t:
            ratio = l["tokens_per_s"] / t["tokens_per_s"]
            ratio_text = f"{ratio:.2f}x"
            lower = None
            if l.get("memory_peak_bytes") and t.get("memory_peak_bytes"):
                mem_ratio = l["memory_peak_bytes"] / t["memory_peak_bytes"]
                mem_text = f"{mem_ratio:.2f}x"
                lower = mem_ratio < 1
            if l.get("smi_peak_mib") and t.get("smi_peak_mib"):
                smi_ratio = l["smi_peak_mib"] / t["smi_peak_mib"]
                smi_text = f"{smi_ratio:.2f}x"
                lower = smi_ratio < 1 if lower is None else (lower and smi_ratio < 1)
            verdicts.append("speed " + ("met" if ratio >= 1.3 else "NOT met"))
            verdicts.append("memory " + ("n/a" if lower is None else ("met" if lower else "NOT met")))
            if l.get("num_parameters") != t.get("num_parameters"):
                verdicts.append(f"PARAMETER COUNTS DIFFER ({l.get('num_parameters')} vs {t.get('num_parameters')})")
        else:
            verdicts.append("incomplete: " + ", ".join(
                side for side, ok in (("lyre", ok_l), ("pytorch", ok_t)) if not ok) + " failed")
        print(f"| {model} | {mfu_text} | {ratio_text} | {mem_text} | {smi_text} | {'; '.join(verdicts)} |")
EOF

echo
if ((${#failed_steps[@]})); then
  say "FAILED steps (${#failed_steps[@]}):"
  for f in "${failed_steps[@]}"; do echo "  - $f"; done
  say "logs: $logs; done in ${SECONDS}s"
  exit 1
fi
say "all steps passed; logs: $logs; done in ${SECONDS}s"
