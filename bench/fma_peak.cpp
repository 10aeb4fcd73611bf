// lyre-bench-fma-peak: the fp32 FMA throughput this machine actually delivers, the honest
// denominator for MFU. Each thread runs 12 independent chains of vfmadd (enough to cover FMA
// latency on every current x86 core) at the widest vector width the CPU has, and the figure is
// FLOP/s summed over threads. A backend's stated peak_flops comes from a formula (ISA, clock);
// this measures it, turbo clock and real vector width included.
//
// Prints one JSON object: {"threads": N, "isa": "avx512f", "peak_flops": ..., "avx2_peak_flops": ...}
#include <omp.h>

#include <immintrin.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

constexpr int kChains = 12;

// Returns a value derived from the accumulators so the compiler cannot drop the loop.
__attribute__((target("avx2,fma"))) float chains_256(long iterations) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  for (long k = 0; k < iterations; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  float lanes[8], sum = 0;
  for (int i = 0; i < kChains; ++i) {
    _mm256_storeu_ps(lanes, acc[i]);
    for (float v : lanes) sum += v;
  }
  return sum;
}

__attribute__((target("avx512f"))) float chains_512(long iterations) {
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (long k = 0; k < iterations; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  float lanes[16], sum = 0;
  for (int i = 0; i < kChains; ++i) {
    _mm512_storeu_ps(lanes, acc[i]);
    for (float v : lanes) sum += v;
  }
  return sum;
}

// FLOP/s of `threads` threads each running the chains; the best of three tries.
double measure(int threads, int width_bits, volatile float* sink) {
  const long iterations = 50'000'000;
  double best = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    const double start = omp_get_wtime();
#pragma omp parallel num_threads(threads)
    {
      const float v = width_bits == 512 ? chains_512(iterations) : chains_256(iterations);
      sink[omp_get_thread_num() % 64] = v;
    }
    const double seconds = omp_get_wtime() - start;
    const double flop = 2.0 * (width_bits / 32) * kChains * static_cast<double>(iterations) * threads;
    if (flop / seconds > best) best = flop / seconds;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads();
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: lyre-bench-fma-peak [--threads N]\n");
      return flag == "-h" || flag == "--help" ? 0 : 1;
    }
  }
  if (threads < 1) {
    std::fprintf(stderr, "lyre-bench-fma-peak: --threads needs an integer >= 1\n");
    return 1;
  }
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::printf("{\"threads\": %d, \"isa\": \"none\", \"peak_flops\": 0}\n", threads);
    return 0;
  }
  static volatile float sink[64];
  const double avx2 = measure(threads, 256, sink);
  const bool has512 = __builtin_cpu_supports("avx512f");
  const double avx512 = has512 ? measure(threads, 512, sink) : 0.0;
  std::printf("{\"threads\": %d, \"isa\": \"%s\", \"peak_flops\": %.6e, \"avx2_peak_flops\": %.6e}\n", threads,
              has512 ? "avx512f" : "avx2+fma", has512 ? avx512 : avx2, avx2);
  return 0;
}
