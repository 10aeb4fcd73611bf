// Hugging Face model directories: directories written by an independent stdlib-only Python writer
// (hf_reference.py) import into the CPU backend and export back bit for bit; exports pass the
// same script's checker; every import, index and export error with its exact text; `lyre export`
// on hand-made checkpoints.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint_layout.hpp"
#include "io/hf_model.hpp"
#include "io/safetensors.hpp"
#include "plugin/handles.hpp"
#include "plugin/plugin_host.hpp"

namespace fs = std::filesystem;
using lyre::ExportOptions;
using lyre::ExportTensor;
using lyre::HfWeights;
using lyre::Model;
using lyre::safetensors::Dtype;
using nlohmann::json;

namespace {

// tests/trainer/fixture.hpp's tiny Llama: GQA (4 query heads, 2 KV heads), 21 tensors.
const char* kTinyLlama = R"({
  "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 259,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "hidden_act": "silu", "tie_word_embeddings": false})";

std::string tiny_llama(bool tied) {
  json config = json::parse(kTinyLlama);
  config["tie_word_embeddings"] = tied;
  return config.dump();
}

// A scratch directory removed with everything in it when the test ends.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "lyre-hf-model-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string path(const std::string& name) const { return (path_ / name).string(); }
  std::string root() const { return path_.string(); }

 private:
  fs::path path_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Command {
  int status = -1;
  std::string output;  // stdout and stderr together
};

Command run(const std::string& command) {
  Command result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) result.output.append(buf, n);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

const std::string kScript = std::string(LYRE_SOURCE_DIR) + "/tests/io/hf_reference.py";

// The independent writer: a tiny Llama directory of the given variant (see hf_reference.py).
std::string write_reference(const ScratchDir& scratch, const std::string& name, const std::string& variant,
                            const std::string& config = kTinyLlama) {
  const std::string config_path = scratch.path(name + ".config.json");
  write_text(config_path, config);
  const std::string dir = scratch.path(name);
  const Command c = run("python3 " + shell_quote(kScript) + " write " + shell_quote(dir) + " --config " +
                        shell_quote(config_path) + " --variant " + variant);
  INFO(c.output);
  REQUIRE(c.status == 0);
  return dir;
}

Command reference_check(const std::string& dir, const std::string& source = "") {
  return run("python3 " + shell_quote(kScript) + " check " + shell_quote(dir) +
             (source.empty() ? "" : " --source " + shell_quote(source)));
}

std::shared_ptr<lyre::LoadedPlugin> cpu_backend() {
  static lyre::PluginRegistry registry = lyre::PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  return registry.backend("cpu");
}

std::unique_ptr<Model> make_model(const std::string& config) {
  return std::make_unique<Model>(cpu_backend(), config, R"({"threads": 1})");
}

// Every tensor of `exported` has the dtype, shape and bytes of the same tensor in `source`, and
// `exported` has exactly `count` tensors.
void require_same_tensors(const std::string& exported, const std::string& source, size_t count) {
  const HfWeights out = HfWeights::open(exported), in = HfWeights::open(source);
  REQUIRE(out.tensors().size() == count);
  for (const auto& [name, e] : out.tensors()) {
    INFO(name);
    const HfWeights::Entry* s = in.find(name);
    REQUIRE(s != nullptr);
    REQUIRE(e.info->dtype == s->info->dtype);
    REQUIRE(e.info->shape == s->info->shape);
    REQUIRE(e.info->nbytes() == s->info->nbytes());
    REQUIRE(std::memcmp(e.file->data(*e.info), s->file->data(*s->info), e.info->nbytes()) == 0);
  }
}

// A tensor of a hand-made directory: `fill` gives element i (converted to the dtype).
struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  Dtype dtype = Dtype::F32;
  float base = 0.0f;  // element i is base + i * 1e-3
};

std::vector<Spec> specs_of(const Model& model, float base = 0.0f) {
  std::vector<Spec> specs;
  for (const auto& p : model.parameters()) specs.push_back({p.name, p.shape, Dtype::F32, base});
  return specs;
}

// Writes `specs` into one safetensors file at `path`.
void write_specs(const std::string& path, const std::vector<Spec>& specs) {
  std::vector<std::vector<char>> storage;
  std::vector<lyre::safetensors::TensorRef> refs;
  for (const Spec& s : specs) {
    uint64_t n = 1;
    for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
    std::vector<float> values(n);
    for (uint64_t i = 0; i < n; ++i) values[i] = s.base + static_cast<float>(i) * 1e-3f;
    storage.emplace_back(n * lyre::safetensors::dtype_size(s.dtype));
    if (s.dtype == Dtype::F32 || s.dtype == Dtype::BF16 || s.dtype == Dtype::F16) {
      lyre::safetensors::convert(Dtype::F32, values.data(), s.dtype, storage.back().data(), n);
    }
    refs.push_back({s.name, s.dtype, s.shape, storage.back().data()});
  }
  lyre::safetensors::write_file(path, refs, {{"format", "pt"}}, /*durable=*/false);
}

