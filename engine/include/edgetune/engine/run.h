// The run layer: the one training loop that fine-tuning, pretraining and later modes share.
//
// It owns the order of events of a run, and a mode (a RunTask) plugs in only what differs: the
// batches of its data and their loss, its evaluation, and what it saves. The run layer owns
//   - the run folder: run.json, metrics.jsonl, train_state.safetensors, atomic writes, and the
//     stale temporary files a kill leaves behind (cleared on resume);
//   - the state file and resume: "param/<name>" trainable tensors, "optim/<entry>" optimizer
//     state, the counters (step, epoch, position in the epoch, dropout generator, the logging
//     window, elapsed seconds) in the metadata; metrics.jsonl is cut back to the checkpoint's lines;
//   - stopping: a StopToken per run, or any should_stop hook; no process-wide flag;
//   - progress lines (people) and "train" metrics (metrics.jsonl), and a progress callback;
//   - epoch shuffling, seeded by (seed, epoch) only, so a resume rebuilds the order;
//   - train_step: grad_accum batches per optimizer step, each split into micro-batches, with
//     encoder-layer checkpointing, gradient clipping, the optimizer step and the schedule;
//   - the NaN-loss stop;
//   - DP-SGD when LoopSettings::dp is set (dp.h): Poisson-sampled batches, dp_train_step, and
//     the epsilon spent in every progress line.
//
// Order of events of one epoch: shuffle; for each optimizer step: train_step, progress line
// (every log_every steps and at the last), task.after_step (may evaluate), the process budget's
// check (past it: a checkpoint, then ProcessBudgetExceeded), stop check (saves a checkpoint and
// returns), checkpoint every save_every steps. At the end of an epoch (or of the last step):
// task.after_epoch (may evaluate, may end the run), the budget's check, then a checkpoint. At the end of
// the run: a checkpoint, then task.finish. max_steps > 0 runs exactly that many steps, whatever
// the epochs (as the Hugging Face Trainer).
//
// Resuming with the same settings and thread count ends with the same bytes as an uninterrupted
// run: everything the loop's future depends on is in the state.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgetune/core/encryption.h"
#include "edgetune/core/memory.h"
#include "edgetune/autograd/tensor.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/engine/bert.h"
#include "edgetune/engine/dp.h"
#include "edgetune/engine/settings.h"
#include "edgetune/optim/optimizer.h"
#include "edgetune/optim/schedule.h"

namespace edgetune {

// ---- stopping -----------------------------------------------------------------------------------

// A request to stop one run, shared by copies of the token. request_stop() may be called from any
// thread, and from a signal handler (it only stores to a lock-free atomic).
class StopToken {
 public:
  StopToken() : flag_(std::make_shared<std::atomic<bool>>(false)) {}
  void request_stop() const noexcept { flag_->store(true); }
  bool stop_requested() const noexcept { return flag_->load(); }
  void reset() const noexcept { flag_->store(false); }

