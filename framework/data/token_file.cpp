#include "data/token_file.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <utility>

// Ids are stored little-endian and copied as they are.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token_file.cpp reads little-endian ids directly; add a byte swap for this host"
#endif

namespace lyre {
namespace {

// Converts n ids to int32 and returns the index of the first one >= vocab_size, or n.
template <typename T>
int64_t convert(const char* bytes, int64_t n, int64_t vocab_size, int32_t* out) {
  // Mappings are page-aligned and every id is at a multiple of its size, but memcpy states it.
  int64_t bad = n;
  T max_seen = 0;
  for (int64_t i = 0; i < n; ++i) {
    T id;
    std::memcpy(&id, bytes + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
    max_seen = std::max(max_seen, id);
    out[i] = static_cast<int32_t>(id);
  }
  // The loop above stays branch-free so it vectorizes; find the culprit only when there is one.
  if (static_cast<int64_t>(max_seen) >= vocab_size)
    for (int64_t i = 0; i < n && bad == n; ++i)
      if (static_cast<int64_t>(static_cast<uint32_t>(out[i])) >= vocab_size) bad = i;
  return bad;
}

}  // namespace

const char* token_dtype_name(TokenDtype dtype) { return dtype == TokenDtype::uint16 ? "uint16" : "uint32"; }
int64_t token_dtype_size(TokenDtype dtype) { return dtype == TokenDtype::uint16 ? 2 : 4; }

TokenDtype resolve_token_dtype(const std::string& path, const std::string& dtype) {
  if (dtype == "uint16") return TokenDtype::uint16;
  if (dtype == "uint32") return TokenDtype::uint32;
  if (dtype != "auto")
    throw std::runtime_error(path + ": unknown token dtype \"" + dtype + "\"; use \"uint16\", \"uint32\" or \"auto\"");
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".u16") return TokenDtype::uint16;
  if (ext == ".u32") return TokenDtype::uint32;
  throw std::runtime_error(path + ": cannot tell the token dtype from the extension \"" + ext +
                           "\" (.u16 and .u32 say it); set dtype to \"uint16\" or \"uint32\"");
}

TokenFile::TokenFile(std::string path, MappedFile map, TokenDtype dtype, int64_t vocab_size)
    : path_(std::move(path)), map_(std::move(map)), dtype_(dtype), vocab_size_(vocab_size),
      num_tokens_(static_cast<int64_t>(map_.size()) / token_dtype_size(dtype)) {}

TokenFile TokenFile::open(const std::string& path, TokenDtype dtype, int64_t vocab_size) {
  if (vocab_size <= 0)
    throw std::runtime_error(path + ": vocab_size must be positive, got " + std::to_string(vocab_size));
  MappedFile map(path);
  const int64_t size = static_cast<int64_t>(map.size());
  const int64_t element = token_dtype_size(dtype);
  if (size == 0) throw std::runtime_error(path + ": the token file is empty");
  if (size % element != 0)
    throw std::runtime_error(path + ": " + std::to_string(size) + " bytes is not a whole number of " +
                             token_dtype_name(dtype) + " ids (" + std::to_string(element) +
                             " bytes each); is the dtype right?");
  return TokenFile(path, std::move(map), dtype, vocab_size);
}

void TokenFile::fail_id(int64_t index, int64_t id) const {
  throw std::runtime_error(path_ + ": token " + std::to_string(index) + " is " + std::to_string(id) +
                           ", not below vocab_size " + std::to_string(vocab_size_) +
                           "; was the file written with another tokenizer or dtype?");
}

void TokenFile::read(int64_t begin, int64_t count, int32_t* out) const {
  if (begin < 0 || count < 0 || begin > num_tokens_ || count > num_tokens_ - begin)
    throw std::runtime_error(path_ + ": tokens [" + std::to_string(begin) + ", " + std::to_string(begin + count) +
                             ") are outside the file's " + std::to_string(num_tokens_) + " tokens");
  const int64_t element = token_dtype_size(dtype_);
  const char* bytes = map_.data() + begin * element;
  const int64_t bad = dtype_ == TokenDtype::uint16 ? convert<uint16_t>(bytes, count, vocab_size_, out)
                                                   : convert<uint32_t>(bytes, count, vocab_size_, out);
  if (bad < count) fail_id(begin + bad, static_cast<int64_t>(static_cast<uint32_t>(out[bad])));
}

void TokenFile::check_ids() const {
  constexpr int64_t kChunk = int64_t{1} << 16;
  std::vector<int32_t> buffer(static_cast<size_t>(std::min(kChunk, num_tokens_)));
  map_.advise(MappedFile::Access::sequential);
  for (int64_t begin = 0; begin < num_tokens_; begin += kChunk)
    read(begin, std::min(kChunk, num_tokens_ - begin), buffer.data());
  map_.advise(MappedFile::Access::normal);
}

void write_token_file(const std::string& path, const std::vector<int32_t>& ids, TokenDtype dtype) {
  const int64_t max_id = dtype == TokenDtype::uint16 ? 0xFFFF : INT32_MAX;
  std::vector<char> bytes(ids.size() * static_cast<size_t>(token_dtype_size(dtype)));
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] > max_id)
      throw std::runtime_error(path + ": id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                               " does not fit " + token_dtype_name(dtype));
    if (dtype == TokenDtype::uint16) {
      const auto id = static_cast<uint16_t>(ids[i]);
      std::memcpy(bytes.data() + 2 * i, &id, 2);
    } else {
      const auto id = static_cast<uint32_t>(ids[i]);
      std::memcpy(bytes.data() + 4 * i, &id, 4);
    }
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error(path + ": cannot write the token file");
}

}  // namespace lyre
