// Models ready to use, and the shared evaluation and prediction loops (see session.h).
#include "edgetune/engine/session.h"

#include <algorithm>
#include <cmath>

#include "edgetune/autograd/ops.h"
#include "edgetune/data/error.h"
#include "edgetune/data/labels.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/model_file.h"

namespace edgetune {

namespace fs = std::filesystem;

namespace {

std::optional<data::ColumnRef> guess(const std::vector<std::string>& header,
                                     std::initializer_list<const char*> names) {
  for (const char* want : names) {
    for (const std::string& h : header) {
      std::string lower = h;
      std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
      if (lower == want) return data::ColumnRef(h);
    }
  }
  return std::nullopt;
}

// The header row of a TSV / CSV file, or the keys of the first JSON line.
std::vector<std::string> peek_header(const fs::path& file, data::Format format) {
  data::ReadOptions ro;
  ro.format = format;
  ro.header = data::Header::kPresent;
  ro.text_column = data::ColumnRef(0);
  ro.skip_bad_rows = true;
  if (file == "-") return {};
  if ((format == data::Format::kAuto ? data::format_from_name(file) : format) == data::Format::kJsonl) {
    return {};
  }
  try {
    return data::read_dataset(file, ro).header;
  } catch (const std::exception&) {
    return {};
  }
}

}  // namespace

data::Dataset read_data(const fs::path& file, const DataOptions& options, bool labelled,
                        const data::LabelMap* labels) {
  data::ReadOptions ro;
  ro.format = options.format;
  ro.header = options.header;
  ro.text_column = options.text_column;
  ro.text_pair_column = options.text_pair_column;
  ro.label_column = options.label_column;
  ro.labels = labels;
  ro.skip_bad_rows = options.skip_bad_rows;
  const bool json = (options.format == data::Format::kAuto ? data::format_from_name(file)
                                                           : options.format) == data::Format::kJsonl;
  if (!ro.text_column.is_set() || (labelled && !ro.label_column)) {
    const std::vector<std::string> header =
        json ? std::vector<std::string>{} : peek_header(file, options.format);
    if (!ro.text_column.is_set()) {
      auto t = json ? std::optional<data::ColumnRef>(data::ColumnRef("text"))
                    : guess(header, {"sentence", "text", "text_a", "content", "review", "message"});
      if (!t) {
        throw data::DataError(file.string(),
                              "cannot tell which column holds the text: give --text-column (a "
                              "header name or a 0-based index)");
      }
      ro.text_column = *t;
    }
    if (labelled && !ro.label_column) {
      auto l = json ? std::optional<data::ColumnRef>(data::ColumnRef("label"))
                    : guess(header, {"label", "labels", "class", "category", "sentiment"});
      if (!l) {
        throw data::DataError(file.string(),
                              "cannot tell which column holds the label: give --label-column (a "
                              "header name or a 0-based index)");
      }
      ro.label_column = *l;
    }
  }
  return data::read_dataset(file, ro);
}

std::string invalid_utf8_note(const std::vector<data::Encoding>& encodings, const std::string& source) {
  std::size_t rows = 0;
  for (const auto& e : encodings) rows += e.invalid_utf8 > 0;
  return invalid_utf8_note(rows, source);
}

std::string invalid_utf8_note(std::size_t rows, const std::string& source) {
  if (rows == 0) return "";
  return "note: " + std::to_string(rows) + " row" + (rows > 1 ? "s" : "") + " of " + source +
         " held invalid UTF-8 (each bad sequence was replaced and dropped)\n";
}

TensorBatch to_tensors(const data::Batch& b) {
  TensorBatch t;
  const Shape s{b.rows, b.length};
  t.inputs.input_ids = Tensor::from_ints(s, b.ids);
  t.inputs.token_type_ids = Tensor::from_ints(s, b.type_ids);
  t.inputs.attention_mask = Tensor::from_ints(s, b.attention_mask);
  if (!b.labels.empty()) t.labels = Tensor::from_ints(Shape{b.rows}, b.labels);
  t.rows = b.indices;
  return t;
}

std::vector<std::string> label_names(const BertConfig& config) {
  std::vector<std::string> names;
  for (std::int64_t i = 0; i < config.num_labels; ++i) {
    names.push_back(i < static_cast<std::int64_t>(config.id2label.size())
                        ? config.id2label[static_cast<size_t>(i)]
                        : "LABEL_" + std::to_string(i));
  }
  return names;
}

data::LabelMap eval_label_map(const std::vector<std::string>& names) {
  bool placeholders = true;
  for (size_t i = 0; i < names.size(); ++i) placeholders = placeholders && names[i] == "LABEL_" + std::to_string(i);
  if (!placeholders) return data::LabelMap(names);
  std::vector<std::string> ids;
  for (size_t i = 0; i < names.size(); ++i) ids.push_back(std::to_string(i));
  return data::LabelMap(ids);
}

Model open_model(const fs::path& model_dir, const fs::path& adapter_dir, DType base,
                 bool quant_embeddings) {
  LoadOptions lo;
  lo.base = base;
  lo.quant_embeddings = quant_embeddings;
  MethodOptions method;
  method.method = Method::Head;
  fs::path weights_dir = model_dir;
  if (!adapter_dir.empty()) {
    TrainedFolder trained = read_trained_folder(adapter_dir);
    method = trained.method;
    if (method.method == Method::Full) weights_dir = adapter_dir;  // the run folder is a whole model
    lo.id2label = std::move(trained.labels);
  }
  Model m{load_bert(weights_dir, lo), load_model_tokenizer(model_dir), method,
          model_dir};
  if (!adapter_dir.empty() && method.method != Method::Full) load_trained(m.bert, adapter_dir);
  return m;
}

namespace {

// `n` rows in batches, sorted by length (length(i) tokens) so padding stays small; make(rows)
// makes a batch, f(batch) runs it, and results land at each row's index.
template <class Length, class Make, class F>
void for_each_batch(std::size_t n, Length&& length, int batch_size, Make&& make, F&& f) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return length(a) < length(b); });
  for (const auto& rows : data::batch_rows(order, static_cast<size_t>(std::max(batch_size, 1)))) {
    f(to_tensors(make(rows)));
  }
}

