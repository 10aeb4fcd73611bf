// The byte-level toy tokenizer (load_tokenizer("byte"), the quickstart): ids 0..255 are bytes,
// then BOS, EOS and PAD. Lossless for any bytes; encode_with_special() puts BOS first.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.hpp"

namespace lyre {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int32_t kPad = 258;
  static constexpr int32_t kVocabSize = 259;

  ByteTokenizer();

  // One id per byte, no BOS/EOS; each id's range is its byte. "<bos>", "<eos>" and "<pad>" in the
  // text stay bytes: a byte tokenizer has no way to tell them from text.
  Encoding encode(std::string_view text, bool with_offsets = false) const override;
  // Bytes back to text. Special ids are written as "<bos>", "<eos>", "<pad>", or dropped when
  // skip_special. Any id outside [0, kVocabSize) throws std::out_of_range naming it.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t vocab_size() const override { return kVocabSize; }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override { return id >= kBos && id < kVocabSize; }

  int32_t bos_id() const { return kBos; }
  int32_t eos_id() const { return kEos; }
  int32_t pad_id() const { return kPad; }
};

}  // namespace lyre
