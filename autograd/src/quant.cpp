// q8 / q4 / nf4 / pal4 quantization (formats in tensor.h). The q8 / q4 arithmetic is float32 and
// rounds half to even, exactly as the PyTorch reference scripts do it (s = amax / 127;
// q = round(w / s); w' = q * s), so both sides dequantize to the same bits.
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
std::int64_t nf4_blocks(std::int64_t k) { return (k + kNf4Block - 1) / kNf4Block; }

inline float round_half_even(float x) { return std::nearbyint(x); }

void check_quantized(const Tensor& q, const char* what) {
  if (!is_quantized(q.dtype())) {
    throw std::invalid_argument(std::string(what) + ": tensor '" + q.name() + "' is " +
                                dtype_name(q.dtype()) + ", not quantized");
  }
}

}  // namespace

Tensor quantized_empty(std::int64_t n, std::int64_t k, DType dtype, MemCategory category) {
  if (!is_quantized(dtype)) {
    throw std::invalid_argument("quantized_empty: dtype must be q8, q4, nf4 or pal4");
  }
  return Tensor::empty(Shape{n, k}, dtype, category);
}

namespace {

void set_nibble(std::uint8_t* bytes, std::int64_t j, int code) {
  std::uint8_t& b = bytes[j / 2];
  b = (j % 2 == 0) ? static_cast<std::uint8_t>((b & 0xF0) | code)
                   : static_cast<std::uint8_t>((b & 0x0F) | (code << 4));
}
int nibble(const std::uint8_t* bytes, std::int64_t j) {
  return j % 2 == 0 ? bytes[j / 2] & 0x0F : bytes[j / 2] >> 4;
}

void quantize_q8_row(Tensor& q, std::int64_t row, const float* values) {
  const std::int64_t k = q.dim(1);
  float amax = 0;
  for (std::int64_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(values[j]));
  const float s = amax / 127.0f;
  q.scales()[row] = s;
  std::int8_t* codes = q.data<std::int8_t>() + row * k;
  for (std::int64_t j = 0; j < k; ++j) {
    const float c = s == 0.0f ? 0.0f : std::clamp(round_half_even(values[j] / s), -127.0f, 127.0f);
    codes[j] = static_cast<std::int8_t>(c);
  }
}

void quantize_q4_row(Tensor& q, std::int64_t row, const float* values) {
  const std::int64_t k = q.dim(1);
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
      set_nibble(bytes, j, static_cast<int>(c) + 8);
    }
  }
}

// The index of the nf4 value nearest to x in [-1, 1]: the number of midpoints between
// neighbouring values that x exceeds, so a tie goes to the lower value.
int nf4_code(float x) {
  static constexpr auto kMid = [] {
    std::array<float, 15> m{};
    for (int i = 0; i < 15; ++i) m[i] = (kNf4Values[i] + kNf4Values[i + 1]) / 2;
    return m;
  }();
  int c = 0;
  while (c < 15 && x > kMid[c]) ++c;
  return c;
}

void quantize_nf4_row(Tensor& q, std::int64_t row, const float* values) {
  const std::int64_t k = q.dim(1);
  const std::int64_t blocks = nf4_blocks(k);
  std::uint8_t* bytes = q.data<std::uint8_t>() + row * q4_row_bytes(k);
  std::fill_n(bytes, q4_row_bytes(k), std::uint8_t{0x77});  // index 7 (zero) in both nibbles
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t j0 = blk * kNf4Block;
    const std::int64_t j1 = std::min(k, j0 + kNf4Block);
    float amax = 0;
    for (std::int64_t j = j0; j < j1; ++j) amax = std::max(amax, std::fabs(values[j]));
    q.scales()[row * blocks + blk] = amax;
    if (amax == 0.0f) continue;
    for (std::int64_t j = j0; j < j1; ++j) set_nibble(bytes, j, nf4_code(values[j] / amax));
  }
}

// Rows [row0, row0 + rows) of pal4 q, one palette group: the palette of all their values, and
// each value's code the index of the nearest palette value (a tie to the lower index).
void quantize_pal4_group(Tensor& q, std::int64_t row0, std::int64_t rows, const float* values) {
  const std::int64_t k = q.dim(1);
  const Palette p = pal4_palette({values, static_cast<std::size_t>(rows * k)});
  std::copy(p.values.begin(), p.values.end(), q.scales() + row0 / kPal4Rows * kPal4Values);
  for (std::int64_t r = 0; r < rows; ++r) {
    std::uint8_t* bytes = q.data<std::uint8_t>() + (row0 + r) * q4_row_bytes(k);
    std::fill_n(bytes, q4_row_bytes(k), std::uint8_t{0});
    for (std::int64_t j = 0; j < k; ++j) {
      const float v = values[r * k + j];
      int best = 0;
      for (int c = 1; c < kPal4Values; ++c) {
        if (std::fabs(v - p.values[c]) < std::fabs(v - p.values[best])) best = c;
      }
      set_nibble(bytes, j, best);
    }
  }
}

}  // namespace

std::int64_t quant_row_group(DType dtype) { return dtype == DType::PAL4 ? kPal4Rows : 1; }