 private:
  std::shared_ptr<std::atomic<bool>> flag_;
};

// ---- the memory budget --------------------------------------------------------------------------

// What a memory budget bounds. Process: the process's peak resident set (VmHWM), so the planner
// subtracts a baseline measured at the start (code, libraries, threads, whatever the process
// already holds). Session: this run's own memory only (its accountant and the heap's slack around
// it), for an app that runs several sessions in one process and shares its memory among them: a
// baseline measured there would count the other sessions.
enum class BudgetScope { Process, Session };
inline constexpr settings::Choice<BudgetScope> kBudgetScopeNames[] = {{BudgetScope::Process, "process"},
                                                                      {BudgetScope::Session, "session"}};

// Thrown by a run under a process budget when the process's peak resident set (VmHWM) has passed
// the budget: the plan's estimate of what lies outside the accountant fell short. The run saved a
// checkpoint first; resuming with a larger budget (or a smaller micro-batch) continues it.
class ProcessBudgetExceeded : public std::runtime_error {
 public:
  ProcessBudgetExceeded(const std::string& message, std::size_t peak_rss, std::size_t budget, std::int64_t step)
      : std::runtime_error(message), peak_rss(peak_rss), budget(budget), step(step) {}
  std::size_t peak_rss;  // VmHWM when the run stopped
  std::size_t budget;
  std::int64_t step;     // the optimizer steps done, all in the checkpoint
};

// ---- progress -----------------------------------------------------------------------------------

// One progress report, after a logged optimizer step.
struct Progress {
  std::int64_t step = 0, total_steps = 0;
  double epoch = 0;                // epochs done, fractional
  double loss = 0;                 // mean over the steps since the last report
  double lr = 0, grad_norm = 0;
  double examples_per_second = 0, tokens_per_second = 0;
  double seconds = 0;              // training time of the whole run, resumes included
  double eta_seconds = 0;          // estimated time left
  std::size_t memory_live = 0;     // the accountant's live bytes (cached blocks included)
  std::size_t memory_peak = 0;     // the accountant's peak
  std::size_t budget = 0;          // the run's memory budget, which bounds VmHWM (0: none)
  std::size_t rss = 0, peak_rss = 0;  // the process's resident set now and its peak (VmHWM)
  // The resident set now split into file-backed pages (a mapped model file's weights, code) and
  // private memory (core's ResidentSplit; both 0 where the OS does not say).
  std::size_t rss_file = 0, rss_private = 0;
  std::optional<double> epsilon;   // DP-SGD: the epsilon spent so far, at the plan's delta
};

// A duration for people, as progress lines give the time left: "45 s", "12 min", "3.2 h".
std::string format_duration(double seconds);

struct RunHooks {
  std::function<bool()> should_stop;                  // asked after every optimizer step
  std::function<void(const Progress&)> on_progress;   // after every progress line
  // false: the progress lines stay out of the log (a caller that draws progress itself from
  // on_progress, such as a terminal's live line); the run's other messages still reach it.
  bool progress_lines = true;
};

// ---- the run folder -----------------------------------------------------------------------------

class RunFolder {
 public:
  explicit RunFolder(std::filesystem::path dir) : dir_(std::move(dir)) {}
  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path state_path() const { return dir_ / "train_state.safetensors"; }

  // The settings of a run to resume (run.json), after checking that a checkpoint exists and
  // removing the temporary files a kill during an atomic write leaves behind.
  static nlohmann::json open_for_resume(const std::filesystem::path& dir);

  void create() const;
  void write_settings(const nlohmann::json& settings) const;  // run.json

  // metrics.jsonl: one JSON object per line, rewritten atomically at every addition.
  void add_metric(const nlohmann::json& j);
  void write_metrics() const;
  std::size_t metric_lines() const { return metrics_.size(); }
  const std::vector<std::string>& metrics() const { return metrics_; }
  // Reads back the first `lines` lines of metrics.jsonl (those of a checkpoint).
  void restore_metrics(std::size_t lines);

 private:
  std::filesystem::path dir_;
  std::vector<std::string> metrics_;
};

// ---- one optimizer step -------------------------------------------------------------------------

// The loss of a part of a batch: a mean over the part's units (rows for a classifier, masked
// tokens for masked-LM), recorded on the tape; and how many of its predictions were right, for
// modes that report a training accuracy.
struct PartLoss {
  Tensor loss;  // scalar
  std::int64_t correct = 0, predicted = 0;
};

// A batch of a training step. Any contiguous run of its rows can be taken alone (a micro-batch).
class StepBatch {
 public:
  virtual ~StepBatch() = default;
  virtual std::size_t rows() const = 0;
  virtual std::int64_t tokens() const = 0;  // non-padding tokens, for throughput
  // The units of rows [start, start + n): the loss of the part is a mean over them.
  virtual double units(std::size_t start, std::size_t n) const = 0;
  virtual PartLoss loss(std::size_t start, std::size_t n, const ForwardOptions& options) const = 0;
};

// One optimizer step: for each batch (the grad_accum batches of the step), forward and backward,
// split into micro-batches of micro_batch rows when 0 < micro_batch < rows (each part's mean loss
// weighted by its share of the batch's units, divided by the number of batches); then gradient
// clipping to max_grad_norm (0: off), the optimizer step with lr, and the gradients zeroed.
struct StepOptions {
  double max_grad_norm = 1.0;
  std::int64_t micro_batch = 0;
  bool checkpoint_layers = false;
  Compute compute = Compute::F32;  // linear layers over a quantized base
};
struct StepResult {
  double loss = 0;       // mean over the batches of each batch's mean loss
  double grad_norm = 0;  // total gradient norm before clipping
  std::int64_t correct = 0, predicted = 0;
};
StepResult train_step(std::span<const StepBatch* const> batches, std::span<optim::Param> params,
                      optim::Optimizer& optimizer, double lr, const StepOptions& options);

// DP-SGD's gradient (dp.h) of one Poisson sample, given as `batches` (several when a large sample
// is split; none for an empty one). Each row's gradient over all of params is had as dp.clipping
// says: with DpClipping::PerExample, from one forward and one backward per micro-batch of
// options.micro_batch rows (0: the whole batch) with per-example gradients (autograd.h's
// PerExampleGrads: a (rows, numel) float32 buffer per param, counted as gradients), for a batch
// whose rows weigh alike in its loss (units(row, 1) all equal); otherwise, and with
// ExampleAtATime, every row alone (forward and backward, a micro-batch of one). Each row's
// gradient is clipped to dp.max_grad_norm as clip_grads_to_norm does (float32 factor
// min(1, C / (norm + 1e-6))) and added to a float32 sum (one buffer per param, counted as
// gradients); then N(0, (S C)^2) noise from `rng`
// (normal_draw, params in order, elements in order) is added to every element, the sums divided
// by dp.expected_batch and left as the params' grads. Every param gets a grad, noise alone where no
// example reached it. Returns the mean loss over the rows (0 for none) and, as grad_norm, the mean
// of the rows' gradient norms before clipping. Requires the grads zero or undefined on entry.
StepResult dp_gradient(std::span<const StepBatch* const> batches, std::span<optim::Param> params,
                       const StepOptions& options, const DpPlan& dp, data::Rng& rng);
// dp_gradient, the optimizer step with lr, and the grads zeroed.
StepResult dp_train_step(std::span<const StepBatch* const> batches, std::span<optim::Param> params,
                         optim::Optimizer& optimizer, double lr, const StepOptions& options,
                         const DpPlan& dp, data::Rng& rng);

// ---- the loop -----------------------------------------------------------------------------------

class TrainingRun;

// What a mode supplies.
class RunTask {
 public:
  virtual ~RunTask() = default;
  // The training rows (indices into the mode's data), in their unshuffled order.
  virtual const std::vector<std::size_t>& rows() const = 0;
  // The batch of `rows` (indices from rows()) in `epoch`.
  virtual std::unique_ptr<StepBatch> batch(std::span<const std::size_t> rows,
                                           std::int64_t epoch) const = 0;
  // After each optimizer step and its progress line; `last` on the run's last step.
  virtual void after_step(TrainingRun& /*run*/, bool /*last*/) {}
  // At the end of an epoch, or after the run's last step: returns true to end the run.
  virtual bool after_epoch(TrainingRun& /*run*/) { return false; }
  // The mode's counters in the state's metadata, and restoring them (get throws on a missing key).
  virtual void save_counters(std::map<std::string, std::string>& /*meta*/) const {}
  virtual void load_counters(const std::function<const std::string&(const char*)>& /*get*/) {}
  // Files written before every state file (a state never lies ahead of them).
  virtual void before_checkpoint(const TrainingRun& /*run*/) {}
  // The end of the run, after its last checkpoint.
  virtual void finish(TrainingRun& /*run*/, bool /*interrupted*/) {}
};

struct LoopSettings {
  std::int64_t batch_size = 16;  // rows per batch
  std::int64_t grad_accum = 1;   // batches per optimizer step
  bool shuffle = true;
  std::uint64_t seed = 42;       // epoch order: (seed, epoch)
  std::int64_t epochs = 1;
  std::int64_t max_steps = 0;    // > 0: exactly this many steps, whatever the epochs
  std::int64_t log_every = 10;
  std::int64_t save_every = 0;   // 0: checkpoints only at epoch ends, stops and the end
  double lr = 5e-4;              // peak
  double warmup_ratio = 0;
  optim::Schedule::Kind schedule = optim::Schedule::Kind::Linear;
  StepOptions step;              // clipping and the memory plan
  std::size_t memory_budget = 0;  // the run's memory budget (0: none)
  // Process: after every optimizer step and evaluation the loop checks VmHWM against the budget,
  // and past it saves a checkpoint and throws ProcessBudgetExceeded.
  BudgetScope budget_scope = BudgetScope::Process;
  bool tokens_throughput = false;  // progress lines show tokens/s instead of examples/s
  const char* accuracy_key = nullptr;  // metrics key of the training accuracy window, if any
  std::string state_format;      // "format" in the state's metadata
  std::string resume_command;    // "edgetune train --resume": said when a run is interrupted
  // DP-SGD: each step a Poisson sample of the rows (split into batches of at most
  // dp->likely_max_batch rows) through dp_train_step, dp->steps_per_epoch steps an epoch
  // (batch_size and grad_accum then do not shape the steps; max_grad_norm is not applied).
  std::optional<DpPlan> dp;
};

struct RunResult {
  std::int64_t steps = 0;
  std::int64_t epochs_run = 0;
  std::int64_t examples = 0, tokens = 0;  // trained on by this process
  bool interrupted = false;
  double seconds = 0;  // training time of the whole run, resumes included
  std::size_t accountant_peak = 0;
  std::size_t peak_rss = 0;
  std::optional<double> epsilon;  // DP-SGD: spent over the whole run
};

class TrainingRun {
 public:
  // params and optimizer are the model's; log (may be null) gets the progress lines.
  TrainingRun(RunFolder& folder, RunTask& task, std::vector<optim::Param>& params,
              optim::Optimizer& optimizer, LoopSettings settings, std::ostream* log,
              RunHooks hooks = {});

