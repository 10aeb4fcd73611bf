// The HF "tokenizers" pipeline for BPE models: added tokens cut out of the raw text, normalizers,
// pre-tokenizers, the BPE model and the decoders. tokenizer.json and GPT-2's vocab/merges files
// both load into this one class (tokenizer_json.cpp, gpt2_files.cpp build its BpeConfig).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/tokenizer.hpp"
#include "data/tokenizers/added_tokens.hpp"
#include "data/tokenizers/regex.hpp"
#include "data/tokenizers/string_table.hpp"

namespace lyre::tok {

// Normalizers, plus the string edits of pre-tokenizers (Metaspace's replacement and prefix,
// ByteLevel's add_prefix_space), which run on each added-token-free segment in this order.
struct NormalizerStep {
  enum class Kind { NFC, NFKC, NFD, NFKD, Prepend, Replace, MetaspaceEdit, PrefixSpace };
  NormalizerStep(Kind k) : kind(k) {}  // NOLINT: implicit, for push_back({Kind::NFC})
  Kind kind;
  std::string from, to;          // Replace: pattern -> content; Prepend/MetaspaceEdit: `to` is prepended
  std::shared_ptr<Regex> regex;  // Replace with a {"Regex": ...} pattern
  bool first_only = false;       // MetaspaceEdit with prepend_scheme "first"
  bool prepend = true;           // MetaspaceEdit: prepend_scheme != "never"
};

// Pre-tokenizer splitting, HF's SplitDelimiterBehavior over regex or literal matches.
struct SplitStep {
  enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
  SplitStep() = default;
  SplitStep(std::shared_ptr<Regex> r) : regex(std::move(r)) {}  // NOLINT: implicit
  std::shared_ptr<Regex> regex;  // or, when null, the literal:
  std::string literal;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
};

struct DecoderStep {
  enum class Kind { ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip };
  DecoderStep(Kind k) : kind(k) {}  // NOLINT: implicit
  Kind kind;
  std::string from, to;  // Replace; Metaspace: from = replacement; Strip: from = content
  int start = 0, stop = 0;
  bool strip_first_space = false;  // Metaspace with a prepend scheme
};

struct BpeConfig {
  std::string source, kind;
  std::vector<std::string> vocab;  // id -> token; ids absent from the file hold ""
  std::vector<std::pair<std::string, std::string>> merges;  // by rank
  bool byte_level = false;         // a ByteLevel pre-tokenizer maps bytes to characters
  bool byte_fallback = false, ignore_merges = false, fuse_unk = false;
  int32_t unk_id = -1;
  std::vector<NormalizerStep> normalizers;
  std::vector<SplitStep> splits;
  std::vector<AddedToken> added;
  bool has_decoder = false;
  std::vector<DecoderStep> decoders;
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Throws std::runtime_error naming config.source for merges outside the vocabulary.
  explicit BpeTokenizer(BpeConfig config);

  Encoding encode(std::string_view text, bool with_offsets = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(vocab_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override;

  TokenizerInfo& mutable_info() { return info_; }
  const std::vector<AddedToken>& added_tokens() const { return config_.added; }

 private:
  struct Piece {
    int32_t id;
    uint32_t len;  // bytes of the pre-token it covers
  };
  void encode_segment(std::string_view text, size_t seg_begin, bool with_offsets, Encoding& out) const;
  void bpe_word(std::string_view word, std::vector<Piece>& out) const;
  void merge_symbols(std::vector<Piece>& syms) const;

  BpeConfig config_;
  std::vector<std::string>& vocab_ = config_.vocab;
  StringIndex by_token_;
  std::vector<std::string> raw_;  // byte-level: each token's bytes; indexed by by_raw_
  StringIndex by_raw_;
  MergeTable merges_;
  // Metaspace models without a pre-tokenizer BPE whole lines. When no token holds "▁" after
  // another character, no merge can cross the start of a "▁" run: cutting there gives the same
  // ids and short, cacheable words.
  bool cut_before_metaspace_ = false;
  int32_t byte_id_[256];      // byte-level: id of each byte's character
  int32_t fallback_id_[256];  // <0xXX>
  int32_t ascii_id_[128];     // character models: id of each ASCII character
  std::vector<uint8_t> special_;
  std::unordered_map<std::string, int32_t> added_by_content_;
  AddedTokenMatcher matcher_;

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<Piece>> cache_;
};

}  // namespace lyre::tok
