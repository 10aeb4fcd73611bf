// The cuBLASLt matmuls (Gemm) and the fused log-prob head, each against a CPU reference in double
// computed from the same (bf16-rounded where the GPU sees bf16) inputs.
//
// Bounds (normwise relative error):
//  - true fp32: a length-K dot product accumulated in fp32 has a relative error that grows like
//    sqrt(K) * 2^-24 for random data (K * 2^-24 in the worst case): 2e-7 * sqrt(K), at least 1e-6.
//    TF32 rounds every input to 10 mantissa bits, ~5e-4 whatever K: two orders above the bound.
//  - bf16 inputs, float output: the products are exact in fp32, so the same accumulation error;
//    1e-5, widened like sqrt(K / 64) past K = 64 (tensor cores accumulate with truncation).
//  - bf16 output: one bf16 rounding, 2^-9 at worst per element: 1e-2.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "device_memory.hpp"
#include "gpu_test_support.hpp"
#include "kernels.hpp"

namespace cuda = lyre::cuda;
using cuda::bf16;
using cuda::Gemm;
using namespace lyre::cuda::test;

namespace {

double fp32_bound(int64_t K) { return std::max(1e-6, 2e-7 * std::sqrt(double(K))); }
double bf16_in_float_out_bound(int64_t K) { return 1e-5 * std::max(1.0, std::sqrt(double(K) / 64.0)); }

template <typename TIn, typename TOut>
double matmul_bound(int64_t K) {
  if constexpr (std::is_same_v<TOut, bf16>) return 1e-2;
  else if constexpr (std::is_same_v<TIn, bf16>) return bf16_in_float_out_bound(K);
  else return fp32_bound(K);
}

template <typename T>
const char* type_name() {
  return std::is_same_v<T, float> ? "float" : "bf16";
}

// The host vector the GPU gets for T (bf16: rounded to nearest even).
template <typename T>
std::vector<T> as(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return to_bf16(v);
}
// The exact values T holds: what the reference computes with.
template <typename T>
std::vector<float> exact(const std::vector<float>& v) {
  return to_float(as<T>(v));
}

// Rows r of a (rows, ld) buffer starting at `offset`, columns [0, cols): the logical matrix.
std::vector<double> logical(const std::vector<float>& buf, int64_t offset, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<double> out;
  out.reserve(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out.push_back(buf[size_t(offset + r * ld + c)]);
  return out;
}

// C (M, N) = alpha op(A) op(B) + beta C0 in double; C0 is not read when beta == 0 (it may hold NaN).
std::vector<double> reference_matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                                     const std::vector<float>& A, int64_t lda, const std::vector<float>& B,
                                     int64_t ldb, double beta, const std::vector<float>& C0, int64_t ldc,
                                     int64_t offset) {
  std::vector<double> C(size_t(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double a = A[size_t(offset + (ta ? k * lda + i : i * lda + k))];
        const double b = B[size_t(offset + (tb ? j * ldb + k : k * ldb + j))];
        acc += a * b;
      }
      C[size_t(i * N + j)] = alpha * acc + (beta != 0 ? beta * double(C0[size_t(offset + i * ldc + j)]) : 0.0);
    }
  return C;
}

// One matmul of random data against the reference. pad: leading dimensions exceed the minimum by
// this much; offset: every operand starts this many elements into its buffer (misaligned for
// offset not a multiple of 16 bytes). Also checks that nothing of C outside (M, N) was written.
template <typename TIn, typename TOut>
void check_matmul(Gemm& gemm, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t pad, int64_t offset,
                  float alpha, float beta, uint64_t seed) {
  INFO("matmul<" << type_name<TIn>() << ", " << type_name<TOut>() << "> trans_a " << ta << " trans_b " << tb
                 << " M " << M << " N " << N << " K " << K << " pad " << pad << " offset " << offset << " alpha "
                 << alpha << " beta " << beta);
  const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
  const int64_t a_rows = ta ? K : M, b_rows = tb ? N : K;
  const std::vector<float> a = exact<TIn>(random_floats(size_t(offset + a_rows * lda), seed));
  const std::vector<float> b = exact<TIn>(random_floats(size_t(offset + b_rows * ldb), seed + 1));
  std::vector<float> c0 = exact<TOut>(random_floats(size_t(offset + M * ldc), seed + 2));
  // beta = 0 must not read C: NaN there would show.
  if (beta == 0.0f)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) c0[size_t(offset + i * ldc + j)] = NAN;

