// The profiler: which steps it records, the Chrome/Perfetto trace it writes, spans from the host,
// from other threads and from a real backend-cpu model reporting through LyreHostApi.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/batch.hpp"
#include "io/trace.hpp"
#include "plugin/handles.hpp"
#include "plugin/plugin_host.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace lyre {
namespace {

// A new empty folder for one test, removed with everything in it when the test ends.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_((fs::temp_directory_path() / ("lyre-trace-test-" + std::to_string(::getpid()) + "-" + name)).string()) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  operator const std::string&() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

ProfilerOptions options(const std::string& path, int64_t skip, int64_t record) {
  ProfilerOptions o;
  o.output_path = path;
  o.skip_first_n_steps = skip;
  o.max_profile_steps = record;
  return o;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  INFO(path);
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());  // throws on anything that is not one whole JSON document
}

std::vector<json> complete_events(const json& trace) {
  std::vector<json> out;
  for (const json& e : trace.at("traceEvents"))
    if (e.at("ph") == "X") out.push_back(e);
  return out;
}

// Complete events called `name`, of category `category` unless it is "".
std::vector<json> named(const json& trace, const std::string& name, const std::string& category = "") {
  std::vector<json> out;
  for (const json& e : complete_events(trace))
    if (e.at("name") == name && (category.empty() || e.at("cat") == category)) out.push_back(e);
  return out;
}

json only(const std::vector<json>& events, const std::string& what) {
  INFO(what);
  REQUIRE(events.size() == 1);
  return events[0];
}

// ts and dur are decimal microseconds; back to whole nanoseconds for exact comparisons.
int64_t begin_ns(const json& e) { return std::llround(e.at("ts").get<double>() * 1000.0); }
int64_t end_ns(const json& e) { return begin_ns(e) + std::llround(e.at("dur").get<double>() * 1000.0); }
bool within(const json& inner, const json& outer) {
  return begin_ns(inner) >= begin_ns(outer) && end_ns(inner) <= end_ns(outer);
}

std::string thread_name(const json& trace, int64_t tid) {
  for (const json& e : trace.at("traceEvents"))
    if (e.at("ph") == "M" && e.at("name") == "thread_name" && e.at("tid") == tid)
      return e.at("args").at("name").get<std::string>();
  return "";
}

void busy_for(std::chrono::microseconds duration) {
  const auto until = std::chrono::steady_clock::now() + duration;
  while (std::chrono::steady_clock::now() < until) {
  }
}

TEST_CASE("the profiler skips N steps, records M, and returns the trace path once, after step N+M") {
  const TempDir dir("skip-record");
  const std::string path = dir / "trace.json";
  Profiler profiler(options(path, 2, 3));
  std::vector<std::string> returned;
  std::vector<bool> recording;
  for (int64_t step = 1; step <= 8; ++step) {
    profiler.step_begins(step);
    recording.push_back(profiler.recording());
    returned.push_back(profiler.step_ends(step));
  }
  CHECK(recording == std::vector<bool>{false, false, true, true, true, false, false, false});
  CHECK(returned == std::vector<std::string>{"", "", "", "", path, "", "", ""});
  CHECK(profiler.finish() == "");  // already written

  const json trace = read_json(path);
  std::vector<std::string> steps;
  for (const json& e : complete_events(trace))
    if (e.at("cat") == "step") steps.push_back(e.at("name"));
  CHECK(steps == std::vector<std::string>{"step 3", "step 4", "step 5"});
  CHECK(trace.at("otherData").at("steps_recorded") == 3);
  CHECK(trace.at("otherData").at("first_step") == 3);
  CHECK(trace.at("otherData").at("last_step") == 5);
  CHECK(trace.at("otherData").at("complete") == true);
}

TEST_CASE("skipping is counted from the first step the profiler sees, so a resumed run skips too") {
  const TempDir dir("resumed");
  const std::string path = dir / "trace.json";
  Profiler profiler(options(path, 1, 2));
  std::vector<std::string> returned;
  for (int64_t step = 101; step <= 104; ++step) {
    profiler.step_begins(step);
    returned.push_back(profiler.step_ends(step));
  }
  CHECK(returned == std::vector<std::string>{"", "", path, ""});
  const json trace = read_json(path);
  CHECK(named(trace, "step 101").empty());
  CHECK(named(trace, "step 102").size() == 1);
  CHECK(named(trace, "step 103").size() == 1);
}

