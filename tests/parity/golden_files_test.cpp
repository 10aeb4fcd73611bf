// Golden files: the reference side written to a folder reads back exactly, a broken folder fails
// naming the broken file, and (with parity_golden_writer's folder, from CTest) backend-cpu passes
// against them as it does against live backend-torch.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "golden_files.hpp"
#include "parity_backends.hpp"
#include "parity_checks.hpp"

namespace lyre::parity {
namespace {

namespace fs = std::filesystem;

// A fresh folder under the system's temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "lyre-parity-golden-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

// Two cases (one untied, one with tied embeddings) from live backend-torch at fp64.
const Reference& small_reference() {
  static const Reference reference = [] {
    const Side torch = torch_side("fp64");
    Reference r{torch.label(), {}};
    for (int i : {0, 1}) r.runs.push_back(run_reference(torch, parity_cases().at(i)));
    return r;
  }();
  return reference;
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.batch_size == b.batch_size && a.seq_len == b.seq_len && a.num_samples == b.num_samples &&
         a.tokens == b.tokens && a.targets == b.targets && a.positions == b.positions &&
         a.segment_ids == b.segment_ids && a.loss_mask == b.loss_mask;
}

void check_same_run(const CaseRun& a, const CaseRun& b) {
  CHECK(a.inputs.description == b.inputs.description);
  CHECK(a.inputs.config_json == b.inputs.config_json);
  CHECK(a.inputs.optimizer_json == b.inputs.optimizer_json);
  CHECK(a.inputs.learning_rate == b.inputs.learning_rate);
  REQUIRE(a.inputs.parameters.size() == b.inputs.parameters.size());
  for (size_t i = 0; i < a.inputs.parameters.size(); ++i) {
    const ParameterInfo &p = a.inputs.parameters[i], &q = b.inputs.parameters[i];
    INFO("parameter " << i << " " << p.name);
    CHECK((p.index == q.index && p.name == q.name && p.kind == q.kind && p.trainable == q.trainable &&
           p.shape == q.shape));
  }
  CHECK(a.inputs.weights == b.inputs.weights);
  REQUIRE(a.inputs.batches.size() == b.inputs.batches.size());
  for (size_t s = 0; s < a.inputs.batches.size(); ++s)
    CHECK(same_batch(a.inputs.batches[s], b.inputs.batches[s]));
  CHECK(a.inputs.dlogp == b.inputs.dlogp);
  CHECK(a.inputs.step_dlogp == b.inputs.step_dlogp);
  CHECK(a.forward_backward.logp == b.forward_backward.logp);
  CHECK(a.forward_backward.gradients == b.forward_backward.gradients);
  CHECK(a.adamw.parameters == b.adamw.parameters);
  REQUIRE(a.adamw.state.size() == b.adamw.state.size());
  for (size_t i = 0; i < a.adamw.state.size(); ++i) {
    const HostTensor &s = a.adamw.state[i], &t = b.adamw.state[i];
    INFO("optimizer state " << s.name);
    CHECK((s.name == t.name && s.dtype.code == t.dtype.code && s.dtype.bits == t.dtype.bits &&
           s.shape == t.shape && s.bytes == t.bytes));
  }
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
}

}  // namespace

TEST_CASE("golden files read back exactly what was written") {
  const TempDir dir;
  write_golden(dir.path(), small_reference());
  const Reference back = read_golden(dir.path());
  CHECK(back.label == "golden files " + dir.path() + " (" + small_reference().label + ")");
  REQUIRE(back.runs.size() == small_reference().runs.size());
  for (size_t i = 0; i < back.runs.size(); ++i) {
    INFO("case " << i);
    check_same_run(back.runs[i], small_reference().runs[i]);
  }
}

TEST_CASE("a missing or malformed golden file fails, naming the file") {
  const TempDir dir;
  write_golden(dir.path(), small_reference());
  const std::string index = dir / "golden.json", case0 = dir / "case-0.safetensors";
  const nlohmann::json good = read_json(index);
  using Catch::Contains;

  SECTION("no index") {
    fs::remove(index);
    REQUIRE_THROWS_WITH(read_golden(dir.path()), Contains(index) && Contains("cannot open"));
  }
  SECTION("an index that is not JSON") {
    write_text(index, good.dump().substr(0, 100));
    REQUIRE_THROWS_WITH(read_golden(dir.path()), Contains(index) && Contains("not JSON"));
  }
  SECTION("an index without a key") {
    nlohmann::json j = good;
    j["cases"][1].erase("config_json");
    write_text(index, j.dump());
    REQUIRE_THROWS_WITH(read_golden(dir.path()),
                        Contains(index) && Contains("case 1") && Contains("config_json"));
  }
  SECTION("an index of another format version") {
    nlohmann::json j = good;
    j["version"] = 99;
    write_text(index, j.dump());
    REQUIRE_THROWS_WITH(read_golden(dir.path()), Contains(index) && Contains("version 99"));
  }
  SECTION("no case file") {
    fs::remove(case0);
    REQUIRE_THROWS_WITH(read_golden(dir.path()), Contains(case0));
  }
  SECTION("a truncated case file") {
    fs::resize_file(case0, fs::file_size(case0) / 2);
    REQUIRE_THROWS_WITH(read_golden(dir.path()), Contains(case0));
  }
  SECTION("a case file without a tensor the index lists") {
    nlohmann::json j = good;
    j["cases"][0]["parameters"][0]["name"] = "model.nope.weight";
    write_text(index, j.dump());
    REQUIRE_THROWS_WITH(read_golden(dir.path()), Contains(case0) && Contains("input.weight/model.nope.weight"));
  }
  SECTION("a tensor of another shape than the index says") {
    nlohmann::json j = good;
    j["cases"][0]["parameters"][0]["shape"] = {1, 2, 3};
    const std::string name = good["cases"][0]["parameters"][0]["name"];
    write_text(index, j.dump());
    REQUIRE_THROWS_WITH(read_golden(dir.path()),
                        Contains(case0) && Contains("input.weight/" + name) && Contains("[1, 2, 3]"));
  }
}

// Hidden ([golden-folder]): CTest runs it after parity_golden_writer has written a folder, with
// LYRE_PARITY_GOLDEN naming it (tests/parity/CMakeLists.txt): the path a GPU machine takes.
TEST_CASE("backend-cpu matches the golden folder $LYRE_PARITY_GOLDEN names", "[.][golden-folder]") {
  const char* dir = std::getenv(kGoldenEnv);
  if (dir == nullptr || *dir == '\0')
    FAIL(kGoldenEnv << " is not set: it names the folder parity_golden_writer wrote");
  const Reference reference = read_golden(dir);
  CHECK(reference.runs.size() == parity_cases().size());
  const Side cpu = side_of("backend-cpu");
  check_forward_backward(cpu, reference, Precision::fp32);
  check_adamw_steps(cpu, reference, Precision::fp32);
}

}  // namespace lyre::parity
