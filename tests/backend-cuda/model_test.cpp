// backend-cuda's LlamaModel on a GPU, driven directly (no plugin host): a tiny Llama (d 64,
// 2 layers, GQA 4/2, vocab 97, packed rows with padding) with random weights.
//
// What pins it:
//  - fp32 logp against a plain double-precision Llama forward written here (HF semantics:
//    rotate_half RoPE, causal attention within a segment, RMSNorm, SwiGLU, log-softmax of the
//    target). Normwise relative error <= 1e-4 (fp32 accumulation over K <= 128 sits near 1e-6;
//    anything structurally wrong is O(1)).
//  - fp32 gradients against central differences of loss = sum(dlogp * logp), one direction per
//    parameter tensor (and one over all of them together), eps = 1e-2 of the tensor's norm (1e-3
//    for all of them together: moving every tensor at once, the O(eps^2) truncation error is 13%
//    at 1e-2 and 0.2% at 1e-3, measured on the CPU emulation). The direction leans half on the
//    analytic gradient so that the derivative is large next to fp32's noise in the loss;
//    agreement within 1e-2 relative + 5e-3 absolute (expected: ~1e-4 relative truncation error,
//    and ~2e-3 absolute from fp32 rounding: logp carries ~5e-6, the loss sums ~28 of them, the
//    difference is divided by 2 eps).
//  - bf16 logp and gradients against the fp32 model with the same weights (2e-2 / 6e-2).
//  - gradients accumulate, zero_grad zeroes, a no_grad forward between a train forward and its
//    backward changes nothing, the log-prob head's chunking changes nothing, a repeated step
//    allocates nothing, bad ids are named, greedy generation equals argmax of full forwards.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "device_memory.hpp"
#include "gpu_test_support.hpp"
#include "llama_model.hpp"
#include "model/llama_config.hpp"

namespace cuda = lyre::cuda;
namespace cpu = lyre::cpu;
using cuda::LlamaModel;
using cuda::Precision;
using namespace lyre::cuda::test;

namespace {

// d 64, F 96, 2 layers, Hq 4 / Hkv 2 (D 16), vocab 97.
std::string tiny_config(bool tied = false, int head_dim = 0) {
  std::string j = R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 97,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0)";
  j += std::string(", \"tie_word_embeddings\": ") + (tied ? "true" : "false");
  if (head_dim > 0) j += ", \"head_dim\": " + std::to_string(head_dim);
  return j + "}";
}

std::unique_ptr<LlamaModel> make_model(const std::string& config_json, Precision precision, int64_t chunk_rows = 0) {
  cuda::ModelOptions options;
  options.precision = precision;
  options.logprob_chunk_rows = chunk_rows;
  return std::make_unique<LlamaModel>(cpu::parse_llama_config(config_json), options);
}

using Weights = std::vector<std::vector<float>>;  // by parameter index

// Embeddings N(0, 0.3), matrices N(0, 1/sqrt(in)), norm scales 1 + N(0, 0.1).
Weights random_weights(const LlamaModel& m, uint64_t seed) {
  Weights w;
  for (size_t i = 0; i < m.params().size(); ++i) {
    const cuda::ParameterInfo& p = m.params().info(i);
    float scale = 0.3f;
    if (p.kind == LYRE_PARAM_MATRIX) scale = 1.0f / std::sqrt(float(p.shape[1]));
    if (p.kind == LYRE_PARAM_NORM) scale = 0.1f;
    std::vector<float> v = random_floats(p.numel, seed * 1000 + i, scale);
    if (p.kind == LYRE_PARAM_NORM)
      for (float& x : v) x += 1.0f;
    w.push_back(std::move(v));
  }
  return w;
}

void load(LlamaModel& m, const Weights& w) {
  for (size_t i = 0; i < w.size(); ++i) m.params().write_value(i, w[i].data(), m.stream());
}

Weights read_grads(LlamaModel& m) {
  Weights g;
  for (size_t i = 0; i < m.params().size(); ++i) {
    std::vector<float> v(m.params().info(i).numel);
    m.params().read_grad(i, v.data(), m.stream());
    g.push_back(std::move(v));
  }
  return g;
}

std::vector<float> flat(const Weights& w) {
  std::vector<float> out;
  for (const auto& v : w) out.insert(out.end(), v.begin(), v.end());
  return out;
}

