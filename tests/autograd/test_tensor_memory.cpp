// Tensor storage and the memory accountant: every tensor byte is counted and budgeted.
#include <catch2/catch.hpp>

#include "edgetune/autograd/tensor.h"
#include "edgetune/core/context.h"
#include "edgetune/core/memory.h"

using namespace edgetune;

TEST_CASE("tensor allocation goes through the current context's accountant and its budget",
          "[memory][budget]") {
  Context context;
  const ContextScope scope(context);
  Accountant& acc = *context.accountant;
  const std::size_t live = acc.live_total();
  {
    Tensor t = Tensor::zeros({256, 256}, DType::F32, MemCategory::OptimizerState);
    REQUIRE(acc.live(MemCategory::OptimizerState) >= 256 * 256 * 4);
  }
  acc.set_budget(live + 1024 * 1024);
  REQUIRE_THROWS_AS(Tensor::empty({1024, 1024}, DType::F32), BudgetExceeded);
  REQUIRE_NOTHROW(Tensor::empty({64, 64}, DType::F32));
}
