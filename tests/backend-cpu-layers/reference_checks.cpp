// The fast layers against independent, naive references kept here (double precision):
// full-matrix attention, document masking, full-logits log-softmax, HF's RoPE formulas.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "layer_test_util.hpp"
#include "layers.hpp"

namespace cpu = lyre::cpu;
using namespace lyre::test;

namespace {

// Builds the whole masked (T,T) score matrix of each (batch, head), then softmax and P.V.
void naive_attention(std::vector<double>& out, std::vector<double>& lse,
                     const std::vector<double>& qkv, const std::vector<int32_t>& seg, int64_t B,
                     int64_t T, int64_t Hq, int64_t Hkv, int64_t D) {
  const int64_t S = (Hq + 2 * Hkv) * D;
  out.assign(B * T * Hq * D, 0.0);
  lse.assign(B * T * Hq, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / (Hq / Hkv);
      std::vector<double> score(T * T, -std::numeric_limits<double>::infinity());
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) {
          if (j > i || seg[b * T + j] != seg[b * T + i]) continue;
          double s = 0;
          for (int64_t d = 0; d < D; ++d)
            s += qkv[(b * T + i) * S + h * D + d] * qkv[(b * T + j) * S + (Hq + g) * D + d];
          score[i * T + j] = s / std::sqrt(double(D));
        }
      for (int64_t i = 0; i < T; ++i) {
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (int64_t j = 0; j < T; ++j) mx = std::max(mx, score[i * T + j]);
        for (int64_t j = 0; j < T; ++j) sum += std::exp(score[i * T + j] - mx);
        lse[(b * T + i) * Hq + h] = mx + std::log(sum);
        for (int64_t j = 0; j < T; ++j) {
          const double p = std::exp(score[i * T + j] - mx) / sum;
          for (int64_t d = 0; d < D; ++d)
            out[(b * T + i) * Hq * D + h * D + d] +=
                p * qkv[(b * T + j) * S + (Hq + Hkv + g) * D + d];
        }
      }
    }
}

}  // namespace

TEST_CASE("attention forward equals the full masked softmax", "[reference]") {
  const int64_t Hq = 6, Hkv = 2, D = 8, S = (Hq + 2 * Hkv) * D;
  SECTION("short rows, packed and not") {
    const int64_t B = 2, T = 13;
    const std::vector<int32_t> seg = {4, 4, 4, 4, 9, 9, 9, 9, 9, 2, 2, 0, 0,  //
                                      1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    const std::vector<double> qkv = random_vector(B * T * S, 101, -2, 2);
    std::vector<double> out(B * T * Hq * D), lse(B * T * Hq), ref_out, ref_lse;
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), seg.data(), B, T, Hq, Hkv, D);
    naive_attention(ref_out, ref_lse, qkv, seg, B, T, Hq, Hkv, D);
    CHECK(rel_error(out, ref_out) < 1e-13);
    CHECK(rel_error(lse, ref_lse) < 1e-13);
  }
  SECTION("rows longer than a query block, segment ids not contiguous") {
    const int64_t B = 2, T = 200;
    std::vector<int32_t> seg(B * T);
    for (int64_t i = 0; i < T; ++i) {
      seg[i] = i < 70 ? 3 : (i < 150 ? 8 : 0);
      seg[T + i] = int32_t(i % 3);  // interleaved "documents": only the mask keeps them apart
    }
    const std::vector<double> qkv = random_vector(B * T * S, 102, -2, 2);
    std::vector<double> out(B * T * Hq * D), lse(B * T * Hq), ref_out, ref_lse;
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), seg.data(), B, T, Hq, Hkv, D);
    naive_attention(ref_out, ref_lse, qkv, seg, B, T, Hq, Hkv, D);
    CHECK(rel_error(out, ref_out) < 1e-13);
    CHECK(rel_error(lse, ref_lse) < 1e-13);
  }
}

