#include "checkpoint_writer.hpp"

#include <signal.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "durable_io.hpp"
#include "file_metadata.hpp"
#include "io/checkpoint_layout.hpp"
#include "lyre/plugin.hpp"
#include "save_dir.hpp"

namespace lyre::ckpt {
namespace {

namespace layout = checkpoint_layout;
using safetensors::Dtype;

std::optional<Dtype> safetensors_dtype(DLDataType t) {
  if (t.lanes != 1) return std::nullopt;
  switch (t.code) {
    case kDLFloat:
      if (t.bits == 64) return Dtype::F64;
      if (t.bits == 32) return Dtype::F32;
      if (t.bits == 16) return Dtype::F16;
      return std::nullopt;
    case kDLBfloat:
      return t.bits == 16 ? std::optional<Dtype>(Dtype::BF16) : std::nullopt;
    case kDLInt:
      if (t.bits == 64) return Dtype::I64;
      if (t.bits == 32) return Dtype::I32;
      if (t.bits == 16) return Dtype::I16;
      if (t.bits == 8) return Dtype::I8;
      return std::nullopt;
    case kDLUInt:
      return t.bits == 8 ? std::optional<Dtype>(Dtype::U8) : std::nullopt;
    default:
      return std::nullopt;
  }
}

// The group becomes a file name: nothing that could leave the directory or hide the file.
bool valid_group(const std::string& group) {
  if (group.empty() || group[0] == '.') return false;
  return std::all_of(group.begin(), group.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

TensorEntry describe(const std::string& where, const DLTensor* t) {
  auto bad = [&](const std::string& what) { throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, where + ": " + what); };
  if (t == nullptr) bad("tensor is NULL");
  const auto dtype = safetensors_dtype(t->dtype);
  if (!dtype) bad("dtype " + plugin::dtype_name(t->dtype) + " (lanes " + std::to_string(t->dtype.lanes) +
                  ") has no safetensors equivalent");
  if (t->device.device_type != kDLCPU && t->device.device_type != kDLCUDAHost)
    bad("not in host memory (device type " + std::to_string(static_cast<int>(t->device.device_type)) + ")");
  if (t->ndim < 0 || (t->ndim > 0 && t->shape == nullptr)) bad("ndim " + std::to_string(t->ndim) + " without a shape");
  TensorEntry e;
  e.dtype = *dtype;
  uint64_t numel = 1;
  for (int i = 0; i < t->ndim; ++i) {
    if (t->shape[i] < 0) bad("negative dimension " + std::to_string(t->shape[i]));
    e.shape.push_back(t->shape[i]);
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(t->shape[i]), &numel)) bad("too many elements");
  }
  if (!lyre::plugin::is_contiguous(*t)) bad("not contiguous (the checkpointer writes row-major bytes as they are)");
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(safetensors::dtype_size(*dtype)), &numel))
    bad("too many bytes");
  e.nbytes = numel;
  if (t->data == nullptr && e.nbytes > 0) bad("data is NULL");
  e.data = static_cast<const char*>(t->data) + t->byte_offset;
  return e;
}

void check_metadata(const std::string& where, const char* metadata_json) {
  auto bad = [&](const std::string& what) { throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, where + what); };
  if (metadata_json == nullptr) bad("metadata_json is NULL");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(metadata_json);
  } catch (const nlohmann::json::parse_error& e) {
    bad(std::string("metadata_json is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad(std::string("metadata_json must be a JSON object, got ") + j.type_name());
}

std::vector<safetensors::TensorRef> refs_of(const GroupEntry& group) {
  std::vector<safetensors::TensorRef> refs;
  refs.reserve(group.tensors.size());
  for (const TensorEntry& t : group.tensors) refs.push_back({t.name, t.dtype, t.shape, t.data});
  return refs;
}

// Streams one <group>.safetensors: the header as safetensors::encode_header makes it, then the
// bytes in the same order (encode_header gives contiguous offsets in list order).
void write_group(const std::string& path, const GroupEntry& group, const std::map<std::string, std::string>& metadata,
                 bool crash_mid_write) {
  const std::string header = safetensors::encode_header(refs_of(group), metadata);
  Fd fd = create_file(path);
  write_all(fd, header.data(), header.size(), path);
  size_t budget = crash_mid_write ? group.nbytes / 2 : SIZE_MAX;
  for (const TensorEntry& t : group.tensors) {
    const size_t n = std::min(t.nbytes, budget);
    write_all(fd, t.data, n, path);
    if (crash_mid_write) {
      budget -= n;
      if (budget == 0) break;
    }
  }
  if (crash_mid_write) ::raise(SIGKILL);  // the test hook: a real kill -9 halfway through the file
  sync_and_close(fd, path);
}

void write_files(const std::string& dir, const SaveJob& job) {
  std::string groups;
  for (const GroupEntry& g : job.groups) groups += (groups.empty() ? "" : ",") + g.name;
  const std::map<std::string, std::string> metadata = {
      {kFormatKey, kFormatValue}, {kStepKey, std::to_string(job.step)}, {kGroupsKey, groups}};
  for (size_t i = 0; i < job.groups.size(); ++i) {
    write_group(dir + "/" + job.groups[i].name + ".safetensors", job.groups[i], metadata,
                job.crash_mid_write && i == 0);
  }
  // Last: its presence is what marks a directory complete.
  write_text_file(dir + "/" + layout::kTrainerState, job.metadata_json);
  sync_directory(dir);
}

// Moves the finished `tmp` to `final`. An existing checkpoint of the same step stays in place
// until the new one takes its name in one atomic exchange; only then is the old one deleted.
void publish(const std::string& tmp, const std::string& final_path, const std::string& save_dir) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(final_path, ec))) {
    rename_path(tmp, final_path);
    sync_directory(save_dir);
    return;
  }
  if (exchange_paths(tmp, final_path)) {
    sync_directory(save_dir);
    remove_tree(tmp);  // now the old checkpoint, invisible under its .tmp- name
    return;
  }
  // No RENAME_EXCHANGE on this file system: between these two renames the step is only in
  // .trash-/.tmp- names, a window of two metadata operations.
  const std::string trash = trash_path(save_dir, std::filesystem::path(final_path).filename().string());
  remove_tree(trash);
  rename_path(final_path, trash);
  rename_path(tmp, final_path);
  sync_directory(save_dir);
  remove_tree(trash);
}

}  // namespace

