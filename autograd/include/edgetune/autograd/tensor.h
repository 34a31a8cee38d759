// Tensor: a shared handle to a row-major, contiguous block of up to 4 dimensions whose bytes come
// from the memory accountant (core/memory.h), plus the autograd fields (requires_grad, grad,
// grad_fn).
//
// Element types: F32 (training), F64 (exact gradient checks), I32 (token ids, labels), and the two
// frozen base storages of ARCHITECTURE.md:
//   Q8  (N, K): int8 codes, one float scale per row:  s = max|w_row| / 127, q = round(w / s)
//               clamped to [-127, 127]; w ~ q * s.
//   Q4  (N, K): 4-bit codes, one float scale per group of 32 consecutive inputs of a row (the last
//               group of a row shorter when K % 32 != 0): s = max|w_group| / 7, q in [-7, 7].
//               Two codes per byte, each stored as q + 8: element 2j of a row in the low nibble of
//               the row's byte j, element 2j+1 in the high nibble; a row takes ceil(K/2) bytes.
//   NF4 (N, K): 4-bit indices into the 16 NormalFloat4 values of QLoRA (quant.h), one float
//               scale per block of 64 consecutive inputs of a row (the last block shorter):
//               s = max|w_block|, w ~ nf4[code] * s.
//   PAL4 (N, K): 4-bit indices into a palette of 16 floats shared by a group of 16 rows (the last
//               group shorter), found by k-means (quant.h): w ~ palette[code].
//   Q4, NF4 and PAL4 pack two codes per byte the same way; NF4 and PAL4 store the index 0..15.
//   A scale of 0 (an all-zero row or group) dequantizes to zeros. round() is half-to-even, as
//   torch.round, so a PyTorch script reproduces the same codes.
// Quantized tensors are frozen: they can never require a gradient.
//
// Copying a Tensor copies the handle (like torch.Tensor); clone() copies the data.
// Dimensions named in comments follow ARCHITECTURE.md: B batch, T tokens, C hidden, H heads,
// D head size, F feed-forward width, V vocabulary, L layers, K classes or inputs, N outputs.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "edgetune/core/memory.h"

namespace edgetune {

enum class DType : std::uint8_t { F32, F64, I32, Q8, Q4, NF4, PAL4 };

const char* dtype_name(DType t);  // "f32", "f64", "i32", "q8", "q4", "nf4", "pal4"
inline bool is_float(DType t) { return t == DType::F32 || t == DType::F64; }
inline bool is_quantized(DType t) {
  return t == DType::Q8 || t == DType::Q4 || t == DType::NF4 || t == DType::PAL4;
}
// Q4, NF4 and PAL4: two 4-bit codes per byte, a row taking ceil(K/2) bytes.
inline bool is_packed4(DType t) { return t == DType::Q4 || t == DType::NF4 || t == DType::PAL4; }

// Inputs of a row that share one q4 scale.
inline constexpr int kQ4Group = 32;
// Inputs of a row that share one nf4 absmax scale (QLoRA's block size).
inline constexpr int kNf4Block = 64;
// Rows that share one pal4 palette, and the palette's size.
inline constexpr int kPal4Rows = 16;
inline constexpr int kPal4Values = 16;

class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;  // rank 0: a scalar with one element
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(std::span<const std::int64_t> dims);

  int rank() const { return rank_; }
  // Dimension i; negative i counts from the end (-1 is the last).
  std::int64_t operator[](int i) const { return d_[index(i)]; }
  std::int64_t& operator[](int i) { return d_[index(i)]; }
  std::int64_t numel() const;
  // Product of all dimensions but the last (the number of rows of a row-major matrix view).
  std::int64_t rows() const;
  std::int64_t last() const { return rank_ == 0 ? 1 : d_[rank_ - 1]; }
  std::span<const std::int64_t> dims() const { return {d_.data(), static_cast<size_t>(rank_)}; }
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "(2, 3, 4)"

 private:
  int index(int i) const;
  std::array<std::int64_t, kMaxRank> d_{};
  int rank_ = 0;
};

// A block of bytes owned through the accountant of the context current when it is made
// (current_context().accountant), which it keeps and gives the bytes back to when destroyed, on
// any thread.
class Storage {
 public:
  Storage(MemCategory category, std::size_t bytes);
  // Bytes owned elsewhere (a read-only file mapping), kept alive by `owner` for the Storage's
  // lifetime. No accountant allocates or counts them: they are clean, file-backed pages the OS
  // can drop and fault back in. Writing to them is a fault, so only frozen tensors use this.
  Storage(std::shared_ptr<const void> owner, const void* data, std::size_t bytes,
          MemCategory category);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  MemCategory category() const { return category_; }
  // True for bytes of a file mapping (the second constructor).
  bool mapped() const { return owner_ != nullptr; }

 private:
  std::shared_ptr<const void> owner_;
  std::shared_ptr<Accountant> accountant_;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  MemCategory category_;
};

class Node;

