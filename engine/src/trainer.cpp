// The trainer (see trainer.h).
#include "edgetune/engine/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sstream>

#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/planner.h"
#include "edgetune/optim/clip.h"
#include "edgetune/optim/schedule.h"

namespace edgetune {

namespace fs = std::filesystem;

// ---- settings ------------------------------------------------------------------------------------

double TrainConfig::effective_lr() const {
  if (lr > 0) return lr;
  return method.method == Method::Full ? 5e-5 : 5e-4;
}

namespace {

std::string column_spec(const data::ColumnRef& c) {
  return !c.is_set() ? "" : c.by_name() ? c.name() : std::to_string(c.index());
}
data::ColumnRef column_from(const std::string& s) {
  return s.empty() ? data::ColumnRef() : data::ColumnRef::parse(s);
}
const char* header_name(data::Header h) {
  return h == data::Header::kPresent ? "present" : h == data::Header::kAbsent ? "absent" : "auto";
}
data::Header header_from(const std::string& s) {
  return s == "present" ? data::Header::kPresent : s == "absent" ? data::Header::kAbsent : data::Header::kAuto;
}

}  // namespace

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j;
  j["model"] = model_dir.string();
  j["train"] = train_data ? std::string("<memory>") : train_file.string();
  j["eval"] = eval_file.string();
  j["eval_split"] = eval_split;
  j["text_column"] = column_spec(data.text_column);
  j["text_pair_column"] = data.text_pair_column ? column_spec(*data.text_pair_column) : "";
  j["label_column"] = data.label_column ? column_spec(*data.label_column) : "";
  j["header"] = header_name(data.header);
  j["skip_bad_rows"] = data.skip_bad_rows;
  j["max_length"] = data.max_length;
  j["method"] = method_name(method.method);
  j["lora_rank"] = method.lora.rank;
  j["lora_alpha"] = method.lora.alpha;
  j["lora_dropout"] = method.lora.dropout;
  j["lora_fa"] = method.lora.freeze_a;
  j["lora_targets"] = method.lora_targets;
  j["adapter_size"] = method.adapter_size;
  j["adapter_act"] = adapters::bottleneck_act_name(method.adapter_act);
  j["quant"] = dtype_name(quant);
  j["quant_embeddings"] = quant_embeddings;
  j["init_adapter"] = init_adapter.string();
  j["epochs"] = epochs;
  j["batch_size"] = batch_size;
  j["lr"] = effective_lr();
  j["weight_decay"] = weight_decay;
  j["optimizer"] = optimizer;
  j["momentum"] = momentum;
  j["dampening"] = dampening;
  j["nesterov"] = nesterov;
  j["adam_beta1"] = adam_beta1;
  j["adam_beta2"] = adam_beta2;
  j["adam_eps"] = adam_eps;
  j["schedule"] = schedule;
  j["warmup_ratio"] = warmup_ratio;
  j["max_grad_norm"] = max_grad_norm;
  j["grad_accum"] = grad_accum;
  j["seed"] = seed;
  j["shuffle"] = shuffle;
  j["dropout"] = dropout ? nlohmann::json(*dropout) : nullptr;
  j["threads"] = threads;
  j["out"] = out.string();
  j["early_stopping"] = early_stopping;
  j["save_every"] = save_every;
  j["max_steps"] = max_steps;
  j["log_every"] = log_every;
  j["eval_batch_size"] = eval_batch_size;
  j["memory_budget"] = memory_budget;
  j["micro_batch"] = micro_batch;
  j["checkpoint_layers"] = checkpoint_layers ? nlohmann::json(*checkpoint_layers) : nullptr;
  return j;
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j) {
  TrainConfig c;
  c.model_dir = j.at("model").get<std::string>();
  c.train_file = j.at("train").get<std::string>();
  c.eval_file = j.at("eval").get<std::string>();
  c.eval_split = j.at("eval_split").get<double>();
  c.data.text_column = column_from(j.at("text_column").get<std::string>());
  if (auto s = j.at("text_pair_column").get<std::string>(); !s.empty()) c.data.text_pair_column = column_from(s);
  if (auto s = j.at("label_column").get<std::string>(); !s.empty()) c.data.label_column = column_from(s);
  c.data.header = header_from(j.at("header").get<std::string>());
  c.data.skip_bad_rows = j.at("skip_bad_rows").get<bool>();
  c.data.max_length = j.at("max_length").get<int>();
  c.method.method = parse_method(j.at("method").get<std::string>());
  c.method.lora.rank = j.at("lora_rank").get<int>();
  c.method.lora.alpha = j.at("lora_alpha").get<double>();
  c.method.lora.dropout = j.at("lora_dropout").get<double>();
  c.method.lora.freeze_a = j.at("lora_fa").get<bool>();
  c.method.lora_targets = j.at("lora_targets").get<std::vector<std::string>>();
  c.method.adapter_size = j.at("adapter_size").get<std::int64_t>();
  c.method.adapter_act = adapters::parse_bottleneck_act(j.at("adapter_act").get<std::string>());
  const std::string q = j.at("quant").get<std::string>();
  c.quant = q == "q4" ? DType::Q4 : q == "q8" ? DType::Q8 : DType::F32;
  c.quant_embeddings = j.at("quant_embeddings").get<bool>();
  c.init_adapter = j.at("init_adapter").get<std::string>();
  c.epochs = j.at("epochs").get<int>();
  c.batch_size = j.at("batch_size").get<int>();
  c.lr = j.at("lr").get<double>();
  c.weight_decay = j.at("weight_decay").get<double>();
  c.optimizer = j.at("optimizer").get<std::string>();
  c.momentum = j.at("momentum").get<double>();
  c.dampening = j.at("dampening").get<double>();
  c.nesterov = j.at("nesterov").get<bool>();
  c.adam_beta1 = j.at("adam_beta1").get<double>();
  c.adam_beta2 = j.at("adam_beta2").get<double>();
  c.adam_eps = j.at("adam_eps").get<double>();
  c.schedule = j.at("schedule").get<std::string>();
  c.warmup_ratio = j.at("warmup_ratio").get<double>();
  c.max_grad_norm = j.at("max_grad_norm").get<double>();
  c.grad_accum = j.at("grad_accum").get<int>();
  c.seed = j.at("seed").get<std::uint64_t>();
  c.shuffle = j.at("shuffle").get<bool>();
  if (!j.at("dropout").is_null()) c.dropout = j.at("dropout").get<double>();
  c.threads = j.at("threads").get<int>();
  c.out = j.at("out").get<std::string>();
  c.early_stopping = j.at("early_stopping").get<int>();
  c.save_every = j.at("save_every").get<std::int64_t>();
  c.max_steps = j.at("max_steps").get<std::int64_t>();
  c.log_every = j.at("log_every").get<int>();
  c.eval_batch_size = j.at("eval_batch_size").get<int>();
  c.memory_budget = j.at("memory_budget").get<std::size_t>();
  c.micro_batch = j.at("micro_batch").get<int>();
  if (!j.at("checkpoint_layers").is_null()) c.checkpoint_layers = j.at("checkpoint_layers").get<bool>();
  return c;
}

