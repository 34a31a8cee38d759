// Hugging Face learning-rate schedules: values at the edges of warmup and decay, and the warmup
// ratio rounding. (The goldens of test_golden.cpp check that base_lr * factor(k) is the exact
// double torch's LambdaLR used, for each kind.)
#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include "edgetune/optim/schedule.h"

using namespace edgetune::optim;
using Catch::Matchers::Contains;
using Kind = Schedule::Kind;

TEST_CASE("warmup rises linearly from 0 at step 0, the same for every kind", "[schedule]") {
  for (const Kind kind : {Kind::Constant, Kind::Linear, Kind::Cosine}) {
    const Schedule s(kind, 4, 20);
    REQUIRE(s.factor(0) == 0.0);
    REQUIRE(s.factor(1) == 0.25);
    REQUIRE(s.factor(3) == 0.75);
    REQUIRE(s.factor(4) == 1.0);
    // Without warmup the first step already runs at the full rate.
    REQUIRE(Schedule(kind, 0, 20).factor(0) == 1.0);
  }
}

TEST_CASE("constant schedule stays at 1 after warmup", "[schedule]") {
  const Schedule s(Kind::Constant, 3, 0);
  REQUIRE(s.factor(2) == 2.0 / 3.0);
  for (const std::int64_t k : {3, 10, 1000000}) REQUIRE(s.factor(k) == 1.0);
}

TEST_CASE("linear schedule decays to 0 at total_steps and stays there", "[schedule]") {
  const Schedule s(Kind::Linear, 2, 10);
  REQUIRE(s.factor(2) == 1.0);
  REQUIRE(s.factor(3) == 7.0 / 8.0);
  REQUIRE(s.factor(6) == 0.5);
  REQUIRE(s.factor(9) == 1.0 / 8.0);
  REQUIRE(s.factor(10) == 0.0);
  REQUIRE(s.factor(25) == 0.0);
  // Warmup longer than the run: HF's max(1, n - w) keeps the division defined.
  REQUIRE(Schedule(Kind::Linear, 5, 3).factor(5) == 0.0);
}

TEST_CASE("cosine schedule follows half a cosine from 1 to 0", "[schedule]") {
  const Schedule s(Kind::Cosine, 2, 12);
  REQUIRE(s.factor(2) == 1.0);
  REQUIRE(s.factor(7) == Approx(0.5).margin(1e-15));
  REQUIRE(s.factor(12) == Approx(0.0).margin(1e-15));
  for (std::int64_t k = 2; k <= 12; ++k) {
    const double p = (k - 2) / 10.0;
    REQUIRE(s.factor(k) == Approx(0.5 * (1 + std::cos(std::numbers::pi * p))).margin(1e-15));
  }
  // As in Hugging Face, progress is not clamped: past total_steps the factor rises again.
  REQUIRE(s.factor(17) == Approx(0.5).margin(1e-15));
}

TEST_CASE("warmup steps from a ratio round up as the Trainer does", "[schedule]") {
  REQUIRE(warmup_steps_from_ratio(100, 0.1) == 10);
  REQUIRE(warmup_steps_from_ratio(10, 0.06) == 1);  // ceil(0.6)
  REQUIRE(warmup_steps_from_ratio(7, 0.5) == 4);    // ceil(3.5)
  REQUIRE(warmup_steps_from_ratio(1000, 0.0) == 0);
  REQUIRE(warmup_steps_from_ratio(1000, 1.0) == 1000);
  REQUIRE(warmup_steps_from_ratio(0, 0.3) == 0);
  REQUIRE_THROWS_WITH(warmup_steps_from_ratio(10, 1.5), Contains("must lie in [0, 1]"));
  REQUIRE_THROWS_WITH(warmup_steps_from_ratio(10, -0.1), Contains("must lie in [0, 1]"));
  REQUIRE_THROWS_WITH(warmup_steps_from_ratio(10, NAN), Contains("must lie in [0, 1]"));
  REQUIRE_THROWS_WITH(warmup_steps_from_ratio(-1, 0.1), Contains("total_steps must be >= 0"));
}

TEST_CASE("schedules refuse negative steps", "[schedule][errors]") {
  REQUIRE_THROWS_WITH(Schedule(Kind::Linear, -1, 10), Contains("warmup_steps must be >= 0"));
  REQUIRE_THROWS_WITH(Schedule(Kind::Cosine, 0, -5), Contains("total_steps must be >= 0"));
  REQUIRE_THROWS_WITH(Schedule(Kind::Constant, 0, 0).factor(-1), Contains("0-based index"));
}
