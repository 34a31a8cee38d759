// Integer GEMM kernels (qgemm.h): every implementation available on this CPU against the scalar
// reference, the int8 linear op against the float path within an error budget derived from the
// quantization steps, and LoRA gradients through an encoder layer on the int8 path.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/qgemm.h"
#include "edgetune/autograd/quant.h"
#include "encoder_layer.h"
#include "util.h"

using namespace edgetune;
using qgemm::Isa;

namespace {

// Deterministic integers in [lo, hi] from (seed, index).
int uniform_int(std::uint64_t seed, std::uint64_t i, int lo, int hi) {
  return lo + static_cast<int>(counter_uniform(seed, i) * (hi - lo + 1)) % (hi - lo + 1);
}

// Random kernel operands in the layout of qgemm::Operands, with bsum consistent with b.
struct RandomOperands {
  std::vector<std::uint8_t> a;
  std::vector<float> sa;
  std::vector<std::int8_t> b;
  std::vector<std::int32_t> bsum;
  std::vector<float> sb;
  std::int64_t m, panels, kb, n;

  bool column_scales;

  // column_scales: sb the same for every block (Operands::column_scales).
  RandomOperands(std::int64_t m_, std::int64_t n_, std::int64_t kb_, bool unit_scales,
                 std::uint64_t seed, bool column_scales_ = false)
      : m(m_),
        panels((n_ + qgemm::kPanel - 1) / qgemm::kPanel),
        kb(kb_),
        n(n_),
        column_scales(column_scales_) {
    const std::int64_t r = kb * qgemm::kBlock;
    a.resize(m * r);
    for (size_t i = 0; i < a.size(); ++i) a[i] = std::uint8_t(uniform_int(seed, i, 1, 255));
    b.resize(panels * kb * qgemm::kBlock * qgemm::kPanel);
    for (size_t i = 0; i < b.size(); ++i) b[i] = std::int8_t(uniform_int(seed + 1, i, -127, 127));
    bsum.assign(panels * kb * qgemm::kPanel, 0);
    for (std::int64_t p = 0; p < panels; ++p)
      for (std::int64_t blk = 0; blk < kb; ++blk)
        for (int j = 0; j < qgemm::kPanel; ++j)
          for (int i = 0; i < qgemm::kBlock; ++i)
            bsum[(p * kb + blk) * qgemm::kPanel + j] += code(p, blk, i, j);
    sa.resize(m * kb);
    sb.resize(panels * kb * qgemm::kPanel);
    for (size_t i = 0; i < sa.size(); ++i)
      sa[i] = unit_scales ? 1.0f : float(0.001 + counter_uniform(seed + 2, i));
    for (size_t i = 0; i < sb.size(); ++i) {
      const size_t p = i / (kb * qgemm::kPanel), j = i % qgemm::kPanel;
      const size_t from = column_scales ? p * kb * qgemm::kPanel + j : i;
      sb[i] = unit_scales ? 1.0f : float(0.001 + counter_uniform(seed + 3, from));
    }
  }
  // Weight code of reduction index 32 blk + i, column 16 p + j.
  int code(std::int64_t p, std::int64_t blk, int i, int j) const {
    return b[((p * kb + blk) * qgemm::kBlock + (i / 4) * 4) * qgemm::kPanel + j * 4 + i % 4];
  }
  // Exact int32 sum of block blk for output (row, col).
  std::int64_t block_sum(std::int64_t row, std::int64_t col, std::int64_t blk) const {
    std::int64_t s = 0;
    for (int i = 0; i < qgemm::kBlock; ++i) {
      s += (int(a[row * kb * qgemm::kBlock + blk * qgemm::kBlock + i]) - 128) *
           code(col / qgemm::kPanel, blk, i, int(col % qgemm::kPanel));
    }
    return s;
  }
  qgemm::Operands operands(float* c, bool accumulate) const {
    qgemm::Operands o;
    o.a = a.data();
    o.lda = kb * qgemm::kBlock;
    o.sa = sa.data();
    o.ldsa = kb;
    o.b = b.data();
    o.bsum = bsum.data();
    o.sb = sb.data();
    o.kb = kb;
    o.c = c;
    o.ldc = n;
    o.n = n;
    o.accumulate = accumulate;
    o.column_scales = column_scales;
    return o;
  }
};

// Shapes of the kernel tests: M = 1, ragged M and N, one and several blocks.
struct KernelShape {
  std::int64_t m, n, kb;
};
const KernelShape kKernelShapes[] = {{1, 1, 1},   {1, 16, 3},  {5, 17, 2}, {7, 33, 8},
                                     {13, 48, 1}, {50, 70, 4}, {6, 32, 5}, {12, 100, 7}};

}  // namespace

