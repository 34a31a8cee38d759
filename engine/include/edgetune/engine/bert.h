// The BERT model built from autograd ops, with Hugging Face semantics:
//   BertModel (embeddings, L encoder layers, pooler) + the sequence-classification head
//   (dropout, classifier), and the masked-LM head (transform dense + act + LayerNorm, decoder tied
//   to the word embeddings, output bias) for pretraining.
// Base Linear weights may be stored f32, q8, q4, nf4 or pal4 (frozen); LoRA and Houlsby adapters attach to
// the layers. The model holds tensors only; which of them train is decided by the method
// (engine/finetune.h), by marking leaves with set_requires_grad.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "edgetune/adapters/houlsby.h"
#include "edgetune/adapters/lora.h"
#include "edgetune/autograd/qgemm.h"
#include "edgetune/autograd/tensor.h"
#include "edgetune/engine/config.h"

namespace edgetune {

// Forward-pass settings that are not part of the model.
struct ForwardOptions {
  bool training = false;          // dropout on
  bool checkpoint_layers = false; // recompute each encoder layer in backward
  // How linear layers over a quantized base compute (qgemm.h). F32 here, the reference the PyTorch
  // goldens are checked against; the settings tables default to Int8 (kComputeNames, session.h).
  Compute compute = Compute::F32;
  // Importance masks (engine/prune.h), or empty: per layer l, head_masks[l] (B, H_l) multiplies
  // each head's context output (before attention.output.dense) and ffn_masks[l] (B, F_l) the
  // activated intermediate output, example by example, so that dL/dm is each example's own.
  std::span<const Tensor> head_masks;
  std::span<const Tensor> ffn_masks;
};

// One nn.Linear: y = x W^T + b (+ LoRA).
struct LinearLayer {
  Tensor weight;                          // (N, K): f32 or quantized
  Tensor bias;                            // (N) f32
  std::shared_ptr<adapters::Lora> lora;   // optional
  // x (..., K) -> (..., N); dropout of the LoRA input with opt.training, W per opt.compute.
  Tensor forward(const Tensor& x, const ForwardOptions& opt) const;
};

struct LayerNormLayer {
  Tensor weight;  // (C) gamma
  Tensor bias;    // (C) beta
  Tensor forward(const Tensor& x, double eps) const;
};

struct EncoderLayer {
  // H_l heads: H less the layer's pruned heads (BertConfig::heads_in_layer).
  LinearLayer query, key, value;          // attention.self.{query,key,value}   (H_l*D, C)
  LinearLayer attention_output;           // attention.output.dense              (C, H_l*D)
  LayerNormLayer attention_norm;          // attention.output.LayerNorm
  // F_l neurons: F less the layer's pruned ones (BertConfig::ffn_in_layer).
  LinearLayer intermediate;               // intermediate.dense                  (F_l, C)
  LinearLayer output;                     // output.dense                        (C, F_l)
  LayerNormLayer output_norm;             // output.LayerNorm
  std::shared_ptr<adapters::Houlsby> attention_adapter;  // optional, before attention_norm
  std::shared_ptr<adapters::Houlsby> output_adapter;     // optional, before output_norm
};

struct MlmHead {
  LinearLayer transform;       // cls.predictions.transform.dense (C, C)
  LayerNormLayer norm;         // cls.predictions.transform.LayerNorm
  Tensor decoder_bias;         // cls.predictions.bias (V); decoder weight = word embeddings
};

// What a model tensor is, which decides how it is stored (LoadOptions in loader.h).
enum class TensorKind {
  WordEmbeddings,  // (V, C): float32, or the base storage with quantized embeddings
  PositionEmbeddings,  // (P, C): as the word embeddings, but q8 over a q4 base
  BaseMatrix,      // a Linear weight of the encoder or the pooler: the base storage
  Float,           // every other tensor (type table, biases, LayerNorm, heads)
};

// One tensor of a model: its Hugging Face name, the shape its config gives it, its kind, and the
// field of the model that holds it.
struct TensorSlot {
  std::string name;
  Shape shape;
  TensorKind kind;
  Tensor* tensor;
};

// A padded batch as the model takes it.
struct BertInputs {
  Tensor input_ids;       // (B, T) I32
  Tensor token_type_ids;  // (B, T) I32
  Tensor attention_mask;  // (B, T) I32: 1 for tokens, 0 for padding
};

class BertModel {
 public:
  BertConfig config;
  Tensor word_embeddings;        // (V, C): f32, or quantized with --quant-embeddings
  Tensor position_embeddings;    // (P, C): f32, or q8 with --quant-embeddings
  Tensor token_type_embeddings;  // (TT, C)
  LayerNormLayer embeddings_norm;
  std::vector<EncoderLayer> layers;
  LinearLayer pooler;            // (C, C), tanh
  LinearLayer classifier;        // (K, C)
  std::optional<MlmHead> mlm;    // present for pretraining
  // The pooler was initialised at load, not read from the file (a masked-LM checkpoint has none):
  // an adapter trained over it must carry it, or a later load draws another one.
  bool fresh_pooler = false;

  // Hidden states of the last layer.  -> (B, T, C)
  Tensor encode(const BertInputs& in, const ForwardOptions& opt) const;
  // The pooled output: tanh(pooler(h[:, 0]))  -> (B, C)
  Tensor pooled(const BertInputs& in, const ForwardOptions& opt) const;
  // Sequence-classification logits: classifier(dropout(tanh(pooler(h[:, 0]))))  -> (B, K)
  Tensor classify(const BertInputs& in, const ForwardOptions& opt) const;
  // Masked-LM logits for chosen rows of the hidden states.  rows (M, C) -> (M, V)
  Tensor mlm_logits(const Tensor& rows, const ForwardOptions& opt) const;

  // The one list of the model's tensors, walked by the loader, the savers, adapter loading and
  // the memory planner (through bert_tensors in loader.h): every tensor under its Hugging Face
  // name (BertForSequenceClassification names; cls.predictions.* when the MLM head is present), in
  // the order of Hugging Face's state_dict, with the shape `config` gives it. Adapters are not
  // included. Requires layers.size() == config.num_hidden_layers; slots may be undefined tensors.
  std::vector<TensorSlot> tensor_slots();
  // The defined tensors of tensor_slots() under their names.
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;
};

// A model laid out for `config` with every tensor undefined: L encoder layers, and the masked-LM
// head when with_mlm_head. The loader fills it; the planner walks it without allocating.
BertModel bert_layout(const BertConfig& config, bool with_mlm_head);

// The additive attention mask of Hugging Face: (1 - mask) * lowest float, as `dtype` (F32, or
// F64 for a model checked in float64).  (B, T) I32 -> (B, T)
Tensor additive_attention_mask(const Tensor& attention_mask, DType dtype = DType::F32);

}  // namespace edgetune
