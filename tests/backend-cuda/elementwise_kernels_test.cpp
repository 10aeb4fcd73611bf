// The element-wise and normalisation kernels (casts, add, embedding, RMSNorm, RoPE, SwiGLU) against
// CPU references in double computed from the exact values the GPU reads (bf16-rounded where it
// reads bf16). Outputs start poisoned (NaN), so an element a kernel skips fails the comparison;
// "+=" outputs start from random values, so a kernel that overwrites fails too.
//
// Bounds (normwise relative error, ||gpu - ref|| / ||ref||):
//  - casts, add_inplace, embedding forward: exact (one IEEE rounding, same as the host's).
//  - fp32 outputs of a few float operations per element (RoPE, SwiGLU, x_out): each element is
//    within a few ulp (2^-24 = 6e-8 each, expf within 2 ulp): 1e-6 for RoPE and x_out, 2e-6 for
//    SwiGLU forward, 5e-6 for its backward (more operations, and 1 - sigmoid cancels).
//  - fp32 outputs that go through a float sum over a row or over rows (RMSNorm: rstd, norm_out,
//    dx, dweight; embedding backward's atomics): 1e-5 (the sum's error grows like sqrt(C) ulp).
//    These hold for bf16 *inputs* too (dout of rmsnorm_backward): the reference reads the same
//    bf16 values and the arithmetic is float either way.
//  - bf16 outputs: one final rounding to 8 mantissa bits, 2^-9 = 2e-3 per element at worst: 1e-2.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpu_test_support.hpp"
#include "kernels.hpp"
#include "layers.hpp"  // lyre::cpu::rope_inv_freq (lyre_llama_common)

namespace cuda = lyre::cuda;
using cuda::bf16;
using namespace lyre::cuda::test;

