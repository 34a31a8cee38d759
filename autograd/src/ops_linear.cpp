// linear and matmul: forward and backward side by side.
#include <memory>

#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/profile.h"
#include "ops_common.h"

namespace edgetune::ops {

using namespace detail;

// ---- linear: y = x W^T + b -------------------------------------------------------------------

namespace {
class LinearNode : public Node {
 public:
  LinearNode(Tensor w, Tensor x_if_dw, Compute compute)
      : w_(std::move(w)), x_(std::move(x_if_dw)), compute_(compute) {}
  const char* name() const override { return "linear"; }
  // grads: 0 -> dx (..., K), 1 -> dW (N, K), 2 -> db (N); per example (autograd.h) dW (B, N*K)
  // and db (B, N) over the example-major rows of dy and x.
  void backward(const Tensor& dy, GradSink& grads) override {
    if (grads.needed(0)) kernels::linear_backward_input(grads.at(0), dy, w_, compute_);
    if (grads.needed(1)) {
      if (Tensor* dw = grads.per_example(1)) {
        grads.per_example_grads()->rows_per_example(dy.shape().rows(), name());
        kernels::linear_backward_weight_per_example(*dw, dy, x_);
      } else {
        kernels::linear_backward_weight(grads.at(1), dy, x_);
      }
    }
    if (grads.needed(2)) {
      if (Tensor* db = grads.per_example(2)) {
        grads.per_example_grads()->rows_per_example(dy.shape().rows(), name());
        kernels::bias_backward_per_example(*db, dy);
      } else {
        kernels::bias_backward(grads.at(2), dy);
      }
    }
  }
  void release() override {
    w_ = Tensor();
    x_ = Tensor();
  }

 private:
  Tensor w_;  // (N, K), any storage: dx = dy W
  Tensor x_;  // (..., K), kept only when W requires grad: dW = dy^T x
  Compute compute_;
};
}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b, const LinearOptions& options) {
  profile::Scope profile_scope("linear");
  require_float("linear", x);
  require(w.defined() && w.rank() == 2, "linear: weight must be an (N, K) matrix");
  Shape out_shape = x.shape();
  out_shape[-1] = w.dim(0);
  Tensor y = new_output(out_shape, x.dtype());
  kernels::linear_forward(y, x, w, b.defined() ? &b : nullptr, options.compute);
  if (should_record({&x, &w, &b})) {
    record(y, std::make_shared<LinearNode>(w.detach(), w.requires_grad() ? x.detach() : Tensor(),
                                        options.compute),
           {&x, &w, &b});
  }
  return y;
}

// ---- matmul: c = op(a) op(b), batched over leading dimensions ---------------------------------

namespace {
// How an operand enters a product: as stored, or transposed.
enum class Orientation { AsStored, Transposed };

Orientation orientation(bool transposed) {
  return transposed ? Orientation::Transposed : Orientation::AsStored;
}
Orientation flipped(Orientation o) {
  return o == Orientation::Transposed ? Orientation::AsStored : Orientation::Transposed;
}

template <class T>
struct Operand {
  const T* data;  // (batch, ...) row-major, one matrix per batch entry
  Orientation orientation;
};

// lhs rhs, batched: lhs enters as (rows, inner), rhs as (inner, cols), the result is (rows, cols).
template <class T>
struct Product {
  Operand<T> lhs, rhs;
  std::int64_t rows, cols, inner;

