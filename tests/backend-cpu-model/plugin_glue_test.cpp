// liblyre-backend-cpu.so through its C tables, with a minimal host: the ABI glue checks its
// arguments, converts dtypes, returns errors with the right codes, and gives the same numbers
// as the C++ model it wraps.
#include <catch2/catch.hpp>

#include <dlfcn.h>

#include <cstring>
#include <memory>
#include <string>

#include "lyre/plugin.hpp"
#include "model_test_util.hpp"

// The test host's errors: the plugin only ever sees the opaque pointer.
struct LyreError {
  int32_t code;
  std::string message;
};

namespace lyre::cpu::test {
namespace {

LyreError* host_error_new(int32_t code, const char* message) { return new LyreError{code, message}; }
void host_log(int32_t, const char*, const char*) {}
LyreError* host_all_reduce(float*, size_t, int32_t) { return nullptr; }
LyreError* host_broadcast(void*, size_t, int32_t) { return nullptr; }

// Mutable: a test plays a second rank by changing world_size and the all-reduce.
// No profiler: the trace entries are NULL, which the plugin's spans must take as "not recording".
LyreHostApi g_host = {sizeof(LyreHostApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, host_error_new,
                      host_log, 0, 1, host_all_reduce, host_broadcast, nullptr, nullptr};

const LyrePluginApi& plugin_api() {
  static const LyrePluginApi* api = [] {
    const std::string path = std::string(LYRE_TEST_PLUGIN_DIR) + "/liblyre-backend-cpu.so";
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);  // kept open for the whole run
    if (lib == nullptr) throw std::runtime_error("cannot load " + path + ": " + dlerror());
    auto init = reinterpret_cast<LyrePluginInitFn>(dlsym(lib, LYRE_PLUGIN_ENTRY_SYMBOL));
    if (init == nullptr) throw std::runtime_error(path + " has no " LYRE_PLUGIN_ENTRY_SYMBOL);
    return init(&g_host);
  }();
  return *api;
}

// Takes ownership of a returned error: "" for success, else "<code>: <message>".
std::string outcome(LyreError* e) {
  if (e == nullptr) return "";
  std::unique_ptr<LyreError> owned(e);
  return std::to_string(e->code) + ": " + e->message;
}

template <typename Args>
Args args_of() {
  Args a{};
  a.struct_size = sizeof(Args);
  return a;
}

struct Tensor {
  std::vector<int64_t> shape;
  DLTensor t{};
  Tensor(void* data, DLDataType dtype, std::vector<int64_t> dims) : shape(std::move(dims)) {
    t.data = data;
    t.device = {kDLCPU, 0};
    t.ndim = static_cast<int32_t>(shape.size());
    t.dtype = dtype;
    t.shape = shape.data();
  }
};
constexpr DLDataType kF32{kDLFloat, 32, 1}, kI32{kDLInt, 32, 1}, kI64{kDLInt, 64, 1};
constexpr DLDataType kBF16{kDLBfloat, 16, 1}, kF16{kDLFloat, 16, 1};

// A backend-cpu model made through the table, destroyed with it.
class PluginModel {
 public:
  explicit PluginModel(const std::string& config, const char* options = nullptr) {
    auto a = args_of<LyreModel_Create_Args>();
    a.config_json = config.c_str();
    a.options_json = options;
    const std::string err = outcome(api().create(&a));
    if (!err.empty()) throw std::runtime_error(err);
    model_ = a.model;
  }
  ~PluginModel() {
    auto a = args_of<LyreModel_Destroy_Args>();
    a.model = model_;
    outcome(api().destroy(&a));
  }
  static const LyreModelApi& api() { return *plugin_api().model; }
  LyreModel* get() const { return model_; }

