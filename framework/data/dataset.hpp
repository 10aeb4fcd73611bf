// A tokenized data set read from JSONL: `text` records (pretraining) or `prompt`/`completion`
// records (SFT). Whole-file, in memory, for now; streaming arrives with the data issue.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/byte_tokenizer.hpp"

namespace lyre {

// One tokenized record: ids = [BOS] + text/prompt/completion bytes + [EOS], and for each id
// whether it belongs to the trained part (completion and EOS for SFT; everything but BOS for
// text). Prompt and completion strings are kept for generation-based evaluation.
struct Sample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> trained;  // same length as ids
  std::string prompt, completion;  // empty for text records
};

struct DatasetStats {
  int64_t records = 0;
  int64_t truncated = 0;  // records longer than max_seq_len + 1 ids, cut
};

class Dataset {
 public:
  // Reads `path` (JSONL). Each line is an object with "text" or with "prompt" and "completion"
  // (strings; other keys are ignored). Errors name the file and line: malformed JSON, missing
  // field, wrong type; an empty file is an error. Samples longer than max_seq_len + 1 ids are
  // truncated (counted in stats()); max_seq_len <= 0 keeps every sample whole. Errors are
  // std::runtime_error.
  static Dataset from_jsonl(const std::string& path, const ByteTokenizer& tokenizer,
                            int64_t max_seq_len);

  int64_t size() const { return static_cast<int64_t>(samples_.size()); }
  const Sample& operator[](int64_t i) const { return samples_[static_cast<size_t>(i)]; }
  const DatasetStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }

 private:
  std::vector<Sample> samples_;
  DatasetStats stats_;
  std::string path_;
};

}  // namespace lyre
