// checkpointer-safetensors: the Checkpointer slot. Each checkpoint is a directory of
// <group>.safetensors files and trainer_state.json (framework/io/checkpoint_layout.hpp), made
// visible only once complete by an atomic rename, so that a crash at any point leaves the last
// good checkpoint loadable.
//
// Config: {"save_dir": "ckpt" (required), "max_to_keep": 5 (>= 1), "async": true}.
//   async    save() copies the tensors into one buffer and returns; one background thread writes.
//            At most one save is pending: the next save() waits for it first. A failure in the
//            background is returned by the next save, wait or destroy (list and load wait for the
//            pending save too, but leave its error to those three).
//   retention after each save, complete checkpoints beyond the newest max_to_keep are renamed
//            to .trash-* and deleted; the one just saved always counts among those kept.
//            .tmp-*/.trash-* directories an earlier run left are removed at create, one log line
//            each.
// load(-1) takes the newest complete checkpoint that loads; a damaged one (a truncated file, bad
// JSON) is logged as a warning naming the file and passed over for the one before it.
//
// Test hook: with the environment variable LYRE_CHECKPOINTER_TEST_CRASH_AT_STEP=N, the save of
// step N raises SIGKILL after writing the header and half the tensor bytes of its first
// <group>.safetensors: a real kill -9 in the middle of a checkpoint write, at a reproducible
// point. It is read when save() is called.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint_reader.hpp"
#include "checkpoint_writer.hpp"
#include "config.hpp"
#include "io/checkpoint_layout.hpp"
#include "lyre/plugin.hpp"
#include "save_dir.hpp"

namespace {

constexpr const char* kName = "checkpointer-safetensors";
constexpr const char* kCrashHook = "LYRE_CHECKPOINTER_TEST_CRASH_AT_STEP";

using lyre::plugin::Error;

struct Failure {
  LyreErrorCode code;
  std::string message;
};

}  // namespace

struct LyreCheckpointer {
  lyre::ckpt::Config config;

  // The pending async save: the writer thread owns *in_flight until joined; `failure` is
  // written by it and read only after the join.
  std::thread writer;
  std::unique_ptr<lyre::ckpt::SaveJob> in_flight;
  std::optional<Failure> failure;
  lyre::ckpt::CopyBuffer spare;

  std::string list_json;                                 // handed out by list()
  std::unique_ptr<lyre::ckpt::OpenCheckpoint> loaded;    // handed out by load()
};

