// The integer GEMM driver (see qgemm.h): implementation choice, activation quantization, weight
// packing, and the split of the work over threads. The arithmetic of a tile is in the per
// instruction set files (tiles.h).
#include "edgetune/autograd/qgemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "tiles.h"

namespace edgetune::qgemm {

namespace {

constexpr Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni};

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
#if defined(__x86_64__)
    case Isa::Avx2: return __builtin_cpu_supports("x86-64-v3");
    case Isa::Avx512Vnni:
      return __builtin_cpu_supports("x86-64-v4") && __builtin_cpu_supports("avx512vnni");
#else
    case Isa::Avx2:
    case Isa::Avx512Vnni: return false;
#endif
  }
  return false;
}

Isa choose_isa() {
  const char* forced = std::getenv("EDGETUNE_KERNELS");
  if (forced != nullptr && *forced != '\0') {
    Isa isa;
    try {
      isa = parse_isa(forced);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(std::string("EDGETUNE_KERNELS: ") + e.what());
    }
    if (!isa_available(isa)) {
      std::string names;
      for (Isa a : available_isas()) names += std::string(names.empty() ? "" : ", ") + isa_name(a);
      throw std::runtime_error(std::string("EDGETUNE_KERNELS=") + forced +
                               ": this CPU does not support it (available: " + names + ")");
    }
    return isa;
  }
  return available_isas().back();
}

std::int64_t round_up(std::int64_t v, std::int64_t to) { return (v + to - 1) / to * to; }

// A workspace buffer of `bytes` bytes counted by the accountant.
Tensor workspace_bytes(std::int64_t bytes) {
  return Tensor::empty(Shape{std::max<std::int64_t>((bytes + 3) / 4, 1)}, DType::I32,
                       MemCategory::Workspace);
}

// The bytes of a workspace_bytes buffer.
std::uint8_t* bytes_of(const Tensor& t) {
  return reinterpret_cast<std::uint8_t*>(t.data<std::int32_t>());
}

// Quantizes row `row` of src (len floats, times colscale[i] when given) into codes + 128
// (r_len bytes, padded with 128) and one scale per block of 32.
void quantize_row(const float* src, std::int64_t len, const float* colscale, std::uint8_t* codes,
                  float* scales, std::int64_t blocks) {
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t i0 = blk * kBlock;
    const int n = static_cast<int>(std::min<std::int64_t>(kBlock, len - i0));
    float v[kBlock];
    for (int i = 0; i < n; ++i) v[i] = colscale ? src[i0 + i] * colscale[i0 + i] : src[i0 + i];
    float amax = 0.0f;
    for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    scales[blk] = amax / 127.0f;
    std::uint8_t* out = codes + i0;
    for (int i = 0; i < n; ++i) {
      const float q = std::clamp(std::nearbyint(v[i] * inv), -127.0f, 127.0f);
      out[i] = static_cast<std::uint8_t>(static_cast<int>(q) + 128);
    }
    for (int i = n; i < kBlock; ++i) out[i] = 128;
  }
}

// Codes of row n of a quantized (N, K) w, columns [k0, k0 + count) (all inside the row).
void row_codes(const Tensor& w, std::int64_t n, std::int64_t k0, std::int64_t count,
               std::int8_t* out) {
  const std::int64_t k = w.dim(1);
  if (w.dtype() == DType::Q8) {
    std::memcpy(out, w.data<std::int8_t>() + n * k + k0, static_cast<size_t>(count));
    return;
  }
  const std::uint8_t* bytes = w.data<std::uint8_t>() + n * ((k + 1) / 2);
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int64_t j = k0 + i;
    const int nibble = (j % 2 == 0) ? (bytes[j / 2] & 0x0F) : (bytes[j / 2] >> 4);
    out[i] = static_cast<std::int8_t>(nibble - 8);
  }
}

// Where one panel's packed weights go (layout in qgemm.h).
struct PanelOut {
  std::int8_t* b;
  std::int32_t* bsum;
  float* sb;
};

// Forward panel: output columns are rows [n0, n0 + 16) of w, reduction along K in kb blocks.
// row is scratch of kb * 32 bytes.
void pack_forward_panel(const Tensor& w, std::int64_t n0, std::int64_t kb, std::int8_t* row,
                        PanelOut out) {
  const std::int64_t n = w.dim(0), k = w.dim(1), groups = (k + kQ4Group - 1) / kQ4Group;
  const float* scales = w.scales();
  for (int j = 0; j < kPanel; ++j) {
    const std::int64_t r = n0 + j;
    std::fill_n(row, kb * kBlock, std::int8_t{0});
    if (r < n) row_codes(w, r, 0, k, row);
    for (std::int64_t blk = 0; blk < kb; ++blk) {
      std::int32_t sum = 0;
      for (int i = 0; i < kBlock; ++i) sum += row[blk * kBlock + i];
      out.bsum[blk * kPanel + j] = sum;
      out.sb[blk * kPanel + j] =
          r >= n ? 0.0f : (w.dtype() == DType::Q8 ? scales[r] : scales[r * groups + blk]);
      std::int8_t* dst = out.b + blk * kBlock * kPanel + j * 4;
      for (int r4 = 0; r4 < kBlock / 4; ++r4) {
        std::memcpy(dst + r4 * kPanel * 4, row + blk * kBlock + r4 * 4, 4);
      }
    }
  }
}

