// Differentiable ops. Each records a node (when gradients are enabled and an input requires grad)
// whose backward adds, with `+=`, the vector-Jacobian product into its inputs' gradients. The
// forward and backward of each op live side by side in src/ops_*.cpp.
//
// Float inputs of one op share a dtype (F32 for training, F64 for gradient checks). Outputs are
// new tensors counted as activations. Shapes use the letters of ARCHITECTURE.md.
#pragma once

#include <cstdint>
#include <span>

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/qgemm.h"
#include "edgetune/autograd/tensor.h"

namespace edgetune::ops {

// Settings of one linear call. compute = Compute::Int8 runs y and dx through the integer kernels
// when W is quantized and x is f32 (qgemm.h); the default Compute::F32 is the float path.
struct LinearOptions {
  Compute compute = Compute::F32;
};

// y = x W^T + b.  x (..., K); W (N, K) stored f32/f64 or quantized; b (N) or undefined -> y (..., N).
// A quantized or non-trainable W gets no gradient and its backward keeps nothing but W; x is kept
// only when W requires grad (dW = dy^T x). The backward's dx uses the same options.compute.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor(),
              const LinearOptions& options = {});

// a + b, a * b.  b has a's shape or a suffix of it (broadcast over a's leading dimensions; its
// gradient is summed over them).
Tensor add(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
// s * x for a constant s.
Tensor scale(const Tensor& x, double s);

// GELU, erf form: x/2 (1 + erf(x / sqrt 2)) (BERT's "gelu").
Tensor gelu(const Tensor& x);
// GELU, tanh approximation (Hugging Face "gelu_new").
Tensor gelu_tanh(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor tanh(const Tensor& x);

// LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * gamma + beta, biased variance.
// x (..., C); gamma, beta (C). Fused: the forward keeps mean and 1/std per row.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps);

// Softmax along the last dimension of x + mask. x (B, ..., S); mask additive (B, S), broadcast over
// the middle dimensions (an attention mask: 0 to keep a key, a large negative to drop it), or
// undefined. The mask gets no gradient. The forward keeps its output.
Tensor softmax(const Tensor& x, const Tensor& mask = Tensor());

// Rows of table picked by ids.  table (V, C) stored f32/f64 or quantized; ids I32 (...) -> (..., C).
// Backward scatter-adds into a trainable table; a frozen table gets nothing. As torch's
// padding_idx, the row padding_idx (if >= 0) gets no gradient.
Tensor embedding(const Tensor& table, const Tensor& ids, std::int32_t padding_idx = -1);

// Rows of x picked by idx.  x (N, C) float; idx I32 (M) -> (M, C); scatter-add backward.
Tensor gather_rows(const Tensor& x, const Tensor& idx);

// Inverted dropout: in training, each element is zeroed with probability p and the rest scaled by
// 1/(1-p), drawing from the current context's dropout generator (autograd.h). Identity when p == 0
// or not training. The mask is not stored: backward redraws it from the generator's (seed, counter).
Tensor dropout(const Tensor& x, double p, bool training);

// Same data, another shape of the same numel.
Tensor reshape(const Tensor& x, const Shape& shape);
// Axes reordered: out.dim(i) = x.dim(perm[i]). Copies.
Tensor permute(const Tensor& x, std::span<const int> perm);

// Batched matrix product over the leading dimensions.  a (..., M, K) (or (..., K, M) with
// trans_a), b (..., K, N) (or (..., N, K) with trans_b) -> (..., M, N). Leading dims must match.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// Sum / mean of all elements -> a scalar of shape ().
Tensor sum(const Tensor& x);
Tensor mean(const Tensor& x);

// Cross-entropy from logits, as torch.nn.functional.cross_entropy with reduction 'mean':
//   loss = sum_i w[y_i] * (logsumexp(z_i) - z_i[y_i]) / sum_i w[y_i]  over rows with y_i != ignore.
// logits (N, K); labels I32 (N) in [0, K) or ignore_index; weight (K) or undefined (all ones).
// Fused log-softmax: the forward keeps the row probabilities. All rows ignored gives NaN, as torch.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, const Tensor& weight = Tensor(),
                     std::int32_t ignore_index = -100);

// Binary cross-entropy with logits, mean over all elements, as
// torch.nn.functional.binary_cross_entropy_with_logits:
//   loss = mean(max(z, 0) - z t + log(1 + exp(-|z|))).  logits and targets share a shape.
Tensor bce_with_logits(const Tensor& logits, const Tensor& targets);

}  // namespace edgetune::ops
