// PEFT compatibility of LoRA adapter folders, both ways, without torch at test time:
//   - tests/golden/finetune/peft_lora/ was written by make_finetune_goldens.py the way PEFT's
//     save_pretrained writes a LoRA for BertForSequenceClassification; edgetune must load it and
//     compute the logits PyTorch computed with it;
//   - tests/golden/finetune/edgetune_lora/ was written by `edgetune train`; the script applied it
//     by PEFT's key names and stored PyTorch's logits, which edgetune must reproduce. Its keys and
//     config are checked against PEFT's layout, and today's writer must still produce them;
//   - merging either LoRA into the base (merge_lora + save_bert, what `edgetune merge` does) gives
//     a plain model folder with the same logits and no adapter.
// Logits are compared with rtol 1e-4 and an absolute floor of 1e-4 times the largest |logit|
// (logits near 0 carry float32 error on the scale of the others).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/engine/adapter_folder.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/session.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

fs::path finetune_dir() {
  return test::golden_dir() / "finetune";
}
fs::path tiny_dir() {
  return test::golden_dir() / "bert" / "tiny";
}

std::vector<double> logits_of(const BertModel& m) {
  safetensors::Reader g(finetune_dir() / "peft_logits.safetensors");
  const BertInputs in{g.load("input_ids", DType::I32, MemCategory::Activations),
                      g.load("token_type_ids", DType::I32, MemCategory::Activations),
                      g.load("attention_mask", DType::I32, MemCategory::Activations)};
  NoGradGuard no_grad;
  return m.classify(in, ForwardOptions{}).to_vector();
}

std::vector<double> golden_logits(const std::string& name) {
  safetensors::Reader g(finetune_dir() / "peft_logits.safetensors");
  REQUIRE(g.metadata()["format"] == "edgetune-golden-finetune");
  REQUIRE(g.metadata()["version"] == "1");
  return g.load(name + ".logits").to_vector();
}

// max |a - b| over the tolerance rtol |b| + 1e-4 max|b|: passes at <= 1.
double tolerance_ratio(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double scale = 0;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double r = std::fabs(a[i] - b[i]) / (1e-4 * std::fabs(b[i]) + 1e-4 * scale);
    if (!(r <= worst)) worst = r;  // also catches NaN
  }
  return worst;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

void require_same_logits(const std::string& what, const std::vector<double>& got,
                         const std::string& golden) {
  const std::vector<double> ref = golden_logits(golden);
  const double ratio = tolerance_ratio(got, ref);
  INFO(what << ": logits against PyTorch's " << golden << ".logits: worst |diff| "
            << max_diff(got, ref) << ", " << ratio << " of the tolerance");
  CHECK(ratio <= 1);
  // The adapter must have moved the logits well beyond the tolerance, or the check proves nothing.
  CHECK(max_diff(ref, golden_logits("base")) > 100 * max_diff(got, ref));
}

// The tensor names and shapes PEFT saves for a LoRA on query and value of a BERT classifier.
std::map<std::string, std::vector<std::int64_t>> peft_lora_keys(const BertConfig& c, int r) {
  std::map<std::string, std::vector<std::int64_t>> keys;
  const std::int64_t h = c.hidden_size;
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    for (const char* t : {"query", "value"}) {
      const std::string p =
          "base_model.model.bert.encoder.layer." + std::to_string(i) + ".attention.self." + t;
      keys[p + ".lora_A.weight"] = {r, h};  // (r, in)
      keys[p + ".lora_B.weight"] = {h, r};  // (out, r)
    }
  }
  keys["base_model.model.classifier.weight"] = {c.num_labels, h};
  keys["base_model.model.classifier.bias"] = {c.num_labels};
  return keys;
}

std::map<std::string, std::vector<std::int64_t>> file_keys(const fs::path& file) {
  safetensors::Reader r(file);
  std::map<std::string, std::vector<std::int64_t>> keys;
  for (const auto& info : r.tensors()) {
    CHECK(info.dtype == "F32");
    keys[info.name] = info.shape;
  }
  return keys;
}

std::set<std::string> as_set(const nlohmann::json& list) {
  std::set<std::string> s;
  for (const auto& v : list) s.insert(v.get<std::string>());
  return s;
}

}  // namespace

TEST_CASE("peft: a LoRA written in PEFT's layout by PyTorch gives PyTorch's logits here",
          "[golden][peft]") {
  const fs::path folder = finetune_dir() / "peft_lora";
  const MethodOptions o = read_adapter_method(folder);
  REQUIRE(o.method == Method::Lora);
  REQUIRE(o.lora.rank == 8);
  REQUIRE(o.lora.alpha == 16.0);  // written as the integer 16, as PEFT does
  REQUIRE(o.lora.dropout == 0.1);
  REQUIRE(o.lora_targets == std::vector<std::string>{"query", "value"});

  const Model m = open_model(tiny_dir(), folder, DType::F32, false);
  require_same_logits("peft_lora", logits_of(m.bert), "peft_lora");

  const Model plain = open_model(tiny_dir(), {}, DType::F32, false);
  const double ratio = tolerance_ratio(logits_of(plain.bert), golden_logits("base"));
  INFO("base model without adapter: " << ratio << " of the tolerance");
  CHECK(ratio <= 1);
}

TEST_CASE("peft: edgetune's LoRA has PEFT's keys and config, and PyTorch gets its logits",
          "[golden][peft]") {
  const fs::path folder = finetune_dir() / "edgetune_lora";
  const BertConfig config = load_config(tiny_dir());

  // The layout PEFT's LoraModel / set_peft_model_state_dict expect.
  CHECK(file_keys(folder / "adapter_model.safetensors") == peft_lora_keys(config, 4));
  const AdapterFiles f = read_adapter_files(folder);
  CHECK(f.config.at("peft_type") == "LORA");
  CHECK(f.config.at("task_type") == "SEQ_CLS");
  CHECK(f.config.at("r") == 4);
  CHECK(f.config.at("lora_alpha") == 8.0);
  CHECK(f.config.at("lora_dropout") == 0.0);
  CHECK(f.config.at("bias") == "none");
  CHECK(f.config.at("fan_in_fan_out") == false);
  CHECK(as_set(f.config.at("target_modules")) == std::set<std::string>{"query", "value"});
  CHECK(as_set(f.config.at("modules_to_save")) == std::set<std::string>{"classifier"});

  const Model m = open_model(tiny_dir(), folder, DType::F32, false);
  require_same_logits("edgetune_lora", logits_of(m.bert), "edgetune_lora");

  // Today's writer still writes that layout, with the same values.
  test::TempDir tmp("peft_resave");
  save_trained(m.bert, m.method, tmp.path, tiny_dir());
  CHECK(file_keys(tmp.path / "adapter_model.safetensors") == peft_lora_keys(config, 4));
  const AdapterFiles again = read_adapter_files(tmp.path);
  for (const auto& [key, t] : f.tensors) {
    const auto it = std::find_if(again.tensors.begin(), again.tensors.end(),
                                 [&](const auto& kv) { return kv.first == key; });
    REQUIRE(it != again.tensors.end());
    INFO(key);
    CHECK(it->second.to_vector() == t.to_vector());
  }
  for (const char* field : {"peft_type", "task_type", "r", "lora_alpha", "target_modules",
                            "modules_to_save", "bias", "fan_in_fan_out"}) {
    INFO(field);
    CHECK(again.config.at(field) == f.config.at(field));
  }
}

TEST_CASE("peft: a LoRA merged into the base gives a plain folder with the same logits",
          "[golden][peft]") {
  for (const std::string name : {"peft_lora", "edgetune_lora"}) {
    INFO(name);
    test::TempDir tmp("merged_" + name);
    // What `edgetune merge` does: open over the float32 base, fold, save a Hugging Face folder.
    Model m = open_model(tiny_dir(), finetune_dir() / name, DType::F32, false);
    merge_lora(m.bert);
    for (const EncoderLayer& l : m.bert.layers) {
      CHECK(!l.query.lora);
      CHECK(!l.value.lora);
    }
    save_bert(m.bert, tmp.path, tiny_dir());

    // The merged folder is an ordinary model: the base's tensor names, no adapter.
    std::set<std::string> merged_names, base_names;
    for (const auto& [key, shape] : file_keys(tmp.path / "model.safetensors"))
      merged_names.insert(key);
    for (const auto& [key, shape] : file_keys(tiny_dir() / "model.safetensors"))
      base_names.insert(key);
    CHECK(merged_names == base_names);
    CHECK(!is_adapter_folder(tmp.path));

    const Model merged = open_model(tmp.path, {}, DType::F32, false);
    require_same_logits(name + " merged", logits_of(merged.bert), name);
  }
}