TEST_CASE("the trace is Chrome trace JSON: traceEvents of complete events in microseconds, displayTimeUnit, otherData") {
  const TempDir dir("format");
  const std::string path = dir / "trace.json";
  Profiler profiler(options(path, 0, 1));
  profiler.step_begins(1);
  const int64_t t0 = trace::now_ns();
  {
    auto span = profiler.span("forward", "forward");
    busy_for(std::chrono::microseconds(2000));
  }
  // Plugin spans keep their nanoseconds: 1500 ns long, 2000 ns apart.
  trace::record("backend-x", "forward", "layer 0 attention forward", t0 + 100, t0 + 1600);
  trace::record("backend-x", "forward", "layer 0 mlp forward", t0 + 2100, t0 + 2101);
  CHECK(profiler.step_ends(1) == path);

  const json trace = read_json(path);
  REQUIRE(trace.is_object());
  CHECK(trace.at("displayTimeUnit") == "ms");
  const json& other = trace.at("otherData");
  CHECK(other.at("lyre_version") == LYRE_VERSION);
  CHECK(other.at("steps_recorded") == 1);
  CHECK(other.at("events_dropped") == 0);

  const std::vector<json> events = complete_events(trace);
  REQUIRE(events.size() == 4);  // step 1, forward, the plugin's two spans
  int64_t earliest = INT64_MAX;
  for (const json& e : events) {
    INFO(e.dump());
    for (const char* key : {"name", "cat", "ph", "ts", "dur", "pid", "tid"}) CHECK(e.contains(key));
    CHECK(e.at("pid") == static_cast<int64_t>(::getpid()));
    CHECK(e.at("ts").is_number());
    CHECK(e.at("dur").get<double>() >= 0);
    CHECK(e.at("args").at("step") == 1);
    earliest = std::min(earliest, begin_ns(e));
  }
  CHECK(earliest == 0);  // times count from the first recorded event

  const json forward = only(named(trace, "forward"), "the host span");
  CHECK(forward.at("cat") == "forward");
  CHECK(forward.at("dur").get<double>() >= 2000.0);  // microseconds, not ns or ms
  CHECK_FALSE(forward.at("args").contains("plugin"));
  const json layer = only(named(trace, "layer 0 attention forward"), "the plugin span");
  CHECK(layer.at("dur").get<double>() == 1.5);
  CHECK(layer.at("args").at("plugin") == "backend-x");
  const json mlp = only(named(trace, "layer 0 mlp forward"), "the second plugin span");
  CHECK(mlp.at("dur").get<double>() == 0.001);
  CHECK(begin_ns(mlp) - begin_ns(layer) == 2000);
}

TEST_CASE("spans nest within their step and carry its number") {
  const TempDir dir("nesting");
  const std::string path = dir / "trace.json";
  Profiler profiler(options(path, 0, 2));
  for (int64_t step = 1; step <= 2; ++step) {
    profiler.step_begins(step);
    {
      Profiler::Span outer(&profiler, "forward", "forward");
      const int64_t b = trace::now_ns();
      busy_for(std::chrono::microseconds(50));
      trace::record("backend-x", "forward", "inner", b, trace::now_ns());
    }
    {
      Profiler::Span optimizer(&profiler, "optimizer", "optimizer step");
      busy_for(std::chrono::microseconds(50));
    }
    profiler.step_ends(step);
  }
  const json trace = read_json(path);
  for (int64_t step = 1; step <= 2; ++step) {
    const json step_span = only(named(trace, "step " + std::to_string(step)), "step span");
    CHECK(step_span.at("cat") == "step");
    CHECK(step_span.at("args").at("step") == step);
    int inside = 0;
    for (const json& e : complete_events(trace)) {
      if (e.at("cat") == "step" || e.at("args").at("step") != step) continue;
      INFO(e.dump());
      CHECK(within(e, step_span));
      ++inside;
    }
    CHECK(inside == 3);
  }
  const std::vector<json> forwards = named(trace, "forward"), inners = named(trace, "inner");
  REQUIRE(forwards.size() == 2);
  REQUIRE(inners.size() == 2);
  for (size_t i = 0; i < 2; ++i) CHECK(within(inners[i], forwards[i]));
}

