// A Hugging Face BertLayer composed from the autograd ops, for the composite gradient checks and
// the PyTorch golden test. Parameters are passed in HF order so gradcheck can perturb each.
#pragma once

#include <array>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "edgetune/autograd/ops.h"

namespace edgetune::test {

// HF names of the layer's parameters, relative to `bert.encoder.layer.{i}.`, in the order the
// functions below take them.
inline const std::vector<std::string>& encoder_param_names() {
  static const std::vector<std::string> names = {
      "attention.self.query.weight",       "attention.self.query.bias",
      "attention.self.key.weight",         "attention.self.key.bias",
      "attention.self.value.weight",       "attention.self.value.bias",
      "attention.output.dense.weight",     "attention.output.dense.bias",
      "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
      "intermediate.dense.weight",         "intermediate.dense.bias",
      "output.dense.weight",               "output.dense.bias",
      "output.LayerNorm.weight",           "output.LayerNorm.bias"};
  return names;
}

// How the layer applies a linear layer: lin(x, p, i) with weight p[i] and bias p[i + 1].
using LinearFn = std::function<Tensor(const Tensor& x, const Tensor* p, int i)>;
inline Tensor plain_linear(const Tensor& x, const Tensor* p, int i) {
  return ops::linear(x, p[i], p[i + 1]);
}

// Multi-head self-attention context (before the output projection).
// x (B, T, C); p[0..5] = Wq, bq, Wk, bk, Wv, bv; mask additive (B, T) -> (B, T, C).
inline Tensor attention_context(const Tensor& x, const Tensor* p, const Tensor& mask, int heads,
                                const LinearFn& lin = plain_linear) {
  const std::int64_t b = x.dim(0), t = x.dim(1), c = x.dim(2), d = c / heads;
  static const std::array<int, 4> split{0, 2, 1, 3};
  auto heads_of = [&](const Tensor& y) {  // (B, T, C) -> (B, H, T, D)
    return ops::permute(ops::reshape(y, {b, t, heads, d}), split);
  };
  Tensor q = heads_of(lin(x, p, 0));
  Tensor k = heads_of(lin(x, p, 2));
  Tensor v = heads_of(lin(x, p, 4));
  Tensor scores = ops::scale(ops::matmul(q, k, false, true), 1.0 / std::sqrt(double(d)));
  Tensor probs = ops::softmax(scores, mask);
  Tensor ctx = ops::matmul(probs, v);                             // (B, H, T, D)
  return ops::reshape(ops::permute(ctx, split), {b, t, c});  // merge heads
}

// One BertLayer. p: the 16 parameters in encoder_param_names() order.
inline Tensor encoder_layer(const Tensor& x, const Tensor* p, const Tensor& mask, int heads,
                            double eps, const LinearFn& lin = plain_linear) {
  Tensor ctx = attention_context(x, p, mask, heads, lin);
  Tensor a = ops::layer_norm(ops::add(lin(ctx, p, 6), x), p[8], p[9], eps);
  Tensor i = ops::gelu(lin(a, p, 10));
  return ops::layer_norm(ops::add(lin(i, p, 12), a), p[14], p[15], eps);
}

}  // namespace edgetune::test
