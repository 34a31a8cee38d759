// Gradient norm and clipping (clip.h). The sum of squares is split into fixed blocks of each
// gradient; blocks may run on any thread, but their partial sums are added in one fixed order
// afterwards, so the norm is the same bits whatever the number of threads.
#include "edgetune/optim/clip.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "edgetune/autograd/kernels.h"

namespace edgetune::optim {
namespace {

// Elements per block of the reduction; also the unit of parallel work.
constexpr std::int64_t kBlock = 8192;
// Below this many elements in all, everything runs on the calling thread.
constexpr std::int64_t kParallelGrain = 32768;
// Independent accumulators within a block: lets the compiler keep them in one vector register
// without reassociating anything (the order of additions is fixed by the code).
constexpr int kLanes = 8;

template <class T>
double sum_of_squares(const T* x, std::int64_t n) {
  double acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const double v = static_cast<double>(x[i + j]);
      acc[j] += v * v;
    }
  }
  for (int j = 0; i < n; ++i, ++j) {
    const double v = static_cast<double>(x[i]);
    acc[j] += v * v;
  }
  double s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

struct Block {
  Tensor grad;
  std::int64_t begin, end;
};

// The defined, checked grads of params, cut into blocks.
std::vector<Block> blocks_of(std::span<const Param> params, const char* who,
                             std::int64_t* elements) {
  std::vector<Block> blocks;
  *elements = 0;
  for (const Param& p : params) {
    if (!p.tensor.defined()) {
      throw std::invalid_argument(std::string(who) + ": param '" + p.name + "' has no tensor");
    }
    Tensor g = p.tensor.grad();
    if (!g.defined()) continue;
    if (!is_float(g.dtype())) {
      throw std::invalid_argument(std::string(who) + ": the grad of param '" + p.name + "' is " +
                                  dtype_name(g.dtype()) + ", not f32 or f64");
    }
    const std::int64_t n = g.numel();
    for (std::int64_t b = 0; b < n; b += kBlock) blocks.push_back({g, b, std::min(n, b + kBlock)});
    *elements += n;
  }
  return blocks;
}

double norm_of(const std::vector<Block>& blocks, std::int64_t elements) {
  std::vector<double> partial(blocks.size());
  const std::int64_t count = static_cast<std::int64_t>(blocks.size());
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (elements >= kParallelGrain)
  for (std::int64_t i = 0; i < count; ++i) {
    const Block& b = blocks[static_cast<std::size_t>(i)];
    partial[static_cast<std::size_t>(i)] =
        b.grad.dtype() == DType::F32
            ? sum_of_squares(b.grad.data<float>() + b.begin, b.end - b.begin)
            : sum_of_squares(b.grad.data<double>() + b.begin, b.end - b.begin);
  }
  double total = 0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

// torch: clip_coef = max_norm / (total_norm + 1e-6) on a 0-dim tensor of the grads' dtype, which
// Python evaluates as (total_norm + 1e-6).reciprocal() * max_norm; then clamp(max=1.0) (a NaN
// stays NaN) and grad.mul_(clip_coef_clamped). Multiplying by 1 changes nothing, so a
// coefficient of 1 skips the pass over the grads.
template <class T>
void scale_block(T* x, std::int64_t n, double max_norm, double total_norm) {
  const T coef =
      static_cast<T>(max_norm) * (T(1) / (static_cast<T>(total_norm) + static_cast<T>(1e-6)));
  if (coef >= T(1)) return;
  for (std::int64_t i = 0; i < n; ++i) x[i] *= coef;
}

void check_max_norm(double max_norm) {
  if (!(max_norm >= 0)) {
    std::ostringstream s;
    s << "clip_grad_norm: max_norm must be >= 0 (0 turns clipping off), got " << max_norm;
    throw std::invalid_argument(s.str());
  }
}

void scale_blocks(const std::vector<Block>& blocks, std::int64_t elements, double max_norm,
                  double total_norm) {
  if (max_norm == 0) return;
  const std::int64_t count = static_cast<std::int64_t>(blocks.size());
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (elements >= kParallelGrain)
  for (std::int64_t i = 0; i < count; ++i) {
    const Block& b = blocks[static_cast<std::size_t>(i)];
    if (b.grad.dtype() == DType::F32) {
      scale_block(b.grad.data<float>() + b.begin, b.end - b.begin, max_norm, total_norm);
    } else {
      scale_block(b.grad.data<double>() + b.begin, b.end - b.begin, max_norm, total_norm);
    }
  }
}

}  // namespace

double grad_norm(std::span<const Param> params) {
  std::int64_t elements = 0;
  const std::vector<Block> blocks = blocks_of(params, "grad_norm", &elements);
  return norm_of(blocks, elements);
}

void clip_grads_to_norm(std::span<Param> params, double max_norm, double total_norm) {
  check_max_norm(max_norm);
  std::int64_t elements = 0;
  const std::vector<Block> blocks = blocks_of(params, "clip_grads_to_norm", &elements);
  scale_blocks(blocks, elements, max_norm, total_norm);
}

double clip_grad_norm(std::span<Param> params, double max_norm) {
  check_max_norm(max_norm);
  std::int64_t elements = 0;
  const std::vector<Block> blocks = blocks_of(params, "clip_grad_norm", &elements);
  const double total = norm_of(blocks, elements);
  scale_blocks(blocks, elements, max_norm, total);
  return total;
}

}  // namespace edgetune::optim