namespace {

// The host vector the GPU gets for T (bf16: rounded to nearest even).
template <typename T>
std::vector<T> as(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return to_bf16(v);
}
// The exact values T holds: what the references compute with.
template <typename T>
std::vector<float> exact(const std::vector<float>& v) {
  return to_float(as<T>(v));
}

// Bound for an output of type T whose fp32 bound is fp32_bound.
template <typename T>
double out_bound(double fp32_bound) {
  return std::is_same_v<T, bf16> ? 1e-2 : fp32_bound;
}

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

std::vector<int32_t> random_ints(size_t n, int32_t lo, int32_t hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

// Elements [offset, offset + n) of v.
template <typename T>
std::vector<T> slice(const std::vector<T>& v, size_t offset, size_t n) {
  return std::vector<T>(v.begin() + offset, v.begin() + offset + n);
}

}  // namespace

// ---- Casts and add ----

TEMPLATE_TEST_CASE("casts round to nearest even and widen exactly at any length and alignment", "[elementwise]",
                   float, bf16) {
  require_gpu();
  // 2^24 + 3: more packs than one wave of threads, so the grid-stride loop turns.
  for (const int64_t n : {int64_t(1), int64_t(7), int64_t(8), int64_t(1000), int64_t(4099), int64_t(1 << 24) + 3})
    for (const auto& [in_off, out_off] : {std::pair{0, 0}, std::pair{1, 1}, std::pair{0, 1}}) {
      CAPTURE(n, in_off, out_off);
      std::vector<float> host = random_floats(size_t(n + in_off), uint64_t(n) * 7 + in_off, 3.0f);
      // Ties of bf16 rounding (1 + 2^-8 lies halfway between two bf16 values; even wins), -0,
      // infinities and a subnormal.
      const uint32_t specials[] = {0x3F808000u, 0x3F818000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x00000001u};
      for (size_t k = 0; k < std::size(specials) && k < size_t(n); ++k)
        std::memcpy(&host[size_t(in_off) + k], &specials[k], sizeof(float));
      DeviceArray<float> in(host);
      DeviceArray<TestType> out(size_t(n + out_off));
      cuda::cast_from_float<TestType>(out.get() + out_off, in.get() + in_off, n, nullptr);
      const std::vector<TestType> got = out.download();
      const std::vector<TestType> want = as<TestType>(slice(host, size_t(in_off), size_t(n)));
      size_t wrong = 0;
      for (int64_t i = 0; i < n; ++i) wrong += !same_bits(got[size_t(out_off + i)], want[size_t(i)]);
      CHECK(wrong == 0);
      if (out_off == 1) CHECK(std::isnan(double(got[0])));  // the element before is untouched
      if constexpr (std::is_same_v<TestType, bf16>) {
        if (n >= 2) {
          CHECK(__bfloat16_as_ushort(got[size_t(out_off)]) == 0x3F80);      // tie to even, down
          CHECK(__bfloat16_as_ushort(got[size_t(out_off) + 1]) == 0x3F82);  // tie to even, up
        }
      }

      DeviceArray<float> back(size_t(n + in_off));
      cuda::cast_to_float<TestType>(back.get() + in_off, out.get() + out_off, n, nullptr);
      const std::vector<float> widened = back.download();
      const std::vector<float> want_back = to_float(want);
      wrong = 0;
      for (int64_t i = 0; i < n; ++i) wrong += !same_bits(widened[size_t(in_off + i)], want_back[size_t(i)]);
      CHECK(wrong == 0);
    }
}

TEST_CASE("add_inplace adds element by element at any length and alignment", "[elementwise]") {
  require_gpu();
  for (const int64_t n : {int64_t(1), int64_t(5), int64_t(4096), int64_t(1000003), int64_t(1 << 24) + 1})
    // Every mix of 16-byte aligned (0, 4) and unaligned (1) pointers.
    for (const auto& [out_off, in_off] : {std::pair{0, 0}, std::pair{4, 0}, std::pair{1, 0}, std::pair{0, 1},
                                         std::pair{1, 1}}) {
      CAPTURE(n, out_off, in_off);
      const std::vector<float> a = random_floats(size_t(n + out_off), 11 + uint64_t(n));
      const std::vector<float> b = random_floats(size_t(n + in_off), 12 + uint64_t(n));
      DeviceArray<float> out(a), in(b);
      cuda::add_inplace(out.get() + out_off, in.get() + in_off, n, nullptr);
      const std::vector<float> got = out.download();
      size_t wrong = 0;
      for (int64_t i = 0; i < n; ++i)
        wrong += !same_bits(got[size_t(out_off + i)], a[size_t(out_off + i)] + b[size_t(in_off + i)]);
      CHECK(wrong == 0);
      for (int k = 0; k < out_off; ++k) CHECK(same_bits(got[size_t(k)], a[size_t(k)]));
    }
}

TEST_CASE("add_inplace and the casts index past 2^31 elements", "[elementwise][large]") {
  require_gpu();
  const int64_t n = (int64_t(1) << 31) + 13;
  size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const size_t need = size_t(n) * (2 * sizeof(float) + sizeof(bf16)) + (size_t(1) << 30);
  if (free_bytes < need) {
    WARN("skipped: needs " << need / (1 << 20) << " MiB of free device memory, " << free_bytes / (1 << 20)
                           << " MiB free");
    return;
  }
  float *out = nullptr, *in = nullptr;
  bf16* low = nullptr;
  check(cudaMalloc(&out, size_t(n) * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&in, size_t(n) * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&low, size_t(n) * sizeof(bf16)), "cudaMalloc");
  // Every byte 0x3F: each float is 0x3F3F3F3F = 0.74705...
  check(cudaMemset(out, 0x3F, size_t(n) * sizeof(float)), "cudaMemset");
  check(cudaMemset(in, 0x3F, size_t(n) * sizeof(float)), "cudaMemset");
  check(cudaMemset(low, 0xFF, size_t(n) * sizeof(bf16)), "cudaMemset");
  cuda::add_inplace(out, in, n, nullptr);
  cuda::cast_from_float<bf16>(low, out, n, nullptr);
  check(cudaDeviceSynchronize(), "kernels");
  float x = 0;
  const uint32_t bits = 0x3F3F3F3Fu;
  std::memcpy(&x, &bits, sizeof(float));
  const float sum = x + x;
  const bf16 sum_low = __float2bfloat16(sum);
  const int64_t probes[] = {0, 1, (int64_t(1) << 31) - 1, int64_t(1) << 31, (int64_t(1) << 31) + 1, n - 8, n - 1};
  for (const int64_t i : probes) {
    CAPTURE(i);
    float got = 0;
    bf16 got_low;
    check(cudaMemcpy(&got, out + i, sizeof(float), cudaMemcpyDeviceToHost), "download");
    check(cudaMemcpy(&got_low, low + i, sizeof(bf16), cudaMemcpyDeviceToHost), "download");
    CHECK(got == sum);
    CHECK(same_bits(got_low, sum_low));
  }
  cudaFree(out);
  cudaFree(in);
  cudaFree(low);
}

// ---- Embedding ----

TEMPLATE_TEST_CASE("embedding forward gathers table rows, backward scatter-adds into them", "[embedding]", float,
                   bf16) {
  require_gpu();
  struct Shape {
    int64_t N, C, V;
  };
  // V smaller than N: tokens repeat, so backward adds several rows into one.
  // 5000 rows: more than one wave of blocks, so blocks take several rows.
  for (const Shape s : {Shape{1, 37, 5}, Shape{300, 37, 7}, Shape{300, 1000, 50}, Shape{64, 4096, 100},
                        Shape{33, 4100, 10}, Shape{5000, 37, 7}}) {
    CAPTURE(s.N, s.C, s.V);
    const std::vector<int32_t> tokens = random_ints(size_t(s.N), 0, int32_t(s.V - 1), uint64_t(s.N * s.C));
    const std::vector<float> table = exact<TestType>(random_floats(size_t(s.V * s.C), 21));
    DeviceArray<int32_t> d_tokens(tokens);
    DeviceArray<TestType> d_table(as<TestType>(table));
    DeviceArray<float> out(size_t(s.N * s.C));
    cuda::embedding_forward<TestType>(out.get(), d_tokens.get(), d_table.get(), s.N, s.C, nullptr);
    const std::vector<float> got = out.download();
    size_t wrong = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t c = 0; c < s.C; ++c)
        wrong += !same_bits(got[size_t(n * s.C + c)], table[size_t(tokens[size_t(n)] * s.C + c)]);
    CHECK(wrong == 0);

    // Backward (float only: the gradient is float in both precisions), into a pre-filled table.
    const std::vector<float> dout = random_floats(size_t(s.N * s.C), 22);
    const std::vector<float> dtable0 = random_floats(size_t(s.V * s.C), 23);
    std::vector<double> want = to_double(dtable0);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t c = 0; c < s.C; ++c) want[size_t(tokens[size_t(n)] * s.C + c)] += dout[size_t(n * s.C + c)];
    DeviceArray<float> d_dout(dout), dtable(dtable0);
    cuda::embedding_backward(dtable.get(), d_dout.get(), d_tokens.get(), s.N, s.C, nullptr);
    CHECK(relative_error(dtable.download(), want) <= 1e-5);
  }
}