  DeviceArray<TIn> dA(as<TIn>(a)), dB(as<TIn>(b));
  DeviceArray<TOut> dC(as<TOut>(c0));
  gemm.matmul<TIn, TOut>(ta, tb, M, N, K, alpha, dA.get() + offset, lda, dB.get() + offset, ldb, beta,
                         dC.get() + offset, ldc, nullptr);
  const std::vector<float> c = to_float(dC.download());

  const std::vector<double> ref = reference_matmul(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c0, ldc, offset);
  const double err = relative_error(logical(c, offset, M, N, ldc), ref);
  const double bound = matmul_bound<TIn, TOut>(K);
  INFO("relative error " << err << " bound " << bound);
  CHECK(err <= bound);

  // Everything outside the logical (M, N): the elements before `offset` and the padding columns.
  size_t changed = 0;
  for (int64_t e = 0; e < offset + M * ldc; ++e) {
    const int64_t col = (e - offset) % ldc;
    const bool inside = e >= offset && col < N;
    if (!inside && std::memcmp(&c[size_t(e)], &c0[size_t(e)], sizeof(float)) != 0) ++changed;
  }
  CHECK(changed == 0);
}

struct Shape {
  int64_t M, N, K;
};
// Odd, non-square, degenerate vectors, and one long K for the accumulation bound.
const Shape kShapes[] = {{37, 53, 29}, {1, 53, 29}, {37, 1, 29}, {1, 1, 1}, {37, 53, 1}, {40, 72, 1024}};

template <typename TIn, typename TOut>
void check_all_transposes(uint64_t seed) {
  Gemm gemm;
  for (const Shape& s : kShapes)
    for (int t = 0; t < 4; ++t)
      for (int64_t pad : {0, 3})
        for (float beta : {0.0f, 1.0f}) {
          const float alpha = pad == 0 ? 1.0f : 0.75f;
          check_matmul<TIn, TOut>(gemm, t & 1, t & 2, s.M, s.N, s.K, pad, 0, alpha, beta, seed++);
        }
}

template <typename TIn, typename TOut>
void check_misaligned(uint64_t seed) {
  Gemm gemm;
  // 1 and 3 elements: pointers aligned to the element only; 8: to 16 or 32 bytes. Odd leading
  // dimensions (pad 1 on odd sizes) misalign every row after the first as well.
  for (int64_t offset : {1, 3, 8})
    for (int t = 0; t < 4; ++t)
      for (float beta : {0.0f, 1.0f})
        for (int64_t pad : {0, 1})
          check_matmul<TIn, TOut>(gemm, t & 1, t & 2, 37, 53, 29, pad, offset, 1.0f, beta, seed++);
}

}  // namespace

TEST_CASE("matmul matches a double reference for every transpose and type pair", "[gpu][gemm]") {
  require_gpu();
  check_all_transposes<float, float>(1000);
  check_all_transposes<bf16, bf16>(2000);
  check_all_transposes<bf16, float>(3000);
}

TEST_CASE("matmul takes operands at any element alignment and leading dimension", "[gpu][gemm]") {
  require_gpu();
  check_misaligned<float, float>(4000);
  check_misaligned<bf16, bf16>(5000);
  check_misaligned<bf16, float>(6000);
}

