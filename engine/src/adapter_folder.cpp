// The trained-output folder: method and target names, adapter_config.json,
// adapter_model.safetensors and labels.json (see adapter_folder.h).
#include "edgetune/engine/adapter_folder.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>

#include "edgetune/adapters/init.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/labels.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/session.h"

namespace edgetune {

namespace fs = std::filesystem;

const char* method_name(Method m) { return settings::name_of<Method>(kMethodNames, m); }

Method parse_method(const std::string& s) {
  for (const settings::Choice<Method>& c : kMethodNames) {
    if (s == c.name) return c.value;
  }
  throw std::invalid_argument("unknown method '" + s + "' (expected " +
                              settings::choice_list<Method>(kMethodNames) + ")");
}

namespace {

const LoraTarget kTargets[] = {
    {"query", "attention.self.query", &EncoderLayer::query},
    {"key", "attention.self.key", &EncoderLayer::key},
    {"value", "attention.self.value", &EncoderLayer::value},
    {"attention.output", "attention.output.dense", &EncoderLayer::attention_output},
    {"intermediate", "intermediate.dense", &EncoderLayer::intermediate},
    {"output", "output.dense", &EncoderLayer::output},
};

std::string layer_prefix(size_t i) { return "bert.encoder.layer." + std::to_string(i) + "."; }

// Houlsby adapter slots: (name inside layer i, member).
struct AdapterSlot {
  const char* path;
  std::shared_ptr<adapters::Houlsby> EncoderLayer::*member;
};
const AdapterSlot kAdapterSlots[] = {
    {"attention.output.adapter", &EncoderLayer::attention_adapter},
    {"output.adapter", &EncoderLayer::output_adapter},
};

// PEFT target_modules: plain names where they are unambiguous suffixes, else one regex.
nlohmann::json peft_target_modules(const std::vector<std::string>& targets) {
  const bool ambiguous = std::find(targets.begin(), targets.end(), "output") != targets.end();
  if (!ambiguous) {
    nlohmann::json list = nlohmann::json::array();
    for (const std::string& t : targets) {
      const std::string p = lora_target(t).path;
      list.push_back(t == "query" || t == "key" || t == "value" ? t : p);
    }
    return list;
  }
  std::string alt;
  for (const std::string& t : targets) {
    alt += alt.empty() ? "" : "|";
    for (const char c : std::string_view(lora_target(t).path)) {
      if (c == '.') alt += '\\';  // a literal dot in the pattern
      alt += c;
    }
  }
  return ".*\\.layer\\.\\d+\\.(" + alt + ")";
}

}  // namespace

const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const LoraTarget& t : kTargets) n.emplace_back(t.name);
    return n;
  }();
  return names;
}

const LoraTarget& lora_target(const std::string& name) {
  for (const LoraTarget& t : kTargets) {
    if (name == t.name) return t;
  }
  throw std::invalid_argument("unknown LoRA target '" + name +
                              "' (expected query, key, value, attention.output, intermediate or output)");
}

std::vector<std::string> parse_lora_targets(const std::string& csv) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= csv.size()) {
    const std::size_t comma = csv.find(',', start);
    const std::string item = csv.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) {
      lora_target(item);  // validates
      if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.empty()) throw std::invalid_argument("--lora-targets names no module");
  return out;
}

std::vector<std::pair<std::string, Tensor>> adapter_tensors(const BertModel& m) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const EncoderLayer& l = m.layers[i];
    for (const LoraTarget& t : kTargets) {
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

void write_adapter_files(const fs::path& dir, const AdapterFiles& folder) {
  fs::create_directories(dir);
  safetensors::save(dir / "adapter_model.safetensors", folder.tensors, {{"format", "pt"}});
  write_file_atomic(dir / "adapter_config.json", folder.config.dump(2) + "\n");
}

bool is_adapter_folder(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / "adapter_config.json", ec);
}

