// Compute kernels under the differentiable ops: dense and quantized GEMM through Eigen, and a few
// whole-tensor helpers. No autograd here: ops.cpp records, these compute.
//
// Shapes: a tensor of rank r >= 2 is used as a row-major matrix of shape.rows() x shape.last().
// Float kernels take F32 or F64 and require every float operand to share the dtype.
#pragma once

#include <cstdint>

#include "edgetune/autograd/qgemm.h"
#include "edgetune/autograd/tensor.h"

namespace edgetune::kernels {

// Threads every parallel kernel uses: the current context's (context.h), or, when that is 0,
// OpenMP's default for the calling thread. Kernels pass it to each parallel region; nothing sets
// OpenMP's or Eigen's thread count (Eigen is built single-threaded, EIGEN_DONT_PARALLELIZE, and
// the float GEMMs share out rows of the output themselves, bit-identically at any count).
int num_threads();
// The thread count a `threads` setting (TrainConfig, PretrainConfig, the CLI's --threads) stands
// for: the setting itself when positive, else all cores.
int resolve_threads(int setting);

// Rows of a quantized weight dequantized at a time by the quantized GEMMs (a scratch tile of
// kQuantTileRows x K floats, never a float copy of the whole matrix).
inline constexpr std::int64_t kQuantTileRows = 128;

// y = x W^T (+ b).  x (M, K) float; W (N, K) f32/f64 (same dtype as x) or quantized; b (N) or null;
// y (M, N), overwritten. Compute::Int8 with an f32 x and a quantized W runs the integer kernels
// (qgemm.h, implementation qgemm::selected_isa()); otherwise the float path.
void linear_forward(Tensor& y, const Tensor& x, const Tensor& w, const Tensor* b,
                    Compute compute = Compute::F32);
// dx += dy W.  dy (M, N); W (N, K) any storage; dx (M, K). compute as in linear_forward.
void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w,
                           Compute compute = Compute::F32);
// dw += dy^T x.  dy (M, N); x (M, K); dw (N, K) float.
void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x);
// db += sum over rows of dy.  dy (M, N); db (N).
void bias_backward(Tensor& db, const Tensor& dy);
// The same per example, for rows that are B examples of R rows each, example-major (M = B R):
//   dw[b] += dy_b^T x_b and db[b] += sum over the rows of dy_b, with dy_b, x_b the R rows of
//   example b.  dy (M, N); x (M, K); dw (B, N*K) float; db (B, N). B is dw's (db's) first
//   dimension and must divide M.
void linear_backward_weight_per_example(Tensor& dw, const Tensor& dy, const Tensor& x);
void bias_backward_per_example(Tensor& db, const Tensor& dy);

// Batched matrix product over `batch` independent matrices, row-major:
//   c[b] (M, N) (+)= op(a[b]) op(b[b]), op(a) (M, K) is a or a^T, op(b) (K, N) is b or b^T.
// With accumulate, c is added to; otherwise overwritten.
template <class T>
void batched_gemm(T* c, const T* a, const T* b, std::int64_t batch, std::int64_t m,
                  std::int64_t n, std::int64_t k, bool trans_a, bool trans_b, bool accumulate);

// dst += src (same shape and float dtype).
void add_into(Tensor& dst, const Tensor& src);

}  // namespace edgetune::kernels
