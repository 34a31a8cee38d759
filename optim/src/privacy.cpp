// RDP of the sampled Gaussian mechanism and its (epsilon, delta) conversion (privacy.h).
// Every term is formed as a logarithm: exp((i^2 - i) / (2 sigma^2)) overflows a double already
// at sigma = 0.5 and i = 40, and the products of powers of q underflow for small q.
#include "edgetune/optim/privacy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <sstream>
#include <stdexcept>
#include <string>

namespace edgetune::optim {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The fractional series stops once a term is below e^-kSeriesStop (1.4e-11) of A - 1: the RDP is
// then exact to ~1e-11 relative, well inside the 1e-6 the accountant is tested to.
constexpr double kSeriesStop = 25;
// log of the smallest positive double: terms below it cannot change a sum.
constexpr double kLogSmallestDouble = -745;
// Past this many terms the fractional series has not converged: its tail falls like
// i^-(alpha + 2), so within ~10^5 terms for every q, sigma and alpha > 1.
constexpr int kMaxSeriesTerms = 10000000;

// Opacus' get_noise_multiplier: the largest sigma tried before the budget is called too small.
constexpr double kMaxSigma = 1e6;

[[noreturn]] void invalid(const std::string& what, double got) {
  std::ostringstream s;
  s << what << ", got " << got;
  throw std::invalid_argument(s.str());
}

void check_mechanism(double q, double sigma) {
  if (!(q > 0 && q <= 1)) invalid("privacy: the sample rate q must be in (0, 1]", q);
  if (!(sigma > 0 && std::isfinite(sigma))) {
    invalid("privacy: the noise multiplier sigma must be > 0 and finite", sigma);
  }
}

void check_order(double alpha) {
  if (!(alpha > 1 && std::isfinite(alpha)))
    invalid("privacy: an RDP order must be > 1 and finite", alpha);
}

void check_delta(double delta) {
  if (!(delta > 0 && delta < 1)) invalid("privacy: delta must be in (0, 1)", delta);
}

void check_steps(std::int64_t steps) {
  if (steps < 1) invalid("privacy: steps must be >= 1", static_cast<double>(steps));
}

// A sum of signed terms given by their logarithms, kept as scale * e^log_scale with the largest
// term seen so far as the scale, so neither overflows nor underflows.
class LogSum {
 public:
  void add(double log_term, bool positive) {
    if (log_term == -kInf) return;
    if (log_term > log_scale_) {
      scale_ *= std::exp(log_scale_ - log_term);
      log_scale_ = log_term;
      scale_ += positive ? 1.0 : -1.0;
    } else {
      const double t = std::exp(log_term - log_scale_);
      scale_ += positive ? t : -t;
    }
  }
  // log of the sum, -inf when it is not positive. Callers sum quantities that are >= 0, so a sum
  // <= 0 is one that rounding has cancelled to nothing.
  double log() const { return scale_ > 0 ? log_scale_ + std::log(scale_) : -kInf; }
  // log |sum|, -inf for 0.
  double log_abs() const { return log_scale_ + std::log(std::fabs(scale_)); }

