// Private helpers shared by the ops_*.cpp files: dtype dispatch, checks with readable messages,
// and the output allocation every op uses.
#pragma once

#include <stdexcept>
#include <string>

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/tensor.h"

namespace edgetune::ops::detail {

inline std::string describe(const Tensor& t) {
  return (t.name().empty() ? std::string("tensor") : "'" + t.name() + "'") + " " +
         dtype_name(t.dtype()) + " " + t.shape().str();
}

inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

inline void require_float(const char* op, const Tensor& t) {
  require(t.defined(), std::string(op) + ": undefined input");
  require(is_float(t.dtype()), std::string(op) + ": expected a float tensor, got " + describe(t));
}

inline void require_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  require(a.dtype() == b.dtype(), std::string(op) + ": " + describe(a) + " and " + describe(b) +
                                      " differ in dtype");
}

// Calls f with a value of the element type of a float dtype: f(float{}) or f(double{}).
template <class F>
decltype(auto) dispatch(DType t, F&& f) {
  if (t == DType::F32) return f(float{});
  if (t == DType::F64) return f(double{});
  throw std::invalid_argument(std::string("expected f32 or f64, got ") + dtype_name(t));
}

inline Tensor new_output(const Shape& shape, DType dtype) {
  return Tensor::empty(shape, dtype, MemCategory::Activations);
}

// Number of threads worth using for n elements of simple work.
inline bool worth_threads(std::int64_t n) { return n > 32768; }

}  // namespace edgetune::ops::detail
