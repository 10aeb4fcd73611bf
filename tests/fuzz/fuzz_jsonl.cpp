// libFuzzer target for the JSONL record source: each input is a JSONL file, opened from memory
// and from a memory-mapped file (where simdjson's padding may run past the map's end) with a few
// column mappings, skip_invalid off and on; every record is read back. Errors are expected;
// crashes, sanitizer reports and broken invariants are bugs.
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "data/record.hpp"

namespace {

const std::map<std::string, std::string> kMappings[] = {
    {},
    {{"prompt", "question"}, {"completion", "answer"}, {"text", "content"}},
    {{"messages", "conversations"}, {"role", "from"}, {"content", "value"}},
};

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void read_all(const lyre::RecordSource& source) {
  check(source.size() > 0);
  check(source.stats().records == source.size());
  for (int64_t i = 0; i < source.size(); ++i) {
    const lyre::Record record = source.read(i);
    check(record.kind == source.kind());
    check(!record.where.empty());
    if (record.kind == lyre::RecordKind::messages) check(!record.messages.empty());
  }
}

void open_and_read(const std::function<std::unique_ptr<lyre::RecordSource>(const lyre::SourceOptions&)>& open,
                   const lyre::SourceOptions& options) {
  try {
    read_all(*open(options));
  } catch (const std::runtime_error&) {
    // Bad input is reported, not crashed on.
  }
}

// The same input as a file, rewritten for each input: the mapped path parses in place except
// near the end of the map.
struct ScratchFile {
  std::string path = "/tmp/fuzz_jsonl." + std::to_string(::getpid()) + ".jsonl";
  ~ScratchFile() { std::remove(path.c_str()); }
};
const std::string& scratch_file() {
  static const ScratchFile file;
  return file.path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const auto& mapping : kMappings) {
    for (bool skip_invalid : {false, true}) {
      lyre::SourceOptions options;
      options.column_mapping = mapping;
      options.skip_invalid = skip_invalid;
      open_and_read([&](const lyre::SourceOptions& o) { return lyre::open_jsonl_buffer(text, "fuzz.jsonl", o); },
                    options);
    }
  }
  {
    std::ofstream out(scratch_file(), std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
  }
  lyre::SourceOptions options;
  options.path = scratch_file();
  options.format = "jsonl";
  options.skip_invalid = true;
  open_and_read([](const lyre::SourceOptions& o) { return lyre::open_record_source(o); }, options);
  return 0;
}
