// Frozen base storage q8, q4, nf4 and pal4 (formats defined in tensor.h and ARCHITECTURE.md):
// quantize, dequantize a block of rows, the layout of each in a model file, and the measured
// round-trip error.
//
// Quantization works a row at a time (pal4: a group of 16 rows, which share a palette) so a
// loader can fill a quantized tensor straight from a memory-mapped file (f32, f16 or bf16 rows)
// without a float copy of the whole matrix.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "edgetune/autograd/tensor.h"

namespace edgetune {

// A quantized (N, K) tensor with uninitialised codes and scales, to be filled by quantize_row.
Tensor quantized_empty(std::int64_t n, std::int64_t k, DType dtype,
                       MemCategory category = MemCategory::BaseWeights);

// Rows quantized together: kPal4Rows for pal4 (one palette per group of rows), 1 for the others.
std::int64_t quant_row_group(DType dtype);

// Quantizes rows [row0, row0 + rows) of q (rows x K floats, row-major) into place. row0 is a
// multiple of quant_row_group(dtype), and rows is one too or reaches the last row. Throws
// std::invalid_argument, before writing, if a value is NaN or infinite or the rows split a group.
void quantize_rows(Tensor& q, std::int64_t row0, std::int64_t rows, const float* values);
// quantize_rows of the one row `row` (K floats); for pal4 only where a group has that one row.
void quantize_row(Tensor& q, std::int64_t row, const float* values);

// Quantizes a whole float (N, K) tensor (F32 or F64) to a quantized dtype.
Tensor quantize(const Tensor& w, DType dtype, MemCategory category = MemCategory::BaseWeights);

// Writes rows [row0, row0 + rows) of quantized q, dequantized, to out (rows x K, row-major).
template <class T>
void dequantize_rows(const Tensor& q, std::int64_t row0, std::int64_t rows, T* out);

// The 16 NormalFloat4 values, ascending, index 7 exactly 0: the quantiles of a standard normal
// scaled to [-1, 1] of QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized
// LLMs", appendix E), as bitsandbytes stores them (bitsandbytes/functional.py, get_4bit_type
// "nf4"). A value w of a block with absmax s gets the code of the nearest nf4 value to w / s (a
// tie goes to the lower one).
inline constexpr std::array<float, 16> kNf4Values = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f};

// Half the largest gap between neighbouring nf4 values (between -1 and -0.696): rounding to the
// nearest one errs by at most this times the block's absmax.
double nf4_half_max_gap();

// k-means of pal4: Lloyd's iterations on the sorted values (1-D, so each cluster is a run of
// them and a step costs 16 binary searches), started at the 16 quantiles (i + 1/2) / 16 and
// stopped when no value changes cluster or after kPal4MaxIterations steps. Deterministic.
inline constexpr int kPal4MaxIterations = 100;
struct Palette {
  std::array<float, kPal4Values> values{};  // ascending
  int iterations = 0;
  // No value changed cluster in the last step: each palette value is the mean of the values
  // nearest to it (up to the float rounding of that mean), or an unused initial quantile.
  bool converged = false;
};
// The palette of `values` (any number, all finite; none gives zeros).
Palette pal4_palette(std::span<const float> values);

// How a quantized (N, K) tensor is stored in a model file: its codes under the tensor's name
// and its scales (pal4: palettes) as F32 under "<name>.scales".
struct QuantFileLayout {
  const char* codes_dtype;           // "I8" (q8) or "U8" (packed nibbles)
  std::vector<std::int64_t> codes;   // q8 (N, K); q4, nf4, pal4 (N, ceil(K/2))
  std::vector<std::int64_t> scales;  // q8 (N); q4 (N, ceil(K/32)); nf4 (N, ceil(K/64));
                                     // pal4 (ceil(N/16), 16)
};
QuantFileLayout quant_file_layout(std::int64_t n, std::int64_t k, DType dtype);

// Error of a quantize -> dequantize round trip of w, measured against w itself.
struct RoundTripError {
  double max_abs = 0;       // max |w - deq(q(w))|
  double rms = 0;           // sqrt(mean((w - deq(q(w)))^2))
  double relative_rms = 0;  // rms / sqrt(mean(w^2))
};
RoundTripError round_trip_error(const Tensor& w, DType dtype);

}  // namespace edgetune
