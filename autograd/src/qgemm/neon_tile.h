// What the three ARM64 tile kernels (neon.cpp, neon_dotprod.cpp, neon_i8mm.cpp) share: reading
// activation codes as signed bytes, and a register tile's walk over the blocks, applying the
// block scales and storing the rows; a kernel supplies only the int32 sums of one block. Each of
// those files is compiled for its own instruction set; everything here has internal linkage
// (unnamed namespace), so each file gets its own copy built with its own flags and the linker
// cannot hand one file's code to another.
//
// Float arithmetic follows the scalar reference (scalar.cpp) operation for operation: per block,
// t = float(sum) * (sa * sb) and acc = acc + t, two roundings (on ARM64 these files and scalar.cpp
// are built with -ffp-contract=off, so no compiler fuses them into a multiply-add), and
// c = c + acc when accumulating. The outputs therefore equal the scalar reference's bit for bit,
// not only the int32 sums.
#pragma once

#if defined(__aarch64__)

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "tiles.h"

namespace edgetune::qgemm::detail {
namespace {

// The 4 activation codes at p (stored + 128) as signed bytes, repeated over the 64 bits.
inline int8x8_t broadcast4_signed(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return vreinterpret_s8_u32(vdup_n_u32(v ^ 0x80808080u));
}

// The 8 activation codes at p (stored + 128) as signed bytes.
inline int8x8_t load8_signed(const std::uint8_t* p) {
  return vreinterpret_s8_u8(veor_u8(vld1_u8(p), vdup_n_u8(0x80)));
}

// acc[q] += float(sum[q]) * (sa * sb[4q .. 4q + 4)), the 16 columns of one block of one row.
inline void scale_block(float32x4_t acc[4], const int32x4_t sum[4], const float* sb, float sa) {
  for (int q = 0; q < 4; ++q) {
    const float32x4_t s = vmulq_n_f32(vld1q_f32(sb + 4 * q), sa);
    acc[q] = vaddq_f32(acc[q], vmulq_f32(vcvtq_f32_s32(sum[q]), s));
  }
}

// Writes (or adds, o.accumulate) the 16 columns acc of output row m, panel p; columns past o.n
// are dropped.
inline void store_row(const Operands& o, std::int64_t m, std::int64_t p, const float32x4_t acc[4]) {
  const std::int64_t col = p * kPanel;
  const std::int64_t cols = o.n - col < kPanel ? o.n - col : kPanel;
  float* c = o.c + m * o.ldc + col;
  if (cols == kPanel) {
    for (int q = 0; q < 4; ++q) {
      vst1q_f32(c + 4 * q, o.accumulate ? vaddq_f32(vld1q_f32(c + 4 * q), acc[q]) : acc[q]);
    }
    return;
  }
  float v[kPanel];
  for (int q = 0; q < 4; ++q) vst1q_f32(v + 4 * q, acc[q]);
  for (std::int64_t j = 0; j < cols; ++j) c[j] = o.accumulate ? c[j] + v[j] : v[j];
}

// Rows [m, m + MR) of panel p. Kernel::block<MR>(o, m, blk, bb, sum) gives the int32 sums of
// block blk, sum[r][q] = columns [4q, 4q + 4) of row m + r, from the block's packed weights bb.
template <class Kernel, int MR>
void tile(const Operands& o, std::int64_t m, std::int64_t p) {
  const std::int8_t* b = o.b + p * o.kb * kBlock * kPanel;
  const float* sb = o.sb + p * o.kb * kPanel;
  const float* sa = o.sa + m * o.ldsa;
  float32x4_t acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = vdupq_n_f32(0.0f);
  for (std::int64_t blk = 0; blk < o.kb; ++blk) {
    int32x4_t sum[MR][4];
    Kernel::template block<MR>(o, m, blk, b + blk * kBlock * kPanel, sum);
    for (int r = 0; r < MR; ++r) {
      scale_block(acc[r], sum[r], sb + blk * kPanel, sa[r * o.ldsa + blk]);
    }
  }
  for (int r = 0; r < MR; ++r) store_row(o, m + r, p, acc[r]);
}

// Rows [m, m1) of panel p in tiles of MR rows, then the remainder in smaller ones.
template <class Kernel, int MR>
void panel_rows(const Operands& o, std::int64_t m, std::int64_t m1, std::int64_t p) {
  for (; m + MR <= m1; m += MR) tile<Kernel, MR>(o, m, p);
  if constexpr (MR > 1) panel_rows<Kernel, MR - 1>(o, m, m1, p);
}

// Rows [m0, m1) of panels [p0, p1) (qgemm::run_tiles) in tiles of at most MR rows.
template <class Kernel, int MR>
void run_panels(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                std::int64_t p1) {
  for (std::int64_t p = p0; p < p1; ++p) panel_rows<Kernel, MR>(o, m0, m1, p);
}

}  // namespace
}  // namespace edgetune::qgemm::detail

#endif
