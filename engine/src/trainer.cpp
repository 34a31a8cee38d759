// The trainer (see trainer.h).
#include "edgetune/engine/trainer.h"

#include <malloc.h>

#include <algorithm>
#include <sstream>

#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/data/error.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/model_file.h"
#include "edgetune/engine/planner.h"
#include "runner_impl.h"

namespace edgetune {

namespace fs = std::filesystem;

// ---- settings ------------------------------------------------------------------------------------

double TrainConfig::effective_lr() const {
  if (lr > 0) return lr;
  return method.method == Method::Full ? 5e-5 : 5e-4;
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j = settings::to_json(*this);
  if (train_data) j["train"] = "<memory>";
  j["lr"] = effective_lr();
  return j;
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& source) {
  return settings::from_json<TrainConfig>(j, source);
}

void TrainConfig::validate() const {
  settings::check_ranges(*this);
  for (const std::string& t : method.lora_targets) {
    const auto& names = lora_target_names();
    if (std::find(names.begin(), names.end(), t) == names.end()) {
      throw settings::SettingError("lora_targets: unknown module '" + t +
                                   "' (expected query, key, value, attention.output, intermediate or output)");
    }
  }
  if (optimizer == optim::OptimizerKind::Sgd && nesterov && (momentum <= 0 || dampening != 0)) {
    throw settings::SettingError("nesterov: SGD with Nesterov momentum needs momentum above 0 and dampening 0");
  }
}

// ---- one step over labelled batches -------------------------------------------------------------

TensorBatch slice_rows(const TensorBatch& b, std::size_t start, std::size_t n) {
  const std::int64_t t = b.inputs.input_ids.dim(1);
  auto rows = [&](const Tensor& x) {
    return Tensor::from_ints(Shape{static_cast<std::int64_t>(n), t},
                             std::span<const std::int32_t>(x.data<std::int32_t>() + start * t, n * t));
  };
  TensorBatch out;
  out.inputs = {rows(b.inputs.input_ids), rows(b.inputs.token_type_ids), rows(b.inputs.attention_mask)};
  if (b.labels.defined()) {
    out.labels = Tensor::from_ints(Shape{static_cast<std::int64_t>(n)},
                                   std::span<const std::int32_t>(b.labels.data<std::int32_t>() + start, n));
  }
  out.rows.assign(b.rows.begin() + static_cast<std::ptrdiff_t>(std::min(start, b.rows.size())),
                  b.rows.begin() + static_cast<std::ptrdiff_t>(std::min(start + n, b.rows.size())));
  return out;
}

std::size_t ClassifierBatch::rows() const { return static_cast<std::size_t>(batch_.inputs.input_ids.dim(0)); }

std::int64_t ClassifierBatch::tokens() const {
  const Tensor& m = batch_.inputs.attention_mask;
  const std::int32_t* p = m.data<std::int32_t>();
  return std::count_if(p, p + m.numel(), [](std::int32_t x) { return x != 0; });
}

PartLoss ClassifierBatch::loss(std::size_t start, std::size_t n, const ForwardOptions& options) const {
  const TensorBatch part = n == rows() ? batch_ : slice_rows(batch_, start, n);
  return PartLoss{ops::cross_entropy(model_.classify(part.inputs, options), part.labels)};
}

StepResult train_step(const BertModel& model, std::span<optim::Param> params,
                      optim::Optimizer& optimizer, std::span<const TensorBatch> batches, double lr,
                      const StepOptions& options) {
  std::vector<ClassifierBatch> parts;
  parts.reserve(batches.size());
  for (const TensorBatch& b : batches) parts.emplace_back(model, b);
  std::vector<const StepBatch*> ptrs;
  for (const ClassifierBatch& b : parts) ptrs.push_back(&b);
  return train_step(ptrs, params, optimizer, lr, options);
}

// ---- the trainer ---------------------------------------------------------------------------------

// The fine-tuning mode of the run layer: labelled rows, the classifier's loss, evaluation after each
// epoch with early stopping, the adapter at the end.
template <>
struct Runner<TrainConfig, TrainResult>::Impl : ModeState<TrainConfig> {

