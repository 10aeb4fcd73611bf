// The profiler: spans gathered in memory while the recorded steps run, written once as a
// Chrome/Perfetto trace ("JSON Object Format" of the Trace Event Format).
//
// One mutex guards the active profiler and its events. Spans are few (a handful per layer per
// step), so a lock per span costs nothing next to the work it times, and it keeps the promise
// that a profiler can be destroyed right after it stopped recording: no thread can still be
// inside record() with a pointer to it.
#include "io/trace.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace lyre {
namespace {

namespace fs = std::filesystem;

struct Event {
  std::string category, name, plugin;  // plugin "" = the host
  int64_t begin_ns = 0, end_ns = 0;
  int tid = 0;
  int64_t step = 0;   // 0 = outside a step
  bool incomplete = false;  // a step span that finish() closed
};

std::mutex g_mutex;  // guards g_active and everything of the active profiler that spans touch
Profiler::Impl* g_active = nullptr;
std::atomic<bool> g_enabled{false};  // g_active != nullptr, readable without the lock

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error("profiler: " + message); }

}  // namespace

struct Profiler::Impl {
  ProfilerOptions options;
  std::atomic<bool> recording{false};
  bool done = false;  // recorded and written (or finished): nothing more to record
  int64_t steps_seen = 0;
  int64_t steps_recorded = 0;
  int64_t first_step = 0, last_step = 0;
  int64_t open_step = 0;  // between step_begins and step_ends; 0 = none
  int64_t open_step_begin_ns = 0;

  // Guarded by g_mutex while recording.
  std::vector<Event> events;
  std::vector<std::pair<std::thread::id, std::string>> threads;  // tid = index + 1; 1 = "host"
  int64_t recording_step = 0;  // the step spans are attributed to; 0 = between steps
  int64_t dropped = 0;

  int tid_of(std::thread::id id, const char* plugin) {
    for (size_t i = 0; i < threads.size(); ++i)
      if (threads[i].first == id) return static_cast<int>(i) + 1;
    const int tid = static_cast<int>(threads.size()) + 1;
    threads.emplace_back(id, std::string(plugin != nullptr ? plugin : "host") + " thread " +
                                 std::to_string(tid));
    return tid;
  }

  // Returns the event kept, or nullptr when not recording or over options.max_events.
  Event* add(const char* plugin, const char* category, const char* name, int64_t begin_ns,
             int64_t end_ns) {
    if (!recording.load(std::memory_order_relaxed)) return nullptr;
    if (static_cast<int64_t>(events.size()) >= options.max_events) {
      ++dropped;
      return nullptr;
    }
    Event e;
    e.category = category != nullptr ? category : "";
    e.name = name != nullptr && *name != '\0' ? name : "(unnamed)";
    e.plugin = plugin != nullptr ? plugin : "";
    e.begin_ns = begin_ns;
    // A span that ends before it begins is a caller's clock mistake: kept, with zero length.
    e.end_ns = std::max(begin_ns, end_ns);
    e.tid = tid_of(std::this_thread::get_id(), plugin);
    e.step = recording_step;
    events.push_back(std::move(e));
    return &events.back();
  }

