// lyre-bench-train: training throughput of a backend on one Llama config, printed as one JSON
// object (tokens/s, s/step, MFU, peak memory, first and last loss). bench/peer_torch_llama.py
// prints the same fields for the same model in PyTorch; bench/run_cpu_bench.sh runs both, and
// bench/run_gpu_bench.sh runs it on backend-cuda beside bench/peer_torch_llama_gpu.py.
//
// Each step is the Trainer's run_step with one micro-batch and clipping at 1.0: zero_grad,
// train forward, objective, backward, global grad norm, optimizer step. Batches are random
// tokens, one document per row, every position a loss token; they are made before the clock
// starts so that only training is timed. Each step ends with the backend's synchronize, so a GPU
// step's time includes its queued kernels (a CPU backend returns at once).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/batch.hpp"
#include "plugin/error.hpp"
#include "plugin/handles.hpp"
#include "plugin/plugin_host.hpp"
#include "train/init_weights.hpp"

namespace {

constexpr const char* kUsage = R"(usage: lyre-bench-train --config FILE [options]
  --config FILE       Hugging Face config.json of a Llama model (required)
  --plugin-dir DIR    where liblyre-*.so live (default: $LYRE_PLUGIN_PATH, then <exe>/../lib/lyre/plugins)
  --backend NAME      backend plugin (default: cpu)
  --threads N         backend threads (default: 2); 0 passes no "threads" option (backend-cuda
                      has none)
  --model-options J   extra backend model options, a JSON object merged with {"threads": N}
                      (e.g. '{"logprob_chunk_rows": 512}')
  --batch B           rows per step (default: 8)
  --seq T             tokens per row (default: 256)
  --warmup W          untimed steps first (default: 3)
  --steps S           timed steps (default: 10)
  --seed N            weights and data seed (default: 0)
Prints one JSON object on stdout.
)";

struct Options {
  std::string config_path, plugin_dir, backend = "cpu", model_options;
  int64_t threads = 2, batch = 8, seq = 256, warmup = 3, steps = 10;
  uint64_t seed = 0;
};

int64_t parse_count(const std::string& flag, const std::string& value, int64_t min) {
  size_t used = 0;
  int64_t n = 0;
  try {
    n = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || n < min) {
    throw std::invalid_argument(flag + " needs an integer >= " + std::to_string(min) + ", got \"" + value + "\"");
  }
  return n;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value (see --help)");
    const std::string value = argv[++i];
    if (flag == "--config") o.config_path = value;
    else if (flag == "--plugin-dir") o.plugin_dir = value;
    else if (flag == "--backend") o.backend = value;
    else if (flag == "--threads") o.threads = parse_count(flag, value, 0);
    else if (flag == "--model-options") o.model_options = value;
    else if (flag == "--batch") o.batch = parse_count(flag, value, 1);
    else if (flag == "--seq") o.seq = parse_count(flag, value, 2);
    else if (flag == "--warmup") o.warmup = parse_count(flag, value, 0);
    else if (flag == "--steps") o.steps = parse_count(flag, value, 1);
    else if (flag == "--seed") o.seed = static_cast<uint64_t>(parse_count(flag, value, 0));
    else throw std::invalid_argument("unknown option " + flag + " (see --help)");
  }
  if (o.config_path.empty()) throw std::invalid_argument("--config is required (see --help)");
  return o;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Rows of T+1 uniform random ids: tokens are the first T, targets the last T (the next token).
lyre::Batch random_batch(int64_t rows, int64_t cols, int64_t vocab, std::mt19937_64& rng) {
  lyre::Batch b(rows, cols);
  b.num_samples = rows;
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  for (int64_t r = 0; r < rows; ++r) {
    int32_t next = id(rng);
    for (int64_t t = 0; t < cols; ++t) {
      const size_t k = static_cast<size_t>(r * cols + t);
      b.tokens[k] = next;
      next = id(rng);
      b.targets[k] = next;
      b.positions[k] = static_cast<int32_t>(t);
      b.segment_ids[k] = 1;
      b.loss_mask[k] = 1;
    }
  }
  return b;
}

LyreBackend_DeviceInfo_Args device_info(const lyre::LoadedPlugin& backend) {
  LyreBackend_DeviceInfo_Args info{};
  info.struct_size = sizeof info;
  info.device_index = 0;
  lyre::check(backend.api().backend->device_info(&info), backend.name() + ": device_info");
  return info;
}

void synchronize(const lyre::LoadedPlugin& backend) {
  LyreBackend_Synchronize_Args args{};
  args.struct_size = sizeof args;
  args.device_index = 0;
  lyre::check(backend.api().backend->synchronize(&args), backend.name() + ": synchronize");
}

uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

uint64_t peak_resident_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

