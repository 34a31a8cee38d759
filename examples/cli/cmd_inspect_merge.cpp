// `edgetune inspect` (a model folder's or model file's config, parameter count, the widths of pruned
// layers, a model file's storage and provenance, bytes per storage type, mapped bytes, tokenizer
// settings, and with --batch-size the memory estimate of a training run per category) and
// `edgetune merge` (a Hugging Face folder with LoRA folded into the weights).
#include <cstdio>
#include <iostream>
#include <optional>

#include "commands.h"
#include "edgetune/data/tokenizer.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/model_file.h"
#include "edgetune/engine/planner.h"
#include "edgetune/engine/session.h"
#include "edgetune/engine/trainer.h"
#include "options.h"

namespace edgetune::cli {
namespace {

struct InspectArgs {
  ModelArgs model;
  std::int64_t batch_size = 0, max_length = 128;
  std::string method = "lora", optimizer = "adamw", budget;
  int lora_rank = 8;
  std::string lora_targets = "query,value";
  bool lora_fa = false;
  bool json = false;
};

int run_inspect(const InspectArgs& a) {
  namespace fs = std::filesystem;
  const fs::path dir = a.model.model_dir;
  const BertConfig c = load_config(dir);
  LoadOptions lo;
  lo.base = a.model.quant;
  lo.quant_embeddings = a.model.quant_embeddings;
  const BertModel m = load_bert(dir, lo);
  std::int64_t params = 0;
  std::size_t by_type[static_cast<int>(DType::PAL4) + 1] = {};  // indexed by DType
  std::size_t mapped = 0;  // used in place from a model file: clean, file-backed pages
  for (auto& [name, t] : m.named_tensors()) {
    params += t.numel();
    by_type[static_cast<int>(t.dtype())] += t.nbytes();
    if (t.is_mapped()) mapped += t.nbytes();
  }
  const data::WordPieceTokenizer tok = load_model_tokenizer(dir);
  nlohmann::json j;
  j["model"] = dir.string();
  j["config"] = c.to_json();
  j["parameters"] = params;
  nlohmann::json widths = nlohmann::json::array();
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    widths.push_back({{"heads", c.heads_in_layer(i)}, {"intermediate_size", c.ffn_in_layer(i)}});
  }
  j["layer_widths"] = widths;
  nlohmann::json bytes = nlohmann::json::object();
  for (DType t : {DType::F32, DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    if (by_type[static_cast<int>(t)]) bytes[dtype_name(t)] = by_type[static_cast<int>(t)];
  }
  j["bytes_by_storage"] = bytes;
  j["mapped_bytes"] = mapped;
  std::optional<ModelFile> file;
  if (is_model_file(dir)) {
    file.emplace(dir, false);
    const auto provenance = file->metadata().find("edgetune.provenance");
    j["model_file"] = {{"storage", dtype_name(file->storage())},
                       {"quant_embeddings", file->quant_embeddings()},
                       {"provenance", provenance == file->metadata().end()
                                          ? nlohmann::json()
                                          : nlohmann::json::parse(provenance->second)}};
  }
  j["tokenizer"] = {{"vocab_size", tok.vocab().size()},
                    {"do_lower_case", tok.options().do_lower_case},
                    {"strip_accents", tok.options().strip_accents.value_or(tok.options().do_lower_case)},
                    {"tokenize_chinese_chars", tok.options().tokenize_chinese_chars}};
  std::optional<Plan> plan;
  if (a.batch_size > 0) {
    PlanRequest r;
    r.config = c;
    r.method.method = parse_method(a.method);
    r.method.lora.rank = a.lora_rank;
    r.method.lora.freeze_a = a.lora_fa;
    r.method.lora_targets = parse_lora_targets(a.lora_targets);
    r.base = a.model.quant;
    r.quant_embeddings = a.model.quant_embeddings;
    r.compute = a.model.compute;
    r.batch = a.batch_size;
    r.length = a.max_length;
    r.optimizer = settings::parse_choice<optim::OptimizerKind>(kOptimizerNames, "--optimizer", a.optimizer);
    plan_model_source(r, dir);
    const std::size_t budget = a.budget.empty() ? 0 : parse_bytes(a.budget);
    plan = choose_plan(r, budget);
    nlohmann::json est = nlohmann::json::object();
    for (int i = 0; i < kNumMemCategories; ++i) {
      est[category_name(static_cast<MemCategory>(i))] = plan->estimate.bytes[static_cast<size_t>(i)];
    }
    est["total"] = plan->estimate.total();
    est["mapped"] = plan->estimate.mapped;
    j["training_estimate"] = {{"method", a.method}, {"batch_size", a.batch_size},
                              {"base_weights_mapped", plan->estimate.mapped > 0},
                              {"max_length", a.max_length}, {"checkpoint_layers", plan->checkpoint_layers},
                              {"micro_batch", plan->micro_batch}, {"bytes", est}};
  }
  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("model %s\n", dir.c_str());
  std::printf("  layers %lld, hidden %lld, heads %lld, intermediate %lld, vocab %lld, positions %lld, "
              "activation %s, labels %lld\n",
              static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.num_attention_heads), static_cast<long long>(c.intermediate_size),
              static_cast<long long>(c.vocab_size), static_cast<long long>(c.max_position_embeddings),
              activation_name(c.hidden_act), static_cast<long long>(c.num_labels));
  std::printf("  parameters %lld\n", static_cast<long long>(params));
  if (!c.pruned_heads.empty() || !c.intermediate_sizes.empty()) {
    std::printf("  pruned layers (heads, intermediate size):");
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
      std::printf("%s %lld: %lld, %lld", i ? ";" : "", static_cast<long long>(i),
                  static_cast<long long>(c.heads_in_layer(i)), static_cast<long long>(c.ffn_in_layer(i)));
    }
    std::printf("\n");
  }
  if (file) {
    std::printf("  model file: %s base, embeddings %s\n", dtype_name(file->storage()),
                file->quant_embeddings() ? (std::string(dtype_name(file->storage())) + " (positions q8)").c_str()
                                         : "f32");
  }
  std::printf("  storage with --quant %s%s:", settings::name_of<DType>(kQuantNames, a.model.quant),
              a.model.quant_embeddings ? " --quant-embeddings" : "");
  for (auto& [k, v] : bytes.items()) std::printf(" %s %s", k.c_str(), format_bytes(v.get<std::size_t>()).c_str());
  if (mapped > 0) {
    std::printf("\n  mapped from the file %s (clean, file-backed pages; the rest is private memory)",
                format_bytes(mapped).c_str());
  }
  std::printf("\n  tokenizer: vocab %lld, do_lower_case %s\n", static_cast<long long>(tok.vocab().size()),
              tok.options().do_lower_case ? "true" : "false");
  if (plan) {
    std::printf("  training estimate (%s, batch %lld x %lld tokens, %s):\n", a.method.c_str(),
                static_cast<long long>(a.batch_size), static_cast<long long>(a.max_length), a.optimizer.c_str());
    for (int i = 0; i < kNumMemCategories; ++i) {
      const bool mapped_base = plan->estimate.mapped > 0 && static_cast<MemCategory>(i) == MemCategory::BaseWeights;
      std::printf("    %-16s %10s%s\n", category_name(static_cast<MemCategory>(i)),
                  format_bytes(plan->estimate.bytes[static_cast<size_t>(i)]).c_str(),
                  mapped_base ? ("  (" + format_bytes(plan->estimate.mapped) +
                                 " of it mapped from the file: file-backed, counted toward the budget)")
                                    .c_str()
                              : "");
    }
    std::printf("    %-16s %10s\n  %s\n", "total", format_bytes(plan->estimate.total()).c_str(),
                plan->describe().c_str());
  }
  return 0;
}

