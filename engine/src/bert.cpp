// The BERT forward pass (see bert.h). Mirrors transformers' modeling_bert.py step by step so the
// PyTorch goldens match: embeddings -> LayerNorm -> dropout; per layer self-attention with the
// additive mask, dropout on the probabilities, output dense -> dropout -> (adapter) -> residual
// LayerNorm, intermediate dense -> activation, output dense -> dropout -> (adapter) -> residual
// LayerNorm; pooler tanh(dense(h[:, 0])); dropout; classifier.
#include "edgetune/engine/bert.h"

#include <array>
#include <cmath>
#include <limits>

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/ops.h"

namespace edgetune {

Tensor LinearLayer::forward(const Tensor& x, const ForwardOptions& opt) const {
  Tensor y = ops::linear(x, weight, bias, ops::LinearOptions{opt.compute});
  if (lora) y = ops::add(y, lora->delta(x, opt.training));
  return y;
}

Tensor LayerNormLayer::forward(const Tensor& x, double eps) const {
  return ops::layer_norm(x, weight, bias, eps);
}

Tensor additive_attention_mask(const Tensor& attention_mask, DType dtype) {
  const std::int32_t* in = attention_mask.data<std::int32_t>();
  const float lowest = std::numeric_limits<float>::lowest();
  if (dtype == DType::F64) {
    std::vector<double> v(static_cast<std::size_t>(attention_mask.numel()));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = (1.0f - static_cast<float>(in[i])) * lowest;
    return Tensor::from_values(attention_mask.shape(), v, DType::F64, MemCategory::Activations);
  }
  Tensor m = Tensor::empty(attention_mask.shape(), DType::F32, MemCategory::Activations);
  float* out = m.data<float>();
  for (std::int64_t i = 0; i < m.numel(); ++i) out[i] = (1.0f - static_cast<float>(in[i])) * lowest;
  return m;
}

namespace {

Tensor activation(Activation act, const Tensor& x) {
  switch (act) {
    case Activation::Gelu: return ops::gelu(x);
    case Activation::GeluTanh: return ops::gelu_tanh(x);
    case Activation::Relu: return ops::relu(x);
  }
  return x;
}

// m (B, N) spread over `shape` (B, ..., N, ...) by products with ones, so that the gradient
// reaching m is the sum over the spread copies: (B, N) -> `shape`, where m4 (B, N, 1, 1) is spread
// to (B, N, R, S) when `shape` is 4-d, and m3 (B, 1, N) to (B, R, N) when it is 3-d.
Tensor spread_mask(const Tensor& m, const Shape& shape) {
  const std::int64_t b = m.dim(0), n = m.dim(1);
  if (shape.rank() == 4) {
    const Tensor rows = Tensor::full({b, n, shape[2], 1}, 1.0, m.dtype(), MemCategory::Activations);
    const Tensor cols = Tensor::full({b, n, 1, shape[3]}, 1.0, m.dtype(), MemCategory::Activations);
    return ops::matmul(ops::matmul(rows, ops::reshape(m, {b, n, 1, 1})), cols);
  }
  const Tensor rows = Tensor::full({b, shape[1], 1}, 1.0, m.dtype(), MemCategory::Activations);
  return ops::matmul(rows, ops::reshape(m, {b, 1, n}));
}

// One encoder layer with h heads (fewer than the config's when some were pruned). x (B, T, C);
// mask additive (B, T); head_mask (B, h) and ffn_mask (B, F_l) the importance masks, or undefined.
Tensor encoder_layer(const BertConfig& cfg, const EncoderLayer& layer, std::int64_t h, const Tensor& x,
                     const Tensor& mask, const Tensor& head_mask, const Tensor& ffn_mask,
                     const ForwardOptions& opt) {
  const bool training = opt.training;
  const std::int64_t b = x.dim(0), t = x.dim(1);
  const std::int64_t d = cfg.head_size();
  static const std::array<int, 4> split{0, 2, 1, 3};
  auto heads = [&](const Tensor& y) {  // (B, T, h*D) -> (B, h, T, D)
    return ops::permute(ops::reshape(y, {b, t, h, d}), split);
  };
  const Tensor q = heads(layer.query.forward(x, opt));
  const Tensor k = heads(layer.key.forward(x, opt));
  const Tensor v = heads(layer.value.forward(x, opt));
  Tensor scores = ops::scale(ops::matmul(q, k, false, true), 1.0 / std::sqrt(double(d)));
  Tensor probs = ops::dropout(ops::softmax(scores, mask), cfg.attention_probs_dropout_prob, training);
  scores = Tensor();
  Tensor per_head = ops::matmul(probs, v);  // (B, h, T, D)
  if (head_mask.defined()) per_head = ops::mul(per_head, spread_mask(head_mask, per_head.shape()));
  Tensor ctx = ops::reshape(ops::permute(per_head, split), {b, t, h * d});
  per_head = Tensor();
  probs = Tensor();

  Tensor a = ops::dropout(layer.attention_output.forward(ctx, opt), cfg.hidden_dropout_prob,
                          training);
  ctx = Tensor();
  if (layer.attention_adapter) a = layer.attention_adapter->forward(a);
  a = layer.attention_norm.forward(ops::add(a, x), cfg.layer_norm_eps);

  Tensor i = activation(cfg.hidden_act, layer.intermediate.forward(a, opt));  // (B, T, F_l)
  if (ffn_mask.defined()) i = ops::mul(i, spread_mask(ffn_mask, i.shape()));
  Tensor o = ops::dropout(layer.output.forward(i, opt), cfg.hidden_dropout_prob, training);
  i = Tensor();
  if (layer.output_adapter) o = layer.output_adapter->forward(o);
  return layer.output_norm.forward(ops::add(o, a), cfg.layer_norm_eps);
}

Tensor position_ids(std::int64_t t) {
  Tensor p = Tensor::empty({t}, DType::I32, MemCategory::Activations);
  for (std::int64_t i = 0; i < t; ++i) p.data<std::int32_t>()[i] = static_cast<std::int32_t>(i);
  return p;
}

}  // namespace

Tensor BertModel::encode(const BertInputs& in, const ForwardOptions& opt) const {
  const std::int64_t t = in.input_ids.dim(1);
  if (t > config.max_position_embeddings) {
    throw std::invalid_argument("sequence of " + std::to_string(t) + " tokens is longer than the " +
                                "model's max_position_embeddings (" +
                                std::to_string(config.max_position_embeddings) +
                                "); lower --max-length");
  }
  // (B, T, C); the padding token's row gets no gradient (nn.Embedding padding_idx in HF).
  Tensor h = ops::embedding(word_embeddings, in.input_ids, static_cast<std::int32_t>(config.pad_token_id));
  h = ops::add(h, ops::embedding(token_type_embeddings, in.token_type_ids));
  h = ops::add(h, ops::embedding(position_embeddings, position_ids(t)));  // (T, C) broadcast
  h = ops::dropout(embeddings_norm.forward(h, config.layer_norm_eps), config.hidden_dropout_prob,
                   opt.training);
  const Tensor mask = additive_attention_mask(in.attention_mask, h.dtype());
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const EncoderLayer& layer = layers[l];
    const std::int64_t heads = config.heads_in_layer(static_cast<std::int64_t>(l));
    const Tensor head_mask = opt.head_masks.empty() ? Tensor() : opt.head_masks[l];
    const Tensor ffn_mask = opt.ffn_masks.empty() ? Tensor() : opt.ffn_masks[l];
    if (opt.checkpoint_layers) {
      // The recomputation runs during backward, after encode() returned: capture by value
      // (the layer lives in the model).
      h = checkpoint(
          [this, &layer, heads, mask, head_mask, ffn_mask, opt](const std::vector<Tensor>& xs) {
            return encoder_layer(config, layer, heads, xs[0], mask, head_mask, ffn_mask, opt);
          },
          {h});
    } else {
      h = encoder_layer(config, layer, heads, h, mask, head_mask, ffn_mask, opt);
    }
  }
  return h;
}

