// `edgetune train`: fine-tunes a BERT classifier on a labelled file into a run folder.
#include <iostream>

#include "commands.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/trainer.h"
#include "settings_cli.h"

namespace edgetune::cli {
namespace {

void report(const TrainResult& r) {
  std::cerr << "done: " << r.steps << " steps in " << r.seconds << " s (" << r.examples_per_second
            << " examples/s); peak memory: accountant " << format_bytes(r.accountant_peak)
            << ", process (VmHWM) " << format_bytes(r.peak_rss)
            << (r.memory_budget ? " of " + format_bytes(r.memory_budget) : std::string()) << "\n";
  if (r.final_eval) std::cerr << "evaluation of the kept adapter: accuracy " << r.final_eval->accuracy
                              << ", macro-F1 " << r.final_eval->macro_f1 << "\n";
  if (r.epsilon) std::cerr << "privacy spent (DP-SGD): " << format_privacy(*r.epsilon, r.dp_delta) << "\n";
}

const RegisterCommand kRegister = run_command<Trainer, TrainConfig, TrainResult>(
    "train", "fine-tune a BERT classifier on a labelled file (LoRA, Houlsby adapters, BitFit, head, full)",
    {"model", "train", "out"}, "train needs --model DIR, --train FILE and --out RUN_DIR (or --resume RUN_DIR)",
    report);

}  // namespace
}  // namespace edgetune::cli
