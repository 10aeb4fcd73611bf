#include "data/byte_tokenizer.hpp"

#include <stdexcept>

namespace lyre {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  // Through unsigned char: bytes >= 0x80 (UTF-8 continuation, invalid UTF-8) must map to 128..255.
  for (char c : text) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= kVocabSize)
      throw std::out_of_range("ByteTokenizer::decode: id " + std::to_string(id) + " is outside [0, " +
                              std::to_string(kVocabSize) + ")");
    if (id < 256) text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
  }
  return text;
}

}  // namespace lyre