TEST_CASE("spans from another thread get their own tid and thread name, and the host's thread is named host") {
  const TempDir dir("threads");
  const std::string path = dir / "trace.json";
  Profiler profiler(options(path, 0, 1));
  profiler.step_begins(1);
  { auto span = profiler.span("data", "data"); }
  std::thread worker([&] {
    trace::record("backend-x", "backward", "on a worker", trace::now_ns(), trace::now_ns() + 10);
    Profiler::Span host_span(&profiler, "checkpoint", "writer thread");
  });
  worker.join();
  profiler.step_ends(1);

  const json trace = read_json(path);
  const json host = only(named(trace, "data"), "host span");
  const json plugin = only(named(trace, "on a worker"), "worker's plugin span");
  const json writer = only(named(trace, "writer thread"), "worker's host span");
  const json step = only(named(trace, "step 1"), "step span");
  CHECK(host.at("tid") == step.at("tid"));
  CHECK(plugin.at("tid") != host.at("tid"));
  CHECK(writer.at("tid") == plugin.at("tid"));
  CHECK(thread_name(trace, host.at("tid")) == "host");
  CHECK(thread_name(trace, plugin.at("tid")) == "backend-x thread " + std::to_string(plugin.at("tid").get<int64_t>()));
}

TEST_CASE("spans past max_events are counted as dropped, not kept") {
  const TempDir dir("max-events");
  ProfilerOptions o = options(dir / "trace.json", 0, 1);
  o.max_events = 3;
  Profiler profiler(o);
  profiler.step_begins(1);
  for (int i = 0; i < 4; ++i) trace::record("backend-x", "forward", ("span " + std::to_string(i)).c_str(), i, i + 1);
  REQUIRE(profiler.step_ends(1) == dir / "trace.json");
  const json trace = read_json(dir / "trace.json");
  std::vector<std::string> kept;
  for (const json& e : complete_events(trace)) kept.push_back(e.at("name"));
  CHECK(kept == std::vector<std::string>{"span 0", "span 1", "span 2"});  // the step span came last
  CHECK(trace.at("otherData").at("events_dropped") == 2);
}

TEST_CASE("finish writes a partial recording, with a still open step marked incomplete") {
  const TempDir dir("partial");
  const std::string path = dir / "trace.json";
  Profiler profiler(options(path, 1, 5));
  for (int64_t step = 1; step <= 3; ++step) {
    profiler.step_begins(step);
    CHECK(profiler.step_ends(step) == "");
  }
  profiler.step_begins(4);
  { auto span = profiler.span("forward", "forward"); }
  CHECK(profiler.finish() == path);
  CHECK_FALSE(profiler.recording());
  CHECK_FALSE(trace::enabled());
  CHECK(profiler.finish() == "");

  const json trace = read_json(path);
  CHECK(trace.at("otherData").at("steps_recorded") == 2);
  CHECK(trace.at("otherData").at("last_step") == 4);
  CHECK(trace.at("otherData").at("complete") == false);
  CHECK_FALSE(only(named(trace, "step 3"), "step 3").at("args").contains("incomplete"));
  const json open = only(named(trace, "step 4"), "step 4");
  CHECK(open.at("args").at("incomplete") == true);
  CHECK(within(only(named(trace, "forward"), "forward"), open));
}

TEST_CASE("finish returns \"\" and writes nothing when no step was recorded") {
  const TempDir temp("nothing");
  const std::string& dir = temp;
  Profiler profiler(options(dir + "/trace.json", 5, 1));
  for (int64_t step = 1; step <= 3; ++step) {
    profiler.step_begins(step);
    profiler.step_ends(step);
  }
  CHECK(profiler.finish() == "");
  CHECK(fs::is_empty(dir));
}

TEST_CASE("trace::enabled is true only while a profiler records, and spans outside are dropped") {
  const TempDir dir("enabled");
  const std::string path = dir / "trace.json";
  CHECK_FALSE(trace::enabled());
  {
    Profiler profiler(options(path, 1, 1));
    CHECK_FALSE(trace::enabled());
    profiler.step_begins(1);
    trace::record("backend-x", "forward", "skipped step", trace::now_ns(), trace::now_ns());
    { auto span = profiler.span("forward", "skipped host span"); }
    CHECK_FALSE(trace::enabled());
    profiler.step_ends(1);
    profiler.step_begins(2);
    CHECK(trace::enabled());
    CHECK(profiler.step_ends(2) == path);
    CHECK_FALSE(trace::enabled());
    trace::record("backend-x", "forward", "after the trace", trace::now_ns(), trace::now_ns());
  }
  {
    // Destroyed while recording: it stops, and writes nothing.
    Profiler profiler(options(path + ".unused", 0, 3));
    profiler.step_begins(1);
    CHECK(trace::enabled());
  }
  CHECK_FALSE(trace::enabled());
  CHECK_FALSE(fs::exists(path + ".unused"));
  const json trace = read_json(path);
  CHECK(named(trace, "skipped step").empty());
  CHECK(named(trace, "skipped host span").empty());
  CHECK(named(trace, "after the trace").empty());
  CHECK(complete_events(trace).size() == 1);  // step 2 alone
}