  // (lhs rhs)^T = rhs^T lhs^T: the same values, laid out transposed.
  Product transposed() const {
    return {{rhs.data, flipped(rhs.orientation)}, {lhs.data, flipped(lhs.orientation)}, cols, rows,
            inner};
  }
  // This product laid out as the gradient of an operand x that enters with orientation o: it is
  // the gradient of op(x), so x's own gradient is its transpose when op(x) = x^T.
  Product stored_for(Orientation o) const {
    return o == Orientation::Transposed ? transposed() : *this;
  }
};

enum class Write { Overwrite, Accumulate };

// out (batch, p.rows, p.cols) = p, or += p.
template <class T>
void gemm(T* out, const Product<T>& p, std::int64_t batch, Write write) {
  kernels::batched_gemm(out, p.lhs.data, p.rhs.data, batch, p.rows, p.cols, p.inner,
                        p.lhs.orientation == Orientation::Transposed,
                        p.rhs.orientation == Orientation::Transposed, write == Write::Accumulate);
}

struct MatmulDims {
  std::int64_t batch, m, n, k;
};

class MatmulNode : public Node {
 public:
  MatmulNode(Tensor a, Tensor b, MatmulDims d, Orientation op_a, Orientation op_b)
      : a_(std::move(a)), b_(std::move(b)), d_(d), op_a_(op_a), op_b_(op_b) {}
  const char* name() const override { return "matmul"; }
  // grads: 0 -> da (shape of a), 1 -> db (shape of b); dc (..., M, N).
  // d op(a) = dc op(b)^T (M, K) and d op(b) = op(a)^T dc (K, N), each stored as its operand is.
  void backward(const Tensor& dc, GradSink& grads) override {
    dispatch_float(dc.dtype(), [&]<class T>() {
      const auto [batch, m, n, k] = d_;
      const Operand<T> g{dc.data<T>(), Orientation::AsStored};
      if (grads.needed(0)) {
        const Product<T> d_op_a{g, {b_.data<T>(), flipped(op_b_)}, m, k, n};
        gemm(grads.at(0).data<T>(), d_op_a.stored_for(op_a_), batch, Write::Accumulate);
      }
      if (grads.needed(1)) {
        const Product<T> d_op_b{{a_.data<T>(), flipped(op_a_)}, g, k, n, m};
        gemm(grads.at(1).data<T>(), d_op_b.stored_for(op_b_), batch, Write::Accumulate);
      }
    });
  }
  void release() override {
    a_ = Tensor();
    b_ = Tensor();
  }

 private:
  Tensor a_;  // kept only when b needs a gradient
  Tensor b_;  // kept only when a needs a gradient
  MatmulDims d_;
  Orientation op_a_, op_b_;
};
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  profile::Scope profile_scope("matmul");
  require_float("matmul", a);
  require_float("matmul", b);
  require_same_dtype("matmul", a, b);
  require(a.rank() >= 2 && a.rank() == b.rank(),
          "matmul: " + describe(a) + " and " + describe(b) + " must have the same rank >= 2");
  for (int i = 0; i + 2 < a.rank(); ++i) {
    require(a.dim(i) == b.dim(i), "matmul: leading dimensions of " + describe(a) + " and " +
                                      describe(b) + " differ");
  }
  const std::int64_t m = trans_a ? a.dim(-1) : a.dim(-2);
  const std::int64_t k = trans_a ? a.dim(-2) : a.dim(-1);
  const std::int64_t kb = trans_b ? b.dim(-1) : b.dim(-2);
  const std::int64_t n = trans_b ? b.dim(-2) : b.dim(-1);
  require(k == kb, "matmul: inner dimensions of " + describe(a) + " and " + describe(b) +
                       " differ (" + std::to_string(k) + " vs " + std::to_string(kb) + ")");
  Shape out_shape = a.shape();
  out_shape[-2] = m;
  out_shape[-1] = n;
  const MatmulDims d{out_shape.numel() / std::max<std::int64_t>(m * n, 1), m, n, k};
  Tensor c = new_output(out_shape, a.dtype());
  const Orientation op_a = orientation(trans_a), op_b = orientation(trans_b);
  dispatch_float(a.dtype(), [&]<class T>() {
    const Product<T> p{{a.data<T>(), op_a}, {b.data<T>(), op_b}, m, n, k};
    gemm(c.data<T>(), p, d.batch, Write::Overwrite);
  });
  if (should_record({&a, &b})) {
    record(c,
           std::make_shared<MatmulNode>(b.requires_grad() ? a.detach() : Tensor(),
                                        a.requires_grad() ? b.detach() : Tensor(), d, op_a, op_b),
           {&a, &b});
  }
  return c;
}

}  // namespace edgetune::ops
