// Private helpers shared by the ops_*.cpp files: the checks every op makes on its inputs and the
// output allocation every op uses (describe, require and dispatch_float come from checks.h).
#pragma once

#include <cstdint>
#include <string>

#include "checks.h"
#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/tensor.h"

namespace edgetune::ops::detail {

using namespace edgetune::detail;

inline void require_float(const char* op, const Tensor& t) {
  require(t.defined(), std::string(op) + ": undefined input");
  require(is_float(t.dtype()), std::string(op) + ": expected a float tensor, got " + describe(t));
}

inline void require_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  require(a.dtype() == b.dtype(), std::string(op) + ": " + describe(a) + " and " + describe(b) +
                                      " differ in dtype");
}

inline Tensor new_output(const Shape& shape, DType dtype) {
  return Tensor::empty(shape, dtype, MemCategory::Activations);
}

// Number of threads worth using for n elements of simple work.
inline bool worth_threads(std::int64_t n) { return n > 32768; }

}  // namespace edgetune::ops::detail
