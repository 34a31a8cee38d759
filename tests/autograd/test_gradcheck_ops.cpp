// Gradient checks (float64, central differences) for every differentiable op, including linear
// through q8 and q4 weights. Each check also pre-seeds the inputs' .grad buffers, so an op whose
// backward overwrites instead of adding fails (GradcheckOptions::check_accumulation).
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <limits>

#include "edgetune/autograd/gradcheck.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/quant.h"
#include "util.h"

using namespace edgetune;
using edgetune::test::ids;
using edgetune::test::param;
using edgetune::test::randn;

namespace {

// Runs gradcheck, prints the figures (they go in the notes) and requires success.
void check(const char* what, const GradcheckFn& fn, const std::vector<Tensor>& inputs,
           GradcheckOptions opt = {}) {
  const GradcheckResult r = gradcheck(fn, inputs, opt);
  INFO(what << ": " << r.summary());
  WARN("gradcheck " << what << ": max abs error " << r.max_abs_error << ", max rel error "
                    << r.max_rel_error << " over " << r.checked << " elements");
  REQUIRE(r.checked > 0);
  REQUIRE(r.ok);
}

// Values pushed away from 0 so kinked functions (relu) are differentiable at every checked point.
Tensor away_from_zero(const Shape& shape, std::uint64_t seed) {
  Tensor t = randn(shape, seed);
  double* p = t.data<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] += p[i] >= 0 ? 0.1 : -0.1;
  t.set_requires_grad(true);
  return t;
}

}  // namespace

TEST_CASE("gradcheck linear with trainable float weight and bias", "[gradcheck][linear]") {
  Tensor x = param({2, 3, 5}, 1);
  Tensor w = param({4, 5}, 2);
  Tensor b = param({4}, 3);
  check("linear f64", [](const auto& in) { return ops::linear(in[0], in[1], in[2]); }, {x, w, b});
}

TEST_CASE("gradcheck linear without bias", "[gradcheck][linear]") {
  Tensor x = param({6, 7}, 4);
  Tensor w = param({3, 7}, 5);
  check("linear no bias", [](const auto& in) { return ops::linear(in[0], in[1]); }, {x, w});
}

TEST_CASE("gradcheck linear through a q8 weight gives dX only", "[gradcheck][linear][quant]") {
  Tensor x = param({3, 4, 40}, 6);
  Tensor w = quantize(randn({24, 40}, 7, 0.3), DType::Q8);
  Tensor b = param({24}, 8);
  check("linear q8", [](const auto& in) { return ops::linear(in[0], in[1], in[2]); }, {x, w, b});
  REQUIRE_FALSE(w.requires_grad());
  REQUIRE_FALSE(w.grad().defined());
  REQUIRE_THROWS_WITH(w.set_requires_grad(true), Catch::Contains("frozen"));
}

TEST_CASE("gradcheck linear through a q4 weight gives dX only", "[gradcheck][linear][quant]") {
  // K = 70: two full groups of 32 and a short group of 6, and an odd row length.
  Tensor x = param({5, 70}, 9);
  Tensor w = quantize(randn({150, 70}, 10, 0.3), DType::Q4);  // more rows than one tile
  check("linear q4", [](const auto& in) { return ops::linear(in[0], in[1]); }, {x, w});
  REQUIRE_FALSE(w.grad().defined());
}

TEST_CASE("gradcheck linear through nf4 and pal4 weights gives dX only", "[gradcheck][linear][quant]") {
  // K = 70: a full nf4 block of 64 and a short one, an odd row length; N = 150: more rows than
  // one tile and a short last pal4 group of 6 rows.
  for (DType q : {DType::NF4, DType::PAL4}) {
    Tensor x = param({5, 70}, 9);
    Tensor w = quantize(randn({150, 70}, 10, 0.3), q);
    Tensor b = param({150}, 8);
    check(q == DType::NF4 ? "linear nf4" : "linear pal4",
          [](const auto& in) { return ops::linear(in[0], in[1], in[2]); }, {x, w, b});
    REQUIRE_FALSE(w.grad().defined());
    REQUIRE_THROWS_WITH(w.set_requires_grad(true), Catch::Contains("frozen"));
  }
}

TEST_CASE("linear through a quantized weight equals linear through the dequantized weight",
          "[linear][quant]") {
  Tensor x = randn({4, 300}, 11, 1.0, DType::F32);
  for (DType q : {DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    Tensor wq = quantize(randn({260, 300}, 12, 0.05, DType::F32), q);
    Tensor wd = wq.to(DType::F32);
    const auto a = ops::linear(x, wq).to_vector();
    const auto b = ops::linear(x, wd).to_vector();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == Approx(b[i]).epsilon(1e-5).margin(1e-6));
  }
}

