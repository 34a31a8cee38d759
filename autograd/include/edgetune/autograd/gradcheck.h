// gradcheck(): compares the analytic gradient of the tape with central differences, in float64.
//
// For fn: inputs -> out, it draws a fixed random cotangent r (uniform in [-1, 1], from the seed),
// takes L = sum(out * r), and for every input that requires grad compares
//   analytic  dL/dx  (one backward, with the input's .grad pre-seeded with random values that are
//                     subtracted afterwards, so an op that overwrites instead of adding fails)
//   numeric   (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)
// element by element: it passes when |analytic - numeric| <= atol + rtol |numeric| for every
// checked element. At most max_elements elements per input are checked, spread evenly over it.
// There is no adaptive retry: a tolerance is what the caller states.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "edgetune/autograd/tensor.h"

namespace edgetune {

struct GradcheckOptions {
  double eps = 1e-6;                 // central-difference step (per op: pick away from kinks)
  double atol = 1e-7;                // absolute tolerance
  double rtol = 1e-5;                // relative tolerance
  std::int64_t max_elements = 256;   // elements checked per input
  std::uint64_t seed = 20240607;     // cotangent and pre-seeded gradients
  bool check_accumulation = true;    // pre-seed .grad and require it to be added to
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;  // max |analytic - numeric|
  double max_rel_error = 0;  // max |analytic - numeric| / max(|numeric|, |analytic|) over the
                             // elements where that max is at least 1e-6
  std::int64_t checked = 0;  // elements compared
  std::string worst;         // where the largest violation (or error) happened
  std::string summary() const;
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

// inputs: float64 tensors (those that require grad are checked) and any others fn needs (ids,
// labels, frozen quantized weights). fn must be deterministic (it is called many times).
GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace edgetune
