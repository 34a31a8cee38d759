// Seeded initialisers (see init.h).
#include "edgetune/adapters/init.h"

#include <cmath>

#include "edgetune/autograd/autograd.h"

namespace edgetune::adapters {

namespace {
MemCategory category(bool trainable) {
  return trainable ? MemCategory::Trainable : MemCategory::BaseWeights;
}
}  // namespace

Tensor uniform_param(const Shape& shape, double bound, std::uint64_t seed, bool trainable) {
  Tensor t = Tensor::empty(shape, DType::F32, category(trainable));
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    p[i] = static_cast<float>((2 * counter_uniform(seed, static_cast<std::uint64_t>(i)) - 1) * bound);
  }
  t.set_requires_grad(trainable);
  return t;
}

Tensor normal_param(const Shape& shape, double stddev, std::uint64_t seed, double truncate,
                    bool trainable) {
  Tensor t = Tensor::empty(shape, DType::F32, category(trainable));
  float* p = t.data<float>();
  std::uint64_t draw = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    double z;
    do {  // Box-Muller, one value per pair of draws
      const double u1 = 1.0 - counter_uniform(seed, draw++);
      const double u2 = counter_uniform(seed, draw++);
      z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    } while (truncate > 0 && std::fabs(z) > truncate);
    p[i] = static_cast<float>(z * stddev);
  }
  t.set_requires_grad(trainable);
  return t;
}

void normal_values(float* out, std::int64_t n, double stddev, std::uint64_t seed, std::uint64_t first) {
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint64_t draw = 2 * (first + static_cast<std::uint64_t>(i));
    const double u1 = 1.0 - counter_uniform(seed, draw);
    const double u2 = counter_uniform(seed, draw + 1);
    out[i] = static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2) * stddev);
  }
}

Tensor zeros_param(const Shape& shape, bool trainable) {
  Tensor t = Tensor::zeros(shape, DType::F32, category(trainable));
  t.set_requires_grad(trainable);
  return t;
}

Tensor ones_param(const Shape& shape, bool trainable) {
  Tensor t = Tensor::full(shape, 1.0, DType::F32, category(trainable));
  t.set_requires_grad(trainable);
  return t;
}

Tensor trainable_copy(const Tensor& t) {
  Tensor c = t.to(DType::F32, MemCategory::Trainable);
  c.set_name(t.name());
  c.set_requires_grad(true);
  return c;
}

}  // namespace edgetune::adapters
