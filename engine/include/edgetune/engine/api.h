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
// Dense outputs are xtensor arrays. Errors are exceptions (std::runtime_error and subclasses:
// ModelError, data::DataError, BudgetExceeded, PlanError); the C ABI (c_api.h) turns them into
// return codes and messages.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "edgetune/engine/trainer.h"

namespace edgetune {

struct ClassifierOptions {
  DType base = DType::Q8;         // storage of the frozen base weights: F32, Q8 or Q4
  bool quant_embeddings = false;  // the word-embedding table as `base` too
  Compute compute = Compute::Int8;  // linear layers over a q8/q4 base (f32 base: always f32)
  int max_length = 128;           // tokens per text, [CLS] and [SEP] included
  int batch_size = 32;
  int threads = 0;                // 0: all cores
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

}  // namespace edgetune