TEST_CASE("qgemm: EDGETUNE_KERNELS names and availability", "[qgemm]") {
  CHECK(qgemm::isa_available(Isa::Scalar));
  CHECK(qgemm::available_isas().front() == Isa::Scalar);
  for (Isa isa : qgemm::available_isas()) CHECK(qgemm::parse_isa(qgemm::isa_name(isa)) == isa);
  CHECK_THROWS_WITH(qgemm::parse_isa("sse9"),
                    Catch::Contains("sse9") && Catch::Contains("avx512vnni"));
  CHECK(qgemm::isa_available(qgemm::selected_isa()));
}

TEST_CASE("qgemm: every implementation gives the scalar reference's int32 block sums", "[qgemm]") {
  // Unit scales and at most 8 blocks keep every partial float sum an integer below 2^24
  // (|block sum| <= 127 * 127 * 32 = 516128), so the float outputs equal the int32 sums exactly.
  for (const KernelShape& s : kKernelShapes) {
    const RandomOperands ops_(s.m, s.n, s.kb, true, 11 + s.m * 7 + s.n);
    std::vector<float> expect(s.m * s.n);
    for (std::int64_t i = 0; i < s.m; ++i)
      for (std::int64_t j = 0; j < s.n; ++j) {
        std::int64_t sum = 0;
        for (std::int64_t blk = 0; blk < s.kb; ++blk) sum += ops_.block_sum(i, j, blk);
        expect[i * s.n + j] = float(sum);
      }
    for (Isa isa : qgemm::available_isas()) {
      INFO(qgemm::isa_name(isa) << " m " << s.m << " n " << s.n << " blocks " << s.kb);
      std::vector<float> c(s.m * s.n, -1.0f);
      qgemm::run_tiles(isa, ops_.operands(c.data(), false), 0, s.m, 0, ops_.panels);
      CHECK(c == expect);
      // Accumulating adds onto what is there; the split into row and panel ranges does not matter.
      std::vector<float> acc(s.m * s.n, 3.0f);
      const std::int64_t mid_m = s.m / 2, mid_p = ops_.panels / 2;
      const qgemm::Operands o = ops_.operands(acc.data(), true);
      qgemm::run_tiles(isa, o, 0, mid_m, 0, ops_.panels);
      qgemm::run_tiles(isa, o, mid_m, s.m, 0, mid_p);
      qgemm::run_tiles(isa, o, mid_m, s.m, mid_p, ops_.panels);
      std::vector<float> expect_acc(expect);
      for (float& v : expect_acc) v += 3.0f;
      CHECK(acc == expect_acc);
    }
  }
}

