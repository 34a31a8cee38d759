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
  // grads: 0 -> dx (..., K), 1 -> dW (N, K), 2 -> db (N)
  void backward(const Tensor& dy, GradSink& grads) override {
    if (grads.needed(0)) kernels::linear_backward_input(grads.at(0), dy, w_, compute_);
    if (grads.needed(1)) kernels::linear_backward_weight(grads.at(1), dy, x_);
    if (grads.needed(2)) kernels::bias_backward(grads.at(2), dy);
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
struct MatmulDims {
  std::int64_t batch, m, n, k;
};

class MatmulNode : public Node {
 public:
  MatmulNode(Tensor a, Tensor b, MatmulDims d, bool ta, bool tb)
      : a_(std::move(a)), b_(std::move(b)), d_(d), ta_(ta), tb_(tb) {}
  const char* name() const override { return "matmul"; }
  // grads: 0 -> da (shape of a), 1 -> db (shape of b); dc (..., M, N)
  void backward(const Tensor& dc, GradSink& grads) override {
    dispatch(dc.dtype(), [&](auto zero) {
      using T = decltype(zero);
      const auto [batch, m, n, k] = d_;
      const T* g = dc.data<T>();
      if (grads.needed(0)) {
        T* da = grads.at(0).data<T>();
        const T* b = b_.data<T>();
        if (!ta_ && !tb_) kernels::batched_gemm(da, g, b, batch, m, k, n, false, true, true);
        if (!ta_ && tb_) kernels::batched_gemm(da, g, b, batch, m, k, n, false, false, true);
        if (ta_ && !tb_) kernels::batched_gemm(da, b, g, batch, k, m, n, false, true, true);
        if (ta_ && tb_) kernels::batched_gemm(da, b, g, batch, k, m, n, true, true, true);
      }
      if (grads.needed(1)) {
        T* db = grads.at(1).data<T>();
        const T* a = a_.data<T>();
        if (!ta_ && !tb_) kernels::batched_gemm(db, a, g, batch, k, n, m, true, false, true);
        if (!ta_ && tb_) kernels::batched_gemm(db, g, a, batch, n, k, m, true, false, true);
        if (ta_ && !tb_) kernels::batched_gemm(db, a, g, batch, k, n, m, false, false, true);
        if (ta_ && tb_) kernels::batched_gemm(db, g, a, batch, n, k, m, true, true, true);
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
  bool ta_, tb_;
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
  dispatch(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    kernels::batched_gemm(c.data<T>(), a.data<T>(), b.data<T>(), d.batch, m, n, k, trans_a,
                          trans_b, false);
  });
  if (should_record({&a, &b})) {
    record(c,
           std::make_shared<MatmulNode>(b.requires_grad() ? a.detach() : Tensor(),
                                        a.requires_grad() ? b.detach() : Tensor(), d, trans_a,
                                        trans_b),
           {&a, &b});
  }
  return c;
}

}  // namespace edgetune::ops
