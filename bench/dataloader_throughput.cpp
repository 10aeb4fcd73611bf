// The data path's speed beside training's: tokens per second that the Dataloader delivers (on one
// thread, building batches as the Trainer asks for them) for a real tokenizer on real text, with
// the tokenized samples cached and with every batch re-tokenized from the source (a data set over
// the cache budget), packed and unpacked. Compare with lyre-bench-train's training tokens/s: the
// loader must never be the bottleneck.
//
//   lyre-bench-dataloader TOKENIZER CORPUS.txt [--seq 1024] [--batch 8] [--batches 200]
// TOKENIZER is a model directory or tokenizer file (or "byte"); CORPUS is UTF-8 text, cut into
// JSONL text records of about 2 KB at line ends.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "data/dataloader.hpp"
#include "data/tokenizer.hpp"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: lyre-bench-dataloader TOKENIZER CORPUS.txt [--seq N] [--batch N] [--batches N]\n";
    return 2;
  }
  int64_t seq = 1024, batch = 8, batches = 200;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t v = std::stoll(argv[i + 1]);
    if (flag == "--seq") seq = v;
    else if (flag == "--batch") batch = v;
    else if (flag == "--batches") batches = v;
    else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  std::shared_ptr<const lyre::Tokenizer> tokenizer = lyre::load_tokenizer(argv[1]);

  // The corpus as JSONL text records of ~2 KB.
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::cerr << argv[2] << ": cannot open\n";
    return 1;
  }
  const std::string jsonl = (std::filesystem::temp_directory_path() / "lyre-bench-dataloader.jsonl").string();
  int64_t records = 0, bytes = 0;
  {
    std::ofstream out(jsonl, std::ios::binary);
    std::string line, record;
    auto flush = [&] {
      if (record.empty()) return;
      out << nlohmann::json{{"text", record}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
      bytes += static_cast<int64_t>(record.size());
      ++records;
      record.clear();
    };
    while (std::getline(in, line)) {
      record += line + '\n';
      if (record.size() >= 2048) flush();
    }
    flush();
  }

  std::printf("tokenizer %s (%s) | corpus %.2f MB in %lld records | seq_len %lld, batch %lld | 1 thread for batches\n",
              tokenizer->info().source.c_str(), tokenizer->info().kind.c_str(), bytes / 1e6,
              static_cast<long long>(records), static_cast<long long>(seq), static_cast<long long>(batch));
  std::printf("| samples | packing | open (tokenize all) s | batches | tokens/s (non-padding) | padding |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const bool cached : {true, false}) {
    for (const bool packing : {false, true}) {
      lyre::DatasetOptions d;
      d.source.path = jsonl;
      d.seq_len = seq;
      d.overlong = lyre::Overlong::split;
      d.cache_bytes = cached ? (int64_t{1} << 30) : 0;
      auto start = std::chrono::steady_clock::now();
      auto dataset = lyre::open_dataset(d, tokenizer, nullptr);
      const double open_s = seconds_since(start);
      lyre::DataloaderOptions o;
      o.per_device_batch_size = batch;
      o.seq_len = seq;
      o.packing = packing;
      o.drop_last = false;
      lyre::Dataloader loader(dataset, o);
      loader.batches_in_epoch(0);  // the epoch's plan, made once per epoch: not per batch
      start = std::chrono::steady_clock::now();
      int64_t tokens = 0, positions = 0, built = 0;
      for (int64_t epoch = 0; built < batches; ++epoch) {
        loader.start_epoch(epoch);
        while (built < batches) {
          auto b = loader.next();
          if (!b) break;
          tokens += b->num_tokens();
          positions += b->size();
          ++built;
        }
      }
      const double s = seconds_since(start);
      std::printf("| %s | %s | %.2f | %lld | %.0f | %.1f%% |\n", cached ? "cached" : "re-tokenized each batch",
                  packing ? "on" : "off", open_s, static_cast<long long>(built), tokens / s,
                  100.0 * (1.0 - double(tokens) / double(positions)));
    }
  }
  std::filesystem::remove(jsonl);
  return 0;
}
