// tokenizer.json (HF "tokenizers") -> BpeConfig. Only what BPE files in the wild use is
// accepted; anything else is refused by name rather than silently tokenized differently.
#include <nlohmann/json.hpp>

#include <stdexcept>

#include "data/tokenizers/bpe_tokenizer.hpp"
#include "data/tokenizers/loaders.hpp"
#include "util/json_integer.hpp"

namespace lyre::tok {

namespace {

using nlohmann::json;

constexpr int64_t kMaxId = 1 << 24;  // far above real vocabularies; bounds what a bad file allocates

const std::string kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct Parser {
  const std::string& source;
  BpeConfig& cfg;

  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(source + ": " + what); }

  std::string type_of(const json& j, const char* where) const {
    if (!j.is_object()) fail(std::string(where) + " is not an object");
    const auto it = j.find("type");
    if (it == j.end() || !it->is_string()) fail(std::string(where) + " has no \"type\"");
    return it->get<std::string>();
  }

  std::string str(const json& j, const char* key, const std::string& fallback = "") const {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_string()) fail(std::string("\"") + key + "\" is not a string");
    return it->get<std::string>();
  }
  // A token id: an integer in [0, kMaxId).
  int32_t token_id(const json& v, const std::string& what) const {
    if (!v.is_number_integer()) fail(what + " has a non-integer id " + v.dump());
    const std::optional<int64_t> id = json_int64(v);
    if (!id || *id < 0 || *id >= kMaxId) fail(what + " has id " + v.dump() + ", out of range");
    return static_cast<int32_t>(*id);
  }
  // An optional small non-negative integer (decoder Strip's start/stop), 0 when absent.
  int small_count(const json& j, const char* key) const {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return 0;
    const std::optional<int64_t> n = json_int64(*it);
    if (!n || *n < 0 || *n > 1024) fail(std::string("\"") + key + "\" is " + it->dump() + ", not an integer in [0, 1024]");
    return static_cast<int>(*n);
  }
  bool flag(const json& j, const char* key, bool fallback) const {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(std::string("\"") + key + "\" is not a boolean");
    return it->get<bool>();
  }

  // {"String": "x"} or {"Regex": "x"}
  std::pair<std::string, std::shared_ptr<Regex>> pattern(const json& j, const char* where) const {
    const auto it = j.find("pattern");
    if (it == j.end() || !it->is_object()) fail(std::string(where) + " has no \"pattern\" object");
    if (it->contains("String")) return {str(*it, "String"), nullptr};
    if (it->contains("Regex")) {
      try {
        return {"", std::make_shared<Regex>(str(*it, "Regex"))};
      } catch (const std::runtime_error& e) {
        fail(std::string(where) + ": " + e.what());
      }
    }
    fail(std::string(where) + "'s pattern is neither {\"String\": ...} nor {\"Regex\": ...}");
  }

  void normalizer(const json& j) {
    if (j.is_null()) return;
    const std::string type = type_of(j, "normalizer");
    using K = NormalizerStep::Kind;
    if (type == "Sequence") {
      const auto it = j.find("normalizers");
      if (it == j.end() || !it->is_array()) fail("normalizer Sequence has no \"normalizers\" array");
      for (const json& n : *it) normalizer(n);
    } else if (type == "NFC") {
      cfg.normalizers.push_back({K::NFC});
    } else if (type == "NFKC") {
      cfg.normalizers.push_back({K::NFKC});
    } else if (type == "NFD") {
      cfg.normalizers.push_back({K::NFD});
    } else if (type == "NFKD") {
      cfg.normalizers.push_back({K::NFKD});
    } else if (type == "Prepend") {
      NormalizerStep s{K::Prepend};
      s.to = str(j, "prepend");
      cfg.normalizers.push_back(s);
    } else if (type == "Replace") {
      NormalizerStep s{K::Replace};
      std::tie(s.from, s.regex) = pattern(j, "normalizer Replace");
      s.to = str(j, "content");
      cfg.normalizers.push_back(s);
    } else {
      fail("unsupported normalizer type \"" + type + "\"");
    }
  }

