// Learning-rate schedules and the `lyre train` config: every documented rule and error.
#include <catch2/catch.hpp>

#include <fstream>

#include "fixture.hpp"
#include "train/run_config.hpp"
#include "train/schedule.hpp"
#include "util/config_reader.hpp"

using lyre::ConfigError;
using lyre::LrSchedule;
using lyre::ScheduleOptions;

TEST_CASE("warmup rises linearly to the peak and never starts at zero") {
  for (auto type : {ScheduleOptions::Type::constant, ScheduleOptions::Type::linear, ScheduleOptions::Type::cosine}) {
    ScheduleOptions o;
    o.type = type;
    o.learning_rate = 1.0;
    o.warmup_steps = 4;
    LrSchedule s(o, 104);
    CHECK(s.lr(0) == Approx(0.25));
    CHECK(s.lr(1) == Approx(0.5));
    CHECK(s.lr(3) == Approx(1.0));
    CHECK(s.lr(4) == Approx(1.0));
  }
}

TEST_CASE("constant schedule holds the peak") {
  ScheduleOptions o;
  o.learning_rate = 2e-4;
  LrSchedule s(o, 50);
  CHECK(s.lr(0) == Approx(2e-4));
  CHECK(s.lr(49) == Approx(2e-4));
}

TEST_CASE("linear schedule decays to min_lr_ratio at the last step") {
  ScheduleOptions o;
  o.type = ScheduleOptions::Type::linear;
  o.learning_rate = 1.0;
  o.warmup_steps = 10;
  o.min_lr_ratio = 0.1;
  LrSchedule s(o, 111);  // decay over steps 10..110
  CHECK(s.lr(10) == Approx(1.0));
  CHECK(s.lr(60) == Approx(0.55));
  CHECK(s.lr(110) == Approx(0.1));
}

TEST_CASE("cosine schedule is at the midpoint halfway and at the floor at the end") {
  ScheduleOptions o;
  o.type = ScheduleOptions::Type::cosine;
  o.learning_rate = 1.0;
  o.min_lr_ratio = 0.0;
  LrSchedule s(o, 101);
  CHECK(s.lr(0) == Approx(1.0));
  CHECK(s.lr(50) == Approx(0.5));
  CHECK(s.lr(25) == Approx(0.5 * (1 + std::cos(M_PI * 0.25))));
  CHECK(s.lr(100) == Approx(0.0).margin(1e-12));
}

namespace {

nlohmann::json minimal_config() {
  return nlohmann::json::parse(R"({
    "model": {"config": {"model_type": "llama"}},
    "train_dataloader": {"path": "train.jsonl", "seq_len": 16}
  })");
}

std::string parse_error(const nlohmann::json& config) {
  try {
    lyre::parse_run_config(config, "/tmp/run.json");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("a minimal config parses with the documented defaults") {
  auto run = lyre::parse_run_config(minimal_config(), "/data/run.json");
  CHECK(run.train.path == "/data/train.jsonl");  // relative to the config file
  CHECK(run.train.per_device_batch_size == 8);
  CHECK(run.backend == "auto");
  CHECK(run.objective_name == "sft");
  CHECK(run.optimizer_options["type"] == "adamw");
  CHECK_FALSE(run.trainer.steps.has_value());
  CHECK_FALSE(run.trainer.epochs.has_value());
  CHECK(run.trainer.max_grad_norm == 1.0);
}

TEST_CASE("an unknown key is an error that names it and suggests the near one") {
  auto c = minimal_config();
  c["train_dataloader"]["per_device_batchsize"] = 4;
  CHECK(parse_error(c) ==
        "/tmp/run.json: unknown key \"train_dataloader.per_device_batchsize\" (did you mean "
        "\"train_dataloader.per_device_batch_size\"?)");
  auto d = minimal_config();
  d["stepz"] = 3;
  CHECK(parse_error(d) == "/tmp/run.json: unknown key \"stepz\" (did you mean \"steps\"?)");
}

TEST_CASE("a mistyped value is an error that names the key and the value") {
  auto c = minimal_config();
  c["steps"] = "ten";
  CHECK(parse_error(c) == "/tmp/run.json: \"steps\" must be an integer, got a string (\"ten\")");
  auto d = minimal_config();
  d["optimizer"]["learning_rate"] = "fast";
  CHECK(parse_error(d) == "/tmp/run.json: \"optimizer.learning_rate\" must be a number, got a string (\"fast\")");
  auto big = minimal_config();
  big["steps"] = 1e30;  // whole, but no int64 holds it: refused before any conversion
  CHECK(parse_error(big) == "/tmp/run.json: \"steps\" is 1e+30, too large for an integer");
  auto e = minimal_config();
  e["log_steps_interval"] = 0;
  CHECK(parse_error(e) == "/tmp/run.json: \"log_steps_interval\" must be at least 1, got 0");
  auto f = minimal_config();
  f["optimizer"]["lr_schedule"] = nlohmann::json{{"type", "exponential"}};
  CHECK(parse_error(f) == "/tmp/run.json: \"optimizer.lr_schedule.type\" unknown schedule \"exponential\" "
                          "(expected constant, linear or cosine)");
}

TEST_CASE("missing required keys are named") {
  auto c = minimal_config();
  c.erase("train_dataloader");
  CHECK(parse_error(c) == "/tmp/run.json: \"train_dataloader\" is required");
  auto d = minimal_config();
  d["train_dataloader"].erase("seq_len");
  CHECK(parse_error(d) == "/tmp/run.json: \"train_dataloader.seq_len\" is required (the row length in tokens)");
}

TEST_CASE("command-line overrides (--set) reach nested keys with JSON values or strings") {
  auto c = minimal_config();
  lyre::apply_override(c, "steps=25");
  lyre::apply_override(c, "optimizer.learning_rate=3e-4");
  lyre::apply_override(c, "backend=cpu");
  lyre::apply_override(c, "train_dataloader.shuffle=false");
  auto run = lyre::parse_run_config(c, "/tmp/run.json");
  CHECK(*run.trainer.steps == 25);
  CHECK(run.trainer.schedule.learning_rate == Approx(3e-4));
  CHECK(run.backend == "cpu");
  CHECK_FALSE(run.train.shuffle);
  CHECK_THROWS_WITH(lyre::apply_override(c, "steps"), Catch::Matchers::Contains("expected KEY=VALUE"));
  CHECK_THROWS_WITH(lyre::apply_override(c, "steps.x=1"), Catch::Matchers::Contains("\"steps\" is not an object"));
}

TEST_CASE("a config file with a syntax error names the line and column") {
  std::string path = lyre::test::temp_dir("config") + "/bad.json";
  std::ofstream(path) << "{\n  \"steps\": 10,\n  \"epochs\": ,\n}\n";
  CHECK_THROWS_WITH(lyre::read_json_file(path), Catch::Matchers::StartsWith(path + ":3:"));
}
