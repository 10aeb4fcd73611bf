// The dataset layer: records -> samples (byte tokenizer), the over-long policies, pre-tokenized
// token files, the cache budget and fingerprints. Parsing errors of the sources are tested in
// record_source_test.cpp and token_file_test.cpp.
#include <catch2/catch.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/byte_tokenizer.hpp"
#include "data/dataset.hpp"
#include "data/token_file.hpp"
#include "temp_files.hpp"

using lyre::ByteTokenizer;
using lyre::Dataset;
using lyre::DatasetOptions;
using lyre::Overlong;
using lyre::test::TempDir;

namespace {

constexpr int32_t B = ByteTokenizer::kBos;
constexpr int32_t E = ByteTokenizer::kEos;

std::shared_ptr<const Dataset> open(const std::string& path, int64_t seq_len, Overlong overlong = Overlong::truncate,
                                    int64_t cache_bytes = int64_t{1} << 30) {
  DatasetOptions o;
  o.source.path = path;
  o.seq_len = seq_len;
  o.overlong = overlong;
  o.cache_bytes = cache_bytes;
  return lyre::open_dataset(o, std::make_shared<ByteTokenizer>(), nullptr);
}

std::string open_error(const std::string& path, int64_t seq_len, Overlong overlong) {
  try {
    open(path, seq_len, overlong);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("text records train every token after BOS") {
  TempDir dir;
  const std::string path = dir.write("text.jsonl", "{\"text\": \"hi\", \"source\": 3}\n{\"text\": \"\"}\n");
  const auto ds = open(path, 64);
  REQUIRE(ds->size() == 2);
  CHECK(ds->path() == path);
  CHECK(ds->kind() == lyre::RecordKind::text);
  CHECK(ds->sample(0).ids == std::vector<int32_t>{B, 'h', 'i', E});
  CHECK(ds->sample(0).trained == std::vector<uint8_t>{0, 1, 1, 1});
  CHECK(ds->sample(1).ids == std::vector<int32_t>{B, E});
  CHECK(ds->length(0) == 4);
  CHECK(ds->stats().records == 2);
  CHECK(ds->stats().tokens == 6);
  CHECK(ds->stats().truncated == 0);
}

TEST_CASE("prompt/completion records train the completion and EOS only") {
  TempDir dir;
  const auto ds = open(dir.write("sft.jsonl", "{\"completion\": \"cd\", \"prompt\": \"ab\"}\n"), 64);
  REQUIRE(ds->size() == 1);
  const lyre::Sample s = ds->sample(0);
  CHECK(s.ids == std::vector<int32_t>{B, 'a', 'b', 'c', 'd', E});
  CHECK(s.trained == std::vector<uint8_t>{0, 0, 0, 1, 1, 1});
  CHECK(s.prompt == "ab");
  CHECK(s.completion == "cd");
}

TEST_CASE("over-long samples are truncated, dropped or split, and counted") {
  TempDir dir;
  const std::string path = dir.write("long.jsonl",
                                     "{\"text\": \"abc\"}\n"           // 5 ids: fits seq_len 4
                                     "{\"text\": \"abcd\"}\n"          // 6 ids
                                     "{\"text\": \"abcdefghij\"}\n");  // 12 ids
  SECTION("truncate keeps the first seq_len + 1 ids") {
    const auto ds = open(path, 4, Overlong::truncate);
    REQUIRE(ds->size() == 3);
    CHECK(ds->stats().truncated == 2);
    CHECK(ds->sample(1).ids == std::vector<int32_t>{B, 'a', 'b', 'c', 'd'});
    CHECK(ds->sample(2).ids.size() == 5);
    CHECK(ds->length(2) == 5);
  }
  SECTION("drop leaves them out") {
    const auto ds = open(path, 4, Overlong::drop);
    REQUIRE(ds->size() == 1);
    CHECK(ds->stats().dropped == 2);
    CHECK(ds->sample(0).ids == std::vector<int32_t>{B, 'a', 'b', 'c', E});
  }
  SECTION("split makes windows overlapping by one id, so every id is a target once") {
    const auto ds = open(path, 4, Overlong::split);
    // "abcd": [B a b c d] [d E]; "abcdefghij": [B a b c d] [d e f g h] [h i j E]
    REQUIRE(ds->size() == 6);
    CHECK(ds->stats().split == 2);
    CHECK(ds->sample(1).ids == std::vector<int32_t>{B, 'a', 'b', 'c', 'd'});
    CHECK(ds->sample(2).ids == std::vector<int32_t>{'d', E});
    CHECK(ds->sample(4).ids == std::vector<int32_t>{'d', 'e', 'f', 'g', 'h'});
    CHECK(ds->sample(5).ids == std::vector<int32_t>{'h', 'i', 'j', E});
    CHECK(ds->sample(5).trained == std::vector<uint8_t>{1, 1, 1, 1});
    CHECK(ds->length(5) == 4);
  }
  SECTION("nothing left after dropping is an error before training") {
    const std::string all_long = dir.write("all_long.jsonl", "{\"text\": \"abcdefgh\"}\n");
    CHECK_THAT(open_error(all_long, 4, Overlong::drop),
               Catch::Contains(all_long) && Catch::Contains("no samples left") && Catch::Contains("drop"));
  }
  SECTION("split is for text records only") {
    const std::string sft = dir.write("sft.jsonl", "{\"prompt\": \"p\", \"completion\": \"q\"}\n");
    CHECK_THAT(open_error(sft, 4, Overlong::split), Catch::Contains("text records only"));
  }
}

TEST_CASE("over the cache budget, samples are re-tokenized and come out the same") {
  TempDir dir;
  std::string jsonl;
  for (int i = 0; i < 300; ++i) jsonl += "{\"prompt\": \"q" + std::to_string(i) + "\", \"completion\": \"a\"}\n";
  const std::string path = dir.write("d.jsonl", jsonl);
  const auto cached = open(path, 16);
  const auto streamed = open(path, 16, Overlong::truncate, /*cache_bytes=*/1000);
  REQUIRE(cached->size() == streamed->size());
  for (int64_t i = 0; i < cached->size(); ++i) {
    CHECK(cached->sample(i).ids == streamed->sample(i).ids);
    CHECK(cached->sample(i).trained == streamed->sample(i).trained);
  }
  CHECK(cached->fingerprint() == streamed->fingerprint());
}

TEST_CASE("fingerprints tell data sets apart") {
  TempDir dir;
  const auto a = open(dir.write("a.jsonl", "{\"text\": \"abc\"}\n"), 8);
  const auto a_again = open(dir.path("a.jsonl"), 8);
  const auto b = open(dir.write("b.jsonl", "{\"text\": \"abcd\"}\n"), 8);
  const auto a_other_len = open(dir.path("a.jsonl"), 9);
  CHECK(a->fingerprint() == a_again->fingerprint());
  CHECK(a->fingerprint() != b->fingerprint());
  CHECK(a->fingerprint() != a_other_len->fingerprint());
}

TEST_CASE("a token file is read as windows of seq_len + 1 ids with documents split at EOS") {
  TempDir dir;
  // Two documents, each ending in EOS, then the start of a third.
  const std::vector<int32_t> ids{'a', 'b', E, 'c', 'd', 'e', E, 'f', 'g'};
  const std::string path = dir.path("corpus.u16");
  lyre::write_token_file(path, ids, lyre::TokenDtype::uint16);
  DatasetOptions o;
  o.source.path = path;
  o.seq_len = 4;
  o.token_dtype = "uint16";
  const auto ds = lyre::open_dataset(o, std::make_shared<ByteTokenizer>(), nullptr);
  // Windows start every 4 ids: [0,5) [4,9); the last one is short.
  REQUIRE(ds->size() == 2);
  CHECK(ds->sample(0).ids == std::vector<int32_t>{'a', 'b', E, 'c', 'd'});
  CHECK(ds->sample(0).doc_starts == std::vector<int32_t>{3});
  CHECK(ds->sample(1).ids == std::vector<int32_t>{'d', 'e', E, 'f', 'g'});
  CHECK(ds->sample(1).doc_starts == std::vector<int32_t>{3});
  CHECK(ds->stats().tokens == 9);

  o.document_masking = false;
  const auto flat = lyre::open_dataset(o, std::make_shared<ByteTokenizer>(), nullptr);
  CHECK(flat->sample(0).doc_starts.empty());
  CHECK(flat->fingerprint() != ds->fingerprint());
}

TEST_CASE("memory datasets hold what they are given") {
  lyre::Sample s;
  s.ids = {1, 2, 3};
  s.trained = {0, 1, 1};
  const auto ds = lyre::make_memory_dataset({s, s});
  CHECK(ds->size() == 2);
  CHECK(ds->length(1) == 3);
  CHECK_THROWS_AS(lyre::make_memory_dataset({}), std::runtime_error);
}