template <class F>
void for_each_batch(const std::vector<data::Encoding>& encodings, std::int32_t pad_id,
                    int batch_size, const std::vector<std::int32_t>* labels, F&& f) {
  for_each_batch(
      encodings.size(), [&](size_t i) { return encodings[i].ids.size(); }, batch_size,
      [&](const std::vector<size_t>& rows) {
        return data::make_batch(encodings, rows, pad_id,
                                labels ? std::span<const std::int32_t>(*labels) : std::span<const std::int32_t>());
      },
      std::forward<F>(f));
}

// Runs the batches for_each(f) hands to f, without recording; returns the mean cross-entropy over
// the rows and puts each row's predicted class in `predicted` (one entry per row).
template <class ForEach>
double evaluate_batches(const BertModel& model, Compute compute, ForEach&& for_each,
                        std::vector<std::int32_t>& predicted) {
  NoGradGuard no_grad;
  ForwardOptions fo;
  fo.compute = compute;
  double loss_sum = 0;
  for_each([&](const TensorBatch& b) {
    const Tensor logits = model.classify(b.inputs, fo);
    loss_sum += ops::cross_entropy(logits, b.labels).item() * static_cast<double>(b.rows.size());
    const std::int64_t k = logits.dim(1);
    const float* z = logits.data<float>();
    for (size_t r = 0; r < b.rows.size(); ++r) {
      predicted[b.rows[r]] =
          static_cast<std::int32_t>(std::max_element(z + r * k, z + (r + 1) * k) - (z + r * k));
    }
  });
  return predicted.empty() ? 0.0 : loss_sum / static_cast<double>(predicted.size());
}

}  // namespace

std::vector<Prediction> predict(const BertModel& model, const std::vector<data::Encoding>& encodings,
                                std::int32_t pad_id, int batch_size, Compute compute) {
  NoGradGuard no_grad;
  const InferenceCache reuse(*current_context().accountant);
  ForwardOptions fo;
  fo.compute = compute;
  std::vector<Prediction> out(encodings.size());
  for_each_batch(encodings, pad_id, batch_size, nullptr, [&](const TensorBatch& b) {
    const Tensor logits = model.classify(b.inputs, fo);
    const std::int64_t k = logits.dim(1);
    const float* z = logits.data<float>();
    for (size_t r = 0; r < b.rows.size(); ++r) {
      Prediction& p = out[b.rows[r]];
      p.logits.assign(z + r * k, z + (r + 1) * k);
      const float mx = *std::max_element(p.logits.begin(), p.logits.end());
      double sum = 0;
      p.probabilities.resize(static_cast<size_t>(k));
      for (std::int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(p.logits[j] - mx));
      for (std::int64_t j = 0; j < k; ++j) {
        p.probabilities[j] = static_cast<float>(std::exp(static_cast<double>(p.logits[j] - mx)) / sum);
      }
      p.label = static_cast<std::int32_t>(std::max_element(p.logits.begin(), p.logits.end()) -
                                          p.logits.begin());
    }
  });
  return out;
}

EvalReport evaluate(const BertModel& model, const std::vector<data::Encoding>& encodings,
                    const std::vector<std::int32_t>& labels, std::int32_t pad_id, int batch_size,
                    Compute compute) {
  std::vector<std::int32_t> predicted(encodings.size(), 0);
  const double loss = evaluate_batches(
      model, compute, [&](auto&& f) { for_each_batch(encodings, pad_id, batch_size, &labels, f); }, predicted);
  return make_report(labels, predicted, label_names(model.config), loss);
}

EvalReport evaluate(const BertModel& model, const data::TokenStore& store, std::int32_t pad_id,
                    int batch_size, Compute compute) {
  std::vector<std::int32_t> predicted(store.size(), 0), labels(store.size());
  for (std::size_t i = 0; i < store.size(); ++i) labels[i] = store.label(i);
  const double loss = evaluate_batches(
      model, compute,
      [&](auto&& f) {
        for_each_batch(
            store.size(), [&](size_t i) { return store.ids(i).size(); }, batch_size,
            [&](const std::vector<size_t>& rows) { return data::make_batch(store, rows, pad_id, true); }, f);
      },
      predicted);
  return make_report(labels, predicted, label_names(model.config), loss);
}

}  // namespace edgetune
