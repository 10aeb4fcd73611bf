// SentencePiece .model files through libsentencepiece. Control pieces written in the text
// ("<s>", "</s>") become their ids as HF does; SentencePiece itself would spell them out.
//
// This file is not part of the host library: it is built into its own module,
// liblyre-sentencepiece.so, which sentencepiece_module.cpp loads privately on first use (see
// there why). Its one exported symbol is lyre_sentencepiece_load.
#include <sentencepiece_processor.h>

#include <stdexcept>

#include "data/tokenizers/added_tokens.hpp"
#include "data/tokenizers/loaders.hpp"

namespace lyre::tok {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    const auto status = sp_.Load(path);
    if (!status.ok()) throw std::runtime_error(path + ": not a SentencePiece model: " + status.ToString());
    info_.source = path;
    info_.kind = "sentencepiece";
    info_.bos_id = sp_.bos_id();
    info_.eos_id = sp_.eos_id();
    info_.pad_id = sp_.pad_id();
    info_.unk_id = sp_.unk_id();
    std::vector<AddedToken> controls;
    for (int id = 0; id < sp_.GetPieceSize(); ++id) {
      if (!sp_.IsControl(id)) continue;
      AddedToken t;
      t.content = sp_.IdToPiece(id);
      t.id = id;
      t.special = true;
      if (!t.content.empty()) controls.push_back(t);
    }
    if (!sp_.IsUnknown(info_.unk_id)) info_.unk_id = -1;
    matcher_.build(controls);
  }

  Encoding encode(std::string_view text, bool with_offsets) const override {
    Encoding enc;
    std::vector<Segment> segments;
    matcher_.split(text, segments);
    for (const Segment& s : segments) {
      if (s.id >= 0) {
        enc.ids.push_back(s.id);
        if (with_offsets) {
          enc.begin.push_back(static_cast<uint32_t>(s.begin));
          enc.end.push_back(static_cast<uint32_t>(s.end));
        }
        continue;
      }
      const std::string_view part = text.substr(s.begin, s.end - s.begin);
      if (!with_offsets) {
        std::vector<int> ids;
        sp_.Encode(absl::string_view(part.data(), part.size()), &ids);
        enc.ids.insert(enc.ids.end(), ids.begin(), ids.end());
        continue;
      }
      const auto spt = sp_.EncodeAsImmutableProto(absl::string_view(part.data(), part.size()));
      for (const auto& p : spt.pieces()) {
        enc.ids.push_back(static_cast<int32_t>(p.id()));
        enc.begin.push_back(static_cast<uint32_t>(s.begin + p.begin()));
        enc.end.push_back(static_cast<uint32_t>(s.begin + p.end()));
      }
    }
    return enc;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::vector<int> keep;
    keep.reserve(ids.size());
    std::string out;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size())
        throw std::out_of_range(info_.source + ": cannot decode token id " + std::to_string(id) + ", outside [0, " +
                                std::to_string(vocab_size()) + ")");
      if (sp_.IsControl(id)) {
        // libsentencepiece drops control pieces; spell them out unless asked to skip them, as HF does.
        if (skip_special) continue;
        std::string piece;
        sp_.Decode(keep, &piece);
        out += piece + sp_.IdToPiece(id);
        keep.clear();
        continue;
      }
      keep.push_back(id);
    }
    std::string piece;
    sp_.Decode(keep, &piece);
    return out + piece;
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int id = sp_.PieceToId(absl::string_view(token.data(), token.size()));
    if (id == sp_.unk_id() && token != sp_.IdToPiece(id)) return std::nullopt;
    return id;
  }
  std::string id_to_token(int32_t id) const override {
    if (id < 0 || id >= vocab_size())
      throw std::out_of_range(info_.source + ": token id " + std::to_string(id) + " is outside the vocabulary");
    return sp_.IdToPiece(id);
  }
  bool is_special(int32_t id) const override { return id >= 0 && id < vocab_size() && (sp_.IsControl(id) || sp_.IsUnknown(id)); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  AddedTokenMatcher matcher_;
};

}  // namespace

}  // namespace lyre::tok

// A new tokenizer the caller owns (and deletes through Tokenizer's virtual destructor). Throws
// std::runtime_error naming the file when it is not a SentencePiece model: the module and the
// host are built together, so C++ exceptions may cross.
extern "C" __attribute__((visibility("default"))) lyre::Tokenizer* lyre_sentencepiece_load(const char* model_path) {
  return new lyre::tok::SentencePieceTokenizer(model_path);
}
