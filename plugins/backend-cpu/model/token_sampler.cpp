#include "model/token_sampler.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "lyre/plugin.hpp"

namespace lyre::cpu {

void validate_sampling(const SamplingOptions& o) {
  plugin::require(std::isfinite(o.temperature) && o.temperature >= 0,
                  "sampling: temperature must be >= 0 (0 = greedy), got " +
                      std::to_string(o.temperature));
  plugin::require(o.top_k >= 0, "sampling: top_k must be >= 0 (0 = off), got " +
                                    std::to_string(o.top_k));
  plugin::require(o.top_p > 0 && o.top_p <= 1,
                  "sampling: top_p must be in (0, 1] (1 = off), got " + std::to_string(o.top_p));
}

TokenSampler::TokenSampler(const SamplingOptions& options, uint64_t stream)
    : options_(options), rng_(options.seed ^ (0x9E3779B97F4A7C15ull * (stream + 1))) {}

double TokenSampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

template <typename T>
int32_t TokenSampler::pick(const T* logits, int64_t vocab) {
  if (options_.temperature == 0.0) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return static_cast<int32_t>(best);
  }
  candidates_.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i)
    candidates_[i] = {static_cast<double>(logits[i]) / options_.temperature, static_cast<int32_t>(i)};
  // Most likely first; equal logits in id order, so the cut below is deterministic.
  auto before = [](const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = candidates_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < keep) {
    keep = static_cast<size_t>(options_.top_k);
    std::nth_element(candidates_.begin(), candidates_.begin() + static_cast<long>(keep) - 1,
                     candidates_.end(), before);
  }
  std::sort(candidates_.begin(), candidates_.begin() + static_cast<long>(keep), before);

  const double top = candidates_[0].first;
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    candidates_[i].first = std::exp(candidates_[i].first - top);
    total += candidates_[i].first;
  }
  if (options_.top_p < 1.0) {
    double mass = 0;
    size_t n = 0;
    while (n < keep) {
      mass += candidates_[n++].first;
      if (mass >= options_.top_p * total) break;
    }
    keep = n;
    total = mass;
  }
  const double u = uniform() * total;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += candidates_[i].first;
    if (u < acc) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;  // u rounded onto the total
}

template int32_t TokenSampler::pick<float>(const float*, int64_t);
template int32_t TokenSampler::pick<double>(const double*, int64_t);

}  // namespace lyre::cpu