TEST_CASE("a folder or a path ending in '/' gets lyre-trace-<pid>.json, missing parents are created and no temp file stays") {
  const TempDir temp("paths");
  const std::string& dir = temp;
  const std::string pid_file = "lyre-trace-" + std::to_string(::getpid()) + ".json";
  auto record_one = [](const std::string& output) {
    Profiler profiler(options(output, 0, 1));
    profiler.step_begins(1);
    return profiler.step_ends(1);
  };
  CHECK(record_one(dir) == (fs::path(dir) / pid_file).string());
  CHECK(record_one(dir + "/new/sub/") == dir + "/new/sub/" + pid_file);
  CHECK(record_one(dir + "/deep/er/trace.json") == dir + "/deep/er/trace.json");
  for (const std::string& p : {dir + "/" + pid_file, dir + "/new/sub/" + pid_file, dir + "/deep/er/trace.json"})
    CHECK(read_json(p).at("otherData").at("steps_recorded") == 1);

  // Writing again replaces the file whole.
  std::ofstream(dir + "/deep/er/trace.json") << "stale";
  record_one(dir + "/deep/er/trace.json");
  CHECK(read_json(dir + "/deep/er/trace.json").contains("traceEvents"));
  std::vector<std::string> leftovers;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.path().filename().string().find(".tmp") != std::string::npos) leftovers.push_back(entry.path());
  CHECK(leftovers.empty());
}

TEST_CASE("bad profiler options and misuse are refused with errors naming the key, the step or the path") {
  const TempDir temp("errors");
  const std::string& dir = temp;
  CHECK_THROWS_WITH(Profiler(options("", 1, 5)), "profiler: output_path is empty; name a trace file or a folder");
  CHECK_THROWS_WITH(Profiler(options(dir, -1, 5)), "profiler: skip_first_n_steps must be >= 0, got -1");
  CHECK_THROWS_WITH(Profiler(options(dir, 1, 0)), "profiler: max_profile_steps must be >= 1, got 0");
  ProfilerOptions no_events = options(dir, 1, 1);
  no_events.max_events = 0;
  CHECK_THROWS_WITH(Profiler(no_events), "profiler: max_events must be >= 1, got 0");

  Profiler profiler(options(dir + "/t.json", 0, 2));
  CHECK_THROWS_WITH(profiler.step_begins(0), "profiler: step numbers start at 1, got step_begins(0)");
  CHECK_THROWS_WITH(profiler.step_ends(1), "profiler: step_ends(1) does not match any step_begins");
  profiler.step_begins(1);
  CHECK_THROWS_WITH(profiler.step_begins(2),
                    "profiler: step_begins(2) while step 1 has not ended (step_ends was not called)");
  CHECK_THROWS_WITH(profiler.step_ends(2), "profiler: step_ends(2) does not match step_begins(1)");

  Profiler second(options(dir + "/second.json", 0, 1));
  CHECK_THROWS_WITH(second.step_begins(1),
                    "profiler: another profiler is already recording (one at a time per process); " + dir +
                        "/second.json was not started");
  CHECK(profiler.step_ends(1) == "");

  // A regular file where a folder should be.
  std::ofstream(dir + "/file") << "x";
  Profiler blocked(options(dir + "/file/sub/trace.json", 0, 1));
  profiler.step_begins(2);
  profiler.step_ends(2);  // frees the process's one recording slot
  blocked.step_begins(1);
  CHECK_THROWS_WITH(blocked.step_ends(1), "profiler: cannot create the folder " + dir + "/file/sub for the trace file " +
                                              dir + "/file/sub/trace.json: Not a directory");
  CHECK_FALSE(trace::enabled());  // a failed write still stops recording
}

// ---- a real backend ----

const char* kTinyLlama = R"({
  "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 259,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "hidden_act": "silu", "tie_word_embeddings": false})";

// Two rows of 8 tokens, one document each, every position but the last a target.
Batch two_rows() {
  Batch b(2, 8);
  b.num_samples = 2;
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t t = 0; t < 8; ++t) {
      const size_t i = static_cast<size_t>(r * 8 + t);
      b.tokens[i] = static_cast<int32_t>(10 + 7 * r + t);
      b.targets[i] = t + 1 < 8 ? static_cast<int32_t>(10 + 7 * r + t + 1) : -1;
      b.positions[i] = static_cast<int32_t>(t);
      b.segment_ids[i] = 1;
      b.loss_mask[i] = 1;
    }
  return b;
}

