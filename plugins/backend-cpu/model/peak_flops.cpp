#include "model/peak_flops.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>

namespace lyre::cpu {
namespace {

constexpr int kIterations = 200000;

// 12 independent accumulators hide the FMA latency (4 cycles x 2 ports plus slack), so the loop
// is bound by FMA throughput alone. Returns a value derived from the accumulators so the compiler
// cannot drop the work.
__attribute__((target("avx512f"))) float fma_loop_avx512(double* flops) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int it = 0; it < kIterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 sum = acc[0];
  for (int i = 1; i < 12; ++i) sum = _mm512_add_ps(sum, acc[i]);
  alignas(64) float out[16];
  _mm512_store_ps(out, sum);
  *flops = 2.0 * 16 * 12 * double(kIterations);
  return out[0] + out[15];
}

float fma_loop_avx2(double* flops) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int it = 0; it < kIterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 sum = acc[0];
  for (int i = 1; i < 12; ++i) sum = _mm256_add_ps(sum, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, sum);
  *flops = 2.0 * 8 * 12 * double(kIterations);
  return out[0] + out[7];
}

double measure(int threads) {
  const bool avx512 = __builtin_cpu_supports("avx512f");
  double best = 0;
  volatile float sink = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double total_flops = 0;
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : total_flops)
    {
      double flops = 0;
      const float r = avx512 ? fma_loop_avx512(&flops) : fma_loop_avx2(&flops);
      if (r == 12345.0f) sink = r;
      total_flops += flops;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, total_flops / seconds);
  }
  (void)sink;
  return best;
}

}  // namespace

double measured_peak_flops(int threads) {
  static std::mutex mutex;
  static std::map<int, double> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(threads);
  if (it != cache.end()) return it->second;
  return cache[threads] = measure(threads);
}

}  // namespace lyre::cpu
