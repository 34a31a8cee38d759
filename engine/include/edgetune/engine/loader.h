// Loading and saving Hugging Face BERT folders (config.json, model.safetensors, vocab.txt,
// tokenizer_config.json), with quantization on load.
//
// Base weights are converted tensor by tensor straight from the memory-mapped file: a Linear
// weight bound for a quantized storage is quantized a row (pal4: 16 rows) at a time and the file's pages for it are released
// at once, so loading never holds a float32 copy of the whole model.
// Accepted layouts: BertForSequenceClassification ("bert." prefix + "classifier."), a bare
// BertModel (no prefix, no head: a fresh head is initialised), BertForMaskedLM / BertForPreTraining
// ("bert." + "cls." heads; the classifier is fresh, the MLM head is kept when asked for). The
// pooler is initialised fresh when the file has none (BertForMaskedLM saves none).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "edgetune/autograd/tensor.h"
#include "edgetune/engine/bert.h"
#include "edgetune/engine/config.h"

namespace edgetune {

struct LoadOptions {
  // Storage of the encoder Linear weights (query, key, value, attention output, intermediate,
  // output) and the pooler: F32, Q8, Q4, NF4 or PAL4. Trainable weights are always F32.
  DType base = DType::Q8;
  // Also store the word-embedding table as `base` and the position table as q8 (frozen gathers).
  bool quant_embeddings = false;
  // Which tensors (Hugging Face names) will be trained: they are loaded float32, counted as
  // trainable parameters and marked requires_grad. Null: none.
  std::function<bool(const std::string&)> trainable;
  // Replace the config's labels (a fresh classifier when the count differs from the file's).
  std::vector<std::string> id2label;
  // Keep / create the masked-LM head (pretraining).
  bool with_mlm_head = false;
  // Seed of the fresh head initialisation (normal(0, initializer_range), zero biases).
  std::uint64_t seed = 0;
};

// One tensor of the model as it is held once loaded: what the loader reads or initialises, what
// the savers write, and what the memory planner counts.
struct BertTensor {
  std::string name;      // Hugging Face name ("bert.encoder.layer.0.attention.self.query.weight")
  Shape shape;           // from the config
  DType storage;         // F32 when trainable; else per LoadOptions and the tensor's kind
  bool trainable;        // LoadOptions::trainable says so: float32, requires_grad
  MemCategory category;  // Trainable or BaseWeights
  Tensor* slot;          // the model's field that holds it
};

// The tensors of `model` (BertModel::tensor_slots, so the model must be laid out: bert_layout)
// with the storage `options` gives each: trainable ones float32 in Trainable; the others in
// BaseWeights, the base storage for encoder / pooler Linear weights and, with quant_embeddings,
// the word embeddings and (q8 over any quantized base) the position embeddings; float32 for the
// rest.
std::vector<BertTensor> bert_tensors(BertModel& model, const LoadOptions& options);

struct LoadReport {
  std::string layout;                  // "sequence-classification", "bare", "masked-lm", ...
  std::vector<std::string> initialised;  // tensors not in the file, freshly initialised
  std::vector<std::string> ignored;      // tensors in the file not used (e.g. cls.* heads)
};

// Loads dir/config.json and dir/model.safetensors. Throws ModelError (one line: the file and what
// was expected) for a missing file, a bad config, a missing / misshapen / unexpected tensor.
BertModel load_bert(const std::filesystem::path& dir, const LoadOptions& options,
                    LoadReport* report = nullptr);

// A model of this config with fresh weights, initialised as Hugging Face's _init_weights does
// (normal(0, initializer_range) weights, zero biases, LayerNorm 1 / 0, a zero padding row), stored
// per `options` (quantized base weights are quantized after initialisation).
BertModel init_bert(const BertConfig& config, const LoadOptions& options);

// The config of a model folder without loading weights.
BertConfig load_config(const std::filesystem::path& dir);

// Writes a Hugging Face folder: config.json, model.safetensors (float32; quantized weights are
// dequantized; f16 when as_f16), and copies vocab.txt / tokenizer_config.json from `source_dir`
// when given. Each file is written atomically.
void save_bert(const BertModel& model, const std::filesystem::path& dir,
               const std::filesystem::path& source_dir = {}, bool as_f16 = false);

}  // namespace edgetune
