// q8 / q4 / nf4 / pal4 storage: the exact format, round-trip error budgets, and edge cases.
#include <catch2/catch.hpp>

#include <algorithm>
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
  for (DType q : {DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    std::vector<double> v = {0.5, 0.1, std::nan(""), 0.2};
    REQUIRE_THROWS_WITH(quantize(Tensor::from_values({2, 2}, v, DType::F32), q),
                        Catch::Contains("row 1"));
    v[2] = INFINITY;
    REQUIRE_THROWS_WITH(quantize(Tensor::from_values({2, 2}, v, DType::F32), q),
                        Catch::Contains("finite"));
  }
}

namespace {
// Named budgets of the 4-bit formats on a normal(0, 0.02) matrix.
// nf4: every element within half the largest gap between neighbouring nf4 values (0.152) times
// its block's absmax, plus float rounding of w / s and nf4[c] * s (a few ulps, 1e-6 relative).
// The codebook's quantiles make the relative RMS about 0.09 on Gaussian blocks of 64 (E[amax]
// 2.4 sigma, mean squared gap at the values' density); the budget is 0.11, as q4's.
constexpr double kNf4FloatRounding = 1e-6;
constexpr double kNf4RelativeRmsBudget = 0.11;
// pal4: each value's code is its nearest palette value (checked element by element, so its
// error is the distance to the nearest centroid, at most half the widest gap between
// neighbouring centroids or the distance from the group's extreme to the end centroid), and at
// convergence every used palette value is the mean of its members, to the float rounding of a
// mean (1e-6 of the group's max |w|). k-means converges towards the Lloyd-Max quantizer, whose
// 16 levels on a Gaussian leave a mean squared error of 0.009497 sigma^2 (Max 1960), a relative
// RMS of 0.0975; the budget is 0.11, for a finite sample and a local optimum. (One palette spans
// 16 rows, where nf4 rescales every 64 values, so pal4 is no finer on Gaussian weights; it
// spends 4 bytes per row on palettes where nf4 spends 4 per 64 values.)
constexpr double kPal4MeanRounding = 1e-6;
constexpr double kPal4RelativeRmsBudget = 0.11;

// w quantized to `dtype`, after requiring the round trip's relative RMS error within `budget`
// and its storage `bytes` (codes and scales).
Tensor quantize_within(const Tensor& w, DType dtype, double budget, std::size_t bytes) {
  const RoundTripError e = round_trip_error(w, dtype);
  WARN(dtype_name(dtype) << " round trip: max abs " << e.max_abs << ", rms " << e.rms
                         << ", relative rms " << e.relative_rms);
  REQUIRE(e.relative_rms < budget);
  Tensor q = quantize(w, dtype);
  REQUIRE(q.nbytes() == bytes);
  return q;
}
}  // namespace

TEST_CASE("nf4 codebook: the 16 QLoRA values, ascending, zero exact, half max gap", "[quant]") {
  REQUIRE(kNf4Values.front() == -1.0f);
  REQUIRE(kNf4Values[7] == 0.0f);
  REQUIRE(kNf4Values.back() == 1.0f);
  for (int i = 0; i + 1 < 16; ++i) REQUIRE(kNf4Values[i] < kNf4Values[i + 1]);
  // The widest gap is the first: -1 to -0.6961928.
  REQUIRE(nf4_half_max_gap() == Approx((1.0 - 0.6961928009986877) / 2));
}

TEST_CASE("nf4 round trip on a normal(0, 0.02) 768 x 200 matrix", "[quant]") {
  // K = 200: three blocks of 64 and a short one of 8, and codes packed two per byte.
  Tensor w = randn({768, 200}, 41, 0.02, DType::F32);
  const Tensor q =
      quantize_within(w, DType::NF4, kNf4RelativeRmsBudget, 768 * 100 + 768 * 4 * sizeof(float));
  const auto a = w.to_vector(), b = q.to_vector();
  for (std::int64_t r = 0; r < 768; ++r) {
    for (std::int64_t blk = 0; blk < 4; ++blk) {
      double amax = 0;
      for (std::int64_t j = blk * 64; j < std::min<std::int64_t>(200, blk * 64 + 64); ++j)
        amax = std::max(amax, std::fabs(a[r * 200 + j]));
      REQUIRE(q.scales()[r * 4 + blk] == float(amax));
      const double budget = nf4_half_max_gap() * amax + kNf4FloatRounding * amax;
      for (std::int64_t j = blk * 64; j < std::min<std::int64_t>(200, blk * 64 + 64); ++j)
        REQUIRE(std::fabs(a[r * 200 + j] - b[r * 200 + j]) <= budget);
    }
  }
}