void quantize_rows(Tensor& q, std::int64_t row0, std::int64_t rows, const float* values) {
  check_quantized(q, "quantize_rows");
  const std::int64_t n = q.dim(0), k = q.dim(1);
  const std::int64_t group = quant_row_group(q.dtype());
  if (row0 < 0 || rows < 0 || row0 + rows > n || row0 % group != 0 ||
      (rows % group != 0 && row0 + rows != n)) {
    throw std::invalid_argument("quantize_rows: rows [" + std::to_string(row0) + ", " +
                                std::to_string(row0 + rows) + ") of '" + q.name() + "' (" +
                                std::to_string(n) + " rows) do not cover whole groups of " +
                                std::to_string(group) + " rows of " + dtype_name(q.dtype()));
  }
  for (std::int64_t i = 0; i < rows * k; ++i) {
    if (!std::isfinite(values[i])) {
      throw std::invalid_argument("cannot quantize '" + q.name() + "': row " +
                                  std::to_string(row0 + i / k) + " holds " +
                                  std::to_string(values[i]) + " at column " +
                                  std::to_string(i % k) + " (weights must be finite)");
    }
  }
  for (std::int64_t r = 0; r < rows; r += group) {
    const float* v = values + r * k;
    switch (q.dtype()) {
      case DType::Q8: quantize_q8_row(q, row0 + r, v); break;
      case DType::Q4: quantize_q4_row(q, row0 + r, v); break;
      case DType::NF4: quantize_nf4_row(q, row0 + r, v); break;
      default: quantize_pal4_group(q, row0 + r, std::min(group, rows - r), v); break;
    }
  }
}

void quantize_row(Tensor& q, std::int64_t row, const float* values) {
  quantize_rows(q, row, 1, values);
}

double nf4_half_max_gap() {
  double gap = 0;
  for (int i = 0; i + 1 < 16; ++i) gap = std::max(gap, double(kNf4Values[i + 1]) - kNf4Values[i]);
  return gap / 2;
}

Palette pal4_palette(std::span<const float> values) {
  Palette p;
  if (values.empty()) return p;
  std::vector<float> v(values.begin(), values.end());
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  // prefix[i] = sum of the i smallest values, so a cluster's mean is two lookups.
  std::vector<double> prefix(n + 1, 0.0);
  for (std::size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + v[i];
  std::array<double, kPal4Values> c{};
  for (int i = 0; i < kPal4Values; ++i) {
    c[i] = v[std::min(n - 1, (2 * static_cast<std::size_t>(i) + 1) * n / (2 * kPal4Values))];
  }
  // end[i]: one past the last sorted value of cluster i (values up to the midpoint of c_i and
  // c_i+1 belong to i, so a tie goes to the lower centroid).
  std::array<std::size_t, kPal4Values> end{}, previous{};
  for (p.iterations = 1; p.iterations <= kPal4MaxIterations; ++p.iterations) {
    for (int i = 0; i + 1 < kPal4Values; ++i) {
      const double mid = (c[i] + c[i + 1]) / 2;
      end[i] = static_cast<std::size_t>(
          std::upper_bound(v.begin(), v.end(), mid, [](double m, float x) { return m < x; }) -
          v.begin());
    }
    end[kPal4Values - 1] = n;
    if (p.iterations > 1 && end == previous) {
      p.converged = true;
      break;
    }
    for (int i = 0; i < kPal4Values; ++i) {
      const std::size_t begin = i == 0 ? 0 : end[i - 1];
      if (end[i] > begin) c[i] = (prefix[end[i]] - prefix[begin]) / double(end[i] - begin);
    }
    // An empty cluster keeps its centroid, which its neighbours' new means may pass.
    std::sort(c.begin(), c.end());
    previous = end;
  }
  p.iterations = std::min(p.iterations, kPal4MaxIterations);
  for (int i = 0; i < kPal4Values; ++i) p.values[i] = static_cast<float>(c[i]);
  return p;
}

QuantFileLayout quant_file_layout(std::int64_t n, std::int64_t k, DType dtype) {
  switch (dtype) {
    case DType::Q8: return {"I8", {n, k}, {n}};
    case DType::Q4: return {"U8", {n, q4_row_bytes(k)}, {n, q4_groups(k)}};
    case DType::NF4: return {"U8", {n, q4_row_bytes(k)}, {n, nf4_blocks(k)}};
    case DType::PAL4: return {"U8", {n, q4_row_bytes(k)}, {(n + kPal4Rows - 1) / kPal4Rows, kPal4Values}};
    default: throw std::invalid_argument(std::string("quant_file_layout: ") + dtype_name(dtype) + " is not quantized");
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
  const std::int64_t group = quant_row_group(dtype);
  std::vector<float> rows(static_cast<size_t>(group * k));
  detail::dispatch_float(w.dtype(), [&]<class T>() {
    for (std::int64_t i = 0; i < n; i += group) {
      const std::int64_t count = std::min(group, n - i);
      const T* src = w.data<T>() + i * k;
      for (std::int64_t j = 0; j < count * k; ++j) rows[j] = static_cast<float>(src[j]);
      quantize_rows(q, i, count, rows.data());
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
  const std::int64_t rb = q4_row_bytes(k);
  const std::uint8_t* bytes = q.data<std::uint8_t>();
  if (q.dtype() == DType::NF4 || q.dtype() == DType::PAL4) {
    const bool nf4 = q.dtype() == DType::NF4;
    const std::int64_t blocks = nf4_blocks(k);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t i = row0 + r;
      const std::uint8_t* b = bytes + i * rb;
      const float* palette = scales + i / kPal4Rows * kPal4Values;
      T* o = out + r * k;
      for (std::int64_t j = 0; j < k; ++j) {
        const int c = nibble(b, j);
        o[j] = static_cast<T>(nf4 ? kNf4Values[c] * scales[i * blocks + j / kNf4Block] : palette[c]);
      }
    }
    return;
  }
  const std::int64_t groups = q4_groups(k);
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
