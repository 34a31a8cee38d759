// `edgetune pretrain`: masked-LM pretraining of a BERT on plain-text files into a run folder that
// is also a Hugging Face BertForMaskedLM folder (engine/pretrain.h). Ctrl-C saves a checkpoint
// and exits; --resume RUN_DIR continues it.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/pretrain.h"
#include "options.h"
#include "settings_cli.h"

namespace edgetune::cli {
namespace {

struct PretrainArgs {
  PretrainConfig config;
  std::string resume;
  std::unique_ptr<SettingsBinder> bound;
};

int run(PretrainArgs& a) {
  const StopToken stop = install_stop_signals();
  std::optional<Pretrainer> trainer;
  if (!a.resume.empty()) {
    reject_on_resume(*a.bound, {"threads", "memory_budget"});
    std::optional<int> threads;
    std::optional<std::size_t> budget;
    if (a.bound->options().at("threads")->count()) threads = a.config.threads;
    if (a.bound->options().at("memory_budget")->count()) budget = a.config.memory_budget;
    if (budget) limit_allocator_slack();
    trainer.emplace(Pretrainer::resume(a.resume, &std::cerr, threads, budget));
  } else {
    if (a.config.model_dir.empty() || a.config.corpus.empty() || a.config.out.empty()) {
      throw UsageError("pretrain needs --model DIR, --corpus FILE... and --out RUN_DIR (or --resume RUN_DIR)");
    }
    if (a.config.memory_budget > 0) limit_allocator_slack();
    trainer.emplace(a.config, &std::cerr);
  }
  RunHooks hooks;
  hooks.should_stop = [stop] { return stop.stop_requested(); };
  const PretrainResult r = trainer->run(hooks);
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
      auto a = std::make_shared<PretrainArgs>();
      a->bound = std::make_unique<SettingsBinder>(app);
      PretrainConfig::fields(a->config, *a->bound);
      app.add_option("--resume", a->resume, "continue the interrupted run in RUN_DIR");
      return [a] { return run(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli
