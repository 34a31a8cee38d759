// The backward engine and activation checkpointing (see autograd.h).
#include "edgetune/autograd/autograd.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <queue>
#include <span>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/profile.h"

namespace edgetune {

namespace {

std::atomic<std::uint64_t> g_sequence{0};
// Counts ops that saw an input requiring grad, recorded or not (checkpoint() reads it).
thread_local std::uint64_t t_grad_uses = 0;

MemCategory leaf_grad_category(const TensorImpl& leaf) {
  const MemCategory c = leaf.storage->category();
  return (c == MemCategory::Trainable || c == MemCategory::BaseWeights) ? MemCategory::Grads
                                                                         : MemCategory::Workspace;
}

Tensor& leaf_grad(const std::shared_ptr<TensorImpl>& leaf, Tensor& holder) {
  if (!leaf->grad) {
    leaf->grad = Tensor::zeros(leaf->shape, leaf->dtype, leaf_grad_category(*leaf)).impl();
  }
  holder = Tensor(leaf->grad);
  return holder;
}

class EngineSink : public GradSink {
 public:
  EngineSink(Node& node, std::unordered_map<Node*, Tensor>& buffers, PerExampleGrads* per_example)
      : node_(node), buffers_(buffers), per_example_(per_example),
        leaf_holders_(node.inputs.size()) {}

  bool needed(int i) const override { return node_.inputs[static_cast<size_t>(i)].defined(); }

  Tensor* per_example(int i) override {
    const Edge& e = node_.inputs.at(static_cast<size_t>(i));
    return per_example_ && e.leaf ? per_example_->find(e.leaf.get()) : nullptr;
  }
  PerExampleGrads* per_example_grads() const override { return per_example_; }

  Tensor& at(int i) override {
    const Edge& e = node_.inputs.at(static_cast<size_t>(i));
    if (e.leaf) {
      if (per_example(i) != nullptr) {
        throw std::logic_error(std::string(node_.name()) + ": cannot give per-example gradients of '" +
                               e.leaf->name + "' (input " + std::to_string(i) +
                               "). Hint: train this tensor with example-at-a-time clipping.");
      }
      return leaf_grad(e.leaf, leaf_holders_[static_cast<size_t>(i)]);
    }
    if (!e.node) {
      throw std::logic_error(std::string(node_.name()) + ": gradient asked for input " +
                             std::to_string(i) + ", which does not require grad");
    }
    auto it = buffers_.find(e.node.get());
    if (it == buffers_.end()) {
      it = buffers_
               .emplace(e.node.get(),
                        Tensor::zeros(e.node->out_shape, e.node->out_dtype, MemCategory::Workspace))
               .first;
    }
    return it->second;
  }

 private:
  Node& node_;
  std::unordered_map<Node*, Tensor>& buffers_;
  PerExampleGrads* per_example_;
  std::vector<Tensor> leaf_holders_;
};

// Sets a variable for its own lifetime and puts the previous value back when it goes out of scope,
// also when an exception leaves the scope.
template <class T>
class ScopedAssign {
 public:
  ScopedAssign(T& target, T value) : target_(target), previous_(std::exchange(target, value)) {}
  ~ScopedAssign() { target_ = previous_; }
  ScopedAssign(const ScopedAssign&) = delete;
  ScopedAssign& operator=(const ScopedAssign&) = delete;

 private:
  T& target_;
  T previous_;
};

struct NewestFirst {
  bool operator()(const Node* a, const Node* b) const { return a->sequence < b->sequence; }
};

}  // namespace

Node::~Node() {
  thread_local bool draining = false;
  thread_local std::vector<std::shared_ptr<Node>> pending;
  for (Edge& e : inputs) {
    if (e.node && e.node.use_count() == 1) pending.push_back(std::move(e.node));
  }
  if (draining) return;  // an outer destructor is emptying `pending`
  const ScopedAssign<bool> drain(draining, true);
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    n.reset();  // its destructor only moves its producers onto `pending`
  }
}

bool should_record(std::initializer_list<const Tensor*> inputs) {
  bool any = false;
  for (const Tensor* t : inputs) {
    if (t != nullptr && t->defined() && t->requires_grad()) any = true;
  }
  if (any) ++t_grad_uses;
  return any && grad_enabled();
}

