// Element-wise ops: add, mul, scale, GELU (erf and tanh forms), ReLU, tanh, dropout. Forward and
// backward side by side.
#include <bit>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numbers>
#include <type_traits>

#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/profile.h"
#include "fastmath.h"
#include "ops_common.h"

namespace edgetune::ops {

using namespace detail;

namespace {

// b broadcasts over a when its shape is a's or a suffix of a's; returns b.numel() (inner size).
std::int64_t broadcast_inner(const char* op, const Tensor& a, const Tensor& b) {
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  bool ok = sb.rank() <= sa.rank();
  for (int i = 1; ok && i <= sb.rank(); ++i) ok = sa[-i] == sb[-i];
  require(ok, std::string(op) + ": " + describe(b) + " does not broadcast over " + describe(a) +
                  " (its shape must equal the trailing dimensions)");
  return b.numel();
}

// The backward of a broadcast operand: db[j] += sum over o of term(o * inner + j), where dy has
// n = outer * inner elements and b (inner) was broadcast over its outer rows. Rows are added in
// order on one thread, so the sums do not depend on the thread count.
template <class T, class Term>
void reduce_broadcast(T* db, std::int64_t n, std::int64_t inner, Term term) {
  const std::int64_t outer = n / std::max<std::int64_t>(inner, 1);
  for (std::int64_t o = 0; o < outer; ++o) {
    const std::int64_t row = o * inner;
#pragma omp simd
    for (std::int64_t j = 0; j < inner; ++j) db[j] += term(row + j);
  }
}

}  // namespace

// ---- add: y = a + b ----------------------------------------------------------------------------

namespace {
class AddNode : public Node {
 public:
  explicit AddNode(std::int64_t inner) : inner_(inner) {}
  const char* name() const override { return "add"; }
  // grads: 0 -> da (shape of a), 1 -> db (shape of b, summed over the broadcast dims)
  void backward(const Tensor& dy, GradSink& grads) override {
    dispatch_float(dy.dtype(), [&]<class T>() {
      const T* g = dy.data<T>();
      const std::int64_t n = dy.numel();
      if (grads.needed(0)) {
        T* da = grads.at(0).data<T>();
#pragma omp parallel for simd num_threads(kernels::num_threads()) if (worth_threads(n))
        for (std::int64_t i = 0; i < n; ++i) da[i] += g[i];
      }
      if (grads.needed(1)) {
        reduce_broadcast(grads.at(1).data<T>(), n, inner_, [&](std::int64_t i) { return g[i]; });
      }
    });
  }

 private:
  std::int64_t inner_;
};
}  // namespace

namespace {
// y[o, j] = op(a[o, j], b[j]): a of any shape, b broadcast over a's leading dimensions (b's
// numel is `inner`, a's last dimensions), rows in parallel, the inner loop vectorised.
template <class Op>
Tensor broadcast_apply(const Tensor& a, const Tensor& b, std::int64_t inner, Op op) {
  Tensor y = new_output(a.shape(), a.dtype());
  dispatch_float(a.dtype(), [&]<class T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* py = y.data<T>();
    const std::int64_t outer = a.numel() / std::max<std::int64_t>(inner, 1);
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (worth_threads(a.numel()))
    for (std::int64_t o = 0; o < outer; ++o) {
      const T* ra = pa + o * inner;
      T* ry = py + o * inner;
#pragma omp simd
      for (std::int64_t j = 0; j < inner; ++j) ry[j] = op(ra[j], pb[j]);
    }
  });
  return y;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  profile::Scope profile_scope("add");
  require_float("add", a);
  require_float("add", b);
  require_same_dtype("add", a, b);
  const std::int64_t inner = broadcast_inner("add", a, b);
  Tensor y = broadcast_apply(a, b, inner, [](auto x, auto z) { return x + z; });
  if (should_record({&a, &b})) record(y, std::make_shared<AddNode>(inner), {&a, &b});
  return y;
}

// ---- mul: y = a * b ----------------------------------------------------------------------------

namespace {
class MulNode : public Node {
 public:
  MulNode(Tensor a, Tensor b, std::int64_t inner)
      : a_(std::move(a)), b_(std::move(b)), inner_(inner) {}
  const char* name() const override { return "mul"; }
  // grads: 0 -> da += dy * b, 1 -> db += sum over broadcast dims of dy * a
  void backward(const Tensor& dy, GradSink& grads) override {
    dispatch_float(dy.dtype(), [&]<class T>() {
      const T* g = dy.data<T>();
      const std::int64_t n = dy.numel();
      if (grads.needed(0)) {
        T* da = grads.at(0).data<T>();
        const T* pb = b_.data<T>();
        const std::int64_t outer = n / std::max<std::int64_t>(inner_, 1);
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (worth_threads(n))
        for (std::int64_t o = 0; o < outer; ++o) {
#pragma omp simd
          for (std::int64_t j = 0; j < inner_; ++j) da[o * inner_ + j] += g[o * inner_ + j] * pb[j];
        }
      }
      if (grads.needed(1)) {
        const T* pa = a_.data<T>();
        reduce_broadcast(grads.at(1).data<T>(), n, inner_,
                         [&](std::int64_t i) { return g[i] * pa[i]; });
      }
    });
  }
  void release() override {
    a_ = Tensor();
    b_ = Tensor();
  }

