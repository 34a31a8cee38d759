// The run layer (see run.h).
#include "edgetune/engine/run.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "edgetune/autograd/autograd.h"
#include "edgetune/core/context.h"
#include "edgetune/core/file_io.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/data/batch.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/optim/clip.h"

namespace edgetune {

namespace fs = std::filesystem;

// ---- the run folder -----------------------------------------------------------------------------

nlohmann::json RunFolder::open_for_resume(const fs::path& dir) {
  const fs::path run_json = dir / "run.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(run_json, FileOrigin::Output));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(run_json.string() + ": not a run description (" + e.what() + ")");
  }
  std::error_code ec;
  if (!fs::exists(dir / "train_state.safetensors", ec)) {
    throw std::runtime_error((dir / "train_state.safetensors").string() +
                             ": missing: the run saved no checkpoint yet (use --save-every N)");
  }
  // A kill during an atomic write leaves its temporary file behind (never a torn target).
  remove_stale_temporaries(dir);
  return j;
}

void RunFolder::create() const { fs::create_directories(dir_); }

void RunFolder::write_settings(const nlohmann::json& settings) const {
  write_file_atomic(dir_ / "run.json", settings.dump(2) + "\n");
}

void RunFolder::add_metric(const nlohmann::json& j) {
  metrics_.push_back(j.dump());
  write_metrics();
}

void RunFolder::write_metrics() const {
  std::string text;
  for (const auto& l : metrics_) text += l + "\n";
  write_file_atomic(dir_ / "metrics.jsonl", text);
}

void RunFolder::restore_metrics(std::size_t lines) {
  metrics_.clear();
  std::istringstream in(read_file(dir_ / "metrics.jsonl", FileOrigin::Output));
  std::string line;
  while (metrics_.size() < lines && std::getline(in, line)) metrics_.push_back(line);
}

// ---- one optimizer step -------------------------------------------------------------------------

namespace {

ForwardOptions training_forward(const StepOptions& o) {
  ForwardOptions fo;
  fo.training = true;
  fo.checkpoint_layers = o.checkpoint_layers;
  fo.compute = o.compute;
  return fo;
}

// Calls f(start, n) for each micro-batch [start, start + n) of a batch of `rows` rows, `micro` rows
// at a time. Each draws its part of the dropout masks the whole batch would draw (DropoutRows),
// so the split changes no mask, and the generator ends where the whole batch's forward leaves it.
template <class F>
void for_micro_batches(std::size_t rows, std::size_t micro, F&& f) {
  RngState& rng = dropout_rng();
  const std::uint64_t base = rng.counter;
  std::uint64_t end = base;
  for (std::size_t start = 0; start < rows; start += micro) {
    const std::size_t n = std::min(micro, rows - start);
    rng.counter = base;
    {
      const DropoutRows part(start, n, rows);
      f(start, n);
    }
    end = rng.counter;
  }
  rng.counter = end;
}

}  // namespace

StepResult train_step(std::span<const StepBatch* const> batches, std::span<optim::Param> params,
                      optim::Optimizer& optimizer, double lr, const StepOptions& o) {
  const ForwardOptions fo = training_forward(o);
  StepResult r;
  for (const StepBatch* batch : batches) {
    const std::size_t rows = batch->rows();
    const std::size_t micro = o.micro_batch > 0 ? static_cast<std::size_t>(o.micro_batch) : rows;
    const double units = micro < rows ? batch->units(0, rows) : 0.0;
    for_micro_batches(rows, micro, [&](std::size_t start, std::size_t n) {
      const PartLoss part = batch->loss(start, n, fo);
      const double share = n == rows ? 1.0 : batch->units(start, n) / units;
      r.loss += part.loss.item() * share;
      r.correct += part.correct;
      r.predicted += part.predicted;
      backward(ops::scale(part.loss, share / static_cast<double>(batches.size())));
    });
  }
  r.loss /= static_cast<double>(batches.size());
  r.grad_norm = optim::clip_grad_norm(params, o.max_grad_norm);
  optimizer.step(params, lr);
  optim::zero_grad(params);
  return r;
}