// ---- interruption --------------------------------------------------------------------------------

namespace {
std::atomic<bool> g_stop{false};
volatile std::sig_atomic_t g_signals = 0;

void on_signal(int sig) {
  g_signals = g_signals + 1;
  if (g_signals > 1) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
  g_stop.store(true);
}
}  // namespace

void request_stop() { g_stop.store(true); }

bool stop_requested() { return g_stop.load(); }

void install_interrupt_handler() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

// ---- the trainer ---------------------------------------------------------------------------------

struct Trainer::Impl {
  TrainConfig cfg;
  std::ostream* log = nullptr;
  bool resuming = false;

  // Data.
  std::optional<data::WordPieceTokenizer> tokenizer;
  std::vector<std::string> labels;
  std::vector<data::Encoding> train_enc, eval_enc;
  std::vector<std::int32_t> train_labels, eval_labels;

  // Model and optimisation.
  BertModel model;
  std::vector<optim::Param> params;
  std::unique_ptr<optim::Optimizer> optimizer;
  std::optional<optim::Schedule> schedule;
  Plan plan;

  // Progress (saved in train_state.safetensors).
  std::int64_t step = 0;
  int epoch = 0;
  std::int64_t batch_in_epoch = 0;
  double best_metric = -1;
  int bad_evals = 0;
  std::vector<std::string> metrics;  // metrics.jsonl lines

