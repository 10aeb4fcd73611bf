// GPT-2's original files: encoder.json/vocab.json ({token: id}) and vocab.bpe/merges.txt
// ("#version: 0.2" then one "a b" merge a line), run through the same BPE as tokenizer.json.
#include <nlohmann/json.hpp>

#include <stdexcept>

#include "data/tokenizers/bpe_tokenizer.hpp"
#include "data/tokenizers/loaders.hpp"

namespace lyre::tok {

std::unique_ptr<Tokenizer> load_gpt2_files(const std::string& vocab_path, const std::string& merges_path) {
  BpeConfig cfg;
  cfg.source = vocab_path;
  cfg.kind = "gpt2";
  const std::string vocab_text = read_file(vocab_path);
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(vocab_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(vocab_path + ": malformed JSON at byte " + std::to_string(e.byte) + ": " + e.what());
  }
  if (!vocab.is_object()) throw std::runtime_error(vocab_path + ": is not a JSON object of token -> id");
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1 << 24))
      throw std::runtime_error(vocab_path + ": token \"" + token + "\" has a bad id " + id.dump());
    const auto v = static_cast<size_t>(id.get<int64_t>());
    if (v >= cfg.vocab.size()) cfg.vocab.resize(v + 1);
    cfg.vocab[v] = token;
  }

  const std::string merges = read_file(merges_path);
  size_t line_no = 0;
  for (size_t pos = 0; pos < merges.size();) {
    size_t end = merges.find('\n', pos);
    if (end == std::string::npos) end = merges.size();
    std::string line = merges.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size())
      throw std::runtime_error(merges_path + ":" + std::to_string(line_no) + ": \"" + line + "\" is not a merge \"a b\"");
    cfg.merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  cfg.byte_level = true;
  cfg.splits.push_back({std::make_shared<Regex>(
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)")});
  cfg.has_decoder = true;
  cfg.decoders.push_back({DecoderStep::Kind::ByteLevel});
  int32_t eot = -1;
  for (size_t id = 0; id < cfg.vocab.size(); ++id)
    if (cfg.vocab[id] == "<|endoftext|>") eot = static_cast<int32_t>(id);
  if (eot >= 0) {
    AddedToken t;
    t.content = "<|endoftext|>";
    t.id = eot;
    t.special = true;
    cfg.added.push_back(t);
  }
  auto tok = std::make_unique<BpeTokenizer>(std::move(cfg));
  TokenizerInfo& info = tok->mutable_info();
  info.bos_id = info.eos_id = info.unk_id = eot;
  return tok;
}

}  // namespace lyre::tok
