// SGD, Adam and AdamW (optimizer.h): the per-element update kernels, written operation by
// operation after torch.optim's single-tensor implementations (torch/optim/sgd.py, adam.py,
// adamw.py of PyTorch 1.13), the lazily allocated per-parameter state, and its checkpoint form.
//
// What this is not: a tensor library. The kernels work on raw f32 / f64 buffers; no op is
// recorded on the tape (an update is not differentiable) and no tensor is allocated per step
// once each parameter has its state.
#include "edgetune/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "edgetune/autograd/kernels.h"

namespace edgetune::optim {

Optimizer::~Optimizer() = default;

void zero_grad(std::span<Param> params) {
  for (Param& p : params) {
    if (p.tensor.defined()) p.tensor.zero_grad();
  }
}

namespace {

std::string fmt(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Below this many elements an update runs on the calling thread: starting threads would cost
// more than the update (the same cut-off as torch's at::internal::GRAIN_SIZE).
constexpr std::int64_t kParallelGrain = 32768;
// Elements per task of a parallel update. Each element's update is independent of every other,
// so the result does not depend on how blocks are shared among threads.
constexpr std::int64_t kBlock = 8192;

// Runs f(begin, end) over [0, n) in contiguous blocks, in parallel for large n.
template <class F>
void for_blocks(std::int64_t n, const F& f) {
  if (n < kParallelGrain) {
    f(std::int64_t{0}, n);
    return;
  }
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
  for (std::int64_t b = 0; b < blocks; ++b) f(b * kBlock, std::min(n, (b + 1) * kBlock));
}

// a * b + c, rounded once where the target has a fast FMA. torch's CPU kernels round once there
// too: `x.add(y, alpha=a)` is vec::fmadd(y, a, x), and addcmul's `x + (v * t1) * t2` was
// contracted into an FMA by the compiler that built torch's AVX2 kernels (checked against Debian's
// torch 1.13 element by element: rounding twice differs from it in up to ~20% of elements).
template <class T>
inline T mul_add(T a, T b, T c) {
#if defined(FP_FAST_FMA) && defined(FP_FAST_FMAF)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// The per-parameter state of one optimizer: the tensors named by the optimizer's keys
// ("exp_avg", "exp_avg_sq" or "momentum_buffer"), of the param's shape and dtype, and the number
// of steps this param has taken.
struct ParamState {
  std::string name;
  std::vector<Tensor> tensors;  // one per key, same order
  std::int64_t steps = 0;
};

// What SGD and Adam share: parameter checks, lazy state, checkpoint entries. A subclass names its
// state tensors (keys_) and says whether it keeps a per-parameter step count; update() does the
// arithmetic for one param.
class StatefulOptimizer : public Optimizer {
 public:
  StatefulOptimizer(std::vector<std::string> keys, bool per_param_step)
      : keys_(std::move(keys)), per_param_step_(per_param_step) {}

  void step(std::span<Param> params, double lr) final {
    if (!(lr >= 0) || !std::isfinite(lr)) {
      throw std::invalid_argument(name() + ": lr must be finite and >= 0, got " + fmt(lr));
    }
    check_names(params);
    // Pass 1: check every param and allocate missing state, so that an error or a budget refusal
    // leaves every param and all state as they were.
    std::vector<std::int64_t> slot(params.size(), -1);  // index into states_ (fresh ones after)
    std::vector<ParamState> fresh;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const Param& p = params[i];
      check_param(p);
      const Tensor g = p.tensor.grad();
      if (!g.defined()) continue;
      if (g.shape() != p.tensor.shape() || g.dtype() != p.tensor.dtype()) {
        throw std::invalid_argument(name() + ": param '" + p.name + "' is " + describe(p.tensor) +
                                    " but its grad is " + describe(g));
      }
      if (keys_.empty() && !per_param_step_) continue;  // stateless (SGD without momentum)
      if (auto it = index_.find(p.name); it != index_.end()) {
        const ParamState& s = states_[it->second];
        for (std::size_t k = 0; k < keys_.size(); ++k) {
          if (s.tensors[k].shape() != p.tensor.shape() ||
              s.tensors[k].dtype() != p.tensor.dtype()) {
            throw std::invalid_argument(name() + ": param '" + p.name + "' is " +
                                        describe(p.tensor) + " but its state '" + keys_[k] + "/" +
                                        p.name + "' is " + describe(s.tensors[k]) +
                                        " (a different tensor under the same name? call load_state "
                                        "or use a new optimizer)");
          }
        }
        slot[i] = static_cast<std::int64_t>(it->second);
      } else {
        ParamState s;
        s.name = p.name;
        for (std::size_t k = 0; k < keys_.size(); ++k) {
          s.tensors.push_back(
              Tensor::zeros(p.tensor.shape(), p.tensor.dtype(), MemCategory::OptimizerState));
        }
        slot[i] = static_cast<std::int64_t>(states_.size() + fresh.size());
        fresh.push_back(std::move(s));
      }
    }
    // Pass 2: commit the new state and update.
    std::vector<bool> first(params.size(), false);
    for (std::size_t i = 0; i < params.size(); ++i) {
      first[i] = slot[i] >= static_cast<std::int64_t>(states_.size());
    }
    states_.reserve(states_.size() + fresh.size());
    for (ParamState& s : fresh) {
      index_.emplace(s.name, states_.size());
      states_.push_back(std::move(s));
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!params[i].tensor.grad().defined()) continue;
      ParamState* s = slot[i] >= 0 ? &states_[static_cast<std::size_t>(slot[i])] : nullptr;
      if (s) ++s->steps;
      update(params[i], s, lr, first[i]);
    }
    ++steps_;
  }

  std::vector<std::pair<std::string, Tensor>> state() const final {
    std::vector<std::pair<std::string, Tensor>> out;
    out.emplace_back("step", scalar(steps_));
    for (const ParamState& s : states_) {
      if (per_param_step_) out.emplace_back("step/" + s.name, scalar(s.steps));
      for (std::size_t k = 0; k < keys_.size(); ++k) {
        out.emplace_back(keys_[k] + "/" + s.name, s.tensors[k]);
      }
    }
    return out;
  }

  void load_state(const std::vector<std::pair<std::string, Tensor>>& state,
                  std::span<Param> params) final {
    const std::string where = name() + " optimizer state";
    std::map<std::string_view, const Tensor*> entries;
    for (const auto& [key, t] : state) {
      if (!entries.emplace(key, &t).second) {
        throw std::invalid_argument(where + ": entry '" + key + "' is given twice");
      }
    }
    auto steps_it = entries.find("step");
    if (steps_it == entries.end()) {
      throw std::invalid_argument(where +
                                  ": no 'step' entry (expected the entries of "
                                  "Optimizer::state(), e.g. read from train_state)");
    }
    const std::int64_t steps = count(where, "step", *steps_it->second);
    entries.erase(steps_it);

    check_names(params);
    std::vector<ParamState> states;
    for (const Param& p : params) {
      check_param(p);
      // The entries of this param: its step count (if kept), then one per key.
      std::vector<std::string> names;
      if (per_param_step_) names.push_back("step/" + p.name);
      for (const std::string& k : keys_) names.push_back(k + "/" + p.name);
      std::vector<const Tensor*> found;
      const std::string* present = nullptr;
      const std::string* missing = nullptr;
      for (const std::string& n : names) {
        auto it = entries.find(n);
        found.push_back(it == entries.end() ? nullptr : it->second);
        if (found.back()) {
          present = &n;
        } else {
          missing = &n;
        }
      }
      if (!present) continue;  // no state yet: starts fresh, as torch's lazy init
      if (missing) {
        throw std::invalid_argument(where + ": entry '" + *missing + "' is missing while '" +
                                    *present + "' is there");
      }
      ParamState s;
      s.name = p.name;
      std::size_t f = 0;
      if (per_param_step_) {
        s.steps = count(where, names[0], *found[0]);
        f = 1;
      }
      for (; f < names.size(); ++f) {
        const Tensor& t = *found[f];
        if (!t.defined() || !is_float(t.dtype()) || t.shape() != p.tensor.shape()) {
          throw std::invalid_argument(where + ": entry '" + names[f] + "' is " +
                                      (t.defined() ? describe(t) : std::string("undefined")) +
                                      " but param '" + p.name + "' is " + describe(p.tensor));
        }
        s.tensors.push_back(t.to(p.tensor.dtype(), MemCategory::OptimizerState));
      }
      for (const std::string& n : names) entries.erase(n);
      states.push_back(std::move(s));
    }
    if (!entries.empty()) {
      throw std::invalid_argument(where + ": entry '" + std::string(entries.begin()->first) +
                                  "' matches no state of a given param (saved for other params "
                                  "or by another optimizer?)");
    }
    states_ = std::move(states);
    index_.clear();
    for (std::size_t i = 0; i < states_.size(); ++i) index_.emplace(states_[i].name, i);
    steps_ = steps;
  }

 protected:
  // Updates one param that has a grad. s is its state (nullptr for a stateless optimizer), whose
  // steps already count this step; first is true at the param's first step with state.
  virtual void update(Param& p, ParamState* s, double lr, bool first) = 0;

 private:
  void check_names(std::span<const Param> params) const {
    std::unordered_set<std::string_view> seen;
    for (const Param& p : params) {
      if (p.name.empty()) {
        throw std::invalid_argument(name() + ": a param has no name (names key its state)");
      }
      if (!seen.insert(p.name).second) {
        throw std::invalid_argument(name() + ": two params are named '" + p.name +
                                    "' (names key the state, so they must be unique)");
      }
    }
  }

  void check_param(const Param& p) const {
    if (!p.tensor.defined()) {
      throw std::invalid_argument(name() + ": param '" + p.name + "' has no tensor");
    }
    if (!is_float(p.tensor.dtype())) {
      throw std::invalid_argument(name() + ": param '" + p.name + "' is " + describe(p.tensor) +
                                  "; only f32 and f64 tensors can be trained");
    }
    if (!p.tensor.is_leaf()) {
      throw std::invalid_argument(name() + ": param '" + p.name +
                                  "' is not a leaf (an op computed it); pass the leaf tensor "
                                  "that holds the weights");
    }
  }

  static std::string describe(const Tensor& t) {
    return std::string(dtype_name(t.dtype())) + " " + t.shape().str();
  }

  static Tensor scalar(std::int64_t v) {
    return Tensor::full(Shape(), static_cast<double>(v), DType::F64, MemCategory::OptimizerState);
  }

  // A step count stored as a one-element float or int tensor.
  static std::int64_t count(const std::string& where, const std::string& entry, const Tensor& t) {
    const bool ok_type = t.defined() && t.numel() == 1 && !is_quantized(t.dtype());
    const double v = ok_type ? t.item() : -1;
    if (!ok_type || !(v >= 0) || v > 0x1p53 || v != std::floor(v)) {
      throw std::invalid_argument(where + ": entry '" + entry +
                                  "' is not a step count (a one-element tensor holding an "
                                  "integer >= 0)");
    }
    return static_cast<std::int64_t>(v);
  }

  std::vector<std::string> keys_;
  bool per_param_step_;
  std::vector<ParamState> states_;                      // in the order params first got state
  std::unordered_map<std::string, std::size_t> index_;  // param name -> states_ index
};

// ---- SGD --------------------------------------------------------------------------------------

// Scalars of one SGD update, rounded to the param's dtype as torch rounds Python scalars.
template <class T>
struct SgdScalars {
  T weight_decay;  // 0 where the param does not decay
  T momentum;
  T one_minus_dampening;
  T neg_lr;
  bool nesterov;
};

// torch/optim/sgd.py, _single_tensor_sgd, per element:
//   d_p = d_p.add(param, alpha=weight_decay)           if weight_decay != 0
//   buf = clone(d_p)                                   first step
//   buf.mul_(momentum).add_(d_p, alpha=1 - dampening)  later steps
//   d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
//   param.add_(d_p, alpha=-lr)
// buf is nullptr without momentum.
template <class T>
void sgd_update(T* param, const T* grad, T* buf, std::int64_t n, const SgdScalars<T>& c,
                bool first) {
  for_blocks(n, [&](std::int64_t begin, std::int64_t end) {
    T* __restrict p = param;
    const T* __restrict g = grad;
    T* __restrict b = buf;
    for (std::int64_t i = begin; i < end; ++i) {
      T d = g[i];
      if (c.weight_decay != 0) d = mul_add(c.weight_decay, p[i], d);
      if (b) {
        const T bi = first ? d : mul_add(c.one_minus_dampening, d, b[i] * c.momentum);
        b[i] = bi;
        d = c.nesterov ? mul_add(c.momentum, bi, d) : bi;
      }
      p[i] = mul_add(c.neg_lr, d, p[i]);
    }
  });
}

class Sgd final : public StatefulOptimizer {
 public:
  explicit Sgd(const SgdOptions& o)
      : StatefulOptimizer(o.momentum != 0 ? std::vector<std::string>{"momentum_buffer"}
                                          : std::vector<std::string>{},
                          false),
        o_(o) {}
  std::string name() const override { return "sgd"; }

