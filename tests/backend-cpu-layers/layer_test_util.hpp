// Helpers for the layer tests: seeded random tensors, relative errors, central differences.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace lyre::test {

inline std::vector<double> random_vector(size_t n, uint32_t seed, double lo = -1.0,
                                         double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = dist(gen);
  return v;
}

// Rounds through float, so a float run and a double run see exactly the same inputs.
inline std::vector<double> float_exact(std::vector<double> v) {
  for (double& x : v) x = double(float(x));
  return v;
}

template <typename To, typename From>
std::vector<To> cast(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// max |a - b| / max |b|: the error relative to the size of the reference b.
template <typename A>
double rel_error(const std::vector<A>& a, const std::vector<double>& b) {
  double num = 0;
  for (size_t i = 0; i < b.size(); ++i) num = std::max(num, std::fabs(double(a[i]) - b[i]));
  const double den = max_abs(b);
  return den > 0 ? num / den : num;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// d loss / d param by central differences; loss() reads param.
template <class Loss>
std::vector<double> numeric_gradient(std::vector<double>& param, Loss loss, double eps = 1e-6) {
  std::vector<double> g(param.size());
  for (size_t i = 0; i < param.size(); ++i) {
    const double keep = param[i];
    param[i] = keep + eps;
    const double up = loss();
    param[i] = keep - eps;
    const double down = loss();
    param[i] = keep;
    g[i] = (up - down) / (2 * eps);
  }
  return g;
}

inline std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

}  // namespace lyre::test
