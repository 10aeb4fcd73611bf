#include "error_measures.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace lyre::parity {
namespace {

std::string scientific(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

void expect_same_size(size_t a, size_t r, const char* what) {
  if (a != r)
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(a) + " values against " +
                                std::to_string(r) + " in the reference");
}

}  // namespace

Tolerances tolerances(Precision precision) {
  switch (precision) {
    case Precision::fp32: return {1e-5, 1e-4, 1e-5, 1e-4};
    case Precision::bf16: return {2e-2, 1e-1, 1e-2, 2e-1};
  }
  throw std::invalid_argument("tolerances: unknown precision");
}

const char* precision_name(Precision precision) {
  return precision == Precision::bf16 ? "bf16" : "fp32";
}

Precision training_precision(const std::string& plugin_name, const std::string& options_json) {
  if (plugin_name != "backend-cuda") return Precision::fp32;
  if (options_json.empty()) return Precision::bf16;
  nlohmann::json options;
  try {
    options = nlohmann::json::parse(options_json);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(plugin_name + " options " + options_json + ": not JSON: " + e.what());
  }
  const bool fp32 = options.is_object() && options.value("precision", "bf16") == "fp32";
  return fp32 ? Precision::fp32 : Precision::bf16;
}

LogpError logp_error(const std::vector<float>& a, const std::vector<float>& r) {
  expect_same_size(a.size(), r.size(), "logp");
  LogpError out;
  for (size_t i = 0; i < a.size(); ++i) {
    const double ref = r[i];
    const double e = std::fabs(static_cast<double>(a[i]) - ref) / std::max(std::fabs(ref), 1.0);
    if (std::isnan(e)) return {e, static_cast<int64_t>(i)};
    if (out.worst_index < 0 || e > out.error) out = {e, static_cast<int64_t>(i)};
  }
  return out;
}

double normwise_error(const std::vector<float>& a, const std::vector<float>& r) {
  expect_same_size(a.size(), r.size(), "tensor");
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(r[i]);
    diff += d * d;
    ref += static_cast<double>(r[i]) * static_cast<double>(r[i]);
  }
  if (std::isnan(diff) || std::isnan(ref) || std::isinf(ref)) return std::numeric_limits<double>::quiet_NaN();
  if (diff == 0) return 0;
  if (ref == 0) return std::numeric_limits<double>::infinity();
  return std::sqrt(diff / ref);
}

bool Comparison::all_ok() const {
  return std::all_of(tensors.begin(), tensors.end(), [](const TensorError& t) { return t.ok(); });
}

std::vector<std::string> Comparison::failing() const {
  std::vector<std::string> names;
  for (const TensorError& t : tensors)
    if (!t.ok()) names.push_back(t.name);
  return names;
}

const TensorError* Comparison::worst() const {
  // error / tolerance, with the failing tensors first (a NaN error sorts as failing).
  auto badness = [](const TensorError& t) {
    if (!t.ok()) return std::numeric_limits<double>::infinity();
    return t.tolerance > 0 ? t.error / t.tolerance : 0.0;
  };
  const TensorError* worst = nullptr;
  for (const TensorError& t : tensors) {
    if (worst == nullptr || badness(t) > badness(*worst) ||
        (!t.ok() && !worst->ok() && t.error > worst->error))
      worst = &t;
  }
  return worst;
}

std::string Comparison::summary() const {
  const TensorError* w = worst();
  if (w == nullptr) return quantity + ": nothing compared";
  std::string s = quantity + ": worst " + w->name + " " + scientific(w->error) + " (tolerance " +
                  scientific(w->tolerance) + ")";
  if (!w->detail.empty()) s += " " + w->detail;
  return s + " of " + std::to_string(tensors.size()) + (tensors.size() == 1 ? " tensor" : " tensors") +
         (all_ok() ? "" : ", " + std::to_string(failing().size()) + " out of tolerance");
}

std::string Comparison::failures() const {
  std::string s;
  for (const TensorError& t : tensors) {
    if (t.ok()) continue;
    s += quantity + " of " + t.name + ": error " + scientific(t.error) + " > tolerance " +
         scientific(t.tolerance) + (t.detail.empty() ? "" : " " + t.detail) + "\n";
  }
  return s;
}

}  // namespace lyre::parity
