// Dense and quantized GEMM kernels over Eigen maps of tensor buffers (see kernels.h).
#include "edgetune/autograd/kernels.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <string>

#include "checks.h"
#include "edgetune/autograd/quant.h"
#include "edgetune/core/context.h"

namespace edgetune::kernels {

using detail::describe;
using detail::dispatch_float;
using detail::require;

namespace {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MapMat = Eigen::Map<RowMat<T>>;
template <class T>
using CMapMat = Eigen::Map<const RowMat<T>>;
template <class T>
using MapVec = Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>;

template <class T>
CMapMat<T> as_matrix(const Tensor& t) {
  return CMapMat<T>(t.data<T>(), t.shape().rows(), t.shape().last());
}
template <class T>
MapMat<T> as_mut_matrix(Tensor& t) {
  return MapMat<T>(t.data<T>(), t.shape().rows(), t.shape().last());
}

// Scratch rows for dequantized tiles, allocated through the accountant (Workspace).
template <class T>
Tensor scratch_tile(std::int64_t rows, std::int64_t k) {
  return Tensor::empty(Shape{rows, k}, std::is_same_v<T, float> ? DType::F32 : DType::F64,
                       MemCategory::Workspace);
}

// A thread's share of a float product's output rows is a multiple of kRowGrain rows (the last
// share takes the remainder too): whole column panels of Eigen's GEMM kernel (its column-major view
// of a row-major output has our rows as columns), and never so few that Eigen would switch to its
// matrix-vector or coefficient-wise product.
constexpr std::int64_t kRowGrain = 16;
// Multiply-adds below which a thread is not worth starting (Eigen's own minimum task size).
constexpr double kMinWorkPerThread = 50000;

// Calls f(r0, rows) over consecutive ranges of rows covering [0, m) of the output of an
// (m, k) x (k, n) product, one range per thread of the current context when the product is large
// enough. Eigen runs single-threaded in each range (EIGEN_DONT_PARALLELIZE) and blocks the
// reduction by k alone, so every output element is summed in the order of one single-threaded
// product over all rows: the result is the same bits at every thread count. The reduction is
// never split.
template <class F>
void for_row_ranges(std::int64_t m, std::int64_t n, std::int64_t k, const F& f) {
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const std::int64_t grains = m / kRowGrain;
  const std::int64_t threads = std::min<std::int64_t>(
      {num_threads(), grains, static_cast<std::int64_t>(work / kMinWorkPerThread)});
  if (threads <= 1 || n < kRowGrain) {
    f(std::int64_t{0}, m);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t i = 0; i < threads; ++i) {
    const std::int64_t r0 = grains * i / threads * kRowGrain;
    const std::int64_t r1 = i + 1 == threads ? m : grains * (i + 1) / threads * kRowGrain;
    f(r0, r1 - r0);
  }
}

// Dequantizes rows [r0, r0 + rows) of w into tile, rows split over threads.
template <class T>
void dequantize_tile(const Tensor& w, std::int64_t r0, std::int64_t rows, T* tile) {
  const std::int64_t k = w.dim(1);
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (rows * k > 32768)
  for (std::int64_t r = 0; r < rows; ++r) dequantize_rows(w, r0 + r, 1, tile + r * k);
}

// Calls f(n0, W_tile) for consecutive tiles of up to kQuantTileRows rows of the quantized (N, K)
// weight w, each dequantized into one reused scratch tile.
template <class T, class F>
void for_each_tile(const Tensor& w, F&& f) {
  const std::int64_t n = w.dim(0), k = w.dim(1);
  const std::int64_t tile_rows = std::min(kQuantTileRows, n);
  Tensor tile = scratch_tile<T>(tile_rows, k);
  for (std::int64_t n0 = 0; n0 < n; n0 += tile_rows) {
    const std::int64_t nb = std::min(tile_rows, n - n0);
    dequantize_tile<T>(w, n0, nb, tile.data<T>());
    f(n0, CMapMat<T>(tile.data<T>(), nb, k));
  }
}

template <class T>
void linear_forward_t(Tensor& y, const Tensor& x, const Tensor& w, const Tensor* b) {
  const std::int64_t m = x.shape().rows(), n = w.dim(0), k = w.dim(1);
  auto X = as_matrix<T>(x);
  MapMat<T> Y(y.data<T>(), m, n);
  if (is_quantized(w.dtype())) {
    for_each_tile<T>(w, [&](std::int64_t n0, const CMapMat<T>& W) {
      for_row_ranges(m, W.rows(), k, [&](std::int64_t r0, std::int64_t rows) {
        Y.block(r0, n0, rows, W.rows()).noalias() = X.middleRows(r0, rows) * W.transpose();
      });
    });
  } else {
    const auto W = as_matrix<T>(w);
    for_row_ranges(m, n, k, [&](std::int64_t r0, std::int64_t rows) {
      Y.middleRows(r0, rows).noalias() = X.middleRows(r0, rows) * W.transpose();
    });
  }
  if (b != nullptr) {
    Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> bias(b->data<T>(), n);
    Y.rowwise() += bias;
  }
}

template <class T>
void linear_backward_input_t(Tensor& dx, const Tensor& dy, const Tensor& w) {
  const std::int64_t m = dy.shape().rows(), n = w.dim(0), k = w.dim(1);
  auto DY = as_matrix<T>(dy);
  MapMat<T> DX(dx.data<T>(), m, k);
  if (is_quantized(w.dtype())) {
    for_each_tile<T>(w, [&](std::int64_t n0, const CMapMat<T>& W) {
      for_row_ranges(m, k, W.rows(), [&](std::int64_t r0, std::int64_t rows) {
        DX.middleRows(r0, rows).noalias() += DY.block(r0, n0, rows, W.rows()) * W;
      });
    });
  } else {
    const auto W = as_matrix<T>(w);
    for_row_ranges(m, k, n, [&](std::int64_t r0, std::int64_t rows) {
      DX.middleRows(r0, rows).noalias() += DY.middleRows(r0, rows) * W;
    });
  }
}

}  // namespace

int num_threads() {
  const int n = current_context().threads;
  return n > 0 ? n : omp_get_max_threads();
}

int resolve_threads(int setting) { return setting > 0 ? setting : omp_get_max_threads(); }

namespace {
// The integer kernels apply to an f32 activation against a quantized weight under Compute::Int8.
bool use_int8(Compute compute, const Tensor& activation, const Tensor& w) {
  return compute == Compute::Int8 && is_quantized(w.dtype()) && activation.dtype() == DType::F32;
}
}  // namespace

void linear_forward(Tensor& y, const Tensor& x, const Tensor& w, const Tensor* b,
                    Compute compute) {
  require(is_float(x.dtype()) && x.rank() >= 1, "linear: input must be float, got " + describe(x));
  require(w.rank() == 2 && w.dim(1) == x.shape().last(),
          "linear: weight " + describe(w) + " does not fit input " + describe(x) +
              " (expected (N, " + std::to_string(x.shape().last()) + "))");
  require(is_quantized(w.dtype()) || w.dtype() == x.dtype(),
          "linear: weight " + describe(w) + " and input " + describe(x) + " differ in dtype");
  require(b == nullptr || (b->dtype() == x.dtype() && b->numel() == w.dim(0)),
          "linear: bias " + (b ? describe(*b) : std::string()) + " does not fit weight " +
              describe(w));
  if (use_int8(compute, x, w)) {
    qgemm::linear_forward(y.data<float>(), x.data<float>(), x.shape().rows(), w,
                          qgemm::selected_isa(), num_threads());
    if (b != nullptr) {
      MapMat<float>(y.data<float>(), x.shape().rows(), w.dim(0)).rowwise() +=
          Eigen::Map<const Eigen::Matrix<float, 1, Eigen::Dynamic>>(b->data<float>(), w.dim(0));
    }
    return;
  }
  dispatch_float(x.dtype(), [&]<class T>() { linear_forward_t<T>(y, x, w, b); });
}

void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w, Compute compute) {
  if (use_int8(compute, dy, w)) {
    qgemm::linear_backward_input(dx.data<float>(), dy.data<float>(), dy.shape().rows(), w,
                                 qgemm::selected_isa(), num_threads());
    return;
  }
  dispatch_float(dy.dtype(), [&]<class T>() { linear_backward_input_t<T>(dx, dy, w); });
}

