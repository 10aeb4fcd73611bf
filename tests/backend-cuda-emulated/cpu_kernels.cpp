// plugins/backend-cuda/cuda/kernels.hpp on the CPU: every kernel and the Gemm class as plain loops
// over the fake device memory (fake_cudart.cpp), for the emulated build that runs backend-cuda's
// model, parameter store, optimizer and ABI glue without a GPU.
//
// Numerics: float math as kernels.hpp states it (sums, norm statistics, softmax and exp in
// float; matmuls accumulate in float). Where a GPU kernel stores T, the result is rounded to T
// (bf16 round-to-nearest-even), so the bf16 precision's roundings happen where they do on the
// device; roundings inside a kernel (the tensor-core attention's bf16 probabilities) are not
// copied. Reductions run in a fixed order: results are bit-reproducible here.
//
// Strictness: these kernels exist to catch the model using the interface wrongly, so each checks
// its preconditions and throws Error(INTERNAL) naming itself and the argument:
//  - every pointer covers its extent inside one live device block (not host memory, not past a
//    block's end), and data-dependent extents (embedding rows, RoPE table rows, cache rows,
//    optimizer chunks) are checked from the ids before they are used;
//  - an output overlaps no other argument, except where kernels.hpp allows it (x_out == x_in);
//  - ids, positions, segments, targets, cache starts, counts and lengths are in range, shapes
//    are valid, nullptr only where allowed, the stream is live;
//  - workspaces are overwritten whole (0xFF) before use, so a caller that keeps data in one, or
//    hands out a workspace that overlaps live data, sees it destroyed.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "device_memory.hpp"
#include "emulated_device.hpp"
#include "kernels.hpp"

namespace lyre::cuda {
namespace {

float to_f(float x) { return x; }
float to_f(bf16 x) { return __bfloat162float(x); }

template <typename T>
T from_f(float x);
template <>
float from_f<float>(float x) {
  return x;
}
template <>
bf16 from_f<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

[[noreturn]] void misuse(const std::string& kernel, const std::string& what) {
  throw plugin::Error(LYRE_ERROR_INTERNAL, "backend-cuda (emulated) " + kernel + ": " + what);
}

// One launch's pointer arguments: each is checked against the fake device memory when added,
// and disjoint() checks that no written range overlaps another range.
class Launch {
 public:
  Launch(std::string kernel, cudaStream_t stream) : kernel_(std::move(kernel)) {
    if (!emulated::stream_is_live(stream)) fail("the stream was never created or is destroyed");
  }

  template <typename U>
  void read(const char* name, const U* p, int64_t count) {
    add(name, p, count, sizeof(U), alignof(U), false, false);
  }
  template <typename U>
  void write(const char* name, U* p, int64_t count) {
    add(name, p, count, sizeof(U), alignof(U), true, false);
  }
  // May be nullptr (an optional output or input).
  template <typename U>
  void write_optional(const char* name, U* p, int64_t count) {
    add(name, p, count, sizeof(U), alignof(U), true, true);
  }
  template <typename U>
  void read_optional(const char* name, const U* p, int64_t count) {
    add(name, p, count, sizeof(U), alignof(U), false, true);
  }
  // `a` and `b` may be the very same range (kernels.hpp allows that aliasing).
  void allow_same(const char* a, const char* b) { same_ok_.push_back({a, b}); }

  void disjoint() const {
    for (size_t i = 0; i < ranges_.size(); ++i)
      for (size_t j = i + 1; j < ranges_.size(); ++j) {
        const Range &a = ranges_[i], &b = ranges_[j];
        if (!a.written && !b.written) continue;
        if (a.begin >= b.end || b.begin >= a.end) continue;
        if (a.begin == b.begin && a.end == b.end && allowed(a.name, b.name)) continue;
        fail(std::string(a.name) + " [" + std::to_string(a.end - a.begin) + " bytes] and " + b.name + " [" +
             std::to_string(b.end - b.begin) + " bytes] overlap" +
             (a.begin == b.begin && a.end == b.end ? " (the same memory)" : " (partly)") +
             ", which kernels.hpp does not allow");
      }
  }

  [[noreturn]] void fail(const std::string& what) const { misuse(kernel_, what); }
  void require(bool ok, const std::string& what) const {
    if (!ok) fail(what);
  }

 private:
  struct Range {
    const char* name;
    uintptr_t begin, end;
    bool written;
  };

  void add(const char* name, const void* p, int64_t count, size_t elem, size_t align, bool written, bool optional) {
    if (count < 0) fail(std::string(name) + ": negative element count " + std::to_string(count));
    if (p == nullptr && optional) return;
    if (p == nullptr && count > 0) fail(std::string(name) + " is NULL");
    const size_t bytes = size_t(count) * elem;
    if (bytes == 0) return;
    if (reinterpret_cast<uintptr_t>(p) % align != 0) fail(std::string(name) + " is not aligned to its element type");
    const std::string problem = emulated::device_range_problem(p, bytes);
    if (!problem.empty()) fail(std::string(name) + ": " + problem);
    const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
    ranges_.push_back({name, begin, begin + bytes, written});
  }

  bool allowed(const char* a, const char* b) const {
    for (const auto& [x, y] : same_ok_)
      if ((std::strcmp(x, a) == 0 && std::strcmp(y, b) == 0) || (std::strcmp(x, b) == 0 && std::strcmp(y, a) == 0))
        return true;
    return false;
  }

