// The memory planner (see planner.h).
#include "edgetune/engine/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "edgetune/autograd/kernels.h"
#include "edgetune/engine/model_file.h"
#include "edgetune/engine/pretrain.h"
#include "edgetune/engine/trainer.h"

namespace edgetune {

namespace {

constexpr std::size_t kF = 4;  // bytes of a float32

// The accountant's count of some blocks, and the part of it in blocks under kMapThreshold, which
// come from the heap.
struct Blocks {
  std::size_t bytes = 0;
  std::size_t heap = 0;
  Blocks& operator+=(const Blocks& o) {
    bytes += o.bytes;
    heap += o.heap;
    return *this;
  }
  friend Blocks operator+(Blocks a, const Blocks& b) { return a += b; }
  friend Blocks operator-(const Blocks& a, const Blocks& b) {
    return {a.bytes - b.bytes, a.heap - b.heap};
  }
  friend Blocks operator*(std::size_t k, const Blocks& b) { return {k * b.bytes, k * b.heap}; }
};

// Of two sets of blocks never live together, the one of more bytes.
Blocks larger(const Blocks& a, const Blocks& b) { return a.bytes >= b.bytes ? a : b; }

// One block of `bytes`, as the accountant counts it.
Blocks block_of(std::size_t bytes) {
  const std::size_t counted = accounted_bytes(bytes);
  return {counted, bytes < kMapThreshold ? counted : 0};
}

// A float32 block of `n` values.
Blocks f32(std::size_t n) { return block_of(kF * n); }

// The blocks of a tensor made by Tensor::empty: its values or codes and, when quantized, its scales
// (their bytes are accounted_tensor_bytes).
Blocks tensor_blocks(const Shape& shape, DType dtype) {
  return block_of(storage_bytes(shape, dtype)) +
         block_of(static_cast<std::size_t>(scale_count(shape, dtype)) * sizeof(float));
}

void add(MemoryEstimate& e, MemCategory c, const Blocks& b) {
  e.bytes[static_cast<int>(c)] += b.bytes;
  e.heap_bytes += b.heap;
}

// The accountant's count of the workspace of one integer-kernel call (qgemm.h) with M = m rows,
// reduction length len and cols output columns: the activation codes (M, R) and scales (M, R/32),
// one chunk of packed weight panels (chunk, R) with its sums and scales, and a row of R bytes per
// thread.
Blocks int8_gemm_workspace(std::size_t m, std::size_t len, std::size_t cols, std::size_t threads) {
  const auto block = static_cast<std::size_t>(qgemm::kBlock), panel = static_cast<std::size_t>(qgemm::kPanel);
  const std::size_t kb = (len + block - 1) / block, r = kb * block;
  const std::size_t chunk = std::min(static_cast<std::size_t>(qgemm::kChunkColumns), (cols + panel - 1) / panel * panel);
  return block_of(m * r) + f32(m * kb) + block_of(chunk * r) + 2 * f32(chunk * kb) +
         block_of(threads * r);
}

// Adds a trainable float32 tensor with its gradient buffers and optimizer state.
void add_trainable(MemoryEstimate& e, const Shape& shape, int state_copies, int grad_copies) {
  const Blocks b = tensor_blocks(shape, DType::F32);
  add(e, MemCategory::Trainable, b);
  add(e, MemCategory::Grads, static_cast<std::size_t>(grad_copies) * b);
  add(e, MemCategory::OptimizerState, static_cast<std::size_t>(state_copies) * b);
}

}  // namespace

std::size_t MemoryEstimate::total() const {
  std::size_t t = 0;
  for (std::size_t b : bytes) t += b;
  return t;
}

std::string MemoryEstimate::summary() const {
  std::string s;
  for (int i = 0; i < kNumMemCategories; ++i) {
    if (i) s += ", ";
    s += std::string(category_name(static_cast<MemCategory>(i))) + " " + format_bytes(bytes[i]);
  }
  return s;
}

MemoryEstimate estimate_memory(const PlanRequest& r, bool ckpt, std::int64_t micro) {
  MemoryEstimate e;
  const BertConfig& c = r.config;
  const int copies = r.optimizer == optim::OptimizerKind::Sgd ? (r.momentum > 0 ? 1 : 0) : 2;
  // DP-SGD: the sum of the clipped gradients, and the gradient or a micro-batch of per-example ones.
  int grads = 1;
  if (r.dp) grads = *r.dp == DpClipping::PerExample ? 1 + static_cast<int>(micro) : 2;
  const std::int64_t C = c.hidden_size, V = c.vocab_size;
  const std::int64_t L = c.num_hidden_layers, H = c.num_attention_heads;

  // ---- weights, trainable parameters, gradients, optimizer state: the tensors the loader makes
  // (with the masked-LM head for pretraining)
  BertModel layout = bert_layout(c, r.mlm_probability > 0);
  LoadOptions lo = load_options_for(r.method, r.base, r.quant_embeddings);
  // Pretraining trains what a BertForMaskedLM checkpoint holds: not the pooler, not the classifier.
  if (r.mlm_probability > 0) lo.trainable = in_masked_lm_checkpoint;
  for (const BertTensor& t : bert_tensors(layout, lo)) {
    if (t.trainable) {
      add_trainable(e, t.shape, copies, grads);
    } else if (r.file_tensors.count(t.name)) {
      // Mapped in place: the file's own bytes, in no accountant block and not on the heap.
      const std::size_t bytes =
          storage_bytes(t.shape, t.storage) + static_cast<std::size_t>(scale_count(t.shape, t.storage)) * sizeof(float);
      e.bytes[static_cast<int>(t.category)] += bytes;
      e.mapped += bytes;
    } else {
      add(e, t.category, tensor_blocks(t.shape, t.storage));
    }
  }
  std::int64_t lora_inputs_c = 0, lora_inputs_f = 0, lora_targets = 0;
  const MethodOptions& m = r.method;
  if (m.method == Method::Lora) {
    const std::int64_t rank = m.lora.rank;
    bool qkv = false;
    for (const std::string& t : m.lora_targets) {
      for (std::int64_t i = 0; i < L; ++i) {
        // LoRA takes the pruned layer's shapes: F_i neurons, H_i heads of C / H.
        const std::int64_t f = c.ffn_in_layer(i), a = c.heads_in_layer(i) * (C / H);
        const bool heads_out = t == "query" || t == "key" || t == "value";
        const std::int64_t in = t == "output" ? f : t == "attention.output" ? a : C;
        const std::int64_t out = t == "intermediate" ? f : heads_out ? a : C;
        if (m.lora.freeze_a) {
          add(e, MemCategory::Trainable, tensor_blocks({rank, in}, DType::F32));
        } else {
          add_trainable(e, {rank, in}, copies, grads);
        }
        add_trainable(e, {out, rank}, copies, grads);
      }
      ++lora_targets;
      if (t == "query" || t == "key" || t == "value") {
        qkv = true;
        if (m.lora.dropout > 0) ++lora_inputs_c;
      } else if (t == "output") {
        ++lora_inputs_f;
      } else {
        ++lora_inputs_c;
      }
    }
    if (qkv && m.lora.dropout == 0) ++lora_inputs_c;
    if (m.lora.freeze_a) lora_inputs_c = lora_inputs_f = 0;  // LoRA-FA keeps x A^T only
  } else if (m.method == Method::Adapter) {
    for (std::int64_t i = 0; i < 2 * L; ++i) {
      add_trainable(e, {m.adapter_size, C}, copies, grads);
      add_trainable(e, {m.adapter_size}, copies, grads);
      add_trainable(e, {C, m.adapter_size}, copies, grads);
      add_trainable(e, {C}, copies, grads);
    }
  }

  // ---- activations kept for backward, per encoder layer, for one micro-batch. A pruned layer
  // keeps its own widths: H_l heads of D for q, k, v and the attention probabilities, F_l
  // feed-forward neurons (the config's pruned_heads and edgetune_intermediate_sizes).
  const auto B = static_cast<std::size_t>(micro), T = static_cast<std::size_t>(r.length);
  const std::size_t N = B * T;  // tokens
  const auto D = static_cast<std::size_t>(C / H);
  const Blocks nc = f32(N * static_cast<std::size_t>(C));
  const Blocks stats = 2 * f32(N);
  const bool attn_dropout = r.training_dropout && c.attention_probs_dropout_prob > 0;
  const bool grads_in_encoder = m.method != Method::Head;
  const bool weights_train = m.method == Method::Full;  // linear nodes keep their inputs for dW
  // Layer i's own tensors: the attention probabilities (B, H_i, T, T), a head tensor
  // (B, H_i, T, D) and the feed-forward activation (N, F_i).
  auto probs_of = [&](std::int64_t i) { return f32(B * static_cast<std::size_t>(c.heads_in_layer(i)) * T * T); };
  auto nq_of = [&](std::int64_t i) { return f32(N * static_cast<std::size_t>(c.heads_in_layer(i)) * D); };
  auto nf_of = [&](std::int64_t i) { return f32(N * static_cast<std::size_t>(c.ffn_in_layer(i))); };
  // What layer i keeps. Self-attention: q, k, v in heads kept by the two matmuls, the softmax
  // output (and its dropped copy, which the second matmul keeps). The rest: the two LayerNorm
  // inputs, the activation's input, LoRA's and adapters' inputs (the attention output's input,
  // H_i*D wide, counted C wide: an upper bound).
  auto layer_of = [&](std::int64_t i, bool first) {
    const Blocks nf = nf_of(i);
    Blocks attention = 3 * nq_of(i) + (attn_dropout ? 2u : 1u) * probs_of(i);
    Blocks rest = 2 * (nc + stats) + nf;
    rest += static_cast<std::size_t>(lora_inputs_c) * nc + static_cast<std::size_t>(lora_inputs_f) * nf;
    rest += static_cast<std::size_t>(lora_targets) * f32(N * static_cast<std::size_t>(m.lora.rank));
    if (m.method == Method::Adapter) {
      const Blocks nm = f32(N * static_cast<std::size_t>(m.adapter_size));
      rest += 2 * (nc + 2 * nm);  // each adapter: its input, the activation's input, the up input
    }
    if (weights_train) rest += 3 * nc + nf;  // inputs of q/k/v, attention output, intermediate, output
    // In the first layer (run with the graph: not a checkpointed recomputation), nothing before
    // the attention requires grad unless the embeddings train or LoRA sits on q/k/v: then its
    // attention keeps nothing (adapter), or q is not kept (LoRA).
    if (first && m.method == Method::Adapter) attention = {};
    if (first && m.method == Method::Lora) attention = attention - nq_of(i);
    return attention + rest;
  };
  // The widest layer's probabilities and feed-forward activation bound the transients.
  std::int64_t widest_h = 0, widest_f = 0;
  for (std::int64_t i = 0; i < L; ++i) {
    widest_h = std::max(widest_h, c.heads_in_layer(i));
    widest_f = std::max(widest_f, c.ffn_in_layer(i));
  }
  const std::int64_t F = widest_f;
  const Blocks probs = f32(B * static_cast<std::size_t>(widest_h) * T * T);
  const Blocks nf = f32(N * static_cast<std::size_t>(F));
  // Backward transients: the gradients of the feed-forward activation's input and output, or of
  // the attention scores and probabilities with those of q / k / v; plus a dequantization tile.
  Blocks tile = f32(128 * static_cast<std::size_t>(std::max(C, F)));
  if (r.compute == Compute::Int8 && is_quantized(r.base)) {
    // The integer kernels take no dequantization tile; their largest call has F on one side.
    const auto cw = static_cast<std::size_t>(C), fw = static_cast<std::size_t>(F);
    const auto threads = static_cast<std::size_t>(kernels::num_threads());
    tile = larger(larger(int8_gemm_workspace(N, cw, cw, threads),
                         int8_gemm_workspace(N, cw, fw, threads)),
                  int8_gemm_workspace(N, fw, cw, threads));
  }
  const Blocks transient = larger(2 * nf, 2 * probs + 2 * nc) + tile;
  Blocks acts;
  if (!grads_in_encoder) {
    // Nothing is kept; the peak is a layer's forward temporaries (layer input, attention output,
    // the feed-forward intermediate and its activation, the output).
    acts = larger(4 * nc + 2 * probs, 3 * nc + 2 * nf) + nc;
  } else if (ckpt) {
    // Each layer's input, plus one layer recomputed during its backward, and its output.
    Blocks largest;
    for (std::int64_t i = 0; i < L; ++i) largest = larger(largest, layer_of(i, false));
    acts = static_cast<std::size_t>(L + 1) * nc + largest;
  } else {
    for (std::int64_t i = 0; i < L; ++i) acts += layer_of(i, i == 0);
    acts += nc;
  }
  if (m.method == Method::Full || m.method == Method::BitFit) acts += nc + stats;  // embedding LayerNorm
  Blocks mlm_workspace;
  if (r.mlm_probability > 0) {
    // The head's tensors are in the table above; the decoder is the word-embedding table.
    // Activations: the gathered rows and the transform's (M, C) tensors, and the logits (M, V)
    // kept by the cross-entropy; the logits' gradient is transient. M is the expected masked
    // count plus one per row (a segment never goes without a target).
    const auto M = static_cast<std::size_t>(std::ceil(r.mlm_probability * static_cast<double>(N))) + B;
    const Blocks mc = f32(M * static_cast<std::size_t>(C));
    const Blocks mv = f32(M * static_cast<std::size_t>(V));
    acts += 4 * mc + 2 * f32(M) + mv;
    mlm_workspace = mv + mc;
  }
  add(e, MemCategory::Activations, acts);
  e.bytes[static_cast<int>(MemCategory::Data)] = r.data_bytes;
  add(e, MemCategory::Workspace,
      (grads_in_encoder ? transient + (ckpt ? 2 * nc : Blocks{}) : tile) + mlm_workspace);
  return e;
}

std::string Baseline::describe() const {
  return "baseline " + format_bytes(total()) + " (resident " + format_bytes(resident) + ", threads " +
         format_bytes(threads) + ", allocator " + format_bytes(allocator) + ", heap free " +
         format_bytes(heap_free) + ")";
}

Baseline measure_baseline() {
  Baseline b;
  b.resident = process_rss();
  if (b.resident == 0) return b;
  // One small product per thread starts the worker threads (their stacks, Eigen's per-thread
  // state) as training will.
  const std::int64_t n = kernels::num_threads();
  constexpr std::int64_t kSide = 32;
  std::vector<float> a(static_cast<std::size_t>(n * kSide * kSide), 1.0f), c(a.size());
  kernels::batched_gemm(c.data(), a.data(), a.data(), n, kSide, kSide, kSide, false, false, false);
  const std::size_t after = process_rss();
  b.threads = after > b.resident ? after - b.resident : 0;
  b.allocator = kAllocatorAllowance;
  b.heap_free = process_heap_free();
  return b;
}

std::string Plan::describe() const {
  char buf[256];
  const std::int64_t parts = micro_batch > 0 ? (batch + micro_batch - 1) / micro_batch : 1;
  std::snprintf(buf, sizeof buf, "plan: checkpointing %s, micro-batch %lld x %lld, estimated peak %s%s%s",
                checkpoint_layers ? "on" : "off", static_cast<long long>(micro_batch),
                static_cast<long long>(parts), format_bytes(peak()).c_str(),
                budget ? " of " : "", budget ? format_bytes(budget).c_str() : "");
  std::string out = buf;
  if (baseline) {
    out += " (accountant " + format_bytes(estimate.total() - estimate.mapped) + ", heap slack " + format_bytes(heap_slack()) +
           ", baseline " + format_bytes(baseline) + ")";
  }
  if (estimate.mapped > 0) {
    out += "; mapped from the model file " + format_bytes(estimate.mapped) + ", private " +
           format_bytes(peak() - estimate.mapped);
  }
  return out;
}

Plan choose_plan(const PlanRequest& r, std::size_t budget, std::optional<bool> force_ckpt,
                 std::int64_t force_micro) {
  std::vector<Plan> candidates;
  for (bool ckpt : {false, true}) {
    if (force_ckpt && *force_ckpt != ckpt) continue;
    for (std::int64_t parts = 1; parts <= r.batch; ++parts) {
      const std::int64_t micro = (r.batch + parts - 1) / parts;
      if (parts > 1 && micro == (r.batch + parts - 2) / (parts - 1)) continue;  // same size
      if (force_micro > 0 && micro != std::min(force_micro, r.batch)) continue;
      Plan p;
      p.checkpoint_layers = ckpt;
      p.micro_batch = micro;
      p.batch = r.batch;
      p.budget = budget;
      p.baseline = r.baseline;
      p.estimate = estimate_memory(r, ckpt, micro);
      // Recomputing the forward costs about a third of a step; each micro-batch adds fixed costs
      // (smaller GEMMs, per-op overheads) that matter most for tiny micro-batches.
      p.relative_cost = (ckpt ? 1.33 : 1.0) * (1.0 + 0.5 * (1.0 / static_cast<double>(micro) -
                                                             1.0 / static_cast<double>(r.batch)));
      candidates.push_back(p);
    }
  }
  if (candidates.empty()) throw PlanError("no plan matches the forced micro-batch / checkpointing");
  const Plan* best = nullptr;
  const Plan* smallest = &candidates.front();
  for (const Plan& p : candidates) {
    if (p.estimate.total() < smallest->estimate.total()) smallest = &p;
    if (budget && p.peak() > budget) continue;
    if (!best || p.relative_cost < best->relative_cost) best = &p;
  }
  if (!best) {
    const MemoryEstimate& e = smallest->estimate;
    const std::size_t fixed = e.bytes[0] + e.bytes[1] + e.bytes[2] + e.bytes[3];
    const std::size_t weights_data = r.baseline + fixed + e.bytes[static_cast<int>(MemCategory::Data)];
    std::string hint;
    if (weights_data > budget) {
      const bool all_4bit = is_packed4(r.base) && r.quant_embeddings;
      hint = "the weights and optimizer state alone take " + format_bytes(fixed) + ": use " +
             (all_4bit ? std::string() : "--quant q4 (and --quant-embeddings), ") +
             "a smaller model, or a lighter method";
    } else {
      hint = "lower --max-length (now " + std::to_string(r.length) + ") or use --lora-fa";
    }
    const std::string baseline =
        r.baseline ? "baseline " + format_bytes(r.baseline) + ", heap slack " + format_bytes(smallest->heap_slack()) + ", "
                   : "";
    throw PlanError("no training plan fits the memory budget of " + format_bytes(budget) +
                    ": the smallest estimated peak is " + format_bytes(smallest->peak()) +
                    " (checkpointing on, micro-batch " + std::to_string(smallest->micro_batch) + "; " +
                    baseline + e.summary() + "); raise --memory-budget or " + hint);
  }
  return *best;
}

PlanRequest plan_request(const BertConfig& config, const TrainConfig& t, std::int64_t length) {
  PlanRequest r;
  r.config = config;
  r.method = t.method;
  r.base = t.quant;
  r.quant_embeddings = t.quant_embeddings;
  r.compute = t.compute;
  r.batch = t.batch_size;
  r.length = length;
  r.optimizer = t.optimizer;
  r.momentum = t.momentum;
  plan_model_source(r, t.model_dir);
  return r;
}

void plan_model_source(PlanRequest& r, const std::filesystem::path& model) {
  if (!is_model_file(model)) return;
  const ModelFile file(model, false);
  r.quant_embeddings = r.quant_embeddings || file.quant_embeddings();
  r.file_tensors.clear();
  for (const safetensors::TensorInfo& info : file.reader()->tensors()) r.file_tensors.insert(info.name);
}

}  // namespace edgetune
