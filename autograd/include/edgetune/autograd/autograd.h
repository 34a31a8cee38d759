// The tape: define-by-run reverse-mode autodiff.
//
// Each op that runs while gradients are enabled and has an input that requires grad records a
// Node on its output (grad_fn). A node holds exactly what its backward needs (saved tensors are
// detached, so a node never keeps its own output's graph alive) and one Edge per input: to the
// node that made the input, to a leaf that requires grad, or nothing.
//
// backward(root) walks the nodes reachable from root in reverse topological order without
// recursion (Kahn's algorithm on consumer counts; ties broken by recording order, newest first,
// so gradients of activations are freed as early as possible). Gradients accumulate with `+=`:
// into a leaf's .grad (allocated zero-filled on first use, category Grads), and into one transient
// buffer per intermediate tensor (category Workspace), freed as soon as its node has run.
// After a node's backward, its saved tensors are released: a graph can be walked once.
//
// Per-example gradients (DP-SGD's clipping in one backward over a batch): backward() with a
// PerExampleGrads sends the gradient of each of its leaves, example by example, into a (B, numel)
// buffer instead of the leaf's .grad. The rows of every activation are example-major (B, ...), so
// an op that accumulates a weight's gradient over rows knows which rows are whose. Only ops that
// can split their weight gradient by example take part (linear: W and b; layer_norm: gamma and
// beta); any other op asked for the gradient of one of those leaves throws.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "edgetune/autograd/tensor.h"
#include "edgetune/core/context.h"

namespace edgetune {

class Node;

// Where the gradient of one input of a node goes.
struct Edge {
  std::shared_ptr<Node> node;        // the op that produced the input, or
  std::shared_ptr<TensorImpl> leaf;  // the leaf tensor that requires grad, or neither
  bool defined() const { return node != nullptr || leaf != nullptr; }
};

// The per-example gradients of some leaves over a batch of B examples: one zero-filled buffer
// (B, numel) of the leaf's dtype per leaf, counted as gradients. Row b of a buffer is the gradient
// of example b's own loss; a leaf used by several ops gets the sum of their contributions per
// example (as its .grad would).
class PerExampleGrads {
 public:
  // examples: B >= 1; leaves: float tensors (leaves of the graph), each at most once.
  PerExampleGrads(std::int64_t examples, std::span<const Tensor> leaves);
  std::int64_t examples() const { return examples_; }
  std::size_t size() const { return leaves_.size(); }
  // (B, numel) of the k-th leaf given to the constructor.
  const Tensor& grads(std::size_t k) const { return grads_[k]; }
  // The buffer of `leaf`, or nullptr when it is not one of the leaves.
  Tensor* find(const TensorImpl* leaf);
  // Example-major rows of an activation (rows = B * rows_per_example): rows / B. Throws
  // std::logic_error naming `op` when rows is not a multiple of B.
  std::int64_t rows_per_example(std::int64_t rows, const char* op) const;

 private:
  std::int64_t examples_;
  std::vector<const TensorImpl*> leaves_;
  std::vector<Tensor> grads_;  // (B, numel) per leaf
};

// Hands a node the buffers its backward adds into.
class GradSink {
 public:
  virtual ~GradSink() = default;
  // True when input i needs a gradient.
  virtual bool needed(int i) const = 0;
  // The gradient buffer of input i (same shape and dtype as the input), zero-filled when it is
  // first asked for. Backward code must add into it (`+=`), never overwrite it.
  virtual Tensor& at(int i) = 0;
  // In a backward with per-example gradients, when input i is one of their leaves: its (B, numel)
  // buffer, which the op adds each example's part into (`+=`) instead of calling at(i). Otherwise
  // nullptr, and at(i) is the place.
  virtual Tensor* per_example(int /*i*/) { return nullptr; }
  // The per-example gradients this backward runs with (null: none), for nested backwards.
  virtual PerExampleGrads* per_example_grads() const { return nullptr; }
};

class Node {
 public:
  // Tears down the chain of producers iteratively: a graph of any depth is freed without
  // recursing through destructors.
  virtual ~Node();
  virtual const char* name() const = 0;
  // Adds this op's vector-Jacobian product for dout (shape out_shape) into grads.at(i).
  virtual void backward(const Tensor& dout, GradSink& grads) = 0;
  // Drops what the forward saved; called once backward has run.
  virtual void release() {}

  std::vector<Edge> inputs;
  Shape out_shape;
  DType out_dtype = DType::F32;
  std::uint64_t sequence = 0;
  bool released = false;
};

// True when an op over these inputs must record: gradients are enabled and one of them requires
// grad. Also notes, for checkpoint(), that a tensor requiring grad was used.
bool should_record(std::initializer_list<const Tensor*> inputs);

// Attaches `node` to `out` as its grad_fn, with one edge per input (empty when the input does not
// require grad). `inputs` must match the order the node's backward uses for grads.at(i).
void record(Tensor& out, std::shared_ptr<Node> node, std::initializer_list<const Tensor*> inputs);

// Runs backward from root. droot is the incoming gradient (shape of root); undefined means 1 and
// root must have one element. Throws if root does not require grad or the graph was walked.
// With per_example, the gradients of its leaves go into its buffers (their .grad is untouched),
// and an op that cannot split the gradient of one of them by example throws std::logic_error.
void backward(const Tensor& root, const Tensor& droot = Tensor(),
              PerExampleGrads* per_example = nullptr);

// checkpoint(fn, inputs): runs fn(inputs) without recording and keeps only the inputs; during
// backward it re-runs fn with recording (restoring the dropout generator so masks repeat) and
// back-propagates through that, so gradients are identical to running fn directly. Parameters
// that fn uses without receiving them in `inputs` (a layer's weights) get their gradients too.
// fn must be deterministic given its inputs and the dropout generator. When backward returns or
// throws (fn may throw in the re-run), the current context's dropout generator and this thread's
// grad mode are what they were before backward.
using CheckpointFn = std::function<Tensor(const std::vector<Tensor>&)>;
Tensor checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs);

// The dropout generator (RngState, context.h) of the current context: a session's own, so two
// sessions on two threads each draw their own reproducible masks.
RngState& dropout_rng();
void manual_seed(std::uint64_t seed);  // sets the current context's dropout generator to (seed, 0)

// While alive, the current context's dropout masks are those of rows [row_offset, row_offset +
// rows) of a batch of batch_rows rows (RngState): a micro-batch's forward draws its part of the
// batch's masks. The tensors dropout sees then hold those rows outermost (rows x anything, or the
// rows' tokens flattened). Set it with the generator's counter where the batch's forward would
// start it: each micro-batch starts from there and ends where the whole batch's forward would.
class DropoutRows {
 public:
  DropoutRows(std::uint64_t row_offset, std::uint64_t rows, std::uint64_t batch_rows);
  ~DropoutRows();
  DropoutRows(const DropoutRows&) = delete;
  DropoutRows& operator=(const DropoutRows&) = delete;

 private:
  RngState& rng_;
  RngState saved_;
};

// A uniform draw in [0, 1) for (seed, index): the splitmix64 finalizer of seed + index * phi,
// top 53 bits. Inline: dropout calls it once per element.
inline double counter_uniform(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

}  // namespace edgetune