  std::string kernel_;
  std::vector<Range> ranges_;
  std::vector<std::pair<const char*, const char*>> same_ok_;
};

template <typename T>
std::string typed(const char* kernel) {
  return std::string(kernel) + (std::is_same_v<T, float> ? "<float>" : "<bf16>");
}

void require_shape(const Launch& l, bool ok, const std::string& shape) { l.require(ok, "bad shape " + shape); }

// Fills a workspace with 0xFF (NaN as float): nothing may rely on what it held before.
void clobber(void* workspace, size_t bytes) { std::memset(workspace, 0xFF, bytes); }

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// The [lo, hi] range of ids (hi < lo: none), after checking that each is >= 0.
struct IdRange {
  int64_t lo = 0, hi = -1;
};
IdRange id_range(const Launch& l, const char* name, const int32_t* ids, int64_t n) {
  IdRange r;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = ids[i];
    if (v < 0) l.fail(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(v) + " is negative");
    if (r.hi < r.lo) r.lo = r.hi = v;
    r.lo = std::min(r.lo, v);
    r.hi = std::max(r.hi, v);
  }
  return r;
}

}  // namespace

// ---- Conversions and simple element-wise work ----

template <typename T>
void cast_from_float(T* out, const float* in, int64_t n, cudaStream_t stream) {
  Launch l(typed<T>("cast_from_float"), stream);
  l.write("out", out, n);
  l.read("in", in, n);
  l.disjoint();
  for (int64_t i = 0; i < n; ++i) out[i] = from_f<T>(in[i]);
}

template <typename T>
void cast_to_float(float* out, const T* in, int64_t n, cudaStream_t stream) {
  Launch l(typed<T>("cast_to_float"), stream);
  l.write("out", out, n);
  l.read("in", in, n);
  l.disjoint();
  for (int64_t i = 0; i < n; ++i) out[i] = to_f(in[i]);
}

void add_inplace(float* out, const float* in, int64_t n, cudaStream_t stream) {
  Launch l("add_inplace", stream);
  l.write("out", out, n);
  l.read("in", in, n);
  l.disjoint();
  for (int64_t i = 0; i < n; ++i) out[i] += in[i];
}

// ---- Token embedding ----

template <typename T>
void embedding_forward(float* out, const int32_t* tokens, const T* table, int64_t N, int64_t C, cudaStream_t stream) {
  Launch l(typed<T>("embedding_forward"), stream);
  require_shape(l, N >= 0 && C >= 1, "N=" + std::to_string(N) + " C=" + std::to_string(C));
  l.read("tokens", tokens, N);
  const IdRange ids = id_range(l, "tokens", tokens, N);
  l.read("table rows of the tokens", table + ids.lo * C, (ids.hi - ids.lo + 1) * C);
  l.write("out", out, N * C);
  l.disjoint();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = to_f(table[int64_t(tokens[n]) * C + c]);
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t C,
                        cudaStream_t stream) {
  Launch l("embedding_backward", stream);
  require_shape(l, N >= 0 && C >= 1, "N=" + std::to_string(N) + " C=" + std::to_string(C));
  l.read("tokens", tokens, N);
  const IdRange ids = id_range(l, "tokens", tokens, N);
  l.write("dtable rows of the tokens", dtable + ids.lo * C, (ids.hi - ids.lo + 1) * C);
  l.read("dout", dout, N * C);
  l.disjoint();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) dtable[int64_t(tokens[n]) * C + c] += dout[n * C + c];
}

// ---- RMSNorm ----

template <typename T>
void residual_rmsnorm_forward(float* x_out, T* norm_out, float* rstd, const float* x_in, const T* delta,
                              const float* weight, int64_t N, int64_t C, float eps, cudaStream_t stream) {
  Launch l(typed<T>("residual_rmsnorm_forward"), stream);
  require_shape(l, N >= 0 && C >= 1, "N=" + std::to_string(N) + " C=" + std::to_string(C));
  l.write("x_out", x_out, N * C);
  l.write("norm_out", norm_out, N * C);
  l.write("rstd", rstd, N);
  l.read("x_in", x_in, N * C);
  l.read_optional("delta", delta, N * C);
  l.read("weight", weight, C);
  l.allow_same("x_out", "x_in");
  l.disjoint();
  for (int64_t n = 0; n < N; ++n) {
    float ss = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      float x = x_in[n * C + c];
      if (delta != nullptr) x += to_f(delta[n * C + c]);
      x_out[n * C + c] = x;
      ss += x * x;
    }
    const float r = 1.0f / std::sqrt(ss / float(C) + eps);
    rstd[n] = r;
    for (int64_t c = 0; c < C; ++c) norm_out[n * C + c] = from_f<T>(x_out[n * C + c] * r * weight[c]);
  }
}

template <typename T>
void rmsnorm_backward(float* dx, float* dweight, const T* dout, const float* x, const float* weight, const float* rstd,
                      int64_t N, int64_t C, cudaStream_t stream) {
  Launch l(typed<T>("rmsnorm_backward"), stream);
  require_shape(l, N >= 0 && C >= 1, "N=" + std::to_string(N) + " C=" + std::to_string(C));
  l.write("dx", dx, N * C);
  l.write_optional("dweight", dweight, C);
  l.read("dout", dout, N * C);
  l.read("x", x, N * C);
  l.read("weight", weight, C);
  l.read("rstd", rstd, N);
  l.disjoint();
  for (int64_t n = 0; n < N; ++n) {
    const float r = rstd[n];
    float s = 0.0f;
    for (int64_t c = 0; c < C; ++c) s += weight[c] * to_f(dout[n * C + c]) * x[n * C + c];
    const float coef = s * r * r * r / float(C);
    for (int64_t c = 0; c < C; ++c) {
      const float g = to_f(dout[n * C + c]);
      dx[n * C + c] += r * weight[c] * g - coef * x[n * C + c];
      if (dweight != nullptr) dweight[c] += g * x[n * C + c] * r;
    }
  }
}

// ---- Rotary position embedding ----