TEST_CASE("matmul repeated on cached plans gives the same bits", "[gpu][gemm]") {
  require_gpu();
  Gemm gemm;
  const int64_t M = 37, N = 53, K = 29;
  const auto a = to_bf16(random_floats(size_t(M * K), 7001));
  const auto b = to_bf16(random_floats(size_t(K * N), 7002));
  DeviceArray<bf16> dA(a), dB(b);
  DeviceArray<float> first(size_t(M * N)), again(size_t(M * N)), other(size_t(N * N));
  gemm.matmul<bf16, float>(false, false, M, N, K, 1.0f, dA.get(), K, dB.get(), N, 0.0f, first.get(), N, nullptr);
  // Another shape in between, then the first one again from the plan cache.
  gemm.matmul<bf16, float>(true, false, N, N, K, 1.0f, dB.get(), N, dB.get(), N, 0.0f, other.get(), N, nullptr);
  gemm.matmul<bf16, float>(false, false, M, N, K, 1.0f, dA.get(), K, dB.get(), N, 0.0f, again.get(), N, nullptr);
  const auto x = first.download(), y = again.download();
  CHECK(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
  CHECK(relative_error(x, reference_matmul(false, false, M, N, K, 1.0, to_float(a), K, to_float(b), N, 0.0, {}, N,
                                           0)) <= bf16_in_float_out_bound(K));
}

TEST_CASE("matmul with an empty dimension writes only what the math says", "[gpu][gemm]") {
  require_gpu();
  Gemm gemm;
  const int64_t M = 5, N = 7, ldc = 9;
  const std::vector<float> c0 = random_floats(size_t(M * ldc), 7101);
  DeviceArray<float> a(std::vector<float>(64, 1.0f)), b(std::vector<float>(64, 1.0f));

  SECTION("M or N = 0 leaves C alone") {
    DeviceArray<float> c(c0);
    gemm.matmul<float, float>(false, false, 0, N, 3, 1.0f, a.get(), 3, b.get(), N, 0.0f, c.get(), ldc, nullptr);
    gemm.matmul<float, float>(false, false, M, 0, 3, 1.0f, a.get(), 3, b.get(), 1, 0.0f, c.get(), ldc, nullptr);
    CHECK(c.download() == c0);
  }
  SECTION("K = 0 with beta 1 leaves C alone") {
    DeviceArray<float> c(c0);
    gemm.matmul<float, float>(false, false, M, N, 0, 1.0f, a.get(), 1, b.get(), N, 1.0f, c.get(), ldc, nullptr);
    CHECK(c.download() == c0);
  }
  SECTION("K = 0 with beta 0 zeroes C, not its padding") {
    DeviceArray<bf16> c(to_bf16(c0));
    DeviceArray<bf16> ab(to_bf16(std::vector<float>(64, 1.0f)));
    gemm.matmul<bf16, bf16>(true, true, M, N, 0, 1.0f, ab.get(), M, ab.get(), 1, 0.0f, c.get(), ldc, nullptr);
    const std::vector<float> got = to_float(c.download()), want = to_float(to_bf16(c0));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < ldc; ++j) {
        INFO("row " << i << " column " << j);
        CHECK(got[size_t(i * ldc + j)] == (j < N ? 0.0f : want[size_t(i * ldc + j)]));
      }
  }
  SECTION("K = 0 with another beta and bad leading dimensions are refused") {
    DeviceArray<float> c(c0);
    CHECK_THROWS_AS(
        (gemm.matmul<float, float>(false, false, M, N, 0, 1.0f, a.get(), 1, b.get(), N, 0.5f, c.get(), ldc, nullptr)),
        lyre::plugin::Error);
    CHECK_THROWS_AS(
        (gemm.matmul<float, float>(false, false, M, N, 3, 1.0f, a.get(), 2, b.get(), N, 0.0f, c.get(), ldc, nullptr)),
        lyre::plugin::Error);
    CHECK_THROWS_AS(
        (gemm.matmul<float, float>(false, true, M, N, 3, 1.0f, a.get(), 3, b.get(), 2, 0.0f, c.get(), ldc, nullptr)),
        lyre::plugin::Error);
    CHECK_THROWS_AS(
        (gemm.matmul<float, float>(false, false, M, N, 3, 1.0f, a.get(), 3, b.get(), N, 0.0f, c.get(), N - 1, nullptr)),
        lyre::plugin::Error);
    CHECK(c.download() == c0);
  }
}