  void start() {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_active != nullptr && g_active != this)
      fail("another profiler is already recording (one at a time per process); " +
           options.output_path + " was not started");
    g_active = this;
    threads.clear();
    threads.emplace_back(std::this_thread::get_id(), "host");
    recording.store(true);
    g_enabled.store(true);
  }

  void stop() {
    std::lock_guard<std::mutex> lock(g_mutex);
    recording.store(false);
    if (g_active == this) {
      g_active = nullptr;
      g_enabled.store(false);
    }
  }

  std::string resolved_path() const {
    const std::string& p = options.output_path;
    std::error_code ec;
    if (p.back() == '/' || fs::is_directory(p, ec))
      return (fs::path(p) / ("lyre-trace-" + std::to_string(::getpid()) + ".json")).string();
    return p;
  }

  std::string json_text() const {
    using nlohmann::json;
    std::vector<const Event*> sorted;
    sorted.reserve(events.size());
    for (const Event& e : events) sorted.push_back(&e);
    // Readers (and diffs) see the trace in time order, a parent before the children it covers.
    std::sort(sorted.begin(), sorted.end(), [](const Event* a, const Event* b) {
      if (a->begin_ns != b->begin_ns) return a->begin_ns < b->begin_ns;
      return a->end_ns > b->end_ns;
    });
    const int64_t origin = sorted.empty() ? 0 : sorted.front()->begin_ns;
    const int pid = static_cast<int>(::getpid());

    std::string out = "{\"traceEvents\": [\n";
    auto append = [&out](const json& j) {
      // A plugin's span name need not be valid UTF-8; replace bad bytes rather than fail.
      out += j.dump(-1, ' ', false, json::error_handler_t::replace);
      out += ",\n";
    };
    append({{"ph", "M"}, {"name", "process_name"}, {"pid", pid}, {"tid", 1}, {"args", {{"name", "lyre"}}}});
    for (size_t i = 0; i < threads.size(); ++i) {
      const int tid = static_cast<int>(i) + 1;
      append({{"ph", "M"}, {"name", "thread_name"}, {"pid", pid}, {"tid", tid},
              {"args", {{"name", threads[i].second}}}});
      append({{"ph", "M"}, {"name", "thread_sort_index"}, {"pid", pid}, {"tid", tid},
              {"args", {{"sort_index", tid}}}});
    }
    for (const Event* e : sorted) {
      // Nanoseconds as decimal microseconds: shortest round-trip printing keeps ns exactly.
      json j = {{"ph", "X"},
                {"cat", e->category},
                {"name", e->name},
                {"pid", pid},
                {"tid", e->tid},
                {"ts", static_cast<double>(e->begin_ns - origin) / 1000.0},
                {"dur", static_cast<double>(e->end_ns - e->begin_ns) / 1000.0}};
      json args = json::object();
      if (e->step > 0) args["step"] = e->step;
      if (!e->plugin.empty()) args["plugin"] = e->plugin;
      if (e->incomplete) args["incomplete"] = true;
      if (!args.empty()) j["args"] = std::move(args);
      append(j);
    }
    out.resize(out.size() - 2);  // the last ",\n"
    json other = {{"lyre_version", LYRE_VERSION},
                  {"steps_recorded", steps_recorded},
                  {"first_step", first_step},
                  {"last_step", last_step},
                  {"skip_first_n_steps", options.skip_first_n_steps},
                  {"max_profile_steps", options.max_profile_steps},
                  {"complete", steps_recorded == options.max_profile_steps},
                  {"events_dropped", dropped},
                  {"clock", "steady_clock"}};
    out += "\n],\n\"displayTimeUnit\": \"ms\",\n\"otherData\": " + other.dump() + "}\n";
    return out;
  }

  // Temp file then rename: a crash mid-write leaves the old file or none, never half a JSON.
  std::string write() const {
    const std::string path = resolved_path();
    const fs::path parent = fs::path(path).parent_path();
    if (!parent.empty()) {
      std::error_code ec;
      fs::create_directories(parent, ec);
      if (ec) fail("cannot create the folder " + parent.string() + " for the trace file " + path + ": " + ec.message());
    }
    const std::string text = json_text();
    const std::string temp = path + ".tmp-" + std::to_string(::getpid());
    std::FILE* f = std::fopen(temp.c_str(), "wb");
    if (f == nullptr) fail("cannot write the trace file " + path + ": " + std::strerror(errno));
    const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                         ::fsync(::fileno(f)) == 0;
    const int write_errno = errno;
    if (std::fclose(f) != 0 || !written) {
      std::remove(temp.c_str());
      fail("cannot write the trace file " + path + ": " + std::strerror(written ? errno : write_errno));
    }
    if (std::rename(temp.c_str(), path.c_str()) != 0) {
      const int rename_errno = errno;
      std::remove(temp.c_str());
      fail("cannot move " + temp + " to the trace file " + path + ": " + std::strerror(rename_errno));
    }
    return path;
  }
};

