// gradcheck() (see gradcheck.h).
#include "edgetune/autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "edgetune/autograd/autograd.h"

namespace edgetune {

std::string GradcheckResult::summary() const {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s: %lld elements, max abs error %.3e, max rel error %.3e",
                ok ? "ok" : "FAILED", static_cast<long long>(checked), max_abs_error,
                max_rel_error);
  return std::string(buf) + (worst.empty() ? "" : " (worst: " + worst + ")");
}

namespace {

Tensor random_like(const Shape& shape, std::uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::F64, MemCategory::Workspace);
  double* p = t.data<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    p[i] = 2.0 * counter_uniform(seed, static_cast<std::uint64_t>(i)) - 1.0;
  }
  return t;
}

// L = sum(fn(inputs) * r), without recording.
double objective(const GradcheckFn& fn, const std::vector<Tensor>& inputs, const Tensor& r) {
  NoGradGuard no_grad;
  const Tensor out = fn(inputs);
  const double* o = out.data<double>();
  const double* w = r.data<double>();
  double l = 0;
  for (std::int64_t i = 0; i < out.numel(); ++i) l += o[i] * w[i];
  return l;
}

}  // namespace

GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opt) {
  GradcheckResult res;
  for (const Tensor& t : inputs) {
    if (t.requires_grad() && t.dtype() != DType::F64) {
      throw std::invalid_argument("gradcheck: input '" + t.name() + "' requires grad but is " +
                                  dtype_name(t.dtype()) + "; gradient checks run in f64");
    }
    if (t.requires_grad() && !t.is_leaf()) {
      throw std::invalid_argument("gradcheck: inputs must be leaves");
    }
  }

  // Analytic gradients, with pre-seeded .grad buffers.
  std::vector<Tensor> seeds(inputs.size());
  Tensor r;
  {
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!inputs[i].requires_grad()) continue;
      Tensor g;
      if (opt.check_accumulation) {
        seeds[i] = random_like(inputs[i].shape(), opt.seed + 1000 + i);
        g = seeds[i].clone(MemCategory::Workspace);
      }
      inputs[i].impl()->grad = g.defined() ? g.impl() : nullptr;
    }
    const Tensor out = fn(inputs);
    if (out.dtype() != DType::F64) {
      throw std::invalid_argument("gradcheck: fn must return f64, got " +
                                  std::string(dtype_name(out.dtype())));
    }
    r = random_like(out.shape(), opt.seed);
    if (!out.requires_grad()) {
      throw std::invalid_argument("gradcheck: the output does not depend on any input that "
                                  "requires grad");
    }
    backward(out, r);
  }

  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    const Tensor grad = x.grad();
    const std::int64_t n = x.numel();
    std::vector<double> analytic(static_cast<size_t>(n), 0.0);
    if (grad.defined()) {
      for (std::int64_t j = 0; j < n; ++j) {
        analytic[j] = grad.data<double>()[j] - (seeds[i].defined() ? seeds[i].data<double>()[j] : 0);
      }
    }
    const std::int64_t count = std::min(n, opt.max_elements);
    double* px = x.data<double>();
    for (std::int64_t c = 0; c < count; ++c) {
      // Spread the checked elements evenly over the tensor.
      const std::int64_t j = count == n ? c : (c * n) / count;
      const double saved = px[j];
      px[j] = saved + opt.eps;
      const double lp = objective(fn, inputs, r);
      px[j] = saved - opt.eps;
      const double lm = objective(fn, inputs, r);
      px[j] = saved;
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double err = std::fabs(analytic[j] - numeric);
      // Relative error only where the gradient is not itself at the level of the difference
      // quotient's roundoff (|L| * 1e-16 / eps ~ 1e-9): elsewhere the absolute error is the figure.
      const double scale = std::max(std::fabs(numeric), std::fabs(analytic[j]));
      const double rel = scale >= 1e-6 ? err / scale : 0.0;
      ++res.checked;
      const bool bad = !(err <= opt.atol + opt.rtol * std::fabs(numeric));
      if (err > res.max_abs_error || (bad && res.ok)) {
        char buf[200];
        std::snprintf(buf, sizeof buf, "input %zu%s element %lld: analytic %.12g, numeric %.12g",
                      i, x.name().empty() ? "" : (" '" + x.name() + "'").c_str(),
                      static_cast<long long>(j), analytic[j], numeric);
        if (bad || res.ok) res.worst = buf;
      }
      res.max_abs_error = std::max(res.max_abs_error, err);
      res.max_rel_error = std::max(res.max_rel_error, rel);
      if (bad) res.ok = false;
    }
  }
  for (const Tensor& t : inputs) {
    if (t.requires_grad()) t.impl()->grad = nullptr;
  }
  return res;
}

}  // namespace edgetune