  void pre_tokenizer(const json& j, bool first) {
    if (j.is_null()) return;
    const std::string type = type_of(j, "pre_tokenizer");
    const bool after_byte_level = cfg.byte_level;
    if (after_byte_level && type != "Sequence")
      fail("pre-tokenizer \"" + type + "\" after ByteLevel is not supported");
    if (type == "Sequence") {
      const auto it = j.find("pretokenizers");
      if (it == j.end() || !it->is_array()) fail("pre_tokenizer Sequence has no \"pretokenizers\" array");
      bool f = first;
      for (const json& p : *it) {
        pre_tokenizer(p, f);
        f = false;
      }
    } else if (type == "ByteLevel") {
      if (flag(j, "add_prefix_space", true)) {
        // HF prepends per pre-token; as the first step that is per segment, as done here.
        if (!first) fail("ByteLevel with add_prefix_space after another pre-tokenizer is not supported");
        cfg.normalizers.push_back({NormalizerStep::Kind::PrefixSpace});
      }
      if (flag(j, "use_regex", true)) cfg.splits.push_back({std::make_shared<Regex>(kGpt2Pattern)});
      cfg.byte_level = true;
    } else if (type == "Split") {
      SplitStep s;
      std::tie(s.literal, s.regex) = pattern(j, "pre_tokenizer Split");
      s.behavior = behavior(str(j, "behavior", "Isolated"));
      s.invert = flag(j, "invert", false);
      cfg.splits.push_back(s);
    } else if (type == "Metaspace") {
      // Its string edit must run before any split: only as the first pre-tokenizer.
      if (!first) fail("Metaspace after another pre-tokenizer is not supported");
      NormalizerStep s{NormalizerStep::Kind::MetaspaceEdit};
      s.from = str(j, "replacement", "\xE2\x96\x81");
      std::string scheme = str(j, "prepend_scheme");
      if (scheme.empty()) scheme = flag(j, "add_prefix_space", true) ? "always" : "never";
      if (scheme != "always" && scheme != "first" && scheme != "never")
        fail("Metaspace prepend_scheme \"" + scheme + "\" is not always/first/never");
      s.prepend = scheme != "never";
      s.first_only = scheme == "first";
      s.to = s.from;
      cfg.normalizers.push_back(s);
      if (flag(j, "split", true)) {
        SplitStep sp;
        sp.literal = s.from;
        sp.behavior = SplitStep::Behavior::MergedWithNext;
        cfg.splits.push_back(sp);
      }
    } else if (type == "Digits") {
      SplitStep s;
      s.regex = std::make_shared<Regex>(R"(\p{N})");
      s.behavior = flag(j, "individual_digits", false) ? SplitStep::Behavior::Isolated : SplitStep::Behavior::Contiguous;
      cfg.splits.push_back(s);
    } else if (type == "Whitespace") {
      SplitStep s;
      s.regex = std::make_shared<Regex>(R"(\w+|[^\w\s]+)");
      s.behavior = SplitStep::Behavior::Removed;
      s.invert = true;
      cfg.splits.push_back(s);
    } else if (type == "WhitespaceSplit") {
      SplitStep s;
      s.regex = std::make_shared<Regex>(R"(\s+)");
      s.behavior = SplitStep::Behavior::Removed;
      cfg.splits.push_back(s);
    } else {
      fail("unsupported pre_tokenizer type \"" + type + "\"");
    }
  }

  SplitStep::Behavior behavior(const std::string& b) const {
    using B = SplitStep::Behavior;
    if (b == "Removed") return B::Removed;
    if (b == "Isolated") return B::Isolated;
    if (b == "MergedWithPrevious") return B::MergedWithPrevious;
    if (b == "MergedWithNext") return B::MergedWithNext;
    if (b == "Contiguous") return B::Contiguous;
    fail("unsupported Split behavior \"" + b + "\"");
  }

