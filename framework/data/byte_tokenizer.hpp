// The byte-level tokenizer: ids 0..255 are bytes, then BOS, EOS and PAD. Real tokenizers
// (tokenizer.json, SentencePiece, GPT-2 BPE) arrive with the data issue.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lyre {

class ByteTokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int32_t kPad = 258;
  static constexpr int32_t kVocabSize = 259;

  std::vector<int32_t> encode(std::string_view text) const;  // bytes only, no BOS/EOS
  // Bytes back to text; special ids are skipped. Any id outside [0, kVocabSize) throws
  // std::out_of_range naming it.
  std::string decode(const std::vector<int32_t>& ids) const;
  int32_t bos_id() const { return kBos; }
  int32_t eos_id() const { return kEos; }
  int32_t pad_id() const { return kPad; }
  int32_t vocab_size() const { return kVocabSize; }
};

}  // namespace lyre
