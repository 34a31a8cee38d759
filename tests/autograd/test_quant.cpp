// q8 / q4 storage: the exact format, round-trip error budgets, and edge cases.
#include <catch2/catch.hpp>

#include <cmath>

#include "edgetune/autograd/quant.h"
#include "util.h"

using namespace edgetune;
using edgetune::test::randn;

namespace {
// Named error budgets for a normal(0, 0.02) 768 x 768 matrix. Round to nearest bounds every
// element's error by half a step (s / 2). For the relative RMS error, a step s = amax / levels
// with a uniform rounding error gives rms = s / sqrt(12); for a Gaussian, E[amax] is 3.37 sigma
// over a row of 768 (q8: 3.37 / 127 / sqrt(12) = 0.77 %) and 2.35 sigma over a group of 32
// (q4: 2.35 / 7 / sqrt(12) = 9.9 %, a little less in practice as codes near 0 round finer).
// The budgets add a margin over those expectations.
constexpr double kQ8RelativeRmsBudget = 0.0090;
constexpr double kQ4RelativeRmsBudget = 0.1100;
}  // namespace

TEST_CASE("q8 round trip on a normal(0, 0.02) 768 x 768 matrix", "[quant]") {
  Tensor w = randn({768, 768}, 1, 0.02, DType::F32);
  const RoundTripError e = round_trip_error(w, DType::Q8);
  WARN("q8 round trip: max abs " << e.max_abs << ", rms " << e.rms << ", relative rms "
                                 << e.relative_rms);
  REQUIRE(e.relative_rms < kQ8RelativeRmsBudget);
  // Per element: |w - w'| <= s_row / 2.
  Tensor q = quantize(w, DType::Q8);
  const auto a = w.to_vector(), b = q.to_vector();
  for (std::int64_t r = 0; r < 768; ++r) {
    const double half_step = q.scales()[r] / 2 * (1 + 1e-6);
    for (std::int64_t j = 0; j < 768; ++j) REQUIRE(std::fabs(a[r * 768 + j] - b[r * 768 + j]) <= half_step);
  }
}

TEST_CASE("q4 round trip on a normal(0, 0.02) 768 x 768 matrix", "[quant]") {
  Tensor w = randn({768, 768}, 2, 0.02, DType::F32);
  const RoundTripError e = round_trip_error(w, DType::Q4);
  WARN("q4 round trip: max abs " << e.max_abs << ", rms " << e.rms << ", relative rms "
                                 << e.relative_rms);
  REQUIRE(e.relative_rms < kQ4RelativeRmsBudget);
  Tensor q = quantize(w, DType::Q4);
  const auto a = w.to_vector(), b = q.to_vector();
  for (std::int64_t r = 0; r < 768; ++r) {
    for (std::int64_t j = 0; j < 768; ++j) {
      const double half_step = q.scales()[r * 24 + j / 32] / 2 * (1 + 1e-6);
      REQUIRE(std::fabs(a[r * 768 + j] - b[r * 768 + j]) <= half_step);
    }
  }
}

TEST_CASE("q8 format: per-row scale amax / 127, codes round half to even", "[quant]") {
  // Row 0: amax 1.27 -> s = 0.01; 0.005 / 0.01 = 0.5 rounds to 0, 0.015 / 0.01 = 1.5 to 2.
  std::vector<double> v = {1.27, 0.005, 0.015, -1.27, 0, 0, 0, 0};
  Tensor q = quantize(Tensor::from_values({2, 4}, v, DType::F32), DType::Q8);
  REQUIRE(q.scales()[0] == Approx(0.01f));
  const std::int8_t* c = q.data<std::int8_t>();
  REQUIRE(c[0] == 127);
  REQUIRE(c[3] == -127);
  REQUIRE(q.nbytes() == 8 + 2 * sizeof(float));
  // An all-zero row has scale 0 and dequantizes to zeros.
  REQUIRE(q.scales()[1] == 0.0f);
  for (int j = 4; j < 8; ++j) REQUIRE(q.to_vector()[j] == 0.0);
}

TEST_CASE("q4 format: groups of 32, a short last group, two codes per byte", "[quant]") {
  // K = 37: groups [0, 32) and [32, 37); 19 bytes per row.
  std::vector<double> v(2 * 37);
  const double tail[5] = {-0.14, -0.06, 0.0, 0.06, 0.14};  // codes -7, -3, 0, 3, 7 at s = 0.02
  for (int j = 0; j < 37; ++j) v[j] = (j < 32) ? 0.7 * ((j % 3) - 1) : tail[j - 32];
  Tensor q = quantize(Tensor::from_values({2, 37}, v, DType::F32), DType::Q4);
  REQUIRE(q.nbytes() == 2 * 19 + 2 * 2 * sizeof(float));
  REQUIRE(q.scales()[0] == Approx(0.1f));   // 0.7 / 7
  REQUIRE(q.scales()[1] == Approx(0.02f));  // 0.14 / 7, the short group
  REQUIRE(q.scales()[2] == 0.0f);           // second row is zero
  const std::uint8_t* b = q.data<std::uint8_t>();
  // j = 0: -0.7 -> code -7 -> nibble 1 (low); j = 1: 0 -> nibble 8 (high).
  REQUIRE((b[0] & 0x0F) == 1);
  REQUIRE((b[0] >> 4) == 8);
  const auto d = q.to_vector();
  for (int j = 0; j < 37; ++j) REQUIRE(d[j] == Approx(v[j]).margin(1e-6));
}

TEST_CASE("quantized tensors reject shapes that are not matrices and other misuse", "[quant]") {
  REQUIRE_THROWS(quantize(randn({2, 3, 4}, 3), DType::Q8));
  REQUIRE_THROWS(Tensor::empty({5}, DType::Q4));
  Tensor q = quantize(randn({4, 8}, 4), DType::Q8);
  REQUIRE_THROWS(q.data<float>());
}

TEST_CASE("quantizing a NaN or an infinity is an error naming the row", "[quant]") {
  for (DType q : {DType::Q8, DType::Q4}) {
    std::vector<double> v = {0.5, 0.1, std::nan(""), 0.2};
    REQUIRE_THROWS_WITH(quantize(Tensor::from_values({2, 2}, v, DType::F32), q),
                        Catch::Contains("row 1"));
    v[2] = INFINITY;
    REQUIRE_THROWS_WITH(quantize(Tensor::from_values({2, 2}, v, DType::F32), q),
                        Catch::Contains("finite"));
  }
}
