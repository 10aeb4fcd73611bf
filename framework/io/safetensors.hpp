// Safetensors files, read and written by lyre's own code (the format: an 8-byte little-endian
// header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
// "__metadata__": {string: string}}, then the tensor bytes, offsets relative to the byte after the
// header).
//
// Reading memory-maps the file and validates every header field before any tensor is touched:
// the header length and every data_offsets pair lie inside the file, dtype and shape agree with
// the byte count, tensors neither overlap nor leave holes, and the data ends where the file
// does. Every failure is a FormatError whose text starts with the file's path and names the
// tensor and the field.
//
// This file and mapped_file.* are compiled into lyre_io_shared, which the host and the
// checkpointer-safetensors plugin both link; they depend on nothing of the host but
// nlohmann_json.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lyre::safetensors {

// A file that is not valid safetensors. what() reads "<path>: <what is wrong>".
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The format's dtype names: "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL".
enum class Dtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(Dtype dtype);           // bytes per element
const char* dtype_name(Dtype dtype);      // "BF16"
std::optional<Dtype> parse_dtype(std::string_view name);

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;  // [] is a scalar (one element)
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the start of the data section

  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// A validated, read-only safetensors file. Tensor bytes are read in place from the map (or the
// borrowed buffer); nothing is copied until a caller converts.
class File {
 public:
  // Maps and validates `path`. Throws FormatError (bad content) or std::runtime_error (cannot
  // open or map; names the path and the system's reason).
  static File open(const std::string& path);
  // Validates `size` bytes at `data`, which must outlive the File. `name` stands in for the
  // path in messages. (The fuzz target and tests read buffers this way.)
  static File parse(const std::string& name, const char* data, size_t size);

  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  const std::string& path() const { return path_; }
  // In order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  // Throws FormatError "<path>: no tensor \"<name>\"".
  const TensorInfo& at(std::string_view name) const;
  // The tensor's bytes inside the file (little-endian, unaligned in general).
  const char* data(const TensorInfo& tensor) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  File() = default;
  void parse_header();

  struct Mapping;
  std::unique_ptr<Mapping> mapping_;  // null for parse()
  std::string path_;
  const char* bytes_ = nullptr;  // the whole file
  size_t size_ = 0;
  size_t data_start_ = 0;  // 8 + header length
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Element conversion between the floating dtypes (F64, F32, F16, BF16). To a narrower type it
// rounds to nearest, ties to even, as PyTorch's .to(torch.bfloat16) does; NaN stays NaN and
// infinities stay infinite. Throws std::invalid_argument for other dtypes. `src` may be
// unaligned.
void convert(Dtype from, const void* src, Dtype to, void* dst, size_t count);

// One tensor to write: `data` holds numel * dtype_size bytes, borrowed for the call.
struct TensorRef {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Writes a safetensors file: the header lists tensors in the given order with contiguous
// offsets and is padded with spaces to a multiple of 8 bytes (so data starts aligned, as the
// reference writer does). With `durable`, the file is fsync'ed before returning. Errors
// (std::runtime_error) name the path and the system's reason. Names must be unique and not
// "__metadata__" (std::invalid_argument).
void write_file(const std::string& path, const std::vector<TensorRef>& tensors,
                const std::map<std::string, std::string>& metadata = {}, bool durable = true);

// The header exactly as write_file writes it (8-byte length + padded JSON), for writers that
// stream the tensor bytes themselves.
std::string encode_header(const std::vector<TensorRef>& tensors,
                          const std::map<std::string, std::string>& metadata = {});

}  // namespace lyre::safetensors