SaveJob make_job(int64_t step, size_t num_tensors, const char* const* names, const DLTensor* const* tensors,
                 const char* metadata_json) {
  const std::string where = "step " + std::to_string(step) + ": ";
  auto bad = [&](const std::string& what) { throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, where + what); };
  if (step < 0) throw plugin::Error(LYRE_ERROR_INVALID_ARGUMENT, "step must be >= 0, got " + std::to_string(step));
  if (num_tensors > 0 && (names == nullptr || tensors == nullptr)) bad("names or tensors is NULL");
  check_metadata(where, metadata_json);

  SaveJob job;
  job.step = step;
  job.metadata_json = metadata_json;
  std::set<std::string> seen;
  std::map<std::string, size_t> group_index;
  for (size_t i = 0; i < num_tensors; ++i) {
    if (names[i] == nullptr) bad("name of tensor " + std::to_string(i) + " is NULL");
    const std::string full = names[i];
    const std::string tensor_where = where + "tensor \"" + full + "\"";
    const size_t slash = full.find('/');
    if (slash == std::string::npos || slash + 1 == full.size())
      bad("tensor \"" + full + "\": name must be \"<group>/<name>\" (\"model/lm_head.weight\")");
    const std::string group = full.substr(0, slash);
    if (!valid_group(group))
      bad("tensor \"" + full + "\": group \"" + group +
          "\" must be letters, digits, '_', '-' or '.' and not start with '.' (it names the file)");
    if (full.compare(slash + 1, std::string::npos, "__metadata__") == 0)
      bad("tensor \"" + full + "\": \"__metadata__\" is reserved by the safetensors format");
    if (!seen.insert(full).second) bad("tensor \"" + full + "\" given twice");
    TensorEntry entry = describe(tensor_where, tensors[i]);
    entry.name = full.substr(slash + 1);
    auto [it, added] = group_index.emplace(group, job.groups.size());
    if (added) job.groups.push_back(GroupEntry{group, {}, 0});
    GroupEntry& g = job.groups[it->second];
    g.nbytes += entry.nbytes;
    job.nbytes += entry.nbytes;
    g.tensors.push_back(std::move(entry));
  }
  return job;
}

void take_copy(SaveJob& job, CopyBuffer&& spare) {
  job.buffer = std::move(spare);
  if (job.buffer.capacity < job.nbytes) {
    job.buffer.data.reset();  // give the old pages back before taking the new ones
    // new char[] leaves the bytes uninitialised: the copy below writes every one.
    job.buffer.data.reset(new char[job.nbytes]);
    job.buffer.capacity = job.nbytes;
  }
  char* out = job.buffer.data.get();
  for (GroupEntry& g : job.groups) {
    for (TensorEntry& t : g.tensors) {
      if (t.nbytes > 0) std::memcpy(out, t.data, t.nbytes);
      t.data = out;
      out += t.nbytes;
    }
  }
}

std::string write_checkpoint(const std::string& save_dir, const SaveJob& job) {
  const std::string tmp = temp_path(save_dir, job.step);
  const std::string final_path = save_dir + "/" + layout::step_dir_name(job.step);
  remove_tree(tmp);  // an earlier failed save of this step by this process
  make_directory(tmp);
  try {
    write_files(tmp, job);
    publish(tmp, final_path, save_dir);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(tmp, ec);  // best effort; the next run removes it otherwise
    throw;
  }
  return final_path;
}

}  // namespace lyre::ckpt
