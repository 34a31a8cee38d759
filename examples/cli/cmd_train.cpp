// `edgetune train`: fine-tunes a BERT classifier on a labelled file into a run folder.
#include <iostream>

#include "commands.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/planner.h"
#include "edgetune/engine/trainer.h"
#include "options.h"

namespace edgetune::cli {
namespace {

struct TrainArgs {
  ModelArgs model;
  DataArgs data;
  std::string train, eval, out, resume, init_adapter;
  double eval_split = 0;
  std::string method = "lora";
  int lora_rank = 8;
  double lora_alpha = 16, lora_dropout = 0;
  std::string lora_targets = "query,value";
  bool lora_fa = false;
  std::int64_t adapter_size = 64;
  int epochs = 3, batch_size = 16, grad_accum = 1, early_stopping = 0, log_every = 10;
  double lr = 0, weight_decay = 0.01, warmup_ratio = 0, max_grad_norm = 1.0, momentum = 0.9;
  std::string optimizer = "adamw", schedule = "linear";
  bool nesterov = false, no_shuffle = false;
  std::uint64_t seed = 42;
  double dropout = -1;
  int threads = 0;
  std::int64_t save_every = 0, max_steps = 0;
  std::string memory_budget, checkpointing = "auto";
  int micro_batch = 0;
};

int run(TrainArgs& a, CLI::App& app) {
  install_interrupt_handler();
  std::optional<std::size_t> budget;
  if (!a.memory_budget.empty()) {
    try {
      budget = parse_bytes(a.memory_budget);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("--memory-budget: ") + e.what());
    }
  }
  std::optional<Trainer> trainer;
  if (!a.resume.empty()) {
    for (const char* opt : {"--model", "--train", "--eval", "--method", "--lr", "--epochs",
                            "--batch-size", "--out", "--seed", "--optimizer"}) {
      if (app.count(opt)) {
        throw UsageError(std::string("--resume continues with the settings in RUN_DIR/run.json; drop ") + opt);
      }
    }
    std::optional<int> threads;
    if (app.count("--threads")) threads = a.threads;
    trainer.emplace(Trainer::resume(a.resume, &std::cerr, threads, budget));
  } else {
    if (a.model.model_dir.empty() || a.train.empty() || a.out.empty()) {
      throw UsageError("train needs --model DIR, --train FILE and --out RUN_DIR (or --resume RUN_DIR)");
    }
    TrainConfig c;
    c.model_dir = a.model.model_dir;
    c.train_file = a.train;
    c.eval_file = a.eval;
    c.eval_split = a.eval_split;
    c.data = a.data.options();
    c.method.method = parse_method(a.method);
    c.method.lora.rank = a.lora_rank;
    c.method.lora.alpha = a.lora_alpha;
    c.method.lora.dropout = a.lora_dropout;
    c.method.lora.freeze_a = a.lora_fa;
    c.method.lora_targets = parse_lora_targets(a.lora_targets);
    c.method.adapter_size = a.adapter_size;
    c.method.seed = a.seed;
    c.quant = a.model.base();
    c.quant_embeddings = a.model.quant_embeddings;
    c.init_adapter = a.init_adapter;
    c.epochs = a.epochs;
    c.batch_size = a.batch_size;
    c.lr = a.lr;
    c.weight_decay = a.weight_decay;
    c.optimizer = a.optimizer;
    c.momentum = a.momentum;
    c.nesterov = a.nesterov;
    c.schedule = a.schedule;
    c.warmup_ratio = a.warmup_ratio;
    c.max_grad_norm = a.max_grad_norm;
    c.grad_accum = a.grad_accum;
    c.seed = a.seed;
    c.shuffle = !a.no_shuffle;
    if (a.dropout >= 0) c.dropout = a.dropout;
    c.threads = a.threads;
    c.out = a.out;
    c.early_stopping = a.early_stopping;
    c.save_every = a.save_every;
    c.max_steps = a.max_steps;
    c.log_every = a.log_every;
    c.memory_budget = budget.value_or(0);
    c.micro_batch = a.micro_batch;
    if (a.checkpointing != "auto") c.checkpoint_layers = a.checkpointing == "on";
    if (c.optimizer == "sgd" && a.momentum == 0.9 && !app.count("--momentum")) c.momentum = 0.9;
    trainer.emplace(std::move(c), &std::cerr);
  }
  const TrainResult r = trainer->run();
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
      add_model_options(app, a->model, false);
      app.add_option("--train", a->train, "labelled training file (TSV, CSV or JSONL; - for stdin)");
      app.add_option("--eval", a->eval, "labelled evaluation file, evaluated after each epoch");
      app.add_option("--eval-split", a->eval_split,
                     "without --eval: hold out this fraction of the training rows (seeded)")
          ->capture_default_str();
      app.add_option("--out", a->out, "run folder: adapter, labels.json, metrics.jsonl, checkpoints");
      app.add_option("--resume", a->resume, "continue the interrupted run in RUN_DIR");
      app.add_option("--init-adapter", a->init_adapter, "start from a saved adapter of the same method");
      add_data_options(app, a->data);
      app.add_option("--method", a->method, "lora, adapter (Houlsby), bitfit, head or full")
          ->capture_default_str()
          ->check(CLI::IsMember({"lora", "adapter", "bitfit", "head", "full"}));
      app.add_option("--lora-rank", a->lora_rank, "LoRA rank r")->capture_default_str();
      app.add_option("--lora-alpha", a->lora_alpha, "LoRA alpha (scale alpha / r)")->capture_default_str();
      app.add_option("--lora-dropout", a->lora_dropout, "dropout on the LoRA input")->capture_default_str();
      app.add_option("--lora-targets", a->lora_targets,
                     "modules with LoRA: query, key, value, attention.output, intermediate, output")
          ->capture_default_str();
      app.add_flag("--lora-fa", a->lora_fa,
                   "LoRA-FA: freeze A after initialisation (less activation memory, B trains)");
      app.add_option("--adapter-size", a->adapter_size, "Houlsby adapter bottleneck width")
          ->capture_default_str();
      app.add_option("--epochs", a->epochs, "passes over the training data")->capture_default_str();
      app.add_option("--batch-size", a->batch_size, "rows per optimizer step (before --grad-accum)")
          ->capture_default_str();
      app.add_option("--lr", a->lr, "peak learning rate (default: 5e-5 for full, 5e-4 otherwise)");
      app.add_option("--weight-decay", a->weight_decay,
                     "weight decay (not on biases and LayerNorm)")->capture_default_str();
      app.add_option("--optimizer", a->optimizer, "adamw, adam (L2 decay) or sgd")
          ->capture_default_str()
          ->check(CLI::IsMember({"adamw", "adam", "sgd"}));
      app.add_option("--momentum", a->momentum, "SGD momentum")->capture_default_str();
      app.add_flag("--nesterov", a->nesterov, "SGD with Nesterov momentum");
      app.add_option("--schedule", a->schedule, "learning-rate schedule after warmup: linear, cosine, constant")
          ->capture_default_str()
          ->check(CLI::IsMember({"linear", "cosine", "constant"}));
      app.add_option("--warmup-ratio", a->warmup_ratio, "fraction of the steps warming up linearly")
          ->capture_default_str();
      app.add_option("--max-grad-norm", a->max_grad_norm, "clip the gradient norm (0: off)")
          ->capture_default_str();
      app.add_option("--grad-accum", a->grad_accum, "batches per optimizer step")->capture_default_str();
      app.add_option("--seed", a->seed, "seed of shuffling, dropout and initialisation")->capture_default_str();
      app.add_flag("--no-shuffle", a->no_shuffle, "keep the file's order");
      app.add_option("--dropout", a->dropout,
                     "override every dropout probability of the model (0: deterministic training)");
      add_threads_option(app, a->threads);
      app.add_option("--early-stopping", a->early_stopping,
                     "stop after N evaluations without a better accuracy; keep the best adapter");
      app.add_option("--save-every", a->save_every, "write a checkpoint every N optimizer steps");
      app.add_option("--max-steps", a->max_steps, "stop after N optimizer steps");
      app.add_option("--log-every", a->log_every, "optimizer steps between progress lines")->capture_default_str();
      app.add_option("--memory-budget", a->memory_budget,
                     "hard memory limit, e.g. 128M: the planner picks checkpointing and micro-batches "
                     "to fit, and an allocation beyond it is an error, not a kill");
      app.add_option("--checkpointing", a->checkpointing, "encoder-layer checkpointing: auto, on, off")
          ->capture_default_str()
          ->check(CLI::IsMember({"auto", "on", "off"}));
      app.add_option("--micro-batch", a->micro_batch, "rows per forward/backward (0: the planner decides)");
      CLI::App* self = &app;
      return [a, self] { return run(*a, *self); };
    }};

}  // namespace
}  // namespace edgetune::cli