struct HostBatch {
  int64_t rows = 0, cols = 0;
  std::vector<int32_t> tokens, targets, positions, segments;
  cuda::TokenBatch view() const {
    return {tokens.data(), targets.data(), positions.data(), segments.data(), rows, cols};
  }
};

// Rows packed with documents of random lengths (positions restart at 0, segments count from 1);
// the last row ends with `padding` tokens of segment 0, position 0, no target. A target is the
// next token of the same document, -1 at a document's end.
HostBatch make_batch(int64_t rows, int64_t cols, int64_t vocab, uint64_t seed, int64_t padding = 4) {
  std::mt19937_64 rng(seed);
  HostBatch b;
  b.rows = rows;
  b.cols = cols;
  const size_t N = size_t(rows * cols);
  b.tokens.resize(N);
  b.targets.assign(N, -1);
  b.positions.assign(N, 0);
  b.segments.assign(N, 0);
  for (auto& t : b.tokens) t = int32_t(rng() % uint64_t(vocab));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t used = r + 1 == rows ? std::max<int64_t>(1, cols - padding) : cols;
    int64_t t = 0, segment = 1;
    while (t < used) {
      const int64_t len = std::min<int64_t>(used - t, 1 + int64_t(rng() % uint64_t(cols)));
      for (int64_t i = 0; i < len; ++i) {
        const size_t n = size_t(r * cols + t + i);
        b.positions[n] = int32_t(i);
        b.segments[n] = int32_t(segment);
        if (i + 1 < len) b.targets[n] = b.tokens[n + 1];
      }
      t += len;
      ++segment;
    }
    for (int64_t i = used; i < cols; ++i) b.tokens[size_t(r * cols + i)] = 0;
  }
  return b;
}

// The tiny batch of the file's header: 2 rows of 17, row 0 two documents (9 + 8), row 1 one
// document of 13 and 4 padding.
HostBatch packed_batch(uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostBatch b;
  b.rows = 2;
  b.cols = 17;
  b.tokens.resize(34);
  b.targets.assign(34, -1);
  b.positions.assign(34, 0);
  b.segments.assign(34, 0);
  for (auto& t : b.tokens) t = int32_t(rng() % 97);
  auto doc = [&](int64_t row, int64_t begin, int64_t len, int32_t segment) {
    for (int64_t i = 0; i < len; ++i) {
      const size_t n = size_t(row * 17 + begin + i);
      b.positions[n] = int32_t(i);
      b.segments[n] = segment;
      if (i + 1 < len) b.targets[n] = b.tokens[n + 1];
    }
  };
  doc(0, 0, 9, 1);
  doc(0, 9, 8, 2);
  doc(1, 0, 13, 1);
  for (size_t n = 17 + 13; n < 34; ++n) b.tokens[n] = 0;
  return b;
}

std::vector<float> forward(LlamaModel& m, const HostBatch& b, cuda::ForwardMode mode) {
  std::vector<float> logp(size_t(b.rows * b.cols));
  m.forward(b.view(), mode, logp.data());
  return logp;
}

// dlogp N(0,1) where there is a target, 0 elsewhere (what an objective hands back).
std::vector<float> random_dlogp(const HostBatch& b, uint64_t seed) {
  std::vector<float> d = random_floats(b.targets.size(), seed);
  for (size_t n = 0; n < d.size(); ++n)
    if (b.targets[n] < 0) d[n] = 0;
  return d;
}

double loss(const std::vector<float>& logp, const std::vector<float>& dlogp) {
  double s = 0;
  for (size_t n = 0; n < logp.size(); ++n) s += double(dlogp[n]) * double(logp[n]);
  return s;
}

// ---- The reference: a plain Llama forward in double ----

