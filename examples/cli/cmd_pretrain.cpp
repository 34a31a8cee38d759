// `edgetune pretrain`: masked-LM pretraining of a BERT on plain-text files into a run folder that
// is also a Hugging Face BertForMaskedLM folder (engine/pretrain.h). Ctrl-C saves a checkpoint
// and exits; --resume RUN_DIR continues it.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/pretrain.h"
#include "edgetune/engine/trainer.h"

namespace edgetune::cli {
namespace {

struct PretrainArgs {
  std::string model, out, resume;
  std::vector<std::string> corpus;
  PretrainConfig c;
  double dropout = -1;
};

int run(PretrainArgs& a, CLI::App& app) {
  // The first Ctrl-C / SIGTERM stops the run after its current step with a checkpoint; a second
  // one ends the process at once.
  install_interrupt_handler();
  std::optional<Pretrainer> trainer;
  if (!a.resume.empty()) {
    for (const char* opt :
         {"--model", "--corpus", "--out", "--lr", "--epochs", "--max-steps", "--batch-size",
          "--max-length", "--seed", "--eval-split", "--dropout", "--f16", "--adam-beta2"}) {
      if (app.count(opt)) {
        throw UsageError(
            std::string("--resume continues with the settings in RUN_DIR/run.json; drop ") + opt);
      }
    }
    std::optional<int> threads;
    if (app.count("--threads")) threads = a.c.threads;
    trainer.emplace(Pretrainer::resume(a.resume, &std::cerr, threads));
  } else {
    if (a.model.empty() || a.corpus.empty() || a.out.empty()) {
      throw UsageError(
          "pretrain needs --model DIR, --corpus FILE... and --out RUN_DIR (or --resume RUN_DIR)");
    }
    PretrainConfig c = a.c;
    c.model_dir = a.model;
    for (const std::string& f : a.corpus) c.corpus.emplace_back(f);
    c.out = a.out;
    if (a.dropout >= 0) c.dropout = a.dropout;
    trainer.emplace(std::move(c), &std::cerr);
  }
  const PretrainResult r = trainer->run([] { return stop_requested(); });
  std::fprintf(
      stderr,
      "done: %lld steps, %lld tokens in %.0f s; peak memory: accountant %s, process (VmHWM) %s\n",
      static_cast<long long>(r.steps), static_cast<long long>(r.tokens), r.seconds,
      format_bytes(r.accountant_peak).c_str(), format_bytes(r.peak_rss).c_str());
  if (r.final_eval) {
    std::fprintf(stderr, "held-out masked-LM loss %.4f, accuracy %.4f (%lld masked tokens)\n",
                 r.final_eval->loss, r.final_eval->accuracy,
                 static_cast<long long>(r.final_eval->masked));
  }
  return r.interrupted ? 130 : 0;
}

const RegisterCommand kRegister{
    "pretrain", "masked-LM pretraining of a BERT on plain-text files (BertForMaskedLM)",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<PretrainArgs>();
      PretrainConfig& c = a->c;
      app.add_option(
          "--model", a->model,
          "the starting BERT folder (e.g. from `edgetune create-model`); its vocab.txt tokenizes");
      app.add_option("--corpus", a->corpus,
                     "plain-text files: one paragraph per line, a blank line between documents");
      app.add_option("--out", a->out,
                     "run folder: the pretrained model, metrics.jsonl, checkpoints");
      app.add_option("--resume", a->resume, "continue the interrupted run in RUN_DIR");
      app.add_option("--max-length", c.max_length, "tokens per segment, [CLS] and [SEP] included")
          ->capture_default_str();
      app.add_option("--batch-size", c.batch_size, "segments per optimizer step")
          ->capture_default_str();
      app.add_option("--lr", c.lr, "peak learning rate (AdamW)")->capture_default_str();
      app.add_option("--weight-decay", c.weight_decay, "weight decay (not on biases and LayerNorm)")
          ->capture_default_str();
      app.add_option("--warmup-ratio", c.warmup_ratio,
                     "fraction of the steps warming up linearly; then linear decay")
          ->capture_default_str();
      app.add_option("--adam-beta2", c.adam_beta2,
                     "AdamW's beta2 (0.98 as RoBERTa for a steadier start)")
          ->capture_default_str();
      app.add_option("--max-grad-norm", c.max_grad_norm, "clip the gradient norm (0: off)")
          ->capture_default_str();
      app.add_option("--epochs", c.epochs, "passes over the training segments")
          ->capture_default_str();
      app.add_option("--max-steps", c.max_steps,
                     "run exactly N optimizer steps (overrides --epochs)");
      app.add_option("--seed", c.seed, "seed of the split, order, masks, dropout and fresh heads")
          ->capture_default_str();
      app.add_option("--dropout", a->dropout,
                     "override the model's dropout probabilities (0: deterministic)");
      app.add_option("--threads", c.threads, "threads for the kernels (0: all cores)")
          ->capture_default_str();
      app.add_option("--eval-split", c.eval_split, "fraction of segments held out for evaluation")
          ->capture_default_str();
      app.add_option("--eval-every", c.eval_every,
                     "steps between held-out evaluations (0: at the end only)")
          ->capture_default_str();
      app.add_option("--save-every", c.save_every, "write a checkpoint every N steps")
          ->capture_default_str();
      app.add_option("--log-every", c.log_every, "steps between progress lines")
          ->capture_default_str();
      app.add_option("--mlm-probability", c.masking.probability,
                     "fraction of tokens chosen for prediction")
          ->capture_default_str();
      app.add_flag("--f16", c.save_f16,
                   "save model.safetensors in half precision (half the bytes)");
      CLI::App* self = &app;
      return [a, self] { return run(*a, *self); };
    }};

}  // namespace
}  // namespace edgetune::cli
