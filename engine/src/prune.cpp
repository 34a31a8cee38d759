// Structured pruning and mask importance (see prune.h).
#include "edgetune/engine/prune.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/optim/optimizer.h"

namespace edgetune {

namespace {

// Rows (columns: false) of a float (N, K) matrix or (N) vector at `keep`.
Tensor select(const Tensor& w, const std::vector<std::int64_t>& keep, bool rows) {
  const std::int64_t n = w.dim(0), k = w.rank() == 2 ? w.dim(1) : 1;
  const auto kept = static_cast<std::int64_t>(keep.size());
  Tensor out = rows ? (w.rank() == 2 ? Tensor::empty({kept, k}, DType::F32, w.category())
                                     : Tensor::empty({kept}, DType::F32, w.category()))
                    : Tensor::empty({n, kept}, DType::F32, w.category());
  const float* src = w.data<float>();
  float* dst = out.data<float>();
  if (rows) {
    for (std::int64_t i = 0; i < kept; ++i) std::memcpy(dst + i * k, src + keep[i] * k, sizeof(float) * k);
  } else {
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t j = 0; j < kept; ++j) dst[r * kept + j] = src[r * k + keep[j]];
  }
  out.set_name(w.name());
  return out;
}

// The indices of [0, n) not in `drop` (ascending).
std::vector<std::int64_t> complement(std::int64_t n, const std::vector<std::int64_t>& drop) {
  std::vector<std::int64_t> keep;
  for (std::int64_t i = 0; i < n; ++i) {
    if (!std::binary_search(drop.begin(), drop.end(), i)) keep.push_back(i);
  }
  return keep;
}

void check_fraction(double fraction, const char* what) {
  if (!(fraction >= 0 && fraction < 1)) {
    throw std::invalid_argument(std::string(what) + " must be in [0, 1), got " + std::to_string(fraction));
  }
}

}  // namespace

void prune_heads(BertModel& m, const LayerUnits& heads) {
  const std::int64_t d = m.config.head_size();
  for (const auto& [layer, drop] : heads) {
    if (layer < 0 || layer >= m.config.num_hidden_layers || m.config.pruned_heads.count(layer)) {
      throw std::invalid_argument("compress: heads of layer " + std::to_string(layer) +
                                  " cannot be removed: it does not exist or already has pruned heads");
    }
    std::vector<std::int64_t> keep;
    for (std::int64_t h : complement(m.config.num_attention_heads, drop)) {
      for (std::int64_t i = 0; i < d; ++i) keep.push_back(h * d + i);
    }
    EncoderLayer& l = m.layers[static_cast<std::size_t>(layer)];
    for (LinearLayer* lin : {&l.query, &l.key, &l.value}) {
      lin->weight = select(lin->weight, keep, true);
      lin->bias = select(lin->bias, keep, true);
    }
    l.attention_output.weight = select(l.attention_output.weight, keep, false);
    if (!drop.empty()) m.config.pruned_heads[layer] = drop;
  }
}

void prune_neurons(BertModel& m, const LayerUnits& neurons) {
  std::vector<std::int64_t> sizes;
  for (std::int64_t l = 0; l < m.config.num_hidden_layers; ++l) sizes.push_back(m.config.ffn_in_layer(l));
  for (const auto& [layer, drop] : neurons) {
    if (layer < 0 || layer >= m.config.num_hidden_layers) {
      throw std::invalid_argument("compress: neurons of layer " + std::to_string(layer) + ", which does not exist");
    }
    const std::int64_t f = sizes[static_cast<std::size_t>(layer)];
    if (!drop.empty() && (drop.front() < 0 || drop.back() >= f)) {
      throw std::invalid_argument("compress: layer " + std::to_string(layer) + " has neurons 0.." +
                                  std::to_string(f - 1) + " only");
    }
    const std::vector<std::int64_t> keep = complement(f, drop);
    if (keep.empty()) throw std::invalid_argument("compress: layer " + std::to_string(layer) + " would keep no neuron");
    EncoderLayer& l = m.layers[static_cast<std::size_t>(layer)];
    l.intermediate.weight = select(l.intermediate.weight, keep, true);
    l.intermediate.bias = select(l.intermediate.bias, keep, true);
    l.output.weight = select(l.output.weight, keep, false);
    sizes[static_cast<std::size_t>(layer)] = static_cast<std::int64_t>(keep.size());
  }
  const bool all_full = std::all_of(sizes.begin(), sizes.end(),
                                    [&](std::int64_t f) { return f == m.config.intermediate_size; });
  m.config.intermediate_sizes = all_full ? std::vector<std::int64_t>{} : sizes;
}

