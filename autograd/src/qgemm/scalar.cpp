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
      for (int j = 0; j < kPanel; ++j) {
        const std::int64_t col = p * kPanel + j;
        if (col >= o.n) break;
        float acc = 0.0f;
        for (std::int64_t blk = 0; blk < o.kb; ++blk) {
          std::int32_t sum = 0;
          for (int r = 0; r < kBlock; ++r) {
            const std::int32_t av = static_cast<std::int32_t>(a[blk * kBlock + r]) - 128;
            const std::int32_t bv = b[(blk * kBlock + (r / 4) * 4) * kPanel + j * 4 + r % 4];
            sum += av * bv;
          }
          acc += static_cast<float>(sum) * (sa[blk] * sb[blk * kPanel + j]);
        }
        float& out = o.c[m * o.ldc + col];
        out = o.accumulate ? out + acc : acc;
      }
    }
  }
}

}  // namespace edgetune::qgemm::detail
