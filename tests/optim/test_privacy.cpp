// The RDP accountant (privacy.h) against values computed independently of its series: the
// numerical integration of the defining integral by tests/golden/privacy/make_rdp_golden.py,
// the worked example of Opacus' documentation, and its noise multiplier search.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

#include "edgetune/optim/privacy.h"
#include "test_support.h"

using namespace edgetune::optim;

TEST_CASE("default orders are Opacus' 1.1..10.9 and 12..63", "[privacy]") {
  const std::vector<double> orders = default_rdp_orders();
  REQUIRE(orders.size() == 151);
  CHECK(orders.front() == 1.1);
  CHECK(orders[98] == 10.9);
  CHECK(orders[99] == 12);
  CHECK(orders.back() == 63);
  // 1 + 10 / 10.0 is exactly 2: the integer orders among the first 99 take the binomial sum.
  CHECK(orders[9] == 2);
}

// Each case's RDP must be within 1e-6 relative of the integral; the fractional cases check the
// two-sided series, the integer ones the binomial sum, on q from 0.001 to 0.9 and sigma from
// 0.6 to 8.
TEST_CASE("RDP matches the numerical integration of A_alpha", "[privacy][golden]") {
  const auto path = edgetune::test::golden_dir() / "privacy" / "rdp_golden.json";
  std::ifstream in(path);
  REQUIRE(in.good());
  const auto golden = nlohmann::json::parse(in);
  REQUIRE(golden.at("format") == "edgetune-rdp-golden");
  REQUIRE(golden.at("version") == 1);
  const auto& cases = golden.at("cases");
  REQUIRE(cases.size() >= 100);
  double worst = 0;
  std::size_t fractional = 0;
  for (const auto& c : cases) {
    const double q = c.at("q"), sigma = c.at("sigma"), alpha = c.at("alpha"), want = c.at("rdp");
    const double got = sampled_gaussian_rdp(q, sigma, alpha);
    const double rel = std::fabs(got - want) / std::fabs(want);
    INFO("q " << q << " sigma " << sigma << " alpha " << alpha << ": " << got << " vs " << want);
    CHECK(rel <= 1e-6);
    worst = std::max(worst, rel);
    if (alpha != std::floor(alpha)) ++fractional;
  }
  REQUIRE(fractional >= cases.size() / 2);
  std::printf(
      "RDP vs numerical integration: %zu cases (%zu fractional orders), max relative error %.3g\n",
      cases.size(), fractional, worst);
}

TEST_CASE("the fractional series and the binomial sum meet at integer orders", "[privacy]") {
  // Two different expansions of the same integral: at alpha = n + 1e-9 the series must give
  // what the binomial sum gives at n, up to the slope d log(A) / d alpha times 1e-9.
  for (double q : {0.003, 0.1, 0.6}) {
    for (double sigma : {0.8, 1.5, 4.0}) {
      for (double n : {2.0, 3.0, 7.0, 20.0}) {
        const double at_n = sampled_gaussian_log_a(q, sigma, n);
        const double slope = (sampled_gaussian_log_a(q, sigma, n + 1e-3) -
                              sampled_gaussian_log_a(q, sigma, n - 1e-3)) /
                             2e-3;
        const double near = sampled_gaussian_log_a(q, sigma, n + 1e-9);
        INFO("q " << q << " sigma " << sigma << " n " << n);
        CHECK(near == Approx(at_n + 1e-9 * slope).epsilon(1e-7));
      }
    }
  }
}

TEST_CASE("without sampling the mechanism is the Gaussian one: alpha / (2 sigma^2)", "[privacy]") {
  for (double alpha : {1.1, 2.0, 7.5, 63.0}) {
    CHECK(sampled_gaussian_rdp(1.0, 1.3, alpha) == Approx(alpha / (2 * 1.3 * 1.3)).epsilon(1e-15));
  }
}

// The worked example in the module documentation of Opacus' RDP analysis,
// https://github.com/pytorch/opacus/blob/1235e1e1136b6a066e26a5011f3de42bf7dd19c0/opacus/accountants/analysis/rdp.py
// (the same example code is on https://opacus.ai/api/privacy_analysis.html): two phases,
// (q 1e-5, sigma 1.0, 10 steps) and (q 1e-4, sigma 3.0, 4 steps), orders 2..32, delta 1e-5:
//   >>> float(epsilon), int(opt_order)  # doctest: +NUMBER
//   (0.336, 23)
TEST_CASE("Opacus' documented example: epsilon 0.336 at order 23", "[privacy][opacus]") {
  std::vector<double> orders, rdp;
  for (int a = 2; a <= 32; ++a) {
    orders.push_back(a);
    rdp.push_back(10 * sampled_gaussian_rdp(1e-5, 1.0, a) + 4 * sampled_gaussian_rdp(1e-4, 3.0, a));
  }
  const PrivacySpent spent = epsilon_from_rdp(orders, rdp, 1e-5);
  std::printf("Opacus rdp.py example: epsilon %.6f at order %g (documented: 0.336 at 23)\n",
              spent.epsilon, spent.order);
  CHECK(std::round(spent.epsilon * 1000) / 1000 == 0.336);
  CHECK(spent.order == 23);
}

