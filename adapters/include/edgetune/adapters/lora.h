// LoRA (Hu et al. 2021) on one Linear layer, as PEFT implements it:
//   y = base(x) + scaling * B(A(dropout(x))),  scaling = alpha / r,
//   A = lora_A.weight (r, K), Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(K), 1/sqrt(K));
//   B = lora_B.weight (N, r), zeros, so a fresh LoRA leaves the model's output unchanged.
// The base weight may be quantized (frozen); A and B are float32 and trainable. With freeze_a
// (LoRA-FA), A stays frozen: backward then needs only x A^T (N x r per row) instead of x.
#pragma once

#include <cstdint>

#include "edgetune/autograd/tensor.h"

namespace edgetune::adapters {

struct LoraOptions {
  int rank = 8;          // r
  double alpha = 16;     // scaling = alpha / r
  double dropout = 0.0;  // on the LoRA input only, as PEFT's lora_dropout
  bool freeze_a = false; // LoRA-FA: A is frozen after initialisation
};

class Lora {
 public:
  // A fresh LoRA for a Linear of `in` (K) inputs and `out` (N) outputs; A drawn from seed.
  Lora(std::int64_t in, std::int64_t out, const LoraOptions& options, std::uint64_t seed);
  // A LoRA from existing tensors (loaded from an adapter file); they are made float32 leaves.
  Lora(Tensor a, Tensor b, const LoraOptions& options);

  // scaling * B(A(dropout(x))).  x (..., K) -> (..., N).
  Tensor delta(const Tensor& x, bool training) const;
  // W + scaling * B A, as float32 (N, K): the merged weight (W f32 or quantized; dequantized).
  Tensor merge_into(const Tensor& w) const;

  double scaling() const { return options_.alpha / options_.rank; }
  const LoraOptions& options() const { return options_; }
  Tensor a;  // (r, K) lora_A.weight
  Tensor b;  // (N, r) lora_B.weight

 private:
  LoraOptions options_;
};

}  // namespace edgetune::adapters