  // The accountant of the run's tensors and data.
  Accountant& accountant = *context.accountant;
  // Under a budget: what the process holds outside the accountant (measured before loading).
  Baseline baseline;

  // Data: the rows packed, the tokenizer's tables charged to the accountant.
  std::optional<data::WordPieceTokenizer> tokenizer;
  Charge tokenizer_bytes;
  std::vector<std::string> labels;
  data::TokenStore train_store{accountant}, eval_store{accountant};
  std::vector<std::size_t> train_rows;  // 0 .. train_store.size() - 1
  // The replay buffer written at the end, counted as data.
  std::shared_ptr<const data::ReplayBuffer> replay;
  Charge replay_charge;

  // Model and optimisation.
  BertModel model;
  std::vector<optim::Param> params;
  std::unique_ptr<optim::Optimizer> optimizer;
  Plan plan;
  std::optional<DpPlan> dp;  // DP-SGD

  // Early stopping (saved in the state).
  double best_metric = -1;
  int bad_evals = 0;
  std::optional<EvalReport> last_eval;
  bool stopped_early = false;

  void prepare(RunFolder& folder);
  // The rows of the run: read, labelled, tokenized, split. Returns the label map.
  data::LabelMap load_data(const BertConfig& base_cfg);
  // The plan, the model with its adapters, the trainable parameters and the optimizer. Returns
  // the base storage.
  DType build_model(const BertConfig& base_cfg);
  void save_adapter() { save_trained(model, cfg.method, cfg.out, cfg.model_dir); }