TEST_CASE("attention never crosses a document boundary", "[reference]") {
  // One row packs document A (5 tokens), document B (4 tokens) and 2 padding tokens; RoPE
  // positions restart per document. B alone, at positions 0..3, must give the same output and
  // the same gradients, and a loss on B's outputs must give A no gradient at all.
  const int64_t Hq = 4, Hkv = 2, D = 8, S = (Hq + 2 * Hkv) * D, T = 11, TB = 4, B0 = 5;
  const std::vector<int32_t> seg = {1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0};
  const std::vector<int32_t> pos = {0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1};
  const std::vector<double> inv_freq = cpu::rope_inv_freq(D, 10000.0, {});
  std::vector<double> cos, sin;
  cpu::rope_table(cos, sin, inv_freq, 16);

  std::vector<double> packed = random_vector(T * S, 111, -2, 2);
  std::vector<double> alone(packed.begin() + B0 * S, packed.begin() + (B0 + TB) * S);
  const std::vector<int32_t> seg_alone(TB, 1), pos_alone = {0, 1, 2, 3};
  // q and k heads are the first Hq + Hkv heads of each row.
  cpu::rope_forward(packed.data(), pos.data(), cos.data(), sin.data(), T, Hq + Hkv, D, S, 16);
  cpu::rope_forward(alone.data(), pos_alone.data(), cos.data(), sin.data(), TB, Hq + Hkv, D, S,
                    16);

  std::vector<double> out(T * Hq * D), lse(T * Hq), out_a(TB * Hq * D), lse_a(TB * Hq);
  cpu::attention_forward(out.data(), lse.data(), packed.data(), seg.data(), 1, T, Hq, Hkv, D);
  cpu::attention_forward(out_a.data(), lse_a.data(), alone.data(), seg_alone.data(), 1, TB, Hq,
                         Hkv, D);
  const std::vector<double> out_b(out.begin() + B0 * Hq * D, out.begin() + (B0 + TB) * Hq * D);
  CHECK(rel_error(out_b, out_a) < 1e-12);

  std::vector<double> R(T * Hq * D, 0.0);
  const std::vector<double> Rb = random_vector(TB * Hq * D, 112);
  std::copy(Rb.begin(), Rb.end(), R.begin() + B0 * Hq * D);
  std::vector<double> dqkv(T * S), dqkv_a(TB * S);
  cpu::attention_backward(dqkv.data(), R.data(), out.data(), lse.data(), packed.data(), seg.data(),
                          1, T, Hq, Hkv, D);
  cpu::attention_backward(dqkv_a.data(), Rb.data(), out_a.data(), lse_a.data(), alone.data(),
                          seg_alone.data(), 1, TB, Hq, Hkv, D);
  for (int64_t i = 0; i < T * S; ++i)
    if (i < B0 * S || i >= (B0 + TB) * S) REQUIRE(dqkv[i] == 0.0);
  const std::vector<double> dqkv_b(dqkv.begin() + B0 * S, dqkv.begin() + (B0 + TB) * S);
  CHECK(rel_error(dqkv_b, dqkv_a) < 1e-12);
}

TEST_CASE("fused log-prob head equals a full-logits log-softmax", "[reference]") {
  const int64_t N = 10, C = 12, V = 37;
  const double eps = 1e-5;  // the final-norm epsilon passed to the head (rms_norm_eps)
  const std::vector<int32_t> targets = {0, 36, -1, 5, 5, -1, -1, 20, 1, 33};
  const std::vector<double> x = random_vector(N * C, 121, -2, 2),
                            w = random_vector(C, 122, 0.5, 1.5), head = random_vector(V * C, 123);
  std::vector<double> ref(N, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    double ms = 0;
    for (int64_t c = 0; c < C; ++c) ms += x[n * C + c] * x[n * C + c] / C;
    std::vector<double> logits(V, 0.0);
    for (int64_t v = 0; v < V; ++v)
      for (int64_t c = 0; c < C; ++c)
        logits[v] += x[n * C + c] / std::sqrt(ms + eps) * w[c] * head[v * C + c];
    double mx = logits[0], sum = 0;
    for (double l : logits) mx = std::max(mx, l);
    for (double l : logits) sum += std::exp(l - mx);
    ref[n] = logits[targets[n]] - mx - std::log(sum);
  }
  for (int64_t chunk : {1, 3, 7, 64}) {
    INFO("chunk_rows " << chunk);
    std::vector<double> ws(cpu::logprob_head_workspace(chunk, C, V));
    std::vector<double> logp(N, 5.0), rstd(N), lse(N);
    cpu::logprob_head_forward(logp.data(), rstd.data(), lse.data(), x.data(), w.data(),
                              head.data(), targets.data(), N, C, V, chunk, ws.data(), 1e-5);
    CHECK(rel_error(logp, ref) < 1e-13);
  }
}

