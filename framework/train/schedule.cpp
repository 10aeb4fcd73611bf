#include "train/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace lyre {

ScheduleOptions::Type parse_schedule_type(const std::string& name) {
  if (name == "constant") return ScheduleOptions::Type::constant;
  if (name == "linear") return ScheduleOptions::Type::linear;
  if (name == "cosine") return ScheduleOptions::Type::cosine;
  throw std::invalid_argument("unknown schedule \"" + name + "\" (expected constant, linear or cosine)");
}

LrSchedule::LrSchedule(ScheduleOptions options, int64_t total_steps)
    : options_(options), total_steps_(std::max<int64_t>(total_steps, 1)) {}

double LrSchedule::lr(int64_t step) const {
  const double peak = options_.learning_rate;
  if (step < options_.warmup_steps) {
    return peak * static_cast<double>(step + 1) / static_cast<double>(options_.warmup_steps);
  }
  if (options_.type == ScheduleOptions::Type::constant) return peak;
  const int64_t decay_steps = total_steps_ - 1 - options_.warmup_steps;
  const double progress =
      decay_steps <= 0 ? 1.0
                       : std::clamp(static_cast<double>(step - options_.warmup_steps) / decay_steps, 0.0, 1.0);
  const double floor = peak * options_.min_lr_ratio;
  if (options_.type == ScheduleOptions::Type::linear) return peak + (floor - peak) * progress;
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace lyre
