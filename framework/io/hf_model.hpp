// Hugging Face model directories: import into a backend's model, export from one or from a
// checkpoint.
//
// A directory holds config.json and either model.safetensors or shards named in
// model.safetensors.index.json ({"metadata": {"total_size": N}, "weight_map": {tensor: file}}),
// plus the tokenizer files (tokenizer.json, tokenizer_config.json, ...). Tensor names are HF's
// (model.layers.0.self_attn.q_proj.weight), which backends use for their parameters too.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.hpp"

namespace lyre {

class Model;  // plugin/handles.hpp

// The model_type values lyre's backends build.
const std::vector<std::string>& supported_model_types();

// Reads <dir>/config.json and checks it is a JSON object whose model_type is supported. Errors
// (std::runtime_error) name the file: "<dir>/config.json: model_type \"gpt2\" is not supported
// (supported: \"llama\")".
std::string read_hf_config(const std::string& dir);

// Every tensor of a model directory, memory-mapped: model.safetensors, or the shards of the
// index (each shard validated; every tensor of the weight_map must be in the file it names, and
// no tensor may be in two shards).
class HfWeights {
 public:
  static HfWeights open(const std::string& dir);

  struct Entry {
    const safetensors::File* file;
    const safetensors::TensorInfo* info;
  };
  const std::string& dir() const { return dir_; }
  // The file that lists the tensors: <dir>/model.safetensors or the index. Messages about a
  // tensor the directory lacks name it.
  const std::string& source() const { return source_; }
  const std::map<std::string, Entry>& tensors() const { return tensors_; }
  const Entry* find(const std::string& name) const;

 private:
  std::string dir_;
  std::string source_;
  std::vector<std::unique_ptr<safetensors::File>> files_;
  std::map<std::string, Entry> tensors_;
};

struct ImportReport {
  size_t loaded = 0;                 // parameters written into the model
  std::vector<std::string> unused;   // tensors of the directory no parameter took
};

// Writes every parameter of `model` from the directory's tensors. A parameter "model.X" is also
// found as "X" (checkpoints of the bare LlamaModel); with tie_word_embeddings a missing
// lm_head.weight is fine (the model has none). F32, BF16 and F16 go to the backend as they are
// (it converts, ABI rule for write_tensor); other dtypes are refused. Errors name the tensor and
// the file: missing tensor, shape mismatch, unsupported dtype. Tensors no parameter took are
// reported (rotary inv_freq buffers silently).
ImportReport import_hf_weights(Model& model, const std::string& dir);

// One float32 tensor to export, HF-named, in host memory borrowed for the call.
struct ExportTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
  // Instead of `data`: the tensor's bytes in another floating dtype (F64, F32, BF16, F16),
  // unaligned allowed, such as a mapped safetensors file's. Converted while written, so a
  // model exported from files never needs a float32 copy in memory.
  const void* bytes = nullptr;
  safetensors::Dtype bytes_dtype = safetensors::Dtype::F32;
};

struct ExportOptions {
  std::string out_dir;
  // "auto": the config's torch_dtype when it is bfloat16, float16 or float32, else float32.
  std::string dtype = "auto";                       // auto | bf16 | fp16 | fp32
  uint64_t max_shard_bytes = 5'000'000'000ull;      // HF's default "5GB"; one file if it fits
  std::string tokenizer_source;                     // "byte" / empty: no files; else dir or file
};

// What an export wrote.
struct ExportReport {
  std::string out_dir;
  safetensors::Dtype dtype = safetensors::Dtype::F32;
  size_t tensors = 0;
  uint64_t tensor_bytes = 0;                 // the index's metadata.total_size
  std::vector<std::string> shard_files;      // model.safetensors, or model-0000i-of-0000n...
  std::string tokenizer_source;              // ExportOptions.tokenizer_source as used
  std::vector<std::string> tokenizer_files;  // names copied into out_dir
};

// The torch_dtype name of a written dtype: "bfloat16", "float16", "float32".
const char* torch_dtype_name(safetensors::Dtype dtype);

// Parses "5GB", "500MB", "2GiB", "123" (bytes); throws std::invalid_argument naming the text.
uint64_t parse_byte_size(const std::string& text);

// Writes a directory transformers loads unchanged: config.json (torch_dtype set to the written
// dtype), model.safetensors or model-0000i-of-0000n.safetensors shards of at most
// max_shard_bytes (a tensor larger than the limit gets a shard of its own) with
// model.safetensors.index.json, and the tokenizer files copied. Files are written into a
// temporary directory beside out_dir and renamed into place, so a failed export leaves no
// partial directory. Refuses an out_dir that exists and is not empty.
// A config without "architectures" gets the model_type's CausalLM class (vLLM and pipelines
// need it). Errors: a duplicate or empty tensor name, a non-floating source dtype, an unknown
// dtype option, float16 overflow (names the tensor: export bf16 or fp32 instead).
ExportReport export_hf_model(const std::string& config_text, const std::vector<ExportTensor>& tensors,
                             const ExportOptions& options);

// Exports every parameter of `model` with `config_text`, the config.json it was built from. The
// parameters are read back first: a float32 copy of the whole model in host memory.
ExportReport export_model(const Model& model, const std::string& config_text, const ExportOptions& options);

// `lyre export`: `checkpoint` is a step directory (step_00000040) or a save_dir (its newest
// complete step). Reads model.safetensors and trainer_state.json (io/checkpoint_layout.hpp);
// parameters the checkpoint lacks (frozen ones) come from the trainer state's base_model.
// Base-model tensors named without "model." (a bare LlamaModel) are exported with it. With
// tie_word_embeddings, lm_head.weight is not written. ExportOptions.tokenizer_source, when
// empty, is the trainer state's "tokenizer". Returns the step directory exported; `report`, when
// given, receives what export_hf_model wrote.
std::string export_checkpoint(const std::string& checkpoint, ExportOptions options,
                              ExportReport* report = nullptr);

}  // namespace lyre
