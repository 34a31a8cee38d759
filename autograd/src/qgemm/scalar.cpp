// Portable scalar reference of the integer GEMM tile (the specification the SIMD kernels are
// tested against). Built without SIMD extensions beyond the base instruction set.
#include "tiles.h"

namespace edgetune::qgemm::detail {

void tiles_scalar(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                  std::int64_t p1) {
  for (std::int64_t m = m0; m < m1; ++m) {
    const std::uint8_t* a = o.a + m * o.lda;
    const float* sa = o.sa + m * o.ldsa;
    for (std::int64_t p = p0; p < p1; ++p) {
      const std::int8_t* b = o.b + p * o.kb * kBlock * kPanel;
      const float* sb = o.sb + p * o.kb * kPanel;
      float acc[kPanel] = {};
      for (std::int64_t blk = 0; blk < o.kb; ++blk) {
        std::int32_t sum[kPanel] = {};
        for (int r = 0; r < kBlock; ++r) {
          const std::int32_t av = static_cast<std::int32_t>(a[blk * kBlock + r]) - 128;
          // Reduction index 32 blk + r of column j is at [blk][r / 4][j][r % 4].
          const std::int8_t* bv = b + (blk * kBlock + (r / 4) * 4) * kPanel + r % 4;
          for (int j = 0; j < kPanel; ++j) sum[j] += av * bv[j * 4];
        }
        for (int j = 0; j < kPanel; ++j) {
          acc[j] += static_cast<float>(sum[j]) * (sa[blk] * sb[blk * kPanel + j]);
        }
      }
      for (int j = 0; j < kPanel && p * kPanel + j < o.n; ++j) {
        float& out = o.c[m * o.ldc + p * kPanel + j];
        out = o.accumulate ? out + acc[j] : acc[j];
      }
    }
  }
}

}  // namespace edgetune::qgemm::detail