AdapterFiles read_adapter_files(const fs::path& dir) {
  AdapterFiles f;
  const fs::path cfg = dir / "adapter_config.json";
  std::error_code ec;
  if (!fs::exists(cfg, ec)) {
    throw std::runtime_error(cfg.string() + ": missing (expected an adapter folder with "
                                            "adapter_config.json and adapter_model.safetensors)");
  }
  const std::string text = read_file(cfg, FileOrigin::Output);
  try {
    f.config = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(cfg.string() + ": invalid JSON (" + e.what() + ")");
  }
  if (!f.config.is_object()) throw std::runtime_error(cfg.string() + ": expected a JSON object");
  fs::path weights = dir / "adapter_model.safetensors";
  if (!fs::exists(weights, ec)) {
    throw std::runtime_error(weights.string() + ": missing (adapter_model.bin is not read: "
                                                "save the adapter with safetensors)");
  }
  safetensors::Reader r(weights, FileOrigin::Output);
  for (const auto& info : r.tensors()) {
    f.tensors.emplace_back(info.name, r.load(info, DType::F32, MemCategory::Trainable));
  }
  return f;
}

void save_trained(const BertModel& m, const MethodOptions& o, const fs::path& dir,
                  const fs::path& base_dir) {
  if (o.method == Method::Full) {
    save_bert(m, dir, base_dir);
    return;
  }
  AdapterFiles f;
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
  }
  // The pooler is the head's to train; over a base without one (a masked-LM checkpoint) it was
  // drawn at load, and the adapter carries it so that every later load computes the same model.
  const bool save_pooler = o.method == Method::Head || m.fresh_pooler;
  if (save_pooler) modules.push_back("pooler");
  c["modules_to_save"] = modules;
  auto add = [&](const std::string& name, const Tensor& t) {
    f.tensors.emplace_back(kPeftPrefix + name, t);
  };
  for (auto& [name, t] : adapter_tensors(m)) add(name, t);
  for (auto& [name, t] : m.named_tensors()) {
    const bool head = name.starts_with("classifier.") || (save_pooler && name.starts_with("bert.pooler."));
    const bool bias = o.method == Method::BitFit && name.ends_with(".bias");
    if (head || bias) add(name, t);
  }
  write_adapter_files(dir, f);
  // The class names travel with the adapter (PEFT's config has no place for them).
  data::LabelMap(label_names(m.config)).save(dir / "labels.json");
}

void aggregate_adapters(const std::vector<fs::path>& dirs, const std::vector<double>& weights,
                        const fs::path& out) {
  if (dirs.empty()) throw std::invalid_argument("aggregate: no adapter folders given");
  if (!weights.empty() && weights.size() != dirs.size()) {
    throw std::invalid_argument("aggregate: " + std::to_string(weights.size()) + " weights for " +
                                std::to_string(dirs.size()) + " adapter folders (give one example count per folder)");
  }
  double total = 0;
  for (double w : weights) {
    if (!(w > 0) || !std::isfinite(w)) {
      throw std::invalid_argument("aggregate: weights must be positive numbers (example counts), got " +
                                  std::to_string(w));
    }
    total += w;
  }
  if (weights.empty()) total = static_cast<double>(dirs.size());
  // Without the path each folder records for its base, the configs must be equal.
  auto method_config = [](nlohmann::json c) {
    c.erase("base_model_name_or_path");
    return c;
  };
  auto labels_of = [](const fs::path& dir) {
    const fs::path f = dir / "labels.json";
    return fs::exists(f) ? data::LabelMap::load(f).id2label() : std::vector<std::string>{};
  };
  AdapterFiles first = read_adapter_files(dirs[0]);
  const std::vector<std::string> labels = labels_of(dirs[0]);
  std::vector<std::vector<double>> sum(first.tensors.size());
  auto add = [&](const AdapterFiles& f, double w) {
    for (size_t t = 0; t < f.tensors.size(); ++t) {
      const Tensor& x = f.tensors[t].second;
      const float* v = x.data<float>();
      sum[t].resize(static_cast<size_t>(x.numel()), 0.0);
      for (std::int64_t i = 0; i < x.numel(); ++i) sum[t][static_cast<size_t>(i)] += w * v[i];
    }
  };
  add(first, weights.empty() ? 1.0 : weights[0]);
  for (size_t d = 1; d < dirs.size(); ++d) {
    const AdapterFiles f = read_adapter_files(dirs[d]);
    const std::string where = dirs[d].string() + ": ";
    if (method_config(f.config) != method_config(first.config)) {
      throw std::runtime_error(where + "adapter_config.json differs from " + dirs[0].string() +
                               "'s (the adapters to average must share method and settings)");
    }
    if (f.tensors.size() != first.tensors.size()) {
      throw std::runtime_error(where + std::to_string(f.tensors.size()) + " tensors in adapter_model.safetensors, " +
                               dirs[0].string() + " has " + std::to_string(first.tensors.size()));
    }
    for (size_t t = 0; t < f.tensors.size(); ++t) {
      const auto& [name, x] = f.tensors[t];
      const auto& [name0, x0] = first.tensors[t];
      if (name != name0 || x.shape() != x0.shape()) {
        throw std::runtime_error(where + "tensor " + name + " " + x.shape().str() + " where " + dirs[0].string() +
                                 " has " + name0 + " " + x0.shape().str());
      }
    }
    if (labels_of(dirs[d]) != labels) {
      throw std::runtime_error(where + "labels.json differs from " + dirs[0].string() + "'s");
    }
    add(f, weights.empty() ? 1.0 : weights[d]);
  }
  for (size_t t = 0; t < first.tensors.size(); ++t) {
    float* v = first.tensors[t].second.data<float>();
    for (size_t i = 0; i < sum[t].size(); ++i) v[i] = static_cast<float>(sum[t][i] / total);
  }
  write_adapter_files(out, first);
  if (!labels.empty()) data::LabelMap(labels).save(out / "labels.json");
}

