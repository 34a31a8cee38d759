// `edgetune eval` (the evaluation report of a model and adapter on a labelled file) and
// `edgetune predict` (one JSON line per row: text, predicted label, probabilities, logits).
#include <cstdio>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/labels.h"
#include "edgetune/engine/session.h"
#include "options.h"

namespace edgetune::cli {
namespace {

struct EvalArgs {
  ModelArgs model;
  DataOptions data;
  std::string adapter, data_file, out, key_file;
  bool json = false;
  int batch_size = 64;
  int threads = 0;
};

int run_eval(const EvalArgs& a) {
  settings::check_ranges(a.data);
  Context context = command_context(a.threads, load_key(a.key_file));
  const ContextScope scope(context);
  Model m = open_model(a.model.model_dir, a.adapter, a.model.quant, a.model.quant_embeddings);
  const data::LabelMap map = eval_label_map(m.labels());
  data::Dataset ds = read_data(a.data_file, a.data, true, &map);
  if (ds.bad_rows) std::cerr << "skipped " << ds.bad_rows << " bad rows (first: " << ds.bad_row_messages.front() << ")\n";
  const auto enc = data::encode_dataset(m.tokenizer, ds, a.data.max_length);
  std::cerr << invalid_utf8_note(enc, ds.source);
  const EvalReport r = evaluate(m.bert, enc, data::label_ids(ds), m.tokenizer.pad_id(), a.batch_size,
                                a.model.compute);
  if (a.json) {
    std::cout << r.to_json().dump() << "\n";
  } else {
    std::cout << r.to_text();
  }
  return 0;
}

int run_predict(const EvalArgs& a) {
  settings::check_ranges(a.data);
  Context context = command_context(a.threads, load_key(a.key_file));
  const ContextScope scope(context);
  Model m = open_model(a.model.model_dir, a.adapter, a.model.quant, a.model.quant_embeddings);
  data::Dataset ds = read_data(a.data_file, a.data, false);
  if (ds.bad_rows) std::cerr << "skipped " << ds.bad_rows << " bad rows (first: " << ds.bad_row_messages.front() << ")\n";
  const auto enc = data::encode_dataset(m.tokenizer, ds, a.data.max_length);
  std::cerr << invalid_utf8_note(enc, ds.source);
  const auto preds = predict(m.bert, enc, m.tokenizer.pad_id(), a.batch_size, a.model.compute);
  const auto names = m.labels();
  std::string out;
  for (size_t i = 0; i < preds.size(); ++i) {
    nlohmann::ordered_json j;
    j["text"] = ds.examples[i].text;
    if (ds.examples[i].text_pair) j["text_pair"] = *ds.examples[i].text_pair;
    j["label"] = names[static_cast<size_t>(preds[i].label)];
    nlohmann::ordered_json probs = nlohmann::ordered_json::object();
    for (size_t k = 0; k < names.size(); ++k) probs[names[k]] = preds[i].probabilities[k];
    j["probabilities"] = probs;
    j["logits"] = preds[i].logits;
    out += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  if (a.out.empty()) {
    std::fwrite(out.data(), 1, out.size(), stdout);
  } else {
    write_file_atomic(a.out, out);
  }
  return 0;
}

void add_common(CLI::App& app, EvalArgs& a, bool labelled) {
  add_model_options(app, a.model);
  app.add_option("--adapter", a.adapter, "adapter folder or run folder written by edgetune train (or PEFT)");
  app.add_option("--data", a.data_file, "data file (TSV, CSV or JSONL; - for stdin)")->required();
  add_data_options(app, a.data, labelled);
  app.add_option("--batch-size", a.batch_size, "rows per forward pass")->capture_default_str();
  add_threads_option(app, a.threads);
  add_key_option(app, a.key_file);
}

const RegisterCommand kEval{
    "eval", "evaluate a model (and adapter) on a labelled file: accuracy, macro-F1, per class, confusion",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<EvalArgs>();
      add_common(app, *a, true);
      app.add_flag("--json", a->json, "print the report as one JSON object");
      return [a] { return run_eval(*a); };
    }};

const RegisterCommand kPredict{
    "predict", "classify each row of a file: one JSON line with text, label, probabilities, logits",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<EvalArgs>();
      add_common(app, *a, false);
      app.add_option("--out", a->out, "write the JSON lines to this file (atomically) instead of stdout");
      return [a] { return run_predict(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli
