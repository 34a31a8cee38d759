// Seeded initialisers for float32 parameters. By default a tensor is a trainable leaf counted in the
// Trainable category; with trainable = false it is a frozen tensor counted as a base weight. Draws
// come from the counter generator of autograd.h, so a tensor depends only on (seed, shape).
#pragma once

#include <cstdint>

#include "edgetune/autograd/tensor.h"

namespace edgetune::adapters {

// U(-bound, bound).
Tensor uniform_param(const Shape& shape, double bound, std::uint64_t seed, bool trainable = true);
// normal(0, stddev); with truncate > 0, values beyond truncate * stddev are redrawn.
Tensor normal_param(const Shape& shape, double stddev, std::uint64_t seed, double truncate = 0,
                    bool trainable = true);
// Writes n normal(0, stddev) values into out: the values elements [first, first + n) of
// normal_param(..., seed) would get (no truncation).
void normal_values(float* out, std::int64_t n, double stddev, std::uint64_t seed, std::uint64_t first);
Tensor zeros_param(const Shape& shape, bool trainable = true);
Tensor ones_param(const Shape& shape, bool trainable = true);
// A float32 trainable copy of t (any storage, dequantized).
Tensor trainable_copy(const Tensor& t);

}  // namespace edgetune::adapters
