// Records as users write them, before tokenization, and the sources that read them: JSONL (with
// a column_mapping as in Kithara), plain text files. Pre-tokenized token files are read by
// token_file.hpp instead: they hold ids, not records.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lyre {

enum class RecordKind {
  text,               // {"text"}: continued pretraining, every token trained
  prompt_completion,  // {"prompt", "completion"}: SFT, loss on the completion
  messages,           // {"messages": [{"role", "content"}...]}: SFT, loss on assistant turns
  preference,         // {"prompt", "chosen", "rejected"}: preference pairs (DPO)
};
const char* record_kind_name(RecordKind kind);  // "text", "prompt_completion", ...

struct Message {
  std::string role;  // "system" | "user" | "assistant" (other roles are kept; templates decide)
  std::string content;
};

struct Record {
  RecordKind kind = RecordKind::text;
  std::string text;                // text
  std::string prompt;              // prompt_completion, preference
  std::string completion;          // prompt_completion
  std::vector<Message> messages;   // messages
  std::string chosen, rejected;    // preference
  // Where it came from, for messages: "data/train.jsonl:17".
  std::string where;
};

struct SourceOptions {
  std::string path;
  // "jsonl" | "text" | "auto" (by extension: .jsonl/.json -> jsonl, .txt/.md -> text)
  std::string format = "auto";
  // Canonical field -> column in the file, as Kithara's column_mapping: {"text": "content"},
  // {"prompt": "question", "completion": "answer"}, {"messages": "conversations"}. Canonical
  // fields: text, prompt, completion, messages, chosen, rejected; and inside messages, role and
  // content ({"role": "from", "content": "value"} reads ShareGPT-style turns).
  std::map<std::string, std::string> column_mapping;
  // A malformed line is an error naming file and line unless this is true; then it is skipped
  // and counted (SourceStats::skipped) and the first few are logged with file:line and reason.
  bool skip_invalid = false;
};

struct SourceStats {
  int64_t records = 0;  // usable records
  int64_t skipped = 0;  // lines skipped as invalid (skip_invalid)
  int64_t blank = 0;    // blank lines ignored
  int64_t bytes = 0;    // size of the file(s)
};

// Random access to the records of a file without holding them in memory: opening scans the file
// once (validating every line, so bad input fails before training starts) and keeps only the
// byte offset of each usable record (8 bytes per record); read(i) parses record i again from a
// memory map. Safe to call read() from several threads.
class RecordSource {
 public:
  virtual ~RecordSource() = default;
  virtual int64_t size() const = 0;
  virtual Record read(int64_t index) const = 0;
  virtual RecordKind kind() const = 0;  // every record of a source has the same kind
  virtual const SourceStats& stats() const = 0;
  virtual const std::string& path() const = 0;
};

// Opens a JSONL file or a text file (one record per file; a directory of .txt files gives one
// record per file, in name order). Errors (std::runtime_error) name the file and, for JSONL, the
// line: malformed JSON, a missing column (named, with the mapping that led to it), a value of
// the wrong type, a record whose kind differs from the first one's, no records at all.
//
// JSONL, line by line (blank lines are ignored; CRLF and a leading UTF-8 BOM are fine):
// - A record's kind comes from the columns it has, the most structured first: "messages", then
//   "chosen"/"rejected" (preference), then "completion" (prompt_completion), then "text". Other
//   columns are ignored, and a null value counts as absent (data set exports write null for a
//   column a row lacks). The first record fixes the file's kind; a later record of another kind
//   is an error even with skip_invalid, since it means the file is not what it seems.
// - Values are strings; "messages" is an array of objects with string "role" and "content".
// - With column_mapping {"role": "from"} (ShareGPT), the roles "human", "gpt" and "system" read
//   as "user", "assistant" and "system"; other roles are kept as they are.
// - Invalid UTF-8 is an error naming the line and column: the file must be UTF-8.
// Text: the whole file is one `text` record and must be UTF-8; a directory gives one record per
// .txt/.md file directly in it (not in subfolders), in name order, skipping empty files.
std::unique_ptr<RecordSource> open_record_source(const SourceOptions& options);

// The JSONL reader over text in memory instead of a file: `source_name` stands for the file name
// in errors and Record::where; options.path and options.format are not used. For tests and fuzzing.
std::unique_ptr<RecordSource> open_jsonl_buffer(std::string text, const std::string& source_name,
                                                const SourceOptions& options);

}  // namespace lyre
