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

#if defined(__x86_64__)
#include <emmintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

#include "edgetune/autograd/quant.h"
#include "tiles.h"

namespace edgetune::qgemm {

namespace {

constexpr Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2,    Isa::Avx512Vnni,
                            Isa::Neon,   Isa::Dotprod, Isa::I8mm};

#if defined(__aarch64__) && defined(__linux__)
// The kernel's feature bits (linux/arch/arm64/include/uapi/asm/hwcap.h), stated here because
// older C library headers lack the newer ones.
constexpr unsigned long kHwcapAsimd = 1UL << 1;
constexpr unsigned long kHwcapAsimdDp = 1UL << 20;
constexpr unsigned long kHwcap2I8mm = 1UL << 13;

bool hwcap(unsigned long bit) {
  return (getauxval(AT_HWCAP) & bit) != 0;
}
bool hwcap2(unsigned long bit) {
  return (getauxval(AT_HWCAP2) & bit) != 0;
}
#endif

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return true;
#if defined(__x86_64__)
    case Isa::Avx2:
      return __builtin_cpu_supports("x86-64-v3");
    case Isa::Avx512Vnni:
      return __builtin_cpu_supports("x86-64-v4") && __builtin_cpu_supports("avx512vnni");
#else
    case Isa::Avx2:
    case Isa::Avx512Vnni:
      return false;
#endif
#if defined(__aarch64__) && defined(__linux__)
    case Isa::Neon:
      return hwcap(kHwcapAsimd);
    case Isa::Dotprod:
      return hwcap(kHwcapAsimd) && hwcap(kHwcapAsimdDp);
    case Isa::I8mm:
      return hwcap(kHwcapAsimd) && hwcap2(kHwcap2I8mm);
#elif defined(__aarch64__)
    // Advanced SIMD is part of every ARM64 CPU; without getauxval the newer extensions are not
    // detected and not used.
    case Isa::Neon:
      return true;
    case Isa::Dotprod:
    case Isa::I8mm:
      return false;
#else
    case Isa::Neon:
    case Isa::Dotprod:
    case Isa::I8mm:
      return false;
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

std::int64_t round_up(std::int64_t v, std::int64_t to) {
  return (v + to - 1) / to * to;
}

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

// max|p| / 127 of a palette (16 floats): the scale of its int8 lookup.
float palette_scale(const float* p) {
  float m = 0.0f;
  for (int c = 0; c < kPal4Values; ++c) m = std::max(m, std::fabs(p[c]));
  return m / 127.0f;
}

// table[c] = round(values[c] / scale), the int8 lookup of 16 values at scale max|values| / 127
// (zeros when all are zero).
void int8_table(const float* values, std::int8_t* table) {
  const float scale = palette_scale(values);
  for (int c = 0; c < 16; ++c) {
    table[c] = scale > 0.0f ? static_cast<std::int8_t>(std::nearbyint(values[c] / scale)) : 0;
  }
}

// A quantized (N, K) weight's storage, read without the Tensor accessors' checks in the packing
// loops. The 4-bit formats read their codes through a 16-entry int8 table (q4: code - 8; nf4 and
// pal4 the lookup of qgemm.h, pal4's made from the row's palette when read, so no workspace)
// beside a scale per row and group of 32 inputs.
struct WeightView {
  explicit WeightView(const Tensor& w)
      : dtype(w.dtype()),
        q8(w.dtype() == DType::Q8),
        n(w.dim(0)),
        k(w.dim(1)),
        groups((w.dim(1) + kQ4Group - 1) / kQ4Group),
        codes(q8 ? reinterpret_cast<const std::uint8_t*>(w.data<std::int8_t>())
                 : w.data<std::uint8_t>()),
        scales(w.scales()) {
    if (dtype == DType::NF4) {
      int8_table(kNf4Values.data(), table);
    } else {
      for (int c = 0; c < 16; ++c) table[c] = static_cast<std::int8_t>(c - 8);
    }
  }

