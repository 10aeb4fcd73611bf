// Text <-> token ids, as the model's own tokenizer does it. Every implementation here is checked
// against an independent one (tests/tokenizer): one id of difference silently ruins a fine-tune.
//
// Kinds, chosen by load_tokenizer() from what a model directory holds:
//   tokenizer.json                 HF "tokenizers" BPE: byte-level (GPT-2, Llama 3, Qwen2) or
//                                  Metaspace/byte-fallback (Llama 2, Mistral, Gemma)
//   tokenizer.model                SentencePiece, through Debian's libsentencepiece
//   vocab.json|encoder.json + merges.txt|vocab.bpe   GPT-2's original files
//   "byte" (no directory)          lyre's byte-level toy tokenizer (quickstart)
// tokenizer_config.json, when present beside them, supplies bos/eos/pad/unk tokens,
// add_bos_token/add_eos_token and the chat_template text. Where it has add_bos_token or
// add_eos_token, those decide prefix_ids/suffix_ids instead of the post-processor's template, as
// LlamaTokenizerFast/GemmaTokenizerFast rebuild it (so a BOS is never doubled). A .model without
// tokenizer_config.json gets [bos] as prefix, as LlamaTokenizer does by default.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lyre {

// One encoding: ids and, for each id, the byte range [begin, end) of the input text it came
// from. A token made of several pieces of one character (byte fallback, byte-level splitting a
// multi-byte character) gets that character's range, so neighbouring ranges may overlap by up to
// 3 bytes; inserted tokens (Metaspace's prefix "▁" alone) get an empty range at the position they
// stand for. Ranges are untrimmed (HF's trim_offsets does not apply): " world" covers its space.
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<uint32_t> begin, end;  // byte offsets into the encoded text, same length as ids
};

// What the tokenizer files say about special tokens. -1 where the files name none.
struct TokenizerInfo {
  std::string source;            // the file or directory it was loaded from, for messages
  std::string kind;              // "tokenizer.json (byte-level BPE)", "sentencepiece", "gpt2", "byte"
  int32_t bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;
  // Ids that encoding "one sequence with special tokens" puts around the text: the
  // post-processor's TemplateProcessing (Llama 3: [<|begin_of_text|>] and []), or
  // add_bos_token/add_eos_token of tokenizer_config.json (Llama 2: [<s>] and []).
  std::vector<int32_t> prefix_ids, suffix_ids;
  std::string chat_template;     // tokenizer_config.json's chat_template (Jinja text), or empty
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text to ids, without the post-processor's prefix/suffix. Added and special tokens written
  // in the text ("<|eot_id|>") become their ids, as a HF tokenizer does by default (matched in
  // the raw text, also those marked "normalized"; SentencePiece: its control pieces). Safe to
  // call from several threads at once. Any bytes
  // are accepted: invalid UTF-8 is encoded as its bytes (byte-level, byte fallback) or <unk>,
  // never a crash. Offsets are filled only when with_offsets is true.
  virtual Encoding encode(std::string_view text, bool with_offsets = false) const = 0;
  std::vector<int32_t> encode_ids(std::string_view text) const { return encode(text, false).ids; }
  // prefix_ids + encode(text) + suffix_ids: what the model saw in pretraining for one document.
  std::vector<int32_t> encode_with_special(std::string_view text) const;

  // Ids back to text (the decoder of tokenizer.json; invalid UTF-8 from partial byte sequences
  // becomes U+FFFD as in HF). Special tokens are dropped when skip_special is true. An id
  // outside [0, vocab_size()) throws std::out_of_range naming it.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

  virtual int32_t vocab_size() const = 0;  // ids are in [0, vocab_size())
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;  // the vocabulary's string for id
  virtual bool is_special(int32_t id) const = 0;

  const TokenizerInfo& info() const { return info_; }

 protected:
  TokenizerInfo info_;

 private:
  // Fills info_ from tokenizer_config.json after a loader has built the tokenizer.
  friend std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);
};

// Loads the tokenizer of a model directory (see the kinds above), a single tokenizer file, or
// "byte". Errors (std::runtime_error) name the file and what is wrong with it: missing files,
// malformed JSON (with line:column), unsupported model/normalizer/pre-tokenizer types (named),
// vocab/merges that disagree.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace lyre
