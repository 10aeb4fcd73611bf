// Model, Optimizer and Objective over the test plugins: calls go through, errors come back with
// code and context, and a library outlives every object it made.
#include <catch2/catch.hpp>

#include <dlfcn.h>

#include <cmath>

#include "plugin/checkpointer_handle.hpp"
#include "plugin/error.hpp"
#include "plugin/handles.hpp"
#include "test_support.hpp"

using namespace lyre;
using lyre::test::make_batch;
using lyre::test::plugin_file;

namespace {

const char* const kConfig = R"({"vocab_size": 5})";

bool library_loaded(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (handle != nullptr) dlclose(handle);
  return handle != nullptr;
}

template <typename F>
PluginError plugin_error_of(F&& f) {
  try {
    f();
  } catch (const PluginError& e) {
    return e;
  }
  FAIL("no PluginError thrown");
  return PluginError(0, "");
}

}  // namespace

TEST_CASE("a model's parameters are enumerated with name, kind, trainable flag and shape") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  Model model(registry.backend("test-good"), kConfig);
  const std::vector<ParameterInfo>& params = model.parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].index == 0);
  CHECK(params[0].name == "lm_head.bias");
  CHECK(params[0].kind == LYRE_PARAM_BIAS);
  CHECK(params[0].trainable);
  CHECK(params[0].shape == std::vector<int64_t>{5});
  CHECK(params[0].numel() == 5);
  CHECK(params[1].name == "model.norm.weight");
  CHECK(params[1].kind == LYRE_PARAM_NORM);
  CHECK_FALSE(params[1].trainable);
  CHECK(params[1].numel() == 1);
  ParameterInfo scalar;
  CHECK(scalar.numel() == 1);
  scalar.shape = {3, 0, 2};
  CHECK(scalar.numel() == 0);

  const LyreModel_Stats_Args stats = model.stats(16);
  CHECK(stats.num_parameters_total == 6);
  CHECK(stats.num_parameters_trainable == 5);
  CHECK(stats.train_flops_per_token == 30.0);
}

TEST_CASE("tensors written to a model read back, value and gradient") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  Model model(registry.backend("test-good"), kConfig);
  model.write(0, {1, 2, 3, 4, 5});
  CHECK(model.read(0) == std::vector<float>{1, 2, 3, 4, 5});
  CHECK(model.read(0, LYRE_TENSOR_GRAD) == std::vector<float>(5, 0.0f));
  CHECK(model.read(1) == std::vector<float>{1});
  CHECK_THROWS_AS(model.write(0, {1, 2}), std::invalid_argument);
  CHECK_THROWS_AS(model.read(2), std::out_of_range);
  const PluginError e = plugin_error_of([&] { model.read(1, LYRE_TENSOR_GRAD); });
  CHECK(e.code() == LYRE_ERROR_INVALID_ARGUMENT);
  CHECK(std::string(e.what()) ==
        "test-good: read_tensor 'model.norm.weight': model.norm.weight is frozen: it has no gradient");
}

TEST_CASE("one training step through the handles lowers the loss") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  Model model(registry.backend("test-good"), kConfig);
  Optimizer optimizer(model, R"({"type": "sgd"})");
  Objective objective(registry.objective("test-mean"), "");
  CHECK_FALSE(objective.needs_reference_logp());
  CHECK_FALSE(objective.needs_paired_rows());

  const Batch batch = make_batch({{0, 1, 1, 1}, {2, 1, 1, 3}});
  const double normalizer = objective.normalizer(batch);
  CHECK(normalizer == 6.0);  // targets >= 0: three per row

  std::vector<float> logp, dlogp;
  model.forward(batch, LYRE_FORWARD_TRAIN, logp);
  REQUIRE(logp.size() == 8);
  CHECK(logp[0] == Approx(std::log(0.2)));
  CHECK(logp[3] == 0.0f);  // last token of a row predicts nothing
  const ObjectiveResult before = objective.compute(batch, logp, nullptr, normalizer, dlogp);
  CHECK(before.loss == Approx(-std::log(0.2)));
  REQUIRE(before.metrics.size() == 1);
  CHECK(before.metrics[0] == std::make_pair(std::string("tokens"), 6.0));
  REQUIRE(dlogp.size() == 8);
  CHECK(dlogp[0] == Approx(-1.0 / 6));
  CHECK(dlogp[3] == 0.0f);

  model.zero_grad();
  model.backward(batch, dlogp);
  CHECK(optimizer.grad_squared_norm() > 0);
  optimizer.step(1.0, 1.0);
  model.zero_grad();
  CHECK(optimizer.grad_squared_norm() == 0);

  model.forward(batch, LYRE_FORWARD_NO_GRAD, logp);
  const ObjectiveResult after = objective.compute(batch, logp, nullptr, normalizer, dlogp);
  CHECK(after.loss < before.loss - 0.1);
}