// dX panel: output columns are columns [k0, k0 + 16) of w, reduction along N in kb blocks.
// q8 keeps the codes (the row scales went into dY); q4 requantizes each 32 x 1 tile of the
// dequantized w to int8 with its own scale (see qgemm.h).
void pack_backward_panel(const Tensor& w, std::int64_t k0, std::int64_t kb, PanelOut out) {
  const std::int64_t n = w.dim(0), k = w.dim(1), groups = (k + kQ4Group - 1) / kQ4Group;
  const std::int64_t cols = std::min<std::int64_t>(kPanel, k - k0);
  const std::int64_t group = k0 / kQ4Group;  // a panel lies inside one group: 16 divides 32
  const float* scales = w.scales();
  for (std::int64_t blk = 0; blk < kb; ++blk) {
    std::int8_t codes[kBlock][kPanel] = {};
    float tile_scale[kPanel];
    std::fill_n(tile_scale, kPanel, w.dtype() == DType::Q8 ? 1.0f : 0.0f);
    const int rows = static_cast<int>(std::min<std::int64_t>(kBlock, n - blk * kBlock));
    for (int r = 0; r < rows; ++r) row_codes(w, blk * kBlock + r, k0, cols, codes[r]);
    if (w.dtype() == DType::Q4) {
      float v[kBlock][kPanel] = {};
      float amax[kPanel] = {};
      for (int r = 0; r < rows; ++r) {
        const float s = scales[(blk * kBlock + r) * groups + group];
        for (int j = 0; j < kPanel; ++j) {
          v[r][j] = s * static_cast<float>(codes[r][j]);
          amax[j] = std::max(amax[j], std::fabs(v[r][j]));
        }
      }
      for (int j = 0; j < kPanel; ++j) {
        tile_scale[j] = amax[j] / 127.0f;
        const float inv = amax[j] > 0.0f ? 127.0f / amax[j] : 0.0f;
        for (int r = 0; r < rows; ++r) {
          codes[r][j] = static_cast<std::int8_t>(
              std::clamp(std::nearbyint(v[r][j] * inv), -127.0f, 127.0f));
        }
      }
    }
    for (int j = 0; j < kPanel; ++j) {
      std::int32_t sum = 0;
      for (int r = 0; r < kBlock; ++r) sum += codes[r][j];
      out.bsum[blk * kPanel + j] = sum;
      out.sb[blk * kPanel + j] = tile_scale[j];
    }
    std::int8_t* dst = out.b + blk * kBlock * kPanel;
    for (int r4 = 0; r4 < kBlock / 4; ++r4) {
      for (int j = 0; j < kPanel; ++j) {
        for (int i = 0; i < 4; ++i) dst[(r4 * kPanel + j) * 4 + i] = codes[r4 * 4 + i][j];
      }
    }
  }
}

// Rows per work item; a multiple of the register tiles' 6 and 4 rows.
constexpr std::int64_t kTaskRows = 48;