  // RunTask
  const std::vector<std::size_t>& rows() const override { return train_rows; }
  std::unique_ptr<StepBatch> batch(std::span<const std::size_t> rows, std::int64_t) const override {
    return std::make_unique<ClassifierBatch>(
        model, to_tensors(data::make_batch(train_store, rows, tokenizer->pad_id(), true)));
  }
  bool after_epoch(TrainingRun& run) override;
  void save_counters(std::map<std::string, std::string>& meta) const override {
    meta["best_metric"] = nlohmann::json(best_metric).dump();
    meta["bad_evals"] = std::to_string(bad_evals);
  }
  void load_counters(const std::function<const std::string&(const char*)>& get) override {
    best_metric = nlohmann::json::parse(get("best_metric")).get<double>();
    bad_evals = std::stoi(get("bad_evals"));
  }
  void finish(TrainingRun& run, bool interrupted) override;
};

// Nothing is written to the run folder until the data, the plan and the model are known to be
// good: a run that fails to start leaves no folder behind.
void Trainer::Impl::prepare(RunFolder& folder) {
  if (cfg.out.empty()) throw std::invalid_argument("--out RUN_DIR is required");
  cfg.validate();
  context.threads = kernels::resolve_threads(cfg.threads);
  context.key = cfg.key;
  if (cfg.memory_budget > 0 && cfg.budget_scope == BudgetScope::Process) baseline = measure_baseline();
  const BertConfig base_cfg = load_config(cfg.model_dir);
  const data::LabelMap map = load_data(base_cfg);
#if defined(__GLIBC__)
  // The rows read from the file are freed by now, leaving holes in the heap: their pages go back
  // to the OS until the run's small objects (graph nodes, batches, small tensors) land in them.
  malloc_trim(0);
#endif
  // The holes stay the heap's, and the run makes them resident again: the plan counts them.
  if (cfg.memory_budget > 0 && cfg.budget_scope == BudgetScope::Process) baseline.heap_free = process_heap_free();
  const DType base = build_model(base_cfg);
  folder.create();
  if (!resuming) map.save(cfg.out / "labels.json");

  std::int64_t trainable = 0;
  for (const auto& p : params) trainable += p.tensor.numel();
  std::ostringstream s;
  s << "model " << cfg.model_dir.string() << ": " << model.config.num_hidden_layers << " layers, hidden "
    << model.config.hidden_size << ", base " << dtype_name(base) << ", method "
    << method_name(cfg.method.method) << ", " << trainable << " trainable parameters\n"
    << "data: " << train_store.size() << " training rows, " << eval_store.size() << " evaluation rows, "
    << labels.size() << " classes; ";
  say(s.str());
}

data::LabelMap Trainer::Impl::load_data(const BertConfig& base_cfg) {
  if (cfg.data.max_length > base_cfg.max_position_embeddings) {
    // The default length gives way to a model with fewer positions; a length asked for does not.
    if (cfg.data.max_length == DataOptions::kDefaultMaxLength) {
      cfg.data.max_length = static_cast<int>(base_cfg.max_position_embeddings);
    } else {
      throw settings::SettingError("max_length " + std::to_string(cfg.data.max_length) +
                                 " is longer than the model's max_position_embeddings (" +
                                   std::to_string(base_cfg.max_position_embeddings) + ")");
    }
  }
  data::Dataset train = cfg.train_data ? *cfg.train_data : read_data(cfg.train_file, cfg.data, true);
  if (train.bad_rows) {
    say("skipped " + std::to_string(train.bad_rows) + " bad rows of " + train.source + " (first: " +
        train.bad_row_messages.front() + ")\n");
  }
  if (train.examples.empty()) throw std::invalid_argument(train.source + ": no training rows");
  const std::filesystem::path init_labels =
      cfg.init_adapter.empty() ? std::filesystem::path() : cfg.init_adapter / "labels.json";
  data::LabelMap map = data::LabelMap::from_dataset(train);
  if (!cfg.labels.empty()) {
    map = data::LabelMap(cfg.labels);
  } else if (!init_labels.empty() && std::filesystem::exists(init_labels)) {
    // The adapter started from brings its classifier head, so its classes in its order, whatever
    // subset of them these rows hold (a federated client's shard may hold one class only).
    map = data::LabelMap::load(init_labels);
  } else {
    if (map.size() < 2) {
      throw data::DataError(train.source, "every training row has the label '" + map.id2label().front() +
                                              "': a classifier needs rows of at least 2 classes");
    }
    // The model's own label order wins when it names exactly the labels of the data.
    if (!base_cfg.id2label.empty()) {
      std::vector<std::string> a = base_cfg.id2label, b = map.id2label();
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      if (a == b) map = data::LabelMap(base_cfg.id2label);
    }
  }
  map.assign(train);
  labels = map.id2label();

  tokenizer.emplace(load_model_tokenizer(cfg.model_dir));
  tokenizer_bytes = Charge(accountant, MemCategory::Data, tokenizer->bytes());
  // Each row is encoded straight into the store of its side of the split.
  const std::size_t n = train.examples.size();
  const data::Split split = data::train_eval_split(n, cfg.eval_file.empty() ? cfg.eval_split : 0, cfg.seed);
  data::encode_rows(*tokenizer, train, split.train, cfg.data.max_length, train_store);
  data::encode_rows(*tokenizer, train, split.eval, cfg.data.max_length, eval_store);
  if (cfg.replay) {
    replay = cfg.replay;
  } else {
    auto fresh = std::make_shared<data::ReplayBuffer>(cfg.replay_examples, cfg.replay_bytes, cfg.seed);
    for (const std::size_t i : split.train) fresh->add(train.examples[i]);
    replay = std::move(fresh);
  }
  replay_charge = Charge(accountant, MemCategory::Data, replay->bytes());
  say(invalid_utf8_note(train_store.rows_with_invalid_utf8() + eval_store.rows_with_invalid_utf8(),
                        train.source));
  if (!cfg.eval_file.empty()) {
    data::Dataset ev = read_data(cfg.eval_file, cfg.data, true, &map);
    std::vector<std::size_t> all(ev.examples.size());
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
    data::encode_rows(*tokenizer, ev, all, cfg.data.max_length, eval_store);
    say(invalid_utf8_note(eval_store.rows_with_invalid_utf8(), ev.source));
  }
  if (cfg.early_stopping > 0 && eval_store.size() == 0) {
    throw std::invalid_argument("--early-stopping needs evaluation data: give --eval FILE or --eval-split");
  }
  train_rows.resize(train_store.size());
  for (std::size_t i = 0; i < train_rows.size(); ++i) train_rows[i] = i;
  return map;
}

DType Trainer::Impl::build_model(const BertConfig& base_cfg) {
  BertConfig model_cfg = base_cfg;
  if (cfg.dropout) {
    model_cfg.hidden_dropout_prob = *cfg.dropout;
    model_cfg.attention_probs_dropout_prob = *cfg.dropout;
    model_cfg.classifier_dropout = *cfg.dropout;
  }
  // VmHWM never falls: a process that reading the data took past the budget cannot keep within it.
  if (cfg.memory_budget > 0 && cfg.budget_scope == BudgetScope::Process &&
      process_peak_rss() > cfg.memory_budget) {
    throw PlanError("reading and packing the data took the process's peak resident set (VmHWM) to " +
                    format_bytes(process_peak_rss()) + ", past the memory budget of " +
                    format_bytes(cfg.memory_budget) + ": raise --memory-budget or train on fewer rows");
  }
  const auto longest = std::max<std::int64_t>(2, static_cast<std::int64_t>(train_store.longest()));
  model_cfg.num_labels = static_cast<std::int64_t>(labels.size());
  PlanRequest request = plan_request(model_cfg, cfg, longest);
  request.data_bytes = accountant.live(MemCategory::Data);
  request.baseline = baseline.total();
  if (cfg.dp.enabled()) {
    // DP-SGD plans for the likely largest Poisson sample, and runs it per example in micro-batches
    // or one example at a time (dp.h).
    dp = plan_dp(cfg.dp, train_rows.size(), cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.max_steps);
    dp->clipping = dp_clipping_for(cfg.method.method);
    request.batch = dp->likely_max_batch;
    request.dp = dp->clipping;
  }
  const bool alone = dp && dp->clipping == DpClipping::ExampleAtATime;
  // Throws before loading if nothing fits.
  plan = choose_plan(request, cfg.memory_budget, cfg.checkpoint_layers, alone ? 1 : cfg.micro_batch);
  accountant.set_budget(plan.accountant_budget());
  say(plan.describe() + "\n");
  if (cfg.memory_budget > 0 && cfg.budget_scope == BudgetScope::Process) say(baseline.describe() + "\n");

  cfg.method.seed = cfg.seed;
  LoadOptions lo = load_options_for(cfg.method, cfg.quant, cfg.quant_embeddings);
  lo.id2label = labels;
  lo.seed = cfg.seed;
  model = load_bert(cfg.model_dir, lo);
  model.config.hidden_dropout_prob = model_cfg.hidden_dropout_prob;
  model.config.attention_probs_dropout_prob = model_cfg.attention_probs_dropout_prob;
  model.config.classifier_dropout = model_cfg.classifier_dropout;
  if (!cfg.init_adapter.empty()) {
    const MethodOptions saved = read_adapter_method(cfg.init_adapter);
    if (saved.method != cfg.method.method) {
      throw std::invalid_argument(cfg.init_adapter.string() + " holds a " + method_name(saved.method) +
                                  " adapter, but the run trains with --method " +
                                  method_name(cfg.method.method));
    }
    // The loaded adapter takes its shape (rank, targets, size) from the file.
    const bool freeze_a = cfg.method.lora.freeze_a;
    cfg.method = load_trained(model, cfg.init_adapter, !cfg.labels.empty());
    cfg.method.lora.freeze_a = freeze_a;
    if (freeze_a) {
      for (EncoderLayer& l : model.layers) {
        for (LinearLayer* lin : {&l.query, &l.key, &l.value, &l.attention_output, &l.intermediate, &l.output}) {
          if (lin->lora) lin->lora->a.set_requires_grad(false);
        }
      }
    }
  } else {
    attach_adapters(model, cfg.method);
  }
  params = trainable_params(model);

  optim::SgdOptions so;
  so.momentum = cfg.momentum;
  so.dampening = cfg.dampening;
  so.nesterov = cfg.nesterov;
  so.weight_decay = cfg.weight_decay;
  optimizer = optim::make_optimizer(cfg.optimizer, adam_options(cfg), so);
  manual_seed(cfg.seed);
  return lo.base;
}

bool Trainer::Impl::after_epoch(TrainingRun& run) {
  if (eval_store.size() == 0) return false;
  // Under a budget evaluation runs at most the training micro-batch at once: a forward pass
  // without recording keeps less than the training pass the plan fits.
  const int eval_rows = cfg.memory_budget > 0
                            ? static_cast<int>(std::min<std::int64_t>(cfg.eval_batch_size, plan.micro_batch))
                            : cfg.eval_batch_size;
  const EvalReport r = evaluate(model, eval_store, tokenizer->pad_id(), eval_rows, cfg.compute);
  say("eval after epoch " + std::to_string(run.epoch()) + " (step " + std::to_string(run.step()) + "):\n" +
      r.to_text());
  nlohmann::json j = r.to_json();
  j["type"] = "eval";
  j["step"] = run.step();
  j["epoch"] = run.epoch();
  if (const auto eps = run.epsilon()) {
    say("privacy spent: " + format_privacy(*eps, dp->delta) + "\n");
    j["epsilon"] = *eps;
  }
  run.folder().add_metric(j);
  last_eval = r;
  if (cfg.early_stopping <= 0) return false;
  if (r.accuracy > best_metric) {
    best_metric = r.accuracy;
    bad_evals = 0;
    save_adapter();
    say("best accuracy so far: adapter saved\n");
  } else if (++bad_evals >= cfg.early_stopping) {
    stopped_early = true;
    say("no improvement in " + std::to_string(bad_evals) + " evaluations: stopping early\n");
    return true;
  }
  return false;
}

void Trainer::Impl::finish(TrainingRun& run, bool interrupted) {
  if (interrupted) return;
  replay->save(cfg.out / "replay.json");
  if (cfg.early_stopping <= 0) {
    save_adapter();
    return;
  }
  if (best_metric < 0) save_adapter();
  // The kept adapter is the best one: report its figures.
  const auto& lines = run.folder().metrics();
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    const auto j = nlohmann::json::parse(*it);
    if (j.value("type", "") == "eval" && j.value("accuracy", -2.0) == best_metric) {
      last_eval = EvalReport::from_json(j);
      break;
    }
  }
}

