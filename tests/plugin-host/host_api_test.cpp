// The services table plugins receive, and check()'s conversion of errors into exceptions.
#include <catch2/catch.hpp>

#include <cstddef>
#include <string>
#include <vector>

#include "lyre/plugin.hpp"
#include "plugin/error.hpp"
#include "test_support.hpp"

using namespace lyre;

TEST_CASE("an error made through the host arrives through check with its code and message") {
  LyreError* err = host_api()->error_new(LYRE_ERROR_NOT_FOUND, "tensor 'w' missing");
  REQUIRE(err != nullptr);
  try {
    check(err, "backend-x: read_tensor");
    FAIL("check did not throw");
  } catch (const PluginError& e) {
    CHECK(e.code() == LYRE_ERROR_NOT_FOUND);
    CHECK(std::string(e.what()) == "backend-x: read_tensor: tensor 'w' missing");
  }
}

TEST_CASE("check lets success through and an empty context keeps the bare message") {
  CHECK_NOTHROW(check(nullptr, "anything"));
  CHECK_THROWS_WITH(check(host_api()->error_new(LYRE_ERROR_INTERNAL, "boom"), ""), "boom");
  CHECK_THROWS_WITH(check(host_api()->error_new(LYRE_ERROR_INTERNAL, nullptr), "ctx"), "ctx: (no message)");
}

TEST_CASE("the host table says ABI 1.1, rank 0 of 1, and offers the profiler entries") {
  const LyreHostApi* h = host_api();
  CHECK(h->struct_size == sizeof(LyreHostApi));
  CHECK(h->abi_major == LYRE_ABI_MAJOR);
  CHECK(h->abi_minor == LYRE_ABI_MINOR);
  CHECK(LYRE_ABI_MAJOR == 1);
  CHECK(LYRE_ABI_MINOR == 1);
  CHECK(h->rank == 0);
  CHECK(h->world_size == 1);
  // 1.1 appended trace_enabled and trace_span after the 1.0 table's last entry, broadcast.
  if (sizeof(void*) == 8) CHECK(sizeof(LyreHostApi) == 72);
  CHECK(offsetof(LyreHostApi, trace_enabled) == offsetof(LyreHostApi, broadcast) + sizeof(void*));
  REQUIRE(h->trace_enabled != nullptr);
  REQUIRE(h->trace_span != nullptr);
  CHECK(h->trace_enabled() == 0);  // no profiler records in this process
  h->trace_span("backend-x", "forward", "ignored", 1, 2);  // ignored, and must not crash
}

TEST_CASE("plugin log lines carry the plugin's name and level") {
  test::LogCapture capture;
  host_api()->log(LYRE_LOG_WARNING, "backend-x", "device is slow");
  host_api()->log(LYRE_LOG_INFO, nullptr, "anonymous");
  CHECK(capture.lines("warning") == std::vector<std::string>{"[backend-x] device is slow"});
  CHECK(capture.lines("info") == std::vector<std::string>{"[plugin] anonymous"});
}

TEST_CASE("with one rank, all-reduce and broadcast leave data as it is and check their arguments") {
  std::vector<float> data{1.5f, -2.0f};
  CHECK_NOTHROW(check(host_api()->all_reduce_f32(data.data(), data.size(), LYRE_REDUCE_SUM), "all_reduce"));
  CHECK_NOTHROW(check(host_api()->all_reduce_f32(data.data(), data.size(), LYRE_REDUCE_MAX), "all_reduce"));
  CHECK(data == std::vector<float>{1.5f, -2.0f});
  CHECK_THROWS_WITH(check(host_api()->all_reduce_f32(data.data(), 2, 7), "h"), "h: all_reduce_f32: unknown reduce op 7");
  CHECK_THROWS_WITH(check(host_api()->all_reduce_f32(nullptr, 2, LYRE_REDUCE_SUM), "h"), "h: all_reduce_f32: data is NULL");

  CHECK_NOTHROW(check(host_api()->broadcast(data.data(), sizeof(float) * 2, 0), "broadcast"));
  CHECK(data == std::vector<float>{1.5f, -2.0f});
  try {
    check(host_api()->broadcast(data.data(), 8, 1), "h");
    FAIL("broadcast from rank 1 of 1 succeeded");
  } catch (const PluginError& e) {
    CHECK(e.code() == LYRE_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(e.what()) == "h: broadcast: root 1 outside [0, 1)");
  }
}

