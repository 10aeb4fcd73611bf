// Discovery, loading and version negotiation of plugin libraries, and the choice of a backend.
#include "plugin/plugin_host.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

#include <boost/dll/shared_library.hpp>
#include <boost/filesystem.hpp>
#include <spdlog/spdlog.h>

#include "plugin/error.hpp"

namespace fs = boost::filesystem;

namespace lyre {

struct LoadedPlugin::Impl {
  boost::dll::shared_library library;
};

LoadedPlugin::~LoadedPlugin() {
  // Every object the plugin made holds this LoadedPlugin, so they are all gone by now.
  if (api_ != nullptr && api_->shutdown != nullptr) api_->shutdown();
  api_ = nullptr;
  impl_.reset();  // unloads the library
}

void LoadedPlugin::initialize(const std::string& options_json) {
  if (initialized_) return;
  if (!init_error_.empty()) throw PluginError(init_error_code_, init_error_);
  if (api_->initialize != nullptr) {
    LyreInitialize_Args args{};
    args.struct_size = sizeof args;
    args.options_json = options_json.empty() ? nullptr : options_json.c_str();
    try {
      check(api_->initialize(&args), path_ + ": initialize failed");
    } catch (const PluginError& e) {
      init_error_code_ = e.code();
      init_error_ = e.what();
      throw;
    }
  }
  initialized_ = true;
}

namespace {

// Sizes of the ABI 1.0 tables: a plugin built against 1.0 fills at least this much. (sizeof would
// grow with a minor bump and wrongly refuse older plugins.)
constexpr size_t kVersionPrefixSize = offsetof(LyrePluginApi, abi_minor) + sizeof(uint32_t);
constexpr size_t kPluginApiSize = offsetof(LyrePluginApi, checkpointer) + sizeof(void*);
constexpr size_t kBackendApiSize = offsetof(LyreBackendApi, all_reduce_gradients) + sizeof(void*);
constexpr size_t kModelApiSize = offsetof(LyreModelApi, generate) + sizeof(void*);
constexpr size_t kOptimizerApiSize = offsetof(LyreOptimizerApi, write_state) + sizeof(void*);
constexpr size_t kObjectiveApiSize = offsetof(LyreObjectiveApi, compute) + sizeof(void*);
constexpr size_t kCheckpointerApiSize = offsetof(LyreCheckpointerApi, load) + sizeof(void*);

const char* const kFilePrefix = "liblyre-";
const char* const kFileSuffix = ".so";

std::string version_string(uint32_t major, uint32_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

// A plugin refused at discovery: `reason` goes into its report and one warning line.
struct Rejected {
  std::string reason;
};

// Checks one slot table against the ABI 1.0 layout: present exactly when its bit is set, big
// enough, every required entry filled in. Returns the problem, or "" when the table is sound.
struct TableCheck {
  std::string problem;

  void slot(const char* slot_name, bool bit, const void* table) {
    if (!problem.empty()) return;
    if (bit && table == nullptr) {
      problem = std::string("slots bits disagree with the tables: slots has ") + slot_name + " but the " +
                slot_name + " table is NULL";
    } else if (!bit && table != nullptr) {
      problem = std::string("slots bits disagree with the tables: a ") + slot_name +
                " table is set but slots lacks the " + slot_name + " bit";
    }
  }
  void size(const char* slot_name, size_t struct_size, size_t needed) {
    if (!problem.empty() || struct_size >= needed) return;
    problem = std::string(slot_name) + " table struct_size " + std::to_string(struct_size) +
              " is smaller than ABI 1.0's " + std::to_string(needed);
  }
  void required(const char* slot_name, const char* entry, const void* fn) {
    if (!problem.empty() || fn != nullptr) return;
    problem = std::string(slot_name) + " table: required entry '" + entry + "' is NULL";
  }
};

std::string check_tables(const LyrePluginApi& api) {
  TableCheck c;
  c.slot("backend", api.slots & LYRE_SLOT_BACKEND, api.backend);
  c.slot("model", api.slots & LYRE_SLOT_MODEL, api.model);
  c.slot("optimizer", api.slots & LYRE_SLOT_OPTIMIZER, api.optimizer);
  c.slot("objective", api.slots & LYRE_SLOT_OBJECTIVE, api.objective);
  c.slot("checkpointer", api.slots & LYRE_SLOT_CHECKPOINTER, api.checkpointer);
  if (const LyreBackendApi* t = api.backend) {
    c.size("backend", t->struct_size, kBackendApiSize);
    c.required("backend", "score", reinterpret_cast<const void*>(t->score));
    c.required("backend", "device_info", reinterpret_cast<const void*>(t->device_info));
    c.required("backend", "synchronize", reinterpret_cast<const void*>(t->synchronize));
  }
  if (const LyreModelApi* t = api.model) {
    c.size("model", t->struct_size, kModelApiSize);
    c.required("model", "create", reinterpret_cast<const void*>(t->create));
    c.required("model", "destroy", reinterpret_cast<const void*>(t->destroy));
    c.required("model", "num_parameters", reinterpret_cast<const void*>(t->num_parameters));
    c.required("model", "parameter", reinterpret_cast<const void*>(t->parameter));
    c.required("model", "read_tensor", reinterpret_cast<const void*>(t->read_tensor));
    c.required("model", "write_tensor", reinterpret_cast<const void*>(t->write_tensor));
    c.required("model", "forward", reinterpret_cast<const void*>(t->forward));
    c.required("model", "backward", reinterpret_cast<const void*>(t->backward));
    c.required("model", "zero_grad", reinterpret_cast<const void*>(t->zero_grad));
    c.required("model", "stats", reinterpret_cast<const void*>(t->stats));
  }
  if (const LyreOptimizerApi* t = api.optimizer) {
    c.size("optimizer", t->struct_size, kOptimizerApiSize);
    c.required("optimizer", "create", reinterpret_cast<const void*>(t->create));
    c.required("optimizer", "destroy", reinterpret_cast<const void*>(t->destroy));
    c.required("optimizer", "grad_squared_norm", reinterpret_cast<const void*>(t->grad_squared_norm));
    c.required("optimizer", "step", reinterpret_cast<const void*>(t->step));
    const int states = (t->num_states != nullptr) + (t->state != nullptr) + (t->read_state != nullptr) +
                       (t->write_state != nullptr);
    if (c.problem.empty() && states != 0 && states != 4) {
      c.problem = "optimizer table: num_states, state, read_state and write_state must be all set or all NULL";
    }
  }
  if (const LyreObjectiveApi* t = api.objective) {
    c.size("objective", t->struct_size, kObjectiveApiSize);
    if (c.problem.empty() && (t->name == nullptr || t->name[0] == '\0')) {
      c.problem = "objective table: name is NULL or empty";
    }
    c.required("objective", "create", reinterpret_cast<const void*>(t->create));
    c.required("objective", "destroy", reinterpret_cast<const void*>(t->destroy));
    c.required("objective", "normalizer", reinterpret_cast<const void*>(t->normalizer));
    c.required("objective", "compute", reinterpret_cast<const void*>(t->compute));
  }
  if (const LyreCheckpointerApi* t = api.checkpointer) {
    c.size("checkpointer", t->struct_size, kCheckpointerApiSize);
    c.required("checkpointer", "create", reinterpret_cast<const void*>(t->create));
    c.required("checkpointer", "destroy", reinterpret_cast<const void*>(t->destroy));
    c.required("checkpointer", "save", reinterpret_cast<const void*>(t->save));
    c.required("checkpointer", "wait", reinterpret_cast<const void*>(t->wait));
    c.required("checkpointer", "list", reinterpret_cast<const void*>(t->list));
    c.required("checkpointer", "load", reinterpret_cast<const void*>(t->load));
  }
  return c.problem;
}

// dlerror() names the file first ("/x/liblyre-a.so: invalid ELF header"); the report names it
// already, so only the part after it is kept. A missing dependency's message names the dependency
// and is kept whole.
std::string dl_reason(const std::string& path) {
  const char* text = dlerror();
  std::string reason = text != nullptr ? text : "dlopen failed";
  const std::string prefix = path + ": ";
  if (reason.compare(0, prefix.size(), prefix) == 0) reason.erase(0, prefix.size());
  return reason;
}

// Libraries loaded by any registry of this process, by canonical path. A second registry shares
// the first one's LoadedPlugin, so initialize and shutdown still run once per load of a library.
std::mutex loaded_mutex;
std::map<std::string, std::weak_ptr<LoadedPlugin>>& loaded_libraries() {
  static std::map<std::string, std::weak_ptr<LoadedPlugin>> libraries;
  return libraries;
}

void fill_report(PluginReport& report, const LoadedPlugin& plugin) {
  const LyrePluginApi& api = plugin.api();
  report.loaded = true;
  report.name = plugin.name();
  report.version = api.version != nullptr ? api.version : "";
  report.description = api.description != nullptr ? api.description : "";
  report.abi_major = api.abi_major;
  report.abi_minor = api.abi_minor;
  report.slots = api.slots;
  report.is_backend = (api.slots & LYRE_SLOT_BACKEND) != 0;
}

// Asks a backend whether it can run here. A failing score() counts as "cannot run here".
void score_backend(PluginReport& report, const LoadedPlugin& plugin) {
  LyreBackend_Score_Args args{};
  args.struct_size = sizeof args;
  try {
    check(plugin.api().backend->score(&args), "score");
    report.score = std::max<int32_t>(args.score, 0);
    report.score_reason = args.reason != nullptr ? args.reason : "";
  } catch (const PluginError& e) {
    report.score = 0;
    report.score_reason = e.what();
  }
  if (report.score == 0) {
    report.error = "cannot run here: " + report.score_reason;
    spdlog::info("plugin {}: backend {} {}", report.path, report.name, report.error);
  }
}

// A library that passed every check, not yet wrapped in a LoadedPlugin.
struct Accepted {
  std::unique_ptr<LoadedPlugin::Impl> impl;
  const LyrePluginApi* api = nullptr;
};

// Loads `path` and checks what its lyre_plugin_init returns; records the ABI version in `report`
// as soon as it is known. Throws Rejected with the reason.
Accepted load_library(const fs::path& path, PluginReport& report) {
  Accepted out;
  out.impl = std::make_unique<LoadedPlugin::Impl>();
  boost::dll::shared_library& library = out.impl->library;
  boost::dll::fs::error_code ec;
  dlerror();  // clear any earlier message
  // rtld_now: a missing symbol is a clear refusal here instead of a crash in the middle of a run.
  library.load(path, boost::dll::load_mode::rtld_local | boost::dll::load_mode::rtld_now, ec);
  if (ec || !library.is_loaded()) throw Rejected{"not loadable: " + dl_reason(path.string())};

  if (!library.has(LYRE_PLUGIN_ENTRY_SYMBOL)) {
    throw Rejected{std::string("no ") + LYRE_PLUGIN_ENTRY_SYMBOL +
                   " symbol: not a lyre plugin (a plugin defines it with LYRE_PLUGIN_ENTRY)"};
  }
  auto& init = library.get<const LyrePluginApi*(const LyreHostApi*)>(LYRE_PLUGIN_ENTRY_SYMBOL);
  const LyrePluginApi* api = nullptr;
  try {
    api = init(host_api());
  } catch (...) {
    throw Rejected{std::string(LYRE_PLUGIN_ENTRY_SYMBOL) + " threw an exception (it must not)"};
  }
  if (api == nullptr) throw Rejected{std::string(LYRE_PLUGIN_ENTRY_SYMBOL) + " returned NULL"};
  if (api->struct_size < kVersionPrefixSize) {
    throw Rejected{"LyrePluginApi struct_size " + std::to_string(api->struct_size) +
                   " is too small to hold the ABI version"};
  }
  report.abi_major = api->abi_major;
  report.abi_minor = api->abi_minor;
  if (api->abi_major != LYRE_ABI_MAJOR) {
    throw Rejected{"plugin ABI " + version_string(api->abi_major, api->abi_minor) + ", host ABI " +
                   version_string(LYRE_ABI_MAJOR, LYRE_ABI_MINOR) + ": rebuild it against this lyre's SDK"};
  }
  if (api->struct_size < kPluginApiSize) {
    throw Rejected{"LyrePluginApi struct_size " + std::to_string(api->struct_size) + " is smaller than ABI " +
                   version_string(LYRE_ABI_MAJOR, 0) + "'s " + std::to_string(kPluginApiSize)};
  }
  if (api->name == nullptr || api->name[0] == '\0') throw Rejected{"LyrePluginApi.name is NULL or empty"};
  const std::string problem = check_tables(*api);
  if (!problem.empty()) throw Rejected{problem};
  if (api->abi_minor > LYRE_ABI_MINOR) {
    spdlog::debug("plugin {} was built against ABI {}, newer than the host's {}: the host uses the part it knows",
                  path.string(), version_string(api->abi_major, api->abi_minor),
                  version_string(LYRE_ABI_MAJOR, LYRE_ABI_MINOR));
  }
  out.api = api;
  return out;
}

bool is_plugin_file_name(const std::string& name) {
  const std::string prefix = kFilePrefix, suffix = kFileSuffix;
  return name.size() > prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The liblyre-*.so files of one folder, sorted by name; nothing when it does not exist.
std::vector<fs::path> plugin_files(const fs::path& dir) {
  std::vector<fs::path> files;
  boost::system::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (is_plugin_file_name(p.filename().string()) && fs::is_regular_file(p, ec)) files.push_back(p);
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string canonical_or_self(const fs::path& p) {
  boost::system::error_code ec;
  fs::path c = fs::canonical(p, ec);
  return ec ? p.lexically_normal().string() : c.string();
}

}  // namespace

std::vector<std::string> PluginRegistry::default_search_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("LYRE_PLUGIN_PATH")) {
    std::stringstream entries(env);
    std::string entry;
    while (std::getline(entries, entry, ':')) {
      if (!entry.empty()) dirs.push_back(entry);
    }
  }
  boost::system::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  const fs::path install_dir(LYRE_PLUGIN_INSTALL_DIR);
  if (!ec) {
    // The build tree (build/bin next to build/lib/lyre/plugins) and a relocated install tree.
    const fs::path root = exe.parent_path().parent_path();
    dirs.push_back((root / "lib/lyre/plugins").string());
    if (install_dir.is_relative() && install_dir != fs::path("lib/lyre/plugins")) {
      dirs.push_back((root / install_dir).string());
    }
  }
  dirs.push_back(install_dir.is_absolute() ? install_dir.string()
                                           : (fs::path(LYRE_INSTALL_PREFIX) / install_dir).string());
  return dirs;
}

PluginRegistry PluginRegistry::discover(const std::vector<std::string>& dirs) {
  PluginRegistry registry;
  registry.dirs_ = dirs;
  std::set<std::string> seen_dirs;
  std::map<std::string, std::string> first_by_file_name;  // file name -> path that won
  std::map<std::string, std::string> path_by_plugin_name;

  for (const std::string& dir : dirs) {
    if (!seen_dirs.insert(canonical_or_self(dir)).second) continue;  // the same folder twice
    for (const fs::path& file : plugin_files(dir)) {
      PluginReport report;
      report.path = file.string();
      auto first = first_by_file_name.emplace(file.filename().string(), report.path);
      if (!first.second) {
        // An earlier folder on the search path overrides this one on purpose (a build tree
        // before the install dir): reported, not warned about.
        report.error = "shadowed by " + first.first->second + " (earlier on the search path)";
        spdlog::debug("plugin {}: {}", report.path, report.error);
        registry.reports_.push_back(std::move(report));
        continue;
      }
      try {
        const std::string key = canonical_or_self(file);
        std::shared_ptr<LoadedPlugin> plugin;
        {
          std::lock_guard<std::mutex> lock(loaded_mutex);
          plugin = loaded_libraries()[key].lock();
          if (plugin) {
            report.abi_major = plugin->api().abi_major;
            report.abi_minor = plugin->api().abi_minor;
          } else {
            Accepted accepted = load_library(file, report);
            plugin.reset(new LoadedPlugin());
            plugin->impl_ = std::move(accepted.impl);
            plugin->path_ = report.path;
            plugin->name_ = accepted.api->name;
            plugin->api_ = accepted.api;
            loaded_libraries()[key] = plugin;
          }
        }
        auto named = path_by_plugin_name.emplace(plugin->name(), report.path);
        if (!named.second) {
          throw Rejected{"duplicate plugin name '" + plugin->name() + "' (already loaded from " +
                         named.first->second + ")"};
        }
        fill_report(report, *plugin);
        if (report.is_backend) score_backend(report, *plugin);
        registry.plugins_.push_back(std::move(plugin));
      } catch (const Rejected& r) {
        report.loaded = false;
        report.error = r.reason;
        spdlog::warn("skipping plugin {}: {}", report.path, report.error);
      }
      registry.reports_.push_back(std::move(report));
    }
  }
  return registry;
}

namespace {


// "Files rejected:" lines for an error message; empty when every file loaded.
std::string rejected_files(const std::vector<PluginReport>& reports) {
  std::string s;
  for (const PluginReport& r : reports) {
    if (!r.loaded) s += "\n  " + r.path + ": " + r.error;
  }
  return s.empty() ? s : "\nFiles rejected:" + s;
}

std::string search_path(const std::vector<std::string>& dirs) {
  std::string s;
  for (const std::string& d : dirs) s += (s.empty() ? "" : ":") + d;
  return "\nSearch path: " + (s.empty() ? std::string("(empty)") : s) +
         " (set LYRE_PLUGIN_PATH to add folders)";
}

}  // namespace

std::shared_ptr<LoadedPlugin> PluginRegistry::backend(const std::string& name) {
  auto report_of = [this](const LoadedPlugin& p) -> const PluginReport& {
    for (const PluginReport& r : reports_) {
      if (r.loaded && r.path == p.path()) return r;
    }
    throw std::logic_error("plugin registry: no report for " + p.path());
  };
  auto found_backends = [&]() {
    std::string s;
    for (const auto& p : plugins_) {
      const PluginReport& r = report_of(*p);
      if (!r.is_backend) continue;
      s += "\n  " + r.name + " (" + r.path + "): ";
      if (p->initialize_failed()) {
        s += "initialize failed";
      } else if (r.score > 0) {
        s += "score " + std::to_string(r.score) + (r.score_reason.empty() ? "" : ", " + r.score_reason);
      } else {
        s += r.error;
      }
    }
    return (s.empty() ? std::string("\nBackends found: none") : "\nBackends found:" + s) + rejected_files(reports_) +
           search_path(dirs_);
  };

  if (name.empty() || name == "auto") {
    std::vector<std::shared_ptr<LoadedPlugin>> candidates;
    for (const auto& p : plugins_) {
      const PluginReport& r = report_of(*p);
      if (r.is_backend && r.score > 0 && !p->initialize_failed()) candidates.push_back(p);
    }
    std::stable_sort(candidates.begin(), candidates.end(), [&](const auto& a, const auto& b) {
      return report_of(*a).score > report_of(*b).score;
    });
    for (const auto& p : candidates) {
      try {
        p->initialize();
        spdlog::debug("backend {} chosen by score {}", p->name(), report_of(*p).score);
        return p;
      } catch (const PluginError& e) {
        spdlog::warn("backend {} passed over: {}", p->name(), e.what());
      }
    }
    throw std::runtime_error("no backend can run here." + found_backends());
  }

  for (const auto& p : plugins_) {
    if (p->name() != name && p->name() != "backend-" + name) continue;
    const PluginReport& r = report_of(*p);
    if (!r.is_backend) {
      throw std::runtime_error("plugin " + p->name() + " (" + p->path() + ") is not a backend; it fills: " +
                               slot_names(r.slots) + found_backends());
    }
    if (r.score <= 0) throw std::runtime_error("backend " + p->name() + " " + r.error + found_backends());
    p->initialize();
    return p;
  }
  throw std::runtime_error("no backend named '" + name + "'." + found_backends());
}

std::shared_ptr<LoadedPlugin> PluginRegistry::objective(const std::string& name) {
  std::shared_ptr<LoadedPlugin> match;
  for (const auto& p : plugins_) {
    if (p->api().objective != nullptr && name == p->api().objective->name) {
      match = p;
      break;
    }
  }
  if (!match) {
    for (const auto& p : plugins_) {
      if (p->api().objective != nullptr && p->name() == name) {
        match = p;
        break;
      }
    }
  }
  if (match) {
    match->initialize();
    return match;
  }
  std::string found;
  for (const auto& p : plugins_) {
    if (p->api().objective != nullptr) found += "\n  " + std::string(p->api().objective->name) + " (" + p->name() + ")";
  }
  throw std::runtime_error("no objective named '" + name + "'." +
                           (found.empty() ? std::string("\nObjectives found: none") : "\nObjectives found:" + found) +
                           rejected_files(reports_) + search_path(dirs_));
}

std::shared_ptr<LoadedPlugin> PluginRegistry::checkpointer(const std::string& name) {
  for (const auto& p : plugins_) {
    if (p->api().checkpointer != nullptr && (p->name() == name || p->name() == "checkpointer-" + name)) {
      p->initialize();
      return p;
    }
  }
  std::string found;
  for (const auto& p : plugins_) {
    if (p->api().checkpointer != nullptr) found += "\n  " + p->name() + " (" + p->path() + ")";
  }
  throw std::runtime_error("no checkpointer named '" + name + "'." +
                           (found.empty() ? std::string("\nCheckpointers found: none")
                                          : "\nCheckpointers found:" + found) +
                           rejected_files(reports_) + search_path(dirs_));
}

std::string slot_names(uint32_t slots) {
  static const std::pair<uint32_t, const char*> names[] = {
      {LYRE_SLOT_BACKEND, "backend"},     {LYRE_SLOT_MODEL, "model"},
      {LYRE_SLOT_OPTIMIZER, "optimizer"}, {LYRE_SLOT_OBJECTIVE, "objective"},
      {LYRE_SLOT_CHECKPOINTER, "checkpointer"}};
  std::string s;
  for (const auto& n : names) {
    if (slots & n.first) s += (s.empty() ? "" : ", ") + std::string(n.second);
  }
  return s.empty() ? "none" : s;
}

}  // namespace lyre
