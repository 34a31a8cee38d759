// Privacy accounting for DP-SGD: Rényi differential privacy (RDP) of the sampled Gaussian
// mechanism, its conversion to (epsilon, delta), and the noise multiplier for a target epsilon.
//
// What this is: pure math on doubles, the numbers Opacus' RDP accountant reports, written from
// the papers: Mironov, "Rényi Differential Privacy" (2017); Mironov, Talwar, Zhang, "Rényi
// Differential Privacy of the Sampled Gaussian Mechanism" (2019, arXiv:1908.10530); Balle et al.,
// "Hypothesis Testing Interpretations and Renyi Differential Privacy" (2020, arXiv:1905.09982,
// Theorem 21).
// What it is not: the DP-SGD step (per-example clipping, noise, Poisson sampling), nor any other
// accountant (PRV, GDP). Nothing here touches tensors.
//
// The mechanism. One step releases f(S) + N(0, sigma^2 I), where S is a Poisson sample of the
// data (each example kept independently with probability q) and f has L2 sensitivity 1 (the
// clipped gradient sum with the noise multiplier sigma). With mu0 = N(0, sigma^2) and
// mu1 = N(1, sigma^2), its RDP at order alpha > 1 is
//   rdp(alpha) = log(A_alpha) / (alpha - 1),
//   A_alpha = E_{z ~ mu0}[((1 - q) + q mu1(z) / mu0(z))^alpha]
//           = E_{z ~ mu0}[((1 - q) + q exp((2z - 1) / (2 sigma^2)))^alpha].
// T steps compose additively: T * rdp(alpha). (epsilon, delta) follows from the best order:
//   epsilon = min over alpha of  T rdp(alpha) - (log(delta) + log(alpha)) / (alpha - 1)
//                                + log((alpha - 1) / alpha).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace edgetune::optim {

// Opacus' default orders: 1.1, 1.2, ..., 10.9 (each 1 + x / 10.0, x = 1..99, so the integers
// 2..10 among them are exact) and 12, 13, ..., 63. 151 orders, increasing.
std::vector<double> default_rdp_orders();

// log(A_alpha) of the sampled Gaussian mechanism (see the file comment).
// - q == 1 (no sampling): alpha (alpha - 1) / (2 sigma^2), the Gaussian mechanism.
// - integer alpha: the binomial expansion of the integrand (Mironov et al. 2019, Sec. 3.3),
//     A_alpha - 1 = sum_{i=2..alpha} C(alpha, i) q^i (1-q)^(alpha-i) expm1((i^2 - i) / (2 s2)),
//   s2 = sigma^2, all terms positive and summed in log space, then log(A) = log1p(A - 1): accurate
//   to rounding however small q is.
// - fractional alpha: the series of Sec. 3.3 (as Opacus' _compute_log_a_frac): the integral is
//   split at z0 = sigma^2 log(1/q - 1) + 1/2, where the two summands of the integrand are equal,
//   and each side is expanded in the generalized binomial series,
//     A = sum_{i>=0} C(alpha, i) [ q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 s2)) Phi((z0 - i) / s)
//                                + q^(alpha-i) (1-q)^i exp((j^2 - j) / (2 s2)) Phi((j - z0) / s) ],
//   s = sigma, s2 = sigma^2, j = alpha - i, Phi the standard normal CDF. Each term is formed in log
//   space and summed against a running scale, as A - 1 (the O(q) leading terms minus the 1 of
//   Phi(z0 / sigma) + Phi(-z0 / sigma)), so a small q keeps its digits. Past i = alpha the terms
//   alternate in sign and shrink; the series stops at the first of them below e^-25 (1.4e-11)
//   times A - 1, which bounds what is left. log(A) is then within ~1.4e-11 relative (plus
//   rounding, ~1e-16 q / (A - 1)); where A - 1 is below the rounding of its terms (q below
//   ~1e-15) log(A) is 0.
// Requires 0 < q <= 1, 0 < sigma < inf, 1 < alpha < inf (std::invalid_argument otherwise).
double sampled_gaussian_log_a(double q, double sigma, double alpha);

// RDP of one step at order alpha: log(A_alpha) / (alpha - 1). Same requirements.
double sampled_gaussian_rdp(double q, double sigma, double alpha);

// An (epsilon, delta) guarantee and the order it came from.
struct PrivacySpent {
  double epsilon = 0;
  double order = 0;
};

// The Balle et al. 2020 conversion, as Opacus' privacy_analysis.get_privacy_spent: per order
//   eps(alpha) = rdp(alpha) - (log(delta) + log(alpha)) / (alpha - 1) + log((alpha - 1) / alpha)
// and the smallest; on a tie the first such order. NaN entries are passed over; an infinite rdp
// gives an infinite eps; when no order gives a number, epsilon is +inf and order the first one.
// `rdp` is the total over all steps. Requires orders.size() == rdp.size() >= 1, every order > 1,
// 0 < delta < 1 (std::invalid_argument).
PrivacySpent epsilon_from_rdp(std::span<const double> orders, std::span<const double> rdp,
                              double delta);

// epsilon_from_rdp over `orders` of `steps` x sampled_gaussian_rdp(q, sigma, alpha): what Opacus'
// RDPAccountant.get_privacy_spent reports after `steps` steps at (sigma, q).
// Requires the ranges of sampled_gaussian_log_a, steps >= 1 and 0 < delta < 1.
PrivacySpent sampled_gaussian_privacy(double q, double sigma, std::int64_t steps, double delta,
                                      std::span<const double> orders);
// The same at default_rdp_orders().
PrivacySpent sampled_gaussian_privacy(double q, double sigma, std::int64_t steps, double delta);

// The noise multiplier for a target epsilon after `steps` steps at sample rate q, by Opacus'
// get_noise_multiplier search at the default orders: sigma_high starts at 10 and doubles until
// epsilon(sigma_high) <= target_epsilon, then [0, sigma_high] is bisected while
// target_epsilon - epsilon(sigma_high) > tolerance.
// Ensures: epsilon(result) <= target_epsilon and target_epsilon - epsilon(result) <= tolerance
// (unless the bisection reaches the resolution of a double first; then epsilon(result) is
// still <= target_epsilon).
// Requires target_epsilon > 0, tolerance > 0, 0 < q <= 1, steps >= 1, 0 < delta < 1
// (std::invalid_argument). std::domain_error when even sigma = 1e6 does not reach the target
// (the budget is too small for this q, steps and delta).
double noise_multiplier_for_epsilon(double target_epsilon, double delta, double q,
                                    std::int64_t steps, double tolerance = 0.01);

}  // namespace edgetune::optim
