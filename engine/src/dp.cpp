// DP-SGD's plan and sampling (see dp.h); the private step is in run.cpp beside train_step.
#include "edgetune/engine/dp.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "edgetune/optim/privacy.h"

namespace edgetune {

double DpPlan::epsilon(std::int64_t steps) const {
  if (steps <= 0) return 0;
  if (noise_multiplier == 0) return std::numeric_limits<double>::infinity();
  return optim::sampled_gaussian_privacy(sample_rate, noise_multiplier, steps, delta).epsilon;
}

std::string format_privacy(double epsilon, double delta) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "epsilon %.4g at delta %.3g", epsilon, delta);
  return buf;
}

std::string DpPlan::describe(std::int64_t total_steps) const {
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "DP-SGD: Poisson sampling q %.4g, noise multiplier %.6g, clipping %.6g; %s after %lld steps; "
                "batches up to %lld rows planned (larger: p < %.0e a step)",
                sample_rate, noise_multiplier, max_grad_norm, format_privacy(epsilon(total_steps), delta).c_str(),
                static_cast<long long>(total_steps), static_cast<long long>(likely_max_batch), kDpBatchTail);
  return buf;
}

DpPlan plan_dp(const DpSettings& s, std::size_t rows, std::int64_t batch_size, std::int64_t grad_accum,
               std::int64_t epochs, std::int64_t max_steps) {
  if (s.noise_multiplier && s.target_epsilon) {
    throw settings::SettingError(
        "dp_target_epsilon: give either --dp-noise-multiplier or --dp-target-epsilon, not both");
  }
  if (grad_accum != 1) {
    throw settings::SettingError(
        "grad_accum: DP-SGD's batch is one Poisson sample per step; raise --batch-size instead of --grad-accum");
  }
  const auto n = static_cast<std::int64_t>(rows);
  if (batch_size > n) {
    throw settings::SettingError("batch_size: DP-SGD samples batch_size / rows of the data a step; " +
                                 std::to_string(batch_size) + " is more than the " + std::to_string(n) +
                                 " training rows");
  }
  DpPlan p;
  p.sample_rate = static_cast<double>(batch_size) / static_cast<double>(n);
  p.max_grad_norm = s.max_grad_norm;
  p.delta = s.delta > 0 ? s.delta : 1.0 / static_cast<double>(n);
  p.expected_batch = static_cast<double>(batch_size);
  p.steps_per_epoch = std::max<std::int64_t>(1, std::llround(static_cast<double>(n) / static_cast<double>(batch_size)));
  p.likely_max_batch = likely_batch_bound(rows, p.sample_rate, kDpBatchTail);
  const std::int64_t steps = max_steps > 0 ? max_steps : p.steps_per_epoch * epochs;
  p.noise_multiplier = s.noise_multiplier
                           ? *s.noise_multiplier
                           : optim::noise_multiplier_for_epsilon(*s.target_epsilon, p.delta, p.sample_rate, steps);
  return p;
}

// P(X >= k) for X ~ Binomial(n, q), summed from the top (the terms there underflow to 0) down to
// the first k where it passes the tail.
std::int64_t likely_batch_bound(std::size_t n, double q, double tail) {
  if (!(q > 0 && q <= 1) || !(tail > 0 && tail < 1)) {
    throw std::invalid_argument("likely_batch_bound: needs 0 < q <= 1 and 0 < tail < 1");
  }
  const auto nn = static_cast<double>(n);
  if (q == 1) return static_cast<std::int64_t>(n);
  const double log_q = std::log(q), log_1q = std::log1p(-q), lg_n = std::lgamma(nn + 1);
  double above = 0;  // P(X > k)
  for (std::int64_t k = static_cast<std::int64_t>(n); k > 0; --k) {
    const auto kk = static_cast<double>(k);
    above += std::exp(lg_n - std::lgamma(kk + 1) - std::lgamma(nn - kk + 1) + kk * log_q + (nn - kk) * log_1q);
    if (above > tail) return k;
  }
  return 0;
}

std::vector<std::size_t> poisson_sample(std::span<const std::size_t> rows, double q, data::Rng& rng) {
  std::vector<std::size_t> out;
  out.reserve(static_cast<std::size_t>(static_cast<double>(rows.size()) * q * 1.5) + 8);
  for (const std::size_t r : rows) {
    if (rng.uniform() < q) out.push_back(r);
  }
  return out;
}

}  // namespace edgetune
