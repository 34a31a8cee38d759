// Houlsby adapters (see houlsby.h).
#include "edgetune/adapters/houlsby.h"

#include <stdexcept>

#include "edgetune/adapters/init.h"
#include "edgetune/autograd/ops.h"

namespace edgetune::adapters {

const char* bottleneck_act_name(BottleneckAct a) { return a == BottleneckAct::Gelu ? "gelu" : "relu"; }

BottleneckAct parse_bottleneck_act(const std::string& s) {
  if (s == "gelu") return BottleneckAct::Gelu;
  if (s == "relu") return BottleneckAct::Relu;
  throw std::invalid_argument("adapter non-linearity must be gelu or relu, got '" + s + "'");
}

Houlsby::Houlsby(std::int64_t hidden, std::int64_t size, BottleneckAct act, std::uint64_t seed)
    : down_w(normal_param({size, hidden}, 0.01, seed, 2.0)),
      down_b(zeros_param({size})),
      up_w(normal_param({hidden, size}, 0.01, seed + 1, 2.0)),
      up_b(zeros_param({hidden})),
      act_(act) {
  if (size <= 0) throw std::invalid_argument("adapter size must be positive");
}

Houlsby::Houlsby(Tensor dw, Tensor db, Tensor uw, Tensor ub, BottleneckAct act)
    : down_w(trainable_copy(dw)), down_b(trainable_copy(db)), up_w(trainable_copy(uw)),
      up_b(trainable_copy(ub)), act_(act) {
  const bool ok = down_w.rank() == 2 && up_w.rank() == 2 && down_w.dim(0) == up_w.dim(1) &&
                  down_w.dim(1) == up_w.dim(0) && down_b.numel() == down_w.dim(0) &&
                  up_b.numel() == up_w.dim(0);
  if (!ok) {
    throw std::invalid_argument("adapter tensors do not fit: down " + down_w.shape().str() +
                                ", up " + up_w.shape().str() + " (expected (m, C) and (C, m))");
  }
}

Tensor Houlsby::forward(const Tensor& h) const {
  Tensor z = ops::linear(h, down_w, down_b);
  z = act_ == BottleneckAct::Gelu ? ops::gelu(z) : ops::relu(z);
  return ops::add(h, ops::linear(z, up_w, up_b));
}

}  // namespace edgetune::adapters
