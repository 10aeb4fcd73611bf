// The real Jinja chat templates, rendered by node through tests/reference/render_chat.js (see
// there for which template each family is checked against), and the files they come from.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "data/record.hpp"

namespace lyre::test {

inline std::string test_data_dir() {
  const std::string dir = LYRE_TEST_DATA_DIR;
  if (!std::filesystem::exists(dir + "/node_modules/@lenml/tokenizers"))
    throw std::runtime_error(dir + " has no reference tokenizers: run scripts/fetch-test-data.sh");
  return dir;
}

// node_modules/@lenml/tokenizer-<name>/models: tokenizer.json and tokenizer_config.json.
inline std::string lenml_models_dir(const std::string& name) {
  return test_data_dir() + "/node_modules/@lenml/tokenizer-" + name + "/models";
}

inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return nlohmann::json::parse(in);
}

struct ReferenceRendering {
  std::string text;          // empty when the template raised
  std::vector<int32_t> ids;  // when asked for tokens
  std::string error;         // raise_exception's message
};

// Renders each conversation with the family's real template in one node run.
inline std::vector<ReferenceRendering> render_with_jinja(const std::string& family,
                                                         const std::vector<std::vector<Message>>& conversations,
                                                         bool tokenize = false) {
  nlohmann::json input = {{"tokenize", tokenize}, {"cases", nlohmann::json::array()}};
  for (const auto& conversation : conversations) {
    nlohmann::json messages = nlohmann::json::array();
    for (const Message& m : conversation) messages.push_back({{"role", m.role}, {"content", m.content}});
    input["cases"].push_back({{"family", family}, {"messages", messages}});
  }
  const std::filesystem::path input_file =
      std::filesystem::temp_directory_path() / ("lyre-chat-cases-" + std::to_string(::getpid()) + ".json");
  {
    std::ofstream out(input_file, std::ios::binary);
    out << input.dump();
    if (!out) throw std::runtime_error("cannot write " + input_file.string());
  }
  const std::string command = "node '" LYRE_SOURCE_DIR "/tests/reference/render_chat.js' '" + test_data_dir() +
                              "' < '" + input_file.string() + "'";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + command);
  std::string output;
  char buffer[65536];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) output.append(buffer, n);
  const int status = ::pclose(pipe);
  std::filesystem::remove(input_file);
  if (status != 0) throw std::runtime_error(command + " failed (is node installed? scripts/install-deps.sh)");

  std::vector<ReferenceRendering> results;
  for (const auto& r : nlohmann::json::parse(output)) {
    ReferenceRendering rendering;
    if (r.contains("error")) rendering.error = r["error"].get<std::string>();
    if (r.contains("text")) rendering.text = r["text"].get<std::string>();
    if (r.contains("ids")) rendering.ids = r["ids"].get<std::vector<int32_t>>();
    results.push_back(std::move(rendering));
  }
  if (results.size() != conversations.size()) throw std::runtime_error("render_chat.js answered too few cases");
  return results;
}

}  // namespace lyre::test
