// Learning-rate schedules as in Hugging Face transformers (optimization.py):
// get_constant_schedule_with_warmup, get_linear_schedule_with_warmup and
// get_cosine_schedule_with_warmup (num_cycles 0.5), with torch's LambdaLR semantics: the
// optimizer step with 0-based index k runs with lr = base_lr * factor(k), so the first step of a
// schedule with warmup runs with lr 0, as in the Trainer.
//
// What this is: the multiplier of the base lr, a pure function of the step index (nothing to save
// in a checkpoint but the step count). What it is not: an optimizer hook; the caller passes
// base_lr * factor(optimizer.steps()) to Optimizer::step.
#pragma once

#include <cstdint>

namespace edgetune::optim {

class Schedule {
 public:
  enum class Kind {
    // factor = k / w during warmup (k < w), then 1.
    Constant,
    // k / w during warmup, then max(0, (n - k) / max(1, n - w)): 1 at the end of warmup, 0 at n.
    Linear,
    // k / w during warmup, then with p = (k - w) / max(1, n - w):
    // max(0, 0.5 * (1 + cos(pi * 0.5 * 2 * p))): half a cosine from 1 to 0 at n. As in Hugging
    // Face, p is not clamped: past n the factor rises again.
    Cosine,
  };

  // w = warmup_steps, n = total_steps (the number of optimizer steps of the run; unused by
  // Constant). Requires warmup_steps >= 0 and total_steps >= 0; throws std::invalid_argument.
  Schedule(Kind kind, std::int64_t warmup_steps, std::int64_t total_steps);

  // The multiplier of the base lr for the optimizer step with 0-based index k (requires k >= 0),
  // computed with the same double operations, in the same order, as the Hugging Face lambda.
  double factor(std::int64_t step) const;

  Kind kind() const { return kind_; }
  std::int64_t warmup_steps() const { return warmup_; }
  std::int64_t total_steps() const { return total_; }

 private:
  Kind kind_;
  std::int64_t warmup_;
  std::int64_t total_;
};

// Warmup steps from a warmup ratio as the Trainer computes them: ceil(total_steps * ratio).
// Requires 0 <= ratio <= 1 and total_steps >= 0; throws std::invalid_argument.
std::int64_t warmup_steps_from_ratio(std::int64_t total_steps, double ratio);

}  // namespace edgetune::optim
