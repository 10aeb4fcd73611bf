// One save: its arguments checked and snapshotted (SaveJob), and the writing of the checkpoint
// directory: into .tmp-step_N.<pid>/, every file and the directory fsync'ed, then renamed into
// place and the save directory fsync'ed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "lyre/abi.h"

namespace lyre::ckpt {

// Memory for the copies an async save takes; kept between saves so that the next copy does not
// fault in fresh pages.
struct CopyBuffer {
  std::unique_ptr<char[]> data;
  size_t capacity = 0;
};

struct TensorEntry {
  std::string name;  // inside its group: "model/x.weight" -> "x.weight"
  safetensors::Dtype dtype = safetensors::Dtype::F32;
  std::vector<int64_t> shape;
  const char* data = nullptr;
  size_t nbytes = 0;
};

// The tensors of one <group>.safetensors, in the order the caller gave them.
struct GroupEntry {
  std::string name;
  std::vector<TensorEntry> tensors;
  size_t nbytes = 0;
};

struct SaveJob {
  int64_t step = 0;
  std::vector<GroupEntry> groups;  // in order of first appearance
  std::string metadata_json;
  size_t nbytes = 0;  // all tensor bytes
  // The test hook LYRE_CHECKPOINTER_TEST_CRASH_AT_STEP names this step (see plugin.cpp).
  bool crash_mid_write = false;
  CopyBuffer buffer;  // what the tensors point into after take_copy
};

// Checks a save's arguments and describes it; the tensors still point at the caller's memory.
// Errors (plugin::Error, INVALID_ARGUMENT) start with "step N: " and name the tensor.
SaveJob make_job(int64_t step, size_t num_tensors, const char* const* names, const DLTensor* const* tensors,
                 const char* metadata_json);

// Copies every tensor into one buffer (`spare` when it is large enough) and points the job at
// the copies, so that the caller's memory is free once this returns.
void take_copy(SaveJob& job, CopyBuffer&& spare);

// Writes the checkpoint and publishes it as <save_dir>/step_N, replacing an existing one only
// once the new one is complete. Returns the published path. On failure the temporary directory
// is removed and std::runtime_error names the path and the reason.
std::string write_checkpoint(const std::string& save_dir, const SaveJob& job);

}  // namespace lyre::ckpt
