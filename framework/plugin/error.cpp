// Host-owned errors and the services table handed to every plugin at lyre_plugin_init.
#include "plugin/error.hpp"

#include <memory>
#include <new>

#include <spdlog/spdlog.h>

#include "io/trace.hpp"

namespace lyre {
namespace {

// Handed out when `new` itself fails, so that error_new keeps its promise never to return NULL.
// check() recognises it and does not delete it.
LyreError out_of_memory_error{LYRE_ERROR_OUT_OF_MEMORY, "out of host memory while reporting an error"};

LyreError* error_new(int32_t code, const char* message) noexcept {
  try {
    return new LyreError{code, message != nullptr ? message : "(no message)"};
  } catch (...) {
    return &out_of_memory_error;
  }
}

spdlog::level::level_enum log_level(int32_t level) {
  switch (level) {
    case LYRE_LOG_DEBUG: return spdlog::level::debug;
    case LYRE_LOG_WARNING: return spdlog::level::warn;
    case LYRE_LOG_ERROR: return spdlog::level::err;
    default: return spdlog::level::info;
  }
}

// spdlog's default logger is a *_mt logger, so concurrent calls from a plugin's threads are safe.
void log(int32_t level, const char* plugin, const char* message) noexcept {
  try {
    spdlog::log(log_level(level), "[{}] {}", plugin != nullptr ? plugin : "plugin",
                message != nullptr ? message : "");
  } catch (...) {
    // A log line is not worth an exception across the C boundary.
  }
}

// One process is the whole job until data parallel brings MPI: an all-reduce over one rank is
// the identity and a broadcast from rank 0 to itself copies nothing. Arguments are still checked
// so that a plugin's mistake shows up on one rank, not first under mpirun.
LyreError* all_reduce_f32(float* data, size_t count, int32_t op) noexcept {
  if (op != LYRE_REDUCE_SUM && op != LYRE_REDUCE_MAX) {
    return error_new(LYRE_ERROR_INVALID_ARGUMENT,
                     ("all_reduce_f32: unknown reduce op " + std::to_string(op)).c_str());
  }
  if (data == nullptr && count > 0) {
    return error_new(LYRE_ERROR_INVALID_ARGUMENT, "all_reduce_f32: data is NULL");
  }
  return nullptr;
}

LyreError* broadcast(void* data, size_t bytes, int32_t root) noexcept {
  if (root != 0) {
    return error_new(LYRE_ERROR_INVALID_ARGUMENT,
                     ("broadcast: root " + std::to_string(root) + " outside [0, 1)").c_str());
  }
  if (data == nullptr && bytes > 0) {
    return error_new(LYRE_ERROR_INVALID_ARGUMENT, "broadcast: data is NULL");
  }
  return nullptr;
}

int32_t trace_enabled() noexcept { return trace::enabled() ? 1 : 0; }

void trace_span(const char* plugin, const char* category, const char* name, int64_t begin_ns,
                int64_t end_ns) noexcept {
  try {
    trace::record(plugin, category, name, begin_ns, end_ns);
  } catch (...) {
    // A span lost to a failed allocation is not worth an exception across the C boundary.
  }
}

const LyreHostApi host_table = {
    sizeof(LyreHostApi),
    LYRE_ABI_MAJOR,
    LYRE_ABI_MINOR,
    &error_new,
    &log,
    /* rank */ 0,
    /* world_size */ 1,
    &all_reduce_f32,
    &broadcast,
    &trace_enabled,
    &trace_span,
};

}  // namespace

void check(LyreError* err, const std::string& context) {
  if (err == nullptr) return;
  const int32_t code = err->code;
  std::string message = err->message;
  if (err != &out_of_memory_error) delete err;
  throw PluginError(code, context.empty() ? message : context + ": " + message);
}

const LyreHostApi* host_api() { return &host_table; }

}  // namespace lyre
