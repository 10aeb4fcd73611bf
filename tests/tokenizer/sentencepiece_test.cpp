// SentencePiece: a BPE model with byte fallback trained here by spm_train on part of the corpus.
// lyre's .model path against the spm_encode tool, and, independently of libsentencepiece's
// encoder, the same model converted into a Metaspace/byte-fallback tokenizer.json (merges
// ordered as HF's SentencePieceExtractor orders them) run through lyre's own BPE.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <tuple>
#include <sstream>

#include "data/tokenizer.hpp"
#include "data/tokenizers/loaders.hpp"
#include "reference.hpp"

using namespace lyre;
using namespace lyre::test;

namespace {

struct TrainedModel {
  TempDir dir;
  std::string model;
  std::vector<std::string> lines;  // test text: corpus lines the model was not trained on too
};

const TrainedModel& trained() {
  static const std::unique_ptr<TrainedModel> m = [] {
    auto owned = std::make_unique<TrainedModel>();
    TrainedModel& t = *owned;
    const auto docs = corpus_documents();
    std::string train;
    // Every 4th document trains the model; all of them are the test text.
    for (size_t i = 0; i < docs.size(); i += 4) train += docs[i];
    write_file(t.dir.file("train.txt"), train);
    const std::string cmd = "spm_train --input='" + t.dir.file("train.txt") + "' --model_prefix='" + t.dir.file("sp") +
                            "' --vocab_size=2000 --model_type=bpe --byte_fallback=true --character_coverage=0.9995"
                            " --normalization_rule_name=identity --remove_extra_whitespaces=false"
                            " --max_sentence_length=100000 --num_threads=2 --minloglevel=2 > '" +
                            t.dir.file("train.log") + "' 2>&1";
    if (std::system(cmd.c_str()) != 0) FAIL("spm_train failed: " << cmd);
    t.model = t.dir.file("sp.model");
    for (size_t i = 0; i < docs.size(); i += 3) {
      std::istringstream in(docs[i]);
      for (std::string line; std::getline(in, line);)
        if (!line.empty()) t.lines.push_back(line);
    }
    return owned;
  }();
  return *m;
}

// HF's SentencePieceExtractor + LlamaConverter, for a model trained with identity normalization.
std::string convert_to_tokenizer_json(const std::string& model) {
  sentencepiece::SentencePieceProcessor sp;
  REQUIRE(sp.Load(model).ok());
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  std::map<std::string, int> ids;
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    vocab[sp.IdToPiece(id)] = id;
    ids[sp.IdToPiece(id)] = id;
  }
  struct Merge {
    int merged, left, right;
    std::string l, r;
  };
  std::vector<Merge> merges;
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    if (sp.IsControl(id) || sp.IsUnknown(id) || sp.IsByte(id)) continue;
    const std::string piece = sp.IdToPiece(id);
    for (size_t cut = 1; cut < piece.size(); ++cut) {
      if ((static_cast<unsigned char>(piece[cut]) & 0xC0) == 0x80) continue;  // split at characters
      const auto l = ids.find(piece.substr(0, cut)), r = ids.find(piece.substr(cut));
      if (l != ids.end() && r != ids.end()) merges.push_back({id, l->second, r->second, l->first, r->first});
    }
  }
  // By the merged piece's score (BPE models list pieces by descending score), then by the ids.
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return std::tie(a.merged, a.left, a.right) < std::tie(b.merged, b.left, b.right);
  });
  nlohmann::ordered_json merge_list = nlohmann::ordered_json::array();
  for (const Merge& m : merges) merge_list.push_back({m.l, m.r});
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (int id = 0; id < sp.GetPieceSize(); ++id)
    if (sp.IsControl(id) || sp.IsUnknown(id))
      added.push_back({{"id", id}, {"content", sp.IdToPiece(id)}, {"special", true}, {"normalized", false}});
  const std::string space = "\xE2\x96\x81";
  nlohmann::ordered_json j = {
      {"added_tokens", added},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", space}},
                                                             {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}}},
      {"pre_tokenizer", nullptr},
      {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
                                                       {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                       {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model", {{"type", "BPE"}, {"unk_token", sp.IdToPiece(sp.unk_id())}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"vocab", vocab}, {"merges", merge_list}}},
  };
  return j.dump();
}

std::vector<std::vector<int32_t>> spm_encode(const TrainedModel& m, const std::vector<std::string>& lines) {
  TempDir tmp;
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  write_file(tmp.file("in.txt"), text);
  const std::string cmd = "spm_encode --model='" + m.model + "' --output_format=id < '" + tmp.file("in.txt") + "' > '" +
                          tmp.file("out.txt") + "'";
  if (std::system(cmd.c_str()) != 0) FAIL("spm_encode failed: " << cmd);
  std::ifstream in(tmp.file("out.txt"));
  std::vector<std::vector<int32_t>> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ss(line);
    out.emplace_back();
    for (int32_t id; ss >> id;) out.back().push_back(id);
  }
  return out;
}

}  // namespace

