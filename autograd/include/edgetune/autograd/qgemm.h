// Integer GEMMs over the frozen quantized base: the linear layer's forward y = x W^T and its input
// gradient dX = dY W with W stored q8, q4, nf4 or pal4, computed on int8 codes with int32 sums. One kernel
// interface (Operands, run_tiles), several implementations chosen at run time (Isa): a portable
// scalar reference, which is the specification, x86 AVX2 and AVX-512 VNNI, and ARM64 NEON, NEON
// dotprod and i8mm. The float path (kernels.h, Compute::F32) is separate and unchanged.
//
// Arithmetic. The reduction dimension (K in the forward, N in dX) runs in blocks of 32, aligned
// with the q4 groups. The activation operand is quantized on the fly per row and per block,
// symmetric: s = max|a_block| / 127, code = round(a / s) in [-127, 127]. The weight operand is
// packed per call into panels of 16 output columns, 4 consecutive reduction values per column
// (the layout VNNI's vpdpbusd reads), in a workspace of at most kChunkColumns columns; the base
// tensor keeps its plain layout and no float copy of W is made. For output (m, j):
//     c[m][j] = sum over blocks b of  sa[m][b] * sb[b][j] * sum_{r in b} a[m][r] * w[r][j]
// where the inner sum is exact in int32 and every implementation gets the same int32 sums.
//   forward, q8: w = codes of W^T, sb[b][j] = row scale of W row j.
//   forward, q4: w = codes of W^T, sb[b][j] = scale of group b of W row j (block = group).
//   dX, q8:      the row scales of W run along N, the reduction: they are folded into dY before
//                it is quantized (a[m][n] = dY[m][n] * s_n), w = codes of W, sb = 1. Exact in W.
//   dX, q4:      the group scales run along K, the output dimension of dX, and vary with n inside
//                a reduction block, so they cannot be factored out of an integer sum. While
//                packing, each block of 32 rows n of W's codes in one group g is requantized to
//                int8 with one scale t = 7 max_n s_{n,g} / 127 (sb[b][k] = t): code =
//                round(q s_{n,g} / t), from a 16-entry table per row. One more rounding of
//                at most t / 2 per weight, 18x finer than the q4 step of the block's largest group.
//   nf4, pal4:   a lookup of the 16 values into int8 feeds the same path as q4. nf4: table
//                round(127 nf4[c]) with scale s / 127 for the 64-input block of absmax s (both
//                groups of 32 in it); pal4: table round(127 p[c] / m) with scale m / 127,
//                m = max|p| of the row's palette, in every group. The lookup errs by at most
//                half that scale per weight. Forward: as q4 with the looked-up codes. dX: as q4
//                with t = max_n s_{n,g} (the codes reach 127): one more rounding of <= t / 2.
// Activation codes are stored as code + 128 (unsigned, what vpdpbusd multiplies); a kernel that
// uses them unsigned subtracts 128 * (column sum of the block's weight codes), given as bsum.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edgetune/autograd/tensor.h"

namespace edgetune {

// How a linear layer over a quantized base computes: F32 dequantizes tiles and runs the float
// GEMM (bit for bit the reference path); Int8 runs the integer kernels of this file. Float
// weights always take the float path.
enum class Compute { F32, Int8 };

namespace qgemm {

// Kernel implementations, slowest first on each architecture. Scalar is portable and always
// available; Avx2 and Avx512Vnni are x86-64, Neon (ARMv8-A Advanced SIMD), Dotprod (ARMv8.2 sdot)
// and I8mm (ARMv8.6 smmla) ARM64.
enum class Isa { Scalar, Avx2, Avx512Vnni, Neon, Dotprod, I8mm };

// "scalar", "avx2", "avx512vnni", "neon", "dotprod", "i8mm" (the names EDGETUNE_KERNELS takes).
const char* isa_name(Isa isa);
// Compiled into this build and supported by this CPU (x86: cpuid; ARM64 Linux and Android:
// getauxval's AT_HWCAP and AT_HWCAP2; other ARM64 systems: Neon only).
bool isa_available(Isa isa);
// Every available implementation, scalar first.
std::vector<Isa> available_isas();
// The implementation linear layers use: the one EDGETUNE_KERNELS names if set, else the fastest
// available. Decided on the first call and kept for the process. Throws std::runtime_error
// naming the value when EDGETUNE_KERNELS names an unknown or unavailable implementation.
Isa selected_isa();
// Parses an implementation name; throws std::invalid_argument listing the valid names.
Isa parse_isa(const std::string& name);

inline constexpr int kBlock = 32;                   // reduction values per block (= kQ4Group)
inline constexpr int kPanel = 16;                   // output columns per packed panel
inline constexpr std::int64_t kChunkColumns = 256;  // output columns packed at a time

// Operands of the kernel, all row-major. R = reduction length rounded up to kBlock, KB = R / 32,
// P = panels. Panel p holds output columns [16p, 16p + 16); columns past the end are zero codes.
struct Operands {
  const std::uint8_t* a = nullptr;  // (M, R) activation codes + 128; padding is 128 (code 0)
  std::int64_t lda = 0;
  const float* sa = nullptr;  // (M, KB) activation scales
  std::int64_t ldsa = 0;
  // (P, KB, 8, 16, 4) weight codes: [p][b][r4][j][i] = w[32b + 4r4 + i][16p + j]
  const std::int8_t* b = nullptr;
  const std::int32_t* bsum = nullptr;  // (P, KB, 16): sum over the block of the column's codes
  const float* sb = nullptr;           // (P, KB, 16) weight scales
  std::int64_t kb = 0;
  float* c = nullptr;  // (M, ldc); columns [0, n) of the panels are written
  std::int64_t ldc = 0;
  std::int64_t n = 0;       // valid columns: 16 P - 15 <= n <= 16 P
  bool accumulate = false;  // c += result, else c = result
  // sb[p][b][j] is the same for every block b (q8), so a kernel may scale once at the end:
  // c = sb[j] * sum_b sa[b] * (block sum).
  bool column_scales = false;
};

// Computes rows [m0, m1) and panels [p0, p1) of o.c with implementation isa (must be available).
void run_tiles(Isa isa, const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
               std::int64_t p1);

// y = x W^T.  x (M, K) f32; W (N, K) quantized; y (M, N) f32, overwritten.
void linear_forward(float* y, const float* x, std::int64_t m, const Tensor& w, Isa isa,
                    int threads);
// dx += dy W.  dy (M, N) f32; W (N, K) quantized; dx (M, K) f32.
void linear_backward_input(float* dx, const float* dy, std::int64_t m, const Tensor& w, Isa isa,
                           int threads);

namespace detail {
// One forward panel of W (rows [n0, n0 + 16)) as Operands lays it out, for the tests: by the
// reference loops (any K, any panel), or by the packer linear_forward uses, which takes SSE2 or
// NEON vectors for whole q8 / q4 panels when K is a multiple of 32 and must write the same bytes.
struct PackedPanel {
  std::vector<std::int8_t> b;       // (KB, 8, 16, 4)
  std::vector<std::int32_t> bsum;   // (KB, 16)
  std::vector<float> sb;            // (KB, 16)
};
PackedPanel pack_forward_panel(const Tensor& w, std::int64_t n0, bool reference);
}  // namespace detail

}  // namespace qgemm
}  // namespace edgetune
