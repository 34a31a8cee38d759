// Private helpers every autograd source file shares: checks with readable messages and the one
// dispatch from a float dtype to its element type. Not installed; not part of the API.
#pragma once

#include <stdexcept>
#include <string>

#include "edgetune/autograd/tensor.h"

namespace edgetune::detail {

// "'name' f32 (2, 3)", or "tensor f32 (2, 3)" for an unnamed tensor: how errors name a tensor.
inline std::string describe(const Tensor& t) {
  return (t.name().empty() ? std::string("tensor") : "'" + t.name() + "'") + " " +
         dtype_name(t.dtype()) + " " + t.shape().str();
}

// Throws std::invalid_argument(what) unless ok.
inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

// Runs f.template operator()<T>() with T the element type of the float dtype t (float for f32,
// double for f64) and returns its result: `dispatch_float(t, [&]<class T>() { ... })`.
// Throws std::invalid_argument naming t for any other dtype.
template <class F>
decltype(auto) dispatch_float(DType t, F&& f) {
  if (t == DType::F32) return f.template operator()<float>();
  if (t == DType::F64) return f.template operator()<double>();
  throw std::invalid_argument(std::string("expected f32 or f64, got ") + dtype_name(t));
}

}  // namespace edgetune::detail