  std::int64_t steps_per_epoch() const { return steps_per_epoch_; }
  std::int64_t total_steps() const { return total_steps_; }
  const optim::Schedule& schedule() const { return schedule_; }
  std::int64_t step() const { return step_; }
  std::int64_t epoch() const { return epoch_; }
  std::int64_t tokens_seen() const { return tokens_seen_; }  // over the whole run
  double seconds() const;
  // DP-SGD: the epsilon spent by the steps so far (nullopt without DP).
  std::optional<double> epsilon() const;
  RunFolder& folder() { return folder_; }
  const RunFolder& folder() const { return folder_; }
  void say(const std::string& text) const;

  // Before run(): restores the checkpoint when resuming; else writes run.json (`settings`) and an
  // empty metrics.jsonl.
  void start(bool resuming, const nlohmann::json& settings);
  // Restores a checkpoint (after the model and optimizer are built); throws naming the file.
  void load_state();
  void save_state();
  RunResult run();

 private:
  RunFolder& folder_;
  RunTask& task_;
  std::vector<optim::Param>& params_;
  optim::Optimizer& optimizer_;
  LoopSettings s_;
  std::ostream* log_;
  RunHooks hooks_;
  std::int64_t steps_per_epoch_ = 0, total_steps_ = 0;
  optim::Schedule schedule_;

  // Saved in the state.
  std::int64_t step_ = 0, epoch_ = 0, batch_in_epoch_ = 0;
  std::int64_t tokens_seen_ = 0;
  double seconds_before_ = 0;
  double loss_acc_ = 0;
  std::int64_t loss_n_ = 0, correct_acc_ = 0, predicted_acc_ = 0;
  data::Rng dp_rng_;  // DP-SGD's sampling and noise

  std::chrono::steady_clock::time_point started_;
  std::int64_t steps_at_start_ = 0;
  void log_progress(double lr, double grad_norm, double epoch_pos, double items_per_second);
  // Under a process budget: past it, a checkpoint, then ProcessBudgetExceeded.
  void check_process_budget();
};

// ---- modes ---------------------------------------------------------------------------------------

// The memory settings of every mode: a budget in bytes (0: none), and the plan. micro_batch 0 and
// checkpoint_layers unset let the planner choose under the budget; set them to force a plan.

struct MemorySettings {
  std::size_t memory_budget = 0;
  BudgetScope budget_scope = BudgetScope::Process;
  int micro_batch = 0;
  std::optional<bool> checkpoint_layers;
  // The key the run folder is written and read with (core's encryption.h), made the run's
  // context's key; null: plain files. Not a setting: never in run.json, and a resume takes the
  // key of the calling thread's context, with which it read run.json.
  std::shared_ptr<const EncryptionKey> key;