// A directory of config.json and model.safetensors holding `specs`.
std::string write_dir(const std::string& dir, const std::vector<Spec>& specs, const std::string& config = kTinyLlama) {
  fs::create_directories(dir);
  write_text(dir + "/config.json", config);
  write_specs(dir + "/model.safetensors", specs);
  return dir;
}

std::vector<Spec> without(std::vector<Spec> specs, const std::string& name) {
  specs.erase(std::remove_if(specs.begin(), specs.end(), [&](const Spec& s) { return s.name == name; }), specs.end());
  return specs;
}

std::vector<Spec> changed(std::vector<Spec> specs, const std::string& name, const std::function<void(Spec&)>& edit) {
  for (Spec& s : specs) {
    if (s.name == name) edit(s);
  }
  return specs;
}

std::vector<std::vector<float>> read_all(const Model& model) {
  std::vector<std::vector<float>> values;
  for (const auto& p : model.parameters()) values.push_back(model.read(p.index));
  return values;
}

std::vector<float> tensor_as_floats(const HfWeights& w, const std::string& name) {
  const HfWeights::Entry* e = w.find(name);
  if (e == nullptr) throw std::runtime_error("no tensor " + name);
  std::vector<float> values(e->info->numel());
  lyre::safetensors::convert(e->info->dtype, e->file->data(*e->info), Dtype::F32, values.data(), values.size());
  return values;
}

}  // namespace

// ---- round trips ----

TEST_CASE("a sharded bf16 directory imports into the CPU backend and exports back bit for bit") {
  ScratchDir scratch;
  const std::string source = write_reference(scratch, "source", "bf16-sharded");
  const std::string config = lyre::read_hf_config(source);
  auto model = make_model(config);
  const lyre::ImportReport imported = lyre::import_hf_weights(*model, source);
  CHECK(imported.loaded == 21);
  CHECK(imported.unused.empty());  // the rotary inv_freq buffer is skipped without a word

  ExportOptions options;
  options.out_dir = scratch.path("out");
  options.dtype = "auto";  // the source's torch_dtype: bfloat16
  options.max_shard_bytes = 30'000;
  options.tokenizer_source = source;
  const lyre::ExportReport report = lyre::export_model(*model, config, options);
  CHECK(report.dtype == Dtype::BF16);
  CHECK(report.tensors == 21);
  CHECK(report.tensor_bytes == 35'168 * 2);
  CHECK(report.shard_files == std::vector<std::string>{"model-00001-of-00003.safetensors",
                                                       "model-00002-of-00003.safetensors",
                                                       "model-00003-of-00003.safetensors"});
  CHECK(report.tokenizer_files ==
        std::vector<std::string>{"tokenizer_config.json", "special_tokens_map.json", "generation_config.json"});
  for (const auto& name : report.tokenizer_files) {
    CHECK(read_bytes(options.out_dir + "/" + name) == read_bytes(source + "/" + name));
  }

  require_same_tensors(options.out_dir, source, 21);
  const Command check = reference_check(options.out_dir, source);
  INFO(check.output);
  CHECK(check.status == 0);
  CHECK(check.output == "ok: 21 tensors in 3 shard(s), bfloat16\n");
}

TEST_CASE("a single-file fp32 directory imports and exports back bit for bit") {
  ScratchDir scratch;
  const std::string source = write_reference(scratch, "source", "fp32-single");
  const std::string config = lyre::read_hf_config(source);
  auto model = make_model(config);
  CHECK(lyre::import_hf_weights(*model, source).loaded == 21);

  ExportOptions options;
  options.out_dir = scratch.path("out");
  options.dtype = "fp32";
  const lyre::ExportReport report = lyre::export_model(*model, config, options);
  CHECK(report.shard_files == std::vector<std::string>{"model.safetensors"});
  CHECK_FALSE(fs::exists(options.out_dir + "/model.safetensors.index.json"));
  CHECK(report.tokenizer_files.empty());  // no tokenizer_source given
  require_same_tensors(options.out_dir, source, 21);
  const Command check = reference_check(options.out_dir, source);
  INFO(check.output);
  CHECK(check.status == 0);
}

TEST_CASE("with tied embeddings no lm_head.weight is read or written") {
  ScratchDir scratch;
  const std::string source = write_reference(scratch, "source", "tied");
  const std::string config = lyre::read_hf_config(source);
  auto model = make_model(config);
  CHECK(lyre::import_hf_weights(*model, source).loaded == 20);

  ExportOptions options;
  options.out_dir = scratch.path("out");
  lyre::export_model(*model, config, options);
  const HfWeights out = HfWeights::open(options.out_dir);
  CHECK(out.find("lm_head.weight") == nullptr);
  require_same_tensors(options.out_dir, source, 20);
  const json written = json::parse(read_bytes(options.out_dir + "/config.json"));
  CHECK(written["tie_word_embeddings"] == true);
  const Command check = reference_check(options.out_dir, source);
  INFO(check.output);
  CHECK(check.status == 0);
}

TEST_CASE("an fp32 model exported as bf16 or fp16 is rounded to nearest even, as the reference converts it") {
  ScratchDir scratch;
  const std::string source = write_reference(scratch, "source", "fp32-single");
  const std::string config = lyre::read_hf_config(source);
  auto model = make_model(config);
  lyre::import_hf_weights(*model, source);
  for (const char* dtype : {"bf16", "fp16"}) {
    INFO(dtype);
    ExportOptions options;
    options.out_dir = scratch.path(std::string("out-") + dtype);
    options.dtype = dtype;
    lyre::export_model(*model, config, options);
    const json written = json::parse(read_bytes(options.out_dir + "/config.json"));
    CHECK(written["torch_dtype"] == (std::string(dtype) == "bf16" ? "bfloat16" : "float16"));
    // The checker converts the fp32 source itself and compares bytes.
    const Command check = reference_check(options.out_dir, source);
    INFO(check.output);
    CHECK(check.status == 0);
  }
}

TEST_CASE("the written config keeps every source key, sets torch_dtype and adds the architecture class") {
  ScratchDir scratch;
  auto model = make_model(kTinyLlama);
  ExportOptions options;
  options.out_dir = scratch.path("out");
  options.dtype = "bf16";
  lyre::export_model(*model, kTinyLlama, options);
  json expected = json::parse(kTinyLlama);
  expected["torch_dtype"] = "bfloat16";
  expected["architectures"] = {"LlamaForCausalLM"};
  CHECK(json::parse(read_bytes(options.out_dir + "/config.json")) == expected);
}

// ---- sharding ----

TEST_CASE("export starts a shard when the next tensor would overflow it, and a tensor over the limit gets its own") {
  ScratchDir scratch;
  std::vector<float> data(100, 0.5f);
  // 100, 300, 52 and 48 bytes of float32 against a 120-byte limit.
  const std::vector<ExportTensor> tensors = {
      {"a", {25}, data.data()}, {"b", {5, 15}, data.data()}, {"c", {13}, data.data()}, {"d", {12}, data.data()}};
  ExportOptions options;
  options.out_dir = scratch.path("out");
  options.max_shard_bytes = 120;
  const lyre::ExportReport report = lyre::export_hf_model(R"({"model_type": "llama"})", tensors, options);
  CHECK(report.shard_files == std::vector<std::string>{"model-00001-of-00003.safetensors",
                                                       "model-00002-of-00003.safetensors",
                                                       "model-00003-of-00003.safetensors"});
  const json index = json::parse(read_bytes(options.out_dir + "/model.safetensors.index.json"));
  CHECK(index == json::parse(R"({"metadata": {"total_size": 500}, "weight_map": {
      "a": "model-00001-of-00003.safetensors", "b": "model-00002-of-00003.safetensors",
      "c": "model-00003-of-00003.safetensors", "d": "model-00003-of-00003.safetensors"}})"));
  const Command check = reference_check(options.out_dir);
  INFO(check.output);
  CHECK(check.status == 0);
  CHECK(check.output == "ok: 4 tensors in 3 shard(s), float32\n");
}

