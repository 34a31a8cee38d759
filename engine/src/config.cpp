// config.json parsing and writing (see config.h).
#include "edgetune/engine/config.h"

#include <algorithm>
#include <charconv>
#include <sstream>

#include "edgetune/core/file_io.h"

namespace edgetune {

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Gelu: return "gelu";
    case Activation::GeluTanh: return "gelu_new";
    case Activation::Relu: return "relu";
  }
  return "?";
}

namespace {

[[noreturn]] void fail(const std::string& source, const std::string& field, const std::string& what,
                       const nlohmann::json* got = nullptr) {
  std::string msg = source + ": field '" + field + "' " + what;
  if (got) msg += ", got " + got->dump();
  throw ModelError(msg);
}

std::int64_t get_int(const nlohmann::json& j, const char* key, std::int64_t fallback,
                     const std::string& source, bool required = false) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) fail(source, key, "is missing (expected an integer)");
    return fallback;
  }
  if (!it->is_number_integer()) fail(source, key, "must be an integer", &*it);
  return it->get<std::int64_t>();
}

double get_double(const nlohmann::json& j, const char* key, double fallback,
                  const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) fail(source, key, "must be a number", &*it);
  return it->get<double>();
}

}  // namespace

BertConfig BertConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw ModelError(source + ": expected a JSON object");
  if (auto it = j.find("model_type"); it != j.end() && it->is_string() && *it != "bert") {
    throw ModelError(source + ": model_type is '" + it->get<std::string>() +
                     "', edgetune loads BERT models (model_type 'bert')");
  }
  BertConfig c;
  c.vocab_size = get_int(j, "vocab_size", c.vocab_size, source, true);
  c.hidden_size = get_int(j, "hidden_size", c.hidden_size, source, true);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", c.num_hidden_layers, source, true);
  c.num_attention_heads = get_int(j, "num_attention_heads", c.num_attention_heads, source, true);
  c.intermediate_size = get_int(j, "intermediate_size", c.intermediate_size, source, true);
  c.max_position_embeddings =
      get_int(j, "max_position_embeddings", c.max_position_embeddings, source);
  c.type_vocab_size = get_int(j, "type_vocab_size", c.type_vocab_size, source);
  c.pad_token_id = get_int(j, "pad_token_id", c.pad_token_id, source);
  c.layer_norm_eps = get_double(j, "layer_norm_eps", c.layer_norm_eps, source);
  c.hidden_dropout_prob = get_double(j, "hidden_dropout_prob", c.hidden_dropout_prob, source);
  c.attention_probs_dropout_prob =
      get_double(j, "attention_probs_dropout_prob", c.attention_probs_dropout_prob, source);
  c.initializer_range = get_double(j, "initializer_range", c.initializer_range, source);
  if (auto it = j.find("classifier_dropout"); it != j.end() && !it->is_null()) {
    if (!it->is_number()) fail(source, "classifier_dropout", "must be a number or null", &*it);
    c.classifier_dropout = it->get<double>();
  }
  if (auto it = j.find("pruned_heads"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail(source, "pruned_heads", "must be an object of layer: [heads]", &*it);
    for (const auto& [key, heads] : it->items()) {
      std::int64_t layer = -1;
      const auto [ptr, ec] = std::from_chars(key.data(), key.data() + key.size(), layer);
      if (ec != std::errc() || ptr != key.data() + key.size() || !heads.is_array()) {
        fail(source, "pruned_heads", "must map layer numbers to arrays of head numbers", &*it);
      }
      std::vector<std::int64_t>& list = c.pruned_heads[layer];
      for (const auto& h : heads) {
        if (!h.is_number_integer()) fail(source, "pruned_heads", "must map layer numbers to arrays of head numbers", &*it);
        list.push_back(h.get<std::int64_t>());
      }
      std::sort(list.begin(), list.end());
      if (list.empty()) c.pruned_heads.erase(layer);
    }
  }
  if (auto it = j.find("edgetune_intermediate_sizes"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) fail(source, "edgetune_intermediate_sizes", "must be an array of widths, one per layer", &*it);
    for (const auto& f : *it) {
      if (!f.is_number_integer()) fail(source, "edgetune_intermediate_sizes", "must be an array of whole numbers", &*it);
      c.intermediate_sizes.push_back(f.get<std::int64_t>());
    }
  }
  if (auto it = j.find("hidden_act"); it != j.end()) {
    const std::string act = it->is_string() ? it->get<std::string>() : "";
    if (act == "gelu") {
      c.hidden_act = Activation::Gelu;
    } else if (act == "gelu_new" || act == "gelu_pytorch_tanh") {
      c.hidden_act = Activation::GeluTanh;
    } else if (act == "relu") {
      c.hidden_act = Activation::Relu;
    } else {
      fail(source, "hidden_act", "must be \"gelu\", \"gelu_new\" or \"relu\"", &*it);
    }
  }
  if (auto it = j.find("position_embedding_type");
      it != j.end() && !(it->is_string() && *it == "absolute")) {
    fail(source, "position_embedding_type", "must be \"absolute\" (the only kind supported)", &*it);
  }
  if (auto it = j.find("id2label"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail(source, "id2label", "must be an object {\"0\": \"label\", ...}", &*it);
    c.id2label.assign(it->size(), "");
    for (auto& [key, value] : it->items()) {
      std::size_t pos = 0;
      long id = -1;
      try {
        id = std::stol(key, &pos);
      } catch (const std::exception&) {
      }
      if (pos != key.size() || id < 0 || id >= static_cast<long>(it->size()) ||
          !value.is_string()) {
        fail(source, "id2label", "must map the ids 0..K-1 to label strings", &*it);
      }
      c.id2label[static_cast<size_t>(id)] = value.get<std::string>();
    }
  }
  c.num_labels = c.id2label.empty() ? get_int(j, "num_labels", 2, source)
                                    : static_cast<std::int64_t>(c.id2label.size());
  c.validate(source);
  return c;
}

void BertConfig::validate(const std::string& source) const {
  auto positive = [&](const char* name, std::int64_t v) {
    if (v <= 0) fail(source, name, "must be positive, got " + std::to_string(v));
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("intermediate_size", intermediate_size);
  positive("max_position_embeddings", max_position_embeddings);
  positive("type_vocab_size", type_vocab_size);
  positive("num_labels", num_labels);
  for (const auto& [layer, heads] : pruned_heads) {
    if (layer < 0 || layer >= num_hidden_layers) {
      fail(source, "pruned_heads", "names layer " + std::to_string(layer) + " of a model with " +
                                       std::to_string(num_hidden_layers) + " layers");
    }
    for (std::size_t i = 0; i < heads.size(); ++i) {
      if (heads[i] < 0 || heads[i] >= num_attention_heads || (i > 0 && heads[i] == heads[i - 1])) {
        fail(source, "pruned_heads", "layer " + std::to_string(layer) + ": heads must be distinct, in [0, " +
                                         std::to_string(num_attention_heads) + ")");
      }
    }
    if (static_cast<std::int64_t>(heads.size()) >= num_attention_heads) {
      fail(source, "pruned_heads", "layer " + std::to_string(layer) + " would keep no head");
    }
  }
  if (!intermediate_sizes.empty()) {
    if (static_cast<std::int64_t>(intermediate_sizes.size()) != num_hidden_layers) {
      fail(source, "edgetune_intermediate_sizes", "has " + std::to_string(intermediate_sizes.size()) +
                                                      " widths for " + std::to_string(num_hidden_layers) + " layers");
    }
    for (std::int64_t f : intermediate_sizes) {
      if (f < 1 || f > intermediate_size) {
        fail(source, "edgetune_intermediate_sizes", "width " + std::to_string(f) + " is outside [1, intermediate_size " +
                                                        std::to_string(intermediate_size) + "]");
      }
    }
  }
  if (hidden_size % num_attention_heads != 0) {
    fail(source, "hidden_size", "must be a multiple of num_attention_heads (" +
                                    std::to_string(num_attention_heads) + "), got " +
                                    std::to_string(hidden_size));
  }
  auto prob = [&](const char* name, double p) {
    if (!(p >= 0 && p < 1)) fail(source, name, "must be in [0, 1), got " + std::to_string(p));
  };
  prob("hidden_dropout_prob", hidden_dropout_prob);
  prob("attention_probs_dropout_prob", attention_probs_dropout_prob);
  prob("classifier_dropout", classifier_dropout_prob());
  if (!(layer_norm_eps > 0)) fail(source, "layer_norm_eps", "must be positive");
  if (pad_token_id < 0 || pad_token_id >= vocab_size) {
    fail(source, "pad_token_id", "must be a token id below vocab_size");
  }
}

BertConfig BertConfig::load(const std::filesystem::path& path) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const FileError& e) {
    if (e.action() == "cannot open") {
      throw ModelError(path.string() + ": cannot open (expected a Hugging Face config.json)");
    }
    throw ModelError(e.what());
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is the offset of the error; report it as a line for people.
    std::size_t line = 1;
    for (std::size_t i = 0; i < text.size() && i + 1 < e.byte; ++i) line += text[i] == '\n';
    throw ModelError(path.string() + ":" + std::to_string(line) + ": invalid JSON (" +
                     std::string(e.what()).substr(std::string(e.what()).find(']') + 2) + ")");
  }
  return from_json(j, path.string());
}

