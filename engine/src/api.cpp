// The C++ API (see api.h).
#include "edgetune/engine/api.h"

#include "edgetune/autograd/kernels.h"
#include "edgetune/data/labels.h"

namespace edgetune {

struct Classifier::Impl {
  Model model;
  ClassifierOptions options;
  std::vector<std::string> labels;

  std::vector<Prediction> run(const std::vector<std::string>& texts) const {
    std::vector<data::Encoding> enc;
    enc.reserve(texts.size());
    for (const std::string& t : texts) enc.push_back(model.tokenizer.encode(t, std::nullopt, options.max_length));
    return edgetune::predict(model.bert, enc, model.tokenizer.pad_id(), options.batch_size,
                            options.compute);
  }
};

Classifier::Classifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Classifier::~Classifier() = default;
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;

Classifier Classifier::open(const std::filesystem::path& model_dir,
                            const std::filesystem::path& adapter_dir,
                            const ClassifierOptions& options) {
  if (options.threads > 0) kernels::set_num_threads(options.threads);
  Model m = open_model(model_dir, adapter_dir, options.base, options.quant_embeddings);
  std::vector<std::string> labels = m.labels();
  return Classifier(std::unique_ptr<Impl>(new Impl{std::move(m), options, std::move(labels)}));
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

TrainResult fine_tune(TrainConfig config, const std::vector<LabelledText>& examples, std::ostream* log) {
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
  config.train_data = std::move(ds);
  Trainer t(std::move(config), log);
  return t.run();
}

const char* version() { return EDGETUNE_VERSION; }  // the project's version, from CMake

}  // namespace edgetune
