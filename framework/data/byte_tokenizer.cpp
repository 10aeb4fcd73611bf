#include "data/byte_tokenizer.hpp"

#include <stdexcept>

namespace lyre {

namespace {
const char* const kSpecialNames[] = {"<bos>", "<eos>", "<pad>"};
}

ByteTokenizer::ByteTokenizer() {
  info_.source = "byte";
  info_.kind = "byte";
  info_.bos_id = kBos;
  info_.eos_id = kEos;
  info_.pad_id = kPad;
  info_.prefix_ids = {kBos};
}

Encoding ByteTokenizer::encode(std::string_view text, bool with_offsets) const {
  Encoding enc;
  enc.ids.reserve(text.size());
  // Through unsigned char: bytes >= 0x80 (UTF-8 continuation, invalid UTF-8) must map to 128..255.
  for (char c : text) enc.ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  if (with_offsets) {
    enc.begin.resize(text.size());
    enc.end.resize(text.size());
    for (uint32_t i = 0; i < text.size(); ++i) enc.begin[i] = i, enc.end[i] = i + 1;
  }
  return enc;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= kVocabSize)
      throw std::out_of_range("ByteTokenizer::decode: id " + std::to_string(id) + " is outside [0, " +
                              std::to_string(kVocabSize) + ")");
    if (id < 256) text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    else if (!skip_special) text += kSpecialNames[id - 256];
  }
  return text;
}

std::optional<int32_t> ByteTokenizer::token_to_id(std::string_view token) const {
  if (token.size() == 1) return static_cast<int32_t>(static_cast<unsigned char>(token[0]));
  for (int32_t k = 0; k < 3; ++k)
    if (token == kSpecialNames[k]) return kBos + k;
  return std::nullopt;
}

std::string ByteTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= kVocabSize)
    throw std::out_of_range("ByteTokenizer: id " + std::to_string(id) + " is outside [0, " + std::to_string(kVocabSize) + ")");
  if (id < 256) return std::string(1, static_cast<char>(static_cast<unsigned char>(id)));
  return kSpecialNames[id - 256];
}

}  // namespace lyre
