// The memory planner: estimates the peak bytes of each accountant category for a training run from
// the model shape, method, storage, batch and sequence length, and picks the fastest plan that fits
// a budget: encoder-layer checkpointing on or off, and the micro-batch size (the requested batch
// stays the effective batch: its micro-batches' gradients add up to the batch's, so results do
// not change).
//
// Base weights, trainable parameters, gradients and optimizer state are exact: the planner walks
// the loader's own tensor table (bert_tensors in loader.h) and the adapters' shapes, each counted
// with the accountant's rounding (accounted_tensor_bytes). (A pooler the checkpoint lacks is
// initialised float32 rather than in the base storage; the estimate counts the base storage.)
// The activation estimate mirrors what the tape keeps (see bert.cpp and the ops' nodes): per
// encoder layer the LoRA input, the q / k / v head tensors, the attention probabilities (twice
// with attention dropout), the LayerNorm inputs and the feed-forward activation input; with
// checkpointing, only each layer's input plus one layer's worth during its recomputation.
// Transient backward buffers, dequantization tiles (or, computing in int8, the integer kernels'
// activation codes and packed weight chunk) and freed blocks held for reuse are the workspace.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "edgetune/autograd/qgemm.h"
#include "edgetune/autograd/tensor.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/config.h"
#include "edgetune/engine/finetune.h"

namespace edgetune {

struct TrainConfig;

struct PlanRequest {
  BertConfig config;     // with the run's dropout probabilities
  MethodOptions method;
  DType base = DType::Q8;
  bool quant_embeddings = false;
  Compute compute = Compute::F32;  // Int8 over a q8/q4 base: the integer kernels' workspace
  std::int64_t batch = 16;    // effective batch B
  std::int64_t length = 128;  // tokens per row T (the longest row)
  optim::OptimizerKind optimizer = optim::OptimizerKind::AdamW;
  double momentum = 0;        // sgd
  bool training_dropout = true;
  // Masked-LM pretraining (> 0: the fraction of tokens chosen): the MLM head trains, and its
  // logits (M, V) exist at the masked rows only.
  double mlm_probability = 0;
};

struct MemoryEstimate {
  std::array<std::size_t, kNumMemCategories> bytes{};
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
  double relative_cost = 1;  // estimated step time relative to no checkpointing, one micro-batch
  // "plan: checkpointing on, micro-batch 4 x 2, estimated peak 97.3 MiB of 128.0 MiB"
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

// The fastest plan whose estimate fits `budget` (0: no budget: no checkpointing, whole batch).
// force_checkpoint / force_micro_batch (> 0) pin a choice. Throws PlanError when nothing fits.
Plan choose_plan(const PlanRequest& request, std::size_t budget,
                 std::optional<bool> force_checkpoint = std::nullopt,
                 std::int64_t force_micro_batch = 0);

// The request for a training run (its config, batch and longest row).
PlanRequest plan_request(const BertConfig& config, const TrainConfig& train, std::int64_t length);

// choose_plan for a training run.
Plan choose_plan(const BertConfig& config, const TrainConfig& train, std::int64_t length);

}  // namespace edgetune