  std::string write(size_t index, void* data, DLDataType dtype, std::vector<int64_t> shape,
                    int32_t which = LYRE_TENSOR_VALUE) {
    Tensor t(data, dtype, std::move(shape));
    auto a = args_of<LyreModel_WriteTensor_Args>();
    a.model = model_;
    a.index = index;
    a.which = which;
    a.src = &t.t;
    return outcome(api().write_tensor(&a));
  }
  std::vector<float> read(size_t index, std::vector<int64_t> shape, int32_t which = LYRE_TENSOR_VALUE) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    std::vector<float> out(n);
    Tensor t(out.data(), kF32, std::move(shape));
    auto a = args_of<LyreModel_ReadTensor_Args>();
    a.model = model_;
    a.index = index;
    a.which = which;
    a.dst = &t.t;
    const std::string err = outcome(api().read_tensor(&a));
    if (!err.empty()) throw std::runtime_error(err);
    return out;
  }
  std::string forward(HostBatch& b, int32_t mode, std::vector<float>& logp) {
    logp.assign(b.tokens.size(), 0.0f);
    Tensor tok(b.tokens.data(), kI32, {b.rows, b.cols}), tgt(b.targets.data(), kI32, {b.rows, b.cols});
    Tensor pos(b.positions.data(), kI32, {b.rows, b.cols}), seg(b.segments.data(), kI32, {b.rows, b.cols});
    Tensor out(logp.data(), kF32, {b.rows, b.cols});
    LyreBatch batch{sizeof(LyreBatch), &tok.t, &tgt.t, &pos.t, &seg.t, nullptr};
    auto a = args_of<LyreModel_Forward_Args>();
    a.model = model_;
    a.batch = &batch;
    a.mode = mode;
    a.logp = &out.t;
    return outcome(api().forward(&a));
  }
  std::string backward(std::vector<float>& dlogp, std::vector<int64_t> shape) {
    Tensor t(dlogp.data(), kF32, std::move(shape));
    auto a = args_of<LyreModel_Backward_Args>();
    a.model = model_;
    a.dlogp = &t.t;
    return outcome(api().backward(&a));
  }

 private:
  LyreModel* model_ = nullptr;
};

std::string create_error(const std::string& config, const char* options, const char* lora = nullptr) {
  auto a = args_of<LyreModel_Create_Args>();
  a.config_json = config.c_str();
  a.options_json = options;
  a.lora_json = lora;
  const std::string err = outcome(PluginModel::api().create(&a));
  if (err.empty()) {
    auto d = args_of<LyreModel_Destroy_Args>();
    d.model = a.model;
    outcome(PluginModel::api().destroy(&d));
  }
  return err;
}

// Copies the weights of a C++ model into the plugin's, parameter by parameter.
void load_from(PluginModel& pm, LlamaModel<float>& m) {
  for (size_t i = 0; i < m.params().size(); ++i) {
    const ParameterInfo& p = m.params().info(i);
    REQUIRE(pm.write(i, m.params().value(i), kF32, p.shape) == "");
  }
}

}  // namespace

TEST_CASE("the plugin describes itself and scores by CPU features") {
  const LyrePluginApi& api = plugin_api();
  CHECK(std::string(api.name) == "backend-cpu");
  CHECK(api.abi_major == LYRE_ABI_MAJOR);
  CHECK(api.slots == (LYRE_SLOT_BACKEND | LYRE_SLOT_MODEL | LYRE_SLOT_OPTIMIZER));
  REQUIRE(api.backend != nullptr);
  REQUIRE(api.model != nullptr);
  REQUIRE(api.optimizer != nullptr);
  CHECK(api.model->generate != nullptr);

  auto s = args_of<LyreBackend_Score_Args>();
  CHECK(outcome(api.backend->score(&s)) == "");
  __builtin_cpu_init();
  const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  CHECK(s.score == (has ? 100 : 0));
  if (has) CHECK_THAT(s.reason, Catch::Contains("AVX2+FMA"));
  else CHECK(std::string(s.reason) == "needs AVX2 and FMA");

  auto init = args_of<LyreInitialize_Args>();
  init.options_json = R"({"thread": 2})";
  CHECK_THAT(outcome(api.initialize(&init)), Catch::Contains("unknown key \"thread\""));
  init.options_json = nullptr;
  CHECK(outcome(api.initialize(&init)) == "");

  auto info = args_of<LyreBackend_DeviceInfo_Args>();
  CHECK(outcome(api.backend->device_info(&info)) == "");
  CHECK_THAT(info.name, Catch::StartsWith("cpu: ") && (Catch::EndsWith("avx2+fma") || Catch::Contains("avx512f")));
  CHECK(info.memory_total_bytes > 0);
  CHECK(info.peak_flops > 0);
  const uint64_t used_before = info.memory_used_bytes;
  {
    PluginModel pm(tiny_config_json(false));
    CHECK(outcome(api.backend->device_info(&info)) == "");
    CHECK(info.memory_used_bytes >= used_before + 2 * 4 * 1592);  // weights and gradients
    CHECK(info.memory_peak_bytes >= info.memory_used_bytes);
  }
  info.device_index = 1;
  CHECK_THAT(outcome(api.backend->device_info(&info)), Catch::StartsWith("2: "));  // NOT_FOUND
}