std::vector<double> reference_logp(const LlamaModel& m, const Weights& w, const HostBatch& b) {
  const cpu::LlamaConfig& c = m.config();
  const int64_t T = b.cols, N = b.rows * b.cols, d = c.hidden_size, F = c.intermediate_size;
  const int64_t V = c.vocab_size, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim;
  const int64_t half = D / 2, group = Hq / Hkv, qd = Hq * D, kvd = Hkv * D;
  const double eps = c.rms_norm_eps;
  auto W = [&](const std::string& name) {
    const std::vector<float>& v = w[m.params().find(name)];
    return std::vector<double>(v.begin(), v.end());
  };
  auto rmsnorm = [&](const std::vector<double>& x, const std::vector<double>& g) {
    std::vector<double> out(x.size());
    for (int64_t n = 0; n < N; ++n) {
      double ms = 0;
      for (int64_t i = 0; i < d; ++i) ms += x[n * d + i] * x[n * d + i];
      const double r = 1.0 / std::sqrt(ms / double(d) + eps);
      for (int64_t i = 0; i < d; ++i) out[n * d + i] = x[n * d + i] * r * g[i];
    }
    return out;
  };
  // x (N, in) . Wt (out, in)^T -> (N, out)
  auto linear = [&](const std::vector<double>& x, int64_t in, const std::vector<double>& Wt, int64_t out) {
    std::vector<double> y(size_t(N * out));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < out; ++o) {
        double s = 0;
        for (int64_t k = 0; k < in; ++k) s += x[n * in + k] * Wt[o * in + k];
        y[n * out + o] = s;
      }
    return y;
  };
  const std::vector<double> inv_freq = cpu::rope_inv_freq(D, c.rope_theta, c.rope_scaling);
  auto rope = [&](std::vector<double>& x, int64_t heads) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double a = double(b.positions[n]) * inv_freq[i];
          double& x1 = x[n * heads * D + h * D + i];
          double& x2 = x[n * heads * D + h * D + i + half];
          const double y1 = x1 * std::cos(a) - x2 * std::sin(a), y2 = x2 * std::cos(a) + x1 * std::sin(a);
          x1 = y1;
          x2 = y2;
        }
  };

  const std::vector<double> embed = W("model.embed_tokens.weight");
  std::vector<double> x(size_t(N * d));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < d; ++i) x[n * d + i] = embed[b.tokens[n] * d + i];
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<double> xn = rmsnorm(x, W(p + "input_layernorm.weight"));
    std::vector<double> q = linear(xn, d, W(p + "self_attn.q_proj.weight"), qd);
    std::vector<double> k = linear(xn, d, W(p + "self_attn.k_proj.weight"), kvd);
    const std::vector<double> v = linear(xn, d, W(p + "self_attn.v_proj.weight"), kvd);
    rope(q, Hq);
    rope(k, Hkv);
    std::vector<double> att(size_t(N * qd), 0.0);
    for (int64_t r = 0; r < b.rows; ++r)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t h = 0; h < Hq; ++h) {
          const int64_t ni = r * T + i, g = h / group;
          std::vector<double> score(size_t(i + 1), -INFINITY);
          double top = -INFINITY;
          for (int64_t j = 0; j <= i; ++j) {
            const int64_t nj = r * T + j;
            if (b.segments[nj] != b.segments[ni]) continue;
            double s = 0;
            for (int64_t e = 0; e < D; ++e) s += q[ni * qd + h * D + e] * k[nj * kvd + g * D + e];
            score[j] = s / std::sqrt(double(D));
            top = std::max(top, score[j]);
          }
          double sum = 0;
          for (int64_t j = 0; j <= i; ++j) sum += std::exp(score[j] - top);
          for (int64_t j = 0; j <= i; ++j) {
            const double pj = std::exp(score[j] - top) / sum;
            for (int64_t e = 0; e < D; ++e) att[ni * qd + h * D + e] += pj * v[(r * T + j) * kvd + g * D + e];
          }
        }
    const std::vector<double> o = linear(att, qd, W(p + "self_attn.o_proj.weight"), d);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    xn = rmsnorm(x, W(p + "post_attention_layernorm.weight"));
    const std::vector<double> gate = linear(xn, d, W(p + "mlp.gate_proj.weight"), F);
    const std::vector<double> up = linear(xn, d, W(p + "mlp.up_proj.weight"), F);
    std::vector<double> h(gate.size());
    for (size_t i = 0; i < h.size(); ++i) h[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
    const std::vector<double> down = linear(h, F, W(p + "mlp.down_proj.weight"), d);
    for (size_t i = 0; i < x.size(); ++i) x[i] += down[i];
  }
  const std::vector<double> xn = rmsnorm(x, W("model.norm.weight"));
  const std::vector<double> logits =
      linear(xn, d, W(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"), V);
  std::vector<double> logp(size_t(N), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    if (b.targets[n] < 0) continue;
    double top = -INFINITY, sum = 0;
    for (int64_t t = 0; t < V; ++t) top = std::max(top, logits[n * V + t]);
    for (int64_t t = 0; t < V; ++t) sum += std::exp(logits[n * V + t] - top);
    logp[n] = logits[n * V + b.targets[n]] - top - std::log(sum);
  }
  return logp;
}

}  // namespace

