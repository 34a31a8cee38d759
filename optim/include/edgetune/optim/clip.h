// Gradient norm and clipping with torch.nn.utils.clip_grad_norm_ semantics (L2 norm only).
//
// What this is: the total L2 norm over the gradients of many params, viewed as one vector, and
// rescaling them when it exceeds a limit, as the Hugging Face Trainer does before each optimizer
// step. The norm is accumulated in double in a fixed order (fixed blocks of each gradient, summed
// in sequence), so it is the same whatever the number of OpenMP threads.
// What it is not: other norms (inf, p), or a check for non-finite gradients: the caller looks at
// the returned norm (std::isfinite) and decides whether to skip the step.
#pragma once

#include <span>

#include "edgetune/optim/optimizer.h"

namespace edgetune::optim {

// sqrt(sum over params with a grad of sum_i grad_i^2), in double. 0 when no param has a grad.
// Requires every param to have a tensor and every grad to be f32 or f64 (std::invalid_argument).
double grad_norm(std::span<const Param> params);

// Scales the grads as torch.nn.utils.clip_grad_norm_ does once it has the total norm:
//   clip_coef = min(1, max_norm / (total_norm + 1e-6)); grad *= clip_coef
// The coefficient is computed in each grad's dtype with torch's operations (total_norm rounded
// to that dtype, + 1e-6, reciprocal, * max_norm), so grads scaled for the same total norm are the
// same bits as torch's. Grads whose norm is at most max_norm keep their values; a NaN total makes
// them NaN and an infinite one scales them by 0, as torch does with error_if_nonfinite=False.
// max_norm == 0 means no clipping (the Trainer's max_grad_norm = 0; torch would zero the grads).
// Separate from grad_norm so a caller can look at the norm first (log it, skip a step whose norm
// is not finite without touching the grads). Requires max_norm >= 0 (std::invalid_argument).
void clip_grads_to_norm(std::span<Param> params, double max_norm, double total_norm);

// grad_norm, then clip_grads_to_norm with it; returns the total norm before clipping.
// torch computes the norm of float32 grads in float32, this one in double: the two may differ
// in the last bit of a float (the goldens show at most ~1.3e-7 relative).
double clip_grad_norm(std::span<Param> params, double max_norm);

}  // namespace edgetune::optim
