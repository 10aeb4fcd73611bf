// Drives liblyre-objective-sft.so the way the host does, through lyre_plugin_init and its
// objective table, with a minimal host of our own.
#include <catch2/catch.hpp>

#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "lyre/plugin.hpp"

// The ABI leaves LyreError to the host; this test is the host.
struct LyreError {
  int32_t code;
  std::string message;
};

namespace {

using lyre::plugin::DType;
using lyre::plugin::OwnedShapeTensor;

LyreError* test_error_new(int32_t code, const char* message) { return new LyreError{code, message}; }
void test_log(int32_t, const char*, const char*) {}

const LyreHostApi kHost = {
    sizeof(LyreHostApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, test_error_new, test_log, 0, 1, nullptr, nullptr,
    nullptr, nullptr,
};

// Takes ownership of `err`: "" for success, else its message.
std::string message_of(LyreError* err) {
  std::unique_ptr<LyreError> owned(err);
  return owned ? owned->message : std::string();
}

const LyrePluginApi& plugin() {
  static const LyrePluginApi* api = [] {
    const char* path = LYRE_TEST_PLUGIN_DIR "/liblyre-objective-sft.so";
    void* handle = ::dlopen(path, RTLD_NOW | RTLD_LOCAL);  // kept open for the whole run
    if (handle == nullptr) throw std::runtime_error(std::string("dlopen failed: ") + ::dlerror());
    auto init = reinterpret_cast<LyrePluginInitFn>(::dlsym(handle, LYRE_PLUGIN_ENTRY_SYMBOL));
    if (init == nullptr) throw std::runtime_error(std::string(path) + " has no " LYRE_PLUGIN_ENTRY_SYMBOL);
    return init(&kHost);
  }();
  return *api;
}

const LyreObjectiveApi& objective_api() { return *plugin().objective; }

// An objective made from `config` (NULL = defaults); destroyed with the handle.
class Objective {
 public:
  explicit Objective(const char* config) {
    LyreObjective_Create_Args args{};
    args.struct_size = sizeof(args);
    args.config_json = config;
    args.needs_reference_logp = -1;
    args.needs_paired_rows = -1;
    const std::string error = message_of(objective_api().create(&args));
    if (!error.empty()) throw std::runtime_error(error);
    REQUIRE(args.objective != nullptr);
    CHECK(args.needs_reference_logp == 0);
    CHECK(args.needs_paired_rows == 0);
    objective_ = args.objective;
  }
  ~Objective() {
    LyreObjective_Destroy_Args args{sizeof(LyreObjective_Destroy_Args), objective_};
    message_of(objective_api().destroy(&args));
  }
  Objective(const Objective&) = delete;
  Objective& operator=(const Objective&) = delete;
  LyreObjective* get() const { return objective_; }

 private:
  LyreObjective* objective_ = nullptr;
};

std::string create_error(const char* config) {
  LyreObjective_Create_Args args{};
  args.struct_size = sizeof(args);
  args.config_json = config;
  const std::string error = message_of(objective_api().create(&args));
  if (error.empty()) {
    LyreObjective_Destroy_Args destroy{sizeof(destroy), args.objective};
    message_of(objective_api().destroy(&destroy));
  }
  return error;
}

// A [rows, cols] micro-batch: only targets and loss_mask matter to this objective.
struct HostBatch {
  int64_t rows, cols;
  std::vector<int32_t> tokens, targets, positions, segments, mask;
  OwnedShapeTensor tokens_t, targets_t, positions_t, segments_t, mask_t;
  LyreBatch batch{};

  HostBatch(int64_t b, int64_t t, std::vector<int32_t> target_ids, std::vector<int32_t> loss_mask)
      : rows(b), cols(t),
        tokens(static_cast<size_t>(b * t), 1), targets(std::move(target_ids)),
        positions(static_cast<size_t>(b * t), 0), segments(static_cast<size_t>(b * t), 1), mask(std::move(loss_mask)),
        tokens_t(tokens.data(), DType<int32_t>::value, {b, t}),
        targets_t(targets.data(), DType<int32_t>::value, {b, t}),
        positions_t(positions.data(), DType<int32_t>::value, {b, t}),
        segments_t(segments.data(), DType<int32_t>::value, {b, t}),
        mask_t(mask.data(), DType<int32_t>::value, {b, t}) {
    batch.struct_size = sizeof(LyreBatch);
    batch.tokens = tokens_t.get();
    batch.targets = targets_t.get();
    batch.positions = positions_t.get();
    batch.segment_ids = segments_t.get();
    batch.loss_mask = mask_t.get();
  }
};

double normalizer(const Objective& objective, const HostBatch& hb) {
  LyreObjective_Normalizer_Args args{sizeof(LyreObjective_Normalizer_Args), objective.get(), &hb.batch, -1.0};
  const std::string error = message_of(objective_api().normalizer(&args));
  if (!error.empty()) throw std::runtime_error(error);
  return args.normalizer;
}

struct Result {
  double loss = 0;
  std::vector<float> dlogp;
  std::vector<std::pair<std::string, double>> metrics;
};

// Runs compute; throws with the plugin's message on error.
Result compute(const Objective& objective, const HostBatch& hb, std::vector<float> logp, double norm) {
  Result r;
  r.dlogp.assign(logp.size(), 12345.0f);  // the plugin must overwrite every element
  OwnedShapeTensor logp_t(logp.data(), DType<float>::value, {hb.rows, hb.cols});
  OwnedShapeTensor dlogp_t(r.dlogp.data(), DType<float>::value, {hb.rows, hb.cols});
  LyreObjective_Compute_Args args{};
  args.struct_size = sizeof(args);
  args.objective = objective.get();
  args.batch = &hb.batch;
  args.policy_logp = logp_t.get();
  args.normalizer = norm;
  args.dlogp = dlogp_t.get();
  const std::string error = message_of(objective_api().compute(&args));
  if (!error.empty()) throw std::runtime_error(error);
  r.loss = args.loss;
  for (size_t i = 0; i < args.num_metrics; ++i) r.metrics.emplace_back(args.metrics[i].name, args.metrics[i].value);
  return r;
}

// Row 0: targets at columns 0, 1; only column 1 is completion. Row 1: targets at 0, 1, 2; 0 and 1
// completion. -1 marks padding / no target.
HostBatch hand_made() {
  return HostBatch(2, 4, {5, 7, -1, -1, 3, 2, 9, -1}, {0, 1, 0, 0, 1, 1, 0, 0});
}
const std::vector<float> kLogp = {-1.0f, -2.0f, 0.0f, 0.0f, -0.5f, -0.25f, -3.0f, 0.0f};

}  // namespace

TEST_CASE("the plugin describes itself as the sft objective") {
  const LyrePluginApi& api = plugin();
  CHECK(api.abi_major == LYRE_ABI_MAJOR);
  CHECK(std::string(api.name) == "objective-sft");
  CHECK(api.slots == LYRE_SLOT_OBJECTIVE);
  CHECK(api.initialize == nullptr);
  CHECK(api.backend == nullptr);
  CHECK(api.model == nullptr);
  REQUIRE(api.objective != nullptr);
  CHECK(std::string(api.objective->name) == "sft");
}

TEST_CASE("causal_lm counts and trains every position with a target") {
  const Objective objective(R"({"mode": "causal_lm"})");
  const HostBatch hb = hand_made();
  CHECK(normalizer(objective, hb) == 5.0);
  const Result r = compute(objective, hb, kLogp, 5.0);
  CHECK(r.loss == Approx((1.0 + 2.0 + 0.5 + 0.25 + 3.0) / 5.0));  // 1.35
  const float g = -1.0f / 5.0f;
  CHECK(r.dlogp == std::vector<float>{g, g, 0, 0, g, g, g, 0});
  REQUIRE(r.metrics.size() == 1);
  CHECK(r.metrics[0].first == "loss_tokens");
  CHECK(r.metrics[0].second == 5.0);
}

TEST_CASE("completion mode counts and trains only completion targets") {
  for (const char* config : {static_cast<const char*>(nullptr), "", "{}", R"({"mode": "completion"})"}) {
    CAPTURE(config ? config : "NULL");
    const Objective objective(config);
    const HostBatch hb = hand_made();
    CHECK(normalizer(objective, hb) == 3.0);
    const Result r = compute(objective, hb, kLogp, 3.0);
    CHECK(r.loss == Approx((2.0 + 0.5 + 0.25) / 3.0));  // 0.91666...
    const float g = static_cast<float>(-1.0 / 3.0);
    CHECK(r.dlogp == std::vector<float>{0, g, 0, 0, g, g, 0, 0});
    REQUIRE(r.metrics.size() == 1);
    CHECK(r.metrics[0].second == 3.0);
  }
}

TEST_CASE("the step's normalizer, not the micro-batch's, divides the loss") {
  const Objective objective(R"({"mode": "completion"})");
  const Result r = compute(objective, hand_made(), kLogp, 10.0);
  CHECK(r.loss == Approx(2.75 / 10.0));
  CHECK(r.dlogp[1] == Approx(-0.1));
  CHECK(r.metrics[0].second == 3.0);  // still this micro-batch's own count
}

TEST_CASE("splitting a batch into micro-batches leaves loss and dlogp unchanged") {
  for (const char* config : {R"({"mode": "completion"})", R"({"mode": "causal_lm"})"}) {
    CAPTURE(config);
    const Objective objective(config);
    const HostBatch whole = hand_made();
    const HostBatch row0(1, 4, {5, 7, -1, -1}, {0, 1, 0, 0});
    const HostBatch row1(1, 4, {3, 2, 9, -1}, {1, 1, 0, 0});
    const double step = normalizer(objective, row0) + normalizer(objective, row1);
    CHECK(step == normalizer(objective, whole));
    const Result a = compute(objective, row0, {kLogp.begin(), kLogp.begin() + 4}, step);
    const Result b = compute(objective, row1, {kLogp.begin() + 4, kLogp.end()}, step);
    const Result w = compute(objective, whole, kLogp, step);
    CHECK(a.loss + b.loss == Approx(w.loss));
    for (size_t i = 0; i < 4; ++i) {
      CHECK(a.dlogp[i] == w.dlogp[i]);
      CHECK(b.dlogp[i] == w.dlogp[4 + i]);
    }
  }
}

TEST_CASE("dlogp equals the finite-difference derivative of the loss") {
  for (const char* config : {R"({"mode": "completion"})", R"({"mode": "causal_lm"})"}) {
    CAPTURE(config);
    const Objective objective(config);
    const HostBatch hb = HostBatch(2, 5, {4, 8, 15, -1, 16, 23, 42, -1, 7, -1}, {0, 1, 1, 0, 1, 0, 1, 1, 0, 0});
    std::vector<float> logp(10);
    for (size_t i = 0; i < logp.size(); ++i) logp[i] = -0.3f - 0.7f * static_cast<float>(i % 4);
    const double norm = normalizer(objective, hb);
    const Result base = compute(objective, hb, logp, norm);
    const float h = 1e-2f;
    for (size_t i = 0; i < logp.size(); ++i) {
      CAPTURE(i);
      std::vector<float> up = logp, down = logp;
      up[i] += h;
      down[i] -= h;
      const double fd = (compute(objective, hb, up, norm).loss - compute(objective, hb, down, norm).loss) /
                        (static_cast<double>(up[i]) - static_cast<double>(down[i]));
      CHECK(base.dlogp[i] == Approx(fd).margin(1e-5));
    }
  }
}

TEST_CASE("causal_lm does not need a loss mask") {
  const Objective objective(R"({"mode": "causal_lm"})");
  HostBatch hb = hand_made();
  hb.batch.loss_mask = nullptr;
  CHECK(normalizer(objective, hb) == 5.0);
}

TEST_CASE("config errors name the key or mode") {
  CHECK(create_error(R"({"mode": "completion", "temperature": 1})") ==
        "sft: unknown config key \"temperature\" (known: \"mode\")");
  CHECK(create_error(R"({"mode": "dpo"})") == "sft: unknown mode \"dpo\" (expected \"completion\" or \"causal_lm\")");
  CHECK(create_error(R"({"mode": 1})") == "sft: \"mode\" must be a string, got number");
  CHECK(create_error("[1]") == "sft: config must be a JSON object, got array");
  CHECK_THAT(create_error("{mode"), Catch::Matchers::StartsWith("sft: config is not valid JSON: "));
}

TEST_CASE("bad tensors and normalizers are refused with what was wrong") {
  const Objective objective(R"({"mode": "completion"})");
  const HostBatch hb = hand_made();
  CHECK_THROWS_WITH(compute(objective, hb, kLogp, 0.0), Catch::Matchers::StartsWith("sft: normalizer must be > 0"));
  CHECK_THROWS_WITH(compute(objective, hb, kLogp, -3.0), Catch::Matchers::StartsWith("sft: normalizer must be > 0"));

  // logp of the wrong shape: a [2,3] view over a batch of [2,4].
  {
    std::vector<float> logp(6, -1.0f), dlogp(8);
    OwnedShapeTensor logp_t(logp.data(), DType<float>::value, {2, 3});
    OwnedShapeTensor dlogp_t(dlogp.data(), DType<float>::value, {2, 4});
    LyreObjective_Compute_Args args{};
    args.struct_size = sizeof(args);
    args.objective = objective.get();
    args.batch = &hb.batch;
    args.policy_logp = logp_t.get();
    args.normalizer = 3.0;
    args.dlogp = dlogp_t.get();
    CHECK(message_of(objective_api().compute(&args)) == "policy_logp: expected shape [2,4], got [2,3]");
  }
  // targets of the wrong dtype.
  {
    HostBatch wrong = hand_made();
    std::vector<float> as_float(8, 1.0f);
    OwnedShapeTensor float_targets(as_float.data(), DType<float>::value, {2, 4});
    wrong.batch.targets = float_targets.get();
    CHECK_THROWS_WITH(normalizer(objective, wrong), "batch.targets: expected int32, got float32");
  }
  // a loss mask that is not 0/1.
  {
    const HostBatch odd(1, 2, {1, 2}, {1, 2});
    CHECK_THROWS_WITH(normalizer(objective, odd), "batch.loss_mask: value 2 at [0,1], expected 0 or 1");
  }
  // completion mode needs the mask.
  {
    HostBatch no_mask = hand_made();
    no_mask.batch.loss_mask = nullptr;
    CHECK_THROWS_WITH(normalizer(objective, no_mask), "batch.loss_mask: tensor is NULL");
  }
}