TEST_CASE("gradcheck add, same shape and broadcast", "[gradcheck][add]") {
  check("add", [](const auto& in) { return ops::add(in[0], in[1]); },
        {param({2, 3, 4}, 13), param({2, 3, 4}, 14)});
  check("add broadcast", [](const auto& in) { return ops::add(in[0], in[1]); },
        {param({2, 3, 4}, 15), param({3, 4}, 16)});
}

TEST_CASE("gradcheck mul, same shape and broadcast", "[gradcheck][mul]") {
  check("mul", [](const auto& in) { return ops::mul(in[0], in[1]); },
        {param({2, 3, 4}, 17), param({2, 3, 4}, 18)});
  check("mul broadcast", [](const auto& in) { return ops::mul(in[0], in[1]); },
        {param({2, 3, 4}, 19), param({4}, 20)});
}

TEST_CASE("gradcheck mul of a tensor with itself", "[gradcheck][mul]") {
  check("mul self", [](const auto& in) { return ops::mul(in[0], in[0]); }, {param({3, 5}, 21)});
}

TEST_CASE("gradcheck scale", "[gradcheck][scale]") {
  check("scale", [](const auto& in) { return ops::scale(in[0], -0.37); }, {param({4, 6}, 22)});
}

TEST_CASE("gradcheck gelu (erf form)", "[gradcheck][gelu]") {
  check("gelu", [](const auto& in) { return ops::gelu(in[0]); }, {param({3, 17}, 23, 2.0)});
}

TEST_CASE("float32 gelu matches the erf form to float precision", "[gelu]") {
  // The float32 path uses a vectorised erf and exp; compare it with the float64 (libm) path. Where
  // 1 + erf(x / sqrt 2) cancels (x < -3), a float32 erf near -1 is good to about two ulp of 1
  // (2.4e-7; libm's erff to one), so x / 2 (1 + erf) carries up to |x| / 2 * 2.4e-7 <= 7e-7 absolute
  // for |x| <= 5.66 (beyond, erf is -1 and the true value is below 5e-8): hence the 1e-6 margin.
  // PyTorch's float GELU, 0.5 x (1 + erf(x / sqrt 2)), cancels the same way.
  std::vector<double> v;
  for (int i = -2000; i <= 2000; ++i) v.push_back(i * 0.005);  // [-10, 10]
  const Tensor x64 = Tensor::from_values({static_cast<std::int64_t>(v.size())}, v, DType::F64);
  const Tensor x32 = x64.to(DType::F32);
  const auto y64 = ops::gelu(x64).to_vector(), y32 = ops::gelu(x32).to_vector();
  Tensor p32 = x32.clone(), p64 = x64.clone();
  p32.set_requires_grad(true);
  p64.set_requires_grad(true);
  backward(ops::sum(ops::gelu(p32)));
  backward(ops::sum(ops::gelu(p64)));
  const auto g32 = p32.grad().to_vector(), g64 = p64.grad().to_vector();
  for (size_t i = 0; i < v.size(); ++i) {
    REQUIRE(y32[i] == Approx(y64[i]).epsilon(2e-6).margin(1e-6));
    REQUIRE(g32[i] == Approx(g64[i]).epsilon(2e-6).margin(1e-6));
  }
}

TEST_CASE("gradcheck gelu (tanh form)", "[gradcheck][gelu]") {
  check("gelu_tanh", [](const auto& in) { return ops::gelu_tanh(in[0]); },
        {param({3, 17}, 24, 2.0)});
}

TEST_CASE("gradcheck relu away from the kink", "[gradcheck][relu]") {
  check("relu", [](const auto& in) { return ops::relu(in[0]); }, {away_from_zero({4, 9}, 25)});
}

TEST_CASE("gradcheck tanh", "[gradcheck][tanh]") {
  check("tanh", [](const auto& in) { return ops::tanh(in[0]); }, {param({4, 9}, 26)});
}

TEST_CASE("gradcheck layer_norm over input, gamma and beta", "[gradcheck][layer_norm]") {
  Tensor x = param({2, 3, 8}, 27);
  Tensor g = param({8}, 28);
  Tensor b = param({8}, 29);
  check("layer_norm", [](const auto& in) { return ops::layer_norm(in[0], in[1], in[2], 1e-12); },
        {x, g, b});
  check("layer_norm eps 1e-5",
        [](const auto& in) { return ops::layer_norm(in[0], in[1], in[2], 1e-5); }, {x, g, b});
}