  template <class Self, class V>
  static void fields(Self& c, V& v) {
    using namespace settings;
    v("memory_budget", c.memory_budget,
      "hard memory limit, e.g. 128M: the planner picks checkpointing and micro-batches to fit, and "
      "an allocation beyond it is an error, not a kill",
      bytes());
    v("budget_scope", c.budget_scope, kBudgetScopeNames,
      "what --memory-budget bounds: process (the peak resident set, VmHWM) or session (this run's "
      "own memory, for several sessions sharing one process)");
    v("micro_batch", c.micro_batch, "rows per forward/backward (0: the planner decides)", at_least(0));
    v("checkpoint_layers", c.checkpoint_layers, "encoder-layer checkpointing: auto, on, off",
      with_flag("--checkpointing"));
  }
};

// The loop settings that a mode's settings name alike (Config has batch_size, seed, epochs,
// max_steps, log_every, save_every, warmup_ratio, max_grad_norm and memory_budget), with the peak
// lr and the plan.
template <class Config>
LoopSettings loop_settings(const Config& c, double lr, std::int64_t micro_batch, bool checkpoint_layers) {
  LoopSettings s;
  s.batch_size = c.batch_size;
  s.seed = c.seed;
  s.epochs = c.epochs;
  s.max_steps = c.max_steps;
  s.log_every = c.log_every;
  s.save_every = c.save_every;
  s.lr = lr;
  s.warmup_ratio = c.warmup_ratio;
  s.step = StepOptions{c.max_grad_norm, micro_batch, checkpoint_layers};
  s.memory_budget = c.memory_budget;
  s.budget_scope = c.budget_scope;
  return s;
}

// Adam's options from a mode's settings (adam_beta1, adam_beta2, adam_eps, weight_decay).
template <class Config>
optim::AdamOptions adam_options(const Config& c) {
  optim::AdamOptions o;
  o.beta1 = c.adam_beta1;
  o.beta2 = c.adam_beta2;
  o.eps = c.adam_eps;
  o.weight_decay = c.weight_decay;
  return o;
}

// What a resumed run may change.
struct ResumeOverrides {
  std::optional<int> threads;                // changes the bits of the result
  std::optional<std::size_t> memory_budget;  // the plan may change; the result does not
};

// A training run of one mode, prepared and then run through the run layer. Trainer (fine-tuning)
// and Pretrainer (masked-LM pretraining) are this with their settings and result; each mode's
// .cpp defines Impl (its RunTask) and run(). A run writes its folder (run.json, metrics.jsonl,
// train_state.safetensors and the mode's files) atomically; resuming with the same settings and
// thread count ends with the same bytes as an uninterrupted run.
template <class Config, class Result>
class Runner {
 public:
  // log: progress lines and reports for people (null: silent).
  Runner(Config config, std::ostream* log);
  // Continues the run in `run_dir` from its train_state.safetensors, with the settings of its
  // run.json (a key it lacks takes its default) and the overrides.
  static Runner resume(const std::filesystem::path& run_dir, std::ostream* log, ResumeOverrides overrides = {});
  // Continues the run in config.out with settings the caller read from its run.json
  // (RunFolder::open_for_resume) and completed, e.g. with training rows held in memory.
  static Runner resume(Config config, std::ostream* log);
  ~Runner();
  Runner(Runner&&) noexcept;

  // hooks.should_stop is asked after every optimizer step: when it returns true the run saves a
  // checkpoint and returns with the result's `interrupted` set.
  Result run(const RunHooks& hooks = {});

  // The run's own accountant (its budget, live bytes and peaks). It is thread-safe: any thread may
  // read its figures while the run works.
  std::shared_ptr<const Accountant> accountant() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The epoch's order of `rows`: shuffled by a generator seeded with (seed, epoch) only.
std::vector<std::size_t> epoch_order(const std::vector<std::size_t>& rows, bool shuffle,
                                     std::uint64_t seed, std::int64_t epoch);

}  // namespace edgetune