TEST_CASE("qgemm: with scales, every implementation is within float rounding of exact", "[qgemm]") {
  for (const KernelShape& s : kKernelShapes) {
    for (bool column_scales : {false, true}) {
      const RandomOperands ops_(s.m, s.n, s.kb, false, 101 + s.m * 3 + s.n, column_scales);
      for (Isa isa : qgemm::available_isas()) {
        INFO(qgemm::isa_name(isa) << " m " << s.m << " n " << s.n << " blocks " << s.kb
                                  << " column scales " << column_scales);
        std::vector<float> c(s.m * s.n);
        qgemm::run_tiles(isa, ops_.operands(c.data(), false), 0, s.m, 0, ops_.panels);
        for (std::int64_t i = 0; i < s.m; ++i)
          for (std::int64_t j = 0; j < s.n; ++j) {
            double exact = 0, magnitude = 0;
            for (std::int64_t blk = 0; blk < s.kb; ++blk) {
              const double t =
                  double(ops_.block_sum(i, j, blk)) * ops_.sa[i * s.kb + blk] *
                  ops_.sb[(j / qgemm::kPanel * s.kb + blk) * qgemm::kPanel + j % qgemm::kPanel];
              exact += t;
              magnitude += std::fabs(t);
            }
            // Per block: int32 -> float, the scale product and the sum each round once.
            const double rounding = (s.kb + 3) * double(FLT_EPSILON) * magnitude;
            REQUIRE(std::fabs(c[i * s.n + j] - exact) <= rounding);
          }
      }
    }
  }
}

#if defined(__aarch64__)
TEST_CASE("qgemm: the ARM64 implementations give the scalar reference's outputs bit for bit",
          "[qgemm]") {
  // They apply the scales in the scalar reference's order, operation for operation, and the build
  // contracts no multiply-add (neon_tile.h), so the float outputs are equal, not only close.
  CHECK(qgemm::isa_available(Isa::Neon));  // Advanced SIMD is part of every ARM64 CPU
  for (const KernelShape& s : kKernelShapes) {
    for (bool column_scales : {false, true}) {
      const RandomOperands ops_(s.m, s.n, s.kb, false, 201 + s.m * 5 + s.n, column_scales);
      for (bool accumulate : {false, true}) {
        std::vector<float> ref(s.m * s.n, 0.25f);
        qgemm::run_tiles(Isa::Scalar, ops_.operands(ref.data(), accumulate), 0, s.m, 0,
                         ops_.panels);
        for (Isa isa : qgemm::available_isas()) {
          INFO(qgemm::isa_name(isa)
               << " m " << s.m << " n " << s.n << " blocks " << s.kb << " column scales "
               << column_scales << " accumulate " << accumulate);
          std::vector<float> c(s.m * s.n, 0.25f);
          qgemm::run_tiles(isa, ops_.operands(c.data(), accumulate), 0, s.m, 0, ops_.panels);
          CHECK(c == ref);
        }
      }
    }
  }
}
#endif

namespace {

// Shapes of the linear tests (M, K, N): M = 1, K not a multiple of 32 (a partial last q4 group:
// 40 = 32 + 8, 97 = 3 * 32 + 1), ragged N, more than one chunk of packed columns (N = 300).
struct LinearShape {
  std::int64_t m, k, n;
};
// Up to 192 rows the driver packs W per task, above it per chunk of 256 columns: both are here.
const LinearShape kLinearShapes[] = {{1, 40, 17},   {7, 64, 33},    {50, 97, 70},   {1, 300, 300},
                                     {130, 33, 260}, {61, 256, 48}, {200, 96, 300}};

Tensor random_f32(const Shape& shape, std::uint64_t seed, double stddev) {
  return test::randn(shape, seed, stddev, DType::F32);
}

// Row-major (rows, cols) values of a tensor as doubles (dequantized when quantized).
std::vector<double> values(const Tensor& t) {
  return t.to_vector();
}

// The step of the int8 lookup of element (r, c) of W: nf4 the absmax of its 64-input block / 127,
// pal4 the max |value| of its row group's palette / 127; 0 for q8 and q4, whose codes are int8
// already. The lookup errs by at most half of it.
double lookup_step(const Tensor& w, std::int64_t r, std::int64_t c) {
  if (w.dtype() == DType::NF4) return w.scales()[r * ((w.dim(1) + 63) / 64) + c / 64] / 127.0;
  if (w.dtype() != DType::PAL4) return 0.0;
  const float* p = w.scales() + r / 16 * 16;
  double m = 0;
  for (int i = 0; i < 16; ++i) m = std::max(m, double(std::fabs(p[i])));
  return m / 127;
}

// The activation rounding budget of y = x W^T on the int8 path, per output element, from the
// quantization step of the activations: x is quantized per block b of 32 along K with step
// d_b = max_{k in b} |x_k| / 127, so |x^_k - x_k| <= d_b / 2 and
//     |y_int8 - y| <= sum_b d_b / 2 * sum_{k in b} |W^_nk| + sum_k |x_k| e_nk
// (W the dequantized weight, W^ what the kernel multiplies, e_nk = |W^_nk - W_nk|: 0 for q8 / q4,
// lookup_step / 2 for nf4 / pal4), exactly what the kernels compute apart from float rounding.
// Rounding: the float path sums K products and the int8 path rounds (K/32 + 3) times; each
// rounding is at most FLT_EPSILON times the magnitude sum_k |x_k| |W_nk|, and the quantized
// operands are at most 1 + 32/254 < 2 times their float magnitudes.
std::vector<double> forward_budget(const std::vector<double>& x, const Tensor& weight,
                                   std::int64_t m, std::int64_t k, std::int64_t n) {
  const std::vector<double> w = values(weight);
  std::vector<double> budget(m * n);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double steps = 0, magnitude = 0;
      for (std::int64_t k0 = 0; k0 < k; k0 += 32) {
        double amax = 0, wsum = 0;
        for (std::int64_t kk = k0; kk < std::min(k, k0 + 32); ++kk) {
          const double e = lookup_step(weight, j, kk) / 2;
          amax = std::max(amax, std::fabs(x[i * k + kk]));
          wsum += std::fabs(w[j * k + kk]) + e;
          steps += std::fabs(x[i * k + kk]) * e;
          magnitude += std::fabs(x[i * k + kk] * w[j * k + kk]);
        }
        steps += amax / 127 / 2 * wsum;
      }
      budget[i * n + j] = steps + double(k + k / 32 + 3) * FLT_EPSILON * 2 * magnitude;
    }
  return budget;
}

// The budget of dx = dy W (dy (M, N), W (N, K)) on the int8 path. dy is quantized per block b of
// 32 along N, q8 after multiplying each column n by the row scale s_n of W (so the codes of W are
// exact): step d_b = max_{n in b} |dy_n s_n| / 127, error <= sum_b d_b / 2 * sum_{n in b} |q_nk|.
// The 4-bit formats: d_b = max_{n in b} |dy_n| / 127 against W^, the weight the kernel
// multiplies, plus W^'s error: the lookup (nf4 / pal4, lookup_step / 2) and the requantization
// of W's block of 32 rows in group g to int8 with step t = max_{n in b} t_n, t_n = 7 s_{n,g} / 127
// (q4) or lookup_step (nf4, pal4): e_n = lookup_step_n / 2 + t / 2, adding
// sum_n (|dy_n| + d_b / 2) e_n.
// Rounding as in forward_budget.
std::vector<double> backward_budget(const std::vector<double>& dy, const Tensor& w,
                                    std::int64_t m) {
  const std::int64_t n = w.dim(0), k = w.dim(1);
  const std::vector<double> wd = values(w);
  const bool q8 = w.dtype() == DType::Q8;
  const std::int64_t groups = (k + 31) / 32;
  auto tile_step = [&](std::int64_t r, std::int64_t c) {
    return w.dtype() == DType::Q4 ? 7 * double(w.scales()[r * groups + c / 32]) / 127
                                  : lookup_step(w, r, c);
  };
  std::vector<double> budget(m * k);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < k; ++c) {
      double total = 0, magnitude = 0;
      for (std::int64_t n0 = 0; n0 < n; n0 += 32) {
        const std::int64_t n1 = std::min(n, n0 + 32);
        double amax = 0, tmax = 0;
        for (std::int64_t r = n0; r < n1; ++r) {
          const double s = q8 ? w.scales()[r] : 1.0;
          amax = std::max(amax, std::fabs(dy[i * n + r] * s));
          if (!q8) tmax = std::max(tmax, tile_step(r, c));
          magnitude += std::fabs(dy[i * n + r] * wd[r * k + c]);
        }
        const double step = amax / 127;
        for (std::int64_t r = n0; r < n1; ++r) {
          const double s = q8 ? w.scales()[r] : 1.0;
          if (s > 0) total += step / 2 * std::fabs(wd[r * k + c]) / s;
          if (!q8) {
            const double e = lookup_step(w, r, c) / 2 + tmax / 2;
            total += (std::fabs(dy[i * n + r]) + step / 2) * e;
          }
        }
      }
      budget[i * k + c] = total + double(n + n / 32 + 3) * FLT_EPSILON * 2 * magnitude;
    }
  return budget;
}

// max over elements of |a - b| - budget (<= 0 when every element is inside its budget).
double worst_excess(const std::vector<double>& a, const std::vector<double>& b,
                    const std::vector<double>& budget) {
  double worst = -1e300;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) - budget[i]);
  return worst;
}

// Every implementation's linear forward and dX at `threads` threads against the scalar reference
// at 1 thread, on every linear shape, q8 and q4.
void check_linear_against_scalar(int threads) {
  for (DType storage : {DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    for (const LinearShape& s : kLinearShapes) {
      const Tensor w = quantize(random_f32({s.n, s.k}, 7, 0.05), storage, MemCategory::Workspace);
      const Tensor x = random_f32({s.m, s.k}, 8, 1.0);
      const Tensor dy = random_f32({s.m, s.n}, 9, 1.0);
      std::vector<float> y_ref(s.m * s.n), dx_ref(s.m * s.k, 0.5f);
      qgemm::linear_forward(y_ref.data(), x.data<float>(), s.m, w, Isa::Scalar, 1);
      qgemm::linear_backward_input(dx_ref.data(), dy.data<float>(), s.m, w, Isa::Scalar, 1);
      // Both implementations see the same int32 sums and scales and differ only in the order of
      // float roundings: at most (blocks + 3) each, on magnitudes below 2 sum |x||W|.
      const std::vector<double> xv = values(x), dyv = values(dy), wv = values(w);
      for (Isa isa : qgemm::available_isas()) {
        INFO(qgemm::isa_name(isa) << " " << dtype_name(storage) << " M " << s.m << " K " << s.k
                                  << " N " << s.n << " threads " << threads);
        std::vector<float> y(s.m * s.n, 7.0f), dx(s.m * s.k, 0.5f);
        qgemm::linear_forward(y.data(), x.data<float>(), s.m, w, isa, threads);
        qgemm::linear_backward_input(dx.data(), dy.data<float>(), s.m, w, isa, threads);
        for (std::int64_t i = 0; i < s.m; ++i) {
          for (std::int64_t j = 0; j < s.n; ++j) {
            double mag = 0;
            for (std::int64_t c = 0; c < s.k; ++c)
              mag += std::fabs(xv[i * s.k + c] * wv[j * s.k + c]);
            REQUIRE(std::fabs(y[i * s.n + j] - y_ref[i * s.n + j]) <=
                    2 * double(s.k / 32 + 4) * FLT_EPSILON * 2 * mag);
          }
          for (std::int64_t c = 0; c < s.k; ++c) {
            double mag = 0.5;  // dx accumulates onto 0.5
            for (std::int64_t j = 0; j < s.n; ++j)
              mag += std::fabs(dyv[i * s.n + j] * wv[j * s.k + c]);
            REQUIRE(std::fabs(dx[i * s.k + c] - dx_ref[i * s.k + c]) <=
                    2 * double(s.n / 32 + 4) * FLT_EPSILON * 2 * mag);
          }
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("qgemm: linear forward and dx of every implementation match the scalar one at 1 thread",
          "[qgemm]") {
  check_linear_against_scalar(1);
}

TEST_CASE("qgemm: linear forward and dx of every implementation match the scalar one at 2 threads",
          "[qgemm]") {
  check_linear_against_scalar(2);
}

TEST_CASE("qgemm: the vector forward packing writes the reference's bytes", "[qgemm]") {
  // K a multiple of 32 (vector path for whole panels) and not (reference only); N with a partial
  // last panel; q8 and q4.
  for (DType storage : {DType::Q8, DType::Q4}) {
    for (std::int64_t k : {32, 96, 768, 100}) {
      const std::int64_t n = 37;
      const Tensor w = quantize(random_f32({n, k}, 31, 0.05), storage, MemCategory::Workspace);
      for (std::int64_t n0 = 0; n0 < n; n0 += qgemm::kPanel) {
        INFO(dtype_name(storage) << " K " << k << " panel at row " << n0);
        const auto ref = qgemm::detail::pack_forward_panel(w, n0, true);
        const auto fast = qgemm::detail::pack_forward_panel(w, n0, false);
        REQUIRE(fast.b == ref.b);
        REQUIRE(fast.bsum == ref.bsum);
        REQUIRE(fast.sb == ref.sb);
        std::int64_t nonzero = 0;
        for (std::int8_t c : ref.b) nonzero += c != 0;
        REQUIRE(nonzero > 0);
      }
    }
  }
}

TEST_CASE("int8 linear op: y and dx within the activation rounding budget of the f32 path",
          "[qgemm]") {
  for (DType storage : {DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    for (const LinearShape& s : kLinearShapes) {
      INFO(dtype_name(storage) << " M " << s.m << " K " << s.k << " N " << s.n);
      const Tensor w = quantize(random_f32({s.n, s.k}, 17, 0.05), storage, MemCategory::Workspace);
      const Tensor bias = random_f32({s.n}, 18, 0.1);
      const Tensor dy = random_f32({s.m, s.n}, 19, 1.0);
      auto run = [&](Compute compute, std::vector<double>& y, std::vector<double>& dx) {
        Tensor x = random_f32({s.m, s.k}, 20, 1.0);
        x.set_requires_grad(true);
        const Tensor out = ops::linear(x, w, bias, ops::LinearOptions{compute});
        backward(out, dy);
        y = values(out);
        dx = values(x.grad());
        return values(x);
      };
      std::vector<double> y32, dx32, y8, dx8;
      const std::vector<double> x = run(Compute::F32, y32, dx32);
      run(Compute::Int8, y8, dx8);
      CHECK(worst_excess(y8, y32, forward_budget(x, w, s.m, s.k, s.n)) <= 0);
      CHECK(worst_excess(dx8, dx32, backward_budget(values(dy), w, s.m)) <= 0);
      CHECK(y8 != y32);  // the int8 path really ran
    }
  }
}

TEST_CASE("int8 linear op: f32 weights and f64 activations keep the float path", "[qgemm]") {
  const Tensor w = random_f32({9, 40}, 30, 0.05);
  const Tensor x = random_f32({3, 40}, 31, 1.0);
  CHECK(values(ops::linear(x, w, Tensor(), {Compute::Int8})) == values(ops::linear(x, w)));
  const Tensor wq = quantize(w, DType::Q4, MemCategory::Workspace);
  const Tensor x64 = x.to(DType::F64);
  CHECK(values(ops::linear(x64, wq, Tensor(), {Compute::Int8})) == values(ops::linear(x64, wq)));
}

TEST_CASE("int8 path: LoRA gradients of an encoder layer stay within 3% of the f32 path",
          "[qgemm]") {
  // Budget. Each int8 product quantizes one operand per block of 32 with step max|v| / 127; the
  // rounding error is uniform, rms step / sqrt(12), and for normal-like values max|v| over 32 is
  // about 2.5 rms(v), so one product carries a relative rms error of 2.5 / 127 / sqrt(12) = 0.57 %.
  // The LoRA gradients of the query and value adapters depend on the layer's linear products in
  // the forward (query, key, value, attention output, intermediate, output: 6) and the backward
  // dx of the last 4 of them: 10 independent errors, sqrt(10) * 0.57 % = 1.8 %. q4 adds the
  // weight requantization of dx (step 1/127 of a tile's max, smaller again). The budget is 3 %.
  constexpr double kLoraGradRelativeBudget = 0.03;
  constexpr std::int64_t b = 2, t = 16, c = 64, f = 128, r = 8;
  constexpr int heads = 4;
  for (DType storage : {DType::Q8, DType::Q4}) {
    INFO(dtype_name(storage));
    std::vector<Tensor> p;
    for (size_t i = 0; i < test::encoder_param_names().size(); ++i) {
      const std::string& name = test::encoder_param_names()[i];
      const bool is_weight = name.ends_with("dense.weight") || name.ends_with("query.weight") ||
                             name.ends_with("key.weight") || name.ends_with("value.weight");
      const bool ln = name.find("LayerNorm") != std::string::npos;
      const std::int64_t rows = name.starts_with("intermediate") ? f : c;
      const std::int64_t cols = name.starts_with("output.dense") ? f : c;
      if (is_weight) {
        p.push_back(
            quantize(random_f32({rows, cols}, 40 + i, 0.05), storage, MemCategory::Workspace));
      } else if (ln) {
        p.push_back(name.ends_with("weight") ? Tensor::full({c}, 1.0) : Tensor::zeros({c}));
      } else {
        p.push_back(random_f32({rows}, 40 + i, 0.02));
      }
    }
    const Tensor x = random_f32({b, t, c}, 60, 1.0);
    const Tensor mask = Tensor::zeros({b, t});
    const Tensor probe = random_f32({b, t, c}, 61, 1.0);
    auto grads = [&](Compute compute) {
      // LoRA on query (p[0]) and value (p[4]): y = x Wq^T + bq + (x A^T) B^T.
      std::vector<Tensor> lora;
      for (int i = 0; i < 4; ++i) {
        lora.push_back(
            test::param(i % 2 == 0 ? Shape{r, c} : Shape{c, r}, 70 + i, 0.1, DType::F32));
      }
      const ops::LinearOptions options{compute};
      auto lin = [&](const Tensor& in, const Tensor* w, int i) {
        Tensor y = ops::linear(in, w[i], w[i + 1], options);
        if (i == 0 || i == 4) {
          const Tensor& a = lora[i == 0 ? 0 : 2];
          const Tensor& bb = lora[i == 0 ? 1 : 3];
          y = ops::add(y, ops::linear(ops::linear(in, a), bb));
        }
        return y;
      };
      const Tensor y = test::encoder_layer(x, p.data(), mask, heads, 1e-12, lin);
      backward(ops::sum(ops::mul(y, probe)));
      std::vector<std::vector<double>> g;
      for (const Tensor& l : lora) g.push_back(values(l.grad()));
      return g;
    };
    const auto g32 = grads(Compute::F32);
    const auto g8 = grads(Compute::Int8);
    for (size_t i = 0; i < g32.size(); ++i) {
      double diff = 0, ref = 0;
      for (size_t j = 0; j < g32[i].size(); ++j) {
        diff += (g8[i][j] - g32[i][j]) * (g8[i][j] - g32[i][j]);
        ref += g32[i][j] * g32[i][j];
      }
      INFO("adapter tensor " << i << " relative error " << std::sqrt(diff / ref));
      CHECK(ref > 0);
      CHECK(std::sqrt(diff / ref) <= kLoraGradRelativeBudget);
      CHECK(diff > 0);
    }
  }
}
