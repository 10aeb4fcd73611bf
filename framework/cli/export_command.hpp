// `lyre export CHECKPOINT_DIR --out DIR [--dtype auto|bf16|fp16|fp32] [--max-shard-size 5GB]`:
// a lyre checkpoint as a Hugging Face model directory.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace lyre {

// `args` are the arguments after "export". Prints what was written to `out`, errors to `err`.
// Returns the exit status: 0; 1 when the export fails; 2 for a usage error.
int run_export_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace lyre