  // Codes of row r, columns [k0, k0 + count) (inside the row; k0 even), as int8.
  void row_codes(std::int64_t r, std::int64_t k0, std::int64_t count, std::int8_t* out) const {
    if (q8) {
      std::memcpy(out, codes + r * k + k0, static_cast<size_t>(count));
      return;
    }
    std::int8_t palette_table[16];
    const std::int8_t* t = table;
    if (dtype == DType::PAL4) {
      int8_table(scales + r / kPal4Rows * kPal4Values, palette_table);
      t = palette_table;
    }
    const std::uint8_t* bytes = codes + r * ((k + 1) / 2) + k0 / 2;
    const std::int64_t pairs = count / 2;
    for (std::int64_t i = 0; i < pairs; ++i) {
      out[2 * i] = t[bytes[i] & 0x0F];
      out[2 * i + 1] = t[bytes[i] >> 4];
    }
    if (count % 2) out[count - 1] = t[bytes[pairs] & 0x0F];
  }
  // The scale of row r's codes in group g: q8 its row scale, q4 that of group g, nf4 its 64-input
  // block's absmax / 127, pal4 its palette's max |value| / 127.
  float scale(std::int64_t r, std::int64_t g) const {
    switch (dtype) {
      case DType::Q8: return scales[r];
      case DType::NF4: return scales[r * ((k + kNf4Block - 1) / kNf4Block) + g / 2] * (1.0f / 127.0f);
      case DType::PAL4: return palette_scale(scales + r / kPal4Rows * kPal4Values);
      default: return scales[r * groups + g];
    }
  }
  // The largest |code| row_codes gives: 7 for q4, 127 for the others.
  float code_max() const { return dtype == DType::Q4 ? 7.0f : 127.0f; }

  DType dtype;
  bool q8;
  std::int64_t n, k, groups;
  const std::uint8_t* codes;  // q8: int8 codes; else packed nibbles
  const float* scales;        // pal4: the palettes
  std::int8_t table[16] = {};  // q4 and nf4: the int8 code of each nibble
};

// Where one panel's packed weights go (layout in qgemm.h).
struct PanelOut {
  std::int8_t* b;
  std::int32_t* bsum;
  float* sb;
};

// Forward panel: output columns are rows [n0, n0 + 16) of w, reduction along K in kb blocks.
// row is scratch of kb * 32 bytes. The reference: any K, any panel (rows past N are zero).
void pack_forward_panel_reference(const WeightView& w, std::int64_t n0, std::int64_t kb,
                                  std::int8_t* row, PanelOut out) {
  const std::int64_t n = w.n, k = w.k;
  for (int j = 0; j < kPanel; ++j) {
    const std::int64_t r = n0 + j;
    std::fill_n(row + k, kb * kBlock - k, std::int8_t{0});
    if (r < n) {
      w.row_codes(r, 0, k, row);
    } else {
      std::fill_n(row, k, std::int8_t{0});
    }
    for (std::int64_t blk = 0; blk < kb; ++blk) {
      std::int32_t sum = 0;
      for (int i = 0; i < kBlock; ++i) sum += row[blk * kBlock + i];
      out.bsum[blk * kPanel + j] = sum;
      out.sb[blk * kPanel + j] = r >= n ? 0.0f : w.scale(r, blk);
      std::int8_t* dst = out.b + blk * kBlock * kPanel + j * 4;
      for (int r4 = 0; r4 < kBlock / 4; ++r4) {
        std::memcpy(dst + r4 * kPanel * 4, row + blk * kBlock + r4 * 4, 4);
      }
    }
  }
}

#if defined(__x86_64__) || defined(__aarch64__)
// 16 signed bytes, and the 4x4 transpose of 32-bit words, in SSE2 or NEON.
#if defined(__x86_64__)
using V16 = __m128i;
inline V16 load16(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline void store16(void* p, V16 v) { _mm_storeu_si128(static_cast<__m128i*>(p), v); }
// The 32 q4 codes (nibble - 8, low nibble first) of 16 bytes.
inline void unpack_q4(V16 bytes, V16& lo, V16& hi) {
  const __m128i low4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  const __m128i l = _mm_and_si128(bytes, low4), h = _mm_and_si128(_mm_srli_epi16(bytes, 4), low4);
  lo = _mm_sub_epi8(_mm_unpacklo_epi8(l, h), eight);
  hi = _mm_sub_epi8(_mm_unpackhi_epi8(l, h), eight);
}
// The sum of the 32 signed bytes of a and b: biased to unsigned and summed by psadbw.
inline std::int32_t sum32(V16 a, V16 b) {
  const __m128i bias = _mm_set1_epi8(static_cast<char>(0x80)), zero = _mm_setzero_si128();
  const __m128i s = _mm_add_epi64(_mm_sad_epu8(_mm_xor_si128(a, bias), zero),
                                  _mm_sad_epu8(_mm_xor_si128(b, bias), zero));
  return static_cast<std::int32_t>(_mm_cvtsi128_si32(s) + _mm_extract_epi16(s, 4)) - 32 * 128;
}
inline void transpose4(V16& r0, V16& r1, V16& r2, V16& r3) {
  const __m128i a0 = _mm_unpacklo_epi32(r0, r1), a1 = _mm_unpacklo_epi32(r2, r3);
  const __m128i a2 = _mm_unpackhi_epi32(r0, r1), a3 = _mm_unpackhi_epi32(r2, r3);
  r0 = _mm_unpacklo_epi64(a0, a1);
  r1 = _mm_unpackhi_epi64(a0, a1);
  r2 = _mm_unpacklo_epi64(a2, a3);
  r3 = _mm_unpackhi_epi64(a2, a3);
}
#else
using V16 = int8x16_t;
inline V16 load16(const void* p) { return vld1q_s8(static_cast<const std::int8_t*>(p)); }
inline void store16(void* p, V16 v) { vst1q_s8(static_cast<std::int8_t*>(p), v); }
inline void unpack_q4(V16 bytes, V16& lo, V16& hi) {
  const uint8x16_t b = vreinterpretq_u8_s8(bytes);
  const uint8x16_t l = vandq_u8(b, vdupq_n_u8(0x0F)), h = vshrq_n_u8(b, 4);
  lo = vsubq_s8(vreinterpretq_s8_u8(vzip1q_u8(l, h)), vdupq_n_s8(8));
  hi = vsubq_s8(vreinterpretq_s8_u8(vzip2q_u8(l, h)), vdupq_n_s8(8));
}
inline std::int32_t sum32(V16 a, V16 b) {
  return static_cast<std::int32_t>(vaddlvq_s8(a)) + static_cast<std::int32_t>(vaddlvq_s8(b));
}
inline void transpose4(V16& r0, V16& r1, V16& r2, V16& r3) {
  const int32x4_t a0 = vtrn1q_s32(vreinterpretq_s32_s8(r0), vreinterpretq_s32_s8(r1));
  const int32x4_t a1 = vtrn2q_s32(vreinterpretq_s32_s8(r0), vreinterpretq_s32_s8(r1));
  const int32x4_t a2 = vtrn1q_s32(vreinterpretq_s32_s8(r2), vreinterpretq_s32_s8(r3));
  const int32x4_t a3 = vtrn2q_s32(vreinterpretq_s32_s8(r2), vreinterpretq_s32_s8(r3));
  r0 = vreinterpretq_s8_s64(vtrn1q_s64(vreinterpretq_s64_s32(a0), vreinterpretq_s64_s32(a2)));
  r1 = vreinterpretq_s8_s64(vtrn1q_s64(vreinterpretq_s64_s32(a1), vreinterpretq_s64_s32(a3)));
  r2 = vreinterpretq_s8_s64(vtrn2q_s64(vreinterpretq_s64_s32(a0), vreinterpretq_s64_s32(a2)));
  r3 = vreinterpretq_s8_s64(vtrn2q_s64(vreinterpretq_s64_s32(a1), vreinterpretq_s64_s32(a3)));
}
#endif

// The reference's bytes for a whole panel (n0 + 16 <= N) of a weight whose K is a multiple of
// 32, so every block is whole and (q4) starts on a byte: per block, the 32 codes of each of the
// 16 rows are loaded (q4: unpacked) as two vectors of 4 words, their sum taken, and each 4x4 tile
// of words transposed into place ([r4][j] words of the panel layout).
void pack_forward_panel_simd(const WeightView& w, std::int64_t n0, std::int64_t kb, PanelOut out) {
  const std::int64_t row_bytes = w.q8 ? w.k : w.k / 2;
  for (std::int64_t blk = 0; blk < kb; ++blk) {
    V16 v[kPanel][2];
    for (int j = 0; j < kPanel; ++j) {
      const std::uint8_t* src = w.codes + (n0 + j) * row_bytes;
      if (w.q8) {
        v[j][0] = load16(src + blk * kBlock);
        v[j][1] = load16(src + blk * kBlock + 16);
      } else {
        unpack_q4(load16(src + blk * (kBlock / 2)), v[j][0], v[j][1]);
      }
      out.bsum[blk * kPanel + j] = sum32(v[j][0], v[j][1]);
      out.sb[blk * kPanel + j] = w.scale(n0 + j, blk);
    }
    std::int8_t* dst = out.b + blk * kBlock * kPanel;
    for (int jg = 0; jg < kPanel / 4; ++jg) {
      for (int h = 0; h < 2; ++h) {
        V16 r0 = v[4 * jg][h], r1 = v[4 * jg + 1][h], r2 = v[4 * jg + 2][h], r3 = v[4 * jg + 3][h];
        transpose4(r0, r1, r2, r3);
        // Word r of these 4 rows (r4 = 4h + r) goes to dst[r4][4jg .. 4jg + 4).
        store16(dst + (4 * h + 0) * kPanel * 4 + jg * 16, r0);
        store16(dst + (4 * h + 1) * kPanel * 4 + jg * 16, r1);
        store16(dst + (4 * h + 2) * kPanel * 4 + jg * 16, r2);
        store16(dst + (4 * h + 3) * kPanel * 4 + jg * 16, r3);
      }
    }
  }
}
#endif

// The forward panel of rows [n0, n0 + 16): the vector packing where it applies, else the
// reference. Both write the same bytes (a test checks it).
void pack_forward_panel(const WeightView& w, std::int64_t n0, std::int64_t kb, std::int8_t* row,
                        PanelOut out) {
#if defined(__x86_64__) || defined(__aarch64__)
  if ((w.q8 || w.dtype == DType::Q4) && w.k % kBlock == 0 && n0 + kPanel <= w.n) {
    pack_forward_panel_simd(w, n0, kb, out);
    return;
  }
#endif
  pack_forward_panel_reference(w, n0, kb, row, out);
}

// Writes 4 rows of 16 codes, src[i][j], as dst[j][i] (the 64 bytes of one step of a panel).
void interleave4x16(const std::int8_t (*src)[kPanel], std::int8_t* dst) {
#if defined(__x86_64__)
  const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[0]));
  const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[1]));
  const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[2]));
  const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[3]));
  const __m128i lo01 = _mm_unpacklo_epi8(r0, r1), hi01 = _mm_unpackhi_epi8(r0, r1);
  const __m128i lo23 = _mm_unpacklo_epi8(r2, r3), hi23 = _mm_unpackhi_epi8(r2, r3);
  __m128i* d = reinterpret_cast<__m128i*>(dst);
  _mm_storeu_si128(d + 0, _mm_unpacklo_epi16(lo01, lo23));
  _mm_storeu_si128(d + 1, _mm_unpackhi_epi16(lo01, lo23));
  _mm_storeu_si128(d + 2, _mm_unpacklo_epi16(hi01, hi23));
  _mm_storeu_si128(d + 3, _mm_unpackhi_epi16(hi01, hi23));