  std::int64_t steps_per_epoch = 0;
  std::int64_t total_steps = 0;

  void say(const std::string& s) {
    if (log) *log << s << std::flush;
  }

  void prepare();
  void load_state();
  void save_state();
  void write_metrics() {
    std::string text;
    for (const auto& l : metrics) text += l + "\n";
    write_file_atomic(cfg.out / "metrics.jsonl", text);
  }
  void add_metric(nlohmann::json j) {
    metrics.push_back(j.dump());
    write_metrics();
  }
  EvalReport run_eval();
  void save_adapter() { save_trained(model, cfg.method, cfg.out, cfg.model_dir); }
};

void Trainer::Impl::prepare() {
  if (cfg.batch_size < 1 || cfg.epochs < 1 || cfg.grad_accum < 1) {
    throw std::invalid_argument("--batch-size, --epochs and --grad-accum must be at least 1");
  }
  if (cfg.out.empty()) throw std::invalid_argument("--out RUN_DIR is required");
  kernels::set_num_threads(cfg.threads);

  // Data: read, label, tokenize. Nothing is written to the run folder until the data, the plan
  // and the model are known to be good: a run that fails to start leaves no folder behind.
  const BertConfig base_cfg = load_config(cfg.model_dir);
  data::Dataset train = cfg.train_data ? *cfg.train_data : read_data(cfg.train_file, cfg.data, true);
  if (train.bad_rows) {
    say("skipped " + std::to_string(train.bad_rows) + " bad rows of " + train.source + " (first: " +
        train.bad_row_messages.front() + ")\n");
  }
  if (train.examples.empty()) throw std::invalid_argument(train.source + ": no training rows");
  data::LabelMap map = data::LabelMap::from_dataset(train);
  // The model's own label order wins when it names exactly the labels of the data.
  if (!base_cfg.id2label.empty()) {
    std::vector<std::string> a = base_cfg.id2label, b = map.id2label();
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    if (a == b) map = data::LabelMap(base_cfg.id2label);
  }
  map.assign(train);
  labels = map.id2label();

  tokenizer.emplace(data::load_tokenizer_from_model_dir(cfg.model_dir));
  std::vector<data::Encoding> enc = data::encode_dataset(*tokenizer, train, cfg.data.max_length);
  say(invalid_utf8_note(enc, train.source));
  std::vector<std::int32_t> ids = data::label_ids(train);
  if (!cfg.eval_file.empty()) {
    data::Dataset ev = read_data(cfg.eval_file, cfg.data, true, &map);
    eval_enc = data::encode_dataset(*tokenizer, ev, cfg.data.max_length);
    say(invalid_utf8_note(eval_enc, ev.source));
    eval_labels = data::label_ids(ev);
    train_enc = std::move(enc);
    train_labels = std::move(ids);
  } else if (cfg.eval_split > 0) {
    const data::Split split = data::train_eval_split(enc.size(), cfg.eval_split, cfg.seed);
    for (size_t i : split.train) {
      train_enc.push_back(enc[i]);
      train_labels.push_back(ids[i]);
    }
    for (size_t i : split.eval) {
      eval_enc.push_back(enc[i]);
      eval_labels.push_back(ids[i]);
    }
  } else {
    train_enc = std::move(enc);
    train_labels = std::move(ids);
  }
  if (cfg.early_stopping > 0 && eval_enc.empty()) {
    throw std::invalid_argument("--early-stopping needs evaluation data: give --eval FILE or --eval-split");
  }

  // Model.
  Accountant& acc = Accountant::global();
  acc.set_budget(cfg.memory_budget);
#if defined(__GLIBC__)
  if (cfg.memory_budget > 0) {
    // Under a budget, resident memory beats speed. glibc raises its mmap threshold every time a
    // large block is freed; after that, temporaries of 128 KiB and more (GEMM packing buffers,
    // small activations) come from the heap and stay resident when freed. A fixed threshold
    // returns them to the system. Measured on the shipped model, q4 + LoRA, budget 64 MiB:
    // VmHWM 95.6 -> 80.4 MiB (accountant 52.5 MiB), steps about 20 % slower. Without a budget
    // glibc's default stands. Process-wide, as the budget is.
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  }
#endif
  BertConfig model_cfg = base_cfg;
  if (cfg.dropout) {
    model_cfg.hidden_dropout_prob = *cfg.dropout;
    model_cfg.attention_probs_dropout_prob = *cfg.dropout;
    model_cfg.classifier_dropout = *cfg.dropout;
  }
  std::int64_t longest = 2;
  for (const auto& e : train_enc) longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(e.ids.size()));
  model_cfg.num_labels = static_cast<std::int64_t>(labels.size());
  plan = choose_plan(model_cfg, cfg, longest);  // throws before loading if nothing fits
  say(plan.describe() + "\n");

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
    cfg.method = load_trained(model, cfg.init_adapter);
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

  const std::string opt = cfg.optimizer;
  if (opt == "adamw" || opt == "adam") {
    optim::AdamOptions ao;
    ao.beta1 = cfg.adam_beta1;
    ao.beta2 = cfg.adam_beta2;
    ao.eps = cfg.adam_eps;
    ao.weight_decay = cfg.weight_decay;
    optimizer = opt == "adamw" ? optim::make_adamw(ao) : optim::make_adam(ao);
  } else if (opt == "sgd") {
    optim::SgdOptions so;
    so.momentum = cfg.momentum;
    so.dampening = cfg.dampening;
    so.nesterov = cfg.nesterov;
    so.weight_decay = cfg.weight_decay;
    optimizer = optim::make_sgd(so);
  } else {
    throw std::invalid_argument("unknown optimizer '" + opt + "' (expected adamw, adam or sgd)");
  }
  const std::int64_t batches = (static_cast<std::int64_t>(train_enc.size()) + cfg.batch_size - 1) / cfg.batch_size;
  steps_per_epoch = (batches + cfg.grad_accum - 1) / cfg.grad_accum;
  total_steps = cfg.max_steps > 0 ? cfg.max_steps : steps_per_epoch * cfg.epochs;
  const optim::Schedule::Kind kind = cfg.schedule == "constant" ? optim::Schedule::Kind::Constant
                                     : cfg.schedule == "cosine" ? optim::Schedule::Kind::Cosine
                                     : cfg.schedule == "linear"
                                         ? optim::Schedule::Kind::Linear
                                         : throw std::invalid_argument("unknown schedule '" + cfg.schedule +
                                                                       "' (expected constant, linear or cosine)");
  schedule.emplace(kind, optim::warmup_steps_from_ratio(total_steps, cfg.warmup_ratio), total_steps);
  manual_seed(cfg.seed);

  fs::create_directories(cfg.out);
  if (!resuming) map.save(cfg.out / "labels.json");

  std::int64_t trainable = 0;
  for (const auto& p : params) trainable += p.tensor.numel();
  std::ostringstream s;
  s << "model " << cfg.model_dir.string() << ": " << model.config.num_hidden_layers << " layers, hidden "
    << model.config.hidden_size << ", base " << dtype_name(lo.base) << ", method "
    << method_name(cfg.method.method) << ", " << trainable << " trainable parameters\n"
    << "data: " << train_enc.size() << " training rows, " << eval_enc.size() << " evaluation rows, "
    << labels.size() << " classes; " << total_steps << " optimizer steps (" << steps_per_epoch
    << " per epoch), lr " << cfg.effective_lr() << ", " << kernels::num_threads() << " threads\n";
  say(s.str());
}

