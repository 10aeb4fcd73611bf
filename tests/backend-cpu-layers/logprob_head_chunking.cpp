// The fused log-prob head's chunking: the default chunk rule, and backward taking the forward's
// last chunk from the workspace instead of recomputing it.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "layer_test_util.hpp"
#include "layers.hpp"

namespace cpu = lyre::cpu;
using namespace lyre::test;

namespace {

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename T>
struct HeadGrads {
  std::vector<T> dx, dw, dh;
};

// Forward, then backward with or without the reuse; `clobber` overwrites the workspace between
// them (what another use of it would do). dnorm_weight and dhead start non-zero (they add).
template <typename T>
HeadGrads<T> head_grads(int64_t chunk, bool reuse, bool clobber) {
  const int64_t N = 150, C = 64, V = 517;
  std::vector<int32_t> targets(N);
  for (int64_t n = 0; n < N; ++n) targets[n] = n % 9 == 4 ? -1 : int32_t((n * 53) % V);
  const auto x = cast<T>(random_vector(N * C, 301, -2, 2));
  const auto w = cast<T>(random_vector(C, 302, 0.5, 1.5));
  const auto head = cast<T>(random_vector(V * C, 303));
  const auto dlogp = cast<T>(random_vector(N, 304));
  std::vector<T> ws(cpu::logprob_head_workspace(chunk, C, V)), logp(N), rstd(N), lse(N);
  cpu::logprob_head_forward(logp.data(), rstd.data(), lse.data(), x.data(), w.data(),
                            head.data(), targets.data(), N, C, V, chunk, ws.data(), 1e-5);
  if (clobber) std::fill(ws.begin(), ws.end(), T(0.25));
  HeadGrads<T> g{std::vector<T>(N * C, T(7)), cast<T>(random_vector(C, 305)),
                 cast<T>(random_vector(V * C, 306))};
  cpu::logprob_head_backward(g.dx.data(), g.dw.data(), g.dh.data(), dlogp.data(), x.data(),
                             w.data(), head.data(), targets.data(), rstd.data(), lse.data(), N, C,
                             V, chunk, ws.data(), reuse);
  return g;
}

template <typename T>
void check_reuse_is_bit_identical() {
  // 133 rows have a target: one chunk (133, 512), many (1, 7, 16), and a ragged last chunk.
  for (int64_t chunk : {512, 133, 100, 16, 7, 1}) {
    INFO("chunk_rows " << chunk);
    const HeadGrads<T> recomputed = head_grads<T>(chunk, false, false);
    const HeadGrads<T> reused = head_grads<T>(chunk, true, false);
    CHECK(same_bits(reused.dx, recomputed.dx));
    CHECK(same_bits(reused.dw, recomputed.dw));
    CHECK(same_bits(reused.dh, recomputed.dh));
    // Without reuse the workspace's contents do not matter.
    const HeadGrads<T> clobbered = head_grads<T>(chunk, false, true);
    CHECK(same_bits(clobbered.dh, recomputed.dh));
  }
}

}  // namespace

TEST_CASE("head backward reusing the forward's last chunk is bit-identical to recomputing it",
          "[logprob_head]") {
  SECTION("float (oneDNN sgemm)") { check_reuse_is_bit_identical<float>(); }
  SECTION("double") { check_reuse_is_bit_identical<double>(); }
}

TEST_CASE("head backward with reuse reads the last chunk from the workspace", "[logprob_head]") {
  // Pins that the reuse path is taken: a workspace overwritten after the forward then changes
  // the gradients (which is why the model tracks whether the workspace is still the forward's).
  for (int64_t chunk : {512, 16}) {
    INFO("chunk_rows " << chunk);
    const HeadGrads<double> good = head_grads<double>(chunk, true, false);
    const HeadGrads<double> stale = head_grads<double>(chunk, true, true);
    CHECK(rel_error(stale.dh, good.dh) > 1e-3);
  }
}

TEST_CASE("the default head chunk holds up to 256 MiB of logits, in even chunks of the rows needed",
          "[logprob_head]") {
  const int64_t many = 1 << 20;
  CHECK(cpu::logprob_head_chunk_rows(many, 32000, sizeof(float)) == 2093);
  CHECK(cpu::logprob_head_chunk_rows(many, 128256, sizeof(float)) == 523);
  CHECK(cpu::logprob_head_chunk_rows(many, 32000, sizeof(double)) == 1048);
  // A tiny vocabulary: the whole batch in one chunk.
  CHECK(cpu::logprob_head_chunk_rows(2048, 259, sizeof(float)) == 2048);
  // A batch of 8 x 256 at a 32k vocabulary is one chunk: backward recomputes nothing.
  CHECK(cpu::logprob_head_chunk_rows(2048, 32000, sizeof(float)) == 2048);
  // More rows than fit: the fewest chunks that fit, of equal size.
  CHECK(cpu::logprob_head_chunk_rows(2097, 32000, sizeof(float)) == 2097);
  CHECK(cpu::logprob_head_chunk_rows(2098, 32000, sizeof(float)) == 1049);
  CHECK(cpu::logprob_head_chunk_rows(2 * 259107, 259, sizeof(float)) == 259107);
  CHECK(cpu::logprob_head_chunk_rows(2 * 259107 + 1, 259, sizeof(float)) == 172739);
  // A small batch allocates for its rows, not for the budget.
  CHECK(cpu::logprob_head_chunk_rows(10, 32000, sizeof(float)) == 10);
  CHECK(cpu::logprob_head_workspace(cpu::logprob_head_chunk_rows(10, 32000, sizeof(float)), 512,
                                    32000) == 10 * (32000 + 1024));
  // A vocabulary too large for 64 rows in the budget still gets 64.
  CHECK(cpu::logprob_head_chunk_rows(many, 1 << 20, sizeof(float)) == 64);
  // No rows with a target: one row, so the workspace is never empty.
  CHECK(cpu::logprob_head_chunk_rows(0, 32000, sizeof(float)) == 1);
}