namespace {

void log(LyreLogLevel level, const std::string& message) { lyre::plugin::log(level, kName, message); }

// Writes one checkpoint and applies retention; any failure names the step and the path.
void save_now(const LyreCheckpointer& c, const lyre::ckpt::SaveJob& job) {
  const std::string final_path = c.config.save_dir + "/" + lyre::checkpoint_layout::step_dir_name(job.step);
  try {
    lyre::ckpt::write_checkpoint(c.config.save_dir, job);
  } catch (const std::exception& e) {
    throw Error(LYRE_ERROR_INTERNAL, "saving step " + std::to_string(job.step) + " to " + final_path + ": " + e.what());
  }
  log(LYRE_LOG_DEBUG, "saved step " + std::to_string(job.step) + " to " + final_path + " (" +
                          std::to_string(job.nbytes) + " tensor bytes)");
  try {
    for (int64_t step : lyre::ckpt::apply_retention(c.config.save_dir, c.config.max_to_keep, job.step))
      log(LYRE_LOG_DEBUG, "retention: deleted step " + std::to_string(step));
  } catch (const std::exception& e) {
    throw Error(LYRE_ERROR_INTERNAL, "step " + std::to_string(job.step) + " was saved to " + final_path +
                                         ", but retention failed: " + e.what());
  }
}

// Joins the pending save, if any, and takes back its copy buffer. Its failure stays recorded.
void finish_pending(LyreCheckpointer& c) {
  if (c.writer.joinable()) c.writer.join();
  if (c.in_flight) {
    c.spare = std::move(c.in_flight->buffer);
    c.in_flight.reset();
  }
}

void throw_failure(LyreCheckpointer& c, const std::string& suffix = "") {
  if (!c.failure) return;
  Failure f = std::move(*c.failure);
  c.failure.reset();
  throw Error(f.code, f.message + suffix);
}

bool crash_hook_names(int64_t step) {
  const char* value = std::getenv(kCrashHook);
  if (value == nullptr || *value == '\0') return false;
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(value, &end, 10);
  if (errno != 0 || *end != '\0')
    throw Error(LYRE_ERROR_INVALID_ARGUMENT, std::string(kCrashHook) + "=" + value + " is not a step number");
  return n == step;
}

LyreCheckpointer* checked(LyreCheckpointer* c) {
  lyre::plugin::require(c != nullptr, "checkpointer is NULL");
  return c;
}

LyreError* ckpt_create(LyreCheckpointer_Create_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreCheckpointer_Create_Args), "create");
    args->checkpointer = nullptr;
    auto c = std::make_unique<LyreCheckpointer>();
    c->config = lyre::ckpt::parse_config(args->config_json);
    const std::string& dir = c->config.save_dir;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error(LYRE_ERROR_INVALID_ARGUMENT, "cannot create save_dir \"" + dir + "\": " + ec.message());
    if (!std::filesystem::is_directory(dir, ec))
      throw Error(LYRE_ERROR_INVALID_ARGUMENT, "save_dir \"" + dir + "\" is not a directory");
    if (::access(dir.c_str(), W_OK | X_OK) != 0)
      throw Error(LYRE_ERROR_INVALID_ARGUMENT,
                  "save_dir \"" + dir + "\" is not writable: " + std::strerror(errno));
    for (const std::string& path : lyre::ckpt::remove_stale(dir))
      log(LYRE_LOG_INFO, "removed " + path + ", left by an interrupted run");
    args->checkpointer = c.release();
  });
}

LyreError* ckpt_destroy(LyreCheckpointer_Destroy_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreCheckpointer_Destroy_Args), "destroy");
    std::unique_ptr<LyreCheckpointer> c(args->checkpointer);
    args->checkpointer = nullptr;
    if (!c) return;
    finish_pending(*c);
    throw_failure(*c);  // after the join; the object goes with `c` either way
  });
}

LyreError* ckpt_save(LyreCheckpointer_Save_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreCheckpointer_Save_Args), "save");
    LyreCheckpointer& c = *checked(args->checkpointer);
    finish_pending(c);
    throw_failure(c, " (step " + std::to_string(args->step) + " was not saved)");
    lyre::ckpt::SaveJob job =
        lyre::ckpt::make_job(args->step, args->num_tensors, args->names, args->tensors, args->metadata_json);
    job.crash_mid_write = crash_hook_names(args->step);
    if (!c.config.async) {
      save_now(c, job);
      return;
    }
    lyre::ckpt::take_copy(job, std::move(c.spare));
    c.in_flight = std::make_unique<lyre::ckpt::SaveJob>(std::move(job));
    LyreCheckpointer* self = &c;
    c.writer = std::thread([self] {
      try {
        save_now(*self, *self->in_flight);
      } catch (const Error& e) {
        self->failure = Failure{e.code(), e.what()};
      } catch (const std::exception& e) {
        self->failure = Failure{LYRE_ERROR_INTERNAL, "saving step " + std::to_string(self->in_flight->step) + ": " + e.what()};
      }
    });
  });
}

LyreError* ckpt_wait(LyreCheckpointer_Wait_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreCheckpointer_Wait_Args), "wait");
    LyreCheckpointer& c = *checked(args->checkpointer);
    finish_pending(c);
    throw_failure(c);
  });
}

