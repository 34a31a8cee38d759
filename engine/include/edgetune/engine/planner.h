// The memory planner: estimates the peak bytes of each accountant category for a training run from
// the model shape, method, storage, batch and sequence length, and picks the fastest plan that fits
// a budget: encoder-layer checkpointing on or off, and the micro-batch size (the requested batch
// stays the effective batch: its micro-batches' gradients add up to the batch's, up to float
// rounding, dropout included, as each micro-batch draws its rows' part of the batch's masks).
//
// Base weights, trainable parameters, gradients and optimizer state are exact: the planner walks
// the loader's own tensor table (bert_tensors in loader.h) and the adapters' shapes, each counted
// with the accountant's rounding (accounted_tensor_bytes). (A pooler the checkpoint lacks is
// initialised float32 rather than in the base storage; the estimate counts the base storage.)
// The activation estimate mirrors what the tape keeps (see bert.cpp and the ops' nodes): per
// encoder layer, at that layer's own widths after pruning (its heads, its feed-forward
// neurons), the LoRA input, the q / k / v head tensors, the attention probabilities (twice
// with attention dropout), the LayerNorm inputs and the feed-forward activation input; with
// checkpointing, only each layer's input plus the largest layer's worth during its
// recomputation. Over a model file, the frozen tensors used in place from its mapping are
// counted apart as mapped (MemoryEstimate::mapped).
// Transient backward buffers, dequantization tiles (or, computing in int8, the integer kernels'
// activation codes and packed weight chunk) and freed blocks held for reuse are the workspace.
// The data set (its packed token ids) and the tokenizer's tables are the data, as measured once
// loaded.
//
// A budget bounds the whole process (its peak resident set, VmHWM), so the planner also
// subtracts a measured baseline: what the process holds that the accountant never sees (code,
// libraries, the app's own memory, the worker threads' stacks and heaps, the allocator's floor),
// and the heap's slack around the accountant's small blocks. What is left is the accountant's
// hard budget for the run.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>

#include "edgetune/autograd/qgemm.h"
#include "edgetune/autograd/tensor.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/config.h"
#include "edgetune/engine/dp.h"
#include "edgetune/engine/finetune.h"