void keep_layers(BertModel& m, const std::vector<std::int64_t>& keep) {
  std::vector<EncoderLayer> kept;
  LayerUnits pruned;
  std::vector<std::int64_t> sizes;
  for (std::int64_t i : keep) {
    if (i < 0 || i >= static_cast<std::int64_t>(m.layers.size())) {
      throw std::invalid_argument("compress: layer " + std::to_string(i) + " does not exist");
    }
    if (const auto it = m.config.pruned_heads.find(i); it != m.config.pruned_heads.end()) {
      pruned[static_cast<std::int64_t>(kept.size())] = it->second;
    }
    sizes.push_back(m.config.ffn_in_layer(i));
    kept.push_back(m.layers[static_cast<std::size_t>(i)]);
  }
  m.layers = std::move(kept);
  m.config.pruned_heads = std::move(pruned);
  if (!m.config.intermediate_sizes.empty()) m.config.intermediate_sizes = std::move(sizes);
  m.config.num_hidden_layers = static_cast<std::int64_t>(m.layers.size());
}

void prune_vocabulary(BertModel& m, const data::Vocab& full, std::span<const std::string> tokens) {
  if (m.word_embeddings.dim(0) != full.size()) {
    throw std::invalid_argument("compress: the word embeddings have " + std::to_string(m.word_embeddings.dim(0)) +
                                " rows for a vocabulary of " + std::to_string(full.size()) + " tokens");
  }
  std::vector<std::int64_t> rows;
  std::optional<std::int64_t> pad;
  for (const std::string& token : tokens) {
    const std::optional<std::int32_t> id = full.id(token);
    if (!id) throw std::invalid_argument("compress: token '" + token + "' is not in the vocabulary");
    if (*id == m.config.pad_token_id) pad = static_cast<std::int64_t>(rows.size());
    rows.push_back(*id);
  }
  if (!pad) throw std::invalid_argument("compress: the pruned vocabulary lost the padding token");
  m.word_embeddings = select(m.word_embeddings, rows, true);
  m.config.vocab_size = static_cast<std::int64_t>(rows.size());
  m.config.pad_token_id = *pad;
}

MaskImportance mask_importance(const BertModel& m, std::span<const TensorBatch> batches) {
  const DType dtype = m.token_type_embeddings.dtype();
  const std::int64_t layers = m.config.num_hidden_layers;
  MaskImportance out;
  for (std::int64_t l = 0; l < layers; ++l) {
    out.heads.emplace_back(static_cast<std::size_t>(m.config.heads_in_layer(l)), 0.0);
    out.neurons.emplace_back(static_cast<std::size_t>(m.config.ffn_in_layer(l)), 0.0);
  }
  // |g| summed over the batch's rows into `into`. The loss is the batch mean, so an example's own
  // gradient is b times its row of g.
  auto add_abs = [](const Tensor& mask, std::vector<double>& into) {
    const std::int64_t b = mask.dim(0), n = mask.dim(1);
    const std::vector<double> g = mask.grad().to_vector();
    for (std::int64_t r = 0; r < b; ++r)
      for (std::int64_t j = 0; j < n; ++j) into[static_cast<std::size_t>(j)] += std::abs(g[r * n + j]) * double(b);
  };
  for (const TensorBatch& batch : batches) {
    const std::int64_t b = batch.inputs.input_ids.dim(0);
    std::vector<Tensor> head_masks, ffn_masks;  // (B, H_l), (B, F_l) per layer
    for (std::int64_t l = 0; l < layers; ++l) {
      head_masks.push_back(Tensor::full({b, m.config.heads_in_layer(l)}, 1.0, dtype).set_requires_grad(true));
      ffn_masks.push_back(Tensor::full({b, m.config.ffn_in_layer(l)}, 1.0, dtype).set_requires_grad(true));
    }
    ForwardOptions opt;
    opt.head_masks = head_masks;
    opt.ffn_masks = ffn_masks;
    backward(ops::cross_entropy(m.classify(batch.inputs, opt), batch.labels));
    for (std::size_t l = 0; l < static_cast<std::size_t>(layers); ++l) {
      add_abs(head_masks[l], out.heads[l]);
      add_abs(ffn_masks[l], out.neurons[l]);
    }
  }
  return out;
}