void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x) {
  require(is_float(dw.dtype()), "linear: no gradient for a frozen quantized weight");
  dispatch_float(dy.dtype(), [&]<class T>() {
    // Rows of dw are columns of dy: split over them, never over the reduction (rows of dy).
    auto DW = as_mut_matrix<T>(dw);
    const auto DY = as_matrix<T>(dy);
    const auto X = as_matrix<T>(x);
    for_row_ranges(DW.rows(), DW.cols(), DY.rows(), [&](std::int64_t r0, std::int64_t rows) {
      DW.middleRows(r0, rows).noalias() += DY.middleCols(r0, rows).transpose() * X;
    });
  });
}

void bias_backward(Tensor& db, const Tensor& dy) {
  dispatch_float(dy.dtype(), [&]<class T>() {
    MapVec<T>(db.data<T>(), db.numel()) += as_matrix<T>(dy).colwise().sum();
  });
}

void linear_backward_weight_per_example(Tensor& dw, const Tensor& dy, const Tensor& x) {
  const std::int64_t b = dw.dim(0), m = dy.shape().rows(), n = dy.shape().last(), k = x.shape().last();
  require(b > 0 && m % b == 0 && dw.numel() == b * n * k && x.shape().rows() == m,
          "linear_backward_weight_per_example: " + describe(dw) + " from " + describe(dy) +
              " and " + describe(x));
  dispatch_float(dy.dtype(), [&]<class T>() {
    // Example b: dy_b (R, N) enters transposed, x_b (R, K) as stored.
    batched_gemm<T>(dw.data<T>(), dy.data<T>(), x.data<T>(), b, n, k, m / b, true, false, true);
  });
}

