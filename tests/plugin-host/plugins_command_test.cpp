// `lyre plugins`: one block per file, with the reason for every refused one.
#include <catch2/catch.hpp>

#include <sstream>

#include "cli/plugins_command.hpp"
#include "test_support.hpp"

using namespace lyre;
using lyre::test::plugin_file;

TEST_CASE("lyre plugins shows each file with its name, version, slots, ABI and score, or why it was refused") {
  PluginRegistry registry = PluginRegistry::discover({"/nonexistent/plugins", test::plugin_dir()});
  std::ostringstream out;
  print_plugin_reports(out, registry.search_dirs(), registry.reports());
  const std::string text = out.str();
  CHECK_THAT(text, Catch::StartsWith("search path:\n  /nonexistent/plugins  (missing)\n  " + test::plugin_dir() + "\n"));
  CHECK_THAT(text, Catch::Contains("\n" + plugin_file("test-good") +
                                   "\n"
                                   "  name:        test-good\n"
                                   "  version:     1.2.3\n"
                                   "  description: the sound test plugin\n"
                                   "  slots:       backend, model, optimizer, objective\n"
                                   "  ABI:         1.1\n"
                                   "  score:       50 (fake backend for tests)\n"));
  CHECK_THAT(text, Catch::Contains("\n" + plugin_file("test-zero-score") + "\n") &&
                       Catch::Contains("  score:       0 (cannot run here: no test accelerator present)\n"));
  CHECK_THAT(text, Catch::Contains("\n" + plugin_file("test-objective") +
                                   "\n"
                                   "  name:        objective-test\n"
                                   "  version:     0.0.1\n"
                                   "  description: an objective only\n"
                                   "  slots:       objective\n"
                                   "  ABI:         1.1\n\n"));
  CHECK_THAT(text, Catch::Contains("\n" + plugin_file("test-wrong-major") +
                                   "\n  rejected:    plugin ABI 2.0, host ABI 1.1: rebuild it against this lyre's SDK\n"));
  CHECK_THAT(text, Catch::Contains("\n" + plugin_file("not-a-plugin") + "\n  rejected:    not loadable: invalid ELF header\n"));
  CHECK_THAT(text, Catch::EndsWith("\n12 files found, 5 loaded, 7 rejected\n"));
}

TEST_CASE("lyre plugins exits 0, and 2 on an unknown argument") {
  CHECK(run_plugins_command({"--help"}) == 0);
  CHECK(run_plugins_command({}) == 0);
  CHECK(run_plugins_command({"--bogus"}) == 2);
}