#else
  for (int j = 0; j < kPanel; ++j)
    for (int i = 0; i < 4; ++i) dst[j * 4 + i] = src[i][j];
#endif
}

// out[j] = round(q_j * f), half to even, for the 16 q4 codes q_j packed in bytes[0..8).
void requantize16(const std::uint8_t* bytes, float f, std::int8_t* out) {
#if defined(__x86_64__)
  // SSE2 (the x86-64 base): nibbles -> int8 -> int32 -> float, times f, rounded by cvtps2dq
  // (round to nearest even, the default mode) and packed back to int8.
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes));
  const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
  const __m128i q = _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), _mm_set1_epi8(8));
  const __m128i sign = _mm_cmpgt_epi8(_mm_setzero_si128(), q);
  const __m128i q16[2] = {_mm_unpacklo_epi8(q, sign), _mm_unpackhi_epi8(q, sign)};
  const __m128 scale = _mm_set1_ps(f);
  __m128i r32[4];
  for (int h = 0; h < 2; ++h) {
    const __m128i q32lo = _mm_srai_epi32(_mm_unpacklo_epi16(q16[h], q16[h]), 16);
    const __m128i q32hi = _mm_srai_epi32(_mm_unpackhi_epi16(q16[h], q16[h]), 16);
    r32[2 * h] = _mm_cvtps_epi32(_mm_mul_ps(_mm_cvtepi32_ps(q32lo), scale));
    r32[2 * h + 1] = _mm_cvtps_epi32(_mm_mul_ps(_mm_cvtepi32_ps(q32hi), scale));
  }
  const __m128i r16lo = _mm_packs_epi32(r32[0], r32[1]), r16hi = _mm_packs_epi32(r32[2], r32[3]);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_packs_epi16(r16lo, r16hi));