namespace {

// sign +1 rotates by +angle (forward), -1 by -angle (backward).
template <typename T>
void rope(const char* kernel, float sign, T* qkv, const int32_t* positions, const float* cos, const float* sin,
          int64_t N, int64_t Hq, int64_t Hkv, int64_t D, cudaStream_t stream) {
  Launch l(typed<T>(kernel), stream);
  require_shape(l, N >= 0 && Hq >= 1 && Hkv >= 1 && D >= 2 && D % 2 == 0,
                "N=" + std::to_string(N) + " Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) +
                    " D=" + std::to_string(D) + " (D even)");
  const int64_t half = D / 2, S = (Hq + 2 * Hkv) * D;
  l.write("qkv", qkv, N * S);
  l.read("positions", positions, N);
  if (N == 0) return;
  const IdRange pos = id_range(l, "positions", positions, N);
  const float* cos_rows = cos + pos.lo * half;
  const float* sin_rows = sin + pos.lo * half;
  const int64_t table = (pos.hi - pos.lo + 1) * half;
  l.read("cos rows of the positions", cos_rows, table);
  l.read("sin rows of the positions", sin_rows, table);
  // Both tables are read, so disjoint() lets them overlap; they must not (a position past the
  // end of the cos table reads the sin table).
  const bool apart = cos_rows + table <= sin_rows || sin_rows + table <= cos_rows;
  l.require(apart, "the cos and sin rows of positions [" + std::to_string(pos.lo) + ", " + std::to_string(pos.hi) +
                       "] overlap: a position is past the end of the tables");
  l.disjoint();
  for (int64_t n = 0; n < N; ++n) {
    const float* c = cos + int64_t(positions[n]) * half;
    const float* s = sin + int64_t(positions[n]) * half;
    for (int64_t h = 0; h < Hq + Hkv; ++h) {
      T* x = qkv + n * S + h * D;
      for (int64_t i = 0; i < half; ++i) {
        const float a = to_f(x[i]), b = to_f(x[i + half]), si = sign * s[i];
        x[i] = from_f<T>(a * c[i] - b * si);
        x[i + half] = from_f<T>(b * c[i] + a * si);
      }
    }
  }
}

}  // namespace

template <typename T>
void rope_forward(T* qkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int64_t Hq,
                  int64_t Hkv, int64_t D, cudaStream_t stream) {
  rope<T>("rope_forward", 1.0f, qkv, positions, cos, sin, N, Hq, Hkv, D, stream);
}

template <typename T>
void rope_backward(T* dqkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int64_t Hq,
                   int64_t Hkv, int64_t D, cudaStream_t stream) {
  rope<T>("rope_backward", -1.0f, dqkv, positions, cos, sin, N, Hq, Hkv, D, stream);
}

// ---- SwiGLU ----

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

template <typename T>
void swiglu_forward(T* out, const T* gu, int64_t N, int64_t F, cudaStream_t stream) {
  Launch l(typed<T>("swiglu_forward"), stream);
  require_shape(l, N >= 0 && F >= 1, "N=" + std::to_string(N) + " F=" + std::to_string(F));
  l.write("out", out, N * F);
  l.read("gu", gu, N * 2 * F);
  l.disjoint();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t f = 0; f < F; ++f) {
      const float g = to_f(gu[n * 2 * F + f]), u = to_f(gu[n * 2 * F + F + f]);
      out[n * F + f] = from_f<T>(g * sigmoid(g) * u);
    }
}

template <typename T>
void swiglu_backward(T* dgu, const T* dout, const T* gu, int64_t N, int64_t F, cudaStream_t stream) {
  Launch l(typed<T>("swiglu_backward"), stream);
  require_shape(l, N >= 0 && F >= 1, "N=" + std::to_string(N) + " F=" + std::to_string(F));
  l.write("dgu", dgu, N * 2 * F);
  l.read("dout", dout, N * F);
  l.read("gu", gu, N * 2 * F);
  l.disjoint();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t f = 0; f < F; ++f) {
      const float g = to_f(gu[n * 2 * F + f]), u = to_f(gu[n * 2 * F + F + f]), d = to_f(dout[n * F + f]);
      const float s = sigmoid(g);
      dgu[n * 2 * F + f] = from_f<T>(d * u * s * (1.0f + g * (1.0f - s)));
      dgu[n * 2 * F + F + f] = from_f<T>(d * g * s);
    }
}

// ---- Attention ----

namespace {

void check_heads(const Launch& l, int64_t B, int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D) {
  require_shape(l, B >= 0 && Tlen >= 0 && Hq >= 1 && Hkv >= 1 && Hq % Hkv == 0 && D >= 2 && D % 2 == 0 && D <= 256,
                "B=" + std::to_string(B) + " T=" + std::to_string(Tlen) + " Hq=" + std::to_string(Hq) +
                    " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D) +
                    " (want Hq a multiple of Hkv, D even and <= 256)");
}

bool visible(const int32_t* seg, int64_t i, int64_t j) { return j <= i && seg[j] == seg[i]; }

}  // namespace

