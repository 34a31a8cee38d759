// `edgetune privacy`: the privacy a DP-SGD run spends, for planning before training. Given the
// sample rate q (batch / N), the noise multiplier, the number of steps and delta, it prints the
// (epsilon, delta) guarantee of the RDP accountant (optim/privacy.h) and the RDP order it came
// from; given --target-epsilon instead of the noise multiplier, it prints the noise multiplier
// Opacus' get_noise_multiplier search finds for it. It trains nothing and reads no files.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <sstream>

#include "commands.h"
#include "edgetune/optim/privacy.h"

namespace edgetune::cli {
namespace {

struct PrivacyArgs {
  double sample_rate = 0;
  double noise_multiplier = 0;
  double target_epsilon = 0;
  std::int64_t steps = 0;
  double delta = 0;
};

[[noreturn]] void bad(const char* what, double got) {
  std::ostringstream s;
  s << "privacy: " << what << ", got " << got;
  throw UsageError(s.str());
}

int run(const PrivacyArgs& a, bool by_noise, bool by_target) {
  if (by_noise == by_target) {
    throw UsageError("privacy: give either --noise-multiplier S or --target-epsilon E");
  }
  if (!(a.sample_rate > 0 && a.sample_rate <= 1)) {
    bad("--sample-rate must be in (0, 1] (batch size / number of examples)", a.sample_rate);
  }
  if (a.steps < 1) bad("--steps must be at least 1", static_cast<double>(a.steps));
  if (!(a.delta > 0 && a.delta < 1))
    bad("--delta must be in (0, 1), e.g. 1 / number of examples", a.delta);
  double sigma = a.noise_multiplier;
  if (by_noise) {
    if (!(sigma > 0 && std::isfinite(sigma))) bad("--noise-multiplier must be > 0", sigma);
  } else {
    if (!(a.target_epsilon > 0 && std::isfinite(a.target_epsilon))) {
      bad("--target-epsilon must be > 0", a.target_epsilon);
    }
    sigma = optim::noise_multiplier_for_epsilon(a.target_epsilon, a.delta, a.sample_rate, a.steps);
    std::printf("noise multiplier: %.10g\n", sigma);
  }
  const optim::PrivacySpent spent =
      optim::sampled_gaussian_privacy(a.sample_rate, sigma, a.steps, a.delta);
  std::printf("epsilon: %.6g\nbest order: %g\n", spent.epsilon, spent.order);
  return 0;
}

const RegisterCommand kRegister{
    "privacy",
    "the (epsilon, delta) a DP-SGD run spends (RDP accountant), or the noise for a target epsilon",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<PrivacyArgs>();
      app.add_option("--sample-rate", a->sample_rate,
                     "probability q that an example is in a step's batch (batch size / examples)")
          ->required();
      CLI::Option* noise = app.add_option("--noise-multiplier", a->noise_multiplier,
                                          "noise standard deviation / clipping norm (sigma)");
      CLI::Option* target = app.add_option("--target-epsilon", a->target_epsilon,
                                           "find the noise multiplier that spends this epsilon");
      noise->excludes(target);
      app.add_option("--steps", a->steps, "number of DP-SGD steps")->required();
      app.add_option("--delta", a->delta, "delta of the (epsilon, delta) guarantee")->required();
      return [a, noise, target] { return run(*a, noise->count() > 0, target->count() > 0); };
    }};

}  // namespace
}  // namespace edgetune::cli