namespace {

// The sum of the squares of x[0, n), in double.
double squares(const float* x, std::int64_t n) {
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

// The factor clip_grads_to_norm scales a gradient of norm `norm` by (optim/clip.cpp, as torch):
// float32 C * (1 / (norm + 1e-6)), and 1 where that is not below 1.
float clip_factor(double max_norm, double norm) {
  const float coef = static_cast<float>(max_norm) * (1.0f / (static_cast<float>(norm) + 1e-6f));
  return coef >= 1.0f ? 1.0f : coef;
}

// True when every row of the batch counts the same in its loss' mean (a classifier's rows; not
// masked-LM's tokens): then n times the mean loss of n rows is the sum of the rows' own losses.
bool rows_weigh_alike(const StepBatch& batch) {
  for (std::size_t row = 1; row < batch.rows(); ++row) {
    if (batch.units(row, 1) != batch.units(0, 1)) return false;
  }
  return true;
}

// DpClipping::ExampleAtATime: every row of the batch alone, its gradient clipped and added to sums.
void add_clipped_rows_alone(const StepBatch& batch, std::span<optim::Param> params,
                            const ForwardOptions& fo, double max_norm, std::vector<Tensor>& sums,
                            StepResult& r) {
  for_micro_batches(batch.rows(), 1, [&](std::size_t row, std::size_t) {
    const PartLoss part = batch.loss(row, 1, fo);
    r.loss += part.loss.item();
    r.correct += part.correct;
    r.predicted += part.predicted;
    backward(part.loss);
    const double norm = optim::grad_norm(params);
    optim::clip_grads_to_norm(params, max_norm, norm);
    for (std::size_t k = 0; k < params.size(); ++k) {
      const Tensor g = params[k].tensor.grad();
      if (!g.defined()) continue;
      float* sum = sums[k].data<float>();
      const float* x = g.data<float>();
      for (std::int64_t i = 0; i < g.numel(); ++i) sum[i] += x[i];
    }
    optim::zero_grad(params);
    r.grad_norm += norm;
  });
}

// DpClipping::PerExample: the batch in micro-batches of `micro` rows, each one forward and one
// backward with per-example gradients (autograd.h); each row's gradient clipped as above and
// added to sums.
void add_clipped_per_example(const StepBatch& batch, std::span<optim::Param> params,
                             const ForwardOptions& fo, std::size_t micro, double max_norm,
                             std::vector<Tensor>& sums, StepResult& r) {
  std::vector<Tensor> leaves;
  for (const optim::Param& p : params) leaves.push_back(p.tensor);
  for_micro_batches(batch.rows(), micro, [&](std::size_t start, std::size_t n) {
    PerExampleGrads per_example(static_cast<std::int64_t>(n), leaves);
    const PartLoss part = batch.loss(start, n, fo);
    const auto rows = static_cast<double>(n);
    r.loss += part.loss.item() * rows;
    r.correct += part.correct;
    r.predicted += part.predicted;
    // The gradient of the sum of the rows' losses: example b's part is its own loss' gradient.
    backward(part.loss, Tensor::full(part.loss.shape(), rows, part.loss.dtype(), MemCategory::Workspace),
             &per_example);
    for (std::int64_t b = 0; b < per_example.examples(); ++b) {
      double squared = 0;
      for (std::size_t k = 0; k < params.size(); ++k) {
        const Tensor& g = per_example.grads(k);
        squared += squares(g.data<float>() + b * g.dim(1), g.dim(1));
      }
      const double norm = std::sqrt(squared);
      const float coef = clip_factor(max_norm, norm);
      for (std::size_t k = 0; k < params.size(); ++k) {
        const Tensor& g = per_example.grads(k);
        const float* x = g.data<float>() + b * g.dim(1);
        float* sum = sums[k].data<float>();
        for (std::int64_t i = 0; i < g.dim(1); ++i) sum[i] += coef * x[i];
      }
      r.grad_norm += norm;
    }
  });
}

}  // namespace

StepResult dp_gradient(std::span<const StepBatch* const> batches, std::span<optim::Param> params,
                       const StepOptions& o, const DpPlan& dp, data::Rng& rng) {
  const ForwardOptions fo = training_forward(o);
  std::vector<Tensor> sums;
  for (const optim::Param& p : params) sums.push_back(Tensor::zeros(p.tensor.shape(), DType::F32, MemCategory::Grads));
  StepResult r;
  std::int64_t examples = 0;
  for (const StepBatch* batch : batches) {
    if (dp.clipping == DpClipping::PerExample && rows_weigh_alike(*batch)) {
      const std::size_t micro =
          o.micro_batch > 0 ? static_cast<std::size_t>(o.micro_batch) : batch->rows();
      add_clipped_per_example(*batch, params, fo, micro, dp.max_grad_norm, sums, r);
    } else {
      add_clipped_rows_alone(*batch, params, fo, dp.max_grad_norm, sums, r);
    }
    examples += static_cast<std::int64_t>(batch->rows());
  }
  if (examples > 0) {
    r.loss /= static_cast<double>(examples);
    r.grad_norm /= static_cast<double>(examples);
  }
  const double sd = dp.noise_multiplier * dp.max_grad_norm;
  const auto divisor = static_cast<float>(dp.expected_batch);
  for (std::size_t k = 0; k < params.size(); ++k) {
    float* sum = sums[k].data<float>();
    for (std::int64_t i = 0; i < sums[k].numel(); ++i) {
      sum[i] = (sum[i] + static_cast<float>(sd * data::normal_draw(rng))) / divisor;
    }
    params[k].tensor.set_grad(sums[k]);
  }
  return r;
}

StepResult dp_train_step(std::span<const StepBatch* const> batches, std::span<optim::Param> params,
                         optim::Optimizer& optimizer, double lr, const StepOptions& options,
                         const DpPlan& dp, data::Rng& rng) {
  const StepResult r = dp_gradient(batches, params, options, dp, rng);
  optimizer.step(params, lr);
  optim::zero_grad(params);
  return r;
}

// ---- the loop -----------------------------------------------------------------------------------

std::vector<std::size_t> epoch_order(const std::vector<std::size_t>& rows, bool shuffle,
                                     std::uint64_t seed, std::int64_t epoch) {
  std::vector<std::size_t> order = rows;
  if (shuffle) {
    data::Rng rng(seed + 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(epoch + 1));
    data::shuffle(std::span<std::size_t>(order), rng);
  }
  return order;
}

namespace {

std::int64_t steps_per_epoch_of(std::size_t rows, const LoopSettings& s) {
  if (s.batch_size < 1 || s.grad_accum < 1 || s.epochs < 1) {
    throw std::invalid_argument("batch size, epochs and gradient accumulation must be at least 1");
  }
  if (s.dp) return s.dp->steps_per_epoch;
  const std::int64_t batches = (static_cast<std::int64_t>(rows) + s.batch_size - 1) / s.batch_size;
  return (batches + s.grad_accum - 1) / s.grad_accum;
}

}  // namespace

std::string format_duration(double seconds) {
  char buf[32];
  if (seconds < 90) {
    std::snprintf(buf, sizeof buf, "%.0f s", seconds);
  } else if (seconds < 5400) {
    std::snprintf(buf, sizeof buf, "%.0f min", seconds / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f h", seconds / 3600);
  }
  return buf;
}

TrainingRun::TrainingRun(RunFolder& folder, RunTask& task, std::vector<optim::Param>& params,
                         optim::Optimizer& optimizer, LoopSettings settings, std::ostream* log,
                         RunHooks hooks)
    : folder_(folder),
      task_(task),
      params_(params),
      optimizer_(optimizer),
      s_(std::move(settings)),
      log_(log),
      hooks_(std::move(hooks)),
      steps_per_epoch_(steps_per_epoch_of(task.rows().size(), s_)),
      total_steps_(s_.max_steps > 0 ? s_.max_steps : steps_per_epoch_ * s_.epochs),
      schedule_(s_.schedule, optim::warmup_steps_from_ratio(total_steps_, s_.warmup_ratio), total_steps_),
      dp_rng_(s_.seed ^ 0xD1B54A32D192ED03ULL),
      started_(std::chrono::steady_clock::now()) {
  if (task.rows().empty()) throw std::invalid_argument("no training rows");
}

double TrainingRun::seconds() const {
  return seconds_before_ +
         std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

std::optional<double> TrainingRun::epsilon() const {
  if (!s_.dp) return std::nullopt;
  return s_.dp->epsilon(step_);
}

void TrainingRun::say(const std::string& text) const {
  if (log_) *log_ << text << std::flush;
}

// Numbers that must survive exactly (doubles) are written as JSON, which prints them exactly.
void TrainingRun::save_state() {
  task_.before_checkpoint(*this);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& p : params_) tensors.emplace_back("param/" + p.name, p.tensor);
  for (auto& [name, t] : optimizer_.state()) tensors.emplace_back("optim/" + name, t);
  const RngState rng = dropout_rng();
  std::map<std::string, std::string> meta = {
      {"format", s_.state_format},
      {"version", "1"},
      {"step", std::to_string(step_)},
      {"epoch", std::to_string(epoch_)},
      {"batch_in_epoch", std::to_string(batch_in_epoch_)},
      {"tokens_seen", std::to_string(tokens_seen_)},
      {"seconds", nlohmann::json(seconds()).dump()},
      {"loss_acc", nlohmann::json(loss_acc_).dump()},
      {"loss_n", std::to_string(loss_n_)},
      {"correct_acc", std::to_string(correct_acc_)},
      {"count_acc", std::to_string(predicted_acc_)},
      {"rng_seed", std::to_string(rng.seed)},
      {"rng_counter", std::to_string(rng.counter)},
      {"metrics_lines", std::to_string(folder_.metric_lines())},
  };
  if (s_.dp) {
    const auto st = dp_rng_.state();
    meta["dp_rng"] = nlohmann::json(std::vector<std::uint64_t>(st.begin(), st.end())).dump();
  }
  task_.save_counters(meta);
  safetensors::save(folder_.state_path(), tensors, meta);
}

void TrainingRun::load_state() {
  const fs::path path = folder_.state_path();
  safetensors::Reader r(path, FileOrigin::Output);
  const auto meta = r.metadata();
  auto get = [&](const char* key) -> const std::string& {
    const auto it = meta.find(key);
    if (it == meta.end()) throw std::runtime_error(path.string() + ": no '" + key + "' in the metadata");
    return it->second;
  };
  // Counters a state of an earlier version may lack start from zero.
  auto get_or_zero = [&](const char* key) -> std::string {
    const auto it = meta.find(key);
    return it == meta.end() ? "0" : it->second;
  };
  if (get("format") != s_.state_format) {
    throw std::runtime_error(path.string() + ": not a state of this kind of run (\"" + get("format") +
                             "\", expected \"" + s_.state_format + "\")");
  }
  step_ = std::stoll(get("step"));
  epoch_ = std::stoll(get("epoch"));
  batch_in_epoch_ = std::stoll(get("batch_in_epoch"));
  tokens_seen_ = std::stoll(get_or_zero("tokens_seen"));
  seconds_before_ = nlohmann::json::parse(get_or_zero("seconds")).get<double>();
  loss_acc_ = nlohmann::json::parse(get_or_zero("loss_acc")).get<double>();
  loss_n_ = std::stoll(get_or_zero("loss_n"));
  correct_acc_ = std::stoll(get_or_zero("correct_acc"));
  predicted_acc_ = std::stoll(get_or_zero("count_acc"));
  dropout_rng() = RngState{std::stoull(get("rng_seed")), std::stoull(get("rng_counter"))};
  if (s_.dp) {
    const auto st = nlohmann::json::parse(get("dp_rng")).get<std::vector<std::uint64_t>>();
    if (st.size() != 4) throw std::runtime_error(path.string() + ": 'dp_rng' is not 4 numbers");
    dp_rng_.set_state({st[0], st[1], st[2], st[3]});
  }
  task_.load_counters(get);
  for (auto& p : params_) {
    const Tensor saved = r.load("param/" + p.name, DType::F32, MemCategory::Workspace);
    if (saved.shape() != p.tensor.shape()) {
      throw std::runtime_error(path.string() + ": 'param/" + p.name + "' has shape " + saved.shape().str() +
                               ", the run's is " + p.tensor.shape().str());
    }
    std::copy_n(saved.data<float>(), saved.numel(), p.tensor.data<float>());
  }
  std::vector<std::pair<std::string, Tensor>> state;
  for (const auto& info : r.tensors()) {
    if (info.name.starts_with("optim/")) {
      state.emplace_back(info.name.substr(6), r.load(info, info.dtype == "F64" ? DType::F64 : DType::F32,
                                                     MemCategory::Workspace));
    }
  }
  optimizer_.load_state(state, params_);
  folder_.restore_metrics(std::stoul(get("metrics_lines")));
  folder_.write_metrics();
  say("resumed at step " + std::to_string(step_) + " (epoch " + std::to_string(epoch_ + 1) + ")\n");
}

void TrainingRun::start(bool resuming, const nlohmann::json& settings) {
  if (resuming) {
    load_state();
  } else {
    folder_.write_settings(settings);
    folder_.write_metrics();
  }
}

void TrainingRun::log_progress(double lr, double grad_norm, double epoch_pos, double items_per_second) {
  const MemoryStats ms = current_context().accountant->stats();
  Progress p;
  p.step = step_;
  p.total_steps = total_steps_;
  p.epoch = epoch_pos;
  p.loss = loss_acc_ / static_cast<double>(std::max<std::int64_t>(loss_n_, 1));
  p.lr = lr;
  p.grad_norm = grad_norm;
  (s_.tokens_throughput ? p.tokens_per_second : p.examples_per_second) = items_per_second;
  p.seconds = seconds();
  const double this_process = p.seconds - seconds_before_;
  const std::int64_t steps_here = step_ - steps_at_start_;
  if (steps_here > 0) {
    p.eta_seconds = static_cast<double>(total_steps_ - step_) * this_process / static_cast<double>(steps_here);
  }
  p.memory_live = ms.live_total + ms.cached;
  p.memory_peak = ms.peak_total;
  p.budget = s_.memory_budget;
  p.rss = process_rss();
  p.peak_rss = process_peak_rss();
  const ResidentSplit split = process_resident_split();
  p.rss_file = split.file;
  p.rss_private = split.private_bytes;
  p.epsilon = epsilon();

  const bool with_accuracy = s_.accuracy_key != nullptr && predicted_acc_ > 0;
  const double accuracy = with_accuracy ? static_cast<double>(correct_acc_) / static_cast<double>(predicted_acc_) : 0;
  char acc_text[32] = "";
  if (with_accuracy) std::snprintf(acc_text, sizeof acc_text, "  acc %.3f", accuracy);
  char eps_text[32] = "";
  if (p.epsilon) std::snprintf(eps_text, sizeof eps_text, "  eps %.3g", *p.epsilon);
  const std::string budget = p.budget > 0 ? " of " + format_bytes(p.budget) : "";
  const std::string split_text = split.known() ? " [private " + format_bytes(p.rss_private) + ", file " +
                                                     format_bytes(p.rss_file) + "]"
                                               : "";
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "step %lld/%lld  epoch %.2f  loss %.4f%s  lr %.3g  grad-norm %.3g%s  %.1f %s  eta %s  "
                "mem %s (peak %s)  rss %s%s (VmHWM %s%s)\n",
                static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.epoch, p.loss,
                acc_text, p.lr, p.grad_norm, eps_text, items_per_second, s_.tokens_throughput ? "tokens/s" : "ex/s",
                format_duration(p.eta_seconds).c_str(), format_bytes(p.memory_live).c_str(),
                format_bytes(p.memory_peak).c_str(), format_bytes(p.rss).c_str(), split_text.c_str(),
                format_bytes(p.peak_rss).c_str(), budget.c_str());
  if (hooks_.progress_lines) say(buf);
  nlohmann::json j = {{"type", "train"},
                      {"step", p.step},
                      {"epoch", p.epoch},
                      {"loss", p.loss},
                      {"lr", p.lr},
                      {"grad_norm", p.grad_norm},
                      {s_.tokens_throughput ? "tokens_per_second" : "examples_per_second", items_per_second},
                      {"tokens_seen", tokens_seen_},
                      {"seconds", p.seconds},
                      {"memory_live", p.memory_live},
                      {"memory_peak", p.memory_peak},
                      {"rss", p.rss},
                      {"peak_rss", p.peak_rss},
                      {"rss_file", p.rss_file},
                      {"rss_private", p.rss_private}};
  if (p.budget > 0) j["memory_budget"] = p.budget;
  if (with_accuracy) j[s_.accuracy_key] = accuracy;
  if (p.epsilon) j["epsilon"] = *p.epsilon;
  folder_.add_metric(j);
  if (hooks_.on_progress) hooks_.on_progress(p);
}

void TrainingRun::check_process_budget() {
  if (s_.memory_budget == 0 || s_.budget_scope != BudgetScope::Process) return;
  const std::size_t peak = process_peak_rss();
  if (peak <= s_.memory_budget) return;
  save_state();
  // A budget that holds this peak with a tenth to spare, in whole MiB.
  constexpr std::size_t kMiB = std::size_t{1} << 20;
  const std::size_t larger = (peak + peak / 10 + kMiB - 1) / kMiB;
  const std::string dir = folder_.dir().string();
  throw ProcessBudgetExceeded(
      "the process's peak resident set (VmHWM) reached " + format_bytes(peak) + " at step " +
          std::to_string(step_) + ", past the memory budget of " + format_bytes(s_.memory_budget) +
          " (the accountant's peak " + format_bytes(current_context().accountant->stats().peak_total) +
          "; the rest is outside it): checkpoint saved in " + dir + "; continue with a larger budget: " +
          s_.resume_command + " " + dir + " --memory-budget " + std::to_string(larger) + "M",
      peak, s_.memory_budget, step_);
}

RunResult TrainingRun::run() {
  using clock = std::chrono::steady_clock;
  started_ = clock::now();
  RunResult result;
  auto last_log = started_;
  std::int64_t items_at_log = 0, items = 0;
  steps_at_start_ = step_;
  bool done = step_ >= total_steps_;

  while (!done) {
    // DP-SGD draws each step's rows instead (a Poisson sample, in batches of at most the planned rows).
    const auto order = s_.dp ? std::vector<std::size_t>() : epoch_order(task_.rows(), s_.shuffle, s_.seed, epoch_);
    const auto batches = data::batch_rows(order, static_cast<std::size_t>(s_.batch_size));
    const auto n_batches = s_.dp ? steps_per_epoch_ : static_cast<std::int64_t>(batches.size());
    while (!done && batch_in_epoch_ < n_batches) {
      const auto first = static_cast<std::size_t>(batch_in_epoch_);
      std::size_t count = 1;
      std::vector<std::vector<std::size_t>> rows;
      if (s_.dp) {
        rows = data::batch_rows(poisson_sample(task_.rows(), s_.dp->sample_rate, dp_rng_),
                                static_cast<std::size_t>(std::max<std::int64_t>(s_.dp->likely_max_batch, 1)));
      } else {
        count = std::min(static_cast<std::size_t>(s_.grad_accum), batches.size() - first);
        rows.assign(batches.begin() + static_cast<std::ptrdiff_t>(first),
                    batches.begin() + static_cast<std::ptrdiff_t>(first + count));
      }
      std::vector<std::unique_ptr<StepBatch>> group;
      std::vector<const StepBatch*> parts;
      for (const auto& r : rows) {
        group.push_back(task_.batch(r, epoch_));
        parts.push_back(group.back().get());
      }
      const double lr = s_.lr * schedule_.factor(step_);
      const StepResult sr = s_.dp ? dp_train_step(parts, params_, optimizer_, lr, s_.step, *s_.dp, dp_rng_)
                                  : train_step(parts, params_, optimizer_, lr, s_.step);
      ++step_;
      batch_in_epoch_ += static_cast<std::int64_t>(count);
      for (const auto& b : group) {
        result.examples += static_cast<std::int64_t>(b->rows());
        result.tokens += b->tokens();
        tokens_seen_ += b->tokens();
      }
      items = s_.tokens_throughput ? result.tokens : result.examples;
      loss_acc_ += sr.loss;
      ++loss_n_;
      correct_acc_ += sr.correct;
      predicted_acc_ += sr.predicted;
      if (!std::isfinite(sr.loss)) {
        throw std::runtime_error("the loss became " + std::to_string(sr.loss) + " at step " +
                                 std::to_string(step_) + ": lower --lr, or keep --max-grad-norm on");
      }
      done = step_ >= total_steps_;
      if (step_ % std::max<std::int64_t>(s_.log_every, 1) == 0 || done) {
        const auto now = clock::now();
        const double dt = std::chrono::duration<double>(now - last_log).count();
        const double rate = dt > 0 ? static_cast<double>(items - items_at_log) / dt : 0.0;
        const double epoch_pos = static_cast<double>(epoch_) +
                                 static_cast<double>(batch_in_epoch_) / static_cast<double>(n_batches);
        log_progress(lr, sr.grad_norm, epoch_pos, rate);
        loss_acc_ = 0;
        loss_n_ = correct_acc_ = predicted_acc_ = 0;
        last_log = now;
        items_at_log = items;
      }
      task_.after_step(*this, done);
      check_process_budget();
      if (!done && hooks_.should_stop && hooks_.should_stop()) {
        result.interrupted = true;
        break;
      }
      if (!done && s_.save_every > 0 && step_ % s_.save_every == 0) {
        save_state();
        say("checkpoint at step " + std::to_string(step_) + " in " + folder_.dir().string() + "\n");
      }
    }
    if (result.interrupted) break;
    const bool epoch_done = batch_in_epoch_ >= n_batches;
    if (epoch_done) {
      ++epoch_;
      batch_in_epoch_ = 0;
    }
    if ((epoch_done || done) && task_.after_epoch(*this)) done = true;
    check_process_budget();
    if (!done) save_state();
  }
  save_state();
  if (result.interrupted) {
    say("interrupted at step " + std::to_string(step_) + ": checkpoint saved in " + folder_.dir().string() +
        "; continue with: " + s_.resume_command + " " + folder_.dir().string() + "\n");
  }
  task_.finish(*this, result.interrupted);
  result.steps = step_;
  result.epochs_run = epoch_;
  result.seconds = seconds();
  result.accountant_peak = current_context().accountant->stats().peak_total;
  result.peak_rss = process_peak_rss();
  result.epsilon = epsilon();
  return result;
}

}  // namespace edgetune
