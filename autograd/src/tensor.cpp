// Tensor, Shape and Storage (see tensor.h).
#include "edgetune/autograd/tensor.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "checks.h"
#include "edgetune/core/context.h"
#include "edgetune/autograd/quant.h"

namespace edgetune {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::I32: return "i32";
    case DType::Q8: return "q8";
    case DType::Q4: return "q4";
    case DType::NF4: return "nf4";
    case DType::PAL4: return "pal4";
  }
  return "?";
}

Shape::Shape(std::initializer_list<std::int64_t> dims)
    : Shape(std::span<const std::int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const std::int64_t> dims) {
  if (dims.size() > static_cast<size_t>(kMaxRank)) {
    throw std::invalid_argument("tensors have at most 4 dimensions, got " +
                                std::to_string(dims.size()));
  }
  rank_ = static_cast<int>(dims.size());
  for (int i = 0; i < rank_; ++i) {
    if (dims[i] < 0) throw std::invalid_argument("negative tensor dimension");
    d_[i] = dims[i];
  }
}

int Shape::index(int i) const {
  const int j = i < 0 ? i + rank_ : i;
  if (j < 0 || j >= rank_) {
    throw std::out_of_range("dimension " + std::to_string(i) + " of a shape of rank " +
                            std::to_string(rank_));
  }
  return j;
}

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= d_[i];
  return n;
}

std::int64_t Shape::rows() const {
  std::int64_t n = 1;
  for (int i = 0; i + 1 < rank_; ++i) n *= d_[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (d_[i] != o.d_[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(d_[i]);
  }
  return s + ")";
}

Storage::Storage(MemCategory category, std::size_t bytes)
    : accountant_(current_context().accountant),
      data_(accountant_->allocate(category, bytes)),
      bytes_(bytes),
      category_(category) {}

Storage::Storage(std::shared_ptr<const void> owner, const void* data, std::size_t bytes,
                 MemCategory category)
    : owner_(std::move(owner)),
      // The mapping is read-only (PROT_READ): frozen tensors only read through this pointer.
      data_(const_cast<void*>(data)),
      bytes_(bytes),
      category_(category) {}

Storage::~Storage() {
  if (accountant_) accountant_->release(category_, data_, bytes_);
}

std::size_t storage_bytes(const Shape& shape, DType dtype) {
  const auto n = static_cast<std::size_t>(shape.numel());
  switch (dtype) {
    case DType::F32: return n * 4;
    case DType::F64: return n * 8;
    case DType::I32: return n * 4;
    case DType::Q8: return n;
    case DType::Q4:
    case DType::NF4:
    case DType::PAL4: return static_cast<std::size_t>(shape.rows() * ((shape.last() + 1) / 2));
  }
  return 0;
}

std::int64_t scale_count(const Shape& shape, DType dtype) {
  if (dtype == DType::Q8) return shape.rows();
  if (dtype == DType::Q4) return shape.rows() * ((shape.last() + kQ4Group - 1) / kQ4Group);
  if (dtype == DType::NF4) return shape.rows() * ((shape.last() + kNf4Block - 1) / kNf4Block);
  if (dtype == DType::PAL4) return (shape.rows() + kPal4Rows - 1) / kPal4Rows * kPal4Values;
  return 0;
}

std::size_t accounted_tensor_bytes(const Shape& shape, DType dtype) {
  return accounted_bytes(storage_bytes(shape, dtype)) +
         accounted_bytes(static_cast<std::size_t>(scale_count(shape, dtype)) * sizeof(float));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, MemCategory category) {
  if (is_quantized(dtype) && shape.rank() != 2) {
    throw std::invalid_argument(std::string(dtype_name(dtype)) +
                                " tensors are (N, K) matrices, got shape " + shape.str());
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(category, storage_bytes(shape, dtype));
  if (is_quantized(dtype)) {
    impl->scales = std::make_shared<Storage>(
        category, static_cast<std::size_t>(scale_count(shape, dtype)) * sizeof(float));
  }
  return Tensor(std::move(impl));
}

Tensor Tensor::mapped(const Shape& shape, DType dtype, std::shared_ptr<const void> owner,
                      const void* values, const float* scales, MemCategory category) {
  if (!(dtype == DType::F32 || is_quantized(dtype))) {
    throw std::invalid_argument("Tensor::mapped: only f32 and quantized tensors can be mapped");
  }
  if (is_quantized(dtype) && (shape.rank() != 2 || scales == nullptr)) {
    throw std::invalid_argument(std::string(dtype_name(dtype)) +
                                " tensors are (N, K) matrices with scales, got shape " + shape.str());
  }
  if (reinterpret_cast<std::uintptr_t>(values) % alignof(float) != 0 ||
      reinterpret_cast<std::uintptr_t>(scales) % alignof(float) != 0) {
    throw std::invalid_argument("Tensor::mapped: values and scales must be 4-byte aligned");
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(owner, values, storage_bytes(shape, dtype), category);
  if (is_quantized(dtype)) {
    impl->scales = std::make_shared<Storage>(
        std::move(owner), scales, static_cast<std::size_t>(scale_count(shape, dtype)) * sizeof(float),
        category);
  }
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, MemCategory category) {
  Tensor t = empty(shape, dtype, category);
  if (t.impl_->storage->bytes()) std::memset(t.impl_->storage->data(), 0, t.impl_->storage->bytes());
  if (t.impl_->scales && t.impl_->scales->bytes())
    std::memset(t.impl_->scales->data(), 0, t.impl_->scales->bytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, MemCategory category) {
  Tensor t = empty(shape, dtype, category);
  t.fill(value);
  return t;
}

Tensor Tensor::from_values(const Shape& shape, std::span<const double> values, DType dtype,
                           MemCategory category) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel()) {
    throw std::invalid_argument("from_values: " + std::to_string(values.size()) +
                                " values for shape " + shape.str());
  }
  Tensor t = empty(shape, dtype, category);
  const std::int64_t n = shape.numel();
  switch (dtype) {
    case DType::F32:
      for (std::int64_t i = 0; i < n; ++i) t.data<float>()[i] = static_cast<float>(values[i]);
      break;
    case DType::F64: std::copy(values.begin(), values.end(), t.data<double>()); break;
    case DType::I32:
      for (std::int64_t i = 0; i < n; ++i)
        t.data<std::int32_t>()[i] = static_cast<std::int32_t>(values[i]);
      break;
    default: throw std::invalid_argument("from_values: use quantize() for quantized tensors");
  }
  return t;
}

Tensor Tensor::from_floats(const Shape& shape, std::span<const float> values, MemCategory category) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel()) {
    throw std::invalid_argument("from_floats: " + std::to_string(values.size()) +
                                " values for shape " + shape.str());
  }
  Tensor t = empty(shape, DType::F32, category);
  std::copy(values.begin(), values.end(), t.data<float>());
  return t;
}

Tensor Tensor::from_ints(const Shape& shape, std::span<const std::int32_t> values,
                         MemCategory category) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel()) {
    throw std::invalid_argument("from_ints: " + std::to_string(values.size()) +
                                " values for shape " + shape.str());
  }
  Tensor t = empty(shape, DType::I32, category);
  std::copy(values.begin(), values.end(), t.data<std::int32_t>());
  return t;
}