template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, const int32_t* segment_ids, int64_t B, int64_t Tlen,
                       int64_t Hq, int64_t Hkv, int64_t D, cudaStream_t stream) {
  Launch l(typed<T>("attention_forward"), stream);
  check_heads(l, B, Tlen, Hq, Hkv, D);
  const int64_t N = B * Tlen, S = (Hq + 2 * Hkv) * D, group = Hq / Hkv;
  l.write("out", out, N * Hq * D);
  l.write("lse", lse, N * Hq);
  l.read("qkv", qkv, N * S);
  l.read("segment_ids", segment_ids, N);
  l.disjoint();
  id_range(l, "segment_ids", segment_ids, N);
  const float scale = float(1.0 / std::sqrt(double(D)));
  std::vector<float> p(static_cast<size_t>(std::max<int64_t>(Tlen, 1))), acc(static_cast<size_t>(D));
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* seg = segment_ids + b * Tlen;
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kh = h / group;
      for (int64_t i = 0; i < Tlen; ++i) {
        const T* q = qkv + (b * Tlen + i) * S + h * D;
        float top = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          if (!visible(seg, i, j)) continue;
          const T* k = qkv + (b * Tlen + j) * S + (Hq + kh) * D;
          float s = 0.0f;
          for (int64_t d = 0; d < D; ++d) s += to_f(q[d]) * to_f(k[d]);
          p[size_t(j)] = s * scale;
          top = std::max(top, p[size_t(j)]);
        }
        float sum = 0.0f;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j <= i; ++j) {
          if (!visible(seg, i, j)) continue;
          const float e = std::exp(p[size_t(j)] - top);
          sum += e;
          const T* v = qkv + (b * Tlen + j) * S + (Hq + Hkv + kh) * D;
          for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += e * to_f(v[d]);
        }
        T* o = out + (b * Tlen + i) * Hq * D + h * D;
        for (int64_t d = 0; d < D; ++d) o[d] = from_f<T>(acc[size_t(d)] / sum);
        lse[(b * Tlen + i) * Hq + h] = top + std::log(sum);
      }
    }
  }
}

size_t attention_backward_workspace(int64_t B, int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D) {
  // As kernels/attention.cu: a float accumulator of the dqkv layout, then two (B*T, Hq) floats.
  const size_t N = size_t(B * Tlen);
  return align256(N * size_t((Hq + 2 * Hkv) * D) * sizeof(float)) + 2 * align256(N * size_t(Hq) * sizeof(float));
}

template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* out, const float* lse, const T* qkv,
                        const int32_t* segment_ids, int64_t B, int64_t Tlen, int64_t Hq, int64_t Hkv, int64_t D,
                        void* workspace, cudaStream_t stream) {
  Launch l(typed<T>("attention_backward"), stream);
  check_heads(l, B, Tlen, Hq, Hkv, D);
  const int64_t N = B * Tlen, S = (Hq + 2 * Hkv) * D, group = Hq / Hkv;
  const size_t ws_bytes = attention_backward_workspace(B, Tlen, Hq, Hkv, D);
  l.write("dqkv", dqkv, N * S);
  l.read("dout", dout, N * Hq * D);
  l.read("out", out, N * Hq * D);
  l.read("lse", lse, N * Hq);
  l.read("qkv", qkv, N * S);
  l.read("segment_ids", segment_ids, N);
  l.write("workspace", static_cast<char*>(workspace), int64_t(ws_bytes));
  l.disjoint();
  id_range(l, "segment_ids", segment_ids, N);
  if (N == 0) return;
  clobber(workspace, ws_bytes);
  // The float accumulator and each query's di = dout . out, in the workspace as on the device.
  float* dacc = static_cast<float*>(workspace);
  float* di = reinterpret_cast<float*>(static_cast<char*>(workspace) + align256(size_t(N * S) * sizeof(float)));
  std::fill(dacc, dacc + N * S, 0.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < Hq; ++h) {
      float s = 0.0f;
      for (int64_t d = 0; d < D; ++d) s += to_f(dout[(n * Hq + h) * D + d]) * to_f(out[(n * Hq + h) * D + d]);
      di[n * Hq + h] = s;
    }
  const float scale = float(1.0 / std::sqrt(double(D)));
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* seg = segment_ids + b * Tlen;
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kh = h / group;
      for (int64_t i = 0; i < Tlen; ++i) {
        const int64_t qi = b * Tlen + i;
        const T* q = qkv + qi * S + h * D;
        const T* go = dout + (qi * Hq + h) * D;
        const float row_lse = lse[qi * Hq + h], row_di = di[qi * Hq + h];
        float* dq = dacc + qi * S + h * D;
        for (int64_t j = 0; j <= i; ++j) {
          if (!visible(seg, i, j)) continue;
          const int64_t kj = b * Tlen + j;
          const T* k = qkv + kj * S + (Hq + kh) * D;
          const T* v = qkv + kj * S + (Hq + Hkv + kh) * D;
          float s = 0.0f, dp = 0.0f;
          for (int64_t d = 0; d < D; ++d) {
            s += to_f(q[d]) * to_f(k[d]);
            dp += to_f(go[d]) * to_f(v[d]);
          }
          const float p = std::exp(s * scale - row_lse);
          const float ds = p * (dp - row_di) * scale;
          float* dk = dacc + kj * S + (Hq + kh) * D;
          float* dv = dacc + kj * S + (Hq + Hkv + kh) * D;
          for (int64_t d = 0; d < D; ++d) {
            dq[d] += ds * to_f(k[d]);
            dk[d] += ds * to_f(q[d]);
            dv[d] += p * to_f(go[d]);
          }
        }
      }
    }
  }
  for (int64_t e = 0; e < N * S; ++e) dqkv[e] = from_f<T>(dacc[e]);
}

