// The ABI glue behind Checkpointer: fill the Args struct, call the table entry, turn a returned
// LyreError into a PluginError that names the plugin and the call.
#include "plugin/checkpointer_handle.hpp"

#include <cstring>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "plugin/error.hpp"
#include "util/json_integer.hpp"

namespace lyre {
namespace {

template <typename Args>
Args make_args() {
  Args args{};
  args.struct_size = sizeof(Args);
  return args;
}

const LyreCheckpointerApi& checkpointer_table(const LoadedPlugin& plugin) {
  if (plugin.api().checkpointer == nullptr) {
    throw std::runtime_error("plugin " + plugin.name() + " (" + plugin.path() + ") has no checkpointer slot");
  }
  return *plugin.api().checkpointer;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Bytes of one element; the handle moves bytes and leaves dtypes to the plugin.
size_t element_bytes(DLDataType dtype) { return (static_cast<size_t>(dtype.bits) * dtype.lanes + 7) / 8; }

}  // namespace

const HostTensor* LoadedCheckpoint::find(const std::string& name) const {
  for (const HostTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Checkpointer::Checkpointer(std::shared_ptr<LoadedPlugin> plugin, const std::string& config_json)
    : plugin_(std::move(plugin)) {
  const LyreCheckpointerApi& api = checkpointer_table(*plugin_);
  plugin_->initialize();  // no-op when the registry already did it; the ABI wants it first
  auto args = make_args<LyreCheckpointer_Create_Args>();
  args.config_json = config_json.c_str();
  check(api.create(&args), plugin_->name() + ": create");
  if (args.checkpointer == nullptr) {
    throw PluginError(LYRE_ERROR_INTERNAL, plugin_->name() + ": create: returned no checkpointer and no error");
  }
  checkpointer_ = args.checkpointer;
}

Checkpointer::~Checkpointer() {
  if (checkpointer_ == nullptr) return;
  auto args = make_args<LyreCheckpointer_Destroy_Args>();
  args.checkpointer = checkpointer_;
  try {
    check(checkpointer_table(*plugin_).destroy(&args), plugin_->name() + ": destroy");
  } catch (const std::exception& e) {
    // A destructor cannot throw; a save that failed in the background must still be seen.
    spdlog::error("{}", e.what());
  }
}

void Checkpointer::save(int64_t step, const std::vector<HostTensor>& tensors, const std::string& metadata_json) {
  std::vector<DLTensor> dl(tensors.size());
  std::vector<const DLTensor*> dl_ptrs(tensors.size());
  std::vector<const char*> names(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const HostTensor& t = tensors[i];
    const size_t expected = static_cast<size_t>(numel(t.shape)) * element_bytes(t.dtype);
    if (t.bytes.size() != expected) {
      throw std::invalid_argument(plugin_->name() + ": save step " + std::to_string(step) + ": tensor \"" + t.name +
                                  "\" holds " + std::to_string(t.bytes.size()) + " bytes, its shape and dtype need " +
                                  std::to_string(expected));
    }
    DLTensor& d = dl[i];
    d.data = const_cast<char*>(t.bytes.data());  // DLTensor has no const; the plugin only reads
    d.device = DLDevice{kDLCPU, 0};
    d.ndim = static_cast<int32_t>(t.shape.size());
    d.dtype = t.dtype;
    d.shape = const_cast<int64_t*>(t.shape.data());
    d.strides = nullptr;
    d.byte_offset = 0;
    dl_ptrs[i] = &d;
    names[i] = t.name.c_str();
  }
  auto args = make_args<LyreCheckpointer_Save_Args>();
  args.checkpointer = checkpointer_;
  args.step = step;
  args.num_tensors = tensors.size();
  args.names = names.data();
  args.tensors = dl_ptrs.data();
  args.metadata_json = metadata_json.c_str();
  check(checkpointer_table(*plugin_).save(&args), plugin_->name() + ": save");
}

void Checkpointer::wait() {
  auto args = make_args<LyreCheckpointer_Wait_Args>();
  args.checkpointer = checkpointer_;
  check(checkpointer_table(*plugin_).wait(&args), plugin_->name() + ": wait");
}

std::vector<CheckpointEntry> Checkpointer::list() {
  auto args = make_args<LyreCheckpointer_List_Args>();
  args.checkpointer = checkpointer_;
  check(checkpointer_table(*plugin_).list(&args), plugin_->name() + ": list");
  const std::string context = plugin_->name() + ": list: ";
  if (args.json == nullptr) throw PluginError(LYRE_ERROR_INTERNAL, context + "returned no JSON and no error");
  std::vector<CheckpointEntry> out;
  try {
    const nlohmann::json j = nlohmann::json::parse(args.json);
    if (!j.is_array()) throw std::runtime_error("expected an array");
    for (const auto& e : j) {
      const std::optional<int64_t> step = json_int64(e.at("step"));
      if (!step) throw std::runtime_error("\"step\" " + e.at("step").dump() + " is not an integer");
      out.push_back({*step, e.at("path").get<std::string>()});
    }
  } catch (const std::exception& e) {
    throw PluginError(LYRE_ERROR_INTERNAL, context + "returned malformed JSON (" + e.what() + "): " + args.json);
  }
  return out;
}

std::optional<LoadedCheckpoint> Checkpointer::load(int64_t step) {
  auto args = make_args<LyreCheckpointer_Load_Args>();
  args.checkpointer = checkpointer_;
  args.step = step;
  const std::string context = plugin_->name() + ": load";
  try {
    check(checkpointer_table(*plugin_).load(&args), context);
  } catch (const PluginError& e) {
    // "Nothing to resume from" is an answer, not a failure; a missing explicit step is.
    if (e.code() == LYRE_ERROR_NOT_FOUND && step == -1) return std::nullopt;
    throw;
  }
  if (args.num_tensors > 0 && (args.names == nullptr || args.tensors == nullptr)) {
    throw PluginError(LYRE_ERROR_INTERNAL, context + ": returned tensors without names or DLTensors");
  }
  LoadedCheckpoint out;
  out.step = args.loaded_step;
  out.metadata_json = args.metadata_json != nullptr ? args.metadata_json : "";
  out.tensors.reserve(args.num_tensors);
  for (size_t i = 0; i < args.num_tensors; ++i) {
    const DLTensor* d = args.tensors[i];
    const std::string name = args.names[i] != nullptr ? args.names[i] : "";
    auto bad = [&](const std::string& what) {
      return PluginError(LYRE_ERROR_INTERNAL, context + ": tensor " + std::to_string(i) + " (\"" + name + "\"): " + what);
    };
    if (d == nullptr) throw bad("DLTensor is NULL");
    if (d->device.device_type != kDLCPU) throw bad("not in host memory");
    if (d->ndim < 0 || (d->ndim > 0 && d->shape == nullptr)) throw bad("no shape");
    HostTensor t;
    t.name = name;
    t.dtype = d->dtype;
    t.shape.assign(d->shape, d->shape + d->ndim);
    if (d->strides != nullptr) {
      int64_t expected = 1;
      for (int k = d->ndim - 1; k >= 0; --k) {
        if (d->shape[k] != 1 && d->strides[k] != expected) throw bad("not contiguous");
        expected *= d->shape[k];
      }
    }
    const size_t nbytes = static_cast<size_t>(numel(t.shape)) * element_bytes(t.dtype);
    if (nbytes > 0 && d->data == nullptr) throw bad("data is NULL");
    t.bytes.resize(nbytes);
    if (nbytes > 0) std::memcpy(t.bytes.data(), static_cast<const char*>(d->data) + d->byte_offset, nbytes);
    out.tensors.push_back(std::move(t));
  }
  return out;
}

}  // namespace lyre
