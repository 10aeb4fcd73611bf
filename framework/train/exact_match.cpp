#include "train/exact_match.hpp"

#include <algorithm>
#include <stdexcept>

namespace lyre {

ExactMatchResult exact_match(Model& model, const Dataset& dataset, const Tokenizer& tokenizer,
                             int64_t max_samples, int32_t max_new_tokens, int64_t batch_size) {
  ExactMatchResult result;
  const int64_t n = std::min(max_samples, dataset.size());
  GenerateOptions options;
  options.max_new_tokens = max_new_tokens;
  options.eos_token_id = tokenizer.info().eos_id;
  if (dataset.kind() != RecordKind::prompt_completion)
    throw std::invalid_argument(dataset.path() + ": exact-match evaluation needs prompt/completion records, these are " +
                                record_kind_name(dataset.kind()));
  std::vector<Sample> samples;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t end = std::min(n, begin + batch_size);
    std::vector<std::vector<int32_t>> prompts;
    samples.clear();
    for (int64_t i = begin; i < end; ++i) {
      samples.push_back(dataset.sample(i));
      std::vector<int32_t> ids = tokenizer.info().prefix_ids;
      const std::vector<int32_t> body = tokenizer.encode_ids(samples.back().prompt);
      ids.insert(ids.end(), body.begin(), body.end());
      prompts.push_back(std::move(ids));
    }
    std::vector<std::vector<int32_t>> outputs = model.generate(prompts, options);
    for (int64_t i = begin; i < end; ++i) {
      std::vector<int32_t> out = outputs[static_cast<size_t>(i - begin)];
      if (!out.empty() && out.back() == tokenizer.info().eos_id) out.pop_back();
      std::string got;
      try {
        got = tokenizer.decode(out, /*skip_special=*/true);
      } catch (const std::out_of_range&) {
        got = "<id outside the tokenizer>";  // a model vocabulary larger than the tokenizer's
      }
      const Sample& s = samples[static_cast<size_t>(i - begin)];
      ++result.samples;
      if (got == s.completion) ++result.correct;
      if (result.examples.size() < 3) result.examples.push_back({s.prompt, s.completion, got});
    }
  }
  return result;
}

}  // namespace lyre