std::size_t Tensor::nbytes() const {
  return impl_->storage->bytes() + (impl_->scales ? impl_->scales->bytes() : 0);
}

template <class T>
static constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  if constexpr (std::is_same_v<T, double>) return DType::F64;
  if constexpr (std::is_same_v<T, std::int32_t>) return DType::I32;
  if constexpr (std::is_same_v<T, std::int8_t>) return DType::Q8;
  if constexpr (std::is_same_v<T, std::uint8_t>) return DType::Q4;
}

template <class T>
T* Tensor::data() const {
  // Q4, NF4 and PAL4 all hold packed nibbles, read as uint8_t (dtype_of names Q4).
  const DType held = is_packed4(impl_->dtype) ? DType::Q4 : impl_->dtype;
  if (held != dtype_of<T>()) {
    throw std::logic_error(std::string("tensor '") + impl_->name + "' holds " +
                           dtype_name(impl_->dtype) + ", accessed as " +
                           dtype_name(dtype_of<T>()));
  }
  return static_cast<T*>(impl_->storage->data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template std::int32_t* Tensor::data<std::int32_t>() const;
template std::int8_t* Tensor::data<std::int8_t>() const;
template std::uint8_t* Tensor::data<std::uint8_t>() const;

float* Tensor::scales() const {
  if (!impl_->scales) throw std::logic_error("scales() of a tensor that is not quantized");
  return static_cast<float*>(impl_->scales->data());
}

Tensor& Tensor::set_requires_grad(bool on) {
  if (on && is_quantized(impl_->dtype)) {
    throw std::logic_error("tensor '" + impl_->name + "' is stored " + dtype_name(impl_->dtype) +
                           " and frozen: quantized base weights cannot be trained. Train an "
                           "adapter on top of it (LoRA, Houlsby, BitFit), or load the base as f32 "
                           "(--quant f32 / --method full) to train it.");
  }
  if (on && impl_->dtype == DType::I32) {
    throw std::logic_error("tensor '" + impl_->name + "' holds integers and cannot require grad");
  }
  if (impl_->grad_fn) {
    throw std::logic_error("set_requires_grad on tensor '" + impl_->name +
                           "', the output of an op: only leaves can be marked (detach() it first)");
  }
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return Tensor(impl_->grad); }

void Tensor::set_grad(const Tensor& g) {
  if (g.defined() && g.shape() != shape()) {
    throw std::invalid_argument("set_grad: gradient of shape " + g.shape().str() +
                                " for a tensor of shape " + shape().str());
  }
  impl_->grad = g.impl_;
}

void Tensor::zero_grad() {
  if (impl_->grad && impl_->grad->storage->bytes())
    std::memset(impl_->grad->storage->data(), 0, impl_->grad->storage->bytes());
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = impl_->shape;
  impl->dtype = impl_->dtype;
  impl->storage = impl_->storage;
  impl->scales = impl_->scales;
  impl->name = impl_->name;
  return Tensor(std::move(impl));
}

Tensor Tensor::clone(MemCategory category) const {
  Tensor t = empty(shape(), dtype(), category);
  if (impl_->storage->bytes())
    std::memcpy(t.impl_->storage->data(), impl_->storage->data(), impl_->storage->bytes());
  if (impl_->scales && impl_->scales->bytes())
    std::memcpy(t.impl_->scales->data(), impl_->scales->data(), impl_->scales->bytes());
  t.impl_->name = impl_->name;
  return t;
}

Tensor Tensor::view(const Shape& shape) const {
  if (shape.numel() != numel()) {
    throw std::invalid_argument("view: cannot view a tensor of shape " + this->shape().str() +
                                " as " + shape.str());
  }
  if (is_quantized(dtype()) && shape != this->shape()) {
    throw std::invalid_argument("view: quantized tensors keep their (N, K) shape");
  }
  Tensor t = detach();
  t.impl_->shape = shape;
  return t;
}

Tensor Tensor::to(DType target, MemCategory category) const {
  if (!is_float(target)) {
    throw std::invalid_argument(std::string("to(") + dtype_name(target) +
                                "): use quantize() to make quantized tensors");
  }
  if (dtype() == target) return clone(category);
  Tensor out = empty(shape(), target, category);
  const std::int64_t n = numel();
  detail::dispatch_float(target, [&]<class D>() {
    D* d = out.data<D>();
    const auto convert = [&]<class S>() {
      const S* s = data<S>();
      for (std::int64_t i = 0; i < n; ++i) d[i] = static_cast<D>(s[i]);
    };
    if (is_quantized(dtype())) {
      dequantize_rows(*this, 0, dim(0), d);
    } else if (dtype() == DType::I32) {
      convert.template operator()<std::int32_t>();
    } else {
      detail::dispatch_float(dtype(), convert);
    }
  });
  return out;
}

Tensor& Tensor::set_name(std::string name) {
  impl_->name = std::move(name);
  return *this;
}

double Tensor::item() const {
  if (numel() != 1) {
    throw std::logic_error("item() of a tensor with " + std::to_string(numel()) + " elements");
  }
  return to_vector()[0];
}

std::vector<double> Tensor::to_vector() const {
  const std::int64_t n = numel();
  std::vector<double> v(static_cast<size_t>(n));
  switch (dtype()) {
    case DType::F32:
      for (std::int64_t i = 0; i < n; ++i) v[i] = data<float>()[i];
      break;
    case DType::F64: std::copy(data<double>(), data<double>() + n, v.begin()); break;
    case DType::I32:
      for (std::int64_t i = 0; i < n; ++i) v[i] = data<std::int32_t>()[i];
      break;
    case DType::Q8:
    case DType::Q4:
    case DType::NF4:
    case DType::PAL4: dequantize_rows(*this, 0, dim(0), v.data()); break;
  }
  return v;
}

void Tensor::fill(double value) {
  const std::int64_t n = numel();
  switch (dtype()) {
    case DType::F32: std::fill_n(data<float>(), n, static_cast<float>(value)); break;
    case DType::F64: std::fill_n(data<double>(), n, value); break;
    case DType::I32: std::fill_n(data<std::int32_t>(), n, static_cast<std::int32_t>(value)); break;
    default: throw std::logic_error("fill() of a quantized tensor");
  }
}

namespace {
thread_local bool t_grad_enabled = true;
}

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }
bool grad_enabled() { return t_grad_enabled; }

}  // namespace edgetune