namespace {

template <typename T>
void check_linear(uint64_t seed) {
  INFO("T = " << type_name<T>());
  Gemm gemm;
  const int64_t rows = 45, in = 67, out = 38;
  const double out_bound = std::is_same_v<T, float> ? fp32_bound(in) : 1e-2;
  const double dinp_bound = std::is_same_v<T, float> ? fp32_bound(out) : 1e-2;
  const double dweight_bound = std::is_same_v<T, float> ? fp32_bound(rows) : bf16_in_float_out_bound(rows);
  const auto inp = exact<T>(random_floats(size_t(rows * in), seed));
  const auto weight = exact<T>(random_floats(size_t(out * in), seed + 1, 0.2f));
  const auto dout = exact<T>(random_floats(size_t(rows * out), seed + 2));
  const auto dinp0 = exact<T>(random_floats(size_t(rows * in), seed + 3));
  const auto dweight0 = random_floats(size_t(out * in), seed + 4);
  DeviceArray<T> d_inp(as<T>(inp)), d_weight(as<T>(weight)), d_dout(as<T>(dout));

  // out = inp . weight^T; dinp = dout . weight; dweight += dout^T . inp
  const auto ref_out = reference_matmul(false, true, rows, out, in, 1, inp, in, weight, in, 0, {}, out, 0);
  const auto ref_dinp = reference_matmul(false, false, rows, in, out, 1, dout, out, weight, in, 0, {}, in, 0);
  const auto ref_dinp_acc = reference_matmul(false, false, rows, in, out, 1, dout, out, weight, in, 1, dinp0, in, 0);
  const auto ref_dweight = reference_matmul(true, false, out, in, rows, 1, dout, out, inp, in, 1, dweight0, in, 0);

  {  // forward
    DeviceArray<T> d_out(size_t(rows * out));
    gemm.linear_forward<T>(d_out.get(), d_inp.get(), d_weight.get(), rows, in, out, nullptr);
    CHECK(relative_error(to_float(d_out.download()), ref_out) <= out_bound);
  }
  {  // backward into fresh dinp, accumulating dweight
    DeviceArray<T> d_dinp(size_t(rows * in));
    DeviceArray<float> d_dweight(dweight0);
    gemm.linear_backward<T>(d_dinp.get(), d_dweight.get(), d_dout.get(), d_inp.get(), d_weight.get(), rows, in, out,
                            false, nullptr);
    CHECK(relative_error(to_float(d_dinp.download()), ref_dinp) <= dinp_bound);
    CHECK(relative_error(d_dweight.download(), ref_dweight) <= dweight_bound);
  }
  {  // backward accumulating dinp, frozen weight
    DeviceArray<T> d_dinp(as<T>(dinp0));
    gemm.linear_backward<T>(d_dinp.get(), nullptr, d_dout.get(), d_inp.get(), d_weight.get(), rows, in, out, true,
                            nullptr);
    CHECK(relative_error(to_float(d_dinp.download()), ref_dinp_acc) <= dinp_bound);
  }
  {  // backward without dinp
    DeviceArray<float> d_dweight(dweight0);
    gemm.linear_backward<T>(nullptr, d_dweight.get(), d_dout.get(), d_inp.get(), d_weight.get(), rows, in, out, false,
                            nullptr);
    CHECK(relative_error(d_dweight.download(), ref_dweight) <= dweight_bound);
  }
}

}  // namespace

TEST_CASE("linear forward and backward match double references", "[gpu][gemm]") {
  require_gpu();
  check_linear<float>(8000);
  check_linear<bf16>(8100);
}

// ---- The fused log-prob head ----