std::vector<std::vector<double>> normalize_per_layer(const std::vector<std::vector<double>>& scores) {
  std::vector<std::vector<double>> out = scores;
  for (std::vector<double>& layer : out) {
    const double norm = std::sqrt(std::inner_product(layer.begin(), layer.end(), layer.begin(), 0.0));
    if (norm > 0) {
      for (double& s : layer) s /= norm;
    }
  }
  return out;
}

LayerUnits lowest_heads(const std::vector<std::vector<double>>& scores, double fraction) {
  check_fraction(fraction, "--prune-heads");
  std::vector<std::tuple<double, std::int64_t, std::int64_t>> all;  // (score, layer, head)
  std::vector<std::int64_t> left;
  for (std::size_t l = 0; l < scores.size(); ++l) {
    left.push_back(static_cast<std::int64_t>(scores[l].size()));
    for (std::size_t h = 0; h < scores[l].size(); ++h) {
      all.emplace_back(scores[l][h], static_cast<std::int64_t>(l), static_cast<std::int64_t>(h));
    }
  }
  std::sort(all.begin(), all.end());
  auto remove = static_cast<std::int64_t>(std::floor(fraction * static_cast<double>(all.size())));
  LayerUnits out;
  for (const auto& [score, layer, head] : all) {
    if (remove == 0) break;
    if (left[static_cast<std::size_t>(layer)] == 1) continue;
    --left[static_cast<std::size_t>(layer)];
    out[layer].push_back(head);
    --remove;
  }
  for (auto& [layer, heads] : out) std::sort(heads.begin(), heads.end());
  return out;
}

LayerUnits lowest_neurons(const std::vector<std::vector<double>>& scores, double fraction) {
  check_fraction(fraction, "--prune-ffn");
  LayerUnits out;
  for (std::size_t l = 0; l < scores.size(); ++l) {
    const std::vector<double>& s = scores[l];
    std::vector<std::int64_t> order(s.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
      return s[static_cast<std::size_t>(a)] < s[static_cast<std::size_t>(b)];
    });
    const auto remove = static_cast<std::size_t>(std::floor(fraction * static_cast<double>(s.size())));
    if (remove == 0) continue;
    std::vector<std::int64_t> drop(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(remove));
    std::sort(drop.begin(), drop.end());
    out[static_cast<std::int64_t>(l)] = std::move(drop);
  }
  return out;
}

void fit_classifier(BertModel& m, std::span<const TensorBatch> batches, std::int32_t labels, int steps) {
  const std::int64_t c = m.config.hidden_size;
  std::vector<Tensor> features;  // (B, C) per batch, without a graph
  std::int64_t rows = 0;
  for (const TensorBatch& batch : batches) {
    features.push_back(m.pooled(batch.inputs, {}));
    rows += batch.inputs.input_ids.dim(0);
  }
  std::vector<optim::Param> params = {
      {"classifier.weight", Tensor::zeros({labels, c}, DType::F32, MemCategory::Trainable), true},
      {"classifier.bias", Tensor::zeros({labels}, DType::F32, MemCategory::Trainable), false}};
  for (optim::Param& p : params) p.tensor.set_requires_grad(true);
  const std::unique_ptr<optim::Optimizer> adam = optim::make_adam({});
  for (int step = 0; step < steps; ++step) {
    for (std::size_t i = 0; i < batches.size(); ++i) {
      const Tensor loss = ops::cross_entropy(ops::linear(features[i], params[0].tensor, params[1].tensor),
                                             batches[i].labels);
      // The mean over all rows: each batch's mean weighted by its share.
      backward(ops::scale(loss, double(features[i].dim(0)) / double(rows)));
    }
    adam->step(params, 1e-2);
    for (optim::Param& p : params) p.tensor.zero_grad();
  }
  m.classifier.weight = params[0].tensor.detach();
  m.classifier.bias = params[1].tensor.detach();
  m.config.num_labels = labels;
}

}  // namespace edgetune