// train_state.safetensors: "param/<name>" trainable tensors, "optim/<entry>" optimizer state;
// the counters in the metadata.
void Trainer::Impl::save_state() {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& p : params) tensors.emplace_back("param/" + p.name, p.tensor);
  for (auto& [name, t] : optimizer->state()) tensors.emplace_back("optim/" + name, t);
  const RngState rng = dropout_rng();
  std::map<std::string, std::string> meta = {
      {"format", "edgetune-train-state"},
      {"version", "1"},
      {"step", std::to_string(step)},
      {"epoch", std::to_string(epoch)},
      {"batch_in_epoch", std::to_string(batch_in_epoch)},
      {"rng_seed", std::to_string(rng.seed)},
      {"rng_counter", std::to_string(rng.counter)},
      {"best_metric", nlohmann::json(best_metric).dump()},
      {"bad_evals", std::to_string(bad_evals)},
      {"metrics_lines", std::to_string(metrics.size())},
  };
  safetensors::save(cfg.out / "train_state.safetensors", tensors, meta);
}

void Trainer::Impl::load_state() {
  const fs::path path = cfg.out / "train_state.safetensors";
  safetensors::Reader r(path);
  const auto meta = r.metadata();
  auto get = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end()) throw std::runtime_error(path.string() + ": no '" + key + "' in the metadata");
    return it->second;
  };
  if (get("format") != "edgetune-train-state") throw std::runtime_error(path.string() + ": not a train state");
  step = std::stoll(get("step"));
  epoch = std::stoi(get("epoch"));
  batch_in_epoch = std::stoll(get("batch_in_epoch"));
  dropout_rng() = RngState{std::stoull(get("rng_seed")), std::stoull(get("rng_counter"))};
  best_metric = nlohmann::json::parse(get("best_metric")).get<double>();
  bad_evals = std::stoi(get("bad_evals"));
  const size_t lines = std::stoul(get("metrics_lines"));
  for (auto& p : params) {
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
  optimizer->load_state(state, params);
  // metrics.jsonl as it was at the checkpoint.
  std::ifstream in(cfg.out / "metrics.jsonl");
  std::string line;
  while (metrics.size() < lines && std::getline(in, line)) metrics.push_back(line);
}

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