TEST_CASE("a SentencePiece .model gives spm_encode's ids on corpus lines") {
  const TrainedModel& m = trained();
  const auto tok = load_tokenizer(m.model);
  CHECK(tok->info().kind == "sentencepiece");
  CHECK(tok->info().bos_id == 1);
  CHECK(tok->info().prefix_ids == std::vector<int32_t>{1});
  const auto expected = spm_encode(m, m.lines);
  REQUIRE(expected.size() == m.lines.size());
  std::vector<std::vector<int32_t>> actual;
  for (const auto& l : m.lines) actual.push_back(tok->encode_ids(l));
  const std::string mismatch = first_mismatch(*tok, m.lines, expected, actual);
  INFO(mismatch);
  CHECK(mismatch.empty());
  for (size_t i = 0; i < m.lines.size(); i += 17) CHECK(tok->decode(actual[i]) == m.lines[i]);
}

TEST_CASE("the .model converted to a byte-fallback tokenizer.json gives libsentencepiece's ids") {
  const TrainedModel& m = trained();
  const auto sp = load_tokenizer(m.model);
  const auto converted = tok::load_tokenizer_json_text(convert_to_tokenizer_json(m.model), "converted sp.model");
  std::vector<std::vector<int32_t>> expected, actual;
  size_t bytes = 0, ids = 0;
  for (const auto& l : m.lines) {
    expected.push_back(sp->encode_ids(l));
    actual.push_back(converted->encode_ids(l));
    bytes += l.size();
    ids += expected.back().size();
  }
  const std::string mismatch = first_mismatch(*sp, m.lines, expected, actual);
  INFO(mismatch);
  CHECK(mismatch.empty());
  for (size_t i = 0; i < m.lines.size(); i += 17) CHECK(converted->decode(actual[i]) == m.lines[i]);
  WARN("SentencePiece converted vs libsentencepiece: " << m.lines.size() << " lines, " << bytes << " bytes, " << ids
                                                       << " ids compared");
}

TEST_CASE("SentencePiece offsets cover the line and control pieces in text become their ids") {
  const TrainedModel& m = trained();
  const auto tok = load_tokenizer(m.model);
  for (size_t i = 0; i < m.lines.size(); i += 50) {
    const std::string& line = m.lines[i];
    const Encoding enc = tok->encode(line, true);
    REQUIRE(enc.begin.size() == enc.ids.size());
    for (size_t k = 0; k < enc.ids.size(); ++k) {
      CHECK(enc.begin[k] <= enc.end[k]);
      CHECK(enc.end[k] <= line.size());
    }
  }
  const auto ids = tok->encode_ids("<s>hello</s>");
  CHECK(ids.front() == 1);
  CHECK(ids.back() == 2);
  CHECK(tok->decode(ids, true) == "hello");
}
