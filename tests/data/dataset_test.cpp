#include <catch2/catch.hpp>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/dataset.hpp"
#include "temp_files.hpp"

using lyre::ByteTokenizer;
using lyre::Dataset;
using lyre::test::TempDir;

namespace {

constexpr int32_t B = ByteTokenizer::kBos;
constexpr int32_t E = ByteTokenizer::kEos;

// Loads `contents` as <dir>/data.jsonl and returns the error message it fails with ("" if none).
std::string load_error(const TempDir& dir, const std::string& contents) {
  const std::string path = dir.write("data.jsonl", contents);
  try {
    Dataset::from_jsonl(path, ByteTokenizer{}, 64);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("text records train every token after BOS") {
  TempDir dir;
  const std::string path = dir.write("text.jsonl", "{\"text\": \"hi\", \"source\": 3}\n{\"text\": \"\"}\n");
  const Dataset ds = Dataset::from_jsonl(path, ByteTokenizer{}, 64);
  REQUIRE(ds.size() == 2);
  CHECK(ds.path() == path);
  CHECK(ds[0].ids == std::vector<int32_t>{B, 'h', 'i', E});
  CHECK(ds[0].trained == std::vector<uint8_t>{0, 1, 1, 1});
  CHECK(ds[0].prompt.empty());
  CHECK(ds[0].completion.empty());
  CHECK(ds[1].ids == std::vector<int32_t>{B, E});
  CHECK(ds[1].trained == std::vector<uint8_t>{0, 1});
  CHECK(ds.stats().records == 2);
  CHECK(ds.stats().truncated == 0);
}

TEST_CASE("prompt/completion records train the completion and EOS only") {
  TempDir dir;
  const std::string path = dir.write("sft.jsonl", "{\"completion\": \"cd\", \"prompt\": \"ab\"}\n");
  const Dataset ds = Dataset::from_jsonl(path, ByteTokenizer{}, 64);
  REQUIRE(ds.size() == 1);
  CHECK(ds[0].ids == std::vector<int32_t>{B, 'a', 'b', 'c', 'd', E});
  CHECK(ds[0].trained == std::vector<uint8_t>{0, 0, 0, 1, 1, 1});
  CHECK(ds[0].prompt == "ab");
  CHECK(ds[0].completion == "cd");
}

TEST_CASE("JSONL strings arrive as their UTF-8 bytes, escaped or not") {
  TempDir dir;
  const std::string path = dir.write("utf8.jsonl", "{\"text\": \"\xC3\xA9\"}\n{\"text\": \"\\u00e9\\n\"}\n");
  const Dataset ds = Dataset::from_jsonl(path, ByteTokenizer{}, 64);
  REQUIRE(ds.size() == 2);
  CHECK(ds[0].ids == std::vector<int32_t>{B, 0xC3, 0xA9, E});
  CHECK(ds[1].ids == std::vector<int32_t>{B, 0xC3, 0xA9, '\n', E});
}

TEST_CASE("blank lines are skipped but still counted for line numbers") {
  TempDir dir;
  const std::string path = dir.path("data.jsonl");
  CHECK(load_error(dir, "\n{\"text\": \"a\"}\n   \n\t\r\n{\"text\": 1}\n") ==
        path + ":5: field \"text\" must be a string");

  const Dataset ds = Dataset::from_jsonl(dir.write("ok.jsonl", "\n{\"text\": \"a\"}\r\n\n{\"text\": \"b\"}"),
                                         ByteTokenizer{}, 64);
  REQUIRE(ds.size() == 2);  // CRLF endings and a missing final newline are fine
  CHECK(ds[1].ids == std::vector<int32_t>{B, 'b', E});
}

TEST_CASE("malformed JSON names the file and line") {
  TempDir dir;
  const std::string path = dir.path("data.jsonl");
  const std::string message = load_error(dir, "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
  CHECK_THAT(message, Catch::Matchers::StartsWith(path + ":2: malformed JSON: column "));
  CHECK_THAT(load_error(dir, "{\"text\": \"a\"} trailing\n"),
             Catch::Matchers::StartsWith(path + ":1: malformed JSON: "));
}

TEST_CASE("a record that is not an object says what it is") {
  TempDir dir;
  const std::string path = dir.path("data.jsonl");
  CHECK(load_error(dir, "[\"text\", \"a\"]\n") == path + ":1: expected a JSON object, got array");
  CHECK(load_error(dir, "\"a\"\n") == path + ":1: expected a JSON object, got string");
}

TEST_CASE("missing fields are named") {
  TempDir dir;
  const std::string path = dir.path("data.jsonl");
  CHECK(load_error(dir, "{\"text\": \"a\"}\n{\"prompt\": \"q\"}\n") ==
        path + ":2: missing field \"completion\"");
  CHECK(load_error(dir, "{\"completion\": \"a\"}\n") == path + ":1: missing field \"prompt\"");
  CHECK(load_error(dir, "{\"txt\": \"a\"}\n") ==
        path + ":1: missing field \"text\" (or \"prompt\" and \"completion\")");
  CHECK(load_error(dir, "{\"text\": \"a\", \"prompt\": \"q\", \"completion\": \"a\"}\n") ==
        path + ":1: record has both \"text\" and \"prompt\"/\"completion\"; give one or the other");
}

TEST_CASE("fields of the wrong type are named") {
  TempDir dir;
  const std::string path = dir.path("data.jsonl");
  CHECK(load_error(dir, "{\"text\": null}\n") == path + ":1: field \"text\" must be a string");
  CHECK(load_error(dir, "{\"prompt\": 1, \"completion\": \"a\"}\n") ==
        path + ":1: field \"prompt\" must be a string");
  CHECK(load_error(dir, "{\"prompt\": \"q\", \"completion\": [\"a\"]}\n") ==
        path + ":1: field \"completion\" must be a string");
}

TEST_CASE("a file without records is an error") {
  TempDir dir;
  const std::string path = dir.path("data.jsonl");
  CHECK(load_error(dir, "") == path + ": no records");
  CHECK(load_error(dir, "\n  \n\n") == path + ": no records");
}

TEST_CASE("a file that cannot be opened says why") {
  TempDir dir;
  const std::string path = dir.path("absent.jsonl");
  CHECK_THROWS_WITH(Dataset::from_jsonl(path, ByteTokenizer{}, 64),
                    path + ": cannot open: No such file or directory");
  const std::string directory = dir.path("sub");
  std::filesystem::create_directory(directory);
  CHECK_THROWS_WITH(Dataset::from_jsonl(directory, ByteTokenizer{}, 64),
                    directory + ": cannot read: Is a directory");
}

TEST_CASE("samples longer than max_seq_len + 1 ids are cut and counted") {
  TempDir dir;
  const std::string path = dir.write("long.jsonl",
                                     "{\"text\": \"abc\"}\n"                          // 5 ids: fits
                                     "{\"text\": \"abcd\"}\n"                         // 6 ids: cut
                                     "{\"prompt\": \"p\", \"completion\": \"xyz\"}\n"  // 6 ids: cut
                                     "{\"text\": \"abcdefghij\"}\n");                 // 12 ids: cut
  const Dataset ds = Dataset::from_jsonl(path, ByteTokenizer{}, 4);
  REQUIRE(ds.size() == 4);
  CHECK(ds.stats().records == 4);
  CHECK(ds.stats().truncated == 3);
  CHECK(ds[0].ids == std::vector<int32_t>{B, 'a', 'b', 'c', E});
  CHECK(ds[1].ids == std::vector<int32_t>{B, 'a', 'b', 'c', 'd'});
  CHECK(ds[2].ids == std::vector<int32_t>{B, 'p', 'x', 'y', 'z'});
  CHECK(ds[2].trained == std::vector<uint8_t>{0, 0, 1, 1, 1});
  CHECK(ds[2].completion == "xyz");
  CHECK(ds[3].ids.size() == 5);
  CHECK(ds[3].trained.size() == 5);

  const Dataset whole = Dataset::from_jsonl(path, ByteTokenizer{}, 0);
  CHECK(whole.stats().truncated == 0);
  CHECK(whole[3].ids.size() == 12);
}
