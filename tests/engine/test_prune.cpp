// Structured pruning (engine/prune.h) and compress's pruning options (engine/model_file.h):
// mask importance equals central differences of each example's loss with respect to the mask in
// float64; the lowest-scored heads and neurons are the ones removed; a model with feed-forward
// neurons removed gives PyTorch's logits for the same pruning; --vocab-from keeps tokenization
// and logits; bad fractions and calibration files are refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/error.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/model_file.h"
#include "edgetune/engine/prune.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

fs::path tiny_dir() { return test::golden_dir() / "bert" / "tiny"; }

BertModel load(const fs::path& model) {
  LoadOptions lo;
  lo.base = DType::F32;
  return load_bert(model, lo);
}

BertInputs golden_inputs() {
  safetensors::Reader g(tiny_dir() / "golden.safetensors");
  return {g.load("input_ids", DType::I32, MemCategory::Activations),
          g.load("token_type_ids", DType::I32, MemCategory::Activations),
          g.load("attention_mask", DType::I32, MemCategory::Activations)};
}

// The rows `rows` of a (B, T) batch, padding kept.
Tensor pick(const Tensor& t, const std::vector<std::int64_t>& rows) {
  const std::int64_t len = t.dim(1);
  std::vector<std::int32_t> v;
  for (std::int64_t r : rows) v.insert(v.end(), t.data<std::int32_t>() + r * len, t.data<std::int32_t>() + (r + 1) * len);
  return Tensor::from_ints({static_cast<std::int64_t>(rows.size()), len}, v);
}

TensorBatch batch_of(const BertInputs& in, const std::vector<std::int32_t>& labels, const std::vector<std::int64_t>& rows) {
  TensorBatch b;
  b.inputs = {pick(in.input_ids, rows), pick(in.token_type_ids, rows), pick(in.attention_mask, rows)};
  std::vector<std::int32_t> y;
  for (std::int64_t r : rows) y.push_back(labels[static_cast<std::size_t>(r)]);
  b.labels = Tensor::from_ints({static_cast<std::int64_t>(rows.size())}, y);
  return b;
}

// A labelled TSV of tiny's sentences (sentence, label 0/1).
fs::path calibration_file(const test::TempDir& tmp) {
  const nlohmann::json s = nlohmann::json::parse(read_file(tiny_dir() / "sentences.json"));
  std::string tsv = "sentence\tlabel\n";
  for (const auto& row : s) tsv += row["text"].get<std::string>() + "\t" + std::to_string(row["label"].get<int>()) + "\n";
  const fs::path file = tmp.path / "calibration.tsv";
  std::ofstream(file) << tsv;
  return file;
}

}  // namespace