void bias_backward_per_example(Tensor& db, const Tensor& dy) {
  const std::int64_t b = db.dim(0), m = dy.shape().rows(), n = dy.shape().last();
  require(b > 0 && m % b == 0 && db.numel() == b * n,
          "bias_backward_per_example: " + describe(db) + " from " + describe(dy));
  dispatch_float(dy.dtype(), [&]<class T>() {
    const std::int64_t r = m / b;
    for (std::int64_t e = 0; e < b; ++e) {
      MapVec<T>(db.data<T>() + e * n, n) += CMapMat<T>(dy.data<T>() + e * r * n, r, n).colwise().sum();
    }
  });
}

namespace {
// Rows [r0, r0 + rows) of one matrix of batched_gemm.
template <class T>
void gemm_rows(T* c, const T* a, const T* b, std::int64_t m, std::int64_t n, std::int64_t k,
               bool trans_a, bool trans_b, bool accumulate, std::int64_t r0, std::int64_t rows) {
  auto C = MapMat<T>(c, m, n).middleRows(r0, rows);
  auto run = [&](const auto& A, const auto& B) {
    if (accumulate) {
      C.noalias() += A.middleRows(r0, rows) * B;
    } else {
      C.noalias() = A.middleRows(r0, rows) * B;
    }
  };
  if (!trans_a && !trans_b) {
    run(CMapMat<T>(a, m, k), CMapMat<T>(b, k, n));
  } else if (!trans_a && trans_b) {
    run(CMapMat<T>(a, m, k), CMapMat<T>(b, n, k).transpose());
  } else if (trans_a && !trans_b) {
    run(CMapMat<T>(a, k, m).transpose(), CMapMat<T>(b, k, n));
  } else {
    run(CMapMat<T>(a, k, m).transpose(), CMapMat<T>(b, n, k).transpose());
  }
}
}  // namespace

template <class T>
void batched_gemm(T* c, const T* a, const T* b, std::int64_t batch, std::int64_t m,
                  std::int64_t n, std::int64_t k, bool trans_a, bool trans_b, bool accumulate) {
  if (batch == 1) {
    for_row_ranges(m, n, k, [&](std::int64_t r0, std::int64_t rows) {
      gemm_rows(c, a, b, m, n, k, trans_a, trans_b, accumulate, r0, rows);
    });
    return;
  }
  // One matrix per thread, each a single-threaded product as in one call over it alone.
#pragma omp parallel for schedule(static) num_threads(num_threads())
  for (std::int64_t i = 0; i < batch; ++i) {
    gemm_rows(c + i * m * n, a + i * m * k, b + i * k * n, m, n, k, trans_a, trans_b, accumulate,
              0, m);
  }
}
template void batched_gemm<float>(float*, const float*, const float*, std::int64_t, std::int64_t,
                                  std::int64_t, std::int64_t, bool, bool, bool);
template void batched_gemm<double>(double*, const double*, const double*, std::int64_t,
                                   std::int64_t, std::int64_t, std::int64_t, bool, bool, bool);

void add_into(Tensor& dst, const Tensor& src) {
  require(dst.shape() == src.shape() && dst.dtype() == src.dtype(),
          "add_into: " + describe(src) + " into " + describe(dst));
  const std::int64_t n = dst.numel();
  dispatch_float(dst.dtype(), [&]<class T>() {
    T* d = dst.data<T>();
    const T* s = src.data<T>();
#pragma omp parallel for simd schedule(static) num_threads(num_threads()) if (n > 65536)
    for (std::int64_t i = 0; i < n; ++i) d[i] += s[i];
  });
}

}  // namespace edgetune::kernels