TEST_CASE("errors from plugin calls arrive with their code and a context naming plugin and call") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  std::shared_ptr<LoadedPlugin> good = registry.backend("test-good");

  PluginError e = plugin_error_of([&] { Objective o(registry.objective("test-mean"), R"({"bogus": 1})"); });
  CHECK(e.code() == LYRE_ERROR_INVALID_ARGUMENT);
  CHECK(std::string(e.what()) == "test-good: create objective: unknown key 'bogus'");

  e = plugin_error_of([&] { Model m(good, R"({"vocab_size": 0})"); });
  CHECK(std::string(e.what()) == "test-good: create model: config.json: vocab_size must be a positive integer");
  e = plugin_error_of([&] { Model m(good, kConfig, R"({"threads": 2})"); });
  CHECK(std::string(e.what()) == "test-good: create model: unknown key 'threads'");
  e = plugin_error_of([&] { Model m(good, kConfig, "", 0); Optimizer o(m, R"({"type": "adamw"})"); });
  CHECK(std::string(e.what()) == "test-good: create optimizer: type: the fake backend has only \"sgd\"");

  Model model(good, kConfig);
  std::vector<float> logp;
  e = plugin_error_of([&] { model.forward(make_batch({{0, 9}}), LYRE_FORWARD_TRAIN, logp); });
  CHECK(e.code() == LYRE_ERROR_INVALID_ARGUMENT);
  CHECK(std::string(e.what()) == "test-good: forward: target 9 outside vocabulary [0, 5)");

  e = plugin_error_of([&] { model.backward(make_batch({{0, 1}}), {0.0f, 0.0f}); });
  CHECK(e.code() == LYRE_ERROR_FAILED_PRECONDITION);
  CHECK(std::string(e.what()) == "test-good: backward: backward without a train forward");
}

TEST_CASE("a batch whose fields disagree with its shape is refused before any plugin call") {
  Batch batch = make_batch({{0, 1, 2}});
  batch.loss_mask.pop_back();
  CHECK_THROWS_WITH(BatchView(batch), "Batch.loss_mask has 2 values, expected 3 (batch_size x seq_len)");
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  Model model(registry.backend("test-good"), kConfig);
  std::vector<float> logp;
  CHECK_THROWS_AS(model.forward(batch, LYRE_FORWARD_TRAIN, logp), std::invalid_argument);
  CHECK_THROWS_AS(model.backward(make_batch({{0, 1, 2}}), {1.0f}), std::invalid_argument);
}

TEST_CASE("a batch view describes the batch as five int32 [B,T] host tensors") {
  const Batch batch = make_batch({{4, 3, 2}, {1, 0, 1}});
  BatchView view(batch);
  const LyreBatch* b = view.get();
  CHECK(b->struct_size == sizeof(LyreBatch));
  for (const DLTensor* t : {b->tokens, b->targets, b->positions, b->segment_ids, b->loss_mask}) {
    CHECK(t->ndim == 2);
    CHECK(t->shape[0] == 2);
    CHECK(t->shape[1] == 3);
    CHECK(t->dtype.code == kDLInt);
    CHECK(t->dtype.bits == 32);
    CHECK(t->device.device_type == kDLCPU);
    CHECK(t->strides == nullptr);
  }
  CHECK(static_cast<const int32_t*>(b->tokens->data)[3] == 1);
  CHECK(static_cast<const int32_t*>(b->targets->data)[2] == -1);
  CHECK(b->targets->data == batch.targets.data());
}

TEST_CASE("an objective that needs reference log-probs gets them and reports its metrics") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  Objective objective(registry.objective("test-mean"), R"({"reference": true})");
  CHECK(objective.needs_reference_logp());
  const Batch batch = make_batch({{0, 1, 2}});
  std::vector<float> logp{-1.0f, -2.0f, 0.0f}, reference{-0.5f, -0.25f, 0.0f}, dlogp;
  CHECK_THROWS_AS(objective.compute(batch, logp, nullptr, 2.0, dlogp), std::invalid_argument);
  const ObjectiveResult r = objective.compute(batch, logp, &reference, 2.0, dlogp);
  CHECK(r.loss == Approx(1.5));
  REQUIRE(r.metrics.size() == 2);
  CHECK(r.metrics[1] == std::make_pair(std::string("reference_sum"), -0.75));
}

