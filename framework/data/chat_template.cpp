#include "data/chat_template.hpp"

#include <limits>
#include <stdexcept>
#include <string_view>

namespace lyre {

namespace {

const char* const kKnownNames = "llama3, chatml, qwen2.5, gemma, mistral, alpaca";

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::runtime_error(where.empty() ? what : where + ": " + what);
}

// One code point at text[i] (UTF-8), or -1 for a byte that does not start a valid sequence.
int32_t code_point_at(std::string_view text, size_t i, size_t* length) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  size_t n = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
  *length = 1;
  if (n == 0 || i + n > text.size()) return -1;
  int32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  *length = n;
  return cp;
}

// Python's str.isspace(), which is what `| trim` and `.strip()` use when transformers renders
// the template with Jinja2. (JavaScript's trim differs: it also strips U+FEFF and keeps
// U+001C..U+001F and U+0085.)
bool is_python_space(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// str.strip(): whitespace code points off both ends; invalid UTF-8 is never whitespace.
std::string py_strip(std::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t n = 0;
    if (!is_python_space(code_point_at(text, begin, &n))) break;
    begin += n;
  }
  size_t end = text.size();
  while (end > begin) {
    // Step back to the start of the last code point (at most 3 continuation bytes).
    size_t start = end - 1;
    while (start > begin && end - start < 4 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80)
      --start;
    size_t n = 0;
    const int32_t cp = code_point_at(text, start, &n);
    if (start + n != end || !is_python_space(cp)) break;
    end = start;
  }
  return std::string(text.substr(begin, end - begin));
}

// Text under construction and its trained byte ranges; adjacent trained pieces merge.
class Rendering {
 public:
  void add(std::string_view piece) { chat_.text.append(piece); }
  void add_trained(std::string_view piece) {
    if (piece.empty()) return;
    const size_t begin = chat_.text.size();
    chat_.text.append(piece);
    if (chat_.text.size() > std::numeric_limits<uint32_t>::max())
      throw std::runtime_error("a conversation renders to more than 4 GiB of text");
    const auto b = static_cast<uint32_t>(begin), e = static_cast<uint32_t>(chat_.text.size());
    if (!chat_.trained.empty() && chat_.trained.back().second == b)
      chat_.trained.back().second = e;
    else
      chat_.trained.emplace_back(b, e);
  }
  RenderedChat take() { return std::move(chat_); }

 private:
  RenderedChat chat_;
};

void require_messages(const std::vector<Message>& messages, const std::string& where) {
  if (messages.empty()) fail(where, "the conversation has no messages");
}

// Every family knows system, user and assistant; anything else is more likely a typo or an
// unconverted dataset ("human"/"gpt") than something a template should pass through.
void require_known_role(const Message& message, size_t index, const std::string& family,
                        const std::string& where) {
  if (message.role == "system" || message.role == "user" || message.role == "assistant") return;
  fail(where, "message " + std::to_string(index) + " has role '" + message.role + "', which the " +
                  family + " chat template does not know (roles: system, user, assistant; " +
                  "map other names with column_mapping or convert the data)");
}

// Gemma, Llama 2 and alpaca: an optional leading system message, then user and assistant
// strictly alternating from a user turn, as the templates' raise_exception checks.
void require_alternation(const std::vector<Message>& messages, size_t first, const std::string& family,
                         const std::string& where) {
  for (size_t i = first; i < messages.size(); ++i) {
    const Message& m = messages[i];
    require_known_role(m, i, family, where);
    const bool want_user = (i - first) % 2 == 0;
    if (m.role == "system")
      fail(where, "message " + std::to_string(i) + " is a system message; the " + family +
                      " chat template allows one only as the first message");
    if ((m.role == "user") != want_user)
      fail(where, "message " + std::to_string(i) + " has role '" + m.role + "' where '" +
                      (want_user ? "user" : "assistant") + "' was expected: the " + family +
                      " chat template requires roles to alternate user/assistant/user/assistant/...");
  }
}

void require_eos(const std::string& eos, const std::string& family, const std::string& where) {
  if (eos.empty())
    fail(where, "the " + family + " chat template ends assistant turns with the EOS token, and the "
                "tokenizer has none (set eos_token in tokenizer_config.json)");
}

class NamedTemplate : public ChatTemplate {
 public:
  explicit NamedTemplate(std::string name) : name_(std::move(name)) {}
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
};