TEST_CASE("gradcheck softmax without mask", "[gradcheck][softmax]") {
  check("softmax", [](const auto& in) { return ops::softmax(in[0]); }, {param({3, 4, 6}, 30)});
}

TEST_CASE("gradcheck masked softmax (attention scores with padding)", "[gradcheck][softmax]") {
  // (B, H, T, S) scores; mask (B, S) additive as Hugging Face builds it: (1 - m) * lowest.
  Tensor scores = param({2, 3, 5, 5}, 31);
  const double lowest = std::numeric_limits<double>::lowest();
  std::vector<double> m = {0, 0, 0, 0, 0, 0, 0, 0, lowest, lowest};
  Tensor mask = Tensor::from_values({2, 5}, m, DType::F64);
  check("masked softmax", [](const auto& in) { return ops::softmax(in[0], in[1]); },
        {scores, mask});
  // Masked keys get exactly zero probability.
  const auto p = ops::softmax(scores, mask).to_vector();
  for (int row = 0; row < 15; ++row) {
    REQUIRE(p[(15 + row) * 5 + 3] == 0.0);
    REQUIRE(p[(15 + row) * 5 + 4] == 0.0);
  }
}

TEST_CASE("float32 softmax: masked keys get exactly 0, never a denormal; others as float64",
          "[softmax]") {
  // The float32 path uses a vectorised exp. A masked score (-10000 as older BERT code writes it,
  // or the float's lowest as Hugging Face's does) must give an exact 0: a denormal there makes
  // every later product with it tens of times slower on x86. Scores 80 to 110 below the row's
  // maximum (libm's e^x is denormal or 0 there) must not come out denormal either.
  std::vector<double> s;
  for (int j = 0; j < 6; ++j) s.push_back(0.3 * j - 0.7);
  s.push_back(-80.0);
  s.push_back(-95.0);
  s.push_back(-110.0);
  const std::int64_t n = static_cast<std::int64_t>(s.size()) + 2;
  for (const double masked : {-10000.0, static_cast<double>(std::numeric_limits<float>::lowest())}) {
    std::vector<double> scores = s, mask(s.size(), 0.0);
    scores.push_back(1.5);
    scores.push_back(0.2);
    mask.push_back(masked);
    mask.push_back(masked);
    const Tensor x64 = Tensor::from_values({1, n}, scores, DType::F64);
    const Tensor m64 = Tensor::from_values({1, n}, mask, DType::F64);
    const auto p32 = ops::softmax(x64.to(DType::F32), m64.to(DType::F32)).to_vector();
    const auto p64 = ops::softmax(x64, m64).to_vector();
    for (std::int64_t j = 0; j < n; ++j) {
      const float v = static_cast<float>(p32[static_cast<size_t>(j)]);
      REQUIRE(std::fpclassify(v) != FP_SUBNORMAL);
      REQUIRE(p32[static_cast<size_t>(j)] == Approx(p64[static_cast<size_t>(j)]).epsilon(1e-6).margin(1e-30));
    }
    REQUIRE(p32[static_cast<size_t>(n - 1)] == 0.0);
    REQUIRE(p32[static_cast<size_t>(n - 2)] == 0.0);
  }
}

TEST_CASE("gradcheck embedding into a trainable table with repeated ids", "[gradcheck][embedding]") {
  Tensor table = param({7, 4}, 32);
  Tensor id = ids({2, 3}, {1, 3, 1, 6, 0, 1});
  check("embedding", [](const auto& in) { return ops::embedding(in[0], in[1]); }, {table, id});
}

TEST_CASE("embedding gives the padding row no gradient, as torch's padding_idx", "[embedding]") {
  Tensor table = param({4, 3}, 38);
  backward(ops::sum(ops::embedding(table, ids({5}, {0, 2, 0, 1, 2}), 0)));
  const auto g = table.grad().to_vector();
  for (int j = 0; j < 3; ++j) {
    REQUIRE(g[0 * 3 + j] == 0.0);
    REQUIRE(g[1 * 3 + j] == 1.0);
    REQUIRE(g[2 * 3 + j] == 2.0);
  }
}