template <typename T>
void kv_cache_append(T* k_cache, T* v_cache, const T* qkv, const int32_t* start, const int32_t* count, int64_t B,
                     int64_t cols, int64_t Hq, int64_t Hkv, int64_t D, int64_t max_len, cudaStream_t stream) {
  Launch l(typed<T>("kv_cache_append"), stream);
  check_heads(l, B, cols, Hq, Hkv, D);
  require_shape(l, max_len >= 1, "max_len=" + std::to_string(max_len));
  const int64_t S = (Hq + 2 * Hkv) * D, cache = B * Hkv * max_len * D;
  l.write("k_cache", k_cache, cache);
  l.write("v_cache", v_cache, cache);
  l.read("qkv", qkv, B * cols * S);
  l.read("start", start, B);
  l.read("count", count, B);
  l.disjoint();
  for (int64_t b = 0; b < B; ++b)
    l.require(start[b] >= 0 && count[b] >= 0 && count[b] <= cols && int64_t(start[b]) + count[b] <= max_len,
              "row " + std::to_string(b) + ": start " + std::to_string(start[b]) + ", count " +
                  std::to_string(count[b]) + " (want 0 <= count <= cols = " + std::to_string(cols) +
                  ", start + count <= max_len = " + std::to_string(max_len) + ")");
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < count[b]; ++c) {
      const T* row = qkv + (b * cols + c) * S;
      const int64_t t = start[b] + c;
      for (int64_t h = 0; h < Hkv; ++h)
        for (int64_t d = 0; d < D; ++d) {
          k_cache[((b * Hkv + h) * max_len + t) * D + d] = row[(Hq + h) * D + d];
          v_cache[((b * Hkv + h) * max_len + t) * D + d] = row[(Hq + Hkv + h) * D + d];
        }
    }
}

template <typename T>
void decode_attention(T* out, const T* qkv, const T* k_cache, const T* v_cache, const int32_t* length, int64_t B,
                      int64_t Hq, int64_t Hkv, int64_t D, int64_t max_len, cudaStream_t stream) {
  Launch l(typed<T>("decode_attention"), stream);
  check_heads(l, B, 1, Hq, Hkv, D);
  require_shape(l, max_len >= 1, "max_len=" + std::to_string(max_len));
  const int64_t S = (Hq + 2 * Hkv) * D, cache = B * Hkv * max_len * D, group = Hq / Hkv;
  l.write("out", out, B * Hq * D);
  l.read("qkv", qkv, B * S);
  l.read("k_cache", k_cache, cache);
  l.read("v_cache", v_cache, cache);
  l.read("length", length, B);
  l.disjoint();
  for (int64_t b = 0; b < B; ++b)
    l.require(length[b] >= 1 && length[b] <= max_len, "length[" + std::to_string(b) +
                                                          "] = " + std::to_string(length[b]) +
                                                          " is outside [1, max_len = " + std::to_string(max_len) + "]");
  const float scale = float(1.0 / std::sqrt(double(D)));
  std::vector<float> p(static_cast<size_t>(max_len)), acc(static_cast<size_t>(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kh = h / group;
      const T* q = qkv + b * S + h * D;
      float top = -INFINITY;
      for (int64_t t = 0; t < length[b]; ++t) {
        const T* k = k_cache + ((b * Hkv + kh) * max_len + t) * D;
        float s = 0.0f;
        for (int64_t d = 0; d < D; ++d) s += to_f(q[d]) * to_f(k[d]);
        p[size_t(t)] = s * scale;
        top = std::max(top, p[size_t(t)]);
      }
      float sum = 0.0f;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t t = 0; t < length[b]; ++t) {
        const float e = std::exp(p[size_t(t)] - top);
        sum += e;
        const T* v = v_cache + ((b * Hkv + kh) * max_len + t) * D;
        for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += e * to_f(v[d]);
      }
      for (int64_t d = 0; d < D; ++d) out[(b * Hq + h) * D + d] = from_f<T>(acc[size_t(d)] / sum);
    }
}

// ---- Gemm: triple loops ----

// The device one holds a cuBLASLt handle and a 32 MiB workspace; the workspace is allocated here
// too, so that the allocator's tally reads as on the device.
struct Gemm::Impl {
  void* workspace = nullptr;
};

Gemm::Gemm() : impl_(new Impl) {
  try {
    impl_->workspace = device_allocate(size_t(32) << 20, MemoryKind::workspace);
  } catch (...) {
    delete impl_;
    throw;
  }
}

Gemm::~Gemm() {
  device_free(impl_->workspace);
  delete impl_;
}

template <typename TIn, typename TOut>
void Gemm::matmul(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const TIn* A, int64_t lda,
                  const TIn* B, int64_t ldb, float beta, TOut* C, int64_t ldc, cudaStream_t stream) {
  static_assert(std::is_same_v<TOut, float> || std::is_same_v<TOut, TIn>, "C is float or the input type");
  const std::string name =
      std::string("matmul<") + (std::is_same_v<TIn, float> ? "float" : "bf16") + " -> " +
      (std::is_same_v<TOut, float> ? "float" : "bf16") + "> M=" + std::to_string(M) + " N=" + std::to_string(N) +
      " K=" + std::to_string(K) + " trans_a=" + std::to_string(trans_a) + " trans_b=" + std::to_string(trans_b) +
      " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) + " ldc=" + std::to_string(ldc);
  // The device Gemm's argument checks (INVALID_ARGUMENT, as there).
  auto invalid = [&](const std::string& what) {
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cuda: " + what + " in " + name);
  };
  if (M < 0 || N < 0 || K < 0) invalid("negative dimension");
  if (lda < std::max<int64_t>(1, trans_a ? M : K)) invalid("lda too small");
  if (ldb < std::max<int64_t>(1, trans_b ? K : N)) invalid("ldb too small");
  if (ldc < std::max<int64_t>(1, N)) invalid("ldc too small");
  Launch l(name, stream);
  if (M == 0 || N == 0) return;
  // Extents as stored: rows x leading dimension, the last row only as wide as it is used.
  const int64_t a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const int64_t b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  if (K > 0) {
    l.read("A", A, (a_rows - 1) * lda + a_cols);
    l.read("B", B, (b_rows - 1) * ldb + b_cols);
  }
  l.write("C", C, (M - 1) * ldc + N);
  l.disjoint();
  if (K == 0) {
    if (beta == 1.0f) return;
    if (beta != 0.0f) invalid("K == 0 with beta other than 0 or 1 is not supported");
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) C[m * ldc + n] = from_f<TOut>(0.0f);
    return;
  }
  // op(A) as (M, K) and op(B)^T as (N, K), in float: every dot product reads two contiguous rows.
  std::vector<float> a(static_cast<size_t>(M * K)), bt(static_cast<size_t>(N * K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) a[size_t(m * K + k)] = to_f(trans_a ? A[k * lda + m] : A[m * lda + k]);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) bt[size_t(n * K + k)] = to_f(trans_b ? B[n * ldb + k] : B[k * ldb + n]);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = a.data() + m * K;
      const float* y = bt.data() + n * K;
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += x[k] * y[k];
      // beta == 0 does not read C (it may hold NaN), as in BLAS.
      const float c = beta == 0.0f ? alpha * acc : alpha * acc + beta * to_f(C[m * ldc + n]);
      C[m * ldc + n] = from_f<TOut>(c);
    }
}

