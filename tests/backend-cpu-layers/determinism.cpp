// Backward passes that reduce (over rows, over a query group) give bit-identical results when
// called twice with the same thread count: no atomics, no schedule-dependent order.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "layer_test_util.hpp"
#include "layers.hpp"

namespace cpu = lyre::cpu;
using namespace lyre::test;

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("attention backward is bit-identical run to run", "[determinism]") {
  const int64_t B = 3, T = 200, Hq = 8, Hkv = 2, D = 32, S = (Hq + 2 * Hkv) * D;
  std::vector<int32_t> seg(B * T);
  for (int64_t i = 0; i < B * T; ++i) seg[i] = int32_t(i / 23);
  const auto qkv = cast<float>(random_vector(B * T * S, 201, -2, 2));
  const auto g = cast<float>(random_vector(B * T * Hq * D, 202));
  std::vector<float> out(B * T * Hq * D), lse(B * T * Hq);
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), seg.data(), B, T, Hq, Hkv, D);
  std::vector<float> first(B * T * S), second(B * T * S, 1.0f);
  cpu::attention_backward(first.data(), g.data(), out.data(), lse.data(), qkv.data(), seg.data(),
                          B, T, Hq, Hkv, D);
  cpu::attention_backward(second.data(), g.data(), out.data(), lse.data(), qkv.data(), seg.data(),
                          B, T, Hq, Hkv, D);
  CHECK(same_bits(first, second));
}

TEST_CASE("rmsnorm backward is bit-identical run to run", "[determinism]") {
  const int64_t N = 301, C = 515;
  const auto x = cast<float>(random_vector(N * C, 211, -3, 3));
  const auto w = cast<float>(random_vector(C, 212, 0.5, 1.5));
  const auto g = cast<float>(random_vector(N * C, 213));
  std::vector<float> out(N * C), rstd(N);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
  std::vector<float> dx1(N * C, 0.0f), dw1(C, 0.0f), dx2(N * C, 0.0f), dw2(C, 0.0f);
  cpu::rmsnorm_backward(dx1.data(), dw1.data(), g.data(), x.data(), w.data(), rstd.data(), N, C);
  cpu::rmsnorm_backward(dx2.data(), dw2.data(), g.data(), x.data(), w.data(), rstd.data(), N, C);
  CHECK(same_bits(dx1, dx2));
  CHECK(same_bits(dw1, dw2));
}

TEST_CASE("embedding and head backward are bit-identical run to run", "[determinism]") {
  const int64_t N = 96, C = 64, V = 300, chunk = 40;
  std::vector<int32_t> tokens(N), targets(N);
  for (int64_t n = 0; n < N; ++n) {
    tokens[n] = int32_t((n * n) % 17);  // many repeats
    targets[n] = n % 7 == 0 ? -1 : int32_t((n * 31) % V);
  }
  const auto g = cast<float>(random_vector(N * C, 221));
  std::vector<float> dt1(17 * C, 0.0f), dt2(17 * C, 0.0f);
  cpu::embedding_backward(dt1.data(), g.data(), tokens.data(), N, C, 17);
  cpu::embedding_backward(dt2.data(), g.data(), tokens.data(), N, C, 17);
  CHECK(same_bits(dt1, dt2));

  const auto x = cast<float>(random_vector(N * C, 222, -2, 2));
  const auto w = cast<float>(random_vector(C, 223, 0.5, 1.5));
  const auto head = cast<float>(random_vector(V * C, 224));
  const auto dlogp = cast<float>(random_vector(N, 225));
  std::vector<float> ws(cpu::logprob_head_workspace(chunk, C, V)), logp(N), rstd(N), lse(N);
  cpu::logprob_head_forward(logp.data(), rstd.data(), lse.data(), x.data(), w.data(), head.data(),
                            targets.data(), N, C, V, chunk, ws.data(), 1e-5);
  std::vector<float> dx[2], dw[2], dh[2];
  for (int run = 0; run < 2; ++run) {
    dx[run].assign(N * C, 0.0f);
    dw[run].assign(C, 0.0f);
    dh[run].assign(V * C, 0.0f);
    cpu::logprob_head_backward(dx[run].data(), dw[run].data(), dh[run].data(), dlogp.data(),
                               x.data(), w.data(), head.data(), targets.data(), rstd.data(),
                               lse.data(), N, C, V, chunk, ws.data(),
                               /*reuse_last_chunk=*/false);  // run 0 overwrote the workspace
  }
  CHECK(same_bits(dx[0], dx[1]));
  CHECK(same_bits(dw[0], dw[1]));
  CHECK(same_bits(dh[0], dh[1]));
}