TEST_CASE("fp32 log-probs match a double-precision Llama forward", "[backend-cuda][model]") {
  require_gpu();
  for (int variant = 0; variant < 3; ++variant) {
    // untied D 16; tied D 32 (q_dim 128 != d); untied D 64 (q_dim 256) on 3 rows of 23
    const bool tied = variant == 1;
    const int head_dim = variant == 0 ? 0 : variant == 1 ? 32 : 64;
    INFO("variant " << variant);
    auto m = make_model(tiny_config(tied, head_dim), Precision::fp32);
    const Weights w = random_weights(*m, 11 + variant);
    load(*m, w);
    const HostBatch b = variant == 2 ? make_batch(3, 23, 97, 5) : packed_batch(3);
    const std::vector<float> train = forward(*m, b, cuda::ForwardMode::train);
    const std::vector<float> nograd = forward(*m, b, cuda::ForwardMode::no_grad);
    const std::vector<double> ref = reference_logp(*m, w, b);
    CHECK(relative_error(train, ref) < 1e-4);
    CHECK(relative_error(nograd, ref) < 1e-4);
    for (size_t n = 0; n < train.size(); ++n)
      if (b.targets[n] < 0) CHECK(train[n] == 0.0f);
  }
}

TEST_CASE("fp32 gradients agree with central differences of the loss", "[backend-cuda][model]") {
  require_gpu();
  for (const bool tied : {false, true}) {
    INFO("tied " << tied);
    auto m = make_model(tiny_config(tied), Precision::fp32);
    const Weights w = random_weights(*m, 21);
    load(*m, w);
    const HostBatch b = packed_batch(4);
    const std::vector<float> dlogp = random_dlogp(b, 99);
    m->zero_grad();
    forward(*m, b, cuda::ForwardMode::train);
    m->backward(dlogp.data());
    const Weights g = read_grads(*m);

    std::mt19937_64 rng(7);
    std::normal_distribution<double> normal(0.0, 1.0);
    // Direction u per parameter: half the analytic gradient's direction, half random, unit
    // norm, scaled by the tensor's norm. index -1: every tensor at once.
    for (int64_t which = -1; which < int64_t(w.size()); ++which) {
      const double eps = which < 0 ? 1e-3 : 1e-2;
      Weights dir(w.size());
      double analytic = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        dir[i].assign(w[i].size(), 0.0f);
        if (which >= 0 && int64_t(i) != which) continue;
        double gnorm = 0, wnorm = 0, rnorm = 0;
        std::vector<double> r(w[i].size());
        for (size_t k = 0; k < w[i].size(); ++k) {
          gnorm += double(g[i][k]) * g[i][k];
          wnorm += double(w[i][k]) * w[i][k];
          r[k] = normal(rng);
          rnorm += r[k] * r[k];
        }
        gnorm = std::sqrt(gnorm);
        wnorm = std::sqrt(wnorm);
        rnorm = std::sqrt(rnorm);
        std::vector<double> u(w[i].size());
        double unorm = 0;
        for (size_t k = 0; k < u.size(); ++k) {
          u[k] = (gnorm > 0 ? g[i][k] / gnorm : 0.0) + r[k] / rnorm;
          unorm += u[k] * u[k];
        }
        unorm = std::sqrt(unorm);
        for (size_t k = 0; k < u.size(); ++k) {
          dir[i][k] = float(u[k] / unorm * wnorm);
          analytic += double(dir[i][k]) * g[i][k];
        }
      }
      auto loss_at = [&](double step) {
        Weights p = w;
        for (size_t i = 0; i < p.size(); ++i)
          for (size_t k = 0; k < p[i].size(); ++k) p[i][k] += float(step * dir[i][k]);
        load(*m, p);
        return loss(forward(*m, b, cuda::ForwardMode::no_grad), dlogp);
      };
      const double numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps);
      const std::string name = which < 0 ? "all" : m->params().info(size_t(which)).name;
      INFO(name << ": analytic " << analytic << ", numeric " << numeric);
      CHECK(std::abs(numeric - analytic) <= 1e-2 * std::abs(analytic) + 5e-3);
    }
    load(*m, w);
  }
}

