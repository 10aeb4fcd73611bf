// The profiler (the seed's `profiler`, after Kithara's Profiler(output_path, max_profile_steps,
// skip_first_n_steps)): it skips the first N optimizer steps, records M, and writes a
// Chrome/Perfetto trace (JSON "traceEvents", complete "X" events in microseconds) of the host's
// phases (data, forward, objective, backward, all-reduce, optimizer, checkpoint) and of the spans
// plugins report through LyreHostApi.trace_span. chrome://tracing and ui.perfetto.dev open it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace lyre {

struct ProfilerOptions {
  // The trace file. A path ending in '/' or naming an existing directory gets
  // "lyre-trace-<pid>.json" inside it.
  std::string output_path;
  int64_t skip_first_n_steps = 1;  // warm-up steps not recorded (first-touch allocations)
  int64_t max_profile_steps = 5;   // steps recorded after those
  // Spans kept in memory; past it the rest are counted (otherData.events_dropped), so that a
  // plugin reporting far too many spans cannot exhaust memory. ~150 bytes each.
  int64_t max_events = int64_t{1} << 20;
};

class Profiler {
 public:
  explicit Profiler(ProfilerOptions options);
  ~Profiler();  // stops recording if it still does (nothing is written from here)
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // The Trainer calls these around each optimizer step (1-based step number). Recording starts
  // at the (skip_first_n_steps + 1)-th step this profiler sees (step skip_first_n_steps + 1 of a
  // fresh run; a resumed run skips its own warm-up too) and ends after max_profile_steps steps,
  // when the file is written; step_ends returns its path then, else "". While recording, this
  // profiler is the process's active one: plugins' spans (LyreHostApi.trace_span) go to it; a
  // second profiler that would start recording meanwhile throws. step_ends must name the step
  // step_begins opened (std::runtime_error naming both otherwise).
  void step_begins(int64_t step);
  std::string step_ends(int64_t step);
  // Writes what was recorded if the run ended before the last profiled step (a step still open
  // gets a span up to now, args.incomplete = true); returns the path, or "" when recording
  // never started or the file was already written.
  std::string finish();
  bool recording() const;

  // A span of host work, recorded when it ends (RAII). Costs one branch when not recording.
  class Span {
   public:
    Span(Profiler* profiler, const char* category, const char* name);
    ~Span();
    Span(const Span&) = delete;
    Span& operator=(const Span&) = delete;

   private:
    Profiler* profiler_;  // null when not recording
    const char* category_;
    const char* name_;
    int64_t begin_ns_ = 0;
  };
  Span span(const char* category, const char* name) { return Span(this, category, name); }

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The process's active profiler, for the host services table (framework/plugin/error.cpp).
namespace trace {
bool enabled();  // an active profiler is recording
// Records a span on the calling thread; no-op when not enabled. Thread-safe.
void record(const char* plugin, const char* category, const char* name, int64_t begin_ns, int64_t end_ns);
inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace trace

}  // namespace lyre