TEST_CASE("generate returns the greedy tokens per row and stops a row at eos") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  Model model(registry.backend("test-good"), kConfig);
  REQUIRE(model.can_generate());
  model.write(0, {0, 0, 0, 5, 0});
  GenerateOptions options;
  options.max_new_tokens = 3;
  CHECK(model.generate({{1, 2}, {4}}, options) == std::vector<std::vector<int32_t>>{{3, 3, 3}, {3, 3, 3}});
  options.eos_token_id = 3;
  CHECK(model.generate({{1}}, options) == std::vector<std::vector<int32_t>>{{3}});
  CHECK_THROWS_AS(model.generate({{}}, options), std::invalid_argument);
}

TEST_CASE("a model table without generate says it cannot generate") {
  PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
  Model model(registry.backend("test-fast"), kConfig);
  CHECK_FALSE(model.can_generate());
  const PluginError e = plugin_error_of([&] { model.generate({{1}}, GenerateOptions{}); });
  CHECK(e.code() == LYRE_ERROR_UNIMPLEMENTED);
  CHECK_THAT(e.what(), Catch::StartsWith("backend-test-fast: generate: this backend cannot generate"));
}

TEST_CASE("a library stays loaded while an object it made lives, even after the registry is gone") {
  const std::string file = plugin_file("test-good");
  test::LogCapture capture;
  std::unique_ptr<Model> model;
  std::unique_ptr<Objective> objective;
  {
    PluginRegistry registry = PluginRegistry::discover({test::plugin_dir()});
    model = std::make_unique<Model>(registry.backend("test-good"), kConfig);
    objective = std::make_unique<Objective>(registry.objective("test-mean"), "");
  }
  REQUIRE(library_loaded(file));
  CHECK(capture.text().find("[test-good] shutdown") == std::string::npos);

  // Both objects still work: their code is still mapped.
  const Batch batch = make_batch({{0, 1, 2}});
  std::vector<float> logp, dlogp;
  model->forward(batch, LYRE_FORWARD_TRAIN, logp);
  CHECK(objective->compute(batch, logp, nullptr, 2.0, dlogp).loss == Approx(-std::log(0.2)));

  model.reset();
  CHECK(library_loaded(file));
  CHECK(capture.text().find("[test-good] shutdown") == std::string::npos);
  objective.reset();
  CHECK_FALSE(library_loaded(file));
  // shutdown ran once, after the last object was gone.
  std::vector<std::string> shutdowns;
  for (const std::string& line : capture.lines("info")) {
    if (line.find("[test-good] shutdown") != std::string::npos) shutdowns.push_back(line);
  }
  CHECK(shutdowns == std::vector<std::string>{"[test-good] shutdown with 0 live objects"});
}

TEST_CASE("a checkpointer's list answer is checked: a step that is not an integer is refused with the text") {
  PluginRegistry registry = PluginRegistry::discover({LYRE_HOST_TEST_CHECKPOINTER_DIR});
  const auto plugin = registry.checkpointer("test-lying");
  const std::vector<CheckpointEntry> listed = Checkpointer(plugin, R"({"list": [{"step": 3, "path": "/c/step_3"}]})").list();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].step == 3);
  CHECK(listed[0].path == "/c/step_3");
  // 3e20 as an int64 would be undefined behaviour; 2^64 - 1 would read as -1.
  for (const char* step : {"3e20", "2.5", "18446744073709551615", "\"7\""}) {
    INFO(step);
    Checkpointer lying(plugin, std::string(R"({"list": [{"step": )") + step + R"(, "path": "p"}]})");
    const PluginError e = plugin_error_of([&] { lying.list(); });
    CHECK(e.code() == LYRE_ERROR_INTERNAL);
    CHECK_THAT(e.what(), Catch::Contains("checkpointer-test-lying: list: returned malformed JSON"));
    CHECK_THAT(e.what(), Catch::Contains("is not an integer"));
  }
  Checkpointer not_array(plugin, R"({"list": {"step": 1}})");
  CHECK_THAT(plugin_error_of([&] { not_array.list(); }).what(), Catch::Contains("(expected an array)"));
}
