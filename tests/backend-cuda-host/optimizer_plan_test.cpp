// backend-cuda's optimizer plan (cuda/optimizer.cpp: plan_optimizer), checked on the host: the
// chunk table one launch covers, and the states a checkpoint holds, named, shaped and ordered as
// backend-cpu's own optimizer gives them (so a checkpoint moves between the two backends).
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "model/parameter_info.hpp"
#include "optimizer.hpp"
#include "plugin/handles.hpp"
#include "plugin/plugin_host.hpp"

namespace lyre::cuda {
namespace {

// Parameters laid end to end, as ParameterStore::add lays them.
struct Layout {
  std::vector<ParameterInfo> params;
  size_t total = 0;
  void add(const std::string& name, LyreParamKind kind, std::vector<int64_t> shape, bool trainable = true) {
    ParameterInfo& p = params[cpu::append_parameter(params, name, kind, std::move(shape))];
    p.trainable = trainable;
    total += p.numel;
  }
};

// d=32, 4 query heads over 2 kv heads of 8, F=48, V=64, L=2.
std::string tiny_config(bool tied) {
  return std::string(R"({"model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": )") + (tied ? "true" : "false") + "}";
}

}  // namespace

TEST_CASE("the chunk table covers every trainable element once, in pieces of at most kOptimizerChunk") {
  Layout l;
  l.add("w", LYRE_PARAM_MATRIX, {3, kOptimizerChunk / 2 + 3});  // 1.5 chunks and a bit: 3 pieces
  l.add("norm", LYRE_PARAM_NORM, {7});
  l.add("frozen", LYRE_PARAM_MATRIX, {5, 9}, /*trainable=*/false);
  l.add("emb", LYRE_PARAM_EMBEDDING, {2, kOptimizerChunk / 2});  // exactly one chunk
  l.add("bias", LYRE_PARAM_BIAS, {1});
  OptimizerConfig config;  // adamw, weight decay 0.01, none on norms and biases
  const OptimizerPlan plan = plan_optimizer(l.params, config);

  std::vector<int> covered(l.total, 0);
  for (const OptimizerChunk& c : plan.chunks) {
    REQUIRE(c.numel >= 1);
    REQUIRE(c.numel <= kOptimizerChunk);
    REQUIRE(c.offset >= 0);
    REQUIRE(static_cast<size_t>(c.offset + c.numel) <= l.total);
    for (int64_t i = c.offset; i < c.offset + c.numel; ++i) ++covered[static_cast<size_t>(i)];
  }
  for (const ParameterInfo& p : l.params) {
    INFO(p.name);
    size_t wrong = 0;  // elements updated twice, or not at all (or a frozen one at all)
    for (size_t i = p.offset; i < p.offset + p.numel; ++i) wrong += covered[i] != (p.trainable ? 1 : 0);
    CHECK(wrong == 0);
  }
  // w: 3*(32768+3) = 98313 elements -> 65536 + 32777; then norm, emb, bias whole.
  REQUIRE(plan.chunks.size() == 5);
  CHECK(plan.chunks[0].offset == 0);
  CHECK(plan.chunks[0].numel == kOptimizerChunk);
  CHECK(plan.chunks[1].numel == 3 * (kOptimizerChunk / 2 + 3) - kOptimizerChunk);
  const float decay = static_cast<float>(config.weight_decay);
  CHECK(plan.chunks[0].weight_decay == decay);
  CHECK(plan.chunks[1].weight_decay == decay);
  CHECK(plan.chunks[2].weight_decay == 0.0f);  // norm
  CHECK(plan.chunks[3].weight_decay == decay);  // embedding
  CHECK(plan.chunks[3].numel == kOptimizerChunk);
  CHECK(plan.chunks[4].weight_decay == 0.0f);  // bias
}

TEST_CASE("no_decay_kinds and the type set each chunk's weight decay as the config says") {
  Layout l;
  l.add("w", LYRE_PARAM_MATRIX, {4, 4});
  l.add("norm", LYRE_PARAM_NORM, {4});
  l.add("emb", LYRE_PARAM_EMBEDDING, {8, 4});
  const OptimizerConfig config =
      cpu::parse_optimizer_config(R"({"weight_decay": 0.5, "no_decay_kinds": ["embedding"]})");
  const OptimizerPlan only_embedding = plan_optimizer(l.params, config);
  REQUIRE(only_embedding.chunks.size() == 3);
  CHECK(only_embedding.chunks[0].weight_decay == 0.5f);
  CHECK(only_embedding.chunks[1].weight_decay == 0.5f);
  CHECK(only_embedding.chunks[2].weight_decay == 0.0f);
  const OptimizerPlan sgd = plan_optimizer(l.params, cpu::parse_optimizer_config(R"({"type": "sgd"})"));
  for (const OptimizerChunk& c : sgd.chunks) CHECK(c.weight_decay == 0.0f);  // PyTorch's SGD default
}

#ifdef LYRE_TEST_HAVE_BACKEND_CPU
TEST_CASE("optimizer states are named, shaped and ordered as backend-cpu's, for a checkpoint of either") {
  PluginRegistry registry = PluginRegistry::discover({LYRE_TEST_PLUGIN_DIR});
  std::shared_ptr<LoadedPlugin> cpu_backend = registry.backend("cpu");
  for (bool tied : {false, true}) {
    for (const char* json : {"", R"({"type": "adamw", "no_decay_kinds": []})", R"({"type": "sgd"})",
                             R"({"type": "sgd", "momentum": 0.9})"}) {
      INFO("tied " << tied << ", optimizer " << json);
      lyre::Model model(cpu_backend, tiny_config(tied));
      lyre::Optimizer cpu_optimizer(model, json);
      const std::vector<HostTensor> expected = cpu_optimizer.state_layout();

      Layout l;
      for (const lyre::ParameterInfo& p : model.parameters()) l.add(p.name, p.kind, p.shape, p.trainable);
      const OptimizerPlan plan = plan_optimizer(l.params, cpu::parse_optimizer_config(json));
      REQUIRE(plan.states.size() == expected.size());
      for (size_t i = 0; i < expected.size(); ++i) {
        const OptimizerPlan::State& s = plan.states[i];
        INFO("state " << i << ": " << expected[i].name);
        CHECK(s.name == expected[i].name);
        CHECK(s.shape == expected[i].shape);
        const bool is_step = s.buffer == OptimizerPlan::Buffer::step;
        CHECK(expected[i].dtype.code == (is_step ? kDLInt : kDLFloat));
        CHECK(expected[i].dtype.bits == (is_step ? 64 : 32));
        if (!is_step) {
          // "<param>.<state>": it sits at its parameter's offset in its flat buffer.
          const std::string param = s.name.substr(0, s.name.rfind('.'));
          const auto p = std::find_if(l.params.begin(), l.params.end(),
                                      [&](const ParameterInfo& q) { return q.name == param; });
          REQUIRE(p != l.params.end());
          CHECK(s.offset == p->offset);
          CHECK(s.numel == p->numel);
        }
      }
    }
  }
}
#endif

}  // namespace lyre::cuda
