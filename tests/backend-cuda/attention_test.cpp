// Grouped-query causal attention with document masking (forward, backward), the KV cache append
// and decode attention, against a CPU reference in double written here: the O(T^2) definition
// per head, computed from the same (bf16-rounded where the GPU sees bf16) qkv and dout.
//
// Bounds (normwise relative error, each output separately: out, lse, dQ, dK, dV):
//  - fp32: 1e-5. Scores, softmax and products accumulate over at most a few hundred terms in
//    fp32 (2^-24 each); exp2f/log2f are within 2 ulp.
//  - bf16: 2e-2. Inputs are the same; the kernels round P and dS to bf16 for the tensor-core
//    products, Di comes from the bf16 output, and every output is one bf16 rounding (2^-9).
// Outputs start poisoned (NaN): an element a kernel never wrote gives an infinite error.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "gpu_test_support.hpp"
#include "kernels.hpp"

namespace cuda = lyre::cuda;
using cuda::bf16;
using namespace lyre::cuda::test;

namespace {

struct Shape {
  int64_t B, T, Hq, Hkv, D;
  int64_t S() const { return (Hq + 2 * Hkv) * D; }
  int64_t N() const { return B * T; }
  std::string str() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " Hq=" + std::to_string(Hq) +
           " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D);
  }
};

template <typename T>
const char* type_name() {
  return std::is_same_v<T, float> ? "float" : "bf16";
}
template <typename T>
std::vector<T> as(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return to_bf16(v);
}
// The values T holds, as the reference sees them.
template <typename T>
std::vector<float> exact(const std::vector<float>& v) {
  return to_float(as<T>(v));
}
template <typename T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 2e-2;
}

// Sets an environment variable for a scope (LYRE_CUDA_ATTENTION=simple picks the simple kernels).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value != nullptr)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

// ---- Segment id patterns ----
enum class Segments { one, packed, scattered };
const char* segments_name(Segments s) {
  return s == Segments::one ? "one document" : s == Segments::packed ? "packed documents + padding" : "scattered ids";
}

// one: every token in segment 1. packed: documents of random lengths with ids 1, 2, ... and the
// last ~1/8 of the row padding (id 0). scattered: runs of ids from {1, 2, 3} that come back
// (non-contiguous documents: the mask is by id, not by position).
std::vector<int32_t> make_segments(Segments kind, int64_t B, int64_t T, uint64_t seed) {
  std::vector<int32_t> seg(size_t(B * T), 1);
  std::mt19937_64 rng(seed);
  for (int64_t b = 0; b < B; ++b) {
    int32_t* s = seg.data() + b * T;
    if (kind == Segments::packed) {
      const int64_t pad = T >= 8 ? T / 8 + int64_t(b) : 0;
      int64_t i = 0;
      for (int32_t id = 1; i < T - pad; ++id) {
        const int64_t len = 1 + int64_t(rng() % uint64_t(std::max<int64_t>(1, T / 5)));
        for (int64_t k = 0; k < len && i < T - pad; ++k) s[i++] = id;
      }
      for (; i < T; ++i) s[i] = 0;
    } else if (kind == Segments::scattered) {
      for (int64_t i = 0; i < T;) {
        const int32_t id = 1 + int32_t(rng() % 3);
        const int64_t len = 1 + int64_t(rng() % 20);
        for (int64_t k = 0; k < len && i < T; ++k) s[i++] = id;
      }
    }
  }
  return seg;
}

// ---- The reference, in double ----
struct Reference {
  std::vector<double> out, lse, dqkv;
};

