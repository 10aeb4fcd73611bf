#include "data/sample.hpp"

#include <stdexcept>
#include <string>

namespace lyre {

namespace {

[[noreturn]] void fail(const Record& record, const std::string& what) {
  throw std::runtime_error((record.where.empty() ? std::string("record") : record.where) + ": " + what);
}

int32_t require_eos(const Record& record, const Tokenizer& tokenizer) {
  const int32_t eos = tokenizer.info().eos_id;
  if (eos < 0)
    fail(record, std::string("a ") + record_kind_name(record.kind) + " record ends with EOS, and the tokenizer (" +
                     tokenizer.info().source + ") has none: set eos_token in its tokenizer_config.json");
  return eos;
}

void append(Sample& sample, const std::vector<int32_t>& ids, bool trained) {
  sample.ids.insert(sample.ids.end(), ids.begin(), ids.end());
  sample.trained.insert(sample.trained.end(), ids.size(), trained ? 1 : 0);
}

// P + encode(prompt) + encode(response) + EOS into ids/trained; the response and EOS trained.
void build_pair(const Tokenizer& tokenizer, const std::string& prompt, const std::string& response,
                int32_t eos, std::vector<int32_t>& ids, std::vector<uint8_t>& trained) {
  Sample part;
  append(part, tokenizer.info().prefix_ids, false);
  append(part, tokenizer.encode_ids(prompt), false);
  append(part, tokenizer.encode_ids(response), true);
  append(part, {eos}, true);
  ids = std::move(part.ids);
  trained = std::move(part.trained);
}

std::string token_string(const Tokenizer& tokenizer, int32_t id) {
  return id < 0 ? std::string() : tokenizer.id_to_token(id);
}

// A template writes BOS/EOS as text; a tokenizer that reads them back as characters would
// silently train "<", "/", "s", ">" instead of the token that stops generation.
void require_reads_back(const Record& record, const Tokenizer& tokenizer, const std::string& text,
                        const std::string& token, int32_t id, const char* what) {
  if (token.empty() || text.find(token) == std::string::npos) return;
  if (tokenizer.encode_ids(token) != std::vector<int32_t>{id})
    fail(record, std::string("the chat template writes the ") + what + " token \"" + token + "\", and the tokenizer (" +
                     tokenizer.info().source + ") does not read it back as its id " + std::to_string(id) +
                     ": use a tokenizer that treats it as a special token, or a template that does not write it");
}

// A token is trained when its first byte lies inside a trained range. So a token straddling
// the start of a range (a leading space merged into the previous text, "\n\n" spanning the
// header's newline and the answer's) stays untrained, and one straddling the end (the end-of-turn
// marker never does: it is a special token) is trained. Inserted tokens with an empty range
// count at their position.
void mark_trained(const Encoding& encoding, const RenderedChat& chat, std::vector<uint8_t>& trained) {
  trained.assign(encoding.ids.size(), 0);
  size_t r = 0;
  for (size_t i = 0; i < encoding.ids.size(); ++i) {
    const uint32_t begin = encoding.begin[i];
    // Offsets are non-decreasing, so the ranges are walked once.
    while (r < chat.trained.size() && chat.trained[r].second <= begin) ++r;
    if (r < chat.trained.size() && chat.trained[r].first <= begin) trained[i] = 1;
  }
}

}  // namespace

Sample make_sample(const Record& record, const Tokenizer& tokenizer, const ChatTemplate* chat_template) {
  Sample sample;
  switch (record.kind) {
    case RecordKind::text: {
      const int32_t eos = require_eos(record, tokenizer);
      append(sample, tokenizer.info().prefix_ids, false);
      append(sample, tokenizer.encode_ids(record.text), true);
      append(sample, {eos}, true);
      return sample;
    }
    case RecordKind::prompt_completion: {
      const int32_t eos = require_eos(record, tokenizer);
      build_pair(tokenizer, record.prompt, record.completion, eos, sample.ids, sample.trained);
      sample.prompt = record.prompt;
      sample.completion = record.completion;
      return sample;
    }
    case RecordKind::preference: {
      const int32_t eos = require_eos(record, tokenizer);
      build_pair(tokenizer, record.prompt, record.chosen, eos, sample.ids, sample.trained);
      build_pair(tokenizer, record.prompt, record.rejected, eos, sample.rejected_ids, sample.rejected_trained);
      return sample;
    }
    case RecordKind::messages: {
      if (chat_template == nullptr)
        fail(record, "a messages record needs a chat template, and the tokenizer (" + tokenizer.info().source +
                         ") has no chat_template: set \"chat_template\" in the run config to one of llama3, "
                         "chatml, qwen2.5, gemma, mistral, alpaca");
      const TokenizerInfo& info = tokenizer.info();
      const RenderedChat chat = chat_template->render(record.messages, token_string(tokenizer, info.bos_id),
                                                      token_string(tokenizer, info.eos_id), record.where);
      require_reads_back(record, tokenizer, chat.text, token_string(tokenizer, info.bos_id), info.bos_id, "BOS");
      require_reads_back(record, tokenizer, chat.text, token_string(tokenizer, info.eos_id), info.eos_id, "EOS");
      Encoding encoding = tokenizer.encode(chat.text, true);
      if (encoding.begin.size() != encoding.ids.size() || encoding.end.size() != encoding.ids.size())
        fail(record, "the tokenizer (" + info.source + ") returned no byte offsets for the rendered conversation");
      mark_trained(encoding, chat, sample.trained);
      sample.ids = std::move(encoding.ids);
      return sample;
    }
  }
  fail(record, "unknown record kind");
}

}  // namespace lyre
