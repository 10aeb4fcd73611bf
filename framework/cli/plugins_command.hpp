// `lyre plugins`: every plugin file discovery finds, what it offers, and why one cannot be used.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "plugin/plugin_host.hpp"

namespace lyre {

// Runs `lyre plugins`; `args` are the arguments after "plugins" (only -h/--help). Returns the exit
// status: 0, or 2 for an unknown argument.
int run_plugins_command(const std::vector<std::string>& args);

// Writes the search path and one block per file found, as `lyre plugins` prints them.
void print_plugin_reports(std::ostream& out, const std::vector<std::string>& search_dirs,
                          const std::vector<PluginReport>& reports);

}  // namespace lyre
