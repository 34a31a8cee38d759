// Gradient norm and clipping with torch.nn.utils.clip_grad_norm_ semantics. (test_golden.cpp
// checks the norm against torch's on real trajectories, and that grads clipped to torch's norm
// are torch's bits.)
#include <catch2/catch.hpp>

#include <cmath>

#include "edgetune/autograd/autograd.h"
#include "edgetune/optim/clip.h"

using namespace edgetune;
using namespace edgetune::optim;
using Catch::Matchers::Contains;

namespace {

Param param_with_grad(const std::string& name, const std::vector<double>& grad,
                      DType dtype = DType::F32) {
  const Shape shape{static_cast<std::int64_t>(grad.size())};
  Param p{name, Tensor::zeros(shape, dtype, MemCategory::Trainable), true};
  p.tensor.set_requires_grad(true);
  p.tensor.set_grad(Tensor::from_values(shape, grad, dtype, MemCategory::Grads));
  return p;
}

}  // namespace

TEST_CASE("grad_norm is the L2 norm of all grads as one vector", "[clip]") {
  std::vector<Param> ps = {param_with_grad("a", {3, 0}), param_with_grad("b", {0, 4}, DType::F64),
                           param_with_grad("c", {12})};
  REQUIRE(grad_norm(ps) == 13.0);
  ps[2].tensor.set_grad(Tensor());  // params without grads do not count
  REQUIRE(grad_norm(ps) == 5.0);
  std::vector<Param> none = {ps[2]};
  REQUIRE(grad_norm(none) == 0.0);
  REQUIRE(clip_grad_norm(none, 1.0) == 0.0);
}

TEST_CASE("clip_grad_norm scales grads above max_norm and returns the norm before", "[clip]") {
  std::vector<Param> ps = {param_with_grad("a", {3, 0}), param_with_grad("b", {0, 4}, DType::F64)};
  REQUIRE(clip_grad_norm(ps, 1.0) == 5.0);
  // torch's coefficient: 1 / (5 + 1e-6), so the clipped norm is a hair under max_norm.
  REQUIRE(grad_norm(ps) == Approx(5.0 / (5.0 + 1e-6)).epsilon(1e-7));
  REQUIRE(ps[0].tensor.grad().to_vector()[0] == Approx(3.0 / (5.0 + 1e-6)).epsilon(1e-7));
  REQUIRE(ps[1].tensor.grad().to_vector()[1] == Approx(4.0 / (5.0 + 1e-6)).epsilon(1e-15));
}

TEST_CASE("clip_grads_to_norm computes torch's coefficient in each grad's dtype", "[clip]") {
  std::vector<Param> ps = {param_with_grad("a", {3, 1}), param_with_grad("b", {4}, DType::F64)};
  clip_grads_to_norm(ps, 2.0, 10.0);  // a norm computed elsewhere
  // torch: (total_norm + 1e-6).reciprocal() * max_norm, on a 0-dim tensor of the grad's dtype.
  const float coef32 = 2.0f * (1.0f / (10.0f + static_cast<float>(1e-6)));
  const double coef64 = 2.0 * (1.0 / (10.0 + 1e-6));
  REQUIRE(ps[0].tensor.grad().to_vector()[0] == static_cast<double>(3.0f * coef32));
  REQUIRE(ps[0].tensor.grad().to_vector()[1] == static_cast<double>(coef32));
  REQUIRE(ps[1].tensor.grad().to_vector()[0] == 4.0 * coef64);
}

TEST_CASE("grads within max_norm, or with max_norm 0, keep their bits", "[clip]") {
  std::vector<Param> ps = {param_with_grad("a", {0.1f, -0.2f, 0.3f})};
  const auto before = ps[0].tensor.grad().to_vector();
  const double norm = std::sqrt(double(0.1f) * 0.1f + double(0.2f) * 0.2f + double(0.3f) * 0.3f);
  REQUIRE(clip_grad_norm(ps, 1.0) == Approx(norm).epsilon(1e-15));
  REQUIRE(ps[0].tensor.grad().to_vector() == before);
  REQUIRE(clip_grad_norm(ps, 0.0) == Approx(norm).epsilon(1e-15));  // 0: no clipping
  REQUIRE(ps[0].tensor.grad().to_vector() == before);
}

TEST_CASE("non-finite norms poison the grads as torch's do", "[clip]") {
  std::vector<Param> ps = {param_with_grad("a", {1, NAN})};
  REQUIRE(std::isnan(clip_grad_norm(ps, 1.0)));
  REQUIRE(std::isnan(ps[0].tensor.grad().to_vector()[0]));

  std::vector<Param> inf = {param_with_grad("a", {1, INFINITY})};
  REQUIRE(std::isinf(clip_grad_norm(inf, 1.0)));
  REQUIRE(inf[0].tensor.grad().to_vector()[0] == 0.0);  // scaled by max_norm / inf = 0
}

TEST_CASE("clip_grad_norm refuses a negative max_norm", "[clip][errors]") {
  std::vector<Param> ps = {param_with_grad("a", {1})};
  REQUIRE_THROWS_WITH(clip_grad_norm(ps, -1.0), Contains("max_norm must be >= 0"));
  REQUIRE_THROWS_WITH(clip_grad_norm(ps, NAN), Contains("max_norm must be >= 0"));
  std::vector<Param> ints = {{"i", Tensor::zeros({2}), true}};
  ints[0].tensor.set_grad(Tensor::from_ints({2}, std::vector<std::int32_t>{1, 2}));
  REQUIRE_THROWS_WITH(grad_norm(ints), Contains("not f32 or f64"));
}

TEST_CASE("the norm and the clipped grads do not depend on the number of threads",
          "[clip][threads]") {
  const std::int64_t n = 5 * 8192 + 77;  // several blocks, a ragged last one
  std::vector<double> big(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = 2 * counter_uniform(9, i) - 1;
  std::vector<double> norms;
  std::vector<std::vector<double>> clipped;
  for (const int threads : {1, 3}) {
    Context context;
    context.threads = threads;
    const ContextScope scope(context);
    std::vector<Param> ps = {param_with_grad("w", big), param_with_grad("v", big, DType::F64),
                             param_with_grad("b", {0.5, -0.25})};
    norms.push_back(clip_grad_norm(ps, 1.0));
    clipped.push_back(ps[0].tensor.grad().to_vector());
  }
  REQUIRE(norms[0] == norms[1]);
  REQUIRE(clipped[0] == clipped[1]);
}
