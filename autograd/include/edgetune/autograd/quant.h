// Frozen base storage q8 and q4 (formats defined in tensor.h and ARCHITECTURE.md): quantize,
// dequantize a block of rows, and the measured round-trip error.
//
// Quantization works a row at a time so a loader can fill a quantized tensor straight from a
// memory-mapped file (f32, f16 or bf16 rows) without a float copy of the whole matrix.
#pragma once

#include <cstdint>

#include "edgetune/autograd/tensor.h"

namespace edgetune {

// A quantized (N, K) tensor with uninitialised codes and scales, to be filled by quantize_row.
Tensor quantized_empty(std::int64_t n, std::int64_t k, DType dtype,
                       MemCategory category = MemCategory::BaseWeights);

// Quantizes row `row` (K floats) of q into place. Throws std::invalid_argument, before writing,
// if a value is NaN or infinite.
void quantize_row(Tensor& q, std::int64_t row, const float* values);

// Quantizes a whole float (N, K) tensor (F32 or F64) to Q8 or Q4.
Tensor quantize(const Tensor& w, DType dtype, MemCategory category = MemCategory::BaseWeights);

// Writes rows [row0, row0 + rows) of quantized q, dequantized, to out (rows x K, row-major).
template <class T>
void dequantize_rows(const Tensor& q, std::int64_t row0, std::int64_t rows, T* out);

// Error of a quantize -> dequantize round trip of w, measured against w itself.
struct RoundTripError {
  double max_abs = 0;       // max |w - deq(q(w))|
  double rms = 0;           // sqrt(mean((w - deq(q(w)))^2))
  double relative_rms = 0;  // rms / sqrt(mean(w^2))
};
RoundTripError round_trip_error(const Tensor& w, DType dtype);

}  // namespace edgetune
