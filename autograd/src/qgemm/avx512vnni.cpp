// AVX-512 VNNI tile kernel: vpdpbusd multiplies the unsigned activation codes (code + 128) by the
// signed weight codes, 16 columns per register, 4 reduction values per lane; each block's int32
// sums start at -128 * bsum so they equal the signed sums, then are scaled into float
// accumulators. Register tile: up to 6 rows x 2 panels (12 int32 + 12 float accumulators).
// Compiled with -march=x86-64-v4 -mavx512vnni (see autograd/CMakeLists.txt); called only when
// cpuid reports those features.
#if defined(__x86_64__)

#include <immintrin.h>

#include <cstring>

#include "tiles.h"

namespace edgetune::qgemm::detail {

namespace {

inline __m512i broadcast4(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm512_set1_epi32(v);
}

inline __mmask16 column_mask(std::int64_t cols) {
  return cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
}

// ColumnScales: sb is constant over blocks (Operands::column_scales); the block sums are scaled
// by sa alone and the result by sb once at the end.
template <int MR, int NP, bool ColumnScales>
void micro(const Operands& o, std::int64_t m, std::int64_t p) {
  const std::int64_t panel_bytes = o.kb * kBlock * kPanel;
  const std::int8_t* b = o.b + p * panel_bytes;
  const std::int32_t* bsum = o.bsum + p * o.kb * kPanel;
  const float* sb = o.sb + p * o.kb * kPanel;
  const std::uint8_t* a = o.a + m * o.lda;
  const float* sa = o.sa + m * o.ldsa;
  // The output tile is read or written only after the whole reduction: fetch it meanwhile (dX
  // accumulates into an output too large for the caches).
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) {
      _mm_prefetch(reinterpret_cast<const char*>(o.c + (m + r) * o.ldc + (p + q) * kPanel),
                   _MM_HINT_T0);
    }
  __m512 acc[MR][NP];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_setzero_ps();
  for (std::int64_t blk = 0; blk < o.kb; ++blk) {
    __m512i sum[MR][NP];
    for (int q = 0; q < NP; ++q) {
      const __m512i corr = _mm512_sub_epi32(
          _mm512_setzero_si512(),
          _mm512_slli_epi32(_mm512_loadu_si512(bsum + q * o.kb * kPanel + blk * kPanel), 7));
      for (int r = 0; r < MR; ++r) sum[r][q] = corr;
    }
    const std::int8_t* bb = b + blk * kBlock * kPanel;
    const std::uint8_t* ab = a + blk * kBlock;
    for (int r4 = 0; r4 < kBlock / 4; ++r4) {
      __m512i w[NP];
      for (int q = 0; q < NP; ++q) w[q] = _mm512_loadu_si512(bb + q * panel_bytes + r4 * 64);
      for (int r = 0; r < MR; ++r) {
        const __m512i x = broadcast4(ab + r * o.lda + r4 * 4);
        for (int q = 0; q < NP; ++q) sum[r][q] = _mm512_dpbusd_epi32(sum[r][q], x, w[q]);
      }
    }
    for (int q = 0; q < NP; ++q) {
      if constexpr (ColumnScales) {
        for (int r = 0; r < MR; ++r) {
          acc[r][q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r][q]),
                                      _mm512_set1_ps(sa[r * o.ldsa + blk]), acc[r][q]);
        }
      } else {
        const __m512 s = _mm512_loadu_ps(sb + q * o.kb * kPanel + blk * kPanel);
        for (int r = 0; r < MR; ++r) {
          const __m512 scale = _mm512_mul_ps(s, _mm512_set1_ps(sa[r * o.ldsa + blk]));
          acc[r][q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r][q]), scale, acc[r][q]);
        }
      }
    }
  }
  for (int q = 0; q < NP; ++q) {
    const std::int64_t col = (p + q) * kPanel;
    const __mmask16 mask = column_mask(o.n - col);
    const __m512 s = _mm512_loadu_ps(sb + q * o.kb * kPanel);
    for (int r = 0; r < MR; ++r) {
      float* c = o.c + (m + r) * o.ldc + col;
      __m512 v = ColumnScales ? _mm512_mul_ps(acc[r][q], s) : acc[r][q];
      if (o.accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, c));
      _mm512_mask_storeu_ps(c, mask, v);
    }
  }
}

template <int NP, bool ColumnScales>
void rows(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p) {
  std::int64_t m = m0;
  for (; m + 6 <= m1; m += 6) micro<6, NP, ColumnScales>(o, m, p);
  switch (m1 - m) {
    case 5:
      micro<5, NP, ColumnScales>(o, m, p);
      break;
    case 4:
      micro<4, NP, ColumnScales>(o, m, p);
      break;
    case 3:
      micro<3, NP, ColumnScales>(o, m, p);
      break;
    case 2:
      micro<2, NP, ColumnScales>(o, m, p);
      break;
    case 1:
      micro<1, NP, ColumnScales>(o, m, p);
      break;
    default:
      break;
  }
}

template <bool ColumnScales>
void panels(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0, std::int64_t p1) {
  std::int64_t p = p0;
  for (; p + 2 <= p1; p += 2) rows<2, ColumnScales>(o, m0, m1, p);
  if (p < p1) rows<1, ColumnScales>(o, m0, m1, p);
}

}  // namespace

void tiles_avx512vnni(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                      std::int64_t p1) {
  if (o.column_scales) {
    panels<true>(o, m0, m1, p0, p1);
  } else {
    panels<false>(o, m0, m1, p0, p1);
  }
}

}  // namespace edgetune::qgemm::detail

#endif