LyreError* ckpt_list(LyreCheckpointer_List_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreCheckpointer_List_Args), "list");
    LyreCheckpointer& c = *checked(args->checkpointer);
    finish_pending(c);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& d : lyre::ckpt::list_complete(c.config.save_dir)) out.push_back({{"step", d.step}, {"path", d.path}});
    c.list_json = out.dump();
    args->json = c.list_json.c_str();
  });
}

LyreError* ckpt_load(LyreCheckpointer_Load_Args* args) {
  return lyre::plugin::guard([&] {
    lyre::plugin::require_struct(args, sizeof(LyreCheckpointer_Load_Args), "load");
    LyreCheckpointer& c = *checked(args->checkpointer);
    finish_pending(c);
    const std::string& dir = c.config.save_dir;
    const std::vector<lyre::ckpt::CheckpointDir> complete = lyre::ckpt::list_complete(dir);
    std::unique_ptr<lyre::ckpt::OpenCheckpoint> opened;
    if (args->step == -1) {
      if (complete.empty()) throw Error(LYRE_ERROR_NOT_FOUND, "no checkpoint in \"" + dir + "\"");
      std::string reasons;
      for (auto it = complete.rbegin(); it != complete.rend() && !opened; ++it) {
        try {
          opened = lyre::ckpt::OpenCheckpoint::open(it->path, it->step);
        } catch (const std::exception& e) {
          const bool older = std::next(it) != complete.rend();
          log(LYRE_LOG_WARNING, "cannot load step " + std::to_string(it->step) + ": " + e.what() +
                                    (older ? "; falling back to step " + std::to_string(std::next(it)->step) : ""));
          reasons += "\n  step " + std::to_string(it->step) + ": " + e.what();
        }
      }
      if (!opened) throw Error(LYRE_ERROR_INTERNAL, "no checkpoint in \"" + dir + "\" can be loaded:" + reasons);
    } else {
      const lyre::ckpt::CheckpointDir* found = nullptr;
      std::string steps;
      for (const auto& d : complete) {
        if (d.step == args->step) found = &d;
        steps += (steps.empty() ? "" : ", ") + std::to_string(d.step);
      }
      if (found == nullptr)
        throw Error(LYRE_ERROR_NOT_FOUND, "no checkpoint of step " + std::to_string(args->step) + " in \"" + dir +
                                              "\" (complete ones: " + (steps.empty() ? "none" : steps) + ")");
      try {
        opened = lyre::ckpt::OpenCheckpoint::open(found->path, found->step);
      } catch (const std::exception& e) {
        throw Error(LYRE_ERROR_INVALID_ARGUMENT, "cannot load step " + std::to_string(found->step) + ": " + e.what());
      }
    }
    c.loaded = std::move(opened);
    args->loaded_step = c.loaded->step();
    args->num_tensors = c.loaded->size();
    args->names = c.loaded->names();
    args->tensors = c.loaded->tensors();
    args->metadata_json = c.loaded->metadata_json().c_str();
  });
}

const LyreCheckpointerApi kCheckpointerApi = {
    sizeof(LyreCheckpointerApi), ckpt_create, ckpt_destroy, ckpt_save, ckpt_wait, ckpt_list, ckpt_load,
};

const LyrePluginApi kPluginApi = {
    sizeof(LyrePluginApi),
    LYRE_ABI_MAJOR,
    LYRE_ABI_MINOR,
    kName,
    "0.1.0",
    "checkpoints as safetensors files per group and trainer_state.json; async writes, atomic publish, retention",
    LYRE_SLOT_CHECKPOINTER,
    nullptr,  // initialize: nothing to set up
    nullptr,  // shutdown
    nullptr,  // backend
    nullptr,  // model
    nullptr,  // optimizer
    nullptr,  // objective
    &kCheckpointerApi,
};

}  // namespace

LYRE_PLUGIN_ENTRY(kPluginApi)
