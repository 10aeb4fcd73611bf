// The float layers (oneDNN sgemm, AVX2 exp, float accumulation) against the double reference on
// the same float-representable inputs. Shapes are larger than the gradient checks' and not
// multiples of 8, to run oneDNN's blocking and the vector loops' tails.
// Tolerance: max|float - double| / max|double| < 1e-5 (observed: 7e-8..7e-7).
#include <catch2/catch.hpp>

#include <vector>

#include "layer_test_util.hpp"
#include "layers.hpp"

namespace cpu = lyre::cpu;
using namespace lyre::test;

namespace {

constexpr double kTol = 1e-5;

// Rounds every value through float: the inputs both precisions share.
std::vector<double> input(size_t n, uint32_t seed, double lo = -1, double hi = 1) {
  return float_exact(random_vector(n, seed, lo, hi));
}

void check_agree(const char* what, const std::vector<float>& f, const std::vector<double>& d) {
  const double err = rel_error(f, d);
  INFO(what << ": float vs double relative error " << err);
  CHECK(err < kTol);
}

}  // namespace

TEST_CASE("float linear agrees with double", "[float]") {
  const int64_t N = 37, C = 70, OC = 83;
  const auto x = input(N * C, 1), w = input(OC * C, 2), g = input(N * OC, 3), a0 = input(N * C, 4);
  std::vector<double> out(N * OC), dx = a0, dw(OC * C, 0.0);
  std::vector<float> outf(N * OC), dxf = cast<float>(a0), dwf(OC * C, 0.0f);
  const auto xf = cast<float>(x), wf = cast<float>(w), gf = cast<float>(g);
  cpu::linear_forward(out.data(), x.data(), w.data(), N, C, OC);
  cpu::linear_forward(outf.data(), xf.data(), wf.data(), N, C, OC);
  cpu::linear_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), N, C, OC, true);
  cpu::linear_backward(dxf.data(), dwf.data(), gf.data(), xf.data(), wf.data(), N, C, OC, true);
  check_agree("linear out", outf, out);
  check_agree("linear dinp", dxf, dx);
  check_agree("linear dweight", dwf, dw);
}

TEST_CASE("float gemm agrees with double for every transpose and leading dimension", "[float]") {
  const int64_t M = 19, N = 23, K = 29, pad = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
      const auto A = input((ta ? K : M) * lda, 5), B = input((tb ? N : K) * ldb, 6),
                 C0 = input(M * ldc, 7);
      std::vector<double> C = C0;
      std::vector<float> Cf = cast<float>(C0);
      const auto Af = cast<float>(A), Bf = cast<float>(B);
      cpu::gemm(ta, tb, M, N, K, 0.5, A.data(), lda, B.data(), ldb, 2.0, C.data(), ldc);
      cpu::gemm(ta, tb, M, N, K, 0.5f, Af.data(), lda, Bf.data(), ldb, 2.0f, Cf.data(), ldc);
      INFO("trans_a " << ta << " trans_b " << tb);
      check_agree("gemm", Cf, C);
    }
}

TEST_CASE("float embedding agrees with double", "[float]") {
  const int64_t N = 50, C = 37, V = 20;
  std::vector<int32_t> tokens(N);
  for (int64_t n = 0; n < N; ++n) tokens[n] = int32_t((n * 7 + 3) % V);
  const auto table = input(V * C, 8), g = input(N * C, 9);
  std::vector<double> out(N * C), dt(V * C, 0.0);
  std::vector<float> outf(N * C), dtf(V * C, 0.0f);
  const auto tf = cast<float>(table), gf = cast<float>(g);
  cpu::embedding_forward(out.data(), tokens.data(), table.data(), N, C, V);
  cpu::embedding_forward(outf.data(), tokens.data(), tf.data(), N, C, V);
  cpu::embedding_backward(dt.data(), g.data(), tokens.data(), N, C, V);
  cpu::embedding_backward(dtf.data(), gf.data(), tokens.data(), N, C, V);
  check_agree("embedding out", outf, out);
  check_agree("embedding dtable", dtf, dt);
}

TEST_CASE("float rmsnorm agrees with double", "[float]") {
  const int64_t N = 33, C = 97;
  const auto x = input(N * C, 10, -3, 3), w = input(C, 11, 0.5, 1.5), g = input(N * C, 12);
  std::vector<double> out(N * C), rstd(N), dx(N * C, 0.0), dw(C, 0.0);
  std::vector<float> outf(N * C), rstdf(N), dxf(N * C, 0.0f), dwf(C, 0.0f);
  const auto xf = cast<float>(x), wf = cast<float>(w), gf = cast<float>(g);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
  cpu::rmsnorm_forward(outf.data(), rstdf.data(), xf.data(), wf.data(), N, C, 1e-5f);
  cpu::rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), rstd.data(), N, C);
  cpu::rmsnorm_backward(dxf.data(), dwf.data(), gf.data(), xf.data(), wf.data(), rstdf.data(), N,
                        C);
  check_agree("rmsnorm out", outf, out);
  check_agree("rmsnorm rstd", rstdf, rstd);
  check_agree("rmsnorm dx", dxf, dx);
  check_agree("rmsnorm dweight", dwf, dw);
}