namespace edgetune {

struct TrainConfig;

struct PlanRequest {
  BertConfig config;     // with the run's dropout probabilities
  MethodOptions method;
  DType base = DType::Q8;
  bool quant_embeddings = false;
  Compute compute = Compute::F32;  // Int8 over a quantized base: the integer kernels' workspace
  std::int64_t batch = 16;    // effective batch B
  std::int64_t length = 128;  // tokens per row T (the longest row)
  optim::OptimizerKind optimizer = optim::OptimizerKind::AdamW;
  double momentum = 0;        // sgd
  bool training_dropout = true;
  // Masked-LM pretraining (> 0: the fraction of tokens chosen): the MLM head trains, and its
  // logits (M, V) exist at the masked rows only.
  double mlm_probability = 0;
  std::size_t data_bytes = 0;  // the data set and the tokenizer, counted as MemCategory::Data
  std::size_t baseline = 0;    // measure_baseline(): resident bytes outside the accountant
  // The tensors (Hugging Face names) the model file being trained holds, whose frozen ones the
  // loader uses in place from the file's mapping: clean, file-backed pages rather than private
  // memory (MemoryEstimate::mapped). Empty for a folder. Set by plan_model_source.
  std::set<std::string> file_tensors;
  // DP-SGD (dp.h), if set: a second gradient-sized buffer per trainable tensor, the sum of the
  // clipped per-example gradients (ExampleAtATime: run with a micro-batch of 1); with PerExample,
  // instead of the gradient, one copy per row of the micro-batch (the per-example gradients).
  std::optional<DpClipping> dp;
};

// What the process holds outside the accountant, measured with the OS's figures.
struct Baseline {
  std::size_t resident = 0;  // VmRSS at the time of measuring: code, libraries, what is loaded
  std::size_t threads = 0;   // what starting the kernels' worker threads added to it
  std::size_t allocator = 0;  // the heap the run's small objects (graph nodes, batches) take
  // The C heap's free bytes (process_heap_free): holes that the run's small objects fill, which
  // makes their pages resident again. Reading a data set leaves megabytes of them (its rows are
  // small strings, freed once packed), so the trainer measures them again after reading.
  std::size_t heap_free = 0;
  std::size_t total() const { return resident + threads + allocator + heap_free; }
  // "baseline 9.1 MiB (resident 7.4 MiB, threads 0.2 MiB, allocator 1.5 MiB, heap free 0.1 MiB)"
  std::string describe() const;
};

// Measures the baseline now: VmRSS, then VmRSS again after a kernel call on the kernels' threads
// (kernels::num_threads()) has started the worker threads, plus the allocator's allowance
// (kAllocatorAllowance) and the heap's free bytes. Call it after setting the thread count and
// before loading the model, whose bytes the accountant counts. All zero where /proc/self/status
// is unreadable.
Baseline measure_baseline();

// What training adds to the resident set outside the accountant's blocks, whatever the plan: the
// code and library pages the training path touches after start, the worker threads' heaps, the
// graph nodes and batch vectors of a step, and the heap's growth past its free bytes
// (Baseline::heap_free) as batches of varied lengths fragment it. Set from runs of the shipped
// model (q4, LoRA): under the demo's 32 MiB budget, VmHWM exceeded the accountant's peak plus the
// resident set at start by 7 MiB; over 1,895 steps of SST-2 under 64 MiB, the heap grew 1.9 MiB
// past the 6.0 MiB its holes held. This, the heap slack below and the estimate's own margin over
// the measured peak cover it; the run layer stops a run whose VmHWM passes the budget anyway.
inline constexpr std::size_t kAllocatorAllowance = std::size_t{4} << 20;
// The heap's slack around the accountant's blocks under kMapThreshold
// (MemoryEstimate::heap_bytes): a freed block leaves a hole that only a block of its size fills.
// Larger blocks are mapped and unmapped, and leave none, so the plan reserves an eighth of the
// heap blocks' bytes only. (On the shipped model under the demo's settings, 8 epochs, VmHWM
// peaked at 29.1 MiB against an estimated 29.5 MiB.)
inline constexpr std::size_t kHeapSlackDivisor = 8;

struct MemoryEstimate {
  std::array<std::size_t, kNumMemCategories> bytes{};
  // Of the base weights, the bytes used in place from a model file (values and scales): file
  // pages the OS can drop and read again, which a private-memory limit such as iOS's does not
  // count. They still count toward a budget, which bounds the whole resident set. The
  // accountant never holds them.
  std::size_t mapped = 0;
  // Of the tensors' bytes (all categories but the data), those in blocks under kMapThreshold:
  // the heap's share, around which it leaves slack.
  std::size_t heap_bytes = 0;
  std::size_t total() const;
  // "base_weights 53.1 MiB, trainable 1.2 MiB, ..."
  std::string summary() const;
};

struct Plan {
  bool checkpoint_layers = false;
  std::int64_t micro_batch = 0;  // rows per forward/backward; the batch when not split
  std::int64_t batch = 0;
  MemoryEstimate estimate;
  std::size_t budget = 0;  // 0: none
  std::size_t baseline = 0;  // the request's baseline
  double relative_cost = 1;  // estimated step time relative to no checkpointing, one micro-batch
  // The estimated peak of the process: the accountant's estimate, its heap slack and the baseline.
  // Without a baseline (a budget of the session's own memory, budget_scope session) the peak is
  // the accountant's estimate, as the accountant bounds it.
  std::size_t heap_slack() const { return estimate.heap_bytes / kHeapSlackDivisor; }
  std::size_t peak() const { return estimate.total() + outside_accountant(); }
  // The accountant's share of the budget (budget - baseline - heap slack - the mapped base, which
  // is resident but never the accountant's; 0 when there is no budget).
  std::size_t accountant_budget() const {
    return budget ? budget - std::min(budget, outside_accountant() + estimate.mapped) : 0;
  }
  std::size_t outside_accountant() const { return baseline ? baseline + heap_slack() : 0; }
  // "plan: checkpointing on, micro-batch 4 x 2, estimated peak 97.3 MiB of 128.0 MiB
  //  (accountant 80.1 MiB, heap slack 10.0 MiB, baseline 7.2 MiB)"; the part in parentheses only
  //  with a baseline; over a model file, then "; mapped from the model file 1.6 MiB, private
  //  95.7 MiB" (the peak's file-backed and private parts).
  std::string describe() const;
};

// Thrown before training when no plan fits the budget: says the smallest peak achievable and
// what to change.
class PlanError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

MemoryEstimate estimate_memory(const PlanRequest& request, bool checkpoint_layers,
                               std::int64_t micro_batch);

// The fastest plan whose estimated peak (with the request's baseline) fits `budget` (0: no
// budget: no checkpointing, whole batch).
// force_checkpoint / force_micro_batch (> 0) pin a choice. Throws PlanError when nothing fits.
Plan choose_plan(const PlanRequest& request, std::size_t budget,
                 std::optional<bool> force_checkpoint = std::nullopt,
                 std::int64_t force_micro_batch = 0);

// The request for a training run (its config, batch and longest row), with plan_model_source
// applied for its model.
PlanRequest plan_request(const BertConfig& config, const TrainConfig& train, std::int64_t length);

// When `model` is a model file: file_tensors from it, and quant_embeddings set when the file
// stores its embeddings quantized (the loader then uses them as they are). A folder leaves
// `request` as it is.
void plan_model_source(PlanRequest& request, const std::filesystem::path& model);

}  // namespace edgetune
