// Discovery: every broken file is refused with its own reason in one warning line, and the sound
// plugins beside it still load.
#include <catch2/catch.hpp>

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <map>

#include <boost/filesystem.hpp>

#include "plugin/plugin_host.hpp"
#include "test_support.hpp"

using namespace lyre;
using lyre::test::find_report;
using lyre::test::plugin_file;

namespace {

// A fresh empty folder under the system temp dir, removed again at scope exit.
struct TempDir {
  boost::filesystem::path path;
  TempDir() {
    path = boost::filesystem::temp_directory_path() / boost::filesystem::unique_path("lyre-host-test-%%%%-%%%%");
    boost::filesystem::create_directories(path);
  }
  ~TempDir() {
    boost::system::error_code ec;
    boost::filesystem::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("each broken plugin file is refused with its exact reason and the sound ones still load") {
  test::LogCapture capture;
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});

  const std::map<std::string, std::string> expected = {
      {"not-a-plugin", "not loadable: invalid ELF header"},
      {"test-no-entry", "no lyre_plugin_init symbol: not a lyre plugin (a plugin defines it with LYRE_PLUGIN_ENTRY)"},
      {"test-null-init", "lyre_plugin_init returned NULL"},
      {"test-wrong-major", "plugin ABI 2.0, host ABI 1.1: rebuild it against this lyre's SDK"},
      {"test-small-struct", "LyrePluginApi struct_size 16 is smaller than ABI 1.0's 104"},
      {"test-bad-slots", "slots bits disagree with the tables: slots has backend but the backend table is NULL"},
  };
  for (const auto& [name, reason] : expected) {
    INFO(name);
    const PluginReport* r = find_report(registry, plugin_file(name));
    REQUIRE(r != nullptr);
    CHECK_FALSE(r->loaded);
    CHECK(r->error == reason);
  }
  // A missing dependency: the loader's message names the library it could not find.
  const PluginReport* dep = find_report(registry, plugin_file("test-missing-dep"));
  REQUIRE(dep != nullptr);
  CHECK_FALSE(dep->loaded);
  CHECK(dep->error ==
        "not loadable: liblyre_test_dep.so: cannot open shared object file: No such file or directory");

  for (const char* name : {"test-good", "test-fast", "test-init-fails", "test-zero-score", "test-objective"}) {
    INFO(name);
    const PluginReport* r = find_report(registry, plugin_file(name));
    REQUIRE(r != nullptr);
    CHECK(r->loaded);
  }
  CHECK(registry.reports().size() == 12);

  // One warning line per refused file, naming it; nothing else warns.
  const std::vector<std::string> warnings = capture.lines("warning");
  CHECK(warnings.size() == expected.size() + 1);
  for (const auto& [name, reason] : expected) {
    const std::string line = "skipping plugin " + plugin_file(name) + ": " + reason;
    CHECK(std::count(warnings.begin(), warnings.end(), line) == 1);
  }
}

TEST_CASE("an accepted plugin's report carries what its table says") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  const PluginReport* good = find_report(registry, plugin_file("test-good"));
  REQUIRE(good != nullptr);
  CHECK(good->name == "test-good");
  CHECK(good->version == "1.2.3");
  CHECK(good->description == "the sound test plugin");
  CHECK(good->abi_major == 1);
  CHECK(good->abi_minor == 1);
  CHECK(good->slots == (LYRE_SLOT_BACKEND | LYRE_SLOT_MODEL | LYRE_SLOT_OPTIMIZER | LYRE_SLOT_OBJECTIVE));
  CHECK(good->is_backend);
  CHECK(good->score == 50);
  CHECK(good->score_reason == "fake backend for tests");
  CHECK(good->error.empty());

  const PluginReport* wrong = find_report(registry, plugin_file("test-wrong-major"));
  REQUIRE(wrong != nullptr);
  CHECK(wrong->abi_major == 2);
}

