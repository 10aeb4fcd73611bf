// Bad tokenizer files: each error names the file and what is wrong with it.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "data/tokenizer.hpp"
#include "reference.hpp"

using namespace lyre;
using namespace lyre::test;
using Catch::Matchers::Contains;

namespace {
const std::string kSeed = std::string(LYRE_SOURCE_DIR) + "/tests/fuzz/corpus/tokenizer_loader/metaspace_byte_fallback_llama2.json";

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes `text` as DIR/tokenizer.json and returns the message load_tokenizer throws.
std::string load_error(const TempDir& dir, const std::string& text, const std::string& name = "tokenizer.json") {
  write_file(dir.file(name), text);
  try {
    load_tokenizer(dir.file(name));
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  FAIL("loading " << name << " did not fail:\n" << text);
  return "";
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}
}  // namespace

TEST_CASE("malformed JSON is reported with the file, line and column") {
  TempDir dir;
  const std::string msg = load_error(dir, "{\n  \"model\": {\n    \"vocab\": [1,,]\n  }\n}");
  CHECK_THAT(msg, Contains(dir.file("tokenizer.json") + ":3:17"));
  CHECK_THAT(msg, Contains("malformed JSON"));
}

TEST_CASE("a tokenizer.json without a model is refused by name") {
  TempDir dir;
  const std::string msg = load_error(dir, "{\"normalizer\": null}");
  CHECK_THAT(msg, Contains(dir.file("tokenizer.json")));
  CHECK_THAT(msg, Contains("has no \"model\""));
}

TEST_CASE("unsupported model, normalizer, pre-tokenizer, decoder and post-processor types are named") {
  TempDir dir;
  const std::string seed = read(kSeed);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {replace(seed, "\"type\": \"BPE\"", "\"type\": \"WordPiece\""), "unsupported model type \"WordPiece\""},
      {replace(seed, "\"type\": \"Prepend\"", "\"type\": \"BertNormalizer\""), "unsupported normalizer type \"BertNormalizer\""},
      {replace(seed, "\"pre_tokenizer\": null", "\"pre_tokenizer\": {\"type\": \"Punctuation\"}"), "unsupported pre_tokenizer type \"Punctuation\""},
      {replace(seed, "\"type\": \"Fuse\"", "\"type\": \"CTC\""), "unsupported decoder type \"CTC\""},
      {replace(seed, "\"type\": \"TemplateProcessing\"", "\"type\": \"Magic\""), "unsupported post_processor type \"Magic\""},
      {replace(seed, "\"pre_tokenizer\": null",
           "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}"),
       "missing closing parenthesis"},
  };
  for (const auto& [text, problem] : cases) {
    const std::string msg = load_error(dir, text);
    INFO(msg);
    CHECK_THAT(msg, Contains(dir.file("tokenizer.json")));
    CHECK_THAT(msg, Contains(problem));
  }
}

TEST_CASE("a merge naming a token not in the vocabulary is refused with the merge") {
  TempDir dir;
  const std::string msg = load_error(dir, replace(read(kSeed), "\"h i\"", "\"h q\""));
  CHECK_THAT(msg, Contains(dir.file("tokenizer.json")));
  CHECK_THAT(msg, Contains("merge 2 \"h q\" names a token not in the vocabulary (\"q\")"));
}

TEST_CASE("bad vocabulary ids and merges of the wrong shape are refused") {
  TempDir dir;
  const std::string seed = read(kSeed);
  CHECK_THAT(load_error(dir, replace(seed, "\"<unk>\": 0", "\"<unk>\": -5")), Contains("\"<unk>\" has id -5, out of range"));
  CHECK_THAT(load_error(dir, replace(seed, "\"h i\"", "\"h i x\"")), Contains("merge \"h i x\" is not two tokens"));
  CHECK_THAT(load_error(dir, replace(seed, "\"unk_token\": \"<unk>\"", "\"unk_token\": \"<nope>\"")),
             Contains("unk_token \"<nope>\" is not in the vocabulary"));
  CHECK_THAT(load_error(dir, replace(seed, "\"vocab\": {", "\"vocab\": 3, \"x\": {")), Contains("model has no \"vocab\" object"));
}

