// The on-disk layout of a lyre checkpoint, shared by the checkpointer-safetensors plugin (which
// writes it) and the host (`lyre export`, which reads it). Header-only: the plugin links
// nothing of the host.
//
//   <save_dir>/
//     step_00000040/              one complete checkpoint per directory (visible only once whole)
//       model.safetensors         trainable parameters, Hugging Face names, float32
//       optimizer.safetensors     optimizer state ("<parameter>.exp_avg", "step", ...)
//       trainer_state.json        the host's metadata (kTrainerStateKeys below)
//     .tmp-step_00000060.<pid>/   a save in progress; never read; removed by the next run
//     .trash-step_00000020.<pid>/ a checkpoint being deleted by retention
//
// A tensor the host sends as "<group>/<name>" goes to <group>.safetensors as <name>.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace lyre::checkpoint_layout {

inline constexpr const char* kStepPrefix = "step_";
inline constexpr const char* kTempPrefix = ".tmp-";
inline constexpr const char* kTrashPrefix = ".trash-";
inline constexpr const char* kTrainerState = "trainer_state.json";
inline constexpr const char* kModelGroup = "model";          // -> model.safetensors
inline constexpr const char* kOptimizerGroup = "optimizer";  // -> optimizer.safetensors

// Keys of trainer_state.json that readers other than the Trainer rely on:
//   "format": "lyre-checkpoint", "format_version": 1, "step": int,
//   "model_config": object (the Hugging Face config.json the model was built from),
//   "tokenizer": "byte" or the absolute path of the tokenizer directory or file,
//   "base_model": null or the absolute path of the Hugging Face directory the weights came from
//                 (frozen parameters are not saved; export reads them there).
inline constexpr const char* kFormat = "lyre-checkpoint";
inline constexpr int kFormatVersion = 1;

// "step_00000040" (at least 8 digits; longer steps get more).
inline std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%08lld", kStepPrefix, static_cast<long long>(step));
  return buf;
}

// The step of a complete checkpoint's directory name, or nothing for any other name.
inline std::optional<int64_t> parse_step_dir_name(const std::string& name) {
  const std::string prefix = kStepPrefix;
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  int64_t step = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || step > (INT64_MAX - 9) / 10) return std::nullopt;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

}  // namespace lyre::checkpoint_layout
