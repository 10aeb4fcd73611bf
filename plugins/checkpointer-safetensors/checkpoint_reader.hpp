// Opens one complete checkpoint: every <group>.safetensors memory-mapped and validated, tensors
// handed out as DLTensors pointing into the maps, and trainer_state.json.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "lyre/abi.h"

namespace lyre::ckpt {

class OpenCheckpoint {
 public:
  // Throws std::runtime_error (safetensors::FormatError among them) whose text starts with the
  // path of the file at fault and says what is wrong with it.
  static std::unique_ptr<OpenCheckpoint> open(const std::string& dir, int64_t step);

  int64_t step() const { return step_; }
  size_t size() const { return tensors_.size(); }
  const char* const* names() const { return name_ptrs_.data(); }
  const DLTensor* const* tensors() const { return tensor_ptrs_.data(); }
  const std::string& metadata_json() const { return metadata_json_; }

 private:
  OpenCheckpoint() = default;

  int64_t step_ = 0;
  std::vector<safetensors::File> files_;
  std::vector<std::string> names_;             // "<group>/<name>"
  std::vector<std::vector<int64_t>> shapes_;
  std::vector<std::unique_ptr<char[]>> realigned_;  // copies of tensors the file leaves misaligned
  std::vector<DLTensor> tensors_;
  std::vector<const char*> name_ptrs_;
  std::vector<const DLTensor*> tensor_ptrs_;
  std::string metadata_json_;
};

}  // namespace lyre::ckpt
