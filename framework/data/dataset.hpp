// Tokenized samples with random access: what the Dataloader orders, packs and shards.
//   from records (JSONL, text files): RecordSource -> make_sample (tokenizer, chat template)
//   from a pre-tokenized token file: windows of seq_len + 1 ids, memory-mapped
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/chat_template.hpp"
#include "data/record.hpp"
#include "data/sample.hpp"
#include "data/tokenizer.hpp"

namespace lyre {

// What to do with a sample longer than a row (seq_len + 1 ids):
//   truncate  keep its first seq_len + 1 ids (SFT default)
//   drop      leave it out
//   split     cut it into windows of seq_len + 1 ids that overlap by one id, so every id is a
//             target exactly once (text records only: pretraining documents)
enum class Overlong { truncate, drop, split };
Overlong parse_overlong(const std::string& name);  // throws std::invalid_argument naming it

struct DatasetOptions {
  SourceOptions source;         // path, format ("jsonl" | "text" | "tokens" | "auto"), columns
  int64_t seq_len = 0;          // row length T; samples of more than T + 1 ids are over-long
  Overlong overlong = Overlong::truncate;
  // Token files: "uint16" | "uint32" element type, and whether an EOS inside a window starts a
  // new document (positions restart, attention does not cross it).
  std::string token_dtype;
  bool document_masking = true;
  // Tokenized samples are kept in memory up to this many bytes; a larger data set is
  // re-tokenized from its source on each access (bounded memory, more CPU).
  int64_t cache_bytes = int64_t{1} << 30;
};

struct DatasetStats {
  int64_t records = 0;    // records read from the source
  int64_t skipped = 0;    // invalid lines skipped (skip_invalid)
  int64_t truncated = 0;  // over-long samples cut
  int64_t dropped = 0;    // over-long samples left out
  int64_t split = 0;      // over-long samples cut into several windows
  int64_t tokens = 0;     // ids over all samples
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Sample sample(int64_t index) const = 0;
  // ids in sample(index), without building it: what packing plans with. For preference data,
  // the longer of chosen and rejected.
  virtual int64_t length(int64_t index) const = 0;
  virtual RecordKind kind() const = 0;
  virtual const DatasetStats& stats() const = 0;
  virtual const std::string& path() const = 0;
  // Changes when the samples would: a hash of the lengths and the options that made them.
  // A resumed data position is refused when it does not match.
  virtual uint64_t fingerprint() const = 0;
};

// Opens a dataset. Errors (std::runtime_error) name the file and line; an empty data set (no
// samples after dropping) is an error, raised here, before training starts.
// `chat_template` may be null; it is needed only for messages records. The dataset keeps both.
std::shared_ptr<const Dataset> open_dataset(const DatasetOptions& options, std::shared_ptr<const Tokenizer> tokenizer,
                                            std::shared_ptr<const ChatTemplate> chat_template);

// Samples held in memory (tests, small tools).
std::shared_ptr<const Dataset> make_memory_dataset(std::vector<Sample> samples, RecordKind kind = RecordKind::text,
                                                   std::string name = "<memory>");

}  // namespace lyre