TEST_CASE("nf4 format: the nearest codebook value times the block absmax", "[quant]") {
  // One block of 5: absmax 2; w / 2 = -1, 0.5627 (nf4[13]), 0, 0.04 (0.0398 is the midpoint of
  // 0 and nf4[8]: above it, code 8), -0.2.
  std::vector<double> v = {-2.0, 1.1252340079, 0.0, 0.08, -0.4, 0, 0, 0, 0, 0};
  Tensor q = quantize(Tensor::from_values({2, 5}, v, DType::F32), DType::NF4);
  REQUIRE(q.scales()[0] == 2.0f);
  REQUIRE(q.scales()[1] == 0.0f);
  const std::uint8_t* b = q.data<std::uint8_t>();
  REQUIRE((b[0] & 0x0F) == 0);
  REQUIRE((b[0] >> 4) == 13);
  REQUIRE((b[1] & 0x0F) == 7);
  REQUIRE((b[1] >> 4) == 8);
  REQUIRE((b[2] & 0x0F) == 5);  // -0.2: nearer -0.1848 than -0.2844
  const auto d = q.to_vector();
  REQUIRE(d[0] == -2.0);
  REQUIRE(d[2] == 0.0);
  for (int j = 5; j < 10; ++j) REQUIRE(d[j] == 0.0);  // an all-zero row
}

TEST_CASE("pal4 round trip on a normal(0, 0.02) 40 x 200 matrix: nearest centroid, means",
          "[quant]") {
  // N = 40: palette groups of 16, 16 and a short one of 8.
  Tensor w = randn({40, 200}, 42, 0.02, DType::F32);
  const Tensor q =
      quantize_within(w, DType::PAL4, kPal4RelativeRmsBudget, 40 * 100 + 3 * 16 * sizeof(float));
  const auto a = w.to_vector(), b = q.to_vector();
  for (std::int64_t g = 0; g < 3; ++g) {
    const std::int64_t r0 = g * 16, r1 = std::min<std::int64_t>(40, r0 + 16);
    const float* palette = q.scales() + g * 16;
    const Palette fit = pal4_palette({w.data<float>() + r0 * 200, std::size_t((r1 - r0) * 200)});
    INFO("group " << g << ": " << fit.iterations << " iterations");
    REQUIRE(fit.converged);
    REQUIRE(std::equal(fit.values.begin(), fit.values.end(), palette));
    double amax = 0, sum[16] = {}, count[16] = {};
    for (std::int64_t i = r0 * 200; i < r1 * 200; ++i) amax = std::max(amax, std::fabs(a[i]));
    for (std::int64_t i = r0 * 200; i < r1 * 200; ++i) {
      // The value the code names is the nearest palette value.
      double nearest = 1e300;
      for (int c = 0; c < 16; ++c) nearest = std::min(nearest, std::fabs(a[i] - palette[c]));
      REQUIRE(std::fabs(a[i] - b[i]) == nearest);
      const int code = int(std::find(palette, palette + 16, float(b[i])) - palette);
      REQUIRE(code < 16);
      sum[code] += a[i];
      count[code] += 1;
    }
    for (int c = 0; c < 16; ++c) {
      if (count[c] > 0) REQUIRE(std::fabs(sum[c] / count[c] - palette[c]) <= kPal4MeanRounding * amax);
    }
  }
}

TEST_CASE("pal4 format: k-means is deterministic, exact for few distinct values", "[quant]") {
  // Three distinct values: each gets a palette value of its own, and the round trip is exact.
  std::vector<double> v(3 * 8);
  for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 3 == 0) ? -0.5 : (i % 3 == 1) ? 0.25 : 1.0;
  const Tensor w = Tensor::from_values({3, 8}, v, DType::F32);
  const Tensor q = quantize(w, DType::PAL4);
  REQUIRE(q.to_vector() == w.to_vector());
  const Tensor q2 = quantize(w, DType::PAL4);
  REQUIRE(std::equal(q.scales(), q.scales() + 16, q2.scales()));
  // A zero matrix: a zero palette.
  const Tensor z = quantize(Tensor::zeros({2, 3}), DType::PAL4);
  for (double x : z.to_vector()) REQUIRE(x == 0.0);
  // Rows of one palette group cannot be quantized apart.
  Tensor p = quantized_empty(20, 4, DType::PAL4);
  const std::vector<float> row(4, 0.5f);
  REQUIRE_THROWS_WITH(quantize_rows(p, 3, 1, row.data()), Catch::Contains("whole groups of 16"));
}

TEST_CASE("model file layout of each quantized dtype", "[quant]") {
  const QuantFileLayout q8 = quant_file_layout(5, 70, DType::Q8);
  REQUIRE(std::string(q8.codes_dtype) == "I8");
  REQUIRE(q8.scales == std::vector<std::int64_t>{5});
  REQUIRE(quant_file_layout(5, 70, DType::Q4).scales == std::vector<std::int64_t>{5, 3});
  const QuantFileLayout nf4 = quant_file_layout(5, 70, DType::NF4);
  REQUIRE(std::string(nf4.codes_dtype) == "U8");
  REQUIRE(nf4.codes == std::vector<std::int64_t>{5, 35});
  REQUIRE(nf4.scales == std::vector<std::int64_t>{5, 2});
  REQUIRE(quant_file_layout(33, 70, DType::PAL4).scales == std::vector<std::int64_t>{3, 16});
  for (DType t : {DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    const QuantFileLayout l = quant_file_layout(33, 70, t);
    REQUIRE(l.scales[0] * (l.scales.size() > 1 ? l.scales[1] : 1) == scale_count(Shape{33, 70}, t));
  }
}
