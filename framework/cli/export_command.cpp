#include "cli/export_command.hpp"

#include <exception>
#include <filesystem>
#include <optional>

#include "io/hf_model.hpp"

namespace lyre {
namespace {

constexpr const char* kExportUsage = R"(usage: lyre export CHECKPOINT_DIR --out DIR [--dtype auto|bf16|fp16|fp32] [--max-shard-size 5GB]

Writes a Hugging Face model directory (config.json, safetensors shards with their index, the
tokenizer files) from a checkpoint: a step directory (step_00000040) or a save_dir, whose newest
checkpoint is taken. DIR must not exist or be empty.

  --dtype           auto (default): the model config's torch_dtype if bfloat16, float16 or
                    float32, else float32
  --max-shard-size  largest shard file (default 5GB; also 500MB, 2GiB, bytes)
)";

int usage_error(std::ostream& err, const std::string& message) {
  err << "lyre export: " << message << "\n\n" << kExportUsage;
  return 2;
}

std::string join(const std::vector<std::string>& items) {
  std::string s;
  for (const std::string& item : items) s += (s.empty() ? "" : ", ") + item;
  return s;
}

}  // namespace

int run_export_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  std::optional<std::string> checkpoint;
  ExportOptions options;
  options.out_dir.clear();
  // "--key value" and "--key=value" both work.
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "-h" || arg == "--help") {
      out << kExportUsage;
      return 0;
    }
    std::string key = arg, value;
    bool has_value = false;
    if (arg.rfind("--", 0) == 0) {
      const size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        key = arg.substr(0, eq);
        value = arg.substr(eq + 1);
        has_value = true;
      }
      if (key != "--out" && key != "--dtype" && key != "--max-shard-size") {
        return usage_error(err, "unknown option \"" + key + "\"");
      }
      if (!has_value) {
        if (i + 1 >= args.size()) return usage_error(err, key + " needs a value");
        value = args[++i];
      }
      if (key == "--out") {
        options.out_dir = value;
      } else if (key == "--dtype") {
        if (value != "auto" && value != "bf16" && value != "fp16" && value != "fp32") {
          return usage_error(err, "--dtype \"" + value + "\": expected auto, bf16, fp16 or fp32");
        }
        options.dtype = value;
      } else {
        try {
          options.max_shard_bytes = parse_byte_size(value);
        } catch (const std::invalid_argument& e) {
          return usage_error(err, std::string("--max-shard-size: ") + e.what());
        }
      }
    } else if (checkpoint) {
      return usage_error(err, "unexpected argument \"" + arg + "\" (one CHECKPOINT_DIR only)");
    } else {
      checkpoint = arg;
    }
  }
  if (!checkpoint) return usage_error(err, "missing CHECKPOINT_DIR");
  if (options.out_dir.empty()) return usage_error(err, "missing --out DIR");

  try {
    ExportReport report;
    const std::string step_dir = export_checkpoint(*checkpoint, options, &report);
    out << "exported " << step_dir << "\n"
        << "  to:        " << report.out_dir << "\n"
        << "  tensors:   " << report.tensors << ", " << report.tensor_bytes << " bytes, dtype "
        << torch_dtype_name(report.dtype) << "\n"
        << "  shards:    " << report.shard_files.size() << " (" << join(report.shard_files)
        << (report.shard_files.size() > 1 ? ", with model.safetensors.index.json" : "") << ")\n";
    if (!report.tokenizer_files.empty()) {
      out << "  tokenizer: " << join(report.tokenizer_files) << " (from " << report.tokenizer_source << ")\n";
    } else if (report.tokenizer_source.empty() || report.tokenizer_source == "byte") {
      out << "  tokenizer: none written (the run used lyre's byte tokenizer, which has no files)\n";
    } else {
      out << "  tokenizer: none written (no tokenizer files in " << report.tokenizer_source << ")\n";
    }
    return 0;
  } catch (const std::exception& e) {
    err << "lyre export: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace lyre
