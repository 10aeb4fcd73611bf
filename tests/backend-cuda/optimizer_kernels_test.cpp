// The multi-tensor optimizer kernels (AdamW, SGD) and the gradient norm, against references in
// double that follow backend-cpu's model/adamw.cpp and model/sgd.cpp (PyTorch's formulas) step by
// step. The flat buffers hold parameters of awkward sizes laid end to end, so chunks start off
// 16-byte alignment and end in partial packs; each parameter has its own weight decay.
//
// Bounds (normwise relative error):
//  - parameters: each step rounds p to float a few times (2^-24 relative each): 1e-6 on p. That
//    hides the update (lr * O(1) against |p| = O(1)), so the change p - p0 is checked too: its
//    error is the same few ulp of |p| per step, against a change of about lr per step: 1e-4.
//  - moments and momentum buffers: a few float operations per step: 1e-5.
//  - the working copy: exactly T(p) of the updated float p (bitwise).
//  - squared_norm: every square is exact in double; a double sum of ~2e5 terms errs by at most
//    2e5 * 2^-53 = 2e-11 relative (positive terms): 1e-10.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "gpu_test_support.hpp"
#include "kernels.hpp"

namespace cuda = lyre::cuda;
using cuda::bf16;
using cuda::OptimizerChunk;
using namespace lyre::cuda::test;

namespace {

// Sizes of the parameters laid end to end: the first two start 16-byte aligned (packed path),
// the second spans three chunks (the last of 5 elements: a partial pack), the rest start at
// offsets that are not multiples of 4 (element by element), one is a single element.
const std::vector<int64_t> kSizes = {4096, 2 * cuda::kOptimizerChunk + 5, 37, 1000, 1, 3 * 1024};
// Weight decay per parameter (norm-like parameters get none).
const std::vector<float> kDecays = {0.1f, 0.0f, 0.05f, 0.1f, 0.0f, 0.2f};

int64_t total_size() {
  int64_t n = 0;
  for (const int64_t s : kSizes) n += s;
  return n;
}

std::vector<OptimizerChunk> make_chunks() {
  std::vector<OptimizerChunk> chunks;
  int64_t offset = 0;
  for (size_t p = 0; p < kSizes.size(); ++p) {
    for (int64_t done = 0; done < kSizes[p]; done += cuda::kOptimizerChunk)
      chunks.push_back({offset + done, std::min(cuda::kOptimizerChunk, kSizes[p] - done), kDecays[p]});
    offset += kSizes[p];
  }
  return chunks;
}

// Weight decay of every element of the flat buffer.
std::vector<double> element_decays() {
  std::vector<double> wd;
  for (size_t p = 0; p < kSizes.size(); ++p) wd.insert(wd.end(), size_t(kSizes[p]), double(kDecays[p]));
  return wd;
}

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// Counts the elements of the working copy that are not exactly T(p).
template <typename T>
size_t lowp_mismatches(const std::vector<T>& lowp, const std::vector<float>& p) {
  size_t wrong = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if constexpr (std::is_same_v<T, float>)
      wrong += !same_bits(lowp[i], p[i]);
    else
      wrong += !same_bits(lowp[i], __float2bfloat16(p[i]));
  }
  return wrong;
}

std::vector<double> difference(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = double(a[i]) - double(b[i]);
  return d;
}
std::vector<double> difference(const std::vector<double>& a, const std::vector<float>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - double(b[i]);
  return d;
}

}  // namespace