TEST_CASE("float rope agrees with double", "[float]") {
  const int64_t N = 20, H = 4, D = 64, stride = H * D, max_pos = 4096;
  cpu::RopeScaling s;
  s.type = cpu::RopeScaling::Type::llama3;
  s.factor = 8;
  const auto inv_freq = cpu::rope_inv_freq(D, 500000.0, s);
  std::vector<double> cos, sin;
  std::vector<float> cosf, sinf;
  cpu::rope_table(cos, sin, inv_freq, max_pos);
  cpu::rope_table(cosf, sinf, inv_freq, max_pos);
  std::vector<int32_t> pos(N);
  for (int64_t n = 0; n < N; ++n) pos[n] = int32_t((n * 211) % max_pos);
  const auto x = input(N * stride, 13);
  std::vector<double> y = x, dy = x;
  std::vector<float> yf = cast<float>(x), dyf = yf;
  cpu::rope_forward(y.data(), pos.data(), cos.data(), sin.data(), N, H, D, stride, max_pos);
  cpu::rope_forward(yf.data(), pos.data(), cosf.data(), sinf.data(), N, H, D, stride, max_pos);
  cpu::rope_backward(dy.data(), pos.data(), cos.data(), sin.data(), N, H, D, stride, max_pos);
  cpu::rope_backward(dyf.data(), pos.data(), cosf.data(), sinf.data(), N, H, D, stride, max_pos);
  check_agree("rope forward", yf, y);
  check_agree("rope backward", dyf, dy);
}

TEST_CASE("float attention agrees with double", "[float]") {
  const int64_t B = 2, T = 150, Hq = 4, Hkv = 2, D = 16, S = (Hq + 2 * Hkv) * D;
  std::vector<int32_t> seg(B * T);
  for (int64_t i = 0; i < T; ++i) {
    seg[i] = i < 70 ? 1 : (i < 138 ? 2 : 0);
    seg[T + i] = i < 9 ? 3 : (i < 130 ? 4 : 5);
  }
  const auto qkv = input(B * T * S, 14, -2, 2), g = input(B * T * Hq * D, 15);
  std::vector<double> out(B * T * Hq * D), lse(B * T * Hq), dqkv(B * T * S);
  std::vector<float> outf(B * T * Hq * D), lsef(B * T * Hq), dqkvf(B * T * S);
  const auto qkvf = cast<float>(qkv), gf = cast<float>(g);
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), seg.data(), B, T, Hq, Hkv, D);
  cpu::attention_forward(outf.data(), lsef.data(), qkvf.data(), seg.data(), B, T, Hq, Hkv, D);
  cpu::attention_backward(dqkv.data(), g.data(), out.data(), lse.data(), qkv.data(), seg.data(),
                          B, T, Hq, Hkv, D);
  cpu::attention_backward(dqkvf.data(), gf.data(), outf.data(), lsef.data(), qkvf.data(),
                          seg.data(), B, T, Hq, Hkv, D);
  check_agree("attention out", outf, out);
  check_agree("attention lse", lsef, lse);
  check_agree("attention dqkv", dqkvf, dqkv);
}

TEST_CASE("float swiglu agrees with double", "[float]") {
  const int64_t N = 21, F = 53;
  const auto gu = input(N * 2 * F, 16, -6, 6), g = input(N * F, 17);
  std::vector<double> out(N * F), dgu(N * 2 * F);
  std::vector<float> outf(N * F), dguf(N * 2 * F);
  const auto guf = cast<float>(gu), gf = cast<float>(g);
  cpu::swiglu_forward(out.data(), gu.data(), N, F);
  cpu::swiglu_forward(outf.data(), guf.data(), N, F);
  cpu::swiglu_backward(dgu.data(), g.data(), gu.data(), N, F);
  cpu::swiglu_backward(dguf.data(), gf.data(), guf.data(), N, F);
  check_agree("swiglu out", outf, out);
  check_agree("swiglu dgu", dguf, dgu);
}

TEST_CASE("float fused log-prob head agrees with double", "[float]") {
  const int64_t N = 40, C = 48, V = 203, chunk = 16;
  std::vector<int32_t> targets(N);
  for (int64_t n = 0; n < N; ++n) targets[n] = n % 5 == 2 ? -1 : int32_t((n * 37) % V);
  const auto x = input(N * C, 18, -2, 2), w = input(C, 19, 0.5, 1.5), head = input(V * C, 20),
             dlogp = input(N, 21);
  const auto xf = cast<float>(x), wf = cast<float>(w), hf = cast<float>(head),
             df = cast<float>(dlogp);
  std::vector<double> ws(cpu::logprob_head_workspace(chunk, C, V)), logp(N), rstd(N), lse(N),
      dx(N * C), dw(C, 0.0), dh(V * C, 0.0);
  std::vector<float> wsf(ws.size()), logpf(N), rstdf(N), lsef(N), dxf(N * C), dwf(C, 0.0f),
      dhf(V * C, 0.0f);
  cpu::logprob_head_forward(logp.data(), rstd.data(), lse.data(), x.data(), w.data(), head.data(),
                            targets.data(), N, C, V, chunk, ws.data(), 1e-5);
  cpu::logprob_head_forward(logpf.data(), rstdf.data(), lsef.data(), xf.data(), wf.data(),
                            hf.data(), targets.data(), N, C, V, chunk, wsf.data(), 1e-5);
  cpu::logprob_head_backward(dx.data(), dw.data(), dh.data(), dlogp.data(), x.data(), w.data(),
                             head.data(), targets.data(), rstd.data(), lse.data(), N, C, V, chunk,
                             ws.data(), /*reuse_last_chunk=*/true);
  cpu::logprob_head_backward(dxf.data(), dwf.data(), dhf.data(), df.data(), xf.data(), wf.data(),
                             hf.data(), targets.data(), rstdf.data(), lsef.data(), N, C, V, chunk,
                             wsf.data(), /*reuse_last_chunk=*/true);
  check_agree("head logp", logpf, logp);
  check_agree("head lse", lsef, lse);
  check_agree("head dx", dxf, dx);
  check_agree("head dnorm_weight", dwf, dw);
  check_agree("head dhead", dhf, dh);
}
