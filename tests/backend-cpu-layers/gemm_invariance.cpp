// The property packing relies on (layers/gemm.cpp): a row of C = op(A) . op(B) comes out bit for
// bit the same whatever the number of rows M and wherever the row sits, for both layouts of A.
#include <catch2/catch.hpp>

#include <random>
#include <vector>

#include "layers.hpp"

namespace lyre::cpu {
namespace {

struct Shape {
  int64_t N, K;
};

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace

TEST_CASE("a GEMM row is bit-identical for every row count and position") {
  const int64_t kRows = 300;
  for (const Shape s : {Shape{300, 128}, Shape{384, 128}, Shape{128, 344}, Shape{1000, 512}, Shape{64, 2048}}) {
    const std::vector<float> a = random_values(size_t(kRows * s.K), 1);
    const std::vector<float> b = random_values(size_t(s.N * s.K), 2);
    std::vector<float> a_t(size_t(s.K * kRows));  // A stored transposed (K x kRows)
    for (int64_t i = 0; i < kRows; ++i)
      for (int64_t k = 0; k < s.K; ++k) a_t[size_t(k * kRows + i)] = a[size_t(i * s.K + k)];
    std::vector<float> full(size_t(kRows * s.N));
    gemm<float>(false, true, kRows, s.N, s.K, 1.0f, a.data(), s.K, b.data(), s.K, 0.0f, full.data(), s.N);
    for (const int64_t m : {1, 2, 7, 9, 15, 16, 17, 37, 64, 150}) {
      for (const int64_t first : {int64_t{0}, int64_t{5}, kRows - m}) {
        INFO("N " << s.N << " K " << s.K << ": rows [" << first << ", " << first + m << ")");
        std::vector<float> part(size_t(m * s.N)), part_t(size_t(m * s.N));
        gemm<float>(false, true, m, s.N, s.K, 1.0f, a.data() + first * s.K, s.K, b.data(), s.K, 0.0f,
                    part.data(), s.N);
        gemm<float>(true, true, m, s.N, s.K, 1.0f, a_t.data() + first, kRows, b.data(), s.K, 0.0f,
                    part_t.data(), s.N);
        int64_t differ = 0, differ_t = 0;
        for (int64_t i = 0; i < m * s.N; ++i) {
          differ += part[size_t(i)] != full[size_t(first * s.N + i)];
          differ_t += part_t[size_t(i)] != full[size_t(first * s.N + i)];
        }
        CHECK(differ == 0);
        if (m < 16) CHECK(differ_t == 0);  // below 16 rows both layouts take the padded path
      }
    }
  }
}

}  // namespace lyre::cpu
