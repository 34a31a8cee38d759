// The folder a fine-tuning run leaves behind, read and written here only: the method names, the
// LoRA target names and the key scheme, adapter_config.json, adapter_model.safetensors and
// labels.json (or, for `full`, a whole Hugging Face model folder).
//
// Adapter folders use the Hugging Face PEFT layout. Keys in adapter_model.safetensors are the
// model's tensor names behind PEFT's prefix "base_model.model.", e.g.
//   base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight   (r, K)
//   base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight   (N, r)
//   base_model.model.classifier.weight / .bias                                  (modules_to_save)
// so a LoRA written here loads in PEFT and one written by PEFT loads here. Methods PEFT does not
// have use the same folder and key scheme, with "edgetune_method" in the config saying which:
//   "adapter" (Houlsby): ...layer.{i}.attention.output.adapter.{down,up}.{weight,bias} and
//                        ...layer.{i}.output.adapter.{down,up}.{weight,bias}
//   "bitfit":            every bias of the model under its own name
//   "head":              bert.pooler.dense.* and classifier.*
// labels.json holds the class names (PEFT's config has no place for them). Every file is written
// atomically (temporary name, fsync, rename).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgetune/adapters/houlsby.h"
#include "edgetune/adapters/lora.h"
#include "edgetune/engine/bert.h"
#include "edgetune/engine/settings.h"

namespace edgetune {

// Fine-tuning methods (what each trains: finetune.h).
enum class Method { Lora, Adapter, BitFit, Head, Full };
// Their names, in adapter_config.json, the settings and on the command line.
inline constexpr settings::Choice<Method> kMethodNames[] = {
    {Method::Lora, "lora"}, {Method::Adapter, "adapter"}, {Method::BitFit, "bitfit"},
    {Method::Head, "head"}, {Method::Full, "full"}};
const char* method_name(Method m);  // "lora", "adapter", "bitfit", "head", "full"
Method parse_method(const std::string& s);  // throws std::invalid_argument listing the choices

// A method and the shape of its adapters: what adapter_config.json records.
struct MethodOptions {
  Method method = Method::Lora;
  adapters::LoraOptions lora;                               // rank 8, alpha 16, dropout 0
  std::vector<std::string> lora_targets = {"query", "value"};  // of lora_target_names()
  std::int64_t adapter_size = 64;                           // Houlsby bottleneck m
  adapters::BottleneckAct adapter_act = adapters::BottleneckAct::Gelu;
  std::uint64_t seed = 0;                                   // adapter initialisation
};

// A Linear module LoRA can attach to: its target name, its path inside encoder layer i (the
// Hugging Face module name after "bert.encoder.layer.{i}.") and the layer's field.
struct LoraTarget {
  const char* name;
  const char* path;
  LinearLayer EncoderLayer::*member;
};
// The LoRA target names: query, key, value, attention.output, intermediate, output.
const std::vector<std::string>& lora_target_names();
// The target named `name`. Throws std::invalid_argument listing the names.
const LoraTarget& lora_target(const std::string& name);
// Parses "query,value" into names, checking each. Throws std::invalid_argument.
std::vector<std::string> parse_lora_targets(const std::string& csv);

// The tensors of the LoRA and Houlsby modules attached to the model, under the model's names
// ("bert.encoder.layer.0.attention.self.query.lora_A.weight", ...), layer by layer.
std::vector<std::pair<std::string, Tensor>> adapter_tensors(const BertModel& model);

inline constexpr const char* kPeftPrefix = "base_model.model.";

// The two PEFT files of an adapter folder as stored.
struct AdapterFiles {
  nlohmann::json config;                                // adapter_config.json
  std::vector<std::pair<std::string, Tensor>> tensors;  // keys with the PEFT prefix; f32 Trainable
};

// True if dir holds adapter_config.json.
bool is_adapter_folder(const std::filesystem::path& dir);

// Reads adapter_config.json and adapter_model.safetensors. Throws std::runtime_error naming the
// file when a file is missing or malformed.
AdapterFiles read_adapter_files(const std::filesystem::path& dir);

// Writes the two files into dir (created if absent), each atomically.
void write_adapter_files(const std::filesystem::path& dir, const AdapterFiles& folder);

// Saves what the method trained: an adapter folder (adapter_config.json, adapter_model.safetensors
// with the adapters and the model tensors the method trains, labels.json with the class names);
// for `full`, a whole Hugging Face model folder (config.json with the labels, model.safetensors,
// and vocab.txt / tokenizer_config.json copied from base_dir).
void save_trained(const BertModel& model, const MethodOptions& options,
                  const std::filesystem::path& dir, const std::filesystem::path& base_dir);

// The method options of an adapter folder, read without a model (to choose storage before
// loading). LoRA targets are the modules with LoRA tensors in the file.
MethodOptions read_adapter_method(const std::filesystem::path& dir);

// What a folder written by save_trained (or by PEFT) holds, read without a model.
struct TrainedFolder {
  MethodOptions method;             // Method::Full for a whole model folder
  std::vector<std::string> labels;  // labels.json's class names in id order; empty when absent
};
// Throws ModelError when dir is neither an adapter folder nor a model folder.
TrainedFolder read_trained_folder(const std::filesystem::path& dir);

// Federated averaging (FedAvg) of adapter folders trained from the same base: writes to `out` an
// adapter folder whose every tensor is the weighted mean sum_i w_i t_i / sum_i w_i (in double,
// stored f32) of the folders' tensors, with the first folder's adapter_config.json and labels.json.
// Weights are positive (a client's example count); empty means equal weights. Every folder must
// hold the same adapter_config.json but for base_model_name_or_path, the same tensor names and
// shapes, and the same labels.json (or none). Throws std::invalid_argument for bad weights and
// std::runtime_error naming the folder (and tensor) that differs; `out` is written only after
// every input was read and checked, each file atomically.
void aggregate_adapters(const std::vector<std::filesystem::path>& dirs,
                        const std::vector<double>& weights, const std::filesystem::path& out);

// Loads an adapter folder onto a model loaded from the base: attaches the adapters with the saved
// values and overwrites the saved model tensors. Returns the method options read from the folder.
// A full-model folder is not an adapter: load it as the model.
// With grow_head, a saved classifier.weight (K, C) / classifier.bias (K) with fewer classes than
// the model's (K', C) / (K') (an update that brought new labels) fills the first K rows and leaves
// rows K..K'-1 as the model initialised them; without it, any other shape is a ModelError.
MethodOptions load_trained(BertModel& model, const std::filesystem::path& dir, bool grow_head = false);

}  // namespace edgetune
