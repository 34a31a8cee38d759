// AVX2 tile kernel. Without VNNI, int8 products go through vpmaddubsw (unsigned x signed bytes,
// pairs summed to int16) and vpmaddwd (pairs summed to int32). The activation code is made
// signed again (xor 0x80) and its sign moved onto the weight (vpsignb), so vpmaddubsw sees
// |a| <= 127 and |w| <= 127 and its int16 pair sums (<= 32258) cannot saturate; the sums are the
// signed ones directly and bsum is not needed. Register tile: up to 4 rows x 1 panel (two 8-column
// halves). Compiled with -march=x86-64-v3 (see autograd/CMakeLists.txt); called only when cpuid
// reports it.
#if defined(__x86_64__)

#include <immintrin.h>

#include <cstring>

#include "tiles.h"

namespace edgetune::qgemm::detail {

namespace {

inline __m256i broadcast4(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

template <int MR>
void micro(const Operands& o, std::int64_t m, std::int64_t p) {
  const std::int8_t* b = o.b + p * o.kb * kBlock * kPanel;
  const float* sb = o.sb + p * o.kb * kPanel;
  const std::uint8_t* a = o.a + m * o.lda;
  const float* sa = o.sa + m * o.ldsa;
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i ones = _mm256_set1_epi16(1);
  // The output tile is used only after the whole reduction: fetch it meanwhile (see avx512vnni).
  for (int r = 0; r < MR; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(o.c + (m + r) * o.ldc + p * kPanel), _MM_HINT_T0);
  }
  __m256 acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (std::int64_t blk = 0; blk < o.kb; ++blk) {
    __m256i sum[MR][2];
    for (int r = 0; r < MR; ++r) sum[r][0] = sum[r][1] = _mm256_setzero_si256();
    const std::int8_t* bb = b + blk * kBlock * kPanel;
    const std::uint8_t* ab = a + blk * kBlock;
    for (int r4 = 0; r4 < kBlock / 4; ++r4) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bb + r4 * 64));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bb + r4 * 64 + 32));
      for (int r = 0; r < MR; ++r) {
        const __m256i x = _mm256_xor_si256(broadcast4(ab + r * o.lda + r4 * 4), flip);
        const __m256i ax = _mm256_abs_epi8(x);
        const __m256i p0 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w0, x));
        const __m256i p1 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w1, x));
        sum[r][0] = _mm256_add_epi32(sum[r][0], _mm256_madd_epi16(p0, ones));
        sum[r][1] = _mm256_add_epi32(sum[r][1], _mm256_madd_epi16(p1, ones));
      }
    }
    const __m256 s0 = _mm256_loadu_ps(sb + blk * kPanel);
    const __m256 s1 = _mm256_loadu_ps(sb + blk * kPanel + 8);
    for (int r = 0; r < MR; ++r) {
      const __m256 x = _mm256_set1_ps(sa[r * o.ldsa + blk]);
      acc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r][0]), _mm256_mul_ps(s0, x), acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r][1]), _mm256_mul_ps(s1, x), acc[r][1]);
    }
  }
  const std::int64_t col = p * kPanel;
  const std::int64_t cols = o.n - col < kPanel ? o.n - col : kPanel;
  for (int r = 0; r < MR; ++r) {
    float* c = o.c + (m + r) * o.ldc + col;
    alignas(32) float v[kPanel];
    _mm256_store_ps(v, acc[r][0]);
    _mm256_store_ps(v + 8, acc[r][1]);
    if (cols == kPanel && !o.accumulate) {
      _mm256_storeu_ps(c, acc[r][0]);
      _mm256_storeu_ps(c + 8, acc[r][1]);
    } else {
      for (std::int64_t j = 0; j < cols; ++j) c[j] = o.accumulate ? c[j] + v[j] : v[j];
    }
  }
}

}  // namespace

void tiles_avx2(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                std::int64_t p1) {
  for (std::int64_t p = p0; p < p1; ++p) {
    std::int64_t m = m0;
    for (; m + 4 <= m1; m += 4) micro<4>(o, m, p);
    switch (m1 - m) {
      case 3:
        micro<3>(o, m, p);
        break;
      case 2:
        micro<2>(o, m, p);
        break;
      case 1:
        micro<1>(o, m, p);
        break;
      default:
        break;
    }
  }
}

}  // namespace edgetune::qgemm::detail

#endif