TEST_CASE("mask importance is the sum over examples of |dL/dm|, by central differences in float64", "[prune]") {
  BertModel m = load(tiny_dir());
  for (TensorSlot& s : m.tensor_slots()) {
    if (s.tensor->defined()) {
      *s.tensor = Tensor::from_values(s.tensor->shape(), s.tensor->to_vector(), DType::F64, s.tensor->category());
    }
  }
  const BertInputs in = golden_inputs();
  const std::int64_t b = in.input_ids.dim(0);
  REQUIRE(b >= 4);
  std::vector<std::int32_t> labels;
  for (std::int64_t i = 0; i < b; ++i) labels.push_back(static_cast<std::int32_t>((i * 5 + 1) % 3 % 2));
  // Two batches, so the sum runs over batches too.
  std::vector<std::int64_t> first, second;
  for (std::int64_t i = 0; i < b; ++i) (i < 3 ? first : second).push_back(i);
  const std::vector<TensorBatch> batches = {batch_of(in, labels, first), batch_of(in, labels, second)};
  const MaskImportance got = mask_importance(m, batches);
  REQUIRE(got.heads.size() == 2);
  REQUIRE(got.heads[0].size() == 4);
  REQUIRE(got.neurons[1].size() == 128);

  // Example i's loss alone (a batch of one) with mask value v at (layer, unit), ones elsewhere.
  auto loss = [&](std::int64_t i, std::size_t layer, std::int64_t unit, bool head, double v) {
    std::vector<Tensor> hm, fm;
    for (std::int64_t l = 0; l < 2; ++l) {
      hm.push_back(Tensor::full({1, m.config.heads_in_layer(l)}, 1.0, DType::F64));
      fm.push_back(Tensor::full({1, m.config.ffn_in_layer(l)}, 1.0, DType::F64));
    }
    (head ? hm : fm)[layer].data<double>()[unit] = v;
    ForwardOptions opt;
    opt.head_masks = hm;
    opt.ffn_masks = fm;
    const TensorBatch x = batch_of(in, labels, {i});
    return ops::cross_entropy(m.classify(x.inputs, opt), x.labels).to_vector()[0];
  };
  constexpr double kEps = 1e-6;
  auto numeric = [&](std::size_t layer, std::int64_t unit, bool head) {
    double sum = 0;
    for (std::int64_t i = 0; i < b; ++i) {
      sum += std::abs((loss(i, layer, unit, head, 1 + kEps) - loss(i, layer, unit, head, 1 - kEps)) / (2 * kEps));
    }
    return sum;
  };
  // Central differences are exact to O(eps^2) ~ 1e-12 relative; rounding of the f64 loss adds
  // ~1e-16 / eps = 1e-10 absolute per example.
  constexpr double kRtol = 1e-6, kAtol = 1e-8;
  double largest = 0;
  for (std::size_t l = 0; l < 2; ++l) {
    for (std::int64_t h = 0; h < 4; ++h) {
      INFO("layer " << l << " head " << h);
      const double want = numeric(l, h, true);
      CHECK(std::abs(got.heads[l][h] - want) <= kAtol + kRtol * want);
      largest = std::max(largest, want);
    }
    for (std::int64_t f = 0; f < 128; f += 9) {
      INFO("layer " << l << " neuron " << f);
      const double want = numeric(l, f, false);
      CHECK(std::abs(got.neurons[l][f] - want) <= kAtol + kRtol * want);
    }
  }
  CHECK(largest > 1e-4);  // the gradients are not all vanishing
}

TEST_CASE("a classifier fitted for scoring lowers the calibration loss below a zero head's", "[prune]") {
  BertModel m = load(tiny_dir());
  const BertInputs in = golden_inputs();
  const std::int64_t b = in.input_ids.dim(0);
  std::vector<std::int32_t> labels;
  std::vector<std::int64_t> all;
  for (std::int64_t i = 0; i < b; ++i) {
    labels.push_back(static_cast<std::int32_t>(i % 3 == 0 ? 2 : i % 2));
    all.push_back(i);
  }
  const std::vector<TensorBatch> batches = {batch_of(in, labels, all)};
  const Tensor encoder_weight = m.layers[0].query.weight;
  fit_classifier(m, batches, 3, 100);
  CHECK(m.config.num_labels == 3);
  CHECK(m.classifier.weight.shape() == Shape{3, 64});
  CHECK(m.layers[0].query.weight.impl() == encoder_weight.impl());
  // A zero head gives log 3; the best head that ignores the inputs (its bias the class
  // frequencies 2/8, 3/8, 3/8) gives their entropy. Below that, the fitted head uses the features
  // (tiny's random encoder pools the sentences into nearly the same vector, so not by much).
  const double loss = ops::cross_entropy(m.classify(batches[0].inputs, {}), batches[0].labels).to_vector()[0];
  const double prior = -(2 / 8.0 * std::log(2 / 8.0) + 2 * (3 / 8.0) * std::log(3 / 8.0));
  CHECK(loss < prior);
  CHECK(prior < std::log(3.0));
}

