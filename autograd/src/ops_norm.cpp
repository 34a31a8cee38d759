// Fused row-wise ops: LayerNorm, masked softmax, cross-entropy from logits, binary cross-entropy
// with logits. Forward and backward side by side.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/profile.h"
#include "fastmath.h"
#include "ops_common.h"

namespace edgetune::ops {

using namespace detail;

// ---- layer_norm ---------------------------------------------------------------------------------

namespace {
class LayerNormNode : public Node {
 public:
  LayerNormNode(Tensor x, Tensor gamma, Tensor mean, Tensor rstd)
      : x_(std::move(x)), gamma_(std::move(gamma)), mean_(std::move(mean)),
        rstd_(std::move(rstd)) {}
  const char* name() const override { return "layer_norm"; }
  // grads: 0 -> dx, 1 -> dgamma, 2 -> dbeta. With xhat = (x - mean) rstd and g = dy gamma:
  //   dx += rstd (g - mean(g) - xhat mean(g xhat)),  dgamma += sum_rows dy xhat,  dbeta += sum dy.
  void backward(const Tensor& dy, GradSink& grads) override {
    dispatch_float(dy.dtype(), [&]<class T>() {
      const std::int64_t rows = x_.shape().rows(), c = x_.shape().last();
      const T* x = x_.data<T>();
      const T* g = dy.data<T>();
      const T* gamma = gamma_.data<T>();
      const T* mean = mean_.data<T>();
      const T* rstd = rstd_.data<T>();
      if (grads.needed(0)) {
        T* dx = grads.at(0).data<T>();
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (worth_threads(rows * c))
        for (std::int64_t r = 0; r < rows; ++r) {
          const T* xr = x + r * c;
          const T* gr = g + r * c;
          T sum_g = 0, sum_gx = 0;
          for (std::int64_t j = 0; j < c; ++j) {
            const T xhat = (xr[j] - mean[r]) * rstd[r];
            const T gn = gr[j] * gamma[j];
            sum_g += gn;
            sum_gx += gn * xhat;
          }
          const T mg = sum_g / T(c), mgx = sum_gx / T(c);
          T* dxr = dx + r * c;
          for (std::int64_t j = 0; j < c; ++j) {
            const T xhat = (xr[j] - mean[r]) * rstd[r];
            dxr[j] += rstd[r] * (gr[j] * gamma[j] - mg - xhat * mgx);
          }
        }
      }
      // Column sums over rows, one column per thread: the order of the sum never depends on the
      // number of threads. Per example (autograd.h) the rows of example e (example-major, R of
      // them) sum into row e of a (B, C) buffer; otherwise all rows into one (C).
      Tensor* pe_gamma = grads.needed(1) ? grads.per_example(1) : nullptr;
      Tensor* pe_beta = grads.needed(2) ? grads.per_example(2) : nullptr;
      T* dgamma = pe_gamma ? pe_gamma->data<T>() : grads.needed(1) ? grads.at(1).data<T>() : nullptr;
      T* dbeta = pe_beta ? pe_beta->data<T>() : grads.needed(2) ? grads.at(2).data<T>() : nullptr;
      const std::int64_t examples =
          pe_gamma || pe_beta ? grads.per_example_grads()->examples() : 1;
      if (examples > 1) grads.per_example_grads()->rows_per_example(rows, name());
      const std::int64_t per = rows / examples;
      if (dgamma || dbeta) {
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (worth_threads(rows * c))
        for (std::int64_t j = 0; j < c; ++j) {
          T all_g = 0, all_b = 0;
          for (std::int64_t e = 0; e < examples; ++e) {
            T sg = 0, sb = 0;
            for (std::int64_t r = e * per; r < (e + 1) * per; ++r) {
              const T gv = g[r * c + j];
              sg += gv * (x[r * c + j] - mean[r]) * rstd[r];
              sb += gv;
            }
            if (pe_gamma) dgamma[e * c + j] += sg;
            if (pe_beta) dbeta[e * c + j] += sb;
            all_g += sg;
            all_b += sb;
          }
          if (dgamma && !pe_gamma) dgamma[j] += all_g;
          if (dbeta && !pe_beta) dbeta[j] += all_b;
        }
      }
    });
  }
  void release() override {
    x_ = gamma_ = mean_ = rstd_ = Tensor();
  }

