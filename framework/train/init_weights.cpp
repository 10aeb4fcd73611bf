#include "train/init_weights.hpp"

#include <cmath>
#include <random>

namespace lyre {
namespace {

uint64_t fnv1a(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ (seed * 0x9E3779B97F4A7C15ull);
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Box-Muller on mt19937_64's raw output: the standard library's normal_distribution differs
// between implementations, this does not.
class Normal {
 public:
  explicit Normal(uint64_t seed) : rng_(seed) {}
  double next() {
    if (has_spare_) return has_spare_ = false, spare_;
    double u1 = (static_cast<double>(rng_() >> 11) + 0.5) * 0x1.0p-53;
    double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return r * std::cos(2.0 * M_PI * u2);
  }

 private:
  std::mt19937_64 rng_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace

void init_weights(Model& model, uint64_t seed, double std) {
  for (const ParameterInfo& p : model.parameters()) {
    std::vector<float> values(static_cast<size_t>(p.numel()));
    if (p.kind == LYRE_PARAM_NORM) {
      std::fill(values.begin(), values.end(), 1.0f);
    } else if (p.kind == LYRE_PARAM_BIAS || p.kind == LYRE_PARAM_ADAPTER_B) {
      std::fill(values.begin(), values.end(), 0.0f);
    } else {
      Normal normal(fnv1a(p.name, seed));
      for (float& v : values) v = static_cast<float>(normal.next() * std);
    }
    model.write(p.index, values);
  }
}

}  // namespace lyre
