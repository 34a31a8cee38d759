// The trainer: fine-tunes a BERT classifier from labelled files into a run folder.
//
// Semantics follow the Hugging Face Trainer: per optimizer step, grad_accum batches, each loss the
// batch mean divided by grad_accum; gradient clipping to max_grad_norm; the optimizer step with the
// schedule's learning rate for that step (warmup steps = ceil(total * warmup_ratio)); an epoch ends
// with a step even when fewer than grad_accum batches are left. A batch can be run as several
// micro-batches (loss of each weighted by its share of the batch), which gives the same gradients
// with less activation memory; encoder layers can be checkpointed (recomputed in backward).
//
// The run folder (out):
//   adapter_config.json + adapter_model.safetensors   the trained adapter (PEFT layout; for
//        `full`, config.json + model.safetensors + vocab.txt instead); with early stopping, the best
//   labels.json          the class names, in id order
//   metrics.jsonl        one JSON object per logged step and per evaluation
//   run.json             the settings of the run (what --resume continues with)
//   train_state.safetensors  everything a resume needs: trainable tensors, optimizer state, step,
//        position in the data, dropout generator, early-stopping bookkeeping
// Every file is written atomically: a kill at any moment leaves the previous version whole.
// Resuming from train_state.safetensors with the same settings and thread count ends with the same
// bytes as an uninterrupted run.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgetune/engine/finetune.h"
#include "edgetune/engine/metrics.h"
#include "edgetune/engine/session.h"

namespace edgetune {

struct TrainConfig {
  std::filesystem::path model_dir;
  std::filesystem::path train_file;
  // Training rows already in memory (the C++ API); used instead of train_file when set. Not
  // recorded in run.json: such a run cannot be resumed from the command line.
  std::shared_ptr<const data::Dataset> train_data;
  std::filesystem::path eval_file;  // empty: hold out eval_split of the training rows
  double eval_split = 0.0;          // fraction of train rows held out when eval_file is empty
  DataOptions data;
  MethodOptions method;
  DType quant = DType::Q8;          // base storage (f32 for method full)
  bool quant_embeddings = false;
  std::filesystem::path init_adapter;  // start from a saved adapter (same method)

  int epochs = 3;
  int batch_size = 16;
  double lr = 0;                    // 0: 5e-5 for full, 5e-4 for the other methods
  double weight_decay = 0.01;
  std::string optimizer = "adamw";  // adamw, adam, sgd
  double momentum = 0.9;            // sgd
  double dampening = 0.0;           // sgd
  bool nesterov = false;            // sgd
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  std::string schedule = "linear";  // constant, linear, cosine
  double warmup_ratio = 0.0;
  double max_grad_norm = 1.0;       // 0: no clipping
  int grad_accum = 1;
  std::uint64_t seed = 42;
  bool shuffle = true;
  std::optional<double> dropout;    // overrides every dropout probability of the model
  int threads = 0;                  // 0: all cores
  std::filesystem::path out;
  int early_stopping = 0;           // evaluations without improvement before stopping; 0: off
  std::int64_t save_every = 0;      // checkpoint every N optimizer steps; 0: only at the end
  std::int64_t max_steps = 0;       // stop after N optimizer steps; 0: run all epochs
  int log_every = 10;               // optimizer steps between progress lines
  int eval_batch_size = 64;

  // Memory: a budget in bytes (0: none) and the plan. micro_batch 0 and checkpoint_layers unset
  // let the planner choose under the budget; set them to force a plan.
  std::size_t memory_budget = 0;
  int micro_batch = 0;
  std::optional<bool> checkpoint_layers;

  double effective_lr() const;
  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j);
};

struct TrainResult {
  std::int64_t steps = 0;
  int epochs_run = 0;
  bool interrupted = false;
  bool stopped_early = false;
  std::optional<EvalReport> final_eval;  // the kept adapter's evaluation
  std::size_t accountant_peak = 0;       // bytes
  std::size_t peak_rss = 0;              // VmHWM, bytes
  double seconds = 0;
  double examples_per_second = 0;
};

// One optimizer step as the trainer takes it: for each of the batches (the grad_accum batches of
// the step), forward and backward, split into micro-batches of micro_batch rows when 0 <
// micro_batch < rows (each micro-batch's mean loss weighted by its share of the batch, divided by
// the number of batches); then gradient clipping to max_grad_norm (0: off), the optimizer step
// with lr, and the gradients zeroed.
struct StepOptions {
  double max_grad_norm = 1.0;
  std::int64_t micro_batch = 0;
  bool checkpoint_layers = false;
};
struct StepResult {
  double loss = 0;       // mean over the batches of each batch's mean loss
  double grad_norm = 0;  // total gradient norm before clipping
};
StepResult train_step(const BertModel& model, std::span<optim::Param> params,
                      optim::Optimizer& optimizer, std::span<const TensorBatch> batches, double lr,
                      const StepOptions& options);

// Rows [start, start + n) of a batch (the batch's length is kept).
TensorBatch slice_rows(const TensorBatch& batch, std::size_t start, std::size_t n);

// Asks a running trainer to stop after its current optimizer step, save a checkpoint and return
// (TrainResult::interrupted). Safe to call from a signal handler.
void request_stop();
// Whether request_stop() (or the handler below) asked for a stop since the last Trainer::run
// started; other long loops (the pretrainer) poll it too.
bool stop_requested();
// Installs a SIGINT / SIGTERM handler that calls request_stop() (a second Ctrl-C exits at once).
void install_interrupt_handler();

class Trainer {
 public:
  // log: progress lines and reports for people (null: silent).
  Trainer(TrainConfig config, std::ostream* log);
  // Continues the run in `run_dir` from its train_state.safetensors, with the settings of its
  // run.json. threads / memory_budget may be changed (threads changes the bits of the result).
  static Trainer resume(const std::filesystem::path& run_dir, std::ostream* log,
                        std::optional<int> threads = std::nullopt,
                        std::optional<std::size_t> memory_budget = std::nullopt);
  ~Trainer();
  Trainer(Trainer&&) noexcept;

  TrainResult run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  explicit Trainer(std::unique_ptr<Impl> impl);
};

}  // namespace edgetune
