// Hugging Face model directories: config.json, safetensors weights (one file or an index of
// shards), tokenizer files; and lyre checkpoints exported as such directories.
#include "io/hf_model.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "io/checkpoint_layout.hpp"
#include "plugin/error.hpp"
#include "plugin/handles.hpp"

namespace lyre {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using safetensors::Dtype;

constexpr const char* kConfigFile = "config.json";
constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// What transformers' save_pretrained and tokenizer.save_pretrained leave beside the weights.
constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json",   "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
    "merges.txt",       "tokenizer.model",       "added_tokens.json",       "generation_config.json",
};

std::string path_in(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error(path + ": cannot read: " + std::strerror(errno));
  return text.str();
}

json parse_json_text(const std::string& source, const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(source + ": not valid JSON: " + e.what());
  }
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string in_quotes(const std::string& s) { return json(s).dump(); }

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Older transformers saved RoPE's inverse frequencies as buffers; every backend recomputes them.
bool is_rotary_buffer(const std::string& name) { return ends_with(name, "rotary_emb.inv_freq"); }

bool is_floating(Dtype d) { return d == Dtype::F64 || d == Dtype::F32 || d == Dtype::BF16 || d == Dtype::F16; }

uint64_t numel_of(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

// "model.layers.10.x" after "model.layers.9.x": digit runs compare as numbers, so shards and
// listings follow the layers in order.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      const std::string da = a.substr(i, ie - i), db = b.substr(j, je - j);
      const size_t za = da.find_first_not_of('0'), zb = db.find_first_not_of('0');
      const std::string na = za == std::string::npos ? "" : da.substr(za);
      const std::string nb = zb == std::string::npos ? "" : db.substr(zb);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j || (a.size() - i == b.size() - j && a < b);
}

DLDataType dl_dtype(Dtype d) {
  switch (d) {
    case Dtype::F32: return DLDataType{kDLFloat, 32, 1};
    case Dtype::F16: return DLDataType{kDLFloat, 16, 1};
    case Dtype::BF16: return DLDataType{kDLBfloat, 16, 1};
    default: throw std::logic_error("dl_dtype: not a dtype the backends load");
  }
}

// ---- writing files ----

// A file written through a descriptor, so every failure names the path and the system's reason
// and the data can be fsync'ed before the directory is renamed into place.
class OutFile {
 public:
  explicit OutFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create");
  }
  ~OutFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void write(const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd_, p, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write failed");
      }
      p += n;
      size -= static_cast<size_t>(n);
    }
  }
  void close() {
    if (::fsync(fd_) != 0) fail("fsync failed");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("close failed");
  }

 private:
  [[noreturn]] void fail(const char* what) { throw std::runtime_error(path_ + ": " + what + ": " + std::strerror(errno)); }
  std::string path_;
  int fd_ = -1;
};

void write_text_file(const std::string& path, const std::string& text) {
  OutFile out(path);
  out.write(text.data(), text.size());
  out.close();
}

// The source of one tensor as bytes of a floating dtype.
struct Source {
  const void* bytes;
  Dtype dtype;
};

Source source_of(const ExportTensor& t) {
  if (t.bytes != nullptr) return {t.bytes, t.bytes_dtype};
  return {t.data, Dtype::F32};
}

// float16 tops out at 65504: a larger finite weight would silently become infinity.
void check_float16_range(const ExportTensor& t, const Source& src, const uint16_t* out, size_t first, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if ((out[i] & 0x7c00u) != 0x7c00u) continue;
    float value = 0;
    safetensors::convert(src.dtype, static_cast<const char*>(src.bytes) + (first + i) * safetensors::dtype_size(src.dtype),
                         Dtype::F32, &value, 1);
    if (std::isfinite(value)) {
      std::ostringstream msg;
      msg << "export to float16: tensor " << in_quotes(t.name) << " element " << first + i << " is " << value
          << ", beyond float16's range (65504); export as bf16 or fp32 instead";
      throw std::runtime_error(msg.str());
    }
  }
}

