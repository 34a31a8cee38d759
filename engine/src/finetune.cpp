// Fine-tuning methods and their adapter files (see finetune.h).
#include "edgetune/engine/finetune.h"

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <stdexcept>

#include "edgetune/adapters/adapter_io.h"
#include "edgetune/adapters/init.h"
#include "edgetune/data/labels.h"
#include "edgetune/engine/session.h"

namespace edgetune {

namespace fs = std::filesystem;

const char* method_name(Method m) {
  switch (m) {
    case Method::Lora: return "lora";
    case Method::Adapter: return "adapter";
    case Method::BitFit: return "bitfit";
    case Method::Head: return "head";
    case Method::Full: return "full";
  }
  return "?";
}

Method parse_method(const std::string& s) {
  for (Method m : {Method::Lora, Method::Adapter, Method::BitFit, Method::Head, Method::Full}) {
    if (s == method_name(m)) return m;
  }
  throw std::invalid_argument("unknown method '" + s + "' (expected lora, adapter, bitfit, head or full)");
}

namespace {

// LoRA target name -> module path inside encoder layer i, and the LinearLayer it is.
struct Target {
  const char* name;
  const char* path;
  LinearLayer EncoderLayer::*member;
};
const Target kTargets[] = {
    {"query", "attention.self.query", &EncoderLayer::query},
    {"key", "attention.self.key", &EncoderLayer::key},
    {"value", "attention.self.value", &EncoderLayer::value},
    {"attention.output", "attention.output.dense", &EncoderLayer::attention_output},
    {"intermediate", "intermediate.dense", &EncoderLayer::intermediate},
    {"output", "output.dense", &EncoderLayer::output},
};

const Target& target(const std::string& name) {
  for (const Target& t : kTargets) {
    if (name == t.name) return t;
  }
  throw std::invalid_argument("unknown LoRA target '" + name +
                              "' (expected query, key, value, attention.output, intermediate or output)");
}

std::string layer_prefix(size_t i) { return "bert.encoder.layer." + std::to_string(i) + "."; }

bool no_decay(const std::string& name) {
  return name.ends_with(".bias") || name.find("LayerNorm") != std::string::npos;
}

// Houlsby adapter slots: (name inside layer i, member).
struct AdapterSlot {
  const char* path;
  std::shared_ptr<adapters::Houlsby> EncoderLayer::*member;
};
const AdapterSlot kAdapterSlots[] = {
    {"attention.output.adapter", &EncoderLayer::attention_adapter},
    {"output.adapter", &EncoderLayer::output_adapter},
};

// Named tensors of the adapters attached to the model.
std::vector<std::pair<std::string, Tensor>> adapter_tensors(const BertModel& m) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const EncoderLayer& l = m.layers[i];
    for (const Target& t : kTargets) {
      const auto& lora = (l.*t.member).lora;
      if (!lora) continue;
      out.emplace_back(layer_prefix(i) + t.path + ".lora_A.weight", lora->a);
      out.emplace_back(layer_prefix(i) + t.path + ".lora_B.weight", lora->b);
    }
    for (const AdapterSlot& s : kAdapterSlots) {
      const auto& a = l.*s.member;
      if (!a) continue;
      const std::string p = layer_prefix(i) + s.path;
      out.emplace_back(p + ".down.weight", a->down_w);
      out.emplace_back(p + ".down.bias", a->down_b);
      out.emplace_back(p + ".up.weight", a->up_w);
      out.emplace_back(p + ".up.bias", a->up_b);
    }
  }
  return out;
}

}  // namespace

const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"query",        "key",  "value", "attention.output",
                                                 "intermediate", "output"};
  return names;
}

std::vector<std::string> parse_lora_targets(const std::string& csv) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= csv.size()) {
    const std::size_t comma = csv.find(',', start);
    const std::string item = csv.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) {
      target(item);  // validates
      if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.empty()) throw std::invalid_argument("--lora-targets names no module");
  return out;
}

bool trains_under(const std::string& name, const MethodOptions& o) {
  if (name.starts_with("classifier.")) return true;
  switch (o.method) {
    case Method::Full: return true;
    case Method::Head: return name.starts_with("bert.pooler.");
    case Method::BitFit: return name.ends_with(".bias");
    case Method::Lora:
    case Method::Adapter: return false;
  }
  return false;
}

LoadOptions load_options_for(const MethodOptions& o, DType base, bool quant_embeddings) {
  LoadOptions lo;
  lo.base = o.method == Method::Full ? DType::F32 : base;
  lo.quant_embeddings = o.method == Method::Full ? false : quant_embeddings;
  lo.trainable = [o](const std::string& name) { return trains_under(name, o); };
  lo.seed = o.seed;
  return lo;
}

