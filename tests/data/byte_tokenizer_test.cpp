#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "data/byte_tokenizer.hpp"

using lyre::ByteTokenizer;

TEST_CASE("byte tokenizer maps each byte to its value and back") {
  const ByteTokenizer tok;
  CHECK(tok.encode_ids("Hi!") == std::vector<int32_t>{72, 105, 33});
  CHECK(tok.encode_ids("").empty());
  CHECK(tok.decode(tok.encode_ids("hello, world")) == "hello, world");
}

TEST_CASE("byte tokenizer round-trips non-ASCII UTF-8 as its bytes") {
  const ByteTokenizer tok;
  const std::string text = "h\xC3\xA9llo \xE2\x9C\x93 \xE6\x97\xA5\xE6\x9C\xAC";  // héllo ✓ 日本
  const std::vector<int32_t> ids = tok.encode_ids(text);
  REQUIRE(ids.size() == text.size());
  CHECK(ids[1] == 0xC3);
  CHECK(ids[2] == 0xA9);
  CHECK(tok.decode(ids) == text);
}

TEST_CASE("byte tokenizer round-trips invalid UTF-8 and NUL bytes") {
  const ByteTokenizer tok;
  const std::string text("a\xFF\xFE\x80\0z\xC3", 7);
  const std::vector<int32_t> ids = tok.encode_ids(text);
  CHECK(ids == std::vector<int32_t>{97, 255, 254, 128, 0, 122, 195});
  CHECK(tok.decode(ids) == text);

  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte.push_back(static_cast<char>(b));
  const std::vector<int32_t> all = tok.encode_ids(every_byte);
  for (int b = 0; b < 256; ++b) CHECK(all[static_cast<size_t>(b)] == b);
  CHECK(tok.decode(all) == every_byte);
}

TEST_CASE("byte tokenizer special ids sit after the bytes and decode to nothing") {
  const ByteTokenizer tok;
  CHECK(tok.bos_id() == 256);
  CHECK(tok.eos_id() == 257);
  CHECK(tok.pad_id() == 258);
  CHECK(tok.vocab_size() == 259);
  CHECK(tok.decode({tok.bos_id(), 'o', 'k', tok.eos_id(), tok.pad_id(), tok.pad_id()}, true) == "ok");
}

TEST_CASE("byte tokenizer refuses ids outside the vocabulary, naming them") {
  const ByteTokenizer tok;
  CHECK_THROWS_AS(tok.decode({65, 259}), std::out_of_range);
  CHECK_THROWS_WITH(tok.decode({65, 259}), Catch::Matchers::Contains("id 259"));
  CHECK_THROWS_WITH(tok.decode({-1}), Catch::Matchers::Contains("id -1"));
}
