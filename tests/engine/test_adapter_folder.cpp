// The trained-output folder (adapter_folder.h): what save_trained writes for each method reads back
// through read_trained_folder and load_trained with the same method options, labels and tensor
// values; a folder that is neither an adapter nor a model is refused with its name.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <map>
#include <string>

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