TEST_CASE("chunking does not change the head's gradients", "[reference]") {
  const int64_t N = 10, C = 12, V = 37;
  const std::vector<int32_t> targets = {0, 36, -1, 5, 5, -1, -1, 20, 1, 33};
  const std::vector<double> x = random_vector(N * C, 131, -2, 2),
                            w = random_vector(C, 132, 0.5, 1.5), head = random_vector(V * C, 133),
                            dlogp = random_vector(N, 134);
  std::vector<double> ref_dx, ref_dw, ref_dh;
  for (int64_t chunk : {64, 1, 4}) {
    std::vector<double> ws(cpu::logprob_head_workspace(chunk, C, V));
    std::vector<double> logp(N), rstd(N), lse(N), dx(N * C), dw(C, 0.0), dh(V * C, 0.0);
    cpu::logprob_head_forward(logp.data(), rstd.data(), lse.data(), x.data(), w.data(),
                              head.data(), targets.data(), N, C, V, chunk, ws.data(), 1e-5);
    cpu::logprob_head_backward(dx.data(), dw.data(), dh.data(), dlogp.data(), x.data(), w.data(),
                               head.data(), targets.data(), rstd.data(), lse.data(), N, C, V,
                               chunk, ws.data(), /*reuse_last_chunk=*/true);
    if (ref_dx.empty()) {
      ref_dx = dx, ref_dw = dw, ref_dh = dh;
      continue;
    }
    INFO("chunk_rows " << chunk);
    CHECK(rel_error(dx, ref_dx) < 1e-13);
    CHECK(rel_error(dw, ref_dw) < 1e-13);
    CHECK(rel_error(dh, ref_dh) < 1e-13);
  }
}

TEST_CASE("rope matches Hugging Face's q*cos + rotate_half(q)*sin", "[reference]") {
  const int64_t N = 5, H = 2, D = 8, half = D / 2, max_pos = 50;
  const double theta = 10000.0;
  cpu::RopeScaling linear;
  linear.type = cpu::RopeScaling::Type::linear;
  linear.factor = 2.0;
  const std::vector<double> inv_freq = cpu::rope_inv_freq(D, theta, linear);
  for (int64_t i = 0; i < half; ++i)
    CHECK(inv_freq[i] == Approx(std::pow(theta, -2.0 * i / D) / 2.0).epsilon(1e-15));
  std::vector<double> cos, sin;
  cpu::rope_table(cos, sin, inv_freq, max_pos);
  const std::vector<int32_t> pos = {0, 7, 49, 3, 21};
  const std::vector<double> x = random_vector(N * H * D, 141);
  std::vector<double> y = x;
  cpu::rope_forward(y.data(), pos.data(), cos.data(), sin.data(), N, H, D, H * D, max_pos);
  std::vector<double> ref(N * H * D);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        const double* q = x.data() + (n * H + h) * D;
        const double angle = pos[n] * inv_freq[d % half];  // cos/sin = cat(freqs, freqs)
        const double rot = d < half ? -q[d + half] : q[d - half];
        ref[(n * H + h) * D + d] = q[d] * std::cos(angle) + rot * std::sin(angle);
      }
  CHECK(rel_error(y, ref) < 1e-14);
}