Tensor BertModel::pooled(const BertInputs& in, const ForwardOptions& opt) const {
  const Tensor h = encode(in, opt);
  const std::int64_t b = h.dim(0), t = h.dim(1), c = h.dim(2);
  Tensor first = Tensor::empty({b}, DType::I32, MemCategory::Activations);
  for (std::int64_t i = 0; i < b; ++i) first.data<std::int32_t>()[i] = static_cast<std::int32_t>(i * t);
  const Tensor cls = ops::gather_rows(ops::reshape(h, {b * t, c}), first);  // h[:, 0]  (B, C)
  return ops::tanh(pooler.forward(cls, opt));
}

Tensor BertModel::classify(const BertInputs& in, const ForwardOptions& opt) const {
  return classifier.forward(ops::dropout(pooled(in, opt), config.classifier_dropout_prob(), opt.training),
                            opt);
}

Tensor BertModel::mlm_logits(const Tensor& rows, const ForwardOptions& opt) const {
  if (!mlm) throw std::logic_error("mlm_logits: the model has no masked-LM head");
  Tensor z = activation(config.hidden_act, mlm->transform.forward(rows, opt));
  z = mlm->norm.forward(z, config.layer_norm_eps);
  return ops::linear(z, word_embeddings, mlm->decoder_bias, ops::LinearOptions{opt.compute});  // decoder tied to the embeddings
}

