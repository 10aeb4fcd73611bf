// load_tokenizer(): finds the tokenizer files of a model directory, loads them, and applies
// tokenizer_config.json (special tokens, add_bos_token/add_eos_token, chat_template).
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "data/byte_tokenizer.hpp"
#include "data/tokenizer.hpp"
#include "data/tokenizers/loaders.hpp"

namespace lyre {

namespace fs = std::filesystem;

std::vector<int32_t> Tokenizer::encode_with_special(std::string_view text) const {
  std::vector<int32_t> ids = info_.prefix_ids;
  const Encoding enc = encode(text, false);
  ids.insert(ids.end(), enc.ids.begin(), enc.ids.end());
  ids.insert(ids.end(), info_.suffix_ids.begin(), info_.suffix_ids.end());
  return ids;
}

namespace tok {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open the file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error(path + ": read error");
  return ss.str();
}

namespace {

std::string first_existing(const fs::path& dir, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (fs::is_regular_file(dir / n)) return (dir / n).string();
  return {};
}

// A token in tokenizer_config.json: "text", {"content": "text", ...} or null.
std::string token_text(const nlohmann::json& j, const char* key, const std::string& source) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  throw std::runtime_error(source + ": \"" + key + "\" is neither a string nor {\"content\": ...}");
}

void apply_config(Tokenizer& tok, TokenizerInfo& info, const std::string& path) {
  const std::string text = read_file(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(path + ": malformed JSON at byte " + std::to_string(e.byte) + ": " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error(path + ": is not a JSON object");
  const auto id_of = [&](const char* key, int32_t& slot) {
    const std::string t = token_text(j, key, path);
    if (t.empty()) return;
    const auto id = tok.token_to_id(t);
    if (!id) throw std::runtime_error(path + ": " + key + " \"" + t + "\" is not in the tokenizer's vocabulary");
    slot = *id;
  };
  id_of("bos_token", info.bos_id);
  id_of("eos_token", info.eos_id);
  id_of("pad_token", info.pad_id);
  id_of("unk_token", info.unk_id);
  // LlamaTokenizerFast and GemmaTokenizerFast rebuild the post-processor from these flags, so
  // where the file has them they replace its template (a BOS is never doubled).
  const bool has_bos_flag = j.contains("add_bos_token") && j["add_bos_token"].is_boolean();
  const bool has_eos_flag = j.contains("add_eos_token") && j["add_eos_token"].is_boolean();
  if (has_bos_flag || has_eos_flag) {
    const bool add_bos = has_bos_flag ? j["add_bos_token"].get<bool>() : false;
    const bool add_eos = has_eos_flag ? j["add_eos_token"].get<bool>() : false;
    if (add_bos && info.bos_id < 0) throw std::runtime_error(path + ": add_bos_token is true but there is no bos_token");
    if (add_eos && info.eos_id < 0) throw std::runtime_error(path + ": add_eos_token is true but there is no eos_token");
    info.prefix_ids.clear();
    info.suffix_ids.clear();
    if (add_bos) info.prefix_ids.push_back(info.bos_id);
    if (add_eos) info.suffix_ids.push_back(info.eos_id);
  }
  const auto ct = j.find("chat_template");
  if (ct != j.end() && !ct->is_null()) {
    if (ct->is_string()) {
      info.chat_template = ct->get<std::string>();
    } else if (ct->is_array()) {
      for (const auto& t : *ct)
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
          info.chat_template = t["template"].get<std::string>();
      if (info.chat_template.empty())
        throw std::runtime_error(path + ": chat_template is a list without a template named \"default\"");
    } else {
      throw std::runtime_error(path + ": chat_template is neither a string nor a list of {name, template}");
    }
  }
}

}  // namespace
}  // namespace tok

// ByteTokenizer lives in byte_tokenizer.cpp; everything else is picked from the files.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  if (path == "byte") return std::make_unique<ByteTokenizer>();
  const fs::path p(path);
  std::error_code ec;
  if (!fs::exists(p, ec))
    throw std::runtime_error(path + ": no such file or directory (expected a model directory, a tokenizer file, or \"byte\")");
  const fs::path dir = fs::is_directory(p) ? p : p.parent_path();
  std::unique_ptr<Tokenizer> tok;
  if (fs::is_directory(p)) {
    std::string file;
    if (!(file = tok::first_existing(p, {"tokenizer.json"})).empty()) {
      tok = tok::load_tokenizer_json_text(tok::read_file(file), file);
    } else if (!(file = tok::first_existing(p, {"tokenizer.model"})).empty()) {
      tok = tok::load_sentencepiece(file);
    } else {
      const std::string vocab = tok::first_existing(p, {"vocab.json", "encoder.json"});
      const std::string merges = tok::first_existing(p, {"merges.txt", "vocab.bpe"});
      if (vocab.empty() || merges.empty())
        throw std::runtime_error(path + ": no tokenizer found: looked for tokenizer.json, tokenizer.model, and "
                                 "vocab.json|encoder.json with merges.txt|vocab.bpe");
      tok = tok::load_gpt2_files(vocab, merges);
    }
  } else {
    const std::string name = p.filename().string();
    if (name == "vocab.json" || name == "encoder.json" || name == "merges.txt" || name == "vocab.bpe") {
      const std::string vocab = tok::first_existing(dir, {"vocab.json", "encoder.json"});
      const std::string merges = tok::first_existing(dir, {"merges.txt", "vocab.bpe"});
      if (vocab.empty() || merges.empty())
        throw std::runtime_error(path + ": GPT-2 files need both vocab.json|encoder.json and merges.txt|vocab.bpe in " +
                                 dir.string());
      tok = tok::load_gpt2_files(vocab, merges);
    } else if (p.extension() == ".model") {
      tok = tok::load_sentencepiece(path);
    } else if (p.extension() == ".json") {
      tok = tok::load_tokenizer_json_text(tok::read_file(path), path);
    } else {
      throw std::runtime_error(path + ": unknown tokenizer file (expected tokenizer.json, *.model, vocab.json/merges.txt)");
    }
  }
  // Without tokenizer_config.json, SentencePiece models follow LlamaTokenizer: BOS first.
  TokenizerInfo& info = tok->info_;
  const fs::path config = dir / "tokenizer_config.json";
  if (fs::is_regular_file(config)) {
    tok::apply_config(*tok, info, config.string());
  } else if (info.kind == "sentencepiece" && info.bos_id >= 0 && info.prefix_ids.empty()) {
    info.prefix_ids.push_back(info.bos_id);
  }
  if (info.kind.rfind("tokenizer.json", 0) == 0 && info.bos_id < 0 && !info.prefix_ids.empty())
    info.bos_id = info.prefix_ids.front();
  info.source = path;
  return tok;
}

}  // namespace lyre
