// q8 / q4 quantization (formats in tensor.h). The arithmetic is float32 and rounds half to even,
// exactly as the PyTorch reference scripts do it (s = amax / 127; q = round(w / s); w' = q * s),
// so both sides dequantize to the same bits.
#include "edgetune/autograd/quant.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "checks.h"

namespace edgetune {

namespace {

std::int64_t q4_groups(std::int64_t k) { return (k + kQ4Group - 1) / kQ4Group; }
std::int64_t q4_row_bytes(std::int64_t k) { return (k + 1) / 2; }

inline float round_half_even(float x) { return std::nearbyint(x); }

void check_quantized(const Tensor& q, const char* what) {
  if (!is_quantized(q.dtype())) {
    throw std::invalid_argument(std::string(what) + ": tensor '" + q.name() + "' is " +
                                dtype_name(q.dtype()) + ", not q8 or q4");
  }
}

}  // namespace

Tensor quantized_empty(std::int64_t n, std::int64_t k, DType dtype, MemCategory category) {
  if (!is_quantized(dtype)) throw std::invalid_argument("quantized_empty: dtype must be q8 or q4");
  return Tensor::empty(Shape{n, k}, dtype, category);
}

void quantize_row(Tensor& q, std::int64_t row, const float* values) {
  check_quantized(q, "quantize_row");
  const std::int64_t k = q.dim(1);
  for (std::int64_t j = 0; j < k; ++j) {
    if (!std::isfinite(values[j])) {
      throw std::invalid_argument("cannot quantize '" + q.name() + "': row " + std::to_string(row) +
                                  " holds " + std::to_string(values[j]) + " at column " +
                                  std::to_string(j) + " (weights must be finite)");
    }
  }
  if (q.dtype() == DType::Q8) {
    float amax = 0;
    for (std::int64_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(values[j]));
    const float s = amax / 127.0f;
    q.scales()[row] = s;
    std::int8_t* codes = q.data<std::int8_t>() + row * k;
    for (std::int64_t j = 0; j < k; ++j) {
      const float c = s == 0.0f ? 0.0f : std::clamp(round_half_even(values[j] / s), -127.0f, 127.0f);
      codes[j] = static_cast<std::int8_t>(c);
    }
    return;
  }
  const std::int64_t groups = q4_groups(k);
  std::uint8_t* bytes = q.data<std::uint8_t>() + row * q4_row_bytes(k);
  std::fill_n(bytes, q4_row_bytes(k), std::uint8_t{0x88});  // code 0 in both nibbles
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int64_t j0 = g * kQ4Group;
    const std::int64_t j1 = std::min(k, j0 + kQ4Group);
    float amax = 0;
    for (std::int64_t j = j0; j < j1; ++j) amax = std::max(amax, std::fabs(values[j]));
    const float s = amax / 7.0f;
    q.scales()[row * groups + g] = s;
    for (std::int64_t j = j0; j < j1; ++j) {
      const float c = s == 0.0f ? 0.0f : std::clamp(round_half_even(values[j] / s), -7.0f, 7.0f);
      const auto code = static_cast<std::uint8_t>(static_cast<int>(c) + 8);
      std::uint8_t& b = bytes[j / 2];
      b = (j % 2 == 0) ? static_cast<std::uint8_t>((b & 0xF0) | code)
                       : static_cast<std::uint8_t>((b & 0x0F) | (code << 4));
    }
  }
}

Tensor quantize(const Tensor& w, DType dtype, MemCategory category) {
  if (w.rank() != 2 || !is_float(w.dtype())) {
    throw std::invalid_argument("quantize: expected a float (N, K) matrix, got " +
                                std::string(dtype_name(w.dtype())) + " " + w.shape().str());
  }
  const std::int64_t n = w.dim(0), k = w.dim(1);
  Tensor q = quantized_empty(n, k, dtype, category);
  q.set_name(w.name());
  std::vector<float> row(static_cast<size_t>(k));
  detail::dispatch_float(w.dtype(), [&]<class T>() {
    for (std::int64_t i = 0; i < n; ++i) {
      const T* src = w.data<T>() + i * k;
      for (std::int64_t j = 0; j < k; ++j) row[j] = static_cast<float>(src[j]);
      quantize_row(q, i, row.data());
    }
  });
  return q;
}

template <class T>
void dequantize_rows(const Tensor& q, std::int64_t row0, std::int64_t rows, T* out) {
  check_quantized(q, "dequantize_rows");
  const std::int64_t k = q.dim(1);
  if (row0 < 0 || rows < 0 || row0 + rows > q.dim(0)) {
    throw std::out_of_range("dequantize_rows: rows out of range");
  }
  const float* scales = q.scales();
  if (q.dtype() == DType::Q8) {
    const std::int8_t* codes = q.data<std::int8_t>();
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t i = row0 + r;
      const float s = scales[i];
      const std::int8_t* c = codes + i * k;
      T* o = out + r * k;
      for (std::int64_t j = 0; j < k; ++j) o[j] = static_cast<T>(static_cast<float>(c[j]) * s);
    }
    return;
  }
  const std::int64_t groups = q4_groups(k);
  const std::int64_t rb = q4_row_bytes(k);
  const std::uint8_t* bytes = q.data<std::uint8_t>();
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t i = row0 + r;
    const std::uint8_t* b = bytes + i * rb;
    const float* s = scales + i * groups;
    T* o = out + r * k;
    std::int64_t j = 0;
    for (; j + 1 < k; j += 2) {
      const float sj = s[j / kQ4Group];  // j and j + 1 share a group: 32 is even
      const std::uint8_t v = b[j / 2];
      o[j] = static_cast<T>(static_cast<float>((v & 0x0F) - 8) * sj);
      o[j + 1] = static_cast<T>(static_cast<float>((v >> 4) - 8) * sj);
    }
    if (j < k) o[j] = static_cast<T>(static_cast<float>((b[j / 2] & 0x0F) - 8) * s[j / kQ4Group]);
  }
}
template void dequantize_rows<float>(const Tensor&, std::int64_t, std::int64_t, float*);
template void dequantize_rows<double>(const Tensor&, std::int64_t, std::int64_t, double*);

RoundTripError round_trip_error(const Tensor& w, DType dtype) {
  const Tensor q = quantize(w, dtype, MemCategory::Workspace);
  const std::vector<double> a = w.to_vector();
  const std::vector<double> b = q.to_vector();
  RoundTripError e;
  double sq = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = a[i] - b[i];
    e.max_abs = std::max(e.max_abs, std::fabs(d));
    sq += d * d;
    ref += a[i] * a[i];
  }
  const double n = static_cast<double>(std::max<size_t>(a.size(), 1));
  e.rms = std::sqrt(sq / n);
  e.relative_rms = ref > 0 ? e.rms / std::sqrt(ref / n) : 0.0;
  return e;
}

}  // namespace edgetune