// qkv (N, S), dout (N, Hq*D) -> out, lse and dqkv (empty when dout is empty).
Reference reference_attention(const Shape& sh, const std::vector<float>& qkv, const std::vector<float>& dout,
                              const std::vector<int32_t>& seg) {
  const int64_t S = sh.S(), D = sh.D, Hq = sh.Hq, Hkv = sh.Hkv, T = sh.T, group = Hq / Hkv;
  const double scale = 1.0 / std::sqrt(double(D));
  Reference r;
  r.out.assign(size_t(sh.N() * Hq * D), 0.0);
  r.lse.assign(size_t(sh.N() * Hq), 0.0);
  const bool backward = !dout.empty();
  if (backward) r.dqkv.assign(size_t(sh.N() * S), 0.0);
  std::vector<double> p(static_cast<size_t>(T)), dp(static_cast<size_t>(T));
  for (int64_t b = 0; b < sh.B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / group;
      for (int64_t i = 0; i < T; ++i) {
        const int64_t ni = b * T + i;
        const float* q = qkv.data() + ni * S + h * D;
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          p[size_t(j)] = -INFINITY;
          if (seg[size_t(b * T + j)] != seg[size_t(ni)]) continue;
          const float* k = qkv.data() + (b * T + j) * S + (Hq + g) * D;
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += double(q[d]) * double(k[d]);
          p[size_t(j)] = s * scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          p[size_t(j)] = std::exp(p[size_t(j)] - mx);
          sum += p[size_t(j)];
        }
        r.lse[size_t(ni * Hq + h)] = mx + std::log(sum);
        double* o = r.out.data() + ni * Hq * D + h * D;
        for (int64_t j = 0; j <= i; ++j) {
          p[size_t(j)] /= sum;
          if (p[size_t(j)] == 0) continue;
          const float* v = qkv.data() + (b * T + j) * S + (Hq + Hkv + g) * D;
          for (int64_t d = 0; d < D; ++d) o[d] += p[size_t(j)] * double(v[d]);
        }
        if (!backward) continue;
        // dP_j = dO . V_j, Di = sum_j P_j dP_j, dS_j = P_j (dP_j - Di).
        const float* dO = dout.data() + ni * Hq * D + h * D;
        double Di = 0;
        for (int64_t j = 0; j <= i; ++j) {
          dp[size_t(j)] = 0;
          if (p[size_t(j)] == 0) continue;
          const float* v = qkv.data() + (b * T + j) * S + (Hq + Hkv + g) * D;
          for (int64_t d = 0; d < D; ++d) dp[size_t(j)] += double(dO[d]) * double(v[d]);
          Di += p[size_t(j)] * dp[size_t(j)];
        }
        double* dq = r.dqkv.data() + ni * S + h * D;
        for (int64_t j = 0; j <= i; ++j) {
          if (p[size_t(j)] == 0) continue;
          const double ds = p[size_t(j)] * (dp[size_t(j)] - Di) * scale;
          const float* k = qkv.data() + (b * T + j) * S + (Hq + g) * D;
          double* dk = r.dqkv.data() + (b * T + j) * S + (Hq + g) * D;
          double* dv = r.dqkv.data() + (b * T + j) * S + (Hq + Hkv + g) * D;
          for (int64_t d = 0; d < D; ++d) {
            dq[d] += ds * double(k[d]);
            dk[d] += ds * double(q[d]);
            dv[d] += p[size_t(j)] * double(dO[d]);
          }
        }
      }
    }
  return r;
}

// ---- Running the kernels ----
struct Result {
  std::vector<float> out, lse, dqkv;
};

template <typename T>
Result run_attention(const Shape& sh, const std::vector<float>& qkv, const std::vector<float>& dout,
                     const std::vector<int32_t>& seg) {
  DeviceArray<T> d_qkv(as<T>(qkv)), d_dout(as<T>(dout));
  DeviceArray<int32_t> d_seg(seg);
  DeviceArray<T> d_out(size_t(sh.N() * sh.Hq * sh.D)), d_dqkv(size_t(sh.N() * sh.S()));
  DeviceArray<float> d_lse(size_t(sh.N() * sh.Hq));
  DeviceArray<unsigned char> workspace(cuda::attention_backward_workspace(sh.B, sh.T, sh.Hq, sh.Hkv, sh.D));
  cuda::attention_forward<T>(d_out.get(), d_lse.get(), d_qkv.get(), d_seg.get(), sh.B, sh.T, sh.Hq, sh.Hkv, sh.D,
                             nullptr);
  cuda::attention_backward<T>(d_dqkv.get(), d_dout.get(), d_out.get(), d_lse.get(), d_qkv.get(), d_seg.get(), sh.B,
                              sh.T, sh.Hq, sh.Hkv, sh.D, workspace.get(), nullptr);
  Result r;
  r.out = to_float(d_out.download());
  r.lse = d_lse.download();
  r.dqkv = to_float(d_dqkv.download());
  return r;
}