int run(const Options& o) {
  const std::string config_text = read_file(o.config_path);
  const int64_t vocab = nlohmann::json::parse(config_text).at("vocab_size").get<int64_t>();

  std::vector<std::string> dirs = o.plugin_dir.empty() ? lyre::PluginRegistry::default_search_dirs()
                                                       : std::vector<std::string>{o.plugin_dir};
  lyre::PluginRegistry registry = lyre::PluginRegistry::discover(dirs);
  std::shared_ptr<lyre::LoadedPlugin> backend = registry.backend(o.backend);
  if (backend->api().backend == nullptr) throw std::runtime_error(backend->name() + " has no backend slot");
  std::shared_ptr<lyre::LoadedPlugin> sft = registry.objective("sft");
  const uint64_t rss_baseline = resident_bytes();

  nlohmann::json model_options = o.model_options.empty() ? nlohmann::json::object()
                                                         : nlohmann::json::parse(o.model_options);
  if (!model_options.is_object()) throw std::invalid_argument("--model-options must be a JSON object");
  if (o.threads > 0) model_options["threads"] = o.threads;
  lyre::Model model(backend, config_text, model_options.dump());
  lyre::init_weights(model, o.seed, 0.02);
  lyre::Optimizer optimizer(model, R"({"type": "adamw", "betas": [0.9, 0.999], "eps": 1e-8,
                                       "weight_decay": 0.01, "no_decay_kinds": ["norm", "bias"]})");
  lyre::Objective objective(sft, R"({"mode": "causal_lm"})");
  constexpr double kLearningRate = 1e-4, kMaxGradNorm = 1.0;

  std::mt19937_64 rng(o.seed + 1);
  std::vector<lyre::Batch> batches;
  for (int64_t i = 0; i < o.warmup + o.steps; ++i) batches.push_back(random_batch(o.batch, o.seq, vocab, rng));

  std::vector<float> logp, dlogp;
  std::vector<double> step_seconds, losses, grad_norms;
  for (const lyre::Batch& batch : batches) {
    const auto start = std::chrono::steady_clock::now();
    const double normalizer = objective.normalizer(batch);
    model.zero_grad();
    model.forward(batch, LYRE_FORWARD_TRAIN, logp);
    const lyre::ObjectiveResult result = objective.compute(batch, logp, nullptr, normalizer, dlogp);
    model.backward(batch, dlogp);
    const double grad_norm = std::sqrt(optimizer.grad_squared_norm());
    const double scale = grad_norm > kMaxGradNorm ? kMaxGradNorm / (grad_norm + 1e-6) : 1.0;
    optimizer.step(kLearningRate, scale);
    synchronize(*backend);
    step_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (!std::isfinite(result.loss)) throw std::runtime_error("loss is " + std::to_string(result.loss));
    losses.push_back(result.loss);
    grad_norms.push_back(grad_norm);
  }

  const std::vector<double> timed(step_seconds.begin() + o.warmup, step_seconds.end());
  double seconds = 0;
  for (double s : timed) seconds += s;
  const double tokens_per_s = static_cast<double>(o.steps * o.batch * o.seq) / seconds;
  const LyreModel_Stats_Args stats = model.stats(o.seq);
  const LyreBackend_DeviceInfo_Args info = device_info(*backend);
  std::vector<double> sorted = timed;
  std::sort(sorted.begin(), sorted.end());

  nlohmann::ordered_json out;
  out["implementation"] = "lyre " + backend->name() + " " + backend->api().version;
  out["device"] = info.name ? info.name : "";
  out["config"] = o.config_path;
  out["threads"] = o.threads;
  out["model_options"] = model_options;
  out["batch"] = o.batch;
  out["seq"] = o.seq;
  out["warmup_steps"] = o.warmup;
  out["timed_steps"] = o.steps;
  out["num_parameters"] = stats.num_parameters_total;
  out["tokens_per_s"] = tokens_per_s;
  out["s_per_step"] = seconds / static_cast<double>(o.steps);
  out["s_per_step_min"] = sorted.front();
  out["s_per_step_median"] = sorted[sorted.size() / 2];
  out["s_per_step_max"] = sorted.back();
  out["train_flops_per_token"] = stats.train_flops_per_token;
  out["peak_flops"] = info.peak_flops;
  out["mfu"] = info.peak_flops > 0 ? stats.train_flops_per_token * tokens_per_s / info.peak_flops : 0.0;
  out["achieved_flops"] = stats.train_flops_per_token * tokens_per_s;
  out["peak_rss_bytes"] = peak_resident_bytes();
  out["rss_baseline_bytes"] = rss_baseline;  // after loading the plugins, before the model
  out["backend_memory_peak_bytes"] = info.memory_peak_bytes;
  out["backend_memory_total_bytes"] = info.memory_total_bytes;
  out["loss_first"] = losses.front();
  out["loss_last"] = losses.back();
  out["grad_norm_first"] = grad_norms.front();
  out["step_seconds"] = step_seconds;  // warmup steps included, first
  out["losses"] = losses;
  std::cout << out.dump(2) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_options(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "lyre-bench-train: " << e.what() << "\n";
    return 1;
  }
}