// ---- RMSNorm ----

namespace {

struct NormForwardRef {
  std::vector<double> x, y, rstd;
};

// x = x_in + delta (delta may be empty), rstd = 1/sqrt(mean(x^2) + eps), y = x * rstd * w
NormForwardRef reference_norm_forward(const std::vector<float>& x_in, const std::vector<float>& delta,
                                      const std::vector<float>& w, int64_t N, int64_t C, double eps) {
  NormForwardRef r;
  r.x.resize(size_t(N * C));
  r.y.resize(size_t(N * C));
  r.rstd.resize(size_t(N));
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = size_t(n * C + c);
      r.x[i] = double(x_in[i]) + (delta.empty() ? 0.0 : double(delta[i]));
      ss += r.x[i] * r.x[i];
    }
    r.rstd[size_t(n)] = 1.0 / std::sqrt(ss / double(C) + eps);
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = size_t(n * C + c);
      r.y[i] = r.x[i] * r.rstd[size_t(n)] * double(w[size_t(c)]);
    }
  }
  return r;
}

struct NormCase {
  int64_t N, C;
  bool delta;     // fused residual add (else delta = nullptr)
  bool in_place;  // x_out == x_in
  int offset;     // elements by which x_in / x_out are shifted off 16-byte alignment
};

template <typename T>
void check_norm_forward(const NormCase& k) {
  CAPTURE(k.N, k.C, k.delta, k.in_place, k.offset);
  const int64_t NC = k.N * k.C;
  const float eps = 1e-5f;
  const uint64_t seed = uint64_t(k.N * 1000 + k.C);
  std::vector<float> x_host = random_floats(size_t(NC + k.offset), seed, 2.0f);
  const std::vector<float> delta = k.delta ? exact<T>(random_floats(size_t(NC), seed + 1)) : std::vector<float>{};
  std::vector<float> w = random_floats(size_t(k.C), seed + 2, 0.1f);
  for (float& v : w) v += 1.0f;
  const NormForwardRef want =
      reference_norm_forward(slice(x_host, size_t(k.offset), size_t(NC)), delta, w, k.N, k.C, eps);

  DeviceArray<float> x_in(x_host);
  DeviceArray<float> x_out_buf(size_t(NC + k.offset));
  DeviceArray<T> d_delta(k.delta ? as<T>(delta) : std::vector<T>{});
  DeviceArray<float> d_w(w);
  DeviceArray<T> norm_out(static_cast<size_t>(NC));
  DeviceArray<float> rstd(size_t(k.N));
  float* x_out = k.in_place ? x_in.get() + k.offset : x_out_buf.get() + k.offset;
  cuda::residual_rmsnorm_forward<T>(x_out, norm_out.get(), rstd.get(), x_in.get() + k.offset,
                                    k.delta ? d_delta.get() : nullptr, d_w.get(), k.N, k.C, eps, nullptr);
  const std::vector<float> x_got = (k.in_place ? x_in : x_out_buf).download();
  CHECK(relative_error(slice(x_got, size_t(k.offset), size_t(NC)), want.x) <= 1e-6);
  if (k.offset > 0) {  // the element before the rows is untouched
    if (k.in_place)
      CHECK(same_bits(x_got[0], x_host[0]));
    else
      CHECK(std::isnan(x_got[0]));
  }
  CHECK(relative_error(rstd.download(), want.rstd) <= 1e-5);
  CHECK(relative_error(to_float(norm_out.download()), want.y) <= out_bound<T>(1e-5));
}

