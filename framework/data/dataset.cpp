#include "data/dataset.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string_view>

#include <nlohmann/json.hpp>

namespace lyre {
namespace {

using json = nlohmann::json;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
struct LineBuffer {
  char* data = nullptr;
  size_t capacity = 0;
  ~LineBuffer() { std::free(data); }
};

bool is_blank(std::string_view line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\f' && c != '\v') return false;
  return true;
}

// nlohmann says "[json.exception.parse_error.101] parse error at line 1, column 7: ..."; the line
// is always 1 because we parse one line at a time, so keep only "column 7: ...".
std::string parse_error_detail(const json::parse_error& e) {
  std::string_view what = e.what();
  if (auto at = what.find("column "); at != std::string_view::npos) return std::string(what.substr(at));
  if (auto close = what.find("] "); close != std::string_view::npos) return std::string(what.substr(close + 2));
  return std::string(what);
}

class RecordReader {
 public:
  RecordReader(const std::string& path, int64_t line) : where_(path + ":" + std::to_string(line) + ": ") {}

  [[noreturn]] void fail(const std::string& message) const { throw std::runtime_error(where_ + message); }

  const std::string& string_field(const json& record, const char* key) const {
    const json& value = record.at(key);
    if (!value.is_string()) fail(std::string("field \"") + key + "\" must be a string");
    return value.get_ref<const std::string&>();
  }

 private:
  std::string where_;
};

Sample tokenize(const json& record, const RecordReader& reader, const ByteTokenizer& tokenizer) {
  const bool has_text = record.contains("text");
  const bool has_prompt = record.contains("prompt");
  const bool has_completion = record.contains("completion");
  Sample sample;
  sample.ids.push_back(tokenizer.bos_id());
  sample.trained.push_back(0);
  auto append = [&](const std::string& s, uint8_t trained) {
    for (int32_t id : tokenizer.encode(s)) {
      sample.ids.push_back(id);
      sample.trained.push_back(trained);
    }
  };

  if (has_text) {
    // Both kinds in one record would leave us guessing which one the user meant to train on.
    if (has_prompt || has_completion)
      reader.fail("record has both \"text\" and \"prompt\"/\"completion\"; give one or the other");
    append(reader.string_field(record, "text"), 1);
  } else if (has_prompt || has_completion) {
    if (!has_completion) reader.fail("missing field \"completion\"");
    if (!has_prompt) reader.fail("missing field \"prompt\"");
    sample.prompt = reader.string_field(record, "prompt");
    sample.completion = reader.string_field(record, "completion");
    append(sample.prompt, 0);
    append(sample.completion, 1);
  } else {
    reader.fail("missing field \"text\" (or \"prompt\" and \"completion\")");
  }
  sample.ids.push_back(tokenizer.eos_id());
  sample.trained.push_back(1);
  return sample;
}

}  // namespace

Dataset Dataset::from_jsonl(const std::string& path, const ByteTokenizer& tokenizer,
                            int64_t max_seq_len) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));

  Dataset dataset;
  dataset.path_ = path;
  // A row of T inputs needs T + 1 ids (the last one is only a target).
  const size_t max_ids = max_seq_len > 0 ? static_cast<size_t>(max_seq_len) + 1 : 0;

  LineBuffer buffer;
  int64_t line_number = 0;
  for (;;) {
    errno = 0;
    ssize_t length = ::getline(&buffer.data, &buffer.capacity, file.get());
    if (length < 0) {
      if (std::ferror(file.get())) {
        const int err = errno;
        throw std::runtime_error(path + ": cannot read: " + std::strerror(err != 0 ? err : EIO));
      }
      break;
    }
    ++line_number;
    std::string_view line(buffer.data, static_cast<size_t>(length));
    // Without the line ending, nlohmann's column numbers and "last read" echo stay on the record.
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    if (is_blank(line)) continue;

    RecordReader reader(path, line_number);
    json record;
    try {
      record = json::parse(line.begin(), line.end());
    } catch (const json::parse_error& e) {
      reader.fail("malformed JSON: " + parse_error_detail(e));
    }
    if (!record.is_object()) reader.fail(std::string("expected a JSON object, got ") + record.type_name());

    Sample sample = tokenize(record, reader, tokenizer);
    if (max_ids > 0 && sample.ids.size() > max_ids) {
      sample.ids.resize(max_ids);
      sample.trained.resize(max_ids);
      ++dataset.stats_.truncated;
    }
    dataset.samples_.push_back(std::move(sample));
    ++dataset.stats_.records;
  }
  if (dataset.samples_.empty()) throw std::runtime_error(path + ": no records");
  return dataset;
}

}  // namespace lyre
