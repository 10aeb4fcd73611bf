#include "train/trainer.hpp"

#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "io/checkpoint_layout.hpp"
#include "plugin/error.hpp"
#include "train/checkpoint_state.hpp"
#include "util/config_reader.hpp"

namespace lyre {
namespace {

double all_ranks_sum(double value) {
  // The host's reduction works on float32; the normaliser is a count, exact in float up to 2^24
  // per rank, and summed here in double after the exchange.
  float v = static_cast<float>(value);
  check(host_api()->all_reduce_f32(&v, 1, LYRE_REDUCE_SUM), "host: all_reduce");
  return host_api()->world_size == 1 ? value : static_cast<double>(v);
}

uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * 4096ull;
}

std::string mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fMiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

Trainer::Trainer(Model& model, Optimizer& optimizer, Objective& objective,
                 Dataloader& train_dataloader, Dataloader* eval_dataloader, TrainerOptions options,
                 BackendProbe probe, Checkpointer* checkpointer)
    : model_(model),
      optimizer_(optimizer),
      objective_(objective),
      train_(train_dataloader),
      eval_(eval_dataloader),
      options_(std::move(options)),
      probe_(std::move(probe)),
      checkpointer_(checkpointer) {
  if (options_.steps && options_.epochs) {
    throw ConfigError("steps and epochs are both set (" + std::to_string(*options_.steps) + " and " +
                      std::to_string(*options_.epochs) + "): set one of them, or neither for 1 epoch");
  }
  if (options_.eval_steps_interval && options_.eval_epochs_interval) {
    throw ConfigError("eval_steps_interval and eval_epochs_interval are both set: set only one");
  }
  if (eval_ == nullptr && (options_.eval_steps_interval || options_.eval_epochs_interval)) {
    throw ConfigError(std::string(options_.eval_steps_interval ? "eval_steps_interval" : "eval_epochs_interval") +
                      " is set but there is no eval_dataloader");
  }
  if (eval_ != nullptr && !options_.eval_steps_interval && !options_.eval_epochs_interval) {
    options_.eval_epochs_interval = 1;  // the seed: evaluate every epoch by default
  }
  auto positive = [](const std::optional<int64_t>& v, const char* name) {
    if (v && *v < 1) throw ConfigError(std::string(name) + " must be at least 1, got " + std::to_string(*v));
  };
  positive(options_.steps, "steps");
  positive(options_.epochs, "epochs");
  positive(options_.eval_steps_interval, "eval_steps_interval");
  positive(options_.eval_epochs_interval, "eval_epochs_interval");
  positive(options_.max_eval_samples, "max_eval_samples");
  positive(options_.log_steps_interval, "log_steps_interval");
  positive(options_.gradient_accumulation_steps, "gradient_accumulation_steps");
  positive(options_.checkpoint.save_interval, "checkpointer.save_interval");
  positive(options_.checkpoint.save_interval_epochs, "checkpointer.save_interval_epochs");
  if (options_.checkpoint.save_interval && options_.checkpoint.save_interval_epochs) {
    throw ConfigError("checkpointer.save_interval and checkpointer.save_interval_epochs are both set: set only one");
  }
  if (objective_.needs_paired_rows()) {
    throw ConfigError("the objective needs paired rows, which this data loader cannot make yet");
  }

  // With packing, the number of batches differs a little from epoch to epoch (each epoch packs
  // another order); the first epoch's count is checked and reported.
  const int64_t accum = options_.gradient_accumulation_steps;
  const int64_t micro_per_epoch = train_.batches_in_epoch(0);
  steps_per_epoch_ = micro_per_epoch / accum;
  if (steps_per_epoch_ == 0) {
    throw ConfigError("the training data is too small for one optimizer step: " +
                      std::to_string(train_.dataset().size()) + " samples give " +
                      std::to_string(micro_per_epoch) + " batches of " +
                      std::to_string(train_.options().per_device_batch_size) + " rows per epoch, and a step takes " +
                      std::to_string(accum) + " (gradient_accumulation_steps)");
  }
  if (micro_per_epoch % accum != 0) {
    spdlog::warn("{} micro-batches per epoch is not a multiple of gradient_accumulation_steps {}: the last {} of each epoch are skipped",
                 micro_per_epoch, accum, micro_per_epoch % accum);
  }
  if (options_.steps) {
    total_steps_ = *options_.steps;
  } else {
    total_steps_ = 0;
    for (int64_t e = 0; e < options_.epochs.value_or(1); ++e) total_steps_ += train_.batches_in_epoch(e) / accum;
  }

  schedule_ = LrSchedule(options_.schedule, total_steps_);
  flops_per_token_ = model_.stats(train_.options().seq_len).train_flops_per_token;
}

StepRecord Trainer::run_step(int64_t step, Profiler* profiler) {
  using Span = Profiler::Span;
  const auto start = std::chrono::steady_clock::now();
  const int64_t accum = options_.gradient_accumulation_steps;
  const int64_t epoch = train_.epoch();

  // The normaliser counts the whole step's loss tokens before any compute (DESIGN.md).
  std::vector<Batch> micro;
  micro.reserve(static_cast<size_t>(accum));
  double normalizer = 0;
  {
    Span span(profiler, "data", "data");
    for (int64_t i = 0; i < accum; ++i) {
      std::optional<Batch> batch = train_.next();
      if (!batch) throw std::logic_error("Trainer: the data loader ran out of batches mid-step");
      micro.push_back(std::move(*batch));
      normalizer += objective_.normalizer(micro.back());
    }
  }
  {
    Span span(profiler, "all-reduce", "all-reduce normaliser");
    normalizer = all_ranks_sum(normalizer);
  }
  if (!(normalizer > 0)) {
    throw std::runtime_error("step " + std::to_string(step + 1) +
                             ": the batch has no loss tokens (every target masked); check the data and the objective's mode");
  }

  StepRecord record;
  record.step = step + 1;
  record.epoch = epoch;
  model_.zero_grad();
  for (const Batch& batch : micro) {
    const std::vector<float>* reference = nullptr;
    {
      Span span(profiler, "forward", "forward");
      model_.forward(batch, LYRE_FORWARD_TRAIN, logp_);
      if (objective_.needs_reference_logp()) {
        model_.forward(batch, LYRE_FORWARD_ADAPTERS_OFF, reference_logp_);
        reference = &reference_logp_;
      }
    }
    ObjectiveResult result;
    {
      Span span(profiler, "objective", "objective");
      result = objective_.compute(batch, logp_, reference, normalizer, dlogp_);
    }
    {
      Span span(profiler, "backward", "backward");
      model_.backward(batch, dlogp_);
    }
    record.loss += result.loss;
    record.tokens += batch.num_tokens();
    record.positions += batch.size();
    record.samples += batch.num_samples;
  }
  if (!std::isfinite(record.loss)) {
    throw std::runtime_error("step " + std::to_string(step + 1) + " (epoch " + std::to_string(epoch) +
                             "): loss is " + std::to_string(record.loss) +
                             "; lower the learning rate or check the data");
  }

  double squared_norm = 0;
  {
    Span span(profiler, "optimizer", "grad norm");
    squared_norm = optimizer_.grad_squared_norm();
  }
  {
    Span span(profiler, "all-reduce", "all-reduce grad norm");
    record.grad_norm = std::sqrt(all_ranks_sum(squared_norm));
  }
  double scale = 1.0;
  if (options_.max_grad_norm > 0 && record.grad_norm > options_.max_grad_norm) {
    scale = options_.max_grad_norm / (record.grad_norm + 1e-6);
  }
  record.learning_rate = schedule_.lr(step);
  {
    Span span(profiler, "optimizer", "optimizer step");
    optimizer_.step(record.learning_rate, scale);
  }
  record.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return record;
}

void Trainer::log_interval(const std::vector<StepRecord>& interval, const StepRecord& last,
                           TensorBoardWriter* tensorboard) const {
  double seconds = 0, loss = 0;
  int64_t tokens = 0, positions = 0, samples = 0;
  for (const StepRecord& r : interval) {
    seconds += r.step_seconds;
    loss += r.loss;
    tokens += r.tokens;
    positions += r.positions;
    samples += r.samples;
  }
  const double padding = positions > 0 ? 1.0 - static_cast<double>(tokens) / static_cast<double>(positions) : 0.0;
  loss /= static_cast<double>(interval.size());
  const double tokens_per_s = tokens / seconds;
  const double peak = probe_.peak_flops ? probe_.peak_flops() : 0.0;
  const double mfu = peak > 0 ? flops_per_token_ * tokens_per_s / peak : 0.0;
  const uint64_t backend_bytes = probe_.memory_used_bytes ? probe_.memory_used_bytes() : 0;
  spdlog::info(
      "step {}/{} | epoch {} | loss {:.4f} | lr {:.3e} | grad_norm {:.3f} | {:.3f}s/step | {:.0f} tok/s | "
      "{:.1f} samples/s | padding {:.1f}% | mfu {} | mem {} (rss {})",
      last.step, total_steps_, last.epoch, loss, last.learning_rate, last.grad_norm,
      seconds / static_cast<double>(interval.size()), tokens_per_s, samples / seconds, 100.0 * padding,
      peak > 0 ? fmt::format("{:.1f}%", 100.0 * mfu) : std::string("n/a"),
      mib(backend_bytes), mib(resident_bytes()));
  if (tensorboard != nullptr) {
    tensorboard->scalar("train/loss", last.step, loss);
    tensorboard->scalar("train/learning_rate", last.step, last.learning_rate);
    tensorboard->scalar("train/grad_norm", last.step, last.grad_norm);
    tensorboard->scalar("train/tokens_per_second", last.step, tokens_per_s);
    tensorboard->scalar("train/samples_per_second", last.step, samples / seconds);
    tensorboard->scalar("train/padding", last.step, padding);
    if (peak > 0) tensorboard->scalar("train/mfu", last.step, mfu);
    tensorboard->flush();
  }
}

int64_t Trainer::resume(TrainResult& result) {
  const std::string& mode = options_.checkpoint.resume;
  if (checkpointer_ == nullptr || mode == "never") {
    train_.start_epoch(0);
    return 0;
  }
  const int64_t wanted = mode == "auto" ? -1 : std::stoll(mode);
  std::optional<LoadedCheckpoint> loaded = checkpointer_->load(wanted);
  if (!loaded) {
    spdlog::info("checkpointer: no checkpoint to resume from; starting at step 0");
    train_.start_epoch(0);
    return 0;
  }
  const std::string where = checkpoint_layout::step_dir_name(loaded->step);
  ResumePoint point = restore_checkpoint(*loaded, where, options_.run, model_, optimizer_);
  if (point.step > total_steps_) {
    throw ConfigError("checkpoint " + where + " is at step " + std::to_string(point.step) + ", beyond this run's " +
                      std::to_string(total_steps_) + " steps; raise steps, or start elsewhere (checkpointer.save_dir)");
  }
  try {
    train_.restore(point.data);
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint " + where + ": cannot restore the data position: " + e.what());
  }
  if (!point.config_changes.empty()) {
    std::string keys;
    for (const std::string& k : point.config_changes) keys += (keys.empty() ? "" : ", ") + k;
    spdlog::warn("resuming with a config that differs from the checkpoint's in: {}", keys);
  }
  result.steps = std::move(point.history);
  result.evals = std::move(point.evals);
  result.resumed_from_step = point.step;
  result.epochs_started = train_.epoch() + 1;
  spdlog::info("resumed from checkpoint {} (step {} of {}, epoch {}, batch {} of the epoch)", where, point.step,
               total_steps_, train_.epoch(), train_.position());
  return point.step;
}

void Trainer::save_checkpoint(const TrainResult& result, Profiler* profiler) {
  Profiler::Span span(profiler, "checkpoint", "checkpoint save");
  const StepRecord& last = result.steps.back();
  const nlohmann::json state =
      trainer_state_json(options_.run, model_, optimizer_, last.step, train_.epoch(), train_.state(), total_steps_,
                         last.learning_rate, result.steps, result.evals);
  checkpointer_->save(last.step, checkpoint_tensors(model_, optimizer_), state.dump(2));
}

TrainResult Trainer::train() {
  TrainResult result;
  std::vector<StepRecord> interval;
  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (!options_.tensorboard_dir.empty()) {
    tensorboard = std::make_unique<TensorBoardWriter>(options_.tensorboard_dir);
    result.tensorboard_path = tensorboard->path();
    spdlog::info("tensorboard: writing {}", tensorboard->path());
  }
  std::unique_ptr<Profiler> profiler;
  if (options_.profiler) profiler = std::make_unique<Profiler>(*options_.profiler);

  const int64_t first_step = resume(result);
  spdlog::info("training {} steps ({} per epoch, {} micro-batch(es) of {} per step){}", total_steps_,
               steps_per_epoch_, options_.gradient_accumulation_steps, train_.options().per_device_batch_size,
               first_step > 0 ? fmt::format(", from step {}", first_step + 1) : std::string());
  const int64_t accum = options_.gradient_accumulation_steps;
  auto epoch_ends = [&] { return train_.position() + accum > train_.batches_in_epoch(train_.epoch()); };
  const CheckpointOptions& ck = options_.checkpoint;
  int64_t saved_step = first_step;
  try {
    for (int64_t step = first_step; step < total_steps_; ++step) {
      if (epoch_ends()) train_.start_epoch(train_.epoch() + 1);
      const int64_t epoch = train_.epoch();
      if (train_.position() == 0) result.epochs_started = epoch + 1;

      if (profiler) profiler->step_begins(step + 1);
      StepRecord record = run_step(step, profiler.get());
      result.steps.push_back(record);
      interval.push_back(record);
      if (record.step % options_.log_steps_interval == 0 || record.step == total_steps_) {
        log_interval(interval, record, tensorboard.get());
        interval.clear();
      }

      const bool epoch_done = epoch_ends();
      bool run_eval = false;
      if (eval_ && options_.eval_steps_interval) run_eval = record.step % *options_.eval_steps_interval == 0;
      if (eval_ && options_.eval_epochs_interval && epoch_done) {
        run_eval = (epoch + 1) % *options_.eval_epochs_interval == 0;
      }
      if (run_eval) {
        Profiler::Span span(profiler.get(), "eval", "eval");
        EvalRecord e = evaluate();
        e.step = record.step;
        result.evals.push_back(e);
        if (tensorboard) {
          tensorboard->scalar("eval/loss", e.step, e.loss);
          tensorboard->scalar("eval/perplexity", e.step, e.perplexity);
          tensorboard->flush();
        }
      }

      if (checkpointer_ != nullptr) {
        bool save = record.step == total_steps_;
        if (ck.save_interval) save = save || record.step % *ck.save_interval == 0;
        if (!ck.save_interval) save = save || (epoch_done && (epoch + 1) % ck.save_interval_epochs.value_or(1) == 0);
        if (save) {
          save_checkpoint(result, profiler.get());
          saved_step = record.step;
        }
      }
      if (profiler) {
        const std::string path = profiler->step_ends(record.step);
        if (!path.empty()) {
          spdlog::info("profiler: wrote the trace of steps {}-{} to {}", record.step - options_.profiler->max_profile_steps + 1,
                       record.step, path);
          result.trace_path = path;
        }
      }
    }
  } catch (...) {
    // A step that fails while the profiler records is what one wants to look at: keep its trace.
    if (profiler) {
      try {
        const std::string path = profiler->finish();
        if (!path.empty()) spdlog::info("profiler: wrote the trace up to the failure to {}", path);
      } catch (const std::exception& e) {
        spdlog::warn("profiler: could not write the trace: {}", e.what());
      }
    }
    throw;
  }
  if (checkpointer_ != nullptr) {
    checkpointer_->wait();
    if (saved_step > 0) spdlog::info("checkpointer: saved step {}", saved_step);
  }
  if (profiler) {
    const std::string path = profiler->finish();
    if (!path.empty()) {
      spdlog::info("profiler: wrote the trace of the recorded steps to {}", path);
      result.trace_path = path;
    }
  }
  return result;
}

EvalRecord Trainer::evaluate() {
  if (eval_ == nullptr) throw ConfigError("evaluate() needs an eval_dataloader");
  const auto start = std::chrono::steady_clock::now();
  EvalRecord record;
  double loss_sum = 0, normalizer_sum = 0;
  const int64_t limit = options_.max_eval_samples.value_or(INT64_MAX);
  for (int64_t i = 0; i < eval_->batches_per_epoch() && record.samples < limit; ++i) {
    Batch batch = eval_->batch(0, i);
    // Rows are kept while fewer than max_eval_samples samples were read (a packed row holds
    // several: its segments); later rows are blanked so they count nowhere.
    int64_t kept = 0;
    for (int64_t b = 0; b < batch.batch_size; ++b) {
      const size_t row = static_cast<size_t>(b * batch.seq_len);
      int64_t row_samples = 0;
      for (int64_t t = 0; t < batch.seq_len; ++t) {
        const int32_t seg = batch.segment_ids[row + static_cast<size_t>(t)];
        if (seg != 0 && (t == 0 || seg != batch.segment_ids[row + static_cast<size_t>(t) - 1])) ++row_samples;
      }
      if (record.samples + kept < limit) {
        kept += row_samples;
        continue;
      }
      for (int64_t t = 0; t < batch.seq_len; ++t) {
        const size_t k = row + static_cast<size_t>(t);
        batch.targets[k] = -1;
        batch.loss_mask[k] = 0;
        batch.segment_ids[k] = 0;
      }
    }
    batch.num_samples = kept;
    record.samples += kept;
    const double normalizer = objective_.normalizer(batch);
    if (normalizer <= 0) continue;
    model_.forward(batch, LYRE_FORWARD_NO_GRAD, logp_);
    const std::vector<float>* reference = nullptr;
    if (objective_.needs_reference_logp()) {
      model_.forward(batch, LYRE_FORWARD_ADAPTERS_OFF, reference_logp_);
      reference = &reference_logp_;
    }
    // With normaliser 1 the objective returns this batch's sum; the mean comes at the end.
    loss_sum += objective_.compute(batch, logp_, reference, 1.0, dlogp_).loss;
    normalizer_sum += normalizer;
  }
  loss_sum = all_ranks_sum(loss_sum);
  normalizer_sum = all_ranks_sum(normalizer_sum);
  record.loss_tokens = static_cast<int64_t>(normalizer_sum);
  record.loss = normalizer_sum > 0 ? loss_sum / normalizer_sum : 0.0;
  record.perplexity = std::exp(record.loss);
  spdlog::info("eval | loss {:.4f} | perplexity {:.3f} | {} samples, {} loss tokens | {:.1f}s", record.loss,
               record.perplexity, record.samples, record.loss_tokens,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return record;
}

}  // namespace lyre
