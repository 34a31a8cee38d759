// Fine-tuning methods: which tensors of a BertModel train, the adapters each method attaches, the
// trainable parameter list the optimizer steps, and merging LoRA into the base. The method names,
// their options and the files they save are adapter_folder.h's.
//
//   lora     LoRA on the chosen Linear modules (query, value by default) + the classifier head
//   adapter  Houlsby adapters after the attention output and the feed-forward output + the head
//   bitfit   every bias of the model + the head
//   head     the pooler and the classifier
//   full     every tensor (the base is then float32, never quantized)
// The classifier head is always trainable.
#pragma once

#include <string>
#include <vector>

#include "edgetune/engine/adapter_folder.h"
#include "edgetune/engine/bert.h"
#include "edgetune/engine/dp.h"
#include "edgetune/engine/loader.h"
#include "edgetune/optim/optimizer.h"

namespace edgetune {

// True when the model tensor `name` (Hugging Face name) trains under the method.
bool trains_under(const std::string& name, const MethodOptions& options);

// LoadOptions for a method: the trainable predicate, and f32 storage for `full`.
LoadOptions load_options_for(const MethodOptions& options, DType base, bool quant_embeddings);

// How DP-SGD has each example's gradient under the method (dp.h): PerExample for every method
// whose trained tensors all sit in linear and layer_norm ops (lora, adapter, bitfit, head);
// ExampleAtATime for full fine-tuning, which trains the embedding tables.
DpClipping dp_clipping_for(Method method);

// Attaches fresh LoRA or Houlsby modules to every layer (nothing for the other methods).
void attach_adapters(BertModel& model, const MethodOptions& options);

// The trainable tensors of the model and its adapters, named as in the model
// ("bert.encoder.layer.0.attention.self.query.lora_A.weight", "classifier.weight", ...), with
// weight decay off for biases and LayerNorm parameters (the Hugging Face Trainer convention).
std::vector<optim::Param> trainable_params(const BertModel& model);

// Folds every LoRA into its base weight (float32) and removes the LoRA modules: the model then
// computes the same logits without adapters.
void merge_lora(BertModel& model);

}  // namespace edgetune