// Columns [c0, c0 + width) of every row of a (rows, ld) buffer: dQ, dK or dV out of dqkv.
template <typename V>
std::vector<V> columns(const std::vector<V>& buf, int64_t ld, int64_t c0, int64_t width) {
  const int64_t rows = int64_t(buf.size()) / ld;
  std::vector<V> out;
  out.reserve(size_t(rows * width));
  for (int64_t r = 0; r < rows; ++r)
    out.insert(out.end(), buf.begin() + r * ld + c0, buf.begin() + r * ld + c0 + width);
  return out;
}

// Checks out, lse, dQ, dK, dV of `got` against `want` (double or float reference).
template <typename R>
void check_result(const Shape& sh, const Result& got, const std::vector<R>& out, const std::vector<R>& lse,
                  const std::vector<R>& dqkv, double tol) {
  const int64_t S = sh.S(), QD = sh.Hq * sh.D, KD = sh.Hkv * sh.D;
  const double e_out = relative_error(got.out, out);
  const double e_lse = relative_error(got.lse, lse);
  const double e_dq = relative_error(columns(got.dqkv, S, 0, QD), columns(dqkv, S, 0, QD));
  const double e_dk = relative_error(columns(got.dqkv, S, QD, KD), columns(dqkv, S, QD, KD));
  const double e_dv = relative_error(columns(got.dqkv, S, QD + KD, KD), columns(dqkv, S, QD + KD, KD));
  INFO("errors: out " << e_out << ", lse " << e_lse << ", dQ " << e_dq << ", dK " << e_dk << ", dV " << e_dv
                      << " (bound " << tol << ")");
  CHECK(e_out <= tol);
  CHECK(e_lse <= tol);
  CHECK(e_dq <= tol);
  CHECK(e_dk <= tol);
  CHECK(e_dv <= tol);
}

struct Case {
  Shape shape;
  Segments segments;
  float scale;  // of the random qkv: larger gives peakier softmax rows
};

std::vector<Case> reference_cases() {
  std::vector<Case> cases;
  const Shape shapes[] = {
      {1, 1, 1, 1, 8},      {1, 1, 2, 1, 64},    {2, 33, 4, 2, 16},  {1, 130, 3, 1, 64}, {2, 257, 8, 2, 128},
      {3, 65, 4, 4, 128},   {1, 300, 4, 1, 48},  {1, 77, 2, 2, 256}, {2, 129, 2, 1, 64},
  };
  for (const Shape& s : shapes) {
    cases.push_back({s, Segments::one, 1.0f});
    if (s.T > 1) cases.push_back({s, Segments::packed, 1.0f});
  }
  cases.push_back({{1, 200, 2, 1, 64}, Segments::scattered, 1.0f});
  cases.push_back({{1, 200, 2, 1, 128}, Segments::scattered, 1.0f});
  cases.push_back({{2, 150, 4, 2, 64}, Segments::packed, 4.0f});
  cases.push_back({{1, 150, 2, 1, 128}, Segments::one, 4.0f});
  return cases;
}

template <typename T>
void check_against_reference(bool force_simple) {
  ScopedEnv env("LYRE_CUDA_ATTENTION", force_simple ? "simple" : nullptr);
  uint64_t seed = 1000;
  for (const Case& c : reference_cases()) {
    const Shape& sh = c.shape;
    const std::vector<float> qkv = exact<T>(random_floats(size_t(sh.N() * sh.S()), ++seed, c.scale));
    const std::vector<float> dout = exact<T>(random_floats(size_t(sh.N() * sh.Hq * sh.D), ++seed));
    const std::vector<int32_t> seg = make_segments(c.segments, sh.B, sh.T, ++seed);
    INFO(type_name<T>() << (force_simple ? " simple kernels" : " default kernels") << ", " << sh.str() << ", "
                        << segments_name(c.segments) << ", qkv scale " << c.scale);
    const Reference ref = reference_attention(sh, qkv, dout, seg);
    const Result got = run_attention<T>(sh, qkv, dout, seg);
    check_result(sh, got, ref.out, ref.lse, ref.dqkv, tolerance<T>());
  }
}

}  // namespace

