#include "checkpoint_reader.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "file_metadata.hpp"
#include "io/checkpoint_layout.hpp"

namespace lyre::ckpt {
namespace {

namespace fs = std::filesystem;
using safetensors::Dtype;

DLDataType dl_dtype(Dtype d) {
  switch (d) {
    case Dtype::F64: return {kDLFloat, 64, 1};
    case Dtype::F32: return {kDLFloat, 32, 1};
    case Dtype::F16: return {kDLFloat, 16, 1};
    case Dtype::BF16: return {kDLBfloat, 16, 1};
    case Dtype::I64: return {kDLInt, 64, 1};
    case Dtype::I32: return {kDLInt, 32, 1};
    case Dtype::I16: return {kDLInt, 16, 1};
    case Dtype::I8: return {kDLInt, 8, 1};
    case Dtype::U8: return {kDLUInt, 8, 1};
    case Dtype::BOOL: return {kDLUInt, 8, 1};  // DLPack 0.6 has no bool; one byte each
  }
  return {kDLUInt, 8, 1};
}

std::string read_trainer_state(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error(path + ": cannot read");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error(path + ": expected a JSON object, got " + j.type_name());
  return text.str();
}

std::set<std::string> split_groups(const std::string& list) {
  std::set<std::string> out;
  std::istringstream in(list);
  for (std::string g; std::getline(in, g, ',');) out.insert(g);
  return out;
}

std::string join(const std::set<std::string>& groups) {
  std::string s;
  for (const std::string& g : groups) s += (s.empty() ? "" : ",") + g;
  return s;
}

}  // namespace

std::unique_ptr<OpenCheckpoint> OpenCheckpoint::open(const std::string& dir, int64_t step) {
  std::unique_ptr<OpenCheckpoint> c(new OpenCheckpoint());
  c->step_ = step;

  std::vector<std::string> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    if (it->path().extension() == ".safetensors") files.push_back(it->path().filename().string());
  }
  if (ec) throw std::runtime_error(dir + ": cannot read the directory: " + ec.message());
  std::sort(files.begin(), files.end());

  // The groups the writer recorded must all be here: a checkpoint that lost a whole file would
  // otherwise load as one that never had that group.
  std::set<std::string> present;
  for (const std::string& f : files) present.insert(f.substr(0, f.size() - std::strlen(".safetensors")));
  for (const std::string& f : files) {
    safetensors::File file = safetensors::File::open(dir + "/" + f);
    const auto& meta = file.metadata();
    if (auto s = meta.find(kStepKey); s != meta.end() && s->second != std::to_string(step)) {
      throw std::runtime_error(file.path() + ": written for step " + s->second + ", found in the directory of step " +
                               std::to_string(step));
    }
    if (auto g = meta.find(kGroupsKey); g != meta.end()) {
      const std::set<std::string> recorded = split_groups(g->second);
      if (recorded != present) {
        throw std::runtime_error(file.path() + ": the checkpoint was saved with the files of groups " +
                                 join(recorded) + ", the directory holds " + join(present));
      }
    }
    c->files_.push_back(std::move(file));
  }
  c->metadata_json_ = read_trainer_state(dir + "/" + checkpoint_layout::kTrainerState);

  for (const safetensors::File& file : c->files_) {
    const std::string group = fs::path(file.path()).stem().string();
    for (const safetensors::TensorInfo& info : file.tensors()) {
      c->names_.push_back(group + "/" + info.name);
      c->shapes_.push_back(info.shape);
      const char* data = file.data(info);
      const size_t align = safetensors::dtype_size(info.dtype);
      // The format promises no alignment; a consumer reading float* may rely on it.
      if (reinterpret_cast<uintptr_t>(data) % align != 0) {
        c->realigned_.emplace_back(new char[info.nbytes()]);
        std::memcpy(c->realigned_.back().get(), data, info.nbytes());
        data = c->realigned_.back().get();
      }
      DLTensor t{};
      t.data = const_cast<char*>(data);  // read-only map; the ABI hands loaded tensors out to read
      t.device = DLDevice{kDLCPU, 0};
      t.ndim = static_cast<int32_t>(info.shape.size());
      t.dtype = dl_dtype(info.dtype);
      t.strides = nullptr;
      t.byte_offset = 0;
      c->tensors_.push_back(t);
    }
  }
  // Pointers into the vectors only now that they no longer grow.
  for (size_t i = 0; i < c->tensors_.size(); ++i) {
    c->tensors_[i].shape = c->shapes_[i].data();
    c->name_ptrs_.push_back(c->names_[i].c_str());
    c->tensor_ptrs_.push_back(&c->tensors_[i]);
  }
  return c;
}

}  // namespace lyre::ckpt
