// `edgetune create-model`: writes a Hugging Face BERT folder with freshly initialised weights
// (normal(0, 0.02), as Hugging Face initialises a new model) of a chosen shape and vocabulary: the
// starting point of pretraining, of benchmarks on standard shapes, and of the random-initialisation
// baselines.
#include <iostream>

#include "commands.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/vocab.h"
#include "edgetune/engine/loader.h"

namespace edgetune::cli {
namespace {

struct CreateArgs {
  std::string vocab, out, shape;
  std::int64_t layers = 4, hidden = 256, heads = 4, intermediate = 1024, positions = 512, labels = 2;
  std::string act = "gelu";
  bool no_lower_case = false;
  std::uint64_t seed = 0;
};

int run(CreateArgs& a) {
  namespace fs = std::filesystem;
  if (!a.shape.empty()) {
    // Standard shapes (Turc et al. 2019 for the small ones; BERT-base).
    struct S { const char* name; std::int64_t l, h, a; };
    const S shapes[] = {{"tiny", 2, 128, 2}, {"mini", 4, 256, 4}, {"small", 4, 512, 8},
                        {"medium", 8, 512, 8}, {"base", 12, 768, 12}};
    bool found = false;
    for (const S& s : shapes) {
      if (a.shape == s.name) {
        a.layers = s.l, a.hidden = s.h, a.heads = s.a, a.intermediate = 4 * s.h;
        found = true;
      }
    }
    if (!found) throw UsageError("--shape must be tiny, mini, small, medium or base");
  }
  const data::Vocab vocab = data::Vocab::load(a.vocab);
  BertConfig c;
  c.vocab_size = static_cast<std::int64_t>(vocab.size());
  c.hidden_size = a.hidden;
  c.num_hidden_layers = a.layers;
  c.num_attention_heads = a.heads;
  c.intermediate_size = a.intermediate;
  c.max_position_embeddings = a.positions;
  c.num_labels = a.labels;
  c.hidden_act = a.act == "relu" ? Activation::Relu : a.act == "gelu_new" ? Activation::GeluTanh : Activation::Gelu;
  if (auto pad = vocab.id("[PAD]")) c.pad_token_id = *pad;
  c.validate("--shape");
  LoadOptions lo;
  lo.base = DType::F32;
  lo.seed = a.seed;
  const BertModel m = init_bert(c, lo);
  save_bert(m, a.out);
  write_file_atomic(fs::path(a.out) / "vocab.txt", read_file(a.vocab));
  nlohmann::json tc = {{"do_lower_case", !a.no_lower_case}, {"model_max_length", a.positions},
                       {"tokenizer_class", "BertTokenizer"}};
  write_file_atomic(fs::path(a.out) / "tokenizer_config.json", tc.dump(2) + "\n");
  std::cerr << "wrote " << a.out << ": " << a.layers << " layers, hidden " << a.hidden << ", heads "
            << a.heads << ", intermediate " << a.intermediate << ", vocab " << c.vocab_size << "\n";
  return 0;
}

const RegisterCommand kRegister{
    "create-model", "write a BERT folder with freshly initialised weights of a chosen shape",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<CreateArgs>();
      app.add_option("--vocab", a->vocab, "vocab.txt of the model (copied into the folder)")->required();
      app.add_option("--out", a->out, "folder to write")->required();
      app.add_option("--shape", a->shape, "a standard shape: tiny (L2 H128), mini (L4 H256), small (L4 H512), "
                                          "medium (L8 H512), base (L12 H768)");
      app.add_option("--layers", a->layers, "encoder layers L")->capture_default_str();
      app.add_option("--hidden", a->hidden, "hidden size C")->capture_default_str();
      app.add_option("--heads", a->heads, "attention heads H")->capture_default_str();
      app.add_option("--intermediate", a->intermediate, "feed-forward width F")->capture_default_str();
      app.add_option("--max-positions", a->positions, "max_position_embeddings")->capture_default_str();
      app.add_option("--labels", a->labels, "classifier outputs")->capture_default_str();
      app.add_option("--act", a->act, "gelu, gelu_new or relu")->capture_default_str()
          ->check(CLI::IsMember({"gelu", "gelu_new", "relu"}));
      app.add_flag("--no-lower-case", a->no_lower_case, "a cased vocabulary");
      app.add_option("--seed", a->seed, "initialisation seed")->capture_default_str();
      return [a] { return run(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli
