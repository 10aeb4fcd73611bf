// libFuzzer target for the safetensors reader: each input is a whole file, parsed from memory.
// A file the reader accepts must keep its promises: every tensor's bytes lie inside the input
// (every byte is read, so AddressSanitizer sees any that do not), the tensors tile the data
// section, and floating tensors convert. Rejections are expected; crashes, sanitizer reports
// and broken invariants are bugs.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "io/safetensors.hpp"

namespace {

namespace st = lyre::safetensors;

volatile unsigned g_sink;  // keeps the reads of every tensor byte from being optimised away

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool is_floating(st::Dtype dtype) {
  return dtype == st::Dtype::F64 || dtype == st::Dtype::F32 || dtype == st::Dtype::F16 || dtype == st::Dtype::BF16;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes, so that a read past the end is a heap overflow to ASan.
  const std::vector<char> input(data, data + size);
  try {
    const st::File file = st::File::parse("fuzz.safetensors", input.data(), input.size());
    uint64_t covered = 0;
    unsigned checksum = 0;
    for (const st::TensorInfo& tensor : file.tensors()) {
      check(tensor.begin == covered);
      covered = tensor.end;
      check(tensor.numel() * st::dtype_size(tensor.dtype) == tensor.nbytes());
      check(file.find(tensor.name) == &tensor);
      const char* bytes = file.data(tensor);
      check(bytes >= input.data() && bytes + tensor.nbytes() <= input.data() + input.size());
      for (uint64_t i = 0; i < tensor.nbytes(); ++i) checksum += static_cast<unsigned char>(bytes[i]);
      if (is_floating(tensor.dtype)) {
        const size_t count = static_cast<size_t>(std::min<uint64_t>(tensor.numel(), 1024));
        std::vector<float> as_f32(count);
        std::vector<char> back(count * st::dtype_size(tensor.dtype));
        st::convert(tensor.dtype, bytes, st::Dtype::F32, as_f32.data(), count);
        st::convert(st::Dtype::F32, as_f32.data(), tensor.dtype, back.data(), count);
        // Widening is exact, so narrowing back only differs on NaNs (quieted, payload cut).
        if (tensor.dtype != st::Dtype::F64) {
          for (size_t i = 0; i < count; ++i) {
            if (as_f32[i] == as_f32[i]) {
              check(std::memcmp(back.data() + i * st::dtype_size(tensor.dtype),
                                bytes + i * st::dtype_size(tensor.dtype), st::dtype_size(tensor.dtype)) == 0);
            }
          }
        }
      }
    }
    // The tensors tile the data section, which ends where the input does.
    uint64_t header_length = 0;
    std::memcpy(&header_length, input.data(), 8);
    check(8 + header_length + covered == input.size());
    // Re-encoding what was read must give a header that parses to the same tensors.
    std::vector<st::TensorRef> refs;
    for (const st::TensorInfo& tensor : file.tensors()) {
      refs.push_back({tensor.name, tensor.dtype, tensor.shape, file.data(tensor)});
    }
    std::string again = st::encode_header(refs, file.metadata());
    check(again.size() % 8 == 0);
    for (const st::TensorInfo& tensor : file.tensors()) again.append(file.data(tensor), tensor.nbytes());
    const st::File reread = st::File::parse("again.safetensors", again.data(), again.size());
    check(reread.tensors().size() == file.tensors().size());
    check(reread.metadata() == file.metadata());
    for (const st::TensorInfo& tensor : reread.tensors()) {
      const st::TensorInfo& original = file.at(tensor.name);
      check(tensor.dtype == original.dtype && tensor.shape == original.shape);
      check(std::memcmp(reread.data(tensor), file.data(original), tensor.nbytes()) == 0);
    }
    g_sink = checksum;
  } catch (const st::FormatError&) {
    // Bad input is reported, not crashed on.
  }
  return 0;
}