 private:
  double log_scale_ = -kInf;
  double scale_ = 0;
};

// log(e^x - 1) for x > 0.
double log_expm1(double x) {
  return x > 30 ? x + std::log1p(-std::exp(-x)) : std::log(std::expm1(x));
}

// log(1 + e^x).
double log1p_exp(double x) {
  return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

// log(erfc(x) / 2) = log(Phi(-sqrt(2) x)). erfc is a normal double up to x = 26.5; from 25 on,
// the asymptotic series erfc(x) = e^(-x^2) / (x sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2x^2)^k,
// whose sixth term is below 3e-15 there.
double log_half_erfc(double x) {
  if (x < 25) return std::log(0.5 * std::erfc(x));
  const double u = 1 / (2 * x * x);
  double series = 1, term = 1;
  for (int k = 1; k <= 5; ++k) {
    term *= -(2 * k - 1) * u;
    series += term;
  }
  return -x * x - std::log(x) - 0.5 * std::log(std::numbers::pi) + std::log(series) -
         std::numbers::ln2;
}

// The binomial sum for integer alpha >= 2 (privacy.h).
double log_a_integer(double q, double sigma, int alpha) {
  const double log_q = std::log(q), log_1mq = std::log1p(-q);
  const double two_s2 = 2 * sigma * sigma;
  LogSum a_minus_1;
  double log_binom = std::log(0.5 * alpha * (alpha - 1));  // log C(alpha, 2)
  for (int i = 2; i <= alpha; ++i) {
    const double di = i;
    a_minus_1.add(
        log_binom + di * log_q + (alpha - di) * log_1mq + log_expm1((di * di - di) / two_s2), true);
    if (i < alpha) log_binom += std::log(static_cast<double>(alpha - i)) - std::log(di + 1);
  }
  return log1p_exp(a_minus_1.log());
}

// The two-sided series for fractional alpha (privacy.h), summed as A - 1 so that a small q
// keeps its digits: the i = 0 term of the z < z0 side, (1 - q)^alpha Phi(z0 / sigma), enters as
// ((1 - q)^alpha - 1) Phi(z0 / sigma) and the rest of the 1, Phi(-z0 / sigma), is subtracted.
// Those terms are O(q) and cancel against the i = 1 term to the O(q^2) of A - 1, so rounding
// costs ~1e-16 q instead of ~1e-16 in A - 1.
double log_a_fractional(double q, double sigma, double alpha) {
  const double log_q = std::log(q), log_1mq = std::log1p(-q);
  const double two_s2 = 2 * sigma * sigma;
  const double z0 = sigma * sigma * (log_1mq - log_q) + 0.5;
  const double inv = 1 / (std::numbers::sqrt2 * sigma);
  LogSum a_minus_1;
  a_minus_1.add(std::log(-std::expm1(alpha * log_1mq)) + log_half_erfc(-z0 * inv), false);
  a_minus_1.add(log_half_erfc(z0 * inv), false);
  double log_binom = 0;  // log |C(alpha, i)|, from C(alpha, 0) = 1
  bool positive = true;  // the sign of C(alpha, i)
  for (int i = 0; i < kMaxSeriesTerms; ++i) {
    const double di = i, j = alpha - di;
    const double s0 = log_binom + di * log_q + j * log_1mq + (di * di - di) / two_s2 +
                      log_half_erfc((di - z0) * inv);
    const double s1 =
        log_binom + j * log_q + di * log_1mq + (j * j - j) / two_s2 + log_half_erfc((z0 - j) * inv);
    if (i > 0) a_minus_1.add(s0, positive);
    a_minus_1.add(s1, positive);
    // Past i = alpha the terms alternate in sign and shrink, so what is left is smaller than
    // the last term: stop when that is e^-kSeriesStop of A - 1 (or below any double).
    if (di > alpha &&
        std::max(s0, s1) < std::max(a_minus_1.log_abs() - kSeriesStop, kLogSmallestDouble)) {
      return log1p_exp(a_minus_1.log());
    }
    log_binom += std::log(std::fabs(alpha - di)) - std::log(di + 1);
    if (alpha - di < 0) positive = !positive;
  }
  std::ostringstream s;
  s << "privacy: the RDP series at q " << q << ", sigma " << sigma << ", order " << alpha
    << " did not converge in " << kMaxSeriesTerms << " terms";
  throw std::runtime_error(s.str());
}

}  // namespace

std::vector<double> default_rdp_orders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1 + x / 10.0);
  for (int a = 12; a < 64; ++a) orders.push_back(a);
  return orders;
}

