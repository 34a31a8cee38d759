// The trainer: fine-tunes a BERT classifier from labelled files into a run folder. This is the
// fine-tuning mode of the run layer (run.h), which owns the loop, the state file and resume.
//
// Semantics follow the Hugging Face Trainer: per optimizer step, grad_accum batches, each loss the
// batch mean divided by grad_accum; gradient clipping to max_grad_norm; the optimizer step with the
// schedule's learning rate for that step (warmup steps = ceil(total * warmup_ratio)); an epoch ends
// with a step even when fewer than grad_accum batches are left. A batch can be run as several
// micro-batches (loss of each weighted by its share of the batch), which gives the same gradients
// with less activation memory; encoder layers can be checkpointed (recomputed in backward).
// max_steps > 0 runs exactly that many steps, whatever the epochs.
// With DP-SGD (dp.h: --dp-noise-multiplier or --dp-target-epsilon) the steps are instead Poisson
// samples of the rows, each example's gradient clipped and the sum noised; the epsilon spent is
// in every progress line, every evaluation and the result.
//
// The run folder (out):
//   adapter_config.json + adapter_model.safetensors   the trained adapter (PEFT layout; for
//        `full`, config.json + model.safetensors + vocab.txt instead); with early stopping, the best
//   labels.json          the class names, in id order
//   metrics.jsonl        one JSON object per logged step and per evaluation
//   run.json             the settings of the run (what --resume continues with)
//   replay.json          the replay buffer for continual updates (data/replay.h): a uniform sample
//        of the training rows, written when the run ends
//   train_state.safetensors  everything a resume needs: trainable tensors, optimizer state, step,
//        position in the data, dropout generator, early-stopping bookkeeping
// Every file is written atomically: a kill at any moment leaves the previous version whole.
// Resuming from train_state.safetensors with the same settings and thread count ends with the same
// bytes as an uninterrupted run.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgetune/data/replay.h"
#include "edgetune/engine/dp.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/metrics.h"
#include "edgetune/engine/run.h"
#include "edgetune/engine/session.h"
#include "edgetune/engine/settings.h"

namespace edgetune {

// Names of the enums of the settings, as JSON and the command line spell them (the methods'
// are adapter_folder.h's kMethodNames, the storages session.h's kQuantNames).
inline constexpr settings::Choice<optim::OptimizerKind> kOptimizerNames[] = {
    {optim::OptimizerKind::AdamW, "adamw"}, {optim::OptimizerKind::Adam, "adam"},
    {optim::OptimizerKind::Sgd, "sgd"}};
inline constexpr settings::Choice<optim::Schedule::Kind> kScheduleNames[] = {
    {optim::Schedule::Kind::Linear, "linear"}, {optim::Schedule::Kind::Cosine, "cosine"},
    {optim::Schedule::Kind::Constant, "constant"}};
inline constexpr settings::Choice<adapters::BottleneckAct> kBottleneckActNames[] = {
    {adapters::BottleneckAct::Gelu, "gelu"}, {adapters::BottleneckAct::Relu, "relu"}};

struct TrainConfig : MemorySettings {
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
  Compute compute = Compute::Int8;  // linear layers over a quantized base (f32 base: always f32)
  std::filesystem::path init_adapter;  // start from a saved adapter (same method; its labels.json gives the classes)

