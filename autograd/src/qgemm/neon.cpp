// ARM64 Advanced SIMD (ARMv8-A, every ARM64 CPU) tile kernel. Without a dot-product instruction,
// int8 products go through smull/smlal (8 byte products widened to int16, two reduction steps
// summed: |a| <= 127 and |w| <= 127, so 2 * 127 * 127 = 32258 fits int16) and sadalp (adjacent
// int16 pairs added into int32). Register tile: up to 2 rows x 1 panel (16 columns). Compiled with
// -march=armv8-a (see autograd/CMakeLists.txt).
#if defined(__aarch64__)

#include "neon_tile.h"

namespace edgetune::qgemm::detail {

namespace {

struct NeonKernel {
  template <int MR>
  static void block(const Operands& o, std::int64_t m, std::int64_t blk, const std::int8_t* bb,
                    int32x4_t sum[MR][4]) {
    // part[r][2q]: columns 4q, 4q + 1, part[r][2q + 1]: 4q + 2, 4q + 3, each as two partial
    // sums (reduction values i = 0, 1 and i = 2, 3 of every step of 4).
    int32x4_t part[MR][8];
    for (int r = 0; r < MR; ++r)
      for (int h = 0; h < 8; ++h) part[r][h] = vdupq_n_s32(0);
    const std::uint8_t* ab = o.a + m * o.lda + blk * kBlock;
    for (int r8 = 0; r8 < kBlock / 8; ++r8) {
      // Two steps of 4 reduction values: [j][i] of 16 columns each (qgemm.h).
      int8x16_t w0[4], w1[4];
      for (int q = 0; q < 4; ++q) {
        w0[q] = vld1q_s8(bb + 2 * r8 * 64 + 16 * q);
        w1[q] = vld1q_s8(bb + (2 * r8 + 1) * 64 + 16 * q);
      }
      for (int r = 0; r < MR; ++r) {
        const int8x8_t a0 = broadcast4_signed(ab + r * o.lda + 8 * r8);
        const int8x8_t a1 = broadcast4_signed(ab + r * o.lda + 8 * r8 + 4);
        for (int q = 0; q < 4; ++q) {
          const int16x8_t lo = vmlal_s8(vmull_s8(vget_low_s8(w0[q]), a0), vget_low_s8(w1[q]), a1);
          const int16x8_t hi = vmlal_s8(vmull_s8(vget_high_s8(w0[q]), a0), vget_high_s8(w1[q]), a1);
          part[r][2 * q] = vpadalq_s16(part[r][2 * q], lo);
          part[r][2 * q + 1] = vpadalq_s16(part[r][2 * q + 1], hi);
        }
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < 4; ++q) sum[r][q] = vpaddq_s32(part[r][2 * q], part[r][2 * q + 1]);
  }
};

}  // namespace

void tiles_neon(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                std::int64_t p1) {
  run_panels<NeonKernel, 2>(o, m0, m1, p0, p1);
}

}  // namespace edgetune::qgemm::detail

#endif