TEST_CASE("the lowest-scored heads (over all layers) and neurons (per layer) are the ones chosen", "[prune]") {
  CHECK(normalize_per_layer({{3, 4}, {0, 0}}) == std::vector<std::vector<double>>{{0.6, 0.8}, {0, 0}});
  const std::vector<std::vector<double>> heads = {{0.9, 0.1, 0.5, 0.2}, {0.05, 0.8, 0.7, 0.6}, {0.01}};
  // 9 heads, floor(0.34 * 9) = 3: the 0.01 head is its layer's last, so the next three go.
  CHECK(lowest_heads(heads, 0.34) == LayerUnits{{0, {1, 3}}, {1, {0}}});
  CHECK(lowest_heads(heads, 0.0).empty());
  // More than can go: every layer keeps its best head.
  CHECK(lowest_heads(heads, 0.9) == LayerUnits{{0, {1, 2, 3}}, {1, {0, 2, 3}}});
  const std::vector<std::vector<double>> neurons = {{5, 1, 3, 2, 4}, {1, 1, 1}};
  CHECK(lowest_neurons(neurons, 0.3) == LayerUnits{{0, {1}}});
  CHECK(lowest_neurons(neurons, 0.5) == LayerUnits{{0, {1, 3}}, {1, {0}}});
  for (double bad : {1.0, -0.1, std::nan("")}) {
    CHECK_THROWS_AS(lowest_heads(heads, bad), std::invalid_argument);
    CHECK_THROWS_AS(lowest_neurons(neurons, bad), std::invalid_argument);
  }
}

TEST_CASE("compress --prune-heads / --prune-ffn remove the lowest-importance heads and neurons", "[prune]") {
  test::TempDir tmp("prune");
  const fs::path out = tmp.path / "pruned.safetensors";
  CompressOptions o;
  o.quant = DType::F32;
  o.prune_heads = 0.25;
  o.prune_ffn = 0.3;
  o.calibration = calibration_file(tmp);
  compress_model(tiny_dir(), out, o);
  const ModelFile file(out);
  const nlohmann::json imp = nlohmann::json::parse(file.metadata().at("edgetune.provenance"))["importance"];
  const auto heads = imp["heads"].get<std::vector<std::vector<double>>>();
  const auto neurons = imp["neurons"].get<std::vector<std::vector<double>>>();
  const auto heads_removed = imp["heads_removed"].get<std::map<std::string, std::vector<std::int64_t>>>();
  const auto neurons_removed = imp["neurons_removed"].get<std::map<std::string, std::vector<std::int64_t>>>();
  CHECK(imp["examples"] == 8);
  CHECK(imp["loss"] == "cross-entropy of the source's classifier");

  // floor(0.25 * 8) = 2 heads, the lowest after per-layer l2 normalization.
  const auto normalized = normalize_per_layer(heads);
  double highest_removed = -1, lowest_kept = 1e300;
  std::size_t removed = 0;
  for (std::size_t l = 0; l < 2; ++l) {
    const auto it = heads_removed.find(std::to_string(l));
    for (std::int64_t h = 0; h < 4; ++h) {
      const bool gone = it != heads_removed.end() && std::count(it->second.begin(), it->second.end(), h);
      if (gone) {
        highest_removed = std::max(highest_removed, normalized[l][h]);
        ++removed;
      } else {
        lowest_kept = std::min(lowest_kept, normalized[l][h]);
      }
    }
  }
  CHECK(removed == 2);
  CHECK(highest_removed <= lowest_kept);
  // floor(0.3 * 128) = 38 neurons per layer, the lowest of the layer.
  for (std::size_t l = 0; l < 2; ++l) {
    const std::vector<std::int64_t>& gone = neurons_removed.at(std::to_string(l));
    REQUIRE(gone.size() == 38);
    double hi = -1, lo = 1e300;
    for (std::int64_t f = 0; f < 128; ++f) {
      const bool g = std::binary_search(gone.begin(), gone.end(), f);
      if (g) hi = std::max(hi, neurons[l][f]);
      else lo = std::min(lo, neurons[l][f]);
    }
    CHECK(hi <= lo);
  }

  // The file holds the folder's model with exactly those units removed: its shapes, its config
  // read back, and its logits.
  LayerUnits want_heads, want_neurons;
  for (const auto& [layer, list] : heads_removed) want_heads[std::stoll(layer)] = list;
  for (const auto& [layer, list] : neurons_removed) want_neurons[std::stoll(layer)] = list;
  BertModel expected = load(tiny_dir());
  prune_heads(expected, want_heads);
  prune_neurons(expected, want_neurons);
  const BertModel pruned = load(out);
  CHECK(pruned.config.pruned_heads == want_heads);
  CHECK(pruned.config.intermediate_sizes == std::vector<std::int64_t>{90, 90});
  CHECK(pruned.layers[1].intermediate.weight.shape() == Shape{90, 64});
  CHECK(pruned.layers[1].output.weight.shape() == Shape{64, 90});
  const BertInputs in = golden_inputs();
  test::require_close("logits", pruned.classify(in, {}).to_vector(), expected.classify(in, {}).to_vector(), 0, 1e-6);
}