namespace {
void attach(Tensor& out, std::shared_ptr<Node> node, std::span<const Tensor* const> inputs) {
  node->inputs.reserve(inputs.size());
  for (const Tensor* t : inputs) {
    Edge e;
    if (t != nullptr && t->defined() && t->requires_grad()) {
      if (t->grad_fn()) {
        e.node = t->grad_fn();
      } else {
        e.leaf = t->impl();
      }
    }
    node->inputs.push_back(std::move(e));
  }
  node->out_shape = out.shape();
  node->out_dtype = out.dtype();
  node->sequence = g_sequence.fetch_add(1, std::memory_order_relaxed);
  out.impl()->grad_fn = std::move(node);
}
}  // namespace

void record(Tensor& out, std::shared_ptr<Node> node, std::initializer_list<const Tensor*> inputs) {
  attach(out, std::move(node), std::span<const Tensor* const>(inputs.begin(), inputs.size()));
}

PerExampleGrads::PerExampleGrads(std::int64_t examples, std::span<const Tensor> leaves)
    : examples_(examples) {
  if (examples < 1) throw std::invalid_argument("PerExampleGrads: needs at least one example");
  for (const Tensor& t : leaves) {
    if (!t.defined() || !is_float(t.dtype()) || !t.is_leaf()) {
      throw std::invalid_argument("PerExampleGrads: '" + t.name() + "' is not a float leaf tensor");
    }
    leaves_.push_back(t.impl().get());
    grads_.push_back(Tensor::zeros(Shape{examples, t.numel()}, t.dtype(), MemCategory::Grads));
  }
}

Tensor* PerExampleGrads::find(const TensorImpl* leaf) {
  for (std::size_t k = 0; k < leaves_.size(); ++k) {
    if (leaves_[k] == leaf) return &grads_[k];
  }
  return nullptr;
}

std::int64_t PerExampleGrads::rows_per_example(std::int64_t rows, const char* op) const {
  if (rows % examples_ != 0) {
    throw std::logic_error(std::string(op) + ": " + std::to_string(rows) +
                           " rows are not whole examples of a batch of " +
                           std::to_string(examples_));
  }
  return rows / examples_;
}

void backward(const Tensor& root, const Tensor& droot, PerExampleGrads* per_example) {
  if (!root.defined() || !root.requires_grad()) {
    throw std::logic_error(
        "backward() on a tensor that does not require grad. Hint: mark the trainable tensors "
        "with set_requires_grad(true), and compute the loss with gradients enabled (outside a "
        "NoGradGuard).");
  }
  Tensor seed = droot;
  if (!seed.defined()) {
    if (root.numel() != 1) {
      throw std::logic_error("backward() without an incoming gradient needs a one-element root, "
                             "got shape " + root.shape().str());
    }
    seed = Tensor::full(root.shape(), 1.0, root.dtype(), MemCategory::Workspace);
  } else if (seed.shape() != root.shape() || seed.dtype() != root.dtype()) {
    throw std::invalid_argument("backward(): incoming gradient " +
                                std::string(dtype_name(seed.dtype())) + " " + seed.shape().str() +
                                " for a root " + dtype_name(root.dtype()) + " " +
                                root.shape().str());
  }
  if (root.is_leaf()) {
    if (per_example != nullptr && per_example->find(root.impl().get()) != nullptr) {
      throw std::logic_error("backward(): a root that is itself a per-example leaf has no examples");
    }
    Tensor holder;
    kernels::add_into(leaf_grad(root.impl(), holder), seed);
    return;
  }

  // Count, for every node reachable from the root, how many consumer edges point at it.
  Node* top = root.grad_fn().get();
  std::unordered_map<Node*, int> consumers;
  std::unordered_set<Node*> seen{top};
  std::vector<Node*> stack{top};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (n->released) {
      throw std::logic_error(std::string("backward through op '") + n->name() +
                             "' a second time: its saved tensors were freed after the first "
                             "backward. Hint: run the forward again.");
    }
    for (const Edge& e : n->inputs) {
      if (!e.node) continue;
      ++consumers[e.node.get()];
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  std::unordered_map<Node*, Tensor> buffers;
  buffers.emplace(top, seed);
  std::priority_queue<Node*, std::vector<Node*>, NewestFirst> ready;
  ready.push(top);
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    Tensor dout;
    if (auto it = buffers.find(n); it != buffers.end()) {
      dout = std::move(it->second);
      buffers.erase(it);
    } else {
      dout = Tensor::zeros(n->out_shape, n->out_dtype, MemCategory::Workspace);
    }
    {
      EngineSink sink(*n, buffers, per_example);
      if (profile::Profiler* profiler = profile::active()) {
        const auto start = std::chrono::steady_clock::now();
        n->backward(dout, sink);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        // The checkpoint node's time includes its recomputation and the nested backward, which
        // are counted op by op too.
        profiler->add(std::string(n->name()) + ".backward", dt);
      } else {
        n->backward(dout, sink);
      }
    }
    dout = Tensor();
    n->release();
    n->released = true;
    for (const Edge& e : n->inputs) {
      if (e.node && --consumers[e.node.get()] == 0) ready.push(e.node.get());
    }
  }
}