TEST_CASE("numbers that are not small integers are refused by name, never converted") {
  // Converting a float like 3.3e20 to an int is undefined behaviour (the fuzzer found it); each
  // integer field is checked before it is read.
  TempDir dir;
  const std::string seed = read(kSeed);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {replace(seed, "\"<unk>\": 0", "\"<unk>\": 3.3e20"), "vocab entry \"<unk>\" has a non-integer id 3.3e+20"},
      {replace(seed, "\"<unk>\": 0", "\"<unk>\": 18446744073709551615"), "\"<unk>\" has id 18446744073709551615, out of range"},
      {replace(seed, "\"id\": 1,", "\"id\": 1.5,"), "added token \"<s>\" has a non-integer id 1.5"},
      {replace(seed, "\"ids\": [\n     1\n    ]", "\"ids\": [\n     -1e30\n    ]"),
       "TemplateProcessing special token \"<s>\" has a non-integer id -1e+30"},
      {replace(seed, "\"ids\": [\n     1\n    ]", "\"ids\": 1"), "special token \"<s>\" has no \"ids\" array"},
      {replace(seed, "\"start\": 1", "\"start\": 3.5e20"), "\"start\" is 3.5e+20, not an integer in [0, 1024]"},
      {replace(seed, "\"stop\": 0", "\"stop\": -2"), "\"stop\" is -2, not an integer in [0, 1024]"},
  };
  for (const auto& [text, problem] : cases) {
    REQUIRE(text != seed);
    const std::string msg = load_error(dir, text);
    INFO(msg);
    CHECK_THAT(msg, Contains(dir.file("tokenizer.json")));
    CHECK_THAT(msg, Contains(problem));
  }
}

TEST_CASE("a directory without tokenizer files says which files it looked for") {
  TempDir dir;
  try {
    load_tokenizer(dir.path());
    FAIL("no error");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Contains(dir.path()));
    CHECK_THAT(e.what(), Contains("tokenizer.json, tokenizer.model, and vocab.json|encoder.json with merges.txt|vocab.bpe"));
  }
  CHECK_THROWS_WITH(load_tokenizer(dir.file("missing")), Contains(dir.file("missing") + ": no such file or directory"));
  write_file(dir.file("vocab.json"), "{}");
  CHECK_THROWS_WITH(load_tokenizer(dir.file("vocab.json")), Contains("need both vocab.json|encoder.json and merges.txt|vocab.bpe"));
}

TEST_CASE("GPT-2 files with a broken merge line name the line") {
  TempDir dir;
  write_file(dir.file("vocab.json"), "{\"a\": 0, \"b\": 1, \"ab\": 2}");
  write_file(dir.file("merges.txt"), "#version: 0.2\na b\nab\n");
  CHECK_THROWS_WITH(load_tokenizer(dir.path()), Contains(dir.file("merges.txt") + ":3: \"ab\" is not a merge"));
  write_file(dir.file("merges.txt"), "#version: 0.2\na c\n");
  CHECK_THROWS_WITH(load_tokenizer(dir.path()), Contains("names a token not in the vocabulary (\"c\")"));
  write_file(dir.file("merges.txt"), "#version: 0.2\na b\n");
  CHECK(load_tokenizer(dir.path())->encode_ids("ab") == std::vector<int32_t>{2});
}

TEST_CASE("tokenizer_config.json naming tokens the vocabulary lacks is refused") {
  TempDir dir;
  write_file(dir.file("tokenizer.json"), read(kSeed));
  write_file(dir.file("tokenizer_config.json"), "{\"bos_token\": {\"content\": \"<bos>\"}}");
  CHECK_THROWS_WITH(load_tokenizer(dir.path()),
                    Contains(dir.file("tokenizer_config.json") + ": bos_token \"<bos>\" is not in the tokenizer's vocabulary"));
  write_file(dir.file("tokenizer_config.json"), "{\"chat_template\": 5}");
  CHECK_THROWS_WITH(load_tokenizer(dir.path()), Contains("chat_template is neither a string nor a list"));
  write_file(dir.file("tokenizer_config.json"),
             "{\"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\"}, \"add_bos_token\": true, "
             "\"add_eos_token\": true, \"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
             "{\"name\": \"default\", \"template\": \"D\"}]}");
  const auto tok = load_tokenizer(dir.path());
  CHECK(tok->info().prefix_ids == std::vector<int32_t>{1});
  CHECK(tok->info().suffix_ids == std::vector<int32_t>{2});
  CHECK(tok->info().chat_template == "D");
}

TEST_CASE("a SentencePiece file that is not one is refused by name") {
  TempDir dir;
  write_file(dir.file("tokenizer.model"), "not a protobuf");
  CHECK_THROWS_WITH(load_tokenizer(dir.path()), Contains(dir.file("tokenizer.model") + ": not a SentencePiece model"));
}
