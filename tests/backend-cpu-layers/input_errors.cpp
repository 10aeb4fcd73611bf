// Bad indices are reported as std::out_of_range with the offending value, before anything is
// written.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <vector>

#include "layers.hpp"

namespace cpu = lyre::cpu;
using Catch::Matchers::Contains;

TEST_CASE("embedding rejects a token id outside the vocabulary and names it", "[errors]") {
  const int64_t C = 4, V = 10;
  std::vector<float> table(V * C, 1.0f), out(3 * C, 0.0f), dtable(V * C, 0.0f);
  const std::vector<int32_t> too_big = {1, 12345, 2}, negative = {-7, 0, 0}, at_v = {10};
  auto forward = [&](const std::vector<int32_t>& tokens) {
    cpu::embedding_forward(out.data(), tokens.data(), table.data(), int64_t(tokens.size()), C, V);
  };
  REQUIRE_THROWS_AS(forward(too_big), std::out_of_range);
  REQUIRE_THROWS_WITH(forward(too_big), Contains("12345") && Contains("row 1"));
  REQUIRE_THROWS_AS(forward(negative), std::out_of_range);
  REQUIRE_THROWS_WITH(forward(negative), Contains("-7"));
  REQUIRE_THROWS_AS(forward(at_v), std::out_of_range);
  REQUIRE_THROWS_WITH(forward(at_v), Contains("10"));
  for (float v : out) CHECK(v == 0.0f);

  REQUIRE_THROWS_AS(cpu::embedding_backward(dtable.data(), out.data(), too_big.data(), 3, C, V),
                    std::out_of_range);
  REQUIRE_THROWS_WITH(cpu::embedding_backward(dtable.data(), out.data(), too_big.data(), 3, C, V),
                      Contains("12345"));
  for (float v : dtable) CHECK(v == 0.0f);
}

TEST_CASE("rope rejects a position past its table and names it", "[errors]") {
  const int64_t D = 8, max_pos = 16;
  std::vector<double> cos, sin;
  cpu::rope_table(cos, sin, cpu::rope_inv_freq(D, 10000.0, {}), max_pos);
  std::vector<double> x(2 * D, 1.0);
  const std::vector<int32_t> pos = {3, 16};
  auto forward = [&] {
    cpu::rope_forward(x.data(), pos.data(), cos.data(), sin.data(), 2, 1, D, D, max_pos);
  };
  auto backward = [&] {
    cpu::rope_backward(x.data(), pos.data(), cos.data(), sin.data(), 2, 1, D, D, max_pos);
  };
  REQUIRE_THROWS_AS(forward(), std::out_of_range);
  REQUIRE_THROWS_WITH(forward(), Contains("position 16"));
  REQUIRE_THROWS_AS(backward(), std::out_of_range);
  for (double v : x) CHECK(v == 1.0);
}

TEST_CASE("log-prob head rejects a target outside the vocabulary, naming row and value",
          "[errors]") {
  const int64_t N = 3, C = 4, V = 5, chunk = 2;
  std::vector<float> x(N * C, 1.0f), w(C, 1.0f), head(V * C, 0.5f), logp(N), rstd(N), lse(N);
  std::vector<float> dx(N * C), dw(C), dh(V * C), dlogp(N, 1.0f);
  std::vector<float> ws(cpu::logprob_head_workspace(chunk, C, V));
  const std::vector<int32_t> targets = {0, -1, 5};  // -1 is ignored, 5 == V is an error
  auto forward = [&] {
    cpu::logprob_head_forward(logp.data(), rstd.data(), lse.data(), x.data(), w.data(),
                              head.data(), targets.data(), N, C, V, chunk, ws.data(), 1e-5);
  };
  auto backward = [&] {
    cpu::logprob_head_backward(dx.data(), dw.data(), dh.data(), dlogp.data(), x.data(), w.data(),
                               head.data(), targets.data(), rstd.data(), lse.data(), N, C, V,
                               chunk, ws.data(), /*reuse_last_chunk=*/false);
  };
  REQUIRE_THROWS_AS(forward(), std::out_of_range);
  REQUIRE_THROWS_WITH(forward(), Contains("target 5") && Contains("row 2"));
  REQUIRE_THROWS_AS(backward(), std::out_of_range);
  REQUIRE_THROWS_WITH(backward(), Contains("target 5") && Contains("row 2"));
}
