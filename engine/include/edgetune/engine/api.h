// The C++ API an app embeds: open a (compressed) BERT classifier with an adapter, classify text,
// and fine-tune it on examples that never leave the device.
//
//   auto clf = edgetune::Classifier::open("models/edgetune-mini-uncased", "runs/sentiment");
//   xt::xtensor<float, 2> p = clf.predict_proba({"what a lovely day", "worst service ever"});
//   std::vector<std::string> labels = clf.predict({"what a lovely day"});
//
//   edgetune::TrainConfig cfg;  // trainer.h: every setting of `edgetune train`
//   cfg.model_dir = "models/edgetune-mini-uncased";
//   cfg.out = "runs/sentiment";
//   cfg.memory_budget = 64 << 20;
//   edgetune::TrainResult r = edgetune::fine_tune(cfg, examples);
//
//   edgetune::SessionOptions o;
//   o.memory_budget = 32 << 20;
//   auto s = edgetune::TuningSession::open("models/edgetune-mini-uncased", o);
//   s->add_example({"what a lovely day", "positive"});  // ... more examples
//   s->train({{"epochs", 3}}, "runs/mine", [](const edgetune::Progress& p) { return false; });
//   xt::xtensor<float, 2> q = s->predict_proba({"lovely"});  // with the adapter just trained
//
// Dense outputs are xtensor arrays. Errors are exceptions (std::runtime_error and subclasses:
// ModelError, data::DataError, BudgetExceeded, PlanError, ProcessBudgetExceeded); the C ABI (c_api.h) turns them into
// return codes and messages.
#pragma once

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "edgetune/core/context.h"
#include "edgetune/engine/trainer.h"
#include "edgetune/engine/update.h"

namespace edgetune {

struct ClassifierOptions {
  DType base = DType::Q8;         // storage of the frozen base weights: F32, Q8, Q4, NF4, PAL4
  bool quant_embeddings = false;  // the word embeddings as `base` too, the positions q8
  Compute compute = Compute::Int8;  // linear layers over a quantized base (f32 base: always f32)
  int max_length = 128;           // tokens per text, [CLS] and [SEP] included
  int batch_size = 32;
  int threads = 0;                // 0: all cores
  // The key of the session's files (core's encryption.h: the app's key, e.g. from the Android
  // Keystore or the iOS Keychain): adapters and run folders are written encrypted with it, and
  // encrypted ones read with it. Null: plain files. Not a setting (never in options_json).
  std::shared_ptr<const EncryptionKey> key = nullptr;
};

// What a TuningSession is opened with: the classifier's options and the memory budget of its
// training. Settings table (settings.h) for the C ABI's options_json.
struct SessionOptions : ClassifierOptions {
  std::size_t memory_budget = 0;  // bytes; 0: none

  template <class Self, class V>
  static void fields(Self& c, V& v) {
    using namespace settings;
    v("quant", c.base, kQuantNames, "storage of the frozen base Linear weights: f32, q8, q4, nf4 or pal4");
    v("quant_embeddings", c.quant_embeddings,
      "store the word-embedding table as quant too, the position table as q8");
    v("compute", c.compute, kComputeNames,
      "arithmetic of the linear layers over a quantized base: int8 (integer kernels) or f32");
    v("memory_budget", c.memory_budget, "hard memory limit of training, e.g. \"32M\"", bytes());
    v("threads", c.threads, "threads for the kernels (0: all cores)", at_least(0));
    v("max_length", c.max_length, "tokens per text, [CLS] and [SEP] included", at_least(3));
    v("batch_size", c.batch_size, "rows per forward pass of predict and evaluate", at_least(1));
  }
};

class Classifier {
 public:
  // Loads model_dir (a Hugging Face BERT folder) and, if given, an adapter or run folder written
  // by edgetune train (or a PEFT LoRA). Throws ModelError naming the file on bad input.
  static Classifier open(const std::filesystem::path& model_dir,
                         const std::filesystem::path& adapter_dir = {},
                         const ClassifierOptions& options = {});
  ~Classifier();
  Classifier(Classifier&&) noexcept;
  Classifier& operator=(Classifier&&) noexcept;

  // Class names, in id order.
  const std::vector<std::string>& labels() const;
  // Class probabilities of each text: (N, K).
  xt::xtensor<float, 2> predict_proba(const std::vector<std::string>& texts) const;
  // Raw classifier outputs: (N, K).
  xt::xtensor<float, 2> logits(const std::vector<std::string>& texts) const;
  // The most probable class name of each text.
  std::vector<std::string> predict(const std::vector<std::string>& texts) const;

 private:
  struct Impl;
  explicit Classifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A labelled example held in memory.
struct LabelledText {
  std::string text;
  std::string label;
};

// Fine-tunes on examples in memory (config.train_file is ignored; config.eval_split holds some
// out for evaluation). The run folder is written as by `edgetune train`.
TrainResult fine_tune(TrainConfig config, const std::vector<LabelledText>& examples,
                      std::ostream* log = nullptr);

const char* version();

// What the memory of a session's process is now.
struct MemoryUse {
  std::size_t live = 0;      // the accountant's live bytes
  std::size_t peak = 0;      // the accountant's peak
  std::size_t budget = 0;    // the session's training budget (0: none)
  std::size_t rss = 0;       // the process's resident set
  std::size_t peak_rss = 0;  // the process's peak resident set (VmHWM)
};

// A model an app tunes and uses: a model folder opened with its options, labelled examples added
// from memory, training into a run folder (cancellable from any thread, resumable), prediction
// with the adapter trained last (or loaded), synchronous or on the session's own worker thread,
// evaluation, and the adapter saved and loaded.
//
// Calls that use the model (train, resume, predict, evaluate, save_adapter, load_adapter, and the
// worker's requests) hold the session's lock, so they run one at a time whatever the threads that
// make them. cancel() and memory() take no lock: any thread may call them at any moment,
// including from a progress callback. Errors are exceptions, as for Classifier.
class TuningSession {
 public:
  // Returns true to ask the run to stop (as cancel()).
  using ProgressFn = std::function<bool(const Progress&)>;
  // A predict_async result: the probabilities (N, K), or the error message when the request failed
  // (then `probs` is empty).
  using PredictFn = std::function<void(const xt::xtensor<float, 2>& probs, const std::string& error)>;