Profiler::Profiler(ProfilerOptions options) : impl_(std::make_unique<Impl>()) {
  if (options.output_path.empty()) fail("output_path is empty; name a trace file or a folder");
  if (options.skip_first_n_steps < 0)
    fail("skip_first_n_steps must be >= 0, got " + std::to_string(options.skip_first_n_steps));
  if (options.max_profile_steps < 1)
    fail("max_profile_steps must be >= 1, got " + std::to_string(options.max_profile_steps));
  if (options.max_events < 1) fail("max_events must be >= 1, got " + std::to_string(options.max_events));
  impl_->options = std::move(options);
}

Profiler::~Profiler() {
  if (impl_->recording.load()) impl_->stop();
}

void Profiler::step_begins(int64_t step) {
  Impl& m = *impl_;
  if (m.open_step != 0)
    fail("step_begins(" + std::to_string(step) + ") while step " + std::to_string(m.open_step) +
         " has not ended (step_ends was not called)");
  if (step < 1) fail("step numbers start at 1, got step_begins(" + std::to_string(step) + ")");
  // Steps are counted from the first this profiler sees, so that a resumed run skips its own
  // warm-up steps too.
  if (!m.done && !m.recording.load() && m.steps_seen >= m.options.skip_first_n_steps) m.start();
  ++m.steps_seen;
  m.open_step = step;
  if (!m.recording.load()) return;
  if (m.steps_recorded == 0) m.first_step = step;
  std::lock_guard<std::mutex> lock(g_mutex);
  m.recording_step = step;
  m.open_step_begin_ns = trace::now_ns();
}

std::string Profiler::step_ends(int64_t step) {
  Impl& m = *impl_;
  if (m.open_step != step)
    fail("step_ends(" + std::to_string(step) + ") does not match " +
         (m.open_step == 0 ? std::string("any step_begins") : "step_begins(" + std::to_string(m.open_step) + ")"));
  m.open_step = 0;
  if (!m.recording.load()) return "";
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    const std::string name = "step " + std::to_string(step);
    m.add(nullptr, "step", name.c_str(), m.open_step_begin_ns, trace::now_ns());
    m.recording_step = 0;
  }
  ++m.steps_recorded;
  m.last_step = step;
  if (m.steps_recorded < m.options.max_profile_steps) return "";
  m.stop();
  m.done = true;
  return m.write();
}

std::string Profiler::finish() {
  Impl& m = *impl_;
  if (m.done) return "";
  m.done = true;
  if (!m.recording.load()) return "";  // recording never started
  if (m.open_step != 0) {
    // The run stopped inside a recorded step: its span ends here, marked incomplete.
    std::lock_guard<std::mutex> lock(g_mutex);
    const std::string name = "step " + std::to_string(m.open_step);
    if (Event* e = m.add(nullptr, "step", name.c_str(), m.open_step_begin_ns, trace::now_ns())) e->incomplete = true;
    m.last_step = m.open_step;
    m.open_step = 0;
  }
  m.stop();
  return m.write();
}

bool Profiler::recording() const { return impl_->recording.load(std::memory_order_relaxed); }

Profiler::Span::Span(Profiler* profiler, const char* category, const char* name)
    : profiler_(profiler != nullptr && profiler->recording() ? profiler : nullptr),
      category_(category),
      name_(name) {
  if (profiler_ != nullptr) begin_ns_ = trace::now_ns();
}

Profiler::Span::~Span() {
  if (profiler_ == nullptr) return;
  const int64_t end_ns = trace::now_ns();
  try {
    std::lock_guard<std::mutex> lock(g_mutex);
    profiler_->impl_->add(nullptr, category_, name_, begin_ns_, end_ns);
  } catch (...) {
    // A span lost to a failed allocation is not worth terminating from a destructor.
  }
}

namespace trace {

bool enabled() { return g_enabled.load(std::memory_order_relaxed); }

void record(const char* plugin, const char* category, const char* name, int64_t begin_ns, int64_t end_ns) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_active != nullptr) g_active->add(plugin, category, name, begin_ns, end_ns);
}

}  // namespace trace
}  // namespace lyre