void attach_adapters(BertModel& m, const MethodOptions& o) {
  const std::int64_t c = m.config.hidden_size;
  std::uint64_t seed = o.seed * 1000003 + 17;
  for (EncoderLayer& l : m.layers) {
    if (o.method == Method::Lora) {
      for (const std::string& name : o.lora_targets) {
        LinearLayer& lin = l.*target(name).member;
        lin.lora = std::make_shared<adapters::Lora>(lin.weight.dim(1), lin.weight.dim(0), o.lora, seed++);
      }
    } else if (o.method == Method::Adapter) {
      l.attention_adapter = std::make_shared<adapters::Houlsby>(c, o.adapter_size, o.adapter_act, seed);
      seed += 2;
      l.output_adapter = std::make_shared<adapters::Houlsby>(c, o.adapter_size, o.adapter_act, seed);
      seed += 2;
    }
  }
}

std::vector<optim::Param> trainable_params(const BertModel& m) {
  std::vector<optim::Param> out;
  for (auto& [name, t] : m.named_tensors()) {
    if (t.requires_grad()) out.push_back({name, t, !no_decay(name)});
  }
  for (auto& [name, t] : adapter_tensors(m)) {
    if (t.requires_grad()) out.push_back({name, t, !no_decay(name)});
  }
  return out;
}

namespace {

// PEFT target_modules: plain names where they are unambiguous suffixes, else one regex.
nlohmann::json peft_target_modules(const std::vector<std::string>& targets) {
  const bool ambiguous = std::find(targets.begin(), targets.end(), "output") != targets.end();
  if (!ambiguous) {
    nlohmann::json list = nlohmann::json::array();
    for (const std::string& t : targets) {
      const std::string p = target(t).path;
      list.push_back(t == "query" || t == "key" || t == "value" ? t : p);
    }
    return list;
  }
  std::string alt;
  for (const std::string& t : targets) {
    std::string p = target(t).path;
    p = std::regex_replace(p, std::regex("\\."), "\\.");
    alt += (alt.empty() ? "" : "|") + p;
  }
  return ".*\\.layer\\.\\d+\\.(" + alt + ")";
}

}  // namespace

void save_trained(const BertModel& m, const MethodOptions& o, const fs::path& dir,
                  const fs::path& base_dir) {
  if (o.method == Method::Full) {
    save_bert(m, dir, base_dir);
    return;
  }
  adapters::AdapterFolder f;
  nlohmann::json& c = f.config;
  c["task_type"] = "SEQ_CLS";
  // The base folder as it was given: no path of the device beyond what the caller chose to write.
  c["base_model_name_or_path"] = base_dir.string();
  c["inference_mode"] = true;
  nlohmann::json modules = {"classifier"};
  if (o.method == Method::Lora) {
    c["peft_type"] = "LORA";
    c["r"] = o.lora.rank;
    c["lora_alpha"] = o.lora.alpha;
    c["lora_dropout"] = o.lora.dropout;
    c["target_modules"] = peft_target_modules(o.lora_targets);
    c["bias"] = "none";
    c["fan_in_fan_out"] = false;
    c["init_lora_weights"] = true;
    c["layers_to_transform"] = nullptr;
    c["layers_pattern"] = nullptr;
    c["revision"] = nullptr;
  } else {
    c["peft_type"] = nullptr;
    c["edgetune_method"] = method_name(o.method);
    if (o.method == Method::Adapter) {
      c["adapter_size"] = o.adapter_size;
      c["adapter_act"] = adapters::bottleneck_act_name(o.adapter_act);
    }
    if (o.method == Method::Head) modules.push_back("pooler");
  }
  c["modules_to_save"] = modules;
  auto add = [&](const std::string& name, const Tensor& t) {
    f.tensors.emplace_back(adapters::kPeftPrefix + name, t);
  };
  for (auto& [name, t] : adapter_tensors(m)) add(name, t);
  for (auto& [name, t] : m.named_tensors()) {
    const bool head = name.starts_with("classifier.") ||
                      (o.method == Method::Head && name.starts_with("bert.pooler."));
    const bool bias = o.method == Method::BitFit && name.ends_with(".bias");
    if (head || bias) add(name, t);
  }
  adapters::save_adapter_folder(dir, f);
  // The class names travel with the adapter (PEFT's config has no place for them).
  data::LabelMap(label_names(m.config)).save(dir / "labels.json");
}