namespace {

class CheckpointNode : public Node {
 public:
  CheckpointNode(CheckpointFn fn, std::vector<Tensor> saved, std::vector<bool> wants_grad,
                 RngState rng)
      : fn_(std::move(fn)), saved_(std::move(saved)), wants_grad_(std::move(wants_grad)),
        rng_(rng) {}
  const char* name() const override { return "checkpoint"; }

  void backward(const Tensor& dout, GradSink& grads) override {
    std::vector<Tensor> inputs;
    inputs.reserve(saved_.size());
    for (size_t i = 0; i < saved_.size(); ++i) {
      Tensor t = saved_[i].detach();
      if (wants_grad_[i] && grads.needed(static_cast<int>(i))) {
        t.set_requires_grad(true);
        // The nested backward adds straight into the outer gradient buffer of input i.
        t.set_grad(grads.at(static_cast<int>(i)));
      }
      inputs.push_back(std::move(t));
    }
    if (!grad_enabled()) {
      throw std::logic_error("checkpoint recomputation with gradients disabled");
    }
    Tensor out;
    {
      // The re-run draws the forward's dropout masks; the caller's generator is back afterwards,
      // also when fn throws.
      const ScopedAssign<RngState> replay(dropout_rng(), rng_);
      out = fn_(inputs);
    }
    if (out.requires_grad()) edgetune::backward(out, dout, grads.per_example_grads());
  }

  void release() override {
    saved_.clear();
    fn_ = nullptr;
  }

 private:
  CheckpointFn fn_;
  std::vector<Tensor> saved_;
  std::vector<bool> wants_grad_;
  RngState rng_;
};

}  // namespace

Tensor checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs) {
  const RngState rng_before = dropout_rng();
  const std::uint64_t uses_before = t_grad_uses;
  Tensor out;
  {
    NoGradGuard no_grad;
    out = fn(inputs);
  }
  bool any_input = false;
  for (const Tensor& t : inputs) any_input = any_input || t.requires_grad();
  const bool used_grad = any_input || t_grad_uses != uses_before;
  if (!grad_enabled() || !used_grad) return out;

  std::vector<Tensor> saved;
  std::vector<bool> wants;
  std::vector<const Tensor*> ptrs;
  for (const Tensor& t : inputs) {
    saved.push_back(t.detach());
    wants.push_back(t.requires_grad());
    ptrs.push_back(&t);
  }
  // A fresh handle: fn may have returned one of its inputs, whose history must stay as it is.
  Tensor result = out.detach();
  // Edges go to the inputs; parameters used inside fn are reached by the recomputation itself.
  attach(result,
         std::make_shared<CheckpointNode>(fn, std::move(saved), std::move(wants), rng_before),
         ptrs);
  return result;
}

RngState& dropout_rng() { return current_context().rng; }

void manual_seed(std::uint64_t seed) { dropout_rng() = RngState{seed, 0}; }

DropoutRows::DropoutRows(std::uint64_t row_offset, std::uint64_t rows, std::uint64_t batch_rows)
    : rng_(dropout_rng()), saved_(rng_) {
  if (rows == 0 || row_offset + rows > batch_rows) {
    throw std::invalid_argument("DropoutRows: rows [" + std::to_string(row_offset) + ", " +
                                std::to_string(row_offset + rows) + ") are not within a batch of " +
                                std::to_string(batch_rows));
  }
  rng_.row_offset = row_offset;
  rng_.rows = rows;
  rng_.batch_rows = batch_rows;
}

DropoutRows::~DropoutRows() {
  rng_.row_offset = saved_.row_offset;
  rng_.rows = saved_.rows;
  rng_.batch_rows = saved_.batch_rows;
}


}  // namespace edgetune