TEST_CASE("model options and config are checked, LoRA is refused as unimplemented") {
  const std::string config = tiny_config_json(false);
  CHECK_THAT(create_error(config, R"({"precision": "bf16"})"),
             Catch::StartsWith("1: ") && Catch::Contains("\"bf16\""));
  CHECK_THAT(create_error(config, R"({"threds": 2})"), Catch::Contains("unknown key \"threds\""));
  CHECK_THAT(create_error(config, R"({"logprob_chunk_rows": 0})"), Catch::Contains("logprob_chunk_rows"));
  CHECK(create_error(config, R"({"precision": "fp32", "threads": 2, "logprob_chunk_rows": 3})") == "");
  CHECK_THAT(create_error(config, nullptr, R"({"r": 8})"), Catch::StartsWith("3: "));  // UNIMPLEMENTED
  CHECK_THAT(create_error(R"({"model_type": "gpt2"})", nullptr), Catch::Contains("\"gpt2\""));
}

TEST_CASE("parameters, weights in float32, bfloat16 and float16, and their checks") {
  PluginModel pm(tiny_config_json(false));
  auto n = args_of<LyreModel_NumParameters_Args>();
  n.model = pm.get();
  REQUIRE(outcome(PluginModel::api().num_parameters(&n)) == "");
  CHECK(n.num_parameters == 21);
  auto p = args_of<LyreModel_Parameter_Args>();
  p.model = pm.get();
  p.index = 2;
  REQUIRE(outcome(PluginModel::api().parameter(&p)) == "");
  CHECK(std::string(p.name) == "model.layers.0.self_attn.q_proj.weight");
  CHECK(p.kind == LYRE_PARAM_MATRIX);
  CHECK(p.trainable == 1);
  CHECK(p.ndim == 2);
  CHECK(p.shape[0] == 16);
  CHECK(p.shape[1] == 8);
  p.index = 21;
  CHECK_THAT(outcome(PluginModel::api().parameter(&p)), Catch::StartsWith("2: "));

  // model.norm.weight is index 19, shape [8].
  uint16_t bf16[8], f16[8];
  const float values[8] = {1.0f, -2.5f, 0.15625f, 65504.0f, 0.0f, -0.0f, 3.0e-5f, 6.1035156e-05f};
  for (int i = 0; i < 8; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    bf16[i] = static_cast<uint16_t>(bits >> 16);  // exact for these values but 3e-5
  }
  // float16 bit patterns: 1, -2.5, 0.15625, 65504, 0, -0, a subnormal (2^-15), the smallest normal
  const uint16_t half[8] = {0x3c00, 0xc100, 0x3100, 0x7bff, 0x0000, 0x8000, 0x0200, 0x0400};
  std::memcpy(f16, half, sizeof f16);
  CHECK(pm.write(19, f16, kF16, {8}) == "");
  std::vector<float> got = pm.read(19, {8});
  const float expect_f16[8] = {1.0f, -2.5f, 0.15625f, 65504.0f, 0.0f, -0.0f, 3.0517578125e-05f, 6.1035156e-05f};
  for (int i = 0; i < 8; ++i) CHECK(got[i] == expect_f16[i]);
  CHECK(std::signbit(got[5]));
  CHECK(pm.write(19, bf16, kBF16, {8}) == "");
  got = pm.read(19, {8});
  for (int i : {0, 1, 2, 4}) CHECK(got[i] == values[i]);
  CHECK(got[6] == Approx(3.0e-5f).epsilon(1e-2));

  float wrong[16] = {};
  CHECK_THAT(pm.write(19, wrong, kF32, {16}), Catch::StartsWith("1: ") && Catch::Contains("model.norm.weight") &&
                                                    Catch::Contains("[16]") && Catch::Contains("[8]"));
  CHECK_THAT(pm.write(19, wrong, kI64, {8}), Catch::Contains("int64"));
  CHECK_THAT(pm.write(19, wrong, kF32, {8}, 7), Catch::Contains("which = 7"));
  CHECK(pm.write(19, wrong, kF32, {8}, LYRE_TENSOR_GRAD) == "");
}