TEST_CASE("llama3 rope scaling matches a Llama-3.1 configuration", "[reference]") {
  const int64_t D = 128;
  const double theta = 500000.0, factor = 8, low = 1, high = 4, orig = 8192;
  cpu::RopeScaling s;
  s.type = cpu::RopeScaling::Type::llama3;
  s.factor = factor;
  s.low_freq_factor = low;
  s.high_freq_factor = high;
  s.original_max_position_embeddings = orig;
  const std::vector<double> got = cpu::rope_inv_freq(D, theta, s);
  REQUIRE(got.size() == 64);

  // Re-derived the way transformers writes it: scale everything long-wavelength, then blend the
  // medium band between the scaled and unscaled values.
  int kept = 0, scaled = 0, blended = 0;
  for (int64_t i = 0; i < D / 2; ++i) {
    const double base = 1.0 / std::pow(theta, double(2 * i) / D);
    const double wavelen = 2 * M_PI / base;
    double want = wavelen > orig / low ? base / factor : base;
    const double smooth = (orig / wavelen - low) / (high - low);
    const bool medium = !(wavelen < orig / high) && !(wavelen > orig / low);
    if (medium) want = (1 - smooth) * want / factor + smooth * want;
    kept += wavelen < orig / high;
    scaled += wavelen > orig / low;
    blended += medium;
    INFO("i = " << i);
    CHECK(got[i] == Approx(want).epsilon(1e-14));
  }
  // The configuration exercises all three bands.
  CHECK(kept > 0);
  CHECK(scaled > 0);
  CHECK(blended > 0);
  CHECK(got[0] == 1.0);  // highest frequency: unscaled
  CHECK(got[63] == Approx(std::pow(theta, -126.0 / 128.0) / 8.0).epsilon(1e-14));  // lowest / 8
}

TEST_CASE("forward passes match their textbook formulas", "[reference]") {
  const int64_t N = 4, C = 6, OC = 5, V = 9, F = 7;
  const std::vector<double> x = random_vector(N * C, 151, -2, 2),
                            w = random_vector(OC * C, 152), nw = random_vector(C, 153),
                            table = random_vector(V * C, 154),
                            gu = random_vector(N * 2 * F, 155, -4, 4);
  SECTION("linear: out = x . W^T") {
    std::vector<double> out(N * OC), ref(N * OC, 0.0);
    cpu::linear_forward(out.data(), x.data(), w.data(), N, C, OC);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < OC; ++o)
        for (int64_t c = 0; c < C; ++c) ref[n * OC + o] += x[n * C + c] * w[o * C + c];
    CHECK(rel_error(out, ref) < 1e-14);
  }
  SECTION("embedding: out = table[token]") {
    const std::vector<int32_t> tokens = {8, 0, 8, 3};
    std::vector<double> out(N * C);
    cpu::embedding_forward(out.data(), tokens.data(), table.data(), N, C, V);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) CHECK(out[n * C + c] == table[tokens[n] * C + c]);
  }
  SECTION("rmsnorm: out = x / sqrt(mean(x^2) + eps) * w") {
    const double eps = 1e-6;
    std::vector<double> out(N * C), rstd(N), ref(N * C);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), nw.data(), N, C, eps);
    for (int64_t n = 0; n < N; ++n) {
      double ms = 0;
      for (int64_t c = 0; c < C; ++c) ms += x[n * C + c] * x[n * C + c] / C;
      CHECK(rstd[n] == Approx(1 / std::sqrt(ms + eps)).epsilon(1e-14));
      for (int64_t c = 0; c < C; ++c) ref[n * C + c] = x[n * C + c] / std::sqrt(ms + eps) * nw[c];
    }
    CHECK(rel_error(out, ref) < 1e-14);
  }
  SECTION("swiglu: out = silu(gate) * up") {
    std::vector<double> out(N * F), ref(N * F);
    cpu::swiglu_forward(out.data(), gu.data(), N, F);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t f = 0; f < F; ++f) {
        const double g = gu[n * 2 * F + f], u = gu[n * 2 * F + F + f];
        ref[n * F + f] = g / (1 + std::exp(-g)) * u;
      }
    CHECK(rel_error(out, ref) < 1e-14);
  }
}
