// A small real setup for Trainer tests: the built CPU backend and SFT objective, a tiny Llama,
// and JSONL data written to a temporary folder.
#pragma once

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>

#include <unistd.h>

#include "data/byte_tokenizer.hpp"
#include "data/dataloader.hpp"
#include "plugin/handles.hpp"
#include "plugin/plugin_host.hpp"
#include "train/init_weights.hpp"
#include "train/trainer.hpp"

namespace lyre::test {

inline const char* kTinyLlama = R"({
  "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 259,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "hidden_act": "silu", "tie_word_embeddings": false})";

inline std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("lyre-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

// A JSONL file as a Dataset, tokenized by the byte tokenizer.
inline std::shared_ptr<const Dataset> open_jsonl(const std::string& path, int64_t seq_len) {
  DatasetOptions o;
  o.source.path = path;
  o.seq_len = seq_len;
  return open_dataset(o, std::make_shared<ByteTokenizer>(), nullptr);
}

// `count` reversal records ("abc=" -> "cba"), deterministic.
inline std::string write_reversal_jsonl(const std::string& dir, const std::string& name, int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string path = dir + "/" + name;
  std::ofstream out(path);
  for (int i = 0; i < count; ++i) {
    std::string w;
    for (int n = 3 + static_cast<int>(rng() % 4); n > 0; --n) w += static_cast<char>('a' + rng() % 26);
    out << "{\"prompt\": \"" << w << "=\", \"completion\": \"" << std::string(w.rbegin(), w.rend()) << "\"}\n";
  }
  return path;
}

struct Setup {
  PluginRegistry registry = PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Objective> objective;
  std::shared_ptr<Dataloader> train, eval;

  explicit Setup(int64_t batch_size = 4, int train_records = 32, int eval_records = 0, bool shuffle = true,
                 uint64_t seed = 7, const std::string& optimizer_json = R"({"type": "adamw"})") {
    std::string dir = temp_dir("trainer");
    model = std::make_unique<Model>(registry.backend("cpu"), kTinyLlama, R"({"threads": 2})");
    init_weights(*model, seed, 0.02);
    optimizer = std::make_unique<Optimizer>(*model, optimizer_json);
    objective = std::make_unique<Objective>(registry.objective("sft"), R"({"mode": "completion"})");
    ByteTokenizer tok;
    DataloaderOptions o;
    o.per_device_batch_size = batch_size;
    o.seq_len = 12;
    o.shuffle = shuffle;
    o.seed = seed;
    o.pad_id = tok.pad_id();
    auto train_data = open_jsonl(write_reversal_jsonl(dir, "train.jsonl", train_records, 1), o.seq_len);
    train = std::make_shared<Dataloader>(train_data, o);
    if (eval_records > 0) {
      o.shuffle = false;
      o.drop_last = false;
      auto eval_data = open_jsonl(write_reversal_jsonl(dir, "eval.jsonl", eval_records, 2), o.seq_len);
      eval = std::make_shared<Dataloader>(eval_data, o);
    }
  }

  Trainer trainer(TrainerOptions options, bool with_eval = true) {
    return Trainer(*model, *optimizer, *objective, *train, with_eval ? eval.get() : nullptr, options);
  }
};

}  // namespace lyre::test
