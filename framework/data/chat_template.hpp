// Chat templates built in for the common model families: messages -> the exact text the model's
// own Jinja chat_template renders, plus which byte ranges of it are trained (assistant turns).
// The text is then tokenized whole, with offsets, so the ids equal HF's apply_chat_template.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/record.hpp"

namespace lyre {

struct RenderedChat {
  std::string text;
  // Byte ranges [begin, end) of `text` that are trained: each assistant turn's content and the
  // marker that ends the turn (<|eot_id|>, <|im_end|>, <end_of_turn>, </s>), so the model learns
  // to stop; for mistral (Llama 2) also the spaces around the answer (" answer </s>"), which
  // SentencePiece joins to the first word. Sorted, disjoint, never empty.
  std::vector<std::pair<uint32_t, uint32_t>> trained;
};

class ChatTemplate {
 public:
  virtual ~ChatTemplate() = default;
  virtual const std::string& name() const = 0;
  // Renders a conversation as the family's template does with add_generation_prompt = false.
  // `bos` and `eos` are the tokenizer's token strings (templates write {{ bos_token }}). Errors
  // (std::runtime_error, prefixed by `where`) for what the family's template rejects: roles
  // that do not alternate, a system message where the family has none, an unknown role.
  virtual RenderedChat render(const std::vector<Message>& messages, const std::string& bos,
                              const std::string& eos, const std::string& where) const = 0;
  // The text that asks the model for the next assistant turn (generation, evaluation); empty
  // for mistral, whose user turn already ends with " [/INST]".
  virtual std::string generation_prompt() const = 0;
};

// Names: "llama3", "chatml", "qwen2.5" (ChatML with Qwen2.5's default system message),
// "gemma", "mistral" (also Llama 2's [INST] format), "alpaca". An unknown name is an error that
// lists the known ones.
std::unique_ptr<ChatTemplate> chat_template_by_name(const std::string& name);
// Recognises the family of a tokenizer_config.json chat_template (Jinja text) by the markers it
// writes. A template that matches none is an error naming `source` and asking for
// "chat_template": "<name>" in the config: never a guess.
std::unique_ptr<ChatTemplate> recognise_chat_template(const std::string& jinja, const std::string& source);

}  // namespace lyre
