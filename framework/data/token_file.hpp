// Pre-tokenized corpora for pretraining, as nanoGPT writes them: a raw, headerless array of
// little-endian uint16 or uint32 token ids, one document after another (separators, if any, are
// ids in the stream). The file is memory-mapped: opening costs address space, not memory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/mapped_file.hpp"

namespace lyre {

enum class TokenDtype { uint16, uint32 };
const char* token_dtype_name(TokenDtype dtype);  // "uint16", "uint32"
int64_t token_dtype_size(TokenDtype dtype);      // 2, 4

// The dtype a config asks for: "uint16" or "uint32", or "auto" to take it from the extension
// (.u16 -> uint16, .u32 -> uint32). A .bin file (nanoGPT) holds no hint, so "auto" is an error
// for it; so is an unknown name. Errors name the file.
TokenDtype resolve_token_dtype(const std::string& path, const std::string& dtype);

class TokenFile {
 public:
  // Checks that the file is non-empty and a whole number of ids; vocab_size (> 0) bounds the ids,
  // checked as they are read.
  static TokenFile open(const std::string& path, TokenDtype dtype, int64_t vocab_size);

  int64_t num_tokens() const { return num_tokens_; }
  TokenDtype dtype() const { return dtype_; }
  const std::string& path() const { return path_; }

  // Copies ids [begin, begin + count) to out. A range outside the file, or an id not below
  // vocab_size, is a std::runtime_error naming the file and the token index. Thread-safe.
  void read(int64_t begin, int64_t count, int32_t* out) const;

  // Reads every id once and fails like read() on the first one out of range: a pass over the
  // file at memory (or disk) speed, for callers that want bad data to fail before training.
  void check_ids() const;

 private:
  TokenFile(std::string path, MappedFile map, TokenDtype dtype, int64_t vocab_size);
  [[noreturn]] void fail_id(int64_t index, int64_t id) const;

  std::string path_;
  MappedFile map_;
  TokenDtype dtype_;
  int64_t vocab_size_;
  int64_t num_tokens_;
};

// Writes ids as a raw little-endian array of `dtype`. An id that does not fit the dtype is an
// error naming its index. For tests and tools.
void write_token_file(const std::string& path, const std::vector<int32_t>& ids, TokenDtype dtype);

}  // namespace lyre