 protected:
  void update(Param& p, ParamState* s, double lr, bool first) override {
    const double wd = p.decay ? o_.weight_decay : 0.0;
    if (p.tensor.dtype() == DType::F32) {
      run<float>(p, s, lr, wd, first);
    } else {
      run<double>(p, s, lr, wd, first);
    }
  }

 private:
  template <class T>
  void run(Param& p, ParamState* s, double lr, double wd, bool first) const {
    const SgdScalars<T> c{static_cast<T>(wd), static_cast<T>(o_.momentum),
                          static_cast<T>(1 - o_.dampening), static_cast<T>(-lr), o_.nesterov};
    sgd_update<T>(p.tensor.data<T>(), p.tensor.grad().data<T>(),
                  s ? s->tensors[0].data<T>() : nullptr, p.tensor.numel(), c, first);
  }

  SgdOptions o_;
};

// ---- Adam / AdamW -----------------------------------------------------------------------------

// Scalars of one Adam update, rounded to the param's dtype as torch rounds Python scalars; the
// bias corrections are computed in double from the param's step, as torch computes them in Python.
template <class T>
struct AdamScalars {
  T weight_decay;  // Adam's L2 term; 0 for AdamW or where the param does not decay
  T decay_factor;  // AdamW's 1 - lr * weight_decay; 1 for Adam or where it does not decay
  T beta1, one_minus_beta1;
  T beta2, one_minus_beta2;
  T bias_correction2_sqrt;  // sqrt(1 - beta2^t)
  T eps;
  T neg_step_size;  // -lr / (1 - beta1^t)
};

// torch/optim/adam.py and adamw.py, _single_tensor_adam(w), per element:
//   grad = grad.add(param, alpha=weight_decay)             Adam, if weight_decay != 0
//   param.mul_(1 - lr * weight_decay)                      AdamW
//   exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
//   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
//   denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
//   param.addcdiv_(exp_avg, denom, value=-step_size)      i.e. param + (-step_size * m) / denom
template <class T>
void adam_update(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, std::int64_t n,
                 const AdamScalars<T>& c) {
  for_blocks(n, [&](std::int64_t begin, std::int64_t end) {
    T* __restrict p = param;
    const T* __restrict g = grad;
    T* __restrict m = exp_avg;
    T* __restrict v = exp_avg_sq;
    if (c.decay_factor != 1) {
      // A loop of its own, as torch's separate mul_: the product must be rounded and stored
      // before addcdiv adds to it. Written inside the loop below, a compiler that contracts
      // floating-point expressions (GCC's default) would fuse p * f + q into one FMA.
      for (std::int64_t i = begin; i < end; ++i) p[i] *= c.decay_factor;
    }
    // std::sqrt may set errno, so GCC keeps this loop scalar unless the file is built with
    // -fno-math-errno (as PyTorch is); with it the loop vectorizes (AdamW ~3.8x faster on an
    // AVX-512 machine) and gives the same bits: sqrt and division are correctly rounded either way.
    for (std::int64_t i = begin; i < end; ++i) {
      T gi = g[i];
      if (c.weight_decay != 0) gi = mul_add(c.weight_decay, p[i], gi);
      const T mi = mul_add(c.one_minus_beta1, gi, m[i] * c.beta1);
      const T vi = mul_add(c.one_minus_beta2 * gi, gi, v[i] * c.beta2);
      m[i] = mi;
      v[i] = vi;
      const T denom = std::sqrt(vi) / c.bias_correction2_sqrt + c.eps;
      p[i] += (c.neg_step_size * mi) / denom;
    }
  });
}

class Adam final : public StatefulOptimizer {
 public:
  Adam(const AdamOptions& o, bool decoupled)
      : StatefulOptimizer({"exp_avg", "exp_avg_sq"}, true), o_(o), decoupled_(decoupled) {}
  std::string name() const override { return decoupled_ ? "adamw" : "adam"; }

