// lyre-export-logp: the per-token log-probs lyre's CPU backend computes for a Hugging Face model
// directory, read through import_hf_weights, printed as JSON for bench/check_export_torch.py.
// With --export-to, the imported model is first exported there (export_model), so the script can
// load lyre's export in PyTorch and compare.
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/batch.hpp"
#include "io/hf_model.hpp"
#include "plugin/handles.hpp"
#include "plugin/plugin_host.hpp"

namespace {

constexpr const char* kUsage = R"(usage: lyre-export-logp MODEL_DIR --tokens ID,ID,... [options]

Prints {"logp": [...], "unused": [...]}: logp[i] = log p(token i+1 | tokens 0..i) under the model.

  --plugin-dir DIR   where liblyre-*.so live (default: $LYRE_PLUGIN_PATH, then the install dir)
  --threads N        backend threads (default 2)
  --export-to OUT    also export the imported model to OUT (a new directory)
  --dtype D          the export's dtype: auto, bf16, fp16, fp32 (default auto)
  --max-shard-size S the export's largest shard (default 5GB)
)";

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) ids.push_back(static_cast<int32_t>(std::stol(item)));
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string dir, plugin_dir, tokens_text, export_to, dtype = "auto";
  int threads = 2;
  uint64_t max_shard_bytes = lyre::ExportOptions{}.max_shard_bytes;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool has_value = i + 1 < args.size();
    if (a == "--tokens" && has_value) tokens_text = args[++i];
    else if (a == "--plugin-dir" && has_value) plugin_dir = args[++i];
    else if (a == "--threads" && has_value) threads = std::atoi(args[++i].c_str());
    else if (a == "--export-to" && has_value) export_to = args[++i];
    else if (a == "--dtype" && has_value) dtype = args[++i];
    else if (a == "--max-shard-size" && has_value) max_shard_bytes = lyre::parse_byte_size(args[++i]);
    else if (dir.empty() && a.rfind("--", 0) != 0) dir = a;
    else {
      std::cerr << "lyre-export-logp: unexpected argument \"" << a << "\"\n\n" << kUsage;
      return 2;
    }
  }
  if (dir.empty() || tokens_text.empty()) {
    std::cerr << kUsage;
    return 2;
  }
  try {
    const std::vector<int32_t> ids = parse_ids(tokens_text);
    if (ids.size() < 2) throw std::invalid_argument("--tokens: need at least 2 ids");
    const std::vector<std::string> dirs =
        plugin_dir.empty() ? lyre::PluginRegistry::default_search_dirs() : std::vector<std::string>{plugin_dir};
    lyre::PluginRegistry registry = lyre::PluginRegistry::discover(dirs);
    const std::string config = lyre::read_hf_config(dir);
    lyre::Model model(registry.backend("cpu"), config, nlohmann::json{{"threads", threads}}.dump());
    const lyre::ImportReport imported = lyre::import_hf_weights(model, dir);
    if (!export_to.empty()) {
      lyre::ExportOptions options;
      options.out_dir = export_to;
      options.dtype = dtype;
      options.max_shard_bytes = max_shard_bytes;
      lyre::export_model(model, config, options);
    }

    const int64_t T = static_cast<int64_t>(ids.size()) - 1;
    lyre::Batch batch(1, T);
    batch.num_samples = 1;
    for (int64_t t = 0; t < T; ++t) {
      batch.tokens[t] = ids[t];
      batch.targets[t] = ids[t + 1];
      batch.positions[t] = static_cast<int32_t>(t);
      batch.segment_ids[t] = 1;
      batch.loss_mask[t] = 1;
    }
    std::vector<float> logp;
    model.forward(batch, LYRE_FORWARD_NO_GRAD, logp);
    std::cout << nlohmann::json{{"logp", logp}, {"unused", imported.unused}}.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "lyre-export-logp: " << e.what() << "\n";
    return 1;
  }
}
