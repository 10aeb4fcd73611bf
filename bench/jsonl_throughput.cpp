// lyre-bench-jsonl: how fast the data sources read, printed as one JSON object. It writes a
// JSONL file of prompt/completion records (about --mb MB of English-like text with some
// escapes and non-ASCII), then times open_record_source (the validating scan: MB/s), read()
// over every record in file order and in a random order (records/s), and a token file's full
// id check (TokenFile::check_ids: GB/s). Files are timed warm: just written, in the page cache.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/record.hpp"
#include "data/token_file.hpp"

namespace {

constexpr const char* kUsage = R"(usage: lyre-bench-jsonl [options]
  --dir DIR     where the generated files go (default: the system temp directory); removed after
  --mb N        size of the generated JSONL file in MB (default: 100)
  --tokens-mb N size of the generated uint16 token file in MB (default: 200)
)";

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string random_text(std::mt19937_64& rng, size_t words) {
  static const char* vocabulary[] = {"the", "model", "learns", "to", "answer", "questions", "about", "data",
                                     "caf\\u00e9", "\xE6\x97\xA5\xE6\x9C\xAC", "with", "\\\"quotes\\\"", "and",
                                     "lines\\n", "of", "text", "in", "JSON", "records", "quickly"};
  std::string s;
  for (size_t i = 0; i < words; ++i) {
    if (i) s += ' ';
    s += vocabulary[rng() % (sizeof vocabulary / sizeof *vocabulary)];
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = std::filesystem::temp_directory_path().string();
  double mb = 100, tokens_mb = 200;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || i + 1 >= argc) {
      std::cerr << kUsage;
      return arg == "--help" ? 0 : 2;
    }
    if (arg == "--dir") dir = argv[++i];
    else if (arg == "--mb") mb = std::atof(argv[++i]);
    else if (arg == "--tokens-mb") tokens_mb = std::atof(argv[++i]);
    else {
      std::cerr << "unknown option " << arg << "\n" << kUsage;
      return 2;
    }
  }
  try {
    const std::string jsonl_path = dir + "/lyre-bench-jsonl." + std::to_string(::getpid()) + ".jsonl";
    const std::string token_path = dir + "/lyre-bench-jsonl." + std::to_string(::getpid()) + ".u16";
    std::mt19937_64 rng(0);
    {
      std::ofstream out(jsonl_path, std::ios::binary);
      size_t written = 0;
      while (written < static_cast<size_t>(mb * 1e6)) {
        // Prompts of 10-60 words, completions of 20-220: records of roughly 0.2-2 KB.
        const std::string line = "{\"prompt\": \"" + random_text(rng, 10 + rng() % 50) + "\", \"completion\": \"" +
                                 random_text(rng, 20 + rng() % 200) + "\", \"id\": " + std::to_string(written) + "}\n";
        out << line;
        written += line.size();
      }
      if (!out) throw std::runtime_error("cannot write " + jsonl_path);
    }
    const double bytes = static_cast<double>(std::filesystem::file_size(jsonl_path));

    lyre::SourceOptions options;
    options.path = jsonl_path;
    auto start = std::chrono::steady_clock::now();
    auto source = lyre::open_record_source(options);
    const double open_s = seconds_since(start);
    const int64_t n = source->size();

    start = std::chrono::steady_clock::now();
    size_t checksum = 0;
    for (int64_t i = 0; i < n; ++i) checksum += source->read(i).completion.size();
    const double sequential_s = seconds_since(start);

    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::shuffle(order.begin(), order.end(), rng);
    start = std::chrono::steady_clock::now();
    for (int64_t i : order) checksum += source->read(i).prompt.size();
    const double random_s = seconds_since(start);

    std::vector<int32_t> ids(static_cast<size_t>(tokens_mb * 1e6 / 2));
    for (auto& id : ids) id = static_cast<int32_t>(rng() % 50257);
    lyre::write_token_file(token_path, ids, lyre::TokenDtype::uint16);
    const auto tokens = lyre::TokenFile::open(token_path, lyre::TokenDtype::uint16, 50257);
    start = std::chrono::steady_clock::now();
    tokens.check_ids();
    const double check_s = seconds_since(start);

    std::filesystem::remove(jsonl_path);
    std::filesystem::remove(token_path);
    std::printf(
        "{\"jsonl_mb\": %.1f, \"records\": %lld, \"open_s\": %.3f, \"open_mb_per_s\": %.0f, "
        "\"read_sequential_records_per_s\": %.0f, \"read_sequential_mb_per_s\": %.0f, "
        "\"read_random_records_per_s\": %.0f, \"token_file_mb\": %.1f, \"token_check_gb_per_s\": %.2f, "
        "\"checksum\": %zu}\n",
        bytes / 1e6, static_cast<long long>(n), open_s, bytes / 1e6 / open_s, n / sequential_s,
        bytes / 1e6 / sequential_s, n / random_s, ids.size() * 2 / 1e6, ids.size() * 2 / 1e9 / check_s, checksum);
  } catch (const std::exception& e) {
    std::cerr << "lyre-bench-jsonl: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