struct MergeArgs {
  std::string model_dir, adapter, out, key_file;
  bool f16 = false;
};

int run_merge(const MergeArgs& a) {
  Context context = command_context(0, load_key(a.key_file));
  const ContextScope scope(context);
  // Merge over the float32 base so the folded weights lose nothing.
  Model m = open_model(a.model_dir, a.adapter, DType::F32, false);
  merge_lora(m.bert);
  save_bert(m.bert, a.out, a.model_dir, a.f16);
  std::cerr << "merged " << a.adapter << " into " << a.out << "\n";
  return 0;
}

const RegisterCommand kInspect{
    "inspect", "show a model folder or file: config, parameters, bytes per storage, tokenizer; with "
               "--batch-size, the memory estimate of training per category",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<InspectArgs>();
      add_model_options(app, a->model);
      app.add_option("--batch-size", a->batch_size, "estimate training memory for this batch");
      app.add_option("--max-length", a->max_length, "tokens per row for the estimate")->capture_default_str();
      app.add_option("--method", a->method, "method for the estimate")->capture_default_str()
          ->check(CLI::IsMember({"lora", "adapter", "bitfit", "head", "full"}));
      app.add_option("--lora-rank", a->lora_rank, "LoRA rank for the estimate")->capture_default_str();
      app.add_option("--lora-targets", a->lora_targets, "LoRA targets for the estimate")->capture_default_str();
      app.add_flag("--lora-fa", a->lora_fa, "estimate with LoRA-FA");
      app.add_option("--optimizer", a->optimizer, "optimizer for the estimate")->capture_default_str();
      app.add_option("--memory-budget", a->budget, "plan under this budget");
      app.add_flag("--json", a->json, "print JSON");
      return [a] { return run_inspect(*a); };
    }};

const RegisterCommand kMerge{
    "merge", "write a Hugging Face folder with a LoRA adapter folded into the weights (float32)",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<MergeArgs>();
      app.add_option("--model", a->model_dir, "base model folder or model file")->required();
      app.add_option("--adapter", a->adapter, "LoRA adapter or run folder")->required();
      app.add_option("--out", a->out, "folder to write")->required();
      app.add_flag("--f16", a->f16, "store the merged weights as float16");
      add_key_option(app, a->key_file);
      return [a] { return run_merge(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli
