// The Trainer's run artifacts in one process: TensorBoard scalars equal what the log reported,
// the profiler's trace holds every host phase and the backend's spans, and a checkpoint taken by
// the Trainer restores into a fresh model and optimizer that then continue identically.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fixture.hpp"
#include "io/tensorboard.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string single_file_in(const std::string& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
  REQUIRE(files.size() == 1);
  return files.front().string();
}

}  // namespace

TEST_CASE("tensorboard scalars read back equal to the logged values, step by step") {
  lyre::test::Setup s(/*batch_size=*/4, /*train_records=*/32, /*eval_records=*/8);
  lyre::TrainerOptions o;
  o.steps = 6;
  o.eval_steps_interval = 3;
  o.log_steps_interval = 1;
  o.tensorboard_dir = lyre::test::temp_dir("tensorboard") + "/run";
  fs::remove_all(o.tensorboard_dir);
  lyre::Trainer trainer = s.trainer(o);
  const lyre::TrainResult result = trainer.train();
  REQUIRE(result.tensorboard_path == single_file_in(o.tensorboard_dir));

  std::map<std::string, std::map<int64_t, float>> scalars;
  for (const lyre::ScalarEvent& e : lyre::read_tensorboard_scalars(result.tensorboard_path)) scalars[e.tag][e.step] = e.value;
  REQUIRE(scalars["train/loss"].size() == 6);
  for (const lyre::StepRecord& r : result.steps) {
    INFO("step " << r.step);
    CHECK(scalars["train/loss"].at(r.step) == static_cast<float>(r.loss));
    CHECK(scalars["train/learning_rate"].at(r.step) == static_cast<float>(r.learning_rate));
    CHECK(scalars["train/grad_norm"].at(r.step) == static_cast<float>(r.grad_norm));
    CHECK(scalars["train/tokens_per_second"].at(r.step) > 0);
  }
  REQUIRE(result.evals.size() == 2);
  for (const lyre::EvalRecord& e : result.evals) {
    CHECK(scalars["eval/loss"].at(e.step) == static_cast<float>(e.loss));
    CHECK(scalars["eval/perplexity"].at(e.step) == static_cast<float>(e.perplexity));
  }
}

TEST_CASE("the profiler's trace covers the host phases of the recorded steps and the backend's spans") {
  lyre::test::Setup s(/*batch_size=*/4, /*train_records=*/32);
  const std::string dir = lyre::test::temp_dir("profiler");
  fs::remove_all(dir + "/ckpt");
  lyre::Checkpointer checkpointer(s.registry.checkpointer("safetensors"),
                                  json{{"save_dir", dir + "/ckpt"}, {"async", false}}.dump());
  lyre::TrainerOptions o;
  o.steps = 6;
  o.checkpoint.save_interval = 3;
  o.profiler = lyre::ProfilerOptions{dir + "/trace.json", /*skip_first_n_steps=*/2, /*max_profile_steps=*/2};
  lyre::Trainer trainer(*s.model, *s.optimizer, *s.objective, *s.train, nullptr, o, {}, &checkpointer);
  const lyre::TrainResult result = trainer.train();
  REQUIRE(result.trace_path == dir + "/trace.json");

  std::ifstream in(result.trace_path);
  const json trace = json::parse(in);
  std::set<std::string> host_categories, steps;
  bool backend_span = false;
  for (const json& e : trace.at("traceEvents")) {
    if (e.value("ph", "") != "X") continue;
    host_categories.insert(e.value("cat", ""));
    const std::string name = e.value("name", "");
    if (name.rfind("step ", 0) == 0) steps.insert(name);
    backend_span |= name.find("layer") != std::string::npos;
  }
  // Steps 3 and 4 are recorded; step 3 saves a checkpoint.
  CHECK(steps == std::set<std::string>{"step 3", "step 4"});
  for (const char* phase : {"data", "forward", "objective", "backward", "all-reduce", "optimizer", "checkpoint"}) {
    INFO(phase);
    CHECK(host_categories.count(phase) == 1);
  }
  CHECK(backend_span);
}

TEST_CASE("a checkpoint the Trainer saved continues in a fresh model exactly as the run went on") {
  const std::string dir = lyre::test::temp_dir("in-process-resume");
  fs::remove_all(dir + "/ckpt");
  auto options = [&] {
    lyre::TrainerOptions o;
    o.steps = 8;
    o.checkpoint.save_interval = 5;
    o.schedule.learning_rate = 3e-3;
    o.schedule.type = lyre::ScheduleOptions::Type::cosine;
    o.schedule.warmup_steps = 2;
    return o;
  };
  lyre::test::Setup straight(4, 24);
  const lyre::TrainResult a = straight.trainer(options(), false).train();

  // The same run again with a checkpointer (every 5 steps and at the end) ...
  {
    lyre::test::Setup first(4, 24);
    lyre::Checkpointer ck(first.registry.checkpointer("safetensors"), json{{"save_dir", dir + "/ckpt"}}.dump());
    lyre::Trainer t(*first.model, *first.optimizer, *first.objective, *first.train, nullptr, options(), {}, &ck);
    t.train();
  }
  // ... and a third, built from scratch with other initial weights, resumes from step 5 (the final
  // checkpoint dropped) to step 8. Its data loader is the first run's: same data, seed, options.
  fs::remove_all(dir + "/ckpt/step_00000008");
  lyre::test::Setup second(4, 24, 0, true, /*seed=*/99);  // other weights until the checkpoint loads
  second.train = straight.train;
  straight.train->start_epoch(0);  // resume() restores the position; this only proves it does
  lyre::Checkpointer ck(second.registry.checkpointer("safetensors"), json{{"save_dir", dir + "/ckpt"}}.dump());
  lyre::Trainer t(*second.model, *second.optimizer, *second.objective, *second.train, nullptr, options(), {}, &ck);
  const lyre::TrainResult b = t.train();
  REQUIRE(b.resumed_from_step == 5);
  REQUIRE(b.steps.size() == 8);
  for (size_t i = 0; i < 8; ++i) {
    INFO("step " << i + 1);
    CHECK(a.steps[i].loss == b.steps[i].loss);
    CHECK(a.steps[i].grad_norm == b.steps[i].grad_norm);
  }
  for (size_t p = 0; p < straight.model->parameters().size(); ++p) {
    INFO(straight.model->parameters()[p].name);
    CHECK(straight.model->read(p) == second.model->read(p));
  }
}
