// Gradient checks of composed blocks: a whole attention block and a whole encoder layer, with and
// without checkpoint(), over float and quantized weights.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <stdexcept>

#include "edgetune/autograd/gradcheck.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/quant.h"
#include "encoder_layer.h"
#include "util.h"

using namespace edgetune;
using edgetune::test::encoder_layer;
using edgetune::test::param;
using edgetune::test::randn;

namespace {

constexpr int kB = 2, kT = 5, kC = 8, kH = 2, kF = 12;

// The 16 BertLayer parameters, trainable, float64.
std::vector<Tensor> layer_params(std::uint64_t seed) {
  const std::vector<Shape> shapes = {{kC, kC}, {kC}, {kC, kC}, {kC}, {kC, kC}, {kC},
                                     {kC, kC}, {kC}, {kC},     {kC}, {kF, kC}, {kF},
                                     {kC, kF}, {kC}, {kC},     {kC}};
  std::vector<Tensor> p;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor t = param(shapes[i], seed + i, 0.4);
    if (i == 8 || i == 14) {  // LayerNorm weights around 1
      double* v = t.data<double>();
      for (std::int64_t j = 0; j < t.numel(); ++j) v[j] += 1.0;
    }
    p.push_back(t);
  }
  return p;
}

// Attention mask (B, T): the second sequence has two padding positions.
Tensor padding_mask() {
  const double lowest = std::numeric_limits<double>::lowest();
  std::vector<double> m(kB * kT, 0.0);
  m[kT + 3] = m[kT + 4] = lowest;
  return Tensor::from_values({kB, kT}, m, DType::F64);
}

void require_ok(const char* what, const GradcheckResult& r) {
  INFO(what << ": " << r.summary());
  WARN("gradcheck " << what << ": max abs error " << r.max_abs_error << ", max rel error "
                    << r.max_rel_error << " over " << r.checked << " elements");
  REQUIRE(r.ok);
}

}  // namespace

TEST_CASE("gradcheck whole attention block with padding mask", "[gradcheck][composite]") {
  std::vector<Tensor> in = {param({kB, kT, kC}, 100)};
  for (const Tensor& p : layer_params(200)) in.push_back(p);
  in.resize(1 + 8);  // x, the six q/k/v tensors, and the output projection
  in.push_back(padding_mask());
  auto fn = [](const std::vector<Tensor>& v) {
    Tensor ctx = test::attention_context(v[0], &v[1], v[9], kH);
    return ops::linear(ctx, v[7], v[8]);
  };
  require_ok("attention block", gradcheck(fn, in));
}

TEST_CASE("gradcheck whole encoder layer, without and with checkpoint", "[gradcheck][composite]") {
  std::vector<Tensor> in = {param({kB, kT, kC}, 300)};
  for (const Tensor& p : layer_params(400)) in.push_back(p);
  in.push_back(padding_mask());
  auto plain = [](const std::vector<Tensor>& v) {
    return encoder_layer(v[0], &v[1], v[17], kH, 1e-12);
  };
  auto checkpointed = [](const std::vector<Tensor>& v) {
    // x is the checkpoint input; the weights are used from the closure, as a model does.
    return checkpoint(
        [&v](const std::vector<Tensor>& xs) { return encoder_layer(xs[0], &v[1], v[17], kH, 1e-12); },
        {v[0]});
  };
  require_ok("encoder layer", gradcheck(plain, in));
  require_ok("encoder layer (checkpoint)", gradcheck(checkpointed, in));
}

TEST_CASE("checkpoint gives gradients identical to the plain layer, dropout included",
          "[checkpoint][composite]") {
  std::vector<Tensor> p = layer_params(500);
  Tensor x = param({kB, kT, kC}, 600);
  Tensor mask = padding_mask();
  Tensor cot = randn({kB, kT, kC}, 700);
  auto layer = [&](const Tensor& in) {
    return ops::dropout(encoder_layer(ops::dropout(in, 0.2, true), p.data(), mask, kH, 1e-12), 0.1,
                        true);
  };
  auto grads_of = [&](bool use_checkpoint) {
    for (Tensor& t : p) t.set_grad(Tensor());
    x.set_grad(Tensor());
    manual_seed(42);
    Tensor out = use_checkpoint
                     ? checkpoint([&](const std::vector<Tensor>& v) { return layer(v[0]); }, {x})
                     : layer(x);
    // Ops after the checkpoint draw from the generator where the layer left it.
    Tensor after = ops::dropout(out, 0.5, true);
    backward(after, cot);
    std::vector<std::vector<double>> g = {x.grad().to_vector(), after.to_vector()};
    for (Tensor& t : p) g.push_back(t.grad().to_vector());
    return g;
  };
  const auto a = grads_of(false);
  const auto b = grads_of(true);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == b[i]);  // bit for bit
}