// Meta-Llama-3-*-Instruct: {{bos}}<|start_header_id|>ROLE<|end_header_id|>\n\n CONTENT|trim <|eot_id|>
// per message. The first published template wrote the generation prompt unconditionally; this
// renders the corrected one ({% if add_generation_prompt %}), which training needs.
class Llama3Template : public NamedTemplate {
 public:
  Llama3Template() : NamedTemplate("llama3") {}
  RenderedChat render(const std::vector<Message>& messages, const std::string& bos, const std::string&,
                      const std::string& where) const override {
    require_messages(messages, where);
    Rendering out;
    for (size_t i = 0; i < messages.size(); ++i) {
      const Message& m = messages[i];
      require_known_role(m, i, name(), where);
      if (i == 0) out.add(bos);
      out.add("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n");
      const std::string turn = py_strip(m.content) + "<|eot_id|>";
      if (m.role == "assistant")
        out.add_trained(turn);
      else
        out.add(turn);
    }
    return out.take();
  }
  std::string generation_prompt() const override { return "<|start_header_id|>assistant<|end_header_id|>\n\n"; }
};

// ChatML: <|im_start|>ROLE\nCONTENT<|im_end|>\n per message, content as is. Qwen2.5 writes its
// default system message first when the conversation does not start with one.
class ChatmlTemplate : public NamedTemplate {
 public:
  explicit ChatmlTemplate(bool qwen) : NamedTemplate(qwen ? "qwen2.5" : "chatml"), qwen_(qwen) {}
  RenderedChat render(const std::vector<Message>& messages, const std::string&, const std::string&,
                      const std::string& where) const override {
    require_messages(messages, where);
    Rendering out;
    if (qwen_ && messages[0].role != "system")
      out.add("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n");
    for (size_t i = 0; i < messages.size(); ++i) {
      const Message& m = messages[i];
      require_known_role(m, i, name(), where);
      out.add("<|im_start|>" + m.role + "\n");
      if (m.role == "assistant")
        out.add_trained(m.content + "<|im_end|>");
      else
        out.add(m.content + "<|im_end|>");
      out.add("\n");
    }
    return out.take();
  }
  std::string generation_prompt() const override { return "<|im_start|>assistant\n"; }

 private:
  bool qwen_;
};

// Gemma: {{bos}}<start_of_turn>user|model\n CONTENT|trim <end_of_turn>\n, alternating from a user
// turn. A leading system message is folded into the first user turn as Gemma 3's template does
// (its content, untrimmed, + "\n\n" before the user's); Gemma 1 and 2 raise on it instead.
class GemmaTemplate : public NamedTemplate {
 public:
  GemmaTemplate() : NamedTemplate("gemma") {}
  RenderedChat render(const std::vector<Message>& messages, const std::string& bos, const std::string&,
                      const std::string& where) const override {
    require_messages(messages, where);
    const size_t first = messages[0].role == "system" ? 1 : 0;
    require_alternation(messages, first, name(), where);
    Rendering out;
    out.add(bos);
    for (size_t i = first; i < messages.size(); ++i) {
      const Message& m = messages[i];
      const bool model = m.role == "assistant";
      out.add(model ? "<start_of_turn>model\n" : "<start_of_turn>user\n");
      if (i == first && first == 1) out.add(messages[0].content + "\n\n");
      const std::string turn = py_strip(m.content) + "<end_of_turn>";
      if (model)
        out.add_trained(turn);
      else
        out.add(turn);
      out.add("\n");
    }
    return out.take();
  }
  std::string generation_prompt() const override { return "<start_of_turn>model\n"; }
};

// Llama 2 chat (meta-llama/Llama-2-7b-chat-hf), the [INST] format Mistral derives from:
//   {{bos}}[INST] USER.strip() [/INST] ASSISTANT.strip() {{eos}}...
// with a leading system message as "<<SYS>>\nSYSTEM\n<</SYS>>\n\n" before the first user
// content (the whole is stripped together). The trained range starts at the space before the
// answer: SentencePiece tokenizers attach it to the answer's first word ("▁Hello").
class MistralTemplate : public NamedTemplate {
 public:
  MistralTemplate() : NamedTemplate("mistral") {}
  RenderedChat render(const std::vector<Message>& messages, const std::string& bos, const std::string& eos,
                      const std::string& where) const override {
    require_messages(messages, where);
    const size_t first = messages[0].role == "system" ? 1 : 0;
    require_alternation(messages, first, name(), where);
    Rendering out;
    for (size_t i = first; i < messages.size(); ++i) {
      const Message& m = messages[i];
      std::string content = m.content;
      if (i == first && first == 1)
        content = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + content;
      if (m.role == "user") {
        out.add(bos + "[INST] " + py_strip(content) + " [/INST]");
      } else {
        require_eos(eos, name(), where);
        out.add_trained(" " + py_strip(content) + " " + eos);
      }
    }
    return out.take();
  }
  // The user turn itself ends with " [/INST]"; the answer follows directly.
  std::string generation_prompt() const override { return ""; }
};