TEST_CASE("epsilon_from_rdp: the Balle et al. formula, NaN passed over, ties to the first",
          "[privacy]") {
  const std::vector<double> orders{2, 4, 8};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const double delta = 1e-5;
  auto eps = [&](double alpha, double r) {
    return r - (std::log(delta) + std::log(alpha)) / (alpha - 1) + std::log((alpha - 1) / alpha);
  };
  const std::vector<double> rdp{0.5, nan, 1.0};
  const PrivacySpent a = epsilon_from_rdp(orders, rdp, delta);
  const double e2 = eps(2, 0.5), e8 = eps(8, 1.0);
  CHECK(a.epsilon == Approx(std::min(e2, e8)).epsilon(1e-14));
  CHECK(a.order == (e2 < e8 ? 2 : 8));
  const std::vector<double> all_inf{inf, inf, inf};
  const PrivacySpent b = epsilon_from_rdp(orders, all_inf, delta);
  CHECK(b.epsilon == inf);
  CHECK(b.order == 2);
  const std::vector<double> one{1.0};
  CHECK_THROWS_AS(epsilon_from_rdp(orders, one, delta), std::invalid_argument);
}

TEST_CASE("noise_multiplier_for_epsilon lands within the tolerance below the target",
          "[privacy][bisection]") {
  struct Case {
    double target, delta, q;
    std::int64_t steps;
  };
  for (const Case& c : {Case{8, 1e-5, 0.004, 3600}, Case{3, 1.0 / 67349, 32.0 / 67349, 10523},
                        Case{1, 1e-5, 0.01, 1000}, Case{0.5, 1e-6, 0.001, 50000}}) {
    const double sigma = noise_multiplier_for_epsilon(c.target, c.delta, c.q, c.steps);
    const double eps = sampled_gaussian_privacy(c.q, sigma, c.steps, c.delta).epsilon;
    INFO("target " << c.target << " q " << c.q << " steps " << c.steps << ": sigma " << sigma
                   << " gives epsilon " << eps);
    CHECK(eps <= c.target);
    CHECK(c.target - eps <= 0.01);
    // A tighter tolerance is honoured too, with a sigma at least as large.
    const double tight = noise_multiplier_for_epsilon(c.target, c.delta, c.q, c.steps, 1e-4);
    const double eps_tight = sampled_gaussian_privacy(c.q, tight, c.steps, c.delta).epsilon;
    CHECK(eps_tight <= c.target);
    CHECK(c.target - eps_tight <= 1e-4);
  }
}

TEST_CASE("a budget no noise can meet is a domain_error", "[privacy][bisection]") {
  // With q = 1 the RDP is T alpha / (2 sigma^2) >= 0 but the conversion keeps a positive term
  // (log(1/delta) - log(alpha))/(alpha - 1) + log((alpha - 1)/alpha) at every order <= 63, so
  // epsilon stays above 0.28 for delta 1e-10 however large sigma is.
  CHECK_THROWS_AS(noise_multiplier_for_epsilon(1e-3, 1e-10, 1.0, 1), std::domain_error);
}

TEST_CASE("the accountant refuses parameters outside its ranges", "[privacy]") {
  CHECK_THROWS_AS(sampled_gaussian_rdp(0, 1, 2), std::invalid_argument);
  CHECK_THROWS_AS(sampled_gaussian_rdp(1.5, 1, 2), std::invalid_argument);
  CHECK_THROWS_AS(sampled_gaussian_rdp(0.1, 0, 2), std::invalid_argument);
  CHECK_THROWS_AS(sampled_gaussian_rdp(0.1, -1, 2), std::invalid_argument);
  CHECK_THROWS_AS(sampled_gaussian_rdp(0.1, 1, 1), std::invalid_argument);
  CHECK_THROWS_AS(sampled_gaussian_privacy(0.1, 1, 0, 1e-5), std::invalid_argument);
  CHECK_THROWS_AS(sampled_gaussian_privacy(0.1, 1, 10, 0), std::invalid_argument);
  CHECK_THROWS_AS(sampled_gaussian_privacy(0.1, 1, 10, 1), std::invalid_argument);
  CHECK_THROWS_AS(noise_multiplier_for_epsilon(0, 1e-5, 0.1, 10), std::invalid_argument);
}