void train_once(Model& model, Optimizer& optimizer, const Batch& batch, Profiler& profiler) {
  std::vector<float> logp, dlogp;
  model.zero_grad();
  {
    auto span = profiler.span("forward", "forward");
    model.forward(batch, LYRE_FORWARD_TRAIN, logp);
  }
  dlogp.assign(logp.size(), -1.0f / static_cast<float>(logp.size()));
  {
    auto span = profiler.span("backward", "backward");
    model.backward(batch, dlogp);
  }
  optimizer.grad_squared_norm();
  auto span = profiler.span("optimizer", "optimizer step");
  optimizer.step(1e-3, 1.0);
}

TEST_CASE("a recorded step of a real backend-cpu forward and backward holds the backend's spans, a skipped step none") {
  PluginRegistry registry = PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  Model model(registry.backend("cpu"), kTinyLlama, R"({"threads": 2})");
  Optimizer optimizer(model, R"({"type": "adamw"})");
  const Batch batch = two_rows();
  const TempDir dir("backend");
  const std::string path = dir / "trace.json";
  Profiler profiler(options(path, 1, 1));

  profiler.step_begins(1);  // skipped: the backend must report nothing
  train_once(model, optimizer, batch, profiler);
  profiler.step_ends(1);
  profiler.step_begins(2);
  train_once(model, optimizer, batch, profiler);
  GenerateOptions greedy;
  greedy.max_new_tokens = 3;
  model.generate({{10, 11, 12}}, greedy);
  REQUIRE(profiler.step_ends(2) == path);
  train_once(model, optimizer, batch, profiler);  // after the trace: nothing more goes anywhere

  const json trace = read_json(path);
  std::vector<std::string> backend;
  for (const json& e : complete_events(trace)) {
    if (!e.at("args").contains("plugin")) continue;
    INFO(e.dump());
    CHECK(e.at("args").at("plugin") == "backend-cpu");
    CHECK(e.at("args").at("step") == 2);
    if (e.at("cat") != "generate") backend.push_back(e.at("name"));
  }
  std::sort(backend.begin(), backend.end());
  std::vector<std::string> expected{
      "adamw step",           "embedding backward",          "embedding forward",
      "grad squared norm",    "layer 0 attention backward",  "layer 0 attention forward",
      "layer 0 mlp backward", "layer 0 mlp forward",         "layer 1 attention backward",
      "layer 1 attention forward", "layer 1 mlp backward",   "layer 1 mlp forward",
      "logprob head backward", "logprob head forward"};
  std::sort(expected.begin(), expected.end());
  CHECK(backend == expected);

  // The backend's spans sit inside the host's phase that called it, on the host's thread.
  const json forward = only(named(trace, "forward"), "host forward");
  const json backward = only(named(trace, "backward"), "host backward");
  const json optimizer_step = only(named(trace, "optimizer step"), "host optimizer step");
  for (const char* name : {"embedding forward", "layer 0 attention forward", "layer 1 mlp forward", "logprob head forward"}) {
    INFO(name);
    const json e = only(named(trace, name, "forward"), name);
    CHECK(e.at("tid") == forward.at("tid"));
    CHECK(within(e, forward));
  }
  for (const char* name : {"logprob head backward", "layer 1 mlp backward", "layer 0 attention backward", "embedding backward"}) {
    INFO(name);
    const json e = only(named(trace, name, "backward"), name);
    CHECK(within(e, backward));
  }
  // Backward walks the layers top down: layer 1 finishes before layer 0 starts.
  CHECK(end_ns(only(named(trace, "layer 1 attention backward"), "l1")) <=
        begin_ns(only(named(trace, "layer 0 mlp backward"), "l0")));
  CHECK(within(only(named(trace, "adamw step"), "adamw step"), optimizer_step));

  // generate: one span around it, the prefill and each fed-back token inside it.
  const json generate = only(named(trace, "generate (1 rows, up to 3 new tokens)"), "generate");
  CHECK(within(only(named(trace, "prefill (1 rows of 3)"), "prefill"), generate));
  CHECK(within(only(named(trace, "decode token 1 (1 rows)"), "decode 1"), generate));
  CHECK(within(only(named(trace, "decode token 2 (1 rows)"), "decode 2"), generate));
  CHECK(named(trace, "decode token 3 (1 rows)").empty());  // the last token is never fed back
  int generate_layers = 0;
  for (const json& e : complete_events(trace))
    if (e.at("cat") == "generate" && e.at("name").get<std::string>().rfind("layer ", 0) == 0) ++generate_layers;
  CHECK(generate_layers == 12);  // (prefill + 2 decode steps) x 2 layers x (attention, mlp)
}

}  // namespace
}  // namespace lyre