TEST_CASE("the reference checker fails on wrong offsets, a wrong total_size and a torch_dtype the shards contradict") {
  ScratchDir scratch;
  std::vector<float> data(100, 0.5f);
  const std::vector<ExportTensor> tensors = {{"a", {25}, data.data()}, {"b", {25}, data.data()}, {"c", {25}, data.data()}};
  ExportOptions options;
  options.out_dir = scratch.path("out");
  options.max_shard_bytes = 200;
  lyre::export_hf_model(R"({"model_type": "llama"})", tensors, options);
  const std::string shard = options.out_dir + "/model-00001-of-00002.safetensors";
  REQUIRE(reference_check(options.out_dir).status == 0);

  SECTION("a shard whose second tensor starts past the first's end") {
    std::string bytes = read_bytes(shard);
    const std::string from = "\"data_offsets\":[100,200]", to = "\"data_offsets\":[104,204]";
    const size_t at = bytes.find(from);
    REQUIRE(at != std::string::npos);
    bytes.replace(at, from.size(), to);  // same length: the header length stays right
    write_text(shard, bytes);
    const Command c = reference_check(options.out_dir);
    CHECK(c.status == 1);
    CHECK(c.output == "FAIL: model-00001-of-00002.safetensors: b: data_offsets [104, 204] outside the 200 data bytes\n");
  }
  SECTION("an index whose total_size is not the tensors' bytes") {
    const std::string index_path = options.out_dir + "/model.safetensors.index.json";
    json index = json::parse(read_bytes(index_path));
    index["metadata"]["total_size"] = 301;
    write_text(index_path, index.dump());
    const Command c = reference_check(options.out_dir);
    CHECK(c.status == 1);
    CHECK(c.output == "FAIL: index metadata.total_size is 301, the tensors hold 300 bytes\n");
  }
  SECTION("a config whose torch_dtype disagrees with the shards") {
    write_text(options.out_dir + "/config.json", R"({"model_type": "llama", "torch_dtype": "bfloat16"})");
    const Command c = reference_check(options.out_dir);
    CHECK(c.status == 1);
    CHECK(c.output == "FAIL: tensor a is F32, config.json torch_dtype says bfloat16\n");
  }
}

// ---- import ----