TEST_CASE("a model with feed-forward neurons removed gives PyTorch's logits for the same pruning", "[prune]") {
  // tests/golden/bert/make_pruned_golden.py: DROP_FFN.
  test::TempDir tmp("prune");
  const safetensors::Reader golden(tiny_dir() / "pruned_golden.safetensors");
  std::vector<std::int64_t> every_third;
  for (std::int64_t i = 0; i < 128; i += 3) every_third.push_back(i);
  const LayerUnits drop{{0, {3, 17, 64, 100, 127}}, {1, every_third}};
  const fs::path f32 = tmp.path / "ffn.safetensors";
  CompressOptions o;
  o.quant = DType::F32;
  o.drop_neurons = drop;
  compress_model(tiny_dir(), f32, o);
  const BertModel m = load(f32);
  CHECK(m.config.intermediate_sizes == std::vector<std::int64_t>{123, 85});
  CHECK(ModelFile(f32).config().to_json()["edgetune_intermediate_sizes"] == nlohmann::json{123, 85});
  CHECK(m.layers[0].intermediate.bias.shape() == Shape{123});
  CHECK(m.layers[1].output.weight.shape() == Shape{64, 85});
  test::require_close("logits, neurons pruned", m.classify(golden_inputs(), {}).to_vector(),
                      golden.load("logits.ffn").to_vector(), 1e-4, 1e-6);

  // Layer cropping keeps each kept layer's width; a q4 file of the pruned model loads its shapes.
  const fs::path q4 = tmp.path / "ffn-q4.safetensors";
  o.quant = DType::Q4;
  o.keep_layers = {1};
  compress_model(tiny_dir(), q4, o);
  LoadOptions lo;
  lo.base = DType::Q4;
  const BertModel q = load_bert(q4, lo);
  CHECK(q.config.intermediate_sizes == std::vector<std::int64_t>{85});
  CHECK(q.layers[0].intermediate.weight.dtype() == DType::Q4);
  CHECK(q.layers[0].intermediate.weight.shape() == Shape{85, 64});

  // LoRA on a pruned layer takes its shapes.
  BertModel tuned = load(f32);
  MethodOptions lora;
  lora.method = Method::Lora;
  lora.lora_targets = {"intermediate", "output"};
  attach_adapters(tuned, lora);
  CHECK(tuned.layers[1].intermediate.lora->a.shape() == Shape{lora.lora.rank, 64});
  CHECK(tuned.layers[1].intermediate.lora->b.shape() == Shape{85, lora.lora.rank});
  CHECK(tuned.layers[1].output.lora->a.shape() == Shape{lora.lora.rank, 85});
  CHECK(tuned.layers[0].output.lora->a.shape() == Shape{lora.lora.rank, 123});
  CHECK(tuned.layers[0].output.forward(tuned.layers[0].intermediate.forward(Tensor::full({2, 64}, 0.5), {}), {})
            .shape() == Shape{2, 64});
}