template void Gemm::matmul<float, float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                         const float*, int64_t, float, float*, int64_t, cudaStream_t);
template void Gemm::matmul<bf16, bf16>(bool, bool, int64_t, int64_t, int64_t, float, const bf16*, int64_t, const bf16*,
                                       int64_t, float, bf16*, int64_t, cudaStream_t);
template void Gemm::matmul<bf16, float>(bool, bool, int64_t, int64_t, int64_t, float, const bf16*, int64_t, const bf16*,
                                        int64_t, float, float*, int64_t, cudaStream_t);

// ---- Fused log-prob head ----

namespace {

// As kernels/logprob_head.cu: the float logits of a chunk, then (T = bf16) its dlogits in T.
size_t head_dlogits_offset(int64_t chunk_rows, int64_t V) {
  return align256(size_t(chunk_rows) * size_t(V) * sizeof(float));
}

void check_head_shape(const Launch& l, int64_t N, int64_t C, int64_t V, int64_t chunk_rows) {
  require_shape(l, N >= 0 && C >= 1 && V >= 1 && chunk_rows >= 1 && chunk_rows <= INT32_MAX,
                "N=" + std::to_string(N) + " C=" + std::to_string(C) + " V=" + std::to_string(V) +
                    " chunk_rows=" + std::to_string(chunk_rows));
}

}  // namespace

size_t logprob_head_workspace(int64_t chunk_rows, int64_t /*C*/, int64_t V, size_t act_bytes) {
  const size_t logits = head_dlogits_offset(chunk_rows, V);
  return act_bytes == sizeof(float) ? logits : logits + size_t(chunk_rows) * size_t(V) * act_bytes;
}

int64_t logprob_head_chunk_rows(int64_t N, int64_t V) {
  // kernels/logprob_head.cu's rule, so that the model chunks here as it does on the device.
  constexpr int64_t kLogitsBudgetBytes = int64_t(256) << 20, kMinChunkRows = 64;
  if (V < 1) throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "backend-cuda: vocabulary size " + std::to_string(V));
  const int64_t fit = std::max(kLogitsBudgetBytes / (V * int64_t(sizeof(float))), kMinChunkRows);
  if (N <= fit) return std::max<int64_t>(1, N);
  const int64_t chunks = (N + fit - 1) / fit;
  return (N + chunks - 1) / chunks;
}

template <typename T>
void logprob_head_forward(Gemm& gemm, float* logp, float* lse, const T* xn, const T* head, const int32_t* targets,
                          int64_t N, int64_t C, int64_t V, int64_t chunk_rows, void* workspace, cudaStream_t stream) {
  Launch l(typed<T>("logprob_head_forward"), stream);
  check_head_shape(l, N, C, V, chunk_rows);
  const size_t ws_bytes = logprob_head_workspace(chunk_rows, C, V, sizeof(T));
  l.write("logp", logp, N);
  l.write("lse", lse, N);
  l.read("xn", xn, N * C);
  l.read("head", head, V * C);
  l.read("targets", targets, N);
  l.write("workspace", static_cast<char*>(workspace), int64_t(ws_bytes));
  l.disjoint();
  for (int64_t n = 0; n < N; ++n)
    l.require(targets[n] < V, "targets[" + std::to_string(n) + "] = " + std::to_string(targets[n]) +
                                  " is not < V = " + std::to_string(V) + " (the host checks targets first)");
  clobber(workspace, ws_bytes);
  float* logits = static_cast<float*>(workspace);
  for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
    const int64_t m = std::min(chunk_rows, N - r0);
    gemm.matmul<T, float>(false, true, m, V, C, 1.0f, xn + r0 * C, C, head, C, 0.0f, logits, V, stream);
    for (int64_t r = 0; r < m; ++r) {
      const int64_t n = r0 + r;
      if (targets[n] < 0) {
        logp[n] = lse[n] = 0.0f;
        continue;
      }
      const float* row = logits + r * V;
      const float top = *std::max_element(row, row + V);
      float sum = 0.0f;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - top);
      lse[n] = top + std::log(sum);
      logp[n] = row[targets[n]] - lse[n];
    }
  }
}

