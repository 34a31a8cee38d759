// `edgetune compress`: a Hugging Face folder to one model file (engine/model_file.h): the base
// quantized, layers cropped, config, vocabulary and provenance inside, mapped in place at load.
#include <cstdio>

#include "commands.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/model_file.h"
#include "edgetune/engine/session.h"

namespace edgetune::cli {
namespace {

struct CompressArgs {
  std::string model, out, quant = "q8", keep_layers, drop_heads, calibration;
  double prune_heads = 0, prune_ffn = 0;
  bool quant_embeddings = false;
  std::vector<std::string> vocab_from;
};

int run(const CompressArgs& a) {
  CompressOptions o;
  o.quant = settings::parse_choice<DType>(kQuantNames, "--quant", a.quant);
  o.quant_embeddings = a.quant_embeddings;
  const BertConfig config = load_config(a.model);
  try {
    if (!a.keep_layers.empty()) o.keep_layers = parse_keep_layers(a.keep_layers, config.num_hidden_layers);
    if (!a.drop_heads.empty()) {
      o.drop_heads = parse_drop_heads(a.drop_heads, config.num_hidden_layers, config.num_attention_heads);
    }
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  o.prune_heads = a.prune_heads;
  o.prune_ffn = a.prune_ffn;
  o.calibration = a.calibration;
  o.vocab_from.assign(a.vocab_from.begin(), a.vocab_from.end());
  try {
    compress_model(a.model, a.out, o);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  const ModelFile written(a.out);
  std::fprintf(stderr, "wrote %s: %s base%s, %lld layers, %s\n", a.out.c_str(), a.quant.c_str(),
               written.quant_embeddings() ? " and word embeddings, q8 positions" : "",
               static_cast<long long>(written.config().num_hidden_layers),
               written.metadata().at("edgetune.checksum").c_str());
  return 0;
}

const RegisterCommand kRegister{
    "compress",
    "write a model as one file for an app to ship: quantized base, cropped layers, config and vocabulary",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<CompressArgs>();
      app.add_option("--model", a->model, "the Hugging Face BERT folder (or an f32 model file)")->required();
      app.add_option("--out", a->out, "the model file to write (never the input)")->required();
      app.add_option("--quant", a->quant, "storage of the base weights")
          ->check(CLI::IsMember({"f32", "q8", "q4", "nf4", "pal4"}))
          ->capture_default_str();
      app.add_flag("--quant-embeddings", a->quant_embeddings,
                   "also store the word embeddings as --quant, the position embeddings as q8 (mapped "
                   "in place like the base; a file with them cannot be fully fine-tuned)");
      app.add_option("--keep-layers", a->keep_layers,
                     "the layers kept: a count (6: the first six) or indices (0,2,4)");
      app.add_option("--drop-heads", a->drop_heads,
                     "attention heads removed, as Hugging Face's prune_heads: layer:heads;... (0:1,3;5:0), "
                     "layers numbered before --keep-layers");
      app.add_option("--prune-heads", a->prune_heads,
                     "fraction of the attention heads removed, lowest importance first over all layers "
                     "(gradients of the loss on --calibration; at least one head kept per layer)");
      app.add_option("--prune-ffn", a->prune_ffn,
                     "fraction of each layer's feed-forward neurons removed, lowest importance first");
      app.add_option("--calibration", a->calibration,
                     "labelled examples (TSV, CSV or JSONL, as train reads) that --prune-heads and "
                     "--prune-ffn score on");
      app.add_option("--vocab-from", a->vocab_from,
                     "text files: the vocabulary keeps the tokens they use, the specials and every "
                     "single character; the same strings tokenize to the same pieces");
      return [a] { return run(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli
