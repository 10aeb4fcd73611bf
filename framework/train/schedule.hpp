// Learning-rate schedules: constant, linear or cosine decay, each after a linear warmup.
#pragma once

#include <cstdint>
#include <string>

namespace lyre {

struct ScheduleOptions {
  enum class Type { constant, linear, cosine } type = Type::constant;
  double learning_rate = 1e-4;  // the peak, reached at the end of warmup
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;    // linear/cosine decay to learning_rate * min_lr_ratio
};

ScheduleOptions::Type parse_schedule_type(const std::string& name);  // throws std::invalid_argument

class LrSchedule {
 public:
  LrSchedule(ScheduleOptions options, int64_t total_steps);
  // The learning rate for optimizer step `step` (0-based). Warmup: peak * (step+1)/warmup_steps,
  // so step 0 never trains with lr 0; then the decay runs from the peak at step warmup_steps to
  // peak * min_lr_ratio at step total_steps - 1.
  double lr(int64_t step) const;

 private:
  ScheduleOptions options_;
  int64_t total_steps_;
};

}  // namespace lyre
