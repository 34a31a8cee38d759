// ARM64 dotprod (ARMv8.2 sdot) tile kernel: one sdot adds, for each of 4 columns, the product of
// 4 weight codes with the same 4 activation codes into an int32 lane, which is the [j][i] layout of
// a packed panel step (qgemm.h) read 16 bytes at a time. Register tile: up to 4 rows x 1 panel.
// Compiled with -march=armv8.2-a+dotprod (see autograd/CMakeLists.txt); called only when
// getauxval reports it.
#if defined(__aarch64__)

#include "neon_tile.h"

namespace edgetune::qgemm::detail {

namespace {

struct DotprodKernel {
  template <int MR>
  static void block(const Operands& o, std::int64_t m, std::int64_t blk, const std::int8_t* bb,
                    int32x4_t sum[MR][4]) {
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < 4; ++q) sum[r][q] = vdupq_n_s32(0);
    const std::uint8_t* ab = o.a + m * o.lda + blk * kBlock;
    for (int r4 = 0; r4 < kBlock / 4; ++r4) {
      int8x16_t w[4];
      for (int q = 0; q < 4; ++q) w[q] = vld1q_s8(bb + r4 * 64 + 16 * q);
      for (int r = 0; r < MR; ++r) {
        const int8x8_t x = broadcast4_signed(ab + r * o.lda + 4 * r4);
        const int8x16_t x2 = vcombine_s8(x, x);
        for (int q = 0; q < 4; ++q) sum[r][q] = vdotq_s32(sum[r][q], w[q], x2);
      }
    }
  }
};

}  // namespace

void tiles_dotprod(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                   std::int64_t p1) {
  run_panels<DotprodKernel, 4>(o, m0, m1, p0, p1);
}

}  // namespace edgetune::qgemm::detail

#endif
