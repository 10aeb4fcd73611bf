// Writes the quickstart's data set: string reversal as prompt/completion pairs.
//   {"prompt": "kqzbe=", "completion": "ebzqk"}
// Held-out strings never occur in the training set, so exact match on them measures the learned
// rule, not memory. Deterministic: the same files on every machine.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <string>

namespace {

constexpr int kTrainRecords = 40000;
constexpr int kEvalRecords = 500;
constexpr int kMinLength = 3;
constexpr int kMaxLength = 8;
constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz";

// Raw mt19937_64 output: std::uniform_int_distribution differs between standard libraries.
std::string random_word(std::mt19937_64& rng) {
  const int length = kMinLength + static_cast<int>(rng() % (kMaxLength - kMinLength + 1));
  std::string s;
  for (int i = 0; i < length; ++i) s += kAlphabet[rng() % 26];
  return s;
}

void write(std::ofstream& out, const std::string& word) {
  out << "{\"prompt\": \"" << word << "=\", \"completion\": \""
      << std::string(word.rbegin(), word.rend()) << "\"}\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::mt19937_64 rng(20261124);
  std::set<std::string> held_out;
  std::ofstream eval(dir + "/eval.jsonl"), train(dir + "/train.jsonl");
  if (!eval || !train) {
    std::fprintf(stderr, "cannot write into %s\n", dir.c_str());
    return 1;
  }
  while (static_cast<int>(held_out.size()) < kEvalRecords) {
    std::string w = random_word(rng);
    if (held_out.insert(w).second) write(eval, w);
  }
  for (int written = 0; written < kTrainRecords;) {
    std::string w = random_word(rng);
    if (held_out.count(w)) continue;
    write(train, w);
    ++written;
  }
  return 0;
}