  int epochs = 3;
  int batch_size = 16;
  double lr = 0;                    // 0: 5e-5 for full, 5e-4 for the other methods
  double weight_decay = 0.01;
  optim::OptimizerKind optimizer = optim::OptimizerKind::AdamW;
  double momentum = 0.9;            // sgd
  double dampening = 0.0;           // sgd
  bool nesterov = false;            // sgd
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  optim::Schedule::Kind schedule = optim::Schedule::Kind::Linear;
  double warmup_ratio = 0.0;
  double max_grad_norm = 1.0;       // 0: no clipping
  int grad_accum = 1;
  std::uint64_t seed = 42;          // shuffling, dropout, initialisation of adapters and head
  bool shuffle = true;
  std::optional<double> dropout;    // overrides every dropout probability of the model
  int threads = 0;                  // 0: all cores
  std::filesystem::path out;
  int early_stopping = 0;           // evaluations without improvement before stopping; 0: off
  std::int64_t save_every = 0;      // checkpoint every N optimizer steps; 0: at epoch ends only
  std::int64_t max_steps = 0;       // exactly N optimizer steps, whatever the epochs; 0: the epochs
  int log_every = 10;               // optimizer steps between progress lines
  int eval_batch_size = 64;
  DpSettings dp;                    // DP-SGD (off unless a noise multiplier or target epsilon is set)
  // The replay buffer (replay.json) a finished run leaves for continual updates (update.h).
  std::size_t replay_examples = 1000;
  std::size_t replay_bytes = std::size_t{1} << 20;
  // memory_budget, micro_batch, checkpoint_layers: MemorySettings (run.h).

  // Set by a continual update (update.h), not recorded in run.json:
  // the class names in id order instead of the map made from the data (so rows of one class
  // train, and labels an update brings come after the run's); with init_adapter, a saved head for
  // fewer classes grows to these (load_trained's grow_head);
  std::vector<std::string> labels;
  // the replay buffer to write at the end instead of one sampled from the training rows.
  std::shared_ptr<const data::ReplayBuffer> replay;

  // The table of the settings: JSON key (and command-line flag), help, range. The default of each
  // is its initialiser above.
  template <class Self, class V>
  static void fields(Self& c, V& v) {
    using namespace settings;
    model_fields(c, v);
    v("train", c.train_file, "labelled training file (TSV, CSV or JSONL; - for stdin)");
    v("eval", c.eval_file, "labelled evaluation file, evaluated after each epoch");
    v("eval_split", c.eval_split, "without --eval: hold out this fraction of the training rows (seeded)",
      below(0, 1));
    v("out", c.out, "run folder: adapter, labels.json, metrics.jsonl, checkpoints");
    v("init_adapter", c.init_adapter, "start from a saved adapter of the same method");
    DataOptions::fields(c.data, v);
    v("method", c.method.method, kMethodNames, "lora, adapter (Houlsby), bitfit, head or full");
    v("lora_rank", c.method.lora.rank, "LoRA rank r", at_least(1));
    v("lora_alpha", c.method.lora.alpha, "LoRA alpha (scale alpha / r)", above(0));
    v("lora_dropout", c.method.lora.dropout, "dropout on the LoRA input", below(0, 1));
    v("lora_targets", c.method.lora_targets,
      "modules with LoRA: query, key, value, attention.output, intermediate, output");
    v("lora_fa", c.method.lora.freeze_a,
      "LoRA-FA: freeze A after initialisation (less activation memory, B trains)");
    v("adapter_size", c.method.adapter_size, "Houlsby adapter bottleneck width", at_least(1));
    v("adapter_act", c.method.adapter_act, kBottleneckActNames, "Houlsby adapter activation: gelu or relu");
    v("epochs", c.epochs, "passes over the training data", at_least(1));
    v("batch_size", c.batch_size, "rows per optimizer step (before --grad-accum)", at_least(1));
    v("lr", c.lr, "peak learning rate (0: 5e-5 for full, 5e-4 otherwise)", at_least(0));
    v("weight_decay", c.weight_decay, "weight decay (not on biases and LayerNorm)", at_least(0));
    v("optimizer", c.optimizer, kOptimizerNames, "adamw, adam (L2 decay) or sgd");
    v("momentum", c.momentum, "SGD momentum", at_least(0));
    v("dampening", c.dampening, "SGD dampening", in_range(0, 1));
    v("nesterov", c.nesterov, "SGD with Nesterov momentum");
    v("adam_beta1", c.adam_beta1, "Adam's beta1", below(0, 1));
    v("adam_beta2", c.adam_beta2, "Adam's beta2", below(0, 1));
    v("adam_eps", c.adam_eps, "Adam's epsilon", at_least(0));
    v("schedule", c.schedule, kScheduleNames, "learning-rate schedule after warmup: linear, cosine, constant");
    v("warmup_ratio", c.warmup_ratio, "fraction of the steps warming up linearly", in_range(0, 1));
    v("max_grad_norm", c.max_grad_norm, "clip the gradient norm (0: off)", at_least(0));
    v("grad_accum", c.grad_accum, "batches per optimizer step", at_least(1));
    v("seed", c.seed, "seed of shuffling, dropout and initialisation");
    v("shuffle", c.shuffle, "shuffle the rows every epoch (--no-shuffle keeps the file's order)",
      negated_flag("--no-shuffle"));
    v("dropout", c.dropout, "override every dropout probability of the model (0: deterministic training)",
      below(0, 1));
    v("threads", c.threads, "threads for the kernels (0: all cores)", at_least(0));
    v("early_stopping", c.early_stopping,
      "stop after N evaluations without a better accuracy; keep the best adapter", at_least(0));
    v("save_every", c.save_every, "write a checkpoint every N optimizer steps", at_least(0));
    v("max_steps", c.max_steps, "run exactly N optimizer steps, whatever the epochs (0: the epochs)",
      at_least(0));
    v("log_every", c.log_every, "optimizer steps between progress lines", at_least(1));
    v("eval_batch_size", c.eval_batch_size, "rows per forward pass of evaluation", at_least(1));
    DpSettings::fields(c.dp, v);
    v("replay_examples", c.replay_examples,
      "examples the replay buffer (replay.json) keeps for later updates: a uniform sample of the training rows");
    v("replay_bytes", c.replay_bytes, "bytes of text the replay buffer keeps at most, e.g. 1M", bytes());
    MemorySettings::fields(c, v);
  }

