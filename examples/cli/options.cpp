// Shared command-line options (see options.h).
#include "options.h"

#include <csignal>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "commands.h"
#include "edgetune/autograd/kernels.h"
#include "settings_cli.h"

namespace edgetune::cli {

namespace {
// The token the signal handler stops: the command line runs one training per process.
const StopToken* g_signal_stop = nullptr;
volatile std::sig_atomic_t g_signals = 0;

void on_signal(int sig) {
  g_signals = g_signals + 1;
  if (g_signals > 1) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
  if (g_signal_stop != nullptr) g_signal_stop->request_stop();
}
}  // namespace

StopToken install_stop_signals() {
  static const StopToken token;
  g_signal_stop = &token;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  return token;
}

void limit_allocator_slack() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
}

ResumeOverrides resume_overrides(const SettingsBinder& bound, int threads, std::size_t memory_budget) {
  ResumeOverrides o;
  for (const auto& [key, option] : bound.options()) {
    if (option->count() == 0) continue;
    if (key == "threads") {
      o.threads = threads;
    } else if (key == "memory_budget") {
      o.memory_budget = memory_budget;
    } else {
      throw UsageError("--resume continues with the settings in RUN_DIR/run.json; drop " + option->get_name());
    }
  }
  return o;
}

DType ModelArgs::base() const {
  if (quant == "f32") return DType::F32;
  if (quant == "q8") return DType::Q8;
  if (quant == "q4") return DType::Q4;
  throw UsageError("--quant must be f32, q8 or q4, got '" + quant + "'");
}

void add_model_options(CLI::App& app, ModelArgs& a, bool required) {
  auto* m = app.add_option("--model", a.model_dir,
                           "Hugging Face BERT folder (config.json, model.safetensors, vocab.txt)");
  if (required) m->required();
  app.add_option("--quant", a.quant, "storage of the frozen base Linear weights: f32, q8 or q4")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "q8", "q4"}));
  app.add_flag("--quant-embeddings", a.quant_embeddings,
               "store the word-embedding table as --quant too (frozen q8/q4 gather)");
}

DataOptions DataArgs::options() const {
  DataOptions o;
  if (!text_column.empty()) o.text_column = data::ColumnRef::parse(text_column);
  if (!text_pair_column.empty()) o.text_pair_column = data::ColumnRef::parse(text_pair_column);
  if (!label_column.empty()) o.label_column = data::ColumnRef::parse(label_column);
  o.header = header == "present" ? data::Header::kPresent
             : header == "absent" ? data::Header::kAbsent
                                  : data::Header::kAuto;
  o.skip_bad_rows = skip_bad_rows;
  o.max_length = max_length;
  if (max_length < 3) throw UsageError("--max-length must be at least 3");
  return o;
}

void add_data_options(CLI::App& app, DataArgs& a, bool with_label) {
  app.add_option("--text-column", a.text_column,
                 "column of the text: header name or 0-based index (default: guessed from the "
                 "header: sentence, text, text_a, ...)");
  app.add_option("--text-pair-column", a.text_pair_column, "column of the second text of a pair");
  if (with_label) {
    app.add_option("--label-column", a.label_column,
                   "column of the label: header name or 0-based index (default: label, class, ...)");
  }
  app.add_option("--header", a.header, "whether files have a header row: auto, present or absent")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "present", "absent"}));
  app.add_flag("--skip-bad-rows", a.skip_bad_rows,
               "count and report bad rows instead of stopping at the first");
  app.add_option("--max-length", a.max_length, "tokens per row, [CLS] and [SEP] included")
      ->capture_default_str();
}

void add_threads_option(CLI::App& app, int& threads) {
  app.add_option("--threads", threads, "threads for the kernels (0: all cores)")->capture_default_str();
}

void apply_threads(int threads) { kernels::set_num_threads(threads); }

}  // namespace edgetune::cli
