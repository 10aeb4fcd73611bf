// The save directory as a whole (layout in framework/io/checkpoint_layout.hpp): which
// checkpoints in it are complete, what an interrupted run left behind, and retention.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lyre::ckpt {

struct CheckpointDir {
  int64_t step = 0;
  std::string path;
};

// Complete checkpoints, oldest first: directories named exactly step_dir_name(step) that hold
// trainer_state.json (written last, so a directory without it was never published whole).
std::vector<CheckpointDir> list_complete(const std::string& save_dir);

// Removes every .tmp-* and .trash-* directory (saves and deletions an earlier run did not
// finish); returns their paths for the log.
std::vector<std::string> remove_stale(const std::string& save_dir);

// Keeps `max_to_keep` complete checkpoints: the one just saved and the newest others. The rest
// are each renamed to .trash-* first, so that a crash mid-delete leaves nothing that looks
// complete, then deleted. Returns the steps deleted.
//
// The step just saved is never deleted even when newer steps exist: a run that resumed from an
// older checkpoint (the newest was damaged) must not lose what it just wrote to the checkpoints
// of the timeline it abandoned.
std::vector<int64_t> apply_retention(const std::string& save_dir, int64_t max_to_keep, int64_t just_saved);

// <save_dir>/.tmp-step_00000040.<pid> and <save_dir>/.trash-<name>.<pid>, for this process.
std::string temp_path(const std::string& save_dir, int64_t step);
std::string trash_path(const std::string& save_dir, const std::string& name);

}  // namespace lyre::ckpt
