// A record made into token ids and a trained mask: the unit that the dataloader packs into rows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/chat_template.hpp"
#include "data/record.hpp"
#include "data/tokenizer.hpp"

namespace lyre {

// ids and, per id, whether it is trained (predicted with loss). For preference records, ids is
// the chosen sequence and rejected_ids the rejected one, each prompt + response + EOS.
struct Sample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> trained;  // same length as ids
  std::vector<int32_t> rejected_ids;
  std::vector<uint8_t> rejected_trained;
  std::string prompt, completion;  // kept for generation-based evaluation (prompt_completion)
  // Indices into ids where a new document begins after the first (pre-tokenized corpora with
  // document masking: the id after each EOS). Empty: ids are one document.
  std::vector<int32_t> doc_starts;
};

// How each kind becomes ids (P = tokenizer.info().prefix_ids, e.g. Llama's BOS; EOS = eos_id):
//   text               P + encode(text) + EOS                        trained: all but P
//   prompt_completion  P + encode(prompt) + encode(completion) + EOS trained: completion + EOS
//   messages           encode(template.render(messages))  (the template writes BOS itself)
//                      trained: tokens starting inside an assistant range of the rendering
//                      (one straddling a range's start is not trained, one straddling its end is)
//   preference         P + encode(prompt) + encode(chosen|rejected) + EOS, trained: response + EOS
// Prompt and completion are encoded separately so the prompt's ids are exactly what generation
// is given at evaluation. A messages record without a chat template, or a tokenizer without an
// EOS for a kind that needs it, is an error naming record.where.
Sample make_sample(const Record& record, const Tokenizer& tokenizer, const ChatTemplate* chat_template);

}  // namespace lyre
