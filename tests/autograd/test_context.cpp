// What a tensor op takes from the current context (core/context.h): the accountant that counts its
// tensors, the threads of its kernels and the dropout generator.
#include <catch2/catch.hpp>

#include <omp.h>

#include <thread>

#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/quant.h"
#include "util.h"

using namespace edgetune;
using test::randn;

TEST_CASE("context: a tensor is counted by the context current when it is made, until it is freed",
          "[context][memory]") {
  Context a;
  Tensor t;
  {
    const ContextScope scope(a);
    t = Tensor::zeros({64, 64}, DType::F32, MemCategory::Activations);
  }
  const std::size_t bytes = accounted_bytes(64 * 64 * 4);
  REQUIRE(a.accountant->live(MemCategory::Activations) == bytes);
  // Made in a, freed on another thread with its own context: the bytes go back to a.
  Context b;
  std::thread other([&] {
    const ContextScope scope(b);
    t = Tensor();
  });
  other.join();
  REQUIRE(a.accountant->live_total() == 0);
  REQUIRE(b.accountant->live_total() == 0);
  REQUIRE(a.accountant->stats().peak_live == bytes);
}

TEST_CASE("context: a budget applies to its own context only", "[context][memory]") {
  Context tight, free;
  tight.accountant->set_budget(64 * 1024);
  {
    const ContextScope scope(tight);
    REQUIRE_THROWS_AS(Tensor::empty({256, 256}, DType::F32), BudgetExceeded);
    const ContextScope inner(free);
    REQUIRE_NOTHROW(Tensor::empty({256, 256}, DType::F32));
  }
  REQUIRE(tight.accountant->live_total() == 0);
  REQUIRE(free.accountant->stats().peak_live == accounted_bytes(256 * 256 * 4));
}

TEST_CASE("context: each context has its own dropout generator", "[context][dropout]") {
  const Tensor x = Tensor::full({64, 64}, 1.0, DType::F32);
  auto masks = [&](Context& c) {
    const ContextScope scope(c);
    const std::vector<double> first = ops::dropout(x, 0.5, true).to_vector();
    return std::make_pair(first, ops::dropout(x, 0.5, true).to_vector());
  };
  Context a, b, c;
  {
    const ContextScope sa(a);
    manual_seed(11);
  }
  {
    const ContextScope sb(b);
    manual_seed(11);
  }
  c.rng = RngState{12, 0};
  const auto ma = masks(a);
  // a's draws moved a's generator only.
  REQUIRE(a.rng.counter > 0);
  REQUIRE(b.rng.counter == 0);
  const auto mb = masks(b);
  REQUIRE(ma == mb);
  REQUIRE(ma.first != ma.second);
  REQUIRE(masks(c).first != ma.first);
}

TEST_CASE("context: float products give the same bits at every thread count, and leave OpenMP's "
          "setting alone", "[context][threads]") {
  const int omp_before = omp_get_max_threads();
  // K above Eigen's reduction block (a few hundred), M not a multiple of the row grain.
  const std::int64_t m = 200, k = 1030, n = 96;
  const Tensor x = randn({m, k}, 1, 1.0, DType::F32);
  const Tensor w = randn({n, k}, 2, 0.05, DType::F32);
  const Tensor wq = quantize(w, DType::Q8);
  const Tensor dy = randn({m, n}, 3, 1.0, DType::F32);
  struct Out {
    std::vector<double> y, yq, dx, dxq, dw, bmm;
  };
  auto run = [&](int threads) {
    Context c;
    c.threads = threads;
    const ContextScope scope(c);
    REQUIRE(kernels::num_threads() == threads);
    Out o;
    Tensor y = Tensor::empty({m, n}, DType::F32);
    kernels::linear_forward(y, x, w, nullptr);
    o.y = y.to_vector();
    kernels::linear_forward(y, x, wq, nullptr);
    o.yq = y.to_vector();
    Tensor dx = Tensor::zeros({m, k}, DType::F32);
    kernels::linear_backward_input(dx, dy, w);
    o.dx = dx.to_vector();
    dx = Tensor::zeros({m, k}, DType::F32);
    kernels::linear_backward_input(dx, dy, wq);
    o.dxq = dx.to_vector();
    Tensor dw = Tensor::zeros({n, k}, DType::F32);
    kernels::linear_backward_weight(dw, dy, x);
    o.dw = dw.to_vector();
    Tensor c1 = Tensor::empty({m, m}, DType::F32);
    kernels::batched_gemm(c1.data<float>(), x.data<float>(), x.data<float>(), 1, m, m, k, false, true,
                          false);
    o.bmm = c1.to_vector();
    return o;
  };
  const Out one = run(1);
  for (const int threads : {2, 3}) {
    INFO(threads << " threads");
    const Out many = run(threads);
    CHECK(many.y == one.y);
    CHECK(many.yq == one.yq);
    CHECK(many.dx == one.dx);
    CHECK(many.dxq == one.dxq);
    CHECK(many.dw == one.dw);
    CHECK(many.bmm == one.bmm);
  }
  REQUIRE(omp_get_max_threads() == omp_before);
}