template <>
TrainResult Trainer::run(const RunHooks& hooks) {
  Impl& s = *impl_;
  const ContextScope scope(s.context);
  RunFolder folder(s.cfg.out);
  s.prepare(folder);
  LoopSettings ls = loop_settings(s.cfg, s.cfg.effective_lr(), s.plan.micro_batch, s.plan.checkpoint_layers);
  ls.step.compute = s.cfg.compute;
  ls.grad_accum = s.cfg.grad_accum;
  ls.shuffle = s.cfg.shuffle;
  ls.schedule = s.cfg.schedule;
  ls.state_format = "edgetune-train-state";
  ls.resume_command = "edgetune train --resume";
  ls.dp = s.dp;
  TrainingRun run(folder, s, s.params, *s.optimizer, std::move(ls), s.log, hooks);
  std::ostringstream line;
  line << run.total_steps() << " optimizer steps (" << run.steps_per_epoch() << " per epoch), lr "
       << s.cfg.effective_lr() << ", " << kernels::num_threads() << " threads\n";
  if (s.dp) line << s.dp->describe(run.total_steps()) << "\n";
  s.say(line.str());
  run.start(s.resuming, s.cfg.to_json());
  const RunResult rr = run.run();
  TrainResult result;
  result.steps = rr.steps;
  result.epochs_run = static_cast<int>(rr.epochs_run);
  result.interrupted = rr.interrupted;
  result.stopped_early = s.stopped_early;
  result.final_eval = s.last_eval;
  result.accountant_peak = rr.accountant_peak;
  result.peak_rss = rr.peak_rss;
  result.memory_budget = s.cfg.memory_budget;
  result.seconds = rr.seconds;
  result.examples_per_second = rr.seconds > 0 ? static_cast<double>(rr.examples) / rr.seconds : 0;
  result.epsilon = rr.epsilon;
  if (s.dp) result.dp_delta = s.dp->delta;
  return result;
}

// The members every mode shares (runner_impl.h), for this mode.
template class Runner<TrainConfig, TrainResult>;

}  // namespace edgetune