TEST_CASE("bf16 log-probs and gradients stay close to fp32 with the same weights", "[backend-cuda][model]") {
  require_gpu();
  auto m32 = make_model(tiny_config(), Precision::fp32);
  auto m16 = make_model(tiny_config(), Precision::bf16);
  const Weights w = random_weights(*m32, 31);
  load(*m32, w);
  load(*m16, w);
  for (const HostBatch& b : {packed_batch(6), make_batch(3, 23, 97, 8)}) {
    const std::vector<float> dlogp = random_dlogp(b, 5);
    m32->zero_grad();
    m16->zero_grad();
    const std::vector<float> logp32 = forward(*m32, b, cuda::ForwardMode::train);
    const std::vector<float> logp16 = forward(*m16, b, cuda::ForwardMode::train);
    m32->backward(dlogp.data());
    m16->backward(dlogp.data());
    CHECK(relative_error(logp16, logp32) < 2e-2);
    const Weights g32 = read_grads(*m32), g16 = read_grads(*m16);
    for (size_t i = 0; i < g32.size(); ++i) {
      INFO(m32->params().info(i).name);
      CHECK(relative_error(g16[i], g32[i]) < 6e-2);
    }
  }
}

TEST_CASE("gradients accumulate across backwards until zero_grad zeroes them", "[backend-cuda][model]") {
  require_gpu();
  for (const Precision precision : {Precision::fp32, Precision::bf16}) {
    INFO(cuda::precision_name(precision));
    auto m = make_model(tiny_config(true), precision);
    load(*m, random_weights(*m, 41));
    const HostBatch b = packed_batch(7);
    const std::vector<float> dlogp = random_dlogp(b, 8);
    m->zero_grad();
    forward(*m, b, cuda::ForwardMode::train);
    m->backward(dlogp.data());
    const std::vector<float> once = flat(read_grads(*m));
    forward(*m, b, cuda::ForwardMode::train);
    m->backward(dlogp.data());
    std::vector<float> twice = flat(read_grads(*m));
    std::vector<float> doubled(once.size());
    for (size_t i = 0; i < once.size(); ++i) doubled[i] = 2 * once[i];
    CHECK(relative_error(twice, doubled) < 1e-5);  // embedding atomics reorder sums only

    m->zero_grad();
    const std::vector<float> zeroed = flat(read_grads(*m));
    CHECK(std::all_of(zeroed.begin(), zeroed.end(), [](float x) { return x == 0.0f; }));
  }
}

TEST_CASE("a no_grad forward between a train forward and its backward changes nothing", "[backend-cuda][model]") {
  require_gpu();
  auto m = make_model(tiny_config(), Precision::bf16);
  load(*m, random_weights(*m, 51));
  const HostBatch b = packed_batch(9);
  const HostBatch other = make_batch(4, 40, 97, 10);  // larger: the scratch arena grows in between
  const std::vector<float> dlogp = random_dlogp(b, 11);
  m->zero_grad();
  forward(*m, b, cuda::ForwardMode::train);
  m->backward(dlogp.data());
  const std::vector<float> plain = flat(read_grads(*m));

  m->zero_grad();
  forward(*m, b, cuda::ForwardMode::train);
  const std::vector<float> other_logp = forward(*m, other, cuda::ForwardMode::no_grad);
  m->backward(dlogp.data());
  CHECK(relative_error(flat(read_grads(*m)), plain) < 1e-5);
  CHECK(std::all_of(other_logp.begin(), other_logp.end(), [](float x) { return std::isfinite(x); }));
}

