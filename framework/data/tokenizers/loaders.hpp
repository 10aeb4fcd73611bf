// The loaders behind load_tokenizer(), one per file kind; each names `source` in its errors.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "data/tokenizer.hpp"

namespace lyre::tok {

// tokenizer.json given as text (tests and the fuzzer load from memory; `source` names it).
std::unique_ptr<Tokenizer> load_tokenizer_json_text(std::string_view text, const std::string& source);
// GPT-2's vocab.json|encoder.json and merges.txt|vocab.bpe.
std::unique_ptr<Tokenizer> load_gpt2_files(const std::string& vocab_path, const std::string& merges_path);
// A SentencePiece .model.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path);

std::string read_file(const std::string& path);  // throws naming the path

}  // namespace lyre::tok
