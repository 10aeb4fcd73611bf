#include "train/exact_match.hpp"

#include <algorithm>
#include <stdexcept>

namespace lyre {

ExactMatchResult exact_match(Model& model, const Dataset& dataset, const ByteTokenizer& tokenizer,
                             int64_t max_samples, int32_t max_new_tokens, int64_t batch_size) {
  ExactMatchResult result;
  const int64_t n = std::min(max_samples, dataset.size());
  GenerateOptions options;
  options.max_new_tokens = max_new_tokens;
  options.eos_token_id = tokenizer.eos_id();
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t end = std::min(n, begin + batch_size);
    std::vector<std::vector<int32_t>> prompts;
    for (int64_t i = begin; i < end; ++i) {
      const Sample& s = dataset[i];
      if (s.prompt.empty() && s.completion.empty()) {
        throw std::invalid_argument(dataset.path() + ": exact-match evaluation needs prompt/completion records");
      }
      std::vector<int32_t> ids{tokenizer.bos_id()};
      std::vector<int32_t> body = tokenizer.encode(s.prompt);
      ids.insert(ids.end(), body.begin(), body.end());
      prompts.push_back(std::move(ids));
    }
    std::vector<std::vector<int32_t>> outputs = model.generate(prompts, options);
    for (int64_t i = begin; i < end; ++i) {
      std::vector<int32_t> out = outputs[static_cast<size_t>(i - begin)];
      if (!out.empty() && out.back() == tokenizer.eos_id()) out.pop_back();
      std::string got;
      try {
        got = tokenizer.decode(out);
      } catch (const std::out_of_range&) {
        got = "<id outside the tokenizer>";  // a model vocabulary larger than the tokenizer's
      }
      const Sample& s = dataset[i];
      ++result.samples;
      if (got == s.completion) ++result.correct;
      if (result.examples.size() < 3) result.examples.push_back({s.prompt, s.completion, got});
    }
  }
  return result;
}

}  // namespace lyre