struct TensorImpl {
  Shape shape;
  DType dtype = DType::F32;
  std::shared_ptr<Storage> storage;  // values, int8 codes (q8) or packed nibbles (q4, nf4, pal4)
  // q8: (N) floats; q4: (N, ceil(K/32)); nf4: (N, ceil(K/64)); pal4: (ceil(N/16), 16) palettes
  std::shared_ptr<Storage> scales;
  bool requires_grad = false;        // leaf flag; outputs of recorded ops have grad_fn instead
  std::shared_ptr<Node> grad_fn;     // the op that made this tensor (recorded ops only)
  std::shared_ptr<TensorImpl> grad;  // accumulated gradient of a leaf
  std::string name;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Uninitialised storage. Quantized dtypes get room for codes and scales.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32,
                      MemCategory category = MemCategory::Activations);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32,
                      MemCategory category = MemCategory::Activations);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     MemCategory category = MemCategory::Activations);
  // Copies values into a new tensor of the given float or int dtype.
  static Tensor from_values(const Shape& shape, std::span<const double> values,
                            DType dtype = DType::F32,
                            MemCategory category = MemCategory::Activations);
  static Tensor from_floats(const Shape& shape, std::span<const float> values,
                            MemCategory category = MemCategory::Activations);
  static Tensor from_ints(const Shape& shape, std::span<const std::int32_t> values,
                          MemCategory category = MemCategory::Activations);
  // A frozen F32 or quantized tensor over bytes of a read-only mapping kept alive by `owner`, used
  // in place (no copy, not counted by the accountant): `values` holds storage_bytes(shape, dtype)
  // bytes (values, int8 codes or packed nibbles), `scales` scale_count(shape, dtype) floats
  // (nullptr for F32). Both must be 4-byte aligned.
  static Tensor mapped(const Shape& shape, DType dtype, std::shared_ptr<const void> owner,
                       const void* values, const float* scales,
                       MemCategory category = MemCategory::BaseWeights);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  int rank() const { return impl_->shape.rank(); }
  std::int64_t dim(int i) const { return impl_->shape[i]; }
  std::int64_t numel() const { return impl_->shape.numel(); }
  DType dtype() const { return impl_->dtype; }
  MemCategory category() const { return impl_->storage->category(); }
  // True when the values are used in place from a file mapping (Tensor::mapped).
  bool is_mapped() const { return impl_->storage->mapped(); }
  // Bytes of storage (codes and scales for quantized tensors).
  std::size_t nbytes() const;

  // Typed access; throws std::logic_error if T does not match the dtype
  // (F32 float, F64 double, I32 int32_t, Q8 int8_t, Q4 / NF4 / PAL4 uint8_t).
  template <class T> T* data() const;
  // Scales of a quantized tensor (scale_count() floats: Q8 N; Q4 N * ceil(K/32); NF4
  // N * ceil(K/64); PAL4 the palettes, ceil(N/16) * 16).
  float* scales() const;

  // Autograd. requires_grad() is true for a leaf marked with set_requires_grad(true) and for the
  // output of an op recorded while gradients were enabled.
  bool requires_grad() const { return impl_->requires_grad || impl_->grad_fn != nullptr; }
  // Marks a float leaf as trainable. Throws with a hint for quantized, integer or non-leaf tensors.
  Tensor& set_requires_grad(bool on = true);
  bool is_leaf() const { return impl_->grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  // The accumulated gradient of a leaf (undefined until a backward reached it).
  Tensor grad() const;
  // Replaces the gradient of a leaf (an undefined tensor removes it).
  void set_grad(const Tensor& g);
  // Fills an existing gradient with zeros (keeps the buffer).
  void zero_grad();

  // Same storage, no autograd history, requires_grad false.
  Tensor detach() const;
  // Deep copy (no autograd history).
  Tensor clone(MemCategory category = MemCategory::Activations) const;
  // Same storage viewed with another shape of the same numel (no autograd; ops::reshape records).
  Tensor view(const Shape& shape) const;
  // Converts between F32 and F64, and dequantizes quantized tensors to F32/F64. No autograd.
  Tensor to(DType dtype, MemCategory category = MemCategory::Activations) const;

  const std::string& name() const { return impl_->name; }
  Tensor& set_name(std::string name);
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }

  // The single value of a one-element float or int tensor.
  double item() const;
  // All values as doubles (quantized tensors are dequantized). For tests and small outputs.
  std::vector<double> to_vector() const;
  // Fills a float tensor with one value.
  void fill(double value);

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Bytes a tensor of this shape and dtype needs for its values or codes (without scales).
std::size_t storage_bytes(const Shape& shape, DType dtype);
// Number of float scales of a quantized (N, K) tensor.
std::int64_t scale_count(const Shape& shape, DType dtype);
// Bytes the accountant counts for a tensor of this shape and dtype made by Tensor::empty: its
// values or codes and, when quantized, its scales (or palettes), each block rounded as accounted_bytes() rounds it.
std::size_t accounted_tensor_bytes(const Shape& shape, DType dtype);

// Turns off recording of ops for its lifetime (inference, optimizer updates, checkpoint forward).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};
// True when ops record for backward (the default on every thread).
bool grad_enabled();

}  // namespace edgetune