TEST_CASE("import names the tensor and the file for a missing tensor, a wrong shape and an unsupported dtype") {
  ScratchDir scratch;
  auto model = make_model(kTinyLlama);
  const std::vector<Spec> all = specs_of(*model);

  SECTION("missing") {
    const std::string dir = write_dir(scratch.path("missing"), without(all, "model.norm.weight"));
    CHECK_THROWS_WITH(lyre::import_hf_weights(*model, dir),
                      dir + "/model.safetensors: no tensor \"model.norm.weight\" (the model needs it; "
                            "\"norm.weight\" is absent too)");
  }
  SECTION("shape") {
    const std::string dir = write_dir(scratch.path("shape"), changed(all, "model.layers.1.mlp.down_proj.weight",
                                                                     [](Spec& s) { s.shape = {64, 32}; }));
    CHECK_THROWS_WITH(lyre::import_hf_weights(*model, dir),
                      dir + "/model.safetensors: tensor \"model.layers.1.mlp.down_proj.weight\" has shape [64, 32], "
                            "the model's parameter \"model.layers.1.mlp.down_proj.weight\" has [32, 64]");
  }
  SECTION("dtype") {
    const std::string dir = write_dir(scratch.path("dtype"), changed(all, "model.layers.0.self_attn.k_proj.weight",
                                                                     [](Spec& s) { s.dtype = Dtype::I32; }));
    CHECK_THROWS_WITH(lyre::import_hf_weights(*model, dir),
                      dir + "/model.safetensors: tensor \"model.layers.0.self_attn.k_proj.weight\" has dtype I32; "
                            "lyre loads F32, BF16 and F16 weights");
  }
}

TEST_CASE("a failed import leaves the model's weights as they were") {
  ScratchDir scratch;
  auto model = make_model(kTinyLlama);
  const std::vector<Spec> all = specs_of(*model, 0.25f);
  lyre::import_hf_weights(*model, write_dir(scratch.path("good"), all));
  const auto before = read_all(*model);
  // Only the last parameter is wrong; every earlier one would load.
  const std::vector<Spec> bad = changed(specs_of(*model, -1.0f), "lm_head.weight", [](Spec& s) { s.shape = {258, 32}; });
  CHECK_THROWS(lyre::import_hf_weights(*model, write_dir(scratch.path("bad"), bad)));
  CHECK(read_all(*model) == before);
}

TEST_CASE("import finds \"model.X\" as \"X\", takes F16 and BF16 as they are, and reports tensors nothing took") {
  ScratchDir scratch;
  auto model = make_model(kTinyLlama);
  std::vector<Spec> specs;
  for (Spec s : specs_of(*model, 0.5f)) {
    if (s.name.rfind("model.", 0) == 0) s.name = s.name.substr(6);  // a bare LlamaModel's names
    if (s.name == "embed_tokens.weight") s.dtype = Dtype::F16;
    if (s.name == "norm.weight") s.dtype = Dtype::BF16;
    specs.push_back(s);
  }
  specs.push_back({"layers.0.self_attn.rotary_emb.inv_freq", {4}, Dtype::F32, 1.0f});
  specs.push_back({"score.weight", {2, 32}, Dtype::F32, 0.0f});
  const std::string dir = write_dir(scratch.path("bare"), specs);
  const lyre::ImportReport report = lyre::import_hf_weights(*model, dir);
  CHECK(report.loaded == 21);
  CHECK(report.unused == std::vector<std::string>{"score.weight"});
  const HfWeights w = HfWeights::open(dir);
  CHECK(model->read(0) == tensor_as_floats(w, "embed_tokens.weight"));  // F16 widened exactly
  const size_t norm = model->parameters().size() - 2;
  REQUIRE(model->parameters()[norm].name == "model.norm.weight");
  CHECK(model->read(norm) == tensor_as_floats(w, "norm.weight"));
}

TEST_CASE("a tied model reports an lm_head.weight of the directory as unused") {
  ScratchDir scratch;
  auto untied = make_model(kTinyLlama);
  auto tied = make_model(tiny_llama(true));
  const lyre::ImportReport report = lyre::import_hf_weights(*tied, write_dir(scratch.path("dir"), specs_of(*untied)));
  CHECK(report.loaded == 20);
  CHECK(report.unused == std::vector<std::string>{"lm_head.weight"});
}

TEST_CASE("read_hf_config refuses a model_type no backend builds, naming config.json") {
  ScratchDir scratch;
  fs::create_directories(scratch.path("m"));
  const std::string path = scratch.path("m") + "/config.json";
  write_text(path, R"({"model_type": "gpt2", "n_embd": 768})");
  CHECK_THROWS_WITH(lyre::read_hf_config(scratch.path("m")),
                    path + ": model_type \"gpt2\" is not supported (supported: \"llama\")");
  write_text(path, R"({"hidden_size": 32})");
  CHECK_THROWS_WITH(lyre::read_hf_config(scratch.path("m")), path + ": missing key \"model_type\" (supported: \"llama\")");
  write_text(path, R"(["llama"])");
  CHECK_THROWS_WITH(lyre::read_hf_config(scratch.path("m")), path + ": expected a JSON object at the top level");
  write_text(path, kTinyLlama);
  CHECK(lyre::read_hf_config(scratch.path("m")) == kTinyLlama);
}