#else
  for (int i = 0; i < kPanel / 2; ++i) {
    out[2 * i] =
        static_cast<std::int8_t>(std::nearbyint(static_cast<float>((bytes[i] & 0x0F) - 8) * f));
    out[2 * i + 1] =
        static_cast<std::int8_t>(std::nearbyint(static_cast<float>((bytes[i] >> 4) - 8) * f));
  }
#endif
}

// Block blk (rows [32 blk, 32 blk + 32) of w) of a dX panel, whose output columns are columns
// [k0, k0 + 16) of w. q8 keeps the codes (the row scales went into dY). The 4-bit formats
// requantize the block to int8 with the scale t = m max_n s_n,g / 127 of its largest group scale
// (m = code_max(): 7 for q4, 127 for the lookups of nf4 and pal4): code round(q s_n,g / t),
// |code| <= m s_n,g / t <= 127 (see qgemm.h).
void pack_backward_block(const WeightView& w, std::int64_t k0, std::int64_t blk, PanelOut out) {
  const std::int64_t cols = std::min<std::int64_t>(kPanel, w.k - k0);
  const std::int64_t group = k0 / kQ4Group;  // a panel lies inside one group: 16 divides 32
  const int rows = static_cast<int>(std::min<std::int64_t>(kBlock, w.n - blk * kBlock));
  std::int8_t codes[kBlock][kPanel];
  if (rows < kBlock || cols < kPanel || !w.q8) std::memset(codes, 0, sizeof codes);
  float tile_scale = 1.0f;
  if (w.q8) {
    for (int r = 0; r < rows; ++r) w.row_codes(blk * kBlock + r, k0, cols, codes[r]);
  } else {
    float smax = 0.0f;
    for (int r = 0; r < rows; ++r) smax = std::max(smax, w.scale(blk * kBlock + r, group));
    tile_scale = smax * w.code_max() / 127.0f;
    for (int r = 0; r < rows && smax > 0.0f; ++r) {
      const float f = w.scale(blk * kBlock + r, group) / tile_scale;
      if (cols == kPanel && w.dtype == DType::Q4) {
        requantize16(w.codes + (blk * kBlock + r) * ((w.k + 1) / 2) + k0 / 2, f, codes[r]);
      } else {
        std::int8_t row[kPanel];
        w.row_codes(blk * kBlock + r, k0, cols, row);
        for (int j = 0; j < cols; ++j) {
          codes[r][j] = static_cast<std::int8_t>(std::nearbyint(static_cast<float>(row[j]) * f));
        }
      }
    }
  }
  std::int32_t sum[kPanel] = {};
  for (int r = 0; r < kBlock; ++r)
    for (int j = 0; j < kPanel; ++j) sum[j] += codes[r][j];
  for (int j = 0; j < kPanel; ++j) {
    out.bsum[j] = sum[j];
    out.sb[j] = tile_scale;
  }
  for (int r4 = 0; r4 < kBlock / 4; ++r4) interleave4x16(codes + r4 * 4, out.b + r4 * kPanel * 4);
}

