#include "options.hpp"

#include <ATen/Parallel.h>
#include <sched.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "lyre/plugin.hpp"

namespace lyre::libtorch {
namespace {

std::atomic<Precision> g_default_precision{Precision::fp32};

}  // namespace

Options parse_options(const char* text, const char* what, bool model_keys) {
  Options options;
  if (text == nullptr) return options;
  const std::string prefix = std::string(what) + ": ";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, prefix + "not valid JSON: " + e.what());
  }
  if (j.is_null()) return options;
  plugin::require(j.is_object(), prefix + "expected a JSON object, got " + j.dump());
  auto positive = [&](const std::string& key, const nlohmann::json& v) {
    plugin::require(v.is_number_integer() && v.get<int64_t>() >= 1,
                    prefix + "\"" + key + "\" must be an integer >= 1, got " + v.dump());
    return v.get<int64_t>();
  };
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    if (key == "precision") {
      if (v == "fp32") options.precision = Precision::fp32;
      else if (v == "fp64") options.precision = Precision::fp64;
      else
        throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, prefix + "\"precision\" " + v.dump() +
                                                             " is not supported by backend-torch "
                                                             "(supported: \"fp32\", \"fp64\")");
    } else if (key == "threads") {
      options.threads = positive(key, v);
    } else if (key == "logprob_chunk_rows" && model_keys) {
      options.logprob_chunk_rows = positive(key, v);
    } else {
      throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT,
                          prefix + "unknown key \"" + key + "\" (known: precision, threads" +
                              (model_keys ? ", logprob_chunk_rows)" : ")"));
    }
  }
  return options;
}

void apply_threads(const Options& options) {
  if (options.threads) at::set_num_threads(static_cast<int>(*options.threads));
}

void apply_default_threads() {
  const char* omp = std::getenv("OMP_NUM_THREADS");
  if (omp != nullptr && *omp != '\0') return;
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) > 0) at::set_num_threads(CPU_COUNT(&cpus));
}

Precision default_precision() { return g_default_precision.load(); }
void set_default_precision(Precision precision) { g_default_precision.store(precision); }

}  // namespace lyre::libtorch