StepResult train_step(const BertModel& model, std::span<optim::Param> params,
                      optim::Optimizer& optimizer, std::span<const TensorBatch> batches, double lr,
                      const StepOptions& o) {
  ForwardOptions fo;
  fo.training = true;
  fo.checkpoint_layers = o.checkpoint_layers;
  StepResult r;
  for (const TensorBatch& batch : batches) {
    const auto rows = static_cast<std::size_t>(batch.inputs.input_ids.dim(0));
    const std::size_t micro = o.micro_batch > 0 ? static_cast<std::size_t>(o.micro_batch) : rows;
    for (std::size_t start = 0; start < rows; start += micro) {
      const std::size_t n = std::min(micro, rows - start);
      const TensorBatch part = n == rows ? batch : slice_rows(batch, start, n);
      Tensor loss = ops::cross_entropy(model.classify(part.inputs, fo), part.labels);
      const double share = static_cast<double>(n) / static_cast<double>(rows);
      r.loss += loss.item() * share;
      backward(ops::scale(loss, share / static_cast<double>(batches.size())));
    }
  }
  r.loss /= static_cast<double>(batches.size());
  r.grad_norm = optim::clip_grad_norm(params, o.max_grad_norm);
  optimizer.step(params, lr);
  optim::zero_grad(params);
  return r;
}

EvalReport Trainer::Impl::run_eval() {
  return evaluate(model, eval_enc, eval_labels, tokenizer->pad_id(), cfg.eval_batch_size);
}

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;
Trainer::Trainer(Trainer&&) noexcept = default;

Trainer::Trainer(TrainConfig config, std::ostream* log) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(config);
  impl_->log = log;
}