  void decoder(const json& j) {
    if (j.is_null()) return;
    cfg.has_decoder = true;
    const std::string type = type_of(j, "decoder");
    using K = DecoderStep::Kind;
    if (type == "Sequence") {
      const auto it = j.find("decoders");
      if (it == j.end() || !it->is_array()) fail("decoder Sequence has no \"decoders\" array");
      for (const json& d : *it) decoder(d);
    } else if (type == "ByteLevel") {
      cfg.decoders.push_back({K::ByteLevel});
    } else if (type == "ByteFallback") {
      cfg.decoders.push_back({K::ByteFallback});
    } else if (type == "Fuse") {
      cfg.decoders.push_back({K::Fuse});
    } else if (type == "Replace") {
      DecoderStep d{K::Replace};
      std::shared_ptr<Regex> re;
      std::tie(d.from, re) = pattern(j, "decoder Replace");
      if (re) fail("decoder Replace with a Regex pattern is not supported");
      d.to = str(j, "content");
      cfg.decoders.push_back(d);
    } else if (type == "Strip") {
      DecoderStep d{K::Strip};
      d.from = str(j, "content", " ");
      d.start = small_count(j, "start");
      d.stop = small_count(j, "stop");
      cfg.decoders.push_back(d);
    } else if (type == "Metaspace") {
      DecoderStep d{K::Metaspace};
      d.from = str(j, "replacement", "\xE2\x96\x81");
      std::string scheme = str(j, "prepend_scheme");
      if (scheme.empty()) scheme = flag(j, "add_prefix_space", true) ? "always" : "never";
      d.strip_first_space = scheme != "never";
      cfg.decoders.push_back(d);
    } else {
      fail("unsupported decoder type \"" + type + "\"");
    }
  }

  // The ids a post-processor puts around one sequence.
  void post_processor(const json& j, std::vector<int32_t>& prefix, std::vector<int32_t>& suffix) {
    if (j.is_null()) return;
    const std::string type = type_of(j, "post_processor");
    if (type == "Sequence") {
      const auto it = j.find("processors");
      if (it == j.end() || !it->is_array()) fail("post_processor Sequence has no \"processors\" array");
      for (const json& p : *it) post_processor(p, prefix, suffix);
    } else if (type == "ByteLevel") {
      // Only trims offsets in HF; lyre's offsets are untrimmed byte ranges.
    } else if (type == "TemplateProcessing") {
      const auto single = j.find("single");
      if (single == j.end() || !single->is_array()) fail("TemplateProcessing has no \"single\" array");
      const json specials = j.value("special_tokens", json::object());
      bool seen_sequence = false;
      for (const json& item : *single) {
        if (item.contains("Sequence")) {
          seen_sequence = true;
        } else if (item.contains("SpecialToken")) {
          const std::string name = str(item["SpecialToken"], "id");
          const auto st = specials.find(name);
          if (st == specials.end() || !st->contains("ids"))
            fail("TemplateProcessing names special token \"" + name + "\" missing from its special_tokens");
          const json& ids = (*st)["ids"];
          if (!ids.is_array()) fail("TemplateProcessing special token \"" + name + "\" has no \"ids\" array");
          for (const json& id : ids)
            (seen_sequence ? suffix : prefix).push_back(token_id(id, "TemplateProcessing special token \"" + name + "\""));
        } else {
          fail("TemplateProcessing item is neither Sequence nor SpecialToken");
        }
      }
    } else if (type == "BertProcessing" || type == "RobertaProcessing") {
      for (const char* key : {"cls", "sep"}) {
        const auto it = j.find(key);
        if (it == j.end() || !it->is_array() || it->size() != 2)
          fail(type + " has no \"" + key + "\" pair [token, id]");
        (std::string(key) == "cls" ? prefix : suffix).push_back(token_id((*it)[1], type + " \"" + key + "\""));
      }
    } else {
      fail("unsupported post_processor type \"" + type + "\"");
    }
  }