// ---- lyre::plugin::TraceSpan against fake host tables ----

namespace {

struct TraceCalls {
  int enabled_calls = 0;
  int32_t enabled_answer = 1;
  std::vector<std::string> spans;  // "plugin|category|name"
  int64_t begin_ns = 0, end_ns = 0;
};
TraceCalls g_calls;

int32_t fake_trace_enabled() {
  ++g_calls.enabled_calls;
  return g_calls.enabled_answer;
}
void fake_trace_span(const char* plugin, const char* category, const char* name, int64_t b, int64_t e) {
  g_calls.spans.push_back(std::string(plugin ? plugin : "(null)") + "|" + (category ? category : "(null)") + "|" + name);
  g_calls.begin_ns = b;
  g_calls.end_ns = e;
}

// Installs `table` as the plugin helpers' host (as lyre_plugin_init does) while it lives.
class FakeHost {
 public:
  explicit FakeHost(size_t struct_size, int32_t enabled_answer = 1) {
    g_calls = TraceCalls{};
    g_calls.enabled_answer = enabled_answer;
    table_ = *host_api();
    table_.struct_size = struct_size;
    table_.trace_enabled = &fake_trace_enabled;
    table_.trace_span = &fake_trace_span;
    plugin::detail::set_host(&table_);
    plugin::detail::plugin_name_slot() = "test-plugin";
  }
  ~FakeHost() {
    plugin::detail::host_slot() = nullptr;
    plugin::detail::plugin_name_slot() = nullptr;
  }
  LyreHostApi& table() { return table_; }

 private:
  LyreHostApi table_;
};

}  // namespace

TEST_CASE("TraceSpan never reads the trace entries of a 1.0 host, whose struct_size ends before them") {
  FakeHost host(offsetof(LyreHostApi, trace_enabled));
  CHECK_FALSE(plugin::tracing());
  { plugin::TraceSpan span("forward", "layer %d attention forward", 3); }
  CHECK(g_calls.enabled_calls == 0);
  CHECK(g_calls.spans.empty());
}

TEST_CASE("TraceSpan reports its scope, named by its format, under the plugin's name to a 1.1 host that records") {
  FakeHost host(sizeof(LyreHostApi));
  const int64_t before = plugin::TraceSpan::now_ns();
  { plugin::TraceSpan span("forward", "layer %d attention forward", 3); }
  { plugin::TraceSpan span("optimizer", "adamw step"); }
  const int64_t after = plugin::TraceSpan::now_ns();
  CHECK(g_calls.spans == std::vector<std::string>{"test-plugin|forward|layer 3 attention forward",
                                                  "test-plugin|optimizer|adamw step"});
  CHECK(before <= g_calls.begin_ns);
  CHECK(g_calls.begin_ns <= g_calls.end_ns);
  CHECK(g_calls.end_ns <= after);
}

TEST_CASE("TraceSpan asks once and reports nothing while the host does not record") {
  FakeHost host(sizeof(LyreHostApi), /*enabled_answer=*/0);
  { plugin::TraceSpan span("forward", "layer %d", 0); }
  CHECK(g_calls.enabled_calls == 1);
  CHECK(g_calls.spans.empty());
}

TEST_CASE("TraceSpan is a no-op under a host whose trace entries are NULL or with no host at all") {
  {
    FakeHost host(sizeof(LyreHostApi));
    host.table().trace_enabled = nullptr;
    { plugin::TraceSpan span("forward", "x"); }
    host.table().trace_enabled = &fake_trace_enabled;
    host.table().trace_span = nullptr;
    { plugin::TraceSpan span("forward", "x"); }
    CHECK(g_calls.enabled_calls == 0);
    CHECK(g_calls.spans.empty());
  }
  REQUIRE(plugin::host() == nullptr);
  CHECK_FALSE(plugin::tracing());
  { plugin::TraceSpan span("forward", "no host"); }
}