TEST_CASE("a truncated shard or offsets outside the file fail with the safetensors reader's message and the path") {
  ScratchDir scratch;
  SECTION("truncated") {
    const std::string dir = write_reference(scratch, "cut", "fp32-single");
    const std::string file = dir + "/model.safetensors";
    fs::resize_file(file, fs::file_size(file) - 6);
    try {
      HfWeights::open(dir);
      FAIL("a truncated file opened");
    } catch (const lyre::safetensors::FormatError& e) {
      CHECK(std::string(e.what()) ==
            file + ": tensor \"lm_head.weight\": data_offsets [107520, 140672] run past the end of the data "
                   "section (140666 bytes); the file may be truncated");
    }
  }
  SECTION("offsets outside the file") {
    fs::create_directories(scratch.path("far"));
    write_text(scratch.path("far") + "/config.json", kTinyLlama);
    const std::string header = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})";
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
    const std::string file = scratch.path("far") + "/model.safetensors";
    write_text(file, bytes + header + std::string(16, '\0'));
    CHECK_THROWS_WITH(HfWeights::open(scratch.path("far")),
                      file + ": tensor \"w\": data_offsets [16, 32] run past the end of the data section "
                             "(16 bytes); the file may be truncated");
  }
}

TEST_CASE("an index is checked against its shards, each error naming the index and the shard or tensor") {
  ScratchDir scratch;
  auto model = make_model(kTinyLlama);
  const std::string dir = scratch.path("m");
  fs::create_directories(dir);
  write_text(dir + "/config.json", kTinyLlama);
  const std::vector<Spec> all = specs_of(*model);
  write_specs(dir + "/model-00001-of-00002.safetensors", std::vector<Spec>(all.begin(), all.begin() + 10));
  write_specs(dir + "/model-00002-of-00002.safetensors", std::vector<Spec>(all.begin() + 10, all.end()));
  json weight_map = json::object();
  for (size_t i = 0; i < all.size(); ++i) weight_map[all[i].name] = i < 10 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  const auto write_index = [&](const json& map) {
    write_text(index_path, json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump());
  };
  write_index(weight_map);
  REQUIRE(lyre::import_hf_weights(*model, dir).loaded == 21);

  SECTION("a shard the index names does not exist") {
    json map = weight_map;
    map["model.norm.weight"] = "model-00003-of-00003.safetensors";
    write_index(map);
    CHECK_THROWS_WITH(HfWeights::open(dir), index_path + ": shard model-00003-of-00003.safetensors does not exist (" + dir +
                                                "/model-00003-of-00003.safetensors)");
  }
  SECTION("a tensor the index puts in a shard that lacks it") {
    json map = weight_map;
    map["model.layers.9.mlp.up_proj.weight"] = "model-00002-of-00002.safetensors";
    write_index(map);
    CHECK_THROWS_WITH(HfWeights::open(dir), index_path + ": weight_map puts tensor \"model.layers.9.mlp.up_proj.weight\" "
                                                         "in model-00002-of-00002.safetensors, which has no such tensor");
  }
  SECTION("a tensor in two shards") {
    std::vector<Spec> second(all.begin() + 10, all.end());
    second.push_back(all[0]);
    write_specs(dir + "/model-00002-of-00002.safetensors", second);
    CHECK_THROWS_WITH(HfWeights::open(dir), index_path + ": tensor \"model.embed_tokens.weight\" is in both "
                                                         "model-00002-of-00002.safetensors and model-00001-of-00002.safetensors "
                                                         "(weight_map names model-00001-of-00002.safetensors)");
  }
  SECTION("a shard tensor the weight_map does not list") {
    json map = weight_map;
    map.erase("model.norm.weight");
    write_index(map);
    CHECK_THROWS_WITH(HfWeights::open(dir), index_path + ": shard model-00002-of-00002.safetensors holds tensor "
                                                         "\"model.norm.weight\", which weight_map does not list");
  }
  SECTION("a weight_map that is not an object of file names") {
    write_index(json::array());
    CHECK_THROWS_WITH(HfWeights::open(dir), index_path + ": \"weight_map\" must be an object of tensor name -> shard file name");
    json map = weight_map;
    map["model.norm.weight"] = 2;
    write_index(map);
    CHECK_THROWS_WITH(HfWeights::open(dir), index_path + ": weight_map[\"model.norm.weight\"] must be a file name string, got 2");
    map["model.norm.weight"] = "../outside.safetensors";
    write_index(map);
    CHECK_THROWS_WITH(HfWeights::open(dir), index_path + ": weight_map[\"model.norm.weight\"] is \"../outside.safetensors\", "
                                                         "which is not a file name in the directory");
  }
  SECTION("an index that is not JSON") {
    write_text(index_path, "{\"weight_map\": ");
    CHECK_THROWS_WITH(HfWeights::open(dir), Catch::StartsWith(index_path + ": not valid JSON: "));
  }
}

TEST_CASE("a directory without safetensors weights says what it looked for") {
  ScratchDir scratch;
  fs::create_directories(scratch.path("bin"));
  write_text(scratch.path("bin") + "/pytorch_model.bin", "not read");
  CHECK_THROWS_WITH(HfWeights::open(scratch.path("bin")),
                    scratch.path("bin") + ": no model.safetensors or model.safetensors.index.json (pytorch_model.bin is "
                                          "not read: save the model with safe_serialization=True)");
  CHECK_THROWS_WITH(HfWeights::open(scratch.path("nothing")), scratch.path("nothing") + ": no such model directory");
}