Trainer Trainer::resume(const fs::path& run_dir, std::ostream* log, std::optional<int> threads,
                        std::optional<std::size_t> memory_budget) {
  const fs::path run_json = run_dir / "run.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(run_json));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(run_json.string() + ": not a run description (" + e.what() + ")");
  }
  std::error_code ec;
  if (!fs::exists(run_dir / "train_state.safetensors", ec)) {
    throw std::runtime_error((run_dir / "train_state.safetensors").string() +
                             ": missing: the run saved no checkpoint yet (use --save-every N)");
  }
  // A kill during an atomic write leaves its temporary file behind (never a torn target): clear
  // those away.
  remove_stale_temporaries(run_dir);
  auto impl = std::make_unique<Impl>();
  impl->cfg = TrainConfig::from_json(j);
  impl->cfg.out = run_dir;
  if (threads) impl->cfg.threads = *threads;
  if (memory_budget) impl->cfg.memory_budget = *memory_budget;
  impl->log = log;
  impl->resuming = true;
  return Trainer(std::move(impl));
}

TrainResult Trainer::run() {
  Impl& s = *impl_;
  g_stop.store(false);
  g_signals = 0;
  const auto t0 = std::chrono::steady_clock::now();
  s.prepare();
  if (s.resuming) {
    s.load_state();
    s.write_metrics();
    s.say("resumed at step " + std::to_string(s.step) + " (epoch " + std::to_string(s.epoch + 1) + ")\n");
  } else {
    write_file_atomic(s.cfg.out / "run.json", s.cfg.to_json().dump(2) + "\n");
    s.write_metrics();
  }
  Accountant& acc = Accountant::global();
  TrainResult result;
  std::int64_t examples = 0;
  double loss_acc = 0;
  int loss_n = 0;
  auto last_log = std::chrono::steady_clock::now();
  std::int64_t examples_at_log = 0;
  const std::int64_t n_train = static_cast<std::int64_t>(s.train_enc.size());
  bool done = s.step >= s.total_steps;

  while (!done && s.epoch < s.cfg.epochs) {
    std::vector<size_t> order(static_cast<size_t>(n_train));
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (s.cfg.shuffle) {
      data::Rng rng(s.cfg.seed + 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(s.epoch + 1));
      data::shuffle(std::span<size_t>(order), rng);
    }
    const auto batches = data::batch_rows(order, static_cast<size_t>(s.cfg.batch_size));
    while (static_cast<size_t>(s.batch_in_epoch) < batches.size()) {
      const size_t first = static_cast<size_t>(s.batch_in_epoch);
      const size_t count = std::min(static_cast<size_t>(s.cfg.grad_accum), batches.size() - first);
      std::vector<TensorBatch> group;
      for (size_t g = 0; g < count; ++g) {
        group.push_back(to_tensors(data::make_batch(s.train_enc, batches[first + g],
                                                    s.tokenizer->pad_id(), s.train_labels)));
      }
      const double lr = s.cfg.effective_lr() * s.schedule->factor(s.step);
      StepOptions so;
      so.max_grad_norm = s.cfg.max_grad_norm;
      so.micro_batch = s.plan.micro_batch;
      so.checkpoint_layers = s.plan.checkpoint_layers;
      const StepResult sr = train_step(s.model, s.params, *s.optimizer, group, lr, so);
      const double loss = sr.loss, norm = sr.grad_norm;
      ++s.step;
      s.batch_in_epoch += static_cast<std::int64_t>(count);
      for (size_t g = 0; g < count; ++g) examples += static_cast<std::int64_t>(batches[first + g].size());
      loss_acc += loss;
      ++loss_n;
      if (!std::isfinite(loss)) {
        throw std::runtime_error("the loss became " + std::to_string(loss) + " at step " + std::to_string(s.step) +
                                 ": lower --lr, or keep --max-grad-norm on");
      }
      const bool last = s.step >= s.total_steps;
      if (s.step % std::max(s.cfg.log_every, 1) == 0 || last) {
        const auto now = std::chrono::steady_clock::now();
        const double dt = std::chrono::duration<double>(now - last_log).count();
        const double eps = dt > 0 ? static_cast<double>(examples - examples_at_log) / dt : 0.0;
        const MemoryStats ms = acc.stats();
        const double epoch_pos = s.epoch + static_cast<double>(s.batch_in_epoch) / static_cast<double>(batches.size());
        char buf[320];
        std::snprintf(buf, sizeof buf,
                      "step %lld/%lld  epoch %.2f  loss %.4f  lr %.3g  grad-norm %.3g  %.1f ex/s  mem %s (peak %s)  rss %s\n",
                      static_cast<long long>(s.step), static_cast<long long>(s.total_steps), epoch_pos,
                      loss_acc / loss_n, lr, norm, eps, format_bytes(ms.live_total + ms.cached).c_str(),
                      format_bytes(ms.peak_total).c_str(), format_bytes(process_rss()).c_str());
        s.say(buf);
        s.add_metric({{"type", "train"}, {"step", s.step}, {"epoch", epoch_pos}, {"loss", loss_acc / loss_n},
                      {"lr", lr}, {"grad_norm", norm}, {"examples_per_second", eps},
                      {"memory_live", ms.live_total + ms.cached}, {"memory_peak", ms.peak_total},
                      {"rss", process_rss()}, {"peak_rss", process_peak_rss()}});
        loss_acc = 0;
        loss_n = 0;
        last_log = now;
        examples_at_log = examples;
      }
      if (last) {
        done = true;
        break;
      }
      if (g_stop.load()) break;
      if (s.cfg.save_every > 0 && s.step % s.cfg.save_every == 0) s.save_state();
    }
    if (g_stop.load()) {
      s.save_state();
      result.interrupted = true;
      s.say("interrupted at step " + std::to_string(s.step) + ": checkpoint saved in " + s.cfg.out.string() +
            "; continue with: edgetune train --resume " + s.cfg.out.string() + "\n");
      break;
    }
    const bool epoch_done = static_cast<size_t>(s.batch_in_epoch) >= batches.size();
    if (epoch_done) {
      ++s.epoch;
      s.batch_in_epoch = 0;
    }
    if (!s.eval_enc.empty() && (epoch_done || done)) {
      const EvalReport r = s.run_eval();
      s.say("eval after epoch " + std::to_string(s.epoch) + " (step " + std::to_string(s.step) + "):\n" + r.to_text());
      nlohmann::json j = r.to_json();
      j["type"] = "eval";
      j["step"] = s.step;
      j["epoch"] = s.epoch;
      s.add_metric(j);
      result.final_eval = r;
      if (s.cfg.early_stopping > 0) {
        if (r.accuracy > s.best_metric) {
          s.best_metric = r.accuracy;
          s.bad_evals = 0;
          s.save_adapter();
          s.say("best accuracy so far: adapter saved\n");
        } else if (++s.bad_evals >= s.cfg.early_stopping) {
          result.stopped_early = true;
          s.say("no improvement in " + std::to_string(s.bad_evals) + " evaluations: stopping early\n");
          done = true;
        }
      }
    }
    s.save_state();
  }
  if (!result.interrupted) {
    if (s.cfg.early_stopping > 0) {
      if (s.best_metric < 0) s.save_adapter();
      // The kept adapter is the best one: report its figures.
      for (auto it = s.metrics.rbegin(); it != s.metrics.rend(); ++it) {
        const auto j = nlohmann::json::parse(*it);
        if (j.value("type", "") == "eval" && j.value("accuracy", -2.0) == s.best_metric) {
          result.final_eval = EvalReport::from_json(j);
          break;
        }
      }
    } else {
      s.save_adapter();
    }
  }
  result.steps = s.step;
  result.epochs_run = s.epoch;
  result.accountant_peak = acc.stats().peak_total;
  result.peak_rss = process_peak_rss();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.examples_per_second = result.seconds > 0 ? static_cast<double>(examples) / result.seconds : 0;
  return result;
}

}  // namespace edgetune
