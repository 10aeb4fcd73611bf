// Every layer's backward against central finite differences, in double precision.
// Loss = sum(out * R) for a fixed random R, so d loss / d out = R.
// Tolerance: max|analytic - numeric| / max|numeric| < 1e-7. With eps = 1e-6 the truncation error
// is ~1e-12 and the rounding error ~1e-10 of the loss's size; observed errors are 2e-10..4e-9.
#include <catch2/catch.hpp>

#include <vector>

#include "layer_test_util.hpp"
#include "layers.hpp"

namespace cpu = lyre::cpu;
using namespace lyre::test;

namespace {

constexpr double kTol = 1e-7;

void check_gradient(const char* what, const std::vector<double>& analytic,
                    const std::vector<double>& numeric) {
  REQUIRE(analytic.size() == numeric.size());
  const double err = rel_error(analytic, numeric);
  INFO(what << ": relative error " << err << " (max |numeric| " << max_abs(numeric) << ")");
  CHECK(max_abs(numeric) > 0);
  CHECK(err < kTol);
}

}  // namespace

TEST_CASE("linear backward matches finite differences", "[gradcheck]") {
  const int64_t N = 5, C = 7, OC = 6;
  std::vector<double> x = random_vector(N * C, 1), w = random_vector(OC * C, 2);
  const std::vector<double> R = random_vector(N * OC, 3);
  auto loss = [&] {
    std::vector<double> out(N * OC);
    cpu::linear_forward(out.data(), x.data(), w.data(), N, C, OC);
    return dot(out, R);
  };
  const std::vector<double> nx = numeric_gradient(x, loss), nw = numeric_gradient(w, loss);

  SECTION("dinp overwritten, dweight accumulated") {
    std::vector<double> dx(N * C, 123.0);
    const std::vector<double> w0 = random_vector(OC * C, 4);
    std::vector<double> dw = w0;
    cpu::linear_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), N, C, OC, false);
    check_gradient("linear dinp", dx, nx);
    check_gradient("linear dweight (+=)", minus(dw, w0), nw);
  }
  SECTION("dinp accumulated, dweight skipped") {
    const std::vector<double> x0 = random_vector(N * C, 5);
    std::vector<double> dx = x0;
    cpu::linear_backward(dx.data(), static_cast<double*>(nullptr), R.data(), x.data(), w.data(), N,
                         C, OC, true);
    check_gradient("linear dinp (+=)", minus(dx, x0), nx);
  }
}

TEST_CASE("embedding backward sums the rows of repeated tokens", "[gradcheck]") {
  const int64_t N = 9, C = 5, V = 7;
  const std::vector<int32_t> tokens = {3, 1, 3, 0, 6, 3, 1, 2, 3};
  std::vector<double> table = random_vector(V * C, 11);
  const std::vector<double> R = random_vector(N * C, 12);
  auto loss = [&] {
    std::vector<double> out(N * C);
    cpu::embedding_forward(out.data(), tokens.data(), table.data(), N, C, V);
    return dot(out, R);
  };
  const std::vector<double> nt = numeric_gradient(table, loss);
  const std::vector<double> t0 = random_vector(V * C, 13);
  std::vector<double> dt = t0;
  cpu::embedding_backward(dt.data(), R.data(), tokens.data(), N, C, V);
  check_gradient("embedding dtable (+=)", minus(dt, t0), nt);
  // Token 4 and 5 never occur: their rows are untouched.
  for (int64_t c = 0; c < C; ++c) CHECK(dt[4 * C + c] == t0[4 * C + c]);
}

TEST_CASE("rmsnorm backward matches finite differences for dx and dweight", "[gradcheck]") {
  const int64_t N = 6, C = 9;
  const double eps = 1e-5;
  std::vector<double> x = random_vector(N * C, 21, -2, 2), w = random_vector(C, 22, 0.5, 1.5);
  const std::vector<double> R = random_vector(N * C, 23);
  auto loss = [&] {
    std::vector<double> out(N * C), rstd(N);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    return dot(out, R);
  };
  const std::vector<double> nx = numeric_gradient(x, loss), nw = numeric_gradient(w, loss);
  std::vector<double> out(N * C), rstd(N);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  const std::vector<double> x0 = random_vector(N * C, 24), w0 = random_vector(C, 25);
  std::vector<double> dx = x0, dw = w0;
  cpu::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
  check_gradient("rmsnorm dx (+=)", minus(dx, x0), nx);
  check_gradient("rmsnorm dweight (+=)", minus(dw, w0), nw);
}

TEST_CASE("rope backward is the transpose of rope forward, with llama3 scaling", "[gradcheck]") {
  const int64_t N = 6, H = 3, D = 16, stride = H * D + 5, max_pos = 40;
  cpu::RopeScaling scaling;
  scaling.type = cpu::RopeScaling::Type::llama3;
  scaling.factor = 4;
  scaling.low_freq_factor = 1;
  scaling.high_freq_factor = 4;
  scaling.original_max_position_embeddings = 64;
  const std::vector<double> inv_freq = cpu::rope_inv_freq(D, 10000.0, scaling);
  std::vector<double> cos, sin;
  cpu::rope_table(cos, sin, inv_freq, max_pos);
  const std::vector<int32_t> pos = {5, 0, 17, 39, 2, 9};
  std::vector<double> x = random_vector(N * stride, 31);
  const std::vector<double> R = random_vector(N * stride, 32);
  auto loss = [&] {
    std::vector<double> y = x;
    cpu::rope_forward(y.data(), pos.data(), cos.data(), sin.data(), N, H, D, stride, max_pos);
    return dot(y, R);
  };
  const std::vector<double> nx = numeric_gradient(x, loss);
  std::vector<double> dx = R;
  cpu::rope_backward(dx.data(), pos.data(), cos.data(), sin.data(), N, H, D, stride, max_pos);
  check_gradient("rope dx", dx, nx);
}

namespace {

// Two rows: 2 and 3 packed documents, then padding (segment 0).
const std::vector<int32_t> kPackedSegments = {1, 1, 1, 2, 2, 2, 2, 0, 0,   //
                                              5, 5, 3, 3, 3, 7, 7, 0, 0};

void attention_gradcheck(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                         const std::vector<int32_t>& seg) {
  const int64_t S = (Hq + 2 * Hkv) * D;
  std::vector<double> qkv = random_vector(B * T * S, 41 + uint32_t(Hq + T), -1.5, 1.5);
  const std::vector<double> R = random_vector(B * T * Hq * D, 42);
  std::vector<double> out(B * T * Hq * D), lse(B * T * Hq);
  auto loss = [&] {
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), seg.data(), B, T, Hq, Hkv, D);
    return dot(out, R);
  };
  const std::vector<double> nqkv = numeric_gradient(qkv, loss);
  loss();
  std::vector<double> dqkv(B * T * S, 77.0);
  cpu::attention_backward(dqkv.data(), R.data(), out.data(), lse.data(), qkv.data(), seg.data(),
                          B, T, Hq, Hkv, D);
  // Split into the q, k and v columns so a wrong one is named.
  const char* names[3] = {"attention dq", "attention dk", "attention dv"};
  const int64_t begin[3] = {0, Hq * D, (Hq + Hkv) * D}, end[3] = {Hq * D, (Hq + Hkv) * D, S};
  for (int part = 0; part < 3; ++part) {
    std::vector<double> a, n;
    for (int64_t r = 0; r < B * T; ++r)
      for (int64_t c = begin[part]; c < end[part]; ++c) {
        a.push_back(dqkv[r * S + c]);
        n.push_back(nqkv[r * S + c]);
      }
    check_gradient(names[part], a, n);
  }
}

}  // namespace

TEST_CASE("attention backward matches finite differences with grouped kv heads",
          "[gradcheck]") {
  attention_gradcheck(2, 9, 4, 2, 4, kPackedSegments);
}

TEST_CASE("attention backward matches finite differences with one kv head per query head",
          "[gradcheck]") {
  attention_gradcheck(2, 9, 2, 2, 4, kPackedSegments);
}

TEST_CASE("attention backward matches finite differences across query blocks", "[gradcheck]") {
  // 130 tokens span three of the kernel's 64-query blocks; documents straddle block edges.
  const int64_t T = 130;
  std::vector<int32_t> seg(T);
  for (int64_t i = 0; i < T; ++i) seg[i] = i < 40 ? 1 : (i < 100 ? 2 : (i < 121 ? 3 : 0));
  attention_gradcheck(1, T, 2, 1, 4, seg);
}

TEST_CASE("swiglu backward matches finite differences", "[gradcheck]") {
  const int64_t N = 4, F = 11;
  std::vector<double> gu = random_vector(N * 2 * F, 51, -4, 4);
  const std::vector<double> R = random_vector(N * F, 52);
  auto loss = [&] {
    std::vector<double> out(N * F);
    cpu::swiglu_forward(out.data(), gu.data(), N, F);
    return dot(out, R);
  };
  const std::vector<double> ngu = numeric_gradient(gu, loss);
  std::vector<double> dgu(N * 2 * F, -5.0);
  cpu::swiglu_backward(dgu.data(), R.data(), gu.data(), N, F);
  check_gradient("swiglu dgu", dgu, ngu);
}

TEST_CASE("fused log-prob head backward matches finite differences across chunks",
          "[gradcheck]") {
  const int64_t N = 11, C = 6, V = 13, chunk = 3;
  const std::vector<int32_t> targets = {3, -1, 12, 0, 5, -1, 7, 7, -1, 2, 9};
  std::vector<double> x = random_vector(N * C, 61, -2, 2), nw = random_vector(C, 62, 0.5, 1.5),
                      head = random_vector(V * C, 63);
  const std::vector<double> R = random_vector(N, 64);
  std::vector<double> ws(cpu::logprob_head_workspace(chunk, C, V));
  std::vector<double> logp(N), rstd(N), lse(N);
  auto loss = [&] {
    cpu::logprob_head_forward(logp.data(), rstd.data(), lse.data(), x.data(), nw.data(),
                              head.data(), targets.data(), N, C, V, chunk, ws.data(), 1e-5);
    return dot(logp, R);
  };
  const std::vector<double> nx = numeric_gradient(x, loss), nnw = numeric_gradient(nw, loss),
                            nhead = numeric_gradient(head, loss);
  loss();
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] < 0) CHECK(logp[n] == 0.0);
  std::vector<double> dx(N * C, 9.0);
  const std::vector<double> nw0 = random_vector(C, 65), head0 = random_vector(V * C, 66);
  std::vector<double> dnw = nw0, dhead = head0;
  cpu::logprob_head_backward(dx.data(), dnw.data(), dhead.data(), R.data(), x.data(), nw.data(),
                             head.data(), targets.data(), rstd.data(), lse.data(), N, C, V, chunk,
                             ws.data(), /*reuse_last_chunk=*/true);  // loss() just ran forward
  check_gradient("head dx", dx, nx);
  check_gradient("head dnorm_weight (+=)", minus(dnw, nw0), nnw);
  check_gradient("head dhead (+=)", minus(dhead, head0), nhead);
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] < 0)
      for (int64_t c = 0; c < C; ++c) CHECK(dx[n * C + c] == 0.0);
}