TEMPLATE_TEST_CASE("adamw_step follows PyTorch's AdamW over several steps, chunk by chunk", "[optimizer]", float,
                   bf16) {
  require_gpu();
  const int64_t n = total_size();
  const std::vector<OptimizerChunk> chunks = make_chunks();
  const std::vector<double> wd = element_decays();
  const std::vector<float> p0 = random_floats(size_t(n), 41);

  for (const bool with_lowp : {true, false}) {
    CAPTURE(with_lowp);
    DeviceArray<float> params(p0), grads(static_cast<size_t>(n));
    DeviceArray<float> m(std::vector<float>(size_t(n), 0.0f)), v(std::vector<float>(size_t(n), 0.0f));
    DeviceArray<TestType> lowp(static_cast<size_t>(n));
    DeviceArray<OptimizerChunk> d_chunks(chunks);

    const float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
    std::vector<double> p = to_double(p0), m_ref(size_t(n), 0.0), v_ref(size_t(n), 0.0);
    for (int step = 1; step <= 4; ++step) {
      CAPTURE(step);
      // Grads of mixed scale (some tiny: v near eps matters), and a clipping scale that changes.
      std::vector<float> g = random_floats(size_t(n), 100 + uint64_t(step));
      for (size_t i = 0; i < g.size(); i += 7) g[i] *= 1e-4f;
      grads.upload(g);
      cuda::AdamwHyper h;
      h.lr = lr;
      h.beta1 = beta1;
      h.beta2 = beta2;
      h.eps = eps;
      h.bias_correction1 = float(1.0 - std::pow(double(beta1), step));
      h.bias_correction2 = float(1.0 - std::pow(double(beta2), step));
      h.grad_scale = step == 2 ? 1.0f : 0.37f;
      cuda::adamw_step<TestType>(params.get(), with_lowp ? lowp.get() : nullptr, grads.get(), m.get(), v.get(),
                                 d_chunks.get(), int64_t(chunks.size()), h, nullptr);

      // backend-cpu's order: g = grad * scale; p *= 1 - lr wd; m, v; p -= lr/bc1 m / (sqrt(v)/sqrt(bc2) + eps)
      const double step_size = double(h.lr) / double(h.bias_correction1);
      const double bc2_sqrt = std::sqrt(double(h.bias_correction2));
      for (size_t i = 0; i < size_t(n); ++i) {
        const double gi = double(g[i]) * h.grad_scale;
        p[i] *= 1.0 - double(h.lr) * wd[i];
        m_ref[i] = beta1 * m_ref[i] + (1.0 - beta1) * gi;
        v_ref[i] = beta2 * v_ref[i] + (1.0 - beta2) * gi * gi;
        p[i] -= step_size * m_ref[i] / (std::sqrt(v_ref[i]) / bc2_sqrt + double(h.eps));
      }
      const std::vector<float> p_got = params.download();
      CHECK(relative_error(p_got, p) <= 1e-6);
      CHECK(relative_error(difference(p_got, p0), difference(p, p0)) <= 1e-4);
      CHECK(relative_error(m.download(), m_ref) <= 1e-5);
      CHECK(relative_error(v.download(), v_ref) <= 1e-5);
      const std::vector<float> g_after = grads.download();
      CHECK(std::equal(g_after.begin(), g_after.end(), g.begin(), [](float a, float b) { return same_bits(a, b); }));
      if (with_lowp) CHECK(lowp_mismatches(lowp.download(), p_got) == 0);
    }
    if (!with_lowp) {  // never written
      const std::vector<float> untouched = to_float(lowp.download());
      CHECK(std::all_of(untouched.begin(), untouched.end(), [](float x) { return std::isnan(x); }));
    }
  }
}

