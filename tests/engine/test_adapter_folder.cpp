// The trained-output folder (adapter_folder.h): what save_trained writes for each method reads back
// through read_trained_folder and load_trained with the same method options, labels and tensor
// values; a folder that is neither an adapter nor a model is refused with its name.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgetune/core/file_io.h"
#include "edgetune/engine/adapter_folder.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

BertConfig two_layer_config() {
  BertConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 48;
  c.max_position_embeddings = 16;
  c.num_labels = 3;
  c.id2label = {"sad", "calm", "glad"};
  return c;
}

// The trainable tensors of the model and its adapters (what the method saves), by name.
std::map<std::string, std::vector<double>> trained_values(const BertModel& m) {
  std::map<std::string, std::vector<double>> out;
  for (const optim::Param& p : trainable_params(m)) out[p.name] = p.tensor.to_vector();
  return out;
}

// Moves every trainable tensor away from its initial value, so a round trip that lost one shows.
void perturb(const BertModel& m) {
  for (const optim::Param& p : trainable_params(m)) {
    float* v = p.tensor.data<float>();
    for (std::int64_t i = 0; i < p.tensor.numel(); ++i) v[i] += 0.01f * static_cast<float>(i % 7 + 1);
  }
}

nlohmann::json modules_to_save(const fs::path& dir) {
  return nlohmann::json::parse(read_file(dir / "adapter_config.json")).at("modules_to_save");
}

}  // namespace

TEST_CASE("adapter folder: every method's folder reads back with its options, labels and values",
          "[adapter_folder]") {
  const fs::path dir = fs::temp_directory_path() / ("edgetune_adapter_folder_" + std::to_string(::getpid()));
  for (const Method method : {Method::Lora, Method::Adapter, Method::BitFit, Method::Head}) {
    INFO(method_name(method));
    fs::remove_all(dir);
    MethodOptions o;
    o.method = method;
    o.lora.rank = 4;
    o.lora.alpha = 8;
    o.lora_targets = {"key", "intermediate", "output"};
    o.adapter_size = 8;
    o.adapter_act = adapters::BottleneckAct::Relu;
    BertModel trained = init_bert(two_layer_config(), load_options_for(o, DType::F32, false));
    attach_adapters(trained, o);
    perturb(trained);
    save_trained(trained, o, dir, "base");

    const TrainedFolder folder = read_trained_folder(dir);
    CHECK(folder.method.method == method);
    CHECK(folder.labels == std::vector<std::string>{"sad", "calm", "glad"});
    if (method == Method::Lora) {
      CHECK(folder.method.lora.rank == 4);
      CHECK(folder.method.lora.alpha == 8);
      CHECK(folder.method.lora_targets == o.lora_targets);
    }
    if (method == Method::Adapter) {
      CHECK(folder.method.adapter_size == 8);
      CHECK(folder.method.adapter_act == adapters::BottleneckAct::Relu);
    }

    // Onto a base with other initial values: every trained tensor comes from the folder.
    MethodOptions other = o;
    other.seed = 99;
    LoadOptions lo = load_options_for(other, DType::F32, false);
    BertModel base = init_bert(two_layer_config(), lo);
    const MethodOptions read = load_trained(base, dir);
    CHECK(read.method == method);
    const auto want = trained_values(trained);
    CHECK(want.size() > 1);
    CHECK(trained_values(base) == want);
  }
  fs::remove_all(dir);
}

