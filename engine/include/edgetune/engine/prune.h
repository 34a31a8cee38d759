// Structured pruning of a BERT model in memory, and the importance scores that choose what to
// remove (engine/model_file.h's compress writes the result):
//   - attention heads, as Hugging Face's prune_heads: rows of query / key / value (weights and
//     biases) and columns of attention.output.dense; the config's pruned_heads records them;
//   - feed-forward neurons: rows of intermediate.dense (weight and bias) and columns of
//     output.dense; the config's intermediate_sizes records each layer's width F_l;
//   - layers: the kept ones renumbered;
//   - vocabulary: the word-embedding rows of the kept tokens, re-indexed.
// A pruned layer has smaller matrices of its own, not masks. Importance follows Michel et al. 2019
// ("Are sixteen heads really better than one?"): a mask variable m of ones multiplies each head's
// context output (each neuron's activation), and I = sum over examples of |dL/dm|, with L the
// example's cross-entropy under the classifier, through the autograd engine.
// What this is not: unstructured (weight by weight) pruning, or a trainer: the model is not
// fine-tuned after pruning here.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "edgetune/data/vocab.h"
#include "edgetune/engine/bert.h"
#include "edgetune/engine/session.h"

namespace edgetune {

// Layer -> unit indices (heads or neurons) of that layer, ascending and distinct.
using LayerUnits = std::map<std::int64_t, std::vector<std::int64_t>>;

// Removes `heads` (original head numbers of layers that have no pruned head yet) from a float
// model, as Hugging Face's prune_heads. Requires an F32 model whose layers keep at least one head
// each; throws std::invalid_argument for a layer that does not exist or already has pruned heads.
void prune_heads(BertModel& model, const LayerUnits& heads);

// Removes `neurons` (indices into each layer's current F_l neurons) from a float model: rows of
// intermediate.dense, columns of output.dense; config.intermediate_sizes gets every layer's width.
// Throws std::invalid_argument for a layer or neuron that does not exist, or a layer left empty.
void prune_neurons(BertModel& model, const LayerUnits& neurons);

// Keeps the layers `keep` (ascending, distinct), renumbered 0..; pruned_heads and
// intermediate_sizes follow them. Throws std::invalid_argument for a layer that does not exist.
void keep_layers(BertModel& model, const std::vector<std::int64_t>& keep);

// Re-indexes the word embeddings to `tokens` (a subset of `full`, in the order of the pruned
// vocabulary: data/vocab_prune.h's prune_vocab): row i becomes the row of full's id of tokens[i];
// config.vocab_size and pad_token_id follow. Requires float word embeddings of full.size() rows;
// throws std::invalid_argument for a token not in `full` or a pad token that is not kept.
void prune_vocabulary(BertModel& model, const data::Vocab& full, std::span<const std::string> tokens);

struct MaskImportance {
  std::vector<std::vector<double>> heads;    // (L)(H_l): sum over examples of |dL/dm_h|
  std::vector<std::vector<double>> neurons;  // (L)(F_l): sum over examples of |dL/dm_f|
};

// The importance of every head and neuron of `model` on labelled batches (labels defined), each
// example's L its cross-entropy under model.classify in evaluation mode (no dropout), in the
// model's float dtype (F32, or F64 for checks). Requires float base weights.
MaskImportance mask_importance(const BertModel& model, std::span<const TensorBatch> batches);

// Each layer's scores divided by their l2 norm (Michel et al.'s per-layer normalization); a layer
// of zeros stays zeros.
std::vector<std::vector<double>> normalize_per_layer(const std::vector<std::vector<double>>& scores);

// The floor(fraction * total) heads of lowest score over all layers (ties: lower layer, then
// lower head first), skipping a head whose removal would leave its layer without one. scores
// (L)(H_l) are indexed by the layer's current heads; the result is too. Requires fraction in
// [0, 1) (else std::invalid_argument).
LayerUnits lowest_heads(const std::vector<std::vector<double>>& scores, double fraction);

// In each layer, the floor(fraction * F_l) neurons of lowest score (ties: lower index first).
// Requires fraction in [0, 1) (else std::invalid_argument).
LayerUnits lowest_neurons(const std::vector<std::vector<double>>& scores, double fraction);

// Trains `model`'s classifier alone (a fresh one: its head was not in the source) on the pooled
// outputs of `batches`, computed once, for `steps` full passes of Adam (lr 1e-2), so that
// importance scores the task's loss rather than a random head's. The encoder is not changed.
void fit_classifier(BertModel& model, std::span<const TensorBatch> batches, std::int32_t labels, int steps);

}  // namespace edgetune