TEST_CASE("forward, backward and generate through the table equal the C++ model's") {
  LlamaModel<float> ref(tiny_config(false));
  init_weights(ref, 71);
  PluginModel pm(tiny_config_json(false));
  load_from(pm, ref);
  HostBatch batch = packed_batch();

  std::vector<float> dlogp(batch.tokens.size(), 0.25f), logp;
  CHECK_THAT(pm.backward(dlogp, {2, 7}), Catch::StartsWith("5: "));  // FAILED_PRECONDITION
  REQUIRE(pm.forward(batch, LYRE_FORWARD_TRAIN, logp) == "");
  std::vector<float> expected(batch.tokens.size());
  ref.forward(batch.view(), ForwardMode::train, expected.data());
  CHECK(logp == expected);
  CHECK_THAT(pm.backward(dlogp, {2, 6}), Catch::Contains("expected shape [2,7]"));
  REQUIRE(pm.backward(dlogp, {2, 7}) == "");
  ref.backward(dlogp.data());
  for (size_t i = 0; i < ref.params().size(); ++i) {
    const ParameterInfo& p = ref.params().info(i);
    const std::vector<float> g = pm.read(i, p.shape, LYRE_TENSOR_GRAD);
    CHECK(std::equal(g.begin(), g.end(), ref.params().grad(i)));
  }
  CHECK_THAT(pm.backward(dlogp, {2, 7}), Catch::StartsWith("5: "));

  std::vector<float> eval;
  REQUIRE(pm.forward(batch, LYRE_FORWARD_ADAPTERS_OFF, eval) == "");
  CHECK(eval == expected);
  batch.tokens[9] = 99;
  CHECK_THAT(pm.forward(batch, LYRE_FORWARD_NO_GRAD, eval), Catch::Contains("value 99 at row 1, col 2"));
  CHECK_THAT(pm.forward(batch, 5, eval), Catch::Contains("mode 5"));

  auto z = args_of<LyreModel_ZeroGrad_Args>();
  z.model = pm.get();
  CHECK(outcome(PluginModel::api().zero_grad(&z)) == "");
  CHECK(pm.read(3, {8, 8}, LYRE_TENSOR_GRAD) == std::vector<float>(64, 0.0f));

  // Greedy generation, two prompts right-padded.
  std::vector<int32_t> prompt{3, 7, 1, 5, 0, 0}, lengths{3, 1}, out(2 * 5, -1), out_len(2, -1);
  Tensor tp(prompt.data(), kI32, {2, 3}), tl(lengths.data(), kI32, {2}), to(out.data(), kI32, {2, 5}),
      tn(out_len.data(), kI32, {2});
  LyreSamplingParams greedy{sizeof(LyreSamplingParams), 0.0f, 0, 1.0f, 0};
  auto g = args_of<LyreModel_Generate_Args>();
  g.model = pm.get();
  g.prompt = &tp.t;
  g.prompt_lengths = &tl.t;
  g.max_new_tokens = 5;
  g.eos_token_id = -1;
  g.sampling = &greedy;
  g.out_tokens = &to.t;
  g.out_lengths = &tn.t;
  REQUIRE(outcome(PluginModel::api().generate(&g)) == "");
  std::vector<int32_t> ref_out(10), ref_len(2);
  ref.generate(prompt.data(), lengths.data(), 2, 3, 5, -1, SamplingOptions{}, ref_out.data(), ref_len.data());
  CHECK(out == ref_out);
  CHECK(out_len == std::vector<int32_t>{5, 5});
  g.max_new_tokens = 4;
  CHECK_THAT(outcome(PluginModel::api().generate(&g)), Catch::Contains("out_tokens"));

  // Gradients reduce over ranks through the host in one call; one rank leaves them alone.
  std::vector<float> g3(64, 0.5f);
  REQUIRE(pm.write(3, g3.data(), kF32, {8, 8}, LYRE_TENSOR_GRAD) == "");
  auto ar = args_of<LyreBackend_AllReduceGradients_Args>();
  ar.model = pm.get();
  REQUIRE(outcome(plugin_api().backend->all_reduce_gradients(&ar)) == "");
  CHECK(pm.read(3, {8, 8}, LYRE_TENSOR_GRAD) == g3);
  g_host.world_size = 2;
  static size_t reduced = 0;
  g_host.all_reduce_f32 = [](float* data, size_t count, int32_t op) -> LyreError* {
    reduced = count;
    for (size_t i = 0; i < count; ++i) data[i] *= 2;  // the other rank holds the same
    return op == LYRE_REDUCE_SUM ? nullptr : host_error_new(LYRE_ERROR_INTERNAL, "not a sum");
  };
  const std::string reduce_result = outcome(plugin_api().backend->all_reduce_gradients(&ar));
  g_host.world_size = 1;
  g_host.all_reduce_f32 = host_all_reduce;
  CHECK(reduce_result == "");
  CHECK(reduced == static_cast<size_t>(ref.num_parameters()));
  CHECK(pm.read(3, {8, 8}, LYRE_TENSOR_GRAD) == std::vector<float>(64, 1.0f));

  auto st = args_of<LyreModel_Stats_Args>();
  st.model = pm.get();
  st.seq_len = 100;
  REQUIRE(outcome(PluginModel::api().stats(&st)) == "");
  CHECK(st.train_flops_per_token == ref.train_flops_per_token(100));
  CHECK(st.num_parameters_total == ref.num_parameters());
  CHECK(st.num_parameters_trainable == ref.num_parameters());
}