 private:
  Tensor a_;  // kept when b needs a gradient
  Tensor b_;  // kept when a needs a gradient
  std::int64_t inner_;
};
}  // namespace

Tensor mul(const Tensor& a, const Tensor& b) {
  profile::Scope profile_scope("mul");
  require_float("mul", a);
  require_float("mul", b);
  require_same_dtype("mul", a, b);
  const std::int64_t inner = broadcast_inner("mul", a, b);
  Tensor y = broadcast_apply(a, b, inner, [](auto x, auto z) { return x * z; });
  if (should_record({&a, &b})) {
    record(y,
           std::make_shared<MulNode>(b.requires_grad() ? a.detach() : Tensor(),
                                     a.requires_grad() ? b.detach() : Tensor(), inner),
           {&a, &b});
  }
  return y;
}

// ---- scale: y = s x ----------------------------------------------------------------------------

namespace {
class ScaleNode : public Node {
 public:
  explicit ScaleNode(double s) : s_(s) {}
  const char* name() const override { return "scale"; }
  // grads: 0 -> dx += s dy
  void backward(const Tensor& dy, GradSink& grads) override {
    dispatch_float(dy.dtype(), [&]<class T>() {
      const T* g = dy.data<T>();
      T* dx = grads.at(0).data<T>();
      const T s = static_cast<T>(s_);
      const std::int64_t n = dy.numel();
#pragma omp parallel for simd num_threads(kernels::num_threads()) if (worth_threads(n))
      for (std::int64_t i = 0; i < n; ++i) dx[i] += s * g[i];
    });
  }

 private:
  double s_;
};
}  // namespace

Tensor scale(const Tensor& x, double s) {
  profile::Scope profile_scope("scale");
  require_float("scale", x);
  Tensor y = new_output(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T sc = static_cast<T>(s);
    const std::int64_t n = x.numel();
#pragma omp parallel for simd num_threads(kernels::num_threads()) if (worth_threads(n))
    for (std::int64_t i = 0; i < n; ++i) py[i] = sc * px[i];
  });
  if (should_record({&x})) record(y, std::make_shared<ScaleNode>(s), {&x});
  return y;
}

// ---- unary activations ---------------------------------------------------------------------------
// Each is a pair of scalar functions: value(x) and derivative(x, y), with the node keeping x (or y,
// for tanh) for the backward.

namespace {

struct GeluErf {
  static constexpr const char* kName = "gelu";
  static constexpr bool kKeepsOutput = false;
  template <class T>
  static T value(T x) {
    return T(0.5) * x * (T(1) + erf_of(x * T(std::numbers::sqrt2 / 2)));
  }
  // d/dx = Phi(x) + x phi(x)
  template <class T>
  static T derivative(T x, T /*y*/) {
    const T cdf = T(0.5) * (T(1) + erf_of(x * T(std::numbers::sqrt2 / 2)));
    const T pdf = exp_of(T(-0.5) * x * x) * T(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
    return cdf + x * pdf;
  }
};

struct GeluTanh {
  static constexpr const char* kName = "gelu_tanh";
  static constexpr bool kKeepsOutput = false;
  static constexpr double kC = 0.7978845608028654;  // sqrt(2 / pi)
  template <class T>
  static T value(T x) {
    return T(0.5) * x * (T(1) + tanh_of(T(kC) * (x + T(0.044715) * x * x * x)));
  }
  template <class T>
  static T derivative(T x, T /*y*/) {
    const T t = tanh_of(T(kC) * (x + T(0.044715) * x * x * x));
    return T(0.5) * (T(1) + t) +
           T(0.5) * x * (T(1) - t * t) * T(kC) * (T(1) + T(3 * 0.044715) * x * x);
  }
};

struct Relu {
  static constexpr const char* kName = "relu";
  static constexpr bool kKeepsOutput = true;
  template <class T>
  static T value(T x) {
    return x > T(0) ? x : T(0);
  }
  template <class T>
  static T derivative(T /*x*/, T y) {
    return y > T(0) ? T(1) : T(0);
  }
};

struct Tanh {
  static constexpr const char* kName = "tanh";
  static constexpr bool kKeepsOutput = true;
  template <class T>
  static T value(T x) {
    return tanh_of(x);
  }
  template <class T>
  static T derivative(T /*x*/, T y) {
    return T(1) - y * y;
  }
};

template <class F>
class UnaryNode : public Node {
 public:
  explicit UnaryNode(Tensor kept) : kept_(std::move(kept)) {}
  const char* name() const override { return F::kName; }
  // grads: 0 -> dx += dy * f'(x)
  void backward(const Tensor& dy, GradSink& grads) override {
    dispatch_float(dy.dtype(), [&]<class T>() {
      const T* g = dy.data<T>();
      const T* k = kept_.data<T>();
      T* dx = grads.at(0).data<T>();
      const std::int64_t n = dy.numel();
#pragma omp parallel for simd num_threads(kernels::num_threads()) if (worth_threads(n))
      for (std::int64_t i = 0; i < n; ++i) {
        dx[i] += g[i] * (F::kKeepsOutput ? F::derivative(T(0), k[i]) : F::derivative(k[i], T(0)));
      }
    });
  }
  void release() override { kept_ = Tensor(); }

