// Shared command-line options (see options.h).
#include "options.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <csignal>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "commands.h"
#include "edgetune/autograd/kernels.h"
#include "edgetune/engine/model_file.h"
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

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

std::size_t stderr_columns() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
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

void add_model_options(CLI::App& app, ModelArgs& a, bool required) {
  SettingsBinder bound(app);
  model_fields(a, bound);
  if (required) bound.options().at("model")->required();
}

void use_model_file_storage(CLI::App& sub) {
  CLI::Option* model = sub.get_option_no_throw("--model");
  if (model == nullptr || model->count() == 0) return;
  const std::filesystem::path path = model->as<std::string>();
  if (!is_model_file(path)) return;
  const ModelFile file(path, false);
  CLI::Option* quant = sub.get_option_no_throw("--quant");
  if (quant != nullptr && quant->count() == 0) {
    quant->add_result(dtype_name(file.storage()));
    quant->run_callback();
  }
  CLI::Option* embeddings = sub.get_option_no_throw("--quant-embeddings");
  if (embeddings != nullptr && embeddings->count() == 0 && file.quant_embeddings()) {
    embeddings->add_result("true");
    embeddings->run_callback();
  }
}

void add_data_options(CLI::App& app, DataOptions& o, bool with_label) {
  SettingsBinder bound(app, with_label ? std::set<std::string>{} : std::set<std::string>{"label_column"});
  DataOptions::fields(o, bound);
}

void add_threads_option(CLI::App& app, int& threads) {
  app.add_option("--threads", threads, "threads for the kernels (0: all cores)")->capture_default_str();
}

void add_key_option(CLI::App& app, std::string& key_file) {
  app.add_option("--key-file", key_file,
                 "encrypt what is written, and decrypt what was, with the 32-byte key in FILE "
                 "(raw bytes, e.g. head -c 32 /dev/urandom > FILE)");
}

std::shared_ptr<const EncryptionKey> load_key(const std::string& key_file) {
  if (key_file.empty()) return nullptr;
  return EncryptionKey::from_file(key_file);
}

Context command_context(int threads, std::shared_ptr<const EncryptionKey> key) {
  Context context;
  context.threads = kernels::resolve_threads(threads);
  context.key = std::move(key);
  return context;
}

}  // namespace edgetune::cli