TEST_CASE("embedding from a frozen quantized table records nothing", "[embedding][quant]") {
  for (DType q : {DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    Tensor table = quantize(randn({9, 40}, 33, 0.1), q);
    Tensor id = ids({4}, {8, 0, 8, 3});
    Tensor y = ops::embedding(table, id);
    REQUIRE(y.shape() == Shape({4, 40}));
    REQUIRE_FALSE(y.requires_grad());
    const auto deq = table.to_vector();
    const auto got = y.to_vector();
    for (int j = 0; j < 40; ++j) REQUIRE(got[j] == Approx(deq[8 * 40 + j]));
  }
}

TEST_CASE("embedding rejects out-of-range ids with the id and the range", "[embedding]") {
  Tensor table = param({5, 2}, 34);
  REQUIRE_THROWS_WITH(ops::embedding(table, ids({2}, {1, 5})), Catch::Contains("0..4"));
}

TEST_CASE("gradcheck gather_rows", "[gradcheck][gather_rows]") {
  Tensor x = param({6, 5}, 35);
  Tensor idx = ids({4}, {0, 2, 2, 5});
  check("gather_rows", [](const auto& in) { return ops::gather_rows(in[0], in[1]); }, {x, idx});
}

TEST_CASE("gradcheck dropout (seeded mask)", "[gradcheck][dropout]") {
  Tensor x = param({4, 25}, 36);
  check("dropout",
        [](const auto& in) {
          manual_seed(99);  // the same mask at every evaluation
          return ops::dropout(in[0], 0.3, true);
        },
        {x});
}

TEST_CASE("dropout is the identity when p = 0 or in eval, and keeps about 1 - p", "[dropout]") {
  Tensor x = randn({1000}, 37);
  REQUIRE(ops::dropout(x, 0.0, true).impl() == x.impl());
  REQUIRE(ops::dropout(x, 0.5, false).impl() == x.impl());
  manual_seed(5);
  const auto y = ops::dropout(x, 0.25, true).to_vector();
  const auto xv = x.to_vector();
  int kept = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (y[i] != 0) {
      ++kept;
      REQUIRE(y[i] == Approx(xv[i] / 0.75));
    }
  }
  REQUIRE(kept > 700);
  REQUIRE(kept < 800);
}

TEST_CASE("dropout over a micro-batch's rows draws its part of the whole batch's mask", "[dropout]") {
  // A batch of 6 rows of (5, 4) elements, then its rows [0, 2) and [2, 6) as two micro-batches.
  const Tensor x = randn({6, 5, 4}, 39);
  const auto xv = x.to_vector();
  manual_seed(11);
  const auto whole = ops::dropout(x, 0.5, true).to_vector();
  const std::uint64_t end = dropout_rng().counter;
  REQUIRE(end == 120);
  std::vector<double> parts;
  for (const auto& [start, n] : {std::pair<std::int64_t, std::int64_t>{0, 2}, {2, 4}}) {
    dropout_rng().counter = 0;
    const DropoutRows rows(static_cast<std::uint64_t>(start), static_cast<std::uint64_t>(n), 6);
    const std::vector<double> part_x(xv.begin() + start * 20, xv.begin() + (start + n) * 20);
    // The micro-batch's tokens flattened, as linear layers see them: the rows stay outermost.
    const auto y = ops::dropout(Tensor::from_values({n * 5, 4}, part_x, x.dtype()), 0.5, true).to_vector();
    parts.insert(parts.end(), y.begin(), y.end());
    REQUIRE(dropout_rng().counter == end);  // each part advances as far as the whole batch
  }
  REQUIRE(parts == whole);
  int zeros = 0;
  for (double v : whole) zeros += v == 0;
  REQUIRE(zeros > 30);  // a mask, not the identity
  REQUIRE(zeros < 90);
  // Out of the scope, draws are sequential again; a part outside its batch is refused.
  REQUIRE(dropout_rng().rows == 0);
  REQUIRE_THROWS_AS(DropoutRows(4, 3, 6), std::invalid_argument);
}

TEST_CASE("gradcheck reshape and permute (head split and merge)", "[gradcheck][permute]") {
  // (B, T, C) -> (B, T, H, D) -> (B, H, T, D) and back.
  Tensor x = param({2, 3, 8}, 38);
  check("head split",
        [](const auto& in) {
          static const std::array<int, 4> perm{0, 2, 1, 3};
          return ops::permute(ops::reshape(in[0], {2, 3, 2, 4}), perm);
        },
        {x});
  check("head merge",
        [](const auto& in) {
          static const std::array<int, 4> perm{0, 2, 1, 3};
          return ops::reshape(ops::permute(in[0], perm), {2, 3, 8});
        },
        {param({2, 2, 3, 4}, 39)});
  check("permute 3-d",
        [](const auto& in) {
          static const std::array<int, 3> perm{2, 0, 1};
          return ops::permute(in[0], perm);
        },
        {param({2, 3, 4}, 40)});
}