// ---- export ----

TEST_CASE("parse_byte_size reads decimal and binary units and refuses anything else") {
  CHECK(lyre::parse_byte_size("5GB") == 5'000'000'000ull);
  CHECK(lyre::parse_byte_size("500MB") == 500'000'000ull);
  CHECK(lyre::parse_byte_size("2GiB") == 2ull << 30);
  CHECK(lyre::parse_byte_size("10kib") == 10240);
  CHECK(lyre::parse_byte_size("1.5GB") == 1'500'000'000ull);
  CHECK(lyre::parse_byte_size("123") == 123);
  CHECK(lyre::parse_byte_size("64 B") == 64);
  CHECK_THROWS_AS(lyre::parse_byte_size("5XB"), std::invalid_argument);
  CHECK_THROWS_WITH(lyre::parse_byte_size("5XB"),
                    "byte size \"5XB\": unknown unit (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)");
  CHECK_THROWS_WITH(lyre::parse_byte_size("GB"),
                    "byte size \"GB\": expected a number of bytes with an optional unit (123, 500MB, 5GB, 2GiB)");
  CHECK_THROWS_WITH(lyre::parse_byte_size(""),
                    "byte size \"\": expected a number of bytes with an optional unit (123, 500MB, 5GB, 2GiB)");
  CHECK_THROWS_WITH(lyre::parse_byte_size("-5GB"),
                    "byte size \"-5GB\": expected a number of bytes with an optional unit (123, 500MB, 5GB, 2GiB)");
  CHECK_THROWS_WITH(lyre::parse_byte_size("0"), "byte size \"0\": must be at least 1 byte");
  CHECK_THROWS_WITH(lyre::parse_byte_size("99999999TB"), "byte size \"99999999TB\": too large");
}

TEST_CASE("export refuses an out_dir that is not empty, and writes into one that is") {
  ScratchDir scratch;
  std::vector<float> data(4, 1.0f);
  const std::vector<ExportTensor> tensors = {{"w", {4}, data.data()}};
  ExportOptions options;
  options.out_dir = scratch.path("out");
  fs::create_directories(options.out_dir);
  write_text(options.out_dir + "/notes.txt", "mine");
  CHECK_THROWS_WITH(lyre::export_hf_model(R"({"model_type": "llama"})", tensors, options),
                    options.out_dir + ": exists and is not empty; export writes a new directory (remove it or choose another)");
  CHECK(read_bytes(options.out_dir + "/notes.txt") == "mine");
  fs::remove(options.out_dir + "/notes.txt");
  lyre::export_hf_model(R"({"model_type": "llama"})", tensors, options);
  CHECK(fs::exists(options.out_dir + "/model.safetensors"));
}

TEST_CASE("a failed export leaves neither the out_dir nor its temporary directory behind") {
  ScratchDir scratch;
  std::vector<float> data = {1.0f, 70000.0f};
  const std::vector<ExportTensor> tensors = {{"ok", {1}, data.data()}, {"big", {2}, data.data()}};
  ExportOptions options;
  options.out_dir = scratch.path("out");
  options.dtype = "fp16";
  CHECK_THROWS_WITH(lyre::export_hf_model(R"({"model_type": "llama"})", tensors, options),
                    "export to float16: tensor \"big\" element 1 is 70000, beyond float16's range (65504); export as "
                    "bf16 or fp32 instead");
  CHECK(fs::is_empty(scratch.root()));
  options.dtype = "int8";
  CHECK_THROWS_WITH(lyre::export_hf_model(R"({"model_type": "llama"})", tensors, options),
                    "export dtype \"int8\": expected auto, bf16, fp16 or fp32");
  CHECK(fs::is_empty(scratch.root()));
}

TEST_CASE("export copies a tokenizer directory's files or one tokenizer file, and refuses a missing source") {
  ScratchDir scratch;
  fs::create_directories(scratch.path("tok"));
  write_text(scratch.path("tok") + "/tokenizer.json", R"({"model": {"type": "BPE"}})");
  write_text(scratch.path("tok") + "/merges.txt", "#version: 0.2\n");
  write_text(scratch.path("tok") + "/README.md", "not a tokenizer file");
  std::vector<float> data(4, 1.0f);
  const std::vector<ExportTensor> tensors = {{"w", {4}, data.data()}};
  ExportOptions options;
  options.out_dir = scratch.path("from-dir");
  options.tokenizer_source = scratch.path("tok");
  CHECK(lyre::export_hf_model(R"({"model_type": "llama"})", tensors, options).tokenizer_files ==
        std::vector<std::string>{"tokenizer.json", "merges.txt"});
  CHECK(read_bytes(options.out_dir + "/merges.txt") == "#version: 0.2\n");
  CHECK_FALSE(fs::exists(options.out_dir + "/README.md"));

  options.out_dir = scratch.path("from-file");
  options.tokenizer_source = scratch.path("tok") + "/tokenizer.json";
  CHECK(lyre::export_hf_model(R"({"model_type": "llama"})", tensors, options).tokenizer_files ==
        std::vector<std::string>{"tokenizer.json"});

  options.out_dir = scratch.path("missing");
  options.tokenizer_source = scratch.path("gone");
  CHECK_THROWS_WITH(lyre::export_hf_model(R"({"model_type": "llama"})", tensors, options),
                    "tokenizer " + scratch.path("gone") + ": no such file or directory");
  CHECK_FALSE(fs::exists(options.out_dir));
}

// ---- checkpoints ----

namespace {

// A checkpoint step directory as the checkpointer-safetensors plugin lays it out.
void write_checkpoint(const std::string& step_dir, const std::vector<Spec>& tensors, const json& state) {
  fs::create_directories(step_dir);
  write_specs(step_dir + "/" + lyre::checkpoint_layout::kModelGroup + ".safetensors", tensors);
  write_text(step_dir + "/" + lyre::checkpoint_layout::kTrainerState, state.dump(2));
}

json trainer_state(int64_t step, const std::string& config, const json& base_model = nullptr,
                   const std::string& tokenizer = "byte") {
  return json{{"format", lyre::checkpoint_layout::kFormat}, {"format_version", lyre::checkpoint_layout::kFormatVersion},
              {"step", step}, {"model_config", json::parse(config)}, {"tokenizer", tokenizer}, {"base_model", base_model}};
}

}  // namespace

TEST_CASE("export_checkpoint takes a save_dir's newest step, frozen parameters from the base model, and no tied head") {
  ScratchDir scratch;
  auto untied = make_model(kTinyLlama);
  // The base model: a bare LlamaModel's names plus an lm_head, every value from 7.
  std::vector<Spec> base_specs;
  for (Spec s : specs_of(*untied, 7.0f)) {
    if (s.name.rfind("model.", 0) == 0) s.name = s.name.substr(6);
    base_specs.push_back(s);
  }
  const std::string base = write_dir(scratch.path("base"), base_specs, tiny_llama(true));
  // Trained: the attention and MLP matrices only; the embedding and norms were frozen.
  std::vector<Spec> trained;
  for (const Spec& s : specs_of(*untied, 2.0f)) {
    if (s.name.find("_proj.") != std::string::npos) trained.push_back(s);
  }
  const std::string save = scratch.path("save");
  write_checkpoint(save + "/step_00000010", trained, trainer_state(10, tiny_llama(true), base));
  for (Spec& s : trained) s.base = 3.0f;
  write_checkpoint(save + "/step_00000020", trained, trainer_state(20, tiny_llama(true), base));
  fs::create_directories(save + "/.tmp-step_00000030.123");  // a save in progress is never read
  write_checkpoint(save + "/step_40", trained, trainer_state(40, tiny_llama(true), base));  // not canonical
  fs::create_directories(save + "/step_00000050");  // no trainer state: not a complete checkpoint

  ExportOptions options;
  options.out_dir = scratch.path("out");
  lyre::ExportReport report;
  CHECK(lyre::export_checkpoint(save, options, &report) == save + "/step_00000020");
  CHECK(report.tensors == 20);
  CHECK(report.dtype == Dtype::F32);

  const HfWeights out = HfWeights::open(options.out_dir);
  CHECK(out.find("lm_head.weight") == nullptr);
  CHECK(out.tensors().size() == 20);
  CHECK(tensor_as_floats(out, "model.embed_tokens.weight")[1] == 7.0f + 1e-3f);
  CHECK(tensor_as_floats(out, "model.layers.1.input_layernorm.weight")[0] == 7.0f);
  CHECK(tensor_as_floats(out, "model.layers.1.self_attn.q_proj.weight")[0] == 3.0f);
  // The export loads into a tied model with nothing left over.
  auto tied = make_model(lyre::read_hf_config(options.out_dir));
  const lyre::ImportReport imported = lyre::import_hf_weights(*tied, options.out_dir);
  CHECK(imported.loaded == 20);
  CHECK(imported.unused.empty());
  const Command check = reference_check(options.out_dir);
  INFO(check.output);
  CHECK(check.status == 0);
}

TEST_CASE("export_checkpoint names trainer_state.json and the key that is wrong") {
  ScratchDir scratch;
  auto model = make_model(kTinyLlama);
  const std::string step = scratch.path("step_00000001");
  const std::string state_path = step + "/trainer_state.json";
  ExportOptions options;
  options.out_dir = scratch.path("out");

  json state = trainer_state(1, kTinyLlama);
  state["format"] = "other";
  write_checkpoint(step, specs_of(*model), state);
  CHECK_THROWS_WITH(lyre::export_checkpoint(step, options),
                    state_path + ": \"format\" is \"other\", expected \"lyre-checkpoint\"");
  state = trainer_state(1, kTinyLlama);
  state["format_version"] = 2;
  write_text(state_path, state.dump());
  CHECK_THROWS_WITH(lyre::export_checkpoint(step, options),
                    state_path + ": \"format_version\" is 2; this lyre reads version 1");
  state = trainer_state(1, kTinyLlama);
  state.erase("model_config");
  write_text(state_path, state.dump());
  CHECK_THROWS_WITH(lyre::export_checkpoint(step, options),
                    state_path + ": \"model_config\" must be the model's config.json object, got null");
  CHECK_THROWS_WITH(lyre::export_checkpoint(scratch.path("out"), options), scratch.path("out") + ": no such checkpoint directory");
  fs::create_directories(scratch.path("empty"));
  CHECK_THROWS_WITH(lyre::export_checkpoint(scratch.path("empty"), options),
                    scratch.path("empty") + ": not a checkpoint (no trainer_state.json) and no step_* checkpoint inside");
  CHECK_FALSE(fs::exists(options.out_dir));
}

// ---- the command ----

namespace {

const std::string kLyre = std::string(LYRE_BINARY_DIR) + "/bin/lyre";

}  // namespace

TEST_CASE("lyre export writes a Hugging Face directory from a save_dir and says what it wrote") {
  ScratchDir scratch;
  auto model = make_model(kTinyLlama);
  const std::string save = scratch.path("save");
  write_checkpoint(save + "/step_00000005", specs_of(*model, 1.0f), trainer_state(5, kTinyLlama));
  write_checkpoint(save + "/step_00000040", specs_of(*model, 0.5f), trainer_state(40, kTinyLlama));
  const std::string out = scratch.path("hf");

  const Command c = run(shell_quote(kLyre) + " export " + shell_quote(save) + " --out " + shell_quote(out) +
                        " --dtype bf16 --max-shard-size 40KB");
  INFO(c.output);
  REQUIRE(c.status == 0);
  CHECK(c.output == "exported " + save + "/step_00000040\n"
                    "  to:        " + out + "\n"
                    "  tensors:   21, 70336 bytes, dtype bfloat16\n"
                    "  shards:    2 (model-00001-of-00002.safetensors, model-00002-of-00002.safetensors, with "
                    "model.safetensors.index.json)\n"
                    "  tokenizer: none written (the run used lyre's byte tokenizer, which has no files)\n");
  const Command check = reference_check(out);
  INFO(check.output);
  CHECK(check.status == 0);
  // step 40's values (from 0.5; step 5's are from 1.0), rounded to bf16.
  const HfWeights w = HfWeights::open(out);
  const std::vector<float> norm = tensor_as_floats(w, "model.norm.weight");
  CHECK(norm[0] == 0.5f);
  CHECK(norm[3] == 0.50390625f);  // 0.503 to bf16's 2^-8 steps in [0.5, 1)
  CHECK_FALSE(fs::exists(out + "/tokenizer.json"));

  // A run with a tokenizer directory: its files come along, and the line says which.
  const std::string tokenizer = write_reference(scratch, "tokenizer", "tied");
  const std::string step = scratch.path("step_00000003");
  write_checkpoint(step, specs_of(*model), trainer_state(3, kTinyLlama, nullptr, tokenizer));
  const Command with_files = run(shell_quote(kLyre) + " export " + shell_quote(step) + " --out " + shell_quote(out + "2"));
  INFO(with_files.output);
  REQUIRE(with_files.status == 0);
  CHECK_THAT(with_files.output, Catch::EndsWith("\n  tensors:   21, 140672 bytes, dtype float32\n"
                                                "  shards:    1 (model.safetensors)\n"
                                                "  tokenizer: tokenizer_config.json, special_tokens_map.json, "
                                                "generation_config.json (from " + tokenizer + ")\n"));
}

TEST_CASE("lyre export refuses a non-empty --out with exit status 1, and usage errors with 2") {
  ScratchDir scratch;
  auto model = make_model(kTinyLlama);
  const std::string step = scratch.path("step_00000001");
  write_checkpoint(step, specs_of(*model), trainer_state(1, kTinyLlama));
  const std::string out = scratch.path("taken");
  fs::create_directories(out);
  write_text(out + "/config.json", "{}");

  Command c = run(shell_quote(kLyre) + " export " + shell_quote(step) + " --out " + shell_quote(out));
  CHECK(c.status == 1);
  CHECK(c.output == "lyre export: " + out + ": exists and is not empty; export writes a new directory (remove it or "
                                            "choose another)\n");
  CHECK(read_bytes(out + "/config.json") == "{}");

  c = run(shell_quote(kLyre) + " export " + shell_quote(step));
  CHECK(c.status == 2);
  CHECK_THAT(c.output, Catch::StartsWith("lyre export: missing --out DIR\n\nusage: lyre export CHECKPOINT_DIR"));
  c = run(shell_quote(kLyre) + " export " + shell_quote(step) + " --out x --dtype int4");
  CHECK(c.status == 2);
  CHECK_THAT(c.output, Catch::StartsWith("lyre export: --dtype \"int4\": expected auto, bf16, fp16 or fp32\n"));
  c = run(shell_quote(kLyre) + " export " + shell_quote(step) + " --out x --max-shard-size 5XB");
  CHECK(c.status == 2);
  CHECK_THAT(c.output, Catch::StartsWith("lyre export: --max-shard-size: byte size \"5XB\": unknown unit"));
  c = run(shell_quote(kLyre) + " export");
  CHECK(c.status == 2);
  CHECK_THAT(c.output, Catch::StartsWith("lyre export: missing CHECKPOINT_DIR\n"));
}