  // Loads model_dir (a Hugging Face BERT folder). Throws ModelError naming the file on bad input.
  static std::unique_ptr<TuningSession> open(const std::filesystem::path& model_dir,
                                             const SessionOptions& options = {});
  // Serves the asynchronous requests still queued, then joins the worker thread.
  ~TuningSession();
  TuningSession(const TuningSession&) = delete;
  TuningSession& operator=(const TuningSession&) = delete;

  void add_example(LabelledText example);
  void clear_examples();
  std::size_t num_examples() const;

  // Fine-tunes on the added examples into the run folder `out`. options: run.json settings over
  // the session's (quant, quant_embeddings, memory_budget, threads, max_length); "model", "train"
  // and "out" are the session's and may not be given. Clears an earlier cancel() first. The
  // adapter trained becomes the session's model unless the run was interrupted.
  TrainResult train(const nlohmann::json& options, const std::filesystem::path& out,
                    const ProgressFn& progress = {});
  // Continues the run in `out` from its checkpoint with its run.json settings and, for a run of
  // examples in memory, the session's examples (the same ones give the same result).
  TrainResult resume(const std::filesystem::path& out, const ProgressFn& progress = {});
  // Continues the finished run in `run_dir` on the added examples, mixed with its replay buffer,
  // as one atomic step (update.h: labels the run lacks grow the head; a stopped or failed update
  // leaves the folder as it was). options: UpdateConfig settings ("epochs", "min_steps",
  // "max_steps", "lr", "replay_ratio", "memory_budget", ...) over the session's threads, memory
  // budget and max_length; "run" and "train" are the session's. Clears an earlier cancel() first;
  // the updated adapter becomes the session's model unless the update was stopped.
  UpdateResult update(const std::filesystem::path& run_dir, const nlohmann::json& options = nlohmann::json::object(),
                      const ProgressFn& progress = {});
  // Asks the running train, resume or update to stop after its current step (train and resume
  // save a checkpoint; an update is discarded).
  void cancel() noexcept;

  // The model's class names, in id order (a copy: training may change them).
  std::vector<std::string> labels() const;
  // Class probabilities of each text: (N, K).
  xt::xtensor<float, 2> predict_proba(const std::vector<std::string>& texts) const;
  // Queues the texts and returns at once; `done` is called on the session's worker thread, in the
  // order of the requests, after which the request is dropped. `done` must not throw, nor destroy
  // the session (the destructor joins that thread).
  void predict_async(std::vector<std::string> texts, PredictFn done);
  // Accuracy, loss and the other figures on the examples given, or on the added ones when
  // `examples` is empty. A label the model does not have is an error naming it.
  EvalReport evaluate(const std::vector<LabelledText>& examples = {}) const;

  // Writes the current adapter (adapter_config.json, adapter_model.safetensors, labels.json) into dir.
  void save_adapter(const std::filesystem::path& dir) const;
  // Replaces the session's model by the base with the adapter (or run) folder dir.
  void load_adapter(const std::filesystem::path& dir);
  // The key of every file the session writes or reads from now on (ClassifierOptions::key);
  // null: plain files. Waits for a running call, as the calls that use the model do.
  void set_key(std::shared_ptr<const EncryptionKey> key);

  MemoryUse memory() const;

 private:
  struct Request {
    std::vector<std::string> texts;
    PredictFn done;
  };
  TuningSession(std::filesystem::path model_dir, SessionOptions options, Context context, Model model);
  // The caller holds lock_ in these.
  const Model& model() const;  // loads it when absent
  // Runs `body` with the session's stop and progress hooks, without a model loaded (the training
  // needs the memory); memory() reads `figures` meanwhile (null: the session's own). On success
  // `out` holds the session's adapter from then on.
  TrainResult run(std::shared_ptr<const Accountant> figures,
                  const std::function<TrainResult(const RunHooks&)>& body, const std::filesystem::path& out,
                  const ProgressFn& progress);
  TrainResult run(Trainer trainer, const std::filesystem::path& out, const ProgressFn& progress);
  void serve();

  const std::filesystem::path model_dir_;
  const SessionOptions options_;
  // The session's accountant (its budget over the model it holds and every call's tensors) and
  // kernel threads, current on the calling thread during each call. A training run has its own,
  // with the run's budget.
  mutable Context context_;
  // The accountant memory() reads: the running training's while one runs, else the session's.
  mutable std::mutex figures_lock_;
  std::shared_ptr<const Accountant> figures_;
  StopToken stop_;
  mutable std::mutex lock_;           // the model and the examples
  mutable std::optional<Model> model_;  // absent during training (it needs the memory)
  std::filesystem::path adapter_dir_;    // of model_; empty: the base's own head
  std::vector<LabelledText> examples_;

  std::mutex queue_lock_;
  std::condition_variable queue_changed_;
  std::deque<Request> queue_;
  bool closing_ = false;
  std::thread worker_;  // started by the first predict_async
};

}  // namespace edgetune
