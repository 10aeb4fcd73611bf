// The Trainer, after Kithara's: Trainer(model, optimizer, train_dataloader, eval_dataloader,
// steps, epochs, log_steps_interval, eval_steps_interval, eval_epochs_interval,
// max_eval_samples, tensorboard_dir, profiler, checkpointer).train()
//
// One optimizer step: the host takes gradient_accumulation_steps micro-batches, sums the
// objective's normaliser over all of them (and over ranks) first, then runs forward ->
// objective -> backward per micro-batch, clips by global norm, and steps the optimizer with the
// schedule's learning rate.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataloader.hpp"
#include "io/tensorboard.hpp"
#include "io/trace.hpp"
#include "plugin/checkpointer_handle.hpp"
#include "plugin/handles.hpp"
#include "train/schedule.hpp"

namespace lyre {

// When the Trainer saves through the checkpointer, and whether it resumes.
struct CheckpointOptions {
  std::optional<int64_t> save_interval;         // every N optimizer steps (Kithara's save_interval)
  std::optional<int64_t> save_interval_epochs;  // or every N epochs; neither: every epoch
  std::string resume = "auto";  // "auto": the newest complete checkpoint, if any; "never"; or a step
};

// What a checkpoint records about the run beyond tensors: for the fit check on resume and for
// `lyre export`.
struct RunIdentity {
  nlohmann::json config = nlohmann::json::object();  // the whole run config (hash, diff)
  nlohmann::json model_config = nlohmann::json::object();  // the HF config.json
  std::string tokenizer = "byte";  // "byte" or an absolute path
  std::string base_model;          // absolute path of the imported HF directory; "" = none
};

struct TrainerOptions {
  // The seed's parameters.
  std::optional<int64_t> steps;   // optimizer steps; with epochs unset too: 1 epoch
  std::optional<int64_t> epochs;
  int64_t log_steps_interval = 1;
  std::optional<int64_t> eval_steps_interval;
  std::optional<int64_t> eval_epochs_interval;
  std::optional<int64_t> max_eval_samples;
  std::string tensorboard_dir;              // "" = no event file
  std::optional<ProfilerOptions> profiler;  // the seed's profiler
  // The seed's checkpointer is the Checkpointer* handed to the Trainer; these say when it saves.
  CheckpointOptions checkpoint;
  RunIdentity run;

  // Beyond the seed.
  int64_t gradient_accumulation_steps = 1;
  double max_grad_norm = 0.0;  // 0 = no clipping
  ScheduleOptions schedule;
};

// One optimizer step as the log reports it.
struct StepRecord {
  int64_t step = 0;   // 1-based count of optimizer steps done
  int64_t epoch = 0;  // 0-based epoch the step's data came from
  double loss = 0;
  double learning_rate = 0;
  double grad_norm = 0;  // before clipping
  double step_seconds = 0;
  int64_t tokens = 0;   // non-padding input tokens in the step's micro-batches
  int64_t positions = 0;  // all row positions of those micro-batches, padding included
  int64_t samples = 0;
};

struct EvalRecord {
  int64_t step = 0;  // optimizer steps done when it ran
  double loss = 0;
  double perplexity = 0;
  int64_t samples = 0;
  int64_t loss_tokens = 0;  // the objective's normaliser, summed
};

struct TrainResult {
  std::vector<StepRecord> steps;  // every step of the run, those before a resume included
  std::vector<EvalRecord> evals;
  int64_t epochs_started = 0;
  int64_t resumed_from_step = 0;  // 0 = started fresh
  std::string trace_path;         // the profiler's file, "" = none
  std::string tensorboard_path;   // the event file, "" = none
};

// What the log line needs from the backend beyond the model.
struct BackendProbe {
  std::function<double()> peak_flops;          // FLOP/s, 0 = unknown
  std::function<uint64_t()> memory_used_bytes;  // backend-held bytes now
};

class Trainer {
 public:
  // Checks the seed's rules and throws ConfigError when they are broken: steps and epochs both
  // set; both eval intervals set; an eval interval without an eval dataloader. With an eval
  // dataloader and no interval, evaluation runs every epoch.
  // `checkpointer` may be null (no checkpoints, no resume); it must outlive train().
  Trainer(Model& model, Optimizer& optimizer, Objective& objective, Dataloader& train_dataloader,
          Dataloader* eval_dataloader, TrainerOptions options, BackendProbe probe = {},
          Checkpointer* checkpointer = nullptr);

  TrainResult train();
  // Mean objective loss over the eval dataloader (at most max_eval_samples samples).
  EvalRecord evaluate();

  int64_t total_steps() const { return total_steps_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  const TrainerOptions& options() const { return options_; }

 private:
  // One optimizer step on the next gradient_accumulation_steps batches of train_ (which the
  // caller has positioned: train_.state() is the data position a checkpoint saves).
  StepRecord run_step(int64_t step, Profiler* profiler);
  void log_interval(const std::vector<StepRecord>& interval, const StepRecord& last,
                    TensorBoardWriter* tensorboard) const;
  // Loads the checkpoint options_.checkpoint.resume asks for; returns the steps already done.
  int64_t resume(TrainResult& result);
  void save_checkpoint(const TrainResult& result, Profiler* profiler);

  Model& model_;
  Optimizer& optimizer_;
  Objective& objective_;
  Dataloader& train_;
  Dataloader* eval_;
  TrainerOptions options_;
  BackendProbe probe_;
  Checkpointer* checkpointer_;
  int64_t steps_per_epoch_ = 0;
  int64_t total_steps_ = 0;
  LrSchedule schedule_{ScheduleOptions{}, 1};
  double flops_per_token_ = 0;
  std::vector<float> logp_, reference_logp_, dlogp_;
};

}  // namespace lyre