 private:
  Tensor x_;      // (..., C)
  Tensor gamma_;  // (C)
  Tensor mean_;   // (rows)
  Tensor rstd_;   // (rows) 1 / sqrt(var + eps)
};
}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  profile::Scope profile_scope("layer_norm");
  require_float("layer_norm", x);
  require_float("layer_norm", gamma);
  require_float("layer_norm", beta);
  require_same_dtype("layer_norm", x, gamma);
  require_same_dtype("layer_norm", x, beta);
  const std::int64_t rows = x.shape().rows(), c = x.shape().last();
  require(gamma.numel() == c && beta.numel() == c,
          "layer_norm: gamma " + describe(gamma) + " and beta " + describe(beta) +
              " must have the size of the last dimension of " + describe(x));
  require(eps > 0, "layer_norm: eps must be positive");
  Tensor y = new_output(x.shape(), x.dtype());
  const bool rec = should_record({&x, &gamma, &beta});
  Tensor mean = Tensor::empty(Shape{rows}, x.dtype(), MemCategory::Activations);
  Tensor rstd = Tensor::empty(Shape{rows}, x.dtype(), MemCategory::Activations);
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    const T* pg = gamma.data<T>();
    const T* pb = beta.data<T>();
    T* py = y.data<T>();
    T* pm = mean.data<T>();
    T* ps = rstd.data<T>();
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (worth_threads(rows * c))
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * c;
      T m = 0;
      for (std::int64_t j = 0; j < c; ++j) m += xr[j];
      m /= T(c);
      T v = 0;
      for (std::int64_t j = 0; j < c; ++j) v += (xr[j] - m) * (xr[j] - m);
      v /= T(c);
      const T s = T(1) / std::sqrt(v + T(eps));
      pm[r] = m;
      ps[r] = s;
      T* yr = py + r * c;
      for (std::int64_t j = 0; j < c; ++j) yr[j] = (xr[j] - m) * s * pg[j] + pb[j];
    }
  });
  if (rec) {
    record(y,
           std::make_shared<LayerNormNode>(x.detach(), gamma.detach(), std::move(mean),
                                           std::move(rstd)),
           {&x, &gamma, &beta});
  }
  return y;
}

// ---- softmax (last axis, optional additive mask) ------------------------------------------------

namespace {
class SoftmaxNode : public Node {
 public:
  explicit SoftmaxNode(Tensor y) : y_(std::move(y)) {}
  const char* name() const override { return "softmax"; }
  // grads: 0 -> dx += y (dy - sum(dy y)) per row
  void backward(const Tensor& dy, GradSink& grads) override {
    dispatch_float(dy.dtype(), [&]<class T>() {
      const std::int64_t rows = y_.shape().rows(), s = y_.shape().last();
      const T* y = y_.data<T>();
      const T* g = dy.data<T>();
      T* dx = grads.at(0).data<T>();
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (worth_threads(rows * s))
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* yr = y + r * s;
        const T* gr = g + r * s;
        T dot = 0;
        for (std::int64_t j = 0; j < s; ++j) dot += gr[j] * yr[j];
        T* dr = dx + r * s;
        for (std::int64_t j = 0; j < s; ++j) dr[j] += yr[j] * (gr[j] - dot);
      }
    });
  }
  void release() override { y_ = Tensor(); }

 private:
  Tensor y_;  // the output probabilities
};
}  // namespace