TEST_CASE("fp32 attention forward and backward match the double reference", "[attention]") {
  require_gpu();
  check_against_reference<float>(false);
}

TEST_CASE("bf16 attention forward and backward match the double reference (tensor-core kernels)",
          "[attention]") {
  require_gpu();
  check_against_reference<bf16>(false);
}

TEST_CASE("bf16 attention forward and backward match the double reference (simple kernels)", "[attention]") {
  require_gpu();
  check_against_reference<bf16>(true);
}

// The Llama-3.2-1B shape: bf16 (tensor cores, then the simple kernels) against the fp32 kernels
// run on the same bf16-rounded data (the CPU reference would take minutes here).
TEST_CASE("bf16 attention at the Llama-3.2-1B shape agrees with the fp32 kernels", "[attention]") {
  require_gpu();
  const Shape sh{1, 2048, 32, 8, 64};
  for (Segments kind : {Segments::one, Segments::packed}) {
    const std::vector<float> qkv = exact<bf16>(random_floats(size_t(sh.N() * sh.S()), 77));
    const std::vector<float> dout = exact<bf16>(random_floats(size_t(sh.N() * sh.Hq * sh.D), 78));
    const std::vector<int32_t> seg = make_segments(kind, sh.B, sh.T, 79);
    const Result want = run_attention<float>(sh, qkv, dout, seg);
    for (const bool simple : {false, true}) {
      ScopedEnv env("LYRE_CUDA_ATTENTION", simple ? "simple" : nullptr);
      INFO(sh.str() << ", " << segments_name(kind) << (simple ? ", simple kernels" : ", tensor-core kernels"));
      const Result got = run_attention<bf16>(sh, qkv, dout, seg);
      check_result(sh, got, want.out, want.lse, want.dqkv, 2e-2);
    }
  }
}

namespace {

template <typename T>
void check_kv_cache_and_decode(const Shape& sh) {
  const int64_t B = sh.B, T_ = sh.T, S = sh.S(), D = sh.D, Hq = sh.Hq, Hkv = sh.Hkv;
  const int64_t max_len = T_ + 7;
  INFO(type_name<T>() << ", " << sh.str() << ", max_len " << max_len);
  const std::vector<float> qkv = exact<T>(random_floats(size_t(sh.N() * S), 4242 + uint64_t(T_)));
  const std::vector<int32_t> seg(size_t(sh.N()), 1);
  // Row b holds length[b] tokens: the full row, 3 fewer, half.
  std::vector<int32_t> length(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b)
    length[size_t(b)] = int32_t(b == 0 ? T_ : b == 1 ? std::max<int64_t>(1, T_ - 3) : std::max<int64_t>(1, T_ / 2));

  // Append in two calls: columns [0, c1), then [c1, T).
  const int64_t c1 = std::max<int64_t>(1, T_ / 2), c2 = T_ - c1;
  DeviceArray<T> k_cache(size_t(B * Hkv * max_len * D)), v_cache(size_t(B * Hkv * max_len * D));
  auto append = [&](int64_t col0, int64_t cols) {
    if (cols == 0) return;
    std::vector<float> part(size_t(B * cols * S));
    std::vector<int32_t> start(static_cast<size_t>(B)), count(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      std::copy(qkv.begin() + (b * T_ + col0) * S, qkv.begin() + (b * T_ + col0 + cols) * S,
                part.begin() + b * cols * S);
      start[size_t(b)] = int32_t(col0);
      count[size_t(b)] = int32_t(std::clamp<int64_t>(length[size_t(b)] - col0, 0, cols));
    }
    DeviceArray<T> d_part(as<T>(part));
    DeviceArray<int32_t> d_start(start), d_count(count);
    cuda::kv_cache_append<T>(k_cache.get(), v_cache.get(), d_part.get(), d_start.get(), d_count.get(), B, cols, Hq,
                             Hkv, D, max_len, nullptr);
    check(cudaDeviceSynchronize(), "kv_cache_append");
  };
  append(0, c1);
  append(c1, c2);

  // The cache holds exactly the appended K and V heads, and nothing past each row's length.
  const std::vector<float> kc = to_float(k_cache.download()), vc = to_float(v_cache.download());
  int64_t wrong = 0, written_past = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < Hkv; ++g)
      for (int64_t pos = 0; pos < max_len; ++pos)
        for (int64_t d = 0; d < D; ++d) {
          const size_t at = size_t(((b * Hkv + g) * max_len + pos) * D + d);
          if (pos < length[size_t(b)]) {
            const float* row = qkv.data() + (b * T_ + pos) * S;
            wrong += kc[at] != row[(Hq + g) * D + d] || vc[at] != row[(Hq + Hkv + g) * D + d];
          } else {
            written_past += !std::isnan(kc[at]) || !std::isnan(vc[at]);
          }
        }
  CHECK(wrong == 0);
  CHECK(written_past == 0);