 protected:
  void update(Param& p, ParamState* s, double lr, bool) override {
    if (p.tensor.dtype() == DType::F32) {
      run<float>(p, *s, lr);
    } else {
      run<double>(p, *s, lr);
    }
  }

 private:
  template <class T>
  void run(Param& p, ParamState& s, double lr) const {
    const double wd = p.decay ? o_.weight_decay : 0.0;
    const double t = static_cast<double>(s.steps);
    const double bias_correction1 = 1 - std::pow(o_.beta1, t);
    const double bias_correction2 = 1 - std::pow(o_.beta2, t);
    const double step_size = lr / bias_correction1;
    const AdamScalars<T> c{
        static_cast<T>(decoupled_ ? 0.0 : wd),
        decoupled_ ? static_cast<T>(1 - lr * wd) : T(1),
        static_cast<T>(o_.beta1),
        static_cast<T>(1 - o_.beta1),
        static_cast<T>(o_.beta2),
        static_cast<T>(1 - o_.beta2),
        static_cast<T>(std::sqrt(bias_correction2)),
        static_cast<T>(o_.eps),
        static_cast<T>(-step_size),
    };
    adam_update<T>(p.tensor.data<T>(), p.tensor.grad().data<T>(), s.tensors[0].data<T>(),
                   s.tensors[1].data<T>(), p.tensor.numel(), c);
  }

  AdamOptions o_;
  bool decoupled_;
};

void check_adam(const char* who, const AdamOptions& o) {
  const std::string w(who);
  if (!(o.beta1 >= 0 && o.beta1 < 1)) {
    throw std::invalid_argument(w + ": beta1 must be in [0, 1), got " + fmt(o.beta1));
  }
  if (!(o.beta2 >= 0 && o.beta2 < 1)) {
    throw std::invalid_argument(w + ": beta2 must be in [0, 1), got " + fmt(o.beta2));
  }
  if (!(o.eps >= 0)) {
    throw std::invalid_argument(w + ": eps must be >= 0, got " + fmt(o.eps) +
                                " (it keeps the denominator away from 0; the usual value is 1e-8)");
  }
  if (!(o.weight_decay >= 0)) {
    throw std::invalid_argument(w + ": weight_decay must be >= 0, got " + fmt(o.weight_decay));
  }
}

}  // namespace

std::unique_ptr<Optimizer> make_sgd(const SgdOptions& o) {
  if (!(o.momentum >= 0)) {
    throw std::invalid_argument("sgd: momentum must be >= 0, got " + fmt(o.momentum));
  }
  if (!(o.weight_decay >= 0)) {
    throw std::invalid_argument("sgd: weight_decay must be >= 0, got " + fmt(o.weight_decay));
  }
  if (!std::isfinite(o.dampening)) {
    throw std::invalid_argument("sgd: dampening must be finite, got " + fmt(o.dampening));
  }
  if (o.nesterov && (o.momentum <= 0 || o.dampening != 0)) {
    throw std::invalid_argument(
        "sgd: Nesterov momentum requires a momentum > 0 and zero "
        "dampening, got momentum " +
        fmt(o.momentum) + " and dampening " + fmt(o.dampening));
  }
  return std::make_unique<Sgd>(o);
}

std::unique_ptr<Optimizer> make_adam(const AdamOptions& o) {
  check_adam("adam", o);
  return std::make_unique<Adam>(o, false);
}

std::unique_ptr<Optimizer> make_adamw(const AdamOptions& o) {
  check_adam("adamw", o);
  return std::make_unique<Adam>(o, true);
}

std::unique_ptr<Optimizer> make_optimizer(OptimizerKind kind, const AdamOptions& adam,
                                          const SgdOptions& sgd) {
  switch (kind) {
    case OptimizerKind::AdamW: return make_adamw(adam);
    case OptimizerKind::Adam: return make_adam(adam);
    case OptimizerKind::Sgd: return make_sgd(sgd);
  }
  throw std::invalid_argument("make_optimizer: not an optimizer kind");
}

}  // namespace edgetune::optim