template <typename T>
void check_norm_backward(int64_t N, int64_t C, bool with_dweight, int offset) {
  CAPTURE(N, C, with_dweight, offset);
  const int64_t NC = N * C;
  const uint64_t seed = uint64_t(N * 31 + C);
  const std::vector<float> x = random_floats(size_t(NC), seed, 2.0f);
  const std::vector<float> dout = exact<T>(random_floats(size_t(NC), seed + 1));
  std::vector<float> w = random_floats(size_t(C), seed + 2, 0.1f);
  for (float& v : w) v += 1.0f;
  std::vector<float> rstd(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(x[size_t(n * C + c)]) * x[size_t(n * C + c)];
    rstd[size_t(n)] = float(1.0 / std::sqrt(ss / double(C) + 1e-5));
  }
  const std::vector<float> dx0 = random_floats(size_t(NC + offset), seed + 3);
  const std::vector<float> dw0 = random_floats(size_t(C), seed + 4);

  // dx += r w g - x r^3 / C sum(w g x); dweight += sum over rows of g x r
  std::vector<double> dx_want(static_cast<size_t>(NC)), dw_want = to_double(dw0);
  for (int64_t n = 0; n < N; ++n) {
    const double r = rstd[size_t(n)];
    double s = 0;
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = size_t(n * C + c);
      s += double(w[size_t(c)]) * dout[i] * x[i];
    }
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = size_t(n * C + c);
      dx_want[i] = double(dx0[i + size_t(offset)]) + r * w[size_t(c)] * dout[i] - double(x[i]) * r * r * r / double(C) * s;
      dw_want[size_t(c)] += double(dout[i]) * x[i] * r;
    }
  }

  DeviceArray<float> d_x(x), d_w(w), d_rstd(rstd), dx(dx0), dweight(dw0);
  DeviceArray<T> d_dout(as<T>(dout));
  cuda::rmsnorm_backward<T>(dx.get() + offset, with_dweight ? dweight.get() : nullptr, d_dout.get(), d_x.get(),
                            d_w.get(), d_rstd.get(), N, C, nullptr);
  const std::vector<float> dx_got = dx.download();
  CHECK(relative_error(slice(dx_got, size_t(offset), size_t(NC)), dx_want) <= 1e-5);
  if (offset > 0) CHECK(same_bits(dx_got[0], dx0[0]));
  if (with_dweight)
    CHECK(relative_error(dweight.download(), dw_want) <= 1e-5);
  else
    CHECK(relative_error(dweight.download(), dw0) == 0.0);  // untouched
}

}  // namespace

