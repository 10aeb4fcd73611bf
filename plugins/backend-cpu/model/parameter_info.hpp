// A named parameter's place in a backend's flat buffers, laid out the way both Llama backends
// lay them: end to end in the order they are added, so parameters added one after another are
// adjacent (how the models fuse q/k/v, and gate/up, into one GEMM).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "lyre/abi.h"

namespace lyre::cpu {

struct ParameterInfo {
  std::string name;  // Hugging Face name
  LyreParamKind kind = LYRE_PARAM_MATRIX;
  bool trainable = true;
  std::vector<int64_t> shape;
  size_t offset = 0;  // into the store's flat buffers (values, gradients, ...)
  size_t numel = 0;
};

// Appends a parameter right after the last one of `infos` (numel from its shape); returns its
// index.
size_t append_parameter(std::vector<ParameterInfo>& infos, std::string name, LyreParamKind kind,
                        std::vector<int64_t> shape);

// The elements of the trainable parameters.
int64_t trainable_numel(const std::vector<ParameterInfo>& infos);

}  // namespace lyre::cpu