// c (M, cols) (+)= quantize(src) (M, len) x packed(w), packing kChunkColumns output columns at a
// time. forward: src = x, len = K, cols = N; else src = dy, len = N, cols = K.
void gemm(float* c, const float* src, const float* colscale, std::int64_t m, const Tensor& w,
          bool forward, Isa isa, int threads) {
  if (m == 0) return;
  const std::int64_t len = forward ? w.dim(1) : w.dim(0);
  const std::int64_t cols = forward ? w.dim(0) : w.dim(1);
  const std::int64_t kb = (len + kBlock - 1) / kBlock, r_len = kb * kBlock;
  const std::int64_t chunk = std::min(kChunkColumns, round_up(cols, kPanel));
  const std::int64_t panel_bytes = kb * kBlock * kPanel;
  const std::int64_t chunk_panels = chunk / kPanel;
  Tensor a = workspace_bytes(m * r_len);
  Tensor sa = Tensor::empty(Shape{m, kb}, DType::F32, MemCategory::Workspace);
  Tensor b = workspace_bytes(chunk_panels * panel_bytes);
  Tensor bsum = Tensor::empty(Shape{chunk_panels, kb, kPanel}, DType::I32, MemCategory::Workspace);
  Tensor sb = Tensor::empty(Shape{chunk_panels, kb, kPanel}, DType::F32, MemCategory::Workspace);
  Tensor rows_scratch = workspace_bytes(static_cast<std::int64_t>(threads) * r_len);

  Operands o;
  o.a = bytes_of(a);
  o.lda = r_len;
  o.sa = sa.data<float>();
  o.ldsa = kb;
  o.b = reinterpret_cast<std::int8_t*>(bytes_of(b));
  o.bsum = bsum.data<std::int32_t>();
  o.sb = sb.data<float>();
  o.kb = kb;
  o.ldc = cols;
  o.accumulate = !forward;

  const std::int64_t task_rows = std::min(kTaskRows, m);
  const std::int64_t row_tasks = (m + task_rows - 1) / task_rows;
#pragma omp parallel num_threads(threads)
  {
    std::uint8_t* codes = bytes_of(a);
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < m; ++i) {
      quantize_row(src + i * len, len, colscale, codes + i * r_len, sa.data<float>() + i * kb, kb);
    }
    std::int8_t* row =
        reinterpret_cast<std::int8_t*>(bytes_of(rows_scratch)) + omp_get_thread_num() * r_len;
    for (std::int64_t c0 = 0; c0 < cols; c0 += chunk) {
      const std::int64_t width = std::min(chunk, cols - c0);
      const std::int64_t panels = (width + kPanel - 1) / kPanel;
#pragma omp for schedule(static)
      for (std::int64_t p = 0; p < panels; ++p) {
        const PanelOut out{reinterpret_cast<std::int8_t*>(bytes_of(b)) + p * panel_bytes,
                           bsum.data<std::int32_t>() + p * kb * kPanel,
                           sb.data<float>() + p * kb * kPanel};
        if (forward) {
          pack_forward_panel(w, c0 + p * kPanel, kb, row, out);
        } else {
          pack_backward_panel(w, c0 + p * kPanel, kb, out);
        }
      }
      Operands oc = o;
      oc.c = c + c0;
      oc.n = width;
      const std::int64_t pair_tasks = (panels + 1) / 2;
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t t = 0; t < row_tasks * pair_tasks; ++t) {
        const std::int64_t m0 = (t / pair_tasks) * task_rows;
        const std::int64_t p0 = (t % pair_tasks) * 2;
        run_tiles(isa, oc, m0, std::min(m, m0 + task_rows), p0, std::min(panels, p0 + 2));
      }
    }
  }
}

void require_quantized_weight(const Tensor& w, const char* what) {
  if (!is_quantized(w.dtype()) || w.rank() != 2) {
    throw std::invalid_argument(std::string(what) + ": weight '" + w.name() + "' must be a q8 or q4 (N, K) matrix, got " +
                                dtype_name(w.dtype()) + " " + w.shape().str());
  }
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

Isa parse_isa(const std::string& name) {
  for (Isa isa : kAllIsas) {
    if (name == isa_name(isa)) return isa;
  }
  throw std::invalid_argument("unknown kernel implementation '" + name +
                              "' (expected scalar, avx2 or avx512vnni)");
}

bool isa_available(Isa isa) {
  static const bool available[] = {cpu_supports(Isa::Scalar), cpu_supports(Isa::Avx2),
                                   cpu_supports(Isa::Avx512Vnni)};
  return available[static_cast<int>(isa)];
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas) {
    if (isa_available(isa)) out.push_back(isa);
  }
  return out;
}

Isa selected_isa() {
  static const Isa isa = choose_isa();
  return isa;
}

void run_tiles(Isa isa, const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
               std::int64_t p1) {
  switch (isa) {
    case Isa::Scalar: detail::tiles_scalar(o, m0, m1, p0, p1); return;
#if defined(__x86_64__)
    case Isa::Avx2: detail::tiles_avx2(o, m0, m1, p0, p1); return;
    case Isa::Avx512Vnni: detail::tiles_avx512vnni(o, m0, m1, p0, p1); return;
#else
    case Isa::Avx2:
    case Isa::Avx512Vnni: break;
#endif
  }
  throw std::invalid_argument(std::string("qgemm: implementation ") + isa_name(isa) +
                              " is not available in this build");
}

void linear_forward(float* y, const float* x, std::int64_t m, const Tensor& w, Isa isa,
                    int threads) {
  require_quantized_weight(w, "qgemm::linear_forward");
  gemm(y, x, nullptr, m, w, true, isa, std::max(threads, 1));
}

void linear_backward_input(float* dx, const float* dy, std::int64_t m, const Tensor& w, Isa isa,
                           int threads) {
  require_quantized_weight(w, "qgemm::linear_backward_input");
  gemm(dx, dy, w.dtype() == DType::Q8 ? w.scales() : nullptr, m, w, false, isa,
       std::max(threads, 1));
}

}  // namespace edgetune::qgemm
