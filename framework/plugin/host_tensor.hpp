// A tensor the host owns in host memory, named: what crosses to a checkpointer and comes back,
// and what an optimizer's state is read into.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lyre/abi.h"

namespace lyre {

struct HostTensor {
  std::string name;
  DLDataType dtype{kDLFloat, 32, 1};
  std::vector<int64_t> shape;
  std::vector<char> bytes;  // numel * dtype bytes, row-major

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// "float32", "int64", ... and "[2, 3]", for messages.
std::string dtype_text(DLDataType dtype);
std::string shape_text(const std::vector<int64_t>& shape);

}  // namespace lyre
