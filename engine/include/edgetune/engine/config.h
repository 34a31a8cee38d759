// BertConfig: the fields of a Hugging Face BERT `config.json` that edgetune uses, parsed and
// validated with errors that name the file and the field.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgetune {

// A bad model folder (config, weights, vocabulary): one line naming the file and what was expected.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Activation { Gelu, GeluTanh, Relu };  // "gelu", "gelu_new", "relu"

struct BertConfig {
  std::int64_t vocab_size = 30522;              // V
  std::int64_t hidden_size = 768;               // C
  std::int64_t num_hidden_layers = 12;          // L
  std::int64_t num_attention_heads = 12;        // H
  std::int64_t intermediate_size = 3072;        // F
  Activation hidden_act = Activation::Gelu;
  std::int64_t max_position_embeddings = 512;
  std::int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  std::optional<double> classifier_dropout;     // null: hidden_dropout_prob
  double initializer_range = 0.02;
  std::int64_t pad_token_id = 0;
  std::vector<std::string> id2label;            // empty when the config names no labels
  std::int64_t num_labels = 2;                  // K
  // Heads removed per layer, as Hugging Face's prune_heads records them ("pruned_heads":
  // {"0": [1, 3]}): original head indices, ascending. Such a layer's query / key / value are
  // (H_l*D, C) and its attention.output.dense (C, H_l*D), H_l = heads_in_layer(l).
  std::map<std::int64_t, std::vector<std::int64_t>> pruned_heads;

  std::int64_t heads_in_layer(std::int64_t layer) const {
    const auto it = pruned_heads.find(layer);
    return num_attention_heads - (it == pruned_heads.end() ? 0 : static_cast<std::int64_t>(it->second.size()));
  }

  // Feed-forward width per layer after neuron pruning ("edgetune_intermediate_sizes": [F_0, ...],
  // a field of edgetune's own, as Hugging Face's config has none), or empty: every layer has
  // intermediate_size. Such a layer's intermediate.dense is (F_l, C), output.dense (C, F_l).
  std::vector<std::int64_t> intermediate_sizes;
  std::int64_t ffn_in_layer(std::int64_t layer) const {
    return intermediate_sizes.empty() ? intermediate_size : intermediate_sizes[static_cast<std::size_t>(layer)];
  }
  std::int64_t head_size() const { return hidden_size / num_attention_heads; }  // D
  double classifier_dropout_prob() const { return classifier_dropout.value_or(hidden_dropout_prob); }

  // Parses config.json; `source` names the file in errors.
  static BertConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  static BertConfig load(const std::filesystem::path& path);
  // The config as Hugging Face writes it for BertForSequenceClassification.
  nlohmann::json to_json() const;
  // Throws ModelError naming `source` if a size is not positive, hidden_size is not a multiple of
  // the heads, or a probability is outside [0, 1).
  void validate(const std::string& source = "config.json") const;
};

const char* activation_name(Activation a);

}  // namespace edgetune