TEMPLATE_TEST_CASE("residual_rmsnorm_forward adds the residual and normalises each row", "[rmsnorm]", float, bf16) {
  require_gpu();
  // C = 37, 4100 and the shifted rows go element by element; 9000 rows of 64 are more than one
  // wave of blocks, so blocks take several rows.
  for (const NormCase k : {NormCase{1, 37, true, false, 0}, NormCase{300, 37, true, false, 0},
                           NormCase{300, 1000, true, false, 0}, NormCase{17, 4096, true, false, 0},
                           NormCase{3, 16384, true, false, 0}, NormCase{9000, 64, true, false, 0},
                           NormCase{5, 4100, true, false, 0}, NormCase{4, 4096, true, false, 1}}) {
    check_norm_forward<TestType>(k);
  }
}

TEMPLATE_TEST_CASE("residual_rmsnorm_forward works in place and without a residual", "[rmsnorm]", float, bf16) {
  require_gpu();
  for (const NormCase k : {NormCase{300, 1000, true, true, 0}, NormCase{300, 37, true, true, 0},
                           NormCase{8, 4096, false, false, 0}, NormCase{8, 4096, false, true, 0},
                           NormCase{9, 37, false, false, 0}, NormCase{4, 4096, true, true, 1}}) {
    check_norm_forward<TestType>(k);
  }
}

TEMPLATE_TEST_CASE("rmsnorm_backward adds into dx and into the weight gradient", "[rmsnorm]", float, bf16) {
  require_gpu();
  check_norm_backward<TestType>(1, 37, true, 0);
  check_norm_backward<TestType>(300, 37, true, 0);
  check_norm_backward<TestType>(300, 1000, true, 0);
  check_norm_backward<TestType>(64, 4096, true, 0);
  check_norm_backward<TestType>(33, 4100, true, 0);
  check_norm_backward<TestType>(6000, 64, true, 0);   // many rows per block
  check_norm_backward<TestType>(6000, 40, true, 0);   // many rows per block, element by element
  check_norm_backward<TestType>(3, 16384, true, 0);   // 64 KiB of shared memory for dweight
  check_norm_backward<TestType>(5, 4096, true, 1);    // dx off alignment
}

TEMPLATE_TEST_CASE("rmsnorm_backward without a weight gradient leaves dweight alone", "[rmsnorm]", float, bf16) {
  require_gpu();
  check_norm_backward<TestType>(300, 1000, false, 0);
  check_norm_backward<TestType>(7, 37, false, 0);
  check_norm_backward<TestType>(2, 16384, false, 0);
}

// ---- RoPE ----

