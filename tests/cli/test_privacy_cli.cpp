// `edgetune privacy` as a process: what it prints is the accountant's answer (optim/privacy.h),
// and bad input is one usage line with exit code 2.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "cli_run.h"
#include "edgetune/optim/privacy.h"

using namespace edgetune::test;

namespace {

// The number after "<key>: " in the output; fails the test when the line is missing.
double field(const std::string& out, const std::string& key) {
  const std::size_t at = out.find(key + ": ");
  INFO("output: " << out);
  REQUIRE(at != std::string::npos);
  return std::strtod(out.c_str() + at + key.size() + 2, nullptr);
}

}  // namespace

TEST_CASE("privacy prints epsilon and the best order of the accountant", "[cli][privacy]") {
  REQUIRE(cli_built());
  // Opacus' MNIST example settings: 15 epochs at q = 0.004 (3600 steps), sigma 1.3, delta 1e-5.
  const RunResult r =
      run_cli("privacy --sample-rate 0.004 --noise-multiplier 1.3 --steps 3600 --delta 1e-5");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto want = edgetune::optim::sampled_gaussian_privacy(0.004, 1.3, 3600, 1e-5);
  CHECK(field(r.out, "epsilon") == Approx(want.epsilon).epsilon(1e-5));
  CHECK(field(r.out, "best order") == want.order);
}

TEST_CASE("privacy --target-epsilon prints a noise multiplier that meets it", "[cli][privacy]") {
  REQUIRE(cli_built());
  const RunResult r =
      run_cli("privacy --sample-rate 0.01 --target-epsilon 3 --steps 2000 --delta 1e-5");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const double sigma = field(r.out, "noise multiplier");
  const double eps = edgetune::optim::sampled_gaussian_privacy(0.01, sigma, 2000, 1e-5).epsilon;
  CHECK(eps <= 3);
  CHECK(3 - eps <= 0.01);
  CHECK(field(r.out, "epsilon") == Approx(eps).epsilon(1e-5));
}

TEST_CASE("privacy with a sample rate above 1 is one usage line", "[cli][privacy][errors]") {
  REQUIRE(cli_built());
  const RunResult r =
      run_cli("privacy --sample-rate 1.5 --noise-multiplier 1 --steps 10 --delta 1e-5");
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.out.empty());
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.rfind("edgetune: usage error: privacy: --sample-rate must be in (0, 1]", 0) == 0);
}

TEST_CASE("privacy needs exactly one of --noise-multiplier and --target-epsilon",
          "[cli][privacy][errors]") {
  REQUIRE(cli_built());
  const RunResult r = run_cli("privacy --sample-rate 0.01 --steps 10 --delta 1e-5");
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 2);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find("--noise-multiplier") != std::string::npos);
}