namespace {

struct HeadReference {
  std::vector<double> logp, lse, dxn, dhead_increment, logits;
};

// Full logits, log-softmax and gather in double; the gradients of sum(dlogp * logp).
HeadReference reference_head(const std::vector<float>& xn, const std::vector<float>& head,
                             const std::vector<int32_t>& targets, const std::vector<float>& dlogp, int64_t N,
                             int64_t C, int64_t V) {
  HeadReference r;
  r.logp.assign(size_t(N), 0.0);
  r.lse.assign(size_t(N), 0.0);
  r.dxn.assign(size_t(N * C), 0.0);
  r.dhead_increment.assign(size_t(V * C), 0.0);
  r.logits.assign(size_t(N * V), 0.0);
  std::vector<double> dl(static_cast<size_t>(V));
  for (int64_t n = 0; n < N; ++n) {
    double* l = r.logits.data() + n * V;
    for (int64_t v = 0; v < V; ++v) {
      double acc = 0;
      for (int64_t c = 0; c < C; ++c) acc += double(xn[size_t(n * C + c)]) * double(head[size_t(v * C + c)]);
      l[v] = acc;
    }
    const int32_t t = targets[size_t(n)];
    if (t < 0) continue;
    const double mx = *std::max_element(l, l + V);
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(l[v] - mx);
    const double lse = mx + std::log(sum);
    r.lse[size_t(n)] = lse;
    r.logp[size_t(n)] = l[t] - lse;
    for (int64_t v = 0; v < V; ++v)
      dl[size_t(v)] = double(dlogp[size_t(n)]) * ((v == t ? 1.0 : 0.0) - std::exp(l[v] - lse));
    for (int64_t v = 0; v < V; ++v)
      for (int64_t c = 0; c < C; ++c) {
        r.dxn[size_t(n * C + c)] += dl[size_t(v)] * double(head[size_t(v * C + c)]);
        r.dhead_increment[size_t(v * C + c)] += dl[size_t(v)] * double(xn[size_t(n * C + c)]);
      }
  }
  return r;
}

struct HeadCase {
  int64_t N, C, V, chunk_rows;  // chunk_rows 0: logprob_head_chunk_rows(N, V)
};

// Forward and backward of one shape, both precisions' bounds. Targets: every fifth row has none
// (and a non-zero dlogp, which must be ignored), the rest random with 0 and V - 1 among them.
template <typename T>
void check_head(const HeadCase& hc, bool frozen_head, uint64_t seed) {
  const int64_t N = hc.N, C = hc.C, V = hc.V;
  const int64_t chunk = hc.chunk_rows > 0 ? hc.chunk_rows : cuda::logprob_head_chunk_rows(N, V);
  INFO("T = " << type_name<T>() << " N " << N << " C " << C << " V " << V << " chunk_rows " << chunk
              << (frozen_head ? " frozen head" : ""));
  constexpr bool is_float = std::is_same_v<T, float>;

  // Logits of standard deviation ~2: a peaked but not one-hot softmax.
  const auto xn = exact<T>(random_floats(size_t(N * C), seed));
  const auto head = exact<T>(random_floats(size_t(V * C), seed + 1, 2.0f / std::sqrt(float(C))));
  const auto dlogp = random_floats(size_t(N), seed + 2);
  const auto dhead0 = random_floats(size_t(V * C), seed + 3, 0.01f);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  std::mt19937 rng(uint32_t(seed + 4));
  for (int64_t n = 0; n < N; ++n)
    targets[size_t(n)] = n % 5 == 2 ? -1 : n == 0 ? int32_t(V - 1) : n == 1 ? 0 : int32_t(rng() % uint32_t(V));
  const HeadReference ref = reference_head(xn, head, targets, dlogp, N, C, V);

  const size_t ws_bytes = cuda::logprob_head_workspace(chunk, C, V, sizeof(T));
  constexpr size_t kGuard = 4096;  // past the workspace: must stay poisoned (0xFF)
  DeviceArray<unsigned char> ws(ws_bytes + kGuard);
  DeviceArray<T> d_xn(as<T>(xn)), d_head(as<T>(head));
  DeviceArray<int32_t> d_targets(targets);
  DeviceArray<float> d_dlogp(dlogp), d_logp(static_cast<size_t>(N)), d_lse(static_cast<size_t>(N)), d_dhead(dhead0);
  DeviceArray<T> d_dxn(size_t(N * C));
  Gemm gemm;

  cuda::logprob_head_forward<T>(gemm, d_logp.get(), d_lse.get(), d_xn.get(), d_head.get(), d_targets.get(), N, C, V,
                                chunk, ws.get(), nullptr);
  const auto logp = d_logp.download(), lse = d_lse.download();
  CHECK(relative_error(logp, ref.logp) <= 1e-5);
  CHECK(relative_error(lse, ref.lse) <= 1e-5);
  for (int64_t n = 0; n < N; ++n)
    if (targets[size_t(n)] < 0) {
      INFO("row " << n << " has no target");
      CHECK(logp[size_t(n)] == 0.0f);
      CHECK(lse[size_t(n)] == 0.0f);
    }

  cuda::logprob_head_backward<T>(gemm, d_dxn.get(), frozen_head ? nullptr : d_dhead.get(), d_dlogp.get(), d_xn.get(),
                                 d_head.get(), d_targets.get(), d_lse.get(), N, C, V, chunk, ws.get(), nullptr);
  const auto dxn = to_float(d_dxn.download());
  // dxn sums V products into each element: the fp32 accumulation bound of K = V.
  CHECK(relative_error(dxn, ref.dxn) <= (is_float ? std::max(1e-5, fp32_bound(V)) : 1e-2));
  for (int64_t n = 0; n < N; ++n)
    if (targets[size_t(n)] < 0) {
      INFO("row " << n << " has no target");
      CHECK(std::all_of(dxn.begin() + n * C, dxn.begin() + (n + 1) * C, [](float x) { return x == 0.0f; }));
    }
  const auto dhead = d_dhead.download();
  if (frozen_head) {
    CHECK(dhead == dhead0);
  } else {
    // The increment, not the sum: dhead0 must not hide an error in what was added.
    std::vector<double> increment(dhead.size());
    for (size_t i = 0; i < dhead.size(); ++i) increment[i] = double(dhead[i]) - double(dhead0[i]);
    CHECK(relative_error(increment, ref.dhead_increment) <= (is_float ? 1e-5 : 1e-2));
  }

  const auto bytes = ws.download();
  CHECK(std::all_of(bytes.begin() + ptrdiff_t(ws_bytes), bytes.end(), [](unsigned char b) { return b == 0xFF; }));
}

const HeadCase kHeadCases[] = {
    {50, 37, 1003, 3},     // odd V (scalar row path), ragged last chunk
    {50, 37, 1003, 1000},  // one chunk larger than N
    {50, 37, 1024, 16},    // V % 4 == 0 (vector row path), 50 = 3 x 16 + 2
    {50, 36, 1024, 0},     // the default chunk (N itself here)
    {7, 16, 1, 3},         // a one-word vocabulary: logp 0, no gradient
    {7, 16, 2, 64},
    {13, 64, 97, 5},
    {1, 37, 1003, 1},
    {9, 32, 40000, 4},  // long rows: 1024 threads, many elements each, vector path
    {6, 24, 40001, 4},  // long rows, scalar path
};

}  // namespace

