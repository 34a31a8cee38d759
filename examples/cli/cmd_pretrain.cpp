// `edgetune pretrain`: masked-LM pretraining of a BERT on plain-text files into a run folder that
// is also a Hugging Face BertForMaskedLM folder (engine/pretrain.h). Ctrl-C saves a checkpoint
// and exits; --resume RUN_DIR continues it.
#include <cstdio>

#include "commands.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/pretrain.h"
#include "settings_cli.h"

namespace edgetune::cli {
namespace {

using PretrainCommand = RunCommand<Pretrainer, PretrainConfig>;

int run(PretrainCommand& c) {
  const PretrainResult r = c.run<PretrainResult>(
      {"model", "corpus", "out"},
      "pretrain needs --model DIR, --corpus FILE... and --out RUN_DIR (or --resume RUN_DIR)");
  std::fprintf(stderr, "done: %lld steps, %lld tokens in %.0f s; peak memory: accountant %s, process (VmHWM) %s\n",
               static_cast<long long>(r.steps), static_cast<long long>(r.tokens), r.seconds,
               format_bytes(r.accountant_peak).c_str(), format_bytes(r.peak_rss).c_str());
  if (r.final_eval) {
    std::fprintf(stderr, "held-out masked-LM loss %.4f, accuracy %.4f (%lld masked tokens)\n", r.final_eval->loss,
                 r.final_eval->accuracy, static_cast<long long>(r.final_eval->masked));
  }
  return r.interrupted ? 130 : 0;
}

const RegisterCommand kRegister{
    "pretrain", "masked-LM pretraining of a BERT on plain-text files (BertForMaskedLM)",
    [](CLI::App& app) -> std::function<int()> {
      auto c = std::make_shared<PretrainCommand>();
      c->bind(app);
      return [c] { return run(*c); };
    }};

}  // namespace
}  // namespace edgetune::cli
