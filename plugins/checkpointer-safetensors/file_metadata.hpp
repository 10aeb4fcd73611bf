// What each <group>.safetensors records about its checkpoint in its "__metadata__", so that a
// reader can tell a checkpoint missing a whole file from one that never had that group.
#pragma once

namespace lyre::ckpt {

// Hugging Face loaders (transformers' from_pretrained) expect "format": "pt".
inline constexpr const char* kFormatKey = "format";
inline constexpr const char* kFormatValue = "pt";
// The checkpoint's step, in decimal.
inline constexpr const char* kStepKey = "lyre_step";
// Every group of the checkpoint, comma-separated in the order saved ("model,optimizer").
inline constexpr const char* kGroupsKey = "lyre_groups";

}  // namespace lyre::ckpt
