// `edgetune train`: fine-tunes a BERT classifier on a labelled file into a run folder.
#include <iostream>

#include "commands.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/trainer.h"
#include "options.h"
#include "settings_cli.h"

namespace edgetune::cli {
namespace {

struct TrainArgs {
  TrainConfig config;
  std::string resume;
  std::unique_ptr<SettingsBinder> bound;
};

int run(TrainArgs& a) {
  const StopToken stop = install_stop_signals();
  std::optional<Trainer> trainer;
  if (!a.resume.empty()) {
    reject_on_resume(*a.bound, {"threads", "memory_budget"});
    std::optional<int> threads;
    std::optional<std::size_t> budget;
    if (a.bound->options().at("threads")->count()) threads = a.config.threads;
    if (a.bound->options().at("memory_budget")->count()) budget = a.config.memory_budget;
    if (budget) limit_allocator_slack();
    trainer.emplace(Trainer::resume(a.resume, &std::cerr, threads, budget));
  } else {
    if (a.config.model_dir.empty() || a.config.train_file.empty() || a.config.out.empty()) {
      throw UsageError("train needs --model DIR, --train FILE and --out RUN_DIR (or --resume RUN_DIR)");
    }
    if (a.config.memory_budget > 0) limit_allocator_slack();
    trainer.emplace(a.config, &std::cerr);
  }
  RunHooks hooks;
  hooks.should_stop = [stop] { return stop.stop_requested(); };
  const TrainResult r = trainer->run(hooks);
  std::cerr << "done: " << r.steps << " steps in " << r.seconds << " s (" << r.examples_per_second
            << " examples/s); peak memory: accountant " << format_bytes(r.accountant_peak)
            << ", process (VmHWM) " << format_bytes(r.peak_rss) << "\n";
  if (r.final_eval) std::cerr << "evaluation of the kept adapter: accuracy " << r.final_eval->accuracy
                              << ", macro-F1 " << r.final_eval->macro_f1 << "\n";
  return r.interrupted ? 130 : 0;
}

const RegisterCommand kRegister{
    "train", "fine-tune a BERT classifier on a labelled file (LoRA, Houlsby adapters, BitFit, head, full)",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<TrainArgs>();
      a->bound = std::make_unique<SettingsBinder>(app);
      TrainConfig::fields(a->config, *a->bound);
      app.add_option("--resume", a->resume, "continue the interrupted run in RUN_DIR");
      return [a] { return run(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli
