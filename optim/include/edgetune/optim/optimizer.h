// Optimizers: one interface, step(params, lr), and SGD, Adam and AdamW written exactly as
// PyTorch 1.13's reference implementation (torch.optim, the single-tensor for-loop path:
// foreach=False, fused=False, maximize=False, amsgrad=False, differentiable=False).
//
// "Exactly" means the same operations in the same order, with the same roundings: a float32
// parameter is updated in float32 with each Python scalar (lr, betas, eps, ...) rounded to float
// first, as torch's kernels do, and products that torch's CPU kernels fuse into one rounding
// (`add(x, alpha=a)` and `addcmul`) are fused here too (std::fma) when the target has FMA.
// tests/golden/optim replays torch.optim trajectories against this code.
//
// What this is: the update rules, their lazily allocated state (counted by the memory accountant
// under MemCategory::OptimizerState) and that state as named tensors for checkpoints.
// What it is not: parameter groups, LR schedules (schedule.h), gradient clipping (clip.h), AMSGrad,
// sparse gradients, or a choice of which parameters decay: the caller decides that per parameter,
// by name, with Param::decay.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "edgetune/autograd/tensor.h"

namespace edgetune::optim {

// One trainable tensor.
struct Param {
  // Unique among the params handed to an optimizer; names its state entries, e.g.
  // "bert.encoder.layer.0.attention.self.query.lora_A.weight".
  std::string name;
  // A float32 (float64 in checks) leaf, updated in place; tensor.grad() holds the gradient (same
  // shape and dtype) or is undefined when this parameter got none.
  Tensor tensor;
  // Weight decay applies to this parameter. The Hugging Face Trainer convention is false for
  // biases and LayerNorm weights; the caller decides, by name, never by position.
  bool decay = true;
};

// The common interface of SGD, Adam and AdamW.
//
// State is kept per parameter name and allocated lazily, at the first step where that parameter
// has a gradient (as torch does): a parameter that never gets a gradient costs nothing.
class Optimizer {
 public:
  virtual ~Optimizer();

  // One update of every param whose grad is defined, with learning rate lr (the schedule's value
  // for this step: base lr * Schedule::factor(steps())). Params without a grad are left alone,
  // state included (torch skips them the same way).
  // Requires: lr >= 0 and finite; names unique and non-empty; every param a float (f32 / f64) leaf;
  // a defined grad of the param's shape and dtype; a param keeps its shape and dtype from step to
  // step. Throws std::invalid_argument naming the param otherwise, and BudgetExceeded if its state
  // does not fit the memory budget; in both cases before any param or state has changed.
  // Ensures: steps() grows by one (also when no param had a grad).
  virtual void step(std::span<Param> params, double lr) = 0;

  // The state for a checkpoint, as named tensors:
  //   "step"                      scalar f64: steps(), the number of step() calls
  //   "step/<param name>"         scalar f64: the steps this param has taken (adam, adamw)
  //   "exp_avg/<param name>"      first moment m, shape and dtype of the param (adam, adamw)
  //   "exp_avg_sq/<param name>"   second moment v, likewise (adam, adamw)
  //   "momentum_buffer/<name>"    SGD's momentum buffer (sgd with momentum > 0)
  // "step" first, then each param's entries in the order the params first got state. The moment
  // tensors are the live buffers, not copies: save them before the next step().
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;

  // Replaces the whole state with `state` (the output of state(), perhaps read back from a
  // safetensors file, where a scalar may come back as f32 or i32) for these params. Moments are
  // copied (converted to each param's dtype) into new OptimizerState tensors.
  // A param with no entry at all starts fresh, as it would have had it never got a gradient.
  // Throws std::invalid_argument, and changes nothing, when "step" is missing or not a count, a
  // param has some of its entries but not all, an entry's shape differs from its param's, an entry
  // is given twice, or an entry names no param of `params` (saved for other params or another
  // optimizer?); the message names the entry.
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& state,
                          std::span<Param> params) = 0;

  // "sgd", "adam" or "adamw".
  virtual std::string name() const = 0;

  // Number of step() calls so far (restored by load_state).
  std::int64_t steps() const { return steps_; }

 protected:
  std::int64_t steps_ = 0;
};

// Fills every existing gradient with zeros, keeping its buffer (a param without a grad keeps none).
void zero_grad(std::span<Param> params);

// torch.optim.SGD. With weight decay wd (only where Param::decay), momentum mu, dampening tau:
//   g = grad + wd * p
//   b = g                              at a param's first step (torch: buf = clone(d_p))
//   b = mu * b + (1 - tau) * g         later
//   g = g + mu * b  (nesterov)   or   g = b  (momentum > 0)
//   p = p - lr * g
// momentum 0 keeps no state.
struct SgdOptions {
  double momentum = 0;      // >= 0
  double dampening = 0;     // 0 with nesterov
  double weight_decay = 0;  // >= 0
  bool nesterov = false;    // requires momentum > 0 and dampening 0
};

// torch.optim.Adam (L2 weight decay, added to the gradient) and torch.optim.AdamW (decoupled
// weight decay, applied to the parameter). At a param's step t (1, 2, ...):
//   Adam:  g = grad + wd * p                       AdamW:  p = p * (1 - lr * wd)
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// with wd only where Param::decay. m and v start at zero.
struct AdamOptions {
  double beta1 = 0.9;       // in [0, 1)
  double beta2 = 0.999;     // in [0, 1)
  double eps = 1e-8;        // >= 0
  double weight_decay = 0;  // >= 0; torch.optim.AdamW's default is 0.01, the Trainer's 0
};

// Each throws std::invalid_argument for options torch rejects, saying which and why.
std::unique_ptr<Optimizer> make_sgd(const SgdOptions& options);
std::unique_ptr<Optimizer> make_adam(const AdamOptions& options);   // L2: g += wd * p
std::unique_ptr<Optimizer> make_adamw(const AdamOptions& options);  // decoupled: p *= 1 - lr * wd

enum class OptimizerKind { AdamW, Adam, Sgd };
// The optimizer of that kind, with the options of its kind (the other options are not read).
std::unique_ptr<Optimizer> make_optimizer(OptimizerKind kind, const AdamOptions& adam,
                                          const SgdOptions& sgd);

}  // namespace edgetune::optim