  // Decode the query of each row's last token; past the length the cache is still NaN, so a
  // read beyond it would show.
  std::vector<float> q(size_t(B * S));
  for (int64_t b = 0; b < B; ++b)
    std::copy(qkv.begin() + (b * T_ + length[size_t(b)] - 1) * S, qkv.begin() + (b * T_ + length[size_t(b)]) * S,
              q.begin() + b * S);
  DeviceArray<T> d_q(as<T>(q)), d_out(size_t(B * Hq * D));
  DeviceArray<int32_t> d_length(length);
  cuda::decode_attention<T>(d_out.get(), d_q.get(), k_cache.get(), v_cache.get(), d_length.get(), B, Hq, Hkv, D,
                            max_len, nullptr);
  const std::vector<float> got = to_float(d_out.download());

  // Against the reference and against the full forward's output at the same positions.
  const Reference ref = reference_attention(sh, qkv, {}, seg);
  DeviceArray<T> d_qkv(as<T>(qkv)), d_full(size_t(sh.N() * Hq * D));
  DeviceArray<int32_t> d_seg(seg);
  DeviceArray<float> d_lse(size_t(sh.N() * Hq));
  cuda::attention_forward<T>(d_full.get(), d_lse.get(), d_qkv.get(), d_seg.get(), B, T_, Hq, Hkv, D, nullptr);
  const std::vector<float> full = to_float(d_full.download());
  std::vector<double> want(size_t(B * Hq * D));
  std::vector<float> forward_last(size_t(B * Hq * D));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = b * T_ + length[size_t(b)] - 1;
    std::copy(ref.out.begin() + n * Hq * D, ref.out.begin() + (n + 1) * Hq * D, want.begin() + b * Hq * D);
    std::copy(full.begin() + n * Hq * D, full.begin() + (n + 1) * Hq * D, forward_last.begin() + b * Hq * D);
  }
  const double e_ref = relative_error(got, want), e_forward = relative_error(got, forward_last);
  INFO("decode vs reference " << e_ref << ", vs forward " << e_forward);
  CHECK(e_ref <= tolerance<T>());
  CHECK(e_forward <= tolerance<T>());
}

}  // namespace

TEST_CASE("kv cache append and decode attention match the full forward at the last position", "[attention]") {
  require_gpu();
  const Shape shapes[] = {{2, 70, 4, 2, 64}, {3, 600, 4, 2, 128}, {1, 5, 2, 2, 24}, {1, 1100, 2, 1, 256}};
  for (const Shape& sh : shapes) {
    check_kv_cache_and_decode<float>(sh);
    check_kv_cache_and_decode<bf16>(sh);
  }
}