TEST_CASE("log-prob head forward and backward match a double reference in fp32", "[gpu][logprob_head]") {
  require_gpu();
  uint64_t seed = 9000;
  for (const HeadCase& hc : kHeadCases) check_head<float>(hc, false, seed += 10);
}

TEST_CASE("log-prob head forward and backward match a double reference in bf16", "[gpu][logprob_head]") {
  require_gpu();
  uint64_t seed = 9500;
  for (const HeadCase& hc : kHeadCases) check_head<bf16>(hc, false, seed += 10);
}

TEST_CASE("log-prob head with a frozen head leaves dhead alone", "[gpu][logprob_head]") {
  require_gpu();
  check_head<float>({23, 37, 517, 4}, true, 9900);
  check_head<bf16>({23, 37, 517, 4}, true, 9910);
}

TEST_CASE("a repeated head step allocates no device memory", "[gpu][logprob_head]") {
  require_gpu();
  const int64_t N = 40, C = 64, V = 1000, chunk = 16;
  DeviceArray<bf16> xn(to_bf16(random_floats(size_t(N * C), 9970))), head(to_bf16(random_floats(size_t(V * C), 9971)));
  std::vector<int32_t> host_targets(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) host_targets[size_t(n)] = int32_t((n * 37) % V);
  DeviceArray<int32_t> targets(host_targets);
  DeviceArray<float> dlogp(random_floats(size_t(N), 9972)), logp(static_cast<size_t>(N)), lse(static_cast<size_t>(N));
  DeviceArray<float> dhead(std::vector<float>(size_t(V * C), 0.0f));
  DeviceArray<bf16> dxn(size_t(N * C));
  DeviceArray<unsigned char> ws(cuda::logprob_head_workspace(chunk, C, V, sizeof(bf16)));
  Gemm gemm;
  auto step = [&] {
    cuda::logprob_head_forward<bf16>(gemm, logp.get(), lse.get(), xn.get(), head.get(), targets.get(), N, C, V, chunk,
                                     ws.get(), nullptr);
    cuda::logprob_head_backward<bf16>(gemm, dxn.get(), dhead.get(), dlogp.get(), xn.get(), head.get(), targets.get(),
                                      lse.get(), N, C, V, chunk, ws.get(), nullptr);
    check(cudaDeviceSynchronize(), "head step");
  };
  step();
  const cuda::MemoryUsage before = cuda::memory_usage();
  step();
  const cuda::MemoryUsage after = cuda::memory_usage();
  CHECK(after.current == before.current);
  CHECK(after.reserved == before.reserved);
}

