// The tape: accumulation with +=, what gets a gradient buffer, what nodes keep, graph reuse errors,
// and the iterative walk on deep graphs.
#include <catch2/catch.hpp>

#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/quant.h"
#include "util.h"

using namespace edgetune;
using edgetune::test::param;
using edgetune::test::randn;

TEST_CASE("gradients accumulate into a pre-seeded .grad with +=", "[tape][accumulation]") {
  Tensor x = param({3, 4}, 1);
  Tensor w = param({2, 4}, 2);
  Tensor seed_x = randn({3, 4}, 3);
  Tensor seed_w = randn({2, 4}, 4);
  // Reference gradients from a clean backward.
  backward(ops::sum(ops::tanh(ops::linear(x, w))));
  const auto gx = x.grad().to_vector();
  const auto gw = w.grad().to_vector();
  // Same backward into pre-seeded buffers.
  x.set_grad(seed_x.clone());
  w.set_grad(seed_w.clone());
  backward(ops::sum(ops::tanh(ops::linear(x, w))));
  const auto sx = seed_x.to_vector(), sw = seed_w.to_vector();
  const auto ax = x.grad().to_vector(), aw = w.grad().to_vector();
  for (size_t i = 0; i < gx.size(); ++i) REQUIRE(ax[i] == Approx(sx[i] + gx[i]).epsilon(1e-14));
  for (size_t i = 0; i < gw.size(); ++i) REQUIRE(aw[i] == Approx(sw[i] + gw[i]).epsilon(1e-14));
}

TEST_CASE("two backward passes add up", "[tape][accumulation]") {
  Tensor x = param({5}, 5);
  backward(ops::sum(ops::scale(x, 3.0)));
  backward(ops::sum(ops::scale(x, 4.0)));
  for (double g : x.grad().to_vector()) REQUIRE(g == 7.0);
}

TEST_CASE("a tensor used twice gets both contributions", "[tape][accumulation]") {
  Tensor x = param({4}, 6);
  Tensor y = ops::add(ops::scale(x, 2.0), ops::mul(x, x));  // 2x + x^2
  backward(ops::sum(y));
  const auto xv = x.to_vector(), g = x.grad().to_vector();
  for (size_t i = 0; i < g.size(); ++i) REQUIRE(g[i] == Approx(2 + 2 * xv[i]));
}

TEST_CASE("tensors that do not require grad get no gradient buffer", "[tape]") {
  Tensor x = randn({3, 4}, 7);  // data, not trainable
  Tensor w = param({2, 4}, 8);
  Tensor frozen = randn({2, 2}, 9);
  Tensor y = ops::linear(ops::linear(x, w), frozen);
  backward(ops::sum(y));
  REQUIRE_FALSE(x.grad().defined());
  REQUIRE_FALSE(frozen.grad().defined());
  REQUIRE(w.grad().defined());
}

TEST_CASE("ops on tensors that need no grad record nothing", "[tape]") {
  Tensor y = ops::gelu(ops::linear(randn({2, 3}, 10), randn({4, 3}, 11)));
  REQUIRE_FALSE(y.requires_grad());
  REQUIRE(y.grad_fn() == nullptr);
  Tensor w = param({4, 3}, 12);
  {
    NoGradGuard no_grad;
    Tensor z = ops::linear(randn({2, 3}, 13), w);
    REQUIRE(z.grad_fn() == nullptr);
  }
  REQUIRE(ops::linear(randn({2, 3}, 13), w).grad_fn() != nullptr);
}

TEST_CASE("linear over a frozen weight does not keep its input alive", "[tape][memory]") {
  Context context;
  const ContextScope scope(context);
  Accountant& acc = *context.accountant;
  Tensor w_frozen = quantize(randn({64, 256}, 14, 0.1, DType::F32), DType::Q8);
  Tensor x = param({32, 256}, 15, 1.0, DType::F32);
  Tensor y;
  std::size_t with_h = 0;
  {
    Tensor h = ops::scale(x, 2.0);  // an activation nobody's backward needs
    y = ops::linear(h, w_frozen);
    with_h = acc.live(MemCategory::Activations);
  }
  // h (32 x 256 floats) is freed once its handle is gone: the linear node keeps only W.
  REQUIRE(acc.live(MemCategory::Activations) <= with_h - 32 * 256 * 4);
  Tensor w_train = param({64, 256}, 16, 0.1, DType::F32);
  {
    Tensor h = ops::scale(x, 2.0);
    y = ops::linear(h, w_train);
    with_h = acc.live(MemCategory::Activations);
  }
  // With a trainable W the node keeps h for dW = dy^T h.
  REQUIRE(acc.live(MemCategory::Activations) >= with_h - 64 * 32 * 4);
  backward(ops::sum(y));
  REQUIRE(w_train.grad().defined());
}

TEST_CASE("backward twice through the same graph is an error with a hint", "[tape]") {
  Tensor x = param({3}, 17);
  Tensor loss = ops::sum(ops::tanh(x));
  backward(loss);
  REQUIRE_THROWS_WITH(backward(loss), Catch::Contains("second time"));
}

TEST_CASE("backward on a tensor that does not require grad says how to fix it", "[tape]") {
  Tensor x = randn({3}, 18);
  REQUIRE_THROWS_WITH(backward(ops::sum(x)), Catch::Contains("set_requires_grad"));
}

TEST_CASE("a quantized tensor cannot be made trainable, and the error says what to do", "[tape]") {
  Tensor q = quantize(randn({4, 32}, 19), DType::Q4);
  REQUIRE_THROWS_WITH(q.set_requires_grad(true), Catch::Contains("adapter"));
}

TEST_CASE("backward walks a very deep graph without recursion", "[tape]") {
  Tensor x = param({4}, 20);
  Tensor y = x;
  for (int i = 0; i < 200000; ++i) y = ops::scale(y, 1.0);
  backward(ops::sum(y));
  for (double g : x.grad().to_vector()) REQUIRE(g == 1.0);
}

TEST_CASE("a very deep graph that is never walked is freed without recursion", "[tape]") {
  Tensor x = param({4}, 22);
  Tensor y = x;
  for (int i = 0; i < 200000; ++i) y = ops::scale(y, 1.0);
  y = Tensor();  // drops the whole chain
  SUCCEED("no stack overflow");
}

TEST_CASE("gradient of an intermediate is freed once its producer has run", "[tape][memory]") {
  Context context;
  const ContextScope scope(context);
  Accountant& acc = *context.accountant;
  Tensor x = param({256, 256}, 21, 1.0, DType::F32);
  Tensor h = x;
  for (int i = 0; i < 8; ++i) h = ops::tanh(h);
  Tensor loss = ops::sum(h);
  h = Tensor();
  acc.reset_peaks();
  const std::size_t before = acc.stats().live[static_cast<int>(MemCategory::Workspace)];
  backward(loss);
  const MemoryStats s = acc.stats();
  // At most a couple of 256 KiB activation gradients are live at once, not all eight.
  REQUIRE(s.peak[static_cast<int>(MemCategory::Workspace)] - before <= 3 * 256 * 256 * 4 + 4096);
}
