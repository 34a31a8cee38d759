// Per-example gradients (autograd.h's PerExampleGrads): one backward over a batch against a
// backward per example, in float64; a weight used by two ops summed per example before its norm;
// the leaves' .grad untouched; and the refusals (an op without a per-example path, rows that are
// not whole examples).
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "edgetune/autograd/ops.h"
#include "util.h"

using namespace edgetune;
using edgetune::test::param;
using edgetune::test::randn;

namespace {

constexpr std::int64_t kB = 3, kT = 4, kK = 5, kM = 6;

// The trainable tensors of the test network, all float64.
struct Net {
  Tensor w1 = param({kM, kK}, 11, 0.5);  // (M, K)
  Tensor b1 = param({kM}, 12, 0.5);      // (M)
  Tensor gamma = param({kM}, 13, 0.5);   // (M)
  Tensor beta = param({kM}, 14, 0.5);    // (M)
  Tensor w2 = param({kM, kM}, 15, 0.5);  // (M, M), used by two linear ops
  std::vector<Tensor> leaves() const { return {w1, b1, gamma, beta, w2}; }
};

// The summed loss of x (n, T, K): a linear with bias, layer_norm, tanh, then w2 twice, the middle
// under checkpoint() so that a nested backward carries the per-example gradients too. Each example
// only meets its own rows, as in a transformer, so the loss is the sum of the examples' own.
Tensor loss_of(const Net& net, const Tensor& x) {
  const Tensor h = ops::tanh(ops::layer_norm(ops::linear(x, net.w1, net.b1), net.gamma, net.beta, 1e-5));
  const Tensor z = checkpoint([&](const std::vector<Tensor>& in) { return ops::tanh(ops::linear(in[0], net.w2)); },
                              {h});
  const Tensor y = ops::linear(z, net.w2);
  return ops::sum(ops::mul(y, y));
}

// Rows [b T, (b + 1) T) of x (B, T, K): example b alone, (1, T, K).
Tensor example(const Tensor& x, std::int64_t b) {
  const std::vector<double> v = x.to_vector();
  const auto first = v.begin() + b * kT * kK;
  return Tensor::from_values(Shape{1, kT, kK}, std::vector<double>(first, first + kT * kK), DType::F64);
}

}  // namespace

// Tolerance: both are float64 sums of the same products in another order: 1e-12 relative.
TEST_CASE("per-example gradients from one backward equal one backward per example", "[per-example]") {
  Net net;
  const Tensor x = randn({kB, kT, kK}, 21, 1.0);
  PerExampleGrads pe(kB, net.leaves());
  backward(loss_of(net, x), Tensor(), &pe);
  for (const Tensor& t : net.leaves()) CHECK_FALSE(t.grad().defined());

  for (std::int64_t b = 0; b < kB; ++b) {
    INFO("example " << b);
    backward(loss_of(net, example(x, b)));
    double norm_alone = 0, norm_batch = 0;
    for (std::size_t k = 0; k < pe.size(); ++k) {
      const std::vector<double> alone = net.leaves()[k].grad().to_vector();
      const std::vector<double> all = pe.grads(k).to_vector();
      REQUIRE(all.size() == static_cast<std::size_t>(kB) * alone.size());
      for (std::size_t i = 0; i < alone.size(); ++i) {
        const double got = all[static_cast<std::size_t>(b) * alone.size() + i];
        REQUIRE(got == Approx(alone[i]).epsilon(1e-12).margin(1e-14));
        norm_alone += alone[i] * alone[i];
        norm_batch += got * got;
      }
      net.leaves()[k].set_grad(Tensor());
    }
    REQUIRE(norm_alone > 0);
    CHECK(std::sqrt(norm_batch) == Approx(std::sqrt(norm_alone)).epsilon(1e-12));
  }
}

// w2's per-example gradient is the sum of its two ops' parts; its norm is not the root of the
// sum of the parts' squared norms (which squaring each part before adding would give).
TEST_CASE("a weight used by two ops sums its parts per example before any norm", "[per-example]") {
  Net net;
  const Tensor x = randn({kB, kT, kK}, 22, 1.0);
  PerExampleGrads pe(kB, net.leaves());
  backward(loss_of(net, x), Tensor(), &pe);
  const Tensor g = pe.grads(4);  // w2: (B, M*M)
  REQUIRE(g.shape() == Shape{kB, kM * kM});
  // The same per example from the two uses apart: w2 once trainable in each.
  for (std::int64_t b = 0; b < kB; ++b) {
    const Tensor xb = example(x, b);
    const Tensor h = ops::tanh(ops::layer_norm(ops::linear(xb, net.w1.detach(), net.b1.detach()),
                                               net.gamma.detach(), net.beta.detach(), 1e-5));
    Tensor w2a = net.w2.detach().clone();
    w2a.set_requires_grad(true);
    Tensor w2b = net.w2.detach().clone();
    w2b.set_requires_grad(true);
    const Tensor y = ops::linear(ops::tanh(ops::linear(h, w2a)), w2b);
    backward(ops::sum(ops::mul(y, y)));
    const std::vector<double> ga = w2a.grad().to_vector(), gb = w2b.grad().to_vector();
    const std::vector<double> all = g.to_vector();
    double sum_sq = 0, parts_sq = 0;
    for (std::size_t i = 0; i < ga.size(); ++i) {
      const double got = all[static_cast<std::size_t>(b) * ga.size() + i];
      REQUIRE(got == Approx(ga[i] + gb[i]).epsilon(1e-12).margin(1e-14));
      sum_sq += got * got;
      parts_sq += ga[i] * ga[i] + gb[i] * gb[i];
    }
    CHECK(std::fabs(sum_sq - parts_sq) > 1e-6 * parts_sq);
  }
}

TEST_CASE("per-example gradients refuse ops without a per-example path and partial examples",
          "[per-example]") {
  Tensor table = param({7, kK}, 31);
  const Tensor ids = test::ids({kB, 2}, {0, 1, 2, 3, 4, 5});
  PerExampleGrads pe(kB, std::vector<Tensor>{table});
  CHECK_THROWS_WITH(backward(ops::sum(ops::embedding(table, ids)), Tensor(), &pe),
                    Catch::Contains("embedding: cannot give per-example gradients of"));

  Tensor w = param({kM, kK}, 32);
  PerExampleGrads two(2, std::vector<Tensor>{w});
  CHECK_THROWS_WITH(backward(ops::sum(ops::linear(randn({kB, kK}, 33), w)), Tensor(), &two),
                    Catch::Contains("3 rows are not whole examples of a batch of 2"));
  // A leaf outside the per-example set gets its .grad as usual.
  Tensor other = param({kM, kK}, 34);
  PerExampleGrads none(kB, std::vector<Tensor>{w});
  backward(ops::sum(ops::linear(randn({kB, kK}, 35), other)), Tensor(), &none);
  CHECK(other.grad().defined());
}