TEST_CASE("the optimizer table steps the model's weights and exposes its states") {
  PluginModel pm(tiny_config_json(true));
  const LyreOptimizerApi& api = *plugin_api().optimizer;
  auto c = args_of<LyreOptimizer_Create_Args>();
  c.model = pm.get();
  c.config_json = R"({"type": "adamw", "weight_decay": 0.0, "beta": 0.9})";
  CHECK_THAT(outcome(api.create(&c)), Catch::Contains("unknown key \"beta\""));
  c.config_json = R"({"type": "adamw", "weight_decay": 0.0})";
  REQUIRE(outcome(api.create(&c)) == "");

  std::vector<float> grad(8, 0.5f);
  REQUIRE(pm.write(1, grad.data(), kF32, {8}, LYRE_TENSOR_GRAD) == "");  // input_layernorm of layer 0
  auto norm = args_of<LyreOptimizer_GradSquaredNorm_Args>();
  norm.optimizer = c.optimizer;
  REQUIRE(outcome(api.grad_squared_norm(&norm)) == "");
  CHECK(norm.squared_norm == 8 * 0.25);
  auto s = args_of<LyreOptimizer_Step_Args>();
  s.optimizer = c.optimizer;
  s.lr = 0.1;
  s.grad_scale = 1.0;
  REQUIRE(outcome(api.step(&s)) == "");
  // First Adam step moves each weight by lr * sign(g) (eps aside): 1 -> 0.9.
  for (float v : pm.read(1, {8})) CHECK(v == Approx(0.9f).epsilon(1e-6));

  auto n = args_of<LyreOptimizer_NumStates_Args>();
  n.optimizer = c.optimizer;
  REQUIRE(outcome(api.num_states(&n)) == "");
  CHECK(n.num_states == 2 * 20 + 1);
  auto st = args_of<LyreOptimizer_State_Args>();
  st.optimizer = c.optimizer;
  st.index = n.num_states - 1;
  REQUIRE(outcome(api.state(&st)) == "");
  CHECK(std::string(st.name) == "step");
  CHECK(st.dtype.code == kDLInt);
  int64_t step = -1;
  Tensor ts(&step, kI64, {1});
  auto rs = args_of<LyreOptimizer_StateTensor_Args>();
  rs.optimizer = c.optimizer;
  rs.index = st.index;
  rs.tensor = &ts.t;
  REQUIRE(outcome(api.read_state(&rs)) == "");
  CHECK(step == 1);
  step = 7;
  REQUIRE(outcome(api.write_state(&rs)) == "");
  step = 0;
  REQUIRE(outcome(api.read_state(&rs)) == "");
  CHECK(step == 7);

  st.index = 3;  // layer 0 input_layernorm exp_avg_sq
  REQUIRE(outcome(api.state(&st)) == "");
  CHECK(std::string(st.name) == "model.layers.0.input_layernorm.weight.exp_avg_sq");
  std::vector<float> v(8);
  Tensor tv(v.data(), kF32, {8});
  rs.index = 3;
  rs.tensor = &tv.t;
  REQUIRE(outcome(api.read_state(&rs)) == "");
  CHECK(v[0] == Approx(0.001 * 0.25));
  Tensor bad(v.data(), kF32, {4});
  rs.tensor = &bad.t;
  CHECK_THAT(outcome(api.read_state(&rs)), Catch::Contains("shape"));

  auto d = args_of<LyreOptimizer_Destroy_Args>();
  d.optimizer = c.optimizer;
  CHECK(outcome(api.destroy(&d)) == "");
}

}  // namespace lyre::cpu::test