TEST_CASE("log-prob head refuses a chunk of no rows", "[gpu][logprob_head]") {
  require_gpu();
  Gemm gemm;
  DeviceArray<float> xn(std::vector<float>(8, 1.0f)), head(std::vector<float>(8, 1.0f)), out(4);
  DeviceArray<int32_t> targets(std::vector<int32_t>(2, 0));
  DeviceArray<unsigned char> ws(1024);
  CHECK_THROWS_AS(cuda::logprob_head_forward<float>(gemm, out.get(), out.get() + 2, xn.get(), head.get(), targets.get(),
                                                    2, 4, 2, 0, ws.get(), nullptr),
                  lyre::plugin::Error);
}

TEST_CASE("head logits for generate match a double reference", "[gpu][logprob_head]") {
  require_gpu();
  const int64_t rows = 3, C = 40, V = 1001;
  Gemm gemm;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    INFO("T = " << type_name<T>());
    const auto xn = exact<T>(random_floats(size_t(rows * C), 9950));
    const auto head = exact<T>(random_floats(size_t(V * C), 9951, 0.3f));
    const HeadReference ref = reference_head(xn, head, std::vector<int32_t>(rows, -1), std::vector<float>(rows, 0.0f),
                                             rows, C, V);
    DeviceArray<T> d_xn(as<T>(xn)), d_head(as<T>(head));
    DeviceArray<float> logits(size_t(rows * V));
    cuda::head_logits<T>(gemm, logits.get(), d_xn.get(), d_head.get(), rows, C, V, nullptr);
    CHECK(relative_error(logits.download(), ref.logits) <= (std::is_same_v<T, float> ? fp32_bound(C)
                                                                                       : bf16_in_float_out_bound(C)));
  };
  run(float{});
  run(bf16{});
}

TEST_CASE("the default head chunk fills 256 MiB of logits, evened out", "[gpu][logprob_head]") {
  require_gpu();
  // Llama 3's vocabulary: 268435456 / (128256 * 4) = 523 rows fit.
  CHECK(cuda::logprob_head_chunk_rows(100, 128256) == 100);
  CHECK(cuda::logprob_head_chunk_rows(523, 128256) == 523);
  CHECK(cuda::logprob_head_chunk_rows(524, 128256) == 262);
  CHECK(cuda::logprob_head_chunk_rows(4096, 128256) == 512);  // 8 chunks of 512, not 7 x 523 + 435
  CHECK(cuda::logprob_head_chunk_rows(4096, 32000) == 2048);
  CHECK(cuda::logprob_head_chunk_rows(1000, int64_t(1) << 23) == 63);  // 64 rows at least: 16 chunks of 63
  CHECK(cuda::logprob_head_chunk_rows(0, 128256) == 1);
  // Workspace: float logits, plus T gradients at the next 256-byte boundary for bf16.
  CHECK(cuda::logprob_head_workspace(523, 4096, 128256, sizeof(float)) == size_t(523) * 128256 * 4);
  CHECK(cuda::logprob_head_workspace(523, 4096, 128256, sizeof(bf16)) == size_t(523) * 128256 * 6);
  CHECK(cuda::logprob_head_workspace(3, 8, 7, sizeof(bf16)) == 256 + 3 * 7 * 2);
}
