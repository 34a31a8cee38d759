// ARM64 i8mm (ARMv8.6 smmla) tile kernel. One smmla multiplies a 2 x 8 block of activation codes
// (2 rows, 8 reduction values) by an 8 x 2 block of weight codes (2 columns) into a 2 x 2 int32
// tile. A packed panel holds each column's reduction values in steps of 4 (qgemm.h); two steps
// zipped by 32-bit lanes give the 8 consecutive values of 2 columns that smmla reads, so the
// panel layout is shared with the other kernels. Register tile: up to 4 rows (2 row pairs; an odd
// last row is paired with itself and its copy dropped) x 1 panel. Compiled with
// -march=armv8.6-a+i8mm (see autograd/CMakeLists.txt); called only when getauxval reports it.
#if defined(__aarch64__)

#include "neon_tile.h"

namespace edgetune::qgemm::detail {

namespace {

struct I8mmKernel {
  template <int MR>
  static void block(const Operands& o, std::int64_t m, std::int64_t blk, const std::int8_t* bb,
                    int32x4_t sum[MR][4]) {
    constexpr int kPairs = (MR + 1) / 2;
    const std::uint8_t* rows[2 * kPairs];
    for (int r = 0; r < 2 * kPairs; ++r) {
      rows[r] = o.a + (m + (r < MR ? r : MR - 1)) * o.lda + blk * kBlock;
    }
    // tile[h][c]: rows 2h, 2h + 1 by columns 2c, 2c + 1, as (r0 c0, r0 c1, r1 c0, r1 c1).
    int32x4_t tile[kPairs][8];
    for (int h = 0; h < kPairs; ++h)
      for (int c = 0; c < 8; ++c) tile[h][c] = vdupq_n_s32(0);
    for (int r8 = 0; r8 < kBlock / 8; ++r8) {
      int8x16_t w[8];
      for (int q = 0; q < 4; ++q) {
        const int32x4_t s0 = vreinterpretq_s32_s8(vld1q_s8(bb + 2 * r8 * 64 + 16 * q));
        const int32x4_t s1 = vreinterpretq_s32_s8(vld1q_s8(bb + (2 * r8 + 1) * 64 + 16 * q));
        w[2 * q] = vreinterpretq_s8_s32(vzip1q_s32(s0, s1));
        w[2 * q + 1] = vreinterpretq_s8_s32(vzip2q_s32(s0, s1));
      }
      for (int h = 0; h < kPairs; ++h) {
        const int8x16_t x =
            vcombine_s8(load8_signed(rows[2 * h] + 8 * r8), load8_signed(rows[2 * h + 1] + 8 * r8));
        for (int c = 0; c < 8; ++c) tile[h][c] = vmmlaq_s32(tile[h][c], x, w[c]);
      }
    }
    for (int h = 0; h < kPairs; ++h) {
      for (int q = 0; q < 4; ++q) {
        const int64x2_t c0 = vreinterpretq_s64_s32(tile[h][2 * q]);
        const int64x2_t c1 = vreinterpretq_s64_s32(tile[h][2 * q + 1]);
        sum[2 * h][q] = vreinterpretq_s32_s64(vzip1q_s64(c0, c1));
        if (2 * h + 1 < MR) sum[2 * h + 1][q] = vreinterpretq_s32_s64(vzip2q_s64(c0, c1));
      }
    }
  }
};

}  // namespace

void tiles_i8mm(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                std::int64_t p1) {
  run_panels<I8mmKernel, 4>(o, m0, m1, p0, p1);
}

}  // namespace edgetune::qgemm::detail

#endif
