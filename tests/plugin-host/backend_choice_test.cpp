// Choosing a backend by score or by name, finding an objective, and initialize failures.
#include <catch2/catch.hpp>

#include <functional>

#include <boost/filesystem.hpp>

#include "plugin/error.hpp"
#include "plugin/plugin_host.hpp"
#include "test_support.hpp"

using namespace lyre;
using lyre::test::plugin_file;

namespace {

// A folder holding copies of the named test plugins only.
struct PluginSubset {
  boost::filesystem::path path;
  explicit PluginSubset(std::initializer_list<const char*> names) {
    path = boost::filesystem::temp_directory_path() / boost::filesystem::unique_path("lyre-host-test-%%%%-%%%%");
    boost::filesystem::create_directories(path);
    for (const char* name : names) {
      boost::filesystem::copy_file(plugin_file(name), path / ("liblyre-" + std::string(name) + ".so"));
    }
  }
  ~PluginSubset() {
    boost::system::error_code ec;
    boost::filesystem::remove_all(path, ec);
  }
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST_CASE("auto picks the backend with the highest score") {
  PluginSubset dir({"test-good", "test-fast", "test-zero-score"});
  PluginRegistry registry = PluginRegistry::discover({dir.path.string()});
  std::shared_ptr<LoadedPlugin> chosen = registry.backend("auto");
  CHECK(chosen->name() == "backend-test-fast");
  CHECK(chosen->initialized());
  CHECK(registry.backend("")->name() == "backend-test-fast");  // "" means auto; initialize runs once
}

TEST_CASE("naming a backend overrides the score") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  std::shared_ptr<LoadedPlugin> good = registry.backend("test-good");
  CHECK(good->name() == "test-good");
  CHECK(good->initialized());
  CHECK(good->path() == plugin_file("test-good"));
  // The short form drops the "backend-" prefix.
  CHECK(registry.backend("test-fast")->name() == "backend-test-fast");
  CHECK(registry.backend("backend-test-fast")->name() == "backend-test-fast");
}

TEST_CASE("naming a missing backend lists the backends found and why others were refused") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  const std::string msg = message_of([&] { registry.backend("nope"); });
  CHECK_THAT(msg, Catch::StartsWith("no backend named 'nope'."));
  CHECK_THAT(msg, Catch::Contains("backend-test-fast (" + plugin_file("test-fast") + "): score 80, faster fake backend"));
  CHECK_THAT(msg, Catch::Contains("test-good (" + plugin_file("test-good") + "): score 50"));
  CHECK_THAT(msg, Catch::Contains("test-zero-score (" + plugin_file("test-zero-score") +
                                  "): cannot run here: no test accelerator present"));
  CHECK_THAT(msg, Catch::Contains(plugin_file("test-wrong-major") + ": plugin ABI 2.0, host ABI 1.1"));
  CHECK_THAT(msg, Catch::Contains("Search path: " + test::plugin_dir()));
}

TEST_CASE("naming a backend that scored 0 says why it cannot run") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  const std::string msg = message_of([&] { registry.backend("test-zero-score"); });
  CHECK_THAT(msg, Catch::StartsWith("backend test-zero-score cannot run here: no test accelerator present"));
}

TEST_CASE("naming a plugin that is no backend says what it is") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  const std::string msg = message_of([&] { registry.backend("objective-test"); });
  CHECK_THAT(msg, Catch::StartsWith("plugin objective-test (" + plugin_file("test-objective") +
                                    ") is not a backend; it fills: objective"));
}

TEST_CASE("an initialize failure names the file, and the plugin is never handed out") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  const std::string file = plugin_file("test-init-fails");
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      registry.backend("test-init-fails");
      FAIL("a backend whose initialize failed was returned");
    } catch (const PluginError& e) {
      CHECK(e.code() == LYRE_ERROR_UNAVAILABLE);
      // "(attempt 1)" both times: the plugin's initialize ran once.
      CHECK(std::string(e.what()) == file + ": initialize failed: test accelerator refused to start (attempt 1)");
    }
  }
  CHECK_THROWS_AS(registry.objective("init-fails"), PluginError);
  CHECK_THROWS_WITH(registry.objective("init-fails"),
                    file + ": initialize failed: test accelerator refused to start (attempt 1)");
}

TEST_CASE("auto passes over a backend whose initialize fails, with one warning") {
  test::LogCapture capture;
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  const size_t warnings_before = capture.lines("warning").size();
  std::shared_ptr<LoadedPlugin> chosen = registry.backend("auto");
  CHECK(chosen->name() == "backend-test-fast");
  const std::vector<std::string> warnings = capture.lines("warning");
  REQUIRE(warnings.size() == warnings_before + 1);
  CHECK(warnings.back() == "backend test-init-fails passed over: " + plugin_file("test-init-fails") +
                               ": initialize failed: test accelerator refused to start (attempt 1)");
}

TEST_CASE("no usable backend: auto says so and lists what was found") {
  PluginSubset dir({"test-zero-score", "test-init-fails"});
  PluginRegistry registry = PluginRegistry::discover({dir.path.string()});
  const std::string msg = message_of([&] { registry.backend("auto"); });
  CHECK_THAT(msg, Catch::StartsWith("no backend can run here."));
  CHECK_THAT(msg, Catch::Contains("test-zero-score"));
  CHECK_THAT(msg, Catch::Contains("test-init-fails (" + (dir.path / "liblyre-test-init-fails.so").string() +
                                  "): initialize failed"));
}

TEST_CASE("an objective is found by its table's name, or by its plugin's") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  std::shared_ptr<LoadedPlugin> p = registry.objective("test-mean");
  CHECK(p->name() == "test-good");
  CHECK(p->initialized());
  CHECK(registry.objective("test-objective-mean")->name() == "objective-test");
  CHECK(registry.objective("objective-test")->name() == "objective-test");
  const std::string msg = message_of([&] { registry.objective("dpo"); });
  CHECK_THAT(msg, Catch::StartsWith("no objective named 'dpo'."));
  CHECK_THAT(msg, Catch::Contains("test-mean (test-good)"));
  CHECK_THAT(msg, Catch::Contains("init-fails (test-init-fails)"));
}

TEST_CASE("two registries share one load of a library: initialize runs once") {
  PluginRegistry first = PluginRegistry::discover({test::plugin_dir()});
  PluginRegistry second = PluginRegistry::discover({test::plugin_dir()});
  std::shared_ptr<LoadedPlugin> a = first.backend("test-fast");
  std::shared_ptr<LoadedPlugin> b = second.backend("test-fast");  // test-fast fails a second initialize
  CHECK(a == b);
}