 private:
  Tensor kept_;  // x, or y when F::kKeepsOutput
};

template <class F>
Tensor unary(const Tensor& x) {
  profile::Scope profile_scope(F::kName);
  require_float(F::kName, x);
  Tensor y = new_output(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const std::int64_t n = x.numel();
#pragma omp parallel for simd num_threads(kernels::num_threads()) if (worth_threads(n))
    for (std::int64_t i = 0; i < n; ++i) py[i] = F::value(px[i]);
  });
  if (should_record({&x})) {
    record(y, std::make_shared<UnaryNode<F>>(F::kKeepsOutput ? y.detach() : x.detach()), {&x});
  }
  return y;
}

}  // namespace

Tensor gelu(const Tensor& x) { return unary<GeluErf>(x); }
Tensor gelu_tanh(const Tensor& x) { return unary<GeluTanh>(x); }
Tensor relu(const Tensor& x) { return unary<Relu>(x); }
Tensor tanh(const Tensor& x) { return unary<Tanh>(x); }

// ---- dropout -------------------------------------------------------------------------------------

namespace {
// keep(i) = u(seed, counter + i) >= p; kept values are scaled by 1 / (1 - p).
class DropoutNode : public Node {
 public:
  DropoutNode(RngState draw, double p) : draw_(draw), p_(p) {}
  const char* name() const override { return "dropout"; }
  // grads: 0 -> dx += dy * keep / (1 - p), the mask redrawn from (seed, counter)
  void backward(const Tensor& dy, GradSink& grads) override {
    dispatch_float(dy.dtype(), [&]<class T>() {
      const T* g = dy.data<T>();
      T* dx = grads.at(0).data<T>();
      const T keep_scale = static_cast<T>(1.0 / (1.0 - p_));
      const std::int64_t n = dy.numel();
#pragma omp parallel for num_threads(kernels::num_threads()) if (worth_threads(n))
      for (std::int64_t i = 0; i < n; ++i) {
        if (counter_uniform(draw_.seed, draw_.counter + static_cast<std::uint64_t>(i)) >= p_) {
          dx[i] += g[i] * keep_scale;
        }
      }
    });
  }

 private:
  RngState draw_;
  double p_;
};
}  // namespace

Tensor dropout(const Tensor& x, double p, bool training) {
  profile::Scope profile_scope("dropout");
  require_float("dropout", x);
  require(p >= 0 && p < 1, "dropout: p must be in [0, 1), got " + std::to_string(p));
  if (!training || p == 0) return x;
  RngState& rng = dropout_rng();
  RngState draw = rng;
  const auto n_elements = static_cast<std::uint64_t>(x.numel());
  if (rng.rows > 0 && rng.rows < rng.batch_rows) {
    // A micro-batch: its rows' part of the whole batch's mask (RngState).
    require(n_elements % rng.rows == 0, "dropout: " + std::to_string(n_elements) +
                                            " elements do not split into the micro-batch's " +
                                            std::to_string(rng.rows) + " rows");
    const std::uint64_t per_row = n_elements / rng.rows;
    draw.counter = rng.counter + rng.row_offset * per_row;
    rng.counter += rng.batch_rows * per_row;
  } else {
    rng.counter += n_elements;
  }
  Tensor y = new_output(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T keep_scale = static_cast<T>(1.0 / (1.0 - p));
    const std::int64_t n = x.numel();
#pragma omp parallel for num_threads(kernels::num_threads()) if (worth_threads(n))
    for (std::int64_t i = 0; i < n; ++i) {
      const bool keep = counter_uniform(draw.seed, draw.counter + static_cast<std::uint64_t>(i)) >= p;
      py[i] = keep ? px[i] * keep_scale : T(0);
    }
  });
  if (should_record({&x})) record(y, std::make_shared<DropoutNode>(draw, p), {&x});
  return y;
}

}  // namespace edgetune::ops
