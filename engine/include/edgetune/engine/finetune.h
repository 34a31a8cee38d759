// Fine-tuning methods: which tensors of a BertModel train, the adapters each method attaches, the
// trainable parameter list the optimizer steps, and the adapter files each method reads and writes.
//
//   lora     LoRA on the chosen Linear modules (query, value by default) + the classifier head
//   adapter  Houlsby adapters after the attention output and the feed-forward output + the head
//   bitfit   every bias of the model + the head
//   head     the pooler and the classifier
//   full     every tensor (the base is then float32, never quantized)
// The classifier head is always trainable.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "edgetune/adapters/houlsby.h"
#include "edgetune/adapters/lora.h"
#include "edgetune/engine/bert.h"
#include "edgetune/engine/loader.h"
#include "edgetune/optim/optimizer.h"

namespace edgetune {

enum class Method { Lora, Adapter, BitFit, Head, Full };
const char* method_name(Method m);  // "lora", "adapter", "bitfit", "head", "full"
Method parse_method(const std::string& s);  // throws std::invalid_argument listing the choices

struct MethodOptions {
  Method method = Method::Lora;
  adapters::LoraOptions lora;                               // rank 8, alpha 16, dropout 0
  std::vector<std::string> lora_targets = {"query", "value"};  // of the names below
  std::int64_t adapter_size = 64;                           // Houlsby bottleneck m
  adapters::BottleneckAct adapter_act = adapters::BottleneckAct::Gelu;
  std::uint64_t seed = 0;                                   // adapter initialisation
};

// The LoRA target names: query, key, value, attention.output, intermediate, output.
const std::vector<std::string>& lora_target_names();
// Parses "query,value" into names, checking each. Throws std::invalid_argument.
std::vector<std::string> parse_lora_targets(const std::string& csv);

// True when the model tensor `name` (Hugging Face name) trains under the method.
bool trains_under(const std::string& name, const MethodOptions& options);

// LoadOptions for a method: the trainable predicate, and f32 storage for `full`.
LoadOptions load_options_for(const MethodOptions& options, DType base, bool quant_embeddings);

// Attaches fresh LoRA or Houlsby modules to every layer (nothing for the other methods).
void attach_adapters(BertModel& model, const MethodOptions& options);

// The trainable tensors of the model and its adapters, named as in the model
// ("bert.encoder.layer.0.attention.self.query.lora_A.weight", "classifier.weight", ...), with
// weight decay off for biases and LayerNorm parameters (the Hugging Face Trainer convention).
std::vector<optim::Param> trainable_params(const BertModel& model);

// Saves what the method trained as an adapter folder (adapter_io.h layout, plus labels.json with
// the class names); for `full`, a whole Hugging Face model folder (config.json with the labels,
// model.safetensors, and vocab.txt / tokenizer_config.json copied from base_dir).
void save_trained(const BertModel& model, const MethodOptions& options,
                  const std::filesystem::path& dir, const std::filesystem::path& base_dir);

// Loads a folder written by save_trained (or by PEFT for LoRA) onto a model loaded from the base:
// attaches the adapters with the saved values and overwrites the saved tensors. Returns the
// method options read from the folder. A full-model folder is not an adapter: load it as --model.
MethodOptions load_trained(BertModel& model, const std::filesystem::path& dir);

// Reads the method options of an adapter folder without a model (to choose storage before loading).
MethodOptions read_adapter_method(const std::filesystem::path& dir);

// Folds every LoRA into its base weight (float32) and removes the LoRA modules: the model then
// computes the same logits without adapters.
void merge_lora(BertModel& model);

}  // namespace edgetune
