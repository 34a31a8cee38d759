// Helpers for the autograd tests: seeded random tensors.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/tensor.h"

namespace edgetune::test {

// Normal(0, stddev) values from (seed, index) by Box-Muller over the counter generator.
inline std::vector<double> normal_values(std::int64_t n, std::uint64_t seed, double stddev = 1.0) {
  std::vector<double> v(static_cast<size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const double u1 = 1.0 - counter_uniform(seed, 2 * static_cast<std::uint64_t>(i));
    const double u2 = counter_uniform(seed, 2 * static_cast<std::uint64_t>(i) + 1);
    v[i] = stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  return v;
}

inline Tensor randn(const Shape& shape, std::uint64_t seed, double stddev = 1.0,
                    DType dtype = DType::F64) {
  const auto v = normal_values(shape.numel(), seed, stddev);
  return Tensor::from_values(shape, v, dtype);
}

// A float64 leaf that requires grad.
inline Tensor param(const Shape& shape, std::uint64_t seed, double stddev = 1.0,
                    DType dtype = DType::F64) {
  Tensor t = randn(shape, seed, stddev, dtype);
  t.set_requires_grad(true);
  return t;
}

inline Tensor ids(const Shape& shape, const std::vector<std::int32_t>& values) {
  return Tensor::from_ints(shape, values);
}

}  // namespace edgetune::test