MethodOptions read_adapter_method(const fs::path& dir) {
  const adapters::AdapterFolder f = adapters::load_adapter_folder(dir);
  const nlohmann::json& c = f.config;
  const std::string source = (dir / "adapter_config.json").string();
  MethodOptions o;
  try {
    if (c.value("peft_type", nlohmann::json()).is_string()) {
      if (c["peft_type"] != "LORA") {
        throw std::runtime_error("peft_type " + c["peft_type"].dump() + " is not supported (LORA is)");
      }
      o.method = Method::Lora;
      o.lora.rank = c.at("r").get<int>();
      o.lora.alpha = c.value("lora_alpha", 8.0);
      o.lora.dropout = c.value("lora_dropout", 0.0);
      // The targets are the modules that have LoRA tensors in the file.
      o.lora_targets.clear();
      for (const Target& t : kTargets) {
        const std::string needle = std::string(".") + t.path + ".lora_A.weight";
        for (const auto& [key, tensor] : f.tensors) {
          const bool is_attention_output = std::string(t.name) == "output" &&
                                           key.ends_with(".attention.output.dense.lora_A.weight");
          if (key.ends_with(needle) && !is_attention_output) {
            o.lora_targets.push_back(t.name);
            break;
          }
        }
      }
    } else {
      o.method = parse_method(c.at("edgetune_method").get<std::string>());
      if (o.method == Method::Adapter) {
        o.adapter_size = c.at("adapter_size").get<std::int64_t>();
        o.adapter_act = adapters::parse_bottleneck_act(c.value("adapter_act", std::string("gelu")));
      }
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(source + ": " + e.what());
  }
  return o;
}

MethodOptions load_trained(BertModel& m, const fs::path& dir) {
  const MethodOptions o = read_adapter_method(dir);
  adapters::AdapterFolder f = adapters::load_adapter_folder(dir);
  const std::string source = (dir / "adapter_model.safetensors").string();
  std::map<std::string, Tensor> by_name;
  for (auto& [key, t] : f.tensors) {
    if (!key.starts_with(adapters::kPeftPrefix)) {
      throw ModelError(source + ": tensor '" + key + "' lacks the prefix '" + adapters::kPeftPrefix + "'");
    }
    by_name[key.substr(std::string(adapters::kPeftPrefix).size())] = t;
  }
  std::set<std::string> used;
  auto take = [&](const std::string& name) -> Tensor {
    auto it = by_name.find(name);
    if (it == by_name.end()) return Tensor();
    used.insert(name);
    return it->second;
  };
  // Adapters.
  for (size_t i = 0; i < m.layers.size(); ++i) {
    EncoderLayer& l = m.layers[i];
    if (o.method == Method::Lora) {
      for (const std::string& name : o.lora_targets) {
        const Target& t = target(name);
        const std::string p = layer_prefix(i) + t.path;
        Tensor a = take(p + ".lora_A.weight"), b = take(p + ".lora_B.weight");
        if (!a.defined() || !b.defined()) {
          throw ModelError(source + ": missing '" + p + ".lora_" + (a.defined() ? "B" : "A") +
                           ".weight' (every layer needs LoRA tensors for " + name + ")");
        }
        LinearLayer& lin = l.*t.member;
        if (a.dim(1) != lin.weight.dim(1) || b.dim(0) != lin.weight.dim(0)) {
          throw ModelError(source + ": LoRA for '" + p + "' has shapes " + a.shape().str() + " / " +
                           b.shape().str() + ", which do not fit the model's weight " +
                           lin.weight.shape().str());
        }
        lin.lora = std::make_shared<adapters::Lora>(a, b, o.lora);
      }
    } else if (o.method == Method::Adapter) {
      for (const AdapterSlot& s : kAdapterSlots) {
        const std::string p = layer_prefix(i) + s.path;
        Tensor dw = take(p + ".down.weight"), db = take(p + ".down.bias");
        Tensor uw = take(p + ".up.weight"), ub = take(p + ".up.bias");
        if (!dw.defined() || !db.defined() || !uw.defined() || !ub.defined()) {
          throw ModelError(source + ": missing tensors of '" + p + "' (down/up weight and bias)");
        }
        l.*s.member = std::make_shared<adapters::Houlsby>(dw, db, uw, ub, o.adapter_act);
      }
    }
  }
  // Model tensors saved by the method (head, pooler, biases): values replace the model's.
  for (const TensorSlot& s : m.tensor_slots()) {
    const std::string& name = s.name;
    Tensor* slot = s.tensor;
    if (!slot->defined()) continue;
    Tensor t = take(name);
    if (!t.defined()) continue;
    if (t.shape() != slot->shape()) {
      throw ModelError(source + ": tensor '" + name + "' has shape " + t.shape().str() +
                       ", the model's is " + slot->shape().str() +
                       (name.starts_with("classifier.") ? " (trained for another number of labels?)" : ""));
    }
    const bool train = slot->requires_grad();
    Tensor v = train ? adapters::trainable_copy(t) : t.to(DType::F32, MemCategory::BaseWeights);
    v.set_name(name);
    *slot = v;
  }
  std::vector<std::string> left;
  for (auto& [name, t] : by_name) {
    if (!used.count(name)) left.push_back(name);
  }
  if (!left.empty()) {
    throw ModelError(source + ": unexpected tensor '" + adapters::kPeftPrefix + left.front() + "'" +
                     (left.size() > 1 ? " and " + std::to_string(left.size() - 1) + " more" : "") +
                     " for a " + method_name(o.method) + " adapter of a " +
                     std::to_string(m.layers.size()) + "-layer model");
  }
  return o;
}

void merge_lora(BertModel& m) {
  for (EncoderLayer& l : m.layers) {
    for (const Target& t : kTargets) {
      LinearLayer& lin = l.*t.member;
      if (!lin.lora) continue;
      Tensor merged = lin.lora->merge_into(lin.weight);
      merged.set_name(lin.weight.name());
      lin.weight = merged;
      lin.lora.reset();
    }
  }
}

}  // namespace edgetune
