// LoRA (see lora.h).
#include "edgetune/adapters/lora.h"

#include <cmath>
#include <stdexcept>

#include "edgetune/adapters/init.h"
#include "edgetune/autograd/ops.h"

namespace edgetune::adapters {

Lora::Lora(std::int64_t in, std::int64_t out, const LoraOptions& options, std::uint64_t seed)
    : options_(options) {
  if (options.rank <= 0) throw std::invalid_argument("LoRA rank must be positive");
  // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in).
  a = uniform_param({options.rank, in}, 1.0 / std::sqrt(static_cast<double>(in)), seed);
  b = zeros_param({out, options.rank});
  if (options.freeze_a) a.set_requires_grad(false);
}

Lora::Lora(Tensor a_in, Tensor b_in, const LoraOptions& options) : options_(options) {
  if (a_in.rank() != 2 || b_in.rank() != 2 || a_in.dim(0) != b_in.dim(1)) {
    throw std::invalid_argument("LoRA tensors do not fit: lora_A " + a_in.shape().str() +
                                " and lora_B " + b_in.shape().str() +
                                " (expected (r, in) and (out, r))");
  }
  options_.rank = static_cast<int>(a_in.dim(0));
  a = trainable_copy(a_in);
  b = trainable_copy(b_in);
  if (options_.freeze_a) a.set_requires_grad(false);
}

Tensor Lora::delta(const Tensor& x, bool training) const {
  const Tensor in = ops::dropout(x, options_.dropout, training);
  return ops::scale(ops::linear(ops::linear(in, a), b), scaling());
}

Tensor Lora::merge_into(const Tensor& w) const {
  Tensor merged = w.to(DType::F32, MemCategory::BaseWeights);  // dequantizes a quantized W
  const std::int64_t n = merged.dim(0), k = merged.dim(1), r = options_.rank;
  float* m = merged.data<float>();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const float s = static_cast<float>(scaling());
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t t = 0; t < r; ++t) {
      const float bi = s * pb[i * r + t];
      for (std::int64_t j = 0; j < k; ++j) m[i * k + j] += bi * pa[t * k + j];
    }
  }
  return merged;
}

}  // namespace edgetune::adapters
