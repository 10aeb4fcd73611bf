// The `lyre` command: train | export | plugins | version. (eval, generate and doctor arrive with
// later issues.)
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "cli/export_command.hpp"
#include "cli/plugins_command.hpp"
#include "plugin/error.hpp"
#include "train/run_config.hpp"
#include "util/config_reader.hpp"

namespace {

constexpr const char* kUsage = R"(usage: lyre <command> [options]

commands:
  train CONFIG.json [--set KEY=VALUE ...]   train as the config says; --set overrides a key
                                            (dotted path, JSON value: --set steps=100
                                            --set optimizer.learning_rate=3e-4)
  export CHECKPOINT_DIR --out DIR           write a checkpoint (a step_* directory, or a save_dir:
         [--dtype auto|bf16|fp16|fp32]      its newest) as a Hugging Face model directory;
         [--max-shard-size 5GB]             dtype auto: the model config's torch_dtype
  plugins                                   list every plugin found, and why one cannot run
  version                                   print the version and the plugin ABI

environment:
  LYRE_PLUGIN_PATH   ':'-separated folders searched for liblyre-*.so before the install dir
)";

int train_command(const std::vector<std::string>& args) {
  if (args.empty() || args[0].rfind("--", 0) == 0) {
    std::cerr << "lyre train: missing CONFIG.json\n\n" << kUsage;
    return 2;
  }
  const std::string path = args[0];
  nlohmann::json config = lyre::read_json_file(path);
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--set" && i + 1 < args.size()) {
      lyre::apply_override(config, args[++i]);
    } else if (args[i].rfind("--set=", 0) == 0) {
      lyre::apply_override(config, args[i].substr(6));
    } else {
      std::cerr << "lyre train: unexpected argument \"" << args[i] << "\"\n\n" << kUsage;
      return 2;
    }
  }
  lyre::run_training(lyre::parse_run_config(config, path));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_pattern("%H:%M:%S %^%l%$ %v");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "train") return train_command(args);
    if (command == "export") return lyre::run_export_command(args, std::cout, std::cerr);
    if (command == "plugins") return lyre::run_plugins_command(args);
    if (command == "version" || command == "--version") {
      std::cout << "lyre " << LYRE_VERSION << " (plugin ABI " << LYRE_ABI_MAJOR << "." << LYRE_ABI_MINOR << ")\n";
      return 0;
    }
    std::cerr << "lyre: unknown command \"" << command << "\"\n\n" << kUsage;
    return 2;
  } catch (const lyre::ConfigError& e) {
    spdlog::error("config error: {}", e.what());
    return 2;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
