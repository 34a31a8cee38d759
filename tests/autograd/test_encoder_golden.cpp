// One BERT encoder layer, forward and backward, against PyTorch goldens
// (tests/golden/encoder/make_encoder_golden.py, Debian python3-torch): rtol 1e-5 in float64 and
// 1e-4 in float32, on the output, dL/dx and the gradient of every parameter.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/safetensors.h"
#include "encoder_layer.h"
#include "test_support.h"

using namespace edgetune;
using edgetune::test::require_close;

namespace {

void run_golden(const char* file, DType dtype, double rtol, double atol) {
  const auto path = test::golden_dir() / "encoder" / file;
  safetensors::Reader g(path);
  const auto meta = g.metadata();
  const int heads = std::stoi(meta.at("H"));
  const double eps = std::stod(meta.at("layer_norm_eps"));
  Tensor x = g.load("x", dtype, MemCategory::Activations);
  x.set_requires_grad(true);
  // The 0/1 mask becomes HF's additive mask: (1 - m) * lowest of the dtype.
  Tensor m01 = g.load("mask", dtype, MemCategory::Activations);
  std::vector<double> add(static_cast<size_t>(m01.numel()));
  const double lowest = dtype == DType::F64 ? std::numeric_limits<double>::lowest()
                                            : std::numeric_limits<float>::lowest();
  const auto mv = m01.to_vector();
  for (size_t i = 0; i < add.size(); ++i) add[i] = (1.0 - mv[i]) * lowest;
  const Tensor mask = Tensor::from_values(m01.shape(), add, dtype);
  std::vector<Tensor> p;
  for (const auto& name : test::encoder_param_names()) {
    Tensor t = g.load(name, dtype, MemCategory::Trainable);
    t.set_requires_grad(true);
    p.push_back(t);
  }
  Tensor out = test::encoder_layer(x, p.data(), mask, heads, eps);
  require_close("output", out.to_vector(), g.load("output", DType::F64).to_vector(), rtol, atol);
  backward(out, g.load("cotangent", dtype, MemCategory::Workspace));
  require_close("grad.x", x.grad().to_vector(), g.load("grad.x", DType::F64).to_vector(), rtol,
                atol);
  const auto& names = test::encoder_param_names();
  for (size_t i = 0; i < names.size(); ++i) {
    require_close("grad." + names[i], p[i].grad().to_vector(),
                  g.load("grad." + names[i], DType::F64).to_vector(), rtol, atol);
  }
}

}  // namespace

TEST_CASE("encoder layer forward and backward match PyTorch in float64 (rtol 1e-5)",
          "[golden][composite]") {
  run_golden("encoder_f64.safetensors", DType::F64, 1e-5, 1e-10);
}

TEST_CASE("encoder layer forward and backward match PyTorch in float32 (rtol 1e-4)",
          "[golden][composite]") {
  run_golden("encoder_f32.safetensors", DType::F32, 1e-4, 1e-5);
}