TEST_CASE("the log-prob head's chunking changes neither log-probs nor gradients", "[backend-cuda][model]") {
  require_gpu();
  auto whole = make_model(tiny_config(), Precision::fp32);
  auto chunked = make_model(tiny_config(), Precision::fp32, 5);  // 34 rows in chunks of 5
  const Weights w = random_weights(*whole, 61);
  load(*whole, w);
  load(*chunked, w);
  const HostBatch b = packed_batch(12);
  const std::vector<float> dlogp = random_dlogp(b, 13);
  for (LlamaModel* m : {whole.get(), chunked.get()}) m->zero_grad();
  const std::vector<float> a = forward(*whole, b, cuda::ForwardMode::train);
  const std::vector<float> c = forward(*chunked, b, cuda::ForwardMode::train);
  whole->backward(dlogp.data());
  chunked->backward(dlogp.data());
  CHECK(relative_error(c, a) < 1e-6);
  CHECK(relative_error(flat(read_grads(*chunked)), flat(read_grads(*whole))) < 1e-5);
}

TEST_CASE("a step of a shape seen before allocates no device memory", "[backend-cuda][model]") {
  require_gpu();
  for (const Precision precision : {Precision::fp32, Precision::bf16}) {
    auto m = make_model(tiny_config(), precision);
    load(*m, random_weights(*m, 71));
    const HostBatch b = make_batch(3, 29, 97, 14);
    const std::vector<float> dlogp = random_dlogp(b, 15);
    auto step = [&] {
      m->zero_grad();
      forward(*m, b, cuda::ForwardMode::train);
      forward(*m, b, cuda::ForwardMode::no_grad);
      m->backward(dlogp.data());
      LYRE_CUDA_CHECK(cudaStreamSynchronize(m->stream()));
    };
    step();
    const cuda::MemoryUsage before = cuda::memory_usage();
    step();
    step();
    const cuda::MemoryUsage after = cuda::memory_usage();
    CHECK(after.reserved == before.reserved);
    CHECK(after.current == before.current);
  }
}

TEST_CASE("bad ids are INVALID_ARGUMENT naming the tensor, row, column and value", "[backend-cuda][model]") {
  require_gpu();
  auto m = make_model(tiny_config(), Precision::fp32);
  const HostBatch good = packed_batch(16);
  std::vector<float> logp(34);
  auto expect_error = [&](const HostBatch& b, const std::vector<std::string>& parts) {
    try {
      m->forward(b.view(), cuda::ForwardMode::train, logp.data());
      FAIL("forward accepted a bad batch");
    } catch (const lyre::plugin::Error& e) {
      CHECK(e.code() == LYRE_ERROR_INVALID_ARGUMENT);
      for (const std::string& part : parts) CHECK_THAT(e.what(), Catch::Contains(part));
    }
  };
  HostBatch b = good;
  b.tokens[17 + 5] = 97;
  expect_error(b, {"tokens", "97", "row 1", "col 5"});
  b = good;
  b.targets[3] = 200;
  expect_error(b, {"targets", "200", "row 0", "col 3"});
  b = good;
  b.positions[16] = 64;
  expect_error(b, {"positions", "64", "row 0", "col 16", "max_position_embeddings"});
  b = good;
  b.segments[20] = -2;
  expect_error(b, {"segment_ids", "-2", "row 1", "col 3"});
  // None of that left a backward to run.
  const std::vector<float> dlogp(34, 0.0f);
  try {
    m->backward(dlogp.data());
    FAIL("backward ran without a train forward");
  } catch (const lyre::plugin::Error& e) {
    CHECK(e.code() == LYRE_ERROR_FAILED_PRECONDITION);
  }
  // A good batch still works, and its one backward is allowed exactly once.
  m->forward(good.view(), cuda::ForwardMode::train, logp.data());
  m->backward(dlogp.data());
  CHECK_THROWS_AS(m->backward(dlogp.data()), lyre::plugin::Error);
}

