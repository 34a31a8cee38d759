// The C++ API (see api.h).
#include "edgetune/engine/api.h"

#include <optional>

#include "edgetune/autograd/kernels.h"
#include "edgetune/core/context.h"
#include "edgetune/core/memory.h"
#include "edgetune/data/labels.h"
#include "edgetune/engine/adapter_folder.h"

namespace edgetune {

namespace {

std::vector<data::Encoding> encode(const Model& model, const std::vector<std::string>& texts, int max_length) {
  std::vector<data::Encoding> enc;
  enc.reserve(texts.size());
  for (const std::string& t : texts) enc.push_back(model.tokenizer.encode(t, std::nullopt, max_length));
  return enc;
}

std::vector<Prediction> run_model(const Model& model, const ClassifierOptions& options,
                                  const std::vector<std::string>& texts) {
  return edgetune::predict(model.bert, encode(model, texts, options.max_length), model.tokenizer.pad_id(),
                           options.batch_size, options.compute);
}

}  // namespace

struct Classifier::Impl {
  // The classifier's own accountant (its model and every call's tensors) and kernel threads,
  // current on the calling thread during each call.
  Context context;
  Model model;
  ClassifierOptions options;
  std::vector<std::string> labels;

  std::vector<Prediction> run(const std::vector<std::string>& texts) {
    const ContextScope scope(context);
    return run_model(model, options, texts);
  }
};

Classifier::Classifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Classifier::~Classifier() = default;
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;

Classifier Classifier::open(const std::filesystem::path& model_dir,
                            const std::filesystem::path& adapter_dir,
                            const ClassifierOptions& options) {
  Context context;
  context.threads = kernels::resolve_threads(options.threads);
  context.key = options.key;
  std::optional<Model> m;
  {
    const ContextScope scope(context);
    m = open_model(model_dir, adapter_dir, options.base, options.quant_embeddings);
  }
  std::vector<std::string> labels = m->labels();
  return Classifier(
      std::unique_ptr<Impl>(new Impl{std::move(context), std::move(*m), options, std::move(labels)}));
}

const std::vector<std::string>& Classifier::labels() const { return impl_->labels; }

namespace {
xt::xtensor<float, 2> to_array(const std::vector<Prediction>& preds, std::size_t k, bool probs) {
  xt::xtensor<float, 2> out = xt::zeros<float>({preds.size(), k});
  for (std::size_t i = 0; i < preds.size(); ++i) {
    const auto& v = probs ? preds[i].probabilities : preds[i].logits;
    for (std::size_t j = 0; j < k; ++j) out(i, j) = v[j];
  }
  return out;
}
}  // namespace

xt::xtensor<float, 2> Classifier::predict_proba(const std::vector<std::string>& texts) const {
  return to_array(impl_->run(texts), impl_->labels.size(), true);
}

xt::xtensor<float, 2> Classifier::logits(const std::vector<std::string>& texts) const {
  return to_array(impl_->run(texts), impl_->labels.size(), false);
}

std::vector<std::string> Classifier::predict(const std::vector<std::string>& texts) const {
  std::vector<std::string> out;
  for (const Prediction& p : impl_->run(texts)) out.push_back(impl_->labels[static_cast<std::size_t>(p.label)]);
  return out;
}

namespace {

// Labelled rows in memory as a dataset; the line of a row is its position, from 1.
std::shared_ptr<const data::Dataset> to_dataset(const std::vector<LabelledText>& examples) {
  auto ds = std::make_shared<data::Dataset>();
  ds->source = "<memory>";
  std::int64_t row = 0;
  for (const LabelledText& e : examples) {
    data::Example x;
    x.text = e.text;
    x.label = e.label;
    x.line = ++row;
    ds->examples.push_back(std::move(x));
  }
  return ds;
}

}  // namespace

TrainResult fine_tune(TrainConfig config, const std::vector<LabelledText>& examples, std::ostream* log) {
  config.train_data = to_dataset(examples);
  Trainer t(std::move(config), log);
  return t.run();
}

// ---- TuningSession ----------------------------------------------------------------------------------

TuningSession::TuningSession(std::filesystem::path model_dir, SessionOptions options, Context context,
                             Model model)
    : model_dir_(std::move(model_dir)),
      options_(std::move(options)),
      context_(std::move(context)),
      figures_(context_.accountant),
      model_(std::move(model)) {}

std::unique_ptr<TuningSession> TuningSession::open(const std::filesystem::path& model_dir,
                                                   const SessionOptions& options) {
  settings::check_ranges(options);
  Context context;
  context.threads = kernels::resolve_threads(options.threads);
  context.key = options.key;
  std::optional<Model> m;
  {
    const ContextScope scope(context);
    m = open_model(model_dir, {}, options.base, options.quant_embeddings);
  }
  return std::unique_ptr<TuningSession>(
      new TuningSession(model_dir, options, std::move(context), std::move(*m)));
}

TuningSession::~TuningSession() {
  {
    const std::lock_guard g(queue_lock_);
    closing_ = true;
  }
  queue_changed_.notify_one();
  if (worker_.joinable()) worker_.join();
}

void TuningSession::add_example(LabelledText example) {
  if (example.label.empty()) throw std::invalid_argument("add_example: the label is empty");
  const std::lock_guard g(lock_);
  examples_.push_back(std::move(example));
}

void TuningSession::clear_examples() {
  const std::lock_guard g(lock_);
  examples_.clear();
}

std::size_t TuningSession::num_examples() const {
  const std::lock_guard g(lock_);
  return examples_.size();
}

const Model& TuningSession::model() const {
  const ContextScope scope(context_);
  if (!model_) model_.emplace(open_model(model_dir_, adapter_dir_, options_.base, options_.quant_embeddings));
  return *model_;
}

TrainResult TuningSession::train(const nlohmann::json& options, const std::filesystem::path& out,
                                 const ProgressFn& progress) {
  if (!options.is_object()) throw settings::SettingError("options: expected a JSON object of settings");
  for (const char* key : {"model", "train", "out"}) {
    if (options.contains(key)) {
      throw settings::SettingError(std::string("options: setting '") + key +
                                   "' is the session's (its model folder, its examples, the out folder "
                                   "given to train)");
    }
  }
  if (out.empty()) throw std::invalid_argument("train: the out folder is required");
  TrainConfig base;
  base.model_dir = model_dir_;
  base.out = out;
  base.quant = options_.base;
  base.quant_embeddings = options_.quant_embeddings;
  base.compute = options_.compute;
  base.memory_budget = options_.memory_budget;
  base.threads = options_.threads;
  base.data.max_length = options_.max_length;
  TrainConfig cfg = settings::from_json(options, "options", std::move(base));
  const std::lock_guard g(lock_);
  cfg.key = context_.key;
  if (examples_.empty()) throw std::invalid_argument("train: no examples: add labelled examples first");
  cfg.train_data = to_dataset(examples_);
  return run(Trainer(std::move(cfg), nullptr), out, progress);
}

TrainResult TuningSession::resume(const std::filesystem::path& out, const ProgressFn& progress) {
  const std::lock_guard g(lock_);
  TrainConfig cfg;
  {
    const ContextScope scope(context_);
    cfg = TrainConfig::from_json(RunFolder::open_for_resume(out), (out / "run.json").string());
  }
  cfg.out = out;
  cfg.key = context_.key;
  // A run of rows in memory records "<memory>" as its training file.
  if (cfg.train_file == "<memory>") {
    if (examples_.empty()) throw std::invalid_argument("resume: no examples: add the run's examples first");
    cfg.train_data = to_dataset(examples_);
  }
  return run(Trainer::resume(std::move(cfg), nullptr), out, progress);
}

UpdateResult TuningSession::update(const std::filesystem::path& run_dir, const nlohmann::json& options,
                                   const ProgressFn& progress) {
  if (!options.is_object()) throw settings::SettingError("options: expected a JSON object of settings");
  for (const char* key : {"run", "train"}) {
    if (options.contains(key)) {
      throw settings::SettingError(std::string("options: setting '") + key +
                                   "' is the session's (the run folder given to update, its examples)");
    }
  }
  UpdateConfig base;
  base.memory_budget = options_.memory_budget;
  base.threads = options_.threads;
  base.data.max_length = options_.max_length;
  UpdateConfig cfg = settings::from_json(options, "options", std::move(base));
  cfg.run = run_dir;
  cfg.key = context_.key;
  const std::lock_guard g(lock_);
  if (examples_.empty()) throw std::invalid_argument("update: no examples: add the new labelled examples first");
  cfg.train_data = to_dataset(examples_);
  UpdateResult result;
  run(nullptr,
      [&](const RunHooks& hooks) {
        result = update_run(cfg, nullptr, hooks);
        return result.train;
      },
      run_dir, progress);
  return result;
}

TrainResult TuningSession::run(Trainer trainer, const std::filesystem::path& out, const ProgressFn& progress) {
  const std::shared_ptr<const Accountant> figures = trainer.accountant();
  return run(figures, [&trainer](const RunHooks& hooks) { return trainer.run(hooks); }, out, progress);
}

TrainResult TuningSession::run(std::shared_ptr<const Accountant> figures,
                               const std::function<TrainResult(const RunHooks&)>& body, const std::filesystem::path& out,
                               const ProgressFn& progress) {
  stop_.reset();
  model_.reset();  // the training's memory; the model is loaded again when next used
  const StopToken stop = stop_;
  RunHooks hooks;
  hooks.should_stop = [stop] { return stop.stop_requested(); };
  if (progress) {
    hooks.on_progress = [&progress, stop](const Progress& p) {
      if (progress(p)) stop.request_stop();
    };
  }
  if (figures) {
    const std::lock_guard f(figures_lock_);
    figures_ = std::move(figures);
  }
  struct Restore {  // memory() reads the session's own figures again, however the run ends
    TuningSession& s;
    ~Restore() {
      const std::lock_guard f(s.figures_lock_);
      s.figures_ = s.context_.accountant;
    }
  } restore{*this};
  const TrainResult r = body(hooks);
  if (!r.interrupted) adapter_dir_ = out;
  return r;
}

void TuningSession::cancel() noexcept { stop_.request_stop(); }

std::vector<std::string> TuningSession::labels() const {
  const std::lock_guard g(lock_);
  return model().labels();
}

xt::xtensor<float, 2> TuningSession::predict_proba(const std::vector<std::string>& texts) const {
  const std::lock_guard g(lock_);
  const Model& m = model();
  const ContextScope scope(context_);
  return to_array(run_model(m, options_, texts), m.labels().size(), true);
}

void TuningSession::predict_async(std::vector<std::string> texts, PredictFn done) {
  {
    const std::lock_guard g(queue_lock_);
    if (!worker_.joinable()) worker_ = std::thread([this] { serve(); });
    queue_.push_back(Request{std::move(texts), std::move(done)});
  }
  queue_changed_.notify_one();
}

void TuningSession::serve() {
  std::unique_lock g(queue_lock_);
  for (;;) {
    queue_changed_.wait(g, [this] { return closing_ || !queue_.empty(); });
    if (queue_.empty()) return;  // closing, and every request served
    Request r = std::move(queue_.front());
    queue_.pop_front();
    g.unlock();
    xt::xtensor<float, 2> probs;
    std::string error;
    try {
      probs = predict_proba(r.texts);
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "predict failed with an unknown error";
    }
    r.done(probs, error);
    g.lock();
  }
}

EvalReport TuningSession::evaluate(const std::vector<LabelledText>& given) const {
  const std::lock_guard g(lock_);
  const std::vector<LabelledText>& rows = given.empty() ? examples_ : given;
  if (rows.empty()) throw std::invalid_argument("evaluate: no examples: add labelled examples or give some");
  const Model& m = model();
  const ContextScope scope(context_);
  const std::vector<std::string> names = m.labels();
  const data::LabelMap map = eval_label_map(names);
  std::vector<std::string> texts;
  std::vector<std::int32_t> ids;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::optional<std::int32_t> id = map.id(rows[i].label);
    if (!id) {
      std::string known;
      for (const std::string& l : map.id2label()) known += (known.empty() ? "" : ", ") + l;
      throw std::invalid_argument("evaluate: example " + std::to_string(i + 1) + " has the label '" +
                                  rows[i].label + "', which the model does not have (expected one of " +
                                  known + ")");
    }
    texts.push_back(rows[i].text);
    ids.push_back(*id);
  }
  return edgetune::evaluate(m.bert, encode(m, texts, options_.max_length), ids, m.tokenizer.pad_id(),
                            options_.batch_size, options_.compute);
}

void TuningSession::save_adapter(const std::filesystem::path& dir) const {
  const std::lock_guard g(lock_);
  const Model& m = model();
  const ContextScope scope(context_);
  save_trained(m.bert, m.method, dir, model_dir_);
}

void TuningSession::set_key(std::shared_ptr<const EncryptionKey> key) {
  const std::lock_guard g(lock_);
  context_.key = std::move(key);
}

void TuningSession::load_adapter(const std::filesystem::path& dir) {
  const std::lock_guard g(lock_);
  const ContextScope scope(context_);
  model_.reset();
  model_.emplace(open_model(model_dir_, dir, options_.base, options_.quant_embeddings));
  adapter_dir_ = dir;
}

// The one place that reads the memory figures of a session.
MemoryUse TuningSession::memory() const {
  std::shared_ptr<const Accountant> figures;
  {
    const std::lock_guard f(figures_lock_);
    figures = figures_;
  }
  const Accountant& a = *figures;
  return MemoryUse{a.live_total(), a.peak_total(), options_.memory_budget, process_rss(), process_peak_rss()};
}

const char* version() { return EDGETUNE_VERSION; }  // the project's version, from CMake

}  // namespace edgetune