  double effective_lr() const;
  // run.json: every field; "train" is "<memory>" for rows given in memory, "lr" the effective one.
  nlohmann::json to_json() const;
  // The defaults with the keys of j over them; unknown keys and values are errors naming the key.
  static TrainConfig from_json(const nlohmann::json& j, const std::string& source = "options");
  // Every range of the table and the checks across fields; one line naming the setting.
  void validate() const;
};

struct TrainResult {
  std::int64_t steps = 0;
  int epochs_run = 0;
  bool interrupted = false;
  bool stopped_early = false;
  std::optional<EvalReport> final_eval;  // the kept adapter's evaluation
  std::size_t accountant_peak = 0;       // bytes
  std::size_t peak_rss = 0;              // VmHWM, bytes
  std::size_t memory_budget = 0;         // the run's budget, bytes (0: none)
  double seconds = 0;
  double examples_per_second = 0;
  std::optional<double> epsilon;         // DP-SGD: spent over the run, at dp_delta
  double dp_delta = 0;                   // DP-SGD: the delta of epsilon
};

// A batch of labelled rows as the run layer's StepBatch: the loss of a part is the mean
// cross-entropy of the classifier over its rows.
class ClassifierBatch : public StepBatch {
 public:
  ClassifierBatch(const BertModel& model, TensorBatch batch) : model_(model), batch_(std::move(batch)) {}
  std::size_t rows() const override;
  std::int64_t tokens() const override;
  double units(std::size_t, std::size_t n) const override { return static_cast<double>(n); }
  PartLoss loss(std::size_t start, std::size_t n, const ForwardOptions& options) const override;

 private:
  const BertModel& model_;
  TensorBatch batch_;
};

// One optimizer step of a classifier over labelled batches (run.h's train_step).
StepResult train_step(const BertModel& model, std::span<optim::Param> params,
                      optim::Optimizer& optimizer, std::span<const TensorBatch> batches, double lr,
                      const StepOptions& options);

// Rows [start, start + n) of a batch (the batch's length is kept).
TensorBatch slice_rows(const TensorBatch& batch, std::size_t start, std::size_t n);

// The fine-tuning run (run.h's Runner): Trainer(config, log).run(hooks), Trainer::resume(dir, log).
using Trainer = Runner<TrainConfig, TrainResult>;
template <>
TrainResult Trainer::run(const RunHooks& hooks);
extern template class Runner<TrainConfig, TrainResult>;

}  // namespace edgetune
