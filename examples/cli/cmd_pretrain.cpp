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

void report(const PretrainResult& r) {
  std::fprintf(stderr, "done: %lld steps, %lld tokens in %.0f s; peak memory: accountant %s, process (VmHWM) %s\n",
               static_cast<long long>(r.steps), static_cast<long long>(r.tokens), r.seconds,
               format_bytes(r.accountant_peak).c_str(), format_bytes(r.peak_rss).c_str());
  if (r.final_eval && r.final_eval->rtd_accuracy) {
    std::fprintf(stderr,
                 "held-out replaced-token detection loss %.4f, accuracy %.4f; generator masked-LM loss %.4f, "
                 "accuracy %.4f (%lld masked tokens)\n",
                 *r.final_eval->rtd_loss, *r.final_eval->rtd_accuracy, r.final_eval->loss, r.final_eval->accuracy,
                 static_cast<long long>(r.final_eval->masked));
  } else if (r.final_eval) {
    std::fprintf(stderr, "held-out masked-LM loss %.4f, accuracy %.4f (%lld masked tokens)\n", r.final_eval->loss,
                 r.final_eval->accuracy, static_cast<long long>(r.final_eval->masked));
  }
}

const RegisterCommand kRegister = run_command<Pretrainer, PretrainConfig, PretrainResult>(
    "pretrain", "pretraining of a BERT on plain-text files: masked-LM (BertForMaskedLM) or ELECTRA's replaced-token detection", {"model", "corpus|task_data", "out"},
    "pretrain needs --model DIR, --corpus FILE... (or --task-data FILE...) and --out RUN_DIR (or "
    "--resume RUN_DIR)",
    report);

}  // namespace
}  // namespace edgetune::cli