namespace {

// The method options an adapter folder's files record; errors name dir's adapter_config.json.
MethodOptions method_of(const AdapterFiles& f, const fs::path& dir) {
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
      for (const LoraTarget& t : kTargets) {
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

}  // namespace

MethodOptions read_adapter_method(const fs::path& dir) { return method_of(read_adapter_files(dir), dir); }

TrainedFolder read_trained_folder(const fs::path& dir) {
  TrainedFolder out;
  std::error_code ec;
  if (is_adapter_folder(dir)) {
    out.method = read_adapter_method(dir);
  } else if (fs::exists(dir / "model.safetensors", ec)) {
    out.method.method = Method::Full;  // a full fine-tune: the run folder is a whole model
  } else {
    throw ModelError(dir.string() +
                     ": not an adapter folder (expected adapter_config.json and "
                     "adapter_model.safetensors, or a full model's model.safetensors)");
  }
  if (fs::exists(dir / "labels.json", ec)) out.labels = data::LabelMap::load(dir / "labels.json").id2label();
  return out;
}

MethodOptions load_trained(BertModel& m, const fs::path& dir, bool grow_head) {
  AdapterFiles f = read_adapter_files(dir);
  const MethodOptions o = method_of(f, dir);
  const std::string source = (dir / "adapter_model.safetensors").string();
  std::map<std::string, Tensor> by_name;
  for (auto& [key, t] : f.tensors) {
    if (!key.starts_with(kPeftPrefix)) {
      throw ModelError(source + ": tensor '" + key + "' lacks the prefix '" + kPeftPrefix + "'");
    }
    by_name[key.substr(std::string(kPeftPrefix).size())] = t;
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
        const LoraTarget& t = lora_target(name);
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
    const bool grows = grow_head && name.starts_with("classifier.") && t.rank() == slot->rank() &&
                       t.dim(0) < slot->dim(0) && t.numel() / t.dim(0) == slot->numel() / slot->dim(0);
    if (grows) {
      // The saved rows over the model's fresh ones: old classes keep their rows bit for bit.
      Tensor v = adapters::trainable_copy(*slot);
      const Tensor saved = t.to(DType::F32, MemCategory::Workspace);
      std::copy_n(saved.data<float>(), saved.numel(), v.data<float>());
      v.set_name(name);
      *slot = v;
      continue;
    }
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
    throw ModelError(source + ": unexpected tensor '" + kPeftPrefix + left.front() + "'" +
                     (left.size() > 1 ? " and " + std::to_string(left.size() - 1) + " more" : "") +
                     " for a " + method_name(o.method) + " adapter of a " +
                     std::to_string(m.layers.size()) + "-layer model");
  }
  return o;
}

}  // namespace edgetune