std::vector<TensorSlot> BertModel::tensor_slots() {
  const std::int64_t c = config.hidden_size, v = config.vocab_size;
  std::vector<TensorSlot> out;
  auto linear = [&](const std::string& name, LinearLayer& lin, std::int64_t n, std::int64_t k,
                    TensorKind kind) {
    out.push_back({name + ".weight", {n, k}, kind, &lin.weight});
    out.push_back({name + ".bias", {n}, TensorKind::Float, &lin.bias});
  };
  auto norm = [&](const std::string& name, LayerNormLayer& ln) {
    out.push_back({name + ".weight", {c}, TensorKind::Float, &ln.weight});
    out.push_back({name + ".bias", {c}, TensorKind::Float, &ln.bias});
  };
  out.push_back({"bert.embeddings.word_embeddings.weight", {v, c}, TensorKind::WordEmbeddings,
                 &word_embeddings});
  out.push_back({"bert.embeddings.position_embeddings.weight", {config.max_position_embeddings, c},
                 TensorKind::PositionEmbeddings, &position_embeddings});
  out.push_back({"bert.embeddings.token_type_embeddings.weight", {config.type_vocab_size, c},
                 TensorKind::Float, &token_type_embeddings});
  norm("bert.embeddings.LayerNorm", embeddings_norm);
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string p = "bert.encoder.layer." + std::to_string(i) + ".";
    EncoderLayer& l = layers[i];
    const std::int64_t a = config.heads_in_layer(static_cast<std::int64_t>(i)) * config.head_size();
    const std::int64_t f = config.ffn_in_layer(static_cast<std::int64_t>(i));
    linear(p + "attention.self.query", l.query, a, c, TensorKind::BaseMatrix);
    linear(p + "attention.self.key", l.key, a, c, TensorKind::BaseMatrix);
    linear(p + "attention.self.value", l.value, a, c, TensorKind::BaseMatrix);
    linear(p + "attention.output.dense", l.attention_output, c, a, TensorKind::BaseMatrix);
    norm(p + "attention.output.LayerNorm", l.attention_norm);
    linear(p + "intermediate.dense", l.intermediate, f, c, TensorKind::BaseMatrix);
    linear(p + "output.dense", l.output, c, f, TensorKind::BaseMatrix);
    norm(p + "output.LayerNorm", l.output_norm);
  }
  linear("bert.pooler.dense", pooler, c, c, TensorKind::BaseMatrix);
  linear("classifier", classifier, config.num_labels, c, TensorKind::Float);
  if (mlm) {
    linear("cls.predictions.transform.dense", mlm->transform, c, c, TensorKind::Float);
    norm("cls.predictions.transform.LayerNorm", mlm->norm);
    out.push_back({"cls.predictions.bias", {v}, TensorKind::Float, &mlm->decoder_bias});
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> BertModel::named_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const TensorSlot& s : const_cast<BertModel*>(this)->tensor_slots()) {
    if (s.tensor->defined()) out.emplace_back(s.name, *s.tensor);
  }
  return out;
}

BertModel bert_layout(const BertConfig& config, bool with_mlm_head) {
  BertModel m;
  m.config = config;
  m.layers.resize(static_cast<size_t>(config.num_hidden_layers));
  if (with_mlm_head) m.mlm.emplace();
  return m;
}

}  // namespace edgetune