Tensor softmax(const Tensor& x, const Tensor& mask) {
  profile::Scope profile_scope("softmax");
  require_float("softmax", x);
  require(x.rank() >= 1, "softmax: needs at least one dimension");
  const std::int64_t rows = x.shape().rows(), s = x.shape().last();
  std::int64_t rows_per_batch = rows;
  if (mask.defined()) {
    require_same_dtype("softmax", x, mask);
    require(x.rank() >= 2 && mask.rank() == 2 && mask.dim(0) == x.dim(0) && mask.dim(1) == s,
            "softmax: mask " + describe(mask) + " must be (B, S) for input " + describe(x));
    rows_per_batch = rows / x.dim(0);
  }
  Tensor y = new_output(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    const T* pm = mask.defined() ? mask.data<T>() : nullptr;
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (worth_threads(rows * s))
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * s;
      const T* mr = pm ? pm + (r / rows_per_batch) * s : nullptr;
      T* yr = py + r * s;
      T mx = -std::numeric_limits<T>::infinity();
      for (std::int64_t j = 0; j < s; ++j) {
        yr[j] = mr ? xr[j] + mr[j] : xr[j];
        mx = std::max(mx, yr[j]);
      }
      T sum = 0;
      for (std::int64_t j = 0; j < s; ++j) yr[j] = exp_of(yr[j] - mx);
      for (std::int64_t j = 0; j < s; ++j) sum += yr[j];
      const T inv = T(1) / sum;
      for (std::int64_t j = 0; j < s; ++j) yr[j] *= inv;
    }
  });
  if (should_record({&x})) record(y, std::make_shared<SoftmaxNode>(y.detach()), {&x});
  return y;
}

// ---- cross_entropy from logits -------------------------------------------------------------------

namespace {
class CrossEntropyNode : public Node {
 public:
  CrossEntropyNode(Tensor probs, Tensor labels, Tensor weight, double weight_sum,
                   std::int32_t ignore)
      : probs_(std::move(probs)), labels_(std::move(labels)), weight_(std::move(weight)),
        weight_sum_(weight_sum), ignore_(ignore) {}
  const char* name() const override { return "cross_entropy"; }
  // grads: 0 -> dlogits[i] += dloss * w[y_i] / sum_w * (p_i - onehot(y_i))
  void backward(const Tensor& dloss, GradSink& grads) override {
    dispatch_float(dloss.dtype(), [&]<class T>() {
      const std::int64_t n = probs_.dim(0), k = probs_.dim(1);
      const T* p = probs_.data<T>();
      const std::int32_t* y = labels_.data<std::int32_t>();
      const T* w = weight_.defined() ? weight_.data<T>() : nullptr;
      const T g = dloss.data<T>()[0] / static_cast<T>(weight_sum_);
      T* dz = grads.at(0).data<T>();
      for (std::int64_t i = 0; i < n; ++i) {
        if (y[i] == ignore_) continue;
        const T wi = (w ? w[y[i]] : T(1)) * g;
        for (std::int64_t j = 0; j < k; ++j) dz[i * k + j] += wi * p[i * k + j];
        dz[i * k + y[i]] -= wi;
      }
    });
  }
  void release() override { probs_ = labels_ = weight_ = Tensor(); }

 private:
  Tensor probs_;   // (N, K) softmax of the logits
  Tensor labels_;  // (N) I32
  Tensor weight_;  // (K) or undefined
  double weight_sum_;
  std::int32_t ignore_;
};
}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, const Tensor& weight,
                     std::int32_t ignore_index) {
  profile::Scope profile_scope("cross_entropy");
  require_float("cross_entropy", logits);
  require(logits.rank() == 2, "cross_entropy: logits must be (N, K), got " + describe(logits));
  const std::int64_t n = logits.dim(0), k = logits.dim(1);
  require(labels.defined() && labels.dtype() == DType::I32 && labels.numel() == n,
          "cross_entropy: labels must be I32 (N) = (" + std::to_string(n) + "), got " +
              (labels.defined() ? describe(labels) : std::string("nothing")));
  if (weight.defined()) {
    require_same_dtype("cross_entropy", logits, weight);
    require(weight.numel() == k, "cross_entropy: class weights " + describe(weight) +
                                     " must have one value per class (" + std::to_string(k) + ")");
  }
  const std::int32_t* y = labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    require(y[i] == ignore_index || (y[i] >= 0 && y[i] < k),
            "cross_entropy: label " + std::to_string(y[i]) + " of row " + std::to_string(i) +
                " is out of range for " + std::to_string(k) + " classes");
  }
  Tensor probs = Tensor::empty(logits.shape(), logits.dtype(), MemCategory::Activations);
  Tensor loss = new_output(Shape{}, logits.dtype());
  double weight_sum = 0;
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T* z = logits.data<T>();
    const T* w = weight.defined() ? weight.data<T>() : nullptr;
    T* p = probs.data<T>();
    T total = 0, wsum = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const T* zi = z + i * k;
      T* pi = p + i * k;
      const T mx = *std::max_element(zi, zi + k);
      T sum = 0;
      for (std::int64_t j = 0; j < k; ++j) {
        pi[j] = std::exp(zi[j] - mx);
        sum += pi[j];
      }
      for (std::int64_t j = 0; j < k; ++j) pi[j] /= sum;
      if (y[i] == ignore_index) continue;
      const T wi = w ? w[y[i]] : T(1);
      total += wi * (mx + std::log(sum) - zi[y[i]]);
      wsum += wi;
    }
    loss.data<T>()[0] = total / wsum;  // 0 / 0 = NaN when every row is ignored, as torch
    weight_sum = static_cast<double>(wsum);
  });
  if (should_record({&logits})) {
    record(loss,
           std::make_shared<CrossEntropyNode>(std::move(probs), labels.detach(),
                                              weight.defined() ? weight.detach() : Tensor(),
                                              weight_sum, ignore_index),
           {&logits});
  }
  return loss;
}

// ---- bce_with_logits -----------------------------------------------------------------------------

namespace {
class BceNode : public Node {
 public:
  BceNode(Tensor z, Tensor t) : z_(std::move(z)), t_(std::move(t)) {}
  const char* name() const override { return "bce_with_logits"; }
  // grads: 0 -> dz += dloss (sigmoid(z) - t) / n,  1 -> dt += dloss (-z) / n
  void backward(const Tensor& dloss, GradSink& grads) override {
    dispatch_float(dloss.dtype(), [&]<class T>() {
      const std::int64_t n = z_.numel();
      const T* z = z_.data<T>();
      const T* t = t_.data<T>();
      const T g = dloss.data<T>()[0] / T(n);
      if (grads.needed(0)) {
        T* dz = grads.at(0).data<T>();
        for (std::int64_t i = 0; i < n; ++i) dz[i] += g * (T(1) / (T(1) + std::exp(-z[i])) - t[i]);
      }
      if (grads.needed(1)) {
        T* dt = grads.at(1).data<T>();
        for (std::int64_t i = 0; i < n; ++i) dt[i] -= g * z[i];
      }
    });
  }
  void release() override { z_ = t_ = Tensor(); }

 private:
  Tensor z_;  // logits
  Tensor t_;  // targets
};
}  // namespace

Tensor bce_with_logits(const Tensor& logits, const Tensor& targets) {
  profile::Scope profile_scope("bce_with_logits");
  require_float("bce_with_logits", logits);
  require_float("bce_with_logits", targets);
  require_same_dtype("bce_with_logits", logits, targets);
  require(logits.shape() == targets.shape(), "bce_with_logits: logits " + describe(logits) +
                                                 " and targets " + describe(targets) +
                                                 " differ in shape");
  Tensor loss = new_output(Shape{}, logits.dtype());
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T* z = logits.data<T>();
    const T* t = targets.data<T>();
    T total = 0;
    const std::int64_t n = logits.numel();
    for (std::int64_t i = 0; i < n; ++i) {
      total += std::max(z[i], T(0)) - z[i] * t[i] + std::log1p(std::exp(-std::fabs(z[i])));
    }
    loss.data<T>()[0] = total / T(n);
  });
  if (should_record({&logits, &targets})) {
    record(loss, std::make_shared<BceNode>(logits.detach(), targets.detach()),
           {&logits, &targets});
  }
  return loss;
}

}  // namespace edgetune::ops