TEST_CASE("compress --vocab-from keeps every string's pieces and the model's logits", "[prune]") {
  test::TempDir tmp("prune");
  // The texts hold words the vocabulary spells by pieces, accents, CJK and an emoji ([UNK]).
  const std::vector<std::string> seen = {"The battery lasts all day, and the screen is bright!",
                                         "I would not buy this again.", "Unbelievably quixotic zebras jump.",
                                         "Café naïve résumé", "中文 字 \xF0\x9F\x98\x80 ok"};
  const fs::path texts = tmp.path / "texts.txt";
  {
    std::ofstream f(texts);
    for (const std::string& t : seen) f << t << "\n";
  }
  const fs::path out = tmp.path / "vocab.safetensors";
  CompressOptions o;
  o.quant = DType::F32;
  o.vocab_from = {texts};
  compress_model(tiny_dir(), out, o);
  const data::WordPieceTokenizer full = load_model_tokenizer(tiny_dir());
  const data::WordPieceTokenizer pruned = load_model_tokenizer(out);
  CHECK(pruned.vocab().size() < full.vocab().size());
  CHECK(pruned.vocab().token(0) == "[PAD]");
  const BertModel a = load(tiny_dir()), b = load(out);
  CHECK(b.config.vocab_size == pruned.vocab().size());
  CHECK(b.word_embeddings.dim(0) == pruned.vocab().size());
  auto inputs = [](const data::Encoding& e) {
    const auto t = static_cast<std::int64_t>(e.ids.size());
    return BertInputs{Tensor::from_ints({1, t}, e.ids), Tensor::from_ints({1, t}, e.type_ids),
                      Tensor::from_ints({1, t}, e.attention_mask)};
  };
  for (const std::string& text : seen) {
    INFO(text);
    CHECK(pruned.tokenize(text) == full.tokenize(text));
    test::require_close("logits", b.classify(inputs(pruned.encode(text)), {}).to_vector(),
                        a.classify(inputs(full.encode(text)), {}).to_vector(), 0, 0);
  }
  // Text the files do not hold still spells every word the full vocabulary spells (character
  // pieces at worst): the same [UNK]s, the same characters.
  auto spelled = [](const std::vector<std::string>& pieces) {
    std::string s;
    for (const std::string& p : pieces) s += p.starts_with("##") ? p.substr(2) : " " + p;
    return s;
  };
  for (const char* text : {"Screens, batteries and brightness!", "zygote xylophone", "日本語 \xF0\x9F\x98\x81"}) {
    INFO(text);
    CHECK(spelled(pruned.tokenize(text)) == spelled(full.tokenize(text)));
  }
}

TEST_CASE("compress refuses bad pruning fractions and calibration files with one line", "[prune]") {
  test::TempDir tmp("prune");
  const fs::path out = tmp.path / "out.safetensors";
  auto message = [&](const CompressOptions& o) -> std::string {
    try {
      compress_model(tiny_dir(), out, o);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "no error";
  };
  CompressOptions o;
  o.calibration = calibration_file(tmp);
  for (double bad : {1.0, -0.25, 1.5}) {
    o.prune_heads = bad;
    CHECK_THAT(message(o), Catch::Contains("--prune-heads must be a fraction in [0, 1)"));
    o.prune_heads = 0;
    o.prune_ffn = bad;
    CHECK_THAT(message(o), Catch::Contains("--prune-ffn must be a fraction in [0, 1)"));
    o.prune_ffn = 0;
  }
  CHECK_THAT(message(o), Catch::Contains("--calibration is only read with --prune-heads or --prune-ffn"));
  o.calibration.clear();
  o.prune_ffn = 0.3;
  CHECK_THAT(message(o), Catch::Contains("give --calibration FILE"));
  o.calibration = tmp.path / "missing.tsv";
  CHECK_THAT(message(o), Catch::Contains("missing.tsv"));
  const fs::path bad = tmp.path / "bad.tsv";
  std::ofstream(bad) << "sentence\tlabel\ngood\t1\nno label here\n";
  o.calibration = bad;
  CHECK_THAT(message(o), Catch::Contains("bad.tsv:3:"));
  std::ofstream(bad) << "sentence\tlabel\ngood\t1\nunknown label\t7\n";
  CHECK_THAT(message(o), Catch::Contains("bad.tsv:3:") && Catch::Contains("7"));
  o.prune_heads = 0.25;
  o.drop_heads = {{0, {1}}};
  o.calibration = calibration_file(tmp);
  CHECK_THAT(message(o), Catch::Contains("does not combine with --drop-heads"));
  CHECK_FALSE(fs::exists(out));
}
