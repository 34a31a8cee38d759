// A Houlsby adapter (Houlsby et al. 2019): a bottleneck with a residual connection,
//   adapter(h) = h + up(act(down(h))),   down (m, C) + bias (m),  up (C, m) + bias (C),
// inserted after a sub-layer's output projection and before its residual LayerNorm. Initialised
// near identity as in the paper: weights from a normal(0, 0.01) truncated at two standard
// deviations, biases zero, so adapter(h) ~ h at the start.
#pragma once

#include <cstdint>
#include <string>

#include "edgetune/autograd/tensor.h"

namespace edgetune::adapters {

enum class BottleneckAct { Gelu, Relu };

class Houlsby {
 public:
  // A fresh adapter for width C (hidden) and bottleneck m (size), drawn from seed.
  Houlsby(std::int64_t hidden, std::int64_t size, BottleneckAct act, std::uint64_t seed);
  // From existing tensors (loaded from a file); they are made float32 trainable leaves.
  Houlsby(Tensor down_w, Tensor down_b, Tensor up_w, Tensor up_b, BottleneckAct act);

  // h + up(act(down(h))).  h (..., C).
  Tensor forward(const Tensor& h) const;

  BottleneckAct act() const { return act_; }
  Tensor down_w;  // (m, C)
  Tensor down_b;  // (m)
  Tensor up_w;    // (C, m)
  Tensor up_b;    // (C)

 private:
  BottleneckAct act_;
};

const char* bottleneck_act_name(BottleneckAct a);       // "gelu", "relu"
BottleneckAct parse_bottleneck_act(const std::string& s);  // throws std::invalid_argument

}  // namespace edgetune::adapters