template <typename T>
void logprob_head_backward(Gemm& gemm, T* dxn, float* dhead, const float* dlogp, const T* xn, const T* head,
                           const int32_t* targets, const float* lse, int64_t N, int64_t C, int64_t V,
                           int64_t chunk_rows, void* workspace, cudaStream_t stream) {
  Launch l(typed<T>("logprob_head_backward"), stream);
  check_head_shape(l, N, C, V, chunk_rows);
  const size_t ws_bytes = logprob_head_workspace(chunk_rows, C, V, sizeof(T));
  l.write("dxn", dxn, N * C);
  l.write_optional("dhead", dhead, V * C);
  l.read("dlogp", dlogp, N);
  l.read("xn", xn, N * C);
  l.read("head", head, V * C);
  l.read("targets", targets, N);
  l.read("lse", lse, N);
  l.write("workspace", static_cast<char*>(workspace), int64_t(ws_bytes));
  l.disjoint();
  for (int64_t n = 0; n < N; ++n)
    l.require(targets[n] < V, "targets[" + std::to_string(n) + "] = " + std::to_string(targets[n]) +
                                  " is not < V = " + std::to_string(V));
  clobber(workspace, ws_bytes);
  float* logits = static_cast<float*>(workspace);
  T* dlogits = std::is_same_v<T, float>
                   ? reinterpret_cast<T*>(logits)
                   : reinterpret_cast<T*>(static_cast<char*>(workspace) + head_dlogits_offset(chunk_rows, V));
  for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
    const int64_t m = std::min(chunk_rows, N - r0);
    const T* xn_chunk = xn + r0 * C;
    gemm.matmul<T, float>(false, true, m, V, C, 1.0f, xn_chunk, C, head, C, 0.0f, logits, V, stream);
    // dlogits = dlogp * (onehot - softmax), 0 on a row without a target (read, then written: in
    // place for float).
    for (int64_t r = 0; r < m; ++r) {
      const int64_t n = r0 + r;
      const int32_t target = targets[n];
      for (int64_t v = 0; v < V; ++v) {
        float d = 0.0f;
        if (target >= 0) {
          d = -dlogp[n] * std::exp(logits[r * V + v] - lse[n]);
          if (v == target) d += dlogp[n];
        }
        dlogits[r * V + v] = from_f<T>(d);
      }
    }
    gemm.matmul<T, T>(false, false, m, C, V, 1.0f, dlogits, V, head, C, 0.0f, dxn + r0 * C, C, stream);
    if (dhead != nullptr)
      gemm.matmul<T, float>(true, false, V, C, m, 1.0f, dlogits, V, xn_chunk, C, 1.0f, dhead, C, stream);
  }
}

template <typename T>
void head_logits(Gemm& gemm, float* logits, const T* xn, const T* head, int64_t rows, int64_t C, int64_t V,
                 cudaStream_t stream) {
  gemm.matmul<T, float>(false, true, rows, V, C, 1.0f, xn, C, head, C, 0.0f, logits, V, stream);
}

// ---- Optimizer ----