nlohmann::json BertConfig::to_json() const {
  nlohmann::json j;
  j["architectures"] = {"BertForSequenceClassification"};
  j["model_type"] = "bert";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["intermediate_size"] = intermediate_size;
  j["hidden_act"] = activation_name(hidden_act);
  j["max_position_embeddings"] = max_position_embeddings;
  j["type_vocab_size"] = type_vocab_size;
  j["layer_norm_eps"] = layer_norm_eps;
  j["hidden_dropout_prob"] = hidden_dropout_prob;
  j["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
  j["classifier_dropout"] = classifier_dropout ? nlohmann::json(*classifier_dropout) : nullptr;
  j["initializer_range"] = initializer_range;
  if (!pruned_heads.empty()) {
    nlohmann::json p = nlohmann::json::object();
    for (const auto& [layer, heads] : pruned_heads) p[std::to_string(layer)] = heads;
    j["pruned_heads"] = p;
  }
  if (!intermediate_sizes.empty()) j["edgetune_intermediate_sizes"] = intermediate_sizes;
  j["pad_token_id"] = pad_token_id;
  j["position_embedding_type"] = "absolute";
  j["torch_dtype"] = "float32";
  nlohmann::json id2l = nlohmann::json::object(), l2id = nlohmann::json::object();
  for (std::int64_t i = 0; i < num_labels; ++i) {
    const std::string name = i < static_cast<std::int64_t>(id2label.size())
                                 ? id2label[static_cast<size_t>(i)]
                                 : "LABEL_" + std::to_string(i);
    id2l[std::to_string(i)] = name;
    l2id[name] = i;
  }
  j["id2label"] = id2l;
  j["label2id"] = l2id;
  return j;
}

}  // namespace edgetune
