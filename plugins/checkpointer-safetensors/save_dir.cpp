#include "save_dir.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <system_error>

#include "durable_io.hpp"
#include "io/checkpoint_layout.hpp"

namespace lyre::ckpt {
namespace {

namespace fs = std::filesystem;
namespace layout = checkpoint_layout;

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// Directory entries by name; a failure names the directory.
std::vector<fs::directory_entry> entries(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::directory_entry> out;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) out.push_back(*it);
  if (ec) throw std::runtime_error("cannot read directory \"" + dir + "\": " + ec.message());
  return out;
}

bool is_real_directory(const fs::directory_entry& entry) {
  std::error_code ec;
  return fs::is_directory(entry.symlink_status(ec));
}

}  // namespace

std::string temp_path(const std::string& save_dir, int64_t step) {
  return save_dir + "/" + layout::kTempPrefix + layout::step_dir_name(step) + "." + std::to_string(::getpid());
}

std::string trash_path(const std::string& save_dir, const std::string& name) {
  return save_dir + "/" + layout::kTrashPrefix + name + "." + std::to_string(::getpid());
}

std::vector<CheckpointDir> list_complete(const std::string& save_dir) {
  std::vector<CheckpointDir> out;
  for (const fs::directory_entry& entry : entries(save_dir)) {
    const std::string name = entry.path().filename().string();
    const auto step = layout::parse_step_dir_name(name);
    // "step_40" and "step_00000040" would both parse to 40; only the canonical name counts, so
    // a step has one directory.
    if (!step || name != layout::step_dir_name(*step) || !is_real_directory(entry)) continue;
    std::error_code ec;
    if (!fs::is_regular_file(entry.path() / layout::kTrainerState, ec)) continue;
    out.push_back({*step, entry.path().string()});
  }
  std::sort(out.begin(), out.end(), [](const CheckpointDir& a, const CheckpointDir& b) { return a.step < b.step; });
  return out;
}

std::vector<std::string> remove_stale(const std::string& save_dir) {
  std::vector<std::string> removed;
  for (const fs::directory_entry& entry : entries(save_dir)) {
    const std::string name = entry.path().filename().string();
    if (!(starts_with(name, layout::kTempPrefix) || starts_with(name, layout::kTrashPrefix))) continue;
    if (!is_real_directory(entry)) continue;
    remove_tree(entry.path().string());
    removed.push_back(entry.path().string());
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

std::vector<int64_t> apply_retention(const std::string& save_dir, int64_t max_to_keep, int64_t just_saved) {
  std::vector<CheckpointDir> others;  // oldest first
  for (CheckpointDir& d : list_complete(save_dir)) {
    if (d.step != just_saved) others.push_back(std::move(d));
  }
  const size_t keep_others = static_cast<size_t>(max_to_keep - 1);
  if (others.size() <= keep_others) return {};
  const size_t drop = others.size() - keep_others;
  std::vector<std::string> trash;
  std::vector<int64_t> steps;
  for (size_t i = 0; i < drop; ++i) {
    const std::string to = trash_path(save_dir, fs::path(others[i].path).filename().string());
    remove_tree(to);  // an earlier deletion of the same name that did not finish
    rename_path(others[i].path, to);
    trash.push_back(to);
    steps.push_back(others[i].step);
  }
  // The renames are what retention promises; the deletion of the trash may be redone next run.
  sync_directory(save_dir);
  for (const std::string& path : trash) remove_tree(path);
  return steps;
}

}  // namespace lyre::ckpt
