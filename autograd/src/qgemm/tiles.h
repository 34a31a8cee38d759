// The per-instruction-set tile kernels behind qgemm::run_tiles, one file each. Each computes rows
// [m0, m1) and panels [p0, p1) of the product described by qgemm::Operands (qgemm.h) and must
// give the int32 block sums of the scalar reference exactly. These files are compiled with their
// own instruction-set flags; they use no library templates, so no code built for one instruction
// set can be picked by the linker for another.
#pragma once

#include <cstdint>

#include "edgetune/autograd/qgemm.h"

namespace edgetune::qgemm::detail {

void tiles_scalar(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                  std::int64_t p1);
#if defined(__x86_64__)
void tiles_avx2(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                std::int64_t p1);
void tiles_avx512vnni(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                      std::int64_t p1);
#endif
#if defined(__aarch64__)
void tiles_neon(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                std::int64_t p1);
void tiles_dotprod(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                   std::int64_t p1);
void tiles_i8mm(const Operands& o, std::int64_t m0, std::int64_t m1, std::int64_t p0,
                std::int64_t p1);
#endif

}  // namespace edgetune::qgemm::detail