// Alpaca has no Jinja template; lyre's rendering, pinned here (content is never trimmed):
//   {{bos}}PREAMBLE\n\n### Instruction:\nUSER\n\n### Response:\nASSISTANT{{eos}}\n\n### Instruction:\n...
// PREAMBLE is a leading system message's content, or Alpaca's "Below is an instruction that
// describes a task. Write a response that appropriately completes the request." A user turn
// ends with "\n\n"; an assistant turn is "### Response:\n" + content + EOS, followed by "\n\n"
// when another turn follows. Trained: each answer and its EOS.
class AlpacaTemplate : public NamedTemplate {
 public:
  AlpacaTemplate() : NamedTemplate("alpaca") {}
  RenderedChat render(const std::vector<Message>& messages, const std::string& bos, const std::string& eos,
                      const std::string& where) const override {
    require_messages(messages, where);
    const size_t first = messages[0].role == "system" ? 1 : 0;
    require_alternation(messages, first, name(), where);
    Rendering out;
    out.add(bos);
    out.add(first == 1 ? messages[0].content
                       : std::string("Below is an instruction that describes a task. Write a response that "
                                     "appropriately completes the request."));
    out.add("\n\n");
    for (size_t i = first; i < messages.size(); ++i) {
      const Message& m = messages[i];
      if (m.role == "user") {
        out.add("### Instruction:\n" + m.content + "\n\n");
      } else {
        require_eos(eos, name(), where);
        out.add("### Response:\n");
        out.add_trained(m.content + eos);
        if (i + 1 < messages.size()) out.add("\n\n");
      }
    }
    return out.take();
  }
  std::string generation_prompt() const override { return "### Response:\n"; }
};

bool contains(const std::string& text, std::string_view marker) {
  return text.find(marker) != std::string::npos;
}

}  // namespace

std::unique_ptr<ChatTemplate> chat_template_by_name(const std::string& name) {
  if (name == "llama3") return std::make_unique<Llama3Template>();
  if (name == "chatml") return std::make_unique<ChatmlTemplate>(false);
  if (name == "qwen2.5") return std::make_unique<ChatmlTemplate>(true);
  if (name == "gemma") return std::make_unique<GemmaTemplate>();
  if (name == "mistral") return std::make_unique<MistralTemplate>();
  if (name == "alpaca") return std::make_unique<AlpacaTemplate>();
  throw std::runtime_error("unknown chat template '" + name + "' (known: " + kKnownNames + ")");
}

// Markers identify a family; variants of a family whose rendering lyre's differs from are
// refused rather than guessed (Llama 3.1's dated system prompt, Qwen2/Qwen3, Mistral's own
// [INST] templates without <<SYS>>).
std::unique_ptr<ChatTemplate> recognise_chat_template(const std::string& jinja, const std::string& source) {
  const auto refuse = [&](const std::string& why) -> std::unique_ptr<ChatTemplate> {
    throw std::runtime_error(
        source + ": the chat_template " + why + "; set \"chat_template\": \"<name>\" in the run config to "
        "render with one of lyre's built-in templates (" + kKnownNames + ") if that is the format the model "
        "was trained with");
  };
  if (contains(jinja, "<|start_header_id|>")) {
    if (contains(jinja, "Cutting Knowledge Date"))
      return refuse("is Llama 3.1 or later's (it adds a dated system prompt), which lyre's llama3 template "
                    "(Llama 3.0's format) does not render");
    return chat_template_by_name("llama3");
  }
  if (contains(jinja, "<|im_start|>")) {
    if (contains(jinja, "<think>"))
      return refuse("writes <think> blocks (Qwen3 and similar), which lyre's ChatML templates do not render");
    if (contains(jinja, "You are Qwen")) return chat_template_by_name("qwen2.5");
    if (contains(jinja, "You are a helpful assistant"))
      return refuse("adds a default system message other than Qwen2.5's, which lyre's chatml template does "
                    "not write");
    return chat_template_by_name("chatml");
  }
  if (contains(jinja, "<start_of_turn>")) return chat_template_by_name("gemma");
  if (contains(jinja, "[INST]")) {
    if (!contains(jinja, "<<SYS>>"))
      return refuse("is a Mistral-style [INST] template; lyre's mistral template renders Llama 2's format "
                    "(\"<s>[INST] ... [/INST] answer </s>\" with <<SYS>>), whose spacing and BOS placement differ");
    return chat_template_by_name("mistral");
  }
  if (contains(jinja, "### Instruction")) return chat_template_by_name("alpaca");
  return refuse("is not one lyre recognises (it looks for <|start_header_id|>, <|im_start|>, <start_of_turn>, "
                "[INST] or ### Instruction)");
}

}  // namespace lyre
