// `lyre plugins`: discovery's reports, one block per file.
#include "cli/plugins_command.hpp"

#include <iostream>

#include <boost/filesystem.hpp>
#include <spdlog/spdlog.h>

namespace lyre {
namespace {

constexpr const char* kPluginsUsage = R"(usage: lyre plugins

Lists every liblyre-*.so on the plugin search path: its name, version, slots, ABI version and,
for a backend, its score (0 = cannot run here, with the reason). A file that cannot be used says
why. Folders are searched in order: $LYRE_PLUGIN_PATH (':'-separated), then the folders beside
the lyre binary and the install prefix; the first file of a name wins.
)";


}  // namespace

void print_plugin_reports(std::ostream& out, const std::vector<std::string>& search_dirs,
                          const std::vector<PluginReport>& reports) {
  out << "search path:\n";
  for (const std::string& dir : search_dirs) {
    boost::system::error_code ec;
    out << "  " << dir << (boost::filesystem::is_directory(dir, ec) ? "" : "  (missing)") << "\n";
  }
  size_t loaded = 0;
  for (const PluginReport& r : reports) {
    out << "\n" << r.path << "\n";
    if (!r.loaded) {
      out << "  rejected:    " << r.error << "\n";
      continue;
    }
    ++loaded;
    out << "  name:        " << r.name << "\n";
    out << "  version:     " << r.version << "\n";
    if (!r.description.empty()) out << "  description: " << r.description << "\n";
    out << "  slots:       " << slot_names(r.slots) << "\n";
    out << "  ABI:         " << r.abi_major << "." << r.abi_minor << "\n";
    if (r.is_backend) {
      out << "  score:       " << r.score;
      if (r.score > 0) {
        out << (r.score_reason.empty() ? "" : " (" + r.score_reason + ")");
      } else {
        out << " (" << r.error << ")";
      }
      out << "\n";
    }
  }
  out << "\n" << reports.size() << (reports.size() == 1 ? " file" : " files") << " found, " << loaded << " loaded, "
      << reports.size() - loaded << " rejected\n";
}

int run_plugins_command(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "-h" || arg == "--help") {
      std::cout << kPluginsUsage;
      return 0;
    }
    std::cerr << "lyre plugins: unexpected argument \"" << arg << "\"\n\n" << kPluginsUsage;
    return 2;
  }
  // The listing says everything discovery would warn about; the warnings would only repeat it.
  struct QuietLog {
    spdlog::level::level_enum level = spdlog::get_level();
    QuietLog() { spdlog::set_level(spdlog::level::err); }
    ~QuietLog() { spdlog::set_level(level); }
  };
  PluginRegistry registry = [] {
    QuietLog quiet;
    return PluginRegistry::discover();
  }();
  print_plugin_reports(std::cout, registry.search_dirs(), registry.reports());
  return 0;
}

}  // namespace lyre