// Rows per work item; a multiple of the register tiles' 6 and 4 rows.
constexpr std::int64_t kTaskRows = 48;
// At most this many rows (one 128-token sentence, a micro-batch of one), a task is two panels
// against every row, packed by the thread that computes them.
constexpr std::int64_t kPackInTaskRows = 4 * kTaskRows;

// c (M, cols) (+)= quantize(src) (M, len) x packed(w), packing kChunkColumns output columns at a
// time. forward: src = x, len = K, cols = N; else src = dy, len = N, cols = K.
void gemm(float* c, const float* src, const float* colscale, std::int64_t m, const Tensor& weight,
          bool forward, Isa isa, int threads) {
  if (m == 0) return;
  const WeightView w(weight);
  const std::int64_t len = forward ? w.k : w.n;
  const std::int64_t cols = forward ? w.n : w.k;
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
  o.column_scales = w.q8;

  const std::int64_t task_rows = std::min(kTaskRows, m);
  const std::int64_t row_tasks = (m + task_rows - 1) / task_rows;
  // Up to kPackInTaskRows rows, and when the workspace holds two panels per thread, each task
  // packs its own panels (below); else each chunk is packed by all threads, then computed.
  const bool pack_in_task = m <= kPackInTaskRows && 2 * threads <= chunk_panels;
#pragma omp parallel num_threads(threads)
  {
    std::uint8_t* codes = bytes_of(a);
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < m; ++i) {
      quantize_row(src + i * len, len, colscale, codes + i * r_len, sa.data<float>() + i * kb, kb);
    }
    std::int8_t* row =
        reinterpret_cast<std::int8_t*>(bytes_of(rows_scratch)) + omp_get_thread_num() * r_len;
    auto panel_out = [&](std::int64_t p, std::int64_t blk) {
      return PanelOut{
          reinterpret_cast<std::int8_t*>(bytes_of(b)) + p * panel_bytes + blk * kBlock * kPanel,
          bsum.data<std::int32_t>() + (p * kb + blk) * kPanel,
          sb.data<float>() + (p * kb + blk) * kPanel};
    };
    // Packs the panel of output columns [col0, col0 + 16) into workspace panel p.
    auto pack_panel = [&](std::int64_t col0, std::int64_t p) {
      if (forward) {
        pack_forward_panel(w, col0, kb, row, panel_out(p, 0));
      } else {
        for (std::int64_t blk = 0; blk < kb; ++blk) pack_backward_block(w, col0, blk, panel_out(p, blk));
      }
    };
    if (pack_in_task) {
      // Few rows: one task is a pair of panels against all M rows. Its thread packs the pair into
      // its own two workspace panels and computes it at once, so W is packed once, read once, and
      // the only barrier is the activations' quantization above.
      const std::int64_t slot = 2 * omp_get_thread_num();
      const std::int64_t all_panels = (cols + kPanel - 1) / kPanel;
      Operands ot = o;
      ot.b += slot * panel_bytes;
      ot.bsum += slot * kb * kPanel;
      ot.sb += slot * kb * kPanel;
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t t = 0; t < (all_panels + 1) / 2; ++t) {
        const std::int64_t count = std::min<std::int64_t>(2, all_panels - 2 * t);
        for (std::int64_t i = 0; i < count; ++i) pack_panel((2 * t + i) * kPanel, slot + i);
        Operands oc = ot;
        oc.c = c + 2 * t * kPanel;
        oc.n = std::min(count * kPanel, cols - 2 * t * kPanel);
        run_tiles(isa, oc, 0, m, 0, count);
      }
    } else {
      for (std::int64_t c0 = 0; c0 < cols; c0 += chunk) {
        const std::int64_t width = std::min(chunk, cols - c0);
        const std::int64_t panels = (width + kPanel - 1) / kPanel;
        if (forward) {
#pragma omp for schedule(static)
          for (std::int64_t p = 0; p < panels; ++p) pack_panel(c0 + p * kPanel, p);
        } else {
          // Block-major, so the rows of w are read a chunk's width (whole cache lines) at a time.
#pragma omp for schedule(static)
          for (std::int64_t t = 0; t < kb * panels; ++t) {
            const std::int64_t blk = t / panels, p = t % panels;
            pack_backward_block(w, c0 + p * kPanel, blk, panel_out(p, blk));
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
}

void require_quantized_weight(const Tensor& w, const char* what) {
  if (!is_quantized(w.dtype()) || w.rank() != 2) {
    throw std::invalid_argument(std::string(what) + ": weight '" + w.name() +
                                "' must be a quantized (N, K) matrix, got " + dtype_name(w.dtype()) +
                                " " + w.shape().str());
  }
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return "scalar";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512Vnni:
      return "avx512vnni";
    case Isa::Neon:
      return "neon";
    case Isa::Dotprod:
      return "dotprod";
    case Isa::I8mm:
      return "i8mm";
  }
  return "?";
}

Isa parse_isa(const std::string& name) {
  for (Isa isa : kAllIsas) {
    if (name == isa_name(isa)) return isa;
  }
  throw std::invalid_argument("unknown kernel implementation '" + name +
                              "' (expected scalar, avx2, avx512vnni, neon, dotprod or i8mm)");
}

bool isa_available(Isa isa) {
  static const bool available[] = {cpu_supports(Isa::Scalar),     cpu_supports(Isa::Avx2),
                                   cpu_supports(Isa::Avx512Vnni), cpu_supports(Isa::Neon),
                                   cpu_supports(Isa::Dotprod),    cpu_supports(Isa::I8mm)};
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
    case Isa::Scalar:
      detail::tiles_scalar(o, m0, m1, p0, p1);
      return;
#if defined(__x86_64__)
    case Isa::Avx2:
      detail::tiles_avx2(o, m0, m1, p0, p1);
      return;
    case Isa::Avx512Vnni:
      detail::tiles_avx512vnni(o, m0, m1, p0, p1);
      return;
#else
    case Isa::Avx2:
    case Isa::Avx512Vnni:
      break;
#endif
#if defined(__aarch64__)
    case Isa::Neon:
      detail::tiles_neon(o, m0, m1, p0, p1);
      return;
    case Isa::Dotprod:
      detail::tiles_dotprod(o, m0, m1, p0, p1);
      return;
    case Isa::I8mm:
      detail::tiles_i8mm(o, m0, m1, p0, p1);
      return;
#else
    case Isa::Neon:
    case Isa::Dotprod:
    case Isa::I8mm:
      break;
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

detail::PackedPanel detail::pack_forward_panel(const Tensor& weight, std::int64_t n0,
                                               bool reference) {
  require_quantized_weight(weight, "qgemm::detail::pack_forward_panel");
  const WeightView w(weight);
  const std::int64_t kb = (w.k + kBlock - 1) / kBlock;
  PackedPanel p;
  p.b.resize(static_cast<size_t>(kb * kBlock * kPanel));
  p.bsum.resize(static_cast<size_t>(kb * kPanel));
  p.sb.resize(static_cast<size_t>(kb * kPanel));
  std::vector<std::int8_t> row(static_cast<size_t>(kb * kBlock));
  const PanelOut out{p.b.data(), p.bsum.data(), p.sb.data()};
  if (reference) {
    pack_forward_panel_reference(w, n0, kb, row.data(), out);
  } else {
    qgemm::pack_forward_panel(w, n0, kb, row.data(), out);
  }
  return p;
}

}  // namespace edgetune::qgemm