  void model(const json& m) {
    if (!m.is_object()) fail("\"model\" is not an object");
    const std::string type = m.contains("type") ? str(m, "type") : "BPE";
    if (type != "BPE") fail("unsupported model type \"" + type + "\" (lyre reads BPE tokenizer.json files)");
    const auto vocab = m.find("vocab");
    if (vocab == m.end() || !vocab->is_object()) fail("model has no \"vocab\" object");
    for (const auto& [token, id] : vocab->items()) {
      const int32_t v = token_id(id, "vocab entry \"" + token + "\"");
      if (static_cast<size_t>(v) >= cfg.vocab.size()) cfg.vocab.resize(static_cast<size_t>(v) + 1);
      cfg.vocab[v] = token;
    }
    const auto merges = m.find("merges");
    if (merges != m.end() && !merges->is_null()) {
      if (!merges->is_array()) fail("model \"merges\" is not an array");
      cfg.merges.reserve(merges->size());
      for (const json& mg : *merges) {
        if (mg.is_string()) {
          const std::string& s = mg.get_ref<const std::string&>();
          const size_t sp = s.find(' ');
          if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
            fail("merge \"" + s + "\" is not two tokens separated by one space");
          cfg.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
          cfg.merges.emplace_back(mg[0].get<std::string>(), mg[1].get<std::string>());
        } else {
          fail("merge " + mg.dump() + " is neither \"a b\" nor [\"a\", \"b\"]");
        }
      }
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (!str(m, key).empty()) fail(std::string("BPE ") + key + " is not supported");
    cfg.byte_fallback = flag(m, "byte_fallback", false);
    cfg.ignore_merges = flag(m, "ignore_merges", false);
    cfg.fuse_unk = flag(m, "fuse_unk", false);
    const std::string unk = str(m, "unk_token");
    if (!unk.empty()) {
      const auto it = vocab->find(unk);
      if (it == vocab->end()) fail("unk_token \"" + unk + "\" is not in the vocabulary");
      cfg.unk_id = token_id(*it, "unk_token \"" + unk + "\"");
    }
  }

  void added_tokens(const json& j) {
    if (j.is_null()) return;
    if (!j.is_array()) fail("\"added_tokens\" is not an array");
    for (const json& t : j) {
      if (!t.is_object() || !t.contains("id") || !t.contains("content")) fail("added token " + t.dump() + " lacks id or content");
      AddedToken a;
      a.content = str(t, "content");
      const int32_t id = token_id(t["id"], "added token \"" + a.content + "\"");
      a.id = id;
      a.special = flag(t, "special", false);
      a.lstrip = flag(t, "lstrip", false);
      a.rstrip = flag(t, "rstrip", false);
      a.single_word = flag(t, "single_word", false);
      a.normalized = flag(t, "normalized", !a.special);
      if (a.content.empty()) fail("added token " + std::to_string(id) + " has empty content");
      cfg.added.push_back(std::move(a));
    }
  }
};

std::string line_column(std::string_view text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i + 1 < byte && i < text.size(); ++i) {
    if (text[i] == '\n') ++line, col = 1;
    else ++col;
  }
  return std::to_string(line) + ":" + std::to_string(col);
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json_text(std::string_view text, const std::string& source) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    throw std::runtime_error(source + ":" + line_column(text, e.byte) + ": malformed JSON: " + e.what());
  }
  BpeConfig cfg;
  cfg.source = source;
  std::vector<int32_t> prefix, suffix;
  try {
    Parser p{source, cfg};
    if (!j.is_object()) p.fail("is not a JSON object");
    if (!j.contains("model")) p.fail("has no \"model\"");
    p.model(j["model"]);
    p.added_tokens(j.value("added_tokens", json()));
    p.normalizer(j.value("normalizer", json()));
    p.pre_tokenizer(j.value("pre_tokenizer", json()), true);
    p.post_processor(j.value("post_processor", json()), prefix, suffix);
    p.decoder(j.value("decoder", json()));
  } catch (const json::exception& e) {
    throw std::runtime_error(source + ": unexpected JSON shape: " + e.what());
  }
  cfg.kind = cfg.byte_level ? "tokenizer.json (byte-level BPE)" : "tokenizer.json (BPE)";
  auto tok = std::make_unique<BpeTokenizer>(std::move(cfg));
  for (int32_t id : prefix)
    if (id < 0 || id >= tok->vocab_size()) throw std::runtime_error(source + ": post_processor id " + std::to_string(id) + " is outside the vocabulary");
  for (int32_t id : suffix)
    if (id < 0 || id >= tok->vocab_size()) throw std::runtime_error(source + ": post_processor id " + std::to_string(id) + " is outside the vocabulary");
  tok->mutable_info().prefix_ids = prefix;
  tok->mutable_info().suffix_ids = suffix;
  return tok;
}

}  // namespace lyre::tok