namespace {

struct RopeShape {
  int64_t N, Hq, Hkv, D;
};

// qkv rows (N, (Hq + 2 Hkv) D): the query and key heads rotated by sign * angle, in double.
std::vector<double> reference_rope(const std::vector<float>& qkv, const std::vector<int32_t>& pos,
                                   const std::vector<float>& cos, const std::vector<float>& sin, const RopeShape& s,
                                   int sign) {
  const int64_t half = s.D / 2, stride = (s.Hq + 2 * s.Hkv) * s.D;
  std::vector<double> out = to_double(qkv);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t h = 0; h < s.Hq + s.Hkv; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const size_t a = size_t(n * stride + h * s.D + i), b = a + size_t(half);
        const size_t t = size_t(pos[size_t(n)] * half + i);
        const double c = cos[t], sn = sign * double(sin[t]);
        out[a] = double(qkv[a]) * c - double(qkv[b]) * sn;
        out[b] = double(qkv[b]) * c + double(qkv[a]) * sn;
      }
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("rope rotates the query and key heads and leaves the value heads alone", "[rope]", float, bf16) {
  require_gpu();
  // D = 10 and 36: D/2 not a multiple of the pack (element by element); 64, 80, 128: packed.
  for (const RopeShape s : {RopeShape{1, 1, 1, 64}, RopeShape{300, 4, 2, 64}, RopeShape{7, 32, 8, 128},
                            RopeShape{5, 3, 1, 10}, RopeShape{11, 6, 3, 36}, RopeShape{13, 4, 4, 80}}) {
    CAPTURE(s.N, s.Hq, s.Hkv, s.D);
    const int64_t max_pos = 4096, half = s.D / 2, width = (s.Hq + 2 * s.Hkv) * s.D;
    const std::vector<double> inv_freq = lyre::cpu::rope_inv_freq(s.D, 500000.0, lyre::cpu::RopeScaling{});
    std::vector<float> cos(size_t(max_pos * half)), sin(cos.size());
    for (int64_t p = 0; p < max_pos; ++p)
      for (int64_t i = 0; i < half; ++i) {
        cos[size_t(p * half + i)] = float(std::cos(double(p) * inv_freq[size_t(i)]));
        sin[size_t(p * half + i)] = float(std::sin(double(p) * inv_freq[size_t(i)]));
      }
    std::vector<int32_t> pos = random_ints(size_t(s.N), 0, int32_t(max_pos - 1), uint64_t(s.N + s.D));
    pos[0] = int32_t(max_pos - 1);  // the table's last row
    const std::vector<float> qkv = exact<TestType>(random_floats(size_t(s.N * width), uint64_t(s.D)));

    DeviceArray<TestType> d_qkv(as<TestType>(qkv));
    DeviceArray<int32_t> d_pos(pos);
    DeviceArray<float> d_cos(cos), d_sin(sin);
    cuda::rope_forward<TestType>(d_qkv.get(), d_pos.get(), d_cos.get(), d_sin.get(), s.N, s.Hq, s.Hkv, s.D, nullptr);
    const std::vector<float> fwd = to_float(d_qkv.download());
    CHECK(relative_error(fwd, reference_rope(qkv, pos, cos, sin, s, 1)) <= out_bound<TestType>(1e-6));
    size_t value_changed = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t c = (s.Hq + s.Hkv) * s.D; c < width; ++c)
        value_changed += !same_bits(fwd[size_t(n * width + c)], qkv[size_t(n * width + c)]);
    CHECK(value_changed == 0);

    // Backward is the inverse rotation: checked against the reference, then forward o backward = id.
    DeviceArray<TestType> d_grad(as<TestType>(qkv));
    cuda::rope_backward<TestType>(d_grad.get(), d_pos.get(), d_cos.get(), d_sin.get(), s.N, s.Hq, s.Hkv, s.D,
                                  nullptr);
    CHECK(relative_error(to_float(d_grad.download()), reference_rope(qkv, pos, cos, sin, s, -1)) <=
          out_bound<TestType>(1e-6));
    cuda::rope_backward<TestType>(d_qkv.get(), d_pos.get(), d_cos.get(), d_sin.get(), s.N, s.Hq, s.Hkv, s.D,
                                  nullptr);
    // bf16: two roundings of 2^-9 each.
    CHECK(relative_error(to_float(d_qkv.download()), qkv) <= out_bound<TestType>(1e-6));
  }
}

// ---- SwiGLU ----

TEMPLATE_TEST_CASE("swiglu forward and backward match silu(gate) * up and its derivative", "[swiglu]", float, bf16) {
  require_gpu();
  // 3000 rows: more than the grid's y holds at once, so its blocks take several rows.
  const std::pair<int64_t, int64_t> shapes[] = {{1, 37},   {300, 37},   {300, 1000}, {3, 4096},
                                                {2, 14336}, {5, 1004}, {3000, 64}};
  for (const auto& [N, F] : shapes) {
    CAPTURE(N, F);
    const std::vector<float> gu = exact<TestType>(random_floats(size_t(N * 2 * F), uint64_t(N * F), 2.0f));
    const std::vector<float> dout = exact<TestType>(random_floats(size_t(N * F), uint64_t(N * F) + 1));
    std::vector<double> out_want(size_t(N * F)), dgu_want(size_t(N * 2 * F));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t f = 0; f < F; ++f) {
        const double g = gu[size_t(n * 2 * F + f)], u = gu[size_t(n * 2 * F + F + f)], d = dout[size_t(n * F + f)];
        const double s = 1.0 / (1.0 + std::exp(-g));
        out_want[size_t(n * F + f)] = g * s * u;
        dgu_want[size_t(n * 2 * F + f)] = d * u * s * (1.0 + g * (1.0 - s));
        dgu_want[size_t(n * 2 * F + F + f)] = d * g * s;
      }
    DeviceArray<TestType> d_gu(as<TestType>(gu)), d_dout(as<TestType>(dout));
    DeviceArray<TestType> out(size_t(N * F)), dgu(size_t(N * 2 * F));
    cuda::swiglu_forward<TestType>(out.get(), d_gu.get(), N, F, nullptr);
    cuda::swiglu_backward<TestType>(dgu.get(), d_dout.get(), d_gu.get(), N, F, nullptr);
    CHECK(relative_error(to_float(out.download()), out_want) <= out_bound<TestType>(2e-6));
    CHECK(relative_error(to_float(dgu.download()), dgu_want) <= out_bound<TestType>(5e-6));
  }
}