TEST_CASE("greedy generation equals the argmax of full forwards, and stops at eos", "[backend-cuda][model]") {
  require_gpu();
  for (const Precision precision : {Precision::fp32, Precision::bf16}) {
    INFO(cuda::precision_name(precision));
    auto m = make_model(tiny_config(), precision);
    load(*m, random_weights(*m, 81));
    const int64_t V = 97, B = 3, Tp = 7;
    const int32_t max_new = 6;
    const std::vector<int32_t> lengths = {7, 3, 5};
    std::vector<int32_t> prompt(size_t(B * Tp), 0);
    std::mt19937_64 rng(17);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t t = 0; t < lengths[r]; ++t) prompt[size_t(r * Tp + t)] = int32_t(rng() % uint64_t(V));

    std::vector<int32_t> out(size_t(B * max_new), -1), out_lengths(size_t(B), -1);
    m->generate(prompt.data(), lengths.data(), B, Tp, max_new, -1, cpu::SamplingOptions{}, out.data(),
                out_lengths.data());

    // The reference: V rows of the sequence so far, row v targeting token v at the last
    // position, so that logp of row v is log p(v | sequence). No cache, no padding.
    for (int64_t r = 0; r < B; ++r) {
      INFO("row " << r);
      CHECK(out_lengths[r] == max_new);
      std::vector<int32_t> seq(prompt.begin() + r * Tp, prompt.begin() + r * Tp + lengths[r]);
      for (int32_t step = 0; step < max_new; ++step) {
        const int64_t T = int64_t(seq.size());
        HostBatch b;
        b.rows = V;
        b.cols = T;
        for (int64_t v = 0; v < V; ++v)
          for (int64_t t = 0; t < T; ++t) {
            b.tokens.push_back(seq[size_t(t)]);
            b.positions.push_back(int32_t(t));
            b.segments.push_back(1);
            b.targets.push_back(t + 1 == T ? int32_t(v) : -1);
          }
        const std::vector<float> logp = forward(*m, b, cuda::ForwardMode::no_grad);
        int32_t best = 0;
        float best_logp = -INFINITY, second = -INFINITY;
        for (int64_t v = 0; v < V; ++v) {
          const float lp = logp[size_t(v * T + T - 1)];
          if (lp > best_logp) {
            second = best_logp;
            best_logp = lp;
            best = int32_t(v);
          } else if (lp > second) {
            second = lp;
          }
        }
        // A near tie may go either way between two correct computations: stop comparing.
        const float margin = precision == Precision::fp32 ? 1e-4f : 1e-1f;
        if (best_logp - second < margin) break;
        INFO("step " << step);
        CHECK(out[size_t(r * max_new + step)] == best);
        if (out[size_t(r * max_new + step)] != best) break;
        seq.push_back(best);
      }
    }

    // eos: the third token of row 0. Each row stops after its first occurrence of it.
    const int32_t eos = out[2];
    std::vector<int32_t> out2(size_t(B * max_new), -1), lengths2(size_t(B), -1);
    m->generate(prompt.data(), lengths.data(), B, Tp, max_new, eos, cpu::SamplingOptions{}, out2.data(),
                lengths2.data());
    for (int64_t r = 0; r < B; ++r) {
      INFO("eos row " << r);
      int32_t expected = max_new;
      for (int32_t s = 0; s < max_new; ++s)
        if (out[size_t(r * max_new + s)] == eos) {
          expected = s + 1;
          break;
        }
      CHECK(lengths2[r] == expected);
      for (int32_t s = 0; s < max_new; ++s)
        CHECK(out2[size_t(r * max_new + s)] == (s < expected ? out[size_t(r * max_new + s)] : 0));
    }
  }
}

TEST_CASE("sampled generation is reproducible from its seed", "[backend-cuda][model]") {
  require_gpu();
  auto m = make_model(tiny_config(), Precision::bf16);
  load(*m, random_weights(*m, 91));
  const std::vector<int32_t> prompt = {5, 9, 13, 0, 0, 44, 2, 7, 1, 3};
  const std::vector<int32_t> lengths = {3, 5};
  cpu::SamplingOptions sampling;
  sampling.temperature = 0.8;
  sampling.top_k = 20;
  sampling.top_p = 0.9;
  sampling.seed = 1234;
  std::vector<int32_t> a(16), b(16), la(2), lb(2);
  m->generate(prompt.data(), lengths.data(), 2, 5, 8, -1, sampling, a.data(), la.data());
  m->generate(prompt.data(), lengths.data(), 2, 5, 8, -1, sampling, b.data(), lb.data());
  CHECK(a == b);
  CHECK(la == lb);
  CHECK(la == std::vector<int32_t>{8, 8});
  CHECK(std::all_of(a.begin(), a.end(), [](int32_t t) { return t >= 0 && t < 97; }));
}