TEST_CASE("a throwing checkpoint leaves the dropout generator and grad mode as they were",
          "[checkpoint]") {
  Tensor x = param({kB, kT, kC}, 1000);
  int runs = 0;
  RngState at_rerun;
  bool grad_at_rerun = false;
  // Draws a dropout mask, then fails on the re-run that backward makes.
  auto fn = [&](const std::vector<Tensor>& v) {
    if (++runs == 2) {
      at_rerun = dropout_rng();
      grad_at_rerun = grad_enabled();
    }
    Tensor y = ops::dropout(v[0], 0.3, true);
    if (runs == 2) throw std::runtime_error("re-run failed");
    return ops::tanh(y);
  };
  manual_seed(7);
  Tensor out = checkpoint(fn, {x});
  // A later op moves the generator on, so the forward's state and the caller's state differ.
  Tensor loss = ops::sum(ops::dropout(out, 0.5, true));
  const RngState before = dropout_rng();
  REQUIRE(before.counter == static_cast<std::uint64_t>(2 * x.numel()));

  SECTION("the re-run throws") {
    REQUIRE_THROWS_WITH(backward(loss), "re-run failed");
    REQUIRE(runs == 2);
    CHECK(at_rerun.seed == 7);  // the re-run replayed the forward's generator
    CHECK(at_rerun.counter == 0);
    CHECK(grad_at_rerun);
  }
  SECTION("backward runs with gradients disabled") {
    {
      NoGradGuard no_grad;
      REQUIRE_THROWS_WITH(backward(loss), "checkpoint recomputation with gradients disabled");
      CHECK_FALSE(grad_enabled());
    }
    CHECK(runs == 1);
  }
  CHECK(dropout_rng().seed == before.seed);
  CHECK(dropout_rng().counter == before.counter);
  CHECK(grad_enabled());
}

TEST_CASE("a checkpoint whose forward throws leaves grad mode on", "[checkpoint]") {
  Tensor x = param({kB, kT, kC}, 1100);
  bool grad_inside = true;
  auto fn = [&](const std::vector<Tensor>&) -> Tensor {
    grad_inside = grad_enabled();
    throw std::runtime_error("forward failed");
  };
  REQUIRE_THROWS_WITH(checkpoint(fn, {x}), "forward failed");
  CHECK_FALSE(grad_inside);  // the forward ran without recording
  CHECK(grad_enabled());
}

TEST_CASE("gradcheck encoder layer over frozen q8 and q4 weights (dX, LayerNorm and biases)",
          "[gradcheck][composite][quant]") {
  for (DType q : {DType::Q8, DType::Q4}) {
    std::vector<Tensor> in = {param({kB, kT, kC}, 800)};
    std::vector<Tensor> p = layer_params(900);
    for (int w : {0, 2, 4, 6, 10, 12}) p[w] = quantize(p[w], q);  // the six Linear weights
    for (const Tensor& t : p) in.push_back(t);
    in.push_back(padding_mask());
    auto fn = [](const std::vector<Tensor>& v) {
      return checkpoint(
          [&v](const std::vector<Tensor>& xs) {
            return encoder_layer(xs[0], &v[1], v[17], kH, 1e-12);
          },
          {v[0]});
    };
    require_ok(q == DType::Q8 ? "encoder layer q8 (checkpoint)" : "encoder layer q4 (checkpoint)",
               gradcheck(fn, in));
    for (int w : {0, 2, 4, 6, 10, 12}) REQUIRE_FALSE(p[w].grad().defined());
  }
}
