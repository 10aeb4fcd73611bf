// The JSON configuration of `lyre train`: it mirrors the Trainer's parameters, plus what the
// Trainer is handed ready-made in Kithara (model, optimizer, data loaders, objective).
// Every key is documented in README.md ("Config reference"). Unknown keys are errors.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/trainer.hpp"

namespace lyre {

struct DataloaderConfig {
  std::string path;  // JSONL, text, or token file; resolved against the config file's folder
  std::string format = "auto";  // jsonl | text | tokens | auto (by extension)
  std::map<std::string, std::string> column_mapping;
  bool skip_invalid = false;
  int64_t per_device_batch_size = 8;
  int64_t seq_len = 0;
  bool shuffle = true;
  bool drop_last = true;
  bool packing = false;
  int64_t pack_window = 64;
  std::string overlong = "truncate";  // truncate | drop | split
  std::string token_dtype;            // token files: uint16 | uint32
  bool document_masking = true;       // token files: an EOS starts a new document
};

struct ExactMatchConfig {
  std::string path;
  int64_t max_samples = 200;
  int32_t max_new_tokens = 32;
  int64_t batch_size = 64;
  bool at_start = true;  // also measure before training, to show the change
};

// "checkpointer": the plugin's own keys pass through; the host keeps when to save and resume.
struct CheckpointerConfig {
  std::string plugin = "safetensors";
  nlohmann::json plugin_options = nlohmann::json::object();  // save_dir (absolute), max_to_keep, async
  std::string save_dir;
};

// "export": a Hugging Face directory written from the trained model at the end.
struct ExportConfig {
  std::string dir;
  std::string dtype = "auto";
  std::string max_shard_size = "5GB";
};

struct RunConfig {
  std::string source;  // the config file, for messages
  std::string backend = "auto";
  nlohmann::json backend_options = nlohmann::json::object();
  nlohmann::json raw = nlohmann::json::object();  // the config as given (after --set), for checkpoints
  std::string model_config_text;   // the HF config.json text
  std::string model_config_source;  // where it came from
  std::string model_path;           // a Hugging Face directory to import weights from; "" = init
  std::string tokenizer = "byte";   // "byte", or a model directory / tokenizer file
  std::string chat_template;        // a built-in template's name; empty: from tokenizer_config.json
  uint64_t init_seed = 0;
  double init_std = 0.02;
  std::string objective_name = "sft";
  nlohmann::json objective_options = nlohmann::json::object();
  nlohmann::json optimizer_options = nlohmann::json::object();  // passed to the backend
  DataloaderConfig train;
  std::optional<DataloaderConfig> eval;
  std::optional<ExactMatchConfig> exact_match;
  TrainerOptions trainer;  // tensorboard_dir, profiler and the checkpoint schedule included
  std::optional<CheckpointerConfig> checkpointer;
  std::optional<ExportConfig> export_model;
  uint64_t seed = 0;
};

// Reads and checks a config: `config` is the parsed file (after --set overrides), `source` its
// path (relative paths inside are resolved against its folder). Throws ConfigError.
RunConfig parse_run_config(const nlohmann::json& config, const std::string& source);

struct RunSummary {
  TrainResult train;
  std::string exported_dir;  // "" = no export
  std::optional<double> exact_match_before, exact_match_after;  // accuracy in [0, 1]
};

// Loads the plugins (from `plugin_dirs`, default discovery when empty), builds everything and
// trains, logging as it goes.
RunSummary run_training(const RunConfig& config, const std::vector<std::string>& plugin_dirs = {});

}  // namespace lyre