// Streams one tensor into `out` in `dtype`, converting a bounded chunk at a time.
void write_tensor_data(OutFile& out, const ExportTensor& t, Dtype dtype) {
  const Source src = source_of(t);
  const size_t n = numel_of(t.shape);
  const size_t in_size = safetensors::dtype_size(src.dtype), out_size = safetensors::dtype_size(dtype);
  if (src.dtype == dtype) {
    out.write(src.bytes, n * out_size);
    return;
  }
  constexpr size_t kChunk = size_t{1} << 20;  // elements per conversion
  std::vector<char> buffer(std::min(n, kChunk) * out_size);
  for (size_t first = 0; first < n; first += kChunk) {
    const size_t count = std::min(kChunk, n - first);
    safetensors::convert(src.dtype, static_cast<const char*>(src.bytes) + first * in_size, dtype, buffer.data(),
                         count);
    if (dtype == Dtype::F16) check_float16_range(t, src, reinterpret_cast<const uint16_t*>(buffer.data()), first, count);
    out.write(buffer.data(), count * out_size);
  }
}

Dtype resolve_export_dtype(const std::string& option, const json& config) {
  if (option == "bf16" || option == "bfloat16") return Dtype::BF16;
  if (option == "fp16" || option == "float16") return Dtype::F16;
  if (option == "fp32" || option == "float32") return Dtype::F32;
  if (option != "auto") {
    throw std::invalid_argument("export dtype " + in_quotes(option) + ": expected auto, bf16, fp16 or fp32");
  }
  // Newer transformers write "dtype" where older ones wrote "torch_dtype".
  for (const char* key : {"torch_dtype", "dtype"}) {
    auto it = config.find(key);
    if (it == config.end() || !it->is_string()) continue;
    const std::string name = it->get<std::string>();
    if (name == "bfloat16") return Dtype::BF16;
    if (name == "float16") return Dtype::F16;
    if (name == "float32") return Dtype::F32;
  }
  return Dtype::F32;
}

std::string shard_name(size_t i, size_t n) {
  if (n == 1) return kSingleFile;
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

// The tokenizer files present at `source` (a directory or one file), as {path, name in out}.
std::vector<std::pair<std::string, std::string>> tokenizer_files(const std::string& source) {
  std::vector<std::pair<std::string, std::string>> files;
  if (source.empty() || source == "byte") return files;
  std::error_code ec;
  if (fs::is_directory(source, ec)) {
    for (const char* name : kTokenizerFiles) {
      const std::string path = path_in(source, name);
      if (fs::is_regular_file(path, ec)) files.emplace_back(path, name);
    }
  } else if (fs::is_regular_file(source, ec)) {
    files.emplace_back(source, fs::path(source).filename().string());
  } else {
    throw std::runtime_error("tokenizer " + source + ": no such file or directory");
  }
  return files;
}

// Refuses an out_dir that holds anything: an export never mixes with other files.
void check_out_dir(const fs::path& out) {
  std::error_code ec;
  const fs::file_status st = fs::status(out, ec);
  if (!fs::exists(st)) return;
  if (!fs::is_directory(st)) throw std::runtime_error(out.string() + ": exists and is not a directory");
  if (!fs::is_empty(out, ec)) {
    throw std::runtime_error(out.string() + ": exists and is not empty; export writes a new directory (remove it or choose another)");
  }
}

}  // namespace

// ---- config and weights ----

const std::vector<std::string>& supported_model_types() {
  static const std::vector<std::string> types = {"llama"};
  return types;
}

namespace {
std::string supported_list() {
  std::string s;
  for (const std::string& t : supported_model_types()) s += (s.empty() ? "" : ", ") + in_quotes(t);
  return s;
}
}  // namespace