TEST_CASE("adapter folder: over a base without a pooler, the adapter carries the one it was trained "
          "with",
          "[adapter_folder]") {
  // The shipped model is a masked-LM checkpoint: no bert.pooler.*, so each load draws a pooler from
  // its seed. A LoRA run and a later eval or predict load with different seeds; the adapter must
  // bring the run's pooler, or the trained head reads another projection of [CLS].
  const fs::path shipped = fs::path(EDGETUNE_TEST_DIR).parent_path() / "models" / "edgetune-mini-uncased";
  REQUIRE(fs::exists(shipped / "model.safetensors"));
  const fs::path dir = fs::temp_directory_path() / ("edgetune_adapter_pooler_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  MethodOptions o;
  o.method = Method::Lora;
  o.seed = 42;
  LoadReport report;
  BertModel trained = load_bert(shipped, load_options_for(o, DType::Q4, false), &report);
  REQUIRE(trained.fresh_pooler);
  attach_adapters(trained, o);
  perturb(trained);
  save_trained(trained, o, dir, shipped);
  CHECK(modules_to_save(dir) == nlohmann::json::array({"classifier", "pooler"}));

  MethodOptions later = o;
  later.seed = 0;
  BertModel base = load_bert(shipped, load_options_for(later, DType::Q4, false));
  REQUIRE(base.pooler.weight.to_vector() != trained.pooler.weight.to_vector());
  load_trained(base, dir);
  CHECK(base.pooler.weight.to_vector() == trained.pooler.weight.to_vector());
  CHECK(base.pooler.bias.to_vector() == trained.pooler.bias.to_vector());
  CHECK(trained_values(base) == trained_values(trained));
  fs::remove_all(dir);

  // A base with its own pooler: the adapter does not copy it.
  BertModel tiny = load_bert(test::golden_dir() / "bert" / "tiny", load_options_for(o, DType::F32, false));
  CHECK_FALSE(tiny.fresh_pooler);
  attach_adapters(tiny, o);
  save_trained(tiny, o, dir, "tiny");
  CHECK(modules_to_save(dir) == nlohmann::json::array({"classifier"}));
  fs::remove_all(dir);
}

TEST_CASE("adapter folder: a whole model folder reads as a full fine-tune", "[adapter_folder]") {
  const fs::path dir = fs::temp_directory_path() / ("edgetune_adapter_full_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  MethodOptions o;
  o.method = Method::Full;
  const BertModel m = init_bert(two_layer_config(), load_options_for(o, DType::F32, false));
  save_trained(m, o, dir, {});
  CHECK_FALSE(is_adapter_folder(dir));
  const TrainedFolder folder = read_trained_folder(dir);
  CHECK(folder.method.method == Method::Full);
  CHECK(folder.labels.empty());
  fs::remove_all(dir);
}

TEST_CASE("adapter folder: a folder with neither adapter nor model files is refused by name",
          "[adapter_folder]") {
  const fs::path dir = fs::temp_directory_path() / ("edgetune_adapter_empty_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  REQUIRE_THROWS_AS(read_trained_folder(dir), ModelError);
  REQUIRE_THROWS_WITH(read_trained_folder(dir), Catch::StartsWith(dir.string() + ": not an adapter folder"));
  fs::remove_all(dir);
}

namespace {

// A LoRA folder of the two-layer model whose trained tensors are moved by `scale` (so each folder
// holds other values), under dir.
void lora_folder(const fs::path& dir, float scale, int rank = 4) {
  MethodOptions o;
  o.method = Method::Lora;
  o.lora.rank = rank;
  o.lora.alpha = 8;
  o.lora_targets = {"query", "value"};
  BertModel m = init_bert(two_layer_config(), load_options_for(o, DType::F32, false));
  attach_adapters(m, o);
  for (const optim::Param& p : trainable_params(m)) {
    float* v = p.tensor.data<float>();
    for (std::int64_t i = 0; i < p.tensor.numel(); ++i) v[i] += scale * static_cast<float>(i % 5 - 2);
  }
  save_trained(m, o, dir, "base-" + std::to_string(scale));
}

}  // namespace

TEST_CASE("aggregate: every tensor is the weighted mean of the folders', element by element",
          "[adapter_folder][aggregate]") {
  const fs::path root = fs::temp_directory_path() / ("edgetune_aggregate_" + std::to_string(::getpid()));
  fs::remove_all(root);
  const std::vector<fs::path> dirs = {root / "a", root / "b", root / "c"};
  lora_folder(dirs[0], 0.01f);
  lora_folder(dirs[1], -0.03f);
  lora_folder(dirs[2], 0.05f);
  const std::vector<double> weights = {10, 30, 60};
  aggregate_adapters(dirs, weights, root / "avg");

  std::vector<AdapterFiles> in;
  for (const fs::path& d : dirs) in.push_back(read_adapter_files(d));
  const AdapterFiles avg = read_adapter_files(root / "avg");
  REQUIRE(avg.tensors.size() == in[0].tensors.size());
  REQUIRE(avg.tensors.size() > 2);
  std::size_t differing = 0;
  for (size_t t = 0; t < avg.tensors.size(); ++t) {
    INFO(avg.tensors[t].first);
    REQUIRE(avg.tensors[t].first == in[0].tensors[t].first);
    const std::vector<double> got = avg.tensors[t].second.to_vector();
    for (size_t i = 0; i < got.size(); ++i) {
      double want = 0;
      for (size_t d = 0; d < dirs.size(); ++d) want += weights[d] * in[d].tensors[t].second.to_vector()[i];
      want /= 100;
      // Summed in double, stored as float: within float rounding of the exact mean.
      REQUIRE(std::fabs(got[i] - want) <= 6e-8 * std::fabs(want) + 1e-12);
      differing += in[0].tensors[t].second.to_vector()[i] != got[i];
    }
  }
  CHECK(differing > 0);
  // The method, settings and labels of the inputs; the first folder's base path.
  CHECK(read_trained_folder(root / "avg").labels == std::vector<std::string>{"sad", "calm", "glad"});
  CHECK(read_adapter_method(root / "avg").lora.rank == 4);
  CHECK(avg.config == in[0].config);

  // No weights: the plain mean.
  aggregate_adapters({dirs[0], dirs[1]}, {}, root / "mean");
  const AdapterFiles mean = read_adapter_files(root / "mean");
  const std::vector<double> m0 = mean.tensors[0].second.to_vector();
  const std::vector<double> a0 = in[0].tensors[0].second.to_vector(), b0 = in[1].tensors[0].second.to_vector();
  for (size_t i = 0; i < m0.size(); ++i) REQUIRE(std::fabs(m0[i] - (a0[i] + b0[i]) / 2) <= 6e-8 * std::fabs(m0[i]) + 1e-12);
  fs::remove_all(root);
}

TEST_CASE("aggregate: folders that cannot be averaged are refused by name, and nothing is written",
          "[adapter_folder][aggregate]") {
  const fs::path root = fs::temp_directory_path() / ("edgetune_aggregate_bad_" + std::to_string(::getpid()));
  fs::remove_all(root);
  lora_folder(root / "a", 0.01f);
  lora_folder(root / "rank8", 0.01f, 8);
  REQUIRE_THROWS_WITH(aggregate_adapters({root / "a", root / "rank8"}, {1, 1}, root / "out"),
                      Catch::Contains((root / "rank8").string()) && Catch::Contains("adapter_config.json differs"));
  REQUIRE_THROWS_AS(aggregate_adapters({root / "a", root / "a"}, {1}, root / "out"), std::invalid_argument);
  REQUIRE_THROWS_WITH(aggregate_adapters({root / "a", root / "a"}, {1, -2}, root / "out"),
                      Catch::Contains("positive"));
  REQUIRE_THROWS_WITH(aggregate_adapters({root / "a", root / "missing"}, {}, root / "out"),
                      Catch::Contains((root / "missing" / "adapter_config.json").string()));
  CHECK_FALSE(fs::exists(root / "out"));
  fs::remove_all(root);
}