TEST_CASE("a backend scoring 0 is kept in the reports with its reason") {
  test::LogCapture capture;
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  const PluginReport* zero = find_report(registry, plugin_file("test-zero-score"));
  REQUIRE(zero != nullptr);
  CHECK(zero->loaded);
  CHECK(zero->is_backend);
  CHECK(zero->score == 0);
  CHECK(zero->score_reason == "no test accelerator present");
  CHECK(zero->error == "cannot run here: no test accelerator present");
  CHECK(capture.text().find("cannot run here: no test accelerator present") != std::string::npos);
}

TEST_CASE("refused libraries are unloaded again") {
  { PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()}); }
  for (const char* name : {"test-wrong-major", "test-bad-slots", "test-no-entry", "test-good"}) {
    INFO(name);
    void* handle = dlopen(plugin_file(name).c_str(), RTLD_NOW | RTLD_NOLOAD);
    CHECK(handle == nullptr);
    if (handle != nullptr) dlclose(handle);
  }
}

TEST_CASE("missing folders are skipped and the same folder twice is searched once") {
  test::LogCapture capture;
  PluginRegistry registry =
      PluginRegistry::discover({"/nonexistent/lyre-plugins", test::plugin_dir(), test::plugin_dir() + "/."});
  CHECK(registry.reports().size() == 12);
  CHECK(capture.lines("warning").size() == 7);
  CHECK(registry.search_dirs().size() == 3);
}

TEST_CASE("the first file of a name on the search path wins over a later one") {
  TempDir first;
  boost::filesystem::copy_file(plugin_file("test-good"), first.path / "liblyre-test-good.so");
  test::LogCapture capture;
  PluginRegistry registry = PluginRegistry::discover({first.path.string(), test::plugin_dir()});
  const PluginReport* winner = find_report(registry, (first.path / "liblyre-test-good.so").string());
  const PluginReport* shadowed = find_report(registry, plugin_file("test-good"));
  REQUIRE(winner != nullptr);
  REQUIRE(shadowed != nullptr);
  CHECK(winner->loaded);
  CHECK_FALSE(shadowed->loaded);
  CHECK(shadowed->error == "shadowed by " + winner->path + " (earlier on the search path)");
  CHECK(registry.backend("test-good")->path() == winner->path);
  CHECK(capture.lines("warning").size() == 7);  // shadowing is deliberate, not a warning
}

TEST_CASE("two files with the same plugin name: the first loads, the second is refused") {
  TempDir first;
  const auto copy = first.path / "liblyre-another-good.so";
  boost::filesystem::copy_file(plugin_file("test-good"), copy);
  test::LogCapture capture;
  PluginRegistry registry = PluginRegistry::discover({first.path.string(), test::plugin_dir()});
  const PluginReport* r = find_report(registry, plugin_file("test-good"));
  REQUIRE(r != nullptr);
  CHECK_FALSE(r->loaded);
  CHECK(r->error == "duplicate plugin name 'test-good' (already loaded from " + copy.string() + ")");
  CHECK(find_report(registry, copy.string())->loaded);
}

TEST_CASE("default search path: LYRE_PLUGIN_PATH entries, then beside the binary, then the install prefix") {
  const char* old = std::getenv("LYRE_PLUGIN_PATH");
  const std::string saved = old != nullptr ? old : "";
  setenv("LYRE_PLUGIN_PATH", "/a/one::/b/two:", 1);
  const std::vector<std::string> dirs = PluginRegistry::default_search_dirs();
  if (old != nullptr) {
    setenv("LYRE_PLUGIN_PATH", saved.c_str(), 1);
  } else {
    unsetenv("LYRE_PLUGIN_PATH");
  }
  REQUIRE(dirs.size() >= 4);
  CHECK(dirs[0] == "/a/one");
  CHECK(dirs[1] == "/b/two");
  const boost::filesystem::path exe = boost::filesystem::read_symlink("/proc/self/exe");
  CHECK(dirs[2] == (exe.parent_path().parent_path() / "lib/lyre/plugins").string());
  CHECK(dirs.back() == std::string(LYRE_INSTALL_PREFIX) + "/" + LYRE_PLUGIN_INSTALL_DIR);
}