TEST_CASE("permute moves every element where the permutation says", "[permute]") {
  Tensor x = randn({2, 3, 4, 5}, 70);
  const auto xv = x.to_vector();
  for (const std::array<int, 4>& perm : {std::array<int, 4>{0, 2, 1, 3}, {2, 0, 1, 3}, {3, 1, 0, 2}}) {
    const auto y = ops::permute(x, perm).to_vector();
    const std::int64_t dims[4] = {2, 3, 4, 5};
    std::int64_t od[4];
    for (int i = 0; i < 4; ++i) od[i] = dims[perm[i]];
    for (std::int64_t o = 0; o < 120; ++o) {
      std::int64_t idx[4], rem = o;
      for (int i = 3; i >= 0; --i) idx[i] = rem % od[i], rem /= od[i];
      std::int64_t src[4];
      for (int i = 0; i < 4; ++i) src[perm[i]] = idx[i];
      REQUIRE(y[o] == xv[((src[0] * 3 + src[1]) * 4 + src[2]) * 5 + src[3]]);
    }
  }
}

TEST_CASE("gradcheck batched matmul in all four transpose forms", "[gradcheck][matmul]") {
  // (B, H, M, K) x (B, H, K, N): QK^T is trans_b, PV is plain.
  for (int form = 0; form < 4; ++form) {
    const bool ta = form & 1, tb = form & 2;
    Tensor a = param(ta ? Shape{2, 2, 4, 3} : Shape{2, 2, 3, 4}, 41 + form);
    Tensor b = param(tb ? Shape{2, 2, 5, 4} : Shape{2, 2, 4, 5}, 51 + form);
    check("matmul",
          [ta, tb](const auto& in) { return ops::matmul(in[0], in[1], ta, tb); }, {a, b});
  }
}

TEST_CASE("gradcheck sum and mean", "[gradcheck][sum]") {
  check("sum", [](const auto& in) { return ops::sum(in[0]); }, {param({3, 4}, 61)});
  check("mean", [](const auto& in) { return ops::mean(in[0]); }, {param({3, 4}, 62)});
}

TEST_CASE("gradcheck cross_entropy, plain, class-weighted, with ignore index",
          "[gradcheck][cross_entropy]") {
  Tensor logits = param({5, 3}, 63);
  Tensor labels = ids({5}, {0, 2, 1, -100, 2});
  Tensor weight = Tensor::from_values({3}, std::vector<double>{0.5, 2.0, 1.0}, DType::F64);
  check("cross_entropy", [](const auto& in) { return ops::cross_entropy(in[0], in[1]); },
        {logits, labels});
  check("cross_entropy weighted",
        [](const auto& in) { return ops::cross_entropy(in[0], in[1], in[2]); },
        {logits, labels, weight});
}

TEST_CASE("cross_entropy matches the formula of torch", "[cross_entropy]") {
  Tensor logits = Tensor::from_values({2, 3}, std::vector<double>{1, 2, 3, 0.5, -1, 0}, DType::F64);
  Tensor labels = ids({2}, {2, 0});
  Tensor weight = Tensor::from_values({3}, std::vector<double>{2.0, 1.0, 0.5}, DType::F64);
  const double l0 = std::log(std::exp(1) + std::exp(2) + std::exp(3)) - 3;
  const double l1 = std::log(std::exp(0.5) + std::exp(-1) + std::exp(0)) - 0.5;
  REQUIRE(ops::cross_entropy(logits, labels).item() == Approx((l0 + l1) / 2).epsilon(1e-14));
  REQUIRE(ops::cross_entropy(logits, labels, weight).item() ==
          Approx((0.5 * l0 + 2.0 * l1) / 2.5).epsilon(1e-14));
  REQUIRE(std::isnan(ops::cross_entropy(logits, ids({2}, {-100, -100})).item()));
  REQUIRE_THROWS_WITH(ops::cross_entropy(logits, ids({2}, {3, 0})),
                      Catch::Contains("out of range for 3 classes"));
}

TEST_CASE("gradcheck binary cross-entropy with logits", "[gradcheck][bce]") {
  Tensor z = param({4, 3}, 64, 2.0);
  std::vector<double> t = {1, 0, 1, 0, 0, 1, 1, 1, 0, 0.5, 0.25, 1};
  Tensor targets = Tensor::from_values({4, 3}, t, DType::F64);
  check("bce_with_logits", [](const auto& in) { return ops::bce_with_logits(in[0], in[1]); },
        {z, targets});
  targets.set_requires_grad(true);
  check("bce_with_logits (targets too)",
        [](const auto& in) { return ops::bce_with_logits(in[0], in[1]); }, {z, targets});
}