namespace {

// The chunks (a device array) are in range and pairwise disjoint; returns the hull of the flat
// buffers they cover, [begin, end) elements, for the buffers' own checks.
std::pair<int64_t, int64_t> check_chunks(Launch& l, const OptimizerChunk* chunks, int64_t num_chunks) {
  l.read("chunks", chunks, num_chunks);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (int64_t i = 0; i < num_chunks; ++i) {
    const OptimizerChunk& c = chunks[i];
    l.require(c.offset >= 0 && c.numel >= 0 && c.numel <= kOptimizerChunk,
              "chunk " + std::to_string(i) + ": offset " + std::to_string(c.offset) + ", numel " +
                  std::to_string(c.numel) + " (want offset >= 0, 0 <= numel <= " + std::to_string(kOptimizerChunk) +
                  ")");
    l.require(std::isfinite(c.weight_decay), "chunk " + std::to_string(i) + ": weight decay is not finite");
    if (c.numel > 0) ranges.push_back({c.offset, c.offset + c.numel});
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    l.require(ranges[i - 1].second <= ranges[i].first,
              "two chunks overlap at element " + std::to_string(ranges[i].first) + " (a race on the device)");
  if (ranges.empty()) return {0, 0};
  int64_t end = 0;
  for (const auto& r : ranges) end = std::max(end, r.second);
  return {ranges.front().first, end};
}

}  // namespace

template <typename T>
void adamw_step(float* params, T* params_lowp, const float* grads, float* exp_avg, float* exp_avg_sq,
                const OptimizerChunk* chunks, int64_t num_chunks, const AdamwHyper& h, cudaStream_t stream) {
  Launch l(typed<T>("adamw_step"), stream);
  l.require(num_chunks >= 0, "num_chunks " + std::to_string(num_chunks));
  const auto [lo, hi] = check_chunks(l, chunks, num_chunks);
  const int64_t n = hi - lo;
  l.write("params (the chunks' hull)", params + lo, n);
  l.write_optional("params_lowp (the chunks' hull)", params_lowp != nullptr ? params_lowp + lo : nullptr, n);
  l.read("grads (the chunks' hull)", grads + lo, n);
  l.write("exp_avg (the chunks' hull)", exp_avg + lo, n);
  l.write("exp_avg_sq (the chunks' hull)", exp_avg_sq + lo, n);
  l.disjoint();
  const float b1 = float(h.beta1), b2 = float(h.beta2), one_minus_b1 = float(1.0 - h.beta1),
              one_minus_b2 = float(1.0 - h.beta2);
  for (int64_t i = 0; i < num_chunks; ++i) {
    const OptimizerChunk& c = chunks[i];
    for (int64_t e = c.offset; e < c.offset + c.numel; ++e) {
      const float g = grads[e] * h.grad_scale;
      float p = params[e];
      p -= h.lr * c.weight_decay * p;
      exp_avg[e] = b1 * exp_avg[e] + one_minus_b1 * g;
      exp_avg_sq[e] = b2 * exp_avg_sq[e] + one_minus_b2 * g * g;
      p -= h.lr * (exp_avg[e] / h.bias_correction1) / (std::sqrt(exp_avg_sq[e] / h.bias_correction2) + h.eps);
      params[e] = p;
      if (params_lowp != nullptr) params_lowp[e] = from_f<T>(p);
    }
  }
}

template <typename T>
void sgd_step(float* params, T* params_lowp, const float* grads, float* momentum_buf, const OptimizerChunk* chunks,
              int64_t num_chunks, const SgdHyper& h, cudaStream_t stream) {
  Launch l(typed<T>("sgd_step"), stream);
  l.require(num_chunks >= 0, "num_chunks " + std::to_string(num_chunks));
  l.require(h.momentum == 0.0f || momentum_buf != nullptr,
            "momentum " + std::to_string(h.momentum) + " without a momentum buffer (NULL)");
  const auto [lo, hi] = check_chunks(l, chunks, num_chunks);
  const int64_t n = hi - lo;
  const bool use_momentum = h.momentum != 0.0f;
  l.write("params (the chunks' hull)", params + lo, n);
  l.write_optional("params_lowp (the chunks' hull)", params_lowp != nullptr ? params_lowp + lo : nullptr, n);
  l.read("grads (the chunks' hull)", grads + lo, n);
  if (use_momentum) l.write("momentum_buf (the chunks' hull)", momentum_buf + lo, n);
  l.disjoint();
  for (int64_t i = 0; i < num_chunks; ++i) {
    const OptimizerChunk& c = chunks[i];
    for (int64_t e = c.offset; e < c.offset + c.numel; ++e) {
      float g = grads[e] * h.grad_scale + c.weight_decay * params[e];
      if (use_momentum) {
        float& buf = momentum_buf[e];
        buf = h.first_step ? g : h.momentum * buf + (1.0f - h.dampening) * g;
        g = h.nesterov ? g + h.momentum * buf : buf;
      }
      params[e] -= h.lr * g;
      if (params_lowp != nullptr) params_lowp[e] = from_f<T>(params[e]);
    }
  }
}

void squared_norm(double* out, const float* x, const OptimizerChunk* chunks, int64_t num_chunks, double* scratch,
                  cudaStream_t stream) {
  Launch l("squared_norm", stream);
  l.require(num_chunks >= 0, "num_chunks " + std::to_string(num_chunks));
  const auto [lo, hi] = check_chunks(l, chunks, num_chunks);
  l.read("x (the chunks' hull)", x + lo, hi - lo);
  l.write("out", out, 1);
  l.write("scratch", scratch, num_chunks);
  l.disjoint();
  double total = 0.0;
  for (int64_t i = 0; i < num_chunks; ++i) {
    double sum = 0.0;
    for (int64_t e = chunks[i].offset; e < chunks[i].offset + chunks[i].numel; ++e) sum += double(x[e]) * x[e];
    scratch[i] = sum;
    total += sum;
  }
  *out = total;
}

// ---- Instantiations, as the .cu files make them ----

#define LYRE_EMULATED_INSTANTIATE(T)                                                                                 \
  template void cast_from_float<T>(T*, const float*, int64_t, cudaStream_t);                                         \
  template void cast_to_float<T>(float*, const T*, int64_t, cudaStream_t);                                           \
  template void embedding_forward<T>(float*, const int32_t*, const T*, int64_t, int64_t, cudaStream_t);              \
  template void residual_rmsnorm_forward<T>(float*, T*, float*, const float*, const T*, const float*, int64_t,       \
                                            int64_t, float, cudaStream_t);                                           \
  template void rmsnorm_backward<T>(float*, float*, const T*, const float*, const float*, const float*, int64_t,     \
                                    int64_t, cudaStream_t);                                                          \
  template void rope_forward<T>(T*, const int32_t*, const float*, const float*, int64_t, int64_t, int64_t, int64_t,  \
                                cudaStream_t);                                                                       \
  template void rope_backward<T>(T*, const int32_t*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, \
                                 cudaStream_t);                                                                      \
  template void swiglu_forward<T>(T*, const T*, int64_t, int64_t, cudaStream_t);                                     \
  template void swiglu_backward<T>(T*, const T*, const T*, int64_t, int64_t, cudaStream_t);                          \
  template void attention_forward<T>(T*, float*, const T*, const int32_t*, int64_t, int64_t, int64_t, int64_t,       \
                                     int64_t, cudaStream_t);                                                         \
  template void attention_backward<T>(T*, const T*, const T*, const float*, const T*, const int32_t*, int64_t,       \
                                      int64_t, int64_t, int64_t, int64_t, void*, cudaStream_t);                      \
  template void kv_cache_append<T>(T*, T*, const T*, const int32_t*, const int32_t*, int64_t, int64_t, int64_t,      \
                                   int64_t, int64_t, int64_t, cudaStream_t);                                         \
  template void decode_attention<T>(T*, const T*, const T*, const T*, const int32_t*, int64_t, int64_t, int64_t,     \
                                    int64_t, int64_t, cudaStream_t);                                                 \
  template void logprob_head_forward<T>(Gemm&, float*, float*, const T*, const T*, const int32_t*, int64_t, int64_t, \
                                        int64_t, int64_t, void*, cudaStream_t);                                      \
  template void logprob_head_backward<T>(Gemm&, T*, float*, const float*, const T*, const T*, const int32_t*,        \
                                         const float*, int64_t, int64_t, int64_t, int64_t, void*, cudaStream_t);     \
  template void head_logits<T>(Gemm&, float*, const T*, const T*, int64_t, int64_t, int64_t, cudaStream_t);          \
  template void adamw_step<T>(float*, T*, const float*, float*, float*, const OptimizerChunk*, int64_t,              \
                              const AdamwHyper&, cudaStream_t);                                                      \
  template void sgd_step<T>(float*, T*, const float*, float*, const OptimizerChunk*, int64_t, const SgdHyper&,       \
                            cudaStream_t);
LYRE_EMULATED_INSTANTIATE(float)
LYRE_EMULATED_INSTANTIATE(bf16)
#undef LYRE_EMULATED_INSTANTIATE

}  // namespace lyre::cuda
