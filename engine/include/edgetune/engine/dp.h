// DP-SGD (Abadi et al. 2016, as Opacus runs it): its settings, its plan for a run (sample rate,
// noise multiplier, the batch the planner plans for), and Poisson sampling of its batches. The
// private step itself is run.h's dp_train_step, the accountant optim/privacy.h.
//
// What a run with DP does, per optimizer step:
//   - Poisson sampling: each training row is in the step's batch independently with probability
//     q = batch_size / N (N training rows), so batch sizes vary (mean qN, variance qN(1 - q));
//     an epoch is round(N / batch_size) steps;
//   - each example's gradient over all trainable tensors together is clipped to norm C
//     (factor min(1, C / (norm + 1e-6)), as Opacus), the clipped gradients summed, Gaussian noise
//     N(0, S^2 C^2) added to every coordinate, and the sum divided by the expected batch size qN;
//   - the accountant (optim/privacy.h) gives the (epsilon, delta) spent after the steps so far.
// Sampling and noise come from one seeded generator whose state is in the run's state file, so a
// resumed run draws what an uninterrupted one would.
//
// Each example's gradient is had one of two ways (DpClipping, chosen per method by finetune.h's
// dp_clipping_for):
//   - per example in one backward (PerExample): each micro-batch runs one forward and one backward,
//     and the ops that accumulate a trainable tensor's gradient (linear: W and b; layer_norm: gamma
//     and beta) add each example's part into its own row of a (B, numel) buffer (autograd.h's
//     PerExampleGrads). A tensor used by several ops sums its parts per example before any norm is
//     taken. Costs B copies of the trainable tensors per micro-batch (counted by the accountant,
//     planned by the planner), and no extra arithmetic over a plain backward. Used by LoRA,
//     Houlsby adapters, BitFit and the head, whose tensors all sit in linear and layer_norm ops.
//   - example at a time (ExampleAtATime): every row runs alone, forward and backward. Any op; the
//     exact reference of the other, and what full fine-tuning uses (its embedding tables are
//     gathered by rows, and B copies of the whole model would not be cheap anyway).
// Both clip and sum the same per-example gradients; they differ by float32 rounding only (and by
// dropout's masks, drawn per micro-batch rather than per row).
// What this is not: ghost clipping (norms from the Gram matrices without per-example gradients);
// user-level or federated (client-level) privacy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "edgetune/data/shuffle.h"
#include "edgetune/engine/settings.h"

namespace edgetune {

// The DP settings of a training run. DP is on when a noise multiplier or a target epsilon is given.
struct DpSettings {
  std::optional<double> noise_multiplier;  // S
  std::optional<double> target_epsilon;    // find S for the planned steps instead
  double max_grad_norm = 1.0;              // C, per example
  double delta = 0;                        // 0: 1 / N

  bool enabled() const { return noise_multiplier.has_value() || target_epsilon.has_value(); }

  template <class Self, class V>
  static void fields(Self& c, V& v) {
    using namespace settings;
    v("dp_noise_multiplier", c.noise_multiplier,
      "DP-SGD: Gaussian noise of S times --dp-max-grad-norm on the summed clipped gradients", at_least(0));
    v("dp_target_epsilon", c.target_epsilon,
      "DP-SGD: find the noise multiplier that spends this epsilon over the planned steps", above(0));
    v("dp_max_grad_norm", c.max_grad_norm, "DP-SGD: clip each example's whole gradient to this norm",
      above(0));
    v("dp_delta", c.delta, "DP-SGD: the delta of (epsilon, delta) (0: 1 / training rows)", below(0, 1));
  }
};

// How dp_gradient (run.h) has each example's gradient (see above).
enum class DpClipping {
  ExampleAtATime,  // one forward and backward per row: any method
  PerExample,      // one forward and backward per micro-batch: linear and layer_norm tensors only
};

// Per step, a batch larger than this bound happens with probability at most kDpBatchTail.
inline constexpr double kDpBatchTail = 1e-6;

// What a DP run uses, worked out from its settings and data once, before training.
struct DpPlan {
  double sample_rate = 0;       // q = batch_size / N
  double noise_multiplier = 0;  // S (given, or found for target_epsilon)
  double max_grad_norm = 1;     // C
  double delta = 0;
  double expected_batch = 0;    // qN = batch_size: the divisor of the noisy sum
  std::int64_t steps_per_epoch = 0;   // round(N / batch_size), at least 1
  std::int64_t likely_max_batch = 0;  // likely_batch_bound(N, q, kDpBatchTail)
  DpClipping clipping = DpClipping::ExampleAtATime;  // set by the trainer from the method

  // The (epsilon, delta) spent after `steps` steps: epsilon (+inf for S = 0; 0 for no steps).
  double epsilon(std::int64_t steps) const;
  // "DP-SGD: Poisson sampling q 0.0042, noise multiplier 1.1, clipping 1; epsilon 2.98 at delta
  //  4.2e-05 after 720 steps; batches up to 42 rows planned (larger: p < 1e-06 a step)"
  std::string describe(std::int64_t total_steps) const;
};

// "epsilon 2.98 at delta 1.5e-05" ("epsilon inf" without noise).
std::string format_privacy(double epsilon, double delta);

// The plan for N = rows training rows at batch_size, over `epochs` epochs or exactly max_steps
// steps (> 0). A target epsilon is met by optim::noise_multiplier_for_epsilon over the run's
// steps. Throws settings::SettingError naming the setting for a noise multiplier given together
// with a target epsilon, a batch larger than the data, or grad_accum != 1 (DP's batch is the
// Poisson sample: accumulate by raising batch_size); std::domain_error from the search when no
// noise reaches the target.
DpPlan plan_dp(const DpSettings& settings, std::size_t rows, std::int64_t batch_size,
               std::int64_t grad_accum, std::int64_t epochs, std::int64_t max_steps);

// The smallest b with P(Binomial(n, q) > b) <= tail: the largest batch Poisson sampling of n rows
// at rate q gives, but with probability at most `tail`. Requires 0 < q <= 1, 0 < tail < 1.
std::int64_t likely_batch_bound(std::size_t n, double q, double tail);

// A Poisson sample of `rows`: each kept, in order, with probability q (one rng.uniform() a row).
std::vector<std::size_t> poisson_sample(std::span<const std::size_t> rows, double q, data::Rng& rng);

}  // namespace edgetune
