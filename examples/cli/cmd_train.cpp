// `edgetune train`: fine-tunes a BERT classifier on a labelled file into a run folder.
#include <iostream>

#include "commands.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/trainer.h"
#include "settings_cli.h"

namespace edgetune::cli {
namespace {

using TrainCommand = RunCommand<Trainer, TrainConfig>;

int run(TrainCommand& c) {
  const TrainResult r = c.run<TrainResult>(
      {"model", "train", "out"}, "train needs --model DIR, --train FILE and --out RUN_DIR (or --resume RUN_DIR)");
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
      auto c = std::make_shared<TrainCommand>();
      c->bind(app);
      return [c] { return run(*c); };
    }};

}  // namespace
}  // namespace edgetune::cli