std::string read_hf_config(const std::string& dir) {
  const std::string path = path_in(dir, kConfigFile);
  std::string text = read_text_file(path);
  const json config = parse_json_text(path, text);
  if (!config.is_object()) throw std::runtime_error(path + ": expected a JSON object at the top level");
  auto it = config.find("model_type");
  if (it == config.end()) {
    throw std::runtime_error(path + ": missing key \"model_type\" (supported: " + supported_list() + ")");
  }
  const auto& types = supported_model_types();
  if (!it->is_string() || std::find(types.begin(), types.end(), it->get<std::string>()) == types.end()) {
    throw std::runtime_error(path + ": model_type " + it->dump() + " is not supported (supported: " + supported_list() + ")");
  }
  return text;
}

HfWeights HfWeights::open(const std::string& dir) {
  HfWeights w;
  w.dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw std::runtime_error(dir + ": no such model directory");
  const std::string single = path_in(dir, kSingleFile), index_path = path_in(dir, kIndexFile);

  // transformers looks for the single file first, then the index.
  if (fs::exists(single, ec)) {
    w.source_ = single;
    w.files_.push_back(std::make_unique<safetensors::File>(safetensors::File::open(single)));
    const safetensors::File* file = w.files_.back().get();
    for (const auto& t : file->tensors()) w.tensors_[t.name] = Entry{file, &t};
    return w;
  }
  if (!fs::exists(index_path, ec)) {
    std::string hint;
    if (fs::exists(path_in(dir, "pytorch_model.bin"), ec) || fs::exists(path_in(dir, "pytorch_model.bin.index.json"), ec)) {
      hint = " (pytorch_model.bin is not read: save the model with safe_serialization=True)";
    }
    throw std::runtime_error(dir + ": no " + kSingleFile + " or " + kIndexFile + hint);
  }

  w.source_ = index_path;
  const json index = parse_json_text(index_path, read_text_file(index_path));
  if (!index.is_object()) throw std::runtime_error(index_path + ": expected a JSON object at the top level");
  auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object()) {
    throw std::runtime_error(index_path + ": \"weight_map\" must be an object of tensor name -> shard file name");
  }
  std::map<std::string, std::string> weight_map;  // tensor -> shard
  std::set<std::string> shard_names;
  for (const auto& [tensor, file] : map_it->items()) {
    if (!file.is_string()) {
      throw std::runtime_error(index_path + ": weight_map[" + in_quotes(tensor) + "] must be a file name string, got " + file.dump());
    }
    const std::string name = file.get<std::string>();
    // A shard is a file of this directory; a path could reach outside it.
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      throw std::runtime_error(index_path + ": weight_map[" + in_quotes(tensor) + "] is " + in_quotes(name) +
                               ", which is not a file name in the directory");
    }
    weight_map[tensor] = name;
    shard_names.insert(name);
  }
  if (weight_map.empty()) throw std::runtime_error(index_path + ": \"weight_map\" lists no tensors");
  std::map<std::string, const safetensors::File*> shards;
  for (const std::string& name : shard_names) {
    const std::string path = path_in(dir, name);
    if (!fs::is_regular_file(path, ec)) {
      throw std::runtime_error(index_path + ": shard " + name + " does not exist (" + path + ")");
    }
    w.files_.push_back(std::make_unique<safetensors::File>(safetensors::File::open(path)));
    shards[name] = w.files_.back().get();
  }
  // Every tensor of every shard must be where the index says: once, and listed.
  for (const auto& [name, file] : shards) {
    for (const auto& t : file->tensors()) {
      auto listed = weight_map.find(t.name);
      if (listed == weight_map.end()) {
        throw std::runtime_error(index_path + ": shard " + name + " holds tensor " + in_quotes(t.name) +
                                 ", which weight_map does not list");
      }
      if (listed->second != name) {
        throw std::runtime_error(index_path + ": tensor " + in_quotes(t.name) + " is in both " + name + " and " +
                                 listed->second + " (weight_map names " + listed->second + ")");
      }
      w.tensors_[t.name] = Entry{file, &t};
    }
  }
  for (const auto& [tensor, name] : weight_map) {
    if (w.tensors_.count(tensor) == 0) {
      throw std::runtime_error(index_path + ": weight_map puts tensor " + in_quotes(tensor) + " in " + name +
                               ", which has no such tensor");
    }
  }
  return w;
}

const HfWeights::Entry* HfWeights::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

ImportReport import_hf_weights(Model& model, const std::string& dir) {
  const HfWeights weights = HfWeights::open(dir);
  struct Planned {
    const ParameterInfo* param;
    std::string name;  // the directory's name for it
    const HfWeights::Entry* entry;
  };
  // Everything is checked before the first write, so a bad directory leaves the model as it was.
  std::vector<Planned> plan;
  std::set<std::string> taken;
  for (const ParameterInfo& p : model.parameters()) {
    std::string name = p.name;
    const HfWeights::Entry* e = weights.find(name);
    if (e == nullptr && starts_with(p.name, "model.")) {
      name = p.name.substr(6);
      e = weights.find(name);
    }
    if (e == nullptr) {
      throw std::runtime_error(weights.source() + ": no tensor " + in_quotes(p.name) + " (the model needs it" +
                               (starts_with(p.name, "model.") ? "; " + in_quotes(p.name.substr(6)) + " is absent too" : "") + ")");
    }
    const std::string& file = e->file->path();
    const Dtype d = e->info->dtype;
    if (d != Dtype::F32 && d != Dtype::BF16 && d != Dtype::F16) {
      throw std::runtime_error(file + ": tensor " + in_quotes(name) + " has dtype " + safetensors::dtype_name(d) +
                               "; lyre loads F32, BF16 and F16 weights");
    }
    if (e->info->shape != p.shape) {
      throw std::runtime_error(file + ": tensor " + in_quotes(name) + " has shape " + shape_string(e->info->shape) +
                               ", the model's parameter " + in_quotes(p.name) + " has " + shape_string(p.shape));
    }
    plan.push_back({&p, name, e});
    taken.insert(name);
  }

  const LyreModelApi& api = *model.plugin().api().model;
  for (const Planned& item : plan) {
    const ParameterInfo& p = *item.param;
    const safetensors::TensorInfo& info = *item.entry->info;
    const char* bytes = item.entry->file->data(info);
    // Backends read the source as an array of its dtype; a writer need not align tensors.
    std::unique_ptr<char[]> aligned;
    if (reinterpret_cast<uintptr_t>(bytes) % safetensors::dtype_size(info.dtype) != 0) {
      aligned.reset(new char[info.nbytes()]);
      std::memcpy(aligned.get(), bytes, info.nbytes());
      bytes = aligned.get();
    }
    DLTensor src{};
    src.data = const_cast<char*>(bytes);  // DLTensor has no const; write_tensor only reads it
    src.device = DLDevice{kDLCPU, 0};
    src.ndim = static_cast<int32_t>(p.shape.size());
    src.dtype = dl_dtype(info.dtype);
    src.shape = const_cast<int64_t*>(p.shape.data());
    LyreModel_WriteTensor_Args args{};
    args.struct_size = sizeof args;
    args.model = model.raw();
    args.index = p.index;
    args.which = LYRE_TENSOR_VALUE;
    args.src = &src;
    check(api.write_tensor(&args),
          model.plugin().name() + ": write_tensor '" + p.name + "' from " + item.entry->file->path());
  }

  ImportReport report;
  report.loaded = plan.size();
  for (const auto& [name, entry] : weights.tensors()) {
    if (taken.count(name) == 0 && !is_rotary_buffer(name)) report.unused.push_back(name);
  }
  return report;
}

// ---- export ----

const char* torch_dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::BF16: return "bfloat16";
    case Dtype::F16: return "float16";
    case Dtype::F32: return "float32";
    case Dtype::F64: return "float64";
    default: return safetensors::dtype_name(dtype);
  }
}

uint64_t parse_byte_size(const std::string& text) {
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument("byte size " + in_quotes(text) + ": " + why);
  };
  size_t i = 0;
  std::string number;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) number += text[i++];
  while (i < text.size() && text[i] == ' ') ++i;
  std::string unit;
  for (; i < text.size(); ++i) unit += static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
  if (number.empty() || std::count(number.begin(), number.end(), '.') > 1 || number == ".") {
    throw bad("expected a number of bytes with an optional unit (123, 500MB, 5GB, 2GiB)");
  }
  static const std::map<std::string, double> units = {
      {"", 1.0},      {"B", 1.0},      {"KB", 1e3},          {"MB", 1e6},          {"GB", 1e9},
      {"TB", 1e12},   {"KIB", 1024.0}, {"MIB", 1048576.0},   {"GIB", 1073741824.0}, {"TIB", 1099511627776.0},
  };
  auto u = units.find(unit);
  if (u == units.end()) throw bad("unknown unit (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)");
  const double bytes = std::stod(number) * u->second;
  if (bytes >= 1.8e19) throw bad("too large");
  const uint64_t result = static_cast<uint64_t>(bytes + 0.5);
  if (result == 0) throw bad("must be at least 1 byte");
  return result;
}

ExportReport export_hf_model(const std::string& config_text, const std::vector<ExportTensor>& tensors,
                             const ExportOptions& options) {
  json config = parse_json_text("export: model config", config_text);
  if (!config.is_object()) throw std::runtime_error("export: model config: expected a JSON object");
  const Dtype dtype = resolve_export_dtype(options.dtype, config);
  if (options.out_dir.empty()) throw std::invalid_argument("export: no output directory given");
  if (options.max_shard_bytes == 0) throw std::invalid_argument("export: max_shard_bytes must be at least 1");

  std::set<std::string> names;
  for (const ExportTensor& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") throw std::invalid_argument("export: tensor name " + in_quotes(t.name) + " is not allowed");
    if (!names.insert(t.name).second) throw std::invalid_argument("export: tensor " + in_quotes(t.name) + " given twice");
    const Source src = source_of(t);
    if (src.bytes == nullptr && numel_of(t.shape) > 0) throw std::invalid_argument("export: tensor " + in_quotes(t.name) + " has no data");
    if (!is_floating(src.dtype)) {
      throw std::invalid_argument("export: tensor " + in_quotes(t.name) + " has dtype " + safetensors::dtype_name(src.dtype) +
                                  "; only floating tensors are exported");
    }
    for (int64_t d : t.shape) {
      if (d < 0) throw std::invalid_argument("export: tensor " + in_quotes(t.name) + " has shape " + shape_string(t.shape));
    }
  }
  const auto tokenizer = tokenizer_files(options.tokenizer_source);

  const fs::path out = fs::absolute(fs::path(options.out_dir)).lexically_normal();
  const fs::path out_clean = out.has_filename() ? out : out.parent_path();  // "dir/" -> "dir"
  check_out_dir(out_clean);

  // Shards as transformers cuts them: in order, a new shard when the next tensor would overflow.
  const size_t esize = safetensors::dtype_size(dtype);
  std::vector<std::vector<const ExportTensor*>> shards;
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (const ExportTensor& t : tensors) {
    const uint64_t bytes = numel_of(t.shape) * esize;
    if (shards.empty() || (!shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&t);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  if (shards.empty()) shards.emplace_back();  // a model with no tensors still gets its file

  ExportReport report;
  report.out_dir = out_clean.string();
  report.dtype = dtype;
  report.tensors = tensors.size();
  report.tensor_bytes = total_bytes;
  report.tokenizer_source = options.tokenizer_source;

  fs::create_directories(out_clean.parent_path());
  // Not checkpoint_layout's ".tmp-" prefix: a trainer cleaning its save_dir must not take an
  // export written there for one of its own unfinished saves.
  const fs::path temp = out_clean.parent_path() /
                        (".lyre-export-" + out_clean.filename().string() + "." + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(temp, ec);
  fs::create_directory(temp);
  try {
    json weight_map = json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string name = shard_name(i, shards.size());
      std::vector<safetensors::TensorRef> refs;
      for (const ExportTensor* t : shards[i]) {
        refs.push_back({t->name, dtype, t->shape, nullptr});
        weight_map[t->name] = name;
      }
      // transformers refuses a safetensors file whose metadata lacks format "pt".
      OutFile file((temp / name).string());
      const std::string header = safetensors::encode_header(refs, {{"format", "pt"}});
      file.write(header.data(), header.size());
      for (const ExportTensor* t : shards[i]) write_tensor_data(file, *t, dtype);
      file.close();
      report.shard_files.push_back(name);
    }
    if (shards.size() > 1) {
      const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
      write_text_file((temp / kIndexFile).string(), index.dump(2) + "\n");
    }

    config["torch_dtype"] = torch_dtype_name(dtype);
    if (config.contains("dtype")) config["dtype"] = torch_dtype_name(dtype);
    if (!config.contains("architectures") && config.value("model_type", "") == "llama") {
      config["architectures"] = json::array({"LlamaForCausalLM"});
    }
    write_text_file((temp / kConfigFile).string(), config.dump(2) + "\n");

    for (const auto& [from, name] : tokenizer) {
      fs::copy_file(from, temp / name, fs::copy_options::overwrite_existing);
      report.tokenizer_files.push_back(name);
    }
    // An empty out_dir is replaced by the rename; a non-empty one was refused above, but another
    // process may have filled it since, and rename(2) then fails rather than mixing the two.
    fs::rename(temp, out_clean);
  } catch (...) {
    fs::remove_all(temp, ec);
    throw;
  }
  return report;
}

ExportReport export_model(const Model& model, const std::string& config_text, const ExportOptions& options) {
  std::vector<std::vector<float>> values;
  std::vector<ExportTensor> tensors;
  values.reserve(model.parameters().size());
  for (const ParameterInfo& p : model.parameters()) {
    values.push_back(model.read(p.index));
    tensors.push_back({p.name, p.shape, values.back().data()});
  }
  return export_hf_model(config_text, tensors, options);
}

namespace {

// A step directory as given, or the newest complete step_* of a save_dir.
fs::path resolve_step_dir(const std::string& checkpoint) {
  std::error_code ec;
  if (!fs::is_directory(checkpoint, ec)) throw std::runtime_error(checkpoint + ": no such checkpoint directory");
  if (fs::exists(fs::path(checkpoint) / checkpoint_layout::kTrainerState, ec)) return fs::path(checkpoint);
  std::optional<int64_t> newest;
  fs::path newest_dir;
  for (const auto& entry : fs::directory_iterator(checkpoint)) {
    if (!entry.is_directory()) continue;
    // Complete as the checkpointer lists them: the canonical name, with its trainer state.
    const std::string name = entry.path().filename().string();
    const auto step = checkpoint_layout::parse_step_dir_name(name);
    if (!step || name != checkpoint_layout::step_dir_name(*step) ||
        !fs::is_regular_file(entry.path() / checkpoint_layout::kTrainerState, ec)) {
      continue;
    }
    if (!newest || *step > *newest) {
      newest = step;
      newest_dir = entry.path();
    }
  }
  if (!newest) {
    throw std::runtime_error(checkpoint + ": not a checkpoint (no " + checkpoint_layout::kTrainerState +
                             ") and no step_* checkpoint inside");
  }
  return newest_dir;
}

}  // namespace

std::string export_checkpoint(const std::string& checkpoint, ExportOptions options, ExportReport* report) {
  const fs::path step_dir = resolve_step_dir(checkpoint);
  const std::string state_path = (step_dir / checkpoint_layout::kTrainerState).string();
  const json state = parse_json_text(state_path, read_text_file(state_path));
  if (!state.is_object()) throw std::runtime_error(state_path + ": expected a JSON object at the top level");
  const auto key = [&](const char* name) -> const json& {
    static const json null;
    auto it = state.find(name);
    return it == state.end() ? null : *it;
  };
  if (key("format") != checkpoint_layout::kFormat) {
    throw std::runtime_error(state_path + ": \"format\" is " + key("format").dump() + ", expected " + in_quotes(checkpoint_layout::kFormat));
  }
  if (!key("format_version").is_number_integer() || key("format_version").get<int64_t>() != checkpoint_layout::kFormatVersion) {
    throw std::runtime_error(state_path + ": \"format_version\" is " + key("format_version").dump() + "; this lyre reads version " +
                             std::to_string(checkpoint_layout::kFormatVersion));
  }
  const json& model_config = key("model_config");
  if (!model_config.is_object()) {
    throw std::runtime_error(state_path + ": \"model_config\" must be the model's config.json object, got " + model_config.dump());
  }
  const json& tokenizer = key("tokenizer");
  if (!tokenizer.is_string()) throw std::runtime_error(state_path + ": \"tokenizer\" must be \"byte\" or a path, got " + tokenizer.dump());
  const json& base_model = key("base_model");
  if (!base_model.is_null() && !base_model.is_string()) {
    throw std::runtime_error(state_path + ": \"base_model\" must be null or a path, got " + base_model.dump());
  }
  if (options.tokenizer_source.empty()) options.tokenizer_source = tokenizer.get<std::string>();
  const bool tied = model_config.value("tie_word_embeddings", false);

  const safetensors::File trained = safetensors::File::open((step_dir / (std::string(checkpoint_layout::kModelGroup) + ".safetensors")).string());
  std::map<std::string, ExportTensor> chosen;
  for (const auto& t : trained.tensors()) {
    if (!is_floating(t.dtype)) {
      throw std::runtime_error(trained.path() + ": tensor " + in_quotes(t.name) + " has dtype " + safetensors::dtype_name(t.dtype) +
                               "; a model parameter must be floating");
    }
    if (tied && t.name == "lm_head.weight") continue;
    ExportTensor e{t.name, t.shape, nullptr, trained.data(t), t.dtype};
    chosen.emplace(t.name, std::move(e));
  }
  std::optional<HfWeights> base;
  if (base_model.is_string() && !base_model.get<std::string>().empty()) {
    base.emplace(HfWeights::open(base_model.get<std::string>()));
    for (const auto& [name, entry] : base->tensors()) {
      if (is_rotary_buffer(name)) continue;
      // The checkpoint names parameters as the model does; a bare LlamaModel's lack "model.".
      const std::string full = starts_with(name, "model.") || name == "lm_head.weight" ? name : "model." + name;
      if (tied && full == "lm_head.weight") continue;
      const safetensors::TensorInfo& info = *entry.info;
      auto it = chosen.find(full);
      if (it != chosen.end()) {
        if (it->second.shape != info.shape) {
          throw std::runtime_error(trained.path() + ": tensor " + in_quotes(full) + " has shape " + shape_string(it->second.shape) +
                                   ", but the base model's " + entry.file->path() + " has " + shape_string(info.shape));
        }
        continue;  // trained: the checkpoint's value wins
      }
      if (!is_floating(info.dtype)) {
        throw std::runtime_error(entry.file->path() + ": tensor " + in_quotes(name) + " has dtype " + safetensors::dtype_name(info.dtype) +
                                 "; a model parameter must be floating");
      }
      chosen.emplace(full, ExportTensor{full, info.shape, nullptr, entry.file->data(info), info.dtype});
    }
  }

  std::vector<ExportTensor> tensors;
  for (auto& [name, t] : chosen) tensors.push_back(std::move(t));
  // The order transformers saves in: the model's tensors by layer, the head last.
  std::sort(tensors.begin(), tensors.end(), [](const ExportTensor& a, const ExportTensor& b) {
    const bool head_a = starts_with(a.name, "lm_head."), head_b = starts_with(b.name, "lm_head.");
    return head_a != head_b ? head_b : natural_less(a.name, b.name);
  });
  ExportReport written = export_hf_model(model_config.dump(), tensors, options);
  if (report != nullptr) *report = std::move(written);
  return step_dir.string();
}

}  // namespace lyre