TEMPLATE_TEST_CASE("sgd_step follows PyTorch's SGD with and without momentum and nesterov", "[optimizer]", float,
                   bf16) {
  require_gpu();
  const int64_t n = total_size();
  const std::vector<OptimizerChunk> chunks = make_chunks();
  const std::vector<double> wd = element_decays();
  const std::vector<float> p0 = random_floats(size_t(n), 51);

  struct Variant {
    float momentum, dampening;
    bool nesterov;
  };
  for (const Variant var : {Variant{0.0f, 0.0f, false}, Variant{0.9f, 0.0f, false}, Variant{0.9f, 0.1f, false},
                            Variant{0.8f, 0.0f, true}}) {
    CAPTURE(var.momentum, var.dampening, var.nesterov);
    const bool use_momentum = var.momentum > 0;
    DeviceArray<float> params(p0), grads(static_cast<size_t>(n)), buf(static_cast<size_t>(n));  // buf starts poisoned: step 1 overwrites
    DeviceArray<TestType> lowp(static_cast<size_t>(n));
    DeviceArray<OptimizerChunk> d_chunks(chunks);
    std::vector<double> p = to_double(p0), b(size_t(n), 0.0);
    for (int step = 1; step <= 3; ++step) {
      CAPTURE(step);
      const std::vector<float> g = random_floats(size_t(n), 200 + uint64_t(step));
      grads.upload(g);
      cuda::SgdHyper h;
      h.lr = 0.05f;
      h.momentum = var.momentum;
      h.dampening = var.dampening;
      h.nesterov = var.nesterov;
      h.first_step = step == 1;
      h.grad_scale = step == 3 ? 1.0f : 0.5f;
      cuda::sgd_step<TestType>(params.get(), lowp.get(), grads.get(), use_momentum ? buf.get() : nullptr,
                               d_chunks.get(), int64_t(chunks.size()), h, nullptr);

      // backend-cpu's order: g = grad * scale + wd p; buf = first ? g : mu buf + (1 - damp) g;
      // g = nesterov ? g + mu buf : buf; p -= lr g
      for (size_t i = 0; i < size_t(n); ++i) {
        double gi = double(g[i]) * h.grad_scale + wd[i] * p[i];
        if (use_momentum) {
          b[i] = h.first_step ? gi : double(h.momentum) * b[i] + (1.0 - double(h.dampening)) * gi;
          gi = h.nesterov ? gi + double(h.momentum) * b[i] : b[i];
        }
        p[i] -= double(h.lr) * gi;
      }
      const std::vector<float> p_got = params.download();
      CHECK(relative_error(p_got, p) <= 1e-6);
      CHECK(relative_error(difference(p_got, p0), difference(p, p0)) <= 1e-4);
      if (use_momentum) CHECK(relative_error(buf.download(), b) <= 1e-5);
      const std::vector<float> g_after = grads.download();
      CHECK(std::equal(g_after.begin(), g_after.end(), g.begin(), [](float a, float b) { return same_bits(a, b); }));
      CHECK(lowp_mismatches(lowp.download(), p_got) == 0);
    }
  }
}

TEST_CASE("squared_norm sums the squares of every chunk in double, the same on every run", "[optimizer]") {
  require_gpu();
  const int64_t n = total_size();
  const std::vector<OptimizerChunk> chunks = make_chunks();
  std::vector<float> x = random_floats(size_t(n), 61, 3.0f);
  long double want = 0;
  for (const float xi : x) want += (long double)xi * xi;

  DeviceArray<float> d_x(x);
  DeviceArray<OptimizerChunk> d_chunks(chunks);
  DeviceArray<double> scratch(chunks.size()), out(1);
  cuda::squared_norm(out.get(), d_x.get(), d_chunks.get(), int64_t(chunks.size()), scratch.get(), nullptr);
  const double first = out.download()[0];
  CHECK(std::fabs(first - double(want)) <= 1e-10 * double(want));
  for (int run = 0; run < 3; ++run) {
    cuda::squared_norm(out.get(), d_x.get(), d_chunks.get(), int64_t(chunks.size()), scratch.get(), nullptr);
    CHECK(same_bits(out.download()[0], first));
  }

  // A subset of the chunks (the parameters the optimizer holds), and none at all.
  const std::vector<OptimizerChunk> some(chunks.begin() + 1, chunks.begin() + 3);
  long double want_some = 0;
  for (const OptimizerChunk& c : some)
    for (int64_t i = 0; i < c.numel; ++i) want_some += (long double)x[size_t(c.offset + i)] * x[size_t(c.offset + i)];
  DeviceArray<OptimizerChunk> d_some(some);
  cuda::squared_norm(out.get(), d_x.get(), d_some.get(), int64_t(some.size()), scratch.get(), nullptr);
  CHECK(std::fabs(out.download()[0] - double(want_some)) <= 1e-10 * double(want_some));
  cuda::squared_norm(out.get(), d_x.get(), d_some.get(), 0, scratch.get(), nullptr);
  CHECK(out.download()[0] == 0.0);

  // A square beyond float's range (1e40) still counts: the squares are taken in double.
  x[5] = 1e20f;
  d_x.upload(x);
  cuda::squared_norm(out.get(), d_x.get(), d_chunks.get(), int64_t(chunks.size()), scratch.get(), nullptr);
  CHECK(std::fabs(out.download()[0] - 1e40) <= 1e-10 * 1e40);
}
