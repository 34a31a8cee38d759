// Hugging Face learning-rate schedules (schedule.h): each factor is computed with the double
// operations of the lambda in transformers/optimization.py, in the same order, so base_lr *
// factor(k) is the very lr that torch's LambdaLR hands the optimizer at step k.
#include "edgetune/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace edgetune::optim {

Schedule::Schedule(Kind kind, std::int64_t warmup_steps, std::int64_t total_steps)
    : kind_(kind), warmup_(warmup_steps), total_(total_steps) {
  if (warmup_steps < 0) {
    throw std::invalid_argument("schedule: warmup_steps must be >= 0, got " +
                                std::to_string(warmup_steps));
  }
  if (total_steps < 0) {
    throw std::invalid_argument("schedule: total_steps must be >= 0, got " +
                                std::to_string(total_steps));
  }
}

double Schedule::factor(std::int64_t step) const {
  if (step < 0) {
    throw std::invalid_argument(
        "schedule: step must be >= 0 (the 0-based index of the optimizer "
        "step), got " +
        std::to_string(step));
  }
  // Warmup is the same in all three lambdas: float(step) / float(max(1, warmup)).
  if (step < warmup_) {
    return static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup_));
  }
  // The integer differences are taken before converting, as Python does.
  const double decay_steps = static_cast<double>(std::max<std::int64_t>(1, total_ - warmup_));
  switch (kind_) {
    case Kind::Constant:
      return 1.0;
    case Kind::Linear:
      return std::max(0.0, static_cast<double>(total_ - step) / decay_steps);
    case Kind::Cosine: {
      const double num_cycles = 0.5;
      const double progress = static_cast<double>(step - warmup_) / decay_steps;
      return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * num_cycles * 2.0 * progress)));
    }
  }
  throw std::logic_error("schedule: unknown kind");
}

std::int64_t warmup_steps_from_ratio(std::int64_t total_steps, double ratio) {
  if (!(ratio >= 0 && ratio <= 1)) {
    throw std::invalid_argument(
        "warmup ratio must lie in [0, 1] (a fraction of the total "
        "steps), got " +
        std::to_string(ratio));
  }
  if (total_steps < 0) {
    throw std::invalid_argument("warmup ratio: total_steps must be >= 0, got " +
                                std::to_string(total_steps));
  }
  return static_cast<std::int64_t>(std::ceil(static_cast<double>(total_steps) * ratio));
}

}  // namespace edgetune::optim