double sampled_gaussian_log_a(double q, double sigma, double alpha) {
  check_mechanism(q, sigma);
  check_order(alpha);
  if (q == 1) return alpha * (alpha - 1) / (2 * sigma * sigma);
  if (alpha == std::floor(alpha) && alpha <= std::numeric_limits<int>::max()) {
    return log_a_integer(q, sigma, static_cast<int>(alpha));
  }
  return log_a_fractional(q, sigma, alpha);
}

double sampled_gaussian_rdp(double q, double sigma, double alpha) {
  return sampled_gaussian_log_a(q, sigma, alpha) / (alpha - 1);
}

PrivacySpent epsilon_from_rdp(std::span<const double> orders, std::span<const double> rdp,
                              double delta) {
  if (orders.empty() || orders.size() != rdp.size()) {
    std::ostringstream s;
    s << "privacy: epsilon_from_rdp needs one RDP value per order, got " << orders.size()
      << " orders and " << rdp.size() << " values";
    throw std::invalid_argument(s.str());
  }
  check_delta(delta);
  for (double alpha : orders) check_order(alpha);
  const double log_delta = std::log(delta);
  PrivacySpent best{kInf, orders[0]};
  bool found = false;
  for (std::size_t k = 0; k < orders.size(); ++k) {
    const double alpha = orders[k];
    const double eps =
        rdp[k] - (log_delta + std::log(alpha)) / (alpha - 1) + std::log1p(-1 / alpha);
    if (std::isnan(eps)) continue;
    if (!found || eps < best.epsilon) best = {eps, alpha};
    found = true;
  }
  return best;
}

PrivacySpent sampled_gaussian_privacy(double q, double sigma, std::int64_t steps, double delta,
                                      std::span<const double> orders) {
  check_mechanism(q, sigma);
  check_steps(steps);
  check_delta(delta);
  std::vector<double> rdp;
  rdp.reserve(orders.size());
  for (double alpha : orders)
    rdp.push_back(static_cast<double>(steps) * sampled_gaussian_rdp(q, sigma, alpha));
  return epsilon_from_rdp(orders, rdp, delta);
}

PrivacySpent sampled_gaussian_privacy(double q, double sigma, std::int64_t steps, double delta) {
  const std::vector<double> orders = default_rdp_orders();
  return sampled_gaussian_privacy(q, sigma, steps, delta, orders);
}

double noise_multiplier_for_epsilon(double target_epsilon, double delta, double q,
                                    std::int64_t steps, double tolerance) {
  if (!(target_epsilon > 0 && std::isfinite(target_epsilon))) {
    invalid("privacy: the target epsilon must be > 0 and finite", target_epsilon);
  }
  if (!(tolerance > 0)) invalid("privacy: the epsilon tolerance must be > 0", tolerance);
  check_mechanism(q, 1);
  check_steps(steps);
  check_delta(delta);
  const std::vector<double> orders = default_rdp_orders();
  auto epsilon = [&](double sigma) {
    return sampled_gaussian_privacy(q, sigma, steps, delta, orders).epsilon;
  };
  double sigma_low = 0, sigma_high = 10, eps_high = kInf;
  while (eps_high > target_epsilon) {
    sigma_high *= 2;
    if (sigma_high > kMaxSigma) {
      std::ostringstream s;
      s << "privacy: no noise multiplier up to " << kMaxSigma << " reaches epsilon "
        << target_epsilon << " at sample rate " << q << ", " << steps << " steps and delta "
        << delta << "; allow a larger epsilon or delta, or fewer steps";
      throw std::domain_error(s.str());
    }
    eps_high = epsilon(sigma_high);
  }
  while (target_epsilon - eps_high > tolerance) {
    const double sigma = 0.5 * (sigma_low + sigma_high);
    if (sigma == sigma_low || sigma == sigma_high) break;
    const double eps = epsilon(sigma);
    if (eps < target_epsilon) {
      sigma_high = sigma;
      eps_high = eps;
    } else {
      sigma_low = sigma;
    }
  }
  return sigma_high;
}

}  // namespace edgetune::optim
