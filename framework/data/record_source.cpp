// JSONL and plain-text record sources (record.hpp). A JSONL source scans its memory-mapped file
// once, validating every line with simdjson's DOM parser, and keeps one offset per record;
// read() parses the line again.
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "io/mapped_file.hpp"
#include "data/record.hpp"

namespace lyre {
namespace {

namespace dom = simdjson::dom;
namespace fs = std::filesystem;

// ---- UTF-8 ----

// Offset of the first byte that is not part of valid UTF-8, or `size` if all of it is valid.
// Only run once simdjson has said there is one, to tell the user where.
size_t first_invalid_utf8(const unsigned char* s, size_t size) {
  size_t i = 0;
  while (i < size) {
    const unsigned char c = s[i];
    size_t n = 0;
    uint32_t min = 0, cp = 0;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { n = 1; min = 0x80; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 2; min = 0x800; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 3; min = 0x10000; cp = c & 0x07; }
    else return i;
    if (i + n >= size) return i;
    for (size_t k = 1; k <= n; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n + 1;
  }
  return size;
}

// "invalid UTF-8 at column 7 (byte 0xff)" for the first bad byte of a line.
std::string utf8_error(std::string_view line) {
  const size_t at = first_invalid_utf8(reinterpret_cast<const unsigned char*>(line.data()), line.size());
  char byte[8];
  std::snprintf(byte, sizeof byte, "0x%02x", at < line.size() ? static_cast<unsigned char>(line[at]) : 0);
  return "invalid UTF-8 at column " + std::to_string(at + 1) + " (byte " + byte + ")";
}

// ---- Columns ----

struct Column {
  const char* field;  // canonical name
  std::string name;   // in the file
  bool mapped = false;
};

// `"answer" (mapped from "completion" by column_mapping)`, or `"completion"` when not mapped.
std::string describe(const Column& c) {
  std::string s = "\"" + c.name + "\"";
  if (c.mapped) s += std::string(" (mapped from \"") + c.field + "\" by column_mapping)";
  return s;
}

struct Columns {
  Column text{"text", "text"}, prompt{"prompt", "prompt"}, completion{"completion", "completion"},
      messages{"messages", "messages"}, chosen{"chosen", "chosen"}, rejected{"rejected", "rejected"},
      role{"role", "role"}, content{"content", "content"};
  bool sharegpt_roles = false;
};

Columns resolve_columns(const std::map<std::string, std::string>& mapping, const std::string& name) {
  Columns columns;
  Column* all[] = {&columns.text,     &columns.prompt, &columns.completion, &columns.messages,
                   &columns.chosen,   &columns.rejected, &columns.role,     &columns.content};
  for (const auto& entry : mapping) {
    const std::string& field = entry.first;
    const std::string& column = entry.second;
    auto it = std::find_if(std::begin(all), std::end(all), [&](Column* c) { return field == c->field; });
    if (it == std::end(all))
      throw std::runtime_error(name + ": column_mapping: unknown field \"" + field +
                               "\"; the fields are text, prompt, completion, messages, chosen, "
                               "rejected, role, content (field -> column in the file)");
    if (column.empty())
      throw std::runtime_error(name + ": column_mapping: field \"" + field + "\" maps to an empty column name");
    (*it)->name = column;
    (*it)->mapped = true;
  }
  // ShareGPT's turns are {"from": "human" | "gpt" | "system", "value": ...}.
  columns.sharegpt_roles = columns.role.name == "from";
  return columns;
}

std::string map_role(std::string_view role, bool sharegpt) {
  if (sharegpt) {
    if (role == "human") return "user";
    if (role == "gpt") return "assistant";
  }
  return std::string(role);
}

// ---- One line ----

// A line that is broken on its own: an error, or skipped with skip_invalid.
struct InvalidLine {
  std::string reason;
};
// A line of another kind than the first record: always an error.
struct KindMismatch {
  std::string reason;
};

[[noreturn]] void invalid(std::string reason) { throw InvalidLine{std::move(reason)}; }

const char* type_name(dom::element_type type) {
  switch (type) {
    case dom::element_type::ARRAY: return "array";
    case dom::element_type::OBJECT: return "object";
    case dom::element_type::INT64:
    case dom::element_type::UINT64:
    case dom::element_type::DOUBLE: return "number";
    case dom::element_type::STRING: return "string";
    case dom::element_type::BOOL: return "boolean";
    case dom::element_type::NULL_VALUE: return "null";
  }
  return "value";
}

// Null counts as absent: data set exports write null for a column a row lacks.
bool present(const dom::object& object, const Column& c) {
  dom::element value;
  return !object.at_key(c.name).get(value) && !value.is_null();
}

std::string_view string_column(const dom::object& object, const Column& c) {
  dom::element value;
  if (object.at_key(c.name).get(value)) invalid("missing column " + describe(c));
  std::string_view s;
  if (value.get_string().get(s))
    invalid("column " + describe(c) + " must be a string, got " + type_name(value.type()));
  return s;
}

std::optional<RecordKind> detect_kind(const dom::object& object, const Columns& c) {
  if (present(object, c.messages)) return RecordKind::messages;
  if (present(object, c.chosen) || present(object, c.rejected)) return RecordKind::preference;
  if (present(object, c.completion)) return RecordKind::prompt_completion;
  if (present(object, c.text)) return RecordKind::text;
  return std::nullopt;
}

const Column& kind_column(RecordKind kind, const Columns& c) {
  switch (kind) {
    case RecordKind::messages: return c.messages;
    case RecordKind::preference: return c.chosen;
    case RecordKind::prompt_completion: return c.completion;
    case RecordKind::text: break;
  }
  return c.text;
}

std::string keys_of(const dom::object& object) {
  std::string keys;
  int n = 0;
  for (auto field : object) {
    if (n++ == 8) return keys + ", ...";
    keys += (keys.empty() ? "\"" : ", \"") + std::string(field.key) + "\"";
  }
  return keys.empty() ? "none" : keys;
}

void read_messages(const dom::object& object, const Columns& c, Record* out) {
  dom::element value;
  if (object.at_key(c.messages.name).get(value)) invalid("missing column " + describe(c.messages));
  dom::array turns;
  if (value.get_array().get(turns))
    invalid("column " + describe(c.messages) + " must be an array of objects, got " + type_name(value.type()));
  if (turns.begin() == turns.end()) invalid("column " + describe(c.messages) + " is an empty array");
  size_t i = 0;
  for (dom::element turn : turns) {
    const std::string at = c.messages.name + "[" + std::to_string(i++) + "]";
    dom::object message;
    if (turn.get_object().get(message)) invalid(at + " must be an object, got " + type_name(turn.type()));
    std::string_view field[2];
    const Column* keys[2] = {&c.role, &c.content};
    for (int k = 0; k < 2; ++k) {
      dom::element v;
      if (message.at_key(keys[k]->name).get(v)) invalid(at + " has no key " + describe(*keys[k]));
      if (v.get_string().get(field[k]))
        invalid(at + "." + keys[k]->name + " must be a string, got " + type_name(v.type()));
    }
    if (out) out->messages.push_back(Message{map_role(field[0], c.sharegpt_roles), std::string(field[1])});
  }
}

// Checks one parsed line and, given `out`, fills it. `file_kind` is the first record's kind,
// none while the first record is being looked for.
RecordKind read_object(dom::element doc, const Columns& c, std::optional<RecordKind> file_kind,
                       int64_t file_kind_line, Record* out) {
  dom::object object;
  if (doc.get_object().get(object)) invalid(std::string("expected a JSON object, got ") + type_name(doc.type()));
  const std::optional<RecordKind> detected = detect_kind(object, c);
  if (detected && file_kind && *detected != *file_kind)
    throw KindMismatch{std::string("a ") + record_kind_name(*detected) + " record (it has column " +
                       describe(kind_column(*detected, c)) + "), but the first record (line " +
                       std::to_string(file_kind_line) + ") is " + record_kind_name(*file_kind) +
                       "; a file holds one kind of record"};
  RecordKind kind;
  if (detected) kind = *detected;
  else if (file_kind) kind = *file_kind;
  else if (present(object, c.prompt)) kind = RecordKind::prompt_completion;
  else
    invalid("no column of a known record kind: expected " + describe(c.text) + ", " + describe(c.prompt) +
            " with " + describe(c.completion) + ", " + describe(c.messages) + ", or " +
            describe(c.prompt) + " with " + describe(c.chosen) + " and " + describe(c.rejected) +
            "; the line has " + keys_of(object));
  switch (kind) {
    case RecordKind::text: {
      const auto text = string_column(object, c.text);
      if (out) out->text = text;
      break;
    }
    case RecordKind::prompt_completion: {
      const auto prompt = string_column(object, c.prompt);
      const auto completion = string_column(object, c.completion);
      if (out) out->prompt = prompt, out->completion = completion;
      break;
    }
    case RecordKind::messages: read_messages(object, c, out); break;
    case RecordKind::preference: {
      const auto prompt = string_column(object, c.prompt);
      const auto chosen = string_column(object, c.chosen);
      const auto rejected = string_column(object, c.rejected);
      if (out) out->prompt = prompt, out->chosen = chosen, out->rejected = rejected;
      break;
    }
  }
  if (out) out->kind = kind;
  return kind;
}

// ---- JSONL ----

// Records over this size are parsed by a parser of their own in read(), so that one huge line
// does not leave every reading thread's parser holding buffers sized for it.
constexpr size_t kSharedParserMaxLine = size_t{1} << 20;

class JsonlSource final : public RecordSource {
 public:
  // Scans the map, or the buffer when there is no map (open_jsonl_buffer).
  JsonlSource(std::string name, MappedFile map, simdjson::padded_string buffer, const SourceOptions& options)
      : name_(std::move(name)), map_(std::move(map)), buffer_(std::move(buffer)),
        columns_(resolve_columns(options.column_mapping, name_)) {
    if (map_.data() != nullptr) {
      data_ = map_.data();
      size_ = map_.size();
      readable_end_ = data_ + size_;
    } else if (buffer_.size() > 0) {
      data_ = buffer_.data();
      size_ = buffer_.size();
      readable_end_ = data_ + size_ + simdjson::SIMDJSON_PADDING;
    }
    stats_.bytes = static_cast<int64_t>(size_);
    map_.advise(MappedFile::Access::sequential);
    scan(options.skip_invalid);
    map_.advise(MappedFile::Access::normal);
  }

  int64_t size() const override { return static_cast<int64_t>(offsets_.size()); }
  RecordKind kind() const override { return kind_; }
  const SourceStats& stats() const override { return stats_; }
  const std::string& path() const override { return name_; }

  Record read(int64_t index) const override {
    if (index < 0 || index >= size())
      throw std::out_of_range(name_ + ": record " + std::to_string(index) + " out of range (the file has " +
                              std::to_string(size()) + ")");
    const char* begin = data_ + offsets_[static_cast<size_t>(index)];
    const std::string_view line = line_at(begin);
    Record record;
    record.where = name_ + ":" + std::to_string(line_of(index));
    auto fill = [&](dom::parser& parser) {
      dom::element doc;
      if (parse(parser, line, doc))
        throw std::runtime_error(record.where + ": the line no longer parses; did the file change after it was opened?");
      try {
        read_object(doc, columns_, kind_, kind_line_, &record);
      } catch (const InvalidLine& e) {
        throw std::runtime_error(record.where + ": " + e.reason + " (did the file change after it was opened?)");
      } catch (const KindMismatch& e) {
        throw std::runtime_error(record.where + ": " + e.reason + " (did the file change after it was opened?)");
      }
    };
    if (line.size() <= kSharedParserMaxLine) {
      static thread_local dom::parser parser;
      fill(parser);
    } else {
      dom::parser parser;
      fill(parser);
    }
    return record;
  }

 private:
  std::string_view line_at(const char* begin) const {
    const char* end = data_ + size_;
    const void* newline = std::memchr(begin, '\n', static_cast<size_t>(end - begin));
    return {begin, static_cast<size_t>((newline ? static_cast<const char*>(newline) : end) - begin)};
  }

  // Parses in place where simdjson's padding lies inside readable memory, else from a copy.
  simdjson::error_code parse(dom::parser& parser, std::string_view line, dom::element& doc) const {
    const bool copy = line.data() + line.size() + simdjson::SIMDJSON_PADDING > readable_end_;
    return parser.parse(line.data(), line.size(), copy).get(doc);
  }

  std::string where(int64_t line) const { return name_ + ":" + std::to_string(line) + ": "; }

  // 1-based line of record `index`: its index plus the blank and skipped lines before it.
  int64_t line_of(int64_t index) const {
    auto it = std::upper_bound(gaps_.begin(), gaps_.end(), index,
                               [](int64_t i, const Gap& gap) { return i < gap.first_record; });
    return index + 1 + (it == gaps_.begin() ? 0 : std::prev(it)->lines_before);
  }

  void note_gap() {
    const int64_t next = size();
    if (!gaps_.empty() && gaps_.back().first_record == next) ++gaps_.back().lines_before;
    else gaps_.push_back({next, (gaps_.empty() ? 0 : gaps_.back().lines_before) + 1});
  }

  void scan(bool skip_invalid) {
    if (size_ == 0) throw std::runtime_error(name_ + ": no records: the file is empty");
    dom::parser parser;
    const char* p = data_;
    const char* const end = data_ + size_;
    // Editors on Windows start UTF-8 files with a byte-order mark.
    if (size_ >= 3 && std::memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3;
    std::optional<RecordKind> file_kind;
    std::string first_skipped;
    constexpr int64_t kLoggedSkips = 5;
    for (int64_t line = 1; p < end; ++line) {
      const std::string_view text = line_at(p);
      const char* const next = p + text.size() + 1;
      dom::element doc;
      const simdjson::error_code error = parse(parser, text, doc);
      std::string reason;
      if (error == simdjson::EMPTY) {
        ++stats_.blank;
        note_gap();
      } else if (error == simdjson::CAPACITY || error == simdjson::MEMALLOC) {
        throw std::runtime_error(where(line) + "cannot parse a line of " + std::to_string(text.size()) +
                                 " bytes: " + simdjson::error_message(error));
      } else if (error == simdjson::UTF8_ERROR) {
        reason = utf8_error(text) + "; lyre reads JSONL as UTF-8";
      } else if (error) {
        reason = std::string("malformed JSON: ") + simdjson::error_message(error);
      } else {
        try {
          const RecordKind kind = read_object(doc, columns_, file_kind, kind_line_, nullptr);
          if (!file_kind) file_kind = kind, kind_line_ = line;
          offsets_.push_back(static_cast<uint64_t>(p - data_));
        } catch (const InvalidLine& e) {
          reason = e.reason;
        } catch (const KindMismatch& e) {
          throw std::runtime_error(where(line) + e.reason);
        }
      }
      if (!reason.empty()) {
        if (!skip_invalid) throw std::runtime_error(where(line) + reason);
        if (stats_.skipped < kLoggedSkips) spdlog::warn("{}skipped: {}", where(line), reason);
        if (stats_.skipped == 0) first_skipped = where(line) + reason;
        ++stats_.skipped;
        note_gap();
      }
      p = next;
    }
    stats_.records = size();
    if (stats_.skipped > 0)
      spdlog::warn("{}: skipped {} invalid line(s) of {} (skip_invalid); {} record(s) remain", name_,
                   stats_.skipped, stats_.skipped + stats_.records + stats_.blank, stats_.records);
    if (offsets_.empty()) {
      if (stats_.skipped > 0)
        throw std::runtime_error(name_ + ": no usable records: all " + std::to_string(stats_.skipped) +
                                 " non-blank line(s) are invalid; the first: " + first_skipped);
      throw std::runtime_error(name_ + ": no records: the file has only blank lines");
    }
    kind_ = *file_kind;
  }

  struct Gap {
    int64_t first_record;  // records from this index on
    int64_t lines_before;  // have this many blank or skipped lines before them
  };

  std::string name_;
  MappedFile map_;
  simdjson::padded_string buffer_;
  const char* data_ = nullptr;
  size_t size_ = 0;
  const char* readable_end_ = nullptr;
  Columns columns_;
  RecordKind kind_ = RecordKind::text;
  int64_t kind_line_ = 0;  // the first record's line, which fixed kind_
  std::vector<uint64_t> offsets_;  // of each record's line in data_
  std::vector<Gap> gaps_;          // sparse: one entry per run of non-record lines
  SourceStats stats_;
};

// ---- Plain text ----

bool is_text_extension(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return ext == ".txt" || ext == ".md";
}

// "FILE:LINE: invalid UTF-8 at column C (byte 0xNN); ..." for a text file that is not UTF-8.
void check_text_utf8(const std::string& path, const MappedFile& map) {
  if (simdjson::validate_utf8(map.data(), map.size())) return;
  const auto* bytes = reinterpret_cast<const unsigned char*>(map.data());
  const size_t at = first_invalid_utf8(bytes, map.size());
  const std::string_view before(map.data(), at);
  const size_t line = static_cast<size_t>(std::count(before.begin(), before.end(), '\n')) + 1;
  const size_t line_start = before.rfind('\n') == std::string_view::npos ? 0 : before.rfind('\n') + 1;
  throw std::runtime_error(path + ":" + std::to_string(line) + ": " +
                           utf8_error(std::string_view(map.data() + line_start, map.size() - line_start)) +
                           "; lyre reads text files as UTF-8");
}

class TextSource final : public RecordSource {
 public:
  TextSource(std::string path, std::vector<std::string> files, SourceStats stats)
      : path_(std::move(path)), files_(std::move(files)), stats_(stats) {}

  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  RecordKind kind() const override { return RecordKind::text; }
  const SourceStats& stats() const override { return stats_; }
  const std::string& path() const override { return path_; }

  Record read(int64_t index) const override {
    if (index < 0 || index >= size())
      throw std::out_of_range(path_ + ": record " + std::to_string(index) + " out of range (" +
                              std::to_string(size()) + " files)");
    const std::string& file = files_[static_cast<size_t>(index)];
    const MappedFile map(file);
    Record record;
    record.kind = RecordKind::text;
    record.text.assign(map.data() ? map.data() : "", map.size());
    record.where = file;
    return record;
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
  SourceStats stats_;
};

std::unique_ptr<RecordSource> open_text(const SourceOptions& options) {
  const std::string& path = options.path;
  if (!options.column_mapping.empty())
    throw std::runtime_error(path + ": column_mapping applies to JSONL only; a text file is one \"text\" record");
  std::vector<std::string> files;
  SourceStats stats;
  if (fs::is_directory(path)) {
    for (const auto& entry : fs::directory_iterator(path))
      if (entry.is_regular_file() && is_text_extension(entry.path())) files.push_back(entry.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw std::runtime_error(path + ": no .txt or .md files in the directory");
  } else {
    files.push_back(path);
  }
  std::vector<std::string> kept;
  for (const std::string& file : files) {
    const MappedFile map(file);
    map.advise(MappedFile::Access::sequential);
    stats.bytes += static_cast<int64_t>(map.size());
    if (map.size() == 0) {
      ++stats.blank;
      continue;
    }
    check_text_utf8(file, map);
    kept.push_back(file);
  }
  if (kept.empty())
    throw std::runtime_error(path + (files.size() == 1 ? ": no records: the file is empty"
                                                       : ": no records: every .txt/.md file in it is empty"));
  stats.records = static_cast<int64_t>(kept.size());
  return std::make_unique<TextSource>(path, std::move(kept), stats);
}

std::string format_of(const SourceOptions& options) {
  if (options.format == "jsonl" || options.format == "text") return options.format;
  if (options.format != "auto")
    throw std::runtime_error(options.path + ": unknown format \"" + options.format +
                             "\"; use \"jsonl\", \"text\" or \"auto\"");
  if (fs::is_directory(options.path)) return "text";
  std::string ext = fs::path(options.path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (ext == ".jsonl" || ext == ".json") return "jsonl";
  if (ext == ".txt" || ext == ".md") return "text";
  throw std::runtime_error(options.path + ": cannot tell the format from the extension \"" + ext +
                           "\"; set format to \"jsonl\" or \"text\"");
}

}  // namespace

std::unique_ptr<RecordSource> open_record_source(const SourceOptions& options) {
  std::error_code error;
  if (!fs::exists(options.path, error)) throw std::runtime_error(options.path + ": no such file or directory");
  if (format_of(options) == "text") return open_text(options);
  if (fs::is_directory(options.path))
    throw std::runtime_error(options.path + ": is a directory; format \"jsonl\" reads one file");
  return std::make_unique<JsonlSource>(options.path, MappedFile(options.path), simdjson::padded_string(), options);
}

std::unique_ptr<RecordSource> open_jsonl_buffer(std::string text, const std::string& source_name,
                                                const SourceOptions& options) {
  return std::make_unique<JsonlSource>(source_name, MappedFile(), simdjson::padded_string(text), options);
}

}  // namespace lyre
